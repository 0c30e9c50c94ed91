//! Uploads: local files to S3, each with a full-object checksum the store checks.
//!
//! A file up to `part_size` goes in one PutObject; a larger one in a multipart
//! upload of `part_size` parts (at least 5 MiB, S3's minimum, and grown so that
//! no file needs more than 10,000 parts), `part_concurrency` of them in flight.
//!
//! Integrity: each file is opened once, and the open file must be what the walk
//! saw (the same regular file, size and mtime): a file replaced after the
//! walk (renamed over, as editors and publishers save) is refused, never sent
//! cut to the walked length. Before a part is sent, its CRC (CRC64NVME by
//! default) is computed from the open file on the blocking pool; the request
//! states it and the store refuses a body that does not match (BadDigest). The
//! part CRCs are combined into the whole file's CRC, stated when the upload is
//! completed, so the store checks the assembled object too
//! (`ChecksumType=FULL_OBJECT`). The body is read from the same open file again
//! as it is sent rather than held in memory, so memory does not grow with part
//! size; a file written in place between the two reads fails its check instead
//! of being stored half old, half new. The file's size and mtime are compared
//! again before a PutObject is sent and before a multipart upload is completed,
//! and after a PutObject (a change then fails the run, which the next run
//! repairs).
//!
//! Failure: a multipart upload that fails or is interrupted is aborted, so no
//! orphaned parts are left to be billed. Requests take permits from the same
//! adaptive limiter and retry under the same policy as downloads.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use futures::StreamExt;

use super::engine::Engine;
use super::job::{Outcome, Verification};
use super::report::Item;
use crate::error::{Error, StoreErrorKind};
use crate::integrity::{self, Algorithm, DigestKind, PartCrc, PartDigest, PartSum, Stated};
use crate::refusal::Refusal;
use crate::store::{FileRange, MAX_PARTS, ObjectStore, Pace, PutTarget, UploadedPart};

/// S3's smallest part (all but the last).
const MIN_PART: u64 = 5 << 20;
/// S3 may take minutes to assemble a large object; it keeps the connection alive
/// meanwhile. A retry after a completion that did succeed would find no upload.
const COMPLETE_TIMEOUT: Duration = Duration::from_secs(600);
/// The slowest sending rate tolerated before a body request counts as stalled.
const MIN_RATE: u64 = 256 << 10;

/// How long a request sending `len` bytes may take: the stall timeout plus the
/// body at 256 KiB/s. The SDK does not report a body's progress as it is sent,
/// so a stalled upload is caught by this bound, not by watching bytes.
/// Under `--limit-rate`, a body may be as slow as its share of the rate
/// when every request in flight shares it.
fn body_limit(engine: &Engine, len: u64) -> Duration {
    let share =
        engine.cfg.limit_rate.map_or(MIN_RATE, |r| (r / engine.cfg.max_requests.max(1) as u64).clamp(1, MIN_RATE));
    engine.cfg.stall_timeout + Duration::from_secs(len / share)
}

/// How upload bodies are paced under `--limit-rate`: in slices of what a
/// connection's share of the rate sends in two seconds (4 KiB to 256 KiB),
/// so that none is silent for long while the others take the budget.
fn pace(engine: &Engine) -> Option<Pace> {
    let (budget, rate) = (engine.rate.clone()?, engine.cfg.limit_rate?);
    let share = rate / engine.cfg.max_requests.max(1) as u64;
    Some(Pace { budget, slice: (2 * share).clamp(4 << 10, 256 << 10) as usize })
}

/// One file to upload: sent by PutObject or a multipart upload (the
/// engine's job).
#[derive(Debug, Clone)]
pub struct PutJob {
    pub path: PathBuf,
    pub size: u64,
    pub mtime: Option<SystemTime>,
    /// Device and inode the walk saw ([`crate::plan::local::SourceFile::id`]).
    pub id: Option<(u64, u64)>,
    pub target: PutTarget,
}

impl PutJob {
    pub fn dest_url(&self) -> String {
        format!("s3://{}/{}", self.target.bucket, self.target.key)
    }

