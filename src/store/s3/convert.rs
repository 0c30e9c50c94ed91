//! Between the SDK's types and s3load's: ETags, times, checksum headers and
//! setters, request bodies read from files.

use std::time::SystemTime;

use aws_sdk_s3::primitives::DateTime;
use aws_sdk_s3::primitives::{ByteStream, Length};

use crate::error::{StoreError, StoreErrorKind};
use crate::integrity::{Algorithm, Sha, Stated};
use crate::store::FileRange;

pub(super) fn unquote(etag: &str) -> String {
    etag.trim_matches('"').to_string()
}

pub(super) fn to_system_time(dt: Option<&DateTime>) -> Option<SystemTime> {
    dt.and_then(|d| SystemTime::try_from(*d).ok())
}

/// S3's ETag is the MD5 of the upload unless the object is encrypted with
/// SSE-KMS (or DSSE-KMS) or a customer key.
pub(super) fn etag_is_md5(sse: Option<&aws_sdk_s3::types::ServerSideEncryption>, sse_c: Option<&str>) -> bool {
    use aws_sdk_s3::types::ServerSideEncryption as S;
    sse_c.is_none() && !matches!(sse, Some(S::AwsKms | S::AwsKmsDsse))
}

/// Sets the `algorithm` checksum `value` on a request or completed-part
/// builder: each SDK builder has its own three setters and no common trait.
macro_rules! with_checksum {
    ($builder:expr, $algorithm:expr, $value:expr) => {{
        let (b, v) = ($builder, $value);
        match $algorithm {
            Algorithm::Crc64Nvme => b.checksum_crc64_nvme(v),
            Algorithm::Crc32 => b.checksum_crc32(v),
            Algorithm::Crc32c => b.checksum_crc32_c(v),
        }
    }};
}

/// The checksum a response states: a CRC when there is one (cheapest to check,
/// from any split), else SHA256, else SHA1. A response carries one in practice.
macro_rules! stated_checksum {
    ($out:expr) => {
        stated_checksum(
            [$out.checksum_crc64_nvme(), $out.checksum_crc32(), $out.checksum_crc32_c()],
            [$out.checksum_sha256(), $out.checksum_sha1()],
            $out.checksum_type(),
        )
    };
}

pub(super) fn stated_checksum(
    crcs: [Option<&str>; 3],
    shas: [Option<&str>; 2],
    kind: Option<&aws_sdk_s3::types::ChecksumType>,
) -> Option<Stated> {
    let composite = matches!(kind, Some(aws_sdk_s3::types::ChecksumType::Composite));
    let [crc64nvme, crc32, crc32c] = crcs;
    let crc = Algorithm::ALL.into_iter().find_map(|a| {
        let header = match a {
            Algorithm::Crc64Nvme => crc64nvme,
            Algorithm::Crc32 => crc32,
            Algorithm::Crc32c => crc32c,
        }?;
        match Stated::parse(a, header)? {
            // A COMPOSITE type without the `-N` suffix: the part count is unknown.
            Stated::Full { value, .. } if composite => Some(Stated::Composite { algorithm: a, parts: 0, value }),
            s => Some(s),
        }
    });
    crc.or_else(|| Sha::ALL.into_iter().zip(shas).find_map(|(a, header)| Stated::parse_sha(a, header?, composite)))
}

pub(super) fn sdk_algorithm(a: Algorithm) -> aws_sdk_s3::types::ChecksumAlgorithm {
    use aws_sdk_s3::types::ChecksumAlgorithm as C;
    match a {
        Algorithm::Crc64Nvme => C::Crc64Nvme,
        Algorithm::Crc32 => C::Crc32,
        Algorithm::Crc32c => C::Crc32C,
    }
}

/// A request body read from a file range as it is sent (and again on a retry);
/// under `--limit-rate` each chunk pays for its bytes before it goes.
pub(super) async fn file_body(r: &FileRange) -> Result<ByteStream, StoreError> {
    let body = ByteStream::read_from()
        .path(&r.path)
        .offset(r.offset)
        .length(Length::Exact(r.len))
        .buffer_size(256 * 1024)
        .build()
        .await
        .map_err(|e| StoreError::new(StoreErrorKind::Other, format!("reading {}: {e}", r.path.display())))?;
    let Some(pace) = r.pace.clone() else { return Ok(body) };
    let slice = pace.slice.max(1);
    let chunks =
        futures::stream::unfold((body, pace, bytes::Bytes::new()), move |(mut body, pace, mut left)| async move {
            if left.is_empty() {
                match body.next().await? {
                    Ok(bytes) => left = bytes,
                    Err(e) => return Some((Err(e), (body, pace, left))),
                }
            }
            let piece = left.split_to(slice.min(left.len()));
            pace.budget.take(piece.len() as u64).await;
            Some((Ok(http_body::Frame::data(piece)), (body, pace, left)))
        });
    Ok(ByteStream::from_body_1_x(http_body_util::StreamBody::new(chunks)))
}

/// Start offset from a `Content-Range: bytes a-b/total` header.
pub(super) fn content_range_start(v: &str) -> Option<u64> {
    v.strip_prefix("bytes ")?.split('-').next()?.parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn content_range_start_parses_the_first_offset() {
        assert_eq!(content_range_start("bytes 100-199/1000"), Some(100));
        assert_eq!(content_range_start("bytes */1000"), None);
        assert_eq!(content_range_start("garbage"), None);
    }
}
