//! s3load side by side with s5cmd and rclone, on the same in-process S3 server and
//! the same generated (incompressible) data.
//!
//! Run with `benches/run.sh` (installs the peers with pip, builds s3load in release
//! mode, then runs this). Each run uses a fresh destination, dirty pages are flushed
//! (`sync(2)`) between runs, tools alternate within each round (in an order that
//! rotates from round to round, after one untimed run), and the report gives
//! medians of wall time, client CPU (user+sys, from `wait4`) and peak RSS, plus the
//! ratio s3load/peer. The server runs in this process, so its CPU is not counted
//! against any client; client and server share the machine's cores.
//!
//! Options: `--runs N` (default 3), `--workloads large,model,small,noop,upload`, `--net`
//! (also run every workload through the emulated network: 20 ms to first byte,
//! 100 MB/s per connection; `--net-only` for that alone), `--tools s3load,s5cmd,rclone`, `--dir PATH`.
//! Tools `s3load-verify-off`, `s3load-durability-off` and `s3load-fsync` run
//! s3load with that setting, to measure what the default costs; `s3load-dist`
//! runs the binary named by `$S3LOAD_DIST_BIN` (the shipped static build), and
//! `s3load-before` the one named by `$S3LOAD_BEFORE_BIN` (the build before a change).
//! `--legacy` stores the objects as s5cmd's own upload leaves them and as most
//! existing buckets hold them: MD5 ETags and no stored checksum (1 GiB objects in
//! 50 MiB multipart parts, 64 KiB objects in one PUT). Tool `rclone-fast` is
//! rclone at its fastest settings here (`--transfers 32 --multi-thread-streams 16`);
//! `s5cmd-then-sync` is s5cmd followed by `sync(1)` (what `--durability syncfs`
//! is compared with); `s3load-syncfs` is s3load with `--durability syncfs`.
//! Workload `model` is a published model's files (see [`MODEL`]).
//! `--hash-speed` prints the single-core speed of each body hash instead;
//! `--ttfb` the time from s3load's start to its first request and first GET.
#![allow(unsafe_code)]

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant, SystemTime};

use s3load_testserver::{ACCESS_KEY, Options, SECRET_KEY, Shaping, TestServer, Writer, generate_bytes};

const BUCKET: &str = "bench";

#[derive(Clone, Copy, Debug, PartialEq)]
enum Workload {
    /// 4 × 1 GiB objects into an empty directory.
    Large,
    /// 5,000 × 64 KiB objects into an empty directory.
    Small,
    /// Re-sync of the 5,000 small objects onto an up-to-date copy.
    Noop,
    /// 4 × 1 GiB local files (on the `--dir` filesystem) uploaded to an empty prefix.
    PutJob,
    /// A model as it is published: three 1 GiB safetensors shards, a 45 MiB
    /// last shard, a 9 MiB tokenizer and five small JSON files.
    Model,
}

/// A model file of `size` bytes as `--check-model` expects it: a well-formed
/// safetensors shard, a weight index naming the first shard's tensor (padded
/// with metadata to its size), or other bytes.
fn model_file(name: &str, size: usize, seed: u64) -> bytes::Bytes {
    if name.ends_with(".safetensors") {
        return s3load_testserver::safetensors_bytes(size, seed);
    }
    if name.ends_with(".index.json") {
        let head = r#"{"weight_map": {"t": "model-00001-of-00004.safetensors"}, "metadata": {"pad": ""#;
        let mut text = head.to_string();
        text.push_str(&"x".repeat(size.saturating_sub(head.len() + 3)));
        text.push_str("\"}}");
        return bytes::Bytes::from(text);
    }
    generate_bytes(size, seed)
}

/// The model workload's files: (name, size).
const MODEL: [(&str, usize); 10] = [
    ("model-00001-of-00004.safetensors", 1 << 30),
    ("model-00002-of-00004.safetensors", 1 << 30),
    ("model-00003-of-00004.safetensors", 1 << 30),
    ("model-00004-of-00004.safetensors", 45 << 20),
    ("tokenizer.json", 9 << 20),
    ("model.safetensors.index.json", 25 << 10),
    ("tokenizer_config.json", 50 << 10),
    ("config.json", 700),
    ("generation_config.json", 200),
    ("special_tokens_map.json", 500),
];

