//! `out_of_memory()` in its order of operations, and what `oom_kill_process()`
//! then does (kernel-oom.md §4.6 – §4.10, §6).

use serde::Serialize;

use super::{
    badness::oom_badness,
    behavior::{ChangeId, KernelBehavior},
    knobs::{check_panic_on_oom, oom_kill_allocating_task_applies},
    select::{Outcome, Scan, Selection, select_bad_process},
    task::{OOM_SCORE_ADJ_MIN, Process, memcg_within},
};

/// `enum oom_constraint`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum Constraint {
    ConstraintNone,
    ConstraintCpuset,
    ConstraintMemoryPolicy,
    ConstraintMemcg,
}

/// The OOM sysctls (`/proc/sys/vm`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct OomSysctls {
    /// `vm.panic_on_oom`: 0, 1 or 2.
    pub panic_on_oom: u8,
    /// `vm.oom_kill_allocating_task`.
    pub oom_kill_allocating_task: bool,
}

/// One call of `out_of_memory()`.
#[derive(Debug, Clone, Copy)]
pub struct OomCall<'a> {
    pub constraint: Constraint,
    /// The allocation's gfp mask has `__GFP_FS`.
    pub gfp_fs: bool,
    /// The gfp mask is 0 (the page-fault path up to 5.15).
    pub gfp_zero: bool,
    /// sysrq-f.
    pub sysrq: bool,
    /// `oom_killer_disabled` (suspend in progress).
    pub oom_killer_disabled: bool,
    /// The OOM notifier chain freed memory (global OOMs only).
    pub notifier_freed: bool,
    /// The allocating task, when known.
    pub current: Option<&'a Process>,
    /// `task_will_free_mem(current)`: current is already exiting.
    pub current_exiting: bool,
    pub sysctls: OomSysctls,
    /// What `select_bad_process()` scans.
    pub scan: Scan<'a>,
    /// For `memory.oom.group`: the OOM domain's memcg path (None = global,
    /// the root) and the memcgs with `memory.oom.group = 1`.
    pub domain_memcg: Option<&'a str>,
    pub oom_group_memcgs: &'a [String],
    /// cgroup v2 (oom.group exists only there).
    pub cgroup_v2: bool,
}

/// Why another process dies with the victim.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum AlsoKilled {
    /// It shares the victim's mm.
    SharesMm,
    /// It is in the victim's `memory.oom.group` subtree (the path).
    OomGroup(String),
}

/// What `oom_kill_process()` does with the chosen task.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Kill {
    /// The selected task (the "Kill process" / `oom-kill:task=` one).
    pub selected_tgid: i32,
    /// The task actually killed (a child instead, before 5.1).
    pub victim_tgid: i32,
    /// A child sacrificed instead of the selected task (≤ 5.0).
    pub sacrificed_child: bool,
    /// Other processes killed with it.
    pub also_killed: Vec<(i32, AlsoKilled)>,
    /// Global init shares the victim's mm: MMF_OOM_SKIP, no reaping.
    pub mm_pinned_by_init: bool,
    /// The OOM reaper (4.6+) will unmap the victim's anonymous memory, and
    /// after how long (2 s from 5.18 and its backports, at once before);
    /// `None` when there is no reaper or the mm is pinned by init.
    pub reaper_after_ms: Option<u64>,
    /// The report prefix: "Out of memory", "Memory cgroup out of memory", …
    pub message: &'static str,
}

/// What one `out_of_memory()` call decides.
#[derive(Debug, Clone, Serialize)]
#[serde(tag = "decision", rename_all = "snake_case")]
pub enum Decision {
    /// Returns false: the allocation fails.
    KillerDisabled,
    /// A notifier freed memory: progress, no kill.
    NotifierFreed,
    /// Current is exiting: it becomes the victim, no scan, no report.
    CurrentExiting { tgid: i32 },
    /// `!__GFP_FS` outside memcg: report progress without killing.
    NoFsNoKill,
    /// `vm.panic_on_oom`, or nothing killable in a global OOM.
    Panic { message: String },
    /// `vm.oom_kill_allocating_task`: current is killed without a scan.
    KillAllocating { kill: Kill },
    /// A victim from the scan.
    Kill { kill: Kill, selection: Selection },
    /// The scan met a pending victim: no kill; the allocation retries.
    Aborted { selection: Selection },
    /// Nothing eligible and no panic (memcg: the charge fails; sysrq: ignored).
    NothingKillable { selection: Selection },
}

