//! Directories below a destination root, opened without following symlinks.
//!
//! Every directory below the root is created and opened relative to its
//! parent's handle with `O_NOFOLLOW`, so a symlink planted in the destination
//! (`models/x -> /etc`) is refused by name, never written or deleted through.
//! The root itself is the user's choice and may be a symlink.

use std::ffi::OsStr;
use std::os::fd::OwnedFd;
use std::path::{Component, Path, PathBuf};
use std::sync::Arc;

use rustix::fs::AtFlags;
use rustix::io::Errno;

use crate::error::Error;
use crate::refusal::{Place, Refusal};

/// Directory handles opened during a run: each destination directory is
/// created and opened (without following symlinks) once, not once per file.
/// A handle keeps naming the directory it opened even if a symlink is put in
/// its place later. At most [`Dirs::MAX`] are kept open.
#[derive(Debug, Default)]
pub struct Dirs(std::sync::Mutex<std::collections::HashMap<PathBuf, Arc<OwnedFd>>>);

impl Dirs {
    const MAX: usize = 256;
}

/// [`open_parent`] through the run's open directories.
pub(super) fn open_parent_cached<'a>(
    dirs: &Dirs,
    root: &Path,
    rel: &'a Path,
) -> Result<(Arc<OwnedFd>, &'a OsStr), Error> {
    let key = root.join(rel.parent().unwrap_or(Path::new("")));
    let name = rel.file_name().ok_or_else(|| Refusal::NoFileName { path: rel.to_path_buf() })?;
    if let Some(d) = dirs.0.lock().unwrap().get(&key) {
        return Ok((d.clone(), name));
    }
    let (dir, name) = open_parent(root, rel)?;
    let dir = Arc::new(dir);
    let mut cache = dirs.0.lock().unwrap();
    if cache.len() >= Dirs::MAX {
        cache.clear();
    }
    cache.insert(key, dir.clone());
    Ok((dir, name))
}

/// Opens (creating as needed) the directory that will hold `root/rel`, never
/// following a symlink below `root`. Returns its handle and the file's name.
pub(super) fn open_parent<'a>(root: &Path, rel: &'a Path) -> Result<(OwnedFd, &'a OsStr), Error> {
    let mut comps = Vec::new();
    for c in rel.components() {
        match c {
            Component::Normal(n) => comps.push(n),
            _ => return Err(Refusal::NotPlainPath { path: rel.display().to_string() }.into()),
        }
    }
    let Some((name, parents)) = comps.split_last() else {
        return Err(Refusal::NoFileName { path: rel.to_path_buf() }.into());
    };
    let root = super::open::or_dot(root);
    let mut dir = super::open::root_dir(root)?;
    let mut shown = root.to_path_buf();
    for c in parents {
        shown.push(c);
        dir = super::open::subdir(&dir, &shown, c, Place::DestinationDir)?;
    }
    Ok((dir, name))
}

/// Removes the file `root/rel` (`rel` relative, `/`-separated), then every
/// directory below `root` that this leaves empty. Directories are opened with
/// `O_NOFOLLOW` relative to their parents, so a symlinked directory is refused,
/// never followed; a missing file counts as removed.
pub fn remove_file(root: &Path, rel: &str) -> Result<(), Error> {
    let comps: Vec<&str> = rel.split('/').collect();
    if comps.iter().any(|c| c.is_empty() || *c == "." || *c == "..") {
        return Err(Refusal::NotPlainPath { path: rel.to_string() }.into());
    }
    let (name, parents) = comps.split_last().expect("split yields one item");
    let root = super::open::or_dot(root);
    let mut dirs = vec![super::open::existing_dir(root).map_err(|e| Error::io(root, "opening", e))?];
    let mut shown = root.to_path_buf();
    for c in parents {
        shown.push(c);
        match super::open::existing_subdir(dirs.last().expect("root"), c) {
            Ok(fd) => dirs.push(fd),
            Err(Errno::NOENT) => return Ok(()),
            Err(Errno::LOOP | Errno::NOTDIR) => {
                return Err(Refusal::Planted { path: shown, place: Place::DeletedDir }.into());
            }
            Err(e) => return Err(Error::io(&shown, "opening directory", e.into())),
        }
    }
    match rustix::fs::unlinkat(dirs.last().expect("root"), *name, AtFlags::empty()) {
        Ok(()) | Err(Errno::NOENT) => {}
        Err(e) => return Err(Error::io(root.join(rel), "deleting", e.into())),
    }
    // Prune: the deepest directory first; stop at the first one not empty.
    dirs.pop();
    for (i, c) in parents.iter().enumerate().rev() {
        if rustix::fs::unlinkat(&dirs[i], *c, AtFlags::REMOVEDIR).is_err() {
            break;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn removing_a_file_prunes_the_directories_it_empties_but_not_the_root() {
        let d = tempfile::tempdir().unwrap();
        let root = d.path().join("root");
        std::fs::create_dir_all(root.join("a/b/c")).unwrap();
        std::fs::write(root.join("a/b/c/f"), b"x").unwrap();
        std::fs::write(root.join("a/keep"), b"x").unwrap();
        remove_file(&root, "a/b/c/f").unwrap();
        assert!(!root.join("a/b").exists(), "a/b/c and a/b became empty");
        assert!(root.join("a/keep").exists());
        remove_file(&root, "a/keep").unwrap();
        assert!(root.exists() && !root.join("a").exists());
        remove_file(&root, "gone/x").unwrap();
        // A symlinked directory is not deleted through.
        std::fs::create_dir_all(d.path().join("outside")).unwrap();
        std::fs::write(d.path().join("outside/f"), b"x").unwrap();
        std::os::unix::fs::symlink(d.path().join("outside"), root.join("link")).unwrap();
        assert!(remove_file(&root, "link/f").is_err());
        assert!(d.path().join("outside/f").exists());
    }
}
