//! `cargo xtask bench`: what the XDP program costs per packet, measured by the kernel's test
//! run (`BPF_PROG_TEST_RUN` with a large `repeat`), as a median over interleaved runs so that
//! the configurations compared share the machine's noise. Writes a Markdown report.
//!
//! Usage: allowlist-bench [REPORT.md]

use std::fmt::Write as _;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::time::Duration;

use allowlist_common::Mode;
use allowlist_common::bench::BENCH_LOOPS;
use allowlist_daemon::dataplane::AttachMode;
use allowlist_daemon::dataplane::{Dataplane, Replies};
use allowlist_daemon::policy::Policy;
use allowlist_tests::daemon::{Daemon, TempDir};
use allowlist_tests::frames::udp_frame;
use allowlist_tests::netns::{
    CLIENT_ALLOWED_V4, CLIENT_ALLOWED_V6, CLIENT_DENIED_V4, CLIENT_IF, SERVER_IF, SERVER_V4,
    TestLink,
};
use allowlist_tests::traffic::UdpStream;
use anyhow::Context as _;
use ipnet::IpNet;

/// Prefixes in the policy besides the allowed sources.
const PREFIXES: u32 = 1000;
/// Runs of each measurement; the median is reported.
const RUNS: usize = 15;
/// Packets per run.
const REPEAT: u32 = 1_000_000;

const ALLOWED_V4: Ipv4Addr = Ipv4Addr::new(198, 18, 0, 2);
const DENIED_V4: Ipv4Addr = Ipv4Addr::new(203, 0, 113, 9);
const ALLOWED_V6: Ipv6Addr = Ipv6Addr::new(0xfd00, 0xa11, 0, 0, 0, 0, 0, 2);
const DENIED_V6: Ipv6Addr = Ipv6Addr::new(0x2001, 0xdb8, 0xbad, 0, 0, 0, 0, 9);

/// A deterministic generator (xorshift), so every run measures the same policy.
struct Xorshift(u64);

impl Xorshift {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
}

/// `PREFIXES` random prefixes of realistic lengths (half IPv4 /8-/32, half IPv6 /16-/128)
/// that avoid the denied sources, plus the allowed sources as /32 and /128.
fn policy() -> Policy {
    let mut random = Xorshift(0x5eed_a11c_0ffe_e000);
    let mut rules: Vec<(IpNet, u32)> = vec![
        (IpNet::from(IpAddr::V4(ALLOWED_V4)), 0),
        (IpNet::from(IpAddr::V6(ALLOWED_V6)), 1),
    ];
    while rules.len() < PREFIXES as usize + 2 {
        let rule = rules.len() as u32;
        let net = if rule.is_multiple_of(2) {
            let len = 8 + (random.next() % 25) as u8;
            IpNet::new(IpAddr::V4(Ipv4Addr::from(random.next() as u32)), len)
        } else {
            let len = 16 + (random.next() % 113) as u8;
            let bits = (u128::from(random.next()) << 64) | u128::from(random.next());
            IpNet::new(IpAddr::V6(Ipv6Addr::from(bits)), len)
        };
        let Ok(net) = net else { continue };
        let net = net.trunc();
        if net.contains(&IpAddr::V4(DENIED_V4)) || net.contains(&IpAddr::V6(DENIED_V6)) {
            continue;
        }
        rules.push((net, rule));
    }
    rules.into_iter().collect()
}

/// Policy sizes of the scaling benchmark (prefixes per address family).
const SIZES: [u32; 4] = [1, 1_000, 100_000, 1_000_000];
/// Runs of each scaling measurement; the median is reported.
const SCALING_RUNS: usize = 7;
/// Test runs per varied-source sample (each looks up `BENCH_LOOPS` sources).
const VARIED_REPEAT: u32 = 100;
/// Sources each varied-source sample draws from.
const VARIED_SOURCES: usize = 4096;

/// `count` random prefixes of one family: half host routes, half of the lengths allowlists
/// hold (IPv4 /20-/31, IPv6 /32-/64 in global unicast space).
fn random_prefixes(random: &mut Xorshift, v6: bool, count: u32) -> Vec<IpNet> {
    let mut nets = std::collections::BTreeSet::new();
    while nets.len() < count as usize {
        let host = random.next().is_multiple_of(2);
        let net = if v6 {
            let len = if host {
                128
            } else {
                32 + (random.next() % 33) as u8
            };
            // Global unicast space, like the sources of real traffic.
            let bits =
                (u128::from(random.next()) << 64 | u128::from(random.next())) >> 3 | (1u128 << 125);
            IpNet::new(IpAddr::V6(Ipv6Addr::from(bits)), len)
        } else {
            let len = if host {
                32
            } else {
                20 + (random.next() % 12) as u8
            };
            IpNet::new(IpAddr::V4(Ipv4Addr::from(random.next() as u32)), len)
        };
        if let Ok(net) = net {
            nets.insert(net.trunc());
        }
    }
    nets.into_iter().collect()
}

