//! `cargo xtask bench`: what oomwatch costs on a host, each number beside a
//! baseline measured in the same run (absolute timings on these machines
//! are noisy). Sections:
//!
//! - `scan` (P3): a full scan and ranking of every task with 1 000 and
//!   10 000 live processes (children of an `oomwatch-hog spawn N` inside a
//!   limited `oomwatch` memory cgroup), through the BPF task iterator and
//!   through `/proc`, against what htop, dstat and earlyoom do: read every
//!   `/proc/PID/oom_score`. Rotating order, medians.
//! - `probes` (P1, P2): a page-fault storm (`oomwatch-hog storm`: map,
//!   touch, unmap) timed with and without oomwatch's probes attached, in
//!   alternating runs; and each hot program's run time per event
//!   (BPF_ENABLE_STATS) against the storm's own time per fault.
//! - `latency` (P4): from the kernel's `mark_victim` to the kill being
//!   visible on the daemon's `/metrics`, over repeated memcg OOMs, against
//!   the same kill becoming visible in the memcg's own `oom_kill` counter,
//!   polled in the same loop.
//! - `daemon` (P5): the daemon's RSS and CPU at a 1 s refresh with 1 000
//!   tasks, against a process that does what earlyoom does each second.
//! - `forecast` (F1–F3): the forecast backtest. Real workloads in a
//!   64 MiB memory cgroup run to a real OOM kill (a steady leak, a
//!   staircase, a small task that grows past a big one) with a prediction
//!   pass every second, as the daemon's: the forecast at 50 % and 80 % of
//!   the time to the kill against the real kill, and the growth-aware
//!   victim against the kernel's; and a page-cache churn that fills the
//!   limit and never OOMs, where no forecast may fall under 10 minutes.
//!
//! `oomwatch-bench [--only scan,probes,latency,daemon,forecast] [--tasks N]...
//! [--rounds R] [--kills N] [--seconds S] [--runs N] [--markdown FILE]`

use std::{
    io::Write as _,
    path::Path,
    time::{Duration, Instant},
};

use anyhow::{Context as _, bail};
use oomwatch::{
    daemon::pass,
    forecast::TimeToOom,
    model::KernelBehavior,
    snapshot::{bpf::TaskIter, domain, proc},
};
use oomwatch_tests::{Hog, MemcgGuard, http_get, sample};

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
    let sel = pass::select_in(&snap, &dom, &kb);
    let top = sel.ranking().first().map_or(0, |c| c.tgid);
    (n, top)
}

fn median(v: &mut [Duration]) -> Duration {
    v.sort_unstable();
    v[v.len() / 2]
}

/// How one target of the issue stands, for the summary at the end.
struct Verdict {
    id: &'static str,
    target: String,
    measured: String,
    met: Met,
}

enum Met {
    Yes,
    No,
    /// Missed as measured, for the reason given (what bounds it).
    Bounded(String),
}

/// The closing section: each target, what was measured, met or not.
fn summary(verdicts: &[Verdict]) -> String {
    let mut t = String::from(
        "\n## Where the targets stand\n\nGenerated from the numbers above.\n\n| | target | measured | met |\n|---|---|---|---|\n",
    );
    for v in verdicts {
        let met = match &v.met {
            Met::Yes => "yes".to_owned(),
            Met::No => "**no**".to_owned(),
            Met::Bounded(why) => format!("as measured, no: {why}"),
        };
        t.push_str(&format!(
            "| {} | {} | {} | {met} |\n",
            v.id, v.target, v.measured
        ));
    }
    t
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
        oomwatch::host::kernel_release(),
        std::env::consts::ARCH,
        std::thread::available_parallelism().map_or(1, |n| n.get()),
        mem_kb as f64 / (1 << 20) as f64
    )
}

fn main() -> anyhow::Result<()> {
    let mut o = Options {
        tasks: Vec::new(),
        rounds: 9,
        kills: 25,
        seconds: 30,
        runs: 3,
    };
    let mut only: Option<Vec<String>> = None;
    let mut markdown: Option<std::path::PathBuf> = None;
    let mut args = std::env::args().skip(1);
    while let Some(a) = args.next() {
        match a.as_str() {
            "--tasks" => o.tasks.push(args.next().context("--tasks N")?.parse()?),
            "--rounds" => o.rounds = args.next().context("--rounds R")?.parse()?,
            "--kills" => o.kills = args.next().context("--kills N")?.parse()?,
            "--seconds" => o.seconds = args.next().context("--seconds S")?.parse()?,
            "--runs" => o.runs = args.next().context("--runs N")?.parse()?,
            "--only" => {
                only = Some(
                    args.next()
                        .context("--only scan,probes,latency,daemon,forecast")?
                        .split(',')
                        .map(str::to_owned)
                        .collect(),
                )
            }
            "--markdown" => markdown = Some(args.next().context("--markdown FILE")?.into()),
            "--earlyoom-loop" => {
                let secs: u64 = args.next().context("--earlyoom-loop SECS")?.parse()?;
                return earlyoom_loop(secs);
            }
            "-h" | "--help" => {
                println!(
                    "usage: oomwatch-bench [--only scan,probes,latency,daemon,forecast] [--tasks N]... \
                     [--rounds R] [--kills N] [--seconds S] [--runs N] [--markdown FILE]"
                );
                return Ok(());
            }
            other => bail!("unknown argument {other:?}; see --help"),
        }
    }
    if o.tasks.is_empty() {
        o.tasks = vec![1_000, 10_000];
    }
    if !nix::unistd::geteuid().is_root() {
        bail!("the benchmarks load eBPF and create memory cgroups: run them as root");
    }
    type Section = fn(&Options) -> anyhow::Result<(String, Vec<Verdict>)>;
    let sections: [(&str, Section); 5] = [
        ("scan", scan),
        ("probes", probes),
        ("latency", latency),
        ("daemon", daemon_cost),
        ("forecast", forecast),
    ];
    let all: Vec<&str> = sections.iter().map(|(name, _)| *name).collect();
    if let Some(bad) = only.iter().flatten().find(|s| !all.contains(&s.as_str())) {
        bail!("--only {bad}: choose from {}", all.join(", "));
    }
    let want = |s: &str| only.as_ref().is_none_or(|o| o.iter().any(|x| x == s));
    // Orphaned sleepers come back to this process, which reaps them.
    // SAFETY: prctl with integer arguments.
    unsafe { libc::prctl(libc::PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0) };
    println!("machine: {}", describe_machine());
    let mut doc = format!(
        "# Benchmarks\n\nWritten by `cargo xtask bench` (root) on {}. Every number stands \
         beside a baseline measured in the same run, as absolute timings on these machines are \
         noisy.\n",
        describe_machine()
    );
    let mut verdicts = Vec::new();
    let mut texts = Vec::new();
    for (name, section) in sections {
        if want(name) {
            let (text, v) = section(&o)?;
            doc.push_str(&text);
            texts.push(text);
            verdicts.extend(v);
        }
    }
    verdicts.sort_by_key(|v| v.id);
    let summary = summary(&verdicts);
    println!("{summary}");
    doc.push_str(&summary);
    if let Some(path) = markdown {
        // A partial run replaces its own sections and targets in an
        // existing file, and keeps the rest.
        let doc = match (&only, std::fs::read_to_string(&path)) {
            (Some(_), Ok(old)) => splice(&old, &texts, &summary, &describe_machine()),
            _ => doc,
        };
        std::fs::write(&path, doc).with_context(|| format!("write {}", path.display()))?;
        println!("written to {}", path.display());
    }
    Ok(())
}

