//! Runs that overlap on one destination (reliability cases 44 onward):
//! atomic loaders, rollbacks and `--keep` at once, each race window held open
//! by the test server ([`Gate`]: one process is paused at a request while the
//! other does its worst, then let go); and the shards of one run started at
//! different times while the source changes, run one after another.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use s3load_testserver::{Fault, Gate, Rule, When, generate_bytes, safetensors_bytes};
use tokio::io::AsyncBufReadExt;

use crate::harness::{Harness, files_under};

fn s(p: &Path) -> &str {
    p.to_str().unwrap()
}

type Tree = BTreeMap<String, Vec<u8>>;

/// A small model; `v` changes the config and the second shard.
fn model(v: u64) -> Tree {
    let mut t = Tree::new();
    t.insert("config.json".into(), format!("{{\"v\": {v}}}").into_bytes());
    t.insert("model-1.safetensors".into(), safetensors_bytes(300_000, 1).to_vec());
    t.insert("model-2.safetensors".into(), safetensors_bytes(400_000, 10 + v).to_vec());
    t.insert("tokenizer.json".into(), generate_bytes(20_000, 3).to_vec());
    t
}

fn put_tree(h: &Harness, prefix: &str, tree: &Tree) {
    for (rel, data) in tree {
        h.put(&format!("{prefix}{rel}"), data.clone());
    }
}

fn read_tree(dir: &Path) -> Tree {
    files_under(dir).into_iter().map(|rel| (rel.clone(), std::fs::read(dir.join(&rel)).unwrap())).collect()
}

/// The version DEST points to (the last part of its link).
fn live(dest: &Path) -> String {
    let target = std::fs::read_link(dest).unwrap();
    target.file_name().unwrap().to_str().unwrap().to_string()
}

/// A running s3load whose stderr is read as it comes.
struct Watched {
    child: tokio::process::Child,
    lines: Arc<Mutex<Vec<String>>>,
    reader: tokio::task::JoinHandle<()>,
}

impl Watched {
    fn start(h: &Harness, args: &[&str]) -> Watched {
        let mut child = h.spawn(args);
        let stderr = child.stderr.take().unwrap();
        let lines = Arc::new(Mutex::new(Vec::new()));
        let into = lines.clone();
        let reader = tokio::spawn(async move {
            let mut r = tokio::io::BufReader::new(stderr).lines();
            while let Ok(Some(l)) = r.next_line().await {
                into.lock().unwrap().push(l);
            }
        });
        Watched { child, lines, reader }
    }

