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
/// the command reports what was done and exits 130 or 143.
pub(super) struct Stop {
    token: CancellationToken,
    /// 0, or the signal that arrived (2 or 15).
    which: Arc<AtomicU8>,
    _watcher: Option<AbortOnDropHandle<()>>,
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
                    tracing::warn!("signal received: stopping");
                    which.store(sig, Ordering::Relaxed);
                    token.cancel();
                })))
            }
            _ => None,
        };
        Stop { token, which, _watcher: watcher }
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
        Stop { token: CancellationToken::new(), which: Arc::new(AtomicU8::new(0)), _watcher: None }
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
