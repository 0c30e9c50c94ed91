//! One object in a pass: how it is split, what it is checked with, and its
//! state as parts come back, under one lock.
//!
//! What is fixed when the pass starts (the ranges, their alignment to the
//! upload's parts, the segments hashed in order) is plain data. What changes
//! (the temporary file, what the store states, each range's hash, the
//! segments' hashing, the parts restored from an earlier run) lives in one
//! [`Mutex`] and changes only through the named methods below; the lock is
//! never held across an `await` or a blocking call.

use std::ops::Range;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use tokio::sync::oneshot;

use super::hasher::{Hasher, ReadBack, SegmentResult, StreamId};
use super::job::{GetJob, KnownChecksum};
use super::parts::{CrcFold, Ranges};
use super::segments::{Bits, Segments};
use super::settings::{EngineConfig, VerifyMode};
use crate::error::Error;
use crate::integrity::{self, DigestKind, DigestValue, PartCrc, PartSum, Stated};
use crate::localfs::{IoBuf, TempFile};

/// The largest uploaded part fetched in one request when its hash is computed
/// in order. s5cmd uploads 50 MiB parts, aws-cli and boto3 8 MiB, rclone 5 MiB.
/// Measured on 4 x 1 GiB in s5cmd's 50 MiB parts: with 16 MiB ranges a third
/// of the MD5 work was lanes padded for want of parts to hash (6.5 parts per
/// call), with whole parts almost none, and 0.6 CPU-s less.
const SEGMENT_RANGE: u64 = 64 << 20;

/// One object in a pass.
pub(super) struct ObjectState {
    pub job: GetJob,
    /// The byte ranges fetched, one request each (at least one, maybe empty).
    pub parts: Ranges,
    /// Upload part size when `parts` are aligned to the parts of a multipart upload.
    pub aligned: Option<u64>,
    /// The ranges this run fetches: all of them, or its piece's when the
    /// object is split across shards.
    pub mine: Range<usize>,
    one_range_each: bool,
    /// Held while the temporary file is being created.
    pub create: tokio::sync::Mutex<()>,
    /// Bytes written to the temporary file (given back to progress on discard).
    pub written: AtomicU64,
    state: Mutex<Changing>,
}

/// What changes as parts come back.
struct Changing {
    /// Created when the first part starts; taken when the object is finished.
    file: Option<Arc<TempFile>>,
    /// The checksum the store states: from HEAD before the first of many parts,
    /// or from the response of a single whole-object GET.
    stated: KnownChecksum,
    /// Whether the ETag is an MD5 (from HEAD, or the whole-object GET).
    etag_md5: bool,
    /// The finished ranges' CRCs, when their bytes were hashed as CRCs.
    crcs: CrcFold,
    /// Ranges found complete on disk from an earlier, interrupted run.
    restored: Bits,
    /// How far each segment is written from its start.
    written: Segments,
    /// Per segment: the hasher's stream, its result channel, and the result.
    streams: Vec<Option<StreamId>>,
    pending: Vec<Option<oneshot::Receiver<SegmentResult>>>,
    segment_sums: Vec<Option<DigestValue>>,
    /// A read handle on the temporary file, for the hasher.
    reader: Option<Arc<ReadBack>>,
}

/// What verification reads of an object once every part is back.
pub(super) struct Received {
    pub stated: KnownChecksum,
    /// Each segment's CRC (its ranges' combined), where ranges were hashed
    /// as they came and every one is in.
    pub crcs: Option<Vec<PartCrc>>,
    /// Each segment's hash, where segments were hashed in order.
    pub segment_sums: Option<Vec<DigestValue>>,
}

impl ObjectState {
    pub fn new(job: GetJob, cfg: &EngineConfig) -> ObjectState {
        Self::planned(job, cfg, SEGMENT_RANGE)
    }

