//! What the service reads and reports: counters, hits per entry, refused sources, stats.

use std::collections::BTreeMap;
use std::net::IpAddr;
use std::time::Duration;

use allowlist_common::{Counter, Mode};
use ipnet::IpNet;
use serde::Serialize;
use time::OffsetDateTime;

use super::{Service, ServiceError};
use crate::dataplane::{Counters, DataplaneError, FlowStats};
use crate::model::{EntryId, rfc3339};

/// Hits of one allowlist entry.
#[derive(Debug, Clone, Serialize)]
pub struct EntryHits {
    /// The allowlist.
    pub allowlist_id: String,
    /// The entry.
    pub entry_id: EntryId,
    /// Its prefix.
    pub cidr: IpNet,
    /// Packets it allowed.
    pub hits: u64,
}

/// How much one entry was used.
#[derive(Debug, Clone, Copy)]
pub struct EntryUse {
    /// Packets it allowed since it was created (or the program loaded).
    pub hits: u64,
    /// When it last allowed one; `None`: never.
    pub last_hit: Option<OffsetDateTime>,
}

/// The sources refused most often in a recent window.
#[derive(Debug, Clone, Serialize)]
pub struct Top {
    /// One refused packet in `sample` was noted (0: noting is off); packet counts are
    /// estimates scaled by it.
    pub sample: u32,
    /// Only sources last seen this recently are listed.
    pub window_seconds: u64,
    /// Busiest first.
    pub sources: Vec<TopSource>,
}

/// One refused source.
#[derive(Debug, Clone, Serialize)]
pub struct TopSource {
    /// The source address.
    pub address: IpAddr,
    /// Refused packets (estimated from the sample) since the map first noted it.
    pub packets: u64,
    /// When a packet of it was last noted (RFC 3339).
    pub last_seen: String,
}

/// Hits of one always-allow prefix.
#[derive(Debug, Clone, Serialize)]
pub struct AlwaysAllowHits {
    /// The prefix.
    pub cidr: IpNet,
    /// Packets it allowed.
    pub hits: u64,
}

/// Packet counters and per-entry hits.
#[derive(Debug, Clone, Serialize)]
pub struct Stats {
    /// Totals by counter name.
    pub counters: BTreeMap<&'static str, u64>,
    /// Hits per allowlist entry.
    pub entries: Vec<EntryHits>,
    /// Hits per always-allow prefix.
    pub always_allow: Vec<AlwaysAllowHits>,
    /// The flows remembered for replies.
    pub flows: FlowStatsView,
}

/// [`FlowStats`] for the API.
#[derive(Debug, Clone, Serialize)]
pub struct FlowStatsView {
    /// Flows in the map now.
    pub live: u64,
    /// Flows recorded since the program was loaded.
    pub recorded: u64,
    /// Flows pushed out by newer ones because the map was full.
    pub evicted: u64,
}

impl From<FlowStats> for FlowStatsView {
    fn from(stats: FlowStats) -> Self {
        FlowStatsView {
            live: stats.live,
            recorded: stats.recorded,
            evicted: stats.evicted,
        }
    }
}

impl Service {
    /// Moves the clock the program notes last hits with (every 100 ms).
    pub fn tick_clock(&mut self) -> Result<(), DataplaneError> {
        self.dataplane.tick_clock()
    }

    /// Changes reverted because they were not acknowledged in time, since the daemon started.
    pub fn reverts(&self) -> u64 {
        self.reverts
    }

    /// The program's mode now: `off` when not enforcing, else `enforce` or `monitor`.
    pub fn mode_name(&self) -> &'static str {
        match (self.model.enforcing(), self.enforce_mode) {
            (false, _) => "off",
            (true, Mode::Monitor) => "monitor",
            (true, _) => "enforce",
        }
    }

    /// The packet counters of each interface, then of the others together.
    pub fn interface_counters(&self) -> Result<Vec<(String, Counters)>, DataplaneError> {
        self.dataplane.interface_counters()
    }

    /// The packet counters.
    pub fn counters(&self) -> Result<Counters, DataplaneError> {
        self.dataplane.counters()
    }

    /// Hits and the time of the last hit of each entry of allowlist `id`, in entry order.
    pub fn entry_use(&self, id: &str) -> Result<Vec<EntryUse>, ServiceError> {
        let now = OffsetDateTime::now_utc();
        self.model
            .allowlist(id)?
            .entries
            .iter()
            .map(|entry| {
                let used = self.dataplane.rule_use(entry.rule)?;
                Ok(EntryUse {
                    hits: used.hits,
                    last_hit: used.last_hit_ago.map(|ago| now - ago),
                })
            })
            .collect()
    }

    /// The sources refused most often (or that would be, in monitor mode) among those last
    /// seen within `window`: at most `limit`, busiest first.
    pub fn top(&self, window: Duration, limit: usize) -> Result<Top, ServiceError> {
        let (noted, sample) = self.dataplane.top_sources()?;
        let now = OffsetDateTime::now_utc();
        let mut sources: Vec<TopSource> = noted
            .into_iter()
            .filter(|source| source.last_seen_ago <= window)
            .map(|source| TopSource {
                address: source.address,
                packets: source.noted.saturating_mul(u64::from(sample.max(1))),
                last_seen: rfc3339(now - source.last_seen_ago),
            })
            .collect();
        sources.sort_by(|a, b| b.packets.cmp(&a.packets).then(a.address.cmp(&b.address)));
        sources.truncate(limit);
        Ok(Top {
            sample,
            window_seconds: window.as_secs(),
            sources,
        })
    }

    /// Packet counters and hits per entry.
    pub fn stats(&self) -> Result<Stats, ServiceError> {
        let counters = self.dataplane.counters()?;
        let mut entries = Vec::new();
        for list in self.model.allowlists() {
            for entry in list.entries.iter() {
                entries.push(EntryHits {
                    allowlist_id: list.id.clone(),
                    entry_id: entry.id,
                    cidr: entry.cidr,
                    hits: self.dataplane.rule_hits(entry.rule)?,
                });
            }
        }
        let always_allow = self
            .model
            .always_allow()
            .iter()
            .map(|(cidr, rule)| {
                Ok(AlwaysAllowHits {
                    cidr: *cidr,
                    hits: self.dataplane.rule_hits(*rule)?,
                })
            })
            .collect::<Result<_, DataplaneError>>()?;
        Ok(Stats {
            counters: Counter::ALL
                .iter()
                .map(|c| (c.name(), counters.get(*c)))
                .collect(),
            entries,
            always_allow,
            flows: self.dataplane.flow_stats()?.into(),
        })
    }
}
