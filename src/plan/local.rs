//! Listing the destination directory: every regular file below it, with size and
//! mtime, as `/`-separated relative paths sorted like S3 keys (byte order).
//!
//! Symlinks below the destination are not followed and not listed (the
//! destination itself may be one); s3load's own temporary files and
//! its record directory (`.s3load/` at the root) are skipped. A missing destination is an empty listing.

use std::path::Path;
use std::time::SystemTime;

use crate::error::Error;
use crate::localfs::is_temp_name;

/// What the destination holds at one path, as the diff compares it with
/// the source: a file below a download's destination directory, or an
/// object below an upload's destination prefix (`rel` relative to either).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DestEntry {
    pub rel: String,
    pub size: u64,
    pub mtime: Option<SystemTime>,
}

/// Every regular file below `root`, sorted.
pub fn walk(root: &Path) -> Result<Vec<DestEntry>, Error> {
    let mut w = Walk::new(root)?;
    let all: Vec<DestEntry> = w.by_ref().collect();
    w.finish().map(|()| all)
}

/// Every regular file below a root, one at a time, in byte order of their
/// paths: only the directories on the way down are held, never the whole
/// tree (a million files would be 80 MB). A directory's entries are sorted
/// with `/` after each subdirectory's name, which is where its files fall
/// among the paths beside it (`a-1` < `a/x` < `a0`). An error ends the walk;
/// [`Walk::finish`] returns it.
pub struct Walk {
    /// Directories entered, each with the entries still to visit, the next last.
    stack: Vec<Level>,
    error: Option<Error>,
}

impl std::fmt::Debug for Walk {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Walk").field("depth", &self.stack.len()).field("error", &self.error).finish_non_exhaustive()
    }
}

struct Level {
    dir: std::path::PathBuf,
    children: Vec<Child>,
}

enum Child {
    File(DestEntry),
    Dir(String),
}

impl Walk {
    /// The destination itself may be a symlink (`~/models/current -> v3`):
    /// that is the user's choice, as with `cd`. Nothing below it is followed.
    /// A missing root, or a root that is not a directory, holds nothing.
    pub fn new(root: &Path) -> Result<Walk, Error> {
        let mut w = Walk { stack: Vec::new(), error: None };
        match std::fs::metadata(root) {
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(w),
            Err(e) => return Err(Error::io(root, "reading destination", e)),
            Ok(m) if !m.is_dir() => return Ok(w),
            Ok(_) => {}
        }
        w.enter(root.to_path_buf(), String::new())?;
        Ok(w)
    }

    /// Whether the walk ended because of an error (which it returns).
    pub fn finish(self) -> Result<(), Error> {
        self.error.map_or(Ok(()), Err)
    }

    fn enter(&mut self, dir: std::path::PathBuf, rel: String) -> Result<(), Error> {
        let entries = std::fs::read_dir(&dir).map_err(|e| Error::io(&dir, "listing directory", e))?;
        let mut children = Vec::new();
        for entry in entries {
            let entry = entry.map_err(|e| Error::io(&dir, "listing directory", e))?;
            let name = entry.file_name();
            let Some(name) = name.to_str() else { continue };
            let child_rel = if rel.is_empty() { name.to_string() } else { format!("{rel}/{name}") };
            let ft = entry.file_type().map_err(|e| Error::io(entry.path(), "reading file type", e))?;
            if ft.is_dir() {
                if !(rel.is_empty() && name == crate::state::STATE_DIR) {
                    children.push(Child::Dir(child_rel));
                }
            } else if ft.is_file() && !is_temp_name(name) {
                let meta = entry.metadata().map_err(|e| Error::io(entry.path(), "reading metadata", e))?;
                children.push(Child::File(DestEntry { rel: child_rel, size: meta.len(), mtime: meta.modified().ok() }));
            }
        }
        // Visited from the end: sorted in reverse. A directory sorts as its
        // name and a `/`, where the paths below it fall.
        fn key(c: &Child) -> (&[u8], bool) {
            match c {
                Child::File(f) => (f.rel.as_bytes(), false),
                Child::Dir(d) => (d.as_bytes(), true),
            }
        }
        children.sort_unstable_by(|a, b| {
            let ((a, a_dir), (b, b_dir)) = (key(a), key(b));
            let a = a.iter().chain(a_dir.then_some(&b'/'));
            let b = b.iter().chain(b_dir.then_some(&b'/'));
            b.cmp(a)
        });
        self.stack.push(Level { dir, children });
        Ok(())
    }
}

