//! The sources refused most often: a bounded LRU map with a count of its own for each CPU
//! (exact under concurrency without atomics; user space sums them), sampled so that a flood
//! of refused packets does not pay a map update each.

use allowlist_common::{Config, SourceKey, SourceSeen, TOP_SOURCES_CAPACITY};
use aya_ebpf::{
    helpers::{bpf_get_prandom_u32, bpf_ktime_get_coarse_ns},
    macros::map,
    maps::LruPerCpuHashMap,
};

use crate::flows::Addr;

#[map]
static TOP_SOURCES: LruPerCpuHashMap<SourceKey, SourceSeen> =
    LruPerCpuHashMap::with_max_entries(TOP_SOURCES_CAPACITY, 0);

/// Notes one refused packet from `source`, one time in `config.top_sample`.
#[inline(always)]
pub fn note(config: &Config, source: Addr) {
    let sample = config.top_sample;
    // SAFETY: helpers without arguments.
    if sample == 0 || (sample > 1 && unsafe { bpf_get_prandom_u32() } % sample != 0) {
        return;
    }
    let mut key = SourceKey::default();
    match source {
        Addr::V4(v4) => {
            key.addr[..4].copy_from_slice(&v4);
            key.family = 4;
        }
        Addr::V6(v6) => {
            key.addr = v6;
            key.family = 6;
        }
    }
    // SAFETY: a helper without arguments.
    let now = unsafe { bpf_ktime_get_coarse_ns() };
    match TOP_SOURCES.get_ptr_mut(key) {
        // SAFETY: this CPU's value of the entry, which only this CPU writes while this
        // program runs.
        Some(seen) => unsafe {
            (*seen).packets += 1;
            (*seen).last_seen_ns = now;
        },
        // A new entry: this CPU's value is set, the other CPUs' start at zero.
        None => {
            let _ = TOP_SOURCES.insert(
                key,
                SourceSeen {
                    packets: 1,
                    last_seen_ns: now,
                },
                0,
            );
        }
    }
}
