//! `allowlistd`: attaches the allowlist XDP program to interfaces and enforces an allowlist
//! until stopped.

use std::time::Duration;

use allowlist_common::Mode;
use allowlist_daemon::{
    dataplane::{DEFAULT_MAX_RULES, Dataplane, XdpMode},
    policy::{Policy, parse_cidr},
};
use anyhow::{Context as _, bail};
use clap::Parser;
use ipnet::IpNet;
use tokio::signal::unix::{SignalKind, signal};

/// Lets in only the sources on an IP allowlist, enforced in the kernel by XDP.
///
/// IPv4 and IPv6 packets whose source address is not covered by an --allow prefix are
/// dropped (or, with --mode monitor, counted). Frames that are not IP (ARP, LLDP, ...) and
/// IPv6 neighbour discovery always pass. The program is detached when allowlistd stops
/// (SIGINT or SIGTERM).
#[derive(Debug, Parser)]
#[command(version, about, long_about)]
struct Args {
    /// Interface to guard; repeat for several.
    #[arg(long = "iface", value_name = "IF", required = true)]
    interfaces: Vec<String>,

    /// Source prefix to allow: a CIDR (198.51.100.0/24, 2001:db8::/32) or a plain address
    /// (meaning /32 or /128); repeat for several.
    #[arg(long = "allow", value_name = "CIDR", required = true, value_parser = parse_allow)]
    allow: Vec<IpNet>,

    /// What to do with packets from other sources: drop them (enforce) or only count them
    /// (monitor).
    #[arg(long, value_enum, default_value_t = EnforceMode::Enforce)]
    mode: EnforceMode,

    /// XDP attach mode: auto tries native (driver) mode and falls back to skb (generic).
    #[arg(long, value_enum, default_value_t = XdpMode::Auto)]
    xdp_mode: XdpMode,

    /// Most prefixes per address family the kernel maps can hold.
    #[arg(long, value_name = "N", default_value_t = DEFAULT_MAX_RULES)]
    max_rules: u32,

    /// How often to log the packet counters (e.g. 30s, 5m).
    #[arg(long, value_name = "DURATION", default_value = "60s", value_parser = humantime::parse_duration)]
    stats_interval: Duration,
}

/// The modes that enforce a policy, as given on the command line.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
enum EnforceMode {
    /// Drop IP packets from sources outside the allowlist.
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

fn parse_allow(input: &str) -> Result<IpNet, String> {
    parse_cidr(input).map_err(|err| err.to_string())
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .init();
    let args = Args::parse();
    if args.stats_interval.is_zero() {
        bail!("--stats-interval must be greater than zero");
    }

    let policy: Policy = args
        .allow
        .iter()
        .zip(0..)
        .map(|(net, rule)| (*net, rule))
        .collect();
    let mut dataplane = Dataplane::load(args.max_rules).context("loading the XDP program")?;
    dataplane.apply(&policy).context("writing the allowlist")?;
    dataplane
        .set_mode(args.mode.into())
        .context("setting the mode")?;
    for interface in &args.interfaces {
        let mode = dataplane
            .attach(interface, args.xdp_mode)
            .with_context(|| format!("attaching to {interface}"))?;
        tracing::info!(interface, %mode, "attached");
    }
    tracing::info!(
        prefixes = policy.len(),
        mode = ?Mode::from(args.mode),
        "enforcing {}",
        args.allow.iter().map(ToString::to_string).collect::<Vec<_>>().join(", ")
    );

    let mut terminate = signal(SignalKind::terminate()).context("installing SIGTERM handler")?;
    let mut stats = tokio::time::interval(args.stats_interval);
    stats.tick().await;
    loop {
        tokio::select! {
            _ = tokio::signal::ctrl_c() => break,
            _ = terminate.recv() => break,
            _ = stats.tick() => log_counters(&dataplane),
        }
    }
    log_counters(&dataplane);
    dataplane.detach_all().context("detaching")?;
    tracing::info!("detached; stopped");
    Ok(())
}

fn log_counters(dataplane: &Dataplane) {
    match dataplane.counters() {
        Ok(counters) => tracing::info!(%counters, "counters"),
        Err(err) => tracing::warn!(error = %err, "reading counters"),
    }
}
