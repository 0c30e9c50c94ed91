//! The commands: turn a [`Command`] into listings, a plan and engine runs, and
//! the outcome into an exit code.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use tokio_util::sync::CancellationToken;

mod upload;

use crate::config::{Command, Config, SyncOptions};
use crate::error::{Error, exit_code};
use crate::localfs;
use crate::output::Output;
use crate::plan::diff::{Compare, SourceEntry, diff};
use crate::plan::filter::Filters;
use crate::plan::{self, SourceObject, delete, local};
use crate::progress::{Progress, Reporter, human_bytes};
use crate::state::{self, Record, StateStore};
use crate::store::ObjectStore;
use crate::store::s3::S3Store;

use crate::transfer::{self, Download, Durability, KnownChecksum, Outcome, Verification};
use crate::url::{Location, S3Url};

/// Runs one command; returns the process exit code.
pub async fn run(cmd: Command, cfg: Config) -> u8 {
    let out = Output { json: cfg.json };
    let result = match cmd {
        Command::Ls { url } => ls(url, &cfg).await,
        Command::Cp { src, dst, filters } => copy(src, dst, &filters, None, &cfg, out).await,
        Command::Sync { src, dst, filters, opts } => copy(src, dst, &filters, Some(&opts), &cfg, out).await,
    };
    match result {
        Ok(code) => code,
        Err(e) => {
            crate::output::error_line(&format!("ERROR {e}"));
            let code = e.setup_exit_code();
            write_summary(
                &cfg,
                &serde_json::json!({"result": result_name(code), "exit_code": code, "error": e.to_string()}),
            );
            code
        }
    }
}

async fn connect(cfg: &Config, bucket: Option<&str>) -> Result<Arc<dyn ObjectStore>, Error> {
    let store = S3Store::connect(&cfg.s3, bucket).await.map_err(|e| Error::store("connecting to S3", e))?;
    Ok(Arc::new(store))
}

/// Where a single object lands: inside `dst` when it is a directory (or ends with
/// `/`), else at `dst` itself.
fn single_destination(dst: &Path, rel: &Path) -> PathBuf {
    let as_dir = dst.as_os_str().to_string_lossy().ends_with('/') || dst.is_dir();
    if as_dir { dst.join(rel) } else { dst.to_path_buf() }
}

/// `cp` and `sync`, in whichever direction the locations say.
async fn copy(
    src: Location,
    dst: Location,
    filters: &Filters,
    sync: Option<&SyncOptions>,
    cfg: &Config,
    out: Output,
) -> Result<u8, Error> {
    match (src, dst) {
        (Location::Remote(s), Location::Local(d)) => download(s, d, filters, sync, cfg, out).await,
        (Location::Local(s), Location::Remote(d)) => upload::upload(s, d, filters, sync, cfg, out).await,
        (Location::Remote(_), Location::Remote(_)) => {
            Err(Error::Usage("copying from S3 to S3 is not supported; one side must be a local path".into()))
        }
        (Location::Local(_), Location::Local(_)) => {
            Err(Error::Usage("one of SRC and DST must be an s3:// URL and the other a local path".into()))
        }
    }
}

