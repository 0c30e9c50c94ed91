//! One pass of the engine: the parts of a set of objects over a pool of
//! workers, each object committed (or discarded) when its last part is back.
//!
//! Workers ask the [`Scheduler`] which part to take; each part is fetched
//! (`fetch.rs`) into the object's temporary file ([`resume::open`]); the part
//! that finishes an object has it verified ([`mod@verify`]) and renamed into
//! place, or discards it. Objects that changed or failed their check are
//! fetched again in the next pass (see [`super::download()`]).

use std::pin::pin;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};

use tokio::sync::Notify;

use super::engine::Engine;
use super::job::{GetJob, Outcome, Verification};
use super::object::ObjectState;
use super::scheduler::{Finished, Pick, Scheduler};
use super::settings::Durability;
use super::verify::{self, EtagSamples, verify};
use super::{fetch, resume, retry};
use crate::error::Error;
use crate::integrity::PartSum;
use crate::localfs::{IoBuf, TempFile};
use crate::model::CheckModel;

/// One object's place in a pass: its job until a worker first takes one of
/// its parts, then its state while parts are in flight, then nothing once its
/// outcome is known. Only the objects in flight (at most `max_open_files`)
/// hold an [`ObjectState`], so a pass over a million keys does not hold a
/// million of them.
enum Slot {
    /// Boxed: the vector of slots then shrinks to a pointer each, and a job
    /// taken or finished gives its bytes back.
    Waiting(Box<GetJob>),
    Active(Arc<ObjectState>),
    Finished,
}

/// An object's outcome, and its job when it is to be fetched again (boxed:
/// almost every object has none, and a million outcomes are kept at once).
type Settled = (Outcome, Option<Box<GetJob>>);

/// State of one pass, shared by its workers.
struct Pass {
    engine: Arc<Engine>,
    files: Vec<Mutex<Slot>>,
    /// Across passes: see [`EtagSamples`].
    samples: Arc<EtagSamples>,
    sched: Mutex<Scheduler<Error>>,
    notify: Notify,
    /// Each object's outcome, with its job when the object is to be fetched
    /// again from the start (see [`retry::restarts_object`]).
    results: Mutex<Vec<Option<Settled>>>,
    /// The last pass reports every outcome; earlier passes keep quiet about
    /// objects that will be fetched again.
    last: bool,
    /// Write buffers between parts: a worker takes one with its part and
    /// gives it back with its permit, so there are as many as requests were
    /// ever in flight at once, not one per worker (twice the ceiling of 128
    /// when sized to the link).
    bufs: Mutex<Vec<IoBuf>>,
}

/// Downloads `jobs`; returns one outcome per job, in order, with the job
/// given back when the object is to be fetched again from the start. Jobs
/// come boxed: each becomes its slot's waiting job as it is, where a vector of
/// jobs would be held whole beside the boxes made of it.
#[allow(clippy::vec_box)]
pub(super) async fn run(
    engine: Arc<Engine>,
    samples: Arc<EtagSamples>,
    jobs: Vec<Box<GetJob>>,
    last: bool,
) -> Vec<Settled> {
    let n = jobs.len();
    let cfg = &engine.cfg;
    let sched =
        Scheduler::new(jobs.iter().map(|j| ObjectState::part_count(j, cfg)), cfg.part_concurrency, cfg.max_open_files)
            .soft_cap(cfg.soft_part_cap);
    let files: Vec<Mutex<Slot>> = jobs.into_iter().map(|job| Mutex::new(Slot::Waiting(job))).collect();
    let per_object = if cfg.soft_part_cap { cfg.max_requests } else { cfg.part_concurrency };
    // Twice the requests (and twice the parts the objects can have in
    // flight): a worker whose part is written waits for the part's hash (to
    // journal it) and, when the part finished its object, for the commit
    // (the object's hash, a rename) without a permit or a place among its
    // object's parts, and another takes them meanwhile. Workers cost a task
    // each; buffers go with permits.
    let workers = cfg.max_requests.max(1).min(n.max(1).saturating_mul(per_object.max(1))).saturating_mul(2);
    let pass = Arc::new(Pass {
        engine: engine.clone(),
        files,
        samples,
        sched: Mutex::new(sched),
        notify: Notify::new(),
        results: Mutex::new((0..n).map(|_| None).collect()),
        last,
        bufs: Mutex::new(Vec::new()),
    });
    let handles: Vec<_> = (0..workers).map(|_| tokio::spawn(worker(pass.clone()))).collect();
    for h in handles {
        if let Err(e) = h.await {
            std::panic::resume_unwind(e.into_panic());
        }
    }
    // Stopped early: objects that never finished keep a resumable file, or lose
    // their temporary one.
    for slot in &pass.files {
        let Slot::Active(file) = &*slot.lock().unwrap() else { continue };
        file.cancel_segments(engine.started_hasher());
        if let Some(t) = file.take_file().and_then(|t| Arc::try_unwrap(t).ok())
            && !t.resumable()
        {
            t.discard();
        }
    }
    let results = std::mem::take(&mut *pass.results.lock().unwrap());
    results
        .into_iter()
        .map(|r| r.unwrap_or_else(|| (Err(Error::Internal("download did not run".into())), None)))
        .collect()
}

