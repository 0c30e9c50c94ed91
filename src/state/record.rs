//! One line of the sync record: what s3load knows about one file it wrote,
//! and the values it is compared by (times in nanoseconds, checksums as text,
//! the boot a file was written in).

use std::borrow::Cow;
use std::time::SystemTime;

use serde::{Deserialize, Serialize};

use crate::integrity::Stated;

/// The mtime of a suspect record (see [`super::StateStore::distrust_this_run`]): no
/// file has it, so the file is judged changed and fetched again.
pub const SUSPECT_MTIME: i128 = i128::MIN;

/// What s3load knows about one file it wrote.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Record {
    pub path: String,
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub removed: bool,
    #[serde(default)]
    pub size: u64,
    #[serde(default)]
    pub mtime_ns: i128,
    #[serde(default)]
    pub source: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub etag: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub version_id: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub checksum: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_modified_ns: Option<i128>,
    /// Set while the file is not known to be on disk (written with `--durability
    /// off`, or by a run that has not flushed yet): the boot it was written in.
    /// After a reboot such a record is suspect: a machine crash may have left the
    /// file the right size but zero-filled.
    /// This boot's id is shared, not copied into each record (a million
    /// records would hold a million copies).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub boot: Option<Cow<'static, str>>,
}

/// This machine's boot id (`/proc/sys/kernel/random/boot_id`); a fixed
/// placeholder where it cannot be read, so unconfirmed records are never trusted
/// across runs there.
pub fn boot_id() -> &'static str {
    static ID: std::sync::OnceLock<String> = std::sync::OnceLock::new();
    ID.get_or_init(|| {
        std::fs::read_to_string("/proc/sys/kernel/random/boot_id")
            .map(|s| s.trim().to_string())
            .unwrap_or_else(|_| format!("unknown-{}", std::process::id()))
    })
}

/// Nanoseconds since the epoch (negative before it).
pub fn to_ns(t: SystemTime) -> i128 {
    match t.duration_since(SystemTime::UNIX_EPOCH) {
        Ok(d) => d.as_nanos() as i128,
        Err(e) => -(e.duration().as_nanos() as i128),
    }
}

/// `ALGORITHM:hex` for a full-object checksum, `ALGORITHM:hex-N` for a composite one.
pub fn checksum_text(s: Stated) -> String {
    match s {
        Stated::Full { algorithm, value } => format!("{}:{value:x}", algorithm.name()),
        Stated::Composite { algorithm, parts, value } => format!("{}:{value:x}-{parts}", algorithm.name()),
        Stated::Sha { algorithm, parts: None, value } => format!("{}:{}", algorithm.name(), value.hex()),
        Stated::Sha { algorithm, parts: Some(n), value } => format!("{}:{}-{n}", algorithm.name(), value.hex()),
    }
}

impl Record {
    pub(super) fn empty() -> Record {
        Record {
            path: String::new(),
            removed: false,
            size: 0,
            mtime_ns: 0,
            source: String::new(),
            etag: None,
            version_id: None,
            checksum: None,
            last_modified_ns: None,
            boot: None,
        }
    }
}
