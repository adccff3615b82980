//! The page allocator's path to an OOM kill as an explicit state machine:
//! `__alloc_pages()` → `__alloc_pages_slowpath()` → `__alloc_pages_may_oom()`,
//! and the memcg charge path (`try_charge_memcg()` → `mem_cgroup_oom()`);
//! kernel-oom.md §7.
//!
//! It answers: would an allocation of this gfp and order by this task end in
//! an OOM kill now, and through which branch? What reclaim and compaction
//! will achieve cannot be known in advance; the model assumes reclaim can free
//! what the zone (or memcg) counts as reclaimable, and says so in the step.

use serde::Serialize;

use super::{
    behavior::{ChangeId, KernelBehavior},
    gfp::GfpTable,
    watermark::Watermarks,
};

/// `PAGE_ALLOC_COSTLY_ORDER`.
pub const COSTLY_ORDER: u32 = 3;
/// `MAX_RECLAIM_RETRIES`.
pub const MAX_RECLAIM_RETRIES: u32 = 16;

/// One zone's state, as `/proc/zoneinfo` and `/proc/buddyinfo` show it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ZoneState {
    pub name: String,
    pub free_pages: u64,
    pub wmark: Watermarks,
    /// `lowmem_reserve[]` (the "protection" line), indexed by the
    /// allocation's highest zone.
    pub lowmem_reserve: Vec<u64>,
    /// Pages reclaim could free: the file LRUs, plus the anon LRUs when swap
    /// has room.
    pub reclaimable_pages: u64,
    pub free_cma_pages: u64,
    /// Free blocks per order (`/proc/buddyinfo`).
    pub free_blocks: Vec<u64>,
}

/// The allocating task's flags that the slow path reads.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct TaskFlags {
    /// PF_MEMALLOC: already in reclaim (or a memalloc context).
    pub pf_memalloc: bool,
    /// PF_DUMPCORE: writing a core dump.
    pub pf_dumpcore: bool,
    /// Already an OOM victim (may use reserves).
    pub oom_victim: bool,
}

/// One allocation request.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct AllocRequest {
    pub gfp: u64,
    pub order: u32,
    pub task: TaskFlags,
}

/// The GFP bits the slow path tests, taken from a version's table.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
struct Bits {
    dma: u64,
    dma32: u64,
    highmem: u64,
    movable: u64,
    high: u64,
    fs: u64,
    direct: u64,
    kswapd: u64,
    retry_mayfail: u64,
    nofail: u64,
    noretry: u64,
    memalloc: u64,
    nomemalloc: u64,
    thisnode: u64,
}

impl Bits {
    fn from(t: &GfpTable) -> Self {
        let direct = t.flag("__GFP_DIRECT_RECLAIM") | t.flag("__GFP_WAIT");
        Bits {
            dma: t.flag("__GFP_DMA") | t.flag("GFP_DMA"),
            dma32: t.flag("__GFP_DMA32") | t.flag("GFP_DMA32"),
            highmem: t.flag("__GFP_HIGHMEM"),
            movable: t.flag("__GFP_MOVABLE"),
            high: t.flag("__GFP_HIGH"),
            fs: t.flag("__GFP_FS"),
            direct,
            kswapd: t.flag("__GFP_KSWAPD_RECLAIM"),
            retry_mayfail: t.flag("__GFP_RETRY_MAYFAIL") | t.flag("__GFP_REPEAT"),
            nofail: t.flag("__GFP_NOFAIL"),
            noretry: t.flag("__GFP_NORETRY"),
            memalloc: t.flag("__GFP_MEMALLOC"),
            nomemalloc: t.flag("__GFP_NOMEMALLOC"),
            thisnode: t.flag("__GFP_THISNODE"),
        }
    }
}

/// One decision on the way, with the kernel function it mirrors.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Step {
    /// Kernel function (and branch).
    pub at: &'static str,
    pub detail: String,
}

