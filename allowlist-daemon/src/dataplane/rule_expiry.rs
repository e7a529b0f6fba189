//! The kernel's own deadlines for the rules of expiring entries, so that an entry stops
//! allowing at its time with the daemon stopped too (the daemon removes it when it runs).
//!
//! A deadline is given before any generation that flags its rule is written, and taken back
//! only once no generation in force flags it any more: taken back earlier, a generation
//! still in force would let an expired entry's sources through again (a deadline of 0 means
//! none) until the next generation is switched to.

use std::collections::BTreeMap;
use std::time::Duration;

use allowlist_common::{MAP_RULE_EXPIRY, RuleId};

use super::Dataplane;
use super::clock::coarse_now_ns;
use super::error::{DataplaneError, map_error};

impl Dataplane {
    /// Gives each rule of `deadlines` its deadline (the time left from now) in the kernel's
    /// coarse clock; call before writing the generations that flag them. The rules that had
    /// one and are not in `deadlines` keep theirs until [`Dataplane::retire_rule_expiries`].
    pub fn set_rule_expiries(
        &mut self,
        deadlines: &BTreeMap<RuleId, Duration>,
    ) -> Result<(), DataplaneError> {
        let now = coarse_now_ns();
        let wanted: BTreeMap<RuleId, u64> = deadlines
            .iter()
            .map(|(rule, left)| {
                let left = u64::try_from(left.as_nanos()).unwrap_or(u64::MAX);
                (*rule, now.saturating_add(left).max(1))
            })
            .collect();
        for (rule, at) in &wanted {
            if self.rule_expiries.get(rule) != Some(at) {
                self.maps
                    .rule_expiry
                    .set(*rule, *at, 0)
                    .map_err(map_error(MAP_RULE_EXPIRY))?;
                self.rule_expiries.insert(*rule, *at);
            }
        }
        self.rule_expiries_wanted = wanted.into_keys().collect();
        Ok(())
    }

    /// Takes back the deadlines of the rules the last [`Dataplane::set_rule_expiries`] left
    /// out; call once the generations in force no longer flag them.
    pub fn retire_rule_expiries(&mut self) -> Result<(), DataplaneError> {
        let retired: Vec<RuleId> = self
            .rule_expiries
            .keys()
            .filter(|rule| !self.rule_expiries_wanted.contains(rule))
            .copied()
            .collect();
        for rule in retired {
            self.maps
                .rule_expiry
                .set(rule, 0, 0)
                .map_err(map_error(MAP_RULE_EXPIRY))?;
            self.rule_expiries.remove(&rule);
        }
        Ok(())
    }
}
