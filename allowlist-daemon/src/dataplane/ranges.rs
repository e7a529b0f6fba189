//! Writing a generation of the IPv4 range table: the three maps' regions copied whole
//! through memory mappings, into a generation no packet reads.

use allowlist_common::ranges::{MAP_V4_BUCKETS, MAP_V4_RULES, MAP_V4_STARTS, V4_BUCKET_COUNT};
use aya::Pod;
use aya::maps::{IterableMap as _, MapData};

use super::Dataplane;
use super::error::DataplaneError;
use super::range_table::RangeTable;
use super::sys::{Access, ArrayWindow};
use crate::policy::Policy;

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
    /// Writes `policy`'s IPv4 prefixes into `generation` of the range table. Only a
    /// generation no packet reads may be written.
    pub(super) fn write_ranges(
        &self,
        generation: u32,
        policy: &Policy,
    ) -> Result<(), DataplaneError> {
        let table = RangeTable::of(policy);
        let capacity = self.range_capacity;
        if table.ranges > capacity as usize {
            return Err(DataplaneError::RangesExceeded {
                ranges: table.ranges,
                capacity,
            });
        }
        let g = generation as usize;
        copy_region(
            self.maps.v4_buckets.map(),
            MAP_V4_BUCKETS,
            g * V4_BUCKET_COUNT as usize,
            &table.buckets,
        )?;
        copy_region(
            self.maps.v4_starts.map(),
            MAP_V4_STARTS,
            g * (capacity as usize / 4),
            &table.starts,
        )?;
        copy_region(
            self.maps.v4_rules.map(),
            MAP_V4_RULES,
            g * (capacity as usize / 2),
            &table.rules,
        )
    }
}
