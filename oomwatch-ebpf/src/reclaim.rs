//! Reclaim and compaction: how the page allocator's slowpath retries and how
//! long tasks stall in it.
//!
//! * `oom_reclaim_retry` (tracepoint `oom:reclaim_retry_zone`): the page
//!   allocator's reclaim-retry decisions; one event (rate-limited per CPU)
//!   when a retry has run out of no-progress loops and fails its watermark,
//!   the last step before a global OOM.
//! * `reclaim_{direct,memcg}_{begin,end}` (tracepoints
//!   `vmscan:mm_vmscan_{direct,memcg}_reclaim_{begin,end}`): how long each
//!   task stalled in direct (page allocator) and memcg (charge) reclaim, as a
//!   log2 histogram kept in the kernel.
//! * `compaction_begin/end` (`compaction:mm_compaction_begin/end`): each
//!   `compact_zone()` run timed into the same histogram.
//! * `oom_compact_retry` and `oom_reclaim_retry`: the slowpath's retry
//!   decisions counted in `RETRY_DECISIONS`.

use aya_ebpf::{
    helpers::{bpf_get_current_comm, bpf_get_current_pid_tgid, bpf_ktime_get_boot_ns},
    macros::{map, tracepoint},
    maps::{HashMap, PerCpuArray},
    programs::TracePointContext,
};
use oomwatch_common::{
    EventKind, FIELD_ABSENT, MAX_RECLAIM_RETRIES, ReclaimExhaustedEvent, ReclaimRetryLayout,
    reclaim, retry,
};

use crate::common::{bump, emit, this_cpu_may_report};

/// Offsets inside the `oom:reclaim_retry_zone` record; written by the agent.
#[unsafe(no_mangle)]
static RECLAIM_RETRY_LAYOUT: aya_ebpf::Global<ReclaimRetryLayout> =
    aya_ebpf::Global::new(ReclaimRetryLayout::ABSENT);

/// Slot 0: when this CPU last reported exhausted reclaim (boot ns).
#[map]
static LAST_EXHAUSTED: PerCpuArray<u64> = PerCpuArray::with_max_entries(1, 0);

/// Per-CPU gap between two exhausted-reclaim events.
const EXHAUSTED_EVERY_NS: u64 = 100_000_000;

#[tracepoint(category = "oom", name = "reclaim_retry_zone")]
pub fn oom_reclaim_retry(ctx: TracePointContext) -> u32 {
    let _ = try_oom_reclaim_retry(&ctx);
    0
}

fn try_oom_reclaim_retry(ctx: &TracePointContext) -> Result<(), ()> {
    let l = RECLAIM_RETRY_LAYOUT.load();
    if l.no_progress_loops == FIELD_ABSENT || l.wmark_check == FIELD_ABSENT {
        return Ok(());
    }
    // SAFETY: bpf_probe_read on the tracepoint record (see `field`).
    let loops: i32 = unsafe { ctx.read_at(l.no_progress_loops as usize) }.map_err(|_| ())?;
    let wmark: u8 = unsafe { ctx.read_at(l.wmark_check as usize) }.map_err(|_| ())?;
    bump(
        &RETRY_DECISIONS,
        if wmark != 0 {
            retry::RECLAIM_RETRY
        } else {
            retry::RECLAIM_GIVE_UP
        },
    );
    if loops < MAX_RECLAIM_RETRIES || wmark != 0 {
        return Ok(());
    }
    // SAFETY: plain helper call, no arguments.
    let now = unsafe { bpf_ktime_get_boot_ns() };
    if !this_cpu_may_report(&LAST_EXHAUSTED, now, EXHAUSTED_EVERY_NS) {
        return Ok(());
    }
    let order: i32 = if l.order == FIELD_ABSENT {
        -1
    } else {
        unsafe { ctx.read_at(l.order as usize) }.unwrap_or(-1)
    };
    let id = bpf_get_current_pid_tgid();
    let ev = ReclaimExhaustedEvent {
        kind: EventKind::ReclaimExhausted as u32,
        tgid: (id >> 32) as u32,
        pid: id as u32,
        order,
        boot_ns: now,
        comm: bpf_get_current_comm().unwrap_or([0; 16]),
    };
    emit(ev)
}

/// (kind << 32 | pid) -> when that task entered reclaim (boot ns).
#[map]
static RECLAIM_START: HashMap<u64, u64> = HashMap::with_max_entries(8192, 0);

