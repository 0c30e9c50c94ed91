//! [`ObjectStore`] on the AWS SDK for Rust: the only module that imports `aws_sdk_s3`.
//!
//! Credentials come from the SDK's default chain (environment, shared profile, IRSA
//! web identity, EKS Pod Identity, IMDSv2). When an endpoint is given (flag,
//! `AWS_ENDPOINT_URL_S3` or `AWS_ENDPOINT_URL`) requests use path-style addressing,
//! which every S3-compatible store accepts. The region comes from `--region`, the
//! environment or the profile; failing those it is discovered from the bucket
//! (HeadBucket), with or without a custom endpoint.
//!
//! Retries: listing, HEAD, DeleteObjects and AbortMultipartUpload use the SDK's
//! standard retry (bounded by `--retry-count`). GET and the upload requests have
//! SDK retries turned off because the engine retries them itself (a GET resuming
//! a broken body from the first byte not yet written), under its retry budget
//! and adaptive limiter.

use std::time::{Duration, SystemTime};

use aws_config::BehaviorVersion;
use aws_config::retry::RetryConfig;
use aws_config::timeout::TimeoutConfig;
use aws_sdk_s3::Client;
use aws_sdk_s3::config::{ProvideCredentials, Region, RequestChecksumCalculation, ResponseChecksumValidation};
use aws_sdk_s3::error::{DisplayErrorContext, ProvideErrorMetadata, SdkError};
use aws_sdk_s3::primitives::DateTime;
use aws_sdk_s3::primitives::{ByteStream, Length};
use aws_sdk_s3::types::{
    ChecksumMode, ChecksumType, CompletedMultipartUpload, CompletedPart, Delete, ObjectIdentifier, StorageClass,
};

use crate::integrity::{Algorithm, Sha, Stated, to_base64};

use super::{FileRange, GetRequest, GetResponse, ListPage, ObjectMeta, ObjectStore, PutTarget, UploadedPart};
use crate::error::{StoreError, StoreErrorKind};

/// Connection settings, resolved from flags and environment by the CLI layer.
#[derive(Debug, Clone)]
pub struct S3Settings {
    pub endpoint_url: Option<String>,
    pub region: Option<String>,
    pub profile: Option<String>,
    pub no_sign_request: bool,
    /// Retries after the first attempt for listing and HEAD.
    pub retry_count: u32,
    /// Fixed credentials for embedders and the demo; the CLI never sets this (secrets
    /// do not belong on a command line) and uses the default chain instead.
    pub static_credentials: Option<(String, String)>,
    /// Longest wait for one attempt of a request without a streamed body
    /// (listing, HEAD, HeadBucket, DeleteObjects, CreateMultipartUpload,
    /// AbortMultipartUpload, ListBuckets), answer included; then it is retried.
    pub request_timeout: Duration,
}

/// `--request-timeout`'s default: S3 answers these in milliseconds; a listing
/// page of 1,000 keys or a DeleteObjects of 1,000 keys in a few seconds.
pub const DEFAULT_REQUEST_TIMEOUT: Duration = Duration::from_secs(30);

impl Default for S3Settings {
    fn default() -> Self {
        S3Settings {
            endpoint_url: None,
            region: None,
            profile: None,
            no_sign_request: false,
            retry_count: 0,
            static_credentials: None,
            request_timeout: DEFAULT_REQUEST_TIMEOUT,
        }
    }
}

/// Region used when none is configured and the bucket does not say (S3-compatible
/// stores accept any region in the signature; most expect this one).
const DEFAULT_REGION: &str = "us-east-1";
/// A dead endpoint should fail in seconds, not minutes.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

pub struct S3Store {
    /// Requests without a streamed body: each attempt bounded by `request_timeout`.
    client: Client,
    /// GET, PutObject, UploadPart, CompleteMultipartUpload: bounded by the engine
    /// (stall timeout and minimum rate for bodies, a time per byte for uploads).
    body_client: Client,
}

