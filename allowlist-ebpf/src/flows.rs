//! The flows the host started: recorded on egress, consulted on ingress for packets from
//! sources outside the allowlist, through the flow filter first (see
//! [`allowlist_common::flow_filter`]).

use allowlist_common::flow_filter::{
    FLOW_FILTER_LINES, FLOW_FILTERS, FlowFilterLine, flow_filter_byte, flow_filter_slot,
};
use allowlist_common::{
    Config, DEFAULT_MAX_FLOWS, FlowKey, FlowState, PROTECTED_PORT_WORDS, ip_proto,
    protected_port_mask, protected_port_word, reply_openers,
};
use aya_ebpf::{
    bindings::BPF_F_MMAPABLE,
    helpers::bpf_ktime_get_ns,
    macros::map,
    maps::{Array, LruHashMap},
};

use crate::packet::{self, Transport};

#[map]
static FLOWS: LruHashMap<FlowKey, FlowState> = LruHashMap::with_max_entries(DEFAULT_MAX_FLOWS, 0);

/// The remote ports whose TCP (first half) or UDP traffic opens flows, for a protocol that
/// [`Config::reply_restrictions`] limits to listed ports.
#[map]
static REPLY_PORTS: Array<u64> = Array::with_max_entries(PROTECTED_PORT_WORDS, 0);

/// Two filters of the flows in [`FLOWS`], a byte per slot; user space renews them.
#[map]
static FLOW_FILTER: Array<FlowFilterLine> =
    Array::with_max_entries(FLOW_FILTERS * FLOW_FILTER_LINES, BPF_F_MMAPABLE);

/// Sets `flow`'s byte in both filters (after the flow is recorded: see the module's doc).
#[inline(always)]
fn note_in_filters(flow: &FlowKey) {
    let slot = flow_filter_slot(flow);
    for filter in 0..FLOW_FILTERS {
        let (line, byte) = flow_filter_byte(filter, slot);
        if let Some(line) = FLOW_FILTER.get_ptr_mut(line) {
            // SAFETY: a map value; a byte store of a constant, so concurrent stores to this
            // line lose nothing. Read first: a set byte is not written again, so a busy
            // flow does not keep the line bouncing between CPUs.
            unsafe {
                if (*line)[byte & 63] == 0 {
                    (*line)[byte & 63] = 1;
                }
            }
        }
    }
}

/// Whether `flow` may be recorded: false only when the filter in use says it is not.
#[inline(always)]
fn may_be_recorded(config: &Config, flow: &FlowKey) -> bool {
    let (line, byte) = flow_filter_byte(config.flow_filter & 1, flow_filter_slot(flow));
    match FLOW_FILTER.get(line) {
        Some(line) => line[byte & 63] != 0,
        None => true,
    }
}

const TCP_FIN: u8 = 0x01;
const TCP_SYN: u8 = 0x02;
const TCP_RST: u8 = 0x04;
const TCP_ACK: u8 = 0x10;

const ICMP_ECHO_REPLY: u8 = 0;
const ICMP_DEST_UNREACHABLE: u8 = 3;
const ICMP_ECHO_REQUEST: u8 = 8;
const ICMP_TIME_EXCEEDED: u8 = 11;
const ICMP_PARAMETER_PROBLEM: u8 = 12;
const ICMPV6_DEST_UNREACHABLE: u8 = 1;
const ICMPV6_PACKET_TOO_BIG: u8 = 2;
const ICMPV6_TIME_EXCEEDED: u8 = 3;
const ICMPV6_ECHO_REQUEST: u8 = 128;
const ICMPV6_ECHO_REPLY: u8 = 129;

/// An IP address as the flow key holds it.
#[derive(Clone, Copy)]
pub enum Addr {
    /// IPv4.
    V4([u8; 4]),
    /// IPv6.
    V6([u8; 16]),
}

/// The two addresses of a flow, as the host sees them.
#[derive(Clone, Copy)]
pub enum Ends {
    /// IPv4.
    V4 {
        /// The other side.
        remote: [u8; 4],
        /// The host's address.
        local: [u8; 4],
    },
    /// IPv6.
    V6 {
        /// The other side.
        remote: [u8; 16],
        /// The host's address.
        local: [u8; 16],
    },
}

/// An IPv4 address in the 16 bytes of a flow key.
#[inline(always)]
fn widened(v4: [u8; 4]) -> [u8; 16] {
    let mut bytes = [0u8; 16];
    bytes[..4].copy_from_slice(&v4);
    bytes
}

#[inline(always)]
fn key(ends: Ends, remote_port: u16, local_port: u16, protocol: u8) -> FlowKey {
    let (remote, local, family) = match ends {
        Ends::V4 { remote, local } => (widened(remote), widened(local), 4),
        Ends::V6 { remote, local } => (remote, local, 6),
    };
    FlowKey {
        remote,
        local,
        remote_port,
        local_port,
        protocol,
        family,
        padding: [0; 2],
    }
}

