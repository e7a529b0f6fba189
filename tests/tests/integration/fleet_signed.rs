//! Signed releases with real etcd and real packets: hosts configured with the operators'
//! public keys (`--fleet-trust`) apply only releases, and count only acknowledgements, that
//! enough trusted keys signed; a key removed from the file is revoked at the next release;
//! with a threshold of two, one operator alone changes nothing.

use allowlist_tests::daemon::TempDir;
use allowlist_tests::fleet::*;
use allowlist_tests::netns::*;
use allowlist_tests::operator_keys::{OPERATOR_A, OPERATOR_B, OPERATOR_C, trust_file};
use allowlist_tests::traffic::passes;

/// The operators' key files, and the hosts' trust file.
struct Keys {
    dir: TempDir,
    a: String,
    b: String,
    c: String,
    trust: String,
}

fn keys() -> Keys {
    let dir = TempDir::new().expect("keys dir");
    let path = |p: std::path::PathBuf| p.to_str().expect("path").to_owned();
    Keys {
        a: path(OPERATOR_A.write(dir.path(), "a")),
        b: path(OPERATOR_B.write(dir.path(), "b")),
        c: path(OPERATOR_C.write(dir.path(), "c")),
        trust: path(trust_file(dir.path(), "trust", &[&OPERATOR_A, &OPERATOR_B])),
        dir,
    }
}

/// The state and reason host0 reports.
fn host0(fleet: &Fleet) -> (String, String) {
    let view = fleet.hosts[0].fleet();
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

/// `allowlistctl fleet ARGS`; fails unless it succeeds.
fn ctl(fleet: &Fleet, args: &[&str]) {
    let output = fleet.etcd.fleet_ctl(FLEET, args);
    assert!(output.status.success(), "{args:?}: {output:?}");
}

#[test]
fn only_what_a_trusted_key_signed_is_applied_or_counted() {
    let keys = keys();
    let fleet = fleet(1, ["1s", "20s"], &["--fleet-trust", &keys.trust]);
    let denied = CLIENT_DENIED_V4.to_string();

    let unsigned = fleet.publish(&office_file(&[]), None);
    wait(20, "an unsigned release refused", || {
        let (state, reason) = host0(&fleet);
        state == "failed" && reason.contains("not signed")
    });
    let untrusted =
        fleet.publish_with(&office_file(&[]), Some(&unsigned), &["--sign-key", &keys.c]);
    wait(20, "a release signed by an untrusted key refused", || {
        let (state, reason) = host0(&fleet);
        state == "failed" && reason.contains("signed by 0 of the 1")
    });
    assert!(
        passes(&fleet.hosts[0].link, CLIENT_DENIED_V4),
        "nothing applied so far"
    );

    let signed = fleet.publish_with(
        &office_file(&[]),
        Some(&untrusted),
        &["--sign-key", &keys.a],
    );
    wait_all(&fleet, &signed, "pending", 20);
    assert!(!passes(&fleet.hosts[0].link, CLIENT_DENIED_V4));
    ctl(&fleet, &["ack", &signed]);
    wait(20, "an unsigned acknowledgement not counted", || {
        host0(&fleet).1.contains("not counted")
    });
    ctl(&fleet, &["ack", &signed, "--sign-key", &keys.a]);
    wait_all(&fleet, &signed, "acknowledged", 20);

    // Operator A's key revoked: removed from the file, which the host reads at each release.
    trust_file(keys.dir.path(), "trust", &[&OPERATOR_B]);
    let revoked = fleet.publish_with(
        &office_file(&[&denied]),
        Some(&signed),
        &["--sign-key", &keys.a],
    );
    wait_all(&fleet, &revoked, "failed", 20);
    assert!(!passes(&fleet.hosts[0].link, CLIENT_DENIED_V4));
    let by_b = fleet.publish_with(
        &office_file(&[&denied]),
        Some(&revoked),
        &["--sign-key", &keys.b],
    );
    wait_all(&fleet, &by_b, "pending", 20);
    assert!(passes(&fleet.hosts[0].link, CLIENT_DENIED_V4));
}

#[test]
fn with_a_threshold_of_two_one_operator_alone_changes_nothing() {
    let keys = keys();
    let fleet = fleet(
        1,
        ["1s", "30s"],
        &["--fleet-trust", &keys.trust, "--fleet-trust-threshold", "2"],
    );
    // One key twice is one signer.
    let once = fleet.publish_with(
        &office_file(&[]),
        None,
        &["--sign-key", &keys.a, "--sign-key", &keys.a],
    );
    wait(20, "one operator's release refused", || {
        let (state, reason) = host0(&fleet);
        state == "failed" && reason.contains("signed by 1 of the 2")
    });
    // The second operator signs it: the hosts read it again and apply it.
    ctl(&fleet, &["sign", &once, "--sign-key", &keys.b]);
    wait_all(&fleet, &once, "pending", 20);
    ctl(&fleet, &["ack", &once, "--sign-key", &keys.a]);
    wait(20, "one acknowledgement of two not counted", || {
        host0(&fleet).1.contains("signed by 1 of the 2")
    });
    ctl(&fleet, &["ack", &once, "--sign-key", &keys.b]);
    wait_all(&fleet, &once, "acknowledged", 20);
}
