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
