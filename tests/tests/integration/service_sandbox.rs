//! allowlistd under the restrictions of its systemd unit (packaging/allowlistd.service):
//! as an unprivileged user with only CAP_BPF, CAP_NET_ADMIN and CAP_PERFMON it still loads,
//! attaches, pins, enforces, serves and takes its pins over after a restart; and every
//! system call it makes is one the unit's `SystemCallFilter=` allows.
//! (The machines that run the tests have no systemd as PID 1, so the unit itself cannot be
//! started here: its capabilities and its filter are applied, or checked, one by one.)

use std::collections::BTreeSet;
use std::os::unix::fs::PermissionsExt as _;
use std::path::Path;
use std::process::Command;

use allowlist_tests::daemon::{Daemon, TempDir};
use allowlist_tests::netns::*;
use allowlist_tests::traffic::udp_gets_through;
use serde_json::json;

/// The unprivileged user the daemon runs as here (nobody).
const UID: u32 = 65534;

/// The words of every `NAME=` line of the shipped unit.
fn unit_setting(name: &str) -> Vec<String> {
    let unit = include_str!("../../../packaging/allowlistd.service");
    unit.lines()
        .filter_map(|line| line.strip_prefix(name)?.strip_prefix('='))
        .flat_map(|value| value.split_whitespace().map(str::to_owned))
        .collect()
}

/// The unit's capabilities (`AmbientCapabilities=`, also its bounding set), as setpriv
/// applies them, under a user that is not root.
fn as_the_unit_runs_it() -> Vec<String> {
    let caps: Vec<String> = unit_setting("AmbientCapabilities")
        .iter()
        .map(|cap| format!("+{}", cap.trim_start_matches("CAP_").to_lowercase()))
        .collect();
    assert_eq!(
        unit_setting("CapabilityBoundingSet"),
        unit_setting("AmbientCapabilities")
    );
    assert!(!unit_setting("User").is_empty(), "the unit names its user");
    let caps = format!("-all,{}", caps.join(","));
    [
        "setpriv".to_owned(),
        format!("--reuid={UID}"),
        format!("--regid={UID}"),
        "--clear-groups".to_owned(),
        format!("--bounding-set={caps}"),
        format!("--inh-caps={caps}"),
        format!("--ambient-caps={caps}"),
    ]
    .into()
}

/// Gives `path` (a directory) to the unprivileged user, mode 0700, as systemd's
/// StateDirectory= and the unit's ExecStartPre do.
fn hand_over(path: &Path) {
    std::fs::create_dir_all(path).expect("create");
    nix::unistd::chown(path, Some(UID.into()), Some(UID.into())).expect("chown");
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o700)).expect("chmod");
}

#[test]
fn allowlistd_enforces_as_an_unprivileged_user_with_three_capabilities() {
    let link = TestLink::create().expect("test link");
    let state = TempDir::new().expect("state dir");
    hand_over(state.path());
    hand_over(&state.pin_dir());
    let wrapper = as_the_unit_runs_it();
    let wrapper: Vec<&str> = wrapper.iter().map(String::as_str).collect();
    let mut daemon = Daemon::start_wrapped(&link, state.path(), &wrapper, &[]).expect("allowlistd");
    let status =
        std::fs::read_to_string(format!("/proc/{}/status", daemon.pid().expect("running")))
            .expect("status");
    assert!(
        status
            .lines()
            .any(|line| line.starts_with("Uid:") && line.contains(&UID.to_string())),
        "{status}"
    );
    let created = daemon.call(
        "POST",
        "/v1/allowlists",
        Some(&json!({"name": "office", "entries": [{"cidr": format!("{CLIENT_ALLOWED_V4}/32")}]})),
    );
    assert_eq!(created.status, 201, "{:?}", created.body);
    let id = created.body["id"].as_str().expect("id").to_owned();
    let enabled = daemon.call(
        "POST",
        "/v1/enforcement/enable",
        Some(&json!({"allowlist_ids": [id]})),
    );
    assert_eq!(enabled.status, 202, "{:?}", enabled.body);
    assert!(!udp_gets_through(&link, CLIENT_DENIED_V4.into(), SERVER_V4.into()).expect("udp"));
    assert!(udp_gets_through(&link, CLIENT_ALLOWED_V4.into(), SERVER_V4.into()).expect("udp"));
    assert_eq!(daemon.call("GET", "/v1/stats", None).status, 200);

    daemon.stop().expect("stop");
    let daemon = Daemon::start_wrapped(&link, state.path(), &wrapper, &[]).expect("restarted");
    assert!(
        daemon
            .log()
            .contains("the kernel already enforced the state on disk"),
        "the pins are taken over: {}",
        daemon.log()
    );
    assert!(!udp_gets_through(&link, CLIENT_DENIED_V4.into(), SERVER_V4.into()).expect("udp"));
}

