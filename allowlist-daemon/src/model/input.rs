//! What clients send, and how it is checked and turned into entries.

use std::collections::HashMap;
use std::sync::Arc;

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

/// A parsed entry: its prefix and its description (shared with equal ones).
pub(super) type ParsedEntry = (IpNet, Option<Arc<str>>);

/// Parses and checks entries: valid CIDRs, descriptions within the limit, no duplicates among
/// themselves or with `existing` (sorted), allow-all prefixes only with `allow_all`. Returns
/// them sorted by prefix; equal descriptions share one allocation.
pub(super) fn parse_entries(
    inputs: Vec<EntryInput>,
    field: &str,
    existing: &[Entry],
    allow_all: bool,
    settings: &Settings,
) -> Result<Vec<ParsedEntry>, ModelError> {
    let mut descriptions: HashMap<String, Arc<str>> = HashMap::new();
    let mut parsed = Vec::with_capacity(inputs.len());
    for (index, input) in inputs.into_iter().enumerate() {
        let cidr = parse_cidr(&input.cidr).map_err(|source| ModelError::Cidr {
            field: format!("{field}[{index}].cidr"),
            source,
        })?;
        if cidr.prefix_len() == 0 && !allow_all {
            check_allow_all(cidr, &format!("{field}[{index}].cidr"), allow_all)?;
        }
        let description = match input.description {
            Some(text) if !text.is_empty() => {
                // A description no longer in bytes than the limit is within it in characters.
                if text.len() > settings.max_description_len {
                    check_description(&text, &format!("{field}[{index}].description"), settings)?;
                }
                let shared = descriptions
                    .entry(text)
                    .or_insert_with_key(|text| Arc::from(text.as_str()));
                Some(shared.clone())
            }
            _ => None,
        };
        parsed.push((cidr, description, index));
    }
    parsed.sort_by_key(|(cidr, _, index)| (*cidr, *index));
    // The first duplicate in the request's order: the later of two equal prefixes.
    let duplicate = parsed
        .windows(2)
        .filter(|pair| pair[0].0 == pair[1].0)
        .map(|pair| (pair[1].2, pair[1].0))
        .chain(
            parsed
                .iter()
                .filter(|(cidr, ..)| existing.binary_search_by(|e| e.cidr.cmp(cidr)).is_ok())
                .map(|(cidr, _, index)| (*index, *cidr)),
        )
        .min();
    if let Some((index, cidr)) = duplicate {
        return Err(ModelError::DuplicateEntry {
            field: format!("{field}[{index}].cidr"),
            cidr,
        });
    }
    Ok(parsed
        .into_iter()
        .map(|(cidr, description, _)| (cidr, description))
        .collect())
}

/// Turns parsed entries (sorted by prefix) into entries, reusing the id and rule of a
/// `previous` entry (sorted) with the same prefix and allocating fresh ones otherwise.
pub(super) fn allocate_entries(
    parsed: Vec<ParsedEntry>,
    previous: &[Entry],
    allocator: &mut RuleAllocator,
    ids: IdSource,
) -> Result<Vec<Entry>, ModelError> {
    let mut previous = previous.iter().peekable();
    parsed
        .into_iter()
        .map(|(cidr, description)| {
            while previous.next_if(|old| old.cidr < cidr).is_some() {}
            if let Some(old) = previous.next_if(|old| old.cidr == cidr) {
                return Ok(Entry {
                    description,
                    ..old.clone()
                });
            }
            Ok(Entry {
                id: ids.entry_id(),
                cidr,
                description,
                rule: allocator.allocate()?,
            })
        })
        .collect()
}
