//! Progress: what the engine reports, and how it is shown.
//!
//! The engine only knows the [`Reporter`] trait. [`Progress`] turns the counts into
//! an indicatif bar when stderr is a terminal, or into one plain log line every few
//! seconds when it is not (a pod's log). Progress never goes to stdout.

use std::io::IsTerminal;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};

use crate::transfer::{Download, Outcome};

/// What the engine tells whoever watches it.
pub trait Reporter: Send + Sync {
    /// `n` more bytes are written to disk.
    fn bytes(&self, n: u64);
    /// `n` bytes already reported were thrown away (a failed or restarted object).
    fn discarded(&self, n: u64);
    /// An object is finished, committed or failed. Called once per object.
    fn object_done(&self, job: &Download, outcome: &Outcome);
}

/// How progress is shown (`--progress`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, clap::ValueEnum)]
pub enum ProgressMode {
    /// A bar on a terminal, log lines otherwise.
    #[default]
    Auto,
    Bar,
    Log,
    Off,
}

#[derive(Default)]
pub struct Counters {
    pub bytes: AtomicU64,
    pub objects: AtomicU64,
    pub failed: AtomicU64,
}

/// A running progress display.
pub struct Progress {
    pub counters: Arc<Counters>,
    bar: Option<ProgressBar>,
    ticker: Option<tokio::task::JoinHandle<()>>,
    started: Instant,
}

impl Progress {
    /// Starts the display. `json`: progress lines as JSON objects (`--log-format json`).
    /// `interval`: between progress lines when they are lines (not a bar).
    pub fn start(mode: ProgressMode, json: bool, interval: Duration, total_objects: u64, total_bytes: u64) -> Progress {
        let counters = Arc::new(Counters::default());
        let started = Instant::now();
        let mode = match mode {
            ProgressMode::Auto if std::io::stderr().is_terminal() => ProgressMode::Bar,
            ProgressMode::Auto => ProgressMode::Log,
            m => m,
        };
        let (bar, ticker) = match mode {
            ProgressMode::Bar => {
                let bar = ProgressBar::with_draw_target(Some(total_bytes), ProgressDrawTarget::stderr_with_hz(4));
                bar.set_style(
                    ProgressStyle::with_template(
                        "{bar:30} {bytes}/{total_bytes} {binary_bytes_per_sec} eta {eta} {msg}",
                    )
                    .unwrap_or_else(|_| ProgressStyle::default_bar()),
                );
                (Some(bar), None)
            }
            ProgressMode::Log => {
                let c = counters.clone();
                let ticker = tokio::spawn(async move {
                    let mut last = 0u64;
                    let mut tick = tokio::time::interval(interval);
                    tick.tick().await;
                    loop {
                        tick.tick().await;
                        let done = c.bytes.load(Ordering::Relaxed);
                        let rate = done.saturating_sub(last) as f64 / interval.as_secs_f64();
                        last = done;
                        if json {
                            let line = serde_json::json!({
                                "timestamp": humantime::format_rfc3339_millis(std::time::SystemTime::now()).to_string(),
                                "level": "INFO",
                                "message": "progress",
                                "bytes_done": done,
                                "bytes_total": total_bytes,
                                "objects_done": c.objects.load(Ordering::Relaxed),
                                "objects_total": total_objects,
                                "objects_failed": c.failed.load(Ordering::Relaxed),
                                "bytes_per_second": rate as u64,
                            });
                            eprintln!("{line}");
                            continue;
                        }
                        eprintln!(
                            "progress: {} / {} ({:.0}%), {} / {} objects, {}/s",
                            human_bytes(done),
                            human_bytes(total_bytes),
                            if total_bytes == 0 { 100.0 } else { done as f64 * 100.0 / total_bytes as f64 },
                            c.objects.load(Ordering::Relaxed),
                            total_objects,
                            human_bytes(rate as u64)
                        );
                    }
                });
                (None, Some(ticker))
            }
            _ => (None, None),
        };
        Progress { counters, bar, ticker, started }
    }

    pub fn add_bytes(&self, n: u64) {
        self.counters.bytes.fetch_add(n, Ordering::Relaxed);
        if let Some(b) = &self.bar {
            b.inc(n);
        }
    }

    pub fn sub_bytes(&self, n: u64) {
        self.counters.bytes.fetch_sub(n, Ordering::Relaxed);
        if let Some(b) = &self.bar {
            b.set_position(b.position().saturating_sub(n));
        }
    }

    pub fn object_done(&self, ok: bool) {
        self.counters.objects.fetch_add(1, Ordering::Relaxed);
        if !ok {
            self.counters.failed.fetch_add(1, Ordering::Relaxed);
        }
        if let Some(b) = &self.bar {
            b.set_message(format!("{} objects", self.counters.objects.load(Ordering::Relaxed)));
        }
    }

    /// Runs `f` (which writes to stderr) without tearing the bar.
    pub fn suspend<R>(&self, f: impl FnOnce() -> R) -> R {
        match &self.bar {
            Some(b) => b.suspend(f),
            None => f(),
        }
    }

    pub fn elapsed(&self) -> Duration {
        self.started.elapsed()
    }

    pub fn finish(&self) {
        if let Some(b) = &self.bar {
            b.finish_and_clear();
        }
        if let Some(t) = &self.ticker {
            t.abort();
        }
    }
}

/// `1.5 GiB`, `12.0 MiB`, `512 B`.
pub fn human_bytes(n: u64) -> String {
    const UNITS: [&str; 5] = ["B", "KiB", "MiB", "GiB", "TiB"];
    let mut v = n as f64;
    let mut u = 0;
    while v >= 1024.0 && u < UNITS.len() - 1 {
        v /= 1024.0;
        u += 1;
    }
    if u == 0 { format!("{n} B") } else { format!("{v:.1} {}", UNITS[u]) }
}

#[cfg(test)]
mod tests {
    use super::human_bytes;

    #[test]
    fn human_bytes_uses_binary_units() {
        assert_eq!(human_bytes(512), "512 B");
        assert_eq!(human_bytes(1536), "1.5 KiB");
        assert_eq!(human_bytes(4 << 30), "4.0 GiB");
    }
}
