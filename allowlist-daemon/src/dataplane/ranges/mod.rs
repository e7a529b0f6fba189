//! Writing a generation of the range tables: each family's table built from the policy
//! ([`v4`], [`v6`], from the change [`points`]) and its maps' regions copied whole through
//! memory mappings, into a generation no packet reads.

mod points;
mod v4;
mod v6;

use allowlist_common::ranges::v4::{MAP_V4_BUCKETS, MAP_V4_RULES, MAP_V4_STARTS, MAP_V4_SUMMARY};
use allowlist_common::ranges::v6::{
    MAP_V6_BUCKETS, MAP_V6_HEADERS, MAP_V6_RULES, MAP_V6_STARTS, MAP_V6_SUMMARY,
};
use allowlist_common::ranges::{BUCKET_COUNT, SUMMARY_WORDS};
use aya::Pod;
use aya::maps::{IterableMap as _, MapData};

use super::Dataplane;
use super::error::DataplaneError;
use super::sys::{Access, ArrayWindow};
use crate::policy::Policy;
use v4::V4Table;
use v6::V6Table;

/// Copies `values` to the region of `name` that starts at element `start`.
fn copy_region<V: Pod>(
    map: &MapData,
    name: &'static str,
    start: usize,
    values: &[V],
) -> Result<(), DataplaneError> {
    if values.is_empty() {
        return Ok(());
    }
    let mapping_error = |source| DataplaneError::Mapping { name, source };
    let window = ArrayWindow::<V>::map(map, start, values.len(), Access::ReadWrite)
        .map_err(mapping_error)?;
    if window.copy_from(values) {
        Ok(())
    } else {
        Err(mapping_error(nix::errno::Errno::EINVAL))
    }
}

impl Dataplane {
    /// Writes `policy` into `generation` of both range tables. Only a generation no packet
    /// reads may be written.
    pub(super) fn write_ranges(
        &self,
        generation: u32,
        policy: &Policy,
    ) -> Result<(), DataplaneError> {
        let (v4, v6) = (V4Table::of(policy), V6Table::of(policy));
        let capacity = self.range_capacity as usize;
        for ranges in [v4.ranges, v6.ranges()] {
            if ranges > capacity {
                return Err(DataplaneError::RangesExceeded {
                    ranges,
                    capacity: self.range_capacity,
                });
            }
        }
        let g = generation as usize;
        let buckets = g * BUCKET_COUNT as usize;
        let summary = g * SUMMARY_WORDS as usize;
        let maps = &self.maps;
        copy_region(maps.v4_summary.map(), MAP_V4_SUMMARY, summary, &v4.summary)?;
        copy_region(maps.v4_buckets.map(), MAP_V4_BUCKETS, buckets, &v4.buckets)?;
        copy_region(
            maps.v4_starts.map(),
            MAP_V4_STARTS,
            g * (capacity / 4),
            &v4.starts,
        )?;
        copy_region(
            maps.v4_rules.map(),
            MAP_V4_RULES,
            g * (capacity / 2),
            &v4.rules,
        )?;
        copy_region(maps.v6_headers.map(), MAP_V6_HEADERS, g, &[v6.header])?;
        copy_region(maps.v6_summary.map(), MAP_V6_SUMMARY, summary, &v6.summary)?;
        copy_region(maps.v6_buckets.map(), MAP_V6_BUCKETS, buckets, &v6.buckets)?;
        copy_region(
            maps.v6_starts.map(),
            MAP_V6_STARTS,
            g * capacity,
            &v6.starts,
        )?;
        copy_region(
            maps.v6_rules.map(),
            MAP_V6_RULES,
            g * (capacity / 2),
            &v6.rules,
        )
    }
}
