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

/// A run id no other run of this test process has: each call of [`shards`]
/// is a run of its own (a Job), listing the source anew.
fn new_run_id() -> String {
    static RUNS: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
    format!("job-{}", RUNS.fetch_add(1, std::sync::atomic::Ordering::Relaxed))
}

/// Runs the N shards of one run at once, each to its exit.
async fn shards(h: &Harness, n: u32, args: &[&str]) -> Vec<Run> {
    let run_id = new_run_id();
    let children: Vec<_> = (0..n)
        .map(|k| {
            let shard = format!("{k}/{n}");
            // `--shard` belongs to the command: after it.
            let (cmd, rest) = args.split_first().unwrap();
            let mut ordered = vec![*cmd, "--shard", shard.as_str(), "--run-id", run_id.as_str(), "--part-size", "1"];
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
    let run = h.run(&["sync", "--shard", "0/2", "--run-id", "r", "s3://bucket/m/*", s(&dest)]).await;
    assert_ne!(run.code, 0);
    assert!(run.stderr.contains("symlink"), "{}", run.stderr);
    assert_eq!(std::fs::read(&secret).unwrap(), b"not a record");
}

// --- objects split across shards ---

const MIB: usize = 1 << 20;

/// Runs shard `k` of `n` alone, to its exit; returns it and the bytes it
/// fetched. Every call for one destination is a shard of one run
/// (`--run-id one-run`), as the pods of one Job that start one by one.
async fn one_shard(h: &Harness, k: u32, n: u32, dest: &Path) -> (Run, u64) {
    one_shard_with(h, k, n, dest, &[]).await
}

/// [`one_shard`] with `extra` flags.
async fn one_shard_with(h: &Harness, k: u32, n: u32, dest: &Path, extra: &[&str]) -> (Run, u64) {
    let before = h.server.log().body_bytes();
    let shard = format!("--shard={k}/{n}");
    let mut args = vec!["sync", &shard, "--part-size", "1"];
    if !extra.contains(&"--run-id") {
        args.extend(["--run-id", "one-run"]);
    }
    args.extend_from_slice(extra);
    args.extend(["s3://bucket/m/*", s(dest)]);
    let run = h.run(&args).await;
    (run, h.server.log().body_bytes() - before)
}

/// The split object's files on the shared volume (`.NAME.ID.s3load-split` and
/// each piece's journal) below `dest`.
fn split_files(dest: &Path) -> Vec<String> {
    let mut out: Vec<String> = std::fs::read_dir(dest)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n.ends_with(".s3load-split") || n.ends_with(".s3load-piece"))
        .collect();
    out.sort();
    out
}

/// A 12 MiB object and three small ones: with 3 shards the fair share is
/// about 4 MiB, so the large object is split (12 ranges of 1 MiB, 4 each).
fn fill_split(h: &Harness) -> (bytes::Bytes, u64) {
    let big = generate_bytes(12 * MIB, 7);
    h.put("m/big.bin", big.clone());
    let mut total = big.len() as u64;
    for i in 0..3u64 {
        let small = generate_bytes(10_000 + i as usize, i);
        total += small.len() as u64;
        h.put(&format!("m/small-{i}.bin"), small);
    }
    (big, total)
}

/// [`fill_split`], and shards 0 and 1 of 3 run: the large object waits for
/// shard 2's piece. Returns the harness, its bytes, the prefix's bytes and
/// the destination.
async fn two_of_three_shards_done() -> (Harness, bytes::Bytes, u64, std::path::PathBuf) {
    let h = Harness::new().await;
    let (big, total) = fill_split(&h);
    let dest = h.path("model");
    for k in 0..2 {
        one_shard(&h, k, 3, &dest).await.0.assert_ok();
    }
    (h, big, total, dest)
}

#[tokio::test(flavor = "multi_thread")]
async fn an_object_larger_than_a_fair_share_is_split_and_the_last_shard_to_finish_moves_it_into_place() {
    let h = Harness::new().await;
    let (big, total) = fill_split(&h);
    let dest = h.path("model");
    let mut fetched = Vec::new();
    let summary = h.path("summary.json");
    for k in 0..3 {
        let (run, bytes) = one_shard_with(&h, k, 3, &dest, &["--summary-file", s(&summary)]).await;
        run.assert_ok();
        fetched.push(bytes);
        let last = k == 2;
        let said: serde_json::Value = serde_json::from_slice(&std::fs::read(&summary).unwrap()).unwrap();
        assert_eq!(said["shard"], serde_json::json!({"index": k, "count": 3}), "{said}");
        assert_eq!(said["objects"]["pieces"], if last { 0 } else { 1 }, "{said}");
        assert_eq!(dest.join("big.bin").exists(), last, "shard {k}: in place only once every piece is in");
        let lists_big = run.stdout.contains("s3://bucket/m/big.bin");
        assert_eq!(lists_big, last, "shard {k} stdout: {}", run.stdout);
        if !last {
            assert!(run.stderr.contains("1 split across shards"), "{}", run.stderr);
            let files = split_files(&dest);
            assert!(files.iter().any(|f| f.starts_with(".big.bin.") && f.ends_with(".s3load-split")), "{files:?}");
        }
    }
    // Each shard fetched its third of the large object (and small ones of
    // 10 KB at most): no range twice, none left out.
    for (k, b) in fetched.iter().enumerate() {
        assert!((4 * MIB as u64..4 * MIB as u64 + 40_000).contains(b), "shard {k} fetched {b}");
    }
    assert_eq!(fetched.iter().sum::<u64>(), total);
    assert!(std::fs::read(dest.join("big.bin")).unwrap() == big, "byte-exact");
    assert_eq!(split_files(&dest), Vec::<String>::new(), "the shared file and the journals are gone");
    assert_eq!(files_under(&dest), ["big.bin", "small-0.bin", "small-1.bin", "small-2.bin"]);
    // An unsharded sync finds the tree complete: the finishing shard recorded it.
    let before = h.server.log().body_bytes();
    let run = h.run(&["sync", "s3://bucket/m/*", s(&dest)]).await;
    run.assert_ok();
    assert!(run.stdout.is_empty(), "{}", run.stdout);
    assert_eq!(h.server.log().body_bytes(), before);
}

#[tokio::test(flavor = "multi_thread")]
async fn shards_running_at_once_split_a_large_object_each_range_fetched_once() {
    let h = Harness::new().await;
    let (big, total) = fill_split(&h);
    let dest = h.path("model");
    let runs = shards(&h, 3, &["sync", "s3://bucket/m/*", s(&dest)]).await;
    let mut copied = Vec::new();
    for r in &runs {
        r.assert_ok();
        copied.extend(r.stdout_lines().into_iter().map(str::to_string));
    }
    assert_eq!(copied.iter().filter(|l| l.contains("m/big.bin")).count(), 1, "moved into place once: {copied:?}");
    assert_eq!(copied.len(), 4, "{copied:?}");
    assert_eq!(h.server.log().body_bytes(), total, "no byte fetched twice");
    assert!(std::fs::read(dest.join("big.bin")).unwrap() == big, "byte-exact");
    assert_eq!(split_files(&dest), Vec::<String>::new());
}

#[tokio::test(flavor = "multi_thread")]
async fn a_legacy_multipart_object_is_split_by_its_parts_and_a_single_put_one_is_fetched_whole_by_shard_0() {
    use s3load_testserver::Writer;
    let h = Harness::new().await;
    // aws-cli's 8 MiB parts, MD5 ETags, no checksum: each part's MD5 checks it.
    let multipart = generate_bytes(24 * MIB, 1);
    let now = std::time::SystemTime::now();
    h.server.store().put_object(BUCKET, "m/multi.bin", Writer::AwsCli.legacy_object(multipart.clone(), now));
    let dest = h.path("model");
    let mut fetched = Vec::new();
    for k in 0..3 {
        let (run, bytes) = one_shard(&h, k, 3, &dest).await;
        run.assert_ok();
        fetched.push(bytes);
    }
    assert_eq!(fetched, vec![8 * MIB as u64; 3], "one 8 MiB part each");
    assert!(std::fs::read(dest.join("multi.bin")).unwrap() == multipart);

    // One MD5 over the whole body (a single PUT): no shard could check
    // another's ranges, so shard 0 fetches it whole and the others none of it.
    let single = generate_bytes(7 * MIB, 2);
    h.server.store().put_object(BUCKET, "m/single.bin", Writer::AwsCli.legacy_object(single.clone(), now));
    let mut fetched = Vec::new();
    for k in 0..3 {
        // A new Job: it lists the prefix again.
        let (run, bytes) = one_shard_with(&h, k, 3, &dest, &["--run-id", "second-run"]).await;
        run.assert_ok();
        fetched.push(bytes);
    }
    assert_eq!(fetched, vec![7 * MIB as u64, 0, 0]);
    assert!(std::fs::read(dest.join("single.bin")).unwrap() == single);
    assert_eq!(split_files(&dest), Vec::<String>::new());
}

#[tokio::test(flavor = "multi_thread")]
async fn a_piece_damaged_on_the_shared_volume_is_caught_by_the_last_shard_which_fetches_the_object_whole() {
    let (h, big, total, dest) = two_of_three_shards_done().await;
    // A byte of shard 0's piece goes bad on the volume (a lost write, a bad disk).
    let split = split_files(&dest).into_iter().find(|f| f.ends_with(".s3load-split")).unwrap();
    let file = std::fs::OpenOptions::new().read(true).write(true).open(dest.join(&split)).unwrap();
    use std::os::unix::fs::FileExt;
    let mut b = [0u8; 1];
    file.read_exact_at(&mut b, 1000).unwrap();
    file.write_all_at(&[b[0] ^ 0x40], 1000).unwrap();
    drop(file);
    let (run, _) = one_shard(&h, 2, 3, &dest).await;
    run.assert_ok();
    assert!(run.stderr.contains("written by another shard"), "{}", run.stderr);
    assert!(std::fs::read(dest.join("big.bin")).unwrap() == big, "byte-exact after fetching it whole");
    assert_eq!(h.server.log().body_bytes(), total + big.len() as u64, "fetched whole once more, no more");
}

#[tokio::test(flavor = "multi_thread")]
async fn two_runs_given_the_same_shard_index_do_not_write_the_same_piece() {
    let h = Harness::new().await;
    fill_split(&h);
    let dest = h.path("model");
    one_shard(&h, 0, 3, &dest).await.0.assert_ok();
    // Another run with index 0 is writing piece 1 (it holds its journal).
    let journal = split_files(&dest).into_iter().find(|f| f.ends_with(".0.s3load-piece")).unwrap();
    let held = std::fs::File::open(dest.join(&journal)).unwrap();
    rustix::fs::flock(&held, rustix::fs::FlockOperation::NonBlockingLockExclusive).unwrap();
    let (run, _) = one_shard(&h, 0, 3, &dest).await;
    assert_ne!(run.code, 0);
    assert!(run.stderr.contains("same index"), "{}", run.stderr);
    drop(held);
    assert!(!dest.join("big.bin").exists());
    // The other shards finish the object as before.
    for k in 1..3 {
        one_shard(&h, k, 3, &dest).await.0.assert_ok();
    }
    assert!(dest.join("big.bin").exists());
}

#[tokio::test(flavor = "multi_thread")]
async fn a_shard_killed_mid_piece_resumes_it_and_then_finishes_the_object_the_others_left() {
    use s3load_testserver::Shaping;
    use std::time::Duration;
    // 4 MB/s per connection: a kill lands mid-piece.
    let shaping =
        Shaping { first_byte_delay: Duration::ZERO, rate_per_connection: Some(4_000_000), ..Shaping::default() };
    let h = Harness::with_shaping(shaping).await;
    let (big, _) = fill_split(&h);
    let dest = h.path("model");
    let args = |k: u32| {
        vec![
            "--journal-hold".to_string(),
            "0s".into(),
            "--numworkers".into(),
            "2".into(),
            "sync".into(),
            format!("--shard={k}/3"),
            "--run-id".into(),
            "killed".into(),
            "--part-size".into(),
            "1".into(),
            "s3://bucket/m/*".into(),
            s(&dest).into(),
        ]
    };
    let piece_done = |k: u32| -> usize {
        let Ok(entries) = std::fs::read_dir(&dest) else { return 0 };
        entries
            .flatten()
            .filter(|e| e.file_name().to_string_lossy().ends_with(&format!(".{k}.s3load-piece")))
            .map(|e| std::fs::read_to_string(e.path()).unwrap_or_default())
            .map(|t| t.lines().filter(|l| l.starts_with("done ")).count())
            .sum()
    };
    let a: Vec<String> = args(1);
    let mut child = h.spawn(&a.iter().map(String::as_str).collect::<Vec<_>>());
    let t = std::time::Instant::now();
    while piece_done(1) < 1 {
        assert!(t.elapsed() < Duration::from_secs(60), "no range of piece 2 recorded");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    child.start_kill().unwrap();
    child.wait().await.unwrap();
    let done_before = piece_done(1);
    assert!((1..4).contains(&done_before), "{done_before} of 4 ranges recorded before the kill");
    // The other shards complete their pieces; nobody can finish the object.
    for k in [0, 2] {
        let a = args(k);
        h.run(&a.iter().map(String::as_str).collect::<Vec<_>>()).await.assert_ok();
    }
    assert!(!dest.join("big.bin").exists());
    // The restarted pod resumes its piece and finishes the object.
    let before = h.server.log().body_bytes();
    let a = args(1);
    let run = h.run(&a.iter().map(String::as_str).collect::<Vec<_>>()).await;
    run.assert_ok();
    let fetched = h.server.log().body_bytes() - before;
    let most = ((4 - done_before) * MIB) as u64 + 40_000;
    assert!(fetched <= most, "fetched {fetched} after {done_before} of its 4 ranges were on disk");
    assert!(run.stdout.contains("s3://bucket/m/big.bin"), "{}", run.stdout);
    assert!(std::fs::read(dest.join("big.bin")).unwrap() == big, "byte-exact");
    assert_eq!(split_files(&dest), Vec::<String>::new());
}

#[tokio::test(flavor = "multi_thread")]
async fn with_no_split_a_large_object_goes_whole_to_one_shard() {
    let h = Harness::new().await;
    let (big, total) = fill_split(&h);
    let dest = h.path("model");
    let mut fetched = Vec::new();
    for k in 0..3 {
        let (run, bytes) = one_shard_with(&h, k, 3, &dest, &["--no-split"]).await;
        run.assert_ok();
        fetched.push(bytes);
    }
    assert_eq!(fetched.iter().filter(|&&b| b >= big.len() as u64).count(), 1, "one shard took it whole: {fetched:?}");
    assert_eq!(fetched.iter().sum::<u64>(), total);
    assert!(std::fs::read(dest.join("big.bin")).unwrap() == big);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_symlink_planted_as_the_shared_file_is_refused_not_written_through() {
    let h = Harness::new().await;
    let (big, _) = fill_split(&h);
    let dest = h.path("model");
    one_shard(&h, 0, 3, &dest).await.0.assert_ok();
    // The shared file is replaced by a link to a file outside the destination.
    let split = split_files(&dest).into_iter().find(|f| f.ends_with(".s3load-split")).unwrap();
    let victim = h.path("victim");
    std::fs::write(&victim, b"keep me").unwrap();
    std::fs::remove_file(dest.join(&split)).unwrap();
    std::os::unix::fs::symlink(&victim, dest.join(&split)).unwrap();
    let (run, _) = one_shard(&h, 1, 3, &dest).await;
    assert_ne!(run.code, 0, "{}", run.stderr);
    assert!(run.stderr.contains(&split), "names the file: {}", run.stderr);
    assert!(run.stderr.contains("is not a file s3load made (a link"), "{}", run.stderr);
    assert_eq!(std::fs::read(&victim).unwrap(), b"keep me", "nothing written through the link");
    assert!(!dest.join("big.bin").exists());
    // Once the link is gone, the shards finish the object (shard 0's piece is
    // fetched again by whoever finds it missing).
    std::fs::remove_file(dest.join(&split)).unwrap();
    for k in 1..3 {
        one_shard(&h, k, 3, &dest).await.0.assert_ok();
    }
    assert!(std::fs::read(dest.join("big.bin")).unwrap() == big);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_forged_journal_claiming_a_piece_is_not_trusted_without_its_bytes() {
    let (h, big, _, dest) = two_of_three_shards_done().await;
    // Piece 3's journal, forged: same header, ranges "done" with made-up
    // hashes, "complete"; its bytes were never written.
    let journal0 = split_files(&dest).into_iter().find(|f| f.ends_with(".0.s3load-piece")).unwrap();
    let text = std::fs::read_to_string(dest.join(&journal0)).unwrap();
    let header: Vec<&str> = text.lines().take_while(|l| !l.starts_with("done ")).collect();
    let mut forged = header.join("\n").replace("piece 0 3", "piece 2 3");
    for p in 8..12 {
        forged.push_str(&format!("\ndone {p} crc64nvme:0000000000000000"));
    }
    forged.push_str("\ncomplete\n");
    std::fs::write(dest.join(journal0.replace(".0.s3load-piece", ".2.s3load-piece")), forged).unwrap();
    // Shard 1 runs again: it finds every piece "complete", checks, and fetches
    // the object whole rather than trust the forged ranges.
    let (run, fetched) = one_shard(&h, 1, 3, &dest).await;
    run.assert_ok();
    assert!(run.stderr.contains("written by another shard"), "{}", run.stderr);
    assert_eq!(fetched, big.len() as u64);
    assert!(std::fs::read(dest.join("big.bin")).unwrap() == big);
}
