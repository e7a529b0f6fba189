//! The IPv4 range table's maps (see [`allowlist_common::ranges`]): the program's IPv4
//! classification, every lookup an inlined array read.

use allowlist_common::ranges::{RangeWords, V4_BUCKET_COUNT, V4Bucket, classify_v4};
use allowlist_common::{GENERATIONS, Ipv4Addr, RuleId};
use aya_ebpf::{bindings::BPF_F_MMAPABLE, macros::map, maps::Array};

/// [`V4_BUCKET_COUNT`] buckets per generation.
#[map]
static V4_BUCKETS: Array<V4Bucket> =
    Array::with_max_entries(GENERATIONS * V4_BUCKET_COUNT, BPF_F_MMAPABLE);

/// Range starts, [`V4_RANGE_CAPACITY`] ranges (four to a word) per generation.
#[map]
static V4_STARTS: Array<u64> = Array::with_max_entries(1, BPF_F_MMAPABLE);

/// Range rules, [`V4_RANGE_CAPACITY`] ranges (two to a word) per generation.
#[map]
static V4_RULES: Array<u64> = Array::with_max_entries(1, BPF_F_MMAPABLE);

/// The ranges of each generation's region of [`V4_STARTS`] and [`V4_RULES`]; user space sets
/// it at load ([`allowlist_common::ranges::GLOBAL_V4_RANGE_CAPACITY`]).
#[unsafe(no_mangle)]
static V4_RANGE_CAPACITY: u32 = 0;

/// One generation's regions of the three maps.
struct Generation {
    buckets: u32,
    starts: u32,
    rules: u32,
}

impl RangeWords for Generation {
    #[inline(always)]
    fn bucket(&self, bucket: u32) -> Option<&V4Bucket> {
        V4_BUCKETS.get(self.buckets + bucket)
    }

    #[inline(always)]
    fn starts(&self, word: u32) -> Option<u64> {
        V4_STARTS.get(self.starts + word).copied()
    }

    #[inline(always)]
    fn rules(&self, word: u32) -> Option<u64> {
        V4_RULES.get(self.rules + word).copied()
    }
}

/// The rule of the longest prefix of `generation` covering the IPv4 source `addr`.
#[inline(always)]
pub fn lookup_v4(generation: u8, addr: Ipv4Addr) -> Option<RuleId> {
    // SAFETY: a read-only global the loader sets before the program runs.
    let capacity = unsafe { core::ptr::read_volatile(&V4_RANGE_CAPACITY) };
    let g = u32::from(generation);
    let table = Generation {
        buckets: g * V4_BUCKET_COUNT,
        starts: g * (capacity / 4),
        rules: g * (capacity / 2),
    };
    classify_v4(&table, u32::from_be_bytes(addr))
}
