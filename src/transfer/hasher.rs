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
//! waits up to [`LINGER`](super::hash_state::LINGER) for others and hashes them in one call.
//! MD5s of independent segments are computed together, several per SIMD
//! instruction (`md5-many`: 8 lanes on AVX2, 16 on AVX-512, with a scalar
//! fallback chosen at run time), which is where most of the CPU of checking
//! legacy objects went. No request waits on hashing: a part whose journal
//! line needs its hash waits for it after giving back its request slot and
//! its place among its object's parts in flight; an object's commit waits
//! for all of its parts' hashes.
use std::collections::VecDeque;
use std::ops::Range;
use std::sync::Arc;
use std::thread::JoinHandle;

use tokio::sync::oneshot;

use super::hash_state::{GIVE_WAIT, MAX_GIVEN, Shared, Stream, Whole};
pub(super) use super::hash_state::{ReadBack, SegmentResult, StreamId, WHOLE_MIN_REQUESTS};
use super::hash_thread::hash_loop;
use crate::integrity::{DigestKind, PartDigest};
use crate::localfs::IoBuf;

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
    /// for a request, until [`LINGER`](super::hash_state::LINGER) is over.
    pub fn whole_batch_at_most(self, requests: usize) -> Hasher {
        let mut st = self.shared.state.lock().unwrap();
        st.lanes = st.lanes.min(requests.max(1));
        drop(st);
        self
    }

    /// Segments written to their end wait `wait` for company instead of
    /// [`END_WAIT`](super::hash_state::END_WAIT) (tests hold a segment unhashed with it).
    #[cfg(test)]
    pub fn waiting_for_company(self, wait: std::time::Duration) -> Hasher {
        self.shared.state.lock().unwrap().end_wait = wait;
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
            ended: None,
            // Only MD5s are hashed together: another digest has no
            // company to wait for.
            end_wait: if kind == DigestKind::Md5 { st.end_wait } else { std::time::Duration::ZERO },
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
        // Ended now: the thread, perhaps asleep with no deadline, is to
        // learn when the wait for company is over.
        let ended = s.ready == s.end && s.ended.is_none();
        if ended {
            s.ended = Some(std::time::Instant::now());
        }
        let now = (s.due(), s.urgent());
        drop(st);
        if ended || now != was {
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
    /// MD5 together with other small objects' (see [`LINGER`](super::hash_state::LINGER)); returns the
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
        let c = st.md5_calls;
        tracing::debug!(
            calls = c.calls,
            inputs = c.inputs,
            lanes = c.lanes,
            unit = st.width.unit,
            "segments' MD5 calls"
        );
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::integrity::PartSum;
    use crate::integrity::{DigestValue, Sha};
    use crate::transfer::hash_state::*;
    use crate::transfer::hash_thread::*;
    use md5::Digest as _;

    fn data(n: usize, seed: usize) -> Vec<u8> {
        (0..n).map(|i| ((i + seed).wrapping_mul(2_654_435_761) >> 13) as u8).collect()
    }

    /// An MD5 segment of `file` from byte 0, written up to `ready`.
    fn md5_stream(file: Arc<ReadBack>, ready: u64, end: u64, tx: Option<oneshot::Sender<SegmentResult>>) -> Stream {
        let digest = Some(PartDigest::new(DigestKind::Md5));
        Stream { file, given: VecDeque::new(), hashed: 0, ready, end, digest, ended: None, end_wait: END_WAIT, tx }
    }

    /// Adds an MD5 segment of the first `len` bytes of `file`, all written.
    fn add_written(shared: &Shared, file: Arc<ReadBack>, len: u64) -> oneshot::Receiver<SegmentResult> {
        let (tx, rx) = oneshot::channel();
        let mut st = shared.state.lock().unwrap();
        let id = StreamId(st.next_id);
        st.next_id += 1;
        st.streams.insert(id, md5_stream(file, len, len, Some(tx)));
        rx
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
            rxs.push(add_written(&shared, file, len));
        }
        let steps = take_steps(&mut shared.state.lock().unwrap());
        assert_eq!(steps.len(), 3, "one batch");
        run_steps(&shared, md5_many::Md5Many::new(), Width::default(), &mut Vec::new(), steps);
        let mut results = rxs.into_iter().map(|mut rx| rx.try_recv().unwrap());
        assert_eq!(hash_of(results.next().unwrap()).as_bytes(), &md5::Md5::digest(&good_a)[..]);
        assert!(results.next().unwrap().is_err());
        assert_eq!(hash_of(results.next().unwrap()).as_bytes(), &md5::Md5::digest(&good_b)[..]);
    }

    #[test]
    fn batches_of_any_width_give_each_segment_its_own_md5() {
        // 1 to 40 equal segments in one step: lone, padded to 8/16/24 (or
        // to 16/32), and more than one call; in both shapes, whatever this
        // CPU has (md5-many answers any width).
        for (n, shape) in [1usize, 2, 5, 8, 12, 17, 26, 40].into_iter().flat_map(|n| [(n, 8), (n, 16)]) {
            let shared = Shared::new();
            shared.state.lock().unwrap().width = Width::of(shape);
            let datas: Vec<Vec<u8>> = (0..n).map(|i| data(CHUNK, i * 31)).collect();
            let mut rxs = Vec::new();
            for d in &datas {
                rxs.push(add_written(&shared, file_with(d), d.len() as u64));
            }
            while !shared.state.lock().unwrap().streams.is_empty() {
                let steps = take_steps(&mut shared.state.lock().unwrap());
                let width = shared.state.lock().unwrap().width;
                run_steps(&shared, md5_many::Md5Many::new(), width, &mut Vec::new(), steps);
            }
            for (d, mut rx) in datas.iter().zip(rxs) {
                let got = hash_of(rx.try_recv().unwrap());
                assert_eq!(got.as_bytes(), &md5::Md5::digest(d)[..], "{n} lanes, unit {shape}");
            }
        }
    }

    #[test]
    fn steps_take_whole_units_and_wait_for_sixteen_among_many() {
        let due = |urgent: usize, other: usize| -> Vec<(bool, bool, StreamId)> {
            (0..urgent + other).map(|i| (i >= urgent, false, StreamId(i as u64))).collect()
        };
        let avx2 = Width::of(8);
        assert_eq!(whole_batches(&due(0, 5), avx2), 5);
        assert_eq!(whole_batches(&due(0, 8), avx2), 8);
        assert_eq!(whole_batches(&due(0, 13), avx2), 8);
        assert_eq!(whole_batches(&due(0, 17), avx2), 16);
        assert_eq!(whole_batches(&due(0, 40), avx2), 24);
        // Urgent segments are never left out to make a batch whole.
        assert_eq!(whole_batches(&due(10, 3), avx2), 10);
        assert_eq!(whole_batches(&due(30, 0), avx2), 24);
        // AVX-512: units of 16, at most two of them in a call.
        let avx512 = Width::of(16);
        assert_eq!(whole_batches(&due(0, 13), avx512), 13);
        assert_eq!(whole_batches(&due(0, 20), avx512), 16);
        assert_eq!(whole_batches(&due(0, 40), avx512), 32);
        assert_eq!(whole_batches(&due(20, 0), avx512), 20);
        assert_eq!((avx512.padded(1), avx512.padded(2), avx512.padded(17)), (1, 16, 32));
        assert_eq!((avx2.padded(5), avx2.padded(24)), (8, 24));

        // 30 segments being written: a step waits for 16 of them to be due.
        let mut st = State::default();
        let file = file_with(&data(2 * CHUNK, 1));
        for i in 0..30 {
            st.streams.insert(StreamId(i), md5_stream(file.clone(), 0, 2 * CHUNK as u64, None));
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
            few.streams.insert(StreamId(i), md5_stream(file.clone(), CHUNK as u64, 2 * CHUNK as u64, None));
        }
        assert!(few.worth_a_step());
        // AVX-512, 20 segments being written (fewer than 24): a step waits
        // for 16 due, not 8.
        let mut wide = State { width: Width::of(16), ..State::default() };
        for i in 0..20 {
            wide.streams.insert(StreamId(i), md5_stream(file.clone(), 0, 2 * CHUNK as u64, None));
        }
        make_due(&mut wide, 12);
        assert!(!wide.worth_a_step());
        make_due(&mut wide, 16);
        assert!(wide.worth_a_step());
        assert_eq!(take_steps(&mut wide).len(), 16);
    }

    /// A hasher with ten MD5 segments of one file open, nine of them never
    /// written (no batch ever fills); the tenth's bytes, id and receiver.
    fn one_among_ten_never_written(seed: usize) -> (Hasher, Vec<u8>, StreamId, oneshot::Receiver<SegmentResult>) {
        let hasher = Hasher::new(1);
        let d = data(3 * CHUNK + 5, seed);
        let (file, len) = (file_with(&d), d.len() as u64);
        for _ in 0..9 {
            // Dropping the receiver leaves the segment open.
            let _ = hasher.open(file.clone(), 0..len, DigestKind::Md5);
        }
        let (id, rx) = hasher.open(file, 0..len, DigestKind::Md5);
        (hasher, d, id, rx)
    }

    #[tokio::test]
    async fn a_finished_segment_is_hashed_after_its_wait_though_no_other_fills_its_batch() {
        let (hasher, d, id, rx) = one_among_ten_never_written(9);
        let len = d.len() as u64;
        let written = std::time::Instant::now();
        hasher.ready(id, len);
        let got = tokio::time::timeout(std::time::Duration::from_secs(10), rx).await;
        let got = got.expect("hashed once its wait is over, with nothing else reported").unwrap();
        assert!(written.elapsed() >= END_WAIT, "not before its wait for company is over");
        assert_eq!(hash_of(got).as_bytes(), &md5::Md5::digest(&d)[..]);
    }

    // Only MD5s are hashed together: a SHA segment written to its end is
    // hashed at once, among MD5 segments that never fill a batch, where an
    // MD5 one would wait (here an hour) for company.
    #[tokio::test]
    async fn a_finished_sha_segment_waits_for_no_company() {
        let hasher = Hasher::new(1).waiting_for_company(std::time::Duration::from_secs(3600));
        let d = data(3 * CHUNK + 5, 13);
        let (file, len) = (file_with(&d), d.len() as u64);
        for _ in 0..9 {
            let _ = hasher.open(file.clone(), 0..len, DigestKind::Md5);
        }
        let (sha, sha_rx) = hasher.open(file, 0..len, DigestKind::Sha(Sha::Sha256));
        hasher.ready(sha, len);
        let got = tokio::time::timeout(std::time::Duration::from_secs(10), sha_rx).await;
        let got = got.expect("the SHA hashed without waiting").unwrap();
        assert_eq!(hash_of(got).as_bytes(), Sha::digest(Sha::Sha256, &d).as_bytes());
    }

    #[tokio::test]
    async fn a_segment_already_due_when_it_ends_wakes_the_sleeping_thread_to_its_wait() {
        let (hasher, d, id, rx) = one_among_ten_never_written(11);
        let len = d.len() as u64;
        // Due but not urgent, one of ten: the thread goes to sleep with no
        // deadline. Its last bytes then change neither due nor urgent.
        hasher.ready(id, 2 * CHUNK as u64);
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
        hasher.ready(id, len);
        let got = tokio::time::timeout(std::time::Duration::from_secs(10), rx).await;
        let got = got.expect("hashed once its wait is over, though nothing else moves").unwrap();
        assert_eq!(hash_of(got).as_bytes(), &md5::Md5::digest(&d)[..]);
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
