//! The IPv4 range table (see [`super`]): buckets by the top 16 bits, blocks of /24. A bucket
//! of at most [`V4_INLINE_RANGES`] ranges holds them in its own cache line
//! ([`inline_bucket`]). The others keep theirs in leaves ([`V4Leaf`], a cache line of up to
//! [`LEAF_RANGES`] ranges: each range's first address's low 16 bits and its rule), a bucket's
//! leaves side by side in the shared leaf array; the bucket line holds the first start of
//! each of its first [`DIRECT_LEAVES`] leaves ([`listed_bucket_v4`]), so that the rule of an
//! address is two reads away (the bucket, one leaf) in buckets of up to
//! `DIRECT_LEAVES * LEAF_RANGES` ranges, the common case up to millions of prefixes; larger
//! buckets search their leaves by halving.

use super::{
    BucketAnswer, RangeBucket, SUMMARY_BUCKETS, bucket_slot, listed_bucket, rule_in_word,
    some_rule, summary_allows,
};
use crate::RuleId;

/// Name of the line array: [`Regions::v4_lines`](super::Regions::v4_lines)
/// [`RangeBucket`]s per generation.
pub const MAP_V4_BUCKETS: &str = "V4_BUCKETS";
/// Name of the summary array: [`SUMMARY_WORDS`](super::SUMMARY_WORDS) words per
/// generation.
pub const MAP_V4_SUMMARY: &str = "V4_SUMMARY";
/// Name of the leaf array: [`Regions::v4_leaves`](super::Regions::v4_leaves) [`V4Leaf`]s
/// per generation.
pub const MAP_V4_LEAVES: &str = "V4_LEAVES";

/// Ranges a bucket holds in its own cache line.
pub const V4_INLINE_RANGES: u32 = 8;
/// Words of an inline bucket's [`RangeBucket::words`] holding starts (four to a word), first.
const INLINE_START_WORDS: usize = V4_INLINE_RANGES.div_ceil(4) as usize;
/// The first word of an inline bucket's [`RangeBucket::words`] holding rules.
const INLINE_RULE_WORD: usize = INLINE_START_WORDS;
/// Words of an inline bucket holding rules (two to a word).
const INLINE_RULE_WORDS: usize = V4_INLINE_RANGES.div_ceil(2) as usize;
/// Ranges a leaf holds.
pub const LEAF_RANGES: u32 = 10;
/// Words of a leaf holding rules (two to a word), first.
const LEAF_RULE_WORDS: usize = LEAF_RANGES.div_ceil(2) as usize;
/// The first word of a leaf holding starts (the rules come first).
const LEAF_START_WORD: usize = LEAF_RULE_WORDS;
/// Words of a leaf holding starts (four to a word).
const LEAF_START_WORDS: usize = LEAF_RANGES.div_ceil(4) as usize;
/// Leaves a bucket line finds without a search: the first, and those whose first start it
/// holds (four to a word in its last three words).
pub const DIRECT_LEAVES: u32 = 13;
/// The first word of a listed bucket's [`RangeBucket::words`] holding leaf starts (the
/// blocks it covers come first).
const SEPARATOR_WORD: usize = super::BLOCK_WORDS;
/// Words of a listed bucket holding leaf starts (four to a word).
const SEPARATOR_WORDS: usize = (DIRECT_LEAVES - 1).div_ceil(4) as usize;

// Every index the lookup computes stays inside its line: the `%` below keep them there for
// the verifier, by these constants.
const _: () = assert!(INLINE_RULE_WORD + INLINE_RULE_WORDS <= RangeBucket::WORDS);
const _: () = assert!(LEAF_START_WORD + LEAF_START_WORDS <= size_of::<V4Leaf>() / 8);
const _: () = assert!(SEPARATOR_WORD + SEPARATOR_WORDS <= RangeBucket::WORDS);
/// Halvings that find a leaf among the at most 2^16 / [`LEAF_RANGES`] of a bucket.
pub const V4_SEARCH_STEPS: u32 = 14;

