//! Planning: what the source holds, where each object lands, and what to copy.
//!
//! [`expand`] lists the source (all pages) and maps each selected key to a safe
//! relative path; [`diff`](diff::diff) compares that with the destination listing.
//! Objects whose keys cannot be mapped safely are kept as refusals so they are
//! reported by name and make the exit code non-zero.

pub mod diff;
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
        let mut token = None;
        loop {
            let page = store
                .list_page(&url.bucket, &url.prefix, None, token)
                .await
                .map_err(|e| Error::store(format!("listing {url}"), e))?;
            metas.extend(page.objects.into_iter().filter(|o| url.matches(&o.key)));
            match page.next {
                Some(t) => token = Some(t),
                None => break,
            }
        }
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
    Ok(out)
}
