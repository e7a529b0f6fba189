//! The dataplane driver: the only module that talks to the kernel. It loads the XDP program,
//! attaches it to interfaces, writes the policy into the LPM tries, sets the mode and reads
//! the counters.

use std::collections::BTreeSet;
use std::fmt;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::path::{Path, PathBuf};
use std::time::Duration;

use allowlist_common::{
    BENCH_FLOOR_PROGRAM, BENCH_SOURCE_SLOTS, BENCH_VARIED_PROGRAM, Config, Counter,
    EGRESS_PROGRAM_NAME, FlowKey, FlowState, GENERATION_BITS, GENERATIONS,
    INTERFACE_SLOT_IFINDEXES, Ipv4Key, Ipv6Key, LAYOUT_VERSION, MAP_ALLOW_V4, MAP_ALLOW_V6,
    MAP_CLOCK, MAP_CONFIG, MAP_CONFIG_SLOT, MAP_COUNTERS, MAP_FLOWS, MAP_INTERFACE_SLOTS,
    MAP_PROTECTED_PORTS, MAP_RULE_HITS, MAP_TOP_SOURCES, MAX_INTERFACES, Mode, PROGRAM_NAME,
    PROTECTED_PORT_WORDS, RuleId, RuleUsage, SourceKey, SourceSeen, TOP_SOURCES_CAPACITY,
};
use aya::{
    Ebpf, EbpfLoader,
    maps::{
        Array, HashMap, LpmTrie, MapData, MapError, MapType, PerCpuArray, PerCpuValues,
        lpm_trie::Key,
    },
    programs::{
        ProgramError, SchedClassifier, TcAttachType, TestRun, TestRunOptions, Xdp,
        links::{FdLink, PinnedLink},
        tc::SchedClassifierLink,
        xdp::XdpLink,
    },
};
use ipnet::{IpNet, Ipv4Net, Ipv6Net};

use crate::policy::{Policy, PortScope, Transport};

/// The eBPF object built from `allowlist-ebpf` by the build script.
static OBJECT: &[u8] = aya::include_bytes_aligned!(concat!(env!("OUT_DIR"), "/allowlist"));

/// Capacity of each trie and of the rule hit array when the caller does not choose one.
pub const DEFAULT_MAX_RULES: u32 = allowlist_common::DEFAULT_MAX_RULES;

/// [`Config`] as the value type of the config map.
#[repr(transparent)]
#[derive(Clone, Copy)]
struct ConfigValue(Config);

// SAFETY: `Config` is `#[repr(C)]` plain integers without padding; every bit pattern is valid.
unsafe impl aya::Pod for ConfigValue {}

/// [`SourceKey`] as a map key.
#[repr(transparent)]
#[derive(Clone, Copy)]
struct SourceKeyValue(SourceKey);

// SAFETY: `#[repr(C)]` bytes without padding.
unsafe impl aya::Pod for SourceKeyValue {}

/// [`SourceSeen`] as a map value.
#[repr(transparent)]
#[derive(Clone, Copy)]
struct SourceSeenValue(SourceSeen);

// SAFETY: `#[repr(C)]` integers without padding.
unsafe impl aya::Pod for SourceSeenValue {}

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

/// [`RuleUsage`] as a map value.
#[repr(transparent)]
#[derive(Clone, Copy, Default)]
struct RuleUsageValue(RuleUsage);

// SAFETY: `#[repr(C)]` integers without padding.
unsafe impl aya::Pod for RuleUsageValue {}

/// How much a rule was used, over all CPUs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RuleUse {
    /// Packets it allowed.
    pub hits: u64,
    /// How long ago it last allowed one (the coarse clock: to a few ms); `None`: never.
    pub last_hit_ago: Option<Duration>,
}

/// [`FlowKey`] as a map key.
#[repr(transparent)]
#[derive(Clone, Copy)]
struct FlowKeyValue(FlowKey);

// SAFETY: `#[repr(C)]` byte arrays and integers without padding.
unsafe impl aya::Pod for FlowKeyValue {}

/// [`FlowState`] as a map value.
#[repr(transparent)]
#[derive(Clone, Copy)]
struct FlowStateValue(FlowState);

// SAFETY: `#[repr(C)]` integers without padding.
unsafe impl aya::Pod for FlowStateValue {}

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

/// How to attach the program to an interface.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum XdpMode {
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
    pub duration: std::time::Duration,
}

/// The packet counters, summed over all CPUs.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Counters([u64; Counter::COUNT as usize]);

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

