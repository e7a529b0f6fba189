//! The shipped Grafana dashboard and Prometheus alert rules query only metrics allowlistd
//! exports (a fleet-following daemon, so that the fleet's series are there too).

use std::collections::BTreeSet;

use allowlist_tests::daemon::{Daemon, TempDir};
use allowlist_tests::netns::TestLink;
use serde_json::Value;

/// The `allowlist_*` metric names in `text` (PromQL expressions).
fn metric_names(text: &str) -> BTreeSet<String> {
    let mut names = BTreeSet::new();
    let mut rest = text;
    while let Some(at) = rest.find("allowlist_") {
        let name: String = rest[at..]
            .chars()
            .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
            .collect();
        rest = &rest[at + name.len()..];
        names.insert(name);
    }
    names
}

/// Every string under a key `expr` or `query` of `value`.
fn queries(value: &Value, found: &mut Vec<String>) {
    match value {
        Value::Object(map) => {
            for (key, value) in map {
                match (key.as_str(), value) {
                    ("expr" | "query", Value::String(text)) => found.push(text.clone()),
                    _ => queries(value, found),
                }
            }
        }
        Value::Array(items) => items.iter().for_each(|item| queries(item, found)),
        _ => {}
    }
}

#[test]
fn the_dashboard_and_the_alerts_query_only_exported_metrics() {
    let link = TestLink::create().expect("test link");
    let state = TempDir::new().expect("state dir");
    // An etcd that is not there: the follower runs, disconnected, and exports its series.
    let daemon = Daemon::start(
        &link,
        state.path(),
        &["--fleet", "web", "--fleet-endpoints", "http://127.0.0.1:9"],
    )
    .expect("allowlistd");
    let exported: BTreeSet<String> = daemon
        .scrape()
        .lines()
        .filter_map(|line| line.strip_prefix("# TYPE "))
        .filter_map(|line| line.split_whitespace().next().map(str::to_owned))
        .collect();
    assert!(
        exported.contains("allowlist_fleet_connected"),
        "{exported:?}"
    );

    let dashboard: Value =
        serde_json::from_str(include_str!("../../../packaging/grafana/allowlist.json"))
            .expect("the dashboard is JSON");
    let mut found = Vec::new();
    queries(&dashboard, &mut found);
    assert!(
        found.len() >= 10,
        "the dashboard's panels have queries: {found:?}"
    );
    let dashboard_metrics = metric_names(&found.join("\n"));
    let alerts = include_str!("../../../packaging/prometheus/alerts.yml");
    let alert_metrics = metric_names(alerts);
    for (what, used) in [
        ("dashboard", &dashboard_metrics),
        ("alerts", &alert_metrics),
    ] {
        let unknown: Vec<&String> = used.difference(&exported).collect();
        assert!(
            unknown.is_empty(),
            "the {what} queries {unknown:?}, not exported"
        );
    }
    for wanted in [
        "allowlist_packets_total",
        "allowlist_allowlist_hits_total",
        "allowlist_pending_revert_seconds",
        "allowlist_reverts_total",
        "allowlist_api_requests_total",
        "allowlist_fleet_state",
    ] {
        assert!(
            dashboard_metrics.contains(wanted),
            "the dashboard shows {wanted}"
        );
    }
    for wanted in [
        "allowlist_reverts_total",
        "allowlist_pending_revert_seconds",
        "allowlist_packets_total",
    ] {
        assert!(alert_metrics.contains(wanted), "an alert watches {wanted}");
    }
    assert!(
        alerts.contains("up{job=\"allowlistd\"} == 0"),
        "the daemon-down alert"
    );
}
