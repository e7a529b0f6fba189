//! Entries with a time to live, with real packets: an address passes until its entry
//! expires and is dropped after, with no acknowledgement asked; and an entry that expired
//! while the daemon was down is gone before its API answers again.

use std::time::{Duration, Instant};

use allowlist_tests::daemon::{Daemon, TempDir};
use allowlist_tests::netns::*;
use allowlist_tests::scenario::*;
use allowlist_tests::traffic::passes;
use serde_json::Value;

/// Past an entry's time to live: expiries are kept in whole seconds, rounded up, and the
/// daemon looks every 100 ms.
const EXPIRY_MARGIN: Duration = Duration::from_millis(1500);

/// The CIDRs of list `id`, and the expiry of each.
fn entries(daemon: &Daemon, id: &str) -> Vec<(String, Value)> {
    list_entries(daemon, id)
        .into_iter()
        .map(|entry| {
            (
                entry["cidr"].as_str().unwrap_or_default().to_owned(),
                entry["expires_at"].clone(),
            )
        })
        .collect()
}

/// Adds the denied client to "office" for `ttl`, with allowlistctl as an operator would.
fn admit_for(daemon: &Daemon, ttl: &str) {
    let denied = CLIENT_DENIED_V4.to_string();
    let added = daemon.ctl(&["add", "office", &denied, "--ttl", ttl, "-d", "contractor"]);
    assert!(
        added.status.success(),
        "{}",
        String::from_utf8_lossy(&added.stderr)
    );
    let shown = String::from_utf8_lossy(&added.stdout).into_owned();
    assert!(
        shown
            .lines()
            .any(|line| line.contains(&denied) && !line.contains("never")),
        "the list shows when the entry expires: {shown}"
    );
}

#[test]
fn an_address_passes_until_its_entry_expires_and_is_dropped_after() {
    let link = TestLink::create().expect("test link");
    let state = TempDir::new().expect("state dir");
    let (daemon, id) = enforcing_office_daemon(&link, &state);
    assert!(!passes(&link, CLIENT_DENIED_V4));

    admit_for(&daemon, "3s");
    let added_at = Instant::now();
    assert!(passes(&link, CLIENT_DENIED_V4), "admitted at once");
    assert_eq!(
        enforcement(&daemon)["pending"],
        Value::Null,
        "adding asks no acknowledgement"
    );
    let expiry = entries(&daemon, &id)
        .into_iter()
        .find(|(cidr, _)| cidr == &format!("{CLIENT_DENIED_V4}/32"))
        .expect("the entry")
        .1;
    assert!(expiry.is_string(), "{expiry}");

    std::thread::sleep(Duration::from_secs(3).saturating_sub(added_at.elapsed()) + EXPIRY_MARGIN);
    assert!(
        !passes(&link, CLIENT_DENIED_V4),
        "dropped once its entry expired"
    );
    assert!(
        passes(&link, CLIENT_ALLOWED_V4),
        "the rest of the list stays"
    );
    assert_eq!(
        entries(&daemon, &id).len(),
        2,
        "the entry left the list (the office's two addresses stay)"
    );
    assert_eq!(
        enforcement(&daemon)["pending"],
        Value::Null,
        "no acknowledgement asked"
    );
    assert!(
        daemon.log().contains("expired"),
        "an audit line says what expired: {}",
        daemon.log()
    );
}

#[test]
fn an_entry_that_expired_while_the_daemon_was_down_is_gone_when_it_answers() {
    let link = TestLink::create().expect("test link");
    let state = TempDir::new().expect("state dir");
    let (mut daemon, id) = enforcing_office_daemon(&link, &state);
    admit_for(&daemon, "2s");
    assert!(passes(&link, CLIENT_DENIED_V4));
    daemon.stop().expect("stop");
    std::thread::sleep(Duration::from_secs(2) + EXPIRY_MARGIN);

    let daemon = Daemon::start(&link, state.path(), &WINDOW).expect("restart");
    // The first answer already shows the list without it, and the kernel agrees.
    assert_eq!(entries(&daemon, &id).len(), 2);
    assert!(!passes(&link, CLIENT_DENIED_V4));
    assert!(passes(&link, CLIENT_ALLOWED_V4));
}

#[test]
fn with_the_daemon_dead_the_kernel_expires_the_entry_by_itself() {
    let link = TestLink::create().expect("test link");
    let state = TempDir::new().expect("state dir");
    let (mut daemon, _) = enforcing_office_daemon(&link, &state);
    admit_for(&daemon, "3s");
    let added_at = Instant::now();
    assert!(passes(&link, CLIENT_DENIED_V4));
    daemon.kill().expect("kill -9");
    std::thread::sleep(Duration::from_secs(3).saturating_sub(added_at.elapsed()) + EXPIRY_MARGIN);
    assert!(
        !passes(&link, CLIENT_DENIED_V4),
        "dropped at its time with no daemon: the kernel keeps the entry's deadline"
    );
    assert!(
        passes(&link, CLIENT_ALLOWED_V4),
        "the rest of the list stays"
    );
}

