//! The IPv6 range table (see [`super`]). IPv6 policies live in a small part of the space
//! (most of it inside `2000::/3`), so each generation has a region ([`V6Header`]): the
//! longest prefix shared by every point where the covering rule changes. Outside it one
//! rule holds below and one above; inside it, buckets are the 16 bits after the region's
//! prefix and blocks the next 8. A bucket of up to [`V6_INLINE_RANGES`] ranges (a prefix
//! inside it, the common case up to a few hundred thousand prefixes) holds them in its own
//! line ([`inline_bucket_v6`]); larger ones list their ranges in the shared arrays: each
//! range's first address, whole, and its rule, two to a word.

use super::{
    BucketAnswer, RangeBucket, SUMMARY_BUCKETS, bucket_slot, listed_bucket, rule_in_word,
    some_rule, summary_allows,
};
use crate::RuleId;

/// Name of the line array: [`Regions::v6_lines`](super::Regions::v6_lines)
/// [`RangeBucket`]s per generation.
pub const MAP_V6_BUCKETS: &str = "V6_BUCKETS";
/// Name of the summary array: [`SUMMARY_WORDS`](super::SUMMARY_WORDS) words per
/// generation.
pub const MAP_V6_SUMMARY: &str = "V6_SUMMARY";
/// Name of the range start array: per generation, each range's first address as two
/// host-order words (the high 64 bits first).
pub const MAP_V6_STARTS: &str = "V6_STARTS";
/// Name of the range rule array: per generation, each range's rule
/// ([`NO_RULE`](super::NO_RULE): none), two to a word.
pub const MAP_V6_RULES: &str = "V6_RULES";
/// Name of the header array: one [`V6Header`] per generation.
pub const MAP_V6_HEADERS: &str = "V6_HEADERS";

/// The longest region prefix: buckets and blocks take the 24 bits after it.
pub const V6_MAX_REGION_BITS: u32 = 104;
/// Halvings that find a range among any number of a bucket.
pub const V6_SEARCH_STEPS: u32 = 32;

/// An IPv6 address as two host-order words, the high 64 bits first: how the table stores
/// and compares addresses.
pub type V6Words = [u64; 2];

/// Where one generation's IPv6 policy lives.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct V6Header {
    /// Bits of the region's prefix, at most [`V6_MAX_REGION_BITS`].
    pub region_bits: u32,
    /// The rule of every address above the region ([`NO_RULE`](super::NO_RULE): none).
    pub rule_above: RuleId,
    /// The region's first address.
    pub region: V6Words,
    /// The rule of every address below the region.
    pub rule_below: RuleId,
    /// Zero.
    pub reserved: u32,
}

/// Reads one generation of the IPv6 range table (indexes within the generation's region).
pub trait V6Tables {
    /// The generation's [`V6Header`].
    fn header(&self) -> Option<&V6Header>;
    /// Word `word` of [`MAP_V6_SUMMARY`].
    fn summary(&self, word: u32) -> Option<u64>;
    /// Line `slot` of [`MAP_V6_BUCKETS`] ([`bucket_slot`]).
    fn bucket(&self, slot: u32) -> Option<&RangeBucket>;
    /// The first address of range `range` ([`MAP_V6_STARTS`]).
    fn start(&self, range: u32) -> Option<V6Words>;
    /// Word `word` of [`MAP_V6_RULES`].
    fn rules(&self, word: u32) -> Option<u64>;
}

/// The most ranges a bucket holds in its own line ([`inline_bucket_v6`]).
pub const V6_INLINE_RANGES: u32 = 3;
/// The word of an inline bucket where its rules start, two to a word.
const INLINE_RULE_WORD: usize = INLINE_START_WORDS;
/// Words of an inline bucket holding the starts after the first (two words each), first.
const INLINE_START_WORDS: usize = 2 * (V6_INLINE_RANGES as usize - 1);
/// Words of an inline bucket holding rules (two to a word).
const INLINE_RULE_WORDS: usize = V6_INLINE_RANGES.div_ceil(2) as usize;
/// The word of every IPv6 bucket that says which runs of four of its 256 blocks hold an
/// allowed address: a denied source in any other ends on this bit, whatever the bucket.
const QUARTERS_WORD: usize = super::RangeBucket::WORDS - 1;

