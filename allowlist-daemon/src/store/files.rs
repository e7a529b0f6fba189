//! Files the daemon keeps (the state directory's, the token): opened without following
//! links, written in full and synced.

use std::fs::{File, OpenOptions};
use std::io::{BufReader, BufWriter, Write as _};
use std::os::unix::fs::OpenOptionsExt as _;
use std::path::Path;

use serde::Serialize;
use serde::de::DeserializeOwned;

use super::error::{StoreError, io};

/// Buffer for reading a state file.
const READ_BUFFER: usize = 1 << 20;
/// Buffer for writing a state file.
const WRITE_BUFFER: usize = 1 << 20;

/// Opens `path` for reading without following a symbolic link (`ELOOP` if it is one);
/// `InvalidInput` if it is not a regular file.
pub(crate) fn open_regular_file(path: &Path) -> std::io::Result<File> {
    let file = OpenOptions::new()
        .read(true)
        .custom_flags(nix::fcntl::OFlag::O_NOFOLLOW.bits())
        .open(path)?;
    if !file.metadata()?.is_file() {
        return Err(std::io::ErrorKind::InvalidInput.into());
    }
    Ok(file)
}

/// Creates `path` for writing, mode 0600: a new file (`EEXIST` if anything is there, a
/// link included), never through a link.
pub(crate) fn create_private_file(path: &Path) -> std::io::Result<File> {
    OpenOptions::new()
        .write(true)
        .create_new(true)
        .custom_flags(nix::fcntl::OFlag::O_NOFOLLOW.bits())
        .mode(0o600)
        .open(path)
}

/// Why a JSON file could not be read.
pub(super) enum ReadError {
    /// Reading failed.
    Io(std::io::Error),
    /// The file is not what it should be: empty, cut short, or not the JSON expected.
    Corrupt(String),
}

/// Reads the JSON value in `file` as a stream.
pub(super) fn read_json<T: DeserializeOwned>(file: File) -> Result<T, ReadError> {
    let empty = file.metadata().map_err(ReadError::Io)?.len() == 0;
    serde_json::from_reader(BufReader::with_capacity(READ_BUFFER, file)).map_err(|err| {
        match err.io_error_kind() {
            Some(_) if !err.is_eof() => ReadError::Io(err.into()),
            _ if empty => ReadError::Corrupt("the file is empty".to_owned()),
            _ => ReadError::Corrupt(err.to_string()),
        }
    })
}

/// Writes `value` as JSON to the new file `path` (never through a link, mode 0600), as a
/// stream, and syncs it.
pub(super) fn write_new_json(path: &Path, value: &impl Serialize) -> Result<(), StoreError> {
    let file = create_private_file(path).map_err(io("creating", path))?;
    let mut writer = BufWriter::with_capacity(WRITE_BUFFER, file);
    serde_json::to_writer(&mut writer, value).map_err(|err| io("writing", path)(err.into()))?;
    writer.flush().map_err(io("writing", path))?;
    let file = writer
        .into_inner()
        .map_err(|err| io("writing", path)(err.into_error()))?;
    file.sync_all().map_err(io("syncing", path))
}

/// Syncs directory `dir`, so that the names just created or renamed in it last.
pub(super) fn sync_dir(dir: &Path) -> Result<(), StoreError> {
    File::open(dir)
        .and_then(|dir| dir.sync_all())
        .map_err(io("syncing", dir))
}
