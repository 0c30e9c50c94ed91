//! The object store, behind a trait that speaks s3load's own types.
//!
//! Only `s3.rs` imports the AWS SDK. The engine sees [`ObjectStore`]: list a prefix
//! page by page, describe one object, and GET a byte range pinned to an ETag. Bodies
//! come back as a stream of [`Bytes`] so the engine can write them as they arrive.

#[cfg(test)]
pub mod faulty;
#[cfg(test)]
pub mod memory;
pub mod s3;

use std::ops::Range;
use std::path::PathBuf;
use std::pin::Pin;
use std::sync::Arc;
use std::time::SystemTime;

use bytes::Bytes;
use futures::Stream;

use crate::error::StoreError;
use crate::integrity::{Algorithm, Stated};
use crate::rate::RateLimit;

/// The largest object S3 stores (5 TiB). A store stating more is broken or
/// hostile: ranges would be planned (and memory counted) for a size no
/// object has, so such an object is refused by name.
pub const MAX_OBJECT_SIZE: u64 = 5 << 40;

/// The most parts a multipart upload has in S3. A store stating more gives
/// no part layout s3load relies on (one hash is kept per part).
pub const MAX_PARTS: u64 = 10_000;

/// What a listing or HEAD tells about an object.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ObjectMeta {
    pub key: String,
    pub size: u64,
    /// ETag as S3 returns it, without quotes.
    pub etag: Option<String>,
    pub last_modified: Option<SystemTime>,
    /// The checksum the store states (HEAD only; listings do not carry values).
    pub checksum: Option<Stated>,
    /// Whether the ETag is known to be an MD5 (HEAD of an object that is not
    /// SSE-KMS or SSE-C encrypted); false when unknown.
    pub etag_md5: bool,
    /// Version id (HEAD in a versioned bucket).
    pub version_id: Option<String>,
}

/// One page of a ListObjectsV2 listing.
#[derive(Debug, Clone, Default)]
pub struct ListPage {
    pub objects: Vec<ObjectMeta>,
    pub common_prefixes: Vec<String>,
    /// Token for the next page; `None` on the last page.
    pub next: Option<String>,
}

/// A GET request for (part of) one object.
#[derive(Debug, Clone)]
pub struct GetRequest {
    pub bucket: String,
    pub key: String,
    /// Byte range (end exclusive); `None` = the whole object.
    pub range: Option<Range<u64>>,
    /// ETag the object must still have (sent as `If-Match`).
    pub if_match: Option<String>,
    /// Version to read (`versionId`).
    pub version_id: Option<String>,
}

pub type BodyStream = Pin<Box<dyn Stream<Item = Result<Bytes, StoreError>> + Send>>;

/// A key the store would not delete, its reason (`Code: message`), and what
/// kind of failure that is (S3 answers some keys of a DeleteObjects request
/// with `InternalError` or `SlowDown`: worth asking again).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NotDeleted {
    pub key: String,
    pub reason: String,
    pub kind: crate::error::StoreErrorKind,
}

/// A GET response: the length the server promised, and the body.
pub struct GetResponse {
    pub content_length: u64,
    /// Start of the returned range, as the server stated it (0 for a full body).
    pub range_start: u64,
    /// Whether the server answered with a range (206) rather than the whole object.
    pub partial: bool,
    pub etag: Option<String>,
    /// The object's checksum; stores send it only with a full-object body.
    pub checksum: Option<Stated>,
    /// Whether the ETag is an MD5 of the upload (not SSE-KMS or SSE-C).
    pub etag_md5: bool,
    pub body: BodyStream,
}

impl std::fmt::Debug for GetResponse {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("GetResponse")
            .field("content_length", &self.content_length)
            .field("range_start", &self.range_start)
            .field("partial", &self.partial)
            .field("etag", &self.etag)
            .finish_non_exhaustive()
    }
}

