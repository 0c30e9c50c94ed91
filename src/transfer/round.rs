//! One round of the engine: schedule the parts of a set of objects over a pool of
//! workers, and commit (or discard) each object when its last part finishes.

use std::ops::Range;
use std::pin::pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use tokio::sync::{Notify, Semaphore};

use super::limiter::Limiter;
use super::retry::{self, RetryPolicy};
use super::writer::TempFile;
use super::{Download, Durability, EngineConfig, KnownChecksum, Outcome, Verification, VerifyMode, fetch, parts};
use crate::error::{Error, StoreError, StoreErrorKind};
use crate::integrity::{self, PartCrc, Stated};
use crate::progress::Reporter;
use crate::store::ObjectStore;

/// What lasts across rounds: the store, limits, and shared retry state.
pub(super) struct Env {
    pub store: Arc<dyn ObjectStore>,
    pub reporter: Arc<dyn Reporter>,
    pub cfg: EngineConfig,
    pub policy: RetryPolicy,
    pub limiter: Limiter,
    /// Bounds filesystem calls in flight (see [`EngineConfig::io_concurrency`]).
    io: Semaphore,
}

impl Env {
    pub fn new(store: Arc<dyn ObjectStore>, reporter: Arc<dyn Reporter>, cfg: EngineConfig) -> Env {
        Env {
            store,
            reporter,
            policy: RetryPolicy::new(cfg.retry_count, cfg.retry_budget),
            limiter: Limiter::new(cfg.max_requests),
            io: Semaphore::new(cfg.io_concurrency.max(1)),
            cfg,
        }
    }

    /// Runs blocking filesystem work on tokio's blocking pool, at most
    /// `io_concurrency` calls at once.
    ///
    /// `spawn_blocking` rather than `block_in_place`: the latter moves the async
    /// worker to a fresh thread on every call, so the HTTP client's buffers end
    /// up allocated from dozens of threads and glibc gives each its own arena;
    /// that fragmentation doubled the peak RSS of a 4 x 1 GiB download. Here the
    /// pool threads only run `pwrite`/`rename` and allocate nothing.
    pub async fn blocking_io<R: Send + 'static>(&self, f: impl FnOnce() -> R + Send + 'static) -> R {
        let _permit = self.io.acquire().await.expect("semaphore is never closed");
        match tokio::task::spawn_blocking(f).await {
            Ok(r) => r,
            Err(e) => std::panic::resume_unwind(e.into_panic()),
        }
    }
}

/// One object in the round.
pub(super) struct FileState {
    pub job: Download,
    pub parts: Vec<Range<u64>>,
    /// Created when the first part starts; taken when the object is finished.
    file: Mutex<Option<Arc<TempFile>>>,
    /// Held while the temporary file is being created.
    create: tokio::sync::Mutex<()>,
    /// The checksum the store states: from HEAD before the first of many parts,
    /// or from the response of a single whole-object GET.
    pub stated: Mutex<KnownChecksum>,
    /// CRC of each finished part, when a full-object checksum is known.
    pub crcs: Mutex<Vec<Option<PartCrc>>>,
    /// Bytes written to the temporary file (given back to progress on discard).
    pub written: AtomicU64,
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

/// State of one round, shared by its workers.
pub(super) struct Round {
    pub env: Arc<Env>,
    pub files: Vec<FileState>,
    sched: Mutex<Sched>,
    notify: Notify,
    results: Mutex<Vec<Option<Outcome>>>,
    /// The last round reports every outcome; earlier rounds keep quiet about
    /// objects that will be fetched again.
    last: bool,
}

/// Downloads `jobs`; returns one outcome per job, in order.
pub(super) async fn run(env: Arc<Env>, jobs: Vec<Download>, last: bool) -> Vec<Outcome> {
    let n = jobs.len();
    let cfg = &env.cfg;
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
            FileState {
                crcs: Mutex::new(vec![None; parts.len()]),
                stated: Mutex::new(job.checksum),
                job,
                parts,
                file: Mutex::new(None),
                create: tokio::sync::Mutex::new(()),
                written: AtomicU64::new(0),
            }
        })
        .collect();
    let slots =
        files.iter().map(|f| Slot { next_part: 0, in_flight: 0, unfinished: f.parts.len(), error: None }).collect();
    let workers = cfg.max_requests.max(1).min(n.max(1) * cfg.part_concurrency.max(1));
    let round = Arc::new(Round {
        env: env.clone(),
        files,
        sched: Mutex::new(Sched { slots, active: Vec::new(), next_job: 0 }),
        notify: Notify::new(),
        results: Mutex::new((0..n).map(|_| None).collect()),
        last,
    });
    let handles: Vec<_> = (0..workers).map(|_| tokio::spawn(worker(round.clone()))).collect();
    for h in handles {
        if let Err(e) = h.await {
            std::panic::resume_unwind(e.into_panic());
        }
    }
    let mut results = round.results.lock().unwrap();
    results.iter_mut().map(|r| r.take().unwrap_or_else(|| Err(Error::Refused("download did not run".into())))).collect()
}

async fn worker(round: Arc<Round>) {
    let mut buf = Vec::with_capacity(round.env.cfg.buffer_size);
    loop {
        let mut notified = pin!(round.notify.notified());
        notified.as_mut().enable();
        let pick = round.sched.lock().unwrap().pick(&round.files, &round.env.cfg);
        match pick {
            Pick::Done => return,
            Pick::Wait => notified.await,
            Pick::Part(idx, p) => {
                let result = run_part(&round, idx, p, &mut buf).await;
                finish_part(&round, idx, result).await;
                round.notify.notify_waiters();
            }
        }
    }
}

