//! `oomwatch replay`: every OOM report in a log, re-run with the model of
//! its kernel version and judged: who the kernel should have chosen under its
//! own rules, whether it did, and why (kernel-oom.md §9.5).
//!
//! The model's rules come from the release the report states (Debian's
//! package version when the kernel line gives one), else from the report's
//! format. totalpages is rebuilt from what the report prints, and every
//! assumption is named in the result; where the report cannot decide
//! (swap the memcg report does not print, the ≤ 4.16 root bonus, ties in a
//! table printed in another order than the scan), the disagreement says so
//! instead of blaming the kernel.

use serde::Serialize;

use crate::{
    model::explain::{CandidateJson, candidates},
    model::{
        KernelBehavior, KernelVersion, MmCounters, Process,
        badness::oom_badness_normalized,
        behavior::TieBreak,
        select::{Domain, Scan, Selection, select_bad_process},
        version::v,
    },
    replay::parse::{Report, TaskRow, parse_all, stated_version},
};

/// A task named by pid and comm.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct TaskRef {
    pub pid: i32,
    pub comm: String,
}

/// The model's victim.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct PredictedVictim {
    pub pid: i32,
    pub tgid: i32,
    pub comm: String,
    pub points: i64,
}

/// The task the kernel's scan chose, where the report names it apart from
/// the kill (the `score … or sacrifice child` line ≤ 5.0, `oom-kill:` 5.0+).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct KernelSelected {
    pub pid: i32,
    pub comm: String,
    /// The printed score (`chosen_points * 1000 / totalpages`).
    pub score: Option<u64>,
    /// Which line named it.
    pub from: &'static str,
}

/// The allocation that ran out of memory.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Trigger {
    pub comm: Option<String>,
    pub pid: Option<i32>,
    pub gfp_mask: Option<String>,
    pub gfp_flags: Option<String>,
    pub order: Option<i32>,
    pub oom_score_adj: Option<i16>,
    pub in_page_fault: bool,
    /// The mask in flag names by the model's table for the rules' version,
    /// when the header prints none (before 4.9); older layouts name only
    /// the flags that gate the OOM path, the rest stays hex.
    pub gfp_decoded: Option<String>,
}

/// `memory.oom.group`: the tasks killed with the victim.
#[derive(Debug, Clone, Serialize)]
pub struct OomGroup {
    pub cgroup: Option<String>,
    pub killed: Vec<TaskRef>,
}

/// Why the model and the kernel differ.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Disagreement {
    /// Equal points: the table's order is not the order the kernel scanned.
    TieOrder,
    /// The kernel's pick wins for another totalpages the report allows.
    Totalpages,
    /// The kernel's pick wins if other uid-0 tasks held CAP_SYS_ADMIN (≤ 4.16).
    AdminBonus,
    /// Within the drift of the counters between the choice and the table.
    CounterDrift,
    /// None of the above: the kernel chose against its own version's rules.
    Contradiction,
}

/// One replayed report: the `oomwatch replay --json` contract. The first
/// nine fields are fixed; fields may be added, never renamed or removed.
#[derive(Debug, Clone, Serialize)]
pub struct ReplayReport {
    /// The release as the report prints it; null when it does not.
    pub kernel: Option<String>,
    pub arch: Option<String>,
    pub constraint: Option<String>,
    /// The totalpages the model scored with; null when unknown.
    pub totalpages: Option<u64>,
    /// The first `Killed process` line; null when the report has none.
    pub kernel_victim: Option<TaskRef>,
    pub predicted_victim: Option<PredictedVictim>,
    /// null: the report cannot be judged (see `reason`).
    pub agrees: Option<bool>,
    pub reason: String,
    /// The table's tasks ranked by the model (eligible first, by points).
    pub candidates: Vec<CandidateJson>,
    /// First and last input line of the report.
    pub lines: [usize; 2],
    /// The version whose rules were applied, and where it came from.
    pub rules: Option<String>,
    pub rules_from: Option<String>,
    pub domain: Option<Domain>,
    pub oom_memcg: Option<String>,
    pub trigger: Trigger,
    pub totalpages_exact: bool,
    pub totalpages_from: Option<String>,
    pub page_size: u64,
    pub kernel_selected: Option<KernelSelected>,
    pub disagreement: Option<Disagreement>,
    pub oom_group: Option<OomGroup>,
    pub tasks: Vec<TaskRow>,
    /// What the replay had to assume or skip.
    pub notes: Vec<String>,
}

/// The rules for a report that does not state its kernel, from its format
/// (kernel-oom.md §9.1 – §9.4): the version, and what showed it.
fn infer_rules(r: &Report) -> Option<(KernelVersion, String)> {
    let has = |c: &str| r.columns.iter().any(|x| x == c);
    let (ver, why) = if r.columns.is_empty() {
        return None;
    } else if has("cpu") && has("oom_score_adj") {
        (
            v(2, 6, 36),
            "a `cpu oom_adj oom_score_adj` table (2.6.36 – 3.1)",
        )
    } else if has("cpu") {
        (v(2, 6, 32), "a `cpu oom_adj` table (before 2.6.36)")
    } else if has("nr_pmds") {
        if r.gfp_flags.is_some() {
            (
                v(4, 9, 0),
                "an `nr_ptes nr_pmds` table and flag names in gfp_mask (4.9 – 4.14)",
            )
        } else {
            (
                v(4, 4, 0),
                "an `nr_ptes nr_pmds` table without flag names in gfp_mask (4.0 – 4.8)",
            )
        }
    } else if has("nr_ptes") {
        (
            v(3, 10, 0),
            "an `nr_ptes` table without nr_pmds (3.2 – 3.19)",
        )
    } else if has("rss_anon") {
        (
            v(6, 12, 0),
            "the rss_anon/rss_file/rss_shmem columns (6.12+)",
        )
    } else if !r.tasks_state_line {
        (
            v(4, 15, 0),
            "a pgtables_bytes table without `Tasks state` (4.15 – 4.18)",
        )
    } else if r.oom_kill.is_empty() {
        (
            v(4, 19, 0),
            "`Tasks state` without an `oom-kill:` line (4.19)",
        )
    } else if r.selected.is_some() {
        (
            v(5, 0, 0),
            "an `oom-kill:` line and a `sacrifice child` line (5.0)",
        )
    } else {
        (
            v(5, 4, 0),
            "an `oom-kill:` line without a score line (5.1+; 5.4 rules)",
        )
    };
    Some((ver, format!("inferred from the report's format: {why}")))
}

/// What the replay knows of totalpages.
struct Total {
    value: u64,
    exact: bool,
    from: String,
    /// The range the report allows, for checks of a disagreement.
    lo: u64,
    hi: u64,
    /// false: the report gives nothing; `value` is a stand-in.
    known: bool,
}

/// No machine has this many pages; larger numbers in a report are noise.
const MAX_PAGES: u64 = 1 << 50;

fn totalpages(r: &Report, page_kb: u64, memcg: bool) -> Total {
    let mut t = totalpages_unclamped(r, page_kb, memcg);
    t.value = t.value.min(MAX_PAGES);
    t.lo = t.lo.min(MAX_PAGES);
    t.hi = t.hi.min(MAX_PAGES);
    t
}

