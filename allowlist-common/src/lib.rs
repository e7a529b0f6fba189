//! The ABI shared by the allowlist XDP program and its user-space driver.
//!
//! Everything here is `#[repr(C)]` plain data: the kernel side reads it out of BPF maps and
//! user space writes it in, so layout changes here are layout changes of the maps. The key
//! and index layouts are `const fn`s both sides call. With the `user` feature the map types
//! are [`aya::Pod`], so user space reads and writes them as they are.
#![cfg_attr(not(test), no_std)]
#![warn(missing_docs)]

pub mod flow_filter;
#[cfg(feature = "user")]
mod pod;
pub mod preview;
pub mod ranges;
pub mod rule_stats;

pub use rule_stats::RuleStats;

/// Name of the XDP program inside the eBPF object.
pub const PROGRAM_NAME: &str = "allowlist";
/// Name of the TC egress program that records the flows the host starts.
pub const EGRESS_PROGRAM_NAME: &str = "allowlist_egress";

/// Version of the maps' layout. Pins live under `<bpffs>/allowlist/v<LAYOUT_VERSION>`; a daemon
/// never reuses pins of another version. Bump it with every change to a map or to this ABI.
pub const LAYOUT_VERSION: u32 = 12;

/// Policy generations kept side by side in the range tables. The active policy and, while a
/// change is pending, the one it reverts to are two; the third is where the next one is
/// written before a single write to [`MAP_CONFIG_SLOT`] switches every CPU to it.
pub const GENERATIONS: u32 = 3;

/// Name of the [`Config`] array map: two slots, the one in use named by [`MAP_CONFIG_SLOT`].
pub const MAP_CONFIG: &str = "CONFIG";
/// Name of the one-entry `u32` array that says which slot of [`MAP_CONFIG`] is in use. User
/// space writes the other slot completely, then this: the one write that switches policy.
pub const MAP_CONFIG_SLOT: &str = "CONFIG_SLOT";
/// Name of the array of [`GenerationRecord`]s, one per generation: what user space wrote
/// into each generation of the [`ranges`] tables, read back after a restart. The program
/// does not read it.
pub const MAP_GENERATION_RECORDS: &str = "GENERATION_RECORDS";
/// Name of the per-CPU packet counter array: [`Counter::COUNT`] counters per interface slot
/// (slot `s`, counter `c` at `s * Counter::COUNT + c`), slot 0 for unlisted interfaces.
pub const MAP_COUNTERS: &str = "COUNTERS";
/// Name of the rule use array, memory-mapped by user space: a [`RuleStats`] per rule, shared
/// by the CPUs (see [`rule_stats`]).
pub const MAP_RULE_HITS: &str = "RULE_HITS";
/// Flag on a rule id in the range tables: the rule has a deadline
/// ([`RuleStats::expires_s`] in [`MAP_RULE_HITS`]). The rule's own id is the rest of the bits.
pub const EXPIRING_RULE: RuleId = 1 << 31;

/// Name of the LRU hash of flows the host started: key [`FlowKey`], value [`FlowState`].
pub const MAP_FLOWS: &str = "FLOWS";
/// Name of the `u32` array that gives each interface (by ifindex, below
/// [`INTERFACE_SLOT_IFINDEXES`]) its counter slot, 1 to [`MAX_INTERFACES`]; 0: unlisted.
pub const MAP_INTERFACE_SLOTS: &str = "INTERFACE_SLOTS";
/// Interfaces with their own counters.
pub const MAX_INTERFACES: u32 = 16;
/// Interface indexes [`MAP_INTERFACE_SLOTS`] covers; higher ones count in slot 0.
pub const INTERFACE_SLOT_IFINDEXES: u32 = 4096;

/// Name of the LRU hash of sources refused (or, in monitor mode, that would be): key
/// [`SourceKey`], value [`SourceSeen`]. Sampled: see [`Config::top_sample`].
pub const MAP_TOP_SOURCES: &str = "TOP_SOURCES";
/// Sources [`MAP_TOP_SOURCES`] remembers; the least recently seen go first.
pub const TOP_SOURCES_CAPACITY: u32 = 4096;

