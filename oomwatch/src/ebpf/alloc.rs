//! Sampled page allocation failures (`kmem:mm_page_alloc`).

use oomwatch_common::AllocFailEvent;

use super::victim::comm_string;

/// A page allocation that returned no page (`kmem:mm_page_alloc` with no
/// pfn), as the kernel side reported it (rate-limited).
#[derive(Debug, Clone, serde::Serialize)]
pub struct AllocFailure {
    pub tgid: u32,
    pub pid: u32,
    pub comm: String,
    pub order: u32,
    pub gfp_flags: u64,
    pub migratetype: i32,
    pub boot_ns: u64,
}

impl From<&AllocFailEvent> for AllocFailure {
    fn from(ev: &AllocFailEvent) -> Self {
        AllocFailure {
            tgid: ev.tgid,
            pid: ev.pid,
            comm: comm_string(&ev.comm),
            order: ev.order,
            gfp_flags: ev.gfp_flags,
            migratetype: ev.migratetype,
            boot_ns: ev.boot_ns,
        }
    }
}