#[test]
fn the_last_entry_of_a_policy_is_held_past_its_time_by_the_daemon_and_the_kernel_alike() {
    let link = TestLink::create().expect("test link");
    let state = TempDir::new().expect("state dir");
    let mut daemon = Daemon::start(&link, state.path(), &WINDOW).expect("allowlistd");
    let only = format!("{CLIENT_ALLOWED_V4}/32");
    let created = daemon.call(
        "POST",
        "/v1/allowlists",
        Some(&serde_json::json!({
            "name": "temporary",
            "entries": [{ "cidr": only, "ttl": "3s" }],
        })),
    );
    assert_eq!(created.status, 201, "{created:?}");
    let id = created.body["id"].as_str().expect("id").to_owned();
    let created_at = Instant::now();
    enable(&daemon, &id);
    acknowledge(&daemon);
    assert!(passes(&link, CLIENT_ALLOWED_V4));
    assert!(!passes(&link, CLIENT_DENIED_V4));

    std::thread::sleep(Duration::from_secs(3).saturating_sub(created_at.elapsed()) + EXPIRY_MARGIN);
    assert!(
        passes(&link, CLIENT_ALLOWED_V4),
        "held: without it the host would drop every source"
    );
    assert!(!passes(&link, CLIENT_DENIED_V4), "still enforcing");
    assert_eq!(entries(&daemon, &id).len(), 1, "the API shows it held");
    let verdict = daemon.call("GET", &format!("/v1/evaluate?ip={CLIENT_ALLOWED_V4}"), None);
    assert_eq!(verdict.body["allowed"], true, "{verdict:?}");

    // With the daemon dead, the kernel holds it too; a restart changes nothing.
    daemon.kill().expect("kill -9");
    std::thread::sleep(Duration::from_secs(1));
    assert!(passes(&link, CLIENT_ALLOWED_V4), "the kernel holds it");
    let daemon = Daemon::start(&link, state.path(), &WINDOW).expect("restart");
    assert!(passes(&link, CLIENT_ALLOWED_V4), "after a restart too");
    assert_eq!(entries(&daemon, &id).len(), 1);

    // Another entry allows something: the held one goes at once, in both.
    let added = daemon.call(
        "POST",
        &format!("/v1/allowlists/{id}/entries"),
        Some(&serde_json::json!({ "entries": [{ "cidr": CLIENT_ALLOWED_V6.to_string() }] })),
    );
    assert_eq!(added.status, 201, "{added:?}");
    assert!(
        !passes(&link, CLIENT_ALLOWED_V4),
        "expired once no longer the last"
    );
    assert!(passes(&link, CLIENT_ALLOWED_V6));
    assert_eq!(
        entries(&daemon, &id),
        [(format!("{CLIENT_ALLOWED_V6}/128"), Value::Null)],
        "gone before the API answered"
    );
}

#[test]
fn once_the_kernel_drops_an_expired_entry_it_never_passes_again() {
    let link = TestLink::create().expect("test link");
    let state = TempDir::new().expect("state dir");
    let (daemon, id) = enforcing_office_daemon(&link, &state);
    let mut probes =
        allowlist_tests::traffic::Probes::new(&link, &[CLIENT_DENIED_V4.into()]).expect("probes");
    admit_for(&daemon, "1s");
    // A policy no generation holds yet, so that taking the entry out writes one.
    let added = daemon.call(
        "POST",
        &format!("/v1/allowlists/{id}/entries"),
        Some(&serde_json::json!({ "entries": [{ "cidr": "192.0.2.1" }] })),
    );
    assert_eq!(added.status, 201, "{added:?}");
    // The kernel drops it at its second; the daemon then takes it out and rewrites the
    // policies, which must not give the kernel's deadline back before the new policy is in
    // force (it did: ~150 ms of passing again).
    let start = Instant::now();
    let mut dropped_at = None;
    while start.elapsed() < Duration::from_secs(4) {
        let passes = probes
            .passing(Duration::from_millis(30))
            .expect("probe")
            .contains(&CLIENT_DENIED_V4.into());
        match (passes, dropped_at) {
            (false, None) => dropped_at = Some(start.elapsed()),
            (true, Some(at)) => panic!(
                "dropped at {at:?}, then passed again at {:?}",
                start.elapsed()
            ),
            _ => {}
        }
    }
    assert!(dropped_at.is_some(), "dropped once expired");
}
