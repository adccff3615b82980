//! What the kernel does, as data: every OOM behaviour change the model knows,
//! with the mainline version it landed in and the stable series that took it
//! earlier, and [`KernelBehavior`], the rule set derived from them for one
//! exact version.
//!
//! This file is the only place that compares kernel versions. Every entry cites
//! its evidence in `../shared/kernel-oom.md` (section, and the trees read);
//! "unverified" there stays "unverified" here.

use serde::Serialize;

use super::version::{KernelVersion, v};

/// One behaviour change in the kernel's OOM code.
#[derive(Debug, Clone, Copy, Serialize)]
pub struct Change {
    pub id: ChangeId,
    /// What changed, in one line.
    pub summary: &'static str,
    /// First mainline release with the change.
    pub mainline: KernelVersion,
    /// Stable series that carry it before `mainline`: the first sublevel of
    /// each series known to have it.
    pub backports: &'static [KernelVersion],
    /// Where the facts come from (kernel-oom.md section; trees compared).
    pub source: &'static str,
}

impl Change {
    /// Whether kernel `ver` has this change.
    pub fn applies(&self, ver: KernelVersion) -> bool {
        ver >= self.mainline || self.backports.iter().any(|b| ver.in_series_from(*b))
    }
}

/// Names of the changes in [`CHANGES`]; never renumbered.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum ChangeId {
    RootBonusOnUsage,
    PmdsInPageTables,
    ShmemRssCounter,
    PgtablesBytes,
    AdminBonusRemoved,
    LeaderPreference,
    VforkIneligible,
    ReapedMmSkipped,
    GlobalScanProcesses,
    GlobalLeaderPreferenceDropped48,
    UnifiedEvaluateTask,
    MemcgTotalpagesSwapMax,
    OomGroup,
    SacrificeChildRemoved,
    ProcsScanNoLeaderPreference,
    BadnessSigned,
    MemcgTotalpagesSplit,
    OomAdjReadClamp,
    PagefaultNoGlobalOom,
    ReaperDelay,
    MemcgTotalpagesMemswAccount,
    PercpuRssCounters,
    MarkVictimFields,
    ProcStatusPreciseRss,
    ConstraintPresentPages,
    NoFsGateMemcgExempt,
    NoFsGateWithoutGfpZero,
    PanicOnOomSparesSysrq,
    NoKillableDeadlockPanic,
    OomKillAllocatingSkipsMemcg,
    OomKillAllocatingCpuset,
    SharersWithAdjMinKilled,
    WatermarkScaleFactor,
    WatermarkBoost,
    MinFreeKbytesCap262144,
    LowmemReserveSkipsEmptyZone,
    WatermarkPromo,
    ReclaimRetryRework,
    NofailNoLongerBypassesOomGates,
    RetryMayfailOomGate,
    MemcgSyncOomKill,
    MemcgReclaimRetries16,
    MmFlagsType,
    ReportMemcgProtection,
    PreciseOomRss,
    MemcgScanSkipsExiting,
    ReportMemInfoGpu,
    VmscanReclaimTracepointsMemcg,
    AllocStallWarning,
    OomVictimChargeBypass,
    MemcgMaxOnRejectedCharge,
}

