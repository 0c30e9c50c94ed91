//! `cp`/`sync` from a local path to S3.

use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::Ordering;

use tokio_util::sync::CancellationToken;

use super::{Gate, Summary, connect, delete_gate, stop_on_signal, too_many_deletes};
use crate::config::{Config, SyncOptions};
use crate::error::{Error, exit_code};
use crate::output::Output;
use crate::plan::diff::{SourceEntry, diff, no_records};
use crate::plan::filter::Filters;
use crate::plan::local::{self, LocalEntry, LocalSource, Scope, Skipped, SourceFile};
use crate::plan::{self};
use crate::progress::Progress;
use crate::store::{ObjectStore, PutTarget};
use crate::transfer::Verification;
use crate::transfer::upload::{self, Upload, UploadReporter};
use crate::url::S3Url;

/// Keys per DeleteObjects request (S3's maximum).
const DELETE_BATCH: usize = 1000;

pub(super) async fn upload(
    src: PathBuf,
    dst: S3Url,
    filters: &Filters,
    sync: Option<&SyncOptions>,
    cfg: &Config,
    out: Output,
) -> Result<u8, Error> {
    if dst.is_wildcard() {
        return Err(Error::Usage(format!("{dst}: an upload destination cannot contain wildcards")));
    }
    let spec = src.to_string_lossy().into_owned();
    let follow = cfg.upload.follow_symlinks;
    let spec2 = spec.clone();
    let LocalSource { mut files, scope, skipped } =
        tokio::task::spawn_blocking(move || local::walk_source(&spec2, follow))
            .await
            .unwrap_or_else(|e| std::panic::resume_unwind(e.into_panic()))?;
    files.retain(|f| filters.selects(&f.rel));
    let allow_empty = sync.is_some_and(|s| s.allow_empty_source);
    if files.is_empty() && !allow_empty {
        return Err(Error::Refused(format!("no files match {spec}{}", super::empty_source_hint(sync))));
    }
    // A single file to a key not ending in '/' is stored under that key; anything
    // else goes below the destination taken as a prefix.
    let single_file = matches!(scope, Scope::File(_));
    let exact_key = single_file && !dst.key.is_empty() && !dst.key.ends_with('/');
    let prefix = if exact_key || dst.key.is_empty() || dst.key.ends_with('/') {
        dst.key.clone()
    } else {
        format!("{}/", dst.key)
    };
    let key_of = |f: &SourceFile| if exact_key { prefix.clone() } else { format!("{prefix}{}", f.rel) };
    if sync.is_some_and(|s| s.delete) && single_file {
        return Err(Error::Usage(format!(
            "--delete with a single file ({spec}) would remove the objects beside it, which it does not stand for; \
             give the directory ('dir/' syncs its contents to the prefix, 'dir' to prefix/dir/) or drop --delete"
        )));
    }

    let store = connect(cfg, Some(&dst.bucket)).await?;
    // What the destination holds of what the source stands for, as paths
    // relative to the prefix. Nothing outside the source's scope is listed, so
    // nothing outside it can be compared or deleted.
    let remote: Vec<LocalEntry> = match (sync, &scope) {
        (None, _) => Vec::new(),
        (Some(_), Scope::File(name)) => head_destination(store.as_ref(), &dst.bucket, &key_of(&files[0]), name).await?,
        (Some(_), _) => {
            let mut r = list_destination(store.as_ref(), &dst.bucket, &prefix, scope.list_prefix()).await?;
            r.retain(|e| scope.covers(&e.rel));
            r
        }
    };
    let selected: Vec<&SourceFile> = match sync {
        None => files.iter().collect(),
        Some(opts) => {
            let entries: Vec<SourceEntry<'_>> = files
                .iter()
                .map(|f| SourceEntry { rel: &f.rel, size: f.size, mtime: f.mtime, etag: None, source: "" })
                .collect();
            let d = diff(&entries, &remote, opts.compare, &no_records);
            d.copy.iter().map(|&(i, _)| &files[i]).collect()
        }
    };
    let skipped_count = files.len() - selected.len();
    let object_url = |rel: &str| format!("s3://{}/{prefix}{rel}", dst.bucket);
    let (deletes, held_back_failures) = match sync {
        Some(opts) if opts.delete => {
            let local: std::collections::HashSet<&str> = files.iter().map(|f| f.rel.as_str()).collect();
            let candidates =
                remote.iter().filter(|r| !local.contains(r.rel.as_str()) && filters.selects(&r.rel)).map(|r| &r.rel);
            hold_back_shadowed(candidates, &skipped, &object_url)
        }
        _ => (Vec::new(), 0),
    };

    let jobs: Vec<Upload> = selected
        .iter()
        .map(|f| Upload {
            path: f.path.clone(),
            size: f.size,
            mtime: f.mtime,
            target: PutTarget {
                bucket: dst.bucket.clone(),
                key: key_of(f),
                content_type: cfg.upload.content_type.clone().or_else(|| content_type_of(&f.rel)),
                storage_class: cfg.upload.storage_class.clone(),
                checksum: cfg.upload.checksum,
            },
        })
        .collect();
    let object_url = |rel: &str| format!("s3://{}/{prefix}{rel}", dst.bucket);

    if cfg.dry_run {
        for j in &jobs {
            out.planned("cp", &j.path.display().to_string(), &j.dest_url(), j.size);
        }
        let too_many = too_many_deletes(sync, deletes.len());
        match &too_many {
            None => deletes.iter().for_each(|d| out.planned("rm", &object_url(d), "", 0)),
            Some(msg) => crate::output::error_line(msg),
        }
        let ok = too_many.is_none() && held_back_failures == 0;
        return Ok(if ok { exit_code::SUCCESS } else { exit_code::PARTIAL_FAILURE });
    }

    let total_bytes: u64 = jobs.iter().map(|j| j.size).sum();
    let progress = Arc::new(Progress::start(
        cfg.progress,
        cfg.log_format == crate::LogFormat::Json,
        cfg.progress_interval,
        jobs.len() as u64,
        total_bytes,
    ));
    let reporter = Arc::new(Reporter { progress: progress.clone(), out, checksum: cfg.upload.checksum.name() });
    let stop = CancellationToken::new();
    let signal = Arc::new(std::sync::atomic::AtomicU8::new(0));
    let watcher = tokio::spawn(stop_on_signal(stop.clone(), signal.clone()));
    let results = upload::upload(store.clone(), jobs, cfg.engine.clone(), reporter, stop.clone()).await;
    // Kept until the end: a signal during deletions still stops the run.
    let _watcher = tokio_util::task::AbortOnDropHandle::new(watcher);
    progress.finish();
    let mut failed = results.iter().filter(|r| r.is_err()).count() + held_back_failures;
    let complete = results.iter().all(|r| r.is_ok()) && !stop.is_cancelled();

    let mut deleted = 0;
    match delete_gate(deletes.len(), complete, stop.is_cancelled(), sync, "objects") {
        Gate::Refused => failed += 1,
        Gate::HeldBack => {}
        Gate::Go => {
            for batch in deletes.chunks(DELETE_BATCH) {
                // A batch in flight is let finish (bounded by --request-timeout):
                // abandoning it would leave unknown which of its keys are gone.
                if super::stop_deleting(&stop, deleted, deletes.len()) {
                    failed += 1;
                    break;
                }
                let keys: Vec<String> = batch.iter().map(|r| format!("{prefix}{r}")).collect();
                let refused = match store.delete_objects(&dst.bucket, &keys).await {
                    Ok(refused) => refused,
                    Err(e) => keys.iter().map(|k| (k.clone(), e.to_string())).collect(),
                };
                let refused: std::collections::HashMap<String, String> = refused.into_iter().collect();
                for k in &keys {
                    let url = format!("s3://{}/{k}", dst.bucket);
                    match refused.get(k) {
                        None => {
                            deleted += 1;
                            out.removed(&url, Ok(()), crate::output::error_line);
                        }
                        Some(why) => {
                            failed += 1;
                            out.removed(&url, Err(&Error::Refused(why.clone())), crate::output::error_line);
                        }
                    }
                }
            }
        }
    }

    let summary = Summary {
        operation: if sync.is_some() { "sync" } else { "cp" },
        source: spec.clone(),
        destination: dst.to_string(),
        copied: results.iter().filter(|r| r.is_ok()).count(),
        bytes: progress.counters.bytes.load(Ordering::Relaxed),
        unverified: 0,
        verify_off: false,
        skipped: skipped_count,
        deleted: sync.is_some_and(|s| s.delete).then_some(deleted),
        failed,
        secs: progress.elapsed().as_secs_f64(),
    };
    summary.print();
    let code = match super::signal_code(&signal) {
        Some(code) => code,
        None if failed == 0 => exit_code::SUCCESS,
        None => exit_code::PARTIAL_FAILURE,
    };
    summary.write(cfg, code);
    Ok(code)
}

