//! Fleets against a careless or hostile etcd writer, with real etcd, several hosts and real
//! packets: a release that would cut a protected session, keys whose content lies about
//! their id, acknowledgements that are not one, releases that cannot be read or claim a
//! terabyte, a partition past a deadline, a detached host, a late acknowledgement and the
//! chunks of an interrupted publish. None of them may stall the fleet or change what a host
//! enforces without the operator.

use serde_json::Value;
use sha2::{Digest as _, Sha256};

use allowlist_tests::fleet::*;
use allowlist_tests::netns::*;
use allowlist_tests::scenario::enforcing_office;
use allowlist_tests::traffic::{TcpSession, passes};

/// The fleet's view of host `n`: its state and reason.
fn state_of(fleet: &Fleet, n: usize) -> (String, String) {
    let view = fleet.hosts[n].fleet();
    (
        view["fleet"]["state"]
            .as_str()
            .unwrap_or_default()
            .to_owned(),
        view["fleet"]["reason"]
            .as_str()
            .unwrap_or_default()
            .to_owned(),
    )
}

/// Publishes the office file and has every host acknowledge it; returns its id.
fn acknowledged_office(fleet: &Fleet, more: &[&str]) -> String {
    let release = fleet.publish(&office_file(more), None);
    wait_all(fleet, &release, "pending", 20);
    fleet.ack(&release);
    wait_all(fleet, &release, "acknowledged", 20);
    release
}

#[test]
fn a_release_that_would_cut_a_protected_session_fails_on_that_host_only() {
    let fleet = fleet(2, ["1s", "30s"], &[]);
    let denied = CLIENT_DENIED_V4.to_string();
    let first = acknowledged_office(&fleet, &[&denied]);
    assert!(passes(&fleet.hosts[0].link, CLIENT_DENIED_V4));
    // An SSH session from the address the next release leaves out, on host0 only.
    let session =
        TcpSession::open(&fleet.hosts[0].link, CLIENT_DENIED_V4.into(), 22).expect("session");
    let second = fleet.publish(&office_file(&[]), Some(&first));
    wait(20, "host0 refuses the release", || {
        state_of(&fleet, 0).0 == "failed"
    });
    let (_, reason) = state_of(&fleet, 0);
    assert!(reason.contains(&denied), "names the address: {reason}");
    wait(20, "host1 takes it", || state_of(&fleet, 1).0 == "pending");
    assert!(
        passes(&fleet.hosts[0].link, CLIENT_DENIED_V4),
        "host0 never dropped the session's source"
    );
    assert!(!passes(&fleet.hosts[1].link, CLIENT_DENIED_V4));
    fleet.ack(&second);
    wait(20, "host1 acknowledged", || {
        state_of(&fleet, 1).0 == "acknowledged"
    });
    std::thread::sleep(std::time::Duration::from_secs(2));
    assert_eq!(
        state_of(&fleet, 0).0,
        "failed",
        "the fleet's acknowledgement does not make it stick on host0"
    );
    assert!(passes(&fleet.hosts[0].link, CLIENT_DENIED_V4));
    let status = fleet.etcd.fleet_ctl(FLEET, &["status"]);
    let text = String::from_utf8_lossy(&status.stdout);
    assert!(
        text.contains("1 of 2 hosts on release") && text.contains("NOT ON IT: host0 is failed"),
        "{text}"
    );
    drop(session);
}

#[test]
fn a_release_is_what_its_key_says_and_a_garbage_acknowledgement_counts_for_nothing() {
    let fleet = fleet(1, ["1s", "5s"], &[]);
    let first = acknowledged_office(&fleet, &[]);
    // The header and chunks of the acknowledged release, copied under a new id.
    let header = fleet.get(&format!("releases/{first}"));
    let chunk = fleet.get(&format!("releases/{first}/chunks/000000"));
    fleet.put("releases/rforged/chunks/000000", &chunk);
    fleet.put("releases/rforged", &header);
    fleet.put("current", "rforged");
    wait(20, "the copy refused", || state_of(&fleet, 0).0 == "failed");
    let (_, reason) = state_of(&fleet, 0);
    assert!(reason.contains("its header names release"), "{reason}");
    // The header made to say the new id: the content still names the old one.
    let renamed: Value = serde_json::from_str(&header).expect("header");
    let mut renamed = renamed;
    renamed["id"] = "rforged2".into();
    fleet.put("releases/rforged2/chunks/000000", &chunk);
    fleet.put("releases/rforged2", &renamed.to_string());
    fleet.put("current", "rforged2");
    wait(20, "the renamed copy refused", || {
        state_of(&fleet, 0).1.contains("its content names release")
    });
    assert_eq!(fleet.hosts[0].fleet()["fleet"]["applied"], first.as_str());

    // A valid release with garbage where its acknowledgement goes: it is not one.
    let second = fleet.publish(&office_file(&["192.0.2.9"]), Some("rforged2"));
    wait_all(&fleet, &second, "pending", 20);
    fleet.put(&format!("acks/{second}"), "garbage{{");
    wait(20, "the garbage is reported", || {
        state_of(&fleet, 0).1.contains("not counted")
    });
    wait(20, "reverted at its deadline all the same", || {
        state_of(&fleet, 0).0 == "reverted"
    });
    assert_eq!(fleet.hosts[0].fleet()["fleet"]["applied"], first.as_str());
}

