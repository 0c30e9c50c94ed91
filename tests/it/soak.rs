//! The soak: many `sync` runs, downloads and uploads, a good share of them
//! killed at a random moment, against a server that fails at random (bodies
//! cut, stalled or corrupted, bursts of 503 SlowDown), while a publisher
//! changes the source between runs and now and then during one.
//!
//! After every run, whatever its exit code, each file at a final path must be
//! one whole version of its object (and each uploaded object one whole
//! version of its file, with its checksum). A run that exits 0 has the whole
//! tree; one that exits 0 with nothing changed during it leaves the
//! destination equal to the source and nothing of its own behind. Every
//! multipart upload a run leaves open must have been left by a SIGKILL.
//!
//! The suite runs a short soak (1 GiB, at least 60 runs, objects of up to
//! 60 MiB). `benches/soak.sh` runs the
//! same loop on release builds for as many GiB as asked (`S3LOAD_SOAK_GIB`)
//! and prints the counters.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant, SystemTime};

use s3load_testserver::{ChecksumAlgorithm, Fault, Random, Rule, StoredObject, When as Firing, Writer, generate_bytes};
use sha2::{Digest, Sha256};

use crate::harness::{BUCKET, Harness};

type Hash = [u8; 32];

const MIB: usize = 1 << 20;

/// How much a soak moves, and the data it moves.
#[derive(Debug, Clone)]
struct Size {
    /// Bytes to move (GET bodies served and upload bodies received) before
    /// the last quiet runs.
    goal: u64,
    /// Runs to make at the least, whatever has moved.
    min_runs: u64,
    large: usize,
    large_len: usize,
    medium: usize,
    medium_max: usize,
    small: usize,
    /// One GET in this many has a byte flipped. A large object checked as a
    /// whole (a multipart MD5 ETag, a full-object CRC) cannot tell which of
    /// its ranges was hit and is fetched again whole: at one GET in 400, a
    /// 2.5 GiB object in 8 MiB ranges fails its check on about half of its
    /// fetches (and the object after four), which no network that passes TCP's
    /// checksum, let alone TLS, comes near.
    flip_one_in: u64,
    /// Files of the local tree that is uploaded: small ones, and medium ones
    /// (multipart).
    upload_small: usize,
    upload_medium: usize,
}

impl Size {
    /// The suite's soak, or `S3LOAD_SOAK_GIB` GiB of it.
    fn from_env() -> Size {
        match std::env::var("S3LOAD_SOAK_GIB").ok().and_then(|g| g.parse::<u64>().ok()) {
            Some(gib) => Size {
                goal: gib << 30,
                min_runs: 100,
                large: 3,
                large_len: 2560 * MIB,
                medium: 8,
                medium_max: 200 * MIB,
                small: 3000,
                flip_one_in: 4000,
                upload_small: 600,
                upload_medium: 4,
            },
            None => Size {
                goal: 1 << 30,
                min_runs: 60,
                large: 2,
                large_len: 60 * MIB,
                medium: 4,
                medium_max: 24 * MIB,
                small: 150,
                flip_one_in: 400,
                upload_small: 40,
                upload_medium: 2,
            },
        }
    }
}

fn hash(data: &[u8]) -> Hash {
    Sha256::digest(data).into()
}

/// How a run was meant to end.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Fate {
    Finish,
    Kill,
    Term,
}

/// What one run did, as seen from outside.
#[derive(Debug)]
struct Ran {
    fate: Fate,
    /// `None` when ended by a signal it did not handle (SIGKILL).
    code: Option<i32>,
    stderr: String,
    secs: f64,
    /// Peaks sampled from /proc while it ran.
    rss_kib: u64,
    fds: u64,
    threads: u64,
    /// From the signal to the exit, for SIGTERM.
    stop_secs: Option<f64>,
    /// GET body bytes the server sent while it ran.
    served: u64,
    /// The signal that ended it, if one did, and whether one was sent.
    signal: Option<i32>,
    sent: bool,
}

/// Peaks of a process, read from /proc/PID (zero once it is gone).
fn sample(pid: u32, rss: &mut u64, fds: &mut u64, threads: &mut u64) {
    if let Ok(status) = std::fs::read_to_string(format!("/proc/{pid}/status")) {
        for line in status.lines() {
            let value = |l: &str| l.split_whitespace().nth(1).and_then(|v| v.parse::<u64>().ok()).unwrap_or(0);
            if line.starts_with("VmHWM:") {
                *rss = (*rss).max(value(line));
            } else if line.starts_with("Threads:") {
                *threads = (*threads).max(value(line));
            }
        }
    }
    if let Ok(dir) = std::fs::read_dir(format!("/proc/{pid}/fd")) {
        *fds = (*fds).max(dir.count() as u64);
    }
}

