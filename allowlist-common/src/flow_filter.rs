//! The flow filter: one byte per slot, set for every flow the host starts, so that the reply
//! check of a packet from a denied source reads one byte of a small array instead of
//! searching the flow map (a hash lookup that misses, cold, for every random source of a
//! flood). A clear byte means "no such flow"; a set one means "look in the flow map".
//!
//! Two filters, one read at a time ([`Config::flow_filter`](crate::Config::flow_filter)):
//! the egress program sets a flow's byte in both, after recording the flow; user space
//! renews the one not read (clears it, sets the bytes of the live flows it finds in the
//! flow map), then switches the check to it. A flow recorded meanwhile set its byte in the
//! renewed filter itself, after the clearing: no reply is ever refused for want of a byte.

use crate::FlowKey;

/// Name of the filter array: [`FLOW_FILTERS`] filters of [`FLOW_FILTER_LINES`] lines of
/// [`FLOW_FILTER_LINE`] bytes (filter `f`'s line `l` at element `f * FLOW_FILTER_LINES + l`).
pub const MAP_FLOW_FILTER: &str = "FLOW_FILTER";
/// Filters in [`MAP_FLOW_FILTER`].
pub const FLOW_FILTERS: u32 = 2;
/// Bytes of one element of [`MAP_FLOW_FILTER`]: a cache line.
pub const FLOW_FILTER_LINE: u32 = 64;
/// Elements of one filter: 128 KiB, small enough to stay in a core's cache under a flood.
pub const FLOW_FILTER_LINES: u32 = 2048;
/// Slots (bytes) of one filter.
pub const FLOW_FILTER_SLOTS: u32 = FLOW_FILTER_LINE * FLOW_FILTER_LINES;

/// One element of [`MAP_FLOW_FILTER`].
pub type FlowFilterLine = [u8; FLOW_FILTER_LINE as usize];

/// The slot of `flow` in a filter, below [`FLOW_FILTER_SLOTS`].
pub const fn flow_filter_slot(flow: &FlowKey) -> u32 {
    let mut hash: u64 = 0x9e37_79b9_7f4a_7c15 ^ ((flow.protocol as u64) << 8 | flow.family as u64);
    let mut i = 0;
    while i < 32 {
        let address = if i < 16 { &flow.remote } else { &flow.local };
        let at = i % 16;
        let word = u32::from_le_bytes([
            address[at],
            address[at + 1],
            address[at + 2],
            address[at + 3],
        ]);
        hash = (hash ^ word as u64).wrapping_mul(0xff51_afd7_ed55_8ccd);
        i += 4;
    }
    hash ^= (flow.remote_port as u64) << 16 | flow.local_port as u64;
    // MurmurHash3's finalizer: every input bit moves the slot.
    hash ^= hash >> 33;
    hash = hash.wrapping_mul(0xff51_afd7_ed55_8ccd);
    hash ^= hash >> 33;
    hash = hash.wrapping_mul(0xc4ce_b9fe_1a85_ec53);
    hash ^= hash >> 33;
    (hash as u32) % FLOW_FILTER_SLOTS
}

/// The element of [`MAP_FLOW_FILTER`] and the byte within it of `slot` in filter `filter`.
pub const fn flow_filter_byte(filter: u32, slot: u32) -> (u32, usize) {
    (
        filter * FLOW_FILTER_LINES + slot / FLOW_FILTER_LINE,
        (slot % FLOW_FILTER_LINE) as usize,
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn flow(remote: [u8; 4], remote_port: u16, local_port: u16) -> FlowKey {
        let mut bytes = [0u8; 16];
        bytes[..4].copy_from_slice(&remote);
        FlowKey {
            remote: bytes,
            local: [0; 16],
            remote_port,
            local_port,
            protocol: 17,
            family: 4,
            padding: [0; 2],
        }
    }

    #[test]
    fn flows_spread_over_the_slots() {
        let mut used = std::collections::HashSet::new();
        for port in 0..4096u16 {
            let slot = flow_filter_slot(&flow([192, 0, 2, 1], 53, 30_000 + port));
            assert!(slot < FLOW_FILTER_SLOTS);
            used.insert(slot);
        }
        assert!(
            used.len() > 4000,
            "{} distinct slots of 4096 flows",
            used.len()
        );
        assert_ne!(
            flow_filter_slot(&flow([192, 0, 2, 1], 53, 1)),
            flow_filter_slot(&flow([192, 0, 2, 2], 53, 1))
        );
    }

    #[test]
    fn each_filter_has_lines_of_its_own() {
        assert_eq!(flow_filter_byte(0, 0), (0, 0));
        assert_eq!(flow_filter_byte(0, 65), (1, 1));
        assert_eq!(
            flow_filter_byte(1, FLOW_FILTER_SLOTS - 1),
            (2 * FLOW_FILTER_LINES - 1, 63)
        );
    }
}
