//! The S3 client: settings, credentials, region discovery, and the two SDK
//! clients every request goes through (retries: see `store/s3/mod.rs`).

use std::time::Duration;

use aws_config::BehaviorVersion;
use aws_config::retry::RetryConfig;
use aws_config::timeout::TimeoutConfig;
use aws_sdk_s3::Client;
use aws_sdk_s3::config::{ProvideCredentials, Region, RequestChecksumCalculation, ResponseChecksumValidation};
use aws_sdk_s3::error::{DisplayErrorContext, SdkError};

use crate::error::{StoreError, StoreErrorKind};

use super::errors::{ObjectKind, map_sdk_err};

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
    /// Longest one such request may take, every attempt and the waits between
    /// them included (`--request-deadline`): a store that accepts connections
    /// and never answers fails the run in this time, not after every retry.
    pub request_deadline: Duration,
}

/// `--request-deadline`'s default: three attempts of the default
/// `--request-timeout`, so that a store that never answers fails a run
/// within two minutes of its start.
pub const DEFAULT_REQUEST_DEADLINE: Duration = Duration::from_secs(90);

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
            request_deadline: DEFAULT_REQUEST_DEADLINE,
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
    pub(super) client: Client,
    /// GET, PutObject, UploadPart, CompleteMultipartUpload: bounded by the engine
    /// (stall timeout and minimum rate for bodies, a time per byte for uploads),
    /// and retried by it only (no retries of the SDK's own).
    pub(super) body_client: Client,
    /// The store as messages name it: the endpoint, or S3 and its region.
    endpoint: String,
}

impl std::fmt::Debug for S3Store {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("S3Store").finish_non_exhaustive()
    }
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
            .operation_attempt_timeout(settings.request_timeout.min(settings.request_deadline))
            .operation_timeout(settings.request_deadline)
            .build();
        let build_with = |region: Option<Region>, timeouts: TimeoutConfig, retries: Option<RetryConfig>| {
            let mut b = aws_sdk_s3::config::Builder::from(&sdk).force_path_style(path_style).timeout_config(timeouts);
            if region.is_some() {
                b = b.region(region);
            }
            if let Some(r) = retries {
                b = b.retry_config(r);
            }
            Client::from_conf(b.build())
        };
        let build = |region: Option<Region>| build_with(region, bounded.clone(), None);

        // No region configured: ask the bucket (HeadBucket answers with
        // `x-amz-bucket-region`, S3 and most S3-compatible stores alike).
        let region = match (sdk.region(), bucket) {
            (Some(r), _) => r.clone(),
            (None, Some(b)) => discover_region(&build(Some(Region::from_static(DEFAULT_REGION))), b)
                .await
                .map_err(|e| at_store(settings.endpoint_url.as_deref().unwrap_or("S3"), e))?,
            (None, None) => Region::from_static(DEFAULT_REGION),
        };
        let endpoint = match &settings.endpoint_url {
            Some(e) => e.clone(),
            None => format!("S3 ({region})"),
        };
        let unbounded = TimeoutConfig::builder().connect_timeout(CONNECT_TIMEOUT).build();
        // The engine retries every request of this client itself. Set here,
        // not per request: an override per request rebuilds the client's
        // runtime components each time (5% of the CPU of 5,000 small GETs).
        let body_client = build_with(Some(region.clone()), unbounded, Some(RetryConfig::disabled()));
        Ok(S3Store { client: build(Some(region)), body_client, endpoint })
    }

    /// A failure to reach the store names the store.
    pub(super) fn at(&self, e: StoreError) -> StoreError {
        at_store(&self.endpoint, e)
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

/// A failure to reach the store, naming the store (`endpoint`).
fn at_store(endpoint: &str, e: StoreError) -> StoreError {
    match e.kind {
        StoreErrorKind::Network => StoreError::new(e.kind, format!("the store at {endpoint}: {}", e.message)),
        _ => e,
    }
}

/// Asks the store where the bucket lives: HeadBucket answers with
/// `x-amz-bucket-region`, also on the 301 or 403 S3 returns when asked in the
/// wrong region or without `s3:ListBucket`. When an answer does not carry
/// it, the default region is used and the real request reports any error;
/// when there is no answer (a timeout, no connection), the run fails now.
async fn discover_region(client: &Client, bucket: &str) -> Result<Region, StoreError> {
    let found = match client.head_bucket().bucket(bucket).send().await {
        Ok(out) => out.bucket_region().map(str::to_string),
        Err(SdkError::ServiceError(se)) => se.raw().headers().get("x-amz-bucket-region").map(str::to_string),
        // A store that cannot be reached or does not answer will not answer
        // the listing either: fail now, not after a second deadline.
        Err(e @ (SdkError::TimeoutError(_) | SdkError::DispatchFailure(_))) => {
            return Err(map_sdk_err(e, ObjectKind::Bucket));
        }
        Err(e) => {
            tracing::debug!(error = %DisplayErrorContext(&e), "could not ask the bucket for its region");
            None
        }
    };
    tracing::debug!(bucket, region = ?found, "bucket region");
    Ok(Region::new(found.unwrap_or_else(|| DEFAULT_REGION.to_string())))
}

/// For requests the engine retries itself that go through `client`
/// (`body_client` has no retries of its own).
pub(super) fn no_retries() -> aws_sdk_s3::config::Builder {
    aws_sdk_s3::config::Builder::default().retry_config(RetryConfig::disabled())
}