/// Leaves a generation needs room for, for policies of up to `prefixes` IPv4 prefixes:
/// their at most `2 * prefixes` changes of rule start the ranges of the buckets that keep
/// them in leaves, besides the first of each; such a bucket holds more than
/// [`V4_INLINE_RANGES`] ranges (so there are at most a quarter as many as prefixes) and
/// fills all its leaves but the last.
pub const fn leaf_capacity(prefixes: u32) -> u32 {
    let prefixes = prefixes as u64;
    let quarter = prefixes.div_ceil(4);
    let listing = if quarter < super::BUCKET_COUNT as u64 {
        quarter
    } else {
        super::BUCKET_COUNT as u64
    };
    let leaves = (2 * prefixes + listing).div_ceil(LEAF_RANGES as u64) + listing;
    if leaves > u32::MAX as u64 {
        u32::MAX
    } else {
        leaves as u32
    }
}

/// Up to [`LEAF_RANGES`] consecutive ranges of a bucket. A cache line: the rules (range `i`
/// in bits `32 * (i % 2)` of word `i / 2`), then the low 16 bits of each range's first
/// address (range `i` in bits `16 * (i % 4)` of word 5 + `i / 4`), rising.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct V4Leaf {
    /// The rules, then the starts.
    pub words: [u64; 8],
}

impl V4Leaf {
    /// A leaf of `starts.len()` ranges (one to [`LEAF_RANGES`]); None otherwise, or when the
    /// rules and the starts differ in number.
    pub fn new(starts: &[u16], rules: &[RuleId]) -> Option<V4Leaf> {
        if starts.is_empty() || starts.len() > LEAF_RANGES as usize || starts.len() != rules.len() {
            return None;
        }
        let mut words = [0u64; 8];
        for (i, (start, rule)) in starts.iter().zip(rules).enumerate() {
            words[i / 2] |= u64::from(*rule) << (32 * (i % 2));
            words[LEAF_START_WORD + i / 4] |= u64::from(*start) << (16 * (i % 4));
        }
        Some(V4Leaf { words })
    }

    /// The start of range `range` (below [`LEAF_RANGES`]).
    #[inline(always)]
    pub fn start(&self, range: u32) -> u16 {
        let word = LEAF_START_WORD + (range / 4) as usize % LEAF_START_WORDS;
        (self.words[word] >> (16 * (range % 4))) as u16
    }

    /// The rule of the range holding `low` among the first `count` (at least one; the first
    /// starting at or below `low`).
    #[inline(always)]
    fn rule_of(&self, count: u32, low: u16) -> Option<RuleId> {
        let mut at = 0;
        for i in 1..LEAF_RANGES {
            if i < count && self.start(i) <= low {
                at = i;
            }
        }
        some_rule(rule_in_word(
            self.words[(at / 2) as usize % LEAF_RULE_WORDS],
            at,
        ))
    }
}

/// A bucket holding its `starts.len()` ranges (at most [`V4_INLINE_RANGES`], the first
/// starting at the bucket's first address) itself: each range's first address's low 16 bits
/// (range `i` in bits `16 * (i % 4)` of word `i / 4`), then the rules (range `i` in bits
/// `32 * (i % 2)` of word 2 + `i / 2`). None when there are more ranges, or the rules and the
/// starts differ in number.
pub fn inline_bucket(starts: &[u16], rules: &[RuleId]) -> Option<RangeBucket> {
    if starts.len() > V4_INLINE_RANGES as usize || starts.len() != rules.len() {
        return None;
    }
    let mut words = [0u64; 7];
    for (i, (start, rule)) in starts.iter().zip(rules).enumerate() {
        words[i / 4] |= u64::from(*start) << (16 * (i % 4));
        words[INLINE_RULE_WORD + i / 2] |= u64::from(*rule) << (32 * (i % 2));
    }
    Some(RangeBucket {
        ranges: listed_bucket(0, starts.len() as u32),
        words,
    })
}

