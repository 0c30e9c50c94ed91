//! Typed errors and the exit codes they map to.
//!
//! Store errors carry a [`StoreErrorKind`] that the retry policy and the
//! user-facing message both read; every error that reaches the user names the
//! object or path it concerns and, where one exists, what to do about it.

use std::ops::Range;
use std::path::PathBuf;

/// Exit codes, documented in `docs/configuration.md`.
pub mod exit_code {
    /// Everything requested was done.
    pub const SUCCESS: u8 = 0;
    /// The run went ahead but at least one object failed.
    pub const PARTIAL_FAILURE: u8 = 1;
    /// Bad command line: unknown flag, malformed URL (clap also uses 2).
    pub const USAGE: u8 = 2;
    /// Nothing could be done: no credentials, endpoint unreachable, bucket missing
    /// or not readable, source matched nothing, not enough space.
    pub const SETUP: u8 = 3;
    /// Stopped by SIGINT (128 + 2, as shells report it).
    pub const INTERRUPTED: u8 = 130;
    /// The reader of stdout went away (128 + SIGPIPE, what a shell shows for
    /// a `cat` killed by a closed pipe): `s3load ls | head`, quietly.
    pub const CLOSED_PIPE: u8 = 141;
    /// Stopped by SIGTERM (128 + 15), e.g. a pod being deleted.
    pub const TERMINATED: u8 = 143;
}

/// What went wrong talking to the object store, as far as retry and reporting care.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StoreErrorKind {
    NoSuchBucket,
    NoSuchKey,
    AccessDenied,
    /// If-Match did not hold: the object changed.
    PreconditionFailed,
    InvalidRange,
    /// 503 SlowDown and friends.
    Throttled,
    /// 5xx other than throttling.
    ServerError,
    /// Connect failure, timeout, reset, broken or short body.
    Network,
    /// No credentials could be loaded.
    Credentials,
    /// The store refused an upload whose bytes did not match the checksum sent
    /// (BadDigest): corrupted on the way, or the file changed.
    BadDigest,
    /// The multipart upload id is unknown: completed or aborted already.
    NoSuchUpload,
    /// The run was stopped (a signal) before the request was answered.
    Stopped,
    /// Anything else (4xx we do not expect, malformed response).
    Other,
}

/// An error from the object store, with enough context to name the object.
#[derive(Debug, thiserror::Error)]
#[error("{message}")]
pub struct StoreError {
    pub kind: StoreErrorKind,
    pub message: String,
}

impl StoreError {
    pub fn new(kind: StoreErrorKind, message: impl Into<String>) -> Self {
        StoreError { kind, message: message.into() }
    }
}

/// What a store error concerns.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Context {
    /// One object, or a byte range of it (end exclusive).
    Object { bucket: String, key: String, range: Option<Range<u64>> },
    /// Anything else ("listing s3://b/p/", "connecting to S3").
    Operation(String),
}

impl std::fmt::Display for Context {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Context::Object { bucket, key, range: None } => write!(f, "s3://{bucket}/{key}"),
            Context::Object { bucket, key, range: Some(r) } => {
                write!(f, "s3://{bucket}/{key} bytes {}-{}", r.start, r.end.saturating_sub(1))
            }
            Context::Operation(what) => f.write_str(what),
        }
    }
}

/// A failure of one object (or the whole run), ready to show to the user.
/// The variants and their fields are for code to decide on; the text is for
/// display only.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("{0}")]
    Usage(String),
    #[error("{context}: {source}{}", hint_suffix(.source.kind))]
    Store {
        context: Context,
        #[source]
        source: StoreError,
    },
    /// A request that failed transiently until its retries (or the run's
    /// budget) ran out; `source` is its last failure.
    #[error("{source} ({})", gave_up_text(*.attempts, *.budget_spent))]
    GaveUp {
        attempts: u32,
        /// The run's retry budget ran out (rather than this request's).
        budget_spent: bool,
        #[source]
        source: Box<Error>,
    },
    /// An invariant of s3load itself did not hold (a bug); the object fails.
    #[error("internal error: {0}")]
    Internal(String),
    #[error("{path}: {action}: {source}{}", io_hint(source))]
    Io {
        path: PathBuf,
        action: &'static str,
        #[source]
        source: std::io::Error,
    },
    /// s3load will not go on: a planted link, a key that cannot be a file,
    /// nothing matched, a run that does not fit the recorded one...
    #[error(transparent)]
    Refused(#[from] crate::refusal::Refusal),
    /// A failure after output was written that cannot be taken back (`cat`),
    /// with what to do about the output.
    #[error("{source}{advice}")]
    AfterOutput {
        #[source]
        source: Box<Error>,
        advice: &'static str,
    },
    /// The response broke the protocol (ignored Range, more bytes than promised).
    #[error("{0}")]
    Integrity(String),
    /// The bytes received do not match the checksum the store states.
    #[error("{0}")]
    Mismatch(String),
    /// `--verify require` and no checksum could be checked.
    #[error("{0}")]
    Unverified(String),
    /// The run was stopped by a signal before this (an object, a listing, a
    /// wait for another run's lock) finished.
    #[error("{0}: interrupted")]
    Interrupted(String),
    /// Standard output's reader went away: the command ends quietly, 141.
    #[error("stdout: the reader closed the pipe")]
    ClosedPipe,
}

