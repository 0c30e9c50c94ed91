//! What the hashing in order shares between the engine's side
//! ([`super::hasher::Hasher`]) and its threads (`hash_thread.rs`): the
//! segments being hashed, the buffers handed over, the small objects waiting
//! for company, under one lock.

use std::collections::{HashMap, VecDeque};
use std::fs::File;
use std::os::unix::fs::FileExt;
use std::sync::{Arc, Condvar, Mutex};

use tokio::sync::oneshot;

use crate::integrity::{PartDigest, PartSum};
use crate::localfs::{ALIGN, IoBuf};

/// Bytes read and hashed per segment per step. Small enough that a batch of
/// a call's buffers stays within a few MiB; large enough to amortize a `pread`.
pub(super) const CHUNK: usize = 256 << 10;

/// Segments worth waiting for before a step: a multi-buffer MD5 of fewer than
/// 8 lanes costs nearly what 8 do, and one lane is 6x slower per byte than 8.
pub(super) const BATCH: usize = 8;

/// The shape of the multi-buffer MD5 calls on this CPU.
///
/// Measured with `md5-many`, in GiB/s of all lanes together: with AVX2, 8
/// lanes 3.6, 16 4.4 and 24 4.5; with AVX-512 (256 KiB inputs, `cargo bench
/// --bench compare -- --hash-speed`), 8 lanes 3.5 (the AVX2 kernel), 16 7.4,
/// 24 5.4 and 32 8.3. A call costs what its padded width costs, so
/// inputs are padded to a multiple of the native width, and a call takes at
/// most three AVX2 batches or two AVX-512 ones.
#[derive(Clone, Copy, Debug, PartialEq)]
pub(super) struct Width {
    /// Lanes a call hashes for the price of one: 16 with AVX-512, else 8
    /// (AVX2; engines of fewer lanes, NEON's 4 or the scalar code, are
    /// padded to 8 as well).
    pub(super) unit: usize,
    /// Inputs in one call at most.
    pub(super) most: usize,
}

impl Width {
    /// The shape for an engine of `native` lanes.
    pub(super) fn of(native: usize) -> Width {
        let unit = native.max(BATCH);
        Width { unit, most: if unit >= 16 { 2 * unit } else { 3 * unit } }
    }

    /// The lanes a call of `n` inputs hashes: `n` rounded up to the unit
    /// (copies of an input fill the rest, their results dropped); one alone
    /// is hashed by the single-lane code.
    pub(super) fn padded(self, n: usize) -> usize {
        match n {
            0 | 1 => n,
            n => n.div_ceil(self.unit) * self.unit,
        }
    }
}

impl Default for Width {
    fn default() -> Width {
        Width::of(BATCH)
    }
}

/// Multi-buffer MD5 calls of segments' steps: how many, the inputs they
/// hashed and the lanes they paid for (inputs and padding).
#[derive(Clone, Copy, Debug, Default)]
pub(super) struct Calls {
    pub(super) calls: u64,
    pub(super) inputs: u64,
    pub(super) lanes: u64,
}

impl Calls {
    pub(super) fn add(&mut self, other: Calls) {
        self.calls += other.calls;
        self.inputs += other.inputs;
        self.lanes += other.lanes;
    }
}

/// Bytes a segment may be written ahead of its hash before it is hashed
/// whatever the batch: bounds how far behind the page cache reads lag. With
/// 8 MiB, a segment written faster than the others was often hashed nearly
/// alone to catch up (MD5 calls for 4 x 1 GiB, printed by `--log debug`, 3
/// runs each: 1,843 - 2,082 against 1,672 - 1,785 with 32 MiB).
pub(super) const LAG: u64 = 32 << 20;

/// How long an MD5 segment written to its end waits for others to fill its
/// hashing batch before it is urgent (hashed whatever the batch), unless a
/// batch fills first or every segment is due (no other is coming). Parts
/// arrive at different rates: the fastest are written ahead of their hashes
/// (at most [`LAG`]), and a segment hashed the moment its last byte came
/// had its tail hashed in thin calls, a few lanes of 16 each: with 4 ms, a
/// temporary probe counted 1,175 of 1,958 steps taken that way for 4 x 1
/// GiB (about 7 segments due). MD5 calls for 4 x 1 GiB from SeaweedFS
/// (`--log debug`, AVX-512, two runs each): 1,448 and 1,593 with 4 ms, 1,348
/// and 1,170 with 200 ms (docs/benchmarks.md, "MD5 tails waited for"). Once
/// urgent it stays so until it is hashed. No request waits with it: a part
/// waits for its hash (to journal it) after giving back its request slot;
/// its journal line and its object's commit wait. Other digests are not
/// hashed together and do not wait.
pub(super) const END_WAIT: std::time::Duration = std::time::Duration::from_millis(200);

