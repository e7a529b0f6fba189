//! The fleet's part of the model: which lists the fleet owns, what the host remembers of
//! the fleet, and the acknowledgement of a release, which only the fleet gives.

use serde::{Deserialize, Serialize};
use time::OffsetDateTime;

use super::allowlist::Allowlist;
use super::apply::Scope;
use super::error::ModelError;
use super::pending::{Action, Pending};
use super::state::{Model, Settings};

/// What the host keeps of the fleet it follows.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct FleetMemo {
    /// The operator detached the host: it follows no fleet, and its fleet lists are
    /// editable like its own until it attaches again.
    #[serde(default)]
    pub detached: bool,
    /// The last release the fleet acknowledged on this host: its lists are in force.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub applied: Option<String>,
    /// The last release this host reverted because nobody acknowledged it in time: it is
    /// not applied again.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reverted: Option<String>,
    /// The fleet's lists edited or deleted while the host was detached, by name.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub drifted: Vec<String>,
}

impl Model {
    /// What the host keeps of its fleet.
    pub fn fleet(&self) -> &FleetMemo {
        &self.fleet
    }

    /// The fleet release waiting for its acknowledgement, if the pending change is one.
    pub fn pending_release(&self) -> Option<&str> {
        self.pending
            .as_ref()
            .filter(|pending| pending.action == Action::Release)
            .and_then(|pending| pending.release.as_deref())
    }

    /// Refuses an API edit (or enable, disable, delete) of a list the fleet owns while the
    /// host follows the fleet.
    pub(super) fn check_local_edit(&self, list: &Allowlist) -> Result<(), ModelError> {
        match &list.fleet {
            Some(origin) if !self.fleet.detached => Err(ModelError::FleetManaged {
                id: list.id.clone(),
                fleet: origin.fleet.clone(),
                release: origin.release.clone(),
            }),
            _ => Ok(()),
        }
    }

    /// Refuses an apply of `scope` to `list`, a list of that name the host has: own lists
    /// are not the fleet's, and the fleet's are not the host's (unless it is detached).
    pub(super) fn check_owner(&self, list: &Allowlist, scope: Scope<'_>) -> Result<(), ModelError> {
        match (scope, &list.fleet) {
            (Scope::Local { .. }, Some(_)) => self.check_local_edit(list),
            (Scope::Fleet { fleet, .. }, Some(origin)) if origin.fleet == fleet => Ok(()),
            (Scope::Fleet { .. }, _) => Err(ModelError::DuplicateName {
                name: list.name.clone(),
            }),
            (Scope::Local { .. }, None) => Ok(()),
        }
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

    /// Stops or resumes following the fleet: detached, the fleet's lists are editable.
    /// Attaching again after the fleet's lists were edited (or deleted) finds drift: the
    /// last acknowledged release is then forgotten, so that the fleet's current release is
    /// applied again, as a pending change. Returns the lists that drifted.
    pub fn set_detached(&mut self, detached: bool) -> Result<Vec<String>, ModelError> {
        if self.pending_release().is_some() {
            self.check_no_pending()?;
        }
        let drifted = match (self.fleet.detached, detached) {
            (true, false) => std::mem::take(&mut self.fleet.drifted),
            _ => Vec::new(),
        };
        if !drifted.is_empty() {
            self.fleet.applied = None;
        }
        self.fleet.detached = detached;
        Ok(drifted)
    }

    /// Notes that `list`, one of the fleet's, was edited or deleted while detached.
    pub(super) fn note_drift(&mut self, list: &Allowlist) {
        if list.fleet.is_some() && self.fleet.detached && !self.fleet.drifted.contains(&list.name) {
            self.fleet.drifted.push(list.name.clone());
        }
    }

    /// Offers `release` to this host again, which reverted it (or could not apply it): it is
    /// applied again as a pending change. Returns whether the host had reverted it.
    pub fn forget_reverted(&mut self, release: &str) -> bool {
        if self.fleet.reverted.as_deref() == Some(release) {
            self.fleet.reverted = None;
            return true;
        }
        false
    }
}
