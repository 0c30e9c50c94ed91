//! The commands the docs tell users to run are run here, as written, against
//! the test server: a renamed flag or a changed default breaks this test, not
//! a user's first try.
//!
//! Every line of a shell block (a fence with no language, `sh`, `bash` or
//! `shell`) that runs `s3load` or `cargo`, and every inline code span in the
//! prose that begins with `s3load `, in [`DOCS`], is either run or named in
//! [`LEFT_OUT`] with the reason. Each command runs in bash with `s3load` on
//! the `PATH` and these substitutions only:
//!
//! - the endpoint: `AWS_ENDPOINT_URL` names the test server (and a literal
//!   `http://127.0.0.1:9000` becomes its address); the buckets the docs name
//!   exist on it, seeded with small objects (a model, a tar archive);
//! - absolute local paths (`/model`, `/models/m`, `/data`, `/etc/...`,
//!   `/usr/local/...`) lie below a temporary root, `~` is a temporary home,
//!   relative paths are relative to a temporary working directory, and the
//!   directories a user's machine has (`/etc/bash_completion.d`, zsh's
//!   `$fpath`, ...) exist there;
//! - `DEST`, the prose's name for an atomic destination, is `/models/m`;
//!   `$MODELS_BUCKET` and `$MODELS_FOLDER` are set as the Kubernetes examples
//!   set them.
//!
//! Each must exit 0; a few results are checked besides (the tar archive
//! unpacked, the upload's exclusion, the rollback).

use std::path::Path;

use s3load_testserver::safetensors_bytes;

use crate::harness::{Harness, files_under};

/// The documents whose commands are run, in this order.
const DOCS: [&str; 4] = ["README.md", "docs/sync.md", "docs/migrating-from-s5cmd.md", "docs/configuration.md"];

/// Commands shown in the docs that this test does not run, each with why
/// (matched on the command without its trailing comment; an entry ending in
/// `*` matches every command that begins with what precedes it).
const LEFT_OUT: &[(&str, &str)] = &[
    (
        "cargo run --release --example demo -- /tmp/s3load-demo",
        "the quick start: .ci/run runs it as README.md writes it",
    ),
    (
        "cargo test --locked --workspace",
        "the test command, which runs this test: .ci/run runs it as README.md writes it",
    ),
    ("cargo build --release", "builds the binary that these commands run"),
    ("s5cmd *", "s5cmd's spelling, shown beside s3load's"),
    ("s3load sync SRC DST", "a synopsis: SRC and DST stand for any source and destination"),
    ("s3load rollback", "names the command in a sentence; `s3load rollback DEST` is run"),
    ("s3load versions", "names the command in a sentence; `s3load versions DEST` is run"),
    (
        "s3load sync --delete --durability syncfs",
        "names the flags of the image build in a sentence; tests/it/ami.rs runs docs/ami.md's commands",
    ),
];

/// One command as a document shows it.
#[derive(Debug, Clone)]
struct Shown {
    doc: &'static str,
    line: usize,
    text: String,
}

/// Whether a line of a shell block runs something this test runs or names.
fn is_command(line: &str) -> bool {
    let line = line.trim_start_matches("set -o pipefail;").trim_start();
    ["s3load ", "cargo ", "s5cmd "].iter().any(|p| line.starts_with(p))
}

