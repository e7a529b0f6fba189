//! The maps the driver uses, taken from the loaded object once with their types, which of
//! them belong to one object, and the lengths of the tables sized to the policies.

use allowlist_common::flow_filter::{FlowFilterLine, MAP_FLOW_FILTER};
use allowlist_common::preview::{MAP_PREVIEW_SOURCES, PreviewKey, PreviewSeen};
use allowlist_common::ranges::short::{MAP_V4_SHORT, MAP_V6_SHORT, ShortV4, ShortV6};
use allowlist_common::ranges::v4::{
    MAP_V4_BUCKETS, MAP_V4_LEAVES, MAP_V4_SUMMARY, V4Leaf, leaf_capacity,
};
use allowlist_common::ranges::v6::{
    MAP_V6_BUCKETS, MAP_V6_HEADERS, MAP_V6_RULES, MAP_V6_STARTS, MAP_V6_SUMMARY, V6Header, V6Words,
};
use allowlist_common::ranges::{RangeBucket, line_capacity, range_capacity};
use allowlist_common::{
    Config, FlowKey, FlowState, GenerationRecord, MAP_CLOCK, MAP_CONFIG, MAP_CONFIG_SLOT,
    MAP_COUNTERS, MAP_FLOWS, MAP_GENERATION_RECORDS, MAP_INTERFACE_SLOTS, MAP_PROTECTED_PORTS,
    MAP_REPLY_PORTS, MAP_RULE_HITS, MAP_TOP_SOURCES, RuleStats, SourceKey, SourceSeen,
};
use aya::Ebpf;
use aya::maps::{Array, HashMap, IterableMap as _, MapData, MapError, PerCpuArray, PerCpuHashMap};

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

/// The typed handles of every map.
pub(super) struct Maps {
    /// Two configuration slots.
    pub(super) config: Array<MapData, Config>,
    /// Which configuration slot is in use.
    pub(super) config_slot: Array<MapData, u32>,
    /// What each generation holds.
    pub(super) generation_records: Array<MapData, GenerationRecord>,
    /// The IPv4 short list of every generation.
    pub(super) v4_short: Array<MapData, ShortV4>,
    /// The IPv6 short list of every generation.
    pub(super) v6_short: Array<MapData, ShortV6>,
    /// The IPv4 range table's summaries, every generation.
    pub(super) v4_summary: Array<MapData, u64>,
    /// The IPv4 range table's buckets, every generation.
    pub(super) v4_buckets: Array<MapData, RangeBucket>,
    /// The IPv4 range table's leaves, every generation.
    pub(super) v4_leaves: Array<MapData, V4Leaf>,
    /// The IPv6 range table's headers, one per generation.
    pub(super) v6_headers: Array<MapData, V6Header>,
    /// The IPv6 range table's summaries, every generation.
    pub(super) v6_summary: Array<MapData, u64>,
    /// The IPv6 range table's buckets, every generation.
    pub(super) v6_buckets: Array<MapData, RangeBucket>,
    /// The IPv6 range table's range starts, every generation.
    pub(super) v6_starts: Array<MapData, V6Words>,
    /// The IPv6 range table's range rules, every generation.
    pub(super) v6_rules: Array<MapData, u64>,
    /// The protected-port bitmap of every generation.
    pub(super) protected_ports: Array<MapData, u64>,
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
    /// The object's own maps (see [`INSTANCE_MAPS`]), by name.
    pub(super) fn instance(&self) -> [(&'static str, &MapData); 15] {
        [
            (MAP_CONFIG, self.config.map()),
            (MAP_CONFIG_SLOT, self.config_slot.map()),
            (MAP_GENERATION_RECORDS, self.generation_records.map()),
            (MAP_RULE_HITS, self.rule_hits.map()),
            (MAP_PROTECTED_PORTS, self.protected_ports.map()),
            (MAP_V4_SHORT, self.v4_short.map()),
            (MAP_V6_SHORT, self.v6_short.map()),
            (MAP_V4_SUMMARY, self.v4_summary.map()),
            (MAP_V4_BUCKETS, self.v4_buckets.map()),
            (MAP_V4_LEAVES, self.v4_leaves.map()),
            (MAP_V6_HEADERS, self.v6_headers.map()),
            (MAP_V6_SUMMARY, self.v6_summary.map()),
            (MAP_V6_BUCKETS, self.v6_buckets.map()),
            (MAP_V6_STARTS, self.v6_starts.map()),
            (MAP_V6_RULES, self.v6_rules.map()),
        ]
    }

    /// Takes every map out of `ebpf`.
    pub(super) fn take(ebpf: &mut Ebpf) -> Result<Maps, DataplaneError> {
        Ok(Maps {
            config: take(ebpf, MAP_CONFIG)?,
            config_slot: take(ebpf, MAP_CONFIG_SLOT)?,
            generation_records: take(ebpf, MAP_GENERATION_RECORDS)?,
            v4_short: take(ebpf, MAP_V4_SHORT)?,
            v6_short: take(ebpf, MAP_V6_SHORT)?,
            v4_summary: take(ebpf, MAP_V4_SUMMARY)?,
            v4_buckets: take(ebpf, MAP_V4_BUCKETS)?,
            v4_leaves: take(ebpf, MAP_V4_LEAVES)?,
            v6_headers: take(ebpf, MAP_V6_HEADERS)?,
            v6_summary: take(ebpf, MAP_V6_SUMMARY)?,
            v6_buckets: take(ebpf, MAP_V6_BUCKETS)?,
            v6_starts: take(ebpf, MAP_V6_STARTS)?,
            v6_rules: take(ebpf, MAP_V6_RULES)?,
            protected_ports: take(ebpf, MAP_PROTECTED_PORTS)?,
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

fn take<T>(ebpf: &mut Ebpf, name: &'static str) -> Result<T, DataplaneError>
where
    T: TryFrom<aya::maps::Map, Error = MapError>,
{
    let map = ebpf.take_map(name).ok_or(DataplaneError::Missing(name))?;
    T::try_from(map).map_err(map_error(name))
}
