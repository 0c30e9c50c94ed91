//! Objects as the usual writers leave them in existing buckets: single PUTs
//! and multipart uploads at each tool's part size, with an MD5 ETag and no
//! checksum (every object written before S3 kept checksums by default), with
//! SHA256 or SHA1 checksums, or encrypted with SSE-KMS. Each must download
//! byte-exact and be reported verified, or unverified with the right reason.

use bytes::Bytes;
use s3load_testserver::{ChecksumAlgorithm, Fault, Rule, StoredObject, When, Writer, generate_bytes};

use crate::harness::{BUCKET, Harness, files_under};

const MIB: usize = 1 << 20;

/// Each object's (key, how it was verified) from `--json` lines, sorted.
fn verified_by(run: &crate::harness::Run) -> Vec<(String, String)> {
    let strip = |(src, how): (String, String)| (src.trim_start_matches("s3://bucket/").to_string(), how);
    crate::harness::verified_by(run).into_iter().map(strip).collect()
}

fn name(w: Writer) -> &'static str {
    match w {
        Writer::AwsCli => "awscli",
        Writer::Boto3 => "boto3",
        Writer::S5cmd => "s5cmd",
        Writer::Rclone => "rclone",
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn objects_as_each_writer_leaves_them_download_byte_exact_and_verified() {
    let h = Harness::new().await;
    let now = std::time::SystemTime::now();
    let mut expected: Vec<(String, Bytes, &str)> = Vec::new();
    let mut put = |key: String, obj: StoredObject, how: &'static str| {
        expected.push((key.clone(), obj.data.clone(), how));
        h.server.store().put_object(BUCKET, &key, obj);
    };
    let mut seed = 100;
    for w in Writer::ALL {
        let (threshold, part) = w.split();
        let (threshold, part) = (threshold as usize, part as usize);
        // Just below the multipart threshold (one PUT, several of s3load's
        // ranges when above 16 MiB), exactly at it (a multipart upload of one
        // part, `-1`), and a few parts with an uneven last one.
        let mut sizes = vec![threshold - 1, threshold, 2 * part + 12_345];
        if w == Writer::Rclone {
            // rclone's cutoff is 200 MiB: one multipart object is enough.
            sizes = vec![12 * MIB + 1, threshold + 7];
        }
        for size in sizes {
            seed += 1;
            let obj = w.legacy_object(generate_bytes(size, seed), now);
            assert!(obj.checksum.is_none() && !obj.etag.is_empty());
            put(format!("legacy/{}-{size}.bin", name(w)), obj, "MD5");
        }
    }
    // SHA checksums: full for a single PUT (hashed in order over its ranges),
    // composite for a multipart upload (per part, then over the part hashes).
    for (algorithm, label) in [(ChecksumAlgorithm::Sha256, "SHA256"), (ChecksumAlgorithm::Sha1, "SHA1")] {
        for (size, w) in [(3 * MIB / 2, Writer::AwsCli), (40 * MIB + 3, Writer::Rclone), (20 * MIB + 9, Writer::AwsCli)]
        {
            seed += 1;
            let obj = w.object(generate_bytes(size, seed), now, Some(algorithm));
            put(format!("sha/{label}-{}-{size}.bin", name(w)), obj, label);
        }
    }
    // A composite CRC32 beside them, as SDKs of 2025 upload.
    seed += 1;
    put(
        "crc/composite.bin".into(),
        Writer::AwsCli.object(generate_bytes(17 * MIB, seed), now, Some(ChecksumAlgorithm::Crc32)),
        "CRC32",
    );

    let dest = h.path("out");
    let run = h.run(&["--json", "--verify", "require", "cp", "s3://bucket/*", dest.to_str().unwrap()]).await;
    run.assert_ok();
    let want: Vec<(String, String)> = {
        let mut v: Vec<_> = expected.iter().map(|(k, _, how)| (k.clone(), how.to_string())).collect();
        v.sort();
        v
    };
    assert_eq!(verified_by(&run), want);
    for (key, data, _) in &expected {
        assert!(std::fs::read(dest.join(key)).unwrap() == *data, "{key} differs");
    }
    // rclone's whole-file MD5 rides along as metadata: not needed, not harmful.
    let rclone = h.server.store().get(BUCKET, &format!("legacy/rclone-{}.bin", 200 * MIB + 7)).unwrap();
    assert!(rclone.metadata.contains_key("md5chksum") && rclone.etag.ends_with("-41"));
}

