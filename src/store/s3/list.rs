//! ListObjectsV2 (one page) and ListBuckets.

use super::client::S3Store;
use super::convert::{to_system_time, unquote};
use super::errors::{ObjectKind, map_sdk_err};
use crate::error::{StoreError, StoreErrorKind};
use crate::store::{ListPage, ObjectMeta};

pub(super) async fn list_page(
    s: &S3Store,
    bucket: &str,
    prefix: &str,
    delimiter: Option<&str>,
    token: Option<String>,
) -> Result<ListPage, StoreError> {
    let out = s
        .client
        .list_objects_v2()
        .bucket(bucket)
        .prefix(prefix)
        .set_delimiter(delimiter.map(str::to_string))
        .set_continuation_token(token)
        .send()
        .await
        .map_err(|e| map_sdk_err(e, ObjectKind::Bucket))?;
    // A listing that cannot be followed to its end must fail the run: one that
    // ends early looks like a smaller source, and `--delete` would act on it.
    let mut objects = Vec::with_capacity(out.contents().len());
    for o in out.contents() {
        let Some(key) = o.key() else {
            return Err(StoreError::new(StoreErrorKind::Other, "the listing names an object without a key"));
        };
        let Some(size) = o.size().filter(|s| *s >= 0) else {
            return Err(StoreError::new(
                StoreErrorKind::Other,
                format!("the listing gives no size for {key:?}; the store's ListObjectsV2 answer is not usable"),
            ));
        };
        objects.push(ObjectMeta {
            key: key.to_string(),
            size: size as u64,
            etag: o.e_tag().map(unquote),
            last_modified: to_system_time(o.last_modified()),
            checksum: None,
            etag_md5: false,
            version_id: None,
        });
    }
    let common_prefixes = out.common_prefixes().iter().filter_map(|p| p.prefix().map(str::to_string)).collect();
    let next = match (out.is_truncated().unwrap_or(false), out.next_continuation_token()) {
        (false, _) => None,
        (true, Some(t)) if !t.is_empty() => Some(t.to_string()),
        (true, _) => {
            return Err(StoreError::new(
                StoreErrorKind::Other,
                "the listing says it is truncated but gives no continuation token (a store that does not speak \
                 ListObjectsV2, list-type=2?); the rest of the listing cannot be read",
            ));
        }
    };
    Ok(ListPage { objects, common_prefixes, next })
}

pub(super) async fn list_buckets(s: &S3Store) -> Result<Vec<String>, StoreError> {
    let out = s.client.list_buckets().send().await.map_err(|e| map_sdk_err(e, ObjectKind::Bucket))?;
    Ok(out.buckets().iter().filter_map(|b| b.name().map(str::to_string)).collect())
}
