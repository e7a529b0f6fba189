//! The range tables: how the program finds the rule of a source in one to a few cache
//! lines, whatever the policy's size, with array reads only (the verifier inlines them, and
//! user space writes a whole generation through a memory mapping).
//!
//! A policy's prefixes cut the address space into ranges, each covered by one longest
//! prefix (its rule) or by none. A table keeps those ranges by 16 bits of the address (its
//! bucket). A summary of one bit per bucket (8 KiB, in a core's first-level cache) says
//! whether the bucket holds an allowed address at all: a denied source from an empty bucket
//! ends there. Each bucket is one cache line ([`RangeBucket`]): which of its 256 blocks (the next
//! 8 bits) hold an allowed address at all (a denied source elsewhere ends after this one
//! read, the common case of a flood), then either the rule of a bucket inside one range, or
//! where the bucket's ranges start in the family's shared arrays (searched by halving) and
//! each range's rule. Buckets of a few ranges hold them in their own line instead (one read
//! for the rule, the common case up to a few hundred thousand prefixes: [`v4`] up to eight,
//! [`v6`] up to three); [`v6`] adds an adaptive region, so that a policy inside `2000::/3`
//! spreads over every bucket.
//!
//! Each generation has a region of every map: [`BUCKET_COUNT`] buckets, and room for
//! [`range_capacity`] ranges in the shared arrays (IPv4: in [`v4::leaf_capacity`] leaves;
//! the capacity user space sets in [`GLOBAL_RANGE_CAPACITY`]). A family of a few prefixes is
//! answered by its [`short`] list instead.

pub mod short;
pub mod v4;
pub mod v6;

use crate::RuleId;

/// Name of the program's read-only global that user space sets at load: the ranges each
/// generation's regions of the shared range arrays hold, in either family.
pub const GLOBAL_RANGE_CAPACITY: &str = "RANGE_CAPACITY";
/// Buckets per generation and family: one per value of 16 bits of an address.
pub const BUCKET_COUNT: u32 = 1 << 16;
/// Words of one generation's summary: a bit per bucket, bucket `b` in bit `b % 64` of word
/// `b / 64`, set when the bucket holds an allowed address.
pub const SUMMARY_WORDS: u32 = BUCKET_COUNT / 64;

/// Whether `bucket` may hold an allowed address, given its word of a summary.
#[inline(always)]
pub const fn summary_allows(word: u64, bucket: u32) -> bool {
    word >> (bucket % 64) & 1 != 0
}
/// The rule of a range no prefix covers.
pub const NO_RULE: RuleId = RuleId::MAX;

/// One bucket: the addresses sharing 16 bits. A cache line.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct RangeBucket {
    /// A [`uniform_bucket`] or a [`listed_bucket`] word.
    pub ranges: u64,
    /// A bucket whose ranges are listed in the shared arrays, or inside one range: which of
    /// its 256 blocks hold an allowed address (block `b`: bit `b % 64` of word `b / 64`;
    /// [`RangeBucket::with_blocks`]). A bucket of at most [`v4::V4_INLINE_RANGES`] IPv4 or
    /// [`v6::V6_INLINE_RANGES`] IPv6 ranges holds the ranges themselves instead
    /// ([`v4::inline_bucket`], [`v6::inline_bucket_v6`]). The last word of every IPv6 bucket
    /// marks its blocks by runs of four ([`v6::with_quarters`]).
    pub words: [u64; 7],
}

impl RangeBucket {
    /// A bucket of `ranges` whose allowed addresses lie in the blocks `covered` marks.
    pub const fn with_blocks(ranges: u64, covered: [u64; 4]) -> RangeBucket {
        RangeBucket {
            ranges,
            words: [covered[0], covered[1], covered[2], covered[3], 0, 0, 0],
        }
    }

    /// Whether block `block` (below 256) holds an allowed address (a bucket
    /// [`RangeBucket::with_blocks`]).
    #[inline(always)]
    pub const fn covers(&self, block: u32) -> bool {
        self.words[(block / 64) as usize & 3] >> (block % 64) & 1 != 0
    }
}

/// Ranges a generation needs room for, for policies of up to `max_rules` prefixes of one
/// family: each prefix starts at most two ranges, each bucket that lists ranges one more; a
/// multiple of four (whole IPv4 start words).
pub const fn range_capacity(max_rules: u32) -> u32 {
    let ranges = (max_rules as u64) * 2 + BUCKET_COUNT as u64 + 1;
    let rounded = ranges.div_ceil(4) * 4;
    if rounded > u32::MAX as u64 {
        u32::MAX - 3
    } else {
        rounded as u32
    }
}

/// The ranges word of a bucket inside one range: `rule`'s, or no rule's.
pub const fn uniform_bucket(rule: Option<RuleId>) -> u64 {
    match rule {
        Some(rule) => rule as u64 + 1,
        None => 0,
    }
}

/// The ranges word of a bucket of `count` ranges (at least one) starting at range `first`
/// of the generation's region of the shared arrays (IPv4: held in the bucket itself when
/// `count` is at most [`v4::V4_INLINE_RANGES`]).
pub const fn listed_bucket(first: u32, count: u32) -> u64 {
    (count as u64) << 32 | first as u64
}

/// `rule`, unless it is [`NO_RULE`].
#[inline(always)]
pub const fn some_rule(rule: RuleId) -> Option<RuleId> {
    if rule == NO_RULE { None } else { Some(rule) }
}

/// Rule `range` of a rule array (two to a word), given the word.
#[inline(always)]
pub const fn rule_in_word(word: u64, range: u32) -> RuleId {
    (word >> (32 * (range % 2))) as u32
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_capacity_bounds_every_policy() {
        assert_eq!(range_capacity(0), 65_540);
        assert_eq!(range_capacity(1_000_000), 2_065_540);
        assert_eq!(range_capacity(u32::MAX) % 4, 0);
        assert_eq!(size_of::<RangeBucket>(), 64, "a cache line");
    }

    #[test]
    fn a_bucket_covers_the_blocks_whose_bits_are_set() {
        let bucket = RangeBucket::with_blocks(0, [1 << 2, 0, 0, 1 << 63]);
        assert!(bucket.covers(2));
        assert!(bucket.covers(255));
        assert!(!bucket.covers(3));
        assert!(!bucket.covers(64 + 2));
    }
}
