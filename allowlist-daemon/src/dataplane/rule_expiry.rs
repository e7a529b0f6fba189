//! The kernel's own deadlines for the rules of expiring entries, so that an entry stops
//! allowing at its time with the daemon stopped too (the daemon removes it when it runs).
//! Each deadline is a word of the rule's stats in the rule hit array
//! ([`allowlist_common::RuleStats::expires_s`]), which user space alone writes.
//!
//! A deadline is given before any generation that flags its rule is written, and taken back
//! only once no generation in force flags it any more: taken back earlier, a generation
//! still in force would let an expired entry's sources through again (a deadline of 0 means
//! none) until the next generation is switched to.

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use allowlist_common::{MAP_RULE_HITS, RuleId, RuleStats};
use aya::maps::{Array, IterableMap as _, MapData};

use super::error::DataplaneError;
use super::readings::each_rule_window;
use super::sys::Access;

/// The deadlines written to the rule hit array (coarse seconds), by rule, and the rules the
/// policies being installed flag.
#[derive(Debug, Clone, Default)]
pub(super) struct RuleExpiries {
    /// The deadline each rule has in the kernel.
    written: BTreeMap<RuleId, u32>,
    /// The rules the last [`RuleExpiries::set`] gave a deadline; the others' go at
    /// [`RuleExpiries::retire`].
    wanted: BTreeSet<RuleId>,
}

impl RuleExpiries {
    /// Gives each rule of `deadlines` its deadline (the time left from `now`, the kernel's
    /// coarse clock) to the second after it, writing through `write` the words that change;
    /// call before writing the generations that flag them. The rules that had one and are
    /// not in `deadlines` keep theirs until [`RuleExpiries::retire`].
    pub(super) fn set<E>(
        &mut self,
        deadlines: &BTreeMap<RuleId, Duration>,
        now: Duration,
        write: impl FnOnce(&BTreeMap<RuleId, u32>) -> Result<(), E>,
    ) -> Result<(), E> {
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
            .filter(|(rule, at)| self.written.get(rule) != Some(at))
            .map(|(rule, at)| (*rule, *at))
            .collect();
        write(&changed)?;
        self.written.extend(changed);
        self.wanted = wanted.into_keys().collect();
        Ok(())
    }

    /// Takes back, writing zeros through `write`, the deadlines of the rules the last
    /// [`RuleExpiries::set`] left out; call once the generations in force no longer flag them.
    pub(super) fn retire<E>(
        &mut self,
        write: impl FnOnce(&BTreeMap<RuleId, u32>) -> Result<(), E>,
    ) -> Result<(), E> {
        let retired: BTreeMap<RuleId, u32> = self
            .written
            .keys()
            .filter(|rule| !self.wanted.contains(rule))
            .map(|rule| (*rule, 0))
            .collect();
        write(&retired)?;
        for rule in retired.keys() {
            self.written.remove(rule);
        }
        Ok(())
    }
}

/// Writes each rule's deadline word into `rule_hits`, leaving its hits as the program keeps
/// them.
pub(super) fn write_deadlines(
    rule_hits: &Array<MapData, RuleStats>,
    deadlines: &BTreeMap<RuleId, u32>,
) -> Result<(), DataplaneError> {
    let (Some(&lowest), Some(&highest)) = (deadlines.keys().next(), deadlines.keys().last()) else {
        return Ok(());
    };
    let mut written = true;
    each_rule_window(
        rule_hits.map(),
        lowest as usize..highest as usize + 1,
        Access::ReadWrite,
        |first, window| {
            let end = (first + window.len()) as RuleId;
            for (rule, at) in deadlines.range(first as RuleId..end) {
                written &= window.set_u32(*rule as usize - first, RuleStats::EXPIRES_OFFSET, *at);
            }
        },
    )?;
    if !written {
        return Err(DataplaneError::Unwritable(MAP_RULE_HITS));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn written(
        expiries: &mut RuleExpiries,
        deadlines: &[(RuleId, u64)],
        now: u64,
    ) -> BTreeMap<RuleId, u32> {
        let deadlines = deadlines
            .iter()
            .map(|(rule, left)| (*rule, Duration::from_millis(*left)))
            .collect();
        let mut words = BTreeMap::new();
        expiries
            .set::<()>(&deadlines, Duration::from_millis(now), |changed| {
                words = changed.clone();
                Ok(())
            })
            .expect("set");
        words
    }

    #[test]
    fn deadlines_round_up_to_the_second_and_only_changes_are_written() {
        let mut expiries = RuleExpiries::default();
        assert_eq!(
            written(&mut expiries, &[(3, 1_500), (7, 0)], 10_200),
            [(3, 12), (7, 10)].into(),
            "11.7 s rounds up to 12; one passed is now, rounded down"
        );
        assert_eq!(
            written(&mut expiries, &[(3, 1_000), (7, 0)], 10_900),
            BTreeMap::new(),
            "the same seconds: nothing to write"
        );
        assert_eq!(
            written(&mut expiries, &[(3, 5_000)], 10_900),
            [(3, 16)].into()
        );
    }

    #[test]
    fn a_deadline_left_out_is_taken_back_only_at_retire_and_not_after_a_failed_write() {
        let mut expiries = RuleExpiries::default();
        written(&mut expiries, &[(3, 1_000), (7, 1_000)], 0);
        written(&mut expiries, &[(3, 1_000)], 0);
        let failed: Result<(), &str> = expiries.retire(|_| Err("the kernel refused"));
        assert!(failed.is_err());
        let mut cleared = BTreeMap::new();
        expiries
            .retire::<()>(|words| {
                cleared = words.clone();
                Ok(())
            })
            .expect("retire");
        assert_eq!(cleared, [(7, 0)].into(), "rule 7 is retired, rule 3 kept");
        expiries
            .retire::<()>(|words| {
                assert!(words.is_empty(), "nothing left to retire");
                Ok(())
            })
            .expect("retire again");
    }
}
