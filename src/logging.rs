//! Everything s3load writes on stderr: log messages (its own and the AWS
//! SDK's, through `tracing`) at the `--log` level, and the lines for people
//! (errors, notices, the summary) in the same `--log-format`, text or JSON.

use std::sync::atomic::{AtomicBool, Ordering};

use serde_json::json;

use crate::error::Error;

/// Log line format on stderr (`--log-format`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum LogFormat {
    /// Human-readable lines; colour only on a terminal and without `NO_COLOR`.
    #[default]
    Text,
    /// One JSON object per line (for log collectors in a pod).
    Json,
}

/// How much is logged on stderr (`--log`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum LogLevel {
    Error,
    Warn,
    #[default]
    Info,
    Debug,
    Trace,
}

impl LogLevel {
    pub fn name(self) -> &'static str {
        match self {
            LogLevel::Error => "error",
            LogLevel::Warn => "warn",
            LogLevel::Info => "info",
            LogLevel::Debug => "debug",
            LogLevel::Trace => "trace",
        }
    }
}

/// Sets up logging on stderr at `level`: s3load's own messages follow the
/// level; the AWS SDK's are shown from debug on.
pub fn init_logging(level: LogLevel, format: LogFormat) -> Result<(), Error> {
    use std::io::IsTerminal;
    let name = level.name();
    let filter = match level {
        LogLevel::Error | LogLevel::Warn | LogLevel::Info => format!("warn,s3load={name}"),
        LogLevel::Debug | LogLevel::Trace => {
            format!("info,s3load={name},aws_smithy_runtime={name},aws_config={name}")
        }
    };
    let builder = tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_env_filter(tracing_subscriber::EnvFilter::new(filter))
        .with_target(false)
        // A stderr nobody reads (`2>&1 | head`) loses the line; reporting
        // that on stderr (`eprintln!`) would panic and end the run with 101.
        .log_internal_errors(false);
    let r = match format {
        LogFormat::Json => builder.json().flatten_event(true).with_current_span(false).with_span_list(false).try_init(),
        LogFormat::Text => {
            let colour = std::io::stderr().is_terminal() && std::env::var_os("NO_COLOR").is_none_or(|v| v.is_empty());
            builder.with_ansi(colour).try_init()
        }
    };
    r.map_err(|e| Error::Usage(format!("logging: {e}")))
}

static JSON_LOGS: AtomicBool = AtomicBool::new(false);

/// `--log-format json`: every line on stderr is a JSON object.
pub fn set_json_logs(on: bool) {
    JSON_LOGS.store(on, Ordering::Relaxed);
}

pub fn json_logs() -> bool {
    JSON_LOGS.load(Ordering::Relaxed)
}

/// A line for people on stderr: `text` as is, or with `--log-format json` a JSON
/// object `{"timestamp", "level", "message", ...fields}` like the log lines.
pub fn stderr_line(level: &str, text: &str, fields: serde_json::Value) {
    if !json_logs() {
        to_stderr(text);
        return;
    }
    let message = text.strip_prefix(level).map_or(text, |t| t.trim_start_matches([' ', ':']));
    let mut v = json!({
        "timestamp": humantime::format_rfc3339_millis(std::time::SystemTime::now()).to_string(),
        "level": level,
        "message": message,
    });
    if let (Some(obj), serde_json::Value::Object(extra)) = (v.as_object_mut(), fields) {
        obj.extend(extra);
    }
    to_stderr(&v.to_string());
}

/// An `ERROR ...` line on stderr.
pub fn error_line(text: &str) {
    let text = if text.starts_with("ERROR") { text.to_string() } else { format!("ERROR {text}") };
    stderr_line("ERROR", &text, serde_json::Value::Null);
}

/// Writes one line on stderr. A stderr that cannot be written (a closed pipe:
/// `2>&1 | head`) loses the line; it never stops the run or changes its exit
/// code (`eprintln!` would panic).
pub fn to_stderr(line: &str) {
    use std::io::Write;
    let _ = writeln!(std::io::stderr().lock(), "{line}");
}
