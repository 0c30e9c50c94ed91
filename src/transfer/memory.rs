//! `--max-memory`: the bound on the requests the link sizing adds.
//!
//! What a request in flight costs is mostly outside s3load's hands: its
//! write buffer (256 KiB) is, but the HTTP client's read buffer grows with
//! the connection's speed, from tens of KiB to about 1 MiB, and the AWS SDK
//! does not let callers cap it. So the cost is measured, not assumed: before
//! a larger count is tried, the process's peak resident memory so far, less
//! what it held when the run's requests were set up, is shared among the
//! requests in flight, and the count grows only to as many as fit under the
//! bound at that price, or at [`LEAST_PER_REQUEST`] if that is more. Every
//! request is priced, not only the new ones: the ones in flight are young
//! when the count is judged (a second at their level), and their buffers
//! still grow.
//!
//! The price errs on the dear side: everything the process took since its
//! requests were set up is charged to them (the listing, the hashing
//! thread's buffers), and the peak never falls, so memory taken during an
//! undone trial is shared among the fewer requests left. The bound never
//! lowers the count, and a pinned count (`--numworkers`) is not sized at
//! all. Where `/proc/self/status` cannot be read (not Linux, or `/proc`
//! hidden), each request is priced at the least, from nothing, and a
//! warning says so.

const MIB: u64 = 1 << 20;

/// The least a request in flight is priced at. Measured on 4 x 1 GiB
/// through the test server at 20 ms and 20 MB/s per connection: peak RSS
/// was about 11 MiB plus 1.15 - 1.2 MiB a request between 41 and 64
/// requests in flight (it is more on a fast loopback: 16 requests took
/// about 2.3 MiB each with the hashing thread's buffers). A price measured
/// a second after a change is lower than that (the buffers have not grown
/// yet), and pricing them at what the young ones cost took the peak 6 MiB
/// past the bound; 1.25 MiB is the settled cost with a little margin.
const LEAST_PER_REQUEST: u64 = 5 * MIB / 4;

/// The bound, and how to read the process's resident memory.
pub(super) struct MemoryBound {
    max: u64,
    /// Resident memory when the run's requests were set up: not theirs.
    start: u64,
    resident: Box<dyn Fn() -> Option<u64> + Send + Sync>,
}

impl std::fmt::Debug for MemoryBound {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MemoryBound").field("max", &self.max).field("start", &self.start).finish_non_exhaustive()
    }
}

impl MemoryBound {
    /// No request added that would take the peak resident memory (read
    /// from `/proc/self/status`) past `max` bytes, as far as the price
    /// foresees it; the process may still pass it by a few MiB (measured:
    /// up to 6.7 MiB past a 40 MiB bound on MD5-checked objects), and
    /// whatever else it holds comes on top (see the module).
    pub(super) fn new(max: u64) -> MemoryBound {
        if peak_resident().is_none() {
            tracing::warn!(
                "cannot read this process's memory (/proc/self/status): --max-memory prices each request at \
                 {} KiB from nothing",
                LEAST_PER_REQUEST >> 10
            );
        }
        MemoryBound::reading(max, Box::new(peak_resident))
    }

    /// The bound with its memory read by `resident` (tests give their own);
    /// what it reads now is the start, not charged to requests.
    pub(super) fn reading(max: u64, resident: Box<dyn Fn() -> Option<u64> + Send + Sync>) -> MemoryBound {
        let start = resident().unwrap_or(0);
        MemoryBound { max, start, resident }
    }

    pub(super) fn max(&self) -> u64 {
        self.max
    }

    /// With `now` requests in flight, the most (at most `to`) that the bound
    /// leaves room for: `now` itself when there is none. Where resident
    /// memory cannot be read, each request is priced at the least, from
    /// nothing.
    pub(super) fn room(&self, now: usize, to: usize) -> usize {
        let peak = (self.resident)().unwrap_or(self.start);
        let each = (peak.saturating_sub(self.start) / now.max(1) as u64).max(LEAST_PER_REQUEST);
        let fit = usize::try_from(self.max.saturating_sub(self.start) / each).unwrap_or(usize::MAX);
        let room = if peak >= self.max { now } else { to.min(fit).max(now) };
        tracing::debug!(
            now,
            room,
            max_mib = self.max >> 20,
            peak_mib = peak >> 20,
            start_mib = self.start >> 20,
            each_kib = each >> 10,
            "requests in flight the memory bound leaves room for"
        );
        room
    }
}

/// This process's peak resident memory so far (`VmHWM`), in bytes: what
/// the bound is about, and never below what it is now.
fn peak_resident() -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find_map(|l| l.strip_prefix("VmHWM:"))?;
    let kib: u64 = line.trim().strip_suffix("kB")?.trim().parse().ok()?;
    Some(kib * 1024)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;
    use std::sync::atomic::{AtomicU64, Ordering};

    fn bound(max: u64, rss: &Arc<AtomicU64>) -> MemoryBound {
        let rss = rss.clone();
        MemoryBound::reading(max, Box::new(move || Some(rss.load(Ordering::Relaxed))))
    }

    #[test]
    fn the_count_grows_to_what_fits_at_the_price_the_requests_in_flight_pay() {
        let rss = Arc::new(AtomicU64::new(10 * MIB));
        let b = bound(64 * MIB, &rss);
        // 16 requests took 48 MiB, 3 MiB each: 54 MiB above the start is 18.
        rss.store(58 * MIB, Ordering::Relaxed);
        assert_eq!(b.room(16, 32), 18);
        // 2 MiB each: 27.
        rss.store(42 * MIB, Ordering::Relaxed);
        assert_eq!(b.room(16, 32), 27);
        // Cheaper requests (young connections) are priced at the least: 43.
        rss.store(12 * MIB, Ordering::Relaxed);
        assert_eq!(b.room(16, 128), 43);
        assert_eq!(b.room(16, 20), 20, "never past the doubling asked for");
    }

    #[test]
    fn no_room_keeps_the_count_and_an_unreadable_memory_prices_requests_at_the_least() {
        let rss = Arc::new(AtomicU64::new(10 * MIB));
        let b = bound(64 * MIB, &rss);
        rss.store(63 * MIB, Ordering::Relaxed);
        assert_eq!(b.room(32, 64), 32, "1.66 MiB each: 32 is what fits");
        rss.store(64 * MIB, Ordering::Relaxed);
        assert_eq!(b.room(8, 64), 8, "at the bound: no more, though each was dear");
        rss.store(300 * MIB, Ordering::Relaxed);
        assert_eq!(b.room(16, 32), 16, "already past the bound (a large listing): never below where it is");
        // Unreadable: 1.25 MiB a request from nothing, 51 in 64 MiB.
        let blind = MemoryBound::reading(64 * MIB, Box::new(|| None));
        assert_eq!(blind.room(16, 32), 32);
        assert_eq!(blind.room(32, 64), 51);
        assert_eq!(MemoryBound::reading(10 * MIB, Box::new(|| None)).room(16, 32), 16);
    }

    #[test]
    fn this_process_peak_resident_memory_is_read() {
        let rss = peak_resident().expect("VmHWM in /proc/self/status");
        assert!(rss > MIB && rss < 64 << 30, "{rss}");
    }
}
