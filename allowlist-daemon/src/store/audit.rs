//! The audit trail on disk: one JSON record a line, appended (and synced) as events happen,
//! in two streams of the state directory: `audit.jsonl` for changes (applied, acknowledged,
//! reverted, expired) and `refused.jsonl` for refusals. Each is rotated once it passes its
//! size, keeping one rotated file (`.1`), so that the trail is bounded, survives restarts,
//! and refusals, which anyone who reaches the API can cause, never push a change out.
//! Unauthenticated refusals are counted rather than recorded one by one (see
//! [`super::refusal_tally`]). Read newest first, both streams merged by id.

use std::fs::{File, OpenOptions};
use std::io::{BufRead as _, BufReader, Write as _};
use std::os::unix::fs::OpenOptionsExt as _;
use std::path::{Path, PathBuf};
use std::time::Instant;

use super::audit_record::AuditRecord;
use super::error::{StoreError, io};
use super::refusal_tally::{Noted, RefusalTally};

/// File names of the changes, and of the changes before the last rotation.
const CHANGES: [&str; 2] = ["audit.jsonl", "audit.jsonl.1"];
/// File names of the refusals, and of the refusals before the last rotation.
const REFUSALS: [&str; 2] = ["refused.jsonl", "refused.jsonl.1"];

/// One stream of the trail: its current file, open for appending, and its size.
#[derive(Debug)]
struct Stream {
    names: [&'static str; 2],
    file: File,
    bytes: u64,
}

impl Stream {
    /// Opens the stream of `names` (current, rotated) in `dir`.
    fn open(dir: &Path, names: [&'static str; 2]) -> Result<Self, StoreError> {
        let (file, bytes) = open_current(&dir.join(names[0]))?;
        Ok(Stream { names, file, bytes })
    }

    /// Appends `line` and syncs it, rotating first when the stream would pass `max_bytes`.
    fn append(&mut self, dir: &Path, line: &[u8], max_bytes: u64) -> Result<(), StoreError> {
        let path = dir.join(self.names[0]);
        if self.bytes > 0 && self.bytes + line.len() as u64 > max_bytes {
            std::fs::rename(&path, dir.join(self.names[1])).map_err(io("rotating", &path))?;
            (self.file, self.bytes) = open_current(&path)?;
        }
        self.file
            .write_all(line)
            .map_err(io("appending to", &path))?;
        self.file.sync_data().map_err(io("syncing", &path))?;
        self.bytes += line.len() as u64;
        Ok(())
    }
}

/// The trail of a state directory.
#[derive(Debug)]
pub struct AuditLog {
    dir: PathBuf,
    changes: Stream,
    refusals: Stream,
    max_bytes: u64,
    next_id: u64,
    unauthenticated: RefusalTally,
}

impl AuditLog {
    /// Opens the trail in `dir` (files created mode 0600 if missing), each stream rotated
    /// past `max_bytes`; the next record's id follows the last one on disk.
    pub fn open(dir: &Path, max_bytes: u64) -> Result<Self, StoreError> {
        let last = [CHANGES, REFUSALS]
            .iter()
            .map(|names| read_records(dir, names, 1))
            .collect::<Result<Vec<_>, _>>()?
            .into_iter()
            .flatten()
            .map(|record| record.id)
            .max()
            .unwrap_or(0);
        Ok(AuditLog {
            dir: dir.to_owned(),
            changes: Stream::open(dir, CHANGES)?,
            refusals: Stream::open(dir, REFUSALS)?,
            max_bytes,
            next_id: last + 1,
            unauthenticated: RefusalTally::default(),
        })
    }

    /// Appends `record` (its id set here) to its stream and syncs it.
    pub fn append(&mut self, mut record: AuditRecord) -> Result<(), StoreError> {
        record.id = self.next_id;
        let stream = if record.is_refusal() {
            &mut self.refusals
        } else {
            &mut self.changes
        };
        let mut line = serde_json::to_vec(&record).map_err(|err| {
            io("encoding a record for", &self.dir.join(stream.names[0]))(std::io::Error::other(err))
        })?;
        line.push(b'\n');
        stream.append(&self.dir, &line, self.max_bytes)?;
        self.next_id += 1;
        Ok(())
    }

