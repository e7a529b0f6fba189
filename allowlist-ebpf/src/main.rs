//! The allowlist programs.
//!
//! - `allowlist` (XDP, ingress): passes IP packets whose source address is covered by the
//!   policy's range tables, replies to flows the host started, IPv6 neighbour discovery, and (when
//!   scopes are set) packets to unprotected ports; drops (or, in monitor mode, counts) the
//!   others; passes everything that is not IP.
//! - `allowlist_egress` (TC, egress): records the flows the host starts.
//!
//! The per-packet path does no logging. An allowed source costs the config lookup, the
//! classification (a few array reads in the range tables) and the counters; the reply check
//! runs only for sources outside the allowlist.
//!
//! Policies are double-buffered: the range tables hold [`GENERATIONS`] policies side by side
//! (a region of each map), and the configuration slot in use says which one is in force
//! and, while a change is pending, which one to fall back to at what time. The program
//! falls back by itself, so a daemon that dies in a pending window locks nobody out.
#![cfg_attr(target_arch = "bpf", no_std)]
#![cfg_attr(target_arch = "bpf", no_main)]
// The BPF target has no atomic read-modify-write in `core::sync::atomic`; the intrinsic
// compiles to the BPF atomic add (`lock *(u64 *) += `) the shared hit counts need. The eBPF
// build already runs with RUSTC_BOOTSTRAP for `-Z build-std`.
#![cfg_attr(target_arch = "bpf", feature(core_intrinsics))]
#![cfg_attr(target_arch = "bpf", allow(internal_features))]

#[cfg(feature = "bench")]
mod bench;
mod events;
mod flows;
mod packet;
mod preview;
mod ranges;
mod tally;
mod top;

use allowlist_common::{
    Config, Counter, GENERATIONS, GenerationRecord, Mode, PROTECTED_PORT_WORDS, ip_proto,
    protected_port_mask, protected_port_word,
};
use aya_ebpf::{
    bindings::xdp_action::XDP_PASS,
    macros::{classifier, map, xdp},
    maps::Array,
    programs::{TcContext, XdpContext},
};

use crate::flows::{Addr, Ends};
use crate::packet::{Source, Transport};
use crate::ranges::{lookup_v4, lookup_v6};
use crate::tally::{Judged, Tally};

/// Two slots; [`CONFIG_SLOT`] names the one in use.
#[map]
static CONFIG: Array<Config> = Array::with_max_entries(2, 0);

#[map]
static CONFIG_SLOT: Array<u32> = Array::with_max_entries(1, 0);

/// What user space wrote into each generation, for itself after a restart.
#[map]
static GENERATION_RECORDS: Array<GenerationRecord> = Array::with_max_entries(GENERATIONS, 0);

/// One bitmap per generation, one bit per port: TCP ports in the first half, UDP in the second.
#[map]
pub(crate) static PROTECTED_PORTS: Array<u64> =
    Array::with_max_entries(GENERATIONS * PROTECTED_PORT_WORDS, 0);

/// The configuration in use: the slot [`CONFIG_SLOT`] names.
#[inline(always)]
pub(crate) fn config() -> Option<&'static Config> {
    CONFIG.get(*CONFIG_SLOT.get(0)?)
}

/// The XDP entry point.
#[xdp]
pub fn allowlist(ctx: XdpContext) -> u32 {
    let Some(config) = config() else {
        return XDP_PASS;
    };
    let judged = judge(&ctx, config);
    if config.preview_until_ns != 0 {
        preview::judge(&ctx, config, judged.refused);
    }
    judged.action
}

