//! An in-memory [`ObjectStore`] for unit tests of the engine without the
//! binary or HTTP (see also [`super::faulty`]).
//!
//! [`MemoryStore`] keeps objects with the identity S3 would give them: an MD5
//! ETag (or a multipart one, with its part layout), optionally a full-object
//! CRC64NVME, or an ETag that is not an MD5 (as SSE-KMS gives). GETs honour
//! ranges and `If-Match`, and are logged.

use std::collections::BTreeMap;
use std::sync::Mutex;
use std::time::SystemTime;

use bytes::Bytes;

use super::{FileRange, GetRequest, GetResponse, ListPage, ObjectMeta, ObjectStore, PutTarget, UploadedPart};
use crate::error::{StoreError, StoreErrorKind};
use crate::integrity::{self, Algorithm, DigestKind, PartDigest, PartSum, Stated};

/// How an object was written, which decides what the store states for it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Written {
    /// A single PUT with a full-object CRC64NVME.
    Crc64,
    /// A single PUT, no checksum: the ETag is the MD5 (legacy objects).
    Md5,
    /// A multipart upload in parts of this size, no checksum: `md5-N` ETag.
    MultipartMd5(u64),
    /// An ETag that is not an MD5 and no checksum (SSE-KMS).
    Opaque,
    /// An ETag that looks like an MD5 but is not the MD5 of the bytes.
    WrongMd5,
}

#[derive(Debug, Clone)]
struct Stored {
    body: Bytes,
    etag: String,
    checksum: Option<Stated>,
    etag_md5: bool,
    /// Part sizes of a multipart upload.
    parts: Option<Vec<u64>>,
}

/// An object store in memory.
#[derive(Debug, Default)]
pub struct MemoryStore {
    objects: Mutex<BTreeMap<(String, String), Stored>>,
    gets: Mutex<Vec<GetRequest>>,
    heads: Mutex<usize>,
    uploads: Mutex<BTreeMap<String, Vec<(u32, Bytes)>>>,
    /// Sizes of the pieces bodies are sent in, in turn (64 KiB when empty).
    pieces: Mutex<Vec<usize>>,
}

fn md5(data: &[u8]) -> integrity::DigestValue {
    let mut d = PartDigest::new(DigestKind::Md5);
    d.update(data);
    match d.finish() {
        PartSum::Hash(v) => v,
        PartSum::Crc(_) => unreachable!("MD5 is a hash"),
    }
}

fn crc64(data: &[u8]) -> u64 {
    let mut d = PartDigest::new(DigestKind::Crc(Algorithm::Crc64Nvme));
    d.update(data);
    match d.finish() {
        PartSum::Crc(c) => c.crc,
        PartSum::Hash(_) => unreachable!("a CRC"),
    }
}

fn missing(what: &str) -> StoreError {
    StoreError::new(StoreErrorKind::NoSuchKey, format!("{what}: no such key"))
}

impl MemoryStore {
    pub fn new() -> MemoryStore {
        MemoryStore::default()
    }

    /// Stores `body` at `bucket/key` as `how` would have written it.
    pub fn put(&self, bucket: &str, key: &str, body: impl Into<Bytes>, how: Written) {
        let body: Bytes = body.into();
        let (etag, checksum, etag_md5, parts) = match how {
            Written::Crc64 => (
                md5(&body).hex(),
                Some(Stated::Full { algorithm: Algorithm::Crc64Nvme, value: crc64(&body) }),
                true,
                None,
            ),
            Written::Md5 => (md5(&body).hex(), None, true, None),
            Written::MultipartMd5(part) => {
                let sizes: Vec<u64> = body.chunks(part as usize).map(|c| c.len() as u64).collect();
                let md5s: Vec<_> = body.chunks(part as usize).map(md5).collect();
                (integrity::etag_of(&md5s, true), None, true, Some(sizes))
            }
            Written::Opaque => ("kms-opaque-etag".to_string(), None, false, None),
            Written::WrongMd5 => ("0123456789abcdef0123456789abcdef".to_string(), None, true, None),
        };
        let stored = Stored { body, etag, checksum, etag_md5, parts };
        self.objects.lock().unwrap().insert((bucket.to_string(), key.to_string()), stored);
    }

    /// The bytes stored at `bucket/key`.
    pub fn body(&self, bucket: &str, key: &str) -> Option<Bytes> {
        self.objects.lock().unwrap().get(&(bucket.to_string(), key.to_string())).map(|s| s.body.clone())
    }

