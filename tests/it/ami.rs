//! docs/ami.md is run, not just read: the EC2 Image Builder component's
//! `build` and `validate` commands and the Packer provisioner's `inline`
//! commands, taken from the document as written. Parameters (`{{ Name }}`) and
//! `environment_vars` are replaced with test values, the paths the recipe
//! writes (`/usr/local/bin`, `/opt/models`, `/var/log`, `/tmp/`) are mapped into
//! a temporary directory, and the binary is served from a `file://` URL.

use std::collections::HashMap;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::time::SystemTime;

use s3load_testserver::{Writer, safetensors_bytes};
use sha2::{Digest, Sha256};

use crate::harness::{Harness, Run, files_under};

const BUCKET: &str = "my-ml-bucket";
const PREFIX: &str = "model-artifacts/my-model/1.2.3/";

fn doc() -> String {
    std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("docs/ami.md")).unwrap()
}

/// The first fenced block of `lang` in `text`.
fn block(text: &str, lang: &str) -> String {
    let start = text.find(&format!("```{lang}\n")).unwrap_or_else(|| panic!("a ```{lang} block")) + lang.len() + 4;
    let end = start + text[start..].find("```").unwrap();
    text[start..end].to_string()
}

/// The component's parameter defaults, and each phase's commands (its steps' in order).
fn component(yaml: &str) -> (HashMap<String, String>, HashMap<String, Vec<String>>) {
    let (mut defaults, mut phases) = (HashMap::new(), HashMap::<String, Vec<String>>::new());
    // `commands` holds the indentation of the open `commands:` key; its items are deeper.
    let (mut section, mut param, mut phase, mut commands) = ("", None::<String>, None::<String>, None::<usize>);
    for line in yaml.lines() {
        let t = line.trim();
        if !line.starts_with(' ') {
            section = if t.starts_with("parameters:") {
                "parameters"
            } else if t.starts_with("phases:") {
                "phases"
            } else {
                ""
            };
            continue;
        }
        match section {
            "parameters" => {
                if let Some(name) = line.strip_prefix("  - ").and_then(|l| l.strip_suffix(':')) {
                    param = Some(name.to_string());
                } else if let (Some(v), Some(p)) = (t.strip_prefix("default:"), &param) {
                    defaults.insert(p.clone(), v.trim().to_string());
                }
            }
            "phases" => {
                let indent = line.len() - line.trim_start().len();
                if let Some(name) = line.strip_prefix("  - name: ") {
                    phase = Some(name.trim().to_string());
                    commands = None;
                } else if t == "commands:" {
                    commands = Some(indent);
                } else if let (Some(at), Some(cmd), Some(p)) = (commands, t.strip_prefix("- "), &phase)
                    && indent > at
                {
                    phases.entry(p.clone()).or_default().push(cmd.to_string());
                } else {
                    commands = None;
                }
            }
            _ => {}
        }
    }
    (defaults, phases)
}

/// A list of HCL strings (`name = [` ... `]`, one JSON-compatible string a line).
fn hcl_list(hcl: &str, name: &str) -> Vec<String> {
    let start = hcl.find(&format!("{name} = [")).unwrap_or_else(|| panic!("{name} in the Packer block"));
    hcl[start..]
        .lines()
        .skip(1)
        .take_while(|l| l.trim() != "]")
        .map(|l| serde_json::from_str(l.trim().trim_end_matches(',')).expect("a JSON-compatible string"))
        .collect()
}

/// The recipe's paths, inside `root` (in one pass: a mapped path, itself
/// under /tmp, is not mapped again).
fn map_paths(cmd: &str, root: &Path) -> String {
    const PATHS: [&str; 4] = ["/usr/local/bin", "/opt/models", "/var/log", "/tmp/"];
    let mut out = String::new();
    let mut rest = cmd;
    while !rest.is_empty() {
        match PATHS.iter().find(|p| rest.starts_with(**p)) {
            Some(p) => {
                out.push_str(&root.join(p.trim_start_matches('/')).display().to_string());
                if p.ends_with('/') {
                    out.push('/');
                }
                rest = &rest[p.len()..];
            }
            None => {
                let c = rest.chars().next().unwrap();
                out.push(c);
                rest = &rest[c.len_utf8()..];
            }
        }
    }
    out
}

