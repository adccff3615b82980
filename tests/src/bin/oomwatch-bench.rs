//! `cargo xtask bench`'s scan benchmark: a full scan and ranking of every
//! task, through the BPF task iterator and through `/proc`, against the
//! baseline tools like htop, dstat and earlyoom use — reading every
//! `/proc/PID/oom_score` — with 1 000 and 10 000 real processes alive.
//!
//! The processes are children of an `oomwatch-hog spawn N` inside an
//! `oomwatch` memory cgroup with a limit. Each round times the baseline,
//! both sources, and the iterator pass alone (where `--source bpf`'s time
//! goes), in a rotating order; the table gives medians and each median as a
//! ratio of the baseline's median measured in the same run.
//!
//! `oomwatch-bench [--tasks N]... [--rounds R] [--markdown FILE]`

use std::{
    io::Write as _,
    path::Path,
    time::{Duration, Instant},
};

use anyhow::{Context as _, bail};
use oomwatch::{
    domain,
    model::KernelBehavior,
    predict,
    snapshot::{bpf::TaskIter, proc},
};
use oomwatch_tests::{Hog, MemcgGuard};

/// One way to scan: its name and what one scan returns (tasks seen, the
/// top-ranked tgid).
type Scan<'a> = (
    &'static str,
    Box<dyn FnMut() -> anyhow::Result<(usize, i32)> + 'a>,
);

/// The baseline: every `/proc/PID/oom_score`, read and ranked.
fn baseline() -> anyhow::Result<(usize, i32)> {
    let mut scores: Vec<(u64, i32)> = Vec::new();
    for e in std::fs::read_dir("/proc")?.flatten() {
        let Some(pid) = e.file_name().to_str().and_then(|n| n.parse::<i32>().ok()) else {
            continue;
        };
        if let Ok(s) = std::fs::read_to_string(format!("/proc/{pid}/oom_score"))
            && let Ok(v) = s.trim().parse::<u64>()
        {
            scores.push((v, pid));
        }
    }
    scores.sort_unstable_by(|a, b| b.cmp(a));
    Ok((scores.len(), scores.first().map_or(0, |s| s.1)))
}

/// A snapshot ranked as `oomwatch predict` ranks the host.
fn rank(snap: proc::ProcSnapshot) -> (usize, i32) {
    let n = snap.processes.len();
    let dom = domain::global(&snap);
    let kb = KernelBehavior::for_version(snap.version);
    let sel = predict::select_in(&snap, &dom, &kb);
    let top = sel.ranking().first().map_or(0, |c| c.tgid);
    (n, top)
}

fn median(v: &mut [Duration]) -> Duration {
    v.sort_unstable();
    v[v.len() / 2]
}

struct Row {
    tasks: usize,
    way: &'static str,
    seen: usize,
    median: Duration,
    ratio: f64,
}

fn describe_machine() -> String {
    let cpu = std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|t| {
            t.lines()
                .find(|l| l.starts_with("model name") || l.starts_with("CPU part"))
                .and_then(|l| l.split(':').nth(1))
                .map(|s| s.trim().to_owned())
        })
        .unwrap_or_else(|| "unknown CPU".into());
    let mem_kb = std::fs::read_to_string("/proc/meminfo")
        .ok()
        .and_then(|t| {
            t.lines()
                .find_map(|l| l.strip_prefix("MemTotal:"))
                .and_then(|v| v.split_whitespace().next()?.parse::<u64>().ok())
        })
        .unwrap_or(0);
    format!(
        "Linux {} ({}), {} CPUs ({cpu}), {:.1} GiB RAM",
        oomwatch::kernel_release(),
        std::env::consts::ARCH,
        std::thread::available_parallelism().map_or(1, |n| n.get()),
        mem_kb as f64 / (1 << 20) as f64
    )
}

