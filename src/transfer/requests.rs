//! The one loop every request of a run goes through, whoever makes it: the
//! engine's GETs and uploads, and the listings, HEADs, deletions and
//! multipart bookkeeping of the commands and the engine alike.
//!
//! Two loops share one decision step ([`Requests::backoff`]: the one
//! classification of [`retry::classify`], the request's retries and the
//! run's budget, the limiter lowered on throttling) and the run's stop token:
//!
//! - [`Requests::with_retries`], for bodies: state kept across attempts (a
//!   part resumes from its first missing byte); each attempt runs under a
//!   permit of the request limiter (an upload's or `cat`'s attempt takes its
//!   own; a download worker holds one for a part and its retries), and is
//!   bounded by the engine (stall timeout, minimum rate, time per byte).
//! - [`Requests::call`], for requests without a body: a permit per attempt,
//!   `--request-timeout` per attempt and `--request-deadline` for all of them.
//!
//! The SDK retries no S3 request itself.
//!
//! Outside the engine, a run's store is a [`Looped`]: the same store, each
//! request without a body sent through [`Requests::call`].

use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::time::Instant;

use futures::future::BoxFuture;
use tokio_util::sync::CancellationToken;

use super::limiter::{Limiter, Permit};
use super::retry::{self, Attempts, Class, Decision, RetryPolicy};
use super::settings::EngineConfig;
use crate::error::{Error, StoreError, StoreErrorKind};
use crate::store::{
    FileRange, GetRequest, GetResponse, ListPage, NotDeleted, ObjectMeta, ObjectStore, PutTarget, UploadedPart,
};

/// The limits of requests without a body.
#[derive(Debug, Clone, Copy)]
pub struct Timeouts {
    /// One attempt, its answer included (`--request-timeout`).
    pub attempt: Duration,
    /// Every attempt of one request and the waits between them
    /// (`--request-deadline`).
    pub deadline: Duration,
}

/// A run's requests: its retry policy and budget, its request limiter, its
/// stop token and the limits of requests without a body.
pub struct Requests {
    policy: RetryPolicy,
    limiter: Limiter,
    stop: CancellationToken,
    timeouts: Timeouts,
    /// The store as messages name it, once known.
    store_name: Mutex<Option<String>>,
}

impl std::fmt::Debug for Requests {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Requests").field("timeouts", &self.timeouts).finish_non_exhaustive()
    }
}

impl Requests {
    /// The requests of a run with the engine settings `cfg` (retries, budget,
    /// requests in flight), stopped when `stop` is cancelled.
    pub fn new(cfg: &EngineConfig, timeouts: Timeouts, stop: CancellationToken) -> Arc<Requests> {
        Arc::new(Requests {
            policy: RetryPolicy::new(cfg.retry_count, cfg.retry_budget),
            limiter: match cfg.tune_requests {
                true => Limiter::tuned(cfg.max_requests, cfg.max_memory.map(super::memory::MemoryBound::new)),
                false => Limiter::new(cfg.max_requests),
            },
            stop,
            timeouts,
            store_name: Mutex::new(None),
        })
    }

    /// Names the store the requests go to, for messages ("the store at …").
    pub fn name_store(&self, name: String) {
        *self.store_name.lock().unwrap() = Some(name);
    }

    /// The run's stop token.
    pub fn stop(&self) -> &CancellationToken {
        &self.stop
    }

    pub(super) fn policy(&self) -> &RetryPolicy {
        &self.policy
    }

    pub(super) fn limiter(&self) -> &Limiter {
        &self.limiter
    }