// Every index the lookup computes stays inside its line, apart from the quarters: the `%`
// below keep them there for the verifier, by these constants.
const _: () = assert!(INLINE_RULE_WORD + INLINE_RULE_WORDS <= QUARTERS_WORD);
const _: () = assert!(super::BLOCK_WORDS <= QUARTERS_WORD);

/// The runs of four blocks that hold an allowed address, given the blocks that do (as
/// [`RangeBucket::with_blocks`] takes them): bit `q` for blocks `4q..4q + 4`.
/// Run for every bucket of a generation written (65,536 for IPv6), so a word at a time: a
/// word with no block or every block (the uniform buckets) costs one comparison.
fn quarters(covered: [u64; 4]) -> u64 {
    let mut quarters = 0u64;
    for (index, word) in covered.into_iter().enumerate() {
        let runs = match word {
            0 => 0,
            u64::MAX => 0xffff,
            word => {
                // Bit 4k of `any` is set when a block of run k is.
                let any = word | word >> 1 | word >> 2 | word >> 3;
                (0..16).fold(0, |runs, run| runs | (any >> (4 * run) & 1) << run)
            }
        };
        quarters |= runs << (16 * index);
    }
    quarters
}

/// `bucket` (uniform or listed, made by [`RangeBucket::with_blocks`]) as an IPv6 bucket: its
/// blocks also marked by runs of four, the first thing the lookup tests.
pub fn with_quarters(mut bucket: RangeBucket) -> RangeBucket {
    let covered = [
        bucket.words[0],
        bucket.words[1],
        bucket.words[2],
        bucket.words[3],
    ];
    bucket.words[QUARTERS_WORD] = quarters(covered);
    bucket
}

/// A bucket of `starts.len()` (one to [`V6_INLINE_RANGES`]) ranges held in its own line:
/// the first address of every range but the first (which starts at or before the bucket's
/// first address), two words each, their rules, and which of its 256 blocks hold an allowed
/// address by runs of four (`covered`, as [`RangeBucket::with_blocks`] takes them). `None` for
/// more ranges, or as many rules as starts missing.
pub fn inline_bucket_v6(
    starts: &[V6Words],
    rules: &[RuleId],
    covered: [u64; 4],
) -> Option<RangeBucket> {
    if starts.is_empty() || starts.len() > V6_INLINE_RANGES as usize || starts.len() != rules.len()
    {
        return None;
    }
    let mut words = [0u64; 7];
    for (i, start) in starts.iter().enumerate().skip(1) {
        words[2 * (i - 1)] = start[0];
        words[2 * (i - 1) + 1] = start[1];
    }
    for (i, rule) in rules.iter().enumerate() {
        words[INLINE_RULE_WORD + i / 2] |= u64::from(*rule) << (32 * (i % 2));
    }
    words[QUARTERS_WORD] = quarters(covered);
    Some(RangeBucket {
        ranges: listed_bucket(0, starts.len() as u32),
        words,
    })
}

/// The 64 bits of `addr` from bit `from` (0: the highest), zero-filled past the end.
#[inline(always)]
pub const fn bits_from(addr: V6Words, from: u32) -> u64 {
    if from == 0 {
        addr[0]
    } else if from < 64 {
        addr[0] << from | addr[1] >> (64 - from)
    } else if from < 128 {
        addr[1] << (from - 64)
    } else {
        0
    }
}

/// `a <= b` as addresses.
#[inline(always)]
const fn not_after(a: V6Words, b: V6Words) -> bool {
    a[0] < b[0] || (a[0] == b[0] && a[1] <= b[1])
}

