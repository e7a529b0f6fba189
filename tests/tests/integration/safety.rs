//! The safety promise on the sequences that broke it: an edit cannot escape the pending
//! change, a revert restores exactly what was acknowledged, a save that fails at the deadline
//! still reverts and says so, a state that breaks an invariant is refused before the kernel is
//! touched, and input that would be misread is refused or flagged. With real packets.

use std::time::{Duration, Instant};

use allowlist_tests::daemon::{Daemon, Response, TempDir};
use allowlist_tests::mounts::SmallDisk;
use allowlist_tests::netns::*;
use allowlist_tests::scenario::*;
use allowlist_tests::traffic::passes;
use serde_json::{Value, json};

fn assert_refused(response: &Response, status: u16, code: &str) {
    assert_eq!(
        (response.status, response.code()),
        (status, code),
        "{response:?}"
    );
}

/// Waits (up to 10 s) until the pending change is gone: acknowledged or reverted.
fn wait_until_resolved(daemon: &Daemon) -> Value {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let state = enforcement(daemon);
        if state["pending"].is_null() {
            return state;
        }
        assert!(Instant::now() < deadline, "still pending: {state}");
        std::thread::sleep(Duration::from_millis(100));
    }
}

fn list_cidrs(daemon: &Daemon, id: &str) -> Vec<String> {
    let list = daemon.call("GET", &format!("/v1/allowlists/{id}"), None);
    assert_eq!(list.status, 200, "{list:?}");
    let mut cidrs: Vec<String> = list.body["entries"]
        .as_array()
        .expect("entries")
        .iter()
        .map(|e| e["cidr"].as_str().expect("cidr").to_owned())
        .collect();
    cidrs.sort();
    cidrs
}

/// Defect 1: with the disable of the admin's list pending, an edit of that list would have
/// been applied on its own and come back, narrowed, with the revert.
#[test]
fn a_list_whose_disable_is_pending_cannot_be_edited_and_the_revert_keeps_the_admin_in() {
    let link = TestLink::create().expect("test link");
    let state = TempDir::new().expect("state dir");
    let (daemon, id) = enforcing_office_daemon(&link, &state);
    disable(&daemon, &id);
    let entry = daemon
        .call("GET", &format!("/v1/allowlists/{id}"), None)
        .body["entries"][0]["id"]
        .as_str()
        .expect("entry id")
        .to_owned();

    let replace = daemon.call(
        "PUT",
        &format!("/v1/allowlists/{id}"),
        Some(&json!({"name": "office", "entries": [{"cidr": "192.0.2.1"}]})),
    );
    assert_refused(&replace, 409, "change_pending");
    assert!(
        replace.body["error"]["message"]
            .as_str()
            .is_some_and(|m| m.contains(&format!("allowlist {id} is part of the pending change"))),
        "{replace:?}"
    );
    let remove = daemon.call(
        "DELETE",
        &format!("/v1/allowlists/{id}/entries/{entry}"),
        None,
    );
    assert_refused(&remove, 409, "change_pending");
    let add = daemon.call(
        "POST",
        &format!("/v1/allowlists/{id}/entries"),
        Some(&json!({"entries": [{"cidr": "192.0.2.1"}]})),
    );
    assert_refused(&add, 409, "change_pending");
    let delete = daemon.call("DELETE", &format!("/v1/allowlists/{id}"), None);
    assert_refused(&delete, 409, "change_pending");

    let reverted = wait_until_resolved(&daemon);
    assert_eq!(reverted["enabled_allowlist_ids"], json!([id]), "{reverted}");
    assert_eq!(list_cidrs(&daemon, &id), {
        let mut office = office();
        office
            .iter_mut()
            .for_each(|cidr| cidr.push_str(if cidr.contains(':') { "/128" } else { "/32" }));
        office.sort();
        office
    });
    assert!(enforcing_office(&link), "the admin passes, others drop");
}

/// Defect 3: a revert of a replace put the old entries back beside the new ones, beyond the
/// entry limit.
#[test]
fn a_revert_restores_exactly_the_acknowledged_entries_within_the_limits() {
    let link = TestLink::create().expect("test link");
    let state = TempDir::new().expect("state dir");
    let mut args = WINDOW.to_vec();
    args.extend(["--max-entries", "2500"]);
    let daemon = Daemon::start(&link, state.path(), &args).expect("allowlistd");
    let mut acknowledged = office();
    acknowledged.extend((0..998u32).map(|n| std::net::Ipv4Addr::from(0x0a01_0000 + n).to_string()));
    let id = create(&daemon, "big", &acknowledged);
    enable(&daemon, &id);
    acknowledge(&daemon);
    let before = list_cidrs(&daemon, &id);
    assert_eq!(before.len(), 1000);

    let others: Vec<Value> = (0..2000u32)
        .map(|n| json!({ "cidr": std::net::Ipv4Addr::from(0x0a02_0000 + n).to_string() }))
        .collect();
    let replaced = daemon.call(
        "PUT",
        &format!("/v1/allowlists/{id}"),
        Some(&json!({"name": "big", "entries": others})),
    );
    assert_eq!(replaced.status, 200, "{replaced:?}");
    assert_eq!(enforcement(&daemon)["pending"]["action"], "update");
    assert!(
        !passes(&link, CLIENT_ALLOWED_V4),
        "the replace cut the client off"
    );

    wait_until_resolved(&daemon);
    let after = list_cidrs(&daemon, &id);
    assert!(
        after == before,
        "{} entries after the revert, not exactly the {} acknowledged",
        after.len(),
        before.len()
    );
    assert!(passes(&link, CLIENT_ALLOWED_V4), "back in");
    let evaluated = daemon.call("GET", "/v1/evaluate?ip=10.2.0.5", None);
    assert_eq!(evaluated.body["allowed"], false, "{evaluated:?}");
    // Within the limit again: a new list fits.
    let empty = daemon.call("POST", "/v1/allowlists", Some(&json!({"name": "empty"})));
    assert_eq!(empty.status, 201, "{empty:?}");
}

