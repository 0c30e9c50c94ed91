//! The retry policy: the one place that decides what a failed request leads to.
//!
//! Every failure of a request is classified once ([`classify`]; a store's
//! error alone: [`classify_store`]):
//!
//! | class | examples | what happens |
//! |---|---|---|
//! | transient | 500, connection reset, short body, stall; an upload refused as BadDigest | same range again from the first byte not yet written (an upload part: the part again, unless the file changed), after a backoff |
//! | throttled | 503 SlowDown, 429 | the same, and the request limiter lowers concurrency |
//! | object changed | 412 on `If-Match` | the whole object restarts with its new identity |
//! | corrupt | checksum mismatch | the whole object restarts (the bad part cannot be told apart) |
//! | fatal | 403, 404, 416, local I/O, a server that ignores `Range` | the object fails now |
//!
//! Backoff is exponential from 100 ms to 20 s with full jitter (`backon`), so parts
//! that fail together do not come back together. Each request (a download's: each part) may retry
//! `retry_count` times, and the whole run shares a budget so that a storm (every
//! request failing) ends in a clean failure instead of running for hours.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use backon::{BackoffBuilder, ExponentialBuilder};

use crate::error::{Error, StoreErrorKind};

/// What kind of failure an error is, as far as retrying goes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Class {
    Transient,
    Throttled,
    ObjectChanged,
    Corrupt,
    Fatal,
}

pub fn classify(err: &Error) -> Class {
    match err {
        Error::Store { source, .. } => classify_store(source.kind),
        Error::Mismatch(_) => Class::Corrupt,
        Error::GaveUp { .. } | Error::Internal(_) => Class::Fatal,
        Error::Usage(_)
        | Error::Io { .. }
        | Error::Refused(_)
        | Error::AfterOutput { .. }
        | Error::Integrity(_)
        | Error::Unverified(_)
        | Error::Interrupted(_)
        | Error::ClosedPipe => Class::Fatal,
    }
}

/// What kind of failure a store error is: the store's side of [`classify`],
/// also for code that holds a store error (a request's answer, a key
/// DeleteObjects could not delete).
pub fn classify_store(kind: StoreErrorKind) -> Class {
    match kind {
        StoreErrorKind::Throttled => Class::Throttled,
        // A body that arrived different from its checksum: sent again.
        StoreErrorKind::ServerError | StoreErrorKind::Network | StoreErrorKind::BadDigest => Class::Transient,
        StoreErrorKind::PreconditionFailed => Class::ObjectChanged,
        StoreErrorKind::NoSuchBucket
        | StoreErrorKind::NoSuchKey
        | StoreErrorKind::NoSuchUpload
        | StoreErrorKind::AccessDenied
        | StoreErrorKind::InvalidRange
        | StoreErrorKind::Credentials
        | StoreErrorKind::Stopped
        | StoreErrorKind::Other => Class::Fatal,
    }
}

/// Whether trying the same request again may succeed.
pub fn is_transient(kind: StoreErrorKind) -> bool {
    matches!(classify_store(kind), Class::Transient | Class::Throttled)
}

/// Whether the whole object should be fetched again (with a fresh identity).
pub fn restarts_object(err: &Error) -> bool {
    matches!(classify(err), Class::ObjectChanged | Class::Corrupt)
}

/// What to do after a failed attempt of one request.
#[derive(Debug, PartialEq, Eq)]
pub enum Decision {
    /// Try the part again after this delay.
    Retry(Duration),
    /// Give up on the part; the error says why.
    GiveUp,
}

/// Retry limits shared by every request of a run.
#[derive(Debug)]
pub struct RetryPolicy {
    per_part: u32,
    /// Retries left for the whole run.
    budget: AtomicU64,
}

/// Backoff bounds: short enough that a blip costs little, long enough that a
/// throttled endpoint gets real relief.
const MIN_DELAY: Duration = Duration::from_millis(100);
const MAX_DELAY: Duration = Duration::from_secs(20);

impl RetryPolicy {
    pub fn new(per_part: u32, budget: u64) -> RetryPolicy {
        RetryPolicy { per_part, budget: AtomicU64::new(budget) }
    }

    /// A fresh retry state for one request.
    pub fn attempts(&self) -> Attempts {
        let delays = ExponentialBuilder::default()
            .with_min_delay(MIN_DELAY)
            .with_max_delay(MAX_DELAY)
            .with_jitter()
            .with_max_times(self.per_part as usize)
            .build();
        Attempts { delays: Box::new(delays), made: 1 }
    }

