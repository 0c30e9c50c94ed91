//! The sync decision: a pure function over two sorted listings.
//!
//! Source entries (objects, by path relative to the source) and destination
//! entries (local files, by path relative to the destination) are merged like
//! rclone's march: each path is source-only (copy), both (compare) or
//! destination-only (reported, for `--delete` to act on in a later step).
//!
//! The comparison for a path in both follows s5cmd: copy when the sizes differ or
//! the object is newer than the file; `--size-only` compares sizes alone. s3load
//! sets a downloaded file's mtime to the object's LastModified, so a re-sync of an
//! unchanged tree copies nothing.

use std::cmp::Ordering;
use std::time::SystemTime;

use super::local::LocalEntry;

/// A source-side entry to compare.
#[derive(Debug, Clone)]
pub struct SourceEntry<'a> {
    pub rel: &'a str,
    pub size: u64,
    pub mtime: Option<SystemTime>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Compare {
    /// Size differs, or the source is newer (s5cmd's default).
    #[default]
    SizeAndTime,
    /// Size differs (`--size-only`).
    SizeOnly,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Reason {
    Missing,
    SizeDiffers,
    SourceNewer,
}

#[derive(Debug, Default, PartialEq, Eq)]
pub struct Diff {
    /// (source index, why)
    pub copy: Vec<(usize, Reason)>,
    /// Source indexes already up to date.
    pub skip: Vec<usize>,
    /// Destination indexes with no source counterpart.
    pub dest_only: Vec<usize>,
}

/// Both slices must be sorted by `rel` (byte order).
pub fn diff(src: &[SourceEntry<'_>], dst: &[LocalEntry], cmp: Compare) -> Diff {
    let mut d = Diff::default();
    let (mut i, mut j) = (0, 0);
    while i < src.len() || j < dst.len() {
        let ord = match (src.get(i), dst.get(j)) {
            (Some(s), Some(l)) => s.rel.cmp(l.rel.as_str()),
            (Some(_), None) => Ordering::Less,
            (None, _) => Ordering::Greater,
        };
        match ord {
            Ordering::Less => {
                d.copy.push((i, Reason::Missing));
                i += 1;
            }
            Ordering::Greater => {
                d.dest_only.push(j);
                j += 1;
            }
            Ordering::Equal => {
                let (s, l) = (&src[i], &dst[j]);
                let newer = matches!((s.mtime, l.mtime), (Some(a), Some(b)) if a > b);
                match (s.size != l.size, cmp) {
                    (true, _) => d.copy.push((i, Reason::SizeDiffers)),
                    (false, Compare::SizeAndTime) if newer => d.copy.push((i, Reason::SourceNewer)),
                    _ => d.skip.push(i),
                }
                i += 1;
                j += 1;
            }
        }
    }
    d
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    fn t(s: u64) -> Option<SystemTime> {
        Some(SystemTime::UNIX_EPOCH + Duration::from_secs(s))
    }
    fn l(rel: &str, size: u64, m: u64) -> LocalEntry {
        LocalEntry { rel: rel.into(), size, mtime: t(m) }
    }
    fn s(rel: &str, size: u64, m: u64) -> SourceEntry<'_> {
        SourceEntry { rel, size, mtime: t(m) }
    }

    #[test]
    fn merge_classifies_every_path_once() {
        let src = [s("a", 1, 10), s("b", 2, 10), s("c", 3, 20), s("d", 4, 10)];
        let dst = [l("b", 2, 10), l("c", 3, 10), l("d", 5, 10), l("e", 1, 1)];
        let d = diff(&src, &dst, Compare::SizeAndTime);
        assert_eq!(d.copy, vec![(0, Reason::Missing), (2, Reason::SourceNewer), (3, Reason::SizeDiffers)]);
        assert_eq!(d.skip, vec![1]);
        assert_eq!(d.dest_only, vec![3]);
    }

    #[test]
    fn size_only_ignores_times() {
        let src = [s("c", 3, 20)];
        let dst = [l("c", 3, 10)];
        assert_eq!(diff(&src, &dst, Compare::SizeOnly).skip, vec![0]);
    }

    #[test]
    fn older_source_with_same_size_is_skipped() {
        let d = diff(&[s("x", 3, 5)], &[l("x", 3, 10)], Compare::SizeAndTime);
        assert_eq!(d.skip, vec![0]);
    }

    #[test]
    fn slash_and_dash_sort_the_same_on_both_sides() {
        // "test-1" < "test/a" in byte order; a naive per-directory walk would differ.
        let src = [s("test-1", 1, 1), s("test/a", 1, 1)];
        let dst = [l("test-1", 1, 1), l("test/a", 1, 1)];
        let d = diff(&src, &dst, Compare::SizeAndTime);
        assert_eq!(d.skip, vec![0, 1]);
        assert!(d.copy.is_empty() && d.dest_only.is_empty());
    }

    #[test]
    fn empty_sides() {
        assert_eq!(diff(&[], &[l("a", 1, 1)], Compare::SizeAndTime).dest_only, vec![0]);
        assert_eq!(diff(&[s("a", 1, 1)], &[], Compare::SizeAndTime).copy, vec![(0, Reason::Missing)]);
    }
}
