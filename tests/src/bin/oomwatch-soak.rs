//! `cargo xtask soak --ooms N`: N real memcg OOMs in a row with `oomwatch
//! run` watching, and the kernel as the oracle for what the daemon reports.
//!
//! Each OOM happens in memory cgroups made for it (`oomwatch` in their
//! names, each with a limit, removed after it), one scenario after another:
//!
//! - `three`: hogs of 12, 16 and 48 MiB in a 64 MiB cgroup, each started
//!   once the one before has touched its memory;
//! - `anon`: one 48 MiB hog in a 32 MiB cgroup;
//! - `shmem`: one 48 MiB shared memfd mapping in a 32 MiB cgroup;
//! - `threads`: one 48 MiB hog of four threads in a 32 MiB cgroup;
//! - `nested`: a 48 MiB parent with two limited children (32 and 40 MiB),
//!   a 20 MiB hog in the first, a 40 MiB hog in the second: the parent's
//!   limit is hit first, and its OOM kills in a child.
//!
//! OOMs start at most one per `--pace-ms` (600 ms): the kernel prints at
//! most 10 OOM reports per 5 s (`oom_rs` in mm/oom_kill.c: the default
//! ratelimit, 5 s and a burst of 10), and a report it leaves out is
//! announced later as `oom_kill_process: N callbacks suppressed`; this
//! binary reads `/dev/kmsg` itself and counts those, and the records the
//! log overwrote before it read them.
//!
//! Half way, with no workload running and every kill of the first half
//! counted, the daemon gets SIGTERM and is started again: the second half
//! is watched by a new daemon (each daemon has its own `--events` file).
//!
//! At the end: the kills the kernel counted (each leaf cgroup's `oom_kill`
//! in v1 `memory.oom_control` or v2 `memory.events`, summed, and the
//! host's `/proc/vmstat` `oom_kill`) against the daemon's
//! `oomwatch_oom_kills_total` and its episodes (the `--events` lines whose
//! victim was in one of the soak's cgroups), the replays' verdicts, the
//! ring buffer's and the kernel log's losses, and the daemon's VmRSS and
//! open fds sampled over the run. Exits 1 with the reasons when a
//! criterion fails (see [`judge`]).
//!
//! `oomwatch-soak --ooms N [--json] [--pace-ms MS] [--interval SECS]
//! [--markdown FILE]`

use std::{
    collections::{BTreeMap, BTreeSet},
    io::Read as _,
    path::{Path, PathBuf},
    process::{Child, Command, ExitCode, ExitStatus, Stdio},
    sync::{
        Arc, Mutex,
        atomic::{AtomicBool, Ordering},
    },
    time::{Duration, Instant},
};

use anyhow::{Context as _, bail};
use oomwatch_tests::{Hog, MemcgGuard, THREE_HOGS_MIB, http_get, killed_by_sigkill, sample};
use serde_json::json;

const USAGE: &str = "usage: oomwatch-soak --ooms N [--json] [--pace-ms MS] [--interval SECS] \
                     [--markdown FILE]";

/// The kernel's OOM report ratelimit (`oom_rs`): at most this many reports
/// per [`RATELIMIT_INTERVAL`].
const RATELIMIT_BURST: u32 = 10;
const RATELIMIT_INTERVAL: Duration = Duration::from_secs(5);

/// What a "flat" RSS may grow by, from the sample after warm-up to the
/// last sample of the same daemon.
const RSS_SLACK_KB: u64 = 4 << 10;

/// Set by SIGINT or SIGTERM: the run stops at the next check and cleans up.
static STOP: AtomicBool = AtomicBool::new(false);

extern "C" fn on_stop_signal(_: libc::c_int) {
    STOP.store(true, Ordering::SeqCst);
}

fn stopped() -> anyhow::Result<()> {
    if STOP.load(Ordering::SeqCst) {
        bail!("interrupted (SIGINT or SIGTERM): the soak's cgroups and hogs were removed");
    }
    Ok(())
}

struct Options {
    ooms: usize,
    json: bool,
    pace: Duration,
    interval: u64,
    markdown: Option<PathBuf>,
}

fn parse_args() -> anyhow::Result<Option<Options>> {
    let mut o = Options {
        ooms: 0,
        json: false,
        pace: Duration::from_millis(600),
        interval: 1,
        markdown: None,
    };
    let mut args = std::env::args().skip(1);
    let number = |flag: &str, v: Option<String>| -> anyhow::Result<u64> {
        let v = v.with_context(|| format!("{flag} needs a number; {USAGE}"))?;
        v.parse()
            .with_context(|| format!("{flag} {v:?}: not a whole number; {USAGE}"))
    };
    while let Some(a) = args.next() {
        match a.as_str() {
            "--ooms" => o.ooms = number("--ooms", args.next())? as usize,
            "--pace-ms" => o.pace = Duration::from_millis(number("--pace-ms", args.next())?),
            "--interval" => o.interval = number("--interval", args.next())?,
            "--json" => o.json = true,
            "--markdown" => {
                o.markdown = Some(args.next().context("--markdown needs a FILE")?.into())
            }
            "-h" | "--help" => {
                println!("{USAGE}");
                return Ok(None);
            }
            other => bail!("unknown argument {other:?}; {USAGE}"),
        }
    }
    if o.ooms < 4 {
        bail!(
            "--ooms {}: the soak needs at least 4 OOMs (two on each side of the daemon's \
             restart); e.g. --ooms 40",
            o.ooms
        );
    }
    let fastest = RATELIMIT_INTERVAL / RATELIMIT_BURST;
    if o.pace < fastest {
        bail!(
            "--pace-ms {}: the kernel prints at most {RATELIMIT_BURST} OOM reports per {} s, so \
             OOMs closer than {} ms lose reports; use --pace-ms {} or more",
            o.pace.as_millis(),
            RATELIMIT_INTERVAL.as_secs(),
            fastest.as_millis(),
            fastest.as_millis()
        );
    }
    if o.interval == 0 {
        bail!("--interval 0: the daemon's pass interval is at least 1 s; e.g. --interval 1");
    }
    Ok(Some(o))
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
enum Scenario {
    Three,
    Anon,
    Shmem,
    Threads,
    Nested,
}

impl Scenario {
    const ALL: [Scenario; 5] = [
        Scenario::Three,
        Scenario::Anon,
        Scenario::Shmem,
        Scenario::Threads,
        Scenario::Nested,
    ];

    fn name(self) -> &'static str {
        match self {
            Scenario::Three => "three",
            Scenario::Anon => "anon",
            Scenario::Shmem => "shmem",
            Scenario::Threads => "threads",
            Scenario::Nested => "nested",
        }
    }
}

/// The cgroups of one OOM, removed children first (a parent cannot go
/// while it has children).
struct Cgroups(Vec<MemcgGuard>);

impl Drop for Cgroups {
    fn drop(&mut self) {
        while let Some(g) = self.0.pop() {
            drop(g);
        }
    }
}

/// What one OOM left in the kernel's counters.
struct OomDone {
    /// Kills the kernel counted in the OOM's leaf cgroups, summed.
    kills: u64,
    /// The leaf cgroups' ids (the episodes' `victim.memcg_id`).
    leaf_ids: Vec<u64>,
    /// Hogs that died of SIGKILL before the soak killed the rest.
    sigkilled: usize,
}

