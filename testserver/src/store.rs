//! The in-memory object store behind the test server.
//!
//! Objects are kept as [`Bytes`] so that a ranged GET is a zero-copy slice: serving
//! a range costs time proportional to the range, not to the object (unlike `s3s-fs`,
//! which re-hashes the whole file on every request). The ETag (MD5 of the body, as
//! S3 computes it for a single-part upload) and the full-object checksum (CRC64NVME
//! by default, as S3 adds to every new object) are computed once, when the object is put.

use std::collections::BTreeMap;
use std::sync::{Arc, RwLock};
use std::time::SystemTime;

use base64::Engine;
use base64::prelude::BASE64_STANDARD;
use bytes::Bytes;
use crc_fast::CrcAlgorithm;
use md5::{Digest, Md5};

/// Checksum algorithms the server can store, as S3 names them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ChecksumAlgorithm {
    Crc64Nvme,
    Crc32,
    Crc32c,
    Sha256,
    Sha1,
}

impl ChecksumAlgorithm {
    /// Width of the checksum in bytes.
    pub fn width(self) -> usize {
        match self {
            ChecksumAlgorithm::Crc64Nvme => 8,
            ChecksumAlgorithm::Crc32 | ChecksumAlgorithm::Crc32c => 4,
            ChecksumAlgorithm::Sha256 => 32,
            ChecksumAlgorithm::Sha1 => 20,
        }
    }

    /// The checksum of `data`, big-endian, in the first `width()` bytes.
    fn digest(self, data: &[u8]) -> [u8; 32] {
        let crc = |a| {
            let be = crc_fast::checksum(a, data).to_be_bytes();
            be[8 - self.width()..].to_vec()
        };
        let raw = match self {
            ChecksumAlgorithm::Crc64Nvme => crc(CrcAlgorithm::Crc64Nvme),
            ChecksumAlgorithm::Crc32 => crc(CrcAlgorithm::Crc32IsoHdlc),
            ChecksumAlgorithm::Crc32c => crc(CrcAlgorithm::Crc32Iscsi),
            ChecksumAlgorithm::Sha256 => <sha2::Sha256 as sha2::Digest>::digest(data).to_vec(),
            ChecksumAlgorithm::Sha1 => <sha1::Sha1 as sha1::Digest>::digest(data).to_vec(),
        };
        let mut value = [0u8; 32];
        value[..raw.len()].copy_from_slice(&raw);
        value
    }
}

/// An object's checksum, computed once when the object is put.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StoredChecksum {
    pub algorithm: ChecksumAlgorithm,
    /// Big-endian, in the first `algorithm.width()` bytes.
    pub value: [u8; 32],
    /// `Some(n)` for a composite checksum of a multipart upload of `n` parts: the
    /// checksum of the concatenated part checksums, sent as `value-n`.
    pub composite_parts: Option<u32>,
}

impl StoredChecksum {
    pub fn compute(algorithm: ChecksumAlgorithm, data: &[u8]) -> StoredChecksum {
        StoredChecksum { algorithm, value: algorithm.digest(data), composite_parts: None }
    }

    /// The composite checksum of `parts`, as S3 computes it for a multipart upload.
    pub fn composite(algorithm: ChecksumAlgorithm, parts: &[Bytes]) -> StoredChecksum {
        let mut joined = Vec::new();
        for p in parts {
            joined.extend_from_slice(&algorithm.digest(p)[..algorithm.width()]);
        }
        StoredChecksum { algorithm, value: algorithm.digest(&joined), composite_parts: Some(parts.len() as u32) }
    }

    /// The value as S3 sends it: base64 of the big-endian bytes (`-n` for composite).
    pub fn from_base64(algorithm: ChecksumAlgorithm, v: &str) -> Option<StoredChecksum> {
        let raw = BASE64_STANDARD.decode(v).ok()?;
        if raw.len() != algorithm.width() {
            return None;
        }
        let mut value = [0u8; 32];
        value[..raw.len()].copy_from_slice(&raw);
        Some(StoredChecksum { algorithm, value, composite_parts: None })
    }

