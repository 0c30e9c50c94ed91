//! Command-line flags (clap) and their translation into [`Config`] and [`Command`].
//!
//! Flags keep s5cmd's spelling and meaning where s5cmd has them. Every flag
//! can also be set from the environment as `S3LOAD_<FLAG>` (`--part-size` is
//! `S3LOAD_PART_SIZE`; see [`command`]), for pod specs that take their
//! settings from ConfigMaps. Precedence for every setting: the flag, then its
//! variable, then the default. The endpoint is read from `--endpoint-url`,
//! then `S3LOAD_ENDPOINT_URL`, then `AWS_ENDPOINT_URL_S3`, then
//! `AWS_ENDPOINT_URL`.

use clap::{Args as ClapArgs, CommandFactory, FromArgMatches, Parser, Subcommand};

use crate::config::{AtomicOptions, Command, Config, SyncOptions, UploadOptions};
use crate::error::Error;
use crate::integrity::Algorithm;
use crate::logging::LogLevel;
use crate::model::CheckModel;
use crate::plan::diff::Compare;
use crate::plan::filter::Filters;
use crate::progress::ProgressMode;
use crate::store::s3::S3Settings;
use crate::transfer::{Durability, EngineConfig, TUNED_REQUESTS_CEILING, VerifyMode, WriteMode};

/// `--concurrency` when not given (s5cmd's is 5).
const DEFAULT_PART_CONCURRENCY: usize = 8;
use crate::url::Location;

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
    /// doubles while that raises the rate by 15% or more, up to 128.
    #[arg(long, global = true, value_name = "N")]
    pub numworkers: Option<usize>,

    /// Retries of a failed request (per part for downloads) before giving up.
    #[arg(short = 'r', long, global = true, default_value_t = 10, value_name = "N")]
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

/// The prefix of every flag's environment variable.
pub const ENV_PREFIX: &str = "S3LOAD_";

/// The environment variable that sets `--long-name`: `S3LOAD_LONG_NAME`.
pub fn env_name(long: &str) -> String {
    format!("{ENV_PREFIX}{}", long.to_ascii_uppercase().replace('-', "_"))
}

/// The command line as clap sees it: the derived definitions, with every
/// visible flag of every subcommand also read from `S3LOAD_<FLAG>`, so that no
/// flag can be added without its variable. On/off flags take `true`/`false`
/// (also `yes`/`no`, `on`/`off`, `1`/`0`) from the environment; a repeatable
/// flag (`--include`, `--exclude`) takes one value from it; an empty variable
/// counts as unset.
pub fn command() -> clap::Command {
    command_for(&[])
}

/// [`command`] for these arguments: a flag given in `argv` does not read its
/// variable at all, so a bad value in the environment cannot fail a command
/// line that overrides it (clap would still parse the variable where a global
/// flag is propagated to the subcommand).
fn command_for(argv: &[String]) -> clap::Command {
    fn with_env(cmd: clap::Command, argv: &[String]) -> clap::Command {
        cmd.mut_args(|arg| {
            let Some(long) = arg.get_long().filter(|_| !arg.is_hide_set()).map(str::to_string) else { return arg };
            if given(argv, &long, arg.get_short()) {
                return arg;
            }
            let arg = arg.env(env_name(&long));
            if matches!(arg.get_action(), clap::ArgAction::SetTrue) {
                arg.value_parser(clap::builder::BoolishValueParser::new())
            } else {
                arg
            }
        })
        .mut_subcommands(|sub| with_env(sub, argv))
    }
    with_env(Args::command(), argv)
}

/// Whether `argv` gives the flag `--long` (or `-s`, alone or first in a
/// cluster such as `-c4`). Errs towards yes: a value that merely looks like
/// the flag only means its variable is not read.
fn given(argv: &[String], long: &str, short: Option<char>) -> bool {
    argv.iter().any(|a| {
        a.strip_prefix("--").is_some_and(|rest| rest == long || rest.starts_with(&format!("{long}=")))
            || short.is_some_and(|c| !a.starts_with("--") && a.strip_prefix('-').is_some_and(|r| r.contains(c)))
    })
}