/// How long [`Hasher::give`](super::hasher::Hasher::give) waits for room before handing the buffer back.
pub(super) const GIVE_WAIT: std::time::Duration = std::time::Duration::from_millis(200);

/// Given buffers a segment may hold before it is hashed whatever the batch.
pub(super) const GIVEN_LAG: usize = 8;

/// Buffers held at most, all segments and small objects together (12 MiB of
/// 256 KiB buffers): beyond it a segment's buffer is refused and its bytes
/// read back instead, and a small object is hashed by its own worker.
pub(super) const MAX_GIVEN: usize = 48;

/// How long a small object's bytes may wait for others to be hashed with
/// ([`Hasher::whole_md5`](super::hasher::Hasher::whole_md5)): a multi-buffer MD5 of 8 lanes (AVX2) or 16
/// (AVX-512) costs about what one lane does, and thousands of small objects arrive a few hundred a second per
/// request in flight. The wait delays the object's commit, not a request.
pub(super) const LINGER: std::time::Duration = std::time::Duration::from_millis(4);

/// Small objects are handed over ([`Hasher::whole_md5`](super::hasher::Hasher::whole_md5)) only when at least
/// this many requests can be in flight: fewer could never fill a batch worth
/// the hand-over, and the workers waiting for their objects' hashes would
/// leave request slots unused (measured: `--numworkers 1` took 1.8 times as
/// long on 1,500 small objects).
pub(super) const WHOLE_MIN_REQUESTS: usize = BATCH;

/// The result of one segment: its digest, or why its bytes could not be read.
pub(super) type SegmentResult = Result<PartSum, String>;

/// A whole object's bytes in one buffer, waiting to be MD5-hashed with others.
pub(super) struct Whole {
    pub(super) buf: IoBuf,
    pub(super) since: std::time::Instant,
    pub(super) tx: oneshot::Sender<SegmentResult>,
}

/// Handle of a segment being hashed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub(super) struct StreamId(pub(super) u64);

/// Where a segment's bytes are read back from: the temporary file, and its
/// direct view when its bytes were written past the page cache (reading them
/// back through the cache would fill it with a second copy).
#[derive(Debug)]
pub(super) struct ReadBack {
    pub(super) buffered: File,
    pub(super) direct: Option<File>,
}

