//! OOM episodes: the kernel's own report of each OOM, read live from
//! `/dev/kmsg`, joined with the kill oomwatch's eBPF saw.
//!
//! The report (header with gfp_mask and order, the `oom-kill:constraint=…`
//! line, the task table, `Killed process`) is parsed by the same code as a
//! pasted log ([`crate::report`]), and its selection is replayed with the
//! model for that kernel version: the kernel's view at the moment of the
//! kill, checked.

use std::{
    io::Read as _,
    os::fd::AsFd as _,
    time::{Duration, Instant},
};

use anyhow::Context as _;
use serde::Serialize;

use crate::{
    ebpf::Victim,
    model::gfp::GfpTable,
    report::{self, Replay, Report},
};

/// One OOM report read from `/dev/kmsg`, with its replay.
#[derive(Debug, Clone)]
pub struct KernelReport {
    pub report: Report,
    /// The model's selection over the report's own table, or why it could
    /// not be replayed.
    pub replay: Result<Replay, String>,
    pub seen: Instant,
}

impl KernelReport {
    /// The victim of the report's first `Killed process` line.
    pub fn victim_pid(&self) -> Option<i32> {
        self.report.killed.first().map(|k| k.pid)
    }
}

/// What `/dev/kmsg` told about OOMs.
#[derive(Debug, Clone)]
pub enum KmsgEvent {
    Report(Box<KernelReport>),
    /// A task killed because its memcg has `memory.oom.group` set, after the
    /// report of the OOM whose victim is `victim`.
    GroupMember {
        pid: i32,
        victim: i32,
    },
}

/// What one message completed.
#[derive(Debug)]
pub enum Assembled {
    Report(Box<Report>),
    GroupMember { pid: i32, victim: i32 },
}

/// Collects `/dev/kmsg` messages into OOM reports: from the `invoked
/// oom-killer` header to the first `Killed process` line. After a report,
/// `Tasks in … are going to be killed due to memory.oom.group set` opens the
/// group: each `Killed process` line that follows is a member.
#[derive(Debug, Default)]
pub struct ReportAssembler {
    lines: Vec<String>,
    /// The victim of the last report, while its `memory.oom.group` kills
    /// may follow.
    group_of: Option<i32>,
    last_victim: Option<i32>,
}

/// A report longer than this many lines is cut (a runaway table) rather
/// than held without end.
const MAX_REPORT_LINES: usize = 20_000;

impl ReportAssembler {
    /// Feeds one message (no kmsg prefix); returns what it completes.
    pub fn push(&mut self, message: &str) -> Option<Assembled> {
        if message.contains("invoked oom-killer:") {
            self.lines.clear();
            self.lines.push(message.to_owned());
            self.group_of = None;
            return None;
        }
        if self.lines.is_empty() {
            if message.contains("due to memory.oom.group set") {
                self.group_of = self.last_victim;
            } else if let (Some(victim), Some(k)) = (self.group_of, report::killed_line(message)) {
                return Some(Assembled::GroupMember { pid: k.pid, victim });
            }
            return None;
        }
        if self.lines.len() < MAX_REPORT_LINES {
            self.lines.push(message.to_owned());
        }
        if message.contains("Killed process ") {
            let text = std::mem::take(&mut self.lines).join("\n");
            let r = report::parse(&text)?;
            self.last_victim = r.killed.first().map(|k| k.pid);
            return Some(Assembled::Report(Box::new(r)));
        }
        None
    }
}

