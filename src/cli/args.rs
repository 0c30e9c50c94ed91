//! The command line's definitions (clap): flags, subcommands and their help,
//! and the command-line names of the engine's choices.

use clap::{Args as ClapArgs, Parser, Subcommand};

use crate::logging::LogLevel;
use crate::model::CheckModel;
use crate::progress::ProgressMode;
use crate::transfer::{Durability, VerifyMode, WriteMode};

const ABOUT: &str = "Fast, verified transfers between S3 (or any S3-compatible store) and a local directory.";

const AFTER_HELP: &str = "\
Examples:
  s3load sync 's3://my-ml-bucket/model-artifacts/my-model-1.2.3/*' /model-artifacts/my-model-1.2.3
  s3load cp s3://my-ml-bucket/models/m/config.json ./config.json
  s3load --endpoint-url http://127.0.0.1:9000 ls s3://my-bucket/models/

Credentials come from the AWS default chain: environment, ~/.aws profile (--profile),
IRSA web identity, EKS Pod Identity, instance metadata. Exit codes: 0 success,
1 some objects failed, 2 bad command line, 3 nothing could be done (credentials,
endpoint, bucket, no matching object).";

/// s3load command line.
#[derive(Debug, Parser)]
#[command(name = "s3load", version, about = ABOUT, after_help = AFTER_HELP)]
pub struct Args {
    /// S3-compatible endpoint, e.g. http://127.0.0.1:9000 (path-style addressing is
    /// used). Defaults to $AWS_ENDPOINT_URL_S3, then $AWS_ENDPOINT_URL, then AWS.
    #[arg(long, global = true, value_name = "URL")]
    pub endpoint_url: Option<String>,

    /// AWS region. Defaults to $AWS_REGION, the profile's region, or the bucket's.
    #[arg(long, global = true)]
    pub region: Option<String>,

    /// Named profile from ~/.aws/config and ~/.aws/credentials.
    #[arg(long, global = true)]
    pub profile: Option<String>,

    /// Send requests unsigned (public buckets); no credentials are looked up.
    #[arg(long, global = true)]
    pub no_sign_request: bool,

    /// Requests in flight at once across all objects: pins the count. s3load's
    /// workers take parts, not whole objects, so this is also the connection
    /// count. Unset, the count is sized to the link: it starts at 16 and
    /// doubles while that raises the rate by 15% or more, up to 128 and within
    /// --max-memory.
    #[arg(long, global = true, value_name = "N")]
    pub numworkers: Option<usize>,

    /// Peak resident memory the sizing of requests in flight keeps within
    /// (e.g. 256MiB, 1G): more requests are added only while their price, what
    /// the ones in flight cost so far (at least 1.25 MiB each), fits under it.
    /// It never lowers the count (at worst it stays at the start of 16); it
    /// does not cap the process (a large listing counts against it and comes
    /// on top), and the price is an estimate the peak may pass by a few MiB.
    /// Raise it where each connection is slow and memory is spare (the log
    /// says "more would pass --max-memory"). Not with --numworkers, which pins
    /// the count. [default: 60MiB]
    #[arg(long, global = true, value_name = "SIZE")]
    pub max_memory: Option<String>,

