//! The engine's context: what every request and filesystem call of a run shares,
//! in both directions.
//!
//! One [`Engine`] per run holds the store, the limits, the run's
//! [`Requests`] (stop token, retry policy and budget, adaptive request
//! limiter), the bound on filesystem calls in flight and the caller's
//! [`Hooks`]. Every request goes through the run's one loop: bodies through
//! [`Engine::with_retries`] (a permit each attempt, raced against the stop
//! token, retried as [`Requests`] decides), everything else through the
//! [`Looped`] store ([`Requests::call`]). Blocking filesystem work (writes,
//! renames, reading a file to checksum it) runs through
//! [`Engine::blocking_io`], except where the destination is local: there
//! body writes, and a file written in one buffer's creation and commit, run
//! on the async thread ([`Engine::write_io`]).

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, OnceLock};

use futures::future::BoxFuture;
use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;

use super::hasher::Hasher;
use super::limiter::{Limiter, Permit};
use super::report::Hooks;
use super::requests::{Looped, Requests};
use super::settings::EngineConfig;
use crate::error::Error;
use crate::localfs::{Dirs, SpentJournal};
use crate::store::ObjectStore;

/// One run's engine: the store, its limits and shared state, and the hooks.
pub struct Engine {
    /// The store, for bodies: the engine sends and retries them itself.
    pub(super) store: Arc<dyn ObjectStore>,
    /// The same store, every request without a body through the run's loop.
    pub(super) looped: Arc<Looped>,
    /// The run's requests: the one loop, its limiter, budget and stop.
    requests: Arc<Requests>,
    pub(super) cfg: EngineConfig,
    pub(super) hooks: Hooks,
    /// Cancelled when the run must stop (a signal).
    pub(super) stop: CancellationToken,
    /// Bounds filesystem calls in flight (see [`EngineConfig::io_concurrency`]).
    io: Semaphore,
    /// Hashes segments in order (MD5 ETags, SHA checksums); started when a
    /// download first needs it.
    hasher: OnceLock<Hasher>,
    /// `--limit-rate`'s budget, when set.
    pub(super) rate: Option<Arc<crate::rate::RateLimit>>,
    /// Destination directories opened so far.
    pub(super) dirs: Arc<Dirs>,
    /// Set once the store refused a request naming a version.
    pub(super) versions_denied: AtomicBool,
    /// Journals of committed files being removed (see [`SpentJournal`]).
    spent: Mutex<tokio::task::JoinSet<()>>,
    /// `*.safetensors` headers that passed `--check-model` (for the summary).
    pub(super) headers_checked: AtomicUsize,
    /// GET bodies' rates, for requesting straggling ranges again.
    pub(super) pace: super::straggler::Pace,
    /// Whether body writes (and small files' creation and commit) run on the
    /// async threads now (see [`Engine::write_io`]): the destination is
    /// local, and no such call has taken longer than [`SLOW_WRITE`].
    inline_writes: AtomicBool,
    /// Calls handed to the blocking pool (see [`Engine::blocking_io`]).
    #[cfg(test)]
    pool_calls: AtomicUsize,
}

impl std::fmt::Debug for Engine {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Engine").field("cfg", &self.cfg).finish_non_exhaustive()
    }
}

/// A body write (or a small file's creation or commit) on an async thread
/// that takes longer than this sends every later one of the run to the
/// blocking pool: the disk is failing or far
/// behind, and the async threads must not wait on it. Well above the pauses
/// the kernel imposes on writers while the disk catches up with the page
/// cache (at most 200 ms each; writes of 20 to 100 ms are common near the
/// dirty limit), which bound the run's rate wherever the write runs.
const SLOW_WRITE: std::time::Duration = std::time::Duration::from_millis(500);

