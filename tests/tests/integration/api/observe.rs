//! What the API tells about traffic: why an address passes, hits per entry, the Prometheus
//! metrics, the sources monitor mode would cut off.

use super::*;

#[test]
fn evaluate_says_why_an_address_passes() {
    let s = setup(&["--allow", "198.18.0.9"]);
    let d = &s.daemon;
    let id = create_office(d);
    let evaluate = |ip: &str| d.call("GET", &format!("/v1/evaluate?ip={ip}"), None);
    let not_enforcing = evaluate("203.0.113.1");
    assert_eq!(
        (
            not_enforcing.body["allowed"].clone(),
            not_enforcing.body["reason"].clone()
        ),
        (json!(true), json!("not_enforcing"))
    );
    assert_eq!(enable_forced(d, &id).status, 202);
    assert_eq!(evaluate("198.18.0.9").body["reason"], "always_allow");
    let listed = evaluate(&CLIENT_ALLOWED_V6.to_string());
    assert_eq!(
        (
            listed.body["allowed"].clone(),
            listed.body["reason"].clone()
        ),
        (json!(true), json!("allowlist"))
    );
    assert_eq!(listed.body["matches"][0]["allowlist_id"], json!(id));
    assert_eq!(
        listed.body["matches"][0]["cidr"],
        format!("{CLIENT_ALLOWED_V6}/128")
    );
    let none = evaluate(&CLIENT_DENIED_V4.to_string());
    assert_eq!(
        (none.body["allowed"].clone(), none.body["reason"].clone()),
        (json!(false), json!("no_match"))
    );
    assert_error(&evaluate("not-an-ip"), 400, "invalid_request");
    assert_error(&d.call("GET", "/v1/evaluate", None), 400, "invalid_request");
    assert_eq!(state(d)["always_allow"], json!(["198.18.0.9/32"]));
}

#[test]
fn stats_count_packets_per_entry() {
    let s = setup(&[]);
    let d = &s.daemon;
    let id = create_office(d);
    assert_eq!(enable_forced(d, &id).status, 202);
    assert!(passes(&s.link, CLIENT_ALLOWED_V4));
    assert!(!passes(&s.link, CLIENT_DENIED_V4));
    let stats = d.call("GET", "/v1/stats", None);
    assert_eq!(stats.status, 200);
    assert!(
        stats.body["counters"]["dropped"]
            .as_u64()
            .is_some_and(|n| n >= 1),
        "{stats:?}"
    );
    assert!(
        stats.body["counters"]["passed_allowed"]
            .as_u64()
            .is_some_and(|n| n >= 1),
        "{stats:?}"
    );
    let entries = stats.body["entries"].as_array().expect("entries");
    let v4 = entries
        .iter()
        .find(|e| e["cidr"] == format!("{CLIENT_ALLOWED_V4}/32"))
        .expect("v4 entry");
    assert!(v4["hits"].as_u64().is_some_and(|n| n >= 1), "{v4}");
    assert_eq!(v4["allowlist_id"], json!(id));

    // Per entry, with the time of the last hit: a stale entry shows as never hit.
    let added = d.call(
        "POST",
        &format!("/v1/allowlists/{id}/entries"),
        Some(&json!({"entries": [{"cidr": "192.0.2.77"}]})),
    );
    assert_eq!(added.status, 201, "{added:?}");
    assert!(passes(&s.link, CLIENT_ALLOWED_V4));
    let list = d.call("GET", &format!("/v1/allowlists/{id}"), None);
    let entries = list.body["entries"].as_array().expect("entries");
    let entry = |cidr: &str| {
        entries
            .iter()
            .find(|e| e["cidr"] == cidr)
            .unwrap_or_else(|| panic!("{cidr} in {list:?}"))
    };
    let used = entry(&format!("{CLIENT_ALLOWED_V4}/32"));
    assert!(used["hits"].as_u64().is_some_and(|n| n >= 2), "{used}");
    let last_hit = used["last_hit"]
        .as_str()
        .and_then(|at| time::OffsetDateTime::parse(at, &Rfc3339).ok())
        .expect("last_hit");
    let age = time::OffsetDateTime::now_utc() - last_hit;
    assert!(
        age >= time::Duration::seconds(-1) && age < time::Duration::seconds(30),
        "last_hit {last_hit} is now: {used}"
    );
    let stale = entry("192.0.2.77/32");
    assert_eq!(stale["hits"], 0, "{stale}");
    assert_eq!(stale["last_hit"], Value::Null, "{stale}");
}

/// The value of the metric line that starts with `series` (name and labels).
fn metric(text: &str, series: &str) -> Option<f64> {
    text.lines()
        .find(|line| line.starts_with(series) && line[series.len()..].starts_with(' '))
        .and_then(|line| line[series.len()..].trim().parse().ok())
}