#[tokio::test(flavor = "multi_thread")]
async fn sse_kms_objects_are_unverified_for_the_right_reason_and_refused_by_require() {
    let h = Harness::new().await;
    let now = std::time::SystemTime::now();
    let single = Writer::AwsCli.legacy_object(generate_bytes(3 * MIB, 1), now).kms_encrypted();
    let multi = Writer::AwsCli.legacy_object(generate_bytes(20 * MIB, 2), now).kms_encrypted();
    h.server.store().put_object(BUCKET, "k/single.bin", single.clone());
    h.server.store().put_object(BUCKET, "k/multi.bin", multi.clone());
    // An SSE-KMS object uploaded with a checksum is verified by it.
    let with_sha = Writer::AwsCli.object(generate_bytes(MIB, 3), now, Some(ChecksumAlgorithm::Sha256)).kms_encrypted();
    h.server.store().put_object(BUCKET, "k/sha.bin", with_sha);

    let dest = h.path("out");
    let run = h.run(&["--json", "cp", "s3://bucket/k/*", dest.to_str().unwrap()]).await;
    run.assert_ok();
    assert_eq!(
        verified_by(&run),
        vec![
            ("k/multi.bin".into(), "false".into()),
            ("k/sha.bin".into(), "SHA256".into()),
            ("k/single.bin".into(), "false".into())
        ]
    );
    assert!(std::fs::read(dest.join("multi.bin")).unwrap() == multi.data);
    let strict = h.path("strict");
    let run = h.run(&["--verify", "require", "cp", "s3://bucket/k/*", strict.to_str().unwrap()]).await;
    assert_eq!(run.code, 1, "{}", run.stderr);
    for key in ["single", "multi"] {
        let line = run.stderr.lines().find(|l| l.contains(&format!("k/{key}.bin: cannot be verified"))).unwrap();
        assert!(line.contains("its ETag is not an MD5 (SSE-KMS or SSE-C)"), "{line}");
    }
    assert!(strict.join("sha.bin").exists() && !strict.join("single.bin").exists());
}

