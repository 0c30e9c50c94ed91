//! One round of the engine: schedule the parts of a set of objects over a pool of
//! workers, and commit (or discard) each object when its last part finishes.

use std::ops::Range;
use std::pin::pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use tokio::sync::Notify;

use super::engine::Engine;
use super::hasher::{SegmentResult, StreamId};
use super::retry;
use super::segments::Segments;
use super::{Download, Durability, EngineConfig, KnownChecksum, Outcome, Verification, VerifyMode, fetch, parts};
use crate::error::Error;
use crate::integrity::{self, DigestKind, DigestValue, PartCrc, PartSum, Stated};
use crate::localfs::{Recorded, TempFile};

/// One object in the round.
pub(super) struct FileState {
    pub job: Download,
    pub parts: Vec<Range<u64>>,
    /// Created when the first part starts; taken when the object is finished.
    pub(super) file: Mutex<Option<Arc<TempFile>>>,
    /// Held while the temporary file is being created.
    create: tokio::sync::Mutex<()>,
    /// The checksum the store states: from HEAD before the first of many parts,
    /// or from the response of a single whole-object GET.
    pub stated: Mutex<KnownChecksum>,
    /// Hash of each finished part, when its bytes were hashed (see [`inline_kind`]).
    pub sums: Mutex<Vec<Option<PartSum>>>,
    /// Upload part size when `parts` are aligned to the parts of a multipart upload.
    aligned: Option<u64>,
    /// Whether the ETag is an MD5 (from HEAD, or the whole-object GET).
    pub etag_md5: Mutex<bool>,
    /// Bytes written to the temporary file (given back to progress on discard).
    pub written: AtomicU64,
    /// Parts found complete on disk from an earlier, interrupted run.
    restored: Mutex<Vec<bool>>,
    /// The segments hashed in order, and how far each is written.
    segments: Mutex<SegmentState>,
    /// A read handle on the temporary file, for the hasher.
    reader: Mutex<Option<Arc<std::fs::File>>>,
}

/// In-order hashing of an object's segments (see [`super::hasher`]).
struct SegmentState {
    written: Segments,
    /// Per segment: the hasher's stream, its result channel, and the result.
    streams: Vec<Option<StreamId>>,
    pending: Vec<Option<tokio::sync::oneshot::Receiver<SegmentResult>>>,
    sums: Vec<Option<DigestValue>>,
}

/// Scheduling state of one object (under the scheduler lock).
struct Slot {
    next_part: usize,
    in_flight: usize,
    unfinished: usize,
    error: Option<Error>,
}

struct Sched {
    slots: Vec<Slot>,
    /// Objects with parts not yet handed out.
    active: Vec<usize>,
    next_job: usize,
}

enum Pick {
    Part(usize, usize),
    Wait,
    Done,
}

impl Sched {
    fn pick(&mut self, files: &[FileState], cfg: &EngineConfig) -> Pick {
        let take = |slot: &mut Slot| {
            let p = slot.next_part;
            slot.next_part += 1;
            slot.in_flight += 1;
            p
        };
        for (i, &idx) in self.active.iter().enumerate() {
            let slot = &mut self.slots[idx];
            if slot.in_flight < cfg.part_concurrency.max(1) {
                let p = take(slot);
                if slot.next_part == files[idx].parts.len() {
                    self.active.swap_remove(i);
                }
                return Pick::Part(idx, p);
            }
        }
        if self.next_job < self.slots.len() && self.active.len() < cfg.max_open_files.max(1) {
            let idx = self.next_job;
            self.next_job += 1;
            let p = take(&mut self.slots[idx]);
            if files[idx].parts.len() > 1 {
                self.active.push(idx);
            }
            return Pick::Part(idx, p);
        }
        if self.active.is_empty() && self.next_job >= self.slots.len() { Pick::Done } else { Pick::Wait }
    }
}

/// The largest uploaded part fetched in one request when its hash is computed
/// in order. s5cmd uploads 50 MiB parts, aws-cli and boto3 8 MiB, rclone 5 MiB.
/// Measured on 4 x 1 GiB in s5cmd's 50 MiB parts: with 16 MiB ranges a third
/// of the MD5 work was lanes padded for want of parts to hash (6.5 parts per
/// call), with whole parts almost none, and 0.6 CPU-s less.
const SEGMENT_RANGE: u64 = 64 << 20;

