//! Rule ids: the index of each entry's hit counter in the kernel.

use std::collections::BTreeMap;
use std::sync::Arc;

use allowlist_common::RuleId;
use fixedbitset::FixedBitSet;
use ipnet::IpNet;

use super::allowlist::Entry;
use super::error::ModelError;
use super::state::Model;

/// A set of rule ids, one bit each.
pub type RuleSet = FixedBitSet;

/// Hands out the smallest free rule ids.
pub(super) struct RuleAllocator {
    used: RuleSet,
    next: RuleId,
    capacity: RuleId,
}

impl RuleAllocator {
    /// An allocator of ids below `capacity` that are not in `used`.
    pub(super) fn new(used: RuleSet, capacity: RuleId) -> Self {
        Self {
            used,
            next: 0,
            capacity,
        }
    }

    /// The smallest free id.
    pub(super) fn allocate(&mut self) -> Result<RuleId, ModelError> {
        while self.next < self.capacity {
            let candidate = self.next;
            self.next += 1;
            if !self.used.contains(candidate as usize) {
                self.used.grow_and_insert(candidate as usize);
                return Ok(candidate);
            }
        }
        Err(ModelError::LimitExceeded {
            what: "no free rule slot in the kernel maps".into(),
            limit: self.capacity as usize,
            field: Some("entries".into()),
        })
    }
}

impl Model {
    /// Every rule id in use: the always-allow prefixes', and the entries' (including those a
    /// pending change may restore).
    pub fn rules_in_use(&self) -> RuleSet {
        let mut used = RuleSet::new();
        for rule in self.rules() {
            used.grow_and_insert(rule as usize);
        }
        used
    }

    /// One more than the highest rule id in use (0: none): the rule ids below it are all the
    /// hit counters the model's entries and always-allow prefixes can read.
    pub fn rule_bound(&self) -> RuleId {
        self.rules().max().map_or(0, |max| max.saturating_add(1))
    }

    /// The rule ids of the always-allow prefixes and of every entry, including those a
    /// pending change may restore (with repeats).
    fn rules(&self) -> impl Iterator<Item = RuleId> {
        let entries = self
            .kept_lists()
            .flat_map(|list| list.entries.iter().map(|entry| entry.rule));
        self.always_allow
            .iter()
            .map(|(_, rule)| *rule)
            .chain(entries)
    }

    /// Gives fresh rule ids to entries whose rule is out of `0..capacity` or shared with an
    /// entry of another prefix (after the capacity setting changed, or a hand-edited state
    /// file). An entry a pending change would restore shares the rule of the same prefix in
    /// the same list now. Returns how many entries changed.
    pub fn renumber_rules(&mut self, capacity: RuleId) -> usize {
        if self.rules_are_sound(capacity) {
            return 0;
        }
        let restorable = self.window.restorable_mut();
        let mut entries: Vec<(&str, &mut Entry)> = self
            .allowlists
            .values_mut()
            .chain(restorable)
            .flat_map(|list| {
                let id = list.id.as_str();
                Arc::make_mut(&mut list.entries)
                    .iter_mut()
                    .map(move |entry| (id, entry))
            })
            .collect();
        // The always-allow prefixes' rules are taken (by no list).
        let mut owner: BTreeMap<RuleId, (&str, IpNet)> = self
            .always_allow
            .iter()
            .map(|(net, rule)| (*rule, ("", *net)))
            .collect();
        let mut given: BTreeMap<(&str, IpNet), RuleId> = BTreeMap::new();
        let mut bad = Vec::new();
        for (index, (list, entry)) in entries.iter().enumerate() {
            let key = (*list, entry.cidr);
            if given.contains_key(&key) {
                continue;
            }
            let fits = entry.rule < capacity;
            if fits && owner.get(&entry.rule).is_none_or(|o| *o == key) {
                owner.insert(entry.rule, key);
                given.insert(key, entry.rule);
            } else {
                bad.push(index);
            }
        }
        let used = owner.keys().map(|rule| *rule as usize).collect();
        let mut allocator = RuleAllocator::new(used, capacity);
        for index in bad {
            let key = (entries[index].0, entries[index].1.cidr);
            if !given.contains_key(&key)
                && let Ok(rule) = allocator.allocate()
            {
                given.insert(key, rule);
            }
        }
        let mut changed = 0;
        for (list, entry) in &mut entries {
            if let Some(rule) = given.get(&(*list, entry.cidr))
                && *rule != entry.rule
            {
                entry.rule = *rule;
                changed += 1;
            }
        }
        changed
    }

    /// Whether every entry's rule is below `capacity` and its own: the same only for the same
    /// prefix of the same list now and in a restorable version (the check before
    /// [`Model::renumber_rules`], linear in the entries).
    fn rules_are_sound(&self, capacity: RuleId) -> bool {
        let mut used = RuleSet::with_capacity(capacity as usize);
        for (_, rule) in &self.always_allow {
            used.grow_and_insert(*rule as usize);
        }
        let mut claim = |rule: RuleId| {
            let free = rule < capacity && !used.contains(rule as usize);
            if free {
                used.insert(rule as usize);
            }
            free
        };
        if !self
            .allowlists
            .values()
            .flat_map(|list| list.entries.iter())
            .all(|entry| claim(entry.rule))
        {
            return false;
        }
        let restorable = self.window.restorable();
        restorable.into_iter().all(|list| {
            let now = self.allowlists.get(&list.id);
            list.entries.iter().all(|entry| {
                let same = now
                    .and_then(|now| now.entry(&entry.cidr))
                    .is_some_and(|current| current.rule == entry.rule);
                same || claim(entry.rule)
            })
        })
    }
}
