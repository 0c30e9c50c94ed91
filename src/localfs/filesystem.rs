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

use rustix::fs::{AtFlags, Mode, OFlags};

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

/// Which names the destination's filesystem takes for the same name.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct NameFolding {
    /// `Model.bin` is `model.bin` (macOS, Windows shares, some NAS volumes).
    pub case: bool,
    /// `é` composed and decomposed are one name (macOS, some SMB/ONTAP settings).
    pub unicode: bool,
}

impl NameFolding {
    pub fn any(self) -> bool {
        self.case || self.unicode
    }

    /// What the filesystem makes of `name`: two names with the same fold are one file.
    pub fn fold(self, name: &str) -> String {
        use unicode_normalization::UnicodeNormalization;
        let n: String = if self.unicode { name.nfc().collect() } else { name.to_string() };
        if self.case { n.to_lowercase() } else { n }
    }
}

/// Asks the filesystem of `dir` (an existing directory s3load may write in)
/// whether it tells letter case and Unicode forms apart: creates a probe file
/// and looks it up under another case and another normal form. Reads as
/// byte-exact (ext4, xfs) when the probe cannot be made.
pub fn name_folding(dir: &Path) -> NameFolding {
    let flags = OFlags::DIRECTORY | OFlags::RDONLY | OFlags::CLOEXEC;
    let Ok(d) = rustix::fs::open(dir, flags, Mode::empty()) else { return NameFolding::default() };
    let stem = format!(".s3load-probe-{}-", std::process::id());
    let probe = format!("{stem}a\u{e9}");
    let create = OFlags::CREATE | OFlags::EXCL | OFlags::WRONLY | OFlags::NOFOLLOW | OFlags::CLOEXEC;
    if rustix::fs::openat(&d, probe.as_str(), create, Mode::from_raw_mode(0o600)).is_err() {
        tracing::debug!(dir = %dir.display(), "could not probe how the filesystem compares names");
        return NameFolding::default();
    }
    let exists = |name: &str| rustix::fs::statat(&d, name, AtFlags::SYMLINK_NOFOLLOW).is_ok();
    let folding = NameFolding { case: exists(&format!("{stem}A\u{e9}")), unicode: exists(&format!("{stem}ae\u{301}")) };
    let _ = rustix::fs::unlinkat(&d, probe.as_str(), AtFlags::empty());
    folding
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
