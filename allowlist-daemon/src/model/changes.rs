//! Changes to what is enforced: enable, disable, scopes, and their acknowledgement.

use std::collections::BTreeSet;
use std::net::IpAddr;

use time::OffsetDateTime;

use super::allowlist::Allowlist;
use super::error::ModelError;
use super::pending::{Action, Pending};
use super::state::{Model, Settings, rfc3339};
use crate::policy::PortScope;

impl Model {
    /// Changes the protected ports; the change is pending like an enable. Setting the scopes
    /// in force changes nothing.
    pub fn set_scopes(
        &mut self,
        scopes: BTreeSet<PortScope>,
        now: OffsetDateTime,
        settings: &Settings,
    ) -> Result<(), ModelError> {
        self.check_no_pending()?;
        if &scopes == self.scopes() {
            return Ok(());
        }
        let restore = self.restore_point(Vec::new());
        self.scopes = Some(scopes);
        self.begin_pending(Action::Scopes, Vec::new(), restore, now, settings);
        Ok(())
    }

    /// Enables allowlists. When the host is not enforcing yet, refuses if the new policy
    /// would drop any of `guarded` (the caller's address, sources of established sessions),
    /// unless `force`.
    pub fn enable(
        &mut self,
        ids: &[String],
        guarded: &[IpAddr],
        force: bool,
        now: OffsetDateTime,
        settings: &Settings,
    ) -> Result<(), ModelError> {
        self.check_ids(ids)?;
        let already: Vec<String> = ids
            .iter()
            .filter(|id| self.is_enabled(id))
            .cloned()
            .collect();
        if !already.is_empty() {
            return Err(ModelError::AlreadyEnabled { ids: already });
        }
        self.check_no_pending()?;
        let mut enabled = self.enabled.clone();
        enabled.extend(ids.iter().cloned());
        self.check_allows_something(&enabled, None)?;
        if !self.enforcing() && !force {
            let mut cut_off: Vec<IpAddr> = guarded
                .iter()
                .copied()
                .filter(|addr| !self.allows(&enabled, *addr))
                .collect();
            cut_off.sort();
            cut_off.dedup();
            if !cut_off.is_empty() {
                return Err(ModelError::WouldLockOut { addresses: cut_off });
            }
        }
        self.change_enabled(enabled, Action::Enable, ids, now, settings);
        Ok(())
    }

    /// Disables allowlists.
    pub fn disable(
        &mut self,
        ids: &[String],
        now: OffsetDateTime,
        settings: &Settings,
    ) -> Result<(), ModelError> {
        self.check_ids(ids)?;
        let not_enabled: Vec<String> = ids
            .iter()
            .filter(|id| !self.is_enabled(id))
            .cloned()
            .collect();
        if !not_enabled.is_empty() {
            return Err(ModelError::NotEnabled { ids: not_enabled });
        }
        self.check_no_pending()?;
        let mut enabled = self.enabled.clone();
        for id in ids {
            enabled.remove(id);
        }
        self.check_allows_something(&enabled, None)?;
        self.change_enabled(enabled, Action::Disable, ids, now, settings);
        Ok(())
    }

    /// Confirms the pending change; a fleet release only the fleet confirms
    /// ([`Model::acknowledge_release`]).
    pub fn acknowledge(
        &mut self,
        now: OffsetDateTime,
        settings: &Settings,
    ) -> Result<Pending, ModelError> {
        if let (Some(release), Some(pending)) = (self.pending_release(), &self.pending)
            && now < pending.revert_at
        {
            return Err(ModelError::ReleasePending {
                release: release.to_owned(),
                revert_at: rfc3339(pending.revert_at),
            });
        }
        self.acknowledge_any(now, settings)
    }

    /// Confirms the pending change, whatever made it: too early is refused, too late reverts.
    pub(super) fn acknowledge_any(
        &mut self,
        now: OffsetDateTime,
        settings: &Settings,
    ) -> Result<Pending, ModelError> {
        let pending = self.pending.as_ref().ok_or(ModelError::NothingPending)?;
        if now < pending.acknowledge_after {
            let wait = pending.acknowledge_after - now;
            return Err(ModelError::TooEarly {
                retry_after_seconds: wait.whole_seconds().max(0) as u64
                    + u64::from(wait.subsec_nanoseconds() > 0),
                ack_min_seconds: settings.ack_min.as_secs(),
            });
        }
        if now >= pending.revert_at {
            self.revert(now);
            return Err(ModelError::NothingPending);
        }
        self.pending.take().ok_or(ModelError::NothingPending)
    }

    /// Makes `enabled` the enabled set, as the pending change `action` of `ids`.
    fn change_enabled(
        &mut self,
        enabled: BTreeSet<String>,
        action: Action,
        ids: &[String],
        now: OffsetDateTime,
        settings: &Settings,
    ) {
        let restore = self.restore_point(Vec::new());
        self.enabled = enabled;
        self.begin_pending(action, ids.to_vec(), restore, now, settings);
    }

    /// Refuses an enforcing state that would allow nothing, even with the always-allow list:
    /// `enabled` lists enabled, `replacing` (if given) in place of the list with its id.
    pub(super) fn check_allows_something(
        &self,
        enabled: &BTreeSet<String>,
        replacing: Option<&Allowlist>,
    ) -> Result<(), ModelError> {
        let allows = |list: &Allowlist| match replacing {
            Some(new) if new.id == list.id => !new.entries.is_empty(),
            _ => !list.entries.is_empty(),
        };
        let something = !self.always_allow.is_empty()
            || enabled
                .iter()
                .filter_map(|id| self.allowlists.get(id))
                .any(allows);
        if !enabled.is_empty() && !something {
            return Err(ModelError::EmptyPolicy);
        }
        Ok(())
    }

    /// Whether `addr` would pass with `enabled` lists enabled.
    pub(super) fn allows(&self, enabled: &BTreeSet<String>, addr: IpAddr) -> bool {
        let lists = enabled.iter().filter_map(|id| self.allowlists.get(id));
        self.always_allow.iter().any(|(net, _)| net.contains(&addr))
            || lists
                .flat_map(|list| list.entries.iter())
                .any(|entry| entry.cidr.contains(&addr))
    }

    /// Checks the ids of an enable or disable: some, each once, each an existing list.
    fn check_ids(&self, ids: &[String]) -> Result<(), ModelError> {
        if ids.is_empty() {
            return Err(ModelError::InvalidRequest {
                message: "allowlist_ids is empty".into(),
                field: Some("allowlist_ids".into()),
            });
        }
        for (index, id) in ids.iter().enumerate() {
            if ids[..index].contains(id) {
                return Err(ModelError::InvalidRequest {
                    message: format!("{id} is named twice"),
                    field: Some(format!("allowlist_ids[{index}]")),
                });
            }
            self.check_local_edit(self.allowlist(id)?)?;
        }
        Ok(())
    }
}
