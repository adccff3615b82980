//! Reading the counters the programs keep in per-CPU maps, and the kernel's
//! run-time statistics of each program.

use std::time::Duration;

use aya::maps::PerCpuArray;
use oomwatch_common::{fault, page_alloc, reclaim, retry};

use super::Probes;

/// One attached program's kernel-side statistics.
#[derive(Debug, Clone, serde::Serialize)]
pub struct ProgramStats {
    pub name: String,
    pub run_count: u64,
    pub run_time: Duration,
    /// Instructions the verifier processed (its complexity measure).
    pub verified_instructions: Option<u32>,
}

impl Probes {
    /// `FAULTS` summed over CPUs (slots of `oomwatch_common::fault`); None
    /// when nothing counts into it.
    pub fn fault_counts(&self) -> Option<Vec<u64>> {
        self.faults
            .then(|| self.sum_per_cpu("FAULTS", fault::SLOTS))
            .flatten()
    }

    /// `RETRY_DECISIONS` summed over CPUs (slots of `oomwatch_common::retry`).
    pub fn retry_decisions(&self) -> Option<Vec<u64>> {
        self.retries
            .then(|| self.sum_per_cpu("RETRY_DECISIONS", retry::SLOTS))
            .flatten()
    }

    fn sum_per_cpu(&self, name: &str, n: u32) -> Option<Vec<u64>> {
        let map = PerCpuArray::<_, u64>::try_from(self.ebpf.map(name)?).ok()?;
        (0..n)
            .map(|i| map.get(&i, 0).ok().map(|v| v.iter().sum()))
            .collect()
    }

    /// Page allocation counts (slots of `oomwatch_common::page_alloc`) and
    /// failures by order, summed over CPUs; None when not attached.
    pub fn page_alloc_counts(&self) -> Option<(Vec<u64>, Vec<u64>)> {
        if !self.page_alloc {
            return None;
        }
        Some((
            self.sum_per_cpu("PAGE_ALLOCS", page_alloc::SLOTS)?,
            self.sum_per_cpu("PAGE_ALLOC_FAILS", page_alloc::ORDERS)?,
        ))
    }

    /// The kernel-side reclaim stall histogram summed over CPUs, per kind
    /// (`reclaim::DIRECT`, `reclaim::MEMCG`): bucket counts, then the sum of
    /// nanoseconds. None when no reclaim program is attached.
    pub fn reclaim_histogram(&self) -> Option<Vec<Vec<u64>>> {
        if self.reclaim_kinds == 0 {
            return None;
        }
        let map = PerCpuArray::<_, u64>::try_from(self.ebpf.map("RECLAIM_HIST")?).ok()?;
        let per_kind = (reclaim::BUCKETS + 1) as usize;
        let mut out = vec![vec![0u64; per_kind]; reclaim::KINDS as usize];
        for (k, row) in out.iter_mut().enumerate() {
            for (i, slot) in row.iter_mut().enumerate() {
                let idx = k as u32 * reclaim::STRIDE + i as u32;
                *slot = map.get(&idx, 0).ok()?.iter().sum();
            }
        }
        Some(out)
    }

    /// Run count, run time and verifier size of every loaded program.
    pub fn program_stats(&self) -> Vec<ProgramStats> {
        self.ebpf
            .programs()
            .filter_map(|(name, p)| {
                let info = p.info().ok()?;
                Some(ProgramStats {
                    name: name.to_owned(),
                    run_count: info.run_count(),
                    run_time: info.run_time(),
                    verified_instructions: info.verified_instruction_count(),
                })
            })
            .collect()
    }
}
