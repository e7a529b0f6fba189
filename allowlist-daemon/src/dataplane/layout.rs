//! The embedded eBPF object, and the layout the pinned maps must have to be reused, read
//! from it: each map's type, key and value sizes and length as the object declares them,
//! with the lengths the loader sets from the capacity ([`sized_len`]) in place of the
//! object's.
//! Nothing here restates the program's maps: a map added, retyped or resized in the eBPF
//! crate changes what pins must be, and the test below fails until the layout version
//! changes with it.

use allowlist_common::ranges::v4::MAP_V4_BUCKETS;
use allowlist_common::ranges::v4::MAP_V4_LEAVES;
use allowlist_common::ranges::v6::{MAP_V6_BUCKETS, MAP_V6_RULES, MAP_V6_STARTS};
use allowlist_common::{MAP_FLOWS, MAP_RULE_HITS};
use aya::maps::MapType;
use aya_obj::EbpfSectionKind;
use aya_obj::generated::bpf_map_type;

use super::error::DataplaneError;
use super::maps::{lines_len, rules_len, v4_leaves_len, v6_starts_len};
use super::types::Capacity;

/// The eBPF object built from `allowlist-ebpf` by the build script: the layouts are read
/// from it, and it is what [`super::load`] loads.
pub(super) static OBJECT: &[u8] =
    aya::include_bytes_aligned!(concat!(env!("OUT_DIR"), "/allowlist"));

/// Maps only the benchmark's build of the object has: sized at load, never pinned.
#[cfg(feature = "bench")]
pub(super) const UNPINNED: [&str; 2] = ["BENCH_TRIE_V4", "BENCH_TRIE_V6"];
/// Maps only the benchmark's build of the object has (none in this build).
#[cfg(not(feature = "bench"))]
pub(super) const UNPINNED: [&str; 0] = [];

/// What a pinned map must be to be reused.
#[derive(Debug, Clone)]
pub(super) struct MapLayout {
    /// Its name in the object.
    pub(super) name: String,
    /// Its type.
    pub(super) map_type: MapType,
    /// Key size in bytes.
    pub(super) key_size: u32,
    /// Value size in bytes.
    pub(super) value_size: u32,
    /// Capacity.
    pub(super) max_entries: u32,
}

/// The length the loader gives the map `name` for `capacity`, when it sizes that map; the
/// others keep the length the object declares.
pub(super) fn sized_len(name: &str, capacity: Capacity) -> Option<u32> {
    let Capacity {
        rules,
        v4_prefixes,
        v6_prefixes,
        generations,
        flows,
    } = capacity;
    match name {
        MAP_RULE_HITS => Some(rules.max(1)),
        MAP_V4_BUCKETS => Some(lines_len(v4_prefixes, generations)),
        MAP_V4_LEAVES => Some(v4_leaves_len(v4_prefixes, generations)),
        MAP_V6_BUCKETS => Some(lines_len(v6_prefixes, generations)),
        MAP_V6_STARTS => Some(v6_starts_len(v6_prefixes, generations)),
        MAP_V6_RULES => Some(rules_len(v6_prefixes, generations)),
        MAP_FLOWS => Some(flows),
        _ => None,
    }
}

/// The layout of every map the object declares (not its global data, nor the
/// [`UNPINNED`] ones), by name, with the lengths of `capacity`.
pub(super) fn object_layouts(capacity: Capacity) -> Result<Vec<MapLayout>, DataplaneError> {
    let object = aya_obj::Object::parse(OBJECT).map_err(DataplaneError::Object)?;
    let mut layouts = Vec::new();
    for (name, map) in &object.maps {
        let declared = matches!(
            map.section_kind(),
            EbpfSectionKind::Maps | EbpfSectionKind::BtfMaps
        );
        if !declared || UNPINNED.contains(&name.as_str()) {
            continue;
        }
        let map_type = bpf_map_type::try_from(map.map_type())
            .ok()
            .and_then(|raw| MapType::try_from(raw).ok())
            .ok_or_else(|| DataplaneError::UnknownMapType(name.clone()))?;
        layouts.push(MapLayout {
            name: name.clone(),
            map_type,
            key_size: map.key_size(),
            value_size: map.value_size(),
            max_entries: sized_len(name, capacity).unwrap_or(map.max_entries()),
        });
    }
    layouts.sort_by(|a, b| a.name.cmp(&b.name));
    Ok(layouts)
}

