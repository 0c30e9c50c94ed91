//! `sync --atomic`, `rollback`, `versions`: whole versions switched by one
//! rename, with readers that must never see a mixed or partial tree.

use std::collections::BTreeMap;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};

use s3load_testserver::{Fault, Rule, When, generate_bytes, safetensors_bytes};

use crate::harness::{BUCKET, Harness, files_under};

fn s(p: &Path) -> &str {
    p.to_str().unwrap()
}

type Tree = BTreeMap<String, Vec<u8>>;

/// Puts `tree` under `prefix`.
fn put_tree(h: &Harness, prefix: &str, tree: &Tree) {
    for (rel, data) in tree {
        h.put(&format!("{prefix}{rel}"), data.clone());
    }
}

fn version_a() -> Tree {
    let mut t = Tree::new();
    t.insert("config.json".into(), b"{\"v\": 1}".to_vec());
    t.insert("weights/model-1.safetensors".into(), safetensors_bytes(300_000, 1).to_vec());
    t.insert("weights/model-2.safetensors".into(), safetensors_bytes(2 << 20, 2).to_vec());
    t.insert("tokenizer.json".into(), generate_bytes(20_000, 3).to_vec());
    t
}

/// Version A with one file changed, one removed, one added.
fn version_b() -> Tree {
    let mut t = version_a();
    t.insert("config.json".into(), b"{\"v\": 2}".to_vec());
    t.remove("tokenizer.json");
    t.insert("weights/model-3.safetensors".into(), safetensors_bytes(500_000, 4).to_vec());
    t
}

/// A server holding A under `a/` and B under `b/`, and DEST at version A.
async fn at_version_a() -> (Harness, Tree, Tree, PathBuf) {
    let h = Harness::new().await;
    let (a, b) = (version_a(), version_b());
    put_tree(&h, "a/", &a);
    put_tree(&h, "b/", &b);
    let dest = h.path("m");
    h.run(&["sync", "--atomic", "s3://bucket/a/*", s(&dest)]).await.assert_ok();
    (h, a, b, dest)
}

/// The tree DEST resolves to now, read through the link.
fn read_tree(dest: &Path) -> Tree {
    files_under(dest).into_iter().map(|rel| (rel.clone(), std::fs::read(dest.join(&rel)).unwrap())).collect()
}

#[tokio::test(flavor = "multi_thread")]
async fn a_new_version_is_built_beside_the_old_and_switched_to_with_unchanged_files_linked() {
    let h = Harness::new().await;
    let (a, b) = (version_a(), version_b());
    put_tree(&h, "m/", &a);
    let dest = h.path("models/m");
    std::fs::create_dir_all(dest.parent().unwrap()).unwrap();
    h.run(&["sync", "--atomic", "s3://bucket/m/*", s(&dest)]).await.assert_ok();
    assert!(std::fs::symlink_metadata(&dest).unwrap().file_type().is_symlink());
    assert_eq!(read_tree(&dest), a);
    let old_dir = std::fs::canonicalize(&dest).unwrap();
    let ino = |p: PathBuf| std::fs::metadata(p).unwrap().ino();
    let gets = h.server.log().count("GetObject");

    // The prefix is updated in place: one file changed, one removed, one added.
    for (rel, data) in &b {
        if a.get(rel) != Some(data) {
            h.put(&format!("m/{rel}"), data.clone());
        }
    }
    h.server.store().delete(BUCKET, "m/tokenizer.json");
    h.run(&["sync", "--atomic", "s3://bucket/m/*", s(&dest)]).await.assert_ok();
    assert_eq!(read_tree(&dest), b);
    let new_dir = std::fs::canonicalize(&dest).unwrap();
    assert_ne!(old_dir, new_dir);
    // The old version is untouched, byte for byte.
    let old: Tree =
        files_under(&old_dir).into_iter().map(|r| (r.clone(), std::fs::read(old_dir.join(&r)).unwrap())).collect();
    assert_eq!(old, a);
    // Unchanged files are the same inodes, not fetched again.
    for unchanged in ["weights/model-1.safetensors", "weights/model-2.safetensors"] {
        assert_eq!(ino(old_dir.join(unchanged)), ino(new_dir.join(unchanged)), "{unchanged}");
    }
    assert_ne!(ino(old_dir.join("config.json")), ino(new_dir.join("config.json")));
    let fetched = h.server.log().count("GetObject") - gets;
    assert_eq!(fetched, 2, "only the changed and the new file");

    // The same source again: nothing to do, nothing switched.
    let run = h.run(&["sync", "--atomic", "s3://bucket/m/*", s(&dest)]).await;
    run.assert_ok();
    assert_eq!(std::fs::canonicalize(&dest).unwrap(), new_dir);

    // versions lists both, the live one marked; rollback restores A exactly.
    let listed = h.run(&["versions", s(&dest)]).await;
    listed.assert_ok();
    assert_eq!(listed.stdout_lines().len(), 2, "{}", listed.stdout);
    assert!(listed.stdout_lines()[0].starts_with("* "), "{}", listed.stdout);
    h.run(&["rollback", s(&dest)]).await.assert_ok();
    assert_eq!(read_tree(&dest), a);
    assert_eq!(std::fs::canonicalize(&dest).unwrap(), old_dir);
}