/// Every change the model knows, oldest first.
pub const CHANGES: &[Change] = &[
    Change {
        id: ChangeId::RootBonusOnUsage,
        summary: "the CAP_SYS_ADMIN bonus is 3% of the task's own points (before: adj -= 30, i.e. 3% of totalpages)",
        // 778c14affaf9 "mm, oom: base root bonus on current usage" (mainline
        // version from the linux-mm patch mail, unverified); kernel-oom.md
        // reads the points form in 3.10.108, so 3.10.y took it at some
        // sublevel ≤ 108 (unverified which).
        mainline: v(3, 14, 0),
        backports: &[v(3, 10, 108)],
        source: "§2.2 step 5; linux-mm patch mm-oom-base-root-bonus-on-current-usage",
    },
    Change {
        id: ChangeId::PmdsInPageTables,
        summary: "badness page-table term counts PMD tables too (nr_ptes + mm_nr_pmds)",
        mainline: v(4, 0, 0),
        backports: &[],
        source: "§2.2 step 4: 4.4.155/4.9.154/4.14.177 mm/oom_kill.c; 4.0 inferred, 3.10.108 has nr_ptes only",
    },
    Change {
        id: ChangeId::ShmemRssCounter,
        summary: "get_mm_rss() adds MM_SHMEMPAGES (shmem was inside MM_FILEPAGES before)",
        mainline: v(4, 5, 0),
        backports: &[],
        source: "§2.2 step 4: absent 4.4.155, present 4.9.154 include/linux/mm.h",
    },
    Change {
        id: ChangeId::PgtablesBytes,
        summary: "page-table term is mm_pgtables_bytes(mm) / PAGE_SIZE",
        mainline: v(4, 15, 0),
        backports: &[],
        source: "§2.2 step 4: absent 4.14.177, present 4.18.0/4.19.78",
    },
    Change {
        id: ChangeId::AdminBonusRemoved,
        summary: "no 3% badness discount for CAP_SYS_ADMIN tasks",
        mainline: v(4, 17, 0),
        backports: &[],
        source: "§2.2 step 5: d46078b28889; present 4.14.177, absent 4.18.0/4.19.78",
    },
    Change {
        id: ChangeId::LeaderPreference,
        summary: "on equal points keep a thread-group leader already chosen",
        // Present in 4.4.155, absent in 3.10.108; the mainline release in
        // between is unverified (§4.5): 4.4 is the first tree seen with it.
        mainline: v(4, 4, 0),
        backports: &[],
        source: "§4.5: d49ad9355420; strict > in 3.10.108, leader preference in 4.4.155 … 5.2.1",
    },
    Change {
        id: ChangeId::VforkIneligible,
        summary: "a vfork child sharing its parent's mm is ineligible",
        mainline: v(4, 8, 0),
        backports: &[],
        source: "§2.2 step 3: absent 4.4.155, present 4.8.15",
    },
    Change {
        id: ChangeId::ReapedMmSkipped,
        summary: "a victim whose mm was reaped (MMF_OOM_REAPED, MMF_OOM_SKIP from 4.9) is skipped, not waited for",
        mainline: v(4, 8, 0),
        backports: &[],
        source: "§2.2 step 3, §4.3: seen in 4.8.15, MMF_OOM_SKIP 4.9.154 … 6.18.2",
    },
    Change {
        id: ChangeId::GlobalScanProcesses,
        summary: "global OOM scans processes (for_each_process) instead of every thread",
        // Between 4.4 and 4.8 (unverified); 4.8.15 is the first tree seen with it.
        mainline: v(4, 8, 0),
        backports: &[],
        source: "§4.1: every thread in 4.4.155, processes in 4.8.15",
    },
    Change {
        id: ChangeId::GlobalLeaderPreferenceDropped48,
        summary: "4.8 only: the global loop has no leader preference (last equal process wins)",
        mainline: v(4, 8, 0),
        backports: &[],
        source: "§4.2, §4.5: 4.8.15 oom_scan_process_thread; back in 4.9.154 via oom_evaluate_task",
    },
    Change {
        id: ChangeId::UnifiedEvaluateTask,
        summary: "memcg OOM goes through out_of_memory()/oom_evaluate_task() (shared with global)",
        mainline: v(4, 9, 0),
        backports: &[],
        source: "§4.1, §4.2: Davydov's dedup; 4.9.154",
    },
    Change {
        id: ChangeId::MemcgTotalpagesSwapMax,
        summary: "memcg totalpages = min(max + min(swap.max, total_swap), memsw.max) when swappiness != 0",
        mainline: v(4, 9, 0),
        backports: &[],
        source: "§5.2: 4.9 – 5.9",
    },
    Change {
        id: ChangeId::OomGroup,
        summary: "cgroup v2 memory.oom.group kills the whole group",
        mainline: v(4, 19, 0),
        backports: &[],
        source: "§4.9: 4.19.78 … 6.18.2 mem_cgroup_get_oom_group",
    },
    Change {
        id: ChangeId::SacrificeChildRemoved,
        summary: "no 'sacrifice child': the chosen task itself is killed",
        mainline: v(5, 1, 0),
        backports: &[],
        source: "§4.8: bbbe48029720; present 5.0.1, absent 5.2.1",
    },
    Change {
        id: ChangeId::ProcsScanNoLeaderPreference,
        summary: "memcg scans processes (CSS_TASK_ITER_PROCS); leader preference removed: the last equal task wins; oom_badness() takes 2 arguments",
        mainline: v(5, 3, 0),
        backports: &[],
        source: "§2.1, §4.1, §4.5: 5.2.1 vs 5.3.1",
    },
    Change {
        id: ChangeId::BadnessSigned,
        summary: "oom_badness() returns long: LONG_MIN is ineligible, no floor of 1; /proc oom_score = (1000 + B*1000/T)*2/3",
        mainline: v(5, 9, 0),
        backports: &[v(5, 4, 144)],
        source: "§0.2, §2.2 step 7, §3: 9066e5cfb73c; 5.4.y push log lists it in 5.4.144; absent 5.4.59",
    },
    Change {
        id: ChangeId::MemcgTotalpagesSplit,
        summary: "memcg totalpages: v2 max + min(swap.max, total_swap); v1 max + min(memsw.max - max, total_swap)",
        mainline: v(5, 10, 0),
        backports: &[],
        source: "§5.2: 5.10 – 6.0",
    },
    Change {
        id: ChangeId::OomAdjReadClamp,
        summary: "reading /proc/PID/oom_adj is clamped to 15",
        mainline: v(5, 10, 0),
        backports: &[],
        source: "§3: absent 5.9.1, present 5.10.89",
    },
    Change {
        id: ChangeId::PagefaultNoGlobalOom,
        summary: "VM_FAULT_OOM from a user page fault no longer calls the global OOM killer",
        mainline: v(5, 16, 0),
        // 5.10.89 and 5.15.135 are the first trees of their series seen with
        // it (exact sublevels unverified); 4.14.y pushed it on 2021-11-19
        // (≈ 4.14.256, unverified).
        // 5.10.80: Debian's linux-source-5.10 changelog (kernels-5.10-to-7.3.md §7).
        backports: &[v(5, 4, 160), v(5, 10, 80), v(5, 15, 135), v(4, 14, 256)],
        source: "§0.2, §7.7: 60e2793d440a, 0b28179a6138; review 5.4.160-rc2; kernels-5.10-to-7.3.md §7",
    },
    Change {
        id: ChangeId::ReaperDelay,
        summary: "the OOM reaper starts 2 s after the kill (OOM_REAPER_DELAY)",
        mainline: v(5, 18, 0),
        // Seen in 5.4.195 and 5.15.135; first sublevels unverified. 5.10.113:
        // Debian's linux-source-5.10 changelog (kernels-5.10-to-7.3.md §7).
        backports: &[v(5, 4, 195), v(5, 10, 113), v(5, 15, 135)],
        source: "§0.2, §4.3: absent 5.10.89; kernels-5.10-to-7.3.md §1, §7",
    },
    Change {
        id: ChangeId::MemcgTotalpagesMemswAccount,
        summary: "memcg totalpages splits on do_memsw_account() rather than on the cgroup version",
        mainline: v(6, 1, 0),
        backports: &[],
        source: "§5.2: ≥ 6.1",
    },
    Change {
        id: ChangeId::PercpuRssCounters,
        summary: "mm rss counters are percpu_counters; OOM scoring reads the approximate global part",
        mainline: v(6, 2, 0),
        backports: &[],
        source: "§2.3: f1a7941243c1",
    },
    Change {
        id: ChangeId::MarkVictimFields,
        summary: "oom:mark_victim carries comm, rss, uid, pgtables and oom_score_adj",
        // Mainline ≈ 6.9 (exact version unverified); stable 6.1 from 6.1.130.
        mainline: v(6, 9, 0),
        backports: &[v(6, 1, 130)],
        source: "§0.2, §8.1",
    },
    Change {
        id: ChangeId::ProcStatusPreciseRss,
        summary: "/proc/PID/status rss is the precise per-CPU sum while OOM scoring stays approximate",
        // 82241a83cd15, mainline ≈ 6.16 (unverified): absent 6.12.0, present 6.18.2.
        // 6.12.117: observed in Debian's 6.12.117+deb12 guest (`cargo xtask
        // vm-test`) before the sublevel was known: idle tasks' /proc/PID/oom_score stayed 1 off the model
        // read from /proc/PID/status, in both directions, pass after pass. The
        // first 6.12.y carrying it is unverified; Debian's 6.1.0-56 (6.1.192)
        // showed no such difference.
        // 6.12.39: the stable announcement of 2025-07-17 lists 82241a83cd15
        // (kernels-5.10-to-7.3.md §7).
        mainline: v(6, 16, 0),
        backports: &[v(6, 12, 39)],
        source: "§2.3; kernels-5.10-to-7.3.md §2.1, §7",
    },
    Change {
        id: ChangeId::ConstraintPresentPages,
        summary: "cpuset/mempolicy totalpages counts node_present_pages (spanned before)",
        mainline: v(5, 4, 0),
        backports: &[],
        source: "§5.1: 5.3.1 spanned, 5.4.59 present",
    },
    Change {
        id: ChangeId::NoFsGateMemcgExempt,
        summary: "the !__GFP_FS 'no kill' shortcut of out_of_memory() does not apply to memcg OOMs",
        mainline: v(4, 14, 0),
        backports: &[],
        source: "§6.2: 4.9 `gfp && !(gfp & (__GFP_FS|__GFP_NOFAIL))`, 4.14 `… && !is_memcg_oom`",
    },
    Change {
        id: ChangeId::NoFsGateWithoutGfpZero,
        summary: "gfp 0 (page-fault OOM) no longer passes the !__GFP_FS test of out_of_memory()",
        // Between 6.1.20 and 6.6.9 (unverified which release).
        mainline: v(6, 6, 0),
        backports: &[],
        source: "§6.1 step 4",
    },
    Change {
        id: ChangeId::PanicOnOomSparesSysrq,
        summary: "vm.panic_on_oom never panics for sysrq-f",
        mainline: v(4, 4, 0),
        backports: &[],
        source: "§6.1 step 6, §6.2: 3.10 does not exempt sysrq",
    },
    Change {
        id: ChangeId::NoKillableDeadlockPanic,
        summary: "nothing killable in a global OOM panics with \"System is deadlocked on memory\"",
        mainline: v(4, 19, 0),
        backports: &[],
        source: "§6.1 step 9: absent 4.14.177 (which panics \"Out of memory and no killable processes...\")",
    },
    Change {
        id: ChangeId::OomKillAllocatingSkipsMemcg,
        summary: "vm.oom_kill_allocating_task applies to global OOMs only",
        mainline: v(4, 9, 0),
        backports: &[],
        source: "§4.10",
    },
    Change {
        id: ChangeId::OomKillAllocatingCpuset,
        summary: "vm.oom_kill_allocating_task also requires current to be cpuset-eligible",
        mainline: v(5, 3, 0),
        backports: &[],
        source: "§4.10",
    },
    Change {
        id: ChangeId::SharersWithAdjMinKilled,
        summary: "processes sharing the victim's mm are killed even with oom_score_adj -1000",
        // 3.10 and 4.4 skip -1000 sharers; 4.9 does not (first tree seen).
        mainline: v(4, 9, 0),
        backports: &[],
        source: "§4.6 step 4",
    },
    Change {
        id: ChangeId::WatermarkScaleFactor,
        summary: "low/high watermarks spaced by max(tmp/4, managed × watermark_scale_factor / 10000)",
        mainline: v(4, 6, 0),
        backports: &[],
        source: "§7.5: 3.10.108/4.4.155 use tmp/4 and tmp/2",
    },
    Change {
        id: ChangeId::WatermarkBoost,
        summary: "every watermark getter adds zone->watermark_boost",
        mainline: v(5, 0, 0),
        backports: &[],
        source: "§7.3, §7.5",
    },
    Change {
        id: ChangeId::MinFreeKbytesCap262144,
        summary: "default min_free_kbytes is clamped to [128, 262144] (65536 before)",
        mainline: v(5, 10, 0),
        backports: &[],
        source: "§7.5: 5.4.286 vs 5.10.89",
    },
    Change {
        id: ChangeId::LowmemReserveSkipsEmptyZone,
        summary: "lowmem_reserve of a zone without managed pages is 0",
        mainline: v(5, 10, 0),
        backports: &[],
        source: "§7.5",
    },
    Change {
        id: ChangeId::WatermarkPromo,
        summary: "zones get a fourth watermark, promo = high + d",
        mainline: v(6, 1, 0),
        backports: &[],
        source: "§7.5",
    },
    Change {
        id: ChangeId::ReclaimRetryRework,
        summary: "OOM detection rework: should_reclaim_retry() with MAX_RECLAIM_RETRIES = 16 and a watermark check on reclaimable + free",
        mainline: v(4, 7, 0),
        backports: &[],
        source: "§7.1, §7.3: present 4.9.154, absent 4.4.155 (which OOMs when a reclaim pass made no progress)",
    },
    Change {
        id: ChangeId::NofailNoLongerBypassesOomGates,
        summary: "__GFP_NOFAIL no longer skips the __alloc_pages_may_oom() gates",
        mainline: v(4, 14, 0),
        backports: &[],
        source: "§7.2 table: yes in 3.10/4.4/4.9, no from 4.14",
    },
    Change {
        id: ChangeId::RetryMayfailOomGate,
        summary: "__GFP_RETRY_MAYFAIL allocations never invoke the OOM killer",
        mainline: v(4, 14, 0),
        backports: &[],
        source: "§7.2 table",
    },
    Change {
        id: ChangeId::MemcgSyncOomKill,
        summary: "the memcg charge path kills synchronously (before: only at the end of a page fault; other charges fail)",
        mainline: v(4, 19, 0),
        backports: &[],
        source: "§7.6: 4.19.78",
    },
    Change {
        id: ChangeId::MemcgReclaimRetries16,
        summary: "memcg charge reclaim retries 16 times (MAX_RECLAIM_RETRIES; 5 before)",
        mainline: v(5, 9, 0),
        backports: &[],
        source: "§7.6: 5.4.286 vs 5.9.1",
    },
    // 6.18 → 7.3: kernels-5.10-to-7.3.md (Debian's 5.10.218, 6.1.192,
    // 6.12.107, 7.2.13, 7.3.4 source packages and the 6.18.2, 6.19.0,
    // 7.0.0, 7.1.5 trees, and the BTF of Debian's builds).
    Change {
        id: ChangeId::MmFlagsType,
        summary: "mm->flags is mm_flags_t (a one-word bitmap), same storage; MMF_OOM_SKIP stays bit 21",
        mainline: v(6, 18, 0),
        backports: &[],
        source: "kernels-5.10-to-7.3.md §4.2: BTF ulong in 6.17.13, mm_flags_t in 6.18.15",
    },
    Change {
        id: ChangeId::ReportMemcgProtection,
        summary: "the OOM report gains 'Memory cgroup min protection …kB -- low protection …kB' (cgroup v2) before the task table",
        mainline: v(6, 19, 0),
        backports: &[],
        source: "kernels-5.10-to-7.3.md §2.3: bc8e51c05ad5",
    },
    Change {
        id: ChangeId::PreciseOomRss,
        summary: "oom_badness, /proc/PID/oom_score, the task table, the Killed and reaper lines use precise per-CPU rss sums (get_mm_rss_sum)",
        // 5898aa8f9a0b; not in 6.12.y up to 6.12.118; 6.18.y unverified.
        mainline: v(7, 0, 0),
        backports: &[],
        source: "kernels-5.10-to-7.3.md §2.1: approximate in 6.19.0, precise in 7.0.0, 7.1.5, 7.2.13, 7.3.4",
    },
    Change {
        id: ChangeId::MemcgScanSkipsExiting,
        summary: "a memcg OOM scan no longer sees processes whose threads have all exited (css_task_iter skips them), so their pending victim does not abort it",
        // a72f73c4dd9b, "Cc: stable # v6.19+"; the 6.19.y sublevel is unverified.
        mainline: v(7, 0, 0),
        backports: &[],
        source: "kernels-5.10-to-7.3.md §2.4 (code reading; runtime unverified)",
    },
    Change {
        id: ChangeId::ReportMemInfoGpu,
        summary: "the report's per-node Mem-Info line gains gpu_active and gpu_reclaim",
        mainline: v(7, 1, 0),
        backports: &[],
        source: "kernels-5.10-to-7.3.md §2.3: tree diff 7.0.0 → 7.1.5",
    },
    Change {
        id: ChangeId::VmscanReclaimTracepointsMemcg,
        summary: "vmscan reclaim begin/end tracepoints carry the memcg id: begin is (gfp_flags, memcg_id, order), end (nr_reclaimed, memcg_id)",
        mainline: v(7, 1, 0),
        backports: &[],
        source: "kernels-5.10-to-7.3.md §2.9, §4.3: btf_trace_* from 7.1.13",
    },
    Change {
        id: ChangeId::AllocStallWarning,
        summary: "a page allocation stalled 10 s prints '<comm>: page allocation stall for N secs' (at most one per 10 s)",
        mainline: v(7, 2, 0),
        backports: &[],
        source: "kernels-5.10-to-7.3.md §2.3: 7.2.13 mm/page_alloc.c:4746",
    },
    Change {
        id: ChangeId::OomVictimChargeBypass,
        summary: "an OOM victim whose mm the reaper is done with (MMF_OOM_SKIP) fails its own memcg charges at once: no reclaim, no max event, no second OOM",
        // Present 7.2.13 (via stable), absent 7.1.5; Debian 6.12.117; the
        // 6.18.y push of 2026-09-14 (6.18.50, sublevel unverified).
        mainline: v(7, 3, 0),
        backports: &[v(7, 2, 13), v(6, 18, 50), v(6, 12, 117)],
        source: "kernels-5.10-to-7.3.md §2.6: 7.2.13 mm/memcontrol.c:2660",
    },
    Change {
        id: ChangeId::MemcgMaxOnRejectedCharge,
        summary: "memory.events 'max' also counts charges rejected without reclaim",
        mainline: v(7, 3, 0),
        backports: &[v(6, 12, 118)],
        source: "kernels-5.10-to-7.3.md §2.6: 7.3.4, Debian 6.12.118 changelog",
    },
];