/// The monotonic clock (`CLOCK_MONOTONIC`), in ns.
#[inline(always)]
pub fn now() -> u64 {
    // SAFETY: a helper without arguments.
    unsafe { bpf_ktime_get_ns() }
}

/// Records (or refreshes) the flow of a packet the host sends to `remote`; a packet that
/// would start a flow starts one only if the configuration lets its kind open flows.
/// `counted` runs when a flow was recorded anew.
#[inline(always)]
pub fn record(ends: Ends, transport: Transport, end: usize, counted: impl Fn()) {
    let (flow, tcp_flags) = match transport.protocol {
        ip_proto::TCP | ip_proto::UDP => {
            let Some((local_port, remote_port)) = packet::ports(transport.at, end) else {
                return;
            };
            let flow = key(ends, remote_port, local_port, transport.protocol);
            if transport.protocol == ip_proto::TCP {
                let Some(flags) = packet::tcp_flags(transport.at, end) else {
                    return;
                };
                (flow, u32::from(flags))
            } else {
                (flow, NOT_TCP)
            }
        }
        ip_proto::ICMP | ip_proto::ICMPV6 => {
            let Some((icmp_type, id)) = packet::icmp_type_and_id(transport.at, end) else {
                return;
            };
            if icmp_type != ICMP_ECHO_REQUEST && icmp_type != ICMPV6_ECHO_REQUEST {
                return;
            }
            (key(ends, 0, id, transport.protocol), NOT_TCP)
        }
        _ => return,
    };
    if allowlist_record_flow(&flow, tcp_flags) != 0 {
        counted();
    }
}

/// The TCP flags [`allowlist_record_flow`] is given for a packet of another protocol.
const NOT_TCP: u32 = 1 << 8;

/// Records (or refreshes) `flow`, that of a TCP packet with the flags `tcp_flags` or of
/// another protocol ([`NOT_TCP`]): a global function (see `build.rs`), which the verifier
/// checks once, not once for every kind of packet [`record`] looks at. 1 when the flow was
/// recorded anew.
#[unsafe(no_mangle)]
#[inline(never)]
pub extern "C" fn allowlist_record_flow(flow: *const FlowKey, tcp_flags: u32) -> i64 {
    // SAFETY: the flow key the caller built on its stack (or null, which the verifier makes
    // every global function handle).
    let (Some(config), Some(flow)) = (crate::config(), unsafe { flow.as_ref() }) else {
        return 0;
    };
    let tcp = (tcp_flags != NOT_TCP).then_some(tcp_flags as u8);
    let now = now();
    if let Some(state) = FLOWS.get_ptr_mut(flow) {
        // SAFETY: a map value; concurrent updates of these plain fields are benign.
        let state = unsafe { &mut *state };
        match tcp {
            Some(flags) if flags & TCP_SYN != 0 && flags & TCP_ACK == 0 => {
                // A new connection on the same ports.
                state.closing = FlowState::OPEN;
                state.last_seen_ns = now;
            }
            Some(flags) => note_tcp_flags(state, flags, now),
            None => state.last_seen_ns = now,
        }
        note_in_filters(flow);
        return 0;
    }
    let starts = match tcp {
        Some(flags) => flags & TCP_SYN != 0 && flags & TCP_ACK == 0,
        None => true,
    } && opens(config, flow.protocol, flow.remote_port);
    if !starts {
        return 0;
    }
    let state = FlowState {
        last_seen_ns: now,
        closing: FlowState::OPEN,
        padding: 0,
    };
    if FLOWS.insert(flow, state, 0).is_err() {
        return 0;
    }
    note_in_filters(flow);
    1
}

/// Whether the host's packet of IP protocol `protocol` to `remote_port` may open a flow:
/// always, unless [`Config::reply_restrictions`] limits its protocol to the remote ports
/// listed in [`REPLY_PORTS`] (TCP, UDP) or keeps ICMP echo from opening any.
#[inline(always)]
fn opens(config: &Config, protocol: u8, remote_port: u16) -> bool {
    let restrictions = config.reply_restrictions;
    let udp = match protocol {
        ip_proto::TCP if restrictions & reply_openers::TCP_LISTED_PORTS != 0 => false,
        ip_proto::UDP if restrictions & reply_openers::UDP_LISTED_PORTS != 0 => true,
        ip_proto::TCP | ip_proto::UDP => return true,
        _ => return restrictions & reply_openers::NO_ICMP == 0,
    };
    REPLY_PORTS
        .get(protected_port_word(0, udp, remote_port))
        .is_some_and(|word| word & protected_port_mask(remote_port) != 0)
}

#[inline(always)]
fn note_tcp_flags(state: &mut FlowState, flags: u8, now: u64) {
    if flags & TCP_RST != 0 {
        state.closing = FlowState::CLOSED;
    } else if flags & TCP_FIN != 0 {
        if state.closing == FlowState::OPEN {
            state.closing = FlowState::FIN_SEEN;
            state.last_seen_ns = now;
        }
    } else if state.closing == FlowState::OPEN {
        state.last_seen_ns = now;
    }
}