/// The ranges to fetch; the upload part size when they are aligned to a
/// multipart upload's parts; and the size of the segments hashed in order.
///
/// Alignment is needed to check a composite checksum (ranges within a part:
/// their CRCs combine into the part's CRC, or the part's SHA is computed in
/// order over them) or, with no checksum, a multipart MD5 ETag (the MD5 of each
/// part, in order). A full-object CRC is checked from any split; a full-object
/// SHA or a single PUT's MD5 ETag is one segment, hashed in order.
///
/// Where each part is hashed in order (MD5 or SHA, which do not combine), a
/// part of up to [`SEGMENT_RANGE`] bytes is fetched in one request: every
/// request then extends a part's hashed prefix as its body arrives, so there
/// are as many parts to hash together in SIMD lanes as requests in flight, and
/// a resumed part can be checked against its hash.
fn plan_parts(job: &Download, cfg: &EngineConfig) -> (Vec<Range<u64>>, Option<u64>, u64) {
    let layout = job.source_parts.filter(|u| u.uniform_for(job.size) && cfg.verify != VerifyMode::Off);
    let (by_part, hashed_in_order) = match job.checksum {
        KnownChecksum::Stated(Stated::Full { .. } | Stated::Sha { parts: None, .. }) => (None, false),
        KnownChecksum::Stated(Stated::Composite { .. }) => (layout, false),
        KnownChecksum::Stated(Stated::Sha { parts: Some(_), .. }) => (layout, true),
        KnownChecksum::NoneStated | KnownChecksum::NotAsked if job.etag_md5 && job.multipart() => (layout, true),
        KnownChecksum::NoneStated | KnownChecksum::NotAsked => (None, false),
    };
    let range = if hashed_in_order { cfg.part_size.max(SEGMENT_RANGE) } else { cfg.part_size };
    match by_part {
        Some(u) => (parts::split_aligned(job.size, u.part_size, range), Some(u.part_size), u.part_size),
        None if job.size <= cfg.part_size => (std::iter::once(0..job.size).collect(), None, job.size),
        None => (parts::split(job.size, cfg.part_size), None, job.size),
    }
}

/// Whether the object arrives in one GET that fits the write buffer: its
/// temporary file is created, written and hashed in one blocking call, with no
/// preallocation and no journal.
pub(super) fn one_write(file: &FileState, cfg: &EngineConfig) -> bool {
    file.parts.len() == 1 && file.job.size > 0 && file.job.size <= cfg.buffer_size as u64
}

/// What each range is hashed with as its bytes stream in: CRCs, which combine.
pub(super) fn inline_kind(file: &FileState) -> Option<DigestKind> {
    let stated = *file.stated.lock().unwrap();
    match stated {
        KnownChecksum::Stated(Stated::Full { algorithm, .. }) => Some(DigestKind::Crc(algorithm)),
        KnownChecksum::Stated(Stated::Composite { algorithm, .. }) => file.aligned.map(|_| DigestKind::Crc(algorithm)),
        _ => None,
    }
}

/// What each segment is hashed with, in order, when that is how the object is checked.
pub(super) fn segment_kind(file: &FileState) -> Option<DigestKind> {
    let stated = *file.stated.lock().unwrap();
    match stated {
        KnownChecksum::Stated(Stated::Full { .. } | Stated::Composite { .. }) => None,
        KnownChecksum::Stated(Stated::Sha { algorithm, parts: None, .. }) => {
            (file.segments.lock().unwrap().written.list.len() == 1).then_some(DigestKind::Sha(algorithm))
        }
        KnownChecksum::Stated(Stated::Sha { algorithm, parts: Some(_), .. }) => {
            file.aligned.map(|_| DigestKind::Sha(algorithm))
        }
        KnownChecksum::NoneStated | KnownChecksum::NotAsked => {
            md5_unverifiable(file).is_none().then_some(DigestKind::Md5)
        }
    }
}

/// What a range's journal entry is checked with on resume: its CRC, or its
/// segment's hash when the range is a whole segment. Otherwise nothing, and
/// the range is fetched again.
fn range_kind(file: &FileState) -> Option<DigestKind> {
    inline_kind(file).or_else(|| segment_kind(file).filter(|_| file.segments.lock().unwrap().written.one_range_each()))
}

