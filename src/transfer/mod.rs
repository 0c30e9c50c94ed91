//! The download engine: one scheduler over the *parts* of all objects.
//!
//! Every object is split into byte ranges ([`parts::split`]); an object no larger
//! than one part is fetched with a single plain GET. A fixed pool of
//! `max_requests` workers takes parts from one scheduler, so a single 20 GB object
//! and 10,000 small objects both keep every connection busy:
//!
//! - a worker first takes the next part of an object already open, as long as that
//!   object has fewer than `part_concurrency` parts in flight;
//! - otherwise it opens the next object (at most `max_open_files` at once);
//! - otherwise it waits for a part to finish.
//!
//! Each part streams into a per-worker buffer of `buffer_size` bytes that is
//! written at its offset in the object's temporary file whenever it fills. So the
//! memory held for bodies is at most `max_requests × buffer_size`, whatever the
//! object sizes and counts. When the last part of an object finishes, the file gets
//! the object's LastModified as mtime and is renamed into place; if any part
//! failed, the temporary file is removed and the object is reported failed.
//!
//! Every part request carries `If-Match` with the ETag from the listing, so a file
//! is never assembled from two versions of an object. A body that breaks mid-way is
//! resumed from the first byte not yet written, with exponential backoff and full
//! jitter (`backon`), at most `retry_count` times per part.

pub mod parts;
pub mod writer;

use std::ops::Range;
use std::path::PathBuf;
use std::pin::pin;
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use backon::{BackoffBuilder, ExponentialBuilder};
use bytes::Bytes;
use futures::StreamExt;
use tokio::sync::{Notify, Semaphore};

use crate::error::{Error, StoreError, StoreErrorKind};
use crate::progress::Reporter;
use crate::store::{GetRequest, ObjectStore};
use writer::TempFile;

/// One object to download.
#[derive(Debug, Clone)]
pub struct Download {
    pub bucket: String,
    pub key: String,
    pub size: u64,
    /// ETag from the listing; pins every part request (`If-Match`).
    pub etag: Option<String>,
    pub last_modified: Option<SystemTime>,
    pub dest: PathBuf,
}

impl Download {
    pub fn source_url(&self) -> String {
        format!("s3://{}/{}", self.bucket, self.key)
    }
}

/// Engine limits. See `docs/configuration.md` for the defaults and why.
#[derive(Debug, Clone)]
pub struct EngineConfig {
    /// Bytes per ranged GET.
    pub part_size: u64,
    /// Parts of one object in flight at once (s5cmd's `--concurrency`).
    pub part_concurrency: usize,
    /// Requests in flight at once, over all objects (`--numworkers`).
    pub max_requests: usize,
    /// Per-request write buffer; bounds body memory at `max_requests × buffer_size`.
    pub buffer_size: usize,
    /// Retries per part after the first attempt (`--retry-count`).
    pub retry_count: u32,
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
            retry_count: 10,
            max_open_files: 64,
            io_concurrency: 4,
        }
    }
}

/// Downloads every job; returns one result per job, in job order.
pub async fn download(
    store: Arc<dyn ObjectStore>,
    jobs: Vec<Download>,
    cfg: EngineConfig,
    reporter: Arc<dyn Reporter>,
) -> Vec<Result<(), Error>> {
    let n = jobs.len();
    let files: Vec<FileState> = jobs
        .into_iter()
        .map(|job| {
            let mut parts = if job.size <= cfg.part_size {
                std::iter::once(0..job.size).collect()
            } else {
                parts::split(job.size, cfg.part_size)
            };
            if parts.is_empty() {
                parts.push(0..0);
            }
            FileState { job, parts, file: Mutex::new(None), create: tokio::sync::Mutex::new(()) }
        })
        .collect();
    let slots =
        files.iter().map(|f| Slot { next_part: 0, in_flight: 0, unfinished: f.parts.len(), error: None }).collect();
    let shared = Arc::new(Shared {
        files,
        sched: Mutex::new(Sched { slots, active: Vec::new(), next_job: 0 }),
        notify: Notify::new(),
        io: Semaphore::new(cfg.io_concurrency.max(1)),
        results: Mutex::new((0..n).map(|_| None).collect()),
        store,
        reporter,
        cfg: cfg.clone(),
    });
    let workers = cfg.max_requests.max(1).min(n.max(1) * cfg.part_concurrency.max(1));
    let handles: Vec<_> = (0..workers).map(|_| tokio::spawn(worker(shared.clone()))).collect();
    for h in handles {
        if let Err(e) = h.await {
            std::panic::resume_unwind(e.into_panic());
        }
    }
    let mut results = shared.results.lock().unwrap();
    results.iter_mut().map(|r| r.take().unwrap_or_else(|| Err(Error::Refused("download did not run".into())))).collect()
}