    /// A request slot under the adaptive limit, or the interruption error
    /// when the run stops first.
    pub(super) async fn permit(&self, object: &str) -> Result<Permit<'_>, Error> {
        self.unless_stopped(object, self.limiter.acquire()).await
    }

    /// `fut`, unless the run stops first.
    pub(super) async fn unless_stopped<T>(&self, object: &str, fut: impl Future<Output = T>) -> Result<T, Error> {
        tokio::select! {
            r = fut => Ok(r),
            () = self.stop.cancelled() => Err(Error::Interrupted(object.to_string())),
        }
    }

    /// The retry loop of the engine's requests (bodies): runs `attempt`
    /// until it succeeds or [`Requests::backoff`] ends it. `state` lasts
    /// across attempts (a part's progress, so that a retry resumes where the
    /// last attempt broke) and holds whatever the attempt borrows. The
    /// attempt runs under a permit: its own, or its worker's.
    pub(super) async fn with_retries<S: Send, T>(
        &self,
        object: &str,
        state: &mut S,
        mut attempt: impl for<'a> FnMut(&'a mut S) -> BoxFuture<'a, Result<T, Error>>,
    ) -> Result<T, Error> {
        let mut attempts = self.policy.attempts();
        loop {
            match attempt(state).await {
                Ok(v) => return Ok(v),
                Err(err) => match self.backoff(object, &err, &mut attempts, None) {
                    Some(delay) => self.unless_stopped(object, tokio::time::sleep(delay)).await?,
                    None => return Err(self.policy.gave_up(err, attempts.made)),
                },
            }
        }
    }

    /// After a failed attempt of a request on `object`: how long to wait
    /// before trying again, or `None` to give up. The one place that turns
    /// a failure into a retry; `left` is what remains of the request's
    /// deadline, if it has one (a retry is made only within it).
    fn backoff(&self, object: &str, err: &Error, attempts: &mut Attempts, left: Option<Duration>) -> Option<Duration> {
        if retry::classify(err) == Class::Throttled
            && let Some(limit) = self.limiter.throttled()
        {
            tracing::warn!(limit, "the store is throttling requests; lowering concurrency");
        }
        // No time left for the wait and an attempt: the request ends with
        // this failure (not one of an attempt cut to nothing).
        let left_for_another = |delay: Duration| left.is_none_or(|l| delay + MIN_ATTEMPT <= l);
        match self.policy.decide(err, attempts) {
            Decision::Retry(delay) if left_for_another(delay) => {
                tracing::warn!(object, attempt = attempts.made, ?delay, error = %err, "retrying");
                Some(delay)
            }
            Decision::Retry(_) | Decision::GiveUp => None,
        }
    }

    /// One request without a body (a listing page, HEAD, creating a
    /// multipart upload), to its answer: each attempt under a permit and
    /// `--request-timeout`, all of them within `--request-deadline` (the
    /// time waiting for a permit aside), retried as the policy says. `what`
    /// names the request in messages. A stopped run ends it at once with
    /// [`StoreErrorKind::Stopped`].
    pub async fn call<T, Fut>(&self, what: &str, send: impl FnMut() -> Fut) -> Result<T, StoreError>
    where
        Fut: Future<Output = Result<T, StoreError>>,
    {
        self.send(what, self.timeouts.deadline, OnStop::EndAll, send).await
    }

    /// As [`Requests::call`], for a request whose effect cannot be told
    /// when it is abandoned (DeleteObjects: which keys are gone?): a stopped
    /// run lets the attempt in flight finish, and makes no other.
    pub async fn call_to_its_answer<T, Fut>(&self, what: &str, send: impl FnMut() -> Fut) -> Result<T, StoreError>
    where
        Fut: Future<Output = Result<T, StoreError>>,
    {
        self.send(what, self.timeouts.deadline, OnStop::EndWaits, send).await
    }

    /// A request that is made also once the run is stopped, to clean up
    /// after it (aborting a multipart upload): as [`Requests::call`], but
    /// the stop does not end it, and all its attempts end within `deadline`.
    pub async fn cleanup<T, Fut>(
        &self,
        what: &str,
        deadline: Duration,
        send: impl FnMut() -> Fut,
    ) -> Result<T, StoreError>
    where
        Fut: Future<Output = Result<T, StoreError>>,
    {
        self.send(what, deadline.min(self.timeouts.deadline), OnStop::Ignore, send).await
    }

    async fn send<T, Fut>(
        &self,
        what: &str,
        deadline: Duration,
        on_stop: OnStop,
        mut send: impl FnMut() -> Fut,
    ) -> Result<T, StoreError>
    where
        Fut: Future<Output = Result<T, StoreError>>,
    {
        let stopped = || StoreError::new(StoreErrorKind::Stopped, "stopped by a signal");
        let mut attempts = self.policy.attempts();
        let mut spent = Duration::ZERO;
        loop {
            let permit = match on_stop {
                OnStop::EndAll | OnStop::EndWaits => self.permit(what).await.map_err(|_| stopped())?,
                OnStop::Ignore => self.limiter.acquire().await,
            };
            let limit = self.timeouts.attempt.min(deadline.saturating_sub(spent));
            let started = Instant::now();
            let attempt = async {
                tokio::time::timeout(limit, send()).await.unwrap_or_else(|_| {
                    let store = self.store_name.lock().unwrap().clone();
                    let cut = (limit < self.timeouts.attempt).then_some(deadline);
                    Err(no_answer(store.as_deref().unwrap_or("the store"), limit, cut))
                })
            };
            let answer = match on_stop {
                OnStop::EndAll => self.unless_stopped(what, attempt).await.map_err(|_| stopped())?,
                OnStop::EndWaits | OnStop::Ignore => attempt.await,
            };
            drop(permit);
            spent += started.elapsed();
            let err = match answer {
                Ok(v) => {
                    self.limiter.succeeded();
                    return Ok(v);
                }
                Err(e) => Error::store(what, e),
            };
            let Some(delay) = self.backoff(what, &err, &mut attempts, Some(deadline.saturating_sub(spent))) else {
                return Err(match self.policy.gave_up(err, attempts.made) {
                    Error::Store { source, .. } => source,
                    // Retried until its count, the run's budget or its
                    // deadline ran out: says so, as a body's failure does.
                    Error::GaveUp { attempts, budget_spent, source } => match *source {
                        Error::Store { source, .. } => StoreError::new(
                            source.kind,
                            format!("{source} ({})", crate::error::gave_up_text(attempts, budget_spent)),
                        ),
                        _ => stopped(),
                    },
                    // A store that answered `Stopped` itself (one wrapped
                    // twice): the run's stop.
                    _ => stopped(),
                });
            };
            match on_stop {
                OnStop::EndAll | OnStop::EndWaits => {
                    self.unless_stopped(what, tokio::time::sleep(delay)).await.map_err(|_| stopped())?;
                }
                OnStop::Ignore => tokio::time::sleep(delay).await,
            }
            spent += delay;
        }
    }
}

