//! Durable state: the model as JSON in the state directory. Every save is atomic and synced
//! (temporary file, fsync, rename, fsync of the directory) and keeps the previous version
//! beside it. The state is written and read as a stream: no copy of a whole file is held in
//! memory. The entries of large lists are kept in files of their own, written only when the
//! list changes (see [`entry_files`]).

mod audit;
mod audit_record;
mod entry_files;
mod error;
mod files;
mod refusal_tally;

use std::collections::BTreeSet;
use std::fs;
use std::os::unix::fs::{DirBuilderExt as _, MetadataExt as _};
use std::path::{Path, PathBuf};

use nix::unistd::geteuid;

pub use audit::AuditLog;
pub use audit_record::{AuditRecord, ListChanges};
pub use error::StoreError;

use entry_files::EntryFiles;
use error::io;
use files::{ReadError, read_json, sync_dir, write_new_json};
pub(crate) use files::{create_private_file, open_regular_file};

use crate::model::{Model, SavedFileNames, SavedState};

/// File name of the state.
const STATE_FILE: &str = "state.json";
/// File name of the previous version of the state.
const PREVIOUS_FILE: &str = "state.json.prev";

/// The state directory.
#[derive(Debug)]
pub struct Store {
    dir: PathBuf,
    entry_files: EntryFiles,
}

impl Store {
    /// Opens the state directory, creating it (mode 0700) if missing; refuses one that other
    /// users may change (owned by another user, or writable by group or others), and checks
    /// that files can be written in it (a new file, never through a link).
    pub fn open(dir: &Path) -> Result<Self, StoreError> {
        fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(dir)
            .map_err(io("creating", dir))?;
        let metadata = fs::metadata(dir).map_err(io("reading the mode of", dir))?;
        let daemon = geteuid().as_raw();
        let problem = if metadata.uid() != daemon {
            Some(format!(
                "belongs to uid {}, not to the daemon's uid {daemon}",
                metadata.uid()
            ))
        } else if metadata.mode() & 0o022 != 0 {
            Some(format!(
                "is writable by group or others (mode {:04o})",
                metadata.mode() & 0o7777
            ))
        } else {
            None
        };
        if let Some(problem) = problem {
            return Err(StoreError::ExposedDir {
                path: dir.to_owned(),
                problem,
            });
        }
        let probe = dir.join(".writable");
        let _ = fs::remove_file(&probe);
        create_private_file(&probe)
            .and_then(|_| fs::remove_file(&probe))
            .map_err(io("writing in the state directory", dir))?;
        Ok(Self {
            dir: dir.to_owned(),
            entry_files: EntryFiles::new(dir),
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
    /// A state file that is a symbolic link, or not a regular file, is refused. Entry files
    /// that neither the state nor its previous version names are removed.
    pub fn load(&mut self) -> Result<Option<Model>, StoreError> {
        let path = self.path();
        let backup = self.backup();
        let file = match open_regular_file(&path) {
            Ok(file) => file,
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
        let corrupt = |problem: String| StoreError::Corrupt {
            path: path.clone(),
            problem,
            backup: backup.clone(),
        };
        let saved: SavedState = match read_json(file) {
            Ok(saved) => saved,
            Err(ReadError::Io(err)) => return Err(io("reading", &path)(err)),
            Err(ReadError::Corrupt(problem)) => return Err(corrupt(problem)),
        };
        // The files the state names: those read for it.
        let mut named = BTreeSet::new();
        let mut failure = None;
        let entry_files = &mut self.entry_files;
        let model = saved.into_model(|name| {
            named.insert(name.to_owned());
            entry_files.read(name, &path, &backup).map_err(|err| {
                let problem = err.to_string();
                failure = Some(err);
                problem
            })
        });
        let model = match (model, failure) {
            (Ok(model), _) => model,
            (Err(_), Some(failure)) => return Err(failure),
            (Err(problem), None) => return Err(corrupt(problem)),
        };
        // The previous version's files stay; if it cannot be read, every file stays.
        let previous = if backup.exists() {
            open_regular_file(&backup)
                .ok()
                .and_then(|file| read_json::<SavedFileNames>(file).ok())
                .map(|saved| saved.names().map(str::to_owned).collect())
        } else {
            Some(BTreeSet::new())
        };
        self.entry_files.loaded(named, previous);
        Ok(Some(model))
    }

    /// Writes the state durably; the version it replaces becomes the previous version. The
    /// entries of large lists go to files of their own, written only when the list changed.
    /// A save that fails leaves no new file behind.
    pub fn save(&mut self, model: &Model) -> Result<(), StoreError> {
        let path = self.path();
        let temp = self.dir.join(format!("{STATE_FILE}.tmp"));
        let _ = fs::remove_file(&temp);
        let written = self.entry_files.write_new(model)?;
        let saved = SavedState::new(model, |list| self.entry_files.file_of(list));
        let named: BTreeSet<String> = model
            .kept_lists()
            .filter_map(|list| self.entry_files.file_of(list))
            .collect();
        let result = write_new_json(&temp, &saved).and_then(|()| self.replace_with(&temp, &path));
        match result {
            Ok(()) => {
                self.entry_files.saved(named);
                Ok(())
            }
            Err(err) => {
                let _ = fs::remove_file(&temp);
                self.entry_files.discard(&written);
                Err(err)
            }
        }
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
        sync_dir(&self.dir)
    }
}

#[cfg(test)]
mod tests;
