//! Downloads: prepare each object (what verification needs that a listing
//! does not say), run passes over them, and fetch again whole, with a fresh
//! identity, the objects that changed or failed their check.

use std::sync::Arc;

use futures::StreamExt;

use super::engine::Engine;
use super::job::{GetJob, KnownChecksum, Outcome, PartLayout, Verification};
use super::object::ObjectState;
use super::settings::EngineConfig;
use super::settings::VerifyMode;
use super::{pass, retry, verify};
use crate::error::{Error, StoreErrorKind};
use crate::refusal::Refusal;
use crate::store::ObjectStore;

/// Downloads every job; returns one outcome per job, in job order. The reporter
/// hears of each object once, when its outcome is final.
///
/// Cancelling the engine's stop token (on SIGTERM/SIGINT) ends every request
/// at once; objects in flight fail as interrupted, those with a journal keep
/// their temporary file for the next run to resume, the others remove it.
pub async fn download(engine: &Arc<Engine>, jobs: Vec<GetJob>) -> Vec<Outcome> {
    let (cfg, reporter) = (&engine.cfg, &engine.hooks.reporter);
    let mut outcomes: Vec<Option<Outcome>> = (0..jobs.len()).map(|_| None).collect();
    // Each job boxed once: every list below (a million entries, for a million
    // keys) moves pointers, not 300-byte jobs, and never holds two copies.
    let mut pending: Vec<(usize, Box<GetJob>)> = jobs.into_iter().map(Box::new).enumerate().collect();
    let samples = Arc::new(verify::EtagSamples::default());
    for restart in 0..=cfg.max_restarts {
        let last = restart == cfg.max_restarts;
        let prepared: Vec<(usize, Prepared)> = futures::stream::iter(pending)
            .map(|(i, job)| {
                let engine = engine.clone();
                async move { (i, prepare(&engine, job).await) }
            })
            .buffered(cfg.max_requests.max(1))
            .collect()
            .await;
        let mut index = Vec::new();
        let mut pass_jobs = Vec::new();
        for (i, d) in prepared {
            match d.map(|job| split_role(cfg, job)) {
                Ok((job, true)) => {
                    index.push(i);
                    pass_jobs.push(job);
                }
                Ok((job, false)) => {
                    let outcome = Ok(Verification::Piece);
                    reporter.finished(&*job, &outcome);
                    outcomes[i] = Some(outcome);
                }
                Err((job, e)) => {
                    let outcome = Err(e);
                    reporter.finished(&*job, &outcome);
                    outcomes[i] = Some(outcome);
                }
            }
        }
        // The pass takes the jobs (one copy of each, not two) and gives back
        // those of the objects to fetch again.
        let results = pass::run(engine.clone(), samples.clone(), pass_jobs, last).await;
        pending = Vec::new();
        for (i, (result, job)) in index.into_iter().zip(results) {
            match (result, job) {
                (Err(e), Some(job)) if !last && retry::restarts_object(&e) => {
                    tracing::warn!(object = %job.source_url(), error = %e, "fetching the object again from the start");
                    match engine.looped.head(&job.bucket, &job.key).await {
                        // The same ETag with another size: the store's answers
                        // contradict each other (a size of 0 would otherwise
                        // commit an empty file unchecked).
                        Ok(meta) if meta.etag == job.etag && meta.size != job.size => {
                            let outcome = Err(Error::Integrity(format!(
                                "{}: the store now states a size of {} bytes for the ETag {} it stated with {} \
                                 bytes before; its answers contradict each other, nothing was written (run \
                                 again; if it persists, the store or a proxy in front of it is faulty)",
                                job.source_url(),
                                meta.size,
                                job.etag.as_deref().unwrap_or_default(),
                                job.size
                            )));
                            reporter.finished(&*job, &outcome);
                            outcomes[i] = Some(outcome);
                        }
                        // A pinned run (an atomic version) holds what it listed.
                        Ok(meta) if cfg.pinned && meta.etag != job.etag => {
                            let outcome = Err(changed_since_listed(&job, &meta));
                            reporter.finished(&*job, &outcome);
                            outcomes[i] = Some(outcome);
                        }
                        // Fetched again, a split object is fetched whole by the
                        // run that found it changed: the other shards may have
                        // finished their pieces of the version they listed,
                        // and would never write theirs of this one.
                        Ok(meta) => pending.push((i, Box::new(GetJob { piece: None, ..job.refreshed(meta) }))),
                        // The HEAD failed (or the run was stopped meanwhile:
                        // interrupted).
                        Err(he) => {
                            let outcome = Err(Error::object(&job.bucket, &job.key, None, he));
                            reporter.finished(&*job, &outcome);
                            outcomes[i] = Some(outcome);
                        }
                    }
                }
                (r, _) => outcomes[i] = Some(r),
            }
        }
        if pending.is_empty() {
            break;
        }
    }
    // No journal outlives the run that committed its file.
    engine.journals_removed().await;
    outcomes.into_iter().map(|o| o.unwrap_or_else(|| Err(Error::Internal("download did not run".into())))).collect()
}