/// The newest kernel whose source the model was read against. A newer
/// release gets its rules, and says so ([`KernelBehavior::newer_than_read`]).
pub const NEWEST_READ: KernelVersion = v(7, 3, 4);

/// The [`Change`] named `id`.
pub fn change(id: ChangeId) -> &'static Change {
    CHANGES
        .iter()
        .find(|c| c.id == id)
        .expect("every ChangeId has an entry in CHANGES")
}

/// How the page-table term of `oom_badness` is counted.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum PageTableTerm {
    /// 3.10: `mm->nr_ptes`.
    NrPtes,
    /// 4.0 – 4.14: `nr_ptes + mm_nr_pmds(mm)`.
    NrPtesPlusPmds,
    /// 4.15+: `mm_pgtables_bytes(mm) / PAGE_SIZE`.
    Bytes,
}

/// What `oom_badness` returns for an eligible task, and for an ineligible one.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum BadnessReturn {
    /// ≤ 5.8 (and 5.4.0 – 5.4.143): unsigned, at least 1; 0 = ineligible.
    FloorOne,
    /// ≥ 5.9 (and 5.4.144+): signed, unchanged; LONG_MIN = ineligible.
    Signed,
}

/// `/proc/PID/oom_score` formula (kernel-oom.md §3).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum ProcScoreFormula {
    /// `B * 1000 / T`, unsigned (≤ 5.8, 5.4.0 – 5.4.143).
    Scaled,
    /// `(1000 + B * 1000 / T) * 2 / 3`, signed; 0 when ineligible.
    Shifted,
}

