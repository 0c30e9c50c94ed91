//! What s3load wrote into a destination directory, so a re-sync can tell by
//! content identity, not by times, whether a file is still the object it came from.
//!
//! The record lives in `DEST/.s3load/` (never listed, copied or deleted by sync):
//!
//! - `state`: line 1 is `s3load-state 1` (the format version); every further line
//!   is one JSON object. `{"path": "a/b.bin", "size": .., "mtime_ns": .., "source":
//!   "s3://bucket/key", "etag": .., "version_id": .., "checksum": .., "last_modified_ns": ..}`
//!   says the file at `path` (relative, `/`-separated) was written from that object
//!   and had that size and mtime (nanoseconds since the epoch) right after. A line
//!   `{"path": .., "removed": true}` forgets a path. Later lines win.
//! - `lock`: held (flock) by the run using the directory; a second run into the same
//!   directory waits for it.
//!
//! Crash safety: a run appends one line per committed file (one `write` of a whole
//! line, `O_APPEND`) and at the end rewrites the file compactly through a temporary
//! file and a rename. A line torn by a crash fails to parse and is skipped; the
//! file it described then has no record and is judged by s5cmd's rule (size, then
//! source newer). A record is only trusted while the file still has the recorded
//! size and mtime, so a stale record can make s3load copy again, never skip.
//! An unknown version line makes s3load ignore the whole record (with a warning).

use std::collections::HashMap;
use std::fs::{File, OpenOptions};
use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::{Duration, SystemTime};

use serde::{Deserialize, Serialize};

use crate::error::Error;
use crate::integrity::Stated;

/// The directory below the destination's root that holds the record.
pub const STATE_DIR: &str = ".s3load";
const HEADER: &str = "s3load-state 1";

/// What s3load knows about one file it wrote.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Record {
    pub path: String,
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub removed: bool,
    #[serde(default)]
    pub size: u64,
    #[serde(default)]
    pub mtime_ns: i128,
    #[serde(default)]
    pub source: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub etag: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub version_id: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub checksum: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_modified_ns: Option<i128>,
}

/// Nanoseconds since the epoch (negative before it).
pub fn to_ns(t: SystemTime) -> i128 {
    match t.duration_since(SystemTime::UNIX_EPOCH) {
        Ok(d) => d.as_nanos() as i128,
        Err(e) => -(e.duration().as_nanos() as i128),
    }
}

/// `ALGORITHM:hex` for a full-object checksum, `ALGORITHM:hex-N` for a composite one.
pub fn checksum_text(s: Stated) -> String {
    match s {
        Stated::Full { algorithm, value } => format!("{}:{value:x}", algorithm.name()),
        Stated::Composite { algorithm, parts, value } => format!("{}:{value:x}-{parts}", algorithm.name()),
    }
}

/// A destination's record, loaded, and (unless read-only) locked and open for appending.
#[derive(Debug)]
pub struct StateStore {
    dir: PathBuf,
    records: Mutex<HashMap<String, Record>>,
    /// Paths recorded or forgotten by this run.
    touched: Mutex<std::collections::HashSet<String>>,
    log: Option<Mutex<File>>,
    _lock: Option<File>,
}

impl StateStore {
    /// Loads the record without creating or locking anything (`--dry-run`).
    pub fn read_only(root: &Path) -> StateStore {
        let dir = root.join(STATE_DIR);
        StateStore { records: Mutex::new(load(&dir)), touched: Mutex::default(), dir, log: None, _lock: None }
    }

