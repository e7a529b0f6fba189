//! Reading the counters through handles of their own: packets per interface slot, hits and
//! last hit per rule (in batches), flows, refused sources. [`Readings`] is separate from the
//! driver so that it can be used from any thread while the driver writes a policy: reads
//! never wait for writes.

use std::ops::Range;
use std::os::fd::AsFd as _;
use std::sync::{Arc, PoisonError, RwLock};
use std::time::Duration;

use allowlist_common::preview::{MAP_PREVIEW_SOURCES, PreviewKey, PreviewSeen};
use allowlist_common::{
    Counter, FlowKey, FlowState, MAP_COUNTERS, MAP_FLOWS, MAP_RULE_HITS, MAP_TOP_SOURCES,
    MAX_INTERFACES, RuleId, RuleStats, SourceKey, SourceSeen,
};
use aya::maps::{Array, HashMap, IterableMap, Map, MapData, MapError, PerCpuArray, PerCpuHashMap};

use super::clock::coarse_now_ns;
use super::codec::source_address;
use super::error::{DataplaneError, batch_error, map_error};
use super::maps::Maps;
use super::preview::PreviewSource;
use super::sys::{Access, ArrayWindow, BatchMap};
use super::types::{Counters, FlowStats, RuleUse, SourceNoted};

/// Rules mapped at once when going through the rule hit array: 4 MiB.
const RULE_WINDOW: usize = 1 << 18;

/// Maps rules `rules` of the rule hit array `map`, a window at a time, and calls `visit` with
/// each window and the rule its first element holds.
pub(super) fn each_rule_window(
    map: &MapData,
    rules: Range<usize>,
    access: Access,
    mut visit: impl FnMut(usize, &ArrayWindow<RuleStats>),
) -> Result<(), DataplaneError> {
    for first in rules.clone().step_by(RULE_WINDOW) {
        let len = (rules.end - first).min(RULE_WINDOW);
        let window = ArrayWindow::map(map, first, len, access).map_err(|source| {
            DataplaneError::Mapping {
                name: MAP_RULE_HITS,
                source,
            }
        })?;
        visit(first, &window);
    }
    Ok(())
}

/// Interfaces with a counter slot of their own, and the slot; shared with the driver, which
/// adds one per interface it attaches to.
pub(super) type Slots = Arc<RwLock<Vec<(String, u32)>>>;

/// Handles on the maps that count, for reading.
pub struct Readings {
    counters: PerCpuArray<MapData, u64>,
    /// The rule hit array, shared by every set of handles: a resize replaces it for all.
    rule_hits: Arc<RwLock<RuleHits>>,
    flows: HashMap<MapData, FlowKey, FlowState>,
    top_sources: PerCpuHashMap<MapData, SourceKey, SourceSeen>,
    preview_sources: PerCpuHashMap<MapData, PreviewKey, PreviewSeen>,
    slots: Slots,
    cpus: usize,
}

/// A handle on the rule hit array, and its length.
struct RuleHits {
    array: Array<MapData, RuleStats>,
    capacity: u32,
}

/// Hits and last hit of the rules below some id, read at one moment.
#[derive(Debug, Clone, Default)]
pub struct RuleTable {
    /// Per rule id: how it was used.
    stats: Vec<RuleStats>,
    /// The coarse clock when read.
    read_at_ns: u64,
}

impl RuleTable {
    /// How much `rule` was used when the table was read; rules beyond it: never.
    pub fn get(&self, rule: RuleId) -> RuleUse {
        let stats = self.stats.get(rule as usize).copied().unwrap_or_default();
        RuleUse {
            hits: stats.hits(),
            last_hit_ago: (stats.last_hit_s != 0).then(|| {
                let read_at = Duration::from_nanos(self.read_at_ns);
                read_at.saturating_sub(Duration::from_secs(u64::from(stats.last_hit_s)))
            }),
        }
    }

    /// Packets `rule` allowed (an estimate beyond [`allowlist_common::rule_stats::EXACT_HITS`]).
    pub fn hits(&self, rule: RuleId) -> u64 {
        self.stats.get(rule as usize).map_or(0, RuleStats::hits)
    }
}