fn totalpages_unclamped(r: &Report, page_kb: u64, memcg: bool) -> Total {
    if let (true, Some(limit)) = (memcg, r.memcg_limit_kb) {
        let l = (limit / page_kb).max(1);
        // A limit this large means "unlimited" (PAGE_COUNTER_MAX).
        let unlimited = |kb: u64| kb >= (1u64 << 50);
        let (extra, what) = match (r.swap_limit_kb, r.memsw_limit_kb) {
            (Some(0), _) => (Some(0), "swap.max 0"),
            (Some(s), _) if !unlimited(s) => (
                Some(s / page_kb),
                "+ up to swap.max; total_swap_pages is not printed",
            ),
            (Some(_), _) => (None, "+ the host's swap, which the report does not print"),
            (None, Some(m)) if m <= limit => (Some(0), "memory+swap limit = memory limit"),
            (None, Some(m)) if !unlimited(m) => (
                Some((m - limit) / page_kb),
                "+ up to the memory+swap headroom; total_swap_pages is not printed",
            ),
            (None, Some(_)) => (
                None,
                "+ the host's swap if swappiness > 0, which the report does not print",
            ),
            (None, None) => (Some(0), "no swap line"),
        };
        let exact = extra == Some(0);
        return Total {
            value: l,
            exact,
            from: if exact {
                format!("memcg limit {limit} kB / {page_kb} kB ({what})")
            } else {
                format!("memcg limit {limit} kB / {page_kb} kB, {what}: the swap term is left out")
            },
            lo: l,
            hi: match extra {
                Some(e) => l.saturating_add(e),
                None => l.saturating_mul(16),
            },
            known: true,
        };
    }
    if let Some(ram) = r.pages_ram {
        let reserved = r.pages_reserved.unwrap_or(0);
        let swap = r.total_swap_kb.unwrap_or(0) / page_kb;
        let t = ram.saturating_sub(reserved).saturating_add(swap).max(1);
        return Total {
            value: t,
            exact: false,
            from: format!(
                "pages RAM {ram} − pages reserved {reserved} + Total swap {swap} pages (≈ totalram_pages + total_swap_pages)"
            ),
            lo: t / 2,
            hi: t.saturating_mul(2),
            known: true,
        };
    }
    Total {
        value: 1_000_000,
        exact: false,
        from: "not in the report (no memcg limit, no page counts)".into(),
        lo: 1_000,
        hi: 1 << 40,
        known: false,
    }
}

/// The page size: 4 KiB unless the kill line's rss (kB) over the victim's
/// row (pages) says otherwise.
fn page_kb(r: &Report) -> (u64, Option<String>) {
    let k = r.killed.first();
    let row = k.and_then(|k| r.tasks.iter().find(|t| t.pid == k.pid));
    if let (Some(k), Some(row)) = (k, row)
        && let Some(kb) = k.rss_kb()
        && row.rss_pages > 0
    {
        for size in [4u64, 16, 64] {
            let want = row.rss_pages.saturating_mul(size);
            if kb.abs_diff(want).saturating_mul(50) <= want {
                return (
                    size,
                    (size != 4).then(|| {
                        format!(
                            "{size} KiB pages: the victim's kill line shows {kb} kB for {} pages",
                            row.rss_pages
                        )
                    }),
                );
            }
        }
    }
    (4, None)
}

/// The row the kernel's choice (pid, comm, rss in kB) stands for: the same
/// pid, the same tgid, else the one whose rss equals the kill line's (a
/// thread of a process listed under its leader: same mm), else a unique comm.
fn find_row(
    rows: &[TaskRow],
    pid: i32,
    comm: &str,
    rss_kb: Option<u64>,
    page_kb: u64,
) -> Option<(usize, &'static str)> {
    if let Some(i) = rows.iter().position(|t| t.pid == pid) {
        return Some((i, "pid"));
    }
    if let Some(i) = rows.iter().position(|t| t.tgid == pid) {
        return Some((i, "tgid"));
    }
    if let Some(kb) = rss_kb {
        let same: Vec<usize> = (0..rows.len())
            .filter(|&i| rows[i].rss_pages.saturating_mul(page_kb) == kb)
            .collect();
        if same.len() == 1 {
            return Some((same[0], "mm"));
        }
    }
    let named: Vec<usize> = (0..rows.len()).filter(|&i| rows[i].name == comm).collect();
    (named.len() == 1).then(|| (named[0], "comm"))
}

fn scan(
    procs: &[Process],
    domain: Domain,
    totalpages: u64,
    page_kb: u64,
    kb: &KernelBehavior,
) -> Selection {
    let procs: Vec<&Process> = procs.iter().collect();
    select_bad_process(
        &Scan {
            domain,
            processes: &procs,
            totalpages,
            page_size: page_kb * 1024,
            sysrq: false,
        },
        kb,
    )
}

/// The table's rows as the model's processes; before 4.17 uid 0 is taken
/// for CAP_SYS_ADMIN (the table shows no capabilities).
fn table_processes(tasks: &[TaskRow], kb: &KernelBehavior) -> Vec<Process> {
    let mut procs = processes(tasks);
    if kb.admin_bonus {
        for (p, t) in procs.iter_mut().zip(tasks) {
            p.cap_sys_admin = t.uid == 0;
        }
    }
    procs
}

/// The model's scan of the table at `totalpages`: the selection (None for
/// the legacy rules, which score without it), the chosen row, and the
/// candidates.
fn scan_table(
    procs: &[Process],
    domain: Domain,
    totalpages: u64,
    page_kb: u64,
    kb: &KernelBehavior,
    legacy: bool,
) -> (Option<Selection>, Option<usize>, Vec<CandidateJson>) {
    if legacy {
        let best = legacy_select(procs, totalpages, page_kb);
        (None, best, legacy_candidates(procs, totalpages, page_kb))
    } else {
        let sel = scan(procs, domain, totalpages, page_kb, kb);
        let row = chosen_row(&sel);
        let cands = candidates(&sel, None);
        (Some(sel), row, cands)
    }
}

/// Row index of the model's choice.
fn chosen_row(sel: &Selection) -> Option<usize> {
    sel.chosen().map(|c| c.position)
}

/// What the replay is told besides the report.
#[derive(Debug, Clone, Copy, Default)]
pub struct Given {
    /// totalpages, known from elsewhere: the kernel's own (`struct
    /// oom_control`, read by the daemon's hooks) or the user's.
    pub totalpages: Option<u64>,
    /// The kernel the report came from, for reports that do not say.
    pub kernel: Option<KernelVersion>,
}

/// Replays one report.
pub fn analyze(r: &Report) -> ReplayReport {
    analyze_given(r, Given::default())
}

/// Replays one report with what is known besides it.
pub fn analyze_given(r: &Report, given: Given) -> ReplayReport {
    let memcg = r.is_memcg();
    let mut out = ReplayReport {
        kernel: r.kernel.clone(),
        arch: r.arch.clone(),
        constraint: r
            .oom_kill_field("constraint")
            .map(str::to_owned)
            .or_else(|| memcg.then(|| "CONSTRAINT_MEMCG".to_owned())),
        totalpages: None,
        kernel_victim: r.killed.first().map(|k| TaskRef {
            pid: k.pid,
            comm: k.comm.clone(),
        }),
        predicted_victim: None,
        agrees: None,
        reason: String::new(),
        candidates: Vec::new(),
        lines: [r.first_line, r.last_line],
        rules: None,
        rules_from: None,
        domain: r
            .has_header
            .then_some(if memcg { Domain::Memcg } else { Domain::Global }),
        oom_memcg: r
            .oom_kill_field("oom_memcg")
            .map(str::to_owned)
            .or_else(|| r.task_in.as_ref().map(|(_, b)| b.clone())),
        trigger: Trigger {
            comm: r.comm.clone(),
            pid: r.pid,
            gfp_mask: r.gfp_mask.map(|m| format!("{m:#x}")),
            gfp_flags: r.gfp_flags.clone(),
            order: r.order,
            oom_score_adj: r.oom_score_adj,
            in_page_fault: r.in_page_fault,
            gfp_decoded: None,
        },
        totalpages_exact: false,
        totalpages_from: None,
        page_size: 4096,
        kernel_selected: None,
        disagreement: None,
        oom_group: (r.oom_group.is_some() || r.killed.len() > 1).then(|| OomGroup {
            cgroup: r.oom_group.clone(),
            killed: r
                .killed
                .iter()
                .skip(1)
                .map(|k| TaskRef {
                    pid: k.pid,
                    comm: k.comm.clone(),
                })
                .collect(),
        }),
        tasks: r.tasks.clone(),
        notes: Vec::new(),
    };
    if !r.foreign_lines.is_empty() {
        out.notes.push(format!(
            "{} line(s) inside the task table are not rows (other output interleaved) and were skipped: line {}",
            r.foreign_lines.len(),
            join_nums(&r.foreign_lines)
        ));
    }
    if !r.elided_lines.is_empty() {
        out.notes.push(format!(
            "parts were cut from this copy (`...` at line {})",
            join_nums(&r.elided_lines)
        ));
    }
    if let Some(e) = judge(r, memcg, given, &mut out) {
        out.reason = e;
    }
    out
}

