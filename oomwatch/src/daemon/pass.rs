//! The daemon's prediction pass: every OOM domain's next victims and
//! headroom, and the self-check of the model against the kernel's own
//! `/proc/PID/oom_score` for every task.

use std::path::Path;

use serde::Serialize;

use crate::{
    model::{
        KernelBehavior, Scan, Selection,
        behavior::RssCounters,
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
    /// Every process scanned here (tgid, points; None where not eligible),
    /// for judging a kill that the pass did not predict.
    #[serde(skip)]
    pub scanned: Vec<(i32, Option<i64>)>,
    /// The kernel's memory events and pressure for the domain (None where
    /// they could not be read).
    #[serde(skip)]
    pub events: Option<crate::snapshot::memcg::DomainEvents>,
    /// What the limit leaves above the memory reclaim cannot free (the
    /// memcg's usage less its file LRU pages; the host's MemAvailable):
    /// what the forecast follows.
    #[serde(skip)]
    pub unreclaimable_headroom_bytes: Option<u64>,
    /// The forecast, once the loop has put this pass into it.
    #[serde(skip)]
    pub forecast: Option<crate::forecast::DomainForecast>,
    /// The scan stops here (no kill) for this OOM victim, not yet gone.
    #[serde(skip)]
    pub waiting_for: Option<i32>,
    /// Its OOM killer is disabled (v1 `oom_kill_disable`): an OOM waits.
    #[serde(skip)]
    pub held: bool,
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
    /// The rss counters the model scored with, and why (the release, or
    /// what this kernel's tasks were measured to say).
    pub rss_counters: Option<RssCounters>,
    pub rss_counters_from: String,
    /// Processes the pass's snapshot left out, other than by exiting
    /// (`oomwatch_snapshot_tasks_skipped_total`), each with its reason.
    #[serde(skip)]
    pub skipped: Vec<crate::snapshot::proc::Skipped>,
}

/// One pass: a [`SystemSnapshot`] from `snapper` (every domain), then the
/// model over it, and the self-check (which reads a task again through
/// the snapshot's reader when its score differs).
pub fn refresh(
    snapper: &mut Snapshotter,
    proc_root: &Path,
    top: usize,
) -> anyhow::Result<(Vec<DomainSummary>, SelfCheck)> {
    refresh_keeping(snapper, proc_root, top).map(|(_, domains, check)| (domains, check))
}

/// As [`refresh`], and the snapshot the pass read too: for the command
/// line, which names tasks the summaries hold only by tgid (a forecast
/// victim) and builds `predict`'s report from the very pass it forecast on.
pub fn refresh_keeping(
    snapper: &mut Snapshotter,
    proc_root: &Path,
    top: usize,
) -> anyhow::Result<(SystemSnapshot, Vec<DomainSummary>, SelfCheck)> {
    let snap = snapper.read_system(
        proc_root,
        &Want {
            domains: Domains::All,
            zones: false,
            kernel_scores: SELF_CHECK_SAMPLE,
            events: true,
        },
    )?;
    let check = self_check(&snap.procs, read_again(snapper, proc_root));
    let domains = summarize_domains(&snap, top);
    Ok((snap, domains, check))
}

/// The pass an OOM start calls for: one domain (a memcg's path, or None:
/// the host) and nothing else (no self-check, no events, no other
/// domain), so it can be done before the kernel's own scan where the
/// kernel takes long enough.
pub fn refresh_one(
    snapper: &mut Snapshotter,
    proc_root: &Path,
    top: usize,
    domain: &Option<String>,
) -> anyhow::Result<Vec<DomainSummary>> {
    let snap = snapper.read_system(
        proc_root,
        &Want {
            domains: match domain {
                Some(path) => Domains::Memcg(path.clone()),
                None => Domains::Host,
            },
            zones: false,
            kernel_scores: 0,
            events: false,
        },
    )?;
    Ok(summarize_domains(&snap, top))
}

/// The self-check's second look at a task, from the source of the first:
/// `/proc` files, or the task iterator run again (once per pass, when the
/// first difference needs it) with the task's `oom_score` read after it.
/// A second look from another source would compare two kinds of counters
/// (on 6.2 – 6.19 the iterator reads what the kernel scores, /proc/PID/status
/// the precise sums), not the task at two moments.
fn read_again<'a>(
    snapper: &'a mut Snapshotter,
    proc_root: &'a Path,
) -> impl FnMut(i32) -> Option<ProcEntry> + 'a {
    let mut again: Option<Option<ProcSnapshot>> = None;
    move |pid| {
        if snapper.in_use().source != "bpf" {
            return proc::read_pid(proc_root, pid);
        }
        let snap = again
            .get_or_insert_with(|| snapper.read(proc_root).ok())
            .as_ref()?;
        let mut e = snap
            .processes
            .iter()
            .find(|e| e.process.tgid == pid)?
            .clone();
        e.kernel_oom_score =
            std::fs::read_to_string(proc_root.join(pid.to_string()).join("oom_score"))
                .ok()
                .and_then(|s| s.trim().parse().ok());
        Some(e)
    }
}

