//! Fleets with real parts: etcd (Debian's etcd-server) in a namespace of its own, allowlistd
//! hosts in theirs following it, releases published and acknowledged with allowlistctl, and
//! packets on every host's test link.

use std::time::Duration;

use allowlist_tests::etcd::{FLEET_IF, policy_file};
use allowlist_tests::fleet::*;
use allowlist_tests::netns::*;
use allowlist_tests::scenario::{create, enable, enforcing_office};
use allowlist_tests::traffic::passes;
use serde_json::{Value, json};

#[test]
fn a_release_reaches_every_host_and_the_fleet_acknowledgement_keeps_it() {
    let fleet = fleet(3, ["1s", "30s"], &[]);
    let release = fleet.publish(&office_file(&[]), None);
    wait_all(&fleet, &release, "pending", 20);
    for host in &fleet.hosts {
        assert!(enforcing_office(&host.link), "enforced, pending");
        let pending = host.daemon.call("GET", "/v1/enforcement", None).body["pending"].clone();
        assert_eq!(pending["action"], "release", "{pending}");
        let local_ack = host
            .daemon
            .call("POST", "/v1/enforcement/acknowledge", None);
        assert_eq!(local_ack.code(), "fleet_release_pending", "{local_ack:?}");
    }
    let status = fleet.status();
    assert_eq!(status["current"], release);
    assert_eq!(
        status["hosts"].as_array().map(Vec::len),
        Some(3),
        "{status}"
    );
    fleet.ack(&release);
    wait_all(&fleet, &release, "acknowledged", 20);
    let status = fleet.status();
    for host in status["hosts"].as_array().expect("hosts") {
        assert_eq!(host["state"], "acknowledged", "{status}");
        assert_eq!(host["applied"], release.as_str(), "{status}");
    }
    for host in &fleet.hosts {
        assert!(host.daemon.call("GET", "/v1/enforcement", None).body["pending"].is_null());
        assert!(enforcing_office(&host.link), "kept");
    }
}

#[test]
fn an_unacknowledged_release_reverts_on_every_host() {
    let fleet = fleet(3, ["1s", "5s"], &[]);
    let release = fleet.publish(&office_file(&[]), None);
    wait_all(&fleet, &release, "pending", 20);
    assert!(
        !passes(&fleet.hosts[0].link, CLIENT_DENIED_V4),
        "enforced while pending"
    );
    wait_all(&fleet, &release, "reverted", 20);
    for host in &fleet.hosts {
        assert!(passes(&host.link, CLIENT_DENIED_V4), "back to no policy");
        assert_eq!(host.fleet()["fleet"]["applied"], Value::Null);
    }
    let status = fleet.status();
    assert!(
        status["hosts"]
            .as_array()
            .expect("hosts")
            .iter()
            .all(|h| h["state"] == "reverted"),
        "{status}"
    );
}

#[test]
fn a_stale_publish_is_refused_and_changes_nothing() {
    let fleet = fleet(0, ["1s", "5s"], &[]);
    let first = fleet.publish(&office_file(&[]), None);
    let file = policy_file(
        fleet.files.path(),
        "stale.toml",
        &office_file(&["192.0.2.9"]),
    );
    let path = file.to_str().expect("path");
    for args in [
        vec!["publish", "-f", path],
        vec!["publish", "-f", path, "--base", "r-older"],
    ] {
        let refused = fleet.etcd.fleet_ctl(FLEET, &args);
        assert!(!refused.status.success());
        let err = String::from_utf8_lossy(&refused.stderr);
        assert!(
            err.contains(&format!("the fleet is at release {first}")),
            "{err}"
        );
    }
    assert_eq!(fleet.status()["current"], first, "unchanged");
    let exported = fleet.etcd.fleet_ctl(FLEET, &["export"]);
    let exported = String::from_utf8_lossy(&exported.stdout).into_owned();
    assert!(
        exported.starts_with(&format!("base = \"{first}\"")),
        "{exported}"
    );
    let end = exported.rfind("]\n").expect("the entries' end");
    let edited = format!("{}  {{ cidr = \"192.0.2.9\" }},\n]\n", &exported[..end]);
    let second = fleet.publish(&edited, None);
    assert_eq!(
        fleet.status()["current"],
        second,
        "based on the current one: accepted"
    );
}

