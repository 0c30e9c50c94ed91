//! `cp`/`sync` from S3 to a local path: the plan's inputs (the record under its
//! lock, the listing, the destination's walk), [`crate::plan::download`]'s
//! decision acted on, the engine call, the local deletions and the last steps
//! (flush, sync record).

use std::collections::HashSet;
use std::path::PathBuf;
use std::sync::Arc;

use tokio_util::sync::CancellationToken;

use super::driver::{Direction, Plan, Tally, drive, empty_source_hint, stop_deleting};
use super::jobs::{DownloadJobs, destination};
use crate::config::{Config, SyncOptions};
use crate::error::Error;
use crate::localfs;
use crate::logging;
use crate::model::{self, CheckModel};
use crate::output::Output;
use crate::plan::filter::Filters;
use crate::plan::{self, local};
use crate::refusal::Refusal;
use crate::state::{self, Record, StateStore};
use crate::transfer::{self, CommitHook, Durability, Engine, GetJob, KnownChecksum, Outcome};
use crate::url::S3Url;

/// How old an unlocked temporary file must be before a sharded run takes it
/// for a leftover: another shard's file is unlocked only between its creation
/// and its `flock`, microseconds apart; a minute leaves a wide margin.
const SHARDED_ORPHAN_AGE: std::time::Duration = std::time::Duration::from_secs(60);

/// A download run, once planned.
struct Downloading {
    src: S3Url,
    dst: PathBuf,
    /// A prefix or wildcard (many objects into a directory), not one object.
    batch: bool,
    /// The destination's sync record (batch runs).
    state: Option<Arc<StateStore>>,
    sync: bool,
    /// One of several shards writing into the destination (`--shard`).
    sharded: bool,
    /// Weight indexes of the source (`*.index.json`), checked after the run.
    indexes: Vec<PathBuf>,
    /// Sharded: the paths this run writes a piece of (objects split across
    /// the shards), whose shared files another shard may still need.
    pieces: HashSet<String>,
    durability: Durability,
    verify_off: bool,
}

pub(super) async fn download(
    src: S3Url,
    dst: PathBuf,
    filters: &Filters,
    sync: Option<&SyncOptions>,
    cfg: &Config,
    out: Output,
    session: &super::session::Session<'_>,
) -> Result<u8, Error> {
    // The shards of one run apply one listing (see `plan::run_listing`).
    let shared = match (cfg.shard, src.is_batch() && !cfg.dry_run) {
        (Some(shard), true) => {
            let id = cfg.run_id.as_deref().ok_or_else(|| {
                Error::Usage(
                    "--shard needs --run-id ID, the same for every pod of one Job and different for each Job (for \
                     example the Job's uid: metadata.labels['batch.kubernetes.io/controller-uid'] from the \
                     downward API), so that all shards apply one listing of the source"
                        .into(),
                )
            })?;
            Some((shard, id))
        }
        _ => None,
    };
    let store = session.connect(cfg, Some(&src.bucket)).await?;
    let listing = match shared {
        Some((shard, id)) => {
            let flags = share_flags(cfg, filters);
            let shared = plan::run_listing::shared(store.as_ref(), &src, &dst, shard, id, &flags);
            Some(session.stop.unless_stopped("waiting for the run's listing", shared).await??)
        }
        None => None,
    };
    download_from(store, &session.stop, listing, src, dst, filters, sync, cfg, out).await
}

/// The flags that decide which shard fetches what (the shares, the split of
/// large objects and its pieces' ranges): recorded with a run's listing, and
/// every shard of the run must have been given the same. `--verify auto` and
/// `require` decide alike; `off` does not split.
fn share_flags(cfg: &Config, filters: &Filters) -> String {
    // In MiB, as the flag takes it (it is given in whole MiB).
    let mut flags = format!("--part-size {}", cfg.engine.part_size >> 20);
    if !cfg.engine.split {
        flags.push_str(" --no-split");
    }
    // Without verification, objects are not split across the shards (a
    // split object is checked by the shard that completes it).
    if cfg.engine.verify == crate::transfer::VerifyMode::Off {
        flags.push_str(" --verify off");
    }
    for f in filters.given() {
        flags.push(' ');
        flags.push_str(f);
    }
    flags
}

/// The record as opened, after telling the user what it said.
fn warn_if_set_aside(state: StateStore) -> StateStore {
    if let Some(notice) = state.set_aside_notice() {
        crate::logging::stderr_line("WARN", &notice, serde_json::Value::Null);
    }
    state
}

