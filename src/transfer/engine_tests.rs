//! The engine against the in-memory store: verification outcomes, resume
//! decisions and retries, without the binary or HTTP.

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use tokio_util::sync::CancellationToken;

use super::report::Silent;
use super::upload::PutJob;
use super::*;
use crate::error::Error;
use crate::integrity::Algorithm;
use crate::store::faulty::{Fault, Faulty};
use crate::store::memory::{MemoryStore, Written};
use crate::store::{GetRequest, ObjectStore, PutTarget};

pub(super) const B: &str = "bucket";
pub(super) const KIB: usize = 1024;

/// Small parts so that small objects have several; resume journals written at once.
pub(super) fn config() -> EngineConfig {
    EngineConfig { part_size: 256 << 10, journal_hold: Duration::ZERO, ..EngineConfig::default() }
}

/// An engine on `store`, its requests stopped by `stop`.
pub(super) fn engine_on(store: Arc<dyn ObjectStore>, cfg: EngineConfig, stop: CancellationToken) -> Arc<Engine> {
    let timeouts = Timeouts { attempt: Duration::from_secs(30), deadline: Duration::from_secs(90) };
    let requests = Requests::new(&cfg, timeouts, stop);
    Engine::new(Looped::new(store, requests), cfg, Hooks::reporting(Arc::new(Silent)))
}

/// `n` bytes that differ from part to part.
pub(super) fn body(n: usize) -> Vec<u8> {
    (0..n).map(|i| (i * 7 + i / 4096) as u8).collect()
}

/// The job a batch listing makes for `key`, into `dir`.
pub(super) async fn job(store: &MemoryStore, key: &str, dir: &Path) -> GetJob {
    let page = store.list_page(B, key, None, None).await.unwrap();
    let meta = page.objects.into_iter().find(|o| o.key == key).expect("listed");
    GetJob {
        bucket: B.into(),
        key: key.into(),
        size: meta.size,
        etag: meta.etag,
        version_id: None,
        last_modified: meta.last_modified,
        dest: dir.join(key),
        root: dir.into(),
        checksum: KnownChecksum::NotAsked,
        etag_md5: false,
        source_parts: None,
        layout_unknown: None,
        piece: None,
    }
}

pub(super) async fn download_with(store: Arc<dyn ObjectStore>, jobs: Vec<GetJob>, cfg: EngineConfig) -> Vec<Outcome> {
    download_stoppable(store, jobs, cfg, CancellationToken::new()).await
}

async fn download_stoppable(
    store: Arc<dyn ObjectStore>,
    jobs: Vec<GetJob>,
    cfg: EngineConfig,
    stop: CancellationToken,
) -> Vec<Outcome> {
    let engine = engine_on(store, cfg, stop);
    download(&engine, jobs).await
}

/// GETs of `key`, as (start, end) ranges (`None`: the whole object).
pub(super) fn ranges(gets: &[GetRequest], key: &str) -> Vec<Option<(u64, u64)>> {
    gets.iter().filter(|g| g.key == key).map(|g| g.range.as_ref().map(|r| (r.start, r.end))).collect()
}

fn temp_files(dir: &Path) -> Vec<String> {
    let names = std::fs::read_dir(dir).unwrap().map(|e| e.unwrap().file_name().to_string_lossy().into_owned());
    names.filter(|n| crate::localfs::is_temp_name(n)).collect()
}

#[tokio::test]
async fn a_full_object_crc_is_checked_over_ranges_and_the_file_committed() {
    let dir = tempfile::tempdir().unwrap();
    let store = Arc::new(MemoryStore::new());
    let data = body(1024 * KIB + 3);
    store.put(B, "crc.bin", data.clone(), Written::Crc64);
    let j = job(&store, "crc.bin", dir.path()).await;
    let out = download_with(store.clone(), vec![j], config()).await;
    assert_eq!(out[0].as_ref().unwrap(), &Verification::Verified(Algorithm::Crc64Nvme.name()));
    assert_eq!(std::fs::read(dir.path().join("crc.bin")).unwrap(), data);
    assert_eq!(ranges(&store.gets(), "crc.bin").len(), 5, "four 256 KiB ranges and the 3-byte tail");
    assert_eq!(store.heads(), 1, "one HEAD for the checksum of an object in several parts");
    assert!(temp_files(dir.path()).is_empty());
}

