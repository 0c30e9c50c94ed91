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
//! A first line this s3load does not know (a newer format, or a damaged file)
//! makes it set the file aside as `state.set-aside-<ns>` (with a warning) and
//! start a new record: it never appends its own lines to a format it cannot read.
//!
//! Links: `.s3load/` and every file in it are opened relative to the
//! destination's directory handle with `O_NOFOLLOW` (the compaction's temporary
//! file also with `O_EXCL`), so a planted `.s3load/state -> elsewhere` is
//! refused by name, never written through.

use std::fs::File;
use std::io::Write;
use std::os::fd::OwnedFd;
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::{Duration, SystemTime};

use rustix::fs::{AtFlags, OFlags};

use crate::error::Error;
use crate::localfs::open;
use crate::shard::Shard;

mod format;
mod record;
mod table;

pub use record::{Record, SUSPECT_MTIME, boot_id, checksum_text, to_ns};
use table::Table;

pub use crate::localfs::STATE_DIR;
use format::{HEADER, SHARD_PREFIX, load_merged, record_files};

/// A destination's record, loaded, and (unless read-only) locked and open for appending.
#[derive(Debug)]
pub struct StateStore {
    /// `.s3load/` for messages.
    dir: PathBuf,
    /// `.s3load/`, opened without following a symlink; every file in it is
    /// opened relative to this handle, also without following one.
    handle: Option<OwnedFd>,
    /// The merged view: every record file's live records (packed: see
    /// [`table`]), each marked when this run recorded it.
    records: Mutex<Table>,
    /// The file this run appends to and compacts: `state`, or its shard's.
    file: String,
    /// A sharded run: the entries of its own file (removals included), which
    /// is all its compaction rewrites; the other files are other shards'.
    own: Option<Mutex<Table>>,
    /// An unsharded run: shard files merged into the view, removed once its
    /// compaction has written everything into `state`.
    merged_shards: Vec<String>,
    /// Whether this run recorded or forgot any path.
    wrote: AtomicBool,
    log: Option<Mutex<File>>,
    /// The locks held (see [`StateStore::open`]).
    _locks: Vec<File>,
    /// Whether taking the lock meant waiting for another run.
    waited: bool,
    /// The record set aside at open, and where it was kept (see
    /// [`StateStore::set_aside`]).
    set_aside: Option<(PathBuf, PathBuf)>,
    /// Lines after the header in the file on disk: loaded, then appended.
    lines: AtomicUsize,
    /// A change in memory that only a rewrite records (records confirmed on
    /// disk, or made suspect).
    changed: AtomicBool,
}

/// Superseded lines a record may carry before [`StateStore::compact`] rewrites
/// it, beyond one per live record. Rewriting replaces the file, and freeing the
/// old one's blocks can wait on the disk (on ext4 without a journal mounted
/// with `discard`, this machine's root: up to 0.8 s measured at the end of a
/// 4 GiB run); a record that only grew by this run's files gains nothing from it.
const SLACK_LINES: usize = 64;

impl StateStore {
    /// Loads the record without creating or locking anything (`--dry-run`).
    pub fn read_only(root: &Path) -> StateStore {
        let dir = root.join(STATE_DIR);
        let handle = open::existing_state_dir(root);
        let records = match &handle {
            Some(h) => load_merged(h, &dir, &record_files(&dir), "", false).map(|(m, _)| m).unwrap_or_default(),
            None => Table::default(),
        };
        StateStore {
            records: Mutex::new(records),
            file: "state".into(),
            own: None,
            merged_shards: Vec::new(),
            wrote: AtomicBool::new(false),
            dir,
            handle: None,
            log: None,
            _locks: Vec::new(),
            waited: false,
            set_aside: None,
            lines: AtomicUsize::new(0),
            changed: AtomicBool::new(false),
        }
    }