/// Every domain of the snapshot: the model's victim, its margin, the first
/// `top` candidates and the headroom. No I/O.
pub fn summarize_domains(snap: &SystemSnapshot, top: usize) -> Vec<DomainSummary> {
    let kb = snap.procs.behavior();
    let knob_inputs = snap.knob_inputs();
    snap.domains
        .iter()
        .map(|dom| {
            let headroom_bytes = match &dom.cgroup {
                None => snap.procs.mem_available,
                Some(_) => dom.headroom_pages().map(|p| snap.bytes(p)),
            };
            let unreclaimable_headroom_bytes = match (&dom.cgroup, &dom.charge) {
                (None, _) => snap.procs.mem_available,
                (Some(_), Some(Ok(c))) if c.limit_pages != u64::MAX => {
                    let unreclaimable = c.usage_pages.saturating_sub(c.reclaimable_pages);
                    Some(snap.bytes(c.limit_pages.saturating_sub(unreclaimable)))
                }
                _ => None,
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
                scanned: scanned(&sel),
                events: dom.events.clone().and_then(Result::ok),
                unreclaimable_headroom_bytes,
                forecast: None,
                held: matches!(&dom.charge, Some(Ok(c)) if c.oom_kill_disable),
                waiting_for: match sel.outcome {
                    crate::model::select::Outcome::Aborted { waiting_for } => Some(waiting_for),
                    _ => None,
                },
            }
        })
        .collect()
}

/// Puts one pass into `forecaster` (its domains' headroom and every
/// scanned task's points, at `at_ns` on CLOCK_BOOTTIME) and sets each
/// domain's forecast; domains no pass has had for a window are forgotten.
/// The daemon's loop, `predict --forecast`, `top` and the backtest all
/// forecast through this.
pub fn forecast(
    forecaster: &mut crate::forecast::Forecaster,
    domains: &mut [DomainSummary],
    at_ns: u64,
) {
    for d in domains.iter_mut() {
        d.forecast = Some(forecaster.observe(
            &d.cgroup,
            &crate::forecast::DomainPass {
                at_ns,
                headroom_bytes: d.unreclaimable_headroom_bytes,
                scanned: &d.scanned,
            },
        ));
    }
    forecaster.forget_older_than(at_ns);
}

/// Each process of `sel` once (tgid, points where it was scored).
fn scanned(sel: &Selection) -> Vec<(i32, Option<i64>)> {
    let mut out: Vec<(i32, Option<i64>)> = sel
        .candidates
        .iter()
        .map(|c| {
            let scored = c.verdict == crate::model::select::Verdict::Scored;
            (c.tgid, c.badness.points.filter(|_| scored))
        })
        .collect();
    // Threads of one process: the process once, scored if any thread was.
    out.sort_unstable_by_key(|e| (e.0, e.1.is_none()));
    out.dedup_by_key(|e| e.0);
    out
}

