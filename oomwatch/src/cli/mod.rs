//! The `oomwatch` command line: parse arguments, set up logging, dispatch to
//! one file per subcommand (and the config file of `run`). Lives in the
//! library so the privileged tests can build the very same command as their
//! own binary.
//!
//! May use every part. Nothing uses it (the binary calls [`main`]).

use std::{io::IsTerminal as _, net::SocketAddr, process::ExitCode};

use clap::{CommandFactory as _, Parser, Subcommand};

pub mod check;
pub mod completions;
pub mod config;
pub mod explain;
pub mod manpages;
pub mod predict;
pub mod replay;
pub mod run;
pub mod selftest;
pub mod simulate;
pub mod top;
pub mod watch;

use crate::{daemon, snapshot::Source};

/// Live OOM observer for Linux: watches the kernel's OOM killer through eBPF
/// and exports what it sees to Prometheus.
#[derive(Parser)]
#[command(name = "oomwatch", version = env!("OOMWATCH_VERSION"), about, long_about = None, propagate_version = true)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the daemon: attach to the kernel's OOM path, log each OOM kill in
    /// one line and serve Prometheus metrics. Needs root (CAP_BPF and
    /// CAP_PERFMON, or CAP_SYS_ADMIN). Stops cleanly on SIGINT or SIGTERM.
    ///
    /// Logging follows RUST_LOG (default `info`); `RUST_LOG=debug` also shows
    /// the eBPF programs' own log lines.
    Run(run::Flags),
    /// Follow a running daemon's OOM episodes live: each kill with its
    /// trigger and constraint, the prediction made just before it (match,
    /// mismatch or none, and why), the model's replay of the kernel's report
    /// and, where the kernel allows hooks, its own per-task points. Reads the
    /// daemon's /events stream: needs no privilege.
    Watch {
        /// The daemon's --listen address.
        #[arg(long, value_name = "ADDR:PORT", default_value = daemon::DEFAULT_LISTEN)]
        from: SocketAddr,
        /// Print each episode as the daemon's JSON line.
        #[arg(long)]
        json: bool,
    },
    /// Explain why a task would or would not be the OOM killer's victim right
    /// now, in the host (default) or in the memory cgroup PATH, with its
    /// points term by term, its rank, the victim, and what would change the
    /// outcome (pages, or the oom_score_adj that flips it). Reads /proc and
    /// cgroupfs; needs no privilege for your own tasks.
    Explain {
        /// The process (or thread) id.
        pid: i32,
        /// Memory cgroup path inside its hierarchy, e.g. /batch/job1 (v1 and
        /// v2 alike). The domain is PATH or its nearest ancestor with a limit.
        #[arg(long, value_name = "PATH")]
        cgroup: Option<String>,
        /// Print the explanation as JSON.
        #[arg(long)]
        json: bool,
        /// Where to read the processes: `bpf`, the kernel's own counters in
        /// one read through a BPF task iterator (root; Linux 5.8+ with BTF);
        /// `proc`, /proc files; `auto`, bpf where it loads, else proc.
        #[arg(long, value_enum, value_name = "SOURCE", default_value_t = Source::Auto)]
        source: Source,
        /// Read /proc from this directory instead (a captured tree: its
        /// processes, meminfo, sys/vm sysctls and zoneinfo); implies
        /// `--source proc`.
        #[arg(long, value_name = "DIR", default_value = "/proc")]
        proc_root: std::path::PathBuf,
    },
    /// Predict the victim of an OOM now: the ranked candidates of the host
    /// (default) or of the memory cgroup PATH, each with its points term by
    /// term, and the task the kernel would kill.
    Predict {
        /// Memory cgroup path inside its hierarchy, e.g. /batch/job1. The
        /// domain is PATH or its nearest ancestor with a limit.
        #[arg(long, value_name = "PATH")]
        cgroup: Option<String>,
        /// Show the first N candidates only.
        #[arg(long, value_name = "N")]
        top: Option<usize>,
        /// Print the prediction as JSON (a stable contract: see the README).
        #[arg(long)]
        json: bool,
        /// Also forecast the OOM: take a pass once a second for --over
        /// seconds (progress on stderr), then say when, on the trend of
        /// those passes, the domain runs out of the memory reclaim cannot
        /// free, and whom the kernel would kill then, each task's points
        /// carried forward on its own trend. Use it on a domain that is
        /// filling up: a task growing faster than today's victim may be
        /// the one that dies.
        #[arg(long)]
        forecast: bool,
        /// Seconds of passes --forecast draws its trend through, 4 to 3600
        /// (a fall needs five passes in order to count; the trend looks
        /// back one minute at most). Longer sees a slow leak through noise; shorter
        /// answers sooner.
        #[arg(long, value_name = "SECONDS", default_value_t = 10.0,
              value_parser = predict::parse_over, requires = "forecast")]
        over: f64,
        /// Where to read the processes: `bpf`, the kernel's own counters in
        /// one read through a BPF task iterator (root; Linux 5.8+ with BTF);
        /// `proc`, /proc files; `auto`, bpf where it loads, else proc.
        #[arg(long, value_enum, value_name = "SOURCE", default_value_t = Source::Auto)]
        source: Source,
        /// Read /proc from this directory instead (a captured tree: its
        /// processes, meminfo, sys/vm sysctls and zoneinfo); implies
        /// `--source proc`.
        #[arg(long, value_name = "DIR", default_value = "/proc")]
        proc_root: std::path::PathBuf,
    },
    /// A live view of every OOM domain (the host and each memory cgroup with
    /// a limit): headroom to the limit, the time to its OOM on the trend of
    /// the refreshes (OOM IN), the next victims, the margin between the
    /// first and the second, and a line naming a faster grower that will
    /// overtake the first before the OOM. Refreshes until Ctrl-C.
    Top {
        /// Seconds between refreshes.
        #[arg(long, value_name = "SECS", default_value_t = 2.0, value_parser = parse_interval)]
        interval: f64,
        /// Candidates shown per domain.
        #[arg(long, value_name = "N", default_value_t = 3)]
        top: usize,
        /// Print one refresh and exit (for scripts and logs). One refresh
        /// has no trend: OOM IN shows `…`.
        #[arg(long)]
        once: bool,
        /// Where to read the processes: `bpf`, the kernel's own counters in
        /// one read through a BPF task iterator (root; Linux 5.8+ with BTF);
        /// `proc`, /proc files; `auto`, bpf where it loads, else proc.
        #[arg(long, value_enum, value_name = "SOURCE", default_value_t = Source::Auto)]
        source: Source,
        /// Read /proc from this directory instead (a captured tree: its
        /// processes, meminfo, sys/vm sysctls and zoneinfo); implies
        /// `--source proc`.
        #[arg(long, value_name = "DIR", default_value = "/proc")]
        proc_root: std::path::PathBuf,
    },
    /// Simulate one allocation now: would it end in an OOM kill, through
    /// which branch of the allocator (or memcg charge) path, and who would
    /// die. Reads /proc/zoneinfo, /proc/buddyinfo, cgroupfs and /proc.
    Simulate {
        /// GFP mask: names as the kernel prints them (GFP_KERNEL|__GFP_NOWARN)
        /// or a number (0xcc0).
        #[arg(long, default_value = "GFP_KERNEL")]
        gfp: String,
        /// Allocation order (2^order pages), 0 – 10.
        #[arg(long, default_value_t = 0)]
        order: u32,
        /// Charge it to this memory cgroup (path inside its hierarchy)
        /// instead of allocating from the host's zones.
        #[arg(long, value_name = "PATH")]
        cgroup: Option<String>,
        /// Print the result as JSON.
        #[arg(long)]
        json: bool,
    },
    /// Replay kernel OOM reports from a log: find every report (dmesg,
    /// dmesg -T, journalctl, syslog/kern.log, /dev/kmsg records, mail
    /// pastes; Linux 2.6.32 to 6.18), re-run the victim selection under the
    /// rules of the kernel that printed it, and say whether the kernel chose
    /// as its own rules say, and why.
    ///
    /// Without FILE it reads standard input, or, when that is a terminal,
    /// the running kernel's log (/dev/kmsg; needs CAP_SYSLOG or
    /// kernel.dmesg_restrict=0).
    ///
    /// Exit status: 0 when every report that could be judged agrees with the
    /// model (also when none could be judged), 1 when at least one disagrees,
    /// 2 when the input holds no OOM report or cannot be read.
    Replay {
        /// The log to read; `-` for standard input.
        #[arg(value_name = "FILE|-")]
        file: Option<std::path::PathBuf>,
        /// Print an array with one object per report (a stable contract: see
        /// docs/replay.md).
        #[arg(long)]
        json: bool,
        /// Candidates shown per report (the JSON always has all of them).
        #[arg(long, value_name = "N", default_value_t = 10)]
        top: usize,
        /// The kernel release, for reports that do not state theirs (e.g. a
        /// paste without its `CPU: … Comm: …` line): 3.10.0-1160.el7.
        /// A release the report states wins.
        #[arg(long, value_name = "RELEASE")]
        kernel: Option<crate::model::KernelVersion>,
        /// totalpages, when you know it (RAM + swap in pages for a global
        /// OOM, the memcg limit plus its swap for a memcg OOM): replaces the
        /// rebuilt value for every report of the input.
        #[arg(long, value_name = "PAGES", value_parser = clap::value_parser!(u64).range(1..))]
        totalpages: Option<u64>,
    },
    /// Report what this kernel offers oomwatch: BTF, tracefs, the tracepoints
    /// it uses, fentry/fexit, kprobes, the memory cgroup controllers and this
    /// process's privileges. Exits 0 when `oomwatch run` can start, 1 when not.
    Check {
        /// Print the report as JSON.
        #[arg(long)]
        json: bool,
        /// Read the OOM sysctls, meminfo and zoneinfo from this directory
        /// instead of /proc (a captured tree); the rest is the running
        /// kernel's.
        #[arg(long, value_name = "DIR", default_value = "/proc")]
        proc_root: std::path::PathBuf,
    },
    /// Check the model against this kernel: each scenario (the largest
    /// task, oom_score_adj +500/+1000/-1000/-999, threads, shared memory,
    /// page tables, nested limits, memory.oom.group, ties) fills a memory
    /// cgroup it creates (oomwatch-selftest-*, with a limit, removed
    /// afterwards), predicts the victim just before it triggers the OOM, and
    /// compares it with the kernel's own victim, eBPF's, the replay of the
    /// kernel's report and, where hooks attach, the kernel's own scan.
    /// Needs root.
    ///
    /// Exit status: 0 when every scenario that ran passed (skipped ones are
    /// listed with their reason), 1 when one failed, 2 when the selftest
    /// could not run.
    Selftest(selftest::Flags),
    /// The selftest's workload (started by `oomwatch selftest` as itself).
    #[command(hide = true)]
    SelftestHog(selftest::hog::Flags),
    /// Print the completion script for SHELL on standard output, e.g.
    /// `oomwatch completions bash > /etc/bash_completion.d/oomwatch`; the
    /// packages install them where each shell looks.
    Completions {
        /// The shell: bash, zsh, fish, elvish or powershell.
        #[arg(value_enum)]
        shell: clap_complete::Shell,
    },
    /// Write the man pages, oomwatch(1) and one per subcommand, into DIR
    /// (for packaging; `cargo xtask dist` calls it).
    #[command(hide = true)]
    Manpages {
        /// Where to write them (created if missing).
        dir: std::path::PathBuf,
    },
}