async fn download(
    src: S3Url,
    dst: PathBuf,
    filters: &Filters,
    sync: Option<&SyncOptions>,
    cfg: &Config,
    out: Output,
) -> Result<u8, Error> {
    let store = connect(cfg, Some(&src.bucket)).await?;
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
    let locked_first = match (batch, cfg.dry_run, existed) {
        (true, false, true) => Some(Arc::new(StateStore::open(&dst).await?)),
        _ => None,
    };
    let mut expanded = plan::expand(store.as_ref(), &src).await?;
    let state = match (batch, cfg.dry_run, locked_first) {
        (_, _, Some(s)) => Some(s),
        (false, _, None) => None,
        (true, true, None) => Some(Arc::new(StateStore::read_only(&dst))),
        (true, false, None) => {
            let s = StateStore::open(&dst).await?;
            if s.waited() || !s.is_empty() {
                tracing::info!("another run wrote into the destination since it was listed: listing again");
                expanded = plan::expand(store.as_ref(), &src).await?;
            }
            Some(Arc::new(s))
        }
    };
    expanded.objects.retain(|o| filters.selects(&o.rel));
    expanded.refused.retain(|(key, _)| filters.selects(src.relative(key)));
    let allow_empty = sync.is_some_and(|s| s.allow_empty_source);
    if expanded.objects.is_empty() && expanded.refused.is_empty() && !allow_empty {
        let with = if filters.is_empty() { "" } else { " (after --include/--exclude)" };
        return Err(Error::Refused(format!("no objects match {src}{with}{}", empty_source_hint(sync))));
    }

    if batch && !cfg.dry_run {
        // Where the destination exists, ask its filesystem how it compares names
        // (the record's directory is s3load's own to probe in; a dry run
        // creates nothing, not even a probe, and so does not check this).
        let probe_dir = [dst.join(state::STATE_DIR), dst.clone()].into_iter().find(|d| d.is_dir());
        if let Some(dir) = probe_dir {
            plan::refuse_name_collisions(&mut expanded, localfs::name_folding(&dir));
        }
    }
    let dest_of = |o: &SourceObject| if batch { dst.join(&o.path) } else { single_destination(&dst, &o.path) };
    let (selected, local): (Vec<&SourceObject>, Vec<local::LocalEntry>) = match sync {
        None => (expanded.objects.iter().collect(), Vec::new()),
        Some(opts) => select_for_sync(&expanded.objects, &src, &dst, &dest_of, opts.compare, state.as_deref())?,
    };
    let skipped = expanded.objects.len() - selected.len();
    let deletes = match sync {
        Some(opts) if opts.delete && batch => {
            let source: std::collections::HashSet<&str> = expanded.objects.iter().map(|o| o.rel.as_str()).collect();
            let dest_only = local.iter().map(|l| l.rel.as_str()).filter(|r| !source.contains(r));
            let p = delete::plan(expanded.objects.iter().map(|o| o.rel.as_str()), dest_only, filters);
            for (path, like) in &p.lookalikes {
                tracing::warn!(
                    "not deleting {}: its name differs from the source's {like:?} only by case or Unicode form, and on a case-insensitive or normalising filesystem they are one file",
                    dst.join(path).display()
                );
            }
            p.delete
        }
        Some(opts) if opts.delete => {
            return Err(Error::Usage("--delete needs a prefix or wildcard source and a destination directory".into()));
        }
        _ => Vec::new(),
    };

    let jobs: Vec<Download> = selected
        .iter()
        .map(|o| Download {
            bucket: src.bucket.clone(),
            key: o.meta.key.clone(),
            size: o.meta.size,
            etag: o.meta.etag.clone(),
            version_id: o.meta.version_id.clone(),
            last_modified: o.meta.last_modified,
            dest: dest_of(o),
            root: if batch { dst.clone() } else { dest_of(o).parent().map(Path::to_path_buf).unwrap_or_default() },
            // A single object was looked up with HEAD, which states its checksum;
            // a listing does not, so the engine asks when it needs to.
            checksum: if batch { KnownChecksum::NotAsked } else { o.meta.checksum.into() },
            etag_md5: o.meta.etag_md5,
            upload: None,
            layout_unknown: None,
        })
        .collect();

    if cfg.dry_run {
        for j in &jobs {
            out.planned("cp", &j.source_url(), &j.dest.display().to_string(), j.size);
        }
        let too_many = too_many_deletes(sync, deletes.len());
        if too_many.is_none() {
            for d in &deletes {
                out.planned("rm", &dst.join(d).display().to_string(), "", 0);
            }
        }
        for (key, why) in &expanded.refused {
            crate::output::error_line(&format!("ERROR \"cp {}\": {why}", src.object_url(key)));
        }
        if let Some(msg) = &too_many {
            crate::output::error_line(&format!("ERROR {msg}"));
        }
        let ok = expanded.refused.is_empty() && too_many.is_none();
        return Ok(if ok { exit_code::SUCCESS } else { exit_code::PARTIAL_FAILURE });
    }

    let total_bytes: u64 = jobs.iter().map(|j| j.size).sum();
    localfs::check_space(&dst, total_bytes)?;
    let progress = Arc::new(Progress::start(
        cfg.progress,
        cfg.log_format == crate::LogFormat::Json,
        cfg.progress_interval,
        jobs.len() as u64,
        total_bytes,
    ));
    let unflushed = cfg.engine.durability != Durability::Fsync;
    let reporter = Arc::new(RunReporter { progress: progress.clone(), out, state: state.clone(), unflushed });
    for (key, why) in &expanded.refused {
        let e = Error::Refused(why.clone());
        reporter.out.op("cp", &src.object_url(key), &dst.display().to_string(), 0, Err(&e), crate::output::error_line);
    }
    let stop = CancellationToken::new();
    let signal = Arc::new(std::sync::atomic::AtomicU8::new(0));
    let watcher = tokio::spawn(stop_on_signal(stop.clone(), signal.clone()));
    let results = transfer::download(store, jobs, cfg.engine.clone(), reporter.clone(), stop.clone()).await;
    // The watcher stays until the end: a signal during deletions, the flush or
    // the record still stops the run and sets its exit code.
    let _watcher = tokio_util::task::AbortOnDropHandle::new(watcher);
    progress.finish();
    let mut failed = results.iter().filter(|r| r.is_err()).count() + expanded.refused.len();
    let complete = failed == 0 && !stop.is_cancelled();
    if batch {
        // Leftovers of killed runs; resumable files stay unless this run is complete.
        let removed = localfs::remove_orphans(&dst, !complete);
        if removed > 0 {
            tracing::info!(removed, "removed temporary files left by earlier runs");
        }
    }

    // --delete: only after a run in which everything was listed and copied.
    let mut deleted = 0;
    match delete_gate(deletes.len(), complete, stop.is_cancelled(), sync, "destination files") {
        Gate::Refused => failed += 1,
        Gate::HeldBack => {}
        Gate::Go => {
            for rel in &deletes {
                if stop_deleting(&stop, deleted, deletes.len()) {
                    failed += 1;
                    break;
                }
                let r = localfs::remove_file(&dst, rel);
                let path = dst.join(rel).display().to_string();
                match &r {
                    Ok(()) => {
                        deleted += 1;
                        if let Some(s) = &state {
                            s.forget(rel);
                        }
                    }
                    Err(_) => failed += 1,
                }
                out.removed(&path, r.as_ref().map(|_| ()), crate::output::error_line);
            }
        }
    }
    // Durable before success is reported (see `localfs`).
    let synced = match cfg.engine.durability {
        Durability::Syncfs if results.iter().any(Result::is_ok) || deleted > 0 => localfs::sync_filesystem(&dst),
        _ => Ok(()),
    };
    if let Some(s) = &state {
        let gone: std::collections::HashSet<&str> = deletes.iter().map(String::as_str).collect();
        let present: std::collections::HashSet<&str> = local.iter().map(|l| l.rel.as_str()).collect();
        // A sync knows what is on disk: drop records of files that are gone. A cp
        // did not look, so it keeps them (a record is checked against the file anyway).
        let keep = |p: &str| sync.is_none() || (!gone.contains(p) && (present.contains(p) || s.written_this_run(p)));
        if synced.is_err() {
            // The files of this run may not be on disk (a crash could leave them
            // the right size but zero-filled): the next run must not trust them.
            s.distrust_this_run(keep);
        } else if let Err(e) = {
            if cfg.engine.durability == Durability::Syncfs {
                // Flushed: this run's files are on disk.
                s.confirm_this_run();
            }
            s.compact(keep)
        } {
            tracing::warn!(error = %e, "could not rewrite the sync record; the next sync compares sizes and times");
        }
    }

    // Bytes actually written, so failed objects do not count as copied.
    let copied_bytes = progress.counters.bytes.load(std::sync::atomic::Ordering::Relaxed);

    let summary = Summary {
        operation: if sync.is_some() { "sync" } else { "cp" },
        source: src.to_string(),
        destination: dst.display().to_string(),
        copied: results.iter().filter(|r| r.is_ok()).count(),
        bytes: copied_bytes,
        unverified: results.iter().filter(|r| matches!(r, Ok(Verification::Unverified(_)))).count(),
        verify_off: cfg.engine.verify == transfer::VerifyMode::Off,
        skipped,
        deleted: sync.is_some_and(|s| s.delete).then_some(deleted),
        failed,
        secs: progress.elapsed().as_secs_f64(),
    };
    summary.print();
    if let Err(e) = &synced {
        crate::output::error_line(&format!("ERROR {e}: the files above may not be on disk yet"));
    }
    let code = match (synced, signal_code(&signal)) {
        (Err(_), _) => exit_code::PARTIAL_FAILURE,
        (Ok(()), Some(code)) => code,
        (Ok(()), None) if failed == 0 => exit_code::SUCCESS,
        (Ok(()), None) => exit_code::PARTIAL_FAILURE,
    };
    summary.write(cfg, code);
    Ok(code)
}