/// What a scan walks.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum ScanUnit {
    /// Every thread (`for_each_process_thread`, css_task_iter without PROCS).
    Threads,
    /// Thread-group leaders (`for_each_process`, CSS_TASK_ITER_PROCS).
    Processes,
}

/// Who wins among equal maximal points.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum TieBreak {
    /// Replace only on strictly greater points: the first one seen wins (3.10).
    First,
    /// Replace on equal points unless the current choice is a thread-group
    /// leader (4.4 – 5.2).
    KeepLeader,
    /// Replace on equal points: the last one seen wins (4.8 global, ≥ 5.3).
    Last,
}

/// How a memcg's OOM `totalpages` is derived from its limits (§5.2).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum MemcgTotalpagesRule {
    /// ≤ 4.8: `L = limit`; if swappiness: `min(L + total_swap, memsw.limit)`.
    LimitPlusSwapCappedByMemsw,
    /// 4.9 – 5.9: `max`; if swappiness: `min(max + min(swap.max, total_swap), memsw.max)`.
    SwapMaxCappedByMemsw,
    /// 5.10 – 6.0 (split on cgroup version) and ≥ 6.1 (split on memsw
    /// accounting): v2 `max + min(swap.max, total_swap)`; v1 `max + min(memsw.max − max, total_swap)`.
    Split,
}

