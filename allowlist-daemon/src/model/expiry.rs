//! Entries that expire: they leave their lists at their time, without an acknowledgement
//! (declared with the entry), and leave what a pending change's revert would restore too.
//!
//! One rule keeps an expiry from emptying what is enforced, and the kernel applies the same
//! rule by itself: in a policy (the one in force, and the one a revert falls back to) whose
//! every prefix expires, the entries that expire last are **held**. They stay past their
//! time, and the kernel is never given their deadline, until the policy holds something else
//! that allows a source (an entry that does not expire, or expires later; an `--allow`
//! prefix) or their list is disabled. Entries expire in the order of their times, so which
//! entries are held does not depend on when the daemon looks: the model and the kernel agree
//! at every instant, with the daemon running or dead.

use std::collections::BTreeSet;
use std::sync::Arc;

use allowlist_common::RuleId;
use time::OffsetDateTime;

use super::allowlist::{Allowlist, Entry};
use super::state::Model;

/// What an expiry did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Expired {
    /// The entries removed, with the id of their list: from the lists, and from the lists a
    /// revert of the pending change would restore.
    pub removed: Vec<(String, Entry)>,
    /// The entries past their time kept, with the id of their list: the last of a policy
    /// whose every prefix expires (see the module's documentation).
    pub held: Vec<(String, Entry)>,
}

impl Expired {
    /// Whether the expiry changed the model.
    pub fn changed(&self) -> bool {
        !self.removed.is_empty()
    }
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
        self.kept_lists()
            .flat_map(|list| list.entries.iter())
            .filter_map(|entry| entry.expires_at.map(super::Expiry::time))
    }

    /// The rules of the entries this state holds past their time: when every prefix it
    /// enforces expires (no `--allow` prefix, no entry without an expiry), those that expire
    /// last. Empty when nothing is enforced.
    pub(super) fn held_rules(&self) -> BTreeSet<RuleId> {
        if !self.always_allow.is_empty() {
            return BTreeSet::new();
        }
        let entries = || self.enabled_lists().flat_map(|list| list.entries.iter());
        let mut last = None;
        for entry in entries() {
            let Some(at) = entry.expires_at else {
                return BTreeSet::new();
            };
            last = last.max(Some(at));
        }
        entries()
            .filter(|entry| last.is_some() && entry.expires_at == last)
            .map(|entry| entry.rule)
            .collect()
    }

    /// The rules of the entries of the lists kept past their time: those held in the policy
    /// in force, and those of a list a revert does not restore that the policy after a
    /// revert holds (the list is the same in both). The kernel is given none of their
    /// deadlines in the policy in force.
    pub(super) fn kept_rules(&self) -> BTreeSet<RuleId> {
        let mut kept = self.held_rules();
        if self.window.pending().is_none() {
            return kept;
        }
        let held_after_revert = self.reverted().held_rules();
        if held_after_revert.is_empty() {
            return kept;
        }
        let restored: BTreeSet<&str> = self
            .window
            .restorable()
            .map(|list| list.id.as_str())
            .collect();
        let shared = self
            .allowlists
            .values()
            .filter(|list| !restored.contains(list.id.as_str()));
        kept.extend(
            shared
                .flat_map(|list| list.entries.iter())
                .map(|entry| entry.rule)
                .filter(|rule| held_after_revert.contains(rule)),
        );
        kept
    }

    /// Removes the entries expired at `now` from every list and from the lists a pending
    /// change's revert restores, but those held (see the module's documentation).
    pub fn expire(&mut self, now: OffsetDateTime) -> Expired {
        if self.expiries().all(|at| at > now) {
            return Expired::default();
        }
        let kept = self.kept_rules();
        let held_after_revert = self.reverted().held_rules();
        let mut expired = Expired::default();
        for list in self.allowlists.values_mut() {
            let keeps = |entry: &Entry| kept.contains(&entry.rule);
            if drop_expired(list, now, keeps, &mut expired) {
                list.version += 1;
                list.updated_at = now;
            }
        }
        for list in self.window.restorable_mut() {
            let keeps = |entry: &Entry| held_after_revert.contains(&entry.rule);
            drop_expired(list, now, keeps, &mut expired);
        }
        // An entry left both its list and the list's restorable version: named once.
        for entries in [&mut expired.removed, &mut expired.held] {
            entries.sort_by(|a, b| (&a.0, a.1.cidr).cmp(&(&b.0, b.1.cidr)));
            entries.dedup_by(|a, b| a.0 == b.0 && a.1.cidr == b.1.cidr);
        }
        expired
    }
}

/// Takes the entries of `list` expired at `now` out of it, but those `keeps` holds; notes
/// each in `expired`. Returns whether it removed some.
fn drop_expired(
    list: &mut Allowlist,
    now: OffsetDateTime,
    keeps: impl Fn(&Entry) -> bool,
    expired: &mut Expired,
) -> bool {
    if !list.entries.iter().any(|entry| entry.expired(now)) {
        return false;
    }
    let mut entries = Vec::with_capacity(list.entries.len());
    let mut removed = false;
    for entry in list.entries.iter() {
        if !entry.expired(now) {
            entries.push(entry.clone());
        } else if keeps(entry) {
            expired.held.push((list.id.clone(), entry.clone()));
            entries.push(entry.clone());
        } else {
            expired.removed.push((list.id.clone(), entry.clone()));
            removed = true;
        }
    }
    if removed {
        list.entries = Arc::new(entries);
    }
    removed
}
