//! Fault tests: allowlistd killed inside and outside a pending window, restarted under
//! traffic, its state file damaged or its state directory read-only, a 100k-entry list
//! replaced under traffic, and 50 writers at once. Each asserts with packets, the state file
//! and the API.

use std::time::Duration;

use allowlist_common::LAYOUT_VERSION;
use allowlist_tests::daemon::{Daemon, TempDir};
use allowlist_tests::mounts::ReadOnly;
use allowlist_tests::netns::*;
use allowlist_tests::scenario::*;
use allowlist_tests::traffic::UdpStream;
use serde_json::{Value, json};
use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;

/// allowlistd (with [`WINDOW`]) having just enabled the "office" list, pending; and when
/// that change reverts unless acknowledged.
fn pending_office(link: &TestLink, state: &TempDir) -> (Daemon, OffsetDateTime) {
    let daemon = Daemon::start(link, state.path(), &WINDOW).expect("allowlistd");
    let id = create(&daemon, "office", &office());
    let enabled = enable(&daemon, &id);
    let revert_at = enabled.body["pending"]["revert_at"]
        .as_str()
        .and_then(|at| OffsetDateTime::parse(at, &Rfc3339).ok())
        .expect("revert_at");
    (daemon, revert_at)
}

#[test]
fn killed_inside_a_pending_window_the_kernel_reverts_by_itself() {
    let link = TestLink::create().expect("test link");
    let state = TempDir::new().expect("state dir");
    let (mut daemon, revert_at) = pending_office(&link, &state);
    assert!(enforcing_office(&link));

    daemon.kill().expect("kill -9");
    assert!(link.server_has_xdp().expect("ip link"));
    assert!(
        enforcing_office(&link),
        "the change stays in force with the daemon dead, inside its window"
    );
    let left = revert_at - OffsetDateTime::now_utc();
    std::thread::sleep(Duration::try_from(left).unwrap_or_default() + Duration::from_millis(200));
    assert!(
        !enforcing_office(&link),
        "by revert_at the kernel is back to the previous policy (nothing enforced)"
    );

    // Back, the daemon records the revert.
    let daemon = Daemon::start(&link, state.path(), &WINDOW).expect("restart");
    let after = enforcement(&daemon);
    assert_eq!(after["pending"], Value::Null, "{after}");
    assert_eq!(after["enforcing"], false, "{after}");
    let log = daemon.log();
    assert!(
        log.contains("expired while the daemon was down"),
        "the revert is logged: {log}"
    );
    assert!(
        log.contains("already fallen back"),
        "the kernel's own revert is noticed: {log}"
    );
    assert!(!enforcing_office(&link));
}

#[test]
fn killed_outside_a_window_and_restarted_under_traffic_nothing_changes() {
    let link = TestLink::create().expect("test link");
    let state = TempDir::new().expect("state dir");
    let (mut daemon, _) = enforcing_office_daemon(&link, &state);
    assert!(enforcing_office(&link));
    let dropped_before = dropped(&daemon);
    let saved = std::fs::read(state_file(&state)).expect("state file");

    let daemon = restart_under_stream(&link, &mut daemon, Stop::Kill, &state, &WINDOW, 200_000);
    assert!(enforcing_office(&link));
    assert_eq!(
        std::fs::read(state_file(&state)).expect("state file"),
        saved,
        "the state is identical"
    );
    assert!(
        dropped(&daemon) >= dropped_before + 3,
        "the counters kept counting across the restart"
    );
    let log = daemon.log();
    assert!(log.contains("mode=adopted"), "{log}");
    assert!(
        log.contains("the kernel already enforced the state on disk"),
        "{log}"
    );
}