/// The least time an attempt of a request without a body is given; less
/// than this left of its deadline, the request ends with its last failure.
const MIN_ATTEMPT: Duration = Duration::from_millis(100);

/// What the run's stop ends of a request.
#[derive(Debug, Clone, Copy)]
enum OnStop {
    /// The request, at once.
    EndAll,
    /// Waits (for a permit, before a retry), not an attempt in flight.
    EndWaits,
    /// Nothing: the request cleans up after the run.
    Ignore,
}

/// An attempt that got no answer within `limit` from `store`.
/// `deadline`: the request's deadline, when what was left of it (not
/// `--request-timeout`) cut the attempt short.
fn no_answer(store: &str, limit: Duration, deadline: Option<Duration>) -> StoreError {
    let what = match deadline {
        None => format!("no answer within {:.1} s (--request-timeout)", limit.as_secs_f64()),
        Some(d) => format!("no answer before the request's deadline ran out ({:.1} s in all)", d.as_secs_f64()),
    };
    StoreError::new(
        StoreErrorKind::Network,
        format!(
            "{store}: {what}: each attempt is bounded by --request-timeout and all the attempts of one request by \
             --request-deadline; raise them for a store that is slow to answer"
        ),
    )
}

/// Aborting a multipart upload is best effort (a lifecycle rule removes
/// what is left): a run, stopped or failed, does not wait longer for it.
const ABORT_DEADLINE: Duration = Duration::from_secs(15);

/// A run's store as the commands use it: every request without a body goes
/// through the run's loop ([`Requests::call`]). Bodies (GET, PutObject,
/// UploadPart, CompleteMultipartUpload) are the engine's to send and retry,
/// with their progress kept across attempts: [`Looped::raw`] is the store
/// the engine is given.
pub struct Looped {
    raw: Arc<dyn ObjectStore>,
    requests: Arc<Requests>,
}

