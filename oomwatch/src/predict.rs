//! Prediction: the model run on a live snapshot, for one OOM domain, and the
//! JSON contract of `oomwatch predict`.

use std::path::Path;

use anyhow::Context as _;
use serde::Serialize;

use crate::{
    domain::{self, OomDomain},
    model::{KernelBehavior, Scan, Selection, select::Domain, select::Verdict, select_bad_process},
    snapshot::{Snapshotter, Source, SourceInUse, proc::ProcSnapshot},
};

/// A snapshot, one of its domains, and the model's selection in it.
pub struct Prediction {
    pub snap: ProcSnapshot,
    pub domain: OomDomain,
    pub kb: KernelBehavior,
    pub selection: Selection,
    /// Where the snapshot came from.
    pub source: SourceInUse,
}

/// `vm.swappiness` under `proc_root` (60 if unreadable, the kernel default).
pub fn swappiness(proc_root: &Path) -> u32 {
    std::fs::read_to_string(proc_root.join("sys/vm/swappiness"))
        .ok()
        .and_then(|s| s.trim().parse().ok())
        .unwrap_or(60)
}

/// Takes a snapshot from `source`, builds the domain (the host, or memcg
/// `cgroup`) and runs the victim scan.
pub fn prepare(cgroup: Option<&str>, source: Source) -> anyhow::Result<Prediction> {
    let root = Path::new("/proc");
    let mut snapper = Snapshotter::open(source).context("--source bpf")?;
    let snap = snapper
        .read(root)
        .with_context(|| format!("read the processes ({})", snapper.in_use()))?;
    let dom = match cgroup {
        Some(path) => domain::memcg(&snap, path, swappiness(root))?,
        None => domain::global(&snap),
    };
    let mut p = predict_in(snap, dom);
    p.source = snapper.in_use().clone();
    Ok(p)
}

/// Runs the model's scan over an already built domain.
pub fn predict_in(snap: ProcSnapshot, domain: OomDomain) -> Prediction {
    let kb = KernelBehavior::for_version(snap.version);
    let selection = select_in(&snap, &domain, &kb);
    Prediction {
        snap,
        domain,
        kb,
        selection,
        source: SourceInUse {
            source: "proc",
            fallback: None,
        },
    }
}

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

/// `domain` of the JSON contract.
#[derive(Debug, Clone, Serialize)]
pub struct DomainJson {
    pub kind: Domain,
    pub cgroup: Option<String>,
    pub totalpages: u64,
}

/// `victim` of the JSON contract.
#[derive(Debug, Clone, Serialize)]
pub struct VictimJson {
    pub pid: i32,
    pub tgid: i32,
    pub comm: String,
    pub points: i64,
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

/// The `oomwatch predict --json` object. Field names and meanings are a
/// contract: add fields, never rename or remove them.
#[derive(Debug, Clone, Serialize)]
pub struct PredictReport {
    pub kernel: String,
    /// Where the processes were read: "bpf" (the task iterator) or "proc".
    pub source: &'static str,
    pub domain: DomainJson,
    pub victim: Option<VictimJson>,
    pub candidates: Vec<CandidateJson>,
}

impl Prediction {
    /// The report, with at most `top` candidates.
    pub fn report(&self, top: Option<usize>) -> PredictReport {
        let mut r = report(&self.snap.kernel, &self.domain, &self.selection, top);
        r.source = self.source.source;
        r
    }
}

/// The `predict` report of `sel` in `domain`, with at most `top` candidates
/// (eligible ones by rank, then the ineligible ones).
pub fn report(
    kernel: &str,
    domain: &OomDomain,
    sel: &Selection,
    top: Option<usize>,
) -> PredictReport {
    {
        let candidates = candidates(sel, top);
        PredictReport {
            kernel: kernel.to_owned(),
            source: "proc",
            domain: DomainJson {
                kind: domain.kind,
                cgroup: domain.cgroup.clone(),
                totalpages: domain.totalpages,
            },
            victim: sel.chosen().map(|c| VictimJson {
                pid: c.pid,
                tgid: c.tgid,
                comm: c.comm.clone(),
                points: c.badness.points.unwrap_or(i64::MAX),
            }),
            candidates,
        }
    }
}

/// The candidates of `sel`, at most `top`: eligible ones by rank (ties in
/// the order the kernel would break them), then the ineligible ones with
/// their reason; each process once.
pub fn candidates(sel: &Selection, top: Option<usize>) -> Vec<CandidateJson> {
    let mut ordered: Vec<&crate::model::select::Candidate> = sel.ranking();
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
                Verdict::Scored => crate::model::explain::breakdown(&c.badness),
                Verdict::CpusetMismatch => "cpuset/mempolicy does not intersect".into(),
                Verdict::ReapedVictim => "earlier victim, memory already reaped".into(),
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
