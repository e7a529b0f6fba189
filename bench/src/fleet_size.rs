//! A fleet of real size: fifty real allowlistd followers, each guarding its own test link in
//! namespaces of its own, against one etcd (Debian's etcd-server). Times a release from
//! publish to every host pending and from acknowledgement to every host acknowledged, reads
//! etcd's request rate and watchers (its own metrics) and the daemons' memory, checks real
//! packets on a sample of hosts; then does it again with etcd stopped for 30 s between the
//! publish and the acknowledgement.

use std::fmt::Write as _;
use std::time::{Duration, Instant};

use allowlist_tests::etcd::Etcd;
use allowlist_tests::fleet::{FLEET, Fleet, fleet, office_file};
use allowlist_tests::scenario::enforcing_office;
use anyhow::Context as _;

use crate::measure::verdict;

/// How many hosts.
const HOSTS: usize = 50;
/// How long etcd stays away in the second run.
const OUTAGE: Duration = Duration::from_secs(30);
/// Publish to every host pending, and acknowledgement to every host acknowledged (the
/// hosts' --ack-min is 1 s of it): at most this.
const SPREAD_TARGET: Duration = Duration::from_secs(5);
/// Back after an outage: every host acknowledged within the followers' longest reconnect
/// wait (30 s) and this much more, from etcd's return.
const RETURN_TARGET: Duration = Duration::from_secs(35);
/// A follower's resident memory, median over the hosts.
const RSS_TARGET_MIB: f64 = 64.0;

/// etcd's counters at one moment: gRPC messages received (every request, every lease
/// keep-alive and watch request on the streams) and watchers.
#[derive(Debug, Clone, Copy)]
struct EtcdReading {
    at: Instant,
    messages: f64,
    watchers: f64,
}

