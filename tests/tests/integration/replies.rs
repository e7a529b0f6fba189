//! Replies to flows the host started, ICMP errors about them, and scopes, through the kernel's
//! test run: the egress program records a flow from a crafted outgoing frame, the XDP program
//! judges the crafted answer.

use std::collections::BTreeSet;
use std::net::IpAddr;
use std::time::Duration;

use allowlist_common::{Counter, Mode};
use allowlist_daemon::dataplane::{Dataplane, Enforcement, Replies, Verdict};
use allowlist_daemon::policy::PortScope;
use allowlist_tests::frames::*;
use allowlist_tests::{counter, loaded, verdict};

/// The host.
const LOCAL_V4: &str = "198.18.0.1";
const LOCAL_V6: &str = "fd00:a11::1";
/// A server the host talks to, not on the allowlist.
const REMOTE_V4: &str = "203.0.113.53";
const REMOTE_V6: &str = "2001:db8::53";
/// A router on the path, not on the allowlist.
const ROUTER_V4: &str = "192.0.2.254";
const ROUTER_V6: &str = "2001:db8:ffff::1";
const POLICY: &[&str] = &["198.18.0.2", "fd00:a11::2"];

fn ip(s: &str) -> IpAddr {
    s.parse().expect("literal")
}

fn families() -> [(IpAddr, IpAddr, IpAddr); 2] {
    [
        (ip(LOCAL_V4), ip(REMOTE_V4), ip(ROUTER_V4)),
        (ip(LOCAL_V6), ip(REMOTE_V6), ip(ROUTER_V6)),
    ]
}

/// Another address of the host than `local`, of its family.
fn other_local(local: IpAddr) -> IpAddr {
    if local.is_ipv4() {
        ip("198.18.0.9")
    } else {
        ip("fd00:a11::9")
    }
}

fn icmp_protocol(addr: IpAddr) -> u8 {
    if addr.is_ipv4() {
        IPPROTO_ICMP
    } else {
        IPPROTO_ICMPV6
    }
}

fn send(dataplane: &Dataplane, frame: &[u8]) {
    dataplane.run_egress_frame(frame).expect("egress test run");
}

#[test]
fn udp_replies_to_a_flow_the_host_started_pass_until_it_idles_out() {
    let mut dataplane = loaded(POLICY, Mode::Enforce);
    dataplane
        .set_replies(Replies {
            udp_timeout: Duration::from_millis(300),
            ..Replies::default()
        })
        .expect("replies");
    for (local, remote, _) in families() {
        let reply = ip_frame(remote, local, IPPROTO_UDP, &udp(53, 40000));
        assert_eq!(verdict(&dataplane, &reply), Verdict::Drop, "unsolicited");
        send(
            &dataplane,
            &ip_frame(local, remote, IPPROTO_UDP, &udp(40000, 53)),
        );
        assert_eq!(
            verdict(&dataplane, &reply),
            Verdict::Pass,
            "reply from {remote}"
        );
        let other_port = ip_frame(remote, local, IPPROTO_UDP, &udp(53, 40001));
        assert_eq!(
            verdict(&dataplane, &other_port),
            Verdict::Drop,
            "to another local port"
        );
        let other_source = ip_frame(remote, local, IPPROTO_UDP, &udp(54, 40000));
        assert_eq!(
            verdict(&dataplane, &other_source),
            Verdict::Drop,
            "from another remote port"
        );
        let other_local = ip_frame(remote, other_local(local), IPPROTO_UDP, &udp(53, 40000));
        assert_eq!(
            verdict(&dataplane, &other_local),
            Verdict::Drop,
            "to another local address on the same port"
        );
    }
    assert_eq!(counter(&dataplane, Counter::PassedReply), 2);
    assert_eq!(counter(&dataplane, Counter::FlowsRecorded), 2);
    assert_eq!(dataplane.readings().flow_stats().expect("flows").live, 2);
    std::thread::sleep(Duration::from_millis(400));
    for (local, remote, _) in families() {
        let late = ip_frame(remote, local, IPPROTO_UDP, &udp(53, 40000));
        assert_eq!(
            verdict(&dataplane, &late),
            Verdict::Drop,
            "after the idle timeout"
        );
    }
}

