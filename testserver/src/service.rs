//! The S3 operations the test server speaks, implemented over [`Store`].
//!
//! Only what s3load uses is implemented; everything else answers NotImplemented
//! (s3s's default). Every request is recorded in the [`RequestLog`] so tests can
//! assert what the client did (for example: a no-op re-sync makes no GET).

use std::ops::Bound;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use s3s::dto::*;
use s3s::{S3, S3Error, S3ErrorCode, S3Request, S3Response, S3Result, s3_error};

use crate::faults::{Fault, Faults};
use crate::shaping::{ShapedBody, Shaping};
use crate::store::{ChecksumAlgorithm, PendingUpload, Store, StoredChecksum, StoredObject};

/// One request as the server saw it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RequestRecord {
    pub op: &'static str,
    pub bucket: String,
    pub key: String,
    /// Inclusive byte range requested, as (first, last); `last` = `None` for open ranges.
    pub range: Option<(u64, Option<u64>)>,
    pub if_match: Option<String>,
    /// `versionId` the request named.
    pub version_id: Option<String>,
}

/// Requests and bytes served, shared with the test.
#[derive(Debug, Default)]
pub struct RequestLog {
    records: Mutex<Vec<RequestRecord>>,
    pub(crate) body_bytes: Arc<AtomicU64>,
    /// Body bytes received in UploadPart requests.
    pub(crate) upload_bytes: AtomicU64,
    pub(crate) put_bytes: AtomicU64,
    /// GET bodies started, counted for [`crate::Straggler`].
    pub(crate) get_bodies: AtomicU64,
    /// GET bodies being served.
    pub(crate) bodies: crate::shaping::Gauge,
    /// The link GET bodies share under [`crate::Shaping::total_rate`].
    pub(crate) link: crate::shaping::Link,
    /// (operation, region in the request's SigV4 credential scope).
    signed: Mutex<Vec<(&'static str, String)>>,
    tokens: Mutex<Vec<String>>,
}

impl RequestLog {
    pub fn records(&self) -> Vec<RequestRecord> {
        self.records.lock().unwrap().clone()
    }
    pub fn count(&self, op: &str) -> usize {
        self.records.lock().unwrap().iter().filter(|r| r.op == op).count()
    }
    /// Body bytes sent in GET responses.
    pub fn body_bytes(&self) -> u64 {
        self.body_bytes.load(Ordering::Relaxed)
    }
    /// The most GET bodies served at once (since the last [`RequestLog::clear`]).
    pub fn peak_bodies(&self) -> u64 {
        self.bodies.peak()
    }
    /// Body bytes received in UploadPart requests.
    pub fn upload_bytes(&self) -> u64 {
        self.upload_bytes.load(Ordering::Relaxed)
    }
    /// Body bytes received in PutObject requests.
    pub fn put_bytes(&self) -> u64 {
        self.put_bytes.load(Ordering::Relaxed)
    }
    /// Regions that listings and GETs were signed for, in order.
    pub fn signed_regions(&self) -> Vec<(&'static str, String)> {
        self.signed.lock().unwrap().clone()
    }
    fn signed_for<T>(&self, op: &'static str, req: &S3Request<T>) {
        if let Some(r) = &req.region {
            self.signed.lock().unwrap().push((op, r.as_str().to_string()));
        }
        if let Some(t) = req.headers.get("x-amz-security-token").and_then(|v| v.to_str().ok()) {
            self.tokens.lock().unwrap().push(t.to_string());
        }
    }
    /// Session tokens (`x-amz-security-token`) that listings and GETs carried.
    pub fn session_tokens(&self) -> Vec<String> {
        self.tokens.lock().unwrap().clone()
    }
    pub fn clear(&self) {
        self.records.lock().unwrap().clear();
        self.signed.lock().unwrap().clear();
        self.tokens.lock().unwrap().clear();
        self.body_bytes.store(0, Ordering::Relaxed);
        self.upload_bytes.store(0, Ordering::Relaxed);
        self.put_bytes.store(0, Ordering::Relaxed);
        self.bodies.reset_peak();
    }
    fn push(&self, r: RequestRecord) {
        self.records.lock().unwrap().push(r);
    }
}

/// S3 front end state.
#[derive(Debug, Clone)]
pub struct Service {
    pub(crate) store: Arc<Store>,
    pub(crate) log: Arc<RequestLog>,
    pub(crate) shaping: Shaping,
    pub(crate) faults: Arc<Faults>,
}

const MAX_KEYS: usize = 1000;

impl Service {
    fn record(
        &self,
        op: &'static str,
        bucket: &str,
        key: &str,
        range: Option<(u64, Option<u64>)>,
        if_match: Option<String>,
    ) {
        self.log.push(RequestRecord { op, bucket: bucket.into(), key: key.into(), range, if_match, version_id: None });
    }