/// A bucket of `count` ranges (more than [`V4_INLINE_RANGES`]) kept in leaves from leaf
/// `first_leaf` of its generation on, whose allowed addresses lie in the blocks `covered`
/// marks. `leaf_starts` are the first starts of its leaves after the first: those of the
/// first [`DIRECT_LEAVES`] are kept in the bucket.
pub fn listed_bucket_v4(
    first_leaf: u32,
    count: u32,
    covered: [u64; 4],
    leaf_starts: &[u16],
) -> RangeBucket {
    let mut bucket = RangeBucket::with_blocks(listed_bucket(first_leaf, count), covered);
    let direct = (DIRECT_LEAVES - 1) as usize;
    for (k, start) in leaf_starts.iter().take(direct).enumerate() {
        bucket.words[SEPARATOR_WORD + k / 4] |= u64::from(*start) << (16 * (k % 4));
    }
    bucket
}

/// Reads one generation of the IPv4 range table (indexes within the generation's region).
pub trait V4Words {
    /// Word `word` of [`MAP_V4_SUMMARY`].
    fn summary(&self, word: u32) -> Option<u64>;
    /// Line `slot` of [`MAP_V4_BUCKETS`] ([`bucket_slot`]).
    fn bucket(&self, slot: u32) -> Option<&RangeBucket>;
    /// Leaf `leaf` of [`MAP_V4_LEAVES`].
    fn leaf(&self, leaf: u32) -> Option<&V4Leaf>;
}

/// The rule of the longest prefix covering the IPv4 address `addr` (host order), if any.
#[inline(always)]
pub fn classify_v4(table: &impl V4Words, addr: u32) -> Option<RuleId> {
    match v4_bucket_answer(table, addr) {
        BucketAnswer::Rule(rule) => rule,
        BucketAnswer::Search(slot) => search_v4(table, table.bucket(slot)?, addr),
    }
}

/// The first part of [`classify_v4`]: the summary word and the bucket, a uniform or inline
/// bucket answered, a block the bucket leaves uncovered refused; what is left is a search of
/// the bucket's leaves ([`search_v4`]). The program keeps this part inline (every packet
/// takes it) and makes the search a function of its own.
#[inline(always)]
pub fn v4_bucket_answer(table: &impl V4Words, addr: u32) -> BucketAnswer {
    let index = addr >> 16;
    let Some(summary) = table.summary(index / SUMMARY_BUCKETS) else {
        return BucketAnswer::Rule(None);
    };
    if !summary_allows(summary, index) {
        return BucketAnswer::Rule(None);
    }
    let slot = bucket_slot(summary, index);
    let Some(bucket) = table.bucket(slot) else {
        return BucketAnswer::Rule(None);
    };
    let low = addr as u16;
    let first = bucket.ranges as u32;
    let count = (bucket.ranges >> 32) as u32;
    if count == 0 {
        return BucketAnswer::Rule(first.checked_sub(1));
    }
    if count <= V4_INLINE_RANGES {
        // The bucket's first range starts at its first address; the starts rise.
        let mut at = 0;
        for i in 1..V4_INLINE_RANGES {
            let word = bucket.words[(i / 4) as usize % INLINE_START_WORDS];
            let start = (word >> (16 * (i % 4))) as u16;
            if i < count && start <= low {
                at = i;
            }
        }
        let rules = bucket.words[INLINE_RULE_WORD + (at / 2) as usize % INLINE_RULE_WORDS];
        return BucketAnswer::Rule(some_rule(rule_in_word(rules, at)));
    }
    if !bucket.covers(u32::from(low >> 8)) {
        return BucketAnswer::Rule(None);
    }
    BucketAnswer::Search(slot)
}

