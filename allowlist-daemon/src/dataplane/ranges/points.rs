//! Where the covering rule changes along the address space: the one pass over a family's
//! sorted prefixes both range tables are built from.

use std::cmp::Reverse;

use allowlist_common::RuleId;
use allowlist_common::ranges::{NO_RULE, RangeBucket};

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

/// The summary of `buckets`: a bit per bucket that holds an allowed address.
pub(super) fn summary_of(buckets: &[RangeBucket]) -> Vec<u64> {
    let mut summary = vec![0u64; buckets.len().div_ceil(64)];
    for (index, bucket) in buckets.iter().enumerate() {
        if bucket.covered != [0; 4] {
            summary[index / 64] |= 1 << (index % 64);
        }
    }
    summary
}

/// Packs `values` of `bits` bits each into words, the first in the low bits.
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
