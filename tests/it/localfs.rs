//! The destination filesystem: a full disk (reliability case 10) and durability modes.

use std::time::Duration;

use s3load_testserver::{Fault, Rule, When, generate_bytes};

use crate::harness::{Harness, files_under};

const MIB: usize = 1 << 20;

#[tokio::test(flavor = "multi_thread")]
async fn case10_a_download_that_cannot_fit_fails_before_writing_and_says_how_much_is_missing() {
    let h = Harness::new().await;
    h.put("big/a.bin", generate_bytes(3 * MIB, 1));
    h.put("big/b.bin", generate_bytes(3 * MIB, 2));
    let mnt = h.path("small");
    let dest = mnt.join("models");
    let run = h.run_on_small_fs("4m", &mnt, "true", &["sync", "s3://bucket/big/*", dest.to_str().unwrap()]).await;
    assert_eq!(run.code, 3, "{}", run.stderr);
    assert!(run.stderr.contains("not enough space on the filesystem holding"), "{}", run.stderr);
    assert!(run.stderr.contains("6.0 MiB to download"), "{}", run.stderr);
    assert_eq!(h.server.log().count("GetObject"), 0, "nothing fetched");
}

#[tokio::test(flavor = "multi_thread")]
async fn case10_a_disk_that_fills_during_the_run_fails_the_object_and_leaves_no_temporary_file() {
    let h = Harness::new().await;
    h.put("big/a.bin", generate_bytes(3 * MIB, 3));
    // The space check passes; then, while s3load asks for the object's checksum,
    // another writer takes the free space.
    h.server.faults().add(Rule::new("HeadObject", When::Nth(1), Fault::Delay(Duration::from_secs(3))));
    let mnt = h.path("small");
    let dest = mnt.join("models");
    let filler = format!("sleep 1; head -c 7000000 /dev/zero > {}/filler 2>/dev/null", mnt.display());
    let args = ["cp", "-p", "1", "s3://bucket/big/*", dest.to_str().unwrap()];
    let run = h.run_on_small_fs("8m", &mnt, &filler, &args).await;
    assert_eq!(run.code, 1, "{}", run.stderr);
    assert!(run.stderr.contains("s3://bucket/big/a.bin"), "{}", run.stderr);
    assert!(run.stderr.contains("the destination's filesystem is full"), "{}", run.stderr);
    assert!(run.stderr.lines().any(|l| l == "LEFT:"), "no temporary file left behind: {}", run.stderr);
}

// Case 30 (issue 11, item 9): a resumable file whose space cannot be reserved
// leaves neither the file nor its journal.
#[tokio::test(flavor = "multi_thread")]
async fn case30_a_full_disk_while_preparing_a_resumable_file_leaves_no_journal() {
    let h = Harness::new().await;
    h.put("big/w.bin", generate_bytes(6 * MIB, 4));
    h.server.faults().add(Rule::new("HeadObject", When::Nth(1), Fault::Delay(Duration::from_secs(3))));
    let mnt = h.path("small");
    let dest = mnt.join("models");
    let filler = format!("sleep 1; head -c 5000000 /dev/zero > {}/filler 2>/dev/null", mnt.display());
    // 6 MiB in 1 MiB parts: a resumable file with a journal.
    let args = ["sync", "-p", "1", "s3://bucket/big/*", dest.to_str().unwrap()];
    let run = h.run_on_small_fs("8m", &mnt, &filler, &args).await;
    assert_eq!(run.code, 1, "{}", run.stderr);
    assert!(run.stderr.contains("s3://bucket/big/w.bin"), "{}", run.stderr);
    assert!(run.stderr.lines().any(|l| l == "LEFT:"), "no resume file or journal left behind: {}", run.stderr);
}

