//! Types shared by the eBPF programs (`oomwatch-ebpf`) and the agent (`oomwatch`).
//!
//! Every layout that crosses the kernel/user boundary is written once, here:
//! `#[repr(C)]`, fixed-width integers, explicit padding, and its size asserted at
//! compile time on both sides. With the `user` feature each type is
//! [`aya::Pod`], so the agent can read it from a map or write it as a global.
#![no_std]

/// Offset value meaning "this field does not exist on the running kernel".
pub const FIELD_ABSENT: u32 = u32::MAX;

/// Length of a task's `comm` (`TASK_COMM_LEN` in `include/linux/sched.h`).
pub const TASK_COMM_LEN: usize = 16;

/// Where each field sits inside the `oom:mark_victim` tracepoint record.
///
/// The record layout depends on the kernel: up to 6.8 mainline it carries only
/// `pid`; the "mm: update mark_victim tracepoints fields" change added comm,
/// the rss counters, uid, pgtables and oom_score_adj (backported to stable 6.1).
/// The agent fills this from tracefs' `events/oom/mark_victim/format` before
/// loading, so one eBPF object serves every layout. Missing fields hold
/// [`FIELD_ABSENT`].
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct MarkVictimLayout {
    pub pid: u32,
    /// `__data_loc char[] comm`: a u32 whose low 16 bits are the offset of the
    /// string inside the record.
    pub comm: u32,
    pub total_vm: u32,
    pub anon_rss: u32,
    pub file_rss: u32,
    pub shmem_rss: u32,
    pub uid: u32,
    pub pgtables: u32,
    pub oom_score_adj: u32,
    pub _pad: u32,
}

impl MarkVictimLayout {
    /// A layout where every field is absent (the eBPF side then reports nothing
    /// but the fact that a victim was marked).
    pub const ABSENT: Self = Self {
        pid: FIELD_ABSENT,
        comm: FIELD_ABSENT,
        total_vm: FIELD_ABSENT,
        anon_rss: FIELD_ABSENT,
        file_rss: FIELD_ABSENT,
        shmem_rss: FIELD_ABSENT,
        uid: FIELD_ABSENT,
        pgtables: FIELD_ABSENT,
        oom_score_adj: FIELD_ABSENT,
        _pad: 0,
    };
}

/// Byte offsets inside kernel structures that the `tp_btf/mark_victim` program
/// follows from the victim's `task_struct` to its memory cgroup:
/// `task->cgroups->subsys[memory_cgrp_id]->cgroup->kn->id`.
///
/// Rust eBPF has no CO-RE relocations, so the agent resolves these from the
/// running kernel's BTF (`/sys/kernel/btf/vmlinux`) and writes them as a global
/// before load.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct TaskLayout {
    /// `task_struct.pid`
    pub task_pid: u32,
    /// `task_struct.tgid`
    pub task_tgid: u32,
    /// `task_struct.cgroups` (a `struct css_set __rcu *`)
    pub task_cgroups: u32,
    /// `css_set.subsys[memory_cgrp_id]`: the member offset plus
    /// `memory_cgrp_id * sizeof(void *)`.
    pub css_set_memory_subsys: u32,
    /// `cgroup_subsys_state.cgroup`
    pub css_cgroup: u32,
    /// `cgroup.kn`
    pub cgroup_kn: u32,
    /// `kernfs_node.id` (a u64 since 5.5: the cgroup id, equal to the inode
    /// number of the cgroup's directory).
    pub kernfs_node_id: u32,
    /// Non-zero once the agent filled this in.
    pub valid: u32,
}

impl TaskLayout {
    pub const INVALID: Self = Self {
        task_pid: 0,
        task_tgid: 0,
        task_cgroups: 0,
        css_set_memory_subsys: 0,
        css_cgroup: 0,
        cgroup_kn: 0,
        kernfs_node_id: 0,
        valid: 0,
    };
}