struct Build {
    h: Harness,
    root: PathBuf,
    binary_url: String,
    binary_sha256: String,
    model_url: String,
}

impl Build {
    async fn new() -> Build {
        let h = Harness::new().await;
        let store = h.server.store();
        store.create_bucket(BUCKET);
        store.put(BUCKET, &format!("{PREFIX}config.json"), &b"{\"architectures\": [\"LlamaForCausalLM\"]}"[..]);
        store.put(BUCKET, &format!("{PREFIX}tokenizer.json"), &b"{\"model\": {}}"[..]);
        // As aws-cli uploads it: 8 MiB parts, an MD5 ETag and no checksum.
        let shard = Writer::AwsCli.legacy_object(safetensors_bytes(20 << 20, 1), SystemTime::now());
        store.put_object(BUCKET, &format!("{PREFIX}model-00001-of-00002.safetensors"), shard);
        store.put(BUCKET, &format!("{PREFIX}model-00002-of-00002.safetensors"), safetensors_bytes(3 << 20, 2));
        let bin = env!("CARGO_BIN_EXE_s3load");
        let binary_sha256 = Sha256::digest(std::fs::read(bin).unwrap()).iter().map(|b| format!("{b:02x}")).collect();
        let root = h.path("image");
        std::fs::create_dir_all(root.join("tmp")).unwrap();
        std::fs::create_dir_all(root.join("usr/local/bin")).unwrap();
        Build {
            root,
            binary_url: format!("file://{bin}"),
            binary_sha256,
            model_url: format!("s3://{BUCKET}/{PREFIX}*"),
            h,
        }
    }

    /// `script` run by `shell` (with its flags) as the build instance would,
    /// with the server standing in for S3 through the environment only.
    async fn run(&self, shell: &[&str], script: &str, extra_env: &[(&str, String)]) -> Run {
        let mut env = self.h.server.client_env();
        env.push(("AWS_ENDPOINT_URL", self.h.server.endpoint_url()));
        env.extend(extra_env.iter().cloned());
        let mut args: Vec<&str> = shell[1..].to_vec();
        args.extend(["-c", script]);
        self.h.command(shell[0], &args, &env).await
    }

    fn assert_landed(&self, model_dir: &Path) {
        assert_eq!(
            files_under(model_dir),
            vec![
                "config.json",
                "model-00001-of-00002.safetensors",
                "model-00002-of-00002.safetensors",
                "tokenizer.json"
            ]
        );
        for f in files_under(model_dir) {
            let key = format!("{PREFIX}{f}");
            let want = self.h.server.store().get(BUCKET, &key).unwrap().data.clone();
            assert!(std::fs::read(model_dir.join(&f)).unwrap() == want, "{f} is byte-exact");
            let mode = std::fs::metadata(model_dir.join(&f)).unwrap().permissions().mode();
            assert_eq!(mode & 0o444, 0o444, "{f} is readable by every user");
        }
        let installed = std::fs::metadata(self.root.join("usr/local/bin/s3load")).unwrap().permissions().mode();
        assert_eq!(installed & 0o755, 0o755);
    }
}

/// The component's phases, with parameters replaced and paths mapped.
fn component_phases(b: &Build, sha256: &str) -> (HashMap<String, String>, PathBuf) {
    let (defaults, phases) = component(&block(&doc(), "yaml"));
    let model_dir = map_paths(defaults.get("ModelDir").expect("ModelDir has a default"), &b.root);
    let params = [
        ("S3loadUrl", b.binary_url.clone()),
        ("S3loadSha256", sha256.to_string()),
        ("ModelUrl", b.model_url.clone()),
        ("ModelDir", model_dir.clone()),
    ];
    let scripts = ["build", "validate"]
        .iter()
        .map(|phase| {
            let commands = phases.get(*phase).unwrap_or_else(|| panic!("a {phase} phase with commands"));
            let script = commands.iter().map(|c| map_paths(c, &b.root)).collect::<Vec<_>>().join("\n");
            let script = params.iter().fold(script, |s, (k, v)| s.replace(&format!("{{{{ {k} }}}}"), v));
            assert!(!script.contains("{{"), "every parameter is known: {script}");
            (phase.to_string(), script)
        })
        .collect();
    (scripts, PathBuf::from(model_dir))
}

