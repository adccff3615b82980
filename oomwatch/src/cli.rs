//! The `oomwatch` command line: parse arguments, set up logging, dispatch.
//! Lives in the library so the privileged tests can build the very same
//! command as their own binary.

use std::{io::IsTerminal as _, net::SocketAddr, process::ExitCode};

use clap::{Parser, Subcommand};

use crate::{check, daemon, snapshot::Source};

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
        /// Address for the `/metrics` and `/events` endpoints [default:
        /// 127.0.0.1:7707].
        #[arg(long, value_name = "ADDR:PORT")]
        listen: Option<SocketAddr>,
        /// Seconds between prediction passes (every OOM domain's next victim,
        /// headroom and margin, and the model's self-check against
        /// /proc/PID/oom_score). A kill also triggers a pass at once
        /// [default: 1].
        #[arg(long, value_name = "SECS", value_parser = parse_interval)]
        interval: Option<f64>,
        /// Also append each OOM episode, as one JSON line, to FILE (`-` for
        /// stdout). `oomwatch watch` streams the same lines from the daemon.
        #[arg(long, value_name = "FILE")]
        events: Option<std::path::PathBuf>,
        /// Read settings from a TOML file with the keys listen, interval and
        /// events; flags given here win over it.
        #[arg(long, value_name = "FILE")]
        config: Option<std::path::PathBuf>,
        /// Turn on the kernel's run-time statistics for BPF programs
        /// (BPF_ENABLE_STATS) while the daemon runs, for the
        /// oomwatch_program_runs_total and oomwatch_program_run_seconds_total
        /// metrics. Off by default: the kernel then times every run of every
        /// BPF program on the host, not only oomwatch's (measured here, with
        /// the hot programs attached: a page-fault storm about a third
        /// slower; docs/benchmarks.md).
        #[arg(long)]
        program_stats: bool,
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
        #[arg(long, value_enum, value_name = "WHEN", default_value_t = crate::daemon::hot::HotProbes::Pressure)]
        hot_probes: crate::daemon::hot::HotProbes,
        /// Seconds the hot programs stay attached after the last sign of
        /// memory pressure (`--hot-probes pressure`).
        #[arg(long, value_name = "SECS", default_value_t = crate::daemon::hot::DEFAULT_HOLD.as_secs())]
        hot_probes_hold: u64,
        /// Where to read the processes: `bpf`, the kernel's own counters in
        /// one read through a BPF task iterator (root; Linux 5.8+ with BTF);
        /// `proc`, /proc files; `auto`, bpf where it loads, else proc.
        #[arg(long, value_enum, value_name = "SOURCE", default_value_t = Source::Auto)]
        source: Source,
    },
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
        /// Where to read the processes: `bpf`, the kernel's own counters in
        /// one read through a BPF task iterator (root; Linux 5.8+ with BTF);
        /// `proc`, /proc files; `auto`, bpf where it loads, else proc.
        #[arg(long, value_enum, value_name = "SOURCE", default_value_t = Source::Auto)]
        source: Source,
    },
    /// A live view of every OOM domain (the host and each memory cgroup with
    /// a limit): headroom to the limit, the next victims and the margin
    /// between the first and the second. Refreshes until Ctrl-C.
    Top {
        /// Seconds between refreshes.
        #[arg(long, value_name = "SECS", default_value_t = 2.0, value_parser = parse_interval)]
        interval: f64,
        /// Candidates shown per domain.
        #[arg(long, value_name = "N", default_value_t = 3)]
        top: usize,
        /// Print one refresh and exit (for scripts and logs).
        #[arg(long)]
        once: bool,
        /// Where to read the processes: `bpf`, the kernel's own counters in
        /// one read through a BPF task iterator (root; Linux 5.8+ with BTF);
        /// `proc`, /proc files; `auto`, bpf where it loads, else proc.
        #[arg(long, value_enum, value_name = "SOURCE", default_value_t = Source::Auto)]
        source: Source,
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
    },
}

