//! The packet counters, per interface, and the verdicts that count them.

use allowlist_common::rule_stats::{sample_shift, sampled};
use allowlist_common::{
    Counter, EXPIRING_RULE, INTERFACE_SLOT_IFINDEXES, MAX_INTERFACES, Mode, RuleId, RuleStats,
};
use aya_ebpf::{
    bindings::{
        BPF_F_MMAPABLE,
        xdp_action::{XDP_DROP, XDP_PASS},
    },
    helpers::{bpf_get_prandom_u32, bpf_ktime_get_coarse_ns},
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

/// Whether `rule` (as the range tables give it) is that of an expiring entry whose time has
/// come: the packet is then judged as if no entry allowed it. One flag test for the rules of
/// entries that never expire.
#[inline(always)]
pub fn expired(rule: RuleId) -> bool {
    if rule & EXPIRING_RULE == 0 {
        return false;
    }
    let Some(stats) = RULE_HITS.get(rule & !EXPIRING_RULE) else {
        return false;
    };
    // SAFETY: a helper without arguments.
    let now = unsafe { bpf_ktime_get_coarse_ns() };
    stats.expired_at((now / 1_000_000_000) as u32)
}

/// How each rule was used, shared by the CPUs (see [`allowlist_common::rule_stats`]),
/// memory-mapped by user space so that a million rules read in milliseconds.
#[map]
static RULE_HITS: Array<RuleStats> =
    Array::with_max_entries(allowlist_common::DEFAULT_MAX_RULES, BPF_F_MMAPABLE);

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
    pub fn pass(self, counter: Counter) -> Judged {
        self.count(counter);
        Judged::PASSED
    }

    /// Counts an allowed packet and the hit on the rule that allowed it.
    #[inline(always)]
    pub fn pass_rule(self, rule: RuleId) -> Judged {
        count_rule_hit(rule & !EXPIRING_RULE);
        self.pass(Counter::PassedAllowed)
    }

    /// Drops in enforce mode (counting `counter`); in monitor mode counts a would-drop
    /// (or a malformed frame) and passes.
    #[inline(always)]
    pub fn refuse(self, mode: Mode, counter: Counter) -> Judged {
        if mode == Mode::Enforce {
            self.count(counter);
            Judged {
                action: XDP_DROP,
                refused: true,
            }
        } else {
            self.count(match counter {
                Counter::Dropped => Counter::WouldDrop,
                other => other,
            });
            Judged {
                action: XDP_PASS,
                refused: true,
            }
        }
    }
}

/// What the policy in force did with a packet.
#[derive(Clone, Copy)]
pub struct Judged {
    /// The XDP action.
    pub action: u32,
    /// Whether the policy refused it (dropped, or would have in monitor mode).
    pub refused: bool,
}

impl Judged {
    /// Passed by the policy.
    pub const PASSED: Judged = Judged {
        action: XDP_PASS,
        refused: false,
    };
}

/// Counts a hit on `rule` (sampled beyond the exact hits, see
/// [`allowlist_common::rule_stats`]) and notes its second: the clock user space keeps in
/// [`CLOCK`] (a load, where a clock helper would cost a call on every allowed packet), written
/// only when the second changed.
#[inline(always)]
pub fn count_rule_hit(rule: RuleId) {
    let Some(stats) = RULE_HITS.get_ptr_mut(rule) else {
        return;
    };
    let now = (CLOCK.get(0).copied().unwrap_or(0) / 1_000_000_000) as u32;
    // SAFETY: a value of the map, shared by the CPUs: the count changes by atomic adds only,
    // and racing writers of the second write the same value.
    unsafe {
        if (*stats).last_hit_s != now {
            (*stats).last_hit_s = now;
        }
        let count = &raw mut (*stats).count;
        let Some(shift) = sample_shift(core::ptr::read_volatile(count)) else {
            return;
        };
        let random = match shift {
            0 => 0,
            1..=31 => u64::from(bpf_get_prandom_u32()),
            _ => u64::from(bpf_get_prandom_u32()) << 32 | u64::from(bpf_get_prandom_u32()),
        };
        if sampled(shift, random) {
            atomic_add_one(count);
        }
    }
}

/// Adds one to `*value` atomically: the BPF atomic add (`lock *(u64 *) += `).
///
/// # Safety
///
/// `value` points to a `u64` every writer changes by atomic adds only.
#[inline(always)]
unsafe fn atomic_add_one(value: *mut u64) {
    // The BPF target's `core::sync::atomic` has no read-modify-write; the intrinsic, whose
    // result goes unused, compiles to the instruction.
    #[cfg(target_arch = "bpf")]
    // SAFETY: as the caller promises.
    unsafe {
        core::intrinsics::atomic_xadd::<u64, u64, { core::intrinsics::AtomicOrdering::Relaxed }>(
            value, 1,
        );
    }
    // The host build only type-checks the program (clippy); it never runs it.
    #[cfg(not(target_arch = "bpf"))]
    // SAFETY: as the caller promises.
    unsafe {
        core::sync::atomic::AtomicU64::from_ptr(value)
            .fetch_add(1, core::sync::atomic::Ordering::Relaxed);
    }
}
