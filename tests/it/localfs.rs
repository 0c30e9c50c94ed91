//! The destination filesystem: a full disk (reliability case 10) and durability modes.

use std::time::Duration;

use s3load_testserver::{Fault, Rule, StoredObject, When, generate_bytes};

use crate::harness::{BUCKET, Harness, files_under, resident_pages, takes_direct, verified_by};

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

/// `--write-mode direct` on a disk: objects fetched in several ranges go to
/// the disk past the page cache, checked against their MD5 ETag or checksum
/// from the buffers written, byte-exact even where a body broke off the block
/// grid and the rest was written through the cache; the same run buffered
/// leaves them cached.
#[tokio::test(flavor = "multi_thread")]
async fn direct_writes_are_exact_checked_and_leave_large_objects_out_of_the_page_cache() {
    let h = Harness::new().await;
    if !takes_direct(h.dir.path()) {
        eprintln!("the test directory's filesystem does not take O_DIRECT: nothing to test here");
        return;
    }
    let now = std::time::SystemTime::now();
    let parts: Vec<bytes::Bytes> =
        (0..4).map(|i| generate_bytes(if i < 3 { 2 * MIB } else { MIB / 2 + 3 }, 40 + i)).collect();
    h.server.store().put_object(BUCKET, "d/legacy.bin", StoredObject::multipart(&parts, now, None, false));
    let checked = generate_bytes(5 * MIB + 123, 50);
    h.put("d/checked.bin", checked.clone());
    h.put("d/config.json", generate_bytes(3000, 51));
    // The second part's body breaks after 300,000 bytes, off the block grid.
    let cut = Rule::new("GetObject", When::Nth(2), Fault::CutAfter(300_000)).for_key("d/legacy.bin");
    h.server.faults().add(cut);
    let dest = h.path("direct");
    let run = h
        .run(&[
            "--json",
            "--log",
            "debug",
            "--write-mode",
            "direct",
            "--verify",
            "require",
            "cp",
            "-p",
            "1",
            "s3://bucket/d/*",
            dest.to_str().unwrap(),
        ])
        .await;
    run.assert_ok();
    assert!(run.stderr.contains("writing past the page cache (O_DIRECT)"), "{}", run.stderr);
    // The MD5 of legacy.bin's parts came from the buffers written, not from
    // reading the disk (the one line at the end of the run says how much).
    let hashed = run.stderr.lines().find(|l| l.contains("bytes hashed in order")).expect("the hashing line");
    let field = |name: &str| -> u64 {
        let at = hashed.find(&format!("{name}=")).unwrap_or_else(|| panic!("{name} in {hashed}"));
        hashed[at + name.len() + 1..].split(|c: char| !c.is_ascii_digit()).next().unwrap().parse().unwrap()
    };
    assert!(field("from_buffers") >= 6 * MIB as u64, "{hashed}");
    assert!(field("read_back") <= 256 << 10, "{hashed}");
    let mut how = verified_by(&run);
    how.sort();
    let by = |k: &str, v: &str| (format!("s3://bucket/d/{k}"), v.to_string());
    assert_eq!(how[1], by("config.json", "CRC64NVME"));
    assert_eq!(how[2], by("legacy.bin", "MD5"));
    assert_eq!(how[0].0, "s3://bucket/d/checked.bin");
    let resident = |name: &str| resident_pages(&dest.join(name));
    // At most the buffer written after the break (256 KiB, 64 pages) and a
    // page at each end of a range stays cached.
    let (cached, pages) = resident("legacy.bin");
    assert!(cached <= 64 + 8, "{cached} of {pages} pages of legacy.bin cached");
    let (cached, pages) = resident("checked.bin");
    assert!(cached <= 8, "{cached} of {pages} pages of checked.bin cached");
    assert!(std::fs::read(dest.join("legacy.bin")).unwrap() == parts.concat());
    assert!(std::fs::read(dest.join("checked.bin")).unwrap() == checked);

    // Buffered, the same files are in the page cache: the measure above
    // can tell the two apart.
    let buffered = h.path("buffered");
    h.run(&["cp", "-p", "1", "s3://bucket/d/*", buffered.to_str().unwrap()]).await.assert_ok();
    let (cached, pages) = resident_pages(&buffered.join("checked.bin"));
    assert!(cached * 10 >= pages * 9, "{cached} of {pages} pages cached when buffered");
}

/// `--write-mode direct` on tmpfs: older kernels refuse `O_DIRECT` there
/// (the writes then go through the page cache), newer ones take it (tmpfs
/// is the page cache); either way the files are exact.
#[tokio::test(flavor = "multi_thread")]
async fn direct_writes_on_tmpfs_are_exact_whether_or_not_it_takes_them() {
    let Ok(shm) = tempfile::tempdir_in("/dev/shm") else {
        eprintln!("no /dev/shm here: nothing to test");
        return;
    };
    let h = Harness::new().await;
    let data = generate_bytes(3 * MIB + 5, 60);
    h.put("t/big.bin", data.clone());
    let dest = shm.path().join("out");
    let run = h
        .run(&["--log", "debug", "--write-mode", "direct", "cp", "-p", "1", "s3://bucket/t/*", dest.to_str().unwrap()])
        .await;
    run.assert_ok();
    let said = |s: &str| run.stderr.contains(s);
    // A mode that does not exist is refused before anything moves.
    let bad = h.run(&["--write-mode", "fast", "cp", "s3://bucket/t/*", h.path("bad").to_str().unwrap()]).await;
    assert_eq!(bad.code, 2, "{}", bad.stderr);
    assert!(bad.stderr.contains("--write-mode"), "{}", bad.stderr);
    assert!(!h.path("bad").exists(), "nothing written");
    assert!(said("no direct writes; writing through the page cache") || said("writing past the page cache (O_DIRECT)"));
    assert!(std::fs::read(dest.join("big.bin")).unwrap() == data);
}
