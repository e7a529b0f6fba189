//! How much the policy is used, for readers: packet counters, hits per entry and per list,
//! the busiest entries, flows, refused sources. Read through handles of the counting maps of
//! their own, never through the service: no read waits for a write. Hits are read in batches;
//! when there are many rules and flows they are kept for [`MAX_AGE`], so that many readers cost
//! one read of the maps.

use std::cmp::Reverse;
use std::collections::{BTreeMap, BinaryHeap};
use std::net::IpAddr;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use allowlist_common::{Counter, RuleId};
use ipnet::IpNet;
use serde::Serialize;
use time::OffsetDateTime;

use super::Snapshot;
use crate::dataplane::{Counters, DataplaneError, FlowStats, MapMemory, Readings, RuleTable};
use crate::model::{EntryId, rfc3339};

/// How long hits and flow counts read from the kernel are used before they are read again,
/// when there are more than [`ALWAYS_FRESH`] rules and flows.
pub const MAX_AGE: Duration = Duration::from_secs(1);

/// Rules and flows that are read afresh for every reader: a few batches, well under a
/// millisecond each.
const ALWAYS_FRESH: u64 = 65_536;

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

/// Hits of one allowlist.
#[derive(Debug, Clone, Serialize)]
pub struct ListHits {
    /// The allowlist.
    pub allowlist_id: String,
    /// Its name.
    pub name: String,
    /// Whether it is enabled.
    pub enabled: bool,
    /// Its entries.
    pub entries: usize,
    /// Packets its entries allowed.
    pub hits: u64,
}

/// Hits of one always-allow prefix.
#[derive(Debug, Clone, Serialize)]
pub struct AlwaysAllowHits {
    /// The prefix.
    pub cidr: IpNet,
    /// Packets it allowed.
    pub hits: u64,
}

/// Packet counters, hits per list and the busiest entries.
#[derive(Debug, Clone, Serialize)]
pub struct Stats {
    /// Totals by counter name.
    pub counters: BTreeMap<&'static str, u64>,
    /// Hits per allowlist.
    pub allowlists: Vec<ListHits>,
    /// The entries with the most hits, busiest first (every entry when there are fewer than
    /// asked for); the hits of every entry are in each list's entries.
    pub entries: Vec<EntryHits>,
    /// Hits per always-allow prefix.
    pub always_allow: Vec<AlwaysAllowHits>,
    /// The flows remembered for replies.
    pub flows: FlowStatsView,
    /// The kernel memory the maps take now.
    pub kernel_memory: KernelMemory,
}

/// The kernel memory the maps take, as the kernel accounts it.
#[derive(Debug, Clone, Serialize)]
pub struct KernelMemory {
    /// Every map together.
    pub total_bytes: u64,
    /// Every map but the flow table (sized by `--max-flows`, apart from the policy).
    pub without_flows_bytes: u64,
    /// Each map, by name.
    pub maps: Vec<MapMemory>,
}

impl KernelMemory {
    /// The totals of `maps`.
    pub fn of(maps: &[MapMemory]) -> KernelMemory {
        let total_bytes = maps.iter().map(|map| map.bytes).sum();
        let flows: u64 = maps
            .iter()
            .filter(|map| map.map == allowlist_common::MAP_FLOWS)
            .map(|map| map.bytes)
            .sum();
        KernelMemory {
            total_bytes,
            without_flows_bytes: total_bytes - flows,
            maps: maps.to_vec(),
        }
    }
}

/// [`FlowStats`] for the API.
#[derive(Debug, Clone, Copy, Serialize)]
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

/// What was read from the kernel last, and when.
struct Cached {
    read_at: Instant,
    /// Rules `0..bound` are in `table`.
    bound: RuleId,
    table: Arc<RuleTable>,
    flows: FlowStats,
}

/// The counters as readers see them.
pub struct Usage {
    readings: Readings,
    top_sample: u32,
    cached: Mutex<Option<Cached>>,
}

impl Usage {
    /// Reads through `readings`; refused sources are noted one in `top_sample`.
    pub fn new(readings: Readings, top_sample: u32) -> Self {
        Usage {
            readings,
            top_sample,
            cached: Mutex::new(None),
        }
    }

    /// The packet counters.
    pub fn counters(&self) -> Result<Counters, DataplaneError> {
        self.readings.counters()
    }