/// What the `tp_btf/mark_victim` program learns from the victim's task, kept in
/// the `VICTIM_TASKS` LRU map under the victim's pid.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct VictimTask {
    pub tgid: u32,
    /// The process in the OOM killer (`current`) when the victim was marked.
    pub marker_tgid: u32,
    /// The memory cgroup's id (kernfs node id) in whichever hierarchy the
    /// memory controller is mounted on (v1 or v2); 0 if unknown.
    pub memcg_id: u64,
    /// `bpf_ktime_get_boot_ns()` when the victim was marked: the time of a
    /// kill recovered from this record alone.
    pub boot_ns: u64,
}

/// Bits of [`VictimEvent::present`]: which fields the running kernel gave us.
pub mod present {
    pub const PID: u32 = 1 << 0;
    pub const COMM: u32 = 1 << 1;
    pub const TOTAL_VM: u32 = 1 << 2;
    pub const ANON_RSS: u32 = 1 << 3;
    pub const FILE_RSS: u32 = 1 << 4;
    pub const SHMEM_RSS: u32 = 1 << 5;
    pub const UID: u32 = 1 << 6;
    pub const PGTABLES: u32 = 1 << 7;
    pub const OOM_SCORE_ADJ: u32 = 1 << 8;
    /// `tgid` and `memcg_id` came from the victim's task (tp_btf program).
    pub const TASK: u32 = 1 << 9;
    /// `marker_tgid` is set.
    pub const MARKER: u32 = 1 << 10;
}

/// Kinds of record on the `EVENTS` ring buffer. Discriminants are never reused.
#[repr(u32)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum EventKind {
    /// A [`VictimEvent`] from `oom:mark_victim`.
    MarkVictim = 1,
    /// [`ReclaimExhaustedEvent`]: a global OOM is about to start.
    ReclaimExhausted = 2,
    /// [`AllocFailEvent`]: a page allocation returned no page.
    AllocFail = 3,
    /// [`OomEnterEvent`]: a task entered `out_of_memory()`.
    OomEnter = 4,
    /// [`BadnessEvent`]: `oom_badness()` scored one task during an OOM.
    Badness = 5,
    /// [`OomChosenEvent`]: `oom_kill_process()` got the chosen task.
    OomChosen = 6,
    /// [`OomExitEvent`]: `out_of_memory()` returned.
    OomExit = 7,
    /// [`ReaperEvent`]: one of the `oom:*_reaping` / `wake_reaper` tracepoints.
    Reaper = 8,
}

/// One OOM victim, as the kernel marked it (`oom:mark_victim`).
///
/// Sizes are in kB, as the tracepoint and the kernel's "Killed process" line
/// report them.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct VictimEvent {
    /// [`EventKind::MarkVictim`].
    pub kind: u32,
    /// Which fields are valid: bits from [`present`].
    pub present: u32,
    /// `task->pid` of the victim (a thread id; equal to `tgid` for a
    /// single-threaded process).
    pub pid: u32,
    pub tgid: u32,
    pub uid: u32,
    pub oom_score_adj: i16,
    pub _pad: u16,
    pub total_vm_kb: u64,
    pub anon_rss_kb: u64,
    pub file_rss_kb: u64,
    pub shmem_rss_kb: u64,
    pub pgtables_kb: u64,
    /// See [`VictimTask::memcg_id`].
    pub memcg_id: u64,
    /// `bpf_ktime_get_boot_ns()` when the event was written.
    pub boot_ns: u64,
    pub comm: [u8; TASK_COMM_LEN],
    /// The process that was running when the tracepoint fired: the one in
    /// the OOM killer (`current`), which marked the victim.
    pub marker_tgid: u32,
    pub _pad2: u32,
}

impl VictimEvent {
    pub const ZERO: Self = Self {
        kind: EventKind::MarkVictim as u32,
        present: 0,
        pid: 0,
        tgid: 0,
        uid: 0,
        oom_score_adj: 0,
        _pad: 0,
        total_vm_kb: 0,
        anon_rss_kb: 0,
        file_rss_kb: 0,
        shmem_rss_kb: 0,
        pgtables_kb: 0,
        memcg_id: 0,
        boot_ns: 0,
        comm: [0; TASK_COMM_LEN],
        marker_tgid: 0,
        _pad2: 0,
    };
}