    /// A request about this object failed.
    fn failed(&self, e: crate::error::StoreError) -> Error {
        Error::object(&self.target.bucket, &self.target.key, None, e)
    }
}

impl Item for PutJob {
    fn key(&self) -> &str {
        &self.target.key
    }
    fn size(&self) -> u64 {
        self.size
    }
    fn source(&self) -> String {
        self.path.display().to_string()
    }
    fn destination(&self) -> String {
        self.dest_url()
    }
}

/// Uploads every job; returns one outcome per job, in job order: verified by
/// the store against the checksum sent.
pub async fn upload(engine: &Arc<Engine>, jobs: Vec<PutJob>) -> Vec<Outcome> {
    let mut results: Vec<(usize, Outcome)> = futures::stream::iter(jobs.into_iter().enumerate())
        .map(|(i, job)| {
            let engine = engine.clone();
            async move {
                let r = upload_one(&engine, &job).await.map(|()| Verification::Verified(job.target.checksum.name()));
                engine.hooks.reporter.finished(&job, &r);
                (i, r)
            }
        })
        .buffer_unordered(engine.cfg.max_requests.max(1))
        .collect()
        .await;
    results.sort_by_key(|(i, _)| *i);
    results.into_iter().map(|(_, r)| r).collect()
}

/// The part size for a file: the configured size, at least S3's minimum, and
/// large enough for the file to fit in 10,000 parts (rounded up to a MiB).
pub fn part_size_for(size: u64, configured: u64) -> u64 {
    let fit = size.div_ceil(MAX_PARTS).div_ceil(1 << 20) << 20;
    configured.max(MIN_PART).max(fit)
}

async fn upload_one(engine: &Engine, job: &PutJob) -> Result<(), Error> {
    if engine.stop.is_cancelled() {
        return Err(Error::Interrupted(job.dest_url()));
    }
    let part = part_size_for(job.size, engine.cfg.part_size);
    let walked = job.clone();
    let file =
        Arc::new(engine.unless_stopped(&job.dest_url(), engine.blocking_io(move || open_as_walked(&walked))).await??);
    let range = |offset: u64, len: u64| FileRange {
        file: file.clone(),
        path: job.path.clone(),
        offset,
        len,
        pace: pace(engine),
    };
    if job.size <= part {
        let body = range(0, job.size);
        let crc = file_crc(engine, job, &body).await?;
        unchanged(job)?;
        request(engine, job, body_limit(engine, job.size), || {
            engine.store.put_object(&job.target, body.clone(), crc.crc)
        })
        .await?;
        engine.moved(job.size, std::time::Instant::now());
        unchanged(job)?;
        engine.hooks.reporter.bytes(job, job.size);
        return Ok(());
    }
    let id = engine.looped.create_upload(&job.target).await.map_err(|e| job.failed(e))?;
    match upload_parts(engine, job, &id, part, &range).await {
        Ok(()) => Ok(()),
        // The upload is gone (completed or aborted): nothing to abort.
        Err(e) if e.store_kind() == Some(StoreErrorKind::NoSuchUpload) => Err(e),
        Err(e) => {
            abort(engine, job, &id).await;
            Err(e)
        }
    }
}

/// CompleteMultipartUpload answered NoSuchUpload. When an earlier attempt
/// succeeded and only its answer was lost, the upload is gone because it
/// became the object: the key then holds an object of this size whose stored
/// full-object checksum is the one this upload stated. Anything else is a failure.
async fn completed_earlier(engine: &Engine, job: &PutJob, whole: u64, e: Error) -> Result<(), Error> {
    let stated = Stated::Full { algorithm: job.target.checksum, value: whole };
    match engine.looped.head(&job.target.bucket, &job.target.key).await {
        Ok(meta) if meta.size == job.size && meta.checksum == Some(stated) => {
            tracing::info!(object = %job.dest_url(), "a retried CompleteMultipartUpload found the upload already completed; the object has this upload's checksum");
            Ok(())
        }
        Ok(_) => Err(Refusal::UploadLost { url: job.dest_url() }.into()),
        Err(he) if he.kind == StoreErrorKind::Stopped => Err(job.failed(he)),
        Err(_) => Err(e),
    }
}

