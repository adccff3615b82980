//! One scenario, run: its cgroups, its hogs one after the other, the
//! prediction from a snapshot taken just before the trigger, the trigger,
//! and then what the kernel's log, eBPF, the replay of the kernel's report
//! and the kernel's own points said about the kill.

use std::{
    io::{BufRead as _, BufReader, Write as _},
    os::unix::process::ExitStatusExt as _,
    path::{Path, PathBuf},
    process::{Child, ChildStdout, Command, Stdio},
    time::{Duration, Instant},
};

use anyhow::Context as _;
use serde::Serialize;

use super::{
    cgroup::Memcg,
    hog::Kind,
    observe::Observers,
    scenarios::{HogSpec, LIMIT_MIB, Scenario, TRIGGER_EXTRA_MIB},
};
use crate::{
    cli::predict::predict_first,
    host::cgroup::{CgroupVersion, Hierarchy},
    model::explain::victim,
    snapshot::{Domains, Snapshotter, Want},
};

/// How long a hog may take to build its memory.
const READY_TIMEOUT: Duration = Duration::from_secs(30);
/// How long the trigger may take to meet the limit and the kernel to kill.
const KILL_TIMEOUT: Duration = Duration::from_secs(30);
/// After the kill, how long the sides may take to report it.
const SIDES_TIMEOUT: Duration = Duration::from_secs(5);
/// How long the kernel's report may lag its `Killed process` line, or be
/// missing (the kernel rate-limits reports, not kill lines).
const REPORT_TIMEOUT: Duration = Duration::from_secs(2);
/// After the sides are in, how long further kills (oom.group members, a
/// second OOM) get to show.
const GRACE: Duration = Duration::from_millis(300);

/// What the selftest needs for every scenario.
pub struct Ctx {
    pub hierarchy: Hierarchy,
    pub snapper: Snapshotter,
    pub obs: Observers,
    /// This executable: the hogs are `<exe> selftest-hog …`.
    pub exe: PathBuf,
}

/// A scenario's result.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Status {
    Passed,
    Failed,
    Skipped,
}

/// One side's victim, or why that side is unavailable.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Side {
    /// The victim process (its tgid).
    pub pid: Option<i32>,
    /// Which of the scenario's hogs that is (`trigger` for the trigger).
    pub hog: Option<String>,
    pub comm: Option<String>,
    /// Points: the model's for the prediction, the kernel's own for
    /// `kernel_points`.
    pub points: Option<i64>,
    pub unavailable: Option<String>,
}

impl Side {
    fn unavailable(why: impl Into<String>) -> Self {
        Side {
            unavailable: Some(why.into()),
            ..Side::default()
        }
    }
}

/// The replay of the kernel's report of this kill.
#[derive(Debug, Clone, Default, Serialize)]
pub struct ReplaySide {
    /// Whether the model, run on the report's own table under the report's
    /// kernel rules, picks the task the kernel killed (None: not judged).
    pub agrees: Option<bool>,
    /// The replay's pick.
    pub pid: Option<i32>,
    pub hog: Option<String>,
    /// The replay's verdict, in words.
    pub reason: Option<String>,
    pub unavailable: Option<String>,
}

/// One hog as it ran.
#[derive(Debug, Clone, Serialize)]
pub struct HogRun {
    pub name: String,
    pub pid: u32,
    pub mib: u64,
    pub kind: Kind,
    pub oom_score_adj: i16,
    pub cgroup: String,
}

/// One scenario's result: the four sides and the verdict.
#[derive(Debug, Clone, Serialize)]
pub struct ScenarioResult {
    pub name: &'static str,
    pub about: &'static str,
    pub status: Status,
    /// Why it failed or was skipped; a note when it passed otherwise than
    /// designed.
    pub reason: Option<String>,
    /// The hog the scenario was built to have killed.
    pub expected: &'static str,
    /// The OOM domain (the limited memory cgroup).
    pub domain: Option<String>,
    pub hogs: Vec<HogRun>,
    pub predicted: Side,
    /// The kernel's victim: its `Killed process` line on /dev/kmsg.
    pub kernel: Side,
    /// eBPF's victim (`oom:mark_victim`).
    pub ebpf: Side,
    pub replay: ReplaySide,
    /// The kernel's own scan (hooks on `oom_badness`/`oom_kill_process`).
    pub kernel_points: Side,
    /// Further processes of this scenario the kernel killed (the
    /// `memory.oom.group` members, or a second OOM), in its order.
    pub also_killed: Vec<i32>,
    pub seconds: f64,
}

