//! `oomwatch run`: the daemon, with its settings from the flags, the config
//! file and the defaults.

use std::{net::SocketAddr, path::PathBuf, process::ExitCode};

use crate::{
    daemon::{self, hot::HotProbes},
    snapshot::Source,
};

/// The flags of `oomwatch run`, as parsed.
pub struct Flags {
    pub listen: Option<SocketAddr>,
    pub interval: Option<f64>,
    pub events: Option<PathBuf>,
    pub config: Option<PathBuf>,
    pub source: Source,
    pub program_stats: bool,
    pub hot_probes: HotProbes,
    pub hot_probes_hold: u64,
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
