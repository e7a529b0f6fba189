//! Programs for `cargo xtask bench` only, compiled with the `bench` feature: the object the
//! daemon ships has neither these programs nor their maps.
//!
//! - `bench_floor`: drops every frame, nothing else: what XDP itself costs.
//! - `bench_varied`: runs the allowlist's classification (the very functions the XDP program
//!   uses, and its rule hit count) over many different sources in one test run: `bpf_loop`
//!   draws a random source from [`BENCH_SOURCES`] each iteration. With lookups switched off
//!   in [`BENCH_SETUP`] the same loop only draws the sources: the difference, divided by the
//!   iterations, is the classification cost with varied keys, caches as cold as the table
//!   size makes them. With the baseline switched on, sources are looked up in LPM tries of
//!   the policy in force ([`BENCH_TRIE_V4`], [`BENCH_TRIE_V6`]), the structure the range
//!   tables replaced, for comparison in the same run.

use core::ffi::c_void;

use allowlist_common::bench::{BENCH_LOOPS, BENCH_SOURCE_SLOTS};
use allowlist_common::{DEFAULT_MAX_RULES, Ipv4Addr, Ipv6Addr, RuleId};
use aya_ebpf::{
    bindings::{
        BPF_F_INNER_MAP,
        xdp_action::{XDP_ABORTED, XDP_DROP},
    },
    btf_maps,
    helpers::{bpf_get_prandom_u32, bpf_loop},
    macros::{btf_map, map, xdp},
    maps::{Array, LpmTrie, lpm_trie::Key},
    programs::XdpContext,
};

use crate::config;
use crate::ranges::{lookup_v4, lookup_v6};
use crate::tally::count_rule_hit;

/// The IPv4 prefixes of the policy in force, in the kernel's LPM trie: the baseline.
#[map]
static BENCH_TRIE_V4: LpmTrie<Ipv4Addr, RuleId> = LpmTrie::with_max_entries(DEFAULT_MAX_RULES, 0);

/// The IPv6 prefixes of the policy in force, in the kernel's LPM trie.
#[map]
static BENCH_TRIE_V6: LpmTrie<Ipv6Addr, RuleId> = LpmTrie::with_max_entries(DEFAULT_MAX_RULES, 0);

/// Sources to draw from: IPv4 in the first 4 bytes.
#[map]
static BENCH_SOURCES: Array<[u8; 16]> = Array::with_max_entries(BENCH_SOURCE_SLOTS, 0);

/// `[family (4 or 6), lookups (0 or 1), through the trie alone (0 or 1), hits counted (0 or
/// 1)]`.
#[map]
static BENCH_SETUP: Array<u32> = Array::with_max_entries(4, 0);

/// Sources found in the allowlist in the last run (keeps the lookups from being optimised
/// away, and tells the benchmark its allowed sources were allowed).
#[map]
static BENCH_FOUND: Array<u64> = Array::with_max_entries(1, 0);

/// The floor: drop.
#[xdp]
pub fn bench_floor(_ctx: XdpContext) -> u32 {
    XDP_DROP
}

/// What each iteration of the loop needs.
#[repr(C)]
struct LoopState {
    generation: u8,
    family: u32,
    lookups: u32,
    trie: u32,
    hits: u32,
    found: u64,
}

/// Lookups of [`BENCH_LOOPS`] random sources of [`BENCH_SOURCES`].
#[xdp]
pub fn bench_varied(_ctx: XdpContext) -> u32 {
    let (Some(config), Some(family), Some(lookups), Some(trie), Some(hits)) = (
        config(),
        BENCH_SETUP.get(0),
        BENCH_SETUP.get(1),
        BENCH_SETUP.get(2),
        BENCH_SETUP.get(3),
    ) else {
        return XDP_ABORTED;
    };
    let mut state = LoopState {
        generation: config.active.generation as u8,
        family: *family,
        lookups: *lookups,
        trie: *trie,
        hits: *hits,
        found: 0,
    };
    // SAFETY: the callback has the signature bpf_loop expects and only touches `state`.
    unsafe {
        bpf_loop(
            BENCH_LOOPS,
            one_source as *mut c_void,
            &mut state as *mut LoopState as *mut c_void,
            0,
        )
    };
    if let Some(found) = BENCH_FOUND.get_ptr_mut(0) {
        // SAFETY: an array slot; the benchmark runs one test run at a time.
        unsafe { *found = state.found };
    }
    XDP_DROP
}