/// What the policy in force does with the packet of `ctx`, counted.
#[inline(always)]
fn judge(ctx: &XdpContext, config: &Config) -> Judged {
    // The clock is read only while a change is pending.
    let now = if config.revert_at_ns != 0 {
        flows::now()
    } else {
        0
    };
    let policy = config.in_force(now);
    if config.revert_at_ns != 0 && now >= config.revert_at_ns {
        events::fell_back(ctx, config.revert_at_ns);
    }
    let mode = Mode::from_raw(policy.mode);
    if mode == Mode::Off {
        return Judged::PASSED;
    }
    let generation = policy.generation as u8;
    let scoped = policy.scoped != 0;
    let tally = Tally::of_interface(ctx.ingress_ifindex() as u32);
    let end = ctx.data_end();
    match packet::source(ctx.data(), end) {
        Source::NotIp => tally.pass(Counter::PassedNotIp),
        Source::Malformed => {
            events::malformed(ctx, ctx.ingress_ifindex() as u32, flows::now());
            tally.refuse(mode, Counter::Malformed)
        }
        Source::V4(addr, ip) => {
            if scoped && !protected(config, generation, packet::transport_v4(ip, end), end) {
                return tally.pass(Counter::PassedUnprotected);
            }
            if let Some(rule) = lookup_v4(generation, addr)
                && !tally::expired(rule)
            {
                return tally.pass_rule(rule);
            }
            // Only sources outside the allowlist get this far: the transport header is parsed
            // here, not before the lookup, so allowed sources never pay for it.
            match (
                packet::transport_v4(ip, end),
                packet::destination_v4(ip, end),
            ) {
                (Some(t), Some(local))
                    if config.replies != 0
                        && flows::is_reply(
                            config,
                            Ends::V4 {
                                remote: addr,
                                local,
                            },
                            t,
                            end,
                        ) =>
                {
                    tally.pass(Counter::PassedReply)
                }
                _ => {
                    top::note(config, Addr::V4(addr));
                    tally.refuse(mode, Counter::Dropped)
                }
            }
        }
        Source::V6(addr, ip) => {
            if scoped && !protected(config, generation, packet::transport_v6(ip, end), end) {
                return tally.pass(Counter::PassedUnprotected);
            }
            if let Some(rule) = lookup_v6(generation, &addr)
                && !tally::expired(rule)
            {
                return tally.pass_rule(rule);
            }
            match packet::neighbor_discovery(ip, end, &addr) {
                Some(true) => tally.pass(Counter::PassedNeighborDiscovery),
                None => {
                    events::malformed(ctx, ctx.ingress_ifindex() as u32, flows::now());
                    tally.refuse(mode, Counter::Malformed)
                }
                Some(false) => match (
                    packet::transport_v6(ip, end),
                    packet::destination_v6(ip, end),
                ) {
                    (Some(t), Some(local))
                        if config.replies != 0
                            && flows::is_reply(
                                config,
                                Ends::V6 {
                                    remote: addr,
                                    local,
                                },
                                t,
                                end,
                            ) =>
                    {
                        tally.pass(Counter::PassedReply)
                    }
                    _ => {
                        top::note(config, Addr::V6(addr));
                        tally.refuse(mode, Counter::Dropped)
                    }
                },
            }
        }
    }
}

/// The TC egress entry point: records the flows the host starts; never drops.
#[classifier]
pub fn allowlist_egress(ctx: TcContext) -> i32 {
    if let Some(config) = config()
        && config.replies != 0
    {
        // SAFETY: the context's socket buffer, valid for this run.
        let tally = Tally::of_interface(unsafe { (*ctx.skb.skb).ifindex });
        let end = ctx.data_end();
        match packet::source(ctx.data(), end) {
            Source::V4(local, ip) => {
                if let (Some(remote), Some(t)) = (
                    packet::destination_v4(ip, end),
                    packet::transport_v4(ip, end),
                ) {
                    flows::record(Ends::V4 { remote, local }, t, end, || {
                        tally.count(Counter::FlowsRecorded)
                    });
                }
            }
            Source::V6(local, ip) => {
                if let (Some(remote), Some(t)) = (
                    packet::destination_v6(ip, end),
                    packet::transport_v6(ip, end),
                ) {
                    flows::record(Ends::V6 { remote, local }, t, end, || {
                        tally.count(Counter::FlowsRecorded)
                    });
                }
            }
            Source::NotIp | Source::Malformed => {}
        }
    }
    TC_ACT_OK
}

/// `TC_ACT_OK`: the packet goes on (the bindings' type of it differs between targets).
const TC_ACT_OK: i32 = 0;

/// Whether a packet must be checked against the allowlist when `generation`'s scopes are
/// set: TCP and UDP to a protected port, whatever could hide a port (truncated headers, IPv4
/// fragments after the first, IPv6 extension headers), and every protocol but TCP, UDP and
/// ICMP (a tunnel, GRE, ESP, SCTP, ... carries anything past the ports) unless the operator
/// named it unprotected. ICMP is outside every scope.
#[inline(always)]
pub(crate) fn protected(
    config: &Config,
    generation: u8,
    transport: Option<Transport>,
    end: usize,
) -> bool {
    let Some(transport) = transport else {
        return true;
    };
    let udp = match transport.protocol {
        ip_proto::TCP => false,
        ip_proto::UDP => true,
        ip_proto::ICMP | ip_proto::ICMPV6 => return false,
        other => return !config.unprotected(other),
    };
    let Some((_, port)) = packet::ports(transport.at, end) else {
        return true;
    };
    match PROTECTED_PORTS.get(protected_port_word(u32::from(generation), udp, port)) {
        Some(word) => word & protected_port_mask(port) != 0,
        None => true,
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