fn join_nums(v: &[usize]) -> String {
    v.iter()
        .map(usize::to_string)
        .collect::<Vec<_>>()
        .join(", ")
}

/// Fills the prediction and verdict; returns the reason.
fn judge(r: &Report, memcg: bool, given: Given, out: &mut ReplayReport) -> Option<String> {
    if let Some(refusal) = refuse_without_header(r) {
        return Some(refusal);
    }
    let ver = match kernel_rules(r, given, out) {
        Ok(ver) => ver,
        Err(refusal) => return Some(refusal),
    };
    decode_gfp(r, ver, out);
    if let Some(refusal) = refuse_unscorable(r, ver) {
        return Some(refusal);
    }
    let page_kb = page_size(r, out);
    let total = given_or_rebuilt_totalpages(r, given, page_kb, memcg);
    let md = model(r, ver, memcg, page_kb, out);
    let choice = kernel_choice(r, page_kb, out);
    let total = settle_totalpages(r, &md, &choice, total, out);
    let (sel, model_row) = run_scan(&md, &total, out);
    predict_victim(r, &md, &total, &choice, model_row, out);
    Some(verdict(r, &md, &total, &choice, sel, model_row, out))
}

/// The refusal of a report without its header (a kill line alone, or less).
fn refuse_without_header(r: &Report) -> Option<String> {
    if !r.has_header {
        return Some(match r.killed.first() {
            Some(k) => format!(
                "only the kill line of {} ({}) is here: the kernel rate-limits its OOM report (10 per 5 s) but never the kill line, or the rest was not copied; nothing to replay",
                k.comm, k.pid
            ),
            None => {
                "a `Kill process` line without the rest of its report: nothing to replay".into()
            }
        });
    }
    None
}

/// The rules' version (stated, Debian's, --kernel, inferred; RHEL 6) into `out`; Err: refusal.
fn kernel_rules(r: &Report, given: Given, out: &mut ReplayReport) -> Result<KernelVersion, String> {
    let (ver, from) = match (stated_version(r), given.kernel) {
        (None, Some(ver)) => (ver, "given with --kernel".to_owned()),
        (Some(ver), _) => {
            // stated_version differs from the release only where Debian's
            // package version was taken.
            let release = r
                .kernel
                .as_deref()
                .and_then(|k| k.parse::<KernelVersion>().ok());
            let from = if release == Some(ver) {
                "stated on the kernel line".to_owned()
            } else {
                format!(
                    "Debian's package version on the kernel line ({} is {ver})",
                    r.kernel.as_deref().unwrap_or("?")
                )
            };
            (ver, from)
        }
        (None, None) => match infer_rules(r) {
            Some(x) => x,
            None => {
                return Err(
                    "the report states no kernel version and its format does not show one (no kernel line, no task table)"
                        .into(),
                );
            }
        },
    };
    // Vendor kernels that say 2.6.32 but carry the 2.6.36 rewrite (RHEL 6):
    // their tables print oom_score_adj, which only the rewrite has.
    let (ver, from) = if ver < v(2, 6, 36) && r.columns.iter().any(|c| c == "oom_score_adj") {
        (
            v(2, 6, 36),
            format!(
                "{from}, but its table's oom_score_adj column belongs to the 2.6.36 OOM rewrite (a vendor backport, as in RHEL 6): 2.6.36 rules"
            ),
        )
    } else {
        (ver, from)
    };
    out.rules = Some(ver.to_string());
    out.rules_from = Some(from);
    Ok(ver)
}

/// The trigger's gfp mask in flag names by the rules' table, when the header prints none.
fn decode_gfp(r: &Report, ver: KernelVersion, out: &mut ReplayReport) {
    if let (None, Some(mask)) = (&r.gfp_flags, r.gfp_mask) {
        let table = crate::model::gfp::GfpTable::builtin(&KernelBehavior::for_version(ver));
        out.trigger.gfp_decoded = Some(table.format(mask));
    }
}

/// The refusals once the rules are known: no task table, or a kernel before 2.6.36.
fn refuse_unscorable(r: &Report, ver: KernelVersion) -> Option<String> {
    if r.tasks.is_empty() {
        return Some(if r.elided_lines.is_empty() {
            "the report has no task table (vm.oom_dump_tasks=0, or the lines were cut): the candidates are unknown".into()
        } else {
            "the task table was cut from this copy: the candidates are unknown".into()
        });
    }
    if ver < v(2, 6, 36) {
        return Some(format!(
            "Linux {ver} chose by the pre-2.6.36 badness(): total_vm plus half of each child's, divided by the roots of CPU and run time, scaled by nice and capabilities; the report prints neither CPU times nor children, so the choice cannot be recomputed"
        ));
    }
    None
}

/// The page size in kB, into `out` (with a note when it is not 4 KiB).
fn page_size(r: &Report, out: &mut ReplayReport) -> u64 {
    let (page_kb, page_note) = page_kb(r);
    out.page_size = page_kb * 1024;
    out.notes.extend(page_note);
    page_kb
}

/// totalpages as given (the kernel's own, or --totalpages), else rebuilt from the report.
fn given_or_rebuilt_totalpages(r: &Report, given: Given, page_kb: u64, memcg: bool) -> Total {
    match given.totalpages {
        Some(t) => Total {
            value: t.clamp(1, MAX_PAGES),
            exact: true,
            from: "given: the kernel's own (struct oom_control), or --totalpages".into(),
            lo: t,
            hi: t,
            known: true,
        },
        None => totalpages(r, page_kb, memcg),
    }
}

/// The rules and the table's processes the model scans with.
struct Model {
    ver: KernelVersion,
    memcg: bool,
    kb: KernelBehavior,
    domain: Domain,
    page_kb: u64,
    procs: Vec<Process>,
    /// ≤ 4.16: uid 0 was taken for CAP_SYS_ADMIN.
    admin_guess: bool,
    /// 2.6.36 – 3.7: normalized points, no selection.
    legacy: bool,
}

/// The model for the rules, noting what it assumes (root bonus, missing swap columns).
fn model(
    r: &Report,
    ver: KernelVersion,
    memcg: bool,
    page_kb: u64,
    out: &mut ReplayReport,
) -> Model {
    let kb = KernelBehavior::for_version(ver);
    let domain = if memcg { Domain::Memcg } else { Domain::Global };
    let procs = table_processes(&r.tasks, &kb);
    // ≤ 4.16: uid 0 is taken for CAP_SYS_ADMIN (the table shows no capabilities).
    let admin_guess = kb.admin_bonus && r.tasks.iter().any(|t| t.uid == 0);
    if admin_guess {
        out.notes.push(
            "Linux ≤ 4.16 gives CAP_SYS_ADMIN tasks a 3% discount; the table shows no capabilities, so uid 0 was taken to hold it".into(),
        );
    }
    let legacy = ver < v(3, 8, 0);
    if legacy && r.columns.iter().all(|c| c != "swapents") {
        out.notes.push(
            "the table has no swapents or nr_ptes columns (2.6.36 – 3.1): points from rss alone, so they can be a little low".into(),
        );
    }
    Model {
        ver,
        memcg,
        kb,
        domain,
        page_kb,
        procs,
        admin_guess,
        legacy,
    }
}

