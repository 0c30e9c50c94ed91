//! Opening directories and files, outside the temporary files: the
//! destination's root and the directories below it, s3load's own files in
//! `DEST/.s3load/` and in `--atomic`'s versions directory, leftovers of
//! killed runs, the files an upload reads and the files a model check reads.
//!
//! Every file is opened without blocking: a FIFO put in a file's place must
//! not hang the run. What is opened relative to a directory's handle
//! ([`regular_in`], [`own_file`], [`subdir`], [`state_dir`]) is never
//! opened through a link: a link planted there is refused by name. [`regular`]
//! refuses a link as the last component only; the user's own paths (the
//! destination's root, [`existing_dir`], [`root_dir`]; an upload's source
//! files, [`source_file`]) may be links.

use std::ffi::OsStr;
use std::fs::File;
use std::os::fd::{AsFd, OwnedFd};
use std::path::Path;

use rustix::fs::{FileType, Mode, OFlags};
use rustix::io::Errno;

use crate::error::Error;
use crate::refusal::{Place, Refusal};

/// The directory below the destination's root that holds s3load's own files
/// (the sync record, its locks, a sharded run's listing).
pub const STATE_DIR: &str = ".s3load";

const DIR_FLAGS: OFlags = OFlags::DIRECTORY.union(OFlags::RDONLY).union(OFlags::CLOEXEC);

/// Why a name could not be opened as a regular file.
#[derive(Debug)]
pub enum OpenError {
    /// A symbolic link is in its place (links are never followed).
    Link,
    /// Something other than a regular file: a directory, a FIFO, a device.
    NotAFile,
    /// What the system answered.
    Io(std::io::Error),
}

impl OpenError {
    /// The error to report for `path`, one of s3load's own files: a link or
    /// anything but a regular file there was planted (refused as found in
    /// `place`); otherwise what the system said while `doing`.
    pub fn into_error(self, path: &Path, place: Place, doing: &'static str) -> Error {
        match self {
            OpenError::Link | OpenError::NotAFile => Refusal::Planted { path: path.to_path_buf(), place }.into(),
            OpenError::Io(e) => Error::io(path, doing, e),
        }
    }
}

/// Opens `name` in `dir` as a regular file with `flags` (creating it with
/// mode 0644 under `O_CREAT`), never through a link and never blocking.
pub fn regular_in(dir: impl AsFd, name: impl AsRef<OsStr>, flags: OFlags) -> Result<File, OpenError> {
    let flags = flags | OFlags::NOFOLLOW | OFlags::NONBLOCK | OFlags::CLOEXEC;
    let fd = match rustix::fs::openat(dir, name.as_ref(), flags, Mode::from_raw_mode(0o644)) {
        Ok(fd) => fd,
        Err(Errno::LOOP) => return Err(OpenError::Link),
        // A directory opened for writing, a FIFO opened for writing with no
        // reader.
        Err(Errno::ISDIR | Errno::NXIO) => return Err(OpenError::NotAFile),
        Err(e) => return Err(OpenError::Io(e.into())),
    };
    match rustix::fs::fstat(&fd) {
        Ok(st) if FileType::from_raw_mode(st.st_mode) == FileType::RegularFile => Ok(File::from(fd)),
        Ok(_) => Err(OpenError::NotAFile),
        Err(e) => Err(OpenError::Io(e.into())),
    }
}

/// [`regular_in`] for a path: its parents are followed, its last component
/// is not. For s3load's leftovers found by a walk of the destination.
pub fn regular(path: &Path, flags: OFlags) -> Result<File, OpenError> {
    regular_in(rustix::fs::CWD, path, flags)
}

/// [`regular_in`] for one of s3load's own files in `DEST/.s3load/`
/// (`dir_shown` is that directory's path, for messages): anything but a
/// regular file there was planted, and is refused.
pub fn own_file(dir: &OwnedFd, dir_shown: &Path, name: &str, flags: OFlags) -> Result<File, Error> {
    let path = dir_shown.join(name);
    regular_in(dir, name, flags).map_err(|e| e.into_error(&path, Place::RecordDir, "opening"))
}

/// Opens the directory `path` as it is, without creating it. The user named
/// it, so it may be a link.
pub fn existing_dir(path: &Path) -> std::io::Result<OwnedFd> {
    Ok(rustix::fs::open(or_dot(path), DIR_FLAGS, Mode::empty())?)
}

