//! The human form of replays. Every text that comes from the report (task
//! names, cgroup paths, the kernel's strings) goes through
//! [`printable`]: a report is input, and its names may hold terminal escapes.

use super::analysis::*;
use crate::model::{Domain, printable as p};

/// The human form of the replays.
pub fn render(reports: &[ReplayReport], top: usize) -> String {
    use std::fmt::Write as _;
    let mut s = String::new();
    let n = reports.len();
    for (i, r) in reports.iter().enumerate() {
        let what = match (r.domain, &r.oom_memcg) {
            (Some(Domain::Memcg), Some(c)) => format!("memcg OOM in {}", p(c)),
            (Some(Domain::Memcg), None) => "memcg OOM".to_owned(),
            (Some(Domain::Global), _) => "global OOM".to_owned(),
            (None, _) => "kill line only".to_owned(),
        };
        let kernel = match (&r.kernel, &r.arch) {
            (Some(k), Some(a)) => format!(", Linux {} ({})", p(k), p(a)),
            (Some(k), None) => format!(", Linux {}", p(k)),
            (None, Some(a)) => format!(", kernel not stated ({})", p(a)),
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
            let _ = writeln!(s, "  rules:       Linux {rules}, {}", p(from));
        }
        let t = &r.trigger;
        if let Some(comm) = &t.comm {
            let _ = writeln!(
                s,
                "  trigger:     {}{} gfp_mask={}{} order={} oom_score_adj={}{}",
                p(comm),
                t.pid.map_or(String::new(), |pid| format!(" ({pid})")),
                p(t.gfp_mask.as_deref().unwrap_or("?")),
                match (&t.gfp_flags, &t.gfp_decoded) {
                    (Some(f), _) => format!("({})", p(f)),
                    (None, Some(d)) => format!(" (decoded: {})", p(d)),
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
            let _ = writeln!(s, "  constraint:  {}", p(c));
        }
        if let Some(from) = &r.totalpages_from {
            let _ = writeln!(
                s,
                "  totalpages:  {} ({}): {}",
                r.totalpages.map_or("unknown".into(), |t| t.to_string()),
                if r.totalpages_exact {
                    "exact"
                } else {
                    "approximate"
                },
                p(from)
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
                    p(&c.comm),
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
        if let Some(v) = &r.predicted_victim {
            let _ = writeln!(
                s,
                "  predicted:   {} ({}) with {} points",
                p(&v.comm),
                v.pid,
                v.points
            );
        }
        if let Some(k) = &r.kernel_selected {
            let _ = writeln!(
                s,
                "  selected:    {} ({}){} ({})",
                p(&k.comm),
                k.pid,
                k.score.map_or(String::new(), |sc| format!(" score {sc}")),
                p(k.from)
            );
        }
        if let Some(k) = &r.kernel_victim {
            let _ = writeln!(s, "  killed:      {} ({})", p(&k.comm), k.pid);
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
        let _ = writeln!(s, "  why:         {}", p(&r.reason));
        for note in &r.notes {
            let _ = writeln!(s, "  note:        {}", p(note));
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

#[cfg(test)]
mod tests {
    use super::*;

    /// A task name with a terminal escape and a newline reaches the human
    /// form escaped (no ESC byte, no line of its own); the JSON keeps it
    /// exact.
    #[test]
    fn names_are_escaped_for_the_terminal() {
        let text = include_str!(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/tests/fixtures/host-reports/x86_64-6.18.44-fc-v669-three-hogs.log"
        ))
        .replace(" oomwatch-hog\n", " \u{1b}[2J\u{1b}]0;pwned\u{7}\n");
        let reports = replay_all_given(&text, Given::default());
        assert_eq!(reports.len(), 1);
        let out = render(&reports, 10);
        assert!(!out.contains('\u{1b}') && !out.contains('\u{7}'), "{out}");
        assert!(out.contains("\\x1b[2J\\x1b]0;pwned\\x07"), "{out}");
        let plain = render(
            &replay_all_given(
                include_str!(concat!(
                    env!("CARGO_MANIFEST_DIR"),
                    "/tests/fixtures/host-reports/x86_64-6.18.44-fc-v669-three-hogs.log"
                )),
                Given::default(),
            ),
            10,
        );
        assert_eq!(out.lines().count(), plain.lines().count());
        let json = serde_json::to_string(&reports).unwrap();
        let back: serde_json::Value = serde_json::from_str(&json).unwrap();
        assert_eq!(
            back[0]["candidates"][0]["comm"],
            "\u{1b}[2J\u{1b}]0;pwned\u{7}"
        );
    }
}
