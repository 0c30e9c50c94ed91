//! Objects split across shards: every shard's run writes its piece into one
//! shared temporary file, with a journal of its own; the run that finds
//! every piece complete checks the others' ranges, verifies the object and
//! moves it into place. What is left of replaced versions is removed once no
//! run holds it.

use std::ffi::{OsStr, OsString};
use std::path::{Path, PathBuf};
use std::time::Duration;

use rustix::fs::{AtFlags, OFlags};

use super::dirs::open_parent;
use super::journal::{COMPLETE_LINE, JOURNAL_MAGIC, Journal, Recorded, read_journal_marked};
use super::names::{NAME_KEEP, PIECE_SUFFIX, SPLIT_SUFFIX, kept_short, piece_name};
use super::tempfile::{Split, TempFile, below, open_own, try_lock};
use crate::error::Error;
use crate::refusal::Refusal;

/// Which piece of a split object a run writes (see [`TempFile::open_piece`]).
#[derive(Debug, Clone)]
pub struct PieceOf {
    /// Names the shared file: a hash of the object's identity and layout.
    pub id: String,
    /// The journal header every piece's journal shares, before its piece line.
    pub header: String,
    /// Whether each piece has ranges at all.
    pub pieces: Vec<bool>,
    pub index: usize,
}

impl TempFile {
    /// After a split object is in place: the shared files of other versions
    /// of it (another ETag or layout: the object was replaced while an
    /// earlier run had it split) that no run holds are of no use any more.
    pub(super) fn remove_other_splits(&self) {
        let own = self.tmp_name.to_string_lossy().strip_suffix(SPLIT_SUFFIX).map(str::to_string);
        let (Some(own), Ok(dir)) = (own, rustix::fs::Dir::read_from(&*self.dir)) else { return };
        let short = kept_short(&self.name);
        for entry in dir.flatten() {
            let Ok(n) = entry.file_name().to_str() else { continue };
            let stem = match (n.strip_suffix(SPLIT_SUFFIX), n.strip_suffix(PIECE_SUFFIX)) {
                (Some(s), _) => Some(s),
                (_, Some(s)) => s.rsplit_once('.').map(|(s, _)| s),
                _ => None,
            };
            let Some(stem) = stem else { continue };
            if stem == own || stem.rsplit_once('.').map(|(s, _)| s) != Some(&format!(".{short}")) {
                continue;
            }
            let n = n.to_string();
            let free = super::open::regular_in(&*self.dir, n.as_str(), OFlags::RDONLY)
                .is_ok_and(|f| rustix::fs::fstat(&f).is_ok_and(|st| settled(&st)) && try_lock(&f));
            if free {
                let _ = rustix::fs::unlinkat(&*self.dir, n.as_str(), AtFlags::empty());
            }
        }
    }