/// The heading of a section's text (its first `## ` line).
fn heading(text: &str) -> Option<&str> {
    text.lines().find(|l| l.starts_with("## "))
}

/// `old` (a whole benchmarks file) with `sections` in place of the
/// sections of the same heading (new ones go before the targets), and
/// the targets table's rows replaced by those of `summary` with the same
/// id. Each replaced section says which run measured it.
fn splice(old: &str, sections: &[String], summary: &str, machine: &str) -> String {
    const TARGETS: &str = "## Where the targets stand";
    // Split at each heading: the preamble, then one part per section.
    let mut parts: Vec<String> = Vec::new();
    for line in old.split_inclusive('\n') {
        if line.starts_with("## ") || parts.is_empty() {
            parts.push(String::new());
        }
        parts.last_mut().expect("pushed above").push_str(line);
    }
    for text in sections {
        let Some(h) = heading(text) else { continue };
        let marked = format!(
            "{}\n\nThis section was measured alone (`cargo xtask bench --only`) on {machine}.\n\n",
            text.trim_end()
        );
        let body = marked.trim_start_matches('\n').to_owned();
        match parts.iter().position(|p| heading(p) == Some(h)) {
            Some(i) => parts[i] = body,
            None => {
                let at = parts
                    .iter()
                    .position(|p| heading(p) == Some(TARGETS))
                    .unwrap_or(parts.len());
                parts.insert(at, body);
            }
        }
    }
    // The targets: every old row whose id this run did not measure, and
    // this run's rows, by id.
    let row_id = |l: &str| -> Option<String> {
        let id = l.strip_prefix("| ")?.split(" |").next()?.trim().to_owned();
        (!id.is_empty() && !id.starts_with(['-', '|'])).then_some(id)
    };
    let new_rows: Vec<&str> = summary.lines().filter(|l| row_id(l).is_some()).collect();
    let new_ids: Vec<String> = new_rows.iter().filter_map(|l| row_id(l)).collect();
    if let Some(i) = parts.iter().position(|p| heading(p) == Some(TARGETS)) {
        let mut head = Vec::new();
        let mut rows: Vec<String> = Vec::new();
        for l in parts[i].lines() {
            match row_id(l) {
                Some(id) if !new_ids.contains(&id) => rows.push(l.to_owned()),
                Some(_) => {}
                None => head.push(l.to_owned()),
            }
        }
        rows.extend(new_rows.iter().map(|l| (*l).to_owned()));
        rows.sort_by_key(|l| row_id(l));
        parts[i] = format!("{}\n{}\n", head.join("\n").trim_end(), rows.join("\n"));
    } else {
        parts.push(summary.trim_start_matches('\n').to_owned());
    }
    parts.concat()
}

struct Options {
    tasks: Vec<usize>,
    rounds: usize,
    kills: usize,
    seconds: u64,
    /// Rounds of the forecast backtest's workloads.
    runs: usize,
}

/// Reaps children that came back to this subreaper.
fn reap() {
    while nix::sys::wait::waitpid(
        nix::unistd::Pid::from_raw(-1),
        Some(nix::sys::wait::WaitPidFlag::WNOHANG),
    )
    .is_ok_and(|s| s != nix::sys::wait::WaitStatus::StillAlive)
    {}
}

fn sibling(name: &str) -> anyhow::Result<String> {
    let p = std::env::current_exe()?.with_file_name(name);
    Ok(p.to_str().context("a non-UTF-8 path")?.to_owned())
}

/// P3.
fn scan(o: &Options) -> anyhow::Result<(String, Vec<Verdict>)> {
    let (tasks, rounds) = (&o.tasks, o.rounds);
    let pid_max: usize = std::fs::read_to_string("/proc/sys/kernel/pid_max")?
        .trim()
        .parse()?;
    if let Some(n) = tasks.iter().find(|&&n| n + 2_000 > pid_max) {
        bail!("--tasks {n}: kernel.pid_max is {pid_max}; raise it or ask for fewer tasks");
    }
    let hog = sibling("oomwatch-hog")?;
    let load_start = Instant::now();
    let mut iter = TaskIter::load().map_err(|e| anyhow::anyhow!("the task iterator: {e}"))?;
    let load = load_start.elapsed();
    let mut iter2 = TaskIter::load().map_err(|e| anyhow::anyhow!("the task iterator: {e}"))?;
    println!(
        "scan: task iterator loaded in {:.1} ms (once per daemon)",
        load.as_secs_f64() * 1e3
    );

    let mut rows = Vec::new();
    for &n in tasks {
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
        reap();
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
    let worst = |way: &str| {
        rows.iter()
            .filter(|r| r.way == way)
            .map(|r| r.ratio)
            .fold(0.0, f64::max)
    };
    let (bpf, procfs) = (
        worst("oomwatch --source bpf"),
        worst("oomwatch --source proc"),
    );
    let sizes: Vec<String> = tasks.iter().map(usize::to_string).collect();
    let verdicts = vec![Verdict {
        id: "P3",
        target: "≤ 1.0× reading every `/proc/PID/oom_score` (the task iterator ≤ 0.25×)".into(),
        measured: format!(
            "`--source bpf` (the default where the iterator loads) {bpf:.3}× at worst over {} live processes; `--source proc` {procfs:.2}× (six files per process)",
            sizes.join(" and ")
        ),
        met: if bpf <= 0.25 { Met::Yes } else { Met::No },
    }];
    Ok((
        format!(
            "\n## P3 scan: every task scanned and ranked\n\nThe baseline is what htop, dstat and \
         earlyoom do: read every `/proc/PID/oom_score` (and sort). `--source proc` reads each \
         process's `stat`, `status`, `oom_score_adj`, `oom_score`, `cgroup` and threads; \
         `--source bpf` reads every task in one pass of the BPF task iterator, plus a listing \
         of `/proc` every 16th pass to catch processes the iterator does not show. Both then \
         run the model's victim scan. {rounds} rounds per size, the four ways in rotating \
         order; medians. Loading the task iterator (once per daemon): {:.1} ms. Target: \
         ≤ 1.0× the baseline (the iterator also ≤ 0.25×).\n\n{table}\nWhere `--source bpf`'s \
         time goes: the iterator pass (the last row), about half of it the kernel walking its \
         tasks and half the program, which reads each field with a direct load the verifier \
         checks against the kernel's BTF (one `bpf_probe_read_kernel` call per field cost \
         twice as much), and follows each memory cgroup's chain once per pass; the rest is \
         the model's ranking of every process (also in the `/proc` row) and turning records \
         into processes. `--source proc` reads six files per process.\n",
            load.as_secs_f64() * 1e3
        ),
        verdicts,
    ))
}

fn percentile(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i.min(sorted.len() - 1)]
}

/// The floor program measured beside each hot BTF tracepoint program.
const FLOORS: &[(&str, &str)] = &[
    ("page_alloc_btf", "floor_alloc"),
    ("user_fault_btf", "floor_fault"),
];

