//! One object, in order, to a writer (`s3load cat`): ranged GETs in
//! parallel, reassembled in order under a memory bound, every request pinned
//! to the object's ETag (and version), checked as it streams.
//!
//! Memory: at most `part_concurrency` ranges are being fetched or waiting
//! for their turn, and one is being written, each in a buffer of at most
//! `part_size` bytes that is reused once written: `(part_concurrency + 1) x
//! part_size` of object data (144 MiB with the defaults, 9 x 16 MiB),
//! whatever the object's size.
//!
//! Checking: each range is hashed once fetched, before its turn to be
//! written (a CRC per range, which combine; MD5 or SHA per segment, the
//! object or one uploaded part, each range after the one before it in its
//! segment, segments in parallel), and the same [`verify`] as downloads
//! compares the result with what the store states once the last byte is out.
//! Bytes written cannot be taken back: a mismatch, or any failure, is an error
//! after some output, and the caller must say so.

use std::io::Write;
use std::ops::Range;
use std::pin::Pin;
use std::sync::{Arc, Mutex};

use futures::{Stream, StreamExt};
use tokio::sync::oneshot;
use tokio_util::task::AbortOnDropHandle;

use super::body::{Body, open_get};
use super::download::prepare;
use super::engine::Engine;
use super::job::{GetJob, Verification};
use super::object::ObjectState;
use super::settings::VerifyMode;
use super::verify::{EtagSamples, verify};
use crate::error::Error;
use crate::integrity::{DigestKind, PartDigest};

/// What a failed check means for what was already written.
const OUTPUT_WRONG: &str = "the bytes already written are wrong: discard them";

/// Where the bytes go, and its name for messages.
pub struct Sink {
    pub out: Box<dyn Write + Send>,
    pub name: String,
}

impl std::fmt::Debug for Sink {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Sink").field("name", &self.name).finish_non_exhaustive()
    }
}

/// Streams `job` to `sink` in order; returns how it was checked. An error
/// may come after any amount of output. An error writing to the sink is
/// [`Error::Io`] with the sink's error (`BrokenPipe` when the reader left).
pub async fn stream(engine: &Arc<Engine>, job: GetJob, sink: Sink) -> Result<Verification, Error> {
    let job = *prepare(engine, Box::new(job)).await.map_err(|(_, e)| e)?;
    let object = Arc::new(ObjectState::for_stream(job, &engine.cfg));
    let checking = engine.cfg.verify != VerifyMode::Off;
    let kinds = if checking { (object.inline_kind(), object.segment_kind()) } else { (None, None) };
    // Nothing to hash with: under `--verify require` that is known before
    // the first byte, so nothing is written.
    if checking && kinds == (None, None) && object.job.size > 0 {
        let early = verify(&object, engine.cfg.verify, &EtagSamples::default(), OUTPUT_WRONG);
        if let Err(e @ Error::Unverified(_)) = early {
            return Err(e);
        }
    }
    // Buffers go back here once written, and are taken again by later
    // ranges: at most `window + 1` are ever allocated.
    let free: Arc<Mutex<Vec<Vec<u8>>>> = Arc::default();
    // Under --limit-rate, ranges fetched ahead share the rate with the one
    // to be written next and delay it: no more ahead than the rate fetches
    // in about a second.
    let window = match engine.cfg.limit_rate {
        Some(rate) => (rate / engine.cfg.part_size.max(1)).clamp(1, engine.cfg.part_concurrency.max(1) as u64) as usize,
        None => engine.cfg.part_concurrency.max(1),
    };
    // Each range is its own task, so fetches go on while the writer is
    // busy; `buffered` starts a range only when fewer than `window` are
    // fetched or waiting, and dropping the stream aborts what is in flight.
    let mut chain = Chain::default();
    let ranges = futures::stream::iter(0..object.parts.len())
        .map({
            let (engine, object, free) = (engine.clone(), object.clone(), free.clone());
            move |p| {
                let (engine, object, free) = (engine.clone(), object.clone(), free.clone());
                let link = chain.link(&object, p);
                AbortOnDropHandle::new(tokio::spawn(async move {
                    let buf = free.lock().unwrap().pop().unwrap_or_default();
                    let data = fetch_to_memory(&engine, &object, p, buf).await?;
                    hash(&object, link, p, data, kinds).await
                }))
            }
        })
        .buffered(window)
        .map({
            let url = object.job.source_url();
            move |joined| joined.map_err(|e| cut_short(e, &url)).and_then(|r| r)
        });
    let writer = {
        let rt = tokio::runtime::Handle::current();
        tokio::task::spawn_blocking(move || write_in_order(&rt, Box::pin(ranges), &free, sink))
    };
    match writer.await {
        Ok(r) => r?,
        Err(e) => std::panic::resume_unwind(e.into_panic()),
    }
    verify(&object, engine.cfg.verify, &EtagSamples::default(), OUTPUT_WRONG)
}

