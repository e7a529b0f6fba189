//! The daemon's configuration: command-line flags, also readable from a TOML file given with
//! `--config` (flags win over the file).

use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::time::Duration;

use allowlist_common::Mode;
use ipnet::IpNet;
use serde::Deserialize;

use crate::dataplane::{AttachMode, Replies, ReplyOpeners};
use crate::policy::{PortScope, parse_cidr};
use crate::server::{ListenAddress, ServerSettings};

mod api;
pub mod bounds;
mod fleet;
mod service;
mod traffic;

pub use api::{ApiOptions, DEFAULT_LISTEN};
pub use fleet::FleetOptions;
pub use traffic::{IpProtocol, ReplyFor};

/// Why the configuration cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The configuration file could not be read.
    #[error("reading {}", path.display())]
    Read {
        /// The file.
        path: PathBuf,
        /// What failed.
        #[source]
        source: std::io::Error,
    },
    /// The configuration file is not valid TOML of these options.
    #[error("parsing {}", path.display())]
    Parse {
        /// The file.
        path: PathBuf,
        /// What is wrong, with the line.
        #[source]
        source: toml::de::Error,
    },
    /// A setting is out of its bounds, or settings contradict each other.
    #[error("{0}")]
    Invalid(String),
}

/// A duration written as `90s`, `2m`, `1h30m`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HumanDuration(pub Duration);

impl FromStr for HumanDuration {
    type Err = humantime::DurationError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        humantime::parse_duration(s).map(HumanDuration)
    }
}

/// An always-allow prefix: a CIDR without host bits, or a plain address.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AllowCidr(pub IpNet);

impl FromStr for AllowCidr {
    type Err = crate::policy::CidrError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        parse_cidr(s).map(AllowCidr)
    }
}

/// Deserializes any `FromStr` type from a TOML string.
fn from_str<'de, D, T>(deserializer: D) -> Result<Option<T>, D::Error>
where
    D: serde::Deserializer<'de>,
    T: FromStr,
    T::Err: std::fmt::Display,
{
    Option::<String>::deserialize(deserializer)?
        .map(|s| s.parse().map_err(serde::de::Error::custom))
        .transpose()
}

fn vec_from_str<'de, D, T>(deserializer: D) -> Result<Vec<T>, D::Error>
where
    D: serde::Deserializer<'de>,
    T: FromStr,
    T::Err: std::fmt::Display,
{
    Vec::<String>::deserialize(deserializer)?
        .iter()
        .map(|s| s.parse().map_err(serde::de::Error::custom))
        .collect()
}

/// How to attach the XDP program, as the command line and the file say it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum XdpMode {
    /// Native (driver) mode if the driver supports it, otherwise skb (generic) mode.
    Auto,
    /// Native (driver) mode only.
    Native,
    /// Generic (skb) mode only: works on every interface, slower.
    Skb,
}

impl From<XdpMode> for AttachMode {
    fn from(mode: XdpMode) -> AttachMode {
        match mode {
            XdpMode::Auto => AttachMode::Auto,
            XdpMode::Native => AttachMode::Native,
            XdpMode::Skb => AttachMode::Skb,
        }
    }
}

/// What enforcing means: drop, or only count.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum EnforceMode {
    /// Drop IP packets from sources outside the policy.
    Enforce,
    /// Pass everything; count what enforce mode would drop.
    Monitor,
}

impl From<EnforceMode> for Mode {
    fn from(mode: EnforceMode) -> Mode {
        match mode {
            EnforceMode::Enforce => Mode::Enforce,
            EnforceMode::Monitor => Mode::Monitor,
        }
    }
}

/// The flags of `allowlistd`; each can also be a key of the `--config` file (`iface = ["eth1"]`,
/// `ack-min = "90s"`, ...).
#[derive(Debug, Default, clap::Args, Deserialize, merge::Merge)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
#[merge(strategy = merge::option::overwrite_none)]
pub struct Options {
    /// Interface to guard; repeat for several.
    #[arg(long = "iface", value_name = "IF")]
    #[serde(default)]
    #[merge(strategy = merge::vec::overwrite_empty)]
    pub iface: Vec<String>,

    /// XDP attach mode: auto tries native (driver) mode and falls back to skb (generic)
    /// [default: auto].
    #[arg(long, value_enum)]
    pub xdp_mode: Option<XdpMode>,

    /// Start even when an --iface does not exist yet, and attach to it once it appears
    /// (looked for every second, and logged), instead of refusing to start.
    #[arg(long)]
    #[serde(default)]
    #[merge(strategy = merge::bool::overwrite_false)]
    pub wait_for_iface: bool,

