//! Real packets between two network namespaces joined by a veth pair, with the program
//! attached to the receiving side in native and in skb mode.

use allowlist_common::{Counter, Mode};
use allowlist_daemon::dataplane::{AttachMode, AttachedMode, Dataplane};
use allowlist_tests::netns::*;
use allowlist_tests::traffic::{UdpStream, ping_answers, tcp_connects, udp_gets_through};
use allowlist_tests::{loaded, policy};

const POLICY: &[&str] = &["198.18.0.2", "fd00:a11::2"];

/// Loads the program with POLICY in `mode` and attaches it to the server side of `link`.
fn guard(link: &TestLink, xdp_mode: AttachMode, mode: Mode) -> Dataplane {
    let mut dataplane = loaded(POLICY, mode);
    let attached = link
        .server
        .enter(|| dataplane.attach(SERVER_IF, xdp_mode))
        .expect("entering the server namespace")
        .expect("attaching");
    let expected = match xdp_mode {
        AttachMode::Skb => AttachedMode::Skb,
        AttachMode::Native | AttachMode::Auto => AttachedMode::Native,
    };
    assert_eq!(attached, expected);
    let shown = link
        .server
        .ip(&["link", "show", SERVER_IF])
        .expect("ip link");
    let shown = String::from_utf8_lossy(&shown.stdout);
    match attached {
        AttachedMode::Native => assert!(
            shown.contains(" xdp ") && !shown.contains("xdpgeneric"),
            "{shown}"
        ),
        AttachedMode::Skb => assert!(shown.contains("xdpgeneric"), "{shown}"),
        AttachedMode::Adopted => unreachable!("an unpinned dataplane adopts no link"),
    }
    dataplane
}

fn allowed_pass_and_denied_drop(xdp_mode: AttachMode) {
    let link = TestLink::create().expect("test link");
    let dataplane = guard(&link, xdp_mode, Mode::Enforce);
    for (allowed, denied, server) in PROBES {
        assert!(
            udp_gets_through(&link, allowed, server).expect("udp"),
            "UDP from {allowed}"
        );
        assert!(
            !udp_gets_through(&link, denied, server).expect("udp"),
            "UDP from {denied}"
        );
        assert!(
            tcp_connects(&link, allowed, server).expect("tcp"),
            "TCP from {allowed}"
        );
        assert!(
            !tcp_connects(&link, denied, server).expect("tcp"),
            "TCP from {denied}"
        );
        assert!(
            ping_answers(&link, allowed, server).expect("ping"),
            "ping from {allowed}"
        );
        assert!(
            !ping_answers(&link, denied, server).expect("ping"),
            "ping from {denied}"
        );
    }
    let counters = dataplane.readings().counters().expect("counters");
    assert!(counters.get(Counter::Dropped) >= 6, "{counters}");
    assert!(counters.get(Counter::PassedAllowed) >= 6, "{counters}");
    assert!(counters.get(Counter::PassedNotIp) >= 1, "ARP: {counters}");
    assert!(
        counters.get(Counter::PassedNeighborDiscovery) >= 1,
        "ND from the denied v6 source: {counters}"
    );

    drop(dataplane);
    assert!(
        !link.server_has_xdp().expect("ip link"),
        "the program is detached on drop"
    );
    for (_, denied, server) in PROBES {
        assert!(
            udp_gets_through(&link, denied, server).expect("udp"),
            "UDP from {denied} once detached"
        );
    }
}

#[test]
fn native_mode_drops_denied_sources_and_passes_allowed_ones() {
    allowed_pass_and_denied_drop(AttachMode::Native);
}

#[test]
fn skb_mode_drops_denied_sources_and_passes_allowed_ones() {
    allowed_pass_and_denied_drop(AttachMode::Skb);
}

#[test]
fn auto_mode_gets_native_on_veth() {
    let link = TestLink::create().expect("test link");
    let dataplane = guard(&link, AttachMode::Auto, Mode::Enforce);
    assert!(udp_gets_through(&link, CLIENT_ALLOWED_V4.into(), SERVER_V4.into()).expect("udp"));
    assert_eq!(dataplane.attachments().len(), 1);
}

#[test]
fn monitor_mode_passes_denied_sources_and_counts_them() {
    let link = TestLink::create().expect("test link");
    let dataplane = guard(&link, AttachMode::Native, Mode::Monitor);
    for (_, denied, server) in PROBES {
        assert!(
            udp_gets_through(&link, denied, server).expect("udp"),
            "UDP from {denied}"
        );
    }
    let counters = dataplane.readings().counters().expect("counters");
    assert!(counters.get(Counter::WouldDrop) >= 2, "{counters}");
    assert_eq!(counters.get(Counter::Dropped), 0, "{counters}");
}

#[test]
fn policy_changes_while_traffic_flows_never_drop_an_address_allowed_throughout() {
    for xdp_mode in [AttachMode::Native, AttachMode::Skb] {
        let link = TestLink::create().expect("test link");
        let mut dataplane = guard(&link, xdp_mode, Mode::Enforce);
        // Both policies allow 198.18.0.2, through different prefixes and rules; only the
        // second allows the denied address.
        let narrow = policy(&["198.18.0.2", "fd00:a11::2", "192.0.2.0/24"]);
        let wide = policy(&["198.18.0.0/30", "fd00:a11::/126", "198.51.100.0/24"]);
        let stream = UdpStream::run(
            &link,
            CLIENT_ALLOWED_V4.into(),
            SERVER_V4.into(),
            20_000,
            || {
                for round in 0..200 {
                    let next = if round % 2 == 0 { &wide } else { &narrow };
                    dataplane.apply(next)?;
                }
                Ok(())
            },
        )
        .expect("stream");
        assert_eq!(
            stream.received(),
            stream.sent(),
            "{xdp_mode:?}: datagrams of the allowed source lost"
        );
        assert_eq!(dataplane.installed(), Some(&narrow));
        assert!(!udp_gets_through(&link, CLIENT_DENIED_V4.into(), SERVER_V4.into()).expect("udp"));
        dataplane.apply(&wide).expect("apply");
        assert!(udp_gets_through(&link, CLIENT_DENIED_V4.into(), SERVER_V4.into()).expect("udp"));
        assert!(udp_gets_through(&link, CLIENT_DENIED_V6.into(), SERVER_V6.into()).expect("udp"));
    }
}
