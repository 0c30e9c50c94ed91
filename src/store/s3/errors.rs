//! SDK errors to s3load's [`StoreError`] kinds: what a status or code means
//! for retrying and for the message, and credential failures found among the
//! causes by type.

use aws_sdk_s3::error::{DisplayErrorContext, ProvideErrorMetadata, SdkError};

use crate::error::{StoreError, StoreErrorKind};

/// Whether a 404 means the bucket or the key is missing.
#[derive(Clone, Copy)]
pub(super) enum ObjectKind {
    Bucket,
    Key,
}

pub(super) fn map_service(status: u16, code: Option<&str>, message: Option<&str>, what: ObjectKind) -> StoreError {
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

pub(super) fn map_sdk_err<E, R>(err: SdkError<E, R>, what: ObjectKind) -> StoreError
where
    E: ProvideErrorMetadata + std::error::Error + Send + Sync + 'static,
    R: std::fmt::Debug + HasStatus + 'static,
{
    match &err {
        SdkError::ServiceError(se) => map_service(se.raw().status_code(), se.err().code(), se.err().message(), what),
        SdkError::TimeoutError(_) => StoreError::new(
            StoreErrorKind::Network,
            format!(
                "no answer in time ({}): each attempt is bounded by --request-timeout and all the attempts of one \
                 request by --request-deadline; raise them for a store that is slow to answer",
                innermost(&err)
            ),
        ),
        SdkError::ResponseError(_) => StoreError::new(StoreErrorKind::Network, DisplayErrorContext(&err).to_string()),
        SdkError::DispatchFailure(d) => {
            let text = DisplayErrorContext(&err).to_string();
            if text.contains("dns error") {
                // hyper's text nests four errors deep; say what failed and
                // what to check, with the resolver's own words.
                let why = innermost(&err);
                StoreError::new(
                    StoreErrorKind::Network,
                    format!(
                        "the store's host name did not resolve ({why}): check the endpoint's name, and the DNS \
                         servers this machine or pod uses (/etc/resolv.conf)"
                    ),
                )
            } else if d.is_timeout() {
                StoreError::new(StoreErrorKind::Network, format!("could not connect in time ({})", innermost(&err)))
            } else if d.is_io() && innermost(&err).contains("os error 24") {
                // No descriptor for a socket: trying again cannot help.
                StoreError::new(
                    StoreErrorKind::Other,
                    format!(
                        "could not open a connection ({}): this process may open no more files: raise its hard \
                         limit (`ulimit -Hn`) or lower --numworkers",
                        innermost(&err)
                    ),
                )
            } else if d.is_io() {
                StoreError::new(StoreErrorKind::Network, format!("could not connect ({})", innermost(&err)))
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

/// The text of the last cause in `err`'s chain: what actually failed.
fn innermost(err: &(dyn std::error::Error + 'static)) -> String {
    let mut last = err;
    while let Some(next) = last.source() {
        last = next;
    }
    last.to_string()
}

/// Whether a failure comes from the credential chain: a `CredentialsError`
/// among its causes (the SDK wraps what the provider returned when it
/// resolves the request's identity).
pub(super) fn from_credentials(err: &(dyn std::error::Error + 'static)) -> bool {
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
pub(super) trait HasStatus {
    fn status_code(&self) -> u16;
}

impl HasStatus for aws_sdk_s3::config::http::HttpResponse {
    fn status_code(&self) -> u16 {
        self.status().as_u16()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_404_means_bucket_or_key_depending_on_the_operation() {
        assert_eq!(map_service(404, None, None, ObjectKind::Bucket).kind, StoreErrorKind::NoSuchBucket);
        assert_eq!(map_service(404, None, None, ObjectKind::Key).kind, StoreErrorKind::NoSuchKey);
        assert_eq!(map_service(503, Some("SlowDown"), None, ObjectKind::Key).kind, StoreErrorKind::Throttled);
        assert_eq!(map_service(500, Some("InternalError"), None, ObjectKind::Key).kind, StoreErrorKind::ServerError);
        assert_eq!(map_service(500, None, None, ObjectKind::Key).kind, StoreErrorKind::ServerError);
        assert_eq!(map_service(403, None, None, ObjectKind::Key).kind, StoreErrorKind::AccessDenied);
        assert_eq!(map_service(501, Some("NotImplemented"), None, ObjectKind::Key).kind, StoreErrorKind::Other);
        assert_eq!(map_service(400, Some("BadDigest"), None, ObjectKind::Key).kind, StoreErrorKind::BadDigest);
    }

    #[test]
    fn a_name_that_does_not_resolve_says_so_in_the_resolvers_words() {
        use aws_sdk_s3::error::ConnectorError;
        #[derive(Debug)]
        struct Dns(std::io::Error);
        impl std::fmt::Display for Dns {
            fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("dns error")
            }
        }
        impl std::error::Error for Dns {
            fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
                Some(&self.0)
            }
        }
        let lookup = std::io::Error::other("failed to lookup address information: Name or service not known");
        let err: SdkError<aws_sdk_s3::operation::head_object::HeadObjectError, aws_sdk_s3::config::http::HttpResponse> =
            SdkError::dispatch_failure(ConnectorError::io(Box::new(Dns(lookup))));
        let e = map_sdk_err(err, ObjectKind::Key);
        assert_eq!(e.kind, StoreErrorKind::Network);
        assert!(e.message.starts_with("the store's host name did not resolve (failed to lookup"), "{}", e.message);
        assert!(e.message.contains("/etc/resolv.conf"), "{}", e.message);
    }
}
