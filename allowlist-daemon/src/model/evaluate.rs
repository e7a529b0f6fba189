//! Whether an address passes now, and why: what `GET /v1/evaluate` answers.

use std::net::IpAddr;

use ipnet::IpNet;
use serde::Serialize;

use super::allowlist::EntryId;
use super::state::Model;

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
}
