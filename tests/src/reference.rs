//! A small, independent reference of what the kernel should enforce after a sequence of
//! operations the daemon accepted: the lists' prefixes, the enabled set, the scopes, and the
//! pending change with exactly what its revert restores. The model's property test and the
//! randomised end-to-end test check the daemon against it.

use std::collections::{BTreeMap, BTreeSet};
use std::net::IpAddr;

use allowlist_daemon::policy::PortScope;
use ipnet::IpNet;

/// What is enforced: every list's prefixes (by list id), which lists are enabled, and the
/// scopes set through the API (`None`: the default); when entries expire, and what the lists
/// that follow a feed held when a person last set them.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Enforced {
    /// Each list's prefixes.
    pub lists: BTreeMap<String, BTreeSet<IpNet>>,
    /// The enabled lists.
    pub enabled: BTreeSet<String>,
    /// The scopes set through the API.
    pub scopes: Option<BTreeSet<PortScope>>,
    /// When entries expire, by list and prefix (an entry not named: never).
    pub expiries: BTreeMap<String, BTreeMap<IpNet, i64>>,
    /// The lists that follow a feed, with what a person last set.
    pub feeds: BTreeMap<String, Baseline>,
}

/// What a person last set a list that follows a feed to.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Baseline {
    /// How many entries the person set (the first read of a list nobody filled stands for
    /// them).
    pub count: usize,
    /// Those of them the list still holds.
    pub kept: BTreeSet<IpNet>,
}

impl Enforced {
    /// The entries of the enabled lists that expire, with their time.
    fn enforced_expiries(&self) -> Vec<(String, IpNet, i64)> {
        self.enabled
            .iter()
            .filter_map(|id| Some((id, self.expiries.get(id)?)))
            .flat_map(|(id, times)| {
                let listed = self.lists.get(id);
                times
                    .iter()
                    .filter(move |(net, _)| listed.is_some_and(|l| l.contains(net)))
                    .map(move |(net, at)| (id.clone(), *net, *at))
            })
            .collect()
    }

    /// The entries (list, prefix) that time `at` leaves in place past their time: when every
    /// enforced entry has expired by `at`, all of those (taking them out would leave nothing
    /// allowed). Entries are taken in time order, so by then the others went earlier.
    fn held_at(&self, at: i64) -> BTreeSet<(String, IpNet)> {
        let enforced: usize = self
            .enabled
            .iter()
            .filter_map(|id| self.lists.get(id))
            .map(BTreeSet::len)
            .sum();
        let due: Vec<(String, IpNet)> = self
            .enforced_expiries()
            .into_iter()
            .filter(|(_, _, when)| *when <= at)
            .map(|(id, net, _)| (id, net))
            .collect();
        if enforced > 0 && due.len() == enforced {
            due.into_iter().collect()
        } else {
            BTreeSet::new()
        }
    }

