//! `cat`: one object to stdout, in order, checked as it streams.

use std::time::{Duration, SystemTime};

use s3load_testserver::{ChecksumAlgorithm, Fault, Rule, StoredObject, When, Writer, generate_bytes};
use sha2::{Digest, Sha256};

use crate::harness::{BUCKET, Harness, Run};

fn sha256_hex(data: &[u8]) -> String {
    Sha256::digest(data).iter().map(|b| format!("{b:02x}")).collect()
}

/// Runs `script` in bash with `pipefail`, `$S3LOAD` naming s3load with the
/// server's endpoint, and the server's credentials.
async fn shell(h: &Harness, script: &str) -> Run {
    let mut env = h.server.client_env();
    let s3load = format!("{} --endpoint-url {}", env!("CARGO_BIN_EXE_s3load"), h.server.endpoint_url());
    env.push(("S3LOAD", s3load));
    let full = format!("set -o pipefail; {script}");
    h.command("bash", &["-c", &full], &env).await
}

/// `cat` of `key`, stdout as bytes (the harness's `Run` holds text).
/// What `cat` needs besides the object data it holds (runtime, HTTP client,
/// binary), in its memory bound.
const OVERHEAD_MIB: u64 = 48;

async fn cat_bytes(h: &Harness, args: &[&str]) -> (i32, Vec<u8>, String) {
    let out = h.path("cat.out");
    let quoted: Vec<String> = args.iter().map(|a| format!("'{a}'")).collect();
    let r = shell(h, &format!("$S3LOAD cat {} > '{}'", quoted.join(" "), out.display())).await;
    let bytes = std::fs::read(&out).unwrap();
    std::fs::remove_file(&out).unwrap();
    (r.code, bytes, r.stderr)
}

#[tokio::test]
async fn cat_of_a_1_gib_object_matches_sha256sum_within_its_memory_bound() {
    let h = Harness::new().await;
    let data = generate_bytes(1 << 30, 77);
    let want = sha256_hex(&data);
    h.put("big.bin", data);
    // The stated bound: (concurrency + 1) x part-size of object data, plus
    // what the process needs anyway.
    for (c, p) in [(4u64, 4u64), (8, 16)] {
        let script = format!("$S3LOAD --log debug cat -c {c} -p {p} s3://{BUCKET}/big.bin | sha256sum | cut -d' ' -f1");
        let r = shell(&h, &script).await;
        r.assert_ok();
        assert_eq!(r.stdout.trim(), want, "-c {c} -p {p}: the bytes piped out are the object's");
        let rss_mib = crate::harness::peak_rss_kib(&r.stderr) / 1024;
        let bound = (c + 1) * p + OVERHEAD_MIB;
        assert!(rss_mib <= bound, "-c {c} -p {p}: peak RSS {rss_mib} MiB over the bound of {bound} MiB");
        eprintln!("cat 1 GiB -c {c} -p {p}: peak RSS {rss_mib} MiB (bound {bound} MiB)");
    }
}

#[tokio::test]
async fn parts_that_arrive_out_of_order_are_written_in_order_and_checked() {
    let h = Harness::new().await;
    let data = generate_bytes(20 << 20, 5);
    h.put("m.bin", data.clone());
    // The first range is held back: later ranges arrive first.
    h.server.faults().add(Rule::new("GetObject", When::First(1), Fault::Delay(Duration::from_millis(400))));
    let (code, out, stderr) = cat_bytes(&h, &["--log", "debug", "-p", "1", &format!("s3://{BUCKET}/m.bin")]).await;
    assert_eq!(code, 0, "{stderr}");
    assert!(out == data, "out of order or wrong bytes");
    assert!(stderr.contains("verified") && stderr.contains("CRC64NVME"), "checked against the store's CRC: {stderr}");
    let gets = h.server.log().count("GetObject");
    assert_eq!(gets, 20, "20 ranged GETs of 1 MiB");
}

#[tokio::test]
async fn legacy_objects_are_checked_against_their_md5_etag_single_put_and_multipart() {
    let h = Harness::new().await;
    let store = h.server.store();
    let small = generate_bytes(3 << 20, 1);
    let big = generate_bytes(120 << 20, 2);
    store.put_object(BUCKET, "single.bin", Writer::S5cmd.legacy_object(small.clone(), SystemTime::now()));
    store.put_object(BUCKET, "multi.bin", Writer::S5cmd.legacy_object(big.clone(), SystemTime::now()));
    for (key, data) in [("single.bin", &small), ("multi.bin", &big)] {
        let (code, out, stderr) = cat_bytes(&h, &["--log", "debug", "-p", "1", &format!("s3://{BUCKET}/{key}")]).await;
        assert_eq!(code, 0, "{key}: {stderr}");
        assert!(&out == data, "{key}: wrong bytes");
        assert!(stderr.contains("checksum=\"MD5\"") || stderr.contains("checksum=MD5"), "{key}: {stderr}");
    }
}