impl Iterator for Walk {
    type Item = DestEntry;

    fn next(&mut self) -> Option<DestEntry> {
        loop {
            let top = self.stack.last_mut()?;
            match top.children.pop() {
                None => {
                    self.stack.pop();
                }
                Some(Child::File(f)) => return Some(f),
                Some(Child::Dir(rel)) => {
                    let name = rel.rsplit('/').next().unwrap_or(&rel);
                    let dir = top.dir.join(name);
                    if let Err(e) = self.enter(dir, rel) {
                        self.stack.clear();
                        self.error = Some(e);
                        return None;
                    }
                }
            }
        }
    }
}

/// A local file selected for upload.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SourceFile {
    /// `/`-separated path below the source's base: what follows the key prefix.
    pub rel: String,
    /// Where to read it (through any symlinks followed).
    pub path: std::path::PathBuf,
    pub size: u64,
    pub mtime: Option<SystemTime>,
    /// Device and inode of the file the walk saw (through any symlink
    /// followed): the upload reads that file and no other.
    pub id: Option<(u64, u64)>,
}

/// Device and inode, from a file's metadata.
pub fn file_id(m: &std::fs::Metadata) -> Option<(u64, u64)> {
    use std::os::unix::fs::MetadataExt;
    Some((m.dev(), m.ino()))
}

/// What an upload source holds: its files, the part of the key space it stands
/// for, and what the walk had to leave out.
#[derive(Debug)]
pub struct LocalSource {
    /// Sorted by `rel`.
    pub files: Vec<SourceFile>,
    pub scope: Scope,
    /// Entries the walk could not (or was told not to) read, sorted by `rel`.
    pub skipped: Vec<Skipped>,
}

/// The relative paths (after the key prefix) an upload source stands for: what
/// `sync --delete` may remove objects from. Anything outside it belongs to
/// somebody else, whatever the destination prefix holds.
#[derive(Debug, Clone)]
pub enum Scope {
    /// `dir/`: everything below the prefix.
    All,
    /// `dir`: everything below `prefix` + this (`"dir/"`).
    Under(String),
    /// `'dir/*.bin'`: paths the wildcard selects (the path or a directory above it
    /// matches, as the walk selects files).
    Matching(regex::Regex),
    /// `file.bin`: that one path.
    File(String),
}

impl Scope {
    /// Whether `rel` (a path after the key prefix) is inside what the source stands for.
    pub fn covers(&self, rel: &str) -> bool {
        match self {
            Scope::All => true,
            Scope::Under(dir) => rel.starts_with(dir.as_str()),
            Scope::Matching(re) => selected_by(re, rel),
            Scope::File(name) => rel == name,
        }
    }

    /// The part of the key space, after the prefix, that holds every covered path:
    /// what the destination listing needs to look at.
    pub fn list_prefix(&self) -> &str {
        match self {
            Scope::All | Scope::Matching(_) => "",
            Scope::Under(dir) => dir,
            Scope::File(name) => name,
        }
    }
}

/// A path the upload walk left out.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Skipped {
    /// The path it would have had (a file, or a directory whose whole subtree is
    /// unknown); for a name that is not UTF-8, the directory holding it.
    pub rel: String,
    pub why: String,
    /// Not a failure: left out on purpose (`--no-follow-symlinks`), or not a
    /// file to upload (a FIFO, socket or device); the exit code stays 0.
    pub deliberate: bool,
    /// A FIFO, socket or device: reported by the command when its filters
    /// select it.
    pub not_a_file: bool,
}