// Layouts are ABI between two separately compiled objects: pin them.
/// Offsets of the fields oomwatch reads in the `oom:reclaim_retry_zone`
/// record (from its tracefs `format`); [`FIELD_ABSENT`] when missing.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ReclaimRetryLayout {
    pub order: u32,
    pub no_progress_loops: u32,
    pub wmark_check: u32,
    pub _pad: u32,
}

impl ReclaimRetryLayout {
    pub const ABSENT: Self = Self {
        order: FIELD_ABSENT,
        no_progress_loops: FIELD_ABSENT,
        wmark_check: FIELD_ABSENT,
        _pad: 0,
    };
}

/// `MAX_RECLAIM_RETRIES` (mm/internal.h; 16 since 4.7): when a zone's
/// retry runs with this many loops without progress and fails its watermark
/// check, `should_reclaim_retry` gives up on the next round and the
/// allocation goes on to the OOM killer.
pub const MAX_RECLAIM_RETRIES: i32 = 16;

/// The page allocator ran out of reclaim retries on this CPU: a global OOM
/// is imminent. Rate-limited in the kernel (one per CPU per 100 ms).
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ReclaimExhaustedEvent {
    pub kind: u32,
    /// The allocating task (tgid, pid).
    pub tgid: u32,
    pub pid: u32,
    pub order: i32,
    pub boot_ns: u64,
    pub comm: [u8; TASK_COMM_LEN],
}

/// Reclaim stall histogram (`RECLAIM_HIST`, per-CPU u64 slots), filled by
/// the `vmscan` begin/end programs. For kind `k` ([`reclaim::DIRECT`],
/// [`reclaim::MEMCG`]) slot `k * STRIDE + b` counts stalls of
/// `[2^b, 2^(b+1))` microseconds (bucket 0 also takes those under 1 µs, the
/// last bucket everything longer), and slot `k * STRIDE + BUCKETS` sums
/// their nanoseconds.
pub mod reclaim {
    pub const DIRECT: u32 = 0;
    pub const MEMCG: u32 = 1;
    /// One `compact_zone()` run (`compaction:mm_compaction_begin/end`):
    /// direct compaction, kcompactd and proactive compaction alike.
    pub const COMPACTION: u32 = 2;
    pub const KINDS: u32 = 3;
    pub const BUCKETS: u32 = 28;
    pub const STRIDE: u32 = 32;
    pub const SLOTS: u32 = KINDS * STRIDE;
}

/// Where `kmem:mm_page_alloc` keeps what the allocation program reads, and
/// the GFP bits it classifies by (their values change between kernels; the
/// agent takes them from the tracepoint's own `__print_flags` table).
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PageAllocLayout {
    /// `unsigned long pfn` (-1 when no page); or FIELD_ABSENT.
    pub pfn: u32,
    /// `struct page *page` of older kernels (NULL when no page); or FIELD_ABSENT.
    pub page: u32,
    pub order: u32,
    pub gfp_flags: u32,
    /// 4 or 8.
    pub gfp_size: u32,
    pub migratetype: u32,
    /// `__GFP_DIRECT_RECLAIM` (0 if unknown: everything counts as may-reclaim).
    pub direct_reclaim: u32,
    /// `__GFP_HARDWALL`, set by GFP_USER and GFP_HIGHUSER*.
    pub hardwall: u32,
}

impl PageAllocLayout {
    pub const ABSENT: Self = Self {
        pfn: FIELD_ABSENT,
        page: FIELD_ABSENT,
        order: FIELD_ABSENT,
        gfp_flags: FIELD_ABSENT,
        gfp_size: 0,
        migratetype: FIELD_ABSENT,
        direct_reclaim: 0,
        hardwall: 0,
    };
}

