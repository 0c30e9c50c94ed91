//! `--check-model`: safetensors shards and weight indexes checked on download.

use std::path::Path;

use crate::harness::{Harness, files_under};

fn s(p: &Path) -> &str {
    p.to_str().unwrap()
}

/// A safetensors file of `n` F32 tensors of 1024 values each; `extra` data
/// bytes appended (negative: cut off the end).
fn shard(prefix: &str, n: usize, extra: i64) -> Vec<u8> {
    let mut header = serde_json::Map::new();
    for i in 0..n {
        let at = (i * 4096) as u64;
        header.insert(
            format!("{prefix}.{i}.weight"),
            serde_json::json!({"dtype": "F32", "shape": [1024], "data_offsets": [at, at + 4096]}),
        );
    }
    let h = serde_json::to_vec(&header).unwrap();
    let mut out = (h.len() as u64).to_le_bytes().to_vec();
    out.extend_from_slice(&h);
    let data = (n as i64 * 4096 + extra).max(0) as usize;
    out.extend((0..data).map(|i| (i % 251) as u8));
    out
}

fn index(shards: &[(&str, &str, usize)]) -> Vec<u8> {
    let mut map = serde_json::Map::new();
    for (file, prefix, n) in shards {
        for i in 0..*n {
            map.insert(format!("{prefix}.{i}.weight"), serde_json::json!(file));
        }
    }
    serde_json::json!({"metadata": {"total_size": 0}, "weight_map": map}).to_string().into_bytes()
}