/// How the path ends.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "ending", rename_all = "snake_case")]
pub enum Ending {
    /// Pages come from this zone without reclaim.
    Allocated { zone: String, stage: &'static str },
    /// Reclaim (or compaction) must succeed first; the model expects it to.
    AllocatedAfterReclaim { zone: String },
    /// Enough free memory but no free block of the order: up to compaction.
    DependsOnCompaction,
    /// The allocation fails (NULL / -ENOMEM) without an OOM kill.
    Fails { reason: String },
    /// `out_of_memory()` is called: global OOM (constraint from the caller).
    OutOfMemory,
    /// The memcg charge ends in a memcg OOM kill.
    MemcgOom,
    /// The memcg OOM killer is disabled (v1 oom_kill_disable): the task
    /// waits until memory is freed or the killer re-enabled.
    MemcgOomWaits,
    /// __GFP_NOFAIL: never fails; loops (possibly after an OOM kill).
    NofailLoops,
    /// The page fault is retried (≥ 5.16 "VM_FAULT_OOM leaked out").
    FaultRetried,
}

/// The result: every step and the ending.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct PathResult {
    pub steps: Vec<Step>,
    pub ending: Ending,
}

/// Zone index names in the kernel's order.
const ZONE_ORDER: [&str; 6] = ["DMA", "DMA32", "Normal", "HighMem", "Movable", "Device"];

fn zone_rank(name: &str) -> usize {
    ZONE_ORDER.iter().position(|z| *z == name).unwrap_or(2)
}

/// `gfp_zone()`: the highest zone this mask may use.
fn highest_zone(gfp: u64, b: &Bits) -> &'static str {
    if gfp & b.dma != 0 && b.dma != 0 {
        "DMA"
    } else if gfp & b.dma32 != 0 && b.dma32 != 0 {
        "DMA32"
    } else if gfp & b.highmem != 0 && gfp & b.movable != 0 {
        "Movable"
    } else if gfp & b.highmem != 0 {
        "HighMem"
    } else {
        "Normal"
    }
}

/// Watermark adjustments of `alloc_flags`.
#[derive(Debug, Clone, Copy)]
struct Flags {
    min_reserve: bool,
    non_block: bool,
    oom: bool,
    no_watermarks: bool,
}

/// `__zone_watermark_ok()` (6.18 text; highatomic reserve taken as 0).
fn watermark_ok(z: &ZoneState, order: u32, mark: u64, idx: usize, f: Flags, free: u64) -> bool {
    if f.no_watermarks {
        return free > 0;
    }
    let mut free = free as i64 - ((1i64 << order) - 1);
    free -= z.free_cma_pages as i64;
    let mut min = mark as i64;
    if f.min_reserve {
        min -= min / 2;
    }
    if f.non_block {
        min -= min / 4;
    }
    if f.oom {
        min -= min / 2;
    }
    let reserve = z.lowmem_reserve.get(idx).copied().unwrap_or(0) as i64;
    if free <= min + reserve {
        return false;
    }
    order == 0 || z.free_blocks.iter().skip(order as usize).any(|&n| n > 0)
}

/// The zonelist for the highest zone: that zone and the ones below, highest first.
fn zonelist<'a>(zones: &'a [ZoneState], highest: &str) -> Vec<(usize, &'a ZoneState)> {
    let top = zone_rank(highest);
    let mut list: Vec<(usize, &ZoneState)> = zones
        .iter()
        .filter(|z| zone_rank(&z.name) <= top && z.wmark.min + z.free_pages > 0)
        .map(|z| (top, z))
        .collect();
    list.sort_by_key(|(_, z)| std::cmp::Reverse(zone_rank(&z.name)));
    list
}

