//! Hashing that cannot follow the ranges: the MD5 of an ETag, SHA256 and SHA1
//! are computed over a *segment* (a whole object, or one uploaded part) in byte
//! order, while its ranges download in parallel and out of order.
//!
//! A dedicated thread hashes each segment's written prefix as it grows: the
//! engine reports how far the prefix reaches ([`Hasher::ready`]), the thread
//! reads those bytes back with `pread` (they were just written, so they come
//! from the page cache, not the disk) and feeds them to the segment's digest.
//! Bytes written past the page cache (`--write-mode direct`) are handed over
//! in the buffers they were written from ([`Hasher::give`]) and hashed from
//! memory; those it could not take are read back from the disk directly.
//! A small object that arrives in one write buffer and is checked by its MD5
//! is handed over whole once written ([`Hasher::whole_md5`]): the thread
//! waits up to [`LINGER`] for others and hashes them in one call.
//! MD5s of independent segments are computed together, several per SIMD
//! instruction (`md5-many`: 8 lanes on AVX2, 16 on AVX-512, with a scalar
//! fallback chosen at run time), which is where most of the CPU of checking
//! legacy objects went. Requests never wait on hashing, except the last part
//! of an object, whose commit needs the result.

use std::collections::{HashMap, VecDeque};
use std::fs::File;
use std::ops::Range;
use std::os::unix::fs::FileExt;
use std::sync::{Arc, Condvar, Mutex};
use std::thread::JoinHandle;

use tokio::sync::oneshot;

use crate::integrity::{DigestKind, PartDigest, PartSum};
use crate::localfs::{ALIGN, IoBuf};

/// Bytes read and hashed per segment per step. Small enough that a batch of
/// [`LANES`] buffers stays within a few MiB; large enough to amortize a `pread`.
const CHUNK: usize = 256 << 10;

/// Segments hashed together at most: three AVX2 batches of 8, which
/// `md5-many` interleaves for instruction-level parallelism.
const LANES: usize = 24;

/// Segments worth waiting for before a step: a multi-buffer MD5 of fewer than
/// 8 lanes costs nearly what 8 do, and one lane is 6x slower per byte than 8.
const BATCH: usize = 8;

/// Bytes a segment may be written ahead of its hash before it is hashed
/// whatever the batch: bounds how far behind the page cache reads lag.
const LAG: u64 = 8 << 20;

/// How long [`Hasher::give`] waits for room before handing the buffer back.
const GIVE_WAIT: std::time::Duration = std::time::Duration::from_millis(200);

/// Given buffers a segment may hold before it is hashed whatever the batch.
const GIVEN_LAG: usize = 8;

/// Buffers held at most, all segments and small objects together (12 MiB of
/// 256 KiB buffers): beyond it a segment's buffer is refused and its bytes
/// read back instead, and a small object is hashed by its own worker.
const MAX_GIVEN: usize = 48;

/// How long a small object's bytes may wait for others to be hashed with
/// ([`Hasher::whole_md5`]): a multi-buffer MD5 of 8 lanes (AVX2) or 16
/// (AVX-512) costs about what one lane does, and thousands of small objects arrive a few hundred a second per
/// request in flight. The wait delays the object's commit, not a request.
const LINGER: std::time::Duration = std::time::Duration::from_millis(4);

/// Small objects are handed over ([`Hasher::whole_md5`]) only when at least
/// this many requests can be in flight: fewer could never fill a batch worth
/// the hand-over, and the workers waiting for their objects' hashes would
/// leave request slots unused (measured: `--numworkers 1` took 1.8 times as
/// long on 1,500 small objects).
pub(super) const WHOLE_MIN_REQUESTS: usize = BATCH;

/// The result of one segment: its digest, or why its bytes could not be read.
pub(super) type SegmentResult = Result<PartSum, String>;

/// A whole object's bytes in one buffer, waiting to be MD5-hashed with others.
struct Whole {
    buf: IoBuf,
    since: std::time::Instant,
    tx: oneshot::Sender<SegmentResult>,
}

/// Handle of a segment being hashed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub(super) struct StreamId(u64);

/// Where a segment's bytes are read back from: the temporary file, and its
/// direct view when its bytes were written past the page cache (reading them
/// back through the cache would fill it with a second copy).
#[derive(Debug)]
pub(super) struct ReadBack {
    pub buffered: File,
    pub direct: Option<File>,
}

impl ReadBack {
    /// Reads `len` bytes at `at` into `buf`: directly, in whole blocks, when
    /// the file has a direct view and `at` is on a block boundary (bytes past
    /// `len` in the last block are read and ignored); otherwise, or when the
    /// filesystem refuses, through the page cache.
    fn read(&self, buf: &mut IoBuf, at: u64, len: usize) -> std::io::Result<()> {
        if let Some(direct) = &self.direct
            && at.is_multiple_of(ALIGN as u64)
        {
            let want = len.next_multiple_of(ALIGN);
            let spare = &mut buf.spare()[..want];
            let mut got = 0;
            // Short only at the end of the file, which is past `len`.
            while got < len {
                match direct.read_at(&mut spare[got..], at + got as u64) {
                    Ok(0) => break,
                    Ok(n) if n.is_multiple_of(ALIGN) || got + n >= len => got += n,
                    Ok(_) | Err(_) => break,
                }
            }
            if got >= len {
                buf.set_len(len);
                return Ok(());
            }
        }
        self.buffered.read_exact_at(&mut buf.spare()[..len], at)?;
        buf.set_len(len);
        Ok(())
    }
}

