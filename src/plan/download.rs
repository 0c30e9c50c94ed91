//! What a download does, decided in one place without I/O: which listed
//! objects this run fetches (and in what order, and which piece of a split
//! one), which are up to date, which local files `--delete` removes, and which
//! keys are refused. The command gathers the inputs (the listing, a walk of
//! the destination, the sync record, what the destination's filesystem tells
//! apart) and acts on the plan; every rule here is unit-tested without a
//! server or a disk.

use super::diff::{Compare, SourceEntry, diff_by};
use super::filter::Filters;
use super::local::DestEntry;
use super::{Objects, RefusedKey, SourceListing, delete, refuse_name_collisions};
use crate::localfs::NameFolding;
use crate::model;
use crate::refusal::Refusal;
use crate::shard::{self, Piece, Shard};
use crate::state::Record;
use crate::url::S3Url;

/// What `sync` adds to `cp` in the plan.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SyncRule {
    pub compare: Compare,
    /// `--delete`: local files the source lacks are removed (batch runs).
    pub delete: bool,
    /// `--allow-empty-source`.
    pub allow_empty: bool,
}

/// The run's choices that the plan depends on.
#[derive(Debug, Clone, Copy)]
pub struct Options<'a> {
    /// A prefix or wildcard into a directory (not one object to one file).
    pub batch: bool,
    pub filters: &'a Filters,
    /// `None`: `cp`, which copies every selected object.
    pub sync: Option<SyncRule>,
    /// How the destination's filesystem compares names, where it was asked
    /// (`None`: not asked, as in a dry run or a destination still to create).
    pub folding: Option<NameFolding>,
    /// `--shard K/N`.
    pub shard: Option<Shard>,
    /// With a shard: objects of at least this size that are also larger than
    /// a fair share are split across the shards.
    pub split_min: Option<u64>,
    /// Weight indexes (`*.index.json`) are checked after the run.
    pub check_indexes: bool,
}

/// A download, decided.
#[derive(Debug)]
pub struct DownloadPlan {
    /// The listing, filtered: `fetch` and `indexes` are indexes into it.
    pub objects: Objects,
    /// What this run fetches, smallest first (then by path), each with this
    /// shard's piece when the object is split across shards.
    pub fetch: Vec<(usize, Option<Piece>)>,
    /// Objects of this run's share already at the destination.
    pub up_to_date: usize,
    /// Local paths (relative) this run deletes with `--delete`.
    pub deletes: Vec<String>,
    /// Deletions of the whole run, every shard's (for `--max-delete`).
    pub run_deletes: usize,
    /// Local paths kept although the source lacks them: their names differ
    /// from a source path (the second) only by case or Unicode form.
    pub lookalikes: Vec<(String, String)>,
    /// Keys that cannot be files here, each failing the run by name.
    pub refused: Vec<RefusedKey>,
    /// Weight indexes of the source, checked after the run.
    pub indexes: Vec<usize>,
}

/// Why there is no plan.
#[derive(Debug, PartialEq, Eq)]
pub enum NoPlan {
    /// Nothing in the source matched (after the filters, when `filtered`).
    Empty { filtered: bool },
    /// `--delete` needs a prefix or wildcard into a directory.
    DeleteOneObject,
}

