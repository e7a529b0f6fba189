//! What can go wrong with the state on disk.

use std::path::{Path, PathBuf};

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
    /// A file of entries the state names is missing or not valid.
    #[error(
        "{} (entries of a list named by {}) cannot be read: {problem}; the previous version \
         of the state, {}, names its own files: if it is good, move it into place",
        path.display(),
        state.display(),
        backup.display()
    )]
    BadEntries {
        /// The file of entries.
        path: PathBuf,
        /// What is wrong.
        problem: String,
        /// The state file that names it.
        state: PathBuf,
        /// The previous version of the state.
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
    /// Users other than the daemon's may change the state directory.
    #[error(
        "the state directory {} {problem}: another user could replace the allowlists the \
         daemon enforces; make it the daemon's own, writable by it alone (`chown` it, \
         `chmod go-w` it)",
        path.display()
    )]
    ExposedDir {
        /// The directory.
        path: PathBuf,
        /// Who else may change it.
        problem: String,
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

/// A closure that turns an I/O error of `action` on `path` into a [`StoreError`].
pub(super) fn io(action: &'static str, path: &Path) -> impl FnOnce(std::io::Error) -> StoreError {
    let path = path.to_owned();
    move |source| StoreError::Io {
        action,
        path,
        source,
    }
}