/// When a run that is to be ended gets its signal.
#[derive(Debug, Clone, Copy)]
enum When {
    /// This long after it started.
    After(Duration),
    /// Once the server has sent or received this many bytes for it.
    Moved(u64),
}

/// Runs s3load, ending it as `fate` says when `when` comes, sampling its
/// resources meanwhile.
async fn run(h: &Harness, args: &[&str], fate: Fate, when: When) -> Ran {
    let began = Instant::now();
    let start = moved(h);
    let get_start = h.server.log().body_bytes();
    let child = h.spawn(args);
    let pid = child.id().expect("running");
    let out = child.wait_with_output();
    tokio::pin!(out);
    let (mut rss, mut fds, mut threads) = (0, 0, 0);
    let mut signalled: Option<Instant> = None;
    let mut tick = tokio::time::interval(Duration::from_millis(20));
    let output = loop {
        tokio::select! {
            o = &mut out => break o.expect("wait for s3load"),
            _ = tick.tick() => {
                sample(pid, &mut rss, &mut fds, &mut threads);
                let due = match when {
                    When::After(t) => began.elapsed() >= t,
                    When::Moved(n) => moved(h) - start >= n,
                };
                if signalled.is_none() && fate != Fate::Finish && due {
                    let signal = if fate == Fate::Kill { libc::SIGKILL } else { libc::SIGTERM };
                    // SAFETY: a signal to our own child, which has not been
                    // reaped (its output is still awaited).
                    #[allow(unsafe_code)]
                    unsafe {
                        libc::kill(pid as i32, signal);
                    }
                    signalled = Some(Instant::now());
                }
            }
        }
    };
    Ran {
        fate,
        code: output.status.code(),
        stderr: String::from_utf8_lossy(&output.stderr).into_owned(),
        secs: began.elapsed().as_secs_f64(),
        rss_kib: rss,
        fds,
        threads,
        stop_secs: signalled.filter(|_| fate == Fate::Term).map(|s| s.elapsed().as_secs_f64()),
        served: h.server.log().body_bytes() - get_start,
        signal: std::os::unix::process::ExitStatusExt::signal(&output.status),
        sent: signalled.is_some(),
    }
}

/// The counters a soak reports.
#[derive(Debug, Default)]
struct Counters {
    runs: u64,
    download_runs: u64,
    upload_runs: u64,
    kills: u64,
    terms: u64,
    /// Runs that ended on their own with a code other than 0.
    failed: Vec<String>,
    /// Uploads that failed only because a file was replaced while they ran
    /// (each such file named, to be sent by the next run).
    failed_by_change: u64,
    /// GET body bytes beyond what each download run had to fetch: bodies cut,
    /// flipped or stalled and fetched again, stragglers restarted. A lower
    /// bound: a resumed run fetches less than its need.
    fetched_again: u64,
    retries: u64,
    straggler_restarts: u64,
    faults_fired: u64,
    publishes: u64,
    /// Runs started on an empty destination (a pod on a fresh volume).
    fresh_starts: u64,
    changed_mid_run: u64,
    quiet_points: u64,
    corrupt: Vec<String>,
    missing: Vec<String>,
    /// Files at final paths that no object ever had, or objects no file had.
    extra: Vec<String>,
    left_behind: Vec<String>,
    uploads_left_by_kill: u64,
    uploads_left_otherwise: Vec<String>,
    without_checksum: Vec<String>,
    slow_to_stop: Vec<f64>,
    /// (rss KiB, fds, threads) of each run that finished on its own.
    peaks: Vec<(u64, u64, u64)>,
    /// The same, of the busy ones among them (downloads that had at least
    /// half a large object to fetch): early and late runs doing like work.
    busy_peaks: Vec<(u64, u64, u64)>,
}

/// The objects under `src/`, as the publisher made them: every version each
/// key ever had, and the current one.
struct Source {
    current: BTreeMap<String, Hash>,
    ever: HashMap<String, BTreeSet<Hash>>,
    large: Vec<String>,
    medium: Vec<String>,
    small: Vec<String>,
    next_seed: u64,
}

impl Source {
    /// Stores `len` new bytes at `key`, as one of the writers of the field
    /// would have (chosen by `style`).
    fn publish(&mut self, h: &Harness, key: &str, len: usize, style: u64) {
        let (obj, digest) = self.make(len, style);
        self.install(h, key, obj, digest);
    }