impl std::fmt::Debug for Looped {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Looped").field("requests", &self.requests).finish_non_exhaustive()
    }
}

impl Looped {
    pub fn new(raw: Arc<dyn ObjectStore>, requests: Arc<Requests>) -> Arc<Looped> {
        requests.name_store(raw.name());
        Arc::new(Looped { raw, requests })
    }

    /// The store itself, for the engine (which loops its requests itself).
    pub fn raw(&self) -> Arc<dyn ObjectStore> {
        self.raw.clone()
    }

    /// The run's requests, for the engine.
    pub fn requests(&self) -> Arc<Requests> {
        self.requests.clone()
    }
}

#[async_trait::async_trait]
impl ObjectStore for Looped {
    fn name(&self) -> String {
        self.raw.name()
    }

    async fn list_page(
        &self,
        bucket: &str,
        prefix: &str,
        delimiter: Option<&str>,
        token: Option<String>,
    ) -> Result<ListPage, StoreError> {
        let what = format!("listing s3://{bucket}/{prefix}");
        self.requests.call(&what, || self.raw.list_page(bucket, prefix, delimiter, token.clone())).await
    }

    async fn head(&self, bucket: &str, key: &str) -> Result<ObjectMeta, StoreError> {
        self.requests.call(&format!("s3://{bucket}/{key}"), || self.raw.head(bucket, key)).await
    }

    async fn part_info(&self, bucket: &str, key: &str, n: u32) -> Result<Option<(u64, u32)>, StoreError> {
        self.requests.call(&format!("s3://{bucket}/{key}"), || self.raw.part_info(bucket, key, n)).await
    }

    async fn get(&self, req: &GetRequest) -> Result<GetResponse, StoreError> {
        self.raw.get(req).await
    }

    async fn put_object(&self, target: &PutTarget, body: FileRange, checksum: u64) -> Result<(), StoreError> {
        self.raw.put_object(target, body, checksum).await
    }

    async fn create_upload(&self, target: &PutTarget) -> Result<String, StoreError> {
        self.requests.call(&format!("s3://{}/{}", target.bucket, target.key), || self.raw.create_upload(target)).await
    }

    async fn upload_part(
        &self,
        target: &PutTarget,
        upload_id: &str,
        n: u32,
        body: FileRange,
        checksum: u64,
    ) -> Result<String, StoreError> {
        self.raw.upload_part(target, upload_id, n, body, checksum).await
    }

    async fn complete_upload(
        &self,
        target: &PutTarget,
        upload_id: &str,
        parts: &[UploadedPart],
        checksum: u64,
    ) -> Result<(), StoreError> {
        self.raw.complete_upload(target, upload_id, parts, checksum).await
    }

    /// Made also once the run is stopped (an upload the stop ended is
    /// aborted), within [`ABORT_DEADLINE`].
    async fn abort_upload(&self, bucket: &str, key: &str, upload_id: &str) -> Result<(), StoreError> {
        let what = format!("s3://{bucket}/{key}");
        self.requests.cleanup(&what, ABORT_DEADLINE, || self.raw.abort_upload(bucket, key, upload_id)).await
    }