#[tokio::test]
async fn a_flipped_byte_gives_a_nonzero_exit_naming_the_object() {
    let h = Harness::new().await;
    let store = h.server.store();
    store.put_object(
        BUCKET,
        "crc.bin",
        StoredObject::with_checksum(generate_bytes(6 << 20, 3), SystemTime::now(), Some(ChecksumAlgorithm::Crc64Nvme)),
    );
    store.put_object(
        BUCKET,
        "legacy.bin",
        Writer::AwsCli.legacy_object(generate_bytes(20 << 20, 4), SystemTime::now()),
    );
    for key in ["crc.bin", "legacy.bin"] {
        h.server.faults().clear();
        // A byte inside the second range's body is inverted.
        h.server.faults().add(Rule::new("GetObject", When::Nth(2), Fault::FlipByte(1000)).for_key(key));
        let (code, out, stderr) = cat_bytes(&h, &["-p", "1", &format!("s3://{BUCKET}/{key}")]).await;
        assert_eq!(code, 1, "{key}: {stderr}");
        assert!(stderr.contains(&format!("s3://{BUCKET}/{key}")), "{key}: names the object: {stderr}");
        assert!(stderr.contains("discard"), "{key}: says what to do with the output: {stderr}");
        let size = h.server.store().get(BUCKET, key).unwrap().data.len();
        assert_eq!(out.len(), size, "{key}: the bytes went out before the check could end");
    }
}

#[tokio::test]
async fn an_object_replaced_while_it_is_read_fails_and_says_so() {
    let h = Harness::new().await;
    h.put("r.bin", generate_bytes(8 << 20, 6));
    h.server.faults().add(Rule::new("GetObject", When::Nth(3), Fault::Replace(generate_bytes(8 << 20, 7))));
    let (code, _, stderr) = cat_bytes(&h, &["-p", "1", &format!("s3://{BUCKET}/r.bin")]).await;
    assert_eq!(code, 1, "{stderr}");
    assert!(stderr.contains("replaced while it was read"), "{stderr}");
    assert!(stderr.contains(&format!("s3://{BUCKET}/r.bin")), "{stderr}");
}

#[tokio::test]
async fn a_reset_body_is_resumed_and_the_output_is_exact() {
    let h = Harness::new().await;
    let data = generate_bytes(6 << 20, 8);
    h.put("cut.bin", data.clone());
    let cut = h.server.faults().add(Rule::new("GetObject", When::First(3), Fault::CutAfter(100_000)));
    let (code, out, stderr) = cat_bytes(&h, &["-p", "2", &format!("s3://{BUCKET}/cut.bin")]).await;
    assert_eq!(code, 0, "{stderr}");
    assert_eq!(h.server.faults().fired(cut), 3);
    assert!(out == data, "wrong bytes after resumed ranges");
}

#[tokio::test]
async fn a_closed_pipe_ends_cat_quietly_with_141_and_tar_reads_from_it() {
    let h = Harness::new().await;
    h.put("big.bin", generate_bytes(64 << 20, 9));
    let r = shell(&h, &format!("$S3LOAD cat -p 1 s3://{BUCKET}/big.bin | head -c 1000 | wc -c")).await;
    assert_eq!(r.code, 141, "pipefail gives s3load's code: {r:?}");
    assert_eq!(r.stdout.trim(), "1000");
    // (The harness's empty AWS config files draw the SDK's own warnings, and
    // on a loaded machine a pooled connection may be retried: neither is
    // about the pipe.)
    let said: String =
        r.stderr.lines().filter(|l| !l.contains("WARN retrying")).collect::<Vec<_>>().join("\n").to_lowercase();
    assert!(
        !said.contains("error") && !said.contains("pipe") && !said.contains("panic"),
        "nothing said on a closed pipe: {}",
        r.stderr
    );

    // A tar archive streamed into `tar x`.
    let src = h.path("src");
    std::fs::create_dir_all(src.join("sub")).unwrap();
    std::fs::write(src.join("config.json"), b"{\"a\": 1}").unwrap();
    std::fs::write(src.join("sub/w.bin"), generate_bytes(3 << 20, 10)).unwrap();
    let tar = h.path("m.tar");
    let made = std::process::Command::new("tar").arg("cf").arg(&tar).arg("-C").arg(&src).arg(".").status().unwrap();
    assert!(made.success());
    h.put("m.tar", std::fs::read(&tar).unwrap());
    let out = h.path("untarred");
    std::fs::create_dir_all(&out).unwrap();
    let r = shell(&h, &format!("$S3LOAD cat -p 1 s3://{BUCKET}/m.tar | tar x -C '{}'", out.display())).await;
    r.assert_ok();
    assert_eq!(std::fs::read(out.join("config.json")).unwrap(), b"{\"a\": 1}");
    assert_eq!(std::fs::read(out.join("sub/w.bin")).unwrap(), std::fs::read(src.join("sub/w.bin")).unwrap());
}

