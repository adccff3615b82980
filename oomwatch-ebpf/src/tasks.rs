//! `oomwatch_tasks` (`iter/task`): a BPF task iterator that writes one
//! `TaskRecord` per task to its seq_file — the counters `oom_badness()`
//! reads, read as that kernel's `oom_badness()` reads them (the atomics up
//! to 6.1, the percpu counters' global count 6.2 – 6.19, their precise sums
//! from 7.0: `TaskIterLayout::rss_rule`) — at offsets the agent took from
//! BTF. The agent's `--source bpf` snapshot.

use aya_ebpf::{
    macros::map,
    maps::{Array, LruHashMap, PerCpuArray},
};
use oomwatch_common::{FIELD_ABSENT, TaskIterLayout, TaskLayout, TaskRecord, rss_rule, task_state};

use crate::common::read_at;

/// The task iterator's record under construction, one per CPU.
#[map]
static TASK_RECORD: PerCpuArray<TaskRecord> = PerCpuArray::with_max_entries(1, 0);

/// Offsets the task iterator follows; written by the agent before load.
#[unsafe(no_mangle)]
static TASK_ITER_LAYOUT: aya_ebpf::Global<TaskIterLayout> =
    aya_ebpf::Global::new(TaskIterLayout::INVALID);

/// The task iterator: called once per task with `struct bpf_iter__task`
/// (`meta`, `task`), and once more at the end with a NULL task.
#[unsafe(no_mangle)]
#[unsafe(link_section = "iter/task")]
pub fn oomwatch_tasks(ctx: *mut core::ffi::c_void) -> i32 {
    let _ = try_oomwatch_tasks(ctx);
    0
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

/// The loop bound of [`add_per_cpu_parts`]: the size of
/// `TaskIterLayout::possible_cpus` in bits.
const MAX_CPUS: u32 = 256;

/// Adds each possible CPU's part to every counter's global `count`, as
/// `__percpu_counter_sum()` does (`lib/percpu_counter.c`, 7.0+'s
/// `oom_badness()` through `get_mm_rss_sum()`): the `s32` at
/// `counters + __per_cpu_offset[cpu]`. The kernel sums online and dying
/// CPUs under the counter's lock; an offline CPU's part was folded into
/// `count` at hotplug and reads 0, so every possible CPU gives the same
/// sum, lockless here (an update in flight can be missed).
///
/// # Safety
/// `rss` is `mm->rss_stat` from the iterator's BTF-typed task (see
/// `direct`).
#[inline(always)]
unsafe fn add_per_cpu_parts(rss: *const u8, l: &TaskIterLayout, counters: &mut [i64; 4]) {
    // The per-CPU parts' addresses (`s32 __percpu *`: plain numbers to the
    // verifier, as BTF has no percpu tag on them in gcc builds, so
    // bpf_per_cpu_ptr() cannot be used).
    let mut parts = [0u64; 4];
    for (i, part) in parts.iter_mut().enumerate() {
        let idx = l.counter_index[i];
        if idx != FIELD_ABSENT {
            // SAFETY: see `direct`.
            *part = unsafe { direct(rss, idx * l.rss_stride + l.rss_counters) };
        }
    }
    let offsets = l.per_cpu_offset as *const u8;
    for cpu in 0..MAX_CPUS {
        if cpu >= l.nr_cpu_ids {
            break;
        }
        if l.possible_cpus[(cpu / 64) as usize] & (1 << (cpu % 64)) == 0 {
            continue;
        }
        // SAFETY: probe reads, see read_at.
        let Ok(off) = (unsafe { read_at::<u64>(offsets, cpu * 8) }) else {
            continue;
        };
        for i in 0..4 {
            if parts[i] == 0 {
                continue;
            }
            let at = parts[i].wrapping_add(off) as *const u8;
            // SAFETY: probe read, see read_at.
            let v: i32 = unsafe { read_at(at, 0) }.unwrap_or(0);
            counters[i] += i64::from(v);
        }
    }
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
            if l.rss_rule == rss_rule::EXACT {
                add_per_cpu_parts(rss, &l, &mut rec.counters);
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