    /// How many ranges [`ObjectState::new`] splits `job` into (at least one),
    /// without building the state.
    pub fn part_count(job: &GetJob, cfg: &EngineConfig) -> usize {
        plan_parts(job, cfg, SEGMENT_RANGE).0.len()
    }

    /// An object streamed in order (`cat`): every range at most
    /// `--part-size`, since each is held in memory until its turn to be
    /// written; what is hashed in order is hashed by the writer.
    pub fn for_stream(job: GetJob, cfg: &EngineConfig) -> ObjectState {
        Self::planned(job, cfg, 0)
    }

    fn planned(job: GetJob, cfg: &EngineConfig, whole_parts_up_to: u64) -> ObjectState {
        let (parts, aligned) = plan_parts(&job, cfg, whole_parts_up_to);
        let written = Segments::new(parts);
        let n = written.count();
        ObjectState {
            one_range_each: written.one_range_each(),
            state: Mutex::new(Changing {
                file: None,
                stated: job.checksum,
                etag_md5: job.etag_md5,
                crcs: CrcFold::default(),
                restored: Bits::new(parts.len()),
                written,
                streams: vec![None; n],
                pending: (0..n).map(|_| None).collect(),
                segment_sums: vec![None; n],
                reader: None,
            }),
            aligned,
            mine: match job.piece {
                Some(piece) => piece.ranges(parts.len()),
                None => 0..parts.len(),
            },
            job,
            parts,
            create: tokio::sync::Mutex::new(()),
            written: AtomicU64::new(0),
        }
    }

    /// Whether the object arrives in one GET that fits the write buffer: its
    /// temporary file is created and written in one filesystem call (see
    /// `Engine::write_io`; and
    /// hashed in it, except an MD5, which the hashing thread computes with
    /// other small objects'), with no preallocation and no journal.
    pub fn one_write(&self, cfg: &EngineConfig) -> bool {
        self.parts.len() == 1 && self.job.size > 0 && self.job.size <= cfg.buffer_size as u64
    }

