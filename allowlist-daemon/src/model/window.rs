//! The acknowledgement window: the state machine of the one change waiting for
//! acknowledgement.
//!
//! ```text
//!            open (a change to what is enforced)
//!   closed ──────────────────────────────────────▶ open
//!     ▲                                              │
//!     ├───── acknowledge (acknowledge_after ≤ now) ──┤
//!     └───── close (the revert: revert_at ≤ now, ────┘
//!             or the kernel fell back already)
//! ```
//!
//! While open, another change to what is enforced is refused, and so is an edit of a list
//! the change [freezes](Pending::freezes). The window holds what a revert restores; the
//! model puts it back ([`Model::revert_now`](super::Model::revert_now)).

use time::OffsetDateTime;

use super::allowlist::{Allowlist, rfc3339};
use super::error::ModelError;
use super::pending::{Action, Pending, Restore};
use super::settings::Settings;

/// The change waiting for acknowledgement, if any (see the module's state machine).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(super) struct AckWindow(Option<Pending>);

impl From<Option<Pending>> for AckWindow {
    fn from(pending: Option<Pending>) -> Self {
        AckWindow(pending)
    }
}

impl AckWindow {
    /// The change waiting, while the window is open.
    pub(super) fn pending(&self) -> Option<&Pending> {
        self.0.as_ref()
    }

    /// The fleet release waiting for its acknowledgement, if the change is one.
    pub(super) fn release(&self) -> Option<&str> {
        self.0
            .as_ref()
            .filter(|pending| pending.action == Action::Release)
            .and_then(|pending| pending.release.as_deref())
    }

    /// Refuses while the window is open: one change to what is enforced at a time.
    pub(super) fn check_closed(&self) -> Result<(), ModelError> {
        match &self.0 {
            Some(pending) => Err(change_pending(pending, None)),
            None => Ok(()),
        }
    }

    /// Refuses an edit or deletion of a list the open change freezes: a revert must find it
    /// as the change left it.
    pub(super) fn check_not_frozen(&self, id: &str) -> Result<(), ModelError> {
        match &self.0 {
            Some(pending) if pending.freezes(id) => {
                Err(change_pending(pending, Some(id.to_owned())))
            }
            _ => Ok(()),
        }
    }

    /// Opens the window for the change just made: `action` of `allowlist_ids` (of fleet
    /// `release`), acknowledged from `ack_min` after `now`, reverted to `revert_to` at
    /// `ack_max` after it. Refused while open.
    pub(super) fn open(
        &mut self,
        action: Action,
        allowlist_ids: Vec<String>,
        revert_to: Restore,
        release: Option<&str>,
        now: OffsetDateTime,
        settings: &Settings,
    ) -> Result<(), ModelError> {
        self.check_closed()?;
        self.0 = Some(Pending {
            action,
            allowlist_ids,
            applied_at: now,
            acknowledge_after: now + settings.ack_min,
            revert_at: now + settings.ack_max,
            release: release.map(str::to_owned),
            revert_to,
        });
        Ok(())
    }

    /// Whether the change's revert time has come.
    pub(super) fn is_due(&self, now: OffsetDateTime) -> bool {
        self.0
            .as_ref()
            .is_some_and(|pending| now >= pending.revert_at)
    }

    /// Closes the window by acknowledging its change, which stays: refused when closed and
    /// before `acknowledge_after`. A change past its revert time is the caller's to revert
    /// ([`AckWindow::is_due`]), not to acknowledge.
    pub(super) fn acknowledge(
        &mut self,
        now: OffsetDateTime,
        settings: &Settings,
    ) -> Result<Pending, ModelError> {
        let pending = self.0.as_ref().ok_or(ModelError::NothingPending)?;
        if now < pending.acknowledge_after {
            let wait = pending.acknowledge_after - now;
            return Err(ModelError::TooEarly {
                retry_after_seconds: wait.whole_seconds().max(0) as u64
                    + u64::from(wait.subsec_nanoseconds() > 0),
                ack_min_seconds: settings.ack_min.as_secs(),
            });
        }
        self.0.take().ok_or(ModelError::NothingPending)
    }

    /// Closes the window for a revert: returns the change, whose [`Restore`] the caller
    /// puts back.
    pub(super) fn close(&mut self) -> Option<Pending> {
        self.0.take()
    }

