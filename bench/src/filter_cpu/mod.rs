//! The filter's own CPU per packet under a flood, beside its peers: trafgen floods through a
//! veth pair into the allowlist's XDP program, nftables' netdev ingress chain (interval set)
//! and iptables' raw chain with ipset (`hash:net`), the same prefixes and sources in each,
//! `perf` attributing the CPU time to each hook; each hook's time minus that of a do-nothing
//! variant in the same hook, run interleaved with it.

mod beds;
mod hook;

use std::fmt::Write as _;
use std::net::Ipv4Addr;

use allowlist_tests::netns::{CLIENT_IF, TestLink};
use anyhow::Context as _;

use crate::sources::{Xorshift, disjoint_v4_prefixes, v4_sources};
use crate::trafgen::TrafgenFlood;
use crate::veth::packets;
use beds::{Bed, FLOODS, SYSTEMS, Variant};

/// Policy sizes (IPv4 prefixes, half host routes, half /20 to /28, none overlapping).
const SIZES: [u32; 3] = [1_000, 100_000, 1_000_000];
/// Sizes the target applies to.
const TARGET_SIZES: [u32; 2] = [100_000, 1_000_000];
/// The target: the allowlist's own CPU per packet at most this multiple of the best peer's.
const TARGET_RATIO: f64 = 0.5;
/// Runs of each measurement, interleaved.
const REPEATS: usize = 5;
/// Packets one flood sends.
const PACKETS: u64 = 200_000;
/// Distinct sources of one flood, sent in turn.
const SOURCES: usize = 16_384;

/// A hook's CPU per packet, ns, in each repeat.
#[derive(Default)]
struct Runs {
    filter: Vec<f64>,
    do_nothing: Vec<f64>,
}

impl Runs {
    /// The filter's own time in each repeat: the hook's minus the do-nothing variant's.
    fn own(&self) -> Vec<f64> {
        self.filter
            .iter()
            .zip(&self.do_nothing)
            .map(|(filter, nothing)| filter - nothing)
            .collect()
    }
}

/// Every system's runs at one policy size: `runs[flood][system]`, in [`FLOODS`] and
/// [`SYSTEMS`] order.
struct SizeRuns {
    size: u32,
    runs: [[Runs; 3]; 2],
}

/// Measures every size and writes the section.
pub fn filter_cpu_section(text: &mut String) -> anyhow::Result<()> {
    let mut results = Vec::new();
    for size in SIZES {
        eprintln!("allowlist-bench: floods beside nftables and ipset, {size} prefixes");
        results.push(measure(size).with_context(|| format!("the floods at {size} prefixes"))?);
    }
    report(text, &results)
}

/// Sets the three systems up with `size` prefixes and floods each, filter and do-nothing
/// variant in turn, [`REPEATS`] times.
fn measure(size: u32) -> anyhow::Result<SizeRuns> {
    let prefixes = disjoint_v4_prefixes(0x5eed_f100d, size);
    let mut random = Xorshift(0xf100d);
    let sources = [
        v4_sources(&mut random, &prefixes, false, SOURCES),
        v4_sources(&mut random, &prefixes, true, SOURCES),
    ];
    let beds = SYSTEMS
        .iter()
        .map(|&system| {
            Bed::new(system, &prefixes).with_context(|| format!("setting up {}", system.name()))
        })
        .collect::<anyhow::Result<Vec<_>>>()?;
    let mut runs: [[Runs; 3]; 2] = Default::default();
    for _ in 0..REPEATS {
        for (flood_index, flood) in FLOODS.into_iter().enumerate() {
            for (bed, runs) in beds.iter().zip(&mut runs[flood_index]) {
                for variant in [Variant::Filter, Variant::DoNothing] {
                    let link = bed.prepare(variant, flood)?;
                    let ns = flood_through(link, bed.hook(variant), &sources[flood_index])
                        .with_context(|| {
                            format!("a {} flood into {}", flood.name(), bed.system.name())
                        })?;
                    match variant {
                        Variant::Filter => runs.filter.push(ns),
                        Variant::DoNothing => runs.do_nothing.push(ns),
                    }
                }
            }
        }
    }
    Ok(SizeRuns { size, runs })
}

/// Floods `link` from `sources` in turn ([`PACKETS`] UDP packets, trafgen on one CPU as fast
/// as it goes) and returns the CPU per packet, ns, of the samples in `hook`.
fn flood_through(link: &TestLink, hook: hook::Hook, sources: &[Ipv4Addr]) -> anyhow::Result<f64> {
    let trafgen = TrafgenFlood::udp(link, sources, PACKETS)?;
    let sent_before = packets(&link.client, CLIENT_IF, "tx")?;
    let hook_ns = hook::time_in(hook, trafgen.argv())?;
    let sent = packets(&link.client, CLIENT_IF, "tx")? - sent_before;
    anyhow::ensure!(sent > 0, "trafgen sent nothing");
    Ok(hook_ns / sent as f64)
}

