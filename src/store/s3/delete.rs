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
            kind: key_error_kind(e.code()),
        })
        .collect())
}

/// What a per-key error code of DeleteObjects means (it comes without an HTTP
/// status of its own).
fn key_error_kind(code: Option<&str>) -> StoreErrorKind {
    match code {
        Some("InternalError" | "ServiceUnavailable" | "RequestTimeout" | "OperationAborted") => {
            StoreErrorKind::ServerError
        }
        Some("SlowDown" | "Throttling" | "ThrottlingException" | "RequestLimitExceeded") => StoreErrorKind::Throttled,
        Some("AccessDenied") => StoreErrorKind::AccessDenied,
        _ => StoreErrorKind::Other,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn per_key_errors_that_pass_are_told_from_those_that_do_not() {
        assert_eq!(key_error_kind(Some("InternalError")), StoreErrorKind::ServerError);
        assert_eq!(key_error_kind(Some("SlowDown")), StoreErrorKind::Throttled);
        assert_eq!(key_error_kind(Some("AccessDenied")), StoreErrorKind::AccessDenied);
        assert_eq!(key_error_kind(Some("NoSuchVersion")), StoreErrorKind::Other);
        assert_eq!(key_error_kind(None), StoreErrorKind::Other);
    }
}
