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
        Command::Explain { pid, cgroup, json } => match explain(pid, cgroup.as_deref(), json) {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => {
                eprintln!("error: {e:#}");
                ExitCode::FAILURE
            }
        },
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

/// `oomwatch explain`.
fn explain(pid: i32, cgroup: Option<&str>, json: bool) -> anyhow::Result<()> {
    use anyhow::Context as _;

    use crate::{
        domain,
        model::{KernelBehavior, Scan, explain::explain_task, select_bad_process},
        snapshot::proc,
    };
    let snap = proc::read(std::path::Path::new("/proc")).context("read /proc")?;
    if !snap
        .processes
        .iter()
        .any(|e| e.process.tgid == pid || e.process.threads.iter().any(|t| t.pid == pid))
    {
        anyhow::bail!("no process {pid} (is it running, and in this pid namespace?)");
    }
    let swappiness = std::fs::read_to_string("/proc/sys/vm/swappiness")
        .ok()
        .and_then(|s| s.trim().parse().ok())
        .unwrap_or(60);
    let dom = match cgroup {
        Some(path) => domain::memcg(&snap, path, swappiness)?,
        None => domain::global(&snap),
    };
    let kb = KernelBehavior::for_version(snap.version);
    let sel = select_bad_process(
        &Scan {
            domain: dom.kind,
            processes: &dom.processes,
            totalpages: dom.totalpages,
            page_size: snap.page_size,
            sysrq: false,
        },
        &kb,
    );
    let ex = explain_task(&sel, pid);
    let victim = sel.chosen().map(|c| {
        serde_json::json!({
            "pid": c.pid, "tgid": c.tgid, "comm": c.comm, "points": c.badness.points,
        })
    });
    if json {
        let out = serde_json::json!({
            "kernel": snap.kernel,
            "domain": {
                "kind": dom.kind,
                "cgroup": dom.cgroup,
                "requested": dom.requested,
                "totalpages": dom.totalpages,
            },
            "victim": victim,
            "explanation": ex,
        });
        println!("{}", serde_json::to_string_pretty(&out)?);
        return Ok(());
    }
    let where_ = match (&dom.cgroup, &dom.requested) {
        (Some(c), Some(r)) => format!("memory cgroup {c} (the limit above {r})"),
        (Some(c), None) => format!("memory cgroup {c}"),
        (None, _) => "the host (global OOM)".to_owned(),
    };
    println!(
        "domain:    {where_}, totalpages {}, {} tasks scanned, Linux {}",
        dom.totalpages,
        sel.candidates.len(),
        snap.kernel
    );
    if let Some(c) = &ex.candidate {
        println!(
            "task:      {} ({pid}), oom_score_adj {}, {}",
            c.comm,
            c.oom_score_adj,
            crate::model::explain::breakdown(&c.badness)
        );
    }
    if let Some(r) = ex.rank {
        println!("rank:      {r} of {}", sel.ranking().len());
    }
    match sel.chosen() {
        Some(v) => println!(
            "victim:    {} ({}) with {} points",
            v.comm,
            v.tgid,
            v.badness.points.unwrap_or(0)
        ),
        None => println!("victim:    none ({:?})", sel.outcome),
    }
    println!("why:       {}", ex.why);
    println!("to change: {}", ex.to_change);
    Ok(())
}
