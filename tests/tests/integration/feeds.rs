//! A list that follows a feed, with real packets: allowlistd reads the feed (an HTTP server
//! of the test) at its refresh and replaces the list's entries without an acknowledgement,
//! keeps the list as it was when the feed fails, comes back empty or invalid, would take
//! more than half the entries a person set away (in any number of reads), or would cut off
//! an established session to a protected port, and records each refusal in the audit trail.

use std::time::{Duration, Instant};

use allowlist_tests::daemon::{Daemon, TempDir};
use allowlist_tests::feed_server::FeedServer;
use allowlist_tests::netns::*;
use allowlist_tests::scenario::*;
use allowlist_tests::traffic::{TcpSession, passes};
use serde_json::{Value, json};

fn cidrs(daemon: &Daemon, id: &str) -> Vec<String> {
    list_entries(daemon, id)
        .iter()
        .map(|entry| entry["cidr"].as_str().unwrap_or_default().to_owned())
        .collect()
}

/// Waits until list `id` holds `wanted`.
fn wait_for(daemon: &Daemon, id: &str, wanted: &[&str]) {
    let deadline = Instant::now() + Duration::from_secs(8);
    while cidrs(daemon, id) != wanted {
        assert!(
            Instant::now() < deadline,
            "the list follows its feed: {:?}, wanted {wanted:?}\n{}",
            cidrs(daemon, id),
            daemon.log()
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// Sets what the feed answers, then waits past two refreshes and the newest audit record
/// for the list's source, which must be a refusal saying `why`.
fn refused(daemon: &Daemon, feed: &FeedServer, answer: (u16, &str), why: &str) {
    feed.set(answer.0, answer.1);
    let deadline = Instant::now() + Duration::from_secs(8);
    loop {
        let page = daemon.call("GET", "/v1/audit?limit=1", None);
        let newest: &Value = &page.body["records"][0];
        if newest["outcome"] == "refused" && newest["reason"].as_str().unwrap_or("").contains(why) {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "a refusal saying {why:?}: {newest}"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

#[test]
fn a_list_follows_its_feed_within_bounds_and_keeps_its_entries_otherwise() {
    let link = TestLink::create().expect("test link");
    let state = TempDir::new().expect("state dir");
    let daemon = Daemon::start(&link, state.path(), &WINDOW).expect("allowlistd");
    let feed = FeedServer::serve(
        &link,
        &format!("# office and lab\n{CLIENT_ALLOWED_V4}\n{CLIENT_DENIED_V4}\n192.0.2.0/24\n"),
    )
    .expect("feed");
    let url = feed.url.clone();
    let created = daemon.call(
        "POST",
        "/v1/allowlists",
        Some(&json!({"name": "feed", "source": {"url": url, "refresh": "1s"}})),
    );
    assert_eq!(created.status, 201, "{:?}", created.body);
    assert_eq!(created.body["source"]["refresh"], "1s");
    let id = created.body["id"].as_str().expect("id").to_owned();
    let allowed = format!("{CLIENT_ALLOWED_V4}/32");
    let denied = format!("{CLIENT_DENIED_V4}/32");
    wait_for(&daemon, &id, &["192.0.2.0/24", &allowed, &denied]);
    // A feed that says the same again changes nothing, and records nothing.
    let records = || {
        daemon.call("GET", "/v1/audit?limit=10000", None).body["records"]
            .as_array()
            .map_or(0, Vec::len)
    };
    let before = records();
    std::thread::sleep(Duration::from_millis(2500));
    assert_eq!(records(), before, "two reads of an unchanged feed");
    enable(&daemon, &id);
    acknowledge(&daemon);
    assert!(passes(&link, CLIENT_DENIED_V4));

    // The feed drops one address and adds a network: applied, no acknowledgement asked.
    feed.set(
        200,
        &format!("{CLIENT_ALLOWED_V4}\n192.0.2.0/24\n203.0.113.0/24\n"),
    );
    wait_for(&daemon, &id, &["192.0.2.0/24", &allowed, "203.0.113.0/24"]);
    assert!(
        !passes(&link, CLIENT_DENIED_V4),
        "gone from the feed, dropped"
    );
    assert!(passes(&link, CLIENT_ALLOWED_V4));
    assert_eq!(enforcement(&daemon)["pending"], Value::Null);

    // Empty, failing, or taking most entries away: refused, the list kept.
    refused(&daemon, &feed, (200, "# nothing today\n"), "gave no prefix");
    refused(&daemon, &feed, (500, "oops"), "reading");
    refused(
        &daemon,
        &feed,
        (200, "192.0.2.0/24\n"),
        "would leave 1 of the 3 entries",
    );
    assert_eq!(
        cidrs(&daemon, &id),
        ["192.0.2.0/24", &allowed, "203.0.113.0/24"]
    );
    assert!(
        passes(&link, CLIENT_ALLOWED_V4),
        "the list kept its entries"
    );
}

#[test]
fn a_feed_cannot_cut_off_a_protected_session_nor_empty_a_list_in_two_steps() {
    let link = TestLink::create().expect("test link");
    let state = TempDir::new().expect("state dir");
    let daemon = Daemon::start(&link, state.path(), &WINDOW).expect("allowlistd");
    let [kept, moved, other] = ["10.89.0.4", "10.89.0.5", "10.89.0.6"];
    let feed =
        FeedServer::serve(&link, &format!("{CLIENT_ALLOWED_V4}\n{kept}\n{moved}\n")).expect("feed");
    let url = feed.url.clone();
    let created = daemon.call(
        "POST",
        "/v1/allowlists",
        Some(&json!({"name": "feed", "source": {"url": url, "refresh": "1s"}})),
    );
    assert_eq!(created.status, 201, "{:?}", created.body);
    let id = created.body["id"].as_str().expect("id").to_owned();
    let allowed = format!("{CLIENT_ALLOWED_V4}/32");
    let (kept, moved, other) = (
        format!("{kept}/32"),
        format!("{moved}/32"),
        format!("{other}/32"),
    );
    wait_for(&daemon, &id, &[&kept, &moved, &allowed]);
    enable(&daemon, &id);
    acknowledge(&daemon);
    assert!(!passes(&link, CLIENT_DENIED_V4));

    // The allowed client holds an SSH session; the feed leaves it out.
    let session = TcpSession::open(&link, CLIENT_ALLOWED_V4.into(), 22).expect("session");
    refused(
        &daemon,
        &feed,
        (200, &format!("{kept}\n{moved}\n{other}\n")),
        &format!("would cut off {CLIENT_ALLOWED_V4} (session to port 22)"),
    );
    assert!(
        passes(&link, CLIENT_ALLOWED_V4),
        "the session's source still passes"
    );
    assert_eq!(enforcement(&daemon)["pending"], Value::Null);
    drop(session);

    // Junk added first (adds only), then served alone: the second step is refused, as
    // counted from the entries the list held when it was set, not from the last read.
    let junk: Vec<String> = (1..=10).map(|n| format!("203.0.113.{n}/32")).collect();
    let mut with_junk = vec![allowed.clone(), kept.clone(), moved.clone()];
    with_junk.extend(junk.iter().cloned());
    feed.set(200, &with_junk.join("\n"));
    with_junk.sort_by_key(|cidr| cidr.parse::<ipnet::IpNet>().expect("cidr"));
    let with_junk: Vec<&str> = with_junk.iter().map(String::as_str).collect();
    wait_for(&daemon, &id, &with_junk);
    refused(
        &daemon,
        &feed,
        (200, &junk.join("\n")),
        "would leave 0 of the 3 entries",
    );
    assert!(passes(&link, CLIENT_ALLOWED_V4));
    // Invalid lines are refused as a whole, as `allowlistctl import` refuses them.
    refused(
        &daemon,
        &feed,
        (
            200,
            &format!("{allowed}\n{kept}\n{moved}\nnot-an-address\n"),
        ),
        "1 invalid prefixes (line 4",
    );
    // The good feed comes back: applied.
    feed.set(200, &format!("{allowed}\n{kept}\n{moved}\n"));
    wait_for(&daemon, &id, &[&kept, &moved, &allowed]);
}
