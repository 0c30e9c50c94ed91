//! Fetching one part: GET attempts (each opened and clocked by `body.rs`), the
//! body streamed into positional writes, the part's running CRC, and retries
//! that resume where a body broke.

use std::sync::Arc;
use std::sync::atomic::Ordering;

use bytes::Bytes;

use super::body::{Body, open_get};
use super::engine::Engine;
use super::hasher::WHOLE_MIN_REQUESTS;
use super::object::ObjectState;
use super::settings::VerifyMode;
use crate::error::Error;
use crate::integrity::{PartDigest, PartSum};
use crate::localfs::{ALIGN, CACHE_WRITE, IoBuf, TempFile};

/// Fetches range `part` of the object into `tmp`, retrying as the policy
/// allows. The caller holds a request permit for the whole of it. With no `tmp` (an object written in one go, see
/// [`ObjectState::one_write`]), the temporary file is created by its first
/// write, in the same blocking call. Returns the range's hash, when its bytes
/// were hashed as they came, and the file.
pub(super) async fn fetch_range(
    engine: &Engine,
    object: &ObjectState,
    part: usize,
    tmp: Option<Arc<TempFile>>,
    buf: &mut IoBuf,
) -> Result<(Option<PartSum>, Option<Arc<TempFile>>), Error> {
    let range = object.parts.get(part);
    let url = object.job.source_url();
    let attempt = Attempt {
        part,
        start: range.start,
        offset: range.start,
        end: range.end,
        whole: object.parts.len() == 1,
        digest: None,
        tmp,
    };
    let began = std::time::Instant::now();
    let mut state = (engine, object, attempt, buf);
    engine
        .with_retries(&url, &mut state, |(engine, object, a, buf)| {
            Box::pin(async move {
                // A straggling body is dropped and the rest of its range
                // requested again at once (see `straggler`).
                while fetch_once(engine, object, a, buf).await? == Fetched::Straggling {}
                Ok(())
            })
        })
        .await?;
    let (_, _, attempt, _) = state;
    let secs = began.elapsed().as_secs_f64();
    tracing::debug!(object = %url, part, bytes = range.end - range.start, secs, "range fetched");
    Ok((attempt.digest.map(super::super::integrity::PartDigest::finish), attempt.tmp))
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

impl Attempt {
    /// Whether body chunks may be written as they came, not copied into the
    /// fetch buffer first: into a file that exists and is written through the
    /// page cache (direct writes need aligned memory, and the first write of
    /// a new file creates it). An MD5 updated as the bytes come is one of an
    /// object written in one buffer, which may go to the hashing thread whole
    /// ([`super::hasher::Hasher::whole_md5`]): it keeps the buffer.
    fn goes_straight(&self) -> bool {
        self.tmp.as_ref().is_some_and(|t| !t.is_direct()) && !matches!(self.digest, Some(PartDigest::Md5(_)))
    }

    /// How many of the `left` bytes of a chunk to write from the chunk itself:
    /// whole [`CACHE_WRITE`] windows, when nothing waits in the buffer, the
    /// file offset starts a window and at least [`STRAIGHT_MIN`] bytes are
    /// left. Saves copying each byte into the buffer (4% of the CPU samples
    /// of 4 x 1 GiB from SeaweedFS, whose chunks are mostly 256 - 512 KiB).
    fn straight(&self, buf: &IoBuf, left: usize) -> usize {
        let window = CACHE_WRITE as u64;
        match buf.is_empty() && left >= STRAIGHT_MIN && self.offset.is_multiple_of(window) && self.goes_straight() {
            true => left / CACHE_WRITE * CACHE_WRITE,
            false => 0,
        }
    }

    /// How many bytes the buffer holds before it is written: its capacity
    /// (up to a block boundary of the file), or, when at least
    /// [`STRAIGHT_MIN`] of the chunk's `left` bytes could go straight after
    /// it, up to the next [`CACHE_WRITE`] boundary of the file.
    fn fill_limit(&self, buf: &IoBuf, left: usize) -> usize {
        let full = buf.capacity() - (self.offset % ALIGN as u64) as usize;
        if !self.goes_straight() {
            return full;
        }
        let window = CACHE_WRITE as u64;
        let to_boundary = ((window - (self.offset + buf.len() as u64) % window) % window) as usize;
        match left >= to_boundary + STRAIGHT_MIN {
            true => (buf.len() + to_boundary).min(full),
            false => full,
        }
    }
}

/// The fewest bytes of a chunk worth writing from the chunk itself: a chunk
/// only a little over a [`CACHE_WRITE`] window would cost a write call (and a
/// report to the hasher) per window where the buffer costs one per 256 KiB.
const STRAIGHT_MIN: usize = 4 * CACHE_WRITE;

/// How a GET of a range ended, when it did not fail.
#[derive(Debug, PartialEq, Eq)]
enum Fetched {
    /// The range is written.
    Done,
    /// The body was far slower than its peers' and was dropped: the rest of
    /// the range is to be requested again.
    Straggling,
}

/// How often a body in flight is compared with its peers.
const PACE_CHECK: std::time::Duration = std::time::Duration::from_millis(100);

/// One GET of `offset..end`, under the request permit its worker holds
/// (see `pass.rs`). On failure `a.offset` is where to resume: bytes
/// received before a break are written (and hashed) first, so they are not fetched again.
async fn fetch_once(engine: &Engine, object: &ObjectState, a: &mut Attempt, buf: &mut IoBuf) -> Result<Fetched, Error> {
    let job = &object.job;
    let (offset, end) = (a.offset, a.end);
    let ranged = !(a.whole && offset == 0);
    let url = job.source_url();
    let sent = tokio::time::Instant::now();
    let resp = open_get(engine, job, offset..end, ranged).await?;
    engine.pace.started();
    if !ranged {
        object.learned_from_get(resp.checksum, resp.etag_md5);
    }
    if engine.cfg.verify != VerifyMode::Off {
        let once = object.one_write(&engine.cfg);
        if a.digest.is_none()
            && offset == a.start
            && let Some(kind) = object.inline_kind().or_else(|| object.segment_kind().filter(|_| once))
        {
            a.digest = Some(PartDigest::new(kind));
        }
        if !once && let (Some(kind), Some(tmp)) = (object.segment_kind(), &a.tmp) {
            object.open_segment(engine.hasher(), a.part, tmp, kind)?;
        }
    }

    let mut body = Body::new(engine, job, offset..end, resp.body);
    buf.clear();
    // A body's rate counts from its first byte: the wait before it is the
    // server's latency, the same for every connection (and `--stall-timeout`
    // bounds it), not a slow connection.
    let mut first_byte = None;
    let mut check_at = sent + PACE_CHECK;
    let mut straggling = None;
    let result = loop {
        let chunk = match body.next().await {
            Ok(Some(chunk)) => chunk,
            Ok(None) => break Ok(()),
            Err(e) => break Err(e),
        };
        let first = *first_byte.get_or_insert(body.last_chunk);
        if body.received < body.expected && body.last_chunk >= check_at {
            check_at = body.last_chunk + PACE_CHECK;
            straggling = engine.claim_restart(body.received, first.elapsed());
            if straggling.is_some() {
                break Ok(());
            }
        }
        // The buffer is written when it reaches its limit, which for a full
        // buffer ends on a block boundary of the file: after a first write
        // that reaches one, every write starts on a boundary, as direct
        // writes need. Into a file written through the page cache, whole 32
        // KiB windows of a large chunk are written from the chunk itself
        // (see `Attempt::straight`).
        debug_assert!(buf.capacity() >= ALIGN, "a fetch buffer of at least a block");
        let mut pos = 0;
        while pos < chunk.len() {
            let left = chunk.len() - pos;
            let straight = a.straight(buf, left);
            if straight > 0 {
                write_straight(engine, object, a, chunk.slice(pos..pos + straight)).await?;
                pos += straight;
                continue;
            }
            let limit = a.fill_limit(buf, left);
            pos += buf.push(&chunk[pos..], limit);
            if buf.len() == limit {
                flush(engine, object, buf, a).await?;
            }
        }
    };
    // What arrived before a break is kept: the next attempt starts after it.
    flush(engine, object, buf, a).await?;
    result?;
    if let Some(s) = straggling {
        let mb = |r: f64| (r / 1e5).round() / 10.0;
        tracing::info!(
            object = %url,
            from = a.offset,
            rate_mb_s = mb(s.rate),
            median_mb_s = mb(s.median),
            "requesting the rest of a straggling range again, on a new connection"
        );
        return Ok(Fetched::Straggling);
    }
    engine.pace.finished(body.expected, first_byte.unwrap_or(sent).elapsed());
    engine.succeeded();
    Ok(Fetched::Done)
}

/// Writes the buffered bytes at the attempt's offset and advances it.
async fn flush(engine: &Engine, object: &ObjectState, buf: &mut IoBuf, a: &mut Attempt) -> Result<(), Error> {
    if buf.is_empty() {
        return Ok(());
    }
    let taken = std::mem::take(buf);
    let data = write_out(engine, object, a, taken).await;
    match data {
        Ok(data) => {
            *buf = data;
            buf.clear();
            Ok(())
        }
        Err(e) => {
            *buf = IoBuf::new(engine.cfg.buffer_size);
            Err(e)
        }
    }
}

/// Writes `data` at the attempt's offset (creating the temporary file first
/// when there is none yet) and advances it: on this async thread where the
/// destination is local ([`Engine::write_io`]), else on the blocking pool.
/// The hash is updated in the same call, over the whole buffer while it is in
/// cache: large inputs are where SIMD CRCs are fastest (a body can arrive in
/// pieces of a few KiB). The exception is a whole object's MD5 in this one
/// buffer: the buffer goes to the hashing thread after the write, to be
/// hashed with other small objects' ([`super::hasher::Hasher::whole_md5`]),
/// and the digest reaches the object's commit through its segment channel. The buffer and the hash state are moved into the
/// call and back (to the pool and back, where it runs there), so nothing is
/// copied or reallocated. A buffer written past the page cache goes to the
/// segment's hasher instead, and another of the same size comes back.
async fn write_out(engine: &Engine, object: &ObjectState, a: &mut Attempt, data: IoBuf) -> Result<IoBuf, Error> {
    let (at, len, mut digest) = (a.offset, data.as_ref().len() as u64, a.digest.take());
    // A whole object's MD5 in this one buffer: hashed after the write, with
    // other small objects' (see `Hasher::whole_md5`).
    let whole = at == 0 && len == object.job.size && engine.cfg.max_requests >= WHOLE_MIN_REQUESTS;
    let whole_md5 = match whole && matches!(digest, Some(PartDigest::Md5(_))) {
        true => digest.take(),
        false => None,
    };
    let tmp = a.tmp.clone();
    let job = &object.job;
    // What creating the file needs, cloned only when it is to be created.
    let create = tmp.is_none().then(|| (engine.dirs.clone(), job.root.clone(), job.dest.clone(), job.size));
    let work = move || {
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
    };
    // Creating the file (its directories, a name) goes where the writes go:
    // a few metadata calls, cheaper on this thread than a hand-off to the
    // pool and back (two wake-ups, for every small file).
    let (data, digest, result) = engine.write_io(work).await;
    a.digest = digest;
    let (t, written) = result?;
    if a.tmp.is_none() {
        object.set_file(t.clone());
        a.tmp = Some(t);
    }
    written?;
    let data = if let Some(mut d) = whole_md5 {
        match engine.hasher().whole_md5(data) {
            Ok((rx, spare)) => {
                object.hashing_whole(rx);
                spare
            }
            // The hasher holds all it may: hashed here, on this thread (as
            // fast as the hand-over to the pool it would otherwise take).
            Err(data) => {
                d.update(data.as_ref());
                a.digest = Some(d);
                data
            }
        }
    } else if a.tmp.as_ref().is_some_and(|t| t.is_direct()) {
        // Bytes written past the page cache would be read back from the disk
        // to be hashed: the hasher takes the buffer instead.
        object.give(engine.started_hasher(), a.part, at, data).await
    } else {
        data
    };
    advance(engine, object, a, len);
    Ok(data)
}

/// Writes `data`, a piece of a body's chunk, at the attempt's offset of its
/// existing file (see [`Attempt::straight`]), updating the part's running
/// hash, and advances it.
async fn write_straight(engine: &Engine, object: &ObjectState, a: &mut Attempt, data: Bytes) -> Result<(), Error> {
    let (at, len) = (a.offset, data.len() as u64);
    let tmp = a.tmp.clone().expect("straight writes go to an existing file");
    let mut digest = a.digest.take();
    let (digest, written) = engine
        .write_io(move || {
            if let Some(d) = digest.as_mut() {
                d.update(&data);
            }
            let w = tmp.write_at(&data, at);
            (digest, w)
        })
        .await;
    a.digest = digest;
    written?;
    advance(engine, object, a, len);
    Ok(())
}

fn advance(engine: &Engine, object: &ObjectState, a: &mut Attempt, n: u64) {
    a.offset += n;
    object.wrote(engine.started_hasher(), a.part, a.offset - a.start);
    object.written.fetch_add(n, Ordering::Relaxed);
    engine.hooks.reporter.bytes(&object.job, n);
}