#[cfg(test)]
mod tests {
    use std::fmt::Write as _;

    use allowlist_common::flow_filter::FlowFilterLine;
    use allowlist_common::ranges::short::{ShortV4, ShortV6};
    use allowlist_common::ranges::{
        BUCKET_COUNT, RangeBucket, Regions, SUMMARY_BUCKETS, v4::DIRECT_LEAVES, v4::LEAF_RANGES,
        v4::V4_INLINE_RANGES, v4::V4Leaf, v6::V6_INLINE_RANGES, v6::V6Header,
    };
    use allowlist_common::{
        Config, FlowKey, FlowState, GENERATIONS, GenerationRecord, LAYOUT_VERSION, RuleStats,
        SourceKey, SourceSeen,
    };
    use sha2::{Digest as _, Sha256};

    use super::super::maps::INSTANCE_MAPS;
    use super::*;

    /// A capacity of `rules` rules, `prefixes` IPv4 prefixes and half as many IPv6 ones.
    fn capacity(rules: u32, prefixes: u32, generations: u32) -> Capacity {
        Capacity {
            rules,
            v4_prefixes: prefixes,
            v6_prefixes: prefixes / 2,
            generations,
            flows: 4096,
        }
    }

    /// What the pins of a layout version hold: each map's type, key, value and length at a
    /// few capacities, the sizes of the types the maps hold and the constants of the tables.
    fn layout_description() -> String {
        let mut text = String::new();
        let capacities = [
            capacity(1, 0, GENERATIONS),
            capacity(1000, 10_000, GENERATIONS),
            capacity(3_000_000, 1_500_000, 2),
        ];
        for capacity in capacities {
            for layout in object_layouts(capacity).expect("layouts") {
                let MapLayout {
                    name,
                    map_type,
                    key_size,
                    value_size,
                    max_entries,
                } = layout;
                let _ = writeln!(
                    text,
                    "{name} {map_type:?} {key_size} {value_size} {max_entries}"
                );
            }
        }
        let sizes = [
            size_of::<Config>(),
            size_of::<GenerationRecord>(),
            size_of::<RuleStats>(),
            size_of::<RangeBucket>(),
            size_of::<V4Leaf>(),
            size_of::<V6Header>(),
            size_of::<ShortV4>(),
            size_of::<ShortV6>(),
            size_of::<Regions>(),
            size_of::<FlowKey>(),
            size_of::<FlowState>(),
            size_of::<SourceKey>(),
            size_of::<SourceSeen>(),
            size_of::<FlowFilterLine>(),
        ];
        let constants = [
            BUCKET_COUNT,
            SUMMARY_BUCKETS,
            LEAF_RANGES,
            V4_INLINE_RANGES,
            DIRECT_LEAVES,
            V6_INLINE_RANGES,
            GENERATIONS,
        ];
        let _ = writeln!(text, "{sizes:?} {constants:?}");
        text
    }

    /// Fails when the layout changes and the version does not: pins of the old layout
    /// would be reused by a program that reads them otherwise.
    #[test]
    fn a_new_layout_has_a_new_version() {
        let digest = Sha256::digest(layout_description());
        let digest: String = digest[..8].iter().map(|b| format!("{b:02x}")).collect();
        assert_eq!(
            (LAYOUT_VERSION, digest.as_str()),
            (12, "87247356e44c3940"),
            "the maps' layout changed: bump LAYOUT_VERSION, then record the new digest here"
        );
    }

    #[test]
    fn the_object_declares_every_map_the_driver_takes_and_sizes() {
        let layouts = object_layouts(capacity(1000, 10_000, GENERATIONS)).expect("layouts");
        let names: Vec<&str> = layouts.iter().map(|layout| layout.name.as_str()).collect();
        for name in INSTANCE_MAPS {
            assert!(names.contains(&name), "{name} in {names:?}");
        }
        let leaves = layouts
            .iter()
            .find(|layout| layout.name == MAP_V4_LEAVES)
            .expect("leaves");
        assert_eq!(
            (leaves.map_type, leaves.value_size, leaves.max_entries),
            (
                MapType::Array,
                size_of::<V4Leaf>() as u32,
                v4_leaves_len(10_000, 3)
            )
        );
    }
}