/// [`download`] from a store already connected; with `listing`, from that
/// listing of the source rather than a new one (an atomic build lists once,
/// names the version after that listing and fills the version from it, all
/// under the versions' lock).
#[allow(clippy::too_many_arguments)]
pub(super) async fn download_from(
    store: Arc<crate::transfer::Looped>,
    stop: &super::session::Stop,
    listing: Option<plan::SourceListing>,
    src: S3Url,
    dst: PathBuf,
    filters: &Filters,
    sync: Option<&SyncOptions>,
    cfg: &Config,
    out: Output,
) -> Result<u8, Error> {
    let batch = src.is_batch();
    // What s3load recorded in the destination (batch runs only: a single file's
    // parent directory is not s3load's to write a record into), under the
    // destination's lock. A run must list the source while it holds the lock:
    // a listing made before another run wrote into the directory is older than
    // what that run wrote, and its --delete would remove files the other run
    // just fetched from a newer listing. Where the destination already exists,
    // the lock comes first; where it does not, the source is listed first (so a
    // bad URL creates nothing) and again if another run got there in between.
    let existed = dst.is_dir();
    // What a signal interrupts while another run holds the destination.
    let waiting = format!("waiting for another run's lock on {}", dst.display());
    let locked_first = match (batch, cfg.dry_run, existed) {
        (true, false, true) => {
            Some(Arc::new(warn_if_set_aside(stop.unless_stopped(&waiting, StateStore::open(&dst, cfg.shard)).await??)))
        }
        _ => None,
    };
    let given = listing.is_some();
    let mut listed = match listing {
        Some(l) => l,
        None => plan::list_source(store.as_ref(), &src).await?,
    };
    let state = match (batch, cfg.dry_run, locked_first) {
        (_, _, Some(s)) => Some(s),
        (false, _, None) => None,
        (true, true, None) => Some(Arc::new(StateStore::read_only(&dst))),
        (true, false, None) => {
            let s = warn_if_set_aside(stop.unless_stopped(&waiting, StateStore::open(&dst, cfg.shard)).await??);
            if !given && (s.waited() || !s.is_empty()) {
                tracing::info!("another run wrote into the destination since it was listed: listing again");
                listed = plan::list_source(store.as_ref(), &src).await?;
            }
            Some(Arc::new(s))
        }
    };
    let folding = if batch && !cfg.dry_run {
        // Where the destination exists, ask its filesystem how it compares names
        // (the record's directory is s3load's own to probe in; a dry run
        // creates nothing, not even a probe, and so does not check this).
        let probe_dir = [dst.join(state::STATE_DIR), dst.clone()].into_iter().find(|d| d.is_dir());
        probe_dir.map(|dir| localfs::name_folding(&dir))
    } else {
        None
    };
    // Objects larger than a fair share are split across the shards (into a
    // directory only: a single file's destination is the user's path).
    let mut split_min = (batch && cfg.engine.split).then_some(cfg.engine.part_size.saturating_mul(2));
    if let (Some(_), Some(why)) = (split_min.filter(|_| cfg.shard.is_some()), localfs::local_only_locks(&dst)) {
        // Every shard mounts the same volume alike, so every shard decides alike.
        tracing::warn!("objects larger than a fair share are taken whole, not split across the shards: {why}");
        split_min = None;
    }
    let opts = plan::download::Options {
        batch,
        filters,
        sync: sync.map(|s| plan::download::SyncRule {
            compare: s.compare,
            delete: s.delete,
            allow_empty: s.allow_empty_source,
        }),
        folding,
        shard: cfg.shard,
        split_min,
        // Sharded, the shards an index names may be another pod's, still coming.
        check_indexes: cfg.engine.check_model == CheckModel::Auto && cfg.shard.is_none(),
    };
    let dest_of = |rel: &str| destination(&dst, batch, rel);
    // The destination as the plan compares it: a batch run's files, walked
    // in order as the comparison goes; the one file a single object lands on.
    let mut walk = None;
    let mut single = None;
    let local: &mut dyn Iterator<Item = local::DestEntry> = match (sync, batch) {
        (None, _) => &mut std::iter::empty(),
        (Some(_), true) => walk.insert(local::Walk::new(&dst)?),
        (Some(_), false) => {
            let rel = listed.objects.iter().next().map(|o| o.rel.to_string());
            let file = rel.and_then(|rel| match std::fs::metadata(dest_of(&rel)) {
                Ok(m) if m.is_file() => Some(local::DestEntry { rel, size: m.len(), mtime: m.modified().ok() }),
                _ => None,
            });
            single.insert(file.into_iter())
        }
    };
    let recorded = |p: &str| state.as_deref().and_then(|s| s.get(p));
    let mut seen = |rel: &str| {
        if let Some(s) = &state {
            s.saw(rel);
        }
    };
    let decided = plan::download::plan(listed, &src, local, &recorded, &mut seen, &opts)
        .map_err(|no| no.into_error(&src, empty_source_hint(sync)))?;
    if let Some(w) = walk {
        w.finish()?;
    }
    let plan::download::DownloadPlan { objects, fetch, up_to_date, deletes, run_deletes, lookalikes, refused, indexes } =
        decided;
    for (path, like) in &lookalikes {
        tracing::warn!(
            "not deleting {}: its name differs from the source's {like:?} only by case or Unicode form, and on a case-insensitive or normalising filesystem they are one file",
            dst.join(path).display()
        );
    }
    // A refused key fails every shard of a run, and so holds back every
    // shard's deletions: all of them apply the one listing that has it.
    let refused =
        refused.into_iter().map(|r| Refusal::Key { object: src.object_url(&r.key), problem: r.problem }).collect();
    let indexes: Vec<PathBuf> = indexes.into_iter().map(|i| dest_of(objects.rel(i))).collect();
    // Jobs are made from the listing as the engine takes them (a million of
    // them at once would be half a gigabyte): the listing, packed, is what
    // the transfer holds.
    let pieces = fetch.iter().filter(|(_, p)| p.is_some()).map(|&(i, _)| objects.rel(i).to_string()).collect();
    let jobs = DownloadJobs {
        bucket: src.bucket.as_str().into(),
        root: dst.as_path().into(),
        dst: dst.clone(),
        batch,
        pieces: fetch.iter().filter_map(|&(i, piece)| Some((i as u32, piece?))).collect(),
        order: fetch.into_iter().map(|(i, _)| i as u32).collect(),
        objects,
    };
    let plan = Plan { jobs, up_to_date, deletes, run_deletes, refused, failures: 0 };
    let run = Downloading {
        src,
        dst,
        batch,
        state,
        sync: sync.is_some(),
        sharded: cfg.shard.is_some(),
        indexes,
        pieces,
        durability: cfg.engine.durability,
        verify_off: cfg.engine.verify == transfer::VerifyMode::Off,
    };
    drive(&run, plan, store, stop, sync, cfg, out).await
}

