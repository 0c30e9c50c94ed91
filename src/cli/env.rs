//! Every flag from the environment: `S3LOAD_<FLAG>` for each visible flag
//! of every subcommand, read where the flag is not given.

use clap::{CommandFactory, FromArgMatches};

use super::args::Args;

/// The prefix of every flag's environment variable.
pub const ENV_PREFIX: &str = "S3LOAD_";

/// The environment variable that sets `--long-name`: `S3LOAD_LONG_NAME`.
pub fn env_name(long: &str) -> String {
    format!("{ENV_PREFIX}{}", long.to_ascii_uppercase().replace('-', "_"))
}

/// The command line as clap sees it: the derived definitions, with every
/// visible flag of every subcommand also read from `S3LOAD_<FLAG>`, so that no
/// flag can be added without its variable. On/off flags take `true`/`false`
/// (also `yes`/`no`, `on`/`off`, `1`/`0`) from the environment; a repeatable
/// flag (`--include`, `--exclude`) takes one value from it; an empty variable
/// counts as unset.
pub fn command() -> clap::Command {
    command_for(&[])
}

/// [`command`] for these arguments: a flag given in `argv` does not read its
/// variable at all, so a bad value in the environment cannot fail a command
/// line that overrides it (clap would still parse the variable where a global
/// flag is propagated to the subcommand).
fn command_for(argv: &[String]) -> clap::Command {
    fn with_env(cmd: clap::Command, argv: &[String]) -> clap::Command {
        cmd.mut_args(|arg| {
            let Some(long) = arg.get_long().filter(|_| !arg.is_hide_set()).map(str::to_string) else { return arg };
            let name = env_name(&long);
            let on_off = matches!(arg.get_action(), clap::ArgAction::SetTrue);
            let value = std::env::var_os(&name);
            let empty = value.as_ref().is_some_and(|v| v.is_empty());
            let off = on_off && value.as_ref().and_then(|v| v.to_str()).is_some_and(is_off);
            // Given on the command line, set empty (a ConfigMap key left
            // blank), or an on/off flag set off: as if the variable were not
            // there (clap would count an off value as the flag given, and let
            // `S3LOAD_ATOMIC=no` satisfy what --keep requires).
            if given(argv, &long, arg.get_short()) || empty || off {
                return arg;
            }
            let arg = arg.env(name);
            if on_off { arg.value_parser(clap::builder::BoolishValueParser::new()) } else { arg }
        })
        .mut_subcommands(|sub| with_env(sub, argv))
    }
    with_env(Args::command(), argv)
}

/// An on/off variable's "off" (as clap's boolish parser reads it).
fn is_off(value: &str) -> bool {
    matches!(value.to_ascii_lowercase().as_str(), "n" | "no" | "f" | "false" | "off" | "0")
}

/// Whether `argv` gives the flag `--long` (or `-s`, alone or anywhere in a
/// cluster such as `-c4` or `-rc`). Errs towards yes: a value that merely
/// looks like the flag only means its variable is not read.
fn given(argv: &[String], long: &str, short: Option<char>) -> bool {
    argv.iter().any(|a| {
        a.strip_prefix("--").is_some_and(|rest| rest == long || rest.starts_with(&format!("{long}=")))
            || short.is_some_and(|c| !a.starts_with("--") && a.strip_prefix('-').is_some_and(|r| r.contains(c)))
    })
}

impl Args {
    /// Parses the process's arguments and environment; prints help, the
    /// version or the error and exits where clap says so.
    pub fn from_env() -> Args {
        Args::try_from_args(std::env::args_os()).unwrap_or_else(|e| {
            if e.use_stderr()
                && let Some(note) = variables_behind(&e.to_string())
            {
                let _ = e.print();
                crate::logging::error_line(&note);
                std::process::exit(e.exit_code());
            }
            e.exit()
        })
    }

    /// Parses `args` (the program's name first) and the process's environment.
    pub fn try_from_args<I, T>(args: I) -> Result<Args, clap::Error>
    where
        I: IntoIterator<Item = T>,
        T: Into<std::ffi::OsString> + Clone,
    {
        let args: Vec<std::ffi::OsString> = args.into_iter().map(Into::into).collect();
        let argv: Vec<String> = args.iter().skip(1).map(|a| a.to_string_lossy().into_owned()).collect();
        let mut cmd = command_for(&argv);
        let matches = cmd.try_get_matches_from_mut(args)?;
        check_values(&cmd, &matches)
            .map_err(|why| clap::Error::raw(clap::error::ErrorKind::ValueValidation, why + "\n"))?;
        Args::from_arg_matches(&matches)
    }
}

/// Refuses variable values that would be read as something else than meant:
/// spaces or a line break at either end (a ConfigMap value ending in a
/// newline) in any, and a comma in a repeatable flag's (a list: the variable
/// holds one pattern, and a pattern that silently matches nothing would let
/// `--delete` remove what `--exclude` was to keep).
fn check_values(cmd: &clap::Command, matches: &clap::ArgMatches) -> Result<(), String> {
    for arg in cmd.get_arguments() {
        if matches.value_source(arg.get_id().as_str()) != Some(clap::parser::ValueSource::EnvVariable) {
            continue;
        }
        let Some(name) = arg.get_env() else { continue };
        let Some(value) = std::env::var_os(name).and_then(|v| v.into_string().ok()) else { continue };
        let var = name.to_string_lossy();
        if value.trim() != value {
            return Err(format!(
                "{var}={value:?}: spaces or a line break at its ends (a ConfigMap value ending in a newline?); \
                 remove them"
            ));
        }
        if matches!(arg.get_action(), clap::ArgAction::Append) && value.contains(',') {
            let long = arg.get_long().unwrap_or_default();
            return Err(format!(
                "{var}={value:?}: the variable holds one pattern, not a list; give several as --{long} on the \
                 command line (where a comma is taken literally)"
            ));
        }
    }
    match matches.subcommand() {
        Some((name, sub)) => cmd.find_subcommand(name).map_or(Ok(()), |c| check_values(c, sub)),
        None => Ok(()),
    }
}

