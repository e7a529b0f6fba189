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
use super::evaluate::GuardedAddress;
use super::ids::IdSource;
use super::rules::RuleAllocator;
use super::settings::Settings;
use super::state::Model;
use crate::policy::{FeedFormat, covered_family};

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

impl ListSource {
    /// The URL without the credentials it may carry (`https://user:pass@host/` shows as
    /// `https://***@host/`): what the API, the audit trail and the logs show.
    pub fn shown_url(&self) -> String {
        let Some((scheme, rest)) = self.url.split_once("://") else {
            return self.url.clone();
        };
        let authority_end = rest.find(['/', '?', '#']).unwrap_or(rest.len());
        match rest[..authority_end].rfind('@') {
            Some(at) => format!("{scheme}://***{}", &rest[at..]),
            None => self.url.clone(),
        }
    }

    /// This source as the client sent it, with the credentials of `current` kept when the
    /// client sent back the URL as shown (a list read, edited and written back).
    pub(super) fn keeping_credentials(mut self, current: Option<&ListSource>) -> Self {
        if let Some(current) = current
            && self.url != current.url
            && self.url == current.shown_url()
        {
            self.url = current.url.clone();
        }
        self
    }
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
    /// source says now): entries kept keep their ids, descriptions and expiries. Refused when
    /// `prefixes` is empty, when it would take out more than half of the entries a person
    /// last set ([`Allowlist::feed_baseline`]; the first read of a list no person gave entries
    /// sets them), when it would cut off an address of `guarded` that passes now (or after a
    /// revert of the pending change), when a pending change freezes the list, or past the
    /// limits.
    ///
    /// [`Allowlist::feed_baseline`]: super::Allowlist::feed_baseline
    pub fn refresh_from_source(
        &mut self,
        id: &str,
        prefixes: &BTreeSet<IpNet>,
        guarded: &[GuardedAddress],
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
        let url = source.shown_url();
        self.window.check_not_frozen(id)?;
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
        let refused = |message: String| Err(ModelError::FeedRefused { message });
        if prefixes.is_empty() {
            return refused(format!("{url} gave no prefix: the list keeps its entries"));
        }
        // The entries a person set that the list would still hold.
        let baseline_kept = current
            .entries
            .iter()
            .filter(|entry| !entry.from_feed && prefixes.contains(&entry.cidr))
            .count();
        let baseline = current.feed_baseline;
        let taken = baseline.saturating_sub(baseline_kept);
        if taken * 2 > baseline {
            return refused(format!(
                "{url} would leave {baseline_kept} of the {baseline} entries the list held when                  a person last set it (at most half may go by a feed): the list keeps its                  entries; `allowlistctl import` makes such a change as a person, to acknowledge"
            ));
        }
        if let Some(all) = covered_family(prefixes.iter())
            && !current.allow_all
        {
            return refused(format!(
                "{url} gave prefixes that cover {all}, every source of a family, and the list \
                 does not say allow_all"
            ));
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
                    from_feed: true,
                }),
            }
        }
        let mut next = current.clone();
        next.entries = Arc::new(entries);
        next.version += 1;
        next.updated_at = now;
        if baseline == 0 {
            // No person gave the list entries: its first good read stands for them.
            for entry in Arc::make_mut(&mut next.entries) {
                entry.from_feed = false;
            }
            next.feed_baseline = next.entries.len();
        }
        let mut after = self.clone();
        after.allowlists.insert(id.to_owned(), next);
        if let Some(cut) = after.cuts_off(self, guarded) {
            return refused(format!(
                "{url} would cut off {} ({}), which passes now: the list keeps its entries",
                cut.address, cut.found
            ));
        }
        *self = after;
        Ok(counts)
    }
}