impl Workload {
    fn name(self) -> &'static str {
        match self {
            Workload::Large => "4 x 1 GiB",
            Workload::Small => "5000 x 64 KiB",
            Workload::Noop => "no-op re-sync of 5000",
            Workload::PutJob => "upload 4 x 1 GiB",
            Workload::Model => "model (3.05 GiB in 10 files)",
        }
    }
    fn prefix(self) -> &'static str {
        match self {
            Workload::Large | Workload::PutJob => "large",
            Workload::Small | Workload::Noop => "small",
            Workload::Model => "model",
        }
    }
}

struct Sample {
    wall: f64,
    cpu: f64,
    rss_mib: f64,
}

fn arg(name: &str) -> Option<String> {
    let args: Vec<String> = std::env::args().collect();
    args.iter().position(|a| a == name).and_then(|i| args.get(i + 1).cloned())
}

fn which(tool: &str) -> Option<PathBuf> {
    std::env::var_os("PATH")?.to_str()?.split(':').map(|d| Path::new(d).join(tool)).find(|p| p.is_file())
}

/// s3load with non-default settings, to measure what a feature costs: the
/// ratio s3load / variant is the cost of the default.
fn s3load_variant(tool: &str) -> Option<&'static [&'static str]> {
    match tool {
        "s3load" => Some(&[]),
        "s3load-verify-off" => Some(&["--verify", "off"]),
        "s3load-check-model-off" => Some(&["--check-model", "off"]),
        "s3load-durability-off" => Some(&["--durability", "off"]),
        "s3load-syncfs" => Some(&["--durability", "syncfs"]),
        "s3load-fsync" => Some(&["--durability", "fsync"]),
        // The shipped binary (static, `dist` profile), from $S3LOAD_DIST_BIN.
        "s3load-dist" => Some(&[]),
        // An earlier build, from $S3LOAD_BEFORE_BIN: a change against the build before it.
        "s3load-before" => Some(&[]),
        _ => None,
    }
}

/// The binary behind an s3load tool name.
fn s3load_binary(tool: &str, default: &str) -> String {
    match tool {
        "s3load-dist" => std::env::var("S3LOAD_DIST_BIN").expect("S3LOAD_DIST_BIN names the dist binary"),
        "s3load-before" => std::env::var("S3LOAD_BEFORE_BIN").expect("S3LOAD_BEFORE_BIN names the earlier build"),
        _ => default.to_string(),
    }
}

/// The test server's credentials, no instance metadata, stdout discarded.
fn with_test_credentials(mut c: Command) -> Command {
    c.env("AWS_ACCESS_KEY_ID", ACCESS_KEY)
        .env("AWS_SECRET_ACCESS_KEY", SECRET_KEY)
        .env("AWS_REGION", "us-east-1")
        .env("AWS_EC2_METADATA_DISABLED", "true")
        .stdout(Stdio::null());
    c
}

/// rclone's remote `bench:` pointing at the test server.
fn rclone_remote(c: &mut Command, endpoint: &str) {
    c.env("RCLONE_CONFIG_BENCH_TYPE", "s3")
        .env("RCLONE_CONFIG_BENCH_PROVIDER", "Other")
        .env("RCLONE_CONFIG_BENCH_ENDPOINT", endpoint)
        .env("RCLONE_CONFIG_BENCH_ACCESS_KEY_ID", ACCESS_KEY)
        .env("RCLONE_CONFIG_BENCH_SECRET_ACCESS_KEY", SECRET_KEY)
        .env("RCLONE_CONFIG_BENCH_REGION", "us-east-1")
        .env("RCLONE_CONFIG_BENCH_FORCE_PATH_STYLE", "true")
        .env("RCLONE_CONFIG_BENCH_LIST_VERSION", "2");
}

