//! The run driver: what every `cp` and `sync` does around its direction's work.
//!
//! A direction (download or upload, see [`Direction`]) plans: what to copy,
//! what is up to date, what `--delete` would remove. The driver then owns the
//! run: the dry-run listing, progress, one [`Engine`] for the transfers (on
//! the command's stop and requests, see `session.rs`), the `--delete` gate, the direction's last
//! steps (durability, the sync record), the summary and the exit code. A
//! direction supplies only its plan, its engine call and its delete executor.

use std::sync::Arc;
use std::sync::atomic::Ordering;

use tokio_util::sync::CancellationToken;

use super::session::Stop;
use super::summary::{self, ModelChecks, Summary};
use crate::config::{Config, SyncOptions};
use crate::error::{Error, exit_code};
use crate::logging;
use crate::output::Output;
use crate::progress::Progress;
use crate::refusal::Refusal;
use crate::transfer::{CommitHook, Engine, Hooks, Item, Looped, Outcome, Reporter, Verification};

/// Objects handed to the engine at a time: their jobs are made from the
/// plan as each batch starts (a million jobs are not held at once), and each
/// batch's outcomes are counted, then dropped. Between batches the workers
/// wait for the last objects of one before the next starts: at most a part's
/// time per batch.
const BATCH: usize = 4096;

/// A direction's jobs, made one at a time when asked.
pub(super) trait Jobs {
    type Job: Item + Send + Sync + 'static;
    fn len(&self) -> usize;
    /// The `i`-th job, in the order they are to run.
    fn job(&self, i: usize) -> Self::Job;
    /// The bytes the `i`-th job is expected to move.
    fn expected_bytes(&self, i: usize) -> u64 {
        self.job(i).expected_bytes()
    }
}

impl<J: Item + Clone + Send + Sync + 'static> Jobs for Vec<J> {
    type Job = J;
    fn len(&self) -> usize {
        self.as_slice().len()
    }
    fn job(&self, i: usize) -> J {
        self[i].clone()
    }
    fn expected_bytes(&self, i: usize) -> u64 {
        self[i].expected_bytes()
    }
}

/// What a direction plans before anything is transferred.
pub(super) struct Plan<L> {
    pub jobs: L,
    /// Source entries already up to date at the destination.
    pub up_to_date: usize,
    /// Paths (relative to the destination) that `--delete` would remove.
    pub deletes: Vec<String>,
    /// What the whole run would delete, every shard's share together
    /// (`deletes.len()` when unsharded): what `--max-delete` bounds.
    pub run_deletes: usize,
    /// Source entries refused while planning ([`Refusal::Key`]): each one fails
    /// and holds back deletions.
    pub refused: Vec<Refusal>,
    /// Failures already reported while planning that do not hold back other
    /// deletions (a source entry that could not be read kept what it may
    /// stand for).
    pub failures: usize,
}

/// Deletions done and failed.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub(super) struct Tally {
    pub deleted: usize,
    pub failed: usize,
}

/// How the objects of a run ended, counted as their outcomes come.
#[derive(Debug, Default, Clone, Copy)]
struct Counted {
    /// Copied (verified or not), pieces excepted.
    copied: usize,
    /// Pieces written of objects split across shards.
    pieces: usize,
    unverified: usize,
    failed: usize,
}

impl Counted {
    fn add(&mut self, outcome: &Outcome) {
        match outcome {
            Ok(Verification::Piece) => self.pieces += 1,
            Ok(v) => {
                self.copied += 1;
                self.unverified += usize::from(matches!(v, Verification::Unverified(_)));
            }
            Err(_) => self.failed += 1,
        }
    }
}

/// One direction of a copy, as the driver uses it.
pub(super) trait Direction {
    type Job: Item + Send + Sync + 'static;
    type Jobs: Jobs<Job = Self::Job>;

