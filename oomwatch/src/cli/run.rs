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
    ///
    /// The file is opened as a root daemon should: never through a
    /// symbolic link, only a regular file, created with mode 0640; it is
    /// written by its own thread, so a stalled disk costs lines (counted in
    /// oomwatch_event_log_lines_lost_total), never the daemon's loop.
    #[arg(long, value_name = "FILE")]
    pub events: Option<PathBuf>,
    /// Rotate the --events file when it would grow past SIZE (bytes, or
    /// with a K, M or G suffix; 0: never) [default: 64M].
    #[arg(long, value_name = "SIZE", value_parser = parse_size)]
    pub events_max_bytes: Option<u64>,
    /// Rotated --events files to keep (FILE.1 the newest … FILE.N)
    /// [default: 4].
    #[arg(long, value_name = "N")]
    pub events_keep: Option<usize>,
    /// Read settings from a TOML file with the keys listen, interval and
    /// events, and an [on_forecast] table (command as an argv array,
    /// within, timeout, cooldown, max_running); flags given here win over
    /// it.
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
    /// Run CMD when an OOM domain is forecast to OOM within
    /// --on-forecast-within seconds (oomwatch_domain_seconds_to_oom), e.g.
    /// to take a heap profile of the task the kernel will kill. CMD is split
    /// at whitespace into the program and its arguments and never given to
    /// a shell. Its environment adds OOMWATCH_DOMAIN (host or memcg),
    /// OOMWATCH_CGROUP, OOMWATCH_SECONDS_TO_OOM, OOMWATCH_SECONDS_TO_OOM_ERROR,
    /// OOMWATCH_VICTIM_PID (the victim when the OOM comes) and
    /// OOMWATCH_VICTIM_NOW_PID. Off by default.
    #[arg(long, value_name = "CMD")]
    pub on_forecast: Option<String>,
    /// Run --on-forecast when the forecast OOM is at most this many seconds
    /// away [default: 60].
    #[arg(long, value_name = "SECS")]
    pub on_forecast_within: Option<f64>,
    /// Kill --on-forecast's command after this many seconds [default: 30].
    #[arg(long, value_name = "SECS")]
    pub on_forecast_timeout: Option<f64>,
    /// Do not run --on-forecast again for the same domain before this many
    /// seconds [default: 300].
    #[arg(long, value_name = "SECS")]
    pub on_forecast_cooldown: Option<f64>,
    /// Runs of --on-forecast's command at once, over every domain
    /// [default: 2].
    #[arg(long, value_name = "N")]
    pub on_forecast_max_running: Option<usize>,
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
                super::config::EventsFlags {
                    path: flags.events,
                    max_bytes: flags.events_max_bytes,
                    keep: flags.events_keep,
                },
                super::config::OnForecastFlags {
                    command: flags.on_forecast,
                    within: flags.on_forecast_within,
                    timeout: flags.on_forecast_timeout,
                    cooldown: flags.on_forecast_cooldown,
                    max_running: flags.on_forecast_max_running,
                },
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
        events_rotation: settings.events_rotation,
        source: flags.source,
        program_stats: flags.program_stats,
        hot_probes: flags.hot_probes,
        hot_hold: std::time::Duration::from_secs(flags.hot_probes_hold),
        on_forecast: settings.on_forecast,
    };
    match rt.block_on(daemon::run(opts)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

/// A size in bytes: a number, with an optional K, M or G (powers of 1024).
pub fn parse_size(s: &str) -> Result<u64, String> {
    let t = s.trim();
    let (num, shift) = match t.char_indices().last() {
        Some((i, 'K' | 'k')) => (&t[..i], 10),
        Some((i, 'M' | 'm')) => (&t[..i], 20),
        Some((i, 'G' | 'g')) => (&t[..i], 30),
        _ => (t, 0),
    };
    num.trim()
        .parse::<u64>()
        .ok()
        .and_then(|n| n.checked_mul(1 << shift))
        .ok_or_else(|| format!("{s:?} is not a size: give bytes, e.g. 67108864, 64M or 1G"))
}

#[cfg(test)]
mod tests {
    use super::parse_size;

    #[test]
    fn sizes() {
        assert_eq!(parse_size("0"), Ok(0));
        assert_eq!(parse_size("4096"), Ok(4096));
        assert_eq!(parse_size("64M"), Ok(64 << 20));
        assert_eq!(parse_size("1g"), Ok(1 << 30));
        assert_eq!(parse_size("8K"), Ok(8192));
        for bad in ["", "M", "-1", "1.5G", "64MB", "99999999999999999999G"] {
            let e = parse_size(bad).unwrap_err();
            assert!(e.contains("is not a size"), "{bad}: {e}");
        }
    }
}
