//! `oomwatch completions SHELL`: the shell's completion script, generated
//! from the same clap definitions as `--help` and the man pages.

use std::io::Write as _;

/// Writes the completion script for `shell` to standard output.
pub fn completions(shell: clap_complete::Shell) -> anyhow::Result<()> {
    let mut out = Vec::new();
    clap_complete::generate(shell, &mut visible(), "oomwatch", &mut out);
    let mut stdout = std::io::stdout().lock();
    stdout.write_all(&out)?;
    stdout.flush()?;
    Ok(())
}

/// The command line without its hidden subcommands (the selftest's
/// workload, the man-page writer), which some shells' generators would
/// otherwise offer.
fn visible() -> clap::Command {
    let top = super::command();
    let subs: Vec<clap::Command> = top
        .get_subcommands()
        .filter(|s| !s.is_hide_set())
        .cloned()
        .collect();
    let mut cmd = clap::Command::new("oomwatch")
        .version(env!("OOMWATCH_VERSION"))
        .subcommands(subs);
    if let Some(a) = top.get_about() {
        cmd = cmd.about(a.clone());
    }
    cmd
}

#[cfg(test)]
mod tests {
    use clap_complete::Shell;

    fn script(shell: Shell) -> String {
        let mut out = Vec::new();
        clap_complete::generate(shell, &mut super::visible(), "oomwatch", &mut out);
        String::from_utf8(out).unwrap()
    }

    #[test]
    fn every_shell_completes_every_subcommand_and_their_flags() {
        for shell in [Shell::Bash, Shell::Zsh, Shell::Fish] {
            let s = script(shell);
            for sub in ["run", "predict", "top", "explain", "replay", "completions"] {
                assert!(s.contains(sub), "{shell}: no {sub}");
            }
            for flag in [
                "--events-max-bytes",
                "--proc-root",
                "--forecast",
                "--totalpages",
            ] {
                assert!(
                    s.contains(flag.trim_start_matches('-')),
                    "{shell}: no {flag}"
                );
            }
            // The workload the selftest starts as itself is not for users.
            for hidden in ["selftest-hog", "manpages"] {
                assert!(!s.contains(hidden), "{shell}: offers the hidden {hidden}");
            }
        }
    }
}