/// Errors of the dataplane.
#[derive(Debug, thiserror::Error)]
pub enum DataplaneError {
    /// The kernel refused the object (maps or program).
    #[error("loading the eBPF object into the kernel")]
    Load(#[source] aya::EbpfError),
    /// The embedded object lacks a map or program this driver needs.
    #[error("the eBPF object has no {0}")]
    Missing(&'static str),
    /// A map operation failed.
    #[error("BPF map {name}")]
    Map {
        /// The map.
        name: &'static str,
        /// What failed.
        #[source]
        source: MapError,
    },
    /// Loading or running the program failed.
    #[error("XDP program")]
    Program(#[source] ProgramError),
    /// Attaching to an interface failed.
    #[error("attaching to {interface} in {mode:?} mode")]
    Attach {
        /// The interface.
        interface: String,
        /// The mode asked for.
        mode: XdpMode,
        /// What failed (for auto mode: the skb attempt).
        #[source]
        source: ProgramError,
    },
    /// Attaching the egress program to an interface failed.
    #[error("attaching the egress flow recorder to {interface}")]
    AttachEgress {
        /// The interface.
        interface: String,
        /// What failed.
        #[source]
        source: ProgramError,
    },
    /// The kernel gave a link that cannot be pinned (XDP and TCX links need Linux 6.6).
    #[error("the kernel attached to {0} without a BPF link; pinning needs Linux 6.6 or later")]
    LinkKind(String),
    /// A pin could not be made, read or removed.
    #[error("{action} {path}")]
    Pin {
        /// What was being done.
        action: &'static str,
        /// The pin or directory.
        path: PathBuf,
        /// What failed.
        #[source]
        source: std::io::Error,
    },
    /// The BPF file system is missing and could not be mounted.
    #[error("the BPF file system at {path}")]
    Bpffs {
        /// Where it was expected.
        path: PathBuf,
        /// What failed.
        #[source]
        source: std::io::Error,
    },
    /// Every policy generation is in use (a bug: there is always one free).
    #[error("no free policy generation")]
    NoFreeGeneration,
    /// The possible CPUs could not be read.
    #[error("reading the possible CPUs")]
    Cpus(#[source] std::io::Error),
    /// A rule id does not fit the rule hit array.
    #[error("rule id {rule} is beyond the capacity of {capacity} rules")]
    RuleOutOfRange {
        /// The rule id.
        rule: RuleId,
        /// The capacity chosen at load.
        capacity: u32,
    },
    /// Old and new prefixes of one family do not fit side by side.
    #[error(
        "the change needs room for {needed} IPv{family} prefixes at once (old and new side by \
         side), but the capacity is {capacity}; raise the maximum number of rules"
    )]
    CapacityExceeded {
        /// 4 or 6.
        family: u8,
        /// Prefixes of that family in the kernel once the additions are made.
        needed: usize,
        /// The capacity chosen at load.
        capacity: u32,
    },
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

/// What the kernel enforces, as read back from its maps.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KernelState {
    /// The policy in force unless a pending change has passed its deadline.
    pub active: Enforcement,
    /// While a change is pending: the policy the program falls back to, and how long until it
    /// does (zero: it already has).
    pub fallback: Option<(Enforcement, Duration)>,
}

/// One generation of the tries and port bitmaps, as written to the kernel.
#[derive(Debug, Clone, Default)]
struct Generation {
    policy: Policy,
    scopes: BTreeSet<PortScope>,
}

/// One attachment of the program to an interface.
#[derive(Debug)]
pub struct Attachment {
    /// The interface name.
    pub interface: String,
    /// The mode the attachment got.
    pub mode: AttachedMode,
    /// The XDP link; pinned links outlive this handle.
    _link: FdLink,
    /// The egress link, when replies pass.
    _egress: Option<FdLink>,
}

/// The loaded program and its maps.
pub struct Dataplane {
    ebpf: Ebpf,
    config: Array<MapData, ConfigValue>,
    config_slot: Array<MapData, u32>,
    allow_v4: LpmTrie<MapData, Ipv4Key, RuleId>,
    allow_v6: LpmTrie<MapData, Ipv6Key, RuleId>,
    counters: PerCpuArray<MapData, u64>,
    interface_slots: Array<MapData, u32>,
    clock: Array<MapData, u64>,
    /// Interfaces with their own counter slot, and the slot.
    slots: Vec<(String, u32)>,
    top_sources: HashMap<MapData, SourceKeyValue, SourceSeenValue>,
    rule_hits: PerCpuArray<MapData, RuleUsageValue>,
    protected_ports: Array<MapData, u64>,
    port_words: Vec<u64>,
    flows: HashMap<MapData, FlowKeyValue, FlowStateValue>,
    generations: Vec<Generation>,
    slot: u32,
    current: Config,
    max_rules: u32,
    pins: Option<Pins>,
    attachments: Vec<Attachment>,
}

/// Where the maps and links are pinned.
struct Pins {
    /// The directory of this layout version.
    dir: PathBuf,
    /// Directories of other layout versions, whose links are taken over and then removed.
    stale: Vec<PathBuf>,
}

/// Prefixes a trie holds: [`GENERATIONS`] policies of up to `max_rules` prefixes each.
fn trie_capacity(max_rules: u32) -> u32 {
    max_rules.saturating_mul(GENERATIONS)
}

impl Dataplane {
    /// Loads the programs and creates their own maps, not pinned, with room for `max_rules`
    /// prefixes per address family and policy and `max_flows` recorded flows. The program
    /// starts in [`Mode::Off`] with an empty policy, replies passed with the default timeouts,
    /// no scopes, and is not attached; it is detached when dropped.
    pub fn load(max_rules: u32, max_flows: u32) -> Result<Self, DataplaneError> {
        let mut dataplane = Self::load_with(None, max_rules, max_flows, false)?;
        dataplane.set_replies(Replies::default())?;
        dataplane.tick_clock()?;
        Ok(dataplane)
    }

    /// As [`Dataplane::load`], with the benchmark's programs loaded too (see
    /// [`Dataplane::bench_floor`] and [`Dataplane::bench_varied`]).
    pub fn load_for_bench(max_rules: u32) -> Result<Self, DataplaneError> {
        let mut dataplane = Self::load_with(None, max_rules, 1024, true)?;
        dataplane.set_replies(Replies::default())?;
        for name in [BENCH_FLOOR_PROGRAM, BENCH_VARIED_PROGRAM] {
            program_mut::<Xdp>(&mut dataplane.ebpf, name)?
                .load()
                .map_err(DataplaneError::Program)?;
        }
        Ok(dataplane)
    }

    /// Runs the drop-only program on `frame` `repeat` times: the kernel's mean time per run.
    pub fn bench_floor(&self, frame: &[u8], repeat: u32) -> Result<Duration, DataplaneError> {
        Ok(program::<Xdp>(&self.ebpf, BENCH_FLOOR_PROGRAM)?
            .test_run(test_run_options(frame, repeat))
            .map_err(DataplaneError::Program)?
            .duration)
    }

    /// Copies the host routes (/32, /128) of the policy in force into the benchmark's
    /// exact-match hashes, for [`Dataplane::bench_varied`] with `front`.
    pub fn bench_host_routes(&mut self) -> Result<(), DataplaneError> {
        let generation = self.current.active.generation as u8;
        let hosts: Vec<(IpNet, RuleId)> = self
            .installed()
            .iter()
            .filter(|(net, _)| net.prefix_len() == net.max_prefix_len())
            .map(|(net, rule)| (*net, *rule))
            .collect();
        let mut v4: aya::maps::HashMap<_, [u8; 5], RuleId> =
            bench_map(&mut self.ebpf, "BENCH_HOSTS_V4")?;
        for (net, rule) in &hosts {
            if let IpNet::V4(net) = net {
                let [a, b, c, d] = net.addr().octets();
                v4.insert([generation, a, b, c, d], rule, 0)
                    .map_err(bench_map_error("BENCH_HOSTS_V4"))?;
            }
        }
        let mut v6: aya::maps::HashMap<_, [u8; 17], RuleId> =
            bench_map(&mut self.ebpf, "BENCH_HOSTS_V6")?;
        for (net, rule) in &hosts {
            if let IpNet::V6(net) = net {
                let mut key = [generation; 17];
                key[1..].copy_from_slice(&net.addr().octets());
                v6.insert(key, rule, 0)
                    .map_err(bench_map_error("BENCH_HOSTS_V6"))?;
            }
        }
        Ok(())
    }

    /// Fills the table [`Dataplane::bench_varied`] draws its sources from with `sources`
    /// (all of one family, repeated to fill it).
    pub fn bench_sources(&mut self, sources: &[IpAddr]) -> Result<(), DataplaneError> {
        let mut slots: Array<_, [u8; 16]> = bench_map(&mut self.ebpf, "BENCH_SOURCES")?;
        for (slot, source) in (0..BENCH_SOURCE_SLOTS).zip(sources.iter().cycle()) {
            let mut bytes = [0u8; 16];
            match source {
                IpAddr::V4(v4) => bytes[..4].copy_from_slice(&v4.octets()),
                IpAddr::V6(v6) => bytes = v6.octets(),
            }
            slots
                .set(slot, bytes, 0)
                .map_err(bench_map_error("BENCH_SOURCES"))?;
        }
        let family = match sources.first() {
            Some(IpAddr::V6(_)) => 6,
            _ => 4,
        };
        self.bench_setup(0, family)
    }

    /// Runs the varied-source program `repeat` times: each run looks up (or, without
    /// `lookups`, only draws) [`allowlist_common::BENCH_LOOPS`] sources drawn at random from
    /// those [`Dataplane::bench_sources`] set, in the policy in force, first in the host-route
    /// hashes when `front`. Returns the kernel's mean time per run and how many sources of the
    /// last run the policy allowed.
    pub fn bench_varied(
        &mut self,
        lookups: bool,
        front: bool,
        repeat: u32,
    ) -> Result<(Duration, u64), DataplaneError> {
        self.bench_setup(1, u32::from(lookups))?;
        self.bench_setup(2, u32::from(front))?;
        let frame = [0u8; 64];
        let duration = program::<Xdp>(&self.ebpf, BENCH_VARIED_PROGRAM)?
            .test_run(test_run_options(&frame, repeat))
            .map_err(DataplaneError::Program)?
            .duration;
        let found: Array<_, u64> = bench_map(&mut self.ebpf, "BENCH_FOUND")?;
        let found = found.get(&0, 0).map_err(bench_map_error("BENCH_FOUND"))?;
        Ok((duration, found))
    }

    /// Sets entry `index` of the benchmark's setup array.
    fn bench_setup(&mut self, index: u32, value: u32) -> Result<(), DataplaneError> {
        let mut setup: Array<_, u32> = bench_map(&mut self.ebpf, "BENCH_SETUP")?;
        setup
            .set(index, value, 0)
            .map_err(bench_map_error("BENCH_SETUP"))
    }

    /// Loads the programs with their maps pinned under `<pin_root>/v<LAYOUT_VERSION>`
    /// (mounting bpffs at `/sys/fs/bpf` if it is missing). Maps pinned there by an earlier
    /// daemon are reused, policy, counters and flows included, when their layout matches;
    /// otherwise they are replaced, with a log line saying why. Links pinned there (or under
    /// another layout version) are taken over by [`Dataplane::attach`] without a gap.
    pub fn open(pin_root: &Path, max_rules: u32, max_flows: u32) -> Result<Self, DataplaneError> {
        mount_bpffs_if_missing(pin_root)?;
        let dir = pin_root.join(format!("v{LAYOUT_VERSION}"));
        std::fs::create_dir_all(&dir).map_err(|source| DataplaneError::Pin {
            action: "creating",
            path: dir.clone(),
            source,
        })?;
        let mut stale = Vec::new();
        for entry in read_dir(pin_root)? {
            if entry != dir {
                tracing::warn!(
                    path = %entry.display(),
                    "pins of another layout version: not reused; their links are taken over \
                     and the pins removed"
                );
                stale.push(entry);
            }
        }
        if let Some(problem) = incompatible_pins(&dir, max_rules, max_flows)? {
            tracing::warn!(
                path = %dir.display(),
                problem,
                "pinned maps do not fit this configuration: replacing them (policy rewritten from \
                 the state on disk, counters and flows start over)"
            );
            for name in MAP_NAMES {
                remove_pin(&dir.join(name))?;
            }
        }
        let mut dataplane =
            Self::load_with(Some(Pins { dir, stale }), max_rules, max_flows, false)?;
        dataplane.read_kernel()?;
        dataplane.tick_clock()?;
        Ok(dataplane)
    }

    fn load_with(
        pins: Option<Pins>,
        max_rules: u32,
        max_flows: u32,
        bench: bool,
    ) -> Result<Self, DataplaneError> {
        let mut loader = EbpfLoader::new();
        if bench {
            loader
                .map_max_entries("BENCH_HOSTS_V4", max_rules.max(1))
                .map_max_entries("BENCH_HOSTS_V6", max_rules.max(1));
        } else {
            // The benchmark's tables are preallocated: none of that memory in the daemon.
            loader
                .map_max_entries("BENCH_SOURCES", 1)
                .map_max_entries("BENCH_HOSTS_V4", 1)
                .map_max_entries("BENCH_HOSTS_V6", 1);
        }
        loader
            .map_max_entries(MAP_ALLOW_V4, trie_capacity(max_rules))
            .map_max_entries(MAP_ALLOW_V6, trie_capacity(max_rules))
            .map_max_entries(MAP_RULE_HITS, max_rules)
            .map_max_entries(MAP_FLOWS, max_flows);
        if let Some(pins) = &pins {
            for name in MAP_NAMES {
                loader.map_pin_path(name, pins.dir.join(name));
            }
        }
        let mut ebpf = loader.load(OBJECT).map_err(DataplaneError::Load)?;
        program_mut::<Xdp>(&mut ebpf, PROGRAM_NAME)?
            .load()
            .map_err(DataplaneError::Program)?;
        program_mut::<SchedClassifier>(&mut ebpf, EGRESS_PROGRAM_NAME)?
            .load()
            .map_err(DataplaneError::Program)?;
        Ok(Self {
            protected_ports: take_map(&mut ebpf, MAP_PROTECTED_PORTS)?,
            port_words: vec![0; (GENERATIONS * PROTECTED_PORT_WORDS) as usize],
            flows: take_map(&mut ebpf, MAP_FLOWS)?,
            config: take_map(&mut ebpf, MAP_CONFIG)?,
            config_slot: take_map(&mut ebpf, MAP_CONFIG_SLOT)?,
            allow_v4: take_map(&mut ebpf, MAP_ALLOW_V4)?,
            allow_v6: take_map(&mut ebpf, MAP_ALLOW_V6)?,
            counters: take_map(&mut ebpf, MAP_COUNTERS)?,
            interface_slots: take_map(&mut ebpf, MAP_INTERFACE_SLOTS)?,
            clock: take_map(&mut ebpf, MAP_CLOCK)?,
            slots: Vec::new(),
            top_sources: take_map(&mut ebpf, MAP_TOP_SOURCES)?,
            rule_hits: take_map(&mut ebpf, MAP_RULE_HITS)?,
            ebpf,
            generations: vec![Generation::default(); GENERATIONS as usize],
            slot: 0,
            current: Config::default(),
            max_rules,
            pins,
            attachments: Vec::new(),
        })
    }

    /// Reads what pinned maps hold: the configuration in use, every generation's prefixes
    /// and port bitmap. Keys that fit no generation are removed.
    fn read_kernel(&mut self) -> Result<(), DataplaneError> {
        let map_err = |name| move |source| DataplaneError::Map { name, source };
        self.slot = self
            .config_slot
            .get(&0, 0)
            .map_err(map_err(MAP_CONFIG_SLOT))?
            & 1;
        self.current = self
            .config
            .get(&self.slot, 0)
            .map_err(map_err(MAP_CONFIG))?
            .0;
        let mut strays4 = Vec::new();
        for item in self.allow_v4.iter() {
            let (key, rule) = item.map_err(map_err(MAP_ALLOW_V4))?;
            let [generation, a, b, c, d] = key.data();
            let net = key
                .prefix_len()
                .checked_sub(GENERATION_BITS)
                .and_then(|len| Ipv4Net::new(Ipv4Addr::new(a, b, c, d), len as u8).ok());
            match (net, self.generations.get_mut(usize::from(generation))) {
                (Some(net), Some(slot)) => {
                    slot.policy.insert(IpNet::V4(net), rule);
                }
                _ => strays4.push(key),
            }
        }
        let mut strays6 = Vec::new();
        for item in self.allow_v6.iter() {
            let (key, rule) = item.map_err(map_err(MAP_ALLOW_V6))?;
            let data = key.data();
            let mut octets = [0u8; 16];
            octets.copy_from_slice(&data[1..]);
            let net = key
                .prefix_len()
                .checked_sub(GENERATION_BITS)
                .and_then(|len| Ipv6Net::new(Ipv6Addr::from(octets), len as u8).ok());
            match (net, self.generations.get_mut(usize::from(data[0]))) {
                (Some(net), Some(slot)) => {
                    slot.policy.insert(IpNet::V6(net), rule);
                }
                _ => strays6.push(key),
            }
        }
        for key in strays4 {
            self.allow_v4.remove(&key).map_err(map_err(MAP_ALLOW_V4))?;
        }
        for key in strays6 {
            self.allow_v6.remove(&key).map_err(map_err(MAP_ALLOW_V6))?;
        }
        for (index, word) in (0u32..).zip(self.port_words.iter_mut()) {
            *word = self
                .protected_ports
                .get(&index, 0)
                .map_err(map_err(MAP_PROTECTED_PORTS))?;
        }
        for (generation, words) in self
            .generations
            .iter_mut()
            .zip(self.port_words.chunks(PROTECTED_PORT_WORDS as usize))
        {
            generation.scopes = scopes_of(words);
        }
        Ok(())
    }

    /// Attaches the XDP program to `interface` and, when replies pass, the egress program
    /// that records the host's flows. A link pinned by an earlier daemon is taken over: the
    /// interface switches to this program in one step. Otherwise, in [`XdpMode::Auto`], native
    /// mode is tried first, then skb mode.
    pub fn attach(
        &mut self,
        interface: &str,
        mode: XdpMode,
    ) -> Result<AttachedMode, DataplaneError> {
        let xdp_pin = format!("xdp_{interface}");
        let (link, attached) = match self.adopt::<Xdp, XdpLink>(PROGRAM_NAME, &xdp_pin)? {
            Some(link) => (link, AttachedMode::Adopted),
            None => {
                let (link, attached) = self.attach_xdp(interface, mode)?;
                (self.pin_link(link, &xdp_pin)?, attached)
            }
        };
        let egress_pin = format!("egress_{interface}");
        let egress = if self.current.replies != 0 {
            let link = match self
                .adopt::<SchedClassifier, SchedClassifierLink>(EGRESS_PROGRAM_NAME, &egress_pin)?
            {
                Some(link) => link,
                None => match self.attach_egress(interface) {
                    Ok(link) => self.pin_link(link, &egress_pin)?,
                    Err(err) => {
                        if attached != AttachedMode::Adopted {
                            self.unpin_link(&xdp_pin)?;
                        }
                        return Err(err);
                    }
                },
            };
            Some(link)
        } else {
            self.unpin_link(&egress_pin)?;
            None
        };
        self.assign_slot(interface)?;
        self.attachments.push(Attachment {
            interface: interface.to_owned(),
            mode: attached,
            _link: link,
            _egress: egress,
        });
        Ok(attached)
    }

    /// Detaches from every interface not in `interfaces` that an earlier daemon attached to,
    /// and removes pins of other layout versions. Call after [`Dataplane::attach`]ing to every
    /// configured interface.
    pub fn release_others(&mut self, interfaces: &[String]) -> Result<(), DataplaneError> {
        let Some(pins) = &self.pins else {
            return Ok(());
        };
        for path in read_dir(&pins.dir)? {
            let Some(name) = path.file_name().and_then(|name| name.to_str()) else {
                continue;
            };
            let interface = name
                .strip_prefix("xdp_")
                .or_else(|| name.strip_prefix("egress_"));
            if let Some(interface) = interface
                && !interfaces.iter().any(|configured| configured == interface)
            {
                tracing::warn!(interface, pin = %path.display(), "no longer configured: detached");
                remove_pin(&path)?;
            }
        }
        for dir in &pins.stale {
            tracing::warn!(path = %dir.display(), "removed the pins of another layout version");
            std::fs::remove_dir_all(dir).map_err(|source| DataplaneError::Pin {
                action: "removing",
                path: dir.clone(),
                source,
            })?;
        }
        Ok(())
    }

    /// Takes over the link pinned as `file` (in this layout's directory, else in another's),
    /// pointing it at this object's program `program`; `None` when there is none or it is
    /// defunct (its pin is then removed).
    fn adopt<P, L>(
        &mut self,
        program: &'static str,
        file: &str,
    ) -> Result<Option<FdLink>, DataplaneError>
    where
        P: LinkOwner<L>,
        L: TryFrom<FdLink, Error = aya::programs::links::LinkError>,
        for<'a> &'a mut P: TryFrom<&'a mut aya::programs::Program, Error = ProgramError>,
    {
        let Some(pins) = &self.pins else {
            return Ok(None);
        };
        let candidates: Vec<PathBuf> = std::iter::once(&pins.dir)
            .chain(&pins.stale)
            .map(|dir| dir.join(file))
            .filter(|path| path.exists())
            .collect();
        let own = pins.dir.join(file);
        for path in candidates {
            let adopted = PinnedLink::from_pin(&path)
                .map_err(std::io::Error::other)
                .and_then(|pinned| {
                    let link = L::try_from(FdLink::from(pinned)).map_err(std::io::Error::other)?;
                    let program =
                        program_mut::<P>(&mut self.ebpf, program).map_err(std::io::Error::other)?;
                    P::take_over(program, link).map_err(std::io::Error::other)
                });
            match adopted {
                Ok(link) => {
                    if path != own {
                        let pinned = link.pin(&own).map_err(|err| DataplaneError::Pin {
                            action: "pinning",
                            path: own.clone(),
                            source: std::io::Error::other(err),
                        })?;
                        remove_pin(&path)?;
                        return Ok(Some(FdLink::from(pinned)));
                    }
                    return Ok(Some(link));
                }
                Err(err) => {
                    tracing::warn!(
                        pin = %path.display(),
                        error = %err,
                        "a pinned link could not be taken over (its interface may be gone): removed"
                    );
                    remove_pin(&path)?;
                }
            }
        }
        Ok(None)
    }

    /// Pins `link` as `file` when pinning; returns it either way.
    fn pin_link(&self, link: FdLink, file: &str) -> Result<FdLink, DataplaneError> {
        let Some(pins) = &self.pins else {
            return Ok(link);
        };
        let path = pins.dir.join(file);
        link.pin(&path)
            .map(FdLink::from)
            .map_err(|err| DataplaneError::Pin {
                action: "pinning",
                path,
                source: std::io::Error::other(err),
            })
    }

    /// Removes the pin `file` of this layout, if any: the link goes when nothing holds it.
    fn unpin_link(&self, file: &str) -> Result<(), DataplaneError> {
        match &self.pins {
            Some(pins) => remove_pin(&pins.dir.join(file)),
            None => Ok(()),
        }
    }

    fn attach_egress(&mut self, interface: &str) -> Result<FdLink, DataplaneError> {
        let tcx = aya::util::KernelVersion::current()
            .is_ok_and(|kernel| kernel >= aya::util::KernelVersion::new(6, 6, 0));
        if !tcx {
            // Before TCX, TC programs hang off a clsact qdisc; it may exist already.
            let _ = aya::programs::tc::qdisc_add_clsact(interface);
        }
        let program = program_mut::<SchedClassifier>(&mut self.ebpf, EGRESS_PROGRAM_NAME)?;
        let attach_error = |source| DataplaneError::AttachEgress {
            interface: interface.to_owned(),
            source,
        };
        let id = program
            .attach(interface, TcAttachType::Egress)
            .map_err(attach_error)?;
        let link = program.take_link(id).map_err(attach_error)?;
        FdLink::try_from(link).map_err(|_| DataplaneError::LinkKind(interface.to_owned()))
    }

    fn attach_xdp(
        &mut self,
        interface: &str,
        mode: XdpMode,
    ) -> Result<(FdLink, AttachedMode), DataplaneError> {
        let attempts: &[AttachedMode] = match mode {
            XdpMode::Auto => &[AttachedMode::Native, AttachedMode::Skb],
            XdpMode::Native => &[AttachedMode::Native],
            XdpMode::Skb => &[AttachedMode::Skb],
        };
        let program = program_mut::<Xdp>(&mut self.ebpf, PROGRAM_NAME)?;
        let mut failure = None;
        for &attempt in attempts {
            let flags = match attempt {
                AttachedMode::Skb => aya::programs::XdpMode::Skb,
                _ => aya::programs::XdpMode::Driver,
            };
            match program.attach(interface, flags) {
                Ok(id) => {
                    let link = program.take_link(id).map_err(DataplaneError::Program)?;
                    let link = FdLink::try_from(link)
                        .map_err(|_| DataplaneError::LinkKind(interface.to_owned()))?;
                    return Ok((link, attempt));
                }
                Err(err @ ProgramError::UnknownInterface { .. }) => {
                    failure = Some(err);
                    break;
                }
                Err(err) => {
                    if mode == XdpMode::Auto && attempt == AttachedMode::Native {
                        tracing::info!(
                            interface,
                            error = %err,
                            "native XDP unavailable, falling back to skb mode"
                        );
                    }
                    failure = Some(err);
                }
            }
        }
        Err(DataplaneError::Attach {
            interface: interface.to_owned(),
            mode,
            source: failure.unwrap_or(ProgramError::NotAttached),
        })
    }

    /// The current attachments.
    pub fn attachments(&self) -> &[Attachment] {
        &self.attachments
    }

    /// Removes everything pinned under `pin_root` (every layout version): the links go, so
    /// the programs are detached from their interfaces, and the maps with them. Returns the
    /// paths removed. Run it with the daemon stopped: a running daemon still holds its links.
    pub fn teardown(pin_root: &Path) -> Result<Vec<PathBuf>, DataplaneError> {
        if !pin_root.exists() {
            return Ok(Vec::new());
        }
        let mut removed = Vec::new();
        for dir in read_dir(pin_root)? {
            removed.extend(read_dir(&dir).unwrap_or_default());
        }
        std::fs::remove_dir_all(pin_root).map_err(|source| DataplaneError::Pin {
            action: "removing",
            path: pin_root.to_owned(),
            source,
        })?;
        Ok(removed)
    }

    /// What the kernel enforces now.
    pub fn kernel_state(&self) -> KernelState {
        let active = self.enforcement(&self.current.active);
        let fallback = (self.current.revert_at_ns != 0).then(|| {
            let remaining = self.current.revert_at_ns.saturating_sub(monotonic_now_ns());
            (
                self.enforcement(&self.current.fallback),
                Duration::from_nanos(remaining),
            )
        });
        KernelState { active, fallback }
    }

    /// Whether a pending change's deadline has passed in the kernel's clock: the program
    /// enforces the fallback now.
    pub fn fell_back(&self) -> bool {
        self.current.revert_at_ns != 0 && monotonic_now_ns() >= self.current.revert_at_ns
    }

    fn enforcement(&self, raw: &allowlist_common::Enforcement) -> Enforcement {
        let generation = self
            .generations
            .get(raw.generation as usize)
            .cloned()
            .unwrap_or_default();
        Enforcement {
            policy: generation.policy,
            scopes: if raw.scoped != 0 {
                generation.scopes
            } else {
                BTreeSet::new()
            },
            mode: Mode::from_raw(raw.mode),
        }
    }

    /// Makes the kernel enforce `active` and, when `fallback` is given, fall back by itself to
    /// its policy once its delay has passed. Every policy is written completely into a
    /// generation no packet uses, then one write switches every CPU to the new configuration:
    /// no packet sees a half-written policy. On error the kernel still enforces what it did.
    pub fn install(
        &mut self,
        active: &Enforcement,
        fallback: Option<(&Enforcement, Duration)>,
    ) -> Result<(), DataplaneError> {
        self.check_fits(&active.policy)?;
        let Some((fallback, delay)) = fallback else {
            let generation = self.place(active, None)?;
            return self.switch(Config {
                active: raw_enforcement(generation, active),
                fallback: allowlist_common::Enforcement::default(),
                revert_at_ns: 0,
                ..self.current
            });
        };
        self.check_fits(&fallback.policy)?;
        let deadline = monotonic_now_ns()
            .saturating_add(u64::try_from(delay.as_nanos()).unwrap_or(u64::MAX))
            .max(1);
        let back = self.place(fallback, None)?;
        let front = match self.place(active, Some(back)) {
            Err(DataplaneError::NoFreeGeneration) => {
                // The two generations in force are both needed until the new fallback is: switch
                // to it first (same active policy), which frees the old one.
                self.switch(Config {
                    fallback: raw_enforcement(back, fallback),
                    revert_at_ns: deadline,
                    ..self.current
                })?;
                self.place(active, Some(back))?
            }
            other => other?,
        };
        self.switch(Config {
            active: raw_enforcement(front, active),
            fallback: raw_enforcement(back, fallback),
            revert_at_ns: deadline,
            ..self.current
        })
    }

    /// A generation holding `want`: one that already does, else the free generation (not
    /// in force, not `keep`) needing the fewest writes, written now.
    fn place(&mut self, want: &Enforcement, keep: Option<u32>) -> Result<u32, DataplaneError> {
        let scopes = if want.scopes.is_empty() {
            None
        } else {
            Some(&want.scopes)
        };
        let holds = |generation: &Generation| {
            generation.policy == want.policy
                && scopes.is_none_or(|scopes| &generation.scopes == scopes)
        };
        if let Some(found) = (0u32..).zip(&self.generations).find(|(_, g)| holds(g)) {
            return Ok(found.0);
        }
        let in_force = self.generations_in_force();
        let (generation, diff) = (0..GENERATIONS)
            .filter(|g| !in_force.contains(g) && Some(*g) != keep)
            .map(|g| (g, self.generations[g as usize].policy.diff(&want.policy)))
            .min_by_key(|(_, diff)| diff.upserts.len() + diff.removals.len())
            .ok_or(DataplaneError::NoFreeGeneration)?;
        // No packet uses this generation: removals first keep the trie within its capacity.
        for net in diff.removals {
            self.write_prefix(generation, net, None)?;
            self.generations[generation as usize].policy.remove(&net);
        }
        for (net, rule) in diff.upserts {
            self.write_prefix(generation, net, Some(rule))?;
            let policy = &mut self.generations[generation as usize].policy;
            policy.remove(&net);
            policy.insert(net, rule);
        }
        if let Some(scopes) = scopes {
            self.write_scopes(generation, scopes)?;
        }
        Ok(generation)
    }

    /// The generations the program may read now.
    fn generations_in_force(&self) -> Vec<u32> {
        let mut used = vec![self.current.active.generation];
        if self.current.revert_at_ns != 0 {
            used.push(self.current.fallback.generation);
        }
        used
    }

    /// Refuses a policy that does not fit one generation.
    fn check_fits(&self, policy: &Policy) -> Result<(), DataplaneError> {
        if let Some((_, rule)) = policy.iter().find(|(_, rule)| **rule >= self.max_rules) {
            return Err(DataplaneError::RuleOutOfRange {
                rule: *rule,
                capacity: self.max_rules,
            });
        }
        let (v4, v6) = policy.len_by_family();
        for (family, needed) in [(4, v4), (6, v6)] {
            if needed > self.max_rules as usize {
                return Err(DataplaneError::CapacityExceeded {
                    family,
                    needed,
                    capacity: self.max_rules,
                });
            }
        }
        Ok(())
    }

    /// Writes `config` into the slot not in use, then switches to it: the one write after
    /// which every CPU reads the new configuration.
    fn switch(&mut self, config: Config) -> Result<(), DataplaneError> {
        if config == self.current {
            return Ok(());
        }
        let next = self.slot ^ 1;
        self.config
            .set(next, ConfigValue(config), 0)
            .map_err(|source| DataplaneError::Map {
                name: MAP_CONFIG,
                source,
            })?;
        self.config_slot
            .set(0, next, 0)
            .map_err(|source| DataplaneError::Map {
                name: MAP_CONFIG_SLOT,
                source,
            })?;
        self.slot = next;
        self.current = config;
        Ok(())
    }

    /// The policy in force (without a pending fallback), for callers that set one part of it.
    fn active(&self) -> Enforcement {
        self.enforcement(&self.current.active)
    }

    /// Makes `policy` the policy in force, keeping mode and scopes; clears a pending fallback.
    pub fn apply(&mut self, policy: &Policy) -> Result<(), DataplaneError> {
        let enforcement = Enforcement {
            policy: policy.clone(),
            ..self.active()
        };
        self.install(&enforcement, None)
    }

    /// Sets what the program does with packets from sources outside the policy; clears a
    /// pending fallback.
    pub fn set_mode(&mut self, mode: Mode) -> Result<(), DataplaneError> {
        let enforcement = Enforcement {
            mode,
            ..self.active()
        };
        self.install(&enforcement, None)
    }

    /// Limits the check to packets to these local ports (and what could hide a port); an
    /// empty set checks every packet. Clears a pending fallback.
    pub fn set_scopes(&mut self, scopes: &BTreeSet<PortScope>) -> Result<(), DataplaneError> {
        let enforcement = Enforcement {
            scopes: scopes.clone(),
            ..self.active()
        };
        self.install(&enforcement, None)
    }

    /// Sets whether and how long replies to the host's own flows pass. Takes effect at once
    /// for the check; the egress program is attached (or not) by [`Dataplane::attach`].
    pub fn set_replies(&mut self, replies: Replies) -> Result<(), DataplaneError> {
        let nanos = |d: Duration| u64::try_from(d.as_nanos()).unwrap_or(u64::MAX);
        self.switch(Config {
            replies: u32::from(replies.enabled),
            tcp_timeout_ns: nanos(replies.tcp_timeout),
            udp_timeout_ns: nanos(replies.udp_timeout),
            icmp_timeout_ns: nanos(replies.icmp_timeout),
            ..self.current
        })
    }

    /// Writes `generation`'s port bitmap.
    fn write_scopes(
        &mut self,
        generation: u32,
        scopes: &BTreeSet<PortScope>,
    ) -> Result<(), DataplaneError> {
        let mut words = vec![0u64; PROTECTED_PORT_WORDS as usize];
        for scope in scopes {
            let half = match scope.transport {
                Transport::Tcp => 0,
                Transport::Udp => PROTECTED_PORT_WORDS as usize / 2,
            };
            words[half + usize::from(scope.port / 64)] |= 1 << (scope.port % 64);
        }
        let base = generation * PROTECTED_PORT_WORDS;
        for (index, word) in (base..).zip(&words) {
            if self.port_words[index as usize] != *word {
                self.protected_ports
                    .set(index, word, 0)
                    .map_err(|source| DataplaneError::Map {
                        name: MAP_PROTECTED_PORTS,
                        source,
                    })?;
                self.port_words[index as usize] = *word;
            }
        }
        self.generations[generation as usize].scopes = scopes.clone();
        Ok(())
    }

    /// How full the flow map is.
    pub fn flow_stats(&self) -> Result<FlowStats, DataplaneError> {
        let live = self.flows.keys().filter(Result::is_ok).count() as u64;
        let mut recorded = 0u64;
        for slot in 0..=MAX_INTERFACES {
            let index = slot * Counter::COUNT + Counter::FlowsRecorded as u32;
            recorded = recorded.wrapping_add(sum_per_cpu(&self.counters, MAP_COUNTERS, index)?);
        }
        Ok(FlowStats {
            live,
            recorded,
            evicted: recorded.saturating_sub(live),
        })
    }

    /// The policy in force in the kernel (not counting a pending fallback).
    pub fn installed(&self) -> &Policy {
        &self.generations[self.current.active.generation as usize % self.generations.len()].policy
    }

    /// Inserts `net` with `rule` into `generation` of its family's trie, or removes it when
    /// `rule` is `None`.
    fn write_prefix(
        &mut self,
        generation: u32,
        net: IpNet,
        rule: Option<RuleId>,
    ) -> Result<(), DataplaneError> {
        let prefix_len = GENERATION_BITS + u32::from(net.prefix_len());
        let g = generation as u8;
        let (name, result) = match net {
            IpNet::V4(v4) => {
                let [a, b, c, d] = v4.addr().octets();
                let key = Key::new(prefix_len, [g, a, b, c, d]);
                let result = match rule {
                    Some(rule) => self.allow_v4.insert(&key, rule, 0),
                    None => self.allow_v4.remove(&key),
                };
                (MAP_ALLOW_V4, result)
            }
            IpNet::V6(v6) => {
                let mut data = [g; 17];
                data[1..].copy_from_slice(&v6.addr().octets());
                let key = Key::new(prefix_len, data);
                let result = match rule {
                    Some(rule) => self.allow_v6.insert(&key, rule, 0),
                    None => self.allow_v6.remove(&key),
                };
                (MAP_ALLOW_V6, result)
            }
        };
        result.map_err(|source| DataplaneError::Map { name, source })
    }

    /// The packet counters of every interface, summed over CPUs.
    pub fn counters(&self) -> Result<Counters, DataplaneError> {
        let mut totals = Counters::default();
        for slot in 0..=MAX_INTERFACES {
            let counters = self.slot_counters(slot)?;
            for (total, value) in totals.0.iter_mut().zip(counters.0) {
                *total = total.wrapping_add(value);
            }
        }
        Ok(totals)
    }

    /// The packet counters of each interface attached to, then of the others together
    /// (named `other`: test runs, and interfaces beyond [`MAX_INTERFACES`]).
    pub fn interface_counters(&self) -> Result<Vec<(String, Counters)>, DataplaneError> {
        let mut all = Vec::new();
        for (interface, slot) in &self.slots {
            all.push((interface.clone(), self.slot_counters(*slot)?));
        }
        all.push(("other".to_owned(), self.slot_counters(0)?));
        Ok(all)
    }

    fn slot_counters(&self, slot: u32) -> Result<Counters, DataplaneError> {
        let mut counters = Counters::default();
        for counter in Counter::ALL {
            counters.0[counter as usize] = sum_per_cpu(
                &self.counters,
                MAP_COUNTERS,
                slot * Counter::COUNT + counter as u32,
            )?;
        }
        Ok(counters)
    }

    /// Gives `interface` a counter slot: the one it had (pinned maps of an earlier daemon),
    /// else a free one with its counters zeroed; slot 0 (shared) when all are taken.
    fn assign_slot(&mut self, interface: &str) -> Result<(), DataplaneError> {
        let map_err = |source| DataplaneError::Map {
            name: MAP_INTERFACE_SLOTS,
            source,
        };
        let Some(ifindex) = nix::net::if_::if_nametoindex(interface)
            .ok()
            .filter(|index| *index < INTERFACE_SLOT_IFINDEXES)
        else {
            tracing::warn!(
                interface,
                "no counter slot for this interface: counted as other"
            );
            return Ok(());
        };
        let taken = |slot: u32, slots: &[(String, u32)]| slots.iter().any(|(_, s)| *s == slot);
        let had = self.interface_slots.get(&ifindex, 0).map_err(map_err)?;
        let slot = if (1..=MAX_INTERFACES).contains(&had) && !taken(had, &self.slots) {
            had
        } else {
            let Some(free) = (1..=MAX_INTERFACES).find(|slot| !taken(*slot, &self.slots)) else {
                tracing::warn!(
                    interface,
                    "more than {MAX_INTERFACES} interfaces: this one is counted as other"
                );
                return Ok(());
            };
            let cpus = aya::util::nr_cpus().map_err(|(_, err)| DataplaneError::Cpus(err))?;
            for counter in 0..Counter::COUNT {
                let zeros =
                    PerCpuValues::try_from(vec![0u64; cpus]).map_err(DataplaneError::Cpus)?;
                self.counters
                    .set(free * Counter::COUNT + counter, zeros, 0)
                    .map_err(|source| DataplaneError::Map {
                        name: MAP_COUNTERS,
                        source,
                    })?;
            }
            self.interface_slots
                .set(ifindex, free, 0)
                .map_err(map_err)?;
            free
        };
        self.slots.push((interface.to_owned(), slot));
        Ok(())
    }

    /// Sets the clock the program notes last hits with to now; call it every 100 ms or so
    /// (last hits are as precise as that).
    pub fn tick_clock(&mut self) -> Result<(), DataplaneError> {
        self.clock
            .set(0, coarse_now_ns(), 0)
            .map_err(|source| DataplaneError::Map {
                name: MAP_CLOCK,
                source,
            })
    }

    /// Notes one refused packet in `sample` in the map of refused sources; 0: none.
    pub fn set_top_sample(&mut self, sample: u32) -> Result<(), DataplaneError> {
        self.switch(Config {
            top_sample: sample,
            ..self.current
        })
    }

    /// The refused sources noted (at most [`allowlist_common::TOP_SOURCES_CAPACITY`], the
    /// least recently seen forgotten first), with the sample rate their counts are taken at.
    pub fn top_sources(&self) -> Result<(Vec<SourceNoted>, u32), DataplaneError> {
        let now = coarse_now_ns();
        let mut sources = Vec::new();
        for item in self.top_sources.iter() {
            let (key, seen) = item.map_err(|source| DataplaneError::Map {
                name: MAP_TOP_SOURCES,
                source,
            })?;
            let address = match key.0.family {
                4 => {
                    let [a, b, c, d, ..] = key.0.addr;
                    IpAddr::V4(Ipv4Addr::new(a, b, c, d))
                }
                _ => IpAddr::V6(Ipv6Addr::from(key.0.addr)),
            };
            sources.push(SourceNoted {
                address,
                noted: seen.0.packets,
                last_seen_ago: Duration::from_nanos(now.saturating_sub(seen.0.last_seen_ns)),
            });
        }
        Ok((sources, self.current.top_sample))
    }

    /// How many packets `rule` has allowed, summed over CPUs.
    pub fn rule_hits(&self, rule: RuleId) -> Result<u64, DataplaneError> {
        Ok(self.rule_use(rule)?.hits)
    }

    /// How many packets `rule` has allowed and when it last did, over all CPUs.
    pub fn rule_use(&self, rule: RuleId) -> Result<RuleUse, DataplaneError> {
        if rule >= self.max_rules {
            return Err(DataplaneError::RuleOutOfRange {
                rule,
                capacity: self.max_rules,
            });
        }
        let values = self
            .rule_hits
            .get(&rule, 0)
            .map_err(|source| DataplaneError::Map {
                name: MAP_RULE_HITS,
                source,
            })?;
        let hits = values
            .iter()
            .fold(0u64, |sum, v| sum.wrapping_add(v.0.hits));
        let last = values.iter().map(|v| v.0.last_hit_ns).max().unwrap_or(0);
        Ok(RuleUse {
            hits,
            last_hit_ago: (last != 0)
                .then(|| Duration::from_nanos(coarse_now_ns().saturating_sub(last))),
        })
    }

    /// Runs the egress program in the kernel on `frame`, as if the host sent it: records its
    /// flow when replies pass. The program never drops.
    pub fn run_egress_frame(&self, frame: &[u8]) -> Result<(), DataplaneError> {
        program::<SchedClassifier>(&self.ebpf, EGRESS_PROGRAM_NAME)?
            .test_run(test_run_options(frame, 1))
            .map_err(DataplaneError::Program)?;
        Ok(())
    }

    /// Zeroes the hit counter of `rule`, for a rule id given to a new entry.
    pub fn reset_rule_hits(&mut self, rule: RuleId) -> Result<(), DataplaneError> {
        let cpus = aya::util::nr_cpus().map_err(|(_, err)| DataplaneError::Cpus(err))?;
        let zeros = PerCpuValues::try_from(vec![RuleUsageValue::default(); cpus])
            .map_err(DataplaneError::Cpus)?;
        self.rule_hits
            .set(rule, zeros, 0)
            .map_err(|source| DataplaneError::Map {
                name: MAP_RULE_HITS,
                source,
            })
    }

    /// Runs the XDP program in the kernel on `frame`, `repeat` times (at least once), without
    /// any interface: what an attached program would do with that frame, and how long it
    /// takes. Counters count every run.
    pub fn run_frame(&self, frame: &[u8], repeat: u32) -> Result<FrameRun, DataplaneError> {
        let result = program::<Xdp>(&self.ebpf, PROGRAM_NAME)?
            .test_run(test_run_options(frame, repeat))
            .map_err(DataplaneError::Program)?;
        let verdict = match result.return_value {
            1 => Verdict::Drop,
            2 => Verdict::Pass,
            other => Verdict::Other(other),
        };
        Ok(FrameRun {
            verdict,
            duration: result.duration,
        })
    }
}

/// One of the object's programs, by name.
fn program<'a, T>(ebpf: &'a Ebpf, name: &'static str) -> Result<&'a T, DataplaneError>
where
    &'a T: TryFrom<&'a aya::programs::Program, Error = ProgramError>,
{
    ebpf.program(name)
        .ok_or(DataplaneError::Missing(name))?
        .try_into()
        .map_err(DataplaneError::Program)
}

/// As [`program`], mutable (to load, attach and detach).
fn program_mut<'a, T>(ebpf: &'a mut Ebpf, name: &'static str) -> Result<&'a mut T, DataplaneError>
where
    &'a mut T: TryFrom<&'a mut aya::programs::Program, Error = ProgramError>,
{
    ebpf.program_mut(name)
        .ok_or(DataplaneError::Missing(name))?
        .try_into()
        .map_err(DataplaneError::Program)
}

fn test_run_options(frame: &[u8], repeat: u32) -> TestRunOptions<'_> {
    TestRunOptions {
        data_in: Some(frame),
        repeat: repeat.max(1),
        ..TestRunOptions::default()
    }
}

fn take_map<T>(ebpf: &mut Ebpf, name: &'static str) -> Result<T, DataplaneError>
where
    T: TryFrom<aya::maps::Map, Error = MapError>,
{
    let map = ebpf.take_map(name).ok_or(DataplaneError::Missing(name))?;
    T::try_from(map).map_err(|source| DataplaneError::Map { name, source })
}

fn sum_per_cpu(
    map: &PerCpuArray<MapData, u64>,
    name: &'static str,
    index: u32,
) -> Result<u64, DataplaneError> {
    let values = map
        .get(&index, 0)
        .map_err(|source| DataplaneError::Map { name, source })?;
    Ok(values.iter().copied().fold(0u64, u64::wrapping_add))
}

/// The maps, by name: all are pinned when the dataplane is opened with pins.
const MAP_NAMES: [&str; 11] = [
    MAP_CLOCK,
    MAP_INTERFACE_SLOTS,
    MAP_TOP_SOURCES,
    MAP_CONFIG,
    MAP_CONFIG_SLOT,
    MAP_ALLOW_V4,
    MAP_ALLOW_V6,
    MAP_COUNTERS,
    MAP_RULE_HITS,
    MAP_FLOWS,
    MAP_PROTECTED_PORTS,
];

/// Why the maps pinned in `dir` cannot be reused with these capacities, if they cannot.
fn incompatible_pins(
    dir: &Path,
    max_rules: u32,
    max_flows: u32,
) -> Result<Option<String>, DataplaneError> {
    let size = |bytes: usize| bytes as u32;
    let expected = [
        (MAP_CONFIG, MapType::Array, 4, size(size_of::<Config>()), 2),
        (MAP_CONFIG_SLOT, MapType::Array, 4, 4, 1),
        (MAP_CLOCK, MapType::Array, 4, 8, 1),
        (
            MAP_ALLOW_V4,
            MapType::LpmTrie,
            size(size_of::<Key<Ipv4Key>>()),
            4,
            trie_capacity(max_rules),
        ),
        (
            MAP_ALLOW_V6,
            MapType::LpmTrie,
            size(size_of::<Key<Ipv6Key>>()),
            4,
            trie_capacity(max_rules),
        ),
        (
            MAP_COUNTERS,
            MapType::PerCpuArray,
            4,
            8,
            (MAX_INTERFACES + 1) * Counter::COUNT,
        ),
        (
            MAP_INTERFACE_SLOTS,
            MapType::Array,
            4,
            4,
            INTERFACE_SLOT_IFINDEXES,
        ),
        (
            MAP_TOP_SOURCES,
            MapType::LruHash,
            size(size_of::<SourceKey>()),
            size(size_of::<SourceSeen>()),
            TOP_SOURCES_CAPACITY,
        ),
        (
            MAP_RULE_HITS,
            MapType::PerCpuArray,
            4,
            size(size_of::<RuleUsage>()),
            max_rules,
        ),
        (
            MAP_FLOWS,
            MapType::LruHash,
            size(size_of::<FlowKey>()),
            size(size_of::<FlowState>()),
            max_flows,
        ),
        (
            MAP_PROTECTED_PORTS,
            MapType::Array,
            4,
            8,
            GENERATIONS * PROTECTED_PORT_WORDS,
        ),
    ];
    if !expected.iter().any(|(name, ..)| dir.join(name).exists()) {
        return Ok(None);
    }
    for (name, map_type, key_size, value_size, max_entries) in expected {
        let path = dir.join(name);
        if !path.exists() {
            return Ok(Some(format!("{name} is not pinned")));
        }
        let info = MapData::from_pin(&path)
            .and_then(|map| map.info())
            .map_err(|source| DataplaneError::Map { name, source })?;
        let found = (
            info.map_type().ok(),
            info.key_size(),
            info.value_size(),
            info.max_entries(),
        );
        if found != (Some(map_type), key_size, value_size, max_entries) {
            return Ok(Some(format!(
                "{name} is {:?} with key {} B, value {} B, {} entries; expected {map_type:?} \
                 with key {key_size} B, value {value_size} B, {max_entries} entries",
                found.0, found.1, found.2, found.3
            )));
        }
    }
    Ok(None)
}

/// The magic number of the BPF file system (`BPF_FS_MAGIC`).
const BPF_FS_MAGIC: u64 = 0xcafe_4a11;

/// The mount point of bpffs.
const BPFFS: &str = "/sys/fs/bpf";

fn is_bpffs(path: &Path) -> bool {
    use std::os::unix::ffi::OsStrExt as _;
    let Ok(path) = std::ffi::CString::new(path.as_os_str().as_bytes()) else {
        return false;
    };
    // SAFETY: `statfs` only writes into the zeroed buffer we own; the path is NUL-terminated.
    let mut buf: libc::statfs = unsafe { std::mem::zeroed() };
    let status = unsafe { libc::statfs(path.as_ptr(), &mut buf) };
    status == 0 && buf.f_type as u64 == BPF_FS_MAGIC
}

/// Mounts bpffs at `/sys/fs/bpf` when `pin_root` is under it and it is not mounted; refuses a
/// `pin_root` outside bpffs.
fn mount_bpffs_if_missing(pin_root: &Path) -> Result<(), DataplaneError> {
    let mount_point = Path::new(BPFFS);
    if pin_root.starts_with(mount_point) && !is_bpffs(mount_point) {
        std::fs::create_dir_all(mount_point).map_err(|source| DataplaneError::Bpffs {
            path: mount_point.to_owned(),
            source,
        })?;
        let (source, target, fstype) = (c"bpf", c"/sys/fs/bpf", c"bpf");
        // SAFETY: NUL-terminated strings; no mount data.
        let status = unsafe {
            libc::mount(
                source.as_ptr(),
                target.as_ptr(),
                fstype.as_ptr(),
                0,
                std::ptr::null(),
            )
        };
        if status != 0 {
            return Err(DataplaneError::Bpffs {
                path: mount_point.to_owned(),
                source: std::io::Error::last_os_error(),
            });
        }
        tracing::info!(path = BPFFS, "mounted the BPF file system");
    }
    let existing = pin_root
        .ancestors()
        .find(|dir| dir.exists())
        .unwrap_or(mount_point);
    if !is_bpffs(existing) {
        return Err(DataplaneError::Bpffs {
            path: pin_root.to_owned(),
            source: std::io::Error::other("not on a BPF file system (bpffs)"),
        });
    }
    Ok(())
}

/// The entries of `dir`, sorted.
fn read_dir(dir: &Path) -> Result<Vec<PathBuf>, DataplaneError> {
    let pin_error = |source| DataplaneError::Pin {
        action: "listing",
        path: dir.to_owned(),
        source,
    };
    let mut paths = std::fs::read_dir(dir)
        .map_err(pin_error)?
        .map(|entry| entry.map(|entry| entry.path()))
        .collect::<Result<Vec<_>, _>>()
        .map_err(pin_error)?;
    paths.sort();
    Ok(paths)
}

/// Removes a pin; one that is not there is fine.
fn remove_pin(path: &Path) -> Result<(), DataplaneError> {
    match std::fs::remove_file(path) {
        Err(err) if err.kind() != std::io::ErrorKind::NotFound => Err(DataplaneError::Pin {
            action: "removing",
            path: path.to_owned(),
            source: err,
        }),
        _ => Ok(()),
    }
}

/// The protected ports a bitmap of [`PROTECTED_PORT_WORDS`] words names.
fn scopes_of(words: &[u64]) -> BTreeSet<PortScope> {
    let half = PROTECTED_PORT_WORDS as usize / 2;
    let mut scopes = BTreeSet::new();
    for (index, word) in words.iter().enumerate() {
        for bit in 0..64 {
            if word & (1 << bit) != 0 {
                let transport = if index < half {
                    Transport::Tcp
                } else {
                    Transport::Udp
                };
                if let Ok(port) = u16::try_from((index % half) * 64 + bit) {
                    scopes.insert(PortScope { transport, port });
                }
            }
        }
    }
    scopes
}

/// `Enforcement` as the kernel stores it, for generation `generation`.
fn raw_enforcement(generation: u32, enforcement: &Enforcement) -> allowlist_common::Enforcement {
    allowlist_common::Enforcement {
        generation,
        mode: enforcement.mode as u32,
        scoped: u32::from(!enforcement.scopes.is_empty()),
        reserved: 0,
    }
}

/// `CLOCK_MONOTONIC` in ns: the clock of `bpf_ktime_get_ns`.
fn monotonic_now_ns() -> u64 {
    clock_ns(libc::CLOCK_MONOTONIC)
}

/// `CLOCK_MONOTONIC_COARSE` in ns: the clock of `bpf_ktime_get_coarse_ns`.
fn coarse_now_ns() -> u64 {
    clock_ns(libc::CLOCK_MONOTONIC_COARSE)
}

/// `clock` now, in ns.
fn clock_ns(clock: libc::clockid_t) -> u64 {
    let mut now = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: `clock_gettime` only writes into the timespec we own.
    unsafe { libc::clock_gettime(clock, &mut now) };
    (now.tv_sec as u64)
        .saturating_mul(1_000_000_000)
        .saturating_add(now.tv_nsec as u64)
}

/// One of the benchmark's maps, by name, borrowed from `ebpf`.
fn bench_map<'a, T>(ebpf: &'a mut Ebpf, name: &'static str) -> Result<T, DataplaneError>
where
    T: TryFrom<&'a mut aya::maps::Map, Error = MapError>,
{
    ebpf.map_mut(name)
        .ok_or(DataplaneError::Missing(name))?
        .try_into()
        .map_err(bench_map_error(name))
}

/// Names the benchmark map `name` in a map error.
fn bench_map_error(name: &'static str) -> impl Fn(MapError) -> DataplaneError {
    move |source| DataplaneError::Map { name, source }
}

/// A program type whose pinned links this driver takes over.
trait LinkOwner<L> {
    /// Points `link` at this program (one atomic update) and hands the link back.
    fn take_over(&mut self, link: L) -> Result<FdLink, std::io::Error>;
}

impl LinkOwner<XdpLink> for Xdp {
    fn take_over(&mut self, link: XdpLink) -> Result<FdLink, std::io::Error> {
        let id = self.attach_to_link(link).map_err(std::io::Error::other)?;
        let link = self.take_link(id).map_err(std::io::Error::other)?;
        FdLink::try_from(link).map_err(std::io::Error::other)
    }
}

impl LinkOwner<SchedClassifierLink> for SchedClassifier {
    fn take_over(&mut self, link: SchedClassifierLink) -> Result<FdLink, std::io::Error> {
        let id = self.attach_to_link(link).map_err(std::io::Error::other)?;
        let link = self.take_link(id).map_err(std::io::Error::other)?;
        FdLink::try_from(link).map_err(std::io::Error::other)
    }
}