    /// The source and destination as the summary names them.
    fn source(&self) -> String;
    fn destination(&self) -> String;
    /// What deletions remove, in messages ("destination files", "objects").
    fn deleted_things(&self) -> &'static str;
    /// How a planned deletion is shown (a path or a URL).
    fn shown(&self, rel: &str) -> String;
    /// Whether `--verify off` applies (uploads are always checked by the store).
    fn verify_off(&self) -> bool;
    /// Whether writes into the destination may run on the async threads
    /// (see `EngineConfig::inline_writes`).
    fn writes_inline(&self) -> bool {
        false
    }
    /// Checks before the first byte moves (room on the destination).
    fn ready(&self, _total_bytes: u64) -> Result<(), Error> {
        Ok(())
    }
    /// Who hears of each file committed, besides the reporter.
    fn commit_hook(&self) -> Option<Arc<dyn CommitHook>> {
        None
    }
    /// Runs the engine over the jobs (a batch of them); one outcome per job, in order.
    async fn transfer(&self, engine: &Arc<Engine>, jobs: Vec<Self::Job>) -> Vec<Outcome>;
    /// Checks after the transfers (model indexes); returns how many failed,
    /// each reported, and how many passed. A failure holds back deletions.
    /// Ends early, failed, when `stop` is cancelled.
    async fn check(&self, _stop: &CancellationToken) -> (usize, usize) {
        (0, 0)
    }
    /// After the transfers; `complete` when every object was copied.
    fn transferred(&self, _complete: bool) {}
    /// Deletes the planned paths (the gate has let them through); stops when
    /// `stop` is cancelled, saying so.
    async fn delete(&self, deletes: &[String], stop: &CancellationToken, out: Output) -> Tally;
    /// The last steps (durability, the record), told whether any object was
    /// written. An error means the files reported may not be on disk.
    fn finish(&self, _wrote: bool, _deleted: usize, _deletes: &[String]) -> Result<(), Error> {
        Ok(())
    }
}

/// Runs a planned copy to its exit code.
pub(super) async fn drive<D: Direction>(
    d: &D,
    plan: Plan<D::Jobs>,
    store: Arc<Looped>,
    stopped: &Stop,
    sync: Option<&SyncOptions>,
    cfg: &Config,
    out: Output,
) -> Result<u8, Error> {
    if cfg.dry_run {
        return Ok(dry_run(d, &plan, sync, out));
    }
    let Plan { jobs, up_to_date, deletes, run_deletes, refused, failures } = plan;
    let n = jobs.len();
    let total_bytes: u64 = (0..n).map(|i| jobs.expected_bytes(i)).sum();
    d.ready(total_bytes)?;
    let progress = Arc::new(Progress::start(
        cfg.progress,
        cfg.log_format == crate::logging::LogFormat::Json,
        cfg.progress_interval,
        n as u64,
        total_bytes,
    ));
    let reporter = Arc::new(RunReporter { progress: progress.clone(), out });
    let refused_count = refused.len();
    for refusal in refused {
        let source = refusal.object().unwrap_or_default().to_string();
        let e = Error::Refused(refusal);
        out.op("cp", &source, &d.destination(), 0, Err(&e), logging::error_line);
    }
    // The command's stop, watched since it started: a signal while it
    // listed or planned leaves every object not started.
    let stop = stopped.token().clone();
    let hooks = Hooks { reporter, committed: d.commit_hook() };
    let mut engine_cfg = cfg.engine.clone();
    engine_cfg.inline_writes = d.writes_inline();
    let engine = Engine::new(store, engine_cfg, hooks);
    let mut ended = Counted::default();
    let mut start = 0;
    while start < n {
        if stop.is_cancelled() {
            // Never started: failed, named in one line rather than a line each
            // (a million of them, stopped early).
            ended.failed += n - start;
            logging::error_line(&format!("ERROR {} objects not started: the run was stopped", n - start));
            break;
        }
        let end = (start + BATCH).min(n);
        let batch: Vec<D::Job> = (start..end).map(|i| jobs.job(i)).collect();
        for outcome in d.transfer(&engine, batch).await {
            ended.add(&outcome);
        }
        start = end;
    }
    drop(jobs);
    // A signal during deletions, the flush or the record still stops the
    // run and sets its exit code.
    progress.finish();
    let (check_failures, indexes) = d.check(&stop).await;
    let model = ModelChecks { headers: engine.headers_checked(), indexes };
    let transfer_failures = ended.failed + refused_count + check_failures;
    let complete = transfer_failures == 0 && !stop.is_cancelled();
    d.transferred(complete);
    let mut failed = transfer_failures + failures;

    // --delete: only after a run in which everything was listed and copied.
    let mut tally = Tally::default();
    match delete_gate((deletes.len(), run_deletes), complete, stop.is_cancelled(), sync, d.deleted_things()) {
        DeleteGate::OverLimit => failed += 1,
        DeleteGate::Withheld => {}
        DeleteGate::Proceed => tally = d.delete(&deletes, &stop, out).await,
    }
    failed += tally.failed;
    let finished = d.finish(ended.copied + ended.pieces > 0, tally.deleted, &deletes);

    let summary = Summary {
        operation: if sync.is_some() { "sync" } else { "cp" },
        source: d.source(),
        destination: d.destination(),
        copied: ended.copied,
        pieces: ended.pieces,
        // Bytes actually moved, so failed objects do not count as copied.
        bytes: progress.counters.bytes.load(Ordering::Relaxed),
        unverified: ended.unverified,
        verify_off: d.verify_off(),
        skipped: up_to_date,
        deleted: sync.is_some_and(|s| s.delete).then_some(tally.deleted),
        failed,
        model,
        secs: progress.elapsed().as_secs_f64(),
    };
    summary.print();
    if let Err(e) = &finished {
        logging::error_line(&format!("ERROR {e}: the files above may not be on disk yet"));
    }
    let code = match (finished, stopped.report(true)) {
        (Err(_), _) => exit_code::PARTIAL_FAILURE,
        (Ok(()), Some(code)) => code,
        (Ok(()), None) if failed == 0 => exit_code::SUCCESS,
        (Ok(()), None) => exit_code::PARTIAL_FAILURE,
    };
    summary.write(cfg, code);
    Ok(code)
}

