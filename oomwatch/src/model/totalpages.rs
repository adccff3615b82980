//! `totalpages`: the size of the OOM domain that points are measured against
//! (`constrained_alloc()`, `mem_cgroup_get_max()`; kernel-oom.md §5).

use serde::{Deserialize, Serialize};

use super::behavior::{KernelBehavior, MemcgTotalpagesRule};

/// Global memory, in pages.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct GlobalMemory {
    /// `totalram_pages()`: MemTotal / page size.
    pub totalram_pages: u64,
    /// `total_swap_pages`: SwapTotal / page size.
    pub total_swap_pages: u64,
}

impl GlobalMemory {
    /// CONSTRAINT_NONE, and what `/proc/PID/oom_score` always uses.
    pub fn totalpages(&self) -> u64 {
        self.totalram_pages + self.total_swap_pages
    }
}

/// A NUMA node's size, for cpuset/mempolicy-constrained OOMs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct NodePages {
    pub node: u32,
    pub spanned_pages: u64,
    pub present_pages: u64,
}

/// CONSTRAINT_CPUSET / CONSTRAINT_MEMORY_POLICY: swap plus the allowed nodes'
/// pages (spanned up to 5.3, present from 5.4).
pub fn constrained_totalpages(
    allowed_nodes: &[NodePages],
    total_swap_pages: u64,
    kb: &KernelBehavior,
) -> u64 {
    let present = super::behavior::change(super::behavior::ChangeId::ConstraintPresentPages)
        .applies(kb.version);
    total_swap_pages
        + allowed_nodes
            .iter()
            .map(|n| {
                if present {
                    n.present_pages
                } else {
                    n.spanned_pages
                }
            })
            .sum::<u64>()
}

/// What `constrained_alloc()` looks at for a global OOM (§5.1).
#[derive(Debug, Clone, Copy)]
pub struct ConstraintInput<'a> {
    /// A NUMA build with more than one memory node.
    pub numa: bool,
    /// No zonelist (the page-fault OOM path up to 5.15, some callers).
    pub zonelist_null: bool,
    /// The allocation has __GFP_THISNODE.
    pub thisnode: bool,
    /// The mempolicy's nodemask, when the allocation carries one.
    pub mempolicy_nodes: Option<&'a [u32]>,
    /// The allocating task's cpuset `mems_allowed`, when the cpuset rejected
    /// some zone of the zonelist.
    pub cpuset_mems: Option<&'a [u32]>,
    /// Every memory node.
    pub nodes: &'a [NodePages],
    pub memory: GlobalMemory,
}

/// `constrained_alloc()` for a global OOM: the constraint and its totalpages.
pub fn constrained_alloc(
    c: &ConstraintInput<'_>,
    kb: &KernelBehavior,
) -> (super::oom::Constraint, u64) {
    use super::oom::Constraint;
    let default = (Constraint::ConstraintNone, c.memory.totalpages());
    if !c.numa || c.zonelist_null || c.thisnode {
        return default;
    }
    let pages = |mask: &[u32]| {
        let chosen: Vec<NodePages> = c
            .nodes
            .iter()
            .filter(|n| mask.contains(&n.node))
            .copied()
            .collect();
        constrained_totalpages(&chosen, c.memory.total_swap_pages, kb)
    };
    if let Some(mask) = c.mempolicy_nodes {
        let superset = c.nodes.iter().all(|n| mask.contains(&n.node));
        if !superset {
            return (Constraint::ConstraintMemoryPolicy, pages(mask));
        }
    }
    if let Some(mems) = c.cpuset_mems {
        return (Constraint::ConstraintCpuset, pages(mems));
    }
    default
}

/// The limits of the memcg whose counter refused the charge (the OOM domain),
/// in pages; `u64::MAX` = unlimited.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct MemcgLimits {
    /// v1 `memory.limit_in_bytes` / v2 `memory.max`.
    pub max_pages: u64,
    /// v2 `memory.swap.max` (unlimited on v1).
    pub swap_max_pages: u64,
    /// v1 `memory.memsw.limit_in_bytes` (unlimited on v2 or without swap accounting).
    pub memsw_max_pages: u64,
    /// The swappiness that applies (v2: global vm.swappiness; v1: the memcg's
    /// memory.swappiness).
    pub swappiness: u32,
    /// cgroup v1 with swap accounting (`do_memsw_account()`).
    pub memsw_accounting: bool,
    /// cgroup v2 (the 5.10 – 6.0 split keys on this).
    pub v2: bool,
}