    /// Whether the object can be split across shards: several ranges, each
    /// of which a later run can check from disk against the hash its
    /// journal gives (CRCs, or whole segments' MD5s or SHAs). An object
    /// hashed in order across ranges (a single PUT's MD5) is not: no shard
    /// could check another's ranges.
    pub fn splittable(&self) -> bool {
        self.parts.len() > 1 && self.range_kind().is_some()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Changing> {
        self.state.lock().unwrap()
    }

    // --- the temporary file ---

    pub fn file(&self) -> Option<Arc<TempFile>> {
        self.lock().file.clone()
    }

    pub fn set_file(&self, file: Arc<TempFile>) {
        self.lock().file = Some(file);
    }

    /// Takes the temporary file (the object is finished) and closes the
    /// hasher's read handle (thousands of objects must not hold thousands of fds).
    pub fn take_file(&self) -> Option<Arc<TempFile>> {
        let mut st = self.lock();
        st.reader = None;
        st.file.take()
    }

    // --- what the store states ---

    /// A whole-object GET stated the object's checksum and ETag kind.
    pub fn learned_from_get(&self, checksum: Option<Stated>, etag_md5: bool) {
        let mut st = self.lock();
        st.stated = checksum.into();
        st.etag_md5 = etag_md5;
    }

    /// What each range is hashed with as its bytes stream in: CRCs, which combine.
    pub fn inline_kind(&self) -> Option<DigestKind> {
        self.kinds(|st| self.inline_kind_in(st))
    }

    /// What each segment is hashed with, in order, when that is how the object
    /// is checked.
    pub fn segment_kind(&self) -> Option<DigestKind> {
        self.kinds(|st| self.segment_kind_in(st))
    }

    /// What a range's journal entry is checked with on resume: its CRC, or its
    /// segment's hash when the range is a whole segment. Otherwise nothing, and
    /// the range is fetched again.
    pub fn range_kind(&self) -> Option<DigestKind> {
        self.kinds(|st| self.inline_kind_in(st).or_else(|| self.segment_kind_in(st).filter(|_| self.one_range_each)))
    }

    /// Why an object without a checksum cannot be checked against its MD5 ETag.
    pub fn md5_unverifiable(&self) -> Option<String> {
        self.kinds(|st| self.md5_unverifiable_in(st))
    }

    fn kinds<R>(&self, f: impl FnOnce(&Changing) -> R) -> R {
        f(&self.lock())
    }

    fn inline_kind_in(&self, st: &Changing) -> Option<DigestKind> {
        match st.stated {
            KnownChecksum::Stated(Stated::Full { algorithm, .. }) => Some(DigestKind::Crc(algorithm)),
            KnownChecksum::Stated(Stated::Composite { algorithm, .. }) => {
                self.aligned.map(|_| DigestKind::Crc(algorithm))
            }
            _ => None,
        }
    }

    fn segment_kind_in(&self, st: &Changing) -> Option<DigestKind> {
        match st.stated {
            KnownChecksum::Stated(Stated::Full { .. } | Stated::Composite { .. }) => None,
            KnownChecksum::Stated(Stated::Sha { algorithm, parts: None, .. }) => {
                (self.parts.segment_count() == 1).then_some(DigestKind::Sha(algorithm))
            }
            KnownChecksum::Stated(Stated::Sha { algorithm, parts: Some(_), .. }) => {
                self.aligned.map(|_| DigestKind::Sha(algorithm))
            }
            KnownChecksum::NoneStated | KnownChecksum::NotAsked => {
                self.md5_unverifiable_in(st).is_none().then_some(DigestKind::Md5)
            }
        }
    }

    fn md5_unverifiable_in(&self, st: &Changing) -> Option<String> {
        let job = &self.job;
        if !st.etag_md5 {
            return Some("the store states no checksum, and its ETag is not an MD5 (SSE-KMS or SSE-C)".into());
        }
        let etag = job.etag.as_deref().unwrap_or_default();
        if !integrity::looks_like_md5_etag(etag) {
            return Some(format!("the store states no checksum, and its ETag {etag:?} is not an MD5"));
        }
        match (job.multipart(), job.source_parts) {
            // A single PUT: its segment is the whole object.
            (false, _) => None,
            (true, Some(u)) if self.aligned.is_some() && self.parts.segment_count() == u.count as usize => None,
            (true, _) => Some(match &job.layout_unknown {
                Some(why) => format!("the store states no checksum, and {why}"),
                None => "the store states no checksum, and its multipart upload's parts are not of equal size".into(),
            }),
        }
    }

    // --- ranges ---

    /// Whether range `p` was found complete on disk from an earlier run.
    pub fn restored(&self, p: usize) -> bool {
        self.lock().restored.get(p)
    }

    /// Ranges an earlier run finished, checked against their hashes: marked
    /// restored, their hashes kept. Returns the bytes restored.
    pub fn restore(&self, checked: Vec<(usize, Option<PartSum>)>) -> u64 {
        let mut st = self.lock();
        let mut bytes = 0;
        for (p, sum) in checked {
            st.restored.set(p);
            let r = self.parts.get(p);
            bytes += r.end - r.start;
            let (s, _) = st.written.wrote(p, r.end - r.start);
            match sum {
                // A whole segment restored: its hash is known.
                Some(PartSum::Hash(v)) => st.segment_sums[s] = Some(v),
                Some(PartSum::Crc(crc)) => self.fold_crc(&mut st, p, crc),
                None => {}
            }
        }
        self.written.fetch_add(bytes, Ordering::Relaxed);
        bytes
    }

    /// Range `p` is written and was hashed as it came: a CRC is kept for the
    /// object's check; a hash is its segment's (the range is the whole segment).
    pub fn range_hashed(&self, p: usize, sum: PartSum) {
        let mut st = self.lock();
        match sum {
            PartSum::Crc(crc) => self.fold_crc(&mut st, p, crc),
            PartSum::Hash(v) => {
                let s = st.written.segment_of(p);
                st.segment_sums[s] = Some(v);
            }
        }
    }

    fn fold_crc(&self, st: &mut Changing, p: usize, crc: PartCrc) {
        // Not checked with CRCs when the store states another checksum.
        let Some(DigestKind::Crc(algorithm)) = self.inline_kind_in(st) else { return };
        st.crcs.add(&self.parts, algorithm, p, crc);
    }

    /// The ranges of the segment range `p` lies in.
    pub fn segment_ranges(&self, p: usize) -> Range<usize> {
        self.parts.segment_ranges(self.parts.segment_of(p))
    }

    /// The segment range `p` makes up alone, if it does.
    pub fn own_segment(&self, p: usize) -> Option<usize> {
        let s = self.parts.segment_of(p);
        (self.parts.segment_ranges(s).len() == 1).then_some(s)
    }

    // --- segments hashed in order ---

    /// Starts hashing the segment that range `part` lies in, unless it is
    /// already being hashed or done. Called when a range's body starts.
    pub fn open_segment(&self, hasher: &Hasher, part: usize, tmp: &TempFile, kind: DigestKind) -> Result<(), Error> {
        let mut st = self.lock();
        let reader = match &st.reader {
            Some(f) => f.clone(),
            None => {
                let read_back = ReadBack { buffered: tmp.reader()?, direct: tmp.direct_reader() };
                st.reader.insert(Arc::new(read_back)).clone()
            }
        };
        let s = self.parts.segment_of(part);
        if st.streams[s].is_some() || st.segment_sums[s].is_some() {
            return Ok(());
        }
        let (id, rx) = hasher.open(reader, self.parts.segment_bytes(s), kind);
        hasher.ready(id, st.written.prefix(s));
        st.streams[s] = Some(id);
        st.pending[s] = Some(rx);
        Ok(())
    }

    /// Hands `buf`, just written at `at` within range `part`, to the hasher
    /// of its segment, if one is hashing it; returns the buffer to go on with
    /// (see [`Hasher::give`]).
    pub async fn give(&self, hasher: Option<&Hasher>, part: usize, at: u64, buf: IoBuf) -> IoBuf {
        let id = self.lock().streams[self.parts.segment_of(part)];
        match (id, hasher) {
            (Some(id), Some(h)) => h.give(id, at, buf).await,
            _ => buf,
        }
    }

    /// Range `part` has `n` bytes written from its start: its segment's hasher
    /// may go on.
    pub fn wrote(&self, hasher: Option<&Hasher>, part: usize, n: u64) {
        let mut st = self.lock();
        let (s, ready) = st.written.wrote(part, n);
        if let (Some(id), Some(h)) = (st.streams[s], hasher) {
            h.ready(id, ready);
        }
    }

    /// The object's only segment, whole in one buffer, is being hashed by
    /// the hasher ([`Hasher::whole_md5`]): its digest comes from `rx`.
    pub fn hashing_whole(&self, rx: oneshot::Receiver<SegmentResult>) {
        self.lock().pending[0] = Some(rx);
    }

    /// Stops hashing a failed object's segments.
    pub fn cancel_segments(&self, hasher: Option<&Hasher>) {
        let mut st = self.lock();
        for id in st.streams.iter_mut().filter_map(Option::take) {
            if let Some(h) = hasher {
                h.cancel(id);
            }
        }
        st.pending.iter_mut().for_each(|p| *p = None);
    }

    /// Waits for the hash of segment `s`, if it is being computed.
    pub async fn segment_sum(&self, s: usize) -> Result<Option<DigestValue>, Error> {
        let rx = self.lock().pending[s].take();
        let Some(rx) = rx else { return Ok(self.lock().segment_sums[s]) };
        let fail = |why: String| Error::io(&self.job.dest, "hashing", std::io::Error::other(why));
        let sum = match rx.await {
            Ok(Ok(PartSum::Hash(v))) => v,
            Ok(Ok(PartSum::Crc(_))) => return Err(fail("internal error: a CRC for a segment".into())),
            Ok(Err(why)) => return Err(fail(why)),
            Err(_) => return Err(fail("internal error: hashing stopped".into())),
        };
        let mut st = self.lock();
        st.segment_sums[s] = Some(sum);
        st.streams[s] = None;
        Ok(Some(sum))
    }

    /// Waits for every segment being hashed.
    pub async fn segment_sums(&self) -> Result<(), Error> {
        for s in 0..self.parts.segment_count() {
            self.segment_sum(s).await?;
        }
        Ok(())
    }

    /// What verification needs, once every part is back.
    pub fn received(&self) -> Received {
        let st = self.lock();
        let crcs = st.crcs.per_segment(&self.parts);
        Received { stated: st.stated, crcs, segment_sums: st.segment_sums.iter().copied().collect() }
    }
}

/// The ranges to fetch, in segments hashed in order (each uploaded part, or
/// the whole object); and the upload part size when they are aligned to a
/// multipart upload's parts.
///
/// Alignment is needed to check a composite checksum (ranges within a part:
/// their CRCs combine into the part's CRC, or the part's SHA is computed in
/// order over them) or, with no checksum, a multipart MD5 ETag (the MD5 of each
/// part, in order). A full-object CRC is checked from any split; a full-object
/// SHA or a single PUT's MD5 ETag is one segment, hashed in order.
///
/// Where each part is hashed in order (MD5 or SHA, which do not combine), a
/// part of up to `whole_parts_up_to` bytes ([`SEGMENT_RANGE`] for downloads) is fetched in one request: every
/// request then extends a part's hashed prefix as its body arrives, so there
/// are as many parts to hash together in SIMD lanes as requests in flight, and
/// a resumed part can be checked against its hash.
pub(super) fn plan_parts(job: &GetJob, cfg: &EngineConfig, whole_parts_up_to: u64) -> (Ranges, Option<u64>) {
    let layout = job.source_parts.filter(|u| u.uniform_for(job.size) && cfg.verify != VerifyMode::Off);
    let (by_part, hashed_in_order) = match job.checksum {
        KnownChecksum::Stated(Stated::Full { .. } | Stated::Sha { parts: None, .. }) => (None, false),
        KnownChecksum::Stated(Stated::Composite { .. }) => (layout, false),
        KnownChecksum::Stated(Stated::Sha { parts: Some(_), .. }) => (layout, true),
        KnownChecksum::NoneStated | KnownChecksum::NotAsked if job.etag_md5 && job.multipart() => (layout, true),
        KnownChecksum::NoneStated | KnownChecksum::NotAsked => (None, false),
    };
    let range = if hashed_in_order { cfg.part_size.max(whole_parts_up_to) } else { cfg.part_size };
    match by_part {
        Some(u) => (Ranges::aligned(job.size, u.part_size, range), Some(u.part_size)),
        None => (Ranges::split(job.size, cfg.part_size), None),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::integrity::Algorithm;

    /// A 1 GiB object uploaded in `part` MiB parts, with what the store states.
    fn uploaded(part: u64, checksum: KnownChecksum) -> GetJob {
        let size = 1u64 << 30;
        let count = size.div_ceil(part << 20);
        let last_size = size - (count - 1) * (part << 20);
        GetJob {
            bucket: "b".into(),
            key: "k".into(),
            size,
            etag: Some(format!("\"0123456789abcdef0123456789abcdef-{count}\"")),
            version_id: None,
            last_modified: None,
            dest: "k".into(),
            root: std::path::Path::new(".").into(),
            checksum,
            etag_md5: true,
            source_parts: Some(super::super::job::PartLayout { part_size: part << 20, last_size, count: count as u32 }),
            layout_unknown: None,
            piece: None,
        }
    }

    #[test]
    fn crcs_combine_per_segment_in_any_order_and_a_missing_range_leaves_none() {
        use crate::integrity::PartDigest;
        let data: Vec<u8> = (0..25u32).map(|i| (i * 37) as u8).collect();
        let crc = |r: Range<u64>| {
            let mut d = PartDigest::new(DigestKind::Crc(Algorithm::Crc64Nvme));
            d.update(&data[r.start as usize..r.end as usize]);
            match d.finish() {
                PartSum::Crc(c) => c,
                PartSum::Hash(_) => unreachable!(),
            }
        };
        // Three segments of 10 bytes (the last 5), ranges of at most 4.
        let ranges = Ranges::aligned(25, 10, 4);
        let mut fold = CrcFold::default();
        let order = [7usize, 2, 0, 5, 3, 1, 6, 4];
        for (i, &p) in order.iter().enumerate() {
            fold.add(&ranges, Algorithm::Crc64Nvme, p, crc(ranges.get(p)));
            if i < order.len() - 1 {
                assert!(fold.per_segment(&ranges).is_none(), "not every range is in");
            }
        }
        // A range reported twice is not combined twice.
        fold.add(&ranges, Algorithm::Crc64Nvme, 0, crc(ranges.get(0)));
        let got = fold.per_segment(&ranges).unwrap();
        let want: Vec<PartCrc> = (0..3).map(|s| crc(ranges.segment_bytes(s))).collect();
        assert_eq!(got, want);
        assert!(fold.early.is_empty(), "nothing is kept once combined");
    }

    #[test]
    fn parts_hashed_in_order_are_fetched_whole_up_to_a_limit_and_crc_parts_in_ranges() {
        let cfg = EngineConfig::default();
        let sizes = |job: &GetJob| {
            let (ranges, aligned) = plan_parts(job, &cfg, SEGMENT_RANGE);
            assert_eq!(aligned, Some(ranges.segment_size()));
            assert_eq!(ranges.iter().map(|r| r.end - r.start).sum::<u64>(), job.size);
            ranges.iter().map(|r| (r.end - r.start) >> 20).collect::<Vec<u64>>()
        };
        // s5cmd's 50 MiB parts behind an MD5 ETag: one request a part.
        let md5 = sizes(&uploaded(50, KnownChecksum::NoneStated));
        assert_eq!(md5.len(), 21);
        assert!(md5[..20].iter().all(|&m| m == 50) && md5[20] == 24, "{md5:?}");
        // A composite SHA256 the same way.
        let value = crate::integrity::DigestValue::new(&[7; 32]).unwrap();
        let sha = Stated::Sha { algorithm: crate::integrity::Sha::Sha256, parts: Some(21), value };
        assert_eq!(sizes(&uploaded(50, KnownChecksum::Stated(sha))).len(), 21);
        // Parts above the limit in pieces of at most 64 MiB, none across parts.
        let big = sizes(&uploaded(100, KnownChecksum::NoneStated));
        assert!(big.iter().all(|&m| m <= 64), "{big:?}");
        assert_eq!(&big[..4], &[64, 36, 64, 36]);
        // A composite CRC combines per range: ranges stay at --part-size.
        let crc = Stated::Composite { algorithm: Algorithm::Crc32, parts: 21, value: 1 };
        let ranges = sizes(&uploaded(50, KnownChecksum::Stated(crc)));
        assert!(ranges.iter().all(|&m| m <= 16), "{ranges:?}");
        // Without verification nothing is aligned: plain --part-size ranges.
        let off = EngineConfig { verify: VerifyMode::Off, ..EngineConfig::default() };
        let (ranges, aligned) = plan_parts(&uploaded(50, KnownChecksum::NoneStated), &off, SEGMENT_RANGE);
        assert!(aligned.is_none() && ranges.len() == 64);
    }
}
