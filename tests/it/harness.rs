//! Test harness: an in-process S3 server on a random loopback port, a temporary
//! directory, and a runner for the real `s3load` binary with a hermetic
//! environment (no host AWS config, no instance metadata, no outside endpoint).

use std::path::{Path, PathBuf};
use std::process::Output;

use s3load_testserver::{Options, Shaping, TestServer};
use tempfile::TempDir;

pub const BUCKET: &str = "bucket";

pub struct Harness {
    pub server: TestServer,
    pub dir: TempDir,
}

#[derive(Debug)]
pub struct Run {
    pub code: i32,
    pub stdout: String,
    pub stderr: String,
}

impl Run {
    #[track_caller]
    pub fn assert_ok(&self) -> &Self {
        assert_eq!(self.code, 0, "s3load failed:\nstdout:\n{}\nstderr:\n{}", self.stdout, self.stderr);
        self
    }
    pub fn stdout_lines(&self) -> Vec<&str> {
        self.stdout.lines().collect()
    }
}

impl Harness {
    pub async fn new() -> Harness {
        Self::with_shaping(Shaping::default()).await
    }

    /// A harness whose server emulates a network path (to slow transfers down).
    pub async fn with_shaping(shaping: Shaping) -> Harness {
        let server =
            TestServer::start_with(Options { shaping, ..Default::default() }).await.expect("start test server");
        server.store().create_bucket(BUCKET);
        Harness { server, dir: tempfile::tempdir().expect("tempdir") }
    }

    /// A path inside the test's temporary directory.
    pub fn path(&self, rel: &str) -> PathBuf {
        self.dir.path().join(rel)
    }

    pub fn put(&self, key: &str, data: impl Into<bytes::Bytes>) {
        self.server.store().put(BUCKET, key, data);
    }

    /// Runs s3load against the server with its credentials.
    pub async fn run(&self, args: &[&str]) -> Run {
        let endpoint = self.server.endpoint_url();
        let mut full = vec!["--endpoint-url", endpoint.as_str()];
        full.extend_from_slice(args);
        self.run_env(&full, &self.server.client_env()).await
    }

    /// Runs s3load with a fresh tmpfs of `size` (e.g. "4m") mounted at `mount`,
    /// inside its own user and mount namespace (nothing is mounted outside it).
    /// `before` is a shell snippet run in the background just before s3load
    /// starts; after it exits, the names of any temporary, resume or journal
    /// files left under the mount are printed on stderr after `LEFT:`.
    pub async fn run_on_small_fs(&self, size: &str, mount: &Path, before: &str, args: &[&str]) -> Run {
        std::fs::create_dir_all(mount).unwrap();
        let endpoint = self.server.endpoint_url();
        let script = format!(
            "mount -t tmpfs -o size={size} none \"$0\" || exit 97; ({before}) & \"$@\"; rc=$?; \
             echo LEFT: $(find \"$0\" -name '*.s3load-*') >&2; exit $rc"
        );
        let mut full = vec!["-Urm", "sh", "-c", script.as_str(), mount.to_str().unwrap()];
        full.extend([env!("CARGO_BIN_EXE_s3load"), "--endpoint-url", endpoint.as_str()]);
        full.extend_from_slice(args);
        self.command("unshare", &full, &self.server.client_env()).await
    }

    /// Runs s3load with `mount` holding a filesystem that does not tell letter
    /// case or Unicode forms apart ([`crate::foldfs`], FUSE served by this
    /// process, backed by `backing`); unmounted when s3load has exited. Needs
    /// `/dev/fuse` and root, nothing installed.
    pub async fn run_on_folding_fs(&self, backing: &Path, mount: &Path, args: &[&str]) -> Run {
        std::fs::create_dir_all(backing).unwrap();
        std::fs::create_dir_all(mount).unwrap();
        let mounted = crate::foldfs::mount(backing, mount).unwrap_or_else(|e| {
            panic!("mounting the folding filesystem at {} (needs /dev/fuse and root): {e}", mount.display())
        });
        let run = self.run(args).await;
        drop(mounted);
        run
    }