/// Records a finished part; the part that finishes an object commits or discards it.
async fn finish_part(round: &Round, idx: usize, result: Result<(), Error>) {
    let file = &round.files[idx];
    let error = {
        let mut sched = round.sched.lock().unwrap();
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
    let env = &round.env;
    let outcome = match (error, tmp) {
        (Some(e), tmp) => Err(e).inspect_err(|_| discard(round, file, tmp)),
        (None, Some(t)) => match check(file, env.cfg.verify) {
            Err(e) => Err(e).inspect_err(|_| discard(round, file, Some(t))),
            Ok(verification) => match Arc::try_unwrap(t) {
                Ok(t) => {
                    let (mtime, fsync) = (file.job.last_modified, env.cfg.durability == Durability::Fsync);
                    env.blocking_io(move || t.commit(mtime, fsync)).await.map(|()| verification)
                }
                Err(_) => Err(Error::Refused(format!(
                    "{}: internal error: file still in use at commit",
                    file.job.dest.display()
                ))),
            },
        },
        (None, None) => Err(Error::Refused(format!("{}: internal error: no file written", file.job.dest.display()))),
    };
    let again = !round.last && outcome.as_ref().is_err_and(retry::restarts_object);
    if !again {
        env.reporter.object_done(&file.job, &outcome);
    }
    round.results.lock().unwrap()[idx] = Some(outcome);
}

/// Removes a failed object's temporary file and takes its bytes off the progress count.
fn discard(round: &Round, file: &FileState, tmp: Option<Arc<TempFile>>) {
    if let Some(t) = tmp.and_then(|t| Arc::try_unwrap(t).ok()) {
        t.discard();
    }
    round.env.reporter.discarded(file.written.swap(0, Ordering::Relaxed));
}

/// Compares what was received with what the store states, before commit.
fn check(file: &FileState, mode: VerifyMode) -> Outcome {
    if mode == VerifyMode::Off {
        return Ok(Verification::Off);
    }
    let url = file.job.source_url();
    if file.job.size == 0 {
        return Ok(Verification::Verified("empty"));
    }
    let why = match *file.stated.lock().unwrap() {
        KnownChecksum::Stated(Stated::Full { algorithm, value }) => {
            let crcs: Option<Vec<PartCrc>> = file.crcs.lock().unwrap().iter().copied().collect();
            let Some(crcs) = crcs else {
                return Err(Error::Refused(format!("{url}: internal error: a part's checksum is missing")));
            };
            let got = integrity::combine(algorithm, &crcs);
            if got != value {
                return Err(Error::Mismatch(format!(
                    "{url}: {} of the bytes received is {}, the store states {}; nothing was written",
                    algorithm.name(),
                    integrity::to_base64(algorithm, got),
                    integrity::to_base64(algorithm, value),
                )));
            }
            return Ok(Verification::Verified(algorithm.name()));
        }
        KnownChecksum::Stated(Stated::Composite { algorithm, .. }) => format!(
            "its {} checksum is composite (a multipart upload), and part-level verification is not built yet",
            algorithm.name()
        ),
        KnownChecksum::NoneStated | KnownChecksum::NotAsked => "the store states no checksum for it".to_string(),
    };
    if mode == VerifyMode::Require {
        return Err(Error::Unverified(format!("{url}: cannot be verified: {why} (--verify require)")));
    }
    Ok(Verification::Unverified(why))
}

async fn run_part(round: &Round, idx: usize, p: usize, buf: &mut Vec<u8>) -> Result<(), Error> {
    let file = &round.files[idx];
    let tmp = open(round, file).await?;
    let range = file.parts[p].clone();
    if range.is_empty() {
        return Ok(());
    }
    let crc = fetch::fetch_range(round, file, range, &tmp, buf).await?;
    file.crcs.lock().unwrap()[p] = crc;
    Ok(())
}

/// The object's temporary file, created by the first part to start. An object
/// fetched in many parts first asks the store for its checksum (HEAD), which also
/// confirms that the object is still the one listed.
async fn open(round: &Round, file: &FileState) -> Result<Arc<TempFile>, Error> {
    if let Some(t) = file.file.lock().unwrap().clone() {
        return Ok(t);
    }
    // Other parts of the same object wait on `create` only for this moment.
    let _create = file.create.lock().await;
    if let Some(t) = file.file.lock().unwrap().clone() {
        return Ok(t);
    }
    let env = &round.env;
    let job = &file.job;
    let known = *file.stated.lock().unwrap();
    if file.parts.len() > 1 && known == KnownChecksum::NotAsked && env.cfg.verify != VerifyMode::Off {
        let meta = env.store.head(&job.bucket, &job.key).await.map_err(|e| Error::store(job.source_url(), e))?;
        if meta.etag != job.etag || meta.size != job.size {
            let e = StoreError::new(StoreErrorKind::PreconditionFailed, "the object changed since it was listed");
            return Err(Error::store(job.source_url(), e));
        }
        *file.stated.lock().unwrap() = meta.checksum.into();
    }
    let (dest, size) = (job.dest.clone(), job.size);
    let t = Arc::new(env.blocking_io(move || TempFile::create(&dest, size)).await?);
    *file.file.lock().unwrap() = Some(t.clone());
    Ok(t)
}