/// See `oomwatch_common::reclaim`.
#[map]
static RECLAIM_HIST: PerCpuArray<u64> = PerCpuArray::with_max_entries(reclaim::SLOTS, 0);

#[inline(always)]
fn reclaim_key(kind: u32) -> u64 {
    (u64::from(kind) << 32) | (bpf_get_current_pid_tgid() & 0xffff_ffff)
}

#[inline(always)]
fn reclaim_begin(kind: u32) -> u32 {
    // SAFETY: plain helper call, no arguments.
    let now = unsafe { bpf_ktime_get_boot_ns() };
    let _ = RECLAIM_START.insert(reclaim_key(kind), now, 0);
    0
}

#[inline(always)]
fn reclaim_end(kind: u32) -> u32 {
    let key = reclaim_key(kind);
    // SAFETY: the value is copied out before the entry is removed.
    let Some(start) = (unsafe { RECLAIM_START.get(key) }).copied() else {
        // Began before oomwatch attached.
        return 0;
    };
    let _ = RECLAIM_START.remove(key);
    // SAFETY: plain helper call, no arguments.
    let ns = unsafe { bpf_ktime_get_boot_ns() }.saturating_sub(start);
    let mut us = ns / 1000;
    let mut bucket = 0u32;
    while us > 1 && bucket < reclaim::BUCKETS - 1 {
        us >>= 1;
        bucket += 1;
    }
    let base = kind * reclaim::STRIDE;
    if let Some(n) = RECLAIM_HIST.get_ptr_mut(base + bucket) {
        // SAFETY: per-CPU slot, no concurrent writer on this CPU.
        unsafe { *n += 1 };
    }
    if let Some(sum) = RECLAIM_HIST.get_ptr_mut(base + reclaim::BUCKETS) {
        // SAFETY: as above.
        unsafe { *sum += ns };
    }
    0
}

#[tracepoint(category = "vmscan", name = "mm_vmscan_direct_reclaim_begin")]
pub fn reclaim_direct_begin(_ctx: TracePointContext) -> u32 {
    reclaim_begin(reclaim::DIRECT)
}

#[tracepoint(category = "vmscan", name = "mm_vmscan_direct_reclaim_end")]
pub fn reclaim_direct_end(_ctx: TracePointContext) -> u32 {
    reclaim_end(reclaim::DIRECT)
}

#[tracepoint(category = "vmscan", name = "mm_vmscan_memcg_reclaim_begin")]
pub fn reclaim_memcg_begin(_ctx: TracePointContext) -> u32 {
    reclaim_begin(reclaim::MEMCG)
}

#[tracepoint(category = "vmscan", name = "mm_vmscan_memcg_reclaim_end")]
pub fn reclaim_memcg_end(_ctx: TracePointContext) -> u32 {
    reclaim_end(reclaim::MEMCG)
}

#[tracepoint(category = "compaction", name = "mm_compaction_begin")]
pub fn compaction_begin(_ctx: TracePointContext) -> u32 {
    reclaim_begin(reclaim::COMPACTION)
}

#[tracepoint(category = "compaction", name = "mm_compaction_end")]
pub fn compaction_end(_ctx: TracePointContext) -> u32 {
    reclaim_end(reclaim::COMPACTION)
}

/// See `oomwatch_common::retry`.
#[map]
static RETRY_DECISIONS: PerCpuArray<u64> = PerCpuArray::with_max_entries(retry::SLOTS, 0);

/// Offset of the `bool ret` field of `oom:compact_retry`; written by the agent.
#[unsafe(no_mangle)]
static COMPACT_RETRY_RET: aya_ebpf::Global<u32> = aya_ebpf::Global::new(FIELD_ABSENT);

#[tracepoint(category = "oom", name = "compact_retry")]
pub fn oom_compact_retry(ctx: TracePointContext) -> u32 {
    let off = COMPACT_RETRY_RET.load();
    if off == FIELD_ABSENT {
        return 0;
    }
    // SAFETY: bpf_probe_read on the tracepoint record.
    let Ok(ret) = (unsafe { ctx.read_at::<u8>(off as usize) }) else {
        return 0;
    };
    bump(
        &RETRY_DECISIONS,
        if ret != 0 {
            retry::COMPACT_RETRY
        } else {
            retry::COMPACT_GIVE_UP
        },
    );
    0
}
