//! How many requests are in flight: sized to the link unless `--numworkers`
//! pins the count.

use s3load_testserver::{Shaping, generate_bytes};

use crate::harness::Harness;

/// Connections of 1 MB/s each on a link of 24 MB/s: 16 connections (the
/// start) move 16 MB/s, 32 fill the link, 64 bring nothing more.
fn shared_link() -> Shaping {
    Shaping { rate_per_connection: Some(1_000_000), total_rate: Some(24_000_000), ..Shaping::default() }
}

fn put_objects(h: &Harness, n: u64, mib: usize) -> Vec<(String, bytes::Bytes)> {
    (0..n)
        .map(|i| {
            let (key, data) = (format!("m/o{i}.bin"), generate_bytes(mib << 20, 40 + i));
            h.put(&key, data.clone());
            (format!("o{i}.bin"), data)
        })
        .collect()
}

// The count grows from 16 while the rate grows with it, and settles where
// the shared link is full: 32, where 64 moved no more. The server counts the
// bodies it served at once: more than the start, never the ceiling (128).
#[tokio::test(flavor = "multi_thread")]
async fn requests_in_flight_grow_with_the_rate_and_stop_where_the_link_is_full() {
    let h = Harness::with_shaping(shared_link()).await;
    let objects = put_objects(&h, 8, 12);
    let dest = h.path("d");
    let t = std::time::Instant::now();
    // The memory bound is set out of the way: this is the link's sizing alone.
    let args = ["--max-memory", "4G", "sync", "--part-size", "1", "s3://bucket/m/*", dest.to_str().unwrap()];
    let run = h.run(&args).await;
    eprintln!("96 MiB over a 24 MB/s link: {:.1} s", t.elapsed().as_secs_f64());
    run.assert_ok();
    for (name, data) in &objects {
        assert!(std::fs::read(dest.join(name)).unwrap() == *data, "{name}");
    }
    let peak = h.server.log().peak_bodies();
    assert!(peak > 16, "grew past the start while the rate grew: {peak} bodies at most\n{}", run.stderr);
    assert!(peak <= 64, "stopped once the link was full, far below the ceiling: {peak}\n{}", run.stderr);
    let settled = run
        .stderr
        .lines()
        .find(|l| l.contains("requests in flight sized to the link"))
        .unwrap_or_else(|| panic!("the level is reported once settled:\n{}", run.stderr));
    eprintln!("{settled}");
    assert!(settled.contains("requests=32") && settled.contains("tried=64"), "{settled}");
}

/// 32 MiB in 1 MiB parts from connections of 2 MB/s each, under `flag value`:
/// every file checked; the run and the most bodies the server served at once.
async fn slow_connections_under(flag: &str, value: &str) -> (crate::harness::Run, u64) {
    let h = Harness::with_shaping(Shaping { rate_per_connection: Some(2_000_000), ..Shaping::default() }).await;
    let objects = put_objects(&h, 4, 8);
    let dest = h.path("d");
    let run = h.run(&[flag, value, "sync", "--part-size", "1", "s3://bucket/m/*", dest.to_str().unwrap()]).await;
    run.assert_ok();
    for (name, data) in &objects {
        assert!(std::fs::read(dest.join(name)).unwrap() == *data, "{name}");
    }
    let peak = h.server.log().peak_bodies();
    (run, peak)
}

// `--max-memory` keeps the count where it is once more requests would not
// fit: below this process's memory at the start, nothing is added, though
// every request waits and more connections would move more.
#[tokio::test(flavor = "multi_thread")]
async fn no_request_is_added_past_max_memory() {
    let (run, peak) = slow_connections_under("--max-memory", "1MiB").await;
    assert!((1..=16).contains(&peak), "{peak} bodies at once: more than the start\n{}", run.stderr);
    let line = run.stderr.lines().find(|l| l.contains("sized to the link")).unwrap_or_default();
    assert!(line.contains("more would pass --max-memory") && line.contains("requests=16"), "{}", run.stderr);
}