/// The command line as clap sees it: for completions and man pages.
pub(crate) fn command() -> clap::Command {
    Cli::command()
}

/// `--interval`: a number of seconds between 0.1 and 3600.
pub(crate) fn parse_interval(s: &str) -> Result<f64, String> {
    let v: f64 = s
        .parse()
        .map_err(|_| format!("{s:?} is not a number of seconds, e.g. 1 or 0.5"))?;
    config::check_interval(v)
}

fn init_logging() {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    // `init` also routes the `log` crate (aya, aya-log) into tracing.
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal())
        .init();
}

/// Runs the `oomwatch` command with the process's arguments.
pub fn main() -> ExitCode {
    let cli = Cli::parse();
    if !matches!(cli.command, Command::Run(_)) {
        // A report piped into `head` ends quietly, as other Unix tools do,
        // instead of failing on EPIPE. (The daemon keeps Rust's default.)
        // SAFETY: setting a signal disposition before any thread starts.
        unsafe {
            libc::signal(libc::SIGPIPE, libc::SIG_DFL);
        }
    }
    init_logging();
    match cli.command {
        Command::Watch { from, json } => match watch::watch(from, json) {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => {
                eprintln!("error: {e:#}");
                ExitCode::FAILURE
            }
        },
        Command::Run(flags) => run::run(flags),
        Command::Explain {
            pid,
            cgroup,
            json,
            source,
            proc_root,
        } => match explain::explain(pid, cgroup.as_deref(), json, source, &proc_root) {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => {
                eprintln!("error: {e:#}");
                ExitCode::FAILURE
            }
        },
        Command::Predict {
            cgroup,
            top,
            json,
            forecast,
            over,
            source,
            proc_root,
        } => match predict::predict(
            cgroup.as_deref(),
            top,
            json,
            source,
            &proc_root,
            forecast.then_some(over),
        ) {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => {
                eprintln!("error: {e:#}");
                ExitCode::FAILURE
            }
        },
        Command::Top {
            interval,
            top,
            once,
            source,
            proc_root,
        } => match top::top_view(interval, top, once, source, &proc_root) {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => {
                eprintln!("error: {e:#}");
                ExitCode::FAILURE
            }
        },
        Command::Simulate {
            gfp,
            order,
            cgroup,
            json,
        } => match simulate::simulate(&gfp, order, cgroup.as_deref(), json) {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => {
                eprintln!("error: {e:#}");
                ExitCode::FAILURE
            }
        },
        Command::Replay {
            file,
            json,
            top,
            kernel,
            totalpages,
        } => match replay::replay(
            file.as_deref(),
            json,
            top,
            crate::replay::Given { totalpages, kernel },
        ) {
            Ok(code) => code,
            Err(e) => {
                eprintln!("error: {e:#}");
                ExitCode::from(2)
            }
        },
        Command::Check { json, proc_root } => check::command(json, &proc_root),
        Command::Selftest(flags) => selftest::command(flags),
        Command::SelftestHog(flags) => selftest::hog::main(&flags),
        Command::Completions { shell } => match completions::completions(shell) {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => {
                eprintln!("error: {e:#}");
                ExitCode::FAILURE
            }
        },
        Command::Manpages { dir } => match manpages::write_all(&dir) {
            Ok(pages) => {
                for p in pages {
                    println!("{}", p.display());
                }
                ExitCode::SUCCESS
            }
            Err(e) => {
                eprintln!("error: {e:#}");
                ExitCode::FAILURE
            }
        },
    }
}

