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
