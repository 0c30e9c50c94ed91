//! Downloads: single objects, prefixes, wildcards, nesting, sizes, listings, sync.

use std::time::{Duration, SystemTime};

use s3load_testserver::{generate_bytes, safetensors_bytes};

use crate::harness::{BUCKET, Harness, files_under};

#[tokio::test(flavor = "multi_thread")]
async fn cp_single_object_to_a_file_and_into_a_directory() {
    let h = Harness::new().await;
    h.put("models/m/config.json", &b"{\"a\":1}"[..]);

    let file = h.path("out.json");
    h.run(&["cp", "s3://bucket/models/m/config.json", file.to_str().unwrap()]).await.assert_ok();
    assert_eq!(std::fs::read(&file).unwrap(), b"{\"a\":1}");

    let dir = h.path("d");
    std::fs::create_dir(&dir).unwrap();
    let run = h.run(&["cp", "s3://bucket/models/m/config.json", dir.to_str().unwrap()]).await;
    run.assert_ok();
    assert_eq!(std::fs::read(dir.join("config.json")).unwrap(), b"{\"a\":1}");
    let expected = format!("cp s3://bucket/models/m/config.json {}", dir.join("config.json").display());
    assert_eq!(run.stdout_lines(), vec![expected.as_str()]);
}

#[tokio::test(flavor = "multi_thread")]
async fn seed_design_sync_line_pulls_the_version_prefix_only() {
    // s3load sync s3://my-ml-bucket/model-artifacts/my-model-1.2.3/* /model-artifacts/my-model-1.2.3
    let h = Harness::new().await;
    h.server.store().create_bucket("my-ml-bucket");
    let put = |k: &str, v: &[u8]| {
        h.server.store().put("my-ml-bucket", k, v.to_vec());
    };
    put("model-artifacts/my-model-1.2.3/config.json", b"cfg");
    put("model-artifacts/my-model-1.2.3/model.safetensors", &safetensors_bytes(300_000, 1));
    put("model-artifacts/my-model-1.2.3/tokenizer/vocab.txt", b"a b c");
    put("model-artifacts/my-model-1.2.30/config.json", b"other version");
    put("model-artifacts/my-model-1.2.4/config.json", b"other version");

    let dest = h.path("model-artifacts/my-model-1.2.3");
    let run = h.run(&["sync", "s3://my-ml-bucket/model-artifacts/my-model-1.2.3/*", dest.to_str().unwrap()]).await;
    run.assert_ok();
    assert_eq!(files_under(&dest), vec!["config.json", "model.safetensors", "tokenizer/vocab.txt"]);
    assert_eq!(std::fs::read(dest.join("model.safetensors")).unwrap(), safetensors_bytes(300_000, 1));
    assert_eq!(std::fs::read(dest.join("tokenizer/vocab.txt")).unwrap(), b"a b c");
}

#[tokio::test(flavor = "multi_thread")]
async fn prefix_with_trailing_slash_and_nested_keys() {
    let h = Harness::new().await;
    h.put("p/a", &b"1"[..]);
    h.put("p/x/y/z/deep.bin", &b"22"[..]);
    h.put("p/x/y/other", &b"333"[..]);
    h.put("p/dir/", &b""[..]); // directory marker: no file
    h.put("q/not-me", &b"4"[..]);
    let dest = h.path("out");
    h.run(&["cp", "s3://bucket/p/", dest.to_str().unwrap()]).await.assert_ok();
    assert_eq!(files_under(&dest), vec!["a", "x/y/other", "x/y/z/deep.bin"]);
    assert_eq!(std::fs::read(dest.join("x/y/z/deep.bin")).unwrap(), b"22");
}

#[tokio::test(flavor = "multi_thread")]
async fn wildcard_in_the_middle_keeps_the_part_after_the_last_slash() {
    let h = Harness::new().await;
    h.put("models/m-1/config.json", &b"1"[..]);
    h.put("models/m-2/config.json", &b"2"[..]);
    h.put("models/m-2/weights.bin", &b"w"[..]);
    let dest = h.path("out");
    h.run(&["cp", "s3://bucket/models/m-*/config.json", dest.to_str().unwrap()]).await.assert_ok();
    assert_eq!(files_under(&dest), vec!["m-1/config.json", "m-2/config.json"]);
}