/// `out_of_memory(oc)` for kernel `kb` (≥ 4.9 shape; §6.1, §6.2).
pub fn out_of_memory(call: &OomCall<'_>, kb: &KernelBehavior) -> Decision {
    let memcg = call.constraint == Constraint::ConstraintMemcg;
    if call.oom_killer_disabled {
        return Decision::KillerDisabled;
    }
    if !memcg && call.notifier_freed {
        return Decision::NotifierFreed;
    }
    if call.current_exiting {
        if let Some(c) = call.current {
            return Decision::CurrentExiting { tgid: c.tgid };
        }
    }
    let fs_gate = !call.gfp_fs
        && (!call.gfp_zero || kb.has(ChangeId::NoFsGateWithoutGfpZero))
        && (!memcg || !kb.has(ChangeId::NoFsGateMemcgExempt));
    if fs_gate {
        return Decision::NoFsNoKill;
    }
    if let Some(message) =
        check_panic_on_oom(call.sysctls.panic_on_oom, call.constraint, call.sysrq, kb)
    {
        return Decision::Panic {
            message: message.into(),
        };
    }
    if oom_kill_allocating_task_applies(call.sysctls.oom_kill_allocating_task, call.constraint, kb)
    {
        if let Some(cur) = call.current {
            let eligible = cur.mm.is_some()
                && !cur.kernel_thread
                && !cur.global_init
                && cur.oom_score_adj != OOM_SCORE_ADJ_MIN
                && (!kb.has(ChangeId::OomKillAllocatingCpuset) || cur.cpuset_eligible);
            if eligible {
                let kill =
                    oom_kill_process(cur, call, kb, "Out of memory (oom_kill_allocating_task)");
                return Decision::KillAllocating { kill };
            }
        }
    }
    let selection = select_bad_process(&call.scan, kb);
    match selection.outcome {
        Outcome::Aborted { .. } => Decision::Aborted { selection },
        Outcome::NothingEligible => {
            if !call.sysrq && !memcg {
                let message = if kb.has(ChangeId::NoKillableDeadlockPanic) {
                    "System is deadlocked on memory"
                } else {
                    "Out of memory and no killable processes..."
                };
                Decision::Panic {
                    message: message.into(),
                }
            } else {
                Decision::NothingKillable { selection }
            }
        }
        Outcome::Chosen { .. } => {
            let chosen_tgid = selection.chosen().map(|c| c.tgid);
            let chosen = call
                .scan
                .processes
                .iter()
                .find(|p| Some(p.tgid) == chosen_tgid)
                .expect("the chosen candidate comes from the scanned processes");
            let message = if memcg {
                "Memory cgroup out of memory"
            } else {
                "Out of memory"
            };
            let kill = oom_kill_process(chosen, call, kb, message);
            Decision::Kill { kill, selection }
        }
    }
}

