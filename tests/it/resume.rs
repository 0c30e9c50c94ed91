//! Crash resume (reliability case 11), signals (case 12) and leftovers of dead runs.

use std::path::Path;
use std::time::{Duration, Instant};

use s3load_testserver::{Shaping, generate_bytes};

use crate::harness::{Harness, files_under};

const MIB: usize = 1 << 20;

/// A server slow enough (4 MB/s per connection) that a kill lands mid-download.
async fn slow_harness() -> Harness {
    Harness::with_shaping(Shaping {
        first_byte_delay: Duration::ZERO,
        rate_per_connection: Some(4_000_000),
        ..Shaping::default()
    })
    .await
}

fn journal_parts(journal: &Path) -> usize {
    std::fs::read_to_string(journal).map_or(0, |t| t.lines().filter(|l| l.starts_with("done ")).count())
}

/// Polls `done` until it holds; fails with `what` after a minute.
async fn wait_until(what: &str, done: impl Fn() -> bool) {
    let t = Instant::now();
    while !done() {
        assert!(t.elapsed() < Duration::from_secs(60), "{what}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Waits until the journal records at least `n` finished parts.
async fn wait_for_parts(journal: &Path, n: usize) {
    let what = format!("no progress recorded in {}", journal.display());
    wait_until(&what, || journal_parts(journal) >= n).await;
}

/// Starts s3load with `args`, and SIGKILLs it once `journal` records `n`
/// finished parts (a pod killed mid-download).
async fn killed_after_parts(h: &Harness, args: &[&str], journal: &Path, n: usize) {
    let mut child = h.spawn(args);
    wait_for_parts(journal, n).await;
    child.start_kill().unwrap();
    child.wait().await.unwrap();
}

#[tokio::test(flavor = "multi_thread")]
async fn case11_sigkill_mid_download_then_rerun_fetches_only_what_was_missing() {
    let h = slow_harness().await;
    let size = 32 * MIB;
    let data = generate_bytes(size, 77);
    h.put("big/shard.bin", data.clone());
    let dest = h.path("out");
    let args = [
        "--journal-hold",
        "0s",
        "--numworkers",
        "4",
        "cp",
        "-p",
        "1",
        "-c",
        "4",
        "s3://bucket/big/*",
        dest.to_str().unwrap(),
    ];

    let journal = dest.join(".shard.bin.s3load-journal");
    killed_after_parts(&h, &args, &journal, 8).await;
    assert!(!dest.join("shard.bin").exists(), "nothing at the final path after a kill");
    let done_before = journal_parts(&journal);
    assert!((8..32).contains(&done_before), "{done_before}");
    let recorded: Vec<u64> = std::fs::read_to_string(&journal)
        .unwrap()
        .lines()
        .filter_map(|l| l.strip_prefix("done ")?.split(' ').next()?.parse().ok())
        .collect();

    h.server.log().clear();
    let run = h.run(&args).await;
    run.assert_ok();
    assert!(std::fs::read(dest.join("shard.bin")).unwrap() == data, "byte-identical after resume");
    // No byte of a part recorded on disk is requested again.
    let mib = MIB as u64;
    for r in h.server.log().records().into_iter().filter(|r| r.op == "GetObject") {
        let (start, end) = r.range.expect("ranged");
        let end = end.unwrap_or(size as u64 - 1);
        for p in &recorded {
            assert!(end < p * mib || start >= (p + 1) * mib, "part {p} was on disk and fetched again: {start}-{end}");
        }
    }
    // What the server sent is what was missing; a body dropped and requested
    // again from its first missing byte (a straggler) may add what was in
    // flight when it was dropped.
    let fetched = h.server.log().body_bytes();
    assert!(
        fetched <= (size - done_before * MIB + MIB) as u64,
        "the second run fetched {fetched} bytes; {done_before} of 32 parts were already on disk"
    );
    assert!(run.stderr.contains("resuming"), "{}", run.stderr);
    assert_eq!(files_under(&dest), vec!["shard.bin"], "journal and temporary file gone");
}

#[tokio::test(flavor = "multi_thread")]
async fn case11_a_resumed_part_damaged_on_disk_or_a_changed_object_is_fetched_again() {
    let h = slow_harness().await;
    let size = 16 * MIB;
    h.put("big/a.bin", generate_bytes(size, 78));
    let dest = h.path("out");
    let args = [
        "--journal-hold",
        "0s",
        "--numworkers",
        "2",
        "cp",
        "-p",
        "1",
        "-c",
        "2",
        "s3://bucket/big/*",
        dest.to_str().unwrap(),
    ];
    let journal = dest.join(".a.bin.s3load-journal");
    killed_after_parts(&h, &args, &journal, 3).await;

    // Zero a recorded part on disk, as a crash before write-back could.
    let first_done: usize = std::fs::read_to_string(&journal)
        .unwrap()
        .lines()
        .find_map(|l| l.strip_prefix("done ")?.split(' ').next()?.parse().ok())
        .unwrap();
    let tmp = dest.join(".a.bin.s3load-resume");
    let f = std::fs::OpenOptions::new().write(true).open(&tmp).unwrap();
    std::os::unix::fs::FileExt::write_all_at(&f, &vec![0u8; 4096], (first_done * MIB) as u64).unwrap();
    drop(f);

    h.server.log().clear();
    h.run(&args).await.assert_ok();
    assert!(std::fs::read(dest.join("a.bin")).unwrap() == generate_bytes(size, 78));
    let refetched: Vec<u64> = h.server.log().records().iter().filter_map(|r| r.range.map(|(a, _)| a)).collect();
    assert!(refetched.contains(&((first_done * MIB) as u64)), "the damaged part is fetched again");

    // A journal for another version of the object is not resumed from.
    let journal = h.path("v2/.a.bin.s3load-journal");
    killed_after_parts(
        &h,
        &[
            "--journal-hold",
            "0s",
            "--numworkers",
            "2",
            "cp",
            "-p",
            "1",
            "-c",
            "2",
            "s3://bucket/big/*",
            h.path("v2").to_str().unwrap(),
        ],
        &journal,
        3,
    )
    .await;
    let v2 = generate_bytes(size, 79);
    h.put("big/a.bin", v2.clone());
    h.server.log().clear();
    let v2_dest = h.path("v2");
    h.run(&["--numworkers", "2", "cp", "-p", "1", "-c", "2", "s3://bucket/big/*", v2_dest.to_str().unwrap()])
        .await
        .assert_ok();
    assert!(std::fs::read(v2_dest.join("a.bin")).unwrap() == v2, "the new version, whole");
    assert_eq!(h.server.log().body_bytes(), size as u64, "everything fetched again");
}

#[tokio::test(flavor = "multi_thread")]
async fn case12_sigterm_stops_within_seconds_keeps_the_resumable_file_and_exits_143() {
    let h = slow_harness().await;
    h.put("t/big.bin", generate_bytes(32 * MIB, 80));
    for i in 0..3 {
        h.put(&format!("t/small-{i}.json"), generate_bytes(3_000_000, 81 + i));
    }
    let dest = h.path("out");
    let args = [
        "--journal-hold",
        "0s",
        "--numworkers",
        "4",
        "sync",
        "-p",
        "1",
        "-c",
        "4",
        "s3://bucket/t/*",
        dest.to_str().unwrap(),
    ];
    let child = h.spawn(&args);
    let journal = dest.join(".big.bin.s3load-journal");
    wait_for_parts(&journal, 2).await;
    let pid = child.id().unwrap().to_string();
    let t = Instant::now();
    let kill = tokio::process::Command::new("kill").args(["-TERM", &pid]).status().await.unwrap();
    assert!(kill.success());
    let out = tokio::time::timeout(Duration::from_secs(10), child.wait_with_output())
        .await
        .expect("stops in seconds")
        .unwrap();
    assert!(t.elapsed() < Duration::from_secs(5), "took {:?}", t.elapsed());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(143), "{stderr}");
    assert!(stderr.contains("stopped by a signal"), "{stderr}");
    let left = files_under(&dest);
    assert!(!left.contains(&"big.bin".to_string()));
    assert!(
        left.contains(&".big.bin.s3load-resume".to_string()) && left.contains(&".big.bin.s3load-journal".to_string()),
        "{left:?}"
    );
    assert!(left.iter().all(|f| !f.ends_with(".s3load-tmp")), "one-shot temporary files removed: {left:?}");

    h.run(&args).await.assert_ok();
    assert_eq!(files_under(&dest), vec!["big.bin", "small-0.json", "small-1.json", "small-2.json"]);
}

#[tokio::test(flavor = "multi_thread")]
async fn leftovers_of_dead_runs_are_removed_and_files_in_use_are_not() {
    let h = Harness::new().await;
    h.put("o/a.json", &b"a"[..]);
    let dest = h.path("out");
    std::fs::create_dir_all(dest.join("sub")).unwrap();
    std::fs::write(dest.join("sub/.w.bin.1f2e3d.s3load-tmp"), b"dead run").unwrap();
    std::fs::write(dest.join(".gone.bin.s3load-resume"), b"dead run").unwrap();
    std::fs::write(dest.join(".gone.bin.s3load-journal"), b"s3load-journal 1\n").unwrap();
    // Another live s3load holds this one (its lock).
    let busy = std::fs::File::create(dest.join(".busy.bin.77.s3load-tmp")).unwrap();
    busy.lock().unwrap();
    h.run(&["sync", "s3://bucket/o/*", dest.to_str().unwrap()]).await.assert_ok();
    assert_eq!(files_under(&dest), vec![".busy.bin.77.s3load-tmp", "a.json"]);
    drop(busy);
}

// Case 31 (docs/reliability.md): after a machine crash a part the journal calls
// done may be zeros on disk. Where no checksum can re-check it (here
// `--verify off`; also objects with nothing to verify against), it is fetched again.
#[tokio::test(flavor = "multi_thread")]
async fn case31_resumed_parts_that_cannot_be_rehashed_are_fetched_again() {
    let h = slow_harness().await;
    let size = 16 * MIB;
    let data = generate_bytes(size, 80);
    h.put("big/a.bin", data.clone());
    let dest = h.path("out");
    let args = [
        "--journal-hold",
        "0s",
        "--verify",
        "off",
        "--numworkers",
        "2",
        "cp",
        "-p",
        "1",
        "-c",
        "2",
        "s3://bucket/big/*",
        dest.to_str().unwrap(),
    ];
    let journal = dest.join(".a.bin.s3load-journal");
    killed_after_parts(&h, &args, &journal, 3).await;
    // Every part the journal records is zeros on disk, as after a power loss.
    let tmp = dest.join(".a.bin.s3load-resume");
    let f = std::fs::OpenOptions::new().write(true).open(&tmp).unwrap();
    for part in 0..16 {
        std::os::unix::fs::FileExt::write_all_at(&f, &vec![0u8; MIB], (part * MIB) as u64).unwrap();
    }
    drop(f);
    h.server.log().clear();
    h.run(&args).await.assert_ok();
    assert!(std::fs::read(dest.join("a.bin")).unwrap() == data, "no zero-filled part committed");
    assert_eq!(h.server.log().body_bytes(), size as u64, "every part fetched again");
}

// Case 25 (docs/reliability.md): SIGTERM while the parts of a resumed file are
// read back and re-hashed (MD5 here: a legacy multipart object) ends the run
// within seconds, keeping the resumable file.
#[tokio::test(flavor = "multi_thread")]
async fn case25_sigterm_while_resumed_parts_are_rehashed_stops_within_seconds() {
    use s3load_testserver::StoredObject;
    // Slow enough that the kill lands well before the last part.
    let h = slow_harness().await;
    let parts: Vec<_> = (0..48).map(|i| generate_bytes(8 * MIB, 200 + i)).collect();
    let obj = StoredObject::multipart(&parts, std::time::SystemTime::now(), None, false);
    h.server.store().put_object(crate::harness::BUCKET, "big/legacy.bin", obj);
    let dest = h.path("out");
    let args = ["--journal-hold", "0s", "cp", "-p", "8", "s3://bucket/big/*", dest.to_str().unwrap()];
    let journal = dest.join(".legacy.bin.s3load-journal");
    killed_after_parts(&h, &args, &journal, 32).await;
    let done = journal_parts(&journal);

    // The second run HEADs the object and its part layout, then re-hashes.
    h.server.log().clear();
    let child = h.spawn(&args);
    let t = Instant::now();
    while h.server.log().count("HeadObject") < 3 {
        assert!(t.elapsed() < Duration::from_secs(20), "the resumed run never got to re-hashing");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    tokio::time::sleep(Duration::from_millis(200)).await;
    let t = Instant::now();
    let out = crate::harness::terminate(child, Duration::from_secs(30)).await;
    let took = t.elapsed();
    assert_eq!(out.status.code(), Some(143), "{}", String::from_utf8_lossy(&out.stderr));
    assert!(took < Duration::from_secs(3), "stopped {took:?} after SIGTERM while re-hashing {done} parts");
    assert_eq!(h.server.log().count("GetObject"), 0, "stopped before fetching");
    assert!(dest.join(".legacy.bin.s3load-resume").exists(), "the resumable file is kept");
}

/// Waits until the server has sent at least `n` body bytes.
async fn wait_for_bytes(h: &Harness, n: u64) {
    wait_until("the download never got going", || h.server.log().body_bytes() >= n).await;
}

// A fresh journal holds its lines in memory for its first seconds (default
// 5 s), so an object that finishes sooner never writes one. A signal within
// that time still writes them (the run keeps the file for the next); a kill
// loses them, and the next run fetches the object again, whole and correct.
#[tokio::test(flavor = "multi_thread")]
async fn journal_lines_held_at_first_are_written_on_a_signal_and_lost_only_to_a_kill() {
    let h = slow_harness().await;
    let size = 32 * MIB;
    let data = generate_bytes(size, 90);
    h.put("big/held.bin", data.clone());
    let dest = h.path("out");
    let journal = dest.join(".held.bin.s3load-journal");
    let args = ["--numworkers", "4", "cp", "-p", "1", "-c", "4", "s3://bucket/big/*", dest.to_str().unwrap()];

    // SIGTERM within the hold: the held lines reach the journal, and the next
    // run resumes from them.
    let child = h.spawn(&args);
    wait_for_bytes(&h, 8 * MIB as u64).await;
    assert_eq!(journal_parts(&journal), 0, "lines are held for the first seconds");
    let pid = child.id().unwrap().to_string();
    assert!(tokio::process::Command::new("kill").args(["-TERM", &pid]).status().await.unwrap().success());
    let out = child.wait_with_output().await.unwrap();
    assert_eq!(out.status.code(), Some(143), "{}", String::from_utf8_lossy(&out.stderr));
    let kept = journal_parts(&journal);
    assert!(kept >= 4, "parts finished before the signal are written at exit: {kept}");
    h.server.log().clear();
    h.run(&args).await.assert_ok();
    assert!(std::fs::read(dest.join("held.bin")).unwrap() == data);
    assert!(h.server.log().body_bytes() <= (size - kept * MIB) as u64, "resumed from the held lines");

    // SIGKILL within the hold: nothing was written, so nothing is trusted;
    // the object is fetched again, whole.
    std::fs::remove_file(dest.join("held.bin")).unwrap();
    h.server.log().clear();
    let mut child = h.spawn(&args);
    wait_for_bytes(&h, 8 * MIB as u64).await;
    child.start_kill().unwrap();
    child.wait().await.unwrap();
    assert_eq!(journal_parts(&journal), 0);
    h.server.log().clear();
    h.run(&args).await.assert_ok();
    assert!(std::fs::read(dest.join("held.bin")).unwrap() == data);
    assert_eq!(h.server.log().body_bytes(), size as u64, "every part fetched again");
    assert_eq!(files_under(&dest), vec!["held.bin"]);
}

// The hidden `--journal-hold` is still an input: a hold too long to add to the
// clock means "hold until kept", never a panic; a malformed one is refused by
// name before anything is fetched.
#[tokio::test(flavor = "multi_thread")]
async fn an_absurd_or_malformed_journal_hold_is_handled() {
    let h = Harness::new().await;
    let data = generate_bytes(3 * MIB, 91);
    h.put("big/h.bin", data.clone());
    let dest = h.path("out");
    let d = dest.to_str().unwrap();
    let run = h.run(&["--journal-hold", "500000000000years", "cp", "-p", "1", "s3://bucket/big/*", d]).await;
    run.assert_ok();
    assert!(std::fs::read(dest.join("h.bin")).unwrap() == data);
    assert_eq!(files_under(&dest), vec!["h.bin"]);

    h.server.log().clear();
    let run = h.run(&["--journal-hold", "soon", "cp", "s3://bucket/big/*", h.path("other").to_str().unwrap()]).await;
    assert_eq!(run.code, 2, "{}", run.stderr);
    assert!(run.stderr.contains("--journal-hold"), "{}", run.stderr);
    assert_eq!(h.server.log().records().len(), 0);
}