/// A worker takes a request permit before it takes a part, and keeps it
/// while the part is fetched (retries included): the requests in flight are
/// then the parts in flight, and a part is never taken to wait for a permit
/// (its object opened, its place in the hashing order held) while the
/// limiter holds the count below the workers'. The permit is given back
/// before the part is journalled (which may wait for its segment's hash,
/// computed behind the writes) and before the object is committed: neither
/// is a request.
async fn worker(pass: Arc<Pass>) {
    loop {
        let mut notified = pin!(pass.notify.notified());
        notified.as_mut().enable();
        let engine = &pass.engine;
        let permit = tokio::select! {
            p = engine.limiter().acquire() => p,
            () = engine.stop.cancelled() => return,
        };
        if engine.stop.is_cancelled() {
            return;
        }
        let pick = pass.sched.lock().unwrap().pick();
        match pick {
            Pick::Done => return,
            Pick::Wait => {
                drop(permit);
                tokio::select! {
                    () = notified => {}
                    () = engine.stop.cancelled() => return,
                }
            }
            Pick::Part(idx, p) => {
                let size = engine.cfg.buffer_size;
                let mut buf = pass.bufs.lock().unwrap().pop().unwrap_or_else(|| IoBuf::new(size));
                let fetched = run_part(&pass, idx, p, &mut buf).await;
                pass.bufs.lock().unwrap().push(buf);
                drop(permit);
                // Its object may take another part while this one waits for its hash.
                pass.sched.lock().unwrap().part_fetched(idx);
                pass.notify.notify_waiters();
                let result = match fetched {
                    Ok(Some(written)) => record_part(&pass, idx, written).await,
                    Ok(None) => Ok(()),
                    Err(e) => Err(e),
                };
                finish_part(&pass, idx, result).await;
                pass.notify.notify_waiters();
            }
        }
    }
}

/// A range written, to be journalled once its hash is known.
struct Written {
    p: usize,
    sum: Option<PartSum>,
    tmp: Arc<TempFile>,
}

/// Fetches range `p` of object `idx` (`None` where there is nothing to
/// fetch: another shard's range, one an earlier run left on disk, an empty
/// one).
async fn run_part(pass: &Pass, idx: usize, p: usize, buf: &mut IoBuf) -> Result<Option<Written>, Error> {
    let (engine, object) = (&pass.engine, &*pass.object(idx)?);
    if !object.mine.contains(&p) {
        // Another shard's piece of a split object.
        return Ok(None);
    }
    let tmp = match object.one_write(&engine.cfg) {
        true => None,
        false => Some(resume::open(engine, object).await?),
    };
    if object.restored(p) || object.parts.get(p).is_empty() {
        return Ok(None);
    }
    let (sum, tmp) = fetch::fetch_range(engine, object, p, tmp, buf).await?;
    let Some(tmp) = tmp else {
        return Err(Error::Internal(format!("{}: no file written", object.job.dest.display())));
    };
    if engine.cfg.durability != Durability::Off && object.parts.len() > 1 {
        let (t, range) = (tmp.clone(), object.parts.get(p));
        engine.blocking_io(move || t.start_writeback(range)).await;
    }
    Ok(Some(Written { p, sum, tmp }))
}

/// Journals a written range with its hash (a range that is a whole segment
/// waits for the segment's, hashed behind the writes) and keeps the hash for
/// verification.
async fn record_part(pass: &Pass, idx: usize, written: Written) -> Result<(), Error> {
    let (engine, object) = (&pass.engine, &*pass.object(idx)?);
    let Written { p, mut sum, tmp } = written;
    if tmp.resumable() {
        if sum.is_none()
            && let Some(s) = object.own_segment(p)
        {
            sum = object.segment_sum(s).await?.map(PartSum::Hash);
        }
        let hash = sum.map_or_else(|| "-".to_string(), |s| s.to_string());
        engine.blocking_io(move || tmp.record(p, &hash)).await?;
    }
    if let Some(sum) = sum {
        object.range_hashed(p, sum);
    }
    Ok(())
}

