//! `select_bad_process()` / `oom_evaluate_task()`: who the kernel picks in one
//! OOM domain, per version (kernel-oom.md §4.1 – §4.5).

use serde::Serialize;

use super::{
    badness::{Badness, Ineligible, oom_badness},
    behavior::{BadnessReturn, KernelBehavior, ScanUnit, TieBreak},
    task::{Process, Thread},
};

/// Which OOM this is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Domain {
    /// Global (CONSTRAINT_NONE, CPUSET or MEMORY_POLICY).
    Global,
    /// A memory cgroup's limit (CONSTRAINT_MEMCG).
    Memcg,
}

/// The scan's inputs besides the kernel rules.
#[derive(Debug, Clone, Copy)]
pub struct Scan<'a> {
    pub domain: Domain,
    /// The processes the kernel iterates, in its order: `for_each_process`
    /// (creation order) for a global OOM; the memcg and its descendants in
    /// pre-order, each in css_set order, for a memcg OOM.
    pub processes: &'a [&'a Process],
    pub totalpages: u64,
    pub page_size: u64,
    /// sysrq-f (`order == -1`): no abort for pending victims.
    pub sysrq: bool,
}

/// Why a scanned task was passed over, or what it did to the scan.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Verdict {
    /// Scored and compared.
    Scored,
    /// Not scored: see the badness' `ineligible` reason.
    Ineligible,
    /// Its cpuset/mempolicy does not intersect the allocation's.
    CpusetMismatch,
    /// A victim whose mm is already MMF_OOM_SKIP: passed over.
    ReapedVictim,
    /// A pending victim: the whole scan aborts, nobody new is killed.
    AbortsScan,
    /// `oom_task_origin()`: chosen unconditionally.
    Origin,
    /// Every thread has exited (PF_EXITING, `signal->live == 0`): a 7.0+
    /// memcg scan does not visit it at all (`css_task_iter_advance()`).
    HiddenExiting,
}

/// One scanned task with its score.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Candidate {
    /// Position in the scan (0 = first).
    pub position: usize,
    pub tgid: i32,
    /// The thread the scan visited (the leader when scanning processes).
    pub pid: i32,
    pub comm: String,
    pub oom_score_adj: i16,
    pub verdict: Verdict,
    pub badness: Badness,
}

impl Candidate {
    pub fn is_leader(&self) -> bool {
        self.pid == self.tgid
    }
}

/// The scan's result.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Outcome {
    /// This candidate (index into `candidates`) is the victim.
    Chosen { index: usize },
    /// An earlier victim (tgid) is still exiting: no new kill (the kernel
    /// reports progress and the allocation retries).
    Aborted { waiting_for: i32 },
    /// Nobody is eligible.
    NothingEligible,
}

/// Everything the scan saw, for prediction and explanation.
#[derive(Debug, Clone, Serialize)]
pub struct Selection {
    pub domain: Domain,
    pub totalpages: u64,
    pub unit: ScanUnit,
    pub tie_break: TieBreak,
    pub candidates: Vec<Candidate>,
    pub outcome: Outcome,
}

impl Selection {
    pub fn chosen(&self) -> Option<&Candidate> {
        match self.outcome {
            Outcome::Chosen { index } => self.candidates.get(index),
            _ => None,
        }
    }

    /// Scored candidates by points, highest first; equal points in the order
    /// the version's tie-break would prefer them.
    pub fn ranking(&self) -> Vec<&Candidate> {
        let mut scored: Vec<&Candidate> = self
            .candidates
            .iter()
            .filter(|c| c.verdict == Verdict::Scored && c.badness.points.is_some())
            .collect();
        let last_wins = self.tie_break == TieBreak::Last;
        scored.sort_by(|a, b| {
            b.badness.points.cmp(&a.badness.points).then_with(|| {
                if last_wins {
                    b.position.cmp(&a.position)
                } else {
                    a.position.cmp(&b.position)
                }
            })
        });
        scored
    }

    /// Points of the victim minus points of the best other scored process.
    pub fn margin(&self) -> Option<i64> {
        let chosen = self.chosen()?;
        let mine = chosen.badness.points?;
        let other = self
            .ranking()
            .into_iter()
            .find(|c| c.tgid != chosen.tgid)?
            .badness
            .points?;
        Some(mine.saturating_sub(other))
    }
}

