//! Temporary files beside their destination, renamed into place when complete.
//!
//! A download is written with positional writes into `.NAME.XXXXXXXX.s3load-tmp`
//! in the destination's directory (same filesystem, so the final rename is
//! atomic). Nothing appears at the final path until every byte has arrived and
//! been verified; a failed download removes its temporary file.
//!
//! Symlinks: every directory below the destination root is created and opened
//! relative to its parent's handle with `O_NOFOLLOW`, and the temporary file is
//! created and renamed relative to the final directory's handle. So a symlink
//! planted in the destination (`models/x -> /etc`) is refused by name, never
//! written through; a symlink at a file's final name is replaced by the file,
//! not followed. The root itself is the user's choice and may be a symlink.
//!
//! Resume: an object fetched in several parts uses a fixed temporary name
//! (`.NAME.s3load-resume`) and a journal beside it (`.NAME.s3load-journal`) that
//! states which object and part layout the file holds and gets one line per
//! finished part, with that part's hash. A run killed mid-way (SIGKILL, OOM,
//! a pod restart) leaves both; the next run finds them, re-reads the finished
//! parts from disk to check their hashes (so nothing lost in a crash is
//! trusted), and fetches only the rest. A journal for another ETag or layout
//! means the object changed: the file starts over. Every temporary file is
//! `flock`ed by the process writing it, so a second s3load on the same
//! destination never shares or removes a file in use, and leftovers from dead
//! runs can be told apart and removed ([`remove_orphans`](super::orphans::remove_orphans)).
//!
//! The temporary file is preallocated (`fallocate`) to the object's size, so a
//! full disk shows up when the download starts rather than half-way through,
//! and large files are laid out contiguously. Filesystems without `fallocate`
//! get a sparse file instead.

use std::ffi::{OsStr, OsString};
use std::fs::File;
use std::os::fd::AsRawFd;
use std::os::fd::OwnedFd;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, SystemTime};

use rustix::fs::{AtFlags, Mode, OFlags};
use rustix::io::Errno;

use super::dirs::{Dirs, open_parent, open_parent_cached};
use super::iobuf::ALIGN;
use super::journal::{JOURNAL_MAGIC, Journal, Recorded, SpentJournal, read_journal};
use super::names::{JOURNAL_SUFFIX, RESUME_SUFFIX, kept, temp_name};
use crate::error::Error;
use crate::refusal::{Place, Refusal};

/// `dest` relative to `root`, which it must lie below.
pub(super) fn below<'a>(root: &Path, dest: &'a Path) -> Result<&'a Path, Error> {
    dest.strip_prefix(root).map_err(|_| Error::Internal(format!("{} is not below {}", dest.display(), root.display())))
}

/// Opens (creating it under `O_CREAT`) one of s3load's temporary files or
/// journals, `name` in `dir` (`path` for messages): never through a link,
/// never blocking on a FIFO, only a regular file.
pub(super) fn open_own(
    dir: &OwnedFd,
    name: &OsStr,
    path: &Path,
    flags: OFlags,
    doing: &'static str,
) -> Result<File, Error> {
    super::open::regular_in(dir, name, flags).map_err(|e| e.into_error(path, Place::TempFile, doing))
}

/// Takes the file's lock, or says that another process holds it.
pub(super) fn try_lock(fd: impl std::os::fd::AsFd) -> bool {
    rustix::fs::flock(fd, rustix::fs::FlockOperation::NonBlockingLockExclusive).is_ok()
}

/// The most bytes handed to the page cache in one write call. Measured on
/// this project's VM (`benches/page-cache-writes.py`): 4 GiB written in
/// 256 KiB calls cost 7.2 - 10.4 s of system time, in 32 KiB calls 1.7 -
/// 1.8 s, nearly all of it in the kernel's copy into new page-cache pages; a
/// download of 4 x 1 GiB took 0.62x - 0.68x the CPU (docs/benchmarks.md).
/// Why is not pinned down: the kernel sizes the page-cache folios of a write
/// by the call's length, and the larger ones may come from memory the VM's
/// host had taken back. 32 KiB is what Go's `io.Copy` (s5cmd) writes. Direct
/// writes are not cut.
pub const CACHE_WRITE: usize = 32 << 10;

/// Writes `buf` at `offset` through the page cache, in calls of at most
/// [`CACHE_WRITE`] bytes that end on its multiples.
fn write_through_cache(file: &File, mut buf: &[u8], mut offset: u64) -> std::io::Result<()> {
    while !buf.is_empty() {
        let room = CACHE_WRITE - (offset % CACHE_WRITE as u64) as usize;
        let n = room.min(buf.len());
        file.write_all_at(&buf[..n], offset)?;
        buf = &buf[n..];
        offset += n as u64;
    }
    Ok(())
}

