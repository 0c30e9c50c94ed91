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

/// What the second signal writes before the process ends.
const SECOND: &str = "second signal: exiting at once, as a kill would; files being written stay under their \
                      temporary names (the next run resumes or removes them), a multipart upload in progress \
                      stays open until it is aborted or a lifecycle rule removes it, and a deletion batch in \
                      flight is not reported";

/// Ends the process at once on the second of SIGINT and SIGTERM counted in
/// `received` (the first stops the command in order), however soon it
/// comes: a user pressing Ctrl-C again while the stop waits on a store that
/// does not answer, or on a volume that does not (where the runtime's
/// threads may be stuck and the first signal's message not even printed).
/// What it leaves is what SIGKILL leaves, which the next run handles.
///
/// With `--summary-file`, a summary prepared now is written (`result`,
/// `exit_code`, `error`), so that no file of an earlier run is left there,
/// unless the run has begun writing its own: the process then ends with
/// that summary's code.
///
/// The action runs in the signal handler and only touches an atomic and
/// calls `open(2)`, `write(2)` (either may block: a stderr that is a full
/// pipe), `close(2)` and `_exit(2)`, all async-signal-safe; it allocates
/// nothing.
fn exit_on_second(
    sig: libc::c_int,
    code: u8,
    received: Arc<AtomicU8>,
    summary_file: Option<&std::path::Path>,
) -> Option<signal_hook_registry::SigId> {
    use std::os::unix::ffi::OsStrExt;
    let line = if logging::json_logs() {
        // No timestamp: it could not be formatted in the handler.
        format!("{}\n", serde_json::json!({"level": "WARN", "message": SECOND}))
    } else {
        format!("WARN {SECOND}\n")
    };
    let summary = summary_file.and_then(|p| std::ffi::CString::new(p.as_os_str().as_bytes()).ok()).map(|path| {
        let result = super::summary::result_name(code);
        let json = serde_json::json!({"result": result, "exit_code": code, "error": SECOND});
        (path, format!("{json}\n"))
    });
    let action = move || {
        if received.fetch_add(1, Ordering::SeqCst) >= 1 {
            // The summary is written by whoever claims it first; when the run
            // has, the process ends with the code its summary states.
            let claim = super::summary::CLAIMED | u16::from(code);
            let exit =
                match super::summary::SUMMARY_WRITER.compare_exchange(0, claim, Ordering::SeqCst, Ordering::SeqCst) {
                    Ok(_) => None,
                    Err(theirs) => Some((theirs & 0xff) as u8),
                };
            // SAFETY: `line` and `summary` live as long as the action, and
            // the registry frees an action only after the handlers running
            // it have returned (`unregister` swaps the table and waits), so
            // a stop dropped while a signal arrives is fine. `_exit` ends
            // every thread without running atexit handlers or destructors.
            #[allow(unsafe_code)]
            unsafe {
                if let (None, Some((path, body))) = (exit, &summary) {
                    let flags = libc::O_WRONLY | libc::O_CREAT | libc::O_TRUNC | libc::O_CLOEXEC | libc::O_NONBLOCK;
                    let fd = libc::open(path.as_ptr(), flags, 0o644 as libc::c_uint);
                    if fd >= 0 {
                        libc::write(fd, body.as_ptr().cast(), body.len());
                        libc::close(fd);
                    }
                }
                libc::write(2, line.as_ptr().cast(), line.len());
                libc::_exit(i32::from(exit.unwrap_or(code)));
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
    pub(super) fn watch(summary_file: Option<&std::path::Path>) -> Stop {
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
        // This stop's own count of both signals. Its actions are added after
        // tokio's handlers, so that a signal is never caught by them alone
        // (that would leave the first SIGTERM of a pod's stop unanswered);
        // one arriving between the two goes uncounted, and a third ends it.
        let received = Arc::new(AtomicU8::new(0));
        let second = match watcher {
            Some(_) => [(libc::SIGINT, exit_code::INTERRUPTED), (libc::SIGTERM, exit_code::TERMINATED)]
                .into_iter()
                .filter_map(|(sig, code)| exit_on_second(sig, code, received.clone(), summary_file))
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
        let stop = if watch { Stop::watch(cfg.summary_file.as_deref()) } else { Stop::unwatched() };
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
