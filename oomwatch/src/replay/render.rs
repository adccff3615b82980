//! The human form of replays.

use super::analysis::*;
use crate::model::Domain;

/// The human form of the replays.
pub fn render(reports: &[ReplayReport], top: usize) -> String {
    use std::fmt::Write as _;
    let mut s = String::new();
    let n = reports.len();
    for (i, r) in reports.iter().enumerate() {
        let what = match (r.domain, &r.oom_memcg) {
            (Some(Domain::Memcg), Some(c)) => format!("memcg OOM in {c}"),
            (Some(Domain::Memcg), None) => "memcg OOM".to_owned(),
            (Some(Domain::Global), _) => "global OOM".to_owned(),
            (None, _) => "kill line only".to_owned(),
        };
        let kernel = match (&r.kernel, &r.arch) {
            (Some(k), Some(a)) => format!(", Linux {k} ({a})"),
            (Some(k), None) => format!(", Linux {k}"),
            (None, Some(a)) => format!(", kernel not stated ({a})"),
            (None, None) => ", kernel not stated".to_owned(),
        };
        let _ = writeln!(
            s,
            "report {} of {n} (lines {}-{}): {what}{kernel}",
            i + 1,
            r.lines[0],
            r.lines[1]
        );
        if let (Some(rules), Some(from)) = (&r.rules, &r.rules_from) {
            let _ = writeln!(s, "  rules:       Linux {rules}, {from}");
        }
        let t = &r.trigger;
        if let Some(comm) = &t.comm {
            let _ = writeln!(
                s,
                "  trigger:     {comm}{} gfp_mask={}{} order={} oom_score_adj={}{}",
                t.pid.map_or(String::new(), |p| format!(" ({p})")),
                t.gfp_mask.as_deref().unwrap_or("?"),
                match (&t.gfp_flags, &t.gfp_decoded) {
                    (Some(f), _) => format!("({f})"),
                    (None, Some(d)) => format!(" (decoded: {d})"),
                    (None, None) => String::new(),
                },
                t.order.map_or("?".into(), |o| o.to_string()),
                t.oom_score_adj.map_or("?".into(), |a| a.to_string()),
                if t.in_page_fault {
                    ", in a page fault"
                } else {
                    ""
                }
            );
        }
        if let Some(c) = &r.constraint {
            let _ = writeln!(s, "  constraint:  {c}");
        }
        if let Some(from) = &r.totalpages_from {
            let _ = writeln!(
                s,
                "  totalpages:  {} ({}): {from}",
                r.totalpages.map_or("unknown".into(), |t| t.to_string()),
                if r.totalpages_exact {
                    "exact"
                } else {
                    "approximate"
                }
            );
        }
        if r.domain.is_some() {
            let _ = writeln!(s, "  tasks:       {} in the table", r.tasks.len());
        }
        if !r.candidates.is_empty() {
            let _ = writeln!(
                s,
                "  {:>4} {:>8} {:>8} {:<16} {:>12} {:>10} {:>8} {:>7} {:>6}",
                "RANK", "PID", "TGID", "COMM", "POINTS", "RSS", "SWAP", "PGTBL", "ADJ"
            );
            for (rank, c) in r.candidates.iter().take(top).enumerate() {
                let _ = writeln!(
                    s,
                    "  {:>4} {:>8} {:>8} {:<16} {:>12} {:>10} {:>8} {:>7} {:>6}",
                    if c.eligible {
                        (rank + 1).to_string()
                    } else {
                        "-".into()
                    },
                    c.pid,
                    c.tgid,
                    c.comm,
                    c.points.map_or("-".into(), |p| p.to_string()),
                    c.rss_pages,
                    c.swap_pages,
                    c.pgtables_pages,
                    c.oom_score_adj
                );
            }
            if r.candidates.len() > top {
                let _ = writeln!(
                    s,
                    "       … {} more (--top N, or --json for all)",
                    r.candidates.len() - top
                );
            }
        }
        if let Some(p) = &r.predicted_victim {
            let _ = writeln!(
                s,
                "  predicted:   {} ({}) with {} points",
                p.comm, p.pid, p.points
            );
        }
        if let Some(k) = &r.kernel_selected {
            let _ = writeln!(
                s,
                "  selected:    {} ({}){} ({})",
                k.comm,
                k.pid,
                k.score.map_or(String::new(), |sc| format!(" score {sc}")),
                k.from
            );
        }
        if let Some(k) = &r.kernel_victim {
            let _ = writeln!(s, "  killed:      {} ({})", k.comm, k.pid);
        }
        let verdict = match (r.agrees, r.disagreement) {
            (Some(true), _) => "AGREE".to_owned(),
            (Some(false), Some(Disagreement::Contradiction)) => {
                "DISAGREE: the kernel contradicts its own rules".to_owned()
            }
            (Some(false), Some(d)) => format!(
                "DISAGREE ({}, explained below)",
                serde_json::to_value(d)
                    .ok()
                    .and_then(|v| v.as_str().map(str::to_owned))
                    .unwrap_or_default()
            ),
            (Some(false), None) => "DISAGREE".to_owned(),
            (None, _) => "NOT JUDGED".to_owned(),
        };
        let _ = writeln!(s, "  verdict:     {verdict}");
        let _ = writeln!(s, "  why:         {}", r.reason);
        for note in &r.notes {
            let _ = writeln!(s, "  note:        {note}");
        }
        s.push('\n');
    }
    let judged = reports.iter().filter(|r| r.agrees.is_some()).count();
    let agree = reports.iter().filter(|r| r.agrees == Some(true)).count();
    let _ = writeln!(
        s,
        "{n} report(s): {agree} agree, {} disagree, {} not judged",
        judged - agree,
        n - judged
    );
    s
}
