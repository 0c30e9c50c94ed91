//! Faults injected by the test server, and what the client does about them.
//! Each test names the case of the reliability list (`docs/reliability.md`).

use std::time::{Duration, Instant};

use s3load_testserver::{ChecksumAlgorithm, Fault, RequestRecord, Rule, StoredObject, When, generate_bytes};

use crate::harness::{BUCKET, Harness, files_under, verified_by};

const MIB: usize = 1 << 20;

fn gets(h: &Harness) -> Vec<RequestRecord> {
    h.server.log().records().into_iter().filter(|r| r.op == "GetObject").collect()
}

/// Puts an object of `size` bytes under `key` and returns its data.
fn put_sized(h: &Harness, key: &str, size: usize, seed: u64) -> bytes::Bytes {
    let data = generate_bytes(size, seed);
    h.put(key, data.clone());
    data
}

#[tokio::test(flavor = "multi_thread")]
async fn case01_object_replaced_mid_download_restarts_whole_and_never_mixes() {
    let h = Harness::new().await;
    let old = put_sized(&h, "m/shard.bin", 8 * MIB, 1);
    let new = generate_bytes(6 * MIB + 5, 2);
    // The third part request finds the object replaced (a re-trained shard).
    h.server.faults().add(Rule::new("GetObject", When::Nth(3), Fault::Replace(new.clone())));
    let dest = h.path("out");
    let run = h.run(&["cp", "-p", "1", "-c", "2", "s3://bucket/m/*", dest.to_str().unwrap()]).await;
    run.assert_ok();
    let got = std::fs::read(dest.join("shard.bin")).unwrap();
    assert!(got == new, "the file is the new version whole (len {}), not a mix with the old", got.len());
    assert_ne!(got.len(), old.len());
    let new_etag = h.server.store().get(BUCKET, "m/shard.bin").unwrap().etag.clone();
    let g = gets(&h);
    let old_etag = g[0].if_match.clone().unwrap();
    assert_ne!(old_etag, new_etag);
    assert!(g.iter().any(|r| r.if_match.as_deref() == Some(new_etag.as_str())), "restarted with the new ETag");
    // After the restart every request is pinned to the new version, from byte 0.
    let first_new = g.iter().position(|r| r.if_match.as_deref() == Some(new_etag.as_str())).unwrap();
    assert!(g[first_new..].iter().all(|r| r.if_match.as_deref() == Some(new_etag.as_str())));
    let mut starts: Vec<u64> = g[first_new..].iter().map(|r| r.range.unwrap().0).collect();
    starts.sort();
    assert_eq!(starts, (0..7).map(|i| (i * MIB) as u64).collect::<Vec<_>>());
    assert_eq!(files_under(&dest), vec!["shard.bin"], "no temporary file left");
}

#[tokio::test(flavor = "multi_thread")]
async fn case01_an_object_that_keeps_changing_fails_after_bounded_restarts() {
    let h = Harness::new().await;
    put_sized(&h, "m/hot.bin", 4 * MIB, 1);
    // Every second request replaces the object again.
    for n in (2..200).step_by(2) {
        let data = generate_bytes(4 * MIB, 100 + n);
        h.server.faults().add(Rule::new("GetObject", When::Nth(n), Fault::Replace(data)));
    }
    let dest = h.path("out");
    let run = h.run(&["cp", "-p", "1", "-c", "1", "s3://bucket/m/*", dest.to_str().unwrap()]).await;
    assert_eq!(run.code, 1, "{}", run.stderr);
    assert!(run.stderr.contains("s3://bucket/m/hot.bin"), "{}", run.stderr);
    assert!(run.stderr.contains("PreconditionFailed") || run.stderr.contains("changed"), "{}", run.stderr);
    assert!(!dest.join("hot.bin").exists());
    assert_eq!(files_under(&dest), Vec::<String>::new(), "no temporary file left");
    // 1 + 3 restarts, each stopped at its second request.
    let heads = h.server.log().count("HeadObject");
    assert!(heads <= 8, "restarts are bounded: {heads} HEADs");
}

