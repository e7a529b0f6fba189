//! What a host says of itself under its lease, and what `GET /v1/fleet` shows.

use serde::{Deserialize, Serialize};

/// Where a host stands with the fleet's current release.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum FleetState {
    /// Not connected yet, or no release published.
    Waiting,
    /// Applying a release.
    Applying,
    /// The release is in force and waits for the fleet's acknowledgement.
    Pending,
    /// The release is in force, acknowledged.
    Acknowledged,
    /// Nobody acknowledged the release in time: the host went back to its previous policy.
    Reverted,
    /// The host could not apply the release and stays on its previous policy.
    Failed,
    /// The operator detached the host from the fleet.
    Detached,
}

/// A host's status in the fleet.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct HostStatus {
    /// The host's name.
    pub host: String,
    /// Where it stands.
    pub state: FleetState,
    /// The release the state is about (the fleet's current one).
    pub release: Option<String>,
    /// The release whose lists it enforces, acknowledged.
    pub applied: Option<String>,
    /// Why it failed, reverted or waits.
    pub reason: Option<String>,
    /// When a pending release reverts unless acknowledged (RFC 3339).
    pub revert_at: Option<String>,
    /// When this status was written (RFC 3339): when it changed, else at most a minute ago
    /// while the host is connected.
    pub updated_at: String,
}