/// A random address inside `net`.
fn inside(random: &mut Xorshift, net: &IpNet) -> IpAddr {
    match net {
        IpNet::V4(v4) => {
            let host = (random.next() as u32) & !u32::from(v4.netmask());
            IpAddr::V4(Ipv4Addr::from(u32::from(v4.network()) | host))
        }
        IpNet::V6(v6) => {
            let bits = u128::from(random.next()) << 64 | u128::from(random.next());
            let host = bits & !u128::from(v6.netmask());
            IpAddr::V6(Ipv6Addr::from(u128::from(v6.network()) | host))
        }
    }
}

/// Medians of one policy size, in ns per packet.
struct Scaling {
    size: u32,
    floor: f64,
    /// Varied-source classification cost: [v4 allowed, v4 denied, v6 allowed, v6 denied].
    varied: [f64; 4],
    /// The whole program on one repeated frame, same order.
    repeated: [f64; 4],
    /// As `varied`, with an exact-match hash of the host routes in front of the trie.
    front: [f64; 4],
    /// The policy's IPv4 prefixes as addresses, for xdp-filter (which holds exact ones).
    v4_addresses: Vec<Ipv4Addr>,
}

fn scaling(size: u32) -> anyhow::Result<Scaling> {
    let mut random = Xorshift(0x5ca1_ab1e ^ u64::from(size));
    let v4 = random_prefixes(&mut random, false, size);
    let v6 = random_prefixes(&mut random, true, size);
    let policy: Policy = v4.iter().chain(&v6).copied().zip(0..).collect();
    let mut dataplane = Dataplane::load_for_bench((2 * size).max(1024))
        .context("loading the XDP program (are you root?)")?;
    dataplane.apply(&policy).context("writing the policy")?;
    dataplane.set_mode(Mode::Enforce)?;
    dataplane.set_replies(Replies {
        enabled: false,
        ..Replies::default()
    })?;
    dataplane.bench_host_routes()?;
    let sources = |nets: &[IpNet], random: &mut Xorshift, allowed: bool| -> Vec<IpAddr> {
        let mut sources = Vec::with_capacity(VARIED_SOURCES);
        for _ in 0..VARIED_SOURCES * 100 {
            if sources.len() == VARIED_SOURCES {
                break;
            }
            let source = if allowed {
                let pick = (random.next() % nets.len() as u64) as usize;
                inside(random, &nets[pick])
            } else if nets[0].addr().is_ipv4() {
                IpAddr::V4(Ipv4Addr::from(random.next() as u32))
            } else {
                let bits = (u128::from(random.next()) << 64 | u128::from(random.next())) >> 3
                    | (1u128 << 125);
                IpAddr::V6(Ipv6Addr::from(bits))
            };
            if policy.lookup(source).is_some() == allowed {
                sources.push(source);
            }
        }
        sources
    };
    let cases = [
        sources(&v4, &mut random, true),
        sources(&v4, &mut random, false),
        sources(&v6, &mut random, true),
        sources(&v6, &mut random, false),
    ];
    anyhow::ensure!(
        cases.iter().all(|sources| !sources.is_empty()),
        "no sources found for a case at {size} prefixes"
    );
    let frames: Vec<Vec<u8>> = cases.iter().map(|sources| udp_frame(sources[0])).collect();
    let floor_frame = udp_frame(cases[0][0]);
    let mut floor = Vec::new();
    let mut varied: [Vec<f64>; 4] = Default::default();
    let mut front: [Vec<f64>; 4] = Default::default();
    let mut repeated: [Vec<Duration>; 4] = Default::default();
    for _ in 0..SCALING_RUNS {
        floor.push(dataplane.bench_floor(&floor_frame, REPEAT)?);
        for (case, sources) in cases.iter().enumerate() {
            let expected = if case % 2 == 0 { BENCH_LOOPS as u64 } else { 0 };
            dataplane.bench_sources(sources)?;
            let (without, _) = dataplane.bench_varied(false, false, VARIED_REPEAT)?;
            for (hash_in_front, samples) in [(false, &mut varied), (true, &mut front)] {
                let (with, found) = dataplane.bench_varied(true, hash_in_front, VARIED_REPEAT)?;
                anyhow::ensure!(
                    found == expected,
                    "the varied-source run found {found} of {BENCH_LOOPS} sources, expected \
                     {expected}"
                );
                let per_lookup =
                    (with.as_nanos() as f64 - without.as_nanos() as f64) / f64::from(BENCH_LOOPS);
                samples[case].push(per_lookup.max(0.0));
            }
            repeated[case].push(dataplane.run_frame(&frames[case], REPEAT)?.duration);
        }
    }
    let median_f = |mut samples: Vec<f64>| {
        samples.sort_by(f64::total_cmp);
        samples[samples.len() / 2]
    };
    Ok(Scaling {
        size,
        floor: median(floor),
        varied: varied.map(median_f),
        repeated: repeated.map(median),
        front: front.map(median_f),
        v4_addresses: v4
            .iter()
            .filter_map(|net| match net {
                IpNet::V4(net) => Some(net.network()),
                IpNet::V6(_) => None,
            })
            .collect(),
    })
}