#[tokio::test(flavor = "multi_thread")]
async fn case01_in_a_versioned_bucket_the_listed_version_is_finished_without_a_restart() {
    let h = Harness::new().await;
    h.server.store().enable_versioning("vbucket");
    let old = generate_bytes(8 * MIB, 3);
    let listed = h.server.store().put("vbucket", "m/shard.bin", old.clone());
    let new = generate_bytes(6 * MIB, 4);
    h.server.faults().add(Rule::new("GetObject", When::Nth(3), Fault::Replace(new)));
    let dest = h.path("out");
    let run = h.run(&["cp", "-p", "1", "-c", "2", "s3://vbucket/m/*", dest.to_str().unwrap()]).await;
    run.assert_ok();
    assert!(std::fs::read(dest.join("shard.bin")).unwrap() == old, "the version that was listed, whole");
    let g = gets(&h);
    assert_eq!(g.len(), 8, "no restart: {g:?}");
    let v = listed.version_id.clone().unwrap();
    assert!(g.iter().all(|r| r.version_id.as_deref() == Some(v.as_str())), "every part names the version");
}

#[tokio::test(flavor = "multi_thread")]
async fn case01_without_permission_to_read_versions_objects_are_pinned_by_etag() {
    let h = Harness::new().await;
    h.server.store().enable_versioning("vbucket");
    let data = generate_bytes(4 * MIB, 5);
    h.server.store().put("vbucket", "m/a.bin", data.clone());
    h.server.faults().add(Rule::new("GetObject", When::Always, Fault::DenyVersions));
    let dest = h.path("out");
    let run = h.run(&["cp", "-p", "1", "s3://vbucket/m/*", dest.to_str().unwrap()]).await;
    run.assert_ok();
    assert!(std::fs::read(dest.join("a.bin")).unwrap() == data);
    assert!(run.stderr.contains("pinning objects by ETag only"), "{}", run.stderr);
    let g = gets(&h);
    // Parts already in flight when the first denial came back were denied too;
    // each was asked again once without the version, and no later part named it.
    let denied = g.iter().filter(|r| r.version_id.is_some()).count();
    assert!((1..=4).contains(&denied), "{g:?}");
    assert_eq!(g.len(), 4 + denied, "{g:?}");
    assert!(g.iter().all(|r| r.if_match.is_some()));
}

#[tokio::test(flavor = "multi_thread")]
async fn case02_reset_mid_body_resumes_from_the_first_missing_byte() {
    let h = Harness::new().await;
    let data = put_sized(&h, "r/big.bin", 4 * MIB, 3);
    // The first part's body breaks after 300,000 bytes.
    let rule = Rule::new("GetObject", When::Nth(1), Fault::CutAfter(300_000)).for_key("r/big.bin");
    h.server.faults().add(rule);
    let dest = h.path("out");
    h.run(&["cp", "-p", "1", "-c", "1", "s3://bucket/r/*", dest.to_str().unwrap()]).await.assert_ok();
    assert!(std::fs::read(dest.join("big.bin")).unwrap() == data);
    let g = gets(&h);
    assert_eq!(g[0].range, Some((0, Some(MIB as u64 - 1))));
    assert_eq!(g[1].range, Some((300_000, Some(MIB as u64 - 1))), "resumed where the body broke");
    assert_eq!(g.len(), 5, "one extra request for the broken part");
    assert_eq!(h.server.log().body_bytes(), data.len() as u64, "no byte fetched twice");
}