/// Why an object without a checksum cannot be checked against its MD5 ETag.
fn md5_unverifiable(file: &FileState) -> Option<String> {
    let job = &file.job;
    if !*file.etag_md5.lock().unwrap() {
        return Some("the store states no checksum, and its ETag is not an MD5 (SSE-KMS or SSE-C)".into());
    }
    let etag = job.etag.as_deref().unwrap_or_default();
    if !integrity::looks_like_md5_etag(etag) {
        return Some(format!("the store states no checksum, and its ETag {etag:?} is not an MD5"));
    }

    match (job.multipart(), job.source_parts) {
        // A single PUT: its segment is the whole object.
        (false, _) => None,
        (true, Some(u))
            if file.aligned.is_some() && file.segments.lock().unwrap().written.list.len() == u.count as usize =>
        {
            None
        }
        (true, _) => Some(match &job.layout_unknown {
            Some(why) => format!("the store states no checksum, and {why}"),
            None => "the store states no checksum, and its multipart upload's parts are not of equal size".into(),
        }),
    }
}

impl Round {
    /// Starts hashing the segment that range `part` lies in, unless it is
    /// already being hashed or done. Called when a range's body starts.
    pub(super) fn open_segment(
        &self,
        file: &FileState,
        part: usize,
        tmp: &TempFile,
        kind: DigestKind,
    ) -> Result<(), Error> {
        let reader = {
            let mut r = file.reader.lock().unwrap();
            match &*r {
                Some(f) => f.clone(),
                None => r.insert(Arc::new(tmp.reader()?)).clone(),
            }
        };
        let mut st = file.segments.lock().unwrap();
        let s = st.written.segment_of(part);
        if st.streams[s].is_some() || st.sums[s].is_some() {
            return Ok(());
        }
        let (id, rx) = self.engine.hasher().open(reader, st.written.list[s].bytes.clone(), kind);
        self.engine.hasher().ready(id, st.written.prefix(s));
        st.streams[s] = Some(id);
        st.pending[s] = Some(rx);
        Ok(())
    }

    /// Range `part` has `n` bytes written from its start: its segment's hasher
    /// may go on.
    pub(super) fn wrote(&self, file: &FileState, part: usize, n: u64) {
        let mut st = file.segments.lock().unwrap();
        let (s, ready) = st.written.wrote(part, n);
        if let Some(id) = st.streams[s] {
            self.engine.hasher().ready(id, ready);
        }
    }

    /// Stops hashing a failed object's segments.
    fn cancel_segments(&self, file: &FileState) {
        let mut st = file.segments.lock().unwrap();
        for id in st.streams.iter_mut().filter_map(Option::take) {
            self.engine.hasher().cancel(id);
        }
        st.pending.iter_mut().for_each(|p| *p = None);
    }

    /// Waits for the hash of segment `s`, if it is being computed.
    async fn segment_sum(&self, file: &FileState, s: usize) -> Result<Option<DigestValue>, Error> {
        let rx = file.segments.lock().unwrap().pending[s].take();
        let Some(rx) = rx else { return Ok(file.segments.lock().unwrap().sums[s]) };
        let fail = |why: String| Error::io(&file.job.dest, "hashing", std::io::Error::other(why));
        let sum = match rx.await {
            Ok(Ok(PartSum::Hash(v))) => v,
            Ok(Ok(PartSum::Crc(_))) => return Err(fail("internal error: a CRC for a segment".into())),
            Ok(Err(why)) => return Err(fail(why)),
            Err(_) => return Err(fail("internal error: hashing stopped".into())),
        };
        let mut st = file.segments.lock().unwrap();
        st.sums[s] = Some(sum);
        st.streams[s] = None;
        Ok(Some(sum))
    }

    /// Waits for every segment being hashed.
    async fn segment_sums(&self, file: &FileState) -> Result<(), Error> {
        let n = file.segments.lock().unwrap().sums.len();
        for s in 0..n {
            self.segment_sum(file, s).await?;
        }
        Ok(())
    }
}

/// State of one round, shared by its workers.
pub(super) struct Round {
    pub engine: Arc<Engine>,
    pub files: Vec<FileState>,
    sched: Mutex<Sched>,
    notify: Notify,
    results: Mutex<Vec<Option<Outcome>>>,
    /// The last round reports every outcome; earlier rounds keep quiet about
    /// objects that will be fetched again.
    last: bool,
}

