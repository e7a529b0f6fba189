//! The audit trail on disk: one JSON record a line in `audit.jsonl` in the state directory,
//! appended (and synced) as changes happen, rotated to `audit.jsonl.1` once it passes its
//! size, so that the trail is bounded and survives restarts. Read newest first.

use std::fs::{File, OpenOptions};
use std::io::{BufRead as _, BufReader, Write as _};
use std::os::unix::fs::OpenOptionsExt as _;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use super::error::{StoreError, io};

/// File name of the trail.
const CURRENT: &str = "audit.jsonl";
/// File name of the trail before the last rotation.
const ROTATED: &str = "audit.jsonl.1";

/// One recorded event: a change applied, acknowledged, reverted or expired, or a request
/// refused.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AuditRecord {
    /// Increasing over the trail's life; the cursor of `GET /v1/audit?after=`.
    pub id: u64,
    /// When (RFC 3339).
    pub time: String,
    /// Who: the token's name, or `allowlistd` for what the daemon did by itself.
    pub actor: String,
    /// Where the request came from: a TCP peer, or a uid on the unix socket.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub peer: Option<String>,
    /// The request (`POST /v1/enforcement/enable`), for what a request did.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub request: Option<String>,
    /// `applied`, `acknowledged`, `reverted`, `expired` or `refused`.
    pub outcome: String,
    /// What happened, in words.
    pub action: String,
    /// The HTTP status of a refused request.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub status: Option<u16>,
    /// Why a request was refused: the error's code and message.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    /// The lists the event changed, with the entries added and removed.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub allowlists: Vec<ListChanges>,
    /// What the host enforced before.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub before: Option<String>,
    /// What the host enforced after.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub after: Option<String>,
}

/// How an event changed one list.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ListChanges {
    /// The list's id.
    pub id: String,
    /// Its name.
    pub name: String,
    /// `created`, `deleted`, `changed`, `enabled` or `disabled`.
    pub change: String,
    /// Prefixes added (at most [`ListChanges::SHOWN`]; `added_count` has them all).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub added: Vec<String>,
    /// How many prefixes were added.
    #[serde(default)]
    pub added_count: usize,
    /// Prefixes removed (at most [`ListChanges::SHOWN`]).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub removed: Vec<String>,
    /// How many prefixes were removed.
    #[serde(default)]
    pub removed_count: usize,
}

impl AuditRecord {
    /// A record of `outcome` for `action` by `actor`, now; the rest is filled in by the
    /// caller (the trail gives the id).
    pub fn event(actor: &str, outcome: &str, action: String) -> Self {
        AuditRecord {
            id: 0,
            time: crate::model::rfc3339(time::OffsetDateTime::now_utc()),
            actor: actor.to_owned(),
            peer: None,
            request: None,
            outcome: outcome.to_owned(),
            action,
            status: None,
            reason: None,
            allowlists: Vec::new(),
            before: None,
            after: None,
        }
    }
}

impl ListChanges {
    /// Prefixes named per list and direction; beyond, only counted.
    pub const SHOWN: usize = 100;
}

/// The trail of a state directory.
#[derive(Debug)]
pub struct AuditLog {
    dir: PathBuf,
    file: File,
    bytes: u64,
    max_bytes: u64,
    next_id: u64,
}

impl AuditLog {
    /// Opens the trail in `dir` (created mode 0600 if missing), rotating it past
    /// `max_bytes`; the next record's id follows the last one on disk.
    pub fn open(dir: &Path, max_bytes: u64) -> Result<Self, StoreError> {
        let last = read_records(dir, &[CURRENT, ROTATED], 1)?
            .first()
            .map_or(0, |record| record.id);
        let (file, bytes) = open_current(dir)?;
        Ok(AuditLog {
            dir: dir.to_owned(),
            file,
            bytes,
            max_bytes,
            next_id: last + 1,
        })
    }