#[test]
fn a_pipeline_publishes_over_a_moved_fleet_with_base_current() {
    let fleet = fleet(0, ["1s", "5s"], &[]);
    let first = fleet.publish(&office_file(&[]), Some("current"));
    assert_eq!(fleet.status()["current"], first, "a first release");
    let second = fleet.publish(&office_file(&["192.0.2.8"]), Some(&first));

    let file = policy_file(
        fleet.files.path(),
        "repository.toml",
        &office_file(&["192.0.2.9"]),
    );
    let path = file.to_str().expect("path");
    let stale = fleet
        .etcd
        .fleet_ctl(FLEET, &["publish", "-f", path, "--base", &first]);
    assert!(!stale.status.success(), "a stale explicit base");
    let err = String::from_utf8_lossy(&stale.stderr);
    assert!(
        err.contains(&format!("the fleet is at release {second}")),
        "{err}"
    );
    assert_eq!(fleet.status()["current"], second, "unchanged");

    let third = fleet.publish(&office_file(&["192.0.2.9"]), Some("current"));
    assert_ne!(third, second);
    assert_eq!(
        fleet.status()["current"],
        third,
        "published over the moved fleet"
    );
    let again = fleet
        .etcd
        .fleet_ctl(FLEET, &["publish", "-f", path, "--base", "current"]);
    let stdout = String::from_utf8_lossy(&again.stdout);
    assert!(again.status.success(), "{again:?}");
    assert!(stdout.contains("nothing to publish"), "{stdout}");
    assert_eq!(
        fleet.status()["current"],
        third,
        "the same lists: no new release"
    );
}

#[test]
fn etcd_lost_outside_a_window_keeps_the_policy_and_inside_one_every_host_reverts() {
    let mut fleet = fleet(2, ["1s", "6s"], &[]);
    let first = fleet.publish(&office_file(&[]), None);
    wait_all(&fleet, &first, "pending", 20);
    fleet.ack(&first);
    wait_all(&fleet, &first, "acknowledged", 20);

    fleet.etcd.kill();
    for host in &fleet.hosts {
        wait(30, "disconnected", || {
            host.fleet()["fleet"]["connected"] == false
        });
        assert!(
            enforcing_office(&host.link),
            "the acknowledged policy stays"
        );
    }
    fleet.etcd.restart().expect("etcd back");
    let second = fleet.publish(&office_file(&[&CLIENT_DENIED_V4.to_string()]), Some(&first));
    wait_all(&fleet, &second, "pending", 45);
    for host in &fleet.hosts {
        assert_eq!(host.fleet()["fleet"]["connected"], true);
        assert!(
            passes(&host.link, CLIENT_DENIED_V4),
            "the resynced release is in force"
        );
    }

    // Lost inside the window: nobody can acknowledge; every host reverts by itself.
    fleet.etcd.kill();
    for host in &fleet.hosts {
        wait(20, "reverted", || {
            host.daemon.call("GET", "/v1/enforcement", None).body["pending"].is_null()
        });
        assert!(
            enforcing_office(&host.link),
            "back to the acknowledged release"
        );
    }
    fleet.etcd.restart().expect("etcd back");
    wait_all(&fleet, &second, "reverted", 45);
}

#[test]
fn a_host_cut_off_while_the_history_is_compacted_relists() {
    let fleet = fleet(1, ["1s", "30s"], &[]);
    let host = &fleet.hosts[0];
    let first = fleet.publish(&office_file(&[]), None);
    wait_all(&fleet, &first, "pending", 20);
    fleet.ack(&first);
    wait_all(&fleet, &first, "acknowledged", 20);

    host.link
        .server
        .ip(&["link", "set", FLEET_IF, "down"])
        .expect("cut off");
    wait(30, "disconnected", || {
        host.fleet()["fleet"]["connected"] == false
    });
    let second = fleet.publish(&office_file(&["192.0.2.2"]), Some(&first));
    let third = fleet.publish(
        &office_file(&[&CLIENT_DENIED_V4.to_string()]),
        Some(&second),
    );
    fleet.etcd.compact().expect("compact");
    host.link
        .server
        .ip(&["link", "set", FLEET_IF, "up"])
        .expect("back");

    wait_all(&fleet, &third, "pending", 60);
    assert!(
        host.daemon.log().contains("compacted: relisting"),
        "{}",
        host.daemon.log()
    );
    assert!(passes(&host.link, CLIENT_DENIED_V4), "the latest release");
}

