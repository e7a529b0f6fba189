//! The audit trail: each change applied, acknowledged or reverted, and each request
//! refused, recorded with who, from where, the lists and entries concerned and what was
//! enforced before and after; read newest first a page at a time, kept across restarts.

use std::time::Duration;

use allowlist_tests::daemon::{Daemon, TempDir};
use allowlist_tests::netns::*;
use allowlist_tests::scenario::*;
use serde_json::{Value, json};

fn records(daemon: &Daemon, query: &str) -> Value {
    let page = daemon.call("GET", &format!("/v1/audit{query}"), None);
    assert_eq!(page.status, 200, "{:?}", page.body);
    page.body
}

#[test]
fn changes_and_refusals_are_recorded_and_read_back_newest_first() {
    let link = TestLink::create().expect("test link");
    let state = TempDir::new().expect("state dir");
    let mut daemon = Daemon::start(&link, state.path(), &WINDOW).expect("allowlistd");
    let id = create(&daemon, "office", &office());
    enable(&daemon, &id);
    let again = daemon.call(
        "POST",
        "/v1/enforcement/enable",
        Some(&json!({ "allowlist_ids": [id] })),
    );
    assert_eq!(again.status, 409);
    acknowledge(&daemon);
    let stranger = daemon
        .request(
            "DELETE",
            &format!("/v1/allowlists/{id}"),
            None,
            &[("Authorization", "Bearer wrong")],
        )
        .expect("request");
    assert_eq!(stranger.status, 401);

    let page = records(&daemon, "");
    let rows = page["records"].as_array().expect("records");
    let outcomes: Vec<&str> = rows
        .iter()
        .map(|r| r["outcome"].as_str().expect("outcome"))
        .collect();
    assert_eq!(
        outcomes,
        ["refused", "acknowledged", "refused", "applied", "applied"],
        "newest first: {page}"
    );
    assert_eq!(rows[0]["status"], 401);
    assert_eq!(rows[0]["actor"], "unauthenticated");
    assert!(
        rows[0]["peer"]
            .as_str()
            .expect("peer")
            .starts_with("127.0.0.1:")
    );
    assert_eq!(rows[2]["status"], 409);
    assert!(
        rows[2]["reason"]
            .as_str()
            .expect("reason")
            .starts_with("already_enabled"),
        "{}",
        rows[2]
    );
    let enabled = &rows[3];
    assert_eq!(enabled["actor"], "admin");
    assert_eq!(enabled["request"], "POST /v1/enforcement/enable");
    assert_eq!(enabled["allowlists"][0]["change"], "enabled");
    assert!(
        enabled["before"]
            .as_str()
            .expect("before")
            .contains("enforcing=false"),
        "{enabled}"
    );
    let created = &rows[4];
    assert_eq!(created["allowlists"][0]["change"], "created");
    assert_eq!(created["allowlists"][0]["added_count"], 2);

    // A page at a time, and kept across a restart.
    let first = records(&daemon, "?limit=2");
    assert_eq!(first["records"].as_array().expect("records").len(), 2);
    let next = first["next"].as_u64().expect("a next page");
    let second = records(&daemon, &format!("?limit=2&after={next}"));
    assert_eq!(second["records"][0]["outcome"], "refused");
    daemon.stop().expect("stop");
    let daemon = Daemon::start(&link, state.path(), &WINDOW).expect("restart");
    assert_eq!(
        records(&daemon, "")["records"]
            .as_array()
            .expect("records")
            .len(),
        5
    );

    // A change nobody acknowledges: its revert is recorded, by the daemon itself.
    disable(&daemon, &id);
    std::thread::sleep(Duration::from_millis(4600));
    let newest = &records(&daemon, "?limit=1")["records"][0];
    assert_eq!(newest["outcome"], "reverted", "{newest}");
    assert_eq!(newest["actor"], "allowlistd");
    assert_eq!(newest["allowlists"][0]["change"], "enabled");

    let table = daemon.ctl(&["audit", "--limit", "3"]);
    let text = String::from_utf8_lossy(&table.stdout);
    assert!(table.status.success(), "{text}");
    assert!(
        text.contains("reverted") && text.contains("allowlistd"),
        "{text}"
    );
    assert!(text.contains("more: allowlistctl audit --after"), "{text}");
}

#[test]
fn an_unauthenticated_flood_cannot_flush_the_trail() {
    let link = TestLink::create().expect("test link");
    let state = TempDir::new().expect("state dir");
    let args = [&WINDOW[..], &["--audit-max-bytes", "65536"]].concat();
    let daemon = Daemon::start(&link, state.path(), &args).expect("allowlistd");
    let id = create(&daemon, "office", &office());
    enable(&daemon, &id);
    acknowledge(&daemon);
    for n in 0..700 {
        let stranger = daemon
            .request(
                "GET",
                &format!("/v1/allowlists/{n}"),
                None,
                &[("Authorization", "Bearer wrong")],
            )
            .expect("request");
        assert_eq!(stranger.status, 401);
    }
    let rows = records(&daemon, "?limit=10000")["records"]
        .as_array()
        .cloned()
        .expect("records");
    let outcomes: Vec<&str> = rows
        .iter()
        .map(|r| r["outcome"].as_str().expect("outcome"))
        .collect();
    assert_eq!(
        outcomes,
        ["refused", "acknowledged", "applied", "applied"],
        "the changes stay; 700 refusals from one peer are one record until their minute \
         is summed up"
    );
    assert_eq!(rows[0]["actor"], "unauthenticated");
    let log = daemon.log();
    let lines = log
        .lines()
        .filter(|line| line.contains("status=401"))
        .count();
    assert_eq!(lines, 1, "one log line too:\n{log}");
}