    /// Appends `record` (its id set here) and syncs it; rotates first when the trail is full.
    pub fn append(&mut self, mut record: AuditRecord) -> Result<(), StoreError> {
        let path = self.dir.join(CURRENT);
        record.id = self.next_id;
        let mut line = serde_json::to_vec(&record)
            .map_err(|err| io("encoding a record for", &path)(std::io::Error::other(err)))?;
        line.push(b'\n');
        if self.bytes > 0 && self.bytes + line.len() as u64 > self.max_bytes {
            std::fs::rename(&path, self.dir.join(ROTATED)).map_err(io("rotating", &path))?;
            (self.file, self.bytes) = open_current(&self.dir)?;
        }
        self.file
            .write_all(&line)
            .map_err(io("appending to", &path))?;
        self.file.sync_data().map_err(io("syncing", &path))?;
        self.bytes += line.len() as u64;
        self.next_id += 1;
        Ok(())
    }

    /// Up to `limit` records, newest first, older than record `before` when given.
    pub fn newest(
        &self,
        limit: usize,
        before: Option<u64>,
    ) -> Result<Vec<AuditRecord>, StoreError> {
        let all = read_records(&self.dir, &[CURRENT, ROTATED], usize::MAX)?;
        Ok(all
            .into_iter()
            .filter(|record| before.is_none_or(|id| record.id < id))
            .take(limit)
            .collect())
    }
}

/// Opens the current trail file for appending, mode 0600, never through a link; and its size.
fn open_current(dir: &Path) -> Result<(File, u64), StoreError> {
    let path = dir.join(CURRENT);
    let file = OpenOptions::new()
        .append(true)
        .create(true)
        .mode(0o600)
        .custom_flags(nix::fcntl::OFlag::O_NOFOLLOW.bits())
        .open(&path)
        .map_err(io("opening", &path))?;
    let bytes = file
        .metadata()
        .map_err(io("reading the size of", &path))?
        .len();
    Ok((file, bytes))
}

/// The records of `files` (newest file first), newest first, at most `limit`; a line that is
/// not a record (cut short by a crash) is skipped.
fn read_records(dir: &Path, files: &[&str], limit: usize) -> Result<Vec<AuditRecord>, StoreError> {
    let mut records = Vec::new();
    for name in files {
        let path = dir.join(name);
        let file = match super::open_regular_file(&path) {
            Ok(file) => file,
            Err(err) if err.kind() == std::io::ErrorKind::NotFound => continue,
            Err(err) => return Err(io("reading", &path)(err)),
        };
        let mut in_file: Vec<AuditRecord> = BufReader::new(file)
            .lines()
            .map_while(Result::ok)
            .filter_map(|line| serde_json::from_str(&line).ok())
            .collect();
        in_file.reverse();
        records.extend(in_file);
        if records.len() >= limit {
            break;
        }
    }
    records.truncate(limit);
    Ok(records)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record(action: &str) -> AuditRecord {
        AuditRecord::event("admin", "applied", action.into())
    }

    #[test]
    fn records_come_back_newest_first_across_a_rotation_and_a_reopening() {
        let dir = std::env::temp_dir().join(format!("audit-test-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).expect("dir");
        let mut log = AuditLog::open(&dir, 300).expect("open");
        for n in 0..6 {
            log.append(record(&format!("change {n}"))).expect("append");
        }
        assert!(dir.join(ROTATED).exists(), "rotated past 300 bytes");
        let newest = log.newest(3, None).expect("read");
        let ids: Vec<u64> = newest.iter().map(|r| r.id).collect();
        assert_eq!(ids, [6, 5, 4]);
        let older = log.newest(10, Some(4)).expect("read");
        assert_eq!(older.first().map(|r| r.id), Some(3));
        drop(log);
        let mut reopened = AuditLog::open(&dir, 300).expect("reopen");
        reopened.append(record("after a restart")).expect("append");
        assert_eq!(reopened.newest(1, None).expect("read")[0].id, 7);
        let total = std::fs::metadata(dir.join(CURRENT)).expect("current").len()
            + std::fs::metadata(dir.join(ROTATED)).expect("rotated").len();
        assert!(total <= 2 * 300, "bounded: {total} bytes");
        let _ = std::fs::remove_dir_all(&dir);
    }
}
