//! The dataplane driver: the only module that talks to the kernel. It loads the XDP program,
//! attaches it to interfaces, writes the policy into the LPM tries, sets the mode and reads
//! the counters.

use std::fmt;

use std::collections::BTreeSet;
use std::time::Duration;

use allowlist_common::{
    Config, Counter, EGRESS_PROGRAM_NAME, FlowKey, FlowState, MAP_ALLOW_V4, MAP_ALLOW_V6,
    MAP_CONFIG, MAP_COUNTERS, MAP_FLOWS, MAP_PROTECTED_PORTS, MAP_RULE_HITS, Mode, PROGRAM_NAME,
    PROTECTED_PORT_WORDS, RuleId,
};
use aya::{
    Ebpf, EbpfLoader,
    maps::{Array, HashMap, LpmTrie, MapData, MapError, PerCpuArray, PerCpuValues, lpm_trie::Key},
    programs::{
        ProgramError, SchedClassifier, TcAttachType, TestRun, TestRunOptions, Xdp,
        tc::SchedClassifierLinkId, xdp::XdpLinkId,
    },
};
use ipnet::IpNet;

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
}

impl AttachedMode {
    fn flags(self) -> aya::programs::XdpMode {
        match self {
            AttachedMode::Native => aya::programs::XdpMode::Driver,
            AttachedMode::Skb => aya::programs::XdpMode::Skb,
        }
    }
}

impl fmt::Display for AttachedMode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            AttachedMode::Native => "native",
            AttachedMode::Skb => "skb",
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
    /// Detaching from an interface failed.
    #[error("detaching from {interface}")]
    Detach {
        /// The interface.
        interface: String,
        /// What failed.
        #[source]
        source: ProgramError,
    },
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

/// One attachment of the program to an interface.
#[derive(Debug)]
pub struct Attachment {
    /// The interface name.
    pub interface: String,
    /// The mode the attachment got.
    pub mode: AttachedMode,
    link: XdpLinkId,
    egress: Option<SchedClassifierLinkId>,
}

/// The loaded program and its maps.
pub struct Dataplane {
    ebpf: Ebpf,
    config: Array<MapData, ConfigValue>,
    allow_v4: LpmTrie<MapData, [u8; 4], RuleId>,
    allow_v6: LpmTrie<MapData, [u8; 16], RuleId>,
    counters: PerCpuArray<MapData, u64>,
    rule_hits: PerCpuArray<MapData, u64>,
    protected_ports: Array<MapData, u64>,
    protected_words: Vec<u64>,
    flows: HashMap<MapData, FlowKeyValue, FlowStateValue>,
    current: Config,
    max_rules: u32,
    installed: Policy,
    attachments: Vec<Attachment>,
}

impl Dataplane {
    /// Loads the programs and creates their maps with room for `max_rules` prefixes per
    /// address family and `max_flows` recorded flows. The program starts in [`Mode::Off`] with
    /// an empty policy, replies passed with the default timeouts, no scopes, and is not
    /// attached.
    pub fn load(max_rules: u32, max_flows: u32) -> Result<Self, DataplaneError> {
        let mut ebpf = EbpfLoader::new()
            .map_max_entries(MAP_ALLOW_V4, max_rules)
            .map_max_entries(MAP_ALLOW_V6, max_rules)
            .map_max_entries(MAP_RULE_HITS, max_rules)
            .map_max_entries(MAP_FLOWS, max_flows)
            .load(OBJECT)
            .map_err(DataplaneError::Load)?;
        program_mut::<Xdp>(&mut ebpf, PROGRAM_NAME)?
            .load()
            .map_err(DataplaneError::Program)?;
        program_mut::<SchedClassifier>(&mut ebpf, EGRESS_PROGRAM_NAME)?
            .load()
            .map_err(DataplaneError::Program)?;
        let mut dataplane = Self {
            protected_ports: take_map(&mut ebpf, MAP_PROTECTED_PORTS)?,
            protected_words: vec![0; PROTECTED_PORT_WORDS as usize],
            flows: take_map(&mut ebpf, MAP_FLOWS)?,
            current: Config {
                mode: Mode::Off as u32,
                replies: 0,
                scoped: 0,
                reserved: 0,
                tcp_timeout_ns: 0,
                udp_timeout_ns: 0,
                icmp_timeout_ns: 0,
            },
            config: take_map(&mut ebpf, MAP_CONFIG)?,
            allow_v4: take_map(&mut ebpf, MAP_ALLOW_V4)?,
            allow_v6: take_map(&mut ebpf, MAP_ALLOW_V6)?,
            counters: take_map(&mut ebpf, MAP_COUNTERS)?,
            rule_hits: take_map(&mut ebpf, MAP_RULE_HITS)?,
            ebpf,
            max_rules,
            installed: Policy::new(),
            attachments: Vec::new(),
        };
        dataplane.set_replies(Replies::default())?;
        Ok(dataplane)
    }

