//! Reading the counters: packets per interface slot, hits and last hit per rule, flows.

use allowlist_common::{
    Counter, INTERFACE_SLOT_IFINDEXES, MAP_COUNTERS, MAP_INTERFACE_SLOTS, MAP_RULE_HITS,
    MAX_INTERFACES, RuleId, RuleUsage,
};
use aya::maps::PerCpuValues;
use std::time::Duration;

use super::Dataplane;
use super::clock::coarse_now_ns;
use super::error::{DataplaneError, map_error};
use super::types::{Counters, FlowStats, RuleUse};

impl Dataplane {
    /// The packet counters of every interface, summed over CPUs.
    pub fn counters(&self) -> Result<Counters, DataplaneError> {
        let mut totals = Counters::default();
        for slot in 0..=MAX_INTERFACES {
            let counters = self.slot_counters(slot)?;
            for (total, value) in totals.0.iter_mut().zip(counters.0) {
                *total = total.wrapping_add(value);
            }
        }
        Ok(totals)
    }

    /// The packet counters of each interface attached to, then of the others together
    /// (named `other`: test runs, and interfaces beyond [`MAX_INTERFACES`]).
    pub fn interface_counters(&self) -> Result<Vec<(String, Counters)>, DataplaneError> {
        let mut all = Vec::new();
        for (interface, slot) in &self.slots {
            all.push((interface.clone(), self.slot_counters(*slot)?));
        }
        all.push(("other".to_owned(), self.slot_counters(0)?));
        Ok(all)
    }

    fn slot_counters(&self, slot: u32) -> Result<Counters, DataplaneError> {
        let mut counters = Counters::default();
        for counter in Counter::ALL {
            counters.0[counter as usize] = self.counter(counter.index(slot))?;
        }
        Ok(counters)
    }

    /// One counter at `index` of the counter map, summed over CPUs.
    fn counter(&self, index: u32) -> Result<u64, DataplaneError> {
        let values = self
            .maps
            .counters
            .get(&index, 0)
            .map_err(map_error(MAP_COUNTERS))?;
        Ok(values.iter().copied().fold(0u64, u64::wrapping_add))
    }

    /// How full the flow map is.
    pub fn flow_stats(&self) -> Result<FlowStats, DataplaneError> {
        let live = self.maps.flows.keys().filter(Result::is_ok).count() as u64;
        let mut recorded = 0u64;
        for slot in 0..=MAX_INTERFACES {
            recorded = recorded.wrapping_add(self.counter(Counter::FlowsRecorded.index(slot))?);
        }
        Ok(FlowStats {
            live,
            recorded,
            evicted: recorded.saturating_sub(live),
        })
    }

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
        let taken = |slot: u32, slots: &[(String, u32)]| slots.iter().any(|(_, s)| *s == slot);
        let had = self
            .maps
            .interface_slots
            .get(&ifindex, 0)
            .map_err(map_error(MAP_INTERFACE_SLOTS))?;
        let slot = if (1..=MAX_INTERFACES).contains(&had) && !taken(had, &self.slots) {
            had
        } else {
            let Some(free) = (1..=MAX_INTERFACES).find(|slot| !taken(*slot, &self.slots)) else {
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
        self.slots.push((interface.to_owned(), slot));
        Ok(())
    }

    /// How many packets `rule` has allowed, summed over CPUs.
    pub fn rule_hits(&self, rule: RuleId) -> Result<u64, DataplaneError> {
        Ok(self.rule_use(rule)?.hits)
    }

    /// How many packets `rule` has allowed and when it last did, over all CPUs.
    pub fn rule_use(&self, rule: RuleId) -> Result<RuleUse, DataplaneError> {
        self.check_rule(rule)?;
        let values = self
            .maps
            .rule_hits
            .get(&rule, 0)
            .map_err(map_error(MAP_RULE_HITS))?;
        let hits = values.iter().fold(0u64, |sum, v| sum.wrapping_add(v.hits));
        let last = values.iter().map(|v| v.last_hit_ns).max().unwrap_or(0);
        Ok(RuleUse {
            hits,
            last_hit_ago: (last != 0)
                .then(|| Duration::from_nanos(coarse_now_ns().saturating_sub(last))),
        })
    }

    /// Zeroes the hit counter of `rule`, for a rule id given to a new entry.
    pub fn reset_rule_hits(&mut self, rule: RuleId) -> Result<(), DataplaneError> {
        self.check_rule(rule)?;
        self.maps
            .rule_hits
            .set(rule, per_cpu(RuleUsage::default())?, 0)
            .map_err(map_error(MAP_RULE_HITS))
    }

    fn check_rule(&self, rule: RuleId) -> Result<(), DataplaneError> {
        if rule >= self.max_rules {
            return Err(DataplaneError::RuleOutOfRange {
                rule,
                capacity: self.max_rules,
            });
        }
        Ok(())
    }
}

/// `value` on every possible CPU.
fn per_cpu<T: aya::Pod + Clone>(value: T) -> Result<PerCpuValues<T>, DataplaneError> {
    let cpus = aya::util::nr_cpus().map_err(|(_, err)| DataplaneError::Cpus(err))?;
    PerCpuValues::try_from(vec![value; cpus]).map_err(DataplaneError::Cpus)
}
