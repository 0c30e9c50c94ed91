//! The engine's configuration: plain values built by the CLI layer (or by tests
//! directly). Nothing here knows about clap.

use crate::plan::diff::Compare;
use crate::progress::ProgressMode;
use crate::store::s3::S3Settings;
use crate::transfer::EngineConfig;
use crate::url::{Location, S3Url};

/// Everything a run needs besides the command.
#[derive(Debug, Clone, Default)]
pub struct Config {
    pub s3: S3Settings,
    pub engine: EngineConfig,
    /// Print planned operations, change nothing.
    pub dry_run: bool,
    /// One JSON object per operation on stdout.
    pub json: bool,
    pub progress: ProgressMode,
}

/// What to do.
#[derive(Debug, Clone)]
pub enum Command {
    /// Copy every selected object, whatever is at the destination.
    Cp { src: Location, dst: Location },
    /// Copy only what is missing or differs.
    Sync { src: Location, dst: Location, compare: Compare },
    /// List buckets (`None`) or objects.
    Ls { url: Option<S3Url> },
}