/// The rule of the longest prefix covering the IPv6 address `addr`, if any.
#[inline(always)]
pub fn classify_v6(table: &impl V6Tables, addr: V6Words) -> Option<RuleId> {
    match v6_bucket_answer(table, addr) {
        BucketAnswer::Rule(rule) => rule,
        BucketAnswer::Search(slot) => search_v6(table, table.bucket(slot)?, addr),
    }
}

/// The first part of [`classify_v6`], as [`super::v4::v4_bucket_answer`] is of IPv4's:
/// the region, the summary word and the bucket; what is left is a search of the bucket's
/// listed ranges ([`search_v6`]).
#[inline(always)]
pub fn v6_bucket_answer(table: &impl V6Tables, addr: V6Words) -> BucketAnswer {
    let Some(header) = table.header() else {
        return BucketAnswer::Rule(None);
    };
    let region_bits = header.region_bits;
    if region_bits > V6_MAX_REGION_BITS {
        return BucketAnswer::Rule(None);
    }
    if region_bits > 0 {
        // Compare the region's prefix: the bits shifted out when aligning below it.
        let outside = region_bits.min(64);
        let high_differs = (addr[0] ^ header.region[0]) >> (64 - outside) != 0;
        let low_differs =
            region_bits > 64 && (addr[1] ^ header.region[1]) >> (128 - region_bits) != 0;
        if high_differs || low_differs {
            let rule = if not_after(addr, header.region) {
                header.rule_below
            } else {
                header.rule_above
            };
            return BucketAnswer::Rule(some_rule(rule));
        }
    }
    let index = (bits_from(addr, region_bits) >> 40) as u32;
    let Some(summary) = table.summary((index >> 8) / SUMMARY_BUCKETS) else {
        return BucketAnswer::Rule(None);
    };
    if !summary_allows(summary, index >> 8) {
        return BucketAnswer::Rule(None);
    }
    let slot = bucket_slot(summary, index >> 8);
    let Some(bucket) = table.bucket(slot) else {
        return BucketAnswer::Rule(None);
    };
    let block = index & 0xff;
    if bucket.words[QUARTERS_WORD] >> (block / 4) & 1 == 0 {
        return BucketAnswer::Rule(None);
    }
    let first = bucket.ranges as u32;
    let count = (bucket.ranges >> 32) as u32;
    if count == 0 {
        return BucketAnswer::Rule(first.checked_sub(1));
    }
    if count <= V6_INLINE_RANGES {
        let mut at = 0;
        for i in 1..V6_INLINE_RANGES {
            let word = (2 * (i - 1)) as usize;
            let start = [
                bucket.words[word % INLINE_START_WORDS],
                bucket.words[(word + 1) % INLINE_START_WORDS],
            ];
            if i < count && not_after(start, addr) {
                at = i;
            }
        }
        let rules = bucket.words[INLINE_RULE_WORD + (at / 2) as usize % INLINE_RULE_WORDS];
        return BucketAnswer::Rule(some_rule(rule_in_word(rules, at)));
    }
    if !bucket.covers(block) {
        return BucketAnswer::Rule(None);
    }
    BucketAnswer::Search(slot)
}