/// Objects below `prefix` + `below`, as entries relative to `prefix`.
async fn list_destination(
    store: &dyn ObjectStore,
    bucket: &str,
    prefix: &str,
    below: &str,
) -> Result<Vec<LocalEntry>, Error> {
    let url = S3Url::parse(&format!("s3://{bucket}/{prefix}{below}"))?;
    let expanded = plan::expand(store, &url).await?;
    if !expanded.refused.is_empty() {
        tracing::warn!(
            count = expanded.refused.len(),
            "keys below the destination that map to no local path (e.g. 'a//b') are left alone"
        );
    }
    Ok(expanded
        .objects
        .into_iter()
        .map(|o| LocalEntry { rel: format!("{below}{}", o.rel), size: o.meta.size, mtime: o.meta.last_modified })
        .collect())
}

/// The one object a single file is uploaded to, as an entry at `rel`; none when
/// it does not exist yet.
async fn head_destination(
    store: &dyn ObjectStore,
    bucket: &str,
    key: &str,
    rel: &str,
) -> Result<Vec<LocalEntry>, Error> {
    match store.head(bucket, key).await {
        Ok(m) => Ok(vec![LocalEntry { rel: rel.to_string(), size: m.size, mtime: m.last_modified }]),
        Err(e) if e.kind == crate::error::StoreErrorKind::NoSuchKey => Ok(Vec::new()),
        Err(e) => Err(Error::store(format!("s3://{bucket}/{key}"), e)),
    }
}

