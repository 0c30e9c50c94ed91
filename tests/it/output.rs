//! The output contract: stdout carries data only; progress and logs go to
//! stderr, as text without colour codes off a terminal or as JSON lines; the
//! summary goes to `--summary-file` as one JSON object.

use std::time::Duration;

use s3load_testserver::{Fault, Rule, Shaping, When, generate_bytes};

use crate::harness::Harness;

fn summary(path: &std::path::Path) -> serde_json::Value {
    serde_json::from_str(&std::fs::read_to_string(path).expect("summary written")).expect("summary is JSON")
}

#[tokio::test(flavor = "multi_thread")]
async fn summary_file_says_what_happened_on_success_partial_failure_and_setup_error() {
    let h = Harness::new().await;
    h.put("m/a.json", &b"{}"[..]);
    h.put("m/b.bin", generate_bytes(5000, 1));
    let dest = h.path("out");
    let file = h.path("termination-log");
    let f = file.to_str().unwrap();
    h.run(&["--summary-file", f, "sync", "s3://bucket/m/*", dest.to_str().unwrap()]).await.assert_ok();
    let s = summary(&file);
    assert_eq!(s["result"], "success");
    assert_eq!(s["exit_code"], 0);
    assert_eq!(s["operation"], "sync");
    assert_eq!(s["source"], "s3://bucket/m/*");
    assert_eq!(s["objects"]["copied"], 2);
    assert_eq!(s["objects"]["failed"], 0);
    assert_eq!(s["bytes"], 5002);
    assert!(s.get("shard").is_none(), "an unsharded run names no shard: {s}");

    h.put("m/c.bin", &b"new"[..]);
    h.server.faults().add(
        Rule::new("GetObject", When::Always, Fault::Status { status: 403, code: "AccessDenied" }).for_key("m/c.bin"),
    );
    let run = h.run(&["--summary-file", f, "sync", "s3://bucket/m/*", dest.to_str().unwrap()]).await;
    assert_eq!(run.code, 1);
    let s = summary(&file);
    assert_eq!(s["result"], "partial_failure");
    assert_eq!(s["objects"]["failed"], 1);
    assert_eq!(s["objects"]["up_to_date"], 2);

    let run = h.run(&["--summary-file", f, "sync", "s3://no-such-bucket/m/*", dest.to_str().unwrap()]).await;
    assert_eq!(run.code, 3);
    let s = summary(&file);
    assert_eq!(s["result"], "error");
    assert!(s["error"].as_str().unwrap().contains("no-such-bucket"), "{s}");
}

#[tokio::test(flavor = "multi_thread")]
async fn progress_lines_go_to_stderr_as_text_or_json_and_never_to_stdout() {
    // Slow enough that a few progress lines are printed.
    let shaping =
        Shaping { first_byte_delay: Duration::ZERO, rate_per_connection: Some(4_000_000), ..Shaping::default() };
    let h = Harness::with_shaping(shaping).await;
    h.put("m/w.bin", generate_bytes(6 << 20, 1));
    let dest = h.path("out");
    let run = h
        .run(&[
            "--progress",
            "log",
            "--progress-interval",
            "200ms",
            "--log",
            "debug",
            "cp",
            "s3://bucket/m/w.bin",
            dest.to_str().unwrap(),
        ])
        .await;
    run.assert_ok();
    assert_eq!(run.stdout_lines().len(), 1, "stdout has the cp line only: {}", run.stdout);
    assert!(run.stdout.starts_with("cp s3://bucket/m/w.bin"), "{}", run.stdout);
    assert!(run.stderr.lines().filter(|l| l.starts_with("progress: ")).count() >= 2, "{}", run.stderr);
    assert!(!run.stderr.contains('\u{1b}'), "no colour codes off a terminal");

    std::fs::remove_file(&dest).unwrap();
    let run = h
        .run(&[
            "--log-format",
            "json",
            "--progress",
            "log",
            "--progress-interval",
            "200ms",
            "cp",
            "s3://bucket/m/w.bin",
            dest.to_str().unwrap(),
        ])
        .await;
    run.assert_ok();
    let mut progress = 0;
    for line in run.stderr.lines() {
        let v: serde_json::Value = serde_json::from_str(line).unwrap_or_else(|e| panic!("not JSON ({e}): {line}"));
        if v["message"] == "progress" {
            progress += 1;
            assert_eq!(v["bytes_total"], 6 << 20);
            assert_eq!(v["objects_total"], 1);
            assert!(v["bytes_done"].as_u64().is_some() && v["bytes_per_second"].as_u64().is_some(), "{v}");
            // Shaped as every other line on stderr.
            assert!(v["level"] == "INFO" && v["timestamp"].is_string(), "{v}");
        }
    }
    assert!(progress >= 2, "{}", run.stderr);
}

