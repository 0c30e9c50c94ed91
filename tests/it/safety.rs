//! Data-safety regressions (docs/reliability.md cases 22 onwards): each test is
//! named after the defect it pins and failed on the code before its fix.

use std::path::Path;

use crate::harness::{BUCKET, Harness};

fn s(p: &Path) -> &str {
    p.to_str().unwrap()
}

fn keys(h: &Harness) -> Vec<String> {
    h.server.store().with_bucket(BUCKET, |b| b.keys().cloned().collect()).unwrap()
}

/// A bucket holding one model's objects and unrelated siblings that no upload of
/// `my-model` may touch.
fn bucket_with_siblings(h: &Harness) {
    for k in [
        "models/my-model/a.bin",
        "models/my-model/stale.bin",
        "models/my-model/notes.txt",
        "models/other-model/w.bin",
        "models/my-model-2/w.bin",
        "models/readme.txt",
        "models/config.json.bak",
    ] {
        h.put(k, &b"remote"[..]);
    }
}

/// A multipart object with a composite checksum: fetching it needs a HEAD and
/// the part-layout HEAD (`partNumber=1`, then `=N`).
fn put_composite(h: &Harness, key: &str) {
    use s3load_testserver::{ChecksumAlgorithm, StoredObject, generate_bytes};
    let parts = [generate_bytes(2 << 20, 1), generate_bytes(2 << 20, 2), generate_bytes(1 << 20, 3)];
    let obj = StoredObject::multipart(&parts, std::time::SystemTime::now(), Some(ChecksumAlgorithm::Crc64Nvme), true);
    h.server.store().put_object(BUCKET, key, obj);
}

fn local_model(h: &Harness) -> std::path::PathBuf {
    let dir = h.path("my-model");
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(dir.join("a.bin"), b"local a").unwrap();
    std::fs::write(dir.join("config.json"), b"{}").unwrap();
    dir
}

const SIBLINGS: [&str; 4] =
    ["models/other-model/w.bin", "models/my-model-2/w.bin", "models/readme.txt", "models/config.json.bak"];

#[track_caller]
fn assert_siblings_kept(h: &Harness) {
    let k = keys(h);
    for sib in SIBLINGS {
        assert!(k.contains(&sib.to_string()), "{sib} deleted: {k:?}");
    }
}

// Case 22: `sync --delete` of a local source deletes only inside what that
// source maps to.
#[tokio::test(flavor = "multi_thread")]
async fn upload_delete_of_a_directory_without_slash_keeps_the_siblings_of_its_prefix() {
    let h = Harness::new().await;
    bucket_with_siblings(&h);
    let dir = local_model(&h);
    let run = h.run(&["sync", "--delete", s(&dir), "s3://bucket/models/"]).await;
    run.assert_ok();
    assert_siblings_kept(&h);
    let k = keys(&h);
    assert!(!k.contains(&"models/my-model/stale.bin".to_string()), "inside the source's scope: deleted: {k:?}");
    assert!(k.contains(&"models/my-model/config.json".to_string()));
    let listed: Vec<String> =
        h.server.log().records().into_iter().filter(|r| r.op == "ListObjectsV2").map(|r| r.key).collect();
    assert_eq!(listed, vec!["models/my-model/"], "only the source's part of the prefix is listed");
}

#[tokio::test(flavor = "multi_thread")]
async fn upload_delete_of_a_single_file_is_refused_and_deletes_nothing() {
    let h = Harness::new().await;
    bucket_with_siblings(&h);
    let dir = local_model(&h);
    let before = keys(&h);
    for dst in ["s3://bucket/models/", "s3://bucket/models/config.json"] {
        let run = h.run(&["sync", "--delete", s(&dir.join("config.json")), dst]).await;
        assert_eq!(run.code, 2, "{}", run.stderr);
        assert!(run.stderr.contains("single file") && run.stderr.contains("config.json"), "{}", run.stderr);
        assert_eq!(keys(&h), before, "nothing written or deleted");
    }
    // Without --delete, a single file still syncs, comparing with its one key only.
    h.server.log().clear();
    h.run(&["sync", s(&dir.join("config.json")), "s3://bucket/models/"]).await.assert_ok();
    assert_eq!(h.server.log().count("ListObjectsV2"), 0, "one HEAD, not a listing of the prefix");
    assert!(keys(&h).contains(&"models/config.json".to_string()));
    assert_siblings_kept(&h);
}