fn io_hint(e: &std::io::Error) -> &'static str {
    if e.raw_os_error() == Some(libc::EMFILE) {
        return " (this process may open no more files: raise its hard limit, `ulimit -Hn`, or lower --numworkers)";
    }
    match e.kind() {
        std::io::ErrorKind::StorageFull => {
            " (the destination's filesystem is full: free space or choose another destination)"
        }
        std::io::ErrorKind::PermissionDenied | std::io::ErrorKind::ReadOnlyFilesystem => {
            " (the destination is not writable by this user)"
        }
        _ => "",
    }
}

/// How a request that failed transiently gave up, and what to change.
pub(crate) fn gave_up_text(attempts: u32, budget_spent: bool) -> String {
    let hint = if budget_spent {
        "the run's retry budget is spent: the store or network is failing persistently"
    } else {
        "raise --retry-count (and, for listings, HEADs and deletions, --request-deadline) to try longer"
    };
    format!("gave up after {attempts} attempts; {hint}")
}

fn hint_suffix(kind: StoreErrorKind) -> &'static str {
    match kind {
        StoreErrorKind::NoSuchBucket => " (check the bucket name and --region/--endpoint-url)",
        StoreErrorKind::NoSuchKey => " (check the key; `s3load ls` shows what is there)",
        StoreErrorKind::AccessDenied => {
            " (the credentials in use lack permission: check the IAM policy for this bucket and prefix)"
        }
        StoreErrorKind::Credentials => {
            " (set AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY, AWS_PROFILE, or run where IRSA/Pod Identity is configured; use --no-sign-request for public buckets)"
        }
        StoreErrorKind::Network => " (check --endpoint-url and network access)",
        _ => "",
    }
}

impl Error {
    /// A store error in an operation that is not about one object.
    /// A request the run's stop ended is the run's interruption.
    pub fn store(operation: impl Into<String>, source: StoreError) -> Self {
        Error::from_store(Context::Operation(operation.into()), source)
    }

    /// A store error about one object, or a byte range of it.
    pub fn object(bucket: &str, key: &str, range: Option<Range<u64>>, source: StoreError) -> Self {
        Error::from_store(Context::Object { bucket: bucket.into(), key: key.into(), range }, source)
    }

    fn from_store(context: Context, source: StoreError) -> Self {
        match source.kind {
            StoreErrorKind::Stopped => Error::Interrupted(context.to_string()),
            _ => Error::Store { context, source },
        }
    }

    pub fn io(path: impl Into<PathBuf>, action: &'static str, source: std::io::Error) -> Self {
        Error::Io { path: path.into(), action, source }
    }

    /// The store error kind, if this error came from the store (also after
    /// retries gave up: access denied stays access denied).
    pub fn store_kind(&self) -> Option<StoreErrorKind> {
        match self {
            Error::Store { source, .. } => Some(source.kind),
            Error::GaveUp { source, .. } => source.store_kind(),
            _ => None,
        }
    }

    /// Exit code when this error stops the whole run before any object is tried.
    pub fn setup_exit_code(&self) -> u8 {
        match self {
            Error::Usage(_) => exit_code::USAGE,
            Error::ClosedPipe => exit_code::CLOSED_PIPE,
            _ => exit_code::SETUP,
        }
    }
}

pub type Result<T, E = Error> = std::result::Result<T, E>;
