//! A GET's response and its body: the request pinned to the object's
//! identity, the answer checked to be the range asked for, and the body's two
//! clocks (silence up to `--stall-timeout`, and a minimum rate over each such
//! window). Shared by downloads (`fetch.rs`) and `cat` (`stream.rs`).

use std::ops::Range;
use std::sync::atomic::Ordering;

use bytes::Bytes;
use futures::StreamExt;

use super::engine::Engine;
use super::job::GetJob;
use crate::error::{Error, StoreError, StoreErrorKind};
use crate::store::{BodyStream, GetRequest, GetResponse};

/// The slowest a body may arrive, measured over each `--stall-timeout` window:
/// a server that trickles a byte just before every stall timeout would
/// otherwise hold a part (and a connection slot) forever. 16 KiB/s is far below
/// any healthy connection, even 64 sharing a 10 Mbit/s link; a part cut for
/// being slower resumes from its first missing byte, so a false alarm costs a
/// reconnect, not data.
pub(crate) const MIN_BODY_RATE: u64 = 16 * 1024;

fn too_slow(engine: &Engine, got: u64) -> StoreError {
    let secs = engine.cfg.stall_timeout.as_secs_f64();
    StoreError::new(
        StoreErrorKind::Network,
        format!(
            "only {got} bytes in {secs:.0} s, below the minimum rate of {} KiB/s (a trickling connection)",
            MIN_BODY_RATE / 1024
        ),
    )
}

fn stalled(engine: &Engine) -> StoreError {
    let secs = engine.cfg.stall_timeout.as_secs_f64();
    StoreError::new(StoreErrorKind::Network, format!("no data for {secs:.0} s (stalled connection)"))
}

/// Sends a GET of `range` of `job` (pinned to its ETag, and to its version
/// unless the store refused versions), or of the whole object when `ranged` is
/// false, and checks that the answer is that range. The caller holds a
/// request permit.
pub(super) async fn open_get(
    engine: &Engine,
    job: &GetJob,
    range: Range<u64>,
    ranged: bool,
) -> Result<GetResponse, Error> {
    let (offset, end) = (range.start, range.end);
    let mut req = GetRequest {
        bucket: job.bucket.to_string(),
        key: job.key.clone(),
        range: ranged.then_some(offset..end),
        if_match: job.etag.clone(),
        version_id: job.version_id.clone().filter(|_| !engine.versions_denied.load(Ordering::Relaxed)),
    };
    let at = |e| Error::object(&job.bucket, &job.key, Some(offset..end), e);
    let url = job.source_url();
    let resp = loop {
        let get = tokio::time::timeout(engine.cfg.stall_timeout, engine.store.get(&req));
        match engine.unless_stopped(&url, get).await? {
            Err(_) => return Err(at(stalled(engine))),
            // A role may read objects but not name their versions
            // (s3:GetObjectVersion): pin by ETag alone from now on.
            Ok(Err(e)) if e.kind == StoreErrorKind::AccessDenied && req.version_id.is_some() => {
                if !engine.versions_denied.swap(true, Ordering::Relaxed) {
                    tracing::warn!(error = %e, "reading by versionId was denied (no s3:GetObjectVersion?); pinning objects by ETag only");
                }
                req.version_id = None;
            }
            Ok(r) => break r.map_err(&at)?,
        }
    };
    let expected = end - offset;
    let start = if resp.partial { resp.range_start } else { 0 };
    if resp.content_length != expected || start != offset {
        let msg = if ranged && !resp.partial {
            format!(
                "{url} bytes {offset}-{}: the server ignored the Range header and sent the whole object; s3load needs ranged GETs (try a larger --part-size, or an endpoint that supports Range)",
                end.saturating_sub(1)
            )
        } else {
            format!(
                "{url}: the server sent {} bytes from offset {start} where {expected} bytes from offset {offset} were asked for",
                resp.content_length
            )
        };
        return Err(Error::Integrity(msg));
    }
    Ok(resp)
}