/// Runs one OOM of `scenario` to its kill, then removes its hogs and
/// cgroups; the kill counts are read after every hog is gone, so a second
/// kill in the same OOM is counted too.
fn one_oom(hog: &str, scenario: Scenario) -> anyhow::Result<OomDone> {
    const MIB: u64 = 1 << 20;
    let mut cgroups = Cgroups(Vec::new());
    // Indices into `cgroups` of the cgroups the hogs run in.
    let mut leaves = Vec::new();
    let mut hogs: Vec<Hog> = Vec::new();
    let start = |hogs: &mut Vec<Hog>, g: &MemcgGuard, mib: usize, mode: &[&str]| {
        let mut h = Hog::start_mode(hog, g, mib, mode)?;
        // True once it has touched all its memory; false when the OOM
        // killed it on the way (the last hog, normally).
        h.wait_ready();
        hogs.push(h);
        anyhow::Ok(())
    };
    match scenario {
        Scenario::Three => {
            cgroups.0.push(MemcgGuard::create(64 * MIB)?);
            leaves.push(0);
            for mib in THREE_HOGS_MIB {
                start(&mut hogs, &cgroups.0[0], mib, &[])?;
            }
        }
        Scenario::Anon | Scenario::Shmem | Scenario::Threads => {
            cgroups.0.push(MemcgGuard::create(32 * MIB)?);
            leaves.push(0);
            let mode: &[&str] = match scenario {
                Scenario::Shmem => &["shmem"],
                Scenario::Threads => &["threads", "4"],
                _ => &[],
            };
            start(&mut hogs, &cgroups.0[0], 48, mode)?;
        }
        Scenario::Nested => {
            cgroups.0.push(MemcgGuard::create(48 * MIB)?);
            let a = cgroups.0[0].child("oomwatch-a", Some(32 * MIB))?;
            let b = cgroups.0[0].child("oomwatch-b", Some(40 * MIB))?;
            cgroups.0.extend([a, b]);
            leaves.extend([1, 2]);
            start(&mut hogs, &cgroups.0[1], 20, &[])?;
            start(&mut hogs, &cgroups.0[2], 40, &[])?;
        }
    }
    let kills =
        |cg: &Cgroups| -> anyhow::Result<u64> { leaves.iter().map(|&i| cg.0[i].oom_kills()).sum() };
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        stopped()?;
        if kills(&cgroups)? > 0 && hogs.iter_mut().any(|h| h.try_wait().is_some()) {
            break;
        }
        if Instant::now() > deadline {
            bail!(
                "scenario {}: no OOM kill within 30 s in {}: did the limits apply?",
                scenario.name(),
                cgroups.0[0].dir.display()
            );
        }
        std::thread::sleep(Duration::from_millis(2));
    }
    let sigkilled = hogs
        .iter_mut()
        .filter_map(Hog::try_wait)
        .filter(killed_by_sigkill)
        .count();
    // Every hog gone (Hog's drop kills and waits) before the final count.
    drop(hogs);
    Ok(OomDone {
        kills: kills(&cgroups)?,
        leaf_ids: leaves.iter().map(|&i| cgroups.0[i].id()).collect(),
        sigkilled,
    })
}

/// `/proc/vmstat`'s `oom_kill`: every OOM kill on the host.
fn host_oom_kills() -> anyhow::Result<u64> {
    let t = std::fs::read_to_string("/proc/vmstat").context("read /proc/vmstat")?;
    t.lines()
        .find_map(|l| l.strip_prefix("oom_kill "))
        .context("/proc/vmstat has no oom_kill line")?
        .trim()
        .parse()
        .context("parse /proc/vmstat oom_kill")
}

/// What this binary's own reader of `/dev/kmsg` saw during the soak.
#[derive(Default, Clone, Debug)]
struct KmsgSeen {
    /// Records lost before they were read: gaps in the sequence numbers.
    lost_records: u64,
    /// Reads that failed with EPIPE (the reader was overtaken).
    overruns: u64,
    /// OOM report headers (`invoked oom-killer`).
    reports: u64,
    /// The pids of the `Killed process` lines (never ratelimited): the
    /// kernel's kills.
    killed_pids: BTreeSet<u64>,
    /// Reports the kernel said it left out (`oom_kill_process: N callbacks
    /// suppressed`), summed.
    suppressed_reports: u64,
    /// Other `callbacks suppressed` lines, as the kernel printed them.
    suppressed_other: Vec<String>,
}

impl KmsgSeen {
    /// Takes one `/dev/kmsg` record (`PRI,SEQ,TS,FLAGS;MESSAGE\n…`) with
    /// the sequence number expected next; returns the one after it.
    fn record(&mut self, record: &str, expect: Option<u64>) -> Option<u64> {
        let (head, rest) = record.split_once(';')?;
        let seq: u64 = head.split(',').nth(1)?.parse().ok()?;
        if let Some(e) = expect
            && seq > e
        {
            self.lost_records += seq - e;
        }
        let msg = rest.lines().next().unwrap_or_default();
        if msg.contains("invoked oom-killer:") {
            self.reports += 1;
        }
        if let Some((_, rest)) = msg.split_once("Killed process ")
            && let Some(pid) = rest.split(' ').next().and_then(|p| p.parse().ok())
        {
            self.killed_pids.insert(pid);
        }
        if let Some(head) = msg.strip_suffix(" callbacks suppressed")
            && let Some((func, n)) = head.rsplit_once(": ")
        {
            match (func.trim(), n.trim().parse::<u64>()) {
                ("oom_kill_process", Ok(n)) => self.suppressed_reports += n,
                _ => self.suppressed_other.push(msg.to_owned()),
            }
        }
        Some(seq + 1)
    }
}

/// Reads `/dev/kmsg` from its end on a thread of its own.
fn follow_kmsg() -> anyhow::Result<Arc<Mutex<KmsgSeen>>> {
    use std::os::fd::AsFd as _;
    let mut f = std::fs::File::open("/dev/kmsg").context("open /dev/kmsg")?;
    nix::unistd::lseek(f.as_fd(), 0, nix::unistd::Whence::SeekEnd)
        .context("seek /dev/kmsg to its end")?;
    let seen = Arc::new(Mutex::new(KmsgSeen::default()));
    let out = Arc::clone(&seen);
    std::thread::Builder::new()
        .name("soak-kmsg".into())
        .spawn(move || {
            let mut buf = vec![0u8; 16 * 1024];
            let mut expect = None;
            loop {
                match f.read(&mut buf) {
                    Ok(0) => return,
                    Ok(n) => {
                        let rec = String::from_utf8_lossy(&buf[..n]);
                        let mut s = out.lock().expect("kmsg counts");
                        expect = s.record(&rec, expect).or(expect);
                    }
                    Err(e) if e.raw_os_error() == Some(libc::EPIPE) => {
                        out.lock().expect("kmsg counts").overruns += 1;
                    }
                    Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                    Err(e) => {
                        eprintln!("soak: stopped reading /dev/kmsg: {e}");
                        return;
                    }
                }
            }
        })
        .context("start the /dev/kmsg reader")?;
    Ok(seen)
}

/// `oomwatch run` on a free loopback port, its log in a file.
struct Daemon {
    child: Child,
    addr: String,
    log: PathBuf,
}

