//! The OOM sysctls (`/proc/sys/vm`) and what each one means for a prediction:
//! whether an OOM in a domain panics the machine (`check_panic_on_oom()`),
//! kills the allocating task without a scan (`vm.oom_kill_allocating_task`),
//! or kills the scan's victim; whether allocations fail with ENOMEM before
//! any OOM (`vm.overcommit_memory`, `__vm_enough_memory()` in mm/util.c);
//! whether the kernel's report will carry the task table
//! (`vm.oom_dump_tasks`, `dump_header()`); and how far each zone is from
//! its min watermark (kernel-oom.md §4.10, §6.1 steps 6 – 7, §7.5, §9.3).
//!
//! Pure: the sysctls, meminfo's commit counters and the zones come in as
//! plain values; the decisions and the sentences that say them come out.

use serde::Serialize;

use super::{
    behavior::{ChangeId, KernelBehavior},
    oom::{Constraint, OomSysctls},
    watermark::{ZoneSize, lowmem_reserve, setup_per_zone_wmarks},
};

/// What `out_of_memory()` does once it is past its early exits, as far as the
/// sysctls decide it (§6.1 steps 6 – 8).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum OomAction {
    /// `select_bad_process()` chooses, `oom_kill_process()` kills.
    KillVictim,
    /// `check_panic_on_oom()` panics the machine: nobody is killed.
    Panic {
        /// The kernel's panic text.
        message: &'static str,
    },
    /// `vm.oom_kill_allocating_task`: the task whose allocation failed
    /// (`current`) is killed without a scan, unless it is not killable (no
    /// mm, init or a kernel thread, oom_score_adj -1000, or, 5.3+, outside
    /// the OOM's cpuset): then the scan chooses as usual.
    KillAllocatingTask,
}

impl OomAction {
    /// The snake_case name of the JSON's `kind` and of the metric label.
    pub fn kind(&self) -> &'static str {
        match self {
            OomAction::KillVictim => "kill_victim",
            OomAction::Panic { .. } => "panic",
            OomAction::KillAllocatingTask => "kill_allocating_task",
        }
    }
}

/// `check_panic_on_oom()` (mm/oom_kill.c): the panic text when
/// `vm.panic_on_oom` panics this OOM, None when it does not. 0: never;
/// 2 ("compulsory"): every OOM, memcg ones too; any other value acts as 1
/// ("system-wide"): only an unconstrained OOM (CONSTRAINT_NONE), not a
/// memcg, cpuset or mempolicy one. sysrq-f never panics (4.4+).
pub fn check_panic_on_oom(
    panic_on_oom: u8,
    constraint: Constraint,
    sysrq: bool,
    kb: &KernelBehavior,
) -> Option<&'static str> {
    if panic_on_oom == 0 {
        return None;
    }
    if panic_on_oom != 2 && constraint != Constraint::ConstraintNone {
        return None;
    }
    if sysrq && kb.has(ChangeId::PanicOnOomSparesSysrq) {
        return None;
    }
    Some(if panic_on_oom == 2 {
        "Out of memory: compulsory panic_on_oom is enabled"
    } else {
        "Out of memory: system-wide panic_on_oom is enabled"
    })
}

/// Whether `vm.oom_kill_allocating_task` applies to an OOM of `constraint`:
/// `out_of_memory()` tests `!is_memcg_oom(oc) && sysctl_oom_kill_allocating_task`
/// from 4.9 (§4.10); before, memcg OOMs took it too.
pub fn oom_kill_allocating_task_applies(
    oom_kill_allocating_task: bool,
    constraint: Constraint,
    kb: &KernelBehavior,
) -> bool {
    oom_kill_allocating_task
        && (constraint != Constraint::ConstraintMemcg
            || !kb.has(ChangeId::OomKillAllocatingSkipsMemcg))
}

/// What an OOM of `constraint` does under `sysctls` (not sysrq): §6.1
/// step 6 (`check_panic_on_oom`), then step 7 (`oom_kill_allocating_task`),
/// else the scan.
pub fn oom_action(sysctls: OomSysctls, constraint: Constraint, kb: &KernelBehavior) -> OomAction {
    if let Some(message) = check_panic_on_oom(sysctls.panic_on_oom, constraint, false, kb) {
        return OomAction::Panic { message };
    }
    if oom_kill_allocating_task_applies(sysctls.oom_kill_allocating_task, constraint, kb) {
        return OomAction::KillAllocatingTask;
    }
    OomAction::KillVictim
}