impl S3Store {
    /// Builds a client. `bucket` is used to discover the region when none is set.
    pub async fn connect(settings: &S3Settings, bucket: Option<&str>) -> Result<S3Store, StoreError> {
        let mut loader = aws_config::defaults(BehaviorVersion::latest())
            // s3load verifies bodies itself, also across ranged parts (see
            // `integrity`); the SDK's own check would only cover whole-object GETs
            // and compute every CRC a second time.
            .response_checksum_validation(ResponseChecksumValidation::WhenRequired)
            // Uploads state their checksums themselves (computed from the file,
            // see `transfer::upload`); the SDK adds one only where S3 requires it.
            .request_checksum_calculation(RequestChecksumCalculation::WhenRequired)
            .retry_config(RetryConfig::standard().with_max_attempts(settings.retry_count.saturating_add(1)))
            .timeout_config(TimeoutConfig::builder().connect_timeout(CONNECT_TIMEOUT).build());
        if let Some(p) = &settings.profile {
            loader = loader.profile_name(p);
        }
        // Region: flag, environment, profile. Not instance metadata: when none is
        // set, the bucket is asked (below), which works everywhere and never waits.
        loader = match &settings.region {
            Some(r) => loader.region(Region::new(r.clone())),
            None => {
                let mut profile = aws_config::profile::ProfileFileRegionProvider::builder();
                if let Some(p) = &settings.profile {
                    profile = profile.profile_name(p);
                }
                loader.region(
                    aws_config::meta::region::RegionProviderChain::first_try(
                        aws_config::environment::EnvironmentVariableRegionProvider::new(),
                    )
                    .or_else(profile.build()),
                )
            }
        };
        if settings.no_sign_request {
            loader = loader.no_credentials();
        } else if let Some((id, secret)) = &settings.static_credentials {
            loader = loader.credentials_provider(aws_sdk_s3::config::Credentials::new(
                id,
                secret,
                None,
                None,
                "s3load-static",
            ));
        }
        if let Some(e) = &settings.endpoint_url {
            loader = loader.endpoint_url(e);
        }
        let sdk = loader.load().await;

        if !settings.no_sign_request {
            check_credentials(&sdk).await?;
        }

        let path_style = settings.endpoint_url.is_some();
        let bounded = TimeoutConfig::builder()
            .connect_timeout(CONNECT_TIMEOUT)
            .operation_attempt_timeout(settings.request_timeout)
            .build();
        let build_with = |region: Option<Region>, timeouts: TimeoutConfig| {
            let mut b = aws_sdk_s3::config::Builder::from(&sdk).force_path_style(path_style).timeout_config(timeouts);
            if region.is_some() {
                b = b.region(region);
            }
            Client::from_conf(b.build())
        };
        let build = |region: Option<Region>| build_with(region, bounded.clone());

        // No region configured: ask the bucket (HeadBucket answers with
        // `x-amz-bucket-region`, S3 and most S3-compatible stores alike).
        let region = match (sdk.region(), bucket) {
            (Some(r), _) => r.clone(),
            (None, Some(b)) => discover_region(&build(Some(Region::from_static(DEFAULT_REGION))), b).await,
            (None, None) => Region::from_static(DEFAULT_REGION),
        };
        let unbounded = TimeoutConfig::builder().connect_timeout(CONNECT_TIMEOUT).build();
        Ok(S3Store { client: build(Some(region.clone())), body_client: build_with(Some(region), unbounded) })
    }
}

async fn check_credentials(sdk: &aws_config::SdkConfig) -> Result<(), StoreError> {
    let Some(provider) = sdk.credentials_provider() else {
        return Err(StoreError::new(StoreErrorKind::Credentials, "no AWS credentials provider is configured"));
    };
    provider.provide_credentials().await.map(|_| ()).map_err(|e| {
        StoreError::new(
            StoreErrorKind::Credentials,
            format!(
                "no AWS credentials found. Tried, in order: AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY; the profile (AWS_PROFILE or --profile) in ~/.aws/credentials and ~/.aws/config; web identity (IRSA: AWS_WEB_IDENTITY_TOKEN_FILE + AWS_ROLE_ARN); container credentials (EKS Pod Identity: AWS_CONTAINER_CREDENTIALS_FULL_URI + AWS_CONTAINER_AUTHORIZATION_TOKEN_FILE); instance metadata (EC2 node role). Set one of these, or use --no-sign-request for a public bucket. Details: {}",
                DisplayErrorContext(&e)
            ),
        )
    })
}