    /// Retries of a failed request (per part for downloads) before giving up
    /// (at most 1000).
    #[arg(short = 'r', long, global = true, default_value_t = 10, value_name = "N",
          value_parser = clap::value_parser!(u32).range(..=1000))]
    pub retry_count: u32,

    /// Abort and retry a request that receives no data for this long (e.g. 30s, 2m).
    #[arg(long, global = true, default_value = "30s", value_name = "DURATION", value_parser = humantime::parse_duration)]
    pub stall_timeout: std::time::Duration,

    /// Longest wait for each attempt of a request that carries no streamed body
    /// (listing page, HEAD, HeadBucket, DeleteObjects, multipart create/abort),
    /// answer included; it is then retried (see --retry-count). GET bodies are
    /// bounded by --stall-timeout and a minimum rate instead.
    #[arg(long, global = true, default_value = "30s", value_name = "DURATION", value_parser = humantime::parse_duration)]
    pub request_timeout: std::time::Duration,

    /// Longest one such request may take with all its attempts and the waits
    /// between them: a store that accepts connections and never answers fails
    /// a listing, HEAD or download in this time (upload bodies are bounded by
    /// --stall-timeout per attempt instead).
    #[arg(long, global = true, default_value = "90s", value_name = "DURATION", value_parser = humantime::parse_duration)]
    pub request_deadline: std::time::Duration,

    /// Bytes per second received (downloads, cat) or sent (uploads) by the
    /// whole run, every connection together (e.g. 200MiB, 50M, 1.5G; K, M, G
    /// and KiB, MiB, GiB count in 1024s, KB, MB, GB in 1000s; at least 1K):
    /// to leave bandwidth on the node's link for the model server. Default:
    /// no limit.
    #[arg(long, global = true, value_name = "RATE")]
    pub limit_rate: Option<String>,

    /// Checksum verification: auto checks the store's full-object checksum
    /// (CRC64NVME, CRC32C, CRC32) when it states one; require also fails objects
    /// that cannot be checked; off checks nothing.
    #[arg(long, global = true, value_enum, default_value_t = VerifyMode::Auto)]
    pub verify: VerifyMode,

    /// Model structure checks on download: auto checks each *.safetensors
    /// file's header against its length before it is renamed into place, and
    /// after the run that each *.index.json names shards that are present and
    /// hold its tensors; off checks nothing.
    #[arg(long, global = true, value_enum, default_value_t = CheckModel::Auto)]
    pub check_model: CheckModel,

    /// What is on disk before success is reported: off (default) leaves flushing
    /// to the kernel (enough for an emptyDir, which a node crash loses anyway, and
    /// for NFS); syncfs flushes the destination's filesystem once at the end (use
    /// it for a shared block-backed volume); fsync flushes every file and its
    /// directory as it is committed (slower with many files).
    #[arg(long, global = true, value_enum, default_value_t = Durability::Off)]
    pub durability: Durability,

    /// How downloads write objects larger than --part-size (or uploaded in
    /// several parts): buffered (default) through the page cache, so that a
    /// reader right after the download (the model server beside an
    /// initContainer) finds them in memory; direct past it (O_DIRECT, where
    /// the filesystem allows), for a loader Job whose files are read later or
    /// elsewhere: it can save CPU where filling the page cache is dear, but
    /// the first reader reads from the disk. Measure both on your nodes.
    #[arg(long, global = true, value_enum, default_value_t = WriteMode::Buffered)]
    pub write_mode: WriteMode,

    /// How long a resume journal keeps its lines in memory before writing
    /// them (for tests; see docs/reliability.md).
    #[arg(long, global = true, hide = true, default_value = "5s", value_parser = humantime::parse_duration)]
    pub journal_hold: std::time::Duration,

    /// Print what would be copied; change nothing.
    #[arg(long, global = true)]
    pub dry_run: bool,

    /// Print one JSON object per operation on stdout.
    #[arg(long, global = true)]
    pub json: bool,

    /// Log level on stderr (debug and trace add the AWS SDK's own messages).
    #[arg(long, global = true, value_enum, default_value_t = LogLevel::Info, value_name = "LEVEL")]
    pub log: LogLevel,

    /// Log and progress line format on stderr: text, or json (one object per line).
    #[arg(long, global = true, value_enum, default_value_t = crate::logging::LogFormat::Text)]
    pub log_format: crate::logging::LogFormat,

    /// Write the run's summary as JSON to this file at exit (e.g.
    /// /dev/termination-log, so `kubectl describe pod` shows it).
    #[arg(long, global = true, value_name = "PATH")]
    pub summary_file: Option<std::path::PathBuf>,

    /// Progress display on stderr: a bar on a terminal, a line every 5 s otherwise.
    #[arg(long, global = true, value_enum, default_value_t = ProgressMode::Auto)]
    pub progress: ProgressMode,

    /// Time between progress lines when progress is shown as lines (not a bar).
    #[arg(long, global = true, default_value = "5s", value_name = "DURATION", value_parser = humantime::parse_duration)]
    pub progress_interval: std::time::Duration,

    #[command(subcommand)]
    pub command: Cmd,
}