/// A handle of its own on the map behind `map`: a duplicate of its descriptor (getting a
/// map by id would need CAP_SYS_ADMIN, which the daemon does without).
fn duplicate(map: &MapData, name: &'static str) -> Result<MapData, DataplaneError> {
    let fd = map.fd().as_fd().try_clone_to_owned().map_err(|io_error| {
        map_error(name)(MapError::SyscallError(aya::sys::SyscallError {
            call: "dup",
            io_error,
        }))
    })?;
    MapData::from_fd(fd).map_err(map_error(name))
}

/// A typed handle of its own on `map`, a map of the kind `kind` makes.
fn own<T: TryFrom<Map, Error = MapError>>(
    map: &MapData,
    kind: fn(MapData) -> Map,
    name: &'static str,
) -> Result<T, DataplaneError> {
    T::try_from(kind(duplicate(map, name)?)).map_err(map_error(name))
}

impl Readings {
    /// Handles of their own on the counting maps of `maps`, whose rule hit array holds
    /// `rule_capacity` rules.
    pub(super) fn new(
        maps: &Maps,
        slots: Slots,
        rule_capacity: u32,
    ) -> Result<Self, DataplaneError> {
        Ok(Readings {
            counters: own(maps.counters.map(), Map::PerCpuArray, MAP_COUNTERS)?,
            rule_hits: Arc::new(RwLock::new(RuleHits {
                array: own(maps.rule_hits.map(), Map::Array, MAP_RULE_HITS)?,
                capacity: rule_capacity,
            })),
            flows: own(maps.flows.map(), Map::LruHashMap, MAP_FLOWS)?,
            top_sources: own(
                maps.top_sources.map(),
                Map::PerCpuLruHashMap,
                MAP_TOP_SOURCES,
            )?,
            preview_sources: own(
                maps.preview_sources.map(),
                Map::PerCpuLruHashMap,
                MAP_PREVIEW_SOURCES,
            )?,
            slots,
            cpus: aya::util::nr_cpus().map_err(|(_, err)| DataplaneError::Cpus(err))?,
        })
    }

    /// Another set of handles on the same maps, for another thread.
    pub fn try_clone(&self) -> Result<Self, DataplaneError> {
        Ok(Readings {
            counters: own(self.counters.map(), Map::PerCpuArray, MAP_COUNTERS)?,
            rule_hits: self.rule_hits.clone(),
            flows: own(self.flows.map(), Map::LruHashMap, MAP_FLOWS)?,
            top_sources: own(
                self.top_sources.map(),
                Map::PerCpuLruHashMap,
                MAP_TOP_SOURCES,
            )?,
            preview_sources: own(
                self.preview_sources.map(),
                Map::PerCpuLruHashMap,
                MAP_PREVIEW_SOURCES,
            )?,
            slots: self.slots.clone(),
            cpus: self.cpus,
        })
    }

    /// The packet counters of every interface, summed over CPUs.
    pub fn counters(&self) -> Result<Counters, DataplaneError> {
        let mut totals = Counters::default();
        for slot in 0..=MAX_INTERFACES {
            let counters = self.slot_counters(slot)?;
            for (total, value) in totals.0.iter_mut().zip(counters.0) {
                *total = total.wrapping_add(value);
            }
        }
        Ok(totals)
    }

    /// The packet counters of each interface attached to, then of the others together
    /// (named `other`: test runs, and interfaces beyond [`MAX_INTERFACES`]).
    pub fn interface_counters(&self) -> Result<Vec<(String, Counters)>, DataplaneError> {
        let slots = self
            .slots
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .clone();
        let mut all = Vec::new();
        for (interface, slot) in slots {
            all.push((interface, self.slot_counters(slot)?));
        }
        all.push(("other".to_owned(), self.slot_counters(0)?));
        Ok(all)
    }

    fn slot_counters(&self, slot: u32) -> Result<Counters, DataplaneError> {
        let mut counters = Counters::default();
        for counter in Counter::ALL {
            counters.0[counter as usize] = self.counter(counter.index(slot))?;
        }
        Ok(counters)
    }

