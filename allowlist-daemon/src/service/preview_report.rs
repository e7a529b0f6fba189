//! A preview's report as people and scripts read it: `GET /v1/enforcement/preview`, and
//! what each host of a fleet preview writes to etcd.

use std::net::IpAddr;

use serde::Serialize;
use serde_json::{Value, json};

use super::preview::{Candidate, Preview};
use crate::dataplane::{PreviewSource, Would};
use crate::model::{GuardedAddress, rfc3339};

/// A preview's report.
#[derive(Debug, Clone, Serialize)]
pub struct PreviewReport {
    /// `running` or `ended`.
    pub state: &'static str,
    /// What it judges, in short.
    pub candidate: Value,
    /// When it started (RFC 3339).
    pub started_at: String,
    /// When its window ends.
    pub ends_at: String,
    /// When it ended, if it did.
    pub ended_at: Option<String>,
    /// Why it ended.
    pub ended_because: Option<&'static str>,
    /// The guarded addresses the candidate would cut off.
    pub would_cut: Vec<GuardedAddress>,
    /// The sources the candidate would drop that pass today.
    pub would_drop: Side,
    /// The sources the candidate would let in that are refused today.
    pub would_pass: Side,
}

/// One side of a report: the sources whose verdict the candidate would change one way.
#[derive(Debug, Clone, Serialize)]
pub struct Side {
    /// Their packets, all together.
    pub packets: u64,
    /// The sources, busiest first.
    pub sources: Vec<SourceReport>,
}

/// One source of a report.
#[derive(Debug, Clone, Serialize)]
pub struct SourceReport {
    /// Its address.
    pub address: IpAddr,
    /// Its packets.
    pub packets: u64,
    /// Their bytes (whole frames).
    pub bytes: u64,
    /// How long ago the last one came.
    pub last_seen_seconds_ago: u64,
    /// The busiest protocols and local ports it sent to.
    pub ports: Vec<PortReport>,
}

/// A protocol and local port a source sent to.
#[derive(Debug, Clone, Serialize)]
pub struct PortReport {
    /// `tcp`, `udp`, `icmp`, `icmpv6`, or the protocol's number.
    pub protocol: String,
    /// The local port (0 for a protocol without ports).
    pub port: u16,
    /// Packets.
    pub packets: u64,
}

impl Preview {
    /// The report of this preview, as last read.
    pub fn report(&self) -> PreviewReport {
        let side = |would: Would| Side {
            packets: self.sources(would).map(|s| s.packets).sum(),
            sources: self.sources(would).map(source_report).collect(),
        };
        PreviewReport {
            state: if self.ended.is_some() {
                "ended"
            } else {
                "running"
            },
            candidate: candidate_view(&self.candidate),
            started_at: rfc3339(self.started_at),
            ends_at: rfc3339(self.ends_at),
            ended_at: self.ended.map(|(at, _)| rfc3339(at)),
            ended_because: self.ended.map(|(_, why)| why),
            would_cut: self.would_cut.clone(),
            would_drop: side(Would::Drop),
            would_pass: side(Would::Pass),
        }
    }
}

/// What a candidate changes, in short (a list's entries are counted, not repeated).
fn candidate_view(candidate: &Candidate) -> Value {
    let names = |lists: &[crate::model::DesiredList]| -> Vec<String> {
        lists.iter().map(|list| list.name.clone()).collect()
    };
    match candidate {
        Candidate::Enable(ids) => json!({ "enable": ids }),
        Candidate::Disable(ids) => json!({ "disable": ids }),
        Candidate::Scopes(scopes) => {
            let protect: Vec<String> = scopes.iter().map(ToString::to_string).collect();
            json!({ "protect": protect })
        }
        Candidate::Replace { id, list } => json!({
            "replace": { "id": id, "entries": list.entries.as_ref().map_or(0, Vec::len) },
        }),
        Candidate::Apply { allowlists, prune } => {
            json!({ "apply": { "allowlists": names(allowlists), "prune": prune } })
        }
        Candidate::Release {
            fleet,
            release,
            allowlists,
        } => json!({
            "release": { "fleet": fleet, "id": release, "allowlists": names(allowlists) },
        }),
    }
}

fn source_report(source: &PreviewSource) -> SourceReport {
    SourceReport {
        address: source.address,
        packets: source.packets,
        bytes: source.bytes,
        last_seen_seconds_ago: source.last_seen_ago.as_secs(),
        ports: source
            .ports
            .iter()
            .map(|&(protocol, port, packets)| PortReport {
                protocol: protocol_name(protocol),
                port,
                packets,
            })
            .collect(),
    }
}

/// A protocol's usual name, else its number.
fn protocol_name(protocol: u8) -> String {
    match protocol {
        1 => "icmp".to_owned(),
        6 => "tcp".to_owned(),
        17 => "udp".to_owned(),
        58 => "icmpv6".to_owned(),
        other => other.to_string(),
    }
}