    async fn delay(&self) {
        if !self.shaping.first_byte_delay.is_zero() {
            tokio::time::sleep(self.shaping.first_byte_delay).await;
        }
    }

    /// Applies a fault that acts before the body: an error status or a delay.
    /// Returns the fault if it is one the operation itself must apply.
    async fn fault(&self, op: &str, key: &str) -> S3Result<Option<Fault>> {
        match self.faults.take(op, key) {
            None => Ok(None),
            Some(Fault::Status { status, code }) => Err(status_error(status, code)),
            Some(Fault::Delay(d)) => {
                tokio::time::sleep(d).await;
                Ok(None)
            }
            Some(Fault::Hold(gate)) => {
                gate.pass().await;
                Ok(None)
            }
            Some(f) => Ok(Some(f)),
        }
    }

    /// The start of an object operation: record it, apply a fault rule, and
    /// require the bucket. Returns a fault the operation itself must apply.
    async fn begin(&self, op: &'static str, bucket: &str, key: &str) -> S3Result<Option<Fault>> {
        self.record(op, bucket, key, None, None);
        let fault = self.fault(op, key).await?;
        self.require_bucket(bucket)?;
        Ok(fault)
    }

    fn require_bucket(&self, bucket: &str) -> S3Result<()> {
        if self.store.bucket_exists(bucket) {
            Ok(())
        } else {
            Err(s3_error!(NoSuchBucket, "The specified bucket does not exist"))
        }
    }
}

/// An injected error answer.
fn status_error(status: u16, code: &str) -> S3Error {
    let mut e = S3Error::with_message(
        S3ErrorCode::from_bytes(code.as_bytes()).unwrap_or(S3ErrorCode::InternalError),
        "injected fault",
    );
    e.set_status_code(http::StatusCode::from_u16(status).expect("valid status"));
    e
}

fn etag(v: &str) -> ETag {
    ETag::Strong(v.to_string())
}

fn sse(obj: &StoredObject) -> Option<ServerSideEncryption> {
    obj.sse_kms.then(|| ServerSideEncryption::from_static(ServerSideEncryption::AWS_KMS))
}

fn user_metadata(obj: &StoredObject) -> Option<s3s::dto::Metadata> {
    (!obj.metadata.is_empty()).then(|| obj.metadata.iter().map(|(k, v)| (k.clone(), v.clone())).collect())
}

fn checksum_enabled(mode: Option<&ChecksumMode>) -> bool {
    mode.is_some_and(|m| m.as_str().eq_ignore_ascii_case("ENABLED"))
}

/// The checksum fields of a response, one per algorithm, and the type.
#[derive(Default)]
struct ChecksumFields {
    crc64nvme: Option<String>,
    crc32: Option<String>,
    crc32c: Option<String>,
    sha256: Option<String>,
    sha1: Option<String>,
    kind: Option<ChecksumType>,
}

/// Sets the checksum fields of an output (`no_type` for outputs without one).
macro_rules! set_checksum {
    ($out:expr, $f:expr) => {{
        let f: ChecksumFields = $f;
        $out.checksum_type = f.kind.clone();
        set_checksum!($out, f, no_type);
    }};
    ($out:expr, $f:expr, no_type) => {{
        let f: ChecksumFields = $f;
        $out.checksum_crc64nvme = f.crc64nvme;
        $out.checksum_crc32 = f.crc32;
        $out.checksum_crc32c = f.crc32c;
        $out.checksum_sha256 = f.sha256;
        $out.checksum_sha1 = f.sha1;
    }};
}

/// The checksum fields of a response: the object's checksum when the client
/// asked for checksums (`x-amz-checksum-mode: ENABLED`), altered by a
/// `WrongChecksum` fault; nothing otherwise.
fn checksum_fields(obj: &StoredObject, mode: Option<&ChecksumMode>, fault: Option<&Fault>) -> ChecksumFields {
    match obj.checksum.filter(|_| checksum_enabled(mode)) {
        Some(c) if matches!(fault, Some(Fault::WrongChecksum)) => checksum_headers(c.wrong()),
        Some(c) => checksum_headers(c),
        None => ChecksumFields::default(),
    }
}

/// The checksum response fields for an object's checksum, if it has one.
fn stored_fields(c: Option<StoredChecksum>) -> ChecksumFields {
    c.map_or_else(ChecksumFields::default, checksum_headers)
}

/// The checksum response fields for a checksum.
fn checksum_headers(c: StoredChecksum) -> ChecksumFields {
    let v = Some(c.to_base64());
    let kind = Some(ChecksumType::from_static(if c.composite_parts.is_some() {
        ChecksumType::COMPOSITE
    } else {
        ChecksumType::FULL_OBJECT
    }));
    let mut f = ChecksumFields { kind, ..Default::default() };
    match c.algorithm {
        ChecksumAlgorithm::Crc64Nvme => f.crc64nvme = v,
        ChecksumAlgorithm::Crc32 => f.crc32 = v,
        ChecksumAlgorithm::Crc32c => f.crc32c = v,
        ChecksumAlgorithm::Sha256 => f.sha256 = v,
        ChecksumAlgorithm::Sha1 => f.sha1 = v,
    }
    f
}

/// The whole request body.
async fn read_body(body: Option<StreamingBlob>) -> S3Result<bytes::Bytes> {
    use futures::TryStreamExt;
    let Some(body) = body else { return Ok(bytes::Bytes::new()) };
    let chunks: Vec<bytes::Bytes> =
        body.try_collect().await.map_err(|e| s3_error!(IncompleteBody, "reading body: {e}"))?;
    Ok(chunks.concat().into())
}

fn algorithm_of(a: &s3s::dto::ChecksumAlgorithm) -> Option<ChecksumAlgorithm> {
    match a.as_str() {
        "CRC64NVME" => Some(ChecksumAlgorithm::Crc64Nvme),
        "CRC32" => Some(ChecksumAlgorithm::Crc32),
        "CRC32C" => Some(ChecksumAlgorithm::Crc32c),
        "SHA256" => Some(ChecksumAlgorithm::Sha256),
        "SHA1" => Some(ChecksumAlgorithm::Sha1),
        _ => None,
    }
}

/// The value of the checksum header given for `algorithm` (SHA checksums are
/// not sent by s3load; only CRC headers are read).
fn sent_value(
    algorithm: ChecksumAlgorithm,
    crc64nvme: &Option<String>,
    crc32: &Option<String>,
    crc32c: &Option<String>,
) -> Option<[u8; 32]> {
    let v = match algorithm {
        ChecksumAlgorithm::Crc64Nvme => crc64nvme,
        ChecksumAlgorithm::Crc32 => crc32,
        ChecksumAlgorithm::Crc32c => crc32c,
        ChecksumAlgorithm::Sha256 | ChecksumAlgorithm::Sha1 => &None,
    };
    // An unparseable value never matches.
    v.as_deref().map(|v| StoredChecksum::from_base64(algorithm, v).map_or([0xff; 32], |c| c.value))
}

/// Checks the checksum header a client sent with a body, as S3 does: a value that
/// does not match the bytes received is refused with BadDigest. Returns it.
fn sent_checksum(
    data: &[u8],
    crc64nvme: &Option<String>,
    crc32: &Option<String>,
    crc32c: &Option<String>,
) -> S3Result<Option<StoredChecksum>> {
    for a in [ChecksumAlgorithm::Crc64Nvme, ChecksumAlgorithm::Crc32, ChecksumAlgorithm::Crc32c] {
        if let Some(v) = sent_value(a, crc64nvme, crc32, crc32c) {
            let c = StoredChecksum::compute(a, data);
            if c.value != v {
                return Err(s3_error!(BadDigest, "the checksum given does not match the body received"));
            }
            return Ok(Some(c));
        }
    }
    Ok(None)
}

fn range_tuple(r: &Range) -> Option<(u64, Option<u64>)> {
    match *r {
        Range::Int { first, last } => Some((first, last)),
        Range::Suffix { .. } => None,
    }
}

#[async_trait::async_trait]
impl S3 for Service {
    async fn list_buckets(&self, _req: S3Request<ListBucketsInput>) -> S3Result<S3Response<ListBucketsOutput>> {
        self.delay().await;
        let buckets = self
            .store
            .bucket_names()
            .into_iter()
            .map(|name| Bucket { name: Some(name), ..Default::default() })
            .collect();
        Ok(S3Response::new(ListBucketsOutput { buckets: Some(buckets), ..Default::default() }))
    }