/// `oom_kill_process()` + `__oom_kill_process()` (§4.6, §4.8, §4.9).
fn oom_kill_process(
    chosen: &Process,
    call: &OomCall<'_>,
    kb: &KernelBehavior,
    message: &'static str,
) -> Kill {
    let procs = call.scan.processes;
    // ≤ 5.0: the child with the strictly highest badness, not sharing the mm,
    // replaces the parent.
    let mut victim = chosen;
    let mut sacrificed_child = false;
    if kb.sacrifice_child {
        let mut best = 0i64;
        for child in procs.iter().filter(|c| {
            c.parent_tgid == Some(chosen.tgid) && c.tgid != chosen.tgid && c.mm_id != chosen.mm_id
        }) {
            if let Some(points) =
                oom_badness(child, call.scan.totalpages, call.scan.page_size, kb).points
            {
                if points > best {
                    best = points;
                    victim = child;
                    sacrificed_child = true;
                }
            }
        }
    }
    let mut also_killed = Vec::new();
    let mut mm_pinned_by_init = false;
    if victim.mm_id.is_some() {
        for other in procs
            .iter()
            .filter(|o| o.tgid != victim.tgid && o.mm_id == victim.mm_id)
        {
            if other.kernel_thread {
                continue;
            }
            if other.global_init {
                mm_pinned_by_init = true;
                continue;
            }
            if other.oom_score_adj == OOM_SCORE_ADJ_MIN
                && !kb.has(ChangeId::SharersWithAdjMinKilled)
            {
                continue;
            }
            also_killed.push((other.tgid, AlsoKilled::SharesMm));
        }
    }
    if kb.oom_group && call.cgroup_v2 {
        if let Some(group) = oom_group(victim, call) {
            for p in procs.iter().filter(|p| {
                p.tgid != victim.tgid
                    && p.oom_score_adj != OOM_SCORE_ADJ_MIN
                    && !p.global_init
                    && !p.kernel_thread
                    && p.memcg.as_deref().is_some_and(|m| memcg_within(m, &group))
            }) {
                if !also_killed.iter().any(|(t, _)| *t == p.tgid) {
                    also_killed.push((p.tgid, AlsoKilled::OomGroup(group.clone())));
                }
            }
        }
    }
    // aac453635549 "mm, oom: introduce oom reaper" (4.6, §6.3).
    let has_reaper = kb.version >= super::version::v(4, 6, 0);
    Kill {
        selected_tgid: chosen.tgid,
        victim_tgid: victim.tgid,
        sacrificed_child,
        also_killed,
        mm_pinned_by_init,
        reaper_after_ms: (has_reaper && !mm_pinned_by_init).then_some(if kb.reaper_delay {
            2_000
        } else {
            0
        }),
        message,
    }
}

