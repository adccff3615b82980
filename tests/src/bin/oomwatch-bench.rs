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
//!
//! `oomwatch-bench [--only scan,probes,latency,daemon] [--tasks N]...
//! [--rounds R] [--kills N] [--seconds S] [--markdown FILE]`

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
    let mut o = Options {
        tasks: Vec::new(),
        rounds: 9,
        kills: 25,
        seconds: 30,
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
            "--only" => {
                only = Some(
                    args.next()
                        .context("--only scan,probes,latency,daemon")?
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
                    "usage: oomwatch-bench [--only scan,probes,latency,daemon] [--tasks N]... \
                     [--rounds R] [--kills N] [--seconds S] [--markdown FILE]"
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
    let all = ["scan", "probes", "latency", "daemon"];
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
    if want("scan") {
        doc.push_str(&scan(&o)?);
    }
    if want("probes") {
        doc.push_str(&probes(&o)?);
    }
    if want("latency") {
        doc.push_str(&latency(&o)?);
    }
    if want("daemon") {
        doc.push_str(&daemon_cost(&o)?);
    }
    if let Some(path) = markdown {
        std::fs::write(&path, doc).with_context(|| format!("write {}", path.display()))?;
        println!("written to {}", path.display());
    }
    Ok(())
}

struct Options {
    tasks: Vec<usize>,
    rounds: usize,
    kills: usize,
    seconds: u64,
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
fn scan(o: &Options) -> anyhow::Result<String> {
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
    Ok(format!(
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
         into processes. `--source proc` misses the target: six files per process.\n",
        load.as_secs_f64() * 1e3
    ))
}

fn percentile(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i.min(sorted.len() - 1)]
}

/// P1 and P2.
fn probes(o: &Options) -> anyhow::Result<String> {
    const MIB: usize = 64;
    const LOOPS: usize = 16;
    let faults = (MIB << 20) / 4096 * LOOPS;
    let hog = sibling("oomwatch-hog")?;
    let memcg = MemcgGuard::create(512 << 20).context("create the storm's memory cgroup")?;
    let run = || -> anyhow::Result<Duration> {
        let start = Instant::now();
        let mut h = Hog::start_mode(&hog, &memcg, MIB, &["storm", &LOOPS.to_string()])?;
        if !h.wait_ready() {
            bail!("the page-fault storm did not finish");
        }
        Ok(start.elapsed())
    };
    // A storm's time varies by several percent from run to run here: at
    // least 15 rounds for a median that can tell 2 % apart.
    let rounds = o.rounds.max(15);
    println!("probes: {rounds} rounds of a {faults}-fault storm, without and with oomwatch");
    run()?; // warm-up
    let (mut off, mut on, mut bare) = (Vec::new(), Vec::new(), Vec::new());
    // Program name → (events, run time ns) over the attached runs.
    let mut per_prog: std::collections::BTreeMap<String, (u64, u128)> = Default::default();
    for r in 0..rounds {
        // Without, with (as the daemon runs: run-time statistics on), and
        // with the statistics off; the order rotates from round to round.
        for k in 0..3 {
            let way = (r + k) % 3;
            if way == 0 {
                off.push(run()?);
                continue;
            }
            let opts = oomwatch::ebpf::LoadOptions {
                no_run_stats: way == 2,
                ..Default::default()
            };
            let probes =
                oomwatch::ebpf::Probes::load_with(&opts).context("load oomwatch's probes")?;
            if way == 2 {
                bare.push(run()?);
                continue;
            }
            let before = probes.program_stats();
            on.push(run()?);
            for a in probes.program_stats() {
                let b = before.iter().find(|b| b.name == a.name);
                let e = per_prog.entry(a.name.clone()).or_default();
                e.0 += a.run_count - b.map_or(0, |b| b.run_count);
                e.1 += (a.run_time - b.map_or(Duration::ZERO, |b| b.run_time)).as_nanos();
            }
        }
    }
    let (m_off, m_on, m_bare) = (median(&mut off), median(&mut on), median(&mut bare));
    let ratio = m_on.as_secs_f64() / m_off.as_secs_f64();
    let ratio_bare = m_bare.as_secs_f64() / m_off.as_secs_f64();
    let per_fault_ns = m_off.as_secs_f64() * 1e9 / faults as f64;
    let mut p2 =
        String::from("| page-fault storm | median | ratio to without |\n|---|---:|---:|\n");
    p2.push_str(&format!(
        "| without oomwatch (baseline) | {:.1} ms | 1.000× |\n| with oomwatch's probes attached and run-time statistics on (`--program-stats`) | {:.1} ms | {ratio:.3}× |\n| with the probes attached, statistics off (as `oomwatch run` runs by default) | {:.1} ms | {ratio_bare:.3}× |\n",
        m_off.as_secs_f64() * 1e3,
        m_on.as_secs_f64() * 1e3,
        m_bare.as_secs_f64() * 1e3
    ));
    let mut p1 = String::from(
        "| program | events in the attached runs | ns per event | ratio to the storm's time per fault |\n|---|---:|---:|---:|\n",
    );
    for (name, (n, ns)) in per_prog.iter().filter(|(_, (n, _))| *n > 0) {
        let per = *ns as f64 / *n as f64;
        p1.push_str(&format!(
            "| `{name}` | {n} | {per:.1} | {:.4}× |\n",
            per / per_fault_ns
        ));
    }
    println!("\n{p2}\n{p1}");
    Ok(format!(
        "\n## P2 probe overhead: a page-fault storm with and without oomwatch\n\n`oomwatch-hog \
         storm`: {LOOPS} times, map {MIB} MiB of anonymous memory in small pages, touch every \
         page, unmap ({faults} faults and page allocations a run), inside a limited memory \
         cgroup. {} rounds; each round runs it without oomwatch, with oomwatch's probe set \
         loaded and attached as `oomwatch run` attaches it with `--program-stats` \
         (BPF_ENABLE_STATS on), and with the same probes and the statistics off (the \
         default), in an order that rotates from round to round; medians. Target < 1.02×.\n\n{p2}\n## P1 run time per event of each hot eBPF \
         program\n\nThe kernel's own statistics (BPF_ENABLE_STATS: run time and run count per \
         program) over the attached storms, as ns per event, and as a share of the storm's \
         time per fault without oomwatch ({per_fault_ns:.0} ns, the baseline). \
         `kmem:mm_page_alloc` runs on every page allocation: `page_alloc_btf`, its BTF \
         tracepoint (the call's arguments, no record built per event), where the kernel has \
         BTF for it, else the classic tracepoint `page_alloc`; `user_fault_btf` / \
         `user_fault` likewise on every user page fault (x86). Target ≤ 40 ns \
         per event. The statistics themselves add two clock reads per run.\n\n{p1}",
        rounds
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
fn latency(o: &Options) -> anyhow::Result<String> {
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
                seen_c = Some(oomwatch::oomstart::boot_ns());
            }
            if seen_m.is_none() && daemon.kills() > before {
                seen_m = Some(oomwatch::oomstart::boot_ns());
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
    Ok(format!(
        "\n## P4 kill-to-metric latency\n\nFrom the kernel's `mark_victim` (its CLOCK_BOOTTIME \
         stamp, carried in the daemon's episode) to the kill being counted on `/metrics`, over \
         {} memcg OOMs (a 48 MiB task in a 32 MiB cgroup, each killed). One loop polls both \
         `/metrics` (an HTTP request) and the memcg's `oom_kill` counter (a file read: what a \
         script watching cgroupfs sees; the baseline). Target < 50 ms at the 99th \
         percentile.\n\n{t}",
        o.kills
    ))
}

/// (utime + stime in seconds, VmRSS kB, VmHWM kB) of `pid`.
fn usage(pid: u32) -> anyhow::Result<(f64, u64, u64)> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat"))?;
    let rest = stat.rsplit_once(") ").context("stat")?.1;
    let f: Vec<&str> = rest.split_whitespace().collect();
    // SAFETY: sysconf with a constant name.
    let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) } as f64;
    let cpu = (f[11].parse::<f64>()? + f[12].parse::<f64>()?) / hz;
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))?;
    let kb = |key: &str| {
        status
            .lines()
            .find_map(|l| l.strip_prefix(key))
            .and_then(|v| v.split_whitespace().next()?.parse().ok())
            .unwrap_or(0)
    };
    Ok((cpu, kb("VmRSS:"), kb("VmHWM:")))
}