#[test]
fn tcp_replies_pass_from_the_host_s_syn_until_its_own_rst() {
    let dataplane = loaded(POLICY, Mode::Enforce);
    for (local, remote, _) in families() {
        let from_remote =
            |flags| ip_frame(remote, local, IPPROTO_TCP, &tcp_segment(443, 50000, flags));
        let from_host =
            |flags| ip_frame(local, remote, IPPROTO_TCP, &tcp_segment(50000, 443, flags));
        // Only a SYN starts a flow: an ACK of a connection never seen records nothing.
        send(&dataplane, &from_host(tcp::ACK));
        assert_eq!(verdict(&dataplane, &from_remote(tcp::ACK)), Verdict::Drop);
        send(&dataplane, &from_host(tcp::SYN));
        assert_eq!(
            verdict(&dataplane, &from_remote(tcp::SYN | tcp::ACK)),
            Verdict::Pass
        );
        assert_eq!(verdict(&dataplane, &from_remote(tcp::ACK)), Verdict::Pass);
        // A remote that opens a connection to the same local port is not a reply.
        let inbound = ip_frame(remote, local, IPPROTO_TCP, &tcp_segment(443, 22, tcp::SYN));
        assert_eq!(verdict(&dataplane, &inbound), Verdict::Drop);
        // A spoofer who knows the ports cannot tear the flow down with a forged RST or FIN.
        for forged in [tcp::RST, tcp::FIN | tcp::ACK] {
            assert_eq!(
                verdict(&dataplane, &from_remote(forged)),
                Verdict::Pass,
                "an RST or FIN from the remote passes"
            );
            assert_eq!(
                verdict(&dataplane, &from_remote(tcp::ACK)),
                Verdict::Pass,
                "and closes nothing"
            );
        }
        send(&dataplane, &from_host(tcp::RST | tcp::ACK));
        assert_eq!(
            verdict(&dataplane, &from_remote(tcp::ACK)),
            Verdict::Drop,
            "closed by the host's own RST"
        );
    }
}

#[test]
fn replies_do_not_keep_a_flow_alive_only_the_host_s_own_packets_do() {
    let mut dataplane = loaded(POLICY, Mode::Enforce);
    dataplane
        .set_replies(Replies {
            udp_timeout: Duration::from_millis(400),
            ..Replies::default()
        })
        .expect("replies");
    let (local, remote, _) = families()[0];
    let reply = ip_frame(remote, local, IPPROTO_UDP, &udp(53, 40000));
    let from_host = ip_frame(local, remote, IPPROTO_UDP, &udp(40000, 53));
    send(&dataplane, &from_host);
    for _ in 0..3 {
        std::thread::sleep(Duration::from_millis(100));
        assert_eq!(verdict(&dataplane, &reply), Verdict::Pass);
    }
    std::thread::sleep(Duration::from_millis(250));
    assert_eq!(
        verdict(&dataplane, &reply),
        Verdict::Drop,
        "400 ms after the host's last datagram, however many replies came"
    );
    send(&dataplane, &from_host);
    assert_eq!(
        verdict(&dataplane, &reply),
        Verdict::Pass,
        "the host's own datagram opens it again"
    );
}

#[test]
fn a_fin_closes_the_flow_after_a_short_linger() {
    let mut dataplane = loaded(POLICY, Mode::Enforce);
    dataplane
        .set_replies(Replies {
            tcp_timeout: Duration::from_millis(300),
            ..Replies::default()
        })
        .expect("replies");
    let (local, remote) = (ip(LOCAL_V4), ip(REMOTE_V4));
    let from_remote = |flags| ip_frame(remote, local, IPPROTO_TCP, &tcp_segment(443, 50001, flags));
    send(
        &dataplane,
        &ip_frame(
            local,
            remote,
            IPPROTO_TCP,
            &tcp_segment(50001, 443, tcp::SYN),
        ),
    );
    send(
        &dataplane,
        &ip_frame(
            local,
            remote,
            IPPROTO_TCP,
            &tcp_segment(50001, 443, tcp::FIN | tcp::ACK),
        ),
    );
    assert_eq!(
        verdict(&dataplane, &from_remote(tcp::FIN | tcp::ACK)),
        Verdict::Pass,
        "the closing handshake"
    );
    std::thread::sleep(Duration::from_millis(400));
    assert_eq!(
        verdict(&dataplane, &from_remote(tcp::ACK)),
        Verdict::Drop,
        "the linger is no longer than the timeout"
    );
}