/// The kernel's own choice as the report names it, and its row in the table.
struct KernelChoice {
    selected: Option<KernelSelected>,
    row: Option<(usize, &'static str)>,
}

/// The kernel's own choice (score, oom-kill, exiting or kill line) and its row; fills `out`.
fn kernel_choice(r: &Report, page_kb: u64, out: &mut ReplayReport) -> KernelChoice {
    // The kernel's own choice, before any child was sacrificed.
    let selected = if let Some(s) = &r.selected {
        Some(KernelSelected {
            pid: s.pid,
            comm: s.comm.clone(),
            score: s.score,
            from: "score line",
        })
    } else if let (Some(pid), Some(comm)) = (
        r.oom_kill_field("pid").and_then(|p| p.parse().ok()),
        r.oom_kill_field("task"),
    ) {
        Some(KernelSelected {
            pid,
            comm: comm.to_owned(),
            score: None,
            from: "oom-kill line",
        })
    } else if let Some((pid, comm)) = &r.already_exiting {
        Some(KernelSelected {
            pid: *pid,
            comm: comm.clone(),
            score: None,
            from: "already-exiting line",
        })
    } else {
        r.killed.first().map(|k| KernelSelected {
            pid: k.pid,
            comm: k.comm.clone(),
            score: None,
            from: "kill line",
        })
    };
    let kill_rss = |pid: i32| {
        r.killed
            .iter()
            .find(|k| k.pid == pid)
            .or(r.killed.first())
            .and_then(|k| k.rss_kb())
    };
    let kernel_row = selected
        .as_ref()
        .and_then(|s| find_row(&r.tasks, s.pid, &s.comm, kill_rss(s.pid), page_kb));
    out.kernel_selected = selected
        .clone()
        .filter(|s| r.killed.first().is_none_or(|k| k.pid != s.pid) || s.score.is_some());
    KernelChoice {
        selected,
        row: kernel_row,
    }
}

/// totalpages, solved from the score line unless exact, into `out` (noted when unknown).
fn settle_totalpages(
    r: &Report,
    md: &Model,
    choice: &KernelChoice,
    mut total: Total,
    out: &mut ReplayReport,
) -> Total {
    // ≤ 5.0 prints the score: it pins totalpages down.
    if let (Some(s), Some((row, _)), false) = (&choice.selected, choice.row, md.legacy)
        && let Some(score) = s.score
        && !total.exact
        && let Some(t) = solve_totalpages(
            &md.procs[row],
            score,
            &md.kb,
            md.page_kb,
            total.lo,
            total.hi,
        )
    {
        total.value = t;
        total.from = format!(
            "{}; solved from the score line ({score} = points × 1000 / totalpages)",
            total.from
        );
    }
    out.totalpages = total.known.then_some(total.value);
    out.totalpages_exact = total.exact;
    out.totalpages_from = Some(total.from.clone());
    let adj_matters = r.tasks.iter().any(|t| t.adj() != 0 && t.adj() != -1000);
    if !total.known && adj_matters {
        out.notes.push("totalpages is unknown and weighs every oom_score_adj: the ranking assumes 1 000 000 pages".into());
    }
    total
}

/// The scan at `total`, its candidates into `out`: the selection (None: legacy), the chosen row.
fn run_scan(
    md: &Model,
    total: &Total,
    out: &mut ReplayReport,
) -> (Option<Selection>, Option<usize>) {
    // The scan.
    let (sel, model_row, cands) = scan_table(
        &md.procs,
        md.domain,
        total.value,
        md.page_kb,
        &md.kb,
        md.legacy,
    );
    out.candidates = cands;
    (sel, model_row)
}

/// The model's victim into `out`, with a note when the score line disagrees with its points.
fn predict_victim(
    r: &Report,
    md: &Model,
    total: &Total,
    choice: &KernelChoice,
    model_row: Option<usize>,
    out: &mut ReplayReport,
) {
    let points_of = |row: usize| -> Option<i64> { out_points(&out.candidates, &r.tasks[row]) };
    out.predicted_victim = model_row.map(|i| PredictedVictim {
        pid: r.tasks[i].pid,
        tgid: r.tasks[i].tgid,
        comm: r.tasks[i].name.clone(),
        points: points_of(i).unwrap_or(0),
    });
    // The printed score against the model's points for the same task.
    if let (Some(s), Some((row, _))) = (&choice.selected, choice.row)
        && let (Some(score), Some(p)) = (s.score, points_of(row))
    {
        let model = if md.legacy {
            p
        } else {
            p.max(0).saturating_mul(1000) / total.value.max(1) as i64
        };
        if u64::try_from(model).ok() != Some(score) {
            out.notes.push(format!(
                "the score line says {score}; the model's points for {} ({}) give {model}{}",
                s.comm,
                s.pid,
                if total.exact {
                    ""
                } else {
                    " at the rebuilt totalpages"
                }
            ));
        }
    }
}

/// The verdict on the kernel's choice against the model's, into `out`; returns the reason.
fn verdict(
    r: &Report,
    md: &Model,
    total: &Total,
    choice: &KernelChoice,
    sel: Option<Selection>,
    model_row: Option<usize>,
    out: &mut ReplayReport,
) -> String {
    let rules = rules_line(&md.kb, md.domain, md.legacy);

    // Kernels that found nobody.
    if r.no_killable || (choice.selected.is_none() && r.killed.is_empty()) {
        return verdict_without_kill(r, &rules, model_row, out);
    }
    let sel_ref = choice.selected.as_ref().expect("a kill or a selection");
    let Some((krow, how)) = choice.row else {
        return format!(
            "the kernel chose {} ({}), which is not in the task table{}: nothing to compare",
            sel_ref.comm,
            sel_ref.pid,
            if r.table_elided {
                " (rows were cut from this copy)"
            } else {
                ""
            }
        );
    };
    let why = kernel_choice_notes(r, sel_ref, krow, how, out.oom_group.as_ref());
    let Some(mrow) = model_row else {
        out.agrees = Some(false);
        out.disagreement = Some(Disagreement::Contradiction);
        return join(
            format!(
                "the kernel's choice contradicts its own rules: it chose {} ({}), but under {rules} no task in the table is eligible",
                r.tasks[krow].name, r.tasks[krow].pid
            ),
            why,
        );
    };
    let points_of = |row: usize| -> Option<i64> { out_points(&out.candidates, &r.tasks[row]) };
    let kp = points_of(krow);
    let mp = points_of(mrow).unwrap_or(0);
    let margin = sel.as_ref().and_then(Selection::margin);
    if mrow == krow {
        out.agrees = Some(true);
        return join(agreement(r, md, krow, mp, margin, &rules), why);
    }
    out.agrees = Some(false);
    let picks = Picks {
        krow,
        mrow,
        kp,
        mp,
        kname: format!("{} ({})", r.tasks[krow].name, r.tasks[krow].pid),
        mname: format!("{} ({})", r.tasks[mrow].name, r.tasks[mrow].pid),
        kp_s: kp.map_or("no points (ineligible)".to_owned(), |p| {
            format!("{p} points")
        }),
    };
    join(disagreement(r, md, total, picks, &rules, out), why)
}

/// The reason's head when the kernel chose as the model does: the points and the lead.
fn agreement(
    r: &Report,
    md: &Model,
    krow: usize,
    mp: i64,
    margin: Option<i64>,
    rules: &str,
) -> String {
    let lead = match margin {
        Some(0) => format!(
            "tied at {mp} points with another task; {} the tie goes its way",
            tie_words(&md.kb, md.domain, md.legacy)
        ),
        Some(m) => format!("{m} points ahead of the next"),
        None => "the only eligible task".into(),
    };
    format!(
        "the kernel chose {} ({}) as the model does under {rules}: {mp} points, {lead}",
        r.tasks[krow].name, r.tasks[krow].pid
    )
}

/// The reason's head when the kernel chose otherwise, and its kind into `out.disagreement`.
fn disagreement(
    r: &Report,
    md: &Model,
    total: &Total,
    picks: Picks,
    rules: &str,
    out: &mut ReplayReport,
) -> String {
    // Explanations the report allows, most specific first.
    let (kind, explain) = explain_disagreement(r, md, total, &picks);
    out.disagreement = Some(kind);
    let Picks {
        mp,
        kname,
        mname,
        kp_s,
        ..
    } = picks;
    if kind == Disagreement::Contradiction {
        explain
    } else {
        format!(
            "the model picks {mname} with {mp} points under {rules}, the kernel chose {kname} with {kp_s}: {explain}"
        )
    }
}

/// The verdict when the kernel killed nobody, or the report has no kill line.
fn verdict_without_kill(
    r: &Report,
    rules: &str,
    model_row: Option<usize>,
    out: &mut ReplayReport,
) -> String {
    let points_of = |row: usize| -> Option<i64> { out_points(&out.candidates, &r.tasks[row]) };
    match (r.no_killable, model_row) {
        (true, None) => {
            out.agrees = Some(true);
            format!("the kernel found no killable task, and under {rules} neither does the model")
        }
        (true, Some(i)) => {
            out.agrees = Some(false);
            out.disagreement = Some(Disagreement::Contradiction);
            format!(
                "the kernel found no killable task, but under {rules} {} ({}) is eligible with {} points",
                r.tasks[i].name, r.tasks[i].pid, points_of(i).unwrap_or(0)
            )
        }
        (false, _) => "the report has no kill line (cut before it, or the kernel chose a task already exiting without saying so): nothing to compare".into(),
    }
}

/// What the reason adds: the thread named, a child sacrificed, the oom group, a task exiting.
fn kernel_choice_notes(
    r: &Report,
    sel_ref: &KernelSelected,
    krow: usize,
    how: &str,
    oom_group: Option<&OomGroup>,
) -> Vec<String> {
    let mut why = Vec::new();
    let row = &r.tasks[krow];
    let kill_pid = r.killed.first().map(|k| k.pid);
    if how == "mm" {
        why.push(format!(
            "the kernel named thread {} ({}); its process is listed as {} ({}): the same mm, {} pages",
            sel_ref.pid, sel_ref.comm, row.name, row.pid, row.rss_pages
        ));
    } else if row.pid != row.tgid && (kill_pid == Some(row.pid) || sel_ref.pid == row.pid) {
        why.push(format!(
            "the kernel named thread {} of process {}: the thread it found the mm in (the leader has exited, or holds no mm), as the table lists it",
            row.pid, row.tgid
        ));
    } else if how == "tgid" {
        why.push(format!(
            "the {} names process {} ({}), which the table lists under its thread {}",
            sel_ref.from, sel_ref.pid, row.name, row.pid
        ));
    }
    // A child sacrificed (≤ 5.0): the kill line names another task.
    if let Some(k) = r.killed.first()
        && sel_ref.from == "score line"
        && k.pid != sel_ref.pid
        && r.tasks.get(krow).is_none_or(|t| t.tgid != k.pid)
    {
        why.push(format!(
            "then, as Linux ≤ 5.0 does, it killed a child of {} ({}), {} ({}), instead (\"sacrifice child\": a child with its own mm and a non-zero score goes first; the table does not show parentage, so the model names the parent)",
            sel_ref.comm, sel_ref.pid, k.comm, k.pid
        ));
    }
    if let Some(g) = oom_group
        && !g.killed.is_empty()
    {
        why.push(format!(
            "memory.oom.group{}: {} more task(s) killed with it ({})",
            g.cgroup
                .as_ref()
                .map_or(String::new(), |c| format!(" of {c}")),
            g.killed.len(),
            g.killed
                .iter()
                .map(|t| format!("{} {}", t.comm, t.pid))
                .collect::<Vec<_>>()
                .join(", ")
        ));
    }
    if let Some((pid, _)) = &r.already_exiting {
        why.push(format!(
            "the kernel found {pid} already exiting and skipped the kill"
        ));
    }
    why
}

/// The kernel's row and the model's where they differ, their points, and their names in the reason.
struct Picks {
    krow: usize,
    mrow: usize,
    kp: Option<i64>,
    mp: i64,
    kname: String,
    mname: String,
    kp_s: String,
}

/// Why the picks differ: tie order, totalpages, root bonus, counter drift, else contradiction.
fn explain_disagreement(
    r: &Report,
    md: &Model,
    total: &Total,
    picks: &Picks,
) -> (Disagreement, String) {
    let Picks {
        krow,
        mrow,
        kp,
        mp,
        ref kname,
        ref mname,
        ref kp_s,
    } = *picks;
    let (ver, memcg, legacy, domain, page_kb) =
        (md.ver, md.memcg, md.legacy, md.domain, md.page_kb);
    let (kb, procs) = (&md.kb, &md.procs);
    if kp == Some(mp) {
        (
            Disagreement::TieOrder,
            format!(
                "both have {mp} points: {} the model took {mname}, the kernel {kname}; the table is not printed in the order the kernel scanned{}",
                tie_words(kb, domain, legacy),
                if memcg && ver < v(5, 3, 0) {
                    " (≤ 5.2 prints memcg tables in process-list order but scans by cgroup)"
                } else {
                    ""
                }
            ),
        )
    } else if let Some(t) = (!legacy && !total.exact)
        .then(|| {
            grid(total.lo, total.hi)
                .find(|&t| chosen_row(&scan(procs, domain, t, page_kb, kb)) == Some(krow))
        })
        .flatten()
    {
        (
            Disagreement::Totalpages,
            format!(
                "with totalpages {t} (the report allows {} – {}: {}) the model picks {kname} too",
                total.lo, total.hi, total.from
            ),
        )
    } else if !legacy && md.admin_guess && {
        let mut alt = procs.clone();
        alt.iter_mut().for_each(|p| p.cap_sys_admin = false);
        chosen_row(&scan(&alt, domain, total.value, page_kb, kb)) == Some(krow)
    } {
        (
            Disagreement::AdminBonus,
            format!(
                "without the 3% root bonus for the uid-0 tasks the model picks {kname} too: which tasks held CAP_SYS_ADMIN decides, and the report does not show it"
            ),
        )
    } else if let Some(k) = kp
        && drift_bound(kb) >= mp.saturating_sub(k)
    {
        (
            Disagreement::CounterDrift,
            format!(
                "{kname} is {} points behind {mname}, within how far the rss counters can move between the kernel's choice and the table it prints after it",
                mp - k
            ),
        )
    } else {
        (
            Disagreement::Contradiction,
            format!(
                "the kernel's choice contradicts its own {ver} heuristic: it killed {kname} with {kp_s} (oom_score_adj {}), while {mname} has {mp} points (oom_score_adj {})",
                r.tasks[krow].adj(),
                r.tasks[mrow].adj()
            ),
        )
    }
}

fn join(head: String, more: Vec<String>) -> String {
    if more.is_empty() {
        head
    } else {
        format!("{head}; {}", more.join("; "))
    }
}

/// The points the model gave `row`'s task.
fn out_points(cands: &[CandidateJson], row: &TaskRow) -> Option<i64> {
    cands
        .iter()
        .find(|c| c.pid == row.pid && c.tgid == row.tgid)
        .and_then(|c| c.points)
}

/// A geometric grid over [lo, hi].
fn grid(lo: u64, hi: u64) -> impl Iterator<Item = u64> {
    let lo = lo.max(1) as f64;
    let hi = (hi.max(1) as f64).max(lo);
    (0..=48).map(move |i| (lo * (hi / lo).powf(f64::from(i) / 48.0)) as u64)
}

/// How far a task's rss can be off between the choice and the table: up to
/// 64 pages per thread per counter before 6.2 (TASK_RSS_EVENTS_THRESH, the
/// thread count is not printed: one per task is assumed), a per-CPU batch
/// per CPU from 6.2 (the CPU count is not printed: 32 pages × 4 assumed);
/// from 7.0 both reads are precise sums, and the same bound stands for what a
/// task still allocating adds between them.
fn drift_bound(kb: &KernelBehavior) -> i64 {
    if kb.approximate_rss || kb.precise_rss_sums {
        3 * 32 * 4
    } else {
        3 * 64
    }
}

fn tie_words(kb: &KernelBehavior, domain: Domain, legacy: bool) -> &'static str {
    let tie = match domain {
        Domain::Global => kb.global_tie,
        Domain::Memcg => kb.memcg_tie,
    };
    match (legacy, tie) {
        (true, _) | (false, TieBreak::First) => {
            "this kernel keeps the first task scanned on equal points;"
        }
        (false, TieBreak::KeepLeader) => {
            "this kernel keeps the first thread-group leader scanned on equal points;"
        }
        (false, TieBreak::Last) => "this kernel takes the last task scanned on equal points;",
    }
}

