//! The resume journal of a temporary file: which object and part layout the
//! file holds, then one line per finished part with its hash.
//!
//! Format (described in `docs/reliability.md`): the magic line, the header
//! the engine gives (object identity and part layout), then `done PART HASH`
//! lines appended with `O_APPEND`, so a kill leaves whole lines or a torn last
//! one that the reader ignores.

use std::ffi::{OsStr, OsString};
use std::fs::File;
use std::os::fd::OwnedFd;
use std::sync::{Arc, Mutex};
use std::time::Instant;

use rustix::fs::{AtFlags, OFlags};

/// First line of a journal; the format is described in `docs/reliability.md`.
pub(super) const JOURNAL_MAGIC: &str = "s3load-journal 1";

/// The progress journal of a resumable file.
///
/// A fresh journal holds its lines (header included) in memory until `hold`
/// has passed since it was opened, then writes them and every later line at
/// once. An object that finishes sooner never writes its journal, so removing
/// it frees no disk block: freeing one can wait long (see [`SpentJournal`]),
/// and such an object has little to resume. Held lines are written when the
/// file is kept for a later run (dropped without commit or discard, as when a
/// signal stops the run); only a kill or a crash within `hold` of an object's
/// start loses them, and with them at most that much of its progress.
#[derive(Debug)]
pub(super) struct Journal {
    pub(super) file: File,
    pub(super) name: OsString,
    /// Lines not written yet and until when they may wait; `None` once the
    /// journal writes through.
    pub(super) held: Mutex<Option<Held>>,
}

#[derive(Debug)]
pub(super) struct Held {
    pub(super) lines: Vec<u8>,
    /// `None`: a hold too long to add to the clock, kept until the file is.
    pub(super) until: Option<Instant>,
}

impl Journal {
    /// A journal writing to `file`; a `fresh` one (nothing to resume) holds
    /// its lines for `hold`.
    pub(super) fn new(file: File, name: OsString, fresh: bool, hold: std::time::Duration) -> Journal {
        let held = fresh.then(|| Held { lines: Vec::new(), until: Instant::now().checked_add(hold) });
        Journal { file, name, held: Mutex::new(held) }
    }

    /// Appends `line` (one `write` of whole lines, `O_APPEND`: a kill leaves
    /// whole lines, or a torn last one that the reader ignores).
    pub(super) fn append(&self, line: &str) -> std::io::Result<()> {
        use std::io::Write;
        let mut held = self.held.lock().unwrap();
        let Some(h) = held.as_mut() else {
            return (&self.file).write_all(line.as_bytes());
        };
        h.lines.extend_from_slice(line.as_bytes());
        if h.until.is_none_or(|until| Instant::now() < until) {
            return Ok(());
        }
        let lines = held.take().expect("matched").lines;
        (&self.file).write_all(&lines)
    }

    /// Writes the held lines now.
    pub(super) fn write_held(&self) -> std::io::Result<()> {
        use std::io::Write;
        match self.held.lock().unwrap().take() {
            Some(h) => (&self.file).write_all(&h.lines),
            None => Ok(()),
        }
    }

    /// Forgets the held lines: the journal is about to be removed.
    pub(super) fn disarm(&self) {
        self.held.lock().unwrap().take();
    }
}

impl Drop for Journal {
    fn drop(&mut self) {
        // Kept for a later run: what it holds is what that run can skip.
        if let Err(e) = self.write_held() {
            tracing::warn!(journal = ?self.name, error = %e, "could not write the resume journal");
        }
    }
}

/// The journal of a committed file, still to be removed.
///
/// Removing it can take long: once write-back has given its few bytes a block,
/// freeing that block on a filesystem mounted with `discard` waits for the
/// device to trim it, behind all the data queued for writing (measured: one to
/// two seconds while 4 GiB were being written back, with every I/O thread
/// stuck in `blkdev_issue_discard` from `close`). So it is done apart from the
/// transfers, and the run waits for it only at its end.
#[derive(Debug)]
#[must_use = "a spent journal is left behind unless removed"]
pub struct SpentJournal {
    pub(super) journal: Journal,
    pub(super) dir: Arc<OwnedFd>,
}

impl SpentJournal {
    /// Unlinks and closes the journal (best effort: the object is committed).
    pub fn remove(self) {
        let _ = rustix::fs::unlinkat(&self.dir, &self.journal.name, AtFlags::empty());
        drop(self.journal);
    }
}

/// A finished part recorded in a journal: its index and hash (empty when the
/// object's bytes are not hashed).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Recorded {
    pub part: usize,
    pub hash: String,
}

/// The finished parts a journal records, if its header is `header`.
pub(super) fn read_journal(dir: &OwnedFd, name: &OsStr, header: &str) -> Option<Vec<Recorded>> {
    read_journal_marked(dir, name, header).map(|(parts, _)| parts)
}

/// The line a piece's journal ends with once every range of the piece is
/// written and flushed (see `tempfile::TempFile::piece_done`).
pub(super) const COMPLETE_LINE: &str = "complete";

/// [`read_journal`], and whether the journal ends with [`COMPLETE_LINE`].
pub(super) fn read_journal_marked(dir: &OwnedFd, name: &OsStr, header: &str) -> Option<(Vec<Recorded>, bool)> {
    use std::io::Read;
    let mut text = String::new();
    super::open::regular_in(dir, name, OFlags::RDONLY).ok()?.read_to_string(&mut text).ok()?;
    let body = text.strip_prefix(JOURNAL_MAGIC)?.strip_prefix('\n')?.strip_prefix(header)?.strip_prefix('\n')?;
    let mut out = Vec::new();
    let mut complete = false;
    for line in body.split_inclusive('\n') {
        // A line without its newline is torn (a kill mid-write): ignore it.
        let Some(line) = line.strip_suffix('\n') else { break };
        let mut words = line.split(' ');
        match (words.next(), words.next().and_then(|p| p.parse().ok()), words.next()) {
            (Some("done"), Some(part), Some(hash)) => out.push(Recorded { part, hash: hash.to_string() }),
            (Some(COMPLETE_LINE), None, None) => {
                complete = true;
                break;
            }
            _ => break, // a torn last line: ignore it and what follows
        }
    }
    Some((out, complete))
}
