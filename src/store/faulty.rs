//! A wrapper that injects faults into any [`ObjectStore`]'s GETs, as
//! mountpoint-s3's failure client does: the Nth GET fails, ends early,
//! stalls, arrives corrupted, or stops the run.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};

use bytes::Bytes;
use tokio_util::sync::CancellationToken;

use super::memory::chunked;
use super::{FileRange, GetRequest, GetResponse, ListPage, ObjectMeta, ObjectStore, PutTarget, UploadedPart};
use crate::error::{StoreError, StoreErrorKind};

/// What happens to one GET.
#[derive(Debug, Clone)]
pub enum Fault {
    /// The request fails with this kind.
    Fail(StoreErrorKind),
    /// The body ends after this many bytes.
    CutAfter(usize),
    /// One byte of the body, at this offset in it, arrives flipped.
    Corrupt(usize),
    /// The body sends this many bytes, then nothing more, ever (a stalled
    /// connection).
    StallAfter(usize),
    /// The run's stop token is cancelled and the body never comes (as a
    /// signal arriving mid-download).
    Stop(CancellationToken),
}

/// A store whose GETs fail as planned: the `n`th GET (1-based) meets the
/// fault planned for `n`; the rest pass through.
pub struct Faulty {
    inner: Arc<dyn ObjectStore>,
    plan: Mutex<BTreeMap<usize, Fault>>,
    gets: Mutex<usize>,
    head_size: Mutex<Option<u64>>,
}

impl std::fmt::Debug for Faulty {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Faulty").finish_non_exhaustive()
    }
}

impl Faulty {
    pub fn new(inner: Arc<dyn ObjectStore>) -> Faulty {
        Faulty { inner, plan: Mutex::default(), gets: Mutex::new(0), head_size: Mutex::new(None) }
    }

    /// Every HEAD states this size, whatever the object's.
    pub fn head_says_size(self, size: u64) -> Faulty {
        *self.head_size.lock().unwrap() = Some(size);
        self
    }

    /// Plans `fault` for the `n`th GET.
    pub fn on_get(self, n: usize, fault: Fault) -> Faulty {
        self.plan.lock().unwrap().insert(n, fault);
        self
    }
}

#[async_trait::async_trait]
impl ObjectStore for Faulty {
    async fn list_page(
        &self,
        bucket: &str,
        prefix: &str,
        delimiter: Option<&str>,
        token: Option<String>,
    ) -> Result<ListPage, StoreError> {
        self.inner.list_page(bucket, prefix, delimiter, token).await
    }

    async fn head(&self, bucket: &str, key: &str) -> Result<ObjectMeta, StoreError> {
        let mut meta = self.inner.head(bucket, key).await?;
        if let Some(size) = *self.head_size.lock().unwrap() {
            meta.size = size;
        }
        Ok(meta)
    }

    async fn part_info(&self, bucket: &str, key: &str, n: u32) -> Result<Option<(u64, u32)>, StoreError> {
        self.inner.part_info(bucket, key, n).await
    }

    async fn get(&self, req: &GetRequest) -> Result<GetResponse, StoreError> {
        let n = {
            let mut g = self.gets.lock().unwrap();
            *g += 1;
            *g
        };
        let fault = self.plan.lock().unwrap().remove(&n);
        if let Some(Fault::Fail(kind)) = fault {
            return Err(StoreError::new(kind, format!("injected failure of GET {n}")));
        }
        let mut resp = self.inner.get(req).await?;
        let body = {
            use futures::TryStreamExt;
            let parts: Vec<Bytes> = resp.body.try_collect().await?;
            parts.concat()
        };
        resp.body = match fault {
            None | Some(Fault::Fail(_)) => chunked(body.into()),
            Some(Fault::CutAfter(at)) => {
                let cut = Bytes::from(body).slice(..at);
                let broken: Vec<Result<Bytes, StoreError>> =
                    vec![Ok(cut), Err(StoreError::new(StoreErrorKind::Network, "injected: connection reset"))];
                Box::pin(futures::stream::iter(broken))
            }
            Some(Fault::Corrupt(at)) => {
                let mut body = body;
                body[at] ^= 0xff;
                chunked(body.into())
            }
            Some(Fault::StallAfter(at)) => {
                let first = futures::stream::iter([Ok(Bytes::from(body).slice(..at))]);
                Box::pin(futures::StreamExt::chain(first, futures::stream::pending()))
            }
            Some(Fault::Stop(token)) => {
                token.cancel();
                Box::pin(futures::stream::pending())
            }
        };
        Ok(resp)
    }

    async fn put_object(&self, target: &PutTarget, body: FileRange, checksum: u64) -> Result<(), StoreError> {
        self.inner.put_object(target, body, checksum).await
    }

    async fn create_upload(&self, target: &PutTarget) -> Result<String, StoreError> {
        self.inner.create_upload(target).await
    }

    async fn upload_part(
        &self,
        target: &PutTarget,
        upload_id: &str,
        n: u32,
        body: FileRange,
        checksum: u64,
    ) -> Result<String, StoreError> {
        self.inner.upload_part(target, upload_id, n, body, checksum).await
    }

    async fn complete_upload(
        &self,
        target: &PutTarget,
        upload_id: &str,
        parts: &[UploadedPart],
        checksum: u64,
    ) -> Result<(), StoreError> {
        self.inner.complete_upload(target, upload_id, parts, checksum).await
    }

    async fn abort_upload(&self, bucket: &str, key: &str, upload_id: &str) -> Result<(), StoreError> {
        self.inner.abort_upload(bucket, key, upload_id).await
    }

    async fn delete_objects(&self, bucket: &str, keys: &[String]) -> Result<Vec<super::NotDeleted>, StoreError> {
        self.inner.delete_objects(bucket, keys).await
    }

    async fn list_buckets(&self) -> Result<Vec<String>, StoreError> {
        self.inner.list_buckets().await
    }
}