    /// Sends bodies in pieces of these sizes, in turn, each body from the
    /// first (as a network does, pieces of any size).
    pub fn send_in_pieces_of(&self, sizes: &[usize]) {
        assert!(sizes.iter().all(|&n| n > 0), "pieces of at least a byte");
        *self.pieces.lock().unwrap() = sizes.to_vec();
    }

    /// Every GET so far, in order.
    pub fn gets(&self) -> Vec<GetRequest> {
        self.gets.lock().unwrap().clone()
    }

    pub fn heads(&self) -> usize {
        *self.heads.lock().unwrap()
    }

    fn object(&self, bucket: &str, key: &str) -> Result<Stored, StoreError> {
        let objects = self.objects.lock().unwrap();
        objects.get(&(bucket.to_string(), key.to_string())).cloned().ok_or_else(|| missing(key))
    }

    fn meta(key: &str, s: &Stored, with_checksum: bool) -> ObjectMeta {
        ObjectMeta {
            key: key.to_string(),
            size: s.body.len() as u64,
            etag: Some(s.etag.clone()),
            last_modified: Some(SystemTime::UNIX_EPOCH + std::time::Duration::from_secs(1_700_000_000)),
            checksum: if with_checksum { s.checksum } else { None },
            etag_md5: with_checksum && s.etag_md5,
            version_id: None,
        }
    }

    fn read(body: &FileRange) -> Result<Bytes, StoreError> {
        use std::os::unix::fs::FileExt;
        let mut buf = vec![0; body.len as usize];
        body.file
            .read_exact_at(&mut buf, body.offset)
            .map_err(|e| StoreError::new(StoreErrorKind::Other, e.to_string()))?;
        Ok(buf.into())
    }

    fn bad_digest(sent: u64, got: &[u8]) -> Result<(), StoreError> {
        if crc64(got) == sent {
            Ok(())
        } else {
            Err(StoreError::new(StoreErrorKind::BadDigest, "the body does not match its checksum"))
        }
    }
}

/// A body sent in pieces of the sizes given, in turn (of 64 KiB when none).
fn in_pieces(body: Bytes, sizes: &[usize]) -> super::BodyStream {
    if sizes.is_empty() {
        return chunked(body);
    }
    let mut pieces: Vec<Result<Bytes, StoreError>> = Vec::new();
    let (mut at, mut turn) = (0, 0);
    while at < body.len() {
        let end = body.len().min(at + sizes[turn % sizes.len()]);
        pieces.push(Ok(body.slice(at..end)));
        (at, turn) = (end, turn + 1);
    }
    Box::pin(futures::stream::iter(pieces))
}

/// A body sent in pieces of 64 KiB, as a network would.
pub(super) fn chunked(body: Bytes) -> super::BodyStream {
    let pieces: Vec<Result<Bytes, StoreError>> =
        (0..body.len()).step_by(64 << 10).map(|i| Ok(body.slice(i..body.len().min(i + (64 << 10))))).collect();
    Box::pin(futures::stream::iter(pieces))
}

#[async_trait::async_trait]
impl ObjectStore for MemoryStore {
    async fn list_page(
        &self,
        bucket: &str,
        prefix: &str,
        delimiter: Option<&str>,
        token: Option<String>,
    ) -> Result<ListPage, StoreError> {
        let objects = self.objects.lock().unwrap();
        let mut page = ListPage::default();
        for ((b, key), s) in objects.iter() {
            if b != bucket || !key.starts_with(prefix) || token.as_deref().is_some_and(|t| key.as_str() <= t) {
                continue;
            }
            let below = &key[prefix.len()..];
            match delimiter.and_then(|d| below.find(d).map(|i| i + d.len())) {
                Some(end) => {
                    let p = format!("{prefix}{}", &below[..end]);
                    if page.common_prefixes.last() != Some(&p) {
                        page.common_prefixes.push(p);
                    }
                }
                None => page.objects.push(MemoryStore::meta(key, s, false)),
            }
        }
        Ok(page)
    }

    async fn head(&self, bucket: &str, key: &str) -> Result<ObjectMeta, StoreError> {
        *self.heads.lock().unwrap() += 1;
        let s = self.object(bucket, key)?;
        Ok(MemoryStore::meta(key, &s, true))
    }