    /// The same checksum with its last bit flipped: a value that does not match.
    pub fn wrong(mut self) -> StoredChecksum {
        self.value[self.algorithm.width() - 1] ^= 1;
        self
    }

    pub fn to_base64(self) -> String {
        let v = BASE64_STANDARD.encode(&self.value[..self.algorithm.width()]);
        match self.composite_parts {
            Some(n) => format!("{v}-{n}"),
            None => v,
        }
    }
}

/// The tools that wrote most objects in existing buckets, and how they split
/// an upload: what an object looks like depends on which of them wrote it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Writer {
    /// `aws s3 cp`: multipart from 8 MiB, in 8 MiB parts.
    AwsCli,
    /// boto3's `upload_file`: the same defaults as the CLI (8 MiB, 8 MiB).
    Boto3,
    /// s5cmd: multipart from 50 MiB, in 50 MiB parts.
    S5cmd,
    /// rclone: single PUT up to 200 MiB, then 5 MiB chunks, with the whole
    /// file's MD5 in `X-Amz-Meta-Md5chksum`.
    Rclone,
}

impl Writer {
    pub const ALL: [Writer; 4] = [Writer::AwsCli, Writer::Boto3, Writer::S5cmd, Writer::Rclone];

    /// (single PUT below this size, part size).
    pub fn split(self) -> (u64, u64) {
        const MIB: u64 = 1 << 20;
        match self {
            Writer::AwsCli | Writer::Boto3 => (8 * MIB, 8 * MIB),
            Writer::S5cmd => (50 * MIB, 50 * MIB),
            Writer::Rclone => (200 * MIB, 5 * MIB),
        }
    }

    /// The object this tool leaves for `data`, as S3 stored it before it kept
    /// checksums by default (and as many S3-compatible stores still do): an
    /// MD5 ETag (of the body, or of the part MD5s with `-N`), no checksum.
    pub fn legacy_object(self, data: Bytes, last_modified: SystemTime) -> StoredObject {
        self.object(data, last_modified, None)
    }

    /// The object this tool leaves for `data` with a checksum of `algorithm`
    /// (full for a single PUT, composite for a multipart upload).
    pub fn object(self, data: Bytes, last_modified: SystemTime, algorithm: Option<ChecksumAlgorithm>) -> StoredObject {
        let (threshold, part) = self.split();
        if (data.len() as u64) < threshold {
            return StoredObject::with_checksum(data, last_modified, algorithm);
        }
        let parts: Vec<Bytes> = (0..data.len())
            .step_by(part as usize)
            .map(|at| data.slice(at..(at + part as usize).min(data.len())))
            .collect();
        let mut obj = StoredObject::multipart(&parts, last_modified, algorithm, true);
        if self == Writer::Rclone {
            obj.metadata.insert("md5chksum".into(), BASE64_STANDARD.encode(Md5::digest(&data)));
        }
        obj
    }
}

/// One stored object.
#[derive(Debug, Clone)]
pub struct StoredObject {
    pub data: Bytes,
    /// ETag without quotes.
    pub etag: String,
    pub last_modified: SystemTime,
    /// `None` for objects stored before S3 kept checksums (only the MD5 ETag).
    pub checksum: Option<StoredChecksum>,
    /// Sizes of the parts of a multipart upload; empty for a single-part object.
    pub part_sizes: Vec<u64>,
    /// Set when the object was put in a bucket with versioning enabled.
    pub version_id: Option<String>,
    /// Encrypted with SSE-KMS: the ETag is not the MD5 of the body.
    pub sse_kms: bool,
    /// As given by the uploader (`None` = STANDARD).
    pub storage_class: Option<String>,
    pub content_type: Option<String>,
    /// User metadata (`x-amz-meta-*`), keys without the prefix.
    pub metadata: BTreeMap<String, String>,
}