/// What is attached during one step of the P1/P2 storm.
#[derive(Clone, Copy, PartialEq)]
enum Config {
    /// Nothing on the hot events (the baseline).
    Base,
    /// The baseline again (A/A).
    BaseAgain,
    /// The hot programs, as `oomwatch run` attaches them.
    Hot,
    /// Only the empty floor programs on the same events.
    Floor,
    /// The hot programs and the floor programs, run-time statistics on.
    Stats,
}

/// P1 and P2.
fn probes(o: &Options) -> anyhow::Result<(String, Vec<Verdict>)> {
    const MIB: usize = 16;
    let faults = (MIB << 20) / 4096;
    const CONFIGS: [Config; 5] = [
        Config::Base,
        Config::BaseAgain,
        Config::Hot,
        Config::Floor,
        Config::Stats,
    ];
    // Each step is short (a few ms), so that the machine's slow drifts
    // (other guests, frequency) hit every configuration of a round alike;
    // hundreds of rounds for medians that can tell 1 % apart.
    let rounds = o.rounds.max(9) * 40;
    let hog = sibling("oomwatch-hog")?;
    let memcg = MemcgGuard::create(256 << 20).context("create the storm's memory cgroup")?;
    let mut probes = oomwatch::ebpf::Probes::load_with(&oomwatch::ebpf::LoadOptions {
        no_run_stats: true,
        ..Default::default()
    })
    .context("load oomwatch's probes")?;
    let hot = probes.hot_programs();
    if hot.is_empty() {
        bail!("no program attached to kmem:mm_page_alloc or exceptions:page_fault_user here");
    }
    let floor = probes.load_floor();
    probes.set_hot_attached(false)?;
    let mut storm = Hog::start_mode(&hog, &memcg, MIB, &["chunks"])?;
    if !storm.wait_ready() {
        bail!("the page-fault storm did not start");
    }
    let step = |storm: &mut Hog| -> anyhow::Result<f64> {
        storm
            .ask("step")
            .and_then(|ns| ns.parse::<f64>().ok())
            .context("the page-fault storm stopped answering")
    };
    println!(
        "probes: {rounds} rounds of {} steps of {faults} page faults each",
        CONFIGS.len()
    );
    for _ in 0..20 {
        step(&mut storm)?; // warm-up
    }
    let mut ns: Vec<Vec<f64>> = vec![Vec::new(); CONFIGS.len()];
    let mut ratios: Vec<Vec<f64>> = vec![Vec::new(); CONFIGS.len()];
    let mut diffs: Vec<Vec<f64>> = vec![Vec::new(); CONFIGS.len()];
    // Program name → (events, run time ns) over the statistics steps.
    let mut per_prog: std::collections::BTreeMap<String, (u64, u128)> = Default::default();
    let started = Instant::now();
    for r in 0..rounds {
        let mut round = [0.0; CONFIGS.len()];
        for k in 0..CONFIGS.len() {
            let c = (r + k) % CONFIGS.len();
            let config = CONFIGS[c];
            probes.set_hot_attached(matches!(config, Config::Hot | Config::Stats))?;
            probes.set_floor_attached(matches!(config, Config::Floor | Config::Stats))?;
            if config != Config::Stats {
                round[c] = step(&mut storm)?;
                continue;
            }
            probes
                .set_run_stats(true)
                .map_err(|e| anyhow::anyhow!("BPF_ENABLE_STATS: {e}"))?;
            let before = probes.program_stats();
            round[c] = step(&mut storm)?;
            for a in probes.program_stats() {
                let b = before.iter().find(|b| b.name == a.name);
                let e = per_prog.entry(a.name.clone()).or_default();
                e.0 += a.run_count - b.map_or(0, |b| b.run_count);
                e.1 += (a.run_time - b.map_or(Duration::ZERO, |b| b.run_time)).as_nanos();
            }
            probes
                .set_run_stats(false)
                .map_err(|e| anyhow::anyhow!("BPF_ENABLE_STATS: {e}"))?;
        }
        for c in 0..CONFIGS.len() {
            ns[c].push(round[c]);
            ratios[c].push(round[c] / round[0]);
            diffs[c].push((round[c] - round[0]) / faults as f64);
        }
        if (r + 1) % (rounds / 4).max(1) == 0 {
            println!(
                "  {} of {rounds} rounds, {:.0} s",
                r + 1,
                started.elapsed().as_secs_f64()
            );
        }
    }
    let med = |v: &[f64]| percentile(v, 0.5);
    drop(probes);
    // The whole probe set, loaded as `oomwatch run` loads it by default on a
    // host without memory pressure (`--hot-probes pressure`: the hot
    // programs detached), against nothing loaded at all.
    let load_rounds = o.rounds.max(9) * 3;
    const STEPS: usize = 16;
    // Untimed steps after each load or unload: loading parses the kernel's
    // BTF (tens of MB allocated and freed), which leaves caches and the
    // page allocator's free lists unlike a steady state.
    const SETTLE: usize = 4;
    println!("probes: {load_rounds} rounds of oomwatch loaded and not loaded, {STEPS} steps each");
    let mut loaded_ratios = Vec::new();
    for r in 0..load_rounds {
        let mut medians = [0.0; 2];
        for k in 0..2 {
            let with = (r + k) % 2 == 1;
            let probes = if with {
                let mut p = oomwatch::ebpf::Probes::load_with(&oomwatch::ebpf::LoadOptions {
                    no_run_stats: true,
                    ..Default::default()
                })
                .context("load oomwatch's probes")?;
                p.set_hot_attached(false)?;
                Some(p)
            } else {
                None
            };
            for _ in 0..SETTLE {
                step(&mut storm)?;
            }
            let mut steps = (0..STEPS)
                .map(|_| step(&mut storm))
                .collect::<anyhow::Result<Vec<f64>>>()?;
            steps.sort_by(f64::total_cmp);
            medians[usize::from(with)] = percentile(&steps, 0.5);
            drop(probes);
        }
        loaded_ratios.push(medians[1] / medians[0]);
    }
    loaded_ratios.sort_by(f64::total_cmp);
    drop(storm);
    let loaded = med(&loaded_ratios);
    let loaded_table = format!(
        "| oomwatch | ratio to not loaded (median of {load_rounds} rounds) | middle half |\n|---|---:|---:|\n\
         | loaded as `oomwatch run` runs by default without memory pressure (hot programs detached) | {loaded:.3}× | {:.3}× – {:.3}× |\n",
        percentile(&loaded_ratios, 0.25),
        percentile(&loaded_ratios, 0.75)
    );
    println!("\n{loaded_table}");
    for v in ns
        .iter_mut()
        .chain(ratios.iter_mut())
        .chain(diffs.iter_mut())
    {
        v.sort_by(f64::total_cmp);
    }
    let per_fault_ns = med(&ns[0]) / faults as f64;
    let mut p2 = String::from(
        "| what is attached to the two hot events | median step (time on CPU) | ratio to the round's baseline step (median) | middle half of those ratios | added per fault (median) |\n|---|---:|---:|---:|---:|\n",
    );
    for (c, name) in [
        "nothing (baseline)",
        "nothing, again (A/A: how far the baseline differs from itself)",
        "oomwatch's programs (as `oomwatch run` attaches them under memory pressure, or with `--hot-probes always`)",
        "only an empty program on each (the kernel's dispatch alone)",
        "oomwatch's programs, the empty programs and run-time statistics (`--program-stats`)",
    ]
    .iter()
    .enumerate()
    {
        p2.push_str(&format!(
            "| {name} | {:.2} ms | {:.3}× | {:.3}× – {:.3}× | {:+.0} ns |\n",
            med(&ns[c]) / 1e6,
            med(&ratios[c]),
            percentile(&ratios[c], 0.25),
            percentile(&ratios[c], 0.75),
            med(&diffs[c]),
        ));
    }
    let mut p1 = String::from(
        "| program | events in the statistics steps | ns per event | floor: an empty program on the same event | the program's own ns per event (minus the floor) | own time as a share of a fault |\n|---|---:|---:|---:|---:|---:|\n",
    );
    let per_event = |name: &str| {
        per_prog
            .get(name)
            .filter(|(n, _)| *n > 0)
            .map(|(n, ns)| *ns as f64 / *n as f64)
    };
    let (mut worst_raw, mut worst_own) = (0.0f64, 0.0f64);
    let mut floors = Vec::new();
    let mut others = 0;
    for (name, (n, _)) in per_prog.iter().filter(|(_, (c, _))| *c > 0) {
        if floor.contains(&name.as_str()) {
            continue;
        }
        if !hot.contains(&name.as_str()) {
            others += n;
        }
        let raw = per_event(name).unwrap_or(f64::NAN);
        let floor = FLOORS
            .iter()
            .find(|(p, _)| p == name)
            .and_then(|(_, f)| per_event(f));
        let own = raw - floor.unwrap_or(0.0);
        worst_raw = worst_raw.max(raw);
        worst_own = worst_own.max(own);
        floors.extend(floor);
        p1.push_str(&format!(
            "| `{name}` | {n} | {raw:.1} | {} | {own:.1} | {:.4}× |\n",
            floor.map_or(
                "— (not a BTF tracepoint: not measured)".into(),
                |f| format!("{f:.1}")
            ),
            own / per_fault_ns
        ));
    }
    println!("\n{p2}\n{p1}");
    let hot_ratio = med(&ratios[2]);
    let floor_ratio = med(&ratios[3]);
    let (aa_lo, aa_hi) = (percentile(&ratios[1], 0.25), percentile(&ratios[1], 0.75));
    let floor_text = if floors.is_empty() {
        "no floor measured (no BTF tracepoints here)".to_owned()
    } else {
        format!(
            "an empty program on the same event reports {:.0} – {:.0} ns",
            floors.iter().copied().fold(f64::INFINITY, f64::min),
            floors.iter().copied().fold(0.0, f64::max)
        )
    };
    let verdicts = vec![
        Verdict {
            id: "P1",
            target: "≤ 40 ns per event (hot programs)".into(),
            measured: format!(
                "{worst_raw:.0} ns per event at most, as BPF_ENABLE_STATS reports it; {floor_text}; the programs' own work {worst_own:.0} ns at most"
            ),
            met: if worst_raw <= 40.0 {
                Met::Yes
            } else if worst_own <= 40.0 && !floors.is_empty() {
                Met::Bounded(format!(
                    "the programs' own work meets it; the figure as reported is bounded by \
                     the measurement: {floor_text} (the clock reads the statistics put around \
                     every run)"
                ))
            } else {
                Met::No
            },
        },
        Verdict {
            id: "P2",
            target: "< 1.02× on a page-fault storm, `oomwatch run` as it runs by default (no memory pressure: hot programs detached)".into(),
            measured: format!("{loaded:.3}× against nothing loaded"),
            met: if loaded < 1.02 { Met::Yes } else { Met::No },
        },
        Verdict {
            id: "P2",
            target: "< 1.02× on a page-fault storm, hot programs attached (under memory pressure, or `--hot-probes always`)".into(),
            measured: format!(
                "{hot_ratio:.3}× ({:+.0} ns per fault); an empty program on the same two events alone {floor_ratio:.3}×; the baseline against itself: middle half {aa_lo:.3}× – {aa_hi:.3}×",
                med(&diffs[2])
            ),
            met: if hot_ratio < 1.02 {
                Met::Yes
            } else if floor_ratio >= 1.02 {
                Met::Bounded(format!(
                    "bounded by the kernel: calling any BPF program on these two events, one \
                     that does nothing, costs {floor_ratio:.3}× here; hence `--hot-probes \
                     pressure`, the default"
                ))
            } else {
                Met::No
            },
        },
    ];
    Ok((
        format!(
            "\n## P2 probe overhead: a page-fault storm with and without oomwatch\n\n`oomwatch-hog \
         chunks`: a page-fault storm in steps, each step mapping {MIB} MiB of anonymous memory \
         in small pages, touching every page and unmapping it ({faults} faults and page \
         allocations), inside a limited memory cgroup; each step's time on CPU is the storm's \
         own (`CLOCK_THREAD_CPUTIME_ID`), so waits for a CPU on this shared machine stay out. \
         oomwatch's probes are loaded once, as `oomwatch run` loads them, and between steps \
         the programs on the two hot events (`kmem:mm_page_alloc`, \
         `exceptions:page_fault_user`) are detached or attached again; the other programs \
         stay attached throughout and ran {others} times over the statistics steps (they \
         fire on OOMs, reclaim and compaction, which a storm below its limit does not \
         cause). {rounds} rounds of five steps, one per row below, in an order that rotates \
         from round to round; each step is divided by the baseline step of its own round, \
         and the ratio is the median of those. Target < 1.02×.\n\n{p2}\nThe hot programs are \
         attached only under memory pressure by default (`--hot-probes pressure`), so on a \
         host without it `oomwatch run` costs what its other programs cost, which do not run \
         during a storm. Measured whole: {load_rounds} rounds of {STEPS} steps with \
         oomwatch's probes loaded that way and {STEPS} without any, the load and the unload \
         between them, each followed by {SETTLE} untimed steps, in alternating order; the \
         ratio of each round's median steps, median over the rounds.\n\n\
         {loaded_table}\n## P1 run time per \
         event of each hot eBPF program\n\nThe kernel's own statistics (BPF_ENABLE_STATS: run \
         time and run count per program) over the statistics steps above, as ns per event. \
         `kmem:mm_page_alloc` runs on every page allocation: `page_alloc_btf`, its BTF \
         tracepoint (the call's arguments, no record built per event), where the kernel has \
         BTF for it, else the classic tracepoint `page_alloc`; `user_fault_btf` / \
         `user_fault` likewise on every user page fault (x86). The statistics time each run \
         between two clock reads, so even a program that does nothing reports a cost: the \
         floor column is an empty program attached to the same event over the same steps \
         (`floor_alloc`, `floor_fault`). The last column sets the program's own time against \
         the baseline's time per fault ({per_fault_ns:.0} ns). Target ≤ 40 ns per \
         event.\n\n{p1}"
        ),
        verdicts,
    ))
}