impl Direction for Downloading {
    type Job = GetJob;
    type Jobs = DownloadJobs;

    fn source(&self) -> String {
        self.src.to_string()
    }

    fn destination(&self) -> String {
        self.dst.display().to_string()
    }

    fn deleted_things(&self) -> &'static str {
        "destination files"
    }

    fn writes_inline(&self) -> bool {
        // With one CPU there is one async thread: a write the kernel makes
        // wait for the disk would hold every connection.
        let cpus = std::thread::available_parallelism().map_or(1, std::num::NonZero::get);
        cpus >= 2 && localfs::writes_are_local(&self.dst)
    }

    fn shown(&self, rel: &str) -> String {
        self.dst.join(rel).display().to_string()
    }

    fn verify_off(&self) -> bool {
        self.verify_off
    }

    fn ready(&self, total_bytes: u64) -> Result<(), Error> {
        localfs::check_space(&self.dst, total_bytes)
    }

    fn commit_hook(&self) -> Option<Arc<dyn CommitHook>> {
        let state = self.state.clone()?;
        Some(Arc::new(RecordCommits { state, unflushed: self.durability != Durability::Fsync }))
    }

    async fn transfer(&self, engine: &Arc<Engine>, jobs: Vec<GetJob>) -> Vec<Outcome> {
        transfer::download(engine, jobs).await
    }

    async fn check(&self, stop: &CancellationToken) -> (usize, usize) {
        if self.indexes.is_empty() {
            return (0, 0);
        }
        // Off the async threads: an index and its shards are files of the
        // destination, read as they stream (see `model`).
        let (indexes, root) = (self.indexes.clone(), self.dst.clone());
        let checking = tokio::task::spawn_blocking(move || {
            let (mut failed, mut passed) = (0, 0);
            for index in indexes.iter().filter(|p| std::fs::symlink_metadata(p).is_ok()) {
                let problems = model::check_index(&root, index);
                for p in &problems {
                    logging::error_line(&format!("ERROR {p}"));
                }
                failed += usize::from(!problems.is_empty());
                passed += usize::from(problems.is_empty());
            }
            (failed, passed)
        });
        tokio::select! {
            done = checking => done.unwrap_or_else(|e| std::panic::resume_unwind(e.into_panic())),
            () = stop.cancelled() => {
                logging::error_line("ERROR the model checks were stopped: the run was stopped");
                (1, 0)
            }
        }
    }

    fn transferred(&self, complete: bool) {
        if self.batch {
            // Leftovers of killed runs; resumable files stay unless this run is
            // complete (and, sharded, always: another shard may resume them).
            // Sharded, other runs create temporary files here at this moment:
            // only old ones are leftovers.
            let min_age = if self.sharded { SHARDED_ORPHAN_AGE } else { std::time::Duration::ZERO };
            let mut removed = localfs::remove_orphans(&self.dst, !complete || self.sharded, min_age);
            if self.sharded && complete {
                removed += localfs::remove_unneeded_splits(&self.dst, &self.pieces);
            }
            if removed > 0 {
                tracing::info!(removed, "removed temporary files left by earlier runs");
            }
        }
    }

    async fn delete(&self, deletes: &[String], stop: &CancellationToken, out: Output) -> Tally {
        let mut tally = Tally::default();
        for rel in deletes {
            if stop_deleting(stop, tally.deleted, deletes.len()) {
                tally.failed += 1;
                break;
            }
            let r = localfs::remove_file(&self.dst, rel);
            match &r {
                Ok(()) => {
                    tally.deleted += 1;
                    if let Some(s) = &self.state {
                        s.forget(rel);
                    }
                }
                Err(_) => tally.failed += 1,
            }
            out.removed(&self.shown(rel), r.as_ref().map(|_| ()), logging::error_line);
        }
        tally
    }

    fn finish(&self, wrote: bool, deleted: usize, deletes: &[String]) -> Result<(), Error> {
        // Durable before success is reported (see `localfs`).
        let synced = match self.durability {
            Durability::Syncfs if wrote || deleted > 0 => localfs::sync_filesystem(&self.dst),
            _ => Ok(()),
        };
        let Some(s) = &self.state else { return synced };
        let gone: HashSet<&str> = deletes.iter().map(String::as_str).collect();
        // A sync knows what is on disk: drop records of files that are gone. A cp
        // did not look, so it keeps them (a record is checked against the file anyway).
        let keep = |p: &str, here: bool| !self.sync || (!gone.contains(p) && here);
        if synced.is_err() {
            // The files of this run may not be on disk (a crash could leave them
            // the right size but zero-filled): the next run must not trust them.
            s.distrust_this_run(keep);
        } else if let Err(e) = {
            if self.durability == Durability::Syncfs {
                // Flushed: this run's files are on disk.
                s.confirm_this_run();
            }
            s.compact(keep)
        } {
            tracing::warn!(error = %e, "could not rewrite the sync record; the next sync compares sizes and times");
        }
        synced
    }
}