/// An open temporary file for one destination.
#[derive(Debug)]
pub struct TempFile {
    pub(super) file: File,
    /// The destination's directory, opened without following symlinks.
    pub(super) dir: Arc<OwnedFd>,
    pub(super) tmp_name: OsString,
    pub(super) name: OsString,
    /// Full paths, for messages.
    pub(super) path: PathBuf,
    pub(super) dest: PathBuf,
    /// Progress journal of a resumable file.
    pub(super) journal: Option<Journal>,
    /// The file of an object split across shards, shared with the other
    /// shards' runs (see [`TempFile::open_piece`]).
    pub(super) split: Option<Split>,
    /// The same file opened with `O_DIRECT` (see [`TempFile::open_direct`]).
    pub(super) direct: Option<File>,
    /// The filesystem refused a direct write: every write is buffered now.
    pub(super) direct_refused: AtomicBool,
}

/// What a run writing one piece of a split object knows of the others.
#[derive(Debug)]
pub(super) struct Split {
    /// The journal header every piece's journal shares, before its piece line.
    pub(super) header: String,
    /// Each piece's journal name, and whether the piece has ranges at all.
    pub(super) pieces: Vec<(OsString, bool)>,
    pub(super) index: usize,
}

impl TempFile {
    /// Creates the directories from `root` down to `dest`'s parent and a
    /// temporary file of `size` bytes there. `dest` must lie below `root`.
    pub fn create(root: &Path, dest: &Path, size: u64) -> Result<TempFile, Error> {
        TempFile::create_in(&Dirs::default(), root, dest, size, true)
    }

    /// [`TempFile::create`] through the run's open directories; `reserve`
    /// preallocates `size` bytes (pointless when one write fills the file).
    pub fn create_in(dirs: &Dirs, root: &Path, dest: &Path, size: u64, reserve: bool) -> Result<TempFile, Error> {
        let rel = below(root, dest)?;
        let (dir, name) = open_parent_cached(dirs, root, rel)?;
        let tmp_name = temp_name(name);
        let path = dest.with_file_name(&tmp_name);
        let flags = OFlags::CREATE | OFlags::EXCL | OFlags::RDWR | OFlags::NOFOLLOW | OFlags::CLOEXEC;
        let fd = rustix::fs::openat(&dir, &tmp_name, flags, Mode::from_raw_mode(0o644))
            .map_err(|e| Error::io(&path, "creating temporary file", e.into()))?;
        try_lock(&fd);
        let tmp = TempFile {
            file: File::from(fd),
            dir,
            tmp_name,
            name: name.to_owned(),
            path,
            dest: dest.to_path_buf(),
            journal: None,
            split: None,
            direct: None,
            direct_refused: AtomicBool::new(false),
        };
        if reserve
            && size > 0
            && let Err(e) = tmp.reserve(size)
        {
            tmp.discard();
            return Err(e);
        }
        Ok(tmp)
    }

    /// Opens the resumable temporary file for `dest`. `header` names what the
    /// file holds (object identity and part layout); when the journal beside it
    /// has the same header, its finished parts are returned to be checked and
    /// skipped. When another process holds the file, a fresh unique one is used.
    ///
    /// A fresh journal holds its lines for `hold` (see [`Journal`]).
    pub fn open_resumable(
        root: &Path,
        dest: &Path,
        size: u64,
        header: &str,
        hold: Duration,
    ) -> Result<(TempFile, Vec<Recorded>), Error> {
        let rel = below(root, dest)?;
        let (dir, name) = open_parent(root, rel)?;
        let tmp_name = OsString::from(format!(".{}{RESUME_SUFFIX}", kept(name)));
        let journal_name = OsString::from(format!(".{}{JOURNAL_SUFFIX}", kept(name)));
        let path = dest.with_file_name(&tmp_name);
        let file = open_own(&dir, &tmp_name, &path, OFlags::CREATE | OFlags::RDWR, "opening temporary file")?;
        if !try_lock(&file) {
            return Ok((TempFile::create(root, dest, size)?, Vec::new()));
        }
        let journal_path = dest.with_file_name(&journal_name);
        let previous = read_journal(&dir, &journal_name, header);
        let on_disk = file.metadata().map(|m| m.len()).unwrap_or(0);
        let recorded = match previous {
            Some(r) if on_disk == size => r,
            _ => Vec::new(),
        };
        let jflags = OFlags::CREATE | OFlags::WRONLY | OFlags::APPEND;
        let jflags = if recorded.is_empty() { jflags | OFlags::TRUNC } else { jflags };
        // No journal (a FIFO at its name, no permission): nothing to resume. An empty resume file goes.
        let jfile = open_own(&dir, &journal_name, &journal_path, jflags, "opening journal").inspect_err(|_| {
            if on_disk == 0 {
                super::open::remove_if_still(&dir, &tmp_name, &file);
            }
        })?;
        let fresh = recorded.is_empty();
        let journal = Journal::new(jfile, journal_name, fresh, hold);
        let tmp = TempFile { split: None, ..TempFile::journaled(file, dir, tmp_name, name, path, dest, journal) };
        if fresh {
            // Starting over: if the file cannot be prepared (a full disk), neither
            // it nor its journal may stay behind.
            let started = tmp.file.set_len(0).map_err(|e| Error::io(&tmp.path, "truncating", e)).and_then(|()| {
                let j = tmp.journal.as_ref().expect("set above");
                j.append(&format!("{JOURNAL_MAGIC}\n{header}\n"))
                    .map_err(|e| Error::io(&journal_path, "starting journal", e))
            });
            if let Err(e) = started.and_then(|()| if size > 0 { tmp.reserve(size) } else { Ok(()) }) {
                tmp.discard();
                return Err(e);
            }
        }
        Ok((tmp, recorded))
    }

