//! Previews with real packets: a candidate judged on live traffic beside the policy in
//! force reports the sources it would drop and those it would let in, and changes no verdict
//! (a flood included); one at a time; enabling a change ends it; allowlistctl's `--preview`
//! prints the report and fails when the change would drop traffic that passes today, for an
//! enable, an import, a removal and a policy file; the API previews a change of the protected
//! ports too. A restart ends a preview, in the kernel too.

use std::net::IpAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use allowlist_tests::daemon::{Daemon, TempDir};
use allowlist_tests::etcd::policy_file;
use allowlist_tests::netns::*;
use allowlist_tests::scenario::*;
use allowlist_tests::traffic::{UdpStream, passes};
use serde_json::{Value, json};

/// A daemon whose changes may be acknowledged at once.
const ARGS: [&str; 4] = ["--ack-min", "0s", "--ack-max", "60s"];

/// Starts a preview of `body`; fails unless it runs.
fn start(daemon: &Daemon, body: Value) -> Value {
    let started = daemon.call("POST", "/v1/enforcement/preview", Some(&body));
    assert_eq!(started.status, 201, "{started:?}");
    started.body
}

/// The preview's report.
fn report(daemon: &Daemon) -> Value {
    let report = daemon.call("GET", "/v1/enforcement/preview", None);
    assert_eq!(report.status, 200, "{report:?}");
    report.body
}

/// The addresses of a side of a report (`would_drop`, `would_pass`).
fn sources(report: &Value, side: &str) -> Vec<IpAddr> {
    report[side]["sources"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|source| source["address"].as_str()?.parse().ok())
        .collect()
}

/// A source that keeps sending to the server, every packet passing, until stopped.
struct Sender {
    sending: Arc<AtomicBool>,
    thread: std::thread::JoinHandle<()>,
}

impl Sender {
    /// Starts sending from `source`, which passes today, over `link`.
    fn start(link: &Arc<TestLink>, source: impl Into<IpAddr>) -> Sender {
        let (link, source) = (link.clone(), source.into());
        let sending = Arc::new(AtomicBool::new(true));
        let thread = {
            let sending = sending.clone();
            std::thread::spawn(move || {
                while sending.load(Ordering::Relaxed) {
                    assert!(passes(&link, source), "a verdict changed");
                    std::thread::sleep(Duration::from_millis(100));
                }
            })
        };
        Sender { sending, thread }
    }

    /// Stops it; fails if a packet did not pass.
    fn stop(self) {
        self.sending.store(false, Ordering::Relaxed);
        self.thread.join().expect("every packet passed");
    }
}

#[test]
fn a_preview_reports_what_a_change_would_drop_and_changes_no_verdict() {
    let link = TestLink::create().expect("test link");
    let state = TempDir::new().expect("state dir");
    let daemon = Daemon::start(&link, state.path(), &ARGS).expect("allowlistd");
    let id = create(&daemon, "office", &office());

    let started = start(&daemon, json!({ "enable": [id], "window": "60s" }));
    assert_eq!(started["state"], "running");
    // Nothing is enforced: every source passes, the preview only counts.
    for _ in 0..3 {
        assert!(passes(&link, CLIENT_DENIED_V4), "a verdict changed");
        assert!(passes(&link, CLIENT_DENIED_V6), "a verdict changed");
        assert!(passes(&link, CLIENT_ALLOWED_V4));
    }
    let running = report(&daemon);
    let dropped = sources(&running, "would_drop");
    assert!(
        dropped.contains(&CLIENT_DENIED_V4.into()) && dropped.contains(&CLIENT_DENIED_V6.into()),
        "{running}"
    );
    assert!(!dropped.contains(&CLIENT_ALLOWED_V4.into()), "{running}");
    let denied = running["would_drop"]["sources"]
        .as_array()
        .into_iter()
        .flatten()
        .find(|s| s["address"] == CLIENT_DENIED_V4.to_string())
        .cloned()
        .unwrap_or_default();
    assert!(denied["packets"].as_u64() >= Some(3), "{denied}");
    assert_eq!(denied["ports"][0]["protocol"], "udp", "{denied}");

    let second = daemon.call(
        "POST",
        "/v1/enforcement/preview",
        Some(&json!({ "disable": [id] })),
    );
    assert_eq!(second.status, 409, "{second:?}");
    assert_eq!(second.body["error"]["code"], "preview_running");

    // Enabling the change ends the preview; its report stays.
    enable(&daemon, &id);
    let ended = report(&daemon);
    assert_eq!(ended["state"], "ended", "{ended}");
    assert_eq!(ended["ended_because"], "a change was enabled");
    assert!(sources(&ended, "would_drop").contains(&CLIENT_DENIED_V4.into()));
    assert!(enforcing_office(&link));

    // Enforcing, acknowledged: disabling would let the denied client in.
    let acknowledged = daemon.call("POST", "/v1/enforcement/acknowledge", None);
    assert_eq!(acknowledged.status, 200, "{acknowledged:?}");
    start(&daemon, json!({ "disable": [id], "window": "60s" }));
    assert!(!passes(&link, CLIENT_DENIED_V4), "a verdict changed");
    assert!(passes(&link, CLIENT_ALLOWED_V4), "a verdict changed");
    let disabling = report(&daemon);
    assert!(
        sources(&disabling, "would_pass").contains(&CLIENT_DENIED_V4.into()),
        "{disabling}"
    );
    assert!(sources(&disabling, "would_drop").is_empty(), "{disabling}");
    let ended = daemon.call("DELETE", "/v1/enforcement/preview", None);
    assert_eq!(ended.status, 200, "{ended:?}");
    assert_eq!(ended.body["ended_because"], "ended on request");
    assert!(!passes(&link, CLIENT_DENIED_V4));
    let metrics = daemon.scrape();
    assert!(
        metrics.lines().any(|line| line.starts_with(
            "allowlist_preview_packets_total{interface=\"srv0\",candidate=\"would_pass\"}"
        ) && !line.ends_with(" 0")),
        "{metrics}"
    );
}

