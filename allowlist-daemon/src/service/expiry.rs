//! Entries whose time has come leave their lists and the kernel, without an
//! acknowledgement: checked every tick against the earliest expiry, which every commit
//! recomputes.

use time::OffsetDateTime;

use super::audit::Outcome;
use super::{Service, summary};

impl Service {
    /// Removes the entries whose time has come, in the state and in the kernel, and logs
    /// what went (an audit line) and what had to stay (an empty policy would drop
    /// everything: see [`Expired::held`]).
    pub fn expire_due(&mut self) {
        let now = OffsetDateTime::now_utc();
        if self.next_expiry.is_none_or(|at| at > now) {
            return;
        }
        let mut next = self.model.clone();
        let expired = next.expire(now);
        if !expired.removed.is_empty() {
            let before = summary(&self.model, self.dataplane.installed_prefixes());
            let previous = self.model.clone();
            if let Err(err) = self.commit(next) {
                tracing::error!(
                    error = %crate::error_chain(&err),
                    "removing expired entries (tried again at the next tick)"
                );
                return;
            }
            let after = summary(&self.model, self.dataplane.installed_prefixes());
            let what = format!("expired {}", describe(&expired.removed));
            self.record_by_daemon(Outcome::Expired, what, &previous, before, after);
        }
        if !expired.held.is_empty() {
            tracing::warn!(
                entries = %describe(&expired.held),
                "expired entries kept: without them the host would enforce a policy that \
                 allows nothing; they go once another entry allows something or their list \
                 is disabled"
            );
        }
        // Held entries are looked at again after the next change, not at every tick.
        self.next_expiry = self.model.next_expiry_after(now);
    }
}

/// `list/cidr` of each entry, for log lines.
fn describe(entries: &[(String, crate::model::Entry)]) -> String {
    entries
        .iter()
        .map(|(list, entry)| format!("{list}/{}", entry.cidr))
        .collect::<Vec<_>>()
        .join(", ")
}