struct Stream {
    file: Arc<ReadBack>,
    /// Buffers written with `O_DIRECT` and handed over with their offsets
    /// ([`Hasher::give`]), in order: hashed from memory, not read back from
    /// the disk.
    given: VecDeque<(u64, IoBuf)>,
    /// Next byte to hash.
    hashed: u64,
    /// Bytes before this offset are written.
    ready: u64,
    end: u64,
    /// `None` while a thread is hashing a step of this segment.
    digest: Option<PartDigest>,
    tx: Option<oneshot::Sender<SegmentResult>>,
}

impl Stream {
    /// Whether a step is worth taking now: a full chunk, or the segment's tail.
    fn due(&self) -> bool {
        self.digest.is_some() && (self.ready - self.hashed >= CHUNK as u64 || (self.ready == self.end))
    }

    /// Due, and not to be kept waiting for a fuller batch: finished (its
    /// object may be waiting to commit) or far behind.
    fn urgent(&self) -> bool {
        self.due() && (self.ready == self.end || self.ready - self.hashed >= LAG || self.given.len() >= GIVEN_LAG)
    }

    /// The given buffer holding the next bytes to hash, once they are all
    /// reported written. Buffers are given only where they extend the written
    /// prefix, so the queue is in order and its front is next; one whose
    /// bytes were read back meanwhile (the hashing thread stepped between the
    /// hand-over and the report) is passed, and handed back to be freed.
    fn next_given(&mut self, passed: &mut Vec<IoBuf>) -> Option<IoBuf> {
        while let Some((at, _)) = self.given.front()
            && *at < self.hashed
        {
            passed.extend(self.given.pop_front().map(|(_, b)| b));
        }
        let (at, buf) = self.given.front()?;
        if *at != self.hashed || self.ready < at + buf.len() as u64 {
            return None;
        }
        self.given.pop_front().map(|(_, b)| b)
    }
}

impl State {
    /// A free buffer of capacity `cap`, for a caller that handed one over.
    fn take_free(&mut self, cap: usize) -> Option<IoBuf> {
        let i = self.free.iter().rposition(|b| b.capacity() == cap)?;
        Some(self.free.swap_remove(i))
    }

    /// When the small objects waiting are to be hashed: now when a full
    /// batch waits (or the run is ending), else when the first has waited
    /// [`LINGER`]; `None` when none waits.
    fn wholes_due(&self) -> Option<std::time::Instant> {
        let first = self.wholes.first()?;
        match self.wholes.len() >= self.lanes || self.closed {
            true => Some(first.since),
            false => Some(first.since + LINGER),
        }
    }

    /// Whether a step is worth taking now: a full batch of due segments, an
    /// urgent one, or every segment due (no other is coming to fill the batch).
    fn worth_a_step(&self) -> bool {
        let mut due = 0;
        for s in self.streams.values() {
            if s.urgent() {
                return true;
            }
            due += usize::from(s.due());
        }
        let idle = self.streams.values().filter(|s| s.digest.is_some()).count();
        // With three batches' worth of segments being written, wait for two:
        // 16 lanes hash 20% faster than 8 (4.4 GiB/s against 3.6, measured).
        let want = if idle >= 3 * BATCH { 2 * BATCH } else { BATCH };
        // Many buffers held: hash what is due rather than hold more.
        due > 0 && (due >= want || due == idle || self.given >= MAX_GIVEN / 2)
    }
}

#[derive(Default)]
struct State {
    streams: HashMap<StreamId, Stream>,
    next_id: u64,
    closed: bool,
    /// Buffers the hasher holds, all streams and small objects together:
    /// queued, or being hashed; counted until they are free again.
    given: usize,
    /// Buffers hashed and free for the fetches to take again.
    free: Vec<IoBuf>,
    /// Bytes hashed from buffers handed over, and bytes read back.
    from_buffers: u64,
    read_back: u64,
    /// Whole small objects waiting for company ([`Hasher::whole_md5`]).
    wholes: Vec<Whole>,
    /// Lanes worth waiting for: the MD5 engine's native width, at least 8.
    lanes: usize,
    /// Small objects hashed, and how many multi-buffer calls that took.
    wholes_hashed: u64,
    whole_calls: u64,
}

struct Shared {
    state: Mutex<State>,
    work: Condvar,
    /// Told when hashed buffers are free again (see [`Hasher::give`]).
    room: tokio::sync::Notify,
}

impl Shared {
    fn new() -> Shared {
        let lanes = md5_many::Md5Many::new().lanes().max(BATCH);
        let state = State { lanes, ..State::default() };
        Shared { state: Mutex::new(state), work: Condvar::new(), room: tokio::sync::Notify::new() }
    }
}

/// The hashing threads of one run; they stop when it is dropped.
pub(super) struct Hasher {
    shared: Arc<Shared>,
    threads: Vec<JoinHandle<()>>,
}

impl Hasher {
    /// Starts `threads` hashing threads (at least one).
    pub fn new(threads: usize) -> Hasher {
        let shared = Arc::new(Shared::new());
        let threads = (0..threads.max(1))
            .map(|i| {
                let shared = shared.clone();
                std::thread::Builder::new()
                    .name(format!("s3load-hash-{i}"))
                    .spawn(move || hash_loop(&shared))
                    .expect("spawning a hashing thread")
            })
            .collect();
        Hasher { shared, threads }
    }

