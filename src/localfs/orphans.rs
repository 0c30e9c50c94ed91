//! Leftovers of killed runs: s3load's temporary files and journals that no
//! live process holds.

use std::path::Path;
use std::time::Duration;

use super::names::{JOURNAL_SUFFIX, RESUME_SUFFIX, TEMP_SUFFIX, is_temp_name};
use super::tempfile::try_lock;

/// Removes s3load's temporary files and journals below `root` that no live
/// process holds (leftovers of runs that were killed). With `keep_resumable`,
/// the fixed-name files that a later run could resume from are kept.
/// Returns how many files were removed.
///
/// Files modified less than `min_age` ago are kept: with other runs writing
/// into the same directory at once (`--shard`), a temporary file is unlocked
/// for the moment between its creation and its `flock`.
pub fn remove_orphans(root: &Path, keep_resumable: bool, min_age: Duration) -> usize {
    let mut removed = 0;
    let mut stack = vec![root.to_path_buf()];
    while let Some(dir) = stack.pop() {
        let Ok(entries) = std::fs::read_dir(&dir) else { continue };
        for e in entries.flatten() {
            let Ok(ft) = e.file_type() else { continue };
            let name = e.file_name();
            let Some(n) = name.to_str() else { continue };
            if ft.is_dir() {
                stack.push(e.path());
                continue;
            }
            if !ft.is_file() || !is_temp_name(n) {
                continue;
            }
            if keep_resumable && !n.ends_with(TEMP_SUFFIX) {
                continue;
            }
            let fresh = e.metadata().ok().and_then(|m| m.modified().ok()).and_then(|t| t.elapsed().ok());
            if !min_age.is_zero() && fresh.is_none_or(|age| age < min_age) {
                continue;
            }
            // A journal is locked through its temporary file.
            let lock_target = match n.strip_suffix(JOURNAL_SUFFIX) {
                Some(stem) => dir.join(format!("{stem}{RESUME_SUFFIX}")),
                None => e.path(),
            };
            // Never blocks: a FIFO in the resumable file's place is no lock.
            let free = match super::open::regular(&lock_target, rustix::fs::OFlags::RDONLY) {
                Ok(f) => try_lock(&f),
                Err(_) => true,
            };
            if free && std::fs::remove_file(e.path()).is_ok() {
                removed += 1;
            }
        }
    }
    removed
}
