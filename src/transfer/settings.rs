//! The engine's settings: limits, verification and durability modes.

use std::time::Duration;

/// `--verify`: how much checking an object needs before it is committed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum VerifyMode {
    /// Check the strongest checksum the store states; objects without one are
    /// committed and counted as unverified.
    #[default]
    Auto,
    /// Check nothing (the transport's own checks still apply).
    Off,
    /// Like auto, but an object that cannot be checked fails.
    Require,
}

/// `--durability`: what is on disk before s3load reports success.
///
/// The default is `off` because the main use does not need more: an
/// initContainer filling an `emptyDir` loses the directory with the node, and
/// NFS puts each file on the server at `close`. The sync record knows which
/// files were not flushed and fetches them again after a reboot. With
/// `syncfs` or `fsync`, each finished range is handed to the disk as it
/// completes (`sync_file_range`), so the final flush waits only for the tail.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Durability {
    /// One `syncfs` of the destination's filesystem after the last file is
    /// renamed into place: everything is on disk before the exit code says so.
    Syncfs,
    /// `fsync` each file before its rename and its directory after: each file is
    /// durable as soon as it is reported, at a cost per file.
    Fsync,
    /// Leave flushing to the kernel (a crash may lose recently written files;
    /// their records are not trusted after a reboot).
    #[default]
    Off,
}

/// How object data reaches the destination's disk (`--write-mode`).
///
/// `Direct` writes the whole blocks of objects fetched in more than one range
/// (larger than the part size, or uploaded in several parts) with `O_DIRECT`,
/// from aligned buffers, and hashes them from those buffers: no copy into
/// the page cache and no pages to allocate, which saves CPU where first
/// touching page-cache memory is dear (measured: half on 4 x 1 GiB on a VM),
/// but the files are not in the page cache afterwards, so the first reader
/// pays to read them from the disk. Where the filesystem refuses `O_DIRECT`
/// (tmpfs before Linux 6.6), writes stay buffered.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum WriteMode {
    /// Through the page cache: a reader right after the download finds the
    /// files in memory.
    #[default]
    Buffered,
    /// Past the page cache, for files that are not read soon on this machine.
    Direct,
}

/// Requests in flight at the start of a run whose count is sized to the link.
pub const START_REQUESTS: usize = 16;
/// The most requests in flight the link sizing goes to: with a 256 KiB write
/// buffer each, 32 MiB of bodies; at 90 MB/s per connection (S3's usual), over
/// 10 GB/s.
pub const TUNED_REQUESTS_CEILING: usize = 128;
/// `--max-memory` when not given: the link sizing adds no request that would
/// take the process's peak resident memory past 60 MiB (see
/// `transfer::memory`), under 64 MB however the megabyte is counted.
pub const DEFAULT_MAX_MEMORY: u64 = 60 << 20;

/// Engine limits. See `docs/configuration.md` for the defaults and why.
#[derive(Debug, Clone)]
pub struct EngineConfig {
    /// Bytes per ranged GET.
    pub part_size: u64,
    /// Parts of one object in flight at once (s5cmd's `--concurrency`).
    pub part_concurrency: usize,
    /// `part_concurrency` gives way for downloads when no other object can
    /// take a request (neither `--concurrency` nor `--numworkers` given): a
    /// single large object can use every request the link sizing allows.
    pub soft_part_cap: bool,
    /// Requests in flight at most, over all objects (`--numworkers`, or the
    /// ceiling of the link tuning).
    pub max_requests: usize,
    /// Size the requests in flight to the link, from [`START_REQUESTS`] up to
    /// `max_requests` (`--numworkers` not given), instead of running
    /// `max_requests` from the start.
    pub tune_requests: bool,
    /// `--max-memory`: resident memory the link sizing keeps within, in
    /// bytes (`None`: no bound). Only a sized count is bounded.
    pub max_memory: Option<u64>,
    /// Per-request write buffer: body memory is at most `max_requests ×
    /// buffer_size`, plus the hashing thread's (see `hasher::MAX_GIVEN`).
    pub buffer_size: usize,
    /// How long a fresh resume journal holds its lines in memory (see
    /// `localfs::journal::Journal`): objects that finish sooner never write one.
    pub journal_hold: Duration,
    /// Retries per part after the first attempt (`--retry-count`).
    pub retry_count: u32,
    /// Retries over the whole run; a storm ends in failure instead of going on.
    pub retry_budget: u64,
    /// A request that receives nothing for this long is aborted and retried.
    pub stall_timeout: Duration,
    /// `--limit-rate`: bytes per second received, the whole run together.
    pub limit_rate: Option<u64>,
    /// Times an object is fetched again whole after it changed or failed its checksum.
    pub max_restarts: u32,
    /// An object that changed since it was listed fails instead of being
    /// fetched again with its new identity: a run whose result is named after
    /// its listing (an `--atomic` version) must hold exactly what it listed.
    pub pinned: bool,
    pub verify: VerifyMode,
    /// `--check-model`: safetensors headers checked before commit.
    pub check_model: crate::model::CheckModel,
    pub durability: Durability,
    /// Objects with an open temporary file at once.
    pub max_open_files: usize,
    /// Filesystem calls (create, write, rename) running at once. Many threads
    /// writing one file contend on its inode lock and burn CPU spinning; a few
    /// writers keep the page cache just as busy.
    pub io_concurrency: usize,
    /// Whether body writes may run on the async threads (the destination's
    /// filesystem is local: [`crate::localfs::writes_are_local`]); set per run.
    pub inline_writes: bool,
    /// `--write-mode`.
    pub write_mode: WriteMode,
    /// `--shard` downloads split objects larger than a fair share across the
    /// shards (`--no-split` turns it off).
    pub split: bool,
}

impl Default for EngineConfig {
    fn default() -> Self {
        EngineConfig {
            part_size: 16 << 20,
            part_concurrency: 16,
            soft_part_cap: false,
            max_requests: 32,
            tune_requests: false,
            max_memory: None,
            buffer_size: 256 << 10,
            journal_hold: Duration::from_secs(5),
            retry_count: 10,
            retry_budget: 1000,
            stall_timeout: Duration::from_secs(30),
            limit_rate: None,
            max_restarts: 3,
            pinned: false,
            verify: VerifyMode::Auto,
            check_model: crate::model::CheckModel::Auto,
            durability: Durability::Off,
            max_open_files: 64,
            io_concurrency: 4,
            inline_writes: false,
            write_mode: WriteMode::Buffered,
            split: true,
        }
    }
}
