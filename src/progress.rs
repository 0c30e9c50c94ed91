//! Progress: what the engine reports, and how it is shown.
//!
//! The engine only knows its `transfer::Reporter` trait; the run driver
//! bridges it to [`Progress`], which turns the counts into
//! an indicatif bar when stderr is a terminal, or into one plain log line every few
//! seconds when it is not (a pod's log). Progress never goes to stdout.

use std::io::IsTerminal;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use std::collections::HashMap;
use std::sync::Mutex;

use indicatif::{MultiProgress, ProgressBar, ProgressDrawTarget, ProgressStyle};

/// How progress is shown (`--progress`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum ProgressMode {
    /// A bar on a terminal, log lines otherwise.
    #[default]
    Auto,
    Bar,
    Log,
    Off,
}

#[derive(Debug, Default)]
pub struct Counters {
    pub bytes: AtomicU64,
    pub objects: AtomicU64,
    pub failed: AtomicU64,
}

/// Objects shown with a bar of their own under the total, on a terminal.
const OBJECT_BARS: usize = 3;
/// Objects smaller than this finish too fast for a bar of their own.
const OBJECT_BAR_MIN: u64 = 64 << 20;

/// Objects in flight: name -> (bytes done, size).
type InFlight = HashMap<String, (u64, u64)>;

/// A running progress display.
pub struct Progress {
    pub counters: Arc<Counters>,
    bar: Option<ProgressBar>,
    ticker: Option<tokio::task::JoinHandle<()>>,
    started: Instant,
    /// Large objects in flight, for their bars (terminal only).
    in_flight: Arc<Mutex<InFlight>>,
    /// The total bar and the objects' bars.
    multi: Option<MultiProgress>,
}

impl std::fmt::Debug for Progress {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Progress").field("counters", &self.counters).finish_non_exhaustive()
    }
}

/// The `n` largest objects in flight, largest first (ties by name).
pub fn largest(in_flight: &InFlight, n: usize) -> Vec<(String, u64, u64)> {
    let mut v: Vec<(String, u64, u64)> = in_flight.iter().map(|(k, &(d, s))| (k.clone(), d, s)).collect();
    v.sort_by(|a, b| b.2.cmp(&a.2).then_with(|| a.0.cmp(&b.0)));
    v.truncate(n);
    v
}

/// Keeps one bar per object among the largest in flight, under the total bar,
/// refreshed four times a second (bars come and go without redrawing the rest).
fn object_bars(
    multi: MultiProgress,
    total: ProgressBar,
    in_flight: Arc<Mutex<InFlight>>,
) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        let style = ProgressStyle::with_template("  {bar:24} {bytes:>10}/{total_bytes:10} {wide_msg}")
            .unwrap_or_else(|_| ProgressStyle::default_bar());
        let mut shown: Vec<(String, ProgressBar)> = Vec::new();
        let mut tick = tokio::time::interval(Duration::from_millis(250));
        loop {
            tick.tick().await;
            let want = largest(&in_flight.lock().unwrap(), OBJECT_BARS);
            shown.retain(|(name, bar)| {
                let keep = want.iter().any(|(w, _, _)| w == name);
                if !keep {
                    bar.finish_and_clear();
                    multi.remove(bar);
                }
                keep
            });
            for (name, done, size) in want {
                match shown.iter().find(|(n, _)| *n == name) {
                    Some((_, bar)) => bar.set_position(done),
                    None => {
                        let bar = multi.insert_after(&total, ProgressBar::new(size));
                        bar.set_style(style.clone());
                        bar.set_message(name.clone());
                        bar.set_position(done);
                        shown.push((name, bar));
                    }
                }
            }
        }
    })
}

