//! Previews (see [`allowlist_common::preview`]): while one runs, every packet is judged
//! against the candidate policy too, and the sources whose verdict it would change are
//! counted. Nothing here changes a verdict.
//!
//! The main path parses what the candidate needs into a [`Seen`] on its stack and hands it
//! to [`allowlist_preview`], a global function: the verifier checks the candidate's
//! judgement once, with a stack of its own small enough to sit on the main path's.

use allowlist_common::preview::{
    PREVIEW_PORTS, PREVIEW_SOURCES_CAPACITY, PreviewKey, PreviewPort, PreviewSeen, would,
};
use allowlist_common::{
    Config, Counter, FlowKey, GENERATIONS, Mode, ip_proto, protected_port_mask, protected_port_word,
};
use aya_ebpf::{
    helpers::bpf_ktime_get_coarse_ns, macros::map, maps::LruPerCpuHashMap, programs::XdpContext,
};

use crate::packet::{self, Source, Transport};
use crate::ranges::{lookup_v4, lookup_v6};
use crate::tally::{self, Tally};

#[map]
static PREVIEW_SOURCES: LruPerCpuHashMap<PreviewKey, PreviewSeen> =
    LruPerCpuHashMap::with_max_entries(PREVIEW_SOURCES_CAPACITY, 0);

/// [`Seen::flags`]: the packet has a transport header the program reads.
const TRANSPORT: u8 = 1;
/// [`Seen::flags`]: its ports (TCP, UDP) or echo identifier (ICMP) were read.
const PORTS: u8 = 2;
/// [`Seen::flags`]: valid IPv6 neighbour discovery, which every policy passes.
const NEIGHBOR_DISCOVERY: u8 = 4;
/// [`Seen::flags`]: the policy in force refused the packet.
const REFUSED: u8 = 8;
/// [`Seen::flags`]: an ICMP or ICMPv6 echo reply.
const ECHO_REPLY: u8 = 16;
/// [`Seen::flags`]: an ICMP or ICMPv6 error about a flow the host started, still fresh.
const ERROR_ABOUT_FLOW: u8 = 32;

/// What the main path read of a packet, for the candidate.
#[repr(C)]
pub struct Seen {
    /// The flow a reply to it would belong to: the source as the remote end, the
    /// destination as the local one, the ports (for an echo reply: 0 and its identifier),
    /// the protocol (0: none read) and the family.
    flow: FlowKey,
    /// The frame's length.
    bytes: u32,
    /// The interface it came in on.
    ifindex: u32,
    /// [`TRANSPORT`], [`PORTS`], [`NEIGHBOR_DISCOVERY`], [`REFUSED`], [`ECHO_REPLY`].
    flags: u8,
    /// Zero.
    padding: [u8; 3],
}

/// Reads the packet of `ctx` (which the policy in force `refused` or not) and has the
/// running preview judge it; `config` is the configuration in use.
#[inline(always)]
pub fn judge(ctx: &XdpContext, config: &Config, refused: bool) {
    let (start, end) = (ctx.data(), ctx.data_end());
    let mut seen = Seen {
        flow: FlowKey {
            remote: [0; 16],
            local: [0; 16],
            remote_port: 0,
            local_port: 0,
            protocol: 0,
            family: 0,
            padding: [0; 2],
        },
        bytes: end.saturating_sub(start) as u32,
        ifindex: ctx.ingress_ifindex() as u32,
        flags: if refused { REFUSED } else { 0 },
        padding: [0; 3],
    };
    let transport = match packet::source(start, end) {
        Source::V4(addr, ip) => {
            seen.flow.family = 4;
            seen.flow.remote[..4].copy_from_slice(&addr);
            if let Some(local) = packet::destination_v4(ip, end) {
                seen.flow.local[..4].copy_from_slice(&local);
            }
            packet::transport_v4(ip, end)
        }
        Source::V6(addr, ip) => {
            seen.flow.family = 6;
            seen.flow.remote = addr;
            if let Some(local) = packet::destination_v6(ip, end) {
                seen.flow.local = local;
            }
            if packet::neighbor_discovery(ip, end, &addr) == Some(true) {
                seen.flags |= NEIGHBOR_DISCOVERY;
            }
            packet::transport_v6(ip, end)
        }
        Source::NotIp | Source::Malformed => return,
    };
    if let Some(Transport { protocol, at }) = transport {
        seen.flags |= TRANSPORT;
        seen.flow.protocol = protocol;
        match protocol {
            ip_proto::TCP | ip_proto::UDP => {
                if let Some((remote, local)) = packet::ports(at, end) {
                    seen.flow.remote_port = remote;
                    seen.flow.local_port = local;
                    seen.flags |= PORTS;
                }
            }
            ip_proto::ICMP | ip_proto::ICMPV6 => {
                if let Some((icmp_type, id)) = packet::icmp_type_and_id(at, end) {
                    seen.flow.local_port = id;
                    seen.flags |= PORTS;
                    if icmp_type == 0 || icmp_type == 129 {
                        seen.flags |= ECHO_REPLY;
                    } else if !refused
                        && config.replies != 0
                        && crate::flows::error_flow(Transport { protocol, at }, icmp_type, end)
                            .is_some_and(|flow| crate::flows::known(config, &flow))
                    {
                        // Looked up here, where the packet is: the quoted flow does not
                        // travel to the preview. (A refused packet was no such error.)
                        seen.flags |= ERROR_ABOUT_FLOW;
                    }
                }
            }
            _ => {}
        }
    }
    allowlist_preview(&seen);
}

