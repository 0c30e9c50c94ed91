//! Hashing that cannot follow the ranges: the MD5 of an ETag, SHA256 and SHA1
//! are computed over a *segment* (a whole object, or one uploaded part) in byte
//! order, while its ranges download in parallel and out of order.
//!
//! A dedicated thread hashes each segment's written prefix as it grows. Where
//! a segment is one range (the parts of a multipart upload, fetched whole),
//! its bytes arrive in order, and each write buffer is handed to the hasher
//! once written ([`Hasher::feed`]): it is hashed from memory, and goes back
//! to the fetches ([`Buffers`]). Bytes that arrive out of order (a segment in
//! several ranges, or a buffer the hasher could not hold) are reported
//! written ([`Hasher::ready`]) and read back with `pread` (they were just
//! written, so they come from the page cache, not the disk).
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

use bytes::Bytes;
use tokio::sync::oneshot;

use crate::integrity::{DigestKind, PartDigest, PartSum};

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

/// Buffers a segment may have waiting in memory before it is hashed whatever
/// the batch, and the most it may have: beyond, a buffer is not held, and its
/// bytes are read back from the file. Bounds the memory held for hashing at
/// a few buffers per segment being written.
const URGENT_HELD: usize = 4;
const MAX_HELD: usize = 8;

/// Write buffers kept for reuse at most.
const MAX_FREE: usize = 64;

/// Bytes of a segment, written, handed to the hasher from memory.
pub(super) enum Piece {
    /// A write buffer: given back to [`Buffers`] once hashed.
    Owned(Vec<u8>),
    /// A body chunk written as it came.
    Shared(Bytes),
}

impl AsRef<[u8]> for Piece {
    fn as_ref(&self) -> &[u8] {
        match self {
            Piece::Owned(v) => v,
            Piece::Shared(b) => b,
        }
    }
}

/// Write buffers free for a fetch to take: those the hasher has finished with.
#[derive(Default)]
pub(super) struct Buffers(Mutex<Vec<Vec<u8>>>);

impl Buffers {
    /// An empty buffer of `capacity` bytes, reused when one is free.
    pub fn take(&self, capacity: usize) -> Vec<u8> {
        let reused = self.0.lock().unwrap().pop();
        match reused {
            Some(mut v) if v.capacity() >= capacity => {
                v.clear();
                v
            }
            _ => Vec::with_capacity(capacity),
        }
    }

    pub fn give(&self, piece: Piece) {
        if let Piece::Owned(v) = piece {
            let mut free = self.0.lock().unwrap();
            if free.len() < MAX_FREE {
                free.push(v);
            }
        }
    }
}

/// Bytes held in memory for a segment: `piece[from..]` is at `at`.
struct Held {
    at: u64,
    piece: Piece,
    from: usize,
}

/// The result of one segment: its digest, or why its bytes could not be read.
pub(super) type SegmentResult = Result<PartSum, String>;

/// Handle of a segment being hashed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub(super) struct StreamId(u64);

struct Stream {
    file: Arc<File>,
    /// Next byte to hash.
    hashed: u64,
    /// Bytes before this offset are written.
    ready: u64,
    end: u64,
    /// Bytes in memory, in order, from `hashed` on (or from the end of the
    /// step being taken).
    held: VecDeque<Held>,
    /// First byte not hashed, in a step, or held.
    claimed: u64,
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
    /// object may be waiting to commit), far behind, or holding buffers.
    fn urgent(&self) -> bool {
        self.due() && (self.ready == self.end || self.ready - self.hashed >= LAG || self.held.len() >= URGENT_HELD)
    }
}

impl State {
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
        due > 0 && (due >= want || due == idle)
    }
}

#[derive(Default)]
struct State {
    streams: HashMap<StreamId, Stream>,
    next_id: u64,
    closed: bool,
}

struct Shared {
    state: Mutex<State>,
    work: Condvar,
    buffers: Arc<Buffers>,
}

/// The hashing threads of one run; they stop when it is dropped.
pub(super) struct Hasher {
    shared: Arc<Shared>,
    threads: Vec<JoinHandle<()>>,
}