impl ScenarioResult {
    fn new(sc: &Scenario) -> Self {
        ScenarioResult {
            name: sc.name,
            about: sc.about,
            status: Status::Failed,
            reason: None,
            expected: sc.expect,
            domain: None,
            hogs: Vec::new(),
            predicted: Side::default(),
            kernel: Side::default(),
            ebpf: Side::default(),
            replay: ReplaySide::default(),
            kernel_points: Side::default(),
            also_killed: Vec::new(),
            seconds: 0.0,
        }
    }

    fn skip(mut self, why: String) -> Self {
        self.status = Status::Skipped;
        self.reason = Some(why);
        self
    }

    fn fail(mut self, why: String) -> Self {
        self.status = Status::Failed;
        self.reason = Some(why);
        self
    }
}

/// A running hog, killed when dropped.
struct Hog {
    name: String,
    child: Child,
    stdout: BufReader<ChildStdout>,
    /// The process sharing its memory (`--share-mm`).
    shared: Option<u32>,
}

/// Why a hog did not get going.
enum HogError {
    /// It may not set its oom_score_adj.
    AdjRefused(String),
    Other(String),
}

impl Hog {
    /// Starts `<exe> selftest-hog` and reads its `adj` line; it waits for
    /// `go` in its memory cgroup.
    fn spawn(
        exe: &Path,
        name: &str,
        mib: u64,
        kind: Kind,
        adj: i16,
        share_mm: bool,
    ) -> Result<Self, HogError> {
        let kind_arg = match kind {
            Kind::Anon => "anon",
            Kind::Shmem => "shmem",
            Kind::Sparse => "sparse",
            Kind::Threads => "threads",
        };
        let mut cmd = Command::new(exe);
        cmd.args([
            "selftest-hog",
            "--mib",
            &mib.to_string(),
            "--kind",
            kind_arg,
        ])
        .arg(format!("--adj={adj}"))
        .env("RUST_LOG", "error")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::null());
        if share_mm {
            cmd.arg("--share-mm");
        }
        let mut child = cmd
            .spawn()
            .map_err(|e| HogError::Other(format!("start {} selftest-hog: {e}", exe.display())))?;
        let stdout = BufReader::new(child.stdout.take().expect("piped"));
        let mut hog = Hog {
            name: name.to_owned(),
            child,
            stdout,
            shared: None,
        };
        match hog.next_line(READY_TIMEOUT).as_deref() {
            Some("adj ok") => Ok(hog),
            Some(l) if l.starts_with("adj refused: ") => Err(HogError::AdjRefused(
                l.trim_start_matches("adj refused: ").to_owned(),
            )),
            other => Err(HogError::Other(format!(
                "hog {name} said {other:?} instead of `adj ok`"
            ))),
        }
    }

    fn pid(&self) -> u32 {
        self.child.id()
    }

    fn go(&mut self) -> anyhow::Result<()> {
        let stdin = self.child.stdin.as_mut().context("hog stdin")?;
        stdin.write_all(b"go\n")?;
        stdin.flush()?;
        Ok(())
    }

    /// Waits for `ready`: None when ready, else what happened.
    fn wait_ready(&mut self) -> Option<String> {
        match self.next_line(READY_TIMEOUT) {
            Some(l) if l == "ready" => None,
            Some(l) if l.starts_with("ready ") => {
                self.shared = l.trim_start_matches("ready ").trim().parse().ok();
                None
            }
            Some(l) => Some(l),
            None => Some(match self.child.try_wait() {
                Ok(Some(s)) => format!("it exited ({s})"),
                _ => format!("nothing within {} s", READY_TIMEOUT.as_secs()),
            }),
        }
    }

    /// The next line, trimmed; None at its end or after `timeout`.
    fn next_line(&mut self, timeout: Duration) -> Option<String> {
        use std::os::fd::AsFd as _;
        if self.stdout.buffer().is_empty() {
            let mut fds = [nix::poll::PollFd::new(
                self.stdout.get_ref().as_fd(),
                nix::poll::PollFlags::POLLIN,
            )];
            let ms = u16::try_from(timeout.as_millis()).unwrap_or(u16::MAX);
            match nix::poll::poll(&mut fds, nix::poll::PollTimeout::from(ms)) {
                Ok(n) if n > 0 => {}
                _ => return None,
            }
        }
        let mut line = String::new();
        match self.stdout.read_line(&mut line) {
            Ok(n) if n > 0 => Some(line.trim().to_owned()),
            _ => None,
        }
    }

    /// Whether it was killed by SIGKILL.
    fn killed(&mut self) -> bool {
        matches!(self.child.try_wait(), Ok(Some(s)) if s.signal() == Some(libc::SIGKILL))
    }
}

