//! What a shell user installs besides the binary: completion scripts and the
//! man page, both generated from the clap definitions.

use crate::harness::Harness;

const SUBCOMMANDS: [&str; 7] = ["cp", "sync", "ls", "cat", "rollback", "versions", "completions"];

/// Every long flag `--help` of `args` shows.
async fn long_flags(h: &Harness, args: &[&str]) -> Vec<String> {
    let run = h.run_env(args, &[]).await;
    run.assert_ok();
    let mut flags: Vec<String> = run
        .stdout
        .split(|c: char| !(c.is_ascii_alphanumeric() || c == '-'))
        .filter(|w| w.starts_with("--") && w.len() > 2 && !w.ends_with('-'))
        .map(str::to_string)
        .collect();
    flags.sort();
    flags.dedup();
    flags
}

#[tokio::test]
async fn completion_scripts_name_every_subcommand_and_bash_completes_them() {
    let h = Harness::new().await;
    for shell in ["bash", "zsh", "fish", "elvish", "powershell"] {
        let run = h.run_env(&["completions", shell], &[]).await;
        run.assert_ok();
        for sub in SUBCOMMANDS {
            assert!(run.stdout.contains(sub), "{shell}: {sub}");
        }
        for flag in ["--shard", "--check-model", "--atomic", "--delete"] {
            assert!(run.stdout.contains(flag.trim_start_matches('-')), "{shell}: {flag}");
        }
    }
    // The bash script, loaded as bash-completion would, completes a subcommand and a flag.
    let script = format!(
        "source <({bin} completions bash); \
         COMP_WORDS=(s3load ca); COMP_CWORD=1; _s3load s3load ca s3load; echo \"SUB ${{COMPREPLY[*]}}\"; \
         COMP_WORDS=(s3load sync --check-m); COMP_CWORD=2; _s3load s3load --check-m sync; echo \"FLAG ${{COMPREPLY[*]}}\"",
        bin = env!("CARGO_BIN_EXE_s3load")
    );
    let run = h.command("bash", &["-c", &script], &[]).await;
    run.assert_ok();
    assert!(run.stdout.lines().any(|l| l == "SUB cat"), "{}", run.stdout);
    assert!(run.stdout.lines().any(|l| l == "FLAG --check-model"), "{}", run.stdout);

    let bad = h.run_env(&["completions", "tcsh"], &[]).await;
    assert_eq!(bad.code, 2, "{}", bad.stderr);
    assert!(bad.stdout.is_empty());
}

#[tokio::test]
async fn the_man_page_holds_every_subcommand_and_every_flag_help_shows() {
    let h = Harness::new().await;
    let man = h.run_env(&["man"], &[]).await;
    man.assert_ok();
    assert!(man.stdout.starts_with(".ie") || man.stdout.contains(".TH s3load 1"), "roff: {}", &man.stdout[..200]);
    let text = man.stdout.replace("\\-", "-");
    for sub in SUBCOMMANDS {
        assert!(text.contains(&format!(".SH \"S3LOAD {}\"", sub.to_uppercase())), "a section for {sub}");
        for flag in long_flags(&h, &[sub, "--help"]).await {
            assert!(text.contains(&flag), "{sub} {flag} is in the man page");
        }
    }
    for flag in long_flags(&h, &["--help"]).await {
        assert!(text.contains(&flag), "{flag} is in the man page");
    }
    let help = h.run_env(&["--help"], &[]).await;
    assert!(!help.stdout.contains("\n  man "), "man is hidden from --help");
}