    /// `len` new bytes as one of the writers of the field would have stored
    /// them (chosen by `style`), and their digest. Slow for a large object
    /// (seconds), so a change made during a run is made before it and only
    /// installed during it: the run's clock and its signal are not held up.
    fn make(&mut self, len: usize, style: u64) -> (StoredObject, Hash) {
        self.next_seed += 1;
        let data = generate_bytes(len, self.next_seed);
        let digest = hash(&data);
        let now = SystemTime::now();
        let obj = match style % 5 {
            0 => Writer::S5cmd.legacy_object(data, now),
            1 => Writer::AwsCli.object(data, now, Some(ChecksumAlgorithm::Crc64Nvme)),
            2 => Writer::AwsCli.legacy_object(data, now),
            3 => StoredObject::with_checksum(data, now, Some(ChecksumAlgorithm::Crc32c)),
            _ => Writer::Rclone.legacy_object(data, now),
        };
        (obj, digest)
    }

    fn install(&mut self, h: &Harness, key: &str, mut obj: StoredObject, digest: Hash) {
        obj.last_modified = SystemTime::now();
        h.server.store().put_object(BUCKET, key, obj);
        self.current.insert(key.to_string(), digest);
        self.ever.entry(key.to_string()).or_default().insert(digest);
    }

    fn delete(&mut self, h: &Harness, key: &str) {
        h.server.store().delete(BUCKET, key);
        self.current.remove(key);
    }

    fn small_len(r: &mut Random) -> usize {
        match r.below(10) {
            0 => 0,
            1 => 256 << 10,
            2 => (256 << 10) + 1,
            _ => r.below(300 << 10) as usize,
        }
    }

    fn seed(h: &Harness, size: &Size, r: &mut Random) -> Source {
        let mut s = Source {
            current: BTreeMap::new(),
            ever: HashMap::new(),
            large: Vec::new(),
            medium: Vec::new(),
            small: Vec::new(),
            next_seed: 1000,
        };
        for i in 0..size.large {
            let key = format!("src/large/shard-{i}.bin");
            s.publish(h, &key, size.large_len + i, i as u64);
            s.large.push(key);
        }
        for i in 0..size.medium {
            let key = format!("src/medium/m{i}.bin");
            s.publish(h, &key, MIB + r.below(size.medium_max as u64) as usize, r.next_u64());
            s.medium.push(key);
        }
        for i in 0..size.small {
            let key = format!("src/small/d{}/f{i:05}.bin", i % 20);
            s.publish(h, &key, Self::small_len(r), r.next_u64());
            s.small.push(key);
        }
        s
    }

    /// Replaces one object, any size: what a publisher does mid-run.
    fn replace_any(&mut self, h: &Harness, r: &mut Random, size: &Size) -> String {
        let (key, len) = self.pick_any(r, size);
        if self.current.contains_key(&key) {
            self.publish(h, &key, len, r.next_u64());
        }
        key
    }

    /// An object to replace, any size, and the length of its next version.
    fn pick_any(&self, r: &mut Random, size: &Size) -> (String, usize) {
        match r.below(3) {
            0 if !self.large.is_empty() => {
                (self.large[r.below(self.large.len() as u64) as usize].clone(), size.large_len + r.below(4096) as usize)
            }
            1 if !self.medium.is_empty() => (
                self.medium[r.below(self.medium.len() as u64) as usize].clone(),
                MIB + r.below(size.medium_max as u64) as usize,
            ),
            _ => (self.small[r.below(self.small.len() as u64) as usize].clone(), Self::small_len(r)),
        }
    }

    /// Between runs: some small objects replaced, added and deleted, now and
    /// then a medium or large one replaced.
    fn change(&mut self, h: &Harness, r: &mut Random, size: &Size) {
        for _ in 0..=r.below(5) {
            let key = self.small[r.below(self.small.len() as u64) as usize].clone();
            self.publish(h, &key, Self::small_len(r), r.next_u64());
        }
        for _ in 0..=r.below(3) {
            let key = format!("src/small/new/n{}.bin", self.next_seed);
            self.publish(h, &key, Self::small_len(r), r.next_u64());
            self.small.push(key);
        }
        for _ in 0..=r.below(3) {
            let at = r.below(self.small.len() as u64) as usize;
            let key = self.small.swap_remove(at);
            self.delete(h, &key);
        }
        if r.one_in(4) {
            self.replace_any(h, r, size);
        }
    }
}

/// A file's hash, remembered by inode, size and times: s3load puts every new
/// version in place by rename, so a file whose identity did not change was
/// checked already.
#[derive(Default)]
struct Hashes(HashMap<PathBuf, (Identity, Hash)>);

/// Device, inode, modification and change times (ns), length.
type Identity = (u64, u64, i64, i64, u64);