#[tokio::test]
async fn bodies_in_pieces_of_any_size_land_whole_whether_copied_or_written_straight() {
    // Pieces smaller and larger than the 32 KiB windows written straight
    // from a piece, and not on their boundaries, so that a range mixes
    // buffered and straight writes; objects checked by CRC, by an MD5 in
    // order, and a multipart MD5 whose parts do not end on a window.
    let dir = tempfile::tempdir().unwrap();
    let store = Arc::new(MemoryStore::new());
    store.send_in_pieces_of(&[1, 40_000, 100_000, 32 * KIB, 5, 300_000, 64 * KIB, 33 * KIB, 200_000, 128 * KIB]);
    let objects = [
        ("crc", body(2048 * KIB + 3), Written::Crc64),
        ("md5", body(1500 * KIB + 11), Written::Md5),
        ("multi", body(3000 * KIB + 7), Written::MultipartMd5(700 * KIB as u64 + 13)),
    ];
    let mut jobs = Vec::new();
    for (key, data, how) in &objects {
        store.put(B, key, data.clone(), *how);
        jobs.push(job(&store, key, dir.path()).await);
    }
    let cfg = EngineConfig { part_size: 600 * KIB as u64 + 1, ..config() };
    let out = download_with(store.clone(), jobs, cfg).await;
    for ((key, data, _), o) in objects.iter().zip(&out) {
        assert!(matches!(o, Ok(Verification::Verified(_))), "{key}: {o:?}");
        assert!(std::fs::read(dir.path().join(key)).unwrap() == *data, "{key}: the file differs from the object");
    }
    assert!(temp_files(dir.path()).is_empty());
}

#[tokio::test]
async fn objects_without_a_usable_checksum_are_unverified_or_fail_under_require() {
    let dir = tempfile::tempdir().unwrap();
    let store = Arc::new(MemoryStore::new());
    store.put(B, "kms", body(600 * KIB), Written::Opaque);
    let out = download_with(store.clone(), vec![job(&store, "kms", dir.path()).await], config()).await;
    match &out[0] {
        Ok(Verification::Unverified(why)) => assert!(why.contains("not an MD5"), "{why}"),
        other => panic!("{other:?}"),
    }
    std::fs::remove_file(dir.path().join("kms")).unwrap();
    let require = EngineConfig { verify: VerifyMode::Require, ..config() };
    let out = download_with(store.clone(), vec![job(&store, "kms", dir.path()).await], require).await;
    assert!(matches!(out[0], Err(Error::Unverified(_))), "{:?}", out[0]);
    assert!(!dir.path().join("kms").exists(), "nothing at the final path");
    assert!(temp_files(dir.path()).is_empty());
}

#[tokio::test]
async fn a_body_corrupted_on_the_way_is_fetched_again_whole_and_then_verified() {
    let dir = tempfile::tempdir().unwrap();
    let store = Arc::new(MemoryStore::new());
    let data = body(1024 * KIB);
    store.put(B, "c", data.clone(), Written::Crc64);
    let faulty = Arc::new(Faulty::new(store.clone()).on_get(2, Fault::Corrupt(1000)));
    let out = download_with(faulty, vec![job(&store, "c", dir.path()).await], config()).await;
    assert_eq!(out[0].as_ref().unwrap(), &Verification::Verified(Algorithm::Crc64Nvme.name()));
    assert_eq!(std::fs::read(dir.path().join("c")).unwrap(), data);
    assert_eq!(ranges(&store.gets(), "c").len(), 8, "the whole object again, not only the bad range");
    assert_eq!(store.heads(), 2, "its identity read afresh before the second pass");
}

#[tokio::test]
async fn a_head_that_contradicts_the_listed_size_for_the_same_etag_fails_and_writes_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let store = Arc::new(MemoryStore::new());
    store.put(B, "h", body(17), Written::Md5);
    // The first body arrives corrupted, so the object is fetched again from a
    // fresh HEAD, which says the object (same ETag) is empty.
    let faulty = Arc::new(Faulty::new(store.clone()).on_get(1, Fault::Corrupt(3)).head_says_size(0));
    let out = download_with(faulty, vec![job(&store, "h", dir.path()).await], config()).await;
    match &out[0] {
        Err(Error::Integrity(msg)) => assert!(msg.contains("contradict") && !msg.contains("  "), "{msg}"),
        other => panic!("an empty file committed, or another error: {other:?}"),
    }
    assert!(!dir.path().join("h").exists(), "nothing at the final path");
    assert!(temp_files(dir.path()).is_empty());
}

