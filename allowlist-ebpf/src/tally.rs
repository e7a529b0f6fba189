//! The packet counters, per interface, and the verdicts that count them.

use allowlist_common::{
    Counter, EXPIRING_RULE, INTERFACE_SLOT_IFINDEXES, MAX_INTERFACES, Mode, RuleId, RuleUsage,
    rule_usage_slot,
};
use aya_ebpf::{
    bindings::{
        BPF_F_MMAPABLE,
        xdp_action::{XDP_DROP, XDP_PASS},
    },
    helpers::{bpf_get_smp_processor_id, bpf_ktime_get_coarse_ns},
    macros::map,
    maps::{Array, PerCpuArray},
};

#[map]
static COUNTERS: PerCpuArray<u64> =
    PerCpuArray::with_max_entries((MAX_INTERFACES + 1) * Counter::COUNT, 0);

#[map]
static CLOCK: Array<u64> = Array::with_max_entries(1, 0);

#[map]
static INTERFACE_SLOTS: Array<u32> = Array::with_max_entries(INTERFACE_SLOT_IFINDEXES, 0);

/// When the rule of an expiring entry stops allowing (coarse monotonic ns); 0: never.
#[map]
static RULE_EXPIRY: Array<u64> = Array::with_max_entries(allowlist_common::DEFAULT_MAX_RULES, 0);

/// Whether `rule` (as the range tables give it) is that of an expiring entry whose time has
/// come: the packet is then judged as if no entry allowed it. One flag test for the rules of
/// entries that never expire.
#[inline(always)]
pub fn expired(rule: RuleId) -> bool {
    if rule & EXPIRING_RULE == 0 {
        return false;
    }
    match RULE_EXPIRY.get(rule & !EXPIRING_RULE) {
        Some(&at) if at != 0 => {
            // SAFETY: a helper without arguments.
            let now = unsafe { bpf_ktime_get_coarse_ns() };
            now >= at
        }
        _ => false,
    }
}

/// A region of [`RULE_CAPACITY`] rules per CPU, memory-mapped by user space so that a million
/// rules read in milliseconds.
#[map]
static RULE_HITS: Array<RuleUsage> =
    Array::with_max_entries(allowlist_common::DEFAULT_MAX_RULES, BPF_F_MMAPABLE);

/// The rules in each CPU's region of [`RULE_HITS`]; user space sets it at load
/// ([`allowlist_common::GLOBAL_RULE_CAPACITY`]).
#[unsafe(no_mangle)]
static RULE_CAPACITY: u32 = allowlist_common::DEFAULT_MAX_RULES;

/// Where one packet's counts go: the counter slot of the interface it came in on.
#[derive(Clone, Copy)]
pub struct Tally {
    slot: u32,
}

impl Tally {
    /// The tally of interface `ifindex` (slot 0 when it has none).
    #[inline(always)]
    pub fn of_interface(ifindex: u32) -> Tally {
        let slot = INTERFACE_SLOTS.get(ifindex).copied().unwrap_or(0);
        Tally {
            slot: slot.min(MAX_INTERFACES),
        }
    }

    /// Counts `counter`.
    #[inline(always)]
    pub fn count(self, counter: Counter) {
        if let Some(value) = COUNTERS.get_ptr_mut(counter.index(self.slot)) {
            // SAFETY: a per-CPU slot, only this CPU writes it while this program runs.
            unsafe { *value += 1 };
        }
    }

    /// Counts `counter` and passes the frame.
    #[inline(always)]
    pub fn pass(self, counter: Counter) -> u32 {
        self.count(counter);
        XDP_PASS
    }

    /// Counts an allowed packet and the hit on the rule that allowed it.
    #[inline(always)]
    pub fn pass_rule(self, rule: RuleId) -> u32 {
        count_rule_hit(rule & !EXPIRING_RULE);
        self.pass(Counter::PassedAllowed)
    }

    /// Drops in enforce mode (counting `counter`); in monitor mode counts a would-drop
    /// (or a malformed frame) and passes.
    #[inline(always)]
    pub fn refuse(self, mode: Mode, counter: Counter) -> u32 {
        if mode == Mode::Enforce {
            self.count(counter);
            XDP_DROP
        } else {
            self.count(match counter {
                Counter::Dropped => Counter::WouldDrop,
                other => other,
            });
            XDP_PASS
        }
    }
}

/// Counts a hit on `rule` and notes its time: the clock user space keeps in [`CLOCK`] (a
/// load, where a clock helper would cost a call on every allowed packet).
#[inline(always)]
pub fn count_rule_hit(rule: RuleId) {
    // SAFETY: a plain read of a global the loader set; volatile so that the compiler does
    // not take the default for the value.
    let capacity = unsafe { core::ptr::read_volatile(&RULE_CAPACITY) };
    // SAFETY: a helper without arguments.
    let cpu = unsafe { bpf_get_smp_processor_id() };
    let Some(slot) = rule_usage_slot(cpu, rule, capacity) else {
        return;
    };
    if let Some(usage) = RULE_HITS.get_ptr_mut(slot) {
        let now = CLOCK.get(0).copied().unwrap_or(0);
        // SAFETY: in this CPU's region, which only this CPU writes while this program runs.
        unsafe {
            (*usage).hits += 1;
            (*usage).last_hit_ns = now;
        }
    }
}