impl ReadBack {
    /// Reads `len` bytes at `at` into `buf`: directly, in whole blocks, when
    /// the file has a direct view and `at` is on a block boundary (bytes past
    /// `len` in the last block are read and ignored); otherwise, or when the
    /// filesystem refuses, through the page cache.
    pub(super) fn read(&self, buf: &mut IoBuf, at: u64, len: usize) -> std::io::Result<()> {
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

pub(super) struct Stream {
    pub(super) file: Arc<ReadBack>,
    /// Buffers written with `O_DIRECT` and handed over with their offsets
    /// ([`Hasher::give`](super::hasher::Hasher::give)), in order: hashed from memory, not read back from
    /// the disk.
    pub(super) given: VecDeque<(u64, IoBuf)>,
    /// Next byte to hash.
    pub(super) hashed: u64,
    /// Bytes before this offset are written.
    pub(super) ready: u64,
    pub(super) end: u64,
    /// `None` while a thread is hashing a step of this segment.
    pub(super) digest: Option<PartDigest>,
    /// When its last byte was reported written, and how long it then waits
    /// for company (see [`END_WAIT`]).
    pub(super) ended: Option<std::time::Instant>,
    pub(super) end_wait: std::time::Duration,
    pub(super) tx: Option<oneshot::Sender<SegmentResult>>,
}

impl Stream {
    /// Whether a step is worth taking now: a full chunk, or the segment's tail.
    pub(super) fn due(&self) -> bool {
        self.digest.is_some() && (self.ready - self.hashed >= CHUNK as u64 || (self.ready == self.end))
    }

    /// Due, and not to be kept waiting for a fuller batch: finished for its
    /// `end_wait` (its object may be waiting to commit) or far behind.
    pub(super) fn urgent(&self) -> bool {
        self.due() && (self.end_waited() || self.ready - self.hashed >= LAG || self.given.len() >= GIVEN_LAG)
    }

    /// Written to its end, and its wait is over (or it was never told
    /// when it ended).
    fn end_waited(&self) -> bool {
        self.ready == self.end && self.ended.is_none_or(|at| at.elapsed() >= self.end_wait)
    }

    /// When this segment, written to its end, becomes urgent; `None` when
    /// it is not written to its end, not due (a step of it is being
    /// hashed), or already urgent.
    pub(super) fn end_wait_over(&self) -> Option<std::time::Instant> {
        let at = self.ended? + self.end_wait;
        (self.due() && !self.urgent()).then_some(at)
    }

    /// The given buffer holding the next bytes to hash, once they are all
    /// reported written. Buffers are given only where they extend the written
    /// prefix, so the queue is in order and its front is next; one whose
    /// bytes were read back meanwhile (the hashing thread stepped between the
    /// hand-over and the report) is passed, and handed back to be freed.
    pub(super) fn next_given(&mut self, passed: &mut Vec<IoBuf>) -> Option<IoBuf> {
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
    pub(super) fn take_free(&mut self, cap: usize) -> Option<IoBuf> {
        let i = self.free.iter().rposition(|b| b.capacity() == cap)?;
        Some(self.free.swap_remove(i))
    }

    /// When the small objects waiting are to be hashed: now when a full
    /// batch waits (or the run is ending), else when the first has waited
    /// [`LINGER`]; `None` when none waits.
    pub(super) fn wholes_due(&self) -> Option<std::time::Instant> {
        let first = self.wholes.first()?;
        match self.wholes.len() >= self.lanes || self.closed {
            true => Some(first.since),
            false => Some(first.since + LINGER),
        }
    }

    /// When the hashing thread is to look again with nothing new reported:
    /// when the first small object's wait or a finished segment's is over.
    pub(super) fn next_deadline(&self) -> Option<std::time::Instant> {
        let ends = self.streams.values().filter_map(Stream::end_wait_over);
        ends.chain(self.wholes_due()).min()
    }

    /// Whether a step is worth taking now: a full batch of due segments, an
    /// urgent one, or every segment due (no other is coming to fill the batch).
    pub(super) fn worth_a_step(&self) -> bool {
        let mut due = 0;
        for s in self.streams.values() {
            if s.urgent() {
                return true;
            }
            due += usize::from(s.due());
        }
        let idle = self.streams.values().filter(|s| s.digest.is_some()).count();
        // With three AVX2 batches' worth of segments being written, wait
        // for two: 16 lanes hash 20% faster than 8 (4.4 GiB/s against 3.6,
        // measured). With AVX-512, wait for 16 as soon as 16 are being
        // written: a call of 16 costs what a call of 8 does (4 x 1 GiB on SeaweedFS: MD5
        // calls 1,517 - 1,626 against 1,611 - 1,684 waiting for 8).
        let want = if idle >= 3 * BATCH {
            2 * BATCH
        } else if idle >= self.width.unit {
            self.width.unit
        } else {
            BATCH
        };
        // Many buffers held: hash what is due rather than hold more.
        due > 0 && (due >= want || due == idle || self.given >= MAX_GIVEN / 2)
    }
}

#[derive(Default)]
pub(super) struct State {
    pub(super) streams: HashMap<StreamId, Stream>,
    pub(super) next_id: u64,
    pub(super) closed: bool,
    /// Buffers the hasher holds, all streams and small objects together:
    /// queued, or being hashed; counted until they are free again.
    pub(super) given: usize,
    /// Buffers hashed and free for the fetches to take again.
    pub(super) free: Vec<IoBuf>,
    /// Bytes hashed from buffers handed over, and bytes read back.
    pub(super) from_buffers: u64,
    pub(super) read_back: u64,
    /// Whole small objects waiting for company ([`Hasher::whole_md5`](super::hasher::Hasher::whole_md5)).
    pub(super) wholes: Vec<Whole>,
    /// Small objects worth waiting for: the MD5 engine's native width, at
    /// least 8, at most the requests in flight.
    pub(super) lanes: usize,
    /// The MD5 calls' shape on this CPU, and the calls made.
    pub(super) width: Width,
    pub(super) md5_calls: Calls,
    /// Small objects hashed, and how many multi-buffer calls that took.
    pub(super) wholes_hashed: u64,
    pub(super) whole_calls: u64,
    /// How long a segment written to its end waits for company: [`END_WAIT`].
    pub(super) end_wait: std::time::Duration,
}

pub(super) struct Shared {
    pub(super) state: Mutex<State>,
    pub(super) work: Condvar,
    /// Told when hashed buffers are free again (see [`Hasher::give`](super::hasher::Hasher::give)).
    pub(super) room: tokio::sync::Notify,
}

impl Shared {
    pub(super) fn new() -> Shared {
        let width = Width::of(md5_many::Md5Many::new().lanes());
        let state = State { lanes: width.unit, width, end_wait: END_WAIT, ..State::default() };
        Shared { state: Mutex::new(state), work: Condvar::new(), room: tokio::sync::Notify::new() }
    }
}
