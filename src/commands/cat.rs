//! `cat`: one object to stdout (see `transfer::stream` for how).
//!
//! Exit codes: 0 when every byte was written and checked (or could not be
//! checked under `--verify auto`, said on stderr); 1 when the transfer or
//! the check failed after output may have started; 3 when nothing was
//! written (no such object, access denied); 141 (128 + SIGPIPE, as a shell
//! shows a `cat` killed by a closed pipe) when the reader closed the pipe,
//! quietly.

use crate::store::ObjectStore;
use std::path::PathBuf;

use crate::config::Config;
use crate::error::{Error, StoreErrorKind, exit_code};
use crate::refusal::Refusal;
use crate::transfer::{self, Engine, GetJob, Hooks, KnownChecksum, Verification};
use crate::url::S3Url;

pub(super) async fn cat(url: S3Url, cfg: &Config, session: &super::session::Session<'_>) -> Result<u8, Error> {
    if url.is_wildcard() || url.key.is_empty() || url.key.ends_with('/') {
        return Err(Error::Usage(format!(
            "cat takes the URL of one object, s3://bucket/key, not a prefix or wildcard ({url})"
        )));
    }
    let store = session.connect(cfg, Some(&url.bucket)).await?;
    let meta = store.head(&url.bucket, &url.key).await.map_err(|e| Error::object(&url.bucket, &url.key, None, e))?;
    if meta.size > crate::store::MAX_OBJECT_SIZE {
        return Err(Refusal::ImpossibleSize { url: url.to_string(), size: meta.size, done: "written" }.into());
    }
    let job = GetJob {
        bucket: url.bucket.as_str().into(),
        key: url.key.clone(),
        size: meta.size,
        etag: meta.etag,
        version_id: meta.version_id,
        last_modified: meta.last_modified,
        dest: PathBuf::new(),
        root: PathBuf::new().into(),
        checksum: KnownChecksum::from(meta.checksum),
        etag_md5: meta.etag_md5,
        source_parts: None,
        layout_unknown: None,
        piece: None,
    };
    let hooks = Hooks::reporting(std::sync::Arc::new(transfer::report::Silent));
    let engine = Engine::new(store, cfg.engine.clone(), hooks);
    let sink = transfer::Sink { out: Box::new(stdout()?), name: "stdout".into() };
    let source = job.source_url();
    match transfer::stream(&engine, job, sink).await {
        Ok(Verification::Verified(how)) => {
            tracing::debug!(object = %source, checksum = how, "verified");
            Ok(exit_code::SUCCESS)
        }
        Ok(Verification::Unverified(why)) => {
            tracing::warn!(object = %source, "written, not verified: {why}");
            Ok(exit_code::SUCCESS)
        }
        // A stream is never a piece of a split object.
        Ok(Verification::Off | Verification::Piece) => Ok(exit_code::SUCCESS),
        Err(Error::Io { source: e, .. }) if e.kind() == std::io::ErrorKind::BrokenPipe => {
            tracing::debug!(object = %source, "the reader closed the pipe");
            Ok(exit_code::CLOSED_PIPE)
        }
        Err(e @ Error::Unverified(_)) => {
            crate::logging::error_line(&format!("ERROR {e}; nothing was written"));
            Ok(exit_code::SETUP)
        }
        Err(e) => {
            let after = match e.store_kind() {
                Some(StoreErrorKind::PreconditionFailed) => {
                    "; the object was replaced while it was read: what was written is incomplete and may mix \
                     two versions, run again"
                }
                _ => "; what was written before the error is incomplete: discard it",
            };
            let e = match e {
                Error::Mismatch(_) => e,
                e => Error::AfterOutput { source: Box::new(e), advice: after },
            };
            crate::logging::error_line(&format!("ERROR {e}"));
            Ok(exit_code::PARTIAL_FAILURE)
        }
    }
}

/// Standard output as a file of its own (a duplicate of descriptor 1):
/// written in large unbuffered writes, never through the line buffer of
/// `std::io::Stdout`.
fn stdout() -> Result<std::fs::File, Error> {
    use std::os::fd::AsFd;
    let fd = std::io::stdout().as_fd().try_clone_to_owned().map_err(|e| Error::io("stdout", "opening", e))?;
    Ok(std::fs::File::from(fd))
}