impl StoredObject {
    /// An object as S3 stores a single-part upload today: MD5 ETag and a
    /// full-object CRC64NVME.
    pub fn new(data: Bytes, last_modified: SystemTime) -> Self {
        Self::with_checksum(data, last_modified, Some(ChecksumAlgorithm::Crc64Nvme))
    }

    pub fn with_checksum(data: Bytes, last_modified: SystemTime, algorithm: Option<ChecksumAlgorithm>) -> Self {
        let etag = hex::encode(Md5::digest(&data));
        let checksum = algorithm.map(|a| StoredChecksum::compute(a, &data));
        StoredObject {
            data,
            etag,
            last_modified,
            checksum,
            part_sizes: Vec::new(),
            version_id: None,
            sse_kms: false,
            storage_class: None,
            content_type: None,
            metadata: BTreeMap::new(),
        }
    }

    /// The object as SSE-KMS stores it: same bytes, an ETag that is not their MD5.
    pub fn kms_encrypted(mut self) -> Self {
        self.etag = hex::encode(Md5::digest([self.etag.as_bytes(), b"kms"].concat()));
        self.sse_kms = true;
        self
    }

    /// An object as a multipart upload of `parts` leaves it: ETag = MD5 of the
    /// part MD5s plus `-n`, and a checksum that is `composite` (per part) or full-object.
    pub fn multipart(
        parts: &[Bytes],
        last_modified: SystemTime,
        algorithm: Option<ChecksumAlgorithm>,
        composite: bool,
    ) -> Self {
        let mut md5s = Vec::new();
        let mut data = Vec::new();
        for p in parts {
            md5s.extend_from_slice(&Md5::digest(p));
            data.extend_from_slice(p);
        }
        let etag = format!("{}-{}", hex::encode(Md5::digest(&md5s)), parts.len());
        let checksum = algorithm
            .map(|a| if composite { StoredChecksum::composite(a, parts) } else { StoredChecksum::compute(a, &data) });
        let part_sizes = parts.iter().map(|p| p.len() as u64).collect();
        StoredObject {
            data: Bytes::from(data),
            etag,
            last_modified,
            checksum,
            part_sizes,
            version_id: None,
            sse_kms: false,
            storage_class: None,
            content_type: None,
            metadata: BTreeMap::new(),
        }
    }

    /// Byte range of part `n` (1-based) of a multipart upload.
    pub fn part_range(&self, n: usize) -> Option<std::ops::Range<u64>> {
        let start: u64 = self.part_sizes.iter().take(n.checked_sub(1)?).sum();
        Some(start..start + self.part_sizes.get(n - 1)?)
    }
}

type Bucket = BTreeMap<String, Arc<StoredObject>>;

/// A multipart upload in progress.
#[derive(Debug, Clone)]
pub struct PendingUpload {
    pub bucket: String,
    pub key: String,
    /// Checksum algorithm and whether it is full-object (else composite), as
    /// declared by CreateMultipartUpload.
    pub checksum: Option<(ChecksumAlgorithm, bool)>,
    pub storage_class: Option<String>,
    pub content_type: Option<String>,
    /// Part number -> (bytes, ETag).
    pub parts: BTreeMap<i32, (Bytes, String)>,
}

/// Buckets of objects, shared between the HTTP front end and the test that drives it.
#[derive(Debug, Default)]
pub struct Store {
    buckets: RwLock<BTreeMap<String, Bucket>>,
    /// Every version put in a versioned bucket, by (bucket, key, version id).
    versions: RwLock<BTreeMap<(String, String, String), Arc<StoredObject>>>,
    versioned: RwLock<std::collections::BTreeSet<String>>,
    regions: RwLock<BTreeMap<String, String>>,
    next_version: std::sync::atomic::AtomicU64,
    /// Multipart uploads created and not yet completed or aborted, by upload id.
    uploads: std::sync::Mutex<BTreeMap<String, PendingUpload>>,
    next_upload: std::sync::atomic::AtomicU64,
}

impl Store {
    pub fn create_bucket(&self, bucket: &str) {
        self.buckets.write().unwrap().entry(bucket.to_string()).or_default();
    }