/// A byte flipped in one range of `key` on its `nth` GET (or every GET).
async fn corrupted_range_is_caught(key: &str, obj: StoredObject, what: &str, verified: &str) {
    let h = Harness::new().await;
    let data = obj.data.clone();
    h.server.store().put_object(BUCKET, key, obj);
    let url = format!("s3://bucket/{key}");

    // Every time: the object fails its check and nothing is committed.
    h.server.faults().add(Rule::new("GetObject", When::Always, Fault::FlipByte(4321)).for_key(key));
    let dest = h.path("always");
    let run = h.run(&["cp", &url, dest.to_str().unwrap()]).await;
    assert_eq!(run.code, 1, "{}", run.stderr);
    assert!(run.stderr.contains(&format!("{url}: {what} of the bytes received is")), "{}", run.stderr);
    assert!(!dest.exists() || std::fs::read_dir(&dest).unwrap().next().is_none(), "nothing at the destination");

    // Once, in the second range: caught, fetched again whole, committed right.
    h.server.faults().clear();
    h.server.faults().add(Rule::new("GetObject", When::Nth(2), Fault::FlipByte(4321)).for_key(key));
    let dest = h.path("once");
    let before = h.server.log().count("GetObject");
    let run = h.run(&["--json", "cp", &url, dest.to_str().unwrap()]).await;
    run.assert_ok();
    assert!(run.stderr.contains("fetching the object again from the start"), "{}", run.stderr);
    assert!(std::fs::read(&dest).unwrap() == data);
    let gets = h.server.log().count("GetObject") - before;
    assert!(gets >= 6, "three ranges, twice: {gets}");
    assert!(run.stdout.contains(&format!("\"verified\":\"{verified}\"")), "{}", run.stdout);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_corrupted_range_of_a_single_put_larger_than_a_part_is_caught_by_its_md5() {
    let obj = Writer::S5cmd.legacy_object(generate_bytes(40 * MIB + 11, 7), std::time::SystemTime::now());
    assert!(!obj.etag.contains('-'), "a single PUT");
    corrupted_range_is_caught("c/single.bin", obj, "the MD5 ETag", "MD5").await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_corrupted_range_of_a_sha256_object_is_caught() {
    let obj = StoredObject::with_checksum(
        generate_bytes(40 * MIB + 11, 8),
        std::time::SystemTime::now(),
        Some(ChecksumAlgorithm::Sha256),
    );
    corrupted_range_is_caught("c/sha.bin", obj, "SHA256", "SHA256").await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_single_put_of_1_gib_with_only_an_md5_etag_is_verified() {
    // What s5cmd or rclone leave for a 1 GiB file uploaded in one PUT (or any
    // tool on a store that keeps no checksums): 64 ranges of 16 MiB, one MD5.
    let h = Harness::new().await;
    let data = generate_bytes(1 << 30, 9);
    let obj = StoredObject::with_checksum(data.clone(), std::time::SystemTime::now(), None);
    assert!(!obj.etag.contains('-'));
    h.server.store().put_object(BUCKET, "big/one-put.bin", obj);
    let dest = h.path("out");
    let run =
        h.run(&["--json", "--verify", "require", "cp", "s3://bucket/big/one-put.bin", dest.to_str().unwrap()]).await;
    run.assert_ok();
    assert_eq!(verified_by(&run), vec![("big/one-put.bin".to_string(), "MD5".to_string())]);
    // 64 ranges of 16 MiB, each from its first byte; a range dropped as a
    // straggler under load is requested again from inside it.
    let starts: Vec<u64> = h
        .server
        .log()
        .records()
        .iter()
        .filter(|r| r.op == "GetObject")
        .filter_map(|r| r.range.map(|(s, _)| s))
        .filter(|s| s % (16 << 20) == 0)
        .collect();
    assert_eq!(starts.len(), 64, "fetched in parallel ranges: {starts:?}");
    assert!(std::fs::read(&dest).unwrap() == data);
}

#[tokio::test(flavor = "multi_thread")]
async fn hashing_many_objects_in_order_holds_no_file_handle_past_its_object() {
    // 400 single PUTs above the write buffer, hashed by the hashing thread
    // through a read handle each, under a limit of 256 open files: a handle
    // kept until the end of the run would run out of them.
    let h = Harness::new().await;
    let now = std::time::SystemTime::now();
    for i in 0..400 {
        let obj = StoredObject::with_checksum(generate_bytes(300 << 10, 7000 + i), now, None);
        h.server.store().put_object(BUCKET, &format!("many/{i:03}.bin"), obj);
    }
    let dest = h.path("out");
    let endpoint = h.server.endpoint_url();
    let args = [
        "-c",
        "ulimit -n 256 && exec \"$@\"",
        "sh",
        env!("CARGO_BIN_EXE_s3load"),
        "--endpoint-url",
        endpoint.as_str(),
        "--verify",
        "require",
        "cp",
        "s3://bucket/many/*",
        dest.to_str().unwrap(),
    ];
    let run = h.command("sh", &args, &h.server.client_env()).await;
    run.assert_ok();
    assert!(run.stderr.contains("400 copied"), "{}", run.stderr);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_sha256_the_bytes_do_not_match_is_refused_and_nothing_is_written() {
    // The store states a SHA256 that is not that of the bytes it serves
    // (single PUT above a part, and composite), on every request.
    let h = Harness::new().await;
    let now = std::time::SystemTime::now();
    let single = StoredObject::with_checksum(generate_bytes(20 * MIB, 1), now, Some(ChecksumAlgorithm::Sha256));
    h.server.store().put_object(BUCKET, "w/single.bin", single);
    let multi = Writer::AwsCli.object(generate_bytes(20 * MIB, 2), now, Some(ChecksumAlgorithm::Sha256));
    h.server.store().put_object(BUCKET, "w/multi.bin", multi);
    for op in ["HeadObject", "GetObject"] {
        h.server.faults().add(Rule::new(op, When::Always, Fault::WrongChecksum));
    }
    let dest = h.path("out");
    let run = h.run(&["cp", "s3://bucket/w/*", dest.to_str().unwrap()]).await;
    assert_eq!(run.code, 1, "{}", run.stderr);
    assert!(run.stderr.contains("s3://bucket/w/single.bin: SHA256 of the bytes received is"), "{}", run.stderr);
    assert!(
        run.stderr.contains("s3://bucket/w/multi.bin: composite SHA256 of the bytes received is"),
        "{}",
        run.stderr
    );
    assert_eq!(files_under(&dest), Vec::<String>::new(), "nothing at the destination");
}
