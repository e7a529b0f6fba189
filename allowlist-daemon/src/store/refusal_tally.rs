//! Requests refused as unauthenticated, counted instead of recorded one by one: anyone who
//! can reach the API can send them, as fast as it likes. The first from a peer in a minute
//! is recorded whole; the others of that minute are counted and recorded as one summary when
//! the minute is over. At most [`PEERS_PER_WINDOW`] peers are told apart in a minute, the
//! rest are counted together: a minute costs the trail a bounded number of records whatever
//! the traffic.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use super::audit_record::AuditRecord;

/// How long a summary counts.
pub(super) const WINDOW: Duration = Duration::from_secs(60);
/// The most peers told apart in a window.
const PEERS_PER_WINDOW: usize = 256;
/// What the peers beyond [`PEERS_PER_WINDOW`] are counted as.
const OTHER_PEERS: &str = "other peers";

/// The refusals of one peer in the current window, beyond the first.
#[derive(Debug)]
struct Tally {
    more: u64,
    last_request: String,
}

/// The unauthenticated refusals of the current window, by peer.
#[derive(Debug, Default)]
pub(super) struct RefusalTally {
    started: Option<Instant>,
    peers: BTreeMap<String, Tally>,
}

/// What to do with a refusal just noted.
#[derive(Debug, PartialEq, Eq)]
pub(super) enum Noted {
    /// The first from its peer in the window: record it whole.
    First,
    /// Counted in its peer's summary.
    Counted,
}

impl RefusalTally {
    /// Notes a refusal of `request` from `peer` (an address without its port, or a uid) at
    /// `now`; a window that ended is summarized into `ended` first.
    pub(super) fn note(
        &mut self,
        peer: &str,
        request: &str,
        now: Instant,
        ended: &mut Vec<AuditRecord>,
    ) -> Noted {
        ended.extend(self.summaries_due(now));
        self.started.get_or_insert(now);
        let key = if self.peers.contains_key(peer) || self.peers.len() < PEERS_PER_WINDOW {
            peer
        } else {
            OTHER_PEERS
        };
        match self.peers.get_mut(key) {
            Some(tally) => {
                tally.more += 1;
                tally.last_request = request.to_owned();
                Noted::Counted
            }
            None => {
                // Peers beyond the bound are never recorded whole.
                let more = u64::from(key == OTHER_PEERS);
                self.peers.insert(
                    key.to_owned(),
                    Tally {
                        more,
                        last_request: request.to_owned(),
                    },
                );
                match more {
                    0 => Noted::First,
                    _ => Noted::Counted,
                }
            }
        }
    }

    /// The summaries of the window, once it is over at `now` (then a new one starts).
    pub(super) fn summaries_due(&mut self, now: Instant) -> Vec<AuditRecord> {
        match self.started {
            Some(started) if now.duration_since(started) >= WINDOW => {}
            _ => return Vec::new(),
        }
        self.started = None;
        std::mem::take(&mut self.peers)
            .into_iter()
            .filter(|(_, tally)| tally.more > 0)
            .map(|(peer, tally)| AuditRecord {
                peer: Some(peer),
                request: Some(tally.last_request),
                status: Some(401),
                count: Some(tally.more),
                reason: Some("unauthorized: missing or wrong bearer token".into()),
                ..AuditRecord::event(
                    "unauthenticated",
                    "refused",
                    format!(
                        "refused {} more unauthenticated requests within a minute",
                        tally.more
                    ),
                )
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_flood_costs_two_records_per_peer_and_a_bounded_number_of_peers() {
        let mut tally = RefusalTally::default();
        let start = Instant::now();
        let mut ended = Vec::new();
        assert_eq!(
            tally.note("10.0.0.1", "GET /x", start, &mut ended),
            Noted::First
        );
        for _ in 0..699 {
            assert_eq!(
                tally.note("10.0.0.1", "GET /x", start, &mut ended),
                Noted::Counted
            );
        }
        let mut firsts = 0;
        for peer in 0..1000 {
            let peer = format!("10.1.{}.{}", peer / 256, peer % 256);
            firsts += usize::from(tally.note(&peer, "GET /y", start, &mut ended) == Noted::First);
        }
        assert_eq!(firsts, PEERS_PER_WINDOW - 1, "one peer is known already");
        assert!(ended.is_empty());
        assert!(tally.summaries_due(start + WINDOW / 2).is_empty());
        let summaries = tally.summaries_due(start + WINDOW);
        let counted: Vec<(&str, u64)> = summaries
            .iter()
            .map(|r| (r.peer.as_deref().unwrap_or(""), r.count.unwrap_or(0)))
            .collect();
        assert_eq!(
            counted,
            [
                ("10.0.0.1", 699),
                (OTHER_PEERS, 1000 - (PEERS_PER_WINDOW as u64 - 1))
            ]
        );
        assert_eq!(
            tally.note("10.0.0.1", "GET /x", start + WINDOW, &mut ended),
            Noted::First,
            "a new window"
        );
    }
}