    async fn part_info(&self, bucket: &str, key: &str, n: u32) -> Result<Option<(u64, u32)>, StoreError> {
        let s = self.object(bucket, key)?;
        Ok(s.parts.as_ref().and_then(|p| Some((*p.get(n as usize - 1)?, p.len() as u32))))
    }

    async fn get(&self, req: &GetRequest) -> Result<GetResponse, StoreError> {
        self.gets.lock().unwrap().push(req.clone());
        let s = self.object(&req.bucket, &req.key)?;
        if req.if_match.as_ref().is_some_and(|m| *m != s.etag) {
            return Err(StoreError::new(StoreErrorKind::PreconditionFailed, "the ETag does not match If-Match"));
        }
        let size = s.body.len() as u64;
        let (body, start, partial) = match &req.range {
            Some(r) if r.start >= size && size > 0 => {
                return Err(StoreError::new(StoreErrorKind::InvalidRange, "range not satisfiable"));
            }
            Some(r) => (s.body.slice(r.start as usize..r.end.min(size) as usize), r.start, true),
            None => (s.body.clone(), 0, false),
        };
        Ok(GetResponse {
            content_length: body.len() as u64,
            range_start: start,
            partial,
            etag: Some(s.etag.clone()),
            checksum: if partial { None } else { s.checksum },
            etag_md5: s.etag_md5,
            body: in_pieces(body, &self.pieces.lock().unwrap()),
        })
    }

    async fn put_object(&self, target: &PutTarget, body: FileRange, checksum: u64) -> Result<(), StoreError> {
        let data = MemoryStore::read(&body)?;
        MemoryStore::bad_digest(checksum, &data)?;
        self.put(&target.bucket, &target.key, data, Written::Crc64);
        Ok(())
    }

    async fn create_upload(&self, target: &PutTarget) -> Result<String, StoreError> {
        let id = format!("upload-{}-{}", target.key, self.uploads.lock().unwrap().len());
        self.uploads.lock().unwrap().insert(id.clone(), Vec::new());
        Ok(id)
    }

    async fn upload_part(
        &self,
        _target: &PutTarget,
        upload_id: &str,
        n: u32,
        body: FileRange,
        checksum: u64,
    ) -> Result<String, StoreError> {
        let data = MemoryStore::read(&body)?;
        MemoryStore::bad_digest(checksum, &data)?;
        let mut uploads = self.uploads.lock().unwrap();
        let parts =
            uploads.get_mut(upload_id).ok_or_else(|| StoreError::new(StoreErrorKind::NoSuchUpload, upload_id))?;
        parts.retain(|(m, _)| *m != n);
        parts.push((n, data));
        Ok(format!("part-{n}"))
    }

    async fn complete_upload(
        &self,
        target: &PutTarget,
        upload_id: &str,
        parts: &[UploadedPart],
        checksum: u64,
    ) -> Result<(), StoreError> {
        let mut stored = self
            .uploads
            .lock()
            .unwrap()
            .remove(upload_id)
            .ok_or_else(|| StoreError::new(StoreErrorKind::NoSuchUpload, upload_id))?;
        stored.sort_by_key(|(n, _)| *n);
        if stored.iter().map(|(n, _)| *n).ne(parts.iter().map(|p| p.number)) {
            return Err(StoreError::new(StoreErrorKind::Other, "the parts listed are not the parts uploaded"));
        }
        let whole: Vec<u8> = stored.iter().flat_map(|(_, b)| b.iter().copied()).collect();
        MemoryStore::bad_digest(checksum, &whole)?;
        self.put(&target.bucket, &target.key, whole, Written::Crc64);
        Ok(())
    }

    async fn abort_upload(&self, _bucket: &str, _key: &str, upload_id: &str) -> Result<(), StoreError> {
        self.uploads.lock().unwrap().remove(upload_id);
        Ok(())
    }

    async fn delete_objects(&self, bucket: &str, keys: &[String]) -> Result<Vec<super::NotDeleted>, StoreError> {
        let mut objects = self.objects.lock().unwrap();
        for k in keys {
            objects.remove(&(bucket.to_string(), k.clone()));
        }
        Ok(Vec::new())
    }

    async fn list_buckets(&self) -> Result<Vec<String>, StoreError> {
        let objects = self.objects.lock().unwrap();
        let mut names: Vec<String> = objects.keys().map(|(b, _)| b.clone()).collect();
        names.dedup();
        Ok(names)
    }
}
