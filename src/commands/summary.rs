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
    /// Objects split across shards (`--shard`) whose piece this run wrote (or
    /// had none of), left to the shard that finishes them.
    pub pieces: usize,
    pub bytes: u64,
    /// Copied objects that could not be checked against a checksum.
    pub unverified: usize,
    pub verify_off: bool,
    pub skipped: usize,
    /// `None` without `--delete`.
    pub deleted: Option<usize>,
    pub failed: usize,
    /// Model structure checks that passed (`--check-model`).
    pub model: ModelChecks,
    pub secs: f64,
}

/// Model structure checks that passed in a run (see [`crate::model`]).
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub(super) struct ModelChecks {
    /// `*.safetensors` headers checked against their files' lengths.
    pub headers: usize,
    /// Weight indexes whose every shard is present and holds its tensors.
    pub indexes: usize,
}

impl ModelChecks {
    /// ", model checks passed: 2 safetensors headers, 1 weight index", or
    /// nothing when none ran.
    fn text(&self) -> String {
        let plural = |n: usize, one: &str, many: &str| format!("{n} {}", if n == 1 { one } else { many });
        let parts: Vec<String> = [
            (self.headers > 0).then(|| plural(self.headers, "safetensors header", "safetensors headers")),
            (self.indexes > 0).then(|| plural(self.indexes, "weight index", "weight indexes")),
        ]
        .into_iter()
        .flatten()
        .collect();
        if parts.is_empty() { String::new() } else { format!(", model checks passed: {}", parts.join(", ")) }
    }
}

impl Summary {
    fn rate(&self) -> u64 {
        if self.secs > 0.0 { (self.bytes as f64 / self.secs) as u64 } else { 0 }
    }

    /// The line on stderr: what happened, in the words of the case. A run
    /// that copied nothing says so instead of a rate of 0 B/s.
    pub fn text(&self) -> String {
        let took = seconds(self.secs);
        let up_to_date = |lead: &str| match self.skipped {
            0 => String::new(),
            n => format!("{lead}{n} up to date"),
        };
        let deleted = match self.deleted {
            Some(d) if d > 0 => format!(", {d} deleted"),
            _ => String::new(),
        };
        let copied = || {
            let unverified = match (self.verify_off, self.unverified) {
                (true, _) => ", not verified (--verify off)".to_string(),
                (false, 0) => String::new(),
                (false, n) => format!(", {n} of them unverified (see above)"),
            };
            let rate = if self.secs >= 0.01 { format!(", {}/s", human_bytes(self.rate())) } else { String::new() };
            let pieces = match self.pieces {
                0 => String::new(),
                n => format!(", {n} split across shards (the shard that finishes last moves it into place)"),
            };
            format!("{} copied ({}{rate}){unverified}{pieces}", self.copied, human_bytes(self.bytes))
        };
        let model = self.model.text();
        match (self.copied + self.pieces, self.failed) {
            (0, 0) if self.skipped == 0 && deleted.is_empty() && model.is_empty() => {
                format!("nothing to copy, in {took}")
            }
            (0, 0) => {
                let what = format!("{}{deleted}{model}", up_to_date(""));
                format!("nothing to copy: {}, in {took}", what.trim_start_matches(", "))
            }
            (_, 0) => format!("done: {}{}{deleted}{model}, in {took}", copied(), up_to_date(", ")),
            (0, f) => {
                format!("failed: {f} failed (named above), nothing copied{}{model}, in {took}", up_to_date(", "))
            }
            (_, f) => format!(
                "finished with errors: {f} failed (named above), {}{}{deleted}{model}, in {took}",
                copied(),
                up_to_date(", ")
            ),
        }
    }

