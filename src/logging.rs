//! Logging on stderr: the `--log` level and the `--log-format` (text or JSON
//! lines) of every message s3load and the AWS SDK write there.

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

/// Sets up logging on stderr for a `--log` level (error, warn, info, debug, trace).
/// s3load's own messages follow the level; the AWS SDK's are shown from debug on.
pub fn init_logging(level: &str, format: LogFormat) -> Result<(), Error> {
    use std::io::IsTerminal;
    let filter = match level {
        "error" | "warn" | "info" => format!("warn,s3load={level}"),
        "debug" | "trace" => format!("info,s3load={level},aws_smithy_runtime={level},aws_config={level}"),
        other => return Err(Error::Usage(format!("--log {other:?}: use error, warn, info, debug or trace"))),
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
    r.map_err(|e| Error::Usage(format!("logging: {e}")))
}