fn median(mut samples: Vec<Duration>) -> f64 {
    samples.sort();
    samples[samples.len() / 2].as_nanos() as f64
}

fn main() -> anyhow::Result<()> {
    let report = std::env::args()
        .nth(1)
        .unwrap_or_else(|| "bench/RESULTS.md".to_owned());
    let mut dataplane =
        Dataplane::load(4096, 4096).context("loading the XDP program (are you root?)")?;
    eprintln!("allowlist-bench: the reply check");
    dataplane.apply(&policy()).context("writing the policy")?;
    dataplane.set_mode(Mode::Enforce)?;
    let cases = [
        ("IPv4, allowed source", IpAddr::V4(ALLOWED_V4)),
        ("IPv4, denied source", IpAddr::V4(DENIED_V4)),
        ("IPv6, allowed source", IpAddr::V6(ALLOWED_V6)),
        ("IPv6, denied source", IpAddr::V6(DENIED_V6)),
    ];
    let frames: Vec<Vec<u8>> = cases.iter().map(|(_, source)| udp_frame(*source)).collect();
    // samples[case][replies off = 0, on = 1]
    let mut samples = vec![[Vec::new(), Vec::new()]; cases.len()];
    for _ in 0..RUNS {
        for (slot, enabled) in [(0, false), (1, true)] {
            dataplane.set_replies(Replies {
                enabled,
                ..Replies::default()
            })?;
            for (case, frame) in frames.iter().enumerate() {
                samples[case][slot].push(dataplane.run_frame(frame, REPEAT)?.duration);
            }
        }
    }

    let kernel = std::fs::read_to_string("/proc/sys/kernel/osrelease").unwrap_or_default();
    let cpus = std::thread::available_parallelism().map_or(0, usize::from);
    let mut text = String::new();
    writeln!(text, "# Data-path benchmark\n")?;
    writeln!(
        text,
        "Per-packet time of the XDP program as the kernel measures it (`BPF_PROG_TEST_RUN`, \
         repeat {REPEAT}, median of {RUNS} interleaved runs), enforce mode, {PREFIXES} random \
         prefixes plus the allowed sources, the same UDP frame repeated. Kernel {}, {cpus} CPUs.\n",
        kernel.trim()
    )?;
    writeln!(text, "Command: `cargo xtask bench` (as root).\n")?;
    writeln!(text, "## The reply check\n")?;
    writeln!(
        text,
        "The check for replies to flows the host started runs only for sources outside the \
         allowlist: an allowed source should cost the same with replies on and off.\n"
    )?;
    writeln!(
        text,
        "| packet | replies off (ns) | replies on (ns) | difference (ns) | ratio on/off |"
    )?;
    writeln!(text, "|---|---:|---:|---:|---:|")?;
    let mut allowed_costs = Vec::new();
    for ((name, _), [off, on]) in cases.iter().zip(samples) {
        let (off, on) = (median(off), median(on));
        writeln!(
            text,
            "| {name} | {off:.0} | {on:.0} | {:+.0} | {:.2} |",
            on - off,
            on / off
        )?;
        if name.contains("allowed") {
            allowed_costs.push(on - off);
        }
    }
    let worst = allowed_costs.iter().copied().fold(f64::MIN, f64::max);
    writeln!(
        text,
        "\nTarget: the reply check costs an allowed source under 5 ns. Measured: at most {worst:+.0} ns \
         ({}); the kernel reports whole nanoseconds.",
        if worst < 5.0 { "met" } else { "missed" }
    )?;
    let mut results = Vec::new();
    let mut peer = Vec::new();
    for size in SIZES {
        eprintln!("allowlist-bench: {size} prefixes per family");
        let result = scaling(size)?;
        peer.push((
            size,
            xdp_filter(&result.v4_addresses).context("measuring xdp-filter")?,
        ));
        results.push(result);
    }
    scaling_report(&mut text, &results)?;
    peer_report(&mut text, &results, &peer)?;
    let mut control = Vec::new();
    for size in CONTROL_SIZES {
        eprintln!("allowlist-bench: the API with {size} entries");
        control.push(control_plane(size).context("timing the API")?);
    }
    control_report(&mut text, &control)?;
    eprintln!("allowlist-bench: a trafgen flood");
    flood_report(&mut text, &flood().context("the trafgen flood")?)?;
    let report_path = std::path::Path::new(&report);
    let chart_path = report_path.with_file_name("datapath.svg");
    writeln!(
        text,
        "
![per-packet cost by policy size]({})",
        chart_path
            .file_name()
            .map(|name| name.to_string_lossy().into_owned())
            .unwrap_or_default()
    )?;
    if let Some(dir) = report_path.parent() {
        std::fs::create_dir_all(dir)?;
    }
    std::fs::write(&chart_path, chart(&results))
        .with_context(|| format!("writing {}", chart_path.display()))?;
    std::fs::write(&report, &text).with_context(|| format!("writing {report}"))?;
    print!("{text}");
    println!("\nwritten to {report}");
    Ok(())
}