    /// Source always allowed while enforcing, which no API call can remove: a CIDR or a plain
    /// address; repeat for several.
    #[arg(long, value_name = "CIDR")]
    #[serde(default, deserialize_with = "vec_from_str")]
    #[merge(strategy = merge::vec::overwrite_empty)]
    pub allow: Vec<AllowCidr>,

    /// What enforcing does with other sources: drop them, or only count them
    /// [default: enforce].
    #[arg(long, value_enum)]
    pub mode: Option<EnforceMode>,

    /// Where the admin API listens: ADDRESS:PORT, or a unix socket as unix:/PATH (mode
    /// 0600, see --socket-group). An address beyond loopback needs TLS (--tls-cert)
    /// [default: 127.0.0.1:9180].
    #[arg(long, value_name = "ADDR")]
    #[serde(default, deserialize_with = "from_str")]
    pub listen: Option<ListenAddress>,

    /// Where the state is kept [default: /var/lib/allowlistd].
    #[arg(long, value_name = "DIR")]
    pub state_dir: Option<PathBuf>,

    /// Where the maps and links are pinned in bpffs, so that enforcement outlives the daemon
    /// and a restart takes it over [default: /sys/fs/bpf/allowlist].
    #[arg(long, value_name = "DIR")]
    pub pin_dir: Option<PathBuf>,

    /// Earliest acknowledgement of a change, at least 1s before --ack-max [default: 60s].
    #[arg(long, value_name = "DURATION")]
    #[serde(default, deserialize_with = "from_str")]
    pub ack_min: Option<HumanDuration>,

    /// Latest acknowledgement of a change; without one, it is reverted then: 1s to 24h
    /// [default: 120s].
    #[arg(long, value_name = "DURATION")]
    #[serde(default, deserialize_with = "from_str")]
    pub ack_max: Option<HumanDuration>,

    /// File holding the admin token; created if missing [default: STATE_DIR/admin.token].
    #[arg(long, value_name = "FILE")]
    pub token_file: Option<PathBuf>,

    /// Local TCP port whose established sessions the lockout guard protects; repeat for
    /// several [default: 22].
    #[arg(long = "protect-port", value_name = "PORT")]
    #[serde(default)]
    #[merge(strategy = merge::vec::overwrite_empty)]
    pub protect_port: Vec<u16>,

    /// Longest time an entry may be given to live (its `ttl`, or `expires_at` from now), 1m
    /// to 366d [default: 7d].
    #[arg(long, value_name = "DURATION")]
    #[serde(default, deserialize_with = "from_str")]
    pub max_entry_ttl: Option<HumanDuration>,

    /// Most allowlists [default: 1000].
    #[arg(long, value_name = "N")]
    pub max_lists: Option<usize>,

    /// Most entries over all allowlists, at most 8388608. A limit only: the kernel's tables
    /// are sized to the policies in force (made again when they outgrow them), not to this
    /// number [default: 262144].
    #[arg(long, value_name = "N")]
    pub max_entries: Option<usize>,

    /// Longest allowlist name, in characters [default: 128].
    #[arg(long, value_name = "N")]
    pub max_name_len: Option<usize>,

    /// Longest description, in characters [default: 1024].
    #[arg(long, value_name = "N")]
    pub max_description_len: Option<usize>,

    /// Largest request body, in bytes: at least what one entry with the longest name and
    /// descriptions takes, at most 1 GiB [default: 128 bytes for each of --max-entries, plus
    /// one entry with the longest name and descriptions: 32 MiB for 262144 entries].
    #[arg(long, value_name = "BYTES")]
    pub max_body_bytes: Option<usize>,

    /// Size of the audit trail's file (`audit.jsonl` in the state directory) at which it is
    /// rotated; one rotated file is kept, 64 KiB to 1 GiB [default: 16777216].
    #[arg(long, value_name = "BYTES")]
    pub audit_max_bytes: Option<u64>,

    /// How often to log the packet counters [default: 60s].
    #[arg(long, value_name = "DURATION")]
    #[serde(default, deserialize_with = "from_str")]
    pub stats_interval: Option<HumanDuration>,

    /// Pass replies to the connections the host itself opens (DNS, downloads, NTP, ...) from
    /// sources outside the allowlist; off gives the pure stateless filter [default: on].
    #[arg(long, value_enum)]
    pub replies: Option<OnOff>,

    /// Only these of the host's own packets open flows for replies: tcp, udp or icmp (every
    /// remote port), tcp/PORT or udp/PORT (that remote port); repeat for several. A protocol
    /// not named opens none: fewer pinholes (e.g. udp/53, udp/123, tcp)
    /// [default: every TCP and UDP packet and ping].
    #[arg(long = "replies-for", value_name = "PROTO[/PORT]")]
    #[serde(default, deserialize_with = "vec_from_str")]
    #[merge(strategy = merge::vec::overwrite_empty)]
    pub replies_for: Vec<ReplyFor>,