#[test]
fn allowlistctl_previews_an_enable_and_fails_when_it_would_drop_traffic() {
    let link = Arc::new(TestLink::create().expect("test link"));
    let state = TempDir::new().expect("state dir");
    let daemon = Daemon::start(&link, state.path(), &ARGS).expect("allowlistd");
    create(&daemon, "office", &office());
    let sender = Sender::start(&link, CLIENT_DENIED_V4);
    let refused = daemon.ctl(&["enable", "office", "--preview", "3s"]);
    let accepted = daemon.ctl(&["enable", "office", "--preview", "2s", "--allow-drops"]);
    sender.stop();
    let stdout = String::from_utf8_lossy(&refused.stdout);
    let stderr = String::from_utf8_lossy(&refused.stderr);
    assert!(!refused.status.success(), "{stdout}{stderr}");
    assert!(
        stdout.contains("would drop (passes today)")
            && stdout.contains(&CLIENT_DENIED_V4.to_string()),
        "{stdout}"
    );
    assert!(stderr.contains("--allow-drops"), "{stderr}");
    assert!(accepted.status.success(), "{accepted:?}");
    assert_eq!(
        enforcement(&daemon)["enforcing"],
        false,
        "a preview changes nothing"
    );
}

#[test]
fn a_flood_during_a_preview_loses_no_allowed_packet_and_lets_no_denied_one_through() {
    let link = TestLink::create().expect("test link");
    let state = TempDir::new().expect("state dir");
    let daemon = Daemon::start(&link, state.path(), &ARGS).expect("allowlistd");
    let office_id = create(&daemon, "office", &office());
    let other = create(&daemon, "other", &["192.0.2.0/24".to_owned()]);
    let enabled = daemon.call(
        "POST",
        "/v1/enforcement/enable",
        Some(&json!({ "allowlist_ids": [office_id, other] })),
    );
    assert_eq!(enabled.status, 202, "{enabled:?}");
    let acknowledged = daemon.call("POST", "/v1/enforcement/acknowledge", None);
    assert_eq!(acknowledged.status, 200, "{acknowledged:?}");

    // The candidate (office disabled) would drop the allowed client: its stream still
    // arrives whole.
    start(&daemon, json!({ "disable": [office_id], "window": "60s" }));
    let allowed = UdpStream::run(
        &link,
        CLIENT_ALLOWED_V4.into(),
        SERVER_V4.into(),
        20_000,
        || Ok(()),
    )
    .expect("allowed stream");
    assert_eq!(allowed.received(), allowed.sent(), "an allowed packet lost");
    let report_allowed = report(&daemon);
    let would_drop = report_allowed["would_drop"]["packets"]
        .as_u64()
        .unwrap_or(0);
    assert!(would_drop >= 20_000, "{report_allowed}");
    daemon.call("DELETE", "/v1/enforcement/preview", None);

    // The candidate (both disabled: nothing enforced) would let the denied client in: its
    // flood still goes nowhere.
    start(
        &daemon,
        json!({ "disable": [office_id, other], "window": "60s" }),
    );
    let denied = UdpStream::run(
        &link,
        CLIENT_DENIED_V4.into(),
        SERVER_V4.into(),
        20_000,
        || Ok(()),
    )
    .expect("denied flood");
    assert_eq!(denied.received(), 0, "a denied packet got through");
    let report_denied = report(&daemon);
    let would_pass = report_denied["would_pass"]["packets"].as_u64().unwrap_or(0);
    assert!(would_pass >= 20_000, "{report_denied}");
}

/// The office list without the allowed client's IPv4 address, as a policy file.
const OFFICE_WITHOUT_V4: &str = r#"
[[allowlist]]
name = "office"
enabled = true
entries = [{ cidr = "fd00:a11::2" }]
"#;

