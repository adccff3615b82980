//! Explanations: why a task would or would not be the victim of an OOM
//! domain, the numbers behind it, and what would change the outcome. One
//! sentence per entity for people, the same facts as JSON for programs.

use serde::Serialize;

use super::{
    badness::Badness,
    behavior::TieBreak,
    select::{Candidate, Selection, Verdict},
};

/// The facts about one task in one OOM domain.
#[derive(Debug, Clone, Serialize)]
pub struct TaskExplanation {
    pub pid: i32,
    pub comm: String,
    pub oom_score_adj: i16,
    /// Scan position and verdict, `None` if the task is not in this domain.
    pub candidate: Option<Candidate>,
    /// 1 = the victim; among scored tasks only.
    pub rank: Option<usize>,
    pub chosen: bool,
    /// The victim's pid and points, if any.
    pub victim: Option<(i32, i64)>,
    /// One sentence: why.
    pub why: String,
    /// One sentence: what would change it.
    pub to_change: String,
    /// The smallest `oom_score_adj` that would make this task the victim
    /// (None if no adj in range would, or it already is).
    pub adj_to_be_chosen: Option<i16>,
    /// For the victim: the highest `oom_score_adj` at which it would no
    /// longer be chosen (None if no adj down to -999 would do it).
    pub adj_to_stop_being_chosen: Option<i16>,
    /// Points this task would need to lose to stop being the victim.
    pub margin: Option<i64>,
}

/// "points 16532 = rss 16000 + swap 0 + page tables 32 + adj 500".
pub fn breakdown(b: &Badness) -> String {
    match b.points {
        None => format!(
            "ineligible: {}",
            b.ineligible.map_or("unknown", |i| i.describe())
        ),
        Some(p) => {
            let mut s = format!(
                "points {p} = rss {} + swap {} + page tables {}",
                b.rss_pages, b.swap_pages, b.pgtables_pages
            );
            if b.admin_bonus_pages != 0 {
                s.push_str(&format!(" − root bonus {}", b.admin_bonus_pages));
            }
            s.push_str(&format!(" + adj term {}", b.adj_term));
            if b.floored {
                s.push_str(" (raised to the floor of 1)");
            }
            s
        }
    }
}

/// Points a candidate at `position` needs to beat `victim` under `tie`.
fn points_needed(tie: TieBreak, victim: &Candidate, position: usize) -> i64 {
    let vp = victim.badness.points.unwrap_or(i64::MIN);
    match tie {
        // Equal is enough when scanned after the victim.
        TieBreak::Last if position > victim.position => vp,
        // KeepLeader: equal replaces only a non-leader choice.
        TieBreak::KeepLeader if position > victim.position && !victim.is_leader() => vp,
        _ => vp.saturating_add(1),
    }
}