impl Drop for Hog {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Runs `sc`. Err: the selftest cannot go on (a cgroup or its limit could
/// not be made); a failing scenario is an Ok result with its reason.
pub fn run(sc: &Scenario, ctx: &mut Ctx) -> anyhow::Result<ScenarioResult> {
    let started = Instant::now();
    let mut r = ScenarioResult::new(sc);
    let h = ctx.hierarchy.clone();
    if sc.oom_group && h.version != CgroupVersion::V2 {
        return Ok(r.skip(format!(
            "memory.oom.group exists only in cgroup v2; this host's memory controller is on \
             cgroup {}",
            h.version
        )));
    }
    // Guards: children are dropped (removed) before their parent.
    let top = Memcg::create(
        &h,
        None,
        &format!("oomwatch-selftest-{}-{}", std::process::id(), sc.name),
        Some(LIMIT_MIB << 20),
    )?;
    r.domain = Some(top.path.clone());
    if h.version == CgroupVersion::V2 && !sc.children.is_empty() {
        top.set("cgroup.subtree_control", "+memory")?;
    }
    if sc.oom_group {
        top.set("memory.oom.group", "1")?;
    }
    let children = sc
        .children
        .iter()
        .map(|name| Memcg::create(&h, Some(&top), name, None))
        .collect::<anyhow::Result<Vec<_>>>()?;
    let cg_of = |child: Option<usize>| child.map_or(&top, |i| &children[i]);

    let mut hogs: Vec<Hog> = Vec::new();
    let result = (|| -> Result<(), Stop> {
        for spec in sc.hogs {
            let hog = start_hog(ctx, spec, cg_of(spec.child), &mut r)?;
            hogs.push(hog);
        }
        Ok(())
    })();
    if let Err(why) = result {
        drop(hogs);
        drop(children);
        let r = match why {
            Stop::Skip(why) => r.skip(why),
            Stop::Fail(why) => r.fail(why),
        };
        return Ok(finish(r, started));
    }

    // The trigger: what was free and a little more, so it meets the limit
    // holding about what was free.
    let usage = match top.usage() {
        Ok(u) => u,
        Err(e) => return Ok(finish(r.fail(format!("{e:#}")), started)),
    };
    let free_mib = ((LIMIT_MIB << 20).saturating_sub(usage)).div_ceil(1 << 20);
    let trigger_mib = free_mib + TRIGGER_EXTRA_MIB;
    let trigger_cg = cg_of(sc.trigger_child);
    let mut trigger = match Hog::spawn(&ctx.exe, "trigger", trigger_mib, Kind::Anon, 0, false) {
        Ok(t) => t,
        Err(HogError::AdjRefused(e)) | Err(HogError::Other(e)) => {
            return Ok(finish(
                r.fail(format!("the trigger did not start: {e}")),
                started,
            ));
        }
    };
    if let Err(e) = trigger_cg.add(trigger.pid()) {
        return Ok(finish(r.fail(format!("{e:#}")), started));
    }
    r.hogs.push(HogRun {
        name: "trigger".into(),
        pid: trigger.pid(),
        mib: trigger_mib,
        kind: Kind::Anon,
        oom_score_adj: 0,
        cgroup: trigger_cg.path.clone(),
    });

    // The prediction, from a snapshot taken now, in the trigger's domain.
    let names = names_of(&hogs, &trigger);
    r.predicted = predict(ctx, &trigger_cg.path, &names);
    if let Err(e) = trigger.go() {
        return Ok(finish(r.fail(format!("start the trigger: {e:#}")), started));
    }

    let pids: Vec<i32> = names.iter().map(|(p, _)| *p).collect();
    let (kills_before, victims_before, reports_before) = (
        ctx.obs.kills.len(),
        ctx.obs.victims.len(),
        ctx.obs.reports.len(),
    );
    let deadline = Instant::now() + KILL_TIMEOUT;
    let mut dead_seen = false;
    while Instant::now() < deadline {
        ctx.obs.pump_for(Duration::from_millis(20));
        dead_seen = hogs.iter_mut().any(Hog::killed) || trigger.killed();
        let ours = |p: i32| pids.contains(&p);
        if dead_seen
            || ctx.obs.kills[kills_before..].iter().any(|k| ours(k.pid))
            || ctx.obs.victims[victims_before..]
                .iter()
                .any(|v| ours(v.tgid.unwrap_or(v.pid) as i32))
        {
            break;
        }
    }
    // Every available side, or its timeout.
    let first_seen = Instant::now();
    loop {
        let kernel_pid = kernel_kill(ctx, kills_before, &pids).map(|k| k.pid);
        let kernel = kernel_pid.is_some();
        // eBPF's kill of the kernel's victim: a later kill (the trigger,
        // charging again) can reach the ring first when the victim's event
        // had to be recovered (ebpf::ring).
        let ebpf = match kernel_pid {
            Some(k) => ebpf_victim(ctx, victims_before, &[k]).is_some(),
            None => ebpf_victim(ctx, victims_before, &pids).is_some(),
        };
        let report = report_of(ctx, reports_before, &pids).is_some();
        let waited = first_seen.elapsed();
        let done = (kernel || ctx.obs.kmsg_unavailable.is_some())
            && (ebpf || ctx.obs.ebpf_unavailable.is_some())
            && (report || ctx.obs.kmsg_unavailable.is_some() || waited >= REPORT_TIMEOUT);
        if done || waited >= SIDES_TIMEOUT {
            break;
        }
        ctx.obs.pump_for(Duration::from_millis(20));
    }
    ctx.obs.pump_for(GRACE);
    judge(
        &mut r,
        ctx,
        &names,
        kills_before,
        victims_before,
        reports_before,
        dead_seen,
    );
    drop(trigger);
    drop(hogs);
    drop(children);
    drop(top);
    Ok(finish(r, started))
}

fn finish(mut r: ScenarioResult, started: Instant) -> ScenarioResult {
    r.seconds = (started.elapsed().as_secs_f64() * 10.0).round() / 10.0;
    r
}

/// Why a scenario stopped before its trigger.
enum Stop {
    /// This host cannot run it (the reason).
    Skip(String),
    Fail(String),
}

/// Starts one hog in `cg` and waits until it is ready.
fn start_hog(ctx: &Ctx, spec: &HogSpec, cg: &Memcg, r: &mut ScenarioResult) -> Result<Hog, Stop> {
    let mut hog = match Hog::spawn(
        &ctx.exe,
        spec.name,
        spec.mib as u64,
        spec.kind,
        spec.adj,
        spec.share_mm,
    ) {
        Ok(h) => h,
        Err(HogError::AdjRefused(e)) => {
            return Err(Stop::Skip(format!(
                "hog {} may not set oom_score_adj {}: {e} (lowering oom_score_adj below \
                 what this process may set needs CAP_SYS_RESOURCE{})",
                spec.name,
                spec.adj,
                if crate::host::privilege::Privileges::current().cap_sys_resource {
                    ""
                } else {
                    ", which this process lacks"
                }
            )));
        }
        Err(HogError::Other(e)) => return Err(Stop::Fail(e)),
    };
    cg.add(hog.pid())
        .map_err(|e| Stop::Fail(format!("{e:#}")))?;
    r.hogs.push(HogRun {
        name: spec.name.to_owned(),
        pid: hog.pid(),
        mib: spec.mib as u64,
        kind: spec.kind,
        oom_score_adj: spec.adj,
        cgroup: cg.path.clone(),
    });
    hog.go()
        .map_err(|e| Stop::Fail(format!("start hog {}: {e:#}", spec.name)))?;
    if let Some(what) = hog.wait_ready() {
        return Err(Stop::Fail(format!(
            "hog {} ({} MiB {:?}) did not get ready: {what}",
            spec.name, spec.mib, spec.kind
        )));
    }
    if spec.share_mm {
        let Some(shared) = hog.shared else {
            return Err(Stop::Fail(format!(
                "hog {} named no process sharing its memory",
                spec.name
            )));
        };
        r.hogs.push(HogRun {
            name: format!("{}'", spec.name),
            pid: shared,
            mib: spec.mib as u64,
            kind: spec.kind,
            oom_score_adj: spec.adj,
            cgroup: cg.path.clone(),
        });
    }
    Ok(hog)
}

/// Every process of the scenario with its hog's name.
fn names_of(hogs: &[Hog], trigger: &Hog) -> Vec<(i32, String)> {
    let mut out = Vec::new();
    for h in hogs {
        out.push((h.pid() as i32, h.name.clone()));
        if let Some(s) = h.shared {
            out.push((s as i32, format!("{}'", h.name)));
        }
    }
    out.push((trigger.pid() as i32, "trigger".into()));
    out
}

fn hog_name(names: &[(i32, String)], pid: i32) -> Option<String> {
    names
        .iter()
        .find(|(p, _)| *p == pid)
        .map(|(_, n)| n.clone())
}

/// The model's victim in the domain of memory cgroup `path`, from a
/// snapshot taken now.
fn predict(ctx: &mut Ctx, path: &str, names: &[(i32, String)]) -> Side {
    let snap = ctx.snapper.read_system(
        Path::new("/proc"),
        &Want::domains(Domains::Memcg(path.to_owned())),
    );
    let snap = match snap {
        Ok(s) => s,
        Err(e) => return Side::unavailable(format!("snapshot: {e:#}")),
    };
    let Some(p) = predict_first(snap, ctx.snapper.in_use().clone()) else {
        return Side::unavailable("the snapshot built no domain");
    };
    match victim(&p.selection) {
        Some(v) => Side {
            pid: Some(v.tgid),
            hog: hog_name(names, v.tgid),
            comm: Some(v.comm),
            points: Some(v.points),
            unavailable: None,
        },
        None => Side::unavailable(format!(
            "the model names no victim: {:?}",
            p.selection.outcome
        )),
    }
}

fn kernel_kill<'a>(
    ctx: &'a Ctx,
    from: usize,
    pids: &[i32],
) -> Option<&'a crate::replay::parse::Killed> {
    ctx.obs.kills[from..].iter().find(|k| pids.contains(&k.pid))
}

