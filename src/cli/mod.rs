//! Command-line flags (clap) and their translation into [`Config`] and [`Command`].
//!
//! Flags keep s5cmd's spelling and meaning where s5cmd has them. Every flag
//! can also be set from the environment as `S3LOAD_<FLAG>` (`--part-size` is
//! `S3LOAD_PART_SIZE`; see [`command`]), for pod specs that take their
//! settings from ConfigMaps. Precedence for every setting: the flag, then its
//! variable, then the default. The endpoint is read from `--endpoint-url`,
//! then `S3LOAD_ENDPOINT_URL`, then `AWS_ENDPOINT_URL_S3`, then
//! `AWS_ENDPOINT_URL`.

mod args;
mod env;

pub use args::{Args, ChecksumArg, Cmd, TransferArgs};
pub use env::{ENV_PREFIX, command, env_name, variables_behind};

use crate::config::{AtomicOptions, Command, Config, SyncOptions, UploadOptions};
use crate::error::Error;
use crate::integrity::Algorithm;
use crate::plan::diff::Compare;
use crate::plan::filter::Filters;
use crate::store::s3::S3Settings;
use crate::transfer::{DEFAULT_MAX_MEMORY, EngineConfig, TUNED_REQUESTS_CEILING};
use crate::url::Location;

/// `--concurrency` when not given (s5cmd's is 5).
const DEFAULT_PART_CONCURRENCY: usize = 8;

/// `--concurrency` and `--part-size` are at least 1, each named on its own.
fn at_least_one(concurrency: usize, part_size: u64) -> Result<(), Error> {
    match (concurrency, part_size) {
        (0, _) => Err(Error::Usage("--concurrency must be at least 1".into())),
        (_, 0) => Err(Error::Usage("--part-size must be at least 1".into())),
        _ => Ok(()),
    }
}

/// Endpoint precedence: flag, then `AWS_ENDPOINT_URL_S3`, then `AWS_ENDPOINT_URL`.
fn resolve_endpoint(flag: Option<String>, env: impl Fn(&str) -> Option<String>) -> Result<Option<String>, Error> {
    let ep = flag.or_else(|| env("AWS_ENDPOINT_URL_S3")).or_else(|| env("AWS_ENDPOINT_URL")).filter(|s| !s.is_empty());
    if let Some(e) = &ep
        && !(e.starts_with("http://") || e.starts_with("https://"))
    {
        return Err(Error::Usage(format!("endpoint {e:?} must start with http:// or https://")));
    }
    Ok(ep)
}

/// What `completions` and `man` print: text generated from the clap
/// definitions themselves, so it cannot drift from `--help`.
pub fn generated(cmd: &Cmd) -> Option<Vec<u8>> {
    let mut command = command();
    let mut out = Vec::new();
    match cmd {
        Cmd::Completions { shell } => clap_complete::generate(*shell, &mut command, "s3load", &mut out),
        Cmd::Man => man_page(command, &mut out).expect("rendering into memory"),
        _ => return None,
    }
    Some(out)
}

/// One page: the command's own sections, then each visible subcommand's
/// synopsis, description and options under a heading of its own.
fn man_page(mut command: clap::Command, out: &mut Vec<u8>) -> std::io::Result<()> {
    command.build();
    clap_mangen::Man::new(command.clone()).render(out)?;
    for sub in command.get_subcommands().filter(|s| !s.is_hide_set() && s.get_name() != "help") {
        let title = format!("s3load {}", sub.get_name()).to_uppercase();
        out.extend_from_slice(format!(".SH \"{title}\"\n").as_bytes());
        let page = clap_mangen::Man::new(sub.clone());
        page.render_synopsis_section(out)?;
        page.render_description_section(out)?;
        page.render_options_section(out)?;
    }
    Ok(())
}