/// `--dry-run`: what would be copied and deleted, on stdout; refusals on stderr.
fn dry_run<D: Direction>(d: &D, plan: &Plan<D::Jobs>, sync: Option<&SyncOptions>, out: Output) -> u8 {
    let mut bytes = 0;
    for i in 0..plan.jobs.len() {
        let j = plan.jobs.job(i);
        out.planned("cp", &j.source(), &j.destination(), j.size());
        bytes += j.size();
    }
    let too_many = too_many_deletes(sync, plan.run_deletes.max(plan.deletes.len()));
    if too_many.is_none() {
        for rel in &plan.deletes {
            out.planned("rm", &d.shown(rel), "", 0);
        }
    }
    for refusal in &plan.refused {
        match refusal {
            Refusal::Key { object, problem } => logging::error_line(&format!("ERROR \"cp {object}\": {problem}")),
            other => logging::error_line(&format!("ERROR {other}")),
        }
    }
    if let Some(msg) = &too_many {
        logging::error_line(&format!("ERROR {msg}"));
    }
    let deletes = too_many.is_none().then_some(plan.deletes.len());
    let text = summary::dry_run_text(plan.jobs.len(), bytes, plan.up_to_date, deletes);
    logging::stderr_line("INFO", &text, serde_json::json!({ "dry_run": true }));
    let ok = plan.refused.is_empty() && too_many.is_none() && plan.failures == 0;
    if ok { exit_code::SUCCESS } else { exit_code::PARTIAL_FAILURE }
}

/// Whether planned deletions may go ahead.
#[derive(Debug, PartialEq, Eq)]
enum DeleteGate {
    Proceed,
    /// Nothing to delete, or the run failed or was stopped (already counted).
    Withheld,
    /// Over `--max-delete`: a failure of its own.
    OverLimit,
}

/// The `--delete` safety gate: deletions go ahead only after a complete run and
/// within `--max-delete`. Says on stderr why they do not.
/// `n` is (this run's deletions, the whole run's: every shard's together).
fn delete_gate(
    (n, run): (usize, usize),
    complete: bool,
    stopped: bool,
    sync: Option<&SyncOptions>,
    what: &str,
) -> DeleteGate {
    let over = too_many_deletes(sync, run.max(n));
    if n == 0 && over.is_none() {
        return DeleteGate::Withheld;
    }
    if !complete {
        let why = if stopped { "the run was stopped" } else { "some copies failed (see above)" };
        if n > 0 {
            logging::error_line(&format!("ERROR not deleting {n} {what}: {why}"));
        }
        return DeleteGate::Withheld;
    }
    match over {
        Some(msg) => {
            logging::error_line(&format!("ERROR {msg}"));
            DeleteGate::OverLimit
        }
        None => DeleteGate::Proceed,
    }
}