/// Sums every sample of metric `name` in Prometheus text.
fn metric(text: &str, name: &str) -> f64 {
    text.lines()
        .filter(|line| {
            line.strip_prefix(name)
                .is_some_and(|rest| rest.starts_with('{') || rest.starts_with(' '))
        })
        .filter_map(|line| line.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

fn read_etcd(etcd: &Etcd) -> anyhow::Result<EtcdReading> {
    let text = etcd.metrics().context("reading etcd's metrics")?;
    Ok(EtcdReading {
        at: Instant::now(),
        messages: metric(&text, "grpc_server_msg_received_total"),
        watchers: metric(&text, "etcd_debugging_mvcc_watcher_total"),
    })
}

/// Requests per second between two readings.
fn rate(from: EtcdReading, to: EtcdReading) -> f64 {
    (to.messages - from.messages) / (to.at - from.at).as_secs_f64().max(1e-3)
}

/// How many hosts `fleet status --json` shows in `state` on `release` (any release when
/// `None`).
fn hosts_in(fleet: &Fleet, release: Option<&str>, state: &str) -> usize {
    let output = fleet.etcd.fleet_ctl(FLEET, &["status", "--json"]);
    let Ok(status) = serde_json::from_slice::<serde_json::Value>(&output.stdout) else {
        return 0;
    };
    status["hosts"]
        .as_array()
        .into_iter()
        .flatten()
        .filter(|host| {
            host["state"] == state && release.is_none_or(|release| host["release"] == release)
        })
        .count()
}

/// Waits until every host is in `state` on `release`; returns how long it took from
/// `since`.
fn until_all(
    fleet: &Fleet,
    release: Option<&str>,
    state: &str,
    since: Instant,
    limit: Duration,
) -> anyhow::Result<Duration> {
    loop {
        if hosts_in(fleet, release, state) == HOSTS {
            return Ok(since.elapsed());
        }
        anyhow::ensure!(
            since.elapsed() < limit,
            "{HOSTS} hosts {state} within {limit:?}: {} were",
            hosts_in(fleet, release, state)
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// Whether a sample of hosts (first, middle, last) enforces the office list.
fn sample_enforces(fleet: &Fleet) -> bool {
    [0, HOSTS / 2, HOSTS - 1]
        .iter()
        .all(|&n| enforcing_office(&fleet.hosts[n].link))
}

/// The hosts' resident memory, MiB: median and largest.
fn rss(fleet: &Fleet) -> (f64, f64) {
    let mut mib: Vec<f64> = fleet
        .hosts
        .iter()
        .filter_map(|host| host.daemon.rss_kib())
        .map(|kib| kib as f64 / 1024.0)
        .collect();
    mib.sort_by(f64::total_cmp);
    (
        mib.get(mib.len() / 2).copied().unwrap_or(0.0),
        mib.last().copied().unwrap_or(0.0),
    )
}

/// Runs the fleet and writes its section of the report.
pub fn fleet_section(text: &mut String) -> anyhow::Result<()> {
    let started = Instant::now();
    let fleet = fleet(HOSTS, ["1s", "300s"], &[]);
    let start_time = started.elapsed();
    until_all(
        &fleet,
        None,
        "waiting",
        Instant::now(),
        Duration::from_secs(60),
    )?;
    let idle_from = read_etcd(&fleet.etcd)?;
    std::thread::sleep(Duration::from_secs(15));
    let idle_to = read_etcd(&fleet.etcd)?;

    // A release through a healthy etcd.
    let from = read_etcd(&fleet.etcd)?;
    let publish_at = Instant::now();
    let first = fleet.publish(&office_file(&[]), None);
    let pending = until_all(
        &fleet,
        Some(&first),
        "pending",
        publish_at,
        Duration::from_secs(60),
    )?;
    let ack_at = Instant::now();
    fleet.ack(&first);
    let acked = until_all(
        &fleet,
        Some(&first),
        "acknowledged",
        ack_at,
        Duration::from_secs(60),
    )?;
    let to = read_etcd(&fleet.etcd)?;
    let enforced = sample_enforces(&fleet);
    let (rss_median, rss_max) = rss(&fleet);
    let etcd_rss = fleet.etcd.rss_kib().map_or(0.0, |kib| kib as f64 / 1024.0);

    // A release with etcd away for 30 s between its publish and its acknowledgement.
    let mut fleet = fleet;
    let publish_at = Instant::now();
    let second = fleet.publish(&office_file(&["192.0.2.77"]), Some(&first));
    let pending_again = until_all(
        &fleet,
        Some(&second),
        "pending",
        publish_at,
        Duration::from_secs(60),
    )?;
    fleet.etcd.kill();
    std::thread::sleep(OUTAGE);
    fleet.etcd.restart()?;
    let back_at = Instant::now();
    fleet.ack(&second);
    let back = until_all(
        &fleet,
        Some(&second),
        "acknowledged",
        back_at,
        Duration::from_secs(120),
    )?;
    let enforced_after = sample_enforces(&fleet);

    writeln!(text, "\n## A fleet of {HOSTS} hosts\n")?;
    writeln!(
        text,
        "{HOSTS} real `allowlistd` followers, each guarding the test link of its own \
         namespaces, against one etcd (Debian's etcd-server) in a namespace of its own, all on \
         this machine ({:.0} s to start them). Times from `fleet status` polled every 100 ms \
         (each poll itself an etcd client). Requests: etcd's `grpc_server_msg_received_total`, \
         every request and every message on a stream (lease keep-alives, watch requests). \
         Real packets checked on hosts 0, {} and {} after each release.\n",
        start_time.as_secs_f64(),
        HOSTS / 2,
        HOSTS - 1
    )?;
    writeln!(text, "| measure | value | target | verdict |")?;
    writeln!(text, "|---|---:|---:|---|")?;
    let seconds = |d: Duration| format!("{:.2} s", d.as_secs_f64());
    let rows = [
        (
            "publish → every host pending".to_owned(),
            seconds(pending),
            format!("≤ {}", seconds(SPREAD_TARGET)),
            verdict(pending <= SPREAD_TARGET),
        ),
        (
            "`fleet ack` → every host acknowledged (--ack-min 1 s)".to_owned(),
            seconds(acked),
            format!("≤ {}", seconds(SPREAD_TARGET)),
            verdict(acked <= SPREAD_TARGET),
        ),
        (
            format!(
                "etcd back after {} s away → every host acknowledged",
                OUTAGE.as_secs()
            ),
            seconds(back),
            format!("≤ {}", seconds(RETURN_TARGET)),
            verdict(back <= RETURN_TARGET),
        ),
        (
            "publish → every host pending (second release)".to_owned(),
            seconds(pending_again),
            format!("≤ {}", seconds(SPREAD_TARGET)),
            verdict(pending_again <= SPREAD_TARGET),
        ),
        (
            "a follower's RSS, median (largest)".to_owned(),
            format!("{rss_median:.1} MiB ({rss_max:.1})"),
            format!("≤ {RSS_TARGET_MIB:.0} MiB"),
            verdict(rss_median <= RSS_TARGET_MIB),
        ),
        (
            "sample hosts enforce each release (real packets)".to_owned(),
            format!("{}", enforced && enforced_after),
            "true".to_owned(),
            verdict(enforced && enforced_after),
        ),
    ];
    for (measure, value, target, met) in rows {
        writeln!(text, "| {measure} | {value} | {target} | {met} |")?;
    }
    writeln!(
        text,
        "\netcd: {:.1} requests/s idle ({HOSTS} hosts: a lease keep-alive every 3 s each, a \
         status written on change and every minute), {:.1} requests/s from publish to every host acknowledged, {:.0} watchers \
         ({:.1} per host), {etcd_rss:.0} MiB resident.",
        rate(idle_from, idle_to),
        rate(from, to),
        to.watchers,
        to.watchers / HOSTS as f64,
    )?;
    Ok(())
}
