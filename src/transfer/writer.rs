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
//! The temporary file is preallocated (`fallocate`) to the object's size, so a
//! full disk shows up when the download starts rather than half-way through,
//! and large files are laid out contiguously. Filesystems without `fallocate`
//! get a sparse file instead.

use std::ffi::{OsStr, OsString};
use std::fs::File;
use std::os::fd::OwnedFd;
use std::os::unix::fs::FileExt;
use std::path::{Component, Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::SystemTime;

use rustix::fs::{AtFlags, Mode, OFlags};
use rustix::io::Errno;

use crate::error::Error;

const TEMP_SUFFIX: &str = ".s3load-tmp";
/// Part of the destination's name kept in the temporary name, so that the
/// temporary name stays under NAME_MAX (255) whatever the destination's length.
const NAME_KEEP: usize = 200;

static SEQ: AtomicU64 = AtomicU64::new(0);

/// Whether a file name is one of s3load's temporary files.
pub fn is_temp_name(name: &str) -> bool {
    name.starts_with('.') && name.ends_with(TEMP_SUFFIX)
}

fn temp_name(name: &OsStr) -> OsString {
    let name = name.to_string_lossy();
    let mut keep = name.len().min(NAME_KEEP);
    while !name.is_char_boundary(keep) {
        keep -= 1;
    }
    let unique = (u64::from(std::process::id()) << 32) ^ SEQ.fetch_add(1, Ordering::Relaxed);
    OsString::from(format!(".{}.{unique:x}{TEMP_SUFFIX}", &name[..keep]))
}

/// Opens (creating as needed) the directory that will hold `root/rel`, never
/// following a symlink below `root`. Returns its handle and the file's name.
fn open_parent<'a>(root: &Path, rel: &'a Path) -> Result<(OwnedFd, &'a OsStr), Error> {
    let mut comps = Vec::new();
    for c in rel.components() {
        match c {
            Component::Normal(n) => comps.push(n),
            _ => return Err(Error::Refused(format!("{}: not a plain relative path", rel.display()))),
        }
    }
    let Some((name, parents)) = comps.split_last() else {
        return Err(Error::Refused(format!("{}: no file name", rel.display())));
    };
    let root = if root.as_os_str().is_empty() { Path::new(".") } else { root };
    std::fs::create_dir_all(root).map_err(|e| Error::io(root, "creating directory", e))?;
    let dir_flags = OFlags::DIRECTORY | OFlags::RDONLY | OFlags::CLOEXEC;
    let mut dir = rustix::fs::open(root, dir_flags, Mode::empty()).map_err(|e| Error::io(root, "opening", e.into()))?;
    let mut shown = root.to_path_buf();
    for c in parents {
        shown.push(c);
        match rustix::fs::mkdirat(&dir, *c, Mode::from_raw_mode(0o777)) {
            Ok(()) | Err(Errno::EXIST) => {}
            Err(e) => return Err(Error::io(&shown, "creating directory", e.into())),
        }
        dir = match rustix::fs::openat(&dir, *c, dir_flags | OFlags::NOFOLLOW, Mode::empty()) {
            Ok(fd) => fd,
            Err(Errno::LOOP | Errno::NOTDIR) => {
                return Err(Error::Refused(format!(
                    "{}: is a symlink or a file where a directory is needed; s3load never writes through symlinks (remove it or choose another destination)",
                    shown.display()
                )));
            }
            Err(e) => return Err(Error::io(&shown, "opening directory", e.into())),
        };
    }
    Ok((dir, name))
}

/// An open temporary file for one destination.
#[derive(Debug)]
pub struct TempFile {
    file: File,
    /// The destination's directory, opened without following symlinks.
    dir: OwnedFd,
    tmp_name: OsString,
    name: OsString,
    /// Full paths, for messages.
    path: PathBuf,
    dest: PathBuf,
}