#[test]
fn an_unreadable_current_release_never_stops_the_fleet() {
    let fleet = fleet(3, ["1s", "30s"], &[]);
    let mut base = acknowledged_office(&fleet, &[]);
    let header = fleet.get(&format!("releases/{base}"));
    let chunk = fleet.get(&format!("releases/{base}/chunks/000000"));
    let mut wrong_digest: Value = serde_json::from_str(&header).expect("header");
    wrong_digest["id"] = "rbaddigest".into();
    wrong_digest["sha256"] = "00".repeat(32).into();
    let mut not_json: Value = serde_json::from_str(&header).expect("header");
    not_json["id"] = "rnotjson".into();
    let junk = "x".repeat(chunk.len());
    // A header whose digest matches the junk: only the content is wrong.
    let junk_digest: String = Sha256::digest(junk.as_bytes())
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    not_json["sha256"] = junk_digest.into();
    let shapes: [(&str, Option<(String, String)>); 3] = [
        ("rmissing", None),
        (
            "rbaddigest",
            Some((wrong_digest.to_string(), chunk.clone())),
        ),
        ("rnotjson", Some((not_json.to_string(), junk.clone()))),
    ];
    for (id, stored) in shapes {
        if let Some((header, chunk)) = stored {
            fleet.put(&format!("releases/{id}/chunks/000000"), &chunk);
            fleet.put(&format!("releases/{id}"), &header);
        }
        fleet.put("current", id);
        wait_all(&fleet, id, "failed", 20);
        for (n, host) in fleet.hosts.iter().enumerate() {
            assert_eq!(
                host.fleet()["fleet"]["connected"],
                true,
                "host{n} still follows the fleet"
            );
            assert!(enforcing_office(&host.link), "host{n} stays on its policy");
        }
        let status = fleet.status();
        let states: Vec<&str> = status["hosts"]
            .as_array()
            .expect("hosts")
            .iter()
            .map(|host| host["state"].as_str().unwrap_or_default())
            .collect();
        assert_eq!(
            states, ["failed"; 3],
            "statuses kept up, none gone: {status}"
        );
        // The next valid release applies everywhere, without a restart.
        let next = fleet.publish(&office_file(&["192.0.2.7"]), Some(id));
        wait_all(&fleet, &next, "pending", 20);
        fleet.ack(&next);
        wait_all(&fleet, &next, "acknowledged", 20);
        base = next;
    }
    assert!(!base.is_empty());
}

#[test]
fn a_manifest_claiming_a_terabyte_is_refused_before_a_chunk_is_read() {
    let fleet = fleet(1, ["1s", "30s"], &[]);
    let first = acknowledged_office(&fleet, &[]);
    let header = serde_json::json!({
        "id": "rhuge",
        "chunks": 100_000_000u64,
        "bytes": 1u64 << 40,
        "sha256": "00".repeat(32),
    });
    fleet.put("releases/rhuge", &header.to_string());
    fleet.put("current", "rhuge");
    wait(10, "refused at once", || state_of(&fleet, 0).0 == "failed");
    let (_, reason) = state_of(&fleet, 0);
    assert!(reason.contains("more than this host reads"), "{reason}");
    assert_eq!(fleet.hosts[0].fleet()["fleet"]["applied"], first.as_str());
    let next = fleet.publish(&office_file(&["192.0.2.7"]), Some("rhuge"));
    wait_all(&fleet, &next, "pending", 20);
}