#[cfg(test)]
mod readme {
    use std::collections::BTreeSet;

    /// The README's synopsis of each subcommand (its `### \`oomwatch NAME …\``
    /// heading) names exactly the long flags clap knows: the README, `--help`
    /// and the man pages (both from clap) cannot drift apart.
    #[test]
    fn every_subcommand_heading_names_exactly_its_flags() {
        let readme = include_str!("../../../README.md");
        let mut top = super::command();
        top.build();
        for sub in top.get_subcommands().filter(|s| !s.is_hide_set()) {
            let name = sub.get_name();
            if name == "help" {
                continue;
            }
            let prefix = format!("### `oomwatch {name}");
            let heading = readme
                .lines()
                .find(|l| l.starts_with(&prefix) && l[prefix.len()..].starts_with([' ', '`']))
                .unwrap_or_else(|| panic!("README has no `{prefix} …` heading"));
            let in_readme: BTreeSet<&str> = heading
                .split(|c: char| !(c.is_ascii_alphanumeric() || c == '-'))
                .filter(|w| w.starts_with("--"))
                .collect();
            let in_clap: BTreeSet<String> = sub
                .get_arguments()
                .filter(|a| !a.is_hide_set())
                .filter_map(|a| a.get_long().map(|l| format!("--{l}")))
                .filter(|l| l != "--help" && l != "--version")
                .collect();
            let in_clap: BTreeSet<&str> = in_clap.iter().map(String::as_str).collect();
            assert_eq!(
                in_readme, in_clap,
                "README's heading for `oomwatch {name}` and its clap flags differ"
            );
        }
    }
}
