//! Where the covering rule changes along the address space: the one pass over a family's
//! sorted prefixes both range tables are built from.

use std::cmp::Reverse;
use std::iter;
use std::ops::Sub;

use allowlist_common::RuleId;
use allowlist_common::ranges::{
    NO_RULE, RangeBucket, SUMMARY_BUCKETS, summary_word, uniform_bucket,
};

/// An address as a number: `u64` holds IPv4 (and the address after the last), `u128` IPv6.
pub(super) trait Position: Copy + Ord + Default {
    /// The address after this one, if any.
    fn next(self) -> Option<Self>;
}

impl Position for u64 {
    fn next(self) -> Option<Self> {
        self.checked_add(1)
    }
}

impl Position for u128 {
    fn next(self) -> Option<Self> {
        self.checked_add(1)
    }
}

/// Where the covering rule changes, for prefixes given as (first address, last address,
/// rule): each change's first address and the rule from there on ([`NO_RULE`]: none),
/// sorted, the first at address 0, no two neighbours with one rule. Of prefixes with the
/// same addresses the last given wins.
pub(super) fn change_points<P: Position>(mut prefixes: Vec<(P, P, RuleId)>) -> Vec<(P, RuleId)> {
    // Containing prefixes before those they contain (a policy's own order, unless a prefix
    // kept host bits).
    let order = |p: &(P, P, RuleId)| (p.0, Reverse(p.1));
    if !prefixes.is_sorted_by_key(order) {
        prefixes.sort_by_key(order);
    }
    let mut points: Vec<(P, RuleId)> = vec![(P::default(), NO_RULE)];
    let mut emit = |at: Option<P>, rule: RuleId| {
        let Some(at) = at else { return };
        let len = points.len();
        match points.last_mut() {
            Some(last) if last.0 == at => {
                last.1 = rule;
                if len >= 2 && points[len - 2].1 == rule {
                    points.pop();
                }
            }
            Some(last) if last.1 == rule => {}
            _ => points.push((at, rule)),
        }
    };
    // The prefixes that contain the current address, innermost last.
    let mut open: Vec<(P, RuleId)> = Vec::new();
    for (start, end, rule) in prefixes {
        while let Some(&(top_end, _)) = open.last().filter(|(top_end, _)| *top_end < start) {
            open.pop();
            emit(top_end.next(), open.last().map_or(NO_RULE, |top| top.1));
        }
        open.push((end, rule));
        emit(Some(start), rule);
    }
    while let Some((top_end, _)) = open.pop() {
        emit(top_end.next(), open.last().map_or(NO_RULE, |top| top.1));
    }
    points
}

/// One bucket's share of the change points.
pub(super) struct BucketPoints<'a, P> {
    /// The bucket's first address.
    pub(super) first: P,
    /// The rule at that address ([`NO_RULE`]: none).
    pub(super) rule: RuleId,
    /// The changes after it, up to the bucket's last address.
    pub(super) inside: &'a [(P, RuleId)],
}

impl<P: Position + Sub<Output = P>> BucketPoints<'_, P> {
    /// The bucket's ranges when it has changes inside: where each starts, relative to the
    /// bucket's first address (the first at 0), and its rule.
    pub(super) fn ranges(&self) -> (Vec<P>, Vec<RuleId>) {
        let starts = iter::once(P::default())
            .chain(self.inside.iter().map(|p| p.0 - self.first))
            .collect();
        let rules = iter::once(self.rule)
            .chain(self.inside.iter().map(|p| p.1))
            .collect();
        (starts, rules)
    }
}

/// `points` bucket by bucket: `count` buckets in address order, bucket `b` from
/// `bounds(b).0` to `bounds(b).1`.
pub(super) fn split_buckets<'a, P: Position>(
    points: &'a [(P, RuleId)],
    count: u32,
    bounds: impl Fn(u32) -> (P, P) + 'a,
) -> impl Iterator<Item = BucketPoints<'a, P>> + 'a {
    // points[at] is the last change at or before the current bucket's first address.
    let mut at = 0;
    (0..count).map(move |bucket| {
        let (first, last) = bounds(bucket);
        while points.get(at + 1).is_some_and(|p| p.0 <= first) {
            at += 1;
        }
        let after = &points[(at + 1).min(points.len())..];
        let inside = after.iter().take_while(|p| p.0 <= last).count();
        BucketPoints {
            first,
            rule: points.get(at).map_or(NO_RULE, |p| p.1),
            inside: &after[..inside],
        }
    })
}

/// A bucket inside one range, of `rule`.
pub(super) fn uniform(rule: RuleId) -> RangeBucket {
    let allowed = rule != NO_RULE;
    RangeBucket::with_blocks(
        uniform_bucket(allowed.then_some(rule)),
        if allowed { [u64::MAX; 4] } else { [0; 4] },
    )
}

