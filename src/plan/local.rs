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