/// Simulates one page allocation from the buddy allocator (≥ 4.7 shape; the
/// retry loop of 3.10/4.4 is reported as such).
pub fn alloc_pages(
    req: &AllocRequest,
    zones: &[ZoneState],
    gfp_table: &GfpTable,
    kb: &KernelBehavior,
) -> PathResult {
    let b = Bits::from(gfp_table);
    let g = req.gfp;
    let mut steps = Vec::new();
    let highest = highest_zone(g, &b);
    let list = zonelist(zones, highest);
    let idx = zones
        .iter()
        .position(|z| z.name == highest)
        .unwrap_or(zones.len().saturating_sub(1));
    steps.push(Step {
        at: "gfp_zone",
        detail: format!(
            "{} may use zones up to {highest}: {}",
            gfp_table.format(g),
            list.iter()
                .map(|(_, z)| z.name.as_str())
                .collect::<Vec<_>>()
                .join(", ")
        ),
    });
    let plain = Flags {
        min_reserve: false,
        non_block: false,
        oom: false,
        no_watermarks: false,
    };
    // Fast path: get_page_from_freelist() at the low watermark.
    for (_, z) in &list {
        if watermark_ok(z, req.order, z.wmark.low, idx, plain, z.free_pages) {
            steps.push(Step {
                at: "get_page_from_freelist (fast path, ALLOC_WMARK_LOW)",
                detail: format!(
                    "zone {}: {} free pages > low {} + reserve {}",
                    z.name,
                    z.free_pages,
                    z.wmark.low,
                    z.lowmem_reserve.get(idx).copied().unwrap_or(0)
                ),
            });
            return PathResult {
                steps,
                ending: Ending::Allocated {
                    zone: z.name.clone(),
                    stage: "fast path",
                },
            };
        }
    }
    steps.push(Step {
        at: "get_page_from_freelist (fast path)",
        detail: "every zone is at or below its low watermark (+ lowmem reserve): slow path".into(),
    });
    // gfp_to_alloc_flags().
    let direct = g & b.direct != 0;
    let flags = Flags {
        min_reserve: g & b.high != 0,
        non_block: !direct,
        oom: false,
        no_watermarks: false,
    };
    if g & b.kswapd != 0 {
        steps.push(Step {
            at: "wake_all_kswapds",
            detail: "kswapd is woken on every eligible node (background reclaim)".into(),
        });
    }
    for (_, z) in &list {
        if watermark_ok(z, req.order, z.wmark.min, idx, flags, z.free_pages) {
            steps.push(Step {
                at: "get_page_from_freelist (ALLOC_WMARK_MIN)",
                detail: format!(
                    "zone {}: {} free pages > min {}",
                    z.name, z.free_pages, z.wmark.min
                ),
            });
            return PathResult {
                steps,
                ending: Ending::Allocated {
                    zone: z.name.clone(),
                    stage: "slow path, min watermark",
                },
            };
        }
    }
    // Costly (or non-movable high-order) requests try direct compaction first
    // when they may reclaim (§7.1 step 3).
    if direct && (req.order > COSTLY_ORDER || (req.order > 0 && g & b.movable == 0)) {
        steps.push(Step {
            at: "__alloc_pages_direct_compact (COMPACT_PRIO_ASYNC, before reclaim)",
            detail: format!(
                "order {} {}: compaction is tried before direct reclaim{}",
                req.order,
                if req.order > COSTLY_ORDER {
                    "is costly"
                } else {
                    "is not movable"
                },
                if req.order > COSTLY_ORDER && g & b.noretry != 0 {
                    "; with __GFP_NORETRY a skipped or deferred compaction ends the attempt"
                } else {
                    ""
                }
            ),
        });
    }
    // Reserves: __GFP_MEMALLOC / PF_MEMALLOC / OOM victims ignore watermarks.
    let reserves = (g & b.memalloc != 0 || req.task.pf_memalloc || req.task.oom_victim)
        && g & b.nomemalloc == 0;
    if reserves {
        let nw = Flags {
            no_watermarks: true,
            ..flags
        };
        if let Some((_, z)) = list
            .iter()
            .find(|(_, z)| watermark_ok(z, req.order, 0, idx, nw, z.free_pages))
        {
            steps.push(Step {
                at: "__alloc_pages_slowpath (ALLOC_NO_WATERMARKS)",
                detail: "the task may use memory reserves".into(),
            });
            return PathResult {
                steps,
                ending: Ending::Allocated {
                    zone: z.name.clone(),
                    stage: "memory reserves",
                },
            };
        }
    }
    if !direct {
        return fail(
            steps,
            "__alloc_pages_slowpath",
            "no __GFP_DIRECT_RECLAIM: an atomic/non-blocking allocation fails here".to_owned(),
        );
    }
    if req.task.pf_memalloc {
        return fail(
            steps,
            "__alloc_pages_slowpath",
            "PF_MEMALLOC: the task is already reclaiming, no recursion".to_owned(),
        );
    }
    // Direct reclaim (and compaction): assume the reclaimable pages can be freed.
    let mut enough_pages = false;
    for (_, z) in &list {
        let available = z.free_pages + z.reclaimable_pages;
        let ok = watermark_ok(z, req.order, z.wmark.min, idx, flags, available);
        let pages_ok = watermark_ok(z, 0, z.wmark.min, idx, flags, available);
        steps.push(Step {
            at: "should_reclaim_retry (__zone_watermark_ok on reclaimable + free)",
            detail: format!(
                "zone {}: available {} = free {} + reclaimable {} vs min {} + reserve {}: {}",
                z.name,
                available,
                z.free_pages,
                z.reclaimable_pages,
                z.wmark.min,
                z.lowmem_reserve.get(idx).copied().unwrap_or(0),
                if ok { "passes" } else { "fails" }
            ),
        });
        if ok {
            return PathResult {
                steps,
                ending: Ending::AllocatedAfterReclaim {
                    zone: z.name.clone(),
                },
            };
        }
        enough_pages |= pages_ok;
    }
    if enough_pages && req.order > 0 {
        steps.push(Step {
            at: "__alloc_pages_direct_compact / should_compact_retry",
            detail: format!(
                "enough pages after reclaim but no free order-{} block: compaction decides \
                 (should_compact_retry: up to {} successful-compaction retries, raising the \
                 priority otherwise)",
                req.order,
                if req.order > COSTLY_ORDER { 16 / 4 } else { 16 }
            ),
        });
        return PathResult {
            steps,
            ending: Ending::DependsOnCompaction,
        };
    }
    if g & b.noretry != 0 {
        return fail(
            steps,
            "__alloc_pages_slowpath",
            "__GFP_NORETRY: fails after one reclaim/compaction attempt".to_owned(),
        );
    }
    if req.order > COSTLY_ORDER && g & b.retry_mayfail == 0 {
        return fail(
            steps,
            "__alloc_pages_slowpath",
            format!(
                "costly order {} (> {COSTLY_ORDER}) without __GFP_RETRY_MAYFAIL: fails instead of retrying",
                req.order
            ),
        );
    }
    if kb.has(ChangeId::ReclaimRetryRework) {
        steps.push(Step {
            at: "should_reclaim_retry",
            detail: format!(
                "no zone would pass its min watermark even after reclaiming everything reclaimable: \
                 no progress, give up after {MAX_RECLAIM_RETRIES} loops"
            ),
        });
    } else {
        steps.push(Step {
            at: "__alloc_pages_slowpath (≤ 4.6)",
            detail: "direct reclaim made no progress: try the OOM killer".into(),
        });
    }
    may_oom(req, g, &b, highest, kb, steps)
}

