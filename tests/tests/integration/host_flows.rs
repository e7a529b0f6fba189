//! The host keeps working while it enforces: replies to connections it opens pass, with real
//! packets between namespaces, in native and skb mode; scopes limit what is guarded.

use std::collections::BTreeSet;
use std::io::{Read as _, Write as _};
use std::net::{IpAddr, Ipv6Addr, SocketAddr, TcpListener, TcpStream, UdpSocket};
use std::time::Duration;

use allowlist_common::{Counter, Mode};
use allowlist_daemon::dataplane::{AttachMode, Dataplane, Replies};
use allowlist_daemon::policy::PortScope;
use allowlist_tests::frames::{IPPROTO_TCP, ipv6, tcp, tcp_segment};
use allowlist_tests::netns::*;
use allowlist_tests::traffic::{TCP_PROBE_TIMEOUT, tcp_connects, udp_gets_through};
use allowlist_tests::{counter, loaded};
use socket2::{Domain, Protocol, Socket, Type};

const POLICY: &[&str] = &["198.18.0.2", "fd00:a11::2"];

/// Loads the program allowing only the client's allowed addresses, UDP replies idling out
/// after 1 s, and attaches it (XDP and the egress recorder) to the server side.
fn guard(link: &TestLink, xdp_mode: AttachMode) -> Dataplane {
    let mut dataplane = loaded(POLICY, Mode::Enforce);
    dataplane
        .set_replies(Replies {
            udp_timeout: Duration::from_secs(1),
            ..Replies::default()
        })
        .expect("replies");
    link.server
        .enter(|| dataplane.attach(SERVER_IF, xdp_mode))
        .expect("enter")
        .expect("attach");
    dataplane
}

/// The server opens a TCP connection to a listener on `remote` (a client address) and
/// exchanges a line with it.
fn server_connects_to(link: &TestLink, remote: IpAddr, server: IpAddr) -> bool {
    let listener = link
        .client
        .enter(|| TcpListener::bind((remote, 0)))
        .expect("enter")
        .expect("listen");
    let target = listener.local_addr().expect("address");
    let echo = std::thread::spawn(move || -> std::io::Result<()> {
        let (mut stream, _) = listener.accept()?;
        let mut line = [0u8; 5];
        stream.read_exact(&mut line)?;
        stream.write_all(&line)
    });
    let exchanged = link
        .server
        .enter(|| -> std::io::Result<()> {
            let socket = Socket::new(
                Domain::for_address(target),
                Type::STREAM,
                Some(Protocol::TCP),
            )?;
            socket.bind(&SocketAddr::new(server, 0).into())?;
            socket.connect_timeout(&target.into(), TCP_PROBE_TIMEOUT)?;
            let mut stream: TcpStream = socket.into();
            stream.set_read_timeout(Some(Duration::from_secs(2)))?;
            stream.write_all(b"hello")?;
            let mut reply = [0u8; 5];
            stream.read_exact(&mut reply)?;
            Ok(())
        })
        .expect("enter");
    if exchanged.is_ok() {
        echo.join().expect("echo thread").expect("echo");
    }
    exchanged.is_ok()
}

/// The server sends a UDP datagram to `remote` (a client address) and waits for the answer.
/// Returns the two sockets for further unsolicited datagrams.
fn server_queries(link: &TestLink, remote: IpAddr, server: IpAddr) -> (bool, UdpSocket, UdpSocket) {
    let responder = link
        .client
        .enter(|| UdpSocket::bind((remote, 0)))
        .expect("enter")
        .expect("bind");
    let asker = link
        .server
        .enter(|| UdpSocket::bind((server, 0)))
        .expect("enter")
        .expect("bind");
    asker
        .set_read_timeout(Some(Duration::from_millis(1000)))
        .expect("timeout");
    responder
        .set_read_timeout(Some(Duration::from_millis(1000)))
        .expect("timeout");
    asker
        .send_to(b"query", responder.local_addr().expect("address"))
        .expect("send");
    let mut buf = [0u8; 16];
    let (_, from) = responder
        .recv_from(&mut buf)
        .expect("the query reaches the client");
    responder.send_to(b"answer", from).expect("answer");
    let answered = asker.recv_from(&mut buf).is_ok();
    (answered, asker, responder)
}

fn replies_pass_for_connections_the_host_opens(xdp_mode: AttachMode) {
    let link = TestLink::create().expect("test link");
    let dataplane = guard(&link, xdp_mode);
    for (_, denied, server) in PROBES {
        assert!(
            !tcp_connects(&link, denied, server).expect("tcp"),
            "{denied} cannot open a connection to the server"
        );
        assert!(
            server_connects_to(&link, denied, server),
            "{xdp_mode:?}: the server's TCP connection to {denied} gets replies"
        );

        let (answered, asker, responder) = server_queries(&link, denied, server);
        assert!(
            answered,
            "{xdp_mode:?}: the server's UDP query to {denied} is answered"
        );
        // Unsolicited datagrams on the same ports pass while the flow is fresh, not after.
        std::thread::sleep(Duration::from_millis(1500));
        responder
            .send_to(b"late", asker.local_addr().expect("address"))
            .expect("send");
        let mut buf = [0u8; 16];
        assert!(
            asker.recv_from(&mut buf).is_err(),
            "{xdp_mode:?}: dropped after the UDP idle timeout"
        );
    }
    assert!(
        counter(&dataplane, Counter::PassedReply) >= 4,
        "{}",
        dataplane.readings().counters().expect("counters")
    );
    assert!(dataplane.readings().flow_stats().expect("flows").recorded >= 4);
}

