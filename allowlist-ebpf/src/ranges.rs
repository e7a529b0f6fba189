//! The range tables' maps (see [`allowlist_common::ranges`]) and the short lists that answer
//! instead for a family of a few prefixes: the program's classification, every lookup an
//! inlined array read.

use allowlist_common::ranges::short::{ShortV4, ShortV6};
use allowlist_common::ranges::v4::{V4Leaf, V4Words, search_v4, v4_bucket_answer};
use allowlist_common::ranges::v6::{V6Header, V6Tables, V6Words, search_v6, v6_bucket_answer};
use allowlist_common::ranges::{BucketAnswer, RangeBucket, Regions, SUMMARY_WORDS};
use allowlist_common::{GENERATIONS, Ipv4Addr, Ipv6Addr, RuleId};
use aya_ebpf::{bindings::BPF_F_MMAPABLE, macros::map, maps::Array};

/// IPv4: one short list per generation.
#[map]
static V4_SHORT: Array<ShortV4> = Array::with_max_entries(GENERATIONS, BPF_F_MMAPABLE);

/// IPv6: one short list per generation.
#[map]
static V6_SHORT: Array<ShortV6> = Array::with_max_entries(GENERATIONS, BPF_F_MMAPABLE);

/// IPv4: [`SUMMARY_WORDS`] summary words per generation.
#[map]
static V4_SUMMARY: Array<u64> =
    Array::with_max_entries(GENERATIONS * SUMMARY_WORDS, BPF_F_MMAPABLE);

/// IPv6: [`SUMMARY_WORDS`] summary words per generation.
#[map]
static V6_SUMMARY: Array<u64> =
    Array::with_max_entries(GENERATIONS * SUMMARY_WORDS, BPF_F_MMAPABLE);

/// IPv4: [`Regions::v4_lines`] lines per generation.
#[map]
static V4_BUCKETS: Array<RangeBucket> = Array::with_max_entries(1, BPF_F_MMAPABLE);

/// IPv4 leaves, [`Regions::v4_leaves`] per generation.
#[map]
static V4_LEAVES: Array<V4Leaf> = Array::with_max_entries(1, BPF_F_MMAPABLE);

/// IPv6: one header per generation.
#[map]
static V6_HEADERS: Array<V6Header> = Array::with_max_entries(GENERATIONS, BPF_F_MMAPABLE);

/// IPv6: [`Regions::v6_lines`] lines per generation.
#[map]
static V6_BUCKETS: Array<RangeBucket> = Array::with_max_entries(1, BPF_F_MMAPABLE);

/// IPv6 range starts, [`Regions::v6_ranges`] per generation.
#[map]
static V6_STARTS: Array<V6Words> = Array::with_max_entries(1, BPF_F_MMAPABLE);

/// IPv6 range rules, [`Regions::v6_ranges`] ranges (two to a word) per generation.
#[map]
static V6_RULES: Array<u64> = Array::with_max_entries(1, BPF_F_MMAPABLE);

/// The size of each generation's regions; user space sets it at load
/// ([`allowlist_common::ranges::GLOBAL_REGIONS`]).
#[unsafe(no_mangle)]
static REGIONS: Regions = Regions {
    v4_lines: 0,
    v4_leaves: 0,
    v6_lines: 0,
    v6_ranges: 0,
};

/// One generation's regions of the maps.
struct Generation {
    index: u32,
    regions: Regions,
}

impl Generation {
    #[inline(always)]
    fn of(generation: u32) -> Generation {
        Generation {
            index: generation,
            // SAFETY: a read-only global the loader sets before the program runs.
            regions: unsafe { core::ptr::read_volatile(&REGIONS) },
        }
    }
}

/// [`Generation`] read as its IPv4 table.
struct V4(Generation);

impl V4Words for V4 {
    #[inline(always)]
    fn summary(&self, word: u32) -> Option<u64> {
        V4_SUMMARY.get(self.0.index * SUMMARY_WORDS + word).copied()
    }

    #[inline(always)]
    fn bucket(&self, slot: u32) -> Option<&RangeBucket> {
        V4_BUCKETS.get(self.0.index * self.0.regions.v4_lines + slot)
    }