impl Args {
    /// Parses the process's arguments and environment; prints help, the
    /// version or the error and exits where clap says so.
    pub fn from_env() -> Args {
        Args::try_from_args(std::env::args_os()).unwrap_or_else(|e| {
            if e.use_stderr()
                && let Some(note) = variables_behind(&e.to_string())
            {
                let _ = e.print();
                crate::logging::error_line(&note);
                std::process::exit(e.exit_code());
            }
            e.exit()
        })
    }

    /// Parses `args` (the program's name first) and the process's environment.
    pub fn try_from_args<I, T>(args: I) -> Result<Args, clap::Error>
    where
        I: IntoIterator<Item = T>,
        T: Into<std::ffi::OsString> + Clone,
    {
        let args: Vec<std::ffi::OsString> = args.into_iter().map(Into::into).collect();
        let argv: Vec<String> = args.iter().skip(1).map(|a| a.to_string_lossy().into_owned()).collect();
        Args::from_arg_matches(&command_for(&argv).try_get_matches_from(args)?)
    }
}

/// For an error about flags (`message` names them as `--flag`): which of
/// those flags came from the environment rather than the command line, said
/// so that a value set in a ConfigMap is found. `None` when none did.
pub fn variables_behind(message: &str) -> Option<String> {
    let argv: Vec<String> = std::env::args_os().skip(1).map(|a| a.to_string_lossy().into_owned()).collect();
    let mut flags = std::collections::BTreeMap::new();
    fn collect(cmd: &clap::Command, out: &mut std::collections::BTreeMap<String, Option<char>>) {
        out.extend(cmd.get_arguments().filter_map(|a| a.get_long().map(|l| (l.to_string(), a.get_short()))));
        cmd.get_subcommands().for_each(|s| collect(s, out));
    }
    collect(&command(), &mut flags);
    let named = |long: &str| {
        let flag = format!("--{long}");
        message
            .match_indices(&flag)
            .any(|(i, _)| !message[i + flag.len()..].starts_with(|c: char| c.is_ascii_alphanumeric() || c == '-'))
    };
    let from_env: Vec<String> = flags
        .iter()
        .filter(|(long, short)| named(long) && !given(&argv, long, **short))
        .filter_map(|(long, _)| {
            let var = env_name(long);
            let value = std::env::var_os(&var).filter(|v| !v.is_empty())?;
            Some(format!("{var}={:?}", value.to_string_lossy()))
        })
        .collect();
    let (list, verb) = (from_env.join(", "), if from_env.len() == 1 { "is" } else { "are" });
    (!from_env.is_empty())
        .then(|| format!("{list} {verb} set in the environment, for the flag not given; fix or unset it"))
}

/// Endpoint precedence: flag, then `AWS_ENDPOINT_URL_S3`, then `AWS_ENDPOINT_URL`.
fn resolve_endpoint(flag: Option<String>, env: impl Fn(&str) -> Option<String>) -> Result<Option<String>, Error> {
    let ep = flag.or_else(|| env("AWS_ENDPOINT_URL_S3")).or_else(|| env("AWS_ENDPOINT_URL")).filter(|s| !s.is_empty());
    if let Some(e) = &ep
        && !(e.starts_with("http://") || e.starts_with("https://"))
    {
        return Err(Error::Usage(format!("endpoint {e:?} must start with http:// or https://")));
    }
    Ok(ep)
}

/// What `completions` and `man` print: text generated from the clap
/// definitions themselves, so it cannot drift from `--help`.
pub fn generated(cmd: &Cmd) -> Option<Vec<u8>> {
    let mut command = command();
    let mut out = Vec::new();
    match cmd {
        Cmd::Completions { shell } => clap_complete::generate(*shell, &mut command, "s3load", &mut out),
        Cmd::Man => man_page(command, &mut out).expect("rendering into memory"),
        _ => return None,
    }
    Some(out)
}

