//! Straggling ranges, requested again on a new connection.
//!
//! One slow connection among fast ones (a bad network path, a busy server
//! behind the load balancer) holds its range, and with it its object and the
//! run, long after the others are done. Every GET body that finishes reports
//! its rate here ([`Pace::finished`]); a body in flight is compared with the
//! median of the recent ones ([`Pace::claim`]). One slower than a quarter of
//! the median once it has had a second, or than a tenth of it once it has
//! had half a second, is dropped and the rest of its range requested again
//! from its first missing byte, on a new connection (a body dropped
//! unfinished takes its connection with it).
//!
//! The waits are fixed, not multiples of the range's expected time: the
//! ranges of a multipart MD5 object are as large as the uploader's parts (50
//! MiB from s5cmd, 2 s each on a busy link), so a multiple of that would
//! leave a straggler's range the last one of the run. A second is enough for
//! a connection's rate to settle; half a second tells a body ten times
//! slower than its peers (a range at 5 MB/s among ranges at 100 MB/s is
//! dropped after half a second, not a whole one). Judging every body that
//! early was measured to restart ranges that were not straggling
//! (docs/benchmarks.md).
//!
//! Bounded: nothing is judged before [`MIN_SAMPLES`] bodies have finished;
//! at most one range in [`SHARE`] started (plus one) is requested again; each
//! takes one retry from the run's budget.
//!
//! The slow body is dropped, not raced against the new request (as a hedged
//! request would be): one connection per range keeps the range's writes, and
//! its running hash, in byte order, and what the slow connection would still
//! have brought in is little by definition. A new request that is slow too is
//! judged in turn.

use std::collections::VecDeque;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

/// Finished bodies whose rates make the median.
const RECENT: usize = 64;
/// Finished bodies needed before any body is judged.
pub(super) const MIN_SAMPLES: usize = 8;
/// Bodies smaller than this tell the latency, not the rate: not counted.
const MIN_BODY: u64 = 256 << 10;
/// How many times slower than the median a straggler is.
const SLOWER: f64 = 4.0;
/// The least time a body is given before it is judged.
const MIN_WAIT: Duration = Duration::from_secs(1);
/// How many times slower than the median a body far behind is, judged
/// sooner ([`SOON`]).
const FAR_SLOWER: f64 = 10.0;
/// When a body [`FAR_SLOWER`] than the median is judged.
const SOON: Duration = Duration::from_millis(500);
/// At most one range in this many is requested again.
pub(super) const SHARE: u64 = 20;

/// The rates of a run's recent GET bodies, and its restarts of stragglers.
#[derive(Debug, Default)]
pub(super) struct Pace {
    /// Bytes per second of the last [`RECENT`] bodies that finished.
    recent: Mutex<VecDeque<f64>>,
    started: AtomicU64,
    restarted: AtomicU64,
}

/// A body judged straggling: its rate and the median, in bytes per second.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(super) struct Straggling {
    pub rate: f64,
    pub median: f64,
}

impl Pace {
    /// A GET body is started.
    pub fn started(&self) {
        self.started.fetch_add(1, Ordering::Relaxed);
    }

    /// A GET body of `bytes` finished `took` after its first byte.
    pub fn finished(&self, bytes: u64, took: Duration) {
        if bytes < MIN_BODY || took.is_zero() {
            return;
        }
        let mut recent = self.recent.lock().unwrap();
        if recent.len() == RECENT {
            recent.pop_front();
        }
        recent.push_back(bytes as f64 / took.as_secs_f64());
    }

    fn median(&self) -> Option<f64> {
        let recent = self.recent.lock().unwrap();
        if recent.len() < MIN_SAMPLES {
            return None;
        }
        let mut rates: Vec<f64> = recent.iter().copied().collect();
        rates.sort_by(f64::total_cmp);
        Some(rates[rates.len() / 2])
    }

    /// Whether a body that has brought `got` bytes `took` after its first
    /// byte is straggling and may be requested again, within the run's
    /// share of restarts. A `Some` takes one of the share ([`Pace::give_back`]
    /// returns it when the restart is not made).
    pub fn claim(&self, got: u64, took: Duration) -> Option<Straggling> {
        let median = self.median()?;
        let rate = got as f64 / took.as_secs_f64().max(f64::MIN_POSITIVE);
        if !behind(median, rate, took) {
            return None;
        }
        let share = 1 + self.started.load(Ordering::Relaxed) / SHARE;
        self.restarted.fetch_update(Ordering::AcqRel, Ordering::Acquire, |h| (h < share).then_some(h + 1)).ok()?;
        Some(Straggling { rate, median })
    }