/// Downloads `jobs`; returns one outcome per job, in order.
pub(super) async fn run(engine: Arc<Engine>, jobs: Vec<Download>, last: bool) -> Vec<Outcome> {
    let n = jobs.len();
    let cfg = &engine.cfg;
    let files: Vec<FileState> = jobs
        .into_iter()
        .map(|job| {
            let (mut parts, aligned, segment) = plan_parts(&job, cfg);
            if parts.is_empty() {
                parts.push(0..0);
            }
            let written = Segments::new(&parts, segment);
            let n = written.list.len();
            FileState {
                segments: Mutex::new(SegmentState {
                    written,
                    streams: vec![None; n],
                    pending: (0..n).map(|_| None).collect(),
                    sums: vec![None; n],
                }),
                reader: Mutex::new(None),
                sums: Mutex::new(vec![None; parts.len()]),
                stated: Mutex::new(job.checksum),
                etag_md5: Mutex::new(job.etag_md5),
                aligned,
                job,
                parts,
                file: Mutex::new(None),
                create: tokio::sync::Mutex::new(()),
                written: AtomicU64::new(0),
                restored: Mutex::new(Vec::new()),
            }
        })
        .collect();
    let slots =
        files.iter().map(|f| Slot { next_part: 0, in_flight: 0, unfinished: f.parts.len(), error: None }).collect();
    let workers = cfg.max_requests.max(1).min(n.max(1) * cfg.part_concurrency.max(1));
    let round = Arc::new(Round {
        engine: engine.clone(),
        files,
        sched: Mutex::new(Sched { slots, active: Vec::new(), next_job: 0 }),
        notify: Notify::new(),
        results: Mutex::new((0..n).map(|_| None).collect()),
        last,
    });
    let handles: Vec<_> = (0..workers).map(|_| tokio::spawn(worker(round.clone()))).collect();
    for h in handles {
        if let Err(e) = h.await {
            std::panic::resume_unwind(e.into_panic());
        }
    }
    // Stopped early: objects that never finished keep a resumable file, or lose
    // their temporary one.
    for file in &round.files {
        round.cancel_segments(file);
        file.reader.lock().unwrap().take();
        let open = file.file.lock().unwrap().take();
        if let Some(t) = open.and_then(|t| Arc::try_unwrap(t).ok())
            && !t.resumable()
        {
            t.discard();
        }
    }
    let mut results = round.results.lock().unwrap();
    results.iter_mut().map(|r| r.take().unwrap_or_else(|| Err(Error::Refused("download did not run".into())))).collect()
}

async fn worker(round: Arc<Round>) {
    let mut buf = Vec::with_capacity(round.engine.cfg.buffer_size);
    loop {
        let mut notified = pin!(round.notify.notified());
        notified.as_mut().enable();
        if round.engine.stop.is_cancelled() {
            return;
        }
        let pick = round.sched.lock().unwrap().pick(&round.files, &round.engine.cfg);
        match pick {
            Pick::Done => return,
            Pick::Wait => {
                tokio::select! {
                    () = notified => {}
                    () = round.engine.stop.cancelled() => return,
                }
            }
            Pick::Part(idx, p) => {
                let result = run_part(&round, idx, p, &mut buf).await;
                finish_part(&round, idx, result).await;
                round.notify.notify_waiters();
            }
        }
    }
}

/// Records a finished part; the part that finishes an object commits or discards it.
async fn finish_part(round: &Round, idx: usize, result: Result<(), Error>) {
    let file = &round.files[idx];
    let error = {
        let mut sched = round.sched.lock().unwrap();
        let slot = &mut sched.slots[idx];
        slot.in_flight -= 1;
        slot.unfinished -= 1;
        if let Err(e) = result {
            // Parts not yet handed out will not be: the object has failed.
            let skipped = file.parts.len() - slot.next_part;
            slot.unfinished -= skipped;
            slot.next_part = file.parts.len();
            slot.error.get_or_insert(e);
            if skipped > 0 {
                sched.active.retain(|&a| a != idx);
            }
        }
        let slot = &mut sched.slots[idx];
        if slot.unfinished > 0 {
            return;
        }
        slot.error.take()
    };
    let tmp = file.file.lock().unwrap().take();
    let engine = &round.engine;
    let error = match error {
        None => round.segment_sums(file).await.err(),
        e => e,
    };
    if error.is_some() {
        round.cancel_segments(file);
    }
    // The hasher is done with the object: close its read handle now, not at
    // the end of the round (thousands of objects would hold thousands of fds).
    file.reader.lock().unwrap().take();
    let outcome = match (error, tmp) {
        // Interrupted: a resumable file stays for the next run.
        (Some(e @ Error::Interrupted(_)), Some(t)) if t.resumable() => Err(e),
        (Some(e), tmp) => Err(e).inspect_err(|_| discard(round, file, tmp)),
        (None, Some(t)) => match check(engine, file, engine.cfg.verify) {
            Err(e) => Err(e).inspect_err(|_| discard(round, file, Some(t))),
            Ok(verification) => match Arc::try_unwrap(t) {
                Ok(t) => {
                    let (mtime, fsync) = (file.job.last_modified, engine.cfg.durability == Durability::Fsync);
                    let committed = engine.blocking_io(move || t.commit(mtime, fsync)).await;
                    committed.map(|journal| {
                        if let Some(j) = journal {
                            engine.remove_journal(j);
                        }
                        if let Some(hook) = &engine.hooks.committed {
                            hook.committed(&file.job);
                        }
                        verification
                    })
                }
                Err(_) => Err(Error::Refused(format!(
                    "{}: internal error: file still in use at commit",
                    file.job.dest.display()
                ))),
            },
        },
        (None, None) => Err(Error::Refused(format!("{}: internal error: no file written", file.job.dest.display()))),
    };
    let again = !round.last && outcome.as_ref().is_err_and(retry::restarts_object);
    if !again {
        engine.hooks.reporter.finished(&file.job, &outcome);
    }
    round.results.lock().unwrap()[idx] = Some(outcome);
}

