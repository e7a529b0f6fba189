//! How the per-packet cost grows with the policy: the floor, the classification over varied
//! sources (the range tables beside the LPM tries alone), one repeated frame.

use std::fmt::Write as _;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::time::Duration;

use allowlist_common::Mode;
use allowlist_common::bench::BENCH_LOOPS;
use allowlist_daemon::dataplane::{Dataplane, Replies, VariedRun};
use allowlist_daemon::policy::Policy;
use allowlist_tests::frames::udp_frame;
use anyhow::Context as _;
use ipnet::IpNet;

use crate::measure::{REPEAT, median, verdict};
use crate::sources::{Xorshift, inside, random_prefixes};
use crate::xdp_filter::xdp_filter;

/// Policy sizes of the scaling benchmark (prefixes per address family).
const SIZES: [u32; 4] = [1, 1_000, 100_000, 1_000_000];
/// Runs of each scaling measurement; the median is reported.
pub const SCALING_RUNS: usize = 7;
/// Test runs per varied-source sample (each looks up `BENCH_LOOPS` sources).
const VARIED_REPEAT: u32 = 100;
/// Sources each varied-source sample draws from.
const VARIED_SOURCES: usize = 4096;

/// Medians of one policy size, in ns per packet.
pub struct Scaling {
    /// Prefixes per family.
    pub size: u32,
    /// The XDP_DROP floor.
    pub floor: f64,
    /// Varied-source classification cost: [v4 allowed, v4 denied, v6 allowed, v6 denied].
    pub varied: [f64; 4],
    /// The whole program on one repeated frame, same order.
    pub repeated: [f64; 4],
    /// As `varied`, through the LPM tries alone (the baseline).
    trie: [f64; 4],
    /// As `varied`, without counting the hit on the rule found.
    unhit: [f64; 4],
    /// The policy's IPv4 prefixes as addresses, for xdp-filter (which holds exact ones).
    pub v4_addresses: Vec<Ipv4Addr>,
}

/// Measures every policy size, beside xdp-filter, and writes the section; returns the
/// medians for the chart.
pub fn scaling_section(text: &mut String) -> anyhow::Result<Vec<Scaling>> {
    let mut results = Vec::new();
    let mut peer = Vec::new();
    for size in SIZES {
        eprintln!("allowlist-bench: {size} prefixes per family");
        let result = scaling(size)?;
        peer.push((
            size,
            xdp_filter(&result.v4_addresses, SCALING_RUNS).context("measuring xdp-filter")?,
        ));
        results.push(result);
    }
    scaling_report(text, &results)?;
    peer_report(text, &results, &peer)?;
    Ok(results)
}