/// A table's summary ([`summary_word`]), noted bucket by bucket in order: which buckets hold
/// an allowed address, and which start a run of alike buckets (get a line of their own).
#[derive(Debug, Default)]
pub(super) struct Summary {
    /// The words so far.
    pub(super) words: Vec<u64>,
    /// Buckets noted.
    buckets: u32,
    /// Runs started.
    runs: u32,
    /// The line of the last run.
    last: Option<RangeBucket>,
}

impl Summary {
    /// Notes the next bucket, which holds an allowed address when `allows`; gives it back
    /// when it starts a run (its line is the table's next), None when it is alike the
    /// bucket before it (and shares its line).
    pub(super) fn note(&mut self, bucket: RangeBucket, allows: bool) -> Option<RangeBucket> {
        let bit = self.buckets % SUMMARY_BUCKETS;
        if bit == 0 {
            self.words.push(summary_word(0, 0, self.runs));
        }
        self.buckets += 1;
        let starts_run = self.last != Some(bucket);
        if let Some(word) = self.words.last_mut() {
            *word |= summary_word(u16::from(allows) << bit, u16::from(starts_run) << bit, 0);
        }
        if !starts_run {
            return None;
        }
        self.runs += 1;
        self.last = Some(bucket);
        Some(bucket)
    }
}

/// Packs `values` of `bits` bits each into words, the first in the low bits: how the
/// writer packs the shared arrays, for the unit tests that read them back.
#[cfg(test)]
pub(super) fn pack(values: impl Iterator<Item = u64>, bits: usize) -> Vec<u64> {
    let per_word = 64 / bits;
    let mut words = Vec::new();
    for (i, value) in values.enumerate() {
        if i % per_word == 0 {
            words.push(0);
        }
        if let Some(word) = words.last_mut() {
            *word |= value << (bits * (i % per_word));
        }
    }
    words
}

/// A table built into vectors: what the unit tests read instead of the kernel's maps.
#[cfg(test)]
pub(super) struct Collected<S> {
    /// The buckets, in order.
    pub(super) buckets: Vec<RangeBucket>,
    /// The listed ranges' starts.
    pub(super) starts: Vec<S>,
    /// Their rules.
    pub(super) rules: Vec<RuleId>,
}

/// The sinks a table builder writes buckets and ranges into.
#[cfg(test)]
type Sinks<'a, S> = (
    &'a mut dyn FnMut(RangeBucket) -> Result<(), std::convert::Infallible>,
    &'a mut dyn FnMut(S, RuleId) -> Result<(), std::convert::Infallible>,
);

#[cfg(test)]
impl<S> Collected<S> {
    /// Runs a table builder with sinks that collect into vectors; returns them and what the
    /// builder returned.
    pub(super) fn from<T>(
        build: impl FnOnce(Sinks<'_, S>) -> Result<T, std::convert::Infallible>,
    ) -> (Self, T) {
        let (mut buckets, mut starts, mut rules) = (Vec::new(), Vec::new(), Vec::new());
        let built = build((
            &mut |bucket| {
                buckets.push(bucket);
                Ok(())
            },
            &mut |start, rule| {
                starts.push(start);
                rules.push(rule);
                Ok(())
            },
        ));
        let Ok(value) = built;
        let collected = Collected {
            buckets,
            starts,
            rules,
        };
        (collected, value)
    }

    /// Word `word` of the rules as the rule array packs them (two to a word).
    pub(super) fn rule_word(&self, word: u32) -> Option<u64> {
        let from = word as usize * 2;
        let rules = self.rules.get(from..(from + 2).min(self.rules.len()))?;
        Some(pack(rules.iter().map(|r| u64::from(*r)), 32)[0])
    }
}

/// A reproducible stream of random words (xorshift) from `seed`, for the differential tests.
#[cfg(test)]
pub(super) fn xorshift(mut state: u64) -> impl FnMut() -> u64 {
    move || {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        state
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nested_prefixes_change_the_rule_where_they_start_and_after_they_end() {
        let points = change_points::<u64>(vec![(10, 19, 1), (12, 13, 2), (20, 20, 3)]);
        assert_eq!(
            points,
            vec![
                (0, NO_RULE),
                (10, 1),
                (12, 2),
                (14, 1),
                (20, 3),
                (21, NO_RULE)
            ]
        );
    }

    #[test]
    fn a_prefix_reaching_the_last_address_ends_the_points() {
        let points = change_points::<u128>(vec![(0, u128::MAX, 7), (5, u128::MAX, 8)]);
        assert_eq!(points, vec![(0, 7), (5, 8)]);
    }

    #[test]
    fn values_pack_low_bits_first() {
        assert_eq!(pack([1u64, 2, 3].into_iter(), 32), vec![2 << 32 | 1, 3]);
        assert_eq!(
            pack([1u64, 2, 3, 4, 5].into_iter(), 16),
            vec![4 << 48 | 3 << 32 | 2 << 16 | 1, 5]
        );
    }
}