    /// Attaches the XDP program to `interface` and, when replies pass, the egress program
    /// that records the host's flows. In [`XdpMode::Auto`], tries native mode first and falls
    /// back to skb mode.
    pub fn attach(
        &mut self,
        interface: &str,
        mode: XdpMode,
    ) -> Result<AttachedMode, DataplaneError> {
        let attached = self.attach_xdp(interface, mode)?;
        if self.current.replies != 0 {
            let tcx = aya::util::KernelVersion::current()
                .is_ok_and(|kernel| kernel >= aya::util::KernelVersion::new(6, 6, 0));
            if !tcx {
                // Before TCX, TC programs hang off a clsact qdisc; it may exist already.
                let _ = aya::programs::tc::qdisc_add_clsact(interface);
            }
            let egress = program_mut::<SchedClassifier>(&mut self.ebpf, EGRESS_PROGRAM_NAME)?
                .attach(interface, TcAttachType::Egress)
                .map_err(|source| DataplaneError::AttachEgress {
                    interface: interface.to_owned(),
                    source,
                });
            match egress {
                Ok(link) => {
                    if let Some(last) = self.attachments.last_mut() {
                        last.egress = Some(link);
                    }
                }
                Err(err) => {
                    if let Some(xdp_only) = self.attachments.pop() {
                        let _ =
                            program_mut::<Xdp>(&mut self.ebpf, PROGRAM_NAME)?.detach(xdp_only.link);
                    }
                    return Err(err);
                }
            }
        }
        Ok(attached)
    }

