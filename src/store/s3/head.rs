//! HeadObject: an object's identity and checksum, and the part layout of a
//! multipart upload (`partNumber`).

use aws_sdk_s3::types::ChecksumMode;

use super::client::S3Store;
use super::convert::{etag_is_md5, stated_checksum, to_system_time, unquote};
use super::errors::{ObjectKind, map_sdk_err};
use crate::error::StoreError;
use crate::store::ObjectMeta;

pub(super) async fn head(s: &S3Store, bucket: &str, key: &str) -> Result<ObjectMeta, StoreError> {
    let out = s
        .client
        .head_object()
        .bucket(bucket)
        .key(key)
        .checksum_mode(ChecksumMode::Enabled)
        .send()
        .await
        .map_err(|e| map_sdk_err(e, ObjectKind::Key))?;
    let checksum = stated_checksum!(out);
    Ok(ObjectMeta {
        key: key.to_string(),
        size: out.content_length().unwrap_or(0).max(0) as u64,
        etag: out.e_tag().map(unquote),
        last_modified: to_system_time(out.last_modified()),
        checksum,
        etag_md5: etag_is_md5(out.server_side_encryption(), out.sse_customer_algorithm()),
        version_id: out.version_id().filter(|v| *v != "null").map(str::to_string),
    })
}

pub(super) async fn part_info(s: &S3Store, bucket: &str, key: &str, n: u32) -> Result<Option<(u64, u32)>, StoreError> {
    let out = s
        .client
        .head_object()
        .bucket(bucket)
        .key(key)
        .part_number(n.try_into().unwrap_or(i32::MAX))
        .send()
        .await
        .map_err(|e| map_sdk_err(e, ObjectKind::Key))?;
    Ok(match out.parts_count() {
        Some(n) if n > 0 => Some((out.content_length().unwrap_or(0).max(0) as u64, n as u32)),
        _ => None,
    })
}
