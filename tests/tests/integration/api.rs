//! The admin API over real HTTP, against allowlistd with its program attached in a namespace,
//! with packets showing the effect of each step.

use std::time::Duration;

use allowlist_tests::daemon::{API_ADDR, Daemon, Response, TempDir};
use allowlist_tests::netns::*;
use allowlist_tests::traffic::{TcpSession, passes};
use serde_json::{Value, json};
use time::format_description::well_known::Rfc3339;

/// Short acknowledgement windows, through the flags.
const WINDOWS: &[&str] = &["--ack-min", "1s", "--ack-max", "3s"];

struct Setup {
    daemon: Daemon,
    link: TestLink,
    // Dropped last: the daemon's state lives here.
    _state: TempDir,
}

fn setup(args: &[&str]) -> Setup {
    let link = TestLink::create().expect("test link");
    let state = TempDir::new().expect("state dir");
    let daemon = Daemon::start(&link, state.path(), args).expect("allowlistd");
    Setup {
        daemon,
        link,
        _state: state,
    }
}

/// Creates the list "office" allowing the client's allowed addresses; returns its id.
fn create_office(daemon: &Daemon) -> String {
    let response = daemon.call(
        "POST",
        "/v1/allowlists",
        Some(&json!({
            "name": "office",
            "description": "the client's allowed addresses",
            "entries": [
                {"cidr": CLIENT_ALLOWED_V4.to_string(), "description": "v4"},
                {"cidr": CLIENT_ALLOWED_V6.to_string()},
            ],
        })),
    );
    assert_eq!(response.status, 201, "{response:?}");
    response.body["id"].as_str().expect("id").to_owned()
}

fn enable(daemon: &Daemon, ids: &[&str]) -> Response {
    daemon.call(
        "POST",
        "/v1/enforcement/enable",
        Some(&json!({ "allowlist_ids": ids })),
    )
}

/// Enables one list past the lockout guard.
fn enable_forced(daemon: &Daemon, id: &str) -> Response {
    daemon.call(
        "POST",
        "/v1/enforcement/enable",
        Some(&json!({ "allowlist_ids": [id], "force": true })),
    )
}

fn state(daemon: &Daemon) -> Value {
    let response = daemon.call("GET", "/v1/enforcement", None);
    assert_eq!(response.status, 200);
    response.body
}

fn assert_error(response: &Response, status: u16, code: &str) {
    assert_eq!(
        (response.status, response.code()),
        (status, code),
        "{response:?}"
    );
    assert!(
        response.body["error"]["message"]
            .as_str()
            .is_some_and(|m| !m.is_empty()),
        "{response:?}"
    );
}

#[test]
fn every_endpoint_but_healthz_needs_the_token() {
    let s = setup(&[]);
    let healthz = s
        .daemon
        .request("GET", "/healthz", None, &[])
        .expect("healthz");
    assert_eq!(healthz.status, 200);
    let routes = [
        ("GET", "/v1/allowlists"),
        ("POST", "/v1/allowlists"),
        ("GET", "/v1/allowlists/x"),
        ("PUT", "/v1/allowlists/x"),
        ("DELETE", "/v1/allowlists/x"),
        ("POST", "/v1/allowlists/x/entries"),
        ("DELETE", "/v1/allowlists/x/entries/y"),
        ("GET", "/v1/enforcement"),
        ("POST", "/v1/enforcement/enable"),
        ("POST", "/v1/enforcement/disable"),
        ("POST", "/v1/enforcement/acknowledge"),
        ("PUT", "/v1/enforcement/scopes"),
        ("GET", "/v1/evaluate?ip=192.0.2.1"),
        ("GET", "/v1/stats"),
        ("GET", "/v1/top"),
        ("GET", "/v1/openapi.json"),
        ("POST", "/v1/apply"),
        ("GET", "/v1/fleet"),
        ("POST", "/v1/fleet/detach"),
        ("POST", "/v1/fleet/attach"),
    ];
    let wrong = format!("Bearer {}x", s.daemon.token);
    for (method, path) in routes {
        for headers in [
            vec![],
            vec![("Authorization", wrong.as_str())],
            vec![("Authorization", "Basic abc")],
        ] {
            let response = s
                .daemon
                .request(method, path, Some(&json!({})), &headers)
                .expect("request");
            assert_error(&response, 401, "unauthorized");
        }
    }
    let token_file = s.daemon.state_dir.join("admin.token");
    let mode = std::os::unix::fs::PermissionsExt::mode(
        &std::fs::metadata(&token_file).expect("token").permissions(),
    );
    assert_eq!(mode & 0o777, 0o600);
    let log = s.daemon.log();
    assert!(log.contains("admin.token"), "the path is logged: {log}");
    assert!(!log.contains(&s.daemon.token), "the token is never logged");
    let refusals: Vec<&str> = log
        .lines()
        .filter(|line| line.contains("audit") && line.contains("refused"))
        .collect();
    // Anyone may send these: the first of a peer's minute is on record whole, the others
    // are counted in a summary once the minute is over (unit tests of the trail).
    assert_eq!(refusals.len(), 1, "the first refusal is on record: {log}");
    assert!(
        refusals
            .iter()
            .all(|line| line.contains("peer=127.0.0.1:") && line.contains("status=401")),
        "with the peer and the status: {refusals:?}"
    );
}

