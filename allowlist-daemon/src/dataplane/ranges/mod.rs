//! Writing a generation of the range tables: each family's table built from the policy
//! ([`v4`], [`v6`], from the change [`points`]) and written as it is made, through small
//! memory mappings ([`writer`]), into a generation no packet reads; with each family's
//! [`short`] list.

mod points;
mod short;
mod v4;
mod v6;
mod writer;

use allowlist_common::ranges::short::{MAP_V4_SHORT, MAP_V6_SHORT, ShortV4, ShortV6};
use allowlist_common::ranges::v4::{MAP_V4_BUCKETS, MAP_V4_LEAVES, MAP_V4_SUMMARY, V4Leaf};
use allowlist_common::ranges::v6::{
    MAP_V6_BUCKETS, MAP_V6_HEADERS, MAP_V6_RULES, MAP_V6_STARTS, MAP_V6_SUMMARY, V6Header, V6Words,
};
use allowlist_common::ranges::{RangeBucket, Regions, SUMMARY_WORDS};
use aya::Ebpf;
use aya::maps::{Array, IterableMap as _, MapData};

use super::error::DataplaneError;
use super::maps::take;
use super::types::Capacity;
use crate::policy::Policy;
use writer::{PackedWriter, RegionWriter, copy_region};

/// The range tables and short lists of one object, every generation's region side by side.
pub(super) struct RangeTables {
    /// Where each generation's region starts in each map.
    regions: Regions,
    /// The IPv4 short list of every generation.
    v4_short: Array<MapData, ShortV4>,
    /// The IPv6 short list of every generation.
    v6_short: Array<MapData, ShortV6>,
    /// The IPv4 range table's summaries, every generation.
    v4_summary: Array<MapData, u64>,
    /// The IPv4 range table's buckets, every generation.
    v4_buckets: Array<MapData, RangeBucket>,
    /// The IPv4 range table's leaves, every generation.
    v4_leaves: Array<MapData, V4Leaf>,
    /// The IPv6 range table's headers, one per generation.
    v6_headers: Array<MapData, V6Header>,
    /// The IPv6 range table's summaries, every generation.
    v6_summary: Array<MapData, u64>,
    /// The IPv6 range table's buckets, every generation.
    v6_buckets: Array<MapData, RangeBucket>,
    /// The IPv6 range table's range starts, every generation.
    v6_starts: Array<MapData, V6Words>,
    /// The IPv6 range table's range rules, every generation.
    v6_rules: Array<MapData, u64>,
}

impl RangeTables {
    /// Takes the tables out of `ebpf`, made for `capacity`.
    pub(super) fn take(ebpf: &mut Ebpf, capacity: &Capacity) -> Result<Self, DataplaneError> {
        Ok(RangeTables {
            regions: Regions::for_prefixes(capacity.v4_prefixes, capacity.v6_prefixes),
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
        })
    }

    /// Writes `policy` into `generation` of both range tables, each as it is built, and of
    /// both short lists. Only a generation no packet reads may be written.
    pub(super) fn write(&self, generation: u32, policy: &Policy) -> Result<(), DataplaneError> {
        let g = generation as usize;
        let summary = g * SUMMARY_WORDS as usize;

        let regions = &self.regions;
        let lines = regions.v4_lines as usize;
        let mut v4_buckets =
            RegionWriter::new(self.v4_buckets.map(), MAP_V4_BUCKETS, g * lines, lines);
        let leaves = regions.v4_leaves as usize;
        let mut v4_leaves =
            RegionWriter::new(self.v4_leaves.map(), MAP_V4_LEAVES, g * leaves, leaves);
        let v4_summary = v4::build(
            policy,
            |bucket| v4_buckets.push(bucket),
            |leaf| v4_leaves.push(leaf),
        )?;
        v4_buckets.flush()?;
        v4_leaves.flush()?;
        copy_region(self.v4_summary.map(), MAP_V4_SUMMARY, summary, &v4_summary)?;

        let capacity = regions.v6_ranges as usize;
        let lines = regions.v6_lines as usize;
        let mut v6_buckets =
            RegionWriter::new(self.v6_buckets.map(), MAP_V6_BUCKETS, g * lines, lines);
        let mut starts =
            RegionWriter::new(self.v6_starts.map(), MAP_V6_STARTS, g * capacity, capacity);
        let words = capacity / 2;
        let v6_rules = RegionWriter::new(self.v6_rules.map(), MAP_V6_RULES, g * words, words);
        let mut rules = PackedWriter::new(v6_rules, 32);
        let (header, v6_summary) = v6::build(
            policy,
            |bucket| v6_buckets.push(bucket),
            |start, rule| {
                starts.push(start)?;
                rules.push(u64::from(rule))
            },
        )?;
        v6_buckets.flush()?;
        starts.flush()?;
        rules.flush()?;
        copy_region(self.v6_headers.map(), MAP_V6_HEADERS, g, &[header])?;
        copy_region(self.v6_summary.map(), MAP_V6_SUMMARY, summary, &v6_summary)?;

        let (v4_short, v6_short) = short::build(policy);
        copy_region(self.v4_short.map(), MAP_V4_SHORT, g, &[v4_short])?;
        copy_region(self.v6_short.map(), MAP_V6_SHORT, g, &[v6_short])
    }

    /// The tables' maps, by name (to pin them again after a failed resize).
    pub(super) fn maps(&self) -> [(&'static str, &MapData); 10] {
        [
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
}