#[derive(Debug, Subcommand)]
pub enum Cmd {
    /// Copy objects to a local path, or local files to S3. SRC: s3://bucket/key,
    /// s3://bucket/prefix/, a wildcard such as 's3://bucket/prefix/*' (quote it
    /// from the shell); or a local file, directory or wildcard.
    Cp {
        #[command(flatten)]
        transfer: TransferArgs,
        /// Source URL.
        src: String,
        /// Destination file or directory (a directory for prefixes and wildcards).
        dst: String,
    },
    /// Copy only what is missing or changed at the destination, either way
    /// (S3 -> local or local -> s3://bucket/prefix/). Same sources as cp.
    Sync {
        #[command(flatten)]
        transfer: TransferArgs,
        /// Compare sizes only; ignore modification times and the sync record.
        #[arg(long)]
        size_only: bool,
        /// Delete destination files that are not in the source (only files the
        /// filters select). Nothing is deleted if any listing or copy failed.
        #[arg(long)]
        delete: bool,
        /// With --delete: if more than N files would be deleted, delete none and fail.
        #[arg(long, value_name = "N", requires = "delete")]
        max_delete: Option<u64>,
        /// DEST is a symlink to a whole version: build the new version beside
        /// it (unchanged files hard-linked from the current one), verify it,
        /// put it on disk, then switch DEST with one rename. Readers see the
        /// old tree or the new one, never a mix.
        #[arg(long)]
        atomic: bool,
        /// With --atomic: the new version's name (default: from the listing's
        /// paths, sizes and ETags). Letters, digits, '.', '_' and '-'.
        #[arg(long, value_name = "ID", requires = "atomic")]
        version_id: Option<String>,
        /// With --atomic: after a switch, remove versions beyond the K most
        /// recent (never the live one, nor the one just switched away from).
        #[arg(long, value_name = "K", requires = "atomic")]
        keep: Option<usize>,
        /// An empty source is not an error; with --delete it empties the destination.
        #[arg(long)]
        allow_empty_source: bool,
        /// Source URL.
        src: String,
        /// Destination directory.
        dst: String,
    },
    /// List buckets, or objects and prefixes under s3://bucket/prefix (wildcards list
    /// every matching key).
    Ls {
        /// s3://bucket[/prefix]; omit to list buckets.
        url: Option<String>,
    },
    /// Write one object to standard output (e.g. `s3load cat s3://b/m.tar | tar x`).
    ///
    /// Parts are fetched in parallel and written in order; memory holds at
    /// most (concurrency + 1) x part-size of the object (144 MiB with the
    /// defaults), whatever its size. Every part is pinned to the object's ETag
    /// (and version), and the bytes are hashed as they stream and checked
    /// against the store's checksum after the last one.
    ///
    /// Output cannot be taken back: a failure, or a checksum mismatch, comes
    /// after some (or all) of the object was written; it is reported on stderr
    /// with exit code 1, and the output must be discarded. In a pipeline, check
    /// s3load's exit code (`set -o pipefail`). Exit codes: 0 written and
    /// checked (or not checkable, said on stderr, unless --verify require); 1
    /// failed after output may have started; 3 nothing written (no such
    /// object, access denied); 141 (128 + SIGPIPE, what a shell shows for a
    /// `cat` whose reader left) the reader closed the pipe early, said
    /// nowhere.
    Cat {
        /// Parts fetched at once (and held in memory until their turn).
        #[arg(short = 'c', long, default_value_t = 8, value_name = "N")]
        concurrency: usize,
        /// Size of each part in MiB.
        #[arg(short = 'p', long, default_value_t = 16, value_name = "MiB")]
        part_size: u64,
        /// s3://bucket/key of one object.
        url: String,
    },
    /// Print a shell completion script (bash, zsh, fish, elvish or powershell),
    /// generated from these definitions: e.g. `s3load completions bash >
    /// /etc/bash_completion.d/s3load`.
    Completions {
        #[arg(value_enum)]
        shell: clap_complete::Shell,
    },
    /// Print the man page (roff), generated from these definitions: `s3load
    /// man > /usr/local/share/man/man1/s3load.1`.
    #[command(hide = true)]
    Man,
    /// Switch a DEST filled by `sync --atomic` back to its previous version
    /// (one rename of the link).
    Rollback {
        /// The link `sync --atomic` maintains.
        dest: String,
    },
    /// List the versions of a DEST filled by `sync --atomic`, most recent
    /// first; `*` marks the one DEST points to.
    Versions {
        /// The link `sync --atomic` maintains.
        dest: String,
    },
}