/// Removes a failed object's temporary file and takes its bytes off the progress count.
fn discard(round: &Round, file: &FileState, tmp: Option<Arc<TempFile>>) {
    if let Some(t) = tmp.and_then(|t| Arc::try_unwrap(t).ok()) {
        t.discard();
    }
    round.engine.hooks.reporter.discarded(&file.job, file.written.swap(0, Ordering::Relaxed));
}

/// Compares what was received with what the store states, before commit.
fn check(engine: &Engine, file: &FileState, mode: VerifyMode) -> Outcome {
    if mode == VerifyMode::Off {
        return Ok(Verification::Off);
    }
    let url = file.job.source_url();
    if file.job.size == 0 {
        return Ok(Verification::Verified("empty"));
    }
    let sums: Option<Vec<PartSum>> = file.sums.lock().unwrap().iter().copied().collect();
    let segment_sums: Option<Vec<DigestValue>> = file.segments.lock().unwrap().sums.iter().copied().collect();
    let crcs = || -> Vec<PartCrc> {
        let all = sums.iter().flatten();
        all.filter_map(|s| if let PartSum::Crc(c) = s { Some(*c) } else { None }).collect()
    };
    let mismatch = |what: &str, got: String, stated: String| {
        Error::Mismatch(format!(
            "{url}: {what} of the bytes received is {got}, the store states {stated}; nothing was written"
        ))
    };
    let stated = *file.stated.lock().unwrap();
    let why = match stated {
        KnownChecksum::Stated(Stated::Full { algorithm, value }) => {
            let crcs = crcs();
            if crcs.len() != file.parts.len() {
                return Err(Error::Refused(format!("{url}: internal error: a part's checksum is missing")));
            }
            let got = integrity::combine(algorithm, &crcs);
            if got != value {
                let b64 = |v| integrity::to_base64(algorithm, v);
                return Err(mismatch(algorithm.name(), b64(got), b64(value)));
            }
            return Ok(Verification::Verified(algorithm.name()));
        }
        KnownChecksum::Stated(Stated::Composite { algorithm, parts, value }) => match file.aligned {
            Some(upload_part) => {
                let crcs = crcs();
                if crcs.len() != file.parts.len() {
                    return Err(Error::Refused(format!("{url}: internal error: a part's checksum is missing")));
                }
                // Combine the ranges of each uploaded part into that part's CRC.
                let mut per_part: Vec<Vec<PartCrc>> = Vec::new();
                for (range, crc) in file.parts.iter().zip(crcs) {
                    let i = (range.start / upload_part) as usize;
                    per_part.resize_with(per_part.len().max(i + 1), Vec::new);
                    per_part[i].push(crc);
                }
                let part_crcs: Vec<u64> = per_part.iter().map(|p| integrity::combine(algorithm, p)).collect();
                let got = integrity::composite(algorithm, &part_crcs);
                if got != value || (parts != 0 && parts as usize != part_crcs.len()) {
                    let show = |v, n| format!("{}-{n}", integrity::to_base64(algorithm, v));
                    let what = format!("composite {}", algorithm.name());
                    return Err(mismatch(&what, show(got, part_crcs.len() as u32), show(value, parts)));
                }
                return Ok(Verification::Verified(algorithm.name()));
            }
            None => match &file.job.layout_unknown {
                Some(why) => format!("its {} checksum is composite (per uploaded part), and {why}", algorithm.name()),
                None => format!(
                    "its {} checksum is composite (per uploaded part), and the parts are not of equal size",
                    algorithm.name()
                ),
            },
        },
        KnownChecksum::Stated(Stated::Sha { algorithm, parts, value }) => match segment_kind(file) {
            None => match &file.job.layout_unknown {
                Some(why) => format!("its {} checksum is composite (per uploaded part), and {why}", algorithm.name()),
                None => format!(
                    "its {} checksum is composite (per uploaded part), and the parts are not of equal size",
                    algorithm.name()
                ),
            },
            Some(_) => {
                let Some(sums) = segment_sums else {
                    return Err(Error::Refused(format!("{url}: internal error: a segment's hash is missing")));
                };
                let (got, stated) = match parts {
                    None => (sums[0].base64(), value.base64()),
                    Some(n) => {
                        let got = integrity::sha_composite(algorithm, &sums);
                        let stated = if n == 0 { value.base64() } else { format!("{}-{n}", value.base64()) };
                        let shown = if n == 0 { got.base64() } else { format!("{}-{}", got.base64(), sums.len()) };
                        (shown, stated)
                    }
                };
                if got != stated {
                    let what = if parts.is_some() {
                        format!("composite {}", algorithm.name())
                    } else {
                        algorithm.name().to_string()
                    };
                    return Err(mismatch(&what, got, stated));
                }
                return Ok(Verification::Verified(algorithm.name()));
            }
        },
        KnownChecksum::NoneStated | KnownChecksum::NotAsked => match md5_unverifiable(file) {
            Some(why) => why,
            None => {
                let Some(md5s) = segment_sums else {
                    return Err(Error::Refused(format!("{url}: internal error: a segment's MD5 is missing")));
                };
                let got = integrity::etag_of(&md5s, file.job.multipart());
                let stated = file.job.etag.clone().unwrap_or_default();
                if got.eq_ignore_ascii_case(&stated) {
                    return Ok(Verification::Verified("MD5"));
                }
                let before = engine.etag_samples.lock().unwrap().insert(file.job.key.clone(), got.clone());
                if before.as_deref() == Some(got.as_str()) {
                    // The same bytes twice: not corrupted on the way. Another
                    // download would bring them again; fail it with what to do.
                    return Err(Error::Integrity(format!(
                        "{url}: two downloads gave the same bytes, whose MD5 ETag is {got}, but the store states \
                         ETag {stated} and no checksum: the object is damaged in the store, or (more likely on an \
                         S3-compatible store) its ETags are not MD5s; nothing was written. If the store's ETags are \
                         not MD5s, use --verify off (or have the store keep CRC64NVME checksums)"
                    )));
                }
                // Corrupted on the way, or a store whose ETags are not MD5s: a
                // second download tells which.
                return Err(mismatch("the MD5 ETag", got, stated));
            }
        },
    };
    if mode == VerifyMode::Require {
        return Err(Error::Unverified(format!("{url}: cannot be verified: {why} (--verify require)")));
    }
    Ok(Verification::Unverified(why))
}

