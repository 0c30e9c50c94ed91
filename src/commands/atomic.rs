//! `sync --atomic`: whole versions beside DEST, switched by one `rename(2)`.
//!
//! DEST (say `/models/my-model`) is a symlink to `.my-model.versions/<id>` in
//! the same directory. A run lists the source and names the version by its
//! content (SHA-256 over each object's path, size and ETag; or `--version-id`).
//! It builds the version in `.my-model.versions/.<id>.partial`, starting from
//! hard links to the current version's files (an unchanged file is not fetched
//! again; a changed one is written to a new file, which breaks the link for
//! that path only), and fetches the rest with `sync --delete` semantics and
//! `syncfs` durability. Only when every object is in and verified and on disk
//! is the directory renamed to `<id>` and DEST switched: a new symlink is made
//! beside it and renamed over it, so readers that resolve DEST see the old
//! complete tree or the new complete tree, never a mix. Nothing is switched
//! after any failure; a killed build leaves its `.partial` directory, which
//! the next run resumes.
//!
//! Versions share unchanged files (hard links), so a version must never be
//! modified in place: serving pods mount the volume read-only.
//!
//! `history` in the versions directory lists the switches, in order: `ID` for
//! a build switched to, `rollback ID` for a rollback. Replayed, it is a stack
//! of versions: a build pushes, a rollback pops, so `s3load rollback` goes to
//! the version before the current one and repeated rollbacks walk back.
//! `--keep K` removes versions beyond the K most recently used, never the
//! current one nor the one just switched away from (readers that resolved DEST
//! before the switch may still be reading it).
//!
//! Loaders and rollbacks of one DEST may overlap (two replicas of a
//! Deployment, an operator rolling back during a build): each takes the
//! versions' lock (`.NAME.versions/.lock`, `flock`) and holds it from before
//! it lists the source until after it has switched and pruned, so they run one
//! after the other. A build lists once, under the lock, names the version
//! after that listing and fills the version from it; an object that changed
//! since it was listed fails the build (the engine is pinned) rather than
//! filling the version with bytes its name does not stand for. Under the lock
//! the link is read again just before the switch, so the version replaced is
//! the one DEST pointed to at that moment, and it is never pruned.

use std::path::{Path, PathBuf};

use sha2::{Digest, Sha256};

use crate::config::{Config, SyncOptions};
use crate::error::{Error, exit_code};
use crate::localfs::versions::{Versions, link_tree, real_dir, sync_dir};
use crate::logging;
use crate::output::{self, Output};
use crate::plan::filter::Filters;
use crate::refusal::Refusal;
use crate::transfer::Durability;
use crate::url::S3Url;

/// A version id from the content: SHA-256 over each selected object's path,
/// size and ETag, in path order.
fn content_id(objects: &crate::plan::Objects) -> String {
    let mut h = Sha256::new();
    for o in objects.iter() {
        h.update(o.rel.as_bytes());
        h.update([0]);
        h.update(o.size.to_string().as_bytes());
        h.update([0]);
        h.update(o.etag.unwrap_or("").as_bytes());
        h.update(b"\n");
    }
    h.finalize().iter().take(8).map(|b| format!("{b:02x}")).collect()
}