/// What a run did: a line on stderr, and with `--summary-file` a JSON object.
struct Summary {
    operation: &'static str,
    source: String,
    destination: String,
    copied: usize,
    bytes: u64,
    /// Copied objects that could not be checked against a checksum.
    unverified: usize,
    verify_off: bool,
    skipped: usize,
    /// `None` without `--delete`.
    deleted: Option<usize>,
    failed: usize,
    secs: f64,
}

impl Summary {
    fn rate(&self) -> u64 {
        if self.secs > 0.0 { (self.bytes as f64 / self.secs) as u64 } else { 0 }
    }

    fn print(&self) {
        let deleted = self.deleted.map(|d| format!(", {d} deleted")).unwrap_or_default();
        let unverified = match (self.verify_off, self.unverified) {
            (true, _) => ", not verified (--verify off)".to_string(),
            (false, 0) => String::new(),
            (false, n) => format!(", {n} of them unverified"),
        };
        let text = format!(
            "{}: {} copied ({}){unverified}, {} up to date{deleted}, {} failed, in {:.1} s ({}/s)",
            if self.failed == 0 { "done" } else { "finished with errors" },
            self.copied,
            human_bytes(self.bytes),
            self.skipped,
            self.failed,
            self.secs,
            human_bytes(self.rate()),
        );
        let mut fields = self.to_json(0);
        if let Some(o) = fields.as_object_mut() {
            o.remove("result");
            o.remove("exit_code");
        }
        crate::output::stderr_line("INFO", &text, serde_json::json!({ "summary": fields }));
    }