/// Whether a packet from `remote` is a reply to (or an ICMP error about) a flow the host
/// started and that is still fresh. Only the host's own packets keep a flow alive or close
/// it: a reply changes nothing, so that a spoofer who knows a flow's ports can neither keep
/// it open past its idle timeout nor tear it down with a forged RST or FIN.
#[inline(always)]
pub fn is_reply(config: &Config, ends: Ends, transport: Transport, end: usize) -> bool {
    match transport.protocol {
        ip_proto::TCP | ip_proto::UDP => {
            let Some((remote_port, local_port)) = packet::ports(transport.at, end) else {
                return false;
            };
            known(
                config,
                &key(ends, remote_port, local_port, transport.protocol),
            )
        }
        ip_proto::ICMP | ip_proto::ICMPV6 => {
            let Some((icmp_type, id)) = packet::icmp_type_and_id(transport.at, end) else {
                return false;
            };
            match (transport.protocol, icmp_type) {
                (ip_proto::ICMP, ICMP_ECHO_REPLY) | (ip_proto::ICMPV6, ICMPV6_ECHO_REPLY) => {
                    known(config, &key(ends, 0, id, transport.protocol))
                }
                _ => error_flow(transport, icmp_type, end).is_some_and(|flow| known(config, &flow)),
            }
        }
        _ => false,
    }
}

/// The flow an ICMP or ICMPv6 error of type `icmp_type` (in `transport`) is about: the
/// packet the host sent that it quotes. `None` for another type or a quote cut short.
#[inline(always)]
pub(crate) fn error_flow(transport: Transport, icmp_type: u8, end: usize) -> Option<FlowKey> {
    match (transport.protocol, icmp_type) {
        (ip_proto::ICMP, ICMP_DEST_UNREACHABLE | ICMP_TIME_EXCEEDED | ICMP_PARAMETER_PROBLEM) => {
            quoted_flow_v4(packet::quoted(transport.at), end)
        }
        (
            ip_proto::ICMPV6,
            ICMPV6_DEST_UNREACHABLE | ICMPV6_PACKET_TOO_BIG | ICMPV6_TIME_EXCEEDED,
        ) => quoted_flow_v6(packet::quoted(transport.at), end),
        _ => None,
    }
}

/// Whether `flow` is recorded and fresh (without refreshing it): the flow filter inline
/// (most refused sources end there), the flow map in [`allowlist_fresh_flow`].
#[inline(always)]
pub(crate) fn known(config: &Config, flow: &FlowKey) -> bool {
    may_be_recorded(config, flow) && allowlist_fresh_flow(flow) != 0
}

/// Whether `flow` is in the flow map and fresh: 1 or 0. A global function (see `build.rs`):
/// the verifier checks it once, not once for every kind of packet [`is_reply`] looks at.
#[unsafe(no_mangle)]
#[inline(never)]
pub extern "C" fn allowlist_fresh_flow(flow: *const FlowKey) -> i64 {
    // SAFETY: the flow key the caller built on its stack (or null, which the verifier makes
    // every global function handle).
    let (Some(config), Some(flow)) = (crate::config(), unsafe { flow.as_ref() }) else {
        return 0;
    };
    // SAFETY: the value is only read.
    match unsafe { FLOWS.get(flow) } {
        Some(state) => {
            i64::from(state.passes_replies(config.flow_timeout_ns(flow.protocol), now()))
        }
        None => 0,
    }
}

/// The flow of the packet the host sent that an ICMP error quotes, for an IPv4 quote at
/// `ip`: its destination is the flow's remote address, its source the host's.
#[inline(always)]
fn quoted_flow_v4(ip: usize, end: usize) -> Option<FlowKey> {
    let ends = Ends::V4 {
        remote: packet::destination_v4(ip, end)?,
        local: packet::source_v4(ip, end)?,
    };
    quoted_flow(ends, packet::transport_v4(ip, end)?, end)
}

/// As [`quoted_flow_v4`], for an IPv6 quote.
#[inline(always)]
fn quoted_flow_v6(ip: usize, end: usize) -> Option<FlowKey> {
    let ends = Ends::V6 {
        remote: packet::destination_v6(ip, end)?,
        local: packet::source_v6(ip, end)?,
    };
    quoted_flow(ends, packet::transport_v6(ip, end)?, end)
}

#[inline(always)]
fn quoted_flow(ends: Ends, transport: Transport, end: usize) -> Option<FlowKey> {
    match transport.protocol {
        ip_proto::TCP | ip_proto::UDP => {
            let (local_port, remote_port) = packet::ports(transport.at, end)?;
            Some(key(ends, remote_port, local_port, transport.protocol))
        }
        ip_proto::ICMP | ip_proto::ICMPV6 => {
            let (icmp_type, id) = packet::icmp_type_and_id(transport.at, end)?;
            (icmp_type == ICMP_ECHO_REQUEST || icmp_type == ICMPV6_ECHO_REQUEST)
                .then(|| key(ends, 0, id, transport.protocol))
        }
        _ => None,
    }
}