fn tool_command(tool: &str, endpoint: &str, src_prefix: &str, dest: &Path) -> Command {
    let s3load = std::env::var("S3LOAD_BIN").unwrap_or_else(|_| "target/release/s3load".into());
    let src = format!("s3://{BUCKET}/{src_prefix}/*");
    let c = match tool {
        t if s3load_variant(t).is_some() => {
            let mut c = Command::new(s3load_binary(t, &s3load));
            c.args(["--endpoint-url", endpoint, "--progress", "off"]).args(s3load_variant(t).unwrap_or_default());
            c.args(["sync", &src, dest.to_str().unwrap()]);
            c
        }
        "s5cmd" => {
            let mut c = Command::new("s5cmd");
            c.args(["--endpoint-url", endpoint, "sync", &src, &format!("{}/", dest.display())]);
            c
        }
        // What durability costs a user of s5cmd: its sync, then `sync(1)`.
        "s5cmd-then-sync" => {
            let mut c = Command::new("sh");
            c.args(["-c", "s5cmd \"$@\" && sync", "sh", "--endpoint-url", endpoint, "sync", &src]);
            c.arg(format!("{}/", dest.display()));
            c
        }
        "rclone" | "rclone-fast" => {
            let mut c = Command::new("rclone");
            c.args(["sync", &format!("bench:{BUCKET}/{src_prefix}"), dest.to_str().unwrap()]);
            if tool == "rclone-fast" {
                c.args(["--transfers", "32", "--multi-thread-streams", "16"]);
            }
            rclone_remote(&mut c, endpoint);
            c
        }
        other => panic!("unknown tool {other}"),
    };
    with_test_credentials(c)
}

/// Each tool's upload of directory `src` to `s3://bench/{prefix}/`.
fn upload_command(tool: &str, endpoint: &str, src: &Path, prefix: &str) -> Command {
    let s3load = std::env::var("S3LOAD_BIN").unwrap_or_else(|_| "target/release/s3load".into());
    let src_dir = format!("{}/", src.display());
    let dst = format!("s3://{BUCKET}/{prefix}/");
    let c = match tool {
        t if s3load_variant(t).is_some() => {
            let mut c = Command::new(s3load_binary(t, &s3load));
            c.args(["--endpoint-url", endpoint, "--progress", "off"]).args(s3load_variant(t).unwrap_or_default());
            c.args(["sync", &src_dir, &dst]);
            c
        }
        "s5cmd" => {
            let mut c = Command::new("s5cmd");
            c.args(["--endpoint-url", endpoint, "sync", &src_dir, &dst]);
            c
        }
        "rclone" => {
            let mut c = Command::new("rclone");
            c.args(["sync", src.to_str().unwrap(), &format!("bench:{BUCKET}/{prefix}")]);
            rclone_remote(&mut c, endpoint);
            c
        }
        other => panic!("unknown tool {other}"),
    };
    with_test_credentials(c)
}

/// Uploads, checks that the prefix then holds exactly the source's bytes, and
/// removes the objects again (the server keeps them in memory).
fn run_upload(
    tool: &str,
    endpoint: &str,
    src: &Path,
    store: &s3load_testserver::Store,
    round: usize,
) -> Result<Sample, String> {
    let prefix = format!("up-{tool}-{round}");
    flush_disk();
    wait_for_time_wait_drain();
    let sample = measure(upload_command(tool, endpoint, src, &prefix));
    let keys: Vec<(String, u64)> = store
        .with_bucket(BUCKET, |b| {
            b.iter()
                .filter(|(k, _)| k.starts_with(&format!("{prefix}/")))
                .map(|(k, o)| (k.clone(), o.data.len() as u64))
                .collect()
        })
        .unwrap_or_default();
    for (k, _) in &keys {
        store.delete(BUCKET, k);
    }
    let sample = sample?;
    let bytes: u64 = keys.iter().map(|(_, n)| n).sum();
    if keys.len() != 4 || bytes != 4 << 30 {
        return Err(format!("prefix holds {} objects / {bytes} bytes, expected 4 / {}", keys.len(), 4u64 << 30));
    }
    Ok(sample)
}

/// Runs the command to completion; wall time, user+sys CPU and peak RSS of the child.
///
/// The tool is started by a fresh copy of this binary in `--wrap` mode: a child
/// forked from this (large: it holds the server's data) process would report this
/// process's resident set as its own peak RSS, since Linux carries the high-water
/// mark across `exec`.
fn measure(cmd: Command) -> Result<Sample, String> {
    let usage_file = tempfile::NamedTempFile::new().map_err(|e| e.to_string())?;
    let mut wrapper = Command::new(std::env::current_exe().map_err(|e| e.to_string())?);
    wrapper.arg("--wrap").arg(cmd.get_program()).args(cmd.get_args());
    for (k, v) in cmd.get_envs() {
        if let Some(v) = v {
            wrapper.env(k, v);
        }
    }
    wrapper.env("S3LOAD_BENCH_USAGE", usage_file.path()).stdout(Stdio::null()).stderr(Stdio::piped());
    let out = wrapper.output().map_err(|e| format!("spawn: {e}"))?;
    let err = String::from_utf8_lossy(&out.stderr);
    if !out.status.success() {
        return Err(format!("{}: {}", out.status, err.lines().rev().take(3).collect::<Vec<_>>().join(" | ")));
    }
    let text = std::fs::read_to_string(usage_file.path()).map_err(|e| e.to_string())?;
    let v: Vec<f64> = text.split_whitespace().filter_map(|x| x.parse().ok()).collect();
    Ok(Sample { wall: v[0], cpu: v[1], rss_mib: v[2] })
}

