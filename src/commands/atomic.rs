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

use std::ffi::OsString;
use std::io::Write;
use std::path::{Path, PathBuf};

use sha2::{Digest, Sha256};

use crate::config::{Config, SyncOptions};
use crate::error::{Error, exit_code};
use crate::logging;
use crate::output::{self, Output};
use crate::plan::filter::Filters;
use crate::refusal::{Place, Refusal};
use crate::transfer::Durability;
use crate::url::S3Url;

const HISTORY: &str = "history";
/// The versions' lock, in the versions directory (see the module's note).
const LOCK: &str = ".lock";
/// How a rollback is written in the history: `rollback ID`.
const ROLLBACK: &str = "rollback ";

/// The versions' lock, held until dropped.
pub(super) struct VersionsLock {
    _file: std::fs::File,
}

/// The versions of one DEST.
pub(super) struct Versions {
    link: PathBuf,
    /// `.NAME.versions`, beside the link.
    dir: PathBuf,
    dir_name: String,
}

/// Whether `id` may name a version directory.
pub(crate) fn valid_id(id: &str) -> bool {
    (1..=64).contains(&id.len())
        && !id.starts_with('.')
        && id.bytes().all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'))
}

impl Versions {
    pub fn at(dest: &Path) -> Result<Versions, Error> {
        let name = dest
            .file_name()
            .and_then(|n| n.to_str())
            .filter(|n| !n.is_empty() && *n != "." && *n != "..")
            .ok_or_else(|| {
                Error::Usage(format!("{}: --atomic needs DEST to name a link, e.g. /models/my-model", dest.display()))
            })?;
        let parent = match dest.parent() {
            Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
            _ => PathBuf::from("."),
        };
        let dir_name = format!(".{name}.versions");
        let versions = Versions { link: dest.to_path_buf(), dir: parent.join(&dir_name), dir_name };
        real_dir(&versions.dir)?;
        Ok(versions)
    }

    /// The version DEST points to; `None` when DEST does not exist yet.
    pub fn current(&self) -> Result<Option<String>, Error> {
        let not_ours = |what: &str| {
            Error::from(Refusal::NotOurLink {
                link: self.link.clone(),
                what: what.to_string(),
                dir_name: self.dir_name.clone(),
            })
        };
        match std::fs::symlink_metadata(&self.link) {
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(Error::io(&self.link, "reading", e)),
            Ok(m) if !m.file_type().is_symlink() => Err(not_ours("exists and is not a symlink")),
            Ok(_) => {
                let target =
                    std::fs::read_link(&self.link).map_err(|e| Error::io(&self.link, "reading the link", e))?;
                let id = target
                    .to_str()
                    .and_then(|t| t.strip_prefix(&format!("{}/", self.dir_name)))
                    .filter(|id| valid_id(id))
                    .ok_or_else(|| not_ours(&format!("points to {}", target.display())))?;
                Ok(Some(id.to_string()))
            }
        }
    }

    pub fn path(&self, id: &str) -> PathBuf {
        self.dir.join(id)
    }

    /// Takes the versions' lock, waiting (and saying so) while another run
    /// of this DEST holds it. Creates the versions directory.
    pub async fn lock(&self) -> Result<VersionsLock, Error> {
        std::fs::create_dir_all(&self.dir).map_err(|e| Error::io(&self.dir, "creating directory", e))?;
        let file = self.lock_file()?;
        if rustix::fs::flock(&file, rustix::fs::FlockOperation::NonBlockingLockExclusive).is_ok() {
            return Ok(VersionsLock { _file: file });
        }
        crate::logging::stderr_line(
            "INFO",
            &format!(
                "waiting for another run on {} to finish (a build, a rollback or a prune holds {})",
                self.link.display(),
                self.dir.join(LOCK).display()
            ),
            serde_json::json!({"waiting_for": self.dir.join(LOCK)}),
        );
        let lock_path = self.dir.join(LOCK);
        tokio::task::spawn_blocking(move || {
            rustix::fs::flock(&file, rustix::fs::FlockOperation::LockExclusive)
                .map(|()| VersionsLock { _file: file })
                .map_err(|e| Error::io(&lock_path, "locking", e.into()))
        })
        .await
        .map_err(|e| Error::Internal(format!("waiting for the versions' lock: {e}")))?
    }

