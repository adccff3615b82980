//! The kernel's own OOM path, where the kernel lets oomwatch in: each comes
//! as an fentry/fexit program and a kprobe/kretprobe twin; the agent attaches
//! one of the two (fentry where the kernel takes it, else kprobe) or neither.
//!
//! * `out_of_memory()` entry and return: the OOM starts (gfp, order, memcg or
//!   not) and ends. The thread inside it is remembered in `IN_OOM`, so that
//!   `oom_badness()` calls made for `/proc/PID/oom_score` are not reported.
//! * `oom_badness()` return: the points the kernel computed for each task it
//!   scanned, and the totalpages it scaled `oom_score_adj` by.
//! * `oom_kill_process()` entry: the chosen task and `chosen_points` from
//!   `struct oom_control`, while the kernel still holds its reference.
//! * `pagefault_out_of_memory()` entry and `handle_mm_fault()` returning
//!   `VM_FAULT_OOM`: page-fault OOMs, for kernels (arm64) without the
//!   `exceptions:page_fault_user` tracepoint.
//!
//! Struct offsets and argument positions come from the kernel's BTF through
//! `OOM_SCAN_LAYOUT`, so one object serves every kernel. The fexit programs
//! read return values with `bpf_get_func_ret` (Linux 5.17+); for older
//! kernels `oom_badness()` has a twin reading the context's slot after the
//! parameters (`badness_fexit_ctx`), the others fall back to kprobes.
//!
//! `probe_fentry` / `probe_fexit` (on `out_of_memory()`, never attached):
//! empty programs that `oomwatch check` loads to learn whether this kernel
//! accepts fentry/fexit at all.

use aya_ebpf::{
    helpers::{bpf_get_current_comm, bpf_get_current_pid_tgid, bpf_ktime_get_boot_ns},
    macros::{fentry, fexit, kprobe, kretprobe, map},
    maps::HashMap,
    programs::{FEntryContext, FExitContext, ProbeContext, RetProbeContext},
};
use oomwatch_common::{
    BadnessEvent, EventKind, OomChosenEvent, OomEnterEvent, OomExitEvent, OomScanLayout, fault,
};

use crate::{
    alloc::FAULTS,
    common::{bump, emit, read_at},
};

/// Offsets for the OOM-path programs; written by the agent before load.
#[unsafe(no_mangle)]
static OOM_SCAN_LAYOUT: aya_ebpf::Global<OomScanLayout> =
    aya_ebpf::Global::new(OomScanLayout::INVALID);

/// Threads (pid_tgid) inside `out_of_memory()`.
#[map]
static IN_OOM: HashMap<u64, u64> = HashMap::with_max_entries(1024, 0);

/// kprobe path: pid_tgid -> (task, totalpages) passed to `oom_badness()`,
/// for its kretprobe, which sees no arguments.
#[map]
static BADNESS_ARGS: HashMap<u64, [u64; 2]> = HashMap::with_max_entries(1024, 0);

#[inline(always)]
fn now() -> u64 {
    // SAFETY: plain helper call, no arguments.
    unsafe { bpf_ktime_get_boot_ns() }
}

fn oom_enter(oc: *const u8) -> Result<(), i32> {
    let l = OOM_SCAN_LAYOUT.load();
    if l.valid == 0 || oc.is_null() {
        return Ok(());
    }
    let id = bpf_get_current_pid_tgid();
    IN_OOM.insert(id, oc as u64, 0)?;
    // SAFETY (all reads): probe reads of kernel memory, see read_at.
    let memcg: u64 = unsafe { read_at(oc, l.oc_memcg)? };
    let gfp_mask: u32 = unsafe { read_at(oc, l.oc_gfp_mask)? };
    let order: i32 = unsafe { read_at(oc, l.oc_order)? };
    let ev = OomEnterEvent {
        kind: EventKind::OomEnter as u32,
        tgid: (id >> 32) as u32,
        pid: id as u32,
        order,
        gfp_mask,
        memcg: u32::from(memcg != 0),
        boot_ns: now(),
        comm: bpf_get_current_comm().unwrap_or([0; 16]),
    };
    emit(ev).map_err(|()| -1)
}

