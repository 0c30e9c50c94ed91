//! [`ObjectStore`] on the AWS SDK for Rust: the only module that imports `aws_sdk_s3`.
//!
//! Credentials come from the SDK's default chain (environment, shared profile, IRSA
//! web identity, EKS Pod Identity, IMDSv2). When an endpoint is given (flag,
//! `S3LOAD_ENDPOINT_URL`, `AWS_ENDPOINT_URL_S3` or `AWS_ENDPOINT_URL`) requests use path-style addressing,
//! which every S3-compatible store accepts. The region comes from `--region`, the
//! environment or the profile; failing those it is discovered from the bucket
//! (HeadBucket), with or without a custom endpoint.
//!
//! Retries: the SDK sends every S3 request once (retries disabled, see
//! `Unplaced::client`); s3load's own loop (`transfer::requests`) retries and
//! bounds them all, under the run's retry budget and request limiter (a GET
//! resuming a broken body from the first byte not yet written).

use crate::error::StoreError;
use crate::store::{
    FileRange, GetRequest, GetResponse, ListPage, NotDeleted, ObjectMeta, ObjectStore, PutTarget, UploadedPart,
};

mod client;
#[macro_use]
mod convert;
mod delete;
mod errors;
mod get;
mod head;
mod list;
mod upload;

pub use client::{DEFAULT_REQUEST_DEADLINE, DEFAULT_REQUEST_TIMEOUT, S3Settings, S3Store, Unplaced};

#[async_trait::async_trait]
impl ObjectStore for S3Store {
    fn name(&self) -> String {
        self.name()
    }

    async fn list_page(
        &self,
        bucket: &str,
        prefix: &str,
        delimiter: Option<&str>,
        token: Option<String>,
    ) -> Result<ListPage, StoreError> {
        list::list_page(self, bucket, prefix, delimiter, token).await.map_err(|e| self.at(e))
    }

    async fn head(&self, bucket: &str, key: &str) -> Result<ObjectMeta, StoreError> {
        head::head(self, bucket, key).await.map_err(|e| self.at(e))
    }

    async fn part_info(&self, bucket: &str, key: &str, n: u32) -> Result<Option<(u64, u32)>, StoreError> {
        head::part_info(self, bucket, key, n).await.map_err(|e| self.at(e))
    }

    async fn get(&self, req: &GetRequest) -> Result<GetResponse, StoreError> {
        get::get(self, req).await.map_err(|e| self.at(e))
    }

    async fn put_object(&self, target: &PutTarget, body: FileRange, checksum: u64) -> Result<(), StoreError> {
        upload::put_object(self, target, body, checksum).await.map_err(|e| self.at(e))
    }

    async fn create_upload(&self, target: &PutTarget) -> Result<String, StoreError> {
        upload::create_upload(self, target).await.map_err(|e| self.at(e))
    }

    async fn upload_part(
        &self,
        target: &PutTarget,
        upload_id: &str,
        n: u32,
        body: FileRange,
        checksum: u64,
    ) -> Result<String, StoreError> {
        upload::upload_part(self, target, upload_id, n, body, checksum).await.map_err(|e| self.at(e))
    }

    async fn complete_upload(
        &self,
        target: &PutTarget,
        upload_id: &str,
        parts: &[UploadedPart],
        checksum: u64,
    ) -> Result<(), StoreError> {
        upload::complete_upload(self, target, upload_id, parts, checksum).await.map_err(|e| self.at(e))
    }

    async fn abort_upload(&self, bucket: &str, key: &str, upload_id: &str) -> Result<(), StoreError> {
        upload::abort_upload(self, bucket, key, upload_id).await.map_err(|e| self.at(e))
    }

    async fn delete_objects(&self, bucket: &str, keys: &[String]) -> Result<Vec<NotDeleted>, StoreError> {
        delete::delete_objects(self, bucket, keys).await.map_err(|e| self.at(e))
    }

    async fn list_buckets(&self) -> Result<Vec<String>, StoreError> {
        list::list_buckets(self).await.map_err(|e| self.at(e))
    }
}
