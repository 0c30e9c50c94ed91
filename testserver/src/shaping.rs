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

/// Network emulation settings; the default is an unshaped loopback.
#[derive(Debug, Clone, Copy, Default)]
pub struct Shaping {
    /// Added before every response (first byte latency).
    pub first_byte_delay: Duration,
    /// Bytes per second per response body; `None` = unlimited.
    pub rate_per_connection: Option<u64>,
}

/// Slice size handed to hyper. Large enough to keep per-chunk overhead small when
/// unshaped; shaped bodies use smaller slices so the rate cap is smooth.
const UNSHAPED_CHUNK: usize = 1 << 20;
const SHAPED_CHUNK: usize = 64 << 10;

/// A body that yields `data` in slices, pacing them when a rate cap is set, and
/// adds every byte it yields to `counter`.
pub struct ShapedBody {
    data: Bytes,
    pos: usize,
    chunk: usize,
    rate: Option<u64>,
    started: Option<Instant>,
    sleep: Option<Pin<Box<Sleep>>>,
    counter: Arc<AtomicU64>,
}

impl ShapedBody {
    pub fn new(data: Bytes, shaping: &Shaping, counter: Arc<AtomicU64>) -> Self {
        let chunk = if shaping.rate_per_connection.is_some() { SHAPED_CHUNK } else { UNSHAPED_CHUNK };
        ShapedBody { data, pos: 0, chunk, rate: shaping.rate_per_connection, started: None, sleep: None, counter }
    }
}

impl Stream for ShapedBody {
    type Item = Result<Bytes, std::io::Error>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        let this = &mut *self;
        if this.pos >= this.data.len() {
            return Poll::Ready(None);
        }
        if let Some(sleep) = this.sleep.as_mut() {
            if sleep.as_mut().poll(cx).is_pending() {
                return Poll::Pending;
            }
            this.sleep = None;
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
        let end = (this.pos + this.chunk).min(this.data.len());
        let out = this.data.slice(this.pos..end);
        this.pos = end;
        this.counter.fetch_add(out.len() as u64, Ordering::Relaxed);
        Poll::Ready(Some(Ok(out)))
    }
}

use std::future::Future;