/// `--wrap PROGRAM ARGS...`: run it, wait for it with `wait4`, write
/// "wall cpu rss_mib" to $S3LOAD_BENCH_USAGE, exit with its status.
fn wrap() -> ! {
    let args: Vec<String> = std::env::args().skip_while(|a| a != "--wrap").skip(1).collect();
    let start = Instant::now();
    let child = Command::new(&args[0]).args(&args[1..]).spawn().expect("spawn tool");
    let pid = child.id() as libc::pid_t;
    let mut status = 0;
    // SAFETY: plain FFI call with pointers to live, writable locals; `child` is not
    // waited on elsewhere, so the pid is ours to reap.
    let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
    let rc = unsafe { libc::wait4(pid, &mut status, 0, &mut usage) };
    let wall = start.elapsed().as_secs_f64();
    let tv = |t: libc::timeval| t.tv_sec as f64 + t.tv_usec as f64 / 1e6;
    let cpu = tv(usage.ru_utime) + tv(usage.ru_stime);
    let line = format!("{wall} {cpu} {}", usage.ru_maxrss as f64 / 1024.0);
    std::fs::write(std::env::var("S3LOAD_BENCH_USAGE").expect("usage file"), line).expect("write usage");
    let ok = rc == pid && libc::WIFEXITED(status) && libc::WEXITSTATUS(status) == 0;
    std::process::exit(if ok { 0 } else { 1 });
}

/// `--hash-speed`: single-thread throughput of each way s3load hashes bodies, on
/// 1 GiB fed in 64 KiB pieces as a body arrives (GiB/s per core), then of
/// multi-buffer MD5 calls of 8 to 32 lanes (GiB/s of all lanes together).
fn hash_speed() {
    use s3load::integrity::{Algorithm, DigestKind, PartDigest};
    let data = generate_bytes(1 << 30, 5);
    println!("| hash | GiB/s per core |");
    println!("|---|---|");
    let kinds = Algorithm::ALL.into_iter().map(DigestKind::Crc).chain([DigestKind::Md5]);
    for kind in kinds {
        let mut best = f64::MAX;
        for _ in 0..3 {
            let t = Instant::now();
            let mut d = PartDigest::new(kind);
            for piece in data.chunks(64 << 10) {
                d.update(piece);
            }
            std::hint::black_box(d.finish());
            best = best.min(t.elapsed().as_secs_f64());
        }
        println!("| {kind:?} | {:.1} |", 1.0 / best);
    }
    // MD5s of several parts at once, as the hashing thread makes them:
    // 256 KiB per lane and call, all lanes together.
    let md5 = md5_many::Md5Many::new();
    let lane = 256 << 10;
    for width in [8usize, 16, 24, 32] {
        let inputs: Vec<&[u8]> = data.chunks(lane).take(width).collect();
        let mut best = f64::MAX;
        for _ in 0..3 {
            let mut states = vec![md5_many::Md5State::new(); width];
            let t = Instant::now();
            for _ in 0..(1 << 30) / (lane * width) {
                md5.update_many(&mut states, &inputs);
            }
            std::hint::black_box(&states);
            best = best.min(t.elapsed().as_secs_f64());
        }
        let native = md5.lanes();
        println!("| MD5, {width} lanes at once (this CPU's unit: {native}) | {:.1} |", 1.0 / best);
    }
}