/// The OOM rules of one exact kernel version, derived from [`CHANGES`].
#[derive(Debug, Clone, Serialize)]
pub struct KernelBehavior {
    pub version: KernelVersion,
    /// MM_SHMEMPAGES is a separate counter in `get_mm_rss()` (else it is inside MM_FILEPAGES).
    pub shmem_counter: bool,
    pub page_tables: PageTableTerm,
    /// CAP_SYS_ADMIN tasks lose 3 % of their points (before the adj term).
    pub admin_bonus: bool,
    /// Before 3.14: the bonus is `adj -= 30` instead (3 % of totalpages).
    pub admin_bonus_on_adj: bool,
    pub badness_return: BadnessReturn,
    pub proc_score: ProcScoreFormula,
    pub vfork_ineligible: bool,
    pub reaped_mm_skipped: bool,
    pub global_scan: ScanUnit,
    pub memcg_scan: ScanUnit,
    pub global_tie: TieBreak,
    pub memcg_tie: TieBreak,
    pub sacrifice_child: bool,
    pub oom_group: bool,
    /// 4.9 – 5.2: the cpuset/mempolicy test of `oom_unkillable_task` also
    /// filters memcg scans.
    pub memcg_cpuset_filter: bool,
    pub memcg_totalpages: MemcgTotalpagesRule,
    /// ≥ 6.1: the memcg totalpages split is decided by memsw accounting, not by the cgroup version.
    pub memcg_split_on_memsw_account: bool,
    pub oom_adj_read_clamp: bool,
    pub pagefault_global_oom: bool,
    pub reaper_delay: bool,
    /// OOM scoring uses approximate per-CPU rss counters (6.2 – 6.19):
    /// `max(0, fbc->count)`.
    pub approximate_rss: bool,
    /// OOM scoring uses the precise per-CPU sums (7.0+).
    pub precise_rss_sums: bool,
    /// `/proc/PID/status` shows the precise sum, so it may differ from what
    /// OOM scores where scoring is approximate.
    pub proc_rss_precise: bool,
    /// A memcg scan skips processes whose threads have all exited.
    pub memcg_scan_skips_exiting: bool,
    /// Set when this release is newer than [`NEWEST_READ`]: the model uses
    /// the newest rules it knows, unverified for this kernel.
    pub newer_than_read: Option<KernelVersion>,
}

impl KernelBehavior {
    /// Whether this kernel carries change `id`.
    pub fn has(&self, id: ChangeId) -> bool {
        change(id).applies(self.version)
    }

    pub fn for_version(ver: KernelVersion) -> Self {
        let has = |id| change(id).applies(ver);
        let leader = has(ChangeId::LeaderPreference);
        let procs = has(ChangeId::ProcsScanNoLeaderPreference);
        let global_tie = if procs {
            TieBreak::Last
        } else if ver.major == 4 && ver.minor == 8 {
            // 4.8's own global loop (oom_scan_process_thread) dropped the
            // leader preference; 4.9 restored it through oom_evaluate_task.
            TieBreak::Last
        } else if leader {
            TieBreak::KeepLeader
        } else {
            TieBreak::First
        };
        let memcg_tie = if procs {
            TieBreak::Last
        } else if leader {
            TieBreak::KeepLeader
        } else {
            TieBreak::First
        };
        let signed = has(ChangeId::BadnessSigned);
        KernelBehavior {
            version: ver,
            shmem_counter: has(ChangeId::ShmemRssCounter),
            page_tables: if has(ChangeId::PgtablesBytes) {
                PageTableTerm::Bytes
            } else if has(ChangeId::PmdsInPageTables) {
                PageTableTerm::NrPtesPlusPmds
            } else {
                PageTableTerm::NrPtes
            },
            admin_bonus: !has(ChangeId::AdminBonusRemoved),
            admin_bonus_on_adj: !has(ChangeId::RootBonusOnUsage),
            badness_return: if signed {
                BadnessReturn::Signed
            } else {
                BadnessReturn::FloorOne
            },
            proc_score: if signed {
                ProcScoreFormula::Shifted
            } else {
                ProcScoreFormula::Scaled
            },
            vfork_ineligible: has(ChangeId::VforkIneligible),
            reaped_mm_skipped: has(ChangeId::ReapedMmSkipped),
            global_scan: if has(ChangeId::GlobalScanProcesses) {
                ScanUnit::Processes
            } else {
                ScanUnit::Threads
            },
            memcg_scan: if procs {
                ScanUnit::Processes
            } else {
                ScanUnit::Threads
            },
            global_tie,
            memcg_tie,
            sacrifice_child: !has(ChangeId::SacrificeChildRemoved),
            oom_group: has(ChangeId::OomGroup),
            memcg_cpuset_filter: has(ChangeId::UnifiedEvaluateTask) && !procs,
            memcg_totalpages: if has(ChangeId::MemcgTotalpagesSplit) {
                MemcgTotalpagesRule::Split
            } else if has(ChangeId::MemcgTotalpagesSwapMax) {
                MemcgTotalpagesRule::SwapMaxCappedByMemsw
            } else {
                MemcgTotalpagesRule::LimitPlusSwapCappedByMemsw
            },
            memcg_split_on_memsw_account: has(ChangeId::MemcgTotalpagesMemswAccount),
            oom_adj_read_clamp: has(ChangeId::OomAdjReadClamp),
            pagefault_global_oom: !has(ChangeId::PagefaultNoGlobalOom),
            reaper_delay: has(ChangeId::ReaperDelay),
            approximate_rss: has(ChangeId::PercpuRssCounters) && !has(ChangeId::PreciseOomRss),
            precise_rss_sums: has(ChangeId::PreciseOomRss),
            proc_rss_precise: has(ChangeId::ProcStatusPreciseRss),
            memcg_scan_skips_exiting: has(ChangeId::MemcgScanSkipsExiting),
            newer_than_read: ((ver.major, ver.minor) > (NEWEST_READ.major, NEWEST_READ.minor))
                .then_some(NEWEST_READ),
        }
    }
}

