//! The IPv4 range table: how the program finds the rule of an IPv4 source in two to six
//! memory reads, whatever the policy's size.
//!
//! A policy's prefixes cut the address space into ranges, each covered by one longest
//! prefix (its rule) or by none. The table keeps those ranges by the address's top 16 bits
//! (its bucket): a bucket inside one range is one word saying which rule covers it (most
//! buckets of most policies: a denied flood from random sources ends after that read);
//! other buckets list where their ranges start (the low 16 bits, four to a word, searched
//! by halving) and each range's rule (two to a word). Every map is an array: the verifier
//! inlines their lookups, and user space writes a generation through a memory mapping.
//!
//! Each generation has a region of every map: [`V4_BUCKET_COUNT`] words of
//! [`MAP_V4_BUCKETS`], and the words of [`v4_range_capacity`] ranges of [`MAP_V4_STARTS`]
//! and [`MAP_V4_RULES`] (the capacity user space sets in [`GLOBAL_V4_RANGE_CAPACITY`]).

use crate::RuleId;

/// Name of the bucket array: [`V4_BUCKET_COUNT`] words per generation, each a
/// [`uniform_bucket`] or a [`listed_bucket`].
pub const MAP_V4_BUCKETS: &str = "V4_BUCKETS";
/// Name of the range start array: per generation, the low 16 bits of each range's first
/// address, four to a word (range `i` in bits `16 * (i % 4)` of word `i / 4`).
pub const MAP_V4_STARTS: &str = "V4_STARTS";
/// Name of the range rule array: per generation, each range's rule ([`NO_RULE`]: none), two
/// to a word (range `i` in bits `32 * (i % 2)` of word `i / 2`).
pub const MAP_V4_RULES: &str = "V4_RULES";
/// Name of the program's read-only global that user space sets at load: the ranges each
/// generation's regions of [`MAP_V4_STARTS`] and [`MAP_V4_RULES`] hold.
pub const GLOBAL_V4_RANGE_CAPACITY: &str = "V4_RANGE_CAPACITY";

/// Buckets per generation: one per value of an address's top 16 bits.
pub const V4_BUCKET_COUNT: u32 = 1 << 16;
/// The rule of a range no prefix covers.
pub const NO_RULE: RuleId = RuleId::MAX;
/// Halvings that find a range among the at most 2^16 of a bucket.
pub const V4_SEARCH_STEPS: u32 = 17;

/// Ranges a generation needs room for, for policies of up to `max_rules` IPv4 prefixes: each
/// prefix starts at most two ranges, each bucket that lists ranges one more; a multiple of
/// four (whole start words).
pub const fn v4_range_capacity(max_rules: u32) -> u32 {
    let ranges = (max_rules as u64) * 2 + V4_BUCKET_COUNT as u64 + 1;
    let rounded = ranges.div_ceil(4) * 4;
    if rounded > u32::MAX as u64 {
        u32::MAX - 3
    } else {
        rounded as u32
    }
}

/// The bucket word of a bucket inside one range: `rule`'s, or no rule's.
pub const fn uniform_bucket(rule: Option<RuleId>) -> u64 {
    match rule {
        Some(rule) => rule as u64 + 1,
        None => 0,
    }
}

/// The bucket word of a bucket whose `count` ranges (at least one) start at range `first`
/// of the generation's region.
pub const fn listed_bucket(first: u32, count: u32) -> u64 {
    (count as u64) << 32 | first as u64
}

/// Reads one generation's words of the three maps (indexes within the generation's region).
pub trait RangeWords {
    /// Word `bucket` of [`MAP_V4_BUCKETS`].
    fn bucket(&self, bucket: u32) -> Option<u64>;
    /// Word `word` of [`MAP_V4_STARTS`].
    fn starts(&self, word: u32) -> Option<u64>;
    /// Word `word` of [`MAP_V4_RULES`].
    fn rules(&self, word: u32) -> Option<u64>;
}

/// The low 16 bits of the first address of range `range`.
#[inline(always)]
fn range_start(table: &impl RangeWords, range: u32) -> Option<u16> {
    let word = table.starts(range / 4)?;
    Some((word >> (16 * (range % 4))) as u16)
}

/// The rule of the longest prefix covering the IPv4 address `addr` (host order), if any.
#[inline(always)]
pub fn classify_v4(table: &impl RangeWords, addr: u32) -> Option<RuleId> {
    let bucket = table.bucket(addr >> 16)?;
    let first = bucket as u32;
    let count = (bucket >> 32) as u32;
    if count == 0 {
        return first.checked_sub(1);
    }
    let low = addr as u16;
    // The bucket's first range starts at its first address: the answer is in lo..hi.
    let (mut lo, mut hi) = (0u32, count);
    for _ in 0..V4_SEARCH_STEPS {
        if hi - lo <= 1 {
            break;
        }
        let mid = lo + (hi - lo) / 2;
        if range_start(table, first + mid)? <= low {
            lo = mid;
        } else {
            hi = mid;
        }
    }
    let range = first + lo;
    let rule = (table.rules(range / 2)? >> (32 * (range % 2))) as u32;
    if rule == NO_RULE { None } else { Some(rule) }
}

#[cfg(test)]
mod tests {
    use super::*;

    struct Table {
        buckets: [u64; 2],
        starts: [u64; 1],
        rules: [u64; 2],
    }

    impl RangeWords for Table {
        fn bucket(&self, bucket: u32) -> Option<u64> {
            self.buckets.get(bucket as usize).copied()
        }
        fn starts(&self, word: u32) -> Option<u64> {
            self.starts.get(word as usize).copied()
        }
        fn rules(&self, word: u32) -> Option<u64> {
            self.rules.get(word as usize).copied()
        }
    }

    #[test]
    fn a_uniform_bucket_answers_in_one_read() {
        let table = Table {
            buckets: [uniform_bucket(None), uniform_bucket(Some(7))],
            starts: [0],
            rules: [0; 2],
        };
        assert_eq!(classify_v4(&table, 0x0000_1234), None);
        assert_eq!(classify_v4(&table, 0x0001_ffff), Some(7));
        assert_eq!(classify_v4(&table, 0x0002_0000), None, "past the table");
    }

    #[test]
    fn a_listed_bucket_finds_the_range_holding_the_address() {
        // Bucket 1: ranges at 0 (none), 0x100 (rule 3), 0x200 (rule 9), 0x201 (none).
        let rule_word = |a: u32, b: u32| u64::from(b) << 32 | u64::from(a);
        let table = Table {
            buckets: [uniform_bucket(None), listed_bucket(0, 4)],
            starts: [0x201u64 << 48 | 0x200 << 32 | 0x100 << 16],
            rules: [rule_word(NO_RULE, 3), rule_word(9, NO_RULE)],
        };
        for (low, rule) in [
            (0, None),
            (0xff, None),
            (0x100, Some(3)),
            (0x1ff, Some(3)),
            (0x200, Some(9)),
            (0x201, None),
            (0xffff, None),
        ] {
            assert_eq!(classify_v4(&table, 0x0001_0000 | low), rule, "{low:#x}");
        }
    }

    #[test]
    fn the_capacity_bounds_every_policy() {
        assert_eq!(v4_range_capacity(0), 65_540);
        assert_eq!(v4_range_capacity(1_000_000), 2_065_540);
        assert_eq!(v4_range_capacity(u32::MAX) % 4, 0);
    }
}
