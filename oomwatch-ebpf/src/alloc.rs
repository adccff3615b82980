//! Page allocations and user page faults, the two hot events.
//!
//! * `page_alloc` (tracepoint `kmem:mm_page_alloc`): every page allocation
//!   counted in the kernel by GFP class × migratetype × order (never one
//!   record per allocation); an allocation that got no page is counted by
//!   order and reported on the ring buffer, at most once per CPU per 10 ms.
//! * `user_fault` (`exceptions:page_fault_user`, x86): user page faults
//!   counted by access in `FAULTS`.
//! * `page_alloc_btf` / `user_fault_btf` (`tp_btf/mm_page_alloc`,
//!   `tp_btf/page_fault_user`): the same two events as BTF tracepoints,
//!   which the agent prefers where BTF has them.
//! * `floor_alloc` / `floor_fault`: empty programs on the hot events, for the
//!   benchmark's floor.

use aya_ebpf::{
    helpers::{bpf_get_current_comm, bpf_get_current_pid_tgid, bpf_ktime_get_boot_ns},
    macros::{btf_tracepoint, map, tracepoint},
    maps::PerCpuArray,
    programs::{BtfTracePointContext, TracePointContext},
};
use oomwatch_common::{
    AllocFailEvent, EventKind, FIELD_ABSENT, PageAllocLayout, fault, page_alloc as pa,
};

use crate::common::{bump, emit, this_cpu_may_report};

/// Offsets inside the `kmem:mm_page_alloc` record; written by the agent.
#[unsafe(no_mangle)]
static PAGE_ALLOC_LAYOUT: aya_ebpf::Global<PageAllocLayout> =
    aya_ebpf::Global::new(PageAllocLayout::ABSENT);

/// See `oomwatch_common::page_alloc`.
#[map]
static PAGE_ALLOCS: PerCpuArray<u64> = PerCpuArray::with_max_entries(pa::SLOTS, 0);

/// Failed allocations by order.
#[map]
static PAGE_ALLOC_FAILS: PerCpuArray<u64> = PerCpuArray::with_max_entries(pa::ORDERS, 0);

/// Slot 0: when this CPU last reported a failed allocation (boot ns).
#[map]
static LAST_ALLOC_FAIL: PerCpuArray<u64> = PerCpuArray::with_max_entries(1, 0);

const ALLOC_FAIL_EVERY_NS: u64 = 10_000_000;

#[tracepoint(category = "kmem", name = "mm_page_alloc")]
pub fn page_alloc(ctx: TracePointContext) -> u32 {
    let _ = try_page_alloc(&ctx);
    0
}

fn try_page_alloc(ctx: &TracePointContext) -> Result<(), ()> {
    let l = PAGE_ALLOC_LAYOUT.load();
    if l.order == FIELD_ABSENT || l.gfp_flags == FIELD_ABSENT {
        return Ok(());
    }
    // SAFETY (all reads): bpf_probe_read on the tracepoint record.
    let order: u32 = unsafe { ctx.read_at(l.order as usize) }.map_err(|_| ())?;
    let gfp: u64 = if l.gfp_size == 8 {
        unsafe { ctx.read_at::<u64>(l.gfp_flags as usize) }.map_err(|_| ())?
    } else {
        u64::from(unsafe { ctx.read_at::<u32>(l.gfp_flags as usize) }.map_err(|_| ())?)
    };
    let mt: i32 = if l.migratetype == FIELD_ABSENT {
        0
    } else {
        unsafe { ctx.read_at(l.migratetype as usize) }.unwrap_or(0)
    };
    let failed = if l.pfn != FIELD_ABSENT {
        unsafe { ctx.read_at::<u64>(l.pfn as usize) }.map_err(|_| ())? == u64::MAX
    } else if l.page != FIELD_ABSENT {
        unsafe { ctx.read_at::<u64>(l.page as usize) }.map_err(|_| ())? == 0
    } else {
        false
    };
    count_page_alloc(&l, order, gfp, mt, failed);
    Ok(())
}

/// `kmem:mm_page_alloc` as a BTF tracepoint: the arguments straight from
/// the call, `(struct page *page, unsigned int order, gfp_t gfp_flags, int
/// migratetype)`, without the record a classic tracepoint builds for every
/// allocation (most of its cost). The agent prefers it where BTF has it.
#[btf_tracepoint(function = "mm_page_alloc")]
pub fn page_alloc_btf(ctx: BtfTracePointContext) -> i32 {
    let l = PAGE_ALLOC_LAYOUT.load();
    let page: u64 = ctx.arg(0);
    let order: u32 = ctx.arg(1);
    let gfp: u32 = ctx.arg(2);
    let mt: i32 = ctx.arg(3);
    count_page_alloc(&l, order, u64::from(gfp), mt, page == 0);
    0
}

