//! Changes to what is enforced: enable, disable, scopes, and how each ends: acknowledged
//! within its window ([`AckWindow`](super::window::AckWindow)) or reverted.

use std::collections::BTreeSet;
use std::net::IpAddr;

use time::OffsetDateTime;

use super::allowlist::{Allowlist, rfc3339};
use super::error::ModelError;
use super::evaluate::check_reachable;
use super::pending::{Action, Pending, Restore};
use super::settings::Settings;
use super::state::Model;
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
        self.window.check_closed()?;
        if &scopes == self.scopes() {
            return Ok(());
        }
        let restore = self.restore_point(Vec::new());
        let ids = Vec::new();
        self.window
            .open(Action::Scopes, ids, restore, None, now, settings)?;
        self.scopes = Some(scopes);
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
        self.window.check_closed()?;
        let mut enabled = self.enabled.clone();
        enabled.extend(ids.iter().cloned());
        self.check_allows_something(&enabled, None)?;
        if !self.enforcing() && !force {
            check_reachable(guarded.iter().copied(), |addr| self.allows(&enabled, addr))?;
        }
        self.change_enabled(enabled, Action::Enable, ids, now, settings)
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
        self.window.check_closed()?;
        let mut enabled = self.enabled.clone();
        for id in ids {
            enabled.remove(id);
        }
        self.check_allows_something(&enabled, None)?;
        self.change_enabled(enabled, Action::Disable, ids, now, settings)
    }

    /// Confirms the pending change; a fleet release only the fleet confirms
    /// ([`Model::acknowledge_release`]).
    pub fn acknowledge(
        &mut self,
        now: OffsetDateTime,
        settings: &Settings,
    ) -> Result<Pending, ModelError> {
        if let (Some(release), Some(pending)) = (self.window.release(), self.window.pending())
            && now < pending.revert_at
        {
            return Err(ModelError::ReleasePending {
                release: release.to_owned(),
                revert_at: rfc3339(pending.revert_at),
            });
        }
        self.acknowledge_any(now, settings)
    }

    /// Acknowledges the pending fleet release `release`, as the fleet did: from its
    /// `acknowledge_after` on.
    pub fn acknowledge_release(
        &mut self,
        release: &str,
        now: OffsetDateTime,
        settings: &Settings,
    ) -> Result<Pending, ModelError> {
        if self.pending_release() != Some(release) {
            return Err(ModelError::NothingPending);
        }
        let acknowledged = self.acknowledge_any(now, settings)?;
        self.fleet.applied = Some(release.to_owned());
        Ok(acknowledged)
    }

    /// Confirms the pending change, whatever made it: too early is refused, too late reverts.
    pub(super) fn acknowledge_any(
        &mut self,
        now: OffsetDateTime,
        settings: &Settings,
    ) -> Result<Pending, ModelError> {
        if self.revert_if_due(now).is_some() {
            return Err(ModelError::NothingPending);
        }
        self.window.acknowledge(now, settings)
    }

    /// Reverts the pending change if its time has come; returns it if so.
    pub fn revert_if_due(&mut self, now: OffsetDateTime) -> Option<Pending> {
        if self.window.is_due(now) {
            self.revert_now(now)
        } else {
            None
        }
    }

    /// Reverts the pending change now, whatever its deadline (the kernel has fallen back
    /// already): restores exactly the enabled set, the scopes and the lists it replaced, and
    /// returns it. Restored lists get a new version, so that clients holding the changed
    /// one see that it changed again.
    pub fn revert_now(&mut self, at: OffsetDateTime) -> Option<Pending> {
        let pending = self.window.close()?;
        if pending.action == Action::Release {
            // Nobody acknowledged it in time: the host does not apply it again.
            self.fleet.reverted = pending.release.clone();
        }
        self.enabled = pending.revert_to.enabled.clone();
        self.scopes = pending.revert_to.scopes.clone();
        for id in &pending.revert_to.created {
            self.allowlists.remove(id);
        }
        for list in &pending.revert_to.lists {
            let version = self
                .allowlists
                .get(&list.id)
                .map_or(list.version, |current| current.version.max(list.version))
                + 1;
            self.allowlists.insert(
                list.id.clone(),
                Allowlist {
                    version,
                    updated_at: at,
                    ..list.clone()
                },
            );
        }
        Some(pending)
    }

    /// What a change made now would revert to: the enabled set and scopes as they are, and
    /// `lists` (the lists the change edits, as they are before it).
    pub(super) fn restore_point(&self, lists: Vec<Allowlist>) -> Restore {
        Restore {
            enabled: self.enabled.clone(),
            scopes: self.scopes.clone(),
            lists,
            created: Vec::new(),
        }
    }

    /// Makes `enabled` the enabled set, as the pending change `action` of `ids`.
    fn change_enabled(
        &mut self,
        enabled: BTreeSet<String>,
        action: Action,
        ids: &[String],
        now: OffsetDateTime,
        settings: &Settings,
    ) -> Result<(), ModelError> {
        let restore = self.restore_point(Vec::new());
        let ids = ids.to_vec();
        self.window
            .open(action, ids, restore, None, now, settings)?;
        self.enabled = enabled;
        Ok(())
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
            self.fleet.check_local_edit(self.allowlist(id)?)?;
        }
        Ok(())
    }
}