impl Hashes {
    fn of(&mut self, path: &Path) -> Hash {
        let m = std::fs::symlink_metadata(path).unwrap();
        let id = (
            m.dev(),
            m.ino(),
            m.mtime_nsec() + m.mtime() * 1_000_000_000,
            m.ctime_nsec() + m.ctime() * 1_000_000_000,
            m.len(),
        );
        if let Some((seen, h)) = self.0.get(path)
            && *seen == id
        {
            return *h;
        }
        let h = hash(&std::fs::read(path).unwrap());
        self.0.insert(path.to_path_buf(), (id, h));
        h
    }
}

/// Every file below `root` as (relative path, hash), and the names that are
/// s3load's own temporary, resume or journal files; `.s3load/` is left out.
fn walk(root: &Path, hashes: &mut Hashes) -> (BTreeMap<String, Hash>, Vec<String>) {
    let (mut files, mut temps) = (BTreeMap::new(), Vec::new());
    let mut stack = vec![root.to_path_buf()];
    while let Some(d) = stack.pop() {
        let Ok(entries) = std::fs::read_dir(&d) else { continue };
        for e in entries {
            let e = e.unwrap();
            let ft = e.file_type().unwrap();
            let rel = e.path().strip_prefix(root).unwrap().to_string_lossy().into_owned();
            if ft.is_dir() {
                if e.file_name() != ".s3load" {
                    stack.push(e.path());
                }
            } else if rel.contains(".s3load-") {
                temps.push(rel);
            } else {
                files.insert(rel, hashes.of(&e.path()));
            }
        }
    }
    (files, temps)
}

/// The local tree that is uploaded: every version each file ever had.
struct Tree {
    root: PathBuf,
    ever: HashMap<String, BTreeSet<Hash>>,
    names: Vec<String>,
    next_seed: u64,
}

impl Tree {
    /// Writes a new version of `rel`: to a temporary name, then renamed over
    /// it, as a tool that saves files does (a reader sees one or the other).
    fn write(&mut self, rel: &str, len: usize) {
        self.next_seed += 1;
        let data = generate_bytes(len, self.next_seed);
        let path = self.root.join(rel);
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        // Written beside the tree, not in it: an upload's walk must not see
        // the publisher's own temporary file.
        let tmp = self.root.with_file_name(format!(".publisher-{}", self.next_seed));
        std::fs::write(&tmp, &data).unwrap();
        std::fs::rename(&tmp, &path).unwrap();
        self.ever.entry(rel.to_string()).or_default().insert(hash(&data));
    }

    fn seed(root: PathBuf, size: &Size, r: &mut Random) -> Tree {
        let mut t = Tree { root, ever: HashMap::new(), names: Vec::new(), next_seed: 500_000 };
        for i in 0..size.upload_small {
            let rel = format!("small/d{}/u{i:04}.bin", i % 7);
            t.write(&rel, Source::small_len(r));
            t.names.push(rel);
        }
        for i in 0..size.upload_medium {
            let rel = format!("medium/u{i}.bin");
            t.write(&rel, 9 * MIB + r.below(size.medium_max as u64) as usize);
            t.names.push(rel);
        }
        t
    }

    fn change(&mut self, r: &mut Random, size: &Size) {
        for _ in 0..=r.below(4) {
            let rel = self.names[r.below(self.names.len() as u64) as usize].clone();
            let len = if rel.starts_with("medium/") {
                9 * MIB + r.below(size.medium_max as u64) as usize
            } else {
                Source::small_len(r)
            };
            self.write(&rel, len);
        }
        if r.one_in(2) {
            let rel = format!("small/new/u{}.bin", self.next_seed);
            self.write(&rel, Source::small_len(r));
            self.names.push(rel);
        }
        if r.one_in(2) && self.names.len() > 10 {
            let at = r.below(self.names.len() as u64) as usize;
            let rel = self.names.swap_remove(at);
            std::fs::remove_file(self.root.join(&rel)).unwrap();
        }
    }

    fn current(&self, hashes: &mut Hashes) -> BTreeMap<String, Hash> {
        let (files, _) = walk(&self.root, hashes);
        files
    }
}

/// The objects under `prefix`, as (key without the prefix, hash, carries a
/// checksum).
fn objects_under(h: &Harness, prefix: &str) -> BTreeMap<String, (Hash, bool)> {
    h.server
        .store()
        .with_bucket(BUCKET, |b| {
            b.iter()
                .filter_map(|(k, o)| {
                    let rel = k.strip_prefix(prefix)?;
                    Some((rel.to_string(), (hash(&o.data), o.checksum.is_some())))
                })
                .collect()
        })
        .unwrap_or_default()
}

/// Bytes of the objects a download has to fetch: those its destination
/// lacks or holds another version of.
fn download_need(h: &Harness, source: &Source, dest: &Path, hashes: &mut Hashes) -> u64 {
    let (files, _) = walk(dest, hashes);
    let store = h.server.store();
    source
        .current
        .iter()
        .filter(|(key, digest)| files.get(&key["src/".len()..]) != Some(digest))
        .filter_map(|(key, _)| store.get(BUCKET, key).map(|o| o.data.len() as u64))
        .sum()
}

