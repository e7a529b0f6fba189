//! Events worth a line in the daemon's log, sent through aya-log: the program falling back
//! to the policy before an unacknowledged change at its deadline (once per deadline), and
//! malformed frames (at most one line per CPU every [`MALFORMED_EVERY_NS`]). Never a line
//! per packet: a flood of anything costs one array read per packet here, no more.

use aya_ebpf::{macros::map, maps::Array, programs::XdpContext};
use aya_log_ebpf::warn;

/// What was last logged: the deadline whose fallback was reported, and when malformed
/// frames were.
#[map]
static EVENT_STATE: Array<u64> = Array::with_max_entries(2, 0);

/// Slot of [`EVENT_STATE`]: the revert deadline whose fallback was reported.
const FELL_BACK: u32 = 0;
/// Slot of [`EVENT_STATE`]: when malformed frames were last reported.
const MALFORMED: u32 = 1;
/// Malformed frames are reported at most this often.
const MALFORMED_EVERY_NS: u64 = 10_000_000_000;

/// Reports, once for `revert_at_ns`, that the program now enforces the policy before the
/// pending change.
#[inline(always)]
pub fn fell_back(ctx: &XdpContext, revert_at_ns: u64) {
    let Some(logged) = EVENT_STATE.get_ptr_mut(FELL_BACK) else {
        return;
    };
    // SAFETY: a value of this map; two CPUs racing here log the event twice at worst.
    unsafe {
        if *logged == revert_at_ns {
            return;
        }
        *logged = revert_at_ns;
    }
    warn!(
        ctx,
        "revert deadline passed without an acknowledgement: the program enforces the policy before the change"
    );
}

/// Reports malformed frames on interface `ifindex`, at most once every
/// [`MALFORMED_EVERY_NS`] (on the clock `now`).
#[inline(always)]
pub fn malformed(ctx: &XdpContext, ifindex: u32, now: u64) {
    let Some(last) = EVENT_STATE.get_ptr_mut(MALFORMED) else {
        return;
    };
    // SAFETY: as above; racing CPUs may each log one line.
    unsafe {
        if *last != 0 && now.saturating_sub(*last) < MALFORMED_EVERY_NS {
            return;
        }
        *last = now;
    }
    warn!(
        ctx,
        "malformed frames on interface {}: dropped in enforce mode (counter malformed)", ifindex
    );
}
