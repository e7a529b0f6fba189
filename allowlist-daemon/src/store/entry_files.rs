//! The entries of large lists, each set in a file of its own under `lists/`, written once
//! and named by the state: a change that leaves a large list alone writes only the small
//! state file. Files no state on disk names any more (neither the state nor its previous
//! version) are removed after each save and at start.

use std::collections::BTreeSet;
use std::fs;
use std::os::unix::fs::DirBuilderExt as _;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

use super::error::{StoreError, io};
use super::files::{ReadError, open_regular_file, read_json, sync_dir, write_new_json};
use crate::model::{Allowlist, Entry, Model};

/// The folder of entry files, in the state directory.
const FOLDER: &str = "lists";
/// Lists with at least this many entries keep them in a file of their own.
pub(super) const OWN_FILE_FROM: usize = 1024;

/// The entry files of a state directory, and which sets of entries in memory they hold.
#[derive(Debug)]
pub(super) struct EntryFiles {
    dir: PathBuf,
    /// Sets of entries the state on disk names, with their file: shared with the model, so
    /// an unchanged list is recognised by its allocation.
    held: Vec<(Arc<Vec<Entry>>, String)>,
    /// The files the state on disk names.
    named: BTreeSet<String>,
    /// Makes new names unique within the process.
    counter: u64,
}

/// Whether `name` can be the name of an entry file (no path, no hidden file).
fn is_file_name(name: &str) -> bool {
    !name.is_empty()
        && !name.starts_with('.')
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'))
}

impl EntryFiles {
    /// The entry files of state directory `state_dir`.
    pub(super) fn new(state_dir: &Path) -> Self {
        EntryFiles {
            dir: state_dir.join(FOLDER),
            held: Vec::new(),
            named: BTreeSet::new(),
            counter: 0,
        }
    }

    /// The file that holds `list`'s entries, if it has one.
    pub(super) fn file_of(&self, list: &Allowlist) -> Option<String> {
        self.held
            .iter()
            .find(|(entries, _)| Arc::ptr_eq(entries, &list.entries))
            .map(|(_, name)| name.clone())
    }

    /// Writes a file for each large list of `model` that has none yet; returns the files
    /// written (synced, their folder too).
    pub(super) fn write_new(&mut self, model: &Model) -> Result<Vec<String>, StoreError> {
        let mut written = Vec::new();
        let result = self.write_each(model, &mut written);
        if let Err(err) = result {
            self.discard(&written);
            return Err(err);
        }
        if !written.is_empty() {
            sync_dir(&self.dir)?;
        }
        Ok(written)
    }

    fn write_each(&mut self, model: &Model, written: &mut Vec<String>) -> Result<(), StoreError> {
        for list in model.kept_lists() {
            if list.entries.len() < OWN_FILE_FROM || self.file_of(list).is_some() {
                continue;
            }
            if written.is_empty() {
                fs::DirBuilder::new()
                    .recursive(true)
                    .mode(0o700)
                    .create(&self.dir)
                    .map_err(io("creating", &self.dir))?;
            }
            let name = self.new_name(&list.id);
            write_new_json(&self.dir.join(&name), &*list.entries)?;
            written.push(name.clone());
            self.held.push((list.entries.clone(), name));
        }
        Ok(())
    }

    /// A name no file has: the list, the time and a counter.
    fn new_name(&mut self, list_id: &str) -> String {
        let nanos = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |since| since.as_nanos());
        self.counter += 1;
        let list: String = list_id
            .chars()
            .filter(|c| c.is_ascii_alphanumeric() || *c == '_')
            .take(64)
            .collect();
        format!("{list}.{nanos:x}.{}.json", self.counter)
    }

    /// Forgets and removes files written for a state that was not saved after all.
    pub(super) fn discard(&mut self, written: &[String]) {
        self.held.retain(|(_, name)| !written.contains(name));
        for name in written {
            let _ = fs::remove_file(self.dir.join(name));
        }
    }

    /// Records that the state on disk now names `named` (its previous version named what
    /// the state did before): keeps those files and removes every other.
    pub(super) fn saved(&mut self, named: BTreeSet<String>) {
        let previous = std::mem::replace(&mut self.named, named);
        self.held.retain(|(_, name)| self.named.contains(name));
        let keep: BTreeSet<&String> = self.named.iter().chain(&previous).collect();
        self.remove_all_but(&keep);
    }

    /// Records the files named by the state just read (`named`) and by its previous version
    /// (`previous`, `None` if it could not be read: then nothing is removed).
    pub(super) fn loaded(&mut self, named: BTreeSet<String>, previous: Option<BTreeSet<String>>) {
        self.held.retain(|(_, name)| named.contains(name));
        self.named = named;
        if let Some(previous) = previous {
            let keep: BTreeSet<&String> = self.named.iter().chain(&previous).collect();
            self.remove_all_but(&keep);
        }
    }

    fn remove_all_but(&self, keep: &BTreeSet<&String>) {
        let Ok(files) = fs::read_dir(&self.dir) else {
            return;
        };
        for file in files.flatten() {
            let name = file.file_name().to_string_lossy().into_owned();
            if !keep.contains(&name) {
                let _ = fs::remove_file(file.path());
            }
        }
    }

    /// Reads entry file `name` named by `state` (the state file), whose previous version is
    /// `backup`.
    pub(super) fn read(
        &mut self,
        name: &str,
        state: &Path,
        backup: &Path,
    ) -> Result<Arc<Vec<Entry>>, StoreError> {
        let path = self.dir.join(name);
        let bad = |problem: String| StoreError::BadEntries {
            path: path.clone(),
            problem,
            state: state.to_owned(),
            backup: backup.to_owned(),
        };
        if !is_file_name(name) {
            return Err(bad(format!(
                "{name:?} is not a file name of the state directory"
            )));
        }
        let file = match open_regular_file(&path) {
            Ok(file) => file,
            Err(err) if err.kind() == std::io::ErrorKind::NotFound => {
                return Err(bad("the file is missing".to_owned()));
            }
            Err(err) => return Err(bad(format!("not a regular file or unreadable: {err}"))),
        };
        let entries: Arc<Vec<Entry>> = match read_json(file) {
            Ok(entries) => Arc::new(entries),
            Err(ReadError::Io(err)) => return Err(io("reading", &path)(err)),
            Err(ReadError::Corrupt(problem)) => return Err(bad(problem)),
        };
        self.held.push((entries.clone(), name.to_owned()));
        Ok(entries)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_of_other_places_are_not_file_names() {
        assert!(is_file_name("al_1.18f.1.json"));
        for name in ["", ".hidden", "../state.json", "a/b", "x y", "é"] {
            assert!(!is_file_name(name), "{name:?}");
        }
    }
}