#[tokio::test(flavor = "multi_thread")]
async fn case03_body_shorter_than_promised_is_resumed_and_nothing_wrong_is_committed() {
    let h = Harness::new().await;
    let data = put_sized(&h, "s/small.json", 100_000, 4);
    h.server.faults().add(Rule::new("GetObject", When::Nth(1), Fault::EndAfter(40_000)));
    let dest = h.path("out");
    h.run(&["cp", "s3://bucket/s/*", dest.to_str().unwrap()]).await.assert_ok();
    assert!(std::fs::read(dest.join("small.json")).unwrap() == data);
    let g = gets(&h);
    assert_eq!(g.len(), 2);
    assert_eq!(g[1].range, Some((40_000, Some(99_999))));
}

#[tokio::test(flavor = "multi_thread")]
async fn case03_persistently_short_bodies_fail_with_nothing_at_the_final_path() {
    let h = Harness::new().await;
    put_sized(&h, "s/a.bin", 2 * MIB, 5);
    h.server.faults().add(Rule::new("GetObject", When::Always, Fault::EndAfter(0)));
    let dest = h.path("out");
    let run = h.run(&["-r", "2", "cp", "-p", "1", "s3://bucket/s/*", dest.to_str().unwrap()]).await;
    assert_eq!(run.code, 1);
    assert!(run.stderr.contains("s3://bucket/s/a.bin"), "{}", run.stderr);
    assert!(run.stderr.contains("gave up after 3 attempts"), "{}", run.stderr);
    assert_eq!(files_under(&dest), Vec::<String>::new(), "neither the file nor a temporary file");
}

#[tokio::test(flavor = "multi_thread")]
async fn case03_a_server_that_ignores_range_or_sends_a_shorter_range_fails_clearly() {
    let h = Harness::new().await;
    put_sized(&h, "i/a.bin", 3 * MIB, 6);
    h.server.faults().add(Rule::new("GetObject", When::Always, Fault::IgnoreRange));
    let dest = h.path("out");
    let run = h.run(&["cp", "-p", "1", "s3://bucket/i/*", dest.to_str().unwrap()]).await;
    assert_eq!(run.code, 1);
    assert!(run.stderr.contains("ignored the Range header"), "{}", run.stderr);
    assert_eq!(files_under(&dest), Vec::<String>::new());
    assert!(gets(&h).len() <= 3, "not retried: the server will not change its mind");

    h.server.faults().clear();
    h.server.faults().add(Rule::new("GetObject", When::Always, Fault::ShortRange(1000)));
    let run = h.run(&["cp", "-p", "1", "s3://bucket/i/*", dest.to_str().unwrap()]).await;
    assert_eq!(run.code, 1);
    assert!(run.stderr.contains("the server sent 1000 bytes"), "{}", run.stderr);
    assert_eq!(files_under(&dest), Vec::<String>::new());
}

#[tokio::test(flavor = "multi_thread")]
async fn case04_a_stalled_body_is_aborted_and_resumed_within_the_stall_timeout() {
    let h = Harness::new().await;
    let data = put_sized(&h, "st/a.bin", 2 * MIB, 7);
    h.server.faults().add(Rule::new("GetObject", When::Nth(1), Fault::StallAfter(100_000)));
    let dest = h.path("out");
    let t = Instant::now();
    let args = ["--stall-timeout", "1s", "cp", "-p", "1", "-c", "1", "s3://bucket/st/*", dest.to_str().unwrap()];
    let run = h.run(&args).await;
    run.assert_ok();
    assert!(t.elapsed() < Duration::from_secs(20), "bounded: {:?}", t.elapsed());
    assert!(std::fs::read(dest.join("a.bin")).unwrap() == data);
    let g = gets(&h);
    assert_eq!(g[1].range, Some((100_000, Some(MIB as u64 - 1))), "resumed after the stall");
    assert!(run.stderr.contains("stalled"), "{}", run.stderr);
}

