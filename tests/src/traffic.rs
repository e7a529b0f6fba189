//! Real traffic between the test namespaces: UDP, TCP and ICMP probes that report whether
//! they got through.

use std::net::{IpAddr, SocketAddr, UdpSocket};
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use anyhow::Context as _;
use socket2::{Domain, Protocol, Socket, Type};

use crate::netns::{NetNs, SERVER_V4, SERVER_V6, TestLink};

/// How long a probe waits before it calls a packet dropped.
pub const PROBE_TIMEOUT: Duration = Duration::from_millis(1000);

/// How long a TCP probe waits for the handshake: room for two SYN retransmissions (after 1 s
/// and 3 s). On veth pairs between namespaces the first IPv6 handshake from a client's second
/// address loses its first exchange, with or without any XDP program attached.
pub const TCP_PROBE_TIMEOUT: Duration = Duration::from_millis(3500);

fn bound_socket(
    ns: &NetNs,
    kind: Type,
    protocol: Protocol,
    addr: SocketAddr,
) -> anyhow::Result<Socket> {
    ns.enter(|| -> anyhow::Result<Socket> {
        let socket = Socket::new(Domain::for_address(addr), kind, Some(protocol))?;
        socket.set_reuse_address(true)?;
        socket.bind(&addr.into())?;
        Ok(socket)
    })?
    .with_context(|| format!("binding {addr} in {}", ns.name()))
}

/// A UDP socket bound in the server namespace.
pub fn udp_server(link: &TestLink, addr: IpAddr) -> anyhow::Result<UdpSocket> {
    let socket = bound_socket(
        &link.server,
        Type::DGRAM,
        Protocol::UDP,
        SocketAddr::new(addr, 0),
    )?;
    // Beyond net.core.rmem_max (root may): a receiver starved of CPU for a while on these
    // 2-core machines must not lose what the firewall let through.
    nix::sys::socket::setsockopt(&socket, nix::sys::socket::sockopt::RcvBufForce, &(8 << 20))
        .context("SO_RCVBUFFORCE")?;
    Ok(socket.into())
}

/// A UDP socket bound to `source` in the client namespace.
pub fn udp_client(link: &TestLink, source: IpAddr) -> anyhow::Result<UdpSocket> {
    Ok(bound_socket(
        &link.client,
        Type::DGRAM,
        Protocol::UDP,
        SocketAddr::new(source, 0),
    )?
    .into())
}

/// Whether a datagram from `source` reaches the server's address of the same family; for
/// tests, which fail (panic) when the probe itself cannot run.
pub fn passes(link: &TestLink, source: impl Into<IpAddr>) -> bool {
    let source = source.into();
    let server: IpAddr = if source.is_ipv4() {
        SERVER_V4.into()
    } else {
        SERVER_V6.into()
    };
    udp_gets_through(link, source, server).expect("udp probe")
}

/// Sends one datagram from `source` to the server's `server` address and says whether it
/// arrived.
pub fn udp_gets_through(link: &TestLink, source: IpAddr, server: IpAddr) -> anyhow::Result<bool> {
    let receiver = udp_server(link, server)?;
    let sender = udp_client(link, source)?;
    let token = format!("probe from {source}");
    sender.send_to(token.as_bytes(), receiver.local_addr()?)?;
    receiver.set_read_timeout(Some(PROBE_TIMEOUT))?;
    let mut buf = [0u8; 128];
    loop {
        match receiver.recv_from(&mut buf) {
            Ok((len, from)) if from.ip() == source && &buf[..len] == token.as_bytes() => {
                return Ok(true);
            }
            Ok(_) => continue,
            Err(err)
                if matches!(
                    err.kind(),
                    std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                ) =>
            {
                return Ok(false);
            }
            Err(err) => return Err(err.into()),
        }
    }
}

/// Opens a TCP connection from `source` to a listener on the server's `server` address and
/// says whether the handshake completed.
pub fn tcp_connects(link: &TestLink, source: IpAddr, server: IpAddr) -> anyhow::Result<bool> {
    let listener = bound_socket(
        &link.server,
        Type::STREAM,
        Protocol::TCP,
        SocketAddr::new(server, 0),
    )?;
    listener.listen(16)?;
    let target = listener
        .local_addr()?
        .as_socket()
        .context("listener address")?;
    let client = bound_socket(
        &link.client,
        Type::STREAM,
        Protocol::TCP,
        SocketAddr::new(source, 0),
    )?;
    Ok(client
        .connect_timeout(&target.into(), TCP_PROBE_TIMEOUT)
        .is_ok())
}

/// Pings the server's `server` address once from `source` and says whether it answered.
pub fn ping_answers(link: &TestLink, source: IpAddr, server: IpAddr) -> anyhow::Result<bool> {
    let status = link
        .client
        .command(&[
            "ping",
            "-n",
            "-q",
            "-c",
            "1",
            "-W",
            "1",
            "-I",
            &source.to_string(),
            &server.to_string(),
        ])
        .output()
        .context("running ping")?
        .status;
    Ok(status.success())
}

/// A UDP stream from one source that counts what arrives, for checking that a change made
/// while traffic flows loses nothing.
pub struct UdpStream {
    sent: u64,
    received: u64,
    outlasted: bool,
}