    async fn create_bucket(&self, req: S3Request<CreateBucketInput>) -> S3Result<S3Response<CreateBucketOutput>> {
        self.store.create_bucket(&req.input.bucket);
        Ok(S3Response::new(CreateBucketOutput::default()))
    }

    async fn head_bucket(&self, req: S3Request<HeadBucketInput>) -> S3Result<S3Response<HeadBucketOutput>> {
        self.delay().await;
        self.record("HeadBucket", &req.input.bucket, "", None, None);
        self.fault("HeadBucket", "").await?;
        self.require_bucket(&req.input.bucket)?;
        let region = self.store.region(&req.input.bucket);
        Ok(S3Response::new(HeadBucketOutput { bucket_region: Some(region), ..Default::default() }))
    }

    async fn get_bucket_location(
        &self,
        req: S3Request<GetBucketLocationInput>,
    ) -> S3Result<S3Response<GetBucketLocationOutput>> {
        self.require_bucket(&req.input.bucket)?;
        Ok(S3Response::new(GetBucketLocationOutput::default()))
    }

    async fn list_objects_v2(&self, req: S3Request<ListObjectsV2Input>) -> S3Result<S3Response<ListObjectsV2Output>> {
        self.delay().await;
        self.log.signed_for("ListObjectsV2", &req);
        let input = req.input;
        let prefix = input.prefix.clone().unwrap_or_default();
        self.record("ListObjectsV2", &input.bucket, &prefix, None, None);
        let fault = self.fault("ListObjectsV2", &prefix).await?;
        let max_keys = match fault {
            Some(Fault::TruncatedWithoutToken | Fault::RepeatToken) => 1,
            _ => input.max_keys.map_or(MAX_KEYS, |m| (m.max(0) as usize).min(MAX_KEYS)),
        };
        let delimiter = input.delimiter.clone().filter(|d| !d.is_empty());
        // The continuation token is the last key or common prefix already returned.
        let after = input.continuation_token.clone().or(input.start_after.clone());

        let page = self.store.with_bucket(&input.bucket, |objects| {
            let lower = match &after {
                Some(a) if a.as_str() >= prefix.as_str() => Bound::Excluded(a.clone()),
                _ => Bound::Included(prefix.clone()),
            };
            // Resuming after a common prefix: skip the keys it stood for.
            let skip_under = after.as_deref().filter(|a| delimiter.as_deref().is_some_and(|d| a.ends_with(d)));
            let mut contents = Vec::new();
            let mut prefixes: Vec<String> = Vec::new();
            let mut last = None;
            let mut truncated = false;
            for (key, obj) in objects.range::<String, _>((lower, Bound::Unbounded)) {
                if !key.starts_with(&prefix) {
                    break;
                }
                if skip_under.is_some_and(|a| key.starts_with(a)) {
                    continue;
                }
                let common = delimiter.as_ref().and_then(|d| {
                    key[prefix.len()..].find(d.as_str()).map(|i| key[..prefix.len() + i + d.len()].to_string())
                });
                if common.is_some() && prefixes.last() == common.as_ref() {
                    continue;
                }
                if contents.len() + prefixes.len() == max_keys {
                    truncated = true;
                    break;
                }
                match common {
                    Some(cp) => {
                        last = Some(cp.clone());
                        prefixes.push(cp);
                    }
                    None => {
                        last = Some(key.clone());
                        contents.push(Object {
                            key: Some(key.clone()),
                            size: Some(obj.data.len() as i64),
                            e_tag: Some(etag(&obj.etag)),
                            last_modified: Some(obj.last_modified.into()),
                            storage_class: Some(obj.storage_class.clone().map_or(
                                ObjectStorageClass::from_static(ObjectStorageClass::STANDARD),
                                ObjectStorageClass::from,
                            )),
                            ..Default::default()
                        });
                    }
                }
            }
            (contents, prefixes, truncated, last)
        });
        let Some((contents, prefixes, truncated, last)) = page else {
            return Err(s3_error!(NoSuchBucket, "The specified bucket does not exist"));
        };
        let key_count = (contents.len() + prefixes.len()) as i32;
        let mut contents = contents;
        if matches!(fault, Some(Fault::NoSize)) {
            contents.iter_mut().for_each(|o| o.size = None);
        }
        if let Some(Fault::AnswerLate(d)) = fault {
            tokio::time::sleep(d).await;
        }
        if let Some(Fault::HoldAnswer(gate)) = &fault {
            gate.pass().await;
        }
        let next_continuation_token = match fault {
            Some(Fault::TruncatedWithoutToken) => None,
            Some(Fault::RepeatToken) => Some(input.continuation_token.clone().unwrap_or_else(|| "again".into())),
            _ if truncated => last,
            _ => None,
        };
        let output = ListObjectsV2Output {
            name: Some(input.bucket),
            prefix: input.prefix,
            delimiter,
            max_keys: Some(max_keys as i32),
            key_count: Some(key_count),
            continuation_token: input.continuation_token,
            is_truncated: Some(truncated),
            next_continuation_token,
            contents: Some(contents),
            common_prefixes: Some(prefixes.into_iter().map(|p| CommonPrefix { prefix: Some(p) }).collect()),
            ..Default::default()
        };
        Ok(S3Response::new(output))
    }

