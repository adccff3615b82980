//! The kernel's own OOM report (dmesg, `/dev/kmsg`, journal or syslog
//! copies): parsed into data, and its selection replayed with the model.
//!
//! Formats of 4.19 and later (kernel-oom.md §9): the `invoked oom-killer`
//! header, the `CPU: … Comm: …` line (for the release), `memory: usage`,
//! `memory+swap:` / `swap:` lines (memcg), `pages RAM` / `pages reserved` /
//! `Total swap` (global), the task table in both column layouts, the
//! `oom-kill:` summary and the `Killed process` line. Line prefixes (syslog,
//! journal, dmesg -T, printk caller ids, mail indentation) are skipped.

use serde::Serialize;

use crate::model::{
    KernelBehavior, KernelVersion, MmCounters, Process,
    select::{Domain, Scan, select_bad_process},
};

/// One row of the task table.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct TaskRow {
    pub pid: i32,
    pub uid: u32,
    pub tgid: i32,
    pub total_vm_pages: u64,
    pub rss_pages: u64,
    /// 6.12+ tables split rss.
    pub rss_anon_pages: Option<u64>,
    pub rss_file_pages: Option<u64>,
    pub rss_shmem_pages: Option<u64>,
    pub pgtables_bytes: u64,
    pub swapents: u64,
    pub oom_score_adj: i16,
    pub name: String,
}

/// The `Killed process` line.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Killed {
    pub message: String,
    pub pid: i32,
    pub comm: String,
    pub anon_rss_kb: Option<u64>,
    pub file_rss_kb: Option<u64>,
    pub shmem_rss_kb: Option<u64>,
}

/// One OOM report.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct Report {
    /// The allocating task (header).
    pub comm: Option<String>,
    pub gfp_mask: Option<u64>,
    pub order: Option<i32>,
    pub oom_score_adj: Option<i16>,
    /// From the `CPU: … Comm: …` line.
    pub kernel: Option<String>,
    /// memcg OOM: `memory: usage …, limit …`.
    pub memcg_limit_kb: Option<u64>,
    /// v1 `memory+swap:` limit.
    pub memsw_limit_kb: Option<u64>,
    /// v2 `swap:` limit.
    pub swap_limit_kb: Option<u64>,
    /// Global OOM: `N pages RAM`, `N pages reserved`, `Total swap = NkB`.
    pub pages_ram: Option<u64>,
    pub pages_reserved: Option<u64>,
    pub total_swap_kb: Option<u64>,
    /// The `oom-kill:` line's fields (constraint, oom_memcg, task_memcg, task, pid, …).
    pub oom_kill: Vec<(String, String)>,
    pub tasks: Vec<TaskRow>,
    /// Every `Killed process` line, in order (several with memory.oom.group).
    pub killed: Vec<Killed>,
    /// The call trace runs through the page-fault handler
    /// (`handle_mm_fault`): the OOM was invoked inside a page fault.
    pub in_page_fault: bool,
}

/// The line without its syslog/journal/timestamp prefix.
fn body(line: &str) -> &str {
    let mut s = match line.find("kernel: ") {
        Some(i) => &line[i + 8..],
        None => line,
    };
    loop {
        s = s.trim_start();
        if !s.starts_with('[') {
            return s;
        }
        let Some(end) = s.find(']') else { return s };
        let inner = s[1..end].trim();
        // Timestamps ("  246.610518", "Fri Sep 25 15:29:47 2020") and caller
        // ids ("T1778", "C3") are skipped; a task-table pid ("  31407") is not.
        let is_prefix = inner.contains('.')
            || inner.contains(':')
            || ((inner.starts_with('T') || inner.starts_with('C'))
                && inner[1..].chars().all(|c| c.is_ascii_digit()));
        if !is_prefix {
            return s;
        }
        s = &s[end + 1..];
    }
}

fn num<T: std::str::FromStr>(s: &str) -> Option<T> {
    s.trim().trim_end_matches("kB").trim().parse().ok()
}

