//! The range tables: how the program finds the rule of a source in one to a few cache
//! lines, whatever the policy's size, with array reads only (the verifier inlines them, and
//! user space writes a whole generation through a memory mapping).
//!
//! A policy's prefixes cut the address space into ranges, each covered by one longest
//! prefix (its rule) or by none. A table keeps those ranges by 16 bits of the address (its
//! bucket). A summary (a word per [`SUMMARY_BUCKETS`] buckets, [`summary_word`]) says
//! whether each bucket holds an allowed address at all: a denied source from an empty bucket
//! ends there. Neighbouring buckets that would be alike (empty ones, those inside one
//! prefix) share one line: the summary marks where each run of alike buckets starts and
//! counts the runs before its word, so that a bucket's line is found by counting
//! ([`bucket_slot`]) and a table holds a line per run, not per bucket: its memory follows
//! the policy. Each line is a [`RangeBucket`]: which of its 256 blocks (the next 8 bits) hold
//! an allowed address at all (a denied source elsewhere ends after this one read, the common
//! case of a flood), then either the rule of a bucket inside one range, or where the
//! bucket's ranges start in the family's shared arrays (searched by halving) and each
//! range's rule. Buckets of a few ranges hold them in their own line instead (one read for
//! the rule, the common case up to a few hundred thousand prefixes: [`v4`] up to eight,
//! [`v6`] up to three); [`v6`] adds an adaptive region, so that a policy inside `2000::/3`
//! spreads over every bucket.
//!
//! Each generation has a region of every map: [`SUMMARY_WORDS`] summary words, and regions
//! of the line and shared arrays ([`Regions`], set at load) as large as policies of so many
//! prefixes may need. A family of a few prefixes is answered by its [`short`] list instead.
//!
//! # Byte layout
//!
//! Every map of the tables is an array of little-endian words; generation `g`'s region of
//! an array starts at `g` times its per-generation length ([`SUMMARY_WORDS`], or the
//! [`Regions`] field named).
//!
//! | table | element | words |
//! |---|---|---|
//! | `V4_SUMMARY`, `V6_SUMMARY` | `u64` per 16 buckets | bits 0-15: bucket may allow; 16-31: bucket starts a run (has a line); 32-63: runs before the word ([`summary_word`], [`bucket_slot`]) |
//! | `V4_BUCKETS`, `V6_BUCKETS` | [`RangeBucket`], a line per run | `ranges`: [`uniform_bucket`] (count 0: rule + 1, or 0) or [`listed_bucket`] (count << 32 \| first); `words` by kind below |
//! | uniform line | | `words[0..4]`: blocks that allow (all or none); IPv6 `words[6]`: the same by runs of four |
//! | IPv4 inline line (count <= 8) | | `words[0..2]`: range starts, 16 bits each, four to a word; `words[2..6]`: rules, two to a word ([`v4::inline_bucket`]) |
//! | IPv4 listed line | | `words[0..4]`: blocks that allow; `words[4..7]`: first start of leaves 1-12, 16 bits each ([`v4::listed_bucket_v4`]); `first`: its first leaf |
//! | IPv6 inline line (count <= 3) | | `words[0..4]`: starts of ranges 1 and 2, two words each (high first); `words[4..6]`: rules; `words[6]`: blocks by runs of four ([`v6::inline_bucket_v6`]) |
//! | IPv6 listed line | | `words[0..4]`: blocks that allow; `words[6]`: the same by runs of four; `first`: its first range in `V6_STARTS` |
//! | `V4_LEAVES` | [`v4::V4Leaf`] | `words[0..5]`: rules of up to ten ranges, two to a word; `words[5..8]`: their starts, 16 bits each |
//! | `V6_STARTS` | [`v6::V6Words`] | a range's first address, high word first |
//! | `V6_RULES` | `u64` | the rules of two ranges, the first in the low half |
//! | `V6_HEADERS` | [`v6::V6Header`] | a generation's region and the rules below and above it |
//! | `V4_SHORT`, `V6_SHORT` | [`short::ShortV4`], [`short::ShortV6`] | a family's prefixes, longest first, when few |
//!
//! Each line's kinds are told apart by `ranges`: count 0 is uniform, up to the family's
//! inline count inline, more listed. The constants behind every index are checked at
//! compile time against the line's size.

