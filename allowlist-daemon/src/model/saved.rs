//! The model as `state.json` holds it: format 3, written by this release, and formats 2 and
//! 1 of earlier releases, read and converted. In format 3 a list's entries are either in the
//! state itself (`entries`) or, for large lists, in a file of their own that the store names
//! (`entries_file`), so that a change that leaves a large list alone does not rewrite it.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

use serde::{Deserialize, Serialize, Serializer};
use time::OffsetDateTime;

use super::allowlist::{Allowlist, Entry, FleetOrigin};
use super::fleet::FleetMemo;
use super::pending::{Action, Pending, Restore};
use super::state::Model;
use crate::policy::PortScope;

/// The format this release writes.
const FORMAT: u32 = 3;

impl Serialize for Model {
    /// The model with every list's entries inline.
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        SavedState::new(self, |_| None).serialize(serializer)
    }
}

impl<'de> Deserialize<'de> for Model {
    /// A model whose lists hold their entries inline.
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        SavedState::deserialize(deserializer)?
            .into_model(|name| {
                Err(format!(
                    "entries_file {name:?} is read only with the state directory"
                ))
            })
            .map_err(serde::de::Error::custom)
    }
}

/// `state.json`: the model with each list's entries inline or named by their file.
#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SavedState {
    /// Absent in format 1.
    #[serde(default = "format_1")]
    format: u32,
    allowlists: BTreeMap<String, SavedList>,
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

fn is_zero(count: &usize) -> bool {
    *count == 0
}

/// A list as saved: its entries inline, or the file that holds them.
#[derive(Serialize, Deserialize)]
struct SavedList {
    id: String,
    name: String,
    description: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    entries: Option<Arc<Vec<Entry>>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    entries_file: Option<String>,
    #[serde(default)]
    allow_all: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    fleet: Option<FleetOrigin>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    source: Option<super::ListSource>,
    #[serde(default, skip_serializing_if = "is_zero")]
    feed_baseline: usize,
    #[serde(with = "time::serde::rfc3339")]
    created_at: OffsetDateTime,
    #[serde(with = "time::serde::rfc3339")]
    updated_at: OffsetDateTime,
    version: u64,
}

impl SavedList {
    /// `list`, its entries in `file` if given, else inline.
    fn new(list: &Allowlist, file: Option<String>) -> Self {
        SavedList {
            id: list.id.clone(),
            name: list.name.clone(),
            description: list.description.clone(),
            entries: file.is_none().then(|| list.entries.clone()),
            entries_file: file,
            allow_all: list.allow_all,
            fleet: list.fleet.clone(),
            source: list.source.clone(),
            feed_baseline: list.feed_baseline,
            created_at: list.created_at,
            updated_at: list.updated_at,
            version: list.version,
        }
    }

    /// The list, its entries read through `read` if they are in a file; sorted by prefix
    /// (format 1 kept them in the order they came).
    fn into_allowlist(
        self,
        read: &mut impl FnMut(&str) -> Result<Arc<Vec<Entry>>, String>,
    ) -> Result<Allowlist, String> {
        let mut entries = match (self.entries, self.entries_file) {
            (Some(entries), None) => entries,
            (None, Some(file)) => read(&file)?,
            _ => {
                return Err(format!(
                    "allowlist {} needs `entries` or `entries_file`, one of them",
                    self.id
                ));
            }
        };
        if !entries.is_sorted_by(|a, b| a.cidr < b.cidr) {
            Arc::make_mut(&mut entries).sort_by_key(|a| a.cidr);
        }
        Ok(Allowlist {
            id: self.id,
            name: self.name,
            description: self.description,
            entries,
            allow_all: self.allow_all,
            fleet: self.fleet,
            source: self.source,
            feed_baseline: self.feed_baseline,
            created_at: self.created_at,
            updated_at: self.updated_at,
            version: self.version,
        })
    }
}

/// A pending change as saved: `revert_to` in formats 2 and 3, `restore` in format 1.
#[derive(Serialize, Deserialize)]
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
    #[serde(default, skip_serializing_if = "Option::is_none")]
    release: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    revert_to: Option<SavedRestore>,
    #[serde(default, skip_serializing)]
    restore: Option<LegacyRestore>,
}