/// `oomwatch run` on a free loopback port, killed when dropped.
struct Daemon {
    child: std::process::Child,
    addr: String,
}

impl Daemon {
    fn start() -> anyhow::Result<Self> {
        let port = std::net::TcpListener::bind("127.0.0.1:0")?
            .local_addr()?
            .port();
        let addr = format!("127.0.0.1:{port}");
        let child = std::process::Command::new(sibling("oomwatch")?)
            .args(["run", "--listen", &addr])
            .stderr(std::process::Stdio::null())
            .spawn()
            .context("start oomwatch run")?;
        let d = Daemon { child, addr };
        let deadline = Instant::now() + Duration::from_secs(30);
        while http_get(&d.addr, "/metrics").is_none() {
            if Instant::now() > deadline {
                bail!("oomwatch run did not serve /metrics within 30 s");
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        Ok(d)
    }

    fn kills(&self) -> f64 {
        http_get(&self.addr, "/metrics")
            .and_then(|b| sample(&b, "oomwatch_oom_kills_total"))
            .unwrap_or(0.0)
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// P4.
fn latency(o: &Options) -> anyhow::Result<(String, Vec<Verdict>)> {
    use std::io::BufRead as _;
    let hog = sibling("oomwatch-hog")?;
    let daemon = Daemon::start()?;
    // Each episode from the daemon's /events: the victim and the time the
    // kernel marked it (CLOCK_BOOTTIME, from mark_victim).
    let mut watch = std::process::Command::new(sibling("oomwatch")?)
        .args(["watch", "--json", "--from", &daemon.addr])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::null())
        .spawn()
        .context("start oomwatch watch")?;
    let out = watch.stdout.take().context("watch stdout")?;
    let (tx, rx) = std::sync::mpsc::channel::<(i64, u64)>();
    std::thread::spawn(move || {
        for line in std::io::BufReader::new(out).lines().map_while(Result::ok) {
            if let Ok(v) = serde_json::from_str::<serde_json::Value>(&line)
                && let (Some(pid), Some(ns)) =
                    (v["victim"]["pid"].as_i64(), v["victim"]["boot_ns"].as_u64())
            {
                let _ = tx.send((pid, ns));
            }
        }
    });
    std::thread::sleep(Duration::from_millis(500));
    let memcg = MemcgGuard::create(32 << 20).context("create the OOM's memory cgroup")?;
    println!("latency: {} memcg OOM kills", o.kills);
    let (mut via_metrics, mut via_cgroup) = (Vec::new(), Vec::new());
    for _ in 0..o.kills {
        let (before, cg_before) = (daemon.kills(), memcg.oom_kills()?);
        let mut h = Hog::start(&hog, &memcg, 48)?;
        let pid = h.pid() as i64;
        let (mut seen_m, mut seen_c) = (None, None);
        let deadline = Instant::now() + Duration::from_secs(10);
        while (seen_m.is_none() || seen_c.is_none()) && Instant::now() < deadline {
            if seen_c.is_none() && memcg.oom_kills()? > cg_before {
                seen_c = Some(oomwatch::daemon::oomstart::boot_ns());
            }
            if seen_m.is_none() && daemon.kills() > before {
                seen_m = Some(oomwatch::daemon::oomstart::boot_ns());
            }
        }
        if h.wait_exit(Duration::from_secs(10)).is_none() {
            bail!("a 48 MiB hog survived a 32 MiB limit");
        }
        let marked = loop {
            match rx.recv_timeout(Duration::from_secs(10)) {
                Ok((p, ns)) if p == pid => break ns,
                Ok(_) => continue,
                Err(_) => bail!("the daemon reported no episode for the kill of {pid}"),
            }
        };
        let (m, c) = (
            seen_m.context("the kill never reached /metrics")?,
            seen_c.context("the kill never reached the memcg's counter")?,
        );
        via_metrics.push(m.saturating_sub(marked) as f64 / 1e6);
        via_cgroup.push(c.saturating_sub(marked) as f64 / 1e6);
    }
    let _ = watch.kill();
    let _ = watch.wait();
    for v in [&mut via_metrics, &mut via_cgroup] {
        v.sort_by(f64::total_cmp);
    }
    let base99 = percentile(&via_cgroup, 0.99);
    let mut t = String::from(
        "| kill visible in | p50 | p99 | max | p99 ratio to baseline |\n|---|---:|---:|---:|---:|\n",
    );
    for (name, v) in [
        ("the memcg's own `oom_kill` counter (baseline)", &via_cgroup),
        ("oomwatch's `/metrics`", &via_metrics),
    ] {
        t.push_str(&format!(
            "| {name} | {:.2} ms | {:.2} ms | {:.2} ms | {:.2}× |\n",
            percentile(v, 0.5),
            percentile(v, 0.99),
            v.last().copied().unwrap_or(f64::NAN),
            percentile(v, 0.99) / base99
        ));
    }
    println!("\n{t}");
    let p99 = percentile(&via_metrics, 0.99);
    let verdicts = vec![Verdict {
        id: "P4",
        target: "< 50 ms from `mark_victim` to `/metrics` at the 99th percentile".into(),
        measured: format!(
            "{p99:.1} ms over {} memcg OOM kills (the memcg's own counter: {base99:.1} ms)",
            o.kills
        ),
        met: if p99 < 50.0 { Met::Yes } else { Met::No },
    }];
    Ok((
        format!(
            "\n## P4 kill-to-metric latency\n\nFrom the kernel's `mark_victim` (its CLOCK_BOOTTIME \
         stamp, carried in the daemon's episode) to the kill being counted on `/metrics`, over \
         {} memcg OOMs (a 48 MiB task in a 32 MiB cgroup, each killed). One loop polls both \
         `/metrics` (an HTTP request) and the memcg's `oom_kill` counter (a file read: what a \
         script watching cgroupfs sees; the baseline). Target < 50 ms at the 99th \
         percentile.\n\n{t}",
            o.kills
        ),
        verdicts,
    ))
}

/// A process's CPU time and memory at one moment.
#[derive(Clone)]
struct Usage {
    /// utime + stime from `/proc/PID/stat`, in seconds (clock ticks: 10 ms
    /// steps), dead threads included.
    ticks: f64,
    /// Per live thread: tid → time on CPU (`/proc/PID/task/TID/schedstat`,
    /// ns).
    threads: std::collections::BTreeMap<u32, u64>,
    rss_kb: u64,
    hwm_kb: u64,
}

fn usage(pid: u32) -> anyhow::Result<Usage> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat"))?;
    let rest = stat.rsplit_once(") ").context("stat")?.1;
    let f: Vec<&str> = rest.split_whitespace().collect();
    // SAFETY: sysconf with a constant name.
    let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) } as f64;
    let ticks = (f[11].parse::<f64>()? + f[12].parse::<f64>()?) / hz;
    let mut threads = std::collections::BTreeMap::new();
    for e in std::fs::read_dir(format!("/proc/{pid}/task"))? {
        let e = e?;
        let Some(tid) = e.file_name().to_str().and_then(|t| t.parse().ok()) else {
            continue;
        };
        if let Some(ns) = std::fs::read_to_string(e.path().join("schedstat"))
            .ok()
            .and_then(|t| t.split_whitespace().next()?.parse().ok())
        {
            threads.insert(tid, ns);
        }
    }
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))?;
    let kb = |key: &str| {
        status
            .lines()
            .find_map(|l| l.strip_prefix(key))
            .and_then(|v| v.split_whitespace().next()?.parse().ok())
            .unwrap_or(0)
    };
    Ok(Usage {
        ticks,
        threads,
        rss_kb: kb("VmRSS:"),
        hwm_kb: kb("VmHWM:"),
    })
}

