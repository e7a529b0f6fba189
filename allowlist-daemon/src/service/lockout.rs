//! The addresses the lockout guard keeps reachable when the host starts enforcing, and how
//! each was found: what the operator's client says, the API connection's own peer, and the
//! sessions the host itself sees to its protected ports (which `sudo` cannot strip).

use std::net::IpAddr;

use serde::Serialize;

use super::{Service, ServiceError};
use crate::host;

/// Who asks for a change, as far as the daemon can tell.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Operator {
    /// The address the client says its operator connects from (`client_ip`).
    pub client_ip: Option<IpAddr>,
    /// The remote address of the API connection itself (a TCP peer beyond loopback).
    pub peer_ip: Option<IpAddr>,
}

/// An address the lockout guard checked, and where it was found.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct GuardedAddress {
    /// The address.
    pub address: IpAddr,
    /// Where it was found: `client_ip`, `api_peer`, or `session to port 22`.
    pub found: String,
}

impl Service {
    /// The addresses the lockout guard protects when the host starts enforcing: the
    /// operator's, and the sources of established sessions to the protected ports. None once
    /// the host enforces (the acknowledgement window guards changes then), or with `force`.
    pub(super) fn guarded(
        &self,
        operator: Operator,
        force: bool,
    ) -> Result<Vec<GuardedAddress>, ServiceError> {
        if self.model.enforcing() || force {
            return Ok(Vec::new());
        }
        let mut guarded: Vec<GuardedAddress> = operator
            .client_ip
            .map(|address| GuardedAddress {
                address,
                found: "client_ip".into(),
            })
            .into_iter()
            .chain(operator.peer_ip.map(|address| GuardedAddress {
                address,
                found: "api_peer".into(),
            }))
            .collect();
        let sessions =
            host::established_sessions(&self.protect_ports).map_err(ServiceError::Host)?;
        for session in sessions {
            if !guarded.iter().any(|known| known.address == session.source) {
                guarded.push(GuardedAddress {
                    address: session.source,
                    found: format!("session to port {}", session.port),
                });
            }
        }
        Ok(guarded)
    }
}

/// The bare addresses of `guarded`, as the model checks them.
pub(super) fn addresses(guarded: &[GuardedAddress]) -> Vec<IpAddr> {
    guarded.iter().map(|guarded| guarded.address).collect()
}
