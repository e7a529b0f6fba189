//! What the follower shows of itself: `GET /v1/fleet` and the fleet's metrics.

use serde::Serialize;

use super::config::FleetConfig;
use super::status::FleetState;

/// The follower's state, for `GET /v1/fleet` and the metrics.
#[derive(Debug, Clone, Serialize)]
pub struct FleetView {
    /// The fleet followed.
    pub fleet: String,
    /// This host's name in it.
    pub host: String,
    /// Whether etcd answers.
    pub connected: bool,
    /// Where the host stands with the current release.
    pub state: FleetState,
    /// The fleet's current release, as last seen.
    pub release: Option<String>,
    /// The release acknowledged on this host.
    pub applied: Option<String>,
    /// Why it failed, reverted or waits.
    pub reason: Option<String>,
    /// When a pending release reverts unless acknowledged (RFC 3339).
    pub revert_at: Option<String>,
    /// When the host last heard from etcd (RFC 3339).
    pub last_sync: Option<String>,
    /// The last error talking to etcd.
    pub last_error: Option<String>,
}

impl FleetView {
    /// The view before the first connection.
    pub fn new(config: &FleetConfig) -> FleetView {
        FleetView {
            fleet: config.fleet.clone(),
            host: config.host.clone(),
            connected: false,
            state: FleetState::Waiting,
            release: None,
            applied: None,
            reason: Some("connecting to etcd".into()),
            revert_at: None,
            last_sync: None,
            last_error: None,
        }
    }
}