/// The commands of a Markdown text: lines of its shell blocks, and inline
/// spans of its prose that begin with `s3load ` (a span may run over a line
/// break within its paragraph).
fn commands(doc: &'static str, text: &str) -> Vec<Shown> {
    let mut out = Vec::new();
    let mut fence: Option<bool> = None; // Some(is a shell block) inside a fence
    let mut paragraph: Option<(usize, String)> = None; // (first line, text)
    let spans = |out: &mut Vec<Shown>, (first, text): (usize, String)| {
        let mut line = first;
        for (k, span) in text.split('`').enumerate() {
            if k % 2 == 1 && span.starts_with("s3load ") {
                out.push(Shown { doc, line, text: span.replace('\n', " ") });
            }
            line += span.matches('\n').count();
        }
    };
    for (i, line) in text.lines().enumerate() {
        let t = line.trim();
        if let Some(info) = t.strip_prefix("```") {
            if let Some(p) = paragraph.take() {
                spans(&mut out, p);
            }
            fence = match fence {
                Some(_) => None,
                None => Some(matches!(info.trim(), "" | "sh" | "bash" | "shell")),
            };
            continue;
        }
        match fence {
            Some(true) if is_command(t) => out.push(Shown { doc, line: i + 1, text: t.to_string() }),
            Some(_) => {}
            None if t.is_empty() => {
                if let Some(p) = paragraph.take() {
                    spans(&mut out, p);
                }
            }
            None => match &mut paragraph {
                Some((_, text)) => {
                    text.push('\n');
                    text.push_str(t);
                }
                None => paragraph = Some((i + 1, t.to_string())),
            },
        }
    }
    if let Some(p) = paragraph.take() {
        spans(&mut out, p);
    }
    out
}

/// A command without its trailing shell comment.
fn without_comment(cmd: &str) -> &str {
    cmd.find(" #").map_or(cmd, |at| &cmd[..at]).trim()
}

fn left_out(cmd: &str) -> Option<&'static (&'static str, &'static str)> {
    let cmd = without_comment(cmd);
    LEFT_OUT.iter().find(|(pattern, _)| match pattern.strip_suffix('*') {
        Some(prefix) => cmd.starts_with(prefix),
        None => cmd == *pattern,
    })
}