/// Counts one page allocation (and reports a failed one, rate-limited).
#[inline(always)]
fn count_page_alloc(l: &PageAllocLayout, order: u32, gfp: u64, mt: i32, failed: bool) {
    let g = gfp as u32;
    let class = if l.direct_reclaim != 0 && g & l.direct_reclaim == 0 {
        pa::CLASS_ATOMIC
    } else if l.hardwall != 0 && g & l.hardwall != 0 {
        pa::CLASS_USER
    } else {
        pa::CLASS_KERNEL
    };
    let o = if order < pa::ORDERS {
        order
    } else {
        pa::ORDERS - 1
    };
    let m = if mt >= 0 && (mt as u32) < pa::MIGRATETYPES {
        mt as u32
    } else {
        pa::MIGRATETYPES - 1
    };
    bump(
        &PAGE_ALLOCS,
        (class * pa::MIGRATETYPES + m) * pa::ORDERS + o,
    );
    if !failed {
        return;
    }
    bump(&PAGE_ALLOC_FAILS, o);
    // SAFETY: plain helper call, no arguments.
    let now = unsafe { bpf_ktime_get_boot_ns() };
    if !this_cpu_may_report(&LAST_ALLOC_FAIL, now, ALLOC_FAIL_EVERY_NS) {
        return;
    }
    let id = bpf_get_current_pid_tgid();
    let ev = AllocFailEvent {
        kind: EventKind::AllocFail as u32,
        tgid: (id >> 32) as u32,
        pid: id as u32,
        order,
        gfp_flags: gfp,
        migratetype: mt,
        _pad: 0,
        boot_ns: now,
        comm: bpf_get_current_comm().unwrap_or([0; 16]),
    };
    // A full ring is already counted in DROPPED.
    let _ = emit(ev);
}

/// See `oomwatch_common::fault`.
#[map]
pub(crate) static FAULTS: PerCpuArray<u64> = PerCpuArray::with_max_entries(fault::SLOTS, 0);

/// Offset of `unsigned long error_code` in `exceptions:page_fault_user`.
#[unsafe(no_mangle)]
static FAULT_ERROR_CODE: aya_ebpf::Global<u32> = aya_ebpf::Global::new(FIELD_ABSENT);

/// x86 page-fault error code bits (arch/x86/include/asm/trap_pf.h).
const X86_PF_WRITE: u64 = 1 << 1;
const X86_PF_INSTR: u64 = 1 << 4;

#[tracepoint(category = "exceptions", name = "page_fault_user")]
pub fn user_fault(ctx: TracePointContext) -> u32 {
    let off = FAULT_ERROR_CODE.load();
    if off == FIELD_ABSENT {
        return 0;
    }
    // SAFETY: bpf_probe_read on the tracepoint record.
    let Ok(code) = (unsafe { ctx.read_at::<u64>(off as usize) }) else {
        return 0;
    };
    count_fault(code);
    0
}

/// `exceptions:page_fault_user` as a BTF tracepoint: `(unsigned long
/// address, struct pt_regs *regs, unsigned long error_code)`, without the
/// record (see `page_alloc_btf`).
#[btf_tracepoint(function = "page_fault_user")]
pub fn user_fault_btf(ctx: BtfTracePointContext) -> i32 {
    let code: u64 = ctx.arg(2);
    count_fault(code);
    0
}

/// Counts one user page fault by access.
#[inline(always)]
fn count_fault(code: u64) {
    let slot = if code & X86_PF_INSTR != 0 {
        fault::INSTRUCTION
    } else if code & X86_PF_WRITE != 0 {
        fault::WRITE
    } else {
        fault::READ
    };
    bump(&FAULTS, slot);
}

/// Empty BTF tracepoint programs on the two hot events, attached only by the
/// benchmark (`cargo xtask bench`, P1): their run time per event under the
/// kernel's run-time statistics is the measurement's floor (the dispatch
/// and the statistics' own clock reads), measured over the same events.
#[btf_tracepoint(function = "mm_page_alloc")]
pub fn floor_alloc(_ctx: BtfTracePointContext) -> i32 {
    0
}

/// See `floor_alloc`.
#[btf_tracepoint(function = "page_fault_user")]
pub fn floor_fault(_ctx: BtfTracePointContext) -> i32 {
    0
}
