//! The destination filesystem as a whole: room before a run, durability after it.
//!
//! Before downloading, s3load compares the bytes it is about to write with the
//! space available to this user on the destination's filesystem, so a run that
//! cannot fit fails at once with the figures instead of after filling the disk.
//! After the last file is renamed into place, one `syncfs` puts every written
//! file and directory entry on disk before the exit code reports success: one
//! call for the whole run, where per-file `fsync` costs a round trip to the
//! device for each of thousands of small files.

use std::path::{Path, PathBuf};

use crate::error::Error;
use crate::progress::human_bytes;

/// The nearest existing directory at or above `path` (the destination may not
/// exist yet; its filesystem is that of its closest existing ancestor).
fn existing_ancestor(path: &Path) -> PathBuf {
    let mut p = if path.as_os_str().is_empty() { Path::new(".") } else { path };
    loop {
        if p.is_dir() {
            return p.to_path_buf();
        }
        match p.parent() {
            Some(parent) if !parent.as_os_str().is_empty() => p = parent,
            _ => return PathBuf::from("."),
        }
    }
}

/// Fails when `needed` bytes do not fit in the space available at `dest`.
pub fn check_space(dest: &Path, needed: u64) -> Result<(), Error> {
    let dir = existing_ancestor(dest);
    let st = rustix::fs::statvfs(&dir).map_err(|e| Error::io(&dir, "reading free space", e.into()))?;
    let available = st.f_bavail.saturating_mul(st.f_frsize);
    if needed > available {
        return Err(Error::Refused(format!(
            "not enough space on the filesystem holding {}: {} to download, {} available ({} short); free space or choose another destination",
            dir.display(),
            human_bytes(needed),
            human_bytes(available),
            human_bytes(needed - available),
        )));
    }
    Ok(())
}

/// Flushes the whole filesystem holding `dest` to disk (`syncfs`).
pub fn sync_filesystem(dest: &Path) -> Result<(), Error> {
    let dir = existing_ancestor(dest);
    let fd = std::fs::File::open(&dir).map_err(|e| Error::io(&dir, "opening for syncfs", e))?;
    rustix::fs::syncfs(&fd).map_err(|e| Error::io(&dir, "flushing the filesystem to disk (syncfs)", e.into()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_filesystem_of_a_missing_destination_is_its_nearest_ancestors() {
        let dir = tempfile::tempdir().unwrap();
        let deep = dir.path().join("a/b/c");
        assert_eq!(existing_ancestor(&deep), dir.path());
        assert_eq!(existing_ancestor(Path::new("no-such-relative-dir/x")), PathBuf::from("."));
    }

    #[test]
    fn space_check_refuses_what_cannot_fit_and_names_the_figures() {
        let dir = tempfile::tempdir().unwrap();
        check_space(dir.path(), 1).unwrap();
        let err = check_space(&dir.path().join("new"), u64::MAX / 2).unwrap_err().to_string();
        assert!(err.contains("not enough space") && err.contains("available"), "{err}");
        sync_filesystem(&dir.path().join("new/x")).unwrap();
    }
}
