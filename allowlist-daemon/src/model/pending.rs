//! The pending change: what it did, its window, and exactly what a revert restores.

use std::collections::BTreeSet;
use std::fmt;

use serde::{Deserialize, Serialize};
use time::OffsetDateTime;

use super::allowlist::Allowlist;
use super::error::ModelError;
use super::state::{Model, Settings, rfc3339};
use crate::policy::PortScope;

/// What a pending change did.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Action {
    /// Enabled allowlists.
    Enable,
    /// Disabled allowlists.
    Disable,
    /// Removed entries from an enabled allowlist.
    Update,
    /// Changed the protected ports.
    Scopes,
    /// Converged the host's own lists to a policy file (`allowlistctl apply`).
    Apply,
    /// Applied a fleet release (acknowledged when the release is, for the fleet).
    Release,
}

impl fmt::Display for Action {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Action::Enable => "enable",
            Action::Disable => "disable",
            Action::Update => "narrowing update",
            Action::Scopes => "scopes change",
            Action::Apply => "apply",
            Action::Release => "fleet release",
        })
    }
}

/// What a revert restores: the enforced state as acknowledged before the change.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Restore {
    /// The enabled allowlists.
    pub enabled: BTreeSet<String>,
    /// The scopes set through the API (`None`: the daemon's `--protect` default).
    pub scopes: Option<BTreeSet<PortScope>>,
    /// The lists the change edited or deleted, exactly as they were (entries, ids and rules
    /// included).
    pub lists: Vec<Allowlist>,
    /// The lists the change created: a revert deletes them.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub created: Vec<String>,
}

/// A change applied to the kernel that must be acknowledged within its window.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Pending {
    /// What the change did.
    pub action: Action,
    /// The allowlists it concerns; those it [freezes](Pending::freezes) cannot be edited
    /// until it ends.
    pub allowlist_ids: Vec<String>,
    /// When it was applied.
    #[serde(with = "time::serde::rfc3339")]
    pub applied_at: OffsetDateTime,
    /// Acknowledgements before this are too early.
    #[serde(with = "time::serde::rfc3339")]
    pub acknowledge_after: OffsetDateTime,
    /// Without acknowledgement, the change is reverted at this time.
    #[serde(with = "time::serde::rfc3339")]
    pub revert_at: OffsetDateTime,
    /// The fleet release it applied, for [`Action::Release`].
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub release: Option<String>,
    /// What a revert restores.
    pub revert_to: Restore,
}

impl Pending {
    /// Whether the change concerns allowlist `id`.
    pub fn concerns(&self, id: &str) -> bool {
        self.allowlist_ids.iter().any(|concerned| concerned == id)
    }

    /// Whether a revert restores list `id` as the change found it (the list a narrowing
    /// update edited, a list a disable turned off): then it cannot be edited until the change
    /// ends. A list being enabled is not frozen: a revert disables it, whatever it holds.
    pub fn freezes(&self, id: &str) -> bool {
        match self.action {
            Action::Update | Action::Disable | Action::Apply | Action::Release => self.concerns(id),
            Action::Enable | Action::Scopes => false,
        }
    }
}

impl Model {
    /// Refuses while a change is pending.
    pub(super) fn check_no_pending(&self) -> Result<(), ModelError> {
        match &self.pending {
            Some(pending) => Err(change_pending(pending, None)),
            None => Ok(()),
        }
    }

    /// Refuses an edit or deletion of a list the pending change freezes: a revert must find
    /// it as the change left it.
    pub(super) fn check_not_frozen(&self, id: &str) -> Result<(), ModelError> {
        match &self.pending {
            Some(pending) if pending.freezes(id) => {
                Err(change_pending(pending, Some(id.to_owned())))
            }
            _ => Ok(()),
        }
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

    /// Records the change just made as the pending one: acknowledged from `ack_min` after
    /// `now`, reverted to `revert_to` at `ack_max` after it.
    pub(super) fn begin_pending(
        &mut self,
        action: Action,
        allowlist_ids: Vec<String>,
        revert_to: Restore,
        now: OffsetDateTime,
        settings: &Settings,
    ) {
        self.pending = Some(Pending {
            action,
            allowlist_ids,
            applied_at: now,
            acknowledge_after: now + settings.ack_min,
            revert_at: now + settings.ack_max,
            release: None,
            revert_to,
        });
    }

    /// Undoes the pending change: restores exactly the enabled set, the scopes and the lists
    /// it replaced. Restored lists get a new version, so that clients holding the changed
    /// one see that it changed again.
    pub(super) fn revert(&mut self, at: OffsetDateTime) -> Option<Pending> {
        let pending = self.pending.take()?;
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
}

fn change_pending(pending: &Pending, allowlist_id: Option<String>) -> ModelError {
    ModelError::ChangePending {
        action: pending.action,
        revert_at: rfc3339(pending.revert_at),
        allowlist_id,
    }
}
