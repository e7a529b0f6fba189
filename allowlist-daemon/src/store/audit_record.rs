//! What the audit trail records: one event, and how it changed each list.

use serde::{Deserialize, Serialize};

/// One recorded event: a change applied, acknowledged, reverted or expired, or a request
/// refused.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AuditRecord {
    /// Increasing over the trail's life; the cursor of `GET /v1/audit?after=`.
    pub id: u64,
    /// When (RFC 3339).
    pub time: String,
    /// Who: the token's name, or `allowlistd` for what the daemon did by itself.
    pub actor: String,
    /// Where the request came from: a TCP peer, or a uid on the unix socket.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub peer: Option<String>,
    /// The request (`POST /v1/enforcement/enable`), for what a request did.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub request: Option<String>,
    /// `applied`, `acknowledged`, `reverted`, `expired` or `refused`.
    pub outcome: String,
    /// What happened, in words.
    pub action: String,
    /// The HTTP status of a refused request.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub status: Option<u16>,
    /// Why a request was refused: the error's code and message.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    /// The lists the event changed, with the entries added and removed.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub allowlists: Vec<ListChanges>,
    /// What the host enforced before.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub before: Option<String>,
    /// What the host enforced after.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub after: Option<String>,
    /// For a summary of refusals: how many it counts.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub count: Option<u64>,
}

/// How an event changed one list.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ListChanges {
    /// The list's id.
    pub id: String,
    /// Its name.
    pub name: String,
    /// `created`, `deleted`, `changed`, `enabled` or `disabled`.
    pub change: String,
    /// Prefixes added (at most [`ListChanges::SHOWN`]; `added_count` has them all).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub added: Vec<String>,
    /// How many prefixes were added.
    #[serde(default)]
    pub added_count: usize,
    /// Prefixes removed (at most [`ListChanges::SHOWN`]).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub removed: Vec<String>,
    /// How many prefixes were removed.
    #[serde(default)]
    pub removed_count: usize,
}

impl AuditRecord {
    /// A record of `outcome` for `action` by `actor`, now; the rest is filled in by the
    /// caller (the trail gives the id).
    pub fn event(actor: &str, outcome: &str, action: String) -> Self {
        AuditRecord {
            id: 0,
            time: crate::model::rfc3339(time::OffsetDateTime::now_utc()),
            actor: actor.to_owned(),
            peer: None,
            request: None,
            outcome: outcome.to_owned(),
            action,
            status: None,
            reason: None,
            allowlists: Vec::new(),
            before: None,
            after: None,
            count: None,
        }
    }

    /// Whether the record is a refusal (kept in the refusals' stream).
    pub(super) fn is_refusal(&self) -> bool {
        self.outcome == "refused"
    }
}

impl ListChanges {
    /// Prefixes named per list and direction; beyond, only counted.
    pub const SHOWN: usize = 100;
}