/// The `--max-delete` refusal, when `n` deletions would exceed it.
fn too_many_deletes(sync: Option<&SyncOptions>, n: usize) -> Option<String> {
    let max = sync.and_then(|s| s.max_delete)?;
    (n as u64 > max).then(|| {
        format!("{n} destination files would be deleted, more than --max-delete {max}: nothing deleted (check the source, or raise --max-delete)")
    })
}

/// Whether deletions must stop (a signal arrived); says how far they got.
pub(super) fn stop_deleting(stop: &CancellationToken, done: usize, of: usize) -> bool {
    if !stop.is_cancelled() {
        return false;
    }
    logging::error_line(&format!(
        "ERROR stopped by a signal after {done} of {of} deletions; the rest were not deleted (run again to finish)"
    ));
    true
}

/// What an empty source means for `--delete`, for the error message.
pub(super) fn empty_source_hint(sync: Option<&SyncOptions>) -> &'static str {
    if sync.is_some_and(|s| s.delete) {
        "; nothing deleted (--allow-empty-source lets an empty source empty the destination)"
    } else {
        ""
    }
}

/// Bridges engine events to the progress display and the per-object lines.
struct RunReporter {
    progress: Arc<Progress>,
    out: Output,
}

impl Reporter for RunReporter {
    fn bytes(&self, item: &dyn Item, n: u64) {
        // A piece of an object split across shards: its bar is the piece.
        self.progress.object_bytes(item.key(), item.expected_bytes(), n);
    }

    fn discarded(&self, item: &dyn Item, n: u64) {
        self.progress.object_discarded(item.key(), n);
    }

    fn finished(&self, item: &dyn Item, outcome: &Outcome) {
        self.progress.object_finished(item.key(), outcome.is_ok());
        if let Ok(Verification::Unverified(why)) = outcome {
            tracing::info!(object = %item.source(), "not verified: {why}");
        }
        let (src, dst) = (item.source(), item.destination());
        if let Ok(Verification::Piece) = outcome {
            // Not in place yet: the shard that finishes the object prints it.
            tracing::info!(object = %src, "split across shards: this shard's piece is written (or it has none); the shard that finishes last verifies the object and moves it into place");
            return;
        }
        // Suspended: a line on a terminal would otherwise tear the bars.
        self.progress.suspend(|| self.out.op("cp", &src, &dst, item.size(), outcome.as_ref(), logging::error_line));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sync_with_max(max: Option<u64>) -> SyncOptions {
        SyncOptions { max_delete: max, ..SyncOptions::default() }
    }

    #[test]
    fn deletions_wait_for_a_complete_run_and_stay_within_max_delete() {
        let s = sync_with_max(Some(2));
        assert_eq!(delete_gate((0, 0), true, false, Some(&s), "x"), DeleteGate::Withheld);
        assert_eq!(delete_gate((2, 2), false, false, Some(&s), "x"), DeleteGate::Withheld);
        assert_eq!(delete_gate((2, 2), false, true, Some(&s), "x"), DeleteGate::Withheld);
        assert_eq!(delete_gate((3, 3), true, false, Some(&s), "x"), DeleteGate::OverLimit);
        assert_eq!(delete_gate((2, 2), true, false, Some(&s), "x"), DeleteGate::Proceed);
        assert_eq!(delete_gate((9, 9), true, false, Some(&sync_with_max(None)), "x"), DeleteGate::Proceed);
        // A shard's share within the cap, the whole run's over it: refused,
        // and a shard with no share of its own still fails.
        assert_eq!(delete_gate((2, 6), true, false, Some(&s), "x"), DeleteGate::OverLimit);
        assert_eq!(delete_gate((0, 6), true, false, Some(&s), "x"), DeleteGate::OverLimit);
        assert_eq!(delete_gate((0, 2), true, false, Some(&s), "x"), DeleteGate::Withheld);
    }
}
