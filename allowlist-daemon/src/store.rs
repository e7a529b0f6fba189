//! Durable state: the model as JSON in the state directory. Every save is atomic and synced
//! (temporary file, fsync, rename, fsync of the directory) and keeps the previous version
//! beside it.

use std::fs::{self, File, OpenOptions};
use std::io::Write as _;
use std::os::unix::fs::{DirBuilderExt as _, OpenOptionsExt as _};
use std::path::{Path, PathBuf};

use crate::model::Model;

/// File name of the state.
const STATE_FILE: &str = "state.json";
/// File name of the previous version of the state.
const PREVIOUS_FILE: &str = "state.json.prev";

/// Errors reading or writing the state.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// A file operation failed.
    #[error("{action} {}", path.display())]
    Io {
        /// What was being done.
        action: &'static str,
        /// The file.
        path: PathBuf,
        /// The error.
        #[source]
        source: std::io::Error,
    },
    /// The state file is not a valid state.
    #[error(
        "{} is corrupt ({problem}); the previous version is {}: inspect both, then move the \
         good one into place",
        path.display(),
        backup.display()
    )]
    Corrupt {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        problem: String,
        /// The previous version.
        backup: PathBuf,
    },
    /// The state file parses but breaks an invariant of the model.
    #[error(
        "{} is not a valid state: {problem}; nothing was changed (the kernel keeps enforcing \
         what it did): correct the file, or move its previous version {} into place if that \
         one is good, then start again",
        path.display(),
        backup.display()
    )]
    Invalid {
        /// The file.
        path: PathBuf,
        /// What is wrong, and where in the file.
        problem: crate::model::InvalidState,
        /// The previous version.
        backup: PathBuf,
    },
    /// The state file is a symbolic link or not a regular file.
    #[error(
        "{} is not a regular file ({kind}): allowlistd keeps its state only in a regular file \
         of the state directory, so that no link can redirect what it reads and writes; \
         replace it with the file it stands for",
        path.display()
    )]
    NotAFile {
        /// The file.
        path: PathBuf,
        /// What it is instead.
        kind: &'static str,
    },
    /// The state file is gone but its previous version is there: something removed it.
    #[error(
        "{} is missing but its previous version {} exists: move that into place to restore \
         the state, or remove it to start with an empty state",
        path.display(),
        backup.display()
    )]
    Missing {
        /// The file.
        path: PathBuf,
        /// The previous version.
        backup: PathBuf,
    },
}

/// The state directory.
#[derive(Debug, Clone)]
pub struct Store {
    dir: PathBuf,
}

fn io(action: &'static str, path: &Path) -> impl FnOnce(std::io::Error) -> StoreError {
    let path = path.to_owned();
    move |source| StoreError::Io {
        action,
        path,
        source,
    }
}

impl Store {
    /// Opens the state directory, creating it (mode 0700) if missing, and checks that files
    /// can be written in it.
    pub fn open(dir: &Path) -> Result<Self, StoreError> {
        fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(dir)
            .map_err(io("creating", dir))?;
        let probe = dir.join(".writable");
        File::create(&probe)
            .and_then(|_| fs::remove_file(&probe))
            .map_err(io("writing in the state directory", dir))?;
        Ok(Self {
            dir: dir.to_owned(),
        })
    }

    /// The state file.
    pub fn path(&self) -> PathBuf {
        self.dir.join(STATE_FILE)
    }

    /// The previous version of the state file.
    fn backup(&self) -> PathBuf {
        self.dir.join(PREVIOUS_FILE)
    }

    /// The error for a state file that breaks an invariant: names the file, the problem and
    /// the previous version.
    pub fn invalid(&self, problem: crate::model::InvalidState) -> StoreError {
        StoreError::Invalid {
            path: self.path(),
            problem,
            backup: self.backup(),
        }
    }

    /// Reads the state; `None` when there is none yet (neither it nor a previous version).
    /// A state file that is a symbolic link, or not a regular file, is refused.
    pub fn load(&self) -> Result<Option<Model>, StoreError> {
        let path = self.path();
        let backup = self.backup();
        let text = match read_regular_file(&path) {
            Ok(text) => text,
            Err(err) if err.raw_os_error() == Some(nix::errno::Errno::ELOOP as i32) => {
                return Err(StoreError::NotAFile {
                    path,
                    kind: "a symbolic link",
                });
            }
            Err(err) if err.kind() == std::io::ErrorKind::InvalidInput => {
                return Err(StoreError::NotAFile {
                    path,
                    kind: "not a regular file",
                });
            }
            Err(err) if err.kind() == std::io::ErrorKind::NotFound && backup.exists() => {
                return Err(StoreError::Missing { path, backup });
            }
            Err(err) if err.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(err) => return Err(io("reading", &path)(err)),
        };
        serde_json::from_slice(&text)
            .map(Some)
            .map_err(|err| StoreError::Corrupt {
                path,
                problem: if text.is_empty() {
                    "the file is empty".to_owned()
                } else {
                    err.to_string()
                },
                backup,
            })
    }

    /// Writes the state durably; the version it replaces becomes the previous version. A
    /// save that fails leaves no temporary file behind.
    pub fn save(&self, model: &Model) -> Result<(), StoreError> {
        let path = self.path();
        let temp = self.dir.join(format!("{STATE_FILE}.tmp"));
        let json = serde_json::to_vec(model).map_err(|err| StoreError::Io {
            action: "serializing the state for",
            path: path.clone(),
            source: err.into(),
        })?;
        let _ = fs::remove_file(&temp);
        let saved = self
            .write_new(&temp, &json)
            .and_then(|()| self.replace_with(&temp, &path));
        if saved.is_err() {
            let _ = fs::remove_file(&temp);
        }
        saved
    }