/// Ends the path in a failure, recording why as the last step.
fn fail(mut steps: Vec<Step>, at: &'static str, reason: impl Into<String>) -> PathResult {
    let reason = reason.into();
    steps.push(Step {
        at,
        detail: reason.clone(),
    });
    PathResult {
        steps,
        ending: Ending::Fails { reason },
    }
}

/// `__alloc_pages_may_oom()` gates (§7.2).
fn may_oom(
    req: &AllocRequest,
    g: u64,
    b: &Bits,
    highest: &str,
    kb: &KernelBehavior,
    mut steps: Vec<Step>,
) -> PathResult {
    let nofail = g & b.nofail != 0;
    let nofail_bypass = nofail && !kb.has(ChangeId::NofailNoLongerBypassesOomGates);
    let gate = if nofail_bypass {
        None
    } else if req.task.pf_dumpcore {
        Some("PF_DUMPCORE: a core dump in progress never triggers the OOM killer".to_owned())
    } else if req.order > COSTLY_ORDER {
        Some(format!(
            "order {} > {COSTLY_ORDER}: the OOM killer cannot help costly orders",
            req.order
        ))
    } else if g & b.retry_mayfail != 0 && kb.has(ChangeId::RetryMayfailOomGate) {
        Some("__GFP_RETRY_MAYFAIL: fails rather than killing".to_owned())
    } else if zone_rank(highest) < zone_rank("Normal") {
        Some(format!(
            "highest usable zone {highest} is below ZONE_NORMAL: killing cannot free lowmem reliably"
        ))
    } else if g & b.thisnode != 0 {
        Some("__GFP_THISNODE: the caller has a fallback".to_owned())
    } else {
        None
    };
    if let Some(reason) = gate {
        steps.push(Step {
            at: "__alloc_pages_may_oom",
            detail: reason.clone(),
        });
        return PathResult {
            steps,
            ending: if nofail {
                Ending::NofailLoops
            } else {
                Ending::Fails { reason }
            },
        };
    }
    steps.push(Step {
        at: "__alloc_pages_may_oom",
        detail: if g & b.fs == 0 {
            "no gate applies: out_of_memory() is called (without __GFP_FS it reports progress \
             without killing, see its steps)"
                .into()
        } else {
            "no gate applies: out_of_memory() is called".into()
        },
    });
    PathResult {
        steps,
        ending: Ending::OutOfMemory,
    }
}

