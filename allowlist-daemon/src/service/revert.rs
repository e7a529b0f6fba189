//! The deadline: a change nobody acknowledged is reverted, in the kernel (which does it by
//! itself) and in the state, whether or not the state can be saved then (see
//! [`super::durable`]).

use time::OffsetDateTime;

use super::Service;
use super::audit::Outcome;
use super::durable::SaveFailure;

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
            .is_some_and(|pending| pending.revert_at <= now || self.kernel.dataplane().fell_back());
        if !due {
            return;
        }
        let before = self.enforced_summary();
        let previous = self.model.clone();
        let Some(reverted) = self.model.revert_now(now) else {
            return;
        };
        // Nothing a revert restores may be past its time.
        let expired = self.model.expire(now);
        self.expiry.follow(&self.model, now, &expired);
        if let Err(err) = self.sync_kernel() {
            tracing::error!(
                error = %crate::error_chain(&err),
                "writing the reverted policy to the kernel (it falls back by itself at the deadline)"
            );
        }
        self.reverts += 1;
        self.durable.save_or_retry_later(&self.model);
        self.publish();
        tracing::warn!(
            action = ?reverted.action,
            allowlists = ?reverted.allowlist_ids,
            "not acknowledged in time: reverted"
        );
        let after = self.enforced_summary();
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
        let models = (&previous, &self.model);
        self.audit
            .record_by_daemon(Outcome::Reverted, what, models, before, after);
    }

    /// Retries a failed save when its backoff has passed.
    pub fn retry_save(&mut self) {
        if self.durable.retry_due() {
            self.durable.save_or_retry_later(&self.model);
            self.publish();
        }
    }

    /// The state in memory (and in the kernel) that could not be saved yet, and why.
    pub fn unsaved(&self) -> Option<&SaveFailure> {
        self.durable.unsaved()
    }
}