async fn run_part(round: &Round, idx: usize, p: usize, buf: &mut Vec<u8>) -> Result<(), Error> {
    let file = &round.files[idx];
    let tmp = match one_write(file, &round.engine.cfg) {
        true => None,
        false => Some(open(round, file).await?),
    };
    if file.restored.lock().unwrap().get(p).copied().unwrap_or(false) {
        return Ok(());
    }
    if file.parts[p].is_empty() {
        return Ok(());
    }
    let (mut sum, tmp) = fetch::fetch_range(round, file, p, tmp, buf).await?;
    let Some(tmp) = tmp else {
        return Err(Error::Refused(format!("{}: internal error: no file written", file.job.dest.display())));
    };
    if let Some(PartSum::Hash(v)) = sum {
        // Hashed as it came: the range is its whole segment.
        let mut st = file.segments.lock().unwrap();
        let s = st.written.segment_of(p);
        st.sums[s] = Some(v);
    }
    if round.engine.cfg.durability != Durability::Off && file.parts.len() > 1 {
        let (t, range) = (tmp.clone(), file.parts[p].clone());
        round.engine.blocking_io(move || t.start_writeback(range)).await;
    }
    if tmp.resumable() {
        // A range that is a whole segment is journalled with the segment's hash.
        let own = {
            let st = file.segments.lock().unwrap();
            let s = st.written.segment_of(p);
            (st.written.list[s].ranges.len() == 1).then_some(s)
        };
        if sum.is_none()
            && let Some(s) = own
        {
            sum = round.segment_sum(file, s).await?.map(PartSum::Hash);
        }
        let hash = sum.map_or_else(|| "-".to_string(), |s| s.to_string());
        round
            .engine
            .blocking_io({
                let tmp = tmp.clone();
                move || tmp.record(p, &hash)
            })
            .await?;
    }
    if let Some(PartSum::Crc(_)) = sum {
        file.sums.lock().unwrap()[p] = sum;
    }
    Ok(())
}

