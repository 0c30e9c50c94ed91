//! What the container image does, without a Docker engine: the static release
//! binary and a CA bundle copied into an otherwise empty directory, `chroot`ed
//! into as an unprivileged uid (the image's `USER 65532`), syncing from the test
//! server into a volume. No shell, no libc, no /etc/passwd, no NSS modules;
//! only the /etc/hosts a kubelet would mount, through which the endpoint is
//! reached by name. If the binary needs anything else at run time, this fails.
//!
//! The binary is built as the Dockerfile builds it (glibc, `crt-static`, the
//! `dist` profile); `.ci/run`
//! builds it first and passes it in `S3LOAD_STATIC_BIN`, otherwise the test
//! builds it (minutes the first time) in its own target directory.

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use std::collections::HashMap;
use std::net::Ipv4Addr;

use s3load_testserver::{DnsServer, Options, TestServer, Tls, safetensors_bytes};

use crate::harness::{Harness, files_under};

/// The image's user.
const UID: u32 = 65532;

fn static_binary() -> PathBuf {
    if let Some(p) = std::env::var_os("S3LOAD_STATIC_BIN") {
        return PathBuf::from(p);
    }
    let manifest = Path::new(env!("CARGO_MANIFEST_DIR"));
    let target = std::env::var_os("CARGO_TARGET_DIR").map_or_else(|| manifest.join("target"), PathBuf::from);
    let dir = target.join("static");
    let status = std::process::Command::new(std::env::var("CARGO").unwrap_or_else(|_| "cargo".into()))
        .current_dir(manifest)
        .env("RUSTFLAGS", "-C target-feature=+crt-static")
        .args(["build", "--profile", "dist", "--locked", "--target", "x86_64-unknown-linux-gnu", "--bin", "s3load"])
        .arg("--target-dir")
        .arg(&dir)
        .status()
        .expect("run cargo");
    assert!(status.success(), "building the static binary failed");
    dir.join("x86_64-unknown-linux-gnu/dist/s3load")
}

/// An image's root: the binary and the CA bundle (nothing else), plus what the
/// kubelet mounts: /etc/hosts naming the endpoint's host, and a volume owned by
/// the image's user at /model-artifacts.
async fn empty_root(h: &Harness, ca_bundle: &[u8]) -> PathBuf {
    // chroot needs root (CI and this machine run as root).
    let me = std::fs::metadata("/proc/self").map(|m| std::os::unix::fs::MetadataExt::uid(&m)).unwrap_or(1);
    assert_eq!(me, 0, "this test chroots, which needs root");
    let binary = tokio::task::spawn_blocking(static_binary).await.unwrap();
    let root = h.path("root");
    std::fs::create_dir_all(root.join("etc/ssl/certs")).unwrap();
    std::fs::create_dir_all(root.join("usr/local/bin")).unwrap();
    std::fs::copy(&binary, root.join("usr/local/bin/s3load")).unwrap();
    std::fs::write(root.join("etc/ssl/certs/ca-certificates.crt"), ca_bundle).unwrap();
    std::fs::set_permissions(&root, std::fs::Permissions::from_mode(0o755)).unwrap();
    std::fs::set_permissions(h.dir.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    let mut all = files_under(&root);
    all.sort();
    assert_eq!(all, vec!["etc/ssl/certs/ca-certificates.crt", "usr/local/bin/s3load"], "nothing else in the image");
    // The endpoint is reached by name, so the static binary's resolver is
    // exercised (no NSS modules, no nsswitch.conf in the image).
    std::fs::write(root.join("etc/hosts"), "127.0.0.1 localhost\n127.0.0.1 s3.models.internal\n").unwrap();
    let volume = root.join("model-artifacts");
    std::fs::create_dir_all(&volume).unwrap();
    std::os::unix::fs::chown(&volume, Some(UID), Some(UID)).unwrap();
    root
}

/// `s3load ARGS` inside `root` as the image's user, with the server's credentials.
async fn run_in_root(h: &Harness, root: &Path, args: &[&str]) -> std::process::Output {
    let userspec = format!("{UID}:{UID}");
    // Resolved here: the child's environment is cleared below.
    let chroot = std::env::var_os("PATH")
        .and_then(|p| std::env::split_paths(&p).map(|d| d.join("chroot")).find(|c| c.is_file()))
        .expect("chroot (coreutils) on PATH");
    // The binary was copied in moments ago: a child forked meanwhile by
    // another test of this process holds the copy's write descriptor until
    // it execs, and exec of a file open for writing fails (ETXTBSY). That
    // clears within moments; anything else is the test's result.
    for _ in 0..50 {
        let mut cmd = tokio::process::Command::new(&chroot);
        cmd.args(["--userspec", &userspec, root.to_str().unwrap(), "/usr/local/bin/s3load"]).args(args).env_clear();
        for (k, v) in h.server.client_env() {
            cmd.env(k, v);
        }
        let out = cmd.output().await.expect("run chroot");
        if !String::from_utf8_lossy(&out.stderr).contains("Text file busy") {
            return out;
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    panic!("/usr/local/bin/s3load in the root stayed busy (ETXTBSY) for 5 s");
}

/// The seeded model synced from `endpoint` into the volume's `m-1`.
async fn sync_seeded(h: &Harness, root: &Path, endpoint: &str) -> std::process::Output {
    let args = ["--endpoint-url", endpoint, "sync", "s3://bucket/models/m-1/*", "/model-artifacts/m-1"];
    run_in_root(h, root, &args).await
}

fn seed(h: &Harness) {
    h.put("models/m-1/config.json", &b"{\"layers\": 2}"[..]);
    h.put("models/m-1/model.safetensors", safetensors_bytes(20 << 20, 7));
}

#[tokio::test(flavor = "multi_thread")]
async fn the_static_binary_syncs_from_an_empty_root_as_a_non_root_user() {
    let h = Harness::new().await;
    seed(&h);
    let root = empty_root(&h, &std::fs::read("/etc/ssl/certs/ca-certificates.crt").unwrap()).await;
    let endpoint = format!("http://s3.models.internal:{}", h.server.addr().port());
    let out = sync_seeded(&h, &root, &endpoint).await;
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(0), "stderr:\n{stderr}");
    let volume = root.join("model-artifacts");
    assert_eq!(files_under(&volume.join("m-1")), vec!["config.json", "model.safetensors"]);
    assert_eq!(std::fs::read(volume.join("m-1/model.safetensors")).unwrap(), safetensors_bytes(20 << 20, 7));
    let owner = std::os::unix::fs::MetadataExt::uid(&std::fs::metadata(volume.join("m-1/config.json")).unwrap());
    assert_eq!(owner, UID, "written by the image's user, not root");
}

#[tokio::test(flavor = "multi_thread")]
async fn https_from_the_image_trusts_its_ca_bundle_and_nothing_else() {
    let tls = Tls::for_host("s3.models.internal");
    let server = TestServer::start_with(Options { tls: Some(tls.clone()), ..Default::default() }).await.unwrap();
    server.store().create_bucket("bucket");
    server.store().put("bucket", "models/m-1/config.json", &b"{}"[..]);
    let h = Harness { server, dir: tempfile::tempdir().unwrap() };
    let endpoint = format!("https://s3.models.internal:{}", h.server.addr().port());
    let args =
        ["--endpoint-url", endpoint.as_str(), "-r", "0", "sync", "s3://bucket/models/m-1/*", "/model-artifacts/m-1"];

    // The system's bundle only: the test CA is unknown, so the handshake fails.
    let root = empty_root(&h, &std::fs::read("/etc/ssl/certs/ca-certificates.crt").unwrap()).await;
    let out = run_in_root(&h, &root, &args).await;
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(3), "an untrusted server is refused: {stderr}");
    assert!(h.server.log().records().is_empty(), "no request got through");

    // The image's bundle holds the CA that signed the server: it works, so the
    // binary reads its roots from /etc/ssl/certs/ca-certificates.crt.
    std::fs::remove_dir_all(&root).unwrap();
    let root = empty_root(&h, tls.ca_pem.as_bytes()).await;
    let out = run_in_root(&h, &root, &args).await;
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(0), "stderr:\n{stderr}");
    assert_eq!(files_under(&root.join("model-artifacts/m-1")), vec!["config.json"]);
}