/// Bytes of a local file sent as a request body (read by the store, so that a
/// retry can send them again without holding them in memory). Read from the
/// file the upload opened (with positioned reads), not from its path: what the
/// path names may have been replaced since.
#[derive(Debug, Clone)]
pub struct FileRange {
    pub file: Arc<std::fs::File>,
    /// For messages.
    pub path: PathBuf,
    pub offset: u64,
    pub len: u64,
    /// `--limit-rate`: how the body is paced as it is sent.
    pub pace: Option<Pace>,
}

/// A request body sent within the run's `--limit-rate`: each slice of at most
/// `slice` bytes pays the budget before it goes. Slices small enough that a
/// connection sharing the rate with all the others is not silent for long
/// (a store closes an upload connection idle for about 20 s).
#[derive(Debug, Clone)]
pub struct Pace {
    pub budget: Arc<RateLimit>,
    pub slice: usize,
}

/// The object an upload creates, and how.
#[derive(Debug, Clone)]
pub struct PutTarget {
    pub bucket: String,
    pub key: String,
    pub content_type: Option<String>,
    pub storage_class: Option<String>,
    /// The full-object checksum sent with the data (and checked by the store).
    pub checksum: Algorithm,
}

/// A part uploaded: its number, ETag and checksum.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UploadedPart {
    pub number: u32,
    pub etag: String,
    pub checksum: u64,
}

/// Operations s3load needs from an S3-compatible store.
#[async_trait::async_trait]
pub trait ObjectStore: Send + Sync {
    /// The store as messages name it ("the store at http://…").
    fn name(&self) -> String {
        "the store".to_string()
    }

    /// One page of keys under `prefix`; `delimiter` groups keys into common prefixes.
    async fn list_page(
        &self,
        bucket: &str,
        prefix: &str,
        delimiter: Option<&str>,
        token: Option<String>,
    ) -> Result<ListPage, StoreError>;

    /// Metadata of one object (HEAD), with its checksum when the store keeps one.
    async fn head(&self, bucket: &str, key: &str) -> Result<ObjectMeta, StoreError>;

    /// Size of part `n` (1-based) of a multipart upload and the number of parts
    /// (HEAD with `partNumber`); `None` for a single-part object.
    async fn part_info(&self, bucket: &str, key: &str, n: u32) -> Result<Option<(u64, u32)>, StoreError>;

    /// Starts a GET; the body streams from the returned response.
    async fn get(&self, req: &GetRequest) -> Result<GetResponse, StoreError>;

    /// Creates an object in one request; the store checks `checksum` against the bytes.
    async fn put_object(&self, target: &PutTarget, body: FileRange, checksum: u64) -> Result<(), StoreError>;

    /// Starts a multipart upload with a full-object checksum; returns its id.
    async fn create_upload(&self, target: &PutTarget) -> Result<String, StoreError>;

    /// Uploads part `n` (1-based) with its checksum; returns the part's ETag.
    async fn upload_part(
        &self,
        target: &PutTarget,
        upload_id: &str,
        n: u32,
        body: FileRange,
        checksum: u64,
    ) -> Result<String, StoreError>;

    /// Completes an upload from its parts, stating the whole object's checksum
    /// (which the store checks against what it assembled).
    async fn complete_upload(
        &self,
        target: &PutTarget,
        upload_id: &str,
        parts: &[UploadedPart],
        checksum: u64,
    ) -> Result<(), StoreError>;

    /// Abandons an upload; the store drops its parts.
    async fn abort_upload(&self, bucket: &str, key: &str, upload_id: &str) -> Result<(), StoreError>;

    /// Deletes up to 1000 keys in one request; returns the keys that could not be
    /// deleted, with why.
    async fn delete_objects(&self, bucket: &str, keys: &[String]) -> Result<Vec<NotDeleted>, StoreError>;

    /// Names of the buckets the caller owns.
    async fn list_buckets(&self) -> Result<Vec<String>, StoreError>;
}