/// `key:NkB` / `key=N` field inside a line.
fn field<'a>(line: &'a str, key: &str) -> Option<&'a str> {
    let i = line.find(key)? + key.len();
    let rest = &line[i..];
    let end = rest.find([',', ' ', '(', ')']).unwrap_or(rest.len());
    Some(&rest[..end])
}

/// The message of each `/dev/kmsg` record (`prio,seq,usec,flags;message`),
/// one per line, continuation lines (` KEY=value`) dropped.
pub fn kmsg_messages(records: &str) -> String {
    records
        .lines()
        .filter(|l| !l.starts_with(' '))
        .filter_map(|l| l.split_once(';').map(|(_, m)| m))
        .collect::<Vec<_>>()
        .join("\n")
}

/// Parses the first OOM report in `text` (from its header to its last
/// `Killed process` line). Returns `None` without a header.
pub fn parse(text: &str) -> Option<Report> {
    let mut r = Report::default();
    let mut seen_header = false;
    let mut columns: Option<Vec<String>> = None;
    for raw in text.lines() {
        let line = body(raw);
        if let Some(i) = line.find(" invoked oom-killer: ") {
            if seen_header {
                break; // the next report
            }
            seen_header = true;
            r.comm = Some(line[..i].to_owned());
            let rest = &line[i..];
            r.gfp_mask = field(rest, "gfp_mask=0x").and_then(|h| u64::from_str_radix(h, 16).ok());
            r.order = field(rest, "order=").and_then(num);
            r.oom_score_adj = field(rest, "oom_score_adj=").and_then(num);
            continue;
        }
        if !seen_header {
            continue;
        }
        if line.contains("handle_mm_fault+") {
            r.in_page_fault = true;
        }
        if line.starts_with("CPU: ") && line.contains(" Comm: ") && r.kernel.is_none() {
            // "... Not tainted 6.8.11 #13" / "... Tainted: G ... 6.7.4-arch1-1 #1 …"
            if let Some(h) = line.find(" #") {
                r.kernel = line[..h].split_whitespace().last().map(str::to_owned);
            }
        } else if let Some(rest) = line.strip_prefix("memory: usage ") {
            r.memcg_limit_kb = field(rest, "limit ").and_then(num);
        } else if let Some(rest) = line.strip_prefix("memory+swap: usage ") {
            r.memsw_limit_kb = field(rest, "limit ").and_then(num);
        } else if let Some(rest) = line.strip_prefix("swap: usage ") {
            r.swap_limit_kb = field(rest, "limit ").and_then(num);
        } else if let Some(n) = line.strip_suffix(" pages RAM") {
            r.pages_ram = num(n);
        } else if let Some(n) = line.strip_suffix(" pages reserved") {
            r.pages_reserved = num(n);
        } else if let Some(v) = line.strip_prefix("Total swap = ") {
            r.total_swap_kb = num(v);
        } else if line.starts_with("[  pid  ]") || line.starts_with("[ pid ]") {
            let names = line[line.find(']').map_or(0, |i| i + 1)..]
                .split_whitespace()
                .map(str::to_owned)
                .collect();
            columns = Some(names);
        } else if let Some(rest) = line.strip_prefix("oom-kill:") {
            r.oom_kill = parse_oom_kill(rest);
        } else if let Some(i) = line.find(": Killed process ") {
            if let Some(k) = parse_killed(&line[..i], &line[i + 17..]) {
                r.killed.push(k);
            }
        } else if let (true, Some(cols)) = (line.starts_with('['), &columns) {
            if let Some(t) = parse_row(line, cols) {
                r.tasks.push(t);
            }
        }
    }
    seen_header.then_some(r)
}