    /// Small objects wait for at most `requests` of them (the requests that
    /// can be in flight at once; see [`Hasher::whole_md5`]): a batch larger
    /// than that would keep every worker waiting for its commit, none left
    /// for a request, until [`LINGER`] is over.
    pub fn whole_batch_at_most(self, requests: usize) -> Hasher {
        let mut st = self.shared.state.lock().unwrap();
        st.lanes = st.lanes.min(requests.max(1));
        drop(st);
        self
    }

    /// Starts hashing `range` of `file` with `kind`, as its bytes are reported
    /// written. The receiver gets the digest once the last byte is hashed.
    pub fn open(
        &self,
        file: Arc<ReadBack>,
        range: Range<u64>,
        kind: DigestKind,
    ) -> (StreamId, oneshot::Receiver<SegmentResult>) {
        let (tx, rx) = oneshot::channel();
        let mut st = self.shared.state.lock().unwrap();
        let id = StreamId(st.next_id);
        st.next_id += 1;
        let stream = Stream {
            file,
            given: VecDeque::new(),
            hashed: range.start,
            ready: range.start,
            end: range.end,
            digest: Some(PartDigest::new(kind)),
            tx: Some(tx),
        };
        let due = stream.due();
        st.streams.insert(id, stream);
        drop(st);
        if due {
            self.shared.work.notify_one();
        }
        (id, rx)
    }

    /// The segment's bytes before `upto` are written. Never moves backwards.
    pub fn ready(&self, id: StreamId, upto: u64) {
        let mut st = self.shared.state.lock().unwrap();
        let Some(s) = st.streams.get_mut(&id) else { return };
        let was = (s.due(), s.urgent());
        s.ready = s.ready.max(upto.min(s.end));
        let now = (s.due(), s.urgent());
        drop(st);
        if now != was {
            self.shared.work.notify_one();
        }
    }

    /// Hands over `buf`, just written at `at` in the segment's file, to be
    /// hashed from memory; returns a buffer of the same capacity for the
    /// caller's next bytes (a free one, or a new one). While the hasher holds
    /// [`MAX_GIVEN`] buffers, waits up to [`GIVE_WAIT`] for one to be free:
    /// hashing is far faster than bodies arrive, and a buffer refused is read
    /// back from the disk, which slows the hashing thread further. A buffer
    /// the hasher cannot take (still no room, or bytes already hashed) is
    /// given back, and its bytes are read back as without this call. Call it
    /// before reporting the bytes written ([`Hasher::ready`]).
    pub async fn give(&self, id: StreamId, at: u64, mut buf: IoBuf) -> IoBuf {
        let deadline = tokio::time::Instant::now() + GIVE_WAIT;
        loop {
            let room = self.shared.room.notified();
            let mut room = std::pin::pin!(room);
            room.as_mut().enable();
            match self.try_give(id, at, buf) {
                Given::Taken(spare) => return spare,
                Given::Never(b) => return b,
                Given::Full(b) => buf = b,
            }
            if tokio::time::timeout_at(deadline, room).await.is_err() {
                return buf;
            }
        }
    }

    /// [`Hasher::give`] without waiting. Only a buffer that extends the
    /// segment's written prefix is taken: bytes of a later range of the same
    /// segment (a single PUT's MD5 or a SHA over several ranges) could not be
    /// hashed until the ranges before them are written, and would hold room
    /// meanwhile; they are read back when their turn comes.
    fn try_give(&self, id: StreamId, at: u64, buf: IoBuf) -> Given {
        let cap = buf.capacity();
        {
            let mut st = self.shared.state.lock().unwrap();
            let st = &mut *st;
            let held = st.given;
            let Some(s) = st.streams.get_mut(&id) else { return Given::Never(buf) };
            let next = s.given.back().map_or(s.ready, |(a, b)| a + b.len() as u64).max(s.ready);
            if at != next || buf.is_empty() {
                return Given::Never(buf);
            }
            if held >= MAX_GIVEN {
                self.shared.work.notify_one();
                return Given::Full(buf);
            }
            s.given.push_back((at, buf));
            st.given += 1;
            // Many held: the hashing thread steps without waiting for a full batch.
            if st.given >= MAX_GIVEN / 2 {
                self.shared.work.notify_one();
            }
            if let Some(b) = st.take_free(cap) {
                return Given::Taken(b);
            }
        }
        Given::Taken(IoBuf::new(cap))
    }

    /// Takes `buf`, the whole of a small object just written, to compute its
    /// MD5 together with other small objects' (see [`LINGER`]); returns the
    /// receiver of the digest and a buffer of the same capacity to go on
    /// with. While the hasher holds [`MAX_GIVEN`] buffers, the buffer is
    /// handed back (`Err`): the caller hashes it itself.
    pub fn whole_md5(&self, buf: IoBuf) -> Result<(oneshot::Receiver<SegmentResult>, IoBuf), IoBuf> {
        let cap = buf.capacity();
        let (tx, rx) = oneshot::channel();
        let mut st = self.shared.state.lock().unwrap();
        if st.given >= MAX_GIVEN || st.closed {
            return Err(buf);
        }
        st.given += 1;
        st.wholes.push(Whole { buf, since: std::time::Instant::now(), tx });
        // The first one starts the thread's clock; a full batch ends its wait.
        if st.wholes.len() == 1 || st.wholes.len() == st.lanes {
            self.shared.work.notify_one();
        }
        let spare = st.take_free(cap);
        drop(st);
        Ok((rx, spare.unwrap_or_else(|| IoBuf::new(cap))))
    }