#[tokio::test]
async fn bad_urls_and_flags_are_refused_before_any_output() {
    let h = Harness::new().await;
    h.put("dir/a.bin", generate_bytes(10, 1));
    h.put("empty.bin", Vec::new());
    let url = format!("s3://{BUCKET}/dir/a.bin");
    for (args, code, says) in [
        (vec![format!("s3://{BUCKET}/dir/")], 2, "one object"),
        (vec![format!("s3://{BUCKET}/dir/*")], 2, "one object"),
        (vec![format!("s3://{BUCKET}")], 2, "one object"),
        (vec!["./local".to_string()], 2, "s3:// URL"),
        (vec!["-p".into(), "0".into(), url.clone()], 2, "--part-size"),
        (vec!["-p".into(), "5000".into(), url.clone()], 2, "at most 4096"),
        (vec!["-c".into(), "0".into(), url.clone()], 2, "--concurrency"),
        (vec!["--dry-run".into(), url.clone()], 2, "--dry-run"),
        (vec![format!("s3://{BUCKET}/dir/missing.bin")], 3, "dir/missing.bin"),
        (vec![format!("s3://no-such-bucket/k")], 3, "no-such-bucket"),
    ] {
        let refs: Vec<&str> = args.iter().map(String::as_str).collect();
        let (got, out, stderr) = cat_bytes(&h, &refs).await;
        assert_eq!(got, code, "{args:?}: {stderr}");
        assert!(out.is_empty(), "{args:?}: nothing on stdout");
        assert!(stderr.contains(says), "{args:?}: {stderr}");
    }
    let (code, out, stderr) = cat_bytes(&h, &[&format!("s3://{BUCKET}/empty.bin")]).await;
    assert_eq!((code, out.len()), (0, 0), "{stderr}");
}

#[tokio::test]
async fn verify_require_refuses_an_object_it_cannot_check_before_writing_anything() {
    let h = Harness::new().await;
    let obj = Writer::S5cmd.legacy_object(generate_bytes(2 << 20, 11), SystemTime::now()).kms_encrypted();
    h.server.store().put_object(BUCKET, "kms.bin", obj);
    let url = format!("s3://{BUCKET}/kms.bin");
    let (code, out, stderr) = cat_bytes(&h, &["--verify", "require", &url]).await;
    assert_eq!(code, 3, "{stderr}");
    assert!(out.is_empty());
    assert!(stderr.contains("nothing was written") && stderr.contains("kms.bin"), "{stderr}");
    // Under the default, it is written and the gap is said.
    let (code, out, stderr) = cat_bytes(&h, &[&url]).await;
    assert_eq!((code, out.len()), (0, 2 << 20), "{stderr}");
    assert!(stderr.contains("not verified"), "{stderr}");
}

// Case 51: a store that states an absurd size (2^62 bytes): `cat` and a
// download refuse the object with a clear error before planning a single
// range, and nothing aborts.
#[tokio::test(flavor = "multi_thread")]
async fn case_51_an_absurd_size_stated_by_the_store_is_refused_not_an_abort() {
    let h = Harness::new().await;
    h.put("huge.bin", generate_bytes(9 << 20, 4));
    h.server.faults().add(Rule::new("HeadObject", When::Always, Fault::ClaimSize(1 << 62)));
    let (code, out, stderr) = cat_bytes(&h, &[&format!("s3://{BUCKET}/huge.bin")]).await;
    assert_eq!(code, 3, "{stderr}");
    assert!(out.is_empty());
    assert!(stderr.contains("above the largest object S3 allows (5 TiB)"), "{stderr}");
    let dest = h.path("d");
    let r = h.run(&["cp", "--part-size", "1", &format!("s3://{BUCKET}/huge.bin"), dest.to_str().unwrap()]).await;
    assert!(r.code == 1 || r.code == 3, "{r:?}");
    assert!(r.stderr.contains("above the largest object S3 allows (5 TiB)"), "{}", r.stderr);
    assert!(!dest.exists(), "nothing at the destination");
}

// Case 62: the largest object S3 allows (5 TiB), streamed in 1 MiB ranges:
// its five million ranges are computed as they are fetched, not planned up
// front, so `cat` holds its stated bound before the first byte arrives. (The
// store holds 9 MiB and only claims 5 TiB, so the run fails past the ninth
// range; what is measured is the memory it took to get there. A download of
// it would first need 5 TiB free; its ranges are the same computed ones.)
#[tokio::test(flavor = "multi_thread")]
async fn case_62_a_5_tib_object_in_1_mib_ranges_is_planned_in_bounded_memory() {
    let h = Harness::new().await;
    h.put("huge.bin", generate_bytes(9 << 20, 5));
    h.server.faults().add(Rule::new("HeadObject", When::Always, Fault::ClaimSize(5 << 40)));
    let url = format!("s3://{BUCKET}/huge.bin");
    let out = h.path("cat.out");
    let r = shell(&h, &format!("$S3LOAD --log debug cat -c 4 -p 1 '{url}' > '{}'", out.display())).await;
    assert_ne!(r.code, 0, "{}", r.stderr);
    assert!(r.stderr.contains("huge.bin"), "{}", r.stderr);
    let mib = crate::harness::peak_rss_kib(&r.stderr) / 1024;
    // (c + 1) x p of object data, and what the process needs anyway.
    assert!(mib <= 5 + OVERHEAD_MIB, "peak RSS {mib} MiB");
}
