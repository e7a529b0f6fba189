//! Writing the counters: a counter slot for each interface attached to, zeroed hits for a
//! rule given to a new entry. Reading them is [`Readings`](super::Readings)'s.

use allowlist_common::{
    Counter, INTERFACE_SLOT_IFINDEXES, MAP_COUNTERS, MAP_INTERFACE_SLOTS, MAX_INTERFACES, RuleId,
    RuleStats,
};
use std::sync::PoisonError;

use aya::maps::{IterableMap as _, PerCpuValues};

use super::Dataplane;
use super::error::{DataplaneError, map_error};
use super::readings::each_rule_window;
use super::sys::Access;

impl Dataplane {
    /// Gives `interface` a counter slot: the one it had (pinned maps of an earlier daemon),
    /// else a free one with its counters zeroed; slot 0 (shared) when all are taken.
    pub(super) fn assign_slot(&mut self, interface: &str) -> Result<(), DataplaneError> {
        let Some(ifindex) = nix::net::if_::if_nametoindex(interface)
            .ok()
            .filter(|index| *index < INTERFACE_SLOT_IFINDEXES)
        else {
            tracing::warn!(
                interface,
                "no counter slot for this interface: counted as other"
            );
            return Ok(());
        };
        let mut slots = self.slots.write().unwrap_or_else(PoisonError::into_inner);
        let taken = |slot: u32, slots: &[(String, u32)]| slots.iter().any(|(_, s)| *s == slot);
        let had = self
            .maps
            .interface_slots
            .get(&ifindex, 0)
            .map_err(map_error(MAP_INTERFACE_SLOTS))?;
        let slot = if (1..=MAX_INTERFACES).contains(&had) && !taken(had, &slots) {
            had
        } else {
            let Some(free) = (1..=MAX_INTERFACES).find(|slot| !taken(*slot, &slots)) else {
                tracing::warn!(
                    interface,
                    "more than {MAX_INTERFACES} interfaces: this one is counted as other"
                );
                return Ok(());
            };
            for counter in Counter::ALL {
                self.maps
                    .counters
                    .set(counter.index(free), per_cpu(0u64)?, 0)
                    .map_err(map_error(MAP_COUNTERS))?;
            }
            self.maps
                .interface_slots
                .set(ifindex, free, 0)
                .map_err(map_error(MAP_INTERFACE_SLOTS))?;
            free
        };
        slots.push((interface.to_owned(), slot));
        Ok(())
    }

    /// Zeroes the hits, last hit and deadline of `rules`, ids given up by entries that are
    /// gone: the next entry given one starts from zero. Written as memory, a window at a
    /// time.
    pub fn reset_rule_hits(&mut self, rules: &[RuleId]) -> Result<(), DataplaneError> {
        // Rules beyond the array (it shrank) hold nothing.
        let mut rules: Vec<RuleId> = rules
            .iter()
            .copied()
            .filter(|rule| *rule < self.capacity.rules)
            .collect();
        rules.sort_unstable();
        rules.dedup();
        let (Some(&lowest), Some(&highest)) = (rules.first(), rules.last()) else {
            return Ok(());
        };
        each_rule_window(
            self.maps.rule_hits.map(),
            lowest as usize..highest as usize + 1,
            Access::ReadWrite,
            |first, window| {
                let from = rules.partition_point(|rule| (*rule as usize) < first);
                let to = rules.partition_point(|rule| (*rule as usize) < first + window.len());
                for rule in &rules[from..to] {
                    window.set(*rule as usize - first, RuleStats::default());
                }
            },
        )?;
        Ok(())
    }
}

/// `value` on every possible CPU.
fn per_cpu<T: aya::Pod + Clone>(value: T) -> Result<PerCpuValues<T>, DataplaneError> {
    let cpus = aya::util::nr_cpus().map_err(|(_, err)| DataplaneError::Cpus(err))?;
    PerCpuValues::try_from(vec![value; cpus]).map_err(DataplaneError::Cpus)
}