/// Follows `/dev/kmsg` from its end on a thread of its own and sends each
/// completed OOM report. Fails when `/dev/kmsg` cannot be opened (no
/// CAP_SYSLOG, or `dmesg_restrict` for a non-root user).
pub fn follow_kmsg(tx: tokio::sync::mpsc::UnboundedSender<KmsgEvent>) -> anyhow::Result<()> {
    let mut kmsg = std::fs::File::open("/dev/kmsg").context("open /dev/kmsg")?;
    // Only what the kernel logs from now on.
    nix::unistd::lseek(kmsg.as_fd(), 0, nix::unistd::Whence::SeekEnd)
        .context("seek /dev/kmsg to its end")?;
    std::thread::Builder::new()
        .name("kmsg".into())
        .spawn(move || {
            let mut asm = ReportAssembler::default();
            // One record per read; records are at most 8 KiB (the kernel's
            // LOG_LINE_MAX plus the prefix).
            let mut buf = vec![0u8; 16 * 1024];
            loop {
                let n = match kmsg.read(&mut buf) {
                    Ok(0) => return,
                    Ok(n) => n,
                    // Records overwritten before we read them: go on.
                    Err(e) if e.raw_os_error() == Some(libc::EPIPE) => continue,
                    Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
                    Err(e) => {
                        tracing::warn!(error = %e, "stopped reading /dev/kmsg");
                        return;
                    }
                };
                let record = String::from_utf8_lossy(&buf[..n]);
                let message = report::kmsg_messages(&record);
                for line in message.lines() {
                    let ev = match asm.push(line) {
                        None => continue,
                        Some(Assembled::GroupMember { pid, victim }) => {
                            KmsgEvent::GroupMember { pid, victim }
                        }
                        Some(Assembled::Report(r)) => {
                            let replay = report::replay(&r).map_err(|e| e.to_string());
                            KmsgEvent::Report(Box::new(KernelReport {
                                report: *r,
                                replay,
                                seen: Instant::now(),
                            }))
                        }
                    };
                    let sent = tx.send(ev);
                    if sent.is_err() {
                        return;
                    }
                }
            }
        })
        .context("start the /dev/kmsg reader")?;
    Ok(())
}

/// One OOM, as oomwatch reports it: the kill from eBPF, the kernel's
/// report of it, and what the model says about the kernel's choice.
#[derive(Debug, Clone, Serialize)]
pub struct Episode {
    pub victim: Victim,
    /// From the report header: the allocation that failed and who made it.
    pub trigger: Option<Trigger>,
    /// `constraint`, `oom_memcg`, `task_memcg` … from the `oom-kill:` line.
    pub oom_kill: std::collections::BTreeMap<String, String>,
    /// Rows of the kernel's task table (the tasks it considered).
    pub tasks_listed: usize,
    /// The model over the report's own numbers: its pick, and whether it is
    /// the kernel's.
    pub replay: Option<ReplaySummary>,
    /// Why there is no replay (no report, or not replayable).
    pub replay_missing: Option<String>,
    /// Set for a task killed with the victim because of `memory.oom.group`:
    /// the victim's pid (whose episode carries the report).
    pub oom_group_of: Option<i32>,
    /// Milliseconds from the eBPF kill event reaching the daemon to the
    /// report's last line reaching it; negative when the report came first
    /// (the kernel prints it before it kills).
    pub report_lag_ms: Option<f64>,
    /// What the kernel's own OOM functions reported for this kill (fexit
    /// or kprobe on out_of_memory, oom_badness, oom_kill_process).
    pub kernel_scan: Option<KernelScanSummary>,
    /// The kernel's per-task points against the model's over the report.
    pub points_check: Option<crate::kpath::PointsCheck>,
    /// The kill against the prediction made just before it.
    pub prediction: Option<crate::oomstart::PredictionOutcome>,
    /// The report, for the checks that need the kernel's scan too.
    #[serde(skip)]
    pub report: Option<Box<Report>>,
}

/// The kernel scan behind one kill, in brief.
#[derive(Debug, Clone, Serialize)]
pub struct KernelScanSummary {
    /// The task that ran the OOM killer.
    pub scanner: u32,
    /// Tasks `oom_badness()` scored.
    pub tasks_scored: usize,
    pub totalpages: Option<u64>,
    pub chosen_points: Option<i64>,
    pub constraint: Option<&'static str>,
    /// From `out_of_memory()` entry to `oom_kill_process()`: the scan.
    pub scan_ms: Option<f64>,
    /// `out_of_memory()` entry to return.
    pub oom_ms: Option<f64>,
    /// The replay's totalpages when it differs from the kernel's.
    pub replay_totalpages: Option<u64>,
}

impl Episode {
    /// Adds the kernel's scan and, with the report, the per-task check.
    pub fn add_kernel_scan(&mut self, scan: &crate::kpath::KernelScan) {
        let ms = |a: Option<u64>, b: Option<u64>| match (a, b) {
            (Some(a), Some(b)) if b >= a => Some((b - a) as f64 / 1e6),
            _ => None,
        };
        self.kernel_scan = Some(KernelScanSummary {
            scanner: scan.scanner,
            tasks_scored: scan.tasks.len(),
            totalpages: scan.totalpages,
            chosen_points: scan.chosen_points,
            constraint: scan.constraint,
            scan_ms: ms(scan.entered_ns, scan.chosen_ns),
            oom_ms: ms(scan.entered_ns, scan.returned_ns),
            replay_totalpages: self
                .replay
                .as_ref()
                .map(|r| r.totalpages)
                .filter(|&t| Some(t) != scan.totalpages),
        });
        if let (Some(r), false) = (&self.report, scan.tasks.is_empty()) {
            if let Ok(model) = report::model_points(r, scan.totalpages) {
                self.points_check = Some(crate::kpath::check_points(scan, &model));
            }
        }
    }
}