/// Page allocation counts (`PAGE_ALLOCS`, per-CPU u64 slots): slot
/// `(class * MIGRATETYPES + migratetype) * ORDERS + order`, with order and
/// migratetype clamped to the last slot. `PAGE_ALLOC_FAILS` counts failures by
/// order the same way.
pub mod page_alloc {
    /// No `__GFP_DIRECT_RECLAIM`: cannot sleep to reclaim (atomic, NOWAIT).
    pub const CLASS_ATOMIC: u32 = 0;
    /// May reclaim, `__GFP_HARDWALL`: user memory (GFP_USER, GFP_HIGHUSER*).
    pub const CLASS_USER: u32 = 1;
    /// May reclaim, kernel memory (GFP_KERNEL, GFP_NOFS, …).
    pub const CLASS_KERNEL: u32 = 2;
    pub const CLASSES: u32 = 3;
    pub const MIGRATETYPES: u32 = 8;
    pub const ORDERS: u32 = 16;
    pub const SLOTS: u32 = CLASSES * MIGRATETYPES * ORDERS;
}

/// Retry decisions of the allocator slowpath (`RETRY_DECISIONS`, per-CPU
/// u64 slots): `oom:reclaim_retry_zone` and `oom:compact_retry` counted by
/// whether the kernel chose to retry.
pub mod retry {
    /// A zone failed `should_reclaim_retry`'s watermark check.
    pub const RECLAIM_GIVE_UP: u32 = 0;
    /// A zone passed it: reclaim is retried.
    pub const RECLAIM_RETRY: u32 = 1;
    pub const COMPACT_GIVE_UP: u32 = 2;
    pub const COMPACT_RETRY: u32 = 3;
    pub const SLOTS: u32 = 4;
}

/// `exceptions:page_fault_user` counts (`USER_FAULTS`, per-CPU u64 slots) by
/// access, from the x86 error code; and the page-fault OOM hooks.
pub mod fault {
    pub const READ: u32 = 0;
    pub const WRITE: u32 = 1;
    pub const INSTRUCTION: u32 = 2;
    /// `handle_mm_fault()` returned `VM_FAULT_OOM` (fexit or kretprobe).
    pub const VM_FAULT_OOM: u32 = 3;
    /// `pagefault_out_of_memory()` was called (fentry or kprobe).
    pub const PAGEFAULT_OOM: u32 = 4;
    pub const SLOTS: u32 = 5;
}

/// Offsets (from the kernel's BTF) that the kernel
/// OOM-path programs (fentry/fexit or kprobe on `out_of_memory`,
/// `oom_badness`, `oom_kill_process`) follow.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct OomScanLayout {
    pub oc_memcg: u32,
    pub oc_gfp_mask: u32,
    pub oc_order: u32,
    pub oc_totalpages: u32,
    pub oc_chosen: u32,
    pub oc_chosen_points: u32,
    pub oc_constraint: u32,
    pub task_pid: u32,
    pub task_tgid: u32,
    /// Nonzero once the agent filled the offsets in.
    pub valid: u32,
}

impl OomScanLayout {
    pub const INVALID: Self = Self {
        oc_memcg: 0,
        oc_gfp_mask: 0,
        oc_order: 0,
        oc_totalpages: 0,
        oc_chosen: 0,
        oc_chosen_points: 0,
        oc_constraint: 0,
        task_pid: 0,
        task_tgid: 0,
        valid: 0,
    };
}

/// A task entered `out_of_memory()`: the kernel's OOM path starts here.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct OomEnterEvent {
    pub kind: u32,
    pub tgid: u32,
    pub pid: u32,
    pub order: i32,
    pub gfp_mask: u32,
    /// 1 when `oc->memcg` is set (a memory cgroup OOM).
    pub memcg: u32,
    pub boot_ns: u64,
    pub comm: [u8; TASK_COMM_LEN],
}