#[test]
fn local_lists_stand_beside_the_fleet_lists_which_are_read_only_until_detached() {
    let fleet = fleet(1, ["1s", "30s"], &[]);
    let host = &fleet.hosts[0];
    let local = create(&host.daemon, "local", &[CLIENT_DENIED_V4.to_string()]);
    enable(&host.daemon, &local);
    std::thread::sleep(Duration::from_millis(1100));
    assert_eq!(
        host.daemon
            .call("POST", "/v1/enforcement/acknowledge", None)
            .status,
        200
    );

    let release = fleet.publish(&office_file(&[]), None);
    wait_all(&fleet, &release, "pending", 20);
    fleet.ack(&release);
    wait_all(&fleet, &release, "acknowledged", 20);
    assert!(passes(&host.link, CLIENT_ALLOWED_V4), "the fleet's list");
    assert!(passes(&host.link, CLIENT_DENIED_V4), "the host's own list");
    assert!(!passes(&host.link, CLIENT_DENIED_V6), "neither");

    let lists = host.daemon.call("GET", "/v1/allowlists", None).body;
    let office = lists["allowlists"]
        .as_array()
        .expect("lists")
        .iter()
        .find(|l| l["name"] == "office")
        .expect("the fleet's list")
        .clone();
    assert_eq!(office["fleet"]["release"], release.as_str(), "{office}");
    let id = office["id"].as_str().expect("id");
    let edit = json!({"name": "office", "entries": [{"cidr": CLIENT_ALLOWED_V4.to_string()}]});
    let refused = host
        .daemon
        .call("PUT", &format!("/v1/allowlists/{id}"), Some(&edit));
    assert_eq!(
        (refused.status, refused.code()),
        (409, "fleet_managed"),
        "{refused:?}"
    );

    let detached = host.daemon.ctl(&["fleet", "detach"]);
    assert!(detached.status.success(), "{detached:?}");
    wait(10, "detached", || {
        host.fleet()["fleet"]["state"] == "detached"
    });
    let edited = host
        .daemon
        .call("PUT", &format!("/v1/allowlists/{id}"), Some(&edit));
    assert_eq!(edited.status, 200, "editable once detached: {edited:?}");
}

#[test]
fn a_release_of_262144_entries_travels_in_chunks() {
    let fleet = fleet(1, ["1s", "60s"], &["--max-entries", "300000"]);
    let host = &fleet.hosts[0];
    let big: Vec<String> = (0..262_142u32)
        .map(|n| std::net::Ipv4Addr::from(0x0a00_0000 + n).to_string())
        .collect();
    let refs: Vec<&str> = big.iter().map(String::as_str).collect();
    let release = fleet.publish(&office_file(&refs), None);
    let chunks = fleet
        .etcd
        .etcdctl(&[
            "get",
            "--prefix",
            "--keys-only",
            &format!("/allowlist/fleets/{FLEET}/releases/{release}/chunks/"),
        ])
        .expect("etcdctl");
    let chunks = String::from_utf8_lossy(&chunks.stdout)
        .lines()
        .filter(|l| !l.is_empty())
        .count();
    assert!(chunks >= 2, "{chunks} chunks");
    wait_all(&fleet, &release, "pending", 60);
    fleet.ack(&release);
    wait_all(&fleet, &release, "acknowledged", 30);
    let lists = host.daemon.call("GET", "/v1/allowlists", None).body;
    assert_eq!(
        lists["allowlists"][0]["entries"].as_array().map(Vec::len),
        Some(262_144)
    );
    assert!(enforcing_office(&host.link));
}

#[test]
fn a_host_restarted_while_etcd_is_down_enforces_its_last_acknowledged_release() {
    let mut fleet = fleet(1, ["1s", "30s"], &[]);
    let release = fleet.publish(&office_file(&[]), None);
    wait_all(&fleet, &release, "pending", 20);
    fleet.ack(&release);
    wait_all(&fleet, &release, "acknowledged", 20);
    fleet.etcd.kill();
    let host = &mut fleet.hosts[0];
    host.restart();
    assert!(enforcing_office(&host.link), "enforcing without etcd");
    let view = host.fleet();
    assert_eq!(view["fleet"]["connected"], false, "{view}");
    assert_eq!(view["fleet"]["applied"], release.as_str(), "{view}");
}

#[test]
fn a_release_a_host_cannot_apply_leaves_it_on_its_policy_and_says_why() {
    let fleet = fleet(1, ["1s", "30s"], &["--max-entries", "4"]);
    let host = &fleet.hosts[0];
    let first = fleet.publish(&office_file(&[]), None);
    wait_all(&fleet, &first, "pending", 20);
    fleet.ack(&first);
    wait_all(&fleet, &first, "acknowledged", 20);
    let too_big = office_file(&["192.0.2.1", "192.0.2.2", "192.0.2.3"]);
    let second = fleet.publish(&too_big, Some(&first));
    wait_all(&fleet, &second, "failed", 20);
    let view = host.fleet();
    assert!(
        view["fleet"]["reason"]
            .as_str()
            .is_some_and(|r| r.contains("too many entries")),
        "{view}"
    );
    assert_eq!(view["fleet"]["applied"], first.as_str());
    assert!(enforcing_office(&host.link), "the previous release stays");
    let status = fleet.status();
    assert_eq!(status["hosts"][0]["state"], "failed", "{status}");
    let metrics = host.daemon.scrape();
    assert!(metrics.contains("allowlist_fleet_connected 1"), "{metrics}");
    assert!(
        metrics.contains("allowlist_fleet_state{state=\"failed\"} 1"),
        "{metrics}"
    );
}
