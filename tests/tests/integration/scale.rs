//! Large lists: a restart with a large state keeps enforcing without a gap, `/metrics` stays
//! bounded, a list read in pages gives every entry exactly once while it changes, and a
//! read during a long write is answered from the state before it.

use std::collections::{BTreeMap, BTreeSet};
use std::net::Ipv4Addr;
use std::time::{Duration, Instant};

use allowlist_tests::daemon::{Daemon, TempDir};
use allowlist_tests::netns::{CLIENT_ALLOWED_V4, TestLink};
use allowlist_tests::scenario::{
    Stop, WINDOW, acknowledge, enable, enforcing_office, office, restart_under_stream,
};
use allowlist_tests::traffic::passes;
use serde_json::{Value, json};

/// `count` host entries in 10.0.0.0/8, from the `first`-th on.
fn hosts(first: u32, count: u32) -> Vec<String> {
    (first..first + count)
        .map(|n| Ipv4Addr::from(0x0a00_0000 + n).to_string())
        .collect()
}

/// Creates the list `name` of `cidrs`; returns its id and version.
fn create(daemon: &Daemon, name: &str, cidrs: &[String]) -> (String, u64) {
    let entries: Vec<Value> = cidrs.iter().map(|cidr| json!({ "cidr": cidr })).collect();
    let created = daemon.call(
        "POST",
        "/v1/allowlists",
        Some(&json!({ "name": name, "entries": entries })),
    );
    assert_eq!(created.status, 201, "{:?}", created.body["error"]);
    (
        created.body["id"].as_str().expect("id").to_owned(),
        created.body["version"].as_u64().expect("version"),
    )
}

#[test]
fn a_restart_with_a_large_state_enforces_without_a_gap() {
    let link = TestLink::create().expect("test link");
    let state = TempDir::new().expect("state dir");
    let args = [&WINDOW[..], &["--max-entries", "524288"]].concat();
    let mut daemon = Daemon::start(&link, state.path(), &args).expect("allowlistd");
    let mut cidrs = hosts(0, 200_000);
    cidrs.extend(office());
    let (id, _) = create(&daemon, "large", &cidrs);
    enable(&daemon, &id);
    acknowledge(&daemon);
    assert!(enforcing_office(&link));

    let daemon = restart_under_stream(&link, &mut daemon, Stop::Terminate, &state, &args, 400_000);
    assert!(enforcing_office(&link));
    let log = daemon.log();
    assert!(
        log.contains("the kernel already enforced the state on disk"),
        "nothing rewritten: {log}"
    );
    let page = daemon.call("GET", &format!("/v1/allowlists/{id}/entries?limit=1"), None);
    assert_eq!(page.body["total"], 200_002, "{:?}", page.body);
}

#[test]
fn metrics_stay_bounded_with_many_entries() {
    let link = TestLink::create().expect("test link");
    let state = TempDir::new().expect("state dir");
    let args = [&WINDOW[..], &["--metrics-top-entries", "3"]].concat();
    let daemon = Daemon::start(&link, state.path(), &args).expect("allowlistd");
    let mut cidrs = hosts(0, 50_000);
    cidrs.extend(office());
    let (id, _) = create(&daemon, "large", &cidrs);
    enable(&daemon, &id);
    acknowledge(&daemon);
    for _ in 0..5 {
        assert!(passes(&link, CLIENT_ALLOWED_V4));
    }

    let text = daemon.scrape();
    assert!(
        text.len() < 16 * 1024,
        "a scrape of a 50 002-entry list is small: {} bytes",
        text.len()
    );
    let entry_series: Vec<&str> = text
        .lines()
        .filter(|line| line.starts_with("allowlist_entry_hits_total{"))
        .collect();
    assert!(
        !entry_series.is_empty() && entry_series.len() <= 3,
        "at most --metrics-top-entries entry series, those with hits: {entry_series:?}"
    );
    assert!(
        entry_series[0].contains(&format!("cidr=\"{CLIENT_ALLOWED_V4}/32\"")),
        "the busiest entry first: {entry_series:?}"
    );
    let list_hits = text
        .lines()
        .find(|line| line.starts_with("allowlist_allowlist_hits_total{") && line.contains(&id))
        .and_then(|line| line.rsplit(' ').next())
        .and_then(|hits| hits.parse::<u64>().ok());
    assert!(list_hits.is_some_and(|hits| hits >= 5), "{text}");
    assert!(
        text.contains(&format!(
            "allowlist_allowlist_entries{{allowlist_id=\"{id}\",name=\"large\"}} 50002"
        )),
        "{text}"
    );
    // Every entry's hits stay readable: the busiest in the stats, any in the list's pages.
    let stats = daemon.call("GET", "/v1/stats?top=1", None);
    assert_eq!(stats.status, 200);
    assert_eq!(
        stats.body["entries"][0]["cidr"],
        format!("{CLIENT_ALLOWED_V4}/32")
    );
    assert_eq!(stats.body["entries"].as_array().map(Vec::len), Some(1));
}