/// CPU seconds between two samples: the per-thread nanosecond counters
/// when the same threads lived through the window, else the clock ticks.
fn cpu_between(a: &Usage, b: &Usage) -> f64 {
    if a.threads.keys().eq(b.threads.keys()) && !a.threads.is_empty() {
        let sum = |u: &Usage| u.threads.values().sum::<u64>();
        (sum(b) - sum(a)) as f64 / 1e9
    } else {
        b.ticks - a.ticks
    }
}

/// P5.
fn daemon_cost(o: &Options) -> anyhow::Result<(String, Vec<Verdict>)> {
    const TASKS: usize = 1_000;
    let hog = sibling("oomwatch-hog")?;
    let memcg = MemcgGuard::create(1 << 30).context("create the sleepers' memory cgroup")?;
    let mut spawner = Hog::start_mode(&hog, &memcg, 1, &["spawn", &TASKS.to_string()])?;
    if !spawner.wait_ready() {
        bail!("the spawner did not start {TASKS} processes");
    }
    let daemon = Daemon::start()?;
    let mut base = std::process::Command::new(std::env::current_exe()?)
        .args(["--earlyoom-loop", &(o.seconds + 10).to_string()])
        .spawn()
        .context("start the baseline loop")?;
    println!("daemon: {TASKS} extra processes, {} s measured", o.seconds);
    std::thread::sleep(Duration::from_secs(5));
    let (d0, b0, w0) = (usage(daemon.child.id())?, usage(base.id())?, Instant::now());
    std::thread::sleep(Duration::from_secs(o.seconds));
    let (d1, b1, wall) = (
        usage(daemon.child.id())?,
        usage(base.id())?,
        w0.elapsed().as_secs_f64(),
    );
    let _ = base.kill();
    let _ = base.wait();
    drop(daemon);
    drop(spawner);
    drop(memcg);
    reap();
    let pct = |a: &Usage, b: &Usage| cpu_between(a, b) / wall * 100.0;
    let (dc, bc) = (pct(&d0, &d1), pct(&b0, &b1));
    let mut t = String::from(
        "| process | CPU (% of one core) | RSS | peak RSS | CPU ratio | RSS ratio |\n|---|---:|---:|---:|---:|---:|\n",
    );
    t.push_str(&format!(
        "| earlyoom-like loop: every `/proc/PID/oom_score` each second (baseline) | {bc:.3} % | {:.1} MB | {:.1} MB | 1.00× | 1.00× |\n",
        b1.rss_kb as f64 / 1024.0,
        b1.hwm_kb as f64 / 1024.0
    ));
    t.push_str(&format!(
        "| `oomwatch run` (1 s prediction passes, probes loaded as by default: no memory pressure, hot programs detached) | {dc:.3} % | {:.1} MB | {:.1} MB | {:.2}× | {:.2}× |\n",
        d1.rss_kb as f64 / 1024.0,
        d1.hwm_kb as f64 / 1024.0,
        dc / bc,
        d1.rss_kb as f64 / b1.rss_kb.max(1) as f64
    ));
    println!("\n{t}");
    let rss_mb = d1.rss_kb as f64 / 1024.0;
    let verdicts = vec![
        Verdict {
            id: "P5",
            target: format!("RSS < 20 MB at a 1 s refresh with {TASKS} tasks"),
            measured: format!(
                "{rss_mb:.1} MB (peak {:.1} MB, while the kernel's BTF is parsed at start)",
                d1.hwm_kb as f64 / 1024.0
            ),
            met: if rss_mb < 20.0 { Met::Yes } else { Met::No },
        },
        Verdict {
            id: "P5",
            target: format!("CPU < 0.5 % of one core at a 1 s refresh with {TASKS} tasks"),
            measured: format!("{dc:.3} % (the earlyoom-like loop: {bc:.3} %)"),
            met: if dc < 0.5 { Met::Yes } else { Met::No },
        },
    ];
    Ok((
        format!(
            "\n## P5 the daemon's footprint\n\n`oomwatch run` with its defaults (a prediction pass \
         every second: a snapshot of every task, every OOM domain ranked, the self-check) and \
         {TASKS} extra sleeping processes alive, measured over {} s after a 5 s warm-up \
         (time on CPU summed over the process's threads from `/proc/PID/task/TID/schedstat`, \
         in nanoseconds, or utime + stime from `/proc/PID/stat` if a thread came or went; \
         VmRSS and VmHWM), beside a process doing what \
         earlyoom does each second over the same window. Target < 20 MB and < 0.5 % of one \
         core.\n\n{t}",
            o.seconds
        ),
        verdicts,
    ))
}

