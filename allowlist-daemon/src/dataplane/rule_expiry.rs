//! The kernel's own deadlines for the rules of expiring entries, so that an entry stops
//! allowing at its time with the daemon stopped too (the daemon removes it when it runs).

use std::collections::BTreeMap;
use std::time::Duration;

use allowlist_common::{MAP_RULE_EXPIRY, RuleId};

use super::Dataplane;
use super::clock::coarse_now_ns;
use super::error::{DataplaneError, map_error};

impl Dataplane {
    /// Gives each rule of `deadlines` its deadline (the time left from now) in the kernel's
    /// coarse clock, and takes the deadline of the rules no longer there. Only the rules the
    /// range tables flag read theirs.
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
            }
        }
        for rule in self.rule_expiries.keys() {
            if !wanted.contains_key(rule) {
                self.maps
                    .rule_expiry
                    .set(*rule, 0, 0)
                    .map_err(map_error(MAP_RULE_EXPIRY))?;
            }
        }
        self.rule_expiries = wanted;
        Ok(())
    }
}