/// Records a finished part; the part that finishes an object commits or discards it.
async fn finish_part(pass: &Pass, idx: usize, result: Result<(), Error>) {
    let error = match pass.sched.lock().unwrap().part_done(idx, result) {
        Finished::No => return,
        Finished::Yes(r) => r.err(),
    };
    let object = match pass.object(idx) {
        Ok(f) => f,
        Err(e) => {
            pass.results.lock().unwrap()[idx] = Some((Err(e), None));
            return;
        }
    };
    let object = &*object;
    let tmp = object.take_file();
    let engine = &pass.engine;
    let error = match error {
        None => object.segment_sums().await.err(),
        e => e,
    };
    if error.is_some() {
        object.cancel_segments(engine.started_hasher());
    }
    let outcome = match (error, tmp) {
        // Interrupted: a resumable file stays for the next run.
        (Some(e @ Error::Interrupted(_)), Some(t)) if t.resumable() => Err(e),
        (Some(e), tmp) => Err(e).inspect_err(|_| discard(pass, object, tmp)),
        (None, Some(t)) if object.job.piece.is_some() => match resume::piece_done(engine, object, &t).await {
            Ok(true) => commit(pass, object, t).await,
            // Another shard finishes the object.
            Ok(false) => Ok(Verification::Piece),
            Err(e) => Err(e).inspect_err(|_| discard(pass, object, Some(t))),
        },
        (None, Some(t)) => commit(pass, object, t).await,
        (None, None) => Err(Error::Internal(format!("{}: no file written", object.job.dest.display()))),
    };
    let again = !pass.last && outcome.as_ref().is_err_and(retry::restarts_object);
    if !again {
        engine.hooks.reporter.finished(&object.job, &outcome);
    }
    let job = again.then(|| Box::new(object.job.clone()));
    pass.results.lock().unwrap()[idx] = Some((outcome, job));
    *pass.files[idx].lock().unwrap() = Slot::Finished;
}

/// Verifies a finished object and moves it into place, or discards it.
async fn commit(pass: &Pass, object: &ObjectState, t: Arc<TempFile>) -> Outcome {
    let engine = &pass.engine;
    let verified = verify(object, engine.cfg.verify, &pass.samples, verify::NOTHING_WRITTEN);
    let verification = match check_structure(engine, object, &t, verified).await {
        Ok(v) => v,
        Err(e) => return Err(e).inspect_err(|_| discard(pass, object, Some(t))),
    };
    let Ok(t) = Arc::try_unwrap(t) else {
        return Err(Error::Internal(format!("{}: file still in use at commit", object.job.dest.display())));
    };
    let (mtime, fsync) = (object.job.last_modified, engine.cfg.durability == Durability::Fsync);
    // Setting the mtime, checking the file's identity and renaming it: for
    // a file written in one buffer, where writes run on the async threads,
    // there too (see `Engine::write_io`). A flush to disk never runs there,
    // nor a larger file's commit, whose rename may free a large file it
    // replaces (which this project's VM trims at once) or start its writeback.
    let finish = move || t.commit(mtime, fsync);
    let journal = if fsync || !object.one_write(&engine.cfg) {
        engine.blocking_io(finish).await
    } else {
        engine.write_io(finish).await
    }?;
    if let Some(j) = journal {
        engine.remove_journal(j);
    }
    if let Some(hook) = &engine.hooks.committed {
        hook.committed(&object.job);
    }
    Ok(verification)
}

impl Pass {
    /// Object `idx`'s state, built when a worker first needs it.
    fn object(&self, idx: usize) -> Result<Arc<ObjectState>, Error> {
        let mut slot = self.files[idx].lock().unwrap();
        if let Slot::Waiting(_) = &*slot
            && let Slot::Waiting(job) = std::mem::replace(&mut *slot, Slot::Finished)
        {
            *slot = Slot::Active(Arc::new(ObjectState::new(*job, &self.engine.cfg)));
        }
        match &*slot {
            Slot::Active(file) => Ok(file.clone()),
            _ => Err(Error::Internal(format!("object {idx} of the pass was taken after it finished"))),
        }
    }
}

/// After verification: a `*.safetensors` file's header must agree with its
/// length (`--check-model`, see [`crate::model`]); only the header is read.
async fn check_structure(engine: &Engine, object: &ObjectState, tmp: &Arc<TempFile>, verified: Outcome) -> Outcome {
    let verification = verified?;
    let name = object.job.dest.file_name().and_then(|n| n.to_str()).unwrap_or_default();
    if engine.cfg.check_model == CheckModel::Off || !crate::model::is_safetensors(name) {
        return Ok(verification);
    }
    let (t, len) = (tmp.clone(), object.job.size);
    let checked = engine.blocking_io(move || t.reader().map(|f| crate::model::check_safetensors(&f, len))).await?;
    match checked {
        Ok(_) => {
            engine.headers_checked.fetch_add(1, Ordering::Relaxed);
            Ok(verification)
        }
        Err(why) => Err(Error::Integrity(format!(
            "{}: not a valid safetensors file: {why}; nothing was written (the object in the store is damaged: \
             re-upload it, or use --check-model off to take it as it is)",
            object.job.source_url()
        ))),
    }
}

/// Removes a failed object's temporary file and takes its bytes off the progress count.
fn discard(pass: &Pass, object: &ObjectState, tmp: Option<Arc<TempFile>>) {
    if let Some(t) = tmp.and_then(|t| Arc::try_unwrap(t).ok()) {
        t.discard();
    }
    pass.engine.hooks.reporter.discarded(&object.job, object.written.swap(0, Ordering::Relaxed));
}