    /// Forgets a segment whose object failed; its receiver sees a closed channel.
    pub fn cancel(&self, id: StreamId) {
        {
            let mut st = self.shared.state.lock().unwrap();
            if let Some(s) = st.streams.remove(&id) {
                st.given -= s.given.len();
            }
        }
        // The batch it held back may be complete without it.
        self.shared.work.notify_one();
    }
}

impl Drop for Hasher {
    fn drop(&mut self) {
        self.shared.state.lock().unwrap().closed = true;
        self.shared.work.notify_all();
        for t in self.threads.drain(..) {
            let _ = t.join();
        }
        let st = self.shared.state.lock().unwrap();
        tracing::debug!(from_buffers = st.from_buffers, read_back = st.read_back, "bytes hashed in order");
        tracing::debug!(objects = st.wholes_hashed, calls = st.whole_calls, "small objects hashed together");
    }
}

/// What [`Hasher::try_give`] did with a buffer.
enum Given {
    /// Taken; here is one to go on with.
    Taken(IoBuf),
    /// Not taken for now: the hasher holds [`MAX_GIVEN`].
    Full(IoBuf),
    /// Not taken, and never will be: its bytes are read back.
    Never(IoBuf),
}

/// One step taken by a thread: `len` bytes of a segment from `at`.
struct Step {
    id: StreamId,
    file: Arc<ReadBack>,
    /// The bytes, when they were handed over: nothing to read back.
    given: Option<IoBuf>,
    at: u64,
    len: usize,
    digest: PartDigest,
}

/// What the hashing thread does next.
enum Work {
    /// Small objects whose wait is over (or a full batch of them).
    Wholes(Vec<Whole>),
    /// A step of each segment taken.
    Steps(Vec<Step>),
    Stop,
}

fn hash_loop(shared: &Shared) {
    let md5 = md5_many::Md5Many::new();
    let mut bufs: Vec<IoBuf> = Vec::new();
    loop {
        match next_work(shared) {
            Work::Wholes(wholes) => hash_wholes(shared, md5, wholes),
            Work::Steps(steps) => run_steps(shared, md5, &mut bufs, steps),
            Work::Stop => return,
        }
    }
}

/// Waits for work: small objects first (their commits wait on them; once
/// the hasher is closed they are due at once, so none is left unanswered),
/// then segments; stops when the hasher is closed and no small object waits.
fn next_work(shared: &Shared) -> Work {
    let mut st = shared.state.lock().unwrap();
    loop {
        let now = std::time::Instant::now();
        let wholes_at = st.wholes_due();
        if wholes_at.is_some_and(|at| at <= now) {
            return Work::Wholes(std::mem::take(&mut st.wholes));
        }
        if st.closed {
            return Work::Stop;
        }
        if st.worth_a_step() {
            return Work::Steps(take_steps(&mut st));
        }
        st = match wholes_at {
            Some(at) => shared.work.wait_timeout(st, at - now).unwrap().0,
            None => shared.work.wait(st).unwrap(),
        };
    }
}

/// MD5s whole small objects together, in multi-buffer calls of up to
/// [`LANES`] objects (a batch that is not a multiple of 8 is filled with
/// copies of its first input, whose results are dropped, as `hash_steps`
/// does; lengths may differ: md5-many hashes their common blocks together and
/// the rest apart), then sends each digest and frees the buffers.
fn hash_wholes(shared: &Shared, md5: md5_many::Md5Many, wholes: Vec<Whole>) {
    let mut digests = Vec::with_capacity(wholes.len());
    let mut calls = 0;
    for batch in wholes.chunks(LANES) {
        let mut inputs: Vec<&[u8]> = batch.iter().map(|w| w.buf.as_ref()).collect();
        let width = match inputs.len() {
            1 => 1,
            n => n.div_ceil(8) * 8,
        };
        inputs.resize(width, inputs[0]);
        let mut out = vec![[0u8; 16]; width];
        if width == 1 {
            out[0] = md5_many::md5(inputs[0]);
        } else {
            md5.hash_many(&inputs, &mut out);
        }
        digests.extend(out.into_iter().take(batch.len()));
        calls += 1;
    }
    let mut sends = Vec::with_capacity(wholes.len());
    {
        let mut st = shared.state.lock().unwrap();
        st.wholes_hashed += wholes.len() as u64;
        st.whole_calls += calls;
        st.given -= wholes.len();
        for (w, d) in wholes.into_iter().zip(digests) {
            st.free.push(w.buf);
            sends.push((w.tx, d));
        }
    }
    shared.room.notify_waiters();
    for (tx, d) in sends {
        let _ = tx.send(Ok(PartSum::Hash(crate::integrity::DigestValue::new(&d).expect("16 bytes"))));
    }
}

