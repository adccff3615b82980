//! The `oomwatch` command line: parse arguments, set up logging, dispatch.
//! Lives in the library so the privileged tests can build the very same
//! command as their own binary.

use std::{io::IsTerminal as _, net::SocketAddr, process::ExitCode};

use clap::{Parser, Subcommand};

use crate::{check, daemon};

/// Live OOM observer for Linux: watches the kernel's OOM killer through eBPF
/// and exports what it sees to Prometheus.
#[derive(Parser)]
#[command(name = "oomwatch", version, about, long_about = None, propagate_version = true)]
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
    Run {
        /// Address for the `/metrics` endpoint.
        #[arg(long, value_name = "ADDR:PORT", default_value = daemon::DEFAULT_LISTEN)]
        listen: SocketAddr,
    },
    /// Report what this kernel offers oomwatch: BTF, tracefs, the tracepoints
    /// it uses, fentry/fexit, kprobes, the memory cgroup controllers and this
    /// process's privileges. Exits 0 when `oomwatch run` can start, 1 when not.
    Check {
        /// Print the report as JSON.
        #[arg(long)]
        json: bool,
    },
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
    init_logging();
    match cli.command {
        Command::Run { listen } => {
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
            match rt.block_on(daemon::run(daemon::RunOptions { listen })) {
                Ok(()) => ExitCode::SUCCESS,
                Err(e) => {
                    eprintln!("error: {e:#}");
                    ExitCode::FAILURE
                }
            }
        }
        Command::Check { json } => {
            let report = check::run();
            if json {
                match serde_json::to_string_pretty(&report) {
                    Ok(s) => println!("{s}"),
                    Err(e) => {
                        eprintln!("error: encode the report: {e}");
                        return ExitCode::FAILURE;
                    }
                }
            } else {
                print!("{}", report.render());
            }
            if report.can_run {
                ExitCode::SUCCESS
            } else {
                ExitCode::FAILURE
            }
        }
    }
}