    /// Takes out of `id` the entries due at `at` but those `keeps` holds.
    fn drop_due(&mut self, id: &str, at: i64, keeps: impl Fn(&IpNet) -> bool) {
        let Some(times) = self.expiries.get_mut(id) else {
            return;
        };
        let due: Vec<IpNet> = times
            .iter()
            .filter(|(net, when)| **when <= at && !keeps(net))
            .map(|(net, _)| *net)
            .collect();
        for net in due {
            times.remove(&net);
            if let Some(list) = self.lists.get_mut(id) {
                list.remove(&net);
            }
            if let Some(feed) = self.feeds.get_mut(id) {
                feed.kept.remove(&net);
            }
        }
    }

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
        self.now.expiries.remove(id);
        self.now.feeds.remove(id);
    }

    /// List `id` now holds `entries`, as a person set them (entries it kept keep their
    /// expiry): a pending change if it is enabled and lost a prefix.
    pub fn set_entries(&mut self, at: i64, id: &str, entries: BTreeSet<IpNet>) {
        let old = self.now.lists.get(id).cloned().unwrap_or_default();
        if self.now.enabled.contains(id) && !old.is_subset(&entries) {
            self.begin(at, BTreeSet::from([id.to_owned()]));
        }
        if let Some(times) = self.now.expiries.get_mut(id) {
            times.retain(|net, _| entries.contains(net));
        }
        if let Some(feed) = self.now.feeds.get_mut(id) {
            *feed = Baseline {
                count: entries.len(),
                kept: entries.clone(),
            };
        }
        self.now.lists.insert(id.to_owned(), entries);
    }

    /// The entries of list `id` expire at these times (replacing their expiries: `None`,
    /// never).
    pub fn set_expiries(
        &mut self,
        id: &str,
        times: impl IntoIterator<Item = (IpNet, Option<i64>)>,
    ) {
        let list = self.now.expiries.entry(id.to_owned()).or_default();
        for (net, at) in times {
            match at {
                Some(at) => list.insert(net, at),
                None => list.remove(&net),
            };
        }
    }

    /// List `id` follows a feed (or not), from now on; what it holds is what a person set.
    pub fn set_feed(&mut self, id: &str, follows: bool) {
        if follows {
            let kept = self.entries(id);
            let count = kept.len();
            self.now
                .feeds
                .insert(id.to_owned(), Baseline { count, kept });
        } else {
            self.now.feeds.remove(id);
        }
    }

    /// A read of the feed of list `id` at `at` that says `prefixes`, judged as the README
    /// says: refused (returns false, nothing changes) when the list follows no feed, a
    /// pending change freezes it, `prefixes` is empty, it would leave fewer than half of the
    /// entries a person set, it would cut off an address of `guarded` that passes now or
    /// after a revert, or the lists would pass `max_entries` entries; else the list holds
    /// them, with no acknowledgement asked.
    pub fn feed_read(
        &mut self,
        id: &str,
        prefixes: &BTreeSet<IpNet>,
        guarded: &[IpAddr],
        max_entries: usize,
    ) -> bool {
        let Some(baseline) = self.now.feeds.get(id).cloned() else {
            return false;
        };
        let frozen = self
            .pending
            .as_ref()
            .is_some_and(|p| p.concerned.contains(id));
        let kept = baseline.kept.intersection(prefixes).count();
        if frozen || prefixes.is_empty() || (baseline.count - kept) * 2 > baseline.count {
            return false;
        }
        let mut after = self.clone();
        after.now.lists.insert(id.to_owned(), prefixes.clone());
        if let Some(times) = after.now.expiries.get_mut(id) {
            times.retain(|net, _| prefixes.contains(net));
        }
        let feed = after.now.feeds.entry(id.to_owned()).or_default();
        *feed = if baseline.count == 0 {
            Baseline {
                count: prefixes.len(),
                kept: prefixes.clone(),
            }
        } else {
            Baseline {
                count: baseline.count,
                kept: baseline.kept.intersection(prefixes).copied().collect(),
            }
        };
        let cuts = guarded.iter().any(|addr| {
            (self.now.allows(*addr) && !after.now.allows(*addr))
                || (self.reverted().allows(*addr) && !after.reverted().allows(*addr))
        });
        let total = |state: &Enforced| state.lists.values().map(BTreeSet::len).sum::<usize>();
        let too_many = total(&after.now) > max_entries || total(&after.reverted()) > max_entries;
        if cuts || too_many {
            return false;
        }
        *self = after;
        true
    }

    /// Takes out the entries whose time has come by `at`, in the state now and in what a
    /// revert restores, but those that would leave a policy allowing nothing (see
    /// [`Enforced::held_at`]): what the daemon and the kernel both do.
    pub fn expire(&mut self, at: i64) {
        let held_now = self.now.held_at(at);
        let reverted = self.reverted();
        let held_after = reverted.held_at(at);
        let concerned = self
            .pending
            .as_ref()
            .map(|p| p.concerned.clone())
            .unwrap_or_default();
        let ids: Vec<String> = self.now.expiries.keys().cloned().collect();
        for id in ids {
            let kept_by_revert = !concerned.contains(&id);
            self.now.drop_due(&id, at, |net| {
                let key = (id.clone(), *net);
                held_now.contains(&key) || (kept_by_revert && held_after.contains(&key))
            });
        }
        if let Some(pending) = &mut self.pending {
            for id in &pending.concerned {
                pending
                    .before
                    .drop_due(id, at, |net| held_after.contains(&(id.clone(), *net)));
            }
        }
    }

    /// The prefixes of list `id`.
    pub fn entries(&self, id: &str) -> BTreeSet<IpNet> {
        self.now.lists.get(id).cloned().unwrap_or_default()
    }

    /// Deletes list `id`.
    pub fn delete(&mut self, id: &str) {
        self.now.lists.remove(id);
        self.now.expiries.remove(id);
        self.now.feeds.remove(id);
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
            // Declared without times or a feed: the file is what the lists are now.
            if next.lists.get(id) != Some(entries)
                || next.expiries.get(id).is_some_and(|times| !times.is_empty())
                || next.feeds.contains_key(id)
            {
                next.expiries.remove(id);
                next.feeds.remove(id);
            }
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
            next.expiries.remove(id);
            next.feeds.remove(id);
        }
        let narrows = before.enabled != next.enabled
            || before.enabled.iter().any(|id| {
                let old = before.lists.get(id).cloned().unwrap_or_default();
                !next.lists.get(id).is_some_and(|new| old.is_subset(new))
            });
        if always_pending || narrows {
            let ids: BTreeSet<&String> = before.lists.keys().chain(next.lists.keys()).collect();
            let state = |e: &Enforced, id: &str| {
                (
                    e.lists.get(id).cloned(),
                    e.enabled.contains(id),
                    e.expiries.get(id).cloned().unwrap_or_default(),
                    e.feeds.get(id).cloned(),
                )
            };
            let touched = ids
                .into_iter()
                .filter(|id| state(&before, id) != state(&next, id))
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
                let before = &pending.before;
                match before.lists.get(id) {
                    Some(entries) => state.lists.insert(id.clone(), entries.clone()),
                    // Created by the change: a revert deletes it.
                    None => state.lists.remove(id),
                };
                match before.expiries.get(id) {
                    Some(times) => state.expiries.insert(id.clone(), times.clone()),
                    None => state.expiries.remove(id),
                };
                match before.feeds.get(id) {
                    Some(feed) => state.feeds.insert(id.clone(), feed.clone()),
                    None => state.feeds.remove(id),
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

    /// Lets time pass from `from` (what was due then has happened) until `to`, in the order
    /// of what happens meanwhile: each entry's expiry and the pending change's deadline.
    pub fn advance(&mut self, from: i64, to: i64) {
        let mut done = from;
        loop {
            let next = self
                .now
                .expiries
                .values()
                .chain(self.pending.iter().flat_map(|p| p.before.expiries.values()))
                .flat_map(BTreeMap::values)
                .copied()
                .chain(self.pending.as_ref().map(|p| p.revert_at))
                .filter(|at| *at > done && *at <= to)
                .min();
            let Some(at) = next else { break };
            self.revert_if_due(at);
            self.expire(at);
            done = at;
        }
        self.revert_if_due(to);
        self.expire(to);
    }
}