impl Engine {
    /// The engine of a run on `store` (whose [`Requests`] it shares with
    /// the command that made it).
    pub fn new(store: Arc<Looped>, cfg: EngineConfig, hooks: Hooks) -> Arc<Engine> {
        let requests = store.requests();
        Arc::new(Engine {
            store: store.raw(),
            looped: store,
            hooks,
            stop: requests.stop().clone(),
            requests,
            io: Semaphore::new(cfg.io_concurrency.max(1)),
            hasher: OnceLock::new(),
            rate: cfg.limit_rate.map(|r| Arc::new(crate::rate::RateLimit::new(r))),
            dirs: Arc::default(),
            versions_denied: AtomicBool::new(false),
            spent: Mutex::default(),
            headers_checked: AtomicUsize::new(0),
            pace: super::straggler::Pace::default(),
            inline_writes: AtomicBool::new(cfg.inline_writes),
            #[cfg(test)]
            pool_calls: AtomicUsize::new(0),
            cfg,
        })
    }

    /// How many `*.safetensors` headers passed `--check-model` so far.
    pub fn headers_checked(&self) -> usize {
        self.headers_checked.load(Ordering::Relaxed)
    }

    pub(super) fn hasher(&self) -> &Hasher {
        self.hasher.get_or_init(|| Hasher::new(1).whole_batch_at_most(self.cfg.max_requests))
    }

    /// Starts the hasher as `hasher` (tests: a hasher whose segments wait
    /// longer for company). Does nothing once a hasher is running.
    #[cfg(test)]
    pub(super) fn start_hasher(&self, hasher: Hasher) {
        let _ = self.hasher.set(hasher);
    }

    /// The hasher, if anything needed it yet.
    pub(super) fn started_hasher(&self) -> Option<&Hasher> {
        self.hasher.get()
    }

