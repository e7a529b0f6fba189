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

impl FeedSchedule {
    /// Those of `sources` (the lists with a source, each with its own) due for a read at
    /// `now`; each is then scheduled for its next refresh (a new list is due at once). Lists
    /// no longer among them are forgotten.
    fn due(
        &mut self,
        sources: Vec<(String, ListSource)>,
        now: Instant,
    ) -> Vec<(String, ListSource)> {
        let known = |id: &String| sources.iter().any(|(known, _)| known == id);
        self.refused.retain(|id, _| known(id));
        self.next.retain(|id, _| known(id));
        sources
            .into_iter()
            .filter(|(id, source)| {
                let due = self.next.get(id).is_none_or(|at| *at <= now);
                if due {
                    let next = now + Duration::from_secs(source.refresh_seconds);
                    self.next.insert(id.clone(), next);
                }
                due
            })
            .collect()
    }

    /// Reads the source of list `id` again soon after `now`, after a failure.
    fn retry_soon(&mut self, id: &str, source: &ListSource, now: Instant) {
        let wait = RETRY_AFTER_FAILURE.min(Duration::from_secs(source.refresh_seconds));
        self.next.insert(id.to_owned(), now + wait);
    }

    /// Notes that the last read of list `id` was refused for `reason`; returns whether that
    /// is news (not the same reason as the read before).
    fn note_refusal(&mut self, id: &str, reason: &str) -> bool {
        if self.refused.get(id).is_some_and(|last| last == reason) {
            return false;
        }
        self.refused.insert(id.to_owned(), reason.to_owned());
        true
    }

    /// Notes that list `id` follows its source again.
    fn note_applied(&mut self, id: &str) {
        self.refused.remove(id);
    }
}

impl Service {
    /// The lists whose source is due for a read at `now`, with their source; each is then
    /// scheduled for its next refresh (a new list is due at once).
    pub fn due_feeds(&mut self, now: Instant) -> Vec<(String, ListSource)> {
        let sources = self
            .model
            .allowlists()
            .filter_map(|list| list.source.clone().map(|source| (list.id.clone(), source)))
            .collect();
        self.feeds.due(sources, now)
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
                self.feeds.retry_soon(id, &source, Instant::now());
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
            self.feeds.note_applied(id);
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
            Ok(_) => self.feeds.note_applied(id),
            // Frozen by a pending change: read again once it is over.
            Err(ServiceError::Refused(ModelError::ChangePending { .. })) => {
                self.feeds.retry_soon(id, &source, Instant::now());
            }
            Err(ServiceError::Refused(err)) => self.record_feed_refusal(id, &err.to_string()),
            Err(_) => self.feeds.retry_soon(id, &source, Instant::now()),
        }
        refreshed
    }

    /// Records in the audit trail, and logs, that a feed's word was not applied (once for
    /// the same reason in a row).
    fn record_feed_refusal(&mut self, id: &str, reason: &str) {
        if !self.feeds.note_refusal(id, reason) {
            return;
        }
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

#[cfg(test)]
mod tests {
    use super::*;

    fn source(refresh_seconds: u64) -> ListSource {
        ListSource {
            url: "https://feeds.example/office.txt".into(),
            format: Default::default(),
            refresh_seconds,
        }
    }

    fn ids(due: &[(String, ListSource)]) -> Vec<&str> {
        due.iter().map(|(id, _)| id.as_str()).collect()
    }

    #[test]
    fn a_list_is_read_at_once_then_at_each_refresh_and_soon_after_a_failure() {
        let mut schedule = FeedSchedule::default();
        let start = Instant::now();
        let lists = || {
            vec![
                ("al_1".to_owned(), source(600)),
                ("al_2".to_owned(), source(30)),
            ]
        };
        assert_eq!(
            ids(&schedule.due(lists(), start)),
            ["al_1", "al_2"],
            "new: at once"
        );
        assert!(
            schedule
                .due(lists(), start + Duration::from_secs(29))
                .is_empty()
        );
        let later = start + Duration::from_secs(30);
        assert_eq!(ids(&schedule.due(lists(), later)), ["al_2"]);
        schedule.retry_soon("al_1", &source(600), later);
        let retry = later + RETRY_AFTER_FAILURE;
        assert_eq!(ids(&schedule.due(lists(), retry)), ["al_1", "al_2"]);
        // A list that no longer follows a source is forgotten: due at once if it does again.
        assert!(schedule.due(Vec::new(), retry).is_empty());
        assert_eq!(ids(&schedule.due(lists(), retry)), ["al_1", "al_2"]);
    }

    #[test]
    fn the_same_refusal_is_news_once() {
        let mut schedule = FeedSchedule::default();
        assert!(schedule.note_refusal("al_1", "reading it: 404"));
        assert!(!schedule.note_refusal("al_1", "reading it: 404"));
        assert!(schedule.note_refusal("al_1", "reading it: 500"));
        schedule.note_applied("al_1");
        assert!(
            schedule.note_refusal("al_1", "reading it: 500"),
            "news after a success"
        );
    }
}