/// Asks the store where the bucket lives: HeadBucket answers with
/// `x-amz-bucket-region`, also on the 301 or 403 S3 returns when asked in the
/// wrong region or without `s3:ListBucket`. When no answer carries it, the
/// default region is used and the real request reports any error.
async fn discover_region(client: &Client, bucket: &str) -> Region {
    let found = match client.head_bucket().bucket(bucket).send().await {
        Ok(out) => out.bucket_region().map(str::to_string),
        Err(SdkError::ServiceError(se)) => se.raw().headers().get("x-amz-bucket-region").map(str::to_string),
        Err(e) => {
            tracing::debug!(error = %DisplayErrorContext(&e), "could not ask the bucket for its region");
            None
        }
    };
    tracing::debug!(bucket, region = ?found, "bucket region");
    Region::new(found.unwrap_or_else(|| DEFAULT_REGION.to_string()))
}

/// Whether a 404 means the bucket or the key is missing.
#[derive(Clone, Copy)]
enum ObjectKind {
    Bucket,
    Key,
}

fn map_service(status: u16, code: Option<&str>, message: Option<&str>, what: ObjectKind) -> StoreError {
    use StoreErrorKind as K;
    let kind = match (code, status) {
        (Some("NoSuchBucket"), _) => K::NoSuchBucket,
        (Some("NoSuchKey"), _) => K::NoSuchKey,
        (Some("NoSuchUpload"), _) => K::NoSuchUpload,
        (Some("BadDigest" | "InvalidDigest" | "XAmzContentChecksumMismatch"), _) => K::BadDigest,
        // The store lacks the operation: asking again will not help.
        (Some("NotImplemented"), _) | (_, 501) => K::Other,
        (Some("AccessDenied" | "InvalidAccessKeyId" | "SignatureDoesNotMatch" | "ExpiredToken"), _)
        | (_, 401 | 403) => K::AccessDenied,
        (Some("SlowDown" | "Throttling" | "ThrottlingException" | "RequestLimitExceeded"), _) | (_, 429 | 503) => {
            K::Throttled
        }
        (_, 404) => match what {
            ObjectKind::Bucket => K::NoSuchBucket,
            ObjectKind::Key => K::NoSuchKey,
        },
        (_, 412) => K::PreconditionFailed,
        (_, 416) => K::InvalidRange,
        (_, 500..=599) => K::ServerError,
        _ => K::Other,
    };
    let text = match (code, message) {
        (Some(c), Some(m)) => format!("{c}: {m} (HTTP {status})"),
        (Some(c), None) => format!("{c} (HTTP {status})"),
        (None, _) => match kind {
            K::NoSuchBucket => format!("bucket not found (HTTP {status})"),
            K::NoSuchKey => format!("object not found (HTTP {status})"),
            K::AccessDenied => format!("access denied (HTTP {status})"),
            _ => format!("HTTP {status}"),
        },
    };
    StoreError::new(kind, text)
}

fn map_sdk_err<E, R>(err: SdkError<E, R>, what: ObjectKind) -> StoreError
where
    E: ProvideErrorMetadata + std::error::Error + Send + Sync + 'static,
    R: std::fmt::Debug + HasStatus + 'static,
{
    match &err {
        SdkError::ServiceError(se) => map_service(se.raw().status_code(), se.err().code(), se.err().message(), what),
        SdkError::TimeoutError(_) | SdkError::ResponseError(_) => {
            StoreError::new(StoreErrorKind::Network, DisplayErrorContext(&err).to_string())
        }
        SdkError::DispatchFailure(d) => {
            let text = DisplayErrorContext(&err).to_string();
            if d.is_io() || d.is_timeout() {
                StoreError::new(StoreErrorKind::Network, text)
            } else if from_credentials(&err) {
                StoreError::new(StoreErrorKind::Credentials, text)
            } else {
                StoreError::new(StoreErrorKind::Network, text)
            }
        }
        _ => {
            let text = DisplayErrorContext(&err).to_string();
            let kind = if from_credentials(&err) { StoreErrorKind::Credentials } else { StoreErrorKind::Other };
            StoreError::new(kind, text)
        }
    }
}