impl Skipped {
    /// Whether an object at `rel` may be what this entry would have written: the
    /// entry's path itself or anything below it (nothing lies below a FIFO,
    /// socket or device).
    pub fn shadows(&self, rel: &str) -> bool {
        if self.not_a_file {
            return rel == self.rel;
        }
        self.rel.is_empty()
            || rel.strip_prefix(self.rel.as_str()).is_some_and(|rest| rest.is_empty() || rest.starts_with('/'))
    }
}

/// The wildcard selection rule: the path matches, or one of the directories above it does.
fn selected_by(re: &regex::Regex, rel: &str) -> bool {
    rel.match_indices('/').map(|(i, _)| &rel[..i]).chain([rel]).any(|p| re.is_match(p))
}

/// The files an upload source selects, as s5cmd reads local sources:
///
/// | source        | file            | relative path (after the key prefix) | scope |
/// |---------------|-----------------|--------------------------------------|-------|
/// | `dir`         | `dir/sub/a.bin` | `dir/sub/a.bin`                      | below `dir/` |
/// | `dir/`        | `dir/sub/a.bin` | `sub/a.bin`                          | everything |
/// | `'dir/*.bin'` | `dir/a.bin`     | `a.bin` (`*` stays within one name)  | what `*.bin` matches |
/// | `'dir/s*'`    | `dir/sub/a.bin` | `sub/a.bin` (matched directories are taken whole) | what `s*` matches, and below |
/// | `file.bin`    | `file.bin`      | `file.bin`                           | `file.bin` |
///
/// Symlinks are followed (to files and directories, loops skipped) unless
/// `follow` is false, in which case they are left out. s3load's own files (its
/// `.s3load/` record at the base, temporary and resume files) are never selected.
/// Broken symlinks, names that are not UTF-8, symlinks left out and FIFOs,
/// sockets and devices (never opened; one given as the source is a usage
/// error) are listed in [`LocalSource::skipped`]. A missing source is an
/// error.
pub fn walk_source(spec: &str, follow: bool) -> Result<LocalSource, Error> {
    let wildcard = spec.find(['*', '?']);
    let (base, pattern, keep_name) = match wildcard {
        Some(i) => {
            let cut = spec[..i].rfind('/').map_or(0, |j| j + 1);
            let base = if cut == 0 { "." } else { &spec[..cut] };
            let re = component_wildcard(&spec[cut..])?;
            (Path::new(base).to_path_buf(), Some(re), None)
        }
        None => {
            let p = Path::new(spec);
            let name =
                (!spec.ends_with('/')).then(|| p.file_name().map(|n| n.to_string_lossy().into_owned())).flatten();
            (p.to_path_buf(), None, name)
        }
    };
    let meta = std::fs::metadata(&base).map_err(|e| Error::io(&base, "reading the upload source", e))?;
    if let Some(kind) = crate::localfs::open::special_kind(&meta) {
        return Err(Error::Usage(format!(
            "{}: {kind}, not a regular file or a directory: s3load uploads regular files (copy it to a file first)",
            base.display()
        )));
    }
    if meta.is_file() {
        let name =
            keep_name.unwrap_or_else(|| base.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default());
        let file = SourceFile {
            rel: name.clone(),
            path: base.clone(),
            size: meta.len(),
            mtime: meta.modified().ok(),
            id: file_id(&meta),
        };
        return Ok(LocalSource { files: vec![file], scope: Scope::File(name), skipped: Vec::new() });
    }
    let prefix = keep_name.map(|n| format!("{n}/")).unwrap_or_default();
    let scope = match (&pattern, prefix.is_empty()) {
        (Some(re), _) => Scope::Matching(re.clone()),
        (None, true) => Scope::All,
        (None, false) => Scope::Under(prefix.clone()),
    };
    let mut files = Vec::new();
    let mut skipped = Vec::new();
    let mut seen = std::collections::HashSet::new();
    let mut visit = |found: Found<'_>| {
        let rel = match &found {
            Found::File(rel, ..) => *rel,
            Found::Skipped(Skipped { rel, .. }) | Found::Special(Skipped { rel, .. }) => rel.as_str(),
        };
        if rel.split('/').next() == Some(crate::state::STATE_DIR) {
            return;
        }
        match found {
            Found::File(rel, path, m) => {
                if pattern.as_ref().is_some_and(|re| !selected_by(re, rel)) {
                    return;
                }
                files.push(SourceFile {
                    rel: format!("{prefix}{rel}"),
                    path,
                    size: m.len(),
                    mtime: m.modified().ok(),
                    id: file_id(m),
                });
            }
            // A FIFO, socket or device: nothing lies below it, so only one the
            // wildcard selects is reported (and kept by --delete).
            Found::Special(s) => {
                if pattern.as_ref().is_none_or(|re| selected_by(re, &s.rel)) {
                    skipped.push(Skipped { rel: format!("{prefix}{}", s.rel), ..s });
                }
            }
            // Kept whatever the wildcard says: what lies below a directory that could
            // not be read may match it.
            Found::Skipped(s) => {
                let rel = if s.rel.is_empty() {
                    prefix.trim_end_matches('/').to_string()
                } else {
                    format!("{prefix}{}", s.rel)
                };
                skipped.push(Skipped { rel, ..s });
            }
        }
    };
    walk_into(&base, String::new(), follow, &mut seen, &mut visit)?;
    files.sort_unstable_by(|a, b| a.rel.cmp(&b.rel));
    skipped.sort_unstable_by(|a, b| a.rel.cmp(&b.rel));
    Ok(LocalSource { files, scope, skipped })
}