/// Reads and hashes one step of each segment taken, outside the lock, then
/// puts the digests back and reports the segments that are finished.
fn run_steps(shared: &Shared, md5: md5_many::Md5Many, bufs: &mut Vec<IoBuf>, mut steps: Vec<Step>) {
    // A step whose bytes cannot be read back fails its segment; the others
    // are hashed, each with its own buffer.
    let given: Vec<Option<IoBuf>> = steps.iter_mut().map(|s| s.given.take()).collect();
    // Buffers to read into, for the steps whose bytes were not handed over.
    bufs.resize_with(steps.len(), IoBuf::default);
    let mut failed: Vec<(StreamId, String)> = Vec::new();
    let mut read = Vec::with_capacity(steps.len());
    for ((step, buf), given) in steps.drain(..).zip(bufs.iter_mut()).zip(&given) {
        if let Some(g) = given {
            read.push((step, g.as_ref()));
            continue;
        }
        if buf.capacity() < CHUNK {
            *buf = IoBuf::new(CHUNK);
        }
        match step.file.read(buf, step.at, step.len) {
            Ok(()) => {
                let buf: &IoBuf = buf;
                read.push((step, buf.as_ref()));
            }
            Err(e) => failed.push((step.id, format!("reading back bytes {}.. to hash them: {e}", step.at))),
        }
    }
    hash_steps(md5, &mut read);
    let steps: Vec<Step> = read.into_iter().map(|(step, _)| step).collect();
    // Steps hashed from a buffer never fail: the others were read back.
    let from_buffers: u64 = given.iter().flatten().map(|b| b.len() as u64).sum();
    let read_back = steps.iter().map(|s| s.len as u64).sum::<u64>() - from_buffers;
    // Finished segments give their file handle back before they report.
    let mut done: Vec<(oneshot::Sender<SegmentResult>, SegmentResult)> = Vec::new();
    {
        let mut st = shared.state.lock().unwrap();
        for (id, why) in failed {
            if let Some(mut s) = st.streams.remove(&id) {
                st.given -= s.given.len();
                if let Some(tx) = s.tx.take() {
                    done.push((tx, Err(why)));
                }
            }
        }
        for step in steps {
            let Some(s) = st.streams.get_mut(&step.id) else { continue };
            s.hashed = step.at + step.len as u64;
            if s.hashed == s.end {
                let mut s = st.streams.remove(&step.id).expect("present");
                st.given -= s.given.len();
                if let Some(tx) = s.tx.take() {
                    done.push((tx, Ok(step.digest.finish())));
                }
            } else {
                s.digest = Some(step.digest);
            }
        }
        st.from_buffers += from_buffers;
        st.read_back += read_back;
        let freed = given.iter().flatten().count();
        st.given -= freed;
        st.free.extend(given.into_iter().flatten());
        if st.worth_a_step() {
            shared.work.notify_one();
        }
        drop(st);
        if freed > 0 {
            shared.room.notify_waiters();
        }
    }
    for (tx, r) in done {
        let _ = tx.send(r);
    }
}

/// Takes up to [`LANES`] due segments out of the state, MD5s first (they gain
/// from being hashed together).
fn take_steps(st: &mut State) -> Vec<Step> {
    let mut due: Vec<(bool, bool, StreamId)> = st
        .streams
        .iter()
        .filter(|(_, s)| s.due())
        .map(|(id, s)| (!s.urgent(), !matches!(s.digest, Some(PartDigest::Md5(_))), *id))
        .collect();
    due.sort_unstable_by_key(|(not_urgent, not_md5, id)| (*not_urgent, *not_md5, id.0));
    due.truncate(whole_batches(&due));
    let mut passed = Vec::new();
    let steps = due
        .into_iter()
        .map(|(_, _, id)| {
            let s = st.streams.get_mut(&id).expect("present");
            let given = s.next_given(&mut passed);
            // Read back no further than the next given buffer.
            let upto = match s.given.front() {
                Some((at, _)) if *at > s.hashed => s.ready.min(*at),
                _ => s.ready,
            };
            let len = match &given {
                Some(b) => b.len(),
                None => (upto - s.hashed).min(CHUNK as u64) as usize,
            };
            Step { id, file: s.file.clone(), given, at: s.hashed, len, digest: s.digest.take().expect("due") }
        })
        .collect();
    st.given -= passed.len();
    st.free.extend(passed);
    steps
}

/// How many of the due segments (urgent first) to take: at most [`LANES`],
/// and beyond one batch only whole batches of [`BATCH`], so that no call is
/// padded with lanes that hash nothing (measured: 6.5 lanes a call on average
/// when every due segment was taken, half as many bytes again hashed for
/// padding). The rest wait for company, or until they are urgent.
fn whole_batches(due: &[(bool, bool, StreamId)]) -> usize {
    let n = due.len().min(LANES);
    let urgent = due.iter().take_while(|(not_urgent, _, _)| !not_urgent).count().min(LANES);
    if n <= BATCH { n } else { (n - n % BATCH).max(urgent) }
}