impl Hasher {
    /// Starts `threads` hashing threads (at least one); buffers held from
    /// memory go back to `buffers` once hashed.
    pub fn new(threads: usize, buffers: Arc<Buffers>) -> Hasher {
        let shared = Arc::new(Shared { state: Mutex::new(State::default()), work: Condvar::new(), buffers });
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

    /// Starts hashing `range` of `file` with `kind`, as its bytes are reported
    /// written. The receiver gets the digest once the last byte is hashed.
    pub fn open(
        &self,
        file: Arc<File>,
        range: Range<u64>,
        kind: DigestKind,
    ) -> (StreamId, oneshot::Receiver<SegmentResult>) {
        let (tx, rx) = oneshot::channel();
        let mut st = self.shared.state.lock().unwrap();
        let id = StreamId(st.next_id);
        st.next_id += 1;
        let stream = Stream {
            file,
            hashed: range.start,
            ready: range.start,
            end: range.end,
            held: VecDeque::new(),
            claimed: range.start,
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

    /// `piece`, just written at `at` in the segment, to be hashed from memory;
    /// given back when the hasher does not hold it (its bytes are not next in
    /// the segment's order, or enough are held already): they are read back
    /// from the file once reported [`Hasher::ready`]. Call before reporting
    /// them ready (they are then ready already).
    pub fn feed(&self, id: StreamId, at: u64, piece: Piece) -> Option<Piece> {
        let mut st = self.shared.state.lock().unwrap();
        let Some(s) = st.streams.get_mut(&id) else { return Some(piece) };
        let len = piece.as_ref().len() as u64;
        let end = at + len;
        if s.held.len() >= MAX_HELD || !(at <= s.claimed && s.claimed < end) || end > s.end {
            return Some(piece);
        }
        let from = (s.claimed - at) as usize;
        let was = (s.due(), s.urgent());
        match piece {
            // A large body chunk: held in pieces of a chunk, as reads are.
            Piece::Shared(mut b) => {
                b = b.slice(from..);
                let mut at = s.claimed;
                while !b.is_empty() {
                    let next = b.split_to(b.len().min(CHUNK));
                    let n = next.len() as u64;
                    s.held.push_back(Held { at, piece: Piece::Shared(next), from: 0 });
                    at += n;
                }
            }
            piece => s.held.push_back(Held { at: s.claimed, piece, from }),
        }
        s.claimed = end;
        // Everything before `at` is hashed, being hashed or held, so written.
        s.ready = s.ready.max(end);
        let now = (s.due(), s.urgent());
        drop(st);
        if now != was {
            self.shared.work.notify_one();
        }
        None
    }

    /// Forgets a segment whose object failed; its receiver sees a closed channel.
    pub fn cancel(&self, id: StreamId) {
        self.shared.state.lock().unwrap().streams.remove(&id);
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
    }
}

/// One step taken by a thread: `len` bytes of a segment from `at`, held in
/// memory or to be read from the file.
struct Step {
    id: StreamId,
    source: Source,
    at: u64,
    len: usize,
    digest: PartDigest,
}

enum Source {
    File(Arc<File>),
    Memory(Piece, usize),
}

fn hash_loop(shared: &Shared) {
    let md5 = md5_many::Md5Many::new();
    let mut bufs: Vec<Vec<u8>> = Vec::new();
    loop {
        let steps = {
            let mut st = shared.state.lock().unwrap();
            loop {
                if st.closed {
                    return;
                }
                if st.worth_a_step() {
                    break;
                }
                st = shared.work.wait(st).unwrap();
            }
            take_steps(&mut st)
        };
        run_steps(shared, md5, &mut bufs, steps);
    }
}

/// Hashes one step of each segment taken (from memory, or read back from the
/// file), outside the lock, then puts the digests back, gives held buffers
/// back and reports the segments that are finished.
fn run_steps(shared: &Shared, md5: md5_many::Md5Many, bufs: &mut Vec<Vec<u8>>, mut steps: Vec<Step>) {
    // A step whose bytes cannot be read back fails its segment; the others
    // are hashed, each read into its own buffer.
    let reads = steps.iter().filter(|s| matches!(s.source, Source::File(_))).count();
    if bufs.len() < reads {
        bufs.resize_with(reads, || vec![0u8; CHUNK]);
    }
    let mut failed: Vec<(StreamId, String)> = Vec::new();
    {
        let mut bufs = bufs.iter_mut();
        let mut hashing: Vec<(&mut PartDigest, &[u8])> = Vec::with_capacity(steps.len());
        for Step { id, source, at, len, digest } in steps.iter_mut() {
            let bytes: &[u8] = match &*source {
                Source::Memory(piece, from) => &piece.as_ref()[*from..*from + *len],
                Source::File(file) => {
                    let buf = bufs.next().expect("a buffer per read");
                    if let Err(e) = file.read_exact_at(&mut buf[..*len], *at) {
                        failed.push((*id, format!("reading back bytes {at}.. to hash them: {e}")));
                        continue;
                    }
                    &buf[..*len]
                }
            };
            hashing.push((digest, bytes));
        }
        hash_steps(md5, &mut hashing);
    }
    // Finished segments give their file handle back before they report.
    let mut done: Vec<(oneshot::Sender<SegmentResult>, SegmentResult)> = Vec::new();
    {
        let mut st = shared.state.lock().unwrap();
        for (id, why) in &failed {
            if let Some(tx) = st.streams.remove(id).and_then(|mut s| s.tx.take()) {
                done.push((tx, Err(why.clone())));
            }
        }
        for step in steps {
            if let Source::Memory(piece, _) = step.source {
                shared.buffers.give(piece);
            }
            if failed.iter().any(|(id, _)| *id == step.id) {
                continue;
            }
            let Some(s) = st.streams.get_mut(&step.id) else { continue };
            s.hashed = step.at + step.len as u64;
            if s.hashed == s.end {
                let mut s = st.streams.remove(&step.id).expect("present");
                if let Some(tx) = s.tx.take() {
                    done.push((tx, Ok(step.digest.finish())));
                }
            } else {
                s.digest = Some(step.digest);
            }
        }
        if st.worth_a_step() {
            shared.work.notify_one();
        }
    }
    for (tx, r) in done {
        let _ = tx.send(r);
    }
}

/// Takes up to [`LANES`] due segments out of the state, MD5s first (they gain
/// from being hashed together): the bytes held in memory first, else a chunk
/// to read back from the file.
fn take_steps(st: &mut State) -> Vec<Step> {
    let mut due: Vec<(bool, bool, StreamId)> = st
        .streams
        .iter()
        .filter(|(_, s)| s.due())
        .map(|(id, s)| (!s.urgent(), !matches!(s.digest, Some(PartDigest::Md5(_))), *id))
        .collect();
    due.sort_unstable_by_key(|(not_urgent, not_md5, id)| (*not_urgent, *not_md5, id.0));
    due.truncate(whole_batches(&due));
    due.into_iter()
        .map(|(_, _, id)| {
            let s = st.streams.get_mut(&id).expect("present");
            let digest = s.digest.take().expect("due");
            match s.held.pop_front() {
                Some(Held { at, piece, from }) => {
                    debug_assert_eq!(at, s.hashed, "held bytes are next");
                    let len = piece.as_ref().len() - from;
                    Step { id, source: Source::Memory(piece, from), at, len, digest }
                }
                None => {
                    let len = (s.ready - s.hashed).min(CHUNK as u64) as usize;
                    s.claimed = s.claimed.max(s.hashed + len as u64);
                    Step { id, source: Source::File(s.file.clone()), at: s.hashed, len, digest }
                }
            }
        })
        .collect()
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
fn hash_steps(md5: md5_many::Md5Many, steps: &mut [(&mut PartDigest, &[u8])]) {
    let mut by_len: HashMap<usize, Vec<usize>> = HashMap::new();
    for (i, (digest, bytes)) in steps.iter_mut().enumerate() {
        match digest {
            PartDigest::Md5(_) => by_len.entry(bytes.len()).or_default().push(i),
            other => other.update(bytes),
        }
    }
    for group in by_len.into_values() {
        let md5_of = |digest: &PartDigest| match digest {
            PartDigest::Md5(s) => *s,
            _ => unreachable!("grouped as MD5"),
        };
        if group.len() == 1 {
            let (digest, bytes) = &mut steps[group[0]];
            digest.update(bytes);
            continue;
        }
        for lanes in group.chunks(LANES) {
            let width = lanes.len().div_ceil(8) * 8;
            let mut states: Vec<md5_many::Md5State> = lanes.iter().map(|&i| md5_of(steps[i].0)).collect();
            let mut inputs: Vec<&[u8]> = lanes.iter().map(|&i| steps[i].1).collect();
            states.resize(width, md5_many::Md5State::new());
            inputs.resize(width, inputs[0]);
            md5.update_many(&mut states, &inputs);
            for (&i, state) in lanes.iter().zip(states) {
                *steps[i].0 = PartDigest::Md5(state);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::integrity::{DigestValue, Sha};
    use md5::Digest as _;

    impl Stream {
        fn test(
            file: Arc<File>,
            hashed: u64,
            ready: u64,
            end: u64,
            digest: Option<PartDigest>,
            tx: Option<oneshot::Sender<SegmentResult>>,
        ) -> Stream {
            Stream { file, hashed, ready, end, held: VecDeque::new(), claimed: hashed, digest, tx }
        }
    }

    fn data(n: usize, seed: usize) -> Vec<u8> {
        (0..n).map(|i| ((i + seed).wrapping_mul(2_654_435_761) >> 13) as u8).collect()
    }

    fn file_with(bytes: &[u8]) -> Arc<File> {
        let mut f = tempfile::tempfile().unwrap();
        std::io::Write::write_all(&mut f, bytes).unwrap();
        Arc::new(f)
    }

    fn hash_of(r: SegmentResult) -> DigestValue {
        match r.unwrap() {
            PartSum::Hash(v) => v,
            PartSum::Crc(_) => panic!("a hash"),
        }
    }

    #[tokio::test]
    async fn segments_hashed_together_in_pieces_match_an_independent_md5_and_sha() {
        let hasher = Hasher::new(2, Arc::default());
        // Uneven lengths (a tail shorter than a block, an empty segment, one
        // above a chunk) over one file, as the parts of an upload lie.
        let bytes = data(3 * CHUNK + 12_345, 7);
        let file = file_with(&bytes);
        let cuts = [0, 0, 1, 64, 1000, CHUNK + 1, 2 * CHUNK + 7, bytes.len()];
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
    async fn bytes_fed_in_order_are_hashed_from_memory_and_the_rest_read_back() {
        let hasher = Hasher::new(1, Arc::default());
        let bytes = data(5 * CHUNK + 777, 9);
        // The file holds zeros: a hash that matches the bytes was computed
        // from memory, not read back.
        let zeros = file_with(&vec![0; bytes.len()]);
        let mut open = Vec::new();
        for lanes in 0..9 {
            let (id, rx) = hasher.open(zeros.clone(), 0..bytes.len() as u64, DigestKind::Md5);
            open.push((id, rx, lanes));
        }
        let pieces: Vec<(usize, usize)> =
            vec![(0, CHUNK), (CHUNK, 2 * CHUNK), (2 * CHUNK, 2 * CHUNK + 100), (2 * CHUNK + 100, 5 * CHUNK + 777)];
        for &(a, b) in &pieces {
            for (id, _, lanes) in &open {
                let piece = match lanes % 2 {
                    0 => Piece::Owned(bytes[a..b].to_vec()),
                    _ => Piece::Shared(Bytes::copy_from_slice(&bytes[a..b])),
                };
                assert!(hasher.feed(*id, a as u64, piece).is_none(), "in order: held");
                hasher.ready(*id, b as u64);
            }
        }
        for (_, rx, _) in open {
            assert_eq!(hash_of(rx.await.unwrap()).as_bytes(), &md5::Md5::digest(&bytes)[..]);
        }
        // Out of order, or overlapping what is claimed: what is new is held,
        // what is not next is given back and read from the file.
        let file = file_with(&bytes);
        let (id, rx) = hasher.open(file, 0..bytes.len() as u64, DigestKind::Md5);
        let back = hasher.feed(id, CHUNK as u64, Piece::Owned(vec![1; CHUNK]));
        assert!(back.is_some(), "not next: given back");
        assert!(hasher.feed(id, 0, Piece::Owned(bytes[..CHUNK + 10].to_vec())).is_none());
        assert!(hasher.feed(id, CHUNK as u64, Piece::Owned(bytes[CHUNK..2 * CHUNK].to_vec())).is_none(), "overlap");
        hasher.ready(id, bytes.len() as u64);
        assert_eq!(hash_of(rx.await.unwrap()).as_bytes(), &md5::Md5::digest(&bytes)[..]);
        // Past the segment's end: given back.
        let (id, _rx) = hasher.open(file_with(&bytes), 0..10, DigestKind::Md5);
        assert!(hasher.feed(id, 0, Piece::Owned(vec![0; 11])).is_some());
    }

    #[test]
    fn a_segment_holds_a_bounded_number_of_buffers() {
        let shared = Shared { state: Mutex::new(State::default()), work: Condvar::new(), buffers: Arc::default() };
        let hasher = Hasher { shared: Arc::new(shared), threads: Vec::new() };
        let (id, _rx) = hasher.open(file_with(&[]), 0..(100 * CHUNK) as u64, DigestKind::Md5);
        let mut held = 0;
        for i in 0..20 {
            if hasher.feed(id, (i * CHUNK) as u64, Piece::Owned(vec![0; CHUNK])).is_none() {
                held += 1;
            }
        }
        assert_eq!(held, MAX_HELD, "no thread hashes them here: the rest is given back");
        assert!(hasher.shared.state.lock().unwrap().streams[&id].urgent());
    }

    #[tokio::test]
    async fn a_segment_is_finished_only_when_its_last_byte_is_ready() {
        let hasher = Hasher::new(1, Arc::default());
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
        let shared = Shared { state: Mutex::new(State::default()), work: Condvar::new(), buffers: Arc::default() };
        let (good_a, good_b) = (data(100_000, 3), data(70_000, 4));
        let mut rxs = Vec::new();
        for (file, len) in [(file_with(&good_a), 100_000), (file_with(b"short"), 50_000), (file_with(&good_b), 70_000)]
        {
            let (tx, rx) = oneshot::channel();
            let mut st = shared.state.lock().unwrap();
            let id = StreamId(st.next_id);
            st.next_id += 1;
            let digest = Some(PartDigest::new(DigestKind::Md5));
            st.streams.insert(id, Stream::test(file, 0, len, len, digest, Some(tx)));
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
            let shared = Shared { state: Mutex::new(State::default()), work: Condvar::new(), buffers: Arc::default() };
            let datas: Vec<Vec<u8>> = (0..n).map(|i| data(CHUNK, i * 31)).collect();
            let mut rxs = Vec::new();
            for d in &datas {
                let (tx, rx) = oneshot::channel();
                let mut st = shared.state.lock().unwrap();
                let id = StreamId(st.next_id);
                st.next_id += 1;
                let (file, len) = (file_with(d), d.len() as u64);
                let digest = Some(PartDigest::new(DigestKind::Md5));
                st.streams.insert(id, Stream::test(file, 0, len, len, digest, Some(tx)));
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
            let stream = Stream::test(file.clone(), 0, 0, 2 * CHUNK as u64, digest, None);
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
            let stream = Stream::test(file.clone(), 0, CHUNK as u64, 2 * CHUNK as u64, digest, None);
            few.streams.insert(StreamId(i), stream);
        }
        assert!(few.worth_a_step());
    }

    #[tokio::test]
    async fn a_cancelled_segment_closes_its_channel_and_an_unreadable_one_says_why() {
        let hasher = Hasher::new(1, Arc::default());
        let (id, rx) = hasher.open(file_with(b"abc"), 0..3, DigestKind::Md5);
        hasher.cancel(id);
        assert!(rx.await.is_err());
        // Bytes reported written that the file does not have.
        let (id, rx) = hasher.open(file_with(b"abc"), 0..10, DigestKind::Md5);
        hasher.ready(id, 10);
        assert!(rx.await.unwrap().unwrap_err().contains("reading back"));
    }
}