#[tokio::test(flavor = "multi_thread")]
async fn fsync_and_off_durability_modes_download_the_same_bytes() {
    let h = Harness::new().await;
    for i in 0..5 {
        h.put(&format!("d/{i}.bin"), generate_bytes(100_000, i));
    }
    for mode in ["fsync", "off", "syncfs"] {
        let dest = h.path(mode);
        h.run(&["--durability", mode, "cp", "s3://bucket/d/*", dest.to_str().unwrap()]).await.assert_ok();
        assert_eq!(files_under(&dest).len(), 5);
        assert!(std::fs::read(dest.join("3.bin")).unwrap() == generate_bytes(100_000, 3));
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn case14_a_symlink_planted_in_the_destination_is_never_written_through() {
    let h = Harness::new().await;
    h.put("m/sub/weights.bin", &b"weights"[..]);
    h.put("m/config.json", &b"{}"[..]);
    h.put("m/link.json", &b"replaced"[..]);
    let dest = h.path("out");
    let outside = h.path("outside");
    std::fs::create_dir_all(&dest).unwrap();
    std::fs::create_dir_all(&outside).unwrap();
    std::fs::write(outside.join("victim"), b"keep me").unwrap();
    std::os::unix::fs::symlink(&outside, dest.join("sub")).unwrap();
    std::os::unix::fs::symlink(outside.join("victim"), dest.join("link.json")).unwrap();

    let run = h.run(&["cp", "s3://bucket/m/*", dest.to_str().unwrap()]).await;
    assert_eq!(run.code, 1, "{}", run.stderr);
    assert!(run.stderr.contains("s3://bucket/m/sub/weights.bin"), "{}", run.stderr);
    assert!(run.stderr.contains("never writes through symlinks"), "{}", run.stderr);
    assert_eq!(files_under(&outside), vec!["victim"], "nothing written outside the destination");
    assert_eq!(std::fs::read(outside.join("victim")).unwrap(), b"keep me");
    // The symlink at a final name is replaced by the file, not followed.
    assert_eq!(std::fs::read(dest.join("link.json")).unwrap(), b"replaced");
    assert!(!std::fs::symlink_metadata(dest.join("link.json")).unwrap().file_type().is_symlink());
    assert_eq!(std::fs::read(dest.join("config.json")).unwrap(), b"{}");
}

#[tokio::test(flavor = "multi_thread")]
async fn case15_a_key_that_is_also_a_directory_and_directory_markers_have_a_fixed_outcome() {
    let h = Harness::new().await;
    h.put("c/a", &b"file a"[..]);
    h.put("c/a/b", &b"file a/b"[..]);
    h.put("c/a-1", &b"a-1"[..]);
    h.put("c/dir/", &b""[..]);
    h.put("c/dir/x", &b"x"[..]);
    let dest = h.path("out");
    for _ in 0..2 {
        let run = h.run(&["cp", "s3://bucket/c/*", dest.to_str().unwrap()]).await;
        assert_eq!(run.code, 1, "{}", run.stderr);
        assert!(
            run.stderr.contains("\"cp s3://bucket/c/a ") && run.stderr.contains("both a file and a directory"),
            "{}",
            run.stderr
        );
        assert_eq!(files_under(&dest), vec!["a-1", "a/b", "dir/x"]);
    }
}

// Case 32 (issue 11, item 11): when `syncfs` fails, the files of this run may not
// be on disk (after a crash: the right size, zeros inside), so the sync record
// must not vouch for them: the next run fetches them again.
#[tokio::test(flavor = "multi_thread")]
async fn case32_after_a_failed_syncfs_the_next_run_fetches_the_files_again() {
    let h = Harness::new().await;
    for i in 0..3 {
        h.put(&format!("m/{i}.bin"), generate_bytes(10 * MIB, i));
    }
    let work = h.path("wb");
    let dest = work.join("mnt/model");
    let args = ["--durability", "syncfs", "sync", "s3://bucket/m/*", dest.to_str().unwrap()];
    let run = h.run_with_failing_writeback(&work, &dest, &args).await;
    assert_eq!(run.code, 1, "{}", run.stderr);
    assert!(run.stderr.contains("may not be on disk"), "{}", run.stderr);
    let state = run.stderr.split("STATE:").nth(1).and_then(|s| s.split("END").next()).unwrap_or_default();
    assert!(state.contains("s3load-state 1"), "the record is there: {}", run.stderr);
    // The second run, with room on the device again, fetches all three again.
    assert!(run.stderr.contains("AGAIN: 0"), "{}", run.stderr);
    assert_eq!(h.server.log().count("GetObject"), 6, "each file fetched again: {}", run.stderr);
}

// Case 32, continued: a machine crash after a run that did not flush
// (`--durability off`) may leave files the right size but zero-filled. Their
// records carry the boot they were written in and are suspect after a reboot.
#[tokio::test(flavor = "multi_thread")]
async fn case32_records_not_known_to_be_on_disk_are_not_trusted_after_a_reboot() {
    let h = Harness::new().await;
    for i in 0..3 {
        h.put(&format!("m/{i}.bin"), generate_bytes(1000, i));
    }
    let (off, flushed) = (h.path("off"), h.path("flushed"));
    h.run(&["--durability", "off", "sync", "s3://bucket/m/*", off.to_str().unwrap()]).await.assert_ok();
    h.run(&["--durability", "syncfs", "sync", "s3://bucket/m/*", flushed.to_str().unwrap()]).await.assert_ok();
    let boot = std::fs::read_to_string("/proc/sys/kernel/random/boot_id").unwrap().trim().to_string();
    // Same boot: the page cache holds the files; nothing is fetched again.
    h.server.log().clear();
    h.run(&["sync", "s3://bucket/m/*", off.to_str().unwrap()]).await.assert_ok();
    assert_eq!(h.server.log().count("GetObject"), 0);
    // A reboot, as the record sees it: another boot id.
    for dir in [&off, &flushed] {
        let state = dir.join(".s3load/state");
        let text = std::fs::read_to_string(&state).unwrap();
        std::fs::write(&state, text.replace(&boot, "00000000-0000-0000-0000-000000000000")).unwrap();
    }
    h.server.log().clear();
    h.run(&["sync", "s3://bucket/m/*", flushed.to_str().unwrap()]).await.assert_ok();
    assert_eq!(h.server.log().count("GetObject"), 0, "flushed by syncfs: trusted after a reboot");
    h.run(&["sync", "s3://bucket/m/*", off.to_str().unwrap()]).await.assert_ok();
    assert_eq!(h.server.log().count("GetObject"), 3, "never flushed: fetched again after a reboot");
}
