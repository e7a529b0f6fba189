//! How the admin API is served.

use std::time::Duration;

use super::{ListenAddress, TlsFiles};

/// How the admin API is served: where, with what TLS, and the limits that keep slow or many
/// clients from holding it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServerSettings {
    /// Where it listens.
    pub listen: ListenAddress,
    /// TLS, for an address beyond loopback.
    pub tls: Option<TlsFiles>,
    /// The group that may use the unix socket besides its owner.
    pub socket_group: Option<String>,
    /// Connections open at once; at the limit, the one that waited longest for a request is
    /// closed for a newcomer (idle kept-alive ones first).
    pub max_connections: usize,
    /// Time a connection has to send a request's headers (and, with TLS, its handshake),
    /// also between requests on a kept-alive connection.
    pub header_timeout: Duration,
    /// Time a request has to send its body once its headers are in.
    pub body_timeout: Duration,
}