/// The rules in a few words, for the reason.
fn rules_line(kb: &KernelBehavior, domain: Domain, legacy: bool) -> String {
    if legacy {
        return format!(
            "Linux {}'s rules (points = (rss + page tables + swap) × 1000 / totalpages + oom_score_adj, 1 – 1000)",
            kb.version
        );
    }
    let kind = match domain {
        Domain::Global => "global",
        Domain::Memcg => "memcg",
    };
    format!("Linux {}'s rules for a {kind} OOM", kb.version)
}

/// The totalpages for which `p` scores `score` (`points * 1000 /
/// totalpages`), searched in [lo, hi].
fn solve_totalpages(
    p: &Process,
    score: u64,
    kb: &KernelBehavior,
    page_kb: u64,
    lo: u64,
    hi: u64,
) -> Option<u64> {
    let score_at = |t: u64| {
        crate::model::oom_badness(p, t, page_kb * 1024, kb)
            .points
            .map(|pts| (pts.max(0) as u64).saturating_mul(1000) / t.max(1))
    };
    // The score falls as totalpages grows (points grow by adj/1000 per page
    // at most): bisect for the range that prints `score`.
    let (mut a, mut b) = (lo.max(1), hi.max(lo.max(1)));
    if score_at(a)? < score || score_at(b)? > score {
        return None;
    }
    while b - a > 1 {
        let m = a + (b - a) / 2;
        if score_at(m)? > score {
            a = m;
        } else {
            b = m;
        }
    }
    (score_at(b)? == score).then_some(b)
}

