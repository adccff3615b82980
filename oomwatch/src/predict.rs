//! Prediction: the model run on a live snapshot, for one OOM domain, and the
//! JSON contract of `oomwatch predict`.

use std::path::Path;

use anyhow::Context as _;
use serde::Serialize;

use crate::{
    domain::{self, OomDomain},
    model::explain::{CandidateJson, VictimJson, candidates},
    model::{KernelBehavior, Scan, Selection, select::Domain, select_bad_process},
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
