//! A download's jobs, made from the packed listing as the engine takes them
//! (a million of them at once would be half a gigabyte), and where a single
//! object lands.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use crate::plan::Objects;
use crate::transfer::{GetJob, KnownChecksum};

/// A download's jobs, made from the listing when the engine takes them.
pub(super) struct DownloadJobs {
    pub(super) objects: Objects,
    /// Indexes into `objects`, in the order to run.
    pub(super) order: Vec<u32>,
    /// This run's piece of each object split across shards (`--shard`), by index.
    pub(super) pieces: std::collections::HashMap<u32, crate::shard::Piece>,
    /// Shared by every job.
    pub(super) bucket: Arc<str>,
    pub(super) root: Arc<Path>,
    pub(super) dst: PathBuf,
    pub(super) batch: bool,
}

impl super::driver::Jobs for DownloadJobs {
    type Job = GetJob;

    fn len(&self) -> usize {
        self.order.len()
    }

    fn expected_bytes(&self, k: usize) -> u64 {
        let (i, piece) = (self.order[k], self.pieces.get(&self.order[k]));
        let size = self.objects.size(i as usize);
        piece.map_or(size, |p| size / u64::from(p.count.max(1)))
    }

    fn job(&self, k: usize) -> GetJob {
        let (i, piece) = (self.order[k], self.pieces.get(&self.order[k]).copied());
        let o = self.objects.get(i as usize);
        let meta = o.meta();
        let dest = destination(&self.dst, self.batch, o.rel);
        GetJob {
            bucket: self.bucket.clone(),
            size: meta.size,
            etag: meta.etag,
            version_id: meta.version_id,
            last_modified: meta.last_modified,
            root: if self.batch { self.root.clone() } else { dest.parent().unwrap_or(Path::new("")).into() },
            dest,
            // A single object was looked up with HEAD, which states its checksum;
            // a listing does not, so the engine asks when it needs to.
            checksum: if self.batch { KnownChecksum::NotAsked } else { meta.checksum.into() },
            etag_md5: meta.etag_md5,
            key: meta.key,
            source_parts: None,
            layout_unknown: None,
            piece,
        }
    }
}

/// Where the object at `rel` lands: below `dst` in a batch run; for a single
/// object, see [`single_destination`].
pub(super) fn destination(dst: &Path, batch: bool, rel: &str) -> PathBuf {
    if batch { dst.join(rel) } else { single_destination(dst, Path::new(rel)) }
}

/// Where a single object lands: inside `dst` when it is a directory (or ends with
/// `/`), else at `dst` itself.
fn single_destination(dst: &Path, rel: &Path) -> PathBuf {
    let as_dir = dst.as_os_str().to_string_lossy().ends_with('/') || dst.is_dir();
    if as_dir { dst.join(rel) } else { dst.to_path_buf() }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn single_object_goes_inside_a_directory_or_to_the_named_file() {
        let dir = tempfile::tempdir().unwrap();
        assert_eq!(single_destination(dir.path(), Path::new("c.json")), dir.path().join("c.json"));
        assert_eq!(single_destination(Path::new("out/"), Path::new("c.json")), PathBuf::from("out/c.json"));
        assert_eq!(single_destination(Path::new("new.json"), Path::new("c.json")), PathBuf::from("new.json"));
    }
}