    pub fn print(&self) {
        let mut fields = self.to_json(0);
        if let Some(o) = fields.as_object_mut() {
            o.remove("result");
            o.remove("exit_code");
        }
        crate::logging::stderr_line("INFO", &self.text(), serde_json::json!({ "summary": fields }));
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
                "pieces": self.pieces,
                "up_to_date": self.skipped,
                "deleted": self.deleted.unwrap_or(0),
                "failed": self.failed,
                "unverified": if self.verify_off { self.copied } else { self.unverified },
            },
            "model_checks": {
                "safetensors_headers": self.model.headers,
                "weight_indexes": self.model.indexes,
            },
            "bytes": self.bytes,
            "seconds": (self.secs * 1000.0).round() / 1000.0,
            "bytes_per_second": self.rate(),
        })
    }

    /// Writes the `--summary-file`, naming the run's shard when it has one
    /// (an Indexed Job's pods each write theirs).
    pub fn write(&self, cfg: &Config, code: u8) {
        let mut json = self.to_json(code);
        if let (Some(shard), Some(o)) = (cfg.shard, json.as_object_mut()) {
            o.insert("shard".into(), serde_json::json!({ "index": shard.index, "count": shard.count }));
        }
        write_summary(cfg, &json, code);
    }
}

/// The line a dry run ends with on stderr (what it printed on stdout, counted).
pub(super) fn dry_run_text(copies: usize, bytes: u64, up_to_date: usize, deletes: Option<usize>) -> String {
    let copy = match copies {
        0 => "nothing to copy".to_string(),
        n => format!("{n} to copy ({})", human_bytes(bytes)),
    };
    let up_to_date = if up_to_date > 0 { format!(", {up_to_date} up to date") } else { String::new() };
    let delete = match deletes {
        Some(d) if d > 0 => format!(", {d} to delete"),
        _ => String::new(),
    };
    format!("dry run: {copy}{up_to_date}{delete}; nothing was changed")
}

