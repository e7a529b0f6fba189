//! The IPv4 range table (see [`super`]): buckets by the top 16 bits, blocks of /24; a bucket
//! of at most [`V4_INLINE_RANGES`] ranges holds them itself, the others list theirs in the
//! shared arrays: the low 16 bits of each range's first address, four to a word, and each
//! range's rule, two to a word.

use super::{RangeBucket, rule_in_word, some_rule, summary_allows};
use crate::RuleId;

/// Name of the bucket array: [`BUCKET_COUNT`](super::BUCKET_COUNT) [`RangeBucket`]s per
/// generation.
pub const MAP_V4_BUCKETS: &str = "V4_BUCKETS";
/// Name of the summary array: [`SUMMARY_WORDS`](super::SUMMARY_WORDS) words per
/// generation.
pub const MAP_V4_SUMMARY: &str = "V4_SUMMARY";
/// Name of the range start array: per generation, the low 16 bits of each range's first
/// address, four to a word (range `i` in bits `16 * (i % 4)` of word `i / 4`).
pub const MAP_V4_STARTS: &str = "V4_STARTS";
/// Name of the range rule array: per generation, each range's rule
/// ([`NO_RULE`](super::NO_RULE): none), two to a word (range `i` in bits `32 * (i % 2)` of
/// word `i / 2`).
pub const MAP_V4_RULES: &str = "V4_RULES";

/// Ranges a bucket holds in its own cache line.
pub const V4_INLINE_RANGES: u32 = 4;
/// Halvings that find a range among the at most 2^16 of a bucket.
pub const V4_SEARCH_STEPS: u32 = 17;

/// Reads one generation of the IPv4 range table (indexes within the generation's region).
pub trait V4Words {
    /// Word `word` of [`MAP_V4_SUMMARY`].
    fn summary(&self, word: u32) -> Option<u64>;
    /// Bucket `bucket` of [`MAP_V4_BUCKETS`].
    fn bucket(&self, bucket: u32) -> Option<&RangeBucket>;
    /// Word `word` of [`MAP_V4_STARTS`].
    fn starts(&self, word: u32) -> Option<u64>;
    /// Word `word` of [`MAP_V4_RULES`].
    fn rules(&self, word: u32) -> Option<u64>;
}

/// The low 16 bits of the first address of range `range`.
#[inline(always)]
fn range_start(table: &impl V4Words, range: u32) -> Option<u16> {
    let word = table.starts(range / 4)?;
    Some((word >> (16 * (range % 4))) as u16)
}

/// The rule of the longest prefix covering the IPv4 address `addr` (host order), if any.
#[inline(always)]
pub fn classify_v4(table: &impl V4Words, addr: u32) -> Option<RuleId> {
    let index = addr >> 16;
    if !summary_allows(table.summary(index / 64)?, index) {
        return None;
    }
    let bucket = table.bucket(index)?;
    let low = addr as u16;
    if !bucket.covers(u32::from(low >> 8)) {
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
        return some_rule(rule_in_word(bucket.inline_rules[(at / 2) as usize & 1], at));
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
    some_rule(rule_in_word(table.rules(range / 2)?, range))
}

#[cfg(test)]
mod tests {
    use super::super::{NO_RULE, listed_bucket, uniform_bucket};
    use super::*;

    struct Table {
        buckets: [RangeBucket; 2],
        starts: [u64; 2],
        rules: [u64; 3],
    }

    impl V4Words for Table {
        fn summary(&self, _word: u32) -> Option<u64> {
            Some(u64::MAX)
        }
        fn bucket(&self, bucket: u32) -> Option<&RangeBucket> {
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

    fn uniform(rule: Option<RuleId>) -> RangeBucket {
        RangeBucket {
            ranges: uniform_bucket(rule),
            covered: if rule.is_some() { ALL } else { [0; 4] },
            ..RangeBucket::default()
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
        let inline = RangeBucket {
            ranges: listed_bucket(0, 4),
            covered: [0b110, 0, 0, 0],
            inline_starts: 0x201u64 << 48 | 0x200 << 32 | 0x100 << 16,
            inline_rules: [rule_word(NO_RULE, 3), rule_word(9, NO_RULE)],
        };
        let listed = RangeBucket {
            ranges: listed_bucket(0, 6),
            covered: [0b1110, 0, 0, 0],
            ..RangeBucket::default()
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
}