fn ebpf_victim<'a>(ctx: &'a Ctx, from: usize, pids: &[i32]) -> Option<&'a crate::ebpf::Victim> {
    ctx.obs.victims[from..]
        .iter()
        .find(|v| pids.contains(&(v.tgid.unwrap_or(v.pid) as i32)))
}

fn report_of<'a>(
    ctx: &'a Ctx,
    from: usize,
    pids: &[i32],
) -> Option<&'a crate::replay::KernelReport> {
    ctx.obs.reports[from..]
        .iter()
        .find(|r| r.victim_pid().is_some_and(|p| pids.contains(&p)))
}

/// Fills in the sides and the verdict.
fn judge(
    r: &mut ScenarioResult,
    ctx: &Ctx,
    names: &[(i32, String)],
    kills_from: usize,
    victims_from: usize,
    reports_from: usize,
    dead_seen: bool,
) {
    let pids: Vec<i32> = names.iter().map(|(p, _)| *p).collect();
    let obs = &ctx.obs;
    r.kernel = match (&obs.kmsg_unavailable, kernel_kill(ctx, kills_from, &pids)) {
        (Some(why), _) => Side::unavailable(why.clone()),
        (None, Some(k)) => Side {
            pid: Some(k.pid),
            hog: hog_name(names, k.pid),
            comm: Some(k.comm.clone()),
            ..Side::default()
        },
        (None, None) => Side::default(),
    };
    r.also_killed = obs.kills[kills_from..]
        .iter()
        .filter(|k| pids.contains(&k.pid) && Some(k.pid) != r.kernel.pid)
        .map(|k| k.pid)
        .collect();
    let seen = r
        .kernel
        .pid
        .and_then(|k| ebpf_victim(ctx, victims_from, &[k]))
        .or_else(|| ebpf_victim(ctx, victims_from, &pids));
    r.ebpf = match (&obs.ebpf_unavailable, seen) {
        (Some(why), _) => Side::unavailable(why.clone()),
        (None, Some(v)) => {
            let pid = v.tgid.unwrap_or(v.pid) as i32;
            Side {
                pid: Some(pid),
                hog: hog_name(names, pid),
                comm: v.comm.clone(),
                ..Side::default()
            }
        }
        (None, None) => Side::default(),
    };
    r.replay = match (&obs.kmsg_unavailable, report_of(ctx, reports_from, &pids)) {
        (Some(why), _) => ReplaySide {
            unavailable: Some(why.clone()),
            ..ReplaySide::default()
        },
        (None, None) => ReplaySide {
            unavailable: Some(
                "the kernel printed no report for this kill (it prints at most 10 per 5 s; \
                 the Killed process line is never held back)"
                    .into(),
            ),
            ..ReplaySide::default()
        },
        (None, Some(rep)) => {
            let a = &rep.analysis;
            let pid = a.predicted_victim.as_ref().map(|v| v.tgid);
            ReplaySide {
                agrees: a.agrees,
                pid,
                hog: pid.and_then(|p| hog_name(names, p)),
                reason: Some(a.reason.clone()),
                unavailable: a
                    .agrees
                    .is_none()
                    .then(|| format!("the report could not be judged: {}", a.reason)),
            }
        }
    };
    r.kernel_points = match &obs.hooks_unavailable {
        Some(why) => Side::unavailable(why.clone()),
        None => {
            let scan = r
                .kernel
                .pid
                .or(r.ebpf.pid)
                .and_then(|p| obs.scans.for_victim(p as u32, Some(p as u32)));
            match scan {
                Some(s) => {
                    let pid = s.chosen_tgid.map(|t| t as i32);
                    Side {
                        pid,
                        hog: pid.and_then(|p| hog_name(names, p)),
                        points: s.chosen_points,
                        ..Side::default()
                    }
                }
                None => Side::unavailable("the kernel's hooks reported no scan for this kill"),
            }
        }
    };
    r.status = Status::Passed;
    r.reason = verdict(r, dead_seen).err();
    if r.reason.is_some() {
        r.status = Status::Failed;
    } else if r.predicted.hog.as_deref() != Some(r.expected) {
        r.reason = Some(format!(
            "all sides agree, but not on the hog the scenario was built for ({}): the sizes \
             did not play out on this kernel",
            r.expected
        ));
    }
}

