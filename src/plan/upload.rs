//! What an upload does, decided without I/O: which local files this run
//! uploads, which are up to date, and which objects `--delete` removes. In
//! two steps, as the command needs them: [`source`] before anything is asked
//! of the store (so an empty or wrong source connects to nothing), [`plan`]
//! once the destination is listed.

use super::delete;
use super::diff::{Compare, SourceEntry, diff, no_records};
use super::filter::Filters;
use super::local::{DestEntry, Skipped, SourceFile};
use crate::shard::{self, Shard};

/// Why there is no upload to make.
#[derive(Debug, PartialEq, Eq)]
pub enum NoPlan {
    /// No file matched (`--allow-empty-source` not given).
    Empty,
    /// `--delete` with a single file, which does not stand for the objects
    /// beside it.
    DeleteOneFile,
}

/// The files the filters select; refused when none is (unless `allow_empty`)
/// or when `delete` is asked of a single file (`single_file`: the source is
/// one file, not a directory or wildcard).
pub fn source(
    mut files: Vec<SourceFile>,
    filters: &Filters,
    allow_empty: bool,
    delete: bool,
    single_file: bool,
) -> Result<Vec<SourceFile>, NoPlan> {
    files.retain(|f| filters.selects(&f.rel));
    if files.is_empty() && !allow_empty {
        return Err(NoPlan::Empty);
    }
    if delete && single_file {
        return Err(NoPlan::DeleteOneFile);
    }
    Ok(files)
}

/// The run's choices that the plan depends on.
#[derive(Debug, Clone, Copy)]
pub struct Options<'a> {
    pub filters: &'a Filters,
    /// `None`: `cp`, which uploads every selected file.
    pub compare: Option<Compare>,
    /// `--delete`.
    pub delete: bool,
    pub shard: Option<Shard>,
}

/// An upload, decided.
#[derive(Debug)]
pub struct UploadPlan {
    /// Indexes into the files given, this run's share of those that differ.
    pub upload: Vec<usize>,
    /// Files of this run's share already at the destination.
    pub up_to_date: usize,
    /// Paths below the prefix this run deletes.
    pub deletes: Vec<String>,
    /// Deletions held back, by skipped entry (an index into `skipped`) and
    /// how many: that entry (a broken or left-out symlink, a name that is not
    /// UTF-8) may be what those objects came from.
    pub held: Vec<(usize, usize)>,
}

/// Decides an upload of `files` (sorted by path) to a destination holding
/// `remote` (paths relative to the prefix, sorted, within the source's scope).
pub fn plan(files: &[SourceFile], remote: &[DestEntry], skipped: &[Skipped], opts: &Options<'_>) -> UploadPlan {
    let (selected, dest_only): (Vec<usize>, Vec<usize>) = match opts.compare {
        None => ((0..files.len()).collect(), Vec::new()),
        Some(compare) => {
            let entries: Vec<SourceEntry<'_>> = files
                .iter()
                .map(|f| SourceEntry { rel: &f.rel, size: f.size, mtime: f.mtime, etag: None, source: ("", "") })
                .collect();
            let d = diff(&entries, remote, compare, &no_records);
            (d.copy.iter().map(|&(i, _)| i).collect(), d.dest_only)
        }
    };
    // This run's share, from the local listing alone; whole files only
    // (pieces of one upload from several pods would need one multipart upload
    // shared between them).
    let all: Vec<(&str, u64)> = files.iter().map(|f| (f.rel.as_str(), f.size)).collect();
    let (selected, up_to_date) = shard::cut(opts.shard, &all, selected, None, |&i| files[i].rel.as_str());
    let upload = selected.into_iter().map(|(i, _)| i).collect();
    let (deletes, held) = if opts.delete && opts.compare.is_some() {
        // Keys are compared byte for byte: no case or Unicode lookalikes.
        let sources = files.iter().map(|f| f.rel.as_str());
        let p = delete::plan(sources, dest_only.iter().map(|&i| remote[i].rel.as_str()), opts.filters, false);
        // Each stale key is deleted by one shard.
        let mine = p.delete.into_iter().filter(|rel| opts.shard.is_none_or(|s| s.deletes(rel)));
        hold_back_shadowed(mine, skipped)
    } else {
        (Vec::new(), Vec::new())
    };
    UploadPlan { upload, up_to_date, deletes, held }
}

/// Splits deletion candidates into those that may go and those a skipped
/// local entry may stand for.
fn hold_back_shadowed(
    candidates: impl Iterator<Item = String>,
    skipped: &[Skipped],
) -> (Vec<String>, Vec<(usize, usize)>) {
    let mut held: Vec<usize> = vec![0; skipped.len()];
    let mut deletes = Vec::new();
    for rel in candidates {
        match skipped.iter().position(|s| s.shadows(&rel)) {
            Some(i) => held[i] += 1,
            None => deletes.push(rel),
        }
    }
    (deletes, held.into_iter().enumerate().filter(|&(_, n)| n > 0).collect())
}

#[cfg(test)]
mod tests {
    use std::time::{Duration, SystemTime, UNIX_EPOCH};

    use super::*;

    fn at(secs: u64) -> Option<SystemTime> {
        Some(UNIX_EPOCH + Duration::from_secs(secs))
    }

