//! The sync decision: a pure function over two sorted listings.
//!
//! Source entries (objects, by path relative to the source) and destination
//! entries (local files, by path relative to the destination) are merged like
//! rclone's march: each path is source-only (copy), both (compare) or
//! destination-only (reported, for `--delete` to act on in a later step).
//!
//! For a path in both, a record of what s3load wrote there (see [`crate::state`])
//! decides by content identity: copy when the file no longer has the size and
//! mtime recorded (changed by hand), or when the object is not the one recorded
//! (another ETag or size: replaced, even with an older LastModified). Without a
//! record (first run, a tree filled by another tool, another source) the rule is
//! s5cmd's: copy when the sizes differ or the object is newer than the file.
//! `--size-only` compares sizes alone, records or not. s3load sets a downloaded
//! file's mtime to the object's LastModified, so a re-sync of an unchanged tree
//! copies nothing either way; neither rule reads file contents.

use std::cmp::Ordering;
use std::time::SystemTime;

use super::local::DestEntry;
use crate::state::{Record, to_ns};

/// A source-side entry to compare.
#[derive(Debug, Clone)]
pub struct SourceEntry<'a> {
    pub rel: &'a str,
    pub size: u64,
    pub mtime: Option<SystemTime>,
    pub etag: Option<&'a str>,
    /// `s3://bucket/key` (or the local path, uploading), in two pieces joined
    /// (`s3://bucket/` and the key), so that a million listed objects need no
    /// million URLs built: records name their source.
    pub source: (&'a str, &'a str),
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
    /// The object is not the one the record says the file was written from.
    SourceReplaced,
    /// The file no longer has the size and mtime recorded after it was written.
    LocalChanged,
}

#[derive(Debug, Default, PartialEq, Eq)]
pub struct Diff {
    /// (source index, why)
    pub copy: Vec<(usize, Reason)>,
    /// How many source entries are up to date.
    pub up_to_date: usize,
    /// Destination indexes with no source counterpart.
    pub dest_only: Vec<usize>,
}

/// No records: s5cmd's rule for every path.
pub fn no_records(_: &str) -> Option<Record> {
    None
}

/// Both slices must be sorted by `rel` (byte order). `recorded` gives the
/// destination's record for a path.
pub fn diff(
    src: &[SourceEntry<'_>],
    dst: &[DestEntry],
    cmp: Compare,
    recorded: &dyn Fn(&str) -> Option<Record>,
) -> Diff {
    diff_by(src.len(), &|i| src[i].clone(), &mut dst.iter().cloned(), cmp, recorded, &mut |_, _| {})
}

/// [`diff`] of `n` source entries made one at a time by `src` (in `rel`
/// order) and destination entries taken one at a time from `dst` (in `rel`
/// order), so that a million of either are never held at once. `seen` is
/// given each destination entry, and whether the source has its path.
pub fn diff_by<'a>(
    n: usize,
    src: &dyn Fn(usize) -> SourceEntry<'a>,
    dst: &mut dyn Iterator<Item = DestEntry>,
    cmp: Compare,
    recorded: &dyn Fn(&str) -> Option<Record>,
    seen: &mut dyn FnMut(DestEntry, bool),
) -> Diff {
    let mut d = Diff::default();
    let (mut i, mut j) = (0, 0);
    let mut local = dst.next();
    while i < n || local.is_some() {
        let entry = (i < n).then(|| src(i));
        let ord = match (&entry, &local) {
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
                if let Some(l) = local.take() {
                    seen(l, false);
                }
                local = dst.next();
                j += 1;
            }
            Ordering::Equal => {
                let (Some(s), Some(l)) = (&entry, local.take()) else { unreachable!("equal to a source entry") };
                match judge(s, &l, cmp, recorded) {
                    Some(why) => d.copy.push((i, why)),
                    None => d.up_to_date += 1,
                }
                seen(l, true);
                local = dst.next();
                i += 1;
                j += 1;
            }
        }
    }
    d
}