/// `vm.overcommit_memory` (include/uapi/linux/mman.h).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum OvercommitPolicy {
    /// 0, `OVERCOMMIT_GUESS`: only an obviously excessive request fails.
    OvercommitGuess,
    /// 1, `OVERCOMMIT_ALWAYS`: every request succeeds.
    OvercommitAlways,
    /// 2, `OVERCOMMIT_NEVER`: commits beyond `CommitLimit` fail.
    OvercommitNever,
}

impl OvercommitPolicy {
    /// The policy of sysctl value `v` (None: not one the kernel accepts).
    pub fn from_sysctl(v: u8) -> Option<Self> {
        match v {
            0 => Some(Self::OvercommitGuess),
            1 => Some(Self::OvercommitAlways),
            2 => Some(Self::OvercommitNever),
            _ => None,
        }
    }
}

/// Every input of [`assess`]: the sysctls as read, meminfo's commit
/// counters, the zones. Bytes and pages as the kernel prints them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KnobInputs {
    pub oom: OomSysctls,
    pub overcommit_memory: u8,
    pub overcommit_ratio: u64,
    pub overcommit_kbytes: u64,
    pub oom_dump_tasks: bool,
    /// meminfo `CommitLimit` and `Committed_AS`, in bytes (None: not there).
    pub commit_limit_bytes: Option<u64>,
    pub committed_as_bytes: Option<u64>,
    /// The watermark sysctls and the zones (None: not readable).
    pub watermarks: Option<WatermarkInputs>,
    pub page_size: u64,
}

/// The watermark setup's inputs and each zone's free pages.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WatermarkInputs {
    pub min_free_kbytes: u64,
    pub watermark_scale_factor: u64,
    pub lowmem_reserve_ratio: Vec<u64>,
    /// Every zone of every node, in node order then zone index order, as
    /// `/proc/zoneinfo` lists them.
    pub zones: Vec<ZoneState>,
}

/// One zone as the headroom needs it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ZoneState {
    pub node: u32,
    pub size: ZoneSize,
    pub free_pages: u64,
    /// What `/proc/zoneinfo` says the kernel set: `min` and the
    /// "protection" line (to check the derivation against).
    pub kernel_min: u64,
    pub kernel_protection: Vec<u64>,
}

/// One sysctl: its value and what it means for this prediction.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Knob {
    pub value: u64,
    pub effect: String,
}

/// `CommitLimit − Committed_AS`: how much more can be committed before
/// `vm.overcommit_memory=2` refuses (negative: already past it).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct CommitHeadroom {
    pub commit_limit_bytes: u64,
    pub committed_as_bytes: u64,
    pub headroom_bytes: i64,
    /// Mode 2: the limit is enforced (allocations fail with ENOMEM before any OOM).
    pub enforced: bool,
}

/// One zone's distance to its min watermark, for a user page.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ZoneHeadroom {
    pub node: u32,
    pub zone: String,
    pub free_pages: u64,
    /// `min_wmark_pages()` as `__setup_per_zone_wmarks()` sets it from the sysctls.
    pub min_pages: u64,
    /// `lowmem_reserve[ZONE_MOVABLE]` as `setup_per_zone_lowmem_reserve()` sets it.
    pub lowmem_reserve_pages: u64,
    /// free − (min + lowmem_reserve): negative when the zone is below it.
    pub headroom_pages: i64,
    pub headroom_bytes: i64,
    /// `/proc/zoneinfo`'s min and protection equal the derivation.
    pub kernel_agrees: bool,
}

/// The watermark sysctls and every zone's headroom.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct WatermarkHeadroom {
    pub min_free_kbytes: u64,
    pub watermark_scale_factor: u64,
    pub lowmem_reserve_ratio: Vec<u64>,
    pub zones: Vec<ZoneHeadroom>,
    /// Σ of the zones' positive headroom: what user allocations can take
    /// before every zone is at its min watermark (direct reclaim, then OOM).
    pub headroom_bytes: u64,
    pub effect: String,
}

