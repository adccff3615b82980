//! `oomwatch run`: the daemon, with its settings from the flags, the config
//! file and the defaults.

use std::{net::SocketAddr, path::PathBuf, process::ExitCode};

use crate::{
    daemon::{self, hot::HotProbes},
    snapshot::Source,
};

/// The flags of `oomwatch run`.
#[derive(clap::Args)]
pub struct Flags {
    /// Address for the `/metrics` and `/events` endpoints [default:
    /// 127.0.0.1:7707].
    #[arg(long, value_name = "ADDR:PORT")]
    pub listen: Option<SocketAddr>,
    /// Seconds between prediction passes (every OOM domain's next victim,
    /// headroom and margin, and the model's self-check against
    /// /proc/PID/oom_score). A kill also triggers a pass at once
    /// [default: 1].
    #[arg(long, value_name = "SECS", value_parser = super::parse_interval)]
    pub interval: Option<f64>,
    /// Also append each OOM episode, as one JSON line, to FILE (`-` for
    /// stdout). `oomwatch watch` streams the same lines from the daemon.
    #[arg(long, value_name = "FILE")]
    pub events: Option<PathBuf>,
    /// Read settings from a TOML file with the keys listen, interval and
    /// events; flags given here win over it.
    #[arg(long, value_name = "FILE")]
    pub config: Option<PathBuf>,
    /// Turn on the kernel's run-time statistics for BPF programs
    /// (BPF_ENABLE_STATS) while the daemon runs, for the
    /// oomwatch_program_runs_total and oomwatch_program_run_seconds_total
    /// metrics. Off by default: the kernel then times every run of every
    /// BPF program on the host, not only oomwatch's (measured here, with
    /// the hot programs attached: a page-fault storm about a third
    /// slower; docs/benchmarks.md).
    #[arg(long)]
    pub program_stats: bool,
    /// When the programs on the two hot events run (kmem:mm_page_alloc,
    /// exceptions:page_fault_user: every page allocation and user page
    /// fault, for oomwatch_page_allocs_total,
    /// oomwatch_page_alloc_failures_total and
    /// oomwatch_user_page_faults_total). `pressure`: only while the host
    /// shows memory pressure (PSI's memory stall time grew, or the kernel
    /// reclaimed, compacted or retried an allocation) and for
    /// --hot-probes-hold after; `always`; `off`. The kernel's cost of
    /// calling any program there is 8 – 11 % of a page-fault storm on a
    /// machine with retpolines (docs/benchmarks.md); the OOM, reclaim and
    /// victim probes are always attached and cost nothing outside them.
    #[arg(long, value_enum, value_name = "WHEN", default_value_t = HotProbes::Pressure)]
    pub hot_probes: HotProbes,
    /// Seconds the hot programs stay attached after the last sign of
    /// memory pressure (`--hot-probes pressure`).
    #[arg(long, value_name = "SECS", default_value_t = crate::daemon::hot::DEFAULT_HOLD.as_secs())]
    pub hot_probes_hold: u64,
    /// Where to read the processes: `bpf`, the kernel's own counters in
    /// one read through a BPF task iterator (root; Linux 5.8+ with BTF);
    /// `proc`, /proc files; `auto`, bpf where it loads, else proc.
    #[arg(long, value_enum, value_name = "SOURCE", default_value_t = Source::Auto)]
    pub source: Source,
}

/// Merges the settings, starts the runtime and runs the daemon until
/// SIGINT or SIGTERM.
pub fn run(flags: Flags) -> ExitCode {
    let settings = flags
        .config
        .as_deref()
        .map(super::config::load)
        .transpose()
        .and_then(|file| {
            super::config::merge(
                file.unwrap_or_default(),
                flags.listen,
                flags.interval,
                flags.events,
            )
        });
    let settings = match settings {
        Ok(s) => s,
        Err(e) => {
            eprintln!("error: {e:#}");
            return ExitCode::FAILURE;
        }
    };
    let rt = match tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: start the tokio runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    let opts = daemon::RunOptions {
        listen: settings.listen,
        interval: std::time::Duration::from_secs_f64(settings.interval),
        events: settings.events,
        source: flags.source,
        program_stats: flags.program_stats,
        hot_probes: flags.hot_probes,
        hot_hold: std::time::Duration::from_secs(flags.hot_probes_hold),
    };
    match rt.block_on(daemon::run(opts)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}