    /// Records `record`, a request refused as unauthenticated from `peer` (its address or
    /// uid), if it is the first from that peer this minute; otherwise counts it in the
    /// minute's summary. Returns whether it was recorded whole.
    pub fn append_unauthenticated(
        &mut self,
        record: AuditRecord,
        peer: &str,
    ) -> Result<bool, StoreError> {
        let mut ended = Vec::new();
        let request = record.request.clone().unwrap_or_default();
        let noted = self
            .unauthenticated
            .note(peer, &request, Instant::now(), &mut ended);
        for summary in ended {
            self.append(summary)?;
        }
        if noted == Noted::First {
            self.append(record)?;
        }
        Ok(noted == Noted::First)
    }

    /// Writes the summaries of unauthenticated refusals whose minute is over; returns them.
    pub fn flush_summaries(&mut self) -> Result<Vec<AuditRecord>, StoreError> {
        let summaries = self.unauthenticated.summaries_due(Instant::now());
        for summary in &summaries {
            self.append(summary.clone())?;
        }
        Ok(summaries)
    }

    /// Up to `limit` records, newest first, older than record `before` when given.
    pub fn newest(
        &self,
        limit: usize,
        before: Option<u64>,
    ) -> Result<Vec<AuditRecord>, StoreError> {
        let mut all = Vec::new();
        for names in [CHANGES, REFUSALS] {
            all.extend(read_records(&self.dir, &names, usize::MAX)?);
        }
        all.sort_by_key(|record| std::cmp::Reverse(record.id));
        Ok(all
            .into_iter()
            .filter(|record| before.is_none_or(|id| record.id < id))
            .take(limit)
            .collect())
    }
}

/// Opens a trail file for appending, mode 0600, never through a link; and its size.
fn open_current(path: &Path) -> Result<(File, u64), StoreError> {
    let file = OpenOptions::new()
        .append(true)
        .create(true)
        .mode(0o600)
        .custom_flags(nix::fcntl::OFlag::O_NOFOLLOW.bits())
        .open(path)
        .map_err(io("opening", path))?;
    let bytes = file
        .metadata()
        .map_err(io("reading the size of", path))?
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
        assert!(dir.join(CHANGES[1]).exists(), "rotated past 300 bytes");
        let newest = log.newest(3, None).expect("read");
        let ids: Vec<u64> = newest.iter().map(|r| r.id).collect();
        assert_eq!(ids, [6, 5, 4]);
        let older = log.newest(10, Some(4)).expect("read");
        assert_eq!(older.first().map(|r| r.id), Some(3));
        drop(log);
        let mut reopened = AuditLog::open(&dir, 300).expect("reopen");
        reopened.append(record("after a restart")).expect("append");
        assert_eq!(reopened.newest(1, None).expect("read")[0].id, 7);
        let total = std::fs::metadata(dir.join(CHANGES[0]))
            .expect("current")
            .len()
            + std::fs::metadata(dir.join(CHANGES[1]))
                .expect("rotated")
                .len();
        assert!(total <= 2 * 300, "bounded: {total} bytes");
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn refusals_never_push_a_change_out_of_the_trail() {
        let dir = std::env::temp_dir().join(format!("audit-refusals-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).expect("dir");
        let mut log = AuditLog::open(&dir, 4096).expect("open");
        log.append(record("the change")).expect("append");
        for n in 0..700 {
            let refused = AuditRecord {
                request: Some(format!("GET /v1/allowlists/{n}")),
                ..AuditRecord::event("unauthenticated", "refused", "refused".into())
            };
            log.append_unauthenticated(refused, "10.0.0.9")
                .expect("refused");
        }
        for n in 0..10 {
            let refused = AuditRecord::event("admin", "refused", format!("conflict {n}"));
            log.append(refused).expect("refused");
        }
        let all = log.newest(usize::MAX, None).expect("read");
        assert!(
            all.iter().any(|r| r.action == "the change"),
            "the change outlives any number of refusals"
        );
        let unauthenticated = all.iter().filter(|r| r.actor == "unauthenticated").count();
        assert_eq!(unauthenticated, 1, "one record; the rest in a summary");
        let _ = std::fs::remove_dir_all(&dir);
    }
}