    /// The lists a revert would restore, as they were before the change.
    pub(super) fn restorable(&self) -> impl Iterator<Item = &Allowlist> {
        self.0.iter().flat_map(|pending| &pending.revert_to.lists)
    }

    /// The lists a revert would restore, to edit what an entry's expiry or a new rule id
    /// changes in them too.
    pub(super) fn restorable_mut(&mut self) -> impl Iterator<Item = &mut Allowlist> {
        self.0
            .iter_mut()
            .flat_map(|pending| pending.revert_to.lists.iter_mut())
    }
}

fn change_pending(pending: &Pending, allowlist_id: Option<String>) -> ModelError {
    ModelError::ChangePending {
        action: pending.action,
        revert_at: rfc3339(pending.revert_at),
        allowlist_id,
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeSet;
    use std::time::Duration;

    use super::*;

    /// When the tests' changes are made.
    const START: OffsetDateTime = OffsetDateTime::UNIX_EPOCH;

    fn restore() -> Restore {
        Restore {
            enabled: BTreeSet::new(),
            scopes: None,
            lists: Vec::new(),
            created: Vec::new(),
        }
    }

    fn opened(action: Action, settings: &Settings) -> AckWindow {
        let mut window = AckWindow::default();
        let ids = vec!["al_1".to_owned()];
        window
            .open(action, ids, restore(), None, START, settings)
            .expect("a closed window opens");
        window
    }

    #[test]
    fn acknowledges_only_within_its_window() {
        let settings = Settings::small();
        let start = START;
        let mut window = opened(Action::Enable, &settings);
        let early = window.acknowledge(start + Duration::from_millis(59_500), &settings);
        assert!(matches!(
            early,
            Err(ModelError::TooEarly {
                retry_after_seconds: 1,
                ack_min_seconds: 60
            })
        ));
        assert!(
            window.pending().is_some(),
            "a refused acknowledgement keeps it"
        );
        assert!(!window.is_due(start + settings.ack_max - Duration::from_secs(1)));
        assert!(window.is_due(start + settings.ack_max));
        let acknowledged = window.acknowledge(start + settings.ack_min, &settings);
        assert_eq!(acknowledged.map(|p| p.action), Ok(Action::Enable));
        assert_eq!(window, AckWindow::default());
        assert_eq!(
            window.acknowledge(start + settings.ack_min, &settings),
            Err(ModelError::NothingPending)
        );
    }

    #[test]
    fn one_change_at_a_time() {
        let settings = Settings::small();
        let mut window = opened(Action::Scopes, &settings);
        let now = START + Duration::from_secs(30);
        let again = window.open(Action::Enable, Vec::new(), restore(), None, now, &settings);
        assert!(matches!(
            again,
            Err(ModelError::ChangePending {
                action: Action::Scopes,
                ..
            })
        ));
        assert!(window.check_closed().is_err());
        assert_eq!(window.close().map(|p| p.action), Some(Action::Scopes));
        assert_eq!(window.check_closed(), Ok(()));
        assert_eq!(window.close(), None);
    }

    #[test]
    fn freezes_what_a_revert_restores() {
        let settings = Settings::small();
        for (action, frozen) in [
            (Action::Update, true),
            (Action::Disable, true),
            (Action::Apply, true),
            (Action::Release, true),
            (Action::Enable, false),
            (Action::Scopes, false),
        ] {
            let window = opened(action, &settings);
            assert_eq!(window.check_not_frozen("al_1").is_err(), frozen, "{action}");
            assert_eq!(window.check_not_frozen("al_2"), Ok(()), "{action}");
        }
        assert_eq!(AckWindow::default().check_not_frozen("al_1"), Ok(()));
    }

    #[test]
    fn names_only_a_release_as_one() {
        let settings = Settings::small();
        let now = START;
        let mut window = AckWindow::default();
        let release = Some("r-7");
        let ids = Vec::new();
        window
            .open(Action::Release, ids, restore(), release, now, &settings)
            .expect("a closed window opens");
        assert_eq!(window.release(), Some("r-7"));
        assert_eq!(opened(Action::Apply, &settings).release(), None);
    }
}
