//! The daemon's prediction pass: every OOM domain's next victims and
//! headroom, and the self-check of the model against the kernel's own
//! `/proc/PID/oom_score` for every task.

use std::path::Path;

use serde::Serialize;

use crate::{
    domain,
    host::cgroup,
    model::explain::{CandidateJson, VictimJson},
    model::{
        KernelBehavior, oom_badness,
        score::{approximate_counter_slack, explain_score_difference, proc_oom_score},
        select::Domain,
    },
    predict,
    snapshot::{Snapshotter, memcg, proc},
};

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
    /// Bytes left before the domain's OOM: memcg limit − usage, or the host's
    /// MemAvailable.
    pub headroom_bytes: Option<u64>,
    pub victim: Option<VictimJson>,
    /// Victim's points minus the next process's.
    pub margin: Option<i64>,
    /// The first candidates by rank.
    pub top: Vec<CandidateJson>,
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

/// One pass: a snapshot from `snapper`, then every domain from cgroupfs.
pub fn refresh(
    snapper: &mut Snapshotter,
    proc_root: &Path,
    top: usize,
) -> anyhow::Result<(Vec<DomainSummary>, SelfCheck)> {
    let mut snap = snapper.read(proc_root)?;
    if snapper.in_use().source == "bpf" {
        sample_kernel_scores(&mut snap, proc_root, SELF_CHECK_SAMPLE);
    }
    let swappiness = predict::swappiness(proc_root);
    let check = self_check(proc_root, &snap);
    let available = snap.mem_available;
    let hierarchy = cgroup::memory_hierarchy();
    let kb = KernelBehavior::for_version(snap.version);
    let mut out = Vec::new();
    for dom in domain::all(&snap, swappiness) {
        let headroom_bytes = match (&dom.cgroup, &hierarchy) {
            (None, _) => available,
            (Some(path), Some(h)) => dom.limits.and_then(|l| {
                memcg::read_charge_state(h, path, snap.page_size, l.max_pages)
                    .ok()
                    .map(|s| l.max_pages.saturating_sub(s.usage_pages) * snap.page_size)
            }),
            (Some(_), None) => None,
        };
        let sel = predict::select_in(&snap, &dom, &kb);
        let report = predict::report(&snap.kernel, &dom, &sel, Some(top));
        out.push(DomainSummary {
            kind: dom.kind,
            cgroup: dom.cgroup.clone(),
            totalpages: dom.totalpages,
            headroom_bytes,
            margin: sel.margin(),
            victim: report.victim,
            top: report.candidates,
        });
    }
    Ok((out, check))
}

/// Reads `/proc/PID/oom_score` for `n` of the snapshot's processes, the
/// next `n` after those of the previous call.
fn sample_kernel_scores(snap: &mut proc::ProcSnapshot, proc_root: &Path, n: usize) {
    use std::sync::atomic::{AtomicUsize, Ordering};
    static NEXT: AtomicUsize = AtomicUsize::new(0);
    let len = snap.processes.len();
    if len == 0 {
        return;
    }
    let start = NEXT.fetch_add(n, Ordering::Relaxed) % len;
    for i in 0..n.min(len) {
        let e = &mut snap.processes[(start + i) % len];
        e.kernel_oom_score =
            std::fs::read_to_string(proc_root.join(e.process.tgid.to_string()).join("oom_score"))
                .ok()
                .and_then(|s| s.trim().parse().ok());
    }
}

/// Model vs kernel `/proc/PID/oom_score` for every task of the snapshot
/// that has one.
///
/// A task's counters and its `oom_score` are two reads; a task still
/// allocating (or one that stopped between them) can differ for that reason
/// alone. So a difference is looked at twice: the task is read again, and
/// only a difference that is still there, with the same counters and score,
/// is judged (explained by the kernel version, or a model error).
pub fn self_check(proc_root: &Path, snap: &proc::ProcSnapshot) -> SelfCheck {
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
        let Some(again) = proc::read_pid(proc_root, e.process.tgid) else {
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
