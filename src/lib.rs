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
//! [`integrity`] checks every byte; [`output`] writes stdout (data),
//! [`logging`] and [`progress`] stderr (people).
//!
//! The engine never sees clap: tests and embedders build [`config::Config`] and
//! [`config::Command`] directly and call [`run`] (or [`commands::run_with`],
//! with a store of their own).

pub mod cli;
pub mod commands;
pub mod config;
pub mod error;
pub mod integrity;
pub mod localfs;
pub mod logging;
pub mod model;
pub mod output;
pub mod packed;
pub mod plan;
pub mod progress;
pub mod rate;
pub mod refusal;
pub mod shard;
pub mod state;
pub mod store;
pub mod transfer;
pub mod units;
pub mod url;

pub use commands::run;
pub use logging::{LogFormat, LogLevel, init_logging};