    pub fn bucket_exists(&self, bucket: &str) -> bool {
        self.buckets.read().unwrap().contains_key(bucket)
    }

    pub fn bucket_names(&self) -> Vec<String> {
        self.buckets.read().unwrap().keys().cloned().collect()
    }

    /// Stores an object (creating the bucket if needed), stamped with the current time.
    pub fn put(&self, bucket: &str, key: &str, data: impl Into<Bytes>) -> Arc<StoredObject> {
        self.put_at(bucket, key, data, SystemTime::now())
    }

    /// Stores an object with a chosen LastModified.
    pub fn put_at(&self, bucket: &str, key: &str, data: impl Into<Bytes>, when: SystemTime) -> Arc<StoredObject> {
        self.put_object(bucket, key, StoredObject::new(data.into(), when))
    }

    /// Stores a prepared object (chosen checksum, or none). In a versioned bucket
    /// the object gets a new version id and earlier versions stay readable.
    pub fn put_object(&self, bucket: &str, key: &str, mut obj: StoredObject) -> Arc<StoredObject> {
        let versioned = self.versioned.read().unwrap().contains(bucket);
        if versioned {
            let n = self.next_version.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            obj.version_id = Some(format!("v{n:08}"));
        }
        let obj = Arc::new(obj);
        if let Some(v) = &obj.version_id {
            let id = (bucket.to_string(), key.to_string(), v.clone());
            self.versions.write().unwrap().insert(id, obj.clone());
        }
        self.buckets.write().unwrap().entry(bucket.to_string()).or_default().insert(key.to_string(), obj.clone());
        obj
    }

    /// Places a bucket in a region (what HeadBucket answers; default us-east-1).
    pub fn set_region(&self, bucket: &str, region: &str) {
        self.create_bucket(bucket);
        self.regions.write().unwrap().insert(bucket.to_string(), region.to_string());
    }

    pub fn region(&self, bucket: &str) -> String {
        self.regions.read().unwrap().get(bucket).cloned().unwrap_or_else(|| "us-east-1".to_string())
    }

    /// Turns versioning on for a bucket (creating it if needed).
    pub fn enable_versioning(&self, bucket: &str) {
        self.create_bucket(bucket);
        self.versioned.write().unwrap().insert(bucket.to_string());
    }

    pub fn get(&self, bucket: &str, key: &str) -> Option<Arc<StoredObject>> {
        self.buckets.read().unwrap().get(bucket)?.get(key).cloned()
    }

    /// The current object, or the named version of it.
    pub fn get_version(&self, bucket: &str, key: &str, version: Option<&str>) -> Option<Arc<StoredObject>> {
        match version {
            None => self.get(bucket, key),
            Some(v) => {
                self.versions.read().unwrap().get(&(bucket.to_string(), key.to_string(), v.to_string())).cloned()
            }
        }
    }

    pub fn delete(&self, bucket: &str, key: &str) -> bool {
        let mut b = self.buckets.write().unwrap();
        b.get_mut(bucket).and_then(|m| m.remove(key)).is_some()
    }

    /// Starts a multipart upload; returns its id.
    pub fn create_upload(&self, upload: PendingUpload) -> String {
        let n = self.next_upload.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let id = format!("upload-{n:06}");
        self.uploads.lock().unwrap().insert(id.clone(), upload);
        id
    }

    /// Runs `f` on a pending upload; `None` when there is no such upload.
    pub fn with_upload<R>(&self, id: &str, f: impl FnOnce(&mut PendingUpload) -> R) -> Option<R> {
        self.uploads.lock().unwrap().get_mut(id).map(f)
    }

    /// Ends an upload (completed or aborted); returns it.
    pub fn take_upload(&self, id: &str) -> Option<PendingUpload> {
        self.uploads.lock().unwrap().remove(id)
    }

    /// Multipart uploads started and neither completed nor aborted, as (bucket, key).
    pub fn pending_uploads(&self) -> Vec<(String, String)> {
        self.uploads.lock().unwrap().values().map(|u| (u.bucket.clone(), u.key.clone())).collect()
    }

