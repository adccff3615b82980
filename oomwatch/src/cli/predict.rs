//! `oomwatch predict`: the model run on a live snapshot, for one OOM domain,
//! and the JSON contract of its `--json` output.

use std::path::Path;

use anyhow::Context as _;
use serde::Serialize;

use crate::{
    daemon::pass::{constraint_of, select_in},
    model::{
        KernelBehavior, Selection,
        behavior::Rules,
        explain::{CandidateJson, VictimJson, candidates, victim},
        knobs::{Knobs, OomAction, assess},
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
    /// The OOM sysctls and what they mean for this domain's OOM.
    pub knobs: Knobs,
}

/// The snapshotter for `source` reading `proc_root`: a tree other than
/// `/proc` (a captured one) is read as files, so `auto` means `proc` there.
pub fn open_source(source: Source, proc_root: &Path) -> anyhow::Result<Snapshotter> {
    if proc_root == Path::new("/proc") {
        return Snapshotter::open(source).context("--source bpf");
    }
    if source == Source::Bpf {
        anyhow::bail!(
            "--source bpf reads the running kernel, not the tree at --proc-root {}",
            proc_root.display()
        );
    }
    Snapshotter::open(Source::Proc).context("--source proc")
}

/// Takes a snapshot of `proc_root` from `source` with the domain asked for
/// (the host, or memcg `cgroup`) and runs the victim scan.
pub fn prepare(
    cgroup: Option<&str>,
    source: Source,
    proc_root: &Path,
) -> anyhow::Result<Prediction> {
    let mut snapper = open_source(source, proc_root)?;
    let domains = match cgroup {
        Some(path) => Domains::Memcg(path.to_owned()),
        None => Domains::Host,
    };
    let snap = snapper.read_system(proc_root, &Want::domains(domains))?;
    predict_first(snap, snapper.in_use().clone()).context("the snapshot built no domain")
}

/// The prediction in the snapshot's first domain, with the knobs as they
/// bear on an OOM there; None when it has no domain.
pub fn predict_first(snap: SystemSnapshot, source: SourceInUse) -> Option<Prediction> {
    let knob_inputs = snap.knob_inputs();
    let SystemSnapshot {
        procs, mut domains, ..
    } = snap;
    if domains.is_empty() {
        return None;
    }
    let domain = domains.remove(0);
    let kb = procs.behavior();
    let knobs = assess(&knob_inputs, constraint_of(domain.kind), &kb);
    Some(predict_in(procs, domain, source, knobs))
}

/// Runs the model's scan over an already built domain.
pub fn predict_in(
    snap: ProcSnapshot,
    domain: OomDomain,
    source: SourceInUse,
    knobs: Knobs,
) -> Prediction {
    let kb = snap.behavior();
    let selection = select_in(&snap, &domain, &kb);
    Prediction {
        snap,
        domain,
        kb,
        selection,
        source,
        knobs,
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
    /// The task the scan chooses: the one killed when `action.kind` is
    /// `kill_victim`; with `panic` nobody is killed, with
    /// `kill_allocating_task` only when the allocating task is not killable.
    pub victim: Option<VictimJson>,
    pub candidates: Vec<CandidateJson>,
    /// The rules the model applied to this kernel, and why.
    pub rules: Option<Rules>,
    /// What an OOM in this domain does: `kill_victim`, `panic` (with the
    /// kernel's `message`) or `kill_allocating_task`.
    pub action: OomAction,
    /// Each OOM sysctl's value and what it means here, the commit headroom,
    /// the host's zones' headroom to their min watermarks, and warnings.
    pub knobs: Knobs,
}

impl Prediction {
    /// The report, with at most `top` candidates.
    pub fn report(&self, top: Option<usize>) -> PredictReport {
        let mut r = report(
            &self.snap.kernel,
            &self.domain,
            &self.selection,
            top,
            &self.knobs,
        );
        r.source = self.source.source;
        r.rules = Some(self.snap.rules());
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
    knobs: &Knobs,
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
            action: knobs.action.clone(),
            knobs: knobs.clone(),
        }
    }
}

/// `oomwatch predict`.
pub fn predict(
    cgroup: Option<&str>,
    top: Option<usize>,
    json: bool,
    source: Source,
    proc_root: &Path,
) -> anyhow::Result<()> {
    let p = prepare(cgroup, source, proc_root)?;
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
    println!("action: {}", action_line(&p.knobs));
    let label = victim_label(&p.knobs.action);
    match (&r.victim, p.selection.margin()) {
        (Some(v), Some(m)) => println!(
            "{label}: {} ({}) with {} points, {m} ahead of the next",
            v.comm, v.tgid, v.points
        ),
        (Some(v), None) => println!(
            "{label}: {} ({}) with {} points, the only eligible task",
            v.comm, v.tgid, v.points
        ),
        (None, _) => println!("{label}: none ({:?})", p.selection.outcome),
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
    print!("{}", knob_lines(&p.knobs));
    Ok(())
}

/// The `action:` line: what an OOM in the domain does.
pub fn action_line(k: &Knobs) -> String {
    match &k.action {
        OomAction::KillVictim => "the OOM killer kills the victim below (vm.panic_on_oom and \
             vm.oom_kill_allocating_task do not apply)"
            .to_owned(),
        OomAction::Panic { message } => format!(
            "PANIC: this OOM panics the machine (vm.panic_on_oom={}: \"{message}\"); no task \
             is killed",
            k.panic_on_oom.value
        ),
        OomAction::KillAllocatingTask => "the allocating task is killed without a scan \
             (vm.oom_kill_allocating_task=1): which task that is is known only when the OOM \
             starts; the victim below dies only if it is not killable (no mm, init, a kernel \
             thread, oom_score_adj -1000)"
            .to_owned(),
    }
}

/// How the scan's choice is named under `action`.
pub fn victim_label(action: &OomAction) -> &'static str {
    match action {
        OomAction::KillVictim => "victim",
        OomAction::Panic { .. } => "victim (were there no panic)",
        OomAction::KillAllocatingTask => "victim (if the allocating task is not killable)",
    }
}

/// The `knobs:` block: each sysctl with its meaning, the commit headroom,
/// the zones' headroom to their min watermarks, then the warnings.
pub fn knob_lines(k: &Knobs) -> String {
    use std::fmt::Write as _;
    let mut s = String::from("knobs:\n");
    for (name, knob) in [
        ("panic_on_oom", &k.panic_on_oom),
        ("oom_kill_allocating_task", &k.oom_kill_allocating_task),
        ("overcommit_memory", &k.overcommit_memory),
        ("overcommit_ratio", &k.overcommit_ratio),
        ("overcommit_kbytes", &k.overcommit_kbytes),
        ("oom_dump_tasks", &k.oom_dump_tasks),
    ] {
        let _ = writeln!(
            s,
            "  {:<30} {}",
            format!("vm.{name}={}", knob.value),
            knob.effect
        );
    }
    if let Some(c) = &k.commit {
        let _ = writeln!(
            s,
            "  {:<30} CommitLimit {} − Committed_AS {} = {} ({})",
            "commit headroom",
            human_bytes(c.commit_limit_bytes as i64),
            human_bytes(c.committed_as_bytes as i64),
            human_bytes(c.headroom_bytes),
            if c.enforced {
                "enforced: vm.overcommit_memory=2"
            } else {
                "not enforced: vm.overcommit_memory is not 2"
            }
        );
    }
    if let Some(w) = &k.watermarks {
        let _ = writeln!(
            s,
            "  {:<30} {} (min_free_kbytes {}, watermark_scale_factor {}, lowmem_reserve_ratio {:?})",
            "min watermark headroom",
            human_bytes(w.headroom_bytes as i64),
            w.min_free_kbytes,
            w.watermark_scale_factor,
            w.lowmem_reserve_ratio
        );
        for z in &w.zones {
            let _ = writeln!(
                s,
                "    node {} {:<8} free {} − (min {} + lowmem_reserve {}) = {} pages ({})",
                z.node,
                z.zone,
                z.free_pages,
                z.min_pages,
                z.lowmem_reserve_pages,
                z.headroom_pages,
                human_bytes(z.headroom_bytes)
            );
        }
    }
    for w in &k.warnings {
        let _ = writeln!(s, "warning: {w}");
    }
    s
}

/// Bytes as a short human string (KiB … TiB), signed.
pub fn human_bytes(b: i64) -> String {
    let units = ["B", "KiB", "MiB", "GiB", "TiB"];
    let mut v = b.unsigned_abs() as f64;
    let mut i = 0;
    while v >= 1024.0 && i < units.len() - 1 {
        v /= 1024.0;
        i += 1;
    }
    let sign = if b < 0 { "-" } else { "" };
    if i == 0 {
        format!("{b} B")
    } else {
        format!("{sign}{v:.1} {}", units[i])
    }
}
