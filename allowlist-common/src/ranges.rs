//! The IPv4 range table: how the program finds the rule of an IPv4 source in one to three
//! cache lines, whatever the policy's size.
//!
//! A policy's prefixes cut the address space into ranges, each covered by one longest
//! prefix (its rule) or by none. The table keeps those ranges by the address's top 16 bits
//! (its bucket), each bucket one cache line ([`V4Bucket`]): which of its 256 /24 blocks hold
//! an allowed address at all (a denied source elsewhere ends after this one read, the
//! common case of a flood), then either the rule of a bucket inside one range, or the
//! bucket's ranges themselves when it has at most [`V4_INLINE_RANGES`], or where its ranges
//! start in the shared arrays: the low 16 bits of each range's first address, four to a
//! word, searched by halving, and each range's rule, two to a word. Every map is an array:
//! the verifier inlines their lookups, and user space writes a generation through a memory
//! mapping.
//!
//! Each generation has a region of every map: [`V4_BUCKET_COUNT`] buckets of
//! [`MAP_V4_BUCKETS`], and the words of [`v4_range_capacity`] ranges of [`MAP_V4_STARTS`]
//! and [`MAP_V4_RULES`] (the capacity user space sets in [`GLOBAL_V4_RANGE_CAPACITY`]).

use crate::RuleId;

/// Name of the bucket array: [`V4_BUCKET_COUNT`] [`V4Bucket`]s per generation.
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
/// Ranges a bucket holds in its own cache line.
pub const V4_INLINE_RANGES: u32 = 4;
/// The rule of a range no prefix covers.
pub const NO_RULE: RuleId = RuleId::MAX;
/// Halvings that find a range among the at most 2^16 of a bucket.
pub const V4_SEARCH_STEPS: u32 = 17;

/// One bucket: the addresses sharing their top 16 bits. A cache line.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct V4Bucket {
    /// A [`uniform_bucket`] or a [`listed_bucket`] word.
    pub ranges: u64,
    /// Which of the bucket's 256 /24 blocks hold an allowed address: block `b` is bit
    /// `b % 64` of word `b / 64`.
    pub covered: [u64; 4],
    /// The starts of a bucket of at most [`V4_INLINE_RANGES`] ranges, as in
    /// [`MAP_V4_STARTS`] (range `i` in bits `16 * i`); zero otherwise.
    pub inline_starts: u64,
    /// Their rules, as in [`MAP_V4_RULES`] (range `i` in bits `32 * (i % 2)` of word `i / 2`).
    pub inline_rules: [u64; 2],
}

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

/// The ranges word of a bucket inside one range: `rule`'s, or no rule's.
pub const fn uniform_bucket(rule: Option<RuleId>) -> u64 {
    match rule {
        Some(rule) => rule as u64 + 1,
        None => 0,
    }
}

/// The ranges word of a bucket of `count` ranges (at least one), held in the bucket itself
/// when `count` is at most [`V4_INLINE_RANGES`], else starting at range `first` of the
/// generation's region of the shared arrays.
pub const fn listed_bucket(first: u32, count: u32) -> u64 {
    (count as u64) << 32 | first as u64
}

/// Reads one generation of the range table (indexes within the generation's region).
pub trait RangeWords {
    /// Bucket `bucket` of [`MAP_V4_BUCKETS`].
    fn bucket(&self, bucket: u32) -> Option<&V4Bucket>;
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

/// `rule`, unless it is [`NO_RULE`].
#[inline(always)]
fn some_rule(rule: RuleId) -> Option<RuleId> {
    if rule == NO_RULE { None } else { Some(rule) }
}

/// The rule of the longest prefix covering the IPv4 address `addr` (host order), if any.
#[inline(always)]
pub fn classify_v4(table: &impl RangeWords, addr: u32) -> Option<RuleId> {
    let bucket = table.bucket(addr >> 16)?;
    let low = addr as u16;
    let block = u32::from(low >> 8);
    if bucket.covered[(block / 64) as usize & 3] >> (block % 64) & 1 == 0 {
        return None;
    }
    let first = bucket.ranges as u32;
    let count = (bucket.ranges >> 32) as u32;
    if count == 0 {
        return first.checked_sub(1);
    }
    if count <= V4_INLINE_RANGES {
        // The bucket's first range starts at its first address.
        let mut at = 0;
        for i in 1..V4_INLINE_RANGES {
            if i < count && (bucket.inline_starts >> (16 * i)) as u16 <= low {
                at = i;
            }
        }
        let word = bucket.inline_rules[(at / 2) as usize & 1];
        return some_rule((word >> (32 * (at % 2))) as u32);
    }
    // The answer is in lo..hi.
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
    some_rule((table.rules(range / 2)? >> (32 * (range % 2))) as u32)
}

#[cfg(test)]
mod tests {
    use super::*;

