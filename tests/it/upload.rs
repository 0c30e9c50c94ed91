//! Uploads: local -> S3 with multipart and checksums, sync both ways, --delete
//! on the S3 side, failures that must leave no multipart upload behind.

use std::path::Path;
use std::time::Duration;

use s3load_testserver::{ChecksumAlgorithm, Fault, Gate, Rule, When, generate_bytes, safetensors_bytes};

use crate::harness::{BUCKET, Harness, files_under};

fn s(p: &Path) -> &str {
    p.to_str().unwrap()
}

/// A model directory: a multipart-sized shard, small files, an empty file.
fn model_dir(h: &Harness) -> std::path::PathBuf {
    let dir = h.path("model");
    std::fs::create_dir_all(dir.join("tokenizer")).unwrap();
    std::fs::write(dir.join("model-00001.safetensors"), safetensors_bytes(12 << 20, 1)).unwrap();
    std::fs::write(dir.join("config.json"), b"{\"layers\": 2}").unwrap();
    std::fs::write(dir.join("tokenizer/vocab.txt"), generate_bytes(3000, 2)).unwrap();
    std::fs::write(dir.join("EMPTY"), b"").unwrap();
    dir
}

fn stored(h: &Harness, key: &str) -> std::sync::Arc<s3load_testserver::StoredObject> {
    h.server.store().get(BUCKET, key).unwrap_or_else(|| panic!("{key} not uploaded"))
}

