//! Every error names what failed, says what to do, and exits non-zero with the
//! documented code (1 = some objects failed, 2 = usage, 3 = nothing could be done).

use s3load_testserver::{ACCESS_KEY, REGION};

use crate::harness::{Harness, files_under};

#[tokio::test(flavor = "multi_thread")]
async fn bad_url_is_a_usage_error() {
    let h = Harness::new().await;
    for bad in ["s3://", "gs://bucket/key", "s3://b*/x"] {
        let run = h.run(&["cp", bad, h.path("x").to_str().unwrap()]).await;
        assert_eq!(run.code, 2, "{bad}: {}", run.stderr);
        assert!(run.stderr.contains(bad.trim_end_matches("x")), "{bad}: message names the URL: {}", run.stderr);
    }
    let run = h.run(&["sync", "--no-such-flag", "s3://bucket/x", "y"]).await;
    assert_eq!(run.code, 2);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_zero_or_malformed_request_timeout_is_a_usage_error_and_sends_nothing() {
    let h = Harness::new().await;
    for bad in ["0s", "-5s", "soon", ""] {
        let flag = format!("--request-timeout={bad}");
        let run = h.run(&[&flag, "cp", "s3://bucket/x/*", h.path("x").to_str().unwrap()]).await;
        assert_eq!(run.code, 2, "{bad:?}: {}", run.stderr);
        assert!(run.stderr.contains("request-timeout"), "{bad:?}: the flag is named: {}", run.stderr);
    }
    assert!(h.server.log().records().is_empty(), "no request sent");
}

#[tokio::test(flavor = "multi_thread")]
async fn missing_bucket_names_the_bucket() {
    let h = Harness::new().await;
    let run = h.run(&["sync", "s3://no-such-bucket/p/*", h.path("out").to_str().unwrap()]).await;
    assert_eq!(run.code, 3, "{}", run.stderr);
    assert!(run.stderr.contains("s3://no-such-bucket/p/*"), "{}", run.stderr);
    assert!(run.stderr.contains("NoSuchBucket"), "{}", run.stderr);
    assert!(!h.path("out").exists());
}

#[tokio::test(flavor = "multi_thread")]
async fn missing_key_names_the_key_and_suggests_a_prefix() {
    let h = Harness::new().await;
    h.put("p/a", &b"1"[..]);
    let run = h.run(&["cp", "s3://bucket/p/missing.json", h.path("out").to_str().unwrap()]).await;
    assert_eq!(run.code, 3, "{}", run.stderr);
    assert!(run.stderr.contains("s3://bucket/p/missing.json"), "{}", run.stderr);
    assert!(run.stderr.contains("not found"), "{}", run.stderr);
    let none = h.run(&["cp", "s3://bucket/nothing-here/*", h.path("out").to_str().unwrap()]).await;
    assert_eq!(none.code, 3);
    assert!(none.stderr.contains("no objects match s3://bucket/nothing-here/*"), "{}", none.stderr);
}

#[tokio::test(flavor = "multi_thread")]
async fn wrong_secret_is_access_denied_with_a_hint() {
    let h = Harness::new().await;
    h.put("p/a", &b"1"[..]);
    let endpoint = h.server.endpoint_url();
    let env = [
        ("AWS_ACCESS_KEY_ID", ACCESS_KEY.to_string()),
        ("AWS_SECRET_ACCESS_KEY", "wrong-secret".to_string()),
        ("AWS_REGION", REGION.to_string()),
    ];
    let run = h
        .run_env(&["--endpoint-url", &endpoint, "sync", "s3://bucket/p/*", h.path("out").to_str().unwrap()], &env)
        .await;
    assert_eq!(run.code, 3, "{}", run.stderr);
    assert!(run.stderr.contains("s3://bucket/p/*"), "{}", run.stderr);
    assert!(run.stderr.contains("permission") || run.stderr.contains("access denied"), "{}", run.stderr);
    assert!(!run.stderr.contains("wrong-secret"), "the secret never appears in output");
}

#[tokio::test(flavor = "multi_thread")]
async fn unreachable_endpoint_fails_with_a_network_hint() {
    let h = Harness::new().await;
    let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let endpoint = format!("http://127.0.0.1:{port}");
    let started = std::time::Instant::now();
    let run = h
        .run_env(
            &[
                "--endpoint-url",
                &endpoint,
                "--retry-count",
                "1",
                "sync",
                "s3://bucket/p/*",
                h.path("out").to_str().unwrap(),
            ],
            &h.server.client_env(),
        )
        .await;
    assert_eq!(run.code, 3, "{}", run.stderr);
    assert!(run.stderr.contains("s3://bucket/p/*"), "{}", run.stderr);
    assert!(run.stderr.contains("--endpoint-url"), "{}", run.stderr);
    assert!(started.elapsed().as_secs() < 30);
}

#[tokio::test(flavor = "multi_thread")]
async fn no_credentials_fail_fast_with_what_to_set() {
    let h = Harness::new().await;
    let endpoint = h.server.endpoint_url();
    let started = std::time::Instant::now();
    let run = h
        .run_env(
            &["--endpoint-url", &endpoint, "sync", "s3://bucket/p/*", "out"],
            &[("AWS_REGION", REGION.to_string())],
        )
        .await;
    assert_eq!(run.code, 3, "{}", run.stderr);
    assert!(run.stderr.contains("no AWS credentials"), "{}", run.stderr);
    assert!(run.stderr.contains("AWS_ACCESS_KEY_ID"), "message says what to set: {}", run.stderr);
    assert!(started.elapsed().as_secs() < 10, "took {:?}", started.elapsed());
    assert_eq!(h.server.log().records().len(), 0, "nothing sent without credentials");
}

#[tokio::test(flavor = "multi_thread")]
async fn hostile_keys_are_refused_by_name_and_nothing_escapes() {
    let h = Harness::new().await;
    h.put("p/ok.txt", &b"fine"[..]);
    h.put("p/../escape.txt", &b"evil"[..]);
    h.put("p/a/../../escape2.txt", &b"evil"[..]);
    h.put("p//abs.txt", &b"evil"[..]);
    h.put("p/.s3load/state", &b"s3load-state 1\n{\"path\":\"ok.txt\"}\n"[..]);
    let dest = h.path("d/out");
    let run = h.run(&["sync", "s3://bucket/p/*", dest.to_str().unwrap()]).await;
    assert_eq!(run.code, 1, "partial failure: {}", run.stderr);
    for key in ["p/../escape.txt", "p/a/../../escape2.txt", "p//abs.txt", "p/.s3load/state"] {
        assert!(run.stderr.contains(&format!("s3://bucket/{key}")), "{key} named: {}", run.stderr);
    }
    assert!(run.stderr.contains("unsafe local path"), "{}", run.stderr);
    assert_eq!(files_under(&h.path("d")), vec!["out/ok.txt"], "only the safe key was written");
    assert!(!h.path("escape.txt").exists() && !h.path("d/escape.txt").exists());
    let record = std::fs::read_to_string(dest.join(".s3load/state")).unwrap();
    assert!(record.contains("s3://bucket/p/ok.txt"), "the sync record is s3load's own, not the object's: {record}");
}

// Case 54: a store that accepts connections and never answers (here: neither
// the region question nor the listing) fails the run at the defaults within
// two minutes, naming the store and the settings that bound the wait, rather
// than after every attempt of every request (11 x 30 s).
#[tokio::test(flavor = "multi_thread")]
async fn case_54_a_store_that_never_answers_fails_the_run_within_two_minutes_at_the_defaults() {
    use s3load_testserver::{Fault, Gate, Rule, When};
    let h = Harness::new().await;
    let never = Gate::new();
    for op in ["HeadBucket", "ListObjectsV2"] {
        h.server.faults().add(Rule::new(op, When::Always, Fault::Hold(never.clone())));
    }
    let endpoint = h.server.endpoint_url();
    // No region: s3load asks the bucket first (HeadBucket), then lists.
    let env: Vec<(&str, String)> = h.server.client_env().into_iter().filter(|(k, _)| *k != "AWS_REGION").collect();
    let dest = h.path("d");
    let started = std::time::Instant::now();
    let run = h.run_env(&["--endpoint-url", &endpoint, "sync", "s3://bucket/m/*", dest.to_str().unwrap()], &env).await;
    let took = started.elapsed();
    assert_eq!(run.code, 3, "{}", run.stderr);
    assert!(took < std::time::Duration::from_secs(120), "failed after {took:?}");
    assert!(run.stderr.contains(&format!("the store at {endpoint}")), "names the store: {}", run.stderr);
    assert!(run.stderr.contains("--request-deadline"), "names the setting: {}", run.stderr);
    assert!(!run.stderr.contains("DispatchFailure"), "{}", run.stderr);
    eprintln!("a store that never answers: failed after {took:?}");
}
