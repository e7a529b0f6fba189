//! The pending change: what it did, its window, and exactly what a revert restores.

use std::collections::BTreeSet;
use std::fmt;

use serde::{Deserialize, Serialize};
use time::OffsetDateTime;

use super::allowlist::Allowlist;
use crate::policy::PortScope;

/// What a pending change did.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Action {
    /// Enabled allowlists.
    Enable,
    /// Disabled allowlists.
    Disable,
    /// Removed entries from an enabled allowlist.
    Update,
    /// Changed the protected ports.
    Scopes,
    /// Converged the host's own lists to a policy file (`allowlistctl apply`).
    Apply,
    /// Applied a fleet release (acknowledged when the release is, for the fleet).
    Release,
}

impl fmt::Display for Action {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Action::Enable => "enable",
            Action::Disable => "disable",
            Action::Update => "narrowing update",
            Action::Scopes => "scopes change",
            Action::Apply => "apply",
            Action::Release => "fleet release",
        })
    }
}

/// What a revert restores: the enforced state as acknowledged before the change.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Restore {
    /// The enabled allowlists.
    pub enabled: BTreeSet<String>,
    /// The scopes set through the API (`None`: the daemon's `--protect` default).
    pub scopes: Option<BTreeSet<PortScope>>,
    /// The lists the change edited or deleted, exactly as they were (entries, ids and rules
    /// included).
    pub lists: Vec<Allowlist>,
    /// The lists the change created: a revert deletes them.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub created: Vec<String>,
}

/// A change applied to the kernel that must be acknowledged within its window.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Pending {
    /// What the change did.
    pub action: Action,
    /// The allowlists it concerns; those it [freezes](Pending::freezes) cannot be edited
    /// until it ends.
    pub allowlist_ids: Vec<String>,
    /// When it was applied.
    #[serde(with = "time::serde::rfc3339")]
    pub applied_at: OffsetDateTime,
    /// Acknowledgements before this are too early.
    #[serde(with = "time::serde::rfc3339")]
    pub acknowledge_after: OffsetDateTime,
    /// Without acknowledgement, the change is reverted at this time.
    #[serde(with = "time::serde::rfc3339")]
    pub revert_at: OffsetDateTime,
    /// The fleet release it applied, for [`Action::Release`].
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub release: Option<String>,
    /// What a revert restores.
    pub revert_to: Restore,
}

impl Pending {
    /// Whether the change concerns allowlist `id`.
    pub fn concerns(&self, id: &str) -> bool {
        self.allowlist_ids.iter().any(|concerned| concerned == id)
    }

    /// Whether a revert restores list `id` as the change found it (the list a narrowing
    /// update edited, a list a disable turned off): then it cannot be edited until the change
    /// ends. A list being enabled is not frozen: a revert disables it, whatever it holds.
    pub fn freezes(&self, id: &str) -> bool {
        match self.action {
            Action::Update | Action::Disable | Action::Apply | Action::Release => self.concerns(id),
            Action::Enable | Action::Scopes => false,
        }
    }
}
