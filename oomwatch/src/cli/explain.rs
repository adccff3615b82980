//! `oomwatch explain`: why the kernel would, or would not, kill one task.

use crate::{model::printable, snapshot::Source};

/// `oomwatch explain`.
pub fn explain(
    pid: i32,
    cgroup: Option<&str>,
    json: bool,
    source: Source,
    proc_root: &std::path::Path,
) -> anyhow::Result<()> {
    use crate::cli::predict::{action_line, knob_lines, victim_label};
    use crate::model::explain::explain_task;
    let crate::cli::predict::Prediction {
        snap,
        domain: dom,
        selection: sel,
        knobs,
        ..
    } = crate::cli::predict::prepare(cgroup, source, proc_root)?;
    if !snap
        .processes
        .iter()
        .any(|e| e.process.tgid == pid || e.process.threads.iter().any(|t| t.pid == pid))
    {
        anyhow::bail!("no process {pid} (is it running, and in this pid namespace?)");
    }
    let ex = explain_task(&sel, pid);
    let victim = sel.chosen().map(|c| {
        serde_json::json!({
            "pid": c.pid, "tgid": c.tgid, "comm": c.comm, "points": c.badness.points,
        })
    });
    if json {
        let out = serde_json::json!({
            "kernel": snap.kernel,
            "domain": {
                "kind": dom.kind,
                "cgroup": dom.cgroup,
                "requested": dom.requested,
                "totalpages": dom.totalpages,
            },
            "victim": victim,
            "explanation": ex,
            "action": knobs.action,
            "knobs": knobs,
        });
        println!("{}", serde_json::to_string_pretty(&out)?);
        return Ok(());
    }
    let where_ = match (&dom.cgroup, &dom.requested) {
        (Some(c), Some(r)) => format!(
            "memory cgroup {} (the limit above {})",
            printable(c),
            printable(r)
        ),
        (Some(c), None) => format!("memory cgroup {}", printable(c)),
        (None, _) => "the host (global OOM)".to_owned(),
    };
    println!(
        "domain:    {where_}, totalpages {}, {} tasks scanned, Linux {}",
        dom.totalpages,
        sel.candidates.len(),
        snap.kernel
    );
    if let Some(c) = &ex.candidate {
        println!(
            "task:      {} ({pid}), oom_score_adj {}, {}",
            printable(&c.comm),
            c.oom_score_adj,
            crate::model::explain::breakdown(&c.badness)
        );
    }
    if let Some(r) = ex.rank {
        println!("rank:      {r} of {}", sel.ranking().len());
    }
    println!("action:    {}", action_line(&knobs));
    let label = victim_label(&knobs.action);
    match sel.chosen() {
        Some(v) => println!(
            "{label}: {} ({}) with {} points",
            printable(&v.comm),
            v.tgid,
            v.badness.points.unwrap_or(0)
        ),
        None => println!("{label}: none ({:?})", sel.outcome),
    }
    println!("why:       {}", printable(&ex.why));
    println!("to change: {}", printable(&ex.to_change));
    print!("{}", knob_lines(&knobs));
    Ok(())
}
