//! `--shard K/N`: N runs (an Indexed Job's pods) sharing one source and one
//! destination directory.

use std::collections::BTreeMap;
use std::path::Path;

use s3load_testserver::generate_bytes;

use crate::harness::{BUCKET, Harness, Run, files_under};

fn s(p: &Path) -> &str {
    p.to_str().unwrap()
}

/// 30 objects of uneven sizes below `m/`, one of them in several parts.
fn fill(h: &Harness) -> BTreeMap<String, bytes::Bytes> {
    let mut objects = BTreeMap::new();
    for i in 0..30u64 {
        let size = if i == 7 { 3 << 20 } else { 1000 + (i * 7919 % 97) as usize * 1000 };
        let rel = format!("{}/f{i}.bin", ["a", "b", "c"][i as usize % 3]);
        let data = generate_bytes(size, i);
        h.put(&format!("m/{rel}"), data.clone());
        objects.insert(rel, data);
    }
    objects
}

/// Runs the N shards at once, each to its exit.
async fn shards(h: &Harness, n: u32, args: &[&str]) -> Vec<Run> {
    let children: Vec<_> = (0..n)
        .map(|k| {
            let shard = format!("{k}/{n}");
            // `--shard` belongs to the command: after it.
            let (cmd, rest) = args.split_first().unwrap();
            let mut ordered = vec![*cmd, "--shard", shard.as_str(), "--part-size", "1"];
            ordered.extend_from_slice(rest);
            h.spawn(&ordered)
        })
        .collect();
    let mut runs = Vec::new();
    for c in children {
        let out = c.wait_with_output().await.unwrap();
        runs.push(Run {
            code: out.status.code().unwrap_or(-1),
            stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
        });
    }
    runs
}

#[tokio::test(flavor = "multi_thread")]
async fn shards_running_at_once_fill_one_directory_each_object_fetched_once() {
    let h = Harness::new().await;
    let objects = fill(&h);
    let total: u64 = objects.values().map(|d| d.len() as u64).sum();
    let dest = h.path("model");
    let runs = shards(&h, 3, &["sync", "s3://bucket/m/*", s(&dest)]).await;
    let mut copied = Vec::new();
    for r in &runs {
        r.assert_ok();
        copied.extend(r.stdout_lines().into_iter().map(str::to_string));
    }
    assert_eq!(copied.len(), objects.len(), "each object copied by exactly one shard: {copied:?}");
    assert!(runs.iter().all(|r| !r.stdout.is_empty()), "every shard took a share");
    assert_eq!(h.server.log().body_bytes(), total, "no byte fetched twice");
    assert_eq!(files_under(&dest), objects.keys().cloned().collect::<Vec<_>>());
    for (rel, data) in &objects {
        assert_eq!(&std::fs::read(dest.join(rel)).unwrap(), data, "{rel}");
    }
    let gets = h.server.log().count("GetObject");

    // A later unsharded sync of the same tree is a no-op, and merges the
    // shards' records into one.
    let run = h.run(&["sync", "s3://bucket/m/*", s(&dest)]).await;
    run.assert_ok();
    assert!(run.stdout.is_empty(), "{}", run.stdout);
    assert_eq!(h.server.log().count("GetObject"), gets);
    let mut record: Vec<String> = std::fs::read_dir(dest.join(".s3load"))
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n.starts_with("state"))
        .collect();
    record.sort();
    assert_eq!(record, ["state"]);
    let lines = std::fs::read_to_string(dest.join(".s3load/state")).unwrap().lines().count();
    assert_eq!(lines, 1 + objects.len(), "one record per file after the merge");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_re_sync_by_shards_after_a_change_fetches_only_what_changed() {
    let h = Harness::new().await;
    let objects = fill(&h);
    let dest = h.path("model");
    for r in shards(&h, 2, &["sync", "s3://bucket/m/*", s(&dest)]).await {
        r.assert_ok();
    }
    // A retrained object of the same size: the shards' records tell.
    let size = objects["a/f0.bin"].len();
    h.put("m/a/f0.bin", generate_bytes(size, 99));
    let runs = shards(&h, 2, &["sync", "s3://bucket/m/*", s(&dest)]).await;
    let copied: Vec<String> = runs.iter().flat_map(|r| r.assert_ok().stdout_lines()).map(str::to_string).collect();
    assert_eq!(copied.len(), 1, "{copied:?}");
    assert_eq!(std::fs::read(dest.join("a/f0.bin")).unwrap(), generate_bytes(size, 99));
}

