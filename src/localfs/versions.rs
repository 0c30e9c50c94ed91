//! The versions of a DEST filled by `sync --atomic`, on the filesystem:
//! `.NAME.versions/` beside the DEST link, its lock and history, the switch
//! of the link by one `rename(2)`, hard-linked trees and pruning. The command
//! (`commands/atomic.rs`) decides what to build; this module keeps the
//! directory safe (nothing followed through a link, nothing removed that a
//! reader or a running build may hold).

use std::ffi::OsString;
use std::io::Write;
use std::path::{Path, PathBuf};

use crate::error::Error;
use crate::refusal::{Place, Refusal};

/// The file listing the switches, in the versions directory.
const HISTORY: &str = "history";
/// The versions' lock, in the versions directory (held by a build from before
/// it lists to after it prunes, and by a rollback: see `commands/atomic.rs`).
const LOCK: &str = ".lock";
/// How a rollback is written in the history: `rollback ID`.
const ROLLBACK: &str = "rollback ";

/// The versions' lock, held until dropped.
#[derive(Debug)]
pub struct VersionsLock {
    _file: std::fs::File,
}

/// The versions of one DEST.
#[derive(Debug)]
pub struct Versions {
    link: PathBuf,
    /// `.NAME.versions`, beside the link.
    dir: PathBuf,
    dir_name: String,
}

/// Whether `id` may name a version directory.
pub fn valid_id(id: &str) -> bool {
    (1..=64).contains(&id.len())
        && !id.starts_with('.')
        && id.bytes().all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'))
}

impl Versions {
    /// `.NAME.versions`, beside the link.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

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
    pub fn check_history(&self) -> Result<(), Error> {
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
            tmp_name.push(format!(".link-{}", super::unique_suffix()));
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
            // Opened without following a link or blocking on a FIFO.
            let lock = super::open::existing_state_dir(&e.path())
                .and_then(|d| super::open::regular_in(&d, "lock", rustix::fs::OFlags::RDONLY).ok());
            // Held while we remove it: a run starting now waits, then finds it gone.
            let held = match &lock {
                Some(f) => rustix::fs::flock(f, rustix::fs::FlockOperation::NonBlockingLockExclusive).is_err(),
                None => false,
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
    use rustix::fs::OFlags;
    let flags = OFlags::CREATE | if append { OFlags::WRONLY | OFlags::APPEND } else { OFlags::RDWR };
    super::open::regular(path, flags).map_err(|e| e.into_error(path, Place::VersionFile, "opening"))
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
pub fn real_dir(path: &Path) -> Result<bool, Error> {
    match std::fs::symlink_metadata(path) {
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(false),
        Err(e) => Err(Error::io(path, "reading", e)),
        Ok(m) if m.file_type().is_dir() => Ok(true),
        Ok(_) => Err(Refusal::Planted { path: path.to_path_buf(), place: Place::VersionsDir }.into()),
    }
}

pub fn sync_dir(dir: &Path) -> Result<(), Error> {
    let d = super::open::existing_dir(dir).map_err(|e| Error::io(dir, "opening", e))?;
    rustix::fs::fsync(&d).map_err(|e| Error::io(dir, "flushing to disk", e.into()))
}

/// Hard-links the files of version `from` into `to` (created), with a copy
/// of its sync record, so that the sync that follows fetches only what
/// changed. A file that cannot be linked is left to be fetched.
pub fn link_tree(from: &Path, to: &Path) -> Result<(), Error> {
    let mut stack = vec![PathBuf::new()];
    while let Some(rel) = stack.pop() {
        let dir = to.join(&rel);
        std::fs::create_dir_all(&dir).map_err(|e| Error::io(&dir, "creating directory", e))?;
        let Ok(entries) = std::fs::read_dir(from.join(&rel)) else { continue };
        for e in entries.flatten() {
            let Ok(ft) = e.file_type() else { continue };
            let name = e.file_name();
            let r = rel.join(&name);
            if ft.is_dir() && name == super::open::STATE_DIR {
                let state = e.path().join("state");
                if state.is_file() {
                    let into = to.join(&r);
                    std::fs::create_dir_all(&into).map_err(|e| Error::io(&into, "creating directory", e))?;
                    std::fs::copy(&state, into.join("state")).map_err(|e| Error::io(&state, "copying", e))?;
                }
            } else if ft.is_dir() {
                stack.push(r);
            } else if ft.is_file()
                && !name.to_str().is_some_and(super::is_temp_name)
                && let Err(err) = std::fs::hard_link(e.path(), to.join(&r))
            {
                tracing::debug!(path = %r.display(), error = %err, "not linked; it will be fetched");
            }
        }
    }
    Ok(())
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
    fn a_fifo_for_an_abandoned_builds_lock_does_not_hang_the_pruning() {
        let d = tempfile::tempdir().unwrap();
        let v = Versions::at(&d.path().join("current")).unwrap();
        let state = v.dir().join(".v9.partial").join(crate::localfs::STATE_DIR);
        std::fs::create_dir_all(&state).unwrap();
        let mode = rustix::fs::Mode::from_raw_mode(0o644);
        rustix::fs::mknodat(rustix::fs::CWD, state.join("lock"), rustix::fs::FileType::Fifo, mode, 0).unwrap();
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || tx.send(v.remove_abandoned_builds()).unwrap());
        let removed = rx.recv_timeout(std::time::Duration::from_secs(10)).expect("the pruning ends");
        assert_eq!(removed, [".v9.partial"], "no run holds it: abandoned");
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
