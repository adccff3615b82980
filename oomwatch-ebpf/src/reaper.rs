//! `reaper_*` (`oom:wake_reaper`, `start_task_reaping`,
//! `finish_task_reaping`, `skip_task_reaping`): the OOM reaper's progress
//! per victim, on the ring buffer.

use aya_ebpf::{helpers::bpf_ktime_get_boot_ns, macros::tracepoint, programs::TracePointContext};
use oomwatch_common::{EventKind, FIELD_ABSENT, ReaperEvent};

use crate::common::emit;

/// Offset of `int pid` in the `oom:*reap*` records; written by the agent.
#[unsafe(no_mangle)]
static REAPER_PID: aya_ebpf::Global<u32> = aya_ebpf::Global::new(FIELD_ABSENT);

#[inline(always)]
fn reaper(ctx: &TracePointContext, stage: u32) -> u32 {
    let off = REAPER_PID.load();
    if off == FIELD_ABSENT {
        return 0;
    }
    // SAFETY: bpf_probe_read on the tracepoint record.
    let Ok(pid) = (unsafe { ctx.read_at::<i32>(off as usize) }) else {
        return 0;
    };
    let ev = ReaperEvent {
        kind: EventKind::Reaper as u32,
        pid: pid as u32,
        stage,
        _pad: 0,
        // SAFETY: plain helper call, no arguments.
        boot_ns: unsafe { bpf_ktime_get_boot_ns() },
    };
    let _ = emit(ev);
    0
}

#[tracepoint(category = "oom", name = "wake_reaper")]
pub fn reaper_wake(ctx: TracePointContext) -> u32 {
    reaper(&ctx, oomwatch_common::reaper::WAKE)
}

#[tracepoint(category = "oom", name = "start_task_reaping")]
pub fn reaper_start(ctx: TracePointContext) -> u32 {
    reaper(&ctx, oomwatch_common::reaper::START)
}

#[tracepoint(category = "oom", name = "finish_task_reaping")]
pub fn reaper_finish(ctx: TracePointContext) -> u32 {
    reaper(&ctx, oomwatch_common::reaper::FINISH)
}

#[tracepoint(category = "oom", name = "skip_task_reaping")]
pub fn reaper_skip(ctx: TracePointContext) -> u32 {
    reaper(&ctx, oomwatch_common::reaper::SKIP)
}
