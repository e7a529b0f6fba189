//! End to end: a trafgen flood from a denied source through a veth into the attached program.

use std::fmt::Write as _;
use std::net::IpAddr;

use allowlist_common::Mode;
use allowlist_daemon::dataplane::{AttachMode, Dataplane};
use allowlist_daemon::policy::Policy;
use allowlist_tests::netns::{
    CLIENT_ALLOWED_V4, CLIENT_ALLOWED_V6, CLIENT_DENIED_V4, CLIENT_IF, SERVER_IF, SERVER_V4,
    TestLink,
};
use allowlist_tests::traffic::UdpStream;
use anyhow::Context as _;
use ipnet::IpNet;

use crate::trafgen::TrafgenFlood;
use crate::veth::packets;

/// Packets trafgen sends in the flood.
const FLOOD_PACKETS: u64 = 1_000_000;

/// What the flood showed.
struct Flood {
    sent: u64,
    delivered: u64,
    dropped: u64,
    seconds: f64,
    allowed_sent: u64,
    allowed_received: u64,
    softirq_ns_per_drop: f64,
}

/// Time all CPUs spent in softirq (where XDP runs on veth), from /proc/stat, in ns.
fn softirq_ns() -> anyhow::Result<f64> {
    let stat = std::fs::read_to_string("/proc/stat")?;
    let ticks: f64 = stat
        .lines()
        .next()
        .and_then(|cpu| cpu.split_whitespace().nth(7))
        .and_then(|field| field.parse().ok())
        .context("the softirq field of /proc/stat")?;
    // /proc/stat counts in USER_HZ, 100 on every Linux ABI.
    Ok(ticks / 100.0 * 1e9)
}

/// A trafgen flood from a denied source into the program attached to a veth (native mode),
/// while an allowed source sends a paced UDP stream.
fn flood() -> anyhow::Result<Flood> {
    let link = TestLink::create()?;
    let mut dataplane = Dataplane::load(1024, 1024)?;
    let allowed: Policy = [
        (IpNet::from(IpAddr::V4(CLIENT_ALLOWED_V4)), 0),
        (IpNet::from(IpAddr::V6(CLIENT_ALLOWED_V6)), 1),
    ]
    .into_iter()
    .collect();
    dataplane.apply(&allowed)?;
    dataplane.set_mode(Mode::Enforce)?;
    link.server
        .enter(|| dataplane.attach(SERVER_IF, AttachMode::Native))??;
    let trafgen = TrafgenFlood::udp(&link, &[CLIENT_DENIED_V4], FLOOD_PACKETS)?;
    let dropped_before = srv0_dropped(&dataplane)?;
    let sent_before = packets(&link.client, CLIENT_IF, "tx")?;
    let delivered_before = packets(&link.server, SERVER_IF, "rx")?;
    let softirq_before = softirq_ns()?;
    let started = std::time::Instant::now();
    let mut seconds = 0.0;
    let stream = UdpStream::run(
        &link,
        IpAddr::V4(CLIENT_ALLOWED_V4),
        IpAddr::V4(SERVER_V4),
        300_000,
        || {
            let argv = trafgen.argv();
            let output = std::process::Command::new(&argv[0])
                .args(&argv[1..])
                .output()
                .context("running trafgen")?;
            seconds = started.elapsed().as_secs_f64();
            anyhow::ensure!(
                output.status.success(),
                "trafgen failed: {}",
                String::from_utf8_lossy(&output.stderr)
            );
            Ok(())
        },
    )?;
    let softirq = softirq_ns()? - softirq_before;
    let sent = packets(&link.client, CLIENT_IF, "tx")? - sent_before;
    let delivered = packets(&link.server, SERVER_IF, "rx")? - delivered_before;
    let dropped = srv0_dropped(&dataplane)? - dropped_before;
    Ok(Flood {
        sent,
        delivered,
        dropped,
        seconds,
        allowed_sent: stream.sent(),
        allowed_received: stream.received(),
        softirq_ns_per_drop: softirq / dropped.max(1) as f64,
    })
}

/// Packets the program dropped on the server's interface.
fn srv0_dropped(dataplane: &Dataplane) -> anyhow::Result<u64> {
    let counters = dataplane.readings().interface_counters()?;
    counters
        .iter()
        .find(|(interface, _)| interface == SERVER_IF)
        .map(|(_, counters)| counters.get(allowlist_common::Counter::Dropped))
        .context("no counters for the server interface")
}

/// Runs the flood and writes its section.
pub fn flood_section(text: &mut String) -> anyhow::Result<()> {
    let flood = flood().context("the trafgen flood")?;
    flood_report(text, &flood)
}

/// Writes the flood section of the report.
fn flood_report(text: &mut String, flood: &Flood) -> anyhow::Result<()> {
    writeln!(text, "\n## End to end: a flood\n")?;
    writeln!(
        text,
        "`trafgen` (netsniff-ng) sends {FLOOD_PACKETS} UDP packets from a denied source, on one \
         CPU as fast as it can (`-b` above the reachable rate, packet by packet), across a veth pair into the program attached in native mode; \
         meanwhile an allowed source sends a paced UDP stream. Counts from the interfaces \
         (`ip -s link`) and the program's own counters; CPU from the softirq time in \
         `/proc/stat` (all CPUs, 10 ms ticks), where XDP runs on veth.\n"
    )?;
    writeln!(text, "| measure | value |")?;
    writeln!(text, "|---|---:|")?;
    writeln!(
        text,
        "| packets cli0 sent (flood and stream) | {} |",
        flood.sent
    )?;
    writeln!(text, "| packets srv0 received | {} |", flood.delivered)?;
    writeln!(
        text,
        "| dropped by the program (the flood, and any stray denied packet) | {} |",
        flood.dropped
    )?;
    writeln!(
        text,
        "| flood rate | {:.0} packets/s |",
        FLOOD_PACKETS as f64 / flood.seconds.max(1e-9)
    )?;
    writeln!(
        text,
        "| allowed stream: sent / received | {} / {} |",
        flood.allowed_sent, flood.allowed_received
    )?;
    writeln!(
        text,
        "| softirq CPU per dropped packet (an upper bound: the veth's receive path and the \
         stream count too) | {:.0} ns |",
        flood.softirq_ns_per_drop
    )?;
    let every_drop = flood.dropped >= FLOOD_PACKETS;
    writeln!(
        text,
        "\nEvery flood packet dropped: {}. The allowed stream lost {} packets.",
        if every_drop { "yes" } else { "no" },
        flood.allowed_sent.saturating_sub(flood.allowed_received)
    )?;
    Ok(())
}
