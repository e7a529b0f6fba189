//! The allowlist XDP program: passes IP packets whose source address is covered by the
//! allowlist tries, drops (or, in monitor mode, counts) the others, and passes everything
//! that is not IP.
//!
//! The per-packet path does no logging and at most three map lookups: the config, one
//! trie, and the counters.
#![cfg_attr(target_arch = "bpf", no_std)]
#![cfg_attr(target_arch = "bpf", no_main)]

mod packet;

use allowlist_common::{Config, Counter, DEFAULT_MAX_RULES, Ipv4Addr, Ipv6Addr, Mode, RuleId};
use aya_ebpf::{
    bindings::xdp_action::{XDP_DROP, XDP_PASS},
    macros::{map, xdp},
    maps::{Array, LpmTrie, PerCpuArray, lpm_trie::Key},
    programs::XdpContext,
};

use crate::packet::Source;

#[map]
static CONFIG: Array<Config> = Array::with_max_entries(1, 0);

#[map]
static ALLOW_V4: LpmTrie<Ipv4Addr, RuleId> = LpmTrie::with_max_entries(DEFAULT_MAX_RULES, 0);

#[map]
static ALLOW_V6: LpmTrie<Ipv6Addr, RuleId> = LpmTrie::with_max_entries(DEFAULT_MAX_RULES, 0);

#[map]
static COUNTERS: PerCpuArray<u64> = PerCpuArray::with_max_entries(Counter::COUNT, 0);

#[map]
static RULE_HITS: PerCpuArray<u64> = PerCpuArray::with_max_entries(DEFAULT_MAX_RULES, 0);

/// The XDP entry point.
#[xdp]
pub fn allowlist(ctx: XdpContext) -> u32 {
    let mode = match CONFIG.get(0) {
        Some(config) => Mode::from_raw(config.mode),
        None => Mode::Off,
    };
    if mode == Mode::Off {
        return XDP_PASS;
    }
    match packet::source(ctx.data(), ctx.data_end()) {
        Source::NotIp => pass(Counter::PassedNotIp),
        Source::Malformed => refuse(mode, Counter::Malformed),
        Source::V4(addr) => match ALLOW_V4.get(Key::new(32, addr)) {
            Some(rule) => pass_rule(*rule),
            None => refuse(mode, Counter::Dropped),
        },
        Source::V6(addr, ip) => match ALLOW_V6.get(Key::new(128, addr)) {
            Some(rule) => pass_rule(*rule),
            None => match packet::neighbor_discovery(ip, ctx.data_end()) {
                Some(true) => pass(Counter::PassedNeighborDiscovery),
                Some(false) => refuse(mode, Counter::Dropped),
                None => refuse(mode, Counter::Malformed),
            },
        },
    }
}

/// Counts `counter` and passes the frame.
#[inline(always)]
fn pass(counter: Counter) -> u32 {
    count(counter);
    XDP_PASS
}

/// Counts an allowed packet and the hit on the rule that allowed it.
#[inline(always)]
fn pass_rule(rule: RuleId) -> u32 {
    if let Some(hits) = RULE_HITS.get_ptr_mut(rule) {
        // SAFETY: a per-CPU slot, only this CPU writes it while this program runs.
        unsafe { *hits += 1 };
    }
    pass(Counter::PassedAllowed)
}

/// Drops in enforce mode (counting `counter`); in monitor mode counts a would-drop
/// (or a malformed frame) and passes.
#[inline(always)]
fn refuse(mode: Mode, counter: Counter) -> u32 {
    if mode == Mode::Enforce {
        count(counter);
        XDP_DROP
    } else {
        count(match counter {
            Counter::Dropped => Counter::WouldDrop,
            other => other,
        });
        XDP_PASS
    }
}

#[inline(always)]
fn count(counter: Counter) {
    if let Some(value) = COUNTERS.get_ptr_mut(counter as u32) {
        // SAFETY: a per-CPU slot, only this CPU writes it while this program runs.
        unsafe { *value += 1 };
    }
}

#[cfg(target_arch = "bpf")]
#[panic_handler]
fn panic(_info: &core::panic::PanicInfo) -> ! {
    loop {}
}

/// On the host this binary is only compiled so that `cargo clippy --workspace` checks the
/// program; the object the daemon loads is built for `bpfel-unknown-none`.
#[cfg(not(target_arch = "bpf"))]
fn main() {}

#[unsafe(link_section = "license")]
#[unsafe(no_mangle)]
static LICENSE: [u8; 13] = *b"Dual MIT/GPL\0";