    async fn head_object(&self, req: S3Request<HeadObjectInput>) -> S3Result<S3Response<HeadObjectOutput>> {
        self.delay().await;
        let input = req.input;
        let fault = self.begin("HeadObject", &input.bucket, &input.key).await?;
        let Some(obj) = self.store.get_version(&input.bucket, &input.key, input.version_id.as_deref()) else {
            return Err(s3_error!(NoSuchKey));
        };
        let mut out = HeadObjectOutput {
            content_length: Some(obj.data.len() as i64),
            e_tag: Some(etag(&obj.etag)),
            last_modified: Some(obj.last_modified.into()),
            accept_ranges: Some("bytes".into()),
            version_id: obj.version_id.clone(),
            server_side_encryption: sse(&obj),
            storage_class: obj.storage_class.clone().map(StorageClass::from),
            content_type: obj.content_type.clone(),
            metadata: user_metadata(&obj),
            ..Default::default()
        };
        // With partNumber, S3 describes that part of a multipart upload.
        if let (Some(_), Some(Fault::ClaimParts { count, part_size })) = (input.part_number, &fault) {
            out.content_length = Some(*part_size as i64);
            out.parts_count = Some(*count);
            return Ok(S3Response::new(out));
        }
        if let Some(n) = input.part_number.filter(|_| !obj.part_sizes.is_empty()) {
            let Some(r) = obj.part_range(n as usize) else {
                return Err(s3_error!(InvalidPart, "The requested partnumber is not satisfiable"));
            };
            out.content_length = Some((r.end - r.start) as i64);
            out.parts_count = Some(obj.part_sizes.len() as i32);
            return Ok(S3Response::new(out));
        }
        if let Some(Fault::ClaimSize(n)) = fault {
            out.content_length = Some(n as i64);
        }
        set_checksum!(out, checksum_fields(&obj, input.checksum_mode.as_ref(), fault.as_ref()));
        Ok(S3Response::new(out))
    }