/// Every OOM sysctl and what it means for one domain's prediction.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Knobs {
    /// What an OOM in this domain does.
    pub action: OomAction,
    pub panic_on_oom: Knob,
    pub oom_kill_allocating_task: Knob,
    pub overcommit_memory: Knob,
    pub overcommit_ratio: Knob,
    pub overcommit_kbytes: Knob,
    pub oom_dump_tasks: Knob,
    pub commit: Option<CommitHeadroom>,
    /// The host's zones (None for a memcg domain, or unreadable).
    pub watermarks: Option<WatermarkHeadroom>,
    /// What a reader must not miss, one sentence each.
    pub warnings: Vec<String>,
}

/// The knobs as they bear on an OOM of `constraint` (CONSTRAINT_NONE for
/// the host, CONSTRAINT_MEMCG for a memory cgroup).
pub fn assess(input: &KnobInputs, constraint: Constraint, kb: &KernelBehavior) -> Knobs {
    let memcg = constraint == Constraint::ConstraintMemcg;
    let here = if memcg {
        "this memcg's OOM"
    } else {
        "a host-wide OOM"
    };
    let mut warnings = Vec::new();
    let action = oom_action(input.oom, constraint, kb);

    let panic_effect = match (input.oom.panic_on_oom, &action) {
        (0, _) => "the OOM killer kills a task; the machine does not panic".to_owned(),
        (_, OomAction::Panic { message }) => format!(
            "{here} PANICS the machine (\"{message}\"): no task is killed; the victim shown \
             is who the scan would pick otherwise"
        ),
        (_, _) => format!(
            "panics only on an unconstrained (host-wide) OOM; {here} kills a task \
             (memcg, cpuset and mempolicy OOMs do not panic unless it is 2)"
        ),
    };
    if let OomAction::Panic { .. } = action {
        warnings.push(format!(
            "vm.panic_on_oom={}: {here} panics the machine instead of killing a task",
            input.oom.panic_on_oom
        ));
    }

    let allocating = input.oom.oom_kill_allocating_task;
    let allocating_effect = match (&action, allocating) {
        (_, false) => "the victim is chosen by the scan (select_bad_process)".to_owned(),
        (OomAction::KillAllocatingTask, true) => {
            warnings.push(format!(
                "vm.oom_kill_allocating_task=1: {here} kills the task whose allocation failed, \
                 which is unknown until the OOM starts; the scan's victim dies only if that task \
                 is not killable"
            ));
            format!(
                "{here} kills the allocating task (current) without a scan, unless it has no mm, \
                 is init or a kernel thread, has oom_score_adj -1000{}: then the scan's victim",
                if kb.has(ChangeId::OomKillAllocatingCpuset) {
                    " or is outside the OOM's cpuset"
                } else {
                    ""
                }
            )
        }
        (OomAction::Panic { .. }, true) => {
            "not reached: vm.panic_on_oom panics first (out_of_memory step 6 before 7)".to_owned()
        }
        (OomAction::KillVictim, true) => {
            "ignored for memcg OOMs (4.9+): the victim is chosen by the scan".to_owned()
        }
    };

    let policy = OvercommitPolicy::from_sysctl(input.overcommit_memory);
    let commit = match (input.commit_limit_bytes, input.committed_as_bytes) {
        (Some(limit), Some(committed)) => Some(CommitHeadroom {
            commit_limit_bytes: limit,
            committed_as_bytes: committed,
            headroom_bytes: i64::try_from(limit)
                .unwrap_or(i64::MAX)
                .saturating_sub(i64::try_from(committed).unwrap_or(i64::MAX)),
            enforced: policy == Some(OvercommitPolicy::OvercommitNever),
        }),
        _ => None,
    };
    let overcommit_effect = match policy {
        Some(OvercommitPolicy::OvercommitGuess) => {
            "heuristic overcommit (OVERCOMMIT_GUESS): only a single request larger than RAM + swap \
             fails with ENOMEM; memory runs out through page faults, so the OOM killer is the limit"
                .to_owned()
        }
        Some(OvercommitPolicy::OvercommitAlways) => {
            "always overcommit (OVERCOMMIT_ALWAYS): no request fails with ENOMEM; the OOM killer is \
             the limit"
                .to_owned()
        }
        Some(OvercommitPolicy::OvercommitNever) => {
            let room = commit.as_ref().map_or_else(
                || "CommitLimit and Committed_AS are not in /proc/meminfo".to_owned(),
                |c| {
                    format!(
                        "headroom {} bytes (CommitLimit {} − Committed_AS {})",
                        c.headroom_bytes, c.commit_limit_bytes, c.committed_as_bytes
                    )
                },
            );
            warnings.push(format!(
                "vm.overcommit_memory=2: allocations (mmap, brk, fork) beyond CommitLimit fail \
                 with ENOMEM before any OOM; {room}"
            ));
            format!(
                "strict (OVERCOMMIT_NEVER): a commit beyond CommitLimit fails with ENOMEM before \
                 memory runs out (tasks without CAP_SYS_ADMIN also leave vm.admin_reserve_kbytes); \
                 an OOM then comes only from memory the commit does not count (kernel, page \
                 cache, memcg limits); {room}"
            )
        }
        None => format!(
            "{} is not a mode this kernel knows (0, 1, 2)",
            input.overcommit_memory
        ),
    };
    let strict = policy == Some(OvercommitPolicy::OvercommitNever);
    let matters = if strict {
        "sets CommitLimit"
    } else {
        "would set CommitLimit in mode 2 (not enforced now)"
    };
    let ratio_effect = if input.overcommit_kbytes != 0 {
        "ignored: vm.overcommit_kbytes is set (vm_commit_limit)".to_owned()
    } else {
        format!(
            "{matters}: {}% of RAM (less huge pages) + swap",
            input.overcommit_ratio
        )
    };
    let kbytes_effect = if input.overcommit_kbytes == 0 {
        "unset: vm.overcommit_ratio sets CommitLimit".to_owned()
    } else {
        format!("{matters}: {} kB + swap", input.overcommit_kbytes)
    };

    let dump_effect = if input.oom_dump_tasks {
        "the kernel prints the task table in each OOM report: the report's kill can be \
         replayed and judged"
            .to_owned()
    } else {
        let s = "vm.oom_dump_tasks=0: the kernel prints no task table with its OOM reports, so \
                 `oomwatch replay` and the daemon's episodes cannot judge a kill (the candidates \
                 are unknown)";
        warnings.push(s.to_owned());
        "the kernel prints no task table: kills cannot be replayed or judged against the report"
            .to_owned()
    };

    let watermarks = if memcg {
        None
    } else {
        input
            .watermarks
            .as_ref()
            .map(|w| zone_headroom(w, input.page_size, kb))
    };
    if let Some(w) = &watermarks {
        for z in w.zones.iter().filter(|z| !z.kernel_agrees) {
            warnings.push(format!(
                "node {} zone {}: /proc/zoneinfo's min or protection differ from what the sysctls \
                 give (a sysctl changed since, or memory hotplug): its headroom uses the sysctls'",
                z.node, z.zone
            ));
        }
    }

    Knobs {
        action,
        panic_on_oom: Knob {
            value: u64::from(input.oom.panic_on_oom),
            effect: panic_effect,
        },
        oom_kill_allocating_task: Knob {
            value: u64::from(allocating),
            effect: allocating_effect,
        },
        overcommit_memory: Knob {
            value: u64::from(input.overcommit_memory),
            effect: overcommit_effect,
        },
        overcommit_ratio: Knob {
            value: input.overcommit_ratio,
            effect: ratio_effect,
        },
        overcommit_kbytes: Knob {
            value: input.overcommit_kbytes,
            effect: kbytes_effect,
        },
        oom_dump_tasks: Knob {
            value: u64::from(input.oom_dump_tasks),
            effect: dump_effect,
        },
        commit,
        watermarks,
        warnings,
    }
}