impl Daemon {
    fn start(bin: &str, o: &Options, events: &Path, log: PathBuf) -> anyhow::Result<Self> {
        let port = std::net::TcpListener::bind("127.0.0.1:0")?
            .local_addr()?
            .port();
        let addr = format!("127.0.0.1:{port}");
        let err = std::fs::File::create(&log)
            .with_context(|| format!("create the daemon's log {}", log.display()))?;
        let child = Command::new(bin)
            .args(["run", "--listen", &addr, "--interval"])
            .arg(o.interval.to_string())
            .arg("--events")
            .arg(events)
            .stdout(Stdio::null())
            .stderr(err)
            .spawn()
            .with_context(|| format!("start {bin} run"))?;
        let mut d = Daemon { child, addr, log };
        let deadline = Instant::now() + Duration::from_secs(30);
        while http_get(&d.addr, "/metrics").is_none() {
            stopped()?;
            if let Some(st) = d.child.try_wait()? {
                bail!(
                    "oomwatch run exited ({st}) before serving /metrics: {}",
                    d.log_tail()
                );
            }
            if Instant::now() > deadline {
                bail!(
                    "oomwatch run did not serve /metrics within 30 s: {}",
                    d.log_tail()
                );
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        Ok(d)
    }

    fn pid(&self) -> u32 {
        self.child.id()
    }

    fn log_tail(&self) -> String {
        let t = std::fs::read_to_string(&self.log).unwrap_or_default();
        let lines: Vec<&str> = t.lines().collect();
        format!(
            "last lines of {}:\n{}",
            self.log.display(),
            lines[lines.len().saturating_sub(10)..].join("\n")
        )
    }

    fn counters(&self) -> anyhow::Result<Counters> {
        let text = http_get(&self.addr, "/metrics")
            .with_context(|| format!("GET /metrics from the daemon: {}", self.log_tail()))?;
        Counters::parse(&text)
    }

    /// SIGTERM, then waits up to 10 s for the daemon to exit.
    fn stop(mut self) -> anyhow::Result<(ExitStatus, Duration)> {
        let t = Instant::now();
        nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(self.pid() as i32),
            nix::sys::signal::Signal::SIGTERM,
        )
        .context("SIGTERM the daemon")?;
        while t.elapsed() < Duration::from_secs(10) {
            if let Some(st) = self.child.try_wait()? {
                return Ok((st, t.elapsed()));
            }
            std::thread::sleep(Duration::from_millis(5));
        }
        bail!(
            "the daemon did not exit within 10 s of SIGTERM: {}",
            self.log_tail()
        )
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        if self.child.try_wait().ok().flatten().is_none() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

/// The daemon's counters the soak checks.
#[derive(Default, Clone, Debug)]
struct Counters {
    kills: u64,
    /// `oomwatch_oom_marks_without_kill_total`: threads of a killed process
    /// the kernel marked as they died, which the daemon does not count as
    /// kills.
    remarks: u64,
    ring_dropped: u64,
    /// `oomwatch_report_replays_total` by outcome.
    replays: BTreeMap<String, u64>,
}

impl Counters {
    fn parse(text: &str) -> anyhow::Result<Self> {
        let get = |name: &str| {
            sample(text, name)
                .map(|v| v as u64)
                .with_context(|| format!("/metrics has no {name}"))
        };
        let mut replays = BTreeMap::new();
        for l in text.lines() {
            let Some(rest) = l.strip_prefix("oomwatch_report_replays_total{") else {
                continue;
            };
            let (labels, value) = rest.rsplit_once("} ").context("a labelled sample")?;
            let outcome = labels
                .split(',')
                .find_map(|kv| kv.strip_prefix("outcome="))
                .map(|v| v.trim_matches('"').to_owned())
                .context("oomwatch_report_replays_total without an outcome label")?;
            replays.insert(outcome, value.trim().parse::<f64>()? as u64);
        }
        if replays.is_empty() {
            bail!("/metrics has no oomwatch_report_replays_total");
        }
        Ok(Counters {
            kills: get("oomwatch_oom_kills_total")?,
            remarks: get("oomwatch_oom_marks_without_kill_total")?,
            ring_dropped: get("oomwatch_events_dropped_total")?,
            replays,
        })
    }

    fn add(&mut self, o: &Counters) {
        self.kills += o.kills;
        self.remarks += o.remarks;
        self.ring_dropped += o.ring_dropped;
        for (k, v) in &o.replays {
            *self.replays.entry(k.clone()).or_default() += v;
        }
    }
}

/// The daemon's VmRSS and open fds at one moment.
#[derive(Clone, Debug)]
struct Sample {
    after_ooms: usize,
    daemon: usize,
    pid: u32,
    rss_kb: u64,
    fds: usize,
    secs: f64,
    warm_up: bool,
}

/// VmRSS and the open fd count, each the least of five reads 20 ms apart:
/// a prediction pass holds a few `/proc` files open for a moment, and the
/// soak looks for what stays.
fn usage(pid: u32) -> anyhow::Result<(u64, usize)> {
    let mut best = (u64::MAX, usize::MAX);
    for i in 0..5 {
        if i > 0 {
            std::thread::sleep(Duration::from_millis(20));
        }
        let status = std::fs::read_to_string(format!("/proc/{pid}/status"))
            .with_context(|| format!("read /proc/{pid}/status: has the daemon died?"))?;
        let rss = status
            .lines()
            .find_map(|l| l.strip_prefix("VmRSS:"))
            .and_then(|v| v.split_whitespace().next()?.parse().ok())
            .context("no VmRSS in the daemon's status")?;
        let fds = std::fs::read_dir(format!("/proc/{pid}/fd"))
            .with_context(|| format!("list /proc/{pid}/fd"))?
            .count();
        best = (best.0.min(rss), best.1.min(fds));
    }
    Ok(best)
}

/// What one daemon's episodes (its `--events` lines) say.
///
/// A `mark_victim` is a kill when the kernel logged `Killed process PID`
/// for it; else it is a task the kernel marked without killing: a thread
/// of a process already killed that entered the OOM killer dying
/// (`task_will_free_mem(current)` in `out_of_memory()`), which no
/// `oom_kill` counter counts.
#[derive(Default, Debug, Clone)]
struct Episodes {
    /// Lines in the events file: every mark the daemon reported.
    lines: u64,
    /// Of those, kills (anywhere on the host) and other marks.
    kills: u64,
    marks: u64,
    /// The marks by the marked task's memory cgroup id.
    marks_in: BTreeMap<u64, u64>,
    /// Kills in the soak's cgroups.
    ours: u64,
    /// Those kills by the replay's verdict (the `replay` field; without
    /// one, a report the model could not replay, or none at all).
    agree: u64,
    disagree: u64,
    unreplayable: u64,
    no_report: u64,
    oom_group: u64,
    /// A few disagreeing, unreplayable or report-less victims.
    examples: Vec<String>,
}

impl Episodes {
    fn add(&mut self, o: &Episodes) {
        self.lines += o.lines;
        self.kills += o.kills;
        self.marks += o.marks;
        for (id, n) in &o.marks_in {
            *self.marks_in.entry(*id).or_default() += n;
        }
        self.ours += o.ours;
        self.agree += o.agree;
        self.disagree += o.disagree;
        self.unreplayable += o.unreplayable;
        self.no_report += o.no_report;
        self.oom_group += o.oom_group;
        self.examples.extend(o.examples.iter().cloned());
        self.examples.truncate(5);
    }
}

/// Reads `path`; `ours` are the soak's cgroup ids, `killed` the pids of
/// the kernel's `Killed process` lines.
fn read_episodes(
    path: &Path,
    ours: &BTreeSet<u64>,
    killed: &BTreeSet<u64>,
) -> anyhow::Result<Episodes> {
    let text = match std::fs::read_to_string(path) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => String::new(),
        Err(e) => return Err(e).with_context(|| format!("read {}", path.display())),
    };
    let mut e = Episodes::default();
    for (n, line) in text.lines().enumerate() {
        let v: serde_json::Value = serde_json::from_str(line)
            .with_context(|| format!("{} line {}: not JSON", path.display(), n + 1))?;
        e.lines += 1;
        let pid = v["victim"]["pid"].as_u64().unwrap_or_default();
        if !killed.contains(&pid) {
            e.marks += 1;
            if let Some(id) = v["victim"]["memcg_id"].as_u64() {
                *e.marks_in.entry(id).or_default() += 1;
            }
            continue;
        }
        e.kills += 1;
        if !v["victim"]["memcg_id"]
            .as_u64()
            .is_some_and(|id| ours.contains(&id))
        {
            continue;
        }
        e.ours += 1;
        let victim = format!(
            "pid {pid} ({})",
            v["victim"]["comm"].as_str().unwrap_or("?")
        );
        let missing = v["replay_missing"].as_str().unwrap_or("?");
        if !v["oom_group_of"].is_null() {
            e.oom_group += 1;
        } else if let Some(agree) = v["replay"]["agree"].as_bool() {
            if agree {
                e.agree += 1;
            } else {
                e.disagree += 1;
                e.examples.push(format!("{victim}: the replay disagrees"));
            }
        } else if !v["trigger"].is_null() {
            e.unreplayable += 1;
            e.examples
                .push(format!("{victim}: unreplayable: {missing}"));
        } else {
            e.no_report += 1;
            e.examples.push(format!("{victim}: {missing}"));
        }
    }
    e.examples.truncate(5);
    Ok(e)
}

/// One daemon's life in the soak.
#[derive(Clone, Debug)]
struct Life {
    pid: u32,
    ooms: usize,
    /// Kills the kernel counted in the soak's cgroups while it ran.
    kernel_kills: u64,
    /// `/proc/vmstat` `oom_kill` growth while it ran (every kill on the host).
    host_kills: u64,
    counters: Counters,
    episodes: Episodes,
    /// From start to `/metrics` answering.
    start: Duration,
    /// From the last kill to /metrics and the events file having it all.
    settle: Duration,
    /// From SIGTERM to exit, and how it exited.
    stop: Duration,
    exit: String,
    exit_ok: bool,
}

/// Waits (10 s at most) until every mark the daemon counted on
/// `/metrics` has its line in `events`, and its kill episodes in the
/// soak's cgroups number `kills`; returns how long that took, the
/// counters and the episodes then.
fn settle(
    d: &Daemon,
    kills: u64,
    events: &Path,
    ours: &BTreeSet<u64>,
    kmsg: &Mutex<KmsgSeen>,
) -> anyhow::Result<(Duration, Counters, Episodes)> {
    let t = Instant::now();
    loop {
        let c = d.counters()?;
        let killed = kmsg.lock().expect("kmsg counts").killed_pids.clone();
        let e = read_episodes(events, ours, &killed)?;
        if (c.kills == e.lines && e.ours >= kills) || t.elapsed() > Duration::from_secs(10) {
            return Ok((t.elapsed(), c, e));
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn sibling(name: &str) -> anyhow::Result<String> {
    let p = std::env::current_exe()?.with_file_name(name);
    if !p.is_file() {
        bail!(
            "{} is missing: build it first (`cargo build --release -p oomwatch-tests`, or run \
             `cargo xtask soak`)",
            p.display()
        );
    }
    Ok(p.to_str().context("a non-UTF-8 path")?.to_owned())
}

/// One scenario's OOMs, the kills the kernel counted in them, and the
/// tasks it marked there without a kill.
#[derive(Default, Clone, Copy, Debug)]
struct PerScenario {
    ooms: usize,
    kills: u64,
    marks: u64,
}

/// The whole run's numbers.
struct Soak {
    ooms: usize,
    pace: Duration,
    elapsed: Duration,
    per_scenario: BTreeMap<Scenario, PerScenario>,
    sigkilled: usize,
    lives: Vec<Life>,
    /// `/proc/vmstat` `oom_kill` growth while the daemon was down.
    kills_while_down: u64,
    restart_gap: Duration,
    episodes: Episodes,
    kmsg: KmsgSeen,
    samples: Vec<Sample>,
    /// The daemons' logs and events files.
    events_dir: PathBuf,
}

fn main() -> ExitCode {
    let o = match parse_args() {
        Ok(Some(o)) => o,
        Ok(None) => return ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("oomwatch-soak: {e:#}");
            return ExitCode::from(2);
        }
    };
    match soak(&o) {
        Ok(s) => {
            let failures = judge(&s);
            if o.json {
                println!("{:#}", report_json(&s, &failures));
            } else {
                println!("{}", report_text(&s, &failures));
            }
            if let Some(path) = &o.markdown
                && let Err(e) = write_markdown(path, &s, &failures)
            {
                eprintln!("oomwatch-soak: {e:#}");
                return ExitCode::from(2);
            }
            if failures.is_empty() {
                eprintln!("soak: passed");
                ExitCode::SUCCESS
            } else {
                eprintln!("soak FAILED:");
                for f in &failures {
                    eprintln!("  - {f}");
                }
                ExitCode::FAILURE
            }
        }
        Err(e) => {
            eprintln!("oomwatch-soak: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn soak(o: &Options) -> anyhow::Result<Soak> {
    if !nix::unistd::geteuid().is_root() {
        bail!(
            "the soak loads eBPF (through `oomwatch run`) and creates memory cgroups: run it as \
             root (`cargo xtask soak` as root)"
        );
    }
    let handler = nix::sys::signal::SigAction::new(
        nix::sys::signal::SigHandler::Handler(on_stop_signal),
        nix::sys::signal::SaFlags::empty(),
        nix::sys::signal::SigSet::empty(),
    );
    for sig in [
        nix::sys::signal::Signal::SIGINT,
        nix::sys::signal::Signal::SIGTERM,
    ] {
        // SAFETY: the handler only stores to an atomic.
        unsafe { nix::sys::signal::sigaction(sig, &handler) }
            .context("install a signal handler")?;
    }
    let hog = sibling("oomwatch-hog")?;
    let oomwatch = sibling("oomwatch")?;
    let dir = tempfile::Builder::new()
        .prefix("oomwatch-soak-")
        .tempdir()
        .context("create a directory for the daemon's logs")?;
    let kmsg = follow_kmsg()?;
    let half = o.ooms / 2;
    let warm_up = (o.ooms / 20).clamp(5, 50).min(half / 2).max(1);
    let mut marks: BTreeSet<usize> = (1..=10).map(|j| (o.ooms * j).div_ceil(10)).collect();
    marks.extend([warm_up, half, half + warm_up, o.ooms]);
    eprintln!(
        "soak: {} OOMs, one every {} ms at most, daemon restart after OOM {half}; logs in {}",
        o.ooms,
        o.pace.as_millis(),
        dir.path().display()
    );

    let t0 = Instant::now();
    let log = |n: usize| dir.path().join(format!("daemon-{n}.log"));
    let events = |n: usize| dir.path().join(format!("events-{n}.jsonl"));
    let mut daemon = Some(Daemon::start(&oomwatch, o, &events(1), log(1))?);
    let mut life_start = t0.elapsed();
    let mut lives: Vec<Life> = Vec::new();
    let mut ours = BTreeSet::new();
    let mut per_scenario: BTreeMap<Scenario, PerScenario> = BTreeMap::new();
    let mut scenario_of: BTreeMap<u64, Scenario> = BTreeMap::new();
    let (mut sigkilled, mut kernel_total, mut life_kills, mut life_ooms) = (0, 0u64, 0u64, 0);
    let mut host_at_life_start = host_oom_kills()?;
    let mut samples = Vec::new();
    let (mut kills_while_down, mut restart_gap) = (0, Duration::ZERO);
    let mut next_start = Instant::now();
    for i in 1..=o.ooms {
        stopped()?;
        let now = Instant::now();
        if next_start > now {
            std::thread::sleep(next_start - now);
        }
        next_start = Instant::now() + o.pace;
        let scenario = Scenario::ALL[(i - 1) % Scenario::ALL.len()];
        let done =
            one_oom(&hog, scenario).with_context(|| format!("OOM {i} ({})", scenario.name()))?;
        ours.extend(done.leaf_ids.iter().copied());
        scenario_of.extend(done.leaf_ids.iter().map(|&id| (id, scenario)));
        sigkilled += done.sigkilled;
        kernel_total += done.kills;
        life_kills += done.kills;
        life_ooms += 1;
        let e = per_scenario.entry(scenario).or_default();
        e.ooms += 1;
        e.kills += done.kills;
        let life_no = lives.len() + 1;
        let d = daemon
            .as_ref()
            .context("the daemon stopped before the last OOM")?;
        if marks.contains(&i) {
            let (rss_kb, fds) = usage(d.pid())?;
            samples.push(Sample {
                after_ooms: i,
                daemon: life_no,
                pid: d.pid(),
                rss_kb,
                fds,
                secs: t0.elapsed().as_secs_f64(),
                warm_up: i == warm_up || i == half + warm_up,
            });
        }
        if i % 50 == 0 {
            let c = d.counters()?;
            eprintln!(
                "soak: {i}/{} OOMs, {:.0} s: kernel kills {kernel_total} ({life_kills} since \
                 this daemon started; its oomwatch_oom_kills_total {}, and {} marks without a \
                 kill), ring drops {}, kmsg reports {}",
                o.ooms,
                t0.elapsed().as_secs_f64(),
                c.kills,
                c.remarks,
                c.ring_dropped,
                kmsg.lock().expect("kmsg counts").reports
            );
        }
        if i == half || i == o.ooms {
            let d = daemon
                .take()
                .context("the daemon stopped before the last OOM")?;
            let (settle_t, counters, _) = settle(&d, life_kills, &events(life_no), &ours, &kmsg)?;
            let host_now = host_oom_kills()?;
            let pid = d.pid();
            let (st, stop_t) = d.stop()?;
            lives.push(Life {
                pid,
                ooms: life_ooms,
                kernel_kills: life_kills,
                host_kills: host_now - host_at_life_start,
                counters,
                // Read again once the daemon is gone, below.
                episodes: Episodes::default(),
                start: life_start,
                settle: settle_t,
                stop: stop_t,
                exit: st.to_string(),
                exit_ok: st.success(),
            });
            if i == half {
                eprintln!(
                    "soak: restart after OOM {i}: SIGTERM, exited in {:.0} ms ({st}); starting \
                     again",
                    stop_t.as_secs_f64() * 1e3
                );
                let gap = Instant::now();
                daemon = Some(Daemon::start(&oomwatch, o, &events(2), log(2))?);
                life_start = gap.elapsed();
                host_at_life_start = host_oom_kills()?;
                kills_while_down = host_at_life_start - host_now;
                restart_gap = gap.elapsed();
                life_kills = 0;
                life_ooms = 0;
            }
        }
    }
    let kmsg = kmsg.lock().expect("kmsg counts").clone();
    let mut episodes = Episodes::default();
    for (n, l) in lives.iter_mut().enumerate() {
        l.episodes = read_episodes(&events(n + 1), &ours, &kmsg.killed_pids)?;
        episodes.add(&l.episodes);
    }
    for (id, n) in &episodes.marks_in {
        if let Some(sc) = scenario_of.get(id) {
            per_scenario.entry(*sc).or_default().marks += n;
        }
    }
    let soak = Soak {
        ooms: o.ooms,
        pace: o.pace,
        elapsed: t0.elapsed(),
        per_scenario,
        sigkilled,
        lives,
        kills_while_down,
        restart_gap,
        episodes,
        kmsg,
        samples,
        events_dir: dir.path().to_owned(),
    };
    if !judge(&soak).is_empty() {
        // Kept for a look at what went wrong.
        let kept = dir.keep();
        eprintln!(
            "soak: the daemon's logs and events stay in {}",
            kept.display()
        );
    }
    Ok(soak)
}

/// The pass/fail criteria; each failure says what it is, with the numbers.
///
/// - no missed kill: each daemon reported (an episode, and a count on
///   `/metrics`) every kill the host counted while it ran (`/proc/vmstat`),
///   and in the soak's cgroups as many as their own counters say; nothing
///   more, except the tasks the kernel marked without a kill (see
///   [`Episodes`]), which `oomwatch_oom_kills_total` counts too;
/// - no kill while the daemon was down (the restart is made with no
///   workload running; one there would be someone else's OOM);
/// - no unaccounted loss: no ring-buffer drop; each episode without a
///   report is matched by a report the kernel said it suppressed or a
///   record the kernel log overwrote;
/// - every report replayed, and every replay agreeing with the kernel;
/// - each daemon's VmRSS at most 4 MiB above its sample after warm-up,
///   and its open fds the same;
/// - each daemon exited 0 on SIGTERM.
fn judge(s: &Soak) -> Vec<String> {
    let mut f = Vec::new();
    for (n, l) in s.lives.iter().enumerate() {
        let n = n + 1;
        let e = &l.episodes;
        if l.counters.kills != e.lines {
            f.push(format!(
                "daemon {n} counted {} victims on /metrics (oomwatch_oom_kills_total) and wrote \
                 {} episodes",
                l.counters.kills, e.lines
            ));
        }
        if e.marks > 0 {
            f.push(format!(
                "daemon {n} wrote {} episodes for tasks the kernel marked without a kill \
                 (no `Killed process` line): they are not kills",
                e.marks
            ));
        }
        if e.kills < l.host_kills {
            f.push(format!(
                "daemon {n} missed kills: the kernel killed {} on the host ({} in the soak's \
                 cgroups), the daemon reported {}",
                l.host_kills, l.kernel_kills, e.kills
            ));
        }
        if e.kills > l.host_kills {
            f.push(format!(
                "daemon {n} reported {} kills, more than the {} the kernel counted on the host",
                e.kills, l.host_kills
            ));
        }
        if e.ours != l.kernel_kills {
            f.push(format!(
                "daemon {n} reported {} kills in the soak's cgroups, the kernel counted {} there",
                e.ours, l.kernel_kills
            ));
        }
        if l.counters.ring_dropped > 0 {
            f.push(format!(
                "daemon {n}: {} events lost to a full ring buffer (oomwatch_events_dropped_total)",
                l.counters.ring_dropped
            ));
        }
        if !l.exit_ok {
            f.push(format!("daemon {n} exited {} on SIGTERM", l.exit));
        }
    }
    if s.kills_while_down > 0 {
        f.push(format!(
            "{} kills on the host while the daemon was down (the soak ran nothing then)",
            s.kills_while_down
        ));
    }
    let accounted = s.kmsg.suppressed_reports + s.kmsg.lost_records;
    if s.episodes.no_report > accounted {
        f.push(format!(
            "{} episodes without a report, and only {} reports suppressed by the kernel plus {} \
             log records overwritten to account for them",
            s.episodes.no_report, s.kmsg.suppressed_reports, s.kmsg.lost_records
        ));
    }
    if s.episodes.disagree + s.episodes.unreplayable > 0 {
        f.push(format!(
            "replays: {} disagree, {} unreplayable ({})",
            s.episodes.disagree,
            s.episodes.unreplayable,
            s.episodes.examples.join("; ")
        ));
    }
    for n in 1..=s.lives.len() {
        let mine: Vec<&Sample> = s.samples.iter().filter(|x| x.daemon == n).collect();
        let (Some(base), Some(last)) = (mine.iter().find(|x| x.warm_up), mine.last()) else {
            continue;
        };
        if last.rss_kb > base.rss_kb + RSS_SLACK_KB {
            f.push(format!(
                "daemon {n}'s VmRSS grew from {:.1} MiB after warm-up (OOM {}) to {:.1} MiB \
                 (OOM {}): more than {} MiB",
                mib(base.rss_kb),
                base.after_ooms,
                mib(last.rss_kb),
                last.after_ooms,
                RSS_SLACK_KB >> 10
            ));
        }
        if last.fds != base.fds {
            f.push(format!(
                "daemon {n}'s open fds went from {} after warm-up (OOM {}) to {} (OOM {})",
                base.fds, base.after_ooms, last.fds, last.after_ooms
            ));
        }
    }
    f
}

fn mib(kb: u64) -> f64 {
    kb as f64 / 1024.0
}

fn totals(s: &Soak) -> (u64, u64, Counters) {
    let kernel = s.lives.iter().map(|l| l.kernel_kills).sum();
    let host = s.lives.iter().map(|l| l.host_kills).sum();
    let mut c = Counters::default();
    for l in &s.lives {
        c.add(&l.counters);
    }
    (kernel, host, c)
}

fn report_json(s: &Soak, failures: &[String]) -> serde_json::Value {
    let (kernel, host, c) = totals(s);
    json!({
        "passed": failures.is_empty(),
        "failures": failures,
        "ooms": s.ooms,
        "pace_ms": s.pace.as_millis() as u64,
        "seconds": s.elapsed.as_secs_f64(),
        "scenarios": s.per_scenario.iter().map(|(k, p)| {
            (k.name().to_owned(), json!({
                "ooms": p.ooms,
                "kernel_kills": p.kills,
                "marks_without_kill": p.marks,
            }))
        }).collect::<serde_json::Map<_, _>>(),
        "kills": {
            "kernel_memcg": kernel,
            "kernel_host": host,
            "metrics": c.kills,
            "marks_without_kill_metric": c.remarks,
            "episodes_host": s.episodes.kills,
            "episodes_memcg": s.episodes.ours,
            "marks_without_kill": s.episodes.marks,
            "while_daemon_down": s.kills_while_down,
            "hogs_sigkilled": s.sigkilled,
        },
        "replays": {
            "episodes": {
                "agree": s.episodes.agree,
                "disagree": s.episodes.disagree,
                "unreplayable": s.episodes.unreplayable,
                "no_report": s.episodes.no_report,
                "marks_without_kill": s.episodes.marks,
                "oom_group": s.episodes.oom_group,
            },
            "metrics": c.replays,
            "examples": s.episodes.examples,
        },
        "losses": {
            "ring_buffer_dropped": c.ring_dropped,
            "kmsg_records_lost": s.kmsg.lost_records,
            "kmsg_overruns": s.kmsg.overruns,
            "reports_suppressed": s.kmsg.suppressed_reports,
            "other_suppressed": s.kmsg.suppressed_other,
            "kmsg_reports": s.kmsg.reports,
            "kmsg_killed_lines": s.kmsg.killed_pids.len(),
        },
        "restart": {
            "gap_ms": s.restart_gap.as_secs_f64() * 1e3,
        },
        "daemons": s.lives.iter().map(|l| json!({
            "pid": l.pid,
            "ooms": l.ooms,
            "kernel_kills": l.kernel_kills,
            "host_kills": l.host_kills,
            "metrics_kills": l.counters.kills,
            "episodes": l.episodes.lines,
            "kill_episodes_host": l.episodes.kills,
            "kill_episodes_memcg": l.episodes.ours,
            "marks_without_kill": l.episodes.marks,
            "ring_buffer_dropped": l.counters.ring_dropped,
            "replays": l.counters.replays,
            "start_ms": l.start.as_secs_f64() * 1e3,
            "settle_ms": l.settle.as_secs_f64() * 1e3,
            "stop_ms": l.stop.as_secs_f64() * 1e3,
            "exit": l.exit,
        })).collect::<Vec<_>>(),
        "samples": s.samples.iter().map(|x| json!({
            "after_ooms": x.after_ooms,
            "daemon": x.daemon,
            "pid": x.pid,
            "vm_rss_kb": x.rss_kb,
            "fds": x.fds,
            "seconds": x.secs,
            "warm_up": x.warm_up,
        })).collect::<Vec<_>>(),
        "logs": s.events_dir,
    })
}

/// Per scenario, as a Markdown table.
fn scenarios_table(s: &Soak) -> String {
    let mut t = String::from(
        "| scenario | OOMs | kernel kills | episodes of a mark without a kill |\n|---|---:|---:|---:|\n",
    );
    for (k, p) in &s.per_scenario {
        t.push_str(&format!(
            "| `{}` | {} | {} | {} |\n",
            k.name(),
            p.ooms,
            p.kills,
            p.marks
        ));
    }
    t
}

/// The samples as a Markdown table.
fn samples_table(s: &Soak) -> String {
    let mut t = String::from(
        "| after OOM | daemon (pid) | VmRSS | open fds | at |\n|---:|---|---:|---:|---:|\n",
    );
    for x in &s.samples {
        t.push_str(&format!(
            "| {}{} | {} ({}) | {:.1} MiB | {} | {:.0} s |\n",
            x.after_ooms,
            if x.warm_up { " (warm-up)" } else { "" },
            x.daemon,
            x.pid,
            mib(x.rss_kb),
            x.fds,
            x.secs
        ));
    }
    t
}

fn report_text(s: &Soak, failures: &[String]) -> String {
    let (kernel, host, c) = totals(s);
    let mut t = format!(
        "soak: {} OOMs in {:.0} s (one every {} ms at most), {}\n\n",
        s.ooms,
        s.elapsed.as_secs_f64(),
        s.pace.as_millis(),
        if failures.is_empty() {
            "passed"
        } else {
            "FAILED"
        }
    );
    t.push_str(&scenarios_table(s));
    t.push_str(&format!(
        "\nkills: kernel {kernel} (the soak's cgroups' oom_kill, summed; host /proc/vmstat: \
         {host}); reported: {} in the soak's cgroups ({} on the host); while the daemon was \
         down {}\n/metrics oomwatch_oom_kills_total {}; oomwatch_oom_marks_without_kill_total {} \
         (threads of a killed process that entered the OOM killer dying; no kernel counter \
         counts them); episodes for such marks {}\n",
        s.episodes.ours, s.episodes.kills, s.kills_while_down, c.kills, c.remarks, s.episodes.marks
    ));
    t.push_str(&format!(
        "replays of the soak's kills (episodes): {} agree, {} disagree, {} unreplayable, {} \
         without a report, {} oom.group; /metrics oomwatch_report_replays_total: {}\n",
        s.episodes.agree,
        s.episodes.disagree,
        s.episodes.unreplayable,
        s.episodes.no_report,
        s.episodes.oom_group,
        c.replays
            .iter()
            .map(|(k, v)| format!("{k}={v}"))
            .collect::<Vec<_>>()
            .join(" ")
    ));
    t.push_str(&format!(
        "losses: ring buffer {} (oomwatch_events_dropped_total); kernel log: {} records \
         overwritten unread ({} overruns), {} reports suppressed by the ratelimit; {} reports \
         and {} Killed lines read\n",
        c.ring_dropped,
        s.kmsg.lost_records,
        s.kmsg.overruns,
        s.kmsg.suppressed_reports,
        s.kmsg.reports,
        s.kmsg.killed_pids.len()
    ));
    for (n, l) in s.lives.iter().enumerate() {
        t.push_str(&format!(
            "daemon {} (pid {}): {} OOMs, /metrics up {:.0} ms after start, settled {:.0} ms \
             after the last kill, exited ({}) {:.0} ms after SIGTERM\n",
            n + 1,
            l.pid,
            l.ooms,
            l.start.as_secs_f64() * 1e3,
            l.settle.as_secs_f64() * 1e3,
            l.exit,
            l.stop.as_secs_f64() * 1e3
        ));
    }
    t.push_str(&format!(
        "restart: {:.0} ms from SIGTERM's exit to /metrics again\n\n",
        s.restart_gap.as_secs_f64() * 1e3
    ));
    t.push_str(&samples_table(s));
    for f in failures {
        t.push_str(&format!("\nFAILED: {f}"));
    }
    t
}

/// Replaces the `## Soak` section of `path` (or adds it before the
/// targets, or at the end), keeping the rest.
fn write_markdown(path: &Path, s: &Soak, failures: &[String]) -> anyhow::Result<()> {
    let (kernel, host, c) = totals(s);
    let section = format!(
        "## Soak\n\nWritten by `oomwatch-soak --ooms {n} --markdown` (`cargo xtask soak`; root) \
         on Linux {release}. {n} memcg OOMs, one scenario after another (`three`: 12, 16 and 48 \
         MiB hogs in 64 MiB; `anon`, `shmem`, `threads`: 48 MiB in 32 MiB; `nested`: a 48 MiB \
         parent with 32 and 40 MiB children, hogs of 20 and 40 MiB), starting at most one every \
         {pace} ms (the kernel's OOM reports are ratelimited to 10 per 5 s), `oomwatch run \
         --interval 1` watching; after OOM {half}, with no workload running, SIGTERM and a new \
         daemon. {took:.0} s in all. Result: **{verdict}**.\n\n\
         | | count |\n|---|---:|\n\
         | kills, the kernel's (the soak's cgroups' `oom_kill`, summed) | {kernel} |\n\
         | kills, the host's `/proc/vmstat` over the daemons' lives | {host} |\n\
         | kills the daemons reported (episodes, `--events`) in the soak's cgroups / on the host | {episodes} / {episodes_host} |\n\
         | `oomwatch_oom_kills_total`, both daemons | {metrics} |\n\
         | `oomwatch_oom_marks_without_kill_total`, both daemons (threads of a killed process entering the OOM killer dying: not kills) | {remarks} |\n\
         | episodes written for a mark without a kill | {marks} |\n\
         | kills while the daemon was down | {down} |\n\
         | replays agreeing with the kernel / disagreeing / unreplayable | {agree} / {disagree} / {unrep} |\n\
         | kills without a report | {noreport} |\n\
         | reports the kernel suppressed (`callbacks suppressed`) | {supp} |\n\
         | kernel log records overwritten unread | {lost} |\n\
         | ring-buffer drops (`oomwatch_events_dropped_total`) | {drops} |\n\
         | restart: from the old daemon's exit to `/metrics` again | {gap:.0} ms |\n\n\
         {scenarios}\n\
         The daemon's VmRSS and open fds (each the least of five reads 20 ms apart), after \
         warm-up and every 10 % of the run; flat means the last sample of each daemon at most \
         4 MiB above its warm-up sample, and the same fds:\n\n{table}",
        n = s.ooms,
        release = oomwatch::host::kernel_release(),
        pace = s.pace.as_millis(),
        half = s.ooms / 2,
        took = s.elapsed.as_secs_f64(),
        verdict = if failures.is_empty() {
            "passed".to_owned()
        } else {
            format!("failed: {}", failures.join("; "))
        },
        metrics = c.kills,
        episodes = s.episodes.ours,
        episodes_host = s.episodes.kills,
        marks = s.episodes.marks,
        remarks = c.remarks,
        down = s.kills_while_down,
        agree = s.episodes.agree,
        disagree = s.episodes.disagree,
        unrep = s.episodes.unreplayable,
        noreport = s.episodes.no_report,
        supp = s.kmsg.suppressed_reports,
        lost = s.kmsg.lost_records,
        drops = c.ring_dropped,
        gap = s.restart_gap.as_secs_f64() * 1e3,
        table = samples_table(s),
        scenarios = scenarios_table(s),
    );
    let old = std::fs::read_to_string(path).unwrap_or_default();
    let mut parts: Vec<String> = Vec::new();
    for line in old.split_inclusive('\n') {
        if line.starts_with("## ") || parts.is_empty() {
            parts.push(String::new());
        }
        parts.last_mut().expect("pushed above").push_str(line);
    }
    let body = format!("{}\n\n", section.trim_end());
    match parts.iter().position(|p| p.starts_with("## Soak\n")) {
        Some(i) => parts[i] = body,
        None => match parts
            .iter()
            .position(|p| p.starts_with("## Where the targets stand"))
        {
            Some(i) => parts.insert(i, body),
            None => {
                if !old.is_empty() && !old.ends_with("\n\n") {
                    parts.push("\n".into());
                }
                parts.push(body);
            }
        },
    }
    std::fs::write(path, parts.concat()).with_context(|| format!("write {}", path.display()))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The kernel log's sequence numbers show records lost; the ratelimit's
    /// own line says how many reports it left out.
    #[test]
    fn kmsg_counts_gaps_and_suppressed_reports() {
        let mut k = KmsgSeen::default();
        let next = k.record("4,100,1,-;hog invoked oom-killer: gfp_mask=0xcc0\n", None);
        assert_eq!(next, Some(101));
        let next = k.record("4,104,2,-;oom_kill_process: 3 callbacks suppressed\n", next);
        assert_eq!(next, Some(105));
        k.record(
            "3,105,3,-;Memory cgroup out of memory: Killed process 7 (hog) total-vm:1kB\n SUBSYSTEM=x\n",
            next,
        );
        k.record("4,106,4,-;foo: 2 callbacks suppressed\n", Some(106));
        assert_eq!(k.lost_records, 3);
        assert_eq!(k.suppressed_reports, 3);
        assert_eq!(k.reports, 1);
        assert_eq!(k.killed_pids, BTreeSet::from([7]));
        assert_eq!(k.suppressed_other, ["foo: 2 callbacks suppressed"]);
    }

    #[test]
    fn counters_read_kills_drops_and_replays() {
        let text = "# HELP x\noomwatch_oom_kills_total 7\noomwatch_events_dropped_total 0\n\
                    oomwatch_oom_marks_without_kill_total 2\n\
                    oomwatch_report_replays_total{outcome=\"agree\"} 6\n\
                    oomwatch_report_replays_total{outcome=\"no_report\"} 1\n";
        let c = Counters::parse(text).unwrap();
        assert_eq!((c.kills, c.remarks, c.ring_dropped), (7, 2, 0));
        assert_eq!(c.replays["agree"], 6);
        assert_eq!(c.replays["no_report"], 1);
        assert!(Counters::parse("oomwatch_oom_kills_total 1\n").is_err());
    }

    /// A daemon's life with `kills` kills, all reported, and `remarks`
    /// threads marked without a kill, counted apart.
    fn life(kills: u64, remarks: u64) -> Life {
        Life {
            pid: 1,
            ooms: kills as usize,
            kernel_kills: kills,
            host_kills: kills,
            counters: Counters {
                kills,
                remarks,
                ..Counters::default()
            },
            episodes: Episodes {
                lines: kills,
                kills,
                ours: kills,
                agree: kills,
                ..Episodes::default()
            },
            start: Duration::ZERO,
            settle: Duration::ZERO,
            stop: Duration::ZERO,
            exit: "exit status: 0".into(),
            exit_ok: true,
        }
    }

    fn sample(after_ooms: usize, daemon: usize, rss_kb: u64, fds: usize, warm_up: bool) -> Sample {
        Sample {
            after_ooms,
            daemon,
            pid: 1,
            rss_kb,
            fds,
            secs: 0.0,
            warm_up,
        }
    }

    /// A clean run: two daemons that saw every kill, flat after warm-up.
    fn clean() -> Soak {
        Soak {
            ooms: 20,
            pace: Duration::from_millis(600),
            elapsed: Duration::ZERO,
            per_scenario: BTreeMap::new(),
            sigkilled: 20,
            lives: vec![life(10, 2), life(10, 0)],
            kills_while_down: 0,
            restart_gap: Duration::ZERO,
            episodes: Episodes {
                ours: 20,
                agree: 20,
                ..Episodes::default()
            },
            kmsg: KmsgSeen::default(),
            samples: vec![
                sample(1, 1, 9_000, 80, false),
                sample(2, 1, 10_000, 90, true),
                sample(10, 1, 10_000 + RSS_SLACK_KB, 90, false),
                sample(12, 2, 10_000, 90, true),
                sample(20, 2, 10_100, 90, false),
            ],
            events_dir: PathBuf::new(),
        }
    }

    #[test]
    fn judge_passes_a_clean_run() {
        assert_eq!(judge(&clean()), Vec::<String>::new());
    }

    /// Each criterion fails on its own, with its numbers.
    #[test]
    fn judge_fails_each_criterion() {
        let fails = |s: &Soak, what: &str| {
            let f = judge(s);
            assert!(f.len() == 1 && f[0].contains(what), "{what:?}: {f:?}");
        };
        let mut s = clean();
        s.lives[1].counters.kills = 9;
        fails(&s, "daemon 2 counted 9 victims on /metrics");

        let mut s = clean();
        s.lives[1].episodes.kills = 9;
        fails(&s, "daemon 2 missed kills");

        let mut s = clean();
        s.lives[0].episodes.marks = 1;
        fails(
            &s,
            "daemon 1 wrote 1 episodes for tasks the kernel marked without a kill",
        );

        let mut s = clean();
        s.lives[0].episodes.kills = 11;
        fails(&s, "more than the 10");

        let mut s = clean();
        s.lives[0].episodes.ours = 9;
        fails(&s, "9 kills in the soak's cgroups");

        let mut s = clean();
        s.lives[0].counters.ring_dropped = 1;
        assert!(judge(&s)[0].contains("ring buffer"), "{:?}", judge(&s));

        // A report missing with nothing in the kernel's log to say why.
        let mut s = clean();
        s.episodes.no_report = 1;
        s.episodes.agree = 19;
        assert!(judge(&s)[0].contains("without a report"), "{:?}", judge(&s));
        // Accounted by the ratelimit's own line.
        s.kmsg.suppressed_reports = 1;
        assert!(judge(&s).is_empty(), "{:?}", judge(&s));

        let mut s = clean();
        s.episodes.disagree = 1;
        assert!(judge(&s)[0].contains("disagree"), "{:?}", judge(&s));

        let mut s = clean();
        s.samples[2].rss_kb += 1;
        assert!(
            judge(&s)[0].contains("daemon 1's VmRSS grew"),
            "{:?}",
            judge(&s)
        );

        let mut s = clean();
        s.samples[4].fds = 91;
        assert!(
            judge(&s)[0].contains("daemon 2's open fds"),
            "{:?}",
            judge(&s)
        );

        let mut s = clean();
        s.kills_while_down = 1;
        assert!(
            judge(&s)[0].contains("while the daemon was down"),
            "{:?}",
            judge(&s)
        );

        let mut s = clean();
        s.lives[0].exit_ok = false;
        assert!(judge(&s)[0].contains("on SIGTERM"), "{:?}", judge(&s));
    }

    /// The section goes before the targets the first time and replaces
    /// itself after; the rest of the file stays.
    #[test]
    fn markdown_section_replaces_itself_and_keeps_the_rest() {
        let f = tempfile::NamedTempFile::new().unwrap();
        let doc = "# Benchmarks\n\n## P4 latency\n\nx\n\n## Where the targets stand\n\n| P4 |\n";
        std::fs::write(f.path(), doc).unwrap();
        write_markdown(f.path(), &clean(), &[]).unwrap();
        let once = std::fs::read_to_string(f.path()).unwrap();
        let (soak, targets) = (
            once.find("## Soak\n").unwrap(),
            once.find("## Where").unwrap(),
        );
        assert!(
            once.starts_with("# Benchmarks\n\n## P4 latency\n\nx\n\n"),
            "{once}"
        );
        assert!(soak < targets && once.ends_with("| P4 |\n"), "{once}");
        assert!(once.contains("Result: **passed**"), "{once}");
        write_markdown(f.path(), &clean(), &["a reason".into()]).unwrap();
        let twice = std::fs::read_to_string(f.path()).unwrap();
        assert_eq!(twice.matches("## Soak").count(), 1, "{twice}");
        assert!(twice.contains("Result: **failed: a reason**"), "{twice}");
        assert_eq!(
            twice.len() - once.len(),
            "failed: a reason".len() - "passed".len()
        );
    }
}
