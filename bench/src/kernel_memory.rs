//! The kernel memory of every map the daemon creates, the flow table apart (sized by
//! `--max-flows` alone), for policies from none to a million prefixes with a replace
//! pending, beside ipset's `hash:net` set of the same prefixes, measured in the same run;
//! and what of it is held once per possible CPU.

use std::fmt::Write as _;
use std::path::Path;
use std::process::Command;
use std::time::Duration;

use allowlist_tests::daemon::{Daemon, TempDir};
use allowlist_tests::netns::TestLink;
use anyhow::Context as _;
use ipnet::IpNet;
use serde_json::{Value, json};

use crate::control_peers::ipset_memory_of;
use crate::measure::verdict;
use crate::sources::disjoint_v4_prefixes;

const MIB: f64 = 1024.0 * 1024.0;

/// What one daemon's maps took.
struct Measured {
    /// Every map but the flow table, as `GET /v1/stats` gives it, MiB.
    without_flows: f64,
    /// The largest maps, by name, MiB.
    largest: Vec<(String, f64)>,
    /// Bytes held once per possible CPU by the per-CPU maps (values and their share of
    /// an LRU's lists), from their layout.
    per_cpu_bytes: u64,
}

/// One case: a policy, and what the daemon and ipset took.
struct Case {
    what: &'static str,
    measured: Measured,
    /// ipset's set of the same prefixes, MiB.
    ipset: Option<f64>,
}

/// Measures each case and writes the section.
pub fn kernel_memory_section(text: &mut String) -> anyhow::Result<()> {
    let ten_thousand = disjoint_v4_prefixes(0x0a11_0c03, 10_000);
    let million = disjoint_v4_prefixes(0x0a11_0c01, 1_000_000);
    let other_million = disjoint_v4_prefixes(0x0a11_0c02, 1_000_000);
    let mut cases = Vec::new();
    for (what, args) in [
        ("no policy, defaults", &[][..]),
        (
            "no policy, `--max-entries 2097152`",
            &["--max-entries", "2097152"][..],
        ),
        (
            "no policy, `--max-entries 8388608`",
            &["--max-entries", "8388608"][..],
        ),
    ] {
        eprintln!("allowlist-bench: kernel memory, {what}");
        cases.push(Case {
            what,
            measured: measure(args, &[], None)?,
            ipset: None,
        });
    }
    eprintln!("allowlist-bench: kernel memory, 10k prefixes");
    cases.push(Case {
        what: "10k IPv4 prefixes enforced",
        measured: measure(&[], &ten_thousand, None)?,
        ipset: Some(ipset_memory_of(&ten_thousand)?),
    });
    eprintln!("allowlist-bench: kernel memory, 1M prefixes, a replace pending");
    cases.push(Case {
        what: "1M IPv4 prefixes, a replace by 1M others pending",
        measured: measure(
            &["--max-entries", "2097152"],
            &million,
            Some(&other_million),
        )?,
        ipset: Some(ipset_memory_of(&other_million)?),
    });
    report(text, &cases)
}