/// The P5 baseline: once a second, read and rank every `/proc/PID/oom_score`.
fn earlyoom_loop(secs: u64) -> anyhow::Result<()> {
    let end = Instant::now() + Duration::from_secs(secs);
    while Instant::now() < end {
        let t = Instant::now();
        baseline()?;
        std::thread::sleep(Duration::from_secs(1).saturating_sub(t.elapsed()));
    }
    Ok(())
}

/// What one prediction pass said about the workload's cgroup.
#[derive(Debug, Clone)]
struct Seen {
    /// Seconds from the workload's start to the pass's end.
    at: f64,
    time_to_oom: TimeToOom,
    victim_now: Option<i32>,
    victim_at_oom: Option<i32>,
    /// Bytes above what reclaim cannot free, and above everything charged.
    unreclaimable_headroom: Option<u64>,
    headroom: Option<u64>,
}

/// One workload run to its kill (or to its end, for the churn).
struct Backtest {
    workload: &'static str,
    /// Seconds from the start to the kill; None: no OOM.
    killed_after: Option<f64>,
    /// The pid the kernel killed.
    victim: Option<i32>,
    seen: Vec<Seen>,
}

/// What the last pass at or before `fraction` of the time to the kill said.
struct AtFraction<'a> {
    seen: &'a Seen,
    /// Seconds really left then.
    left: f64,
}

impl Backtest {
    fn at(&self, fraction: f64) -> Option<AtFraction<'_>> {
        let t = self.killed_after?;
        let seen = self.seen.iter().rfind(|s| s.at <= fraction * t)?;
        Some(AtFraction {
            seen,
            left: t - seen.at,
        })
    }
}

impl AtFraction<'_> {
    /// The forecast's error as a share of the time really left (positive:
    /// the kill came sooner than forecast).
    fn off(&self) -> Option<f64> {
        match self.seen.time_to_oom {
            TimeToOom::In { seconds, .. } => Some((seconds - self.left) / self.left),
            _ => None,
        }
    }

    fn cell(&self) -> String {
        match self.seen.time_to_oom {
            TimeToOom::In {
                seconds,
                error_seconds,
            } => format!(
                "{seconds:.1} ± {error_seconds:.1} s (at {:.1} s; {:.1} s left: {:+.0} %)",
                self.seen.at,
                self.left,
                self.off().unwrap_or(f64::NAN) * 100.0
            ),
            TimeToOom::NotGrowing => format!("not growing (at {:.1} s)", self.seen.at),
            TimeToOom::Unknown => format!("too few passes (at {:.1} s)", self.seen.at),
        }
    }
}

