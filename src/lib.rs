//! s3load moves data between S3 (or any S3-compatible store) and a local directory,
//! as fast as the network allows, without ever leaving a wrong or half-written file.
//!
//! # Architecture
//!
//! `docs/ARCHITECTURE.md` has the modules and the data flow on one page. In
//! short: `cli` parses flags into [`config`]; [`commands`] lists and plans
//! ([`plan`], [`state`]), then runs [`transfer`] (downloads: one scheduler over
//! the parts of all objects; uploads: multipart with checksums) against the
//! [`store`] trait, whose `s3` module is the only user of the AWS SDK;
//! [`integrity`] checks every byte; [`progress`] and [`output`] keep stdout for
//! data and stderr for people.
//!
//! The engine never sees clap: tests and embedders build [`config::Config`] and
//! [`config::Command`] directly and call [`run`].

pub mod cli;
pub mod commands;
pub mod config;
pub mod error;
pub mod integrity;
pub mod localfs;
pub mod model;
pub mod output;
pub mod plan;
pub mod progress;
pub mod rate;
pub mod shard;
pub mod state;
pub mod store;
pub mod transfer;
pub mod url;

pub use commands::run;

/// Log line format on stderr (`--log-format`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum LogFormat {
    /// Human-readable lines; colour only on a terminal and without `NO_COLOR`.
    #[default]
    Text,
    /// One JSON object per line (for log collectors in a pod).
    Json,
}

/// Sets up logging on stderr for a `--log` level (error, warn, info, debug, trace).
/// s3load's own messages follow the level; the AWS SDK's are shown from debug on.
pub fn init_logging(level: &str, format: LogFormat) -> Result<(), error::Error> {
    use std::io::IsTerminal;
    let filter = match level {
        "error" | "warn" | "info" => format!("warn,s3load={level}"),
        "debug" | "trace" => format!("info,s3load={level},aws_smithy_runtime={level},aws_config={level}"),
        other => return Err(error::Error::Usage(format!("--log {other:?}: use error, warn, info, debug or trace"))),
    };
    let builder = tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_env_filter(tracing_subscriber::EnvFilter::new(filter))
        .with_target(false);
    let r = match format {
        LogFormat::Json => builder.json().flatten_event(true).with_current_span(false).with_span_list(false).try_init(),
        LogFormat::Text => {
            let colour = std::io::stderr().is_terminal() && std::env::var_os("NO_COLOR").is_none_or(|v| v.is_empty());
            builder.with_ansi(colour).try_init()
        }
    };
    r.map_err(|e| error::Error::Usage(format!("logging: {e}")))
}
