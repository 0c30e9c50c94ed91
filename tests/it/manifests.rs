//! The Kubernetes examples in docs/kubernetes/ are run, not just read: for every
//! container whose image is s3load, the test takes its `args` (one JSON-style
//! flow list, as the files write them), expands `$(VAR)` from the container's
//! `env` the way Kubernetes does, maps the volume mount paths (and
//! /dev/termination-log) into a temporary directory, and runs that command
//! against the test server with seeded objects. Twice: the second run must
//! copy nothing.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use s3load_testserver::safetensors_bytes;

use crate::harness::{Harness, files_under};

/// What a manifest says about one s3load container.
#[derive(Debug, Default)]
struct Container {
    env: HashMap<String, String>,
    args: Vec<String>,
    mounts: Vec<String>,
}

fn unquote(s: &str) -> String {
    s.trim().trim_matches('"').to_string()
}

/// The s3load containers of a manifest, read line by line (the examples keep
/// `env` as `- name:` / `value:` pairs and `args` as one flow list).
fn s3load_containers(text: &str) -> Vec<Container> {
    let mut out = Vec::new();
    let mut cur: Option<Container> = None;
    let mut pending_name: Option<String> = None;
    let mut in_mounts = false;
    for line in text.lines() {
        let t = line.trim();
        if t.starts_with("- name:") && cur.as_ref().is_some_and(|c| !c.args.is_empty()) && !in_mounts {
            // The next container or list begins.
            out.extend(cur.take());
        }
        if let Some(image) = t.strip_prefix("image:") {
            out.extend(cur.take());
            in_mounts = false;
            if image.contains("s3load") {
                cur = Some(Container::default());
            }
            continue;
        }
        let Some(c) = cur.as_mut() else { continue };
        if t.starts_with("volumeMounts:") {
            in_mounts = true;
        } else if let Some(p) = t.strip_prefix("mountPath:") {
            c.mounts.push(unquote(p));
        } else if let Some(n) = t.strip_prefix("- name:") {
            pending_name = Some(unquote(n));
        } else if let (Some(v), Some(n)) = (t.strip_prefix("value:"), pending_name.take()) {
            c.env.insert(n, unquote(v));
        } else if let Some(a) = t.strip_prefix("args:") {
            c.args = serde_json::from_str(a.trim()).expect("args is a JSON-style flow list");
        } else if t.starts_with("volumes:") {
            in_mounts = false;
            out.extend(cur.take());
        }
    }
    out.extend(cur);
    out
}

/// `$(VAR)` expanded from the container's env, as the kubelet does.
fn expand(arg: &str, env: &HashMap<String, String>) -> String {
    env.iter().fold(arg.to_string(), |a, (k, v)| a.replace(&format!("$({k})"), v))
}