    async fn get_object(&self, req: S3Request<GetObjectInput>) -> S3Result<S3Response<GetObjectOutput>> {
        self.delay().await;
        self.log.signed_for("GetObject", &req);
        let input = req.input;
        let if_match = input.if_match.as_ref().and_then(|c| c.as_etag()).map(|e| e.value().to_string());
        self.log.push(RequestRecord {
            op: "GetObject",
            bucket: input.bucket.clone(),
            key: input.key.clone(),
            range: input.range.as_ref().and_then(range_tuple),
            if_match: if_match.clone(),
            version_id: input.version_id.clone(),
        });
        let fault = self.fault("GetObject", &input.key).await?;
        self.require_bucket(&input.bucket)?;
        if input.version_id.is_some() && matches!(fault, Some(Fault::DenyVersions)) {
            return Err(s3_error!(AccessDenied, "Access Denied"));
        }
        if let Some(Fault::Replace(data)) = &fault {
            let when = std::time::SystemTime::now();
            self.store.put_object(&input.bucket, &input.key, StoredObject::new(data.clone(), when));
        }
        let Some(obj) = self.store.get_version(&input.bucket, &input.key, input.version_id.as_deref()) else {
            return Err(s3_error!(NoSuchKey, "The specified key does not exist."));
        };
        if if_match.as_ref().is_some_and(|m| m != &obj.etag) {
            return Err(s3_error!(PreconditionFailed, "At least one of the pre-conditions you specified did not hold"));
        }
        let total = obj.data.len() as u64;
        let range = input.range.as_ref().filter(|_| !matches!(fault, Some(Fault::IgnoreRange)));
        let (body, content_range) = match range {
            None => (obj.data.clone(), None),
            Some(r) => {
                let mut rng =
                    r.check(total).map_err(|_| s3_error!(InvalidRange, "The requested range is not satisfiable"))?;
                if let Some(Fault::ShortRange(n)) = fault {
                    rng.end = rng.end.min(rng.start + n);
                }
                let slice = obj.data.slice(rng.start as usize..rng.end as usize);
                (slice, Some(format!("bytes {}-{}/{}", rng.start, rng.end.max(rng.start + 1) - 1, total)))
            }
        };
        let len = body.len() as i64;
        let body_fault = fault.as_ref().and_then(Fault::body_fault);
        let mut rate = self.shaping.rate_per_connection;
        if let Some(s) = self.shaping.straggler {
            let n = self.log.get_bodies.fetch_add(1, Ordering::Relaxed) + 1;
            if s.every > 0 && n.is_multiple_of(s.every) {
                rate = Some(s.rate);
            }
        }
        let stream = ShapedBody::new(body, rate, self.shaping.total_rate, self.log.clone(), body_fault);
        let mut out = GetObjectOutput {
            body: Some(StreamingBlob::wrap(stream)),
            content_length: Some(len),
            content_range: content_range.clone(),
            accept_ranges: Some("bytes".into()),
            e_tag: Some(etag(&obj.etag)),
            last_modified: Some(obj.last_modified.into()),
            version_id: obj.version_id.clone(),
            server_side_encryption: sse(&obj),
            storage_class: obj.storage_class.clone().map(StorageClass::from),
            content_type: obj.content_type.clone(),
            metadata: user_metadata(&obj),
            ..Default::default()
        };
        // Like S3: the full-object checksum only comes with a full-object body.
        if content_range.is_none() {
            set_checksum!(out, checksum_fields(&obj, input.checksum_mode.as_ref(), fault.as_ref()));
        }
        Ok(S3Response::new(out))
    }