#[tokio::test(flavor = "multi_thread")]
async fn nothing_is_switched_after_a_failure_and_keep_never_removes_the_live_version() {
    let (h, a, b, dest) = at_version_a().await;
    // Every GET of the new file fails: the new version cannot complete.
    h.server.faults().add(
        Rule::new("GetObject", When::Always, Fault::Status { status: 403, code: "AccessDenied" })
            .for_key("b/weights/model-3.safetensors"),
    );
    let run = h.run(&["sync", "--atomic", "s3://bucket/b/*", s(&dest)]).await;
    assert_ne!(run.code, 0);
    assert!(run.stderr.contains("not switching"), "{}", run.stderr);
    assert_eq!(read_tree(&dest), a, "DEST still shows the old version whole");

    h.server.faults().clear();
    for (i, src) in ["s3://bucket/b/*", "s3://bucket/a/*", "s3://bucket/b/*"].into_iter().enumerate() {
        let keep = "1";
        let run = h.run(&["sync", "--atomic", "--keep", keep, "--version-id", &format!("v{i}"), src, s(&dest)]).await;
        run.assert_ok();
        let versions = h.run(&["versions", s(&dest)]).await;
        let live = versions.stdout_lines().iter().filter(|l| l.starts_with("* ")).count();
        assert_eq!(live, 1, "the live version is kept: {}", versions.stdout);
        assert!(versions.stdout_lines().len() <= 2, "kept: the live one and the one just left: {}", versions.stdout);
    }
    assert_eq!(read_tree(&dest), b);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_dest_that_is_not_an_s3load_link_is_refused_and_left_alone() {
    let h = Harness::new().await;
    put_tree(&h, "a/", &version_a());
    let real = h.path("real");
    std::fs::create_dir_all(&real).unwrap();
    std::fs::write(real.join("keep.txt"), b"mine").unwrap();
    let run = h.run(&["sync", "--atomic", "s3://bucket/a/*", s(&real)]).await;
    assert_ne!(run.code, 0);
    assert!(run.stderr.contains("not a symlink"), "{}", run.stderr);
    assert_eq!(files_under(&real), vec!["keep.txt"]);
    let link = h.path("elsewhere");
    std::os::unix::fs::symlink("/etc", &link).unwrap();
    let run = h.run(&["sync", "--atomic", "s3://bucket/a/*", s(&link)]).await;
    assert_ne!(run.code, 0);
    assert_eq!(std::fs::read_link(&link).unwrap(), PathBuf::from("/etc"));
    for bad in ["../x", ".hidden", "a/b", ""] {
        let arg = format!("--version-id={bad}");
        let run = h.run(&["sync", "--atomic", &arg, "s3://bucket/a/*", s(&h.path("n"))]).await;
        assert_eq!(run.code, 2, "{bad:?}: {}", run.stderr);
    }
    assert!(!h.path("n").exists() && !h.path(".n.versions").exists());
}

/// A reader resolves DEST, then checks every file of that version against
/// the manifest of A or B: never a mix, never a partial tree. Meanwhile the
/// loader switches between A and B and is killed at random points.
#[tokio::test(flavor = "multi_thread")]
async fn readers_never_see_a_mixed_or_partial_tree_across_switches_and_kills() {
    let (h, a, b, dest) = at_version_a().await;

    let stop = Arc::new(AtomicBool::new(false));
    let checked = Arc::new(AtomicUsize::new(0));
    let reader = {
        let (dest, stop, checked, a, b) = (dest.clone(), stop.clone(), checked.clone(), a.clone(), b.clone());
        std::thread::spawn(move || -> Result<(), String> {
            while !stop.load(Ordering::Relaxed) {
                let Ok(version) = std::fs::canonicalize(&dest) else { return Err("DEST vanished".into()) };
                let tree: Tree = files_under(&version)
                    .into_iter()
                    .map(|r| (r.clone(), std::fs::read(version.join(&r)).unwrap_or_default()))
                    .collect();
                if tree != a && tree != b {
                    return Err(format!("{} is neither A nor B: {:?}", version.display(), tree.keys()));
                }
                checked.fetch_add(1, Ordering::Relaxed);
            }
            Ok(())
        })
    };
    // 50 in CI; `benches/atomic-kills.sh N` runs more.
    let kills: u64 = std::env::var("S3LOAD_ATOMIC_KILLS").ok().and_then(|v| v.parse().ok()).unwrap_or(50);
    let mut killed = 0;
    for i in 0..kills {
        let src = if i % 2 == 0 { "s3://bucket/b/*" } else { "s3://bucket/a/*" };
        let mut child = h.spawn(&["sync", "--atomic", "--keep", "2", src, s(&dest)]);
        // Kill points spread over the run: from at once to after the switch.
        let delay = (i * 37) % 160;
        tokio::time::sleep(std::time::Duration::from_millis(delay)).await;
        if child.try_wait().unwrap().is_none() {
            child.kill().await.unwrap();
            killed += 1;
        }
        let _ = child.wait().await;
    }
    // Finished runs bring DEST to one version whole.
    for src in ["s3://bucket/b/*", "s3://bucket/a/*"] {
        h.run(&["sync", "--atomic", src, s(&dest)]).await.assert_ok();
    }
    stop.store(true, Ordering::Relaxed);
    reader.join().unwrap().unwrap();
    assert_eq!(read_tree(&dest), a);
    assert!(killed >= kills / 5, "kills landed mid-run only {killed} times of {kills}");
    assert!(checked.load(Ordering::Relaxed) > 0);
}

#[tokio::test(flavor = "multi_thread")]
async fn keep_removes_abandoned_builds_but_not_one_in_progress() {
    let (h, _a, b, dest) = at_version_a().await;
    let versions = h.path(".m.versions");
    // A build given up long ago, and one a run is working on (it holds the lock).
    let abandoned = versions.join(".old.partial");
    std::fs::create_dir_all(abandoned.join("weights")).unwrap();
    std::fs::write(abandoned.join("weights/x.bin"), b"half").unwrap();
    let busy = versions.join(".busy.partial/.s3load");
    std::fs::create_dir_all(&busy).unwrap();
    let lock = std::fs::File::create(busy.join("lock")).unwrap();
    rustix::fs::flock(&lock, rustix::fs::FlockOperation::NonBlockingLockExclusive)
        .expect("the test holds the build's lock");
    h.run(&["sync", "--atomic", "--keep", "2", "s3://bucket/b/*", s(&dest)]).await.assert_ok();
    assert_eq!(read_tree(&dest), b);
    assert!(!abandoned.exists(), "an abandoned build is removed");
    assert!(busy.exists(), "a build in progress is left alone");
}

#[tokio::test(flavor = "multi_thread")]
async fn links_planted_where_versions_are_kept_are_refused_never_written_through() {
    let (h, _a, _b, dest) = at_version_a().await;
    let outside = h.path("outside");
    std::fs::create_dir_all(&outside).unwrap();
    let versions = h.path(".m.versions");
    // The build directory of the next version, planted as a link elsewhere.
    std::os::unix::fs::symlink(&outside, versions.join(".next.partial")).unwrap();
    let run = h.run(&["sync", "--atomic", "--version-id", "next", "s3://bucket/b/*", s(&dest)]).await;
    assert_ne!(run.code, 0);
    assert!(run.stderr.contains("symlink"), "{}", run.stderr);
    assert!(std::fs::read_dir(&outside).unwrap().next().is_none(), "nothing written through the link");
    std::fs::remove_file(versions.join(".next.partial")).unwrap();
    // A complete version planted as a link is not switched to.
    std::os::unix::fs::symlink(&outside, versions.join("next")).unwrap();
    let run = h.run(&["sync", "--atomic", "--version-id", "next", "s3://bucket/b/*", s(&dest)]).await;
    assert_ne!(run.code, 0);
    assert!(!std::fs::read_link(&dest).unwrap().ends_with("next"));
    // The versions directory itself.
    let other = h.path("other");
    std::os::unix::fs::symlink(&outside, h.path(".other.versions")).unwrap();
    let run = h.run(&["sync", "--atomic", "s3://bucket/a/*", s(&other)]).await;
    assert_ne!(run.code, 0);
    assert!(!other.exists());
    assert!(std::fs::read_dir(&outside).unwrap().next().is_none());
}
