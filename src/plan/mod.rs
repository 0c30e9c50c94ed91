//! Planning: what the source holds, where each object lands, and what to copy.
//!
//! [`expand`] lists the source (all pages) and maps each selected key to a safe
//! relative path; [`diff`](diff::diff) compares that with the destination listing.
//! Objects whose keys cannot be mapped safely are kept as refusals so they are
//! reported by name and make the exit code non-zero.

pub mod delete;
pub mod diff;
pub mod filter;
pub mod local;
pub mod paths;

use std::path::PathBuf;

use crate::error::{Error, StoreErrorKind};
use crate::store::{ObjectMeta, ObjectStore};
use crate::url::S3Url;

use paths::{Mapped, map_key};

/// An object selected by the source URL, with its path below the destination.
#[derive(Debug, Clone)]
pub struct SourceObject {
    pub meta: ObjectMeta,
    /// `/`-separated path relative to the destination directory.
    pub rel: String,
    pub path: PathBuf,
}

#[derive(Debug, Default)]
pub struct Expanded {
    /// Sorted by `rel`.
    pub objects: Vec<SourceObject>,
    /// Keys refused by the safe-path rules, with the reason.
    pub refused: Vec<(String, String)>,
    /// Directory marker objects skipped.
    pub markers: usize,
}

/// Lists every object the URL selects. A single-object URL is looked up with HEAD.
pub async fn expand(store: &dyn ObjectStore, url: &S3Url) -> Result<Expanded, Error> {
    let mut metas = Vec::new();
    if url.is_batch() {
        list_all(store, &url.bucket, &url.prefix, None, |page| {
            metas.extend(page.objects.into_iter().filter(|o| url.matches(&o.key)));
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
            Error::store(url.to_string(), e)
        })?;
        metas.push(meta);
    }

    let mut out = Expanded::default();
    for meta in metas {
        let rel = url.relative(&meta.key).to_string();
        match map_key(&rel) {
            Ok(Mapped::File(path)) => out.objects.push(SourceObject { meta, rel, path }),
            Ok(Mapped::DirMarker) => out.markers += 1,
            Err(why) => out.refused.push((meta.key, why)),
        }
    }
    out.objects.sort_by(|a, b| a.rel.cmp(&b.rel));
    refuse_file_directory_collisions(&mut out);
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
    mut each: impl FnMut(crate::store::ListPage),
) -> Result<(), crate::error::StoreError> {
    let mut token: Option<String> = None;
    loop {
        let mut page = store.list_page(bucket, prefix, delimiter, token.clone()).await?;
        let next = page.next.take();
        each(page);
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

/// Keys `a` and `a/b` cannot both land: `a` would have to be a file and a
/// directory. The outcome is fixed, whatever the listing or download order: the
/// objects below `a/` are kept and `a` is refused by name (so the run exits
/// non-zero and nothing is silently dropped).
fn refuse_file_directory_collisions(out: &mut Expanded) {
    let dirs: std::collections::HashSet<&str> =
        out.objects.iter().flat_map(|o| o.rel.match_indices('/').map(|(i, _)| &o.rel[..i])).collect();
    if out.objects.iter().all(|o| !dirs.contains(o.rel.as_str())) {
        return;
    }
    let (clash, keep): (Vec<SourceObject>, Vec<SourceObject>) = {
        let dirs: std::collections::HashSet<String> = dirs.into_iter().map(str::to_string).collect();
        std::mem::take(&mut out.objects).into_iter().partition(|o| dirs.contains(&o.rel))
    };
    out.objects = keep;
    for o in clash {
        let why = format!(
            "key collides with the keys below '{}/': a path cannot be both a file and a directory; the objects below it are kept",
            o.rel
        );
        out.refused.push((o.meta.key, why));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn obj(rel: &str) -> SourceObject {
        let meta = ObjectMeta {
            key: format!("p/{rel}"),
            size: 1,
            etag: None,
            last_modified: None,
            checksum: None,
            etag_md5: false,
            version_id: None,
        };
        SourceObject { meta, rel: rel.to_string(), path: PathBuf::from(rel) }
    }

    #[test]
    fn a_file_that_is_also_a_directory_is_refused_and_the_directory_kept() {
        let mut e = Expanded {
            objects: vec![obj("a"), obj("a-1"), obj("a/b"), obj("a/c/d"), obj("test-1")],
            ..Default::default()
        };
        refuse_file_directory_collisions(&mut e);
        let kept: Vec<&str> = e.objects.iter().map(|o| o.rel.as_str()).collect();
        assert_eq!(kept, vec!["a-1", "a/b", "a/c/d", "test-1"]);
        assert_eq!(e.refused.len(), 1);
        assert_eq!(e.refused[0].0, "p/a");
        assert!(e.refused[0].1.contains("both a file and a directory"));
    }
}