/// The rest of [`classify_v4`]: the rule of `addr` in the leaves of `bucket`, a bucket of
/// more than [`V4_INLINE_RANGES`] ranges.
#[inline(always)]
pub fn search_v4(table: &impl V4Words, bucket: &RangeBucket, addr: u32) -> Option<RuleId> {
    let low = addr as u16;
    let first = bucket.ranges as u32;
    let count = (bucket.ranges >> 32) as u32;
    let leaves = count.div_ceil(LEAF_RANGES);
    let leaf = if leaves <= DIRECT_LEAVES {
        let mut at = 0;
        for k in 1..DIRECT_LEAVES {
            let separator = k - 1;
            let word = bucket.words[SEPARATOR_WORD + (separator / 4) as usize % SEPARATOR_WORDS];
            if k < leaves && (word >> (16 * (separator % 4))) as u16 <= low {
                at = k;
            }
        }
        at
    } else {
        // The answer is in lo..hi.
        let (mut lo, mut hi) = (0u32, leaves);
        for _ in 0..V4_SEARCH_STEPS {
            if hi - lo <= 1 {
                break;
            }
            let mid = lo + (hi - lo) / 2;
            if table.leaf(first + mid)?.start(0) <= low {
                lo = mid;
            } else {
                hi = mid;
            }
        }
        lo
    };
    let in_leaf = count.saturating_sub(leaf * LEAF_RANGES).min(LEAF_RANGES);
    table.leaf(first + leaf)?.rule_of(in_leaf, low)
}

#[cfg(test)]
mod tests {
    use super::super::{NO_RULE, summary_word, uniform_bucket};
    use super::*;

    struct Table {
        buckets: Vec<RangeBucket>,
        leaves: Vec<V4Leaf>,
    }

    impl V4Words for Table {
        fn summary(&self, word: u32) -> Option<u64> {
            // Every bucket may allow and has a line of its own.
            Some(summary_word(u16::MAX, u16::MAX, word * SUMMARY_BUCKETS))
        }
        fn bucket(&self, bucket: u32) -> Option<&RangeBucket> {
            self.buckets.get(bucket as usize)
        }
        fn leaf(&self, leaf: u32) -> Option<&V4Leaf> {
            self.leaves.get(leaf as usize)
        }
    }

    const ALL: [u64; 4] = [u64::MAX; 4];

    fn uniform(rule: Option<RuleId>) -> RangeBucket {
        RangeBucket::with_blocks(
            uniform_bucket(rule),
            if rule.is_some() { ALL } else { [0; 4] },
        )
    }

    /// A listed bucket of `starts` and `rules` in leaves appended to `leaves`, every block
    /// marked covered.
    fn listed(leaves: &mut Vec<V4Leaf>, starts: &[u16], rules: &[RuleId]) -> RangeBucket {
        let first = leaves.len() as u32;
        let chunk = LEAF_RANGES as usize;
        for (starts, rules) in starts.chunks(chunk).zip(rules.chunks(chunk)) {
            leaves.push(V4Leaf::new(starts, rules).expect("a leaf's worth"));
        }
        let leaf_starts: Vec<u16> = starts.chunks(chunk).skip(1).map(|c| c[0]).collect();
        listed_bucket_v4(first, starts.len() as u32, ALL, &leaf_starts)
    }

    #[test]
    fn a_uniform_bucket_answers_in_one_read() {
        let table = Table {
            buckets: vec![uniform(None), uniform(Some(7))],
            leaves: vec![],
        };
        assert_eq!(classify_v4(&table, 0x0000_1234), None);
        assert_eq!(classify_v4(&table, 0x0001_ffff), Some(7));
        assert_eq!(classify_v4(&table, 0x0002_0000), None, "past the table");
    }

