//! `oomwatch predict`: the model run on a live snapshot, for one OOM domain,
//! and the JSON contract of its `--json` output.

use std::path::Path;

use anyhow::Context as _;
use serde::Serialize;

use crate::{
    daemon::pass::select_in,
    model::{
        KernelBehavior, Selection,
        behavior::Rules,
        explain::{CandidateJson, VictimJson, candidates, victim},
        select::Domain,
    },
    snapshot::{
        Domains, Snapshotter, Source, SourceInUse, SystemSnapshot, Want, domain::OomDomain,
        proc::ProcSnapshot,
    },
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

/// Takes a snapshot from `source` with the domain asked for (the host, or
/// memcg `cgroup`) and runs the victim scan.
pub fn prepare(cgroup: Option<&str>, source: Source) -> anyhow::Result<Prediction> {
    let root = Path::new("/proc");
    let mut snapper = Snapshotter::open(source).context("--source bpf")?;
    let domains = match cgroup {
        Some(path) => Domains::Memcg(path.to_owned()),
        None => Domains::Host,
    };
    let SystemSnapshot {
        procs, mut domains, ..
    } = snapper.read_system(root, &Want::domains(domains))?;
    Ok(predict_in(
        procs,
        domains.remove(0),
        snapper.in_use().clone(),
    ))
}

/// Runs the model's scan over an already built domain.
pub fn predict_in(snap: ProcSnapshot, domain: OomDomain, source: SourceInUse) -> Prediction {
    let kb = KernelBehavior::for_version(snap.version);
    let selection = select_in(&snap, &domain, &kb);
    Prediction {
        snap,
        domain,
        kb,
        selection,
        source,
    }
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
    /// The rules the model applied to this kernel, and why.
    pub rules: Option<Rules>,
}

impl Prediction {
    /// The report, with at most `top` candidates.
    pub fn report(&self, top: Option<usize>) -> PredictReport {
        let mut r = report(&self.snap.kernel, &self.domain, &self.selection, top);
        r.source = self.source.source;
        r.rules = Some(self.kb.rules(&self.snap.version_from));
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
            victim: victim(sel),
            candidates,
            rules: None,
        }
    }
}

/// `oomwatch predict`.
pub fn predict(
    cgroup: Option<&str>,
    top: Option<usize>,
    json: bool,
    source: Source,
) -> anyhow::Result<()> {
    let p = crate::cli::predict::prepare(cgroup, source)?;
    let r = p.report(top);
    if json {
        println!("{}", serde_json::to_string_pretty(&r)?);
        return Ok(());
    }
    let where_ = match &r.domain.cgroup {
        Some(c) => format!("memory cgroup {c}"),
        None => "the host (global OOM)".into(),
    };
    println!(
        "domain: {where_}, totalpages {}, Linux {}",
        r.domain.totalpages, r.kernel
    );
    if let Some(rules) = &r.rules {
        println!(
            "rules: Linux {} ({}); oom_badness reads rss as {}",
            rules.version, rules.version_from, rules.rss_counters
        );
        if let Some(note) = &rules.note {
            println!("note: {note}");
        }
    }
    match (&r.victim, p.selection.margin()) {
        (Some(v), Some(m)) => println!(
            "victim: {} ({}) with {} points, {m} ahead of the next",
            v.comm, v.tgid, v.points
        ),
        (Some(v), None) => println!(
            "victim: {} ({}) with {} points, the only eligible task",
            v.comm, v.tgid, v.points
        ),
        (None, _) => println!("victim: none ({:?})", p.selection.outcome),
    }
    println!(
        "{:>8} {:>8} {:<16} {:>10} {:>6}  reason",
        "pid", "tgid", "comm", "points", "adj"
    );
    for c in &r.candidates {
        println!(
            "{:>8} {:>8} {:<16} {:>10} {:>6}  {}",
            c.pid,
            c.tgid,
            c.comm,
            c.points.map_or("-".into(), |p| p.to_string()),
            c.oom_score_adj,
            c.reason
        );
    }
    Ok(())
}