fn main() -> anyhow::Result<()> {
    let mut tasks: Vec<usize> = Vec::new();
    let mut rounds = 9;
    let mut markdown: Option<std::path::PathBuf> = None;
    let mut args = std::env::args().skip(1);
    while let Some(a) = args.next() {
        match a.as_str() {
            "--tasks" => tasks.push(args.next().context("--tasks N")?.parse()?),
            "--rounds" => rounds = args.next().context("--rounds R")?.parse()?,
            "--markdown" => markdown = Some(args.next().context("--markdown FILE")?.into()),
            "-h" | "--help" => {
                println!("usage: oomwatch-bench [--tasks N]... [--rounds R] [--markdown FILE]");
                return Ok(());
            }
            other => bail!("unknown argument {other:?}; see --help"),
        }
    }
    if tasks.is_empty() {
        tasks = vec![1_000, 10_000];
    }
    if !nix::unistd::geteuid().is_root() {
        bail!("the scan benchmark loads eBPF and creates a memory cgroup: run it as root");
    }
    let pid_max: usize = std::fs::read_to_string("/proc/sys/kernel/pid_max")?
        .trim()
        .parse()?;
    if let Some(n) = tasks.iter().find(|&&n| n + 2_000 > pid_max) {
        bail!("--tasks {n}: kernel.pid_max is {pid_max}; raise it or ask for fewer tasks");
    }
    // Orphaned sleepers come back to this process, which reaps them.
    // SAFETY: prctl with integer arguments.
    unsafe { libc::prctl(libc::PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0) };
    let hog = std::env::current_exe()?.with_file_name("oomwatch-hog");
    let hog = hog
        .to_str()
        .context("the hog's path is not UTF-8")?
        .to_owned();

    let load_start = Instant::now();
    let mut iter = TaskIter::load().map_err(|e| anyhow::anyhow!("the task iterator: {e}"))?;
    let load = load_start.elapsed();
    let mut iter2 = TaskIter::load().map_err(|e| anyhow::anyhow!("the task iterator: {e}"))?;
    println!(
        "machine: {}\ntask iterator loaded in {:.1} ms (once per daemon)",
        describe_machine(),
        load.as_secs_f64() * 1e3
    );

    let mut rows = Vec::new();
    for &n in &tasks {
        // 1 MiB per sleeper is far more than each needs; the limit is there
        // so that no mistake here can reach the host.
        let memcg = MemcgGuard::create(((n as u64) << 20).max(1 << 30))
            .context("create the benchmark's memory cgroup")?;
        let spawn_start = Instant::now();
        print!("spawning {n} sleeping processes... ");
        let _ = std::io::stdout().flush();
        let mut spawner = Hog::start_mode(&hog, &memcg, 1, &["spawn", &n.to_string()])?;
        if !spawner.wait_ready() {
            bail!("the spawner did not start {n} processes");
        }
        println!("{:.1} s", spawn_start.elapsed().as_secs_f64());

        let mut ways: Vec<Scan> = vec![
            ("/proc/PID/oom_score (baseline)", Box::new(baseline)),
            (
                "oomwatch --source proc",
                Box::new(|| Ok(rank(proc::read(Path::new("/proc"))?))),
            ),
            (
                "oomwatch --source bpf",
                Box::new(|| Ok(rank(iter.read(Path::new("/proc"))?))),
            ),
            (
                "task iterator pass alone (no /proc, no ranking)",
                Box::new(|| Ok((iter2.records()?.len(), 0))),
            ),
        ];
        let mut times: Vec<Vec<Duration>> = vec![Vec::new(); ways.len()];
        let mut seen = vec![0; ways.len()];
        // One warm-up round, untimed: dentries and the page cache.
        for (_, f) in ways.iter_mut() {
            f()?;
        }
        for r in 0..rounds {
            for k in 0..ways.len() {
                let i = (r + k) % ways.len();
                let start = Instant::now();
                let (count, _top) = (ways[i].1)()?;
                times[i].push(start.elapsed());
                seen[i] = count;
            }
        }
        let base = median(&mut times[0].clone());
        for (i, (name, _)) in ways.iter().enumerate() {
            let m = median(&mut times[i]);
            rows.push(Row {
                tasks: n,
                way: name,
                seen: seen[i],
                median: m,
                ratio: m.as_secs_f64() / base.as_secs_f64(),
            });
        }
        drop(ways);
        drop(spawner);
        drop(memcg);
        // Reap what came back to us.
        while nix::sys::wait::waitpid(
            nix::unistd::Pid::from_raw(-1),
            Some(nix::sys::wait::WaitPidFlag::WNOHANG),
        )
        .is_ok_and(|s| s != nix::sys::wait::WaitStatus::StillAlive)
        {}
    }

    let mut table = String::new();
    table.push_str(
        "| live processes | scan and ranking | processes seen | median | ratio to baseline |\n\
         |---:|---|---:|---:|---:|\n",
    );
    for r in &rows {
        table.push_str(&format!(
            "| {} | {} | {} | {:.2} ms | {:.3}× |\n",
            r.tasks,
            r.way,
            r.seen,
            r.median.as_secs_f64() * 1e3,
            r.ratio
        ));
    }
    println!("\n{table}");
    if let Some(path) = markdown {
        let text = format!(
            "Measured by `cargo xtask bench` on {}; {rounds} rounds per size, the four \
             ways in rotating order each round; medians, each as a ratio of the baseline's \
             median from the same run. Loading the task iterator (once per daemon): {:.1} ms.\n\n{table}",
            describe_machine(),
            load.as_secs_f64() * 1e3
        );
        std::fs::write(&path, text).with_context(|| format!("write {}", path.display()))?;
        println!("written to {}", path.display());
    }
    Ok(())
}
