//! Who is at the other end of an admin API connection.

use std::fmt;
use std::net::{IpAddr, SocketAddr};

/// The client of an API connection, as the kernel reports it: the TCP peer address, or for a
/// unix socket the credentials of the process that connected (`SO_PEERCRED`). Handlers find
/// it in the request's extensions.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Peer {
    /// A TCP client.
    Tcp(SocketAddr),
    /// A process on this host, connected through the unix socket.
    Unix {
        /// Its user id.
        uid: u32,
        /// Its process id, when the kernel gives one.
        pid: Option<i32>,
    },
}

impl Peer {
    /// Who the peer is, without its TCP port: what refusals are counted against.
    pub fn origin(&self) -> String {
        match self {
            Peer::Tcp(address) => address.ip().to_canonical().to_string(),
            Peer::Unix { uid, .. } => format!("uid {uid}"),
        }
    }

    /// The address a remote operator connects from: a TCP peer that is not on loopback.
    /// Blocking it would cut that operator off.
    pub fn remote_ip(&self) -> Option<IpAddr> {
        match self {
            Peer::Tcp(address) if !address.ip().is_loopback() => Some(address.ip().to_canonical()),
            _ => None,
        }
    }
}

impl fmt::Display for Peer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Peer::Tcp(address) => write!(f, "{address}"),
            Peer::Unix {
                uid,
                pid: Some(pid),
            } => write!(f, "uid {uid} (pid {pid})"),
            Peer::Unix { uid, pid: None } => write!(f, "uid {uid}"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_peer_prints_as_the_audit_log_names_it() {
        let tcp = Peer::Tcp("192.0.2.7:40000".parse().expect("literal"));
        assert_eq!(tcp.to_string(), "192.0.2.7:40000");
        let unix = Peer::Unix {
            uid: 0,
            pid: Some(42),
        };
        assert_eq!(unix.to_string(), "uid 0 (pid 42)");
    }

    #[test]
    fn only_a_remote_tcp_peer_has_an_address_to_guard() {
        let remote = Peer::Tcp("[::ffff:192.0.2.7]:40000".parse().expect("literal"));
        assert_eq!(
            remote.remote_ip(),
            Some("192.0.2.7".parse().expect("literal"))
        );
        let local = Peer::Tcp("127.0.0.1:40000".parse().expect("literal"));
        assert_eq!(local.remote_ip(), None);
        assert_eq!(Peer::Unix { uid: 0, pid: None }.remote_ip(), None);
    }
}
