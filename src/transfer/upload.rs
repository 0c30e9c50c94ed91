//! Uploads: local files to S3, each with a full-object checksum the store checks.
//!
//! A file up to `part_size` goes in one PutObject; a larger one in a multipart
//! upload of `part_size` parts (at least 5 MiB, S3's minimum, and grown so that
//! no file needs more than 10,000 parts), `part_concurrency` of them in flight.
//!
//! Integrity: before a part is sent, its CRC (CRC64NVME by default) is computed
//! from the file on the blocking pool; the request states it and the store
//! refuses a body that does not match (BadDigest). The part CRCs are combined
//! into the whole file's CRC, stated when the upload is completed, so the store
//! checks the assembled object too (`ChecksumType=FULL_OBJECT`). The body is
//! read from the file again as it is sent rather than held in memory, so memory
//! does not grow with part size; a file changed between the two reads fails its
//! check instead of being stored half old, half new. The file's size and mtime
//! are also compared before completing.
//!
//! Failure: a multipart upload that fails or is interrupted is aborted, so no
//! orphaned parts are left to be billed. Requests take permits from the same
//! adaptive limiter and retry under the same policy as downloads.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use futures::StreamExt;
use tokio_util::sync::CancellationToken;

use super::EngineConfig;
use super::limiter::Limiter;
use super::retry::{Class, Decision, RetryPolicy, classify};
use crate::error::{Error, StoreErrorKind};
use crate::integrity::{self, Algorithm, DigestKind, PartCrc, PartDigest, PartSum, Stated};
use crate::store::{FileRange, ObjectStore, PutTarget, UploadedPart};

/// S3's smallest part (all but the last) and largest part count.
const MIN_PART: u64 = 5 << 20;
const MAX_PARTS: u64 = 10_000;
/// How long an abort may take before s3load gives up on it (it is logged).
const ABORT_TIMEOUT: Duration = Duration::from_secs(15);
/// S3 may take minutes to assemble a large object; it keeps the connection alive
/// meanwhile. A retry after a completion that did succeed would find no upload.
const COMPLETE_TIMEOUT: Duration = Duration::from_secs(600);
/// The slowest sending rate tolerated before a body request counts as stalled.
const MIN_RATE: u64 = 256 << 10;

/// How long a request sending `len` bytes may take: the stall timeout plus the
/// body at 256 KiB/s. The SDK does not report a body's progress as it is sent,
/// so a stalled upload is caught by this bound, not by watching bytes.
fn body_limit(env: &Env, len: u64) -> Duration {
    env.cfg.stall_timeout + Duration::from_secs(len / MIN_RATE)
}

/// One file to upload.
#[derive(Debug, Clone)]
pub struct Upload {
    pub path: PathBuf,
    pub size: u64,
    pub mtime: Option<SystemTime>,
    pub target: PutTarget,
}

impl Upload {
    pub fn dest_url(&self) -> String {
        format!("s3://{}/{}", self.target.bucket, self.target.key)
    }
}

/// Hears of upload progress.
pub trait UploadReporter: Send + Sync {
    /// `n` more bytes of `job` are stored.
    fn bytes(&self, job: &Upload, n: u64);
    /// A file is uploaded or failed. Called once per file.
    fn done(&self, job: &Upload, result: &Result<(), Error>);
}

struct Env {
    store: Arc<dyn ObjectStore>,
    cfg: EngineConfig,
    policy: RetryPolicy,
    limiter: Limiter,
    stop: CancellationToken,
    reporter: Arc<dyn UploadReporter>,
}