/// A duration for people: `0.02 s`, `4.1 s`, `2 min 05 s`.
fn seconds(secs: f64) -> String {
    match secs {
        s if s < 10.0 => format!("{s:.2} s"),
        s if s < 60.0 => format!("{s:.1} s"),
        s => format!("{} min {:02} s", (s / 60.0) as u64, (s % 60.0) as u64),
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

/// Who writes `--summary-file`, once per command: 0 while nobody has, else
/// `CLAIMED | code` of the writer. The run's own summary and a second
/// signal's (written from the handler, `session::exit_on_second`) would
/// otherwise both truncate and write the file, and could leave one's JSON
/// followed by the tail of the other's.
pub(super) static SUMMARY_WRITER: std::sync::atomic::AtomicU16 = std::sync::atomic::AtomicU16::new(0);
pub(super) const CLAIMED: u16 = 0x100;

/// Writes `--summary-file` (one JSON object and a newline), if asked for,
/// for a run that exits with `code`; not when a second signal's handler is
/// writing it.
pub(super) fn write_summary(cfg: &Config, value: &serde_json::Value, code: u8) {
    use std::sync::atomic::Ordering;
    let Some(path) = &cfg.summary_file else { return };
    if SUMMARY_WRITER.compare_exchange(0, CLAIMED | u16::from(code), Ordering::SeqCst, Ordering::SeqCst).is_err() {
        return;
    }
    if let Err(e) = std::fs::write(path, format!("{value}\n")) {
        crate::logging::error_line(&format!("ERROR writing the summary to {}: {e}", path.display()));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_summary_is_written_by_whoever_claims_it_first() {
        use std::sync::atomic::Ordering;
        let d = tempfile::tempdir().unwrap();
        let path = d.path().join("summary.json");
        let cfg = Config { summary_file: Some(path.clone()), ..Config::default() };
        // A second signal's handler has claimed it: the run's own is not written.
        SUMMARY_WRITER.store(CLAIMED | 143, Ordering::SeqCst);
        write_summary(&cfg, &serde_json::json!({"result": "interrupted"}), 130);
        assert!(!path.exists());
        // Unclaimed: written, and claimed with its code for the handler to exit with.
        SUMMARY_WRITER.store(0, Ordering::SeqCst);
        write_summary(&cfg, &serde_json::json!({"result": "interrupted"}), 130);
        assert_eq!(std::fs::read_to_string(&path).unwrap(), "{\"result\":\"interrupted\"}\n");
        assert_eq!(SUMMARY_WRITER.load(Ordering::SeqCst), CLAIMED | 130);
        SUMMARY_WRITER.store(0, Ordering::SeqCst);
    }

    fn run(copied: usize, skipped: usize, deleted: Option<usize>, failed: usize) -> Summary {
        Summary {
            operation: "sync",
            source: "s3://b/p/*".into(),
            destination: "/d".into(),
            copied,
            pieces: 0,
            bytes: copied as u64 * (64 << 10),
            unverified: 0,
            verify_off: false,
            skipped,
            deleted,
            failed,
            model: ModelChecks::default(),
            secs: 0.0213,
        }
    }

    #[test]
    fn each_end_of_a_run_says_what_happened_and_never_a_rate_of_nothing() {
        assert_eq!(run(0, 14, None, 0).text(), "nothing to copy: 14 up to date, in 0.02 s");
        assert_eq!(run(0, 14, Some(0), 0).text(), "nothing to copy: 14 up to date, in 0.02 s");
        assert_eq!(run(0, 14, Some(3), 0).text(), "nothing to copy: 14 up to date, 3 deleted, in 0.02 s");
        assert_eq!(run(0, 0, Some(0), 0).text(), "nothing to copy, in 0.02 s");
        assert_eq!(run(0, 0, Some(2), 0).text(), "nothing to copy: 2 deleted, in 0.02 s");
        assert_eq!(run(14, 0, None, 0).text(), "done: 14 copied (896.0 KiB, 41.1 MiB/s), in 0.02 s");
        assert_eq!(run(2, 12, None, 0).text(), "done: 2 copied (128.0 KiB, 5.9 MiB/s), 12 up to date, in 0.02 s");
        assert_eq!(run(0, 0, None, 14).text(), "failed: 14 failed (named above), nothing copied, in 0.02 s");
        assert_eq!(
            run(13, 0, Some(0), 1).text(),
            "finished with errors: 1 failed (named above), 13 copied (832.0 KiB, 38.1 MiB/s), in 0.02 s"
        );
        let mut unchecked = run(4, 0, None, 0);
        unchecked.unverified = 4;
        assert!(unchecked.text().contains("4 copied (256.0 KiB, 11.7 MiB/s), 4 of them unverified (see above)"));
        unchecked.unverified = 1;
        assert!(unchecked.text().contains(", 1 of them unverified"));
        unchecked.verify_off = true;
        assert!(unchecked.text().contains("not verified (--verify off)"));
        let mut shard = run(1, 0, None, 0);
        shard.pieces = 1;
        assert_eq!(
            shard.text(),
            "done: 1 copied (64.0 KiB, 2.9 MiB/s), 1 split across shards (the shard that finishes last moves it \
             into place), in 0.02 s"
        );
        shard.copied = 0;
        assert!(shard.text().starts_with("done: 0 copied"), "{}", shard.text());
        let mut model = run(9, 0, None, 0);
        model.model = ModelChecks { headers: 2, indexes: 1 };
        assert_eq!(
            model.text(),
            "done: 9 copied (576.0 KiB, 26.4 MiB/s), model checks passed: 2 safetensors headers, 1 weight index, \
             in 0.02 s"
        );
        let mut noop = run(0, 9, None, 0);
        noop.model = ModelChecks { headers: 0, indexes: 1 };
        assert_eq!(noop.text(), "nothing to copy: 9 up to date, model checks passed: 1 weight index, in 0.02 s");
        noop.skipped = 0;
        noop.model = ModelChecks { headers: 1, indexes: 2 };
        assert_eq!(
            noop.text(),
            "nothing to copy: model checks passed: 1 safetensors header, 2 weight indexes, in 0.02 s"
        );
        let mut instant = run(1, 0, None, 0);
        instant.secs = 0.004;
        assert_eq!(instant.text(), "done: 1 copied (64.0 KiB), in 0.00 s", "no rate from a clock this short");
    }

    #[test]
    fn a_dry_run_counts_what_it_listed_and_says_nothing_changed() {
        assert_eq!(dry_run_text(0, 0, 14, None), "dry run: nothing to copy, 14 up to date; nothing was changed");
        assert_eq!(dry_run_text(2, 2048, 0, Some(3)), "dry run: 2 to copy (2.0 KiB), 3 to delete; nothing was changed");
    }

    #[test]
    fn durations_read_as_people_write_them() {
        assert_eq!(seconds(0.0213), "0.02 s");
        assert_eq!(seconds(9.994), "9.99 s");
        assert_eq!(seconds(41.26), "41.3 s");
        assert_eq!(seconds(125.4), "2 min 05 s");
    }
}