#[tokio::test(flavor = "multi_thread")]
async fn empty_object_becomes_an_empty_file_without_a_ranged_get() {
    let h = Harness::new().await;
    h.put("p/empty", &b""[..]);
    let dest = h.path("out");
    h.run(&["sync", "s3://bucket/p/*", dest.to_str().unwrap()]).await.assert_ok();
    assert_eq!(std::fs::metadata(dest.join("empty")).unwrap().len(), 0);
    assert!(h.server.log().records().iter().all(|r| r.range.is_none()), "no Range request for a 0-byte object");
}

#[tokio::test(flavor = "multi_thread")]
async fn large_object_is_fetched_in_pinned_parallel_ranges_and_is_byte_exact() {
    let h = Harness::new().await;
    let size = 40 * 1024 * 1024 + 12345;
    let data = safetensors_bytes(size, 7);
    let obj = h.server.store().put(BUCKET, "big/shard.safetensors", data.clone());
    let dest = h.path("out");
    h.run(&["cp", "--part-size", "1", "--concurrency", "8", "s3://bucket/big/*", dest.to_str().unwrap()])
        .await
        .assert_ok();
    let got = std::fs::read(dest.join("shard.safetensors")).unwrap();
    assert_eq!(got.len(), size);
    assert!(got == data, "content differs");

    let gets: Vec<_> = h.server.log().records().into_iter().filter(|r| r.op == "GetObject").collect();
    assert_eq!(gets.len(), 41, "one GET per 1 MiB part");
    let mut starts: Vec<u64> = gets.iter().map(|g| g.range.expect("ranged").0).collect();
    starts.sort();
    assert_eq!(starts, (0..41).map(|i| i * (1 << 20)).collect::<Vec<_>>());
    assert!(gets.iter().all(|g| g.if_match.as_deref() == Some(obj.etag.as_str())), "every part pinned with If-Match");
    assert_eq!(h.server.log().body_bytes(), size as u64, "each byte fetched once");
}

#[tokio::test(flavor = "multi_thread")]
async fn more_than_two_listing_pages_are_all_read() {
    let h = Harness::new().await;
    for i in 0..2100 {
        h.put(&format!("many/{i:05}.json"), format!("{i}").into_bytes());
    }
    let dest = h.path("out");
    let run = h.run(&["sync", "s3://bucket/many/*", dest.to_str().unwrap()]).await;
    run.assert_ok();
    let files = files_under(&dest);
    assert_eq!(files.len(), 2100);
    assert_eq!(std::fs::read_to_string(dest.join("02099.json")).unwrap(), "2099");
    assert!(h.server.log().count("ListObjectsV2") >= 3, "2100 keys need three pages of 1000");
    assert_eq!(run.stdout_lines().len(), 2100, "one cp line per object");
}

#[tokio::test(flavor = "multi_thread")]
async fn resync_of_an_unchanged_tree_makes_no_get_and_copies_nothing() {
    let h = Harness::new().await;
    for i in 0..50 {
        h.put(&format!("t/{i}/f.bin"), generate_bytes(1000 + i, i as u64));
    }
    let dest = h.path("out");
    h.run(&["sync", "s3://bucket/t/*", dest.to_str().unwrap()]).await.assert_ok();
    h.server.log().clear();
    let again = h.run(&["sync", "s3://bucket/t/*", dest.to_str().unwrap()]).await;
    again.assert_ok();
    assert_eq!(h.server.log().count("GetObject"), 0, "a no-op re-sync makes no GET");
    assert!(again.stdout.is_empty(), "nothing copied: {}", again.stdout);
    assert!(again.stderr.contains("50 up to date"), "{}", again.stderr);
}

