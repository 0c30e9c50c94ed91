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
//! Checking: the writer hashes what it writes, in order (CRCs per range, which
//! combine; MD5 or SHA per segment), and the same [`verify`] as downloads
//! compares the result with what the store states once the last byte is out.
//! Bytes written cannot be taken back: a mismatch, or any failure, is an error
//! after some output, and the caller must say so.

use std::io::Write;
use std::ops::Range;
use std::pin::Pin;
use std::sync::{Arc, Mutex};

use futures::{Stream, StreamExt};
use tokio_util::task::AbortOnDropHandle;

use super::download::prepare;
use super::engine::Engine;
use super::fetch::{Body, open_get};
use super::job::{Download, Verification};
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

/// Streams `job` to `sink` in order; returns how it was checked. An error
/// may come after any amount of output. An error writing to the sink is
/// [`Error::Io`] with the sink's error (`BrokenPipe` when the reader left).
pub async fn stream(engine: &Arc<Engine>, job: Download, sink: Sink) -> Result<Verification, Error> {
    let job = prepare(engine, job).await.map_err(|(_, e)| e)?;
    let file = Arc::new(ObjectState::for_stream(job, &engine.cfg));
    let checking = engine.cfg.verify != VerifyMode::Off;
    let kinds = if checking { (file.inline_kind(), file.segment_kind()) } else { (None, None) };
    // Nothing to hash with: under `--verify require` that is known before
    // the first byte, so nothing is written.
    if checking && kinds == (None, None) && file.job.size > 0 {
        let early = verify(&file, engine.cfg.verify, &EtagSamples::default(), OUTPUT_WRONG);
        if let Err(e @ Error::Unverified(_)) = early {
            return Err(e);
        }
    }
    // Buffers go back here once written, and are taken again by later
    // ranges: at most `window + 1` are ever allocated.
    let free: Arc<Mutex<Vec<Vec<u8>>>> = Arc::default();
    let window = engine.cfg.part_concurrency.max(1);
    // Each range is its own task, so fetches go on while the writer is
    // busy; `buffered` starts a range only when fewer than `window` are
    // fetched or waiting, and dropping the stream aborts what is in flight.
    let ranges = futures::stream::iter(0..file.parts.len())
        .map({
            let (engine, file, free) = (engine.clone(), file.clone(), free.clone());
            move |p| {
                let (engine, file, free) = (engine.clone(), file.clone(), free.clone());
                AbortOnDropHandle::new(tokio::spawn(async move {
                    let buf = free.lock().unwrap().pop().unwrap_or_default();
                    fetch_to_memory(&engine, &file, p, buf).await
                }))
            }
        })
        .buffered(window)
        .map(|joined| match joined {
            Ok(r) => r,
            Err(e) => std::panic::resume_unwind(e.into_panic()),
        });
    let writer = {
        let file = file.clone();
        let rt = tokio::runtime::Handle::current();
        tokio::task::spawn_blocking(move || write_in_order(&file, &rt, Box::pin(ranges), &free, sink, kinds))
    };
    match writer.await {
        Ok(r) => r?,
        Err(e) => std::panic::resume_unwind(e.into_panic()),
    }
    verify(&file, engine.cfg.verify, &EtagSamples::default(), OUTPUT_WRONG)
}

/// Range `p` of the object, whole in memory (in `buf`, reused), retried from
/// its first missing byte as the policy allows.
async fn fetch_to_memory(engine: &Engine, file: &ObjectState, p: usize, mut buf: Vec<u8>) -> Result<Vec<u8>, Error> {
    let range = file.parts[p].clone();
    buf.clear();
    buf.reserve_exact((range.end - range.start) as usize);
    let url = file.job.source_url();
    let whole = file.parts.len() == 1;
    let mut state = (engine, &file.job, range, whole, buf);
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
    job: &Download,
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

/// The writer: takes ranges in order, writes each, then hashes it (a CRC per
/// range, or the running hash of its segment), recording the hashes in `file`
/// for [`verify`]; each buffer then goes back to `free`. The first failure,
/// fetching or writing, ends it (and dropping `ranges` stops the fetches).
fn write_in_order(
    file: &ObjectState,
    rt: &tokio::runtime::Handle,
    mut ranges: Pin<Box<dyn Stream<Item = Result<Vec<u8>, Error>> + Send>>,
    free: &Mutex<Vec<Vec<u8>>>,
    mut sink: Sink,
    (inline, segment): (Option<DigestKind>, Option<DigestKind>),
) -> Result<(), Error> {
    let mut digest: Option<PartDigest> = None;
    let name = sink.name.clone();
    let failed = |e| Error::io(&name, "writing", e);
    let mut p = 0;
    while let Some(data) = rt.block_on(ranges.next()) {
        let data = data?;
        sink.out.write_all(&data).map_err(failed)?;
        if let Some(kind) = inline {
            let mut d = PartDigest::new(kind);
            d.update(&data);
            file.range_hashed(p, d.finish());
        }
        if let Some(kind) = segment {
            let d = digest.get_or_insert_with(|| PartDigest::new(kind));
            d.update(&data);
            if p + 1 == file.segment_ranges(p).end
                && let Some(d) = digest.take()
            {
                file.range_hashed(p, d.finish());
            }
        }
        free.lock().unwrap().push(data);
        p += 1;
    }
    sink.out.flush().map_err(failed)
}