    /// A request slot under the adaptive limit, or the interruption error when
    /// the run stops first.
    pub(super) async fn permit(&self, object: &str) -> Result<Permit<'_>, Error> {
        self.requests.permit(object).await
    }

    /// The request limiter, for callers that hold a permit over more than one
    /// request (a download worker, over a part and its retries).
    pub(super) fn limiter(&self) -> &Limiter {
        self.requests.limiter()
    }

    /// `fut`, unless the run stops first.
    pub(super) async fn unless_stopped<T>(&self, object: &str, fut: impl Future<Output = T>) -> Result<T, Error> {
        self.requests.unless_stopped(object, fut).await
    }

    /// A request succeeded: the limiter may allow more.
    pub(super) fn succeeded(&self) {
        self.requests.limiter().succeeded();
    }

    /// `bytes` of a body arrived, or were sent, at `now`: the rate the link
    /// sizing of the requests in flight measures.
    pub(super) fn moved(&self, bytes: u64, now: std::time::Instant) {
        self.requests.limiter().moved(bytes, now);
    }

    /// The retry loop of the engine's bodies (see [`Requests::with_retries`]).
    pub(super) async fn with_retries<S: Send, T>(
        &self,
        object: &str,
        state: &mut S,
        attempt: impl for<'a> FnMut(&'a mut S) -> BoxFuture<'a, Result<T, Error>>,
    ) -> Result<T, Error> {
        self.requests.with_retries(object, state, attempt).await
    }

    /// Whether a GET body that has brought `got` bytes `took` after its
    /// first byte is to be dropped and the rest of its range requested
    /// again (see `straggler`): far behind its peers, within the run's share
    /// of restarts and its retry budget, of which a `Some` takes one each.
    /// Never under `--limit-rate` (whose waits are the run's own) or
    /// `--retry-count 0`, nor once the run is stopped.
    pub(super) fn claim_restart(&self, got: u64, took: std::time::Duration) -> Option<super::straggler::Straggling> {
        if self.rate.is_some() || self.cfg.retry_count == 0 || self.stop.is_cancelled() {
            return None;
        }
        let s = self.pace.claim(got, took)?;
        if !self.requests.policy().take_one() {
            self.pace.give_back();
            return None;
        }
        Some(s)
    }

    /// Runs blocking filesystem work on tokio's blocking pool, at most
    /// `io_concurrency` calls at once.
    ///
    /// `spawn_blocking` rather than `block_in_place`: the latter moves the async
    /// worker to a fresh thread on every call, so the HTTP client's buffers end
    /// up allocated from dozens of threads and glibc gives each its own arena;
    /// that fragmentation doubled the peak RSS of a 4 x 1 GiB download. Here the
    /// pool threads only run `pwrite`/`rename` and allocate nothing.
    pub(super) async fn blocking_io<R: Send + 'static>(&self, f: impl FnOnce() -> R + Send + 'static) -> R {
        let _permit = self.io.acquire().await.expect("semaphore is never closed");
        #[cfg(test)]
        self.pool_calls.fetch_add(1, Ordering::Relaxed);
        match tokio::task::spawn_blocking(f).await {
            Ok(r) => r,
            Err(e) => std::panic::resume_unwind(e.into_panic()),
        }
    }

    /// Runs a body write (and the running hash over its bytes), or the
    /// creation of a file written in one buffer, or such a file's commit
    /// without a flush to disk.
    /// Where the destination is local (and there are two CPUs
    /// or more), on this async thread: the bytes were just received on this
    /// core and are written from its cache. From a pool thread on the other
    /// core, the kernel's copy into the page cache cost about 2.5 times as
    /// much (perf, 4 x 1 GiB), and with the hand-offs' wake-ups the run took
    /// 10 to 25% more CPU (docs/benchmarks.md). A write into the page cache
    /// takes well under a millisecond there, up to a few hundred when the
    /// kernel makes writers wait for the disk; while one async thread waits,
    /// another takes its tasks. Creating a small file or renaming it is a few
    /// metadata calls, cheaper here than a hand-off to the pool and back
    /// (two wake-ups), which a small file would pay twice. After one
    /// call slower than [`SLOW_WRITE`],
    /// the rest of the run's writes go to the blocking pool
    /// ([`Engine::blocking_io`]), as a network filesystem's do from the start.
    pub(super) async fn write_io<R: Send + 'static>(&self, f: impl FnOnce() -> R + Send + 'static) -> R {
        if !self.inline_writes.load(Ordering::Relaxed) {
            return self.blocking_io(f).await;
        }
        let started = std::time::Instant::now();
        let r = f();
        let took = started.elapsed();
        if took > SLOW_WRITE && self.inline_writes.swap(false, Ordering::Relaxed) {
            tracing::info!(
                ms = took.as_millis() as u64,
                "a write (or a file's creation or rename) in the destination took over {} ms: the disk is slow or \
                 failing; these calls go to a thread pool from now on",
                SLOW_WRITE.as_millis()
            );
        }
        r
    }

    /// How many calls were handed to the blocking pool so far.
    #[cfg(test)]
    pub(super) fn pool_calls(&self) -> usize {
        self.pool_calls.load(Ordering::Relaxed)
    }

    /// Whether body writes run on the async threads now.
    #[cfg(test)]
    pub(super) fn writing_inline_now(&self) -> bool {
        self.inline_writes.load(Ordering::Relaxed)
    }

    /// Removes a committed file's journal on the blocking pool, outside the
    /// `io_concurrency` bound: a slow removal must not hold up the writes.
    pub(super) fn remove_journal(&self, journal: SpentJournal) {
        let mut spent = self.spent.lock().unwrap();
        // Reap what has finished, so a long run holds no more handles than
        // removals in progress.
        while spent.try_join_next().is_some() {}
        spent.spawn_blocking(move || journal.remove());
    }

    /// Waits until every journal handed to [`Engine::remove_journal`] is gone.
    pub(super) async fn journals_removed(&self) {
        let pending = std::mem::take(&mut *self.spent.lock().unwrap());
        pending.join_all().await;
    }
}