/// Bytes of the files an upload has to send: those not under `up/` as they are.
fn upload_need(h: &Harness, tree: &Tree, hashes: &mut Hashes) -> u64 {
    let objects = objects_under(h, "up/");
    tree.current(hashes)
        .iter()
        .filter(|(rel, digest)| objects.get(*rel).map(|o| &o.0) != Some(*digest))
        .filter_map(|(rel, _)| std::fs::metadata(tree.root.join(rel)).ok().map(|m| m.len()))
        .sum()
}

/// Body bytes the server has sent (GET) and received (UploadPart, PutObject).
fn moved(h: &Harness) -> u64 {
    let log = h.server.log();
    log.body_bytes() + log.upload_bytes() + log.put_bytes()
}

/// Every error a run reported is a file it names as replaced while it ran.
fn only_changed_files(stderr: &str) -> bool {
    let changed = |l: &str| {
        l.contains("the file changed while it was uploaded")
            || l.contains("the file is shorter than when it was listed")
    };
    let errors: Vec<&str> = stderr.lines().filter(|l| l.contains("ERROR")).collect();
    !errors.is_empty() && errors.iter().all(|l| changed(l) || l.contains("finished with errors"))
}

fn count_lines(stderr: &str, needle: &str) -> u64 {
    stderr.lines().filter(|l| l.contains(needle)).count() as u64
}

/// The faults that stay armed for the whole soak.
fn arm_faults(h: &Harness, seed: u64, size: &Size) {
    let f = h.server.faults();
    f.seed(seed);
    f.add(Rule::new("GetObject", Firing::OneIn(200), Fault::CutWithin(8 << 20)));
    f.add(Rule::new("GetObject", Firing::OneIn(500), Fault::StallWithin(8 << 20)));
    f.add(Rule::new("GetObject", Firing::OneIn(size.flip_one_in), Fault::FlipWithin(256 << 10)));
    f.add(Rule::new("UploadPart", Firing::OneIn(150), Fault::FlipWithin(64 << 10)));
    f.add(Rule::new("PutObject", Firing::OneIn(150), Fault::FlipWithin(64 << 10)));
    f.add(Rule::new("*", Firing::OneIn(300), Fault::Status { status: 500, code: "InternalError" }));
}

fn faults_fired(h: &Harness, rules: usize) -> u64 {
    (0..rules).map(|i| h.server.faults().fired(i)).sum()
}