#[test]
fn previews_of_an_import_a_removal_a_policy_file_and_the_ports_drop_nothing() {
    let link = Arc::new(TestLink::create().expect("test link"));
    let state = TempDir::new().expect("state dir");
    let (daemon, id) = enforcing_office_daemon(&link, &state);
    // The allowed client keeps sending; every packet passes while the previews run.
    let sender = Sender::start(&link, CLIENT_ALLOWED_V4);
    let without_v4 = state.path().join("without-v4.txt");
    std::fs::write(&without_v4, format!("{CLIENT_ALLOWED_V6}\n")).expect("write the file");
    let imported = daemon.ctl(&[
        "import",
        "office",
        without_v4.to_str().expect("path"),
        "--preview",
        "2s",
    ]);
    let removed = daemon.ctl(&[
        "--json",
        "remove",
        "office",
        &CLIENT_ALLOWED_V4.to_string(),
        "--preview",
        "2s",
        "--allow-drops",
    ]);
    let file = policy_file(state.path(), "office.toml", OFFICE_WITHOUT_V4);
    let applied = daemon.ctl(&[
        "apply",
        "-f",
        file.to_str().expect("path"),
        "--preview",
        "2s",
    ]);
    sender.stop();

    let stdout = String::from_utf8_lossy(&imported.stdout);
    assert!(!imported.status.success(), "{imported:?}");
    assert!(
        stdout.contains("would drop (passes today)")
            && stdout.contains(&CLIENT_ALLOWED_V4.to_string()),
        "{stdout}"
    );
    assert!(removed.status.success(), "{removed:?}");
    let report: Value = serde_json::from_slice(&removed.stdout).expect("the report as JSON");
    assert_eq!(
        report["candidate"]["replace"]["id"],
        id.as_str(),
        "{report}"
    );
    assert_eq!(
        sources(&report, "would_drop"),
        [IpAddr::from(CLIENT_ALLOWED_V4)],
        "{report}"
    );
    let stdout = String::from_utf8_lossy(&applied.stdout);
    assert!(!applied.status.success(), "{applied:?}");
    assert!(stdout.contains(&CLIENT_ALLOWED_V4.to_string()), "{stdout}");

    // Protecting only tcp/22 would let the denied client's UDP in; it is still dropped.
    start(&daemon, json!({ "protect": ["tcp/22"], "window": "60s" }));
    assert!(!passes(&link, CLIENT_DENIED_V4), "a verdict changed");
    let scoped = daemon.call("DELETE", "/v1/enforcement/preview", None);
    assert!(
        sources(&scoped.body, "would_pass").contains(&CLIENT_DENIED_V4.into()),
        "{scoped:?}"
    );
    let two = daemon.call(
        "POST",
        "/v1/enforcement/preview",
        Some(&json!({ "disable": [id], "protect": [] })),
    );
    assert_eq!(two.status, 400, "{two:?}");

    // Nothing changed: the list holds both addresses, enforced, no change pending.
    assert_eq!(list_entries(&daemon, &id).len(), 2);
    assert!(enforcement(&daemon)["pending"].is_null());
    assert!(enforcing_office(&link));
}

/// The packets the kernel counted as a preview's candidate would drop them, on the server.
fn would_drop_packets(daemon: &Daemon) -> u64 {
    let series = "allowlist_preview_packets_total{interface=\"srv0\",candidate=\"would_drop\"}";
    let metrics = daemon.scrape();
    metrics
        .lines()
        .find_map(|line| line.strip_prefix(series)?.trim().parse().ok())
        .unwrap_or_else(|| panic!("no {series} in {metrics}"))
}

#[test]
fn a_restart_ends_a_preview_in_the_kernel_too() {
    let link = TestLink::create().expect("test link");
    let state = TempDir::new().expect("state dir");
    let mut daemon = Daemon::start(&link, state.path(), &ARGS).expect("allowlistd");
    let id = create(&daemon, "office", &office());
    start(&daemon, json!({ "enable": [id], "window": "10m" }));
    assert!(passes(&link, CLIENT_DENIED_V4));
    assert!(would_drop_packets(&daemon) >= 1, "the kernel judges");

    daemon.kill().expect("kill -9");
    let daemon = Daemon::start(&link, state.path(), &ARGS).expect("restart");
    let gone = daemon.call("GET", "/v1/enforcement/preview", None);
    assert_eq!(gone.status, 404, "{gone:?}");
    let counted = would_drop_packets(&daemon);
    for _ in 0..3 {
        assert!(passes(&link, CLIENT_DENIED_V4), "a verdict changed");
    }
    assert_eq!(
        would_drop_packets(&daemon),
        counted,
        "the kernel still judges against the earlier daemon's candidate"
    );
    start(&daemon, json!({ "enable": [id], "window": "10s" }));
}
