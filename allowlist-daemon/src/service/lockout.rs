//! The addresses the lockout guard keeps reachable, and how each was found: what the
//! operator's client says, the API connection's own peer, the remote operators who made
//! changes lately, and the sessions the host itself sees to its protected ports (which
//! `sudo` cannot strip). An enable that starts enforcing is judged against them, and so is
//! every change no person acknowledges (a feed's read, a fleet release).

use std::net::IpAddr;
use std::time::{Duration, Instant};

use super::{Service, ServiceError};
use crate::host;
use crate::model::GuardedAddress;

/// How long a remote operator who made a change stays guarded.
const OPERATOR_MEMORY: Duration = Duration::from_secs(3600);
/// The most remote operators remembered (the latest).
const OPERATORS_KEPT: usize = 16;

/// Who asks for a change, as far as the daemon can tell.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Operator {
    /// The address the client says its operator connects from (`client_ip`).
    pub client_ip: Option<IpAddr>,
    /// The remote address of the API connection itself (a TCP peer beyond loopback).
    pub peer_ip: Option<IpAddr>,
}

/// The remote addresses changes came from lately, newest last.
#[derive(Debug, Default)]
pub(super) struct RecentOperators(Vec<(IpAddr, Instant)>);

impl RecentOperators {
    /// Notes a change from `address` now.
    pub(super) fn note(&mut self, address: IpAddr) {
        self.0.retain(|(known, _)| *known != address);
        self.0.push((address, Instant::now()));
        if self.0.len() > OPERATORS_KEPT {
            self.0.remove(0);
        }
    }

    /// The addresses seen within [`OPERATOR_MEMORY`].
    fn recent(&self) -> impl Iterator<Item = IpAddr> + '_ {
        self.0
            .iter()
            .filter(|(_, at)| at.elapsed() < OPERATOR_MEMORY)
            .map(|(address, _)| *address)
    }
}

impl Service {
    /// The addresses the lockout guard protects when the host starts enforcing: the
    /// operator's, and those of [`Service::guarded_always`]. None once the host enforces
    /// (the acknowledgement window guards a person's changes then), or with `force`.
    pub(super) fn guarded(
        &self,
        operator: Operator,
        force: bool,
    ) -> Result<Vec<GuardedAddress>, ServiceError> {
        if self.model.enforcing() || force {
            return Ok(Vec::new());
        }
        let mut guarded = Vec::new();
        let found = [
            ("client_ip", operator.client_ip),
            ("api_peer", operator.peer_ip),
        ];
        for (found, address) in found {
            if let Some(address) = address {
                push_new(&mut guarded, address, || found.to_owned());
            }
        }
        for always in self.guarded_always()? {
            push_new(&mut guarded, always.address, || always.found);
        }
        Ok(guarded)
    }

    /// The addresses a change no person acknowledges must keep reachable, whether or not
    /// the host enforces: the remote operators who made changes within the last hour, and
    /// the sources of established sessions to the protected ports.
    pub(super) fn guarded_always(&self) -> Result<Vec<GuardedAddress>, ServiceError> {
        let mut guarded = Vec::new();
        for address in self.operators.recent() {
            push_new(&mut guarded, address, || "api_peer".to_owned());
        }
        let sessions =
            host::established_sessions(&self.protect_ports).map_err(ServiceError::Host)?;
        for session in sessions {
            push_new(&mut guarded, session.source, || {
                format!("session to port {}", session.port)
            });
        }
        Ok(guarded)
    }
}

/// Adds `address` to `guarded` unless it is there, found where `found` says.
fn push_new(guarded: &mut Vec<GuardedAddress>, address: IpAddr, found: impl FnOnce() -> String) {
    if !guarded.iter().any(|known| known.address == address) {
        guarded.push(GuardedAddress {
            address,
            found: found(),
        });
    }
}

/// The bare addresses of `guarded`, as the model checks them.
pub(super) fn addresses(guarded: &[GuardedAddress]) -> Vec<IpAddr> {
    guarded.iter().map(|guarded| guarded.address).collect()
}