/// Name of the one-entry `u64` array user space keeps at `CLOCK_MONOTONIC_COARSE` (ns, a
/// tick every 100 ms): the time the program notes as a rule's last hit, without a helper
/// call per packet.
pub const MAP_CLOCK: &str = "CLOCK";

/// Name of the protected-port bitmaps: one of [`PROTECTED_PORT_WORDS`] `u64` words per
/// generation (generation `g` starts at word `g * PROTECTED_PORT_WORDS`), TCP ports first.
pub const MAP_PROTECTED_PORTS: &str = "PROTECTED_PORTS";

/// Name of the bitmap of remote ports whose TCP or UDP traffic from the host opens reply
/// flows, where [`Config::reply_restrictions`] limits a protocol to listed ports: the layout
/// of one generation of [`MAP_PROTECTED_PORTS`] (see [`protected_port_word`] of generation 0).
pub const MAP_REPLY_PORTS: &str = "REPLY_PORTS";

/// Bits of [`Config::reply_restrictions`].
pub mod reply_openers {
    /// TCP opens flows only to the remote ports listed in [`super::MAP_REPLY_PORTS`].
    pub const TCP_LISTED_PORTS: u32 = 1;
    /// UDP opens flows only to the remote ports listed in [`super::MAP_REPLY_PORTS`].
    pub const UDP_LISTED_PORTS: u32 = 2;
    /// ICMP echo requests open no flows.
    pub const NO_ICMP: u32 = 4;
}

/// Words of the protected-port bitmap: one bit per port, TCP then UDP.
pub const PROTECTED_PORT_WORDS: u32 = 2 * 65_536 / 64;
/// Flows remembered unless user space sets another capacity at load.
pub const DEFAULT_MAX_FLOWS: u32 = 65_536;
/// How long a TCP flow still passes replies after a FIN was seen.
pub const TCP_CLOSE_LINGER_NS: u64 = 10_000_000_000;

/// What the benchmark-only programs share with the benchmark (only in a `bench` build).
#[cfg(feature = "bench")]
pub mod bench {
    /// Iterations of the benchmark's varied-source loop per test run.
    pub const BENCH_LOOPS: u32 = 1024;
    /// Sources the benchmark's varied-source loop draws from.
    pub const BENCH_SOURCE_SLOTS: u32 = 65_536;
    /// Name of the benchmark's drop-only program.
    pub const BENCH_FLOOR_PROGRAM: &str = "bench_floor";
    /// Name of the benchmark's varied-source lookup program.
    pub const BENCH_VARIED_PROGRAM: &str = "bench_varied";
    /// Name of the benchmark's program that times lookups in a flat array and in an inner
    /// map (the two ways a table can be sized: at load, or to its policy).
    pub const BENCH_LOOKUPS_PROGRAM: &str = "bench_lookups";
}

/// IP protocol numbers the programs look at.
pub mod ip_proto {
    /// ICMP.
    pub const ICMP: u8 = 1;
    /// TCP.
    pub const TCP: u8 = 6;
    /// UDP.
    pub const UDP: u8 = 17;
    /// ICMPv6.
    pub const ICMPV6: u8 = 58;
}

/// Prefixes per family and policy, and rules in the rule hit array, unless user space sets
/// another capacity at load.
pub const DEFAULT_MAX_RULES: u32 = 262_144;

/// Identifies the rule (allowlist entry) that put a prefix into a policy; indexes
/// [`MAP_RULE_HITS`].
pub type RuleId = u32;

/// An IPv4 address in network byte order.
pub type Ipv4Addr = [u8; 4];
/// An IPv6 address in network byte order.
pub type Ipv6Addr = [u8; 16];

