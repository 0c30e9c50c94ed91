//! The end of a run: the summary line on stderr and the `--summary-file`.

use crate::config::Config;
use crate::error::exit_code;
use crate::progress::human_bytes;

/// What a run did: a line on stderr, and with `--summary-file` a JSON object.
pub(super) struct Summary {
    pub operation: &'static str,
    pub source: String,
    pub destination: String,
    pub copied: usize,
    pub bytes: u64,
    /// Copied objects that could not be checked against a checksum.
    pub unverified: usize,
    pub verify_off: bool,
    pub skipped: usize,
    /// `None` without `--delete`.
    pub deleted: Option<usize>,
    pub failed: usize,
    pub secs: f64,
}

impl Summary {
    fn rate(&self) -> u64 {
        if self.secs > 0.0 { (self.bytes as f64 / self.secs) as u64 } else { 0 }
    }

    pub fn print(&self) {
        let deleted = self.deleted.map(|d| format!(", {d} deleted")).unwrap_or_default();
        let unverified = match (self.verify_off, self.unverified) {
            (true, _) => ", not verified (--verify off)".to_string(),
            (false, 0) => String::new(),
            (false, n) => format!(", {n} of them unverified"),
        };
        let text = format!(
            "{}: {} copied ({}){unverified}, {} up to date{deleted}, {} failed, in {:.1} s ({}/s)",
            if self.failed == 0 { "done" } else { "finished with errors" },
            self.copied,
            human_bytes(self.bytes),
            self.skipped,
            self.failed,
            self.secs,
            human_bytes(self.rate()),
        );
        let mut fields = self.to_json(0);
        if let Some(o) = fields.as_object_mut() {
            o.remove("result");
            o.remove("exit_code");
        }
        crate::output::stderr_line("INFO", &text, serde_json::json!({ "summary": fields }));
    }

    /// The `--summary-file` object (documented in docs/configuration.md).
    fn to_json(&self, code: u8) -> serde_json::Value {
        serde_json::json!({
            "result": result_name(code),
            "exit_code": code,
            "operation": self.operation,
            "source": self.source,
            "destination": self.destination,
            "objects": {
                "copied": self.copied,
                "up_to_date": self.skipped,
                "deleted": self.deleted.unwrap_or(0),
                "failed": self.failed,
                "unverified": if self.verify_off { self.copied } else { self.unverified },
            },
            "bytes": self.bytes,
            "seconds": (self.secs * 1000.0).round() / 1000.0,
            "bytes_per_second": self.rate(),
        })
    }

    pub fn write(&self, cfg: &Config, code: u8) {
        write_summary(cfg, &self.to_json(code));
    }
}

/// The name of an exit code in the summary file.
pub(super) fn result_name(code: u8) -> &'static str {
    match code {
        exit_code::SUCCESS => "success",
        exit_code::PARTIAL_FAILURE => "partial_failure",
        exit_code::USAGE => "usage_error",
        exit_code::INTERRUPTED => "interrupted",
        exit_code::TERMINATED => "terminated",
        _ => "error",
    }
}

/// Writes `--summary-file` (one JSON object and a newline), if asked for.
pub(super) fn write_summary(cfg: &Config, value: &serde_json::Value) {
    if let Some(path) = &cfg.summary_file
        && let Err(e) = std::fs::write(path, format!("{value}\n"))
    {
        crate::output::error_line(&format!("ERROR writing the summary to {}: {e}", path.display()));
    }
}