#[test]
fn pages_give_every_entry_exactly_once_while_the_list_changes() {
    let link = TestLink::create().expect("test link");
    let state = TempDir::new().expect("state dir");
    let daemon = Daemon::start(&link, state.path(), &WINDOW).expect("allowlistd");
    // Every other address: room to add entries between the ones there.
    let cidrs: Vec<String> = (0..5_000u32)
        .map(|n| Ipv4Addr::from(0x0a00_0000 + 2 * n).to_string())
        .collect();
    let (id, _) = create(&daemon, "paged", &cidrs);

    let mut seen: BTreeMap<String, u32> = BTreeMap::new();
    let mut removed = Vec::new();
    let mut after: Option<String> = None;
    let mut pages = 0;
    loop {
        let path = match &after {
            None => format!("/v1/allowlists/{id}/entries?limit=700"),
            Some(cursor) => format!("/v1/allowlists/{id}/entries?limit=700&after={cursor}"),
        };
        let page = daemon.call("GET", &path, None);
        assert_eq!(page.status, 200, "{:?}", page.body);
        let entries = page.body["entries"].as_array().expect("entries");
        assert!(entries.len() <= 700);
        for entry in entries {
            *seen
                .entry(entry["cidr"].as_str().expect("cidr").to_owned())
                .or_default() += 1;
            assert!(entry["hits"].is_u64(), "each entry with its hits");
        }
        pages += 1;
        // Between pages: entries added before and after the cursor, one removed ahead.
        let page_number = pages as u32;
        let added = daemon.call(
            "POST",
            &format!("/v1/allowlists/{id}/entries"),
            Some(&json!({ "entries": [
                { "cidr": Ipv4Addr::from(0x0a00_0000 + 2 * (page_number * 10) + 1).to_string() },
                { "cidr": Ipv4Addr::from(0x0a00_0000 + 2 * (4_900 - page_number * 10) + 1).to_string() },
            ]})),
        );
        assert_eq!(added.status, 201, "{:?}", added.body);
        let ahead = daemon.call("GET", &format!("/v1/allowlists/{id}"), None);
        let all = ahead.body["entries"].as_array().expect("entries");
        if let Some(last) = all.last()
            && page.body["next"].is_string()
        {
            let entry_id = last["id"].as_str().expect("id");
            let gone = daemon.call(
                "DELETE",
                &format!("/v1/allowlists/{id}/entries/{entry_id}"),
                None,
            );
            assert_eq!(gone.status, 204, "{:?}", gone.body);
            removed.push(last["cidr"].as_str().expect("cidr").to_owned());
        }
        match page.body["next"].as_str() {
            Some(next) => after = Some(next.to_owned()),
            None => break,
        }
    }
    assert!(pages >= 8, "{pages} pages");
    for cidr in &cidrs {
        let cidr = format!("{cidr}/32");
        if removed.contains(&cidr) {
            continue;
        }
        assert_eq!(seen.get(&cidr), Some(&1), "{cidr} once");
    }
    assert!(
        seen.values().all(|times| *times == 1),
        "no entry twice: {:?}",
        seen.iter()
            .filter(|(_, times)| **times > 1)
            .collect::<Vec<_>>()
    );
}

