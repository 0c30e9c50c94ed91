//! DeleteObjects: up to 1000 keys per request.

use aws_sdk_s3::types::{Delete, ObjectIdentifier};

use super::client::S3Store;
use super::errors::{ObjectKind, map_sdk_err};
use crate::error::{StoreError, StoreErrorKind};
use crate::store::NotDeleted;

pub(super) async fn delete_objects(s: &S3Store, bucket: &str, keys: &[String]) -> Result<Vec<NotDeleted>, StoreError> {
    let ids = keys
        .iter()
        .map(|k| ObjectIdentifier::builder().key(k).build())
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| StoreError::new(StoreErrorKind::Other, e.to_string()))?;
    let delete = Delete::builder()
        .set_objects(Some(ids))
        .quiet(true)
        .build()
        .map_err(|e| StoreError::new(StoreErrorKind::Other, e.to_string()))?;
    let out = s
        .client
        .delete_objects()
        .bucket(bucket)
        .delete(delete)
        .send()
        .await
        .map_err(|e| map_sdk_err(e, ObjectKind::Bucket))?;
    Ok(out
        .errors()
        .iter()
        .map(|e| NotDeleted {
            key: e.key().unwrap_or_default().to_string(),
            reason: format!("{}: {}", e.code().unwrap_or("error"), e.message().unwrap_or("")),
        })
        .collect())
}
