//! Request concurrency: how many requests are in flight at once, sized to the
//! link and lowered while the store throttles.
//!
//! Each request (for downloads, each worker taking a part) holds a permit
//! from this limiter. Two controls set how many there are:
//!
//! - **Sized to the link** (unless `--numworkers` pins the count): the limit
//!   starts at [`START`] and doubles while doubling it raises the aggregate
//!   rate by at least [`GAIN`], measured over [`WINDOW`]s of bytes moved, up to
//!   the ceiling and within the memory bound (`--max-memory`, see
//!   [`MemoryBound`]). A trial that the ceiling or the bound cut short of a
//!   doubling needs a share of [`GAIN`] as large as its share of a doubling,
//!   but at least [`LEAST_GAIN`], above the noise of a CPU-bound run. A trial
//!   that brings less goes back to the level before,
//!   which is held, and tried again after at least [`HOLD`] measured windows: a link that got
//!   faster is found again, a CPU-bound run stays where extra connections only
//!   cost memory. A window counts only when some request had to wait for a
//!   permit: when the work in hand needs fewer requests than the limit, the
//!   limit is not what holds the rate, and nothing is learnt.
//! - **Throttling**: a 503 SlowDown or 429 halves the limit, at most once per
//!   [`COOLDOWN`] so that one burst of failures from requests already in
//!   flight counts as one signal; every `limit` successful requests in a row
//!   raise it by one, back up to the level the link tuning chose (additive
//!   increase, multiplicative decrease, as TCP does). While throttled, the link
//!   tuning waits.

use std::pin::pin;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use tokio::sync::Notify;

use super::memory::MemoryBound;

/// Minimum time between two cuts of the limit.
const COOLDOWN: Duration = Duration::from_secs(1);
use super::settings::START_REQUESTS as START;
/// The rate is measured over windows this long.
const WINDOW: Duration = Duration::from_millis(500);
/// A doubling is kept when it raises the rate by at least this fraction.
const GAIN: f64 = 0.15;
/// The least gain that keeps a trial short of a doubling: a smaller one is
/// within the noise of a run the link does not bound.
const LEAST_GAIN: f64 = 0.05;
/// Windows a level is held before doubling it is tried again (10 s).
const HOLD: u32 = 20;

#[derive(Debug)]
struct State {
    limit: usize,
    in_flight: usize,
    successes: usize,
    last_cut: Option<Instant>,
    /// The level the limit grows back to after throttling: the link tuning's
    /// choice, or the pinned count.
    level: usize,
    /// Some request waited for a permit in this window.
    waited: bool,
    /// Requests waiting for a permit now.
    waiting: usize,
    tune: Option<Tune>,
}

/// The link tuning's state (see the module's documentation).
#[derive(Debug)]
struct Tune {
    ceiling: usize,
    /// Room for more requests in memory, checked before each trial.
    memory: Option<MemoryBound>,
    /// The window that ends next is not measured: the level just changed and
    /// connections are still opening.
    skip: bool,
    /// The current level, on trial, is a larger count than this one: a
    /// doubling, or less where the ceiling or the memory bound cut it.
    trial_of: Option<usize>,
    /// Rate measured at the level before the trial (bytes per second).
    base: f64,
    /// Windows left before the next trial.
    hold: u32,
    /// A level has been reported as settled.
    reported: bool,
}

#[derive(Debug)]
pub struct Limiter {
    state: Mutex<State>,
    released: Notify,
    /// Whether the link tuning runs (the count is not pinned).
    tuned: bool,
    /// Bytes moved in the current window.
    bytes: AtomicU64,
    /// When the current window ends, in nanoseconds after `epoch`.
    window_end: AtomicU64,
    /// When the current window started.
    window_start: Mutex<Option<Instant>>,
    epoch: Instant,
}

/// One request in flight; dropping it frees the slot.
pub struct Permit<'a> {
    limiter: &'a Limiter,
}

impl Drop for Permit<'_> {
    fn drop(&mut self) {
        self.limiter.state.lock().unwrap().in_flight -= 1;
        // One slot is free: one waiter is woken (a wake-up given to a wait
        // that is then dropped passes on to the next). Waking them all would
        // wake every worker above the limit for every part: with 256 workers
        // and 16 in flight, 240 wake-ups for each small file.
        self.limiter.released.notify_one();
    }
}

