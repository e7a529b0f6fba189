//! The pending change's life in the model: what it refuses while it runs, how it begins,
//! and its revert.

use time::OffsetDateTime;

use super::allowlist::Allowlist;
use super::error::ModelError;
use super::pending::{Action, Pending, Restore};
use super::state::{Model, Settings, rfc3339};

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