fn parse_row(line: &str, cols: &[String]) -> Option<TaskRow> {
    let close = line.find(']')?;
    let pid: i32 = line[1..close].trim().parse().ok()?;
    let rest = &line[close + 1..];
    // Every column but the last ("name") is a number; the name is the rest.
    let numeric = cols.len().checked_sub(1)?;
    let mut it = rest.split_whitespace();
    let mut values = Vec::with_capacity(numeric);
    for _ in 0..numeric {
        values.push(it.next()?.parse::<i64>().ok()?);
    }
    let name = it.collect::<Vec<_>>().join(" ");
    let get = |col: &str| cols.iter().position(|c| c == col).map(|i| values[i]);
    Some(TaskRow {
        pid,
        uid: get("uid")? as u32,
        tgid: get("tgid")? as i32,
        total_vm_pages: get("total_vm")? as u64,
        rss_pages: get("rss")? as u64,
        rss_anon_pages: get("rss_anon").map(|v| v as u64),
        rss_file_pages: get("rss_file").map(|v| v as u64),
        rss_shmem_pages: get("rss_shmem").map(|v| v as u64),
        pgtables_bytes: get("pgtables_bytes")? as u64,
        swapents: get("swapents")? as u64,
        oom_score_adj: get("oom_score_adj")? as i16,
        name,
    })
}

/// The `oom-kill:` fields. `mems_allowed` and cpuset names can hold commas,
/// so the known keys are looked up in order rather than split on commas.
fn parse_oom_kill(rest: &str) -> Vec<(String, String)> {
    const KEYS: [&str; 9] = [
        "constraint=",
        ",nodemask=",
        ",cpuset=",
        ",mems_allowed=",
        ",oom_memcg=",
        ",task_memcg=",
        ",task=",
        ",pid=",
        ",uid=",
    ];
    let mut out = Vec::new();
    let mut positions: Vec<(usize, &str)> = KEYS
        .iter()
        .filter_map(|k| rest.find(k).map(|i| (i, *k)))
        .collect();
    positions.sort();
    for (n, (i, k)) in positions.iter().enumerate() {
        let start = i + k.len();
        let end = positions.get(n + 1).map_or(rest.len(), |(j, _)| *j);
        let key = k.trim_start_matches(',').trim_end_matches('=');
        let value = rest[start..end].trim();
        // ",global_oom" sits where oom_memcg would.
        let value = value.strip_suffix(",global_oom").unwrap_or(value);
        out.push((key.to_owned(), value.to_owned()));
    }
    if rest.contains(",global_oom") {
        out.push(("global_oom".into(), "true".into()));
    }
    out
}

/// A lone `…: Killed process N (comm) …` line (no prefix), e.g. a
/// `memory.oom.group` member killed after the report.
pub fn killed_line(line: &str) -> Option<Killed> {
    let line = body(line);
    let i = line.find(": Killed process ")?;
    parse_killed(&line[..i], &line[i + 17..])
}

fn parse_killed(message: &str, rest: &str) -> Option<Killed> {
    let sp = rest.find(" (")?;
    let pid = rest[..sp].trim().parse().ok()?;
    let after = &rest[sp + 2..];
    let close = after.rfind(") total-vm:").or_else(|| after.rfind(')'))?;
    let tail = &after[close..];
    Some(Killed {
        message: message.trim().to_owned(),
        pid,
        comm: after[..close].to_owned(),
        anon_rss_kb: field(tail, "anon-rss:").and_then(num),
        file_rss_kb: field(tail, "file-rss:").and_then(num),
        shmem_rss_kb: field(tail, "shmem-rss:").and_then(num),
    })
}

/// The model's replay of a report's selection.
#[derive(Debug, Clone, Serialize)]
pub struct Replay {
    pub kernel: KernelVersion,
    pub domain: Domain,
    pub totalpages: u64,
    /// Whether totalpages is exact (false: a swap term the report does not give).
    pub totalpages_exact: bool,
    pub model_pid: Option<i32>,
    pub kernel_pid: Option<i32>,
    pub agree: bool,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ReplayError {
    #[error(
        "the report does not say which kernel printed it (no `CPU: … Comm: … <release> #` line)"
    )]
    NoVersion,
    #[error("the report has no task table (vm.oom_dump_tasks=0, or the lines were cut)")]
    NoTable,
    #[error(
        "the report gives neither a memcg limit nor the global page counts, so totalpages is unknown"
    )]
    NoTotalpages,
}

/// Replays the report's victim selection with the model (4 KiB pages).
pub fn replay(r: &Report) -> Result<Replay, ReplayError> {
    replay_with(r, None).map(|(rp, _)| rp)
}