/// Model vs kernel `/proc/PID/oom_score` for every task of the snapshot
/// that has one.
///
/// A task's counters and its `oom_score` are two reads; a task still
/// allocating (or one that stopped between them) can differ for that reason
/// alone. So a difference is looked at twice: the task is read again, and
/// only a difference that is still there, with the same counters and score,
/// is judged (explained by the kernel version, or a model error).
pub fn self_check(
    snap: &ProcSnapshot,
    mut read_again: impl FnMut(i32) -> Option<ProcEntry>,
) -> SelfCheck {
    let kb = snap.behavior();
    let t = snap.memory.totalpages();
    let slack = approximate_counter_slack(snap.nr_cpus);
    let score = |p: &crate::model::task::Process| {
        let b = oom_badness(p, t, snap.page_size, &kb);
        let s = proc_oom_score(&b, t, &kb);
        (b, s)
    };
    let rules = snap.rules();
    let mut c = SelfCheck {
        rss_counters: Some(rules.rss_counters),
        rss_counters_from: rules.rss_counters_from,
        skipped: snap.skipped.clone(),
        ..SelfCheck::default()
    };
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::{
        MmCounters, Process,
        score::proc_oom_score,
        totalpages::GlobalMemory,
        version::{KernelVersion, v},
    };

    const TOTAL: u64 = 6_170_914;

    fn snapshot(ver: KernelVersion, anon: u64, kernel_score: u64) -> ProcSnapshot {
        let mm = MmCounters {
            anon_pages: anon,
            ..MmCounters::default()
        };
        ProcSnapshot {
            kernel: ver.to_string(),
            version: ver,
            version_from: "the release".into(),
            page_size: 4096,
            memory: GlobalMemory {
                totalram_pages: TOTAL,
                total_swap_pages: 0,
            },
            nr_cpus: 2,
            mem_available: None,
            commit_limit: None,
            committed_as: None,
            processes: vec![ProcEntry {
                process: Process::simple(100, "hog", mm, 0),
                kernel_oom_score: Some(kernel_score),
                start_ticks: 1,
                stat_rss_pages: None,
            }],
            rss_measured: None,
            skipped: Vec::new(),
        }
    }

    /// The model's score for `anon` pages on `ver`.
    fn model(ver: KernelVersion, anon: u64) -> u64 {
        let kb = KernelBehavior::for_version(ver);
        let p = snapshot(ver, anon, 0).processes[0].process.clone();
        proc_oom_score(&oom_badness(&p, TOTAL, 4096, &kb), TOTAL, &kb)
    }

    /// A difference that stays, within the per-CPU slack of a score
    /// boundary: explained on a kernel that scores with approximate counters
    /// while /proc shows the precise sums (6.18), a mismatch on 7.0+, which
    /// scores with the sums /proc shows (the 7.3 guests' 96 – 128 wrongly
    /// explained differences).
    #[test]
    fn approximate_counters_explain_only_where_the_kernel_has_them() {
        // 6 100 pages scores 666; 6 171 would score 667.
        for (ver, explained) in [(v(6, 18, 44), true), (v(7, 3, 4), false)] {
            assert_eq!(model(ver, 6_100), 666);
            let snap = snapshot(ver, 6_100, 667);
            let again = snap.processes[0].clone();
            let c = self_check(&snap, |_| Some(again.clone()));
            assert_eq!(c.compared, 1, "{ver}");
            assert_eq!(c.explained.len(), usize::from(explained), "{ver}: {c:?}");
            assert_eq!(c.mismatches.len(), usize::from(!explained), "{ver}: {c:?}");
        }
    }

    /// A second look that agrees is a task that changed while read; one
    /// that is gone exited; an exact score is counted exact.
    #[test]
    fn second_looks() {
        let ver = v(7, 3, 4);
        let snap = snapshot(ver, 6_100, 667);
        let grown = snapshot(ver, 6_200, 667).processes[0].clone();
        let c = self_check(&snap, |_| Some(grown.clone()));
        assert!(
            c.mismatches.is_empty() && c.explained[0].contains("changed while read"),
            "{c:?}"
        );
        let c = self_check(&snap, |_| None);
        assert!(c.explained[0].contains("exited"), "{c:?}");
        let c = self_check(&snapshot(ver, 6_100, 666), |_| None);
        assert_eq!((c.exact, c.explained.len()), (1, 0));
    }

    #[test]
    fn skip_reasons_are_the_metrics_labels() {
        let reasons: Vec<&str> = crate::snapshot::proc::SkipReason::ALL
            .iter()
            .map(|r| r.as_str())
            .collect();
        assert_eq!(reasons, crate::telemetry::metrics::SKIP_REASONS);
    }
}