/// Writes the scaling section of the report: the table, the targets and the chart.
fn scaling_report(text: &mut String, results: &[Scaling]) -> anyhow::Result<()> {
    writeln!(text, "\n## Scaling with the policy size\n")?;
    writeln!(
        text,
        "Policies of N IPv4 and N IPv6 prefixes (half host routes, half IPv4 /20-/31 and IPv6 \
         /32-/64), median of {SCALING_RUNS} interleaved runs. *Floor*: a program that only \
         returns `XDP_DROP`, run on the same frame ({REPEAT} repeats). *Varied*: the \
         allowlist's lookup and hit count over {BENCH_LOOPS} sources per test run drawn at \
         random from {VARIED_SOURCES} (`bpf_loop`, {VARIED_REPEAT} runs per sample), minus \
         the same loop without the lookup: the classification cost when every packet has \
         another source, the figure of record. *Repeated*: the whole program on one frame \
         repeated (warm caches).\n"
    )?;
    writeln!(
        text,
        "| prefixes per family | floor (ns) | IPv4 allowed, varied (ns) | IPv4 denied, varied | \
         IPv6 allowed, varied | IPv6 denied, varied | IPv4 allowed, repeated | IPv4 denied, \
         repeated | IPv6 allowed, repeated | IPv6 denied, repeated |"
    )?;
    writeln!(text, "|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|")?;
    for r in results {
        writeln!(
            text,
            "| {} | {:.0} | {:.0} | {:.0} | {:.0} | {:.0} | {:.0} | {:.0} | {:.0} | {:.0} |",
            r.size,
            r.floor,
            r.varied[0],
            r.varied[1],
            r.varied[2],
            r.varied[3],
            r.repeated[0],
            r.repeated[1],
            r.repeated[2],
            r.repeated[3]
        )?;
    }
    writeln!(text, "\n### Targets\n")?;
    writeln!(
        text,
        "Per-packet cost = floor + varied classification cost (the worse of allowed and \
         denied), as a multiple of the floor, same run.\n"
    )?;
    writeln!(text, "| target | measured | verdict |")?;
    writeln!(text, "|---|---:|---|")?;
    let targets = [
        ("IPv4, 1k prefixes", 1_000, 0, 1.5),
        ("IPv4, 1M prefixes", 1_000_000, 0, 2.0),
        ("IPv6, 1k prefixes", 1_000, 2, 2.0),
        ("IPv6, 1M prefixes", 1_000_000, 2, 3.0),
    ];
    let mut missed = false;
    for (name, size, family, limit) in targets {
        let Some(r) = results.iter().find(|r| r.size == size) else {
            continue;
        };
        let cost = r.varied[family].max(r.varied[family + 1]);
        let ratio = (r.floor + cost) / r.floor;
        missed |= ratio > limit;
        writeln!(
            text,
            "| {name}: at most {limit}x the floor | {ratio:.2}x ({:.0} + {cost:.0} ns) | {} |",
            r.floor,
            if ratio <= limit { "met" } else { "missed" }
        )?;
    }
    if missed {
        writeln!(
            text,
            "\nA target missed is a finding. The floor here is the kernel's test run of a program \
             that touches no memory; any lookup in a table too big for the CPU's caches costs \
             more than that. The kernel's LPM trie walks one node per distinguishing prefix \
             bit, each node a likely cache miss once keys vary: the varied column grows with the \
             table while the repeated one (warm caches) barely moves. Published kernel figures \
             for the trie with varied keys are ~85 ns at 1k and ~665 ns at 1M. A structure in \
             front of the trie that could earn its place: an exact-match hash of the host \
             routes (half of these policies, and most of real allowlists), one bucket probe \
             instead of a 32- or 128-level walk, with the trie kept as the map of record for \
             the shorter prefixes. It is measured below."
        )?;
    }
    writeln!(
        text,
        "\n### A hash of the host routes in front of the trie\n"
    )?;
    writeln!(
        text,
        "The same varied-source runs with every source first looked up in an exact-match hash \
         of the policy's host routes (/32, /128), the trie only on a miss. Half the allowed \
         sources here fall in host routes, half in shorter prefixes (a hash miss, then the \
         trie); denied sources always pay both. Classification cost in ns, trie alone → \
         with the hash in front.\n"
    )?;
    writeln!(
        text,
        "| prefixes per family | IPv4 allowed | IPv4 denied | IPv6 allowed | IPv6 denied |"
    )?;
    writeln!(text, "|---:|---:|---:|---:|---:|")?;
    for r in results {
        let cell = |i: usize| format!("{:.0} → {:.0}", r.varied[i], r.front[i]);
        writeln!(
            text,
            "| {} | {} | {} | {} | {} |",
            r.size,
            cell(0),
            cell(1),
            cell(2),
            cell(3)
        )?;
    }
    let change = |r: &Scaling, i: usize| 100.0 * (r.front[i] - r.varied[i]) / r.varied[i].max(1.0);
    for r in results.iter().filter(|r| r.size >= 1_000) {
        writeln!(
            text,
            "{}At {} prefixes the hash changes allowed sources by {:+.0}% (IPv4) and {:+.0}% \
             (IPv6), denied ones by {:+.0}% and {:+.0}%.",
            if r.size == 1_000 { "\n" } else { "" },
            r.size,
            change(r, 0),
            change(r, 2),
            change(r, 1),
            change(r, 3)
        )?;
    }
    writeln!(
        text,
        "\nThe hash pays where host routes dominate a large policy and costs everyone else (a \
         flood of denied sources most): it is a candidate for large host-route lists, not a \
         default, and the data path keeps the trie alone."
    )?;
    Ok(())
}