#[derive(Debug, Clone, Serialize)]
pub struct Trigger {
    pub comm: Option<String>,
    pub gfp_mask: Option<String>,
    pub order: Option<i32>,
    pub oom_score_adj: Option<i16>,
    /// The report's call trace runs through `handle_mm_fault`.
    pub in_page_fault: bool,
}

#[derive(Debug, Clone, Serialize)]
pub struct ReplaySummary {
    pub model_pid: Option<i32>,
    pub kernel_pid: Option<i32>,
    pub agree: bool,
    pub totalpages: u64,
    pub totalpages_exact: bool,
}

impl Episode {
    /// A kill made because the victim's memcg has `memory.oom.group` set.
    fn group_member(victim: Victim, of: i32) -> Self {
        Episode {
            victim,
            trigger: None,
            oom_kill: Default::default(),
            tasks_listed: 0,
            replay: None,
            replay_missing: Some(format!(
                "killed with pid {of} because of memory.oom.group; that kill's episode has the report"
            )),
            oom_group_of: Some(of),
            report_lag_ms: None,
            kernel_scan: None,
            points_check: None,
            prediction: None,
            report: None,
        }
    }

    /// Joins a kill with its report (None: no report came).
    pub fn assemble(
        victim: Victim,
        report: Option<&KernelReport>,
        victim_seen: Instant,
        gfp: &GfpTable,
    ) -> Self {
        let Some(kr) = report else {
            return Episode {
                victim,
                trigger: None,
                oom_kill: Default::default(),
                tasks_listed: 0,
                replay: None,
                replay_missing: Some(
                    "no OOM report on /dev/kmsg for this kill (unreadable, or rate-limited)".into(),
                ),
                oom_group_of: None,
                report_lag_ms: None,
                kernel_scan: None,
                points_check: None,
                prediction: None,
                report: None,
            };
        };
        let r = &kr.report;
        let lag = if kr.seen >= victim_seen {
            kr.seen.duration_since(victim_seen).as_secs_f64() * 1e3
        } else {
            -(victim_seen.duration_since(kr.seen).as_secs_f64() * 1e3)
        };
        Episode {
            victim,
            trigger: Some(Trigger {
                comm: r.comm.clone(),
                gfp_mask: r.gfp_mask.map(|m| format!("{m:#x}({})", gfp.format(m))),
                order: r.order,
                oom_score_adj: r.oom_score_adj,
                in_page_fault: r.in_page_fault,
            }),
            oom_kill: r.oom_kill.iter().cloned().collect(),
            tasks_listed: r.tasks.len(),
            replay: kr.replay.as_ref().ok().map(|rp| ReplaySummary {
                model_pid: rp.model_pid,
                kernel_pid: rp.kernel_pid,
                agree: rp.agree,
                totalpages: rp.totalpages,
                totalpages_exact: rp.totalpages_exact,
            }),
            replay_missing: kr.replay.as_ref().err().cloned(),
            oom_group_of: None,
            report_lag_ms: Some(lag),
            kernel_scan: None,
            points_check: None,
            prediction: None,
            report: Some(Box::new(r.clone())),
        }
    }
}

/// Kills waiting for their report, and reports waiting for their kill
/// (whichever comes first), paired by victim pid.
#[derive(Default)]
pub struct Joiner {
    kills: Vec<(Victim, Instant)>,
    reports: Vec<KernelReport>,
    /// `memory.oom.group` members announced: (pid, victim, when).
    members: Vec<(i32, i32, Instant)>,
}

/// How long a kill waits for its report before it is logged without one.
pub const REPORT_WAIT: Duration = Duration::from_secs(3);

impl Joiner {
    pub fn kill(&mut self, v: Victim, gfp: &GfpTable) -> Option<Episode> {
        let now = Instant::now();
        if let Some(i) = self.members.iter().position(|(p, _, _)| *p == v.pid as i32) {
            let (_, victim, _) = self.members.remove(i);
            return Some(Episode::group_member(v, victim));
        }
        match self
            .reports
            .iter()
            .position(|r| r.victim_pid() == Some(v.pid as i32))
        {
            Some(i) => {
                let r = self.reports.remove(i);
                Some(Episode::assemble(v, Some(&r), now, gfp))
            }
            None => {
                self.kills.push((v, now));
                None
            }
        }
    }