/// The median and the range of `samples`.
fn spread(samples: &[f64]) -> (f64, f64, f64) {
    let mut sorted = samples.to_vec();
    sorted.sort_by(f64::total_cmp);
    let median = sorted.get(sorted.len() / 2).copied().unwrap_or(f64::NAN);
    let first = sorted.first().copied().unwrap_or(f64::NAN);
    let last = sorted.last().copied().unwrap_or(f64::NAN);
    (median, first, last)
}

/// `samples` as "median (min–max)".
fn shown(samples: &[f64]) -> String {
    let (median, first, last) = spread(samples);
    format!("{median:.0} ({first:.0}–{last:.0})")
}

/// Writes the section.
fn report(text: &mut String, results: &[SizeRuns]) -> anyhow::Result<()> {
    writeln!(text, "\n## Under a flood, beside nftables and ipset\n")?;
    writeln!(
        text,
        "`trafgen` sends {PACKETS} UDP packets from {SOURCES} sources in turn, on one CPU as fast \
         as it goes, through a veth pair into each system, on links of its own, loaded with the \
         same IPv4 prefixes (half host routes, half /20 to /28, none overlapping): the \
         allowlist's program (native XDP, enforcing, replies on), nftables' netdev ingress \
         chain (`ip saddr @allow accept; drop`, an interval set), iptables' raw PREROUTING chain \
         (`iptables-legacy`: `-m set --match-set allow src -j ACCEPT; -j DROP`, an ipset \
         `hash:net` set). Denied floods come from addresses outside every prefix, allowed ones \
         from addresses inside them. `perf record -a -g` (`cpu-clock`, a sample every {} µs: \
         no hardware counters here) attributes the CPU time to each hook: samples whose call \
         chain passes through the program (`bpf_prog_…_allowlist`), `nft_do_chain_netdev` or \
         `ipt_do_table`, per packet sent. Each hook is also timed with a do-nothing variant in \
         the same place, right after it (a program that only drops; a chain holding only the \
         flood's verdict): the filter's own cost is the difference. Medians of {REPEATS} \
         interleaved runs (range in brackets), ns per packet; the ratio is taken in each \
         repeat (the allowlist's beside the better peer's of the same repeat), its median \
         and range shown. The machine's speed drifts between runs (this section's absolute \
         figures moved by half from one run to the next): only the ratios compare.\n",
        hook::PERIOD_NS / 1000
    )?;
    writeln!(
        text,
        "| prefixes | flood | {} | {} | {} | allowlist / better peer |",
        SYSTEMS[0].name(),
        SYSTEMS[1].name(),
        SYSTEMS[2].name()
    )?;
    writeln!(text, "|---:|---|---:|---:|---:|---:|")?;
    let mut verdicts = Vec::new();
    for result in results {
        for (flood, runs) in FLOODS.iter().zip(&result.runs) {
            let own: Vec<Vec<f64>> = runs.iter().map(Runs::own).collect();
            // The ratio in each repeat: the allowlist's beside the better peer's, both
            // measured moments apart.
            let ratios: Vec<f64> = (0..own[0].len())
                .map(|i| own[0][i] / own[1][i].min(own[2][i]))
                .collect();
            let (ratio, low, high) = spread(&ratios);
            writeln!(
                text,
                "| {} | {} | {} | {} | {} | {ratio:.2} ({low:.2}–{high:.2}) |",
                result.size,
                flood.name(),
                shown(&own[0]),
                shown(&own[1]),
                shown(&own[2])
            )?;
            if TARGET_SIZES.contains(&result.size) {
                verdicts.push((result.size, *flood, ratio, low, high));
            }
        }
    }
    writeln!(
        text,
        "\nThe hooks' whole time, filter → do-nothing variant (medians, ns per packet):\n"
    )?;
    writeln!(
        text,
        "| prefixes | flood | {} | {} | {} |",
        SYSTEMS[0].name(),
        SYSTEMS[1].name(),
        SYSTEMS[2].name()
    )?;
    writeln!(text, "|---:|---|---:|---:|---:|")?;
    for result in results {
        for (flood, runs) in FLOODS.iter().zip(&result.runs) {
            let cells: Vec<String> = runs
                .iter()
                .map(|runs| {
                    format!(
                        "{:.0} → {:.0}",
                        spread(&runs.filter).0,
                        spread(&runs.do_nothing).0
                    )
                })
                .collect();
            writeln!(
                text,
                "| {} | {} | {} |",
                result.size,
                flood.name(),
                cells.join(" | ")
            )?;
        }
    }
    writeln!(text, "\n### Targets\n")?;
    writeln!(text, "| target | measured | verdict |")?;
    writeln!(text, "|---|---:|---|")?;
    for (size, flood, ratio, low, high) in verdicts {
        writeln!(
            text,
            "| {} flood, {size} prefixes: the allowlist's own CPU per packet at most \
             {TARGET_RATIO}x the best peer's | {ratio:.2}x ({low:.2}–{high:.2}) | {} |",
            flood.name(),
            crate::measure::verdict(ratio <= TARGET_RATIO)
        )?;
    }
    Ok(())
}