fn oom_exit(ret: u64) -> Result<(), i32> {
    let id = bpf_get_current_pid_tgid();
    // SAFETY: the value is not kept.
    if unsafe { IN_OOM.get(id) }.is_none() {
        return Ok(());
    }
    let _ = IN_OOM.remove(id);
    let ev = OomExitEvent {
        kind: EventKind::OomExit as u32,
        tgid: (id >> 32) as u32,
        pid: id as u32,
        ret: u32::from(ret & 0xff != 0),
        boot_ns: now(),
    };
    emit(ev).map_err(|()| -1)
}

fn badness_done(task: *const u8, totalpages: u64, points: i64) -> Result<(), i32> {
    let l = OOM_SCAN_LAYOUT.load();
    let id = bpf_get_current_pid_tgid();
    // SAFETY: the value is not kept.
    if l.valid == 0 || task.is_null() || unsafe { IN_OOM.get(id) }.is_none() {
        return Ok(());
    }
    // SAFETY: probe reads of kernel memory, see read_at.
    let pid: i32 = unsafe { read_at(task, l.task_pid)? };
    let tgid: i32 = unsafe { read_at(task, l.task_tgid)? };
    let ev = BadnessEvent {
        kind: EventKind::Badness as u32,
        pid: pid as u32,
        tgid: tgid as u32,
        scanner: id as u32,
        points,
        totalpages,
        boot_ns: now(),
    };
    emit(ev).map_err(|()| -1)
}

fn oom_chosen(oc: *const u8) -> Result<(), i32> {
    let l = OOM_SCAN_LAYOUT.load();
    if l.valid == 0 || oc.is_null() {
        return Ok(());
    }
    // SAFETY (all reads): probe reads of kernel memory, see read_at.
    let chosen: *const u8 = unsafe { read_at(oc, l.oc_chosen)? };
    // NULL: nothing chosen; -1: the scan was aborted for a pending victim.
    if chosen.is_null() || chosen as i64 == -1 {
        return Ok(());
    }
    let pid: i32 = unsafe { read_at(chosen, l.task_pid)? };
    let tgid: i32 = unsafe { read_at(chosen, l.task_tgid)? };
    let ev = OomChosenEvent {
        kind: EventKind::OomChosen as u32,
        pid: pid as u32,
        tgid: tgid as u32,
        constraint: unsafe { read_at(oc, l.oc_constraint)? },
        chosen_points: unsafe { read_at(oc, l.oc_chosen_points)? },
        totalpages: unsafe { read_at(oc, l.oc_totalpages)? },
        boot_ns: now(),
        scanner: bpf_get_current_pid_tgid() as u32,
        _pad: 0,
    };
    emit(ev).map_err(|()| -1)
}

#[fentry(function = "out_of_memory")]
pub fn oom_enter_fentry(ctx: FEntryContext) -> u32 {
    let _ = oom_enter(ctx.arg(0));
    0
}

#[kprobe]
pub fn oom_enter_kprobe(ctx: ProbeContext) -> u32 {
    let _ = oom_enter(ctx.arg(0).unwrap_or(core::ptr::null()));
    0
}

#[fexit(function = "out_of_memory")]
pub fn oom_exit_fexit(ctx: FExitContext) -> u32 {
    // bool out_of_memory(struct oom_control *oc): the return follows oc.
    let _ = oom_exit(ctx.arg(1));
    0
}

#[kretprobe]
pub fn oom_exit_kretprobe(ctx: RetProbeContext) -> u32 {
    let _ = oom_exit(ctx.ret());
    0
}

/// Loaded (never attached) by `oomwatch check`: does this kernel take fentry?
#[fentry(function = "out_of_memory")]
pub fn probe_fentry(_ctx: FEntryContext) -> u32 {
    0
}

