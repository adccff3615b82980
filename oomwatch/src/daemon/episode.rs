//! OOM episodes: the kernel's own report of each OOM, read live from
//! `/dev/kmsg`, joined with the kill oomwatch's eBPF saw.
//!
//! The report (header with gfp_mask and order, the `oom-kill:constraint=…`
//! line, the task table, `Killed process`) is parsed by the same code as a
//! pasted log ([`crate::replay`]), and its selection is replayed with the
//! model for that kernel version: the kernel's view at the moment of the
//! kill, checked.

use std::time::{Duration, Instant};

use serde::Serialize;

use crate::{
    ebpf::Victim,
    model::gfp::GfpTable,
    replay::{KernelReport, ReplayReport, points_at, summarize},
    telemetry::metrics::EpisodeCounts,
};

/// One OOM, as oomwatch reports it: the kill from eBPF, the kernel's
/// report of it, and what the model says about the kernel's choice.
#[derive(Debug, Clone, Serialize)]
pub struct Episode {
    /// When the kernel marked the victim, on the wall clock (RFC 3339, UTC,
    /// microseconds): the victim's `boot_ns` moved by the distance between
    /// CLOCK_BOOTTIME and CLOCK_REALTIME when the episode was made.
    pub time: String,
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
    pub points_check: Option<crate::daemon::kernel_scan::PointsCheck>,
    /// The kill against the prediction made just before it.
    pub prediction: Option<crate::daemon::oomstart::PredictionOutcome>,
    /// The replay of the report, for the check that needs the kernel's scan
    /// too (the report was replayed once; it is not kept).
    #[serde(skip)]
    pub analysis: Option<Box<ReplayReport>>,
    /// No report came, but the kernel's `Killed process` line for this
    /// victim did: a kill whose report was rate-limited, not a dying task
    /// marked without a kill.
    #[serde(skip)]
    pub killed_line_only: bool,
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
    /// What the counters take of this episode.
    pub fn counts(&self) -> EpisodeCounts<'_> {
        EpisodeCounts {
            constraint: self
                .oom_kill
                .get("constraint")
                .map_or("unknown", String::as_str),
            replay: match (&self.replay, self.trigger.is_some()) {
                _ if self.oom_group_of.is_some() => "oom_group",
                (Some(r), _) if r.agree => "agree",
                (Some(_), _) => "disagree",
                (None, true) => "unreplayable",
                (None, false) if self.victim.marked_itself() && !self.killed_line_only => "exiting",
                (None, false) => "no_report",
            },
            points: self.points_check.as_ref().map(|c| {
                (
                    c.equal as u64,
                    c.differ.len() as u64,
                    c.changed.len() as u64,
                )
            }),
            in_page_fault: self.trigger.as_ref().is_some_and(|t| t.in_page_fault),
        }
    }

    /// Adds the kernel's scan and, with the report, the per-task check.
    pub fn add_kernel_scan(&mut self, scan: &crate::daemon::kernel_scan::KernelScan) {
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
        if let (Some(a), false) = (&self.analysis, scan.tasks.is_empty()) {
            if let Ok(model) = points_at(a, scan.totalpages) {
                self.points_check = Some(crate::daemon::kernel_scan::check_points(scan, &model));
            }
        }
    }
}

