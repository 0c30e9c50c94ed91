//! The record's format on disk: a header line, then one JSON record a line,
//! appended; a sharded run's own file beside the main one; reading them all
//! back into one table.

use std::io::{BufRead, BufReader};
use std::os::fd::OwnedFd;
use std::path::Path;

use rustix::fs::OFlags;

use super::record::{Record, SUSPECT_MTIME, boot_id};
use super::table::Table;
use crate::error::Error;
use crate::localfs::open::own_file;

pub(super) const HEADER: &str = "s3load-state 1";
/// Record files of sharded runs: `state.shard-K-of-N`.
pub(super) const SHARD_PREFIX: &str = "state.shard-";

/// The record files in `.s3load/`, in merge order: `state` (an unsharded
/// run's), then each shard's `state.shard-K-of-N`, by name.
pub(super) fn record_files(dir: &Path) -> Vec<String> {
    let mut shards: Vec<String> = std::fs::read_dir(dir)
        .map(|entries| {
            entries
                .flatten()
                .filter_map(|e| e.file_name().into_string().ok())
                .filter(|n| n.starts_with(SHARD_PREFIX) && !n.ends_with(".tmp"))
                .collect()
        })
        .unwrap_or_default();
    shards.sort();
    std::iter::once("state".to_string()).chain(shards).collect()
}

/// The live records of `files`, merged line by line in order: a later line's
/// entry (or removal) for a path wins. Files in a format this s3load does not
/// know are skipped with a warning, except `own` (returned as `None`: the
/// caller sets it aside). Otherwise `own`'s line count is returned, and with
/// `keep_own` (a sharded run, which compacts only its own file) its entries
/// too, removals included.
pub(super) fn load_merged(
    handle: &OwnedFd,
    dir: &Path,
    files: &[String],
    own: &str,
    keep_own: bool,
) -> Result<(Table, Option<(Table, usize)>), Error> {
    let mut merged = Table::default();
    let mut own_entries = Some((Table::default(), 0));
    for name in files {
        let mut own_table = Table::default();
        let is_own = name == own;
        let loaded = load(handle, dir, name, |r| {
            if is_own && keep_own {
                own_table.insert(&r, false);
            }
            if r.removed {
                merged.remove(&r.path);
            } else {
                merged.insert(&r, false);
            }
        })?;
        match loaded {
            Some(lines) if is_own => own_entries = Some((own_table, lines)),
            Some(_) => {}
            None if is_own => own_entries = None,
            None => {
                tracing::warn!(path = %dir.join(name).display(), "a sync record file in a format this s3load does not know: not used");
            }
        }
    }
    Ok((merged, own_entries))
}

/// Reads one record file, line by line, into `each` (removals included: they
/// cancel entries of files merged before it). Returns how many lines after
/// the header it holds, or `None` for a first line this s3load does not know.
fn load(handle: &OwnedFd, dir: &Path, name: &str, mut each: impl FnMut(Record)) -> Result<Option<usize>, Error> {
    let path = dir.join(name);
    let file = match own_file(handle, dir, name, OFlags::RDONLY) {
        Ok(f) => f,
        Err(Error::Io { source, .. }) if source.kind() == std::io::ErrorKind::NotFound => return Ok(Some(0)),
        Err(e @ Error::Refused(_)) => return Err(e),
        Err(e) => {
            tracing::warn!(path = %path.display(), error = %e, "cannot read the sync record; comparing sizes and times instead");
            return Ok(Some(0));
        }
    };
    let mut lines = BufReader::new(file).lines();
    match lines.next() {
        Some(Ok(h)) if h == HEADER => {}
        None => return Ok(Some(0)),
        Some(_) => return Ok(None),
    }
    let (mut torn, mut count) = (0, 0);
    for line in lines {
        let Ok(line) = line else { break };
        count += 1;
        match serde_json::from_str::<Record>(&line) {
            Ok(mut r) => {
                // Written on another boot and never confirmed on disk: suspect.
                if !r.removed && r.boot.as_deref().is_some_and(|b| b != boot_id()) {
                    r.mtime_ns = SUSPECT_MTIME;
                }
                each(r);
            }
            Err(_) => torn += 1,
        }
    }
    if torn > 0 {
        tracing::info!(path = %path.display(), lines = torn, "skipped unreadable lines of the sync record (an interrupted run)");
    }
    Ok(Some(count))
}
