//! A small, independent reference of what the kernel should enforce after a sequence of
//! operations the daemon accepted: the lists' prefixes, the enabled set, the scopes, and the
//! pending change with exactly what its revert restores. The model's property test and the
//! randomised end-to-end test check the daemon against it.

use std::collections::{BTreeMap, BTreeSet};
use std::net::IpAddr;

use allowlist_daemon::policy::PortScope;
use ipnet::IpNet;

/// What is enforced: every list's prefixes (by list id), which lists are enabled, and the
/// scopes set through the API (`None`: the default).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Enforced {
    /// Each list's prefixes.
    pub lists: BTreeMap<String, BTreeSet<IpNet>>,
    /// The enabled lists.
    pub enabled: BTreeSet<String>,
    /// The scopes set through the API.
    pub scopes: Option<BTreeSet<PortScope>>,
}

impl Enforced {
    /// The prefixes of the enabled lists.
    pub fn prefixes(&self) -> BTreeSet<IpNet> {
        self.enabled
            .iter()
            .filter_map(|id| self.lists.get(id))
            .flatten()
            .copied()
            .collect()
    }

    /// Whether packets from `addr` pass: nothing is enabled, or an enabled prefix covers it.
    pub fn allows(&self, addr: IpAddr) -> bool {
        self.enabled.is_empty() || self.prefixes().iter().any(|net| net.contains(&addr))
    }
}

/// The pending change, in the reference.
#[derive(Debug, Clone)]
pub struct Pending {
    /// When an acknowledgement is accepted from.
    pub acknowledge_after: i64,
    /// When the change reverts.
    pub revert_at: i64,
    /// The lists whose state before it a revert restores.
    pub concerned: BTreeSet<String>,
    /// What was enforced before it.
    pub before: Enforced,
}

/// The reference: applies operations the daemon accepted with the meaning the README gives
/// them. Times are in any unit, the same as the windows'.
#[derive(Debug, Clone)]
pub struct Reference {
    /// What is enforced now.
    pub now: Enforced,
    /// The change waiting for acknowledgement.
    pub pending: Option<Pending>,
    ack_min: i64,
    ack_max: i64,
}

impl Reference {
    /// An empty state, with the acknowledgement window `ack_min..ack_max`.
    pub fn new(ack_min: i64, ack_max: i64) -> Self {
        Reference {
            now: Enforced::default(),
            pending: None,
            ack_min,
            ack_max,
        }
    }

    /// Records a change made at `at` as the pending one, unless one is pending already.
    fn begin(&mut self, at: i64, concerned: BTreeSet<String>) {
        if self.pending.is_none() {
            self.pending = Some(Pending {
                acknowledge_after: at + self.ack_min,
                revert_at: at + self.ack_max,
                concerned,
                before: self.now.clone(),
            });
        }
    }

    /// A new list `id` with `entries`.
    pub fn create(&mut self, id: &str, entries: BTreeSet<IpNet>) {
        self.now.lists.insert(id.to_owned(), entries);
    }

    /// List `id` now holds `entries`: a pending change if it is enabled and lost a prefix.
    pub fn set_entries(&mut self, at: i64, id: &str, entries: BTreeSet<IpNet>) {
        let old = self.now.lists.get(id).cloned().unwrap_or_default();
        if self.now.enabled.contains(id) && !old.is_subset(&entries) {
            self.begin(at, BTreeSet::from([id.to_owned()]));
        }
        self.now.lists.insert(id.to_owned(), entries);
    }

    /// The prefixes of list `id`.
    pub fn entries(&self, id: &str) -> BTreeSet<IpNet> {
        self.now.lists.get(id).cloned().unwrap_or_default()
    }

    /// Deletes list `id`.
    pub fn delete(&mut self, id: &str) {
        self.now.lists.remove(id);
    }

    /// Enables lists: a pending change, whose revert disables them whatever they hold then.
    pub fn enable(&mut self, at: i64, ids: &[String]) {
        self.begin(at, BTreeSet::new());
        self.now.enabled.extend(ids.iter().cloned());
    }

    /// Disables lists: a pending change.
    pub fn disable(&mut self, at: i64, ids: &[String]) {
        self.begin(at, ids.iter().cloned().collect());
        for id in ids {
            self.now.enabled.remove(id);
        }
    }

    /// Sets the scopes: a pending change, unless `changes` is false (the scopes in force).
    pub fn set_scopes(&mut self, at: i64, scopes: BTreeSet<PortScope>, changes: bool) {
        if changes {
            self.begin(at, BTreeSet::new());
            self.now.scopes = Some(scopes);
        }
    }

    /// Converges to `desired` (list id, prefixes, enabled) and deletes `deleted`, as one
    /// change: pending when it narrows what is enforced or changes the enabled set, or when
    /// `always_pending` (a fleet release).
    pub fn apply(
        &mut self,
        at: i64,
        desired: &[(String, BTreeSet<IpNet>, bool)],
        deleted: &[String],
        always_pending: bool,
    ) {
        let before = self.now.clone();
        let mut next = self.now.clone();
        for (id, entries, enabled) in desired {
            next.lists.insert(id.clone(), entries.clone());
            if *enabled {
                next.enabled.insert(id.clone());
            } else {
                next.enabled.remove(id);
            }
        }
        for id in deleted {
            next.lists.remove(id);
            next.enabled.remove(id);
        }
        let narrows = before.enabled != next.enabled
            || before.enabled.iter().any(|id| {
                let old = before.lists.get(id).cloned().unwrap_or_default();
                !next.lists.get(id).is_some_and(|new| old.is_subset(new))
            });
        if always_pending || narrows {
            let ids: BTreeSet<&String> = before.lists.keys().chain(next.lists.keys()).collect();
            let touched = ids
                .into_iter()
                .filter(|id| {
                    before.lists.get(*id) != next.lists.get(*id)
                        || before.enabled.contains(*id) != next.enabled.contains(*id)
                })
                .cloned()
                .collect();
            self.begin(at, touched);
        }
        self.now = next;
    }

    /// Confirms the pending change.
    pub fn acknowledge(&mut self) {
        self.pending = None;
    }

    /// What a revert of the pending change gives: exactly what was enforced before it, for
    /// the enabled set, the scopes and the lists it concerns.
    pub fn reverted(&self) -> Enforced {
        let mut state = self.now.clone();
        if let Some(pending) = &self.pending {
            state.enabled = pending.before.enabled.clone();
            state.scopes = pending.before.scopes.clone();
            for id in &pending.concerned {
                match pending.before.lists.get(id) {
                    Some(entries) => state.lists.insert(id.clone(), entries.clone()),
                    // Created by the change: a revert deletes it.
                    None => state.lists.remove(id),
                };
            }
        }
        state
    }

    /// Reverts the pending change.
    pub fn revert(&mut self) {
        self.now = self.reverted();
        self.pending = None;
    }

    /// Reverts the pending change if `at` is past its deadline.
    pub fn revert_if_due(&mut self, at: i64) {
        if self.pending.as_ref().is_some_and(|p| at >= p.revert_at) {
            self.revert();
        }
    }
}
