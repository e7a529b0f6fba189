//! Fleet releases in waves, with real parts: a release reaches a wave's hosts only once
//! every host of the wave before acknowledged it, a host that reverts halts it for good, and
//! `fleet abort` takes the fleet back through an acknowledged release of its own.

use allowlist_tests::fleet::*;
use allowlist_tests::netns::CLIENT_DENIED_V4;
use allowlist_tests::traffic::passes;
use serde_json::Value;

/// The hosts' states as `fleet status --json` reports them, by host name.
fn states(status: &Value) -> Vec<(String, String)> {
    status["hosts"]
        .as_array()
        .expect("hosts")
        .iter()
        .map(|host| {
            (
                host["host"].as_str().unwrap_or_default().to_owned(),
                host["state"].as_str().unwrap_or_default().to_owned(),
            )
        })
        .collect()
}

/// Waits until host `n` says `state` about `release`.
fn wait_host(fleet: &Fleet, n: usize, release: &str, state: &str, seconds: u64) {
    wait(seconds, &format!("host{n} {state} on {release}"), || {
        let view = fleet.hosts[n].fleet();
        view["fleet"]["release"] == release && view["fleet"]["state"] == state
    });
}

/// The denied client's address, which the second release lets in.
fn second_client() -> String {
    CLIENT_DENIED_V4.to_string()
}

#[test]
fn a_wave_that_reverts_halts_the_rollout_and_abort_takes_the_first_wave_back() {
    let fleet = fleet(3, ["1s", "8s"], &[]);
    let first = fleet.publish(&office_file(&[]), None);
    wait_all(&fleet, &first, "pending", 20);
    fleet.ack(&first);
    wait_all(&fleet, &first, "acknowledged", 20);

    let waves = ["--wave", "host0", "--wave", "host1", "--wave", "100%"];
    let second = fleet.publish_with(&office_file(&[&second_client()]), Some(&first), &waves);
    wait_host(&fleet, 0, &second, "pending", 20);
    assert!(
        passes(&fleet.hosts[0].link, CLIENT_DENIED_V4),
        "wave 1 has it"
    );
    for n in [1, 2] {
        wait_host(&fleet, n, &second, "waiting", 10);
        assert!(
            !passes(&fleet.hosts[n].link, CLIENT_DENIED_V4),
            "host{n} waits"
        );
    }
    let status = fleet.status();
    assert_eq!(status["rollout"]["open"], 1, "{status}");
    assert_eq!(
        status["rollout"]["waves"][2]["hosts"][0], "host2",
        "{status}"
    );

    // Wave 1 acknowledged: wave 2 opens by itself, and only wave 2.
    fleet.ack(&second);
    wait_host(&fleet, 0, &second, "acknowledged", 20);
    wait_host(&fleet, 1, &second, "pending", 20);
    assert!(
        passes(&fleet.hosts[1].link, CLIENT_DENIED_V4),
        "wave 2 has it"
    );
    assert!(
        !passes(&fleet.hosts[2].link, CLIENT_DENIED_V4),
        "wave 3 waits"
    );

    // Nobody acknowledges wave 2: host1 reverts, which halts the rollout before wave 3.
    wait_host(&fleet, 1, &second, "reverted", 20);
    wait(10, "the rollout halted", || {
        fleet.status()["rollout"]["halted"]["host"] == "host1"
    });
    let status = fleet.status();
    assert_eq!(status["rollout"]["halted"]["wave"], 2, "{status}");
    let table = fleet.etcd.fleet_ctl(FLEET, &["status"]);
    let table = String::from_utf8_lossy(&table.stdout).into_owned();
    eprintln!("{table}");
    assert!(
        table.contains("rollout: HALTED in wave 2 of 3: host1"),
        "{table}"
    );
    assert!(
        !passes(&fleet.hosts[1].link, CLIENT_DENIED_V4),
        "host1 reverted"
    );
    std::thread::sleep(std::time::Duration::from_secs(3));
    assert!(
        !passes(&fleet.hosts[2].link, CLIENT_DENIED_V4),
        "wave 3 never had it"
    );
    let host2 = fleet.hosts[2].fleet();
    assert_eq!(host2["fleet"]["state"], "waiting", "{host2}");
    assert!(
        host2["fleet"]["reason"]
            .as_str()
            .is_some_and(|reason| reason.contains("halted in wave 2")),
        "{host2}"
    );
    let refused = fleet.etcd.fleet_ctl(FLEET, &["ack", &second]);
    assert!(!refused.status.success(), "an ack of a halted rollout");
    assert!(
        String::from_utf8_lossy(&refused.stderr).contains("fleet abort"),
        "{refused:?}"
    );

    // The abort is a release of the first release's lists, to acknowledge like any other.
    let abort = fleet.etcd.fleet_ctl(FLEET, &["abort"]);
    let said = String::from_utf8_lossy(&abort.stdout).into_owned();
    assert!(abort.status.success(), "{abort:?}");
    let third = said.split_whitespace().nth(2).expect("the id").to_owned();
    wait_all(&fleet, &third, "pending", 20);
    assert!(
        !passes(&fleet.hosts[0].link, CLIENT_DENIED_V4),
        "the abort is in force on wave 1"
    );
    let host0 = fleet.hosts[0].fleet();
    assert!(
        host0["fleet"]["revert_at"].is_string(),
        "reverts unless acknowledged: {host0}"
    );
    fleet.ack(&third);
    wait_all(&fleet, &third, "acknowledged", 20);
    for host in &fleet.hosts {
        assert!(
            !passes(&host.link, CLIENT_DENIED_V4),
            "back on the first lists"
        );
    }
    let status = fleet.status();
    assert!(
        states(&status)
            .iter()
            .all(|(_, state)| state == "acknowledged"),
        "{status}"
    );
}

#[test]
fn with_a_soak_time_in_the_file_each_healthy_wave_goes_on_by_itself() {
    let fleet = fleet(2, ["1s", "30s"], &[]);
    // The waves in the file's [rollout] table this time.
    let file = format!(
        "{}\n[rollout]\nwaves = [\"host0\"]\nsoak = \"3s\"\n",
        office_file(&[])
    );
    let release = fleet.publish(&file, None);
    wait_host(&fleet, 0, &release, "pending", 20);
    wait_host(&fleet, 1, &release, "waiting", 10);
    assert!(
        passes(&fleet.hosts[1].link, CLIENT_DENIED_V4),
        "wave 2 waits"
    );
    wait_all(&fleet, &release, "acknowledged", 30);
    assert!(
        !passes(&fleet.hosts[1].link, CLIENT_DENIED_V4),
        "wave 2 has it"
    );
    let status = fleet.status();
    assert_eq!(status["rollout"]["open"], 2, "{status}");
    assert!(
        fleet.get(&format!("acks/{release}")).is_empty(),
        "no operator acknowledged"
    );
}
