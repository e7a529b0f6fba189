//! Previews in the kernel: a candidate policy written into a generation of its own, which
//! the program judges every packet against as well until a deadline of the kernel's clock
//! (it stops by itself, with the daemon dead too), counting the sources whose verdict the
//! candidate would change. A preview never changes a verdict, and no policy is written over
//! its generation while it runs; the maps made again at another size end it.

use std::net::IpAddr;
use std::time::Duration;

use allowlist_common::preview::{MAP_PREVIEW_SOURCES, PreviewKey, PreviewSeen, would};
use aya::maps::{MapData, PerCpuHashMap};

use super::Dataplane;
use super::clock::coarse_now_ns;
use super::codec::raw_enforcement;
use super::error::{DataplaneError, map_error};
use super::types::Enforcement;

/// What a candidate would do with a source's packets that the policy in force treats
/// otherwise.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Would {
    /// The policy in force passes them; the candidate would drop them.
    Drop,
    /// The policy in force refuses them; the candidate would pass them.
    Pass,
}

/// A source whose packets a candidate would treat otherwise, as the CPUs saw it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PreviewSource {
    /// The source address.
    pub address: IpAddr,
    /// What the candidate would do.
    pub would: Would,
    /// Packets.
    pub packets: u64,
    /// Bytes (whole frames).
    pub bytes: u64,
    /// How long ago the last one came.
    pub last_seen_ago: Duration,
    /// The busiest (IP protocol, local port) pairs and their packets, busiest first (port 0
    /// for a protocol without ports).
    pub ports: Vec<(u8, u16, u64)>,
}

impl Dataplane {
    /// Starts judging every packet against `candidate` too, for `window`: the candidate is
    /// written into a generation no packet is enforced with, the sources counted by an earlier
    /// preview are forgotten, then one write switches the program to judging.
    pub fn start_preview(
        &mut self,
        candidate: &Enforcement,
        window: Duration,
    ) -> Result<(), DataplaneError> {
        self.check_fits(&candidate.policy)?;
        self.stop_preview()?;
        let forgotten: Vec<PreviewKey> = self.maps.preview_sources.keys().flatten().collect();
        for key in forgotten {
            // A key gone meanwhile (the map is an LRU) is as good as removed.
            let _ = self.maps.preview_sources.remove(&key);
        }
        let generation = self.place(candidate, None)?;
        let until = coarse_now_ns()
            .saturating_add(u64::try_from(window.as_nanos()).unwrap_or(u64::MAX))
            .max(1);
        self.config.update(|config| {
            config.preview = raw_enforcement(generation, candidate);
            config.preview_until_ns = until;
        })
    }

    /// Stops judging packets against a candidate.
    pub fn stop_preview(&mut self) -> Result<(), DataplaneError> {
        self.config.update(|config| {
            config.preview = allowlist_common::Enforcement::default();
            config.preview_until_ns = 0;
        })
    }

    /// The time left of the preview the program runs, in the kernel's clock.
    pub fn preview_left(&self) -> Option<Duration> {
        self.config.preview_left()
    }
}

/// The sources a preview counted, summed over the CPUs, read through `map`.
pub(super) fn read_sources(
    map: &PerCpuHashMap<MapData, PreviewKey, PreviewSeen>,
) -> Result<Vec<PreviewSource>, DataplaneError> {
    let now = coarse_now_ns();
    let mut sources = Vec::new();
    for item in map.iter() {
        let (key, per_cpu) = item.map_err(map_error(MAP_PREVIEW_SOURCES))?;
        let mut ports: Vec<(u8, u16, u64)> = Vec::new();
        for pair in per_cpu.iter().flat_map(|seen| seen.ports) {
            if pair.packets == 0 {
                continue;
            }
            match ports
                .iter_mut()
                .find(|(protocol, port, _)| (*protocol, *port) == (pair.protocol, pair.port))
            {
                Some((_, _, packets)) => *packets += u64::from(pair.packets),
                None => ports.push((pair.protocol, pair.port, u64::from(pair.packets))),
            }
        }
        ports.sort_by_key(|pair| std::cmp::Reverse(pair.2));
        let last_seen_ns = per_cpu
            .iter()
            .map(|seen| seen.last_seen_ns)
            .max()
            .unwrap_or(0);
        sources.push(PreviewSource {
            address: address_of(&key),
            would: if key.would == would::PASS {
                Would::Pass
            } else {
                Would::Drop
            },
            packets: per_cpu.iter().map(|seen| seen.packets).sum(),
            bytes: per_cpu.iter().map(|seen| seen.bytes).sum(),
            last_seen_ago: Duration::from_nanos(now.saturating_sub(last_seen_ns)),
            ports,
        });
    }
    sources.sort_by_key(|source| std::cmp::Reverse(source.packets));
    Ok(sources)
}

/// The address a key holds.
fn address_of(key: &PreviewKey) -> IpAddr {
    if key.family == 4 {
        IpAddr::from([key.addr[0], key.addr[1], key.addr[2], key.addr[3]])
    } else {
        IpAddr::from(key.addr)
    }
}
