//! `allowlistctl import`: a list's entries replaced in one change by a file or a feed, with
//! what was added, removed and unchanged reported, and invalid lines named, changing nothing.

use std::process::Output;

use allowlist_tests::daemon::{Daemon, TempDir};
use allowlist_tests::netns::TestLink;
use allowlist_tests::scenario::list_entries;
use serde_json::{Value, json};

fn text(output: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    )
}

/// The CIDR, description and id of each entry of list `id`.
fn entries(daemon: &Daemon, id: &str) -> Vec<(String, Value, Value)> {
    list_entries(daemon, id)
        .into_iter()
        .map(|entry| {
            let cidr = entry["cidr"].as_str().unwrap_or_default().to_owned();
            (cidr, entry["description"].clone(), entry["id"].clone())
        })
        .collect()
}

#[test]
fn an_import_replaces_the_entries_in_one_change_and_reports_it() {
    let link = TestLink::create().expect("test link");
    let state = TempDir::new().expect("state dir");
    let daemon = Daemon::start(&link, state.path(), &[]).expect("allowlistd");
    let created = daemon.call(
        "POST",
        "/v1/allowlists",
        Some(&json!({"name": "office", "entries": [
            {"cidr": "192.0.2.0/24", "description": "HQ"},
            {"cidr": "198.51.100.9"}
        ]})),
    );
    let id = created.body["id"].as_str().expect("id").to_owned();
    let kept_id = entries(&daemon, &id)[0].2.clone();

    let files = TempDir::new().expect("feed dir");
    let file = files.path().join("feed.txt");
    std::fs::write(
        &file,
        "# the office feed\n192.0.2.0/24\n  203.0.113.0/24  \n\n2001:db8::/32 # v6\n203.0.113.0/24\n",
    )
    .expect("feed");
    let file_arg = file.to_string_lossy().into_owned();
    let imported = daemon.ctl(&["import", "office", &file_arg, "-d", "feed"]);
    assert!(imported.status.success(), "{}", text(&imported));
    assert!(
        text(&imported).contains("2 added, 1 removed, 1 unchanged (1 repeated in the input)"),
        "{}",
        text(&imported)
    );
    let now = entries(&daemon, &id);
    let cidrs: Vec<&str> = now.iter().map(|(cidr, _, _)| cidr.as_str()).collect();
    assert_eq!(cidrs, ["192.0.2.0/24", "203.0.113.0/24", "2001:db8::/32"]);
    assert_eq!(now[0].1, json!("HQ"), "an entry kept keeps its description");
    assert_eq!(now[0].2, kept_id, "and its id");
    assert_eq!(now[1].1, json!("feed"));

    // Invalid lines: named, and nothing changes.
    let version = daemon
        .call("GET", &format!("/v1/allowlists/{id}"), None)
        .body["version"]
        .clone();
    std::fs::write(&file, "192.0.2.0/24\n10.0.0.1/8\nnonsense\n").expect("feed");
    let refused = daemon.ctl(&["import", "office", &file_arg]);
    assert!(!refused.status.success());
    let message = text(&refused);
    assert!(
        message.contains("2 invalid prefixes; nothing changed")
            && message.contains("line 2: 10.0.0.1/8 has host bits set; did you mean 10.0.0.0/8?")
            && message.contains("line 3:"),
        "{message}"
    );
    assert_eq!(
        daemon
            .call("GET", &format!("/v1/allowlists/{id}"), None)
            .body["version"],
        version,
        "nothing changed"
    );
    let skipped = daemon.ctl(&["import", "office", &file_arg, "--skip-invalid", "--dry-run"]);
    assert!(
        text(&skipped).contains("would import into")
            && text(&skipped).contains("0 added, 2 removed, 1 unchanged; 2 invalid skipped"),
        "{}",
        text(&skipped)
    );
    assert_eq!(entries(&daemon, &id).len(), 3, "a dry run changes nothing");

    // AWS ip-ranges.json on stdin, for scripts.
    let aws = r#"{"syncToken":"1","prefixes":[
        {"ip_prefix":"3.5.140.0/22","region":"ap-northeast-2","service":"AMAZON"},
        {"ip_prefix":"3.5.140.0/22","region":"ap-northeast-2","service":"S3"}],
        "ipv6_prefixes":[{"ipv6_prefix":"2600:1f18::/33","service":"EC2"}]}"#;
    let fed = daemon.ctl_fed(aws, &["--json", "import", "office", "-", "--format", "aws"]);
    assert!(fed.status.success(), "{}", text(&fed));
    let report: Value = serde_json::from_slice(&fed.stdout).expect("JSON report");
    assert_eq!(report["import"]["added"], 2);
    assert_eq!(report["import"]["removed"], 3);
    assert_eq!(report["import"]["repeated"], 1);
    let cidrs: Vec<String> = entries(&daemon, &id).into_iter().map(|e| e.0).collect();
    assert_eq!(cidrs, ["3.5.140.0/22", "2600:1f18::/33"]);
}