#[test]
fn allowlists_can_be_created_read_replaced_edited_and_deleted() {
    let s = setup(&[]);
    let d = &s.daemon;
    let created = d.call(
        "POST",
        "/v1/allowlists",
        Some(&json!({"name": "office", "entries": [{"cidr": "192.0.2.7", "description": "desk"}, {"cidr": "2001:db8::/48"}]})),
    );
    assert_eq!(created.status, 201);
    assert_eq!(created.header("etag"), Some("\"1\""));
    let id = created.body["id"].as_str().expect("id").to_owned();
    assert_ne!(id, "office");
    let saved = std::fs::read_to_string(d.state_dir.join("state.json")).expect("state file");
    assert!(
        saved.contains(&id) && saved.contains("192.0.2.7/32"),
        "on disk before the response: {saved}"
    );
    assert_eq!(created.body["entries"][0]["cidr"], "192.0.2.7/32");
    assert_eq!(created.body["entries"][0]["description"], "desk");
    assert_eq!(created.body["enabled"], false);
    for key in ["created_at", "updated_at", "description"] {
        assert!(created.body[key].is_string(), "{key}");
    }
    let kept_entry = created.body["entries"][1]["id"].clone();

    let all = d.call("GET", "/v1/allowlists", None);
    assert_eq!(
        (all.status, all.body["allowlists"].as_array().map(Vec::len)),
        (200, Some(1))
    );
    let one = d.call("GET", &format!("/v1/allowlists/{id}"), None);
    assert_eq!((one.status, one.header("etag")), (200, Some("\"1\"")));
    // The same list, each entry with its use: none yet.
    let mut expected = created.body.clone();
    for entry in expected["entries"].as_array_mut().expect("entries") {
        entry["hits"] = json!(0);
        entry["last_hit"] = Value::Null;
    }
    assert_eq!(one.body, expected);

    let replaced = d.call(
        "PUT",
        &format!("/v1/allowlists/{id}"),
        Some(&json!({"name": "hq", "description": "moved", "entries": [{"cidr": "2001:db8::/48"}, {"cidr": "198.51.100.0/24"}]})),
    );
    assert_eq!(
        (replaced.status, replaced.header("etag")),
        (200, Some("\"2\""))
    );
    assert_eq!(replaced.body["name"], "hq");
    // Entries come sorted by prefix, IPv4 first, whatever the order given.
    assert_eq!(replaced.body["entries"][0]["cidr"], "198.51.100.0/24");
    assert_eq!(
        replaced.body["entries"][1]["id"], kept_entry,
        "a kept prefix keeps its id"
    );

    let added = d.call(
        "POST",
        &format!("/v1/allowlists/{id}/entries"),
        Some(&json!({"entries": [{"cidr": "203.0.113.9", "description": "vpn"}]})),
    );
    assert_eq!(added.status, 201);
    assert_eq!(added.body["entries"][0]["cidr"], "203.0.113.9/32");
    let added_id = added.body["entries"][0]["id"]
        .as_str()
        .expect("entry id")
        .to_owned();

    let removed = d.call(
        "DELETE",
        &format!("/v1/allowlists/{id}/entries/{added_id}"),
        None,
    );
    assert_eq!((removed.status, removed.body.clone()), (204, Value::Null));
    let after = d.call("GET", &format!("/v1/allowlists/{id}"), None);
    assert_eq!(after.body["entries"].as_array().map(Vec::len), Some(2));
    assert_eq!(after.header("etag"), Some("\"4\""));

    assert_eq!(
        d.call("DELETE", &format!("/v1/allowlists/{id}"), None)
            .status,
        204
    );
    assert_error(
        &d.call("GET", &format!("/v1/allowlists/{id}"), None),
        404,
        "not_found",
    );
    let healthz = d.request("GET", "/healthz", None, &[]).expect("healthz");
    assert_eq!(healthz.body["status"], "ok");
}

#[test]
fn unknown_ids_get_404() {
    let s = setup(&[]);
    let d = &s.daemon;
    let id = create_office(d);
    let body = json!({"name": "x", "entries": []});
    for (method, path, body) in [
        ("GET", "/v1/allowlists/al_nope".to_owned(), None),
        ("PUT", "/v1/allowlists/al_nope".to_owned(), Some(&body)),
        ("DELETE", "/v1/allowlists/al_nope".to_owned(), None),
        (
            "POST",
            "/v1/allowlists/al_nope/entries".to_owned(),
            Some(&json!({"entries": [{"cidr": "192.0.2.1"}]})),
        ),
        (
            "DELETE",
            "/v1/allowlists/al_nope/entries/en_x".to_owned(),
            None,
        ),
        (
            "DELETE",
            format!("/v1/allowlists/{id}/entries/en_nope"),
            None,
        ),
        (
            "POST",
            "/v1/enforcement/enable".to_owned(),
            Some(&json!({"allowlist_ids": ["al_nope"]})),
        ),
        (
            "POST",
            "/v1/enforcement/disable".to_owned(),
            Some(&json!({"allowlist_ids": ["al_nope"]})),
        ),
        ("GET", "/v1/no/such/route".to_owned(), None),
    ] {
        assert_error(&d.call(method, &path, body), 404, "not_found");
    }
    // A method a route does not take: 405 in the same envelope, with the methods it takes.
    for (method, path, allowed) in [
        ("DELETE", "/v1/enforcement", "GET"),
        ("GET", "/v1/enforcement/acknowledge", "POST"),
        ("POST", "/healthz", "GET"),
        ("PUT", "/metrics", "GET"),
    ] {
        let response = d.call(method, path, None);
        assert_error(&response, 405, "method_not_allowed");
        assert!(
            response
                .header("allow")
                .is_some_and(|allow| allow.contains(allowed)),
            "{method} {path}: {response:?}"
        );
    }
}

