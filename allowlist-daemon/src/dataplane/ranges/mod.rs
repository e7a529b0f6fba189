//! Writing a generation of the range tables: each family's table built from the policy
//! ([`v4`], [`v6`], from the change [`points`]) and written as it is made, through small
//! memory mappings ([`writer`]), into a generation no packet reads; with each family's
//! [`short`] list.

mod points;
mod short;
mod v4;
mod v6;
mod writer;

use allowlist_common::ranges::short::{MAP_V4_SHORT, MAP_V6_SHORT};
use allowlist_common::ranges::v4::{MAP_V4_BUCKETS, MAP_V4_LEAVES, MAP_V4_SUMMARY};
use allowlist_common::ranges::v6::{
    MAP_V6_BUCKETS, MAP_V6_HEADERS, MAP_V6_RULES, MAP_V6_STARTS, MAP_V6_SUMMARY,
};
use allowlist_common::ranges::{Regions, SUMMARY_WORDS};
use aya::maps::IterableMap as _;

use super::Dataplane;
use super::error::DataplaneError;
use crate::policy::Policy;
use writer::{PackedWriter, RegionWriter, copy_region};

impl Dataplane {
    /// Writes `policy` into `generation` of both range tables, each as it is built, and of
    /// both short lists. Only a generation no packet reads may be written.
    pub(super) fn write_ranges(
        &self,
        generation: u32,
        policy: &Policy,
    ) -> Result<(), DataplaneError> {
        let g = generation as usize;
        let maps = &self.maps;
        let summary = g * SUMMARY_WORDS as usize;

        let regions = Regions::for_prefixes(self.capacity.v4_prefixes, self.capacity.v6_prefixes);
        let lines = regions.v4_lines as usize;
        let mut v4_buckets =
            RegionWriter::new(maps.v4_buckets.map(), MAP_V4_BUCKETS, g * lines, lines);
        let leaves = regions.v4_leaves as usize;
        let mut v4_leaves =
            RegionWriter::new(maps.v4_leaves.map(), MAP_V4_LEAVES, g * leaves, leaves);
        let v4_summary = v4::build(
            policy,
            |bucket| v4_buckets.push(bucket),
            |leaf| v4_leaves.push(leaf),
        )?;
        v4_buckets.flush()?;
        v4_leaves.flush()?;
        copy_region(maps.v4_summary.map(), MAP_V4_SUMMARY, summary, &v4_summary)?;

        let capacity = regions.v6_ranges as usize;
        let lines = regions.v6_lines as usize;
        let mut v6_buckets =
            RegionWriter::new(maps.v6_buckets.map(), MAP_V6_BUCKETS, g * lines, lines);
        let mut starts =
            RegionWriter::new(maps.v6_starts.map(), MAP_V6_STARTS, g * capacity, capacity);
        let words = capacity / 2;
        let v6_rules = RegionWriter::new(maps.v6_rules.map(), MAP_V6_RULES, g * words, words);
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
        copy_region(maps.v6_headers.map(), MAP_V6_HEADERS, g, &[header])?;
        copy_region(maps.v6_summary.map(), MAP_V6_SUMMARY, summary, &v6_summary)?;

        let (v4_short, v6_short) = short::build(policy);
        copy_region(maps.v4_short.map(), MAP_V4_SHORT, g, &[v4_short])?;
        copy_region(maps.v6_short.map(), MAP_V6_SHORT, g, &[v6_short])
    }
}
