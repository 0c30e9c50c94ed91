//! `cp`/`sync` from a local path to S3: the plan's inputs (the source's walk,
//! the destination prefix's listing), [`crate::plan::upload`]'s decision acted
//! on, the engine call and the deletions from the bucket.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::Arc;

use tokio_util::sync::CancellationToken;

use super::driver::{Direction, Plan, Tally, drive, empty_source_hint, stop_deleting};
use crate::config::{Config, SyncOptions};
use crate::error::Error;
use crate::logging;
use crate::output::Output;
use crate::plan::filter::Filters;
use crate::plan::local::{self, DestEntry, LocalSource, Scope, SourceFile};
use crate::plan::{self};
use crate::refusal::Refusal;
use crate::store::{ObjectStore, PutTarget};
use crate::transfer::upload::{self, PutJob};
use crate::transfer::{Engine, Looped, Outcome};
use crate::url::S3Url;

/// Keys per DeleteObjects request (S3's maximum).
const DELETE_BATCH: usize = 1000;

/// An upload run, once planned.
struct Uploading {
    /// The source as given.
    spec: String,
    dst: S3Url,
    /// The key prefix that relative paths are appended to.
    prefix: String,
    store: Arc<Looped>,
}

pub(super) async fn upload(
    src: PathBuf,
    dst: S3Url,
    filters: &Filters,
    sync: Option<&SyncOptions>,
    cfg: &Config,
    out: Output,
    session: &super::session::Session<'_>,
) -> Result<u8, Error> {
    if dst.is_wildcard() {
        return Err(Error::Usage(format!("{dst}: an upload destination cannot contain wildcards")));
    }
    let spec = src.to_string_lossy().into_owned();
    let follow = cfg.upload.follow_symlinks;
    let spec2 = spec.clone();
    let LocalSource { files, scope, skipped } = tokio::task::spawn_blocking(move || local::walk_source(&spec2, follow))
        .await
        .unwrap_or_else(|e| std::panic::resume_unwind(e.into_panic()))?;
    // A single file to a key not ending in '/' is stored under that key; anything
    // else goes below the destination taken as a prefix.
    let single_file = matches!(scope, Scope::File(_));
    let delete = sync.is_some_and(|s| s.delete);
    let allow_empty = sync.is_some_and(|s| s.allow_empty_source);
    let files = plan::upload::source(files, filters, allow_empty, delete, single_file).map_err(|no| match no {
        plan::upload::NoPlan::Empty => {
            let hint = empty_source_hint(sync).to_string();
            Error::from(Refusal::NothingMatched { what: "files", given: spec.clone(), hint })
        }
        plan::upload::NoPlan::DeleteOneFile => Error::Usage(format!(
            "--delete with a single file ({spec}) would remove the objects beside it, which it does not stand for; \
             give the directory ('dir/' syncs its contents to the prefix, 'dir' to prefix/dir/) or drop --delete"
        )),
    })?;
    let exact_key = single_file && !dst.key.is_empty() && !dst.key.ends_with('/');
    let prefix = if exact_key || dst.key.is_empty() || dst.key.ends_with('/') {
        dst.key.clone()
    } else {
        format!("{}/", dst.key)
    };
    let key_of = |f: &SourceFile| if exact_key { prefix.clone() } else { format!("{prefix}{}", f.rel) };

    let store = session.connect(cfg, Some(&dst.bucket)).await?;
    // What the destination holds of what the source stands for, as paths
    // relative to the prefix. Nothing outside the source's scope is listed, so
    // nothing outside it can be compared or deleted.
    let remote: Vec<DestEntry> = match (sync, &scope) {
        (None, _) => Vec::new(),
        (Some(_), Scope::File(name)) => match files.first() {
            Some(f) => head_destination(store.as_ref(), &dst.bucket, &key_of(f), name).await?,
            // Filtered out, with --allow-empty-source: nothing to compare.
            None => Vec::new(),
        },
        (Some(_), _) => {
            let mut r = list_destination(store.as_ref(), &dst.bucket, &prefix, scope.list_prefix()).await?;
            r.retain(|e| scope.covers(&e.rel));
            r
        }
    };
    // A FIFO, socket or device the filters leave out is not reported, and
    // holds nothing back.
    let mut skipped = skipped;
    skipped.retain(|s| !s.not_a_file || filters.selects(&s.rel));
    for s in skipped.iter().filter(|s| s.not_a_file) {
        tracing::warn!("{}: left out", s.why);
    }
    let opts = plan::upload::Options { filters, compare: sync.map(|s| s.compare), delete, shard: cfg.shard };
    let decided = plan::upload::plan(&files, &remote, &skipped, &opts);
    let object_url = |rel: &str| format!("s3://{}/{prefix}{rel}", dst.bucket);
    let mut failures = 0;
    for &(i, n) in &decided.held {
        let s = &skipped[i];
        let (level, what) = if s.deliberate { ("WARN", "left out") } else { ("ERROR", "could not be read") };
        failures += usize::from(!s.deliberate);
        logging::stderr_line(
            level,
            &format!(
                "not deleting {n} object(s) at or below {}: the local entry they may come from {what}: {}",
                object_url(&s.rel),
                s.why
            ),
            serde_json::Value::Null,
        );
    }
    let (up_to_date, deletes) = (decided.up_to_date, decided.deletes);
    let selected: Vec<&SourceFile> = decided.upload.iter().map(|&i| &files[i]).collect();
    let jobs: Vec<PutJob> = selected
        .iter()
        .map(|f| PutJob {
            path: f.path.clone(),
            size: f.size,
            mtime: f.mtime,
            id: f.id,
            target: PutTarget {
                bucket: dst.bucket.clone(),
                key: key_of(f),
                content_type: cfg.upload.content_type.clone().or_else(|| content_type_of(&f.rel)),
                storage_class: cfg.upload.storage_class.clone(),
                checksum: cfg.upload.checksum,
            },
        })
        .collect();
    let run_deletes = deletes.len();
    let plan = Plan { jobs, up_to_date, deletes, run_deletes, refused: Vec::new(), failures };
    let run = Uploading { spec, dst, prefix, store: store.clone() };
    drive(&run, plan, store, &session.stop, sync, cfg, out).await
}

