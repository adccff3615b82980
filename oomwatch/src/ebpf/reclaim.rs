//! Reclaim exhausted: the allocator's last step before a global OOM
//! (`oom:reclaim_retry_zone`).

use oomwatch_common::ReclaimExhaustedEvent;

use super::victim::comm_string;

/// The page allocator gave up reclaiming for an allocation
/// (`oom:reclaim_retry_zone` with `MAX_RECLAIM_RETRIES` loops without
/// progress and a failed watermark): a global OOM is about to start.
#[derive(Debug, Clone, serde::Serialize)]
pub struct ReclaimExhausted {
    pub tgid: u32,
    pub pid: u32,
    pub comm: String,
    /// Allocation order; None when the record had no order field.
    pub order: Option<i32>,
    pub boot_ns: u64,
}

impl From<&ReclaimExhaustedEvent> for ReclaimExhausted {
    fn from(ev: &ReclaimExhaustedEvent) -> Self {
        ReclaimExhausted {
            tgid: ev.tgid,
            pid: ev.pid,
            comm: comm_string(&ev.comm),
            order: (ev.order >= 0).then_some(ev.order),
            boot_ns: ev.boot_ns,
        }
    }
}