/// Splits deletion candidates into those that may go and those a skipped local
/// entry may stand for (a broken or left-out symlink, a name that is not UTF-8):
/// those are kept, with a line saying why. Returns the deletions and how many
/// skipped entries that could not be read held any back (each a failure: the
/// source is not what it should be, and the bucket keeps what it cannot vouch for).
fn hold_back_shadowed<'a>(
    candidates: impl Iterator<Item = &'a String>,
    skipped: &[Skipped],
    object_url: &dyn Fn(&str) -> String,
) -> (Vec<String>, usize) {
    let mut held: Vec<usize> = vec![0; skipped.len()];
    let mut deletes = Vec::new();
    for rel in candidates {
        match skipped.iter().position(|s| s.shadows(rel)) {
            Some(i) => held[i] += 1,
            None => deletes.push(rel.clone()),
        }
    }
    let mut failures = 0;
    for (s, n) in skipped.iter().zip(held).filter(|(_, n)| *n > 0) {
        let (level, what) = if s.deliberate { ("WARN", "left out") } else { ("ERROR", "could not be read") };
        failures += usize::from(!s.deliberate);
        crate::output::stderr_line(
            level,
            &format!(
                "not deleting {n} object(s) at or below {}: the local entry they may come from {what}: {}",
                object_url(&s.rel),
                s.why
            ),
            serde_json::Value::Null,
        );
    }
    (deletes, failures)
}

/// Content-Type from the file name; `None` leaves it to the store.
fn content_type_of(rel: &str) -> Option<String> {
    mime_guess::from_path(rel).first_raw().map(str::to_string)
}

struct Reporter {
    progress: Arc<Progress>,
    out: Output,
    checksum: &'static str,
}

impl UploadReporter for Reporter {
    fn bytes(&self, job: &Upload, n: u64) {
        self.progress.object_bytes(&job.target.key, job.size, n);
    }

    fn done(&self, job: &Upload, result: &Result<(), Error>) {
        self.progress.object_finished(&job.target.key, result.is_ok());
        let v = Verification::Verified(self.checksum);
        let r = result.as_ref().map(|()| &v);
        let (src, dst) = (job.path.display().to_string(), job.dest_url());
        self.progress.suspend(|| self.out.op("cp", &src, &dst, job.size, r, crate::output::error_line));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn content_types_are_guessed_from_names() {
        assert_eq!(content_type_of("config.json").as_deref(), Some("application/json"));
        assert_eq!(content_type_of("a/README.md").as_deref(), Some("text/markdown"));
        assert_eq!(content_type_of("model-00001.safetensors"), None);
    }
}
