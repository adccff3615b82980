//! `oomwatch selftest`: the predicted-versus-actual suite as a command, for
//! users' own kernels and CI runners. Each scenario builds workloads in a
//! memory cgroup it creates with a limit, predicts the victim with the
//! model just before it triggers the OOM, and compares that with the
//! kernel's own `Killed process` line, eBPF's `oom:mark_victim`, the replay
//! of the kernel's report and, where the kernel lets oomwatch hook its OOM
//! functions, the kernel's own scan.
//!
//! Parts: the scenarios ([`scenarios`]), the workload the command starts as
//! itself ([`hog`]), the cgroups that remove themselves ([`cgroup`]), the
//! observers ([`observe`]) and one scenario's run ([`runner`]).

pub mod cgroup;
pub mod hog;
pub mod observe;
pub mod runner;
pub mod scenarios;

use std::process::ExitCode;

use serde::Serialize;

use self::{
    runner::{Ctx, ScenarioResult, Side, Status},
    scenarios::{LIMIT_MIB, SCENARIOS, Scenario},
};
use crate::{
    host::cgroup::memory_hierarchy,
    snapshot::{Snapshotter, Source},
};

/// Every scenario that ran passed (skipped ones aside).
pub const EXIT_PASS: u8 = 0;
/// At least one scenario failed.
pub const EXIT_FAIL: u8 = 1;
/// The selftest could not run: bad arguments, no root, no memory
/// controller, or a limit it could not set.
pub const EXIT_CANNOT_RUN: u8 = 2;

/// MemAvailable the host must have before the selftest starts a workload:
/// one scenario at a time charges at most its memcg's limit (the hard
/// limit holds the trigger too), so twice the limit leaves the host at least
/// as much again. A 256 MB guest (about 160 MiB available) can run it.
const MIN_AVAILABLE_MIB: u64 = 2 * LIMIT_MIB;

/// `oomwatch selftest`'s flags.
#[derive(Debug, Clone, clap::Args)]
pub struct Flags {
    /// Print one JSON document instead of progress lines and a table.
    #[arg(long)]
    pub json: bool,
    /// Run only these scenarios (comma-separated, e.g. largest,adj+500);
    /// `--list` names them all.
    #[arg(long, value_name = "NAME,...", value_delimiter = ',')]
    pub scenarios: Option<Vec<String>>,
    /// List the scenarios and exit.
    #[arg(long)]
    pub list: bool,
}

/// The `--json` document.
#[derive(Debug, Serialize)]
pub struct Document {
    pub kernel: String,
    pub arch: &'static str,
    /// "v1" or "v2".
    pub cgroup: String,
    pub limit_bytes: u64,
    /// Where the prediction's snapshot read the processes.
    pub snapshot_source: &'static str,
    /// Why eBPF's side is unavailable (null: it is watched).
    pub ebpf_unavailable: Option<String>,
    pub ebpf_degraded: Vec<crate::ebpf::Degraded>,
    /// Why the kernel's log (its victim and report) is unavailable.
    pub kmsg_unavailable: Option<String>,
    /// Why the kernel's own points are unavailable.
    pub kernel_points_unavailable: Option<String>,
    pub scenarios: Vec<ScenarioResult>,
    pub passed: usize,
    pub failed: usize,
    pub skipped: usize,
    pub exit_code: u8,
}

/// `oomwatch selftest`.
pub fn command(flags: Flags) -> ExitCode {
    if flags.list {
        for s in SCENARIOS {
            println!("{:<11} {}", s.name, s.about);
        }
        return ExitCode::SUCCESS;
    }
    let chosen: Vec<&Scenario> = match &flags.scenarios {
        None => SCENARIOS.iter().collect(),
        Some(names) => match scenarios::select(names) {
            Ok(s) => s,
            Err(e) => {
                eprintln!("error: {e}");
                return ExitCode::from(EXIT_CANNOT_RUN);
            }
        },
    };
    let ctx = match prepare() {
        Ok(c) => c,
        Err(e) => {
            eprintln!("error: {e:#}");
            return ExitCode::from(EXIT_CANNOT_RUN);
        }
    };
    match run_all(ctx, &chosen, flags.json) {
        Ok(code) => ExitCode::from(code),
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::from(EXIT_CANNOT_RUN)
        }
    }
}

/// Checks root, the memory controller and the host's headroom, then starts
/// the observers and the snapshotter.
fn prepare() -> anyhow::Result<Ctx> {
    if !nix::unistd::geteuid().is_root() {
        anyhow::bail!(
            "oomwatch selftest needs root: it creates memory cgroups \
             (oomwatch-selftest-*, removed afterwards), moves its workloads into them, loads \
             eBPF and reads /dev/kmsg; run it as root, e.g. `sudo oomwatch selftest`"
        );
    }
    let hierarchy = memory_hierarchy().ok_or_else(|| {
        anyhow::anyhow!(
            "no mounted cgroup hierarchy has the memory controller: the selftest runs its \
             workloads only inside memory cgroups with a limit (mount cgroup v2, or v1's memory \
             controller)"
        )
    })?;
    let available_mib = std::fs::read_to_string("/proc/meminfo")
        .ok()
        .and_then(|t| {
            t.lines()
                .find_map(|l| l.strip_prefix("MemAvailable:"))
                .and_then(|v| v.split_whitespace().next()?.parse::<u64>().ok())
        })
        .map(|kb| kb >> 10);
    if let Some(mib) = available_mib
        && mib < MIN_AVAILABLE_MIB
    {
        anyhow::bail!(
            "only {mib} MiB of memory is available; the selftest fills {LIMIT_MIB} MiB memory \
             cgroups and wants {MIN_AVAILABLE_MIB} MiB free, so as never to push the host toward \
             a global OOM"
        );
    }
    let exe = std::fs::read_link("/proc/self/exe")
        .map_err(|e| anyhow::anyhow!("find this executable (/proc/self/exe): {e}"))?;
    let obs = observe::Observers::start()?;
    let snapper = Snapshotter::open(Source::Auto)
        .map_err(|e| anyhow::anyhow!("open the process snapshots: {e}"))?;
    Ok(Ctx {
        hierarchy,
        snapper,
        obs,
        exe,
    })
}

