//! Where a command's store comes from: S3 (or `--endpoint-url`) through the
//! AWS SDK for a real run; a store the caller already made for tests (the
//! in-memory store), so that commands run whole without a server.

use std::sync::Arc;

use crate::config::Config;
use crate::error::Error;
use crate::store::ObjectStore;
use crate::store::s3::S3Store;

/// Makes the store a command talks to, when the command is ready for it (a
/// bad command line is refused before any connection is tried).
#[async_trait::async_trait]
pub trait Connect: Send + Sync {
    /// The store holding `bucket` (`None`: listing buckets).
    async fn connect(&self, cfg: &Config, bucket: Option<&str>) -> Result<Arc<dyn ObjectStore>, Error>;
}

/// S3 through the AWS SDK, with the run's settings and credentials.
#[derive(Debug)]
pub struct ToS3;

#[async_trait::async_trait]
impl Connect for ToS3 {
    async fn connect(&self, cfg: &Config, bucket: Option<&str>) -> Result<Arc<dyn ObjectStore>, Error> {
        let store = S3Store::connect(&cfg.s3, bucket).await.map_err(|e| Error::store("connecting to S3", e))?;
        Ok(Arc::new(store))
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
    async fn connect(&self, _: &Config, _: Option<&str>) -> Result<Arc<dyn ObjectStore>, Error> {
        Ok(self.0.clone())
    }
}
