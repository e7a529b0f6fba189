//! Why the admin API cannot be served.

use std::path::PathBuf;

use super::ListenAddress;

/// Why the admin API cannot be served as configured.
#[derive(Debug, thiserror::Error)]
pub enum ServerError {
    /// Binding the address failed.
    #[error("listening on {address}")]
    Bind {
        /// The address.
        address: ListenAddress,
        /// What failed.
        #[source]
        source: std::io::Error,
    },
    /// Another process answers on the unix socket.
    #[error(
        "another process serves {}: is another allowlistd running? stop it, or give another \
         --listen",
        .0.display()
    )]
    SocketInUse(PathBuf),
    /// The socket's path holds something other than a socket.
    #[error("{} exists and is no socket; remove it or give another --listen", .0.display())]
    NotASocket(PathBuf),
    /// Preparing the unix socket's file failed.
    #[error("{action} {}", path.display())]
    Socket {
        /// What was being done.
        action: &'static str,
        /// The socket's path.
        path: PathBuf,
        /// What failed.
        #[source]
        source: std::io::Error,
    },
    /// The group named by --socket-group does not exist.
    #[error("--socket-group {0}: no such group")]
    UnknownGroup(String),
    /// A certificate or key file cannot be read or holds no PEM of its kind.
    #[error("reading the TLS {what} from {}", path.display())]
    TlsFile {
        /// `certificate` or `key`.
        what: &'static str,
        /// The file.
        path: PathBuf,
        /// What failed.
        #[source]
        source: rustls::pki_types::pem::Error,
    },
    /// Every user may read the TLS key, or its group may change it.
    #[error(
        "the TLS key {} can be read by other users or changed by its group (mode {mode:04o}); \
         run `chmod 600 {}` (or 640 for a group that may read it)",
        path.display(),
        path.display()
    )]
    TlsKeyExposed {
        /// The key file.
        path: PathBuf,
        /// Its permission bits.
        mode: u32,
    },
    /// The certificate and key do not make a TLS configuration.
    #[error("the TLS certificate and key")]
    Tls(#[source] rustls::Error),
    /// The process may not open enough files for --max-connections.
    #[error(
        "--max-connections {connections} needs {needed} open files, and the limit is {limit} \
         (LimitNOFILE= in the unit, `ulimit -n`): raise the limit or lower --max-connections"
    )]
    FileLimit {
        /// The configured connection limit.
        connections: usize,
        /// The files it needs, with the daemon's own.
        needed: u64,
        /// The hard limit.
        limit: u64,
    },
    /// The file limit cannot be read or raised.
    #[error("reading or raising the open-file limit")]
    Limit(#[source] nix::Error),
}
