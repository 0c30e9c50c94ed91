//! Fetching one part: GET attempts, body streaming into positional writes, the
//! part's running CRC, stall detection, and retries that resume where a body broke.

use std::sync::Arc;
use std::sync::atomic::Ordering;

use futures::StreamExt;

use super::engine::Engine;
use super::object::ObjectState;
use super::settings::VerifyMode;
use crate::error::{Error, StoreError, StoreErrorKind};
use crate::integrity::{PartDigest, PartSum};
use crate::localfs::TempFile;
use crate::store::GetRequest;

/// Fetches range `part` of the object into `tmp`, retrying as the policy
/// allows. With no `tmp` (an object written in one go, see
/// [`ObjectState::one_write`]), the temporary file is created by its first
/// write, in the same blocking call. Returns the range's hash, when its bytes
/// were hashed as they came, and the file.
pub(super) async fn fetch_range(
    engine: &Engine,
    file: &ObjectState,
    part: usize,
    tmp: Option<Arc<TempFile>>,
    buf: &mut Vec<u8>,
) -> Result<(Option<PartSum>, Option<Arc<TempFile>>), Error> {
    let range = file.parts[part].clone();
    let url = file.job.source_url();
    let attempt = Attempt {
        part,
        start: range.start,
        offset: range.start,
        end: range.end,
        whole: file.parts.len() == 1,
        digest: None,
        tmp,
    };
    let mut state = (engine, file, attempt, buf);
    engine.with_retries(&url, &mut state, |(engine, file, a, buf)| Box::pin(fetch_once(engine, file, a, buf))).await?;
    let (_, _, attempt, _) = state;
    Ok((attempt.digest.map(|d| d.finish()), attempt.tmp))
}

/// Progress of one part across attempts.
struct Attempt {
    /// Index of the range in the object's ranges.
    part: usize,
    start: u64,
    /// First byte not yet written.
    offset: u64,
    end: u64,
    /// The object is fetched in this one part (a plain GET when from byte 0).
    whole: bool,
    /// Hash of the bytes `start..offset`, once the checksum is known.
    digest: Option<PartDigest>,
    /// The temporary file, once it exists.
    tmp: Option<Arc<TempFile>>,
}

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

/// One GET of `offset..end`. On failure `a.offset` is where to resume: bytes
/// received before a break are written (and hashed) first, so they are not fetched again.
async fn fetch_once(engine: &Engine, file: &ObjectState, a: &mut Attempt, buf: &mut Vec<u8>) -> Result<(), Error> {
    let job = &file.job;
    let (offset, end) = (a.offset, a.end);
    let ranged = !(a.whole && offset == 0);
    let mut req = GetRequest {
        bucket: job.bucket.clone(),
        key: job.key.clone(),
        range: ranged.then_some(offset..end),
        if_match: job.etag.clone(),
        version_id: job.version_id.clone().filter(|_| !engine.versions_denied.load(Ordering::Relaxed)),
    };
    let at = |e| Error::object(&job.bucket, &job.key, Some(offset..end), e);
    let ctx = || format!("{} bytes {}-{}", job.source_url(), offset, end.saturating_sub(1));
    let stall = engine.cfg.stall_timeout;
    let url = job.source_url();
    let interrupted = || Error::Interrupted(job.source_url());
    let _permit = engine.permit(&url).await?;
    let resp = loop {
        let r = engine.unless_stopped(&url, tokio::time::timeout(stall, engine.store.get(&req))).await?;
        match r {
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
                "{}: the server ignored the Range header and sent the whole object; s3load needs ranged GETs (try a larger --part-size, or an endpoint that supports Range)",
                ctx()
            )
        } else {
            format!(
                "{}: the server sent {} bytes from offset {} where {} bytes from offset {} were asked for",
                job.source_url(),
                resp.content_length,
                start,
                expected,
                offset
            )
        };
        return Err(Error::Integrity(msg));
    }
    if !ranged {
        file.learned_from_get(resp.checksum, resp.etag_md5);
    }
    if engine.cfg.verify != VerifyMode::Off {
        let once = file.one_write(&engine.cfg);
        if a.digest.is_none()
            && offset == a.start
            && let Some(kind) = file.inline_kind().or_else(|| file.segment_kind().filter(|_| once))
        {
            a.digest = Some(PartDigest::new(kind));
        }
        if !once && let (Some(kind), Some(tmp)) = (file.segment_kind(), &a.tmp) {
            file.open_segment(engine.hasher(), a.part, tmp, kind)?;
        }
    }

    let mut body = resp.body;
    let mut received = 0u64;
    buf.clear();
    // Two clocks: silence (no byte for `stall`) and rate (fewer than
    // MIN_BODY_RATE x `stall` bytes in a window of `stall`, or what is left).
    let min_window_bytes = (MIN_BODY_RATE as f64 * stall.as_secs_f64()) as u64;
    let mut last_chunk = tokio::time::Instant::now();
    let mut window_end = last_chunk + stall;
    let mut window_bytes = 0u64;
    let result = loop {
        let silence_end = last_chunk + stall;
        let next = tokio::select! {
            n = tokio::time::timeout_at(silence_end.min(window_end), body.next()) => n,
            () = engine.stop.cancelled() => break Err(interrupted()),
        };
        let chunk = match next {
            Err(_) if tokio::time::Instant::now() >= silence_end => break Err(at(stalled(engine))),
            Err(_) => {
                let needed = min_window_bytes.min(expected - (received - window_bytes));
                if window_bytes < needed {
                    break Err(at(too_slow(engine, window_bytes)));
                }
                window_end += stall;
                window_bytes = 0;
                continue;
            }
            Ok(None) => break Ok(()),
            Ok(Some(Err(e))) => break Err(at(e)),
            Ok(Some(Ok(bytes))) => bytes,
        };
        last_chunk = tokio::time::Instant::now();
        window_bytes += chunk.len() as u64;
        received += chunk.len() as u64;
        if received > expected {
            let msg = format!("{}: body is longer than the {} bytes promised", ctx(), expected);
            break Err(Error::Integrity(msg));
        }
        // Never grow the buffer past its capacity: a Vec that overflows doubles,
        // and 32 doubled buffers were most of the peak RSS.
        if buf.len() + chunk.len() > engine.cfg.buffer_size {
            flush(engine, file, buf, a).await?;
        }
        if chunk.len() >= engine.cfg.buffer_size {
            write_out(engine, file, a, chunk).await?;
        } else {
            buf.extend_from_slice(&chunk);
        }
    };
    // What arrived before a break is kept: the next attempt starts after it.
    flush(engine, file, buf, a).await?;
    result?;
    if received < expected {
        let e = StoreError::new(StoreErrorKind::Network, format!("body ended after {received} of {expected} bytes"));
        return Err(at(e));
    }
    engine.succeeded();
    Ok(())
}