/// `oom_badness()` returned `points` for the task `pid` while the task
/// `scanner` was inside `out_of_memory()` (its calls from /proc/PID/oom_score
/// are not reported). `points == i64::MIN` (LONG_MIN) means unkillable.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct BadnessEvent {
    pub kind: u32,
    pub pid: u32,
    pub tgid: u32,
    /// The thread id of the task running the OOM killer.
    pub scanner: u32,
    pub points: i64,
    pub totalpages: u64,
    pub boot_ns: u64,
}

/// `oom_kill_process()` was called with the task `select_bad_process()`
/// chose, read from `struct oom_control`.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct OomChosenEvent {
    pub kind: u32,
    pub pid: u32,
    pub tgid: u32,
    /// `enum oom_constraint` (0 none, 1 cpuset, 2 memory policy, 3 memcg).
    pub constraint: u32,
    pub chosen_points: i64,
    pub totalpages: u64,
    pub boot_ns: u64,
    pub scanner: u32,
    pub _pad: u32,
}

/// `out_of_memory()` returned `ret` (true: the OOM was handled).
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct OomExitEvent {
    pub kind: u32,
    pub tgid: u32,
    pub pid: u32,
    pub ret: u32,
    pub boot_ns: u64,
}

/// Stages of the OOM reaper, one tracepoint each.
pub mod reaper {
    pub const WAKE: u32 = 0;
    pub const START: u32 = 1;
    pub const FINISH: u32 = 2;
    pub const SKIP: u32 = 3;
}

/// The OOM reaper reached stage `stage` ([`reaper`]) for the victim `pid`.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ReaperEvent {
    pub kind: u32,
    pub pid: u32,
    pub stage: u32,
    pub _pad: u32,
    pub boot_ns: u64,
}

/// A page allocation that returned no page (rate-limited in the kernel).
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct AllocFailEvent {
    pub kind: u32,
    pub tgid: u32,
    pub pid: u32,
    pub order: u32,
    pub gfp_flags: u64,
    pub migratetype: i32,
    pub _pad: u32,
    pub boot_ns: u64,
    pub comm: [u8; TASK_COMM_LEN],
}

const _: () = assert!(core::mem::size_of::<OomScanLayout>() == 40);
const _: () = assert!(core::mem::size_of::<OomEnterEvent>() == 48);
const _: () = assert!(core::mem::size_of::<BadnessEvent>() == 40);
const _: () = assert!(core::mem::size_of::<OomChosenEvent>() == 48);
const _: () = assert!(core::mem::size_of::<OomExitEvent>() == 24);
const _: () = assert!(core::mem::size_of::<ReaperEvent>() == 24);
const _: () = assert!(core::mem::size_of::<PageAllocLayout>() == 32);
const _: () = assert!(core::mem::size_of::<AllocFailEvent>() == 56);
/// Offsets the task iterator (`iter/task`, program `oomwatch_tasks`) follows,
/// resolved by the agent from the running kernel's BTF. Every offset is in
/// bytes from the start of the struct named in its doc; [`FIELD_ABSENT`]
/// where this kernel does not have the member.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct TaskIterLayout {
    /// The memory-cgroup chain: `task_struct.cgroups` → css → cgroup → kn → id.
    pub cgroup: TaskLayout,
    /// `task_struct.flags` (PF_*).
    pub task_flags: u32,
    /// `task_struct.comm`.
    pub task_comm: u32,
    /// `task_struct.mm`.
    pub task_mm: u32,
    /// `task_struct.signal`.
    pub task_signal: u32,
    /// `task_struct.real_parent`.
    pub task_real_parent: u32,
    /// `task_struct.vfork_done`.
    pub task_vfork_done: u32,
    /// `task_struct.start_time` (ns, monotonic).
    pub task_start_time: u32,
    /// `signal_struct.oom_score_adj` (a short).
    pub signal_oom_score_adj: u32,
    /// `signal_struct.oom_mm`: set once the process is an OOM victim.
    pub signal_oom_mm: u32,
    /// `signal_struct.oom_flag_origin` (a bool).
    pub signal_oom_flag_origin: u32,
    /// `mm_struct.flags`: its first word (MMF_* bits).
    pub mm_flags: u32,
    /// Where counter `i` (`MM_FILEPAGES` …) lives: `mm_struct.rss_stat` +
    /// `i * rss_stride` + `rss_count`. 6.2+: an array of `percpu_counter`
    /// whose global `count` is what `get_mm_counter()` reads; before: the
    /// `atomic_long_t count[]` of `struct mm_rss_stat`.
    pub mm_rss_stat: u32,
    pub rss_stride: u32,
    pub rss_count: u32,
    /// Non-zero where the counters may be read with direct loads: the 6.2+
    /// `percpu_counter` array. Before 6.2 the verifier cannot walk an array
    /// of `atomic_long_t` (a typedef'd struct; 6.1: "Type 'atomic_long_t'
    /// is not a struct"), so those are read with `bpf_probe_read_kernel`.
    pub rss_direct: u32,
    /// Index of each counter in `rss_stat` (`MM_FILEPAGES`, `MM_ANONPAGES`,
    /// `MM_SWAPENTS`, `MM_SHMEMPAGES`; the last absent before 4.5).
    pub counter_index: [u32; 4],
    /// `mm_struct.pgtables_bytes` (4.15+).
    pub mm_pgtables_bytes: u32,
    /// Non-zero once the agent filled this in.
    pub valid: u32,
    /// How this kernel's `oom_badness()` reads the counters: one of
    /// [`rss_rule`]. For [`rss_rule::EXACT`] the iterator adds every
    /// possible CPU's part to each counter's global `count`.
    pub rss_rule: u32,
    /// `percpu_counter.counters` (the `s32 __percpu *` of the per-CPU parts).
    pub rss_counters: u32,
    /// One past the highest possible CPU (at most 256, the mask's size).
    pub nr_cpu_ids: u32,
    /// The address of `__per_cpu_offset[]` (each CPU's per-CPU area offset),
    /// from `/proc/kallsyms`.
    pub per_cpu_offset: u64,
    /// The possible CPUs, bit `cpu % 64` of word `cpu / 64`.
    pub possible_cpus: [u64; 4],
}