/// Feeds each step's bytes to its digest. MD5 steps of equal length are
/// hashed together, in multi-buffer calls of 8, 16 or 24 lanes: measured here
/// (AVX2), md5-many runs 8 lanes at 3.6 GiB/s and 16 or 24 at 4.5, but 5 lanes
/// at 0.14 and 12 at 1.8, so a batch that is not a multiple of 8 is filled
/// with copies of its first input whose results are dropped. A lone step, or
/// one of a length no other has (a segment's tail), is hashed on its own.
fn hash_steps(md5: md5_many::Md5Many, steps: &mut [(Step, &[u8])]) {
    let mut by_len: HashMap<usize, Vec<usize>> = HashMap::new();
    for (i, (step, buf)) in steps.iter_mut().enumerate() {
        match &mut step.digest {
            PartDigest::Md5(_) => by_len.entry(step.len).or_default().push(i),
            other => other.update(&buf[..step.len]),
        }
    }
    for (len, group) in by_len {
        let md5_of = |step: &Step| match step.digest {
            PartDigest::Md5(s) => s,
            _ => unreachable!("grouped as MD5"),
        };
        if group.len() == 1 {
            let (step, buf) = &mut steps[group[0]];
            step.digest.update(&buf[..len]);
            continue;
        }
        for lanes in group.chunks(LANES) {
            let width = lanes.len().div_ceil(8) * 8;
            let mut states: Vec<md5_many::Md5State> = lanes.iter().map(|&i| md5_of(&steps[i].0)).collect();
            let mut inputs: Vec<&[u8]> = lanes.iter().map(|&i| &steps[i].1[..len]).collect();
            states.resize(width, md5_many::Md5State::new());
            inputs.resize(width, inputs[0]);
            md5.update_many(&mut states, &inputs);
            for (&i, state) in lanes.iter().zip(states) {
                steps[i].0.digest = PartDigest::Md5(state);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::integrity::{DigestValue, Sha};
    use md5::Digest as _;

    fn data(n: usize, seed: usize) -> Vec<u8> {
        (0..n).map(|i| ((i + seed).wrapping_mul(2_654_435_761) >> 13) as u8).collect()
    }

    fn file_with(bytes: &[u8]) -> Arc<ReadBack> {
        let mut f = tempfile::tempfile().unwrap();
        std::io::Write::write_all(&mut f, bytes).unwrap();
        Arc::new(ReadBack { buffered: f, direct: None })
    }

    /// The file with a direct view as well, where the filesystem of the
    /// temporary directory allows one (not on tmpfs).
    fn direct_file_with(bytes: &[u8]) -> (Arc<ReadBack>, bool) {
        use std::os::unix::fs::OpenOptionsExt;
        let mut f = tempfile::NamedTempFile::new().unwrap();
        std::io::Write::write_all(&mut f, bytes).unwrap();
        let direct = std::fs::OpenOptions::new().read(true).custom_flags(libc::O_DIRECT).open(f.path()).ok();
        let has = direct.is_some();
        (Arc::new(ReadBack { buffered: f.reopen().unwrap(), direct }), has)
    }

    fn hash_of(r: SegmentResult) -> DigestValue {
        match r.unwrap() {
            PartSum::Hash(v) => v,
            PartSum::Crc(_) => panic!("a hash"),
        }
    }

    #[tokio::test]
    async fn small_objects_are_hashed_together_each_to_its_own_md5_and_a_full_hasher_hands_back() {
        let hasher = Hasher::new(1);
        // Lengths on and off the 64-byte block, unequal: md5-many hashes
        // their common blocks together and each tail apart.
        let lens = [1usize, 55, 56, 63, 64, 65, 127, 4096, 65_535, 65_536, 100_001, 256 << 10];
        let mut pending = Vec::new();
        for i in 0..40 {
            let bytes = data(lens[i % lens.len()], i);
            let mut buf = IoBuf::new(256 << 10);
            buf.push(&bytes, bytes.len());
            let Ok((rx, spare)) = hasher.whole_md5(buf) else { panic!("room") };
            assert_eq!(spare.capacity(), 256 << 10, "a buffer of the same size to go on with");
            pending.push((rx, bytes));
        }
        for (rx, bytes) in pending {
            assert_eq!(hash_of(rx.await.unwrap()).as_bytes(), &md5::Md5::digest(&bytes)[..], "{} bytes", bytes.len());
        }
        let (objects, calls) = {
            let st = hasher.shared.state.lock().unwrap();
            (st.wholes_hashed, st.whole_calls)
        };
        assert_eq!(objects, 40);
        assert!(calls < 40, "hashed together: {calls} calls for 40 objects");
        let (given, free) = {
            let st = hasher.shared.state.lock().unwrap();
            (st.given, st.free.len())
        };
        assert_eq!(given, 0, "every buffer handed over is released");
        assert!(free > 0 && free <= 40, "hashed buffers are kept free for reuse: {free}");

        // A hasher that holds all it may hands the buffer back untouched.
        hasher.shared.state.lock().unwrap().given = MAX_GIVEN;
        let mut buf = IoBuf::new(4096);
        buf.push(b"abc", 3);
        let Err(back) = hasher.whole_md5(buf) else { panic!("handed back") };
        assert_eq!(back.as_ref(), b"abc");
        hasher.shared.state.lock().unwrap().given = 0;
    }

    #[tokio::test]
    async fn a_lone_small_object_is_hashed_once_its_wait_is_over() {
        let hasher = Hasher::new(1);
        let mut buf = IoBuf::new(4096);
        buf.push(b"alone", 5);
        let Ok((rx, _)) = hasher.whole_md5(buf) else { panic!("room") };
        // The hasher stays open: only the end of the wait can send it.
        let got = tokio::time::timeout(std::time::Duration::from_secs(5), rx).await.expect("hashed after LINGER");
        assert_eq!(hash_of(got.unwrap()).as_bytes(), &md5::Md5::digest(b"alone")[..]);
        assert_eq!(hasher.shared.state.lock().unwrap().given, 0);
    }

    #[tokio::test]
    async fn small_objects_waiting_for_company_are_hashed_when_the_hasher_stops() {
        let hasher = Hasher::new(1);
        let mut buf = IoBuf::new(4096);
        buf.push(b"lonely", 6);
        let Ok((rx, _)) = hasher.whole_md5(buf) else { panic!("room") };
        drop(hasher);
        assert_eq!(hash_of(rx.await.unwrap()).as_bytes(), &md5::Md5::digest(b"lonely")[..]);
    }

    #[tokio::test]
    async fn segments_hashed_together_in_pieces_match_an_independent_md5_and_sha() {
        let bytes = data(3 * CHUNK + 12_345, 7);
        segments_match(file_with(&bytes), &bytes).await;
    }

    /// The same, read back through the file's direct view: segments that start
    /// on a block boundary are read directly, the others through the cache.
    #[tokio::test]
    async fn segments_read_back_directly_match_as_well() {
        let bytes = data(3 * CHUNK + 12_345, 9);
        let (file, direct) = direct_file_with(&bytes);
        if !direct {
            eprintln!("the temporary directory's filesystem refuses O_DIRECT: read through the cache");
        }
        segments_match(file, &bytes).await;
    }

    async fn segments_match(file: Arc<ReadBack>, bytes: &[u8]) {
        let hasher = Hasher::new(2);
        // Uneven lengths (a tail shorter than a block, an empty segment, one
        // above a chunk) over one file, as the parts of an upload lie.
        let cuts = [0, 0, 1, 64, 1000, 4096, CHUNK + 1, 2 * CHUNK, 2 * CHUNK + 7, bytes.len()];
        let mut open = Vec::new();
        for w in cuts.windows(2) {
            let r = w[0] as u64..w[1] as u64;
            for kind in [DigestKind::Md5, DigestKind::Sha(Sha::Sha256), DigestKind::Sha(Sha::Sha1)] {
                let (id, rx) = hasher.open(file.clone(), r.clone(), kind);
                open.push((id, rx, r.clone(), kind));
            }
        }
        // Report the written prefix in uneven steps, as bodies arrive.
        for step in [3usize, 5000, 70_000, CHUNK, usize::MAX] {
            for (id, _, r, _) in &open {
                hasher.ready(*id, r.start.saturating_add(step as u64));
            }
        }
        for (_, rx, r, kind) in open {
            let slice = &bytes[r.start as usize..r.end as usize];
            let expected = match kind {
                DigestKind::Md5 => md5::Md5::digest(slice).to_vec(),
                DigestKind::Sha(s) => Sha::digest(s, slice).as_bytes().to_vec(),
                DigestKind::Crc(_) => unreachable!(),
            };
            assert_eq!(hash_of(rx.await.unwrap()).as_bytes(), &expected[..], "{kind:?} {r:?}");
        }
    }

    #[tokio::test]
    async fn buffers_handed_over_are_hashed_from_memory_and_a_refused_one_is_read_back() {
        let hasher = Hasher::new(1);
        let n = MAX_GIVEN + 1;
        // The file's bytes differ from the buffers handed over, so the digest
        // tells which bytes were hashed from where.
        let on_disk = data(n * CHUNK, 1);
        let in_memory = data(n * CHUNK, 2);
        let (id, rx) = hasher.open(file_with(&on_disk), 0..on_disk.len() as u64, DigestKind::Md5);
        let chunk = |i: usize| {
            let mut b = IoBuf::new(CHUNK);
            b.push(&in_memory[i * CHUNK..(i + 1) * CHUNK], usize::MAX);
            b
        };
        // Bytes beyond the written prefix (a later range of the segment) are
        // not taken, and the caller does not wait for that.
        let began = std::time::Instant::now();
        assert_eq!(hasher.give(id, CHUNK as u64, chunk(1)).await.len(), CHUNK, "not the next bytes");
        assert!(began.elapsed() < GIVE_WAIT, "refused at once");
        for i in 0..MAX_GIVEN {
            let spare = hasher.give(id, (i * CHUNK) as u64, chunk(i)).await;
            assert!(spare.is_empty() && spare.capacity() == CHUNK, "a buffer to go on with");
        }
        // Nothing reported written yet, so nothing is hashed: the hasher is
        // full, and the next buffer comes back after the wait.
        let began = std::time::Instant::now();
        let back = hasher.give(id, (MAX_GIVEN * CHUNK) as u64, chunk(MAX_GIVEN)).await;
        assert!(began.elapsed() >= GIVE_WAIT, "waited for room first");
        assert_eq!(back.len(), CHUNK, "the refused buffer itself, its bytes to be read back");
        // Bytes already reported written are not taken either.
        hasher.ready(id, on_disk.len() as u64);
        let late = hasher.give(id, 0, chunk(0)).await;
        assert_eq!(late.len(), CHUNK);
        let mut expected = in_memory[..MAX_GIVEN * CHUNK].to_vec();
        expected.extend_from_slice(&on_disk[MAX_GIVEN * CHUNK..]);
        assert_eq!(hash_of(rx.await.unwrap()).as_bytes(), &md5::Md5::digest(&expected)[..]);
        assert_eq!(hasher.shared.state.lock().unwrap().given, 0, "every buffer hashed and accounted for");
    }

    #[tokio::test]
    async fn a_segment_is_finished_only_when_its_last_byte_is_ready() {
        let hasher = Hasher::new(1);
        let bytes = data(CHUNK * 2, 1);
        let (id, mut rx) = hasher.open(file_with(&bytes), 0..bytes.len() as u64, DigestKind::Md5);
        hasher.ready(id, bytes.len() as u64 - 1);
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
        assert!(rx.try_recv().is_err(), "finished before its last byte");
        hasher.ready(id, bytes.len() as u64);
        assert_eq!(hash_of(rx.await.unwrap()).as_bytes(), &md5::Md5::digest(&bytes)[..]);
    }

    #[test]
    fn a_segment_that_cannot_be_read_back_fails_alone_in_its_batch() {
        // Three MD5 segments taken in one batch; the middle one's file is short.
        let shared = Shared::new();
        let (good_a, good_b) = (data(100_000, 3), data(70_000, 4));
        let mut rxs = Vec::new();
        for (file, len) in [(file_with(&good_a), 100_000), (file_with(b"short"), 50_000), (file_with(&good_b), 70_000)]
        {
            let (tx, rx) = oneshot::channel();
            let mut st = shared.state.lock().unwrap();
            let id = StreamId(st.next_id);
            st.next_id += 1;
            let digest = Some(PartDigest::new(DigestKind::Md5));
            st.streams.insert(
                id,
                Stream { file, given: VecDeque::new(), hashed: 0, ready: len, end: len, digest, tx: Some(tx) },
            );
            rxs.push(rx);
        }
        let steps = take_steps(&mut shared.state.lock().unwrap());
        assert_eq!(steps.len(), 3, "one batch");
        run_steps(&shared, md5_many::Md5Many::new(), &mut Vec::new(), steps);
        let mut results = rxs.into_iter().map(|mut rx| rx.try_recv().unwrap());
        assert_eq!(hash_of(results.next().unwrap()).as_bytes(), &md5::Md5::digest(&good_a)[..]);
        assert!(results.next().unwrap().is_err());
        assert_eq!(hash_of(results.next().unwrap()).as_bytes(), &md5::Md5::digest(&good_b)[..]);
    }

    #[test]
    fn batches_of_any_width_give_each_segment_its_own_md5() {
        // 1 to 26 equal segments in one step: lone, padded to 8/16/24, and
        // more than one call of 24 lanes.
        for n in [1usize, 2, 5, 8, 12, 17, 26] {
            let shared = Shared::new();
            let datas: Vec<Vec<u8>> = (0..n).map(|i| data(CHUNK, i * 31)).collect();
            let mut rxs = Vec::new();
            for d in &datas {
                let (tx, rx) = oneshot::channel();
                let mut st = shared.state.lock().unwrap();
                let id = StreamId(st.next_id);
                st.next_id += 1;
                let (file, len) = (file_with(d), d.len() as u64);
                let digest = Some(PartDigest::new(DigestKind::Md5));
                st.streams.insert(
                    id,
                    Stream { file, given: VecDeque::new(), hashed: 0, ready: len, end: len, digest, tx: Some(tx) },
                );
                rxs.push(rx);
            }
            while !shared.state.lock().unwrap().streams.is_empty() {
                let steps = take_steps(&mut shared.state.lock().unwrap());
                run_steps(&shared, md5_many::Md5Many::new(), &mut Vec::new(), steps);
            }
            for (d, mut rx) in datas.iter().zip(rxs) {
                assert_eq!(hash_of(rx.try_recv().unwrap()).as_bytes(), &md5::Md5::digest(d)[..], "{n} lanes");
            }
        }
    }

    #[test]
    fn steps_take_whole_batches_of_eight_and_wait_for_sixteen_among_many() {
        let due = |urgent: usize, other: usize| -> Vec<(bool, bool, StreamId)> {
            (0..urgent + other).map(|i| (i >= urgent, false, StreamId(i as u64))).collect()
        };
        assert_eq!(whole_batches(&due(0, 5)), 5);
        assert_eq!(whole_batches(&due(0, 8)), 8);
        assert_eq!(whole_batches(&due(0, 13)), 8);
        assert_eq!(whole_batches(&due(0, 17)), 16);
        assert_eq!(whole_batches(&due(0, 40)), LANES);
        // Urgent segments are never left out to make a batch whole.
        assert_eq!(whole_batches(&due(10, 3)), 10);
        assert_eq!(whole_batches(&due(30, 0)), LANES);

        // 30 segments being written: a step waits for 16 of them to be due.
        let mut st = State::default();
        let file = file_with(&data(2 * CHUNK, 1));
        for i in 0..30 {
            let digest = Some(PartDigest::new(DigestKind::Md5));
            let stream = Stream {
                file: file.clone(),
                given: VecDeque::new(),
                hashed: 0,
                ready: 0,
                end: 2 * CHUNK as u64,
                digest,
                tx: None,
            };
            st.streams.insert(StreamId(i), stream);
        }
        let make_due = |st: &mut State, n: u64| {
            for i in 0..n {
                st.streams.get_mut(&StreamId(i)).unwrap().ready = CHUNK as u64;
            }
        };
        make_due(&mut st, 10);
        assert!(!st.worth_a_step());
        make_due(&mut st, 16);
        assert!(st.worth_a_step());
        assert_eq!(take_steps(&mut st).len(), 16);
        // A few segments, all due: no company is coming, step now.
        let mut few = State::default();
        for i in 0..3 {
            let digest = Some(PartDigest::new(DigestKind::Md5));
            let stream = Stream {
                file: file.clone(),
                given: VecDeque::new(),
                hashed: 0,
                ready: CHUNK as u64,
                end: 2 * CHUNK as u64,
                digest,
                tx: None,
            };
            few.streams.insert(StreamId(i), stream);
        }
        assert!(few.worth_a_step());
    }

    #[tokio::test]
    async fn a_cancelled_segment_closes_its_channel_and_an_unreadable_one_says_why() {
        let hasher = Hasher::new(1);
        let (id, rx) = hasher.open(file_with(b"abc"), 0..3, DigestKind::Md5);
        hasher.cancel(id);
        assert!(rx.await.is_err());
        // Bytes reported written that the file does not have.
        let (id, rx) = hasher.open(file_with(b"abc"), 0..10, DigestKind::Md5);
        hasher.ready(id, 10);
        assert!(rx.await.unwrap().unwrap_err().contains("reading back"));
    }
}
