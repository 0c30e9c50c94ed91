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
