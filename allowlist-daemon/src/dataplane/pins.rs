//! Where enforcement outlives the daemon: bpffs, the pin directory of this layout version,
//! pins of other versions or of other capacities, and tearing it all down.

use std::path::{Path, PathBuf};

use allowlist_common::LAYOUT_VERSION;
use aya::maps::MapData;
use nix::sys::statfs::{BPF_FS_MAGIC, statfs};

use super::error::{DataplaneError, map_error};
use super::maps::{MAP_NAMES, expected_layouts};
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
    /// when they do not fit `capacity` (with a log line saying why).
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
        if let Some(problem) = incompatible_pins(&dir, capacity)? {
            tracing::warn!(
                path = %dir.display(),
                problem,
                "pinned maps do not fit this configuration: replacing them (policy rewritten \
                 from the state on disk, counters and flows start over)"
            );
            for name in MAP_NAMES {
                remove_pin(&dir.join(name))?;
            }
        }
        Ok(Pins { dir, stale })
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

/// Why the maps pinned in `dir` cannot be reused with these capacities, if they cannot.
fn incompatible_pins(dir: &Path, capacity: Capacity) -> Result<Option<String>, DataplaneError> {
    let expected = expected_layouts(capacity)?;
    if !expected.iter().any(|layout| dir.join(layout.name).exists()) {
        return Ok(None);
    }
    for layout in expected {
        let path = dir.join(layout.name);
        if !path.exists() {
            return Ok(Some(format!("{} is not pinned", layout.name)));
        }
        let info = MapData::from_pin(&path)
            .and_then(|map| map.info())
            .map_err(map_error(layout.name))?;
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
            return Ok(Some(format!(
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
            )));
        }
    }
    Ok(None)
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
