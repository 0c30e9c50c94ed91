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

use super::errors::{ObjectKind, map_sdk_err, map_service};

/// Connection settings, resolved from flags and environment by the CLI layer.
#[derive(Debug, Clone)]
pub struct S3Settings {
    pub endpoint_url: Option<String>,
    pub region: Option<String>,
    pub profile: Option<String>,
    pub no_sign_request: bool,
    /// Fixed credentials for embedders and the demo; the CLI never sets this (secrets
    /// do not belong on a command line) and uses the default chain instead.
    pub static_credentials: Option<(String, String)>,
    /// Longest wait for one attempt of a request without a streamed body
    /// (listing, HEAD, HeadBucket, DeleteObjects, CreateMultipartUpload,
    /// AbortMultipartUpload, ListBuckets), answer included; then it is
    /// retried (by `transfer::requests`, which applies both limits).
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
    /// Every request: bounded and retried by s3load's own loop only
    /// (`transfer::requests`; bodies by the engine: stall timeout and
    /// minimum rate, a time per byte for uploads).
    pub(super) client: Client,
    /// The store as messages name it: the endpoint, or S3 and its region.
    endpoint: String,
}

impl std::fmt::Debug for S3Store {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("S3Store").finish_non_exhaustive()
    }
}

/// A client configured (settings, credentials) whose region may still be
/// unknown: [`Unplaced::ask_region`] asks the bucket, through the caller's
/// retry loop, and [`Unplaced::place`] makes the store.
pub struct Unplaced {
    sdk: aws_config::SdkConfig,
    endpoint_url: Option<String>,
}

impl std::fmt::Debug for Unplaced {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Unplaced").finish_non_exhaustive()
    }
}

impl S3Store {
    /// Loads the settings and checks that credentials can be had (the
    /// first step of connecting; see [`Unplaced`]).
    pub async fn configure(settings: &S3Settings) -> Result<Unplaced, StoreError> {
        let mut loader = aws_config::defaults(BehaviorVersion::latest())
            // s3load verifies bodies itself, also across ranged parts (see
            // `integrity`); the SDK's own check would only cover whole-object GETs
            // and compute every CRC a second time.
            .response_checksum_validation(ResponseChecksumValidation::WhenRequired)
            // Uploads state their checksums themselves (computed from the file,
            // see `transfer::upload`); the SDK adds one only where S3 requires it.
            .request_checksum_calculation(RequestChecksumCalculation::WhenRequired)
            // For the credential providers' own requests (STS for IRSA, the
            // Pod Identity agent). S3's requests are retried by s3load's
            // loop only (`transfer::requests`; see `Unplaced::client`).
            .retry_config(RetryConfig::standard())
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
        Ok(Unplaced { sdk, endpoint_url: settings.endpoint_url.clone() })
    }

    /// The store as messages name it.
    pub fn name(&self) -> String {
        format!("the store at {}", self.endpoint)
    }

    /// A failure to reach the store names the store.
    pub(super) fn at(&self, e: StoreError) -> StoreError {
        at_store(&self.endpoint, e)
    }
}

impl Unplaced {
    /// The store as messages name it before its region is known.
    pub fn name(&self) -> String {
        format!("the store at {}", self.endpoint_url.as_deref().unwrap_or("S3"))
    }

    /// Whether a region is configured (flag, environment, profile); if not,
    /// the bucket is to be asked ([`Unplaced::ask_region`]).
    pub fn has_region(&self) -> bool {
        self.sdk.region().is_some()
    }

    fn client(&self, region: Option<Region>) -> Client {
        // Every request is retried by s3load's own loop (`transfer::requests`),
        // within the run's budget and deadline, and each attempt is bounded
        // by that loop too (`--request-timeout`); the SDK only bounds
        // connecting.
        let mut b = aws_sdk_s3::config::Builder::from(&self.sdk)
            .force_path_style(self.endpoint_url.is_some())
            .retry_config(RetryConfig::disabled());
        if region.is_some() {
            b = b.region(region);
        }
        Client::from_conf(b.build())
    }

    /// One attempt at asking the store where `bucket` lives: HeadBucket
    /// answers with `x-amz-bucket-region`, also on the 301 or 403 S3 returns
    /// when asked in the wrong region or without `s3:ListBucket`. `None` when
    /// an answer does not carry it (the default region is then used, and the
    /// real request reports any error). No answer (a timeout, no
    /// connection), throttling or a server error is an error, to retry.
    pub async fn ask_region(&self, bucket: &str) -> Result<Option<String>, StoreError> {
        let client = self.client(Some(Region::from_static(DEFAULT_REGION)));
        let endpoint = self.endpoint_url.as_deref().unwrap_or("S3");
        let found = match client.head_bucket().bucket(bucket).send().await {
            Ok(out) => out.bucket_region().map(str::to_string),
            Err(SdkError::ServiceError(se)) => match se.raw().headers().get("x-amz-bucket-region") {
                Some(r) => Some(r.to_string()),
                None => {
                    let e = map_service(se.raw().status().as_u16(), None, None, ObjectKind::Bucket);
                    if matches!(e.kind, StoreErrorKind::ServerError | StoreErrorKind::Throttled) {
                        return Err(at_store(endpoint, e));
                    }
                    tracing::debug!(error = %e, "the bucket did not say its region");
                    None
                }
            },
            // A store that cannot be reached or does not answer will not answer
            // the listing either.
            Err(e @ (SdkError::TimeoutError(_) | SdkError::DispatchFailure(_) | SdkError::ResponseError(_))) => {
                return Err(at_store(endpoint, map_sdk_err(e, ObjectKind::Bucket)));
            }
            Err(e) => {
                tracing::debug!(error = %DisplayErrorContext(&e), "could not ask the bucket for its region");
                None
            }
        };
        tracing::debug!(bucket, region = ?found, "bucket region");
        Ok(found)
    }

    /// The store, in the configured region, else `asked` (what the bucket
    /// said), else the default region.
    pub fn place(self, asked: Option<String>) -> S3Store {
        let region = match (self.sdk.region(), asked) {
            (Some(r), _) => r.clone(),
            (None, Some(r)) => Region::new(r),
            (None, None) => Region::from_static(DEFAULT_REGION),
        };
        let endpoint = match &self.endpoint_url {
            Some(e) => e.clone(),
            None => format!("S3 ({region})"),
        };
        // One client for every request (s3load retries and bounds them all
        // itself; a configuration override per request would rebuild the
        // client's runtime components each time: 5% of the CPU of 5,000
        // small GETs).
        S3Store { client: self.client(Some(region)), endpoint }
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