/// One page: the command's own sections, then each visible subcommand's
/// synopsis, description and options under a heading of its own.
fn man_page(mut command: clap::Command, out: &mut Vec<u8>) -> std::io::Result<()> {
    command.build();
    clap_mangen::Man::new(command.clone()).render(out)?;
    for sub in command.get_subcommands().filter(|s| !s.is_hide_set() && s.get_name() != "help") {
        let title = format!("s3load {}", sub.get_name()).to_uppercase();
        out.extend_from_slice(format!(".SH \"{title}\"\n").as_bytes());
        let page = clap_mangen::Man::new(sub.clone());
        page.render_synopsis_section(out)?;
        page.render_description_section(out)?;
        page.render_options_section(out)?;
    }
    Ok(())
}

impl Args {
    /// Validates the flags and builds the engine's view of the run.
    pub fn into_config(self) -> Result<(Command, Config), Error> {
        if self.numworkers == Some(0) {
            return Err(Error::Usage("--numworkers must be at least 1".into()));
        }
        let max_requests = self.numworkers.unwrap_or(TUNED_REQUESTS_CEILING);
        let s3 = S3Settings {
            endpoint_url: resolve_endpoint(self.endpoint_url, |k| std::env::var(k).ok())?,
            region: self.region,
            profile: self.profile,
            no_sign_request: self.no_sign_request,
            retry_count: self.retry_count,
            static_credentials: None,
            request_timeout: self.request_timeout,
            request_deadline: self.request_deadline,
        };
        if self.stall_timeout.is_zero() || self.request_timeout.is_zero() || self.request_deadline.is_zero() {
            return Err(Error::Usage(
                "--stall-timeout, --request-timeout and --request-deadline must be more than zero".into(),
            ));
        }
        let mut engine = EngineConfig {
            max_requests,
            tune_requests: self.numworkers.is_none(),
            retry_count: self.retry_count,
            stall_timeout: self.stall_timeout,
            // Read only by the commands that download (below); empty is no limit.
            limit_rate: None,
            verify: self.verify,
            check_model: self.check_model,
            durability: self.durability,
            write_mode: self.write_mode,
            journal_hold: self.journal_hold,
            ..EngineConfig::default()
        };
        engine.max_open_files = engine.max_open_files.max(max_requests.saturating_mul(2));
        let mut upload = UploadOptions::default();
        let mut shard = None;
        let mut run_id = None;
        let mut apply = |t: &TransferArgs| -> Result<(), Error> {
            shard = t.shard.as_deref().map(crate::shard::Shard::parse).transpose()?;
            if let Some(id) = &t.run_id
                && !crate::plan::run_listing::valid_run_id(id)
            {
                return Err(Error::Usage(format!(
                    "--run-id {id:?}: 1 to 128 letters, digits, '.', '_' or '-', not starting with '.' (a Job's uid \
                     fits: it is new for every Job, where a name is used again)"
                )));
            }
            run_id = t.run_id.clone();
            if t.concurrency == Some(0) || t.part_size == 0 {
                return Err(Error::Usage("--concurrency and --part-size must be at least 1".into()));
            }
            upload = UploadOptions {
                storage_class: t.storage_class.clone(),
                content_type: t.content_type.clone(),
                checksum: match t.checksum_algorithm {
                    ChecksumArg::Crc64nvme => Algorithm::Crc64Nvme,
                    ChecksumArg::Crc32c => Algorithm::Crc32c,
                    ChecksumArg::Crc32 => Algorithm::Crc32,
                },
                follow_symlinks: !t.no_follow_symlinks,
            };
            engine.part_concurrency = t.concurrency.unwrap_or(DEFAULT_PART_CONCURRENCY);
            engine.soft_part_cap = engine.tune_requests && t.concurrency.is_none();
            engine.split = !t.no_split;
            engine.part_size =
                t.part_size.checked_mul(1 << 20).ok_or_else(|| Error::Usage("--part-size is too large".into()))?;
            Ok(())
        };
        let command = match self.command {
            Cmd::Cp { transfer, src, dst } => {
                apply(&transfer)?;
                let filters = Filters::new(&transfer.include, &transfer.exclude)?;
                Command::Cp { src: Location::parse(&src)?, dst: Location::parse(&dst)?, filters }
            }
            Cmd::Sync {
                transfer,
                size_only,
                delete,
                max_delete,
                allow_empty_source,
                atomic,
                version_id,
                keep,
                src,
                dst,
            } => {
                apply(&transfer)?;
                let filters = Filters::new(&transfer.include, &transfer.exclude)?;
                let compare = if size_only { Compare::SizeOnly } else { Compare::SizeAndTime };
                if let Some(id) = version_id.as_deref().filter(|id| !crate::commands::valid_version_id(id)) {
                    return Err(Error::Usage(format!(
                        "--version-id {id:?}: use 1 to 64 letters, digits, '.', '_' or '-', not starting with '.'"
                    )));
                }
                let atomic = atomic.then_some(AtomicOptions { version_id, keep });
                let opts = SyncOptions { compare, delete, max_delete, allow_empty_source, atomic };
                Command::Sync { src: Location::parse(&src)?, dst: Location::parse(&dst)?, filters, opts }
            }
            Cmd::Cat { concurrency, part_size, url } => {
                if concurrency == 0 || part_size == 0 {
                    return Err(Error::Usage("--concurrency and --part-size must be at least 1".into()));
                }
                if self.dry_run {
                    return Err(Error::Usage("cat has no --dry-run: it changes nothing but stdout".into()));
                }
                // Each part is whole in memory: a size beyond what a Vec can
                // hold, or than the machine has, is refused here.
                if part_size > 4096 {
                    return Err(Error::Usage(format!(
                        "cat --part-size {part_size}: at most 4096 MiB (each part is held in memory)"
                    )));
                }
                engine.part_concurrency = concurrency;
                engine.part_size = part_size << 20;
                match Location::parse(&url)? {
                    Location::Remote(u) => Command::Cat { url: u },
                    Location::Local(p) => {
                        return Err(Error::Usage(format!(
                            "cat takes an s3:// URL, not a local path ({})",
                            p.display()
                        )));
                    }
                }
            }
            Cmd::Completions { .. } | Cmd::Man => {
                return Err(Error::Internal("completions and man are printed before the run".into()));
            }
            Cmd::Rollback { dest } => Command::Rollback { dest: dest.into() },
            Cmd::Versions { dest } => Command::Versions { dest: dest.into() },
            Cmd::Ls { url } => match url.as_deref().map(Location::parse).transpose()? {
                None => Command::Ls { url: None },
                Some(Location::Remote(u)) => Command::Ls { url: Some(u) },
                Some(Location::Local(p)) => {
                    return Err(Error::Usage(format!("ls takes an s3:// URL, not a local path ({})", p.display())));
                }
            },
        };
        let moves_bytes = matches!(command, Command::Cp { .. } | Command::Sync { .. } | Command::Cat { .. });
        if let Some(rate) = self.limit_rate.as_deref().map(str::trim).filter(|r| !r.is_empty() && moves_bytes) {
            let rate = crate::rate::parse_rate(rate)
                .map_err(|e| Error::Usage(format!("--limit-rate (or S3LOAD_LIMIT_RATE) {e}")))?;
            engine.limit_rate = Some(rate);
        }
        let config = Config {
            s3,
            engine,
            dry_run: self.dry_run,
            json: self.json,
            progress: self.progress,
            upload,
            log_format: self.log_format,
            progress_interval: self.progress_interval.max(std::time::Duration::from_millis(100)),
            summary_file: self.summary_file,
            shard,
            run_id,
        };
        Ok((command, config))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn endpoint_precedence_is_flag_then_s3_env_then_global_env() {
        let env = |k: &str| match k {
            "AWS_ENDPOINT_URL_S3" => Some("http://s3-env".to_string()),
            "AWS_ENDPOINT_URL" => Some("http://global-env".to_string()),
            _ => None,
        };
        assert_eq!(resolve_endpoint(Some("http://flag".into()), env).unwrap().as_deref(), Some("http://flag"));
        assert_eq!(resolve_endpoint(None, env).unwrap().as_deref(), Some("http://s3-env"));
        let only_global = |k: &str| (k == "AWS_ENDPOINT_URL").then(|| "http://global-env".to_string());
        assert_eq!(resolve_endpoint(None, only_global).unwrap().as_deref(), Some("http://global-env"));
        assert!(resolve_endpoint(Some("localhost:9000".into()), |_| None).is_err());
    }

    #[test]
    fn clap_definition_is_consistent() {
        Args::command().debug_assert();
        command().debug_assert();
    }

    /// Every flag a user can see, of every subcommand, with the variable that
    /// sets it; `--help` and `--version` excepted.
    fn visible_flags(cmd: &clap::Command, path: &str, out: &mut Vec<(String, String, Option<String>)>) {
        for arg in cmd.get_arguments().filter(|a| !a.is_hide_set()) {
            let Some(long) = arg.get_long() else { continue };
            if matches!(arg.get_action(), clap::ArgAction::Help | clap::ArgAction::Version) {
                continue;
            }
            let env = arg.get_env().map(|e| e.to_string_lossy().into_owned());
            out.push((path.to_string(), long.to_string(), env));
        }
        for sub in cmd.get_subcommands() {
            visible_flags(sub, &format!("{path} {}", sub.get_name()), out);
        }
    }

    #[test]
    fn every_visible_flag_of_every_subcommand_has_its_s3load_variable() {
        let mut cmd = command();
        cmd.build();
        let mut flags = Vec::new();
        visible_flags(&cmd, "s3load", &mut flags);
        // Some of each kind: global, per subcommand, on/off, repeatable.
        for (sub, long) in [("s3load", "numworkers"), ("s3load sync", "delete"), ("s3load cp", "exclude")] {
            assert!(flags.iter().any(|(s, l, _)| s == sub && l == long), "{sub} --{long} not found in {flags:?}");
        }
        assert!(flags.len() > 40, "{flags:?}");
        for (sub, long, env) in &flags {
            let want = format!("S3LOAD_{}", long.to_uppercase().replace('-', "_"));
            assert_eq!(env.as_deref(), Some(want.as_str()), "{sub} --{long}");
        }
        // Hidden flags (for tests) are not part of the interface.
        let hold = cmd.get_arguments().find(|a| a.get_long() == Some("journal-hold")).expect("--journal-hold");
        assert!(hold.get_env().is_none());
    }

    #[test]
    fn a_flag_counts_as_given_in_each_of_its_spellings() {
        let argv = |s: &str| s.split(' ').map(str::to_string).collect::<Vec<_>>();
        for line in ["--numworkers 4 sync a b", "sync --numworkers=4 a b"] {
            assert!(given(&argv(line), "numworkers", None), "{line}");
        }
        for line in ["sync -c 4 a b", "sync -c4 a b", "sync -pc 4 a b"] {
            assert!(given(&argv(line), "concurrency", Some('c')), "{line}");
        }
        for line in ["sync a b", "--numworkers-x 1 sync a b", "sync --concurrency-2 a b", "sync --c a b"] {
            assert!(!given(&argv(line), "numworkers", None), "{line}");
            assert!(!given(&argv(line), "concurrency", Some('c')), "{line}");
        }
    }

    #[test]
    fn help_names_each_flags_variable() {
        let mut cmd = command();
        let help = cmd.render_long_help().to_string();
        for var in ["S3LOAD_NUMWORKERS", "S3LOAD_LIMIT_RATE", "S3LOAD_PROGRESS_INTERVAL", "S3LOAD_DRY_RUN"] {
            assert!(help.contains(&format!("[env: {var}")), "{var} missing from:\n{help}");
        }
        let sync = cmd.find_subcommand_mut("sync").expect("sync").render_long_help().to_string();
        for var in ["S3LOAD_DELETE", "S3LOAD_MAX_DELETE", "S3LOAD_PART_SIZE", "S3LOAD_SHARD", "S3LOAD_RUN_ID"] {
            assert!(sync.contains(&format!("[env: {var}")), "{var} missing from:\n{sync}");
        }
    }
}