pub mod short;
pub mod v4;
pub mod v6;

use crate::RuleId;

/// Name of the program's read-only global that user space sets at load: the [`Regions`] of
/// each generation.
pub const GLOBAL_REGIONS: &str = "REGIONS";
/// Buckets per generation and family: one per value of 16 bits of an address.
pub const BUCKET_COUNT: u32 = 1 << 16;
/// Buckets a summary word describes.
pub const SUMMARY_BUCKETS: u32 = 16;
/// Words of one generation's summary.
pub const SUMMARY_WORDS: u32 = BUCKET_COUNT / SUMMARY_BUCKETS;
/// The bits of a summary word's allowed flags (the low ones) and of its run flags.
const FLAG_MASK: u64 = (1 << SUMMARY_BUCKETS) - 1;

/// A summary word for the [`SUMMARY_BUCKETS`] buckets from bucket `16 * w` on: bucket `b`
/// holds an allowed address when bit `b % 16` of `allows` is set, starts a run of alike
/// buckets (gets a line of its own) when bit `b % 16` of `runs` is, and `runs_before` runs
/// start before the word's first bucket. Bits 0-15, 16-31 and 32-63.
pub const fn summary_word(allows: u16, runs: u16, runs_before: u32) -> u64 {
    allows as u64 | (runs as u64) << SUMMARY_BUCKETS | (runs_before as u64) << 32
}

/// Whether `bucket` may hold an allowed address, given its word of a summary.
#[inline(always)]
pub const fn summary_allows(word: u64, bucket: u32) -> bool {
    word >> (bucket % SUMMARY_BUCKETS) & 1 != 0
}

/// The line of `bucket` among its generation's, given its word of a summary: that of the
/// last run starting at or before it (bucket 0 always starts one).
#[inline(always)]
pub const fn bucket_slot(word: u64, bucket: u32) -> u32 {
    let upto = (2u64 << (bucket % SUMMARY_BUCKETS)) - 1;
    let runs = (word >> SUMMARY_BUCKETS) & upto & FLAG_MASK;
    ((word >> 32) as u32 + count_ones_16(runs)).wrapping_sub(1)
}

/// The bits set in the low 16 bits of `bits` (a few shifts and adds: the program's
/// instruction set has no population count).
#[inline(always)]
const fn count_ones_16(bits: u64) -> u32 {
    let pairs = bits - ((bits >> 1) & 0x5555);
    let nibbles = (pairs & 0x3333) + ((pairs >> 2) & 0x3333);
    let bytes = (nibbles + (nibbles >> 4)) & 0x0f0f;
    ((bytes + (bytes >> 8)) & 0x1f) as u32
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
    pub words: [u64; RangeBucket::WORDS],
}

/// Words of a [`RangeBucket`] marking its 256 blocks (one bit each), when it does.
pub const BLOCK_WORDS: usize = 256 / 64;

const _: () = assert!(size_of::<RangeBucket>() == 64, "a bucket is a cache line");
const _: () = assert!(BLOCK_WORDS <= RangeBucket::WORDS);
const _: () = assert!(BUCKET_COUNT.is_multiple_of(SUMMARY_BUCKETS) && SUMMARY_BUCKETS <= 16);

impl RangeBucket {
    /// Words of [`RangeBucket::words`].
    pub const WORDS: usize = 7;

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
        self.words[(block / 64) as usize % BLOCK_WORDS] >> (block % 64) & 1 != 0
    }
}

/// The size of each generation's region of the tables' arrays, for policies of up to so
/// many prefixes of each family: user space chooses it and sets it at load
/// ([`GLOBAL_REGIONS`]); generation `g`'s region of an array starts at `g` times its size.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Regions {
    /// Lines of [`v4::MAP_V4_BUCKETS`].
    pub v4_lines: u32,
    /// Leaves of [`v4::MAP_V4_LEAVES`].
    pub v4_leaves: u32,
    /// Lines of [`v6::MAP_V6_BUCKETS`].
    pub v6_lines: u32,
    /// Ranges of [`v6::MAP_V6_STARTS`] (and of [`v6::MAP_V6_RULES`], two to a word).
    pub v6_ranges: u32,
}