    /// The `--summary-file` object (documented in docs/configuration.md).
    fn to_json(&self, code: u8) -> serde_json::Value {
        serde_json::json!({
            "result": result_name(code),
            "exit_code": code,
            "operation": self.operation,
            "source": self.source,
            "destination": self.destination,
            "objects": {
                "copied": self.copied,
                "up_to_date": self.skipped,
                "deleted": self.deleted.unwrap_or(0),
                "failed": self.failed,
                "unverified": if self.verify_off { self.copied } else { self.unverified },
            },
            "bytes": self.bytes,
            "seconds": (self.secs * 1000.0).round() / 1000.0,
            "bytes_per_second": self.rate(),
        })
    }

    fn write(&self, cfg: &Config, code: u8) {
        write_summary(cfg, &self.to_json(code));
    }
}

/// The name of an exit code in the summary file.
fn result_name(code: u8) -> &'static str {
    match code {
        exit_code::SUCCESS => "success",
        exit_code::PARTIAL_FAILURE => "partial_failure",
        exit_code::USAGE => "usage_error",
        exit_code::INTERRUPTED => "interrupted",
        exit_code::TERMINATED => "terminated",
        _ => "error",
    }
}

/// Writes `--summary-file` (one JSON object and a newline), if asked for.
fn write_summary(cfg: &Config, value: &serde_json::Value) {
    if let Some(path) = &cfg.summary_file
        && let Err(e) = std::fs::write(path, format!("{value}\n"))
    {
        crate::output::error_line(&format!("ERROR writing the summary to {}: {e}", path.display()));
    }
}

/// The exit code of a run stopped by a signal, after saying so.
fn signal_code(signal: &std::sync::atomic::AtomicU8) -> Option<u8> {
    match signal.load(std::sync::atomic::Ordering::Relaxed) {
        0 => None,
        sig => {
            crate::output::stderr_line(
                "WARN",
                "stopped by a signal: run again to resume; large objects continue from their finished parts",
                serde_json::Value::Null,
            );
            Some(if sig == 2 { exit_code::INTERRUPTED } else { exit_code::TERMINATED })
        }
    }
}