#[tokio::test(flavor = "multi_thread")]
async fn sync_copies_what_changed_size_or_is_newer_and_size_only_ignores_time() {
    let h = Harness::new().await;
    let t0 = SystemTime::now() - Duration::from_secs(3600);
    h.server.store().put_at(BUCKET, "s/a", &b"aaaa"[..], t0);
    h.server.store().put_at(BUCKET, "s/b", &b"bbbb"[..], t0);
    h.server.store().put_at(BUCKET, "s/c", &b"cccc"[..], t0);
    let dest = h.path("out");
    h.run(&["sync", "s3://bucket/s/*", dest.to_str().unwrap()]).await.assert_ok();
    let mtime = std::fs::metadata(dest.join("a")).unwrap().modified().unwrap();
    let lm = h.server.store().get(BUCKET, "s/a").unwrap().last_modified;
    let secs = |t: SystemTime| t.duration_since(SystemTime::UNIX_EPOCH).unwrap().as_secs();
    assert_eq!(secs(mtime), secs(lm), "local mtime is the object's LastModified");

    h.server.store().put_at(BUCKET, "s/a", &b"aaaaa"[..], t0); // size differs
    h.server.store().put(BUCKET, "s/b", &b"BBBB"[..]); // same size, newer
    let size_only = h.run(&["sync", "--size-only", "s3://bucket/s/*", dest.to_str().unwrap()]).await;
    size_only.assert_ok();
    assert_eq!(size_only.stdout_lines().len(), 1, "{}", size_only.stdout);
    assert_eq!(std::fs::read(dest.join("a")).unwrap(), b"aaaaa");
    assert_eq!(std::fs::read(dest.join("b")).unwrap(), b"bbbb", "--size-only keeps a same-size file");

    let normal = h.run(&["sync", "s3://bucket/s/*", dest.to_str().unwrap()]).await;
    normal.assert_ok();
    assert_eq!(normal.stdout_lines().len(), 1, "{}", normal.stdout);
    assert_eq!(std::fs::read(dest.join("b")).unwrap(), b"BBBB", "newer object replaces the file");
}

#[tokio::test(flavor = "multi_thread")]
async fn dry_run_prints_the_plan_and_writes_nothing() {
    let h = Harness::new().await;
    h.put("d/a", &b"1"[..]);
    h.put("d/b/c", &b"2"[..]);
    let dest = h.path("out");
    let run = h.run(&["--dry-run", "sync", "s3://bucket/d/*", dest.to_str().unwrap()]).await;
    run.assert_ok();
    assert_eq!(run.stdout_lines().len(), 2);
    assert!(!dest.exists());
    assert_eq!(h.server.log().count("GetObject"), 0);
}

#[tokio::test(flavor = "multi_thread")]
async fn json_output_has_one_object_per_operation() {
    let h = Harness::new().await;
    h.put("j/a", &b"12345"[..]);
    let dest = h.path("out");
    let run = h.run(&["--json", "cp", "s3://bucket/j/*", dest.to_str().unwrap()]).await;
    run.assert_ok();
    let v: serde_json::Value = serde_json::from_str(run.stdout.trim()).expect("one JSON line");
    assert_eq!(v["operation"], "cp");
    assert_eq!(v["success"], true);
    assert_eq!(v["source"], "s3://bucket/j/a");
    assert_eq!(v["object"]["size"], 5);
}

#[tokio::test(flavor = "multi_thread")]
async fn ls_shows_prefixes_and_objects_as_text_or_json() {
    let h = Harness::new().await;
    h.put("l/a.txt", &b"123"[..]);
    h.put("l/sub/b.txt", &b"4"[..]);
    let run = h.run(&["ls", "s3://bucket/l/"]).await;
    run.assert_ok();
    let lines = run.stdout_lines();
    assert_eq!(lines.len(), 2, "{}", run.stdout);
    assert!(lines.iter().any(|l| l.contains("DIR") && l.ends_with("sub/")));
    assert!(lines.iter().any(|l| l.ends_with(" 3  a.txt")));
    let buckets = h.run(&["ls"]).await;
    buckets.assert_ok();
    assert_eq!(buckets.stdout.trim(), "s3://bucket");

    // With --json, one object a line, as s5cmd's ls prints them.
    let run = h.run(&["--json", "ls", "s3://bucket/l/"]).await;
    run.assert_ok();
    let lines: Vec<serde_json::Value> =
        run.stdout_lines().iter().map(|l| serde_json::from_str(l).expect("a JSON line")).collect();
    assert_eq!(lines.len(), 2, "{}", run.stdout);
    let dir = lines.iter().find(|v| v["type"] == "directory").expect("the directory");
    assert_eq!(dir["key"], "s3://bucket/l/sub/");
    let file = lines.iter().find(|v| v["type"] == "file").expect("the file");
    assert_eq!((file["key"].as_str(), file["size"].as_u64()), (Some("s3://bucket/l/a.txt"), Some(3)));
    assert!(file["last_modified"].as_str().is_some_and(|t| t.ends_with('Z')), "{file}");
    let buckets = h.run(&["--json", "ls"]).await;
    buckets.assert_ok();
    let v: serde_json::Value = serde_json::from_str(buckets.stdout.trim()).expect("one JSON line");
    assert_eq!(v["name"], "bucket");
}

