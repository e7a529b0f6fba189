//! Entries that expire: they leave their lists at their time, without an acknowledgement
//! (declared with the entry), and leave what a pending change's revert would restore too.

use std::collections::BTreeSet;
use std::sync::Arc;

use time::OffsetDateTime;

use super::allowlist::{Allowlist, Entry};
use super::state::Model;

/// What an expiry did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Expired {
    /// The entries removed, with the id of their list.
    pub removed: Vec<(String, Entry)>,
    /// The entries past their time kept, with the id of their list: removing them would have
    /// left the host enforcing a policy that allows nothing (now or after a revert), which a
    /// removal by hand would be refused for too. They go once that no longer holds.
    pub held: Vec<(String, Entry)>,
}

/// `list` without its entries expired at `now`, or `None` when none has.
fn without_expired(list: &Allowlist, now: OffsetDateTime) -> Option<Vec<Entry>> {
    if !list.entries.iter().any(|entry| entry.expired(now)) {
        return None;
    }
    Some(
        list.entries
            .iter()
            .filter(|entry| !entry.expired(now))
            .cloned()
            .collect(),
    )
}

impl Model {
    /// The earliest time an entry (of a list, or of a list a revert would restore) expires.
    pub fn next_expiry(&self) -> Option<OffsetDateTime> {
        self.expiries().min()
    }

    /// The earliest time after `now` an entry expires.
    pub fn next_expiry_after(&self, now: OffsetDateTime) -> Option<OffsetDateTime> {
        self.expiries().filter(|at| *at > now).min()
    }

    /// The expiry times of the entries of the lists and of those a revert would restore.
    fn expiries(&self) -> impl Iterator<Item = OffsetDateTime> + '_ {
        let restored = self
            .pending
            .iter()
            .flat_map(|pending| pending.revert_to.lists.iter());
        self.allowlists
            .values()
            .chain(restored)
            .flat_map(|list| list.entries.iter())
            .filter_map(|entry| entry.expires_at.map(super::Expiry::time))
    }

    /// Removes the entries expired at `now` from every list and from the lists a pending
    /// change's revert restores, unless that would leave the host enforcing a policy that
    /// allows nothing: then the expired entries of the lists enforced now or after a revert
    /// stay (see [`Expired::held`]).
    pub fn expire(&mut self, now: OffsetDateTime) -> Expired {
        let mut next = self.clone();
        let removed = next.remove_expired(now, &BTreeSet::new());
        if removed.is_empty() {
            return Expired::default();
        }
        if next.allows_something_now_and_after_revert() {
            *self = next;
            return Expired {
                removed,
                held: Vec::new(),
            };
        }
        let enforced: BTreeSet<String> = self
            .enabled
            .iter()
            .chain(self.pending.iter().flat_map(|p| p.revert_to.enabled.iter()))
            .cloned()
            .collect();
        let removed = self.remove_expired(now, &enforced);
        let held = self
            .allowlists
            .values()
            .filter(|list| enforced.contains(&list.id))
            .flat_map(|list| {
                list.entries
                    .iter()
                    .filter(|entry| entry.expired(now))
                    .map(|entry| (list.id.clone(), entry.clone()))
            })
            .collect();
        Expired { removed, held }
    }

    /// Removes the entries expired at `now` from every list but those of `keep`, and from
    /// the lists a revert restores; returns what it removed from the lists.
    fn remove_expired(
        &mut self,
        now: OffsetDateTime,
        keep: &BTreeSet<String>,
    ) -> Vec<(String, Entry)> {
        let mut removed = Vec::new();
        for list in self.allowlists.values_mut() {
            if keep.contains(&list.id) {
                continue;
            }
            let Some(entries) = without_expired(list, now) else {
                continue;
            };
            removed.extend(
                list.entries
                    .iter()
                    .filter(|entry| entry.expired(now))
                    .map(|entry| (list.id.clone(), entry.clone())),
            );
            list.entries = Arc::new(entries);
            list.version += 1;
            list.updated_at = now;
        }
        if let Some(pending) = &mut self.pending {
            for list in &mut pending.revert_to.lists {
                if keep.contains(&list.id) {
                    continue;
                }
                if let Some(entries) = without_expired(list, now) {
                    list.entries = Arc::new(entries);
                }
            }
        }
        removed
    }

    /// Whether the policy enforced now, and after a revert of the pending change, allows
    /// something (or nothing is enforced).
    fn allows_something_now_and_after_revert(&self) -> bool {
        self.check_allows_something(&self.enabled, None).is_ok() && {
            let reverted = self.reverted();
            reverted
                .check_allows_something(&reverted.enabled, None)
                .is_ok()
        }
    }
}