    pub fn report(&mut self, r: KernelReport, gfp: &GfpTable) -> Option<Episode> {
        match self
            .kills
            .iter()
            .position(|(v, _)| Some(v.pid as i32) == r.victim_pid())
        {
            Some(i) => {
                let (v, seen) = self.kills.remove(i);
                Some(Episode::assemble(v, Some(&r), seen, gfp))
            }
            None => {
                self.reports.push(r);
                // Reports for kills eBPF never saw (it was not attached yet)
                // do not pile up.
                self.reports
                    .retain(|r| r.seen.elapsed() < Duration::from_secs(60));
                None
            }
        }
    }

    /// A `memory.oom.group` member announced on `/dev/kmsg`.
    pub fn group_member(&mut self, pid: i32, victim: i32) -> Option<Episode> {
        match self.kills.iter().position(|(v, _)| v.pid as i32 == pid) {
            Some(i) => {
                let (v, _) = self.kills.remove(i);
                Some(Episode::group_member(v, victim))
            }
            None => {
                self.members.push((pid, victim, Instant::now()));
                self.members
                    .retain(|(_, _, at)| at.elapsed() < Duration::from_secs(60));
                None
            }
        }
    }

    /// Kills whose report did not come in time, as episodes without one.
    pub fn expired(&mut self, gfp: &GfpTable) -> Vec<Episode> {
        let (old, keep): (Vec<_>, Vec<_>) = std::mem::take(&mut self.kills)
            .into_iter()
            .partition(|(_, seen)| seen.elapsed() >= REPORT_WAIT);
        self.kills = keep;
        old.into_iter()
            .map(|(v, seen)| Episode::assemble(v, None, seen, gfp))
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn assembler_cuts_one_report_from_header_to_killed_line() {
        let mut a = ReportAssembler::default();
        assert!(a.push("some unrelated line").is_none());
        let lines = [
            "python3 invoked oom-killer: gfp_mask=0xcc0(GFP_KERNEL), order=0, oom_score_adj=0",
            "CPU: 1 PID: 8175 Comm: python3 Not tainted 6.18.44 #1",
            "memory: usage 65536kB, limit 65536kB, failcnt 10",
            "Tasks state (memory values in pages):",
            "[  pid  ]   uid  tgid total_vm      rss pgtables_bytes swapents oom_score_adj name",
            "[   8175]     0  8175    29742    16288   184320        0             0 python3",
            "oom-kill:constraint=CONSTRAINT_MEMCG,nodemask=(null),cpuset=/,mems_allowed=0,oom_memcg=/job,task_memcg=/job,task=python3,pid=8175,uid=0",
        ];
        for l in lines {
            assert!(a.push(l).is_none(), "{l}");
        }
        let Some(Assembled::Report(r)) = a
            .push("Memory cgroup out of memory: Killed process 8175 (python3) total-vm:118968kB, anon-rss:65152kB, file-rss:0kB, shmem-rss:0kB, UID:0 pgtables:180kB oom_score_adj:0")
        else {
            panic!("a report")
        };
        assert_eq!(r.killed[0].pid, 8175);
        assert_eq!(r.order, Some(0));
        assert_eq!(r.tasks.len(), 1);
        // Lines after the report are not part of the next one.
        assert!(a.push("oom_reaper: reaped process 8175").is_none());
        assert!(a.lines.is_empty());
        // Without the oom.group line, a later Killed line is no member.
        assert!(
            a.push("Memory cgroup out of memory: Killed process 9 (x) total-vm:1kB")
                .is_none()
        );
        // memory.oom.group: the members killed after the victim.
        assert!(
            a.push("Tasks in /job are going to be killed due to memory.oom.group set")
                .is_none()
        );
        match a.push("Memory cgroup out of memory: Killed process 8176 (python3) total-vm:1kB, anon-rss:4kB, file-rss:0kB, shmem-rss:0kB, UID:0 pgtables:4kB oom_score_adj:0") {
            Some(Assembled::GroupMember { pid: 8176, victim: 8175 }) => {}
            other => panic!("{other:?}"),
        }
        // A new report closes the group.
        assert!(
            a.push("x invoked oom-killer: gfp_mask=0xcc0(GFP_KERNEL), order=0, oom_score_adj=0")
                .is_none()
        );
        assert!(a.group_of.is_none());
    }
}