#[tokio::test(flavor = "multi_thread")]
async fn without_a_configured_region_the_bucket_is_asked_for_its_own() {
    let h = Harness::new().await;
    h.server.store().set_region("eu-bucket", "eu-west-1");
    h.server.store().put("eu-bucket", "m/config.json", b"{}".to_vec());
    let endpoint = h.server.endpoint_url();
    let dest = h.path("out");
    let env: Vec<(&str, String)> = h.server.client_env().into_iter().filter(|(k, _)| *k != "AWS_REGION").collect();
    let args = ["--endpoint-url", endpoint.as_str(), "cp", "s3://eu-bucket/m/*", dest.to_str().unwrap()];
    h.run_env(&args, &env).await.assert_ok();
    assert_eq!(std::fs::read(dest.join("config.json")).unwrap(), b"{}");
    assert_eq!(h.server.log().count("HeadBucket"), 1, "asked once");
    let signed = h.server.log().signed_regions();
    assert!(!signed.is_empty() && signed.iter().all(|(_, r)| r == "eu-west-1"), "{signed:?}");

    // A configured region wins and nothing is asked.
    h.server.log().clear();
    let args = [
        "--endpoint-url",
        endpoint.as_str(),
        "--region",
        "ap-south-1",
        "cp",
        "s3://eu-bucket/m/*",
        dest.to_str().unwrap(),
    ];
    h.run_env(&args, &env).await.assert_ok();
    assert_eq!(h.server.log().count("HeadBucket"), 0);
}

// `--limit-rate`: the run's bytes per second, all connections together. Eight
// objects at once share 64 KiB/s (8 KiB/s each, below the minimum body rate
// that cuts a trickling connection): the run takes at least the time the rate
// allows, and no connection is cut. (Here each body sits whole in the socket
// buffers, so the stall clocks never wait on the network: that the budget's
// own waits are kept off them is not proven by this test.) Nonsense rates
// are refused before anything moves (uploads: tests/it/upload.rs).
#[tokio::test(flavor = "multi_thread")]
async fn limit_rate_bounds_the_runs_bytes_per_second() {
    let h = Harness::new().await;
    let mut want = Vec::new();
    for i in 0..8 {
        let data = generate_bytes(48 << 10, i);
        h.put(&format!("r/{i}.bin"), data.clone());
        want.push(data);
    }
    let dest = h.path("out");
    let started = std::time::Instant::now();
    let run =
        h.run(&["--limit-rate", "64K", "--stall-timeout", "1s", "cp", "s3://bucket/r/*", dest.to_str().unwrap()]).await;
    let took = started.elapsed();
    run.assert_ok();
    for (i, data) in want.iter().enumerate() {
        assert_eq!(&std::fs::read(dest.join(format!("{i}.bin"))).unwrap(), data);
    }
    // 384 KiB at 64 KiB/s: 6 s, less the tenth of a second of burst.
    assert!(took >= std::time::Duration::from_millis(5_800), "took {took:?}");
    assert!(!run.stderr.contains("retrying"), "no connection was cut: {}", run.stderr);

    for bad in ["0", "fast", "-1M", "10X"] {
        let flag = format!("--limit-rate={bad}");
        let r = h.run(&[&flag, "cp", "s3://bucket/r/*", h.path("bad").to_str().unwrap()]).await;
        assert_eq!(r.code, 2, "{bad}: {}", r.stderr);
        assert!(r.stderr.contains("--limit-rate"), "{bad}: {}", r.stderr);
    }
    // From the environment: empty is no limit, and commands that download
    // nothing do not read it.
    let with_env = |value: &str| {
        let mut env = h.server.client_env();
        env.push(("S3LOAD_LIMIT_RATE", value.to_string()));
        env
    };
    let endpoint = h.server.endpoint_url();
    let again = h.path("again");
    let r = h
        .run_env(&["--endpoint-url", &endpoint, "cp", "s3://bucket/r/*", again.to_str().unwrap()], &with_env(""))
        .await;
    r.assert_ok();
    let ls = h.run_env(&["--endpoint-url", &endpoint, "ls", "s3://bucket/r/"], &with_env("0")).await;
    ls.assert_ok();
    let bad = h.run_env(&["--endpoint-url", &endpoint, "cat", "s3://bucket/r/0.bin"], &with_env("0")).await;
    assert_eq!(bad.code, 2, "{}", bad.stderr);
    assert!(bad.stderr.contains("S3LOAD_LIMIT_RATE"), "{}", bad.stderr);
}