#[test]
fn bad_input_is_refused_with_a_code_and_changes_nothing() {
    let s = setup(&[
        "--max-lists",
        "2",
        "--max-entries",
        "3",
        "--max-name-len",
        "8",
        "--max-description-len",
        "10",
        "--max-body-bytes",
        "4096",
    ]);
    let d = &s.daemon;
    let office = d.call(
        "POST",
        "/v1/allowlists",
        Some(&json!({"name": "office", "entries": [{"cidr": CLIENT_ALLOWED_V4.to_string()}]})),
    );
    assert_eq!(office.status, 201, "{office:?}");
    let id = office.body["id"].as_str().expect("id").to_owned();
    let state_file = d.state_dir.join("state.json");
    let before = std::fs::read(&state_file).expect("state file");
    let auth = format!("Bearer {}", d.token);
    let headers = [("Authorization", auth.as_str())];
    let list = |entries: Value| json!({"name": "other", "entries": entries});

    let malformed = d
        .raw("POST", "/v1/allowlists", Some("{\"name\": "), &headers)
        .expect("request");
    assert_error(&malformed, 400, "invalid_request");
    let unknown = d.call(
        "POST",
        "/v1/allowlists",
        Some(&json!({"name": "x", "colour": "red"})),
    );
    assert_error(&unknown, 400, "invalid_request");
    assert!(
        unknown.body["error"]["message"]
            .as_str()
            .unwrap_or("")
            .contains("colour")
    );
    let unknown_entry_field = d.call(
        "POST",
        "/v1/allowlists",
        Some(&list(json!([{"cidr": "192.0.2.1", "comment": "x"}]))),
    );
    assert_error(&unknown_entry_field, 400, "invalid_request");

    let invalid = d.call(
        "POST",
        "/v1/allowlists",
        Some(&list(json!([{"cidr": "192.0.2.1"}, {"cidr": "192.0.2"}]))),
    );
    assert_error(&invalid, 400, "invalid_cidr");
    assert_eq!(invalid.body["error"]["field"], "entries[1].cidr");
    let host_bits = d.call(
        "POST",
        "/v1/allowlists",
        Some(&list(json!([{"cidr": "198.51.100.9/24"}]))),
    );
    assert_error(&host_bits, 400, "host_bits_set");
    assert_eq!(host_bits.body["error"]["field"], "entries[0].cidr");
    assert!(
        host_bits.body["error"]["message"]
            .as_str()
            .unwrap_or("")
            .contains("198.51.100.0/24")
    );
    let bad_ip = d.call(
        "POST",
        "/v1/enforcement/enable",
        Some(&json!({"allowlist_ids": [id], "client_ip": "nope"})),
    );
    assert_error(&bad_ip, 400, "invalid_request");

    let duplicate_entry = d.call(
        "POST",
        "/v1/allowlists",
        Some(&list(
            json!([{"cidr": "192.0.2.1"}, {"cidr": "192.0.2.1/32"}]),
        )),
    );
    assert_error(&duplicate_entry, 409, "duplicate_entry");
    let duplicate_added = d.call(
        "POST",
        &format!("/v1/allowlists/{id}/entries"),
        Some(&json!({"entries": [{"cidr": CLIENT_ALLOWED_V4.to_string()}]})),
    );
    assert_error(&duplicate_added, 409, "duplicate_entry");
    let duplicate_name = d.call("POST", "/v1/allowlists", Some(&json!({"name": "office"})));
    assert_error(&duplicate_name, 409, "duplicate_name");

    let huge = format!(
        "{{\"name\": \"x\", \"description\": \"{}\"}}",
        "a".repeat(5000)
    );
    assert_error(
        &d.raw("POST", "/v1/allowlists", Some(&huge), &headers)
            .expect("request"),
        413,
        "payload_too_large",
    );

    for (body, limit) in [
        (json!({"name": "far-too-long-name"}), "8"),
        (
            json!({"name": "x", "description": "far too long a description"}),
            "10",
        ),
        (
            list(json!([{"cidr": "192.0.2.1"}, {"cidr": "192.0.2.2"}, {"cidr": "192.0.2.3"}])),
            "3",
        ),
    ] {
        let response = d.call("POST", "/v1/allowlists", Some(&body));
        assert_error(&response, 422, "limit_exceeded");
        let message = response.body["error"]["message"].as_str().unwrap_or("");
        assert!(
            message.contains(&format!("the limit is {limit}")),
            "{message}"
        );
    }
    assert_eq!(
        std::fs::read(&state_file).expect("state file"),
        before,
        "refusals change nothing"
    );

    assert_eq!(
        d.call("POST", "/v1/allowlists", Some(&json!({"name": "second"})))
            .status,
        201
    );
    let third = d.call("POST", "/v1/allowlists", Some(&json!({"name": "third"})));
    assert_error(&third, 422, "limit_exceeded");
    assert!(
        third.body["error"]["message"]
            .as_str()
            .unwrap_or("")
            .contains("the limit is 2")
    );
}