/// What an empty source means for `--delete`, for the error message.
fn empty_source_hint(sync: Option<&SyncOptions>) -> &'static str {
    if sync.is_some_and(|s| s.delete) {
        "; nothing deleted (--allow-empty-source lets an empty source empty the destination)"
    } else {
        ""
    }
}

/// Whether planned deletions may go ahead.
#[derive(Debug, PartialEq, Eq)]
enum Gate {
    Go,
    /// Nothing to delete, or the run failed or was stopped (already counted).
    HeldBack,
    /// Over `--max-delete`: a failure of its own.
    Refused,
}

/// The `--delete` safety gate: deletions go ahead only after a complete run and
/// within `--max-delete`. Says on stderr why they do not.
fn delete_gate(n: usize, complete: bool, stopped: bool, sync: Option<&SyncOptions>, what: &str) -> Gate {
    if n == 0 {
        return Gate::HeldBack;
    }
    if !complete {
        let why = if stopped { "the run was stopped" } else { "some copies failed (see above)" };
        crate::output::error_line(&format!("ERROR not deleting {n} {what}: {why}"));
        return Gate::HeldBack;
    }
    match too_many_deletes(sync, n) {
        Some(msg) => {
            crate::output::error_line(&format!("ERROR {msg}"));
            Gate::Refused
        }
        None => Gate::Go,
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
fn stop_deleting(stop: &CancellationToken, done: usize, of: usize) -> bool {
    if !stop.is_cancelled() {
        return false;
    }
    crate::output::error_line(&format!(
        "ERROR stopped by a signal after {done} of {of} deletions; the rest were not deleted (run again to finish)"
    ));
    true
}

/// Cancels `stop` on SIGINT or SIGTERM and notes which (2 or 15) in `which`.
async fn stop_on_signal(stop: CancellationToken, which: Arc<std::sync::atomic::AtomicU8>) {
    use tokio::signal::unix::{SignalKind, signal};
    let (Ok(mut int), Ok(mut term)) = (signal(SignalKind::interrupt()), signal(SignalKind::terminate())) else {
        return;
    };
    let sig = tokio::select! {
        _ = int.recv() => 2,
        _ = term.recv() => 15,
    };
    tracing::warn!("signal received: stopping (in-flight parts are abandoned, finished parts kept for resume)");
    which.store(sig, std::sync::atomic::Ordering::Relaxed);
    stop.cancel();
}

/// Objects to copy under the sync rule (the rest are up to date), and the
/// destination listing they were compared with (for `--delete`).
fn select_for_sync<'a>(
    objects: &'a [SourceObject],
    src: &S3Url,
    dst: &Path,
    dest_of: &dyn Fn(&SourceObject) -> PathBuf,
    compare: Compare,
    state: Option<&StateStore>,
) -> Result<(Vec<&'a SourceObject>, Vec<local::LocalEntry>), Error> {
    let urls: Vec<String> = objects.iter().map(|o| src.object_url(&o.meta.key)).collect();
    let entries: Vec<SourceEntry<'_>> = objects
        .iter()
        .zip(&urls)
        .map(|(o, url)| SourceEntry {
            rel: &o.rel,
            size: o.meta.size,
            mtime: o.meta.last_modified,
            etag: o.meta.etag.as_deref(),
            source: url,
        })
        .collect();
    let local = if src.is_batch() {
        local::walk(dst)?
    } else if let Some(first) = objects.first() {
        // One object: compare with the one file it would land on.
        match std::fs::metadata(dest_of(first)) {
            Ok(m) if m.is_file() => {
                vec![local::LocalEntry { rel: first.rel.clone(), size: m.len(), mtime: m.modified().ok() }]
            }
            _ => Vec::new(),
        }
    } else {
        Vec::new()
    };
    let recorded = |p: &str| state.and_then(|s| s.get(p));
    let d = diff(&entries, &local, compare, &recorded);
    for &(i, why) in &d.copy {
        tracing::debug!(path = %objects[i].rel, reason = ?why, "to copy");
    }
    Ok((d.copy.iter().map(|&(i, _)| &objects[i]).collect(), local))
}

/// Bridges engine events to the progress display, the per-operation output and
/// the destination's sync record.
struct RunReporter {
    progress: Arc<Progress>,
    out: Output,
    state: Option<Arc<StateStore>>,
    /// Files are not flushed as they are committed (`--durability syncfs|off`).
    unflushed: bool,
}

impl RunReporter {
    /// Records a committed file: what it was written from, and its size and
    /// mtime now (which a later sync checks before trusting the record).
    fn record(&self, state: &StateStore, job: &Download) {
        let Ok(rel) = job.dest.strip_prefix(&job.root) else { return };
        let Some(rel) = rel.to_str() else { return };
        let Ok(meta) = std::fs::symlink_metadata(&job.dest) else { return };
        state.put(Record {
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
            boot: self.unflushed.then(|| state::boot_id().to_string()),
        });
    }
}

impl Reporter for RunReporter {
    fn bytes(&self, job: &Download, n: u64) {
        self.progress.object_bytes(&job.key, job.size, n);
    }

    fn discarded(&self, job: &Download, n: u64) {
        self.progress.object_discarded(&job.key, n);
    }

    fn object_done(&self, job: &Download, outcome: &Outcome) {
        self.progress.object_finished(&job.key, outcome.is_ok());
        if let (Ok(_), Some(state)) = (outcome, &self.state) {
            self.record(state, job);
        }
        if let Ok(Verification::Unverified(why)) = outcome {
            tracing::info!(object = %job.source_url(), "not verified: {why}");
        }
        let dst = job.dest.display().to_string();
        // Suspended: a line on a terminal would otherwise tear the bars.
        self.progress.suspend(|| {
            self.out.op("cp", &job.source_url(), &dst, job.size, outcome.as_ref(), crate::output::error_line)
        });
    }
}

async fn ls(url: Option<S3Url>, cfg: &Config) -> Result<u8, Error> {
    let store = connect(cfg, url.as_ref().map(|u| u.bucket.as_str())).await?;
    let Some(url) = url else {
        for b in store.list_buckets().await.map_err(|e| Error::store("listing buckets", e))? {
            println!("s3://{b}");
        }
        return Ok(exit_code::SUCCESS);
    };
    let delimiter = (!url.is_wildcard()).then_some("/");
    // Names are shown relative to the directory the URL points into.
    let base = url.prefix.rfind('/').map_or(0, |i| i + 1);
    let mut any = false;
    plan::list_all(store.as_ref(), &url.bucket, &url.prefix, delimiter, |page| {
        for p in &page.common_prefixes {
            any = true;
            println!("{:>19} {:>12}  {}", "", "DIR", &p[base.min(p.len())..]);
        }
        for o in page.objects.iter().filter(|o| url.matches(&o.key)) {
            any = true;
            let when = o.last_modified.map(ls_time).unwrap_or_default();
            println!("{when:>19} {:>12}  {}", o.size, &o.key[base.min(o.key.len())..]);
        }
    })
    .await
    .map_err(|e| Error::store(format!("listing {url}"), e))?;
    if !any {
        return Err(Error::Refused(format!("no objects match {url}")));
    }
    Ok(exit_code::SUCCESS)
}

/// `2024/01/31 12:00:00` (UTC), as s5cmd shows times.
fn ls_time(t: std::time::SystemTime) -> String {
    let s = humantime::format_rfc3339_seconds(t).to_string();
    s.trim_end_matches('Z').replacen('-', "/", 2).replacen('T', " ", 1)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ls_time_matches_s5cmd_layout() {
        let t = std::time::UNIX_EPOCH + std::time::Duration::from_secs(86400 * 365);
        assert_eq!(ls_time(t), "1971/01/01 00:00:00");
    }

    #[test]
    fn single_object_goes_inside_a_directory_or_to_the_named_file() {
        let dir = tempfile::tempdir().unwrap();
        assert_eq!(single_destination(dir.path(), Path::new("c.json")), dir.path().join("c.json"));
        assert_eq!(single_destination(Path::new("out/"), Path::new("c.json")), PathBuf::from("out/c.json"));
        assert_eq!(single_destination(Path::new("new.json"), Path::new("c.json")), PathBuf::from("new.json"));
    }
}
