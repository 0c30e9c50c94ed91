//! PutObject and the multipart upload calls, each with its checksum, which the
//! store checks.

use aws_sdk_s3::types::{ChecksumType, CompletedMultipartUpload, CompletedPart, StorageClass};

use super::client::S3Store;
use super::convert::{file_body, sdk_algorithm, unquote};
use super::errors::{ObjectKind, map_sdk_err};
use crate::error::{StoreError, StoreErrorKind};
use crate::integrity::{Algorithm, to_base64};
use crate::store::{FileRange, PutTarget, UploadedPart};

pub(super) async fn put_object(
    s: &S3Store,
    target: &PutTarget,
    body: FileRange,
    checksum: u64,
) -> Result<(), StoreError> {
    let value = to_base64(target.checksum, checksum);
    let mut op = s
        .client
        .put_object()
        .bucket(&target.bucket)
        .key(&target.key)
        .content_length(body.len as i64)
        .set_content_type(target.content_type.clone())
        .set_storage_class(target.storage_class.as_deref().map(StorageClass::from))
        .body(file_body(&body));
    op = with_checksum!(op, target.checksum, value);
    op.customize().disable_payload_signing().send().await.map_err(|e| map_sdk_err(e, ObjectKind::Bucket))?;
    Ok(())
}

pub(super) async fn create_upload(s: &S3Store, target: &PutTarget) -> Result<String, StoreError> {
    let out = s
        .client
        .create_multipart_upload()
        .bucket(&target.bucket)
        .key(&target.key)
        .set_content_type(target.content_type.clone())
        .set_storage_class(target.storage_class.as_deref().map(StorageClass::from))
        .checksum_algorithm(sdk_algorithm(target.checksum))
        .checksum_type(ChecksumType::FullObject)
        .send()
        .await
        .map_err(|e| map_sdk_err(e, ObjectKind::Bucket))?;
    out.upload_id()
        .map(str::to_string)
        .ok_or_else(|| StoreError::new(StoreErrorKind::Other, "CreateMultipartUpload returned no upload id"))
}

pub(super) async fn upload_part(
    s: &S3Store,
    target: &PutTarget,
    upload_id: &str,
    n: u32,
    body: FileRange,
    checksum: u64,
) -> Result<String, StoreError> {
    let value = to_base64(target.checksum, checksum);
    let mut op = s
        .client
        .upload_part()
        .bucket(&target.bucket)
        .key(&target.key)
        .upload_id(upload_id)
        .part_number(n as i32)
        .content_length(body.len as i64)
        .body(file_body(&body));
    op = with_checksum!(op, target.checksum, value);
    let out = op.customize().disable_payload_signing().send().await.map_err(|e| map_sdk_err(e, ObjectKind::Key))?;
    out.e_tag()
        .map(unquote)
        .ok_or_else(|| StoreError::new(StoreErrorKind::Other, format!("UploadPart {n} returned no ETag")))
}

pub(super) async fn complete_upload(
    s: &S3Store,
    target: &PutTarget,
    upload_id: &str,
    parts: &[UploadedPart],
    checksum: u64,
) -> Result<(), StoreError> {
    let a = target.checksum;
    let completed = parts
        .iter()
        .map(|p| {
            let b = CompletedPart::builder().part_number(p.number as i32).e_tag(format!("\"{}\"", p.etag));
            let v = to_base64(a, p.checksum);
            with_checksum!(b, a, v).build()
        })
        .collect();
    let value = to_base64(a, checksum);
    let mut op = s
        .client
        .complete_multipart_upload()
        .bucket(&target.bucket)
        .key(&target.key)
        .upload_id(upload_id)
        .multipart_upload(CompletedMultipartUpload::builder().set_parts(Some(completed)).build())
        .checksum_type(ChecksumType::FullObject);
    op = with_checksum!(op, a, value);
    op.send().await.map_err(|e| map_sdk_err(e, ObjectKind::Key))?;
    Ok(())
}

pub(super) async fn abort_upload(s: &S3Store, bucket: &str, key: &str, upload_id: &str) -> Result<(), StoreError> {
    s.client
        .abort_multipart_upload()
        .bucket(bucket)
        .key(key)
        .upload_id(upload_id)
        .send()
        .await
        .map_err(|e| map_sdk_err(e, ObjectKind::Key))?;
    Ok(())
}