#[tokio::test(flavor = "multi_thread")]
async fn sharded_delete_removes_each_stale_path_once() {
    let h = Harness::new().await;
    let objects = fill(&h);
    let dest = h.path("model");
    h.run(&["sync", "s3://bucket/m/*", s(&dest)]).await.assert_ok();
    let stale: Vec<&String> = objects.keys().filter(|k| k.starts_with("b/")).collect();
    for k in &stale {
        h.server.store().delete(BUCKET, &format!("m/{k}"));
    }
    let runs = shards(&h, 3, &["sync", "--delete", "s3://bucket/m/*", s(&dest)]).await;
    let mut deleted: Vec<String> = Vec::new();
    for r in &runs {
        r.assert_ok();
        deleted.extend(r.stdout_lines().into_iter().filter(|l| l.starts_with("rm ")).map(str::to_string));
    }
    deleted.sort();
    let mut expected: Vec<String> = stale.iter().map(|k| format!("rm {}", dest.join(k).display())).collect();
    expected.sort();
    assert_eq!(deleted, expected, "each stale file deleted once, by one shard");
    let left: Vec<String> = objects.keys().filter(|k| !k.starts_with("b/")).cloned().collect();
    assert_eq!(files_under(&dest), left);
}

#[tokio::test(flavor = "multi_thread")]
async fn shards_upload_a_directory_each_file_once() {
    let h = Harness::new().await;
    let src = h.path("src");
    let mut names = Vec::new();
    for i in 0..12 {
        let rel = format!("d{}/f{i}.bin", i % 2);
        std::fs::create_dir_all(src.join(&rel).parent().unwrap()).unwrap();
        std::fs::write(src.join(&rel), generate_bytes(1000 + i * 300, i as u64)).unwrap();
        names.push(rel);
    }
    let runs = shards(&h, 3, &["sync", &format!("{}/", s(&src)), "s3://bucket/up/"]).await;
    for r in &runs {
        r.assert_ok();
    }
    assert_eq!(h.server.log().count("PutObject"), names.len(), "each file uploaded once");
    for rel in &names {
        let stored = h.server.store().get(BUCKET, &format!("up/{rel}")).expect(rel);
        assert_eq!(stored.data, std::fs::read(src.join(rel)).unwrap(), "{rel}");
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn a_malformed_shard_is_refused_before_anything_happens() {
    let h = Harness::new().await;
    h.put("m/a.bin", generate_bytes(100, 1));
    let dest = h.path("never");
    for bad in ["4/4", "-1/4", "1/0", "x/4", "1/4/2", "1"] {
        let arg = format!("--shard={bad}");
        let run = h.run(&["sync", &arg, "s3://bucket/m/*", s(&dest)]).await;
        assert_eq!(run.code, 2, "{bad}: {}", run.stderr);
        assert!(run.stderr.contains("K/N"), "{bad}: {}", run.stderr);
    }
    assert!(!dest.exists());
    assert_eq!(h.server.log().records().len(), 0, "nothing sent to the store");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_link_planted_as_another_shards_record_is_refused_not_followed() {
    let h = Harness::new().await;
    fill(&h);
    let dest = h.path("model");
    std::fs::create_dir_all(dest.join(".s3load")).unwrap();
    let secret = h.path("secret");
    std::fs::write(&secret, b"not a record").unwrap();
    std::os::unix::fs::symlink(&secret, dest.join(".s3load/state.shard-1-of-2")).unwrap();
    let run = h.run(&["sync", "--shard", "0/2", "s3://bucket/m/*", s(&dest)]).await;
    assert_ne!(run.code, 0);
    assert!(run.stderr.contains("symlink"), "{}", run.stderr);
    assert_eq!(std::fs::read(&secret).unwrap(), b"not a record");
}
