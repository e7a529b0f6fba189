//! What clients send, and how it is checked and turned into entries.

use std::collections::{BTreeMap, BTreeSet};

use ipnet::IpNet;
use serde::{Deserialize, Serialize};

use super::allowlist::Entry;
use super::error::ModelError;
use super::rules::RuleAllocator;
use super::state::{IdSource, Settings};
use super::validate::{check_allow_all, check_description};
use crate::policy::parse_cidr;

/// An entry as a client sends it.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct EntryInput {
    /// A CIDR or a plain address.
    pub cidr: String,
    /// Free text.
    #[serde(default)]
    pub description: Option<String>,
}

/// An allowlist as a client sends it (create and replace).
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct AllowlistInput {
    /// Unique name.
    pub name: String,
    /// Free text.
    #[serde(default)]
    pub description: Option<String>,
    /// The entries.
    #[serde(default)]
    pub entries: Option<Vec<EntryInput>>,
    /// Whether the list may hold `0.0.0.0/0` or `::/0`, which allow every source.
    #[serde(default)]
    pub allow_all: bool,
}

/// Entries to add to an allowlist.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct EntriesInput {
    /// The entries.
    pub entries: Vec<EntryInput>,
    /// Whether they may include `0.0.0.0/0` or `::/0` (the list then allows them from now on).
    #[serde(default)]
    pub allow_all: bool,
}

/// Parses and checks entries: valid CIDRs, descriptions within the limit, no duplicates among
/// themselves or with `existing`, allow-all prefixes only with `allow_all`.
pub(super) fn parse_entries(
    inputs: Vec<EntryInput>,
    field: &str,
    existing: &[Entry],
    allow_all: bool,
    settings: &Settings,
) -> Result<Vec<(IpNet, String)>, ModelError> {
    let mut seen: BTreeSet<IpNet> = existing.iter().map(|entry| entry.cidr).collect();
    let mut parsed = Vec::with_capacity(inputs.len());
    for (index, input) in inputs.into_iter().enumerate() {
        let at = format!("{field}[{index}]");
        let cidr = parse_cidr(&input.cidr).map_err(|source| ModelError::Cidr {
            field: format!("{at}.cidr"),
            source,
        })?;
        check_allow_all(cidr, &format!("{at}.cidr"), allow_all)?;
        let description = input.description.unwrap_or_default();
        check_description(&description, &format!("{at}.description"), settings)?;
        if !seen.insert(cidr) {
            return Err(ModelError::DuplicateEntry {
                field: format!("{at}.cidr"),
                cidr,
            });
        }
        parsed.push((cidr, description));
    }
    Ok(parsed)
}

/// Turns parsed entries into entries, reusing the id and rule of a `previous` entry with the
/// same prefix and allocating fresh ones otherwise.
pub(super) fn allocate_entries(
    parsed: Vec<(IpNet, String)>,
    previous: &[Entry],
    allocator: &mut RuleAllocator,
    ids: IdSource,
) -> Result<Vec<Entry>, ModelError> {
    let previous: BTreeMap<IpNet, &Entry> =
        previous.iter().map(|entry| (entry.cidr, entry)).collect();
    parsed
        .into_iter()
        .map(|(cidr, description)| {
            if let Some(old) = previous.get(&cidr) {
                return Ok(Entry {
                    description,
                    ..(*old).clone()
                });
            }
            Ok(Entry {
                id: ids("en"),
                cidr,
                description,
                rule: allocator.allocate()?,
            })
        })
        .collect()
}
