//! Fetching one part: GET attempts, body streaming into positional writes, the
//! part's running CRC, stall detection, and retries that resume where a body broke.

use std::sync::Arc;
use std::sync::atomic::Ordering;

use std::ops::Range;

use bytes::Bytes;
use futures::StreamExt;

use super::engine::Engine;
use super::hasher::WHOLE_MIN_REQUESTS;
use super::job::Download;
use super::object::ObjectState;
use super::settings::VerifyMode;
use crate::error::{Error, StoreError, StoreErrorKind};
use crate::integrity::{PartDigest, PartSum};
use crate::localfs::{ALIGN, IoBuf, TempFile};
use crate::store::{BodyStream, GetRequest, GetResponse};

/// Fetches range `part` of the object into `tmp`, retrying as the policy
/// allows. The caller holds a request permit for the whole of it. With no `tmp` (an object written in one go, see
/// [`ObjectState::one_write`]), the temporary file is created by its first
/// write, in the same blocking call. Returns the range's hash, when its bytes
/// were hashed as they came, and the file.
pub(super) async fn fetch_range(
    engine: &Engine,
    file: &ObjectState,
    part: usize,
    tmp: Option<Arc<TempFile>>,
    buf: &mut IoBuf,
) -> Result<(Option<PartSum>, Option<Arc<TempFile>>), Error> {
    let range = file.parts.get(part);
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
    let began = std::time::Instant::now();
    let mut state = (engine, file, attempt, buf);
    engine
        .with_retries(&url, &mut state, |(engine, file, a, buf)| {
            Box::pin(async move {
                // A straggling body is dropped and the rest of its range
                // requested again at once (see `straggler`).
                while fetch_once(engine, file, a, buf).await? == Fetched::Straggling {}
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
async fn fetch_once(engine: &Engine, file: &ObjectState, a: &mut Attempt, buf: &mut IoBuf) -> Result<Fetched, Error> {
    let job = &file.job;
    let (offset, end) = (a.offset, a.end);
    let ranged = !(a.whole && offset == 0);
    let url = job.source_url();
    let sent = tokio::time::Instant::now();
    let resp = open_get(engine, job, offset..end, ranged).await?;
    engine.pace.started();
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
        // The buffer is written when full, and a full buffer ends on a block
        // boundary of the file: after a first write that reaches one, every
        // write starts on a boundary, as direct writes need.
        debug_assert!(buf.capacity() >= ALIGN, "a fetch buffer of at least a block");
        let mut rest = &chunk[..];
        while !rest.is_empty() {
            let full = buf.capacity() - (a.offset % ALIGN as u64) as usize;
            let n = buf.push(rest, full);
            rest = &rest[n..];
            if buf.len() == full {
                flush(engine, file, buf, a).await?;
            }
        }
    };
    // What arrived before a break is kept: the next attempt starts after it.
    flush(engine, file, buf, a).await?;
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

/// Sends a GET of `range` of `job` (pinned to its ETag, and to its version
/// unless the store refused versions), or of the whole object when `ranged` is
/// false, and checks that the answer is that range. The caller holds a
/// request permit.
pub(super) async fn open_get(
    engine: &Engine,
    job: &Download,
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
    job: &'a Download,
    range: Range<u64>,
    stream: BodyStream,
    expected: u64,
    received: u64,
    min_window_bytes: u64,
    last_chunk: tokio::time::Instant,
    window_end: tokio::time::Instant,
    window_bytes: u64,
}

impl<'a> Body<'a> {
    pub(super) fn new(engine: &'a Engine, job: &'a Download, range: Range<u64>, stream: BodyStream) -> Body<'a> {
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

/// Writes the buffered bytes at the attempt's offset and advances it.
async fn flush(engine: &Engine, file: &ObjectState, buf: &mut IoBuf, a: &mut Attempt) -> Result<(), Error> {
    if buf.is_empty() {
        return Ok(());
    }
    let taken = std::mem::take(buf);
    let data = write_out(engine, file, a, taken).await;
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
/// cache: large inputs are where SIMD CRCs are fastest (a body arrives in
/// pieces of a few KiB). The exception is a whole object's MD5 in this one
/// buffer: the buffer goes to the hashing thread after the write, to be
/// hashed with other small objects' ([`super::hasher::Hasher::whole_md5`]),
/// and the digest reaches the object's commit through its segment channel. The buffer and the hash state are moved into the
/// call and back (to the pool and back, where it runs there), so nothing is
/// copied or reallocated. A buffer written past the page cache goes to the
/// segment's hasher instead, and another of the same size comes back.
async fn write_out(engine: &Engine, file: &ObjectState, a: &mut Attempt, data: IoBuf) -> Result<IoBuf, Error> {
    let (at, len, mut digest) = (a.offset, data.as_ref().len() as u64, a.digest.take());
    // A whole object's MD5 in this one buffer: hashed after the write, with
    // other small objects' (see `Hasher::whole_md5`).
    let whole = at == 0 && len == file.job.size && engine.cfg.max_requests >= WHOLE_MIN_REQUESTS;
    let whole_md5 = match whole && matches!(digest, Some(PartDigest::Md5(_))) {
        true => digest.take(),
        false => None,
    };
    let tmp = a.tmp.clone();
    let job = &file.job;
    // What creating the file needs, cloned only when it is to be created.
    let create = tmp.is_none().then(|| (engine.dirs.clone(), job.root.clone(), job.dest.clone(), job.size));
    let creates = create.is_some();
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
    // Creating the file (directories, a name) is filesystem metadata: always
    // off the async threads.
    let (data, digest, result) = if creates { engine.blocking_io(work).await } else { engine.write_io(work).await };
    a.digest = digest;
    let (t, written) = result?;
    if a.tmp.is_none() {
        file.set_file(t.clone());
        a.tmp = Some(t);
    }
    written?;
    let data = if let Some(mut d) = whole_md5 {
        match engine.hasher().whole_md5(data) {
            Ok((rx, spare)) => {
                file.hashing_whole(rx);
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
        file.give(engine.started_hasher(), a.part, at, data).await
    } else {
        data
    };
    advance(engine, file, a, len);
    Ok(data)
}

fn advance(engine: &Engine, file: &ObjectState, a: &mut Attempt, n: u64) {
    a.offset += n;
    file.wrote(engine.started_hasher(), a.part, a.offset - a.start);
    file.written.fetch_add(n, Ordering::Relaxed);
    engine.hooks.reporter.bytes(&file.job, n);
}