    /// Decides after a failed attempt. Transient and throttling failures retry
    /// while both the part's and the run's allowance last.
    pub fn decide(&self, err: &Error, part: &mut Attempts) -> Decision {
        if !matches!(classify(err), Class::Transient | Class::Throttled) {
            return Decision::GiveUp;
        }
        let Some(delay) = part.delays.next() else { return Decision::GiveUp };
        if !self.take_one() {
            return Decision::GiveUp;
        }
        part.made += 1;
        Decision::Retry(delay)
    }

    /// Takes one retry from the run's budget for a request made again for
    /// another reason than a failure (a straggler); false when it is spent.
    pub fn take_one(&self) -> bool {
        self.budget.fetch_update(Ordering::AcqRel, Ordering::Acquire, |b| b.checked_sub(1)).is_ok()
    }

    /// Whether the run's retry budget is spent.
    pub fn exhausted(&self) -> bool {
        self.budget.load(Ordering::Acquire) == 0
    }

    /// The error a request ends with once retrying stops: transient failures say
    /// how long s3load tried and what to change; others are returned as they are.
    pub fn gave_up(&self, err: Error, attempts: u32) -> Error {
        if !matches!(classify(&err), Class::Transient | Class::Throttled) {
            return err;
        }
        Error::GaveUp { attempts, budget_spent: self.exhausted(), source: Box::new(err) }
    }
}

/// Retry state of one request.
pub struct Attempts {
    delays: Box<dyn Iterator<Item = Duration> + Send>,
    /// Attempts made so far, counting the first.
    pub made: u32,
}

impl std::fmt::Debug for Attempts {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Attempts").field("made", &self.made).finish_non_exhaustive()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::error::StoreError;

    fn store_err(kind: StoreErrorKind) -> Error {
        Error::object("b", "k", None, StoreError::new(kind, "x"))
    }

    #[test]
    fn errors_are_classified_by_what_retrying_can_fix() {
        assert_eq!(classify(&store_err(StoreErrorKind::Throttled)), Class::Throttled);
        assert_eq!(classify(&store_err(StoreErrorKind::Network)), Class::Transient);
        assert_eq!(classify(&store_err(StoreErrorKind::ServerError)), Class::Transient);
        assert_eq!(classify(&store_err(StoreErrorKind::PreconditionFailed)), Class::ObjectChanged);
        assert_eq!(classify(&Error::Mismatch("x".into())), Class::Corrupt);
        for fatal in [StoreErrorKind::AccessDenied, StoreErrorKind::NoSuchKey, StoreErrorKind::InvalidRange] {
            assert_eq!(classify(&store_err(fatal)), Class::Fatal);
        }
        let io = Error::io("/x", "writing", std::io::Error::from(std::io::ErrorKind::StorageFull));
        assert_eq!(classify(&io), Class::Fatal);
        assert!(restarts_object(&store_err(StoreErrorKind::PreconditionFailed)));
        assert!(!restarts_object(&store_err(StoreErrorKind::Network)));
    }

    #[test]
    fn a_part_retries_at_most_retry_count_times_with_bounded_jittered_delays() {
        let policy = RetryPolicy::new(3, 100);
        let mut part = policy.attempts();
        let err = store_err(StoreErrorKind::Network);
        for _ in 0..3 {
            match policy.decide(&err, &mut part) {
                Decision::Retry(d) => assert!(d <= MAX_DELAY * 2, "{d:?}"),
                Decision::GiveUp => panic!("gave up early"),
            }
        }
        assert_eq!(policy.decide(&err, &mut part), Decision::GiveUp);
        assert_eq!(part.made, 4);
        assert_eq!(policy.decide(&store_err(StoreErrorKind::AccessDenied), &mut policy.attempts()), Decision::GiveUp);
    }

    #[test]
    fn the_run_budget_stops_a_storm() {
        let policy = RetryPolicy::new(10, 5);
        let err = store_err(StoreErrorKind::Throttled);
        let retried =
            (0..10).filter(|_| matches!(policy.decide(&err, &mut policy.attempts()), Decision::Retry(_))).count();
        assert_eq!(retried, 5);
        assert!(policy.exhausted());
    }
}
