//! The engine against the in-memory store: MD5s hashed in order per part
//! (legacy ETags) and small objects' MD5s hashed together.

use std::sync::Arc;
use std::time::Duration;

use tokio_util::sync::CancellationToken;

use super::engine_tests::*;
use super::hasher::Hasher;
use super::*;
use crate::store::faulty::{Fault, Faulty};
use crate::store::memory::{MemoryStore, Written};

#[tokio::test]
async fn legacy_md5_etags_are_checked_whole_and_per_uploaded_part() {
    let dir = tempfile::tempdir().unwrap();
    let store = Arc::new(MemoryStore::new());
    let part = 300 * KIB as u64;
    store.put(B, "single", body(700 * KIB), Written::Md5);
    store.put(B, "multi", body(1000 * KIB), Written::MultipartMd5(part));
    let jobs = vec![job(&store, "single", dir.path()).await, job(&store, "multi", dir.path()).await];
    let out = download_with(store.clone(), jobs, config()).await;
    for o in &out {
        assert_eq!(o.as_ref().unwrap(), &Verification::Verified("MD5"));
    }
    // Each uploaded part is fetched whole (it is hashed in order), none across parts.
    let multi = ranges(&store.gets(), "multi");
    assert_eq!(multi.len(), 4);
    assert!(multi.iter().flatten().all(|&(s, e)| s % part == 0 && e - s <= part), "{multi:?}");
}

// A part written to its end waits for company before it is hashed, and is
// journalled with its hash; neither its request slot nor its place among its
// object's parts in flight is held meanwhile. Two requests (or two parts of
// an object at a time): the first part is written and left unhashed (its wait
// for company is an hour and the other part being written is not due), the
// second stalls until the stall timeout; the third part is requested before
// that.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_part_waiting_for_its_hash_gives_its_request_slot_to_the_next_part() {
    let part = 300 * KIB as u64;
    let data = body(900 * KIB);
    for (requests, per_object) in [(2, 16), (3, 2)] {
        let dir = tempfile::tempdir().unwrap();
        let store = Arc::new(MemoryStore::new());
        store.put(B, "multi", data.clone(), Written::MultipartMd5(part));
        let faulty = Faulty::new(store.clone()).on_get(2, Fault::StallAfter(1000));
        let cfg = EngineConfig {
            max_requests: requests,
            tune_requests: false,
            part_concurrency: per_object,
            stall_timeout: Duration::from_secs(3),
            ..config()
        };
        let engine = engine_on(Arc::new(faulty), cfg, CancellationToken::new());
        engine.start_hasher(Hasher::new(1).waiting_for_company(Duration::from_secs(3600)));
        let out = download(&engine, vec![job(&store, "multi", dir.path()).await]).await;
        assert_eq!(out[0].as_ref().unwrap(), &Verification::Verified("MD5"));
        assert_eq!(std::fs::read(dir.path().join("multi")).unwrap(), data);
        // In the order the store saw them: the two first parts, then the
        // third (before the stalled one resumed from its 1,000th byte).
        let starts: Vec<u64> = ranges(&store.gets(), "multi").iter().map(|g| g.expect("ranged").0).collect();
        let why = format!("{requests} requests, {per_object} a file: {starts:?}");
        assert_eq!(starts.len(), 4, "{why}");
        let stalled = *starts[..2].iter().find(|&&s| starts.contains(&(s + 1000))).expect("a part resumed");
        let third = (0..3).map(|i| i * part).find(|s| !starts[..2].contains(s)).expect("three parts");
        assert_eq!(starts[2], third, "the third part was requested while the one at {stalled} stalled: {why}");
        assert_eq!(starts[3], stalled + 1000, "{why}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn small_single_put_objects_are_md5_checked_together_and_a_corrupted_one_is_fetched_again() {
    let dir = tempfile::tempdir().unwrap();
    let store = Arc::new(MemoryStore::new());
    // Sizes on and off the 64-byte block of MD5, up to a whole write buffer,
    // so that the hasher takes several at once, of unequal lengths.
    let sizes = [1, 63, 64, 65, 1000, 4096, 65_536, 65_537, 100_000, 256 * KIB - 40];
    let keys: Vec<String> = (0..40).map(|i| format!("s{i:02}")).collect();
    for (i, key) in keys.iter().enumerate() {
        let mut data = body(sizes[i % sizes.len()] + i);
        data.rotate_left(i % 7);
        store.put(B, key, data, Written::Md5);
    }
    // The 5th GET's body (some object's) arrives with a byte flipped.
    let faulty = Arc::new(Faulty::new(store.clone()).on_get(5, Fault::Corrupt(0)));
    let mut jobs = Vec::new();
    for key in &keys {
        jobs.push(job(&store, key, dir.path()).await);
    }
    let out = download_with(faulty, jobs, config()).await;
    for (o, key) in out.iter().zip(&keys) {
        assert_eq!(o.as_ref().unwrap(), &Verification::Verified("MD5"), "{key}");
        let (got, want) = (std::fs::read(dir.path().join(key)).unwrap(), store.body(B, key).unwrap());
        assert!(got == want, "{key}");
    }
    assert_eq!(store.gets().len(), 41, "one object fetched twice");
}