#[test]
fn if_match_refuses_changes_to_a_list_that_changed_meanwhile() {
    let s = setup(&[]);
    let d = &s.daemon;
    let id = create_office(d);
    let body = json!({"name": "office", "entries": [{"cidr": "192.0.2.0/24"}]});
    let auth = format!("Bearer {}", d.token);
    let with = |etag: &'static str| vec![("Authorization", auth.as_str()), ("If-Match", etag)];

    // Two admins read version 1; the first writes, the second is refused.
    let first = d
        .request(
            "PUT",
            &format!("/v1/allowlists/{id}"),
            Some(&body),
            &with("\"1\""),
        )
        .expect("put");
    assert_eq!((first.status, first.header("etag")), (200, Some("\"2\"")));
    let second = d
        .request(
            "PUT",
            &format!("/v1/allowlists/{id}"),
            Some(&body),
            &with("\"1\""),
        )
        .expect("put");
    assert_error(&second, 412, "precondition_failed");
    let entry = first.body["entries"][0]["id"]
        .as_str()
        .expect("entry")
        .to_owned();
    let stale_remove = d
        .request(
            "DELETE",
            &format!("/v1/allowlists/{id}/entries/{entry}"),
            None,
            &with("\"1\""),
        )
        .expect("delete");
    assert_error(&stale_remove, 412, "precondition_failed");
    let stale_delete = d
        .request(
            "DELETE",
            &format!("/v1/allowlists/{id}"),
            None,
            &with("\"1\""),
        )
        .expect("delete");
    assert_error(&stale_delete, 412, "precondition_failed");
    let garbage = d
        .request(
            "DELETE",
            &format!("/v1/allowlists/{id}"),
            None,
            &with("yesterday"),
        )
        .expect("delete");
    assert_error(&garbage, 412, "precondition_failed");
    assert_eq!(
        d.call("GET", &format!("/v1/allowlists/{id}"), None).body["entries"][0]["cidr"],
        "192.0.2.0/24"
    );
    let delete = d
        .request(
            "DELETE",
            &format!("/v1/allowlists/{id}"),
            None,
            &with("\"2\""),
        )
        .expect("delete");
    assert_eq!(delete.status, 204);
}

#[test]
fn enable_then_too_early_ack_then_ack_keeps_enforcing() {
    let s = setup(&["--ack-min", "3s", "--ack-max", "8s"]);
    let d = &s.daemon;
    let id = create_office(d);
    assert!(
        passes(&s.link, CLIENT_DENIED_V4),
        "not enforcing: everything passes"
    );

    let enabled = enable(d, &[&id]);
    let started = std::time::Instant::now();
    assert_eq!(enabled.status, 202, "{enabled:?}");
    assert_eq!(enabled.body["enforcing"], true);
    assert_eq!(enabled.body["pending"]["action"], "enable");
    for key in ["applied_at", "acknowledge_after", "revert_at"] {
        assert!(enabled.body["pending"][key].is_string(), "{key}");
    }
    let early = d.call("POST", "/v1/enforcement/acknowledge", None);
    assert_error(&early, 409, "too_early");
    let retry = early.body["error"]["retry_after_seconds"]
        .as_u64()
        .expect("retry_after_seconds");
    assert!((1..=3).contains(&retry), "{early:?}");
    assert_eq!(
        early.header("retry-after"),
        Some(retry.to_string().as_str())
    );
    assert_error(&enable(d, &[&id]), 409, "already_enabled");

    assert!(passes(&s.link, CLIENT_ALLOWED_V4));
    assert!(passes(&s.link, CLIENT_ALLOWED_V6));
    assert!(!passes(&s.link, CLIENT_DENIED_V4), "enforced at once");
    assert!(!passes(&s.link, CLIENT_DENIED_V6));

    std::thread::sleep(Duration::from_millis(3100).saturating_sub(started.elapsed()));
    let acked = d.call("POST", "/v1/enforcement/acknowledge", None);
    assert_eq!(acked.status, 200, "{acked:?}");
    assert_eq!(acked.body["pending"], Value::Null);
    assert_error(
        &d.call("POST", "/v1/enforcement/acknowledge", None),
        409,
        "nothing_pending",
    );

    std::thread::sleep(Duration::from_millis(8300).saturating_sub(started.elapsed()));
    assert_eq!(state(d)["enforcing"], true, "acknowledged: no revert");
    assert!(!passes(&s.link, CLIENT_DENIED_V4));
    assert!(passes(&s.link, CLIENT_ALLOWED_V4));
}