/// For an error about flags (`message` names them as `--flag`): which of
/// those flags came from the environment rather than the command line, said
/// so that a value set in a ConfigMap is found. `None` when none did.
pub fn variables_behind(message: &str) -> Option<String> {
    let argv: Vec<String> = std::env::args_os().skip(1).map(|a| a.to_string_lossy().into_owned()).collect();
    // The variables this command line reads (not those of flags it gives,
    // nor empty ones, nor on/off ones set off), with their flags.
    let mut read = std::collections::BTreeMap::new();
    fn collect(cmd: &clap::Command, out: &mut std::collections::BTreeMap<String, String>) {
        for a in cmd.get_arguments() {
            if let (Some(long), Some(var)) = (a.get_long(), a.get_env()) {
                out.insert(long.to_string(), var.to_string_lossy().into_owned());
            }
        }
        cmd.get_subcommands().for_each(|s| collect(s, out));
    }
    collect(&command_for(&argv), &mut read);
    // The error itself, not the usage clap prints after it.
    let message = message.split("\nUsage:").next().unwrap_or(message);
    let named = |long: &str| {
        let flag = format!("--{long}");
        message
            .match_indices(&flag)
            .any(|(i, _)| !message[i + flag.len()..].starts_with(|c: char| c.is_ascii_alphanumeric() || c == '-'))
    };
    let from_env: Vec<String> = read
        .iter()
        .filter(|(long, var)| named(long) && !message.contains(var.as_str()))
        .filter_map(|(_, var)| {
            let value = std::env::var_os(var)?;
            Some(format!("{var}={:?}", value.to_string_lossy()))
        })
        .collect();
    let (list, verb) = (from_env.join(", "), if from_env.len() == 1 { "is" } else { "are" });
    (!from_env.is_empty())
        .then(|| format!("{list} {verb} set in the environment, for the flag not given; fix or unset it"))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every flag a user can see, of every subcommand, with the variable that
    /// sets it; `--help` and `--version` excepted.
    fn visible_flags(cmd: &clap::Command, path: &str, out: &mut Vec<(String, String, Option<String>)>) {
        for arg in cmd.get_arguments().filter(|a| !a.is_hide_set()) {
            let Some(long) = arg.get_long() else { continue };
            if matches!(arg.get_action(), clap::ArgAction::Help | clap::ArgAction::Version) {
                continue;
            }
            let env = arg.get_env().map(|e| e.to_string_lossy().into_owned());
            out.push((path.to_string(), long.to_string(), env));
        }
        for sub in cmd.get_subcommands() {
            visible_flags(sub, &format!("{path} {}", sub.get_name()), out);
        }
    }

    #[test]
    fn every_visible_flag_of_every_subcommand_has_its_s3load_variable() {
        let mut cmd = command();
        cmd.build();
        let mut flags = Vec::new();
        visible_flags(&cmd, "s3load", &mut flags);
        // Some of each kind: global, per subcommand, on/off, repeatable.
        for (sub, long) in [("s3load", "numworkers"), ("s3load sync", "delete"), ("s3load cp", "exclude")] {
            assert!(flags.iter().any(|(s, l, _)| s == sub && l == long), "{sub} --{long} not found in {flags:?}");
        }
        assert!(flags.len() > 40, "{flags:?}");
        for (sub, long, env) in &flags {
            let want = format!("S3LOAD_{}", long.to_uppercase().replace('-', "_"));
            assert_eq!(env.as_deref(), Some(want.as_str()), "{sub} --{long}");
        }
        // Hidden flags (for tests) are not part of the interface.
        let hold = cmd.get_arguments().find(|a| a.get_long() == Some("journal-hold")).expect("--journal-hold");
        assert!(hold.get_env().is_none());
    }

    #[test]
    fn a_flag_counts_as_given_in_each_of_its_spellings() {
        let argv = |s: &str| s.split(' ').map(str::to_string).collect::<Vec<_>>();
        for line in ["--numworkers 4 sync a b", "sync --numworkers=4 a b"] {
            assert!(given(&argv(line), "numworkers", None), "{line}");
        }
        for line in ["sync -c 4 a b", "sync -c4 a b", "sync -pc 4 a b"] {
            assert!(given(&argv(line), "concurrency", Some('c')), "{line}");
        }
        for line in ["sync a b", "--numworkers-x 1 sync a b", "sync --concurrency-2 a b", "sync --c a b"] {
            assert!(!given(&argv(line), "numworkers", None), "{line}");
            assert!(!given(&argv(line), "concurrency", Some('c')), "{line}");
        }
    }

    #[test]
    fn help_names_each_flags_variable() {
        let mut cmd = command();
        let help = cmd.render_long_help().to_string();
        for var in ["S3LOAD_NUMWORKERS", "S3LOAD_LIMIT_RATE", "S3LOAD_PROGRESS_INTERVAL", "S3LOAD_DRY_RUN"] {
            assert!(help.contains(&format!("[env: {var}")), "{var} missing from:\n{help}");
        }
        let sync = cmd.find_subcommand_mut("sync").expect("sync").render_long_help().to_string();
        for var in ["S3LOAD_DELETE", "S3LOAD_MAX_DELETE", "S3LOAD_PART_SIZE", "S3LOAD_SHARD", "S3LOAD_RUN_ID"] {
            assert!(sync.contains(&format!("[env: {var}")), "{var} missing from:\n{sync}");
        }
    }
}
