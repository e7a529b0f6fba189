//! Where enforcement outlives the daemon: bpffs, the pin directory of this layout version,
//! pins of other versions or of other capacities, and tearing it all down.

use std::path::{Path, PathBuf};

use allowlist_common::ranges::v4::MAP_V4_LEAVES;
use allowlist_common::ranges::v6::MAP_V6_STARTS;
use allowlist_common::{GENERATIONS, LAYOUT_VERSION, MAP_RULE_HITS};
use aya::maps::MapData;
use nix::sys::statfs::{BPF_FS_MAGIC, statfs};

use super::capacity::{generations_for, prefix_class_of_length};
use super::error::DataplaneError;
use super::layout::object_layouts;
use super::maps::{INSTANCE_MAPS, v4_leaves_len, v6_starts_len};
use super::types::Capacity;

/// The mount point of bpffs.
const BPFFS: &str = "/sys/fs/bpf";

/// Where the maps and links are pinned.
pub(super) struct Pins {
    /// The directory of this layout version.
    pub(super) dir: PathBuf,
    /// Directories of other layout versions, whose links are taken over and then removed.
    pub(super) stale: Vec<PathBuf>,
}

impl Pins {
    /// Prepares `<pin_root>/v<LAYOUT_VERSION>` (mounting bpffs at `/sys/fs/bpf` if it is
    /// missing), notes other versions' directories as stale, and removes the map pins there
    /// that do not fit `capacity` (with a log line saying why): the object's own maps all
    /// together, a shared map alone.
    pub(super) fn prepare(pin_root: &Path, capacity: Capacity) -> Result<Pins, DataplaneError> {
        mount_bpffs_if_missing(pin_root)?;
        let dir = pin_root.join(format!("v{LAYOUT_VERSION}"));
        std::fs::create_dir_all(&dir).map_err(|source| DataplaneError::Pin {
            action: "creating",
            path: dir.clone(),
            source,
        })?;
        let mut stale = Vec::new();
        for entry in read_dir(pin_root)? {
            if entry != dir {
                tracing::warn!(
                    path = %entry.display(),
                    "pins of another layout version: not reused; their links are taken over \
                     and the pins removed"
                );
                stale.push(entry);
            }
        }
        let misfits = incompatible_pins(&dir, capacity)?;
        if let Some((_, problem)) = misfits.iter().find(|(name, _)| is_instance(name)) {
            tracing::info!(
                path = %dir.display(),
                problem,
                "pinned tables of another size: made again at this one (policy rewritten from \
                 the state on disk; counters and flows kept)"
            );
            for name in INSTANCE_MAPS {
                remove_pin(&dir.join(name))?;
            }
        }
        for (name, problem) in misfits.iter().filter(|(name, _)| !is_instance(name)) {
            tracing::warn!(path = %dir.display(), problem, "a pinned map does not fit: replaced");
            remove_pin(&dir.join(name))?;
        }
        Ok(Pins { dir, stale })
    }

    /// The same directory, for another object loaded beside this one (no stale directories
    /// left to take over).
    pub(super) fn again(&self) -> Pins {
        Pins {
            dir: self.dir.clone(),
            stale: Vec::new(),
        }
    }

    /// Removes the pins of the object's own maps, so that the next object loaded here makes
    /// them again (at another size); the object loaded now keeps them while it lives.
    pub(super) fn release_instance(&self) -> Result<(), DataplaneError> {
        for name in INSTANCE_MAPS {
            remove_pin(&self.dir.join(name))?;
        }
        Ok(())
    }

