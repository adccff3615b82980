//! The daemon's prediction pass: every OOM domain's next victims and
//! headroom, and the self-check of the model against the kernel's own
//! `/proc/PID/oom_score` for every task.

use std::path::Path;

use serde::Serialize;

use crate::{
    model::{
        KernelBehavior, Scan, Selection,
        explain::{CandidateJson, VictimJson, candidates, victim},
        knobs::{Knobs, assess},
        oom::Constraint,
        oom_badness,
        score::{approximate_counter_slack, explain_score_difference, proc_oom_score},
        select::Domain,
        select_bad_process,
    },
    snapshot::{
        Domains, Snapshotter, SystemSnapshot, Want,
        domain::OomDomain,
        proc::{self, ProcEntry, ProcSnapshot},
    },
};

/// The model's victim scan of `domain`.
pub fn select_in(snap: &ProcSnapshot, domain: &OomDomain, kb: &KernelBehavior) -> Selection {
    let processes = domain.processes(snap);
    select_bad_process(
        &Scan {
            domain: domain.kind,
            processes: &processes,
            totalpages: domain.totalpages,
            page_size: snap.page_size,
            sysrq: false,
        },
        kb,
    )
}

/// The constraint of an OOM in a domain of `kind`: a memcg's is
/// CONSTRAINT_MEMCG; the host's is taken as CONSTRAINT_NONE (a cpuset or
/// mempolicy constraint belongs to the allocating task, unknown before the
/// OOM).
pub fn constraint_of(kind: Domain) -> Constraint {
    match kind {
        Domain::Global => Constraint::ConstraintNone,
        Domain::Memcg => Constraint::ConstraintMemcg,
    }
}

/// With the task iterator, each pass checks the model against
/// `/proc/PID/oom_score` for this many processes (rotating through all of
/// them: 1 000 processes in about 30 passes), so the check does not cost
/// what the iterator saves (each read is an open, a read and a close:
/// about 12 µs here).
pub const SELF_CHECK_SAMPLE: usize = 32;

/// One domain's state after a pass.
#[derive(Debug, Clone, Serialize)]
pub struct DomainSummary {
    pub kind: Domain,
    pub cgroup: Option<String>,
    pub totalpages: u64,
    /// totalpages in bytes (the snapshot's page size).
    pub size_bytes: u64,
    /// Bytes left before the domain's OOM: memcg limit − usage, or the host's
    /// MemAvailable.
    pub headroom_bytes: Option<u64>,
    pub victim: Option<VictimJson>,
    /// Victim's points minus the next process's.
    pub margin: Option<i64>,
    /// The first candidates by rank.
    pub top: Vec<CandidateJson>,
    /// The OOM sysctls and what they mean for this domain's OOM (the host's
    /// also carries its zones' headroom to the min watermarks).
    pub knobs: Knobs,
}

/// The model against the kernel on one pass.
#[derive(Debug, Clone, Default, Serialize)]
pub struct SelfCheck {
    pub compared: u64,
    pub exact: u64,
    /// Differences explained (e.g. approximate per-CPU counters), one line each.
    pub explained: Vec<String>,
    /// Differences nothing explains: model errors, with the task's numbers.
    pub mismatches: Vec<String>,
}

/// One pass: a [`SystemSnapshot`] from `snapper` (every domain), then the
/// model over it, and the self-check (which reads a task again through
/// the snapshot's reader when its score differs).
pub fn refresh(
    snapper: &mut Snapshotter,
    proc_root: &Path,
    top: usize,
) -> anyhow::Result<(Vec<DomainSummary>, SelfCheck)> {
    let snap = snapper.read_system(
        proc_root,
        &Want {
            domains: Domains::All,
            zones: false,
            kernel_scores: SELF_CHECK_SAMPLE,
        },
    )?;
    let check = self_check(&snap.procs, |pid| proc::read_pid(proc_root, pid));
    Ok((summarize_domains(&snap, top), check))
}

/// Every domain of the snapshot: the model's victim, its margin, the first
/// `top` candidates and the headroom. No I/O.
pub fn summarize_domains(snap: &SystemSnapshot, top: usize) -> Vec<DomainSummary> {
    let kb = KernelBehavior::for_version(snap.procs.version);
    let knob_inputs = snap.knob_inputs();
    snap.domains
        .iter()
        .map(|dom| {
            let headroom_bytes = match &dom.cgroup {
                None => snap.procs.mem_available,
                Some(_) => dom.headroom_pages().map(|p| snap.bytes(p)),
            };
            let sel = select_in(&snap.procs, dom, &kb);
            DomainSummary {
                kind: dom.kind,
                cgroup: dom.cgroup.clone(),
                totalpages: dom.totalpages,
                size_bytes: snap.bytes(dom.totalpages),
                headroom_bytes,
                margin: sel.margin(),
                victim: victim(&sel),
                top: candidates(&sel, Some(top)),
                knobs: assess(&knob_inputs, constraint_of(dom.kind), &kb),
            }
        })
        .collect()
}

/// Model vs kernel `/proc/PID/oom_score` for every task of the snapshot
/// that has one.
///
/// A task's counters and its `oom_score` are two reads; a task still
/// allocating (or one that stopped between them) can differ for that reason
/// alone. So a difference is looked at twice: the task is read again, and
/// only a difference that is still there, with the same counters and score,
/// is judged (explained by the kernel version, or a model error).
pub fn self_check(snap: &ProcSnapshot, read_again: impl Fn(i32) -> Option<ProcEntry>) -> SelfCheck {
    let kb = KernelBehavior::for_version(snap.version);
    let t = snap.memory.totalpages();
    let slack = approximate_counter_slack(snap.nr_cpus);
    let score = |p: &crate::model::task::Process| {
        let b = oom_badness(p, t, snap.page_size, &kb);
        let s = proc_oom_score(&b, t, &kb);
        (b, s)
    };
    let mut c = SelfCheck::default();
    for e in &snap.processes {
        let Some(kernel) = e.kernel_oom_score else {
            continue;
        };
        let (b, model) = score(&e.process);
        c.compared += 1;
        if model == kernel {
            c.exact += 1;
            continue;
        }
        let id = format!("pid {} ({})", e.process.tgid, e.process.comm);
        let Some(again) = read_again(e.process.tgid) else {
            c.explained.push(format!("{id}: exited during the check"));
            continue;
        };
        let (_, model_again) = score(&again.process);
        if again.kernel_oom_score == Some(model_again) {
            c.explained.push(format!(
                "{id}: changed while read (model {model}, kernel {kernel}; read again both say {model_again})"
            ));
            continue;
        }
        if again.process.mm != e.process.mm || again.kernel_oom_score != Some(kernel) {
            c.explained.push(format!(
                "{id}: still changing (model {model}, kernel {kernel})"
            ));
            continue;
        }
        match explain_score_difference(&b, t, kernel, slack, &kb) {
            Some(why) => c
                .explained
                .push(format!("{id}: model {model}, kernel {kernel}: {why}")),
            None => c.mismatches.push(format!(
                "{id} adj {} rss {} swap {} pgtables {} points {:?} totalpages {t}: model {model}, kernel {kernel}",
                e.process.oom_score_adj,
                b.rss_pages,
                b.swap_pages,
                b.pgtables_pages,
                b.points
            )),
        }
    }
    c
}