    fn attach_xdp(
        &mut self,
        interface: &str,
        mode: XdpMode,
    ) -> Result<AttachedMode, DataplaneError> {
        let attempts: &[AttachedMode] = match mode {
            XdpMode::Auto => &[AttachedMode::Native, AttachedMode::Skb],
            XdpMode::Native => &[AttachedMode::Native],
            XdpMode::Skb => &[AttachedMode::Skb],
        };
        let program = program_mut::<Xdp>(&mut self.ebpf, PROGRAM_NAME)?;
        let mut failure = None;
        for &attempt in attempts {
            match program.attach(interface, attempt.flags()) {
                Ok(link) => {
                    self.attachments.push(Attachment {
                        interface: interface.to_owned(),
                        mode: attempt,
                        link,
                        egress: None,
                    });
                    return Ok(attempt);
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

    /// Detaches the programs from every interface.
    pub fn detach_all(&mut self) -> Result<(), DataplaneError> {
        for attachment in std::mem::take(&mut self.attachments) {
            if let Some(egress) = attachment.egress {
                program_mut::<SchedClassifier>(&mut self.ebpf, EGRESS_PROGRAM_NAME)?
                    .detach(egress)
                    .map_err(|source| DataplaneError::Detach {
                        interface: attachment.interface.clone(),
                        source,
                    })?;
            }
            program_mut::<Xdp>(&mut self.ebpf, PROGRAM_NAME)?
                .detach(attachment.link)
                .map_err(|source| DataplaneError::Detach {
                    interface: attachment.interface.clone(),
                    source,
                })?;
        }
        Ok(())
    }

    /// Sets what the program does with packets from sources outside the policy.
    pub fn set_mode(&mut self, mode: Mode) -> Result<(), DataplaneError> {
        self.write_config(Config {
            mode: mode as u32,
            ..self.current
        })
    }

    /// Sets whether and how long replies to the host's own flows pass. Takes effect at once
    /// for the check; the egress program is attached (or not) by [`Dataplane::attach`].
    pub fn set_replies(&mut self, replies: Replies) -> Result<(), DataplaneError> {
        let nanos = |d: Duration| u64::try_from(d.as_nanos()).unwrap_or(u64::MAX);
        self.write_config(Config {
            replies: u32::from(replies.enabled),
            tcp_timeout_ns: nanos(replies.tcp_timeout),
            udp_timeout_ns: nanos(replies.udp_timeout),
            icmp_timeout_ns: nanos(replies.icmp_timeout),
            ..self.current
        })
    }

    /// Limits the check to packets to these local ports (and what could hide a port); an
    /// empty set checks every packet. The bitmap is complete before the switch is flipped.
    pub fn set_scopes(&mut self, scopes: &BTreeSet<PortScope>) -> Result<(), DataplaneError> {
        if scopes.is_empty() {
            self.write_config(Config {
                scoped: 0,
                ..self.current
            })?;
        }
        let mut words = vec![0u64; PROTECTED_PORT_WORDS as usize];
        for scope in scopes {
            let half = match scope.transport {
                Transport::Tcp => 0,
                Transport::Udp => PROTECTED_PORT_WORDS as usize / 2,
            };
            words[half + usize::from(scope.port / 64)] |= 1 << (scope.port % 64);
        }
        for (index, word) in (0u32..).zip(&words) {
            if self.protected_words[index as usize] != *word {
                self.protected_ports
                    .set(index, word, 0)
                    .map_err(|source| DataplaneError::Map {
                        name: MAP_PROTECTED_PORTS,
                        source,
                    })?;
                self.protected_words[index as usize] = *word;
            }
        }
        if !scopes.is_empty() {
            self.write_config(Config {
                scoped: 1,
                ..self.current
            })?;
        }
        Ok(())
    }

    fn write_config(&mut self, config: Config) -> Result<(), DataplaneError> {
        self.config
            .set(0, ConfigValue(config), 0)
            .map_err(|source| DataplaneError::Map {
                name: MAP_CONFIG,
                source,
            })?;
        self.current = config;
        Ok(())
    }

    /// How full the flow map is.
    pub fn flow_stats(&self) -> Result<FlowStats, DataplaneError> {
        let live = self.flows.keys().filter(Result::is_ok).count() as u64;
        let recorded = sum_per_cpu(&self.counters, MAP_COUNTERS, Counter::FlowsRecorded as u32)?;
        Ok(FlowStats {
            live,
            recorded,
            evicted: recorded.saturating_sub(live),
        })
    }

    /// The policy currently in the kernel.
    pub fn installed(&self) -> &Policy {
        &self.installed
    }

    /// Makes `target` the policy in the kernel, writing only the difference: additions and
    /// changes first, removals last, so an address allowed before and after is never dropped
    /// in between. On error the kernel holds a superset of the old policy's entries that
    /// [`Dataplane::installed`] describes exactly.
    pub fn apply(&mut self, target: &Policy) -> Result<(), DataplaneError> {
        let diff = self.installed.diff(target);
        if let Some((_, rule)) = diff
            .upserts
            .iter()
            .find(|(_, rule)| *rule >= self.max_rules)
        {
            return Err(DataplaneError::RuleOutOfRange {
                rule: *rule,
                capacity: self.max_rules,
            });
        }
        let (mut v4, mut v6) = self.installed.len_by_family();
        for (net, _) in &diff.upserts {
            if !self.installed.contains(net) {
                match net {
                    IpNet::V4(_) => v4 += 1,
                    IpNet::V6(_) => v6 += 1,
                }
            }
        }
        for (family, needed) in [(4, v4), (6, v6)] {
            if needed > self.max_rules as usize {
                return Err(DataplaneError::CapacityExceeded {
                    family,
                    needed,
                    capacity: self.max_rules,
                });
            }
        }
        for (net, rule) in diff.upserts {
            self.write_prefix(net, Some(rule))?;
            self.installed.remove(&net);
            self.installed.insert(net, rule);
        }
        for net in diff.removals {
            self.write_prefix(net, None)?;
            self.installed.remove(&net);
        }
        Ok(())
    }

    /// Inserts `net` with `rule` into its family's trie, or removes it when `rule` is `None`.
    fn write_prefix(&mut self, net: IpNet, rule: Option<RuleId>) -> Result<(), DataplaneError> {
        let prefix_len = u32::from(net.prefix_len());
        let (name, result) = match (net, rule) {
            (IpNet::V4(v4), Some(rule)) => (
                MAP_ALLOW_V4,
                self.allow_v4
                    .insert(&Key::new(prefix_len, v4.addr().octets()), rule, 0),
            ),
            (IpNet::V4(v4), None) => (
                MAP_ALLOW_V4,
                self.allow_v4
                    .remove(&Key::new(prefix_len, v4.addr().octets())),
            ),
            (IpNet::V6(v6), Some(rule)) => (
                MAP_ALLOW_V6,
                self.allow_v6
                    .insert(&Key::new(prefix_len, v6.addr().octets()), rule, 0),
            ),
            (IpNet::V6(v6), None) => (
                MAP_ALLOW_V6,
                self.allow_v6
                    .remove(&Key::new(prefix_len, v6.addr().octets())),
            ),
        };
        result.map_err(|source| DataplaneError::Map { name, source })
    }

    /// The packet counters, summed over CPUs.
    pub fn counters(&self) -> Result<Counters, DataplaneError> {
        let mut totals = Counters::default();
        for counter in Counter::ALL {
            totals.0[counter as usize] = sum_per_cpu(&self.counters, MAP_COUNTERS, counter as u32)?;
        }
        Ok(totals)
    }

    /// How many packets `rule` has allowed, summed over CPUs.
    pub fn rule_hits(&self, rule: RuleId) -> Result<u64, DataplaneError> {
        if rule >= self.max_rules {
            return Err(DataplaneError::RuleOutOfRange {
                rule,
                capacity: self.max_rules,
            });
        }
        sum_per_cpu(&self.rule_hits, MAP_RULE_HITS, rule)
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
        let zeros = PerCpuValues::try_from(vec![0u64; cpus]).map_err(DataplaneError::Cpus)?;
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
