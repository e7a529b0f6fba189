//! Which processes hold the pinned maps open: a running allowlistd (or a tool reading them)
//! that a teardown would pull the enforcement from under.

use std::collections::BTreeSet;
use std::path::Path;

use aya::maps::MapData;

use super::pins::read_dir;

/// A process that holds a pinned map open.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Holder {
    /// Its process id.
    pub pid: u32,
    /// Its command name (`/proc/PID/comm`).
    pub command: String,
}

/// The processes other than this one that hold a map pinned under `pin_root` open. Found
/// through `/proc/*/fdinfo`, which names the map of each BPF descriptor; processes this one
/// may not read are not seen.
pub(super) fn holders(pin_root: &Path) -> Vec<Holder> {
    let ids = pinned_map_ids(pin_root);
    if ids.is_empty() {
        return Vec::new();
    }
    let own = std::process::id();
    let Ok(processes) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    processes
        .filter_map(|entry| entry.ok()?.file_name().to_str()?.parse::<u32>().ok())
        .filter(|pid| *pid != own && holds_any(*pid, &ids))
        .map(|pid| Holder {
            pid,
            command: std::fs::read_to_string(format!("/proc/{pid}/comm"))
                .map(|comm| comm.trim().to_owned())
                .unwrap_or_default(),
        })
        .collect()
}

/// The ids of the maps pinned under `pin_root` (in any layout version's directory).
fn pinned_map_ids(pin_root: &Path) -> BTreeSet<u32> {
    let dirs = read_dir(pin_root).unwrap_or_default();
    dirs.iter()
        .flat_map(|dir| read_dir(dir).unwrap_or_default())
        .filter_map(|pin| {
            MapData::from_pin(&pin)
                .ok()?
                .info()
                .ok()
                .map(|info| info.id())
        })
        .collect()
}

/// Whether process `pid` has a descriptor of a map of `ids` open.
fn holds_any(pid: u32, ids: &BTreeSet<u32>) -> bool {
    let Ok(descriptors) = std::fs::read_dir(format!("/proc/{pid}/fdinfo")) else {
        return false;
    };
    descriptors.filter_map(Result::ok).any(|descriptor| {
        std::fs::read_to_string(descriptor.path()).is_ok_and(|info| {
            info.lines()
                .filter_map(|line| line.strip_prefix("map_id:"))
                .any(|id| id.trim().parse().is_ok_and(|id| ids.contains(&id)))
        })
    })
}