/// A two-shard model under `m/`; `second` is the second shard's bytes.
fn model(h: &Harness, second: Vec<u8>) {
    h.put("m/config.json", &b"{}"[..]);
    h.put("m/model-00001-of-00002.safetensors", shard("a", 8, 0));
    h.put("m/model-00002-of-00002.safetensors", second);
    h.put(
        "m/model.safetensors.index.json",
        index(&[("model-00001-of-00002.safetensors", "a", 8), ("model-00002-of-00002.safetensors", "b", 8)]),
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_whole_model_passes_its_checks() {
    let h = Harness::new().await;
    model(&h, shard("b", 8, 0));
    let dest = h.path("out");
    h.run(&["sync", "s3://bucket/m/*", s(&dest)]).await.assert_ok();
    assert_eq!(files_under(&dest).len(), 4);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_truncated_or_padded_shard_with_a_correct_checksum_is_refused_and_not_written() {
    for (what, bytes, says) in
        [("truncated", shard("b", 8, -300_i64), "truncated"), ("padded", shard("b", 8, 4096), "padding")]
    {
        let h = Harness::new().await;
        // The store's checksum is of these very bytes: only the header tells.
        model(&h, bytes);
        let dest = h.path("out");
        let run = h.run(&["sync", "s3://bucket/m/*", s(&dest)]).await;
        assert_eq!(run.code, 1, "{what}: {}", run.stderr);
        assert!(run.stderr.contains("model-00002-of-00002.safetensors"), "{what}: {}", run.stderr);
        assert!(run.stderr.contains(says), "{what}: {}", run.stderr);
        assert!(!dest.join("model-00002-of-00002.safetensors").exists(), "{what}: nothing at the final path");
        assert!(dest.join("model-00001-of-00002.safetensors").exists(), "{what}: the good shard is kept");
        // Taken as it is on request.
        let off = h.run(&["--check-model", "off", "sync", "s3://bucket/m/*", s(&dest)]).await;
        off.assert_ok();
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn a_header_pointing_past_the_end_is_refused() {
    let h = Harness::new().await;
    let mut bad = shard("b", 8, 0);
    bad[..8].copy_from_slice(&(1u64 << 20).to_le_bytes());
    model(&h, bad);
    let dest = h.path("out");
    let run = h.run(&["cp", "s3://bucket/m/*", s(&dest)]).await;
    assert_eq!(run.code, 1, "{}", run.stderr);
    assert!(run.stderr.contains("runs past the end"), "{}", run.stderr);
}

#[tokio::test(flavor = "multi_thread")]
async fn an_index_naming_a_missing_shard_fails_the_run_and_holds_back_delete() {
    let h = Harness::new().await;
    h.put("m/config.json", &b"{}"[..]);
    h.put("m/model-00001-of-00002.safetensors", shard("a", 8, 0));
    h.put(
        "m/model.safetensors.index.json",
        index(&[("model-00001-of-00002.safetensors", "a", 8), ("model-00002-of-00002.safetensors", "b", 8)]),
    );
    let dest = h.path("out");
    std::fs::create_dir_all(&dest).unwrap();
    std::fs::write(dest.join("stale.bin"), b"old").unwrap();
    let run = h.run(&["sync", "--delete", "s3://bucket/m/*", s(&dest)]).await;
    assert_eq!(run.code, 1, "{}", run.stderr);
    assert!(run.stderr.contains("model-00002-of-00002.safetensors, which is not in the destination"), "{}", run.stderr);
    assert!(dest.join("stale.bin").exists(), "nothing deleted after a failed check");
}

#[tokio::test(flavor = "multi_thread")]
async fn small_files_are_committed_before_a_large_shard_so_a_kill_late_in_it_leaves_them_in_place() {
    let h = Harness::new().await;
    // Keys sort the large shard first; sizes put it last.
    let shard_key = "m/a-model-00001.safetensors";
    h.put(shard_key, s3load_testserver::safetensors_bytes(6 << 20, 1));
    h.put("m/config.json", &b"{}"[..]);
    h.put("m/tokenizer.json", s3load_testserver::generate_bytes(300_000, 2));
    // The shard's fifth range never arrives: the pod is killed meanwhile.
    h.server.faults().add(
        s3load_testserver::Rule::new(
            "GetObject",
            s3load_testserver::When::After(4),
            s3load_testserver::Fault::StallAfter(0),
        )
        .for_key(shard_key),
    );
    let dest = h.path("out");
    let args = ["sync", "--part-size", "1", "--concurrency", "1", "s3://bucket/m/*", s(&dest)];
    let mut one_at_a_time = vec!["--numworkers", "1"];
    one_at_a_time.extend_from_slice(&args);
    let mut child = h.spawn(&one_at_a_time);
    let shard_gets = || h.server.log().records().iter().filter(|r| r.op == "GetObject" && r.key == shard_key).count();
    let t = std::time::Instant::now();
    while shard_gets() < 5 {
        assert!(t.elapsed() < std::time::Duration::from_secs(20), "the shard's fifth range was never asked for");
        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
    }
    child.kill().await.unwrap();
    let _ = child.wait().await;
    let visible: Vec<String> = files_under(&dest).into_iter().filter(|f| !f.starts_with('.')).collect();
    assert_eq!(visible, vec!["config.json", "tokenizer.json"], "the small files were committed first");
    h.server.faults().clear();
    let again = h.run(&args).await;
    again.assert_ok();
    assert_eq!(again.stdout_lines().len(), 1, "only the shard: {}", again.stdout);
}

// Case 52: a valid safetensors file whose header is 17 MB (300,000 empty
// tensors), and an index naming them all: checked as they stream, in memory
// of the order of what is kept per tensor (a name and two offsets), not a
// JSON tree of the whole header (834 MiB peak RSS before).
#[tokio::test(flavor = "multi_thread")]
async fn case_52_a_huge_header_and_index_are_checked_in_bounded_memory() {
    let h = Harness::new().await;
    const N: usize = 300_000;
    let mut header = String::from("{");
    for i in 0..N {
        let comma = if i == 0 { "" } else { "," };
        header.push_str(&format!(r#"{comma}"t{i}":{{"dtype":"U8","shape":[0],"data_offsets":[0,0]}}"#));
    }
    header.push('}');
    let mut file = (header.len() as u64).to_le_bytes().to_vec();
    file.extend_from_slice(header.as_bytes());
    assert!(file.len() > 17_000_000, "{} bytes", file.len());
    h.put("m/model-00001-of-00001.safetensors", file);
    let map: serde_json::Map<String, serde_json::Value> =
        (0..N).map(|i| (format!("t{i}"), serde_json::json!("model-00001-of-00001.safetensors"))).collect();
    h.put("m/model.safetensors.index.json", serde_json::json!({"weight_map": map}).to_string().into_bytes());
    let dest = h.path("d");
    let run = h.run(&["--log", "debug", "sync", "s3://bucket/m/*", s(&dest)]).await;
    let rss_mib = crate::harness::peak_rss_kib(&run.stderr) / 1024;
    eprintln!("peak RSS with a 17 MB header and its index: {rss_mib} MiB");
    run.assert_ok();
    assert!(run.stderr.contains("model checks passed: 1 safetensors header, 1 weight index"), "{}", run.stderr);
    assert!(rss_mib < 160, "peak RSS {rss_mib} MiB for a 17 MB header");
}

// Case 53, its last part: a run stopped while an index check is hung on a
// read of the destination (a network filesystem that stopped answering) ends
// at once with 143. The destination is a filesystem served by the test
// (`foldfs`) whose reads of the index wait until the test lets them through;
// the download itself never reads the index under its final name.
#[tokio::test(flavor = "multi_thread")]
async fn case_53_a_run_stopped_during_a_hung_index_check_ends_with_143() {
    let h = Harness::new().await;
    h.put("m/model-1.safetensors", shard("a", 2, 0));
    h.put("m/model.safetensors.index.json", index(&[("model-1.safetensors", "a", 2)]));
    let (backing, mount) = (h.path("backing"), h.path("mnt"));
    std::fs::create_dir_all(&backing).unwrap();
    std::fs::create_dir_all(&mount).unwrap();
    let (mounted, hold) = crate::foldfs::mount_holding(&backing, &mount, "model.safetensors.index.json")
        .unwrap_or_else(|e| panic!("mounting the test filesystem (needs /dev/fuse and root): {e}"));
    let dest = mount.join("d");
    let child = h.spawn(&["sync", "s3://bucket/m/*", s(&dest)]);
    let t = std::time::Instant::now();
    while hold.waiting() == 0 {
        assert!(t.elapsed() < std::time::Duration::from_secs(30), "the index was never read");
        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
    }
    let out = crate::harness::terminate(child, std::time::Duration::from_secs(10)).await;
    hold.release();
    drop(mounted);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(143), "{stderr}");
    assert!(stderr.contains("the model checks were stopped"), "{stderr}");
    assert_eq!(files_under(&backing.join("d")), ["model-1.safetensors", "model.safetensors.index.json"]);
}

// Case 53: an index whose shard is a FIFO, or a link planted to a valid shard
// elsewhere, in the destination: reported by name, never opened through the
// link, never a hang.
#[tokio::test(flavor = "multi_thread")]
async fn case_53_a_fifo_or_a_link_where_an_index_names_a_shard_is_reported_not_followed() {
    let h = Harness::new().await;
    h.put("m/model-1.safetensors", shard("a", 2, 0));
    h.put("m/model.safetensors.index.json", index(&[("model-1.safetensors", "a", 2), ("model-2.safetensors", "b", 2)]));
    let dest = h.path("d");
    std::fs::create_dir_all(&dest).unwrap();
    let fifo = dest.join("model-2.safetensors");
    let made = std::process::Command::new("mkfifo").arg(&fifo).status().unwrap();
    assert!(made.success());
    let run = tokio::time::timeout(std::time::Duration::from_secs(30), h.run(&["sync", "s3://bucket/m/*", s(&dest)]))
        .await
        .expect("the run does not hang on a FIFO");
    assert_eq!(run.code, 1, "{}", run.stderr);
    assert!(run.stderr.contains("names model-2.safetensors, which is not a regular file"), "{}", run.stderr);

    std::fs::remove_file(&fifo).unwrap();
    let elsewhere = h.path("elsewhere.safetensors");
    std::fs::write(&elsewhere, shard("b", 2, 0)).unwrap();
    std::os::unix::fs::symlink(&elsewhere, &fifo).unwrap();
    let run = h.run(&["sync", "s3://bucket/m/*", s(&dest)]).await;
    assert_eq!(run.code, 1, "{}", run.stderr);
    assert!(run.stderr.contains("names model-2.safetensors, which is a symbolic link"), "{}", run.stderr);
}