#[derive(Debug, ClapArgs)]
pub struct TransferArgs {
    /// Parts of one object transferred at once [default: 8; without
    /// --numworkers a download takes more when no other object can use the
    /// requests in flight, so that a single large object fills the link].
    #[arg(short = 'c', long, value_name = "N")]
    pub concurrency: Option<usize>,
    /// Size of each part in MiB; objects up to this size are fetched in one request.
    #[arg(short = 'p', long, default_value_t = 16, value_name = "MiB")]
    pub part_size: u64,
    /// Leave out paths matching this wildcard (`*` any characters, `/` included;
    /// `?` one), relative to the source. Repeatable; wins over --include.
    #[arg(long, value_name = "PATTERN")]
    pub exclude: Vec<String>,
    /// Only take paths matching one of these wildcards (relative to the source).
    /// Repeatable.
    #[arg(long, value_name = "PATTERN")]
    pub include: Vec<String>,
    /// Uploads: storage class of the new objects (STANDARD, INTELLIGENT_TIERING,
    /// STANDARD_IA, GLACIER_IR, ...). Default: the bucket's.
    #[arg(long, value_name = "CLASS")]
    pub storage_class: Option<String>,
    /// Uploads: Content-Type of the new objects. Default: guessed from the file
    /// name (application/octet-stream when unknown).
    #[arg(long, value_name = "TYPE")]
    pub content_type: Option<String>,
    /// Uploads: the full-object checksum computed from each file and checked by
    /// the store.
    #[arg(long, value_enum, default_value_t = ChecksumArg::Crc64nvme)]
    pub checksum_algorithm: ChecksumArg,
    /// Uploads: leave symlinks out instead of uploading what they point to.
    #[arg(long)]
    pub no_follow_symlinks: bool,
    /// Take share K of N (0 <= K < N): N runs with the same source and
    /// destination each copy a disjoint share, balanced by bytes, and each
    /// stale path is deleted by one of them. In an Indexed Job:
    /// --shard $(JOB_COMPLETION_INDEX)/N.
    #[arg(long, value_name = "K/N")]
    pub shard: Option<String>,
    /// With --shard (downloads): names the run whose N shards share one
    /// listing of the source, recorded in DEST/.s3load by the first shard
    /// and read by the others, so that shards started at different times
    /// still partition one listing. Give every pod of one Job the same id and
    /// each Job its own, e.g. the Job's uid from the downward API. Every shard
    /// of a run needs the same --part-size, --no-split, --verify off,
    /// --include and --exclude: one given others is refused (exit 3).
    #[arg(long, value_name = "ID")]
    pub run_id: Option<String>,
    /// Downloads with --shard: take objects larger than a fair share whole
    /// (one shard each) instead of splitting their ranges across the shards.
    /// Splitting needs file locks (flock) that all pods see: any local
    /// filesystem, NFSv4 (EFS, FSx) without the nolock/local_lock options.
    #[arg(long)]
    pub no_split: bool,
}

/// `--checksum-algorithm`.
/// Command-line names (and help) of the engine's choices, so that nothing
/// below this module knows clap. Each line: variant => name, help ("" = none).
macro_rules! value_enum {
    ($ty:ty { $($variant:ident => $name:literal, $help:literal;)* }) => {
        impl clap::ValueEnum for $ty {
            fn value_variants<'a>() -> &'a [Self] {
                &[$(<$ty>::$variant),*]
            }

            fn to_possible_value(&self) -> Option<clap::builder::PossibleValue> {
                let (name, help) = match self {
                    $(<$ty>::$variant => ($name, $help),)*
                };
                let value = clap::builder::PossibleValue::new(name);
                Some(if help.is_empty() { value } else { value.help(help) })
            }
        }
    };
}

value_enum!(VerifyMode {
    Auto => "auto", "Check the strongest checksum the store states; objects without one are committed and counted as unverified";
    Off => "off", "Check nothing (the transport's own checks still apply)";
    Require => "require", "Like auto, but an object that cannot be checked fails";
});

value_enum!(CheckModel {
    Auto => "auto", "Check safetensors headers and weight indexes";
    Off => "off", "Check no model structure";
});

value_enum!(Durability {
    Syncfs => "syncfs", "One `syncfs` of the destination's filesystem after the last file is renamed into place: everything is on disk before the exit code says so";
    Fsync => "fsync", "`fsync` each file before its rename and its directory after: each file is durable as soon as it is reported, at a cost per file";
    Off => "off", "Leave flushing to the kernel (a crash may lose recently written files; their records are not trusted after a reboot)";
});

value_enum!(WriteMode {
    Buffered => "buffered", "Through the page cache";
    Direct => "direct", "O_DIRECT for objects larger than --part-size or uploaded in parts; buffered where the filesystem refuses";
});

value_enum!(ProgressMode {
    Auto => "auto", "A bar on a terminal, log lines otherwise";
    Bar => "bar", "";
    Log => "log", "";
    Off => "off", "";
});

value_enum!(LogLevel {
    Error => "error", "";
    Warn => "warn", "";
    Info => "info", "";
    Debug => "debug", "";
    Trace => "trace", "";
});

value_enum!(crate::logging::LogFormat {
    Text => "text", "Human-readable lines; colour only on a terminal and without `NO_COLOR`";
    Json => "json", "One JSON object per line (for log collectors in a pod)";
});

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum ChecksumArg {
    Crc64nvme,
    Crc32c,
    Crc32,
}