/// Why a kill has no report. A victim that was itself the task in the OOM
/// killer was, but for a rate-limited report, already dying: `out_of_memory()`
/// marks a `current` that has a fatal signal pending or is exiting as a
/// victim at once, with no scan and no report (`task_will_free_mem(current)`,
/// mm/oom_kill.c), as `oom_kill_process()` does for
/// a chosen victim already on its way out.
fn no_report_reason(victim: &Victim) -> String {
    if victim.marked_itself() {
        "the victim marked itself, with no report: it entered the OOM killer already dying \
         (fatal signal pending or exiting), and out_of_memory() marks such a task without a \
         scan or report (task_will_free_mem(current))"
            .into()
    } else {
        "no OOM report on /dev/kmsg for this kill (unreadable, or rate-limited)".into()
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

/// `boot_ns` (CLOCK_BOOTTIME, as the eBPF side stamps kills) as RFC 3339 on
/// the wall clock.
pub fn wall_clock(boot_ns: u64) -> String {
    let ago =
        std::time::Duration::from_nanos(crate::daemon::oomstart::boot_ns().saturating_sub(boot_ns));
    let at = std::time::SystemTime::now()
        .checked_sub(ago)
        .unwrap_or(std::time::UNIX_EPOCH);
    humantime::format_rfc3339_micros(at).to_string()
}

impl Episode {
    /// A kill made because the victim's memcg has `memory.oom.group` set.
    fn group_member(victim: Victim, of: i32) -> Self {
        Episode {
            time: wall_clock(victim.boot_ns),
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
            analysis: None,
            killed_line_only: false,
        }
    }

    /// Joins a kill with its report (None: no report came).
    pub fn assemble(
        victim: Victim,
        report: Option<KernelReport>,
        victim_seen: Instant,
        gfp: &GfpTable,
    ) -> Self {
        let Some(kr) = report else {
            let missing = no_report_reason(&victim);
            return Episode {
                time: wall_clock(victim.boot_ns),
                victim,
                trigger: None,
                oom_kill: Default::default(),
                tasks_listed: 0,
                replay: None,
                replay_missing: Some(missing),
                oom_group_of: None,
                report_lag_ms: None,
                kernel_scan: None,
                points_check: None,
                prediction: None,
                analysis: None,
                killed_line_only: false,
            };
        };
        let a = kr.analysis;
        let replay = summarize(&a).map_err(|e| e.to_string());
        let lag = if kr.seen >= victim_seen {
            kr.seen.duration_since(victim_seen).as_secs_f64() * 1e3
        } else {
            -(victim_seen.duration_since(kr.seen).as_secs_f64() * 1e3)
        };
        Episode {
            time: wall_clock(victim.boot_ns),
            victim,
            trigger: Some(Trigger {
                comm: a.trigger.comm.clone(),
                gfp_mask: kr.gfp_mask.map(|m| format!("{m:#x}({})", gfp.format(m))),
                order: a.trigger.order,
                oom_score_adj: a.trigger.oom_score_adj,
                in_page_fault: a.trigger.in_page_fault,
            }),
            oom_kill: kr.oom_kill.into_iter().collect(),
            tasks_listed: a.tasks.len(),
            replay: replay.as_ref().ok().map(|rp| ReplaySummary {
                model_pid: rp.model_pid,
                kernel_pid: rp.kernel_pid,
                agree: rp.agree,
                totalpages: rp.totalpages,
                totalpages_exact: rp.totalpages_exact,
            }),
            replay_missing: replay.as_ref().err().cloned(),
            oom_group_of: None,
            report_lag_ms: Some(lag),
            kernel_scan: None,
            points_check: None,
            prediction: None,
            analysis: Some(Box::new(a)),
            killed_line_only: false,
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
    /// `Killed process` lines seen without a report: (pid, when).
    killed_lines: Vec<(i32, Instant)>,
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
                Some(Episode::assemble(v, Some(r), now, gfp))
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
                Some(Episode::assemble(v, Some(r), seen, gfp))
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

    /// Every kill still waiting for its report, as an episode without one:
    /// the daemon is stopping, and a kill it counted is not dropped unsaid.
    pub fn drain(&mut self, gfp: &GfpTable) -> Vec<Episode> {
        std::mem::take(&mut self.kills)
            .into_iter()
            .map(|(v, seen)| {
                let mut ep = Episode::assemble(v, None, seen, gfp);
                ep.replay_missing =
                    Some("the daemon stopped before this kill's report came".into());
                ep
            })
            .collect()
    }

    /// A `Killed process PID` line with no report before it: the kernel
    /// killed PID and its report was rate-limited (or its lines lost).
    pub fn killed_line(&mut self, pid: i32) {
        self.killed_lines.push((pid, Instant::now()));
        self.killed_lines
            .retain(|(_, at)| at.elapsed() < Duration::from_secs(60));
    }

    /// Kills whose report did not come in time, as episodes without one.
    pub fn expired(&mut self, gfp: &GfpTable) -> Vec<Episode> {
        let (old, keep): (Vec<_>, Vec<_>) = std::mem::take(&mut self.kills)
            .into_iter()
            .partition(|(_, seen)| seen.elapsed() >= REPORT_WAIT);
        self.kills = keep;
        old.into_iter()
            .map(|(v, seen)| {
                let line = self.killed_lines.iter().any(|(p, _)| *p == v.pid as i32);
                let mut ep = Episode::assemble(v, None, seen, gfp);
                if line {
                    ep.killed_line_only = true;
                    ep.replay_missing = Some(
                        "the kernel killed it (its `Killed process` line came) but printed no \
                         report: rate-limited (at most 10 reports per 5 s; the kernel says \
                         `oom_kill_process: N callbacks suppressed`) or its lines were lost"
                            .into(),
                    );
                }
                ep
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use oomwatch_common::{VictimEvent, present};

    fn victim(pid: u32, marker: Option<u32>) -> Victim {
        let mut ev = VictimEvent::ZERO;
        ev.pid = pid;
        ev.present = present::PID;
        if let Some(m) = marker {
            ev.marker_tgid = m;
            ev.present |= present::MARKER;
        }
        Victim::from_event(&ev)
    }

    /// A kill with no report is "exiting" only when the victim was the task
    /// in the OOM killer; otherwise the report is missing.
    #[test]
    fn a_victim_that_marked_itself_is_exiting_not_missing_its_report() {
        let gfp = GfpTable::builtin(&crate::model::behavior::KernelBehavior::for_version(
            crate::model::version::v(6, 1, 0),
        ));
        let own = Episode::assemble(victim(42, Some(42)), None, Instant::now(), &gfp);
        assert_eq!(own.counts().replay, "exiting");
        assert!(
            own.replay_missing
                .unwrap()
                .contains("task_will_free_mem(current)")
        );
        for marker in [Some(7), None] {
            let other = Episode::assemble(victim(42, marker), None, Instant::now(), &gfp);
            assert_eq!(other.counts().replay, "no_report", "marker {marker:?}");
        }
    }

    /// The allocating task killed, its report rate-limited: only its
    /// `Killed process` line came. That is a kill without its report, not a
    /// dying task marked without a kill.
    #[test]
    fn a_kill_with_only_its_killed_line_is_missing_its_report() {
        let gfp = GfpTable::builtin(&crate::model::behavior::KernelBehavior::for_version(
            crate::model::version::v(6, 1, 0),
        ));
        let mut j = Joiner::default();
        j.killed_line(42);
        assert!(j.kill(victim(42, Some(42)), &gfp).is_none());
        assert!(j.kill(victim(43, Some(43)), &gfp).is_none());
        let eps = j.drain(&gfp);
        assert_eq!(eps.len(), 2);
        // Drained at exit: said so, whatever else is known.
        assert!(eps.iter().all(|e| e.replay_missing.as_deref()
            == Some("the daemon stopped before this kill's report came")));
        let mut j = Joiner::default();
        j.killed_line(42);
        let long_ago = Instant::now() - REPORT_WAIT;
        j.kills.push((victim(42, Some(42)), long_ago));
        j.kills.push((victim(43, Some(43)), long_ago));
        let eps = j.expired(&gfp);
        let by = |pid: u32| eps.iter().find(|e| e.victim.pid == pid).unwrap();
        assert_eq!(by(42).counts().replay, "no_report");
        assert!(
            by(42)
                .replay_missing
                .as_deref()
                .unwrap()
                .contains("rate-limited")
        );
        assert_eq!(by(43).counts().replay, "exiting");
    }
}