    /// Creates `.s3load/` as needed, takes the directory's lock (waiting, with a
    /// message, while another run holds it) and loads the record. The
    /// destination itself may be a symlink (the user's choice); nothing below it
    /// is followed. A record in a format this s3load does not know (a newer
    /// s3load's, or a damaged one) is set aside under a new name, never appended to.
    ///
    /// With `shard`, runs of other shards share the directory: this one takes
    /// the directory's lock shared and its shard's lock exclusive, appends to
    /// its own file `state.shard-K-of-N` and reads every file (see
    /// [`load_merged`]). An unsharded run takes the lock exclusive (waiting
    /// for every shard), and its compaction merges the shards' files into
    /// `state`. `flock` is carried to the server on NFSv4 (Linux maps it to
    /// a whole-file lock there), so this holds on a shared volume.
    pub async fn open(root: &Path, shard: Option<Shard>) -> Result<StateStore, Error> {
        let dir = root.join(STATE_DIR);
        let handle = open::state_dir(root)?;
        use rustix::fs::FlockOperation::{NonBlockingLockExclusive, NonBlockingLockShared};
        let lock = open::own_file(&handle, &dir, "lock", OFlags::CREATE | OFlags::WRONLY)?;
        let mut locks = vec![(lock, if shard.is_some() { NonBlockingLockShared } else { NonBlockingLockExclusive })];
        if let Some(s) = shard {
            let name = format!("lock.shard-{}-of-{}", s.index, s.count);
            locks.push((
                open::own_file(&handle, &dir, &name, OFlags::CREATE | OFlags::WRONLY)?,
                NonBlockingLockExclusive,
            ));
        }
        let mut told = false;
        for (lock, how) in &locks {
            while rustix::fs::flock(lock, *how).is_err() {
                if !told {
                    tracing::warn!(
                        destination = %root.display(),
                        "another s3load run is writing into this directory; waiting for it to finish"
                    );
                    told = true;
                }
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
        }
        let file = match shard {
            Some(s) => format!("{SHARD_PREFIX}{}-of-{}", s.index, s.count),
            None => "state".to_string(),
        };
        let files = record_files(&dir);
        let merged_shards: Vec<String> = match shard {
            None => files.iter().filter(|f| f.starts_with(SHARD_PREFIX)).cloned().collect(),
            Some(_) => Vec::new(),
        };
        let (mut records, own_entries) = load_merged(&handle, &dir, &files, &file, shard.is_some())?;
        let mut set_aside = None;
        let (own, lines) = match own_entries {
            Some((entries, lines)) => (entries, lines),
            None => {
                let aside = format!("{file}.set-aside-{}", to_ns(SystemTime::now()));
                rustix::fs::renameat(&handle, file.as_str(), &handle, aside.as_str())
                    .map_err(|e| Error::io(dir.join(&file), "setting aside", e.into()))?;
                set_aside = Some((dir.join(&file), dir.join(&aside)));
                if shard.is_none() {
                    records = Table::default();
                }
                (Table::default(), 0)
            }
        };
        let mut log = open::own_file(&handle, &dir, &file, OFlags::CREATE | OFlags::RDWR | OFlags::APPEND)?;
        let path = dir.join(&file);
        let len = log.metadata().map_err(|e| Error::io(&path, "reading", e))?.len();
        if len == 0 {
            log.write_all(format!("{HEADER}\n").as_bytes()).map_err(|e| Error::io(&path, "writing", e))?;
        } else {
            // A line torn by a crash has no newline: end it, so that the first
            // line this run appends is not glued to it (and lost with it).
            let mut last = [0u8; 1];
            std::os::unix::fs::FileExt::read_exact_at(&log, &mut last, len - 1)
                .map_err(|e| Error::io(&path, "reading", e))?;
            if last[0] != b'\n' {
                log.write_all(b"\n").map_err(|e| Error::io(&path, "writing", e))?;
            }
        }
        Ok(StateStore {
            dir,
            handle: Some(handle),
            records: Mutex::new(records),
            own: shard.map(|_| Mutex::new(own)),
            changed: AtomicBool::new(!merged_shards.is_empty()),
            merged_shards,
            file,
            wrote: AtomicBool::new(false),
            log: Some(Mutex::new(log)),
            _locks: locks.into_iter().map(|(f, _)| f).collect(),
            waited: told,
            set_aside,
            lines: AtomicUsize::new(lines),
        })
    }

    /// The record found in a format this s3load does not know (written by a
    /// newer s3load, or damaged), and where it was kept instead: a new
    /// record was started. For the command to tell the user.
    pub fn set_aside(&self) -> Option<(&Path, &Path)> {
        self.set_aside.as_ref().map(|(from, to)| (from.as_path(), to.as_path()))
    }

    /// What to tell the user of a record set aside ([`StateStore::set_aside`]).
    pub fn set_aside_notice(&self) -> Option<String> {
        let (record, kept) = self.set_aside()?;
        Some(format!(
            "the sync record {} is in a format this s3load does not know (written by a newer s3load, or damaged); \
             kept as {} and a new record started: files are compared by size and time until this run records them",
            record.display(),
            kept.display()
        ))
    }

    /// Whether another run held the lock when this one asked for it.
    pub fn waited(&self) -> bool {
        self.waited
    }

    /// Whether the record holds no file.
    pub fn is_empty(&self) -> bool {
        self.records.lock().unwrap().is_empty()
    }

    pub fn get(&self, path: &str) -> Option<Record> {
        self.records.lock().unwrap().get(path)
    }

    /// Records a file just written (or, with `removed`, just deleted).
    pub fn put(&self, rec: Record) {
        self.append(&rec);
        self.wrote.store(true, Ordering::Relaxed);
        if let Some(own) = &self.own {
            own.lock().unwrap().insert(&rec, true);
        }
        let mut records = self.records.lock().unwrap();
        if rec.removed {
            records.remove(&rec.path);
        } else {
            records.insert(&rec, true);
        }
    }

    /// Appends `rec`'s line to the file.
    fn append(&self, rec: &Record) {
        let line = match serde_json::to_string(rec) {
            Ok(l) => l + "\n",
            Err(_) => return,
        };
        if let Some(log) = &self.log {
            // One write per line: with O_APPEND a line is never interleaved.
            match log.lock().unwrap().write_all(line.as_bytes()) {
                Ok(()) => {
                    self.lines.fetch_add(1, Ordering::Relaxed);
                }
                Err(e) => {
                    tracing::warn!(path = %self.dir.display(), error = %e, "could not update the sync record; the next sync compares sizes and times for this file");
                }
            }
        }
    }

    /// Notes that `path`'s file is at the destination (a sync's walk found
    /// it): its record is kept when the record is rewritten.
    pub fn saw(&self, path: &str) {
        self.records.lock().unwrap().mark_present(path);
    }

    pub fn forget(&self, path: &str) {
        self.put(Record { path: path.to_string(), removed: true, ..Record::empty() });
    }

    /// Marks every record this run wrote as suspect: used when the files may
    /// not have reached the disk (the durability step failed). A suspect record
    /// still names the object, but no file can match its mtime, so the next
    /// sync fetches the file again instead of taking one that is the right size
    /// but holds zeros. (Dropping the record would not do: without one, the
    /// size-and-time rule would take such a file as up to date.) Falls back to
    /// appending the suspect lines if the record cannot be rewritten.
    pub fn distrust_this_run(&self, keep: impl Fn(&str, bool) -> bool) {
        self.change_this_run(|r| {
            r.mtime_ns = SUSPECT_MTIME;
            true
        });
        if let Err(e) = self.compact(keep) {
            tracing::warn!(error = %e, "could not rewrite the sync record; appending the suspect entries instead");
            let records = self.records.lock().unwrap();
            for at in records.offsets().filter(|&at| records.is_touched(at)) {
                self.append(&records.at(at));
            }
        }
    }

    /// Marks this run's records as on disk (after a successful flush of the
    /// whole filesystem); takes effect with the next [`compact`](Self::compact).
    pub fn confirm_this_run(&self) {
        self.change_this_run(|r| r.boot.take().is_some());
    }

    /// Applies `f` to every record this run wrote; `f` says whether it changed one.
    fn change_this_run(&self, f: impl Fn(&mut Record) -> bool) {
        let mut records = self.records.lock().unwrap();
        let touched: Vec<usize> = records.offsets().filter(|&at| records.is_touched(at)).collect();
        for at in touched {
            let mut r = records.at(at);
            if f(&mut r) {
                records.insert(&r, true);
                self.changed.store(true, Ordering::Relaxed);
            }
        }
    }

    /// Rewrites the record with one line per path for which `keep` holds
    /// (given the path, and whether this run recorded its file or found it
    /// on disk: see [`StateStore::saw`]). Does
    /// nothing when every record is kept, nothing changed that only a rewrite
    /// records, and the file holds at most [`SLACK_LINES`] superseded lines
    /// beyond one per record (a no-op sync, or a first sync into an empty
    /// directory, which only appended).
    pub fn compact(&self, keep: impl Fn(&str, bool) -> bool) -> Result<(), Error> {
        let (Some(log), Some(handle)) = (&self.log, &self.handle) else {
            return Ok(());
        };
        let records = self.records.lock().unwrap();
        let own = self.own.as_ref().map(|o| o.lock().unwrap());
        // What this run's file holds now, and what it will hold: entries of
        // the tables, not copies (a million records are hundreds of megabytes).
        let (before, mut after): (usize, Vec<(&Table, usize)>) = match &own {
            None => (
                records.len(),
                records
                    .offsets()
                    .filter(|&at| keep(records.path(at), records.is_here(at)))
                    .map(|at| (&*records, at))
                    .collect(),
            ),
            Some(own) => {
                let mut after = Vec::new();
                for at in own.offsets() {
                    let p = own.path(at);
                    if own.is_removed(at) {
                        // Kept until an unsharded run merges every file: the
                        // path may still be recorded in another shard's file.
                        after.push((&**own, at));
                    } else if let Some(current) = records.find(p)
                        && keep(p, records.is_here(current))
                    {
                        after.push((&*records, current));
                    }
                }
                (own.len(), after)
            }
        };
        let superseded = self.lines.load(Ordering::Relaxed).saturating_sub(before);
        let unchanged = after.len() == before && !self.changed.load(Ordering::Relaxed);
        // A run that wrote nothing writes nothing, whatever the file holds.
        if unchanged && (!self.wrote.load(Ordering::Relaxed) || superseded <= SLACK_LINES + before) {
            return Ok(());
        }
        after.sort_unstable_by(|(t, a), (u, b)| t.path(*a).cmp(u.path(*b)));
        let tmp = format!("{}.{}.tmp", self.file, std::process::id());
        let flags = OFlags::CREATE | OFlags::EXCL | OFlags::WRONLY;
        // A leftover of a crashed run that had this pid: no live process has it
        // (this run holds the lock), so it can go.
        let _ = rustix::fs::unlinkat(handle, tmp.as_str(), AtFlags::empty());
        let f = open::own_file(handle, &self.dir, &tmp, flags)?;
        // Line by line through a buffer: the text of a million records is
        // never held whole.
        let written = (|| -> std::io::Result<()> {
            let mut w = std::io::BufWriter::with_capacity(1 << 20, f);
            w.write_all(format!("{HEADER}\n").as_bytes())?;
            for (t, at) in &after {
                serde_json::to_writer(&mut w, &t.at(*at))?;
                w.write_all(b"\n")?;
            }
            w.flush()
        })();
        if let Err(e) = written {
            let _ = rustix::fs::unlinkat(handle, tmp.as_str(), AtFlags::empty());
            return Err(Error::io(self.dir.join(&tmp), "writing", e));
        }
        let lines = after.len();
        drop(after);
        drop(own);
        rustix::fs::renameat(handle, tmp.as_str(), handle, self.file.as_str())
            .map_err(|e| Error::io(self.dir.join(&self.file), "replacing", e.into()))?;
        // Everything the shards recorded is in `state` now.
        for name in &self.merged_shards {
            let _ = rustix::fs::unlinkat(handle, name.as_str(), AtFlags::empty());
        }
        self.lines.store(lines, Ordering::Relaxed);
        self.changed.store(false, Ordering::Relaxed);
        // Later appends would go to the old file: reopen.
        if let Ok(f) = open::own_file(handle, &self.dir, &self.file, OFlags::WRONLY | OFlags::APPEND) {
            *log.lock().unwrap() = f;
        }
        Ok(())
    }
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
            let s = StateStore::open(d.path(), None).await.unwrap();
            s.put(rec("a", "1"));
            s.put(rec("b", "1"));
            s.put(rec("a", "2"));
            s.forget("b");
        }
        // A crash in the middle of a line.
        let state = d.path().join(STATE_DIR).join("state");
        let mut f = std::fs::OpenOptions::new().append(true).open(&state).unwrap();
        f.write_all(b"{\"path\":\"c\",\"si").unwrap();
        drop(f);
        let s = StateStore::read_only(d.path());
        assert_eq!(s.get("a").unwrap().etag.as_deref(), Some("2"));
        assert!(s.get("b").is_none());
        assert!(s.get("c").is_none());
    }

    /// The inode of the record file: a rewrite replaces it.
    fn inode(d: &Path) -> u64 {
        std::os::unix::fs::MetadataExt::ino(&std::fs::metadata(d.join(STATE_DIR).join("state")).unwrap())
    }

    #[tokio::test]
    async fn a_record_that_only_grew_is_not_rewritten_one_full_of_superseded_lines_is() {
        let d = tempfile::tempdir().unwrap();
        let s = StateStore::open(d.path(), None).await.unwrap();
        let first = inode(d.path());
        for p in ["a", "b", "c", "d"] {
            s.put(rec(p, "1"));
        }
        s.compact(|_, _| true).unwrap();
        assert_eq!(inode(d.path()), first, "a first sync into an empty directory only appends");
        // Each file written again and again: superseded lines pile up until a
        // rewrite pays.
        for round in 0..(SLACK_LINES / 4 + 2) {
            for p in ["a", "b", "c", "d"] {
                s.put(rec(p, &round.to_string()));
            }
        }
        s.compact(|_, _| true).unwrap();
        assert_ne!(inode(d.path()), first, "rewritten");
        let text = std::fs::read_to_string(d.path().join(STATE_DIR).join("state")).unwrap();
        assert_eq!(text.lines().count(), 5, "the header and one line per file: {text}");
        drop(s);
        let s = StateStore::read_only(d.path());
        assert_eq!(s.get("a").unwrap().etag.as_deref(), Some(&*(SLACK_LINES / 4 + 1).to_string()));
    }

    #[tokio::test]
    async fn a_line_torn_by_a_crash_does_not_swallow_the_next_runs_first_line() {
        let d = tempfile::tempdir().unwrap();
        {
            let s = StateStore::open(d.path(), None).await.unwrap();
            s.put(rec("a", "1"));
        }
        let path = d.path().join(STATE_DIR).join("state");
        let mut f = std::fs::OpenOptions::new().append(true).open(&path).unwrap();
        f.write_all(br#"{"path":"torn","si"#).unwrap();
        drop(f);
        {
            let s = StateStore::open(d.path(), None).await.unwrap();
            s.put(rec("b", "1"));
            s.compact(|_, _| true).unwrap();
        }
        let s = StateStore::read_only(d.path());
        assert!(s.get("a").is_some() && s.get("b").is_some(), "the line after the torn one is kept");
        assert!(s.get("torn").is_none());
    }

    #[tokio::test]
    async fn compaction_keeps_only_what_is_asked_and_stays_readable() {
        let d = tempfile::tempdir().unwrap();
        let s = StateStore::open(d.path(), None).await.unwrap();
        for p in ["a", "b", "c"] {
            s.put(rec(p, "1"));
        }
        s.compact(|p, _| p != "b").unwrap();
        s.put(rec("d", "1"));
        drop(s);
        let text = std::fs::read_to_string(d.path().join(STATE_DIR).join("state")).unwrap();
        assert!(text.starts_with("s3load-state 1\n"));
        let s = StateStore::read_only(d.path());
        assert!(s.get("a").is_some() && s.get("c").is_some() && s.get("d").is_some());
        assert!(s.get("b").is_none());
    }

    #[tokio::test]
    async fn a_record_in_an_unknown_format_is_set_aside_never_appended_to() {
        let d = tempfile::tempdir().unwrap();
        let dir = d.path().join(STATE_DIR);
        std::fs::create_dir(&dir).unwrap();
        let newer = "s3load-state 9\n{\"path\":\"a\"}\n";
        std::fs::write(dir.join("state"), newer).unwrap();
        assert!(StateStore::read_only(d.path()).get("a").is_none());
        let s = StateStore::open(d.path(), None).await.unwrap();
        assert!(s.get("a").is_none());
        // Said to the caller, which tells the user (state writes no line for it).
        let (record, kept) = s.set_aside().expect("told");
        assert_eq!(record, dir.join("state"));
        assert!(kept.to_str().unwrap().contains("state.set-aside-"), "{}", kept.display());
        s.put(rec("b", "1"));
        drop(s);
        let aside: Vec<_> = std::fs::read_dir(&dir)
            .unwrap()
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .filter(|n| n.starts_with("state.set-aside-"))
            .collect();
        assert_eq!(aside.len(), 1);
        assert_eq!(std::fs::read_to_string(dir.join(&aside[0])).unwrap(), newer, "kept as it was");
        assert!(std::fs::read_to_string(dir.join("state")).unwrap().starts_with("s3load-state 1\n"));
        assert!(StateStore::read_only(d.path()).get("b").is_some());
    }

    #[tokio::test]
    async fn planted_links_in_the_record_directory_are_refused_not_followed() {
        let d = tempfile::tempdir().unwrap();
        let victim = d.path().join("victim");
        std::fs::write(&victim, b"keep").unwrap();
        for name in ["state", "lock"] {
            let root = d.path().join(format!("dest-{name}"));
            std::fs::create_dir_all(root.join(STATE_DIR)).unwrap();
            std::os::unix::fs::symlink(&victim, root.join(STATE_DIR).join(name)).unwrap();
            let err = StateStore::open(&root, None).await.unwrap_err().to_string();
            assert!(err.contains("never follows links") && err.contains(name), "{err}");
        }
        let root = d.path().join("dest-dir");
        std::fs::create_dir_all(&root).unwrap();
        std::fs::create_dir_all(d.path().join("elsewhere")).unwrap();
        std::os::unix::fs::symlink(d.path().join("elsewhere"), root.join(STATE_DIR)).unwrap();
        assert!(StateStore::open(&root, None).await.is_err());
        assert_eq!(std::fs::read(&victim).unwrap(), b"keep");
        assert_eq!(std::fs::read_dir(d.path().join("elsewhere")).unwrap().count(), 0);
    }

    #[tokio::test]
    async fn records_of_a_run_whose_files_may_not_be_on_disk_become_suspect() {
        let d = tempfile::tempdir().unwrap();
        {
            let s = StateStore::open(d.path(), None).await.unwrap();
            s.put(rec("old", "1"));
        }
        let s = StateStore::open(d.path(), None).await.unwrap();
        s.put(rec("new", "1"));
        s.distrust_this_run(|_, _| true);
        drop(s);
        let s = StateStore::read_only(d.path());
        assert_eq!(s.get("old").unwrap().mtime_ns, 5, "records of earlier runs stay as they were");
        assert_eq!(s.get("new").unwrap().mtime_ns, SUSPECT_MTIME, "this run's entries are suspect for the next run");
    }

    #[tokio::test]
    async fn unconfirmed_records_from_another_boot_are_suspect() {
        let d = tempfile::tempdir().unwrap();
        {
            let s = StateStore::open(d.path(), None).await.unwrap();
            s.put(Record { boot: Some(boot_id().into()), ..rec("this-boot", "1") });
            s.put(Record { boot: Some("another-boot".into()), ..rec("other-boot", "1") });
            s.put(rec("confirmed", "1"));
        }
        let s = StateStore::read_only(d.path());
        assert_eq!(s.get("this-boot").unwrap().mtime_ns, 5, "same boot: the page cache still holds it");
        assert_eq!(s.get("confirmed").unwrap().mtime_ns, 5);
        assert_eq!(s.get("other-boot").unwrap().mtime_ns, SUSPECT_MTIME, "a reboot since: suspect");
        drop(s);
        let s = StateStore::open(d.path(), None).await.unwrap();
        s.put(Record { boot: Some(boot_id().into()), ..rec("flushed", "1") });
        s.confirm_this_run();
        s.compact(|_, _| true).unwrap();
        drop(s);
        let text = std::fs::read_to_string(d.path().join(STATE_DIR).join("state")).unwrap();
        let flushed = text.lines().find(|l| l.contains("\"flushed\"")).unwrap();
        assert!(!flushed.contains("boot"), "confirmed after the flush: {flushed}");
    }

    #[tokio::test]
    async fn a_second_run_waits_for_the_lock() {
        let d = tempfile::tempdir().unwrap();
        let first = StateStore::open(d.path(), None).await.unwrap();
        let second = tokio::time::timeout(Duration::from_millis(500), StateStore::open(d.path(), None)).await;
        assert!(second.is_err(), "the second open must wait while the first holds the lock");
        drop(first);
        tokio::time::timeout(Duration::from_secs(5), StateStore::open(d.path(), None)).await.unwrap().unwrap();
    }
}