    /// A temporary file with a journal (resumable, or a split object's piece).
    pub(super) fn journaled(
        file: File,
        dir: OwnedFd,
        tmp_name: OsString,
        name: &OsStr,
        path: PathBuf,
        dest: &Path,
        journal: Journal,
    ) -> TempFile {
        TempFile {
            file,
            dir: Arc::new(dir),
            tmp_name,
            name: name.to_owned(),
            path,
            dest: dest.to_path_buf(),
            journal: Some(journal),
            split: None,
            direct: None,
            direct_refused: AtomicBool::new(false),
        }
    }

    /// Notes in the journal that `part` is written, with its hash.
    pub fn record(&self, part: usize, hash: &str) -> Result<(), Error> {
        if let Some(j) = &self.journal {
            j.append(&format!("done {part} {hash}\n")).map_err(|e| Error::io(&self.path, "writing journal", e))?;
        }
        Ok(())
    }

    /// Whether this file keeps a journal (and so survives an interruption).
    pub fn resumable(&self) -> bool {
        self.journal.is_some()
    }

    /// Reads `len` bytes at `offset` (to check a resumed part).
    pub fn read_at(&self, buf: &mut [u8], offset: u64) -> Result<(), Error> {
        self.file.read_exact_at(buf, offset).map_err(|e| Error::io(&self.path, "reading back", e))
    }

    /// A second handle on the same open file, for reading back what was
    /// written (hashing) independently of this one's commit or discard.
    pub fn reader(&self) -> Result<File, Error> {
        self.file.try_clone().map_err(|e| Error::io(&self.path, "opening for reading back", e))
    }

    pub(super) fn reserve(&self, size: u64) -> Result<(), Error> {
        match rustix::fs::fallocate(&self.file, rustix::fs::FallocateFlags::empty(), 0, size) {
            Ok(()) => Ok(()),
            Err(Errno::OPNOTSUPP | Errno::NOSYS) => {
                self.file.set_len(size).map_err(|e| Error::io(&self.path, "sizing temporary file", e))
            }
            Err(e) => Err(Error::io(&self.path, "reserving space", e.into())),
        }
    }

    /// Opens the file a second time with `O_DIRECT`, so that [`write_at`]
    /// writes whole aligned blocks from memory to the disk without copying
    /// them into the page cache. Returns whether it could; where the
    /// filesystem refuses (tmpfs before Linux 6.6, some FUSE filesystems),
    /// every write stays buffered.
    ///
    /// [`write_at`]: TempFile::write_at
    pub fn open_direct(&mut self) -> bool {
        let flags = OFlags::RDWR | OFlags::DIRECT | OFlags::NOFOLLOW | OFlags::CLOEXEC;
        let fd = match rustix::fs::openat(&self.dir, &self.tmp_name, flags, Mode::empty()) {
            Ok(fd) => fd,
            Err(e) => {
                tracing::debug!(path = %self.path.display(), error = %e, "no direct writes; writing through the page cache");
                return false;
            }
        };
        // The name must still be this file (it is ours and locked, but a
        // directory others write in can have anything renamed over it).
        let same = |a: &rustix::fs::Stat, b: &rustix::fs::Stat| a.st_dev == b.st_dev && a.st_ino == b.st_ino;
        match (rustix::fs::fstat(&fd), rustix::fs::fstat(&self.file)) {
            (Ok(a), Ok(b)) if same(&a, &b) => {
                tracing::debug!(path = %self.path.display(), "writing past the page cache (O_DIRECT)");
                self.direct = Some(File::from(fd));
                true
            }
            _ => false,
        }
    }