/// Why a path in both must be copied, or `None` when it is up to date.
fn judge(
    s: &SourceEntry<'_>,
    l: &DestEntry,
    cmp: Compare,
    recorded: &dyn Fn(&str) -> Option<Record>,
) -> Option<Reason> {
    if cmp == Compare::SizeAndTime
        && let Some(r) = recorded(s.rel).filter(|r| r.source.strip_prefix(s.source.0) == Some(s.source.1))
    {
        let unchanged = l.size == r.size && l.mtime.map(to_ns) == Some(r.mtime_ns);
        return if !unchanged {
            Some(Reason::LocalChanged)
        } else if s.size != r.size || s.etag != r.etag.as_deref() || s.etag.is_none() {
            Some(Reason::SourceReplaced)
        } else {
            None
        };
    }
    let newer = matches!((s.mtime, l.mtime), (Some(a), Some(b)) if a > b);
    match (s.size != l.size, cmp) {
        (true, _) => Some(Reason::SizeDiffers),
        (false, Compare::SizeAndTime) if newer => Some(Reason::SourceNewer),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn a_suspect_record_makes_the_file_be_fetched_again() {
        let t = SystemTime::UNIX_EPOCH + Duration::from_secs(1_000_000);
        let src = [SourceEntry { rel: "a", size: 3, mtime: Some(t), etag: Some("e"), source: ("s3://b/", "a") }];
        let local = [DestEntry { rel: "a".into(), size: 3, mtime: Some(t) }];
        let rec = |mtime_ns| Record {
            path: "a".into(),
            removed: false,
            size: 3,
            mtime_ns,
            source: "s3://b/a".into(),
            etag: Some("e".into()),
            version_id: None,
            checksum: None,
            last_modified_ns: None,
            boot: None,
        };
        let trusted = diff(&src, &local, Compare::SizeAndTime, &|_| Some(rec(to_ns(t))));
        assert!(trusted.copy.is_empty());
        let suspect = diff(&src, &local, Compare::SizeAndTime, &|_| Some(rec(crate::state::SUSPECT_MTIME)));
        assert_eq!(suspect.copy, vec![(0, Reason::LocalChanged)]);
    }

    fn t(s: u64) -> Option<SystemTime> {
        Some(SystemTime::UNIX_EPOCH + Duration::from_secs(s))
    }
    fn l(rel: &str, size: u64, m: u64) -> DestEntry {
        DestEntry { rel: rel.into(), size, mtime: t(m) }
    }
    fn s(rel: &str, size: u64, m: u64) -> SourceEntry<'_> {
        SourceEntry { rel, size, mtime: t(m), etag: Some("e1"), source: ("", rel) }
    }
    fn rec(rel: &str, size: u64, m: u64, etag: &str) -> Record {
        Record {
            path: rel.into(),
            removed: false,
            size,
            mtime_ns: i128::from(m) * 1_000_000_000,
            source: rel.into(),
            etag: Some(etag.into()),
            version_id: None,
            checksum: None,
            last_modified_ns: None,
            boot: None,
        }
    }

    #[test]
    fn merge_classifies_every_path_once() {
        let src = [s("a", 1, 10), s("b", 2, 10), s("c", 3, 20), s("d", 4, 10)];
        let dst = [l("b", 2, 10), l("c", 3, 10), l("d", 5, 10), l("e", 1, 1)];
        let d = diff(&src, &dst, Compare::SizeAndTime, &no_records);
        assert_eq!(d.copy, vec![(0, Reason::Missing), (2, Reason::SourceNewer), (3, Reason::SizeDiffers)]);
        assert_eq!(d.up_to_date, 1);
        assert_eq!(d.dest_only, vec![3]);
    }

    #[test]
    fn size_only_ignores_times() {
        let src = [s("c", 3, 20)];
        let dst = [l("c", 3, 10)];
        assert_eq!(diff(&src, &dst, Compare::SizeOnly, &no_records).up_to_date, 1);
    }

    #[test]
    fn older_source_with_same_size_is_skipped() {
        let d = diff(&[s("x", 3, 5)], &[l("x", 3, 10)], Compare::SizeAndTime, &no_records);
        assert_eq!(d.up_to_date, 1);
    }

    #[test]
    fn slash_and_dash_sort_the_same_on_both_sides() {
        // "test-1" < "test/a" in byte order; a naive per-directory walk would differ.
        let src = [s("test-1", 1, 1), s("test/a", 1, 1)];
        let dst = [l("test-1", 1, 1), l("test/a", 1, 1)];
        let d = diff(&src, &dst, Compare::SizeAndTime, &no_records);
        assert_eq!(d.up_to_date, 2);
        assert!(d.copy.is_empty() && d.dest_only.is_empty());
    }

    #[test]
    fn empty_sides() {
        assert_eq!(diff(&[], &[l("a", 1, 1)], Compare::SizeAndTime, &no_records).dest_only, vec![0]);
        assert_eq!(diff(&[s("a", 1, 1)], &[], Compare::SizeAndTime, &no_records).copy, vec![(0, Reason::Missing)]);
    }

    #[test]
    fn a_record_detects_a_replaced_object_of_the_same_size_even_when_older() {
        // Local file written at t=10 from ETag e0; the object now has ETag e1, the
        // same size and an older LastModified (a re-trained shard copied in with
        // its original time): s5cmd's rule would skip it.
        let src = [s("w", 3, 5)];
        let dst = [l("w", 3, 10)];
        let recorded = |p: &str| (p == "w").then(|| rec("w", 3, 10, "e0"));
        let d = diff(&src, &dst, Compare::SizeAndTime, &recorded);
        assert_eq!(d.copy, vec![(0, Reason::SourceReplaced)]);
        // The same object as recorded: up to date.
        let same = |p: &str| (p == "w").then(|| rec("w", 3, 10, "e1"));
        assert_eq!(diff(&src, &dst, Compare::SizeAndTime, &same).up_to_date, 1);
    }

    #[test]
    fn a_record_detects_a_file_changed_by_hand() {
        let src = [s("w", 3, 5)];
        let recorded = |_: &str| Some(rec("w", 3, 10, "e1"));
        let touched = [l("w", 3, 11)];
        assert_eq!(diff(&src, &touched, Compare::SizeAndTime, &recorded).copy, vec![(0, Reason::LocalChanged)]);
    }

    #[test]
    fn a_record_of_another_source_is_not_used() {
        let src = [s("w", 3, 5)];
        let dst = [l("w", 3, 10)];
        let other = |_: &str| Some(Record { source: "s3://other/w".into(), ..rec("w", 3, 10, "e0") });
        assert_eq!(diff(&src, &dst, Compare::SizeAndTime, &other).up_to_date, 1);
    }

    #[test]
    fn size_only_ignores_records() {
        let recorded = |_: &str| Some(rec("w", 3, 10, "e0"));
        assert_eq!(diff(&[s("w", 3, 5)], &[l("w", 3, 10)], Compare::SizeOnly, &recorded).up_to_date, 1);
    }
}