    fn lock_file(&self) -> Result<std::fs::File, Error> {
        own_file(&self.dir.join(LOCK), false)
    }

    /// Refuses a history that is not s3load's file (a link, a FIFO): checked
    /// under the lock before anything is switched.
    fn check_history(&self) -> Result<(), Error> {
        own_file(&self.dir.join(HISTORY), true).map(|_| ())
    }

    /// [`Versions::lock`] for a caller that may block its thread (`rollback`).
    pub fn lock_blocking(&self) -> Result<VersionsLock, Error> {
        let file = self.lock_file()?;
        if rustix::fs::flock(&file, rustix::fs::FlockOperation::NonBlockingLockExclusive).is_err() {
            crate::logging::stderr_line(
                "INFO",
                &format!("waiting for another run on {} to finish", self.link.display()),
                serde_json::json!({"waiting_for": self.dir.join(LOCK)}),
            );
            rustix::fs::flock(&file, rustix::fs::FlockOperation::LockExclusive)
                .map_err(|e| Error::io(self.dir.join(LOCK), "locking", e.into()))?;
        }
        Ok(VersionsLock { _file: file })
    }

    /// Points DEST at version `id` with one rename of a new link over it, then
    /// makes that durable and notes it in the history (as a rollback when
    /// `rollback`). The new link's name is random, and made only where nothing
    /// stands: pods sharing a volume all run as PID 1.
    pub fn switch(&self, id: &str, rollback: bool) -> Result<(), Error> {
        let parent = self.dir.parent().unwrap_or(Path::new("."));
        let target = format!("{}/{id}", self.dir_name);
        let mut made = None;
        for _ in 0..8 {
            let mut tmp_name = OsString::from(".");
            tmp_name.push(self.link.file_name().unwrap_or_default());
            tmp_name.push(format!(".link-{}", crate::localfs::unique_suffix()));
            let tmp = parent.join(tmp_name);
            match std::os::unix::fs::symlink(&target, &tmp) {
                Ok(()) => {
                    made = Some(tmp);
                    break;
                }
                Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => continue,
                Err(e) => return Err(Error::io(&tmp, "making the new link", e)),
            }
        }
        let tmp = made.ok_or_else(|| Error::Internal("no free name for the new link after 8 tries".into()))?;
        std::fs::rename(&tmp, &self.link).map_err(|e| {
            let _ = std::fs::remove_file(&tmp);
            Error::io(&self.link, "switching the link", e)
        })?;
        sync_dir(parent)?;
        let mut history = own_file(&self.dir.join(HISTORY), true)?;
        let line = if rollback { format!("{ROLLBACK}{id}\n") } else { format!("{id}\n") };
        history.write_all(line.as_bytes()).map_err(|e| Error::io(self.dir.join(HISTORY), "writing", e))?;
        Ok(())
    }

    /// The switches, oldest first: (version, whether it was a rollback).
    fn switches(&self) -> Vec<(String, bool)> {
        // Read as s3load's own file (no FIFO, no link); a byte that is not
        // UTF-8 spoils its line, not the whole history.
        let mut bytes = Vec::new();
        if let Ok(f) = own_file(&self.dir.join(HISTORY), false) {
            use std::io::Read;
            let _ = f.take(MAX_HISTORY).read_to_end(&mut bytes);
        }
        let text = String::from_utf8_lossy(&bytes);
        text.lines()
            .map(|l| match l.strip_prefix(ROLLBACK) {
                Some(id) => (id, true),
                None => (l, false),
            })
            .filter(|(id, _)| valid_id(id))
            .map(|(id, back)| (id.to_string(), back))
            .collect()
    }

    /// The versions DEST pointed to, oldest first.
    pub fn history(&self) -> Vec<String> {
        self.switches().into_iter().map(|(id, _)| id).collect()
    }

    /// The history replayed as a stack: a build pushes its version, a
    /// rollback pops back to the version it went to. The top is the version
    /// DEST points to (when the history is whole).
    pub fn stack(&self) -> Vec<String> {
        versions_stack(&self.switches())
    }