struct FileState {
    job: Download,
    parts: Vec<Range<u64>>,
    /// Created when the first part starts; taken when the object is finished.
    file: Mutex<Option<Arc<TempFile>>>,
    /// Held while the temporary file is being created.
    create: tokio::sync::Mutex<()>,
}

/// Scheduling state of one object (under the scheduler lock).
struct Slot {
    next_part: usize,
    in_flight: usize,
    unfinished: usize,
    error: Option<Error>,
}

struct Sched {
    slots: Vec<Slot>,
    /// Objects with parts not yet handed out.
    active: Vec<usize>,
    next_job: usize,
}

enum Pick {
    Part(usize, usize),
    Wait,
    Done,
}

impl Sched {
    fn pick(&mut self, files: &[FileState], cfg: &EngineConfig) -> Pick {
        let take = |slot: &mut Slot| {
            let p = slot.next_part;
            slot.next_part += 1;
            slot.in_flight += 1;
            p
        };
        for (i, &idx) in self.active.iter().enumerate() {
            let slot = &mut self.slots[idx];
            if slot.in_flight < cfg.part_concurrency.max(1) {
                let p = take(slot);
                if slot.next_part == files[idx].parts.len() {
                    self.active.swap_remove(i);
                }
                return Pick::Part(idx, p);
            }
        }
        if self.next_job < self.slots.len() && self.active.len() < cfg.max_open_files.max(1) {
            let idx = self.next_job;
            self.next_job += 1;
            let p = take(&mut self.slots[idx]);
            if files[idx].parts.len() > 1 {
                self.active.push(idx);
            }
            return Pick::Part(idx, p);
        }
        if self.active.is_empty() && self.next_job >= self.slots.len() { Pick::Done } else { Pick::Wait }
    }
}

struct Shared {
    files: Vec<FileState>,
    sched: Mutex<Sched>,
    notify: Notify,
    /// Bounds filesystem calls in flight (see [`EngineConfig::io_concurrency`]).
    io: Semaphore,
    results: Mutex<Vec<Option<Result<(), Error>>>>,
    store: Arc<dyn ObjectStore>,
    reporter: Arc<dyn Reporter>,
    cfg: EngineConfig,
}

impl Shared {
    /// Runs blocking filesystem work on tokio's blocking pool, at most
    /// `io_concurrency` calls at once.
    ///
    /// `spawn_blocking` rather than `block_in_place`: the latter moves the async
    /// worker to a fresh thread on every call, so the HTTP client's buffers end
    /// up allocated from dozens of threads and glibc gives each its own arena;
    /// that fragmentation doubled the peak RSS of a 4 x 1 GiB download. Here the
    /// pool threads only run `pwrite`/`rename` and allocate nothing.
    async fn blocking_io<R: Send + 'static>(&self, f: impl FnOnce() -> R + Send + 'static) -> R {
        let _permit = self.io.acquire().await.expect("semaphore is never closed");
        match tokio::task::spawn_blocking(f).await {
            Ok(r) => r,
            Err(e) => std::panic::resume_unwind(e.into_panic()),
        }
    }
}

async fn worker(shared: Arc<Shared>) {
    let mut buf = Vec::with_capacity(shared.cfg.buffer_size);
    loop {
        let mut notified = pin!(shared.notify.notified());
        notified.as_mut().enable();
        let pick = shared.sched.lock().unwrap().pick(&shared.files, &shared.cfg);
        match pick {
            Pick::Done => return,
            Pick::Wait => notified.await,
            Pick::Part(idx, p) => {
                let result = run_part(&shared, idx, p, &mut buf).await;
                finish_part(&shared, idx, result).await;
                shared.notify.notify_waiters();
            }
        }
    }
}

