//! The values the kernel driver takes and gives: what to enforce, how to attach, what the
//! counters say.

use std::collections::BTreeSet;
use std::fmt;
use std::net::IpAddr;
use std::time::Duration;

use allowlist_common::{Counter, Mode};

use crate::policy::{Policy, PortScope};

/// What the maps have room for, fixed when they are created (see [`super::capacity`] for
/// how the daemon sizes them to the policies in force).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Capacity {
    /// Rule ids (hit counters): the ids below this.
    pub rules: u32,
    /// IPv4 prefixes in one policy (a generation of the IPv4 range table).
    pub v4_prefixes: u32,
    /// IPv6 prefixes in one policy (a generation of the IPv6 range table).
    pub v6_prefixes: u32,
    /// Generations the range tables hold: three, or two when they are large (see
    /// [`super::capacity`]).
    pub generations: u32,
    /// Flows remembered for replies.
    pub flows: u32,
}

/// What the program enforces: a policy, the ports it protects, and the mode.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Enforcement {
    /// The allowed prefixes and their rules.
    pub policy: Policy,
    /// The protected ports; empty: every port is checked.
    pub scopes: BTreeSet<PortScope>,
    /// What happens to packets from sources outside the policy.
    pub mode: Mode,
}

impl Default for Enforcement {
    fn default() -> Self {
        Enforcement {
            policy: Policy::new(),
            scopes: BTreeSet::new(),
            mode: Mode::Off,
        }
    }
}

/// What the kernel enforces under one configuration entry, as read back from its maps.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Enforced {
    /// The SHA-256 digest of the policy its generation holds; `None` when the generation's
    /// record names no policy (a daemon died writing it).
    pub digest: Option<[u8; 32]>,
    /// Prefixes in that policy, both families.
    pub prefixes: u64,
    /// The protected ports; empty: every port is checked.
    pub scopes: BTreeSet<PortScope>,
    /// What happens to packets from sources outside the policy.
    pub mode: Mode,
}

/// What the kernel enforces, as read back from its maps.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KernelState {
    /// The policy in force unless a pending change has passed its deadline.
    pub active: Enforced,
    /// While a change is pending: the policy the program falls back to, and how long until it
    /// does (zero: it already has).
    pub fallback: Option<(Enforced, Duration)>,
}

/// Which of the host's own packets open reply flows. `None` for TCP or UDP: every remote
/// port; a set: only those (empty: none).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReplyOpeners {
    /// The remote TCP ports that open flows, if limited.
    pub tcp: Option<BTreeSet<u16>>,
    /// The remote UDP ports that open flows, if limited.
    pub udp: Option<BTreeSet<u16>>,
    /// Whether the host's pings open flows for their echo replies.
    pub icmp: bool,
}

impl Default for ReplyOpeners {
    /// Every TCP and UDP packet and every ping the host sends.
    fn default() -> Self {
        ReplyOpeners {
            tcp: None,
            udp: None,
            icmp: true,
        }
    }
}

/// Passing replies to the flows the host starts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Replies {
    /// Whether replies pass at all (and the egress program is attached).
    pub enabled: bool,
    /// Idle timeout of TCP flows.
    pub tcp_timeout: Duration,
    /// Idle timeout of UDP flows.
    pub udp_timeout: Duration,
    /// Idle timeout of ICMP echo.
    pub icmp_timeout: Duration,
}

impl Default for Replies {
    fn default() -> Self {
        Replies {
            enabled: true,
            tcp_timeout: Duration::from_secs(3600),
            udp_timeout: Duration::from_secs(30),
            icmp_timeout: Duration::from_secs(30),
        }
    }
}

/// How to attach the XDP program to an interface.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AttachMode {
    /// Native (driver) mode if the driver supports it, otherwise skb (generic) mode.
    Auto,
    /// Native (driver) mode only.
    Native,
    /// Generic (skb) mode only: works on every interface, slower.
    Skb,
}

/// The mode an attachment actually got.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AttachedMode {
    /// Native (driver) mode.
    Native,
    /// Generic (skb) mode.
    Skb,
    /// A link an earlier daemon pinned, now running this program (in the mode it was made in).
    Adopted,
}

impl fmt::Display for AttachedMode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            AttachedMode::Native => "native",
            AttachedMode::Skb => "skb",
            AttachedMode::Adopted => "adopted",
        })
    }
}

/// The packet counters, summed over all CPUs.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Counters(pub(super) [u64; Counter::COUNT as usize]);

impl Counters {
    /// The value of one counter.
    pub fn get(&self, counter: Counter) -> u64 {
        self.0[counter as usize]
    }
}

impl fmt::Display for Counters {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, counter) in Counter::ALL.iter().enumerate() {
            if i > 0 {
                f.write_str(" ")?;
            }
            write!(f, "{}={}", counter.name(), self.get(*counter))?;
        }
        Ok(())
    }
}

/// How full the flow map is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FlowStats {
    /// Flows in the map now.
    pub live: u64,
    /// Flows recorded since load.
    pub recorded: u64,
    /// Flows pushed out by newer ones because the map was full.
    pub evicted: u64,
}

/// How much a rule was used, over all CPUs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RuleUse {
    /// Packets it allowed.
    pub hits: u64,
    /// How long ago it last allowed one (the coarse clock: to a few ms); `None`: never.
    pub last_hit_ago: Option<Duration>,
}

/// A refused source the program noted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SourceNoted {
    /// The source address.
    pub address: IpAddr,
    /// Packets noted (sampled: one refused packet in the sample rate).
    pub noted: u64,
    /// How long ago the last one was noted.
    pub last_seen_ago: Duration,
}

/// What the program did with a frame in a test run.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// `XDP_PASS`.
    Pass,
    /// `XDP_DROP`.
    Drop,
    /// Any other XDP action code (the program returns none).
    Other(u32),
}

/// The result of running the program on one frame in the kernel.
#[derive(Debug, Clone, Copy)]
pub struct FrameRun {
    /// What the program returned.
    pub verdict: Verdict,
    /// Mean time of one run, as measured by the kernel over `repeat` runs.
    pub duration: Duration,
}
