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
use crate::plan::local::{self, LocalEntry, SourceFile};
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
    let mut files = tokio::task::spawn_blocking(move || local::walk_source(&spec2, follow))
        .await
        .unwrap_or_else(|e| std::panic::resume_unwind(e.into_panic()))?;
    files.retain(|f| filters.selects(&f.rel));
    let allow_empty = sync.is_some_and(|s| s.allow_empty_source);
    if files.is_empty() && !allow_empty {
        return Err(Error::Refused(format!("no files match {spec}{}", super::empty_source_hint(sync))));
    }
    // A single file to a key not ending in '/' is stored under that key; anything
    // else goes below the destination taken as a prefix.
    let single_file = std::fs::metadata(&src).is_ok_and(|m| m.is_file()) && !spec.contains(['*', '?']);
    let exact_key = single_file && !dst.key.is_empty() && !dst.key.ends_with('/');
    let prefix = if exact_key || dst.key.is_empty() || dst.key.ends_with('/') {
        dst.key.clone()
    } else {
        format!("{}/", dst.key)
    };
    let key_of = |f: &SourceFile| if exact_key { prefix.clone() } else { format!("{prefix}{}", f.rel) };
    if sync.is_some_and(|s| s.delete) && exact_key {
        return Err(Error::Usage("--delete needs a directory source and an s3://bucket/prefix/ destination".into()));
    }

    let store = connect(cfg, Some(&dst.bucket)).await?;
    // What the destination holds, as paths relative to the prefix.
    let remote: Vec<LocalEntry> = match sync {
        None => Vec::new(),
        Some(_) => list_destination(store.as_ref(), &dst.bucket, &prefix, exact_key).await?,
    };
    let selected: Vec<&SourceFile> = match sync {
        None => files.iter().collect(),
        Some(opts) => {
            let entries: Vec<SourceEntry<'_>> = files
                .iter()
                .map(|f| SourceEntry {
                    rel: if exact_key { "" } else { &f.rel },
                    size: f.size,
                    mtime: f.mtime,
                    etag: None,
                    source: "",
                })
                .collect();
            let d = diff(&entries, &remote, opts.compare, &no_records);
            d.copy.iter().map(|&(i, _)| &files[i]).collect()
        }
    };
    let skipped = files.len() - selected.len();
    let deletes: Vec<String> = match sync {
        Some(opts) if opts.delete => {
            let local: std::collections::HashSet<&str> = files.iter().map(|f| f.rel.as_str()).collect();
            remote
                .iter()
                .filter(|r| !local.contains(r.rel.as_str()) && filters.selects(&r.rel))
                .map(|r| r.rel.clone())
                .collect()
        }
        _ => Vec::new(),
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
        return Ok(if too_many.is_none() { exit_code::SUCCESS } else { exit_code::PARTIAL_FAILURE });
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
    watcher.abort();
    progress.finish();
    let mut failed = results.iter().filter(|r| r.is_err()).count();
    let complete = failed == 0 && !stop.is_cancelled();

    let mut deleted = 0;
    match delete_gate(deletes.len(), complete, stop.is_cancelled(), sync, "objects") {
        Gate::Refused => failed += 1,
        Gate::HeldBack => {}
        Gate::Go => {
            for batch in deletes.chunks(DELETE_BATCH) {
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
        skipped,
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

/// Objects below `prefix` (or the one `key`), as entries relative to it.
async fn list_destination(
    store: &dyn ObjectStore,
    bucket: &str,
    prefix: &str,
    exact_key: bool,
) -> Result<Vec<LocalEntry>, Error> {
    let url = S3Url::parse(&format!("s3://{bucket}/{prefix}"))?;
    let expanded = match plan::expand(store, &url).await {
        Ok(e) => e,
        // Nothing there yet.
        Err(Error::Store { source, .. }) if exact_key && source.kind == crate::error::StoreErrorKind::NoSuchKey => {
            return Ok(Vec::new());
        }
        Err(e) => return Err(e),
    };
    if !expanded.refused.is_empty() {
        tracing::warn!(
            count = expanded.refused.len(),
            "keys below the destination that map to no local path (e.g. 'a//b') are left alone"
        );
    }
    Ok(expanded
        .objects
        .into_iter()
        .map(|o| LocalEntry {
            rel: if exact_key { String::new() } else { o.rel },
            size: o.meta.size,
            mtime: o.meta.last_modified,
        })
        .collect())
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