#[test]
fn a_100k_entry_list_is_replaced_under_traffic_without_losing_a_packet() {
    let link = TestLink::create().expect("test link");
    let state = TempDir::new().expect("state dir");
    let args = [
        "--ack-min",
        "1s",
        "--ack-max",
        "10m",
        "--max-body-bytes",
        "67108864",
    ];
    let daemon = Daemon::start(&link, state.path(), &args).expect("allowlistd");
    let list = |base: u32| -> Vec<String> {
        let mut cidrs = office();
        cidrs.extend((0..100_000u32).map(|n| std::net::Ipv4Addr::from(base + n).to_string()));
        cidrs
    };
    let id = create(&daemon, "big", &list(0x0a00_0000));
    enable(&daemon, &id);
    acknowledge(&daemon);
    assert!(enforcing_office(&link));

    let replacement: Vec<Value> = list(0x0a80_0000)
        .into_iter()
        .map(|cidr| json!({ "cidr": cidr }))
        .collect();
    let mut replaced = None;
    let stream = UdpStream::run(
        &link,
        CLIENT_ALLOWED_V4.into(),
        SERVER_V4.into(),
        600_000,
        || {
            replaced = Some(daemon.call(
                "PUT",
                &format!("/v1/allowlists/{id}"),
                Some(&json!({ "name": "big", "entries": replacement })),
            ));
            Ok(())
        },
    )
    .expect("stream");
    let replaced = replaced.expect("replaced");
    assert_eq!(replaced.status, 200, "{:?}", replaced.body["error"]);
    assert!(stream.outlasted(), "the replacement happened under traffic");
    assert_eq!(stream.received(), stream.sent(), "no packet was lost");
    assert!(enforcing_office(&link));
    let shown = daemon.call("GET", &format!("/v1/allowlists/{id}"), None);
    assert_eq!(
        shown.body["entries"].as_array().map(Vec::len),
        Some(100_002)
    );
}

#[test]
fn a_damaged_state_stops_the_daemon_and_the_kernel_keeps_enforcing() {
    let link = TestLink::create().expect("test link");
    let state = TempDir::new().expect("state dir");
    let (mut daemon, id) = enforcing_office_daemon(&link, &state);
    daemon.stop().expect("SIGTERM");
    drop(daemon);
    assert!(enforcing_office(&link), "enforcing after the stop");
    let good = std::fs::read(state_file(&state)).expect("state file");

    let damaged: [(&str, Vec<u8>, &str); 3] = [
        ("truncated", good[..good.len() / 2].to_vec(), "is corrupt"),
        (
            "corrupt",
            b"{\"allowlists\": nonsense".to_vec(),
            "is corrupt",
        ),
        ("empty", Vec::new(), "the file is empty"),
    ];
    for (case, content, problem) in damaged {
        std::fs::write(state_file(&state), content).expect("damage");
        let (status, log) = Daemon::refusal(&link, state.path(), &WINDOW).expect(case);
        assert!(!status.success(), "{case}");
        assert!(log.contains("state.json"), "{case} names the file: {log}");
        assert!(log.contains(problem), "{case} says what is wrong: {log}");
        assert!(
            log.contains("state.json.prev"),
            "{case} names the backup: {log}"
        );
        assert!(enforcing_office(&link), "{case}: the kernel is unchanged");
    }

    std::fs::remove_file(state_file(&state)).expect("remove");
    let (status, log) = Daemon::refusal(&link, state.path(), &WINDOW).expect("missing");
    assert!(!status.success());
    assert!(log.contains("state.json is missing"), "{log}");
    assert!(enforcing_office(&link), "missing: the kernel is unchanged");

    std::fs::remove_file(state.path().join("state.json.prev")).expect("remove backup");
    let (status, log) = Daemon::refusal(&link, state.path(), &WINDOW).expect("no state");
    assert!(!status.success());
    assert!(
        log.contains("holds no state, but the kernel enforces"),
        "{log}"
    );
    assert!(enforcing_office(&link), "no state: the kernel is unchanged");

    std::fs::write(state_file(&state), &good).expect("restore");
    {
        let _read_only = ReadOnly::mount(state.path());
        let (status, log) = Daemon::refusal(&link, state.path(), &WINDOW).expect("read-only");
        assert!(!status.success());
        assert!(log.contains("writing in the state directory"), "{log}");
        assert!(
            enforcing_office(&link),
            "read-only: the kernel is unchanged"
        );
    }

    // Restored, the daemon starts, finds the kernel as the state says, and enforces on.
    let daemon = Daemon::start(&link, state.path(), &WINDOW).expect("allowlistd");
    assert!(
        daemon
            .log()
            .contains("the kernel already enforced the state on disk")
    );
    assert!(enforcing_office(&link));

    // A state directory that turns read-only under a running daemon: changes are refused
    // and nothing changes, on disk or in the kernel.
    let _read_only = ReadOnly::mount(state.path());
    let refused = daemon.call(
        "POST",
        &format!("/v1/allowlists/{id}/entries"),
        Some(&json!({ "entries": [{ "cidr": CLIENT_DENIED_V4.to_string() }] })),
    );
    assert_eq!(refused.status, 500, "{refused:?}");
    // The cause (a path, the errno text) is in the log under an id; the client gets the id.
    let message = refused.body["error"]["message"]
        .as_str()
        .unwrap_or_default();
    let error_id = refused.body["error"]["error_id"]
        .as_str()
        .expect("an error id");
    assert!(message.contains(error_id), "{refused:?}");
    assert!(
        !message.contains("Read-only file system") && !message.contains("/"),
        "no internals for the client: {message}"
    );
    assert!(
        daemon
            .log()
            .lines()
            .any(|line| line.contains(error_id) && line.contains("Read-only file system")),
        "the log has the cause under the id"
    );
    let list = daemon.call("GET", &format!("/v1/allowlists/{id}"), None);
    assert_eq!(list.body["entries"].as_array().map(Vec::len), Some(2));
    assert_eq!(std::fs::read(state_file(&state)).expect("state"), good);
    assert!(enforcing_office(&link));
}