/// Judges `seen` against the running preview's candidate; counts it when the candidate
/// would treat it otherwise than the policy in force did. A global function (see
/// `build.rs`): packets pay for it only while a preview runs.
#[unsafe(no_mangle)]
#[inline(never)]
pub extern "C" fn allowlist_preview(seen: *const Seen) -> i64 {
    // SAFETY: the record the caller built on its stack (or null, which the verifier makes
    // every global function handle).
    let (Some(config), Some(seen)) = (crate::config(), unsafe { seen.as_ref() }) else {
        return 0;
    };
    // SAFETY: a helper without arguments.
    let now = unsafe { bpf_ktime_get_coarse_ns() };
    if now >= config.preview_until_ns {
        return 0;
    }
    // What passes under every policy (neighbour discovery, replies) was not refused: a
    // refused packet passes the candidate only by the candidate's own policy.
    let refused = seen.flags & REFUSED != 0;
    let passes = candidate_passes(config, seen) || (!refused && passes_anyway(config, seen));
    let (would, counter) = match (refused, passes) {
        (false, false) => (would::DROP, Counter::PreviewWouldDrop),
        (true, true) => (would::PASS, Counter::PreviewWouldPass),
        _ => return 0,
    };
    Tally::of_interface(seen.ifindex).count(counter);
    let key = PreviewKey {
        addr: seen.flow.remote,
        family: seen.flow.family,
        would,
        padding: [0; 2],
    };
    note(&key, seen, now);
    0
}

/// Whether the candidate passes `seen` by its policy: off or monitor, a port outside its
/// scopes, or a rule of its own that has not expired.
#[inline(always)]
fn candidate_passes(config: &Config, seen: &Seen) -> bool {
    let candidate = &config.preview;
    if Mode::from_raw(candidate.mode) != Mode::Enforce {
        return true;
    }
    let generation = candidate.generation as u8;
    if candidate.scoped != 0 && !protected(config, candidate.generation, seen) {
        return true;
    }
    let rule = if seen.flow.family == 4 {
        let mut addr = [0u8; 4];
        addr.copy_from_slice(&seen.flow.remote[..4]);
        lookup_v4(generation, addr)
    } else {
        lookup_v6(generation, &seen.flow.remote)
    };
    rule.is_some_and(|rule| !tally::expired(rule))
}

/// Whether every policy passes `seen`: neighbour discovery, a reply to a flow the host
/// started, or an ICMP error about one.
#[inline(always)]
fn passes_anyway(config: &Config, seen: &Seen) -> bool {
    if seen.flags & NEIGHBOR_DISCOVERY != 0 {
        return true;
    }
    if config.replies == 0 || seen.flags & PORTS == 0 {
        return false;
    }
    match seen.flow.protocol {
        ip_proto::TCP | ip_proto::UDP => crate::flows::known(config, &seen.flow),
        ip_proto::ICMP | ip_proto::ICMPV6 if seen.flags & ECHO_REPLY != 0 => {
            crate::flows::known(config, &seen.flow)
        }
        ip_proto::ICMP | ip_proto::ICMPV6 => seen.flags & ERROR_ABOUT_FLOW != 0,
        _ => false,
    }
}

/// Whether the candidate's scopes (generation `generation`'s port bitmap) check `seen`, as
/// [`crate::protected`] does for the policy in force.
#[inline(always)]
fn protected(config: &Config, generation: u32, seen: &Seen) -> bool {
    if seen.flags & TRANSPORT == 0 {
        return true;
    }
    let udp = match seen.flow.protocol {
        ip_proto::TCP => false,
        ip_proto::UDP => true,
        ip_proto::ICMP | ip_proto::ICMPV6 => return false,
        other => return !config.unprotected(other),
    };
    if seen.flags & PORTS == 0 {
        return true;
    }
    let port = seen.flow.local_port;
    let word = protected_port_word(generation % GENERATIONS, udp, port);
    match crate::PROTECTED_PORTS.get(word) {
        Some(word) => word & protected_port_mask(port) != 0,
        None => true,
    }
}

/// Counts `seen` for the source `key`.
#[inline(always)]
fn note(key: &PreviewKey, seen: &Seen, now: u64) {
    let (protocol, port) = (seen.flow.protocol, seen.flow.local_port);
    let bytes = u64::from(seen.bytes);
    let Some(value) = PREVIEW_SOURCES.get_ptr_mut(key) else {
        let mut value = PreviewSeen {
            packets: 1,
            bytes,
            last_seen_ns: now,
            ..PreviewSeen::default()
        };
        value.ports[0] = PreviewPort {
            packets: 1,
            port,
            protocol,
            padding: 0,
        };
        let _ = PREVIEW_SOURCES.insert(key, value, 0);
        return;
    };
    // SAFETY: this CPU's value of the entry, which only this CPU writes while this program
    // runs.
    let value = unsafe { &mut *value };
    value.packets += 1;
    value.bytes += bytes;
    value.last_seen_ns = now;
    // The pair's slot, else the slot seen least (an empty one first).
    let mut slot = PREVIEW_PORTS;
    for i in 0..PREVIEW_PORTS {
        let pair = value.ports[i];
        if pair.packets != 0 && pair.protocol == protocol && pair.port == port {
            slot = i;
        }
    }
    if slot == PREVIEW_PORTS {
        slot = 0;
        for i in 1..PREVIEW_PORTS {
            if value.ports[i].packets < value.ports[slot % PREVIEW_PORTS].packets {
                slot = i;
            }
        }
        value.ports[slot % PREVIEW_PORTS] = PreviewPort {
            packets: 0,
            port,
            protocol,
            padding: 0,
        };
    }
    let pair = &mut value.ports[slot % PREVIEW_PORTS];
    pair.packets = pair.packets.saturating_add(1);
}
