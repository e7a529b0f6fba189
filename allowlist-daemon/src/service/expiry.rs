//! Entries whose time has come leave their lists and the kernel, without an
//! acknowledgement: checked every tick against the earliest expiry, which every commit
//! recomputes (a commit also takes out whatever expired by then, see [`Service::commit`]).

use std::collections::BTreeSet;

use time::OffsetDateTime;

use super::audit::Outcome;
use super::{Service, summary};
use crate::model::{Entry, Expired};

impl Service {
    /// Removes the entries whose time has come, in the state and in the kernel, and records
    /// what went; entries held past their time (see [`crate::model::Model::expire`]) stay.
    pub fn expire_due(&mut self) {
        let now = OffsetDateTime::now_utc();
        if self.next_expiry.is_none_or(|at| at > now) {
            return;
        }
        let mut next = self.model.clone();
        let expired = next.expire(now);
        if !expired.changed() {
            // Only entries held past their time: looked at again after the next change.
            self.note_held(&expired);
            self.next_expiry = self.model.next_expiry_after(now);
            return;
        }
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

    /// Logs the entries `expired` holds past their time that were not held before.
    pub(super) fn note_held(&mut self, expired: &Expired) {
        let held: BTreeSet<_> = expired.held.iter().map(|(_, entry)| entry.id).collect();
        let new: Vec<(String, Entry)> = expired
            .held
            .iter()
            .filter(|(_, entry)| !self.held.contains(&entry.id))
            .cloned()
            .collect();
        if !new.is_empty() {
            tracing::warn!(
                entries = %describe(&new),
                "expired entries kept: every prefix of the policy expires and these are the \
                 last, so without them the host would enforce a policy that allows nothing; \
                 the kernel keeps them too, until another entry allows something or their \
                 list is disabled"
            );
        }
        self.held = held;
    }
}

/// `list/cidr` of each entry, for log lines.
pub(super) fn describe(entries: &[(String, Entry)]) -> String {
    entries
        .iter()
        .map(|(list, entry)| format!("{list}/{}", entry.cidr))
        .collect::<Vec<_>>()
        .join(", ")
}
