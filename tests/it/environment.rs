//! Every flag from the environment (`S3LOAD_<FLAG>`), as a pod spec sets it
//! from a ConfigMap: a variable applies where its flag is absent, the flag wins
//! over it, and a bad value is refused naming both.

use crate::harness::{Harness, files_under};

#[tokio::test(flavor = "multi_thread")]
async fn flags_come_from_s3load_variables_and_a_flag_wins_over_its_variable() {
    let h = Harness::new().await;
    h.put("m/a.bin", vec![7u8; 3000]);
    h.put("m/b.json", b"{}".to_vec());
    let endpoint = h.server.endpoint_url();
    let env = |pairs: &[(&'static str, &str)]| {
        let mut e = h.server.client_env();
        e.extend(pairs.iter().map(|(k, v)| (*k, v.to_string())));
        e
    };

    // The endpoint, --json and --exclude from the environment alone.
    let a = h.path("a");
    let r = h
        .run_env(
            &["sync", "s3://bucket/m/*", a.to_str().unwrap()],
            &env(&[("S3LOAD_ENDPOINT_URL", &endpoint), ("S3LOAD_JSON", "true"), ("S3LOAD_EXCLUDE", "*.json")]),
        )
        .await;
    r.assert_ok();
    assert_eq!(files_under(&a), ["a.bin"], "{}", r.stderr);
    let lines = r.stdout_lines();
    assert!(!lines.is_empty() && lines.iter().all(|l| l.starts_with('{')), "JSON lines expected: {}", r.stdout);

    // Each flag wins over its variable: the variable's endpoint is a closed
    // port, --exclude on the command line replaces the variable's pattern.
    // An on/off variable takes yes/no as well as true/false: a dry run
    // writes nothing, "no" turns it off again.
    let b = h.path("b");
    let flag_wins = [("S3LOAD_ENDPOINT_URL", "http://127.0.0.1:1"), ("S3LOAD_EXCLUDE", "*.json")];
    let args = ["--endpoint-url", &endpoint, "sync", "--exclude", "*.bin", "s3://bucket/m/*", b.to_str().unwrap()];
    let dry = h.run_env(&args, &env(&[flag_wins[0], flag_wins[1], ("S3LOAD_DRY_RUN", "yes")])).await;
    dry.assert_ok();
    assert!(!b.exists() || files_under(&b).is_empty(), "a dry run wrote {:?}", files_under(&b));
    assert!(dry.stdout.contains("b.json") && !dry.stdout.contains("a.bin"), "{}", dry.stdout);
    let r = h.run_env(&args, &env(&[flag_wins[0], flag_wins[1], ("S3LOAD_DRY_RUN", "no")])).await;
    r.assert_ok();
    assert_eq!(files_under(&b), ["b.json"], "{}", r.stderr);
    // Without the variables, the defaults: text lines, not JSON.
    assert!(r.stdout_lines().iter().all(|l| !l.starts_with('{')), "{}", r.stdout);
    // An empty variable (a ConfigMap key left blank) is as if unset.
    let empty = h.path("empty");
    let blank = [("S3LOAD_NUMWORKERS", ""), ("S3LOAD_DRY_RUN", ""), ("S3LOAD_PART_SIZE", ""), ("S3LOAD_JSON", "")];
    let r = h
        .run_env(&["--endpoint-url", &endpoint, "sync", "s3://bucket/m/*", empty.to_str().unwrap()], &env(&blank))
        .await;
    r.assert_ok();
    assert_eq!(files_under(&empty), ["a.bin", "b.json"], "{}", r.stderr);

    // A value the flag would refuse is refused from the variable too (exit
    // 2, nothing written), and the message says where it came from; the
    // flag given on the command line wins over a bad variable.
    let c = h.path("c");
    for (var, value) in [("S3LOAD_NUMWORKERS", "many"), ("S3LOAD_NUMWORKERS", "0"), ("S3LOAD_DRY_RUN", "perhaps")] {
        let r = h
            .run_env(
                &["--endpoint-url", &endpoint, "sync", "s3://bucket/m/*", c.to_str().unwrap()],
                &env(&[(var, value)]),
            )
            .await;
        assert_eq!(r.code, 2, "{var}={value}: {}", r.stderr);
        assert!(r.stderr.contains(var), "{var}={value}: the message should name the variable: {}", r.stderr);
        assert!(!c.exists(), "{var}={value}");
    }
    let r = h
        .run_env(
            &["--endpoint-url", &endpoint, "--numworkers", "2", "sync", "s3://bucket/m/*", c.to_str().unwrap()],
            &env(&[("S3LOAD_NUMWORKERS", "many")]),
        )
        .await;
    r.assert_ok();
    assert_eq!(files_under(&c), ["a.bin", "b.json"], "{}", r.stderr);
}
