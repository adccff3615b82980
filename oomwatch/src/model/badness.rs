//! `oom_badness()` (mm/oom_kill.c): how many points a task scores, per kernel
//! version, with every term kept for the explanation.

use serde::Serialize;

use super::{
    behavior::{BadnessReturn, KernelBehavior, PageTableTerm},
    task::{OOM_SCORE_ADJ_MIN, Process},
};

/// Why a task scores nothing at all.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Ineligible {
    /// `is_global_init()`.
    GlobalInit,
    /// PF_KTHREAD.
    KernelThread,
    /// No thread has an mm (`find_lock_task_mm()` returned NULL).
    NoMm,
    /// `oom_score_adj == -1000`.
    AdjMin,
    /// The mm carries MMF_OOM_SKIP (4.8+).
    MmOomSkip,
    /// A vfork child sharing its parent's mm (4.8+).
    InVfork,
}

impl Ineligible {
    pub fn describe(self) -> &'static str {
        match self {
            Ineligible::GlobalInit => "global init (pid 1) is never killed",
            Ineligible::KernelThread => "kernel threads are never killed",
            Ineligible::NoMm => "no thread has an mm left (exiting)",
            Ineligible::AdjMin => "oom_score_adj is -1000 (OOM_SCORE_ADJ_MIN)",
            Ineligible::MmOomSkip => "its mm is marked MMF_OOM_SKIP (already reaped or torn down)",
            Ineligible::InVfork => "a vfork child sharing its parent's mm",
        }
    }
}

/// The result of `oom_badness()` for one task, term by term.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Badness {
    /// The points the kernel compares; `None` = ineligible (0 before 5.9,
    /// LONG_MIN from 5.9).
    pub points: Option<i64>,
    pub ineligible: Option<Ineligible>,
    /// `get_mm_rss()`, pages.
    pub rss_pages: i64,
    /// MM_SWAPENTS, pages.
    pub swap_pages: i64,
    /// The page-table term, pages (units per version).
    pub pgtables_pages: i64,
    /// Points removed by the CAP_SYS_ADMIN bonus (≤ 4.16), ≥ 0.
    pub admin_bonus_pages: i64,
    /// `oom_score_adj * (totalpages / 1000)`, after any ≤ 3.13 bonus on adj.
    pub adj_term: i64,
    /// The ≤ 5.8 floor of 1 raised the points.
    pub floored: bool,
}

impl Badness {
    fn ineligible(why: Ineligible) -> Self {
        Badness {
            points: None,
            ineligible: Some(why),
            rss_pages: 0,
            swap_pages: 0,
            pgtables_pages: 0,
            admin_bonus_pages: 0,
            adj_term: 0,
            floored: false,
        }
    }
}

/// The checks `oom_badness()` makes before counting (`oom_unkillable_task`,
/// `find_lock_task_mm`, the adj/skip/vfork test), in kernel order.
pub fn ineligibility(p: &Process, kb: &KernelBehavior) -> Option<Ineligible> {
    if p.global_init {
        return Some(Ineligible::GlobalInit);
    }
    if p.kernel_thread {
        return Some(Ineligible::KernelThread);
    }
    if p.thread_with_mm().is_none() {
        return Some(Ineligible::NoMm);
    }
    if p.oom_score_adj == OOM_SCORE_ADJ_MIN {
        return Some(Ineligible::AdjMin);
    }
    if kb.reaped_mm_skipped && p.mm_oom_skip {
        return Some(Ineligible::MmOomSkip);
    }
    if kb.vfork_ineligible && p.in_vfork {
        return Some(Ineligible::InVfork);
    }
    None
}