/// `sync --atomic SRC DEST` (`opts.atomic` holds the version's options).
pub(super) async fn sync(
    src: S3Url,
    dest: PathBuf,
    filters: &Filters,
    opts: &SyncOptions,
    cfg: &Config,
    out: Output,
    session: &super::session::Session<'_>,
) -> Result<u8, Error> {
    let Some(atomic) = &opts.atomic else {
        return Err(Error::Internal("sync --atomic called without its options".into()));
    };
    if !src.is_batch() {
        return Err(Error::Usage("--atomic needs a prefix or wildcard source (a whole tree to version)".into()));
    }
    if cfg.shard.is_some() || cfg.dry_run {
        return Err(Error::Usage("--atomic cannot be combined with --shard or --dry-run yet".into()));
    }
    let versions = Versions::at(&dest)?;
    // A DEST that is not ours is refused before anything is made.
    versions.current()?;
    let store = session.connect(cfg, Some(&src.bucket)).await?;
    // From here to the end (list, build, switch, prune), no other run of this
    // DEST builds, rolls back or prunes.
    let waiting = format!("waiting for another run's lock on the versions of {}", dest.display());
    let _lock = session.stop.unless_stopped(&waiting, versions.lock()).await??;
    versions.check_history()?;
    // One listing: the version is named after it and filled from it.
    let mut listed = crate::plan::list_source(store.as_ref(), &src).await?;
    listed.objects.retain(|_, o| filters.selects(o.rel));
    let id = match &atomic.version_id {
        Some(id) => id.clone(),
        None => content_id(&listed.objects),
    };
    let current = versions.current()?;
    let ready = versions.path(&id);
    if current.as_deref() == Some(id.as_str()) && real_dir(&ready)? {
        logging::stderr_line(
            "INFO",
            &format!("{} is at version {id} already: nothing to do", dest.display()),
            serde_json::json!({"version": id}),
        );
        return Ok(exit_code::SUCCESS);
    }
    if !real_dir(&ready)? {
        let build = versions.dir().join(format!(".{id}.partial"));
        // A DEST whose version directory is gone (removed by hand) has
        // nothing to link from: the build fetches everything.
        if !real_dir(&build)?
            && let Some(cur) = current.as_deref().filter(|c| real_dir(&versions.path(c)).unwrap_or(false))
        {
            link_tree(&versions.path(cur), &build)?;
        }
        let mut cfg = cfg.clone();
        if cfg.engine.durability == Durability::Off {
            // The switch must not point at files a crash could lose.
            cfg.engine.durability = Durability::Syncfs;
        }
        // What the version is named after is what it holds.
        cfg.engine.pinned = true;
        let opts = SyncOptions { delete: true, max_delete: None, ..opts.clone() };
        let code = super::download::download_from(
            store,
            &session.stop,
            Some(listed),
            src,
            build.clone(),
            filters,
            Some(&opts),
            &cfg,
            out,
        )
        .await?;
        if code != exit_code::SUCCESS {
            logging::error_line(&format!(
                "ERROR not switching {}: version {id} is incomplete (kept in {} to resume; run again)",
                dest.display(),
                build.display()
            ));
            return Ok(code);
        }
        std::fs::rename(&build, &ready).map_err(|e| Error::io(&ready, "completing the version", e))?;
        sync_dir(versions.dir())?;
    }
    // Read again just before the switch: the version replaced is the one DEST
    // points to now.
    let replaced = versions.current()?;
    versions.switch(&id, false)?;
    let was = replaced.as_deref().unwrap_or("none");
    logging::stderr_line(
        "INFO",
        &format!("switched {} to version {id} (was {was})", dest.display()),
        serde_json::json!({"version": id, "previous": replaced}),
    );
    if let Some(keep) = atomic.keep {
        let removed = versions.prune(keep, &id, replaced.as_deref());
        if !removed.is_empty() {
            tracing::info!(removed = ?removed, "removed old versions (--keep {keep})");
        }
    }
    Ok(exit_code::SUCCESS)
}

/// `s3load rollback DEST`: back to the version before the current one in the
/// history (replayed as a stack: repeated rollbacks walk back), skipping
/// versions no longer kept.
pub(super) fn rollback(dest: &Path) -> Result<u8, Error> {
    let versions = Versions::at(dest)?;
    if versions.current()?.is_none() {
        return Err(Refusal::NoRollback { dest: dest.to_path_buf(), kept: false }.into());
    }
    let _lock = versions.lock_blocking()?;
    versions.check_history()?;
    let Some(current) = versions.current()? else {
        return Err(Refusal::NoRollback { dest: dest.to_path_buf(), kept: false }.into());
    };
    let complete = versions.complete();
    let mut stack = versions.stack();
    if stack.last() != Some(&current) {
        // DEST was switched by hand, or the history was lost: the current
        // version is the top.
        stack.push(current.clone());
    }
    stack.pop();
    let before = stack
        .into_iter()
        .rev()
        .find(|id| *id != current && complete.contains(id))
        .ok_or_else(|| Error::from(Refusal::NoRollback { dest: dest.to_path_buf(), kept: true }))?;
    versions.switch(&before, true)?;
    logging::stderr_line(
        "INFO",
        &format!("switched {} back to version {before} (was {current})", dest.display()),
        serde_json::json!({"version": before, "previous": current}),
    );
    Ok(exit_code::SUCCESS)
}

/// `s3load versions DEST`: the complete versions, most recent first; the
/// current one marked `*`.
pub(super) fn list(dest: &Path) -> Result<u8, Error> {
    let versions = Versions::at(dest)?;
    let current = versions.current()?;
    for id in versions.complete() {
        let mark = if current.as_deref() == Some(id.as_str()) { "*" } else { " " };
        output::stdout_line(&format!("{mark} {id}"))?;
    }
    Ok(exit_code::SUCCESS)
}
