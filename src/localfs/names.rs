//! The names of s3load's temporary files and journals beside their
//! destination: made short enough for any destination name, unique per
//! process where they must be, and recognised wherever they are found.

use std::ffi::{OsStr, OsString};
use std::sync::atomic::{AtomicU64, Ordering};

pub(super) const TEMP_SUFFIX: &str = ".s3load-tmp";
pub(super) const RESUME_SUFFIX: &str = ".s3load-resume";
pub(super) const JOURNAL_SUFFIX: &str = ".s3load-journal";
/// The temporary file of an object split across shards, and each piece's journal.
pub(super) const SPLIT_SUFFIX: &str = ".s3load-split";
pub(super) const PIECE_SUFFIX: &str = ".s3load-piece";
/// Part of the destination's name kept in the temporary name, so that the
/// temporary name stays under NAME_MAX (255) whatever the destination's length.
pub(super) const NAME_KEEP: usize = 200;

static SEQ: AtomicU64 = AtomicU64::new(0);

/// Whether a file name is one of s3load's temporary files or journals.
pub fn is_temp_name(name: &str) -> bool {
    name.starts_with('.')
        && [TEMP_SUFFIX, RESUME_SUFFIX, JOURNAL_SUFFIX, SPLIT_SUFFIX, PIECE_SUFFIX].iter().any(|s| name.ends_with(s))
}

/// The destination's name, cut to leave room for s3load's additions.
pub(super) fn kept(name: &OsStr) -> String {
    let name = name.to_string_lossy();
    let mut keep = name.len().min(NAME_KEEP);
    while !name.is_char_boundary(keep) {
        keep -= 1;
    }
    name[..keep].to_string()
}

/// The destination's name cut shorter, for split objects' files, whose names
/// carry an id and a piece number besides.
pub(super) fn kept_short(name: &OsStr) -> String {
    let mut k = kept(name);
    let mut keep = k.len().min(NAME_KEEP - 40);
    while !k.is_char_boundary(keep) {
        keep -= 1;
    }
    k.truncate(keep);
    k
}

/// "piece 2 of 4", as people count.
pub fn piece_name(index: usize, count: usize) -> String {
    format!("piece {} of {count}", index + 1)
}

pub(super) fn temp_name(name: &OsStr) -> OsString {
    // Random per process, not the PID: every pod's main process is PID 1,
    // and shards in several pods may write the same file name at once (an
    // object fetched whole by each shard that found it changed).
    static BASE: std::sync::OnceLock<u64> = std::sync::OnceLock::new();
    let base = *BASE.get_or_init(|| u64::from_str_radix(&super::unique_suffix(), 16).unwrap_or(0));
    let unique = base ^ SEQ.fetch_add(1, Ordering::Relaxed);
    OsString::from(format!(".{}.{unique:x}{TEMP_SUFFIX}", kept(name)))
}