/// The command as run here: local paths moved below `root`, the endpoint and
/// `DEST` substituted (see the module's note).
fn substituted(cmd: &str, root: &Path, endpoint: &str) -> String {
    let root = root.display().to_string();
    let absolute = regex::Regex::new(r#"(^|[\s'"=])/(model-artifacts|models|model|data|etc|usr)\b"#).unwrap();
    let cmd = cmd.replace("http://127.0.0.1:9000", endpoint);
    let cmd = regex::Regex::new(r"\bDEST\b").unwrap().replace_all(&cmd, "/models/m").into_owned();
    absolute.replace_all(&cmd, format!("${{1}}{root}/${{2}}").as_str()).into_owned()
}

/// What the docs' commands read: the buckets they name, with small objects,
/// and the local model directory they upload.
fn seed(h: &Harness, work: &Path) {
    let store = h.server.store();
    let model = |bucket: &str, prefix: &str| {
        store.create_bucket(bucket);
        store.put(bucket, &format!("{prefix}config.json"), b"{\"model_type\": \"llama\"}".to_vec());
        store.put(bucket, &format!("{prefix}model.safetensors"), safetensors_bytes(64 << 10, 1));
    };
    model("my-ml-bucket", "model-artifacts/my-model-1.2.3/");
    model("models-bucket", "models/some-model/");
    model("my-bucket", "models/m/");
    model("bucket", "prefix/");
    model("bucket", "models/m/");
    model("my-bucket", "models/m-1/");
    for name in ["shard-00.bin", "shard-07.bin", "shard-10.bin", "checkpoints/step-1.bin", "run.log"] {
        store.put("my-bucket", &format!("models/m-1/{name}"), name.as_bytes().to_vec());
    }
    store.put("bucket", "key", b"the object at s3://bucket/key\n".to_vec());
    // A dataset shard: a tar archive of one file.
    let tar_dir = work.join("tar-src");
    std::fs::create_dir_all(&tar_dir).unwrap();
    std::fs::write(tar_dir.join("sample-0001.txt"), b"a training sample\n").unwrap();
    let tar = std::process::Command::new("tar").args(["cf", "-", "-C"]).arg(&tar_dir).arg("sample-0001.txt").output();
    let tar = tar.expect("tar");
    assert!(tar.status.success());
    store.put("my-ml-bucket", "datasets/shard-0001.tar", tar.stdout);
    // The model directory the upload examples send.
    let local = work.join("cwd/my-model-1.2.4");
    std::fs::create_dir_all(local.join("checkpoints")).unwrap();
    std::fs::write(local.join("config.json"), b"{\"model_type\": \"llama\"}").unwrap();
    std::fs::write(local.join("model.safetensors"), safetensors_bytes(64 << 10, 2)).unwrap();
    std::fs::write(local.join("checkpoints/step-1.bin"), b"a checkpoint").unwrap();
}

#[test]
fn the_docs_commands_are_found_and_every_one_is_run_or_left_out_with_a_reason() {
    let shown = all_shown();
    assert!(shown.len() >= 20, "the docs show at least 20 commands: {shown:#?}");
    // Every entry of LEFT_OUT still names something the docs show.
    for (pattern, why) in LEFT_OUT {
        assert!(
            shown.iter().any(|s| left_out(&s.text).is_some_and(|(p, _)| p == pattern)),
            "LEFT_OUT names {pattern:?} ({why}), which no document shows any more"
        );
    }
}

fn all_shown() -> Vec<Shown> {
    DOCS.iter()
        .flat_map(|doc| {
            let text = std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join(doc)).unwrap();
            commands(doc, &text)
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread")]
async fn every_command_the_docs_show_runs_against_the_test_server() {
    let h = Harness::new().await;
    let work = h.path("docs");
    let (root, cwd) = (work.join("root"), work.join("cwd"));
    std::fs::create_dir_all(&root).unwrap();
    seed(&h, &work);
    let endpoint = h.server.endpoint_url();
    let bin_dir = Path::new(env!("CARGO_BIN_EXE_s3load")).parent().unwrap().display().to_string();
    let mut env = h.server.client_env();
    env.extend([
        ("AWS_ENDPOINT_URL", endpoint.clone()),
        ("MODELS_BUCKET", "models-bucket".to_string()),
        ("MODELS_FOLDER", "models".to_string()),
        ("PATH", format!("{bin_dir}:{}", std::env::var("PATH").unwrap_or_default())),
    ]);
    // What a user's machine has: the directories the completion and man page
    // examples write into, and zsh's $fpath (bash arrays count from 0).
    let preamble = format!(
        "cd '{cwd}' && mkdir -p \"$HOME/.config/fish/completions\" '{r}/etc/bash_completion.d' \
         '{r}/usr/local/share/man/man1' '{r}/data' '{r}/zsh-functions' || exit 99; fpath=(unused '{r}/zsh-functions')\n",
        cwd = cwd.display(),
        r = root.display()
    );
    let (mut ran, mut skipped) = (Vec::new(), Vec::new());
    let mut last_atomic: Option<String> = None;
    for s in all_shown() {
        if let Some((_, why)) = left_out(&s.text) {
            skipped.push(format!("{}:{} `{}`: {why}", s.doc, s.line, s.text));
            continue;
        }
        let cmd = substituted(&s.text, &root, &endpoint);
        if s.text.starts_with("s3load rollback") {
            // A rollback needs a version to go back to: the source changes and
            // the atomic sync the docs show runs again, making a second version.
            h.server.store().put("bucket", "models/m/config.json", b"{\"model_type\": \"llama\", \"v\": 2}".to_vec());
            let again = last_atomic.as_ref().expect("the docs show sync --atomic before rollback");
            let r = h.command("bash", &["-c", &format!("{preamble}{again}")], &env).await;
            assert_eq!(r.code, 0, "{again}: {}", r.stderr);
        }
        let run = h.command("bash", &["-c", &format!("{preamble}{cmd}")], &env).await;
        assert_eq!(
            run.code, 0,
            "{}:{}: `{}` (run as `{cmd}`) exited {}\nstdout:\n{}\nstderr:\n{}",
            s.doc, s.line, s.text, run.code, run.stdout, run.stderr
        );
        if s.text.contains("--atomic") {
            last_atomic = Some(cmd.clone());
        }
        check_after(&h, &root, &s.text);
        ran.push(format!("{}:{} `{}`", s.doc, s.line, s.text));
    }
    eprintln!("ran {} commands:\n  {}", ran.len(), ran.join("\n  "));
    eprintln!("left out {}:\n  {}", skipped.len(), skipped.join("\n  "));
    assert!(ran.len() >= 20, "ran {} commands", ran.len());

    // What some of them did, besides exiting 0.
    assert_eq!(files_under(&root.join("model-artifacts/my-model-1.2.3")), vec!["config.json", "model.safetensors"]);
    assert_eq!(std::fs::read(root.join("data/sample-0001.txt")).unwrap(), b"a training sample\n");
    let live = std::fs::read_link(root.join("models/m")).unwrap();
    assert!(
        std::fs::read(root.join("models/m/config.json")).unwrap().ends_with(b"\"llama\"}"),
        "rolled back: {live:?}"
    );
    assert!(std::fs::read_to_string(root.join("etc/bash_completion.d/s3load")).unwrap().contains("s3load"));
    assert!(std::fs::read_to_string(root.join("usr/local/share/man/man1/s3load.1")).unwrap().contains(".TH"));
}

/// What some commands did, checked right after each (a later command may
/// change the same place).
fn check_after(h: &Harness, root: &Path, shown: &str) {
    let uploaded = || -> Vec<String> {
        let keys = h.server.store().with_bucket("my-ml-bucket", |b| {
            b.keys().filter(|k| k.starts_with("model-artifacts/my-model-1.2.4/")).cloned().collect::<Vec<_>>()
        });
        let mut keys = keys.unwrap();
        keys.sort();
        keys
    };
    let model = || files_under(&root.join("model"));
    if shown.contains("--exclude 'checkpoints/*' ./my-model-1.2.4/") {
        let want = ["model-artifacts/my-model-1.2.4/config.json", "model-artifacts/my-model-1.2.4/model.safetensors"];
        assert_eq!(uploaded(), want, "`{shown}` leaves the checkpoint out");
    } else if shown.starts_with("s3load sync ./my-model-1.2.4/") {
        assert!(uploaded().iter().any(|k| k.ends_with("checkpoints/step-1.bin")), "`{shown}` sends everything");
    } else if shown.contains("--include '*.safetensors' --include 'config.json'") {
        assert_eq!(model(), vec!["config.json", "model.safetensors"], "`{shown}`");
    } else if shown.contains("--exclude 'checkpoints/*' --exclude '*.log'") {
        let m = model();
        assert!(m.iter().all(|f| !f.starts_with("checkpoints/") && !f.ends_with(".log")), "`{shown}`: {m:?}");
        assert!(m.contains(&"shard-07.bin".to_string()), "`{shown}`: {m:?}");
    } else if shown.contains("--include 'shard-0?.bin'") {
        let m = model();
        assert!(m.contains(&"shard-00.bin".to_string()) && m.contains(&"shard-07.bin".to_string()), "{m:?}");
    }
}

#[test]
fn substitutions_move_local_paths_below_the_root_and_leave_urls_alone() {
    let root = Path::new("/tmp/r");
    assert_eq!(
        substituted("s3load sync 's3://b/model/*' /model", root, "http://x"),
        "s3load sync 's3://b/model/*' /tmp/r/model"
    );
    assert_eq!(
        substituted("s3load man > /usr/local/share/man/man1/s3load.1", root, "http://x"),
        "s3load man > /tmp/r/usr/local/share/man/man1/s3load.1"
    );
    assert_eq!(
        substituted("s3load --endpoint-url http://127.0.0.1:9000 sync 's3://bucket/prefix/*' ./dir", root, "http://x"),
        "s3load --endpoint-url http://x sync 's3://bucket/prefix/*' ./dir"
    );
    assert_eq!(substituted("s3load rollback DEST", root, "http://x"), "s3load rollback /tmp/r/models/m");
    assert_eq!(substituted("tar x -C /data", root, "http://x"), "tar x -C /tmp/r/data");
    assert_eq!(without_comment("s3load man > x   # then: man s3load"), "s3load man > x");
}
