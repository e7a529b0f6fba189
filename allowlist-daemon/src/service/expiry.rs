//! Entries whose time has come leave their lists and the kernel, without an
//! acknowledgement: checked every tick against the earliest expiry, which every commit
//! recomputes (a commit also takes out whatever expired by then, see [`Service::commit`]).

use std::collections::BTreeSet;

use time::OffsetDateTime;

use super::Service;
use super::audit::Outcome;
use crate::model::{Entry, EntryId, Expired, Model};

impl Service {
    /// Removes the entries whose time has come, in the state and in the kernel, and records
    /// what went; entries held past their time (see [`crate::model::Model::expire`]) stay.
    pub fn expire_due(&mut self) {
        let now = OffsetDateTime::now_utc();
        if !self.expiry.due(now) {
            return;
        }
        let mut next = self.model.clone();
        let expired = next.expire(now);
        if !expired.changed() {
            // Only entries held past their time: looked at again after the next change.
            self.expiry.follow(&self.model, now, &expired);
            return;
        }
        let before = self.enforced_summary();
        let previous = self.model.clone();
        if let Err(err) = self.commit(next) {
            tracing::error!(
                error = %crate::error_chain(&err),
                "removing expired entries (tried again at the next tick)"
            );
            return;
        }
        let after = self.enforced_summary();
        let what = format!("expired {}", describe(&expired.removed));
        let models = (&previous, &self.model);
        self.audit
            .record_by_daemon(Outcome::Expired, what, models, before, after);
    }
}

/// When the next entry expires, and the entries held past their time as last logged.
#[derive(Debug, Default)]
pub(super) struct ExpiryWatch {
    /// The earliest expiry of the model followed; `None`: no entry expires.
    next: Option<OffsetDateTime>,
    /// The entries held past their time, as last logged.
    held: BTreeSet<EntryId>,
}

impl ExpiryWatch {
    /// Whether an entry's time may have come at `now`.
    pub(super) fn due(&self, now: OffsetDateTime) -> bool {
        self.next.is_some_and(|at| at <= now)
    }

    /// Follows `model` as a change at `now` left it, having taken out `expired`: its next
    /// expiry, and a log line for the entries held past their time that were not before.
    pub(super) fn follow(&mut self, model: &Model, now: OffsetDateTime, expired: &Expired) {
        self.next = model.next_expiry_after(now);
        let held: BTreeSet<EntryId> = expired.held.iter().map(|(_, entry)| entry.id).collect();
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

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;
    use crate::model::{AllowlistInput, EntryInput, Settings};
    use crate::service::setup::RandomIds;

    #[test]
    fn the_watch_is_due_from_the_earliest_expiry_of_the_model_it_follows() {
        let settings = Settings::small();
        let now = OffsetDateTime::UNIX_EPOCH + time::Duration::seconds(1_800_000_000);
        let entry = |cidr: &str, ttl: &str| EntryInput {
            cidr: cidr.into(),
            description: None,
            expires_at: None,
            ttl: Some(ttl.into()),
        };
        let mut model = Model::default();
        let input = AllowlistInput {
            name: "office".into(),
            description: None,
            entries: Some(vec![entry("192.0.2.1", "2h"), entry("192.0.2.2", "1h")]),
            allow_all: false,
            source: None,
        };
        model
            .create(input, now, &settings, &mut RandomIds)
            .expect("a list with expiring entries");
        let mut watch = ExpiryWatch::default();
        assert!(
            !watch.due(now + Duration::from_secs(3 * 3600)),
            "follows nothing yet"
        );
        watch.follow(&model, now, &Expired::default());
        assert!(!watch.due(now + Duration::from_secs(3599)));
        assert!(
            watch.due(now + Duration::from_secs(3600)),
            "the earlier entry's time"
        );
    }
}