/// `--interval`: a number of seconds between 0.1 and 3600.
fn parse_interval(s: &str) -> Result<f64, String> {
    let v: f64 = s
        .parse()
        .map_err(|_| format!("{s:?} is not a number of seconds, e.g. 1 or 0.5"))?;
    crate::config::check_interval(v)
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
    if !matches!(cli.command, Command::Run { .. }) {
        // A report piped into `head` ends quietly, as other Unix tools do,
        // instead of failing on EPIPE. (The daemon keeps Rust's default.)
        // SAFETY: setting a signal disposition before any thread starts.
        unsafe {
            libc::signal(libc::SIGPIPE, libc::SIG_DFL);
        }
    }
    init_logging();
    match cli.command {
        Command::Watch { from, json } => match crate::watch::watch(from, json) {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => {
                eprintln!("error: {e:#}");
                ExitCode::FAILURE
            }
        },
        Command::Run {
            listen,
            interval,
            events,
            config,
            source,
            program_stats,
            hot_probes,
            hot_probes_hold,
        } => {
            let settings = config
                .as_deref()
                .map(crate::config::load)
                .transpose()
                .and_then(|file| {
                    crate::config::merge(file.unwrap_or_default(), listen, interval, events)
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
                source,
                program_stats,
                hot_probes,
                hot_hold: std::time::Duration::from_secs(hot_probes_hold),
            };
            match rt.block_on(daemon::run(opts)) {
                Ok(()) => ExitCode::SUCCESS,
                Err(e) => {
                    eprintln!("error: {e:#}");
                    ExitCode::FAILURE
                }
            }
        }
        Command::Explain {
            pid,
            cgroup,
            json,
            source,
        } => match explain(pid, cgroup.as_deref(), json, source) {
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
            source,
        } => match predict(cgroup.as_deref(), top, json, source) {
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
        } => match top_view(interval, top, once, source) {
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
        } => match simulate(&gfp, order, cgroup.as_deref(), json) {
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
        } => match crate::replay::input::cli(
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
fn explain(pid: i32, cgroup: Option<&str>, json: bool, source: Source) -> anyhow::Result<()> {
    use crate::model::explain::explain_task;
    let crate::predict::Prediction {
        snap,
        domain: dom,
        selection: sel,
        ..
    } = crate::predict::prepare(cgroup, source)?;
    if !snap
        .processes
        .iter()
        .any(|e| e.process.tgid == pid || e.process.threads.iter().any(|t| t.pid == pid))
    {
        anyhow::bail!("no process {pid} (is it running, and in this pid namespace?)");
    }
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

/// `oomwatch simulate`.
fn simulate(gfp: &str, order: u32, cgroup: Option<&str>, json: bool) -> anyhow::Result<()> {
    use anyhow::{Context as _, bail};

    use crate::{
        model::{
            KernelBehavior, Scan,
            oom::{Constraint, Decision, OomCall, OomSysctls, out_of_memory},
            slowpath::{self, AllocRequest, Ending, TaskFlags, ZoneState},
            watermark::Watermarks,
        },
        snapshot::{Domains, Snapshotter, Source, SystemSnapshot, Want},
    };
    if order > 10 {
        bail!(
            "--order {order}: the buddy allocator's largest order is 10 (MAX_PAGE_ORDER); use 0 – 10"
        );
    }
    let proc_root = std::path::Path::new("/proc");
    let want = Want {
        domains: cgroup.map_or(Domains::Host, |p| Domains::Memcg(p.to_owned())),
        zones: cgroup.is_none(),
        kernel_scores: 0,
    };
    // Always /proc: the page allocator's simulation reads the zones there.
    let SystemSnapshot {
        procs: snap,
        sysctls,
        mut domains,
        zones,
        cgroup_v2,
    } = Snapshotter::open(Source::Proc)?.read_system(proc_root, &want)?;
    let dom = domains.remove(0);
    let kb = KernelBehavior::for_version(snap.version);
    let table = crate::host::gfp::live_gfp_table(&kb);
    let mask = table.parse(gfp).with_context(|| format!("--gfp {gfp:?}"))?;
    let req = AllocRequest {
        gfp: mask,
        order,
        task: TaskFlags::default(),
    };
    let path = match &dom.charge {
        Some(Ok(state)) => slowpath::charge_memcg(&req, state, &table, &kb),
        Some(Err(e)) => bail!("{e}"),
        None if cgroup.is_some() => bail!("memory controller"),
        None => {
            let swap_room = snap.memory.total_swap_pages > 0;
            let states: Vec<ZoneState> = zones
                .iter()
                .filter(|z| z.node == 0 || zones.iter().all(|o| o.node == z.node))
                .map(|z| ZoneState {
                    name: z.name.clone(),
                    free_pages: z.free_pages,
                    wmark: Watermarks {
                        min: z.min,
                        low: z.low,
                        high: z.high,
                        promo: z.promo,
                    },
                    lowmem_reserve: z.protection.clone(),
                    reclaimable_pages: z.file_lru + if swap_room { z.anon_lru } else { 0 },
                    free_cma_pages: z.free_cma,
                    free_blocks: z.free_blocks.clone(),
                })
                .collect();
            slowpath::alloc_pages(&req, &states, &table, &kb)
        }
    };
    let oom = matches!(
        path.ending,
        Ending::OutOfMemory | Ending::MemcgOom | Ending::MemcgOomWaits
    );
    let processes = dom.processes(&snap);
    let decision = oom.then(|| {
        let memcg_oom = cgroup.is_some();
        let call = OomCall {
            constraint: if memcg_oom {
                Constraint::ConstraintMemcg
            } else {
                Constraint::ConstraintNone
            },
            gfp_fs: mask & table.flag("__GFP_FS") != 0,
            gfp_zero: mask == 0,
            sysrq: false,
            oom_killer_disabled: false,
            notifier_freed: false,
            current: None,
            current_exiting: false,
            sysctls: OomSysctls {
                panic_on_oom: sysctls.panic_on_oom,
                oom_kill_allocating_task: sysctls.oom_kill_allocating_task,
            },
            scan: Scan {
                domain: dom.kind,
                processes: &processes,
                totalpages: dom.totalpages,
                page_size: snap.page_size,
                sysrq: false,
            },
            domain_memcg: dom.cgroup.as_deref(),
            oom_group_memcgs: &dom.oom_groups,
            cgroup_v2,
        };
        out_of_memory(&call, &kb)
    });
    let victim = decision.as_ref().and_then(|d| match d {
        Decision::Kill { kill, selection } => {
            let c = selection.chosen()?;
            Some(serde_json::json!({
                "pid": c.pid, "tgid": kill.victim_tgid, "comm": c.comm,
                "points": c.badness.points, "margin": selection.margin(),
                "also_killed": kill.also_killed,
            }))
        }
        _ => None,
    });
    if json {
        let out = serde_json::json!({
            "kernel": snap.kernel,
            "gfp": { "mask": format!("{mask:#x}"), "names": table.format(mask) },
            "order": order,
            "domain": { "kind": dom.kind, "cgroup": dom.cgroup, "totalpages": dom.totalpages },
            "steps": path.steps,
            "ending": path.ending,
            "oom": decision,
            "victim": victim,
        });
        println!("{}", serde_json::to_string_pretty(&out)?);
        return Ok(());
    }
    println!(
        "allocation: order {order}, gfp_mask={mask:#x}({}), Linux {}",
        table.format(mask),
        snap.kernel
    );
    for (i, s) in path.steps.iter().enumerate() {
        println!("  {}. {}: {}", i + 1, s.at, s.detail);
    }
    let ending = match &path.ending {
        Ending::Allocated { stage: "charge", .. } => "charged: the memcg stays within its limit".into(),
        Ending::Allocated { zone, stage } => format!("allocated from {zone} ({stage})"),
        Ending::AllocatedAfterReclaim { zone } => {
            format!("allocated from {zone} once reclaim frees what it counts as reclaimable")
        }
        Ending::DependsOnCompaction => "depends on compaction building a free block".into(),
        Ending::Fails { reason } => format!("fails without an OOM kill: {reason}"),
        Ending::OutOfMemory => "global OOM: out_of_memory() runs".into(),
        Ending::MemcgOom => "memcg OOM: the OOM killer runs in the memory cgroup".into(),
        Ending::MemcgOomWaits => {
            "memcg OOM with the OOM killer disabled: the task waits (victim below if it were enabled)".into()
        }
        Ending::NofailLoops => "__GFP_NOFAIL: never fails, loops".into(),
        Ending::FaultRetried => "the page fault is retried".into(),
    };
    println!("ending:     {ending}");
    if let Some(d) = &decision {
        match d {
            Decision::Kill { kill, selection } => {
                if let Some(c) = selection.chosen() {
                    println!(
                        "victim:     {} ({}) — {}; margin {} points over the runner-up",
                        c.comm,
                        kill.victim_tgid,
                        crate::model::explain::breakdown(&c.badness),
                        selection.margin().map_or("n/a".into(), |m| m.to_string())
                    );
                }
            }
            other => println!("oom:        {}", serde_json::to_string(other)?),
        }
    }
    Ok(())
}

/// `oomwatch predict`.
fn predict(
    cgroup: Option<&str>,
    top: Option<usize>,
    json: bool,
    source: Source,
) -> anyhow::Result<()> {
    let p = crate::predict::prepare(cgroup, source)?;
    let r = p.report(top);
    if json {
        println!("{}", serde_json::to_string_pretty(&r)?);
        return Ok(());
    }
    let where_ = match &r.domain.cgroup {
        Some(c) => format!("memory cgroup {c}"),
        None => "the host (global OOM)".into(),
    };
    println!(
        "domain: {where_}, totalpages {}, Linux {}",
        r.domain.totalpages, r.kernel
    );
    match (&r.victim, p.selection.margin()) {
        (Some(v), Some(m)) => println!(
            "victim: {} ({}) with {} points, {m} ahead of the next",
            v.comm, v.tgid, v.points
        ),
        (Some(v), None) => println!(
            "victim: {} ({}) with {} points, the only eligible task",
            v.comm, v.tgid, v.points
        ),
        (None, _) => println!("victim: none ({:?})", p.selection.outcome),
    }
    println!(
        "{:>8} {:>8} {:<16} {:>10} {:>6}  reason",
        "pid", "tgid", "comm", "points", "adj"
    );
    for c in &r.candidates {
        println!(
            "{:>8} {:>8} {:<16} {:>10} {:>6}  {}",
            c.pid,
            c.tgid,
            c.comm,
            c.points.map_or("-".into(), |p| p.to_string()),
            c.oom_score_adj,
            c.reason
        );
    }
    Ok(())
}

/// Bytes as a short human string (KiB … TiB).
fn human_bytes(b: u64) -> String {
    let units = ["B", "KiB", "MiB", "GiB", "TiB"];
    let mut v = b as f64;
    let mut i = 0;
    while v >= 1024.0 && i < units.len() - 1 {
        v /= 1024.0;
        i += 1;
    }
    if i == 0 {
        format!("{b} B")
    } else {
        format!("{v:.1} {}", units[i])
    }
}

/// `oomwatch top`.
fn top_view(interval: f64, top: usize, once: bool, source: Source) -> anyhow::Result<()> {
    use std::io::{IsTerminal as _, Write as _};
    let tty = std::io::stdout().is_terminal() && !once;
    let mut snapper = crate::snapshot::Snapshotter::open(source)?;
    loop {
        let (domains, check) =
            crate::daemon::pass::refresh(&mut snapper, std::path::Path::new("/proc"), top)?;
        let mut out = String::new();
        if tty {
            out.push_str("\x1b[2J\x1b[H");
        }
        out.push_str(&format!(
            "oomwatch top: {} OOM domain(s), model = kernel for {}/{} tasks' oom_score{}\n\n",
            domains.len(),
            check.exact + check.explained.len() as u64,
            check.compared,
            if once {
                String::new()
            } else {
                format!(", every {interval} s (Ctrl-C quits)")
            }
        ));
        out.push_str(&format!(
            "{:<36} {:>11}  {:<28} {:>9} {:>8}\n",
            "DOMAIN", "HEADROOM", "NEXT VICTIM", "POINTS", "MARGIN"
        ));
        for d in &domains {
            let name = match &d.cgroup {
                Some(c) => format!("memcg {c}"),
                None => "host".to_owned(),
            };
            let victim = d
                .victim
                .as_ref()
                .map_or("-".to_owned(), |v| format!("{} ({})", v.comm, v.tgid));
            out.push_str(&format!(
                "{:<36} {:>11}  {:<28} {:>9} {:>8}\n",
                name,
                d.headroom_bytes.map_or("-".into(), human_bytes),
                victim,
                d.victim
                    .as_ref()
                    .map_or("-".into(), |v| v.points.to_string()),
                d.margin.map_or("-".into(), |m| m.to_string()),
            ));
            for (i, c) in d.top.iter().enumerate().skip(1).filter(|(_, c)| c.eligible) {
                out.push_str(&format!(
                    "{:<36} {:>11}  {:<28} {:>9}\n",
                    "",
                    format!("#{}", i + 1),
                    format!("{} ({})", c.comm, c.tgid),
                    c.points.map_or("-".into(), |p| p.to_string()),
                ));
            }
        }
        for m in &check.mismatches {
            out.push_str(&format!("\nmodel ≠ kernel: {m}"));
        }
        let mut stdout = std::io::stdout().lock();
        stdout.write_all(out.as_bytes())?;
        stdout.flush()?;
        if once {
            return Ok(());
        }
        std::thread::sleep(std::time::Duration::from_secs_f64(interval));
    }
}