impl Regions {
    /// The regions policies of up to `v4` IPv4 and `v6` IPv6 prefixes may need.
    pub const fn for_prefixes(v4: u32, v6: u32) -> Regions {
        Regions {
            v4_lines: line_capacity(v4),
            v4_leaves: v4::leaf_capacity(v4),
            v6_lines: line_capacity(v6),
            v6_ranges: range_capacity(v6),
        }
    }
}

/// Lines a generation of one family needs room for, for policies of up to `prefixes`
/// prefixes of it: a prefix longer than 16 bits (past the region, in IPv6) lies in one
/// bucket, a shorter one covers whole buckets, so each starts at most two runs (at its own
/// bucket and at the bucket after it), and bucket 0 one; at most one per bucket.
pub const fn line_capacity(prefixes: u32) -> u32 {
    let runs = 2 * prefixes as u64 + 1;
    if runs < BUCKET_COUNT as u64 {
        runs as u32
    } else {
        BUCKET_COUNT
    }
}

/// Ranges a generation needs room for, for policies of up to `prefixes` prefixes of one
/// family: each prefix starts at most two ranges (at its first address and after its last),
/// and each bucket that lists ranges one more (at its first address): a bucket lists ranges
/// only when one of those starts lies inside it; a multiple of four (whole IPv4 start
/// words).
pub const fn range_capacity(prefixes: u32) -> u32 {
    let starts = (prefixes as u64) * 2;
    let listing = if starts < BUCKET_COUNT as u64 {
        starts
    } else {
        BUCKET_COUNT as u64
    };
    let ranges = starts + listing + 1;
    let rounded = ranges.div_ceil(4) * 4;
    if rounded > u32::MAX as u64 {
        u32::MAX - 3
    } else {
        rounded as u32
    }
}

/// What the reads of a lookup's summary word and bucket found: the answer, or the bucket
/// (by its line) whose ranges must be searched for it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BucketAnswer {
    /// The answer: the rule, or none.
    Rule(Option<RuleId>),
    /// The line of a bucket whose leaves (IPv4) or listed ranges (IPv6) hold the answer.
    Search(u32),
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
        assert_eq!(range_capacity(0), 4);
        assert_eq!(range_capacity(10), 44);
        assert_eq!(range_capacity(1_000_000), 2_065_540);
        assert_eq!(range_capacity(u32::MAX) % 4, 0);
        assert_eq!(line_capacity(0), 1);
        assert_eq!(line_capacity(10), 21);
        assert_eq!(line_capacity(1_000_000), BUCKET_COUNT);
        assert_eq!(line_capacity(u32::MAX), BUCKET_COUNT);
        assert_eq!(size_of::<RangeBucket>(), 64, "a cache line");
    }

    #[test]
    fn a_bucket_finds_the_line_of_its_run() {
        // Word 3 (buckets 48-63): runs start at buckets 48, 50 and 63; 7 runs before.
        let word = summary_word(0b10, 1 | 1 << 2 | 1 << 15, 7);
        assert_eq!(bucket_slot(word, 48), 7);
        assert_eq!(bucket_slot(word, 49), 7);
        assert_eq!(bucket_slot(word, 50), 8);
        assert_eq!(bucket_slot(word, 62), 8);
        assert_eq!(bucket_slot(word, 63), 9);
        assert!(summary_allows(word, 49) && !summary_allows(word, 48));
        // No run starts in the word before bucket 5: the last run of the words before.
        assert_eq!(bucket_slot(summary_word(0, 1 << 5, 4), 4), 3);
        for bits in [0u64, 1, 0xffff, 0xa5a5, 0x8000] {
            assert_eq!(count_ones_16(bits), bits.count_ones());
        }
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