/// An empty path (a relative destination's parent) means the current
/// directory, and is shown as `.`.
pub fn or_dot(path: &Path) -> &Path {
    if path.as_os_str().is_empty() { Path::new(".") } else { path }
}

/// Creates the directory `root` with its parents, as needed, and opens it.
/// The user named it, so it may be a link.
pub fn root_dir(root: &Path) -> Result<OwnedFd, Error> {
    let root = or_dot(root);
    std::fs::create_dir_all(root).map_err(|e| Error::io(root, "creating directory", e))?;
    existing_dir(root).map_err(|e| Error::io(root, "opening", e))
}

/// Opens the directory `name` in `dir` if it is there, never through a
/// link, creating nothing.
pub fn existing_subdir(dir: &OwnedFd, name: impl AsRef<OsStr>) -> rustix::io::Result<OwnedFd> {
    rustix::fs::openat(dir, name.as_ref(), DIR_FLAGS | OFlags::NOFOLLOW, Mode::empty())
}

/// Creates (if missing) and opens the directory `name` in `dir`, never
/// through a link. `shown` is its path, for messages; a link or a file in its
/// place is refused as planted in `place`.
pub fn subdir(dir: &OwnedFd, shown: &Path, name: &OsStr, place: Place) -> Result<OwnedFd, Error> {
    subdir_with_mode(dir, shown, name, place, 0o777)
}

fn subdir_with_mode(dir: &OwnedFd, shown: &Path, name: &OsStr, place: Place, mode: u32) -> Result<OwnedFd, Error> {
    match rustix::fs::mkdirat(dir, name, Mode::from_raw_mode(mode)) {
        Ok(()) | Err(Errno::EXIST) => {}
        Err(e) => return Err(Error::io(shown, "creating directory", e.into())),
    }
    match rustix::fs::openat(dir, name, DIR_FLAGS | OFlags::NOFOLLOW, Mode::empty()) {
        Ok(fd) => Ok(fd),
        Err(Errno::LOOP | Errno::NOTDIR) => Err(Refusal::Planted { path: shown.to_path_buf(), place }.into()),
        Err(e) => Err(Error::io(shown, "opening directory", e.into())),
    }
}

/// Creates (as needed) and opens `root/.s3load`, where the sync record, its
/// locks and a sharded run's listing are kept.
pub fn state_dir(root: &Path) -> Result<OwnedFd, Error> {
    let root_fd = root_dir(root)?;
    subdir_with_mode(&root_fd, &root.join(STATE_DIR), OsStr::new(STATE_DIR), Place::RecordDir, 0o755)
}

/// Opens `root/.s3load` if it is there (never through a link), creating
/// nothing: for a run that must not write (`--dry-run`), or to look at
/// another run's lock.
pub fn existing_state_dir(root: &Path) -> Option<OwnedFd> {
    existing_subdir(&existing_dir(root).ok()?, STATE_DIR).ok()
}

/// Opens a file an upload reads, read-only. It is opened without blocking,
/// so that a FIFO put in a walked file's place cannot hang the run; the
/// caller checks that what it opened is what the walk saw.
pub fn source_file(path: &Path) -> Result<File, Error> {
    use std::os::unix::fs::OpenOptionsExt;
    std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NONBLOCK)
        .open(path)
        .map_err(|e| Error::io(path, "opening", e))
}

/// Removes `name` in `dir` if it is still `file` (best effort), checked just
/// before: not a file another process has put at the name since `file` was
/// opened (one swapped in between the check and the removal is not excluded).
pub fn remove_if_still(dir: &OwnedFd, name: &OsStr, file: &File) {
    if still_named(dir, name, file) == Ok(true) {
        let _ = rustix::fs::unlinkat(dir, name, rustix::fs::AtFlags::empty());
    }
}

/// Whether `name` in `dir` (not followed) is `file` (device and inode).
pub fn still_named(dir: &OwnedFd, name: &OsStr, file: &File) -> rustix::io::Result<bool> {
    let ours = rustix::fs::fstat(file)?;
    let named = rustix::fs::statat(dir, name, rustix::fs::AtFlags::SYMLINK_NOFOLLOW)?;
    Ok(named.st_dev == ours.st_dev && named.st_ino == ours.st_ino)
}

