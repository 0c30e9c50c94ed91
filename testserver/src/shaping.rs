//! Response bodies, optionally shaped like a real network path.
//!
//! [`Shaping`] emulates what one connection from EC2 to S3 sees: a delay before the
//! first byte of every response (round trip + time to first byte) and a cap on the
//! bytes per second of each response body. With HTTP keep-alive a connection serves
//! one request at a time, so a per-response cap is a per-connection cap.

use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use futures::Stream;
use tokio::time::{Instant, Sleep};

use crate::faults::BodyFault;
use crate::service::RequestLog;

/// Network emulation settings; the default is an unshaped loopback.
#[derive(Debug, Clone, Copy, Default)]
pub struct Shaping {
    /// Added before every response (first byte latency).
    pub first_byte_delay: Duration,
    /// Bytes per second per response body; `None` = unlimited.
    pub rate_per_connection: Option<u64>,
    /// Some GET bodies much slower than the rest (a bad path, a busy server
    /// behind the load balancer); `None` = none.
    pub straggler: Option<Straggler>,
    /// Bytes per second of every GET body together (a link the connections
    /// share); `None` = unlimited.
    pub total_rate: Option<u64>,
}

/// Every `every`-th GET body (the `every`-th, the 2 x `every`-th, ...) is
/// served at `rate` bytes per second instead of the connection's rate.
#[derive(Debug, Clone, Copy)]
pub struct Straggler {
    pub every: u64,
    pub rate: u64,
}

/// Slice size handed to hyper. Large enough to keep per-chunk overhead small when
/// unshaped; shaped bodies use smaller slices so the rate cap is smooth.
const UNSHAPED_CHUNK: usize = 1 << 20;
const SHAPED_CHUNK: usize = 64 << 10;

/// A body that yields `data` in slices, pacing them when a rate cap is set, and
/// adds every byte it yields to `counter`. An injected [`BodyFault`] cuts, ends,
/// stalls or corrupts it at a chosen offset.
pub struct ShapedBody {
    data: Bytes,
    pos: usize,
    chunk: usize,
    rate: Option<u64>,
    started: Option<Instant>,
    sleep: Option<Pin<Box<Sleep>>>,
    log: Arc<RequestLog>,
    /// The shared link's rate, when capped (see [`Shaping::total_rate`]).
    total_rate: Option<u64>,
    /// When the shared link has carried the slice about to be yielded.
    link_due: Option<Instant>,
    fault: Option<BodyFault>,
    cut_pending: bool,
    /// A trickle's wait before its next byte is done.
    trickle_waited: bool,
}

/// Time given to hyper to flush the bytes before an injected cut.
const CUT_FLUSH: Duration = Duration::from_millis(100);

impl ShapedBody {
    /// A body served at `rate` bytes per second (`None`: unlimited), and all
    /// bodies together at `total_rate`; counted in `log` while it lasts.
    pub(crate) fn new(
        data: Bytes,
        rate: Option<u64>,
        total_rate: Option<u64>,
        log: Arc<RequestLog>,
        fault: Option<BodyFault>,
    ) -> Self {
        let chunk = if rate.is_some() || total_rate.is_some() { SHAPED_CHUNK } else { UNSHAPED_CHUNK };
        log.bodies.open();
        ShapedBody {
            data,
            pos: 0,
            chunk,
            rate,
            started: None,
            sleep: None,
            log,
            total_rate,
            link_due: None,
            fault,
            cut_pending: false,
            trickle_waited: false,
        }
    }

    /// Where the body stops being served normally, if a fault stops it.
    fn stop_at(&self) -> Option<usize> {
        match self.fault? {
            BodyFault::Cut(n) | BodyFault::End(n) | BodyFault::Stall(n) => Some(n as usize),
            BodyFault::Flip(_) | BodyFault::Trickle(..) => None,
        }
    }
}