    /// Complete versions on disk, most recently used first (by the history;
    /// those it does not name last, by name).
    pub fn complete(&self) -> Vec<String> {
        let mut on_disk: Vec<String> = std::fs::read_dir(&self.dir)
            .map(|rd| {
                rd.flatten()
                    .filter(|e| e.file_type().is_ok_and(|t| t.is_dir()))
                    .filter_map(|e| e.file_name().into_string().ok())
                    .filter(|n| valid_id(n))
                    .collect()
            })
            .unwrap_or_default();
        on_disk.sort();
        let history = self.history();
        let last_use = |id: &str| history.iter().rposition(|h| h == id);
        on_disk.sort_by_key(|id| std::cmp::Reverse(last_use(id)));
        on_disk
    }

    /// Removes complete versions beyond the `keep` most recent, never `live`
    /// nor `previous`. Returns those removed.
    pub fn prune(&self, keep: usize, live: &str, previous: Option<&str>) -> Vec<String> {
        let mut removed = Vec::new();
        for (i, id) in self.complete().into_iter().enumerate() {
            if i < keep || id == live || Some(id.as_str()) == previous {
                continue;
            }
            match std::fs::remove_dir_all(self.path(&id)) {
                Ok(()) => removed.push(id),
                Err(e) => tracing::warn!(version = %id, error = %e, "could not remove an old version"),
            }
        }
        removed.extend(self.remove_abandoned_builds());
        removed
    }

    /// Removes `.ID.partial` directories that no run is building (the build
    /// holds the lock in the directory's `.s3load/`): builds of versions that
    /// were given up. A later run of the same version starts it again.
    fn remove_abandoned_builds(&self) -> Vec<String> {
        let Ok(entries) = std::fs::read_dir(&self.dir) else { return Vec::new() };
        let mut removed = Vec::new();
        for e in entries.flatten() {
            let Some(name) = e.file_name().into_string().ok() else { continue };
            if !name.starts_with('.') || !name.ends_with(".partial") || !e.file_type().is_ok_and(|t| t.is_dir()) {
                continue;
            }
            let lock = std::fs::File::open(e.path().join(crate::state::STATE_DIR).join("lock"));
            // Held while we remove it: a run starting now waits, then finds it gone.
            let held = match &lock {
                Ok(f) => rustix::fs::flock(f, rustix::fs::FlockOperation::NonBlockingLockExclusive).is_err(),
                Err(_) => false,
            };
            if held {
                continue;
            }
            match std::fs::remove_dir_all(e.path()) {
                Ok(()) => removed.push(name),
                Err(err) => tracing::warn!(build = %name, error = %err, "could not remove an abandoned build"),
            }
        }
        removed
    }
}

/// The most of the history read (a line a switch: millions of switches).
const MAX_HISTORY: u64 = 64 << 20;

/// Opens (creating it) a file s3load keeps in the versions directory: never
/// through a link, never blocking on a FIFO, only a regular file; appending
/// with `append`.
fn own_file(path: &Path, append: bool) -> Result<std::fs::File, Error> {
    use std::os::unix::fs::OpenOptionsExt;
    let mut o = std::fs::OpenOptions::new();
    o.create(true).custom_flags(libc::O_NOFOLLOW | libc::O_NONBLOCK | libc::O_CLOEXEC);
    if append {
        o.append(true);
    } else {
        o.read(true).write(true).truncate(false);
    }
    let planted = || Error::from(Refusal::Planted { path: path.to_path_buf(), place: Place::VersionFile });
    let f = o.open(path).map_err(|e| match e.raw_os_error() {
        Some(libc::ELOOP | libc::ENXIO | libc::EISDIR) => planted(),
        _ => Error::io(path, "opening", e),
    })?;
    match f.metadata() {
        Ok(m) if m.file_type().is_file() => Ok(f),
        Ok(_) => Err(planted()),
        Err(e) => Err(Error::io(path, "reading", e)),
    }
}

/// The stack of versions that `switches` (oldest first) leave.
fn versions_stack(switches: &[(String, bool)]) -> Vec<String> {
    let mut stack: Vec<String> = Vec::new();
    for (id, rollback) in switches {
        if *rollback && stack.contains(id) {
            while stack.last() != Some(id) {
                stack.pop();
            }
        } else if stack.last() != Some(id) {
            stack.push(id.clone());
        }
    }
    stack
}

/// Whether `path` is a directory s3load may write into: `false` when it does
/// not exist; refused when something else (a symlink, planted to redirect the
/// build or the switch elsewhere, or a file) stands there.
fn real_dir(path: &Path) -> Result<bool, Error> {
    match std::fs::symlink_metadata(path) {
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(false),
        Err(e) => Err(Error::io(path, "reading", e)),
        Ok(m) if m.file_type().is_dir() => Ok(true),
        Ok(_) => Err(Refusal::Planted { path: path.to_path_buf(), place: Place::VersionsDir }.into()),
    }
}

