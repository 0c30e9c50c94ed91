//! The download engine: one scheduler over the *parts* of all objects.
//!
//! Every object is split into byte ranges ([`parts::split`]); an object no larger
//! than one part is fetched with a single plain GET. A fixed pool of
//! `max_requests` workers takes parts from one scheduler (`round.rs`), so a single
//! 20 GB object and 10,000 small objects both keep every connection busy:
//!
//! - a worker first takes the next part of an object already open, as long as that
//!   object has fewer than `part_concurrency` parts in flight;
//! - otherwise it opens the next object (at most `max_open_files` at once);
//! - otherwise it waits for a part to finish.
//!
//! Each part streams into a per-worker buffer of `buffer_size` bytes that is
//! written at its offset in the object's temporary file whenever it fills, so the
//! memory held for bodies is at most `max_requests × buffer_size`, whatever the
//! object sizes and counts. Requests also take a permit from an adaptive limiter
//! (`limiter.rs`) that lowers concurrency while the store throttles.
//!
//! Integrity (`fetch.rs`, [`crate::integrity`]): every part request carries
//! `If-Match` with the object's ETag, so a file is never assembled from two
//! versions; each part's CRC is computed as its bytes stream in, and the part CRCs
//! are combined and compared with the store's full-object checksum before the file
//! is renamed into place. A part that breaks resumes from the first byte not yet
//! written; a part that stalls is aborted and resumed ([`retry`] decides).
//!
//! Rounds: an object whose ETag changed mid-download (412) or whose bytes did not
//! match its checksum is discarded and fetched again whole, with its identity
//! read afresh (HEAD), at most `max_restarts` times.

mod engine;
mod fetch;
mod hasher;
mod limiter;
mod object;
pub mod parts;
mod pass;
pub mod report;
mod resume;
pub mod retry;
mod scheduler;
mod segments;
pub mod upload;
mod verify;

use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use futures::StreamExt;

pub use engine::Engine;
pub use report::{CommitHook, Hooks, Item, Reporter};

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

/// One object to download.
#[derive(Debug, Clone)]
pub struct Download {
    pub bucket: String,
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
    pub root: PathBuf,
    pub checksum: KnownChecksum,
    /// Whether the ETag is known to be an MD5 (from HEAD or a whole-object GET).
    pub etag_md5: bool,
    /// How the object was split into parts when it was uploaded (a
    /// multipart upload), once asked (see [`prepare`]).
    pub source_parts: Option<PartLayout>,
    /// Why the layout could not be learnt, when the store refused to say.
    pub layout_unknown: Option<String>,
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

impl Item for Download {
    fn key(&self) -> &str {
        &self.key
    }
    fn size(&self) -> u64 {
        self.size
    }
    fn source(&self) -> String {
        self.source_url()
    }
    fn destination(&self) -> String {
        self.dest.display().to_string()
    }
}

impl Download {
    pub fn source_url(&self) -> String {
        format!("s3://{}/{}", self.bucket, self.key)
    }

