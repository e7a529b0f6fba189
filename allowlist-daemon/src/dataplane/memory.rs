//! How much kernel memory the maps take now, as the kernel itself accounts it: the
//! `memlock` line of each map's descriptor in `/proc/self/fdinfo` (what `bpftool map show`
//! gives as `memlock`).

use std::os::fd::{AsFd as _, AsRawFd as _, OwnedFd};

use aya::Ebpf;
use serde::Serialize;

use super::error::DataplaneError;

/// The kernel memory of one map.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct MapMemory {
    /// The map's name in the program.
    pub map: String,
    /// Bytes, as the kernel accounts them.
    pub bytes: u64,
}

/// A descriptor of each of the program's maps, taken at load: what [`MemoryProbe::read`]
/// asks the kernel about.
#[derive(Debug)]
pub(super) struct MemoryProbe(Vec<(String, OwnedFd)>);

impl MemoryProbe {
    /// Descriptors of every map of `ebpf`, before its maps are taken out of it.
    pub(super) fn of(ebpf: &Ebpf) -> Result<MemoryProbe, DataplaneError> {
        let mut maps = Vec::new();
        for (name, map) in ebpf.maps() {
            let data = match map {
                aya::maps::Map::Array(data)
                | aya::maps::Map::PerCpuArray(data)
                | aya::maps::Map::HashMap(data)
                | aya::maps::Map::LruHashMap(data)
                | aya::maps::Map::PerCpuHashMap(data)
                | aya::maps::Map::PerCpuLruHashMap(data)
                | aya::maps::Map::LpmTrie(data)
                | aya::maps::Map::RingBuf(data) => data,
                _ => continue,
            };
            let fd =
                data.fd()
                    .as_fd()
                    .try_clone_to_owned()
                    .map_err(|source| DataplaneError::Probe {
                        name: name.to_owned(),
                        source,
                    })?;
            maps.push((name.to_owned(), fd));
        }
        maps.sort_by(|a, b| a.0.cmp(&b.0));
        Ok(MemoryProbe(maps))
    }

    /// The kernel memory of each map now (a map the kernel does not say it of: 0).
    pub(super) fn read(&self) -> Vec<MapMemory> {
        self.0
            .iter()
            .map(|(map, fd)| MapMemory {
                map: map.clone(),
                bytes: memlock(fd),
            })
            .collect()
    }
}

/// The `memlock` of the map behind `fd`, from `/proc/self/fdinfo`.
fn memlock(fd: &OwnedFd) -> u64 {
    std::fs::read_to_string(format!("/proc/self/fdinfo/{}", fd.as_raw_fd()))
        .ok()
        .and_then(|info| {
            info.lines()
                .find_map(|line| line.strip_prefix("memlock:"))
                .and_then(|bytes| bytes.trim().parse().ok())
        })
        .unwrap_or(0)
}