/// What this run does of a prepared object split across shards: its piece
/// to fetch (or the whole object, for the first shard, when the object
/// cannot be split: no shard could check another's ranges of it), and
/// `false` when there is nothing for this run to do (an empty piece of an object with
/// fewer ranges than shards, or an unsplittable object that the first shard
/// fetches whole). Every shard decides alike: from the object and the flags.
fn split_role(cfg: &EngineConfig, job: Box<GetJob>) -> (Box<GetJob>, bool) {
    let Some(piece) = job.piece else { return (job, true) };
    let state = ObjectState::new(*job, cfg);
    let (splittable, idle) = (cfg.verify != VerifyMode::Off && state.splittable(), state.mine.is_empty());
    let job = Box::new(state.job);
    match (splittable, piece.index) {
        (true, _) => (job, !idle),
        (false, 0) => {
            tracing::info!(object = %job.source_url(), "fetched whole by this shard: its ranges cannot be checked one by one");
            (Box::new(GetJob { piece: None, ..*job }), true)
        }
        (false, _) => (job, false),
    }
}

/// A job ready for a pass, or the job and why it cannot be.
type Prepared = Result<Box<GetJob>, (Box<GetJob>, Error)>;

/// Asks the store what a listing does not say but verification needs: the
/// checksum of an object fetched in several parts (HEAD, which also gives its
/// current identity), and the part layout of a multipart upload (HEAD with
/// `partNumber=1`). Objects fetched in one GET learn their checksum from it.
pub(super) async fn prepare(engine: &Engine, job: Box<GetJob>) -> Prepared {
    let cfg = &engine.cfg;
    if let Err(e) = within_s3_limit(&job) {
        return Err((job, e));
    }
    if cfg.verify == VerifyMode::Off || job.size == 0 {
        return Ok(job);
    }
    let mut job = job;
    if engine.stop.is_cancelled() {
        let e = Error::Interrupted(job.source_url());
        return Err((job, e));
    }
    if job.checksum == KnownChecksum::NotAsked && (job.size > cfg.part_size || job.multipart()) {
        match engine.looped.head(&job.bucket, &job.key).await {
            Ok(meta) if cfg.pinned && meta.etag != job.etag => {
                let e = changed_since_listed(&job, &meta);
                return Err((job, e));
            }
            // A piece of an object split across shards is pinned to the
            // identity in the run's listing (every shard names the split file
            // after it): the object changed since, so the shards that wrote
            // pieces of the listed version will never complete it. This shard
            // fetches the object whole, as it is now.
            Ok(meta) if job.piece.is_some() && meta.etag != job.etag => {
                tracing::warn!(
                    object = %job.source_url(),
                    listed = job.etag.as_deref().unwrap_or("none"),
                    now = meta.etag.as_deref().unwrap_or("none"),
                    "changed since the run's listing: fetched whole by this shard, not split"
                );
                *job = GetJob { piece: None, ..job.refreshed(meta) };
                if let Err(e) = within_s3_limit(&job) {
                    return Err((job, e));
                }
            }
            Ok(meta) => {
                *job = job.refreshed(meta);
                if let Err(e) = within_s3_limit(&job) {
                    return Err((job, e));
                }
            }
            Err(e) => {
                let e = Error::object(&job.bucket, &job.key, None, e);
                return Err((job, e));
            }
        }
    }
    if job.multipart() && job.source_parts.is_none() {
        match upload_layout(engine, &job).await {
            Ok(Some(layout)) if u64::from(layout.count) > crate::store::MAX_PARTS => {
                job.layout_unknown = Some(format!(
                    "its part layout is not trusted: the store states {} parts, more than a multipart upload has \
                     in S3 ({})",
                    layout.count,
                    crate::store::MAX_PARTS
                ));
            }
            Ok(layout) => job.source_parts = layout,
            // Some stores refuse HEAD with partNumber (or lack it). The object
            // can still be fetched; what cannot be checked without its layout
            // is counted unverified, with this reason.
            Err(e) if !retry::is_transient(e.kind) && e.kind != StoreErrorKind::Stopped => {
                tracing::warn!(object = %job.source_url(), error = %e, "the store did not give the part layout (HEAD with partNumber)");
                job.layout_unknown =
                    Some(format!("the store refused to give its part layout (HEAD with partNumber: {e})"));
            }
            Err(e) => {
                let e = Error::object(&job.bucket, &job.key, None, e);
                return Err((job, e));
            }
        }
    }
    Ok(job)
}

fn within_s3_limit(job: &GetJob) -> Result<(), Error> {
    if job.size <= crate::store::MAX_OBJECT_SIZE {
        return Ok(());
    }
    Err(Refusal::ImpossibleSize { url: job.source_url(), size: job.size, done: "fetched" }.into())
}

/// An object of a pinned run ([`EngineConfig::pinned`]) that is no longer
/// the one listed.
fn changed_since_listed(job: &GetJob, now: &crate::store::ObjectMeta) -> Error {
    Refusal::ChangedSinceListed {
        url: job.source_url(),
        now: now.etag.as_deref().unwrap_or("none").to_string(),
        listed: job.etag.as_deref().unwrap_or("none").to_string(),
    }
    .into()
}

async fn upload_layout(engine: &Engine, job: &GetJob) -> Result<Option<PartLayout>, crate::error::StoreError> {
    let Some((part_size, count)) = engine.looped.part_info(&job.bucket, &job.key, 1).await? else {
        return Ok(None);
    };
    let last_size = match count {
        1 => part_size,
        n => engine.looped.part_info(&job.bucket, &job.key, n).await?.map_or(0, |(s, _)| s),
    };
    Ok(Some(PartLayout { part_size, last_size, count }))
}