/// A GET body read chunk by chunk under two clocks: silence (no byte for
/// `--stall-timeout`) and rate (fewer than [`MIN_BODY_RATE`] x the timeout
/// bytes in a window of the timeout, or what is left), and checked against
/// the length promised: longer fails at once, shorter at its end.
pub(super) struct Body<'a> {
    engine: &'a Engine,
    job: &'a GetJob,
    range: Range<u64>,
    stream: BodyStream,
    /// Bytes the response promised.
    pub(super) expected: u64,
    /// Bytes received so far.
    pub(super) received: u64,
    min_window_bytes: u64,
    /// When the last chunk came (or the body started).
    pub(super) last_chunk: tokio::time::Instant,
    window_end: tokio::time::Instant,
    window_bytes: u64,
}

impl<'a> Body<'a> {
    pub(super) fn new(engine: &'a Engine, job: &'a GetJob, range: Range<u64>, stream: BodyStream) -> Body<'a> {
        let stall = engine.cfg.stall_timeout;
        let now = tokio::time::Instant::now();
        Body {
            engine,
            job,
            expected: range.end - range.start,
            range,
            stream,
            received: 0,
            min_window_bytes: (MIN_BODY_RATE as f64 * stall.as_secs_f64()) as u64,
            last_chunk: now,
            window_end: now + stall,
            window_bytes: 0,
        }
    }

    fn at(&self, e: StoreError) -> Error {
        Error::object(&self.job.bucket, &self.job.key, Some(self.range.clone()), e)
    }

    /// The next chunk; `None` once the promised length has arrived.
    pub(super) async fn next(&mut self) -> Result<Option<Bytes>, Error> {
        let stall = self.engine.cfg.stall_timeout;
        loop {
            let silence_end = self.last_chunk + stall;
            let next = tokio::select! {
                n = tokio::time::timeout_at(silence_end.min(self.window_end), self.stream.next()) => n,
                () = self.engine.stop.cancelled() => return Err(Error::Interrupted(self.job.source_url())),
            };
            let chunk = match next {
                Err(_) if tokio::time::Instant::now() >= silence_end => return Err(self.at(stalled(self.engine))),
                Err(_) => {
                    let needed = self.min_window_bytes.min(self.expected - (self.received - self.window_bytes));
                    if self.window_bytes < needed {
                        return Err(self.at(too_slow(self.engine, self.window_bytes)));
                    }
                    self.window_end += stall;
                    self.window_bytes = 0;
                    continue;
                }
                Ok(None) if self.received < self.expected => {
                    let (got, of) = (self.received, self.expected);
                    let e = StoreError::new(StoreErrorKind::Network, format!("body ended after {got} of {of} bytes"));
                    return Err(self.at(e));
                }
                Ok(None) => return Ok(None),
                Ok(Some(Err(e))) => return Err(self.at(e)),
                Ok(Some(Ok(bytes))) => bytes,
            };
            if let Some(rate) = &self.engine.rate {
                // The wait for the budget is the run's, not the server's:
                // neither clock runs during it.
                let before = tokio::time::Instant::now();
                tokio::select! {
                    () = rate.take(chunk.len() as u64) => {}
                    () = self.engine.stop.cancelled() => return Err(Error::Interrupted(self.job.source_url())),
                }
                self.window_end += before.elapsed();
            }
            self.last_chunk = tokio::time::Instant::now();
            self.engine.moved(chunk.len() as u64, self.last_chunk.into_std());
            self.window_bytes += chunk.len() as u64;
            self.received += chunk.len() as u64;
            if self.received > self.expected {
                let (url, start, end) = (self.job.source_url(), self.range.start, self.range.end.saturating_sub(1));
                let msg =
                    format!("{url} bytes {start}-{end}: body is longer than the {} bytes promised", self.expected);
                return Err(Error::Integrity(msg));
            }
            return Ok(Some(chunk));
        }
    }
}