/// Explains `pid` in `sel` (a domain scanned with totalpages `sel.totalpages`).
pub fn explain_task(sel: &Selection, pid: i32) -> TaskExplanation {
    let cand = sel
        .candidates
        .iter()
        .find(|c| c.tgid == pid || c.pid == pid)
        .cloned();
    let victim = sel.chosen();
    let ranking = sel.ranking();
    let rank = cand
        .as_ref()
        .and_then(|c| ranking.iter().position(|r| r.position == c.position))
        .map(|i| i + 1);
    let chosen = match (&cand, victim) {
        (Some(c), Some(v)) => c.tgid == v.tgid,
        _ => false,
    };
    let per_adj = (sel.totalpages / 1000) as i64;
    let mut out = TaskExplanation {
        pid,
        comm: cand.as_ref().map(|c| c.comm.clone()).unwrap_or_default(),
        oom_score_adj: cand.as_ref().map_or(0, |c| c.oom_score_adj),
        candidate: cand.clone(),
        rank,
        chosen,
        victim: victim.and_then(|v| v.badness.points.map(|p| (v.tgid, p))),
        why: String::new(),
        to_change: String::new(),
        adj_to_be_chosen: None,
        adj_to_stop_being_chosen: None,
        margin: None,
    };
    let Some(c) = cand else {
        out.why = format!("pid {pid} is not among the tasks this OOM domain scans");
        out.to_change = "move it into this domain (the memory cgroup, or the host)".into();
        return out;
    };
    let tie = match sel.tie_break {
        TieBreak::Last => "on equal points the last task scanned wins (≥ 5.3)",
        TieBreak::KeepLeader => {
            "on equal points an already chosen thread-group leader stays (4.4 – 5.2)"
        }
        TieBreak::First => "on equal points the first task scanned stays (3.10)",
    };
    match (c.verdict, victim) {
        (
            Verdict::Ineligible
            | Verdict::CpusetMismatch
            | Verdict::ReapedVictim
            | Verdict::HiddenExiting,
            _,
        ) => {
            let reason = match c.verdict {
                Verdict::HiddenExiting => {
                    "all its threads have exited, and this kernel's memcg scan does not visit such a process (7.0+)".to_owned()
                }
                Verdict::CpusetMismatch => {
                    "its cpuset/mempolicy does not intersect the allocation's".to_owned()
                }
                Verdict::ReapedVictim => {
                    "it is an earlier victim whose memory was already reaped".to_owned()
                }
                _ => c
                    .badness
                    .ineligible
                    .map_or("ineligible", |i| i.describe())
                    .to_owned(),
            };
            out.why = format!("{} ({pid}) is never chosen: {reason}", c.comm);
            out.to_change = match c.badness.ineligible {
                Some(super::badness::Ineligible::AdjMin) => {
                    "raise its oom_score_adj above -1000 to make it eligible".into()
                }
                _ => "nothing a user can change makes it eligible".into(),
            };
        }
        (Verdict::AbortsScan, _) => {
            out.why = format!(
                "{} ({pid}) is an OOM victim still exiting: the kernel kills nobody else until its \
                 memory is reaped",
                c.comm
            );
            out.to_change = "wait for it to exit or for the OOM reaper".into();
        }
        (Verdict::Origin, _) => {
            out.why = format!(
                "{} ({pid}) is an OOM origin (swapoff, KSM unmerge or a ring-buffer resize): \
                 chosen whatever its points",
                c.comm
            );
            out.to_change = "it stops being chosen when that operation ends".into();
        }
        (Verdict::Scored, Some(_)) if chosen => {
            let runner = ranking.iter().find(|r| r.tgid != c.tgid);
            let mine = c.badness.points.unwrap_or(0);
            out.why = format!(
                "{} ({pid}) is the victim with {}; {}",
                c.comm,
                breakdown(&c.badness),
                match runner {
                    Some(r) => format!(
                        "the runner-up is {} ({}) with {} points, {} behind",
                        r.comm,
                        r.tgid,
                        r.badness.points.unwrap_or(0),
                        mine - r.badness.points.unwrap_or(0)
                    ),
                    None => "no other task is eligible".into(),
                }
            );
            if let Some(r) = runner {
                let rp = r.badness.points.unwrap_or(0);
                // Where the runner-up takes over: at equal points if the tie
                // rule favours it, else one point below it.
                let favours_runner = points_needed(sel.tie_break, &c, r.position) == mine;
                let takeover = if favours_runner { rp } else { rp - 1 };
                let lose_by = mine - takeover;
                out.margin = Some(mine - rp);
                out.to_change = if per_adj > 0 {
                    let drop_adj = (lose_by + per_adj - 1) / per_adj;
                    let adj = i64::from(c.oom_score_adj) - drop_adj;
                    out.adj_to_stop_being_chosen = (adj >= -999).then_some(adj as i16);
                    format!(
                        "it stops being the victim once it uses {lose_by} fewer pages, or with \
                         oom_score_adj {} or lower ({tie})",
                        i64::from(c.oom_score_adj) - drop_adj
                    )
                } else {
                    format!("it stops being the victim once it uses {lose_by} fewer pages ({tie})")
                };
            } else {
                out.to_change = "it stays the victim while it is the only eligible task".into();
            }
        }
        (Verdict::Scored, Some(v)) => {
            let mine = c.badness.points.unwrap_or(0);
            let need = points_needed(sel.tie_break, v, c.position);
            let gap = need - mine;
            out.why = format!(
                "{} ({pid}) is not the victim: {}, {gap} short of {} ({}) with {} points",
                c.comm,
                breakdown(&c.badness),
                v.comm,
                v.tgid,
                v.badness.points.unwrap_or(0)
            );
            if per_adj > 0 {
                let raise = (gap + per_adj - 1) / per_adj;
                let adj = i64::from(c.oom_score_adj) + raise;
                if adj <= 1000 {
                    out.adj_to_be_chosen = Some(adj as i16);
                    out.to_change = format!(
                        "it becomes the victim with {gap} more pages, or with oom_score_adj {adj} \
                         or higher ({tie})"
                    );
                } else {
                    out.to_change = format!(
                        "it becomes the victim with {gap} more pages; no oom_score_adj up to 1000 \
                         is enough ({tie})"
                    );
                }
            } else {
                out.to_change = format!(
                    "it becomes the victim with {gap} more pages (oom_score_adj has no effect \
                     below 1000 pages of totalpages)"
                );
            }
        }
        (Verdict::Scored, None) => {
            out.why = format!(
                "{} ({pid}) scores {} but no victim was chosen",
                c.comm,
                breakdown(&c.badness)
            );
            out.to_change = "see the domain's outcome".into();
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::{
        behavior::KernelBehavior,
        select::{Domain, Scan, select_bad_process},
        task::{Process, anon},
        version::v,
    };

    fn sel(procs: &[Process]) -> Selection {
        let kb = KernelBehavior::for_version(v(6, 18, 44));
        let procs: Vec<&Process> = procs.iter().collect();
        select_bad_process(
            &Scan {
                domain: Domain::Memcg,
                processes: &procs,
                totalpages: 16_384,
                page_size: 4096,
                sysrq: false,
            },
            &kb,
        )
    }

    #[test]
    fn victim_and_runner_up() {
        let procs = [
            Process::simple(10, "a", anon(5_000), 0),
            Process::simple(11, "b", anon(6_600), 0),
        ];
        let s = sel(&procs);
        let b = explain_task(&s, 11);
        assert!(b.chosen);
        assert_eq!(b.rank, Some(1));
        assert_eq!(b.margin, Some(1_600));
        assert!(
            b.why
                .contains("runner-up is a (10) with 5000 points, 1600 behind"),
            "{}",
            b.why
        );
        let a = explain_task(&s, 10);
        assert!(!a.chosen);
        assert_eq!(a.rank, Some(2));
        // a is scanned before b: it needs 6 601 points, 1 601 more; 16 per adj
        // step → +101.
        assert_eq!(a.adj_to_be_chosen, Some(101));
        assert!(a.to_change.contains("1601 more pages"), "{}", a.to_change);
    }

    /// The suggested adj really flips the model's choice, and one less does not.
    #[test]
    fn suggested_adj_is_exact() {
        let mut procs = vec![
            Process::simple(10, "a", anon(5_000), 0),
            Process::simple(11, "b", anon(6_600), 0),
        ];
        let s = sel(&procs);
        let adj = explain_task(&s, 10).adj_to_be_chosen.unwrap();
        procs[0].oom_score_adj = adj;
        assert_eq!(sel(&procs).chosen().unwrap().tgid, 10);
        procs[0].oom_score_adj = adj - 1;
        assert_eq!(sel(&procs).chosen().unwrap().tgid, 11);
        // And for the victim, the highest adj at which it is no longer chosen.
        procs[0].oom_score_adj = 0;
        let stop = explain_task(&sel(&procs), 11)
            .adj_to_stop_being_chosen
            .unwrap();
        procs[1].oom_score_adj = stop;
        assert_eq!(sel(&procs).chosen().unwrap().tgid, 10);
        procs[1].oom_score_adj = stop + 1;
        assert_eq!(sel(&procs).chosen().unwrap().tgid, 11);
    }

    #[test]
    fn ineligible_and_absent() {
        let procs = [
            Process::simple(10, "db", anon(9_000), -1000),
            Process::simple(11, "b", anon(100), 0),
        ];
        let s = sel(&procs);
        let e = explain_task(&s, 10);
        assert!(
            e.why.contains("never chosen: oom_score_adj is -1000"),
            "{}",
            e.why
        );
        assert!(explain_task(&s, 99).why.contains("not among the tasks"));
    }
}

/// `victim` of the JSON contract.
#[derive(Debug, Clone, Serialize)]
pub struct VictimJson {
    pub pid: i32,
    pub tgid: i32,
    pub comm: String,
    pub points: i64,
}

/// The victim of `sel`, as the JSON contract names it.
pub fn victim(sel: &Selection) -> Option<VictimJson> {
    sel.chosen().map(|c| VictimJson {
        pid: c.pid,
        tgid: c.tgid,
        comm: c.comm.clone(),
        points: c.badness.points.unwrap_or(i64::MAX),
    })
}

/// One entry of `candidates`.
#[derive(Debug, Clone, Serialize)]
pub struct CandidateJson {
    pub pid: i32,
    pub tgid: i32,
    pub comm: String,
    /// `null` when ineligible.
    pub points: Option<i64>,
    pub rss_pages: i64,
    pub swap_pages: i64,
    pub pgtables_pages: i64,
    pub oom_score_adj: i16,
    pub eligible: bool,
    /// Why: the ineligibility reason, or the points breakdown.
    pub reason: String,
}

/// The candidates of `sel`, at most `top`: eligible ones by rank (ties in
/// the order the kernel would break them), then the ineligible ones with
/// their reason; each process once.
pub fn candidates(sel: &Selection, top: Option<usize>) -> Vec<CandidateJson> {
    let mut ordered: Vec<&Candidate> = sel.ranking();
    // Threads of one process show once (the kernel scores the process).
    let mut seen = std::collections::HashSet::new();
    ordered.retain(|c| seen.insert(c.tgid));
    for c in &sel.candidates {
        if c.verdict != Verdict::Scored && seen.insert(c.tgid) {
            ordered.push(c);
        }
    }
    ordered
        .into_iter()
        .take(top.unwrap_or(usize::MAX))
        .map(|c| CandidateJson {
            pid: c.pid,
            tgid: c.tgid,
            comm: c.comm.clone(),
            points: c.badness.points,
            rss_pages: c.badness.rss_pages,
            swap_pages: c.badness.swap_pages,
            pgtables_pages: c.badness.pgtables_pages,
            oom_score_adj: c.oom_score_adj,
            eligible: c.verdict == Verdict::Scored && c.badness.points.is_some(),
            reason: match c.verdict {
                Verdict::Scored => breakdown(&c.badness),
                Verdict::CpusetMismatch => "cpuset/mempolicy does not intersect".into(),
                Verdict::ReapedVictim => "earlier victim, memory already reaped".into(),
                Verdict::HiddenExiting => {
                    "all threads exited: not visited by a 7.0+ memcg scan".into()
                }
                Verdict::AbortsScan => "pending OOM victim: the kernel waits for it".into(),
                Verdict::Origin => "OOM origin: chosen whatever its points".into(),
                Verdict::Ineligible => c
                    .badness
                    .ineligible
                    .map_or("ineligible", |i| i.describe())
                    .to_owned(),
            },
        })
        .collect()
}