    async fn put_object(&self, req: S3Request<PutObjectInput>) -> S3Result<S3Response<PutObjectOutput>> {
        let input = req.input;
        let fault = self.begin("PutObject", &input.bucket, &input.key).await?;
        let mut data = read_body(input.body).await?;
        self.log.put_bytes.fetch_add(data.len() as u64, Ordering::Relaxed);
        if let Some(Fault::FlipByte(at)) = fault
            && (at as usize) < data.len()
        {
            let mut v = data.to_vec();
            v[at as usize] ^= 0xff;
            data = v.into();
        }
        let sent = sent_checksum(&data, &input.checksum_crc64nvme, &input.checksum_crc32, &input.checksum_crc32c)?;
        let algorithm = sent.map(|c| c.algorithm).or_else(|| input.checksum_algorithm.as_ref().and_then(algorithm_of));
        let mut obj = StoredObject::with_checksum(
            data,
            std::time::SystemTime::now(),
            algorithm.or(Some(ChecksumAlgorithm::Crc64Nvme)),
        );
        obj.storage_class = input.storage_class.map(|c| c.as_str().to_string());
        obj.content_type = input.content_type;
        let checksum = obj.checksum;
        let obj = self.store.put_object(&input.bucket, &input.key, obj);
        let mut out =
            PutObjectOutput { e_tag: Some(etag(&obj.etag)), version_id: obj.version_id.clone(), ..Default::default() };
        set_checksum!(out, stored_fields(checksum));
        Ok(S3Response::new(out))
    }

