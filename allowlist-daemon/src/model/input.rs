//! What clients send, and how it is checked and turned into entries.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use ipnet::IpNet;
use serde::{Deserialize, Serialize};
use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;

use super::allowlist::{Entry, Expiry};
use super::error::ModelError;
use super::ids::IdSource;
use super::rules::RuleAllocator;
use super::settings::Settings;
use super::validate::{check_allow_all, check_description};
use crate::policy::{covered_family, parse_cidr};

/// An entry as a client sends it.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct EntryInput {
    /// A CIDR or a plain address.
    pub cidr: String,
    /// Free text.
    #[serde(default)]
    pub description: Option<String>,
    /// When the entry leaves the list by itself (RFC 3339); not with `ttl`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub expires_at: Option<String>,
    /// How long the entry stays (`90m`, `2h`, `7d`); not with `expires_at`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ttl: Option<String>,
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
    /// A feed the list follows: its entries are replaced by what it says, every `refresh`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub source: Option<super::SourceInput>,
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

/// A parsed entry: its prefix, its description (shared with equal ones) and its expiry.
pub(super) type ParsedEntry = (IpNet, Option<Arc<str>>, Option<Expiry>);

/// When an entry given `expires_at` or `ttl` at `now` expires: in the future, within
/// `settings.max_entry_ttl`.
fn expiry(
    input: &EntryInput,
    field: &str,
    now: OffsetDateTime,
    settings: &Settings,
) -> Result<Option<Expiry>, ModelError> {
    let invalid = |field: String, message: String| ModelError::InvalidRequest {
        message: format!("{field}: {message}"),
        field: Some(field),
    };
    let at = match (&input.expires_at, &input.ttl) {
        (None, None) => return Ok(None),
        (Some(_), Some(_)) => {
            return Err(invalid(
                format!("{field}.ttl"),
                "give expires_at or ttl, not both".into(),
            ));
        }
        (Some(text), None) => OffsetDateTime::parse(text, &Rfc3339).map_err(|_| {
            invalid(
                format!("{field}.expires_at"),
                format!("{text:?} is not an RFC 3339 time such as 2026-12-24T18:00:00Z"),
            )
        })?,
        (None, Some(text)) => {
            let ttl = humantime::parse_duration(text).map_err(|err| {
                invalid(
                    format!("{field}.ttl"),
                    format!("{text:?} is not a duration such as 90m, 2h or 7d ({err})"),
                )
            })?;
            // Past the limit, the time may not even be a date.
            time::Duration::try_from(ttl.min(settings.max_entry_ttl + Duration::from_secs(1)))
                .ok()
                .and_then(|ttl| now.checked_add(ttl))
                .ok_or_else(|| invalid(format!("{field}.ttl"), "the time is out of range".into()))?
        }
    };
    let which = if input.ttl.is_some() {
        "ttl"
    } else {
        "expires_at"
    };
    if at <= now {
        return Err(invalid(
            format!("{field}.{which}"),
            "the entry would expire before it is added".into(),
        ));
    }
    if at - now > settings.max_entry_ttl {
        return Err(invalid(
            format!("{field}.{which}"),
            format!(
                "an entry may stay at most {} (--max-entry-ttl)",
                humantime::format_duration(settings.max_entry_ttl)
            ),
        ));
    }
    Expiry::from_time(at).map(Some).ok_or_else(|| {
        invalid(
            format!("{field}.{which}"),
            "the time is out of range".into(),
        )
    })
}

/// Parses and checks entries: valid CIDRs, descriptions within the limit, no duplicates among
/// themselves or with `existing` (sorted), allow-all prefixes only with `allow_all`. Returns
/// them sorted by prefix; equal descriptions share one allocation.
pub(super) fn parse_entries(
    inputs: Vec<EntryInput>,
    field: &str,
    existing: &[Entry],
    allow_all: bool,
    now: OffsetDateTime,
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
        let expires_at = expiry(&input, &format!("{field}[{index}]"), now, settings)?;
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
        parsed.push((cidr, description, expires_at, index));
    }
    parsed.sort_by_key(|(cidr, _, _, index)| (*cidr, *index));
    // The first duplicate in the request's order: the later of two equal prefixes.
    let duplicate = parsed
        .windows(2)
        .filter(|pair| pair[0].0 == pair[1].0)
        .map(|pair| (pair[1].3, pair[1].0))
        .chain(
            parsed
                .iter()
                .filter(|(cidr, ..)| existing.binary_search_by(|e| e.cidr.cmp(cidr)).is_ok())
                .map(|(cidr, _, _, index)| (*index, *cidr)),
        )
        .min();
    if let Some((index, cidr)) = duplicate {
        return Err(ModelError::DuplicateEntry {
            field: format!("{field}[{index}].cidr"),
            cidr,
        });
    }
    if !allow_all {
        let nets = existing
            .iter()
            .map(|entry| &entry.cidr)
            .chain(parsed.iter().map(|(cidr, ..)| cidr));
        if let Some(cidr) = covered_family(nets) {
            return Err(ModelError::CoversAll {
                field: field.to_owned(),
                cidr,
            });
        }
    }
    Ok(parsed
        .into_iter()
        .map(|(cidr, description, expires_at, _)| (cidr, description, expires_at))
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
        .map(|(cidr, description, expires_at)| {
            while previous.next_if(|old| old.cidr < cidr).is_some() {}
            if let Some(old) = previous.next_if(|old| old.cidr == cidr) {
                return Ok(Entry {
                    description,
                    expires_at,
                    ..old.clone()
                });
            }
            Ok(Entry {
                id: ids.entry_id(),
                cidr,
                description,
                rule: allocator.allocate()?,
                expires_at,
                from_feed: false,
            })
        })
        .collect()
}
