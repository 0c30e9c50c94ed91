//! Where a command's store comes from: S3 (or `--endpoint-url`) through the
//! AWS SDK for a real run; a store the caller already made for tests (the
//! in-memory store), so that commands run whole without a server.

use std::sync::Arc;

use crate::config::Config;
use crate::error::Error;
use crate::store::ObjectStore;
use crate::store::s3::S3Store;
use crate::transfer::Requests;

/// Makes the store a command talks to, when the command is ready for it (a
/// bad command line is refused before any connection is tried).
#[async_trait::async_trait]
pub trait Connect: Send + Sync {
    /// The store holding `bucket` (`None`: listing buckets); any request
    /// this makes goes through `requests`.
    async fn connect(
        &self,
        cfg: &Config,
        bucket: Option<&str>,
        requests: &Requests,
    ) -> Result<Arc<dyn ObjectStore>, Error>;
}

/// S3 through the AWS SDK, with the run's settings and credentials.
#[derive(Debug)]
pub struct ToS3;

#[async_trait::async_trait]
impl Connect for ToS3 {
    async fn connect(
        &self,
        cfg: &Config,
        bucket: Option<&str>,
        requests: &Requests,
    ) -> Result<Arc<dyn ObjectStore>, Error> {
        let failed = |e| Error::store("connecting to S3", e);
        let unplaced = S3Store::configure(&cfg.s3).await.map_err(failed)?;
        requests.name_store(unplaced.name());
        // No region configured: ask the bucket (HeadBucket answers with
        // `x-amz-bucket-region`, S3 and most S3-compatible stores alike).
        let asked = match (unplaced.has_region(), bucket) {
            (false, Some(b)) => requests
                .call(&format!("asking s3://{b} for its region"), || unplaced.ask_region(b))
                .await
                .map_err(failed)?,
            _ => None,
        };
        Ok(Arc::new(unplaced.place(asked)))
    }
}

/// One store the caller made, for every bucket.
pub struct Given(pub Arc<dyn ObjectStore>);

impl std::fmt::Debug for Given {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Given").finish_non_exhaustive()
    }
}

#[async_trait::async_trait]
impl Connect for Given {
    async fn connect(&self, _: &Config, _: Option<&str>, _: &Requests) -> Result<Arc<dyn ObjectStore>, Error> {
        Ok(self.0.clone())
    }
}