/// Writes the comparison with xdp-filter.
fn peer_report(
    text: &mut String,
    results: &[Scaling],
    peer: &[(u32, Option<[f64; 2]>)],
) -> anyhow::Result<()> {
    writeln!(text, "\n### Against xdp-filter\n")?;
    writeln!(
        text,
        "`xdp-filter` from Debian's xdp-tools, loaded in skb mode with `--policy allow` (a \
         deny list) holding the same N IPv4 prefixes as the allowlist, as addresses (it holds \
         exact addresses only, 10 000 at most: a host route as it is, a shorter prefix by its \
         first address), timed by `bpftool prog run` ({REPEAT} repeats, median of {SCALING_RUNS}) on a \
         frame from a listed and from an unlisted source. Beside it, the allowlist on one \
         repeated IPv4 frame from an allowed and from a denied source, same run. The target: \
         never slower (the worse case of each compared).\n"
    )?;
    writeln!(
        text,
        "| IPv4 entries | xdp-filter listed (ns) | xdp-filter unlisted (ns) | allowlist allowed \
         (ns) | allowlist denied (ns) | ratio allowlist / xdp-filter | verdict |"
    )?;
    writeln!(text, "|---:|---:|---:|---:|---:|---:|---|")?;
    for ((size, measured), r) in peer.iter().zip(results) {
        match measured {
            Some([listed, unlisted]) => {
                let ours = r.repeated[0].max(r.repeated[1]);
                let theirs = listed.max(*unlisted);
                writeln!(
                    text,
                    "| {size} | {listed:.0} | {unlisted:.0} | {:.0} | {:.0} | {:.2} | {} |",
                    r.repeated[0],
                    r.repeated[1],
                    ours / theirs,
                    if ours <= theirs { "met" } else { "missed" }
                )?;
            }
            None => writeln!(
                text,
                "| {size} | cannot hold | | {:.0} | {:.0} | | |",
                r.repeated[0], r.repeated[1]
            )?,
        }
    }
    Ok(())
}