impl Stream for ShapedBody {
    type Item = Result<Bytes, std::io::Error>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        let this = &mut *self;
        if let Some(sleep) = this.sleep.as_mut() {
            if sleep.as_mut().poll(cx).is_pending() {
                return Poll::Pending;
            }
            this.sleep = None;
        }
        let stop = this.stop_at().unwrap_or(usize::MAX).min(this.data.len());
        if this.pos >= stop {
            let broken = stop < this.data.len();
            // Let hyper flush the bytes sent so far before the body breaks, as a
            // real reset or early close mid-body leaves them with the client.
            if broken && matches!(this.fault, Some(BodyFault::Cut(_) | BodyFault::End(_))) && !this.cut_pending {
                this.cut_pending = true;
                let mut sleep = Box::pin(tokio::time::sleep(CUT_FLUSH));
                if sleep.as_mut().poll(cx).is_pending() {
                    this.sleep = Some(sleep);
                    return Poll::Pending;
                }
            }
            return match this.fault {
                Some(BodyFault::Cut(_)) if broken => {
                    Poll::Ready(Some(Err(std::io::Error::new(std::io::ErrorKind::ConnectionReset, "injected cut"))))
                }
                // Never woken: the connection stays open and silent until the client gives up.
                Some(BodyFault::Stall(_)) if broken => Poll::Pending,
                _ => Poll::Ready(None),
            };
        }
        if let Some(rate) = this.rate {
            let started = *this.started.get_or_insert_with(Instant::now);
            // When the bytes already sent are due under the cap.
            let due = started + Duration::from_secs_f64(this.pos as f64 / rate as f64);
            if due > Instant::now() {
                let mut sleep = Box::pin(tokio::time::sleep_until(due));
                if sleep.as_mut().poll(cx).is_pending() {
                    this.sleep = Some(sleep);
                    return Poll::Pending;
                }
            }
        }
        let mut end = (this.pos + this.chunk).min(stop);
        if let Some(BodyFault::Trickle(n, every)) = this.fault
            && this.pos >= n as usize
        {
            if !this.trickle_waited {
                this.trickle_waited = true;
                let mut sleep = Box::pin(tokio::time::sleep(every));
                if sleep.as_mut().poll(cx).is_pending() {
                    this.sleep = Some(sleep);
                    return Poll::Pending;
                }
            }
            this.trickle_waited = false;
            end = this.pos + 1;
        } else if let Some(BodyFault::Trickle(n, _)) = this.fault {
            end = end.min(n as usize);
        }
        if let Some(total) = this.total_rate {
            let due = *this.link_due.get_or_insert_with(|| this.log.link.carry((end - this.pos) as u64, total));
            if due > Instant::now() {
                let mut sleep = Box::pin(tokio::time::sleep_until(due));
                if sleep.as_mut().poll(cx).is_pending() {
                    this.sleep = Some(sleep);
                    return Poll::Pending;
                }
            }
            this.link_due = None;
        }
        let mut out = this.data.slice(this.pos..end);
        if let Some(BodyFault::Flip(at)) = this.fault
            && (this.pos..end).contains(&(at as usize))
        {
            let mut v = out.to_vec();
            v[at as usize - this.pos] ^= 0xff;
            out = Bytes::from(v);
        }
        this.pos = end;
        this.log.body_bytes.fetch_add(out.len() as u64, Ordering::Relaxed);
        Poll::Ready(Some(Ok(out)))
    }
}

impl Drop for ShapedBody {
    fn drop(&mut self) {
        self.log.bodies.close();
    }
}

/// A link every GET body shares: the time it is next free.
#[derive(Debug, Default)]
pub(crate) struct Link {
    free_at: std::sync::Mutex<Option<Instant>>,
}

impl Link {
    /// Books `bytes` on the link at `rate` bytes per second after what is
    /// booked already (an idle link saves no credit); returns when they have
    /// passed.
    fn carry(&self, bytes: u64, rate: u64) -> Instant {
        let now = Instant::now();
        let mut free_at = self.free_at.lock().unwrap();
        let done = free_at.map_or(now, |t| t.max(now)) + Duration::from_secs_f64(bytes as f64 / rate.max(1) as f64);
        *free_at = Some(done);
        done
    }
}

/// GET bodies being served, and the most at once.
#[derive(Debug, Default)]
pub(crate) struct Gauge {
    now: AtomicU64,
    peak: AtomicU64,
}

impl Gauge {
    fn open(&self) {
        let n = self.now.fetch_add(1, Ordering::Relaxed) + 1;
        self.peak.fetch_max(n, Ordering::Relaxed);
    }
    fn close(&self) {
        self.now.fetch_sub(1, Ordering::Relaxed);
    }
    pub(crate) fn peak(&self) -> u64 {
        self.peak.load(Ordering::Relaxed)
    }
    pub(crate) fn reset_peak(&self) {
        self.peak.store(self.now.load(Ordering::Relaxed), Ordering::Relaxed);
    }
}

use std::future::Future;