#[tokio::test(flavor = "multi_thread")]
async fn upload_then_download_round_trips_and_second_syncs_either_way_are_no_ops() {
    let h = Harness::new().await;
    let dir = model_dir(&h);
    let src = format!("{}/", dir.display());
    let up = h.run(&["sync", "-p", "5", "-c", "2", &src, "s3://bucket/models/m-1/"]).await;
    up.assert_ok();
    assert_eq!(up.stdout_lines().len(), 4, "{}", up.stdout);
    // 12 MiB in 5 MiB parts: three parts, stored with a full-object CRC64NVME.
    let shard = stored(&h, "models/m-1/model-00001.safetensors");
    assert_eq!(shard.data, safetensors_bytes(12 << 20, 1));
    assert_eq!(shard.part_sizes, vec![5 << 20, 5 << 20, 2 << 20]);
    let c = shard.checksum.expect("checksum stored");
    assert_eq!((c.algorithm, c.composite_parts), (ChecksumAlgorithm::Crc64Nvme, None));
    assert_eq!(h.server.log().count("UploadPart"), 3);
    assert_eq!(h.server.log().upload_bytes(), 12 << 20, "each part sent once");
    assert_eq!(stored(&h, "models/m-1/EMPTY").data.len(), 0);
    assert_eq!(stored(&h, "models/m-1/config.json").content_type.as_deref(), Some("application/json"));
    assert!(h.server.store().pending_uploads().is_empty());

    h.server.log().clear();
    let again = h.run(&["sync", &src, "s3://bucket/models/m-1/"]).await;
    again.assert_ok();
    assert!(again.stdout.is_empty(), "{}", again.stdout);
    let writes = ["PutObject", "CreateMultipartUpload", "UploadPart"].map(|op| h.server.log().count(op));
    assert_eq!(writes, [0, 0, 0], "a second upload sync sends nothing");

    let back = h.path("back");
    h.run(&["sync", "s3://bucket/models/m-1/*", s(&back)]).await.assert_ok();
    assert_eq!(files_under(&back), files_under(&dir));
    for f in files_under(&dir) {
        assert_eq!(std::fs::read(back.join(&f)).unwrap(), std::fs::read(dir.join(&f)).unwrap(), "{f}");
    }
    h.server.log().clear();
    let again = h.run(&["sync", "s3://bucket/models/m-1/*", s(&back)]).await;
    again.assert_ok();
    assert_eq!(h.server.log().count("GetObject"), 0, "a second download sync fetches nothing");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_failed_multipart_upload_is_aborted_and_leaves_nothing() {
    let h = Harness::new().await;
    let dir = model_dir(&h);
    let key = "m/model-00001.safetensors";
    h.server
        .faults()
        .add(Rule::new("UploadPart", When::After(1), Fault::Status { status: 403, code: "AccessDenied" }).for_key(key));
    let run = h.run(&["cp", "-p", "5", &format!("{}/", dir.display()), "s3://bucket/m/"]).await;
    assert_eq!(run.code, 1, "{}", run.stderr);
    assert!(run.stderr.contains(&format!("s3://bucket/{key}")), "{}", run.stderr);
    assert!(h.server.store().get(BUCKET, key).is_none(), "no object from a failed upload");
    assert!(h.server.store().pending_uploads().is_empty(), "the multipart upload was aborted");
    assert_eq!(h.server.log().count("AbortMultipartUpload"), 1);
    assert!(h.server.store().get(BUCKET, "m/config.json").is_some(), "the other files went up");
}

#[tokio::test(flavor = "multi_thread")]
async fn an_interrupted_multipart_upload_is_aborted() {
    let h = Harness::new().await;
    let dir = model_dir(&h);
    h.server.faults().add(Rule::new("UploadPart", When::Always, Fault::Delay(Duration::from_secs(30))));
    let child = h.spawn(&["cp", "-p", "5", s(&dir.join("model-00001.safetensors")), "s3://bucket/m/"]);
    h.wait_for_request("UploadPart").await;
    let status = crate::harness::terminate(child, Duration::from_secs(10)).await.status;
    assert_eq!(status.code(), Some(143));
    assert!(h.server.store().pending_uploads().is_empty(), "aborted on the way out");
    assert!(h.server.store().get(BUCKET, "m/model-00001.safetensors").is_none());
}

// The first signal stops the run in order, which here waits on an abort the
// store does not answer (held by the server); the second ends the process
// at once, with its own exit code, saying what it leaves: the multipart
// upload stays open, as a kill leaves it, and nothing is stored at the key.
// The summary file says so (not the one an earlier run left).
#[tokio::test(flavor = "multi_thread")]
async fn a_second_signal_exits_at_once_while_the_first_waits_on_the_store() {
    for (first, second, code) in [("-INT", "-INT", 130), ("-TERM", "-INT", 130), ("-INT", "-TERM", 143)] {
        let h = Harness::new().await;
        let dir = model_dir(&h);
        h.server.faults().add(Rule::new("UploadPart", When::Always, Fault::Delay(Duration::from_secs(30))));
        let gate = Gate::new();
        h.server.faults().add(Rule::new("AbortMultipartUpload", When::Always, Fault::Hold(gate.clone())));
        // A summary file an earlier run left: replaced, not left as it was.
        let summary = h.path("summary.json");
        std::fs::write(&summary, r#"{"result":"success","exit_code":0}"#).unwrap();
        let model = dir.join("model-00001.safetensors");
        let model = s(&model);
        let child = h.spawn(&["cp", "--summary-file", s(&summary), "-p", "5", model, "s3://bucket/m/"]);
        h.wait_for_request("UploadPart").await;
        let pid = child.id().expect("running").to_string();
        let kill = |sig: &'static str| {
            let pid = pid.clone();
            async move { assert!(tokio::process::Command::new("kill").args([sig, &pid]).status().await.unwrap().success()) }
        };
        kill(first).await;
        gate.reached(1).await;
        kill(second).await;
        // The abort's own deadline is 15 s: ending within 10 s is the second signal's doing.
        let out = tokio::time::timeout(Duration::from_secs(10), child.wait_with_output())
            .await
            .expect("the second signal ends it at once")
            .unwrap();
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(code), "{first} {second}: {err}");
        assert!(err.contains("signal received: stopping (a second one exits at once)"), "{err}");
        assert!(err.contains("second signal: exiting at once, as a kill would"), "{err}");
        assert_eq!(h.server.store().pending_uploads().len(), 1, "left open, as a kill leaves it");
        assert!(h.server.store().get(BUCKET, "m/model-00001.safetensors").is_none());
        let written: serde_json::Value = serde_json::from_slice(&std::fs::read(&summary).unwrap()).unwrap();
        let result = if code == 130 { "interrupted" } else { "terminated" };
        assert_eq!((written["result"].as_str(), written["exit_code"].as_u64()), (Some(result), Some(code as u64)));
        assert!(written["error"].as_str().unwrap().starts_with("second signal"), "{written}");
        gate.open();
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn a_part_corrupted_on_the_way_or_throttled_is_sent_again() {
    let h = Harness::new().await;
    let dir = model_dir(&h);
    let key = "m/model-00001.safetensors";
    h.server.faults().add(Rule::new("UploadPart", When::Nth(2), Fault::FlipByte(1000)).for_key(key));
    h.server.faults().add(Rule::new("UploadPart", When::Nth(3), Fault::Status { status: 503, code: "SlowDown" }));
    h.server.faults().add(Rule::new("PutObject", When::Nth(1), Fault::FlipByte(3)));
    let run = h.run(&["cp", "-p", "5", &format!("{}/", dir.display()), "s3://bucket/m/"]).await;
    run.assert_ok();
    assert_eq!(stored(&h, key).data, safetensors_bytes(12 << 20, 1));
    assert!(h.server.log().count("UploadPart") >= 5, "two parts sent twice");
    for f in ["config.json", "tokenizer/vocab.txt", "EMPTY"] {
        assert_eq!(stored(&h, &format!("m/{f}")).data, std::fs::read(dir.join(f)).unwrap(), "{f}");
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn storage_class_content_type_and_checksum_algorithm_are_applied() {
    let h = Harness::new().await;
    let dir = model_dir(&h);
    let run = h
        .run(&[
            "cp",
            "-p",
            "5",
            "--storage-class",
            "INTELLIGENT_TIERING",
            "--checksum-algorithm",
            "crc32c",
            &format!("{}/", dir.display()),
            "s3://bucket/m/",
        ])
        .await;
    run.assert_ok();
    for key in ["m/model-00001.safetensors", "m/config.json"] {
        let o = stored(&h, key);
        assert_eq!(o.storage_class.as_deref(), Some("INTELLIGENT_TIERING"), "{key}");
        assert_eq!(o.checksum.unwrap().algorithm, ChecksumAlgorithm::Crc32c, "{key}");
    }
    let run = h.run(&["cp", "--content-type", "text/x-test", s(&dir.join("config.json")), "s3://bucket/c/cfg"]).await;
    run.assert_ok();
    assert_eq!(stored(&h, "c/cfg").content_type.as_deref(), Some("text/x-test"), "exact key, given type");
}

#[tokio::test(flavor = "multi_thread")]
async fn sources_map_to_keys_as_s5cmd_maps_them() {
    let h = Harness::new().await;
    let dir = model_dir(&h);
    let keys = |prefix: &str| -> Vec<String> {
        h.server.store().with_bucket(BUCKET, |b| b.keys().filter(|k| k.starts_with(prefix)).cloned().collect()).unwrap()
    };
    h.run(&["cp", s(&dir), "s3://bucket/a/"]).await.assert_ok();
    assert!(keys("a/").contains(&"a/model/config.json".to_string()), "{:?}", keys("a/"));
    h.run(&["cp", &format!("{}/*.json", dir.display()), "s3://bucket/b/"]).await.assert_ok();
    assert_eq!(keys("b/"), vec!["b/config.json"]);
    h.run(&["cp", s(&dir.join("config.json")), "s3://bucket/c/"]).await.assert_ok();
    assert_eq!(keys("c/"), vec!["c/config.json"]);
}

#[tokio::test(flavor = "multi_thread")]
async fn symlinks_are_followed_unless_told_not_to() {
    let h = Harness::new().await;
    let dir = h.path("d");
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(h.path("target.bin"), b"pointed to").unwrap();
    std::fs::write(dir.join("plain"), b"plain").unwrap();
    std::os::unix::fs::symlink(h.path("target.bin"), dir.join("link.bin")).unwrap();
    let src = format!("{}/", dir.display());
    h.run(&["cp", &src, "s3://bucket/f/"]).await.assert_ok();
    assert_eq!(stored(&h, "f/link.bin").data.as_ref(), b"pointed to");
    h.run(&["cp", "--no-follow-symlinks", &src, "s3://bucket/n/"]).await.assert_ok();
    assert!(h.server.store().get(BUCKET, "n/link.bin").is_none());
    assert!(h.server.store().get(BUCKET, "n/plain").is_some());
}

// A FIFO is never opened (it would wait for a writer): given as the source,
// a usage error that names it and says what to do; below a directory, left
// out with a warning, and the object at its key is not deleted by --delete.
#[tokio::test(flavor = "multi_thread")]
async fn a_fifo_in_the_source_is_named_and_left_out_not_opened() {
    let h = Harness::new().await;
    let dir = h.path("d");
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(dir.join("a.bin"), b"a").unwrap();
    let pipe = dir.join("pipe.bin");
    assert!(std::process::Command::new("mkfifo").arg(&pipe).status().unwrap().success());
    let one = h.run(&["cp", s(&pipe), "s3://bucket/one/pipe.bin"]).await;
    assert_eq!(one.code, 2, "{}", one.stderr);
    assert!(one.stderr.contains(&format!("{}: a named pipe (FIFO), not a regular file", s(&pipe))), "{}", one.stderr);
    assert_eq!(h.server.log().count("PutObject"), 0);

    h.put("p/pipe.bin", &b"uploaded before the file became a FIFO"[..]);
    h.put("p/gone.bin", &b"no local file"[..]);
    // Nothing can lie below a FIFO: what the bucket holds below one goes.
    assert!(std::process::Command::new("mkfifo").arg(dir.join("fifo2")).status().unwrap().success());
    h.put("p/fifo2/below.bin", &b"no local file either"[..]);
    let run = h.run(&["sync", "--delete", &format!("{}/", s(&dir)), "s3://bucket/p/"]).await;
    run.assert_ok();
    assert!(run.stderr.contains("a named pipe (FIFO), not a regular file: left out"), "{}", run.stderr);
    assert!(run.stderr.contains("not deleting 1 object(s) at or below s3://bucket/p/pipe.bin"), "{}", run.stderr);
    assert_eq!(stored(&h, "p/a.bin").data.as_ref(), b"a");
    assert!(h.server.store().get(BUCKET, "p/pipe.bin").is_some(), "kept");
    assert!(h.server.store().get(BUCKET, "p/gone.bin").is_none(), "deleted: no local entry");
    assert!(h.server.store().get(BUCKET, "p/fifo2/below.bin").is_none(), "deleted: nothing lies below a FIFO");
    // Excluded: not reported.
    let run =
        h.run(&["sync", "--exclude", "pipe*", "--exclude", "fifo*", &format!("{}/", s(&dir)), "s3://bucket/p/"]).await;
    run.assert_ok();
    assert!(!run.stderr.contains("left out"), "{}", run.stderr);
}

#[tokio::test(flavor = "multi_thread")]
async fn delete_on_the_s3_side_honours_excludes_and_the_cap() {
    let h = Harness::new().await;
    let dir = model_dir(&h);
    for k in ["old.bin", "logs/keep.log", "sub/stale"] {
        h.put(&format!("m/{k}"), &b"remote only"[..]);
    }
    h.put("m-other/x", &b"not below the prefix"[..]);
    let src = format!("{}/", dir.display());
    let capped = h.run(&["sync", "--delete", "--max-delete", "1", "--exclude", "logs/*", &src, "s3://bucket/m/"]).await;
    assert_eq!(capped.code, 1, "{}", capped.stderr);
    assert!(h.server.store().get(BUCKET, "m/old.bin").is_some(), "over the cap: nothing deleted");
    let run = h.run(&["sync", "--delete", "--exclude", "logs/*", &src, "s3://bucket/m/"]).await;
    run.assert_ok();
    let keys: Vec<String> = h.server.store().with_bucket(BUCKET, |b| b.keys().cloned().collect()).unwrap();
    assert!(!keys.contains(&"m/old.bin".to_string()) && !keys.contains(&"m/sub/stale".to_string()), "{keys:?}");
    assert!(keys.contains(&"m/logs/keep.log".to_string()), "excluded: kept");
    assert!(keys.contains(&"m-other/x".to_string()), "test-1 beside test/: kept");
    assert!(run.stdout.contains("rm s3://bucket/m/old.bin"), "{}", run.stdout);
}

#[tokio::test(flavor = "multi_thread")]
async fn delete_on_the_s3_side_is_refused_after_a_failed_upload() {
    let h = Harness::new().await;
    let dir = model_dir(&h);
    h.put("m/old.bin", &b"remote only"[..]);
    h.server.faults().add(
        Rule::new("PutObject", When::Always, Fault::Status { status: 403, code: "AccessDenied" })
            .for_key("m/config.json"),
    );
    let run = h.run(&["sync", "--delete", &format!("{}/", dir.display()), "s3://bucket/m/"]).await;
    assert_eq!(run.code, 1, "{}", run.stderr);
    assert!(h.server.store().get(BUCKET, "m/old.bin").is_some());
    assert_eq!(h.server.log().count("DeleteObjects"), 0);
}

#[tokio::test(flavor = "multi_thread")]
async fn keys_that_delete_objects_could_not_delete_for_now_are_deleted_again_and_refused_ones_are_not() {
    let h = Harness::new().await;
    let dir = model_dir(&h);
    for k in ["m/busy.bin", "m/slow.bin", "m/denied.bin", "m/gone.bin"] {
        h.put(k, &b"remote only"[..]);
    }
    let key_fault = |key: &str, when: When, status: u16, code: &'static str| {
        h.server.faults().add(Rule::new("DeleteObjects", when, Fault::Status { status, code }).for_key(key));
    };
    // S3 answers some keys of a batch with InternalError or SlowDown.
    key_fault("m/busy.bin", When::First(2), 500, "InternalError");
    key_fault("m/slow.bin", When::First(1), 503, "SlowDown");
    key_fault("m/denied.bin", When::Always, 403, "AccessDenied");
    let run = h.run(&["sync", "--delete", &format!("{}/", dir.display()), "s3://bucket/m/"]).await;
    assert_eq!(run.code, 1, "the denied key fails the run: {}", run.stderr);
    for gone in ["m/busy.bin", "m/slow.bin", "m/gone.bin"] {
        assert!(h.server.store().get(BUCKET, gone).is_none(), "{gone} deleted: {}", run.stderr);
        assert!(run.stdout.contains(&format!("rm s3://bucket/{gone}")), "{gone}: {}", run.stdout);
    }
    assert!(h.server.store().get(BUCKET, "m/denied.bin").is_some());
    assert!(run.stderr.contains("m/denied.bin") && run.stderr.contains("AccessDenied"), "{}", run.stderr);
    // The batch, then busy and slow again, then busy alone; denied never again.
    assert_eq!(h.server.log().count("DeleteObjects"), 3, "{}", run.stderr);
}

#[tokio::test(flavor = "multi_thread")]
async fn an_upload_dry_run_prints_every_copy_and_delete_and_sends_nothing() {
    let h = Harness::new().await;
    let dir = model_dir(&h);
    h.put("m/old.bin", &b"remote only"[..]);
    let run = h.run(&["--dry-run", "sync", "--delete", &format!("{}/", dir.display()), "s3://bucket/m/"]).await;
    run.assert_ok();
    let lines = run.stdout_lines();
    assert_eq!(lines.len(), 5, "{}", run.stdout);
    assert!(lines.contains(&"rm s3://bucket/m/old.bin"), "{}", run.stdout);
    let cfg = format!("cp {} s3://bucket/m/config.json", dir.join("config.json").display());
    assert!(lines.contains(&cfg.as_str()), "{}", run.stdout);
    let writes =
        ["PutObject", "CreateMultipartUpload", "UploadPart", "DeleteObjects"].map(|op| h.server.log().count(op));
    assert_eq!(writes, [0, 0, 0, 0]);
    assert!(h.server.store().get(BUCKET, "m/old.bin").is_some());
}

#[tokio::test(flavor = "multi_thread")]
async fn a_stalled_upload_request_is_abandoned_and_sent_again() {
    let h = Harness::new().await;
    let dir = model_dir(&h);
    h.server.faults().add(Rule::new("PutObject", When::Nth(1), Fault::Delay(Duration::from_secs(60))));
    let started = std::time::Instant::now();
    let run = h.run(&["--stall-timeout", "1s", "cp", s(&dir.join("config.json")), "s3://bucket/c/config.json"]).await;
    run.assert_ok();
    assert!(started.elapsed() < Duration::from_secs(30), "took {:?}", started.elapsed());
    assert_eq!(h.server.log().count("PutObject"), 2, "sent again after the stall");
    assert_eq!(stored(&h, "c/config.json").data.as_ref(), b"{\"layers\": 2}");
}

// `--limit-rate` paces upload bodies as they are sent, multipart parts and
// single PUTs alike, all in one budget: 12 MiB in 5 MiB parts and eight
// files of 48 KiB at 4 MiB/s take at least 3 s (less the tenth of a second
// of burst); every object arrives whole.
#[tokio::test(flavor = "multi_thread")]
async fn limit_rate_paces_upload_bodies() {
    let h = Harness::new().await;
    let dir = h.path("up");
    std::fs::create_dir_all(&dir).unwrap();
    let mut files = vec![("big.bin".to_string(), generate_bytes(12 << 20, 70))];
    files.extend((0..8).map(|i| (format!("small-{i}.bin"), generate_bytes(48 << 10, 71 + i))));
    for (name, data) in &files {
        std::fs::write(dir.join(name), data).unwrap();
    }
    let started = std::time::Instant::now();
    let src = format!("{}/", dir.display());
    let run = h.run(&["--limit-rate", "4M", "sync", "-p", "5", &src, "s3://bucket/up/"]).await;
    let took = started.elapsed();
    run.assert_ok();
    let total: usize = files.iter().map(|(_, d)| d.len()).sum();
    let floor = Duration::from_secs_f64(total as f64 / f64::from(4 << 20)) - Duration::from_millis(100);
    assert!(took >= floor, "took {took:?}, the rate allows no less than {floor:?}");
    for (name, data) in &files {
        assert!(stored(&h, &format!("up/{name}")).data == *data, "{name} arrived whole");
    }
    assert_eq!(h.server.log().count("UploadPart"), 3, "big.bin in three parts");

    // At a low rate the bodies go in small slices (here 4 KiB: 32
    // connections share 64 KiB/s), still whole: 160 KiB take at least 2.4 s.
    let slow = h.path("slow");
    std::fs::create_dir_all(&slow).unwrap();
    let data = generate_bytes(160 << 10, 80);
    std::fs::write(slow.join("a.bin"), &data).unwrap();
    let started = std::time::Instant::now();
    let src = format!("{}/", slow.display());
    h.run(&["--limit-rate", "64K", "cp", &src, "s3://bucket/slow/"]).await.assert_ok();
    assert!(started.elapsed() >= Duration::from_millis(2_400), "took {:?}", started.elapsed());
    assert!(stored(&h, "slow/a.bin").data == data);
}

// A single file filtered out, with --allow-empty-source: nothing to upload or
// compare, exit 0 (this once indexed the empty list of files and panicked).
#[tokio::test(flavor = "multi_thread")]
async fn a_single_file_filtered_out_with_allow_empty_source_uploads_nothing() {
    let h = Harness::new().await;
    let file = h.path("weights.bin");
    std::fs::write(&file, b"w").unwrap();
    let r = h.run(&["sync", "--allow-empty-source", "--exclude", "*.bin", s(&file), "s3://bucket/k/w.bin"]).await;
    r.assert_ok();
    assert!(!r.stderr.contains("panicked"), "{}", r.stderr);
    assert!(h.server.store().get(BUCKET, "k/w.bin").is_none());
    // Without --allow-empty-source: refused, nothing uploaded.
    let r = h.run(&["sync", "--exclude", "*.bin", s(&file), "s3://bucket/k/w.bin"]).await;
    assert_eq!(r.code, 3, "{}", r.stderr);
    assert!(r.stderr.contains("no files match"), "{}", r.stderr);
}

// A file replaced (by rename, as editors and publishers save) after the walk
// that planned its upload is not uploaded at all: not the new version cut to
// the length the walk saw, not the new version under the old one's plan. The
// run fails naming each such file, leaves no multipart upload open, sends
// the files that did not change, and the next run sends the new versions.
// A FIFO or a socket put in a file's place is refused the same way, without
// a hang, and so is a link to another file of the same size and mtime.
// The race is held open by holding the destination's listing, which comes
// after the walk.
#[tokio::test(flavor = "multi_thread")]
async fn a_file_replaced_after_the_walk_is_not_uploaded_cut_or_under_the_old_plan() {
    let h = Harness::new().await;
    let dir = h.path("tree");
    std::fs::create_dir_all(&dir).unwrap();
    let save = |name: &str, data: &[u8]| {
        let tmp = h.path("saving");
        std::fs::write(&tmp, data).unwrap();
        std::fs::rename(&tmp, dir.join(name)).unwrap();
    };
    save("grows.bin", &generate_bytes(100_000, 1));
    save("same-size.bin", &generate_bytes(100_000, 2));
    save("big.bin", &generate_bytes(12 << 20, 3));
    save("kept.bin", &generate_bytes(5000, 4));
    save("fifo.bin", &generate_bytes(5000, 5));
    save("decoy.bin", &generate_bytes(5000, 6));
    save("sock.bin", &generate_bytes(5000, 7));
    let gate = Gate::new();
    h.server.faults().add(Rule::new("ListObjectsV2", When::Nth(1), Fault::HoldAnswer(gate.clone())));
    let src = format!("{}/", s(&dir));
    let child = h.spawn(&["sync", &src, "s3://bucket/up/"]);
    gate.reached(1).await;
    let new = [("grows.bin", generate_bytes(200_000, 11)), ("same-size.bin", generate_bytes(100_000, 12))];
    let new_big = generate_bytes(13 << 20, 13);
    for (name, data) in &new {
        save(name, data);
    }
    save("big.bin", &new_big);
    // A FIFO put in a file's place must not hang the run.
    let fifo = h.path("fifo");
    assert!(std::process::Command::new("mkfifo").arg(&fifo).status().unwrap().success());
    std::fs::rename(&fifo, dir.join("fifo.bin")).unwrap();
    // A socket cannot even be opened (ENXIO): named as changed too.
    let _listener = std::os::unix::net::UnixListener::bind(h.path("sock")).unwrap();
    std::fs::rename(h.path("sock"), dir.join("sock.bin")).unwrap();
    // A link to another file of the same size and mtime, planted in a
    // file's place: the walk saw another file (inode), so it is refused.
    let secret = h.path("secret");
    std::fs::write(&secret, generate_bytes(5000, 66)).unwrap();
    let walked_mtime = std::fs::metadata(dir.join("decoy.bin")).unwrap().modified().unwrap();
    std::fs::File::options().write(true).open(&secret).unwrap().set_modified(walked_mtime).unwrap();
    let link = h.path("link");
    std::os::unix::fs::symlink(&secret, &link).unwrap();
    std::fs::rename(&link, dir.join("decoy.bin")).unwrap();
    gate.open();
    let out = tokio::time::timeout(Duration::from_secs(60), child.wait_with_output())
        .await
        .expect("the run does not hang on a FIFO")
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{err}");
    for name in ["grows.bin", "same-size.bin", "big.bin", "fifo.bin", "decoy.bin", "sock.bin"] {
        assert!(err.contains(&format!("{name}: the file changed")), "names {name}: {err}");
        let got = h.server.store().get(BUCKET, &format!("up/{name}")).map(|o| o.data.len());
        assert_eq!(got, None, "{name} was changed after the walk, yet an object of {got:?} bytes was stored");
    }
    assert_eq!(stored(&h, "up/kept.bin").data.as_ref(), &generate_bytes(5000, 4)[..]);
    assert!(h.server.store().pending_uploads().is_empty(), "no multipart upload left open");

    std::fs::remove_file(dir.join("fifo.bin")).unwrap();
    std::fs::remove_file(dir.join("decoy.bin")).unwrap();
    std::fs::remove_file(dir.join("sock.bin")).unwrap();
    h.run(&["sync", &src, "s3://bucket/up/"]).await.assert_ok();
    for (name, data) in &new {
        assert_eq!(stored(&h, &format!("up/{name}")).data.as_ref(), &data[..], "{name}");
    }
    assert_eq!(stored(&h, "up/big.bin").data.as_ref(), &new_big[..]);
}

// A file truncated in place while its body is being sent: the body comes up
// short, and the run names the file as changed at once rather than sending
// it again and again as if the network had failed. The PutObject is held by
// the server (the client cannot send the whole body) while the file is cut.
#[tokio::test(flavor = "multi_thread")]
async fn a_file_truncated_while_its_body_is_sent_is_named_at_once_not_retried() {
    let h = Harness::new().await;
    let dir = h.path("tree");
    std::fs::create_dir_all(&dir).unwrap();
    let file = dir.join("t.bin");
    std::fs::write(&file, generate_bytes(15 << 20, 7)).unwrap();
    let gate = Gate::new();
    h.server.faults().add(Rule::new("PutObject", When::Nth(1), Fault::Hold(gate.clone())));
    let child = h.spawn(&["cp", s(&file), "s3://bucket/t/t.bin"]);
    gate.reached(1).await;
    std::fs::OpenOptions::new().write(true).open(&file).unwrap().set_len(1 << 20).unwrap();
    gate.open();
    let out = tokio::time::timeout(Duration::from_secs(30), child.wait_with_output()).await.unwrap().unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(err.contains("t.bin: the file changed"), "{err}");
    assert_eq!(h.server.log().count("PutObject"), 1, "not sent again: {err}");
    assert!(h.server.store().get(BUCKET, "t/t.bin").is_none());
}

// A shell or container that starts s3load with a low soft limit of open
// files (256 on some systems, 1024 on most) must not fail a run of many
// small files with EMFILE: s3load raises its soft limit to the hard one at
// start, as Go programs do. Held at 64 here, below what a run of 600 files
// keeps open at the default concurrency.
#[tokio::test(flavor = "multi_thread")]
async fn a_low_soft_limit_of_open_files_does_not_fail_an_upload_of_many_files() {
    let h = Harness::new().await;
    let src = h.path("many");
    std::fs::create_dir_all(&src).unwrap();
    for i in 0..600 {
        std::fs::write(src.join(format!("f{i:04}.bin")), format!("file {i}")).unwrap();
    }
    let from = format!("{}/", src.display());
    let run = h.run_in_shell(&[], "ulimit -Sn 64 || exit 97; exec \"$@\"", &["cp", &from, "s3://bucket/many/"]).await;
    run.assert_ok();
    for i in [0, 299, 599] {
        assert_eq!(stored(&h, &format!("many/f{i:04}.bin")).data.as_ref(), format!("file {i}").as_bytes());
    }
    let count = (0..600).filter(|i| h.server.store().get(BUCKET, &format!("many/f{i:04}.bin")).is_some()).count();
    assert_eq!(count, 600);

    // A hard limit that low too: files that cannot be opened, and
    // connections that cannot be, fail at once (trying again cannot help),
    // by name, saying what to change.
    let started = std::time::Instant::now();
    let run = h.run_in_shell(&[], "ulimit -n 64 || exit 97; exec \"$@\"", &["cp", &from, "s3://bucket/again/"]).await;
    assert!(started.elapsed() < Duration::from_secs(30), "not retried for minutes: {:?}", started.elapsed());
    assert_eq!(run.code, 1, "{}", run.stderr);
    assert!(run.stderr.contains("Too many open files") && run.stderr.contains("ulimit -Hn"), "{}", run.stderr);
}