/// `--ttfb`: how long s3load takes from process start to its first request and to
/// its first GET against the local server (one 1 MiB object, `cp`), over 15 runs.
/// The server's request log is polled every 0.2 ms; medians and extremes in ms.
async fn time_to_first_byte() {
    let s3load = std::env::var("S3LOAD_BIN").unwrap_or_else(|_| "target/release/s3load".into());
    let server = TestServer::start().await.expect("server");
    server.store().create_bucket(BUCKET);
    server.store().put(BUCKET, "m/config.json", generate_bytes(1 << 20, 1));
    let dest = tempfile::tempdir().expect("tempdir");
    let (mut first_req, mut first_get, mut total) = (Vec::new(), Vec::new(), Vec::new());
    for i in 0..15 {
        server.log().clear();
        let mut c = Command::new(&s3load);
        c.args(["--endpoint-url", &server.endpoint_url(), "--progress", "off", "cp", "s3://bench/m/config.json"])
            .arg(dest.path().join(format!("c{i}.json")));
        let mut c = with_test_credentials(c);
        let start = Instant::now();
        let mut child = c.stderr(Stdio::null()).spawn().expect("spawn s3load");
        let (mut req, mut get) = (None, None);
        loop {
            if req.is_none() && !server.log().records().is_empty() {
                req = Some(start.elapsed());
            }
            if get.is_none() && server.log().count("GetObject") > 0 {
                get = Some(start.elapsed());
            }
            if let Ok(Some(_)) = child.try_wait() {
                break;
            }
            tokio::time::sleep(Duration::from_micros(200)).await;
        }
        total.push(start.elapsed().as_secs_f64() * 1000.0);
        first_req.push(req.map_or(f64::NAN, |d| d.as_secs_f64() * 1000.0));
        first_get.push(get.map_or(f64::NAN, |d| d.as_secs_f64() * 1000.0));
    }
    let show = |name: &str, v: Vec<f64>| {
        let lo = v.iter().copied().fold(f64::MAX, f64::min);
        let hi = v.iter().copied().fold(0.0, f64::max);
        println!("| {name} | {:.1} | {lo:.1} | {hi:.1} |", median(v));
    };
    println!("| from process start to | median ms | min | max |");
    println!("|---|---|---|---|");
    show("first request (HeadBucket / HeadObject)", first_req);
    show("first GET", first_get);
    show("exit (1 MiB copied, verified, synced)", total);
}

/// Sockets in TIME_WAIT on this machine (IPv4 and IPv6).
fn time_wait_sockets() -> usize {
    ["/proc/net/tcp", "/proc/net/tcp6"]
        .iter()
        .filter_map(|p| std::fs::read_to_string(p).ok())
        .map(|t| t.lines().skip(1).filter(|l| l.split_whitespace().nth(3) == Some("06")).count())
        .sum()
}

/// A tool that opens a connection per request leaves thousands of sockets in
/// TIME_WAIT, which slows the next tool's run (measured: s3load 0.7 s -> 1.2 s on
/// 5,000 objects right after an s5cmd run). Each run starts once they have drained
/// (the kernel holds them 60 s), so no tool pays for another's connections.
fn wait_for_time_wait_drain() {
    let start = Instant::now();
    while time_wait_sockets() > 500 && start.elapsed() < Duration::from_secs(65) {
        std::thread::sleep(Duration::from_millis(500));
    }
}

fn flush_disk() {
    // SAFETY: sync(2) takes no arguments and cannot fail.
    unsafe { libc::sync() };
}

fn dir_bytes(root: &Path) -> (usize, u64) {
    let (mut n, mut bytes) = (0, 0);
    let mut stack = vec![root.to_path_buf()];
    while let Some(d) = stack.pop() {
        let Ok(rd) = std::fs::read_dir(&d) else { continue };
        for e in rd.flatten() {
            let m = e.metadata().unwrap();
            if m.is_dir() && d == root && e.file_name() == ".s3load" {
                continue; // s3load's sync record, not data
            } else if m.is_dir() {
                stack.push(e.path());
            } else {
                n += 1;
                bytes += m.len();
            }
        }
    }
    (n, bytes)
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(|a, b| a.partial_cmp(b).unwrap());
    if v.is_empty() { f64::NAN } else { v[v.len() / 2] }
}