#[tokio::test]
async fn an_etag_that_is_not_the_md5_of_the_bytes_fails_after_two_identical_downloads() {
    let dir = tempfile::tempdir().unwrap();
    let store = Arc::new(MemoryStore::new());
    store.put(B, "w", body(100 * KIB), Written::WrongMd5);
    let out = download_with(store.clone(), vec![job(&store, "w", dir.path()).await], config()).await;
    match &out[0] {
        Err(Error::Integrity(msg)) => assert!(msg.contains("two downloads gave the same bytes"), "{msg}"),
        other => panic!("{other:?}"),
    }
    assert_eq!(ranges(&store.gets(), "w").len(), 2);
    assert!(!dir.path().join("w").exists());
}

#[tokio::test]
async fn a_broken_body_resumes_from_its_first_missing_byte() {
    let dir = tempfile::tempdir().unwrap();
    let store = Arc::new(MemoryStore::new());
    let data = body(512 * KIB);
    store.put(B, "r", data.clone(), Written::Crc64);
    let faulty = Arc::new(Faulty::new(store.clone()).on_get(1, Fault::CutAfter(100_000)));
    let cfg = EngineConfig { max_requests: 1, ..config() };
    let out = download_with(faulty, vec![job(&store, "r", dir.path()).await], cfg).await;
    assert!(out[0].is_ok(), "{:?}", out[0]);
    assert_eq!(std::fs::read(dir.path().join("r")).unwrap(), data);
    let got = ranges(&store.gets(), "r");
    assert_eq!(got[..2], [Some((0, 256 * 1024)), Some((100_000, 256 * 1024))], "{got:?}");
}

#[tokio::test]
async fn fatal_and_transient_failures_are_told_apart() {
    let dir = tempfile::tempdir().unwrap();
    let store = Arc::new(MemoryStore::new());
    store.put(B, "t", body(100 * KIB), Written::Crc64);
    store.put(B, "d", body(100 * KIB), Written::Crc64);
    let jobs = vec![job(&store, "t", dir.path()).await, job(&store, "d", dir.path()).await];
    let cfg = EngineConfig { max_requests: 1, ..config() };
    // GET 1 (t) is throttled and retried; GET 3 (d) is denied: no retry.
    let faulty = Faulty::new(store.clone())
        .on_get(1, Fault::Fail(crate::error::StoreErrorKind::Throttled))
        .on_get(3, Fault::Fail(crate::error::StoreErrorKind::AccessDenied));
    let out = download_with(Arc::new(faulty), jobs, cfg).await;
    assert!(out[0].is_ok(), "{:?}", out[0]);
    assert_eq!(out[1].as_ref().unwrap_err().store_kind(), Some(crate::error::StoreErrorKind::AccessDenied));
    assert_eq!(ranges(&store.gets(), "d").len(), 0, "the injected denial never reached the store, and was not retried");
}

/// Stops a 4-range download at its third GET, leaving two ranges journalled.
async fn interrupted(store: &Arc<MemoryStore>, dir: &Path) {
    let stop = CancellationToken::new();
    let faulty = Arc::new(Faulty::new(store.clone()).on_get(3, Fault::Stop(stop.clone())));
    let cfg = EngineConfig { max_requests: 1, part_concurrency: 1, ..config() };
    let out = download_stoppable(faulty, vec![job(store, "big", dir).await], cfg, stop).await;
    assert!(matches!(out[0], Err(Error::Interrupted(_))), "{:?}", out[0]);
    assert_eq!(temp_files(dir).len(), 2, "the resumable file and its journal stay");
}

#[tokio::test]
async fn an_interrupted_object_resumes_with_only_its_missing_ranges() {
    let dir = tempfile::tempdir().unwrap();
    let store = Arc::new(MemoryStore::new());
    let data = body(1024 * KIB);
    store.put(B, "big", data.clone(), Written::Crc64);
    interrupted(&store, dir.path()).await;
    let before = store.gets().len();
    let out = download_with(store.clone(), vec![job(&store, "big", dir.path()).await], config()).await;
    assert!(out[0].is_ok(), "{:?}", out[0]);
    let again = ranges(&store.gets()[before..], "big");
    assert_eq!(again, [Some((512 * 1024, 768 * 1024)), Some((768 * 1024, 1024 * 1024))]);
    assert_eq!(std::fs::read(dir.path().join("big")).unwrap(), data);
    assert!(temp_files(dir.path()).is_empty(), "the journal is removed once the file is committed");
}

