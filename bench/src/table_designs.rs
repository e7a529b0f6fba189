//! Two ways to size the range tables to their policy, measured before choosing: tables in
//! inner maps (`BPF_F_INNER_MAP`: created at any size, but each lookup a helper call where
//! today's flat arrays are inlined by the verifier), or flat tables created at their size
//! with the program loaded again to use them (lookups stay inlined, every change pays a
//! program load). The first costs every allowed packet, the second every change.

use std::fmt::Write as _;
use std::time::Instant;

use allowlist_common::bench::BENCH_LOOPS;
use allowlist_daemon::dataplane::{Dataplane, LookupDesign};
use anyhow::Context as _;

use crate::measure::median;

/// Runs of each measurement, interleaved; the median is reported.
const RUNS: usize = 9;
/// Test runs per measurement (each [`BENCH_LOOPS`] iterations).
const REPEAT: u32 = 200;

/// Measures both designs and writes the section.
pub fn table_designs_section(text: &mut String) -> anyhow::Result<()> {
    eprintln!("allowlist-bench: table designs (inner maps, program loads)");
    let mut dataplane =
        Dataplane::load_for_bench(1024).context("loading the programs (are you root?)")?;
    // samples[reads 1..=3][flat, inner], and the loop alone.
    let mut loops = Vec::new();
    let mut samples = vec![[Vec::new(), Vec::new()]; 3];
    for _ in 0..RUNS {
        loops.push(dataplane.bench_lookups(LookupDesign::Loop, 1, REPEAT)?);
        for reads in 1..=3u32 {
            for (slot, design) in [LookupDesign::Flat, LookupDesign::Inner].iter().enumerate() {
                let run = dataplane.bench_lookups(*design, reads, REPEAT)?;
                samples[reads as usize - 1][slot].push(run);
            }
        }
    }
    let floor = median(loops);
    let per_lookup = |run: f64, reads: u32| (run - floor) / f64::from(BENCH_LOOPS * reads);
    let mut loads = Vec::new();
    for _ in 0..5 {
        let started = Instant::now();
        drop(Dataplane::load(1024, 1024).context("loading the program")?);
        loads.push(started.elapsed());
    }
    let load_ms = median(loads) / 1e6;

    writeln!(text, "\n## Sizing the tables: two designs measured\n")?;
    writeln!(
        text,
        "Each lookup reads a random 64-byte line of a 64 MiB table, the next line depending \
         on the one read (as a bucket's leaf depends on the bucket), {BENCH_LOOPS} iterations \
         a test run, minus the loop alone; medians of {RUNS} interleaved runs.\n"
    )?;
    writeln!(
        text,
        "| dependent reads a packet | flat array (ns a lookup) | inner map (ns a lookup) | \
         inner map costs a packet |"
    )?;
    writeln!(text, "|---|---:|---:|---:|")?;
    for reads in 1..=3u32 {
        let [flat, inner] = &samples[reads as usize - 1];
        let flat = per_lookup(median(flat.clone()), reads);
        let inner = per_lookup(median(inner.clone()), reads);
        writeln!(
            text,
            "| {reads} | {flat:.1} | {inner:.1} | +{:.1} ns |",
            (inner - flat) * f64::from(reads)
        )?;
    }
    writeln!(
        text,
        "\nLoading the XDP and egress programs (what every change would pay to keep flat \
         tables sized to their policy): {load_ms:.0} ms, median of 5."
    )?;
    Ok(())
}
