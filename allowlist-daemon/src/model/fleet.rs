//! What the host remembers of the fleet it follows, and which of its lists the fleet owns.

use serde::{Deserialize, Serialize};

use super::allowlist::Allowlist;
use super::error::ModelError;

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

impl FleetMemo {
    /// Refuses an API edit (or enable, disable, delete) of a list the fleet owns while the
    /// host follows the fleet.
    pub(super) fn check_local_edit(&self, list: &Allowlist) -> Result<(), ModelError> {
        match &list.fleet {
            Some(origin) if !self.detached => Err(ModelError::FleetManaged {
                id: list.id.clone(),
                fleet: origin.fleet.clone(),
                release: origin.release.clone(),
            }),
            _ => Ok(()),
        }
    }

    /// Notes that `list`, one of the fleet's, was edited or deleted while detached.
    pub(super) fn note_drift(&mut self, list: &Allowlist) {
        if list.fleet.is_some() && self.detached && !self.drifted.contains(&list.name) {
            self.drifted.push(list.name.clone());
        }
    }

    /// Stops or resumes following the fleet. Attaching again after the fleet's lists drifted
    /// forgets the last acknowledged release, so that the fleet's current one is applied
    /// again. Returns the lists that drifted.
    pub(super) fn set_detached(&mut self, detached: bool) -> Vec<String> {
        let drifted = match (self.detached, detached) {
            (true, false) => std::mem::take(&mut self.drifted),
            _ => Vec::new(),
        };
        if !drifted.is_empty() {
            self.applied = None;
        }
        self.detached = detached;
        drifted
    }

    /// Forgets that the host reverted `release`; returns whether it had.
    pub(super) fn forget_reverted(&mut self, release: &str) -> bool {
        if self.reverted.as_deref() == Some(release) {
            self.reverted = None;
            return true;
        }
        false
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use time::OffsetDateTime;

    use super::*;
    use crate::model::FleetOrigin;

    fn fleet_list(name: &str) -> Allowlist {
        Allowlist {
            id: format!("al_{name}"),
            name: name.to_owned(),
            description: String::new(),
            entries: Arc::new(Vec::new()),
            allow_all: false,
            fleet: Some(FleetOrigin {
                fleet: "web".to_owned(),
                release: "r1".to_owned(),
            }),
            source: None,
            feed_baseline: 0,
            created_at: OffsetDateTime::UNIX_EPOCH,
            updated_at: OffsetDateTime::UNIX_EPOCH,
            version: 1,
        }
    }

    #[test]
    fn drift_while_detached_makes_the_release_apply_again() {
        let mut memo = FleetMemo {
            applied: Some("r1".to_owned()),
            ..FleetMemo::default()
        };
        let list = fleet_list("office");
        assert!(matches!(
            memo.check_local_edit(&list),
            Err(ModelError::FleetManaged { .. })
        ));
        assert_eq!(memo.set_detached(true), Vec::<String>::new());
        assert_eq!(memo.check_local_edit(&list), Ok(()));
        memo.note_drift(&list);
        memo.note_drift(&list);
        assert_eq!(memo.set_detached(false), vec!["office".to_owned()]);
        assert_eq!(memo.applied, None, "the fleet's release applies again");
        assert!(memo.drifted.is_empty());
    }

    #[test]
    fn forgets_only_the_release_it_reverted() {
        let mut memo = FleetMemo {
            reverted: Some("r2".to_owned()),
            ..FleetMemo::default()
        };
        assert!(!memo.forget_reverted("r1"));
        assert!(memo.forget_reverted("r2"));
        assert_eq!(memo.reverted, None);
    }
}