#[test]
fn an_unacknowledged_enable_reverts_by_itself() {
    let s = setup(WINDOWS);
    let d = &s.daemon;
    let id = create_office(d);
    assert_eq!(enable(d, &[&id]).status, 202);
    assert!(!passes(&s.link, CLIENT_DENIED_V4));
    std::thread::sleep(Duration::from_millis(3300));
    let after = state(d);
    assert_eq!(
        (after["enforcing"].clone(), after["pending"].clone()),
        (json!(false), Value::Null)
    );
    assert!(passes(&s.link, CLIENT_DENIED_V4), "reverted in the kernel");
    assert!(d.log().contains("reverted"), "{}", d.log());
    let saved: Value =
        serde_json::from_slice(&std::fs::read(d.state_dir.join("state.json")).expect("state"))
            .expect("json");
    assert_eq!(saved["pending"], Value::Null);
}

#[test]
fn disable_is_pending_too_and_reverts_to_enforcing() {
    let s = setup(WINDOWS);
    let d = &s.daemon;
    let id = create_office(d);
    assert_eq!(enable(d, &[&id]).status, 202);
    std::thread::sleep(Duration::from_millis(1100));
    assert_eq!(
        d.call("POST", "/v1/enforcement/acknowledge", None).status,
        200
    );

    let not_enabled = d.call("POST", "/v1/allowlists", Some(&json!({"name": "idle"})));
    let idle = not_enabled.body["id"].as_str().expect("id");
    assert_error(
        &d.call(
            "POST",
            "/v1/enforcement/disable",
            Some(&json!({"allowlist_ids": [idle]})),
        ),
        409,
        "not_enabled",
    );
    let disabled = d.call(
        "POST",
        "/v1/enforcement/disable",
        Some(&json!({"allowlist_ids": [id]})),
    );
    assert_eq!(
        (disabled.status, disabled.body["enforcing"].clone()),
        (202, json!(false))
    );
    assert_eq!(disabled.body["pending"]["action"], "disable");
    assert!(passes(&s.link, CLIENT_DENIED_V4));
    assert_error(&enable(d, &[idle]), 409, "change_pending");

    std::thread::sleep(Duration::from_millis(3300));
    assert_eq!(state(d)["enforcing"], true, "the disable was reverted");
    assert!(!passes(&s.link, CLIENT_DENIED_V4));
}

#[test]
fn edits_to_an_enabled_list_add_at_once_and_remove_pending() {
    let s = setup(WINDOWS);
    let d = &s.daemon;
    let id = create_office(d);
    assert_eq!(enable(d, &[&id]).status, 202);
    std::thread::sleep(Duration::from_millis(1100));
    assert_eq!(
        d.call("POST", "/v1/enforcement/acknowledge", None).status,
        200
    );
    assert_error(
        &d.call("DELETE", &format!("/v1/allowlists/{id}"), None),
        409,
        "allowlist_enabled",
    );

    let added = d.call(
        "POST",
        &format!("/v1/allowlists/{id}/entries"),
        Some(&json!({"entries": [{"cidr": CLIENT_DENIED_V4.to_string()}]})),
    );
    assert_eq!(added.status, 201);
    assert!(passes(&s.link, CLIENT_DENIED_V4), "additions apply at once");
    assert_eq!(state(d)["pending"], Value::Null, "and are not pending");

    let entry = added.body["entries"][0]["id"].as_str().expect("entry");
    assert_eq!(
        d.call(
            "DELETE",
            &format!("/v1/allowlists/{id}/entries/{entry}"),
            None
        )
        .status,
        204
    );
    assert!(
        !passes(&s.link, CLIENT_DENIED_V4),
        "removal applies at once"
    );
    let pending = state(d)["pending"].clone();
    assert_eq!(
        (
            pending["action"].clone(),
            pending["allowlist_ids"][0].clone()
        ),
        (json!("update"), json!(id))
    );

    let narrowing = json!({"name": "office", "entries": [{"cidr": CLIENT_ALLOWED_V4.to_string()}]});
    assert_error(
        &d.call("PUT", &format!("/v1/allowlists/{id}"), Some(&narrowing)),
        409,
        "change_pending",
    );
    assert_error(
        &d.call(
            "POST",
            "/v1/enforcement/disable",
            Some(&json!({"allowlist_ids": [id]})),
        ),
        409,
        "change_pending",
    );

    std::thread::sleep(Duration::from_millis(3300));
    assert!(
        passes(&s.link, CLIENT_DENIED_V4),
        "the unacknowledged removal was reverted"
    );
    let list = d.call("GET", &format!("/v1/allowlists/{id}"), None);
    assert!(
        list.body["entries"]
            .as_array()
            .expect("entries")
            .iter()
            .any(|e| e["id"] == entry)
    );

    // A PUT that drops entries is pending like a DELETE.
    assert_eq!(
        d.call("PUT", &format!("/v1/allowlists/{id}"), Some(&narrowing))
            .status,
        200
    );
    assert_eq!(state(d)["pending"]["action"], "update");
    assert!(!passes(&s.link, CLIENT_DENIED_V4));
    assert!(!passes(&s.link, CLIENT_ALLOWED_V6));
    assert!(passes(&s.link, CLIENT_ALLOWED_V4));
}

