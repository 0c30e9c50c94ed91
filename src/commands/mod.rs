//! The commands: turn a [`Command`] into listings, a plan and an engine run,
//! and the outcome into an exit code.
//!
//! `cp` and `sync` go through one run driver ([`driver`]); each direction
//! ([`download`], [`upload`]) supplies its plan, its engine call and its
//! deletions.

mod atomic;
mod cat;
mod connect;
mod download;
mod driver;
mod jobs;
mod ls;
mod session;
mod summary;
mod upload;

use crate::config::{Command, Config, SyncOptions};
use crate::error::Error;
use crate::output::Output;
use crate::plan::filter::Filters;
use crate::url::Location;

pub use connect::{Connect, Given, ToS3};
use session::Session;

/// Runs one command against S3; returns the process exit code.
pub async fn run(cmd: Command, cfg: Config) -> u8 {
    run_with(cmd, cfg, &ToS3).await
}

/// Runs one command against the store `stores` makes; returns the process
/// exit code.
pub async fn run_with(cmd: Command, cfg: Config, stores: &dyn Connect) -> u8 {
    let out = Output { json: cfg.json };
    summary::SUMMARY_WRITER.store(0, std::sync::atomic::Ordering::SeqCst);
    // Copies watch for signals from their start: a stop while listing or
    // planning ends them as one during transfers does. ls and cat keep the
    // signals' default action (see `Session::start`); rollback and versions
    // need no session (local, and a wait for a build's lock ends at once).
    let session = match &cmd {
        Command::Rollback { .. } | Command::Versions { .. } => None,
        Command::Ls { .. } | Command::Cat { .. } => Some(Session::start(&cfg, stores, false)),
        Command::Cp { .. } | Command::Sync { .. } => Some(Session::start(&cfg, stores, true)),
    };
    let result = match (cmd, &session) {
        (Command::Ls { url }, Some(s)) => ls::ls(url, &cfg, s).await,
        (Command::Cp { src, dst, filters }, Some(s)) => copy(src, dst, &filters, None, &cfg, out, s).await,
        (Command::Sync { src, dst, filters, opts }, Some(s)) => match (&opts.atomic, src, dst) {
            (Some(_), Location::Remote(src), Location::Local(d)) => {
                atomic::sync(src, d, &filters, &opts, &cfg, out, s).await
            }
            (Some(_), _, _) => Err(Error::Usage("--atomic works from s3:// to a local DEST".into())),
            (None, src, dst) => copy(src, dst, &filters, Some(&opts), &cfg, out, s).await,
        },
        (Command::Cat { url }, Some(s)) => cat::cat(url, &cfg, s).await,
        (Command::Rollback { .. }, _) if cfg.dry_run => Err(Error::Usage(
            "rollback has no --dry-run: `s3load versions DEST` shows what it would switch between".into(),
        )),
        (Command::Rollback { dest }, _) => atomic::rollback(&dest),
        (Command::Versions { dest }, _) => atomic::list(&dest),
        (_, None) => Err(Error::Internal("a command that talks to the store started without its session".into())),
    };
    match result {
        Ok(code) => code,
        Err(Error::ClosedPipe) => {
            tracing::debug!("the reader of stdout closed the pipe");
            crate::error::exit_code::CLOSED_PIPE
        }
        // Stopped by a signal before the transfers (listing, planning):
        // said once, with the signal's exit code.
        Err(e) if session.as_ref().is_some_and(|s| s.stop.is_stopped()) => {
            crate::logging::error_line(&format!("ERROR {e}"));
            let code =
                session.as_ref().and_then(|s| s.stop.report(false)).unwrap_or(crate::error::exit_code::TERMINATED);
            summary::write_summary(
                &cfg,
                &serde_json::json!({"result": summary::result_name(code), "exit_code": code, "error": e.to_string()}),
                code,
            );
            code
        }
        Err(e) => {
            let message = format!("ERROR {e}");
            crate::logging::error_line(&message);
            // A command line refused by a command's own checks: name the
            // variables behind it, as for those refused before the run.
            if let Error::Usage(_) = e
                && let Some(note) = crate::cli::variables_behind(&message)
            {
                crate::logging::error_line(&note);
            }
            let code = e.setup_exit_code();
            summary::write_summary(
                &cfg,
                &serde_json::json!({"result": summary::result_name(code), "exit_code": code, "error": e.to_string()}),
                code,
            );
            code
        }
    }
}