/// What a path that is neither a regular file nor a directory is, in words.
pub fn special_kind(m: &std::fs::Metadata) -> Option<&'static str> {
    use std::os::unix::fs::FileTypeExt;
    let t = m.file_type();
    Some(if t.is_fifo() {
        "a named pipe (FIFO)"
    } else if t.is_socket() {
        "a socket"
    } else if t.is_block_device() {
        "a block device"
    } else if t.is_char_device() {
        "a character device"
    } else {
        return None;
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    // Another process may put its own file at the name between this one's
    // open and its giving up: that file stays; this process's own goes.
    #[test]
    fn only_the_file_this_process_opened_is_removed_by_its_name() {
        let d = tempfile::tempdir().unwrap();
        let dir = existing_dir(d.path()).unwrap();
        let name = OsStr::new(".w.bin.s3load-resume");
        std::fs::write(d.path().join(name), b"").unwrap();
        let ours = File::open(d.path().join(name)).unwrap();
        std::fs::write(d.path().join("theirs"), b"another run's").unwrap();
        std::fs::rename(d.path().join("theirs"), d.path().join(name)).unwrap();
        remove_if_still(&dir, name, &ours);
        assert_eq!(std::fs::read(d.path().join(name)).unwrap(), b"another run's");
        let theirs = File::open(d.path().join(name)).unwrap();
        remove_if_still(&dir, name, &theirs);
        assert!(!d.path().join(name).exists());
    }

    #[test]
    fn a_link_a_directory_and_a_fifo_are_not_opened_as_files() {
        let d = tempfile::tempdir().unwrap();
        std::fs::write(d.path().join("file"), b"x").unwrap();
        std::os::unix::fs::symlink(d.path().join("file"), d.path().join("link")).unwrap();
        std::fs::create_dir(d.path().join("dir")).unwrap();
        rustix::fs::mknodat(rustix::fs::CWD, d.path().join("fifo"), FileType::Fifo, Mode::from_raw_mode(0o644), 0)
            .unwrap();
        let dir = existing_dir(d.path()).unwrap();
        assert!(regular_in(&dir, "file", OFlags::RDONLY).is_ok());
        assert!(matches!(regular_in(&dir, "link", OFlags::RDONLY), Err(OpenError::Link)));
        assert!(matches!(regular_in(&dir, "dir", OFlags::RDONLY), Err(OpenError::NotAFile)));
        assert!(matches!(regular_in(&dir, "dir", OFlags::WRONLY), Err(OpenError::NotAFile)));
        // Neither for reading (opened without blocking, then refused) nor
        // for writing (no reader: the system refuses it at once).
        assert!(matches!(regular_in(&dir, "fifo", OFlags::RDONLY), Err(OpenError::NotAFile)));
        assert!(matches!(regular_in(&dir, "fifo", OFlags::WRONLY), Err(OpenError::NotAFile)));
        assert!(
            matches!(regular_in(&dir, "missing", OFlags::RDONLY), Err(OpenError::Io(e)) if e.kind() == std::io::ErrorKind::NotFound)
        );
    }

    #[test]
    fn the_state_directory_is_never_opened_through_a_link() {
        let d = tempfile::tempdir().unwrap();
        let root = d.path().join("dest");
        assert!(existing_state_dir(&root).is_none(), "nothing created");
        assert!(!root.exists());
        state_dir(&root).unwrap();
        assert!(root.join(STATE_DIR).is_dir());
        assert!(existing_state_dir(&root).is_some());

        let other = d.path().join("other");
        std::fs::create_dir_all(other.join("elsewhere")).unwrap();
        std::os::unix::fs::symlink(other.join("elsewhere"), other.join(STATE_DIR)).unwrap();
        let err = state_dir(&other).unwrap_err();
        assert!(matches!(err, Error::Refused(Refusal::Planted { place: Place::RecordDir, .. })), "{err:?}");
        assert!(existing_state_dir(&other).is_none());
    }

    #[test]
    fn a_source_that_became_a_fifo_is_opened_without_waiting_for_a_writer() {
        let d = tempfile::tempdir().unwrap();
        let fifo = d.path().join("fifo");
        rustix::fs::mknodat(rustix::fs::CWD, &fifo, FileType::Fifo, Mode::from_raw_mode(0o644), 0).unwrap();
        let f = source_file(&fifo).unwrap();
        assert!(!f.metadata().unwrap().is_file(), "the caller sees it is not the walked file");
    }
}