#[tokio::test(flavor = "multi_thread")]
async fn the_image_builder_component_bakes_the_model_and_validates_it() {
    let b = Build::new().await;
    let (phases, model_dir) = component_phases(&b, &b.binary_sha256);
    let build = b.run(&["bash"], &phases["build"], &[]).await;
    build.assert_ok();
    b.assert_landed(&model_dir);
    let summary: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(b.root.join("var/log/s3load-bake.json")).unwrap()).unwrap();
    assert_eq!(summary["result"], "success", "{summary}");
    assert!(!b.root.join("tmp/s3load.download").exists(), "the download is removed");
    b.run(&["bash"], &phases["validate"], &[]).await.assert_ok();

    // A file missing from the image fails validation.
    std::fs::remove_file(model_dir.join("tokenizer.json")).unwrap();
    let validate = b.run(&["bash"], &phases["validate"], &[]).await;
    assert_ne!(validate.code, 0, "validate notices the missing file: {validate:?}");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_binary_whose_sha256_differs_stops_the_build_before_anything_is_installed_or_copied() {
    let b = Build::new().await;
    let (phases, model_dir) = component_phases(&b, &"0".repeat(64));
    let build = b.run(&["bash"], &phases["build"], &[]).await;
    assert_ne!(build.code, 0, "{build:?}");
    assert!(build.stdout.contains("FAILED"), "sha256sum says why: {build:?}");
    assert!(!b.root.join("usr/local/bin/s3load").exists(), "nothing installed");
    assert!(!model_dir.exists(), "nothing copied");
}

#[tokio::test(flavor = "multi_thread")]
async fn the_packer_provisioner_bakes_the_model_and_checks_it() {
    let b = Build::new().await;
    let hcl = block(&doc(), "hcl");
    let execute = hcl.lines().find(|l| l.trim().starts_with("execute_command")).expect("execute_command");
    assert!(execute.contains("sh -e "), "the inline commands stop at the first failure: {execute}");
    let declared: HashMap<String, String> = hcl_list(&hcl, "environment_vars")
        .into_iter()
        .map(|kv| {
            let (k, v) = kv.split_once('=').expect("NAME=value");
            (k.to_string(), v.to_string())
        })
        .collect();
    let model_dir = map_paths(&declared["MODEL_DIR"], &b.root);
    let env = [
        ("S3LOAD_URL", b.binary_url.clone()),
        ("S3LOAD_SHA256", b.binary_sha256.clone()),
        ("MODEL_URL", b.model_url.clone()),
        ("MODEL_DIR", model_dir.clone()),
    ];
    for (k, _) in &env {
        assert!(declared.contains_key(*k), "the provisioner declares {k}");
    }
    let script = hcl_list(&hcl, "inline").iter().map(|c| map_paths(c, &b.root)).collect::<Vec<_>>().join("\n");
    let run = b.run(&["sh", "-e"], &script, &env).await;
    run.assert_ok();
    b.assert_landed(Path::new(&model_dir));

    // The last command is the check: with a file gone it fails the build.
    std::fs::remove_file(Path::new(&model_dir).join("config.json")).unwrap();
    let check = hcl_list(&hcl, "inline").last().map(|c| map_paths(c, &b.root)).unwrap();
    let again = b.run(&["sh", "-e"], &check, &env).await;
    assert_ne!(again.code, 0, "{again:?}");
}

#[test]
fn the_recipe_parser_reads_parameters_phases_and_lists() {
    let (defaults, phases) = component(&block(&doc(), "yaml"));
    assert_eq!(defaults["ModelDir"], "/opt/models/my-model/1.2.3");
    assert_eq!(phases["build"].len(), 9, "{:?}", phases["build"]);
    assert!(phases["build"].iter().all(|c| !c.starts_with("name:")), "steps are not commands");
    assert_eq!(phases["validate"].len(), 2);
    assert_eq!(hcl_list(&block(&doc(), "hcl"), "inline").len(), 8);
}