/// What a resumable temporary file must hold to be resumed: the object's
/// identity, the part layout and how parts are hashed.
fn journal_header(file: &FileState) -> String {
    let job = &file.job;
    let last = file.parts.last().map_or(0, |r| r.start);
    format!(
        "object {}\netag {}\nsize {}\nparts {} {} {}\ndigest {:?}",
        job.source_url(),
        job.etag.as_deref().unwrap_or("-"),
        job.size,
        file.parts.len(),
        file.parts.first().map_or(0, |r| r.end),
        last,
        range_kind(file),
    )
}

/// Checks the parts an earlier run recorded by reading them back from disk and
/// hashing them; those that match are not fetched again.
///
/// A part whose hash cannot be checked (an object with nothing to verify it
/// against, or `--verify off`) is fetched again: after a machine crash a part
/// the journal calls done may be zeros on disk, and only a hash tells. Stops
/// early (returning what it checked so far) when `stop` is cancelled.
fn restore(
    parts: &[Range<u64>],
    kind: Option<DigestKind>,
    tmp: &TempFile,
    recorded: Vec<Recorded>,
    stop: &tokio_util::sync::CancellationToken,
) -> Vec<(usize, Option<PartSum>)> {
    let mut buf = vec![0u8; 1 << 20];
    let mut out = Vec::new();
    let Some(kind) = kind else { return out };
    for r in recorded {
        let Some(range) = parts.get(r.part) else { continue };
        let mut d = integrity::PartDigest::new(kind);
        let mut at = range.start;
        let mut ok = true;
        while at < range.end {
            if stop.is_cancelled() {
                return out;
            }
            let n = ((range.end - at) as usize).min(buf.len());
            if tmp.read_at(&mut buf[..n], at).is_err() {
                ok = false;
                break;
            }
            d.update(&buf[..n]);
            at += n as u64;
        }
        let sum = d.finish();
        if ok && sum.to_string() == r.hash {
            out.push((r.part, Some(sum)));
        }
    }
    out
}

