//! An allowlist and its entries, as the model keeps them.

use allowlist_common::RuleId;
use ipnet::IpNet;
use serde::{Deserialize, Serialize};
use time::OffsetDateTime;

/// One allowed prefix in an allowlist.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Entry {
    /// Generated id, unique across lists.
    pub id: String,
    /// The prefix (host bits clear).
    pub cidr: IpNet,
    /// Free text.
    pub description: String,
    /// Index of the entry's hit counter in the kernel.
    pub rule: RuleId,
}

/// A named allowlist.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Allowlist {
    /// Generated id.
    pub id: String,
    /// Unique name.
    pub name: String,
    /// Free text.
    pub description: String,
    /// The entries, in the order they were added.
    pub entries: Vec<Entry>,
    /// Whether the list may hold a prefix that allows every source of a family
    /// (`0.0.0.0/0`, `::/0`): only when the request said so.
    #[serde(default)]
    pub allow_all: bool,
    /// Where the list comes from: `None` for the host's own lists, else the fleet release
    /// that declared it (read-only through the API while the host follows the fleet).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub fleet: Option<FleetOrigin>,
    /// When the list was created.
    #[serde(with = "time::serde::rfc3339")]
    pub created_at: OffsetDateTime,
    /// When the list last changed.
    #[serde(with = "time::serde::rfc3339")]
    pub updated_at: OffsetDateTime,
    /// Bumped on every change; the HTTP ETag.
    pub version: u64,
}

/// The fleet release a list comes from.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FleetOrigin {
    /// The fleet.
    pub fleet: String,
    /// The release that declared the list as it is.
    pub release: String,
}

impl Allowlist {
    /// Whether every prefix of this list is also in `other`: replacing this list by `other`
    /// does not narrow what it allows.
    pub fn is_covered_by(&self, other: &Allowlist) -> bool {
        let kept: std::collections::BTreeSet<IpNet> =
            other.entries.iter().map(|entry| entry.cidr).collect();
        self.entries.iter().all(|entry| kept.contains(&entry.cidr))
    }
}