    /// The request, and the keys it answered with a passing error
    /// (`InternalError`, `SlowDown`), are sent again within the retries,
    /// budget and deadline of any request; a stop lets the attempt in flight
    /// answer (which keys it deleted could not be told otherwise). An error
    /// only when no attempt was answered; otherwise the keys not deleted,
    /// each with the last answer about it.
    async fn delete_objects(&self, bucket: &str, keys: &[String]) -> Result<Vec<NotDeleted>, StoreError> {
        // Keys still to delete, with the last answer that named each.
        let pending: Mutex<Vec<(String, Option<NotDeleted>)>> =
            Mutex::new(keys.iter().map(|k| (k.clone(), None)).collect());
        let refused = Mutex::new(Vec::new());
        let answered = std::sync::atomic::AtomicBool::new(false);
        let what = format!("deleting from s3://{bucket}");
        let sent = self.requests.call_to_its_answer(&what, || {
            let keys: Vec<String> = pending.lock().unwrap().iter().map(|(k, _)| k.clone()).collect();
            let (pending, refused, answered) = (&pending, &refused, &answered);
            async move {
                let answer = self.raw.delete_objects(bucket, &keys).await?;
                answered.store(true, std::sync::atomic::Ordering::Relaxed);
                let (again, no): (Vec<NotDeleted>, Vec<NotDeleted>) =
                    answer.into_iter().partition(|n| retry::is_transient(n.kind));
                refused.lock().unwrap().extend(no);
                let last = again.last().cloned();
                let n = again.len();
                *pending.lock().unwrap() = again.into_iter().map(|a| (a.key.clone(), Some(a))).collect();
                match last {
                    None => Ok(()),
                    Some(l) => Err(StoreError::new(
                        l.kind,
                        format!("{n} of its keys not deleted for now, the last s3://{bucket}/{}: {}", l.key, l.reason),
                    )),
                }
            }
        });
        let sent = sent.await;
        let mut refused = refused.into_inner().unwrap();
        match sent {
            Ok(()) => Ok(refused),
            Err(e) if !answered.into_inner() => Err(e),
            Err(e) => {
                for (key, last) in pending.into_inner().unwrap() {
                    refused.push(last.unwrap_or(NotDeleted { key, reason: e.to_string(), kind: e.kind }));
                }
                Ok(refused)
            }
        }
    }

    async fn list_buckets(&self) -> Result<Vec<String>, StoreError> {
        self.requests.call("listing buckets", || self.raw.list_buckets()).await
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicU32, Ordering};

    use super::*;

    fn requests(retries: u32, budget: u64, attempt_ms: u64, deadline_ms: u64) -> Arc<Requests> {
        let cfg = EngineConfig { retry_count: retries, retry_budget: budget, ..EngineConfig::default() };
        let timeouts =
            Timeouts { attempt: Duration::from_millis(attempt_ms), deadline: Duration::from_millis(deadline_ms) };
        Requests::new(&cfg, timeouts, CancellationToken::new())
    }

    fn failing(kind: StoreErrorKind) -> StoreError {
        StoreError::new(kind, "injected")
    }

    // A request without a body is retried as a body is: transient failures
    // within the request's retries and the run's budget, which the two
    // kinds of request share; others not at all.
    #[tokio::test(start_paused = true)]
    async fn requests_without_a_body_retry_within_their_count_and_the_run_budget_others_share() {
        let r = requests(3, 4, 30_000, 90_000);
        let sent = AtomicU32::new(0);
        let always_503 = || {
            sent.fetch_add(1, Ordering::Relaxed);
            async { Err::<(), _>(failing(StoreErrorKind::ServerError)) }
        };
        let e = r.call("listing s3://b/p/", always_503).await.unwrap_err();
        assert_eq!(e.kind, StoreErrorKind::ServerError);
        assert_eq!(sent.swap(0, Ordering::Relaxed), 4, "the first attempt and --retry-count 3");

        // One retry is left in the run's budget: a body takes it...
        let mut state = ();
        let body = r
            .with_retries("s3://b/k", &mut state, |()| {
                Box::pin(async { Err::<(), _>(Error::object("b", "k", None, failing(StoreErrorKind::Network))) })
            })
            .await
            .unwrap_err();
        assert!(matches!(body, Error::GaveUp { budget_spent: true, attempts: 2, .. }), "{body:?}");
        // ... and a listing then gets none.
        r.call("listing s3://b/p/", always_503).await.unwrap_err();
        assert_eq!(sent.swap(0, Ordering::Relaxed), 1, "the budget is the run's");

        // Access denied is not retried, however much is left.
        let r = requests(3, 100, 30_000, 90_000);
        let denied = || {
            sent.fetch_add(1, Ordering::Relaxed);
            async { Err::<(), _>(failing(StoreErrorKind::AccessDenied)) }
        };
        assert_eq!(r.call("s3://b/k", denied).await.unwrap_err().kind, StoreErrorKind::AccessDenied);
        assert_eq!(sent.load(Ordering::Relaxed), 1);
    }