    /// Idle time after which replies to a TCP connection the host opened drop [default: 1h].
    #[arg(long, value_name = "DURATION")]
    #[serde(default, deserialize_with = "from_str")]
    pub reply_timeout_tcp: Option<HumanDuration>,

    /// Idle time after which replies to a UDP flow the host started drop [default: 30s].
    #[arg(long, value_name = "DURATION")]
    #[serde(default, deserialize_with = "from_str")]
    pub reply_timeout_udp: Option<HumanDuration>,

    /// Idle time after which replies to the host's pings drop [default: 30s].
    #[arg(long, value_name = "DURATION")]
    #[serde(default, deserialize_with = "from_str")]
    pub reply_timeout_icmp: Option<HumanDuration>,

    /// Most flows remembered for replies, at most 4194304; the oldest go first
    /// [default: 65536].
    #[arg(long, value_name = "N")]
    pub max_flows: Option<u32>,

    /// Note one refused packet in N (at random) for `allowlistctl top`; 1 notes every one, 0
    /// none. Sampling keeps a flood of refused packets cheap [default: 16].
    #[arg(long, value_name = "N")]
    pub top_sample: Option<u32>,

    /// Entries with the most hits that `GET /metrics` gives a series each, at most 1000; 0:
    /// none. Every entry's hits stay in `GET /v1/stats` and the list's entries [default: 10].
    #[arg(long, value_name = "N")]
    pub metrics_top_entries: Option<usize>,

    /// Guard only this local port (tcp/22, udp/51820); repeat for several. Without it every
    /// inbound IP packet is checked. Used until scopes are set through the API.
    #[arg(long, value_name = "PROTO/PORT")]
    #[serde(default, deserialize_with = "vec_from_str")]
    #[merge(strategy = merge::vec::overwrite_empty)]
    pub protect: Vec<PortScope>,

    /// How the admin API is served (an `[api]` table in the file).
    #[command(flatten)]
    #[serde(default)]
    #[merge(strategy = merge::Merge::merge)]
    pub api: ApiOptions,

    /// IP protocol that passes unchecked while scopes are set: a name (gre, esp, ah, ipip,
    /// ipv6, sctp, udplite, l2tp, dccp, ...) or a number; repeat for several. Scopes otherwise
    /// guard every protocol but TCP and UDP (checked by port) and ICMP: a tunnel would carry
    /// any traffic past them.
    #[arg(long = "unprotected-protocol", value_name = "PROTO")]
    #[serde(default, deserialize_with = "vec_from_str")]
    #[merge(strategy = merge::vec::overwrite_empty)]
    pub unprotected_protocol: Vec<IpProtocol>,

    /// The fleet to follow (a `[fleet]` table in the file).
    #[command(flatten)]
    #[serde(default)]
    #[merge(strategy = merge::Merge::merge)]
    pub fleet: FleetOptions,
}

/// A switch.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum OnOff {
    /// On.
    On,
    /// Off.
    Off,
}

/// The resolved configuration.
#[derive(Debug, Clone)]
pub struct Config {
    /// Interfaces to guard.
    pub interfaces: Vec<String>,
    /// XDP attach mode.
    pub xdp_mode: AttachMode,
    /// Whether interfaces that do not exist yet are waited for instead of refused.
    pub wait_for_interfaces: bool,
    /// Always-allowed prefixes.
    pub always_allow: Vec<IpNet>,
    /// Mode of the program while enforcing.
    pub mode: Mode,
    /// How the admin API is served.
    pub server: ServerSettings,
    /// State directory.
    pub state_dir: PathBuf,
    /// Pin directory in bpffs.
    pub pin_dir: PathBuf,
    /// Earliest acknowledgement.
    pub ack_min: Duration,
    /// Latest acknowledgement.
    pub ack_max: Duration,
    /// Admin token file.
    pub token_file: PathBuf,
    /// Ports whose sessions the lockout guard protects.
    pub protect_ports: Vec<u16>,
    /// Longest time an entry may be given to live.
    pub max_entry_ttl: Duration,
    /// Most allowlists.
    pub max_lists: usize,
    /// Most entries.
    pub max_entries: usize,
    /// Longest name.
    pub max_name_len: usize,
    /// Longest description.
    pub max_description_len: usize,
    /// Largest request body.
    pub max_body_bytes: usize,
    /// Size at which the audit trail is rotated.
    pub audit_max_bytes: u64,
    /// Counter log period.
    pub stats_interval: Duration,
    /// Replies to the host's own flows.
    pub replies: Replies,
    /// Which of the host's own packets open flows for replies.
    pub reply_openers: ReplyOpeners,
    /// IP protocols that pass unchecked while scopes are set.
    pub unprotected_protocols: std::collections::BTreeSet<u8>,
    /// Capacity of the flow map.
    pub max_flows: u32,
    /// One refused packet in this many is noted for `top`; 0: none.
    pub top_sample: u32,
    /// Entries with the most hits that get a series of their own in `GET /metrics`.
    pub metrics_top_entries: usize,
    /// Ports guarded until scopes are set through the API; empty: all.
    pub protect: Vec<PortScope>,
    /// The fleet to follow, if any.
    pub fleet: Option<crate::fleet::FleetConfig>,
}