/// The word of [`MAP_PROTECTED_PORTS`] that holds `port` of TCP (or, with `udp`, UDP) in
/// `generation`'s bitmap.
pub const fn protected_port_word(generation: u32, udp: bool, port: u16) -> u32 {
    let half = if udp { PROTECTED_PORT_WORDS / 2 } else { 0 };
    generation * PROTECTED_PORT_WORDS + half + port as u32 / 64
}

/// The bit of `port` in its word of [`MAP_PROTECTED_PORTS`].
pub const fn protected_port_mask(port: u16) -> u64 {
    1 << (port % 64)
}

/// What the XDP program does with IP packets whose source is not allowed.
///
/// Stored as a plain `u32` in [`Enforcement::mode`] so that an unknown value read by the kernel is
/// never undefined behaviour; the program treats any unknown value as [`Mode::Off`].
#[repr(u32)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Mode {
    /// Pass everything, count nothing.
    Off = 0,
    /// Pass everything, but count what enforce mode would drop.
    Monitor = 1,
    /// Drop IP packets from sources outside the allowlist.
    Enforce = 2,
}

impl Mode {
    /// Decodes the raw value stored in [`Enforcement::mode`].
    pub const fn from_raw(raw: u32) -> Mode {
        match raw {
            1 => Mode::Monitor,
            2 => Mode::Enforce,
            _ => Mode::Off,
        }
    }
}

/// One policy as the program enforces it: which generation of the range tables, in which mode.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Enforcement {
    /// The generation of the range tables and port bitmap (below [`GENERATIONS`]).
    pub generation: u32,
    /// A [`Mode`] as `u32`.
    pub mode: u32,
    /// 1: only packets to protected ports (this generation's bitmap) are checked.
    pub scoped: u32,
    /// Zero.
    pub reserved: u32,
}

/// The program's runtime configuration: a slot of [`MAP_CONFIG`].
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Config {
    /// The policy in force.
    pub active: Enforcement,
    /// The policy a pending change reverts to; used once `revert_at_ns` has passed.
    pub fallback: Enforcement,
    /// `bpf_ktime_get_ns` (CLOCK_MONOTONIC) at which the program falls back to `fallback`
    /// by itself; 0 when no change is pending.
    pub revert_at_ns: u64,
    /// 1: pass replies to flows the host started (recorded by the egress program).
    pub replies: u32,
    /// One refused packet in `top_sample` (at random) is noted in [`MAP_TOP_SOURCES`]; 0: none.
    pub top_sample: u32,
    /// Idle time after which a TCP flow's replies are no longer passed.
    pub tcp_timeout_ns: u64,
    /// Idle time after which a UDP flow's replies are no longer passed.
    pub udp_timeout_ns: u64,
    /// Idle time after which an ICMP echo's replies are no longer passed.
    pub icmp_timeout_ns: u64,
    /// Which of the [`flow_filter`]s the reply check reads (0 or 1).
    pub flow_filter: u32,
    /// Which of the host's own packets open no flow: bits of [`reply_openers`]; 0: every
    /// TCP, UDP and ICMP echo packet does.
    pub reply_restrictions: u32,
    /// IP protocols (other than TCP, UDP and ICMP) that pass unchecked while scopes are set:
    /// bit `p % 64` of word `p / 64` for protocol number `p`.
    pub unprotected_protocols: [u64; 4],
    /// The candidate policy a preview judges packets against too (see [`preview`]); read
    /// only while `preview_until_ns` is in the future.
    pub preview: Enforcement,
    /// `bpf_ktime_get_coarse_ns` until which the preview runs (the program stops by itself,
    /// with the daemon dead too); 0: no preview.
    pub preview_until_ns: u64,
}

impl Config {
    /// The idle timeout of flows of IP protocol `protocol` (ICMP echo for any but TCP and
    /// UDP).
    pub const fn flow_timeout_ns(&self, protocol: u8) -> u64 {
        match protocol {
            ip_proto::TCP => self.tcp_timeout_ns,
            ip_proto::UDP => self.udp_timeout_ns,
            _ => self.icmp_timeout_ns,
        }
    }