#[test]
fn echo_replies_pass_for_the_host_s_own_pings() {
    let dataplane = loaded(POLICY, Mode::Enforce);
    for (local, remote, _) in families() {
        let (request, reply) = if local.is_ipv4() { (8, 0) } else { (128, 129) };
        let proto = icmp_protocol(local);
        let answer = ip_frame(remote, local, proto, &echo(reply, 77));
        assert_eq!(
            verdict(&dataplane, &answer),
            Verdict::Drop,
            "unsolicited echo reply"
        );
        send(
            &dataplane,
            &ip_frame(local, remote, proto, &echo(request, 77)),
        );
        assert_eq!(verdict(&dataplane, &answer), Verdict::Pass);
        assert_eq!(
            verdict(
                &dataplane,
                &ip_frame(remote, local, proto, &echo(reply, 78))
            ),
            Verdict::Drop,
            "other id"
        );
        assert_eq!(
            verdict(
                &dataplane,
                &ip_frame(remote, local, proto, &echo(request, 77))
            ),
            Verdict::Drop,
            "a request is no reply"
        );
    }
}

/// Has the host open a TCP flow from `local` to `remote` (port 50002 to 443); returns the
/// packet it sent, as an ICMP error about it quotes it.
fn start_flow(dataplane: &Dataplane, local: IpAddr, remote: IpAddr) -> Vec<u8> {
    let syn = tcp_segment(50002, 443, tcp::SYN);
    send(dataplane, &ip_frame(local, remote, IPPROTO_TCP, &syn));
    ip_packet(local, remote, IPPROTO_TCP, &syn)
}

#[test]
fn icmp_errors_about_a_recorded_flow_pass_and_others_drop() {
    let dataplane = loaded(POLICY, Mode::Enforce);
    for (local, remote, router) in families() {
        let unrelated = ip_packet(
            local,
            remote,
            IPPROTO_TCP,
            &tcp_segment(50003, 443, tcp::SYN),
        );
        let proto = icmp_protocol(local);
        // Packet too big (v6) / fragmentation needed (v4, type 3), time exceeded (v4 11, v6 3).
        let (too_big, time_exceeded) = if local.is_ipv4() { (3, 11) } else { (2, 3) };
        for icmp_type in [too_big, time_exceeded] {
            let error = ip_frame(router, local, proto, &icmp_error(icmp_type, &unrelated));
            assert_eq!(
                verdict(&dataplane, &error),
                Verdict::Drop,
                "type {icmp_type} about no flow"
            );
        }
        let outgoing = start_flow(&dataplane, local, remote);
        for icmp_type in [too_big, time_exceeded] {
            let error = ip_frame(router, local, proto, &icmp_error(icmp_type, &outgoing));
            assert_eq!(
                verdict(&dataplane, &error),
                Verdict::Pass,
                "type {icmp_type} about the flow, from {router}"
            );
            let from_remote = ip_frame(remote, local, proto, &icmp_error(icmp_type, &outgoing));
            assert_eq!(verdict(&dataplane, &from_remote), Verdict::Pass);
            // The same ports from another local address: not a packet the host sent.
            let forged = ip_packet(
                other_local(local),
                remote,
                IPPROTO_TCP,
                &tcp_segment(50002, 443, tcp::SYN),
            );
            let error = ip_frame(router, local, proto, &icmp_error(icmp_type, &forged));
            assert_eq!(
                verdict(&dataplane, &error),
                Verdict::Drop,
                "type {icmp_type} quoting a packet from another local address"
            );
        }
        let truncated_quote = ip_frame(
            router,
            local,
            proto,
            &icmp_error(too_big, &outgoing[..outgoing.len() - 18]),
        );
        assert_eq!(
            verdict(&dataplane, &truncated_quote),
            Verdict::Drop,
            "a quote without ports"
        );
    }
    assert_eq!(counter(&dataplane, Counter::PassedReply), 8);
}

#[test]
fn replies_off_is_the_pure_stateless_filter() {
    let mut dataplane = loaded(POLICY, Mode::Enforce);
    dataplane
        .set_replies(Replies {
            enabled: false,
            ..Replies::default()
        })
        .expect("replies");
    let (local, remote) = (ip(LOCAL_V4), ip(REMOTE_V4));
    send(
        &dataplane,
        &ip_frame(local, remote, IPPROTO_UDP, &udp(40000, 53)),
    );
    assert_eq!(
        counter(&dataplane, Counter::FlowsRecorded),
        0,
        "nothing recorded"
    );
    assert_eq!(
        verdict(
            &dataplane,
            &ip_frame(remote, local, IPPROTO_UDP, &udp(53, 40000))
        ),
        Verdict::Drop
    );
}

