//! The host's settings beside its policy, through the kernel's test run: which of the
//! host's own packets open flows for replies (`--replies-for`), and the IP protocols scopes
//! leave unchecked (`--unprotected-protocol`).

use std::collections::BTreeSet;
use std::net::IpAddr;

use allowlist_common::Mode;
use allowlist_daemon::dataplane::{Dataplane, ReplyOpeners, Verdict};
use allowlist_daemon::policy::PortScope;
use allowlist_tests::frames::*;
use allowlist_tests::{loaded, verdict};

const LOCAL: &str = "198.18.0.1";
const REMOTE: &str = "203.0.113.53";
const POLICY: &[&str] = &["198.18.0.2"];

fn ip(s: &str) -> IpAddr {
    s.parse().expect("literal")
}

/// Whether the reply to a packet the host sends (`outbound`) passes: the host sends it,
/// then `reply` comes back from the remote end.
fn reply_passes(dataplane: &Dataplane, outbound: &[u8], reply: &[u8]) -> bool {
    dataplane
        .run_egress_frame(outbound)
        .expect("egress test run");
    verdict(dataplane, reply) == Verdict::Pass
}

fn udp_exchange(dataplane: &Dataplane, remote_port: u16) -> bool {
    reply_passes(
        dataplane,
        &ip_frame(ip(LOCAL), ip(REMOTE), IPPROTO_UDP, &udp(40000, remote_port)),
        &ip_frame(ip(REMOTE), ip(LOCAL), IPPROTO_UDP, &udp(remote_port, 40000)),
    )
}

fn tcp_exchange(dataplane: &Dataplane, remote_port: u16) -> bool {
    reply_passes(
        dataplane,
        &ip_frame(
            ip(LOCAL),
            ip(REMOTE),
            IPPROTO_TCP,
            &tcp_segment(40001, remote_port, tcp::SYN),
        ),
        &ip_frame(
            ip(REMOTE),
            ip(LOCAL),
            IPPROTO_TCP,
            &tcp_segment(remote_port, 40001, tcp::SYN | tcp::ACK),
        ),
    )
}

fn ping_exchange(dataplane: &Dataplane, id: u16) -> bool {
    reply_passes(
        dataplane,
        &ip_frame(ip(LOCAL), ip(REMOTE), IPPROTO_ICMP, &echo(8, id)),
        &ip_frame(ip(REMOTE), ip(LOCAL), IPPROTO_ICMP, &echo(0, id)),
    )
}

#[test]
fn only_the_kinds_of_packets_named_open_flows_for_replies() {
    let mut dataplane = loaded(POLICY, Mode::Enforce);
    // DNS and NTP only: no TCP, no pings.
    dataplane
        .set_reply_openers(&ReplyOpeners {
            tcp: Some(BTreeSet::new()),
            udp: Some(BTreeSet::from([53, 123])),
            icmp: false,
        })
        .expect("reply openers");
    assert!(udp_exchange(&dataplane, 53), "DNS opens a flow");
    assert!(udp_exchange(&dataplane, 123), "NTP opens a flow");
    assert!(
        !udp_exchange(&dataplane, 5353),
        "another UDP port opens none"
    );
    assert!(!tcp_exchange(&dataplane, 443), "TCP opens none");
    assert!(!ping_exchange(&dataplane, 7), "pings open none");

    // Every TCP port and pings, UDP to port 53 only.
    dataplane
        .set_reply_openers(&ReplyOpeners {
            tcp: None,
            udp: Some(BTreeSet::from([53])),
            icmp: true,
        })
        .expect("reply openers");
    assert!(tcp_exchange(&dataplane, 443));
    assert!(ping_exchange(&dataplane, 8));
    assert!(
        !udp_exchange(&dataplane, 5353),
        "UDP to other ports still opens none"
    );

    dataplane
        .set_reply_openers(&ReplyOpeners::default())
        .expect("the default");
    assert!(
        udp_exchange(&dataplane, 5353),
        "by default every UDP packet opens one"
    );
    assert!(tcp_exchange(&dataplane, 8443));
}

#[test]
fn scopes_leave_unchecked_only_the_protocols_named_unprotected() {
    let mut dataplane = loaded(POLICY, Mode::Enforce);
    let scopes: BTreeSet<PortScope> = BTreeSet::from(["tcp/22".parse().expect("scope")]);
    dataplane.set_scopes(&scopes).expect("scopes");
    let carrying = |protocol: u8| ip_frame(ip(REMOTE), ip(LOCAL), protocol, &[0; 16]);
    const GRE: u8 = 47;
    const ESP: u8 = 50;
    assert_eq!(verdict(&dataplane, &carrying(GRE)), Verdict::Drop);
    dataplane
        .set_unprotected_protocols(&BTreeSet::from([GRE]))
        .expect("unprotected");
    assert_eq!(
        verdict(&dataplane, &carrying(GRE)),
        Verdict::Pass,
        "GRE named unprotected"
    );
    assert_eq!(
        verdict(&dataplane, &carrying(ESP)),
        Verdict::Drop,
        "ESP still guarded"
    );
    dataplane.set_scopes(&BTreeSet::new()).expect("no scopes");
    assert_eq!(
        verdict(&dataplane, &carrying(GRE)),
        Verdict::Drop,
        "without scopes every packet is checked, whatever its protocol"
    );
}