#[tokio::test(flavor = "multi_thread")]
async fn on_a_terminal_the_total_and_the_largest_objects_get_bars_that_are_cleared_at_the_end() {
    // Two 70 MiB objects at 10 MB/s per connection: about a second of bars.
    let shaping =
        Shaping { first_byte_delay: Duration::ZERO, rate_per_connection: Some(10_000_000), ..Shaping::default() };
    let h = Harness::with_shaping(shaping).await;
    h.put("m/big-0.bin", generate_bytes(70 << 20, 1));
    h.put("m/big-1.bin", generate_bytes(70 << 20, 2));
    h.put("m/small.json", &b"{}"[..]);
    let dest = h.path("out");
    let typescript = h.path("typescript");
    // `script` runs s3load on a pseudo-terminal and records what it drew.
    let line = format!(
        "{} --endpoint-url {} --progress auto cp 's3://bucket/m/*' {}",
        env!("CARGO_BIN_EXE_s3load"),
        h.server.endpoint_url(),
        dest.display()
    );
    let mut env = h.server.client_env();
    env.push(("TERM", "xterm-256color".to_string()));
    let run = h.command("script", &["-qefc", &line, typescript.to_str().unwrap()], &env).await;
    run.assert_ok();
    let drawn = String::from_utf8_lossy(&std::fs::read(&typescript).unwrap()).into_owned();
    let frames: Vec<&str> = drawn.split(['\r', '\n']).collect();
    assert!(
        frames.iter().any(|f| f.contains(" eta ")),
        "the total bar (rate, ETA) was drawn:\n{}",
        drawn.escape_debug()
    );
    for name in ["m/big-0.bin", "m/big-1.bin"] {
        assert!(frames.iter().any(|f| f.contains(name) && f.contains("/70.00 MiB")), "{name} had a bar of its own");
    }
    assert!(!frames.iter().any(|f| f.contains("m/small.json") && f.contains("MiB/")), "small objects get no bar");
    let end = drawn.rfind("done: 3 copied").expect("summary printed");
    assert!(drawn[..end].rfind("\u{1b}[2K").is_some(), "the bars were cleared before the summary");
    assert!(!drawn[end..].contains(" eta "), "no bar after the summary");
}

#[tokio::test(flavor = "multi_thread")]
async fn the_last_line_says_what_happened_on_a_no_op_a_dry_run_and_when_everything_failed() {
    let h = Harness::new().await;
    for i in 0..3 {
        h.put(&format!("m/f{i}.bin"), generate_bytes(1000, i));
    }
    let dest = h.path("out");
    let d = dest.to_str().unwrap();
    let dry = h.run(&["--dry-run", "sync", "s3://bucket/m/*", d]).await;
    dry.assert_ok();
    assert!(dry.stderr.contains("dry run: 3 to copy (2.9 KiB); nothing was changed"), "{}", dry.stderr);
    let first = h.run(&["sync", "s3://bucket/m/*", d]).await;
    first.assert_ok();
    assert!(first.stderr.contains("done: 3 copied (2.9 KiB"), "{}", first.stderr);
    let again = h.run(&["sync", "--delete", "s3://bucket/m/*", d]).await;
    again.assert_ok();
    let last = again.stderr.lines().last().unwrap_or_default();
    assert!(last.starts_with("nothing to copy: 3 up to date, in "), "{}", again.stderr);
    assert!(!again.stderr.contains("B/s"), "no rate for a run that moved nothing: {}", again.stderr);

    h.server.faults().add(Rule::new("GetObject", When::Always, Fault::Status { status: 403, code: "AccessDenied" }));
    let other = h.path("other");
    let failed = h.run(&["sync", "s3://bucket/m/*", other.to_str().unwrap()]).await;
    assert_eq!(failed.code, 1, "{}", failed.stderr);
    let last = failed.stderr.lines().last().unwrap_or_default();
    assert!(last.starts_with("failed: 3 failed (named above), nothing copied, in "), "{}", failed.stderr);
}

// Case 50: `ls` and `versions` whose reader has gone (`| head -0`) stop
// quietly with 141, as `cat` does, and `ls` reads no more pages.
#[tokio::test(flavor = "multi_thread")]
async fn case_50_ls_and_versions_into_a_closed_pipe_exit_141_quietly() {
    let h = Harness::new().await;
    for i in 0..2500 {
        h.put(&format!("m/{i:05}.json"), b"{}".to_vec());
    }
    for args in [&["ls", "s3://bucket/m/"][..], &["ls", "s3://bucket/m/*"], &["ls"]] {
        h.server.log().clear();
        let r = h.run_into_closed_pipe(args).await;
        assert_eq!(r.code, 141, "{args:?}: {r:?}");
        let said = r.stderr.to_lowercase();
        assert!(!said.contains("panic") && !said.contains("error"), "{args:?} said nothing: {}", r.stderr);
        assert!(h.server.log().count("ListObjectsV2") <= 1, "{args:?}: no page read after the reader left");
    }
    let dest = h.path("model");
    h.run(&["sync", "--atomic", "s3://bucket/m/*", dest.to_str().unwrap()]).await.assert_ok();
    let r = h.run_into_closed_pipe(&["versions", dest.to_str().unwrap()]).await;
    assert_eq!(r.code, 141, "{r:?}");
    assert!(!r.stderr.to_lowercase().contains("panic"), "{}", r.stderr);
}