    /// One counter at `index` of the counter map, summed over CPUs.
    fn counter(&self, index: u32) -> Result<u64, DataplaneError> {
        let values = self
            .counters
            .get(&index, 0)
            .map_err(map_error(MAP_COUNTERS))?;
        Ok(values.iter().copied().fold(0u64, u64::wrapping_add))
    }

    /// How full the flow map is (a walk of the map: its cost grows with the flows in it).
    pub fn flow_stats(&self) -> Result<FlowStats, DataplaneError> {
        let flows = BatchMap::<FlowKey, FlowState>::new(self.flows.map(), None)
            .map_err(batch_error(MAP_FLOWS))?;
        let mut live = 0u64;
        flows
            .lookup(usize::MAX, |_, _| live += 1)
            .map_err(batch_error(MAP_FLOWS))?;
        let mut recorded = 0u64;
        for slot in 0..=MAX_INTERFACES {
            recorded = recorded.wrapping_add(self.counter(Counter::FlowsRecorded.index(slot))?);
        }
        Ok(FlowStats {
            live,
            recorded,
            evicted: recorded.saturating_sub(live),
        })
    }

    /// Makes every set of handles read the rule hit array of `maps` (of `capacity` rules)
    /// from now on: after a resize.
    pub(super) fn follow_rule_hits(
        &self,
        maps: &Maps,
        capacity: u32,
    ) -> Result<(), DataplaneError> {
        let array = own(maps.rule_hits.map(), Map::Array, MAP_RULE_HITS)?;
        *self
            .rule_hits
            .write()
            .unwrap_or_else(PoisonError::into_inner) = RuleHits { array, capacity };
        Ok(())
    }

    /// How many packets `rule` has allowed.
    pub fn rule_hits(&self, rule: RuleId) -> Result<u64, DataplaneError> {
        let hits = self
            .rule_hits
            .read()
            .unwrap_or_else(PoisonError::into_inner);
        if rule >= hits.capacity {
            return Err(DataplaneError::RuleOutOfRange {
                rule,
                capacity: hits.capacity,
            });
        }
        let stats = hits.array.get(&rule, 0).map_err(map_error(MAP_RULE_HITS))?;
        Ok(stats.hits())
    }

    /// Hits and last hit of rules `0..len` (at most the capacity), read from memory a window
    /// at a time.
    pub fn rule_table(&self, len: u32) -> Result<RuleTable, DataplaneError> {
        let hits = self
            .rule_hits
            .read()
            .unwrap_or_else(PoisonError::into_inner);
        let len = len.min(hits.capacity) as usize;
        let mut table = RuleTable {
            stats: vec![RuleStats::default(); len],
            read_at_ns: coarse_now_ns(),
        };
        each_rule_window(hits.array.map(), 0..len, Access::Read, |first, window| {
            for (index, stats) in table.stats[first..first + window.len()]
                .iter_mut()
                .enumerate()
            {
                if let Some(read) = window.get(index) {
                    *stats = read;
                }
            }
        })?;
        Ok(table)
    }

    /// The refused sources noted (at most [`allowlist_common::TOP_SOURCES_CAPACITY`], the
    /// least recently seen forgotten first).
    pub fn top_sources(&self) -> Result<Vec<SourceNoted>, DataplaneError> {
        let now = coarse_now_ns();
        let mut sources = Vec::new();
        for item in self.top_sources.iter() {
            let (key, per_cpu) = item.map_err(map_error(MAP_TOP_SOURCES))?;
            let noted = per_cpu.iter().map(|seen| seen.packets).sum();
            let last_seen_ns = per_cpu
                .iter()
                .map(|seen| seen.last_seen_ns)
                .max()
                .unwrap_or(0);
            sources.push(SourceNoted {
                address: source_address(&key),
                noted,
                last_seen_ago: Duration::from_nanos(now.saturating_sub(last_seen_ns)),
            });
        }
        Ok(sources)
    }

    /// The sources a preview's candidate would treat otherwise (at most
    /// [`allowlist_common::preview::PREVIEW_SOURCES_CAPACITY`], the least recently seen
    /// forgotten first), busiest first.
    pub fn preview_sources(&self) -> Result<Vec<PreviewSource>, DataplaneError> {
        super::preview::read_sources(&self.preview_sources)
    }
}