/// Decides a download. `local` yields the destination's files sorted by path
/// (a batch run's walk, or the one file a single object lands on; nothing
/// for `cp`); `recorded` answers from the sync record; `seen` hears of every
/// local file the walk passed (the record uses it to forget removed files).
pub fn plan(
    mut listed: SourceListing,
    src: &S3Url,
    local: &mut dyn Iterator<Item = DestEntry>,
    recorded: &dyn Fn(&str) -> Option<Record>,
    seen: &mut dyn FnMut(&str),
    opts: &Options<'_>,
) -> Result<DownloadPlan, NoPlan> {
    listed.objects.retain(|_, o| opts.filters.selects(o.rel));
    listed.refused.retain(|r| opts.filters.selects(src.relative(&r.key)));
    let allow_empty = opts.sync.is_some_and(|s| s.allow_empty);
    if listed.objects.is_empty() && listed.refused.is_empty() && !allow_empty {
        return Err(NoPlan::Empty { filtered: !opts.filters.is_empty() });
    }
    let delete = opts.sync.is_some_and(|s| s.delete);
    if delete && !opts.batch {
        return Err(NoPlan::DeleteOneObject);
    }
    if let Some(folding) = opts.folding.filter(|_| opts.batch) {
        refuse_name_collisions(&mut listed, folding);
    }
    let objects = &listed.objects;

    // What differs from the destination (sync), or everything (cp).
    let (selected, dest_only): (Vec<usize>, Vec<String>) = match opts.sync {
        None => ((0..objects.len()).collect(), Vec::new()),
        Some(rule) => {
            let bucket_url = src.object_url("");
            let entry = |i: usize| {
                let o = objects.get(i);
                SourceEntry {
                    rel: o.rel,
                    size: o.size,
                    mtime: o.last_modified,
                    etag: o.etag,
                    source: (&bucket_url, o.key),
                }
            };
            let mut only = Vec::new();
            let mut saw = |l: DestEntry, in_source: bool| {
                seen(&l.rel);
                if delete && !in_source {
                    only.push(l.rel);
                }
            };
            let d = diff_by(objects.len(), &entry, local, rule.compare, recorded, &mut saw);
            for &(i, why) in &d.copy {
                tracing::debug!(path = %objects.rel(i), reason = ?why, "to copy");
            }
            (d.copy.iter().map(|&(i, _)| i).collect(), only)
        }
    };

    // This run's share: cut from the whole listing, before the comparison
    // counts, so that every shard computes the same partition.
    let (mut fetch, up_to_date) = match opts.shard {
        Some(_) => {
            let all: Vec<(&str, u64)> = (0..objects.len()).map(|i| (objects.rel(i), objects.size(i))).collect();
            shard::cut(opts.shard, &all, selected, opts.split_min, |&i| objects.rel(i))
        }
        // What `shard::cut` does without a shard, without building `all`
        // (a million listed paths) for nothing.
        None => (selected.iter().map(|&i| (i, None)).collect(), objects.len() - selected.len()),
    };

    // --delete: what the source lacks, within the filters; each stale path
    // deleted by one shard, counted for the whole run.
    let (deletes, run_deletes, lookalikes) = if delete {
        let p = delete::plan(objects.iter().map(|o| o.rel), dest_only.iter().map(String::as_str), opts.filters, true);
        let run_deletes = p.delete.len();
        let mine = p.delete.into_iter().filter(|rel| opts.shard.is_none_or(|s| s.deletes(rel))).collect();
        (mine, run_deletes, p.lookalikes)
    } else {
        (Vec::new(), 0, Vec::new())
    };

    // Small files first (configs, tokenizer, index), by size and then path:
    // they are committed within moments, so a failure late in a large shard
    // leaves them in place and a re-run fetches only the shard.
    fetch.sort_by(|&(a, _), &(b, _)| {
        objects.size(a).cmp(&objects.size(b)).then_with(|| objects.rel(a).cmp(objects.rel(b)))
    });
    let indexes = (0..objects.len())
        .filter(|&i| opts.check_indexes && objects.rel(i).rsplit('/').next().is_some_and(model::is_index))
        .collect();
    Ok(DownloadPlan {
        fetch,
        up_to_date,
        deletes,
        run_deletes,
        lookalikes,
        refused: listed.refused,
        indexes,
        objects: listed.objects,
    })
}

impl NoPlan {
    /// The refusal or usage error the command reports.
    pub fn into_error(self, src: &S3Url, hint: &str) -> crate::error::Error {
        match self {
            NoPlan::Empty { filtered } => {
                let with = if filtered { " (after --include/--exclude)" } else { "" };
                Refusal::NothingMatched { what: "objects", given: src.to_string(), hint: format!("{with}{hint}") }
                    .into()
            }
            NoPlan::DeleteOneObject => crate::error::Error::Usage(
                "--delete needs a prefix or wildcard source and a destination directory".into(),
            ),
        }
    }
}

#[cfg(test)]
mod tests {
    use std::time::{Duration, SystemTime, UNIX_EPOCH};

    use super::*;
    use crate::plan::{add_listed, finish_listing};
    use crate::refusal::KeyProblem;
    use crate::store::ObjectMeta;