/// `mem_cgroup_get_max(memcg) ?: 1` for kernel `kb` (§5.2).
pub fn memcg_totalpages(l: &MemcgLimits, total_swap_pages: u64, kb: &KernelBehavior) -> u64 {
    let swp = l.swappiness != 0;
    let max = l.max_pages;
    let t = match kb.memcg_totalpages {
        MemcgTotalpagesRule::LimitPlusSwapCappedByMemsw => {
            if swp {
                max.saturating_add(total_swap_pages).min(l.memsw_max_pages)
            } else {
                max
            }
        }
        MemcgTotalpagesRule::SwapMaxCappedByMemsw => {
            if swp {
                max.saturating_add(l.swap_max_pages.min(total_swap_pages))
                    .min(l.memsw_max_pages)
            } else {
                max
            }
        }
        MemcgTotalpagesRule::Split => {
            let memsw_side = if kb.memcg_split_on_memsw_account {
                l.memsw_accounting
            } else {
                !l.v2
            };
            if !swp {
                max
            } else if memsw_side {
                let swap = l.memsw_max_pages.saturating_sub(max);
                max.saturating_add(swap.min(total_swap_pages))
            } else {
                max.saturating_add(l.swap_max_pages.min(total_swap_pages))
            }
        }
    };
    t.max(1)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::version::v;

    const UNLIMITED: u64 = u64::MAX;

    fn v1(max: u64, memsw: u64, swappiness: u32) -> MemcgLimits {
        MemcgLimits {
            max_pages: max,
            swap_max_pages: UNLIMITED,
            memsw_max_pages: memsw,
            swappiness,
            memsw_accounting: memsw != UNLIMITED,
            v2: false,
        }
    }

    fn v2(max: u64, swap_max: u64) -> MemcgLimits {
        MemcgLimits {
            max_pages: max,
            swap_max_pages: swap_max,
            memsw_max_pages: UNLIMITED,
            swappiness: 60,
            memsw_accounting: false,
            v2: true,
        }
    }

    #[test]
    fn no_swap_is_the_limit() {
        for ver in [v(3, 10, 108), v(4, 19, 78), v(5, 10, 89), v(6, 18, 44)] {
            let kb = KernelBehavior::for_version(ver);
            // The lab: 64 MiB v1 limit, no swap → 16 384 pages.
            assert_eq!(
                memcg_totalpages(&v1(16_384, UNLIMITED, 60), 0, &kb),
                16_384,
                "{ver}"
            );
            assert_eq!(
                memcg_totalpages(&v2(16_384, UNLIMITED), 0, &kb),
                16_384,
                "{ver}"
            );
        }
    }

    #[test]
    fn swap_terms_per_version() {
        let swap = 1_000_000;
        let new = KernelBehavior::for_version(v(6, 18, 0));
        // v2: max + min(swap.max, total_swap)
        assert_eq!(memcg_totalpages(&v2(16_384, 4_096), swap, &new), 20_480);
        assert_eq!(memcg_totalpages(&v2(16_384, 0), swap, &new), 16_384);
        // v1 with memsw: max + min(memsw − max, total_swap)
        assert_eq!(
            memcg_totalpages(&v1(16_384, 20_000, 60), swap, &new),
            20_000
        );
        // v1 without swap accounting: memsw unlimited → all of swap.
        assert_eq!(
            memcg_totalpages(&v1(16_384, UNLIMITED, 60), swap, &new),
            16_384 + swap
        );
        // swappiness 0: the limit alone.
        assert_eq!(memcg_totalpages(&v1(16_384, 20_000, 0), swap, &new), 16_384);
        // 4.9 – 5.9: min(max + min(swap.max, swap), memsw.max)
        let mid = KernelBehavior::for_version(v(5, 4, 59));
        assert_eq!(
            memcg_totalpages(&v1(16_384, 20_000, 60), swap, &mid),
            20_000
        );
        assert_eq!(memcg_totalpages(&v2(16_384, 4_096), swap, &mid), 20_480);
        // ≤ 4.8: min(limit + swap, memsw)
        let old = KernelBehavior::for_version(v(4, 4, 155));
        assert_eq!(memcg_totalpages(&v1(16_384, 20_000, 60), 100, &old), 16_484);
    }

    #[test]
    fn never_zero() {
        let kb = KernelBehavior::for_version(v(6, 18, 0));
        assert_eq!(memcg_totalpages(&v2(0, 0), 0, &kb), 1);
    }

    #[test]
    fn constraint_kinds() {
        use crate::model::oom::Constraint;
        let kb = KernelBehavior::for_version(v(6, 18, 0));
        let nodes = [
            NodePages {
                node: 0,
                spanned_pages: 1_000,
                present_pages: 1_000,
            },
            NodePages {
                node: 1,
                spanned_pages: 3_000,
                present_pages: 3_000,
            },
        ];
        let base = ConstraintInput {
            numa: true,
            zonelist_null: false,
            thisnode: false,
            mempolicy_nodes: None,
            cpuset_mems: None,
            nodes: &nodes,
            memory: GlobalMemory {
                totalram_pages: 4_000,
                total_swap_pages: 100,
            },
        };
        assert_eq!(
            constrained_alloc(&base, &kb),
            (Constraint::ConstraintNone, 4_100)
        );
        let mp = ConstraintInput {
            mempolicy_nodes: Some(&[1]),
            ..base
        };
        assert_eq!(
            constrained_alloc(&mp, &kb),
            (Constraint::ConstraintMemoryPolicy, 3_100)
        );
        let all = ConstraintInput {
            mempolicy_nodes: Some(&[0, 1]),
            ..base
        };
        assert_eq!(constrained_alloc(&all, &kb).0, Constraint::ConstraintNone);
        let cs = ConstraintInput {
            cpuset_mems: Some(&[0]),
            ..base
        };
        assert_eq!(
            constrained_alloc(&cs, &kb),
            (Constraint::ConstraintCpuset, 1_100)
        );
        let tn = ConstraintInput {
            thisnode: true,
            ..cs
        };
        assert_eq!(constrained_alloc(&tn, &kb).0, Constraint::ConstraintNone);
        let flat = ConstraintInput { numa: false, ..cs };
        assert_eq!(constrained_alloc(&flat, &kb).0, Constraint::ConstraintNone);
    }

    #[test]
    fn constrained_uses_present_pages_from_5_4() {
        let nodes = [NodePages {
            node: 0,
            spanned_pages: 1_100,
            present_pages: 1_000,
        }];
        assert_eq!(
            constrained_totalpages(&nodes, 10, &KernelBehavior::for_version(v(5, 3, 1))),
            1_110
        );
        assert_eq!(
            constrained_totalpages(&nodes, 10, &KernelBehavior::for_version(v(5, 4, 59))),
            1_010
        );
    }
}
