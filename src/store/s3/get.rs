//! GetObject: a range (or the whole object) pinned by `If-Match`, its body streamed.

use aws_sdk_s3::error::DisplayErrorContext;

use super::client::S3Store;
use super::convert::{content_range_start, etag_is_md5, stated_checksum, unquote};
use super::errors::{ObjectKind, map_sdk_err};
use crate::error::{StoreError, StoreErrorKind};
use crate::store::{GetRequest, GetResponse};

pub(super) async fn get(s: &S3Store, req: &GetRequest) -> Result<GetResponse, StoreError> {
    let mut op = s.client.get_object().bucket(&req.bucket).key(&req.key);
    if let Some(r) = &req.range {
        op = op.range(format!("bytes={}-{}", r.start, r.end - 1));
    }
    if let Some(etag) = &req.if_match {
        op = op.if_match(format!("\"{etag}\""));
    }
    if let Some(v) = &req.version_id {
        op = op.version_id(v);
    }
    let out = op
        .customize()
        // Ask for the stored checksum without turning on the SDK's own
        // validation (which `checksum_mode` would): s3load checks it itself.
        .mutate_request(|r| {
            r.headers_mut().insert("x-amz-checksum-mode", "ENABLED");
        })
        .send()
        .await
        .map_err(|e| map_sdk_err(e, ObjectKind::Key))?;
    let content_length = out.content_length().unwrap_or(0).max(0) as u64;
    let partial = out.content_range().is_some();
    let etag_md5 = etag_is_md5(out.server_side_encryption(), out.sse_customer_algorithm());
    let range_start = out.content_range().and_then(content_range_start).unwrap_or(0);
    let etag = out.e_tag().map(unquote);
    let checksum = stated_checksum!(out);
    let body = futures::stream::unfold(out.body, |mut bs| async move {
        let item = bs.next().await?;
        Some((
            item.map_err(|e| {
                StoreError::new(StoreErrorKind::Network, format!("reading body: {}", DisplayErrorContext(&e)))
            }),
            bs,
        ))
    });
    Ok(GetResponse { content_length, range_start, partial, etag, checksum, etag_md5, body: Box::pin(body) })
}
