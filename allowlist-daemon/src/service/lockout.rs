//! The addresses the lockout guard keeps reachable, and how each was found: what the
//! operator's client says, the API connection's own peer, the remote operators who made
//! changes lately, and the sessions the host itself sees to its protected ports (which
//! `sudo` cannot strip). An enable that starts enforcing is judged against them, and so is
//! every change no person acknowledges (a feed's read, a fleet release).

use std::net::IpAddr;
use std::time::{Duration, Instant};

use super::ServiceError;
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
struct RecentOperators(Vec<(IpAddr, Instant)>);

impl RecentOperators {
    /// Notes a change from `address` now.
    fn note(&mut self, address: IpAddr) {
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

/// The lockout guard's memory: the remote operators who made changes lately, and the ports
/// whose established sessions it keeps reachable.
#[derive(Debug, Default)]
pub(super) struct LockoutGuard {
    operators: RecentOperators,
    protect_ports: Vec<u16>,
}

impl LockoutGuard {
    /// A guard of the sessions to `protect_ports` that remembers no operator yet.
    pub(super) fn new(protect_ports: Vec<u16>) -> Self {
        LockoutGuard {
            operators: RecentOperators::default(),
            protect_ports,
        }
    }

    /// Notes a change from the remote operator at `address` now.
    pub(super) fn note_operator(&mut self, address: IpAddr) {
        self.operators.note(address);
    }

    /// The addresses the guard protects when the host starts enforcing: the operator's,
    /// and those of [`LockoutGuard::guarded_always`]. None once the host is `enforcing`
    /// (the acknowledgement window guards a person's changes then), or with `force`.
    pub(super) fn guarded(
        &self,
        enforcing: bool,
        operator: Operator,
        force: bool,
    ) -> Result<Vec<GuardedAddress>, ServiceError> {
        if enforcing || force {
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

#[cfg(test)]
mod tests {
    use super::*;

    fn address(text: &str) -> IpAddr {
        text.parse().expect("an address")
    }

    #[test]
    fn guards_the_operator_only_until_the_host_enforces() {
        // No protected port: no session of this machine's is guarded.
        let mut guard = LockoutGuard::new(Vec::new());
        guard.note_operator(address("198.51.100.9"));
        let operator = Operator {
            client_ip: Some(address("192.0.2.1")),
            peer_ip: Some(address("198.51.100.9")),
        };
        let guarded = guard.guarded(false, operator, false).expect("guarded");
        let found: Vec<(IpAddr, &str)> = guarded
            .iter()
            .map(|guarded| (guarded.address, guarded.found.as_str()))
            .collect();
        assert_eq!(
            found,
            [
                (address("192.0.2.1"), "client_ip"),
                (address("198.51.100.9"), "api_peer")
            ],
            "each address once, where it was found first"
        );
        let enforcing = guard.guarded(true, operator, false).expect("guarded");
        assert_eq!(
            enforcing,
            Vec::new(),
            "the acknowledgement window guards then"
        );
        let forced = guard.guarded(false, operator, true).expect("guarded");
        assert_eq!(forced, Vec::new());
        let always = guard.guarded_always().expect("guarded");
        assert_eq!(
            always.len(),
            1,
            "the recent operator stays guarded: {always:?}"
        );
    }

    #[test]
    fn remembers_the_latest_operators() {
        let mut operators = RecentOperators::default();
        for last in 0..=OPERATORS_KEPT {
            operators.note(IpAddr::from([192, 0, 2, last as u8]));
        }
        operators.note(IpAddr::from([192, 0, 2, 1]));
        let recent: Vec<IpAddr> = operators.recent().collect();
        assert_eq!(recent.len(), OPERATORS_KEPT);
        assert!(
            !recent.contains(&IpAddr::from([192, 0, 2, 0])),
            "the oldest is dropped"
        );
        assert_eq!(
            recent.last(),
            Some(&IpAddr::from([192, 0, 2, 1])),
            "noted again: newest"
        );
    }
}