/// Loaded (never attached) by `oomwatch check`: does this kernel take fexit?
#[fexit(function = "out_of_memory")]
pub fn probe_fexit(_ctx: FExitContext) -> u32 {
    0
}

#[fexit(function = "oom_badness")]
pub fn badness_fexit(ctx: FExitContext) -> u32 {
    // The return value comes from bpf_get_func_ret: reading the context
    // past the parameters is refused on kernels where the agent's idea of
    // their number would be wrong.
    let Ok(points) = ctx.ret::<i64>() else {
        return 0;
    };
    let _ = badness_done(ctx.arg(0), ctx.arg(1), points);
    0
}

/// `badness_fexit` for kernels without `bpf_get_func_ret` (before 5.17:
/// the verifier refuses the helper call, "invalid func unknown#184"): the
/// return value is the context's slot after the parameters, index 2 for
/// `long oom_badness(struct task_struct *, unsigned long)` (the agent
/// attaches this only where BTF gives the function exactly two).
#[fexit(function = "oom_badness")]
pub fn badness_fexit_ctx(ctx: FExitContext) -> u32 {
    let points: i64 = ctx.arg(2);
    let _ = badness_done(ctx.arg(0), ctx.arg(1), points);
    0
}

#[kprobe]
pub fn badness_kprobe(ctx: ProbeContext) -> u32 {
    let id = bpf_get_current_pid_tgid();
    // SAFETY: the value is not kept.
    if unsafe { IN_OOM.get(id) }.is_none() {
        return 0;
    }
    // oom_badness(struct task_struct *p, unsigned long totalpages): the
    // agent hooks only this form (5.3+; BPF ring buffers need 5.8 anyway).
    let task: u64 = ctx.arg(0).unwrap_or(0);
    let totalpages: u64 = ctx.arg(1).unwrap_or(0);
    let _ = BADNESS_ARGS.insert(id, [task, totalpages], 0);
    0
}

#[kretprobe]
pub fn badness_kretprobe(ctx: RetProbeContext) -> u32 {
    let id = bpf_get_current_pid_tgid();
    // SAFETY: copied out before the entry is removed.
    let Some(args) = (unsafe { BADNESS_ARGS.get(id) }).copied() else {
        return 0;
    };
    let _ = BADNESS_ARGS.remove(id);
    let _ = badness_done(args[0] as *const u8, args[1], ctx.ret());
    0
}

#[fentry(function = "oom_kill_process")]
pub fn chosen_fentry(ctx: FEntryContext) -> u32 {
    let _ = oom_chosen(ctx.arg(0));
    0
}

#[kprobe]
pub fn chosen_kprobe(ctx: ProbeContext) -> u32 {
    let _ = oom_chosen(ctx.arg(0).unwrap_or(core::ptr::null()));
    0
}

#[fentry(function = "pagefault_out_of_memory")]
pub fn pagefault_oom_fentry(_ctx: FEntryContext) -> u32 {
    bump(&FAULTS, fault::PAGEFAULT_OOM);
    0
}

#[kprobe]
pub fn pagefault_oom_kprobe(_ctx: ProbeContext) -> u32 {
    bump(&FAULTS, fault::PAGEFAULT_OOM);
    0
}

/// `VM_FAULT_OOM` in `vm_fault_t` (include/linux/mm_types.h).
const VM_FAULT_OOM: u32 = 1;

#[fexit(function = "handle_mm_fault")]
pub fn fault_fexit(ctx: FExitContext) -> u32 {
    let Ok(ret) = ctx.ret::<u64>() else {
        return 0;
    };
    if ret as u32 & VM_FAULT_OOM != 0 {
        bump(&FAULTS, fault::VM_FAULT_OOM);
    }
    0
}

#[kretprobe]
pub fn fault_kretprobe(ctx: RetProbeContext) -> u32 {
    let ret: u64 = ctx.ret();
    if ret as u32 & VM_FAULT_OOM != 0 {
        bump(&FAULTS, fault::VM_FAULT_OOM);
    }
    0
}
