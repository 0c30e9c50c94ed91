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
    let shaping = Shaping { first_byte_delay: Duration::ZERO, rate_per_connection: Some(4_000_000) };
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
        }
    }
    assert!(progress >= 2, "{}", run.stderr);
}