/// Records a finished part; the part that finishes an object commits or discards it.
async fn finish_part(shared: &Shared, idx: usize, result: Result<(), Error>) {
    let file = &shared.files[idx];
    let error = {
        let mut sched = shared.sched.lock().unwrap();
        let slot = &mut sched.slots[idx];
        slot.in_flight -= 1;
        slot.unfinished -= 1;
        if let Err(e) = result {
            // Parts not yet handed out will not be: the object has failed.
            let skipped = file.parts.len() - slot.next_part;
            slot.unfinished -= skipped;
            slot.next_part = file.parts.len();
            slot.error.get_or_insert(e);
            if skipped > 0 {
                sched.active.retain(|&a| a != idx);
            }
        }
        let slot = &mut sched.slots[idx];
        if slot.unfinished > 0 {
            return;
        }
        slot.error.take()
    };
    let tmp = file.file.lock().unwrap().take();
    let outcome = match (error, tmp) {
        (Some(e), tmp) => {
            if let Some(t) = tmp.and_then(|t| Arc::try_unwrap(t).ok()) {
                t.discard();
            }
            Err(e)
        }
        (None, Some(t)) => match Arc::try_unwrap(t) {
            Ok(t) => {
                let mtime = file.job.last_modified;
                shared.blocking_io(move || t.commit(mtime)).await
            }
            Err(_) => {
                Err(Error::Refused(format!("{}: internal error: file still in use at commit", file.job.dest.display())))
            }
        },
        (None, None) => Err(Error::Refused(format!("{}: internal error: no file written", file.job.dest.display()))),
    };
    shared.reporter.object_done(&file.job, &outcome);
    shared.results.lock().unwrap()[idx] = Some(outcome);
}

async fn run_part(shared: &Shared, idx: usize, p: usize, buf: &mut Vec<u8>) -> Result<(), Error> {
    let file = &shared.files[idx];
    let existing = file.file.lock().unwrap().clone();
    let tmp = match existing {
        Some(t) => t,
        None => {
            // Created once, by the first part; other parts of the same object wait on
            // `create` only for this moment.
            let _create = file.create.lock().await;
            let existing = file.file.lock().unwrap().clone();
            match existing {
                Some(t) => t,
                None => {
                    let (dest, size) = (file.job.dest.clone(), file.job.size);
                    let t = Arc::new(shared.blocking_io(move || TempFile::create(&dest, size)).await?);
                    *file.file.lock().unwrap() = Some(t.clone());
                    t
                }
            }
        }
    };
    let range = file.parts[p].clone();
    if range.is_empty() {
        return Ok(());
    }
    fetch_range(shared, &file.job, range, file.parts.len() == 1, &tmp, buf).await
}

/// Backoff between attempts of one part: exponential from 100 ms, capped at 20 s,
/// with full jitter so that many parts failing together do not retry together.
fn backoff(retries: u32) -> impl Iterator<Item = Duration> {
    ExponentialBuilder::default()
        .with_min_delay(Duration::from_millis(100))
        .with_max_delay(Duration::from_secs(20))
        .with_jitter()
        .with_max_times(retries as usize)
        .build()
}

async fn fetch_range(
    shared: &Shared,
    job: &Download,
    range: Range<u64>,
    whole: bool,
    tmp: &Arc<TempFile>,
    buf: &mut Vec<u8>,
) -> Result<(), Error> {
    let mut offset = range.start;
    let mut delays = backoff(shared.cfg.retry_count);
    let mut attempt = 0u32;
    loop {
        attempt += 1;
        let (err, resume_at) = match fetch_once(shared, job, offset, range.end, whole, tmp, buf).await {
            Ok(()) => return Ok(()),
            Err(failure) => failure,
        };
        offset = resume_at;
        let transient = err.store_kind().is_some_and(StoreErrorKind::is_transient);
        match delays.next() {
            Some(delay) if transient => {
                tracing::warn!(object = %job.source_url(), offset, attempt, ?delay, error = %err, "retrying part");
                tokio::time::sleep(delay).await;
            }
            Some(_) => return Err(err),
            None => {
                return Err(if transient {
                    Error::Refused(format!(
                        "{err} (gave up after {attempt} attempts; raise --retry-count to try longer)"
                    ))
                } else {
                    err
                });
            }
        }
    }
}