/// One change of [`CHANGES`] as `check` and `predict --json` show it: does
/// this kernel have it, and why.
#[derive(Debug, Clone, Serialize)]
pub struct RuleRow {
    pub id: ChangeId,
    pub applies: bool,
    pub summary: &'static str,
    /// The version comparison that decided it.
    pub why: String,
}

/// The rules the model applies to one kernel, and where they come from.
#[derive(Debug, Clone, Serialize)]
pub struct Rules {
    /// `major.minor.sublevel`.
    pub version: String,
    /// Where the version came from (the release, or a distribution's
    /// package version naming the stable sublevel).
    pub version_from: String,
    /// How this kernel's `oom_badness()` reads rss: `atomic` (≤ 6.1, the
    /// shared atomic counters), `approximate` (6.2 – 6.19: `fbc->count`),
    /// `precise_sums` (7.0+: count plus every CPU's delta).
    pub rss_counters: RssCounters,
    /// Why: the release, and what the running kernel's tasks said of it
    /// where they were measured (they decide where the two disagree).
    pub rss_counters_from: String,
    /// Set for a release newer than the newest the model was read against.
    pub note: Option<String>,
    /// What the running kernel's tasks say of its rss counters, where they
    /// were measured (`oomwatch check`); None where not measured.
    pub measured: Option<super::score::CountersMeasured>,
    /// Every change the model knows, oldest first.
    pub changes: Vec<RuleRow>,
}

/// How a kernel's `oom_badness()` reads a task's rss counters.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum RssCounters {
    /// ≤ 6.1: the shared atomic counters, exact.
    Atomic,
    /// 6.2 – 6.19: the percpu counters' global part (`fbc->count`).
    Approximate,
    /// 7.0+: the percpu counters' global part plus every CPU's delta.
    PreciseSums,
}

impl std::fmt::Display for RssCounters {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            RssCounters::Atomic => "atomic",
            RssCounters::Approximate => "approximate",
            RssCounters::PreciseSums => "precise_sums",
        })
    }
}

impl KernelBehavior {
    /// How `oom_badness()` reads rss on this kernel (see [`Rules::rss_counters`]).
    pub fn rss_counters(&self) -> RssCounters {
        if self.precise_rss_sums {
            RssCounters::PreciseSums
        } else if self.approximate_rss {
            RssCounters::Approximate
        } else {
            RssCounters::Atomic
        }
    }

    /// These rules with the rss counters the running kernel was seen to
    /// score with, where that differs from what its release says (a stable
    /// or vendor backport of 7.0's precise sums, or a kernel without it).
    /// Only between the two percpu readings: a kernel whose release says
    /// atomic counters has no per-CPU parts to read either way.
    pub fn with_rss_counters(mut self, seen: RssCounters) -> Self {
        if self.rss_counters() != RssCounters::Atomic && seen != RssCounters::Atomic {
            self.approximate_rss = seen == RssCounters::Approximate;
            self.precise_rss_sums = seen == RssCounters::PreciseSums;
        }
        self
    }

    /// The rules for this kernel, each with its reason.
    pub fn rules(&self, version_from: &str) -> Rules {
        let ver = self.version;
        let mut changes: Vec<RuleRow> = CHANGES
            .iter()
            .map(|c| {
                let series = c
                    .backports
                    .iter()
                    .find(|b| b.major == ver.major && b.minor == ver.minor);
                let why = if ver >= c.mainline {
                    format!("{ver} ≥ {} (mainline)", c.mainline)
                } else {
                    match series {
                        Some(b) if ver.in_series_from(*b) => {
                            format!(
                                "backported to {}.{}.y at {b}; {ver} ≥ {b}",
                                b.major, b.minor
                            )
                        }
                        Some(b) => format!(
                            "{ver} < {} (mainline) and < {b} (its {}.{}.y backport)",
                            c.mainline, b.major, b.minor
                        ),
                        None => format!(
                            "{ver} < {} (mainline); no {}.{}.y backport known",
                            c.mainline, ver.major, ver.minor
                        ),
                    }
                };
                RuleRow {
                    id: c.id,
                    applies: c.applies(ver),
                    summary: c.summary,
                    why,
                }
            })
            .collect();
        changes.sort_by_key(|r| change(r.id).mainline);
        Rules {
            version: ver.to_string(),
            version_from: version_from.to_owned(),
            rss_counters: self.rss_counters(),
            rss_counters_from: format!(
                "the release: {}",
                release_rss_reason(ver, self.rss_counters())
            ),
            note: self.newer_than_read.map(|n| {
                format!(
                    "Linux {ver} is newer than the newest kernel the model was read against ({n}): \
                     it applies that kernel's rules, unverified here"
                )
            }),
            measured: None,
            changes,
        }
    }
}

/// Why the release alone gives these rss counters.
fn release_rss_reason(ver: KernelVersion, counters: RssCounters) -> String {
    let percpu = change(ChangeId::PercpuRssCounters).mainline;
    let precise = change(ChangeId::PreciseOomRss).mainline;
    match counters {
        RssCounters::Atomic => format!("Linux {ver} < {percpu}: the counters are atomics"),
        RssCounters::Approximate => {
            format!("Linux {ver} < {precise}: oom_badness reads the percpu counters' global part")
        }
        RssCounters::PreciseSums => {
            format!("Linux {ver} ≥ {precise}: oom_badness sums every CPU's part")
        }
    }
}

