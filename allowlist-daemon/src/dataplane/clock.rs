//! The kernel's clocks as user space reads them.

use nix::time::{ClockId, clock_gettime};

/// `CLOCK_MONOTONIC` in ns: the clock of `bpf_ktime_get_ns`, which revert deadlines use.
pub(super) fn monotonic_now_ns() -> u64 {
    clock_ns(ClockId::CLOCK_MONOTONIC)
}

/// `CLOCK_MONOTONIC_COARSE` in ns: the clock of `bpf_ktime_get_coarse_ns`.
pub(super) fn coarse_now_ns() -> u64 {
    clock_ns(ClockId::CLOCK_MONOTONIC_COARSE)
}

/// `clock` now, in ns (0 if the kernel refuses to read it, which it does not for these).
fn clock_ns(clock: ClockId) -> u64 {
    clock_gettime(clock).map_or(0, |now| {
        u64::try_from(now.tv_sec())
            .unwrap_or(0)
            .saturating_mul(1_000_000_000)
            .saturating_add(u64::try_from(now.tv_nsec()).unwrap_or(0))
    })
}
