//! The kernel memory the maps take, as the kernel accounts it: reported per map in
//! `GET /v1/stats`, `allowlistctl status` and `/metrics`, the same as `bpftool` gives; no map
//! grows with the CPU count beyond a bound.

use std::process::Command;

use allowlist_tests::daemon::{Daemon, TempDir};
use allowlist_tests::netns::*;
use serde_json::Value;

/// What bpftool says of the map pinned at `path`: its memlock, in bytes.
fn bpftool_memlock(path: &std::path::Path) -> u64 {
    let output = Command::new("bpftool")
        .args(["-j", "map", "show", "pinned"])
        .arg(path)
        .output()
        .expect("bpftool");
    assert!(output.status.success(), "{output:?}");
    let shown: Value = serde_json::from_slice(&output.stdout).expect("bpftool JSON");
    shown["bytes_memlock"].as_u64().expect("bytes_memlock")
}

#[test]
fn the_kernel_memory_of_each_map_is_reported_in_stats_status_and_metrics() {
    let link = TestLink::create().expect("test link");
    let state = TempDir::new().expect("state dir");
    let daemon = Daemon::start(&link, state.path(), &[]).expect("allowlistd");
    let stats = daemon.call("GET", "/v1/stats", None).body;
    let memory = &stats["kernel_memory"];
    let maps = memory["maps"].as_array().expect("maps");
    let bytes_of = |name: &str| {
        maps.iter()
            .find(|map| map["map"] == name)
            .and_then(|map| map["bytes"].as_u64())
            .unwrap_or_else(|| panic!("{name} in {memory}"))
    };
    let sum: u64 = maps.iter().filter_map(|map| map["bytes"].as_u64()).sum();
    assert_eq!(memory["total_bytes"], sum);
    assert_eq!(
        memory["without_flows_bytes"].as_u64(),
        Some(sum - bytes_of("FLOWS"))
    );
    let pins = state
        .pin_dir()
        .join(format!("v{}", allowlist_common::LAYOUT_VERSION));
    for name in ["RULE_HITS", "V4_BUCKETS", "FLOWS"] {
        assert_eq!(
            bytes_of(name),
            bpftool_memlock(&pins.join(name)),
            "{name}: as bpftool says"
        );
    }
    // Maps that hold something per CPU stay small, whatever the policy.
    let cpus = std::fs::read_to_string("/sys/devices/system/cpu/possible").expect("cpus");
    let possible = cpus
        .trim()
        .split(',')
        .map(|range| match range.split_once('-') {
            Some((from, to)) => {
                to.parse::<u64>().expect("cpu") - from.parse::<u64>().expect("cpu") + 1
            }
            None => 1,
        })
        .sum::<u64>();
    for name in ["COUNTERS", "TOP_SOURCES"] {
        assert!(
            bytes_of(name) <= possible << 20,
            "{name}: {} bytes for {possible} CPUs",
            bytes_of(name)
        );
    }
    let metrics = daemon.scrape();
    assert!(
        metrics.contains(&format!(
            "allowlist_kernel_memory_bytes{{map=\"RULE_HITS\"}} {}",
            bytes_of("RULE_HITS")
        )),
        "{metrics}"
    );
    let status = daemon.ctl(&["status"]);
    let text = String::from_utf8_lossy(&status.stdout);
    assert!(
        status.status.success() && text.contains("kernel memory: "),
        "{text}"
    );
}