/// `pagefault_out_of_memory()`: a user page fault returned VM_FAULT_OOM
/// (§7.7). `memcg_oom_pending`: a memcg charge during the fault recorded an
/// OOM (handled by `mem_cgroup_oom_synchronize()`).
pub fn pagefault_oom(
    memcg_oom_pending: bool,
    fatal_signal: bool,
    kb: &KernelBehavior,
) -> PathResult {
    let mut steps = Vec::new();
    if memcg_oom_pending {
        steps.push(Step {
            at: "pagefault_out_of_memory → mem_cgroup_oom_synchronize",
            detail: "a memcg OOM recorded during the fault is handled first".into(),
        });
        return PathResult {
            steps,
            ending: Ending::MemcgOom,
        };
    }
    if kb.pagefault_global_oom {
        steps.push(Step {
            at: "pagefault_out_of_memory (≤ 5.15 without the 2021 backport)",
            detail: "out_of_memory() with gfp_mask 0, order 0, no zonelist: a global OOM \
                     (CONSTRAINT_NONE), reported as gfp_mask=0x0()"
                .into(),
        });
        return PathResult {
            steps,
            ending: Ending::OutOfMemory,
        };
    }
    if fatal_signal {
        steps.push(Step {
            at: "pagefault_out_of_memory",
            detail: "a fatal signal is pending: the task is dying, nothing to do".into(),
        });
        return PathResult {
            steps,
            ending: Ending::Fails {
                reason: "the faulting task is already dying".into(),
            },
        };
    }
    steps.push(Step {
        at: "pagefault_out_of_memory (≥ 5.16)",
        detail: "\"Huh VM_FAULT_OOM leaked out to the #PF handler. Retrying PF\": no global OOM \
                 from the fault path"
            .into(),
    });
    PathResult {
        steps,
        ending: Ending::FaultRetried,
    }
}

/// A memory cgroup's charge state, in pages.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct MemcgState {
    pub usage_pages: u64,
    /// The limit that applies (memory.max / limit_in_bytes of the domain).
    pub limit_pages: u64,
    /// Pages memcg reclaim could free (its file LRUs, plus anon with swap).
    pub reclaimable_pages: u64,
    /// v1 `memory.oom_control` oom_kill_disable.
    pub oom_kill_disable: bool,
}