#[tokio::test]
async fn a_journalled_range_that_no_longer_matches_its_hash_is_fetched_again() {
    let dir = tempfile::tempdir().unwrap();
    let store = Arc::new(MemoryStore::new());
    let data = body(1024 * KIB);
    store.put(B, "big", data.clone(), Written::Crc64);
    interrupted(&store, dir.path()).await;
    // Zeros where the journal says range 1 is done (lost in a crash).
    let tmp = dir.path().join(".big.s3load-resume");
    let f = std::fs::OpenOptions::new().write(true).open(&tmp).unwrap();
    std::os::unix::fs::FileExt::write_all_at(&f, &[0; 4096], 300 * 1024).unwrap();
    let before = store.gets().len();
    let out = download_with(store.clone(), vec![job(&store, "big", dir.path()).await], config()).await;
    assert!(out[0].is_ok(), "{:?}", out[0]);
    let mut again = ranges(&store.gets()[before..], "big");
    again.sort();
    assert_eq!(again.len(), 3, "ranges 1, 2 and 3: {again:?}");
    assert_eq!(again[0], Some((256 * 1024, 512 * 1024)));
    assert_eq!(std::fs::read(dir.path().join("big")).unwrap(), data);
}

#[tokio::test]
async fn an_object_replaced_since_the_interruption_starts_over() {
    let dir = tempfile::tempdir().unwrap();
    let store = Arc::new(MemoryStore::new());
    store.put(B, "big", body(1024 * KIB), Written::Crc64);
    interrupted(&store, dir.path()).await;
    let new: Vec<u8> = body(1024 * KIB).into_iter().map(|b| b.wrapping_add(1)).collect();
    store.put(B, "big", new.clone(), Written::Crc64);
    let before = store.gets().len();
    let out = download_with(store.clone(), vec![job(&store, "big", dir.path()).await], config()).await;
    assert!(out[0].is_ok(), "{:?}", out[0]);
    assert_eq!(ranges(&store.gets()[before..], "big").len(), 4, "nothing of the old version is kept");
    assert_eq!(std::fs::read(dir.path().join("big")).unwrap(), new);
}

#[tokio::test]
async fn uploads_go_through_the_same_engine_and_are_checked_by_the_store() {
    let dir = tempfile::tempdir().unwrap();
    let store = Arc::new(MemoryStore::new());
    let data = body(11 << 20);
    let path = dir.path().join("up.bin");
    std::fs::write(&path, &data).unwrap();
    let job = PutJob {
        path: path.clone(),
        size: data.len() as u64,
        mtime: std::fs::metadata(&path).unwrap().modified().ok(),
        id: None,
        target: PutTarget {
            bucket: B.into(),
            key: "up.bin".into(),
            content_type: None,
            storage_class: None,
            checksum: Algorithm::Crc64Nvme,
        },
    };
    let cfg = EngineConfig { part_size: 5 << 20, ..config() };
    let engine = engine_on(store.clone(), cfg, CancellationToken::new());
    let out = upload::upload(&engine, vec![job]).await;
    assert_eq!(out[0].as_ref().unwrap(), &Verification::Verified(Algorithm::Crc64Nvme.name()));
    assert_eq!(store.body(B, "up.bin").unwrap().as_ref(), data.as_slice());
}

#[tokio::test]
async fn a_request_that_keeps_failing_gives_up_keeping_what_failed_it() {
    let dir = tempfile::tempdir().unwrap();
    let store = Arc::new(MemoryStore::new());
    store.put(B, "g", body(100 * KIB), Written::Crc64);
    let faulty = Faulty::new(store.clone())
        .on_get(1, Fault::Fail(crate::error::StoreErrorKind::ServerError))
        .on_get(2, Fault::Fail(crate::error::StoreErrorKind::ServerError));
    let cfg = EngineConfig { retry_count: 1, ..config() };
    let out = download_with(Arc::new(faulty), vec![job(&store, "g", dir.path()).await], cfg).await;
    match &out[0] {
        Err(e @ Error::GaveUp { attempts: 2, budget_spent: false, .. }) => {
            assert_eq!(e.store_kind(), Some(crate::error::StoreErrorKind::ServerError));
            assert!(e.to_string().contains("raise --retry-count"), "{e}");
        }
        other => panic!("{other:?}"),
    }
}