/// Runs `hogs` (already started in `memcg`) with a prediction pass every
/// second, as the daemon runs them (`pass::refresh`, then `pass::forecast`),
/// until one of them is killed or `max` has passed.
fn backtest(
    workload: &'static str,
    snapper: &mut oomwatch::snapshot::Snapshotter,
    memcg: &MemcgGuard,
    hogs: &mut [Hog],
    start: Instant,
    max: Duration,
) -> anyhow::Result<Backtest> {
    let mut forecaster = oomwatch::forecast::Forecaster::default();
    let kills_before = memcg.oom_kills()?;
    let mut seen = Vec::new();
    let mut next = start;
    loop {
        let (mut domains, _) = pass::refresh(snapper, Path::new("/proc"), 3)?;
        pass::forecast(
            &mut forecaster,
            &mut domains,
            oomwatch::daemon::oomstart::boot_ns(),
        );
        let at = start.elapsed().as_secs_f64();
        if let Some(d) = domains
            .iter()
            .find(|d| d.cgroup.as_deref() == Some(memcg.path.as_str()))
        {
            let f = d.forecast.as_ref();
            seen.push(Seen {
                at,
                time_to_oom: f.map_or(TimeToOom::Unknown, |f| f.time_to_oom),
                victim_now: d.victim.as_ref().map(|v| v.tgid),
                victim_at_oom: f.and_then(|f| f.victim_at_oom).map(|v| v.0),
                unreclaimable_headroom: d.unreclaimable_headroom_bytes,
                headroom: d.headroom_bytes,
            });
        }
        next += Duration::from_secs(1);
        // Until the next pass: watch for the kill every 5 ms.
        while Instant::now() < next {
            for h in hogs.iter_mut() {
                if let Some(status) = h.try_wait() {
                    let after = start.elapsed().as_secs_f64();
                    if !oomwatch_tests::killed_by_sigkill(&status) {
                        bail!("{workload}: a hog ended on its own ({status:?})");
                    }
                    if memcg.oom_kills()? <= kills_before {
                        bail!("{workload}: a hog was killed, but not by the memcg's OOM killer");
                    }
                    return Ok(Backtest {
                        workload,
                        killed_after: Some(after),
                        victim: Some(h.pid() as i32),
                        seen,
                    });
                }
            }
            if start.elapsed() >= max {
                return Ok(Backtest {
                    workload,
                    killed_after: None,
                    victim: None,
                    seen,
                });
            }
            std::thread::sleep(Duration::from_millis(5));
        }
    }
}

/// A file of `mib` MiB on a disk filesystem (not tmpfs: its pages must be
/// page cache that reclaim can drop), synced and dropped from the cache,
/// so a reader in a memory cgroup charges every page it reads there.
fn cold_file(mib: usize) -> anyhow::Result<tempfile::NamedTempFile> {
    use std::os::fd::AsRawFd as _;
    let f = tempfile::NamedTempFile::new_in("/var/tmp").context("a file in /var/tmp")?;
    let chunk = vec![0x5au8; 1 << 20];
    for _ in 0..mib {
        f.as_file().write_all(&chunk)?;
    }
    f.as_file().sync_all()?;
    // SAFETY: advice on an open descriptor.
    let r =
        unsafe { libc::posix_fadvise(f.as_file().as_raw_fd(), 0, 0, libc::POSIX_FADV_DONTNEED) };
    if r != 0 {
        bail!("posix_fadvise(DONTNEED): error {r}");
    }
    Ok(f)
}

/// The forecast backtest's workloads run to a kill: name, a task that
/// stays (MiB, started first), the leak's `oomwatch-hog 256` mode.
const TO_A_KILL: [(&str, Option<usize>, &[&str]); 3] = [
    ("steady leak", None, &["leak", "2048"]),
    ("step (8 MiB every 4 s)", None, &["leak", "2048", "4000"]),
    (
        "overtaking (24 MiB, and a 1.5 MiB/s leak)",
        Some(24),
        &["leak", "1536"],
    ),
];

/// The forecast backtest: real workloads in a 64 MiB memory cgroup, run
/// to a real kill with a prediction pass every second.
fn forecast(o: &Options) -> anyhow::Result<(String, Vec<Verdict>)> {
    let hog = sibling("oomwatch-hog")?;
    let mut snapper =
        oomwatch::cli::predict::open_source(oomwatch::snapshot::Source::Auto, Path::new("/proc"))?;
    let limit = 64u64 << 20;
    let churn_file = cold_file(256)?;
    let mut runs: Vec<Backtest> = Vec::new();
    for round in 0..o.runs {
        println!("forecast: round {} of {}", round + 1, o.runs);
        // Each to a kill: (workload, a task that stays, started first
        // (MiB), the leak's mode). The steady leak: 2 MiB a second. The
        // staircase: 8 MiB at once every 4 s (2 MiB a second on average).
        // Overtaking: 24 MiB that stays, and a leak of 1.5 MiB a second
        // that passes it about two thirds of the way to the kill.
        for (workload, stays, leak) in TO_A_KILL {
            let memcg = MemcgGuard::create(limit)?;
            let mut hogs = Vec::new();
            if let Some(mib) = stays {
                let mut big = Hog::start(&hog, &memcg, mib)?;
                if !big.wait_ready() {
                    bail!("{workload}: the {mib} MiB task did not get its memory");
                }
                hogs.push(big);
            }
            let start = Instant::now();
            hogs.push(Hog::start_mode(&hog, &memcg, 256, leak)?);
            runs.push(backtest(
                workload,
                &mut snapper,
                &memcg,
                &mut hogs,
                start,
                Duration::from_secs(120),
            )?);
        }
        // Cache churn: 8 MiB of anonymous memory, and a 256 MiB file read
        // over and over: the limit fills with file pages; no OOM.
        {
            let memcg = MemcgGuard::create(limit)?;
            let path = churn_file.path().to_str().context("a non-UTF-8 path")?;
            let mut reader = Hog::start_mode(&hog, &memcg, 8, &["churn", path])?;
            if !reader.wait_ready() {
                bail!("churn: the reader did not start");
            }
            let start = Instant::now();
            let mut hogs = vec![reader];
            let run = backtest(
                "cache churn (256 MiB file read again and again)",
                &mut snapper,
                &memcg,
                &mut hogs,
                start,
                Duration::from_secs(o.seconds.max(30)),
            )?;
            if run.killed_after.is_some() {
                bail!("churn: the reader was OOM-killed");
            }
            runs.push(run);
        }
    }
    reap();
    forecast_report(o, &runs, limit)
}