#[test]
fn the_lockout_guard_protects_the_caller_and_established_sessions() {
    let s = setup(&["--protect-port", "2222"]);
    let d = &s.daemon;
    let id = create_office(d);

    let caller = d.call(
        "POST",
        "/v1/enforcement/enable",
        Some(&json!({"allowlist_ids": [id], "client_ip": CLIENT_DENIED_V4.to_string()})),
    );
    assert_error(&caller, 409, "would_lock_out");
    assert_eq!(
        caller.body["error"]["addresses"],
        json!([CLIENT_DENIED_V4.to_string()])
    );

    // An established session from the denied address to the protected port.
    let session = TcpSession::open(&s.link, CLIENT_DENIED_V4.into(), 2222).expect("session");
    let session_guard = enable(d, &[&id]);
    assert_error(&session_guard, 409, "would_lock_out");
    assert_eq!(
        session_guard.body["error"]["addresses"],
        json!([CLIENT_DENIED_V4.to_string()])
    );
    assert_eq!(state(d)["enforcing"], false, "refused: nothing changed");
    assert!(passes(&s.link, CLIENT_DENIED_V4));

    let forced = enable_forced(d, &id);
    assert_eq!(forced.status, 202);
    assert!(!passes(&s.link, CLIENT_DENIED_V4));
    drop(session);
}

#[test]
fn enabling_a_policy_that_allows_nothing_is_refused() {
    let s = setup(&[]);
    let d = &s.daemon;
    let empty = d.call("POST", "/v1/allowlists", Some(&json!({"name": "empty"})));
    let id = empty.body["id"].as_str().expect("id");
    assert_error(&enable(d, &[id]), 422, "empty_policy");
    assert_eq!(state(d)["enforcing"], false);
    assert!(passes(&s.link, CLIENT_DENIED_V4));
    assert_error(
        &d.call(
            "POST",
            "/v1/enforcement/enable",
            Some(&json!({"allowlist_ids": []})),
        ),
        400,
        "invalid_request",
    );
}

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

#[test]
fn the_openapi_document_describes_every_route() {
    let s = setup(&[]);
    let doc = s.daemon.call("GET", "/v1/openapi.json", None);
    assert_eq!(doc.status, 200);
    assert!(
        doc.body["openapi"]
            .as_str()
            .is_some_and(|v| v.starts_with("3."))
    );
    for (path, method) in [
        ("/healthz", "get"),
        ("/v1/allowlists", "get"),
        ("/v1/allowlists", "post"),
        ("/v1/allowlists/{id}", "get"),
        ("/v1/allowlists/{id}", "put"),
        ("/v1/allowlists/{id}", "delete"),
        ("/v1/allowlists/{id}/entries", "post"),
        ("/v1/allowlists/{id}/entries", "get"),
        ("/v1/allowlists/{id}/entries/{entry_id}", "delete"),
        ("/v1/enforcement", "get"),
        ("/v1/enforcement/enable", "post"),
        ("/v1/top", "get"),
        ("/v1/enforcement/disable", "post"),
        ("/v1/enforcement/acknowledge", "post"),
        ("/v1/enforcement/scopes", "put"),
        ("/v1/evaluate", "get"),
        ("/v1/stats", "get"),
        ("/v1/openapi.json", "get"),
        ("/v1/apply", "post"),
        ("/v1/fleet", "get"),
        ("/v1/fleet/detach", "post"),
        ("/v1/fleet/attach", "post"),
    ] {
        assert!(
            doc.body["paths"][path][method].is_object(),
            "{method} {path} is not described"
        );
    }
}

#[test]
fn a_restart_inside_the_window_keeps_the_remaining_window() {
    let link = TestLink::create().expect("test link");
    let state_dir = TempDir::new().expect("state");
    let args = ["--ack-min", "2s", "--ack-max", "6s"];
    let mut first = Daemon::start(&link, state_dir.path(), &args).expect("allowlistd");
    let id = create_office(&first);
    let enabled = enable(&first, &[&id]);
    let revert_at = enabled.body["pending"]["revert_at"].clone();
    first.stop().expect("stop");

    let second = Daemon::start(&link, state_dir.path(), &args).expect("restart");
    let restored = state(&second);
    assert_eq!(restored["enforcing"], true);
    assert_eq!(
        restored["pending"]["revert_at"], revert_at,
        "the window is not restarted"
    );
    assert!(
        !passes(&link, CLIENT_DENIED_V4),
        "enforcing after the restart"
    );
    assert!(passes(&link, CLIENT_ALLOWED_V4));
    std::thread::sleep(Duration::from_millis(2100));
    let acked = second.call("POST", "/v1/enforcement/acknowledge", None);
    assert_eq!(acked.status, 200, "{acked:?}");
    drop(second);

    // A pending change whose time passed while the daemon was down is reverted on start.
    let third = Daemon::start(&link, state_dir.path(), &args).expect("restart");
    let list = third.call(
        "POST",
        "/v1/allowlists",
        Some(&json!({"name": "more", "entries": [{"cidr": "192.0.2.0/24"}]})),
    );
    let more = list.body["id"].as_str().expect("id").to_owned();
    assert_eq!(enable(&third, &[&more]).status, 202);
    drop(third);
    std::thread::sleep(Duration::from_millis(6100));
    let fourth = Daemon::start(&link, state_dir.path(), &args).expect("restart");
    let after = state(&fourth);
    assert_eq!(after["pending"], Value::Null);
    assert_eq!(
        after["enabled_allowlist_ids"],
        json!([id]),
        "only the acknowledged list stays enabled"
    );
    assert!(!passes(&link, CLIENT_DENIED_V4));
}