#[test]
fn a_read_during_a_long_write_is_answered_from_the_state_before_it() {
    let link = TestLink::create().expect("test link");
    let state = TempDir::new().expect("state dir");
    let args = [&WINDOW[..], &["--max-entries", "1048576"]].concat();
    let daemon = Daemon::start(&link, state.path(), &args).expect("allowlistd");
    let (id, version) = create(&daemon, "large", &hosts(0, 1_000));
    // A replace of many entries: long enough to read during it. Its body is ready before
    // the clock starts: the write is the daemon's work, not the client's.
    let others: Vec<Value> = hosts(1_000_000, 400_000)
        .into_iter()
        .map(|cidr| json!({ "cidr": cidr }))
        .collect();
    let body = json!({ "name": "large", "entries": others }).to_string();
    let auth = format!("Bearer {}", daemon.token);
    let path = format!("/v1/allowlists/{id}");

    let (write, reads) = std::thread::scope(|scope| {
        let writer = scope.spawn(|| {
            let started = Instant::now();
            let response = daemon
                .raw("PUT", &path, Some(&body), &[("Authorization", &auth)])
                .expect("PUT");
            (response, started.elapsed())
        });
        let mut reads = Vec::new();
        std::thread::sleep(Duration::from_millis(300));
        while !writer.is_finished() {
            let started = Instant::now();
            let page = daemon.call("GET", &format!("{path}/entries?limit=5"), None);
            let enforcement = daemon.call("GET", "/v1/enforcement", None);
            reads.push((page, enforcement.status, started.elapsed()));
            std::thread::sleep(Duration::from_millis(50));
        }
        (writer.join().expect("writer"), reads)
    });
    let (written, write_took) = write;
    assert_eq!(written.status, 200, "{:?}", written.body["error"]);
    assert!(
        reads.len() >= 2,
        "reads ran during the write, which took {write_took:?}"
    );
    for (page, enforcement, took) in &reads {
        assert_eq!((page.status, *enforcement), (200, 200));
        assert!(
            *took < write_took / 4,
            "a read did not wait for the write ({took:?} of {write_took:?})"
        );
    }
    // The first reads came well before the write was done: the state before it.
    let (first, _, _) = &reads[0];
    assert_eq!(
        (&first.body["version"], &first.body["total"]),
        (&json!(version), &json!(1_000)),
        "answered from the state before the write"
    );
    let after = daemon.call("GET", &format!("{path}/entries?limit=5"), None);
    assert_eq!(after.body["version"], version + 1);
    assert_eq!(after.body["total"], 400_000);
}

#[test]
fn allowlistctl_pages_through_a_list_larger_than_a_page() {
    let link = TestLink::create().expect("test link");
    let state = TempDir::new().expect("state dir");
    let daemon = Daemon::start(&link, state.path(), &WINDOW).expect("allowlistd");
    // allowlistctl asks for pages of 10 000 entries: three pages and a bit.
    let cidrs = hosts(0, 32_000);
    let (id, _) = create(&daemon, "paged", &cidrs);

    let shown = daemon.ctl(&["show", "paged"]);
    assert!(shown.status.success(), "{shown:?}");
    let stdout = String::from_utf8_lossy(&shown.stdout);
    assert!(stdout.contains("entries:     32000"), "the count is shown");
    let rows: Vec<&str> = stdout
        .lines()
        .filter_map(|line| line.split_whitespace().nth(1))
        .filter(|cidr| cidr.starts_with("10."))
        .collect();
    assert_eq!(rows.len(), cidrs.len(), "every entry shown, once");
    let shown: BTreeSet<&str> = rows.iter().copied().collect();
    let expected: Vec<String> = cidrs.iter().map(|cidr| format!("{cidr}/32")).collect();
    assert!(
        expected.iter().all(|cidr| shown.contains(cidr.as_str())),
        "every entry shown"
    );

    // An entry named by its CIDR, found on the fourth page, is removed.
    let listed = daemon.ctl(&["list"]);
    assert!(String::from_utf8_lossy(&listed.stdout).contains("32000"));
    let removed = daemon.ctl(&["remove", "paged", &cidrs[31_000]]);
    assert!(removed.status.success(), "{removed:?}");
    let page = daemon.call(
        "GET",
        &format!(
            "/v1/allowlists/{id}/entries?limit=1&after={}%2F32",
            cidrs[30_999]
        ),
        None,
    );
    assert_eq!(page.body["total"], 31_999);
    let summaries = daemon.call("GET", "/v1/allowlists?entries=false", None);
    assert_eq!(summaries.body["allowlists"][0]["entry_count"], 31_999);
    assert!(summaries.body["allowlists"][0].get("entries").is_none());
    assert_eq!(
        page.body["entries"][0]["cidr"],
        format!("{}/32", cidrs[31_001])
    );
}
