//! The deadline: a change nobody acknowledged is reverted, in the kernel (which does it by
//! itself) and in the state, whether or not the state can be saved then.

use std::time::{Duration, Instant};

use time::OffsetDateTime;

use super::audit::Outcome;
use super::{Service, summary};

/// A state that could not be saved after a revert (the kernel had reverted already, so the
/// model did too): retried with backoff until a save succeeds.
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

/// The longest wait between two attempts to save a state that could not be saved.
const SAVE_RETRY_MAX: Duration = Duration::from_secs(60);

impl Service {
    /// Reverts the pending change if its time has come, or if the kernel has already fallen
    /// back from it (its clock decides: the wall clock may have stepped). The kernel reverts
    /// by itself at the deadline, so the model follows whether or not the state can be saved
    /// then: a failed save is logged once and retried with backoff ([`Service::retry_save`]),
    /// and [`Service::unsaved`] says so meanwhile.
    pub fn revert_if_due(&mut self) {
        let now = OffsetDateTime::now_utc();
        let due = self
            .model
            .pending()
            .is_some_and(|pending| pending.revert_at <= now || self.dataplane.fell_back());
        if !due {
            return;
        }
        let before = summary(&self.model, self.dataplane.installed_prefixes());
        let previous = self.model.clone();
        let Some(reverted) = self.model.revert_now(now) else {
            return;
        };
        // Nothing a revert restores may be past its time.
        let expired = self.model.expire(now);
        self.next_expiry = self.model.next_expiry_after(now);
        self.note_held(&expired);
        if let Err(err) = self.sync_kernel() {
            tracing::error!(
                error = %crate::error_chain(&err),
                "writing the reverted policy to the kernel (it falls back by itself at the deadline)"
            );
        }
        self.reverts += 1;
        self.save_or_retry_later();
        tracing::warn!(
            action = ?reverted.action,
            allowlists = ?reverted.allowlist_ids,
            "not acknowledged in time: reverted"
        );
        let after = summary(&self.model, self.dataplane.installed_prefixes());
        let mut what = format!(
            "reverted the unacknowledged {:?} of {:?}",
            reverted.action, reverted.allowlist_ids
        );
        if expired.changed() {
            what.push_str(&format!(
                "; expired {}",
                super::expiry::describe(&expired.removed)
            ));
        }
        self.record_by_daemon(Outcome::Reverted, what, &previous, before, after);
    }

    /// Saves the model; on failure, logs it (the first time) and schedules a retry.
    fn save_or_retry_later(&mut self) {
        match self.store.save(&self.model) {
            Ok(()) => self.saved(),
            Err(err) => {
                let cause = crate::error_chain(&err);
                let failure = self.unsaved.get_or_insert_with(|| {
                    tracing::error!(
                        error = %cause,
                        "saving the state failed; the kernel and the API show the reverted \
                         state, and the save is retried with backoff"
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
        }
        self.publish();
    }

    /// Notes that the model is saved: a save failure, if any, is over.
    pub(super) fn saved(&mut self) {
        if let Some(failure) = self.unsaved.take() {
            tracing::info!(attempts = failure.attempts, "the state is saved again");
        }
    }

    /// Retries a failed save when its backoff has passed.
    pub fn retry_save(&mut self) {
        if self
            .unsaved
            .as_ref()
            .is_some_and(|failure| Instant::now() >= failure.next_attempt)
        {
            self.save_or_retry_later();
        }
    }

    /// The state in memory (and in the kernel) that could not be saved yet, and why.
    pub fn unsaved(&self) -> Option<&SaveFailure> {
        self.unsaved.as_ref()
    }
}