    /// Waits (up to 20 s) for a line of stderr containing `what`.
    async fn wait_for(&self, what: &str) {
        let t = std::time::Instant::now();
        while !self.lines.lock().unwrap().iter().any(|l| l.contains(what)) {
            assert!(
                t.elapsed() < Duration::from_secs(20),
                "no line saying {what:?} within 20 s; stderr so far:\n{}",
                self.lines.lock().unwrap().join("\n")
            );
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }

    /// Waits for the exit; returns the code and the whole of stderr.
    async fn finish(mut self) -> (i32, String) {
        let status = tokio::time::timeout(Duration::from_secs(60), self.child.wait()).await.expect("exits").unwrap();
        let _ = self.reader.await;
        (status.code().unwrap_or(-1), self.lines.lock().unwrap().join("\n"))
    }
}

/// DEST at version 1 (`m1/`), then version 2 (`m2/`); `m3/` holds version 3.
async fn two_versions() -> (Harness, PathBuf, String, String) {
    let h = Harness::new().await;
    for v in 1..=3 {
        put_tree(&h, &format!("m{v}/"), &model(v));
    }
    let dest = h.path("m");
    h.run(&["sync", "--atomic", "s3://bucket/m1/*", s(&dest)]).await.assert_ok();
    let v1 = live(&dest);
    h.run(&["sync", "--atomic", "s3://bucket/m2/*", s(&dest)]).await.assert_ok();
    let v2 = live(&dest);
    (h, dest, v1, v2)
}

/// Holds every GET of `key` until the gate opens.
fn hold_gets(h: &Harness, key: &str) -> Gate {
    let gate = Gate::new();
    h.server.faults().add(Rule::new("GetObject", When::Always, Fault::Hold(gate.clone())).for_key(key));
    gate
}

// Case 44: two loaders of the same version at once. The second waits for the
// first (one lock per DEST across the whole build), then finds the version
// complete and live: exit 0, nothing fetched, nothing left behind.
#[tokio::test(flavor = "multi_thread")]
async fn case_44_a_second_loader_of_the_same_version_waits_then_has_nothing_to_do() {
    let (h, dest, _v1, v2) = two_versions().await;
    let gate = hold_gets(&h, "m3/model-2.safetensors");
    let first = Watched::start(&h, &["sync", "--atomic", "s3://bucket/m3/*", s(&dest)]);
    gate.reached(1).await;
    let second = Watched::start(&h, &["sync", "--atomic", "s3://bucket/m3/*", s(&dest)]);
    second.wait_for("waiting for another run").await;
    assert_eq!(live(&dest), v2, "nothing switched while the first is held");
    gate.open();
    let (code, err) = first.finish().await;
    assert_eq!(code, 0, "{err}");
    let v3 = live(&dest);
    let gets_first = h.server.log().count("GetObject");
    let (code, err) = second.finish().await;
    assert_eq!(code, 0, "the second loader: {err}");
    assert!(err.contains(&format!("at version {v3} already: nothing to do")), "{err}");
    assert_eq!(h.server.log().count("GetObject"), gets_first, "the second fetched nothing");
    assert_eq!(read_tree(&dest), model(3));
    let left: Vec<String> = std::fs::read_dir(h.path(".m.versions"))
        .unwrap()
        .flatten()
        .filter_map(|e| e.file_name().into_string().ok())
        .filter(|n| n.ends_with(".partial"))
        .collect();
    assert!(left.is_empty(), "no build left behind: {left:?}");
}

// Case 45: a rollback during a build. The rollback waits for the build (the
// same lock); the build's message names the version it actually replaced, and
// `--keep 1` keeps that one; the rollback then goes back from the new
// version to it. DEST never points to a removed version.
#[tokio::test(flavor = "multi_thread")]
async fn case_45_a_rollback_during_a_build_waits_and_keep_spares_the_version_in_use() {
    let (h, dest, v1, v2) = two_versions().await;
    let gate = hold_gets(&h, "m3/model-2.safetensors");
    let build = Watched::start(&h, &["sync", "--atomic", "--keep", "1", "s3://bucket/m3/*", s(&dest)]);
    gate.reached(1).await;
    let rollback = Watched::start(&h, &["rollback", s(&dest)]);
    rollback.wait_for("waiting for another run").await;
    assert_eq!(live(&dest), v2, "the rollback has not run yet");
    gate.open();
    let (code, err) = build.finish().await;
    assert_eq!(code, 0, "{err}");
    assert!(err.contains(&format!("(was {v2})")), "the build names the version it replaced: {err}");
    let (code, err) = rollback.finish().await;
    assert_eq!(code, 0, "{err}");
    assert!(err.contains(&format!("back to version {v2} (was ")), "{err}");
    assert_eq!(live(&dest), v2);
    assert_eq!(read_tree(&dest), model(2), "DEST resolves to a whole version");
    assert!(!h.path(&format!(".m.versions/{v1}")).exists(), "--keep 1 removed the version no one used");
}

// Case 46: a version is named after the listing it is built from. An object
// added after the listing is not in the version (a later run builds the next
// one); an object replaced after the listing fails the build, naming it, and
// nothing is switched.
#[tokio::test(flavor = "multi_thread")]
async fn case_46_a_version_holds_exactly_the_listing_it_is_named_after() {
    let (h, dest, _v1, v2) = two_versions().await;
    let gate = Gate::new();
    h.server.faults().add(Rule::new("ListObjectsV2", When::Nth(1), Fault::HoldAnswer(gate.clone())));
    let build = Watched::start(&h, &["sync", "--atomic", "s3://bucket/m3/*", s(&dest)]);
    gate.reached(1).await;
    // Published while the loader holds its listing.
    h.put("m3/added.json", b"{}".to_vec());
    gate.open();
    let (code, err) = build.finish().await;
    assert_eq!(code, 0, "{err}");
    let v3 = live(&dest);
    assert_eq!(read_tree(&dest), model(3), "version {v3} holds what its listing held, not the later object");
    assert_eq!(h.server.log().count("ListObjectsV2"), 3, "one listing for each of the three builds");
    // The next run sees the new object: a new version.
    h.run(&["sync", "--atomic", "s3://bucket/m3/*", s(&dest)]).await.assert_ok();
    assert_ne!(live(&dest), v3);
    assert!(read_tree(&dest).contains_key("added.json"));

    // Replaced between the listing and the download: refused, not switched.
    h.run(&["sync", "--atomic", "s3://bucket/m2/*", s(&dest)]).await.assert_ok();
    assert_eq!(live(&dest), v2);
    put_tree(&h, "m4/", &model(4));
    let gate = Gate::new();
    h.server.faults().add(Rule::new("ListObjectsV2", When::Nth(1), Fault::HoldAnswer(gate.clone())));
    let build = Watched::start(&h, &["sync", "--atomic", "s3://bucket/m4/*", s(&dest)]);
    gate.reached(1).await;
    h.put("m4/model-2.safetensors", safetensors_bytes(400_000, 99).to_vec());
    gate.open();
    let (code, err) = build.finish().await;
    assert_eq!(code, 1, "{err}");
    assert!(err.contains("m4/model-2.safetensors: changed since it was listed"), "{err}");
    assert_eq!(live(&dest), v2, "nothing switched");
}

// Case 47: DEST whose version directory was removed by hand is rebuilt, not
// reported as "at version already".
#[tokio::test(flavor = "multi_thread")]
async fn case_47_a_dangling_dest_is_rebuilt() {
    let (h, dest, _v1, v2) = two_versions().await;
    std::fs::remove_dir_all(h.path(&format!(".m.versions/{v2}"))).unwrap();
    assert!(std::fs::metadata(&dest).is_err(), "DEST dangles");
    let run = h.run(&["sync", "--atomic", "s3://bucket/m2/*", s(&dest)]).await;
    run.assert_ok();
    assert!(!run.stderr.contains("nothing to do"), "{}", run.stderr);
    assert_eq!(live(&dest), v2);
    assert_eq!(read_tree(&dest), model(2));
}

// Case 48: rollback walks back through the history: v1 v2 v3, rollback, rollback
// gives v1 (not v3 again); a third finds nothing earlier.
#[tokio::test(flavor = "multi_thread")]
async fn case_48_repeated_rollbacks_walk_back() {
    let (h, dest, v1, v2) = two_versions().await;
    h.run(&["sync", "--atomic", "s3://bucket/m3/*", s(&dest)]).await.assert_ok();
    let v3 = live(&dest);
    let back = h.run(&["rollback", s(&dest)]).await;
    back.assert_ok();
    assert!(back.stderr.contains(&format!("back to version {v2} (was {v3})")), "{}", back.stderr);
    let back = h.run(&["rollback", s(&dest)]).await;
    back.assert_ok();
    assert!(back.stderr.contains(&format!("back to version {v1} (was {v2})")), "{}", back.stderr);
    assert_eq!(read_tree(&dest), model(1));
    let none = h.run(&["rollback", s(&dest)]).await;
    assert_eq!(none.code, 3, "nothing could be done: {}", none.stderr);
    assert!(none.stderr.contains("no earlier version"), "{}", none.stderr);
    assert_eq!(live(&dest), v1);
    // A new build after rollbacks is rolled back from to where DEST was.
    h.run(&["sync", "--atomic", "s3://bucket/m3/*", s(&dest)]).await.assert_ok();
    h.run(&["rollback", s(&dest)]).await.assert_ok();
    assert_eq!(live(&dest), v1);
}

// Case 49: names of files made beside others' are unique across pods, whose
// main process is PID 1 in each: a loader running as PID 1 leaves another
// pod's link in the making (`.m.link-...`) alone.
#[tokio::test(flavor = "multi_thread")]
async fn case_49_a_loader_running_as_pid_1_leaves_another_pods_new_link_alone() {
    let (h, dest, _v1, _v2) = two_versions().await;
    let theirs = h.path(".m.link-1");
    std::os::unix::fs::symlink(".m.versions/someone-elses", &theirs).unwrap();
    let endpoint = h.server.endpoint_url();
    let args = [
        "--pid",
        "--fork",
        env!("CARGO_BIN_EXE_s3load"),
        "--endpoint-url",
        &endpoint,
        "sync",
        "--atomic",
        "s3://bucket/m3/*",
        s(&dest),
    ];
    let run = h.command("unshare", &args, &h.server.client_env()).await;
    run.assert_ok();
    assert_eq!(read_tree(&dest), model(3));
    assert_eq!(std::fs::read_link(&theirs).unwrap(), Path::new(".m.versions/someone-elses"), "left alone");
}

// --- shards of one run (`--shard K/N --run-id ID`) started at different times ---

/// Shard `k` of `n` of run `run`, alone, to its exit.
async fn shard(h: &Harness, run: &str, k: u32, n: u32, dest: &Path, extra: &[&str]) -> crate::harness::Run {
    let spec = format!("{k}/{n}");
    let mut args = vec!["sync", "--shard", &spec, "--run-id", run, "--part-size", "1"];
    args.extend_from_slice(extra);
    args.extend(["s3://bucket/m/*", s(dest)]);
    h.run(&args).await
}

/// A destination holding `n` files the source lacks; their names.
fn with_stale_files(h: &Harness, n: usize) -> (PathBuf, Vec<String>) {
    let dest = h.path("d");
    std::fs::create_dir_all(&dest).unwrap();
    let stale: Vec<String> = (0..n).map(|i| format!("stale-{i}.bin")).collect();
    for name in &stale {
        std::fs::write(dest.join(name), b"old").unwrap();
    }
    (dest, stale)
}

fn stale_left(dest: &Path, names: &[String]) -> usize {
    names.iter().filter(|n| dest.join(n).exists()).count()
}

// Case 55: an object split across two shards is replaced between the two
// shards' runs. Both apply the run's one listing (one identity, one split
// file); the second finds the object changed and fetches it whole: the file
// is in place with the new bytes, not left as two split files neither shard
// can finish.
#[tokio::test(flavor = "multi_thread")]
async fn case_55_a_split_object_replaced_between_two_shards_is_put_in_place() {
    let h = Harness::new().await;
    h.put("m/big.bin", generate_bytes(8 << 20, 1));
    let dest = h.path("d");
    shard(&h, "job", 0, 2, &dest, &[]).await.assert_ok();
    assert!(!dest.join("big.bin").exists(), "half of it is written");
    let new = generate_bytes(8 << 20, 2);
    h.put("m/big.bin", new.clone());
    let run = shard(&h, "job", 1, 2, &dest, &[]).await;
    run.assert_ok();
    assert!(std::fs::read(dest.join("big.bin")).unwrap() == new, "the object as it is now, whole");
}

// Case 56: shards that start at different times, with an upload between them
// that would move keys from one share to another: the second shard applies the
// first's listing, so every object of it is fetched by one shard.
#[tokio::test(flavor = "multi_thread")]
async fn case_56_shards_listing_at_different_times_apply_one_listing_and_miss_nothing() {
    let h = Harness::new().await;
    let originals: Vec<String> = (1..=8).map(|i| format!("f{i}.bin")).collect();
    for (i, name) in originals.iter().enumerate() {
        h.put(&format!("m/{name}"), generate_bytes((i + 1) * 1000, i as u64));
    }
    let dest = h.path("d");
    shard(&h, "job", 1, 2, &dest, &[]).await.assert_ok();
    // Published between the two pods' starts: alone it outweighs the rest,
    // so a listing made now gives every original to shard 1.
    h.put("m/late.bin", generate_bytes(100_000, 99));
    shard(&h, "job", 0, 2, &dest, &[]).await.assert_ok();
    let missing: Vec<&String> = originals.iter().filter(|n| !dest.join(n).exists()).collect();
    assert!(missing.is_empty(), "every object of the run's listing fetched: {missing:?} missing");
    assert!(!dest.join("late.bin").exists(), "not in the run's listing: the next run fetches it");
    // The next run (a new Job) lists again.
    for k in 0..2 {
        shard(&h, "next-job", k, 2, &dest, &[]).await.assert_ok();
    }
    assert!(dest.join("late.bin").exists());
}

// Case 57: --max-delete bounds the whole run's deletions, not each shard's:
// 6 stale files, --max-delete 4, two shards: nothing deleted, both fail.
#[tokio::test(flavor = "multi_thread")]
async fn case_57_max_delete_bounds_the_whole_runs_deletions() {
    let h = Harness::new().await;
    h.put("m/keep.bin", b"keep".to_vec());
    let (dest, stale) = with_stale_files(&h, 6);
    for k in 0..2 {
        let run = shard(&h, "job", k, 2, &dest, &["--delete", "--max-delete", "4"]).await;
        assert_eq!(run.code, 1, "shard {k}: {}", run.stderr);
        assert!(
            run.stderr.contains("6 destination files would be deleted, more than --max-delete 4"),
            "{}",
            run.stderr
        );
    }
    assert_eq!(stale_left(&dest, &stale), 6, "nothing deleted");
}

// Case 58: a key refused anywhere in the run's listing holds back every
// shard's deletions (each shard reports it), not only the deletions of the
// shard its key hashes to.
#[tokio::test(flavor = "multi_thread")]
async fn case_58_a_refused_key_holds_back_every_shards_deletions() {
    let h = Harness::new().await;
    h.put("m/keep.bin", b"keep".to_vec());
    h.put("m/a//b.bin", b"hostile".to_vec());
    let (dest, stale) = with_stale_files(&h, 6);
    for k in 0..2 {
        let run = shard(&h, "job", k, 2, &dest, &["--delete"]).await;
        assert_eq!(run.code, 1, "shard {k}: {}", run.stderr);
        assert!(run.stderr.contains("a//b.bin"), "shard {k} names the refused key: {}", run.stderr);
    }
    assert_eq!(stale_left(&dest, &stale), 6, "no shard deleted");
    assert!(dest.join("keep.bin").exists());
}

// Case 59: the shared files of a split object's replaced version (pieces
// written by a run before the object changed) are removed once a later run
// puts the object in place, or finds it in place, with no run holding them.
#[tokio::test(flavor = "multi_thread")]
async fn case_59_split_files_of_a_replaced_version_are_removed_by_the_next_complete_run() {
    let h = Harness::new().await;
    h.put("m/big.bin", generate_bytes(8 << 20, 1));
    let dest = h.path("d");
    shard(&h, "first", 0, 2, &dest, &[]).await.assert_ok();
    let split_files = || -> Vec<String> {
        std::fs::read_dir(&dest)
            .unwrap()
            .flatten()
            .map(|e| e.file_name().to_string_lossy().into_owned())
            .filter(|n| n.ends_with(".s3load-split") || n.ends_with(".s3load-piece"))
            .collect()
    };
    assert!(!split_files().is_empty(), "the first run's piece waits for the other shard");
    // Files a moment old may be another run's, created and not yet locked:
    // only settled ones are taken for leftovers.
    let settle = || std::thread::sleep(std::time::Duration::from_millis(2100));
    settle();
    let new = generate_bytes(8 << 20, 2);
    h.put("m/big.bin", new.clone());
    // A new run: both shards, the object split again under its new identity;
    // the shard that puts it in place removes the old version's files.
    for k in 0..2 {
        shard(&h, "second", k, 2, &dest, &[]).await.assert_ok();
    }
    assert!(std::fs::read(dest.join("big.bin")).unwrap() == new);
    assert_eq!(split_files(), Vec::<String>::new(), "nothing of the replaced version left");

    // Half of a third version, then the object replaced by one too small to
    // split: no shard of the next run has a piece of it, and a complete run
    // removes the files of the version it never finished.
    h.put("m/big.bin", generate_bytes(8 << 20, 3));
    shard(&h, "third", 0, 2, &dest, &[]).await.assert_ok();
    assert!(!split_files().is_empty());
    settle();
    h.put("m/big.bin", generate_bytes(1000, 4));
    for k in 0..2 {
        shard(&h, "fourth", k, 2, &dest, &[]).await.assert_ok();
    }
    assert_eq!(std::fs::read(dest.join("big.bin")).unwrap().len(), 1000);
    assert_eq!(split_files(), Vec::<String>::new(), "nothing of the unfinished version left");
}

/// Runs s3load, failing the test if it takes more than 30 s (a hang).
async fn bounded(h: &Harness, args: &[&str]) -> crate::harness::Run {
    tokio::time::timeout(std::time::Duration::from_secs(30), h.run(args)).await.expect("no hang")
}

fn mkfifo(p: &Path) {
    assert!(std::process::Command::new("mkfifo").arg(p).status().unwrap().success());
}

// Case 60: a FIFO planted where s3load keeps its own files (the versions'
// lock and history, a run's listing and its lock) is refused as planted, never
// opened blocking: no loader hangs holding a lock.
#[tokio::test(flavor = "multi_thread")]
async fn case_60_a_fifo_at_s3loads_own_files_is_refused_not_a_hang() {
    let (h, dest, _v1, v2) = two_versions().await;
    for name in ["history", ".lock"] {
        let p = h.path(&format!(".m.versions/{name}"));
        let _ = std::fs::remove_file(&p);
        mkfifo(&p);
        for args in [&["sync", "--atomic", "s3://bucket/m3/*", s(&dest)][..], &["rollback", s(&dest)]] {
            let run = bounded(&h, args).await;
            assert_ne!(run.code, 0, "{name}: {args:?}: {}", run.stderr);
            assert!(run.stderr.contains("is not a file s3load made"), "{name}: {}", run.stderr);
        }
        std::fs::remove_file(&p).unwrap();
    }
    assert_eq!(live(&dest), v2);
    let d = h.path("sharded");
    std::fs::create_dir_all(d.join(".s3load")).unwrap();
    for name in ["run-r.listing", "run-r.lock"] {
        let p = d.join(".s3load").join(name);
        let _ = std::fs::remove_file(&p);
        mkfifo(&p);
        let run = bounded(&h, &["sync", "--shard", "0/2", "--run-id", "r", "s3://bucket/m1/*", s(&d)]).await;
        assert_ne!(run.code, 0, "{name}: {}", run.stderr);
        assert!(run.stderr.contains("not what s3load created there"), "{name}: {}", run.stderr);
        std::fs::remove_file(&p).unwrap();
    }
}

// Case 61: a run's recorded listing is read as the listing it stands for:
// a key outside the source, or one named twice, refuses the listing.
#[tokio::test(flavor = "multi_thread")]
async fn case_61_a_forged_run_listing_is_refused() {
    let h = Harness::new().await;
    h.put("m/a.bin", b"a".to_vec());
    h.put("other/x.bin", b"x".to_vec());
    let dest = h.path("d");
    std::fs::create_dir_all(dest.join(".s3load")).unwrap();
    let head =
        r#"{"format":"s3load-run-listing-1","run":"r","source":"s3://bucket/m/*","shards":1,"flags":"--part-size 1"}"#;
    for (body, why) in [
        (r#"{"k":"other/x.bin","s":1,"e":null,"t":null}"#, "not under"),
        (
            "{\"k\":\"m/a.bin\",\"s\":1,\"e\":null,\"t\":null}\n{\"k\":\"m/a.bin\",\"s\":1,\"e\":null,\"t\":null}",
            "twice",
        ),
    ] {
        let n = body.lines().count();
        let end = format!(r#"{{"end":true,"objects":{n},"refused":0,"markers":0}}"#);
        std::fs::write(dest.join(".s3load/run-r.listing"), format!("{head}\n{body}\n{end}\n")).unwrap();
        let run =
            h.run(&["sync", "--shard", "0/1", "--run-id", "r", "--part-size", "1", "s3://bucket/m/*", s(&dest)]).await;
        assert_eq!(run.code, 3, "{}", run.stderr);
        assert!(run.stderr.contains(why), "{why}: {}", run.stderr);
        assert!(!dest.join("other").exists() && !dest.join("x.bin").exists());
    }
}

// Case 64: a shard of a run given other flags that decide who fetches what
// (`--verify off` among them: objects are not split without verification)
// than the shard that recorded the run's listing (a pod restarted after its
// ConfigMap changed). Its share, or its pieces of a split object, would not
// fit the other shards': a split object never completed, objects fetched by
// no shard, each shard exiting 0. It is refused, naming both, and nothing of
// its own is written; started again with the run's flags it completes the run.
#[tokio::test(flavor = "multi_thread")]
async fn case_64_a_shard_given_other_flags_than_its_run_is_refused() {
    let h = Harness::new().await;
    h.put("m/big.bin", generate_bytes(8 << 20, 1));
    for i in 0..6 {
        h.put(&format!("m/f{i}.bin"), generate_bytes(1000 * (i + 1), i as u64));
    }
    let dest = h.path("d");
    shard(&h, "job", 0, 2, &dest, &[]).await.assert_ok();
    let before = files_under(&dest);
    let other_part_size =
        ["sync", "--shard", "1/2", "--run-id", "job", "--part-size", "2", "s3://bucket/m/*", s(&dest)];
    for (extra, named) in [
        (&[][..], "--part-size 2"),
        (&["--no-split"][..], "--no-split"),
        (&["--verify", "off"][..], "--verify off"),
        (&["--exclude", "f1.bin"][..], "--exclude \"f1.bin\""),
    ] {
        let run = match extra {
            [] => h.run(&other_part_size).await,
            _ => shard(&h, "job", 1, 2, &dest, extra).await,
        };
        assert_eq!(run.code, 3, "{extra:?}: {}", run.stderr);
        assert!(
            run.stderr.contains("given --part-size 1, and this shard is given") && run.stderr.contains(named),
            "{extra:?}: {}",
            run.stderr
        );
        assert_eq!(files_under(&dest), before, "{extra:?}: nothing written");
    }
    // A listing from an s3load that recorded no flags is refused the same way.
    let recorded = std::fs::read_to_string(dest.join(".s3load/run-job.listing")).unwrap();
    let (head, rest) = recorded.split_once('\n').unwrap();
    let mut head: serde_json::Value = serde_json::from_str(head).unwrap();
    assert_eq!(head["flags"], "--part-size 1");
    head.as_object_mut().unwrap().remove("flags");
    std::fs::write(dest.join(".s3load/run-old.listing"), format!("{head}\n{rest}")).unwrap();
    let run = shard(&h, "old", 1, 2, &dest, &[]).await;
    assert_eq!(run.code, 3, "{}", run.stderr);
    assert!(run.stderr.contains("recorded by an older s3load"), "{}", run.stderr);
    assert_eq!(files_under(&dest), before);

    shard(&h, "job", 1, 2, &dest, &[]).await.assert_ok();
    let mut all: Vec<String> = (0..6).map(|i| format!("f{i}.bin")).collect();
    all.push("big.bin".into());
    all.sort();
    assert_eq!(files_under(&dest), all);
    assert_eq!(std::fs::read(dest.join("big.bin")).unwrap(), generate_bytes(8 << 20, 1));
}

// Hostile run ids are usage errors before anything is listed, and a sharded
// download without one says what to give.
#[tokio::test(flavor = "multi_thread")]
async fn a_bad_or_missing_run_id_is_a_usage_error_before_anything_is_listed() {
    let h = Harness::new().await;
    let dest = h.path("d");
    for id in ["../x", ".s3load", "a/b", ""] {
        let run = h.run(&["sync", "--shard", "0/2", "--run-id", id, "s3://bucket/m/*", s(&dest)]).await;
        assert_eq!(run.code, 2, "{id:?}: {}", run.stderr);
    }
    let run = h.run(&["sync", "--shard", "0/2", "s3://bucket/m/*", s(&dest)]).await;
    assert_eq!(run.code, 2, "{}", run.stderr);
    assert!(run.stderr.contains("--shard needs --run-id"), "{}", run.stderr);
    assert_eq!(h.server.log().count("ListObjectsV2"), 0);
    assert!(!dest.exists());
}