    #[inline(always)]
    fn leaf(&self, leaf: u32) -> Option<&V4Leaf> {
        V4_LEAVES.get(self.0.index * self.0.regions.v4_leaves + leaf)
    }
}

/// [`Generation`] read as its IPv6 table.
struct V6(Generation);

impl V6Tables for V6 {
    #[inline(always)]
    fn header(&self) -> Option<&V6Header> {
        V6_HEADERS.get(self.0.index)
    }

    #[inline(always)]
    fn summary(&self, word: u32) -> Option<u64> {
        V6_SUMMARY.get(self.0.index * SUMMARY_WORDS + word).copied()
    }

    #[inline(always)]
    fn bucket(&self, slot: u32) -> Option<&RangeBucket> {
        V6_BUCKETS.get(self.0.index * self.0.regions.v6_lines + slot)
    }

    #[inline(always)]
    fn start(&self, range: u32) -> Option<V6Words> {
        V6_STARTS
            .get(self.0.index * self.0.regions.v6_ranges + range)
            .copied()
    }

    #[inline(always)]
    fn rules(&self, word: u32) -> Option<u64> {
        V6_RULES
            .get(self.0.index * (self.0.regions.v6_ranges / 2) + word)
            .copied()
    }
}

/// The rule of the longest prefix of `generation` covering the IPv4 source `addr`: the
/// short list, the summary and the bucket inline (what most packets need); a search of the
/// bucket's leaves in [`allowlist_search_v4`].
#[inline(always)]
pub fn lookup_v4(generation: u8, addr: Ipv4Addr) -> Option<RuleId> {
    let addr = u32::from_be_bytes(addr);
    let short = V4_SHORT.get(u32::from(generation))?;
    if short.answers() {
        return short.rule_of(addr);
    }
    match v4_bucket_answer(&V4(Generation::of(u32::from(generation))), addr) {
        BucketAnswer::Rule(rule) => rule,
        BucketAnswer::Search(slot) => {
            RuleId::try_from(allowlist_search_v4(u32::from(generation), slot, addr)).ok()
        }
    }
}

/// The rule of the longest prefix of `generation` covering the IPv6 source `addr`, as
/// [`lookup_v4`]; a search of the bucket's ranges in [`allowlist_search_v6`].
#[inline(always)]
pub fn lookup_v6(generation: u8, addr: &Ipv6Addr) -> Option<RuleId> {
    let mut high = [0u8; 8];
    let mut low = [0u8; 8];
    high.copy_from_slice(&addr[..8]);
    low.copy_from_slice(&addr[8..]);
    let addr = [u64::from_be_bytes(high), u64::from_be_bytes(low)];
    let short = V6_SHORT.get(u32::from(generation))?;
    if short.answers() {
        return short.rule_of(addr);
    }
    match v6_bucket_answer(&V6(Generation::of(u32::from(generation))), addr) {
        BucketAnswer::Rule(rule) => rule,
        BucketAnswer::Search(slot) => RuleId::try_from(allowlist_search_v6(
            u32::from(generation),
            slot,
            addr[0],
            addr[1],
        ))
        .ok(),
    }
}

/// The search of [`lookup_v4`]: the rule of `addr` in the leaves of the bucket at line
/// `slot` of `generation`, or -1 for none. A global function (see `build.rs`): the verifier
/// checks it once, alone, not once for every path of the program that reaches it.
#[unsafe(no_mangle)]
#[inline(never)]
pub extern "C" fn allowlist_search_v4(generation: u32, slot: u32, addr: u32) -> i64 {
    let table = V4(Generation::of(generation));
    table
        .bucket(slot)
        .and_then(|bucket| search_v4(&table, bucket, addr))
        .map_or(-1, i64::from)
}

/// The search of [`lookup_v6`], as [`allowlist_search_v4`], for the address `high`:`low`.
#[unsafe(no_mangle)]
#[inline(never)]
pub extern "C" fn allowlist_search_v6(generation: u32, slot: u32, high: u64, low: u64) -> i64 {
    let table = V6(Generation::of(generation));
    table
        .bucket(slot)
        .and_then(|bucket| search_v6(&table, bucket, [high, low]))
        .map_or(-1, i64::from)
}
