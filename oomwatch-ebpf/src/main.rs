//! oomwatch's kernel-side programs.
//!
//! * `oom_mark_victim` (tracepoint `oom:mark_victim`): the kernel's own numbers
//!   for each victim (the fields of its "Killed process" line), read at offsets
//!   the agent took from the tracepoint's tracefs `format` file.
//! * `oom_mark_victim_task` (`tp_btf/mark_victim`): the victim's `task_struct`,
//!   followed to its tgid and its memory cgroup id, at offsets the agent took
//!   from the kernel's BTF. Optional: without it events carry no memcg.
//! * `oom_reclaim_retry` (tracepoint `oom:reclaim_retry_zone`): the page
//!   allocator's reclaim-retry decisions; one event (rate-limited per CPU)
//!   when a retry has run out of no-progress loops and fails its watermark,
//!   the last step before a global OOM.
//! * `reclaim_{direct,memcg}_{begin,end}` (tracepoints
//!   `vmscan:mm_vmscan_{direct,memcg}_reclaim_{begin,end}`): how long each
//!   task stalled in direct (page allocator) and memcg (charge) reclaim, as a
//!   log2 histogram kept in the kernel.
//! * `page_alloc` (tracepoint `kmem:mm_page_alloc`): every page allocation
//!   counted in the kernel by GFP class × migratetype × order (never one
//!   record per allocation); an allocation that got no page is counted by
//!   order and reported on the ring buffer, at most once per CPU per 10 ms.
//! * `compaction_begin/end` (`compaction:mm_compaction_begin/end`): each
//!   `compact_zone()` run timed into the same histogram.
//! * `oom_compact_retry` and `oom_reclaim_retry`: the slowpath's retry
//!   decisions counted in `RETRY_DECISIONS`.
//! * `user_fault` (`exceptions:page_fault_user`, x86): user page faults
//!   counted by access in `FAULTS`.
//! * `reaper_*` (`oom:wake_reaper`, `start_task_reaping`,
//!   `finish_task_reaping`, `skip_task_reaping`): the OOM reaper's progress
//!   per victim, on the ring buffer.
//! * The `oompath` module: the kernel's OOM functions themselves, through
//!   fentry/fexit or kprobes.
//! * `oomwatch_tasks` (`iter/task`): a BPF task iterator that writes one
//!   `TaskRecord` per task to its seq_file — the counters `oom_badness()`
//!   reads, read as `get_mm_counter()` reads them — at offsets the agent took
//!   from BTF. The agent's `--source bpf` snapshot.
//! * `floor_alloc` / `floor_fault`: empty programs on the hot events, for the
//!   benchmark's floor.
//! * `probe_fentry` / `probe_fexit`: empty programs that `oomwatch check` loads
//!   to learn whether this kernel accepts fentry/fexit at all.
//!
//! Both mark_victim programs run inside the same `trace_mark_victim()` call, in
//! an order the kernel does not promise. The task program stores what it found
//! in `VICTIM_TASKS` under the victim's pid; the tracepoint program joins it in
//! when it is already there, and the agent joins it otherwise.
#![no_std]
#![no_main]

mod oompath;

use aya_ebpf::{
    EbpfContext,
    helpers::{
        bpf_get_current_comm, bpf_get_current_pid_tgid, bpf_ktime_get_boot_ns,
        bpf_probe_read_kernel, bpf_probe_read_kernel_str_bytes,
    },
    macros::{btf_tracepoint, fentry, fexit, map, tracepoint},
    maps::{Array, HashMap, LruHashMap, PerCpuArray, RingBuf},
    programs::{BtfTracePointContext, FEntryContext, FExitContext, TracePointContext},
};
use aya_log_ebpf::debug;
use oomwatch_common::{
    AllocFailEvent, EventKind, FIELD_ABSENT, MAX_RECLAIM_RETRIES, MarkVictimLayout,
    PageAllocLayout, ReaperEvent, ReclaimExhaustedEvent, ReclaimRetryLayout, TaskIterLayout,
    TaskLayout, TaskRecord, VictimEvent, VictimTask, fault, page_alloc as pa, present, reclaim,
    retry, task_state,
};

/// Offsets inside the `oom:mark_victim` record; written by the agent before load.
#[unsafe(no_mangle)]
static MARK_VICTIM_LAYOUT: aya_ebpf::Global<MarkVictimLayout> =
    aya_ebpf::Global::new(MarkVictimLayout::ABSENT);

