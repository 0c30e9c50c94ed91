//! Which destination paths `--delete` may remove.
//!
//! Candidates are the destination paths with no source counterpart, in the
//! selected set (`--exclude`d or not `--include`d paths are never deleted). A
//! candidate is kept, with a warning, when it differs from a source path only by
//! letter case or Unicode normalisation (`Model.bin` beside `model.bin`, `é`
//! composed or not): on a case-insensitive or normalising filesystem both names
//! are one file, which was just written, and deleting one would delete it.
//! Byte-order merging makes `test/` beside `test-1` a non-issue.

use std::collections::HashSet;

use unicode_normalization::UnicodeNormalization;

use super::filter::Filters;

#[derive(Debug, Default, PartialEq, Eq)]
pub struct DeletePlan {
    pub delete: Vec<String>,
    /// (path, the source path it looks like)
    pub lookalikes: Vec<(String, String)>,
}

fn fold(s: &str) -> String {
    s.nfc().collect::<String>().to_lowercase()
}

/// What `--delete` removes of `dest_only`. With `lookalikes` (a local
/// destination), names that fold to a source name are kept; S3 keys are
/// compared byte for byte, so an upload passes false.
pub fn plan<'a>(
    source: impl Iterator<Item = &'a str>,
    dest_only: impl Iterator<Item = &'a str>,
    filters: &Filters,
    lookalikes: bool,
) -> DeletePlan {
    // Each path to delete (a few, usually) with its folded name, when
    // lookalikes count.
    let dest: Vec<(&str, Option<String>)> =
        dest_only.filter(|d| filters.selects(d)).map(|d| (d, lookalikes.then(|| fold(d)))).collect();
    // Each folded name with the source path that folds alike, if any (the
    // last one listed): the source (a million paths, maybe) is scanned, not
    // copied.
    let mut folded: std::collections::HashMap<&str, Option<&str>> =
        dest.iter().filter_map(|(_, f)| f.as_deref()).map(|f| (f, None)).collect();
    if !folded.is_empty() {
        for s in source {
            if let Some(like) = folded.get_mut(fold(s).as_str()) {
                *like = Some(s);
            }
        }
    }
    let mut out = DeletePlan::default();
    let mut seen = HashSet::new();
    for (d, f) in &dest {
        let d = *d;
        let like = f.as_deref().and_then(|f| folded.get(f).copied().flatten());
        match like {
            Some(s) => out.lookalikes.push((d.to_string(), s.to_string())),
            None if seen.insert(d) => out.delete.push(d.to_string()),
            None => {}
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run(src: &[&str], dst: &[&str], exclude: &[&str]) -> DeletePlan {
        let ex: Vec<String> = exclude.iter().map(std::string::ToString::to_string).collect();
        plan(src.iter().copied(), dst.iter().copied(), &Filters::new(&[], &ex).unwrap(), true)
    }

    #[test]
    fn excluded_paths_are_never_deleted() {
        let p = run(&["a"], &["b", "logs/x", "keep.lock"], &["logs/*", "*.lock"]);
        assert_eq!(p.delete, vec!["b"]);
    }

    #[test]
    fn case_and_normalisation_lookalikes_are_kept() {
        let composed = "caf\u{e9}.bin";
        let decomposed = "cafe\u{301}.bin";
        let p = run(&["model.bin", composed], &["Model.bin", decomposed, "other"], &[]);
        assert_eq!(p.delete, vec!["other"]);
        assert_eq!(p.lookalikes.len(), 2);
        assert_eq!(p.lookalikes[0], ("Model.bin".to_string(), "model.bin".to_string()));
        // Keys in a bucket are compared byte for byte.
        let keys = plan(["model.bin"].into_iter(), ["Model.bin"].into_iter(), &Filters::new(&[], &[]).unwrap(), false);
        assert_eq!(keys.delete, vec!["Model.bin"]);
    }
}