/// Runs every s3load container of `file`; returns the mapped paths of its mounts.
async fn run_manifest(file: &str) -> Vec<PathBuf> {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("docs/kubernetes").join(file);
    let text = std::fs::read_to_string(&path).unwrap();
    for must in ["runAsNonRoot: true", "readOnlyRootFilesystem: true", "allowPrivilegeEscalation: false", "requests:"] {
        assert!(text.contains(must), "{file} sets {must}");
    }
    let containers = s3load_containers(&text);
    assert!(!containers.is_empty(), "{file} has an s3load container");
    let mut mapped_mounts = Vec::new();
    for c in containers {
        let h = Harness::new().await;
        let root = h.path("pod");
        let map = |p: &str| -> String {
            if p == "/dev/termination-log" {
                return root.join("termination-log").display().to_string();
            }
            match c.mounts.iter().find(|m| p == m.as_str() || p.starts_with(&format!("{m}/"))) {
                Some(m) => format!("{}{}", root.join(m.trim_start_matches('/')).display(), &p[m.len()..]),
                None => p.to_string(),
            }
        };
        let args: Vec<String> = c.args.iter().map(|a| map(&expand(a, &c.env))).collect();
        assert!(!args.iter().any(|a| a.contains("$(")), "every $(VAR) is defined: {args:?}");
        // Seed the source the command names with a small model.
        let src = args.iter().find(|a| a.starts_with("s3://")).expect("an s3:// source");
        let (bucket, key) = src["s3://".len()..].split_once('/').unwrap();
        let prefix = key.trim_end_matches('*');
        h.server.store().create_bucket(bucket);
        h.server.store().put(bucket, &format!("{prefix}config.json"), &b"{}"[..]);
        h.server.store().put(
            bucket,
            &format!("{prefix}weights/model-00001.safetensors"),
            safetensors_bytes(3 << 20, 1),
        );
        let dest = PathBuf::from(args.last().unwrap());
        if args.iter().any(|a| a == "--delete") {
            std::fs::create_dir_all(dest.join("old")).unwrap();
            std::fs::write(dest.join("old/model-00009.safetensors"), b"previous version").unwrap();
        }
        for m in &c.mounts {
            std::fs::create_dir_all(root.join(m.trim_start_matches('/'))).unwrap();
            mapped_mounts.push(root.join(m.trim_start_matches('/')));
        }
        let argv: Vec<&str> = args.iter().map(String::as_str).collect();
        let run = h.run(&argv).await;
        run.assert_ok();
        assert_eq!(files_under(&dest), vec!["config.json", "weights/model-00001.safetensors"], "{file}: {args:?}");
        if args.iter().any(|a| a.ends_with("termination-log")) {
            let s: serde_json::Value =
                serde_json::from_str(&std::fs::read_to_string(root.join("termination-log")).unwrap()).unwrap();
            assert_eq!(s["result"], "success", "{s}");
        }
        let again = h.run(&argv).await;
        again.assert_ok();
        assert!(again.stdout.is_empty(), "{file}: a second run copies nothing: {}", again.stdout);
    }
    mapped_mounts
}

#[tokio::test(flavor = "multi_thread")]
async fn the_init_container_example_runs() {
    run_manifest("init-container-deployment.yaml").await;
}

#[tokio::test(flavor = "multi_thread")]
async fn the_loader_job_example_runs() {
    run_manifest("loader-job.yaml").await;
}

#[test]
fn the_iam_policies_are_valid_json_and_scoped_to_the_prefix() {
    for f in ["iam-policy.json", "iam-policy-publisher.json"] {
        let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("docs/kubernetes").join(f);
        let v: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap();
        for st in v["Statement"].as_array().unwrap() {
            let res = st["Resource"].as_str().unwrap();
            assert!(res.ends_with("/model-artifacts/*") || st["Condition"].is_object(), "{f}: {st} is scoped");
        }
    }
}

#[test]
fn the_parser_reads_env_args_and_mounts() {
    let c = s3load_containers(
        "      - name: x\n        image: a/s3load:1\n        env:\n          - name: B\n            value: \"bkt\"\n        args: [\"sync\", \"s3://$(B)/p/*\", \"/m\"]\n        volumeMounts:\n          - name: v\n            mountPath: /m\n      volumes:\n",
    );
    assert_eq!(c.len(), 1);
    assert_eq!(c[0].env["B"], "bkt");
    assert_eq!(expand(&c[0].args[1], &c[0].env), "s3://bkt/p/*");
    assert_eq!(c[0].mounts, vec!["/m"]);
}