/// Ok when every available side names the predicted victim.
fn verdict(r: &ScenarioResult, dead_seen: bool) -> Result<(), String> {
    let Some(predicted) = r.predicted.pid else {
        return Err(format!(
            "no prediction: {}",
            r.predicted.unavailable.as_deref().unwrap_or("?")
        ));
    };
    let mut seen = Vec::new();
    for (side, s) in [("kernel", &r.kernel), ("eBPF", &r.ebpf)] {
        match (s.pid, &s.unavailable) {
            (Some(p), _) => seen.push((side, p)),
            (None, Some(_)) => {}
            (None, None) => {
                return Err(format!(
                    "{side} saw no kill of this scenario's tasks{}",
                    if dead_seen {
                        " although one of them died of SIGKILL"
                    } else {
                        " (no OOM kill within 30 s: did the limit apply?)"
                    }
                ));
            }
        }
    }
    if let Some(p) = r.kernel_points.pid {
        seen.push(("kernel points", p));
    }
    if seen.is_empty() {
        return Err("no side could see the kill (kernel log and eBPF both unavailable)".into());
    }
    let wrong: Vec<String> = seen
        .iter()
        .filter(|(_, p)| *p != predicted)
        .map(|(side, p)| format!("{side} {p}"))
        .collect();
    if !wrong.is_empty() {
        return Err(format!(
            "predicted {predicted} ({}), but: {}",
            r.predicted.hog.as_deref().unwrap_or("?"),
            wrong.join(", ")
        ));
    }
    match (r.replay.agrees, r.replay.pid) {
        (Some(false), _) => Err(format!(
            "the replay of the kernel's report disagrees: {}",
            r.replay.reason.as_deref().unwrap_or("?")
        )),
        (Some(true), Some(p)) if p != predicted => Err(format!(
            "the replay of the kernel's report picks {p}, the prediction {predicted}"
        )),
        _ => Ok(()),
    }
}