    /// Writes `buf` at `offset`. With a direct handle ([`open_direct`]), the
    /// whole blocks of a buffer that starts on a block boundary, in memory
    /// and in the file, go to the disk directly; a tail shorter than a block,
    /// or a buffer that does not start on a boundary, goes through the page
    /// cache (the kernel keeps the two views of the file coherent).
    ///
    /// [`open_direct`]: TempFile::open_direct
    pub fn write_at(&self, buf: &[u8], offset: u64) -> Result<(), Error> {
        let mut done = 0;
        if let Some(direct) = &self.direct
            && !self.direct_refused.load(Ordering::Relaxed)
            && offset.is_multiple_of(ALIGN as u64)
            && (buf.as_ptr() as usize).is_multiple_of(ALIGN)
            && buf.len() >= ALIGN
        {
            let n = buf.len() / ALIGN * ALIGN;
            match direct.write_all_at(&buf[..n], offset) {
                Ok(()) => done = n,
                Err(e) if e.raw_os_error() == Some(libc::EINVAL) => {
                    tracing::debug!(path = %self.path.display(), "direct writes refused; writing through the page cache");
                    self.direct_refused.store(true, Ordering::Relaxed);
                }
                Err(e) => return Err(Error::io(&self.path, "writing", e)),
            }
        }
        write_through_cache(&self.file, &buf[done..], offset + done as u64)
            .map_err(|e| Error::io(&self.path, "writing", e))
    }

    /// Whether whole blocks are written past the page cache.
    pub fn is_direct(&self) -> bool {
        self.direct.is_some() && !self.direct_refused.load(Ordering::Relaxed)
    }

    /// A second handle on the direct view of the file, if it has one, for
    /// reading back what was written without filling the page cache.
    pub fn direct_reader(&self) -> Option<File> {
        if self.direct_refused.load(Ordering::Relaxed) {
            return None;
        }
        self.direct.as_ref().and_then(|f| f.try_clone().ok())
    }

    /// Starts writing `range` back to the disk without waiting for it, so that
    /// a later `syncfs` or `fsync` waits only for what was written since. A
    /// hint: where the filesystem cannot, nothing happens.
    pub fn start_writeback(&self, range: std::ops::Range<u64>) {
        let (Ok(offset), Ok(len)) = (i64::try_from(range.start), i64::try_from(range.end - range.start)) else {
            return;
        };
        // SAFETY: sync_file_range only reads its integer arguments; the fd is
        // open for as long as `self` lives. No safe wrapper exists in rustix.
        #[allow(unsafe_code)]
        let r = unsafe { libc::sync_file_range(self.file.as_raw_fd(), offset, len, libc::SYNC_FILE_RANGE_WRITE) };
        if r != 0 {
            tracing::debug!(path = %self.path.display(), error = %std::io::Error::last_os_error(), "sync_file_range");
        }
    }

    /// Sets the mtime and renames the file to its destination. With `fsync`, the
    /// data is flushed to disk before the rename and the directory entry after it.
    /// The journal, now of no use, is handed back to be removed with
    /// [`SpentJournal::remove`] off the I/O path.
    ///
    /// When it cannot be moved into place (a directory at the destination, a
    /// file there that may not be replaced), the temporary file is removed,
    /// unless a later run can resume from it (it has a journal) or it is not
    /// this run's any more.
    pub fn commit(mut self, mtime: Option<SystemTime>, fsync: bool) -> Result<Option<SpentJournal>, Error> {
        if let Err(e) = self.move_into_place(mtime, fsync) {
            if self.journal.is_none() {
                self.discard();
            }
            return Err(e);
        }
        // A split object's other pieces' journals are spent too (this one's
        // goes with the commit's, below).
        if let Some(split) = &self.split {
            for (i, (name, _)) in split.pieces.iter().enumerate() {
                if i != split.index {
                    let _ = rustix::fs::unlinkat(&self.dir, name, AtFlags::empty());
                }
            }
            self.remove_other_splits();
        }
        if fsync {
            rustix::fs::fsync(&self.dir).map_err(|e| Error::io(&self.dest, "flushing directory to disk", e.into()))?;
        }
        Ok(self.journal.take().map(|journal| {
            journal.disarm();
            SpentJournal { journal, dir: self.dir.clone() }
        }))
    }

    fn move_into_place(&mut self, mtime: Option<SystemTime>, fsync: bool) -> Result<(), Error> {
        if let Some(t) = mtime {
            self.file.set_modified(t).map_err(|e| Error::io(&self.path, "setting modification time", e))?;
        }
        if fsync {
            self.file.sync_all().map_err(|e| Error::io(&self.path, "flushing to disk", e))?;
        }
        self.check_identity()?;
        rustix::fs::renameat(&self.dir, &self.tmp_name, &self.dir, &self.name)
            .map_err(|e| Error::io(&self.dest, "moving into place", e.into()))
    }

    /// Whether the temporary name still names the file this run wrote and
    /// verified. Another process (or a key named like a temporary file) may have
    /// put a different file there; renaming that into place would commit bytes
    /// nobody checked.
    pub(super) fn check_identity(&self) -> Result<(), Error> {
        match super::open::still_named(&self.dir, &self.tmp_name, &self.file) {
            Ok(true) => Ok(()),
            Ok(false) | Err(Errno::NOENT) => Err(Refusal::TempFileReplaced { path: self.path.clone() }.into()),
            Err(e) => Err(Error::io(&self.path, "checking", e.into())),
        }
    }