/// A request waiting for a permit.
struct Queued<'a> {
    limiter: &'a Limiter,
}

impl Drop for Queued<'_> {
    fn drop(&mut self) {
        self.limiter.state.lock().unwrap().waiting -= 1;
    }
}

/// The gain a trial from `before` to `level` requests must bring to be kept:
/// [`GAIN`] for a doubling, its share for less, never below [`LEAST_GAIN`].
fn needed_gain(before: usize, level: usize) -> f64 {
    let share = (level - before) as f64 / before.max(1) as f64;
    (GAIN * share.min(1.0)).max(LEAST_GAIN)
}

impl Limiter {
    /// At most `max` requests in flight, fewer while throttled.
    pub fn new(max: usize) -> Limiter {
        Limiter::with(max.max(1), None)
    }

    /// Sized to the link: starts at [`START`] and grows up to `ceiling`
    /// while the rate grows with it, and while `memory` leaves room.
    pub fn tuned(ceiling: usize, memory: Option<MemoryBound>) -> Limiter {
        let ceiling = ceiling.max(1);
        let tune = Tune { ceiling, memory, skip: true, trial_of: None, base: 0.0, hold: 0, reported: false };
        Limiter::with(START.min(ceiling), Some(tune))
    }

    fn with(level: usize, tune: Option<Tune>) -> Limiter {
        Limiter {
            tuned: tune.is_some(),
            state: Mutex::new(State {
                limit: level,
                in_flight: 0,
                successes: 0,
                last_cut: None,
                level,
                waited: false,
                waiting: 0,
                tune,
            }),
            released: Notify::new(),
            bytes: AtomicU64::new(0),
            window_end: AtomicU64::new(0),
            window_start: Mutex::new(None),
            epoch: Instant::now(),
        }
    }