/// A daemon started with `args`, enforcing `prefixes` (if any), then replacing them with
/// `replacement` (pending, not acknowledged): what its maps take.
fn measure(
    args: &[&str],
    prefixes: &[IpNet],
    replacement: Option<&[IpNet]>,
) -> anyhow::Result<Measured> {
    let link = TestLink::create()?;
    let state = TempDir::new()?;
    let mut all = vec![
        "--max-body-bytes",
        "536870912",
        "--ack-min",
        "1s",
        "--ack-max",
        "10m",
    ];
    all.extend_from_slice(args);
    let daemon = Daemon::start(&link, state.path(), &all)?;
    if !prefixes.is_empty() {
        let created = call(&daemon, "POST", "/v1/allowlists", Some(list(prefixes)), 201)?;
        let id = created["id"].as_str().context("no list id")?.to_owned();
        let enable = json!({ "allowlist_ids": [id], "force": true });
        call(&daemon, "POST", "/v1/enforcement/enable", Some(enable), 202)?;
        std::thread::sleep(Duration::from_millis(1050));
        call(&daemon, "POST", "/v1/enforcement/acknowledge", None, 200)?;
        if let Some(replacement) = replacement {
            let path = format!("/v1/allowlists/{id}");
            call(&daemon, "PUT", &path, Some(list(replacement)), 200)?;
            let now = call(&daemon, "GET", "/v1/enforcement", None, 200)?;
            anyhow::ensure!(now["pending"] != Value::Null, "the replace is not pending");
        }
    }
    let stats = call(&daemon, "GET", "/v1/stats", None, 200)?;
    let memory = &stats["kernel_memory"];
    let without_flows = memory["without_flows_bytes"]
        .as_u64()
        .context("no kernel memory in /v1/stats")? as f64
        / MIB;
    let mut largest: Vec<(String, f64)> = memory["maps"]
        .as_array()
        .context("no maps in /v1/stats")?
        .iter()
        .filter(|map| map["map"] != "FLOWS")
        .filter_map(|map| {
            Some((
                map["map"].as_str()?.to_owned(),
                map["bytes"].as_f64()? / MIB,
            ))
        })
        .collect();
    largest.sort_by(|a, b| b.1.total_cmp(&a.1));
    largest.truncate(4);
    let per_cpu_bytes = per_cpu_bytes(&state.pin_dir())?;
    Ok(Measured {
        without_flows,
        largest,
        per_cpu_bytes,
    })
}

/// A list named `big` of `prefixes`.
fn list(prefixes: &[IpNet]) -> Value {
    let entries: Vec<Value> = prefixes
        .iter()
        .map(|net| json!({ "cidr": net.to_string() }))
        .collect();
    json!({ "name": "big", "entries": entries })
}

/// Sends a request; checks the status, gives the body.
fn call(
    daemon: &Daemon,
    method: &str,
    path: &str,
    body: Option<Value>,
    status: u16,
) -> anyhow::Result<Value> {
    let response = daemon.call(method, path, body.as_ref());
    anyhow::ensure!(
        response.status == status,
        "{method} {path}: {} {}",
        response.status,
        response.body
    );
    Ok(response.body)
}

/// Bytes the per-CPU maps pinned under `pin_dir` hold for each possible CPU: each value
/// (rounded up to 8 bytes) of every entry, as bpftool gives their layout.
fn per_cpu_bytes(pin_dir: &Path) -> anyhow::Result<u64> {
    Ok(pinned_maps(pin_dir)?
        .iter()
        .filter(|shown| shown["type"].as_str().is_some_and(|t| t.contains("percpu")))
        .map(|shown| {
            let value = shown["bytes_value"].as_u64().unwrap_or(0).div_ceil(8) * 8;
            value * shown["max_entries"].as_u64().unwrap_or(0)
        })
        .sum())
}

/// What `bpftool map show` says of each map pinned under `pin_dir` (any layout version).
pub fn pinned_maps(pin_dir: &Path) -> anyhow::Result<Vec<Value>> {
    let mut maps = Vec::new();
    for layout in std::fs::read_dir(pin_dir).context("reading the pin directory")? {
        let layout = layout?.path();
        if !layout.is_dir() {
            continue;
        }
        for pinned in std::fs::read_dir(layout)? {
            let output = Command::new("bpftool")
                .args(["-j", "map", "show", "pinned"])
                .arg(pinned?.path())
                .output()
                .context("running bpftool")?;
            // Links are pinned there too: bpftool refuses them as maps.
            if let Ok(shown) = serde_json::from_slice::<Value>(&output.stdout) {
                maps.push(shown);
            }
        }
    }
    Ok(maps)
}

/// The possible CPUs of this machine.
fn possible_cpus() -> u64 {
    std::fs::read_to_string("/sys/devices/system/cpu/possible")
        .ok()
        .map(|cpus| {
            cpus.trim()
                .split(',')
                .filter_map(|range| match range.split_once('-') {
                    Some((from, to)) => {
                        Some(to.parse::<u64>().ok()? - from.parse::<u64>().ok()? + 1)
                    }
                    None => Some(1),
                })
                .sum()
        })
        .unwrap_or(1)
}