fn sync_dir(dir: &Path) -> Result<(), Error> {
    std::fs::File::open(dir).and_then(|d| d.sync_all()).map_err(|e| Error::io(dir, "flushing to disk", e))
}

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

/// Hard-links the files of version `from` into `to` (created), with a copy
/// of its sync record, so that the sync that follows fetches only what
/// changed. A file that cannot be linked is left to be fetched.
fn link_tree(from: &Path, to: &Path) -> Result<(), Error> {
    let mut stack = vec![PathBuf::new()];
    while let Some(rel) = stack.pop() {
        let dir = to.join(&rel);
        std::fs::create_dir_all(&dir).map_err(|e| Error::io(&dir, "creating directory", e))?;
        let Ok(entries) = std::fs::read_dir(from.join(&rel)) else { continue };
        for e in entries.flatten() {
            let Ok(ft) = e.file_type() else { continue };
            let name = e.file_name();
            let r = rel.join(&name);
            if ft.is_dir() && name == crate::state::STATE_DIR {
                let state = e.path().join("state");
                if state.is_file() {
                    let into = to.join(&r);
                    std::fs::create_dir_all(&into).map_err(|e| Error::io(&into, "creating directory", e))?;
                    std::fs::copy(&state, into.join("state")).map_err(|e| Error::io(&state, "copying", e))?;
                }
            } else if ft.is_dir() {
                stack.push(r);
            } else if ft.is_file()
                && !name.to_str().is_some_and(crate::localfs::is_temp_name)
                && let Err(err) = std::fs::hard_link(e.path(), to.join(&r))
            {
                tracing::debug!(path = %r.display(), error = %err, "not linked; it will be fetched");
            }
        }
    }
    Ok(())
}

/// `sync --atomic SRC DEST` (`opts.atomic` holds the version's options).
pub(super) async fn sync(
    src: S3Url,
    dest: PathBuf,
    filters: &Filters,
    opts: &SyncOptions,
    cfg: &Config,
    out: Output,
    stores: &dyn super::Connect,
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
    let store = stores.connect(cfg, Some(&src.bucket)).await?;
    // From here to the end (list, build, switch, prune), no other run of this
    // DEST builds, rolls back or prunes.
    let _lock = versions.lock().await?;
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
        let build = versions.dir.join(format!(".{id}.partial"));
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
        let code =
            super::download::download_from(store, Some(listed), src, build.clone(), filters, Some(&opts), &cfg, out)
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
        sync_dir(&versions.dir)?;
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_history_replays_as_a_stack_so_rollbacks_walk_back() {
        let h = |lines: &[&str]| {
            let switches: Vec<(String, bool)> = lines
                .iter()
                .map(|l| match l.strip_prefix(ROLLBACK) {
                    Some(id) => (id.to_string(), true),
                    None => (l.to_string(), false),
                })
                .collect();
            versions_stack(&switches)
        };
        assert_eq!(h(&["v1", "v2", "v3"]), ["v1", "v2", "v3"]);
        assert_eq!(h(&["v1", "v2", "v3", "rollback v2"]), ["v1", "v2"]);
        assert_eq!(h(&["v1", "v2", "v3", "rollback v2", "rollback v1"]), ["v1"]);
        assert_eq!(h(&["v1", "v2", "v3", "rollback v2", "v4"]), ["v1", "v2", "v4"]);
        // A build switching back to an old version pushes it again.
        assert_eq!(h(&["v1", "v2", "v1"]), ["v1", "v2", "v1"]);
        // A rollback to a version the stack does not hold (history cut short).
        assert_eq!(h(&["v3", "rollback v2"]), ["v3", "v2"]);
        assert_eq!(h(&["v1", "v1"]), ["v1"]);
    }

    #[test]
    fn version_ids_cannot_leave_the_versions_directory() {
        for bad in ["", ".", "..", "../x", "a/b", ".hidden", "x y", "é", &"x".repeat(65)] {
            assert!(!valid_id(bad), "{bad:?}");
        }
        for good in ["v1", "2024-06-01_a.b", "0123456789abcdef"] {
            assert!(valid_id(good), "{good:?}");
        }
    }
}