    /// Opens the temporary file of an object split across shards, to write
    /// one piece of it ([`PieceOf`]). Every shard's run opens the same file, named by `id` (a
    /// hash of the object's identity and range layout, so two versions or
    /// layouts never share one), and holds a shared lock on it while it
    /// writes; each piece has a journal of its own, written by its shard
    /// alone (appends from several NFS clients to one file are not atomic).
    /// Returns the file and the ranges this piece's journal records.
    ///
    /// Nothing here truncates or removes the shared file: other shards'
    /// ranges are in it.
    pub fn open_piece(
        root: &Path,
        dest: &Path,
        size: u64,
        piece: PieceOf,
        hold: Duration,
    ) -> Result<(TempFile, Vec<Recorded>), Error> {
        let PieceOf { id, header, pieces, index } = piece;
        let rel = below(root, dest)?;
        let (dir, name) = open_parent(root, rel)?;
        let stem = format!(".{}.{id}", kept_short(name));
        let tmp_name = OsString::from(format!("{stem}{SPLIT_SUFFIX}"));
        let path = dest.with_file_name(&tmp_name);
        let journals: Vec<(OsString, bool)> = pieces
            .iter()
            .enumerate()
            .map(|(i, &has)| (OsString::from(format!("{stem}.{i}{PIECE_SUFFIX}")), has))
            .collect();
        let journal_name = journals[index].0.clone();
        let journal_path = dest.with_file_name(&journal_name);
        // The piece's journal first, locked: a second run with the same index
        // (two pods given one --shard) must not write the same piece.
        let jflags = OFlags::CREATE | OFlags::RDWR | OFlags::APPEND;
        let jfd = open_own(&dir, &journal_name, &journal_path, jflags, "opening journal")?;
        if !try_lock(&jfd) {
            return Err(Refusal::PieceInUse { path: dest.to_path_buf(), piece: piece_name(index, pieces.len()) }.into());
        }
        let file = loop {
            let fd =
                open_own(&dir, &tmp_name, &path, OFlags::CREATE | OFlags::RDWR, "opening the shared temporary file")?;
            // Waits while a shard that finished the last piece checks the file.
            rustix::fs::flock(&fd, rustix::fs::FlockOperation::LockShared)
                .map_err(|e| Error::io(&path, "locking the shared temporary file", e.into()))?;
            // That shard may have moved it into place meanwhile: the name must
            // still be this file's, or it is opened (created) again.
            let ours = rustix::fs::fstat(&fd).map_err(|e| Error::io(&path, "checking", e.into()))?;
            match rustix::fs::statat(&dir, &tmp_name, AtFlags::SYMLINK_NOFOLLOW) {
                Ok(st) if st.st_dev == ours.st_dev && st.st_ino == ours.st_ino => break fd,
                _ => continue,
            }
        };
        let on_disk = file.metadata().map_err(|e| Error::io(&path, "checking", e))?.len();
        if on_disk > size {
            return Err(Refusal::LargerThanObject { path: path.clone(), on_disk, size }.into());
        }
        let piece_header = format!("{header}\npiece {index} {}", pieces.len());
        let (recorded, _) = read_journal_marked(&dir, &journal_name, &piece_header).unwrap_or_default();
        let fresh = recorded.is_empty();
        if fresh {
            rustix::fs::ftruncate(&jfd, 0).map_err(|e| Error::io(&journal_path, "starting journal", e.into()))?;
        }
        let journal = Journal::new(jfd, journal_name, fresh, hold);
        let tmp = TempFile {
            split: Some(Split { header, pieces: journals, index }),
            ..TempFile::journaled(file, dir, tmp_name, name, path, dest, journal)
        };
        if fresh {
            let j = tmp.journal.as_ref().expect("set above");
            j.append(&format!("{JOURNAL_MAGIC}\n{piece_header}\n"))
                .map_err(|e| Error::io(&journal_path, "starting journal", e))?;
        }
        // Sized by the first shard to get here (preallocating keeps what
        // other shards wrote; a filesystem without it gets a sparse file).
        if on_disk < size {
            tmp.reserve(size)?;
        }
        Ok((tmp, recorded))
    }

    /// This piece is all written: its bytes are flushed (on NFS, to the
    /// server, where the shard that finishes the object reads them), then
    /// its journal says so.
    pub fn piece_done(&self) -> Result<(), Error> {
        self.file.sync_data().map_err(|e| Error::io(&self.path, "flushing to disk", e))?;
        if let Some(j) = &self.journal {
            let jpath = self.dest.with_file_name(&j.name);
            j.write_held().map_err(|e| Error::io(&jpath, "writing journal", e))?;
            j.append(&format!("{COMPLETE_LINE}\n")).map_err(|e| Error::io(&jpath, "writing journal", e))?;
            j.file.sync_data().map_err(|e| Error::io(&jpath, "flushing journal", e))?;
        }
        Ok(())
    }