/// P5.
fn daemon_cost(o: &Options) -> anyhow::Result<String> {
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
    let pct = |a: (f64, u64, u64), b: (f64, u64, u64)| (b.0 - a.0) / wall * 100.0;
    let (dc, bc) = (pct(d0, d1), pct(b0, b1));
    let mut t = String::from(
        "| process | CPU (% of one core) | RSS | peak RSS | CPU ratio | RSS ratio |\n|---|---:|---:|---:|---:|---:|\n",
    );
    t.push_str(&format!(
        "| earlyoom-like loop: every `/proc/PID/oom_score` each second (baseline) | {bc:.3} % | {:.1} MB | {:.1} MB | 1.00× | 1.00× |\n",
        b1.1 as f64 / 1024.0,
        b1.2 as f64 / 1024.0
    ));
    t.push_str(&format!(
        "| `oomwatch run` (1 s prediction passes, probes attached) | {dc:.3} % | {:.1} MB | {:.1} MB | {:.2}× | {:.2}× |\n",
        d1.1 as f64 / 1024.0,
        d1.2 as f64 / 1024.0,
        dc / bc,
        d1.1 as f64 / b1.1.max(1) as f64
    ));
    println!("\n{t}");
    Ok(format!(
        "\n## P5 the daemon's footprint\n\n`oomwatch run` with its defaults (a prediction pass \
         every second: a snapshot of every task, every OOM domain ranked, the self-check) and \
         {TASKS} extra sleeping processes alive, measured over {} s after a 5 s warm-up \
         (utime + stime from `/proc/PID/stat`, VmRSS and VmHWM), beside a process doing what \
         earlyoom does each second over the same window. Target < 20 MB and < 0.5 % of one \
         core.\n\n{t}",
        o.seconds
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
