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

// Values read as something other than meant are refused before anything is
// done: a pattern with a line break at its end (a ConfigMap value written
// with a trailing newline) or a list would match nothing, and --delete would
// then remove what it was to keep. An on/off variable set off is as if unset
// (it does not satisfy what another flag requires). A command line refused by
// a command's own checks names the variable behind it too.
#[tokio::test(flavor = "multi_thread")]
async fn variables_that_would_be_read_wrongly_are_refused_and_named() {
    let h = Harness::new().await;
    h.put("m/w.bin", vec![1u8; 100]);
    let endpoint = h.server.endpoint_url();
    let dest = h.path("d");
    std::fs::create_dir_all(dest.join("keep")).unwrap();
    std::fs::write(dest.join("keep/local.txt"), b"mine").unwrap();
    let env = |pairs: &[(&'static str, &str)]| {
        let mut e = h.server.client_env();
        e.extend(pairs.iter().map(|(k, v)| (*k, v.to_string())));
        e
    };
    let sync = ["--endpoint-url", &endpoint, "sync", "--delete", "s3://bucket/m/*", dest.to_str().unwrap()];
    for (var, value) in
        [("S3LOAD_EXCLUDE", "keep/*\n"), ("S3LOAD_EXCLUDE", " keep/*"), ("S3LOAD_EXCLUDE", "*.tmp,keep/*")]
    {
        let r = h.run_env(&sync, &env(&[(var, value)])).await;
        assert_eq!(r.code, 2, "{var}={value:?}: {}", r.stderr);
        assert!(r.stderr.contains(var), "{var}={value:?}: {}", r.stderr);
        assert!(dest.join("keep/local.txt").exists(), "{var}={value:?} deleted a kept file");
        assert!(!dest.join("w.bin").exists());
    }
    // The same pattern, trimmed, keeps the file.
    let r = h.run_env(&sync, &env(&[("S3LOAD_EXCLUDE", "keep/*")])).await;
    r.assert_ok();
    assert!(dest.join("keep/local.txt").exists() && dest.join("w.bin").exists());

    // Off is unset: --keep still needs --atomic, --max-delete still needs --delete.
    let other = h.path("o");
    let keep = ["--endpoint-url", &endpoint, "sync", "--keep", "1", "s3://bucket/m/*", other.to_str().unwrap()];
    let r = h.run_env(&keep, &env(&[("S3LOAD_ATOMIC", "no")])).await;
    assert_eq!(r.code, 2, "{}", r.stderr);
    assert!(r.stderr.contains("--atomic") && !other.exists(), "{}", r.stderr);
    let max = ["--endpoint-url", &endpoint, "sync", "--max-delete", "1", "s3://bucket/m/*", other.to_str().unwrap()];
    let r = h.run_env(&max, &env(&[("S3LOAD_DELETE", "false")])).await;
    assert_eq!(r.code, 2, "{}", r.stderr);

    // Refused by the command itself (a shard needs a run id): named too.
    let sharded = ["--endpoint-url", &endpoint, "sync", "s3://bucket/m/*", other.to_str().unwrap()];
    let r = h.run_env(&sharded, &env(&[("S3LOAD_SHARD", "0/2")])).await;
    assert_eq!(r.code, 2, "{}", r.stderr);
    assert!(r.stderr.contains("S3LOAD_SHARD=\"0/2\""), "{}", r.stderr);
    // A flag's own message names only its own variable.
    let r = h.run_env(&["-c", "0", "sync", "s3://bucket/m/*", "x"], &env(&[("S3LOAD_PART_SIZE", "64")])).await;
    assert_eq!(r.code, 2, "{}", r.stderr);
    assert!(!r.stderr.contains("S3LOAD_PART_SIZE"), "{}", r.stderr);
}

// A stderr nobody reads (`2>&1 | head`) neither stops a run nor changes its
// exit code: 3 for a missing bucket, not a panic's 101.
#[tokio::test(flavor = "multi_thread")]
async fn a_closed_stderr_keeps_the_exit_code() {
    let h = Harness::new().await;
    let endpoint = h.server.endpoint_url();
    let script = r#""$0" "$@" 2>&1 | head -c 0; echo "${PIPESTATUS[0]}""#;
    let bin = env!("CARGO_BIN_EXE_s3load");
    let r = h
        .command(
            "bash",
            &["-c", script, bin, "--endpoint-url", &endpoint, "ls", "s3://no-such-bucket/"],
            &h.server.client_env(),
        )
        .await;
    assert_eq!(r.stdout.trim(), "3", "{}", r.stderr);
}