fn forecast_report(
    o: &Options,
    runs: &[Backtest],
    limit: u64,
) -> anyhow::Result<(String, Vec<Verdict>)> {
    let mib = |b: u64| b as f64 / (1u64 << 20) as f64;
    let who = |p: Option<i32>, victim: Option<i32>| match (p, victim) {
        (None, _) => "none".to_owned(),
        (Some(p), Some(v)) if p == v => "the victim".to_owned(),
        (Some(_), _) => "**another task**".to_owned(),
    };
    let mut t = String::from(
        "| workload | killed after | forecast at 50 % of the time to the kill | at 80 % | victim now, growth-aware victim at 50 % | at 80 % |\n|---|---:|---|---|---|---|\n",
    );
    let mut churn = String::new();
    let (mut leak_offs, mut overtakes, mut overtakes_right) = (Vec::new(), 0, 0);
    let mut churn_min = f64::INFINITY;
    let mut churn_passes = 0;
    for r in runs {
        let Some(killed) = r.killed_after else {
            // The churn: every pass's forecast, and how full the limit got.
            let shortest = r
                .seen
                .iter()
                .filter_map(|s| match s.time_to_oom {
                    TimeToOom::In { seconds, .. } => Some(seconds),
                    _ => None,
                })
                .fold(f64::INFINITY, f64::min);
            churn_min = churn_min.min(shortest);
            churn_passes += r.seen.len();
            let fullest = r.seen.iter().filter_map(|s| s.headroom).min().unwrap_or(0);
            let unrecl = r
                .seen
                .iter()
                .filter_map(|s| s.unreclaimable_headroom)
                .min()
                .unwrap_or(0);
            let finite = r
                .seen
                .iter()
                .filter(|s| matches!(s.time_to_oom, TimeToOom::In { .. }))
                .count();
            churn.push_str(&format!(
                "| {} | {} passes over {:.0} s | {:.1} MiB of {:.0} MiB | {:.1} MiB | {} | {} |\n",
                r.workload,
                r.seen.len(),
                r.seen.last().map_or(0.0, |s| s.at),
                mib(fullest),
                mib(limit),
                mib(unrecl),
                finite,
                if shortest.is_finite() {
                    format!("{shortest:.0} s")
                } else {
                    "none".into()
                }
            ));
            continue;
        };
        let cells: Vec<(String, String)> = [0.5, 0.8]
            .iter()
            .map(|&f| match r.at(f) {
                Some(a) => {
                    if r.workload.starts_with("steady") && f == 0.5 {
                        leak_offs.push(a.off());
                    }
                    if r.workload.starts_with("overtaking") && a.seen.victim_now != r.victim {
                        overtakes += 1;
                        if a.seen.victim_at_oom == r.victim {
                            overtakes_right += 1;
                        }
                    }
                    (
                        a.cell(),
                        format!(
                            "{}, {}",
                            who(a.seen.victim_now, r.victim),
                            who(a.seen.victim_at_oom, r.victim)
                        ),
                    )
                }
                None => ("no pass yet".into(), "–".into()),
            })
            .collect();
        t.push_str(&format!(
            "| {} | {killed:.1} s | {} | {} | {} | {} |\n",
            r.workload, cells[0].0, cells[1].0, cells[0].1, cells[1].1
        ));
    }
    println!("\n{t}\n{churn}");
    let worst_leak = leak_offs
        .iter()
        .map(|o| o.map_or(f64::INFINITY, f64::abs))
        .fold(0.0, f64::max);
    let verdicts = vec![
        Verdict {
            id: "F1",
            target: "steady leak: the forecast at half the time to the kill within ±20 %".into(),
            measured: format!(
                "worst {:.0} % over {} runs",
                worst_leak * 100.0,
                leak_offs.len()
            ),
            met: if !leak_offs.is_empty() && worst_leak <= 0.20 {
                Met::Yes
            } else {
                Met::No
            },
        },
        Verdict {
            id: "F2",
            target:
                "overtaking: where the victim now is not the kernel's, the growth-aware victim is"
                    .into(),
            measured: format!("{overtakes_right} of {overtakes} such passes"),
            met: if overtakes > 0 && overtakes_right == overtakes {
                Met::Yes
            } else {
                Met::No
            },
        },
        Verdict {
            id: "F3",
            target: "cache churn: no forecast under 10 minutes".into(),
            measured: if churn_min.is_finite() {
                format!("shortest {churn_min:.0} s over {churn_passes} passes")
            } else {
                format!("no finite forecast in {churn_passes} passes")
            },
            met: if churn_passes > 0 && churn_min >= 600.0 {
                Met::Yes
            } else {
                Met::No
            },
        },
    ];
    Ok((
        format!(
            "\n## F1–F3 forecast backtest: time to OOM and the growth-aware victim\n\n\
             Real workloads in a {:.0} MiB memory cgroup, each run to a real memcg OOM kill \
             (the kernel is the oracle), {} rounds. A prediction pass every second, as the \
             daemon runs them (`pass::refresh`, then `pass::forecast`: a robust trend \
             (Theil–Sen, and a Mann–Kendall test that the passes fall in order) over the last \
             minute of the headroom reclaim cannot give back, and each task's \
             points on its own trend). For each kill, the last pass at or before 50 % and \
             80 % of the time from the start to the kill: its forecast against the time \
             really left, and whether the victim now (the scan's) and the growth-aware victim \
             (the scan at the forecast OOM) are the task the kernel killed.\n\n\
             - steady leak: `oomwatch-hog 256 leak 2048` (2 MiB a second, in 10 steps a second);\n\
             - step: `oomwatch-hog 256 leak 2048 4000` (8 MiB at once every 4 s);\n\
             - overtaking: a 24 MiB task that stays, then `oomwatch-hog 256 leak 1536`, which \
             passes it about two thirds of the way to the kill;\n\
             - cache churn: 8 MiB of anonymous memory and a 256 MiB file (on disk, synced, \
             dropped from the cache) read from end to end again and again for {} s: the limit \
             fills with clean file pages that reclaim takes back, and nothing is killed.\n\n\
             {t}\n\
             | cache churn | passes | least headroom above everything charged | least headroom above what reclaim cannot free | passes with a finite forecast | shortest forecast |\n\
             |---|---:|---:|---:|---:|---:|\n{churn}",
            mib(limit),
            o.runs,
            o.seconds.max(30)
        ),
        verdicts,
    ))
}

#[cfg(test)]
mod tests {
    use super::splice;

    #[test]
    fn a_partial_run_replaces_its_sections_and_targets_only() {
        let old = "# Benchmarks\n\nintro\n\n## P3 scan\n\nold scan\n\n## P4 latency\n\nold latency\n\n\
                   ## Where the targets stand\n\nGenerated.\n\n| | target | measured | met |\n|---|---|---|---|\n\
                   | P3 | a | 1 | yes |\n| P4 | b | 2 | yes |\n| P5 | c | 3 | yes |\n| P5 | d | 4 | yes |\n";
        let new = vec![
            "\n## P4 latency\n\nnew latency\n".to_owned(),
            "\n## F1–F3 forecast\n\nnew forecast\n".to_owned(),
        ];
        let summary = "\n## Where the targets stand\n\nGenerated.\n\n| | target | measured | met |\n|---|---|---|---|\n\
                       | F1 | e | 5 | yes |\n| P4 | b | 9 | **no** |\n";
        let out = splice(old, &new, summary, "host X");
        assert!(out.starts_with("# Benchmarks\n\nintro\n\n## P3 scan\n\nold scan\n\n## P4 latency\n\nnew latency\n\nThis section was measured alone"), "{out}");
        assert!(!out.contains("old latency"), "{out}");
        let forecast = out.find("## F1–F3 forecast").expect(&out);
        let targets = out.find("## Where the targets stand").expect(&out);
        assert!(forecast < targets, "{out}");
        assert!(
            out.ends_with("| | target | measured | met |\n|---|---|---|---|\n| F1 | e | 5 | yes |\n| P3 | a | 1 | yes |\n| P4 | b | 9 | **no** |\n| P5 | c | 3 | yes |\n| P5 | d | 4 | yes |\n"),
            "{out}"
        );
    }
}