#[tokio::test]
async fn a_stalled_body_is_abandoned_after_the_stall_timeout_and_resumed() {
    let dir = tempfile::tempdir().unwrap();
    let store = Arc::new(MemoryStore::new());
    let data = body(200 * KIB);
    store.put(B, "s", data.clone(), Written::Crc64);
    let faulty = Faulty::new(store.clone()).on_get(1, Fault::StallAfter(70_000));
    let cfg = EngineConfig { stall_timeout: Duration::from_millis(300), ..config() };
    let out = download_with(Arc::new(faulty), vec![job(&store, "s", dir.path()).await], cfg).await;
    assert!(out[0].is_ok(), "{:?}", out[0]);
    assert_eq!(std::fs::read(dir.path().join("s")).unwrap(), data);
    // The second GET asks only for what the stalled one did not bring.
    assert_eq!(ranges(&store.gets(), "s"), [None, Some((70_000, 200 * 1024))]);
}

// Writes into a local destination run on the async thread, until one takes
// longer than the disk should: from then on, on the blocking pool. The same
// download is byte-exact either way.
#[tokio::test(flavor = "multi_thread")]
async fn a_slow_write_sends_later_writes_off_the_async_threads() {
    let store: Arc<dyn ObjectStore> = Arc::new(MemoryStore::new());
    let cfg = EngineConfig { inline_writes: true, ..config() };
    let engine = engine_on(store, cfg, CancellationToken::new());
    let here = std::thread::current().id();
    assert!(engine.write_io(move || std::thread::current().id() == here).await, "on this thread");
    assert!(engine.writing_inline_now(), "a fast write changes nothing");
    engine.write_io(|| std::thread::sleep(Duration::from_millis(600))).await;
    assert!(!engine.writing_inline_now());
    let here = std::thread::current().id();
    assert!(!engine.write_io(move || std::thread::current().id() == here).await, "on the pool");

    for inline in [true, false] {
        let dir = tempfile::tempdir().unwrap();
        let store = Arc::new(MemoryStore::new());
        let data = body(1024 * KIB + 3);
        store.put(B, "crc.bin", data.clone(), Written::Crc64);
        let j = job(&store, "crc.bin", dir.path()).await;
        let out = download_with(store.clone(), vec![j], EngineConfig { inline_writes: inline, ..config() }).await;
        assert!(out[0].is_ok(), "{out:?}");
        assert_eq!(std::fs::read(dir.path().join("crc.bin")).unwrap(), data);
    }
}

// Objects written in one buffer are created, written and renamed into place
// on the async thread when writes run there: no hand-off to the blocking
// pool and back for each small file. A flush to disk (`--durability fsync`)
// still goes to the pool, one per file.
#[tokio::test(flavor = "multi_thread")]
async fn a_small_file_is_created_and_committed_without_a_hand_off_to_the_pool() {
    for (durability, handed_off) in [(Durability::Off, 0), (Durability::Fsync, 3)] {
        let dir = tempfile::tempdir().unwrap();
        let store = Arc::new(MemoryStore::new());
        let mut jobs = vec![];
        for (i, kind) in [Written::Md5, Written::Crc64, Written::Opaque].into_iter().enumerate() {
            let key = format!("small/{i}.bin");
            store.put(B, &key, body(10 * KIB + i), kind);
            jobs.push(job(&store, &key, dir.path()).await);
        }
        let cfg = EngineConfig { inline_writes: true, durability, ..config() };
        let engine = engine_on(store.clone(), cfg, CancellationToken::new());
        let out = download(&engine, jobs).await;
        assert!(out.iter().all(Result::is_ok), "{out:?}");
        for i in 0..3 {
            assert_eq!(std::fs::read(dir.path().join(format!("small/{i}.bin"))).unwrap(), body(10 * KIB + i));
        }
        // A call over half a second (a loaded machine) would send the rest
        // to the pool: then the count says nothing of where calls go.
        assert!(engine.writing_inline_now(), "a slow call moved the rest to the pool");
        assert_eq!(engine.pool_calls(), handed_off, "{durability:?}");
    }
}
