//! The engine's configuration: plain values built by the CLI layer (or by tests
//! directly). Nothing here knows about clap.

use crate::integrity::Algorithm;
use crate::plan::diff::Compare;
use crate::plan::filter::Filters;
use crate::progress::ProgressMode;
use crate::store::s3::S3Settings;
use crate::transfer::EngineConfig;
use crate::url::{Location, S3Url};

/// Everything a run needs besides the command.
#[derive(Debug, Clone)]
pub struct Config {
    pub s3: S3Settings,
    pub engine: EngineConfig,
    /// Print planned operations, change nothing.
    pub dry_run: bool,
    /// One JSON object per operation on stdout.
    pub json: bool,
    pub progress: ProgressMode,
    pub upload: UploadOptions,
    /// Progress lines as JSON (with `--log-format json`).
    pub log_format: crate::logging::LogFormat,
    /// Between progress lines (`--progress log`).
    pub progress_interval: std::time::Duration,
    /// Where to write the run's summary as JSON at exit.
    pub summary_file: Option<std::path::PathBuf>,
    /// `--shard K/N`: this run takes one share of the source (see [`crate::shard`]).
    pub shard: Option<crate::shard::Shard>,
    /// `--run-id`: names the run whose shards share one listing (see
    /// `plan::run_listing`); needed by sharded downloads.
    pub run_id: Option<String>,
}

/// How uploads create objects.
#[derive(Debug, Clone)]
pub struct UploadOptions {
    /// `None`: the bucket's default (STANDARD).
    pub storage_class: Option<String>,
    /// `None`: guessed from the file name.
    pub content_type: Option<String>,
    /// Full-object checksum sent with every upload.
    pub checksum: Algorithm,
    /// Follow symlinks in the source (s5cmd's default); else leave them out.
    pub follow_symlinks: bool,
}

impl Default for UploadOptions {
    fn default() -> Self {
        UploadOptions { storage_class: None, content_type: None, checksum: Algorithm::Crc64Nvme, follow_symlinks: true }
    }
}

impl Default for Config {
    fn default() -> Self {
        Config {
            s3: S3Settings::default(),
            engine: EngineConfig::default(),
            dry_run: false,
            json: false,
            progress: ProgressMode::default(),
            upload: UploadOptions::default(),
            log_format: crate::logging::LogFormat::default(),
            progress_interval: std::time::Duration::from_secs(5),
            summary_file: None,
            shard: None,
            run_id: None,
        }
    }
}

/// What to do.
#[derive(Debug, Clone)]
pub enum Command {
    /// Copy every selected object, whatever is at the destination.
    Cp { src: Location, dst: Location, filters: Filters },
    /// Copy only what is missing or differs.
    Sync { src: Location, dst: Location, filters: Filters, opts: SyncOptions },
    /// List buckets (`None`) or objects.
    Ls { url: Option<S3Url> },
    /// One object to stdout.
    Cat { url: S3Url },
    /// Point an `--atomic` DEST back at its previous version.
    Rollback { dest: std::path::PathBuf },
    /// List an `--atomic` DEST's versions.
    Versions { dest: std::path::PathBuf },
}

/// What `sync` adds to `cp`.
#[derive(Debug, Clone, Default)]
pub struct SyncOptions {
    pub compare: Compare,
    /// Remove destination files (selected by the filters) that the source lacks.
    pub delete: bool,
    /// Refuse to delete anything when more than this many would go.
    pub max_delete: Option<u64>,
    /// An empty source is not an error (with `delete`: empty the destination).
    pub allow_empty_source: bool,
    /// `--atomic`: build a whole new version beside DEST and switch to it.
    pub atomic: Option<AtomicOptions>,
}

/// What `sync --atomic` adds (see `commands::atomic`).
#[derive(Debug, Clone, Default)]
pub struct AtomicOptions {
    /// `--version-id`; default: from the content.
    pub version_id: Option<String>,
    /// `--keep K`: versions kept after a switch (besides the live and the previous one).
    pub keep: Option<usize>,
}