#[tokio::test(flavor = "multi_thread")]
async fn case04_a_response_that_never_starts_is_aborted_too() {
    let h = Harness::new().await;
    let data = put_sized(&h, "st/b.bin", 1000, 8);
    h.server.faults().add(Rule::new("GetObject", When::Nth(1), Fault::Delay(Duration::from_secs(600))));
    let dest = h.path("out");
    let t = Instant::now();
    h.run(&["--stall-timeout", "1s", "cp", "s3://bucket/st/*", dest.to_str().unwrap()]).await.assert_ok();
    assert!(t.elapsed() < Duration::from_secs(20));
    assert!(std::fs::read(dest.join("b.bin")).unwrap() == data);
}

#[tokio::test(flavor = "multi_thread")]
async fn case05_a_slowdown_storm_lowers_concurrency_then_succeeds() {
    let h = Harness::new().await;
    for i in 0..60 {
        put_sized(&h, &format!("t/{i:02}.bin"), 10_000, 100 + i);
    }
    h.server.faults().add(Rule::new("GetObject", When::First(40), Fault::Status { status: 503, code: "SlowDown" }));
    let dest = h.path("out");
    let run = h.run(&["cp", "s3://bucket/t/*", dest.to_str().unwrap()]).await;
    run.assert_ok();
    assert_eq!(files_under(&dest).len(), 60);
    assert_eq!(gets(&h).len(), 100, "each throttled request retried once it was allowed");
    assert!(run.stderr.contains("lowering concurrency"), "{}", run.stderr);
}

#[tokio::test(flavor = "multi_thread")]
async fn case05_a_500_storm_that_does_not_end_fails_cleanly_and_names_the_objects() {
    let h = Harness::new().await;
    for i in 0..5 {
        put_sized(&h, &format!("e/{i}.bin"), 1000, i);
    }
    let status = Fault::Status { status: 500, code: "InternalError" };
    h.server.faults().add(Rule::new("GetObject", When::Always, status));
    let dest = h.path("out");
    let run = h.run(&["-r", "2", "cp", "s3://bucket/e/*", dest.to_str().unwrap()]).await;
    assert_eq!(run.code, 1);
    for i in 0..5 {
        assert!(run.stderr.contains(&format!("s3://bucket/e/{i}.bin")), "{}", run.stderr);
    }
    assert!(run.stderr.contains("InternalError"), "{}", run.stderr);
    assert_eq!(gets(&h).len(), 15, "three attempts per object, no more");
    assert_eq!(files_under(&dest), Vec::<String>::new());
}

