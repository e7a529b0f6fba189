//! The kernel's own deadlines for the rules of expiring entries, so that an entry stops
//! allowing at its time with the daemon stopped too (the daemon removes it when it runs).
//! Each deadline is a word of the rule's stats in the rule hit array
//! ([`allowlist_common::RuleStats::expires_s`]), which user space alone writes.
//!
//! A deadline is given before any generation that flags its rule is written, and taken back
//! only once no generation in force flags it any more: taken back earlier, a generation
//! still in force would let an expired entry's sources through again (a deadline of 0 means
//! none) until the next generation is switched to.

use std::collections::BTreeMap;
use std::time::Duration;

use allowlist_common::{MAP_RULE_HITS, RuleId, RuleStats};
use aya::maps::IterableMap as _;

use super::Dataplane;
use super::clock::coarse_now_ns;
use super::error::DataplaneError;
use super::readings::each_rule_window;
use super::sys::Access;

impl Dataplane {
    /// Gives each rule of `deadlines` its deadline (the time left from now) in the kernel's
    /// coarse clock, to the second after it; call before writing the generations that flag
    /// them. The rules that had one and are not in `deadlines` keep theirs until
    /// [`Dataplane::retire_rule_expiries`].
    pub fn set_rule_expiries(
        &mut self,
        deadlines: &BTreeMap<RuleId, Duration>,
    ) -> Result<(), DataplaneError> {
        if let Some(rule) = deadlines.keys().find(|rule| **rule >= self.capacity.rules) {
            return Err(DataplaneError::RuleOutOfRange {
                rule: *rule,
                capacity: self.capacity.rules,
            });
        }
        let now = Duration::from_nanos(coarse_now_ns());
        let wanted: BTreeMap<RuleId, u32> = deadlines
            .iter()
            .map(|(rule, left)| {
                // The second the deadline falls in, rounded up (never early); one already
                // passed: now.
                let at = match left.is_zero() {
                    true => now.as_secs_f64().floor(),
                    false => (now + *left).as_secs_f64().ceil(),
                };
                (*rule, (at as u32).max(1))
            })
            .collect();
        let changed: BTreeMap<RuleId, u32> = wanted
            .iter()
            .filter(|(rule, at)| self.rule_expiries.get(rule) != Some(at))
            .map(|(rule, at)| (*rule, *at))
            .collect();
        self.write_deadlines(&changed)?;
        self.rule_expiries.extend(changed);
        self.rule_expiries_wanted = wanted.into_keys().collect();
        Ok(())
    }

    /// Takes back the deadlines of the rules the last [`Dataplane::set_rule_expiries`] left
    /// out; call once the generations in force no longer flag them.
    pub fn retire_rule_expiries(&mut self) -> Result<(), DataplaneError> {
        let retired: BTreeMap<RuleId, u32> = self
            .rule_expiries
            .keys()
            .filter(|rule| !self.rule_expiries_wanted.contains(rule))
            .map(|rule| (*rule, 0))
            .collect();
        self.write_deadlines(&retired)?;
        for rule in retired.keys() {
            self.rule_expiries.remove(rule);
        }
        Ok(())
    }

    /// Writes each rule's deadline word, leaving its hits as the program keeps them.
    fn write_deadlines(&self, deadlines: &BTreeMap<RuleId, u32>) -> Result<(), DataplaneError> {
        let (Some(&lowest), Some(&highest)) = (deadlines.keys().next(), deadlines.keys().last())
        else {
            return Ok(());
        };
        let mut written = true;
        each_rule_window(
            self.maps.rule_hits.map(),
            lowest as usize..highest as usize + 1,
            Access::ReadWrite,
            |first, window| {
                let end = (first + window.len()) as RuleId;
                for (rule, at) in deadlines.range(first as RuleId..end) {
                    written &=
                        window.set_u32(*rule as usize - first, RuleStats::EXPIRES_OFFSET, *at);
                }
            },
        )?;
        if !written {
            return Err(DataplaneError::Unwritable(MAP_RULE_HITS));
        }
        Ok(())
    }
}