/// What the walk reports.
enum Found<'a> {
    File(&'a str, std::path::PathBuf, &'a std::fs::Metadata),
    Skipped(Skipped),
    /// A FIFO, socket or device: never opened.
    Special(Skipped),
}

/// A local wildcard: `*` and `?` stay within one path component, as shells and
/// s5cmd's local globbing have it.
fn component_wildcard(pattern: &str) -> Result<regex::Regex, Error> {
    crate::url::glob_regex(pattern, false).map_err(|e| Error::Usage(format!("{pattern:?}: bad wildcard: {e}")))
}

type Visit<'a> = dyn FnMut(Found<'_>) + 'a;

fn walk_into(
    dir: &Path,
    rel: String,
    follow: bool,
    seen: &mut std::collections::HashSet<(u64, u64)>,
    visit: &mut Visit<'_>,
) -> Result<(), Error> {
    use std::os::unix::fs::MetadataExt;
    // `seen` holds the directories above this one: a symlink back to one of
    // them is a loop. (The same directory reached by two links is walked twice,
    // under both names, as following symlinks means.)
    let m = std::fs::metadata(dir).map_err(|e| Error::io(dir, "reading directory", e))?;
    let id = (m.dev(), m.ino());
    if !seen.insert(id) {
        tracing::warn!(path = %dir.display(), "symlink loop: a directory above links back here; skipped");
        return Ok(());
    }
    let r = walk_entries(dir, rel, follow, seen, visit);
    seen.remove(&id);
    r
}

