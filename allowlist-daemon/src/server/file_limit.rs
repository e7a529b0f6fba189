//! The open-file limit the connection limit needs.

use nix::sys::resource::{Resource, getrlimit, setrlimit};

use super::ServerError;

/// Files the daemon keeps open besides API connections: maps, links, state files, etcd.
const FILES_OF_THE_DAEMON: u64 = 128;

/// Makes sure the process may open a file for each of `max_connections` besides its own:
/// raises the soft limit up to the hard one when needed (as systemd advises services to),
/// and refuses a connection limit the hard limit cannot hold, instead of failing to accept
/// once it is reached. Returns the soft limit in force.
pub(super) fn ensure_file_limit(max_connections: usize) -> Result<u64, ServerError> {
    let needed = max_connections as u64 + FILES_OF_THE_DAEMON;
    let (soft, hard) = getrlimit(Resource::RLIMIT_NOFILE).map_err(ServerError::Limit)?;
    if soft >= needed {
        return Ok(soft);
    }
    if hard < needed {
        return Err(ServerError::FileLimit {
            connections: max_connections,
            needed,
            limit: hard,
        });
    }
    setrlimit(Resource::RLIMIT_NOFILE, needed, hard).map_err(ServerError::Limit)?;
    Ok(needed)
}