/// A bar chart of the varied-source per-packet cost (floor + classification) by policy size.
fn chart(results: &[Scaling]) -> String {
    let (width, height, left, bottom, top) = (760.0, 360.0, 70.0, 50.0, 40.0);
    type Series = (&'static str, &'static str, fn(&Scaling) -> f64);
    let series: [Series; 3] = [
        ("XDP_DROP floor", "#9e9e9e", |r| r.floor),
        ("IPv4, varied sources", "#1f77b4", |r| {
            r.floor + r.varied[0].max(r.varied[1])
        }),
        ("IPv6, varied sources", "#d62728", |r| {
            r.floor + r.varied[2].max(r.varied[3])
        }),
    ];
    let max = results
        .iter()
        .flat_map(|r| series.iter().map(move |(_, _, f)| f(r)))
        .fold(1.0, f64::max);
    let plot_h = height - bottom - top;
    let group_w = (width - left - 20.0) / results.len().max(1) as f64;
    let bar_w = group_w / (series.len() as f64 + 1.0);
    let mut svg = format!(
        "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"{width}\" height=\"{height}\" \
         font-family=\"sans-serif\" font-size=\"12\">\n<rect width=\"100%\" height=\"100%\" \
         fill=\"white\"/>\n<text x=\"{left}\" y=\"22\" font-size=\"14\">Per-packet cost with \
         varied sources (ns), by prefixes per family</text>\n"
    );
    for step in 0..=4 {
        let value = max * f64::from(step) / 4.0;
        let y = height - bottom - plot_h * f64::from(step) / 4.0;
        svg += &format!(
            "<line x1=\"{left}\" y1=\"{y:.1}\" x2=\"{:.1}\" y2=\"{y:.1}\" stroke=\"#ddd\"/>\
             <text x=\"{:.1}\" y=\"{:.1}\" text-anchor=\"end\">{value:.0}</text>\n",
            width - 20.0,
            left - 6.0,
            y + 4.0
        );
    }
    for (i, r) in results.iter().enumerate() {
        let x0 = left + group_w * i as f64 + bar_w / 2.0;
        for (j, (_, color, value)) in series.iter().enumerate() {
            let v = value(r);
            let h = plot_h * v / max;
            svg += &format!(
                "<rect x=\"{:.1}\" y=\"{:.1}\" width=\"{:.1}\" height=\"{h:.1}\" fill=\"{color}\">\
                 <title>{v:.0} ns</title></rect>\n",
                x0 + bar_w * j as f64,
                height - bottom - h,
                bar_w * 0.9
            );
        }
        svg += &format!(
            "<text x=\"{:.1}\" y=\"{:.1}\" text-anchor=\"middle\">{}</text>\n",
            x0 + bar_w * series.len() as f64 / 2.0,
            height - bottom + 18.0,
            r.size
        );
    }
    for (j, (name, color, _)) in series.iter().enumerate() {
        let x = left + 190.0 * j as f64;
        svg += &format!(
            "<rect x=\"{x:.1}\" y=\"{:.1}\" width=\"12\" height=\"12\" fill=\"{color}\"/>\
             <text x=\"{:.1}\" y=\"{:.1}\">{name}</text>\n",
            height - 20.0,
            x + 16.0,
            height - 10.0
        );
    }
    svg + "</svg>\n"
}

/// Per-packet time of xdp-filter (Debian's xdp-tools) in deny mode holding the addresses
/// `listed`, on a frame from a listed (dropped) and from an unlisted (passed) source, as
/// `bpftool prog run` measures it: medians of `SCALING_RUNS` runs. It holds 10 000 addresses
/// at most: `None` beyond that.
fn xdp_filter(listed: &[Ipv4Addr]) -> anyhow::Result<Option<[f64; 2]>> {
    const CAPACITY: usize = 10_000;
    if listed.len() > CAPACITY || listed.is_empty() {
        return Ok(None);
    }
    let link = TestLink::create()?;
    let netns = format!("--net={}", link.server.path());
    let in_netns = |args: &[&str]| -> anyhow::Result<std::process::Output> {
        let output = std::process::Command::new("nsenter")
            .arg(&netns)
            .args(args)
            .output()
            .with_context(|| format!("running {args:?}"))?;
        anyhow::ensure!(
            output.status.success(),
            "{args:?}: {}",
            String::from_utf8_lossy(&output.stderr)
        );
        Ok(output)
    };
    let outcome = (|| -> anyhow::Result<[f64; 2]> {
        in_netns(&["xdp-filter", "load", "-m", "skb", "-p", "allow", SERVER_IF])?;
        for addr in listed {
            in_netns(&["xdp-filter", "ip", "-m", "src", &addr.to_string()])?;
        }
        let shown = in_netns(&["ip", "-j", "-d", "link", "show", SERVER_IF])?;
        let shown: serde_json::Value = serde_json::from_slice(&shown.stdout)?;
        let id = shown[0]["xdp"]["prog"]["id"]
            .as_u64()
            .context("xdp-filter's program id")?;
        let unlisted = Ipv4Addr::new(203, 0, 113, 9);
        anyhow::ensure!(!listed.contains(&unlisted));
        let mut samples: [Vec<f64>; 2] = Default::default();
        let dir = std::env::temp_dir().join(format!("allowlist-bench-{}", std::process::id()));
        std::fs::create_dir_all(&dir)?;
        let frames = [listed[0], unlisted].map(|source| udp_frame(IpAddr::V4(source)));
        let paths = [dir.join("listed.bin"), dir.join("unlisted.bin")];
        for (frame, path) in frames.iter().zip(&paths) {
            std::fs::write(path, frame)?;
        }
        for _ in 0..SCALING_RUNS {
            for (case, path) in paths.iter().enumerate() {
                let output = std::process::Command::new("bpftool")
                    .args(["prog", "run", "id", &id.to_string(), "data_in"])
                    .arg(path)
                    .args(["repeat", &REPEAT.to_string()])
                    .output()
                    .context("running bpftool")?;
                let text = String::from_utf8_lossy(&output.stdout).into_owned()
                    + &String::from_utf8_lossy(&output.stderr);
                let ns = text
                    .split("duration (average): ")
                    .nth(1)
                    .and_then(|rest| rest.split("ns").next())
                    .and_then(|n| n.trim().parse::<f64>().ok())
                    .with_context(|| format!("bpftool prog run said: {text}"))?;
                samples[case].push(ns);
            }
        }
        let _ = std::fs::remove_dir_all(&dir);
        Ok(samples.map(|mut s| {
            s.sort_by(f64::total_cmp);
            s[s.len() / 2]
        }))
    })();
    let _ = in_netns(&["xdp-filter", "unload", "--all", SERVER_IF]);
    let _ = std::fs::remove_dir_all("/sys/fs/bpf/xdp-filter");
    // libxdp's own directory, if xdp-filter left it empty.
    let _ = std::fs::remove_dir("/sys/fs/bpf/xdp");
    outcome.map(Some)
}