    // A store that answers 503 until the deadline: the request ends with
    // that answer, not with an attempt cut to nothing by the deadline.
    #[tokio::test(start_paused = true)]
    async fn a_request_failing_until_its_deadline_ends_with_the_stores_answer() {
        let r = requests(100, 1000, 1_000, 3_000);
        let e = r.call("s3://b/k", || async { Err::<(), _>(failing(StoreErrorKind::Throttled)) }).await.unwrap_err();
        assert_eq!(e.kind, StoreErrorKind::Throttled, "{e}");
        assert!(e.to_string().contains("injected") && e.to_string().contains("gave up after"), "{e}");
    }

    // A store that never answers: each attempt ends at --request-timeout,
    // and the request at --request-deadline, naming the store and both
    // settings, whatever retries are left.
    #[tokio::test(start_paused = true)]
    async fn a_request_never_answered_ends_at_its_deadline_naming_the_store_and_settings() {
        let r = requests(10, 1000, 1_000, 2_500);
        r.name_store("the store at http://127.0.0.1:9".into());
        let sent = AtomicU32::new(0);
        let started = tokio::time::Instant::now();
        let e = r
            .call("s3://b/k", || {
                sent.fetch_add(1, Ordering::Relaxed);
                std::future::pending::<Result<(), StoreError>>()
            })
            .await
            .unwrap_err();
        let took = started.elapsed();
        // (The paused clock fires timers to the millisecond.)
        assert!(took >= Duration::from_secs(2) && took < Duration::from_millis(2_600), "{took:?}");
        assert!((2..=3).contains(&sent.load(Ordering::Relaxed)), "{} attempts", sent.load(Ordering::Relaxed));
        assert_eq!(e.kind, StoreErrorKind::Network);
        let text = e.to_string();
        assert!(text.contains("no answer"), "{text}");
        for part in ["the store at http://127.0.0.1:9", "--request-timeout", "--request-deadline", "gave up after"] {
            assert!(text.contains(part), "{part}: {text}");
        }
    }

    // The run's stop: ends a request in flight at once (the caller's error
    // is the interruption); lets a DeleteObjects in flight answer, then
    // makes no other attempt; never ends an abort.
    #[tokio::test(start_paused = true)]
    async fn the_stop_ends_requests_at_once_lets_deletions_answer_and_never_ends_an_abort() {
        let r = requests(10, 1000, 30_000, 90_000);
        let stop = r.stop().clone();
        let held = r.call("listing s3://b/p/", || async {
            tokio::time::sleep(Duration::from_secs(5)).await;
            Ok::<_, StoreError>(())
        });
        let cancel = async {
            tokio::time::sleep(Duration::from_millis(10)).await;
            stop.cancel();
        };
        let (e, ()) = tokio::join!(held, cancel);
        let e = e.unwrap_err();
        assert_eq!(e.kind, StoreErrorKind::Stopped);
        assert!(
            matches!(Error::store("listing s3://b/p/", e), Error::Interrupted(ref what) if what == "listing s3://b/p/")
        );

        // Stopped before it starts: a deletion in flight answers, and its
        // retries are not made.
        let r = requests(10, 1000, 30_000, 90_000);
        let sent = AtomicU32::new(0);
        let stop = r.stop().clone();
        let delete = r.call_to_its_answer("deleting from s3://b", || {
            sent.fetch_add(1, Ordering::Relaxed);
            let stop = stop.clone();
            async move {
                stop.cancel();
                tokio::time::sleep(Duration::from_secs(1)).await;
                Err::<(), _>(failing(StoreErrorKind::Throttled))
            }
        });
        assert_eq!(delete.await.unwrap_err().kind, StoreErrorKind::Stopped);
        assert_eq!(sent.load(Ordering::Relaxed), 1, "the attempt in flight answered; none after");

        // An abort after the stop is made, and retried.
        let sent = AtomicU32::new(0);
        let abort = r.cleanup("s3://b/k", Duration::from_secs(15), || {
            let n = sent.fetch_add(1, Ordering::Relaxed);
            async move { if n == 0 { Err(failing(StoreErrorKind::ServerError)) } else { Ok(()) } }
        });
        abort.await.unwrap();
        assert_eq!(sent.load(Ordering::Relaxed), 2);
    }
}