/// Whether `id` may name an `--atomic` version.
pub fn valid_version_id(id: &str) -> bool {
    crate::localfs::versions::valid_id(id)
}

/// `cp` and `sync`, in whichever direction the locations say.
async fn copy(
    src: Location,
    dst: Location,
    filters: &Filters,
    sync: Option<&SyncOptions>,
    cfg: &Config,
    out: Output,
    session: &Session<'_>,
) -> Result<u8, Error> {
    match (src, dst) {
        (Location::Remote(s), Location::Local(d)) => download::download(s, d, filters, sync, cfg, out, session).await,
        (Location::Local(s), Location::Remote(d)) => upload::upload(s, d, filters, sync, cfg, out, session).await,
        (Location::Remote(_), Location::Remote(_)) => {
            Err(Error::Usage("copying from S3 to S3 is not supported; one side must be a local path".into()))
        }
        (Location::Local(_), Location::Local(_)) => {
            Err(Error::Usage("one of SRC and DST must be an s3:// URL and the other a local path".into()))
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;
    use crate::progress::ProgressMode;
    use crate::store::memory::{MemoryStore, Written};

    fn quiet() -> Config {
        Config { progress: ProgressMode::Off, ..Config::default() }
    }

    fn sync(src: &str, dst: &std::path::Path, delete: bool) -> Command {
        Command::Sync {
            src: Location::parse(src).unwrap(),
            dst: Location::parse(dst.to_str().unwrap()).unwrap(),
            filters: Filters::new(&[], &[]).unwrap(),
            opts: SyncOptions { delete, ..SyncOptions::default() },
        }
    }

    // A command runs whole against the store its caller gives: listing,
    // planning, fetching, verifying, committing and the sync record, with
    // no server.
    #[tokio::test(flavor = "multi_thread")]
    async fn a_sync_runs_whole_against_the_in_memory_store_and_a_second_one_copies_nothing() {
        let store = Arc::new(MemoryStore::new());
        store.put("b", "m/config.json", &b"{}"[..], Written::Md5);
        store.put("b", "m/w.bin", vec![3u8; 300_000], Written::Crc64);
        let dir = tempfile::tempdir().unwrap();
        let stores = Given(store.clone());
        assert_eq!(run_with(sync("s3://b/m/*", dir.path(), false), quiet(), &stores).await, 0);
        assert_eq!(std::fs::read(dir.path().join("w.bin")).unwrap(), vec![3u8; 300_000]);
        assert_eq!(std::fs::read(dir.path().join("config.json")).unwrap(), b"{}");
        let gets = store.gets().len();
        assert!(gets >= 2, "{gets} GETs");
        let record = std::fs::read_to_string(dir.path().join(".s3load/state")).unwrap();
        assert!(record.contains("\"w.bin\"") && record.contains("\"config.json\""), "the sync record: {record}");

        // Nothing changed: nothing fetched. A file the source lacks is
        // deleted with --delete.
        std::fs::write(dir.path().join("stale.txt"), b"old").unwrap();
        assert_eq!(run_with(sync("s3://b/m/*", dir.path(), true), quiet(), &stores).await, 0);
        assert_eq!(store.gets().len(), gets, "the second sync fetched again");
        assert!(!dir.path().join("stale.txt").exists());
        assert!(dir.path().join("w.bin").exists());

        // An empty source is refused (exit 3), and deletes nothing.
        assert_eq!(run_with(sync("s3://b/none/*", dir.path(), true), quiet(), &stores).await, 3);
        assert!(dir.path().join("w.bin").exists());
    }
}
