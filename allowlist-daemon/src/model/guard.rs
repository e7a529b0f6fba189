//! The lockout guard's judgement: which of the addresses that must stay reachable (the
//! operator's, the API's peers, the sources of established sessions to protected ports) a
//! change would cut off. The service finds the addresses; the model judges every change that
//! no person acknowledges against them (a feed's read, a fleet release), and an enable that
//! starts enforcing.

use std::net::IpAddr;

use serde::Serialize;

use super::state::Model;

/// An address the lockout guard keeps reachable, and where it was found.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct GuardedAddress {
    /// The address.
    pub address: IpAddr,
    /// Where it was found: `client_ip`, `api_peer`, or `session to port 22`.
    pub found: String,
}

impl Model {
    /// Whether packets from `addr` pass under this state (everything passes while nothing
    /// is enforced).
    pub fn admits(&self, addr: IpAddr) -> bool {
        !self.enforcing() || self.allows(&self.enabled, addr)
    }

    /// The first address of `guarded` that passes under `before` (now, or after a revert of
    /// its pending change) and would not under this state (likewise): what a change from
    /// `before` to this state would cut off.
    pub fn cuts_off<'a>(
        &self,
        before: &Model,
        guarded: &'a [GuardedAddress],
    ) -> Option<&'a GuardedAddress> {
        let (reverted_before, reverted_after) = (before.reverted(), self.reverted());
        guarded.iter().find(|guarded| {
            let addr = guarded.address;
            (before.admits(addr) && !self.admits(addr))
                || (reverted_before.admits(addr) && !reverted_after.admits(addr))
        })
    }
}