async fn upload_parts(
    engine: &Engine,
    job: &PutJob,
    id: &str,
    part: u64,
    range: &impl Fn(u64, u64) -> FileRange,
) -> Result<(), Error> {
    let ranges: Vec<(u32, u64, u64)> =
        (0..job.size.div_ceil(part)).map(|i| (i as u32 + 1, i * part, part.min(job.size - i * part))).collect();
    let mut parts: Vec<(UploadedPart, PartCrc)> = futures::stream::iter(ranges)
        .map(|(n, offset, len)| async move {
            let body = range(offset, len);
            let crc = file_crc(engine, job, &body).await?;
            let etag = request(engine, job, body_limit(engine, len), || {
                engine.store.upload_part(&job.target, id, n, body.clone(), crc.crc)
            })
            .await?;
            engine.moved(len, std::time::Instant::now());
            engine.hooks.reporter.bytes(job, len);
            Ok::<_, Error>((UploadedPart { number: n, etag, checksum: crc.crc }, crc))
        })
        .buffer_unordered(engine.cfg.part_concurrency.max(1))
        .collect::<Vec<_>>()
        .await
        .into_iter()
        .collect::<Result<_, _>>()?;
    parts.sort_by_key(|(p, _)| p.number);
    let crcs: Vec<PartCrc> = parts.iter().map(|(_, c)| *c).collect();
    let whole = integrity::combine(job.target.checksum, &crcs);
    let uploaded: Vec<UploadedPart> = parts.into_iter().map(|(p, _)| p).collect();
    unchanged(job)?;
    match request(engine, job, COMPLETE_TIMEOUT, || engine.store.complete_upload(&job.target, id, &uploaded, whole))
        .await
    {
        Err(e) if e.store_kind() == Some(StoreErrorKind::NoSuchUpload) => {
            completed_earlier(engine, job, whole, e).await
        }
        r => r,
    }
}

/// Aborts a multipart upload, best effort: a failure is logged with the upload
/// id so that it can be cleaned up (or left to a lifecycle rule).
async fn abort(engine: &Engine, job: &PutJob, id: &str) {
    match engine.looped.abort_upload(&job.target.bucket, &job.target.key, id).await {
        Ok(()) => tracing::debug!(object = %job.dest_url(), "multipart upload aborted"),
        Err(e) => {
            tracing::error!(object = %job.dest_url(), upload_id = id, error = %e, "could not abort the multipart upload; its parts stay billed until aborted (aws s3api abort-multipart-upload) or a lifecycle rule removes them");
        }
    }
}

/// What the path names now must still be what the walk saw (the bytes come
/// from the file opened then): a file written in place, or replaced, since
/// the walk fails the upload, naming it.
fn unchanged(job: &PutJob) -> Result<(), Error> {
    let m = std::fs::metadata(&job.path).map_err(|e| Error::io(&job.path, "reading metadata", e))?;
    if !as_walked(job, &m) {
        return Err(Refusal::FileChanged { path: job.path.clone(), shorter: false }.into());
    }
    Ok(())
}

/// The regular file the walk saw: the same file (device and inode), size
/// and mtime. (A symlink planted in its place, or a directory above it
/// swapped for a link, leads to another file.)
fn as_walked(job: &PutJob, m: &std::fs::Metadata) -> bool {
    m.is_file()
        && m.len() == job.size
        && (job.mtime.is_none() || m.modified().ok() == job.mtime)
        && (job.id.is_none() || crate::plan::local::file_id(m) == job.id)
}