    /// Whether this run finishes the split object: with every other shard's
    /// run done writing (an exclusive lock on the shared file, which writers
    /// hold shared) and every piece's journal complete, returns the ranges
    /// the other pieces' journals record, to be checked and the object
    /// verified and moved into place by this run, which keeps the lock until
    /// then. Otherwise `None`: a shard still writing, or one not started,
    /// will find every piece complete when it finishes its own.
    pub fn finishes_split(&self) -> Result<Option<Vec<Recorded>>, Error> {
        let Some(split) = &self.split else { return Ok(None) };
        // Unlocked first: a failed upgrade must not keep the shared lock
        // (POSIX locks, which NFS uses for flock, keep it), or two shards
        // finishing at once could each see the other's and neither finish.
        let _ = rustix::fs::flock(&self.file, rustix::fs::FlockOperation::Unlock);
        let exclusive = rustix::fs::flock(&self.file, rustix::fs::FlockOperation::NonBlockingLockExclusive);
        if exclusive.is_err() || self.check_identity().is_err() {
            return Ok(None);
        }
        let mut others = Vec::new();
        for (i, (name, has_ranges)) in split.pieces.iter().enumerate() {
            if i == split.index || !has_ranges {
                continue;
            }
            let header = format!("{}\npiece {i} {}", split.header, split.pieces.len());
            match read_journal_marked(&self.dir, name, &header) {
                Some((recorded, true)) => others.extend(recorded),
                Some((_, false)) | None => return Ok(None),
            }
        }
        Ok(Some(others))
    }
}

/// A split object's files younger than this are never taken for leftovers: a
/// shard of another run creates them a moment before it locks them.
pub(super) const SPLIT_SETTLE: Duration = Duration::from_secs(2);

/// Whether a file whose status is `st` has stood unchanged for
/// [`SPLIT_SETTLE`].
fn settled(st: &rustix::fs::Stat) -> bool {
    let changed = std::time::UNIX_EPOCH + Duration::from_secs(st.st_ctime.max(0) as u64);
    changed.elapsed().is_ok_and(|age| age >= SPLIT_SETTLE)
}

/// After a complete sharded run: removes the files of split objects (the
/// shared file and the pieces' journals) that no run holds and whose
/// destination path is not one this run wrote a piece of (`pieces`, paths
/// relative to `root`). They belong to versions of objects that were
/// replaced since (the object was then fetched whole) or that are in place
/// already: this run's listing is the run's one listing, so no shard of it
/// still needs them. Returns how many were removed.
pub fn remove_unneeded_splits(root: &Path, pieces: &std::collections::HashSet<String>) -> usize {
    let mut removed = 0;
    let mut stack = vec![PathBuf::new()];
    while let Some(rel_dir) = stack.pop() {
        let Ok(entries) = std::fs::read_dir(root.join(&rel_dir)) else { continue };
        for e in entries.flatten() {
            let Ok(ft) = e.file_type() else { continue };
            let name = e.file_name();
            let Some(n) = name.to_str() else { continue };
            if ft.is_dir() {
                if n != ".s3load" {
                    stack.push(rel_dir.join(n));
                }
                continue;
            }
            if !ft.is_file() {
                continue;
            }
            // `.NAME.ID.s3load-split`, `.NAME.ID.I.s3load-piece`.
            // The id is 16 hex digits and a piece's index a number: other
            // names that merely end as these do are not s3load's.
            let id_ok = |id: &str| id.len() == 16 && id.bytes().all(|b| b.is_ascii_hexdigit());
            let stem = match (n.strip_suffix(SPLIT_SUFFIX), n.strip_suffix(PIECE_SUFFIX)) {
                (Some(s), _) => s.rsplit_once('.').filter(|(_, id)| id_ok(id)).map(|(s, _)| s),
                (_, Some(s)) => s
                    .rsplit_once('.')
                    .filter(|(_, i)| !i.is_empty() && i.bytes().all(|b| b.is_ascii_digit()))
                    .and_then(|(s, _)| s.rsplit_once('.'))
                    .filter(|(_, id)| id_ok(id))
                    .map(|(s, _)| s),
                _ => None,
            };
            let Some(short) = stem.and_then(|s| s.strip_prefix('.')) else { continue };
            // A name cut short cannot be told from another: left alone.
            if kept_short(OsStr::new(short)) != short || short.len() >= NAME_KEEP - 40 {
                continue;
            }
            let Some(rel) = rel_dir.join(short).to_str().map(str::to_string) else { continue };
            if pieces.contains(&rel) {
                continue;
            }
            let free = super::open::regular(&e.path(), rustix::fs::OFlags::RDONLY)
                .is_ok_and(|f| rustix::fs::fstat(&f).is_ok_and(|st| settled(&st)) && try_lock(&f));
            if free && std::fs::remove_file(e.path()).is_ok() {
                removed += 1;
            }
        }
    }
    removed
}