/// Offsets inside `task_struct` and the cgroup structures; written by the agent.
#[unsafe(no_mangle)]
static TASK_LAYOUT: aya_ebpf::Global<TaskLayout> = aya_ebpf::Global::new(TaskLayout::INVALID);

/// The task iterator's record under construction, one per CPU.
#[map]
static TASK_RECORD: PerCpuArray<TaskRecord> = PerCpuArray::with_max_entries(1, 0);

/// Offsets the task iterator follows; written by the agent before load.
#[unsafe(no_mangle)]
static TASK_ITER_LAYOUT: aya_ebpf::Global<TaskIterLayout> =
    aya_ebpf::Global::new(TaskIterLayout::INVALID);

/// Offsets inside the `oom:reclaim_retry_zone` record; written by the agent.
#[unsafe(no_mangle)]
static RECLAIM_RETRY_LAYOUT: aya_ebpf::Global<ReclaimRetryLayout> =
    aya_ebpf::Global::new(ReclaimRetryLayout::ABSENT);

/// Slot 0: when this CPU last reported exhausted reclaim (boot ns).
#[map]
static LAST_EXHAUSTED: PerCpuArray<u64> = PerCpuArray::with_max_entries(1, 0);

/// Per-CPU gap between two exhausted-reclaim events.
const EXHAUSTED_EVERY_NS: u64 = 100_000_000;

/// Every event for the agent. 256 KiB holds about 2,700 victims.
#[map]
static EVENTS: RingBuf = RingBuf::with_byte_size(256 * 1024, 0);

/// Victim pid -> what `oom_mark_victim_task` read from its task.
#[map]
static VICTIM_TASKS: LruHashMap<u32, VictimTask> = LruHashMap::with_max_entries(1024, 0);

/// Slot 0: events lost because the ring buffer was full.
#[map]
static DROPPED: PerCpuArray<u64> = PerCpuArray::with_max_entries(1, 0);

/// Per-CPU rate limit: true (and `now` recorded in slot 0 of `last`) when
/// this CPU last reported at least `every_ns` ago, or never.
#[inline(always)]
fn this_cpu_may_report(last: &PerCpuArray<u64>, now: u64, every_ns: u64) -> bool {
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
fn emit<T: 'static>(ev: T) -> Result<(), ()> {
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

#[tracepoint(category = "oom", name = "mark_victim")]
pub fn oom_mark_victim(ctx: TracePointContext) -> u32 {
    match try_oom_mark_victim(&ctx) {
        Ok(()) => 0,
        Err(()) => 1,
    }
}

/// Reads one field of the tracepoint record, if this kernel has it.
#[inline(always)]
fn field<T>(ctx: &TracePointContext, offset: u32, bit: u32, present: &mut u32) -> Option<T> {
    if offset == FIELD_ABSENT {
        return None;
    }
    // SAFETY: bpf_probe_read on the tracepoint record; a bad offset fails the
    // read, it cannot fault.
    let value = unsafe { ctx.read_at::<T>(offset as usize) }.ok()?;
    *present |= bit;
    Some(value)
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
    // SAFETY: plain helper call, no arguments.
    ev.boot_ns = unsafe { bpf_ktime_get_boot_ns() };

    debug!(
        ctx,
        "mark_victim pid={} anon_rss={}kB", ev.pid, ev.anon_rss_kb
    );
    emit(ev)
}

#[btf_tracepoint(function = "mark_victim")]
pub fn oom_mark_victim_task(ctx: BtfTracePointContext) -> i32 {
    let _ = try_oom_mark_victim_task(&ctx);
    0
}

/// `*(base + offset)` as a `T`, through `bpf_probe_read_kernel`.
#[inline(always)]
unsafe fn read_at<T>(base: *const u8, offset: u32) -> Result<T, i32> {
    // SAFETY: bpf_probe_read_kernel never faults; a bad address is an error.
    unsafe { bpf_probe_read_kernel(base.add(offset as usize) as *const T) }
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
        _pad: 0,
        memcg_id,
    };
    VICTIM_TASKS.insert(pid as u32, value, 0)
}