/// Defect 4: a save that failed at the deadline left the API showing the change pending
/// while the kernel had reverted, logged the error ten times a second, and left a temporary
/// file filling the disk.
#[test]
fn a_save_that_fails_at_the_deadline_still_reverts_and_the_api_says_so() {
    let link = TestLink::create().expect("test link");
    let state = TempDir::new().expect("state dir");
    let disk = SmallDisk::mount(state.path(), 256 * 1024);
    let (daemon, id) = enforcing_office_daemon(&link, &state);
    disable(&daemon, &id);
    assert!(!enforcing_office(&link), "disabled: everything passes");
    disk.fill();

    let reverted = wait_until_resolved(&daemon);
    assert!(
        enforcing_office(&link),
        "the kernel reverted to the office list"
    );
    assert_eq!(reverted["enforcing"], true, "{reverted}");
    assert_eq!(reverted["state_saved"], false, "{reverted}");
    assert!(
        reverted["save_error"]["message"]
            .as_str()
            .is_some_and(|m| m.contains("No space left on device")),
        "{reverted}"
    );
    let evaluated = daemon.call("GET", &format!("/v1/evaluate?ip={CLIENT_DENIED_V4}"), None);
    assert_eq!(
        evaluated.body["allowed"], false,
        "evaluate agrees: {evaluated:?}"
    );
    std::thread::sleep(Duration::from_secs(3));
    assert!(
        enforcement(&daemon)["save_error"]["attempts"]
            .as_u64()
            .is_some_and(|n| n >= 2),
        "retried"
    );
    assert_eq!(
        daemon.log().matches("saving the state failed").count(),
        1,
        "logged once: {}",
        daemon.log()
    );
    assert!(
        !state.path().join("state.json.tmp").exists(),
        "no temporary file left"
    );

    disk.free();
    let deadline = Instant::now() + Duration::from_secs(20);
    while enforcement(&daemon)["state_saved"] != true {
        assert!(Instant::now() < deadline, "saved once there is room");
        std::thread::sleep(Duration::from_millis(200));
    }
    let saved: Value =
        serde_json::from_slice(&std::fs::read(state_file(&state)).expect("state")).expect("json");
    assert_eq!(saved["pending"], Value::Null);
    assert_eq!(saved["enabled"], json!([id]));
    drop(daemon);
}

