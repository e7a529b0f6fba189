//! Rule ids: the index of each entry's hit counter in the kernel.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

use allowlist_common::RuleId;
use ipnet::IpNet;

use super::allowlist::Entry;
use super::error::ModelError;
use super::state::Model;

/// Hands out the smallest free rule ids.
pub(super) struct RuleAllocator {
    used: BTreeSet<RuleId>,
    next: RuleId,
    capacity: RuleId,
}

impl RuleAllocator {
    /// An allocator of ids below `capacity` that are not in `used`.
    pub(super) fn new(used: BTreeSet<RuleId>, capacity: RuleId) -> Self {
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
            if self.used.insert(candidate) {
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
    /// Every rule id in use, including those of entries a pending change may restore.
    pub fn rules_in_use(&self) -> BTreeSet<RuleId> {
        let restorable = self
            .pending
            .iter()
            .flat_map(|pending| &pending.revert_to.lists);
        self.allowlists
            .values()
            .chain(restorable)
            .flat_map(|list| list.entries.iter().map(|entry| entry.rule))
            .collect()
    }

    /// Gives fresh rule ids to entries whose rule is out of `0..capacity` or shared with an
    /// entry of another prefix (after the capacity setting changed, or a hand-edited state
    /// file). An entry a pending change would restore shares the rule of the same prefix in
    /// the same list now. Returns how many entries changed.
    pub fn renumber_rules(&mut self, capacity: RuleId) -> usize {
        let restorable = self
            .pending
            .iter_mut()
            .flat_map(|pending| pending.revert_to.lists.iter_mut());
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
        let mut owner: BTreeMap<RuleId, (&str, IpNet)> = BTreeMap::new();
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
        let mut allocator = RuleAllocator::new(owner.keys().copied().collect(), capacity);
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
}