#[test]
fn after_a_partition_a_host_says_it_reverted_and_reapply_brings_the_release_back() {
    let fleet = fleet(2, ["1s", "6s"], &[]);
    let first = acknowledged_office(&fleet, &[]);
    let second = fleet.publish(&office_file(&["192.0.2.7"]), Some(&first));
    wait_all(&fleet, &second, "pending", 20);
    // host0 loses etcd inside its window; the fleet acknowledges within it, which only
    // host1 hears.
    let cut = &fleet.hosts[0].link.server;
    cut.ip(&["link", "set", allowlist_tests::etcd::FLEET_IF, "down"])
        .expect("cut off");
    fleet.ack(&second);
    wait(20, "host1 acknowledged", || {
        state_of(&fleet, 1).0 == "acknowledged"
    });
    wait(20, "host0 says it reverted, cut off", || {
        let view = fleet.hosts[0].fleet();
        view["fleet"]["connected"] == false && view["fleet"]["state"] == "reverted"
    });
    let metrics = fleet.hosts[0].daemon.scrape();
    assert!(
        metrics.contains("allowlist_fleet_state{state=\"reverted\"} 1"),
        "the metric follows the kernel: {metrics}"
    );
    cut.ip(&["link", "set", allowlist_tests::etcd::FLEET_IF, "up"])
        .expect("healed");
    wait(
        30,
        "host0 back, and says why it is not on the release",
        || {
            let (state, reason) = state_of(&fleet, 0);
            state == "reverted" && reason.contains("fleet reapply")
        },
    );
    let status = fleet.etcd.fleet_ctl(FLEET, &["status"]);
    let text = String::from_utf8_lossy(&status.stdout);
    assert!(text.contains("NOT ON IT: host0 is reverted"), "{text}");
    let offered = fleet.etcd.fleet_ctl(FLEET, &["reapply"]);
    assert!(offered.status.success(), "{offered:?}");
    assert!(
        String::from_utf8_lossy(&offered.stdout).contains("host0"),
        "{offered:?}"
    );
    // Offered again, host0 applies it pending, and the fleet's acknowledgement keeps it.
    wait(30, "host0 acknowledged", || {
        state_of(&fleet, 0).0 == "acknowledged"
    });
    assert_eq!(fleet.hosts[0].fleet()["fleet"]["applied"], second.as_str());
    assert!(fleet.keys("reapply/").is_empty(), "an offer is used once");
}

#[test]
fn a_detached_host_says_so_and_attaching_again_reports_its_drift() {
    let fleet = fleet(1, ["1s", "30s"], &[]);
    let host = &fleet.hosts[0];
    let release = acknowledged_office(&fleet, &[]);
    let detached = host.daemon.ctl(&["fleet", "detach"]);
    let said = String::from_utf8_lossy(&detached.stdout);
    assert!(detached.status.success(), "{detached:?}");
    assert!(
        said.contains("detached") && said.contains("enforcing: yes"),
        "says the host still enforces: {said}"
    );
    wait(20, "fleet status says detached", || {
        fleet.status()["hosts"][0]["state"] == "detached"
    });
    // A local edit of the fleet's list while detached.
    let lists = host.daemon.call("GET", "/v1/allowlists", None).body;
    let id = lists["allowlists"][0]["id"]
        .as_str()
        .expect("id")
        .to_owned();
    let added = host.daemon.call(
        "POST",
        &format!("/v1/allowlists/{id}/entries"),
        Some(&serde_json::json!({ "entries": [{ "cidr": CLIENT_DENIED_V4.to_string() }] })),
    );
    assert_eq!(added.status, 201, "{added:?}");
    let attached = host.daemon.ctl(&["fleet", "attach"]);
    let said = String::from_utf8_lossy(&attached.stdout);
    assert!(attached.status.success(), "{attached:?}");
    assert!(said.contains("drift") && said.contains("office"), "{said}");
    // The current release applies again, over the drift, and its acknowledgement keeps it.
    wait(20, "applied again and acknowledged", || {
        state_of(&fleet, 0).0 == "acknowledged" && !passes(&host.link, CLIENT_DENIED_V4)
    });
    assert_eq!(host.fleet()["fleet"]["applied"], release.as_str());
}

#[test]
fn a_late_acknowledgement_fails_and_an_interrupted_publish_leaves_no_chunks() {
    let fleet = fleet(1, ["1s", "3s"], &[]);
    let first = acknowledged_office(&fleet, &[]);
    let second = fleet.publish(&office_file(&["192.0.2.7"]), Some(&first));
    wait_all(&fleet, &second, "reverted", 20);
    let late = fleet.etcd.fleet_ctl(FLEET, &["ack", &second]);
    assert!(!late.status.success(), "{late:?}");
    assert!(
        String::from_utf8_lossy(&late.stderr).contains("no host has it pending"),
        "{late:?}"
    );
    // Chunks an old interrupted publish left (no header): gone after the next publish.
    fleet.put("releases/r20200101T000000-dead/chunks/000000", "{}");
    let third = fleet.publish(&office_file(&["192.0.2.8"]), Some(&second));
    assert!(
        fleet.keys("releases/r20200101T000000-dead").is_empty(),
        "{:?}",
        fleet.keys("releases/")
    );
    assert!(!fleet.keys(&format!("releases/{third}")).is_empty());
}