/// Writes the buffered bytes at the attempt's offset and advances it.
async fn flush(engine: &Engine, file: &ObjectState, buf: &mut Vec<u8>, a: &mut Attempt) -> Result<(), Error> {
    if buf.is_empty() {
        return Ok(());
    }
    let data = write_out(engine, file, a, std::mem::take(buf)).await;
    match data {
        Ok(data) => {
            *buf = data;
            buf.clear();
            Ok(())
        }
        Err(e) => {
            *buf = Vec::with_capacity(engine.cfg.buffer_size);
            Err(e)
        }
    }
}

/// Writes `data` at the attempt's offset (creating the temporary file first
/// when there is none yet) and advances it. The hash is updated on the same
/// blocking-pool thread, over the whole buffer while it is in cache: large
/// inputs are where SIMD CRCs are fastest (a body arrives in pieces of a few
/// KiB). The buffer and the hash state travel to the pool and back, so nothing
/// is copied or reallocated.
async fn write_out<D: AsRef<[u8]> + Send + 'static>(
    engine: &Engine,
    file: &ObjectState,
    a: &mut Attempt,
    data: D,
) -> Result<D, Error> {
    let (at, len, mut digest) = (a.offset, data.as_ref().len() as u64, a.digest.take());
    let tmp = a.tmp.clone();
    let job = &file.job;
    // What creating the file needs, cloned only when it is to be created.
    let create = tmp.is_none().then(|| (engine.dirs.clone(), job.root.clone(), job.dest.clone(), job.size));
    let (data, digest, result) = engine
        .blocking_io(move || {
            if let Some(d) = digest.as_mut() {
                d.update(data.as_ref());
            }
            let t = match (tmp, create) {
                (Some(t), _) => Ok(t),
                // One write fills the file: nothing to preallocate.
                (None, Some((dirs, root, dest, size))) => {
                    TempFile::create_in(&dirs, &root, &dest, size, false).map(Arc::new)
                }
                (None, None) => unreachable!("a file to create when there is none"),
            };
            // A file created here is kept even when the write fails: the
            // object's owner removes it.
            let r = t.map(|t| {
                let w = t.write_at(data.as_ref(), at);
                (t, w)
            });
            (data, digest, r)
        })
        .await;
    a.digest = digest;
    let (t, written) = result?;
    if a.tmp.is_none() {
        file.set_file(t.clone());
        a.tmp = Some(t);
    }
    written?;
    advance(engine, file, a, len);
    Ok(data)
}

fn advance(engine: &Engine, file: &ObjectState, a: &mut Attempt, n: u64) {
    a.offset += n;
    file.wrote(engine.started_hasher(), a.part, a.offset - a.start);
    file.written.fetch_add(n, Ordering::Relaxed);
    engine.hooks.reporter.bytes(&file.job, n);
}
