//! Listing the destination directory: every regular file below it, with size and
//! mtime, as `/`-separated relative paths sorted like S3 keys (byte order).
//!
//! Symlinks are not followed and not listed; s3load's own temporary files and
//! its record directory (`.s3load/` at the root) are skipped. A missing destination is an empty listing.

use std::path::Path;
use std::time::SystemTime;

use crate::error::Error;
use crate::transfer::writer::is_temp_name;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LocalEntry {
    pub rel: String,
    pub size: u64,
    pub mtime: Option<SystemTime>,
}

pub fn walk(root: &Path) -> Result<Vec<LocalEntry>, Error> {
    let mut out = Vec::new();
    match std::fs::symlink_metadata(root) {
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(out),
        Err(e) => return Err(Error::io(root, "reading destination", e)),
        Ok(m) if !m.is_dir() => return Ok(out),
        Ok(_) => {}
    }
    let mut stack = vec![(root.to_path_buf(), String::new())];
    while let Some((dir, rel)) = stack.pop() {
        let entries = std::fs::read_dir(&dir).map_err(|e| Error::io(&dir, "listing directory", e))?;
        for entry in entries {
            let entry = entry.map_err(|e| Error::io(&dir, "listing directory", e))?;
            let name = entry.file_name();
            let Some(name) = name.to_str() else { continue };
            let child_rel = if rel.is_empty() { name.to_string() } else { format!("{rel}/{name}") };
            let ft = entry.file_type().map_err(|e| Error::io(entry.path(), "reading file type", e))?;
            if ft.is_dir() {
                if rel.is_empty() && name == crate::state::STATE_DIR {
                    continue;
                }
                stack.push((entry.path(), child_rel));
            } else if ft.is_file() && !is_temp_name(name) {
                let meta = entry.metadata().map_err(|e| Error::io(entry.path(), "reading metadata", e))?;
                out.push(LocalEntry { rel: child_rel, size: meta.len(), mtime: meta.modified().ok() });
            }
        }
    }
    out.sort_unstable_by(|a, b| a.rel.cmp(&b.rel));
    Ok(out)
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
}

/// The files an upload source selects, as s5cmd reads local sources:
///
/// | source        | file            | relative path (after the key prefix) |
/// |---------------|-----------------|--------------------------------------|
/// | `dir`         | `dir/sub/a.bin` | `dir/sub/a.bin`                      |
/// | `dir/`        | `dir/sub/a.bin` | `sub/a.bin`                          |
/// | `'dir/*.bin'` | `dir/a.bin`     | `a.bin` (`*` stays within one name)  |
/// | `'dir/s*'`    | `dir/sub/a.bin` | `sub/a.bin` (matched directories are taken whole) |
/// | `file.bin`    | `file.bin`      | `file.bin`                           |
///
/// Symlinks are followed (to files and directories, loops skipped) unless
/// `follow` is false, in which case they are left out. s3load's own files (its
/// `.s3load/` record at the base, temporary and resume files) are never selected.
/// A missing source is an error. Sorted by `rel`.
pub fn walk_source(spec: &str, follow: bool) -> Result<Vec<SourceFile>, Error> {
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
    let mut out = Vec::new();
    if meta.is_file() {
        let name =
            keep_name.unwrap_or_else(|| base.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default());
        out.push(SourceFile { rel: name, path: base.clone(), size: meta.len(), mtime: meta.modified().ok() });
        return Ok(out);
    }
    let prefix = keep_name.map(|n| format!("{n}/")).unwrap_or_default();
    let mut seen = std::collections::HashSet::new();
    walk_into(&base, String::new(), follow, &mut seen, &mut |rel, path, m| {
        if rel.split('/').next() == Some(crate::state::STATE_DIR) {
            return;
        }
        if let Some(re) = &pattern {
            // The file matches, or one of the directories above it does.
            let hit = rel.match_indices('/').map(|(i, _)| &rel[..i]).chain([rel]).any(|p| re.is_match(p));
            if !hit {
                return;
            }
        }
        out.push(SourceFile { rel: format!("{prefix}{rel}"), path, size: m.len(), mtime: m.modified().ok() });
    })?;
    out.sort_unstable_by(|a, b| a.rel.cmp(&b.rel));
    Ok(out)
}

/// A local wildcard: `*` and `?` stay within one path component, as shells and
/// s5cmd's local globbing have it.
fn component_wildcard(pattern: &str) -> Result<regex::Regex, Error> {
    crate::url::glob_regex(pattern, false).map_err(|e| Error::Usage(format!("{pattern:?}: bad wildcard: {e}")))
}

type Visit<'a> = dyn FnMut(&str, std::path::PathBuf, &std::fs::Metadata) + 'a;

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
    entries.sort_by_key(|e| e.file_name());
    for entry in entries {
        let name = entry.file_name();
        let Some(name) = name.to_str() else {
            tracing::warn!(path = %entry.path().display(), "file name is not UTF-8; S3 keys must be: skipped");
            continue;
        };
        let child_rel = if rel.is_empty() { name.to_string() } else { format!("{rel}/{name}") };
        let path = entry.path();
        let ft = entry.file_type().map_err(|e| Error::io(&path, "reading file type", e))?;
        let meta = if ft.is_symlink() {
            if !follow {
                continue;
            }
            match std::fs::metadata(&path) {
                Ok(m) => m,
                Err(e) => {
                    tracing::warn!(path = %path.display(), error = %e, "broken symlink: skipped");
                    continue;
                }
            }
        } else {
            entry.metadata().map_err(|e| Error::io(&path, "reading metadata", e))?
        };
        if meta.is_dir() {
            walk_into(&path, child_rel, follow, seen, visit)?;
        } else if meta.is_file() && !is_temp_name(name) {
            visit(&child_rel, path, &meta);
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rels(v: &[SourceFile]) -> Vec<&str> {
        v.iter().map(|f| f.rel.as_str()).collect()
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
        assert_eq!(rels(&walk_source(&p, false).unwrap()), vec!["real/f"]);
    }
}