extern "C" fn one_source(_index: u32, ctx: *mut c_void) -> i64 {
    // SAFETY: `ctx` is the `LoopState` bench_varied passed to bpf_loop.
    let state = unsafe { &mut *(ctx as *mut LoopState) };
    // SAFETY: a helper without arguments.
    let slot = unsafe { bpf_get_prandom_u32() } % BENCH_SOURCE_SLOTS;
    let Some(source) = BENCH_SOURCES.get(slot) else {
        return 1;
    };
    if state.lookups == 0 {
        state.found += u64::from(source[0] & 1);
        return 0;
    }
    let g = state.generation;
    let v4 = [source[0], source[1], source[2], source[3]];
    let rule = match (state.family == 4, state.trie != 0) {
        (true, false) => lookup_v4(g, v4),
        (true, true) => BENCH_TRIE_V4.get(Key::new(32, v4)).copied(),
        (false, false) => lookup_v6(g, source),
        (false, true) => BENCH_TRIE_V6.get(Key::new(128, *source)).copied(),
    };
    if let Some(rule) = rule {
        if state.hits != 0 {
            count_rule_hit(rule);
        }
        state.found += 1;
    }
    0
}

/// Elements of the arrays [`bench_lookups`] reads: a 64 MiB table, larger than any cache.
const LOOKUP_ELEMENTS: u32 = 1 << 20;

/// An array of [`LOOKUP_ELEMENTS`] cache lines the verifier inlines lookups into: the design
/// of the range tables today (sized at load).
#[map]
static BENCH_FLAT: Array<[u64; 8]> = Array::with_max_entries(LOOKUP_ELEMENTS, 0);

/// The same lines in an inner map of any size (`BPF_F_INNER_MAP`), which user space creates
/// and puts in slot 0: a table sized to its policy, each lookup a helper call.
#[btf_map]
static BENCH_OUTER: btf_maps::ArrayOfMaps<
    btf_maps::Array<[u64; 8], 1, { BPF_F_INNER_MAP as usize }>,
    1,
> = btf_maps::ArrayOfMaps::new();

/// `[design (0: the loop alone, 1: flat, 2: inner map), lookups per iteration]`.
#[map]
static BENCH_LOOKUP_SETUP: Array<u32> = Array::with_max_entries(2, 0);

/// What [`bench_lookups`]'s iterations add up, so that no read is optimised away.
#[map]
static BENCH_LOOKUP_SUM: Array<u64> = Array::with_max_entries(1, 0);

#[repr(C)]
struct LookupState {
    design: u32,
    reads: u32,
    sum: u64,
}

/// [`BENCH_LOOPS`] iterations of `reads` dependent reads at random lines of one of the two
/// designs: the difference to the loop alone, divided by the iterations, is what a lookup
/// costs each way.
#[xdp]
pub fn bench_lookups(_ctx: XdpContext) -> u32 {
    let (Some(design), Some(reads)) = (BENCH_LOOKUP_SETUP.get(0), BENCH_LOOKUP_SETUP.get(1)) else {
        return XDP_ABORTED;
    };
    let mut state = LookupState {
        design: *design,
        reads: *reads,
        sum: 0,
    };
    // SAFETY: the callback has the signature bpf_loop expects and only touches `state`.
    unsafe {
        bpf_loop(
            BENCH_LOOPS,
            one_lookup as *mut c_void,
            &mut state as *mut LookupState as *mut c_void,
            0,
        )
    };
    if let Some(sum) = BENCH_LOOKUP_SUM.get_ptr_mut(0) {
        // SAFETY: an array slot; the benchmark runs one test run at a time.
        unsafe { *sum = state.sum };
    }
    XDP_DROP
}

extern "C" fn one_lookup(_index: u32, ctx: *mut c_void) -> i64 {
    // SAFETY: `ctx` is the `LookupState` bench_lookups passed to bpf_loop.
    let state = unsafe { &mut *(ctx as *mut LookupState) };
    // SAFETY: a helper without arguments.
    let mut index = unsafe { bpf_get_prandom_u32() } & (LOOKUP_ELEMENTS - 1);
    // The inner map is found once a packet, as a generation's tables would be.
    let inner = match state.design {
        2 => BENCH_OUTER.get(0),
        _ => None,
    };
    for read in 0..3 {
        if read >= state.reads {
            break;
        }
        let line = match (state.design, inner) {
            (1, _) => BENCH_FLAT.get(index).copied(),
            (2, Some(inner)) => inner.get(index).copied(),
            _ => {
                state.sum += u64::from(index);
                return 0;
            }
        };
        let value = line.map_or(0, |line| line[0]);
        state.sum += value;
        // The next read depends on this one, as a bucket's leaf depends on the bucket.
        index = (index ^ value as u32).wrapping_mul(2_654_435_761) & (LOOKUP_ELEMENTS - 1);
    }
    0
}