/// `oom_badness(p, totalpages)` of kernel `kb.version` with pages of
/// `page_size` bytes (kernel-oom.md §2.2).
pub fn oom_badness(p: &Process, totalpages: u64, page_size: u64, kb: &KernelBehavior) -> Badness {
    if let Some(why) = ineligibility(p, kb) {
        return Badness::ineligible(why);
    }
    let Some(mm) = p.mm else {
        return Badness::ineligible(Ineligible::NoMm);
    };
    let rss = mm.rss_pages() as i64;
    let swap = mm.swap_pages as i64;
    let derived_ptes = mm.pgtables_bytes / page_size.max(1);
    let pgtables = match kb.page_tables {
        PageTableTerm::NrPtes => mm.nr_ptes.unwrap_or(derived_ptes),
        PageTableTerm::NrPtesPlusPmds => {
            mm.nr_ptes.unwrap_or(derived_ptes) + mm.nr_pmds.unwrap_or(0)
        }
        PageTableTerm::Bytes => derived_ptes,
    } as i64;
    let mut points = rss + swap + pgtables;
    let mut adj = i64::from(p.oom_score_adj);
    let mut bonus = 0;
    if kb.admin_bonus && p.cap_sys_admin {
        if kb.admin_bonus_on_adj {
            adj -= 30;
        } else {
            bonus = points * 3 / 100;
            points -= bonus;
        }
    }
    // totalpages / 1000 first, in integer arithmetic: below 1000 pages the
    // adj has no effect (kernel-oom.md §2.2 step 6).
    let adj_term = adj * (totalpages / 1000) as i64;
    points += adj_term;
    let (points, floored) = match kb.badness_return {
        BadnessReturn::FloorOne if points <= 0 => (1, true),
        _ => (points, false),
    };
    Badness {
        points: Some(points),
        ineligible: None,
        rss_pages: rss,
        swap_pages: swap,
        pgtables_pages: pgtables,
        admin_bonus_pages: bonus,
        adj_term,
        floored,
    }
}