    /// The same destination for the object as it is now.
    fn refreshed(&self, meta: ObjectMeta) -> Download {
        Download {
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

/// `--verify`: how much checking an object needs before it is committed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum VerifyMode {
    /// Check the strongest checksum the store states; objects without one are
    /// committed and counted as unverified.
    #[default]
    Auto,
    /// Check nothing (the transport's own checks still apply).
    Off,
    /// Like auto, but an object that cannot be checked fails.
    Require,
}

/// `--durability`: what is on disk before s3load reports success.
///
/// The default is `off` because the main use does not need more: an
/// initContainer filling an `emptyDir` loses the directory with the node, and
/// NFS puts each file on the server at `close`. The sync record knows which
/// files were not flushed and fetches them again after a reboot. With
/// `syncfs` or `fsync`, each finished range is handed to the disk as it
/// completes (`sync_file_range`), so the final flush waits only for the tail.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Durability {
    /// One `syncfs` of the destination's filesystem after the last file is
    /// renamed into place: everything is on disk before the exit code says so.
    Syncfs,
    /// `fsync` each file before its rename and its directory after: each file is
    /// durable as soon as it is reported, at a cost per file.
    Fsync,
    /// Leave flushing to the kernel (a crash may lose recently written files;
    /// their records are not trusted after a reboot).
    #[default]
    Off,
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
}

/// Engine limits. See `docs/configuration.md` for the defaults and why.
#[derive(Debug, Clone)]
pub struct EngineConfig {
    /// Bytes per ranged GET.
    pub part_size: u64,
    /// Parts of one object in flight at once (s5cmd's `--concurrency`).
    pub part_concurrency: usize,
    /// Requests in flight at most, over all objects (`--numworkers`).
    pub max_requests: usize,
    /// Per-request write buffer; bounds body memory at `max_requests × buffer_size`.
    pub buffer_size: usize,
    /// How long a fresh resume journal holds its lines in memory (see
    /// `localfs::journal::Journal`): objects that finish sooner never write one.
    pub journal_hold: Duration,
    /// Retries per part after the first attempt (`--retry-count`).
    pub retry_count: u32,
    /// Retries over the whole run; a storm ends in failure instead of going on.
    pub retry_budget: u64,
    /// A request that receives nothing for this long is aborted and retried.
    pub stall_timeout: Duration,
    /// Times an object is fetched again whole after it changed or failed its checksum.
    pub max_restarts: u32,
    pub verify: VerifyMode,
    pub durability: Durability,
    /// Objects with an open temporary file at once.
    pub max_open_files: usize,
    /// Filesystem calls (create, write, rename) running at once. Many threads
    /// writing one file contend on its inode lock and burn CPU spinning; a few
    /// writers keep the page cache just as busy.
    pub io_concurrency: usize,
}

impl Default for EngineConfig {
    fn default() -> Self {
        EngineConfig {
            part_size: 16 << 20,
            part_concurrency: 16,
            max_requests: 32,
            buffer_size: 256 << 10,
            journal_hold: Duration::from_secs(5),
            retry_count: 10,
            retry_budget: 1000,
            stall_timeout: Duration::from_secs(30),
            max_restarts: 3,
            verify: VerifyMode::Auto,
            durability: Durability::Off,
            max_open_files: 64,
            io_concurrency: 4,
        }
    }
}

/// An object's outcome.
pub type Outcome = Result<Verification, Error>;

/// Downloads every job; returns one outcome per job, in job order. The reporter
/// hears of each object once, when its outcome is final.
///
/// Cancelling the engine's stop token (on SIGTERM/SIGINT) ends every request
/// at once; objects in flight fail as interrupted, those with a journal keep
/// their temporary file for the next run to resume, the others remove it.
pub async fn download(engine: &Arc<Engine>, jobs: Vec<Download>) -> Vec<Outcome> {
    let (env, cfg, store, reporter) = (engine, &engine.cfg, &engine.store, &engine.hooks.reporter);
    let mut outcomes: Vec<Option<Outcome>> = (0..jobs.len()).map(|_| None).collect();
    let mut pending: Vec<(usize, Download)> = jobs.into_iter().enumerate().collect();
    let samples = Arc::new(verify::EtagSamples::default());
    for restart in 0..=cfg.max_restarts {
        let last = restart == cfg.max_restarts;
        let prepared: Vec<(usize, Prepared)> = futures::stream::iter(pending)
            .map(|(i, job)| {
                let env = env.clone();
                async move { (i, prepare(&env, job).await) }
            })
            .buffered(cfg.max_requests.max(1))
            .collect()
            .await;
        let mut index = Vec::new();
        let mut pass_jobs = Vec::new();
        for (i, d) in prepared {
            match d {
                Ok(job) => {
                    index.push(i);
                    pass_jobs.push(job);
                }
                Err((job, e)) => {
                    let outcome = Err(e);
                    reporter.finished(&job, &outcome);
                    outcomes[i] = Some(outcome);
                }
            }
        }
        let results = pass::run(env.clone(), samples.clone(), pass_jobs.clone(), last).await;
        pending = Vec::new();
        for ((i, job), result) in index.into_iter().zip(pass_jobs).zip(results) {
            match result {
                Err(e) if !last && retry::restarts_object(&e) => {
                    tracing::warn!(object = %job.source_url(), error = %e, "fetching the object again from the start");
                    let head = env.unless_stopped(&job.source_url(), store.head(&job.bucket, &job.key)).await;
                    match head {
                        Ok(Ok(meta)) => pending.push((i, job.refreshed(meta))),
                        Ok(Err(he)) => {
                            let outcome = Err(Error::object(&job.bucket, &job.key, None, he));
                            reporter.finished(&job, &outcome);
                            outcomes[i] = Some(outcome);
                        }
                        Err(stopped) => {
                            let outcome = Err(stopped);
                            reporter.finished(&job, &outcome);
                            outcomes[i] = Some(outcome);
                        }
                    }
                }
                r => outcomes[i] = Some(r),
            }
        }
        if pending.is_empty() {
            break;
        }
    }
    // No journal outlives the run that committed its file.
    env.journals_removed().await;
    outcomes.into_iter().map(|o| o.unwrap_or_else(|| Err(Error::Internal("download did not run".into())))).collect()
}

/// A job ready for a pass, or the job and why it cannot be.
type Prepared = Result<Download, (Download, Error)>;

/// Asks the store what a listing does not say but verification needs: the
/// checksum of an object fetched in several parts (HEAD, which also gives its
/// current identity), and the part layout of a multipart upload (HEAD with
/// `partNumber=1`). Objects fetched in one GET learn their checksum from it.
async fn prepare(env: &Engine, job: Download) -> Prepared {
    let cfg = &env.cfg;
    if cfg.verify == VerifyMode::Off || job.size == 0 {
        return Ok(job);
    }
    let mut job = job;
    if env.stop.is_cancelled() {
        let e = Error::Interrupted(job.source_url());
        return Err((job, e));
    }
    if job.checksum == KnownChecksum::NotAsked && (job.size > cfg.part_size || job.multipart()) {
        let head = tokio::select! {
            r = env.store.head(&job.bucket, &job.key) => r,
            () = env.stop.cancelled() => {
                let e = Error::Interrupted(job.source_url());
                return Err((job, e));
            }
        };
        match head {
            Ok(meta) => job = job.refreshed(meta),
            Err(e) => {
                let e = Error::object(&job.bucket, &job.key, None, e);
                return Err((job, e));
            }
        }
    }
    if job.multipart() && job.source_parts.is_none() {
        let layout = tokio::select! {
            r = upload_layout(env, &job) => r,
            () = env.stop.cancelled() => {
                let e = Error::Interrupted(job.source_url());
                return Err((job, e));
            }
        };
        match layout {
            Ok(layout) => job.source_parts = layout,
            // Some stores refuse HEAD with partNumber (or lack it). The object
            // can still be fetched; what cannot be checked without its layout
            // is counted unverified, with this reason.
            Err(e) if !e.kind.is_transient() => {
                tracing::warn!(object = %job.source_url(), error = %e, "the store did not give the part layout (HEAD with partNumber)");
                job.layout_unknown =
                    Some(format!("the store refused to give its part layout (HEAD with partNumber: {e})"));
            }
            Err(e) => {
                let e = Error::object(&job.bucket, &job.key, None, e);
                return Err((job, e));
            }
        }
    }
    Ok(job)
}

async fn upload_layout(env: &Engine, job: &Download) -> Result<Option<PartLayout>, crate::error::StoreError> {
    let Some((part_size, count)) = env.store.part_info(&job.bucket, &job.key, 1).await? else {
        return Ok(None);
    };
    let last_size = match count {
        1 => part_size,
        n => env.store.part_info(&job.bucket, &job.key, n).await?.map_or(0, |(s, _)| s),
    };
    Ok(Some(PartLayout { part_size, last_size, count }))
}

#[cfg(test)]
mod engine_tests;

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