/// The object's temporary file, created by the first part to start. An object
/// in several parts gets a resumable file: parts an earlier run finished are
/// checked and marked restored.
async fn open(round: &Round, file: &FileState) -> Result<Arc<TempFile>, Error> {
    if let Some(t) = file.file.lock().unwrap().clone() {
        return Ok(t);
    }
    // Other parts of the same object wait on `create` only for this moment.
    let _create = file.create.lock().await;
    if let Some(t) = file.file.lock().unwrap().clone() {
        return Ok(t);
    }
    let (root, dest, size) = (file.job.root.clone(), file.job.dest.clone(), file.job.size);
    let t = if file.parts.len() > 1 {
        let header = journal_header(file);
        let hold = round.engine.cfg.journal_hold;
        let (t, recorded) =
            round.engine.blocking_io(move || TempFile::open_resumable(&root, &dest, size, &header, hold)).await?;
        if !recorded.is_empty() {
            let t = Arc::new(t);
            let restored = round
                .engine
                .blocking_io({
                    let (t, parts, kind) = (t.clone(), file.parts.clone(), range_kind(file));
                    let stop = round.engine.stop.clone();
                    move || restore(&parts, kind, &t, recorded, &stop)
                })
                .await;
            if round.engine.stop.is_cancelled() {
                return Err(Error::Interrupted(file.job.source_url()));
            }
            let mut flags = vec![false; file.parts.len()];
            let mut bytes = 0;
            for (p, sum) in restored {
                flags[p] = true;
                let len = file.parts[p].end - file.parts[p].start;
                bytes += len;
                let mut st = file.segments.lock().unwrap();
                let (s, _) = st.written.wrote(p, len);
                match sum {
                    // A whole segment restored: its hash is known.
                    Some(PartSum::Hash(v)) => st.sums[s] = Some(v),
                    sum => file.sums.lock().unwrap()[p] = sum,
                }
            }
            tracing::info!(object = %file.job.source_url(), parts = flags.iter().filter(|f| **f).count(), of = flags.len(), "resuming: parts already on disk");
            *file.restored.lock().unwrap() = flags;
            file.written.fetch_add(bytes, Ordering::Relaxed);
            round.engine.hooks.reporter.bytes(&file.job, bytes);
            *file.file.lock().unwrap() = Some(t.clone());
            return Ok(t);
        }
        t
    } else {
        let dirs = round.engine.dirs.clone();
        round.engine.blocking_io(move || TempFile::create_in(&dirs, &root, &dest, size, true)).await?
    };
    let t = Arc::new(t);
    *file.file.lock().unwrap() = Some(t.clone());
    Ok(t)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::integrity::Algorithm;

    /// A resumable file of two 4-byte parts, both written and journalled.
    fn journalled(dir: &std::path::Path) -> (TempFile, Vec<Recorded>, Vec<Range<u64>>) {
        let dest = dir.join("w.bin");
        let (t, _) = TempFile::open_resumable(dir, &dest, 8, "h", std::time::Duration::ZERO).unwrap();
        let parts = vec![0..4, 4..8];
        let kind = DigestKind::Crc(Algorithm::Crc64Nvme);
        let mut recorded = Vec::new();
        for (i, (r, bytes)) in parts.iter().zip([b"abcd", b"efgh"]).enumerate() {
            t.write_at(bytes, r.start).unwrap();
            let mut d = integrity::PartDigest::new(kind);
            d.update(bytes);
            recorded.push(Recorded { part: i, hash: d.finish().to_string() });
        }
        (t, recorded, parts)
    }

    #[test]
    fn resumed_parts_are_trusted_only_when_their_hash_checks() {
        let d = tempfile::tempdir().unwrap();
        let (t, recorded, parts) = journalled(d.path());
        let go = tokio_util::sync::CancellationToken::new();
        let kind = Some(DigestKind::Crc(Algorithm::Crc64Nvme));
        assert_eq!(restore(&parts, kind, &t, recorded.clone(), &go).len(), 2);
        // Zeros on disk where the journal says "done" (a crash before write-back).
        t.write_at(&[0; 4], 4).unwrap();
        let kept: Vec<usize> = restore(&parts, kind, &t, recorded.clone(), &go).into_iter().map(|(p, _)| p).collect();
        assert_eq!(kept, vec![0]);
        // Nothing to check them against: none is trusted, all are fetched again.
        let unhashed: Vec<Recorded> = recorded.iter().map(|r| Recorded { hash: String::new(), ..r.clone() }).collect();
        assert!(restore(&parts, None, &t, unhashed, &go).is_empty());
    }

    /// A 1 GiB object uploaded in `part` MiB parts, with what the store states.
    fn uploaded(part: u64, checksum: KnownChecksum) -> Download {
        let size = 1u64 << 30;
        let count = size.div_ceil(part << 20);
        let last_size = size - (count - 1) * (part << 20);
        Download {
            bucket: "b".into(),
            key: "k".into(),
            size,
            etag: Some(format!("\"0123456789abcdef0123456789abcdef-{count}\"")),
            version_id: None,
            last_modified: None,
            dest: "k".into(),
            root: ".".into(),
            checksum,
            etag_md5: true,
            source_parts: Some(super::super::PartLayout { part_size: part << 20, last_size, count: count as u32 }),
            layout_unknown: None,
        }
    }

    #[test]
    fn parts_hashed_in_order_are_fetched_whole_up_to_a_limit_and_crc_parts_in_ranges() {
        let cfg = EngineConfig::default();
        let sizes = |job: &Download| {
            let (ranges, aligned, segment) = plan_parts(job, &cfg);
            assert_eq!(aligned, Some(segment));
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
        let (ranges, aligned, _) = plan_parts(&uploaded(50, KnownChecksum::NoneStated), &off);
        assert!(aligned.is_none() && ranges.len() == 64);
    }

    #[test]
    fn rehashing_resumed_parts_stops_when_the_run_is_stopped() {
        let d = tempfile::tempdir().unwrap();
        let (t, recorded, parts) = journalled(d.path());
        let stop = tokio_util::sync::CancellationToken::new();
        stop.cancel();
        assert!(restore(&parts, Some(DigestKind::Crc(Algorithm::Crc64Nvme)), &t, recorded, &stop).is_empty());
    }
}
