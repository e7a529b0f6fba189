//! `cargo xtask bench`: what the XDP program costs per packet, measured by the kernel's test
//! run (`BPF_PROG_TEST_RUN` with a large `repeat`), as a median over interleaved runs so that
//! the configurations compared share the machine's noise; what the control plane costs at
//! large lists, beside nftables and ipset; a flood end to end, and the filter's own CPU under
//! floods beside nftables and iptables with ipset; a fleet of fifty followers. Writes a
//! Markdown report.
//!
//! Usage: allowlist-bench [--only SECTION]... [REPORT.md]
//!
//! SECTION is one of replies, preview, scaling, designs, memory, control, flood, peers,
//! fleet. A run of every section writes REPORT (bench/RESULTS.md by default); a run of some
//! writes only to standard output, unless a REPORT is named.

mod chart;
mod control_peers;
mod control_plane;
mod filter_cpu;
mod fleet_size;
mod flood;
mod kernel_memory;
mod measure;
mod preview;
mod replies;
mod scaling;
mod sources;
mod table_designs;
mod trafgen;
mod veth;
mod xdp_filter;

use std::fmt::Write as _;
use std::path::Path;

use anyhow::Context as _;

/// The report's sections, in order.
const SECTIONS: [&str; 9] = [
    "replies", "preview", "scaling", "designs", "memory", "control", "flood", "peers", "fleet",
];

fn main() -> std::process::ExitCode {
    match run() {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("error: {err:#}");
            std::process::ExitCode::FAILURE
        }
    }
}

/// Runs the sections asked for, every one without `--only`.
fn run() -> anyhow::Result<()> {
    let mut only = Vec::new();
    let mut report = None;
    let mut args = std::env::args().skip(1);
    while let Some(arg) = args.next() {
        if arg == "--only" {
            let section = args.next().context("--only needs a section")?;
            anyhow::ensure!(
                SECTIONS.contains(&section.as_str()),
                "unknown section {section:?}: one of {SECTIONS:?}"
            );
            only.push(section);
        } else {
            report = Some(arg);
        }
    }
    let runs = |section: &str| only.is_empty() || only.iter().any(|s| s == section);
    if report.is_none() && only.is_empty() {
        report = Some("bench/RESULTS.md".to_owned());
    }

    let kernel = std::fs::read_to_string("/proc/sys/kernel/osrelease").unwrap_or_default();
    let cpus = std::thread::available_parallelism().map_or(0, usize::from);
    let mut text = String::new();
    writeln!(text, "# Benchmarks\n")?;
    writeln!(
        text,
        "Kernel {}, {cpus} CPUs. Command: `cargo xtask bench` (as root).",
        kernel.trim()
    )?;
    if runs("replies") {
        eprintln!("allowlist-bench: the reply check");
        replies::reply_check(&mut text)?;
    }
    if runs("preview") {
        eprintln!("allowlist-bench: a preview running");
        preview::preview_section(&mut text)?;
    }
    let mut chart = None;
    if runs("scaling") {
        let results = scaling::scaling_section(&mut text)?;
        chart = Some(chart::chart(&results));
    }
    if runs("designs") {
        table_designs::table_designs_section(&mut text)?;
    }
    if runs("memory") {
        kernel_memory::kernel_memory_section(&mut text)?;
    }
    if runs("control") {
        control_plane::control_section(&mut text)?;
    }
    if runs("flood") {
        eprintln!("allowlist-bench: a trafgen flood");
        flood::flood_section(&mut text)?;
    }
    if runs("peers") {
        filter_cpu::filter_cpu_section(&mut text)?;
    }
    if runs("fleet") {
        eprintln!("allowlist-bench: a fleet of real size");
        fleet_size::fleet_section(&mut text)?;
    }
    print!("{text}");
    let Some(report) = report else {
        return Ok(());
    };
    let report_path = Path::new(&report);
    if let Some(dir) = report_path.parent() {
        std::fs::create_dir_all(dir)?;
    }
    if let Some(chart) = chart {
        let chart_path = report_path.with_file_name("datapath.svg");
        std::fs::write(&chart_path, chart)
            .with_context(|| format!("writing {}", chart_path.display()))?;
        writeln!(text, "\n![per-packet cost by policy size](datapath.svg)")?;
    }
    std::fs::write(report_path, &text).with_context(|| format!("writing {report}"))?;
    println!("\nwritten to {report}");
    Ok(())
}