#[test]
fn allowlistctl_drives_the_same_flows() {
    let s = setup(&["--ack-min", "2s", "--ack-max", "60s"]);
    let d = &s.daemon;
    let ok = |args: &[&str]| {
        let output = d.ctl(args);
        let stdout = String::from_utf8_lossy(&output.stdout).into_owned();
        assert!(
            output.status.success(),
            "allowlistctl {args:?}: {stdout}{}",
            String::from_utf8_lossy(&output.stderr)
        );
        stdout
    };
    let fails = |args: &[&str]| {
        let output = d.ctl(args);
        assert!(
            !output.status.success(),
            "allowlistctl {args:?} should fail"
        );
        String::from_utf8_lossy(&output.stderr).into_owned()
    };
    let refused = fails(&["--token", "s3cret", "status"]);
    assert!(
        refused.contains("ALLOWLIST_TOKEN"),
        "a token on the command line is refused, naming the way: {refused}"
    );
    let created = ok(&[
        "create",
        "office",
        "-d",
        "desks",
        "--entry",
        &format!("{CLIENT_ALLOWED_V4}=v4"),
        "--entry",
        &CLIENT_ALLOWED_V6.to_string(),
    ]);
    assert!(
        created.contains("198.18.0.2/32") && created.contains("desks"),
        "{created}"
    );
    let listed = ok(&["list"]);
    assert!(
        listed.contains("office") && listed.contains("ENTRIES"),
        "{listed}"
    );
    let json: Value = serde_json::from_str(&ok(&["--json", "show", "office"])).expect("json");
    assert_eq!(json["name"], "office");

    let host_bits = fails(&["add", "office", "198.18.0.9/24"]);
    assert!(
        host_bits.contains("did you mean 198.18.0.0/24") && host_bits.contains("host_bits_set"),
        "{host_bits}"
    );
    assert!(fails(&["show", "nosuch"]).contains("no allowlist"));

    let locked = fails(&[
        "enable",
        "office",
        "--client-ip",
        &CLIENT_DENIED_V4.to_string(),
    ]);
    assert!(
        locked.contains("would_lock_out") && locked.contains("198.18.0.3"),
        "{locked}"
    );
    let status = ok(&[
        "enable",
        "office",
        "--client-ip",
        &CLIENT_ALLOWED_V4.to_string(),
    ]);
    assert!(status.contains("pending:       enable"), "{status}");
    let early = fails(&["ack"]);
    assert!(early.contains("too_early"), "{early}");
    assert!(!passes(&s.link, CLIENT_DENIED_V4));
    std::thread::sleep(Duration::from_millis(1100));
    assert!(ok(&["ack"]).contains("pending:       none"));

    ok(&[
        "add",
        "office",
        &CLIENT_DENIED_V4.to_string(),
        "-d",
        "temporary",
    ]);
    assert!(passes(&s.link, CLIENT_DENIED_V4));
    ok(&["remove", "office", &CLIENT_DENIED_V4.to_string()]);
    assert!(!passes(&s.link, CLIENT_DENIED_V4));
    assert!(ok(&["status"]).contains("pending:       update"));
    std::thread::sleep(Duration::from_millis(2100));
    ok(&["ack"]);

    assert!(ok(&["evaluate", &CLIENT_DENIED_V4.to_string()]).starts_with("dropped (no_match)"));
    let stats = ok(&["stats"]);
    assert!(
        stats.contains("dropped") && stats.contains("BUSIEST ENTRIES"),
        "{stats}"
    );

    let update = d.state_dir.with_extension("update.json");
    std::fs::write(&update, json!({"name": "office", "description": "all", "entries": [{"cidr": "198.18.0.0/29"}, {"cidr": "fd00:a11::/64"}]}).to_string()).expect("write");
    ok(&[
        "update",
        "office",
        "--from-file",
        update.to_str().expect("path"),
    ]);
    std::fs::remove_file(&update).expect("cleanup");
    assert!(passes(&s.link, CLIENT_DENIED_V4), "widened by the update");
    std::thread::sleep(Duration::from_millis(2100));
    ok(&["ack"]);
    assert!(fails(&["delete", "office"]).contains("allowlist_enabled"));
    ok(&["disable", "office"]);
    assert!(
        fails(&["delete", "office"]).contains("change_pending"),
        "a revert would need it"
    );
    std::thread::sleep(Duration::from_millis(2100));
    ok(&["ack"]);
    assert!(ok(&["delete", "office"]).contains("deleted"));
    assert!(ok(&["status"]).contains("enforcing:     no"));
}