impl TempFile {
    /// Creates the directories from `root` down to `dest`'s parent and a
    /// temporary file of `size` bytes there. `dest` must lie below `root`.
    pub fn create(root: &Path, dest: &Path, size: u64) -> Result<TempFile, Error> {
        let rel = dest.strip_prefix(root).map_err(|_| {
            Error::Refused(format!("internal error: {} is not below {}", dest.display(), root.display()))
        })?;
        let (dir, name) = open_parent(root, rel)?;
        let tmp_name = temp_name(name);
        let path = dest.with_file_name(&tmp_name);
        let flags = OFlags::CREATE | OFlags::EXCL | OFlags::WRONLY | OFlags::NOFOLLOW | OFlags::CLOEXEC;
        let fd = rustix::fs::openat(&dir, &tmp_name, flags, Mode::from_raw_mode(0o644))
            .map_err(|e| Error::io(&path, "creating temporary file", e.into()))?;
        let tmp =
            TempFile { file: File::from(fd), dir, tmp_name, name: name.to_owned(), path, dest: dest.to_path_buf() };
        if size > 0
            && let Err(e) = tmp.reserve(size)
        {
            tmp.discard();
            return Err(e);
        }
        Ok(tmp)
    }

    fn reserve(&self, size: u64) -> Result<(), Error> {
        match rustix::fs::fallocate(&self.file, rustix::fs::FallocateFlags::empty(), 0, size) {
            Ok(()) => Ok(()),
            Err(Errno::OPNOTSUPP | Errno::NOSYS) => {
                self.file.set_len(size).map_err(|e| Error::io(&self.path, "sizing temporary file", e))
            }
            Err(e) => Err(Error::io(&self.path, "reserving space", e.into())),
        }
    }

    pub fn write_at(&self, buf: &[u8], offset: u64) -> Result<(), Error> {
        self.file.write_all_at(buf, offset).map_err(|e| Error::io(&self.path, "writing", e))
    }

    /// Sets the mtime and renames the file to its destination. With `fsync`, the
    /// data is flushed to disk before the rename and the directory entry after it.
    pub fn commit(self, mtime: Option<SystemTime>, fsync: bool) -> Result<(), Error> {
        if let Some(t) = mtime {
            self.file.set_modified(t).map_err(|e| Error::io(&self.path, "setting modification time", e))?;
        }
        if fsync {
            self.file.sync_all().map_err(|e| Error::io(&self.path, "flushing to disk", e))?;
        }
        rustix::fs::renameat(&self.dir, &self.tmp_name, &self.dir, &self.name)
            .map_err(|e| Error::io(&self.dest, "moving into place", e.into()))?;
        if fsync {
            rustix::fs::fsync(&self.dir).map_err(|e| Error::io(&self.dest, "flushing directory to disk", e.into()))?;
        }
        Ok(())
    }

    /// Removes the temporary file (best effort: the error that led here matters more).
    pub fn discard(self) {
        let _ = rustix::fs::unlinkat(&self.dir, &self.tmp_name, AtFlags::empty());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn temp_names_are_recognised_and_short() {
        let long = "x".repeat(255);
        let name = temp_name(OsStr::new(&long));
        let name = name.to_str().unwrap();
        assert!(name.len() <= 255);
        assert!(is_temp_name(name));
        assert!(!is_temp_name("model.safetensors"));
    }

    #[test]
    fn nothing_at_the_final_path_until_commit() {
        let dir = tempfile::tempdir().unwrap();
        let dest = dir.path().join("a/b/file.bin");
        let t = TempFile::create(dir.path(), &dest, 4).unwrap();
        t.write_at(b"abcd", 0).unwrap();
        assert!(!dest.exists());
        t.commit(None, true).unwrap();
        assert_eq!(std::fs::read(&dest).unwrap(), b"abcd");
        assert_eq!(std::fs::read_dir(dest.parent().unwrap()).unwrap().count(), 1);
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
        t.commit(None, false).unwrap();
        assert_eq!(std::fs::read(&target).unwrap(), b"keep", "the symlink's target is untouched");
        assert!(!std::fs::symlink_metadata(root.join("link.bin")).unwrap().file_type().is_symlink());
    }
}