    fn files(list: &[(&str, u64)]) -> Vec<SourceFile> {
        list.iter()
            .map(|&(rel, size)| SourceFile {
                rel: rel.into(),
                path: format!("/src/{rel}").into(),
                size,
                mtime: at(100),
                id: None,
            })
            .collect()
    }

    fn remote(list: &[(&str, u64)]) -> Vec<DestEntry> {
        list.iter().map(|&(rel, size)| DestEntry { rel: rel.into(), size, mtime: at(100) }).collect()
    }

    fn no_filters() -> Filters {
        Filters::new(&[], &[]).unwrap()
    }

    fn sync(filters: &Filters, delete: bool) -> Options<'_> {
        Options { filters, compare: Some(Compare::SizeAndTime), delete, shard: None }
    }

    fn uploaded(f: &[SourceFile], p: &UploadPlan) -> Vec<String> {
        p.upload.iter().map(|&i| f[i].rel.clone()).collect()
    }

    #[test]
    fn the_source_is_filtered_and_an_empty_one_or_a_single_file_with_delete_is_refused() {
        let only_bin = Filters::new(&["*.bin".to_string()], &[]).unwrap();
        let kept = source(files(&[("a.bin", 1), ("b.json", 1)]), &only_bin, false, false, false).unwrap();
        assert_eq!(kept.len(), 1);
        let only_txt = Filters::new(&["*.txt".to_string()], &[]).unwrap();
        assert_eq!(source(files(&[("a.bin", 1)]), &only_txt, false, false, false).unwrap_err(), NoPlan::Empty);
        assert!(source(files(&[("a.bin", 1)]), &only_txt, true, true, false).unwrap().is_empty());
        let f = no_filters();
        assert_eq!(source(files(&[("a.bin", 1)]), &f, false, true, true).unwrap_err(), NoPlan::DeleteOneFile);
        assert!(source(files(&[("a.bin", 1)]), &f, false, false, true).is_ok());
    }

    #[test]
    fn cp_uploads_everything_and_sync_what_is_missing_or_differs() {
        let f = no_filters();
        let local = files(&[("a", 1), ("b", 2), ("c", 3)]);
        let there = remote(&[("a", 1), ("b", 5)]);
        let cp = plan(&local, &there, &[], &Options { compare: None, ..sync(&f, false) });
        assert_eq!(uploaded(&local, &cp), ["a", "b", "c"]);
        assert_eq!(cp.up_to_date, 0);
        let p = plan(&local, &there, &[], &sync(&f, false));
        assert_eq!(uploaded(&local, &p), ["b", "c"]);
        assert_eq!(p.up_to_date, 1);
        assert!(p.deletes.is_empty());
    }

    #[test]
    fn delete_removes_what_the_source_lacks_within_the_filters_byte_for_byte() {
        let f = Filters::new(&[], &["*.keep".to_string()]).unwrap();
        let local = files(&[("w.bin", 1)]);
        let there = remote(&[("W.BIN", 1), ("notes.keep", 1), ("stale", 1), ("w.bin", 1)]);
        let p = plan(&local, &there, &[], &sync(&f, true));
        assert!(p.upload.is_empty());
        // Keys differing by case are other keys: deleted.
        assert_eq!(p.deletes, ["W.BIN", "stale"]);
        let cp = plan(&local, &there, &[], &Options { compare: None, ..sync(&f, true) });
        assert!(cp.deletes.is_empty(), "cp deletes nothing");
    }

    #[test]
    fn what_a_skipped_entry_may_stand_for_is_held_back() {
        let f = no_filters();
        let local = files(&[("a", 1)]);
        let there = remote(&[("a", 1), ("link", 1), ("lost/x", 1), ("lost/y", 1), ("stale", 1)]);
        let skipped = [
            Skipped { rel: "lost".into(), why: "unreadable".into(), deliberate: false, not_a_file: false },
            Skipped { rel: "link".into(), why: "left out".into(), deliberate: true, not_a_file: false },
            Skipped { rel: "other".into(), why: "unreadable".into(), deliberate: false, not_a_file: false },
        ];
        let p = plan(&local, &there, &skipped, &sync(&f, true));
        assert_eq!(p.deletes, ["stale"]);
        assert_eq!(p.held, [(0, 2), (1, 1)]);
    }

    #[test]
    fn shards_split_the_uploads_and_the_deletions() {
        let f = no_filters();
        let names: Vec<String> = (0..30).map(|i| format!("f{i:02}")).collect();
        let list: Vec<(&str, u64)> = names.iter().map(|n| (n.as_str(), 100)).collect();
        let local = files(&list);
        let stale: Vec<String> = (0..12).map(|i| format!("stale{i:02}")).collect();
        let there = remote(&stale.iter().map(|s| (s.as_str(), 1)).collect::<Vec<_>>());
        let (mut up, mut del) = (Vec::new(), Vec::new());
        for k in 0..3 {
            let opts = Options { shard: Some(Shard::parse(&format!("{k}/3")).unwrap()), ..sync(&f, true) };
            let p = plan(&local, &there, &[], &opts);
            assert!(p.upload.len() < 30);
            up.extend(uploaded(&local, &p));
            del.extend(p.deletes);
        }
        up.sort();
        del.sort();
        assert_eq!(up, names);
        assert_eq!(del, stale);
    }
}
