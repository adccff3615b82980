//! The kernel's OOM path as its own functions report it (fentry/fexit or
//! kprobes on `out_of_memory`, `oom_badness`, `oom_kill_process`), and the
//! OOM reaper's tracepoints: events, one [`KernelScan`] per OOM, and the
//! comparison of the kernel's per-task points with the model's.

use std::collections::{HashMap, VecDeque};

use serde::Serialize;

use crate::ebpf::KernelEvent;

/// One task as the kernel's `oom_badness()` scored it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ScannedTask {
    pub pid: u32,
    pub tgid: u32,
    pub points: Option<i64>,
}

/// What the kernel did inside one `out_of_memory()` call.
#[derive(Debug, Clone, Default, Serialize)]
pub struct KernelScan {
    /// The task running the OOM killer (the allocating task).
    pub scanner: u32,
    /// Its process, from `out_of_memory()`'s entry.
    pub scanner_tgid: Option<u32>,
    pub comm: Option<String>,
    pub order: Option<i32>,
    pub gfp_mask: Option<u32>,
    pub memcg: Option<bool>,
    /// Every task `oom_badness()` scored, in scan order.
    pub tasks: Vec<ScannedTask>,
    pub totalpages: Option<u64>,
    pub chosen_pid: Option<u32>,
    pub chosen_tgid: Option<u32>,
    pub chosen_points: Option<i64>,
    pub constraint: Option<&'static str>,
    pub entered_ns: Option<u64>,
    pub chosen_ns: Option<u64>,
    pub returned_ns: Option<u64>,
    /// `out_of_memory()`'s return: true when the OOM was handled.
    pub handled: Option<bool>,
}

/// How many finished scans are kept for kills to find.
const KEEP_SCANS: usize = 64;

/// Builds [`KernelScan`]s from the events, by scanning thread.
#[derive(Debug, Default)]
pub struct ScanAssembler {
    open: HashMap<u32, KernelScan>,
    done: VecDeque<KernelScan>,
}

impl ScanAssembler {
    /// Feeds one event (reaper events are ignored here).
    pub fn push(&mut self, ev: &KernelEvent) {
        match ev {
            KernelEvent::Enter {
                pid,
                tgid,
                comm,
                order,
                gfp_mask,
                memcg,
                boot_ns,
                ..
            } => {
                if let Some(old) = self.open.remove(pid) {
                    self.finish(old);
                }
                self.open.insert(
                    *pid,
                    KernelScan {
                        scanner: *pid,
                        scanner_tgid: Some(*tgid),
                        comm: Some(comm.clone()),
                        order: Some(*order),
                        gfp_mask: Some(*gfp_mask),
                        memcg: Some(*memcg),
                        entered_ns: Some(*boot_ns),
                        ..KernelScan::default()
                    },
                );
            }
            KernelEvent::Badness {
                pid,
                tgid,
                scanner,
                points,
                totalpages,
            } => {
                let s = self.scan_of(*scanner);
                s.tasks.push(ScannedTask {
                    pid: *pid,
                    tgid: *tgid,
                    points: *points,
                });
                s.totalpages = Some(*totalpages);
            }
            KernelEvent::Chosen {
                pid,
                tgid,
                scanner,
                constraint,
                chosen_points,
                totalpages,
                boot_ns,
            } => {
                let s = self.scan_of(*scanner);
                s.chosen_pid = Some(*pid);
                s.chosen_tgid = Some(*tgid);
                s.chosen_points = Some(*chosen_points);
                s.totalpages = Some(*totalpages);
                s.constraint = Some(constraint);
                s.chosen_ns = Some(*boot_ns);
            }
            KernelEvent::Exit {
                pid,
                handled,
                boot_ns,
            } => {
                if let Some(mut s) = self.open.remove(pid) {
                    s.handled = Some(*handled);
                    s.returned_ns = Some(*boot_ns);
                    self.finish(s);
                }
            }
            KernelEvent::Reaper { .. } => {}
        }
    }

    fn scan_of(&mut self, scanner: u32) -> &mut KernelScan {
        self.open.entry(scanner).or_insert_with(|| KernelScan {
            scanner,
            ..KernelScan::default()
        })
    }

    fn finish(&mut self, s: KernelScan) {
        if self.done.len() == KEEP_SCANS {
            self.done.pop_front();
        }
        self.done.push_back(s);
    }

    /// The most recent scan (open or finished) that chose the process
    /// `tgid` (or the thread `pid`). A clone: the scan stays for others.
    pub fn for_victim(&self, pid: u32, tgid: Option<u32>) -> Option<KernelScan> {
        let hit = |s: &&KernelScan| {
            s.chosen_pid == Some(pid)
                || (tgid.is_some() && s.chosen_tgid == tgid)
                || s.chosen_tgid == Some(pid)
        };
        self.open
            .values()
            .filter(hit)
            .max_by_key(|s| s.chosen_ns)
            .or_else(|| self.done.iter().rev().find(hit))
            .cloned()
    }
}

