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
    bindings::xdp_action::{XDP_ABORTED, XDP_DROP},
    helpers::{bpf_get_prandom_u32, bpf_loop},
    macros::{map, xdp},
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
