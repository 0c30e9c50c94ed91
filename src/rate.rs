//! `--limit-rate`: one budget of bytes per second for the whole process
//! (and the parsing of its rates, and of `--max-memory`'s sizes).
//!
//! Every body chunk received pays for its bytes before the next is read: a
//! chunk that would take the run past the rate waits until the budget allows
//! it, and while it waits its connection is not read, so TCP slows the
//! sender. An upload body's chunks pay before they are sent. A burst of a tenth of a second's worth is allowed after an idle
//! moment; beyond it, over any window, the bytes passed on stay within the
//! rate times the window plus that burst. The link itself may carry a little
//! more at the start: each connection's chunk waiting to be paid for, and
//! what its socket buffer holds (with 32 connections, a few MiB
//! at most).
//!
//! Hand-written rather than `governor`: its cells are counted in `u32` with
//! a fixed burst that no request may exceed, where a body chunk is any size;
//! here a chunk larger than the burst simply waits longer. The clock is
//! tokio's, so tests run it paused.

use std::sync::Mutex;
use std::time::Duration;

use tokio::time::Instant;

/// The burst allowed after an idle moment, as time at the rate.
const BURST: Duration = Duration::from_millis(100);

#[derive(Debug)]
pub struct RateLimit {
    bytes_per_sec: f64,
    /// When the bytes paid for so far are all within the rate.
    paid_until: Mutex<Option<Instant>>,
}

impl RateLimit {
    pub fn new(bytes_per_sec: u64) -> RateLimit {
        RateLimit { bytes_per_sec: bytes_per_sec.max(1) as f64, paid_until: Mutex::new(None) }
    }

    /// Pays for `n` bytes: returns at once while the run is within its rate
    /// (and its burst), otherwise once the rate allows them.
    pub async fn take(&self, n: u64) {
        let wait = {
            let now = Instant::now();
            let mut paid = self.paid_until.lock().unwrap();
            // Bytes not yet within the rate are paid from when the last were.
            let from = paid.map_or(now, |p| p.max(now));
            let until = from + Duration::from_secs_f64(n as f64 / self.bytes_per_sec);
            *paid = Some(until);
            until.saturating_duration_since(now + BURST)
        };
        if !wait.is_zero() {
            tokio::time::sleep(wait).await;
        }
    }
}

/// Parses a rate: a number of bytes per second with an optional unit: `K`,
/// `M`, `G` (also `KiB`, `MiB`, `GiB`, or `k`, `m`, `g`) count in 1024s, `KB`,
/// `MB`, `GB` in 1000s, `B` is bytes; an optional `/s` after it. At least
/// 1 KiB/s.
pub fn parse_rate(s: &str) -> Result<u64, String> {
    let t = s.trim();
    let bytes = bytes_with_unit(t.strip_suffix("/s").unwrap_or(t)).ok_or_else(|| {
        format!("{s:?}: a rate is a number of bytes per second with an optional unit, e.g. 200MiB, 50M or 1.5G")
    })?;
    if bytes < 1024.0 {
        return Err(format!("{s:?}: at least 1K (bytes per second); leave --limit-rate out to set no limit"));
    }
    if bytes > 1e15 {
        return Err(format!("{s:?}: more than any link carries; leave --limit-rate out to set no limit"));
    }
    Ok(bytes as u64)
}

/// Parses an amount of memory, with the units of [`parse_rate`] (no `/s`):
/// at least 1 MiB, at most 10^15 bytes.
pub fn parse_size(s: &str) -> Result<u64, String> {
    let bytes = bytes_with_unit(s.trim())
        .ok_or_else(|| format!("{s:?}: a size is a number of bytes with an optional unit, e.g. 64MiB, 512M or 2G"))?;
    if bytes < 1_048_576.0 {
        return Err(format!("{s:?}: at least 1MiB"));
    }
    if bytes > 1e15 {
        return Err(format!("{s:?}: more memory than any machine has"));
    }
    Ok(bytes as u64)
}

/// A number with an optional unit, in bytes; `None` for anything else.
fn bytes_with_unit(t: &str) -> Option<f64> {
    let split = t.find(|c: char| !(c.is_ascii_digit() || c == '.')).unwrap_or(t.len());
    let (number, unit) = t.split_at(split);
    let value: f64 = number.parse().ok()?;
    let scale: f64 = match unit.trim() {
        "" | "B" => 1.0,
        "K" | "k" | "KiB" => 1024.0,
        "M" | "m" | "MiB" => 1024.0 * 1024.0,
        "G" | "g" | "GiB" => 1024.0 * 1024.0 * 1024.0,
        "KB" | "kB" => 1e3,
        "MB" => 1e6,
        "GB" => 1e9,
        _ => return None,
    };
    Some(value * scale).filter(|b| b.is_finite())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rates_parse_with_binary_and_decimal_units_and_nonsense_is_refused() {
        assert_eq!(parse_rate("200MiB"), Ok(200 << 20));
        assert_eq!(parse_rate("200M"), Ok(200 << 20));
        assert_eq!(parse_rate("200MB/s"), Ok(200_000_000));
        assert_eq!(parse_rate("1.5G"), Ok(3 << 29));
        assert_eq!(parse_rate("4096"), Ok(4096));
        assert_eq!(parse_rate(" 64K "), Ok(64 << 10));
        for bad in ["", "fast", "-5M", "5X", "M", "1e3M", "0", "100", "NaN", "1.2.3M", "99999999999999999999G"] {
            assert!(parse_rate(bad).is_err(), "{bad:?} is refused");
        }
    }

    #[test]
    fn sizes_parse_with_the_same_units_and_too_small_or_nonsense_is_refused() {
        assert_eq!(parse_size("64MiB"), Ok(64 << 20));
        assert_eq!(parse_size(" 2G "), Ok(2 << 30));
        assert_eq!(parse_size("100MB"), Ok(100_000_000));
        assert_eq!(parse_size("1048576"), Ok(1 << 20));
        for bad in ["", "lots", "-64M", "64M/s", "1023K", "0", "0.5M", "NaN", "inf", "99999999999999999999G", "1e3M"] {
            let e = parse_size(bad).unwrap_err();
            assert!(e.contains(&format!("{bad:?}")), "{bad:?} is named: {e}");
        }
    }

    #[tokio::test(start_paused = true)]
    async fn bytes_stay_within_the_rate_over_any_window_past_the_burst() {
        let rate = RateLimit::new(1 << 20);
        let start = Instant::now();
        // 10 MiB in chunks of 64 KiB: 10 s at 1 MiB/s, less the burst.
        for _ in 0..160 {
            rate.take(64 << 10).await;
        }
        let took = start.elapsed();
        assert!(took >= Duration::from_millis(9_900) && took <= Duration::from_millis(10_000), "{took:?}");
        // A chunk larger than the burst waits its share, no more.
        let t = Instant::now();
        rate.take(2 << 20).await;
        assert_eq!(t.elapsed(), Duration::from_secs(2), "2 MiB at 1 MiB/s, from where the last were paid");
        // After an idle moment, a burst of a tenth of a second passes at once.
        tokio::time::sleep(Duration::from_secs(5)).await;
        let t = Instant::now();
        rate.take(100 << 10).await;
        assert_eq!(t.elapsed(), Duration::ZERO);
    }
}
