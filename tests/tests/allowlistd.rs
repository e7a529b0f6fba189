//! The `allowlistd` binary as an operator runs it: attached inside a namespace, enforcing
//! its --allow list, detaching on SIGTERM; and its refusals of bad input.

use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use allowlist_tests::allowlistd_binary;
use allowlist_tests::netns::*;
use allowlist_tests::traffic::udp_gets_through;

/// Kills the daemon if a test fails before stopping it.
struct Daemon(Child);

impl Drop for Daemon {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn start_in(ns: &NetNs, args: &[&str]) -> Daemon {
    let child = Command::new("nsenter")
        .arg(format!("--net={}", ns.path()))
        .arg(allowlistd_binary().expect("allowlistd binary"))
        .args(args)
        .stderr(Stdio::piped())
        .spawn()
        .expect("starting allowlistd");
    Daemon(child)
}

fn wait_until(what: &str, mut condition: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(20);
    while !condition() {
        assert!(Instant::now() < deadline, "timed out waiting until {what}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[test]
fn allowlistd_enforces_its_allow_list_until_sigterm() {
    let link = TestLink::create().expect("test link");
    let mut daemon = start_in(
        &link.server,
        &[
            "--iface",
            SERVER_IF,
            "--allow",
            "198.18.0.2",
            "--allow",
            "fd00:a11::/126",
            "--xdp-mode",
            "skb",
            "--stats-interval",
            "1s",
        ],
    );
    wait_until("the program is attached", || {
        link.server_has_xdp().expect("ip link")
    });

    assert!(udp_gets_through(&link, CLIENT_ALLOWED_V4.into(), SERVER_V4.into()).expect("udp"));
    assert!(!udp_gets_through(&link, CLIENT_DENIED_V4.into(), SERVER_V4.into()).expect("udp"));
    assert!(
        udp_gets_through(&link, CLIENT_DENIED_V6.into(), SERVER_V6.into()).expect("udp"),
        "::3 is in ::/126"
    );

    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(daemon.0.id() as i32),
        nix::sys::signal::Signal::SIGTERM,
    )
    .expect("SIGTERM");
    let status = daemon.0.wait().expect("wait");
    let mut log = String::new();
    std::io::Read::read_to_string(daemon.0.stderr.as_mut().expect("stderr"), &mut log)
        .expect("stderr");
    assert!(status.success(), "{status}: {log}");
    assert!(
        log.contains("attached") && log.contains("mode=skb"),
        "{log}"
    );
    let dropped: u64 = log
        .rsplit("dropped=")
        .next()
        .and_then(|rest| rest.split_whitespace().next())
        .and_then(|n| n.parse().ok())
        .unwrap_or(0);
    assert!(dropped >= 1, "the counters are logged: {log}");
    assert!(
        !link.server_has_xdp().expect("ip link"),
        "detached on SIGTERM"
    );
    assert!(udp_gets_through(&link, CLIENT_DENIED_V4.into(), SERVER_V4.into()).expect("udp"));
}

fn refused(args: &[&str]) -> String {
    let link = TestLink::create().expect("test link");
    let output = Command::new("nsenter")
        .arg(format!("--net={}", link.server.path()))
        .arg(allowlistd_binary().expect("allowlistd binary"))
        .args(args)
        .output()
        .expect("running allowlistd");
    assert!(!output.status.success(), "allowlistd {args:?} should fail");
    assert!(
        !link.server_has_xdp().expect("ip link"),
        "nothing attached after a refusal"
    );
    String::from_utf8_lossy(&output.stderr).into_owned()
}

#[test]
fn a_cidr_with_host_bits_is_refused_naming_the_network_meant() {
    let err = refused(&["--iface", SERVER_IF, "--allow", "198.18.0.9/24"]);
    assert!(err.contains("did you mean 198.18.0.0/24?"), "{err}");
    let err = refused(&["--iface", SERVER_IF, "--allow", "fd00:a11::9/64"]);
    assert!(err.contains("did you mean fd00:a11::/64?"), "{err}");
}

#[test]
fn an_unknown_interface_is_refused_by_name() {
    let err = refused(&["--iface", "nosuch0", "--allow", "198.18.0.2"]);
    assert!(err.contains("nosuch0"), "{err}");
}

#[test]
fn a_garbage_allow_entry_is_refused() {
    let err = refused(&["--iface", SERVER_IF, "--allow", "198.18.0"]);
    assert!(err.contains("is not an IPv4/IPv6 address or CIDR"), "{err}");
}
