//! Temporary files beside their destination, renamed into place when complete.
//!
//! A download is written with positional writes into `.NAME.XXXXXXXX.s3load-tmp`
//! in the destination's directory (same filesystem, so the final rename is
//! atomic). Nothing appears at the final path until every byte has arrived and
//! been verified; a failed download removes its temporary file.
//!
//! The temporary file is preallocated (`fallocate`) to the object's size, so a
//! full disk shows up when the download starts rather than half-way through,
//! and large files are laid out contiguously. Filesystems without `fallocate`
//! get a sparse file instead.

use std::fs::{File, OpenOptions};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::SystemTime;

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

fn temp_path(dest: &Path) -> PathBuf {
    let name = dest.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
    let mut keep = name.len().min(NAME_KEEP);
    while !name.is_char_boundary(keep) {
        keep -= 1;
    }
    let unique = (u64::from(std::process::id()) << 32) ^ SEQ.fetch_add(1, Ordering::Relaxed);
    dest.with_file_name(format!(".{}.{unique:x}{TEMP_SUFFIX}", &name[..keep]))
}

/// An open temporary file for one destination.
#[derive(Debug)]
pub struct TempFile {
    file: File,
    path: PathBuf,
    dest: PathBuf,
}

impl TempFile {
    /// Creates the destination's parent directories and a temporary file of `size`
    /// bytes (sparse; filled by [`write_at`](Self::write_at)).
    pub fn create(dest: &Path, size: u64) -> Result<TempFile, Error> {
        if let Some(parent) = dest.parent() {
            std::fs::create_dir_all(parent).map_err(|e| Error::io(parent, "creating directory", e))?;
        }
        let path = temp_path(dest);
        let file = OpenOptions::new()
            .write(true)
            .create_new(true)
            .open(&path)
            .map_err(|e| Error::io(&path, "creating temporary file", e))?;
        let tmp = TempFile { file, path, dest: dest.to_path_buf() };
        if size > 0
            && let Err(e) = tmp.reserve(size)
        {
            tmp.discard();
            return Err(e);
        }
        Ok(tmp)
    }

    fn reserve(&self, size: u64) -> Result<(), Error> {
        use rustix::io::Errno;
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
        std::fs::rename(&self.path, &self.dest).map_err(|e| Error::io(&self.dest, "moving into place", e))?;
        if fsync && let Some(dir) = self.dest.parent() {
            File::open(dir).and_then(|d| d.sync_all()).map_err(|e| Error::io(dir, "flushing directory to disk", e))?;
        }
        Ok(())
    }

    /// Removes the temporary file (best effort: the error that led here matters more).
    pub fn discard(self) {
        let _ = std::fs::remove_file(&self.path);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn temp_names_are_recognised_and_short() {
        let long = "x".repeat(255);
        let p = temp_path(Path::new("/d").join(&long).as_path());
        let name = p.file_name().unwrap().to_str().unwrap();
        assert!(name.len() <= 255);
        assert!(is_temp_name(name));
        assert!(!is_temp_name("model.safetensors"));
    }

    #[test]
    fn nothing_at_the_final_path_until_commit() {
        let dir = tempfile::tempdir().unwrap();
        let dest = dir.path().join("a/b/file.bin");
        let t = TempFile::create(&dest, 4).unwrap();
        t.write_at(b"abcd", 0).unwrap();
        assert!(!dest.exists());
        t.commit(None, true).unwrap();
        assert_eq!(std::fs::read(&dest).unwrap(), b"abcd");
        assert_eq!(std::fs::read_dir(dest.parent().unwrap()).unwrap().count(), 1);
    }
}