    #[test]
    fn a_bucket_finds_the_range_holding_the_address_inline_or_in_leaves() {
        // Ranges at 0 (none), 0x100 (rule 3), 0x200 (rule 9), 0x201 (none); the listed
        // bucket adds 0x300 (rule 4) and eight more from 0x400 to 0xb00 (none): two leaves.
        let inline = inline_bucket(&[0, 0x100, 0x200, 0x201], &[NO_RULE, 3, 9, NO_RULE])
            .expect("four ranges fit");
        let mut starts = vec![0, 0x100, 0x200, 0x201, 0x300];
        let mut rules = vec![NO_RULE, 3, 9, NO_RULE, 4];
        for i in 0..8u16 {
            starts.push(0x400 + 0x100 * i);
            rules.push(NO_RULE);
        }
        let mut leaves = Vec::new();
        let listed = listed(&mut leaves, &starts, &rules);
        assert_eq!(leaves.len(), 2);
        let table = Table {
            buckets: vec![inline, listed],
            leaves,
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
        assert_eq!(classify_v4(&table, 0x0001_03ff), Some(4));
        assert_eq!(classify_v4(&table, 0x0001_0400), None);
    }

    #[test]
    fn a_bucket_holds_up_to_eight_ranges_in_its_line() {
        let starts = [0, 0x10, 0x20, 0x30, 0x40, 0x50, 0x60, 0x70];
        let rules = [NO_RULE, 1, 2, 3, 4, 5, 6, 7];
        let full = inline_bucket(&starts, &rules).expect("eight ranges fit");
        assert!(inline_bucket(&[0; 9], &[0; 9]).is_none(), "nine do not");
        assert!(inline_bucket(&[0; 2], &[0; 3]).is_none());
        let table = Table {
            buckets: vec![full],
            leaves: vec![],
        };
        for (i, start) in starts.iter().enumerate() {
            let rule = some_rule(rules[i]);
            assert_eq!(classify_v4(&table, u32::from(*start)), rule, "{start:#x}");
            assert_eq!(classify_v4(&table, u32::from(*start) + 0xf), rule);
        }
        assert_eq!(
            classify_v4(&table, 0xffff),
            Some(7),
            "the last range runs to the end"
        );
    }

    #[test]
    fn a_leaf_holds_ten_ranges_in_a_cache_line() {
        assert_eq!(size_of::<V4Leaf>(), 64);
        assert!(V4Leaf::new(&[0; 11], &[0; 11]).is_none());
        assert!(V4Leaf::new(&[], &[]).is_none());
        let leaf = V4Leaf::new(
            &[5, 6, 7, 8, 9, 10, 11, 12, 13, 14],
            &[0, 1, 2, 3, 4, 5, 6, 7, 8, 9],
        )
        .expect("ten fit");
        assert_eq!(leaf.start(9), 14);
        assert_eq!(leaf.rule_of(10, 14), Some(9));
        assert_eq!(leaf.rule_of(10, 9), Some(4));
        assert_eq!(leaf.rule_of(3, 14), Some(2), "only the first three count");
    }

    /// Every range of buckets of 12 (two leaves), 130 (the direct leaves exactly) and 1000
    /// ranges (searched by halving), at its first and last address.
    #[test]
    fn buckets_of_any_size_find_every_range() {
        for count in [9u32, 12, 20, 21, 129, 130, 131, 1000, 6000] {
            let step = (0x1_0000 / count) as u16;
            let starts: Vec<u16> = (0..count).map(|i| i as u16 * step).collect();
            let rules: Vec<RuleId> = (0..count)
                .map(|i| if i % 3 == 2 { NO_RULE } else { i })
                .collect();
            let mut leaves = vec![V4Leaf::default(); 3];
            let bucket = listed(&mut leaves, &starts, &rules);
            let table = Table {
                buckets: vec![bucket],
                leaves,
            };
            for (i, start) in starts.iter().enumerate() {
                let last = starts.get(i + 1).map_or(u16::MAX, |next| next - 1);
                for low in [*start, last] {
                    assert_eq!(
                        classify_v4(&table, u32::from(low)),
                        some_rule(rules[i]),
                        "{count} ranges, {low:#x}"
                    );
                }
            }
        }
    }
}