impl Direction for Uploading {
    type Job = PutJob;
    type Jobs = Vec<PutJob>;

    fn source(&self) -> String {
        self.spec.clone()
    }

    fn destination(&self) -> String {
        self.dst.to_string()
    }

    fn deleted_things(&self) -> &'static str {
        "objects"
    }

    fn shown(&self, rel: &str) -> String {
        format!("s3://{}/{}{rel}", self.dst.bucket, self.prefix)
    }

    fn verify_off(&self) -> bool {
        false
    }

    async fn transfer(&self, engine: &Arc<Engine>, jobs: Vec<PutJob>) -> Vec<Outcome> {
        upload::upload(engine, jobs).await
    }

    async fn delete(&self, deletes: &[String], stop: &CancellationToken, out: Output) -> Tally {
        let mut tally = Tally::default();
        for batch in deletes.chunks(DELETE_BATCH) {
            // A batch in flight is let finish (bounded by --request-timeout):
            // abandoning it would leave unknown which of its keys are gone.
            if stop_deleting(stop, tally.deleted, deletes.len()) {
                tally.failed += 1;
                break;
            }
            let keys: Vec<String> = batch.iter().map(|r| format!("{}{r}", self.prefix)).collect();
            let mut refused = self.delete_batch(keys.clone()).await;
            for k in &keys {
                let url = format!("s3://{}/{k}", self.dst.bucket);
                match refused.remove(k) {
                    None => {
                        tally.deleted += 1;
                        out.removed(&url, Ok(()), logging::error_line);
                    }
                    Some(reason) => {
                        tally.failed += 1;
                        let e = Error::Refused(Refusal::NotDeleted { key: k.clone(), reason });
                        out.removed(&url, Err(&e), logging::error_line);
                    }
                }
            }
        }
        tally
    }
}

impl Uploading {
    /// One DeleteObjects batch (through the run's loop, which also asks
    /// again for keys refused with a passing error: see `Looped`); returns
    /// the keys not deleted, with why.
    async fn delete_batch(&self, keys: Vec<String>) -> HashMap<String, String> {
        match self.store.delete_objects(&self.dst.bucket, &keys).await {
            Ok(refused) => refused.into_iter().map(|n| (n.key, n.reason)).collect(),
            Err(e) => keys.into_iter().map(|k| (k, e.to_string())).collect(),
        }
    }
}

/// Objects below `prefix` + `below`, as entries relative to `prefix`.
async fn list_destination(
    store: &dyn ObjectStore,
    bucket: &str,
    prefix: &str,
    below: &str,
) -> Result<Vec<DestEntry>, Error> {
    let url = S3Url::parse(&format!("s3://{bucket}/{prefix}{below}"))?;
    let expanded = plan::list_source(store, &url).await?;
    if !expanded.refused.is_empty() {
        tracing::warn!(
            count = expanded.refused.len(),
            "keys below the destination that map to no local path (e.g. 'a//b') are left alone"
        );
    }
    Ok(expanded
        .objects
        .iter()
        .map(|o| DestEntry { rel: format!("{below}{}", o.rel), size: o.size, mtime: o.last_modified })
        .collect())
}

/// The one object a single file is uploaded to, as an entry at `rel`; none when
/// it does not exist yet.
async fn head_destination(
    store: &dyn ObjectStore,
    bucket: &str,
    key: &str,
    rel: &str,
) -> Result<Vec<DestEntry>, Error> {
    match store.head(bucket, key).await {
        Ok(m) => Ok(vec![DestEntry { rel: rel.to_string(), size: m.size, mtime: m.last_modified }]),
        Err(e) if e.kind == crate::error::StoreErrorKind::NoSuchKey => Ok(Vec::new()),
        Err(e) => Err(Error::object(bucket, key, None, e)),
    }
}

/// Content-Type from the file name; `None` leaves it to the store.
fn content_type_of(rel: &str) -> Option<String> {
    mime_guess::from_path(rel).first_raw().map(str::to_string)
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