#[tokio::test(flavor = "multi_thread")]
async fn case08_full_object_crc32_and_crc32c_are_combined_from_parallel_parts() {
    let h = Harness::new().await;
    let now = std::time::SystemTime::now();
    for (key, algo) in [("c/crc32.bin", ChecksumAlgorithm::Crc32), ("c/crc32c.bin", ChecksumAlgorithm::Crc32c)] {
        let obj = StoredObject::with_checksum(generate_bytes(5 * MIB + 17, 9), now, Some(algo));
        h.server.store().put_object(BUCKET, key, obj);
    }
    put_sized(&h, "c/crc64.bin", 5 * MIB + 1, 10);
    let dest = h.path("out");
    let run = h.run(&["--json", "cp", "-p", "1", "s3://bucket/c/*", dest.to_str().unwrap()]).await;
    run.assert_ok();
    assert_eq!(
        verified_by(&run),
        vec![
            ("s3://bucket/c/crc32.bin".to_string(), "CRC32".to_string()),
            ("s3://bucket/c/crc32c.bin".to_string(), "CRC32C".to_string()),
            ("s3://bucket/c/crc64.bin".to_string(), "CRC64NVME".to_string()),
        ]
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn case08_a_wrong_stated_checksum_is_never_committed() {
    let h = Harness::new().await;
    put_sized(&h, "w/a.bin", 3 * MIB, 11);
    put_sized(&h, "w/small.bin", 1000, 12);
    h.server.faults().add(Rule::new("HeadObject", When::Always, Fault::WrongChecksum));
    h.server.faults().add(Rule::new("GetObject", When::Always, Fault::WrongChecksum));
    let dest = h.path("out");
    let run = h.run(&["cp", "-p", "1", "s3://bucket/w/*", dest.to_str().unwrap()]).await;
    assert_eq!(run.code, 1, "{}", run.stderr);
    assert!(run.stderr.contains("s3://bucket/w/a.bin: CRC64NVME of the bytes received"), "{}", run.stderr);
    assert!(run.stderr.contains("s3://bucket/w/small.bin: CRC64NVME"), "{}", run.stderr);
    assert_eq!(files_under(&dest), Vec::<String>::new());
}

#[tokio::test(flavor = "multi_thread")]
async fn case09_a_flipped_byte_is_detected_and_the_object_fetched_again() {
    let h = Harness::new().await;
    let big = put_sized(&h, "f/big.bin", 3 * MIB, 13);
    let small = put_sized(&h, "f/small.bin", 5000, 14);
    let flip = |key: &str, at| Rule::new("GetObject", When::Nth(2), Fault::FlipByte(at)).for_key(key);
    h.server.faults().add(flip("f/big.bin", 12_345));
    h.server.faults().add(Rule::new("GetObject", When::Nth(1), Fault::FlipByte(4999)).for_key("f/small.bin"));
    let dest = h.path("out");
    let run = h.run(&["cp", "-p", "1", "-c", "1", "s3://bucket/f/*", dest.to_str().unwrap()]).await;
    run.assert_ok();
    assert!(std::fs::read(dest.join("big.bin")).unwrap() == big);
    assert!(std::fs::read(dest.join("small.bin")).unwrap() == small);
    let per_key = |k: &str| gets(&h).iter().filter(|r| r.key == k).count();
    assert_eq!(per_key("f/big.bin"), 6, "three parts, fetched twice");
    assert_eq!(per_key("f/small.bin"), 2);
    assert!(run.stderr.contains("CRC64NVME of the bytes received"), "the mismatch is logged: {}", run.stderr);
}

#[tokio::test(flavor = "multi_thread")]
async fn case09_corruption_on_every_try_fails_and_commits_nothing() {
    let h = Harness::new().await;
    put_sized(&h, "f/a.bin", 2000, 15);
    h.server.faults().add(Rule::new("GetObject", When::Always, Fault::FlipByte(0)));
    let dest = h.path("out");
    let run = h.run(&["cp", "s3://bucket/f/*", dest.to_str().unwrap()]).await;
    assert_eq!(run.code, 1);
    assert!(run.stderr.contains("s3://bucket/f/a.bin: CRC64NVME of the bytes received"), "{}", run.stderr);
    assert_eq!(files_under(&dest), Vec::<String>::new());
    assert_eq!(gets(&h).len(), 4, "first try and three restarts");
}

fn pair(src: &str, how: &str) -> (String, String) {
    (src.to_string(), how.to_string())
}

#[tokio::test(flavor = "multi_thread")]
async fn objects_without_a_checksum_are_checked_against_their_md5_etag_even_in_parallel_ranges() {
    let h = Harness::new().await;
    let now = std::time::SystemTime::now();
    let legacy = |key: &str, size, seed| {
        let obj = StoredObject::with_checksum(generate_bytes(size, seed), now, None);
        h.server.store().put_object(BUCKET, key, obj);
    };
    legacy("u/small.bin", 3000, 16);
    legacy("u/big.bin", 3 * MIB + 5, 17);
    let parts = [generate_bytes(MIB, 20), generate_bytes(MIB, 21), generate_bytes(MIB / 2 + 3, 22)];
    h.server.store().put_object(BUCKET, "u/multi.bin", StoredObject::multipart(&parts, now, None, false));

    // Ranges of 1 MiB: the single PUT of 3 MiB arrives in 4 ranges and its
    // MD5 is computed over them in order.
    let dest = h.path("out");
    let run =
        h.run(&["--json", "--verify", "require", "cp", "-p", "1", "s3://bucket/u/*", dest.to_str().unwrap()]).await;
    run.assert_ok();
    assert_eq!(
        verified_by(&run),
        vec![
            pair("s3://bucket/u/big.bin", "MD5"),
            pair("s3://bucket/u/multi.bin", "MD5"),
            pair("s3://bucket/u/small.bin", "MD5")
        ]
    );
    assert!(std::fs::read(dest.join("multi.bin")).unwrap() == parts.concat());
    assert!(std::fs::read(dest.join("big.bin")).unwrap() == generate_bytes(3 * MIB + 5, 17));
    let gets = h.server.log().count("GetObject");
    assert_eq!(gets, 4 + 3 + 1, "each range fetched once, apart");

    let off = h.path("off");
    let run = h.run(&["--verify", "off", "cp", "s3://bucket/u/*", off.to_str().unwrap()]).await;
    run.assert_ok();
    assert!(run.stderr.contains("not verified (--verify off)"), "{}", run.stderr);
}

#[tokio::test(flavor = "multi_thread")]
async fn sse_kms_objects_without_a_checksum_are_unverified_not_failed_on_their_etag() {
    let h = Harness::new().await;
    let now = std::time::SystemTime::now();
    let obj = StoredObject::with_checksum(generate_bytes(3000, 60), now, None).kms_encrypted();
    h.server.store().put_object(BUCKET, "k/secret.bin", obj);
    let dest = h.path("out");
    let run = h.run(&["--json", "cp", "s3://bucket/k/*", dest.to_str().unwrap()]).await;
    run.assert_ok();
    assert_eq!(verified_by(&run), vec![pair("s3://bucket/k/secret.bin", "false")]);
    let strict = h.path("strict");
    let run = h.run(&["--verify", "require", "cp", "s3://bucket/k/*", strict.to_str().unwrap()]).await;
    assert_eq!(run.code, 1);
    assert!(run.stderr.contains("its ETag is not an MD5 (SSE-KMS or SSE-C)"), "{}", run.stderr);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_corrupted_part_of_a_legacy_multipart_object_fails_its_etag() {
    let h = Harness::new().await;
    let now = std::time::SystemTime::now();
    let parts: Vec<bytes::Bytes> = (0..3).map(|i| generate_bytes(MIB, 30 + i)).collect();
    h.server.store().put_object(BUCKET, "e/multi.bin", StoredObject::multipart(&parts, now, None, false));
    h.server.faults().add(Rule::new("GetObject", When::Always, Fault::FlipByte(77)));
    let dest = h.path("out");
    let run = h.run(&["cp", "s3://bucket/e/*", dest.to_str().unwrap()]).await;
    assert_eq!(run.code, 1);
    assert!(run.stderr.contains("s3://bucket/e/multi.bin: the MD5 ETag of the bytes received"), "{}", run.stderr);
    assert_eq!(files_under(&dest), Vec::<String>::new());
}

#[tokio::test(flavor = "multi_thread")]
async fn case07_composite_checksums_are_verified_with_part_aligned_ranges() {
    let h = Harness::new().await;
    let now = std::time::SystemTime::now();
    // Uploaded in 3 MiB parts; s3load fetches 1 MiB ranges, none crossing a part.
    let parts: Vec<bytes::Bytes> = (0..3).map(|i| generate_bytes(3 * MIB, 40 + i)).collect();
    let parts = [parts[0].clone(), parts[1].clone(), parts[2].slice(..MIB + 7)];
    for (key, algo) in [("p/c32c.bin", ChecksumAlgorithm::Crc32c), ("p/c32.bin", ChecksumAlgorithm::Crc32)] {
        h.server.store().put_object(BUCKET, key, StoredObject::multipart(&parts, now, Some(algo), true));
    }
    // A flipped byte in one range of the CRC32C object is caught by the part's CRC.
    let flip = Rule::new("GetObject", When::Nth(5), Fault::FlipByte(1000)).for_key("p/c32c.bin");
    h.server.faults().add(flip);
    let dest = h.path("out");
    let run = h.run(&["--json", "cp", "-p", "1", "-c", "2", "s3://bucket/p/*", dest.to_str().unwrap()]).await;
    run.assert_ok();
    assert_eq!(
        verified_by(&run),
        vec![pair("s3://bucket/p/c32.bin", "CRC32"), pair("s3://bucket/p/c32c.bin", "CRC32C")]
    );
    assert!(std::fs::read(dest.join("c32c.bin")).unwrap() == parts.concat());
    assert!(run.stderr.contains("composite CRC32C of the bytes received"), "{}", run.stderr);
    let ranges: Vec<(u64, u64)> = gets(&h)
        .iter()
        .filter(|r| r.key == "p/c32.bin")
        .map(|r| r.range.map(|(a, b)| (a, b.unwrap())).unwrap())
        .collect();
    let part = 3 * MIB as u64;
    assert!(ranges.iter().all(|&(a, b)| a / part == b / part), "no range crosses an upload part: {ranges:?}");
    assert_eq!(ranges.len(), 8, "3 + 3 + 2 ranges of at most 1 MiB");
}

#[tokio::test(flavor = "multi_thread")]
async fn case07_composite_checksum_with_unequal_parts_is_reported_unverified_not_failed() {
    let h = Harness::new().await;
    let now = std::time::SystemTime::now();
    let parts = [generate_bytes(2 * MIB, 50), generate_bytes(3 * MIB, 51), generate_bytes(MIB, 52)];
    h.server.store().put_object(
        BUCKET,
        "q/odd.bin",
        StoredObject::multipart(&parts, now, Some(ChecksumAlgorithm::Crc32), true),
    );
    let dest = h.path("out");
    let run = h.run(&["cp", "-p", "1", "s3://bucket/q/*", dest.to_str().unwrap()]).await;
    run.assert_ok();
    assert!(run.stderr.contains("1 of them unverified"), "{}", run.stderr);
    assert!(std::fs::read(dest.join("odd.bin")).unwrap() == parts.concat());
}

#[tokio::test(flavor = "multi_thread")]
async fn case18_access_denied_on_a_part_is_not_retried_and_names_the_object() {
    let h = Harness::new().await;
    put_sized(&h, "d/ok.bin", 100, 18);
    put_sized(&h, "d/denied.bin", 100, 19);
    let denied = Fault::Status { status: 403, code: "AccessDenied" };
    h.server.faults().add(Rule::new("GetObject", When::Always, denied).for_key("d/denied.bin"));
    let dest = h.path("out");
    let run = h.run(&["cp", "s3://bucket/d/*", dest.to_str().unwrap()]).await;
    assert_eq!(run.code, 1);
    assert!(run.stderr.contains("s3://bucket/d/denied.bin") && run.stderr.contains("AccessDenied"), "{}", run.stderr);
    assert_eq!(files_under(&dest), vec!["ok.bin"]);
    assert_eq!(gets(&h).iter().filter(|r| r.key == "d/denied.bin").count(), 1, "a 403 is not retried");
}

#[tokio::test(flavor = "multi_thread")]
async fn case16_a_listing_that_fails_half_way_fails_the_run() {
    let h = Harness::new().await;
    for i in 0..1500 {
        h.put(&format!("l/{i:04}"), &b"x"[..]);
    }
    let fault = Fault::Status { status: 403, code: "AccessDenied" };
    h.server.faults().add(Rule::new("ListObjectsV2", When::Nth(2), fault));
    let dest = h.path("out");
    let run = h.run(&["sync", "s3://bucket/l/*", dest.to_str().unwrap()]).await;
    assert_ne!(run.code, 0);
    assert!(run.stderr.contains("listing s3://bucket/l/*"), "{}", run.stderr);
    assert!(!dest.exists(), "nothing copied from a partial listing");
}