#[test]
fn scopes_check_only_protected_ports_and_whatever_could_hide_one() {
    let mut dataplane = loaded(POLICY, Mode::Enforce);
    let scopes: BTreeSet<PortScope> = ["tcp/22", "udp/51820"]
        .iter()
        .map(|s| s.parse().expect("scope"))
        .collect();
    dataplane.set_scopes(&scopes).expect("scopes");
    for (local, remote, _) in families() {
        let tcp_to = |port| {
            ip_frame(
                remote,
                local,
                IPPROTO_TCP,
                &tcp_segment(40000, port, tcp::SYN),
            )
        };
        let udp_to = |port| ip_frame(remote, local, IPPROTO_UDP, &udp(40000, port));
        assert_eq!(
            verdict(&dataplane, &tcp_to(80)),
            Verdict::Pass,
            "tcp/80 is outside the scope"
        );
        assert_eq!(verdict(&dataplane, &tcp_to(22)), Verdict::Drop);
        assert_eq!(
            verdict(&dataplane, &udp_to(22)),
            Verdict::Pass,
            "udp/22 is not protected"
        );
        assert_eq!(verdict(&dataplane, &udp_to(51820)), Verdict::Drop);
        let ping = ip_frame(
            remote,
            local,
            icmp_protocol(local),
            &echo(if local.is_ipv4() { 8 } else { 128 }, 1),
        );
        assert_eq!(
            verdict(&dataplane, &ping),
            Verdict::Pass,
            "ICMP is outside every scope"
        );
        let allowed = if local.is_ipv4() {
            ip("198.18.0.2")
        } else {
            ip("fd00:a11::2")
        };
        let allowed_ssh = ip_frame(
            allowed,
            local,
            IPPROTO_TCP,
            &tcp_segment(40000, 22, tcp::SYN),
        );
        assert_eq!(verdict(&dataplane, &allowed_ssh), Verdict::Pass);
    }
    // Other protocols than TCP, UDP and ICMP from a denied source are held to the allowlist:
    // a tunnel would carry anything past the guard.
    for protocol in [4u8, 41, 47, 50, 132, 136, 115, 33] {
        let frame = ip_frame(ip("203.0.113.53"), ip("198.18.0.1"), protocol, &[0; 16]);
        assert_eq!(
            verdict(&dataplane, &frame),
            Verdict::Drop,
            "IP protocol {protocol}"
        );
    }
    // TCP to port 80 behind an IPv6 hop-by-hop header could hide port 22: checked.
    let mut hidden = vec![IPPROTO_TCP, 0, 1, 4, 0, 0, 0, 0];
    hidden.extend_from_slice(&tcp_segment(40000, 22, tcp::SYN));
    let frame = ethernet(
        &[],
        ETH_P_IPV6,
        &ipv6(
            "2001:db8::53".parse().expect("literal"),
            "fd00:a11::1".parse().expect("literal"),
            IPPROTO_HOPOPTS,
            64,
            &hidden,
        ),
    );
    assert_eq!(verdict(&dataplane, &frame), Verdict::Drop);
    // An IPv4 fragment after the first carries no ports: checked.
    let mut fragment = ipv4(
        "203.0.113.53".parse().expect("literal"),
        "198.18.0.1".parse().expect("literal"),
        &[],
        IPPROTO_TCP,
        &[0; 16],
    );
    fragment[6] = 0x00;
    fragment[7] = 0x10;
    assert_eq!(
        verdict(&dataplane, &ethernet(&[], ETH_P_IPV4, &fragment)),
        Verdict::Drop
    );
    assert_eq!(counter(&dataplane, Counter::PassedUnprotected), 6);

    dataplane.set_scopes(&BTreeSet::new()).expect("no scopes");
    let tcp80 = ip_frame(
        ip(REMOTE_V4),
        ip(LOCAL_V4),
        IPPROTO_TCP,
        &tcp_segment(40000, 80, tcp::SYN),
    );
    assert_eq!(
        verdict(&dataplane, &tcp80),
        Verdict::Drop,
        "without scopes every port is checked"
    );
}