/// `mem_cgroup_get_oom_group()`: the highest memcg with `memory.oom.group`
/// between the victim's memcg and the OOM domain (§4.9).
fn oom_group(victim: &Process, call: &OomCall<'_>) -> Option<String> {
    let vm = victim.memcg.as_deref()?;
    let domain = call.domain_memcg.unwrap_or("/");
    if vm == "/" || !memcg_within(vm, domain) {
        return None;
    }
    // Walk from the domain down towards the victim: the first (highest)
    // flagged memcg wins.
    let mut path = String::new();
    let mut candidates = vec![domain.to_owned()];
    for part in vm.trim_start_matches('/').split('/') {
        path.push('/');
        path.push_str(part);
        if memcg_within(&path, domain) && path != domain {
            candidates.push(path.clone());
        }
    }
    candidates
        .into_iter()
        .filter(|c| c != "/")
        .find(|c| call.oom_group_memcgs.iter().any(|g| g == c))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::{
        select::Domain,
        task::anon,
        version::{KernelVersion, v},
    };

    fn call<'a>(procs: &'a [Process], constraint: Constraint, groups: &'a [String]) -> OomCall<'a> {
        OomCall {
            constraint,
            gfp_fs: true,
            gfp_zero: false,
            sysrq: false,
            oom_killer_disabled: false,
            notifier_freed: false,
            current: procs.first(),
            current_exiting: false,
            sysctls: OomSysctls::default(),
            scan: Scan {
                domain: if constraint == Constraint::ConstraintMemcg {
                    Domain::Memcg
                } else {
                    Domain::Global
                },
                // A test's processes live as long as the test; the scan
                // wants references to them.
                processes: Box::leak(procs.iter().collect::<Vec<_>>().into_boxed_slice()),
                totalpages: 100_000,
                page_size: 4096,
                sysrq: false,
            },
            domain_memcg: None,
            oom_group_memcgs: groups,
            cgroup_v2: true,
        }
    }

    fn decide(c: &OomCall<'_>, ver: KernelVersion) -> Decision {
        out_of_memory(c, &KernelBehavior::for_version(ver))
    }

    fn procs() -> Vec<Process> {
        vec![
            Process::simple(10, "small", anon(100), 0),
            Process::simple(11, "big", anon(9000), 0),
        ]
    }

    /// §6.1 steps 1 – 4, in order.
    #[test]
    fn early_exits_in_order() {
        let p = procs();
        let mut c = call(&p, Constraint::ConstraintNone, &[]);
        c.oom_killer_disabled = true;
        c.notifier_freed = true;
        assert!(matches!(decide(&c, v(6, 18, 0)), Decision::KillerDisabled));
        c.oom_killer_disabled = false;
        assert!(matches!(decide(&c, v(6, 18, 0)), Decision::NotifierFreed));
        c.notifier_freed = false;
        c.current_exiting = true;
        assert!(matches!(
            decide(&c, v(6, 18, 0)),
            Decision::CurrentExiting { tgid: 10 }
        ));
        c.current_exiting = false;
        c.gfp_fs = false;
        assert!(matches!(decide(&c, v(6, 18, 0)), Decision::NoFsNoKill));
        // memcg OOMs are exempt from the __GFP_FS test from 4.14.
        let mut m = call(&p, Constraint::ConstraintMemcg, &[]);
        m.gfp_fs = false;
        assert!(matches!(decide(&m, v(6, 18, 0)), Decision::Kill { .. }));
        assert!(matches!(decide(&m, v(4, 9, 154)), Decision::NoFsNoKill));
        // gfp 0 (page fault) passed the test up to 6.1.
        c.gfp_zero = true;
        assert!(matches!(decide(&c, v(5, 10, 89)), Decision::Kill { .. }));
        assert!(matches!(decide(&c, v(6, 18, 0)), Decision::NoFsNoKill));
    }

    /// §6.1 step 6: panic_on_oom 1 only for CONSTRAINT_NONE, 2 always, never sysrq.
    #[test]
    fn panic_on_oom() {
        let p = procs();
        let mut c = call(&p, Constraint::ConstraintNone, &[]);
        c.sysctls.panic_on_oom = 1;
        assert!(matches!(decide(&c, v(6, 18, 0)), Decision::Panic { .. }));
        let mut m = call(&p, Constraint::ConstraintMemcg, &[]);
        m.sysctls.panic_on_oom = 1;
        assert!(matches!(decide(&m, v(6, 18, 0)), Decision::Kill { .. }));
        m.sysctls.panic_on_oom = 2;
        assert!(matches!(decide(&m, v(6, 18, 0)), Decision::Panic { .. }));
        c.sysctls.panic_on_oom = 2;
        c.sysrq = true;
        assert!(matches!(decide(&c, v(6, 18, 0)), Decision::Kill { .. }));
        assert!(matches!(decide(&c, v(3, 10, 108)), Decision::Panic { .. }));
    }

    /// §4.10: current dies without a scan, global OOMs only (4.9+).
    #[test]
    fn oom_kill_allocating_task() {
        let p = procs();
        let mut c = call(&p, Constraint::ConstraintNone, &[]);
        c.sysctls.oom_kill_allocating_task = true;
        match decide(&c, v(6, 18, 0)) {
            Decision::KillAllocating { kill } => {
                assert_eq!(kill.victim_tgid, 10);
                assert_eq!(kill.message, "Out of memory (oom_kill_allocating_task)");
            }
            d => panic!("{d:?}"),
        }
        let mut m = call(&p, Constraint::ConstraintMemcg, &[]);
        m.sysctls.oom_kill_allocating_task = true;
        assert!(matches!(decide(&m, v(6, 18, 0)), Decision::Kill { .. }));
    }

    /// §6.1 step 9: nothing killable panics a global OOM, fails a memcg charge.
    #[test]
    fn nothing_killable() {
        let p = vec![Process::simple(10, "protected", anon(100), -1000)];
        match decide(&call(&p, Constraint::ConstraintNone, &[]), v(6, 18, 0)) {
            Decision::Panic { message } => assert_eq!(message, "System is deadlocked on memory"),
            d => panic!("{d:?}"),
        }
        match decide(&call(&p, Constraint::ConstraintNone, &[]), v(4, 14, 177)) {
            Decision::Panic { message } => {
                assert_eq!(message, "Out of memory and no killable processes...")
            }
            d => panic!("{d:?}"),
        }
        assert!(matches!(
            decide(&call(&p, Constraint::ConstraintMemcg, &[]), v(6, 18, 0)),
            Decision::NothingKillable { .. }
        ));
    }

    /// §6.3: the reaper, delayed 2 s from 5.18 (and 5.4.195, 5.15.135).
    #[test]
    fn reaper_timing() {
        let p = procs();
        let reaper = |ver| match decide(&call(&p, Constraint::ConstraintNone, &[]), ver) {
            Decision::Kill { kill, .. } => kill.reaper_after_ms,
            d => panic!("{d:?}"),
        };
        assert_eq!(reaper(v(6, 18, 0)), Some(2_000));
        assert_eq!(reaper(v(5, 10, 89)), Some(0));
        assert_eq!(reaper(v(5, 4, 195)), Some(2_000));
        assert_eq!(reaper(v(4, 4, 155)), None);
    }

    /// §4.6 step 4: sharers of the mm die too; init pins it.
    #[test]
    fn mm_sharers() {
        let mut p = procs();
        let mut sharer = Process::simple(12, "clone_vm", anon(9000), -1000);
        sharer.mm_id = p[1].mm_id;
        p.push(sharer);
        match decide(&call(&p, Constraint::ConstraintNone, &[]), v(6, 18, 0)) {
            Decision::Kill { kill, .. } => {
                assert_eq!(kill.victim_tgid, 11);
                assert_eq!(kill.also_killed, vec![(12, AlsoKilled::SharesMm)]);
            }
            d => panic!("{d:?}"),
        }
        // 4.4 spares an adj -1000 sharer.
        match decide(&call(&p, Constraint::ConstraintNone, &[]), v(4, 4, 155)) {
            Decision::Kill { kill, .. } => assert!(kill.also_killed.is_empty()),
            d => panic!("{d:?}"),
        }
    }

    /// §4.8: up to 5.0 the highest-scoring child not sharing the mm dies instead.
    #[test]
    fn sacrifice_child_until_5_0() {
        let mut p = procs();
        let mut child = Process::simple(13, "child", anon(50), 0);
        child.parent_tgid = Some(11);
        p.push(child);
        match decide(&call(&p, Constraint::ConstraintNone, &[]), v(5, 0, 1)) {
            Decision::Kill { kill, .. } => {
                assert_eq!((kill.selected_tgid, kill.victim_tgid), (11, 13));
                assert!(kill.sacrificed_child);
            }
            d => panic!("{d:?}"),
        }
        match decide(&call(&p, Constraint::ConstraintNone, &[]), v(5, 2, 1)) {
            Decision::Kill { kill, .. } => assert_eq!(kill.victim_tgid, 11),
            d => panic!("{d:?}"),
        }
    }

    /// §4.9: the highest oom.group memcg between the victim and the domain.
    #[test]
    fn oom_group_kills_the_subtree() {
        let mut p = procs();
        p[0].memcg = Some("/job/a".into());
        p[1].memcg = Some("/job/b".into());
        let mut outside = Process::simple(14, "other", anon(10), 0);
        outside.memcg = Some("/other".into());
        p.push(outside);
        let groups = vec!["/job".to_owned(), "/job/b".to_owned()];
        let mut c = call(&p, Constraint::ConstraintMemcg, &groups);
        c.domain_memcg = Some("/job");
        match decide(&c, v(6, 18, 0)) {
            Decision::Kill { kill, .. } => {
                assert_eq!(kill.victim_tgid, 11);
                assert_eq!(
                    kill.also_killed,
                    vec![(10, AlsoKilled::OomGroup("/job".into()))]
                );
            }
            d => panic!("{d:?}"),
        }
        // Not on cgroup v1, nor before 4.19.
        c.cgroup_v2 = false;
        match decide(&c, v(6, 18, 0)) {
            Decision::Kill { kill, .. } => assert!(kill.also_killed.is_empty()),
            d => panic!("{d:?}"),
        }
    }
}