    /// Multipart uploads started and neither completed nor aborted, as
    /// (upload id, bucket, key).
    pub fn pending_upload_ids(&self) -> Vec<(String, String, String)> {
        let uploads = self.uploads.lock().unwrap();
        uploads.iter().map(|(id, u)| (id.clone(), u.bucket.clone(), u.key.clone())).collect()
    }

    /// Runs `f` over the bucket's objects; `None` when the bucket does not exist.
    pub fn with_bucket<R>(&self, bucket: &str, f: impl FnOnce(&Bucket) -> R) -> Option<R> {
        let b = self.buckets.read().unwrap();
        b.get(bucket).map(f)
    }
}

/// A well-formed safetensors file of exactly `len` bytes (at least 136): one
/// U8 tensor holding [`generate_bytes`] data, its JSON header padded with
/// spaces to 128 bytes, as the format allows. For tests of files that
/// `--check-model` accepts.
pub fn safetensors_bytes(len: usize, seed: u64) -> Bytes {
    const HEADER: usize = 128;
    assert!(len > 8 + HEADER, "a safetensors file of {len} bytes is too small for a test tensor");
    let data = len - 8 - HEADER;
    let mut header = format!(r#"{{"t":{{"dtype":"U8","shape":[{data}],"data_offsets":[0,{data}]}}}}"#);
    header.push_str(&" ".repeat(HEADER - header.len()));
    let mut out = (HEADER as u64).to_le_bytes().to_vec();
    out.extend_from_slice(header.as_bytes());
    out.extend_from_slice(&generate_bytes(data, seed));
    Bytes::from(out)
}

/// A well-formed safetensors file holding `tensors` (name, dtype, shape), in
/// that order, their data [`generate_bytes`] from `seed`: a shard of a model
/// as a training framework writes it, for demos and tests of whole model
/// layouts. Panics on a dtype it does not know.
pub fn safetensors_with(tensors: &[(&str, &str, &[u64])], seed: u64) -> Bytes {
    let mut header = String::from("{");
    let mut at = 0u64;
    for (i, (name, dtype, shape)) in tensors.iter().enumerate() {
        let size: u64 = match *dtype {
            "U8" | "I8" | "BOOL" => 1,
            "F16" | "BF16" | "I16" | "U16" => 2,
            "F32" | "I32" | "U32" => 4,
            "F64" | "I64" | "U64" => 8,
            other => panic!("no test dtype {other}"),
        };
        let len = shape.iter().product::<u64>() * size;
        let dims: Vec<String> = shape.iter().map(u64::to_string).collect();
        let comma = if i == 0 { "" } else { "," };
        header.push_str(&format!(
            r#"{comma}"{name}":{{"dtype":"{dtype}","shape":[{}],"data_offsets":[{at},{}]}}"#,
            dims.join(","),
            at + len
        ));
        at += len;
    }
    header.push_str(r#","__metadata__":{"format":"pt"}}"#);
    // The format pads the header with spaces to a multiple of 8 bytes.
    while header.len() % 8 != 0 {
        header.push(' ');
    }
    let mut out = Vec::with_capacity(8 + header.len() + at as usize);
    out.extend_from_slice(&(header.len() as u64).to_le_bytes());
    out.extend_from_slice(header.as_bytes());
    out.extend_from_slice(&generate_bytes(at as usize, seed));
    Bytes::from(out)
}

/// Deterministic, incompressible bytes: a splitmix64 stream seeded by `seed`.
/// Fast enough (several GB/s) to generate multi-GiB benchmark objects.
pub fn generate_bytes(len: usize, seed: u64) -> Bytes {
    let mut out = vec![0u8; len];
    let mut state = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) ^ 0xD1B5_4A32_D192_ED03;
    for chunk in out.chunks_mut(8) {
        state = state.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = state;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^= z >> 31;
        let bytes = z.to_le_bytes();
        chunk.copy_from_slice(&bytes[..chunk.len()]);
    }
    Bytes::from(out)
}
