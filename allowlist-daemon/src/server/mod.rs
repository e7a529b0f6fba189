//! Serving the admin API: where it listens (TCP, TLS, a unix socket), who each client is (for
//! the audit log and the lockout guard), and the limits that keep slow or many clients from
//! holding it (header and body timeouts, a connection limit that sheds the connections
//! that waited longest for a request, a stop bounded in time).

mod address;
mod error;
mod file_limit;
mod listener;
mod peer;
mod serve;
mod settings;
mod shedding;
mod tls;

pub use address::ListenAddress;
pub use error::ServerError;
pub use peer::Peer;
pub use serve::{SHUTDOWN_GRACE, Server};
pub use settings::ServerSettings;
pub use tls::TlsFiles;