#[tokio::test(flavor = "multi_thread")]
async fn the_endpoint_is_resolved_through_resolv_conf_with_a_search_list_and_ndots_as_a_kubelet_writes_it() {
    const NAME: &str = "objects.storage.internal";
    let h = Harness::new().await;
    seed(&h);
    let dns = DnsServer::start(HashMap::from([(NAME.to_string(), Ipv4Addr::LOCALHOST)]))
        .await
        .expect("a DNS server on port 53 of a loopback address (needs root)");
    let root = empty_root(&h, &std::fs::read("/etc/ssl/certs/ca-certificates.crt").unwrap()).await;
    // The name is in no /etc/hosts: only DNS knows it. This is what a kubelet
    // writes for a pod in namespace `models` with the ClusterFirst policy.
    std::fs::write(root.join("etc/hosts"), "127.0.0.1 localhost\n").unwrap();
    let resolv = format!(
        "search models.svc.cluster.local svc.cluster.local cluster.local\nnameserver {}\noptions ndots:5\n",
        dns.ip()
    );
    std::fs::write(root.join("etc/resolv.conf"), resolv).unwrap();
    let port = h.server.addr().port();
    let out = sync_seeded(&h, &root, &format!("http://{NAME}:{port}")).await;
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(0), "stderr:\n{stderr}\nqueries: {:?}", dns.queries());
    assert_eq!(files_under(&root.join("model-artifacts/m-1")), vec!["config.json", "model.safetensors"]);
    // ndots:5: the name has fewer dots, so the search list is tried first, in
    // order, then the name as given.
    let asked: Vec<String> = dns.queries().into_iter().filter(|(_, t)| t == "A").map(|(n, _)| n).collect();
    let expected = [
        format!("{NAME}.models.svc.cluster.local"),
        format!("{NAME}.svc.cluster.local"),
        format!("{NAME}.cluster.local"),
        NAME.to_string(),
    ];
    assert!(asked.len() >= 4 && asked[..4] == expected, "queries in the resolver's order: {asked:?}");

    // A name DNS does not know: a clear error naming it, nothing written.
    let missing = format!("http://missing.storage.internal:{port}");
    let out = run_in_root(
        &h,
        &root,
        &["--endpoint-url", &missing, "-r", "0", "sync", "s3://bucket/models/m-1/*", "/model-artifacts/m-2"],
    )
    .await;
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(3), "stderr:\n{stderr}");
    assert!(stderr.contains("--endpoint-url"), "says what to check: {stderr}");
    assert!(stderr.contains("host name did not resolve") && stderr.contains("resolv.conf"), "says why: {stderr}");
    assert!(!stderr.contains("DispatchFailure"), "not the SDK's debug text: {stderr}");
    assert!(!root.join("model-artifacts/m-2").exists());
}