/// Range `p` of the object, whole in memory (in `buf`, reused), retried from
/// its first missing byte as the policy allows.
async fn fetch_to_memory(engine: &Engine, object: &ObjectState, p: usize, mut buf: Vec<u8>) -> Result<Vec<u8>, Error> {
    let range = object.parts.get(p);
    buf.clear();
    buf.reserve_exact((range.end - range.start) as usize);
    let url = object.job.source_url();
    let whole = object.parts.len() == 1;
    let mut state = (engine, &object.job, range, whole, buf);
    engine
        .with_retries(&url, &mut state, |(engine, job, range, whole, data)| {
            Box::pin(fetch_once(engine, job, range.clone(), *whole, data))
        })
        .await?;
    Ok(state.4)
}

/// One GET of what `data` lacks of `range`, appended to it.
async fn fetch_once(
    engine: &Engine,
    job: &GetJob,
    range: Range<u64>,
    whole: bool,
    data: &mut Vec<u8>,
) -> Result<(), Error> {
    let offset = range.start + data.len() as u64;
    let _permit = engine.permit(&job.source_url()).await?;
    let resp = open_get(engine, job, offset..range.end, !(whole && offset == 0)).await?;
    let mut body = Body::new(engine, job, offset..range.end, resp.body);
    while let Some(chunk) = body.next().await? {
        data.extend_from_slice(&chunk);
    }
    engine.succeeded();
    Ok(())
}

/// The hash of each segment in progress, handed from one range to the next
/// (segments hashed in order: the object, or each uploaded part). Links are
/// made as ranges start, in order: only the ranges in flight hold one.
#[derive(Default)]
struct Chain {
    /// Where the range after the last one linked gets its segment's hash from.
    next: Option<oneshot::Receiver<PartDigest>>,
}

/// Range `p`'s place in its segment's chain: it waits for `from` (none for
/// a segment's first range) and sends on `to` (none for its last).
struct Link {
    from: Option<oneshot::Receiver<PartDigest>>,
    to: Option<oneshot::Sender<PartDigest>>,
}

impl Chain {
    /// The link of range `p`; ranges are linked in order.
    fn link(&mut self, object: &ObjectState, p: usize) -> Link {
        let segment = object.segment_ranges(p);
        let from = if p == segment.start { None } else { self.next.take() };
        let to = (p + 1 < segment.end).then(|| {
            let (tx, rx) = oneshot::channel();
            self.next = Some(rx);
            tx
        });
        Link { from, to }
    }
}

/// Hashes range `p` once fetched, off the async threads: its CRC, or its
/// part of its segment's hash (after the range before it in the segment),
/// recorded in `object` for [`verify`].
async fn hash(
    object: &ObjectState,
    link: Link,
    p: usize,
    data: Vec<u8>,
    (inline, segment): (Option<DigestKind>, Option<DigestKind>),
) -> Result<Vec<u8>, Error> {
    let mut running = None;
    if let Some(kind) = segment {
        running = Some(match link.from {
            Some(rx) => rx.await.map_err(|_| Error::Internal("a segment's hash was lost".into()))?,
            None => PartDigest::new(kind),
        });
    }
    if inline.is_none() && running.is_none() {
        return Ok(data);
    }
    let (data, crc, running) = tokio::task::spawn_blocking(move || {
        let crc = inline.map(|kind| {
            let mut d = PartDigest::new(kind);
            d.update(&data);
            d.finish()
        });
        let running = running.map(|mut d| {
            d.update(&data);
            d
        });
        (data, crc, running)
    })
    .await
    .map_err(|e| cut_short(e, &object.job.source_url()))?;
    if let Some(crc) = crc {
        object.range_hashed(p, crc);
    }
    if let Some(d) = running {
        match link.to {
            Some(next) => {
                let _ = next.send(d);
            }
            None => object.range_hashed(p, d.finish()),
        }
    }
    Ok(data)
}

/// A task of the stream that did not finish: its panic goes on; otherwise
/// it was cancelled (the runtime shutting down as the process leaves).
fn cut_short(e: tokio::task::JoinError, url: &str) -> Error {
    match e.try_into_panic() {
        Ok(panic) => std::panic::resume_unwind(panic),
        Err(_) => Error::Interrupted(url.to_string()),
    }
}

/// The writer: takes ranges in order and writes each; each buffer then goes
/// back to `free`. The first failure, fetching or writing, ends it (and
/// dropping `ranges` stops the fetches).
fn write_in_order(
    rt: &tokio::runtime::Handle,
    mut ranges: Pin<Box<dyn Stream<Item = Result<Vec<u8>, Error>> + Send>>,
    free: &Mutex<Vec<Vec<u8>>>,
    mut sink: Sink,
) -> Result<(), Error> {
    let name = sink.name.clone();
    let failed = |e| Error::io(&name, "writing", e);
    while let Some(data) = rt.block_on(ranges.next()) {
        let data = data?;
        sink.out.write_all(&data).map_err(failed)?;
        free.lock().unwrap().push(data);
    }
    sink.out.flush().map_err(failed)
}