/// Uploads every job; returns one result per job, in job order.
pub async fn upload(
    store: Arc<dyn ObjectStore>,
    jobs: Vec<Upload>,
    cfg: EngineConfig,
    reporter: Arc<dyn UploadReporter>,
    stop: CancellationToken,
) -> Vec<Result<(), Error>> {
    let env = Arc::new(Env {
        store,
        policy: RetryPolicy::new(cfg.retry_count, cfg.retry_budget),
        limiter: Limiter::new(cfg.max_requests),
        stop,
        reporter,
        cfg,
    });
    let mut results: Vec<(usize, Result<(), Error>)> = futures::stream::iter(jobs.into_iter().enumerate())
        .map(|(i, job)| {
            let env = env.clone();
            async move {
                let r = upload_one(&env, &job).await;
                env.reporter.done(&job, &r);
                (i, r)
            }
        })
        .buffer_unordered(env.cfg.max_requests.max(1))
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

async fn upload_one(env: &Env, job: &Upload) -> Result<(), Error> {
    if env.stop.is_cancelled() {
        return Err(Error::Interrupted(job.dest_url()));
    }
    let part = part_size_for(job.size, env.cfg.part_size);
    if job.size <= part {
        let crc = file_crc(env, job, 0, job.size).await?;
        let body = FileRange { path: job.path.clone(), offset: 0, len: job.size };
        request(env, job, body_limit(env, job.size), || env.store.put_object(&job.target, body.clone(), crc.crc))
            .await?;
        unchanged(job)?;
        env.reporter.bytes(job, job.size);
        return Ok(());
    }
    let id = request(env, job, env.cfg.stall_timeout, || env.store.create_upload(&job.target)).await?;
    match upload_parts(env, job, &id, part).await {
        Ok(()) => Ok(()),
        // The upload is gone (completed or aborted): nothing to abort.
        Err(e) if e.store_kind() == Some(StoreErrorKind::NoSuchUpload) => Err(e),
        Err(e) => {
            abort(env, job, &id).await;
            Err(e)
        }
    }
}

/// CompleteMultipartUpload answered NoSuchUpload. When an earlier attempt
/// succeeded and only its answer was lost, the upload is gone because it
/// became the object: the key then holds an object of this size whose stored
/// full-object checksum is the one this upload stated. Anything else is a failure.
async fn completed_earlier(env: &Env, job: &Upload, whole: u64, e: Error) -> Result<(), Error> {
    let head = tokio::time::timeout(env.cfg.stall_timeout, env.store.head(&job.target.bucket, &job.target.key)).await;
    let stated = Stated::Full { algorithm: job.target.checksum, value: whole };
    match head {
        Ok(Ok(meta)) if meta.size == job.size && meta.checksum == Some(stated) => {
            tracing::info!(object = %job.dest_url(), "a retried CompleteMultipartUpload found the upload already completed; the object has this upload's checksum");
            Ok(())
        }
        Ok(Ok(_)) => Err(Error::Refused(format!(
            "{}: CompleteMultipartUpload answered NoSuchUpload and the object now at the key is not this upload \
             (size or checksum differ): another writer, or the upload was aborted; run again",
            job.dest_url()
        ))),
        _ => Err(e),
    }
}

async fn upload_parts(env: &Env, job: &Upload, id: &str, part: u64) -> Result<(), Error> {
    let ranges: Vec<(u32, u64, u64)> =
        (0..job.size.div_ceil(part)).map(|i| (i as u32 + 1, i * part, part.min(job.size - i * part))).collect();
    let mut parts: Vec<(UploadedPart, PartCrc)> = futures::stream::iter(ranges)
        .map(|(n, offset, len)| async move {
            let crc = file_crc(env, job, offset, len).await?;
            let body = FileRange { path: job.path.clone(), offset, len };
            let etag = request(env, job, body_limit(env, len), || {
                env.store.upload_part(&job.target, id, n, body.clone(), crc.crc)
            })
            .await?;
            env.reporter.bytes(job, len);
            Ok::<_, Error>((UploadedPart { number: n, etag, checksum: crc.crc }, crc))
        })
        .buffer_unordered(env.cfg.part_concurrency.max(1))
        .collect::<Vec<_>>()
        .await
        .into_iter()
        .collect::<Result<_, _>>()?;
    parts.sort_by_key(|(p, _)| p.number);
    let crcs: Vec<PartCrc> = parts.iter().map(|(_, c)| *c).collect();
    let whole = integrity::combine(job.target.checksum, &crcs);
    let uploaded: Vec<UploadedPart> = parts.into_iter().map(|(p, _)| p).collect();
    unchanged(job)?;
    match request(env, job, COMPLETE_TIMEOUT, || env.store.complete_upload(&job.target, id, &uploaded, whole)).await {
        Err(e) if e.store_kind() == Some(StoreErrorKind::NoSuchUpload) => completed_earlier(env, job, whole, e).await,
        r => r,
    }
}

/// Aborts a multipart upload, best effort: a failure is logged with the upload
/// id so that it can be cleaned up (or left to a lifecycle rule).
async fn abort(env: &Env, job: &Upload, id: &str) {
    let r = tokio::time::timeout(ABORT_TIMEOUT, env.store.abort_upload(&job.target.bucket, &job.target.key, id)).await;
    match r {
        Ok(Ok(())) => tracing::debug!(object = %job.dest_url(), "multipart upload aborted"),
        Ok(Err(e)) => {
            tracing::error!(object = %job.dest_url(), upload_id = id, error = %e, "could not abort the multipart upload; its parts stay billed until aborted (aws s3api abort-multipart-upload) or a lifecycle rule removes them")
        }
        Err(_) => {
            tracing::error!(object = %job.dest_url(), upload_id = id, "aborting the multipart upload timed out; its parts stay billed until aborted")
        }
    }
}

/// The file must still be what was read: same size and mtime as when listed.
fn unchanged(job: &Upload) -> Result<(), Error> {
    let m = std::fs::metadata(&job.path).map_err(|e| Error::io(&job.path, "reading metadata", e))?;
    if m.len() != job.size || (job.mtime.is_some() && m.modified().ok() != job.mtime) {
        return Err(Error::Refused(format!(
            "{}: the file changed while it was uploaded; run again once it is complete",
            job.path.display()
        )));
    }
    Ok(())
}

/// CRC of `len` bytes of the file from `offset`, read on the blocking pool.
async fn file_crc(env: &Env, job: &Upload, offset: u64, len: u64) -> Result<PartCrc, Error> {
    let path = job.path.clone();
    let algorithm: Algorithm = job.target.checksum;
    let work = tokio::task::spawn_blocking(move || -> Result<PartCrc, Error> {
        use std::os::unix::fs::FileExt;
        let file = std::fs::File::open(&path).map_err(|e| Error::io(&path, "opening", e))?;
        let mut digest = PartDigest::new(DigestKind::Crc(algorithm));
        let mut buf = vec![0u8; 256 << 10];
        let mut done = 0u64;
        while done < len {
            let want = buf.len().min((len - done) as usize);
            let n = file.read_at(&mut buf[..want], offset + done).map_err(|e| Error::io(&path, "reading", e))?;
            if n == 0 {
                return Err(Error::Refused(format!(
                    "{}: the file is shorter than when it was listed; run again once it is complete",
                    path.display()
                )));
            }
            digest.update(&buf[..n]);
            done += n as u64;
        }
        match digest.finish() {
            PartSum::Crc(c) => Ok(c),
            PartSum::Hash(_) => unreachable!("a CRC digest finishes as a CRC"),
        }
    });
    tokio::select! {
        r = work => r.unwrap_or_else(|e| std::panic::resume_unwind(e.into_panic())),
        () = env.stop.cancelled() => Err(Error::Interrupted(job.dest_url())),
    }
}

/// One request under the limiter and the retry policy; transient failures and
/// throttling are retried with backoff, the limiter lowering concurrency on
/// throttling. An attempt taking longer than `limit` is abandoned and retried.
/// Cancellation ends it at once.
async fn request<T, F, Fut>(env: &Env, job: &Upload, limit: Duration, mut f: F) -> Result<T, Error>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<T, crate::error::StoreError>>,
{
    let interrupted = || Error::Interrupted(job.dest_url());
    let mut retries = env.policy.part();
    loop {
        let r = {
            let _permit = tokio::select! {
                p = env.limiter.acquire() => p,
                () = env.stop.cancelled() => return Err(interrupted()),
            };
            tokio::select! {
                r = tokio::time::timeout(limit, f()) => r.unwrap_or_else(|_| Err(crate::error::StoreError::new(
                    crate::error::StoreErrorKind::Network,
                    format!("no answer within {limit:?}: the request stalled"),
                ))),
                () = env.stop.cancelled() => return Err(interrupted()),
            }
        };
        let err = match r {
            Ok(v) => {
                env.limiter.succeeded();
                return Ok(v);
            }
            // Refused as not matching its checksum: sending it again helps
            // only if the file is still what was read.
            Err(e) if e.kind == crate::error::StoreErrorKind::BadDigest => {
                unchanged(job)?;
                Error::store(job.dest_url(), e)
            }
            Err(e) => Error::store(job.dest_url(), e),
        };
        if classify(&err) == Class::Throttled
            && let Some(limit) = env.limiter.throttled()
        {
            tracing::warn!(limit, "the store is throttling requests; lowering concurrency");
        }
        match env.policy.decide(&err, &mut retries) {
            Decision::Retry(delay) => {
                tracing::warn!(object = %job.dest_url(), attempt = retries.attempts, ?delay, error = %err, "retrying upload request");
                tokio::select! {
                    () = tokio::time::sleep(delay) => {}
                    () = env.stop.cancelled() => return Err(interrupted()),
                }
            }
            Decision::GiveUp => return Err(env.policy.gave_up(err, retries.attempts)),
        }
    }
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