impl UdpStream {
    /// Sends `count` numbered datagrams from `source` to the server while `during` runs on
    /// this thread, then waits for the stragglers.
    pub fn run(
        link: &TestLink,
        source: IpAddr,
        server: IpAddr,
        count: u64,
        during: impl FnOnce() -> anyhow::Result<()>,
    ) -> anyhow::Result<UdpStream> {
        let receiver = udp_server(link, server)?;
        receiver.set_read_timeout(Some(Duration::from_millis(50)))?;
        let target = receiver.local_addr()?;
        let sender = udp_client(link, source)?;
        let done_sending = AtomicBool::new(false);
        std::thread::scope(|scope| -> anyhow::Result<UdpStream> {
            let receiving = scope.spawn(|| -> anyhow::Result<u64> {
                let mut received = 0;
                let mut buf = [0u8; 64];
                let mut quiet_since = None;
                loop {
                    match receiver.recv_from(&mut buf) {
                        Ok((_, from)) if from.ip() == source => {
                            received += 1;
                            quiet_since = None;
                        }
                        Ok(_) => {}
                        Err(_) if done_sending.load(Ordering::Acquire) => {
                            let since = *quiet_since.get_or_insert_with(Instant::now);
                            if since.elapsed() > Duration::from_millis(500) {
                                return Ok(received);
                            }
                        }
                        Err(_) => {}
                    }
                }
            });
            let sending = scope.spawn(|| -> anyhow::Result<u64> {
                for seq in 0..count {
                    sender.send_to(&seq.to_be_bytes(), target)?;
                    if seq % 16 == 0 {
                        std::thread::sleep(Duration::from_micros(200));
                    }
                }
                Ok(count)
            });
            let outcome = during();
            let outlasted = !sending.is_finished();
            let sent = sending
                .join()
                .unwrap_or_else(|p| std::panic::resume_unwind(p));
            done_sending.store(true, Ordering::Release);
            let received = receiving
                .join()
                .unwrap_or_else(|p| std::panic::resume_unwind(p));
            outcome?;
            Ok(UdpStream {
                sent: sent?,
                received: received?,
                outlasted,
            })
        })
    }

    /// Datagrams sent.
    pub fn sent(&self) -> u64 {
        self.sent
    }

    /// Datagrams received.
    pub fn received(&self) -> u64 {
        self.received
    }

    /// Whether the stream was still being sent when the change made during it was done: the
    /// whole change happened under traffic.
    pub fn outlasted(&self) -> bool {
        self.outlasted
    }
}

/// One socket per client source and one receiver per family on the server, kept open to ask
/// many times which of the sources get through.
pub struct Probes {
    senders: Vec<(IpAddr, UdpSocket)>,
    receivers: Vec<UdpSocket>,
    round: u64,
}

impl Probes {
    /// Sockets for `sources` (addresses of the client) and the server's receivers.
    pub fn new(link: &TestLink, sources: &[IpAddr]) -> anyhow::Result<Probes> {
        let receivers = [IpAddr::V4(SERVER_V4), IpAddr::V6(SERVER_V6)]
            .into_iter()
            .map(|server| {
                let socket = udp_server(link, server)?;
                socket.set_nonblocking(true)?;
                Ok(socket)
            })
            .collect::<anyhow::Result<_>>()?;
        let senders = sources
            .iter()
            .map(|source| Ok((*source, udp_client(link, *source)?)))
            .collect::<anyhow::Result<_>>()?;
        Ok(Probes {
            senders,
            receivers,
            round: 0,
        })
    }

    /// The sources whose datagram reaches the server: each sends one, and what arrives
    /// within `wait` counts. A datagram of an earlier round is ignored.
    pub fn passing(
        &mut self,
        wait: Duration,
    ) -> anyhow::Result<std::collections::BTreeSet<IpAddr>> {
        self.round += 1;
        let token = self.round.to_be_bytes();
        for (source, socket) in &self.senders {
            let receiver = &self.receivers[usize::from(source.is_ipv6())];
            socket
                .send_to(&token, receiver.local_addr()?)
                .with_context(|| format!("sending from {source}"))?;
        }
        let mut arrived = std::collections::BTreeSet::new();
        let deadline = Instant::now() + wait;
        let mut buf = [0u8; 16];
        while Instant::now() < deadline && arrived.len() < self.senders.len() {
            let mut idle = true;
            for receiver in &self.receivers {
                while let Ok((len, from)) = receiver.recv_from(&mut buf) {
                    idle = false;
                    if buf[..len] == token {
                        arrived.insert(from.ip());
                    }
                }
            }
            if idle {
                std::thread::sleep(Duration::from_millis(2));
            }
        }
        Ok(arrived)
    }
}

/// An established TCP session from `source` (a client address) to the server's IPv4
/// address on `port`, as the lockout guard sees one: both ends stay open until dropped.
pub struct TcpSession {
    _client: Socket,
    _server: std::net::TcpStream,
}

impl TcpSession {
    /// Opens the session.
    pub fn open(link: &TestLink, source: IpAddr, port: u16) -> anyhow::Result<TcpSession> {
        let listener = link
            .server
            .enter(|| std::net::TcpListener::bind((SERVER_V4, port)))??;
        let server = SocketAddr::from((SERVER_V4, port));
        let client = bound_socket(
            &link.client,
            Type::STREAM,
            Protocol::TCP,
            SocketAddr::new(source, 0),
        )?;
        client
            .connect_timeout(&server.into(), TCP_PROBE_TIMEOUT)
            .with_context(|| format!("connecting from {source} to {server}"))?;
        let (accepted, _) = listener.accept().context("accepting the session")?;
        Ok(TcpSession {
            _client: client,
            _server: accepted,
        })
    }
}
