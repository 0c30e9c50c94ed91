//! Leftovers of killed runs: s3load's temporary files and journals that no
//! live process holds.

use std::path::Path;
use std::time::{Duration, UNIX_EPOCH};

use rustix::fs::{AtFlags, FileType, OFlags};

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
///
/// The walk goes from directory handle to directory handle, never through a
/// link: a directory below `root` swapped for a link while it runs leads
/// nowhere, and nothing outside `root` is removed.
pub fn remove_orphans(root: &Path, keep_resumable: bool, min_age: Duration) -> usize {
    let Ok(root) = super::open::existing_dir(root) else { return 0 };
    let mut removed = 0;
    let mut stack = vec![root];
    while let Some(dir) = stack.pop() {
        let Ok(entries) = rustix::fs::Dir::read_from(&dir) else { continue };
        for e in entries.flatten() {
            let name = e.file_name();
            let Ok(n) = name.to_str() else { continue };
            if n == "." || n == ".." {
                continue;
            }
            // What the name is now, not following a link.
            let Ok(st) = rustix::fs::statat(&dir, n, AtFlags::SYMLINK_NOFOLLOW) else { continue };
            let kind = FileType::from_raw_mode(st.st_mode);
            if kind == FileType::Directory {
                if let Ok(sub) = super::open::existing_subdir(&dir, n) {
                    stack.push(sub);
                }
                continue;
            }
            if kind != FileType::RegularFile || !is_temp_name(n) {
                continue;
            }
            if keep_resumable && !n.ends_with(TEMP_SUFFIX) {
                continue;
            }
            let modified = UNIX_EPOCH + Duration::new(st.st_mtime.max(0) as u64, st.st_mtime_nsec as u32);
            let fresh = modified.elapsed().ok();
            if !min_age.is_zero() && fresh.is_none_or(|age| age < min_age) {
                continue;
            }
            // A journal is locked through its temporary file.
            let lock_target = match n.strip_suffix(JOURNAL_SUFFIX) {
                Some(stem) => format!("{stem}{RESUME_SUFFIX}"),
                None => n.to_string(),
            };
            // Never blocks: a FIFO in the resumable file's place is no lock.
            let free = match super::open::regular_in(&dir, &lock_target, OFlags::RDONLY) {
                Ok(f) => try_lock(&f),
                Err(_) => true,
            };
            if free && rustix::fs::unlinkat(&dir, n, AtFlags::empty()).is_ok() {
                removed += 1;
            }
        }
    }
    removed
}