    /// Pins `maps` (the object's own maps, by name) again after a failed resize.
    pub(super) fn repin(&self, maps: &[(&'static str, &MapData)]) -> Result<(), DataplaneError> {
        for (name, map) in maps {
            let path = self.dir.join(name);
            remove_pin(&path)?;
            map.pin(&path).map_err(|source| DataplaneError::Pin {
                action: "pinning",
                path,
                source: std::io::Error::other(source.to_string()),
            })?;
        }
        Ok(())
    }

    /// The capacity of the object's maps pinned under `pin_root` in this layout version, if
    /// whole; `flows` flows.
    pub(super) fn pinned_capacity(pin_root: &Path, flows: u32) -> Option<Capacity> {
        let dir = pin_root.join(format!("v{LAYOUT_VERSION}"));
        let len = |name: &'static str| {
            MapData::from_pin(dir.join(name))
                .and_then(|map| map.info())
                .ok()
                .map(|info| info.max_entries())
        };
        let (rules, leaves, starts) = (
            len(MAP_RULE_HITS)?,
            len(MAP_V4_LEAVES)?,
            len(MAP_V6_STARTS)?,
        );
        // The generations the tables hold are the one thing their lengths do not say: those
        // the classes found would have, else the others.
        let candidates = [GENERATIONS, 2].map(|generations| {
            let v4_prefixes =
                prefix_class_of_length(|class| v4_leaves_len(class, generations), leaves)?;
            let v6_prefixes =
                prefix_class_of_length(|class| v6_starts_len(class, generations), starts)?;
            Some(Capacity {
                rules,
                v4_prefixes,
                v6_prefixes,
                generations,
                flows,
            })
        });
        let capacity = candidates
            .iter()
            .flatten()
            .find(|c| generations_for(c.v4_prefixes, c.v6_prefixes) == c.generations)
            .or_else(|| candidates.iter().flatten().next())
            .copied()?;
        incompatible_pins(&dir, capacity)
            .ok()
            .filter(|misfits| misfits.iter().all(|(name, _)| !is_instance(name)))
            .map(|_| capacity)
    }

    /// Removes the directories of other layout versions (once their links are taken over).
    pub(super) fn remove_stale(&self) -> Result<(), DataplaneError> {
        for dir in &self.stale {
            tracing::warn!(path = %dir.display(), "removed the pins of another layout version");
            std::fs::remove_dir_all(dir).map_err(|source| DataplaneError::Pin {
                action: "removing",
                path: dir.clone(),
                source,
            })?;
        }
        Ok(())
    }
}

/// Removes everything pinned under `pin_root` (every layout version): the links go, so the
/// programs are detached from their interfaces, and the maps with them. Returns the paths
/// removed.
pub(super) fn teardown(pin_root: &Path) -> Result<Vec<PathBuf>, DataplaneError> {
    if !pin_root.exists() {
        return Ok(Vec::new());
    }
    let mut removed = Vec::new();
    for dir in read_dir(pin_root)? {
        removed.extend(read_dir(&dir).unwrap_or_default());
    }
    std::fs::remove_dir_all(pin_root).map_err(|source| DataplaneError::Pin {
        action: "removing",
        path: pin_root.to_owned(),
        source,
    })?;
    Ok(removed)
}

/// Whether the map `name` belongs to one object (see [`INSTANCE_MAPS`]).
fn is_instance(name: &str) -> bool {
    INSTANCE_MAPS.contains(&name)
}

/// The maps pinned in `dir` that cannot be reused with these capacities, each with why (a
/// map not pinned is none of them).
fn incompatible_pins(
    dir: &Path,
    capacity: Capacity,
) -> Result<Vec<(String, String)>, DataplaneError> {
    let mut misfits = Vec::new();
    for layout in object_layouts(capacity)? {
        let path = dir.join(&layout.name);
        if !path.exists() {
            if is_instance(&layout.name) {
                let problem = format!("{} is not pinned", layout.name);
                misfits.push((layout.name, problem));
            }
            continue;
        }
        let info = MapData::from_pin(&path)
            .and_then(|map| map.info())
            .map_err(|source| DataplaneError::PinnedMap {
                name: layout.name.clone(),
                source,
            })?;
        let found = (
            info.map_type().ok(),
            info.key_size(),
            info.value_size(),
            info.max_entries(),
        );
        let wanted = (
            Some(layout.map_type),
            layout.key_size,
            layout.value_size,
            layout.max_entries,
        );
        if found != wanted {
            let problem = format!(
                "{} is {:?} with key {} B, value {} B, {} entries; expected {:?} with key {} B, \
                 value {} B, {} entries",
                layout.name,
                found.0,
                found.1,
                found.2,
                found.3,
                layout.map_type,
                layout.key_size,
                layout.value_size,
                layout.max_entries
            );
            misfits.push((layout.name, problem));
        }
    }
    // Nothing of the object pinned at all: a first start, nothing to replace.
    if misfits.iter().filter(|(name, _)| is_instance(name)).count() == INSTANCE_MAPS.len()
        && INSTANCE_MAPS.iter().all(|name| !dir.join(name).exists())
    {
        misfits.retain(|(name, _)| !is_instance(name));
    }
    Ok(misfits)
}

fn is_bpffs(path: &Path) -> bool {
    statfs(path).is_ok_and(|fs| fs.filesystem_type() == BPF_FS_MAGIC)
}

/// Mounts bpffs at `/sys/fs/bpf` when `pin_root` is under it and it is not mounted; refuses a
/// `pin_root` outside bpffs.
fn mount_bpffs_if_missing(pin_root: &Path) -> Result<(), DataplaneError> {
    let mount_point = Path::new(BPFFS);
    let bpffs_error = |path: &Path| {
        let path = path.to_owned();
        move |source| DataplaneError::Bpffs { path, source }
    };
    if pin_root.starts_with(mount_point) && !is_bpffs(mount_point) {
        std::fs::create_dir_all(mount_point).map_err(bpffs_error(mount_point))?;
        nix::mount::mount(
            Some("bpf"),
            mount_point,
            Some("bpf"),
            nix::mount::MsFlags::empty(),
            None::<&str>,
        )
        .map_err(|errno| bpffs_error(mount_point)(errno.into()))?;
        tracing::info!(path = BPFFS, "mounted the BPF file system");
    }
    let existing = pin_root
        .ancestors()
        .find(|dir| dir.exists())
        .unwrap_or(mount_point);
    if !is_bpffs(existing) {
        return Err(bpffs_error(pin_root)(std::io::Error::other(
            "not on a BPF file system (bpffs)",
        )));
    }
    Ok(())
}

/// The entries of `dir`, sorted.
pub(super) fn read_dir(dir: &Path) -> Result<Vec<PathBuf>, DataplaneError> {
    let pin_error = |source| DataplaneError::Pin {
        action: "listing",
        path: dir.to_owned(),
        source,
    };
    let mut paths = std::fs::read_dir(dir)
        .map_err(pin_error)?
        .map(|entry| entry.map(|entry| entry.path()))
        .collect::<Result<Vec<_>, _>>()
        .map_err(pin_error)?;
    paths.sort();
    Ok(paths)
}

/// Removes a pin; one that is not there is fine.
pub(super) fn remove_pin(path: &Path) -> Result<(), DataplaneError> {
    match std::fs::remove_file(path) {
        Err(err) if err.kind() != std::io::ErrorKind::NotFound => Err(DataplaneError::Pin {
            action: "removing",
            path: path.to_owned(),
            source: err,
        }),
        _ => Ok(()),
    }
}