/// `try_charge_memcg()` → `mem_cgroup_oom()` for one charge (§7.6).
pub fn charge_memcg(
    req: &AllocRequest,
    m: &MemcgState,
    gfp_table: &GfpTable,
    kb: &KernelBehavior,
) -> PathResult {
    let b = Bits::from(gfp_table);
    let g = req.gfp;
    let nr = 1u64 << req.order;
    let mut steps = Vec::new();
    if m.usage_pages + nr <= m.limit_pages {
        steps.push(Step {
            at: "try_charge_memcg",
            detail: format!(
                "usage {} + {nr} ≤ limit {} pages: charged",
                m.usage_pages, m.limit_pages
            ),
        });
        return PathResult {
            steps,
            ending: Ending::Allocated {
                zone: "memcg".into(),
                stage: "charge",
            },
        };
    }
    steps.push(Step {
        at: "try_charge_memcg",
        detail: format!(
            "usage {} + {nr} > limit {} pages: over the limit",
            m.usage_pages, m.limit_pages
        ),
    });
    if g & b.direct == 0 {
        return fail(
            steps,
            "try_charge_memcg",
            "no __GFP_DIRECT_RECLAIM: the charge fails (or is forced for __GFP_NOFAIL/__GFP_HIGH)"
                .to_owned(),
        );
    }
    if m.usage_pages.saturating_sub(m.reclaimable_pages) + nr <= m.limit_pages {
        steps.push(Step {
            at: "try_to_free_mem_cgroup_pages",
            detail: format!(
                "reclaiming up to {} reclaimable pages brings usage under the limit",
                m.reclaimable_pages
            ),
        });
        return PathResult {
            steps,
            ending: Ending::AllocatedAfterReclaim {
                zone: "memcg".into(),
            },
        };
    }
    let retries = if kb.has(ChangeId::MemcgReclaimRetries16) {
        16
    } else {
        5
    };
    steps.push(Step {
        at: "try_charge_memcg",
        detail: format!(
            "reclaim cannot free enough ({} reclaimable of {} needed): {retries} retries without progress",
            m.reclaimable_pages,
            m.usage_pages + nr - m.limit_pages
        ),
    });
    if g & b.noretry != 0 || (g & b.retry_mayfail != 0 && kb.has(ChangeId::RetryMayfailOomGate)) {
        return fail(
            steps,
            "try_charge_memcg",
            "__GFP_NORETRY / __GFP_RETRY_MAYFAIL: the charge fails without an OOM kill".to_owned(),
        );
    }
    if req.order > COSTLY_ORDER {
        return fail(
            steps,
            "mem_cgroup_oom",
            format!(
                "order {} > {COSTLY_ORDER}: mem_cgroup_oom() skips costly orders",
                req.order
            ),
        );
    }
    if m.oom_kill_disable {
        steps.push(Step {
            at: "mem_cgroup_oom",
            detail: "memory.oom_control oom_kill_disable = 1: the task waits (under_oom) instead of killing".into(),
        });
        return PathResult {
            steps,
            ending: Ending::MemcgOomWaits,
        };
    }
    steps.push(Step {
        at: "mem_cgroup_oom → mem_cgroup_out_of_memory",
        detail: if kb.has(ChangeId::MemcgSyncOomKill) {
            "memcg OOM: out_of_memory() with CONSTRAINT_MEMCG".into()
        } else {
            "memcg OOM: recorded; the kill runs at the end of the page fault (a non-fault charge fails)".into()
        },
    });
    PathResult {
        steps,
        ending: Ending::MemcgOom,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::version::{KernelVersion, v};

    fn kb(ver: KernelVersion) -> KernelBehavior {
        KernelBehavior::for_version(ver)
    }

    fn zone(name: &str, free: u64, min: u64, reclaimable: u64, blocks: Vec<u64>) -> ZoneState {
        ZoneState {
            name: name.into(),
            free_pages: free,
            wmark: Watermarks {
                min,
                low: min * 5 / 4,
                high: min * 3 / 2,
                promo: None,
            },
            lowmem_reserve: vec![0; 5],
            reclaimable_pages: reclaimable,
            free_cma_pages: 0,
            free_blocks: blocks,
        }
    }

    fn req(t: &GfpTable, gfp: &str, order: u32) -> AllocRequest {
        AllocRequest {
            gfp: t.parse(gfp).unwrap(),
            order,
            task: TaskFlags::default(),
        }
    }

    fn run(gfp: &str, order: u32, zones: &[ZoneState]) -> PathResult {
        let k = kb(v(6, 18, 44));
        let t = GfpTable::builtin(&k);
        alloc_pages(&req(&t, gfp, order), zones, &t, &k)
    }

    fn full() -> Vec<ZoneState> {
        vec![
            zone("DMA", 30, 30, 0, vec![0; 11]),
            zone("DMA32", 6_000, 6_158, 0, vec![0; 11]),
            zone("Normal", 10_000, 10_706, 100, vec![10; 11]),
        ]
    }

    #[test]
    fn plenty_of_memory_is_the_fast_path() {
        let zones = vec![zone("Normal", 600_000, 10_706, 0, vec![10; 11])];
        assert!(matches!(
            run("GFP_KERNEL", 0, &zones).ending,
            Ending::Allocated {
                stage: "fast path",
                ..
            }
        ));
    }

    #[test]
    fn exhausted_gfp_kernel_ends_in_out_of_memory() {
        let r = run("GFP_KERNEL", 0, &full());
        assert_eq!(r.ending, Ending::OutOfMemory, "{:#?}", r.steps);
    }

    /// __alloc_pages_may_oom gates (§7.2), ≥ 5.10 column.
    #[test]
    fn gates() {
        let zones = full();
        assert!(matches!(
            run("GFP_KERNEL|__GFP_RETRY_MAYFAIL", 0, &zones).ending,
            Ending::Fails { .. }
        ));
        assert!(matches!(
            run("GFP_KERNEL|__GFP_NORETRY", 0, &zones).ending,
            Ending::Fails { .. }
        ));
        assert!(matches!(
            run("GFP_KERNEL|__GFP_THISNODE", 0, &zones).ending,
            Ending::Fails { .. }
        ));
        // GFP_DMA32 only: lowmem, no OOM kill.
        let r = run("GFP_KERNEL|GFP_DMA32", 0, &zones);
        assert!(
            matches!(&r.ending, Ending::Fails { reason } if reason.contains("below ZONE_NORMAL")),
            "{r:?}"
        );
        // Costly order without RETRY_MAYFAIL fails before the gates; with it, the gate.
        assert!(matches!(
            run("GFP_KERNEL", 4, &zones).ending,
            Ending::Fails { .. }
        ));
        let r = run("GFP_KERNEL|__GFP_RETRY_MAYFAIL", 4, &zones);
        assert!(matches!(r.ending, Ending::Fails { .. }));
        // NOFAIL loops on a gate.
        assert_eq!(
            run("GFP_KERNEL|__GFP_NOFAIL|__GFP_THISNODE", 0, &zones).ending,
            Ending::NofailLoops
        );
        // Atomic: __GFP_HIGH and non-blocking lower min by 1/2 then 1/4, so
        // 10 000 free pages against min 10 706 still succeed (4 015)...
        assert!(matches!(
            run("GFP_ATOMIC", 0, &zones).ending,
            Ending::Allocated {
                stage: "slow path, min watermark",
                ..
            }
        ));
        // ...but not with 3 000 (nor DMA32's 2 000 against its 2 310), and
        // without direct reclaim it fails there.
        let mut low = zones.clone();
        low[2].free_pages = 3_000;
        low[1].free_pages = 2_000;
        low[0].free_pages = 0;
        assert!(matches!(
            run("GFP_ATOMIC", 0, &low).ending,
            Ending::Fails { .. }
        ));
        // Without __GFP_FS it still reaches out_of_memory(), which then decides.
        assert_eq!(run("GFP_NOFS", 0, &zones).ending, Ending::OutOfMemory);
    }

    #[test]
    fn reclaimable_memory_avoids_the_oom() {
        let mut zones = full();
        zones[2].reclaimable_pages = 50_000;
        assert!(matches!(
            run("GFP_KERNEL", 0, &zones).ending,
            Ending::AllocatedAfterReclaim { .. }
        ));
        // High order: pages enough but no block → compaction decides.
        zones[2].free_blocks = vec![100, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0];
        assert_eq!(
            run("GFP_KERNEL", 2, &zones).ending,
            Ending::DependsOnCompaction
        );
    }

    /// 4.9: __GFP_NOFAIL bypassed the gates and went to out_of_memory().
    #[test]
    fn nofail_bypass_until_4_14() {
        let k = kb(v(4, 9, 154));
        let t = GfpTable::builtin(&kb(v(6, 18, 0)));
        let r = alloc_pages(
            &req(&t, "GFP_KERNEL|__GFP_NOFAIL|__GFP_THISNODE", 0),
            &full(),
            &t,
            &k,
        );
        assert_eq!(r.ending, Ending::OutOfMemory);
    }

    /// §7.7: the fault path called the global OOM killer until 5.16 (and its
    /// stable backports: 5.4.160, 5.10.89 seen).
    #[test]
    fn pagefault_path() {
        assert_eq!(
            pagefault_oom(false, false, &kb(v(5, 4, 59))).ending,
            Ending::OutOfMemory
        );
        assert_eq!(
            pagefault_oom(false, false, &kb(v(5, 4, 160))).ending,
            Ending::FaultRetried
        );
        assert_eq!(
            pagefault_oom(false, false, &kb(v(6, 18, 0))).ending,
            Ending::FaultRetried
        );
        assert!(matches!(
            pagefault_oom(false, true, &kb(v(6, 18, 0))).ending,
            Ending::Fails { .. }
        ));
        assert_eq!(
            pagefault_oom(true, false, &kb(v(6, 18, 0))).ending,
            Ending::MemcgOom
        );
    }

    #[test]
    fn memcg_charge() {
        let k = kb(v(6, 18, 44));
        let t = GfpTable::builtin(&k);
        let m = MemcgState {
            usage_pages: 16_384,
            limit_pages: 16_384,
            reclaimable_pages: 0,
            oom_kill_disable: false,
        };
        assert_eq!(
            charge_memcg(&req(&t, "GFP_KERNEL", 0), &m, &t, &k).ending,
            Ending::MemcgOom
        );
        assert!(matches!(
            charge_memcg(&req(&t, "GFP_KERNEL", 4), &m, &t, &k).ending,
            Ending::Fails { .. }
        ));
        assert!(matches!(
            charge_memcg(&req(&t, "GFP_NOWAIT", 0), &m, &t, &k).ending,
            Ending::Fails { .. }
        ));
        let frozen = MemcgState {
            oom_kill_disable: true,
            ..m
        };
        assert_eq!(
            charge_memcg(&req(&t, "GFP_KERNEL", 0), &frozen, &t, &k).ending,
            Ending::MemcgOomWaits
        );
        let roomy = MemcgState {
            usage_pages: 1_000,
            ..m
        };
        assert!(matches!(
            charge_memcg(&req(&t, "GFP_KERNEL", 0), &roomy, &t, &k).ending,
            Ending::Allocated { .. }
        ));
        let cache = MemcgState {
            reclaimable_pages: 5_000,
            ..m
        };
        assert!(matches!(
            charge_memcg(&req(&t, "GFP_KERNEL", 0), &cache, &t, &k).ending,
            Ending::AllocatedAfterReclaim { .. }
        ));
    }
}