/// Medians of one policy size.
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
    dataplane.bench_tries()?;
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
    let mut trie: [Vec<f64>; 4] = Default::default();
    let mut unhit: [Vec<f64>; 4] = Default::default();
    let mut repeated: [Vec<Duration>; 4] = Default::default();
    for _ in 0..SCALING_RUNS {
        floor.push(dataplane.bench_floor(&floor_frame, REPEAT)?);
        for (case, sources) in cases.iter().enumerate() {
            let expected = if case % 2 == 0 { BENCH_LOOPS as u64 } else { 0 };
            dataplane.bench_sources(sources)?;
            let draw_only = VariedRun {
                lookups: false,
                trie: false,
                hits: false,
            };
            let (without, _) = dataplane.bench_varied(draw_only, VARIED_REPEAT)?;
            for (trie_alone, hits) in [(false, true), (true, true), (false, false)] {
                let how = VariedRun {
                    lookups: true,
                    trie: trie_alone,
                    hits,
                };
                let (with, found) = dataplane.bench_varied(how, VARIED_REPEAT)?;
                anyhow::ensure!(
                    found == expected,
                    "the varied-source run found {found} of {BENCH_LOOPS} sources, expected \
                     {expected}"
                );
                let per_lookup =
                    (with.as_nanos() as f64 - without.as_nanos() as f64) / f64::from(BENCH_LOOPS);
                let samples = match (trie_alone, hits) {
                    (true, _) => &mut trie[case],
                    (false, true) => &mut varied[case],
                    (false, false) => &mut unhit[case],
                };
                samples.push(per_lookup.max(0.0));
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
        trie: trie.map(median_f),
        unhit: unhit.map(median_f),
        v4_addresses: v4
            .iter()
            .filter_map(|net| match net {
                IpNet::V4(net) => Some(net.network()),
                IpNet::V6(_) => None,
            })
            .collect(),
    })
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
        "Per-packet cost = floor + varied classification cost, as a multiple of the floor, \
         same run: the worse of allowed and denied sources for the family targets, denied \
         sources (what a flood is made of) for the flood targets.\n"
    )?;
    writeln!(text, "| target | measured | verdict |")?;
    writeln!(text, "|---|---:|---|")?;
    let ratio = |r: &Scaling, cost: f64| (r.floor + cost) / r.floor;
    let targets = [
        ("IPv4, 1k prefixes", 1_000, 0, 1.5),
        ("IPv4, 1M prefixes", 1_000_000, 0, 2.0),
        ("IPv6, 1k prefixes", 1_000, 2, 2.0),
        ("IPv6, 1M prefixes", 1_000_000, 2, 3.0),
    ];
    for (name, size, family, limit) in targets {
        let Some(r) = results.iter().find(|r| r.size == size) else {
            continue;
        };
        let cost = r.varied[family].max(r.varied[family + 1]);
        let x = ratio(r, cost);
        writeln!(
            text,
            "| {name}: at most {limit}x the floor | {x:.2}x ({:.0} + {cost:.0} ns) | {} |",
            r.floor,
            verdict(x <= limit)
        )?;
    }
    for r in results {
        for (family, case) in [("IPv4", 1), ("IPv6", 3)] {
            let x = ratio(r, r.varied[case]);
            writeln!(
                text,
                "| {family} denied sources, {} prefixes: at most 1.5x the floor | {x:.2}x \
                 ({:.0} + {:.0} ns) | {} |",
                r.size,
                r.floor,
                r.varied[case],
                verdict(x <= 1.5)
            )?;
        }
    }
    for r in results {
        for (what, case) in [
            ("IPv4 allowed", 0),
            ("IPv4 denied", 1),
            ("IPv6 allowed", 2),
            ("IPv6 denied", 3),
        ] {
            let (ours, trie) = (r.varied[case], r.trie[case]);
            writeln!(
                text,
                "| {what}, {} prefixes: never slower than the trie alone | {ours:.0} vs \
                 {trie:.0} ns ({:.2}x) | {} |",
                r.size,
                ours / trie.max(1.0),
                verdict(ours <= trie)
            )?;
        }
    }
    writeln!(
        text,
        "\nSources are classified by the range tables (`allowlist_common::ranges`): a bucket \
         per 16 bits of the address, one cache line. An IPv4 bucket of up to eight ranges \
         holds them in that line (the rule in one read); a larger one says which of its 256 \
         blocks hold an allowed address at all (a denied source elsewhere ends there) and \
         where each of its first 13 leaves starts: a leaf is one line of up to ten ranges \
         and their rules, so the rule is one more read (buckets of more than 130 ranges \
         search their leaves by halving). An IPv6 bucket of up to three ranges (one prefix \
         inside it) holds them in its line; larger ones list their ranges in shared arrays \
         (16-byte starts, searched by halving, then a read of the rule). IPv6 buckets start \
         after the \
         longest prefix every change point shares (a policy inside `2000::/3` spreads over \
         all of them). A family of at most five IPv4 or three IPv6 prefixes (the 1-prefix \
         policies here) is answered from a short list instead: one line, a compare per \
         prefix, longest first. Every read is an array lookup the verifier inlines. The cost \
         left is \
         cache misses: an IPv4 allowed source touches the bucket line, at most one leaf, and \
         the rule's hit counter (a per-CPU array of every rule, written on every allowed \
         packet); with 4096 sources and a table of 1M prefixes those lines outgrow the core's \
         1 MiB L2. The \
         floor is the kernel's test run of a program that touches no memory."
    )?;
    writeln!(text, "\n### Where an allowed source's time goes\n")?;
    writeln!(
        text,
        "The same runs of the range tables without counting the hit on the rule found (the \
         program counts every allowed packet on its rule, in a per-CPU array of every rule): \
         ns with the count → without it.\n"
    )?;
    writeln!(
        text,
        "| prefixes per family | IPv4 allowed | IPv6 allowed |"
    )?;
    writeln!(text, "|---:|---:|---:|")?;
    for r in results {
        writeln!(
            text,
            "| {} | {:.0} → {:.0} | {:.0} → {:.0} |",
            r.size, r.varied[0], r.unhit[0], r.varied[2], r.unhit[2]
        )?;
    }
    writeln!(text, "\n### The range tables beside the tries alone\n")?;
    writeln!(
        text,
        "The same varied-source runs, sources looked up in the kernel's LPM tries alone (the \
         structure the range tables replaced on the data path), same policy, same run. \
         Classification cost in ns, trie alone → range table.\n"
    )?;
    writeln!(
        text,
        "| prefixes per family | IPv4 allowed | IPv4 denied | IPv6 allowed | IPv6 denied |"
    )?;
    writeln!(text, "|---:|---:|---:|---:|---:|")?;
    for r in results {
        let cell = |i: usize| format!("{:.0} → {:.0}", r.trie[i], r.varied[i]);
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
    Ok(())
}

/// Writes the comparison with xdp-filter.
pub fn peer_report(
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
                    verdict(ours <= theirs)
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