impl Args {
    /// Validates the flags and builds the engine's view of the run.
    pub fn into_config(self) -> Result<(Command, Config), Error> {
        if self.numworkers == Some(0) {
            return Err(Error::Usage("--numworkers must be at least 1".into()));
        }
        let max_requests = self.numworkers.unwrap_or(TUNED_REQUESTS_CEILING);
        let s3 = S3Settings {
            endpoint_url: resolve_endpoint(self.endpoint_url, |k| std::env::var(k).ok())?,
            region: self.region,
            profile: self.profile,
            no_sign_request: self.no_sign_request,
            static_credentials: None,
            request_timeout: self.request_timeout,
            request_deadline: self.request_deadline,
        };
        // One message a flag, so that the one at fault (or its variable) is named.
        for (flag, d) in [
            ("--stall-timeout", self.stall_timeout),
            ("--request-timeout", self.request_timeout),
            ("--request-deadline", self.request_deadline),
        ] {
            if d.is_zero() {
                return Err(Error::Usage(format!("{flag} must be more than zero")));
            }
        }
        let max_memory = match (&self.max_memory, self.numworkers) {
            (Some(_), Some(_)) => {
                return Err(Error::Usage(
                    "--numworkers pins the requests in flight, --max-memory bounds their sizing: give one of them"
                        .into(),
                ));
            }
            (Some(m), None) => Some(crate::rate::parse_size(m).map_err(|e| Error::Usage(format!("--max-memory {e}")))?),
            (None, None) => Some(DEFAULT_MAX_MEMORY),
            // A pinned count is not sized, so nothing is bounded.
            (None, Some(_)) => None,
        };
        let mut engine = EngineConfig {
            max_requests,
            tune_requests: self.numworkers.is_none(),
            max_memory,
            retry_count: self.retry_count,
            stall_timeout: self.stall_timeout,
            // Read only by the commands that download (below); empty is no limit.
            limit_rate: None,
            verify: self.verify,
            check_model: self.check_model,
            durability: self.durability,
            write_mode: self.write_mode,
            journal_hold: self.journal_hold,
            ..EngineConfig::default()
        };
        engine.max_open_files = engine.max_open_files.max(max_requests.saturating_mul(2));
        let mut upload = UploadOptions::default();
        let mut shard = None;
        let mut run_id = None;
        let mut apply = |t: &TransferArgs| -> Result<(), Error> {
            shard = t.shard.as_deref().map(crate::shard::Shard::parse).transpose()?;
            if let Some(id) = &t.run_id
                && !crate::plan::run_listing::valid_run_id(id)
            {
                return Err(Error::Usage(format!(
                    "--run-id {id:?}: 1 to 128 letters, digits, '.', '_' or '-', not starting with '.' (a Job's uid \
                     fits: it is new for every Job, where a name is used again)"
                )));
            }
            run_id = t.run_id.clone();
            at_least_one(t.concurrency.unwrap_or(1), t.part_size)?;
            upload = UploadOptions {
                storage_class: t.storage_class.clone(),
                content_type: t.content_type.clone(),
                checksum: match t.checksum_algorithm {
                    ChecksumArg::Crc64nvme => Algorithm::Crc64Nvme,
                    ChecksumArg::Crc32c => Algorithm::Crc32c,
                    ChecksumArg::Crc32 => Algorithm::Crc32,
                },
                follow_symlinks: !t.no_follow_symlinks,
            };
            engine.part_concurrency = t.concurrency.unwrap_or(DEFAULT_PART_CONCURRENCY);
            engine.soft_part_cap = engine.tune_requests && t.concurrency.is_none();
            engine.split = !t.no_split;
            engine.part_size =
                t.part_size.checked_mul(1 << 20).ok_or_else(|| Error::Usage("--part-size is too large".into()))?;
            Ok(())
        };
        let command = match self.command {
            Cmd::Cp { transfer, src, dst } => {
                apply(&transfer)?;
                let filters = Filters::new(&transfer.include, &transfer.exclude)?;
                Command::Cp { src: Location::parse(&src)?, dst: Location::parse(&dst)?, filters }
            }
            Cmd::Sync {
                transfer,
                size_only,
                delete,
                max_delete,
                allow_empty_source,
                atomic,
                version_id,
                keep,
                src,
                dst,
            } => {
                apply(&transfer)?;
                let filters = Filters::new(&transfer.include, &transfer.exclude)?;
                let compare = if size_only { Compare::SizeOnly } else { Compare::SizeAndTime };
                if let Some(id) = version_id.as_deref().filter(|id| !crate::commands::valid_version_id(id)) {
                    return Err(Error::Usage(format!(
                        "--version-id {id:?}: use 1 to 64 letters, digits, '.', '_' or '-', not starting with '.'"
                    )));
                }
                let atomic = atomic.then_some(AtomicOptions { version_id, keep });
                let opts = SyncOptions { compare, delete, max_delete, allow_empty_source, atomic };
                Command::Sync { src: Location::parse(&src)?, dst: Location::parse(&dst)?, filters, opts }
            }
            Cmd::Cat { concurrency, part_size, url } => {
                at_least_one(concurrency, part_size)?;
                if self.dry_run {
                    return Err(Error::Usage("cat has no --dry-run: it changes nothing but stdout".into()));
                }
                // Each part is whole in memory: a size beyond what a Vec can
                // hold, or than the machine has, is refused here.
                if part_size > 4096 {
                    return Err(Error::Usage(format!(
                        "cat --part-size {part_size}: at most 4096 MiB (each part is held in memory)"
                    )));
                }
                engine.part_concurrency = concurrency;
                engine.part_size = part_size << 20;
                match Location::parse(&url)? {
                    Location::Remote(u) => Command::Cat { url: u },
                    Location::Local(p) => {
                        return Err(Error::Usage(format!(
                            "cat takes an s3:// URL, not a local path ({})",
                            p.display()
                        )));
                    }
                }
            }
            Cmd::Completions { .. } | Cmd::Man => {
                return Err(Error::Internal("completions and man are printed before the run".into()));
            }
            Cmd::Rollback { dest } => Command::Rollback { dest: dest.into() },
            Cmd::Versions { dest } => Command::Versions { dest: dest.into() },
            Cmd::Ls { url } => match url.as_deref().map(Location::parse).transpose()? {
                None => Command::Ls { url: None },
                Some(Location::Remote(u)) => Command::Ls { url: Some(u) },
                Some(Location::Local(p)) => {
                    return Err(Error::Usage(format!("ls takes an s3:// URL, not a local path ({})", p.display())));
                }
            },
        };
        let moves_bytes = matches!(command, Command::Cp { .. } | Command::Sync { .. } | Command::Cat { .. });
        if let Some(rate) = self.limit_rate.as_deref().map(str::trim).filter(|r| !r.is_empty() && moves_bytes) {
            let rate = crate::rate::parse_rate(rate).map_err(|e| Error::Usage(format!("--limit-rate {e}")))?;
            engine.limit_rate = Some(rate);
        }
        let config = Config {
            s3,
            engine,
            dry_run: self.dry_run,
            json: self.json,
            progress: self.progress,
            upload,
            log_format: self.log_format,
            progress_interval: self.progress_interval.max(std::time::Duration::from_millis(100)),
            summary_file: self.summary_file,
            shard,
            run_id,
        };
        Ok((command, config))
    }
}