// A straggler: one GET body in thirty served at 64 KB/s while the rest come at
// loopback speed. Its 1 MiB range alone would take 16 s; it is dropped once it
// is far behind its peers and the rest of its range requested again from its
// first missing byte, on a new connection. (The server's log shows the
// request again; the time is printed, not judged.)
#[tokio::test(flavor = "multi_thread")]
async fn a_straggling_range_is_requested_again_from_where_it_stopped() {
    let straggler = s3load_testserver::Straggler { every: 30, rate: 64_000 };
    let h =
        Harness::with_shaping(s3load_testserver::Shaping { straggler: Some(straggler), ..Default::default() }).await;
    let data = generate_bytes(40 << 20, 7);
    h.put("m/big.bin", data.clone());
    let dest = h.path("d");
    let t = std::time::Instant::now();
    let target = dest.join("big.bin");
    let run = h.run(&["cp", "--part-size", "1", "s3://bucket/m/big.bin", target.to_str().unwrap()]).await;
    eprintln!("40 MiB with one straggling range: {:.1} s", t.elapsed().as_secs_f64());
    run.assert_ok();
    assert!(std::fs::read(dest.join("big.bin")).unwrap() == data);
    assert!(run.stderr.contains("requesting the rest of a straggling range again"), "{}", run.stderr);
    let gets: Vec<u64> = h
        .server
        .log()
        .records()
        .iter()
        .filter(|r| r.op == "GetObject")
        .filter_map(|r| r.range.map(|(start, _)| start))
        .collect();
    let again: Vec<&u64> = gets.iter().filter(|&&start| start % (1 << 20) != 0).collect();
    assert_eq!(again.len(), 1, "one range requested again, from inside it: {gets:?}");
    assert_eq!(gets.len(), 41);
}

// No straggler where every connection waits alike for its first byte (a
// distant or busy server): a body's rate counts from its first byte, so the
// latency does not make every body look slow when it is first checked.
#[tokio::test(flavor = "multi_thread")]
async fn a_long_wait_for_the_first_byte_alike_for_all_is_not_straggling() {
    let shaping = s3load_testserver::Shaping {
        first_byte_delay: Duration::from_millis(1100),
        rate_per_connection: Some(20_000_000),
        ..s3load_testserver::Shaping::default()
    };
    let h = Harness::with_shaping(shaping).await;
    let data = generate_bytes(16 << 20, 8);
    h.put("m/big.bin", data.clone());
    let target = h.path("d").join("big.bin");
    // Four waves of four 1 MiB ranges: the third is checked with eight
    // bodies finished to compare with.
    let args = ["--numworkers", "4", "cp", "--part-size", "1", "s3://bucket/m/big.bin", target.to_str().unwrap()];
    let run = h.run(&args).await;
    run.assert_ok();
    assert!(std::fs::read(&target).unwrap() == data);
    assert!(!run.stderr.contains("straggling"), "{}", run.stderr);
    assert_eq!(h.server.log().count("GetObject"), 16);
}