    fn at(secs: u64) -> SystemTime {
        UNIX_EPOCH + Duration::from_secs(secs)
    }

    fn url() -> S3Url {
        S3Url::parse("s3://b/m/").unwrap()
    }

    /// The listing of `objects` (path, size, ETag), all last modified at 100 s.
    fn listing(objects: &[(&str, u64, &str)]) -> SourceListing {
        let mut out = SourceListing::default();
        for &(rel, size, etag) in objects {
            let meta = ObjectMeta {
                key: format!("m/{rel}"),
                size,
                etag: Some(etag.into()),
                last_modified: Some(at(100)),
                checksum: None,
                etag_md5: true,
                version_id: None,
            };
            add_listed(&url(), meta, &mut out);
        }
        finish_listing(&mut out);
        out
    }

    fn file(rel: &str, size: u64, secs: u64) -> DestEntry {
        DestEntry { rel: rel.into(), size, mtime: Some(at(secs)) }
    }

    fn record(rel: &str, size: u64, secs: u64, etag: &str) -> Record {
        Record {
            path: rel.into(),
            removed: false,
            size,
            mtime_ns: i128::from(secs) * 1_000_000_000,
            source: format!("s3://b/m/{rel}"),
            etag: Some(etag.into()),
            version_id: None,
            checksum: None,
            last_modified_ns: None,
            boot: None,
        }
    }

    fn sync(delete: bool) -> Option<SyncRule> {
        Some(SyncRule { compare: Compare::SizeAndTime, delete, allow_empty: false })
    }