    /// Runs s3load with `mount` holding a filesystem whose device cannot take
    /// what is written to it: its image lives on a 24 MiB tmpfs, so once that is
    /// full the page cache cannot be written back and `syncfs` fails with EIO (a
    /// disk failing, or an NFS server out of space). ext2 with `errors=continue`
    /// (no journal to abort) stays writable afterwards, so the test can see what
    /// s3load did to its record after the failure. After s3load exits, the
    /// destination's sync record is printed on stderr between `STATE:` and
    /// `END`; then the backing tmpfs is given room and the same command runs
    /// again, its exit code printed as `AGAIN: N`. Needs real root
    /// (a loop device), in its own mount namespace. After s3load exits, the
    /// destination's sync record is printed on stderr between `STATE:` and `END`.
    pub async fn run_with_failing_writeback(&self, work: &Path, dest: &Path, args: &[&str]) -> Run {
        let (t, m) = (work.join("backing"), work.join("mnt"));
        std::fs::create_dir_all(&t).unwrap();
        std::fs::create_dir_all(&m).unwrap();
        let endpoint = self.server.endpoint_url();
        let script = format!(
            "set -e; mount -t tmpfs -o size=24m none {t}; truncate -s 128M {t}/disk.img; \
             mkfs.ext2 -q {t}/disk.img; mount -t ext2 -o loop,errors=continue {t}/disk.img {m}; \
             set +e; \"$@\"; rc=$?; echo STATE: >&2; cat {d}/.s3load/state >&2; echo END >&2; \
             mount -o remount,size=512m {t}; \"$@\"; echo AGAIN: $? >&2; umount {m}; exit $rc",
            t = t.display(),
            m = m.display(),
            d = dest.display()
        );
        let mut full = vec!["-m", "sh", "-c", script.as_str(), "sh"];
        full.extend([env!("CARGO_BIN_EXE_s3load"), "--endpoint-url", endpoint.as_str()]);
        full.extend_from_slice(args);
        self.command("unshare", &full, &self.server.client_env()).await
    }

    /// Runs s3load with exactly these arguments and environment (plus isolation).
    pub async fn run_env(&self, args: &[&str], env: &[(&str, String)]) -> Run {
        self.command(env!("CARGO_BIN_EXE_s3load"), args, env).await
    }

    /// Runs s3load with its stdout a pipe whose reader has already gone (what
    /// `| head -0` becomes once head exits): every write fails with EPIPE.
    pub async fn run_into_closed_pipe(&self, args: &[&str]) -> Run {
        let endpoint = self.server.endpoint_url();
        let mut full = vec!["--endpoint-url", endpoint.as_str()];
        full.extend_from_slice(args);
        let (reader, writer) = std::io::pipe().expect("pipe");
        drop(reader);
        let mut cmd = self.command_for(env!("CARGO_BIN_EXE_s3load"), &full, &self.server.client_env());
        // (`output()` would make stdout a pipe of its own.)
        cmd.stdout(std::process::Stdio::from(writer)).stderr(std::process::Stdio::piped());
        let Output { status, stderr, .. } = cmd.spawn().expect("run s3load").wait_with_output().await.unwrap();
        Run {
            code: status.code().unwrap_or(-1),
            stdout: String::new(),
            stderr: String::from_utf8_lossy(&stderr).into_owned(),
        }
    }

    /// Starts s3load against the server without waiting for it.
    pub fn spawn(&self, args: &[&str]) -> tokio::process::Child {
        let endpoint = self.server.endpoint_url();
        let mut full = vec!["--endpoint-url", endpoint.as_str()];
        full.extend_from_slice(args);
        let mut cmd = self.command_for(env!("CARGO_BIN_EXE_s3load"), &full, &self.server.client_env());
        cmd.stdout(std::process::Stdio::piped()).stderr(std::process::Stdio::piped());
        cmd.spawn().expect("spawn s3load")
    }

    /// Waits (up to 20 s) until the server has seen a request of `op`.
    pub async fn wait_for_request(&self, op: &str) {
        let t = std::time::Instant::now();
        while self.server.log().count(op) == 0 {
            assert!(t.elapsed() < std::time::Duration::from_secs(20), "no {op} request was sent");
            tokio::time::sleep(std::time::Duration::from_millis(10)).await;
        }
    }

    /// Runs s3load with `args` (after `--endpoint-url`) through `sh -c
    /// script`, which ends with `exec "$@"`, itself under `wrapper` (such as
    /// `["unshare", "-Urm"]`) when one is given.
    pub async fn run_in_shell(&self, wrapper: &[&str], script: &str, args: &[&str]) -> Run {
        let endpoint = self.server.endpoint_url();
        let (program, mut full) = match wrapper.split_first() {
            Some((program, rest)) => (*program, [rest, &["sh"]].concat()),
            None => ("sh", Vec::new()),
        };
        full.extend(["-c", script, "sh", env!("CARGO_BIN_EXE_s3load"), "--endpoint-url", endpoint.as_str()]);
        full.extend_from_slice(args);
        self.command(program, &full, &self.server.client_env()).await
    }

