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
fn from_str<'de, D, T>(deserializer: D) -> Result<T, D::Error>
where
    D: serde::Deserializer<'de>,
    T: FromStr,
    T::Err: std::fmt::Display,
{
    String::deserialize(deserializer)?
        .parse()
        .map_err(serde::de::Error::custom)
}

/// Deserializes a list of any `FromStr` type from TOML strings.
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

/// Deserializes a duration written as `90s`, `2m`, `1h30m`.
fn duration<'de, D>(deserializer: D) -> Result<Duration, D::Error>
where
    D: serde::Deserializer<'de>,
{
    humantime::parse_duration(&String::deserialize(deserializer)?).map_err(serde::de::Error::custom)
}

/// The defaults of a set of flags, as `--help` shows them: what an empty command line gives.
fn defaults<T: clap::Args + clap::FromArgMatches>() -> T {
    let command = T::augment_args(clap::Command::new("defaults").no_binary_name(true));
    command
        .try_get_matches_from(std::iter::empty::<String>())
        .and_then(|matches| T::from_arg_matches(&matches))
        .unwrap_or_else(|err| panic!("the flags' defaults do not parse: {err}"))
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
/// `ack-min = "90s"`, ...). Each option is declared here once, with its default: `--help`
/// shows it, a file leaves out what it does not change, and [`Options::resolve`] derives the
/// rest.
#[derive(Debug, Clone, clap::Args, Deserialize)]
#[serde(default, deny_unknown_fields, rename_all = "kebab-case")]
pub struct Options {
    /// Interface to guard; repeat for several.
    #[arg(long = "iface", value_name = "IF")]
    pub iface: Vec<String>,

    /// XDP attach mode: auto tries native (driver) mode and falls back to skb (generic).
    #[arg(long, value_enum, default_value_t = XdpMode::Auto)]
    pub xdp_mode: XdpMode,

    /// Start even when an --iface does not exist yet, and attach to it once it appears
    /// (looked for every second, and logged), instead of refusing to start.
    #[arg(long)]
    pub wait_for_iface: bool,

    /// Source always allowed while enforcing, which no API call can remove: a CIDR or a plain
    /// address; repeat for several.
    #[arg(long, value_name = "CIDR")]
    #[serde(deserialize_with = "vec_from_str")]
    pub allow: Vec<AllowCidr>,

    /// What enforcing does with other sources: drop them, or only count them.
    #[arg(long, value_enum, default_value_t = EnforceMode::Enforce)]
    pub mode: EnforceMode,

    /// Where the admin API listens: ADDRESS:PORT, or a unix socket as unix:/PATH (mode
    /// 0600, see --socket-group). An address beyond loopback needs TLS (--tls-cert).
    #[arg(long, value_name = "ADDR", default_value = DEFAULT_LISTEN)]
    #[serde(deserialize_with = "from_str")]
    pub listen: ListenAddress,

    /// Where the state is kept.
    #[arg(long, value_name = "DIR", default_value = "/var/lib/allowlistd")]
    pub state_dir: PathBuf,

    /// Where the maps and links are pinned in bpffs, so that enforcement outlives the daemon
    /// and a restart takes it over.
    #[arg(long, value_name = "DIR", default_value = DEFAULT_PIN_DIR)]
    pub pin_dir: PathBuf,

    /// Earliest acknowledgement of a change, at least 1s before --ack-max.
    #[arg(long, value_name = "DURATION", value_parser = humantime::parse_duration, default_value = "60s")]
    #[serde(deserialize_with = "duration")]
    pub ack_min: Duration,

    /// Latest acknowledgement of a change; without one, it is reverted then: 1s to 24h.
    #[arg(long, value_name = "DURATION", value_parser = humantime::parse_duration, default_value = "120s")]
    #[serde(deserialize_with = "duration")]
    pub ack_max: Duration,

    /// File holding the admin token; created if missing [default: STATE_DIR/admin.token].
    #[arg(long, value_name = "FILE")]
    pub token_file: Option<PathBuf>,

    /// Local TCP port whose established sessions the lockout guard protects; repeat for
    /// several.
    #[arg(long = "protect-port", value_name = "PORT", default_value = "22")]
    pub protect_port: Vec<u16>,

    /// Longest time an entry may be given to live (its `ttl`, or `expires_at` from now), 1m
    /// to 366d.
    #[arg(long, value_name = "DURATION", value_parser = humantime::parse_duration, default_value = "7d")]
    #[serde(deserialize_with = "duration")]
    pub max_entry_ttl: Duration,

    /// Most allowlists.
    #[arg(long, value_name = "N", default_value_t = 1000)]
    pub max_lists: usize,

    /// Most entries over all allowlists, at most 8388608. A limit only: the kernel's tables
    /// are sized to the policies in force (made again when they outgrow them), not to this
    /// number.
    #[arg(long, value_name = "N", default_value_t = 262_144)]
    pub max_entries: usize,

    /// Longest allowlist name, in characters.
    #[arg(long, value_name = "N", default_value_t = 128)]
    pub max_name_len: usize,

    /// Longest description, in characters.
    #[arg(long, value_name = "N", default_value_t = 1024)]
    pub max_description_len: usize,

    /// Largest request body, in bytes: at least what one entry with the longest name and
    /// descriptions takes, at most 1 GiB [default: 128 bytes for each of --max-entries, plus
    /// one entry with the longest name and descriptions: 32 MiB for 262144 entries].
    #[arg(long, value_name = "BYTES")]
    pub max_body_bytes: Option<usize>,

    /// Size of the audit trail's file (`audit.jsonl` in the state directory) at which it is
    /// rotated; one rotated file is kept, 64 KiB to 1 GiB.
    #[arg(long, value_name = "BYTES", default_value_t = 16 << 20)]
    pub audit_max_bytes: u64,

    /// How often to log the packet counters.
    #[arg(long, value_name = "DURATION", value_parser = humantime::parse_duration, default_value = "60s")]
    #[serde(deserialize_with = "duration")]
    pub stats_interval: Duration,

    /// Pass replies to the connections the host itself opens (DNS, downloads, NTP, ...) from
    /// sources outside the allowlist; off gives the pure stateless filter.
    #[arg(long, value_enum, default_value_t = OnOff::On)]
    pub replies: OnOff,

    /// Only these of the host's own packets open flows for replies: tcp, udp or icmp (every
    /// remote port), tcp/PORT or udp/PORT (that remote port); repeat for several. A protocol
    /// not named opens none: fewer pinholes (e.g. udp/53, udp/123, tcp)
    /// [default: every TCP and UDP packet and ping].
    #[arg(long = "replies-for", value_name = "PROTO[/PORT]")]
    #[serde(deserialize_with = "vec_from_str")]
    pub replies_for: Vec<ReplyFor>,

    /// Idle time after which replies to a TCP connection the host opened drop.
    #[arg(long, value_name = "DURATION", value_parser = humantime::parse_duration, default_value = "1h")]
    #[serde(deserialize_with = "duration")]
    pub reply_timeout_tcp: Duration,

    /// Idle time after which replies to a UDP flow the host started drop.
    #[arg(long, value_name = "DURATION", value_parser = humantime::parse_duration, default_value = "30s")]
    #[serde(deserialize_with = "duration")]
    pub reply_timeout_udp: Duration,

    /// Idle time after which replies to the host's pings drop.
    #[arg(long, value_name = "DURATION", value_parser = humantime::parse_duration, default_value = "30s")]
    #[serde(deserialize_with = "duration")]
    pub reply_timeout_icmp: Duration,

    /// Most flows remembered for replies, at most 4194304; the oldest go first.
    #[arg(long, value_name = "N", default_value_t = allowlist_common::DEFAULT_MAX_FLOWS)]
    pub max_flows: u32,

    /// Note one refused packet in N (at random) for `allowlistctl top`; 1 notes every one, 0
    /// none. Sampling keeps a flood of refused packets cheap.
    #[arg(long, value_name = "N", default_value_t = 16)]
    pub top_sample: u32,

    /// Entries with the most hits that `GET /metrics` gives a series each, at most 1000; 0:
    /// none. Every entry's hits stay in `GET /v1/stats` and the list's entries.
    #[arg(long, value_name = "N", default_value_t = 10)]
    pub metrics_top_entries: usize,

    /// Guard only this local port (tcp/22, udp/51820); repeat for several. Without it every
    /// inbound IP packet is checked. Used until scopes are set through the API.
    #[arg(long, value_name = "PROTO/PORT")]
    #[serde(deserialize_with = "vec_from_str")]
    pub protect: Vec<PortScope>,

    /// How the admin API is served (an `[api]` table in the file).
    #[command(flatten)]
    pub api: ApiOptions,

    /// IP protocol that passes unchecked while scopes are set: a name (gre, esp, ah, ipip,
    /// ipv6, sctp, udplite, l2tp, dccp, ...) or a number; repeat for several. Scopes otherwise
    /// guard every protocol but TCP and UDP (checked by port) and ICMP: a tunnel would carry
    /// any traffic past them.
    #[arg(long = "unprotected-protocol", value_name = "PROTO")]
    #[serde(deserialize_with = "vec_from_str")]
    pub unprotected_protocol: Vec<IpProtocol>,

    /// The fleet to follow (a `[fleet]` table in the file).
    #[command(flatten)]
    pub fleet: FleetOptions,
}

impl Default for Options {
    /// The defaults `--help` shows.
    fn default() -> Self {
        defaults()
    }
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

/// The resolved configuration: the options (flags over the file over the defaults), checked,
/// and what they make.
#[derive(Debug, Clone)]
pub struct Config {
    /// The options as given.
    pub options: Options,
    /// How the admin API is served.
    pub server: ServerSettings,
    /// The admin token's file.
    pub token_file: PathBuf,
    /// Largest request body.
    pub max_body_bytes: usize,
    /// Always-allowed prefixes.
    pub always_allow: Vec<IpNet>,
    /// Replies to the host's own flows.
    pub replies: Replies,
    /// Which of the host's own packets open flows for replies.
    pub reply_openers: ReplyOpeners,
    /// IP protocols that pass unchecked while scopes are set.
    pub unprotected_protocols: std::collections::BTreeSet<u8>,
    /// The fleet to follow, if any.
    pub fleet: Option<crate::fleet::FleetConfig>,
}

/// Where maps and links are pinned unless configured otherwise.
pub const DEFAULT_PIN_DIR: &str = "/sys/fs/bpf/allowlist";

impl Options {
    /// Reads a TOML configuration file: what it leaves out keeps its default.
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

    /// These options (a file's) with the flags `matches` holds from the command line put
    /// over them: a flag wins over the file, a list given as flags replaces the file's, and
    /// a flag left out leaves the file's value (not its default).
    pub fn overridden_by(mut self, matches: &clap::ArgMatches) -> Result<Options, clap::Error> {
        let mut given = matches.clone();
        let defaulted: Vec<String> = matches
            .ids()
            .map(|id| id.as_str().to_owned())
            .filter(|id| matches.value_source(id) != Some(clap::parser::ValueSource::CommandLine))
            .collect();
        for id in defaulted {
            given
                .try_clear_id(&id)
                .map_err(|err| clap::Error::raw(clap::error::ErrorKind::InvalidValue, err))?;
        }
        clap::FromArgMatches::update_from_arg_matches(&mut self, &given)?;
        Ok(self)
    }

    /// Derives what the options make, and checks the result against [`bounds`].
    pub fn resolve(self) -> Result<Config, ConfigError> {
        let max_body_bytes = self.max_body_bytes.unwrap_or_else(|| {
            bounds::default_body_bytes(
                self.max_entries,
                self.max_name_len,
                self.max_description_len,
            )
        });
        let config = Config {
            server: self.api.clone().resolve(self.listen.clone())?,
            token_file: self
                .token_file
                .clone()
                .unwrap_or_else(|| self.state_dir.join("admin.token")),
            max_body_bytes,
            always_allow: self.allow.iter().map(|allow| allow.0).collect(),
            replies: Replies {
                enabled: self.replies == OnOff::On,
                tcp_timeout: self.reply_timeout_tcp,
                udp_timeout: self.reply_timeout_udp,
                icmp_timeout: self.reply_timeout_icmp,
            },
            reply_openers: traffic::reply_openers(&self.replies_for),
            unprotected_protocols: self
                .unprotected_protocol
                .iter()
                .map(|protocol| protocol.0)
                .collect(),
            fleet: self.fleet.clone().resolve(max_body_bytes)?,
            options: self,
        };
        bounds::check(&config)?;
        Ok(config)
    }
}

#[cfg(test)]
mod tests;