/// `oom_badness()` of 2.6.36 – 3.7, which returned points already on the
/// 0 … 1000 scale (kernel-oom.md §2.1): `(rss + page tables + swap) × 1000 /
/// totalpages`, 30 less with CAP_SYS_ADMIN, plus `oom_score_adj`, then 1 if
/// that is ≤ 0 and at most 1000. The callers replace the choice only on
/// strictly more points. Used to replay reports of those kernels; the live
/// model starts at 3.10.
pub fn oom_badness_normalized(p: &Process, totalpages: u64, page_size: u64) -> Badness {
    let kb = KernelBehavior::for_version(super::version::v(3, 10, 0));
    if let Some(why) = ineligibility(p, &kb) {
        return Badness::ineligible(why);
    }
    let Some(mm) = p.mm else {
        return Badness::ineligible(Ineligible::NoMm);
    };
    let rss = mm.rss_pages() as i64;
    let swap = mm.swap_pages as i64;
    let pgtables = mm.nr_ptes.unwrap_or(mm.pgtables_bytes / page_size.max(1)) as i64;
    let mut points = (rss + swap + pgtables) * 1000 / totalpages.max(1) as i64;
    let bonus = if p.cap_sys_admin { 30 } else { 0 };
    points -= bonus;
    let adj_term = i64::from(p.oom_score_adj);
    points += adj_term;
    let floored = points <= 0;
    Badness {
        points: Some(points.clamp(1, 1000)),
        ineligible: None,
        rss_pages: rss,
        swap_pages: swap,
        pgtables_pages: pgtables,
        admin_bonus_pages: bonus,
        adj_term,
        floored,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::{
        task::MmCounters,
        version::{KernelVersion, v},
    };

    fn kb(ver: KernelVersion) -> KernelBehavior {
        KernelBehavior::for_version(ver)
    }

    fn mm(anon: u64, file: u64, shmem: u64, swap: u64, pgtables_bytes: u64) -> MmCounters {
        MmCounters {
            anon_pages: anon,
            file_pages: file,
            shmem_pages: shmem,
            swap_pages: swap,
            pgtables_bytes,
            nr_ptes: None,
            nr_pmds: None,
        }
    }

    /// kernel-oom.md §10.1, measured on the lab's 6.18.44: T = 6 170 914, a
    /// small python with adj 0 scores 3 450 pages; with adj 1000, 6 173 451.
    #[test]
    fn lab_6_18_self_checks() {
        let t = 6_170_914;
        // 3 450 = rss + swap + pte pages; split arbitrarily, the sum is what counts.
        let p = Process::simple(100, "python3", mm(3000, 400, 0, 0, 50 * 4096), 0);
        assert_eq!(
            oom_badness(&p, t, 4096, &kb(v(6, 18, 44))).points,
            Some(3450)
        );
        let p = Process::simple(100, "python3", mm(3000, 400, 0, 0, 50 * 4096), 1000);
        // adj term = 1000 * (6 170 914 / 1000) = 6 170 000
        assert_eq!(
            oom_badness(&p, t, 4096, &kb(v(6, 18, 44))).points,
            Some(6_173_450)
        );
    }

    /// mm/oom_kill.c ≥ 5.9: no floor, negative points survive; ≤ 5.8: floor 1.
    #[test]
    fn floor_of_one_until_5_9_and_5_4_144() {
        let p = Process::simple(7, "small", mm(10, 0, 0, 0, 0), -500);
        let t = 100_000; // adj term = -500 * 100 = -50 000
        assert_eq!(
            oom_badness(&p, t, 4096, &kb(v(6, 1, 0))).points,
            Some(-49_990)
        );
        assert_eq!(
            oom_badness(&p, t, 4096, &kb(v(5, 4, 144))).points,
            Some(-49_990)
        );
        let old = oom_badness(&p, t, 4096, &kb(v(5, 4, 143)));
        assert_eq!(old.points, Some(1));
        assert!(old.floored);
        assert_eq!(oom_badness(&p, t, 4096, &kb(v(4, 19, 78))).points, Some(1));
    }

    /// §2.2 step 6: totalpages / 1000 is an integer division done first.
    #[test]
    fn adj_has_no_effect_below_1000_pages() {
        let p = Process::simple(7, "tiny", mm(100, 0, 0, 0, 0), 1000);
        let b = oom_badness(&p, 999, 4096, &kb(v(6, 18, 0)));
        assert_eq!((b.points, b.adj_term), (Some(100), 0));
        let p = Process::simple(7, "tiny", mm(100, 0, 0, 0, 0), -1000);
        assert_eq!(
            oom_badness(&p, 999, 4096, &kb(v(6, 18, 0))).ineligible,
            Some(Ineligible::AdjMin)
        );
    }

    /// §2.2 step 4: page-table units per version.
    #[test]
    fn page_table_term_per_version() {
        let mut counters = mm(1000, 0, 0, 0, 12 * 4096);
        counters.nr_ptes = Some(10);
        counters.nr_pmds = Some(2);
        let p = Process::simple(7, "pt", counters, 0);
        let t = 1_000_000;
        assert_eq!(
            oom_badness(&p, t, 4096, &kb(v(3, 10, 108))).pgtables_pages,
            10
        );
        assert_eq!(
            oom_badness(&p, t, 4096, &kb(v(4, 14, 177))).pgtables_pages,
            12
        );
        assert_eq!(
            oom_badness(&p, t, 4096, &kb(v(4, 19, 78))).pgtables_pages,
            12
        );
        // 64 KiB pages (arm64): bytes / PAGE_SIZE.
        let p = Process::simple(7, "pt", mm(1000, 0, 0, 0, 3 * 65536 + 100), 0);
        assert_eq!(oom_badness(&p, t, 65536, &kb(v(6, 1, 0))).pgtables_pages, 3);
    }

    /// §2.2 step 5: the 3 % root bonus up to 4.16, on points; before 3.14 on adj.
    #[test]
    fn root_bonus() {
        let mut p = Process::simple(7, "root", mm(10_000, 0, 0, 0, 0), 0);
        p.cap_sys_admin = true;
        let t = 2_000_000;
        let b = oom_badness(&p, t, 4096, &kb(v(4, 14, 177)));
        assert_eq!((b.points, b.admin_bonus_pages), (Some(9_700), 300));
        assert_eq!(
            oom_badness(&p, t, 4096, &kb(v(4, 17, 0))).points,
            Some(10_000)
        );
        // 3.10.50: adj -= 30 → -30 * 2000 = -60 000 → floor 1.
        assert_eq!(oom_badness(&p, t, 4096, &kb(v(3, 10, 50))).points, Some(1));
    }

    #[test]
    fn ineligible_cases_in_kernel_order() {
        let k = kb(v(6, 18, 44));
        let mut p = Process::simple(1, "init", mm(10, 0, 0, 0, 0), -1000);
        p.global_init = true;
        assert_eq!(ineligibility(&p, &k), Some(Ineligible::GlobalInit));
        let mut p = Process::simple(2, "kthreadd", mm(0, 0, 0, 0, 0), 0);
        p.kernel_thread = true;
        assert_eq!(ineligibility(&p, &k), Some(Ineligible::KernelThread));
        let mut p = Process::simple(3, "zombie", mm(10, 0, 0, 0, 0), 0);
        p.threads[0].has_mm = false;
        assert_eq!(ineligibility(&p, &k), Some(Ineligible::NoMm));
        let mut p = Process::simple(4, "vforked", mm(10, 0, 0, 0, 0), 0);
        p.in_vfork = true;
        assert_eq!(ineligibility(&p, &k), Some(Ineligible::InVfork));
        assert_eq!(
            ineligibility(&p, &kb(v(4, 4, 155))),
            None,
            "no vfork test before 4.8"
        );
        let mut p = Process::simple(5, "reaped", mm(10, 0, 0, 0, 0), 0);
        p.mm_oom_skip = true;
        assert_eq!(ineligibility(&p, &k), Some(Ineligible::MmOomSkip));
    }
}