/// (pid, points) per task; None: ineligible.
pub type TaskPoints = Vec<(i32, Option<i64>)>;

/// The model's points for every row of the report's table, with the
/// kernel's own `totalpages` when it is known (from `oom_kill_process`):
/// (pid, points; None where the model finds the task ineligible).
pub fn model_points(
    r: &Report,
    totalpages: Option<u64>,
) -> Result<Vec<(i32, Option<i64>)>, ReplayError> {
    replay_with(r, totalpages).map(|(_, points)| points)
}

fn replay_with(
    r: &Report,
    kernel_totalpages: Option<u64>,
) -> Result<(Replay, TaskPoints), ReplayError> {
    let ver: KernelVersion = r
        .kernel
        .as_deref()
        .and_then(|k| k.parse().ok())
        .ok_or(ReplayError::NoVersion)?;
    if r.tasks.is_empty() {
        return Err(ReplayError::NoTable);
    }
    let kb = KernelBehavior::for_version(ver);
    let page_kb = 4;
    let (domain, totalpages, exact) = match (r.memcg_limit_kb, r.pages_ram) {
        (Some(limit), _) => {
            // Swap can add to a memcg's totalpages, by an amount the report
            // does not print (total_swap_pages): exact only without it.
            let swap_term = r.swap_limit_kb.is_some_and(|s| s > 0)
                || r.memsw_limit_kb.is_some_and(|m| m > limit);
            (Domain::Memcg, (limit / page_kb).max(1), !swap_term)
        }
        (None, Some(ram)) => {
            let t = ram - r.pages_reserved.unwrap_or(0) + r.total_swap_kb.unwrap_or(0) / page_kb;
            (Domain::Global, t, false)
        }
        (None, None) => match kernel_totalpages {
            Some(t) => (Domain::Global, t, true),
            None => return Err(ReplayError::NoTotalpages),
        },
    };
    let (totalpages, exact) = match kernel_totalpages {
        Some(t) => (t, true),
        None => (totalpages, exact),
    };
    let processes: Vec<Process> = r
        .tasks
        .iter()
        .map(|t| {
            let mut p = Process::simple(
                t.tgid,
                &t.name,
                MmCounters {
                    anon_pages: t.rss_pages,
                    swap_pages: t.swapents,
                    pgtables_bytes: t.pgtables_bytes,
                    ..MmCounters::default()
                },
                t.oom_score_adj,
            );
            p.threads[0].pid = t.pid;
            p
        })
        .collect();
    let sel = select_bad_process(
        &Scan {
            domain,
            processes: &processes,
            totalpages,
            page_size: page_kb * 1024,
            sysrq: false,
        },
        &kb,
    );
    let model_pid = sel.chosen().map(|c| c.pid);
    let kernel_pid = r.killed.first().map(|k| k.pid);
    let points = sel
        .candidates
        .iter()
        .map(|c| (c.pid, c.badness.points))
        .collect();
    let replay = Replay {
        kernel: ver,
        domain,
        totalpages,
        totalpages_exact: exact,
        model_pid,
        kernel_pid,
        agree: model_pid.is_some() && model_pid == kernel_pid,
    };
    Ok((replay, points))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prefixes_are_skipped() {
        assert_eq!(
            body("May 26 06:17:40 mr-fox kernel: memory: usage 1kB"),
            "memory: usage 1kB"
        );
        assert_eq!(
            body("[  246.610518][ T1778] random invoked"),
            "random invoked"
        );
        assert_eq!(
            body("[Fri Sep 25 15:29:47 2020] madvise09 invoked"),
            "madvise09 invoked"
        );
        assert_eq!(
            body("     [41369.848195] [ 128825]  1000"),
            "[ 128825]  1000"
        );
        assert_eq!(
            body("[ 5503.494263] [  31407]     0 31407"),
            "[  31407]     0 31407"
        );
    }

    /// A report from the lab's own 6.18.44 (dmesg, 6.12+ table layout).
    const LAB: &str = "[ 5503.494000] oomwatch-hog invoked oom-killer: gfp_mask=0xcc0(GFP_KERNEL), order=0, oom_score_adj=0
[ 5503.494010] CPU: 1 UID: 0 PID: 31409 Comm: oomwatch-hog Not tainted 6.18.44-fc-v782 #1 PREEMPT(voluntary)
[ 5503.494100] memory: usage 65536kB, limit 65536kB, failcnt 0
[ 5503.494101] memory+swap: usage 65536kB, limit 65536kB, failcnt 0
[ 5503.494259] Tasks state (memory values in pages):
[ 5503.494260] [  pid  ]   uid  tgid total_vm      rss rss_anon rss_file rss_shmem pgtables_bytes swapents oom_score_adj name
[ 5503.494263] [  31407]     0 31407     5892     5578     5120      458         0    94208        0             0 oomwatch-hog
[ 5503.494268] [  31408]     0 31408     7428     7140     6688      452         0   106496        0             0 oomwatch-hog
[ 5503.494270] [  31409]     0 31409     4100     3500     3100      400         0    80000        0             0 CPU 11/KVM
[ 5503.494275] oom-kill:constraint=CONSTRAINT_MEMCG,nodemask=(null),cpuset=/,mems_allowed=0,2,oom_memcg=/oomwatch-test-1,task_memcg=/oomwatch-test-1,task=oomwatch-hog,pid=31408,uid=0
[ 5503.494300] Memory cgroup out of memory: Killed process 31408 (oomwatch-hog) total-vm:29712kB, anon-rss:26752kB, file-rss:1808kB, shmem-rss:0kB, UID:0 pgtables:104kB oom_score_adj:0
";

    #[test]
    fn parses_the_lab_format() {
        let r = parse(LAB).unwrap();
        assert_eq!(r.comm.as_deref(), Some("oomwatch-hog"));
        assert_eq!(
            (r.gfp_mask, r.order, r.oom_score_adj),
            (Some(0xcc0), Some(0), Some(0))
        );
        assert_eq!(r.kernel.as_deref(), Some("6.18.44-fc-v782"));
        assert_eq!(r.memcg_limit_kb, Some(65_536));
        assert_eq!(r.tasks.len(), 3);
        assert_eq!(r.tasks[1].rss_anon_pages, Some(6_688));
        assert_eq!(r.tasks[2].name, "CPU 11/KVM");
        let kv: std::collections::HashMap<_, _> = r.oom_kill.iter().cloned().collect();
        assert_eq!(kv["mems_allowed"], "0,2");
        assert_eq!(kv["oom_memcg"], "/oomwatch-test-1");
        assert_eq!(kv["pid"], "31408");
        assert_eq!(r.killed[0].pid, 31_408);
        assert_eq!(r.killed[0].anon_rss_kb, Some(26_752));
        let rp = replay(&r).unwrap();
        assert!(rp.totalpages_exact);
        assert_eq!(rp.totalpages, 16_384);
        assert!(rp.agree, "{rp:?}");
    }

    #[test]
    fn kmsg_records() {
        let raw = "6,1234,5503494000,-;oomwatch-hog invoked oom-killer: gfp_mask=0xcc0(GFP_KERNEL), order=0, oom_score_adj=0\n SUBSYSTEM=x\n4,1235,5503494300,-;Memory cgroup out of memory: Killed process 31408 (oomwatch-hog) total-vm:29712kB, anon-rss:26752kB, file-rss:1808kB, shmem-rss:0kB, UID:0 pgtables:104kB oom_score_adj:0\n";
        let r = parse(&kmsg_messages(raw)).unwrap();
        assert_eq!(r.killed[0].pid, 31_408);
    }

    #[test]
    fn no_header_no_report() {
        assert_eq!(parse("nothing here\n"), None);
        let r =
            parse("x invoked oom-killer: gfp_mask=0xcc0(GFP_KERNEL), order=0, oom_score_adj=0\n")
                .unwrap();
        assert_eq!(replay(&r).unwrap_err(), ReplayError::NoVersion);
    }
}
