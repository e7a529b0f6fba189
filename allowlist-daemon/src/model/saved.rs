//! The model as `state.json` holds it: format 2, written by this release, and format 1 of
//! earlier releases, read and converted.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

use serde::ser::SerializeStruct as _;
use serde::{Deserialize, Serialize, Serializer};
use time::OffsetDateTime;

use super::allowlist::{Allowlist, Entry};
use super::fleet::FleetMemo;
use super::pending::{Action, Pending, Restore};
use super::state::Model;
use crate::policy::PortScope;

/// The format this release writes.
const FORMAT: u32 = 2;

impl Serialize for Model {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let mut state = serializer.serialize_struct("Model", 6)?;
        state.serialize_field("format", &FORMAT)?;
        state.serialize_field("allowlists", &self.allowlists)?;
        state.serialize_field("enabled", &self.enabled)?;
        state.serialize_field("pending", &self.pending)?;
        state.serialize_field("scopes", &self.scopes)?;
        state.serialize_field("fleet", &self.fleet)?;
        state.end()
    }
}

impl<'de> Deserialize<'de> for Model {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        Saved::deserialize(deserializer)?
            .into_model()
            .map_err(serde::de::Error::custom)
    }
}

/// `state.json` as read.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Saved {
    /// Absent in format 1.
    #[serde(default = "format_1")]
    format: u32,
    allowlists: BTreeMap<String, Allowlist>,
    enabled: BTreeSet<String>,
    pending: Option<SavedPending>,
    #[serde(default)]
    scopes: Option<BTreeSet<PortScope>>,
    #[serde(default)]
    fleet: FleetMemo,
}

fn format_1() -> u32 {
    1
}

/// A pending change as read: `revert_to` in format 2, `restore` in format 1.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct SavedPending {
    action: Action,
    allowlist_ids: Vec<String>,
    #[serde(with = "time::serde::rfc3339")]
    applied_at: OffsetDateTime,
    #[serde(with = "time::serde::rfc3339")]
    acknowledge_after: OffsetDateTime,
    #[serde(with = "time::serde::rfc3339")]
    revert_at: OffsetDateTime,
    #[serde(default)]
    release: Option<String>,
    #[serde(default)]
    revert_to: Option<Restore>,
    #[serde(default)]
    restore: Option<LegacyRestore>,
}

/// What format 1 kept for a revert: one part of the state.
#[derive(Deserialize)]
#[serde(rename_all = "snake_case")]
enum LegacyRestore {
    Enabled(BTreeSet<String>),
    Entries {
        allowlist_id: String,
        entries: Vec<Entry>,
    },
    Scopes(Option<BTreeSet<PortScope>>),
}

impl Saved {
    fn into_model(self) -> Result<Model, String> {
        if self.format > FORMAT {
            return Err(format!(
                "format {} was written by a newer allowlistd (this one reads formats 1 and \
                 {FORMAT})",
                self.format
            ));
        }
        let mut allowlists = self.allowlists;
        // Entries are kept sorted by prefix (format 1 kept them in the order they came).
        for list in allowlists.values_mut() {
            if !list.entries.is_sorted_by(|a, b| a.cidr < b.cidr) {
                Arc::make_mut(&mut list.entries).sort_by_key(|a| a.cidr);
            }
        }
        if self.format == 1 {
            // Format 1 took allow-all prefixes without asking: they were asked for then.
            for list in allowlists.values_mut() {
                list.allow_all |= list.entries.iter().any(|e| e.cidr.prefix_len() == 0);
            }
        }
        let pending = match self.pending {
            None => None,
            Some(saved) => {
                let revert_to = match (saved.revert_to, saved.restore) {
                    (Some(revert_to), None) if self.format == FORMAT => revert_to,
                    (None, Some(legacy)) if self.format == 1 => {
                        legacy.into_restore(&allowlists, &self.enabled, &self.scopes)
                    }
                    _ => {
                        return Err(format!(
                            "the pending change needs `revert_to` (format {FORMAT}) or `restore` \
                             (format 1), one of them"
                        ));
                    }
                };
                Some(Pending {
                    action: saved.action,
                    allowlist_ids: saved.allowlist_ids,
                    applied_at: saved.applied_at,
                    acknowledge_after: saved.acknowledge_after,
                    revert_at: saved.revert_at,
                    release: saved.release,
                    revert_to,
                })
            }
        };
        Ok(Model {
            allowlists,
            enabled: self.enabled,
            pending,
            scopes: self.scopes,
            fleet: self.fleet,
            ..Model::default()
        })
    }
}

impl LegacyRestore {
    /// The format-2 restore point that reverts as format 1 did.
    fn into_restore(
        self,
        allowlists: &BTreeMap<String, Allowlist>,
        enabled: &BTreeSet<String>,
        scopes: &Option<BTreeSet<PortScope>>,
    ) -> Restore {
        let mut restore = Restore {
            enabled: enabled.clone(),
            scopes: scopes.clone(),
            lists: Vec::new(),
            created: Vec::new(),
        };
        match self {
            LegacyRestore::Enabled(before) => restore.enabled = before,
            LegacyRestore::Scopes(before) => restore.scopes = before,
            LegacyRestore::Entries {
                allowlist_id,
                entries,
            } => {
                if let Some(current) = allowlists.get(&allowlist_id) {
                    let mut list = current.clone();
                    let restored = Arc::make_mut(&mut list.entries);
                    for entry in entries {
                        if !restored.iter().any(|e| e.cidr == entry.cidr) {
                            restored.push(entry);
                        }
                    }
                    restored.sort_by_key(|a| a.cidr);
                    restore.lists.push(list);
                }
            }
        }
        restore
    }
}
