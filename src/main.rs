//! The binary: parse the command line, run it, exit with its code (see `lib.rs`).

use std::process::ExitCode;

use s3load::cli::Args;
use s3load::error::exit_code;

fn main() -> ExitCode {
    let args = Args::from_env();
    if let Some(text) = s3load::cli::generated(&args.command) {
        use std::io::Write;
        return match std::io::stdout().write_all(&text) {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => ExitCode::SUCCESS,
            Err(e) => {
                s3load::logging::error_line(&format!("ERROR writing to stdout: {e}"));
                ExitCode::from(exit_code::SETUP)
            }
        };
    }
    s3load::logging::set_json_logs(args.log_format == s3load::LogFormat::Json);
    if let Err(e) = s3load::init_logging(args.log, args.log_format) {
        s3load::logging::error_line(&format!("ERROR {e}"));
        return ExitCode::from(exit_code::USAGE);
    }
    let (command, config) = match args.into_config() {
        Ok(v) => v,
        Err(e) => {
            let message = format!("ERROR {e}");
            s3load::logging::error_line(&message);
            if let Some(note) = s3load::cli::variables_behind(&message) {
                s3load::logging::error_line(&note);
            }
            return ExitCode::from(exit_code::USAGE);
        }
    };
    let open_files = s3load::localfs::raise_open_files_limit();
    tracing::debug!(?open_files, "open files allowed");
    let runtime = match tokio::runtime::Builder::new_multi_thread().enable_all().build() {
        Ok(rt) => rt,
        Err(e) => {
            s3load::logging::error_line(&format!("ERROR starting the async runtime: {e}"));
            return ExitCode::from(exit_code::SETUP);
        }
    };
    let code = runtime.block_on(s3load::run(command, config));
    // What the run awaited is done. A call still on the blocking pool was
    // abandoned by a stopped run (a read hung on a network filesystem):
    // dropping the runtime would wait for it without end.
    runtime.shutdown_timeout(std::time::Duration::from_secs(1));
    // For sizing a pod's memory limit: the kernel's high-water mark of this
    // process's resident memory, at the very end.
    if let Some(kib) = s3load::progress::peak_rss_kib() {
        tracing::debug!(peak_rss_kib = kib, "peak memory: {} MiB resident", kib / 1024);
    }
    ExitCode::from(code)
}