/// Writes each committed file into the destination's sync record.
struct RecordCommits {
    state: Arc<StateStore>,
    /// Files are not flushed as they are committed (`--durability syncfs|off`).
    unflushed: bool,
}

impl CommitHook for RecordCommits {
    /// Records what the file was written from, and its size and mtime now
    /// (which a later sync checks before trusting the record).
    fn committed(&self, job: &GetJob) {
        let Ok(rel) = job.dest.strip_prefix(&job.root) else { return };
        let Some(rel) = rel.to_str() else { return };
        let Ok(meta) = std::fs::symlink_metadata(&job.dest) else { return };
        self.state.put(Record {
            path: rel.to_string(),
            removed: false,
            size: meta.len(),
            mtime_ns: meta.modified().map(state::to_ns).unwrap_or_default(),
            source: job.source_url(),
            etag: job.etag.clone(),
            version_id: job.version_id.clone(),
            checksum: match job.checksum {
                KnownChecksum::Stated(s) => Some(state::checksum_text(s)),
                _ => None,
            },
            last_modified_ns: job.last_modified.map(state::to_ns),
            // With `fsync` the file and its directory entry are on disk already;
            // otherwise not until the end-of-run flush confirms it (if ever).
            boot: self.unflushed.then(|| state::boot_id().into()),
        });
    }
}
