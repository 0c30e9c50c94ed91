//! What a command that talks to the store holds from its start to its exit
//! code: the signal watcher (one stop token for the whole command: listing,
//! planning, transfers, deletions) and the run's requests (the one loop,
//! its limiter and budget), and the store it connects to through them.

use std::sync::Arc;
use std::sync::atomic::{AtomicU8, Ordering};

use tokio_util::sync::CancellationToken;
use tokio_util::task::AbortOnDropHandle;

use super::connect::Connect;
use crate::config::Config;
use crate::error::{Error, exit_code};
use crate::logging;
use crate::transfer::{Looped, Requests, Timeouts};

/// A command's stop: cancelled on SIGINT or SIGTERM, from the moment the
/// command starts. What runs then ends at its next request, wait or step;
/// the command reports what was done and exits 130 or 143. A second signal
/// ends the process at once ([`exit_on_second`]).
pub(super) struct Stop {
    token: CancellationToken,
    /// 0, or the signal that arrived (2 or 15).
    which: Arc<AtomicU8>,
    _watcher: Option<AbortOnDropHandle<()>>,
    /// The second-signal actions, removed when the stop is dropped.
    second: Vec<signal_hook_registry::SigId>,
}

impl Drop for Stop {
    fn drop(&mut self) {
        for id in self.second.drain(..) {
            signal_hook_registry::unregister(id);
        }
    }
}

/// Signals received while a stop is watched, SIGINT and SIGTERM together.
static RECEIVED: AtomicU8 = AtomicU8::new(0);

/// What the second signal writes before the process ends.
const SECOND: &str = "second signal: exiting at once, as a kill would; files being written stay under their \
                      temporary names (the next run resumes or removes them), and a multipart upload in progress \
                      stays open until it is aborted or a lifecycle rule removes it";

/// Ends the process at once on the second of SIGINT and SIGTERM (the first
/// stops the command in order): a user pressing Ctrl-C again while the stop
/// waits on a store that does not answer, or on a filesystem that does not
/// (a frozen or lost network volume, where the runtime's threads are stuck
/// and the first signal's message is not even printed). What it leaves is
/// what SIGKILL leaves, which the next run handles. Runs in the signal
/// handler: an atomic, `write(2)` and `_exit(2)` only, all async-signal-safe.
fn exit_on_second(sig: libc::c_int, code: u8) -> Option<signal_hook_registry::SigId> {
    let line = if logging::json_logs() {
        format!("{}\n", serde_json::json!({"level": "WARN", "message": SECOND}))
    } else {
        format!("WARN {SECOND}\n")
    };
    let action = move || {
        if RECEIVED.fetch_add(1, Ordering::SeqCst) >= 1 {
            // SAFETY: `line` is owned by the action and outlives the call;
            // both calls are async-signal-safe and neither allocates.
            #[allow(unsafe_code)]
            unsafe {
                libc::write(2, line.as_ptr().cast(), line.len());
                libc::_exit(i32::from(code));
            }
        }
    };
    // SAFETY: the action is async-signal-safe (above).
    #[allow(unsafe_code)]
    let id = unsafe { signal_hook_registry::register(sig, action) };
    id.ok()
}

impl Stop {
    /// Watches SIGINT and SIGTERM from now on (their handlers are in place
    /// when this returns).
    pub(super) fn watch() -> Stop {
        use tokio::signal::unix::{SignalKind, signal};
        let token = CancellationToken::new();
        let which = Arc::new(AtomicU8::new(0));
        let watcher = match (signal(SignalKind::interrupt()), signal(SignalKind::terminate())) {
            (Ok(mut int), Ok(mut term)) => {
                let (token, which) = (token.clone(), which.clone());
                Some(AbortOnDropHandle::new(tokio::spawn(async move {
                    let sig = tokio::select! {
                        _ = int.recv() => 2,
                        _ = term.recv() => 15,
                    };
                    tracing::warn!("signal received: stopping (a second one exits at once)");
                    which.store(sig, Ordering::Relaxed);
                    token.cancel();
                })))
            }
            _ => None,
        };
        RECEIVED.store(0, Ordering::SeqCst);
        let second = match watcher {
            Some(_) => [(libc::SIGINT, exit_code::INTERRUPTED), (libc::SIGTERM, exit_code::TERMINATED)]
                .into_iter()
                .filter_map(|(sig, code)| exit_on_second(sig, code))
                .collect(),
            None => Vec::new(),
        };
        Stop { token, which, _watcher: watcher, second }
    }

    /// `fut`, unless the command is stopped first: for waits on other runs
    /// (their locks on the destination), which a signal must end too.
    /// `what` names the wait in the interruption's message.
    pub(super) async fn unless_stopped<T>(&self, what: &str, fut: impl Future<Output = T>) -> Result<T, Error> {
        tokio::select! {
            r = fut => Ok(r),
            () = self.token.cancelled() => Err(Error::Interrupted(what.to_string())),
        }
    }

    /// A stop no signal cancels: signals keep their default action.
    pub(super) fn unwatched() -> Stop {
        Stop { token: CancellationToken::new(), which: Arc::new(AtomicU8::new(0)), _watcher: None, second: Vec::new() }
    }

    pub(super) fn token(&self) -> &CancellationToken {
        &self.token
    }

    pub(super) fn is_stopped(&self) -> bool {
        self.token.is_cancelled()
    }

    /// Says that the command was stopped by a signal and returns its exit
    /// code
    /// (`transfers`: whether it ended in the transfers' driver, rather
    /// than before it, listing or planning);
    /// `None` when no signal arrived.
    pub(super) fn report(&self, transfers: bool) -> Option<u8> {
        match self.which.load(Ordering::Relaxed) {
            0 => None,
            sig => {
                let text = match transfers {
                    true => {
                        "stopped by a signal: run again to finish (a download resumes large objects from their \
                         finished parts)"
                    }
                    false => "stopped by a signal: run again",
                };
                logging::stderr_line("WARN", text, serde_json::Value::Null);
                Some(if sig == 2 { exit_code::INTERRUPTED } else { exit_code::TERMINATED })
            }
        }
    }
}

/// A command's stop, its run's requests, and where its store comes from.
pub(super) struct Session<'a> {
    stores: &'a dyn Connect,
    pub stop: Stop,
    requests: Arc<Requests>,
}

impl<'a> Session<'a> {
    /// From the command's start: signals are watched, requests bounded by
    /// `cfg`'s settings.
    /// `watch`: whether signals stop the command (cp, sync) or keep their
    /// default action (ls, cat: they write only to stdout, and a blocked
    /// write to a slow reader could not notice a stop; ended by the signal
    /// at once, as any Unix filter is).
    pub(super) fn start(cfg: &Config, stores: &'a dyn Connect, watch: bool) -> Session<'a> {
        let stop = if watch { Stop::watch() } else { Stop::unwatched() };
        let timeouts = Timeouts { attempt: cfg.s3.request_timeout, deadline: cfg.s3.request_deadline };
        let requests = Requests::new(&cfg.engine, timeouts, stop.token().clone());
        Session { stores, stop, requests }
    }

    /// The store holding `bucket` (`None`: listing buckets), every request
    /// without a body through the run's loop.
    pub(super) async fn connect(&self, cfg: &Config, bucket: Option<&str>) -> Result<Arc<Looped>, Error> {
        let raw = self.stores.connect(cfg, bucket, &self.requests).await?;
        Ok(Looped::new(raw, self.requests.clone()))
    }
}
