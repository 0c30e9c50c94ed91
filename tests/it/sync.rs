//! Sync semantics: change detection by content identity, `--delete` and its
//! safety rules, filters, dry-run.

use std::path::Path;
use std::time::{Duration, SystemTime};

use s3load_testserver::{Fault, Rule, When, generate_bytes, safetensors_bytes};

use crate::harness::{BUCKET, Harness, files_under};

fn s(p: &Path) -> &str {
    p.to_str().unwrap()
}

#[tokio::test(flavor = "multi_thread")]
async fn a_retrained_shard_of_the_same_size_and_an_older_time_is_fetched_again() {
    let h = Harness::new().await;
    let t0 = SystemTime::now() - Duration::from_secs(7200);
    h.server.store().put_at(BUCKET, "m/shard-1.safetensors", safetensors_bytes(70_000, 1), t0);
    h.server.store().put_at(BUCKET, "m/config.json", &b"{}"[..], t0);
    let dest = h.path("model");
    h.run(&["sync", "s3://bucket/m/*", s(&dest)]).await.assert_ok();
    // Same size, new bytes, and a LastModified older than the local file's
    // (copied in with its original time): size and time alone would skip it.
    let older = t0 - Duration::from_secs(3600);
    h.server.store().put_at(BUCKET, "m/shard-1.safetensors", safetensors_bytes(70_000, 2), older);
    let run = h.run(&["sync", "s3://bucket/m/*", s(&dest)]).await;
    run.assert_ok();
    assert_eq!(run.stdout_lines().len(), 1, "only the shard: {}", run.stdout);
    assert_eq!(std::fs::read(dest.join("shard-1.safetensors")).unwrap(), safetensors_bytes(70_000, 2));

    // Without the record (a tree filled by another tool) s5cmd's rule applies.
    std::fs::remove_dir_all(dest.join(".s3load")).unwrap();
    h.server.store().put_at(BUCKET, "m/shard-1.safetensors", safetensors_bytes(70_000, 3), older);
    let run = h.run(&["sync", "s3://bucket/m/*", s(&dest)]).await;
    run.assert_ok();
    assert!(run.stdout.is_empty(), "same size and older: kept, as s5cmd would: {}", run.stdout);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_file_changed_by_hand_is_fetched_again() {
    let h = Harness::new().await;
    h.put("m/a.bin", generate_bytes(5000, 1));
    h.put("m/b.bin", generate_bytes(5000, 2));
    let dest = h.path("model");
    h.run(&["sync", "s3://bucket/m/*", s(&dest)]).await.assert_ok();
    // Same size, so only the mtime tells.
    std::fs::write(dest.join("a.bin"), generate_bytes(5000, 9)).unwrap();
    let run = h.run(&["sync", "s3://bucket/m/*", s(&dest)]).await;
    run.assert_ok();
    assert_eq!(run.stdout_lines().len(), 1, "{}", run.stdout);
    assert_eq!(std::fs::read(dest.join("a.bin")).unwrap(), generate_bytes(5000, 1));
}

#[tokio::test(flavor = "multi_thread")]
async fn a_no_op_resync_reads_no_file_and_sends_no_get_or_head() {
    let h = Harness::new().await;
    for i in 0..40 {
        h.put(&format!("t/{}/f{i}.bin", i % 4), generate_bytes(2000 + i, i as u64));
    }
    let dest = h.path("out");
    h.run(&["sync", "s3://bucket/t/*", s(&dest)]).await.assert_ok();
    let record = dest.join(".s3load/state");
    let record_before = std::fs::read(&record).unwrap();
    // Set every file's atime far back: on this relatime filesystem a read
    // moves it forward (checked on a control file first).
    let old = SystemTime::UNIX_EPOCH + Duration::from_secs(1_500_000_000);
    let set_atime = |p: &Path| {
        let f = std::fs::File::options().write(true).open(p).unwrap();
        f.set_times(std::fs::FileTimes::new().set_accessed(old)).unwrap();
    };
    let control = h.path("control");
    std::fs::write(&control, b"x").unwrap();
    set_atime(&control);
    std::fs::read(&control).unwrap();
    let atime = |p: &Path| std::fs::metadata(p).unwrap().accessed().unwrap();
    assert!(atime(&control) > old, "this filesystem must update atime on read for the check below to mean anything");
    let files = files_under(&dest);
    for f in &files {
        set_atime(&dest.join(f));
    }
    h.server.log().clear();
    let again = h.run(&["sync", "s3://bucket/t/*", s(&dest)]).await;
    again.assert_ok();
    assert!(again.stdout.is_empty(), "nothing copied: {}", again.stdout);
    assert_eq!(h.server.log().count("GetObject"), 0);
    assert_eq!(h.server.log().count("HeadObject"), 0);
    for f in &files {
        assert_eq!(atime(&dest.join(f)), old, "{f} was read");
    }
    assert_eq!(std::fs::read(&record).unwrap(), record_before, "a no-op sync does not rewrite the record");
}

/// A source of `keep` files and a destination that also holds `extra` ones.
async fn tree(h: &Harness, keep: &[&str], extra: &[&str]) -> std::path::PathBuf {
    // An hour old, so that local files written now are newer whatever the
    // filesystem's timestamp granularity.
    let t0 = SystemTime::now() - Duration::from_secs(3600);
    for k in keep {
        h.server.store().put_at(BUCKET, &format!("src/{k}"), k.as_bytes().to_vec(), t0);
    }
    let dest = h.path("dest");
    for e in extra {
        let p = dest.join(e);
        std::fs::create_dir_all(p.parent().unwrap()).unwrap();
        std::fs::write(p, b"local").unwrap();
    }
    dest
}

#[tokio::test(flavor = "multi_thread")]
async fn delete_removes_exactly_the_unlisted_files_and_honours_excludes() {
    let h = Harness::new().await;
    let dest = tree(
        &h,
        &["test-1", "test/a", "sub/keep.bin"],
        &["test/old", "test-2", "sub/deep/er/gone.bin", "logs/run.log", "x.lock"],
    )
    .await;
    let run =
        h.run(&["sync", "--delete", "--exclude", "logs/*", "--exclude", "*.lock", "s3://bucket/src/*", s(&dest)]).await;
    run.assert_ok();
    assert_eq!(files_under(&dest), vec!["logs/run.log", "sub/keep.bin", "test-1", "test/a", "x.lock"]);
    assert!(!dest.join("sub/deep").exists(), "directories emptied by deletes are removed");
    let rm: Vec<&str> = run.stdout_lines().into_iter().filter(|l| l.starts_with("rm ")).collect();
    assert_eq!(rm.len(), 3, "{}", run.stdout);
    assert!(run.stderr.contains("3 deleted"), "{}", run.stderr);
}

#[tokio::test(flavor = "multi_thread")]
async fn delete_is_refused_after_a_failed_listing_page() {
    let h = Harness::new().await;
    for i in 0..1100 {
        h.put(&format!("src/{i:05}"), &b"v"[..]);
    }
    let dest = h.path("dest");
    std::fs::create_dir_all(&dest).unwrap();
    std::fs::write(dest.join("stale"), b"local").unwrap();
    // The first page is served; every later one fails, retries included.
    h.server.faults().add(Rule::new(
        "ListObjectsV2",
        When::After(1),
        Fault::Status { status: 500, code: "InternalError" },
    ));
    let run = h.run(&["-r", "1", "sync", "--delete", "s3://bucket/src/*", s(&dest)]).await;
    assert_ne!(run.code, 0, "{}", run.stderr);
    assert!(dest.join("stale").exists(), "nothing deleted");
    assert_eq!(h.server.log().count("GetObject"), 0, "nothing copied from a partial listing");
    assert!(run.stderr.contains("listing"), "{}", run.stderr);
}

#[tokio::test(flavor = "multi_thread")]
async fn delete_is_refused_after_a_failed_copy() {
    let h = Harness::new().await;
    let dest = tree(&h, &["a", "b"], &["stale"]).await;
    h.server.faults().add(
        Rule::new("GetObject", When::Always, Fault::Status { status: 403, code: "AccessDenied" }).for_key("src/b"),
    );
    let run = h.run(&["sync", "--delete", "s3://bucket/src/*", s(&dest)]).await;
    assert_eq!(run.code, 1, "{}", run.stderr);
    assert!(dest.join("stale").exists());
    assert!(run.stderr.contains("not deleting 1 destination files"), "{}", run.stderr);
}

#[tokio::test(flavor = "multi_thread")]
async fn max_delete_refuses_every_deletion_above_the_cap() {
    let h = Harness::new().await;
    let dest = tree(&h, &["a"], &["x1", "x2", "x3"]).await;
    let run = h.run(&["sync", "--delete", "--max-delete", "2", "s3://bucket/src/*", s(&dest)]).await;
    assert_eq!(run.code, 1, "{}", run.stderr);
    assert!(run.stderr.contains("3 destination files would be deleted, more than --max-delete 2"), "{}", run.stderr);
    assert_eq!(files_under(&dest), vec!["a", "x1", "x2", "x3"], "the copy happened, no deletion");
    let ok = h.run(&["sync", "--delete", "--max-delete", "3", "s3://bucket/src/*", s(&dest)]).await;
    ok.assert_ok();
    assert_eq!(files_under(&dest), vec!["a"]);
}

#[tokio::test(flavor = "multi_thread")]
async fn an_empty_source_deletes_nothing_unless_explicitly_allowed() {
    let h = Harness::new().await;
    h.put("other/x", &b"x"[..]);
    let dest = tree(&h, &[], &["a", "b/c"]).await;
    let run = h.run(&["sync", "--delete", "s3://bucket/src/*", s(&dest)]).await;
    assert_eq!(run.code, 3, "{}", run.stderr);
    assert!(run.stderr.contains("nothing deleted"), "{}", run.stderr);
    assert_eq!(files_under(&dest), vec!["a", "b/c"]);
    // Filters that select nothing count as an empty source too.
    h.put("src/only.txt", &b"x"[..]);
    let run = h.run(&["sync", "--delete", "--include", "*.bin", "s3://bucket/src/*", s(&dest)]).await;
    assert_eq!(run.code, 3, "{}", run.stderr);
    assert_eq!(files_under(&dest), vec!["a", "b/c"]);
    let run = h.run(&["sync", "--delete", "--allow-empty-source", "s3://bucket/empty/*", s(&dest)]).await;
    run.assert_ok();
    assert!(files_under(&dest).is_empty(), "{:?}", files_under(&dest));
    assert!(dest.exists(), "the destination itself stays");
}

#[tokio::test(flavor = "multi_thread")]
async fn names_that_differ_only_by_case_or_unicode_form_are_never_deleted() {
    let h = Harness::new().await;
    let composed = "caf\u{e9}.bin";
    let decomposed = "cafe\u{301}.bin";
    let dest = tree(&h, &["model.bin", composed], &["Model.bin", decomposed, "gone.bin"]).await;
    let run = h.run(&["sync", "--delete", "s3://bucket/src/*", s(&dest)]).await;
    run.assert_ok();
    let mut want = vec!["Model.bin", "cafe\u{301}.bin", "caf\u{e9}.bin", "model.bin"];
    want.sort();
    assert_eq!(files_under(&dest), want);
    assert!(run.stderr.contains("only by case or Unicode form"), "{}", run.stderr);
}

#[tokio::test(flavor = "multi_thread")]
async fn dry_run_lists_every_copy_and_delete_and_changes_nothing() {
    let h = Harness::new().await;
    let dest = tree(&h, &["new", "same"], &["same", "stale/x"]).await;
    std::fs::write(dest.join("same"), b"same").unwrap();
    let before = files_under(&dest);
    let run = h.run(&["--dry-run", "sync", "--delete", "s3://bucket/src/*", s(&dest)]).await;
    run.assert_ok();
    let lines = run.stdout_lines();
    assert!(
        lines.contains(&format!("cp s3://bucket/src/new {}", dest.join("new").display()).as_str()),
        "{}",
        run.stdout
    );
    assert!(lines.contains(&format!("rm {}", dest.join("stale/x").display()).as_str()), "{}", run.stdout);
    assert_eq!(lines.len(), 2, "{}", run.stdout);
    assert_eq!(files_under(&dest), before);
    assert!(!dest.join(".s3load").exists(), "a dry run writes no record");
    assert_eq!(h.server.log().count("GetObject"), 0);
}

#[tokio::test(flavor = "multi_thread")]
async fn include_and_exclude_select_what_is_copied() {
    let h = Harness::new().await;
    for k in ["w-1.safetensors", "w-2.safetensors", "draft.safetensors", "config.json", "notes/readme.md"] {
        let data = if k.ends_with(".safetensors") { safetensors_bytes(200, 1).to_vec() } else { k.as_bytes().to_vec() };
        h.put(&format!("src/{k}"), data);
    }
    let dest = h.path("dest");
    let run = h
        .run(&[
            "cp",
            "--include",
            "*.safetensors",
            "--include",
            "config.json",
            "--exclude",
            "draft*",
            "s3://bucket/src/*",
            s(&dest),
        ])
        .await;
    run.assert_ok();
    assert_eq!(files_under(&dest), vec!["config.json", "w-1.safetensors", "w-2.safetensors"]);
}

#[tokio::test(flavor = "multi_thread")]
async fn seed_design_loader_job_line_keeps_the_volume_equal_to_the_prefix() {
    // s3load sync --delete s3://${MODELS_BUCKET}/${MODELS_FOLDER}/some-model/* /model
    let h = Harness::new().await;
    let store = h.server.store();
    store.create_bucket("models-bucket");
    store.put("models-bucket", "models/some-model/config.json", &b"v2"[..]);
    store.put("models-bucket", "models/some-model/weights/shard-1.bin", generate_bytes(40_000, 1));
    store.put("models-bucket", "models/some-model-2/config.json", &b"a sibling prefix"[..]);
    let volume = h.path("model");
    std::fs::create_dir_all(volume.join("weights")).unwrap();
    std::fs::write(volume.join("weights/shard-0.bin"), b"from the previous version").unwrap();
    let line = ["sync", "--delete", "s3://models-bucket/models/some-model/*", s(&volume)];
    h.run(&line).await.assert_ok();
    assert_eq!(files_under(&volume), vec!["config.json", "weights/shard-1.bin"]);
    assert_eq!(std::fs::read(volume.join("config.json")).unwrap(), b"v2");
    h.server.log().clear();
    let again = h.run(&line).await;
    again.assert_ok();
    assert!(again.stdout.is_empty(), "{}", again.stdout);
    assert_eq!(h.server.log().count("GetObject"), 0);
}

/// More objects than the engine is given at a time (jobs are made from the
/// listing batch by batch): every object lands once, a failure in a later
/// batch is counted and holds back `--delete` for the whole run, and a
/// re-run fetches only what failed.
#[tokio::test(flavor = "multi_thread")]
async fn a_sync_of_more_objects_than_a_batch_lands_each_once_and_holds_deletes_for_the_whole_run() {
    let h = Harness::new().await;
    let n = 9_000;
    for i in 0..n {
        h.put(&format!("m/d{:02}/o{i:05}.bin", i % 50), format!("object {i:05}").into_bytes());
    }
    let failing = "m/d17/o06017.bin";
    let denied = Fault::Status { status: 403, code: "AccessDenied" };
    h.server.faults().add(Rule::new("GetObject", When::Always, denied).for_key(failing));
    let dest = h.path("out");
    std::fs::create_dir_all(dest.join("stale")).unwrap();
    std::fs::write(dest.join("stale/old.bin"), b"old").unwrap();
    let first = h.run(&["sync", "--delete", "s3://bucket/m/*", s(&dest)]).await;
    assert_eq!(first.code, 1, "{}", first.stderr);
    assert!(first.stderr.contains(&format!("{} copied", n - 1)), "{}", first.stderr);
    assert!(first.stderr.contains("1 failed") && first.stderr.contains(failing), "{}", first.stderr);
    assert!(dest.join("stale/old.bin").exists(), "a failure in any batch holds back --delete");
    assert_eq!(first.stdout_lines().len(), n - 1, "one line per object copied");
    let files = files_under(&dest);
    assert_eq!(files.len(), n, "every object but the failed one, and the stale file: {}", files.len());
    for i in [0, 4095, 4096, 8191, 8192, n - 1] {
        let got = std::fs::read(dest.join(format!("d{:02}/o{i:05}.bin", i % 50))).unwrap();
        assert_eq!(got, format!("object {i:05}").into_bytes());
    }

    h.server.faults().clear();
    h.server.log().clear();
    let second = h.run(&["sync", "--delete", "s3://bucket/m/*", s(&dest)]).await;
    second.assert_ok();
    assert_eq!(second.stdout_lines().len(), 2, "the failed object, and the stale file removed: {}", second.stdout);
    assert_eq!(h.server.log().count("GetObject"), 1);
    assert!(second.stderr.contains(&format!("{} up to date", n - 1)), "{}", second.stderr);
    assert!(!dest.join("stale/old.bin").exists());
    assert_eq!(files_under(&dest).len(), n);
}

/// Stopped in its first batch, a run of many objects names those it never
/// started in one line (not a line each: at a million keys that would be a
/// million lines), exits as stopped, and a re-run finishes the rest.
#[tokio::test(flavor = "multi_thread")]
async fn a_run_stopped_in_its_first_batch_names_the_objects_not_started_in_one_line() {
    let shaping = s3load_testserver::Shaping {
        first_byte_delay: Duration::from_millis(20),
        rate_per_connection: None,
        ..s3load_testserver::Shaping::default()
    };
    let h = Harness::with_shaping(shaping).await;
    let n = 6_000;
    for i in 0..n {
        h.put(&format!("m/o{i:05}.bin"), format!("object {i:05}").into_bytes());
    }
    let dest = h.path("out");
    let args = ["sync", "s3://bucket/m/*", s(&dest)];
    let child = h.spawn(&args);
    let t = std::time::Instant::now();
    while h.server.log().count("GetObject") < 50 {
        assert!(t.elapsed() < Duration::from_secs(30), "the run never got to its first objects");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let out = crate::harness::terminate(child, Duration::from_secs(30)).await;
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(143), "{stderr}");
    assert!(stderr.contains(&format!("ERROR {} objects not started: the run was stopped", n - 4096)), "{stderr}");
    assert!(!stderr.contains("o05999.bin"), "an object of the second batch named on its own line");
    assert!(files_under(&dest).len() < n);
    h.run(&args).await.assert_ok();
    assert_eq!(files_under(&dest).len(), n);
    assert_eq!(std::fs::read(dest.join("o05999.bin")).unwrap(), b"object 05999");
}