/// Where maps and links are pinned unless configured otherwise.
pub const DEFAULT_PIN_DIR: &str = "/sys/fs/bpf/allowlist";

impl Options {
    /// Reads a TOML configuration file.
    pub fn from_file(path: &Path) -> Result<Options, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.to_owned(),
            source,
        })?;
        toml::from_str(&text).map_err(|source| ConfigError::Parse {
            path: path.to_owned(),
            source,
        })
    }

    /// Fills what these options leave unset from `file`: a flag wins over the file, a list
    /// given as flags replaces the file's.
    pub fn or(mut self, file: Options) -> Options {
        merge::Merge::merge(&mut self, file);
        self
    }

    /// Applies the defaults and checks the result against [`bounds`].
    pub fn resolve(self) -> Result<Config, ConfigError> {
        let state_dir = self
            .state_dir
            .unwrap_or_else(|| PathBuf::from("/var/lib/allowlistd"));
        let max_entries = self.max_entries.unwrap_or(262_144);
        let max_name_len = self.max_name_len.unwrap_or(128);
        let max_description_len = self.max_description_len.unwrap_or(1024);
        let max_body_bytes = self.max_body_bytes.unwrap_or_else(|| {
            bounds::default_body_bytes(max_entries, max_name_len, max_description_len)
        });
        let config = Config {
            interfaces: self.iface,
            xdp_mode: self.xdp_mode.unwrap_or(XdpMode::Auto).into(),
            wait_for_interfaces: self.wait_for_iface,
            always_allow: self.allow.into_iter().map(|allow| allow.0).collect(),
            mode: self.mode.unwrap_or(EnforceMode::Enforce).into(),
            server: self.api.resolve(self.listen)?,
            token_file: self
                .token_file
                .unwrap_or_else(|| state_dir.join("admin.token")),
            state_dir,
            pin_dir: self
                .pin_dir
                .unwrap_or_else(|| PathBuf::from(DEFAULT_PIN_DIR)),
            ack_min: self.ack_min.map_or(Duration::from_secs(60), |d| d.0),
            ack_max: self.ack_max.map_or(Duration::from_secs(120), |d| d.0),
            protect_ports: if self.protect_port.is_empty() {
                vec![22]
            } else {
                self.protect_port
            },
            max_entry_ttl: self
                .max_entry_ttl
                .map_or(Duration::from_secs(7 * 24 * 3600), |d| d.0),
            max_lists: self.max_lists.unwrap_or(1000),
            max_entries,
            max_name_len,
            max_description_len,
            max_body_bytes,
            audit_max_bytes: self.audit_max_bytes.unwrap_or(16 << 20),
            stats_interval: self.stats_interval.map_or(Duration::from_secs(60), |d| d.0),
            replies: {
                let defaults = Replies::default();
                Replies {
                    enabled: self.replies != Some(OnOff::Off),
                    tcp_timeout: self.reply_timeout_tcp.map_or(defaults.tcp_timeout, |d| d.0),
                    udp_timeout: self.reply_timeout_udp.map_or(defaults.udp_timeout, |d| d.0),
                    icmp_timeout: self
                        .reply_timeout_icmp
                        .map_or(defaults.icmp_timeout, |d| d.0),
                }
            },
            reply_openers: traffic::reply_openers(&self.replies_for),
            unprotected_protocols: self
                .unprotected_protocol
                .iter()
                .map(|protocol| protocol.0)
                .collect(),
            max_flows: self
                .max_flows
                .unwrap_or(allowlist_common::DEFAULT_MAX_FLOWS),
            top_sample: self.top_sample.unwrap_or(16),
            metrics_top_entries: self.metrics_top_entries.unwrap_or(10),
            protect: self.protect,
            fleet: self.fleet.resolve(max_body_bytes)?,
        };
        bounds::check(&config)?;
        Ok(config)
    }
}

#[cfg(test)]
mod tests;
