//! `oomwatch manpages DIR` (hidden; `cargo xtask dist` calls it): one man
//! page per command, `oomwatch(1)` and `oomwatch-SUBCOMMAND(1)`, rendered
//! from the same clap definitions as `--help`, so the two cannot differ.
//! The sections clap has no notion of (environment, files, exit status, see
//! also) are written here.

use std::path::{Path, PathBuf};

use anyhow::Context as _;

/// Sections of `oomwatch(1)` beyond what clap describes, in roff.
const TOP_SECTIONS: &str = r#".SH ENVIRONMENT
.TP
\fBRUST_LOG\fR
What the daemon and the commands log on standard error: \fBinfo\fR by
default; \fBdebug\fR adds the eBPF programs' own lines; per module as
\fBoomwatch::daemon=debug\fR.
.SH FILES
.TP
\fI/etc/oomwatch/config.toml\fR
Settings of \fBoomwatch run\fR when started by the packaged systemd unit
(\fB\-\-config\fR); a flag given on the command line wins over the file.
.TP
\fI/var/log/oomwatch/\fR
The unit's \fBLogsDirectory\fR, where \fB\-\-events\fR may write its
JSON lines (rotated by size).
.TP
\fI/sys/kernel/btf/vmlinux\fR
The running kernel's types, from which the eBPF programs' offsets are
resolved at start.
.TP
\fI/dev/kmsg\fR
The kernel's log, from which the OOM reports are read and replayed.
.SH EXIT STATUS
0 on success, 1 on failure; \fBreplay\fR, \fBcheck\fR and \fBselftest\fR
give their own meaning to 1 and 2 (see their pages).
.SH SEE ALSO
"#;

/// Writes every page into `dir` (created if missing) and returns their paths.
pub fn write_all(dir: &Path) -> anyhow::Result<Vec<PathBuf>> {
    std::fs::create_dir_all(dir).with_context(|| format!("create {}", dir.display()))?;
    let mut top = super::command().disable_help_subcommand(true);
    top.build();
    let subs: Vec<clap::Command> = top
        .get_subcommands()
        .filter(|s| !s.is_hide_set())
        .cloned()
        .collect();
    let mut written = Vec::new();
    let see_also_top = subs
        .iter()
        .map(|s| format!("\\fBoomwatch\\-{}\\fR(1)", s.get_name()))
        .collect::<Vec<_>>()
        .join(",\n");
    written.push(page(
        dir,
        top.clone(),
        &format!("{TOP_SECTIONS}{see_also_top}\n"),
    )?);
    for sub in subs {
        let extra = ".SH SEE ALSO\n\\fBoomwatch\\fR(1)\n";
        written.push(page(dir, sub, extra)?);
    }
    Ok(written)
}

fn page(dir: &Path, cmd: clap::Command, extra: &str) -> anyhow::Result<PathBuf> {
    let man = clap_mangen::Man::new(cmd.clone()).manual("oomwatch manual");
    let path = dir.join(man.get_filename());
    let mut out = Vec::new();
    man.render_title(&mut out)?;
    man.render_name_section(&mut out)?;
    man.render_synopsis_section(&mut out)?;
    man.render_description_section(&mut out)?;
    if cmd.get_arguments().any(|a| !a.is_hide_set()) {
        man.render_options_section(&mut out)?;
    }
    if cmd.get_subcommands().any(|s| !s.is_hide_set()) {
        man.render_subcommands_section(&mut out)?;
    }
    out.extend_from_slice(extra.as_bytes());
    man.render_version_section(&mut out)?;
    std::fs::write(&path, out).with_context(|| format!("write {}", path.display()))?;
    Ok(path)
}

#[cfg(test)]
mod tests {
    #[test]
    fn a_page_per_visible_command_each_with_its_options() {
        let dir = tempfile::tempdir().unwrap();
        let pages = super::write_all(dir.path()).unwrap();
        let names: Vec<String> = pages
            .iter()
            .map(|p| p.file_name().unwrap().to_string_lossy().into_owned())
            .collect();
        for want in [
            "oomwatch.1",
            "oomwatch-run.1",
            "oomwatch-replay.1",
            "oomwatch-completions.1",
        ] {
            assert!(names.iter().any(|n| n == want), "no {want} in {names:?}");
        }
        assert!(
            !names
                .iter()
                .any(|n| n.contains("hog") || n.contains("manpages"))
        );
        let run = std::fs::read_to_string(dir.path().join("oomwatch-run.1")).unwrap();
        assert!(run.contains(".TH oomwatch-run 1"), "{run}");
        assert!(run.contains("events\\-max\\-bytes"), "{run}");
        let top = std::fs::read_to_string(dir.path().join("oomwatch.1")).unwrap();
        assert!(top.contains("/etc/oomwatch/config.toml") && top.contains("oomwatch\\-predict"));
        // Nothing depends on the day: the same commit gives the same bytes.
        let again = tempfile::tempdir().unwrap();
        super::write_all(again.path()).unwrap();
        for n in &names {
            assert_eq!(
                std::fs::read(dir.path().join(n)).unwrap(),
                std::fs::read(again.path().join(n)).unwrap(),
                "{n}"
            );
        }
    }
}