#[cfg(test)]
mod tests {
    use clap::CommandFactory;

    use super::*;

    #[test]
    fn endpoint_precedence_is_flag_then_s3_env_then_global_env() {
        let env = |k: &str| match k {
            "AWS_ENDPOINT_URL_S3" => Some("http://s3-env".to_string()),
            "AWS_ENDPOINT_URL" => Some("http://global-env".to_string()),
            _ => None,
        };
        assert_eq!(resolve_endpoint(Some("http://flag".into()), env).unwrap().as_deref(), Some("http://flag"));
        assert_eq!(resolve_endpoint(None, env).unwrap().as_deref(), Some("http://s3-env"));
        let only_global = |k: &str| (k == "AWS_ENDPOINT_URL").then(|| "http://global-env".to_string());
        assert_eq!(resolve_endpoint(None, only_global).unwrap().as_deref(), Some("http://global-env"));
        assert!(resolve_endpoint(Some("localhost:9000".into()), |_| None).is_err());
    }

    #[test]
    fn the_help_states_the_max_memory_default_the_code_uses() {
        let help = Args::command().render_long_help().to_string();
        let default = format!("[default: {}MiB]", DEFAULT_MAX_MEMORY >> 20);
        assert!(help.contains(&default), "--help says {default}:\n{help}");
    }

    #[test]
    fn clap_definition_is_consistent() {
        Args::command().debug_assert();
        command().debug_assert();
    }
}