    /// Creates `.s3load/` as needed, takes the directory's lock (waiting, with a
    /// message, while another run holds it) and loads the record.
    pub async fn open(root: &Path) -> Result<StateStore, Error> {
        let dir = root.join(STATE_DIR);
        std::fs::create_dir_all(&dir).map_err(|e| Error::io(&dir, "creating the state directory", e))?;
        let lock_path = dir.join("lock");
        let lock = OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&lock_path)
            .map_err(|e| Error::io(&lock_path, "opening", e))?;
        let mut told = false;
        while rustix::fs::flock(&lock, rustix::fs::FlockOperation::NonBlockingLockExclusive).is_err() {
            if !told {
                tracing::warn!(
                    destination = %root.display(),
                    "another s3load run is writing into this directory; waiting for it to finish"
                );
                told = true;
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        let records = load(&dir);
        let path = dir.join("state");
        let mut log =
            OpenOptions::new().create(true).append(true).open(&path).map_err(|e| Error::io(&path, "opening", e))?;
        if log.metadata().map(|m| m.len() == 0).unwrap_or(false) {
            log.write_all(format!("{HEADER}\n").as_bytes()).map_err(|e| Error::io(&path, "writing", e))?;
        }
        Ok(StateStore {
            dir,
            records: Mutex::new(records),
            touched: Mutex::default(),
            log: Some(Mutex::new(log)),
            _lock: Some(lock),
        })
    }

    pub fn get(&self, path: &str) -> Option<Record> {
        self.records.lock().unwrap().get(path).cloned()
    }

    /// Records a file just written (or, with `removed`, just deleted).
    pub fn put(&self, rec: Record) {
        let line = match serde_json::to_string(&rec) {
            Ok(l) => l + "\n",
            Err(_) => return,
        };
        if let Some(log) = &self.log {
            // One write per line: with O_APPEND a line is never interleaved.
            if let Err(e) = log.lock().unwrap().write_all(line.as_bytes()) {
                tracing::warn!(path = %self.dir.display(), error = %e, "could not update the sync record; the next sync compares sizes and times for this file");
            }
        }
        self.touched.lock().unwrap().insert(rec.path.clone());
        let mut records = self.records.lock().unwrap();
        if rec.removed {
            records.remove(&rec.path);
        } else {
            records.insert(rec.path.clone(), rec);
        }
    }

    pub fn forget(&self, path: &str) {
        self.put(Record { path: path.to_string(), removed: true, ..Record::empty() });
    }

    /// Whether this run recorded `path`.
    pub fn written_this_run(&self, path: &str) -> bool {
        self.touched.lock().unwrap().contains(path)
    }

    /// Rewrites the record with one line per path for which `keep` holds. Does
    /// nothing when this run changed nothing and every record is kept (a no-op
    /// sync writes nothing).
    pub fn compact(&self, keep: impl Fn(&str) -> bool) -> Result<(), Error> {
        if self.log.is_none() {
            return Ok(());
        }
        let records = self.records.lock().unwrap();
        let mut paths: Vec<&String> = records.keys().filter(|p| keep(p)).collect();
        if paths.len() == records.len() && self.touched.lock().unwrap().is_empty() {
            return Ok(());
        }
        paths.sort();
        let mut text = format!("{HEADER}\n");
        for p in paths {
            if let Ok(l) = serde_json::to_string(&records[p]) {
                text.push_str(&l);
                text.push('\n');
            }
        }
        let tmp = self.dir.join(format!("state.{}.tmp", std::process::id()));
        let fin = self.dir.join("state");
        std::fs::write(&tmp, text).map_err(|e| Error::io(&tmp, "writing", e))?;
        std::fs::rename(&tmp, &fin).map_err(|e| Error::io(&fin, "replacing", e))?;
        // Later appends (none in this run) would go to the old file: reopen.
        if let Some(log) = &self.log
            && let Ok(f) = OpenOptions::new().append(true).open(&fin)
        {
            *log.lock().unwrap() = f;
        }
        Ok(())
    }
}

impl Record {
    fn empty() -> Record {
        Record {
            path: String::new(),
            removed: false,
            size: 0,
            mtime_ns: 0,
            source: String::new(),
            etag: None,
            version_id: None,
            checksum: None,
            last_modified_ns: None,
        }
    }
}

fn load(dir: &Path) -> HashMap<String, Record> {
    let mut out = HashMap::new();
    let path = dir.join("state");
    let file = match File::open(&path) {
        Ok(f) => f,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return out,
        Err(e) => {
            tracing::warn!(path = %path.display(), error = %e, "cannot read the sync record; comparing sizes and times instead");
            return out;
        }
    };
    let mut lines = BufReader::new(file).lines();
    match lines.next() {
        Some(Ok(h)) if h == HEADER => {}
        None => return out,
        Some(_) => {
            tracing::warn!(path = %path.display(), "sync record has an unknown format (written by a newer s3load?); comparing sizes and times instead");
            return out;
        }
    }
    let mut torn = 0;
    for line in lines {
        let Ok(line) = line else { break };
        match serde_json::from_str::<Record>(&line) {
            Ok(r) if r.removed => {
                out.remove(&r.path);
            }
            Ok(r) => {
                out.insert(r.path.clone(), r);
            }
            Err(_) => torn += 1,
        }
    }
    if torn > 0 {
        tracing::info!(path = %path.display(), lines = torn, "skipped unreadable lines of the sync record (an interrupted run)");
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rec(path: &str, etag: &str) -> Record {
        Record {
            path: path.into(),
            size: 3,
            mtime_ns: 5,
            source: format!("s3://b/{path}"),
            etag: Some(etag.into()),
            ..Record::empty()
        }
    }

    #[tokio::test]
    async fn records_survive_a_reopen_later_lines_win_and_torn_lines_are_skipped() {
        let d = tempfile::tempdir().unwrap();
        {
            let s = StateStore::open(d.path()).await.unwrap();
            s.put(rec("a", "1"));
            s.put(rec("b", "1"));
            s.put(rec("a", "2"));
            s.forget("b");
        }
        // A crash in the middle of a line.
        let state = d.path().join(STATE_DIR).join("state");
        let mut f = OpenOptions::new().append(true).open(&state).unwrap();
        f.write_all(b"{\"path\":\"c\",\"si").unwrap();
        drop(f);
        let s = StateStore::read_only(d.path());
        assert_eq!(s.get("a").unwrap().etag.as_deref(), Some("2"));
        assert!(s.get("b").is_none());
        assert!(s.get("c").is_none());
    }

    #[tokio::test]
    async fn compaction_keeps_only_what_is_asked_and_stays_readable() {
        let d = tempfile::tempdir().unwrap();
        let s = StateStore::open(d.path()).await.unwrap();
        for p in ["a", "b", "c"] {
            s.put(rec(p, "1"));
        }
        s.compact(|p| p != "b").unwrap();
        s.put(rec("d", "1"));
        drop(s);
        let text = std::fs::read_to_string(d.path().join(STATE_DIR).join("state")).unwrap();
        assert!(text.starts_with("s3load-state 1\n"));
        let s = StateStore::read_only(d.path());
        assert!(s.get("a").is_some() && s.get("c").is_some() && s.get("d").is_some());
        assert!(s.get("b").is_none());
    }

    #[test]
    fn an_unknown_version_is_ignored() {
        let d = tempfile::tempdir().unwrap();
        std::fs::create_dir(d.path().join(STATE_DIR)).unwrap();
        std::fs::write(d.path().join(STATE_DIR).join("state"), "s3load-state 9\n{\"path\":\"a\"}\n").unwrap();
        assert!(StateStore::read_only(d.path()).get("a").is_none());
    }

    #[tokio::test]
    async fn a_second_run_waits_for_the_lock() {
        let d = tempfile::tempdir().unwrap();
        let first = StateStore::open(d.path()).await.unwrap();
        let second = tokio::time::timeout(Duration::from_millis(500), StateStore::open(d.path())).await;
        assert!(second.is_err(), "the second open must wait while the first holds the lock");
        drop(first);
        tokio::time::timeout(Duration::from_secs(5), StateStore::open(d.path())).await.unwrap().unwrap();
    }
}