    /// Whether IP protocol `protocol` passes unchecked while scopes are set.
    pub const fn unprotected(&self, protocol: u8) -> bool {
        self.unprotected_protocols[(protocol / 64) as usize] & (1 << (protocol % 64)) != 0
    }

    /// The policy in force at monotonic time `now_ns`: the fallback once the revert deadline
    /// has passed, else the active one.
    pub const fn in_force(&self, now_ns: u64) -> &Enforcement {
        if self.revert_at_ns != 0 && now_ns >= self.revert_at_ns {
            &self.fallback
        } else {
            &self.active
        }
    }
}

/// What one generation of the range tables holds: the value of [`MAP_GENERATION_RECORDS`].
/// User space zeroes it before it writes the generation and fills it in after, so a daemon
/// that died halfway leaves a record that names no policy.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct GenerationRecord {
    /// SHA-256 of the policy written (user space defines the encoding); zero: unknown.
    pub digest: [u8; 32],
    /// Prefixes in the policy, both families.
    pub prefixes: u64,
}

/// A refused source: the key of [`MAP_TOP_SOURCES`].
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct SourceKey {
    /// The address; IPv4 in the first 4 bytes, the rest zero.
    pub addr: [u8; 16],
    /// 4 or 6.
    pub family: u8,
    /// Zero.
    pub padding: [u8; 3],
}

/// What is known of a refused source: the value of [`MAP_TOP_SOURCES`].
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct SourceSeen {
    /// Sampled packets noted (multiply by [`Config::top_sample`] for an estimate).
    pub packets: u64,
    /// `bpf_ktime_get_coarse_ns` of the last one noted.
    pub last_seen_ns: u64,
}

/// A flow the host started, as seen from the host: the key of [`MAP_FLOWS`].
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct FlowKey {
    /// The remote address; IPv4 in the first 4 bytes, the rest zero.
    pub remote: [u8; 16],
    /// The local address the host sent from; IPv4 in the first 4 bytes, the rest zero.
    pub local: [u8; 16],
    /// The remote port (0 for ICMP echo).
    pub remote_port: u16,
    /// The local port (the echo identifier for ICMP echo).
    pub local_port: u16,
    /// An [`ip_proto`] number.
    pub protocol: u8,
    /// 4 or 6.
    pub family: u8,
    /// Zero.
    pub padding: [u8; 2],
}

/// What is known of a recorded flow: the value of [`MAP_FLOWS`].
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct FlowState {
    /// `bpf_ktime_get_ns` of the last packet of the flow, either way.
    pub last_seen_ns: u64,
    /// [`FlowState::OPEN`], [`FlowState::FIN_SEEN`] or [`FlowState::CLOSED`].
    pub closing: u32,
    /// Zero.
    pub padding: u32,
}

impl FlowState {
    /// Open: replies pass until the flow idles out.
    pub const OPEN: u32 = 0;
    /// The host sent a FIN: replies pass for at most [`TCP_CLOSE_LINGER_NS`] more.
    pub const FIN_SEEN: u32 = 1;
    /// The host sent an RST: closed.
    pub const CLOSED: u32 = 2;

    /// Whether the flow still passes replies at `now_ns` (`bpf_ktime_get_ns`), for an idle
    /// timeout of `timeout_ns` (see [`Config::flow_timeout_ns`]).
    pub const fn passes_replies(&self, timeout_ns: u64, now_ns: u64) -> bool {
        let limit = match self.closing {
            FlowState::OPEN => timeout_ns,
            FlowState::FIN_SEEN if timeout_ns < TCP_CLOSE_LINGER_NS => timeout_ns,
            FlowState::FIN_SEEN => TCP_CLOSE_LINGER_NS,
            _ => return false,
        };
        now_ns.saturating_sub(self.last_seen_ns) <= limit
    }
}

