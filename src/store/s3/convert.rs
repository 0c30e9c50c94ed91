//! Between the SDK's types and s3load's: ETags, times, checksum headers and
//! setters, request bodies read from files.

use std::time::SystemTime;

use aws_sdk_s3::primitives::ByteStream;
use aws_sdk_s3::primitives::DateTime;

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

/// A request body read from a file range as it is sent (and again on a retry),
/// with positioned reads from the file the upload opened, on the blocking
/// pool; under `--limit-rate` each read is a slice that pays for its bytes
/// before it is read.
pub(super) fn file_body(r: &FileRange) -> ByteStream {
    let chunk = r.pace.as_ref().map_or(READ_CHUNK, |p| p.slice.clamp(1, READ_CHUNK)) as u64;
    let state = (r.clone(), r.offset);
    let chunks = futures::stream::unfold(state, move |(r, at)| async move {
        let end = r.offset + r.len;
        if at >= end {
            return None;
        }
        let len = chunk.min(end - at) as usize;
        if let Some(pace) = &r.pace {
            pace.budget.take(len as u64).await;
        }
        let file = r.file.clone();
        let read = tokio::task::spawn_blocking(move || -> std::io::Result<bytes::Bytes> {
            use std::os::unix::fs::FileExt;
            let mut buf = vec![0; len];
            file.read_exact_at(&mut buf, at)?;
            Ok(buf.into())
        })
        .await
        .unwrap_or_else(|e| std::panic::resume_unwind(e.into_panic()));
        let item = read
            .map(http_body::Frame::data)
            .map_err(|e| std::io::Error::new(e.kind(), format!("reading {}: {e}", r.path.display())));
        // After a failed read the body ends with that error.
        let next = if item.is_ok() { at + len as u64 } else { end };
        Some((item, (r, next)))
    });
    ByteStream::from_body_1_x(http_body_util::StreamBody::new(chunks))
}

/// How much of a file one read takes into an upload body.
const READ_CHUNK: usize = 256 * 1024;

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