/// Each zone's headroom to its min watermark for a user page
/// (GFP_HIGHUSER_MOVABLE, order 0: `gfp_zone()` = ZONE_MOVABLE, so
/// `lowmem_reserve[ZONE_MOVABLE]` applies): `__zone_watermark_ok()` fails
/// once `free <= min + lowmem_reserve[highest_zoneidx]` (§7.2, §7.5), and
/// below min only direct reclaim, then the OOM killer, are left.
fn zone_headroom(w: &WatermarkInputs, page_size: u64, kb: &KernelBehavior) -> WatermarkHeadroom {
    // `lowmem_pages` in __setup_per_zone_wmarks() sums every zone of every
    // node: the watermarks take all zones at once.
    let sizes: Vec<ZoneSize> = w.zones.iter().map(|z| z.size.clone()).collect();
    let wmarks = setup_per_zone_wmarks(
        &sizes,
        w.min_free_kbytes,
        w.watermark_scale_factor,
        page_size,
        kb,
    );
    let mut zones = Vec::new();
    let mut nodes: Vec<u32> = w.zones.iter().map(|z| z.node).collect();
    nodes.dedup();
    for node in nodes {
        let idx: Vec<usize> = (0..w.zones.len())
            .filter(|&i| w.zones[i].node == node)
            .collect();
        let node_sizes: Vec<ZoneSize> = idx.iter().map(|&i| sizes[i].clone()).collect();
        // setup_per_zone_lowmem_reserve() works per node.
        let reserve = lowmem_reserve(&node_sizes, &w.lowmem_reserve_ratio, kb);
        // ZONE_MOVABLE's index in this node; a listing without it (kernels
        // that print populated zones only) falls back to its last zone
        // that is not ZONE_DEVICE (never allocated from).
        let class = node_sizes
            .iter()
            .position(|z| z.name == "Movable")
            .or_else(|| node_sizes.iter().rposition(|z| z.name != "Device"))
            .unwrap_or(0);
        for (j, &i) in idx.iter().enumerate() {
            let z = &w.zones[i];
            if z.size.name == "Device" || z.size.managed_pages == 0 {
                continue;
            }
            let min = wmarks[i].min;
            let res = reserve[j].get(class).copied().unwrap_or(0);
            let headroom = i64::try_from(z.free_pages)
                .unwrap_or(i64::MAX)
                .saturating_sub(i64::try_from(min.saturating_add(res)).unwrap_or(i64::MAX));
            let kernel_agrees = z.kernel_min == min
                && (z.kernel_protection.is_empty() || z.kernel_protection == reserve[j]);
            zones.push(ZoneHeadroom {
                node,
                zone: z.size.name.clone(),
                free_pages: z.free_pages,
                min_pages: min,
                lowmem_reserve_pages: res,
                headroom_pages: headroom,
                headroom_bytes: headroom.saturating_mul(page_size as i64),
                kernel_agrees,
            });
        }
    }
    let headroom_bytes = zones
        .iter()
        .map(|z| z.headroom_bytes.max(0) as u64)
        .sum::<u64>();
    let effect = format!(
        "min watermark = min_free_kbytes {} spread over the zones by size; watermark_scale_factor \
         {} sets low/high above it; lowmem_reserve_ratio {:?} keeps lower zones for allocations \
         that need them. Below min + reserve in every zone a user allocation reclaims directly, \
         then OOMs: {} bytes to go",
        w.min_free_kbytes, w.watermark_scale_factor, w.lowmem_reserve_ratio, headroom_bytes
    );
    WatermarkHeadroom {
        min_free_kbytes: w.min_free_kbytes,
        watermark_scale_factor: w.watermark_scale_factor,
        lowmem_reserve_ratio: w.lowmem_reserve_ratio.clone(),
        zones,
        headroom_bytes,
        effect,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::version::v;

    fn kb() -> KernelBehavior {
        KernelBehavior::for_version(v(6, 18, 44))
    }

    fn sysctls(panic_on_oom: u8, oom_kill_allocating_task: bool) -> OomSysctls {
        OomSysctls {
            panic_on_oom,
            oom_kill_allocating_task,
        }
    }

    /// `check_panic_on_oom()`: "panic_on_oom == 1 only affects
    /// CONSTRAINT_NONE, the kernel does not panic for cpuset, mempolicy, or
    /// memcg allocation failures"; 2 panics for all of them (§6.1 step 6).
    #[test]
    fn panic_on_oom_by_constraint() {
        use Constraint::*;
        let kb = kb();
        for c in [
            ConstraintNone,
            ConstraintCpuset,
            ConstraintMemoryPolicy,
            ConstraintMemcg,
        ] {
            assert_eq!(check_panic_on_oom(0, c, false, &kb), None, "{c:?}");
            assert_eq!(
                check_panic_on_oom(2, c, false, &kb),
                Some("Out of memory: compulsory panic_on_oom is enabled"),
                "{c:?}"
            );
            let one = check_panic_on_oom(1, c, false, &kb);
            if c == ConstraintNone {
                assert_eq!(
                    one,
                    Some("Out of memory: system-wide panic_on_oom is enabled")
                );
            } else {
                assert_eq!(one, None, "{c:?}");
            }
        }
        // sysrq-f is exempt from 4.4 (is_sysrq_oom), not in 3.10.
        assert_eq!(check_panic_on_oom(2, ConstraintNone, true, &kb), None);
        assert!(
            check_panic_on_oom(
                2,
                ConstraintNone,
                true,
                &KernelBehavior::for_version(v(3, 10, 108))
            )
            .is_some()
        );
    }

    /// §6.1: step 6 (panic) before step 7 (oom_kill_allocating_task), which
    /// skips memcg OOMs from 4.9 (`!is_memcg_oom(oc)`).
    #[test]
    fn action_per_domain() {
        let kb = kb();
        let host = Constraint::ConstraintNone;
        let memcg = Constraint::ConstraintMemcg;
        assert_eq!(
            oom_action(sysctls(0, false), host, &kb),
            OomAction::KillVictim
        );
        assert!(matches!(
            oom_action(sysctls(1, true), host, &kb),
            OomAction::Panic { .. }
        ));
        assert_eq!(
            oom_action(sysctls(1, false), memcg, &kb),
            OomAction::KillVictim
        );
        assert!(matches!(
            oom_action(sysctls(2, false), memcg, &kb),
            OomAction::Panic { .. }
        ));
        assert_eq!(
            oom_action(sysctls(0, true), host, &kb),
            OomAction::KillAllocatingTask
        );
        assert_eq!(
            oom_action(sysctls(0, true), memcg, &kb),
            OomAction::KillVictim
        );
        // 4.8 and older: memcg OOMs took the allocating task too.
        assert_eq!(
            oom_action(
                sysctls(0, true),
                memcg,
                &KernelBehavior::for_version(v(4, 4, 155))
            ),
            OomAction::KillAllocatingTask
        );
    }

    fn inputs() -> KnobInputs {
        KnobInputs {
            oom: OomSysctls::default(),
            overcommit_memory: 0,
            overcommit_ratio: 50,
            overcommit_kbytes: 0,
            oom_dump_tasks: true,
            commit_limit_bytes: Some(12_341_792 << 10),
            committed_as_bytes: Some(51_892 << 10),
            watermarks: None,
            page_size: 4096,
        }
    }

    /// The lab's defaults: nothing to warn about, the limit not enforced.
    #[test]
    fn defaults_warn_of_nothing() {
        let k = assess(&inputs(), Constraint::ConstraintNone, &kb());
        assert_eq!(k.action, OomAction::KillVictim);
        assert!(k.warnings.is_empty(), "{:?}", k.warnings);
        let c = k.commit.unwrap();
        assert!(!c.enforced);
        assert_eq!(c.headroom_bytes, (12_341_792 - 51_892) << 10);
        assert!(k.overcommit_memory.effect.contains("OVERCOMMIT_GUESS"));
    }

    /// `__vm_enough_memory()`, OVERCOMMIT_NEVER: `allowed = vm_commit_limit()`
    /// and a commit past it fails; Committed_AS may already exceed the limit
    /// (the mode switched after the commits): negative headroom.
    #[test]
    fn overcommit_never_enforces_the_commit_limit() {
        let mut i = inputs();
        i.overcommit_memory = 2;
        i.committed_as_bytes = Some(13_000_000 << 10);
        let k = assess(&i, Constraint::ConstraintNone, &kb());
        let c = k.commit.as_ref().unwrap();
        assert!(c.enforced);
        assert_eq!(c.headroom_bytes, -((13_000_000 - 12_341_792) << 10));
        assert!(k.warnings.iter().any(|w| w.contains("ENOMEM")), "{k:?}");
        assert!(k.overcommit_ratio.effect.starts_with("sets CommitLimit"));
        i.overcommit_kbytes = 1_000_000;
        let k = assess(&i, Constraint::ConstraintNone, &kb());
        assert!(k.overcommit_ratio.effect.starts_with("ignored"));
        assert!(k.overcommit_kbytes.effect.contains("1000000 kB"));
    }

    /// `dump_header()`: `if (sysctl_oom_dump_tasks) dump_tasks(oc)` (§9.3).
    #[test]
    fn no_task_table_is_a_warning() {
        let mut i = inputs();
        i.oom_dump_tasks = false;
        let k = assess(&i, Constraint::ConstraintMemcg, &kb());
        assert!(
            k.warnings.iter().any(|w| w.contains("vm.oom_dump_tasks=0")),
            "{k:?}"
        );
    }

    /// The allocating task, for the host only; panic_on_oom 1 spares memcgs.
    #[test]
    fn warnings_follow_the_domain() {
        let mut i = inputs();
        i.oom = sysctls(1, true);
        let host = assess(&i, Constraint::ConstraintNone, &kb());
        assert!(matches!(host.action, OomAction::Panic { .. }));
        assert!(host.panic_on_oom.effect.contains("PANICS"));
        assert!(
            host.oom_kill_allocating_task
                .effect
                .starts_with("not reached")
        );
        let memcg = assess(&i, Constraint::ConstraintMemcg, &kb());
        assert_eq!(memcg.action, OomAction::KillVictim);
        assert!(memcg.warnings.is_empty(), "{:?}", memcg.warnings);
        assert!(memcg.oom_kill_allocating_task.effect.starts_with("ignored"));
        i.oom = sysctls(0, true);
        let host = assess(&i, Constraint::ConstraintNone, &kb());
        assert_eq!(host.action, OomAction::KillAllocatingTask);
        assert!(host.warnings[0].contains("oom_kill_allocating_task=1"));
    }

    fn zone(name: &str, managed: u64, free: u64, kernel_min: u64, prot: &[u64]) -> ZoneState {
        ZoneState {
            node: 0,
            size: ZoneSize {
                name: name.into(),
                managed_pages: managed,
                boost_pages: 0,
            },
            free_pages: free,
            kernel_min,
            kernel_protection: prot.to_vec(),
        }
    }

    /// The lab machine of kernel-oom.md §10.2 (min_free_kbytes 67584, wsf 10,
    /// ratios 256 256 32 0 0): DMA min 23 and lowmem_reserve[Movable] 10 570,
    /// DMA32 min 4 818 and 7 552, Normal min 12 053 and none.
    #[test]
    fn zone_headroom_to_min_plus_reserve() {
        let zones = vec![
            zone("DMA", 3_840, 3_840, 23, &[0, 3_018, 10_570, 10_570, 10_570]),
            zone(
                "DMA32",
                772_808,
                700_000,
                4_818,
                &[0, 0, 7_552, 7_552, 7_552],
            ),
            zone("Normal", 1_933_312, 10_000, 12_053, &[0, 0, 0, 0, 0]),
            zone("Movable", 0, 0, 32, &[0, 0, 0, 0, 0]),
            zone("Device", 0, 0, 0, &[0, 0, 0, 0, 0]),
        ];
        let mut i = inputs();
        i.watermarks = Some(WatermarkInputs {
            min_free_kbytes: 67_584,
            watermark_scale_factor: 10,
            lowmem_reserve_ratio: vec![256, 256, 32, 0, 0],
            zones,
        });
        let k = assess(&i, Constraint::ConstraintNone, &kb());
        let w = k.watermarks.unwrap();
        let got: Vec<(&str, u64, u64, i64)> = w
            .zones
            .iter()
            .map(|z| {
                (
                    z.zone.as_str(),
                    z.min_pages,
                    z.lowmem_reserve_pages,
                    z.headroom_pages,
                )
            })
            .collect();
        assert_eq!(
            got,
            vec![
                // DMA: 3 840 free is below 23 + 10 570: closed to user pages.
                ("DMA", 23, 10_570, 3_840 - 10_593),
                ("DMA32", 4_818, 7_552, 700_000 - 12_370),
                // Normal: 10 000 free, 2 053 below its min.
                ("Normal", 12_053, 0, -2_053),
            ]
        );
        assert!(w.zones.iter().all(|z| z.kernel_agrees), "{w:?}");
        assert_eq!(w.headroom_bytes, (700_000 - 12_370) * 4096);
        assert!(k.warnings.is_empty(), "{:?}", k.warnings);
        // No zones for a memcg domain: its limit is the headroom there.
        assert!(
            assess(&i, Constraint::ConstraintMemcg, &kb())
                .watermarks
                .is_none()
        );
        // A zoneinfo that disagrees is named.
        let mut j = i.clone();
        if let Some(w) = &mut j.watermarks {
            w.zones[2].kernel_min = 9_999;
        }
        let k = assess(&j, Constraint::ConstraintNone, &kb());
        assert!(k.warnings[0].contains("zone Normal"), "{:?}", k.warnings);
    }
}
