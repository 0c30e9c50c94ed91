//! Planning: what the source holds, where each object lands, and what to copy.
//!
//! [`list_source`] lists the source (all pages) and maps each selected key to a safe
//! relative path. Objects whose keys cannot be mapped safely are kept as
//! refusals so they are reported by name and make the exit code non-zero.
//! What a run does is decided in [`download`] and [`upload`] (no I/O of their
//! own), from [`diff`] (the comparison), [`delete`] and the listing.

pub mod delete;
pub mod diff;
pub mod download;
pub mod filter;
pub mod local;
pub mod objects;
pub mod paths;
pub mod run_listing;
pub mod upload;

use crate::error::{Error, StoreErrorKind};
use crate::refusal::KeyProblem;
use crate::store::{ObjectMeta, ObjectStore};
use crate::url::S3Url;

pub use objects::{Object, Objects};
use paths::{Mapped, map_key};

/// A listed key that cannot be a file at the destination, and why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RefusedKey {
    pub key: String,
    pub problem: KeyProblem,
}

#[derive(Debug, Default)]
pub struct SourceListing {
    /// Sorted by `rel`, packed (a million of them are listed at once).
    pub objects: Objects,
    /// Keys refused by the safe-path rules, with the reason.
    pub refused: Vec<RefusedKey>,
    /// Directory marker objects skipped.
    pub markers: usize,
}

/// Adds one listed object to `out`: mapped to its path, or refused by name
/// (an unsafe path, a size no S3 object has); directory markers counted.
pub(crate) fn add_listed(url: &S3Url, meta: ObjectMeta, out: &mut SourceListing) {
    let rel = url.relative(&meta.key);
    match map_key(rel) {
        Ok(Mapped::File(_)) if meta.size > crate::store::MAX_OBJECT_SIZE => {
            let problem = KeyProblem::ImpossibleSize { size: meta.size };
            out.refused.push(RefusedKey { key: meta.key, problem });
        }
        Ok(Mapped::File(_)) => {
            let rel_len = rel.len();
            out.objects.push(meta, rel_len);
        }
        Ok(Mapped::DirMarker) => out.markers += 1,
        Err(problem) => out.refused.push(RefusedKey { key: meta.key, problem }),
    }
}

/// The listing's last steps: sorted by path, and a file that is also a
/// directory refused.
pub(crate) fn finish_listing(out: &mut SourceListing) {
    out.objects.sort();
    refuse_file_directory_collisions(out);
}

/// Lists every object the URL selects. A single-object URL is looked up with HEAD.
pub async fn list_source(store: &dyn ObjectStore, url: &S3Url) -> Result<SourceListing, Error> {
    let mut out = SourceListing::default();
    // Each page is mapped as it comes: the listing is held once, not twice.
    let take = |meta: ObjectMeta, out: &mut SourceListing| add_listed(url, meta, out);
    if url.is_batch() {
        list_all(store, &url.bucket, &url.prefix, None, |page| {
            for o in page.objects.into_iter().filter(|o| url.matches(&o.key)) {
                take(o, &mut out);
            }
            std::ops::ControlFlow::Continue(())
        })
        .await
        .map_err(|e| Error::store(format!("listing {url}"), e))?;
    } else {
        let meta = store.head(&url.bucket, &url.key).await.map_err(|e| {
            let e = if e.kind == StoreErrorKind::NoSuchKey {
                crate::error::StoreError::new(
                    e.kind,
                    format!("{e}; to copy everything under it, end the URL with '/' or '/*'"),
                )
            } else {
                e
            };
            Error::object(&url.bucket, &url.key, None, e)
        })?;
        take(meta, &mut out);
    }
    finish_listing(&mut out);
    Ok(out)
}

/// Reads every page of a listing, in order. A store that hands back the token it
/// was given would list forever; that ends the listing with an error, as a
/// truncated page without a token does (see the store), never silently.
pub async fn list_all(
    store: &dyn ObjectStore,
    bucket: &str,
    prefix: &str,
    delimiter: Option<&str>,
    mut each: impl FnMut(crate::store::ListPage) -> std::ops::ControlFlow<()>,
) -> Result<(), crate::error::StoreError> {
    let mut token: Option<String> = None;
    loop {
        let mut page = store.list_page(bucket, prefix, delimiter, token.clone()).await?;
        let next = page.next.take();
        if each(page).is_break() {
            return Ok(());
        }
        match next {
            None => return Ok(()),
            Some(t) if token.as_ref() == Some(&t) => {
                return Err(crate::error::StoreError::new(
                    StoreErrorKind::Other,
                    "the store answered a listing page with the continuation token it was given; the listing would \
                     never end",
                ));
            }
            Some(t) => token = Some(t),
        }
    }
}

