//! Changes through the API and their acknowledgement: enable, disable, edits and scopes,
//! each pending until acknowledged and reverted by itself otherwise, with packets showing
//! each step; the lockout guard; a restart inside the window.

use super::*;

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
    let id = enforce_office(d);

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
    let id = enforce_office(d);
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
    scenario::acknowledge(d);
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