    async fn create_multipart_upload(
        &self,
        req: S3Request<CreateMultipartUploadInput>,
    ) -> S3Result<S3Response<CreateMultipartUploadOutput>> {
        let input = req.input;
        self.begin("CreateMultipartUpload", &input.bucket, &input.key).await?;
        let algorithm = input.checksum_algorithm.as_ref().and_then(algorithm_of);
        let full = input.checksum_type.as_ref().is_some_and(|t| t.as_str() == ChecksumType::FULL_OBJECT);
        let upload = PendingUpload {
            bucket: input.bucket.clone(),
            key: input.key.clone(),
            checksum: algorithm.map(|a| (a, full)),
            storage_class: input.storage_class.map(|c| c.as_str().to_string()),
            content_type: input.content_type,
            parts: Default::default(),
        };
        let id = self.store.create_upload(upload);
        Ok(S3Response::new(CreateMultipartUploadOutput {
            bucket: Some(input.bucket),
            key: Some(input.key),
            upload_id: Some(id),
            checksum_algorithm: input.checksum_algorithm,
            checksum_type: input.checksum_type,
            ..Default::default()
        }))
    }

    async fn upload_part(&self, req: S3Request<UploadPartInput>) -> S3Result<S3Response<UploadPartOutput>> {
        let input = req.input;
        self.record("UploadPart", &input.bucket, &input.key, None, None);
        let fault = self.fault("UploadPart", &input.key).await?;
        let mut data = read_body(input.body).await?;
        // Corruption on the way in: the checksum check below must catch it.
        if let Some(Fault::FlipByte(at)) = fault
            && (at as usize) < data.len()
        {
            let mut v = data.to_vec();
            v[at as usize] ^= 0xff;
            data = v.into();
        }
        self.log.upload_bytes.fetch_add(data.len() as u64, Ordering::Relaxed);
        let sent = sent_checksum(&data, &input.checksum_crc64nvme, &input.checksum_crc32, &input.checksum_crc32c)?;
        let tag = hex::encode(<md5::Md5 as md5::Digest>::digest(&data));
        let n = input.part_number;
        let declared = self
            .store
            .with_upload(&input.upload_id, |u| {
                u.parts.insert(n, (data.clone(), tag.clone()));
                u.checksum
            })
            .ok_or_else(|| s3_error!(NoSuchUpload))?;
        let mut out = UploadPartOutput { e_tag: Some(etag(&tag)), ..Default::default() };
        let part = sent.or_else(|| declared.map(|(a, _)| StoredChecksum::compute(a, &data)));
        if let Some(c) = part {
            set_checksum!(out, checksum_headers(c), no_type);
        }
        Ok(S3Response::new(out))
    }