/// The per-CPU packet counters: each variant is an index into [`MAP_COUNTERS`].
#[repr(u32)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Counter {
    /// IP packets whose source matched the allowlist.
    PassedAllowed = 0,
    /// Frames that are not IPv4/IPv6 (ARP, LLDP, ...).
    PassedNotIp = 1,
    /// IPv6 neighbour discovery from a source outside the allowlist, passed by exemption.
    PassedNeighborDiscovery = 2,
    /// IP packets dropped in enforce mode.
    Dropped = 3,
    /// IP packets that enforce mode would have dropped (monitor mode).
    WouldDrop = 4,
    /// IP frames too short to hold the source address (or the ICMPv6 header of ND).
    Malformed = 5,
    /// Replies (and ICMP errors) to flows the host started, from sources outside the allowlist.
    PassedReply = 6,
    /// Packets to ports outside the protected scope, when scopes are set.
    PassedUnprotected = 7,
    /// Flows recorded by the egress program (new entries of the flow map).
    FlowsRecorded = 8,
    /// Packets the policy in force passes and a running preview's candidate would drop.
    PreviewWouldDrop = 9,
    /// Packets the policy in force refuses and a running preview's candidate would pass.
    PreviewWouldPass = 10,
}

impl Counter {
    /// Number of counters per interface slot of [`MAP_COUNTERS`].
    pub const COUNT: u32 = 11;

    /// The index of this counter of interface slot `slot` in [`MAP_COUNTERS`].
    pub const fn index(self, slot: u32) -> u32 {
        slot * Counter::COUNT + self as u32
    }

    /// All counters, in index order.
    pub const ALL: [Counter; Counter::COUNT as usize] = [
        Counter::PassedAllowed,
        Counter::PassedNotIp,
        Counter::PassedNeighborDiscovery,
        Counter::Dropped,
        Counter::WouldDrop,
        Counter::Malformed,
        Counter::PassedReply,
        Counter::PassedUnprotected,
        Counter::FlowsRecorded,
        Counter::PreviewWouldDrop,
        Counter::PreviewWouldPass,
    ];

    /// A stable snake_case name, for logs and metrics.
    pub const fn name(self) -> &'static str {
        match self {
            Counter::PassedAllowed => "passed_allowed",
            Counter::PassedNotIp => "passed_not_ip",
            Counter::PassedNeighborDiscovery => "passed_neighbor_discovery",
            Counter::Dropped => "dropped",
            Counter::WouldDrop => "would_drop",
            Counter::Malformed => "malformed",
            Counter::PassedReply => "passed_reply",
            Counter::PassedUnprotected => "passed_unprotected",
            Counter::FlowsRecorded => "flows_recorded",
            Counter::PreviewWouldDrop => "preview_would_drop",
            Counter::PreviewWouldPass => "preview_would_pass",
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counters_of_a_slot_are_contiguous() {
        assert_eq!(Counter::PassedAllowed.index(0), 0);
        assert_eq!(Counter::PreviewWouldPass.index(0), Counter::COUNT - 1);
        assert_eq!(Counter::Dropped.index(2), 2 * Counter::COUNT + 3);
        let last = Counter::PreviewWouldPass.index(MAX_INTERFACES);
        assert_eq!(
            last + 1,
            (MAX_INTERFACES + 1) * Counter::COUNT,
            "fills the map"
        );
    }

    #[test]
    fn port_bits_are_per_generation_tcp_then_udp() {
        assert_eq!(protected_port_word(0, false, 0), 0);
        assert_eq!(
            protected_port_word(0, false, 65_535),
            PROTECTED_PORT_WORDS / 2 - 1
        );
        assert_eq!(protected_port_word(0, true, 0), PROTECTED_PORT_WORDS / 2);
        assert_eq!(
            protected_port_word(2, true, 65_535),
            3 * PROTECTED_PORT_WORDS - 1
        );
        assert_eq!(protected_port_word(1, false, 64), PROTECTED_PORT_WORDS + 1);
        assert_eq!(protected_port_mask(22), 1 << 22);
        assert_eq!(protected_port_mask(64 + 3), 1 << 3);
    }
}