/// 2.6.36 – 3.7: the first task with the most normalized points.
fn legacy_select(procs: &[Process], totalpages: u64, page_kb: u64) -> Option<usize> {
    let mut best: Option<(usize, i64)> = None;
    for (i, p) in procs.iter().enumerate() {
        if let Some(pts) = oom_badness_normalized(p, totalpages, page_kb * 1024).points
            && best.is_none_or(|(_, b)| pts > b)
        {
            best = Some((i, pts));
        }
    }
    best.map(|(i, _)| i)
}

fn legacy_candidates(procs: &[Process], totalpages: u64, page_kb: u64) -> Vec<CandidateJson> {
    let mut c: Vec<(usize, CandidateJson)> = procs
        .iter()
        .enumerate()
        .map(|(i, p)| {
            let b = oom_badness_normalized(p, totalpages, page_kb * 1024);
            (
                i,
                CandidateJson {
                    pid: p.threads.first().map_or(p.tgid, |t| t.pid),
                    tgid: p.tgid,
                    comm: p.comm.clone(),
                    points: b.points,
                    rss_pages: b.rss_pages,
                    swap_pages: b.swap_pages,
                    pgtables_pages: b.pgtables_pages,
                    oom_score_adj: p.oom_score_adj,
                    eligible: b.points.is_some(),
                    reason: match b.points {
                        Some(pts) => format!(
                            "points {pts} = (rss {} + swap {} + page tables {}) × 1000 / totalpages{} + oom_score_adj {}{}",
                            b.rss_pages,
                            b.swap_pages,
                            b.pgtables_pages,
                            if b.admin_bonus_pages > 0 { " − 30 (root)" } else { "" },
                            b.adj_term,
                            if b.floored { ", raised to 1" } else { "" }
                        ),
                        None => crate::model::explain::breakdown(&b),
                    },
                },
            )
        })
        .collect();
    c.sort_by(|(ia, a), (ib, b)| b.points.cmp(&a.points).then(ia.cmp(ib)));
    c.into_iter().map(|(_, c)| c).collect()
}

/// Finds and replays every report of `text`.
pub fn replay_all(text: &str) -> Vec<ReplayReport> {
    replay_all_given(text, Given::default())
}