impl Progress {
    /// Starts the display. `json`: progress lines as JSON objects (`--log-format json`).
    /// `interval`: between progress lines when they are lines (not a bar).
    pub fn start(mode: ProgressMode, json: bool, interval: Duration, total_objects: u64, total_bytes: u64) -> Progress {
        let counters = Arc::new(Counters::default());
        let started = Instant::now();
        let mode = match mode {
            // A terminal that cannot redraw (TERM unset or dumb) gets lines:
            // indicatif would draw nothing there.
            ProgressMode::Auto
                if std::io::stderr().is_terminal()
                    && std::env::var("TERM").is_ok_and(|t| !t.is_empty() && t != "dumb") =>
            {
                ProgressMode::Bar
            }
            ProgressMode::Auto => ProgressMode::Log,
            m => m,
        };
        let in_flight: Arc<Mutex<InFlight>> = Arc::default();
        let mut multi_out = None;
        let (bar, ticker) = match mode {
            ProgressMode::Bar => {
                let multi = MultiProgress::with_draw_target(ProgressDrawTarget::stderr_with_hz(4));
                let bar = multi.add(ProgressBar::new(total_bytes));
                bar.set_style(
                    ProgressStyle::with_template(
                        "{bar:30} {bytes}/{total_bytes} {binary_bytes_per_sec} eta {eta} {msg}",
                    )
                    .unwrap_or_else(|_| ProgressStyle::default_bar()),
                );
                let ticker = object_bars(multi.clone(), bar.clone(), in_flight.clone());
                multi_out = Some(multi);
                (Some(bar), Some(ticker))
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
                        // One route for every line on stderr: the same shape
                        // as any log line in JSON, the sentence in text.
                        let fields = serde_json::json!({
                            "bytes_done": done,
                            "bytes_total": total_bytes,
                            "objects_done": c.objects.load(Ordering::Relaxed),
                            "objects_total": total_objects,
                            "objects_failed": c.failed.load(Ordering::Relaxed),
                            "bytes_per_second": rate as u64,
                        });
                        let text = match json {
                            true => "progress".to_string(),
                            false => format!(
                                "progress: {} / {} ({:.0}%), {} / {} objects, {}/s",
                                human_bytes(done),
                                human_bytes(total_bytes),
                                if total_bytes == 0 { 100.0 } else { done as f64 * 100.0 / total_bytes as f64 },
                                c.objects.load(Ordering::Relaxed),
                                total_objects,
                                human_bytes(rate as u64)
                            ),
                        };
                        crate::logging::stderr_line("INFO", &text, fields);
                    }
                });
                (None, Some(ticker))
            }
            _ => (None, None),
        };
        Progress { counters, bar, ticker, started, in_flight, multi: multi_out }
    }

    /// `n` more bytes of the object `name` of `size` bytes (for its own bar).
    pub fn object_bytes(&self, name: &str, size: u64, n: u64) {
        self.add_bytes(n);
        if self.bar.is_some() && size >= OBJECT_BAR_MIN {
            let mut m = self.in_flight.lock().unwrap();
            let e = m.entry(name.to_string()).or_insert((0, size));
            e.0 = (e.0 + n).min(size);
        }
    }

    /// `n` bytes of `name` thrown away.
    pub fn object_discarded(&self, name: &str, n: u64) {
        self.sub_bytes(n);
        if let Some(e) = self.in_flight.lock().unwrap().get_mut(name) {
            e.0 = e.0.saturating_sub(n);
        }
    }

    /// `name` is finished (done or failed): its bar goes.
    pub fn object_finished(&self, name: &str, ok: bool) {
        self.in_flight.lock().unwrap().remove(name);
        self.object_done(ok);
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
        match &self.multi {
            Some(m) => m.suspend(f),
            None => f(),
        }
    }

    pub fn elapsed(&self) -> Duration {
        self.started.elapsed()
    }

    pub fn finish(&self) {
        if let Some(t) = &self.ticker {
            t.abort();
        }
        if let Some(b) = &self.bar {
            b.finish_and_clear();
        }
        if let Some(m) = &self.multi {
            let _ = m.clear();
        }
    }
}

pub use crate::units::human_bytes;

/// The peak resident memory of this process so far, in KiB (`VmHWM` in
/// `/proc/self/status`); `None` where the kernel does not say.
pub fn peak_rss_kib() -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find_map(|l| l.strip_prefix("VmHWM:"))?;
    line.trim().trim_end_matches("kB").trim().parse().ok()
}

#[cfg(test)]
mod tests {
    use super::{InFlight, largest};

    #[test]
    fn the_largest_objects_in_flight_get_the_bars() {
        let mut m = InFlight::new();
        m.insert("small".into(), (1, 100));
        m.insert("huge".into(), (5, 1000));
        m.insert("big-b".into(), (0, 500));
        m.insert("big-a".into(), (0, 500));
        let names: Vec<String> = largest(&m, 3).into_iter().map(|(n, _, _)| n).collect();
        assert_eq!(names, vec!["huge", "big-a", "big-b"]);
    }
}