/// Keys that the destination's filesystem would take for one name (`Model.bin`
/// and `model.bin` where case is not told apart; `é` composed and decomposed
/// where names are normalised) would land on one file: both would be reported
/// copied, one would hold the other's bytes, and every later sync would fetch
/// them again. All such keys are refused by name; on a byte-exact filesystem
/// nothing is refused and they stay the distinct files they are.
pub fn refuse_name_collisions(out: &mut SourceListing, folding: crate::localfs::NameFolding) {
    if !folding.any() {
        return;
    }
    let mut by_fold: std::collections::HashMap<String, Vec<usize>> = std::collections::HashMap::new();
    for (i, o) in out.objects.iter().enumerate() {
        by_fold.entry(folding.fold(o.rel)).or_default().push(i);
    }
    let mut clash: std::collections::HashMap<usize, KeyProblem> = std::collections::HashMap::new();
    for group in by_fold.values().filter(|g| g.len() > 1) {
        let names: Vec<&str> = group.iter().map(|&i| out.objects.rel(i)).collect();
        let what = match (folding.case, folding.unicode) {
            (true, true) => "letter case or Unicode forms",
            (true, false) => "letter case",
            _ => "Unicode forms",
        };
        let why =
            KeyProblem::OneFile { keys: names.iter().map(std::string::ToString::to_string).collect(), differing: what };
        clash.extend(group.iter().map(|&i| (i, why.clone())));
    }
    let refused = &mut out.refused;
    out.objects.retain(|i, o| match clash.remove(&i) {
        Some(problem) => {
            refused.push(RefusedKey { key: o.key.to_string(), problem });
            false
        }
        None => true,
    });
}

/// Keys `a` and `a/b` cannot both land: `a` would have to be a file and a
/// directory. The outcome is fixed, whatever the listing or download order: the
/// objects below `a/` are kept and `a` is refused by name (so the run exits
/// non-zero and nothing is silently dropped).
fn refuse_file_directory_collisions(out: &mut SourceListing) {
    let dirs: std::collections::HashSet<String> = {
        let mut dirs = std::collections::HashSet::new();
        for o in out.objects.iter() {
            // Each directory once: a million files in a thousand directories
            // add a thousand names.
            for (i, _) in o.rel.match_indices('/') {
                if !dirs.contains(&o.rel[..i]) {
                    dirs.insert(o.rel[..i].to_string());
                }
            }
        }
        dirs
    };
    if out.objects.iter().all(|o| !dirs.contains(o.rel)) {
        return;
    }
    let refused = &mut out.refused;
    out.objects.retain(|_, o| {
        if !dirs.contains(o.rel) {
            return true;
        }
        let problem = KeyProblem::FileAndDirectory { dir: o.rel.to_string() };
        refused.push(RefusedKey { key: o.key.to_string(), problem });
        false
    });
}

#[cfg(test)]
mod tests {
    use super::*;

    fn objects(rels: &[&str]) -> Objects {
        let mut o = Objects::default();
        for rel in rels {
            let meta = ObjectMeta {
                key: format!("p/{rel}"),
                size: 1,
                etag: None,
                last_modified: None,
                checksum: None,
                etag_md5: false,
                version_id: None,
            };
            o.push(meta, rel.len());
        }
        o
    }

    #[test]
    fn keys_one_file_apart_on_a_folding_filesystem_are_all_refused_and_kept_elsewhere() {
        use crate::localfs::NameFolding;
        let names = ["Model.bin", "model.bin", "caf\u{e9}.bin", "cafe\u{301}.bin", "Sub/x", "sub/x", "other"];
        let expanded = || SourceListing { objects: objects(&names), ..Default::default() };
        let mut exact = expanded();
        refuse_name_collisions(&mut exact, NameFolding::default());
        assert_eq!(exact.objects.len(), 7, "a byte-exact filesystem keeps every name");
        let mut both = expanded();
        refuse_name_collisions(&mut both, NameFolding { case: true, unicode: true });
        let kept: Vec<&str> = both.objects.iter().map(|o| o.rel).collect();
        assert_eq!(kept, vec!["other"]);
        assert_eq!(both.refused.len(), 6);
        assert!(both.refused.iter().all(|r| matches!(r.problem, KeyProblem::OneFile { .. })), "{:?}", both.refused);
        assert!(both.refused.iter().all(|r| r.problem.to_string().contains("would be one file")));
        let mut case_only = expanded();
        refuse_name_collisions(&mut case_only, NameFolding { case: true, unicode: false });
        assert_eq!(case_only.objects.len(), 3, "the two forms of caf\u{e9} stay, and other");
    }

    #[test]
    fn a_file_that_is_also_a_directory_is_refused_and_the_directory_kept() {
        let mut e = SourceListing { objects: objects(&["a", "a-1", "a/b", "a/c/d", "test-1"]), ..Default::default() };
        refuse_file_directory_collisions(&mut e);
        let kept: Vec<&str> = e.objects.iter().map(|o| o.rel).collect();
        assert_eq!(kept, vec!["a-1", "a/b", "a/c/d", "test-1"]);
        assert_eq!(e.refused.len(), 1);
        assert_eq!(e.refused[0].key, "p/a");
        assert_eq!(e.refused[0].problem, KeyProblem::FileAndDirectory { dir: "a".into() });
        assert!(e.refused[0].problem.to_string().contains("both a file and a directory"));
    }
}