/// Runs the kernel's victim scan over `scan.processes`.
pub fn select_bad_process(scan: &Scan<'_>, kb: &KernelBehavior) -> Selection {
    let (unit, tie_break) = match scan.domain {
        Domain::Global => (kb.global_scan, kb.global_tie),
        Domain::Memcg => (kb.memcg_scan, kb.memcg_tie),
    };
    let mut candidates = Vec::new();
    let mut chosen: Option<usize> = None;
    let mut chosen_points = match kb.badness_return {
        BadnessReturn::Signed => i64::MIN,
        BadnessReturn::FloorOne => 0,
    };
    for p in scan.processes {
        let leader = Thread {
            pid: p.tgid,
            has_mm: p.mm.is_some(),
            ..Thread::default()
        };
        let threads: Vec<&Thread> = match unit {
            ScanUnit::Processes => vec![p.threads.first().unwrap_or(&leader)],
            ScanUnit::Threads => p.threads.iter().collect(),
        };
        let badness = oom_badness(p, scan.totalpages, scan.page_size, kb);
        if scan.domain == Domain::Memcg
            && kb.memcg_scan_skips_exiting
            && !p.threads.is_empty()
            && p.threads.iter().all(|t| t.exiting)
        {
            // kernels-5.10-to-7.3.md §2.4 (a72f73c4dd9b): never a candidate,
            // and a pending victim among them no longer aborts the scan.
            candidates.push(Candidate {
                position: candidates.len(),
                tgid: p.tgid,
                pid: p.tgid,
                comm: p.comm.clone(),
                oom_score_adj: p.oom_score_adj,
                verdict: Verdict::HiddenExiting,
                badness: badness.clone(),
            });
            continue;
        }
        // ≤ 4.7 keeps victim state per thread (TIF_MEMDIE) and aborts on
        // exiting threads; 4.8+ per process (oom_victims / signal->oom_mm).
        let per_thread_rules = !kb.reaped_mm_skipped;
        for t in threads {
            let pid = t.pid;
            let position = candidates.len();
            let mut c = Candidate {
                position,
                tgid: p.tgid,
                pid,
                comm: p.comm.clone(),
                oom_score_adj: p.oom_score_adj,
                verdict: Verdict::Scored,
                badness: badness.clone(),
            };
            let unkillable = matches!(
                badness.ineligible,
                Some(Ineligible::GlobalInit | Ineligible::KernelThread)
            );
            let cpuset_filtered = match scan.domain {
                Domain::Global => true,
                Domain::Memcg => kb.memcg_cpuset_filter,
            };
            let aborts = |c: Candidate, candidates: &mut Vec<Candidate>| {
                candidates.push(c);
                Selection {
                    domain: scan.domain,
                    totalpages: scan.totalpages,
                    unit,
                    tie_break,
                    candidates: std::mem::take(candidates),
                    outcome: Outcome::Aborted {
                        waiting_for: p.tgid,
                    },
                }
            };
            if unkillable {
                c.verdict = Verdict::Ineligible;
            } else if per_thread_rules && t.memdie && !scan.sysrq {
                // 3.10/4.4: TIF_MEMDIE on this thread aborts the scan.
                c.verdict = Verdict::AbortsScan;
                return aborts(c, &mut candidates);
            } else if per_thread_rules && !t.has_mm {
                c.verdict = Verdict::Ineligible;
            } else if per_thread_rules && p.oom_origin {
                c.verdict = Verdict::Origin;
                chosen = Some(position);
                chosen_points = i64::MAX;
            } else if per_thread_rules && t.exiting && !scan.sysrq {
                // 3.10: PF_EXITING; 4.4: task_will_free_mem(): the exiting
                // task will free memory, so wait for it.
                c.verdict = Verdict::AbortsScan;
                return aborts(c, &mut candidates);
            } else if cpuset_filtered && !p.cpuset_eligible {
                c.verdict = Verdict::CpusetMismatch;
            } else if !scan.sysrq && p.oom_victim && p.mm_oom_skip && kb.reaped_mm_skipped {
                c.verdict = Verdict::ReapedVictim;
            } else if !per_thread_rules && !scan.sysrq && p.oom_victim {
                c.verdict = Verdict::AbortsScan;
                return aborts(c, &mut candidates);
            } else if p.oom_origin {
                c.verdict = Verdict::Origin;
                chosen = Some(position);
                chosen_points = i64::MAX;
            } else if let Some(points) = badness.points {
                let replace = match tie_break {
                    TieBreak::First => points > chosen_points,
                    TieBreak::Last => points >= chosen_points,
                    TieBreak::KeepLeader => {
                        points > chosen_points
                            || (points == chosen_points
                                && chosen.is_none_or(|i| !candidates[i].is_leader()))
                    }
                };
                // ≤ 5.8 "0 = ineligible": never chosen at 0 (points ≥ 1 there).
                if replace && !(kb.badness_return == BadnessReturn::FloorOne && points == 0) {
                    chosen = Some(position);
                    chosen_points = points;
                }
            } else {
                c.verdict = Verdict::Ineligible;
            }
            candidates.push(c);
        }
    }
    Selection {
        domain: scan.domain,
        totalpages: scan.totalpages,
        unit,
        tie_break,
        candidates,
        outcome: match chosen {
            Some(index) => Outcome::Chosen { index },
            None => Outcome::NothingEligible,
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::{
        task::anon,
        version::{KernelVersion, v},
    };

    fn scan(procs: &[Process], domain: Domain, ver: KernelVersion) -> Selection {
        let kb = KernelBehavior::for_version(ver);
        let procs: Vec<&Process> = procs.iter().collect();
        select_bad_process(
            &Scan {
                domain,
                processes: &procs,
                totalpages: 16_384,
                page_size: 4096,
                sysrq: false,
            },
            &kb,
        )
    }

    fn chosen_tgid(s: &Selection) -> Option<i32> {
        s.chosen().map(|c| c.tgid)
    }

    /// The lab's memcg scenario (tests/THREE_HOGS_MIB at the moment of the
    /// OOM): the largest rss wins.
    #[test]
    fn largest_wins_with_equal_adj() {
        let procs = [
            Process::simple(10, "hog", anon(3072), 0),
            Process::simple(11, "hog", anon(4096), 0),
            Process::simple(12, "hog", anon(7000), 0),
        ];
        let s = scan(&procs, Domain::Memcg, v(6, 18, 44));
        assert_eq!(chosen_tgid(&s), Some(12));
        assert_eq!(s.margin(), Some(7000 - 4096));
    }

    /// §4.5: equal points — ≥ 5.3 the last wins; 4.9 – 5.2 the first leader
    /// stays; 3.10 strict >, the first stays.
    #[test]
    fn ties_per_version() {
        let procs = [
            Process::simple(10, "a", anon(500), 0),
            Process::simple(11, "b", anon(500), 0),
            Process::simple(12, "c", anon(100), 0),
        ];
        assert_eq!(
            chosen_tgid(&scan(&procs, Domain::Global, v(6, 18, 0))),
            Some(11)
        );
        assert_eq!(
            chosen_tgid(&scan(&procs, Domain::Global, v(5, 3, 1))),
            Some(11)
        );
        assert_eq!(
            chosen_tgid(&scan(&procs, Domain::Global, v(5, 2, 1))),
            Some(10)
        );
        assert_eq!(
            chosen_tgid(&scan(&procs, Domain::Global, v(4, 9, 154))),
            Some(10)
        );
        assert_eq!(
            chosen_tgid(&scan(&procs, Domain::Global, v(4, 8, 15))),
            Some(11)
        );
        assert_eq!(
            chosen_tgid(&scan(&procs, Domain::Global, v(3, 10, 108))),
            Some(10)
        );
    }

    /// §4.2 / §4.5 with threads (memcg ≤ 5.2): a non-leader chosen first is
    /// replaced by the next equal task.
    #[test]
    fn memcg_threads_before_5_3() {
        let mut mt = Process::simple(20, "mt", anon(800), 0);
        mt.threads.push(Thread {
            pid: 21,
            has_mm: true,
            ..Thread::default()
        });
        let procs = [mt];
        let s = scan(&procs, Domain::Memcg, v(5, 2, 1));
        assert_eq!(s.unit, ScanUnit::Threads);
        assert_eq!(s.candidates.len(), 2);
        // Leader 20 chosen first, thread 21 equal: the leader is kept.
        assert_eq!(s.chosen().unwrap().pid, 20);
        let s = scan(&procs, Domain::Memcg, v(5, 3, 1));
        assert_eq!(s.candidates.len(), 1, "processes from 5.3");
    }

    /// kernels-5.10-to-7.3.md §2.4: from 7.0 a memcg scan does not visit a
    /// process whose threads have all exited, so its pending victim no
    /// longer aborts the scan there; a global scan still waits for it.
    #[test]
    fn exited_victim_hidden_from_7_0_memcg_scans() {
        let mut victim = Process::simple(30, "dying", anon(10), 0);
        victim.oom_victim = true;
        victim.threads = vec![crate::model::task::Thread {
            pid: 30,
            has_mm: true,
            exiting: true,
            memdie: false,
        }];
        let procs = [Process::simple(10, "big", anon(9000), 0), victim];
        let s = scan(&procs, Domain::Memcg, v(6, 19, 0));
        assert_eq!(s.outcome, Outcome::Aborted { waiting_for: 30 });
        let s = scan(&procs, Domain::Memcg, v(7, 0, 0));
        assert_eq!(chosen_tgid(&s), Some(10));
        assert_eq!(s.candidates[1].verdict, Verdict::HiddenExiting);
        let s = scan(&procs, Domain::Global, v(7, 3, 4));
        assert_eq!(s.outcome, Outcome::Aborted { waiting_for: 30 });
    }

    /// §4.3: a pending victim anywhere aborts; a reaped one is passed over.
    #[test]
    fn pending_victim_aborts() {
        let mut victim = Process::simple(30, "dying", anon(10), 0);
        victim.oom_victim = true;
        let procs = [Process::simple(10, "big", anon(9000), 0), victim.clone()];
        let s = scan(&procs, Domain::Memcg, v(6, 18, 0));
        assert_eq!(s.outcome, Outcome::Aborted { waiting_for: 30 });
        victim.mm_oom_skip = true;
        let procs = [Process::simple(10, "big", anon(9000), 0), victim];
        let s = scan(&procs, Domain::Memcg, v(6, 18, 0));
        assert_eq!(chosen_tgid(&s), Some(10));
        assert_eq!(s.candidates[1].verdict, Verdict::ReapedVictim);
    }

    /// §4.4: an origin task is taken whatever its points, even adj -1000.
    #[test]
    fn origin_is_unconditional() {
        let mut swapoff = Process::simple(40, "swapoff", anon(1), -1000);
        swapoff.oom_origin = true;
        let procs = [swapoff, Process::simple(10, "big", anon(9000), 0)];
        // A later, bigger task does not beat LONG_MAX.
        assert_eq!(
            chosen_tgid(&scan(&procs, Domain::Global, v(6, 18, 0))),
            Some(40)
        );
    }

    /// §4.2, 4.4 and 3.10: per-thread TIF_MEMDIE and PF_EXITING abort the
    /// scan; from 4.8 an exiting thread does not.
    #[test]
    fn per_thread_victim_state_until_4_8() {
        let mut dying = Process::simple(30, "dying", anon(10), 0);
        dying.threads[0].exiting = true;
        let procs = [Process::simple(10, "big", anon(9000), 0), dying.clone()];
        let s = scan(&procs, Domain::Global, v(4, 4, 155));
        assert_eq!(s.outcome, Outcome::Aborted { waiting_for: 30 });
        assert_eq!(
            chosen_tgid(&scan(&procs, Domain::Global, v(4, 9, 154))),
            Some(10)
        );
        let mut memdie = dying;
        memdie.threads[0].exiting = false;
        memdie.threads[0].memdie = true;
        let procs = [Process::simple(10, "big", anon(9000), 0), memdie];
        let s = scan(&procs, Domain::Global, v(3, 10, 108));
        assert_eq!(s.outcome, Outcome::Aborted { waiting_for: 30 });
    }

    #[test]
    fn nothing_eligible() {
        let mut init = Process::simple(1, "init", anon(100), 0);
        init.global_init = true;
        let procs = [init, Process::simple(10, "protected", anon(9000), -1000)];
        let s = scan(&procs, Domain::Global, v(6, 18, 0));
        assert_eq!(s.outcome, Outcome::NothingEligible);
    }

    /// ≥ 5.9 negative points still compete (LONG_MIN start); ≤ 5.8 they
    /// floor at 1 and tie.
    #[test]
    fn negative_points() {
        let procs = [
            Process::simple(10, "a", anon(100), -900),
            Process::simple(11, "b", anon(200), -900),
        ];
        let s = scan(&procs, Domain::Memcg, v(6, 18, 0));
        assert_eq!(chosen_tgid(&s), Some(11));
        assert!(s.chosen().unwrap().badness.points.unwrap() < 0);
        // 5.2: both floor to 1; the leader chosen first (a) is kept.
        assert_eq!(
            chosen_tgid(&scan(&procs, Domain::Memcg, v(5, 2, 1))),
            Some(10)
        );
    }
}