    fn options(filters: &Filters, sync: Option<SyncRule>) -> Options<'_> {
        Options { batch: true, filters, sync, folding: None, shard: None, split_min: None, check_indexes: true }
    }

    fn no_filters() -> Filters {
        Filters::new(&[], &[]).unwrap()
    }

    /// Plans with `local` files and `records`; the paths fetched, in order.
    fn run(
        listed: SourceListing,
        local: Vec<DestEntry>,
        records: &[Record],
        opts: &Options<'_>,
    ) -> Result<(DownloadPlan, Vec<String>), NoPlan> {
        let lookup = |p: &str| records.iter().find(|r| r.path == p).cloned();
        let plan = plan(listed, &url(), &mut local.into_iter(), &lookup, &mut |_| {}, opts)?;
        let paths = plan.fetch.iter().map(|&(i, _)| plan.objects.rel(i).to_string()).collect();
        Ok((plan, paths))
    }

    #[test]
    fn cp_fetches_every_object_smallest_first_then_by_path() {
        let f = no_filters();
        let listed = listing(&[("a.bin", 300, "e1"), ("c.json", 10, "e2"), ("b.json", 10, "e3"), ("d/x", 20, "e4")]);
        // cp does not compare: a file already there is fetched again.
        let (p, paths) = run(listed, vec![file("a.bin", 300, 100)], &[], &options(&f, None)).unwrap();
        assert_eq!(paths, ["b.json", "c.json", "d/x", "a.bin"]);
        assert_eq!((p.up_to_date, p.deletes.len(), p.run_deletes), (0, 0, 0));
    }

    #[test]
    fn sync_fetches_what_is_missing_or_differs_and_counts_the_rest_up_to_date() {
        let f = no_filters();
        let listed = listing(&[("same", 5, "e1"), ("bigger", 9, "e2"), ("missing", 1, "e3"), ("older", 4, "e4")]);
        let local = vec![file("bigger", 8, 100), file("older", 4, 50), file("same", 5, 100)];
        let (p, paths) = run(listed, local, &[], &options(&f, sync(false))).unwrap();
        // Without a record, s5cmd's rule: size differs, or the object is newer.
        assert_eq!(paths, ["missing", "older", "bigger"]);
        assert_eq!(p.up_to_date, 1);
    }

    #[test]
    fn the_record_decides_by_content_a_retrained_shard_of_the_same_size_is_fetched() {
        let f = no_filters();
        let listed = listing(&[("w.bin", 10, "new"), ("config.json", 2, "c1")]);
        let local = vec![file("config.json", 2, 100), file("w.bin", 10, 100)];
        let records = [record("w.bin", 10, 100, "old"), record("config.json", 2, 100, "c1")];
        let (p, paths) = run(listed, local, &records, &options(&f, sync(false))).unwrap();
        assert_eq!(paths, ["w.bin"]);
        assert_eq!(p.up_to_date, 1);
        // --size-only ignores the record.
        let listed = listing(&[("w.bin", 10, "new")]);
        let size_only = Some(SyncRule { compare: Compare::SizeOnly, delete: false, allow_empty: false });
        let (_, paths) = run(listed, vec![file("w.bin", 10, 100)], &records, &options(&f, size_only)).unwrap();
        assert!(paths.is_empty(), "{paths:?}");
    }

    #[test]
    fn filters_leave_out_objects_and_refused_keys_and_an_empty_selection_is_refused_unless_allowed() {
        let only_bin = Filters::new(&["*.bin".to_string()], &[]).unwrap();
        let listed = listing(&[("a.bin", 1, "e"), ("b.json", 1, "e"), ("../escape.json", 1, "e")]);
        assert_eq!(listed.refused.len(), 1);
        let (p, paths) = run(listed, vec![], &[], &options(&only_bin, None)).unwrap();
        assert_eq!(paths, ["a.bin"]);
        assert!(p.refused.is_empty(), "a refused key outside the filters is not reported: {:?}", p.refused);

        let only_txt = Filters::new(&["*.txt".to_string()], &[]).unwrap();
        let listed = || listing(&[("a.bin", 1, "e")]);
        assert_eq!(
            run(listed(), vec![], &[], &options(&only_txt, sync(true))).unwrap_err(),
            NoPlan::Empty { filtered: true }
        );
        let f = no_filters();
        assert_eq!(run(listing(&[]), vec![], &[], &options(&f, None)).unwrap_err(), NoPlan::Empty { filtered: false });
        // Allowed, an empty source with --delete empties the destination.
        let allow = Some(SyncRule { compare: Compare::SizeAndTime, delete: true, allow_empty: true });
        let (p, paths) = run(listing(&[]), vec![file("old", 1, 1)], &[], &options(&f, allow)).unwrap();
        assert!(paths.is_empty());
        assert_eq!(p.deletes, ["old"]);
        // A refused key alone is not an empty source: it fails by name.
        let (p, _) = run(listing(&[("../x", 1, "e")]), vec![], &[], &options(&f, None)).unwrap();
        assert_eq!(p.refused.len(), 1);
        assert!(matches!(p.refused[0].problem, KeyProblem::UnsafePath { .. }));
    }

    #[test]
    fn keys_one_file_apart_are_refused_where_the_filesystem_folds_names_and_fetched_where_it_does_not() {
        let f = no_filters();
        let listed = || listing(&[("Model.bin", 1, "e1"), ("model.bin", 1, "e2"), ("other", 1, "e3")]);
        let (p, paths) = run(listed(), vec![], &[], &options(&f, None)).unwrap();
        assert_eq!(paths.len(), 3);
        assert!(p.refused.is_empty());
        let folding = Options { folding: Some(NameFolding { case: true, unicode: false }), ..options(&f, None) };
        let (p, paths) = run(listed(), vec![], &[], &folding).unwrap();
        assert_eq!(paths, ["other"]);
        assert_eq!(p.refused.len(), 2);
        assert!(p.refused.iter().all(|r| matches!(r.problem, KeyProblem::OneFile { .. })));
        // A single object is never compared with others.
        let one = Options { batch: false, ..folding };
        assert_eq!(run(listing(&[("Model.bin", 1, "e1")]), vec![], &[], &one).unwrap().1, ["Model.bin"]);
    }

    #[test]
    fn delete_removes_what_the_source_lacks_within_the_filters_and_keeps_lookalikes() {
        let f = Filters::new(&[], &["*.keep".to_string()]).unwrap();
        let listed = listing(&[("w.bin", 1, "e")]);
        let local =
            vec![file("W.BIN", 1, 100), file("notes.keep", 1, 100), file("stale", 1, 100), file("w.bin", 1, 100)];
        let (p, paths) = run(listed, local, &[], &options(&f, sync(true))).unwrap();
        assert!(paths.is_empty(), "{paths:?}");
        assert_eq!(p.deletes, ["stale"]);
        assert_eq!(p.run_deletes, 1);
        assert_eq!(p.lookalikes, [("W.BIN".to_string(), "w.bin".to_string())]);
        // Without --delete, nothing is deleted.
        let (p, _) =
            run(listing(&[("w.bin", 1, "e")]), vec![file("stale", 1, 1)], &[], &options(&f, sync(false))).unwrap();
        assert!(p.deletes.is_empty() && p.run_deletes == 0);
    }

    #[test]
    fn delete_needs_a_batch_source() {
        let f = no_filters();
        let one = Options { batch: false, ..options(&f, sync(true)) };
        assert_eq!(run(listing(&[("w.bin", 1, "e")]), vec![], &[], &one).unwrap_err(), NoPlan::DeleteOneObject);
    }

    #[test]
    fn shards_split_the_fetches_and_the_deletions_and_each_counts_the_whole_runs_deletions() {
        let f = no_filters();
        let names: Vec<String> = (0..40).map(|i| format!("f{i:02}")).collect();
        let objects: Vec<(&str, u64, &str)> = names.iter().map(|n| (n.as_str(), 1000, "e")).collect();
        let stale: Vec<DestEntry> = (0..20).map(|i| file(&format!("stale{i:02}"), 1, 1)).collect();
        let mut fetched = Vec::new();
        let mut deleted = Vec::new();
        for k in 0..3 {
            let shard = Some(Shard::parse(&format!("{k}/3")).unwrap());
            let opts = Options { shard, ..options(&f, sync(true)) };
            let (p, paths) = run(listing(&objects), stale.clone(), &[], &opts).unwrap();
            assert!(!paths.is_empty() && paths.len() < 40, "shard {k}: {paths:?}");
            assert_eq!(p.run_deletes, 20, "every shard counts the run's deletions");
            assert_eq!(p.up_to_date, 0);
            fetched.extend(paths);
            deleted.extend(p.deletes);
        }
        fetched.sort();
        deleted.sort();
        assert_eq!(fetched, names, "each object fetched by exactly one shard");
        let stale: Vec<String> = stale.into_iter().map(|l| l.rel).collect();
        assert_eq!(deleted, stale, "each stale path deleted by exactly one shard");
    }

    #[test]
    fn an_object_over_a_fair_share_is_split_one_piece_per_shard() {
        let f = no_filters();
        let objects = [("big.safetensors", 10_000, "e"), ("config.json", 10, "e")];
        let mut pieces = Vec::new();
        for k in 0..2 {
            let shard = Some(Shard::parse(&format!("{k}/2")).unwrap());
            let opts = Options { shard, split_min: Some(100), ..options(&f, None) };
            let (p, _) = run(listing(&objects), vec![], &[], &opts).unwrap();
            pieces.extend(p.fetch.iter().filter_map(|&(i, piece)| Some((p.objects.rel(i).to_string(), piece?.index))));
        }
        pieces.sort();
        assert_eq!(pieces, [("big.safetensors".to_string(), 0), ("big.safetensors".to_string(), 1)]);
    }

    #[test]
    fn the_walk_is_heard_and_weight_indexes_are_named_for_the_check() {
        let f = no_filters();
        let listed = listing(&[("model.safetensors.index.json", 5, "e"), ("model-1.safetensors", 9, "e")]);
        let mut heard = Vec::new();
        let local = vec![file("extra", 1, 1), file("model-1.safetensors", 9, 100)];
        let p = plan(
            listed,
            &url(),
            &mut local.into_iter(),
            &|_| None,
            &mut |rel| heard.push(rel.to_string()),
            &options(&f, sync(false)),
        )
        .unwrap();
        assert_eq!(heard, ["extra", "model-1.safetensors"]);
        let indexes: Vec<&str> = p.indexes.iter().map(|&i| p.objects.rel(i)).collect();
        assert_eq!(indexes, ["model.safetensors.index.json"]);
        let off = Options { check_indexes: false, ..options(&f, None) };
        let p = run(listing(&[("a.index.json", 1, "e")]), vec![], &[], &off).unwrap().0;
        assert!(p.indexes.is_empty());
    }
}