    /// Returns a restart claimed but not made (the retry budget is spent).
    pub fn give_back(&self) {
        self.restarted.fetch_sub(1, Ordering::AcqRel);
    }

    /// Restarts claimed so far.
    #[cfg(test)]
    pub fn restarted(&self) -> u64 {
        self.restarted.load(Ordering::Relaxed)
    }
}

/// The rule: slower than the median by [`SLOWER`], after at least
/// [`MIN_WAIT`] (enough for a new connection's rate to settle); or by
/// [`FAR_SLOWER`], after [`SOON`].
fn behind(median: f64, rate: f64, took: Duration) -> bool {
    (took >= MIN_WAIT && rate * SLOWER < median) || (took >= SOON && rate * FAR_SLOWER < median)
}

#[cfg(test)]
mod tests {
    use super::*;

    const MB: u64 = 1_000_000;

    fn pace_with(rates_mb: &[u64]) -> Pace {
        let p = Pace::default();
        for &r in rates_mb {
            p.finished(r * MB, Duration::from_secs(1));
        }
        p
    }

    #[test]
    fn a_body_below_a_quarter_of_its_peers_after_a_second_is_straggling() {
        let median = 100.0 * MB as f64;
        assert!(behind(median, 20.0 * MB as f64, Duration::from_secs(1)));
        assert!(behind(median, 24.9 * MB as f64, Duration::from_secs(1)));
        assert!(!behind(median, 24.9 * MB as f64, Duration::from_millis(990)));
        // Not yet half a second, however slow.
        assert!(!behind(median, 1.0, Duration::from_millis(490)));
        // A quarter of the median or better is not a straggler, however long.
        assert!(!behind(median, 26.0 * MB as f64, Duration::from_secs(60)));
    }

    #[test]
    fn a_body_ten_times_slower_than_its_peers_is_straggling_after_half_a_second() {
        let median = 100.0 * MB as f64;
        // 5 MB/s among bodies at 100: judged at half a second.
        assert!(behind(median, 5.0 * MB as f64, Duration::from_millis(500)));
        assert!(!behind(median, 5.0 * MB as f64, Duration::from_millis(490)));
        // A fifth of the median, or a tenth exactly, waits for the whole second.
        assert!(!behind(median, 20.0 * MB as f64, Duration::from_millis(900)));
        assert!(!behind(median, 10.0 * MB as f64, Duration::from_millis(900)));
        assert!(behind(median, 10.0 * MB as f64, Duration::from_secs(1)));
        // Below a tenth: half a second.
        assert!(behind(median, 9.9 * MB as f64, Duration::from_millis(500)));
    }

    #[test]
    fn nothing_is_judged_before_enough_bodies_finished_and_small_ones_do_not_count() {
        let p = pace_with(&[100; MIN_SAMPLES - 1]);
        p.finished(100 << 10, Duration::from_millis(1)); // 100 KiB: latency, not rate
        assert_eq!(p.claim(MB, Duration::from_secs(10)), None);
        p.finished(100 * MB, Duration::from_secs(1));
        let s = p.claim(MB, Duration::from_secs(10)).expect("straggling");
        assert_eq!(s.median, 100.0 * MB as f64);
        assert_eq!(s.rate, 0.1 * MB as f64);
    }

    #[test]
    fn restarts_are_bounded_to_one_in_twenty_ranges_plus_one() {
        let p = pace_with(&[100; MIN_SAMPLES]);
        for _ in 0..40 {
            p.started();
        }
        let slow = || p.claim(MB, Duration::from_secs(10));
        let taken = (0..10).filter(|_| slow().is_some()).count() as u64;
        assert_eq!(taken, 1 + 40 / SHARE);
        assert_eq!(p.restarted(), taken);
        // One given back (the retry budget was spent) can be claimed again.
        p.give_back();
        assert!(slow().is_some());
        assert!(slow().is_none());
        // A run where every body is slow has no stragglers: the median is slow too.
        let all_slow = pace_with(&[1; MIN_SAMPLES]);
        assert_eq!(all_slow.claim(10 * MB, Duration::from_secs(10)), None);
    }
}