impl Rules {
    /// Takes what the running kernel's tasks said of its rss counters
    /// (`measured`, and its verdict `says`): where they say the other
    /// percpu reading than the release, they decide, and the reason says
    /// both. Returns the counters to score with where they changed.
    pub fn follow_measurement(
        &mut self,
        measured: super::score::CountersMeasured,
        says: Option<RssCounters>,
    ) -> Option<RssCounters> {
        let release = self.rss_counters;
        let changed = match says {
            Some(seen) if release != RssCounters::Atomic && seen != release => {
                self.rss_counters_from = format!(
                    "measured: {}; the release says {release} ({}), so this kernel carries a \
                     backport its version does not show",
                    measured.verdict,
                    self.rss_counters_from.trim_start_matches("the release: ")
                );
                self.rss_counters = seen;
                Some(seen)
            }
            Some(_) if release == RssCounters::Atomic => {
                self.rss_counters_from = format!(
                    "{}; measured: {} (not followed: atomics have no per-CPU parts)",
                    self.rss_counters_from, measured.verdict
                );
                None
            }
            Some(_) => {
                self.rss_counters_from = format!(
                    "{}; measured, and agreeing: {}",
                    self.rss_counters_from, measured.verdict
                );
                None
            }
            None => {
                self.rss_counters_from = format!(
                    "{}; measured, no verdict: {}",
                    self.rss_counters_from, measured.verdict
                );
                None
            }
        };
        self.measured = Some(measured);
        changed
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_change_id_has_one_entry() {
        let mut seen = std::collections::HashSet::new();
        for c in CHANGES {
            assert!(seen.insert(c.id), "{:?} listed twice", c.id);
            for b in c.backports {
                assert!(
                    *b < c.mainline,
                    "{:?}: backport {b} is not before {}",
                    c.id,
                    c.mainline
                );
            }
        }
    }

    /// The one-page summary of kernel-oom.md §1, row by row, for the trees the
    /// spec was read from.
    #[test]
    fn families_match_the_summary_table() {
        use BadnessReturn::*;
        use PageTableTerm::*;
        use ScanUnit::*;
        use TieBreak::*;
        type Row = (
            KernelVersion,
            PageTableTerm,
            bool,
            BadnessReturn,
            ScanUnit,
            ScanUnit,
            TieBreak,
            bool,
            bool,
        );
        #[rustfmt::skip]
        let rows: &[Row] = &[
            //  version        pt              bonus  ret        global     memcg      tie(global) child  pf→global
            (v(3, 10, 108), NrPtes,         true,  FloorOne, Threads,   Threads,   First,      true,  true),
            (v(4, 4, 155),  NrPtesPlusPmds, true,  FloorOne, Threads,   Threads,   KeepLeader, true,  true),
            (v(4, 9, 154),  NrPtesPlusPmds, true,  FloorOne, Processes, Threads,   KeepLeader, true,  true),
            (v(4, 14, 177), NrPtesPlusPmds, true,  FloorOne, Processes, Threads,   KeepLeader, true,  true),
            (v(4, 19, 78),  Bytes,          false, FloorOne, Processes, Threads,   KeepLeader, true,  true),
            (v(5, 4, 59),   Bytes,          false, FloorOne, Processes, Processes, Last,       false, true),
            (v(5, 4, 195),  Bytes,          false, Signed,   Processes, Processes, Last,       false, false),
            (v(5, 10, 89),  Bytes,          false, Signed,   Processes, Processes, Last,       false, false),
            (v(5, 15, 135), Bytes,          false, Signed,   Processes, Processes, Last,       false, false),
            (v(6, 1, 20),   Bytes,          false, Signed,   Processes, Processes, Last,       false, false),
            (v(6, 18, 44),  Bytes,          false, Signed,   Processes, Processes, Last,       false, false),
        ];
        for &(ver, pt, bonus, ret, global, memcg, tie, child, pf) in rows {
            let kb = KernelBehavior::for_version(ver);
            assert_eq!(kb.page_tables, pt, "{ver} page tables");
            assert_eq!(kb.admin_bonus, bonus, "{ver} bonus");
            assert_eq!(kb.badness_return, ret, "{ver} return");
            assert_eq!(kb.global_scan, global, "{ver} global scan");
            assert_eq!(kb.memcg_scan, memcg, "{ver} memcg scan");
            assert_eq!(kb.global_tie, tie, "{ver} tie");
            assert_eq!(kb.sacrifice_child, child, "{ver} sacrifice child");
            assert_eq!(kb.pagefault_global_oom, pf, "{ver} page fault → global OOM");
        }
    }

    /// How each kernel of the guest matrix scores rss (kernels-5.10-to-7.3.md
    /// §2.1 table): atomic ≤ 6.1, approximate 6.2 – 6.19, precise sums 7.0+.
    #[test]
    fn rss_precision_per_debian_kernel() {
        #[rustfmt::skip]
        let rows = [
            // version        approximate precise proc precise skips exiting
            (v(5, 10, 262), false, false, false, false),
            (v(6, 1, 192),  false, false, false, false),
            (v(6, 12, 118), true,  false, true,  false),
            (v(6, 18, 44),  true,  false, true,  false),
            (v(6, 19, 14),  true,  false, true,  false),
            (v(7, 0, 13),   false, true,  true,  true),
            (v(7, 3, 4),    false, true,  true,  true),
        ];
        for (ver, approx, precise, proc_precise, skips) in rows {
            let kb = KernelBehavior::for_version(ver);
            assert_eq!(kb.approximate_rss, approx, "{ver} approximate");
            assert_eq!(kb.precise_rss_sums, precise, "{ver} precise sums");
            assert_eq!(kb.proc_rss_precise, proc_precise, "{ver} /proc precise");
            assert_eq!(kb.memcg_scan_skips_exiting, skips, "{ver} memcg scan");
            assert_eq!(kb.newer_than_read, None, "{ver} is read");
        }
        assert_eq!(
            KernelBehavior::for_version(v(7, 3, 9)).newer_than_read,
            None
        );
        let next = KernelBehavior::for_version(v(7, 4, 0));
        assert_eq!(next.newer_than_read, Some(NEWEST_READ));
        assert!(
            next.precise_rss_sums,
            "a newer release gets the newest rules"
        );
        let ch = change(ChangeId::OomVictimChargeBypass);
        assert!(!ch.applies(v(7, 1, 5)) && ch.applies(v(7, 2, 13)) && ch.applies(v(6, 12, 117)));
        assert!(!ch.applies(v(6, 12, 107)));
    }

    #[test]
    fn rules_say_why() {
        let r = KernelBehavior::for_version(v(5, 10, 262)).rules("Debian's package version");
        assert_eq!(r.rss_counters, RssCounters::Atomic);
        let row = |r: &Rules, id| r.changes.iter().find(|c| c.id == id).unwrap().clone();
        let delay = row(&r, ChangeId::ReaperDelay);
        assert!(
            delay.applies && delay.why.contains("5.10.y at 5.10.113"),
            "{}",
            delay.why
        );
        let precise = row(&r, ChangeId::PreciseOomRss);
        assert!(
            !precise.applies && precise.why.contains("< 7.0.0"),
            "{}",
            precise.why
        );
        let r = KernelBehavior::for_version(v(5, 10, 100)).rules("the release");
        assert!(!row(&r, ChangeId::ReaperDelay).applies);
        assert!(row(&r, ChangeId::ReaperDelay).why.contains("< 5.10.113"));
        let r = KernelBehavior::for_version(v(7, 3, 4)).rules("the release");
        assert_eq!(
            (r.rss_counters, r.note.is_none()),
            (RssCounters::PreciseSums, true)
        );
        assert_eq!(r.changes.len(), CHANGES.len());
        let r = KernelBehavior::for_version(v(7, 5, 1)).rules("the release");
        assert!(r.note.unwrap().contains("newer than the newest kernel"));
        assert_eq!(
            KernelBehavior::for_version(v(6, 12, 118)).rss_counters(),
            RssCounters::Approximate
        );
    }

    /// A measurement decides between the two percpu readings, never for an
    /// atomic kernel, and the reason says the release's rule and the tasks'.
    #[test]
    fn measurement_decides_where_the_release_cannot() {
        use crate::model::score::CountersMeasured;
        let measured = |precise| CountersMeasured {
            precise,
            verdict: format!("{precise} tasks say precise"),
            ..Default::default()
        };
        // A 6.12 with 7.0's precise sums backported.
        let kb = KernelBehavior::for_version(v(6, 12, 118));
        let mut r = kb.rules("the release");
        let seen = r.follow_measurement(measured(5), Some(RssCounters::PreciseSums));
        assert_eq!(seen, Some(RssCounters::PreciseSums));
        assert_eq!(r.rss_counters, RssCounters::PreciseSums);
        assert!(
            r.rss_counters_from
                .starts_with("measured: 5 tasks say precise")
                && r.rss_counters_from.contains("the release says approximate")
                && r.rss_counters_from.contains("Linux 6.12.118 < 7.0.0"),
            "{}",
            r.rss_counters_from
        );
        let kb = kb.with_rss_counters(RssCounters::PreciseSums);
        assert!(kb.precise_rss_sums && !kb.approximate_rss);
        // Agreeing, and undecided: the release's rule stays, said so.
        let mut r = KernelBehavior::for_version(v(7, 3, 4)).rules("the release");
        assert_eq!(
            r.follow_measurement(measured(5), Some(RssCounters::PreciseSums)),
            None
        );
        assert!(
            r.rss_counters_from.contains("agreeing"),
            "{}",
            r.rss_counters_from
        );
        let mut r = KernelBehavior::for_version(v(7, 3, 4)).rules("the release");
        assert_eq!(r.follow_measurement(measured(1), None), None);
        assert!(
            r.rss_counters_from.contains("no verdict"),
            "{}",
            r.rss_counters_from
        );
        // Atomic counters have no per-CPU parts: nothing to follow.
        let kb = KernelBehavior::for_version(v(6, 1, 192));
        let mut r = kb.rules("the release");
        assert_eq!(
            r.follow_measurement(measured(5), Some(RssCounters::PreciseSums)),
            None
        );
        assert_eq!(r.rss_counters, RssCounters::Atomic);
        assert_eq!(
            kb.with_rss_counters(RssCounters::PreciseSums)
                .rss_counters(),
            RssCounters::Atomic
        );
    }

    #[test]
    fn backports_key_on_the_sublevel() {
        let b = change(ChangeId::BadnessSigned);
        assert!(!b.applies(v(5, 4, 143)));
        assert!(b.applies(v(5, 4, 144)));
        assert!(!b.applies(v(5, 8, 18)), "5.8 never got it");
        assert!(b.applies(v(5, 9, 0)));
        let kb = KernelBehavior::for_version(v(4, 8, 15));
        assert_eq!(kb.global_tie, TieBreak::Last, "4.8 global loop");
        assert_eq!(kb.memcg_tie, TieBreak::KeepLeader, "4.8 memcg loop");
        assert!(!KernelBehavior::for_version(v(6, 1, 130)).approximate_rss);
        assert!(KernelBehavior::for_version(v(3, 10, 50)).admin_bonus_on_adj);
        assert!(!KernelBehavior::for_version(v(3, 10, 108)).admin_bonus_on_adj);
        assert!(change(ChangeId::MarkVictimFields).applies(v(6, 1, 130)));
        // Debian's stable sublevels (kernels-5.10-to-7.3.md §7).
        assert!(!KernelBehavior::for_version(v(5, 10, 79)).has(ChangeId::PagefaultNoGlobalOom));
        assert!(KernelBehavior::for_version(v(5, 10, 80)).has(ChangeId::PagefaultNoGlobalOom));
        assert!(!KernelBehavior::for_version(v(5, 10, 112)).reaper_delay);
        assert!(KernelBehavior::for_version(v(5, 10, 113)).reaper_delay);
        assert!(!KernelBehavior::for_version(v(6, 12, 38)).proc_rss_precise);
        assert!(KernelBehavior::for_version(v(6, 12, 39)).proc_rss_precise);
        assert!(!change(ChangeId::MarkVictimFields).applies(v(6, 6, 9)));
    }
}