    struct Table {
        buckets: [V4Bucket; 2],
        starts: [u64; 2],
        rules: [u64; 3],
    }

    impl RangeWords for Table {
        fn bucket(&self, bucket: u32) -> Option<&V4Bucket> {
            self.buckets.get(bucket as usize)
        }
        fn starts(&self, word: u32) -> Option<u64> {
            self.starts.get(word as usize).copied()
        }
        fn rules(&self, word: u32) -> Option<u64> {
            self.rules.get(word as usize).copied()
        }
    }

    const ALL: [u64; 4] = [u64::MAX; 4];

    fn rule_word(a: u32, b: u32) -> u64 {
        u64::from(b) << 32 | u64::from(a)
    }

    fn uniform(rule: Option<RuleId>) -> V4Bucket {
        V4Bucket {
            ranges: uniform_bucket(rule),
            covered: if rule.is_some() { ALL } else { [0; 4] },
            ..V4Bucket::default()
        }
    }

    #[test]
    fn a_uniform_bucket_answers_in_one_read() {
        let table = Table {
            buckets: [uniform(None), uniform(Some(7))],
            starts: [0; 2],
            rules: [0; 3],
        };
        assert_eq!(classify_v4(&table, 0x0000_1234), None);
        assert_eq!(classify_v4(&table, 0x0001_ffff), Some(7));
        assert_eq!(classify_v4(&table, 0x0002_0000), None, "past the table");
    }

    #[test]
    fn a_bucket_finds_the_range_holding_the_address_inline_or_listed() {
        // Ranges at 0 (none), 0x100 (rule 3), 0x200 (rule 9), 0x201 (none), and for the
        // listed bucket 0x300 (rule 4), 0x400 (none).
        let inline = V4Bucket {
            ranges: listed_bucket(0, 4),
            covered: [0b110, 0, 0, 0],
            inline_starts: 0x201u64 << 48 | 0x200 << 32 | 0x100 << 16,
            inline_rules: [rule_word(NO_RULE, 3), rule_word(9, NO_RULE)],
        };
        let listed = V4Bucket {
            ranges: listed_bucket(0, 6),
            covered: [0b1110, 0, 0, 0],
            ..V4Bucket::default()
        };
        let table = Table {
            buckets: [inline, listed],
            starts: [
                0x201u64 << 48 | 0x200 << 32 | 0x100 << 16,
                0x400 << 16 | 0x300,
            ],
            rules: [
                rule_word(NO_RULE, 3),
                rule_word(9, NO_RULE),
                rule_word(4, NO_RULE),
            ],
        };
        for bucket in [0, 1] {
            for (low, rule) in [
                (0, None),
                (0xff, None),
                (0x100, Some(3)),
                (0x1ff, Some(3)),
                (0x200, Some(9)),
                (0x201, None),
                (0xffff, None),
            ] {
                let addr = bucket << 16 | low;
                assert_eq!(classify_v4(&table, addr), rule, "{addr:#x}");
            }
        }
        assert_eq!(classify_v4(&table, 0x0001_0300), Some(4));
        assert_eq!(classify_v4(&table, 0x0001_0400), None);
    }

    #[test]
    fn the_capacity_bounds_every_policy() {
        assert_eq!(v4_range_capacity(0), 65_540);
        assert_eq!(v4_range_capacity(1_000_000), 2_065_540);
        assert_eq!(v4_range_capacity(u32::MAX) % 4, 0);
        assert_eq!(size_of::<V4Bucket>(), 64, "a cache line");
    }
}