    pub async fn command(&self, program: &str, args: &[&str], env: &[(&str, String)]) -> Run {
        let Output { status, stdout, stderr } =
            self.command_for(program, args, env).output().await.expect("run s3load");
        Run {
            code: status.code().unwrap_or(-1),
            stdout: String::from_utf8_lossy(&stdout).into_owned(),
            stderr: String::from_utf8_lossy(&stderr).into_owned(),
        }
    }

    fn command_for(&self, program: &str, args: &[&str], env: &[(&str, String)]) -> tokio::process::Command {
        let home = self.dir.path().join(".home");
        std::fs::create_dir_all(&home).unwrap();
        let mut cmd = tokio::process::Command::new(program);
        cmd.args(args)
            .env_clear()
            .env("HOME", &home)
            .env("AWS_CONFIG_FILE", home.join("config"))
            .env("AWS_SHARED_CREDENTIALS_FILE", home.join("credentials"))
            .env("AWS_EC2_METADATA_DISABLED", "true")
            .env("NO_COLOR", "1")
            .env("PATH", std::env::var_os("PATH").unwrap_or_default())
            .kill_on_drop(true);
        for (k, v) in env {
            cmd.env(k, v);
        }
        cmd
    }
}

/// Sends SIGTERM to a spawned s3load and waits (up to `within`) for it to
/// exit; panics if it does not.
pub async fn terminate(child: tokio::process::Child, within: std::time::Duration) -> std::process::Output {
    let pid = child.id().expect("running").to_string();
    let kill = tokio::process::Command::new("kill").args(["-TERM", &pid]).status().await.unwrap();
    assert!(kill.success());
    tokio::time::timeout(within, child.wait_with_output()).await.expect("stops after SIGTERM").unwrap()
}

/// Every regular file below `root`, as sorted relative paths, leaving out
/// s3load's sync records (`.s3load/` directories).
pub fn files_under(root: &Path) -> Vec<String> {
    let mut out = Vec::new();
    let mut stack = vec![root.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).unwrap() {
            let e = e.unwrap();
            let ft = e.file_type().unwrap();
            if ft.is_dir() && e.file_name() == ".s3load" {
                continue;
            }
            if ft.is_dir() {
                stack.push(e.path());
            } else {
                out.push(e.path().strip_prefix(root).unwrap().to_string_lossy().into_owned());
            }
        }
    }
    out.sort();
    out
}

/// Each object's (source URL, how it was verified) from `--json` lines, sorted.
pub fn verified_by(run: &crate::harness::Run) -> Vec<(String, String)> {
    let mut v: Vec<(String, String)> = run
        .stdout_lines()
        .iter()
        .map(|l| serde_json::from_str::<serde_json::Value>(l).unwrap())
        .map(|v| {
            let how = v["verified"].as_str().map_or_else(|| v["verified"].to_string(), str::to_string);
            (v["source"].as_str().unwrap().to_string(), how)
        })
        .collect();
    v.sort();
    v
}

/// The peak RSS (KiB) that s3load states at exit with `--log debug` (the
/// kernel's `VmHWM`, read as the process ends).
pub fn peak_rss_kib(stderr: &str) -> u64 {
    stderr
        .lines()
        .filter(|l| l.contains("peak memory"))
        .find_map(|l| l.split("peak_rss_kib=").nth(1))
        .and_then(|n| n.split_whitespace().next())
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("no peak memory line:\n{stderr}"))
}

/// Pages of the file at `path` in the page cache, and its pages in all
/// (`mincore` of a mapping of it).
pub fn resident_pages(path: &Path) -> (usize, usize) {
    use std::os::fd::AsRawFd;
    let f = std::fs::File::open(path).unwrap();
    let len = f.metadata().unwrap().len() as usize;
    let pages = len.div_ceil(4096);
    if len == 0 {
        return (0, 0);
    }
    let mut vec = vec![0u8; pages];
    // SAFETY: a private read-only mapping of a file open for reading, of its
    // length; `vec` has a byte per page of it; unmapped before returning.
    #[allow(unsafe_code)]
    unsafe {
        let p = libc::mmap(std::ptr::null_mut(), len, libc::PROT_READ, libc::MAP_PRIVATE, f.as_raw_fd(), 0);
        assert_ne!(p, libc::MAP_FAILED);
        assert_eq!(libc::mincore(p, len, vec.as_mut_ptr()), 0);
        libc::munmap(p, len);
    }
    (vec.iter().filter(|&&b| b & 1 == 1).count(), pages)
}

/// Whether `dir` is on a disk filesystem (ext4, XFS or btrfs), where
/// `O_DIRECT` writes leave the page cache alone.
pub fn takes_direct(dir: &Path) -> bool {
    rustix::fs::statfs(dir).is_ok_and(|s| [0xEF53, 0x5846_5342, 0x9123_683E].contains(&(s.f_type as u64)))
}