/// Values of [`TaskIterLayout::rss_rule`]: how `oom_badness()` reads a
/// task's rss counters on the running kernel.
pub mod rss_rule {
    /// Up to 6.1: the `atomic_long_t count[i]` of `mm->rss_stat`.
    pub const ATOMIC: u32 = 0;
    /// 6.2 – 6.19: the percpu counter's global `count` (approximate).
    pub const APPROXIMATE: u32 = 1;
    /// 7.0+: `count` plus every CPU's part (`percpu_counter_sum_positive`).
    pub const EXACT: u32 = 2;
}

impl TaskIterLayout {
    pub const INVALID: Self = Self {
        cgroup: TaskLayout::INVALID,
        task_flags: 0,
        task_comm: 0,
        task_mm: 0,
        task_signal: 0,
        task_real_parent: 0,
        task_vfork_done: 0,
        task_start_time: 0,
        signal_oom_score_adj: 0,
        signal_oom_mm: 0,
        signal_oom_flag_origin: 0,
        mm_flags: 0,
        mm_rss_stat: 0,
        rss_stride: 0,
        rss_count: 0,
        rss_direct: 0,
        counter_index: [0; 4],
        mm_pgtables_bytes: 0,
        valid: 0,
        rss_rule: rss_rule::ATOMIC,
        rss_counters: 0,
        nr_cpu_ids: 0,
        per_cpu_offset: 0,
        possible_cpus: [0; 4],
    };
}

/// Bits of [`TaskRecord::state`].
pub mod task_state {
    /// `task->mm` is set.
    pub const HAS_MM: u32 = 1 << 0;
    /// `signal->oom_mm` is set: the process is already an OOM victim.
    pub const OOM_VICTIM: u32 = 1 << 1;
    /// `in_vfork()`: `vfork_done` set and the real parent's mm is this mm.
    pub const IN_VFORK: u32 = 1 << 2;
    /// `signal->oom_flag_origin` (`oom_task_origin()`).
    pub const OOM_ORIGIN: u32 = 1 << 3;
    /// The cgroup chain could be followed (`memcg_id` is meaningful).
    pub const HAS_MEMCG: u32 = 1 << 4;
}

