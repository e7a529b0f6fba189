//! The sampled map of refused sources behind `allowlistctl top`.

use std::time::Duration;

use allowlist_common::MAP_TOP_SOURCES;

use super::Dataplane;
use super::clock::coarse_now_ns;
use super::codec::source_address;
use super::error::{DataplaneError, map_error};
use super::types::SourceNoted;

impl Dataplane {
    /// The refused sources noted (at most [`allowlist_common::TOP_SOURCES_CAPACITY`], the
    /// least recently seen forgotten first), with the sample rate their counts are taken at.
    pub fn top_sources(&self) -> Result<(Vec<SourceNoted>, u32), DataplaneError> {
        let now = coarse_now_ns();
        let mut sources = Vec::new();
        for item in self.maps.top_sources.iter() {
            let (key, seen) = item.map_err(map_error(MAP_TOP_SOURCES))?;
            sources.push(SourceNoted {
                address: source_address(&key),
                noted: seen.packets,
                last_seen_ago: Duration::from_nanos(now.saturating_sub(seen.last_seen_ns)),
            });
        }
        Ok((sources, self.current.top_sample))
    }
}
