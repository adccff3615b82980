//! What every program family shares: the `EVENTS` ring buffer and its
//! `DROPPED` count (`emit`), the per-CPU counter and rate-limit helpers
//! (`bump`, `this_cpu_may_report`), and the readers of tracepoint records
//! (`field`) and of kernel memory (`read_at`).

use aya_ebpf::{
    helpers::bpf_probe_read_kernel,
    macros::map,
    maps::{PerCpuArray, RingBuf},
    programs::TracePointContext,
};
use oomwatch_common::FIELD_ABSENT;

/// Every event for the agent. 256 KiB holds about 2,700 victims.
#[map]
static EVENTS: RingBuf = RingBuf::with_byte_size(256 * 1024, 0);

/// Slot 0: events lost because the ring buffer was full.
#[map]
static DROPPED: PerCpuArray<u64> = PerCpuArray::with_max_entries(1, 0);

/// Per-CPU rate limit: true (and `now` recorded in slot 0 of `last`) when
/// this CPU last reported at least `every_ns` ago, or never.
#[inline(always)]
pub(crate) fn this_cpu_may_report(last: &PerCpuArray<u64>, now: u64, every_ns: u64) -> bool {
    let Some(last) = last.get_ptr_mut(0) else {
        return false;
    };
    // SAFETY: per-CPU slot, no concurrent writer on this CPU.
    unsafe {
        if *last != 0 && now.wrapping_sub(*last) < every_ns {
            return false;
        }
        *last = now;
    }
    true
}

/// Queues `ev` for the agent, or counts it in `DROPPED` when the ring is full.
#[inline(always)]
pub(crate) fn emit<T: 'static>(ev: T) -> Result<(), ()> {
    match EVENTS.reserve::<T>(0) {
        Some(mut entry) => {
            entry.write(ev);
            entry.submit(0);
            Ok(())
        }
        None => {
            bump(&DROPPED, 0);
            Err(())
        }
    }
}

/// Reads one field of the tracepoint record, if this kernel has it.
#[inline(always)]
pub(crate) fn field<T>(
    ctx: &TracePointContext,
    offset: u32,
    bit: u32,
    present: &mut u32,
) -> Option<T> {
    if offset == FIELD_ABSENT {
        return None;
    }
    // SAFETY: bpf_probe_read on the tracepoint record; a bad offset fails the
    // read, it cannot fault.
    let value = unsafe { ctx.read_at::<T>(offset as usize) }.ok()?;
    *present |= bit;
    Some(value)
}

/// `*(base + offset)` as a `T`, through `bpf_probe_read_kernel`.
#[inline(always)]
pub(crate) unsafe fn read_at<T>(base: *const u8, offset: u32) -> Result<T, i32> {
    // SAFETY: bpf_probe_read_kernel never faults; a bad address is an error.
    unsafe { bpf_probe_read_kernel(base.add(offset as usize) as *const T) }
}

#[inline(always)]
pub(crate) fn bump(map: &PerCpuArray<u64>, slot: u32) {
    if let Some(n) = map.get_ptr_mut(slot) {
        // SAFETY: per-CPU slot, no concurrent writer on this CPU.
        unsafe { *n += 1 };
    }
}
