//! Adaptive request concurrency: fewer requests in flight while the store throttles.
//!
//! The engine runs `max_requests` workers, and each request takes a permit from
//! this limiter first. The limit starts at the maximum; a throttling answer (503
//! SlowDown, 429) halves it, at most once per [`COOLDOWN`] so that one burst of
//! failures from requests already in flight counts as one signal; every `limit`
//! successful requests in a row raise it by one (additive increase, multiplicative
//! decrease, as TCP does). So under sustained throttling s3load backs off to what
//! the prefix can serve, and grows back when the pressure is gone.

use std::pin::pin;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use tokio::sync::Notify;

/// Minimum time between two cuts of the limit.
const COOLDOWN: Duration = Duration::from_secs(1);

#[derive(Debug)]
struct State {
    limit: usize,
    in_flight: usize,
    successes: usize,
    last_cut: Option<Instant>,
}

#[derive(Debug)]
pub struct Limiter {
    max: usize,
    state: Mutex<State>,
    released: Notify,
}

/// One request in flight; dropping it frees the slot.
pub struct Permit<'a> {
    limiter: &'a Limiter,
}

impl Drop for Permit<'_> {
    fn drop(&mut self) {
        self.limiter.state.lock().unwrap().in_flight -= 1;
        self.limiter.released.notify_waiters();
    }
}

impl Limiter {
    pub fn new(max: usize) -> Limiter {
        let max = max.max(1);
        Limiter {
            max,
            state: Mutex::new(State { limit: max, in_flight: 0, successes: 0, last_cut: None }),
            released: Notify::new(),
        }
    }

    /// Waits for a free slot under the current limit.
    pub async fn acquire(&self) -> Permit<'_> {
        loop {
            let mut released = pin!(self.released.notified());
            released.as_mut().enable();
            {
                let mut s = self.state.lock().unwrap();
                if s.in_flight < s.limit {
                    s.in_flight += 1;
                    return Permit { limiter: self };
                }
            }
            released.await;
        }
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
        s.limit = (s.limit / 2).max(1);
        s.last_cut = Some(now);
        Some(s.limit)
    }

    /// A request succeeded: after `limit` successes in a row, allow one more.
    pub fn succeeded(&self) {
        let grew = {
            let mut s = self.state.lock().unwrap();
            s.successes += 1;
            if s.successes >= s.limit && s.limit < self.max {
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
}
