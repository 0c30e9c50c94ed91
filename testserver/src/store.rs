//! The in-memory object store behind the test server.
//!
//! Objects are kept as [`Bytes`] so that a ranged GET is a zero-copy slice: serving
//! a range costs time proportional to the range, not to the object (unlike `s3s-fs`,
//! which re-hashes the whole file on every request). The ETag (MD5 of the body, as
//! S3 computes it for a single-part upload) is computed once, when the object is put.

use std::collections::BTreeMap;
use std::sync::{Arc, RwLock};
use std::time::SystemTime;

use bytes::Bytes;
use md5::{Digest, Md5};

/// One stored object.
#[derive(Debug, Clone)]
pub struct StoredObject {
    pub data: Bytes,
    /// ETag without quotes.
    pub etag: String,
    pub last_modified: SystemTime,
}

impl StoredObject {
    pub fn new(data: Bytes, last_modified: SystemTime) -> Self {
        let etag = hex::encode(Md5::digest(&data));
        StoredObject { data, etag, last_modified }
    }
}

type Bucket = BTreeMap<String, Arc<StoredObject>>;

/// Buckets of objects, shared between the HTTP front end and the test that drives it.
#[derive(Debug, Default)]
pub struct Store {
    buckets: RwLock<BTreeMap<String, Bucket>>,
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
        let obj = Arc::new(StoredObject::new(data.into(), when));
        self.buckets.write().unwrap().entry(bucket.to_string()).or_default().insert(key.to_string(), obj.clone());
        obj
    }

    pub fn get(&self, bucket: &str, key: &str) -> Option<Arc<StoredObject>> {
        self.buckets.read().unwrap().get(bucket)?.get(key).cloned()
    }

    pub fn delete(&self, bucket: &str, key: &str) -> bool {
        let mut b = self.buckets.write().unwrap();
        b.get_mut(bucket).and_then(|m| m.remove(key)).is_some()
    }

    /// Runs `f` over the bucket's objects; `None` when the bucket does not exist.
    pub fn with_bucket<R>(&self, bucket: &str, f: impl FnOnce(&Bucket) -> R) -> Option<R> {
        let b = self.buckets.read().unwrap();
        b.get(bucket).map(f)
    }
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
