//! What s3load prints: one line per operation, in s5cmd's spirit.
//!
//! stdout carries data only: `cp SRC DST` per object copied (or, with `--json`, one
//! JSON object per operation) and `ls` listings. Errors, progress and the summary go
//! to stderr (through [`crate::logging`]). A failed operation is printed as
//! `ERROR "cp SRC DST": reason`.

use std::io::Write;

use serde_json::json;

use crate::error::Error;
use crate::transfer::Verification;

#[derive(Debug, Clone, Copy, Default)]
pub struct Output {
    pub json: bool,
}

impl Output {
    /// Reports one operation. `err_out` writes to stderr (so a progress bar can be
    /// suspended around it).
    pub fn op(
        &self,
        op: &str,
        src: &str,
        dst: &str,
        size: u64,
        result: Result<&Verification, &Error>,
        err_out: impl FnOnce(&str),
    ) {
        let line = match (self.json, result) {
            (true, Ok(v)) => {
                let verified = match v {
                    Verification::Verified(how) => json!(how),
                    Verification::Unverified(_) | Verification::Off | Verification::Piece => json!(false),
                };
                json!({"operation": op, "success": true, "source": src, "destination": dst,
                       "object": {"size": size}, "verified": verified})
                .to_string()
            }
            (true, Err(e)) => {
                json!({"operation": op, "success": false, "source": src, "destination": dst, "error": e.to_string()})
                    .to_string()
            }
            (false, Ok(_)) => format!("{op} {src} {dst}"),
            (false, Err(e)) => {
                err_out(&format!("ERROR \"{op} {src} {dst}\": {e}"));
                return;
            }
        };
        let mut out = std::io::stdout().lock();
        let _ = writeln!(out, "{line}");
    }

    /// A destination file deleted by `sync --delete` (`rm PATH`, as s5cmd prints it).
    pub fn removed(&self, path: &str, result: Result<(), &Error>, err_out: impl FnOnce(&str)) {
        let line = match (self.json, result) {
            (true, Ok(())) => json!({"operation": "rm", "success": true, "source": path}).to_string(),
            (true, Err(e)) => {
                json!({"operation": "rm", "success": false, "source": path, "error": e.to_string()}).to_string()
            }
            (false, Ok(())) => format!("rm {path}"),
            (false, Err(e)) => {
                err_out(&format!("ERROR \"rm {path}\": {e}"));
                return;
            }
        };
        let _ = writeln!(std::io::stdout().lock(), "{line}");
    }

    /// A planned operation under `--dry-run`.
    pub fn planned(&self, op: &str, src: &str, dst: &str, size: u64) {
        let line = if self.json {
            json!({"operation": op, "dry_run": true, "source": src, "destination": dst, "object": {"size": size}})
                .to_string()
        } else {
            format!("{op} {src} {dst}").trim_end().to_string()
        };
        let _ = writeln!(std::io::stdout().lock(), "{line}");
    }
}

/// One line of data on stdout (`ls`, `versions`); [`Error::ClosedPipe`] when
/// the reader has gone (`| head`), so the command stops quietly with 141.
pub fn stdout_line(line: &str) -> Result<(), Error> {
    match writeln!(std::io::stdout().lock(), "{line}") {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => Err(Error::ClosedPipe),
        Err(e) => Err(Error::io("stdout", "writing", e)),
    }
}