#[tokio::test(flavor = "multi_thread")]
async fn upload_delete_of_a_wildcard_deletes_only_what_the_wildcard_matches() {
    let h = Harness::new().await;
    for k in ["p/a.bin", "p/stale.bin", "p/keep.txt", "p/sub/deep.bin", "p/subdir-x/y.txt"] {
        h.put(k, &b"remote"[..]);
    }
    let dir = local_model(&h);
    let run = h.run(&["sync", "--delete", &format!("{}/*.bin", dir.display()), "s3://bucket/p/"]).await;
    run.assert_ok();
    let k = keys(&h);
    assert!(!k.contains(&"p/stale.bin".to_string()), "matched by *.bin and not in the source: deleted: {k:?}");
    for kept in ["p/keep.txt", "p/sub/deep.bin", "p/subdir-x/y.txt"] {
        assert!(k.contains(&kept.to_string()), "{kept} is not what '*.bin' stands for: {k:?}");
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn upload_delete_of_a_directory_with_slash_still_mirrors_the_whole_prefix() {
    let h = Harness::new().await;
    bucket_with_siblings(&h);
    let dir = local_model(&h);
    h.run(&["sync", "--delete", &format!("{}/", dir.display()), "s3://bucket/models/my-model/"]).await.assert_ok();
    let mut k: Vec<String> = keys(&h).into_iter().filter(|k| k.starts_with("models/my-model/")).collect();
    k.sort();
    assert_eq!(k, vec!["models/my-model/a.bin", "models/my-model/config.json"]);
    assert_siblings_kept(&h);
}

// Case 23: an entry the upload walk skips holds back the deletions it may stand for.
#[tokio::test(flavor = "multi_thread")]
async fn upload_delete_keeps_the_objects_of_a_symlinked_directory_that_is_not_mounted() {
    let h = Harness::new().await;
    for k in ["m/shards/1.bin", "m/shards/2.bin", "m/old.bin", "m/config.json"] {
        h.put(k, &b"remote"[..]);
    }
    let dir = h.path("m");
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(dir.join("config.json"), b"{}").unwrap();
    // `shards -> /mnt/models/shards` on a volume that is not mounted.
    std::os::unix::fs::symlink(h.path("unmounted/shards"), dir.join("shards")).unwrap();
    let run = h.run(&["sync", "--delete", &format!("{}/", dir.display()), "s3://bucket/m/"]).await;
    assert_eq!(run.code, 1, "a source that could not be read is a failure:\n{}", run.stderr);
    assert!(
        run.stderr.contains("not deleting 2 object(s) at or below s3://bucket/m/shards")
            && run.stderr.contains("shards"),
        "{}",
        run.stderr
    );
    let k = keys(&h);
    assert!(k.contains(&"m/shards/1.bin".to_string()) && k.contains(&"m/shards/2.bin".to_string()), "{k:?}");
    assert!(!k.contains(&"m/old.bin".to_string()), "unrelated to the broken link: still deleted: {k:?}");
}

#[tokio::test(flavor = "multi_thread")]
async fn upload_delete_keeps_the_objects_of_symlinks_left_out_and_of_names_that_are_not_utf8() {
    use std::os::unix::ffi::OsStrExt;
    let h = Harness::new().await;
    for k in ["m/linked.bin", "m/latin/caf\u{e9}.bin", "m/latin/other.bin", "m/gone.bin"] {
        h.put(k, &b"remote"[..]);
    }
    let dir = h.path("m");
    std::fs::create_dir_all(dir.join("latin")).unwrap();
    std::fs::write(dir.join("plain.bin"), b"p").unwrap();
    std::fs::write(h.path("target.bin"), b"t").unwrap();
    std::os::unix::fs::symlink(h.path("target.bin"), dir.join("linked.bin")).unwrap();
    std::fs::write(dir.join("latin").join(std::ffi::OsStr::from_bytes(b"caf\xe9.bin")), b"x").unwrap();
    let src = format!("{}/", dir.display());
    let run = h.run(&["sync", "--delete", "--no-follow-symlinks", &src, "s3://bucket/m/"]).await;
    assert_eq!(run.code, 1, "the name that is not UTF-8 could not be read:\n{}", run.stderr);
    let k = keys(&h);
    assert!(k.contains(&"m/linked.bin".to_string()), "left out by --no-follow-symlinks: kept: {k:?}");
    assert!(k.contains(&"m/latin/caf\u{e9}.bin".to_string()) && k.contains(&"m/latin/other.bin".to_string()), "{k:?}");
    assert!(!k.contains(&"m/gone.bin".to_string()), "{k:?}");
    assert!(run.stderr.contains("--no-follow-symlinks") && run.stderr.contains("not UTF-8"), "{}", run.stderr);
}

// Case 24: a listing that cannot be followed to its end fails the run.
#[tokio::test(flavor = "multi_thread")]
async fn a_listing_that_ends_early_or_never_ends_fails_the_run_and_deletes_nothing() {
    use s3load_testserver::{Fault, Rule, When};
    for fault in [Fault::TruncatedWithoutToken, Fault::RepeatToken, Fault::NoSize] {
        let h = Harness::new().await;
        for k in ["m/a.bin", "m/b.bin", "m/c.bin"] {
            h.put(k, &b"remote"[..]);
        }
        // Download: a destination with a file the source lacks.
        let dest = h.path("dest");
        std::fs::create_dir_all(&dest).unwrap();
        std::fs::write(dest.join("local-only.bin"), b"keep me").unwrap();
        h.server.faults().add(Rule::new("ListObjectsV2", When::Always, fault.clone()));
        let run = h.run(&["sync", "--delete", "s3://bucket/m/*", s(&dest)]).await;
        assert_ne!(run.code, 0, "{fault:?}: {}", run.stderr);
        assert!(run.stderr.contains("listing s3://bucket/m/*"), "{fault:?}: {}", run.stderr);
        assert!(dest.join("local-only.bin").exists(), "{fault:?}: nothing deleted");
        assert_eq!(h.server.log().count("GetObject"), 0, "{fault:?}: nothing copied");
        // Upload: the destination listing fails the same way.
        let src = h.path("src");
        std::fs::create_dir_all(&src).unwrap();
        std::fs::write(src.join("a.bin"), b"local").unwrap();
        let run = h.run(&["sync", "--delete", &format!("{}/", src.display()), "s3://bucket/m/"]).await;
        assert_ne!(run.code, 0, "{fault:?}: {}", run.stderr);
        assert_eq!(keys(&h).len(), 3, "{fault:?}: nothing deleted");
        assert_eq!(h.server.log().count("DeleteObjects") + h.server.log().count("PutObject"), 0, "{fault:?}");
        // ls says so too instead of printing part of the listing as the whole.
        let ls = h.run(&["ls", "s3://bucket/m/"]).await;
        assert_ne!(ls.code, 0, "{fault:?}: {}", ls.stdout);
    }
}

// Case 27: keys named like s3load's own temporary files are refused by name,
// and a temporary file replaced under its name is never committed.
#[tokio::test(flavor = "multi_thread")]
async fn keys_named_like_temporary_files_cannot_replace_another_objects_resume_file() {
    use s3load_testserver::generate_bytes;
    let h = Harness::new().await;
    let good = generate_bytes(3 << 20, 1);
    h.put("m/w.bin", good.clone());
    let names = [
        ".w.bin.s3load-resume",
        ".x.s3load-tmp",
        ".x.s3load-journal",
        ".w.bin.0a.s3load-split",
        ".w.bin.0a.1.s3load-piece",
    ];
    for k in names {
        h.put(&format!("m/{k}"), generate_bytes(3 << 20, 2));
    }
    let dest = h.path("out");
    let run = h.run(&["cp", "-p", "1", "s3://bucket/m/*", s(&dest)]).await;
    assert_eq!(run.code, 1, "{}", run.stderr);
    for k in names {
        let line = run.stderr.lines().find(|l| l.contains(&format!("s3://bucket/m/{k}"))).unwrap_or_default();
        assert!(line.contains("temporary"), "{k} refused by name: {}", run.stderr);
    }
    assert_eq!(std::fs::read(dest.join("w.bin")).unwrap(), good, "w.bin holds its own bytes");
    assert_eq!(crate::harness::files_under(&dest), vec!["w.bin"]);
}

// Case 26: everything in DEST/.s3load/ is opened without following links.
#[tokio::test(flavor = "multi_thread")]
async fn a_symlink_planted_in_the_record_directory_is_refused_not_written_through() {
    let h = Harness::new().await;
    h.put("m/a.bin", &b"a"[..]);
    let victim = h.path("victim");
    std::fs::write(&victim, b"keep me").unwrap();
    for name in ["state", "lock"] {
        let dest = h.path(&format!("dest-{name}"));
        std::fs::create_dir_all(dest.join(".s3load")).unwrap();
        std::os::unix::fs::symlink(&victim, dest.join(".s3load").join(name)).unwrap();
        let run = h.run(&["sync", "s3://bucket/m/*", s(&dest)]).await;
        assert_eq!(run.code, 3, "{}", run.stderr);
        assert!(run.stderr.contains(&format!(".s3load/{name}")), "named: {}", run.stderr);
        assert_eq!(std::fs::read(&victim).unwrap(), b"keep me", "{name}: the link's target is untouched");
    }
    let dest = h.path("dest-dir");
    std::fs::create_dir_all(&dest).unwrap();
    std::fs::create_dir_all(h.path("elsewhere")).unwrap();
    std::os::unix::fs::symlink(h.path("elsewhere"), dest.join(".s3load")).unwrap();
    let run = h.run(&["sync", "s3://bucket/m/*", s(&dest)]).await;
    assert_eq!(run.code, 3, "{}", run.stderr);
    assert_eq!(
        std::fs::read_dir(h.path("elsewhere")).unwrap().count(),
        0,
        "nothing written through .s3load -> elsewhere"
    );
}

// Case 28: a destination that is itself a symlink is followed (only it).
#[tokio::test(flavor = "multi_thread")]
async fn a_destination_that_is_a_symlink_is_synced_through_not_seen_as_empty() {
    let h = Harness::new().await;
    h.put("m/a.bin", &b"aaaa"[..]);
    h.put("m/sub/b.bin", &b"bb"[..]);
    let v3 = h.path("models/v3");
    std::fs::create_dir_all(&v3).unwrap();
    let current = h.path("models/current");
    std::os::unix::fs::symlink(&v3, &current).unwrap();
    h.run(&["sync", "s3://bucket/m/*", s(&current)]).await.assert_ok();
    std::fs::write(v3.join("stale.bin"), b"old").unwrap();
    h.server.log().clear();
    let run = h.run(&["sync", "--delete", "s3://bucket/m/*", s(&current)]).await;
    run.assert_ok();
    assert_eq!(h.server.log().count("GetObject"), 0, "up to date: nothing fetched again: {}", run.stderr);
    assert!(!v3.join("stale.bin").exists(), "--delete works through the destination link");
    assert_eq!(crate::harness::files_under(&v3), vec!["a.bin", "sub/b.bin"]);
    assert!(std::fs::symlink_metadata(&current).unwrap().file_type().is_symlink(), "the link itself stays");
}

// Case 34: a record in a newer or unknown format is set aside, never appended to.
#[tokio::test(flavor = "multi_thread")]
async fn a_record_from_a_newer_s3load_is_set_aside_not_overwritten_with_older_lines() {
    let h = Harness::new().await;
    h.put("m/a.bin", &b"aaaa"[..]);
    let dest = h.path("out");
    std::fs::create_dir_all(dest.join(".s3load")).unwrap();
    let newer = "s3load-state 2\n{\"path\":\"a.bin\",\"future\":true}\n";
    std::fs::write(dest.join(".s3load/state"), newer).unwrap();
    let run = h.run(&["sync", "s3://bucket/m/*", s(&dest)]).await;
    run.assert_ok();
    assert!(run.stderr.contains("does not know") && run.stderr.contains("state.set-aside-"), "{}", run.stderr);
    let names: Vec<String> = std::fs::read_dir(dest.join(".s3load"))
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    let aside = names.iter().find(|n| n.starts_with("state.set-aside-")).expect("set aside");
    assert_eq!(std::fs::read_to_string(dest.join(".s3load").join(aside)).unwrap(), newer, "kept byte for byte");
    let state = std::fs::read_to_string(dest.join(".s3load/state")).unwrap();
    assert!(state.starts_with("s3load-state 1\n") && state.contains("a.bin"), "{state}");
}

// Case 33: a loader that waited for the destination's lock lists after it holds it.
#[tokio::test(flavor = "multi_thread")]
async fn a_loader_that_waited_for_the_lock_never_applies_a_stale_listing() {
    use s3load_testserver::{Fault, Rule, When};
    use std::time::Duration;
    // The destination new (listed first, then locked) and already synced (locked first).
    for existing in [false, true] {
        let h = Harness::new().await;
        h.put("m/a.bin", &b"aaaa"[..]);
        let dest = h.path("out");
        if existing {
            h.run(&["sync", "s3://bucket/m/*", s(&dest)]).await.assert_ok();
            h.server.log().clear();
        }
        // Loader B's listing is answered late: whatever B lists, it sees only a.bin.
        h.server.faults().add(Rule::new("ListObjectsV2", When::Nth(1), Fault::AnswerLate(Duration::from_secs(2))));
        let b = h.spawn(&["sync", "--delete", "s3://bucket/m/*", s(&dest)]);
        h.wait_for_request("ListObjectsV2").await;
        // A new object appears and loader A fetches it while B's old listing is on its way.
        h.put("m/new.bin", &b"new"[..]);
        let a = h.run(&["sync", "--delete", "s3://bucket/m/*", s(&dest)]).await;
        a.assert_ok();
        let b = b.wait_with_output().await.unwrap();
        assert_eq!(b.status.code(), Some(0), "{}", String::from_utf8_lossy(&b.stderr));
        assert!(dest.join("new.bin").exists(), "existing={existing}: B deleted what A fetched from a newer listing");
        assert_eq!(crate::harness::files_under(&dest), vec!["a.bin", "new.bin"]);
    }
}

// Case 25: every request has a deadline; bodies have a minimum rate; SIGTERM
// ends the HEAD phase.
#[tokio::test(flavor = "multi_thread")]
async fn requests_that_are_never_answered_are_abandoned_after_the_request_timeout_and_retried() {
    use s3load_testserver::{Fault, Rule, When};
    use std::time::{Duration, Instant};
    let never = Fault::Delay(Duration::from_secs(3600));
    // (operation, which request, what to run)
    let cases: [(&str, u64, &str); 5] = [
        ("ListObjectsV2", 1, "download"),
        ("HeadObject", 1, "download"),
        ("HeadObject", 2, "download"), // the part-layout HEAD (partNumber=1)
        ("HeadBucket", 1, "download-no-region"),
        ("DeleteObjectsRequest", 1, "upload-delete"),
    ];
    for (op, nth, what) in cases {
        let h = Harness::new().await;
        // Multipart (a `-N` ETag), larger than a part: HEAD and part-layout HEAD.
        put_composite(&h, "m/w.bin");
        h.put("m/stale.bin", &b"x"[..]);
        h.server.faults().add(Rule::new(op, When::Nth(nth), never.clone()));
        let dest = h.path("out");
        let src = h.path("src");
        std::fs::create_dir_all(&src).unwrap();
        std::fs::write(src.join("a.bin"), b"a").unwrap();
        let started = Instant::now();
        let endpoint = h.server.endpoint_url();
        let base = ["--endpoint-url", endpoint.as_str(), "--request-timeout", "1s"];
        let run = match what {
            "download" => h.run(&[&base[2..], &["cp", "-p", "1", "s3://bucket/m/*", s(&dest)]].concat()).await,
            "download-no-region" => {
                let env: Vec<(&str, String)> =
                    h.server.client_env().into_iter().filter(|(k, _)| *k != "AWS_REGION").collect();
                h.run_env(&[&base[..], &["cp", "-p", "1", "s3://bucket/m/*", s(&dest)]].concat(), &env).await
            }
            _ => {
                let args = ["sync", "--delete", &format!("{}/", src.display()), "s3://bucket/m/"];
                h.run(&[&base[2..], &args[..]].concat()).await
            }
        };
        let took = started.elapsed();
        assert!(took < Duration::from_secs(30), "{op} #{nth}: took {took:?}");
        let sent = h.server.log().count(if op == "DeleteObjectsRequest" { "DeleteObjects" } else { op }) as u64;
        assert!(sent > nth, "{op} #{nth}: sent {sent}, not retried: {}", run.stderr);
        match what {
            "upload-delete" => {
                run.assert_ok();
                assert!(h.server.store().get(BUCKET, "m/stale.bin").is_none(), "{op}: deleted on the retry");
            }
            _ => {
                run.assert_ok();
                assert_eq!(std::fs::read(dest.join("stale.bin")).unwrap(), b"x", "{op}");
            }
        }
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn a_body_that_trickles_a_byte_at_a_time_is_cut_and_resumed() {
    use s3load_testserver::{Fault, Rule, When, generate_bytes};
    use std::time::Duration;
    let h = Harness::new().await;
    let data = generate_bytes(3 << 20, 9);
    h.put("m/a.bin", data.clone());
    // Never silent for the stall timeout (a byte every 300 ms), never getting anywhere.
    h.server.faults().add(Rule::new(
        "GetObject",
        When::Nth(1),
        Fault::TrickleAfter(100_000, Duration::from_millis(300)),
    ));
    let dest = h.path("out");
    let run = tokio::time::timeout(
        Duration::from_secs(60),
        h.run(&["--stall-timeout", "2s", "cp", "s3://bucket/m/a.bin", s(&dest.join("a.bin"))]),
    )
    .await
    .expect("a trickling body must not hold the part forever");
    run.assert_ok();
    assert_eq!(std::fs::read(dest.join("a.bin")).unwrap(), data);
    let gets: Vec<_> = h.server.log().records().into_iter().filter(|r| r.op == "GetObject").collect();
    assert_eq!(gets.len(), 2, "{gets:?}");
    let resumed_at = gets[1].range.expect("a ranged GET resumes the body").0;
    assert!(resumed_at >= 100_000, "resumed after the bytes received, at {resumed_at}");
    assert!(run.stderr.contains("minimum rate"), "{}", run.stderr);
}

#[tokio::test(flavor = "multi_thread")]
async fn sigterm_during_the_head_phase_stops_within_seconds() {
    use s3load_testserver::{Fault, Rule, When};
    use std::time::Duration;
    let h = Harness::new().await;
    put_composite(&h, "m/w.bin");
    h.server.faults().add(Rule::new("HeadObject", When::Always, Fault::Delay(Duration::from_secs(3600))));
    let dest = h.path("out");
    let child = h.spawn(&["cp", "-p", "1", "s3://bucket/m/*", s(&dest)]);
    h.wait_for_request("HeadObject").await;
    let status = crate::harness::terminate(child, Duration::from_secs(10)).await.status;
    assert_eq!(status.code(), Some(143));
}

// Case 38: the signal handler stays in force after the transfers: SIGTERM during
// deletions stops them (reported) and exits 143.
#[tokio::test(flavor = "multi_thread")]
async fn sigterm_during_deletions_stops_them_reports_how_far_and_exits_143() {
    use s3load_testserver::{Fault, Rule, When};
    use std::time::Duration;
    let h = Harness::new().await;
    for i in 0..2500 {
        h.put(&format!("m/stale-{i:04}"), &b"x"[..]);
    }
    let src = h.path("src");
    std::fs::create_dir_all(&src).unwrap();
    std::fs::write(src.join("a.bin"), b"a").unwrap();
    // The first of three DeleteObjects batches takes a while to answer.
    h.server.faults().add(Rule::new("DeleteObjectsRequest", When::Nth(1), Fault::Delay(Duration::from_secs(3))));
    let child = h.spawn(&["sync", "--delete", &format!("{}/", src.display()), "s3://bucket/m/"]);
    h.wait_for_request("DeleteObjects").await;
    let out = crate::harness::terminate(child, Duration::from_secs(20)).await;
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(143), "{stderr}");
    assert!(stderr.contains("stopped by a signal after 1000 of 2500 deletions"), "{stderr}");
    assert_eq!(h.server.log().count("DeleteObjects"), 1, "no batch started after the signal");
    assert_eq!(keys(&h).len(), 1501, "the batch in flight finished; the rest is kept");
}

// Case 36: a store that refuses the part-layout HEAD (`partNumber`): the object is
// fetched and counted unverified with the reason, not failed.
#[tokio::test(flavor = "multi_thread")]
async fn a_refused_part_layout_head_counts_the_object_unverified_with_the_reason() {
    use s3load_testserver::{Fault, Rule, When};
    let h = Harness::new().await;
    put_composite(&h, "m/w.bin");
    let want = h.server.store().get(BUCKET, "m/w.bin").unwrap().data.clone();
    // The first HEAD describes the object; the second is the one with partNumber=1.
    let refuse = || Rule::new("HeadObject", When::Nth(2), Fault::Status { status: 400, code: "InvalidArgument" });
    h.server.faults().add(refuse());
    let dest = h.path("out");
    let run = h.run(&["cp", "-p", "1", "s3://bucket/m/*", s(&dest)]).await;
    run.assert_ok();
    assert_eq!(std::fs::read(dest.join("w.bin")).unwrap(), want);
    assert!(run.stderr.contains("1 of them unverified"), "{}", run.stderr);
    assert!(run.stderr.contains("refused to give its part layout"), "the reason is given: {}", run.stderr);
    h.server.faults().clear();
    h.server.faults().add(refuse());
    let strict = h.run(&["--verify", "require", "cp", "-p", "1", "s3://bucket/m/*", s(&h.path("strict"))]).await;
    assert_eq!(strict.code, 1, "{}", strict.stderr);
    assert!(strict.stderr.contains("refused to give its part layout"), "{}", strict.stderr);
}

// Case 37: a CompleteMultipartUpload that succeeded but whose answer was lost is
// retried, answered NoSuchUpload, and recognised as done by the object's checksum.
#[tokio::test(flavor = "multi_thread")]
async fn a_retried_complete_that_finds_the_upload_already_completed_is_a_success() {
    use s3load_testserver::{Fault, Rule, When, generate_bytes};
    let h = Harness::new().await;
    let src = h.path("src");
    std::fs::create_dir_all(&src).unwrap();
    let data = generate_bytes(12 << 20, 5);
    std::fs::write(src.join("w.bin"), &data).unwrap();
    h.server.faults().add(Rule::new(
        "CompleteMultipartUpload",
        When::Nth(1),
        Fault::ApplyThenStatus { status: 500, code: "InternalError" },
    ));
    let run = h.run(&["cp", "-p", "5", s(&src.join("w.bin")), "s3://bucket/m/w.bin"]).await;
    run.assert_ok();
    assert_eq!(h.server.log().count("CompleteMultipartUpload"), 2, "retried once");
    assert_eq!(h.server.store().get(BUCKET, "m/w.bin").unwrap().data, data);
    assert_eq!(h.server.log().count("AbortMultipartUpload"), 0);
    assert!(!run.stderr.contains("ERROR"), "no error, no 'parts stay billed': {}", run.stderr);
}

// Case 35: a store whose ETags are not MD5s (and which sends no SSE header).
#[tokio::test(flavor = "multi_thread")]
async fn a_store_whose_etags_are_not_md5s_is_recognised_after_two_downloads_and_told_what_to_set() {
    use s3load_testserver::{StoredObject, generate_bytes};
    let h = Harness::new().await;
    let now = std::time::SystemTime::now();
    // An MD5-shaped ETag that is not the MD5 of the bytes, and no checksum.
    let mut hexlike = StoredObject::with_checksum(generate_bytes(100_000, 1), now, None);
    hexlike.etag = "0123456789abcdef0123456789abcdef".into();
    h.server.store().put_object(BUCKET, "m/hexlike.bin", hexlike);
    // An ETag of another form altogether: nothing to check against.
    let mut other = StoredObject::with_checksum(generate_bytes(100_000, 2), now, None);
    other.etag = "1700000000-5f3a".into();
    h.server.store().put_object(BUCKET, "m/other.bin", other);
    let dest = h.path("out");
    let run = h.run(&["cp", "s3://bucket/m/*", s(&dest)]).await;
    assert_eq!(run.code, 1, "{}", run.stderr);
    let line = run.stderr.lines().find(|l| l.contains("s3://bucket/m/hexlike.bin") && l.contains("ERROR")).unwrap();
    assert!(line.contains("--verify off") && line.contains("not MD5s"), "{line}");
    assert!(!dest.join("hexlike.bin").exists(), "nothing committed");
    let gets = |k: &str| h.server.log().records().iter().filter(|r| r.op == "GetObject" && r.key == k).count();
    assert_eq!(gets("m/hexlike.bin"), 2, "downloaded twice, not four times");
    assert_eq!(gets("m/other.bin"), 1);
    assert!(dest.join("other.bin").exists(), "an ETag that is no MD5 leaves the object unverified, not failed");
    assert!(run.stderr.contains("1 of them unverified"), "{}", run.stderr);
    // As told: --verify off.
    let off = h.run(&["--verify", "off", "cp", "s3://bucket/m/*", s(&dest)]).await;
    off.assert_ok();
}

// Case 29: keys that a case-insensitive or normalising destination takes for one
// name are refused by name; on a byte-exact filesystem they stay distinct files.
const LOOKALIKE_KEYS: [&str; 5] = ["m/Model.bin", "m/model.bin", "m/caf\u{e9}.bin", "m/cafe\u{301}.bin", "m/ok.bin"];

#[tokio::test(flavor = "multi_thread")]
async fn keys_that_are_one_name_on_a_case_insensitive_destination_are_refused_by_name() {
    let h = Harness::new().await;
    for (i, k) in LOOKALIKE_KEYS.iter().enumerate() {
        h.put(k, format!("object {i}").into_bytes());
    }
    let (backing, mount) = (h.path("foldfs-backing"), h.path("foldfs-mnt"));
    for _ in 0..2 {
        let dest = mount.join("model");
        std::fs::create_dir_all(&backing).unwrap();
        let run = h.run_on_folding_fs(&backing, &mount, &["sync", "s3://bucket/m/*", s(&dest)]).await;
        assert_eq!(run.code, 1, "{}", run.stderr);
        for k in &LOOKALIKE_KEYS[..4] {
            let line = run.stderr.lines().find(|l| l.contains(&format!("s3://bucket/{k}")) && l.contains("ERROR"));
            assert!(line.is_some_and(|l| l.contains("would be one file")), "{k} refused by name: {}", run.stderr);
        }
        // What the folding filesystem holds (names folded): ok.bin only.
        assert_eq!(crate::harness::files_under(&backing.join("model")), vec!["ok.bin"]);
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn keys_that_differ_by_case_or_unicode_form_stay_distinct_files_on_a_byte_exact_destination() {
    let h = Harness::new().await;
    for (i, k) in LOOKALIKE_KEYS.iter().enumerate() {
        h.put(k, format!("object {i}").into_bytes());
    }
    let dest = h.path("model");
    h.run(&["sync", "s3://bucket/m/*", s(&dest)]).await.assert_ok();
    for (i, k) in LOOKALIKE_KEYS.iter().enumerate() {
        let rel = k.strip_prefix("m/").unwrap();
        assert_eq!(std::fs::read(dest.join(rel)).unwrap(), format!("object {i}").into_bytes(), "{rel}");
    }
    h.server.log().clear();
    h.run(&["sync", "s3://bucket/m/*", s(&dest)]).await.assert_ok();
    assert_eq!(h.server.log().count("GetObject"), 0, "a second sync fetches nothing");
}

// Case 63: a store that states more parts than a multipart upload has in S3
// (20,000 parts of 512 bytes, consistent with the object's size): the layout
// is not trusted (one hash would be kept per part, and a count near 2^31
// would be an allocation the process cannot survive); the object is fetched
// and counted unverified with the reason, or refused under --verify require.
#[tokio::test(flavor = "multi_thread")]
async fn case_63_more_parts_than_s3_allows_are_not_trusted_as_a_layout() {
    use s3load_testserver::{Fault, Rule, StoredObject, When, generate_bytes};
    let h = Harness::new().await;
    let parts = [generate_bytes(5_120_000, 1), generate_bytes(5_120_000, 2)];
    h.server.store().put_object(
        BUCKET,
        "p/w.bin",
        StoredObject::multipart(&parts, std::time::SystemTime::now(), None, false),
    );
    let want = h.server.store().get(BUCKET, "p/w.bin").unwrap().data.clone();
    let claim = || Rule::new("HeadObject", When::Always, Fault::ClaimParts { count: 20_000, part_size: 512 });
    h.server.faults().add(claim());
    let dest = h.path("out");
    let run = h.run(&["cp", "s3://bucket/p/*", s(&dest)]).await;
    run.assert_ok();
    assert_eq!(std::fs::read(dest.join("w.bin")).unwrap(), want);
    assert!(run.stderr.contains("1 of them unverified"), "{}", run.stderr);
    assert!(
        run.stderr.contains("the store states 20000 parts, more than a multipart upload has in S3 (10000)"),
        "{}",
        run.stderr
    );
    let strict = h.run(&["--verify", "require", "cp", "s3://bucket/p/*", s(&h.path("strict"))]).await;
    assert_eq!(strict.code, 1, "{}", strict.stderr);
    assert!(strict.stderr.contains("more than a multipart upload has in S3"), "{}", strict.stderr);
}

// SIGTERM while the source is listed (before the transfers start): the run
// ends at once, says it was stopped by a signal, exits 143 (as a shell and
// the kubelet report SIGTERM) and writes its summary, with nothing written
// or deleted; it never goes on to finish and report success. The listing is
// held by the server while the signal is sent.
#[tokio::test(flavor = "multi_thread")]
async fn sigterm_during_the_listing_ends_the_run_at_once_with_nothing_written() {
    use s3load_testserver::{Fault, Gate, Rule, When};
    use std::time::Duration;
    let h = Harness::new().await;
    h.put("m/a.bin", b"a".to_vec());
    let dest = h.path("out");
    for fresh in [false, true] {
        if fresh {
            std::fs::remove_dir_all(&dest).unwrap();
        } else {
            h.run(&["sync", "s3://bucket/m/*", s(&dest)]).await.assert_ok();
        }
        h.put("m/b.bin", b"b".to_vec());
        let gate = Gate::new();
        let rule = h.server.faults().add(Rule::new("ListObjectsV2", When::Nth(1), Fault::HoldAnswer(gate.clone())));
        let summary = h.path("summary.json");
        let child = h.spawn(&["--summary-file", s(&summary), "sync", "--delete", "s3://bucket/m/*", s(&dest)]);
        gate.reached(1).await;
        let pid = child.id().expect("running").to_string();
        assert!(tokio::process::Command::new("kill").args(["-TERM", &pid]).status().await.unwrap().success());
        let out = tokio::time::timeout(Duration::from_secs(20), child.wait_with_output()).await.unwrap().unwrap();
        gate.open();
        let err = String::from_utf8_lossy(&out.stderr);
        let status = out.status;
        assert_eq!(status.code(), Some(143), "fresh destination {fresh}: {status:?}: {err}");
        assert!(err.contains("stopped by a signal"), "fresh destination {fresh}: says why: {err}");
        assert!(err.contains("listing s3://bucket/m/*: interrupted"), "fresh destination {fresh}: says where: {err}");
        let written: serde_json::Value = serde_json::from_slice(&std::fs::read(&summary).unwrap()).unwrap();
        assert_eq!(written["result"], "terminated", "{written}");
        assert_eq!(written["exit_code"], 143, "{written}");
        let files = if dest.exists() { crate::harness::files_under(&dest) } else { Vec::new() };
        let before: Vec<String> = if fresh { vec![] } else { vec!["a.bin".into()] };
        assert_eq!(files, before, "fresh destination {fresh}: nothing written, nothing removed");
        h.server.faults().remove(rule);
        h.server.store().delete(crate::harness::BUCKET, "m/b.bin");
    }
}

// SIGTERM while waiting for another run's lock on the destination (before
// anything is listed or written): the waiting run ends at once with 143,
// naming the wait; the run holding the lock is not disturbed. The first
// run's listing is held by the server, so it holds the lock meanwhile.
#[tokio::test(flavor = "multi_thread")]
async fn sigterm_while_waiting_for_another_runs_lock_ends_the_waiting_run() {
    use s3load_testserver::{Fault, Gate, Rule, When};
    use std::time::Duration;
    use tokio::io::AsyncBufReadExt;
    let h = Harness::new().await;
    h.put("m/a.bin", b"a".to_vec());
    let dest = h.path("out");
    std::fs::create_dir_all(&dest).unwrap();
    let gate = Gate::new();
    h.server.faults().add(Rule::new("ListObjectsV2", When::Nth(1), Fault::HoldAnswer(gate.clone())));
    let first = h.spawn(&["sync", "s3://bucket/m/*", s(&dest)]);
    gate.reached(1).await;
    let mut second = h.spawn(&["sync", "s3://bucket/m/*", s(&dest)]);
    // The second says it waits for the first; read until it does.
    let mut lines = tokio::io::BufReader::new(second.stderr.take().unwrap()).lines();
    let mut said = String::new();
    let waiting = tokio::time::timeout(Duration::from_secs(20), async {
        while let Some(line) = lines.next_line().await.unwrap() {
            said.push_str(&line);
            said.push('\n');
            if line.contains("another s3load run is writing into this directory") {
                return;
            }
        }
    })
    .await;
    assert!(waiting.is_ok(), "the second run never said it waits: {said}");
    let pid = second.id().expect("running").to_string();
    assert!(tokio::process::Command::new("kill").args(["-TERM", &pid]).status().await.unwrap().success());
    let status = tokio::time::timeout(Duration::from_secs(10), second.wait()).await.expect("ends at once").unwrap();
    while let Ok(Some(line)) = lines.next_line().await {
        said.push_str(&line);
        said.push('\n');
    }
    assert_eq!(status.code(), Some(143), "{said}");
    assert!(said.contains(&format!("waiting for another run's lock on {}: interrupted", dest.display())), "{said}");
    gate.open();
    let out = first.wait_with_output().await.unwrap();
    assert_eq!(out.status.code(), Some(0), "{}", String::from_utf8_lossy(&out.stderr));
    assert_eq!(std::fs::read(dest.join("a.bin")).unwrap(), b"a");
}

// `cat` (and `ls`) keep the signals' default action: a SIGTERM while the
// output is blocked on a reader that does not read ends the process at once
// (as any filter in a pipe), not once the reader drains, and never as a
// success.
#[tokio::test(flavor = "multi_thread")]
async fn sigterm_ends_a_cat_blocked_on_a_slow_reader_at_once() {
    use std::os::unix::process::ExitStatusExt;
    use std::time::Duration;
    let h = Harness::new().await;
    h.put("m/big.bin", s3load_testserver::generate_bytes(32 << 20, 3));
    // stdout is a pipe nobody reads: the write blocks once it is full.
    let mut child = h.spawn(&["cat", "s3://bucket/m/big.bin"]);
    h.wait_for_request("GetObject").await;
    let pid = child.id().expect("running").to_string();
    assert!(tokio::process::Command::new("kill").args(["-TERM", &pid]).status().await.unwrap().success());
    let status = tokio::time::timeout(Duration::from_secs(5), child.wait()).await.expect("ends at once").unwrap();
    assert_eq!(status.signal(), Some(15), "{status:?}");
    drop(child.stdout.take());
}