#[test]
fn native_mode_passes_replies_to_connections_the_host_opens() {
    replies_pass_for_connections_the_host_opens(AttachMode::Native);
}

#[test]
fn skb_mode_passes_replies_to_connections_the_host_opens() {
    replies_pass_for_connections_the_host_opens(AttachMode::Skb);
}

/// An ICMPv6 packet-too-big from `source` to the server quoting a TCP segment the server sent
/// from `local_port` to `remote:remote_port`.
fn packet_too_big(
    link: &TestLink,
    source: Ipv6Addr,
    remote: Ipv6Addr,
    local_port: u16,
    remote_port: u16,
) {
    let quoted = ipv6(
        SERVER_V6,
        remote,
        IPPROTO_TCP,
        64,
        &tcp_segment(local_port, remote_port, tcp::ACK),
    );
    let mut message = vec![2, 0, 0, 0, 0, 0, 0x05, 0x00];
    message.extend_from_slice(&quoted);
    link.client
        .enter(|| -> std::io::Result<()> {
            let socket = Socket::new(Domain::IPV6, Type::RAW, Some(Protocol::ICMPV6))?;
            socket.bind(&SocketAddr::new(source.into(), 0).into())?;
            socket.send_to(&message, &SocketAddr::new(SERVER_V6.into(), 0).into())?;
            Ok(())
        })
        .expect("enter")
        .expect("send packet too big");
}

#[test]
fn a_packet_too_big_about_a_flow_the_host_opened_passes() {
    for xdp_mode in [AttachMode::Native, AttachMode::Skb] {
        let link = TestLink::create().expect("test link");
        let dataplane = guard(&link, xdp_mode);
        let listener = link
            .client
            .enter(|| TcpListener::bind((CLIENT_DENIED_V6, 0)))
            .expect("enter")
            .expect("listen");
        let remote_port = listener.local_addr().expect("address").port();
        let stream = link
            .server
            .enter(|| {
                TcpStream::connect_timeout(
                    &SocketAddr::new(CLIENT_DENIED_V6.into(), remote_port),
                    TCP_PROBE_TIMEOUT,
                )
            })
            .expect("enter")
            .expect("the server connects to the denied address");
        let local_port = stream.local_addr().expect("address").port();

        // About no flow: dropped, not passed as a reply.
        let (replies, dropped) = (
            counter(&dataplane, Counter::PassedReply),
            counter(&dataplane, Counter::Dropped),
        );
        packet_too_big(
            &link,
            CLIENT_DENIED_V6,
            CLIENT_DENIED_V6,
            local_port,
            remote_port.wrapping_add(1),
        );
        std::thread::sleep(Duration::from_millis(200));
        assert_eq!(
            counter(&dataplane, Counter::PassedReply),
            replies,
            "{xdp_mode:?}: the one about no flow does not pass"
        );
        assert!(
            counter(&dataplane, Counter::Dropped) > dropped,
            "{xdp_mode:?}: the one about no flow drops"
        );
        // About the flow: passed as a reply.
        packet_too_big(
            &link,
            CLIENT_DENIED_V6,
            CLIENT_DENIED_V6,
            local_port,
            remote_port,
        );
        std::thread::sleep(Duration::from_millis(200));
        assert_eq!(
            counter(&dataplane, Counter::PassedReply),
            replies + 1,
            "{xdp_mode:?}: the one about the flow passes"
        );
        drop(stream);
    }
}

#[test]
fn with_scopes_a_denied_source_reaches_unprotected_ports_only() {
    for xdp_mode in [AttachMode::Native, AttachMode::Skb] {
        let link = TestLink::create().expect("test link");
        let mut dataplane = guard(&link, xdp_mode);
        let scopes: BTreeSet<PortScope> = BTreeSet::from(["tcp/22".parse().expect("scope")]);
        dataplane.set_scopes(&scopes).expect("scopes");
        let listen = |port: u16| {
            link.server
                .enter(|| TcpListener::bind((SERVER_V4, port)))
                .expect("enter")
                .expect("listen")
        };
        let (_ssh, _web) = (listen(22), listen(80));
        let reaches = |port: u16| {
            link.client
                .enter(|| -> std::io::Result<()> {
                    let socket = Socket::new(Domain::IPV4, Type::STREAM, Some(Protocol::TCP))?;
                    socket.bind(&SocketAddr::new(CLIENT_DENIED_V4.into(), 0).into())?;
                    socket.connect_timeout(
                        &SocketAddr::new(SERVER_V4.into(), port).into(),
                        TCP_PROBE_TIMEOUT,
                    )
                })
                .expect("enter")
                .is_ok()
        };
        assert!(reaches(80), "{xdp_mode:?}: tcp/80 is outside the scope");
        assert!(!reaches(22), "{xdp_mode:?}: tcp/22 is guarded");
        assert!(
            udp_gets_through(&link, CLIENT_DENIED_V4.into(), SERVER_V4.into()).expect("udp"),
            "UDP is outside the scope"
        );
        assert!(counter(&dataplane, Counter::PassedUnprotected) >= 2);
    }
}