#[test]
fn fifty_concurrent_writers_lose_no_update() {
    let link = TestLink::create().expect("test link");
    let state = TempDir::new().expect("state dir");
    let daemon = Daemon::start(&link, state.path(), &WINDOW).expect("allowlistd");
    let id = create(&daemon, "shared", &[]);
    std::thread::scope(|scope| {
        let writers: Vec<_> = (0..50u8)
            .map(|n| {
                let (daemon, id) = (&daemon, &id);
                scope.spawn(move || {
                    daemon.call(
                        "POST",
                        &format!("/v1/allowlists/{id}/entries"),
                        Some(&json!({ "entries": [{ "cidr": format!("192.0.2.{n}") }] })),
                    )
                })
            })
            .collect();
        for writer in writers {
            let response = writer.join().expect("writer");
            assert_eq!(response.status, 201, "{response:?}");
        }
    });
    let cidrs = |entries: &Value| -> Vec<String> {
        let mut cidrs: Vec<String> = entries
            .as_array()
            .expect("entries")
            .iter()
            .filter_map(|entry| entry["cidr"].as_str().map(str::to_owned))
            .collect();
        cidrs.sort();
        cidrs
    };
    let api = daemon.call("GET", &format!("/v1/allowlists/{id}"), None);
    let from_api = cidrs(&api.body["entries"]);
    assert_eq!(from_api.len(), 50, "every writer's entry is there");
    assert_eq!(api.body["version"], 51, "one version per write");

    let saved: Value =
        serde_json::from_slice(&std::fs::read(state_file(&state)).expect("state file"))
            .expect("state JSON");
    assert_eq!(
        cidrs(&saved["allowlists"][&id]["entries"]),
        from_api,
        "the state file holds what the API shows"
    );
}

#[test]
fn pins_of_another_layout_or_capacity_are_replaced_without_a_gap() {
    let link = TestLink::create().expect("test link");
    let state = TempDir::new().expect("state dir");
    let (mut daemon, _) = enforcing_office_daemon(&link, &state);
    daemon.stop().expect("SIGTERM");
    drop(daemon);

    // What an older allowlistd would have left: the same pins under another layout version.
    let pins = state.pin_dir();
    let current = format!("v{LAYOUT_VERSION}");
    let older = format!("v{}", LAYOUT_VERSION - 1);
    std::fs::rename(pins.join(&current), pins.join(&older)).expect("rename the layout dir");
    assert!(enforcing_office(&link), "the renamed pins still enforce");
    let mut restarted = None;
    let stream = UdpStream::run(
        &link,
        CLIENT_ALLOWED_V4.into(),
        SERVER_V4.into(),
        100_000,
        || {
            restarted = Some(Daemon::start(&link, state.path(), &WINDOW)?);
            Ok(())
        },
    )
    .expect("stream");
    assert!(stream.outlasted());
    assert_eq!(stream.received(), stream.sent(), "no gap while replacing");
    let mut daemon = restarted.expect("restarted");
    let log = daemon.log();
    assert!(log.contains("pins of another layout version"), "{log}");
    assert!(
        !pins.join(&older).exists(),
        "the old layout's pins are removed"
    );
    assert!(
        pins.join(&current).join("xdp_srv0").exists(),
        "the link is re-pinned"
    );
    assert!(
        log.contains("reconciled the kernel with the state on disk"),
        "{log}"
    );
    assert!(enforcing_office(&link));

    // Another flow table: that map is replaced, the link and the policy kept.
    daemon.stop().expect("SIGTERM");
    drop(daemon);
    let mut args = WINDOW.to_vec();
    args.extend(["--max-flows", "4096"]);
    let daemon = Daemon::start(&link, state.path(), &args).expect("allowlistd");
    let log = daemon.log();
    assert!(log.contains("a pinned map does not fit: replaced"), "{log}");
    assert!(enforcing_office(&link));
}

