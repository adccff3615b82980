//! The victim of each OOM kill, as the kernel marks it.
//!
//! * `oom_mark_victim` (tracepoint `oom:mark_victim`): the kernel's own numbers
//!   for each victim (the fields of its "Killed process" line), read at offsets
//!   the agent took from the tracepoint's tracefs `format` file.
//! * `oom_mark_victim_task` (`tp_btf/mark_victim`): the victim's `task_struct`,
//!   followed to its tgid and its memory cgroup id, at offsets the agent took
//!   from the kernel's BTF. Optional: without it events carry no memcg.
//!
//! Both mark_victim programs run inside the same `trace_mark_victim()` call, in
//! an order the kernel does not promise. The task program stores what it found
//! in `VICTIM_TASKS` under the victim's pid; the tracepoint program joins it in
//! when it is already there, and the agent joins it otherwise.

use aya_ebpf::{
    EbpfContext,
    helpers::{bpf_get_current_pid_tgid, bpf_ktime_get_boot_ns, bpf_probe_read_kernel_str_bytes},
    macros::{btf_tracepoint, map, tracepoint},
    maps::LruHashMap,
    programs::{BtfTracePointContext, TracePointContext},
};
use aya_log_ebpf::debug;
use oomwatch_common::{EventKind, MarkVictimLayout, TaskLayout, VictimEvent, VictimTask, present};

use crate::common::{emit, field, read_at};

/// Offsets inside the `oom:mark_victim` record; written by the agent before load.
#[unsafe(no_mangle)]
static MARK_VICTIM_LAYOUT: aya_ebpf::Global<MarkVictimLayout> =
    aya_ebpf::Global::new(MarkVictimLayout::ABSENT);

/// Offsets inside `task_struct` and the cgroup structures; written by the agent.
#[unsafe(no_mangle)]
static TASK_LAYOUT: aya_ebpf::Global<TaskLayout> = aya_ebpf::Global::new(TaskLayout::INVALID);

/// Victim pid -> what `oom_mark_victim_task` read from its task.
#[map]
static VICTIM_TASKS: LruHashMap<u32, VictimTask> = LruHashMap::with_max_entries(1024, 0);

#[tracepoint(category = "oom", name = "mark_victim")]
pub fn oom_mark_victim(ctx: TracePointContext) -> u32 {
    match try_oom_mark_victim(&ctx) {
        Ok(()) => 0,
        Err(()) => 1,
    }
}

fn try_oom_mark_victim(ctx: &TracePointContext) -> Result<(), ()> {
    let layout = MARK_VICTIM_LAYOUT.load();
    let mut ev = VictimEvent::ZERO;
    ev.kind = EventKind::MarkVictim as u32;
    let p = &mut ev.present;
    ev.pid = field::<i32>(ctx, layout.pid, present::PID, p).unwrap_or(0) as u32;
    ev.total_vm_kb = field(ctx, layout.total_vm, present::TOTAL_VM, p).unwrap_or(0);
    ev.anon_rss_kb = field(ctx, layout.anon_rss, present::ANON_RSS, p).unwrap_or(0);
    ev.file_rss_kb = field(ctx, layout.file_rss, present::FILE_RSS, p).unwrap_or(0);
    ev.shmem_rss_kb = field(ctx, layout.shmem_rss, present::SHMEM_RSS, p).unwrap_or(0);
    ev.uid = field(ctx, layout.uid, present::UID, p).unwrap_or(0);
    ev.pgtables_kb = field(ctx, layout.pgtables, present::PGTABLES, p).unwrap_or(0);
    ev.oom_score_adj = field(ctx, layout.oom_score_adj, present::OOM_SCORE_ADJ, p).unwrap_or(0);
    if let Some(loc) = field::<u32>(ctx, layout.comm, 0, p) {
        // __data_loc: low 16 bits are the string's offset inside the record.
        let src = unsafe { (ctx.as_ptr() as *const u8).add((loc & 0xffff) as usize) };
        // SAFETY: bounded by ev.comm's length; a bad pointer fails the read.
        if unsafe { bpf_probe_read_kernel_str_bytes(src, &mut ev.comm) }.is_ok() {
            ev.present |= present::COMM;
        }
    }
    if ev.present & present::PID != 0 {
        // SAFETY: the value is copied out before the entry is removed.
        if let Some(task) = unsafe { VICTIM_TASKS.get(ev.pid) } {
            ev.tgid = task.tgid;
            ev.memcg_id = task.memcg_id;
            ev.present |= present::TASK;
            let _ = VICTIM_TASKS.remove(ev.pid);
        }
    }
    // mark_oom_victim() runs in the task that is in the OOM killer.
    ev.marker_tgid = (bpf_get_current_pid_tgid() >> 32) as u32;
    ev.present |= present::MARKER;
    // SAFETY: plain helper call, no arguments.
    ev.boot_ns = unsafe { bpf_ktime_get_boot_ns() };

    // The log target the agent shows, as before the crate was split in files.
    debug!(
        ctx,
        target: "oomwatch",
        "mark_victim pid={} anon_rss={}kB",
        ev.pid,
        ev.anon_rss_kb
    );
    emit(ev)
}

#[btf_tracepoint(function = "mark_victim")]
pub fn oom_mark_victim_task(ctx: BtfTracePointContext) -> i32 {
    let _ = try_oom_mark_victim_task(&ctx);
    0
}

fn try_oom_mark_victim_task(ctx: &BtfTracePointContext) -> Result<(), i32> {
    let l = TASK_LAYOUT.load();
    if l.valid == 0 {
        return Ok(());
    }
    // TP_PROTO(struct task_struct *task, uid_t uid) since the 6.9-era change;
    // before it TP_PROTO(int pid), which the agent detects from BTF and then
    // leaves this program unloaded.
    let task: *const u8 = ctx.arg(0);
    // SAFETY (all reads below): probe reads of kernel memory, see read_at.
    let pid: i32 = unsafe { read_at(task, l.task_pid)? };
    let tgid: i32 = unsafe { read_at(task, l.task_tgid)? };
    let memcg_id = memcg_id_of(task, &l)?;
    let value = VictimTask {
        tgid: tgid as u32,
        marker_tgid: (bpf_get_current_pid_tgid() >> 32) as u32,
        memcg_id,
        // SAFETY: plain helper call, no arguments.
        boot_ns: unsafe { bpf_ktime_get_boot_ns() },
    };
    VICTIM_TASKS.insert(pid as u32, value, 0)
}

/// Follows `css_set → memory css → cgroup → kernfs node` to the memory
/// cgroup's id (0 where the chain ends early).
#[inline(always)]
fn memcg_id_of(task: *const u8, l: &TaskLayout) -> Result<u64, i32> {
    // SAFETY (all reads): probe reads of kernel memory, see read_at.
    let cgroups: *const u8 = unsafe { read_at(task, l.task_cgroups)? };
    if cgroups.is_null() {
        return Ok(0);
    }
    let css: *const u8 = unsafe { read_at(cgroups, l.css_set_memory_subsys)? };
    if css.is_null() {
        return Ok(0);
    }
    let cgroup: *const u8 = unsafe { read_at(css, l.css_cgroup)? };
    let kn: *const u8 = unsafe { read_at(cgroup, l.cgroup_kn)? };
    unsafe { read_at(kn, l.kernfs_node_id) }
}
