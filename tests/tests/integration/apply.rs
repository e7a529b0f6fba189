//! Policy files on one host: `allowlistctl apply` converges the host to a file as one change,
//! `export` writes the host's lists back as one, and a bad file changes nothing.

use allowlist_tests::daemon::{Daemon, TempDir};
use allowlist_tests::etcd::policy_file;
use allowlist_tests::netns::*;
use allowlist_tests::scenario::{WINDOW, create, enforcing_office};
use allowlist_tests::traffic::passes;

struct Setup {
    daemon: Daemon,
    link: TestLink,
    state: TempDir,
}

fn setup() -> Setup {
    let link = TestLink::create().expect("test link");
    let state = TempDir::new().expect("state dir");
    let daemon = Daemon::start(&link, state.path(), &WINDOW).expect("allowlistd");
    Setup {
        daemon,
        link,
        state,
    }
}

fn ctl(daemon: &Daemon, args: &[&str]) -> (bool, String, String) {
    let output = daemon.ctl(args);
    (
        output.status.success(),
        String::from_utf8_lossy(&output.stdout).into_owned(),
        String::from_utf8_lossy(&output.stderr).into_owned(),
    )
}

const OFFICE: &str = r#"
[[allowlist]]
name = "office"
description = "the client's allowed addresses"
enabled = true
entries = [
  { cidr = "198.18.0.2", description = "v4" },
  { cidr = "fd00:a11::2" },
]

[[allowlist]]
name = "spare"
entries = [{ cidr = "192.0.2.0/24" }]
"#;

#[test]
fn apply_converges_once_and_says_so_the_second_time() {
    let s = setup();
    let file = policy_file(s.state.path(), "office.toml", OFFICE);
    let file = file.to_str().expect("path");

    let (ok, out, err) = ctl(&s.daemon, &["apply", "-f", file, "--dry-run"]);
    assert!(ok, "{err}");
    assert!(out.contains("would be created: office"), "{out}");
    assert!(
        passes(&s.link, CLIENT_DENIED_V4),
        "a dry run changes nothing"
    );

    let (ok, out, err) = ctl(&s.daemon, &["apply", "-f", file, "--wait-ack"]);
    assert!(ok, "{err}");
    for line in [
        "created: office",
        "created: spare",
        "enabled: office",
        "acknowledged",
    ] {
        assert!(out.contains(line), "{line}: {out}");
    }
    assert!(enforcing_office(&s.link));
    let state = s.daemon.call("GET", "/v1/enforcement", None).body;
    assert!(state["pending"].is_null(), "acknowledged: {state}");

    let (ok, out, _) = ctl(&s.daemon, &["apply", "-f", file]);
    assert!(ok);
    assert!(out.contains("nothing to change"), "{out}");

    // Export writes the same lists; applying the export changes nothing either.
    let (ok, exported, _) = ctl(&s.daemon, &["export"]);
    assert!(ok);
    let export = policy_file(s.state.path(), "export.toml", &exported);
    let (ok, out, _) = ctl(&s.daemon, &["apply", "-f", export.to_str().expect("path")]);
    assert!(ok && out.contains("nothing to change"), "{exported}\n{out}");
}

#[test]
fn apply_narrowing_is_pending_prune_deletes_and_a_revert_restores_all_of_it() {
    let s = setup();
    let own = create(&s.daemon, "own", &[CLIENT_DENIED_V6.to_string()]);
    let file = policy_file(s.state.path(), "office.toml", OFFICE);
    let (ok, _, err) = ctl(
        &s.daemon,
        &["apply", "-f", file.to_str().expect("path"), "--wait-ack"],
    );
    assert!(ok, "{err}");

    let narrower = OFFICE.replace("  { cidr = \"fd00:a11::2\" },\n", "");
    let file = policy_file(s.state.path(), "narrower.toml", &narrower);
    let (ok, out, err) = ctl(
        &s.daemon,
        &["apply", "-f", file.to_str().expect("path"), "--prune"],
    );
    assert!(ok, "{err}");
    assert!(out.contains("updated: office (+0 -1 prefixes)"), "{out}");
    assert!(out.contains("deleted: own"), "{out}");
    assert!(out.contains("pending: acknowledge between"), "{out}");
    assert!(!passes(&s.link, CLIENT_ALLOWED_V6), "narrowed, pending");
    let gone = s.daemon.call("GET", &format!("/v1/allowlists/{own}"), None);
    assert_eq!(gone.status, 404);

    // Not acknowledged: the office list, and the pruned list, come back as they were.
    std::thread::sleep(std::time::Duration::from_secs(5));
    assert!(enforcing_office(&s.link), "reverted");
    let back = s.daemon.call("GET", &format!("/v1/allowlists/{own}"), None);
    assert_eq!(back.status, 200, "the pruned list is back: {back:?}");
}

#[test]
fn a_bad_file_is_refused_as_a_whole_naming_the_line() {
    let s = setup();
    let bad = OFFICE.replace("192.0.2.0/24", "192.0.2.1/24");
    let file = policy_file(s.state.path(), "bad.toml", &bad);
    let (ok, _, err) = ctl(&s.daemon, &["apply", "-f", file.to_str().expect("path")]);
    assert!(!ok);
    assert!(
        err.contains("bad.toml:13: spare: 192.0.2.1/24 has host bits set"),
        "{err}"
    );
    let lists = s.daemon.call("GET", "/v1/allowlists", None).body;
    assert_eq!(
        lists["allowlists"],
        serde_json::json!([]),
        "nothing created"
    );
}

#[test]
fn an_export_keeps_expiring_entries_and_feeds_and_reads_back_unchanged() {
    let s = setup();
    let created = s.daemon.call(
        "POST",
        "/v1/allowlists",
        Some(&serde_json::json!({
            "name": "contractors",
            "entries": [{ "cidr": "192.0.2.9", "ttl": "2h" }, { "cidr": "192.0.2.10" }],
            // Read once at creation (nothing listens there), never applied.
            "source": { "url": "http://user:secret@127.0.0.1:9/x.txt", "refresh": "7d" },
        })),
    );
    assert_eq!(created.status, 201, "{created:?}");
    let (ok, exported, err) = ctl(&s.daemon, &["export"]);
    assert!(ok, "{err}");
    assert!(exported.contains("expires_at = "), "{exported}");
    assert!(
        exported.contains("source = { url = \"http://***@127.0.0.1:9/x.txt\""),
        "{exported}"
    );
    assert!(!exported.contains("secret"), "{exported}");
    let export = policy_file(s.state.path(), "export.toml", &exported);
    let (ok, out, err) = ctl(&s.daemon, &["apply", "-f", export.to_str().expect("path")]);
    assert!(
        ok && out.contains("nothing to change"),
        "{exported}\n{out}\n{err}"
    );
    let list = s.daemon.call("GET", "/v1/allowlists", None).body["allowlists"][0].clone();
    assert!(
        list["entries"][0]["expires_at"].is_string(),
        "still temporary: {list}"
    );
}