#[test]
fn a_full_flow_map_pushes_out_the_oldest_flows_and_counts_them() {
    let mut dataplane = Dataplane::load(1024, 16).expect("load");
    dataplane
        .apply(&allowlist_tests::policy(POLICY))
        .expect("policy");
    dataplane.set_mode(Mode::Enforce).expect("mode");
    let (local, remote) = (ip(LOCAL_V4), ip(REMOTE_V4));
    for port in 0..64u16 {
        send(
            &dataplane,
            &ip_frame(local, remote, IPPROTO_UDP, &udp(41000 + port, 53)),
        );
    }
    let flows = dataplane.readings().flow_stats().expect("flows");
    assert_eq!(flows.recorded, 64);
    assert!(flows.live <= 16, "{flows:?}");
    assert!(flows.evicted >= 48, "{flows:?}");
    let reply = |port: u16| ip_frame(remote, local, IPPROTO_UDP, &udp(53, 41000 + port));
    assert_eq!(
        verdict(&dataplane, &reply(0)),
        Verdict::Drop,
        "the oldest flow was pushed out"
    );
    assert_eq!(
        verdict(&dataplane, &reply(63)),
        Verdict::Pass,
        "the newest flow is there"
    );
}

#[test]
fn the_flow_filter_renewed_keeps_live_flows_and_forgets_idle_ones() {
    let mut dataplane = loaded(POLICY, Mode::Enforce);
    dataplane
        .set_replies(Replies {
            udp_timeout: Duration::from_millis(300),
            ..Replies::default()
        })
        .expect("replies");
    let (local, remote, _) = families()[0];
    let reply = |port| ip_frame(remote, local, IPPROTO_UDP, &udp(53, port));
    send(
        &dataplane,
        &ip_frame(local, remote, IPPROTO_UDP, &udp(40000, 53)),
    );
    // Each renewal switches the check to the other filter: both must know the flow.
    for renewal in 0..3 {
        assert_eq!(dataplane.renew_flow_filter().expect("renewal"), 1);
        assert_eq!(
            verdict(&dataplane, &reply(40000)),
            Verdict::Pass,
            "after renewal {renewal}"
        );
    }
    std::thread::sleep(Duration::from_millis(400));
    assert_eq!(
        dataplane.renew_flow_filter().expect("renewal"),
        0,
        "an idle flow is left out"
    );
    send(
        &dataplane,
        &ip_frame(local, remote, IPPROTO_UDP, &udp(40001, 53)),
    );
    assert_eq!(
        verdict(&dataplane, &reply(40001)),
        Verdict::Pass,
        "a flow started after the renewal"
    );
    assert_eq!(verdict(&dataplane, &reply(40000)), Verdict::Drop);
    assert_eq!(dataplane.renew_flow_filter().expect("renewal"), 1);
    assert_eq!(verdict(&dataplane, &reply(40001)), Verdict::Pass);
}

#[test]
fn a_preview_counts_no_icmp_error_about_a_flow_the_host_started() {
    // The routers are allowed today; the candidate, the same policy without them, would
    // drop their packets but not their errors about a flow the host started: those pass
    // under any policy.
    let today: Vec<&str> = POLICY
        .iter()
        .copied()
        .chain([ROUTER_V4, ROUTER_V6])
        .collect();
    let mut dataplane = loaded(&today, Mode::Enforce);
    let candidate = Enforcement {
        policy: allowlist_tests::policy(POLICY),
        mode: Mode::Enforce,
        ..Enforcement::default()
    };
    dataplane
        .start_preview(&candidate, Duration::from_secs(60))
        .expect("a preview");
    for (local, remote, router) in families() {
        let outgoing = start_flow(&dataplane, local, remote);
        let (too_big, time_exceeded) = if local.is_ipv4() { (3, 11) } else { (2, 3) };
        for icmp_type in [too_big, time_exceeded] {
            let error = ip_frame(
                router,
                local,
                icmp_protocol(local),
                &icmp_error(icmp_type, &outgoing),
            );
            assert_eq!(verdict(&dataplane, &error), Verdict::Pass);
        }
    }
    let sources = dataplane.readings().preview_sources().expect("the report");
    assert!(sources.is_empty(), "counted: {sources:?}");
    // The routers' other packets are counted: the candidate would drop them.
    for (local, _, router) in families() {
        let probe = ip_frame(router, local, IPPROTO_UDP, &udp(53, 40000));
        assert_eq!(verdict(&dataplane, &probe), Verdict::Pass);
    }
    let counted: Vec<IpAddr> = dataplane
        .readings()
        .preview_sources()
        .expect("the report")
        .iter()
        .map(|source| source.address)
        .collect();
    assert_eq!(counted.len(), 2, "{counted:?}");
    assert!(counted.contains(&ip(ROUTER_V4)) && counted.contains(&ip(ROUTER_V6)));
}