fn walk_entries(
    dir: &Path,
    rel: String,
    follow: bool,
    seen: &mut std::collections::HashSet<(u64, u64)>,
    visit: &mut Visit<'_>,
) -> Result<(), Error> {
    let mut entries: Vec<_> = std::fs::read_dir(dir)
        .map_err(|e| Error::io(dir, "listing directory", e))?
        .collect::<Result<_, _>>()
        .map_err(|e| Error::io(dir, "listing directory", e))?;
    entries.sort_by_key(std::fs::DirEntry::file_name);
    for entry in entries {
        let name = entry.file_name();
        let Some(name) = name.to_str() else {
            tracing::warn!(path = %entry.path().display(), "file name is not UTF-8; S3 keys must be: skipped");
            let why = format!("{}: the name is not UTF-8, which S3 keys must be", entry.path().display());
            visit(Found::Skipped(Skipped { rel: rel.clone(), why, deliberate: false, not_a_file: false }));
            continue;
        };
        let child_rel = if rel.is_empty() { name.to_string() } else { format!("{rel}/{name}") };
        let path = entry.path();
        let ft = entry.file_type().map_err(|e| Error::io(&path, "reading file type", e))?;
        let meta = if ft.is_symlink() {
            if !follow {
                let why = format!("{}: a symlink, left out by --no-follow-symlinks", path.display());
                visit(Found::Skipped(Skipped { rel: child_rel, why, deliberate: true, not_a_file: false }));
                continue;
            }
            match std::fs::metadata(&path) {
                Ok(m) => m,
                Err(e) => {
                    tracing::warn!(path = %path.display(), error = %e, "broken symlink: skipped");
                    let why = format!("{}: a symlink whose target cannot be read ({e})", path.display());
                    visit(Found::Skipped(Skipped { rel: child_rel, why, deliberate: false, not_a_file: false }));
                    continue;
                }
            }
        } else {
            entry.metadata().map_err(|e| Error::io(&path, "reading metadata", e))?
        };
        if meta.is_dir() {
            walk_into(&path, child_rel, follow, seen, visit)?;
        } else if meta.is_file() {
            if !is_temp_name(name) {
                visit(Found::File(&child_rel, path, &meta));
            }
        } else {
            // Not a file to upload: named, and the objects at its path kept
            // by `--delete`, as for a symlink left out.
            let kind = crate::localfs::open::special_kind(&meta).unwrap_or("an entry of another kind");
            let why = format!("{}: {kind}, not a regular file", path.display());
            visit(Found::Special(Skipped { rel: child_rel, why, deliberate: true, not_a_file: true }));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rels(v: &LocalSource) -> Vec<&str> {
        v.files.iter().map(|f| f.rel.as_str()).collect()
    }

    #[test]
    fn sources_map_as_s5cmd_maps_them() {
        let d = tempfile::tempdir().unwrap();
        let dir = d.path().join("dir");
        std::fs::create_dir_all(dir.join("sub")).unwrap();
        std::fs::write(dir.join("a.bin"), b"a").unwrap();
        std::fs::write(dir.join("c.txt"), b"c").unwrap();
        std::fs::write(dir.join("sub/b.bin"), b"b").unwrap();
        std::fs::create_dir_all(dir.join(".s3load")).unwrap();
        std::fs::write(dir.join(".s3load/state"), b"x").unwrap();
        std::fs::write(dir.join(".a.bin.1.s3load-tmp"), b"x").unwrap();
        let p = dir.to_str().unwrap();
        assert_eq!(rels(&walk_source(p, true).unwrap()), vec!["dir/a.bin", "dir/c.txt", "dir/sub/b.bin"]);
        assert_eq!(rels(&walk_source(&format!("{p}/"), true).unwrap()), vec!["a.bin", "c.txt", "sub/b.bin"]);
        assert_eq!(rels(&walk_source(&format!("{p}/*.bin"), true).unwrap()), vec!["a.bin"]);
        assert_eq!(rels(&walk_source(&format!("{p}/s*"), true).unwrap()), vec!["sub/b.bin"]);
        assert_eq!(rels(&walk_source(&format!("{p}/a.bin"), true).unwrap()), vec!["a.bin"]);
        assert!(walk_source(&format!("{p}/missing"), true).is_err());
    }

    #[test]
    fn symlinks_are_followed_or_left_out_and_loops_end() {
        let d = tempfile::tempdir().unwrap();
        let dir = d.path().join("dir");
        std::fs::create_dir_all(dir.join("real")).unwrap();
        std::fs::write(dir.join("real/f"), b"f").unwrap();
        std::fs::write(d.path().join("outside"), b"o").unwrap();
        std::os::unix::fs::symlink(d.path().join("outside"), dir.join("link-file")).unwrap();
        std::os::unix::fs::symlink(dir.join("real"), dir.join("link-dir")).unwrap();
        std::os::unix::fs::symlink(&dir, dir.join("real/loop")).unwrap();
        std::os::unix::fs::symlink(d.path().join("nowhere"), dir.join("broken")).unwrap();
        let p = format!("{}/", dir.display());
        let followed = walk_source(&p, true).unwrap();
        assert_eq!(rels(&followed), vec!["link-dir/f", "link-file", "real/f"], "loops skipped, links followed");
        let unfollowed = walk_source(&p, false).unwrap();
        assert_eq!(rels(&unfollowed), vec!["real/f"]);
        let left_out: Vec<(&str, bool)> = unfollowed.skipped.iter().map(|s| (s.rel.as_str(), s.deliberate)).collect();
        assert_eq!(left_out, vec![("broken", true), ("link-dir", true), ("link-file", true), ("real/loop", true)]);
        let broken: Vec<(&str, bool)> = followed.skipped.iter().map(|s| (s.rel.as_str(), s.deliberate)).collect();
        assert_eq!(broken, vec![("broken", false)], "a broken link is reported, not silently dropped");
    }

    #[test]
    fn each_source_form_has_its_own_deletion_scope() {
        let d = tempfile::tempdir().unwrap();
        let dir = d.path().join("my-model");
        std::fs::create_dir_all(dir.join("sub")).unwrap();
        std::fs::write(dir.join("a.bin"), b"a").unwrap();
        std::fs::write(dir.join("sub/b.bin"), b"b").unwrap();
        let p = dir.to_str().unwrap();
        let scope = |spec: &str| walk_source(spec, true).unwrap().scope;
        let covered = |s: &Scope| -> Vec<&str> {
            ["a.bin", "c.txt", "sub/b.bin", "sub/c.txt", "my-model/a.bin", "my-model-2/a.bin", "other-model/x"]
                .into_iter()
                .filter(|r| s.covers(r))
                .collect()
        };
        assert_eq!(covered(&scope(&format!("{p}/"))).len(), 7, "dir/ stands for the whole prefix");
        assert_eq!(covered(&scope(p)), vec!["my-model/a.bin"], "dir stands for prefix + dir/ only");
        assert_eq!(scope(p).list_prefix(), "my-model/");
        assert_eq!(covered(&scope(&format!("{p}/*.bin"))), vec!["a.bin"], "a wildcard stands for what it matches");
        assert_eq!(covered(&scope(&format!("{p}/s*"))), vec!["sub/b.bin", "sub/c.txt"], "and for matched directories");
        assert_eq!(covered(&scope(&format!("{p}/a.bin"))), vec!["a.bin"], "a file stands for itself");
    }

    #[test]
    fn a_fifo_is_never_opened_a_usage_error_as_the_source_and_left_out_below_it() {
        use rustix::fs::{CWD, FileType, Mode, mknodat};
        let d = tempfile::tempdir().unwrap();
        let dir = d.path().join("dir");
        std::fs::create_dir_all(dir.join("sub")).unwrap();
        std::fs::write(dir.join("a.bin"), b"a").unwrap();
        mknodat(CWD, dir.join("sub/pipe"), FileType::Fifo, Mode::from_raw_mode(0o644), 0).unwrap();
        // Given as the source: named, with what to do; it was listed as a
        // directory before ("Not a directory").
        let pipe = dir.join("sub/pipe");
        let e = walk_source(pipe.to_str().unwrap(), true).unwrap_err();
        assert!(matches!(e, Error::Usage(_)), "{e:?}");
        let text = e.to_string();
        assert!(text.contains(pipe.to_str().unwrap()) && text.contains("named pipe (FIFO)"), "{text}");
        assert!(text.contains("copy it to a file first"), "{text}");
        // Below a directory, however reached: left out, on purpose, and it
        // shadows an object at its path (not deleted by --delete).
        for (spec, files) in [(format!("{}/", dir.display()), vec!["a.bin"]), (format!("{}/s*", dir.display()), vec![])]
        {
            let v = walk_source(&spec, true).unwrap();
            assert_eq!(rels(&v), files, "{spec}");
            assert_eq!(v.skipped.len(), 1, "{spec}");
            let rel = "sub/pipe";
            assert_eq!(v.skipped[0].rel, rel);
            assert!(v.skipped[0].deliberate && v.skipped[0].not_a_file);
            assert!(v.skipped[0].why.contains("named pipe (FIFO), not a regular file"), "{}", v.skipped[0].why);
            assert!(v.skipped[0].shadows(rel) && !v.skipped[0].shadows("sub/pipe/below"));
        }
        // A wildcard that does not select it: not reported, nothing kept for it.
        let v = walk_source(&format!("{}/*.bin", dir.display()), true).unwrap();
        assert_eq!((rels(&v), v.skipped.len()), (vec!["a.bin"], 0));
        // A symlink to it, followed: the same.
        std::os::unix::fs::symlink(dir.join("sub/pipe"), dir.join("link")).unwrap();
        let v = walk_source(&format!("{}/", dir.display()), true).unwrap();
        assert_eq!(v.skipped.iter().map(|s| s.rel.as_str()).collect::<Vec<_>>(), ["link", "sub/pipe"]);
    }

    #[test]
    fn a_skipped_entry_shadows_itself_and_what_is_below_it() {
        let s = Skipped { rel: "shards".into(), why: String::new(), deliberate: false, not_a_file: false };
        assert!(s.shadows("shards") && s.shadows("shards/1.bin"));
        assert!(!s.shadows("shards-old/1.bin") && !s.shadows("config.json"));
        assert!(
            Skipped { rel: String::new(), why: String::new(), deliberate: false, not_a_file: false }
                .shadows("anything")
        );
    }

    #[test]
    fn a_name_that_is_not_utf8_shadows_its_directory() {
        use std::os::unix::ffi::OsStrExt;
        let d = tempfile::tempdir().unwrap();
        let dir = d.path().join("m");
        std::fs::create_dir_all(dir.join("sub")).unwrap();
        std::fs::write(dir.join("sub").join(std::ffi::OsStr::from_bytes(b"caf\xe9.bin")), b"x").unwrap();
        std::fs::write(dir.join("ok.bin"), b"x").unwrap();
        let src = walk_source(dir.to_str().unwrap(), true).unwrap();
        assert_eq!(rels(&src), vec!["m/ok.bin"]);
        assert_eq!(src.skipped.len(), 1);
        assert_eq!(src.skipped[0].rel, "m/sub");
        assert!(!src.skipped[0].deliberate);
    }

    #[test]
    fn the_walk_yields_files_in_byte_order_of_their_paths_one_directory_at_a_time() {
        let d = tempfile::tempdir().unwrap();
        let files = [
            "a-1",
            "a/x",
            "a/b/c",
            "a0",
            "b",
            "test-1",
            "test/a",
            "test/a-b",
            "test/a.b/z",
            "test/b/z",
            "test/b-1",
            "z/.s3load/kept",
            "é",
            "Z",
        ];
        for f in files {
            let p = d.path().join(f);
            std::fs::create_dir_all(p.parent().unwrap()).unwrap();
            std::fs::write(&p, f).unwrap();
        }
        std::fs::create_dir_all(d.path().join(".s3load")).unwrap();
        std::fs::write(d.path().join(".s3load/state"), "s").unwrap();
        std::fs::write(d.path().join("a/.x.0123456789abcdef.s3load-tmp"), "t").unwrap();
        std::fs::create_dir_all(d.path().join("empty/dir")).unwrap();
        std::os::unix::fs::symlink(d.path().join("b"), d.path().join("link")).unwrap();
        std::os::unix::fs::symlink(d.path().join("test"), d.path().join("a/linked-dir")).unwrap();
        let got: Vec<String> = walk(d.path()).unwrap().into_iter().map(|e| e.rel).collect();
        let mut want: Vec<String> = files.iter().map(std::string::ToString::to_string).collect();
        want.sort();
        assert_eq!(got, want, "sorted like S3 keys; .s3load/ at the root, temporary files and links left out");
        let missing = walk(&d.path().join("none")).unwrap();
        assert!(missing.is_empty());
    }
}