    /// Waits for a free slot under the current limit.
    pub async fn acquire(&self) -> Permit<'_> {
        // Counted among the waiting from the first refusal until a slot is
        // taken or the wait is given up (the future dropped).
        let mut queued: Option<Queued<'_>> = None;
        loop {
            let mut released = pin!(self.released.notified());
            released.as_mut().enable();
            {
                let mut s = self.state.lock().unwrap();
                if s.in_flight < s.limit {
                    s.in_flight += 1;
                    if let Some(q) = queued.take() {
                        std::mem::forget(q);
                        s.waiting -= 1;
                    }
                    return Permit { limiter: self };
                }
                s.waited = true;
                if queued.is_none() {
                    s.waiting += 1;
                    queued = Some(Queued { limiter: self });
                }
            }
            released.await;
        }
    }

    /// `bytes` of a body arrived (or were sent) at `now`: counted towards the
    /// window's rate, which is judged when the window is over.
    pub fn moved(&self, bytes: u64, now: Instant) {
        if !self.tuned {
            return;
        }
        self.bytes.fetch_add(bytes, Ordering::Relaxed);
        let at = now.saturating_duration_since(self.epoch).as_nanos() as u64;
        if at < self.window_end.load(Ordering::Relaxed) {
            return;
        }
        let mut start = self.window_start.lock().unwrap();
        if at < self.window_end.load(Ordering::Relaxed) {
            return;
        }
        self.window_end.store(at + WINDOW.as_nanos() as u64, Ordering::Relaxed);
        let moved = self.bytes.swap(0, Ordering::Relaxed);
        let Some(began) = start.replace(now) else {
            // The first bytes of the run open the first window.
            return;
        };
        let secs = now.saturating_duration_since(began).as_secs_f64().max(1e-3);
        let grew = self.window_over(moved as f64 / secs);
        drop(start);
        if grew {
            self.released.notify_waiters();
        }
    }

    /// Judges a window that moved `rate` bytes per second; returns whether
    /// the limit grew.
    fn window_over(&self, rate: f64) -> bool {
        let mut s = self.state.lock().unwrap();
        // Whether more requests would have run under a higher limit.
        let waited = std::mem::take(&mut s.waited) || s.waiting > 0;
        let throttled = s.limit < s.level;
        let level = s.level;
        let Some(t) = s.tune.as_mut() else { return false };
        if std::mem::take(&mut t.skip) || throttled {
            return false;
        }
        let mb = |r: f64| (r / 1e5).round() / 10.0;
        let next = match t.trial_of {
            // The trial moved more: keep it, and try the next one.
            Some(before) if rate >= t.base * (1.0 + needed_gain(before, level)) => {
                if t.reported {
                    // A level reported settled is left behind: the link got faster.
                    tracing::info!(requests = level, rate_mb_s = mb(rate), "more requests in flight moved more");
                }
                t.base = rate;
                t.trial_of = None;
                Some(level)
            }
            // It did not: back to the level before, held for a while.
            Some(before) => {
                t.trial_of = None;
                t.hold = HOLD;
                t.skip = true;
                let first = !std::mem::replace(&mut t.reported, true);
                if first {
                    tracing::info!(
                        requests = before,
                        rate_mb_s = mb(t.base),
                        tried = level,
                        "requests in flight sized to the link: more brought no more"
                    );
                } else {
                    tracing::debug!(requests = before, tried = level, rate_mb_s = mb(rate), "kept the level");
                }
                s.level = before;
                s.limit = s.limit.min(before);
                return false;
            }
            None if !waited => None,
            None => {
                t.base = rate;
                if t.hold > 0 {
                    t.hold -= 1;
                    None
                } else {
                    Some(level)
                }
            }
        };
        let Some(from) = next else { return false };
        let to = (from * 2).min(t.ceiling);
        let to = t.memory.as_ref().map_or(to, |m| m.room(from, to));
        if to <= from {
            t.hold = HOLD;
            if !std::mem::replace(&mut t.reported, true) {
                match (from >= t.ceiling, &t.memory) {
                    (false, Some(m)) => tracing::info!(
                        requests = from,
                        rate_mb_s = mb(rate),
                        max_memory_mib = (m.max() as f64 / 104_857.6).round() / 10.0,
                        "requests in flight sized to the link: more would pass --max-memory"
                    ),
                    _ => tracing::info!(
                        requests = from,
                        rate_mb_s = mb(rate),
                        "requests in flight sized to the link: at the most"
                    ),
                }
            }
            return false;
        }
        t.trial_of = Some(from);
        t.skip = true;
        tracing::debug!(from, to, rate_mb_s = mb(rate), "trying more requests in flight");
        s.level = to;
        if s.limit == from {
            s.limit = to;
        }
        true
    }

    /// The store throttled a request: halve the limit (once per cooldown).
    /// Returns the new limit when it was cut.
    pub fn throttled(&self) -> Option<usize> {
        self.throttled_at(Instant::now())
    }

    fn throttled_at(&self, now: Instant) -> Option<usize> {
        let mut s = self.state.lock().unwrap();
        s.successes = 0;
        if s.last_cut.is_some_and(|t| now.duration_since(t) < COOLDOWN) || s.limit == 1 {
            return None;
        }
        // A doubling on trial is over: the store, not the link, is the bound.
        if let Some(t) = s.tune.as_mut()
            && let Some(before) = t.trial_of.take()
        {
            t.hold = HOLD;
            s.level = before;
        }
        s.limit = (s.limit / 2).max(1);
        s.last_cut = Some(now);
        Some(s.limit)
    }

    /// A request succeeded: after `limit` successes in a row, allow one more,
    /// up to the level.
    pub fn succeeded(&self) {
        let grew = {
            let mut s = self.state.lock().unwrap();
            s.successes += 1;
            if s.successes >= s.limit && s.limit < s.level {
                s.successes = 0;
                s.limit += 1;
                true
            } else {
                false
            }
        };
        if grew {
            self.released.notify_waiters();
        }
    }

    /// The requests allowed in flight now.
    #[cfg(test)]
    fn limit(&self) -> usize {
        self.state.lock().unwrap().limit
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn throttling_halves_the_limit_once_per_cooldown_and_success_grows_it_back() {
        let l = Limiter::new(32);
        let t0 = Instant::now();
        assert_eq!(l.throttled_at(t0), Some(16));
        // The rest of the same burst does not cut again.
        assert_eq!(l.throttled_at(t0 + Duration::from_millis(10)), None);
        assert_eq!(l.throttled_at(t0 + COOLDOWN), Some(8));
        for _ in 0..8 {
            l.succeeded();
        }
        assert_eq!(l.limit(), 9);
        for _ in 0..1000 {
            l.succeeded();
        }
        assert_eq!(l.limit(), 32, "grows back to the maximum, not past it");
    }

    #[test]
    fn the_limit_never_drops_below_one() {
        let l = Limiter::new(4);
        let mut t = Instant::now();
        for _ in 0..10 {
            l.throttled_at(t);
            t += COOLDOWN;
        }
        assert_eq!(l.limit(), 1);
    }

    #[tokio::test]
    async fn acquire_waits_while_the_limit_is_reached() {
        let l = Limiter::new(2);
        l.throttled();
        let p = l.acquire().await;
        let waiting = tokio::time::timeout(Duration::from_millis(50), l.acquire()).await;
        assert!(waiting.is_err(), "a second request must wait under a limit of 1");
        drop(p);
        let _p = tokio::time::timeout(Duration::from_secs(5), l.acquire()).await.expect("slot freed");
    }

    // One thread: spawned tasks run only when this one yields, so the
    // wake-up of the freed slot is given to the first waiter's wait before
    // that wait is dropped.
    #[tokio::test(flavor = "current_thread")]
    async fn a_freed_slot_wakes_one_waiter_and_a_wait_given_up_passes_its_wake_up_on() {
        let l = std::sync::Arc::new(Limiter::new(1));
        let p = l.acquire().await;
        let waiter = |l: std::sync::Arc<Limiter>| {
            tokio::spawn(async move {
                let _p = l.acquire().await;
                tokio::time::sleep(Duration::from_millis(20)).await;
            })
        };
        let (a, b, c) = (waiter(l.clone()), waiter(l.clone()), waiter(l.clone()));
        while l.state.lock().unwrap().waiting < 3 {
            tokio::task::yield_now().await;
        }
        // The slot is freed, and the waiter woken for it gives up before it
        // runs: the wake-up must pass on to the others.
        drop(p);
        a.abort();
        let both = async { (b.await.unwrap(), c.await.unwrap()) };
        tokio::time::timeout(Duration::from_secs(5), both).await.expect("every waiter served in turn");
        assert_eq!(l.state.lock().unwrap().in_flight, 0);
        assert_eq!(l.state.lock().unwrap().waiting, 0);
    }

    /// A link simulated window by window: `rate(limit)` bytes per second
    /// while requests wait for permits when `busy`. Returns the limits seen
    /// at the end of each window.
    fn drive(l: &Limiter, windows: usize, busy: bool, rate: impl Fn(usize) -> f64) -> Vec<usize> {
        // Carries on from the last window, or opens the first.
        let last = *l.window_start.lock().unwrap();
        let mut t = last.unwrap_or(l.epoch + Duration::from_secs(1));
        if last.is_none() {
            l.moved(1, t);
        }
        let mut seen = Vec::new();
        for _ in 0..windows {
            l.state.lock().unwrap().waited = busy;
            t += WINDOW;
            l.moved((rate(l.limit()) * WINDOW.as_secs_f64()) as u64, t);
            seen.push(l.limit());
        }
        seen
    }

    /// Connections of 90 MB/s each, `cap` bytes per second at most together.
    fn link(cap: f64) -> impl Fn(usize) -> f64 {
        move |n| (n as f64 * 90e6).min(cap)
    }

    #[test]
    fn the_limit_doubles_while_the_rate_grows_with_it_up_to_the_ceiling() {
        let l = Limiter::tuned(128, None);
        assert_eq!(l.limit(), START);
        let seen = drive(&l, 12, true, link(f64::INFINITY));
        // Every other window is not measured: connections are opening.
        assert_eq!(seen[..8], [16, 32, 32, 64, 64, 128, 128, 128]);
        assert_eq!(*seen.last().unwrap(), 128, "never past the ceiling");
    }

    #[test]
    fn a_doubling_that_brings_too_little_is_undone_and_tried_again_later() {
        // 2.5 GB/s: 28 connections fill it.
        let l = Limiter::tuned(128, None);
        let seen = drive(&l, 8, true, link(2.5e9));
        assert_eq!(seen, [16, 32, 32, 64, 64, 32, 32, 32], "64 brings nothing over 32");
        // Held for HOLD windows, then tried once more, and undone again.
        let seen = drive(&l, HOLD as usize + 4, true, link(2.5e9));
        assert!(seen.contains(&64), "tried again after the hold: {seen:?}");
        assert_eq!(*seen.last().unwrap(), 32);
        // The link got faster: the next trial keeps the doubling.
        let seen = drive(&l, HOLD as usize + 6, true, link(f64::INFINITY));
        assert_eq!(*seen.last().unwrap(), 128, "{seen:?}");
    }

    const MIB: u64 = 1 << 20;

    /// A limiter sized to the link within a 64 MiB bound whose memory reads
    /// what the test stores, 10 MiB at the start.
    fn bounded() -> (Limiter, std::sync::Arc<AtomicU64>) {
        let rss = std::sync::Arc::new(AtomicU64::new(10 * MIB));
        let read = rss.clone();
        let bound = MemoryBound::reading(64 * MIB, Box::new(move || Some(read.load(Ordering::Relaxed))));
        (Limiter::tuned(128, Some(bound)), rss)
    }

    #[test]
    fn the_memory_bound_clips_a_doubling_and_then_holds_the_count() {
        // Each request in flight takes 2 MiB over the 10 MiB at the start.
        let (l, rss) = bounded();
        let seen = drive(&l, 12, true, |n| {
            rss.store(10 * MIB + n as u64 * 2 * MIB, Ordering::Relaxed);
            link(f64::INFINITY)(n)
        });
        // At 16, 42 MiB: 2 MiB each, room for 27 (kept: the rate grew with
        // them); at 27, 64 MiB: none.
        assert_eq!(seen[..8], [16, 27, 27, 27, 27, 27, 27, 27]);
        assert_eq!(*seen.last().unwrap(), 27, "{seen:?}");
    }

    #[test]
    fn a_trial_short_of_a_doubling_needs_its_share_of_the_gain_and_never_less_than_the_least() {
        assert_eq!(needed_gain(16, 32), GAIN);
        assert!((needed_gain(16, 28) - GAIN * 0.75).abs() < 1e-9);
        assert_eq!(needed_gain(32, 38), LEAST_GAIN, "6 more of 32 would need 2.8%: noise");
        // A CPU-bound run whose clipped trial brings 3% is undone.
        let (l, rss) = bounded();
        rss.store(10 * MIB + 3 * 16 * MIB, Ordering::Relaxed);
        let seen = drive(&l, 6, true, |n| 900e6 * if n > 16 { 1.03 } else { 1.0 });
        assert_eq!(seen, [16, 18, 18, 16, 16, 16], "at 3 MiB a request, room for 18; 3% more is not enough");
    }

    #[test]
    fn a_bound_below_the_start_keeps_the_start() {
        // CPU-bound: the rate is the same at any count, give or take a
        // little noise (10% more at 32 is not enough).
        let l = Limiter::tuned(128, None);
        let noisy = |n: usize| 900e6 * if n == 32 { 1.1 } else { 1.0 };
        let seen = drive(&l, 6, true, noisy);
        assert_eq!(seen, [16, 32, 32, 16, 16, 16]);
    }

    #[test]
    fn nothing_is_learnt_while_no_request_waits_for_a_permit() {
        let l = Limiter::tuned(128, None);
        let seen = drive(&l, 10, false, link(f64::INFINITY));
        assert!(seen.iter().all(|&n| n == START), "{seen:?}");
    }

    #[test]
    fn a_pinned_count_never_moves_with_the_rate() {
        let l = Limiter::new(32);
        let seen = drive(&l, 10, true, link(f64::INFINITY));
        assert!(seen.iter().all(|&n| n == 32), "{seen:?}");
    }

    #[test]
    fn throttling_ends_a_trial_and_growth_back_stops_at_the_level() {
        let l = Limiter::tuned(128, None);
        drive(&l, 2, true, link(f64::INFINITY));
        assert_eq!(l.limit(), 32, "on trial");
        assert_eq!(l.throttled_at(Instant::now()), Some(16));
        for _ in 0..10_000 {
            l.succeeded();
        }
        assert_eq!(l.limit(), 16, "back to the level before the trial, not to the trial");
        // Held, then growing again once the store stops throttling.
        let seen = drive(&l, HOLD as usize + 6, true, link(f64::INFINITY));
        assert!(*seen.last().unwrap() > 16, "{seen:?}");
    }
}