/// The system calls the unit's `SystemCallFilter=` allows: its calls, and those of its
/// groups as this machine's systemd defines them (`systemd-analyze syscall-filter`).
fn calls_the_unit_allows() -> BTreeSet<String> {
    let filter = unit_setting("SystemCallFilter");
    assert!(!filter.is_empty(), "the unit filters system calls");
    let (mut groups, mut calls): (Vec<String>, Vec<String>) =
        filter.into_iter().partition(|word| word.starts_with('@'));
    let mut calls: BTreeSet<String> = calls.drain(..).collect();
    let mut seen = BTreeSet::new();
    while let Some(group) = groups.pop() {
        if !seen.insert(group.clone()) {
            continue;
        }
        let output = Command::new("systemd-analyze")
            .args(["syscall-filter", &group])
            .output()
            .expect("systemd-analyze");
        assert!(
            output.status.success(),
            "systemd-analyze syscall-filter {group}"
        );
        for line in String::from_utf8_lossy(&output.stdout).lines().skip(1) {
            let name = line.trim();
            if name.is_empty() || name.starts_with('#') {
                continue;
            }
            if name.starts_with('@') {
                groups.push(name.to_owned());
            } else {
                calls.insert(name.to_owned());
            }
        }
    }
    calls
}

#[test]
fn every_system_call_of_allowlistd_is_one_the_units_filter_allows() {
    let link = TestLink::create().expect("test link");
    let state = TempDir::new().expect("state dir");
    let trace = state.path().with_extension("strace");
    let trace_path = trace.to_string_lossy().into_owned();
    // -D: strace runs as a detached grandchild, the daemon keeps the process the harness
    // started (and signals).
    let wrapper = ["strace", "-D", "-f", "-qq", "-c", "-o", &trace_path];
    let mut daemon = Daemon::start_wrapped(&link, state.path(), &wrapper, &["--xdp-mode", "skb"])
        .expect("allowlistd under strace");
    let created = daemon.call(
        "POST",
        "/v1/allowlists",
        Some(&json!({"name": "office", "entries": [{"cidr": format!("{CLIENT_ALLOWED_V4}/32")}]})),
    );
    let id = created.body["id"].as_str().expect("id").to_owned();
    daemon.call(
        "POST",
        "/v1/enforcement/enable",
        Some(&json!({"allowlist_ids": [id]})),
    );
    udp_gets_through(&link, CLIENT_ALLOWED_V4.into(), SERVER_V4.into()).expect("udp");
    for path in ["/v1/stats", "/v1/top", "/v1/allowlists"] {
        assert_eq!(daemon.call("GET", path, None).status, 200, "{path}");
    }
    assert!(daemon.scrape().contains("allowlist_"));
    daemon.stop().expect("stop");
    // strace writes its summary once the daemon is gone.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    let summary = loop {
        let text = std::fs::read_to_string(&trace).unwrap_or_default();
        if text.contains("total") {
            break text;
        }
        assert!(std::time::Instant::now() < deadline, "no strace summary");
        std::thread::sleep(std::time::Duration::from_millis(100));
    };
    let _ = std::fs::remove_file(&trace);
    let used: BTreeSet<String> = summary
        .lines()
        .filter(|line| {
            line.trim_start()
                .chars()
                .next()
                .is_some_and(|c| c.is_ascii_digit())
        })
        .filter_map(|line| line.split_whitespace().last().map(str::to_owned))
        .filter(|call| call != "total")
        .collect();
    assert!(
        used.contains("bpf"),
        "the trace holds the daemon's calls: {summary}"
    );
    let allowed = calls_the_unit_allows();
    let outside: Vec<&String> = used
        .iter()
        .filter(|call| !allowed.contains(*call))
        .collect();
    assert!(
        outside.is_empty(),
        "allowlistd calls {outside:?}, which the unit's SystemCallFilter= denies"
    );
}