/// As [`replay_all`], with what is known besides the reports.
pub fn replay_all_given(text: &str, given: Given) -> Vec<ReplayReport> {
    parse_all(text)
        .iter()
        .map(|r| analyze_given(r, given))
        .collect()
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

/// Replays the report's victim selection with the model: the summary of
/// [`analyze`] the daemon keeps in each episode.
pub fn replay(r: &Report) -> Result<Replay, ReplayError> {
    summarize(&analyze(r))
}

/// The summary of an analysis (or why it cannot be summarized).
pub fn summarize(a: &ReplayReport) -> Result<Replay, ReplayError> {
    let kernel = a
        .rules
        .as_deref()
        .and_then(|v| v.parse().ok())
        .ok_or(ReplayError::NoVersion)?;
    if a.tasks.is_empty() {
        return Err(ReplayError::NoTable);
    }
    let totalpages = a.totalpages.ok_or(ReplayError::NoTotalpages)?;
    Ok(Replay {
        kernel,
        domain: a.domain.unwrap_or(Domain::Global),
        totalpages,
        totalpages_exact: a.totalpages_exact,
        model_pid: a.predicted_victim.as_ref().map(|p| p.pid),
        kernel_pid: a.kernel_victim.as_ref().map(|k| k.pid),
        agree: a.agrees == Some(true),
    })
}

/// (pid, points) per task; None: ineligible.
pub type TaskPoints = Vec<(i32, Option<i64>)>;

/// The model's points for every row of a replayed report's table, at the
/// kernel's own `totalpages` when it is known (from `oom_kill_process`):
/// (pid, points; None where the model finds the task ineligible). The
/// analysis's own candidates when its totalpages is the kernel's; else the
/// table is scanned again at the kernel's, under the analysis's rules (the
/// report is not parsed or judged again).
pub fn points_at(a: &ReplayReport, totalpages: Option<u64>) -> Result<TaskPoints, ReplayError> {
    let points = |c: &[CandidateJson]| c.iter().map(|c| (c.pid, c.points)).collect();
    let Some(t) = totalpages
        .map(|t| t.clamp(1, MAX_PAGES))
        .filter(|&t| a.totalpages != Some(t))
    else {
        summarize(a)?;
        return Ok(points(&a.candidates));
    };
    let ver: KernelVersion = a
        .rules
        .as_deref()
        .and_then(|v| v.parse().ok())
        .ok_or(ReplayError::NoVersion)?;
    if a.tasks.is_empty() {
        return Err(ReplayError::NoTable);
    }
    if ver < v(2, 6, 36) {
        return Err(ReplayError::NoTotalpages);
    }
    let kb = KernelBehavior::for_version(ver);
    let procs = table_processes(&a.tasks, &kb);
    let domain = a.domain.unwrap_or(Domain::Global);
    let legacy = ver < v(3, 8, 0);
    let (_, _, cands) = scan_table(&procs, domain, t, a.page_size / 1024, &kb, legacy);
    Ok(points(&cands))
}

/// The table's rows as the model's processes, in table order.
pub fn processes(tasks: &[TaskRow]) -> Vec<Process> {
    tasks
        .iter()
        .map(|t| {
            let mut p = Process::simple(
                t.tgid,
                &t.name,
                MmCounters {
                    anon_pages: t.rss_pages,
                    swap_pages: t.swapents.unwrap_or(0),
                    pgtables_bytes: t.pgtables_bytes.unwrap_or(0),
                    nr_ptes: t.nr_ptes,
                    nr_pmds: t.nr_pmds,
                    ..MmCounters::default()
                },
                t.adj(),
            );
            p.threads[0].pid = t.pid;
            p
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn one(text: &str) -> ReplayReport {
        let mut all = replay_all(text);
        assert_eq!(all.len(), 1, "{text}");
        all.remove(0)
    }

    /// A 4.19-format memcg report (its lines as 4.19 prints them).
    fn v419(rows: &str, tail: &str) -> String {
        format!(
            "a invoked oom-killer: gfp_mask=0x6000c0(GFP_KERNEL), nodemask=(null), order=0, oom_score_adj=0
CPU: 0 PID: 10 Comm: a Not tainted 4.19.78 #1
Task in /job killed as a result of limit of /job
memory: usage 40960kB, limit 40960kB, failcnt 1
memory+swap: usage 40960kB, limit 40960kB, failcnt 0
Tasks state (memory values in pages):
[  pid  ]   uid  tgid total_vm      rss pgtables_bytes swapents oom_score_adj name
{rows}{tail}"
        )
    }

    #[test]
    fn sacrifice_child_is_explained() {
        let rows = "[     10]  1000    10     9000     8000    81920        0             0 parent
[     11]  1000    11     3000     2000    40960        0             0 child
";
        let tail =
            "Memory cgroup out of memory: Kill process 10 (parent) score 783 or sacrifice child
Killed process 11 (child) total-vm:12000kB, anon-rss:8000kB, file-rss:0kB, shmem-rss:0kB
";
        let r = one(&v419(rows, tail));
        assert_eq!(r.rules.as_deref(), Some("4.19.78"));
        assert_eq!(r.trigger.gfp_flags.as_deref(), Some("GFP_KERNEL"));
        assert_eq!(r.trigger.gfp_decoded, None);
        assert_eq!(r.agrees, Some(true), "{}", r.reason);
        assert_eq!(r.predicted_victim.as_ref().unwrap().pid, 10);
        assert_eq!(r.kernel_victim.as_ref().unwrap().pid, 11);
        assert_eq!(r.kernel_selected.as_ref().unwrap().pid, 10);
        assert!(r.reason.contains("sacrifice child"), "{}", r.reason);
        // 8000 + 20 page-table pages over 10 240: the printed 783.
        assert!(
            r.notes.iter().all(|n| !n.contains("score line says")),
            "{:?}",
            r.notes
        );
        assert!(r.totalpages_exact);
        let off = one(&v419(rows, &tail.replace("score 783", "score 700")));
        assert!(
            off.notes.iter().any(|n| n
                .contains("the score line says 700; the model's points for parent (10) give 783")),
            "{:?}",
            off.notes
        );
        assert_eq!(r.totalpages, Some(10_240));
    }

    #[test]
    fn a_thread_in_the_kill_line_is_its_process() {
        // 5.x: the kill names thread 12 of process 10 (a zombie leader's
        // live thread, say); the table lists the process under pid 10.
        let text = "w invoked oom-killer: gfp_mask=0xcc0(GFP_KERNEL), order=0, oom_score_adj=0
CPU: 1 PID: 12 Comm: worker Not tainted 5.15.0 #1
memory: usage 40960kB, limit 40960kB, failcnt 1
swap: usage 0kB, limit 0kB, failcnt 0
Tasks state (memory values in pages):
[  pid  ]   uid  tgid total_vm      rss pgtables_bytes swapents oom_score_adj name
[     10]  1000    10     9000     8000    81920        0             0 server
[     20]  1000    20     3000     2000    40960        0             0 helper
oom-kill:constraint=CONSTRAINT_MEMCG,nodemask=(null),cpuset=/,mems_allowed=0,oom_memcg=/job,task_memcg=/job,task=worker,pid=12,uid=1000
Memory cgroup out of memory: Killed process 12 (worker) total-vm:36000kB, anon-rss:31000kB, file-rss:1000kB, shmem-rss:0kB, UID:1000 pgtables:80kB oom_score_adj:0
";
        let r = one(text);
        assert_eq!(r.agrees, Some(true), "{}", r.reason);
        assert!(r.reason.contains("thread 12"), "{}", r.reason);
        assert_eq!(r.predicted_victim.as_ref().unwrap().pid, 10);
    }

    #[test]
    fn ties_follow_the_version() {
        let rows = "[     10]  1000    10     9000     8000    81920        0             0 first
[     11]  1000    11     9000     8000    81920        0             0 second
";
        // 4.19 keeps the first leader on equal points.
        let r = one(&v419(
            rows,
            "Memory cgroup out of memory: Kill process 10 (first) score 783 or sacrifice child\nKilled process 10 (first) total-vm:36000kB, anon-rss:32000kB, file-rss:0kB, shmem-rss:0kB\n",
        ));
        assert_eq!(r.agrees, Some(true), "{}", r.reason);
        assert!(r.reason.contains("tied"), "{}", r.reason);
        // The kernel taking the second is a tie the table order can explain,
        // not a contradiction.
        let r = one(&v419(
            rows,
            "Memory cgroup out of memory: Kill process 11 (second) score 783 or sacrifice child\nKilled process 11 (second) total-vm:36000kB, anon-rss:32000kB, file-rss:0kB, shmem-rss:0kB\n",
        ));
        assert_eq!(r.agrees, Some(false));
        assert_eq!(r.disagreement, Some(Disagreement::TieOrder));
    }

    #[test]
    fn oom_group_kills_are_listed() {
        let text = "b invoked oom-killer: gfp_mask=0xcc0(GFP_KERNEL), order=0, oom_score_adj=0
CPU: 1 PID: 10 Comm: b Not tainted 6.1.0 #1
memory: usage 40960kB, limit 40960kB, failcnt 1
swap: usage 0kB, limit 0kB, failcnt 0
Tasks state (memory values in pages):
[  pid  ]   uid  tgid total_vm      rss pgtables_bytes swapents oom_score_adj name
[     10]     0    10     9000     8000    81920        0             0 big
[     11]     0    11     3000     2000    40960        0             0 small
oom-kill:constraint=CONSTRAINT_MEMCG,nodemask=(null),cpuset=/,mems_allowed=0,oom_memcg=/g,task_memcg=/g,task=big,pid=10,uid=0
Memory cgroup out of memory: Killed process 10 (big) total-vm:36000kB, anon-rss:32000kB, file-rss:0kB, shmem-rss:0kB, UID:0 pgtables:80kB oom_score_adj:0
Tasks in /g are going to be killed due to memory.oom.group set
Memory cgroup out of memory: Killed process 10 (big) total-vm:36000kB, anon-rss:32000kB, file-rss:0kB, shmem-rss:0kB, UID:0 pgtables:80kB oom_score_adj:0
Memory cgroup out of memory: Killed process 11 (small) total-vm:12000kB, anon-rss:8000kB, file-rss:0kB, shmem-rss:0kB, UID:0 pgtables:40kB oom_score_adj:0
Memory cgroup out of memory: Killed process 99 (late) total-vm:1kB, anon-rss:1kB, file-rss:0kB, shmem-rss:0kB, UID:0 pgtables:4kB oom_score_adj:0
";
        let r = one(text);
        assert_eq!(r.agrees, Some(true));
        let g = r.oom_group.unwrap();
        assert_eq!(g.cgroup.as_deref(), Some("/g"));
        let pids: Vec<i32> = g.killed.iter().map(|t| t.pid).collect();
        assert_eq!(pids, vec![11, 99]);
    }

    #[test]
    fn nothing_killable() {
        let text = "c invoked oom-killer: gfp_mask=0xcc0(GFP_KERNEL), order=0, oom_score_adj=-1000
CPU: 1 PID: 10 Comm: c Not tainted 6.12.0 #1
memory: usage 40960kB, limit 40960kB, failcnt 1
swap: usage 0kB, limit 0kB, failcnt 0
Tasks state (memory values in pages):
[  pid  ]   uid  tgid total_vm      rss rss_anon rss_file rss_shmem pgtables_bytes swapents oom_score_adj name
[     10]     0    10     9000     8000     8000        0         0    81920        0         -1000 c
Out of memory and no killable processes...
";
        let r = one(text);
        assert_eq!(r.agrees, Some(true), "{}", r.reason);
        assert!(r.predicted_victim.is_none());
    }

    #[test]
    fn a_kill_line_alone_is_a_report_not_judged() {
        let r = one(
            "[ 1.0] Out of memory: Killed process 42 (x) total-vm:1kB, anon-rss:1kB, file-rss:0kB, shmem-rss:0kB\n",
        );
        assert_eq!(r.agrees, None);
        assert_eq!(r.kernel_victim.as_ref().unwrap().pid, 42);
        assert!(r.reason.contains("rate-limits"), "{}", r.reason);
    }

    /// A report without a kernel line gets the rules of the family its
    /// format belongs to (kernel-oom.md §9.1 – §9.4), one form per family.
    #[test]
    fn rules_inferred_from_the_format() {
        let row = |cols: &str| -> String {
            let n = cols.split_whitespace().count() - 2; // numbers after uid, before name
            let mut v = vec!["0".to_owned(); n];
            v[0] = "10".into(); // tgid
            v[1] = "1000".into(); // total_vm
            v[2] = "500".into(); // rss
            format!("[   10]     0 {} big\n", v.join(" "))
        };
        let cases: [(&str, &str, &str, &str, &str); 9] = [
            (
                "gfp_mask=0x201da, order=0, oom_adj=0, oom_score_adj=0",
                "[ pid ]   uid  tgid total_vm      rss cpu oom_adj oom_score_adj name",
                "",
                "Kill process 10 (big) score 1 or sacrifice child",
                "2.6.36",
            ),
            (
                "gfp_mask=0xd0, order=0, oom_score_adj=0",
                "[ pid ]   uid  tgid total_vm      rss nr_ptes swapents oom_score_adj name",
                "",
                "Kill process 10 (big) score 1 or sacrifice child",
                "3.10.0",
            ),
            (
                "gfp_mask=0xd0, order=0, oom_score_adj=0",
                "[ pid ]   uid  tgid total_vm      rss nr_ptes nr_pmds swapents oom_score_adj name",
                "",
                "Kill process 10 (big) score 1 or sacrifice child",
                "4.4.0",
            ),
            (
                "gfp_mask=0x14000c0(GFP_KERNEL), nodemask=(null),  order=0, oom_score_adj=0",
                "[ pid ]   uid  tgid total_vm      rss nr_ptes nr_pmds swapents oom_score_adj name",
                "",
                "Kill process 10 (big) score 1 or sacrifice child",
                "4.9.0",
            ),
            (
                "gfp_mask=0x14000c0(GFP_KERNEL), nodemask=(null), order=0, oom_score_adj=0",
                "[ pid ]   uid  tgid total_vm      rss pgtables_bytes swapents oom_score_adj name",
                "",
                "Kill process 10 (big) score 1 or sacrifice child",
                "4.15.0",
            ),
            (
                "gfp_mask=0x6000c0(GFP_KERNEL), nodemask=(null), order=0, oom_score_adj=0",
                "Tasks state (memory values in pages):\n[  pid  ]   uid  tgid total_vm      rss pgtables_bytes swapents oom_score_adj name",
                "",
                "Kill process 10 (big) score 1 or sacrifice child",
                "4.19.0",
            ),
            (
                "gfp_mask=0x6000c0(GFP_KERNEL), order=0, oom_score_adj=0",
                "Tasks state (memory values in pages):\n[  pid  ]   uid  tgid total_vm      rss pgtables_bytes swapents oom_score_adj name",
                "oom-kill:constraint=CONSTRAINT_NONE,nodemask=(null),cpuset=/,mems_allowed=0,global_oom,task_memcg=/,task=big,pid=10,uid=0\n",
                "Out of memory: Kill process 10 (big) score 1 or sacrifice child",
                "5.0.0",
            ),
            (
                "gfp_mask=0x100cca(GFP_HIGHUSER_MOVABLE), order=0, oom_score_adj=0",
                "Tasks state (memory values in pages):\n[  pid  ]   uid  tgid total_vm      rss pgtables_bytes swapents oom_score_adj name",
                "oom-kill:constraint=CONSTRAINT_NONE,nodemask=(null),cpuset=/,mems_allowed=0,global_oom,task_memcg=/,task=big,pid=10,uid=0\n",
                "",
                "5.4.0",
            ),
            (
                "gfp_mask=0x140cca(GFP_HIGHUSER_MOVABLE|__GFP_COMP), order=0, oom_score_adj=0",
                "Tasks state (memory values in pages):\n[  pid  ]   uid  tgid total_vm      rss rss_anon rss_file rss_shmem pgtables_bytes swapents oom_score_adj name",
                "oom-kill:constraint=CONSTRAINT_NONE,nodemask=(null),cpuset=/,mems_allowed=0,global_oom,task_memcg=/,task=big,pid=10,uid=0\n",
                "",
                "6.12.0",
            ),
        ];
        for (header, table, oom_kill, select, want) in cases {
            let cols = table.lines().last().unwrap().split(']').nth(1).unwrap();
            let text = format!(
                "big invoked oom-killer: {header}\n1000 pages RAM\n0 pages reserved\n{table}\n{}{oom_kill}{select}\nOut of memory: Killed process 10 (big) total-vm:4000kB, anon-rss:2000kB, file-rss:0kB, shmem-rss:0kB\n",
                row(cols)
            );
            let r = one(&text);
            assert_eq!(r.tasks.len(), 1, "{want}: {text}");
            assert_eq!(r.rules.as_deref(), Some(want), "{text}");
            assert!(
                r.rules_from.as_deref().unwrap().starts_with("inferred"),
                "{want}"
            );
            assert_eq!(r.agrees, Some(true), "{want}: {}", r.reason);
        }
    }

    #[test]
    fn legacy_normalized_points() {
        // RHEL 6 (2.6.32 with the 2.6.36 rewrite): points on 0..1000, and the
        // score line prints them.
        let text =
            "mysqld invoked oom-killer: gfp_mask=0x201da, order=0, oom_adj=0, oom_score_adj=0
Pid: 2425, comm: mysqld Not tainted 2.6.32-431.el6.x86_64 #1
1048576 pages RAM
0 pages reserved
Total swap = 0kB
[ pid ]   uid  tgid total_vm      rss cpu oom_adj oom_score_adj name
[ 2425]    27  2425   600105   259654   1       0             0 mysqld
[ 2500]    27  2500    10000      100   0       0           100 batch
Out of memory: Kill process 2425 (mysqld) score 247 or sacrifice child
Killed process 2425, UID 27, (mysqld) total-vm:2400420kB, anon-rss:1038616kB, file-rss:0kB
";
        let r = one(text);
        // 2.6.32-431 says 2.6.32, but its oom_score_adj column is the rewrite's.
        assert_eq!(r.rules.as_deref(), Some("2.6.36"));
        assert!(r.rules_from.as_deref().unwrap().contains("RHEL 6"));
        // 0x201da in the ≤ 4.3 layout: __GFP_WAIT (0x10) and __GFP_FS (0x80) among others.
        let d = r.trigger.gfp_decoded.as_deref().unwrap();
        assert!(d.contains("__GFP_FS") && d.contains("__GFP_WAIT"), "{d}");
        assert_eq!(r.agrees, Some(true), "{}", r.reason);
        // 259654 × 1000 / 1048576 = 247, the printed score; batch: 0 + 100.
        assert_eq!(r.predicted_victim.as_ref().unwrap().points, 247);
        assert_eq!(r.candidates[1].points, Some(100));
        // Vanilla 2.6.32 (oom_adj only): the old badness() is not recomputable.
        let vanilla = text
            .replace("cpu oom_adj oom_score_adj name", "cpu oom_adj name")
            .replace("   1       0             0 mysqld", "   1       0 mysqld")
            .replace("   0       0           100 batch", "   0       0 batch");
        let r = one(&vanilla);
        assert_eq!(r.tasks.len(), 2);
        assert_eq!(r.agrees, None, "{}", r.reason);
        assert!(r.reason.contains("pre-2.6.36"), "{}", r.reason);
    }
}

/// The daemon replays each kill's report once and, when the kernel's hooks
/// give its own totalpages, rescans that analysis's table rather than
/// replaying the report again: the points must be the ones a full replay at
/// the kernel's totalpages gives.
#[cfg(test)]
mod one_replay {
    use super::*;

    fn reports() -> Vec<Report> {
        let mut texts = Vec::new();
        let fixtures = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures");
        let shared = concat!(env!("CARGO_MANIFEST_DIR"), "/../../shared/oom-reports");
        for dir in [
            format!("{fixtures}/guest-reports"),
            format!("{fixtures}/host-reports"),
            shared.to_owned(),
        ] {
            let Ok(entries) = std::fs::read_dir(&dir) else {
                continue;
            };
            for e in entries.flatten() {
                if let Ok(bytes) = std::fs::read(e.path()) {
                    texts.push(String::from_utf8_lossy(&bytes).into_owned());
                }
            }
        }
        texts.iter().flat_map(|t| parse_all(t)).collect()
    }

    #[test]
    fn points_at_the_kernels_totalpages_equal_a_full_replay() {
        let all = reports();
        assert!(all.len() >= 30, "only {} reports found", all.len());
        let mut rescanned = 0;
        for r in &all {
            let a = analyze(r);
            let base = a.totalpages.unwrap_or(1 << 20);
            for t in [
                None,
                Some(base),
                Some(base + 12_345),
                Some(base / 3),
                Some(0),
            ] {
                let full = analyze_given(
                    r,
                    Given {
                        totalpages: t,
                        kernel: None,
                    },
                );
                let expected = summarize(&full)
                    .map(|_| full.candidates.iter().map(|c| (c.pid, c.points)).collect());
                let got = points_at(&a, t);
                assert_eq!(
                    got, expected,
                    "report at line {} with totalpages {t:?}",
                    r.first_line
                );
                rescanned += usize::from(got.is_ok() && t.is_some() && t != a.totalpages);
            }
        }
        assert!(rescanned > 50, "only {rescanned} rescans compared");
    }
}