/// The Indexed Job: its s3load command run once per index, all at once, into
/// one directory (the RWX volume), with JOB_COMPLETION_INDEX set as the Job
/// controller sets it. Then again: nothing is copied.
#[tokio::test(flavor = "multi_thread")]
async fn the_indexed_job_example_runs_once_per_index_into_one_directory() {
    let file = "indexed-job.yaml";
    let text =
        std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("docs/kubernetes").join(file)).unwrap();
    let field = |name: &str| -> String {
        text.lines().find_map(|l| l.trim().strip_prefix(name).map(|v| v.trim().to_string())).expect(name)
    };
    assert_eq!(field("completionMode:"), "Indexed");
    let n: u32 = field("completions:").parse().unwrap();
    assert_eq!(field("parallelism:"), n.to_string(), "every index runs at once");
    let containers = s3load_containers(&text);
    assert_eq!(containers.len(), 1);
    let c = &containers[0];
    assert!(
        c.args.iter().any(|a| a == &format!("$(JOB_COMPLETION_INDEX)/{n}")),
        "--shard names the index and completions"
    );
    assert!(c.args.windows(2).any(|w| w == ["--run-id", "$(JOB_UID)"]), "--run-id names the Job: {:?}", c.args);
    assert!(
        text.contains("fieldRef: {fieldPath: \"metadata.labels['batch.kubernetes.io/controller-uid']\"}"),
        "JOB_UID comes from the Job's uid label"
    );

    let h = Harness::new().await;
    let root = h.path("volume");
    let mount = c.mounts[0].clone();
    let argv = |index: u32| -> Vec<String> {
        let mut env = c.env.clone();
        env.insert("JOB_COMPLETION_INDEX".into(), index.to_string());
        // What the downward API gives every pod of the Job (the manifest
        // asks for it from the label below).
        env.insert("JOB_UID".into(), "8d3a8c7e-5b0e-4a51-9d55-3f2b1c0e7a11".into());
        let map = |p: String| -> String {
            if p == "/dev/termination-log" {
                return h.path(&format!("termination-log-{index}")).display().to_string();
            }
            match p.strip_prefix(&mount) {
                Some(rest) => format!("{}{rest}", root.display()),
                None => p,
            }
        };
        c.args.iter().map(|a| map(expand(a, &env))).collect()
    };
    let first = argv(0);
    assert!(!first.iter().any(|a| a.contains("$(")), "every $(VAR) is defined: {first:?}");
    let src = first.iter().find(|a| a.starts_with("s3://")).unwrap().clone();
    let (bucket, key) = src["s3://".len()..].split_once('/').unwrap();
    let prefix = key.trim_end_matches('*');
    h.server.store().create_bucket(bucket);
    let mut expected = vec!["config.json".to_string()];
    h.server.store().put(bucket, &format!("{prefix}config.json"), &b"{}"[..]);
    for i in 1..=6u64 {
        let rel = format!("weights/model-0000{i}-of-00006.safetensors");
        h.server.store().put(bucket, &format!("{prefix}{rel}"), safetensors_bytes((i as usize) << 19, i));
        expected.push(rel);
    }
    expected.sort();
    std::fs::create_dir_all(root.join("old")).unwrap();
    std::fs::write(root.join("old/model-00009.safetensors"), b"previous version").unwrap();

    for round in 0..2 {
        let children: Vec<_> = (0..n)
            .map(|k| {
                let args = argv(k);
                let refs: Vec<&str> = args.iter().map(String::as_str).collect();
                h.spawn(&refs)
            })
            .collect();
        let mut lines = Vec::new();
        for (k, child) in children.into_iter().enumerate() {
            let out = child.wait_with_output().await.unwrap();
            let stderr = String::from_utf8_lossy(&out.stderr);
            assert!(out.status.success(), "index {k}, round {round}: {stderr}");
            lines.extend(String::from_utf8_lossy(&out.stdout).lines().map(str::to_string));
            let summary: serde_json::Value =
                serde_json::from_str(&std::fs::read_to_string(h.path(&format!("termination-log-{k}"))).unwrap())
                    .unwrap();
            assert_eq!(summary["result"], "success", "{summary}");
        }
        let copies = lines.iter().filter(|l| l.starts_with("cp ")).count();
        let deletions = lines.iter().filter(|l| l.starts_with("rm ")).count();
        if round == 0 {
            assert_eq!(copies, expected.len(), "each file copied by one index: {lines:?}");
            assert_eq!(deletions, 1, "the stale file deleted by one index: {lines:?}");
        } else {
            assert!(lines.is_empty(), "a second run of the Job copies nothing: {lines:?}");
        }
        assert_eq!(files_under(&root), expected);
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn the_atomic_loader_job_example_runs() {
    run_manifest("atomic-loader-job.yaml").await;
}