    /// The packet counters of each interface, then of the others together.
    pub fn interface_counters(&self) -> Result<Vec<(String, Counters)>, DataplaneError> {
        self.readings.interface_counters()
    }

    /// Hits and last hits of the rules of `snapshot`, and the flow counts: read at most
    /// [`MAX_AGE`] ago (readers at the same time share one read).
    pub fn rules_and_flows(
        &self,
        snapshot: &Snapshot,
    ) -> Result<(Arc<RuleTable>, FlowStats), DataplaneError> {
        let mut cached = self.cached.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some(cached) = cached.as_ref()
            && cached.read_at.elapsed() < MAX_AGE
            && cached.bound >= snapshot.rule_bound
            && u64::from(cached.bound) + cached.flows.live > ALWAYS_FRESH
        {
            return Ok((cached.table.clone(), cached.flows));
        }
        let read_at = Instant::now();
        let table = Arc::new(self.readings.rule_table(snapshot.rule_bound)?);
        let flows = self.readings.flow_stats()?;
        tracing::debug!(
            bound = snapshot.rule_bound,
            read_ms = read_at.elapsed().as_millis() as u64,
            "rules read"
        );
        *cached = Some(Cached {
            read_at,
            bound: snapshot.rule_bound,
            table: table.clone(),
            flows,
        });
        Ok((table, flows))
    }

    /// Packet counters, hits per list and per always-allow prefix, flows, and the `top`
    /// entries with the most hits.
    pub fn stats(&self, snapshot: &Snapshot, top: usize) -> Result<Stats, DataplaneError> {
        let counters = self.readings.counters()?;
        let (table, flows) = self.rules_and_flows(snapshot)?;
        let model = &snapshot.model;
        let allowlists = model
            .allowlists()
            .map(|list| ListHits {
                allowlist_id: list.id.clone(),
                name: list.name.clone(),
                enabled: model.is_enabled(&list.id),
                entries: list.entries.len(),
                hits: list
                    .entries
                    .iter()
                    .fold(0u64, |sum, entry| sum.wrapping_add(table.hits(entry.rule))),
            })
            .collect();
        let always_allow = model
            .always_allow()
            .iter()
            .map(|(cidr, rule)| AlwaysAllowHits {
                cidr: *cidr,
                hits: table.hits(*rule),
            })
            .collect();
        Ok(Stats {
            counters: Counter::ALL
                .iter()
                .map(|c| (c.name(), counters.get(*c)))
                .collect(),
            allowlists,
            entries: busiest(snapshot, &table, top),
            always_allow,
            flows: flows.into(),
            kernel_memory: KernelMemory::of(&snapshot.kernel_memory),
        })
    }

    /// The sources refused most often (or that would be, in monitor mode) among those last
    /// seen within `window`: at most `limit`, busiest first.
    pub fn top(&self, window: Duration, limit: usize) -> Result<Top, DataplaneError> {
        let sample = self.top_sample;
        let now = OffsetDateTime::now_utc();
        let mut sources: Vec<TopSource> = self
            .readings
            .top_sources()?
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
}

/// The `top` entries of `snapshot` with the most hits in `table`, busiest first (ties by list
/// and prefix).
fn busiest(snapshot: &Snapshot, table: &RuleTable, top: usize) -> Vec<EntryHits> {
    if top == 0 {
        return Vec::new();
    }
    // A min-heap of the best so far: each entry costs a comparison with the least of them.
    let mut best = BinaryHeap::with_capacity(top + 1);
    for list in snapshot.model.allowlists() {
        for (index, entry) in list.entries.iter().enumerate() {
            best.push(Reverse((
                table.hits(entry.rule),
                Reverse((&list.id, index)),
            )));
            if best.len() > top {
                best.pop();
            }
        }
    }
    let mut busiest: Vec<_> = best.into_iter().map(|Reverse(item)| item).collect();
    busiest.sort_by(|a, b| b.cmp(a));
    busiest
        .into_iter()
        .filter_map(|(hits, Reverse((list_id, index)))| {
            let entry = snapshot.model.allowlist(list_id).ok()?.entries.get(index)?;
            Some(EntryHits {
                allowlist_id: list_id.clone(),
                entry_id: entry.id,
                cidr: entry.cidr,
                hits,
            })
        })
        .collect()
}
