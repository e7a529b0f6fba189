//! Whether an address passes, and why: what `GET /v1/evaluate` answers, and the lockout
//! guard's judgement: which of the addresses that must stay reachable (the operator's, the
//! API's peers, the sources of established sessions to protected ports) a change would cut
//! off. The service finds the addresses; the model judges every change that no person
//! acknowledges against them (a feed's read, a fleet release), and an enable that starts
//! enforcing.

use std::collections::BTreeSet;
use std::net::IpAddr;

use ipnet::IpNet;
use serde::Serialize;

use super::allowlist::EntryId;
use super::error::ModelError;
use super::state::Model;

/// An address the lockout guard keeps reachable, and where it was found.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct GuardedAddress {
    /// The address.
    pub address: IpAddr,
    /// Where it was found: `client_ip`, `api_peer`, or `session to port 22`.
    pub found: String,
}

/// Why an address would pass or not.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Reason {
    /// No allowlist is enabled: everything passes.
    NotEnforcing,
    /// The always-allow list covers it.
    AlwaysAllow,
    /// An enabled allowlist covers it.
    Allowlist,
    /// Nothing covers it: dropped.
    NoMatch,
}

/// An entry of an enabled allowlist that covers an address.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Match {
    /// The allowlist.
    pub allowlist_id: String,
    /// The entry.
    pub entry_id: EntryId,
    /// The entry's prefix.
    pub cidr: IpNet,
}

/// Whether an address passes now, and why.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Evaluation {
    /// Whether its packets pass.
    pub allowed: bool,
    /// Why.
    pub reason: Reason,
    /// Entries of enabled allowlists that cover it.
    pub matches: Vec<Match>,
}

impl Model {
    /// Whether packets from `addr` pass now, and which entries cover it. The kernel judges
    /// an IPv6 packet by its IPv6 source, an IPv4-mapped one included, and so does this.
    pub fn evaluate(&self, addr: IpAddr) -> Evaluation {
        let matches: Vec<Match> = self
            .enabled_lists()
            .flat_map(|list| {
                list.entries
                    .iter()
                    .filter(move |entry| entry.cidr.contains(&addr))
                    .map(move |entry| Match {
                        allowlist_id: list.id.clone(),
                        entry_id: entry.id,
                        cidr: entry.cidr,
                    })
            })
            .collect();
        let (allowed, reason) = if !self.enforcing() {
            (true, Reason::NotEnforcing)
        } else if self.always_allow.iter().any(|(net, _)| net.contains(&addr)) {
            (true, Reason::AlwaysAllow)
        } else if !matches.is_empty() {
            (true, Reason::Allowlist)
        } else {
            (false, Reason::NoMatch)
        };
        Evaluation {
            allowed,
            reason,
            matches,
        }
    }

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

    /// Whether `addr` would pass with `enabled` lists enabled.
    pub(super) fn allows(&self, enabled: &BTreeSet<String>, addr: IpAddr) -> bool {
        let lists = enabled.iter().filter_map(|id| self.allowlists.get(id));
        self.always_allow.iter().any(|(net, _)| net.contains(&addr))
            || lists
                .flat_map(|list| list.entries.iter())
                .any(|entry| entry.cidr.contains(&addr))
    }
}

/// Refuses a change that would cut off any of `addresses`: `passes` says whether one passes
/// after it. The error names each address cut off once, in order.
pub(super) fn check_reachable(
    addresses: impl IntoIterator<Item = IpAddr>,
    passes: impl Fn(IpAddr) -> bool,
) -> Result<(), ModelError> {
    let mut cut_off: Vec<IpAddr> = addresses
        .into_iter()
        .filter(|addr| !passes(*addr))
        .collect();
    cut_off.sort();
    cut_off.dedup();
    if cut_off.is_empty() {
        Ok(())
    } else {
        Err(ModelError::WouldLockOut { addresses: cut_off })
    }
}
