//! Lists that follow a feed: the source declared with the list (a URL, its format, how often
//! to read it), and the refresh that replaces the list's entries by what the feed says. A
//! refresh needs no acknowledgement (the source was declared up front, as an entry's expiry
//! is), within a bound: a feed that comes back empty, or that would remove more than half the
//! list's entries, is refused and the list kept as it was; `allowlistctl import` applies
//! such a change as a pending one, like any narrowing edit.

use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::Duration;

use ipnet::IpNet;
use serde::{Deserialize, Serialize};
use time::OffsetDateTime;

use super::allowlist::Entry;
use super::error::ModelError;
use super::rules::RuleAllocator;
use super::state::{IdSource, Model, Settings};
use crate::policy::FeedFormat;

/// The shortest and the longest time between two reads of a source.
const REFRESH_BOUNDS: (Duration, Duration) =
    (Duration::from_secs(1), Duration::from_secs(7 * 24 * 3600));

/// Where a list's entries come from.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ListSource {
    /// The feed (`http://` or `https://`).
    pub url: String,
    /// How the feed is written.
    #[serde(default)]
    pub format: FeedFormat,
    /// Seconds between two reads.
    pub refresh_seconds: u64,
}

/// A source as a client sends it with a list.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SourceInput {
    /// The feed (`http://` or `https://`).
    pub url: String,
    /// How the feed is written [default: lines].
    #[serde(default)]
    pub format: FeedFormat,
    /// Time between two reads (`10m`, `1h`) [default: 1h].
    #[serde(default)]
    pub refresh: Option<String>,
}

/// What a refresh changed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize)]
pub struct Refreshed {
    /// Prefixes added.
    pub added: usize,
    /// Prefixes removed.
    pub removed: usize,
    /// Prefixes kept.
    pub unchanged: usize,
}

/// The source `input` declares, checked.
pub(super) fn parse_source(input: &SourceInput) -> Result<ListSource, ModelError> {
    let invalid = |field: &str, message: String| ModelError::InvalidRequest {
        message: format!("source.{field}: {message}"),
        field: Some(format!("source.{field}")),
    };
    if !(input.url.starts_with("http://") || input.url.starts_with("https://")) {
        return Err(invalid(
            "url",
            format!("{:?} is not an http:// or https:// URL", input.url),
        ));
    }
    let refresh = match &input.refresh {
        None => Duration::from_secs(3600),
        Some(text) => humantime::parse_duration(text).map_err(|err| {
            invalid(
                "refresh",
                format!("{text:?} is not a duration such as 10m or 1h ({err})"),
            )
        })?,
    };
    if refresh < REFRESH_BOUNDS.0 || refresh > REFRESH_BOUNDS.1 {
        return Err(invalid(
            "refresh",
            format!(
                "{} is out of range: give 1s to 7days",
                humantime::format_duration(refresh)
            ),
        ));
    }
    Ok(ListSource {
        url: input.url.clone(),
        format: input.format,
        refresh_seconds: refresh.as_secs(),
    })
}

impl Model {
    /// Replaces the entries of list `id`, which names a source, by `prefixes` (what the
    /// source says now): entries kept keep their ids, descriptions and expiries. Refused
    /// when `prefixes` is empty or removes more than half the entries, when a pending change
    /// freezes the list, or past the limits.
    pub fn refresh_from_source(
        &mut self,
        id: &str,
        prefixes: &BTreeSet<IpNet>,
        now: OffsetDateTime,
        settings: &Settings,
        ids: IdSource,
    ) -> Result<Refreshed, ModelError> {
        let current = self.allowlist(id)?;
        let Some(source) = &current.source else {
            return Err(ModelError::InvalidRequest {
                message: format!("allowlist {id} names no source"),
                field: None,
            });
        };
        self.check_not_frozen(id)?;
        let kept = current
            .entries
            .iter()
            .filter(|entry| prefixes.contains(&entry.cidr))
            .count();
        let counts = Refreshed {
            added: prefixes.len() - kept,
            removed: current.entries.len() - kept,
            unchanged: kept,
        };
        if prefixes.is_empty() {
            return Err(ModelError::FeedRefused {
                message: format!("{} gave no prefix: the list keeps its entries", source.url),
            });
        }
        if counts.removed * 2 > current.entries.len() {
            return Err(ModelError::FeedRefused {
                message: format!(
                    "{} would remove {} of the {} entries: the list keeps them; `allowlistctl \
                     import` applies such a change as a pending one, to acknowledge",
                    source.url,
                    counts.removed,
                    current.entries.len()
                ),
            });
        }
        if let Some(all) = prefixes.iter().find(|net| net.prefix_len() == 0)
            && !current.allow_all
        {
            return Err(ModelError::FeedRefused {
                message: format!(
                    "{} gave {all}, which allows every source, and the list does not say \
                     allow_all",
                    source.url
                ),
            });
        }
        if counts.added == 0 && counts.removed == 0 {
            return Ok(counts);
        }
        self.check_totals(prefixes.len(), current.entries.len(), false, settings)?;
        let mut allocator = RuleAllocator::new(self.rules_in_use(), settings.rule_capacity);
        let mut entries = Vec::with_capacity(prefixes.len());
        let mut old = current.entries.iter().peekable();
        for net in prefixes {
            while old.next_if(|entry| entry.cidr < *net).is_some() {}
            match old.next_if(|entry| entry.cidr == *net) {
                Some(entry) => entries.push(entry.clone()),
                None => entries.push(Entry {
                    id: ids.entry_id(),
                    cidr: *net,
                    description: None,
                    rule: allocator.allocate()?,
                    expires_at: None,
                }),
            }
        }
        let mut next = current.clone();
        next.entries = Arc::new(entries);
        next.version += 1;
        next.updated_at = now;
        self.allowlists.insert(id.to_owned(), next);
        Ok(counts)
    }
}