/// List sizes of the control-plane benchmark.
const CONTROL_SIZES: [u32; 3] = [10_000, 100_000, 1_000_000];

/// Seconds the API took, and the daemon's memory, for one list size.
struct ControlPlane {
    size: u32,
    create: f64,
    enable: f64,
    replace: f64,
    peak_rss_mib: f64,
}

/// Times, through the API of a release allowlistd in a namespace, creating a list of `size`
/// IPv4 /32 entries, enabling it and replacing it with `size` other entries.
fn control_plane(size: u32) -> anyhow::Result<ControlPlane> {
    let link = TestLink::create()?;
    let state = TempDir::new()?;
    let max_entries = (2 * size).to_string();
    let daemon = Daemon::start(
        &link,
        state.path(),
        &[
            "--max-entries",
            &max_entries,
            "--max-body-bytes",
            "536870912",
            "--ack-min",
            "1s",
            "--ack-max",
            "10m",
        ],
    )?;
    let body = |base: u32| {
        let entries: Vec<serde_json::Value> = (0..size)
            .map(|n| serde_json::json!({ "cidr": Ipv4Addr::from(base + n).to_string() }))
            .collect();
        serde_json::json!({ "name": "big", "entries": entries })
    };
    let timed = |method: &str, path: &str, body: Option<&serde_json::Value>, status: u16| {
        let started = std::time::Instant::now();
        let response = daemon.call(method, path, body);
        let elapsed = started.elapsed().as_secs_f64();
        anyhow::ensure!(
            response.status == status,
            "{method} {path}: {}",
            response.body
        );
        Ok((elapsed, response))
    };
    let (create, created) = timed("POST", "/v1/allowlists", Some(&body(0x0a00_0000)), 201)?;
    let id = created.body["id"].as_str().context("id")?.to_owned();
    let (enable, _) = timed(
        "POST",
        "/v1/enforcement/enable",
        Some(&serde_json::json!({ "allowlist_ids": [id], "force": true })),
        202,
    )?;
    std::thread::sleep(Duration::from_millis(1050));
    timed("POST", "/v1/enforcement/acknowledge", None, 200)?;
    let (replace, _) = timed(
        "PUT",
        &format!("/v1/allowlists/{id}"),
        Some(&body(0x0b00_0000)),
        200,
    )?;
    let peak_rss_mib = daemon
        .peak_rss_kib()
        .map_or(f64::NAN, |kib| kib as f64 / 1024.0);
    Ok(ControlPlane {
        size,
        create,
        enable,
        replace,
        peak_rss_mib,
    })
}