    async fn complete_multipart_upload(
        &self,
        req: S3Request<CompleteMultipartUploadInput>,
    ) -> S3Result<S3Response<CompleteMultipartUploadOutput>> {
        let input = req.input;
        self.record("CompleteMultipartUpload", &input.bucket, &input.key, None, None);
        let fault = self.fault("CompleteMultipartUpload", &input.key).await?;
        let listed = input.multipart_upload.and_then(|m| m.parts).unwrap_or_default();
        let upload = self.store.with_upload(&input.upload_id, |u| u.clone()).ok_or_else(|| s3_error!(NoSuchUpload))?;
        let mut parts = Vec::new();
        let mut last = 0;
        for p in &listed {
            let n = p.part_number.unwrap_or(0);
            if n <= last {
                return Err(s3_error!(InvalidPartOrder, "parts must be listed in ascending order"));
            }
            last = n;
            let Some((data, tag)) = upload.parts.get(&n) else {
                return Err(s3_error!(InvalidPart, "part {n} was not uploaded"));
            };
            let given = p.e_tag.as_ref().map(|e| e.value().trim_matches('"').to_string());
            if given.as_deref() != Some(tag.as_str()) {
                return Err(s3_error!(InvalidPart, "part {n}: ETag does not match"));
            }
            parts.push(data.clone());
        }
        if parts.is_empty() {
            return Err(s3_error!(MalformedXML, "no parts listed"));
        }
        let (algorithm, full) = match upload.checksum {
            Some((a, full)) => (Some(a), full),
            None => (None, false),
        };
        let mut obj = StoredObject::multipart(&parts, std::time::SystemTime::now(), algorithm, !full);
        if let (Some(c), true) = (obj.checksum, full) {
            let given =
                sent_value(c.algorithm, &input.checksum_crc64nvme, &input.checksum_crc32, &input.checksum_crc32c);
            if given.is_some_and(|g| g != c.value) {
                return Err(s3_error!(BadDigest, "the full-object checksum given does not match the parts uploaded"));
            }
        }
        obj.storage_class = upload.storage_class.clone();
        obj.content_type = upload.content_type.clone();
        self.store.take_upload(&input.upload_id);
        let checksum = obj.checksum;
        let obj = self.store.put_object(&input.bucket, &input.key, obj);
        if let Some(Fault::ApplyThenStatus { status, code }) = fault {
            return Err(status_error(status, code));
        }
        let mut out = CompleteMultipartUploadOutput {
            bucket: Some(input.bucket),
            key: Some(input.key),
            e_tag: Some(etag(&obj.etag)),
            version_id: obj.version_id.clone(),
            ..Default::default()
        };
        set_checksum!(out, stored_fields(checksum));
        Ok(S3Response::new(out))
    }

    async fn abort_multipart_upload(
        &self,
        req: S3Request<AbortMultipartUploadInput>,
    ) -> S3Result<S3Response<AbortMultipartUploadOutput>> {
        let input = req.input;
        self.record("AbortMultipartUpload", &input.bucket, &input.key, None, None);
        self.fault("AbortMultipartUpload", &input.key).await?;
        match self.store.take_upload(&input.upload_id) {
            Some(_) => Ok(S3Response::new(AbortMultipartUploadOutput::default())),
            None => Err(s3_error!(NoSuchUpload)),
        }
    }

    async fn delete_object(&self, req: S3Request<DeleteObjectInput>) -> S3Result<S3Response<DeleteObjectOutput>> {
        let input = req.input;
        self.begin("DeleteObject", &input.bucket, &input.key).await?;
        self.store.delete(&input.bucket, &input.key);
        Ok(S3Response::new(DeleteObjectOutput::default()))
    }

    async fn delete_objects(&self, req: S3Request<DeleteObjectsInput>) -> S3Result<S3Response<DeleteObjectsOutput>> {
        let input = req.input;
        self.record("DeleteObjects", &input.bucket, "", None, None);
        // Rules for the request as a whole use the op "DeleteObjectsRequest".
        self.fault("DeleteObjectsRequest", "").await?;
        self.require_bucket(&input.bucket)?;
        let mut deleted = Vec::new();
        let mut errors = Vec::new();
        for o in input.delete.objects {
            // A per-key fault rule (op "DeleteObjects", key) fails that key
            // alone: with the code of a `Status` fault, else AccessDenied.
            if let Some(fault) = self.faults.take("DeleteObjects", &o.key) {
                let code = match fault {
                    Fault::Status { code, .. } => code,
                    _ => "AccessDenied",
                };
                errors.push(Error {
                    code: Some(code.into()),
                    key: Some(o.key),
                    message: Some("injected fault".into()),
                    ..Default::default()
                });
                continue;
            }
            self.store.delete(&input.bucket, &o.key);
            deleted.push(DeletedObject { key: Some(o.key), ..Default::default() });
        }
        Ok(S3Response::new(DeleteObjectsOutput { deleted: Some(deleted), errors: Some(errors), ..Default::default() }))
    }
}