/// One task (thread) as the task iterator saw it: what `oom_badness()` and
/// `dump_task()` read, read the way they read it. Written to the iterator's
/// seq_file, one after another.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct TaskRecord {
    pub pid: i32,
    pub tgid: i32,
    /// `task->flags`.
    pub flags: u32,
    /// [`task_state`] bits.
    pub state: u32,
    pub comm: [u8; 16],
    /// `task->start_time` (ns since boot, monotonic).
    pub start_time: u64,
    /// The mm's address: its identity (0 without an mm).
    pub mm: u64,
    /// The real parent's tgid, read only for a task in `vfork()` (0
    /// otherwise): the parent matters to the OOM killer only up to 5.0
    /// ("sacrifice child"), and task iterators exist from 5.8.
    pub parent_tgid: i32,
    /// `signal->oom_score_adj`.
    pub oom_score_adj: i16,
    pub _pad: u16,
    /// MM_FILEPAGES, MM_ANONPAGES, MM_SWAPENTS, MM_SHMEMPAGES as this
    /// kernel's `oom_badness()` reads them ([`TaskIterLayout::rss_rule`]),
    /// raw (the kernel clamps negative values to 0).
    pub counters: [i64; 4],
    /// `mm_pgtables_bytes()`, or -1 where the kernel has none.
    pub pgtables_bytes: i64,
    /// The first word of `mm->flags`.
    pub mm_flags: u64,
    /// The memory cgroup's id (its directory's inode number).
    pub memcg_id: u64,
}

/// MMF_OOM_SKIP: the bit in `mm->flags` (4.9 … 6.18, include/linux/mm_types.h,
/// before 6.x in include/linux/sched/coredump.h).
pub const MMF_OOM_SKIP: u32 = 21;

const _: () = assert!(core::mem::size_of::<ReclaimRetryLayout>() == 16);
const _: () = assert!(core::mem::size_of::<ReclaimExhaustedEvent>() == 40);
const _: () = assert!(core::mem::size_of::<MarkVictimLayout>() == 40);
const _: () = assert!(core::mem::size_of::<TaskLayout>() == 32);
const _: () = assert!(core::mem::size_of::<TaskIterLayout>() == 168);
const _: () = assert!(core::mem::size_of::<TaskRecord>() == 112);
const _: () = assert!(core::mem::size_of::<VictimTask>() == 24);
const _: () = assert!(core::mem::size_of::<VictimEvent>() == 104);
const _: () = assert!(core::mem::align_of::<VictimEvent>() == 8);

#[cfg(feature = "user")]
mod user {
    // SAFETY: all four are #[repr(C)], made only of integers and integer arrays,
    // with explicit padding, so every bit pattern is a valid value.
    unsafe impl aya::Pod for super::MarkVictimLayout {}
    unsafe impl aya::Pod for super::TaskLayout {}
    unsafe impl aya::Pod for super::TaskIterLayout {}
    unsafe impl aya::Pod for super::TaskRecord {}
    unsafe impl aya::Pod for super::VictimTask {}
    unsafe impl aya::Pod for super::VictimEvent {}
    unsafe impl aya::Pod for super::ReclaimRetryLayout {}
    unsafe impl aya::Pod for super::ReclaimExhaustedEvent {}
    unsafe impl aya::Pod for super::PageAllocLayout {}
    unsafe impl aya::Pod for super::AllocFailEvent {}
    unsafe impl aya::Pod for super::OomScanLayout {}
    unsafe impl aya::Pod for super::OomEnterEvent {}
    unsafe impl aya::Pod for super::BadnessEvent {}
    unsafe impl aya::Pod for super::OomChosenEvent {}
    unsafe impl aya::Pod for super::OomExitEvent {}
    unsafe impl aya::Pod for super::ReaperEvent {}
}
