//! Mapping a key (relative to the source) to a path below the destination, safely.
//!
//! A key becomes a relative path by splitting on `/`. The mapping is refused, with a
//! reason, when any component is empty (`a//b`, a leading `/`), `.` or `..`, contains
//! NUL, or is longer than a file name may be (255 bytes). This keeps every write
//! inside the destination directory whatever the keys are. Keys ending in `/` are
//! directory markers: they carry no file and are skipped.

use crate::refusal::KeyProblem;
use std::path::PathBuf;

/// Longest file name most Linux filesystems accept.
const NAME_MAX: usize = 255;

/// What a relative key maps to.
#[derive(Debug, PartialEq, Eq)]
pub enum Mapped {
    File(PathBuf),
    /// `dir/` marker object (or the prefix itself): nothing to write.
    DirMarker,
}

pub fn map_key(rel: &str) -> Result<Mapped, KeyProblem> {
    if rel.is_empty() || rel.ends_with('/') {
        return Ok(Mapped::DirMarker);
    }
    if rel.split('/').next() == Some(crate::state::STATE_DIR) {
        return Err(KeyProblem::Reserved { name: crate::state::STATE_DIR });
    }
    if rel.rsplit('/').next().is_some_and(crate::localfs::is_temp_name) {
        return Err(KeyProblem::LikeOwnFiles);
    }
    let mut path = PathBuf::new();
    for comp in rel.split('/') {
        let why = match comp {
            "" => Some("an empty path component (leading '/' or '//')"),
            "." | ".." => Some("a '.' or '..' component, which could escape the destination"),
            c if c.contains('\0') => Some("a NUL character"),
            c if c.len() > NAME_MAX => Some("a path component longer than 255 bytes"),
            _ => None,
        };
        if let Some(has) = why {
            return Err(KeyProblem::UnsafePath { has });
        }
        path.push(comp);
    }
    Ok(Mapped::File(path))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ordinary_keys_map_component_by_component() {
        assert_eq!(map_key("a/b/c.bin"), Ok(Mapped::File(PathBuf::from("a/b/c.bin"))));
        assert_eq!(map_key("weights-00001.safetensors"), Ok(Mapped::File(PathBuf::from("weights-00001.safetensors"))));
    }

    #[test]
    fn escaping_keys_are_refused() {
        for k in ["../x", "a/../../x", "/abs", "a//b", "./x", "a/..", "x\0y"] {
            assert!(map_key(k).is_err(), "{k:?} must be refused");
        }
        assert!(map_key(&"n".repeat(256)).is_err());
        assert!(map_key(".s3load/state").is_err(), "the record's directory is reserved");
        assert!(map_key("sub/.s3load/state").is_ok(), "only at the root");
    }

    #[test]
    fn keys_named_like_s3loads_temporary_files_are_refused() {
        for k in [
            ".w.bin.s3load-resume",
            "sub/.w.bin.s3load-journal",
            ".x.0123.s3load-tmp",
            ".w.bin.0123456789abcdef.s3load-split",
            "sub/.w.bin.0123456789abcdef.2.s3load-piece",
        ] {
            let why = map_key(k).unwrap_err();
            assert_eq!(why, KeyProblem::LikeOwnFiles, "{k}");
            assert!(why.to_string().contains("temporary"), "{k}: {why}");
        }
        assert!(map_key("w.bin.s3load-resume").is_ok(), "no leading dot: no clash");
        assert!(map_key(".hidden").is_ok());
    }

    #[test]
    fn directory_markers_write_nothing() {
        assert_eq!(map_key("dir/"), Ok(Mapped::DirMarker));
        assert_eq!(map_key(""), Ok(Mapped::DirMarker));
    }
}