/// What a revert restores, as saved.
#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct SavedRestore {
    enabled: BTreeSet<String>,
    scopes: Option<BTreeSet<PortScope>>,
    lists: Vec<SavedList>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    created: Vec<String>,
}

/// Only the entry files a state names, read without its entries: what the store needs of the
/// previous version of the state.
#[derive(Deserialize)]
pub struct SavedFileNames {
    #[serde(default)]
    allowlists: BTreeMap<String, FileOfList>,
    #[serde(default)]
    pending: Option<PendingFileNames>,
}

/// A list's entry file, if it has one.
#[derive(Deserialize)]
struct FileOfList {
    #[serde(default)]
    entries_file: Option<String>,
}

/// The entry files of what a pending change restores.
#[derive(Deserialize)]
struct PendingFileNames {
    #[serde(default)]
    revert_to: Option<RestoreFileNames>,
}

/// The entry files of the lists a revert restores.
#[derive(Deserialize)]
struct RestoreFileNames {
    #[serde(default)]
    lists: Vec<FileOfList>,
}

impl SavedFileNames {
    /// The files named.
    pub fn names(&self) -> impl Iterator<Item = &str> {
        let restored = self
            .pending
            .iter()
            .flat_map(|pending| pending.revert_to.iter())
            .flat_map(|restore| restore.lists.iter());
        self.allowlists
            .values()
            .chain(restored)
            .filter_map(|list| list.entries_file.as_deref())
    }
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

impl SavedState {
    /// `model` as the state file holds it; `file_of` names the file that holds a list's
    /// entries, `None` to keep them inline.
    pub fn new(model: &Model, file_of: impl Fn(&Allowlist) -> Option<String>) -> SavedState {
        let saved_list = |list: &Allowlist| SavedList::new(list, file_of(list));
        SavedState {
            format: FORMAT,
            allowlists: model
                .allowlists
                .iter()
                .map(|(id, list)| (id.clone(), saved_list(list)))
                .collect(),
            enabled: model.enabled.clone(),
            pending: model.window.pending().map(|pending| SavedPending {
                action: pending.action,
                allowlist_ids: pending.allowlist_ids.clone(),
                applied_at: pending.applied_at,
                acknowledge_after: pending.acknowledge_after,
                revert_at: pending.revert_at,
                release: pending.release.clone(),
                revert_to: Some(SavedRestore {
                    enabled: pending.revert_to.enabled.clone(),
                    scopes: pending.revert_to.scopes.clone(),
                    lists: pending.revert_to.lists.iter().map(saved_list).collect(),
                    created: pending.revert_to.created.clone(),
                }),
                restore: None,
            }),
            scopes: model.scopes.clone(),
            fleet: model.fleet.clone(),
        }
    }

    /// The model, the entries of lists kept in files read through `read`.
    pub fn into_model(
        self,
        mut read: impl FnMut(&str) -> Result<Arc<Vec<Entry>>, String>,
    ) -> Result<Model, String> {
        if self.format > FORMAT {
            return Err(format!(
                "format {} was written by a newer allowlistd (this one reads formats 1 to \
                 {FORMAT})",
                self.format
            ));
        }
        let mut allowlists = BTreeMap::new();
        for (id, list) in self.allowlists {
            allowlists.insert(id, list.into_allowlist(&mut read)?);
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
                    (Some(revert_to), None) if self.format >= 2 => Restore {
                        enabled: revert_to.enabled,
                        scopes: revert_to.scopes,
                        lists: revert_to
                            .lists
                            .into_iter()
                            .map(|list| list.into_allowlist(&mut read))
                            .collect::<Result<_, _>>()?,
                        created: revert_to.created,
                    },
                    (None, Some(legacy)) if self.format == 1 => {
                        legacy.into_restore(&allowlists, &self.enabled, &self.scopes)
                    }
                    _ => {
                        return Err("the pending change needs `revert_to` (formats 2 and 3) or \
                             `restore` (format 1), one of them"
                            .to_owned());
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
            window: pending.into(),
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
