//! The maps the driver uses, taken from the loaded object once with their types, which of
//! them belong to one object, and the lengths of the tables sized to the policies.

use allowlist_common::flow_filter::{FlowFilterLine, MAP_FLOW_FILTER};
use allowlist_common::preview::{MAP_PREVIEW_SOURCES, PreviewKey, PreviewSeen};
use allowlist_common::ranges::short::{MAP_V4_SHORT, MAP_V6_SHORT};
use allowlist_common::ranges::v4::{MAP_V4_BUCKETS, MAP_V4_LEAVES, MAP_V4_SUMMARY, leaf_capacity};
use allowlist_common::ranges::v6::{
    MAP_V6_BUCKETS, MAP_V6_HEADERS, MAP_V6_RULES, MAP_V6_STARTS, MAP_V6_SUMMARY,
};
use allowlist_common::ranges::{line_capacity, range_capacity};
use allowlist_common::{
    FlowKey, FlowState, MAP_CLOCK, MAP_CONFIG, MAP_CONFIG_SLOT, MAP_COUNTERS, MAP_FLOWS,
    MAP_GENERATION_RECORDS, MAP_INTERFACE_SLOTS, MAP_PROTECTED_PORTS, MAP_REPLY_PORTS,
    MAP_RULE_HITS, MAP_TOP_SOURCES, RuleStats, SourceKey, SourceSeen,
};
use aya::Ebpf;
use aya::maps::{Array, HashMap, MapData, MapError, PerCpuArray, PerCpuHashMap};

use super::error::{DataplaneError, map_error};

/// The maps whose content belongs to one loaded object: its configuration, its generations'
/// tables and the hit array, sized to the policies in force (see [`super::capacity`]). A
/// resize makes them again for a new object, whose program takes over the links. Every
/// other map of the object (counters, flows, refused sources, interface slots, the clock,
/// the reply settings, aya-log's ring) is shared by every object of a pin directory.
pub(super) const INSTANCE_MAPS: [&str; 15] = [
    MAP_CONFIG,
    MAP_CONFIG_SLOT,
    MAP_GENERATION_RECORDS,
    MAP_RULE_HITS,
    MAP_PROTECTED_PORTS,
    MAP_V4_SHORT,
    MAP_V6_SHORT,
    MAP_V4_SUMMARY,
    MAP_V4_BUCKETS,
    MAP_V4_LEAVES,
    MAP_V6_HEADERS,
    MAP_V6_SUMMARY,
    MAP_V6_BUCKETS,
    MAP_V6_STARTS,
    MAP_V6_RULES,
];

/// Leaves of the IPv4 leaf array for policies of up to `prefixes` prefixes: a region of
/// [`leaf_capacity`] leaves for each of `generations` generations.
pub(super) fn v4_leaves_len(prefixes: u32, generations: u32) -> u32 {
    leaf_capacity(prefixes).saturating_mul(generations)
}

/// Lines of a bucket array for policies of up to `prefixes` prefixes of its family: a
/// region of [`line_capacity`] lines for each of `generations` generations.
pub(super) fn lines_len(prefixes: u32, generations: u32) -> u32 {
    line_capacity(prefixes).saturating_mul(generations)
}

/// Words of the IPv6 range rule array: a region of [`range_capacity`] ranges for each of
/// `generations` generations, two to a word.
pub(super) fn rules_len(prefixes: u32, generations: u32) -> u32 {
    (range_capacity(prefixes) / 2).saturating_mul(generations)
}

/// Elements of the IPv6 range start array: a region of [`range_capacity`] ranges for each
/// of `generations` generations.
pub(super) fn v6_starts_len(prefixes: u32, generations: u32) -> u32 {
    range_capacity(prefixes).saturating_mul(generations)
}

/// The typed handles of the maps the counters, flows, previews and settings use (the
/// configuration, generations and range tables have types of their own).
pub(super) struct Maps {
    /// The remote ports whose traffic opens reply flows, where that is restricted.
    pub(super) reply_ports: Array<MapData, u64>,
    /// Packet counters per interface slot.
    pub(super) counters: PerCpuArray<MapData, u64>,
    /// Interface index to counter slot.
    pub(super) interface_slots: Array<MapData, u32>,
    /// The coarse clock user space keeps.
    pub(super) clock: Array<MapData, u64>,
    /// Hits, last hit and deadline per rule, shared by the CPUs.
    pub(super) rule_hits: Array<MapData, RuleStats>,
    /// The sampled refused sources.
    pub(super) top_sources: PerCpuHashMap<MapData, SourceKey, SourceSeen>,
    /// The sources a preview's candidate would treat otherwise.
    pub(super) preview_sources: PerCpuHashMap<MapData, PreviewKey, PreviewSeen>,
    /// The flows the host started.
    pub(super) flows: HashMap<MapData, FlowKey, FlowState>,
    /// The two filters of those flows.
    pub(super) flow_filter: Array<MapData, FlowFilterLine>,
}

impl Maps {
    /// Takes the maps no other type of the driver owns out of `ebpf`.
    pub(super) fn take(ebpf: &mut Ebpf) -> Result<Maps, DataplaneError> {
        Ok(Maps {
            reply_ports: take(ebpf, MAP_REPLY_PORTS)?,
            counters: take(ebpf, MAP_COUNTERS)?,
            interface_slots: take(ebpf, MAP_INTERFACE_SLOTS)?,
            clock: take(ebpf, MAP_CLOCK)?,
            rule_hits: take(ebpf, MAP_RULE_HITS)?,
            top_sources: take(ebpf, MAP_TOP_SOURCES)?,
            preview_sources: take(ebpf, MAP_PREVIEW_SOURCES)?,
            flows: take(ebpf, MAP_FLOWS)?,
            flow_filter: take(ebpf, MAP_FLOW_FILTER)?,
        })
    }
}

/// Takes the map `name` out of `ebpf`, typed.
pub(super) fn take<T>(ebpf: &mut Ebpf, name: &'static str) -> Result<T, DataplaneError>
where
    T: TryFrom<aya::maps::Map, Error = MapError>,
{
    let map = ebpf.take_map(name).ok_or(DataplaneError::Missing(name))?;
    T::try_from(map).map_err(map_error(name))
}