/// Runs `chosen` one after the other and prints as it goes; returns the
/// exit code.
fn run_all(mut ctx: Ctx, chosen: &[&Scenario], json: bool) -> anyhow::Result<u8> {
    if !json {
        println!(
            "oomwatch selftest: Linux {} ({}), memory cgroup {}, {} scenario(s) in \
             {LIMIT_MIB} MiB memory cgroups; processes read from {}",
            crate::host::kernel_release(),
            std::env::consts::ARCH,
            ctx.hierarchy.version,
            chosen.len(),
            ctx.snapper.in_use(),
        );
        for (what, why) in [
            ("eBPF victims", &ctx.obs.ebpf_unavailable),
            ("the kernel's log", &ctx.obs.kmsg_unavailable),
            ("the kernel's own points", &ctx.obs.hooks_unavailable),
        ] {
            if let Some(why) = why {
                println!("  {what}: unavailable: {why}");
            }
        }
    }
    let mut results = Vec::new();
    for (i, sc) in chosen.iter().enumerate() {
        let r = runner::run(sc, &mut ctx)?;
        if !json {
            println!(
                "[{:>2}/{}] {:<10} {}",
                i + 1,
                chosen.len(),
                sc.name,
                progress(&r)
            );
        }
        results.push(r);
    }
    let count = |s: Status| results.iter().filter(|r| r.status == s).count();
    let (passed, failed, skipped) = (
        count(Status::Passed),
        count(Status::Failed),
        count(Status::Skipped),
    );
    let code = if failed == 0 { EXIT_PASS } else { EXIT_FAIL };
    if json {
        let doc = Document {
            kernel: crate::host::kernel_release(),
            arch: std::env::consts::ARCH,
            cgroup: ctx.hierarchy.version.to_string(),
            limit_bytes: LIMIT_MIB << 20,
            snapshot_source: ctx.snapper.in_use().source,
            ebpf_unavailable: ctx.obs.ebpf_unavailable.clone(),
            ebpf_degraded: ctx.obs.degraded.clone(),
            kmsg_unavailable: ctx.obs.kmsg_unavailable.clone(),
            kernel_points_unavailable: ctx.obs.hooks_unavailable.clone(),
            scenarios: results,
            passed,
            failed,
            skipped,
            exit_code: code,
        };
        println!("{}", serde_json::to_string_pretty(&doc)?);
    } else {
        print!("\n{}", table(&results));
        println!("{passed} passed, {failed} failed, {skipped} skipped");
    }
    Ok(code)
}

/// One side in a cell: `pid (hog)`, `-` when it saw nothing, `n/a` when
/// unavailable.
fn cell(s: &Side) -> String {
    match (s.pid, &s.hog, &s.unavailable) {
        (Some(p), Some(h), _) => format!("{p} ({h})"),
        (Some(p), None, _) => p.to_string(),
        (None, _, Some(_)) => "n/a".into(),
        (None, _, None) => "-".into(),
    }
}

/// A scenario's progress line.
fn progress(r: &ScenarioResult) -> String {
    match r.status {
        Status::Skipped => format!("skipped: {}", r.reason.as_deref().unwrap_or("")),
        Status::Failed => format!("FAILED: {}", r.reason.as_deref().unwrap_or("")),
        Status::Passed => format!(
            "passed: victim {} (predicted = kernel = eBPF{}) in {:.1} s{}",
            cell(&r.predicted),
            if r.replay.agrees == Some(true) {
                ", replay agrees"
            } else {
                ""
            },
            r.seconds,
            r.reason
                .as_deref()
                .map_or(String::new(), |n| format!("; note: {n}"))
        ),
    }
}

/// The closing table, one scenario per row.
fn table(results: &[ScenarioResult]) -> String {
    let mut t = format!(
        "{:<11} {:<8} {:<14} {:<14} {:<14} {:<14} {:<14}\n",
        "scenario", "result", "predicted", "kernel", "eBPF", "replay", "kernel points"
    );
    for r in results {
        let status = match r.status {
            Status::Passed => "passed",
            Status::Failed => "FAILED",
            Status::Skipped => "skipped",
        };
        if r.status == Status::Skipped {
            t.push_str(&format!(
                "{:<11} {:<8} {}\n",
                r.name,
                status,
                r.reason.as_deref().unwrap_or("")
            ));
            continue;
        }
        let replay = match (r.replay.agrees, &r.replay.unavailable) {
            (Some(true), _) => "agrees".to_owned(),
            (Some(false), _) => "DISAGREES".to_owned(),
            (None, _) => "n/a".to_owned(),
        };
        t.push_str(&format!(
            "{:<11} {:<8} {:<14} {:<14} {:<14} {:<14} {:<14}\n",
            r.name,
            status,
            cell(&r.predicted),
            cell(&r.kernel),
            cell(&r.ebpf),
            replay,
            cell(&r.kernel_points)
        ));
    }
    t
}