/// libfaketime, which shows a program a wall clock shifted from the real one.
fn libfaketime() -> String {
    std::fs::read_dir("/usr/lib")
        .expect("/usr/lib")
        .filter_map(Result::ok)
        .map(|dir| dir.path().join("faketime/libfaketime.so.1"))
        .find(|path| path.exists())
        .expect("libfaketime (Debian's faketime package)")
        .to_string_lossy()
        .into_owned()
}

#[test]
fn a_wall_clock_stepped_back_does_not_stretch_a_pending_window() {
    let link = TestLink::create().expect("test link");
    let state = TempDir::new().expect("state dir");
    let (mut daemon, revert_at) = pending_office(&link, &state);
    daemon.stop().expect("stop");

    // Back with the wall clock an hour earlier (the monotonic clock, which the kernel's
    // deadline uses, untouched): by the wall clock, the deadline is an hour away.
    let preload = format!("LD_PRELOAD={}", libfaketime());
    let stepped_back = [
        "env",
        &preload,
        "FAKETIME=-1h",
        "FAKETIME_DONT_FAKE_MONOTONIC=1",
    ];
    let daemon = Daemon::start_wrapped(&link, state.path(), &stepped_back, &WINDOW)
        .expect("allowlistd with the clock stepped back");
    assert!(enforcing_office(&link), "still inside the window");
    let left = revert_at - OffsetDateTime::now_utc();
    std::thread::sleep(Duration::try_from(left).unwrap_or_default() + Duration::from_millis(500));
    assert!(
        !enforcing_office(&link),
        "the kernel reverts at the deadline it was given, whatever the wall clock says"
    );
    let deadline = std::time::Instant::now() + Duration::from_secs(3);
    loop {
        let now = enforcement(&daemon);
        if now["pending"] == Value::Null {
            assert_eq!(now["enforcing"], false, "{now}");
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "the daemon follows the kernel's revert: {now}"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

#[test]
fn the_kernel_tells_the_daemons_log_once_when_it_falls_back_at_a_deadline() {
    use nix::sys::signal::{Signal, kill};
    use nix::unistd::Pid;
    let link = TestLink::create().expect("test link");
    let state = TempDir::new().expect("state dir");
    let (daemon, revert_at) = pending_office(&link, &state);
    // The daemon frozen: only the program itself can fall back at the deadline.
    let pid = Pid::from_raw(daemon.pid().expect("running") as i32);
    kill(pid, Signal::SIGSTOP).expect("SIGSTOP");
    let left = revert_at - OffsetDateTime::now_utc();
    std::thread::sleep(Duration::try_from(left).unwrap_or_default() + Duration::from_millis(300));
    for _ in 0..3 {
        assert!(
            !enforcing_office(&link),
            "the program fell back by itself at the deadline"
        );
    }
    kill(pid, Signal::SIGCONT).expect("SIGCONT");
    let wanted = "revert deadline passed without an acknowledgement";
    let deadline = std::time::Instant::now() + Duration::from_secs(5);
    while !daemon.log().contains(wanted) {
        assert!(
            std::time::Instant::now() < deadline,
            "the program's line reaches the daemon's log: {}",
            daemon.log()
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    assert_eq!(
        daemon.log().matches(wanted).count(),
        1,
        "once per deadline, whatever the packets: {}",
        daemon.log()
    );
}