/// One soak; returns its counters and what it moved.
async fn soak(size: &Size, seed: u64) -> (Counters, u64, Duration) {
    let began = Instant::now();
    let h = Harness::new().await;
    let mut r = Random::new(seed);
    let mut source = Source::seed(&h, size, &mut r);
    let dest = h.path("dest");
    let mut tree = Tree::seed(h.path("tree"), size, &mut r);
    arm_faults(&h, seed, size);
    let mut c = Counters::default();
    let mut hashes = Hashes::default();
    // How long a run that finishes takes, to kill the next at a moment inside it.
    let (mut download_secs, mut upload_secs) = (2.0_f64, 2.0_f64);
    // The rules armed, bursts of SlowDown included.
    let mut rules = 6;
    // Once the goal is moved: runs that finish, until each side has had a
    // quiet point after the goal.
    let (mut quiet_down, mut quiet_up) = (false, false);
    let mut runs_ending = 0;
    while !(quiet_down && quiet_up) {
        let ending = moved(&h) >= size.goal && c.runs >= size.min_runs;
        let upload = if ending { !quiet_up && (quiet_down || r.one_in(2)) } else { r.one_in(4) };
        let fate = if ending {
            Fate::Finish
        } else {
            match r.below(4) {
                0 => Fate::Kill,
                1 => Fate::Term,
                _ => Fate::Finish,
            }
        };
        let typical = if upload { upload_secs } else { download_secs };
        if r.one_in(3) {
            c.publishes += 1;
            if upload { tree.change(&mut r, size) } else { source.change(&h, &mut r, size) }
        }
        // The pod rescheduled onto a fresh volume, or files removed by hand;
        // for uploads, a fresh prefix.
        if !ending && r.one_in(4) {
            c.fresh_starts += 1;
            if upload {
                for (rel, _) in objects_under(&h, "up/") {
                    h.server.store().delete(BUCKET, &format!("up/{rel}"));
                }
            } else {
                let _ = std::fs::remove_dir_all(&dest);
            }
        } else if !upload && r.one_in(5) {
            let (files, _) = walk(&dest, &mut hashes);
            for (rel, _) in files.iter().filter(|_| r.one_in(4)) {
                std::fs::remove_file(dest.join(rel)).unwrap();
            }
        }
        // Now and then a burst of SlowDown on every request, for 0.3 - 3 s
        // from a moment inside the run (as S3 throttles a prefix).
        if r.one_in(4) {
            let (faults, at, lasts) =
                (h.server.faults().clone(), r.below((1000.0 * typical) as u64), 300 + r.below(2700));
            rules += 1;
            tokio::spawn(async move {
                tokio::time::sleep(Duration::from_millis(at)).await;
                let i = faults.add(Rule::new("*", Firing::Always, Fault::Status { status: 503, code: "SlowDown" }));
                tokio::time::sleep(Duration::from_millis(lasts)).await;
                faults.remove(i);
            });
        }
        // Now and then a change while the run goes on (never on the last runs).
        let mid_run = (!ending && r.one_in(4)).then(|| Duration::from_millis(r.below(1500)));
        // A download's change is made now and installed during the run.
        let mut replacement = (mid_run.is_some() && !upload).then(|| {
            let (key, len) = source.pick_any(&mut r, size);
            let (obj, digest) = source.make(len, r.next_u64());
            (key, obj, digest)
        });
        // Most signals land while bytes move (after a random share of what
        // the run has to move), the rest at a random moment (listing,
        // planning, commits, deletions).
        let need =
            if upload { upload_need(&h, &tree, &mut hashes) } else { download_need(&h, &source, &dest, &mut hashes) };
        let when = if need > 0 && !r.one_in(4) {
            When::Moved(r.below(need))
        } else {
            When::After(Duration::from_secs_f64(typical * (r.below(1000) as f64 / 1000.0) * 1.2))
        };
        let (dest_s, tree_s) = (dest.to_str().unwrap().to_string(), format!("{}/", tree.root.display()));
        let args: Vec<&str> = if upload {
            vec!["sync", "--delete", "--stall-timeout", "5s", &tree_s, "s3://bucket/up/"]
        } else {
            vec!["sync", "--delete", "--stall-timeout", "5s", "s3://bucket/src/*", &dest_s]
        };
        let before = source.current.clone();
        let open_before: BTreeSet<String> =
            h.server.store().pending_upload_ids().into_iter().map(|(id, _, _)| id).collect();
        let mut changed: BTreeMap<String, BTreeSet<Hash>> = BTreeMap::new();
        let mut changed_now = false;
        let ran = {
            let running = run(&h, &args, fate, when);
            tokio::pin!(running);
            match mid_run {
                None => running.await,
                Some(wait) => {
                    tokio::select! {
                        ran = &mut running => ran,
                        () = tokio::time::sleep(wait) => {
                            c.changed_mid_run += 1;
                            changed_now = true;
                            if upload {
                                let rel = tree.names[r.below(tree.names.len() as u64) as usize].clone();
                                tree.write(&rel, Source::small_len(&mut r));
                            } else if let Some((key, obj, digest)) = replacement.take()
                                && source.current.contains_key(&key)
                            {
                                source.install(&h, &key, obj, digest);
                                changed.entry(key).or_default().insert(digest);
                            }
                            running.await
                        }
                    }
                }
            }
        };
        c.runs += 1;
        if std::env::var_os("S3LOAD_SOAK_VERBOSE").is_some() {
            eprintln!(
                "run {} {} {fate:?} {when:?} (need {} MiB): exit {:?} in {:.1}s, moved {} MiB, peak {} MiB / {} fds / {} threads",
                c.runs,
                if upload { "upload" } else { "download" },
                need >> 20,
                ran.code,
                ran.secs,
                moved(&h) >> 20,
                ran.rss_kib >> 10,
                ran.fds,
                ran.threads
            );
        }
        if upload {
            c.upload_runs += 1;
        } else {
            c.download_runs += 1;
        }
        c.retries += count_lines(&ran.stderr, "retrying");
        if !upload {
            c.fetched_again += ran.served.saturating_sub(need);
        }
        c.straggler_restarts += count_lines(&ran.stderr, "straggling range again");
        let signalled = match (ran.fate, ran.code) {
            (Fate::Kill, None) if ran.sent && ran.signal == Some(libc::SIGKILL) => {
                c.kills += 1;
                true
            }
            // (A SIGTERM before s3load has set up its handler ends it as
            // the signal's default does.)
            (Fate::Term, Some(143) | None)
                if ran.sent && (ran.code == Some(143) || ran.signal == Some(libc::SIGTERM)) =>
            {
                c.terms += 1;
                if let Some(s) = ran.stop_secs.filter(|&s| s > 10.0) {
                    c.slow_to_stop.push(s);
                }
                true
            }
            (_, Some(0)) => false,
            (_, Some(1)) if upload && changed_now && only_changed_files(&ran.stderr) => {
                c.failed_by_change += 1;
                false
            }
            (_, code) => {
                let tail: Vec<&str> = ran.stderr.lines().rev().take(6).collect();
                c.failed.push(format!(
                    "run {} ({fate:?}) exit {code:?}, signal {:?}: {}",
                    c.runs,
                    ran.signal,
                    tail.join(" | ")
                ));
                false
            }
        };
        let ok = ran.code == Some(0);
        if ok {
            c.peaks.push((ran.rss_kib, ran.fds, ran.threads));
            if !upload && need >= size.large_len as u64 / 2 {
                c.busy_peaks.push((ran.rss_kib, ran.fds, ran.threads));
            }
            // The longest recent run, fading: the next kill lands within it.
            let typical = if upload { &mut upload_secs } else { &mut download_secs };
            *typical = (*typical * 0.9).max(ran.secs).max(0.2);
        }
        // Nothing changed while it ran: the destination must now be the source.
        let quiet = ok && !changed_now;
        let label =
            format!("run {} ({}, {fate:?}, exit {:?})", c.runs, if upload { "upload" } else { "download" }, ran.code);

        // Multipart uploads left open: only a SIGKILL may leave one. They are
        // aborted here, as a bucket's lifecycle rule would.
        for (id, _, key) in h.server.store().pending_upload_ids() {
            if open_before.contains(&id) {
                continue;
            }
            if ran.fate == Fate::Kill && signalled {
                c.uploads_left_by_kill += 1;
            } else {
                c.uploads_left_otherwise.push(format!("{label}: {key} ({id})"));
            }
            h.server.store().take_upload(&id);
        }

        if upload {
            let local = tree.current(&mut hashes);
            let objects = objects_under(&h, "up/");
            for (rel, (digest, checksum)) in &objects {
                match tree.ever.get(rel) {
                    Some(v) if v.contains(digest) => {}
                    Some(_) => c.corrupt.push(format!("{label}: s3://bucket/up/{rel} is no version of its file")),
                    None => c.extra.push(format!("{label}: s3://bucket/up/{rel} has no file")),
                }
                if !checksum {
                    c.without_checksum.push(format!("{label}: s3://bucket/up/{rel}"));
                }
            }
            if ok {
                for (rel, digest) in &local {
                    match objects.get(rel) {
                        None => c.missing.push(format!("{label}: {rel} not uploaded")),
                        Some((d, _)) if quiet && d != digest => {
                            c.corrupt.push(format!("{label}: s3://bucket/up/{rel} is not the file as it is"));
                        }
                        Some(_) => {}
                    }
                }
                if quiet {
                    c.quiet_points += 1;
                    for rel in objects.keys().filter(|k| !local.contains_key(*k)) {
                        c.extra.push(format!("{label}: s3://bucket/up/{rel} kept though its file is gone"));
                    }
                    quiet_up |= ending;
                }
            }
            let (_, temps) = walk(&tree.root, &mut hashes);
            c.left_behind.extend(temps.iter().map(|t| format!("{label}: {t} in the uploaded tree")));
        } else {
            let (files, temps) = walk(&dest, &mut hashes);
            for (rel, digest) in &files {
                let key = format!("src/{rel}");
                match source.ever.get(&key) {
                    Some(v) if v.contains(digest) => {}
                    Some(_) => c.corrupt.push(format!("{label}: {rel} is no version of {key}")),
                    None => c.extra.push(format!("{label}: {rel} was never an object")),
                }
            }
            if ok {
                for (key, digest) in &source.current {
                    let rel = &key["src/".len()..];
                    let Some(have) = files.get(rel) else {
                        if before.contains_key(key) {
                            c.missing.push(format!("{label}: {key}"));
                        }
                        continue;
                    };
                    let allowed = |d: &Hash| {
                        d == digest || before.get(key) == Some(d) || changed.get(key).is_some_and(|v| v.contains(d))
                    };
                    if !allowed(have) {
                        c.corrupt.push(format!("{label}: {rel} is an older version of {key} than the run saw"));
                    }
                }
                if quiet {
                    c.quiet_points += 1;
                    for rel in files.keys() {
                        let key = format!("src/{rel}");
                        if !source.current.contains_key(&key) {
                            c.extra.push(format!("{label}: {rel} kept though {key} is gone"));
                        } else if files[rel] != source.current[&key] {
                            c.corrupt.push(format!("{label}: {rel} is not {key} as it is"));
                        }
                    }
                    c.left_behind.extend(temps.iter().map(|t| format!("{label}: {t}")));
                    quiet_down |= ending;
                }
            }
        }
        if ending {
            runs_ending += 1;
            if runs_ending > 20 {
                c.failed.push("no quiet point in the 20 runs after the goal was moved".to_string());
                break;
            }
        }
    }
    c.faults_fired = faults_fired(&h, rules);
    (c, moved(&h), began.elapsed())
}