    /// Writes `bytes` to the new file `temp` (never through a link) and syncs it.
    fn write_new(&self, temp: &Path, bytes: &[u8]) -> Result<(), StoreError> {
        let mut file = OpenOptions::new()
            .write(true)
            .create_new(true)
            .custom_flags(nix::fcntl::OFlag::O_NOFOLLOW.bits())
            .mode(0o600)
            .open(temp)
            .map_err(io("creating", temp))?;
        file.write_all(bytes).map_err(io("writing", temp))?;
        file.sync_all().map_err(io("syncing", temp))
    }

    /// Makes the synced `temp` the state file `path`, keeping the one it replaces as the
    /// previous version, and syncs the directory.
    fn replace_with(&self, temp: &Path, path: &Path) -> Result<(), StoreError> {
        if path.exists() {
            let previous = self.backup();
            let previous_temp = self.dir.join(format!("{PREVIOUS_FILE}.tmp"));
            let _ = fs::remove_file(&previous_temp);
            fs::hard_link(path, &previous_temp).map_err(io("linking", &previous_temp))?;
            fs::rename(&previous_temp, &previous).map_err(io("renaming", &previous))?;
        }
        fs::rename(temp, path).map_err(io("renaming", path))?;
        File::open(&self.dir)
            .and_then(|dir| dir.sync_all())
            .map_err(io("syncing", &self.dir))
    }
}

/// Reads `path` without following a symbolic link (`ELOOP` if it is one); `InvalidInput`
/// if it is not a regular file.
fn read_regular_file(path: &Path) -> std::io::Result<Vec<u8>> {
    use std::io::Read as _;
    let mut file = OpenOptions::new()
        .read(true)
        .custom_flags(nix::fcntl::OFlag::O_NOFOLLOW.bits())
        .open(path)?;
    if !file.metadata()?.is_file() {
        return Err(std::io::ErrorKind::InvalidInput.into());
    }
    let mut text = Vec::new();
    file.read_to_end(&mut text)?;
    Ok(text)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn scratch() -> PathBuf {
        let dir = std::env::temp_dir().join(format!(
            "allowlist-store-{}-{:?}",
            std::process::id(),
            std::thread::current().id()
        ));
        let _ = fs::remove_dir_all(&dir);
        dir
    }

    #[test]
    fn a_missing_state_is_none_and_a_saved_one_reads_back_with_a_previous_version() {
        let dir = scratch();
        let store = Store::open(&dir).expect("open");
        assert!(store.load().expect("load").is_none());
        let model = Model::default();
        store.save(&model).expect("save");
        store.save(&model).expect("save again");
        assert_eq!(store.load().expect("load"), Some(model));
        assert!(dir.join(PREVIOUS_FILE).exists());
        assert!(!dir.join("state.json.tmp").exists());
        fs::remove_dir_all(&dir).expect("cleanup");
    }

    #[test]
    fn a_corrupt_state_names_the_file_and_the_backup() {
        let dir = scratch();
        let store = Store::open(&dir).expect("open");
        for content in [&b""[..], b"{\"allowlists\": ", b"not json"] {
            fs::write(store.path(), content).expect("write");
            let err = store.load().expect_err("corrupt").to_string();
            assert!(err.contains("state.json is corrupt"), "{err}");
            assert!(err.contains("state.json.prev"), "{err}");
        }
        fs::remove_dir_all(&dir).expect("cleanup");
    }

    #[test]
    fn a_symlinked_or_odd_state_file_is_refused() {
        let dir = scratch();
        let store = Store::open(&dir).expect("open");
        let elsewhere = dir.join("elsewhere.json");
        fs::write(
            &elsewhere,
            serde_json::to_vec(&Model::default()).expect("json"),
        )
        .expect("write");
        std::os::unix::fs::symlink(&elsewhere, store.path()).expect("symlink");
        let err = store.load().expect_err("symlink").to_string();
        assert!(
            err.contains("state.json is not a regular file (a symbolic link)"),
            "{err}"
        );
        fs::remove_file(store.path()).expect("remove link");
        fs::create_dir(store.path()).expect("dir");
        let err = store.load().expect_err("directory").to_string();
        assert!(err.contains("not a regular file"), "{err}");
        fs::remove_dir_all(&dir).expect("cleanup");
    }

    #[test]
    fn a_failed_save_leaves_no_temporary_file() {
        let dir = scratch();
        let store = Store::open(&dir).expect("open");
        // The rename fails: a directory sits where the state file goes.
        fs::create_dir(store.path()).expect("dir");
        fs::write(store.path().join("x"), b"x").expect("fill");
        store
            .save(&Model::default())
            .expect_err("rename over a directory");
        assert!(!dir.join("state.json.tmp").exists());
        fs::remove_dir_all(&dir).expect("cleanup");
    }

    #[test]
    fn a_state_file_gone_beside_its_previous_version_is_refused() {
        let dir = scratch();
        let store = Store::open(&dir).expect("open");
        store.save(&Model::default()).expect("save");
        store.save(&Model::default()).expect("save again");
        fs::remove_file(store.path()).expect("remove");
        let err = store.load().expect_err("missing").to_string();
        assert!(err.contains("state.json is missing"), "{err}");
        assert!(err.contains("state.json.prev exists"), "{err}");
        fs::remove_dir_all(&dir).expect("cleanup");
    }
}
