//! What the engine is given and gives back: the objects to download, what is
//! known of them, and how each was checked.

use std::path::{Path, PathBuf};
use std::time::SystemTime;

use crate::error::Error;
use crate::integrity::Stated;
use crate::store::ObjectMeta;

/// What is known of the checksum the store states for an object.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KnownChecksum {
    /// Not asked yet (a listing does not carry checksum values).
    NotAsked,
    /// The store was asked and states none (an object older than S3's checksums).
    NoneStated,
    Stated(Stated),
}

impl From<Option<Stated>> for KnownChecksum {
    fn from(s: Option<Stated>) -> Self {
        s.map_or(KnownChecksum::NoneStated, KnownChecksum::Stated)
    }
}

/// One object to download: fetched by ranged GETs into a temporary file
/// (the engine's job; the `download` modules of `commands`, `plan` and
/// `transfer` are the three layers of that direction).
#[derive(Debug, Clone)]
pub struct GetJob {
    /// Shared by every job of a run (a million jobs need no million copies).
    pub bucket: std::sync::Arc<str>,
    pub key: String,
    pub size: u64,
    /// ETag from the listing; pins every part request (`If-Match`).
    pub etag: Option<String>,
    /// Version id, when a HEAD found one (versioned bucket): part requests name
    /// it, so the listed version is fetched even if a new one is written.
    pub version_id: Option<String>,
    pub last_modified: Option<SystemTime>,
    pub dest: PathBuf,
    /// The directory `dest` lies below that s3load may create directories in;
    /// nothing between it and `dest` is followed if it is a symlink.
    /// Shared by every job of a run, like `bucket`.
    pub root: std::sync::Arc<Path>,
    pub checksum: KnownChecksum,
    /// Whether the ETag is known to be an MD5 (from HEAD or a whole-object GET).
    pub etag_md5: bool,
    /// How the object was split into parts when it was uploaded (a
    /// multipart upload), once asked (see [`super::download::prepare`]).
    pub source_parts: Option<PartLayout>,
    /// Why the layout could not be learnt, when the store refused to say.
    pub layout_unknown: Option<String>,
    /// The piece of the object this run fetches when it is split across
    /// shards (`--shard`, see [`crate::shard::Piece`]); `None`: all of it.
    pub piece: Option<crate::shard::Piece>,
}

/// The part layout of a multipart upload, as S3 reveals it: the sizes of the
/// first and last parts and the number of parts. Ranges are aligned to the
/// parts only when the layout is that of a fixed part size (every part but the
/// last of the first part's size; the last no larger), which is how uploaders
/// split. Middle parts are not asked one by one: an upload whose middle parts
/// vary while its first and last fit the pattern would fail its composite
/// check (a false failure, never a false pass).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PartLayout {
    pub part_size: u64,
    pub last_size: u64,
    pub count: u32,
}

impl PartLayout {
    pub fn uniform_for(self, size: u64) -> bool {
        let n = u64::from(self.count);
        n > 0
            && self.part_size > 0
            && self.last_size > 0
            && self.last_size <= self.part_size
            && (n - 1).checked_mul(self.part_size).and_then(|a| a.checked_add(self.last_size)) == Some(size)
    }
}

impl GetJob {
    pub fn source_url(&self) -> String {
        format!("s3://{}/{}", self.bucket, self.key)
    }

    /// The same destination for the object as it is now.
    pub(super) fn refreshed(&self, meta: ObjectMeta) -> GetJob {
        GetJob {
            size: meta.size,
            etag: meta.etag,
            version_id: meta.version_id,
            last_modified: meta.last_modified,
            checksum: meta.checksum.into(),
            etag_md5: meta.etag_md5,
            source_parts: None,
            layout_unknown: None,
            ..self.clone()
        }
    }

    /// Whether the ETag is that of a multipart upload (`...-N`).
    pub fn multipart(&self) -> bool {
        self.etag.as_deref().is_some_and(|e| e.contains('-'))
    }
}

/// How an object that was written got checked.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verification {
    /// Matched the store's checksum (algorithm name), or was empty.
    Verified(&'static str),
    /// Could not be checked, and why.
    Unverified(String),
    /// `--verify off`.
    Off,
    /// A piece of an object split across shards, written and durable; the
    /// shard that finishes the object's last piece verifies it and moves it
    /// into place (`transfer/resume.rs`).
    Piece,
}

/// An object's outcome.
pub type Outcome = Result<Verification, Error>;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_fixed_size_upload_layouts_are_aligned() {
        let up = |part_size, last_size, count| PartLayout { part_size, last_size, count };
        assert!(up(8, 8, 3).uniform_for(24));
        assert!(up(8, 1, 3).uniform_for(17));
        assert!(up(8, 8, 1).uniform_for(8));
        assert!(!up(8, 9, 3).uniform_for(25), "a last part larger than the first");
        assert!(!up(2, 1, 3).uniform_for(6), "sizes 2, 3, 1: the total gives it away");
        assert!(!up(0, 0, 3).uniform_for(0));
        assert!(!up(u64::MAX, 1, 3).uniform_for(7), "no overflow");
    }
}
