//! Fleet previews with real parts: hosts judge their live traffic against a release that is
//! not published, change no verdict, and report what it would drop to etcd.

use allowlist_tests::etcd::policy_file;
use allowlist_tests::fleet::*;
use allowlist_tests::netns::CLIENT_DENIED_V4;
use allowlist_tests::traffic::passes;
use serde_json::Value;

/// `allowlistctl fleet status --preview --json`.
fn preview_status(fleet: &Fleet) -> Value {
    let output = fleet
        .etcd
        .fleet_ctl(FLEET, &["status", "--preview", "--json"]);
    assert!(output.status.success(), "{output:?}");
    serde_json::from_slice(&output.stdout).expect("status JSON")
}

/// Publishes `text` as a preview with `more` arguments; returns what it printed.
fn publish_preview(fleet: &Fleet, text: &str, more: &[&str]) -> String {
    let file = policy_file(fleet.files.path(), "candidate.toml", text);
    let mut args = vec![
        "publish",
        "-f",
        file.to_str().expect("path"),
        "--preview",
        "1m",
    ];
    args.extend(more);
    let output = fleet.etcd.fleet_ctl(FLEET, &args);
    assert!(output.status.success(), "{output:?}");
    String::from_utf8_lossy(&output.stdout).into_owned()
}

#[test]
fn a_fleet_preview_reports_per_host_what_a_release_would_drop_and_changes_nothing() {
    let fleet = fleet(2, ["1s", "30s"], &[]);
    let second_client = CLIENT_DENIED_V4.to_string();
    let first = fleet.publish(&office_file(&[&second_client]), None);
    wait_all(&fleet, &first, "pending", 20);
    fleet.ack(&first);
    wait_all(&fleet, &first, "acknowledged", 20);

    // A candidate that leaves the second client out, judged on every host.
    let said = publish_preview(&fleet, &office_file(&[]), &[]);
    assert!(said.contains("every host"), "{said}");
    wait(20, "both hosts preview it", || {
        let status = preview_status(&fleet);
        let hosts = status["hosts"].as_array().cloned().unwrap_or_default();
        hosts.len() == 2 && hosts.iter().all(|host| host["state"] == "running")
    });
    for _ in 0..3 {
        assert!(
            passes(&fleet.hosts[0].link, CLIENT_DENIED_V4),
            "no verdict changes"
        );
    }
    wait(20, "host0 reports the client it would drop", || {
        let status = preview_status(&fleet);
        status["would_drop"][0]["address"] == second_client.as_str()
            && status["would_drop"][0]["hosts"] == serde_json::json!(["host0"])
    });
    let table = fleet.etcd.fleet_ctl(FLEET, &["status", "--preview"]);
    let table = String::from_utf8_lossy(&table.stdout).into_owned();
    eprintln!("{table}");
    assert!(
        table.contains("sources it would drop that pass today:") && table.contains(&second_client),
        "{table}"
    );
    let status = fleet.status();
    assert_eq!(status["current"], first, "nothing published");
    wait_all(&fleet, &first, "acknowledged", 5);

    // With waves, only the first wave's hosts judge it.
    let said = publish_preview(&fleet, &office_file(&[]), &["--wave", "host1"]);
    assert!(said.contains("first wave (host1)"), "{said}");
    wait(20, "host1 previews it", || {
        let status = preview_status(&fleet);
        status["hosts"].as_array().map(Vec::len) == Some(1)
            && status["hosts"][0]["host"] == "host1"
            && status["hosts"][0]["state"] == "running"
    });
    assert!(
        passes(&fleet.hosts[1].link, CLIENT_DENIED_V4),
        "no verdict changes"
    );
}