#[test]
fn metrics_report_packets_hits_the_pending_change_and_requests() {
    let s = setup(&["--ack-min", "1s", "--ack-max", "3s"]);
    let d = &s.daemon;
    assert_eq!(d.raw_text("GET", "/metrics", &[]).expect("scrape").0, 401);
    let id = create_office(d);
    let list = d.call("GET", &format!("/v1/allowlists/{id}"), None);
    let v4_entry = list.body["entries"][0]["id"]
        .as_str()
        .expect("entry")
        .to_owned();
    assert_eq!(enable_forced(d, &id).status, 202);
    assert!(passes(&s.link, CLIENT_ALLOWED_V4));
    assert!(!passes(&s.link, CLIENT_DENIED_V4));

    let text = d.scrape();
    assert_eq!(metric(&text, "allowlist_enforcing"), Some(1.0));
    assert_eq!(metric(&text, "allowlist_pending_change"), Some(1.0));
    let revert_in = metric(&text, "allowlist_pending_revert_seconds").expect("seconds to revert");
    assert!(revert_in > 0.0 && revert_in <= 3.0, "{revert_in}");
    assert!(
        metric(
            &text,
            "allowlist_packets_total{interface=\"srv0\",mode=\"enforce\",verdict=\"dropped\"}"
        )
        .is_some_and(|n| n >= 1.0),
        "{text}"
    );
    assert_eq!(
        metric(
            &text,
            "allowlist_packets_total{interface=\"other\",mode=\"enforce\",verdict=\"dropped\"}"
        ),
        Some(0.0),
        "packets of srv0 are counted as srv0's: {text}"
    );
    let hits = format!(
        "allowlist_entry_hits_total{{allowlist_id=\"{id}\",entry_id=\"{v4_entry}\",cidr=\"{CLIENT_ALLOWED_V4}/32\"}}"
    );
    assert!(metric(&text, &hits).is_some_and(|n| n >= 1.0), "{text}");
    let list_hits = format!(
        "allowlist_allowlist_hits_total{{allowlist_id=\"{id}\",name=\"office\",enabled=\"true\"}}"
    );
    assert!(
        metric(&text, &list_hits).is_some_and(|n| n >= 1.0),
        "{text}"
    );
    assert_eq!(
        metric(
            &text,
            "allowlist_api_requests_total{route=\"/v1/allowlists\",status=\"201\"}"
        ),
        Some(1.0),
        "{text}"
    );
    assert_eq!(
        metric(
            &text,
            "allowlist_api_requests_total{route=\"/v1/enforcement/enable\",status=\"202\"}"
        ),
        Some(1.0)
    );
    assert_eq!(
        metric(
            &text,
            "allowlist_api_requests_total{route=\"/v1/allowlists/{id}\",status=\"200\"}"
        ),
        Some(1.0)
    );
    assert_eq!(metric(&text, "allowlist_reverts_total"), Some(0.0));

    std::thread::sleep(Duration::from_millis(3300));
    let text = d.scrape();
    assert_eq!(
        metric(&text, "allowlist_reverts_total"),
        Some(1.0),
        "{text}"
    );
    assert_eq!(metric(&text, "allowlist_pending_change"), Some(0.0));
    assert_eq!(metric(&text, "allowlist_enforcing"), Some(0.0));
    assert_eq!(metric(&text, "allowlist_pending_revert_seconds"), Some(0.0));
}

#[test]
fn top_lists_who_monitor_mode_would_cut_off_busiest_first() {
    let s = setup(&["--mode", "monitor", "--top-sample", "1"]);
    let d = &s.daemon;
    let id = create_office(d);
    assert_eq!(enable_forced(d, &id).status, 202);
    for _ in 0..5 {
        assert!(passes(&s.link, CLIENT_DENIED_V4), "monitor mode passes");
    }
    assert!(passes(&s.link, CLIENT_DENIED_V6));
    assert!(passes(&s.link, CLIENT_ALLOWED_V4));

    let top = d.call("GET", "/v1/top", None);
    assert_eq!(top.status, 200, "{top:?}");
    assert_eq!(top.body["sample"], 1);
    let sources = top.body["sources"].as_array().expect("sources");
    assert_eq!(
        sources[0]["address"],
        CLIENT_DENIED_V4.to_string(),
        "busiest first: {top:?}"
    );
    assert!(
        sources[0]["packets"].as_u64().is_some_and(|n| n >= 5),
        "{top:?}"
    );
    assert!(
        sources
            .iter()
            .any(|s| s["address"] == CLIENT_DENIED_V6.to_string()),
        "{top:?}"
    );
    assert!(
        !sources
            .iter()
            .any(|s| s["address"] == CLIENT_ALLOWED_V4.to_string()
                || s["address"] == CLIENT_ALLOWED_V6.to_string()),
        "allowed sources are never listed: {top:?}"
    );

    let shown = d.ctl(&["top", "--limit", "1"]);
    let shown = String::from_utf8_lossy(&shown.stdout);
    assert!(shown.contains(&CLIENT_DENIED_V4.to_string()), "{shown}");
    assert!(
        !shown.contains(&CLIENT_DENIED_V6.to_string()),
        "--limit 1: {shown}"
    );

    std::thread::sleep(Duration::from_millis(1100));
    let recent = d.call("GET", "/v1/top?window=500ms", None);
    let recent_sources = recent.body["sources"].as_array().expect("sources");
    assert!(
        !recent_sources
            .iter()
            .any(|s| s["address"] == CLIENT_DENIED_V4.to_string()
                || s["address"] == CLIENT_DENIED_V6.to_string()),
        "not seen in the last 500 ms: {recent:?}"
    );
    assert_error(
        &d.call("GET", "/v1/top?limit=0", None),
        400,
        "invalid_request",
    );
    assert_error(
        &d.call("GET", "/v1/top?window=soon", None),
        400,
        "invalid_request",
    );
}