/// The task iterator: called once per task with `struct bpf_iter__task`
/// (`meta`, `task`), and once more at the end with a NULL task.
#[unsafe(no_mangle)]
#[unsafe(link_section = "iter/task")]
pub fn oomwatch_tasks(ctx: *mut core::ffi::c_void) -> i32 {
    let _ = try_oomwatch_tasks(ctx);
    0
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

/// The task iterator's memory css → (memcg id, pass), so that the tasks of
/// one cgroup follow the chain once per pass, not once each.
#[map]
static MEMCG_IDS: LruHashMap<u64, [u64; 2]> = LruHashMap::with_max_entries(4096, 0);

/// Slot 0: the number of the current iterator pass, set by the agent before
/// each pass. A cached id from another pass is not trusted: the css it was
/// read from may have been freed and its memory reused since.
#[map]
static ITER_PASS: Array<u64> = Array::with_max_entries(1, 0);

/// The memory cgroup's id of a task the iterator gave (0 where the chain
/// ends early): `css_set → memory css → cgroup → kernfs node`, followed
/// once per css and pass (`MEMCG_IDS`), in direct loads (see
/// `try_oomwatch_tasks`).
///
/// # Safety
/// `task` is the iterator's BTF-typed task pointer.
#[inline(always)]
unsafe fn memcg_id_cached(task: *const u8, l: &TaskLayout) -> u64 {
    // SAFETY (every `direct`): see there.
    unsafe {
        let cgroups: *const u8 = direct(task, l.task_cgroups);
        if cgroups.is_null() {
            return 0;
        }
        let css: *const u8 = direct(cgroups, l.css_set_memory_subsys);
        if css.is_null() {
            return 0;
        }
        let pass = ITER_PASS.get(0).copied().unwrap_or(0);
        let key = css as u64;
        if let Some(v) = MEMCG_IDS.get(key) {
            if v[1] == pass {
                return v[0];
            }
        }
        let cgroup: *const u8 = direct(css, l.css_cgroup);
        if cgroup.is_null() {
            return 0;
        }
        let kn: *const u8 = direct(cgroup, l.cgroup_kn);
        if kn.is_null() {
            return 0;
        }
        let id: u64 = direct(kn, l.kernfs_node_id);
        let _ = MEMCG_IDS.insert(key, [id, pass], 0);
        id
    }
}

/// `*(base + offset)` as a direct load.
///
/// # Safety
/// `base` must be a pointer the verifier types from BTF (the iterator's
/// task, or a pointer loaded from one), and `offset` a .rodata constant
/// naming a member of exactly `T`'s size: the verifier rejects anything
/// else at load time, and a NULL or stale `base` reads as 0 (the JIT's
/// exception table), never faults.
#[inline(always)]
unsafe fn direct<T>(base: *const u8, offset: u32) -> T {
    // SAFETY: see above.
    unsafe { core::ptr::read_volatile(base.add(offset as usize) as *const T) }
}

fn try_oomwatch_tasks(ctx: *mut core::ffi::c_void) -> Result<(), i32> {
    let l = TASK_ITER_LAYOUT.load();
    if l.valid == 0 {
        return Ok(());
    }
    // SAFETY: ctx is `struct bpf_iter__task *`; both members are pointers the
    // verifier types from BTF (meta, and task, which may be NULL). These two
    // loads must stay direct loads: `seq` goes to bpf_seq_write as a typed
    // pointer.
    let (meta, task) = unsafe {
        let args = ctx as *const *const u8;
        (*args, *args.add(1))
    };
    if task.is_null() || meta.is_null() {
        return Ok(());
    }
    // SAFETY: `struct bpf_iter_meta` starts with `struct seq_file *seq`.
    let seq = unsafe { *(meta as *const *mut aya_ebpf::bindings::seq_file) };
    // The record is built in a per-CPU slot and written to the seq_file
    // from there.
    let Some(slot) = TASK_RECORD.get_ptr_mut(0) else {
        return Ok(());
    };
    // SAFETY: this CPU's slot; nothing else runs on it meanwhile.
    let rec = unsafe { &mut *slot };
    rec.pid = 0;
    rec.tgid = 0;
    rec.flags = 0;
    rec.state = 0;
    rec.comm = [0; 16];
    rec.start_time = 0;
    rec.mm = 0;
    rec.parent_tgid = 0;
    rec.oom_score_adj = 0;
    rec._pad = 0;
    rec.counters = [0; 4];
    rec.pgtables_bytes = -1;
    rec.mm_flags = 0;
    rec.memcg_id = 0;
    // Direct loads, not bpf_probe_read_kernel: `task` is a BTF-typed pointer
    // and every offset is a constant of the frozen .rodata, so the verifier
    // checks each load against the kernel's BTF (a field of that size at
    // that offset, or the program does not load) and the JIT emits one
    // faulting-safe load per field instead of a helper call.
    // SAFETY (every `direct`): see there.
    unsafe {
        rec.pid = direct(task, l.cgroup.task_pid);
        rec.tgid = direct(task, l.cgroup.task_tgid);
        rec.flags = direct(task, l.task_flags);
        // comm as two 8-byte loads inside the char[16].
        let lo: u64 = direct(task, l.task_comm);
        let hi: u64 = direct(task, l.task_comm + 8);
        rec.comm[..8].copy_from_slice(&lo.to_ne_bytes());
        rec.comm[8..].copy_from_slice(&hi.to_ne_bytes());
        rec.start_time = direct(task, l.task_start_time);
        let mm: *const u8 = direct(task, l.task_mm);
        rec.mm = mm as u64;
        // in_vfork(): vfork_done set and the real parent's mm is this mm.
        let vfork_done: *const u8 = direct(task, l.task_vfork_done);
        if !vfork_done.is_null() && !mm.is_null() {
            let parent: *const u8 = direct(task, l.task_real_parent);
            if !parent.is_null() {
                rec.parent_tgid = direct(parent, l.cgroup.task_tgid);
                let parent_mm: *const u8 = direct(parent, l.task_mm);
                if parent_mm == mm {
                    rec.state |= task_state::IN_VFORK;
                }
            }
        }
        let signal: *const u8 = direct(task, l.task_signal);
        if !signal.is_null() {
            rec.oom_score_adj = direct(signal, l.signal_oom_score_adj);
            let oom_mm: *const u8 = direct(signal, l.signal_oom_mm);
            if !oom_mm.is_null() {
                rec.state |= task_state::OOM_VICTIM;
            }
            if l.signal_oom_flag_origin != FIELD_ABSENT {
                let origin: u8 = direct(signal, l.signal_oom_flag_origin);
                if origin != 0 {
                    rec.state |= task_state::OOM_ORIGIN;
                }
            }
        }
        let id = memcg_id_cached(task, &l.cgroup);
        if id != 0 {
            rec.memcg_id = id;
            rec.state |= task_state::HAS_MEMCG;
        }
        if !mm.is_null() {
            rec.state |= task_state::HAS_MM;
            let rss = mm.add(l.mm_rss_stat as usize);
            for i in 0..4 {
                let idx = l.counter_index[i];
                if idx == FIELD_ABSENT {
                    continue;
                }
                let off = idx * l.rss_stride + l.rss_count;
                rec.counters[i] = if l.rss_direct != 0 {
                    direct(rss, off)
                } else {
                    read_at(rss, off).unwrap_or(0)
                };
            }
            if l.mm_pgtables_bytes != FIELD_ABSENT {
                rec.pgtables_bytes = direct(mm, l.mm_pgtables_bytes);
            }
            rec.mm_flags = direct(mm, l.mm_flags);
        }
    }
    // SAFETY: `seq` is the iterator's seq_file; `rec` is plain data.
    let ret = unsafe {
        aya_ebpf::helpers::bpf_seq_write(
            seq,
            slot as *const TaskRecord as *const core::ffi::c_void,
            core::mem::size_of::<TaskRecord>() as u32,
        )
    };
    if ret < 0 { Err(ret as i32) } else { Ok(()) }
}

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

#[inline(always)]
fn bump(map: &PerCpuArray<u64>, slot: u32) {
    if let Some(n) = map.get_ptr_mut(slot) {
        // SAFETY: per-CPU slot, no concurrent writer on this CPU.
        unsafe { *n += 1 };
    }
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

/// See `oomwatch_common::fault`.
#[map]
static FAULTS: PerCpuArray<u64> = PerCpuArray::with_max_entries(fault::SLOTS, 0);

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

#[cfg(not(test))]
#[panic_handler]
fn panic(_info: &core::panic::PanicInfo) -> ! {
    loop {}
}

#[unsafe(link_section = "license")]
#[unsafe(no_mangle)]
static LICENSE: [u8; 13] = *b"Dual MIT/GPL\0";