/// Opens the file an upload reads, once: its checksums and every body sent
/// come from this open file, which must be what the walk saw. Opened without
/// blocking, so that a FIFO put in the file's place cannot hang the run.
fn open_as_walked(job: &PutJob) -> Result<std::fs::File, Error> {
    let file = match crate::localfs::open::source_file(&job.path) {
        // A socket put in the file's place cannot be opened (ENXIO).
        Err(Error::Io { source, .. }) if source.raw_os_error() == Some(libc::ENXIO) => {
            return Err(Refusal::FileChanged { path: job.path.clone(), shorter: false }.into());
        }
        r => r?,
    };
    let m = file.metadata().map_err(|e| Error::io(&job.path, "reading metadata", e))?;
    if !as_walked(job, &m) {
        return Err(Refusal::FileChanged { path: job.path.clone(), shorter: false }.into());
    }
    Ok(file)
}

/// CRC of a body's bytes, read from its open file on the blocking pool.
async fn file_crc(engine: &Engine, job: &PutJob, body: &FileRange) -> Result<PartCrc, Error> {
    let body = body.clone();
    let algorithm: Algorithm = job.target.checksum;
    let work = engine.blocking_io(move || -> Result<PartCrc, Error> {
        use std::os::unix::fs::FileExt;
        let (file, path, offset, len) = (&body.file, &body.path, body.offset, body.len);
        let mut digest = PartDigest::new(DigestKind::Crc(algorithm));
        let mut buf = vec![0u8; 256 << 10];
        let mut done = 0u64;
        while done < len {
            let want = buf.len().min((len - done) as usize);
            let n = file.read_at(&mut buf[..want], offset + done).map_err(|e| Error::io(path, "reading", e))?;
            if n == 0 {
                return Err(Refusal::FileChanged { path: path.clone(), shorter: true }.into());
            }
            digest.update(&buf[..n]);
            done += n as u64;
        }
        match digest.finish() {
            PartSum::Crc(c) => Ok(c),
            PartSum::Hash(_) => unreachable!("a CRC digest finishes as a CRC"),
        }
    });
    engine.unless_stopped(&job.dest_url(), work).await?
}

/// One request under the limiter and the retry loop ([`Engine::with_retries`]).
/// An attempt taking longer than `limit` is abandoned and retried.
/// Cancellation ends it at once.
async fn request<T, F, Fut>(engine: &Engine, job: &PutJob, limit: Duration, f: F) -> Result<T, Error>
where
    T: Send,
    F: FnMut() -> Fut + Send,
    Fut: std::future::Future<Output = Result<T, crate::error::StoreError>> + Send,
{
    let url = job.dest_url();
    let mut state = (engine, job, url.as_str(), f);
    engine
        .with_retries(&url, &mut state, |(engine, job, url, f)| {
            Box::pin(async move {
                let r = {
                    let _permit = engine.permit(url).await?;
                    engine.unless_stopped(url, tokio::time::timeout(limit, f())).await?.unwrap_or_else(|_| {
                        Err(crate::error::StoreError::new(
                            StoreErrorKind::Network,
                            format!(
                                "no answer within {:.1} s: the request stalled (each is given --stall-timeout and \
                                 the time to send its body at 256 KiB/s)",
                                limit.as_secs_f64()
                            ),
                        ))
                    })
                };
                let (bucket, key) = (&job.target.bucket, &job.target.key);
                match r {
                    Ok(v) => {
                        engine.succeeded();
                        Ok(v)
                    }
                    // Sending it again helps only if the file is still what was
                    // read: a body refused as not matching its checksum, or one
                    // cut short because the file was truncated in place, is a
                    // changed file, named as such, not a network to retry.
                    Err(e) => {
                        unchanged(job)?;
                        Err(Error::object(bucket, key, None, e))
                    }
                }
            })
        })
        .await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn part_sizes_respect_s3_limits() {
        assert_eq!(part_size_for(100 << 20, 16 << 20), 16 << 20);
        assert_eq!(part_size_for(100 << 20, 1 << 20), MIN_PART, "never below 5 MiB");
        // 1 TiB in 16 MiB parts would be 65,536 parts: grow to fit 10,000.
        let p = part_size_for(1 << 40, 16 << 20);
        assert!((1u64 << 40).div_ceil(p) <= MAX_PARTS);
        assert_eq!(p % (1 << 20), 0);
    }
}