/// The kernel's per-task points against the model's, task by task.
#[derive(Debug, Clone, Default, Serialize)]
pub struct PointsCheck {
    /// Where the kernel's points came from ("oom_badness").
    pub source: &'static str,
    /// Tasks compared (in both the kernel's scan and the report's table).
    pub compared: usize,
    pub equal: usize,
    pub differ: Vec<PointsDiff>,
    /// Differences in tasks other than the one running the OOM killer:
    /// the table is printed after the scan, and another task may run in
    /// between (the scanner can be preempted) and change its memory. Seen on
    /// 7.x guests, whose precise per-CPU sums show every page of it (before
    /// 7.0 the approximate counters mostly hid it), for the one task still
    /// allocating in a host-wide OOM.
    pub changed: Vec<PointsDiff>,
    /// Tasks the kernel scored that the report's table does not list.
    pub not_in_report: usize,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct PointsDiff {
    pub pid: u32,
    pub kernel: Option<i64>,
    pub model: Option<i64>,
}

/// Compares the kernel's scan with the model's points for the same tasks
/// (`model`: pid → points, from the report's table at the kernel's
/// totalpages).
pub fn check_points(scan: &KernelScan, model: &[(i32, Option<i64>)]) -> PointsCheck {
    let model: HashMap<u32, Option<i64>> = model.iter().map(|&(p, v)| (p as u32, v)).collect();
    let mut out = PointsCheck {
        source: "oom_badness",
        ..PointsCheck::default()
    };
    for t in &scan.tasks {
        match model.get(&t.pid) {
            None => out.not_in_report += 1,
            Some(&m) => {
                out.compared += 1;
                let diff = PointsDiff {
                    pid: t.pid,
                    kernel: t.points,
                    model: m,
                };
                if m == t.points {
                    out.equal += 1;
                } else if match scan.scanner_tgid {
                    Some(tgid) => t.tgid != tgid,
                    None => t.pid != scan.scanner,
                } {
                    out.changed.push(diff);
                } else {
                    out.differ.push(diff);
                }
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use oomwatch_common::BadnessEvent;

    use super::*;

    fn badness(pid: u32, points: Option<i64>) -> KernelEvent {
        KernelEvent::Badness {
            pid,
            tgid: pid,
            scanner: 9,
            points,
            totalpages: 16_384,
        }
    }

    fn scan_of_three() -> ScanAssembler {
        let mut a = ScanAssembler::default();
        a.push(&KernelEvent::Enter {
            pid: 9,
            tgid: 9,
            comm: "hog".into(),
            order: 0,
            gfp_mask: 0xcc0,
            memcg: true,
            boot_ns: 100,
        });
        a.push(&badness(1, Some(500)));
        a.push(&badness(2, None));
        a.push(&badness(3, Some(9000)));
        a.push(&KernelEvent::Chosen {
            pid: 3,
            tgid: 3,
            scanner: 9,
            constraint: "CONSTRAINT_MEMCG",
            chosen_points: 9000,
            totalpages: 16_384,
            boot_ns: 150,
        });
        a
    }

    #[test]
    fn a_scan_is_found_by_its_victim_before_and_after_return() {
        let mut a = scan_of_three();
        let s = a.for_victim(3, Some(3)).unwrap();
        assert_eq!(s.tasks.len(), 3);
        assert_eq!(s.chosen_points, Some(9000));
        assert_eq!(s.handled, None);
        a.push(&KernelEvent::Exit {
            pid: 9,
            handled: true,
            boot_ns: 200,
        });
        let s = a.for_victim(3, None).unwrap();
        assert_eq!((s.handled, s.returned_ns), (Some(true), Some(200)));
        assert!(
            a.for_victim(1, Some(1)).is_none(),
            "1 was scanned, not chosen"
        );
    }

    #[test]
    fn points_are_compared_task_by_task() {
        let s = scan_of_three().for_victim(3, Some(3)).unwrap();
        let c = check_points(&s, &[(1, Some(500)), (2, None), (3, Some(8999))]);
        assert_eq!((c.compared, c.equal, c.not_in_report), (3, 2, 0));
        // 3 is not the task in the OOM killer (9): it may have run between
        // the scan and the table.
        assert!(c.differ.is_empty());
        assert_eq!(
            c.changed,
            vec![PointsDiff {
                pid: 3,
                kernel: Some(9000),
                model: Some(8999)
            }]
        );
        // The scanner itself cannot have changed: a difference there is the
        // model's.
        let mut a = scan_of_three();
        a.push(&badness(9, Some(40)));
        let s = a.for_victim(3, Some(3)).unwrap();
        let c = check_points(
            &s,
            &[(1, Some(500)), (2, None), (3, Some(9000)), (9, Some(41))],
        );
        assert_eq!((c.equal, c.changed.len()), (3, 0));
        assert_eq!(
            c.differ,
            vec![PointsDiff {
                pid: 9,
                kernel: Some(40),
                model: Some(41)
            }]
        );
        let c = check_points(&s, &[(1, Some(500))]);
        assert_eq!((c.compared, c.equal, c.not_in_report), (1, 1, 3));
    }

    #[test]
    fn long_min_is_no_points() {
        let ev = BadnessEvent {
            kind: 5,
            pid: 4,
            tgid: 4,
            scanner: 9,
            points: i64::MIN,
            totalpages: 1,
            boot_ns: 0,
        };
        assert!(matches!(
            KernelEvent::badness(&ev),
            KernelEvent::Badness { points: None, .. }
        ));
    }
}
