//! The state on disk: the store, and a save that failed after a revert (the kernel had
//! reverted already, so the model did too), retried with backoff until one succeeds.

use std::time::{Duration, Instant};

use time::OffsetDateTime;

use crate::model::Model;
use crate::store::{Store, StoreError};

/// The longest wait between two attempts to save a state that could not be saved.
const SAVE_RETRY_MAX: Duration = Duration::from_secs(60);

/// A state that could not be saved: retried with backoff until a save succeeds.
#[derive(Debug, Clone)]
pub struct SaveFailure {
    /// Why the last attempt failed, with its causes.
    pub cause: String,
    /// When the first attempt failed.
    pub since: OffsetDateTime,
    /// Attempts so far.
    pub attempts: u32,
    next_attempt: Instant,
}

/// The store and the save that failed last, if any.
pub(super) struct Durable {
    store: Store,
    unsaved: Option<SaveFailure>,
}

impl Durable {
    /// Saves through `store`; nothing failed yet.
    pub(super) fn new(store: Store) -> Self {
        Durable {
            store,
            unsaved: None,
        }
    }

    /// Saves `model`, or fails (an operator's change fails with it: nothing is retried).
    /// A success ends an earlier failure.
    pub(super) fn save(&mut self, model: &Model) -> Result<(), StoreError> {
        self.store.save(model)?;
        if let Some(failure) = self.unsaved.take() {
            tracing::info!(attempts = failure.attempts, "the state is saved again");
        }
        Ok(())
    }

    /// Saves `model`; on failure, logs it (the first time) and schedules a retry
    /// ([`Durable::retry_due`]).
    pub(super) fn save_or_retry_later(&mut self, model: &Model) {
        let Err(err) = self.save(model) else {
            return;
        };
        let cause = crate::error_chain(&err);
        let failure = self.unsaved.get_or_insert_with(|| {
            tracing::error!(
                error = %cause,
                "saving the state failed; the kernel and the API show the reverted state, and \
                 the save is retried with backoff"
            );
            SaveFailure {
                cause: cause.clone(),
                since: OffsetDateTime::now_utc(),
                attempts: 0,
                next_attempt: Instant::now(),
            }
        });
        failure.attempts += 1;
        failure.cause = cause;
        let backoff = Duration::from_secs(1 << failure.attempts.min(6)).min(SAVE_RETRY_MAX);
        failure.next_attempt = Instant::now() + backoff;
    }

    /// Whether a failed save's backoff has passed.
    pub(super) fn retry_due(&self) -> bool {
        self.unsaved
            .as_ref()
            .is_some_and(|failure| Instant::now() >= failure.next_attempt)
    }

    /// The save that failed last, while no later one succeeded.
    pub(super) fn unsaved(&self) -> Option<&SaveFailure> {
        self.unsaved.as_ref()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_failed_save_is_retried_with_backoff_and_a_success_ends_it() {
        let state = std::env::temp_dir().join(format!("allowlist-durable-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&state);
        let mut durable = Durable::new(Store::open(&state).expect("store"));
        let model = Model::default();
        durable.save(&model).expect("a first save");
        // The directory gone and a file in its place: no save can succeed.
        std::fs::remove_dir_all(&state).expect("remove the state dir");
        std::fs::write(&state, b"").expect("a file where the directory was");
        durable.save_or_retry_later(&model);
        durable.save_or_retry_later(&model);
        let failure = durable.unsaved().expect("the failure kept");
        assert_eq!(failure.attempts, 2);
        assert!(!durable.retry_due(), "not before its backoff");
        std::fs::remove_file(&state).expect("remove the file");
        std::fs::create_dir(&state).expect("the directory back");
        durable.save(&model).expect("a save that succeeds");
        assert!(durable.unsaved().is_none(), "a success ends the failure");
        std::fs::remove_dir_all(&state).expect("cleanup");
    }
}