/// Defects 2 and 6: a state file that broke an invariant loaded without complaint; one that
/// enabled a missing list dropped every IP packet.
#[test]
fn a_state_that_breaks_an_invariant_is_refused_and_the_kernel_keeps_enforcing() {
    let link = TestLink::create().expect("test link");
    let state = TempDir::new().expect("state dir");
    let (mut daemon, id) = enforcing_office_daemon(&link, &state);
    daemon.stop().expect("SIGTERM");
    drop(daemon);
    let good: Value =
        serde_json::from_slice(&std::fs::read(state_file(&state)).expect("state")).expect("json");
    let list = |state: &mut Value| state["allowlists"][&id].clone();
    type Damage = fn(&mut Value, &Value, &str);
    let cases: [(&str, Damage, &str); 7] = [
        (
            "a missing list enabled",
            |s, _, _| s["enabled"] = json!(["al_missing"]),
            "enabled: names allowlist al_missing, which does not exist",
        ),
        (
            "two lists of one name",
            |s, list, _| {
                let mut twin = list.clone();
                twin["id"] = json!("al_twin");
                for (n, entry) in twin["entries"]
                    .as_array_mut()
                    .expect("entries")
                    .iter_mut()
                    .enumerate()
                {
                    entry["id"] = json!(format!("en_{:016x}", 0x7717_0000 + n));
                }
                s["allowlists"]["al_twin"] = twin;
            },
            "another list is named \"office\"",
        ),
        (
            "host bits",
            |s, _, id| s["allowlists"][id]["entries"][0]["cidr"] = json!("198.18.0.2/24"),
            "198.18.0.2/24 has host bits set; did you mean 198.18.0.0/24?",
        ),
        (
            "an over-long name",
            |s, _, id| s["allowlists"][id]["name"] = json!("x".repeat(200)),
            "name is too long: the limit is 128",
        ),
        (
            "an entry twice",
            |s, list, id| {
                let first = list["entries"][0].clone();
                s["allowlists"][id]["entries"]
                    .as_array_mut()
                    .expect("entries")
                    .push(first);
            },
            "is in the list twice",
        ),
        (
            "an IPv4-mapped entry",
            |s, _, id| s["allowlists"][id]["entries"][0]["cidr"] = json!("::ffff:198.18.0.2/128"),
            "use 198.18.0.2/32",
        ),
        (
            "an allow-all entry without allow_all",
            |s, _, id| s["allowlists"][id]["entries"][0]["cidr"] = json!("0.0.0.0/0"),
            "0.0.0.0/0 allows every IPv4 source",
        ),
    ];
    for (case, damage, problem) in cases {
        let mut bad = good.clone();
        let original = list(&mut bad);
        damage(&mut bad, &original, &id);
        std::fs::write(state_file(&state), bad.to_string()).expect("write");
        let (status, log) = Daemon::refusal(&link, state.path(), &WINDOW).expect(case);
        assert!(!status.success(), "{case}");
        assert!(
            log.contains("state.json is not a valid state"),
            "{case}: {log}"
        );
        assert!(log.contains(problem), "{case} says what is wrong: {log}");
        assert!(
            log.contains("state.json.prev"),
            "{case} names the backup: {log}"
        );
    }

    let elsewhere = state.path().join("elsewhere.json");
    std::fs::write(&elsewhere, good.to_string()).expect("write");
    std::fs::remove_file(state_file(&state)).expect("remove");
    std::os::unix::fs::symlink(&elsewhere, state_file(&state)).expect("symlink");
    let (status, log) = Daemon::refusal(&link, state.path(), &WINDOW).expect("symlink");
    assert!(!status.success());
    assert!(
        log.contains("state.json is not a regular file (a symbolic link)"),
        "{log}"
    );
    assert!(enforcing_office(&link), "the kernel is unchanged");

    std::fs::remove_file(state_file(&state)).expect("remove the link");
    std::fs::write(state_file(&state), good.to_string()).expect("restore");
    let _daemon = Daemon::start(&link, state.path(), &WINDOW).expect("the good state starts");
    assert!(enforcing_office(&link));
}

/// Defect 7: an IPv4-mapped entry never matched IPv4 packets while evaluate said it did;
/// allow-all prefixes enabled silently; an id named twice was recorded twice.
#[test]
fn input_that_would_be_misread_is_refused_or_flagged() {
    let link = TestLink::create().expect("test link");
    let state = TempDir::new().expect("state dir");
    let daemon = Daemon::start(&link, state.path(), &WINDOW).expect("allowlistd");
    let create_with = |body: Value| daemon.call("POST", "/v1/allowlists", Some(&body));

    let mapped = create_with(
        json!({"name": "m", "entries": [{"cidr": format!("::ffff:{CLIENT_ALLOWED_V4}")}]}),
    );
    assert_refused(&mapped, 400, "ipv4_mapped");
    assert_eq!(mapped.body["error"]["field"], "entries[0].cidr");
    assert!(
        mapped.body["error"]["message"]
            .as_str()
            .is_some_and(|m| m.contains(&format!("use {CLIENT_ALLOWED_V4}/32"))),
        "{mapped:?}"
    );

    let all = json!({"name": "all", "entries": [{"cidr": "0.0.0.0/0"}, {"cidr": CLIENT_ALLOWED_V6.to_string()}]});
    assert_refused(&create_with(all.clone()), 422, "allow_all_required");
    let mut asked = all;
    asked["allow_all"] = json!(true);
    let created = create_with(asked);
    assert_eq!(created.status, 201, "{created:?}");
    assert_eq!(created.body["allow_all"], true);
    let id = created.body["id"].as_str().expect("id").to_owned();

    let twice = daemon.call(
        "POST",
        "/v1/enforcement/enable",
        Some(&json!({"allowlist_ids": [id, id]})),
    );
    assert_refused(&twice, 400, "invalid_request");
    assert_eq!(twice.body["error"]["field"], "allowlist_ids[1]");

    let enabled = enable(&daemon, &id);
    assert_eq!(
        enabled.body["allow_all"],
        json!(["0.0.0.0/0"]),
        "{enabled:?}"
    );
    assert!(
        passes(&link, CLIENT_DENIED_V4),
        "0.0.0.0/0 lets IPv4 through"
    );
    assert!(!passes(&link, CLIENT_DENIED_V6), "IPv6 is still filtered");
    let status = daemon.ctl(&["status"]);
    let text = String::from_utf8_lossy(&status.stdout);
    assert!(
        text.contains("warning:       0.0.0.0/0 is in force: every source of its family passes"),
        "{text}"
    );
}