    /// Removes the temporary file (best effort: the error that led here matters more).
    /// A split object's file is kept, with its journal: other shards write into it.
    pub fn discard(self) {
        if self.split.is_some() || self.check_identity().is_err() {
            // Not ours any more: leave whatever is there now alone.
            return;
        }
        let _ = rustix::fs::unlinkat(&self.dir, &self.tmp_name, AtFlags::empty());
        if let Some(j) = &self.journal {
            j.disarm();
            let _ = rustix::fs::unlinkat(&self.dir, &j.name, AtFlags::empty());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::localfs::IoBuf;
    use crate::localfs::names::is_temp_name;
    use crate::localfs::split::{SPLIT_SETTLE, remove_unneeded_splits};

    #[test]
    fn a_fifo_where_a_resumable_file_or_its_journal_goes_is_refused_at_once() {
        for planted in [".model.bin.s3load-journal", ".model.bin.s3load-resume"] {
            let d = tempfile::tempdir().unwrap();
            let mode = rustix::fs::Mode::from_raw_mode(0o644);
            rustix::fs::mknodat(rustix::fs::CWD, d.path().join(planted), rustix::fs::FileType::Fifo, mode, 0).unwrap();
            let (root, dest) = (d.path().to_path_buf(), d.path().join("model.bin"));
            let (tx, rx) = std::sync::mpsc::channel();
            std::thread::spawn(move || {
                let r = TempFile::open_resumable(&root, &dest, 8, "h", Duration::ZERO).map(|_| ());
                tx.send(r.map_err(|e| e.to_string())).unwrap();
            });
            let err = rx.recv_timeout(Duration::from_secs(10)).expect("no hang").unwrap_err();
            assert!(err.contains(planted) && err.contains("a FIFO"), "{planted}: {err}");
            assert!(d.path().join(planted).exists(), "the planted FIFO is left for its owner to see");
            let left: Vec<_> = std::fs::read_dir(d.path()).unwrap().map(|e| e.unwrap().file_name()).collect();
            assert_eq!(left, [planted], "nothing made for the download is left beside it");
        }
    }

    #[test]
    fn writes_through_the_page_cache_in_pieces_land_whole_at_any_offset_and_length() {
        let f = tempfile::tempfile().unwrap();
        let data: Vec<u8> = (0..300_000u32).map(|i| (i % 251) as u8).collect();
        let mut expected = vec![0u8; 700_000];
        let c = CACHE_WRITE as u64;
        for (offset, len) in [(0, 1), (1, c as usize), (c - 1, 2), (c, 3 * c as usize), (5000, 300_000), (400_000, 0)] {
            write_through_cache(&f, &data[..len], offset).unwrap();
            expected[offset as usize..offset as usize + len].copy_from_slice(&data[..len]);
        }
        let mut got = vec![0u8; 700_000];
        let n = std::os::unix::fs::FileExt::read_at(&f, &mut got, 0).unwrap();
        got.truncate(n);
        expected.truncate(n);
        assert_eq!(n, 305_000, "the file ends where the last write did");
        assert!(got == expected, "every byte where it was written");
    }

    #[test]
    fn split_files_of_paths_this_run_has_no_piece_of_are_removed_unless_held() {
        let d = tempfile::tempdir().unwrap();
        let root = d.path();
        std::fs::create_dir_all(root.join("sub")).unwrap();
        for n in [
            ".big.bin.aaaaaaaaaaaaaaaa.s3load-split",
            ".big.bin.aaaaaaaaaaaaaaaa.0.s3load-piece",
            ".big.bin.aaaaaaaaaaaaaaaa.1.s3load-piece",
            "sub/.w.bin.bbbbbbbbbbbbbbbb.s3load-split",
            "sub/.w.bin.bbbbbbbbbbbbbbbb.2.s3load-piece",
            ".held.bin.cccccccccccccccc.s3load-split",
            ".thesis.tex.final.s3load-split",
            ".big.bin.1234.s3load-tmp",
            "big.bin",
        ] {
            std::fs::write(root.join(n), b"x").unwrap();
        }
        let held = File::open(root.join(".held.bin.cccccccccccccccc.s3load-split")).unwrap();
        assert!(try_lock(&held));
        let pieces: std::collections::HashSet<String> = ["sub/w.bin".to_string()].into();
        assert_eq!(remove_unneeded_splits(root, &pieces), 0, "files a moment old may be another run's, not locked yet");
        std::thread::sleep(SPLIT_SETTLE);
        assert_eq!(remove_unneeded_splits(root, &pieces), 3);
        let left = |n: &str| root.join(n).exists();
        assert!(!left(".big.bin.aaaaaaaaaaaaaaaa.s3load-split") && !left(".big.bin.aaaaaaaaaaaaaaaa.0.s3load-piece"));
        let ours =
            left("sub/.w.bin.bbbbbbbbbbbbbbbb.s3load-split") && left("sub/.w.bin.bbbbbbbbbbbbbbbb.2.s3load-piece");
        assert!(ours, "this run's piece");
        assert!(left(".held.bin.cccccccccccccccc.s3load-split"), "a file another run holds");
        assert!(left(".thesis.tex.final.s3load-split"), "a name that only ends as s3load's do");
        assert!(left(".big.bin.1234.s3load-tmp") && left("big.bin"), "not split files");
    }

    #[test]
    fn temp_names_are_recognised_and_short() {
        let long = "x".repeat(255);
        let name = temp_name(OsStr::new(&long));
        let name = name.to_str().unwrap();
        assert!(name.len() <= 255);
        assert!(is_temp_name(name));
        assert!(!is_temp_name("model.safetensors"));
    }

    /// Whether `dir` is on a disk filesystem, which takes `O_DIRECT`.
    fn takes_direct(dir: &Path) -> bool {
        const EXT4: u64 = 0xEF53;
        const XFS: u64 = 0x5846_5342;
        const BTRFS: u64 = 0x9123_683E;
        rustix::fs::statfs(dir).is_ok_and(|s| [EXT4, XFS, BTRFS].contains(&(s.f_type as u64)))
    }

    #[test]
    fn direct_writes_put_whole_blocks_past_the_cache_and_the_rest_through_it() {
        let dir = tempfile::tempdir().unwrap();
        let dest = dir.path().join("big.bin");
        let block = |n: usize, seed: u8| -> Vec<u8> { (0..n).map(|i| (i as u8).wrapping_mul(31) ^ seed).collect() };
        // Two whole blocks and 100 bytes at 0; 5,000 bytes at an offset off
        // the block grid; a block and 100 bytes at 16 KiB; a buffer starting
        // off the grid in memory at 32 KiB.
        let pieces = [(0u64, block(2 * ALIGN + 100, 1)), (8292, block(5000, 2)), (16384, block(ALIGN + 100, 3))];
        let size = 32768 + ALIGN + 7;
        let mut t = TempFile::create(dir.path(), &dest, size as u64).unwrap();
        // Disks take O_DIRECT; others may too (tmpfs on recent kernels).
        assert!(t.open_direct() || !takes_direct(dir.path()), "O_DIRECT where the filesystem takes it");
        let mut expected = vec![0u8; size];
        for (at, bytes) in &pieces {
            let mut buf = IoBuf::new(bytes.len());
            assert_eq!(buf.push(bytes, usize::MAX), bytes.len());
            t.write_at(buf.as_ref(), *at).unwrap();
            expected[*at as usize..*at as usize + bytes.len()].copy_from_slice(bytes);
        }
        let unaligned = block(ALIGN + 8, 4);
        t.write_at(&unaligned[1..ALIGN + 8], 32768).unwrap();
        expected[32768..].copy_from_slice(&unaligned[1..ALIGN + 8]);
        t.commit(None, false).unwrap();
        // (What stays out of the page cache: tests/it/localfs.rs.)
        assert!(std::fs::read(&dest).unwrap() == expected, "the bytes of every write, direct or not");
    }

    #[test]
    fn nothing_at_the_final_path_until_commit() {
        let dir = tempfile::tempdir().unwrap();
        let dest = dir.path().join("a/b/file.bin");
        let t = TempFile::create(dir.path(), &dest, 4).unwrap();
        t.write_at(b"abcd", 0).unwrap();
        assert!(!dest.exists());
        assert!(t.commit(None, true).unwrap().is_none(), "no journal for a file that is not resumable");
        assert_eq!(std::fs::read(&dest).unwrap(), b"abcd");
        assert_eq!(std::fs::read_dir(dest.parent().unwrap()).unwrap().count(), 1);
    }

    #[test]
    fn a_file_that_cannot_be_moved_into_place_is_removed_not_left_beside_it() {
        let dir = tempfile::tempdir().unwrap();
        let dest = dir.path().join("f.bin");
        std::fs::create_dir_all(dest.join("sub")).unwrap();
        let t = TempFile::create(dir.path(), &dest, 4).unwrap();
        t.write_at(b"abcd", 0).unwrap();
        let e = t.commit(None, false).unwrap_err();
        assert!(e.to_string().contains("moving into place"), "{e}");
        let names: Vec<_> = std::fs::read_dir(dir.path()).unwrap().map(|e| e.unwrap().file_name()).collect();
        assert_eq!(names, ["f.bin"], "only the directory that was there");
    }

    // Another process put its own file at this run's temporary name: the
    // failed commit removes nothing that is not this run's.
    #[test]
    fn a_failed_commit_leaves_a_file_another_process_put_at_the_temporary_name() {
        let dir = tempfile::tempdir().unwrap();
        let dest = dir.path().join("f.bin");
        let t = TempFile::create(dir.path(), &dest, 4).unwrap();
        t.write_at(b"ours", 0).unwrap();
        let other = dir.path().join("other");
        std::fs::write(&other, b"evil").unwrap();
        std::fs::rename(&other, &t.path).unwrap();
        let named = t.path.clone();
        let err = t.commit(None, false).unwrap_err().to_string();
        assert!(err.contains("replaced or removed"), "{err}");
        assert!(!dest.exists(), "nothing committed");
        assert_eq!(std::fs::read(&named).unwrap(), b"evil", "the other process's file is left alone");
    }

    #[test]
    fn a_temporary_file_replaced_under_its_name_is_never_committed() {
        let dir = tempfile::tempdir().unwrap();
        let dest = dir.path().join("w.bin");
        let (t, _) = TempFile::open_resumable(dir.path(), &dest, 4, "header", Duration::ZERO).unwrap();
        t.write_at(b"ours", 0).unwrap();
        // Another writer puts its own file at the temporary name.
        let other = dir.path().join(".w.bin.other");
        std::fs::write(&other, b"evil").unwrap();
        std::fs::rename(&other, dir.path().join(".w.bin.s3load-resume")).unwrap();
        let err = t.commit(None, false).unwrap_err().to_string();
        assert!(err.contains("replaced or removed"), "{err}");
        assert!(!dest.exists(), "nothing committed");
    }

    #[test]
    fn a_committed_resumable_file_hands_back_its_journal_for_removal() {
        let d = tempfile::tempdir().unwrap();
        let dest = d.path().join("r.bin");
        let (t, _) = TempFile::open_resumable(d.path(), &dest, 4, "h", Duration::ZERO).unwrap();
        t.write_at(b"abcd", 0).unwrap();
        t.record(0, "").unwrap();
        let journal = t.commit(None, false).unwrap().expect("a resumable file has a journal");
        let names = || {
            let mut n: Vec<String> =
                std::fs::read_dir(d.path()).unwrap().map(|e| e.unwrap().file_name().into_string().unwrap()).collect();
            n.sort();
            n
        };
        assert_eq!(names(), vec![".r.bin.s3load-journal", "r.bin"]);
        journal.remove();
        assert_eq!(names(), vec!["r.bin"]);
        assert_eq!(std::fs::read(&dest).unwrap(), b"abcd");
    }

    #[test]
    fn a_fresh_journal_holds_its_lines_until_its_time_is_up_or_it_is_kept() {
        let d = tempfile::tempdir().unwrap();
        let text = |name: &str| std::fs::read_to_string(d.path().join(name)).unwrap();
        // Committed within the hold: the journal never had a byte.
        let dest = d.path().join("fast.bin");
        let (t, _) = TempFile::open_resumable(d.path(), &dest, 4, "h", Duration::from_secs(60)).unwrap();
        t.write_at(b"abcd", 0).unwrap();
        t.record(0, "x").unwrap();
        assert_eq!(text(".fast.bin.s3load-journal"), "");
        let spent = t.commit(None, false).unwrap().unwrap();
        assert_eq!(text(".fast.bin.s3load-journal"), "", "nothing written at commit");
        spent.remove();
        // Kept (dropped without commit): the held lines are written.
        let dest = d.path().join("kept.bin");
        let (t, _) = TempFile::open_resumable(d.path(), &dest, 8, "h", Duration::from_secs(60)).unwrap();
        t.record(1, "y").unwrap();
        drop(t);
        assert_eq!(text(".kept.bin.s3load-journal"), format!("{JOURNAL_MAGIC}\nh\ndone 1 y\n"));
        // Once the hold is over, each line is written as it comes.
        let dest = d.path().join("slow.bin");
        let (t, _) = TempFile::open_resumable(d.path(), &dest, 8, "h", Duration::from_millis(50)).unwrap();
        t.record(0, "a").unwrap();
        assert_eq!(text(".slow.bin.s3load-journal"), "");
        std::thread::sleep(Duration::from_millis(60));
        t.record(1, "b").unwrap();
        assert_eq!(text(".slow.bin.s3load-journal"), format!("{JOURNAL_MAGIC}\nh\ndone 0 a\ndone 1 b\n"));
        t.record(2, "c").unwrap();
        assert!(text(".slow.bin.s3load-journal").ends_with("done 2 c\n"));
        // Discarded: nothing left, held or written.
        let dest = d.path().join("gone.bin");
        let (t, _) = TempFile::open_resumable(d.path(), &dest, 8, "h", Duration::from_secs(60)).unwrap();
        t.record(0, "z").unwrap();
        t.discard();
        assert!(!d.path().join(".gone.bin.s3load-journal").exists());
    }

    #[test]
    fn a_resumable_file_that_cannot_be_prepared_leaves_no_journal() {
        let dir = tempfile::tempdir().unwrap();
        let dest = dir.path().join("w.bin");
        // More than any filesystem can reserve: fallocate fails (EFBIG/ENOSPC).
        let r = TempFile::open_resumable(dir.path(), &dest, u64::MAX / 2, "header", Duration::ZERO);
        assert!(r.is_err());
        let left: Vec<_> = std::fs::read_dir(dir.path()).unwrap().map(|e| e.unwrap().file_name()).collect();
        assert!(left.is_empty(), "{left:?}");
    }

    #[test]
    fn symlinked_directories_below_the_root_are_refused_and_final_symlinks_replaced() {
        let dir = tempfile::tempdir().unwrap();
        let outside = tempfile::tempdir().unwrap();
        let root = dir.path().join("dest");
        std::fs::create_dir_all(&root).unwrap();
        std::os::unix::fs::symlink(outside.path(), root.join("sub")).unwrap();
        let err = TempFile::create(&root, &root.join("sub/x.bin"), 4).unwrap_err().to_string();
        assert!(err.contains("never writes through symlinks"), "{err}");
        assert_eq!(std::fs::read_dir(outside.path()).unwrap().count(), 0, "nothing written outside");

        let target = outside.path().join("victim");
        std::fs::write(&target, b"keep").unwrap();
        std::os::unix::fs::symlink(&target, root.join("link.bin")).unwrap();
        let t = TempFile::create(&root, &root.join("link.bin"), 3).unwrap();
        t.write_at(b"new", 0).unwrap();
        assert!(t.commit(None, false).unwrap().is_none());
        assert_eq!(std::fs::read(&target).unwrap(), b"keep", "the symlink's target is untouched");
        assert!(!std::fs::symlink_metadata(root.join("link.bin")).unwrap().file_type().is_symlink());
    }
}

#[cfg(test)]
mod orphan_tests {
    use super::*;
    use crate::localfs::orphans::remove_orphans;

    #[test]
    fn a_fresh_unlocked_temporary_file_is_left_to_its_creator_when_others_write_here() {
        let d = tempfile::tempdir().unwrap();
        // Created by another shard a moment ago, not locked yet.
        let name = d.path().join(".model.bin.1234.s3load-tmp");
        std::fs::write(&name, b"x").unwrap();
        assert_eq!(remove_orphans(d.path(), true, Duration::from_secs(60)), 0);
        assert!(name.exists());
        // Old enough to be a leftover of a killed run.
        let old = SystemTime::now() - Duration::from_secs(120);
        std::fs::File::options().write(true).open(&name).unwrap().set_modified(old).unwrap();
        assert_eq!(remove_orphans(d.path(), true, Duration::from_secs(60)), 1);
        assert!(!name.exists());
    }

    #[test]
    fn the_cleanup_removes_nothing_through_a_link_below_the_root() {
        let d = tempfile::tempdir().unwrap();
        let (root, outside) = (d.path().join("dest"), d.path().join("outside"));
        std::fs::create_dir_all(root.join("real")).unwrap();
        std::fs::create_dir_all(&outside).unwrap();
        let victim = outside.join(".x.bin.0123456789abcdef.s3load-tmp");
        std::fs::write(&victim, b"not ours to remove").unwrap();
        std::os::unix::fs::symlink(&outside, root.join("sub")).unwrap();
        let ours = root.join("real/.y.bin.0123456789abcdef.s3load-tmp");
        std::fs::write(&ours, b"left by a killed run").unwrap();
        assert_eq!(remove_orphans(&root, false, Duration::ZERO), 1);
        assert!(victim.exists() && !ours.exists());
    }

    #[test]
    fn a_fifo_where_a_journal_is_locked_through_does_not_hang_the_cleanup() {
        let d = tempfile::tempdir().unwrap();
        // A journal whose resumable file was replaced by a FIFO: opening the
        // FIFO to lock it would wait for a writer for ever.
        let journal = d.path().join(".model.bin.1234.s3load-journal");
        std::fs::write(&journal, b"x").unwrap();
        let fifo = d.path().join(".model.bin.1234.s3load-resume");
        let mode = rustix::fs::Mode::from_raw_mode(0o644);
        rustix::fs::mknodat(rustix::fs::CWD, &fifo, rustix::fs::FileType::Fifo, mode, 0).unwrap();
        let root = d.path().to_path_buf();
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || tx.send(remove_orphans(&root, false, Duration::ZERO)).unwrap());
        let removed = rx.recv_timeout(Duration::from_secs(10)).expect("the cleanup ends");
        assert_eq!(removed, 1, "the journal is removed; the FIFO is not a file and stays");
        assert!(fifo.exists());
    }
}
