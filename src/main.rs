use std::process::ExitCode;

use clap::Parser;
use s3load::cli::Args;
use s3load::error::exit_code;

fn main() -> ExitCode {
    let args = Args::parse();
    if let Err(e) = s3load::init_logging(&args.log) {
        eprintln!("ERROR {e}");
        return ExitCode::from(exit_code::USAGE);
    }
    let (command, config) = match args.into_config() {
        Ok(v) => v,
        Err(e) => {
            eprintln!("ERROR {e}");
            return ExitCode::from(exit_code::USAGE);
        }
    };
    let runtime = match tokio::runtime::Builder::new_multi_thread().enable_all().build() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("ERROR starting the async runtime: {e}");
            return ExitCode::from(exit_code::SETUP);
        }
    };
    ExitCode::from(runtime.block_on(s3load::run(command, config)))
}