/// The counters, as `benches/soak.sh` prints them.
fn report(c: &Counters, moved: u64, took: Duration) -> String {
    let peak = |s: &[(u64, u64, u64)]| s.iter().fold((0, 0, 0), |a, p| (a.0.max(p.0), a.1.max(p.1), a.2.max(p.2)));
    // The peaks of all runs, of the first tenth and of the last tenth.
    let tenths = |runs: &[(u64, u64, u64)]| {
        let tenth = (runs.len() / 10).max(1);
        (peak(runs), peak(&runs[..tenth.min(runs.len())]), peak(&runs[runs.len().saturating_sub(tenth)..]))
    };
    let (all, first, last) = tenths(&c.peaks);
    let (busy, busy_first, busy_last) = tenths(&c.busy_peaks);
    format!(
        "moved {:.2} GiB in {:.0} s\n\
         runs {} (downloads {}, uploads {}), SIGKILL {}, SIGTERM {}, failed on their own {}, \
         uploads failed naming files replaced while they ran {}\n\
         publishes between runs {}, fresh starts {}, changes during a run {}, quiet points {}\n\
         faults injected {}, retries {}, straggler restarts {}, GET bytes beyond each run's need {:.2} GiB\n\
         peak RSS {} MiB, fds {}, threads {}; first tenth of runs {} MiB / {} fds / {} threads, last tenth {} MiB / {} fds / {} threads\n\
         busy downloads ({}): peak {} MiB / {} fds / {} threads; first tenth {} MiB / {} fds / {} threads, last tenth {} MiB / {} fds / {} threads\n\
         corrupt {}, missing {}, extra {}, left behind {}, without checksum {}\n\
         multipart uploads left open: by SIGKILL {} (aborted as a lifecycle rule would), otherwise {}\n\
         SIGTERM slower than 10 s to stop: {}",
        moved as f64 / f64::from(1u32 << 30),
        took.as_secs_f64(),
        c.runs,
        c.download_runs,
        c.upload_runs,
        c.kills,
        c.terms,
        c.failed.len(),
        c.failed_by_change,
        c.publishes,
        c.fresh_starts,
        c.changed_mid_run,
        c.quiet_points,
        c.faults_fired,
        c.retries,
        c.straggler_restarts,
        c.fetched_again as f64 / f64::from(1u32 << 30),
        all.0 / 1024,
        all.1,
        all.2,
        first.0 / 1024,
        first.1,
        first.2,
        last.0 / 1024,
        last.1,
        last.2,
        c.busy_peaks.len(),
        busy.0 / 1024,
        busy.1,
        busy.2,
        busy_first.0 / 1024,
        busy_first.1,
        busy_first.2,
        busy_last.0 / 1024,
        busy_last.1,
        busy_last.2,
        c.corrupt.len(),
        c.missing.len(),
        c.extra.len(),
        c.left_behind.len(),
        c.without_checksum.len(),
        c.uploads_left_by_kill,
        c.uploads_left_otherwise.len(),
        c.slow_to_stop.len(),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn soak_through_faults_kills_and_a_changing_source_leaves_nothing_wrong_missing_or_behind() {
    let size = Size::from_env();
    let seed = std::env::var("S3LOAD_SOAK_SEED").ok().and_then(|s| s.parse().ok()).unwrap_or(20_261_204);
    let (c, moved, took) = soak(&size, seed).await;
    let text = report(&c, moved, took);
    println!("{text}");
    if let Ok(path) = std::env::var("S3LOAD_SOAK_REPORT") {
        std::fs::write(path, &text).unwrap();
    }
    let show = |what: &str, v: &[String]| {
        assert!(
            v.is_empty(),
            "{what}: {}\n{}\n\n{text}",
            v.len(),
            v.iter().take(20).cloned().collect::<Vec<_>>().join("\n")
        );
    };
    show("corrupt", &c.corrupt);
    show("missing", &c.missing);
    show("extra", &c.extra);
    show("left behind after a quiet run", &c.left_behind);
    show("objects uploaded without their checksum", &c.without_checksum);
    show("multipart uploads left open by a run not SIGKILLed", &c.uploads_left_otherwise);
    show("runs that failed on their own", &c.failed);
    assert!(c.slow_to_stop.is_empty(), "SIGTERM took over 10 s to stop a run: {:?}", c.slow_to_stop);
    // The machinery did what it is there for.
    assert!(c.kills > 0 && c.terms > 0 && c.quiet_points >= 2, "{text}");
    assert!(c.faults_fired > 0 && c.retries > 0, "{text}");
}