/// Whether a failure comes from the credential chain: a `CredentialsError`
/// among its causes (the SDK wraps what the provider returned when it
/// resolves the request's identity).
fn from_credentials(err: &(dyn std::error::Error + 'static)) -> bool {
    let mut cause = Some(err);
    while let Some(e) = cause {
        if e.is::<aws_credential_types::provider::error::CredentialsError>() {
            return true;
        }
        cause = e.source();
    }
    false
}

/// The HTTP status of a raw response, whatever the SDK's response type.
trait HasStatus {
    fn status_code(&self) -> u16;
}

impl HasStatus for aws_sdk_s3::config::http::HttpResponse {
    fn status_code(&self) -> u16 {
        self.status().as_u16()
    }
}

fn unquote(etag: &str) -> String {
    etag.trim_matches('"').to_string()
}

fn to_system_time(dt: Option<&DateTime>) -> Option<SystemTime> {
    dt.and_then(|d| SystemTime::try_from(*d).ok())
}

/// S3's ETag is the MD5 of the upload unless the object is encrypted with
/// SSE-KMS (or DSSE-KMS) or a customer key.
fn etag_is_md5(sse: Option<&aws_sdk_s3::types::ServerSideEncryption>, sse_c: Option<&str>) -> bool {
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

fn stated_checksum(
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

/// For requests the engine retries itself (GET, and every upload request).
fn no_retries() -> aws_sdk_s3::config::Builder {
    aws_sdk_s3::config::Builder::default().retry_config(RetryConfig::disabled())
}

fn sdk_algorithm(a: Algorithm) -> aws_sdk_s3::types::ChecksumAlgorithm {
    use aws_sdk_s3::types::ChecksumAlgorithm as C;
    match a {
        Algorithm::Crc64Nvme => C::Crc64Nvme,
        Algorithm::Crc32 => C::Crc32,
        Algorithm::Crc32c => C::Crc32C,
    }
}

/// A request body read from a file range as it is sent (and again on a retry).
async fn file_body(r: &FileRange) -> Result<ByteStream, StoreError> {
    ByteStream::read_from()
        .path(&r.path)
        .offset(r.offset)
        .length(Length::Exact(r.len))
        .buffer_size(256 * 1024)
        .build()
        .await
        .map_err(|e| StoreError::new(StoreErrorKind::Other, format!("reading {}: {e}", r.path.display())))
}

/// Start offset from a `Content-Range: bytes a-b/total` header.
fn content_range_start(v: &str) -> Option<u64> {
    v.strip_prefix("bytes ")?.split('-').next()?.parse().ok()
}

#[async_trait::async_trait]
impl ObjectStore for S3Store {
    async fn list_page(
        &self,
        bucket: &str,
        prefix: &str,
        delimiter: Option<&str>,
        token: Option<String>,
    ) -> Result<ListPage, StoreError> {
        let out = self
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

    async fn head(&self, bucket: &str, key: &str) -> Result<ObjectMeta, StoreError> {
        let out = self
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

    async fn part_info(&self, bucket: &str, key: &str, n: u32) -> Result<Option<(u64, u32)>, StoreError> {
        let out = self
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

    async fn get(&self, req: &GetRequest) -> Result<GetResponse, StoreError> {
        let mut op = self.body_client.get_object().bucket(&req.bucket).key(&req.key);
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
            .config_override(no_retries())
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

    async fn put_object(&self, target: &PutTarget, body: FileRange, checksum: u64) -> Result<(), StoreError> {
        let value = to_base64(target.checksum, checksum);
        let mut op = self
            .body_client
            .put_object()
            .bucket(&target.bucket)
            .key(&target.key)
            .content_length(body.len as i64)
            .set_content_type(target.content_type.clone())
            .set_storage_class(target.storage_class.as_deref().map(StorageClass::from))
            .body(file_body(&body).await?);
        op = with_checksum!(op, target.checksum, value);
        op.customize()
            .config_override(no_retries())
            .disable_payload_signing()
            .send()
            .await
            .map_err(|e| map_sdk_err(e, ObjectKind::Bucket))?;
        Ok(())
    }

    async fn create_upload(&self, target: &PutTarget) -> Result<String, StoreError> {
        let out = self
            .client
            .create_multipart_upload()
            .bucket(&target.bucket)
            .key(&target.key)
            .set_content_type(target.content_type.clone())
            .set_storage_class(target.storage_class.as_deref().map(StorageClass::from))
            .checksum_algorithm(sdk_algorithm(target.checksum))
            .checksum_type(ChecksumType::FullObject)
            .customize()
            .config_override(no_retries())
            .send()
            .await
            .map_err(|e| map_sdk_err(e, ObjectKind::Bucket))?;
        out.upload_id()
            .map(str::to_string)
            .ok_or_else(|| StoreError::new(StoreErrorKind::Other, "CreateMultipartUpload returned no upload id"))
    }

    async fn upload_part(
        &self,
        target: &PutTarget,
        upload_id: &str,
        n: u32,
        body: FileRange,
        checksum: u64,
    ) -> Result<String, StoreError> {
        let value = to_base64(target.checksum, checksum);
        let mut op = self
            .body_client
            .upload_part()
            .bucket(&target.bucket)
            .key(&target.key)
            .upload_id(upload_id)
            .part_number(n as i32)
            .content_length(body.len as i64)
            .body(file_body(&body).await?);
        op = with_checksum!(op, target.checksum, value);
        let out = op
            .customize()
            .config_override(no_retries())
            .disable_payload_signing()
            .send()
            .await
            .map_err(|e| map_sdk_err(e, ObjectKind::Key))?;
        out.e_tag()
            .map(unquote)
            .ok_or_else(|| StoreError::new(StoreErrorKind::Other, format!("UploadPart {n} returned no ETag")))
    }

    async fn complete_upload(
        &self,
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
        let mut op = self
            .body_client
            .complete_multipart_upload()
            .bucket(&target.bucket)
            .key(&target.key)
            .upload_id(upload_id)
            .multipart_upload(CompletedMultipartUpload::builder().set_parts(Some(completed)).build())
            .checksum_type(ChecksumType::FullObject);
        op = with_checksum!(op, a, value);
        op.customize().config_override(no_retries()).send().await.map_err(|e| map_sdk_err(e, ObjectKind::Key))?;
        Ok(())
    }

    async fn abort_upload(&self, bucket: &str, key: &str, upload_id: &str) -> Result<(), StoreError> {
        self.client
            .abort_multipart_upload()
            .bucket(bucket)
            .key(key)
            .upload_id(upload_id)
            .send()
            .await
            .map_err(|e| map_sdk_err(e, ObjectKind::Key))?;
        Ok(())
    }

    async fn delete_objects(&self, bucket: &str, keys: &[String]) -> Result<Vec<(String, String)>, StoreError> {
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
        let out = self
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
            .map(|e| {
                let why = format!("{}: {}", e.code().unwrap_or("error"), e.message().unwrap_or(""));
                (e.key().unwrap_or_default().to_string(), why)
            })
            .collect())
    }

    async fn list_buckets(&self) -> Result<Vec<String>, StoreError> {
        let out = self.client.list_buckets().send().await.map_err(|e| map_sdk_err(e, ObjectKind::Bucket))?;
        Ok(out.buckets().iter().filter_map(|b| b.name().map(str::to_string)).collect())
    }
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

    #[test]
    fn a_404_means_bucket_or_key_depending_on_the_operation() {
        assert_eq!(map_service(404, None, None, ObjectKind::Bucket).kind, StoreErrorKind::NoSuchBucket);
        assert_eq!(map_service(404, None, None, ObjectKind::Key).kind, StoreErrorKind::NoSuchKey);
        assert_eq!(map_service(503, Some("SlowDown"), None, ObjectKind::Key).kind, StoreErrorKind::Throttled);
        assert_eq!(map_service(500, Some("InternalError"), None, ObjectKind::Key).kind, StoreErrorKind::ServerError);
        assert!(map_service(500, None, None, ObjectKind::Key).kind.is_transient());
        assert!(!map_service(403, None, None, ObjectKind::Key).kind.is_transient());
        assert!(!map_service(501, Some("NotImplemented"), None, ObjectKind::Key).kind.is_transient());
        assert_eq!(map_service(400, Some("BadDigest"), None, ObjectKind::Key).kind, StoreErrorKind::BadDigest);
    }
}
