//! The commands: turn a [`Command`] into listings, a plan and an engine run,
//! and the outcome into an exit code.
//!
//! `cp` and `sync` go through one run driver ([`driver`]); each direction
//! ([`download`], [`upload`]) supplies its plan, its engine call and its
//! deletions.

use std::sync::Arc;

mod atomic;
mod cat;
mod download;
mod driver;
mod ls;
mod summary;
mod upload;

use crate::config::{Command, Config, SyncOptions};
use crate::error::Error;
use crate::output::Output;
use crate::plan::filter::Filters;
use crate::store::ObjectStore;
use crate::store::s3::S3Store;
use crate::url::Location;

/// Runs one command; returns the process exit code.
pub async fn run(cmd: Command, cfg: Config) -> u8 {
    let out = Output { json: cfg.json };
    let result = match cmd {
        Command::Ls { url } => ls::ls(url, &cfg).await,
        Command::Cp { src, dst, filters } => copy(src, dst, &filters, None, &cfg, out).await,
        Command::Sync { src, dst, filters, opts } => match (&opts.atomic, src, dst) {
            (Some(a), Location::Remote(s), Location::Local(d)) => {
                atomic::sync(s, d, &filters, &opts, a, &cfg, out).await
            }
            (Some(_), _, _) => Err(Error::Usage("--atomic works from s3:// to a local DEST".into())),
            (None, src, dst) => copy(src, dst, &filters, Some(&opts), &cfg, out).await,
        },
        Command::Cat { url } => cat::cat(url, &cfg).await,
        Command::Rollback { .. } if cfg.dry_run => Err(Error::Usage(
            "rollback has no --dry-run: `s3load versions DEST` shows what it would switch between".into(),
        )),
        Command::Rollback { dest } => atomic::rollback(&dest),
        Command::Versions { dest } => atomic::list(&dest),
    };
    match result {
        Ok(code) => code,
        Err(Error::ClosedPipe) => {
            tracing::debug!("the reader of stdout closed the pipe");
            crate::error::exit_code::CLOSED_PIPE
        }
        Err(e) => {
            crate::output::error_line(&format!("ERROR {e}"));
            let code = e.setup_exit_code();
            summary::write_summary(
                &cfg,
                &serde_json::json!({"result": summary::result_name(code), "exit_code": code, "error": e.to_string()}),
            );
            code
        }
    }
}

/// Whether `id` may name an `--atomic` version.
pub fn valid_version_id(id: &str) -> bool {
    atomic::valid_id(id)
}

async fn connect(cfg: &Config, bucket: Option<&str>) -> Result<Arc<dyn ObjectStore>, Error> {
    let store = S3Store::connect(&cfg.s3, bucket).await.map_err(|e| Error::store("connecting to S3", e))?;
    Ok(Arc::new(store))
}

/// `cp` and `sync`, in whichever direction the locations say.
async fn copy(
    src: Location,
    dst: Location,
    filters: &Filters,
    sync: Option<&SyncOptions>,
    cfg: &Config,
    out: Output,
) -> Result<u8, Error> {
    match (src, dst) {
        (Location::Remote(s), Location::Local(d)) => download::download(s, d, filters, sync, cfg, out).await,
        (Location::Local(s), Location::Remote(d)) => upload::upload(s, d, filters, sync, cfg, out).await,
        (Location::Remote(_), Location::Remote(_)) => {
            Err(Error::Usage("copying from S3 to S3 is not supported; one side must be a local path".into()))
        }
        (Location::Local(_), Location::Local(_)) => {
            Err(Error::Usage("one of SRC and DST must be an s3:// URL and the other a local path".into()))
        }
    }
}