/// Writes the section.
fn report(text: &mut String, cases: &[Case]) -> anyhow::Result<()> {
    writeln!(text, "\n## Kernel memory\n")?;
    writeln!(
        text,
        "Every map the daemon creates, the flow table apart (`--max-flows` sizes it alone), as \
         `GET /v1/stats` gives it (the kernel's own accounting, what `bpftool` shows as \
         `bytes_memlock`), beside the `Size in memory` of ipset's `hash:net` set of the same \
         prefixes, in the same run. The tables are sized to the policies in force (a class \
         with headroom above what they need, made again when they outgrow it or shrink far \
         below it), not to `--max-entries`.\n"
    )?;
    writeln!(
        text,
        "| policy | allowlist (MiB) | ipset (MiB) | largest maps (MiB) |"
    )?;
    writeln!(text, "|---|---:|---:|---|")?;
    for case in cases {
        let largest: Vec<String> = case
            .measured
            .largest
            .iter()
            .map(|(name, mib)| format!("{name} {mib:.2}"))
            .collect();
        writeln!(
            text,
            "| {} | {:.2} | {} | {} |",
            case.what,
            case.measured.without_flows,
            case.ipset.map_or("–".to_owned(), |mib| format!("{mib:.2}")),
            largest.join(", ")
        )?;
    }
    let cpus = possible_cpus();
    let per_cpu = cases
        .iter()
        .map(|case| case.measured.per_cpu_bytes)
        .max()
        .unwrap_or(0);
    let fixed = cases.first().map_or(0.0, |case| {
        case.measured.without_flows - (cpus * case.measured.per_cpu_bytes) as f64 / MIB
    });
    writeln!(
        text,
        "\nHeld once per possible CPU ({cpus} here): {:.0} KiB, whatever the policy (the \
         packet counters and the refused-source sample); nothing else grows with the CPU \
         count, and the daemon sizes nothing by it. On a 128-CPU host with no policy: about \
         {:.1} MiB ({fixed:.2} MiB + 128 x {:.0} KiB).",
        per_cpu as f64 / 1024.0,
        fixed + 128.0 * per_cpu as f64 / MIB,
        per_cpu as f64 / 1024.0,
    )?;

    writeln!(text, "\n### Targets\n")?;
    writeln!(text, "| target | measured | verdict |")?;
    writeln!(text, "|---|---|---|")?;
    let of = |what: &str| cases.iter().find(|case| case.what.starts_with(what));
    if let Some(defaults) = of("no policy, defaults") {
        let mib = defaults.measured.without_flows;
        writeln!(
            text,
            "| no policy, defaults: at most 8 MiB | {mib:.2} MiB | {} |",
            verdict(mib <= 8.0)
        )?;
        if let Some(ceiling) = of("no policy, `--max-entries 2097152`") {
            let at = ceiling.measured.without_flows;
            writeln!(
                text,
                "| no policy, `--max-entries 2097152`: within 1 MiB of the defaults | {at:.2} \
                 MiB ({:+.2}) | {} |",
                at - mib,
                verdict(at <= 8.0 && (at - mib).abs() <= 1.0)
            )?;
        }
    }
    for (what, base) in [("10k", 8.0), ("1M", 16.0)] {
        let Some(case) = of(what) else { continue };
        let Some(ipset) = case.ipset else { continue };
        let budget = base + 2.0 * ipset;
        writeln!(
            text,
            "| {}: at most {base:.0} MiB + 2x ipset ({ipset:.2} MiB) = {budget:.2} MiB | \
             {:.2} MiB ({:.2}x ipset) | {} |",
            case.what,
            case.measured.without_flows,
            case.measured.without_flows / ipset,
            verdict(case.measured.without_flows <= budget)
        )?;
    }
    writeln!(
        text,
        "| maps that follow the CPU count: at most 1 MiB per possible CPU | {:.0} KiB | {} |",
        per_cpu as f64 / 1024.0,
        verdict(per_cpu <= 1 << 20)
    )?;
    Ok(())
}