/// Writes the control-plane section of the report.
fn control_report(text: &mut String, results: &[ControlPlane]) -> anyhow::Result<()> {
    writeln!(text, "\n## Control plane\n")?;
    writeln!(
        text,
        "A release `allowlistd` in a namespace, driven over its HTTP API: create a list of N \
         IPv4 host entries, enable it (the kernel gets the policy), acknowledge, then replace \
         it with N other entries (written beside the old policy, then switched). Wall time of \
         each request as the client sees it (JSON included); the daemon's peak RSS (`VmHWM`) \
         after the three.\n"
    )?;
    writeln!(
        text,
        "| entries | create (s) | enable (s) | create + enable (s) | replace (s) | peak RSS (MiB) |"
    )?;
    writeln!(text, "|---:|---:|---:|---:|---:|---:|")?;
    for r in results {
        writeln!(
            text,
            "| {} | {:.2} | {:.2} | {:.2} | {:.2} | {:.0} |",
            r.size,
            r.create,
            r.enable,
            r.create + r.enable,
            r.replace,
            r.peak_rss_mib
        )?;
    }
    writeln!(text, "\n| target | measured | verdict |")?;
    writeln!(text, "|---|---:|---|")?;
    let verdict = |ok: bool| if ok { "met" } else { "missed" };
    for (size, limit) in [(1_000_000, 5.0), (100_000, 0.5)] {
        if let Some(r) = results.iter().find(|r| r.size == size) {
            let took = r.create + r.enable;
            writeln!(
                text,
                "| {size} entries created and enabled in under {limit} s | {took:.2} s ({:.2}x) | {} |",
                took / limit,
                verdict(took < limit)
            )?;
        }
    }
    if let Some(r) = results.iter().find(|r| r.size == 100_000) {
        writeln!(
            text,
            "| peak RSS under 64 MiB at 100k entries | {:.0} MiB ({:.2}x) | {} |",
            r.peak_rss_mib,
            r.peak_rss_mib / 64.0,
            verdict(r.peak_rss_mib < 64.0)
        )?;
        if r.peak_rss_mib >= 64.0 {
            writeln!(
                text,
                "\nWhere the memory goes (a finding): each change is a transaction on a whole \
                 copy of the model, the kernel's fallback is computed from another copy (the \
                 model as a revert would leave it), the daemon mirrors the three policy \
                 generations it wrote, and the state file and the response are serialized in \
                 full; glibc keeps what the API's worker threads freed in per-thread arenas \
                 (with `MALLOC_ARENA_MAX=1` the same run peaked at about 100 MiB at 100k). \
                 Sharing entries between copies (`Arc`) and streaming the state file are the \
                 next steps."
            )?;
        }
    }
    Ok(())
}

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

/// The MAC address of `interface` in `ns`.
fn mac(ns: &allowlist_tests::netns::NetNs, interface: &str) -> anyhow::Result<String> {
    let shown = ns.ip(&["-j", "link", "show", interface])?;
    let shown: serde_json::Value = serde_json::from_slice(&shown.stdout)?;
    shown[0]["address"]
        .as_str()
        .map(str::to_owned)
        .with_context(|| format!("no MAC address for {interface}"))
}

/// Packets `interface` in `ns` sent (`tx`) or received (`rx`).
fn packets(ns: &allowlist_tests::netns::NetNs, interface: &str, way: &str) -> anyhow::Result<u64> {
    let shown = ns.ip(&["-j", "-s", "link", "show", interface])?;
    let shown: serde_json::Value = serde_json::from_slice(&shown.stdout)?;
    shown[0]["stats64"][way]["packets"]
        .as_u64()
        .with_context(|| format!("no {way} packet count for {interface}"))
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
    let config = std::env::temp_dir().join(format!("allowlist-flood-{}.cfg", std::process::id()));
    std::fs::write(
        &config,
        format!(
            "{{ eth(da={}, sa={}), ipv4(saddr={CLIENT_DENIED_V4}, daddr={SERVER_V4}), \
             udp(sp=4000, dp=9), fill(0x00, 18) }}\n",
            mac(&link.server, SERVER_IF)?,
            mac(&link.client, CLIENT_IF)?
        ),
    )?;
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
            let output = std::process::Command::new("nsenter")
                .arg(format!("--net={}", link.client.path()))
                .args(["trafgen", "-o", CLIENT_IF, "-i"])
                .arg(&config)
                // A rate (-b) makes trafgen send packet by packet, which rides out a full
                // veth ring; its TX_RING path gives up with EAGAIN. The rate is above what
                // one CPU reaches here: the fastest the machine gives.
                .args([
                    "-n",
                    &FLOOD_PACKETS.to_string(),
                    "-P",
                    "1",
                    "-b",
                    "5000000pps",
                ])
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
    let _ = std::fs::remove_file(&config);
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
    let counters = dataplane.interface_counters()?;
    counters
        .iter()
        .find(|(interface, _)| interface == SERVER_IF)
        .map(|(_, counters)| counters.get(allowlist_common::Counter::Dropped))
        .context("no counters for the server interface")
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