#[test]
fn scopes_change_through_the_api_and_revert_like_any_change() {
    let s = setup(&["--ack-min", "1s", "--ack-max", "4s", "--protect", "tcp/22"]);
    let d = &s.daemon;
    let id = create_office(d);
    let enabled = enable_forced(d, &id);
    assert_eq!(
        enabled.body["scopes"],
        json!(["tcp/22"]),
        "the --protect default"
    );
    std::thread::sleep(Duration::from_millis(1100));
    assert_eq!(
        d.call("POST", "/v1/enforcement/acknowledge", None).status,
        200
    );
    assert!(
        passes(&s.link, CLIENT_DENIED_V4),
        "UDP is outside the tcp/22 scope"
    );

    let bad = d.call(
        "PUT",
        "/v1/enforcement/scopes",
        Some(&json!({"protect": ["tcp/22", "sctp/9"]})),
    );
    assert_error(&bad, 400, "invalid_request");
    assert_eq!(bad.body["error"]["field"], "protect[1]");

    let everything = d.call(
        "PUT",
        "/v1/enforcement/scopes",
        Some(&json!({"protect": []})),
    );
    assert_eq!(everything.status, 202, "{everything:?}");
    assert_eq!(
        (
            everything.body["scopes"].clone(),
            everything.body["pending"]["action"].clone()
        ),
        (json!([]), json!("scopes"))
    );
    assert!(
        !passes(&s.link, CLIENT_DENIED_V4),
        "every port is guarded at once"
    );
    assert_error(
        &d.call(
            "PUT",
            "/v1/enforcement/scopes",
            Some(&json!({"protect": ["udp/53"]})),
        ),
        409,
        "change_pending",
    );

    std::thread::sleep(Duration::from_millis(3200));
    assert_eq!(
        state(d)["scopes"],
        json!(["tcp/22"]),
        "not acknowledged: reverted"
    );
    assert!(passes(&s.link, CLIENT_DENIED_V4));

    let output = d.ctl(&["scopes", "tcp/22", "udp/51820"]);
    let shown = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success() && shown.contains("guarded ports: tcp/22, udp/51820"),
        "{shown}"
    );
    std::thread::sleep(Duration::from_millis(1100));
    assert!(d.ctl(&["ack"]).status.success());
    let stats = d.call("GET", "/v1/stats", None);
    assert!(stats.body["flows"]["recorded"].is_u64(), "{stats:?}");
    assert!(
        stats.body["counters"]["passed_unprotected"]
            .as_u64()
            .is_some_and(|n| n >= 1),
        "{stats:?}"
    );
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

#[test]
fn allowlistctl_tables_escape_control_characters_and_end_quietly_into_head() {
    let s = setup(&[]);
    let d = &s.daemon;
    let entries: Vec<Value> = (0..5000u32)
        .map(
            |n| json!({ "cidr": format!("10.{}.{}.0/24", n / 256, n % 256), "description": "row" }),
        )
        .collect();
    let forged = "desks\nevil                   yes      99999  \u{1b}[2Jgone";
    let created = d.call(
        "POST",
        "/v1/allowlists",
        Some(&json!({ "name": "office", "description": forged, "entries": entries })),
    );
    assert_eq!(created.status, 201);
    let output = d.ctl(&["list"]);
    assert!(output.status.success());
    let listed = String::from_utf8_lossy(&output.stdout);
    assert_eq!(listed.lines().count(), 2, "a heading and one row: {listed}");
    assert!(listed.contains("desks\\nevil"), "{listed}");
    assert!(listed.contains("\\u{1b}[2Jgone"), "{listed}");
    assert!(
        !listed.contains('\u{1b}'),
        "no escape sequence reaches the terminal"
    );

    let stderr = d.ctl_into_closed_pipe(&["show", "office"]);
    assert!(
        !stderr.contains("panicked") && !stderr.contains("Broken pipe"),
        "allowlistctl show | head: {stderr}"
    );
}

#[test]
fn a_body_declared_over_the_limit_is_refused_before_it_is_sent() {
    use std::io::{Read as _, Write as _};
    let s = setup(&["--max-body-bytes", "65536"]);
    let d = &s.daemon;
    let mut stream = d.connect().expect("connect");
    stream
        .set_read_timeout(Some(Duration::from_secs(5)))
        .expect("timeout");
    let request = format!(
        "POST /v1/allowlists HTTP/1.1\r\nHost: {API_ADDR}\r\nAuthorization: Bearer {}\r\n\
         Content-Type: application/json\r\nContent-Length: 1000000000000\r\n\r\n{{",
        d.token
    );
    stream.write_all(request.as_bytes()).expect("headers");
    let mut raw = Vec::new();
    let mut chunk = [0u8; 4096];
    // Only the headers and one byte were sent: the answer must not wait for the rest.
    while !String::from_utf8_lossy(&raw).contains("payload_too_large") {
        let read = stream
            .read(&mut chunk)
            .expect("an answer within 5 s, without the body");
        if read == 0 {
            break;
        }
        raw.extend_from_slice(&chunk[..read]);
    }
    let text = String::from_utf8_lossy(&raw);
    assert!(text.starts_with("HTTP/1.1 413"), "{text}");
    assert!(text.contains("payload_too_large"), "{text}");
}
