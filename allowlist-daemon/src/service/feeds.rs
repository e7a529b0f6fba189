//! Lists that follow a feed: which are due for a read, and what a read's text does to its
//! list (a refresh, or a refusal kept on record). The daemon reads the feeds itself, off
//! the service's lock.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use super::setup::RandomIds;
use super::{Service, ServiceError};
use crate::model::{ListSource, ModelError, Refreshed};
use crate::policy::read_feed;
use crate::store::AuditRecord;

/// After a failed read, the next one comes this soon (or at the refresh, if sooner).
const RETRY_AFTER_FAILURE: Duration = Duration::from_secs(60);

/// When each list with a source is read next, and why its last read was not applied.
#[derive(Debug, Default)]
pub(super) struct FeedSchedule {
    next: HashMap<String, Instant>,
    /// The refusal last recorded for a list: the same one is not recorded again at every
    /// read (a broken feed read every minute would fill the trail).
    refused: HashMap<String, String>,
}

impl Service {
    /// The lists whose source is due for a read at `now`, with their source; each is then
    /// scheduled for its next refresh (a new list is due at once).
    pub fn due_feeds(&mut self, now: Instant) -> Vec<(String, ListSource)> {
        let sources: Vec<(String, ListSource)> = self
            .model
            .allowlists()
            .filter_map(|list| list.source.clone().map(|source| (list.id.clone(), source)))
            .collect();
        let known = |id: &String| sources.iter().any(|(known, _)| known == id);
        self.feeds.refused.retain(|id, _| known(id));
        let schedule = &mut self.feeds.next;
        schedule.retain(|id, _| known(id));
        sources
            .into_iter()
            .filter(|(id, source)| {
                let due = schedule.get(id).is_none_or(|at| *at <= now);
                if due {
                    schedule.insert(
                        id.clone(),
                        now + Duration::from_secs(source.refresh_seconds),
                    );
                }
                due
            })
            .collect()
    }

    /// Applies what the source of list `id` gave: its text, or why it could not be read
    /// (the list keeps its entries, and the source is read again soon). A read that would
    /// cut off an address the lockout guard keeps reachable is refused like any other bad
    /// read. Returns what changed.
    pub fn apply_feed(
        &mut self,
        id: &str,
        read: Result<String, String>,
    ) -> Result<Refreshed, ServiceError> {
        let Some(source) = self
            .model
            .allowlist(id)
            .ok()
            .and_then(|list| list.source.clone())
        else {
            return Ok(Refreshed::default());
        };
        let url = source.shown_url();
        let read = read
            // An error may quote the URL: never with its credentials.
            .map_err(|cause| cause.replace(&source.url, &url))
            .and_then(|text| read_feed(&text, source.format).map_err(|err| err.to_string()))
            .and_then(|read| match read.invalid.is_empty() {
                true => Ok(read.prefixes),
                false => Err(read.invalid_summary()),
            });
        let prefixes = match read {
            Ok(prefixes) => prefixes,
            Err(cause) => {
                // The list keeps its entries; the source is read again soon.
                self.retry_feed_soon(id, &source);
                let reason = format!("reading {url}: {cause}");
                self.record_feed_refusal(id, &reason);
                return Err(ModelError::FeedRefused { message: reason }.into());
            }
        };
        // The feed as the list already is: nothing to save, write or record.
        let unchanged = self.model.allowlist(id).is_ok_and(|list| {
            list.entries.len() == prefixes.len()
                && list
                    .entries
                    .iter()
                    .zip(&prefixes)
                    .all(|(entry, net)| entry.cidr == *net)
        });
        if unchanged {
            self.feeds.refused.remove(id);
            return Ok(Refreshed {
                unchanged: prefixes.len(),
                ..Refreshed::default()
            });
        }
        let guarded = self.guard.guarded_always()?;
        let refreshed = self.transact(
            |refreshed: &Refreshed| {
                format!(
                    "refreshed allowlist {id} from {url}: {} added, {} removed, {} unchanged",
                    refreshed.added, refreshed.removed, refreshed.unchanged
                )
            },
            |model, settings, now| {
                model.refresh_from_source(id, &prefixes, &guarded, now, settings, &mut RandomIds)
            },
        );
        match &refreshed {
            Ok(_) => {
                self.feeds.refused.remove(id);
            }
            // Frozen by a pending change: read again once it is over.
            Err(ServiceError::Refused(ModelError::ChangePending { .. })) => {
                self.retry_feed_soon(id, &source);
            }
            Err(ServiceError::Refused(err)) => self.record_feed_refusal(id, &err.to_string()),
            Err(_) => self.retry_feed_soon(id, &source),
        }
        refreshed
    }

    /// Reads the source of list `id` again soon, after a failure.
    fn retry_feed_soon(&mut self, id: &str, source: &ListSource) {
        let wait = RETRY_AFTER_FAILURE.min(Duration::from_secs(source.refresh_seconds));
        self.feeds.next.insert(id.to_owned(), Instant::now() + wait);
    }

    /// Records in the audit trail, and logs, that a feed's word was not applied (once for
    /// the same reason in a row).
    fn record_feed_refusal(&mut self, id: &str, reason: &str) {
        if self
            .feeds
            .refused
            .get(id)
            .is_some_and(|last| last == reason)
        {
            return;
        }
        self.feeds.refused.insert(id.to_owned(), reason.to_owned());
        tracing::warn!(
            list = id,
            reason,
            "the list's source was not applied; the list is kept"
        );
        let record = AuditRecord {
            reason: Some(reason.to_owned()),
            ..AuditRecord::event(
                "allowlistd",
                "refused",
                format!("refresh of allowlist {id} from its source"),
            )
        };
        self.audit.append(record);
    }
}