fn run_workload(tool: &str, w: Workload, endpoint: &str, dest: &Path, expect: (usize, u64)) -> Result<Sample, String> {
    let _ = std::fs::remove_dir_all(dest);
    std::fs::create_dir_all(dest).unwrap();
    if w == Workload::Noop {
        measure(tool_command(tool, endpoint, w.prefix(), dest)).map_err(|e| format!("preparing: {e}"))?;
    }
    flush_disk();
    wait_for_time_wait_drain();
    let sample = measure(tool_command(tool, endpoint, w.prefix(), dest))?;
    let got = dir_bytes(dest);
    if got != expect {
        return Err(format!("destination has {} files / {} bytes, expected {} / {}", got.0, got.1, expect.0, expect.1));
    }
    Ok(sample)
}

#[tokio::main]
async fn main() {
    if std::env::args().any(|a| a == "--wrap") {
        wrap();
    }
    if std::env::args().any(|a| a == "--hash-speed") {
        hash_speed();
        return;
    }
    if std::env::args().any(|a| a == "--ttfb") {
        time_to_first_byte().await;
        return;
    }
    let runs: usize = arg("--runs").and_then(|s| s.parse().ok()).unwrap_or(3);
    let workloads: Vec<Workload> = arg("--workloads")
        .unwrap_or_else(|| "large,small,noop".into())
        .split(',')
        .map(|w| match w {
            "large" => Workload::Large,
            "small" => Workload::Small,
            "noop" => Workload::Noop,
            "upload" => Workload::PutJob,
            "model" => Workload::Model,
            o => panic!("unknown workload {o}"),
        })
        .collect();
    let tools: Vec<String> = arg("--tools")
        .unwrap_or_else(|| "s3load,s5cmd,rclone".into())
        .split(',')
        .map(str::to_string)
        .filter(|t| {
            s3load_variant(t).is_some()
                || which(t.trim_end_matches("-fast").trim_end_matches("-then-sync")).is_some()
                || {
                    eprintln!("note: {t} not found on PATH; skipped (benches/run.sh installs it)");
                    false
                }
        })
        .collect();
    let base =
        PathBuf::from(arg("--dir").unwrap_or_else(|| std::env::temp_dir().join("s3load-bench").display().to_string()));
    let legacy = std::env::args().any(|a| a == "--legacy");
    let mut networks = vec![("loopback", Shaping::default())];
    if std::env::args().any(|a| a == "--net-only") {
        networks.clear();
    }
    if std::env::args().any(|a| a == "--net" || a == "--net-only") {
        networks.push((
            "20 ms, 100 MB/s per connection",
            Shaping {
                first_byte_delay: Duration::from_millis(20),
                rate_per_connection: Some(100_000_000),
                ..Shaping::default()
            },
        ));
    }

    println!("| network | workload | tool | wall s | CPU s | peak RSS MiB | s3load/tool wall | CPU | RSS |");
    println!("|---|---|---|---|---|---|---|---|---|");
    for (net_name, shaping) in networks {
        let server = TestServer::start_with(Options { shaping, ..Default::default() }).await.expect("server");
        let store = server.store();
        store.create_bucket(BUCKET);
        let mut expect_large = (0, 0);
        let mut expect_small = (0, 0);
        if workloads.iter().any(|w| matches!(w, Workload::Large | Workload::PutJob)) {
            eprintln!("generating 4 x 1 GiB ...");
            for i in 0..4u64 {
                let key = format!("large/obj-{i}.bin");
                let data = generate_bytes(1 << 30, 100 + i);
                if legacy {
                    store.put_object(BUCKET, &key, Writer::S5cmd.legacy_object(data, SystemTime::now()));
                } else {
                    store.put(BUCKET, &key, data);
                }
            }
            expect_large = (4, 4 << 30);
        }
        if workloads.iter().any(|w| matches!(w, Workload::Small | Workload::Noop)) {
            eprintln!("generating 5000 x 64 KiB ...");
            for i in 0..5000u64 {
                let key = format!("small/d{:02}/f{i:05}.bin", i % 50);
                let data = generate_bytes(64 << 10, 1000 + i);
                if legacy {
                    store.put_object(BUCKET, &key, Writer::S5cmd.legacy_object(data, SystemTime::now()));
                } else {
                    store.put(BUCKET, &key, data);
                }
            }
            expect_small = (5000, 5000 * (64 << 10));
        }
        let mut expect_model = (0, 0);
        if workloads.contains(&Workload::Model) {
            eprintln!("generating the model ...");
            for (i, (name, size)) in MODEL.iter().enumerate() {
                let data = model_file(name, *size, 5000 + i as u64);
                let key = format!("model/{name}");
                if legacy {
                    store.put_object(BUCKET, &key, Writer::S5cmd.legacy_object(data, SystemTime::now()));
                } else {
                    store.put(BUCKET, &key, data);
                }
                expect_model = (expect_model.0 + 1, expect_model.1 + *size as u64);
            }
        }
        let endpoint = server.endpoint_url();
        let upload_src = base.join("upload-src");
        if workloads.contains(&Workload::PutJob) {
            let _ = std::fs::remove_dir_all(&upload_src);
            std::fs::create_dir_all(&upload_src).unwrap();
            for i in 0..4u64 {
                let obj = store.get(BUCKET, &format!("large/obj-{i}.bin")).expect("generated");
                std::fs::write(upload_src.join(format!("obj-{i}.bin")), &obj.data).unwrap();
            }
        }
        for &w in &workloads {
            let expect = match w {
                Workload::Large => expect_large,
                Workload::Model => expect_model,
                _ => expect_small,
            };
            let mut samples: Vec<(String, Vec<Sample>)> = tools.iter().map(|t| (t.clone(), Vec::new())).collect();
            // Many small files are kept until the workload ends: ext4 skips
            // inodes freed in the last seconds when it allocates new ones
            // (`recently_deleted`), so creating 5,000 files right after
            // deleting 5,000 costs each run more CPU than the one before, and
            // whichever tool runs next pays for it.
            let keep = matches!(w, Workload::Small | Workload::Noop);
            let mut kept = Vec::new();
            // One untimed run first: the first run of an invocation took about
            // twice the time and CPU (whichever tool it was), which would go
            // into one tool's median.
            if w != Workload::PutJob {
                let dest = base.join("warm-up-dest");
                let _ = run_workload(&tools[0], w, &endpoint, &dest, expect);
                let _ = std::fs::remove_dir_all(&dest);
            }
            let n = samples.len();
            for round in 0..runs {
                // The order rotates each round: the tool that runs right after
                // s5cmd was measured to pay about 1 s and 2 CPU-s more on 4 x 1
                // GiB (whichever tool it was), so each takes each place in turn.
                for k in 0..n {
                    let (tool, s) = &mut samples[(k + round) % n];
                    let tool = tool.clone();
                    let dest = base.join(format!("{tool}-dest-{round}"));
                    let result = if w == Workload::PutJob {
                        run_upload(&tool, &endpoint, &upload_src, store, round)
                    } else {
                        run_workload(&tool, w, &endpoint, &dest, expect)
                    };
                    match result {
                        Ok(x) => {
                            eprintln!(
                                "{net_name} | {} | {tool} run {}: {:.2} s wall, {:.2} s CPU, {:.0} MiB",
                                w.name(),
                                round + 1,
                                x.wall,
                                x.cpu,
                                x.rss_mib
                            );
                            s.push(x);
                        }
                        Err(e) => eprintln!("{net_name} | {} | {tool} run {} FAILED: {e}", w.name(), round + 1),
                    }
                    if keep {
                        kept.push(dest);
                    } else {
                        let _ = std::fs::remove_dir_all(&dest);
                    }
                }
            }
            for dest in kept {
                let _ = std::fs::remove_dir_all(&dest);
            }
            let med = |s: &Vec<Sample>| {
                (
                    median(s.iter().map(|x| x.wall).collect()),
                    median(s.iter().map(|x| x.cpu).collect()),
                    median(s.iter().map(|x| x.rss_mib).collect()),
                )
            };
            let ours = samples.iter().find(|(t, _)| t == "s3load").map(|(_, s)| med(s));
            for (tool, s) in &samples {
                let (wall, cpu, rss) = med(s);
                let ratio = |a: f64, b: f64| if tool == "s3load" { "-".to_string() } else { format!("{:.2}", a / b) };
                let (rw, rc, rr) = match ours {
                    Some((ow, oc, or)) => (ratio(ow, wall), ratio(oc, cpu), ratio(or, rss)),
                    None => ("?".into(), "?".into(), "?".into()),
                };
                println!(
                    "| {net_name} | {} | {tool} | {wall:.2} | {cpu:.2} | {rss:.0} | {rw} | {rc} | {rr} |",
                    w.name()
                );
            }
        }
    }
}