// Where this process's memory cannot be read (`/proc` hidden), a warning
// says so and each request is priced at the least, from nothing: 20 MiB is
// room for 16, the start, and no more.
#[tokio::test(flavor = "multi_thread")]
async fn a_hidden_proc_prices_requests_at_the_least_and_says_so() {
    let h = Harness::with_shaping(Shaping { rate_per_connection: Some(2_000_000), ..Shaping::default() }).await;
    let objects = put_objects(&h, 4, 8);
    let dest = h.path("d");
    let script = "mount -t tmpfs none /proc || exit 97; exec \"$@\"";
    let args = ["--max-memory", "20MiB", "sync", "--part-size", "1", "s3://bucket/m/*", dest.to_str().unwrap()];
    let run = h.run_in_shell(&["unshare", "-Urm"], script, &args).await;
    run.assert_ok();
    for (name, data) in &objects {
        assert!(std::fs::read(dest.join(name)).unwrap() == *data, "{name}");
    }
    assert!(run.stderr.contains("cannot read this process's memory"), "{}", run.stderr);
    let peak = h.server.log().peak_bodies();
    assert!((1..=16).contains(&peak), "{peak} bodies at once\n{}", run.stderr);
}

// `--numworkers` pins the count: never more bodies at once, whatever the rate.
#[tokio::test(flavor = "multi_thread")]
async fn numworkers_pins_the_requests_in_flight() {
    let (run, peak) = slow_connections_under("--numworkers", "6").await;
    assert!((1..=6).contains(&peak), "{peak} bodies at once under --numworkers 6");
    assert!(!run.stderr.contains("requests in flight"), "{}", run.stderr);
}

// `--numworkers` and `--concurrency` refuse zero and what is not a count,
// before any request; a huge count is only a ceiling (no overflow).
#[tokio::test(flavor = "multi_thread")]
async fn bad_request_counts_are_usage_errors_and_a_huge_one_is_harmless() {
    let h = Harness::new().await;
    h.put("m/a.bin", generate_bytes(3 << 20, 1));
    let dest = h.path("d");
    for bad in ["--numworkers=0", "--numworkers=-3", "--numworkers=many"] {
        let run = h.run(&[bad, "sync", "s3://bucket/m/*", dest.to_str().unwrap()]).await;
        assert_eq!(run.code, 2, "{bad:?}: {}", run.stderr);
        assert!(run.stderr.contains("numworkers"), "{bad:?}: the flag is named: {}", run.stderr);
    }
    for bad in ["0", "x"] {
        let run = h.run(&["sync", "-c", bad, "s3://bucket/m/*", dest.to_str().unwrap()]).await;
        assert_eq!(run.code, 2, "-c {bad}: {}", run.stderr);
        assert!(run.stderr.contains("concurrency"), "-c {bad}: {}", run.stderr);
    }
    for (bad, named) in [
        (&["--max-memory", "lots"][..], "--max-memory \"lots\""),
        (&["--max-memory", "512K"], "at least 1MiB"),
        (&["--max-memory", "1G", "--numworkers", "8"], "give one of them"),
    ] {
        let mut args = bad.to_vec();
        args.extend(["sync", "s3://bucket/m/*", dest.to_str().unwrap()]);
        let run = h.run(&args).await;
        assert_eq!(run.code, 2, "{bad:?}: {}", run.stderr);
        assert!(run.stderr.contains(named), "{bad:?}: {}", run.stderr);
    }
    assert!(h.server.log().records().is_empty(), "no request sent");
    assert!(!dest.exists());
    let run = h
        .run(&["--numworkers", "18446744073709551615", "sync", "-p", "1", "s3://bucket/m/*", dest.to_str().unwrap()])
        .await;
    run.assert_ok();
    assert!(std::fs::read(dest.join("a.bin")).unwrap() == generate_bytes(3 << 20, 1));
}