/// The rest of [`classify_v6`]: the rule of `addr` among the listed ranges of `bucket`, a
/// bucket of more than [`V6_INLINE_RANGES`] ranges.
#[inline(always)]
pub fn search_v6(table: &impl V6Tables, bucket: &RangeBucket, addr: V6Words) -> Option<RuleId> {
    let first = bucket.ranges as u32;
    let count = (bucket.ranges >> 32) as u32;
    // The bucket's first range starts at or before its first address: the answer is in
    // lo..hi.
    let (mut lo, mut hi) = (0u32, count);
    for _ in 0..V6_SEARCH_STEPS {
        if hi - lo <= 1 {
            break;
        }
        let mid = lo + (hi - lo) / 2;
        if not_after(table.start(first + mid)?, addr) {
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
    use super::super::{NO_RULE, summary_word, uniform_bucket};
    use super::*;

    #[test]
    fn a_run_of_four_blocks_is_marked_when_any_of_its_blocks_is() {
        let by_block = |covered: [u64; 4]| {
            (0..256u32)
                .filter(|block| covered[(block / 64) as usize] >> (block % 64) & 1 != 0)
                .fold(0u64, |runs, block| runs | 1 << (block / 4))
        };
        let mut word = 0x9e37_79b9_7f4a_7c15u64;
        for _ in 0..1000 {
            word = word.rotate_left(7).wrapping_mul(0xbf58_476d_1ce4_e5b9) ^ 1;
            let sparse = word & word.rotate_left(13) & word.rotate_left(29);
            for covered in [
                [word, 0, u64::MAX, sparse],
                [sparse, word, sparse, 0],
                [1 << (word % 64), u64::MAX, 0, word],
            ] {
                assert_eq!(quarters(covered), by_block(covered), "{covered:x?}");
            }
        }
    }

    #[test]
    fn bits_are_taken_across_the_two_words() {
        let addr = [0x2001_0db8_0000_0001, 0xffff_0000_0000_0002];
        assert_eq!(bits_from(addr, 0), addr[0]);
        assert_eq!(bits_from(addr, 16) >> 48, 0x0db8);
        assert_eq!(bits_from(addr, 48) >> 32, 0x0001_ffff);
        assert_eq!(bits_from(addr, 64), addr[1]);
        assert_eq!(bits_from(addr, 112), 2 << 48);
        assert_eq!(bits_from(addr, 128), 0);
    }

    struct Table {
        header: V6Header,
        buckets: Vec<RangeBucket>,
        starts: Vec<V6Words>,
        rules: Vec<u64>,
    }

    impl V6Tables for Table {
        fn header(&self) -> Option<&V6Header> {
            Some(&self.header)
        }
        fn summary(&self, word: u32) -> Option<u64> {
            // Every bucket may allow and has a line of its own.
            Some(summary_word(u16::MAX, u16::MAX, word * SUMMARY_BUCKETS))
        }
        fn bucket(&self, bucket: u32) -> Option<&RangeBucket> {
            self.buckets.get(bucket as usize)
        }
        fn start(&self, range: u32) -> Option<V6Words> {
            self.starts.get(range as usize).copied()
        }
        fn rules(&self, word: u32) -> Option<u64> {
            self.rules.get(word as usize).copied()
        }
    }

    /// The header of a table whose region is the whole space.
    fn whole_space() -> V6Header {
        V6Header {
            rule_above: NO_RULE,
            rule_below: NO_RULE,
            ..V6Header::default()
        }
    }

    #[test]
    fn addresses_outside_the_region_take_the_rule_below_or_above() {
        // Region 2001:db8::/32 (bucket bits 32..48): 2001:db8:1::/48 is rule 5.
        let mut buckets = vec![RangeBucket::default(); 1 << 16];
        buckets[1] = with_quarters(RangeBucket::with_blocks(
            uniform_bucket(Some(5)),
            [u64::MAX; 4],
        ));
        let table = Table {
            header: V6Header {
                region_bits: 32,
                rule_above: 9,
                region: [0x2001_0db8_0000_0000, 0],
                rule_below: NO_RULE,
                reserved: 0,
            },
            buckets,
            starts: vec![],
            rules: vec![],
        };
        assert_eq!(classify_v6(&table, [0x2001_0db8_0001_0000, 7]), Some(5));
        assert_eq!(classify_v6(&table, [0x2001_0db8_0002_0000, 0]), None);
        assert_eq!(
            classify_v6(&table, [0x2001_0db7_ffff_ffff, 0]),
            None,
            "below"
        );
        assert_eq!(
            classify_v6(&table, [0x2001_0db9_0000_0000, 0]),
            Some(9),
            "above"
        );
    }

    #[test]
    fn a_listed_bucket_searches_whole_addresses() {
        // Region ::/0; bucket 0x2001 lists: its start (none), 2001:db8::1 (rule 3),
        // 2001:db8::2 (none), 2001:db8::3 (rule 4).
        let mut buckets = vec![RangeBucket::default(); 1 << 16];
        buckets[0x2001] = with_quarters(RangeBucket::with_blocks(
            listed_bucket(0, 4),
            [1 << 0x0d, 0, 0, 0],
        ));
        let table = Table {
            header: whole_space(),
            buckets,
            starts: vec![
                [0x2001_0000_0000_0000, 0],
                [0x2001_0db8_0000_0000, 1],
                [0x2001_0db8_0000_0000, 2],
                [0x2001_0db8_0000_0000, 3],
            ],
            rules: vec![u64::from(NO_RULE) | 3 << 32, u64::from(NO_RULE) | 4 << 32],
        };
        assert_eq!(classify_v6(&table, [0x2001_0db8_0000_0000, 1]), Some(3));
        assert_eq!(classify_v6(&table, [0x2001_0db8_0000_0000, 0]), None);
        assert_eq!(classify_v6(&table, [0x2001_0db8_0000_0000, 2]), None);
        assert_eq!(classify_v6(&table, [0x2001_0db8_0000_0000, 9]), Some(4));
        assert_eq!(
            classify_v6(&table, [0x2001_0c00_0000_0000, 1]),
            None,
            "block clear"
        );
    }

    #[test]
    fn a_bucket_of_up_to_three_ranges_answers_from_its_own_line() {
        // Region ::/0; bucket 0x2001 holds: its start (none), 2001:db8::/32 (rule 7),
        // 2001:db9:: on (none). Nothing in the shared arrays.
        let net = [0x2001_0db8_0000_0000, 0];
        let past = [0x2001_0db9_0000_0000, 0];
        let mut buckets = vec![RangeBucket::default(); 1 << 16];
        // Its blocks are the next 8 bits: 2001:db8::/32 is all of block 0x0d.
        let block_0d = [1 << 0x0d, 0, 0, 0];
        buckets[0x2001] = inline_bucket_v6(
            &[[0x2001 << 48, 0], net, past],
            &[NO_RULE, 7, NO_RULE],
            block_0d,
        )
        .expect("three ranges fit");
        // Bucket 0x2002: from its start up to 2002::8000:0:0:0 (rule 8), then none.
        buckets[0x2002] = inline_bucket_v6(
            &[[0x2002 << 48, 0], [0x2002 << 48, 1 << 63]],
            &[8, NO_RULE],
            [1, 0, 0, 0],
        )
        .expect("two ranges fit");
        assert!(
            inline_bucket_v6(&[net; 4], &[1; 4], block_0d).is_none(),
            "four do not"
        );
        assert!(inline_bucket_v6(&[net; 2], &[1; 3], block_0d).is_none());
        let table = Table {
            header: whole_space(),
            buckets,
            starts: vec![],
            rules: vec![],
        };
        assert_eq!(classify_v6(&table, [0x2001_0db7_ffff_ffff, u64::MAX]), None);
        assert_eq!(classify_v6(&table, net), Some(7));
        assert_eq!(
            classify_v6(&table, [0x2001_0db8_ffff_ffff, u64::MAX]),
            Some(7)
        );
        assert_eq!(classify_v6(&table, past), None);
        assert_eq!(classify_v6(&table, [0x2002 << 48, 5]), Some(8));
        assert_eq!(classify_v6(&table, [0x2002 << 48, 1 << 63]), None);
        assert_eq!(
            classify_v6(&table, [0x2001_4000_0000_0000, 1]),
            None,
            "a quarter of no allowed block"
        );
    }
}