/// Writes the buffered bytes at `pos` and advances it. The buffer travels to
/// the blocking pool and back, so it is never copied or reallocated.
async fn flush(shared: &Shared, tmp: &Arc<TempFile>, buf: &mut Vec<u8>, pos: &mut u64) -> Result<(), (Error, u64)> {
    if buf.is_empty() {
        return Ok(());
    }
    let (data, at, file) = (std::mem::take(buf), *pos, tmp.clone());
    let (data, result) = shared
        .blocking_io(move || {
            let r = file.write_at(&data, at);
            (data, r)
        })
        .await;
    result.map_err(|e| (e, at))?;
    *pos += data.len() as u64;
    shared.reporter.bytes(data.len() as u64);
    *buf = data;
    buf.clear();
    Ok(())
}

/// Writes a chunk too large to buffer straight from the body at `pos`.
async fn write_direct(shared: &Shared, tmp: &Arc<TempFile>, data: Bytes, pos: &mut u64) -> Result<(), (Error, u64)> {
    let (at, len, file) = (*pos, data.len() as u64, tmp.clone());
    shared.blocking_io(move || file.write_at(&data, at)).await.map_err(|e| (e, at))?;
    *pos += len;
    shared.reporter.bytes(len);
    Ok(())
}

/// One GET of `offset..end`. On failure, also returns the offset to resume from:
/// bytes received before a break are written first, so they are not fetched again.
async fn fetch_once(
    shared: &Shared,
    job: &Download,
    offset: u64,
    end: u64,
    whole: bool,
    tmp: &Arc<TempFile>,
    buf: &mut Vec<u8>,
) -> Result<(), (Error, u64)> {
    let ranged = !(whole && offset == 0);
    let req = GetRequest {
        bucket: job.bucket.clone(),
        key: job.key.clone(),
        range: ranged.then_some(offset..end),
        if_match: job.etag.clone(),
    };
    let ctx = || format!("{} bytes {}-{}", job.source_url(), offset, end.saturating_sub(1));
    let resp = shared.store.get(&req).await.map_err(|e| (Error::store(ctx(), e), offset))?;
    let expected = end - offset;
    if resp.content_length != expected || (ranged && resp.range_start != offset) {
        let msg = format!(
            "{}: server returned {} bytes from offset {} where {} bytes from offset {} were asked for (does the endpoint support Range requests?)",
            job.source_url(),
            resp.content_length,
            resp.range_start,
            expected,
            offset
        );
        return Err((Error::Integrity(msg), offset));
    }
    let mut body = resp.body;
    let mut pos = offset;
    let mut received = 0u64;
    buf.clear();
    while let Some(chunk) = body.next().await {
        match chunk {
            Ok(bytes) => {
                received += bytes.len() as u64;
                if received > expected {
                    let msg = format!("{}: body is longer than the {} bytes promised", ctx(), expected);
                    return Err((Error::Integrity(msg), offset));
                }
                // Never grow the buffer past its capacity: a Vec that overflows
                // doubles, and 32 doubled buffers were most of the peak RSS.
                if buf.len() + bytes.len() > shared.cfg.buffer_size {
                    flush(shared, tmp, buf, &mut pos).await?;
                }
                if bytes.len() >= shared.cfg.buffer_size {
                    write_direct(shared, tmp, bytes, &mut pos).await?;
                } else {
                    buf.extend_from_slice(&bytes);
                }
            }
            Err(e) => {
                flush(shared, tmp, buf, &mut pos).await?;
                return Err((Error::store(ctx(), e), pos));
            }
        }
    }
    flush(shared, tmp, buf, &mut pos).await?;
    if received < expected {
        let e = StoreError::new(StoreErrorKind::Network, format!("body ended after {received} of {expected} bytes"));
        return Err((Error::store(ctx(), e), pos));
    }
    Ok(())
}
