//! Loading oomwatch's eBPF programs into the running kernel and reading what
//! they report. aya glue only: what the events mean lives elsewhere.

use std::{io, time::Duration};

use aya::{
    Ebpf, EbpfLoader,
    maps::{HashMap as BpfHashMap, MapData, PerCpuArray, RingBuf},
    programs::{BtfTracePoint, FEntry, FExit, KProbe, TracePoint},
};
use oomwatch_common::{
    AllocFailEvent, EventKind, FIELD_ABSENT, MarkVictimLayout, OomScanLayout, PageAllocLayout,
    ReclaimExhaustedEvent, ReclaimRetryLayout, TaskIterLayout, TaskLayout, VictimEvent, VictimTask,
    fault, page_alloc, present, reclaim, retry,
};

/// How to load the probes.
#[derive(Debug, Clone, Default)]
pub struct LoadOptions {
    /// Size of the `EVENTS` ring buffer in bytes (a power of two, at least a
    /// page); None keeps the object's 256 KiB.
    pub ring_bytes: Option<u32>,
    /// Leave the kernel's per-program run-time statistics off
    /// (BPF_ENABLE_STATS costs two clock reads per program run); the
    /// program metrics then stay at zero. Benchmarks measure both ways.
    pub no_run_stats: bool,
}

/// The reclaim stall programs: (degraded part, [(program, vmscan event)]).
const RECLAIM_PROGRAMS: &[(&str, &[(&str, &str)])] = &[
    (
        "direct reclaim stalls (vmscan:mm_vmscan_direct_reclaim_begin/end)",
        &[
            ("reclaim_direct_begin", "mm_vmscan_direct_reclaim_begin"),
            ("reclaim_direct_end", "mm_vmscan_direct_reclaim_end"),
        ],
    ),
    (
        "memcg reclaim stalls (vmscan:mm_vmscan_memcg_reclaim_begin/end)",
        &[
            ("reclaim_memcg_begin", "mm_vmscan_memcg_reclaim_begin"),
            ("reclaim_memcg_end", "mm_vmscan_memcg_reclaim_end"),
        ],
    ),
];

/// (program, category, event).
type TracepointProgram = (&'static str, &'static str, &'static str);

/// Optional tracepoints that only count or report, without layouts of
/// their own beyond one field: (degraded part, [(program, category, event)]).
const COUNTING_TRACEPOINTS: &[(&str, &[TracepointProgram])] = &[
    (
        "compaction runs (compaction:mm_compaction_begin/end)",
        &[
            ("compaction_begin", "compaction", "mm_compaction_begin"),
            ("compaction_end", "compaction", "mm_compaction_end"),
        ],
    ),
    (
        "compaction retry decisions (oom:compact_retry)",
        &[("oom_compact_retry", "oom", "compact_retry")],
    ),
    (
        "the OOM reaper (oom:wake_reaper, start/finish/skip_task_reaping)",
        &[
            ("reaper_wake", "oom", "wake_reaper"),
            ("reaper_start", "oom", "start_task_reaping"),
            ("reaper_finish", "oom", "finish_task_reaping"),
            ("reaper_skip", "oom", "skip_task_reaping"),
        ],
    ),
];

/// One of the kernel's own functions that oomwatch hooks, with its two
/// ways in: a BTF tracing program (fentry/fexit) or kprobe(s).
struct HookSpec {
    what: &'static str,
    function: &'static str,
    /// "fentry" or "fexit".
    tracing_kind: &'static str,
    tracing_program: &'static str,
    /// The kprobe twin: one program, or a kprobe + kretprobe pair.
    kprobe_programs: &'static [&'static str],
    kprobe_kind: &'static str,
    /// Whether it follows struct offsets from BTF (`OOM_SCAN_LAYOUT`).
    needs_layout: bool,
}

const HOOKS: &[HookSpec] = &[
    HookSpec {
        what: "OOM entry: gfp, order, memcg (out_of_memory)",
        function: "out_of_memory",
        tracing_kind: "fentry",
        tracing_program: "oom_enter_fentry",
        kprobe_programs: &["oom_enter_kprobe"],
        kprobe_kind: "kprobe",
        needs_layout: true,
    },
    HookSpec {
        what: "OOM return (out_of_memory)",
        function: "out_of_memory",
        tracing_kind: "fexit",
        tracing_program: "oom_exit_fexit",
        kprobe_programs: &["oom_exit_kretprobe"],
        kprobe_kind: "kretprobe",
        needs_layout: true,
    },
    HookSpec {
        what: "the kernel's points for every scanned task (oom_badness)",
        function: "oom_badness",
        tracing_kind: "fexit",
        tracing_program: "badness_fexit",
        kprobe_programs: &["badness_kprobe", "badness_kretprobe"],
        kprobe_kind: "kprobe+kretprobe",
        needs_layout: true,
    },
    HookSpec {
        what: "the chosen task, chosen_points, totalpages (oom_kill_process)",
        function: "oom_kill_process",
        tracing_kind: "fentry",
        tracing_program: "chosen_fentry",
        kprobe_programs: &["chosen_kprobe"],
        kprobe_kind: "kprobe",
        needs_layout: true,
    },
    HookSpec {
        what: "page-fault OOMs (pagefault_out_of_memory)",
        function: "pagefault_out_of_memory",
        tracing_kind: "fentry",
        tracing_program: "pagefault_oom_fentry",
        kprobe_programs: &["pagefault_oom_kprobe"],
        kprobe_kind: "kprobe",
        needs_layout: false,
    },
];

/// Hooked only where `exceptions:page_fault_user` is missing (arm64): it
/// runs on every page fault.
const FAULT_HOOK: HookSpec = HookSpec {
    what: "faults returning VM_FAULT_OOM (handle_mm_fault)",
    function: "handle_mm_fault",
    tracing_kind: "fexit",
    tracing_program: "fault_fexit",
    kprobe_programs: &["fault_kretprobe"],
    kprobe_kind: "kretprobe",
    needs_layout: false,
};

/// How one kernel function is hooked on this kernel, and why.
#[derive(Debug, Clone, serde::Serialize)]
pub struct KernelHook {
    pub what: &'static str,
    pub function: &'static str,
    /// "fentry", "fexit", "kprobe", "kretprobe", "kprobe+kretprobe"; None
    /// when not hooked.
    pub path: Option<&'static str>,
    /// Why the preferred way (or every way) was not taken.
    pub reason: Option<String>,
}

/// Resolves the `struct oom_control` and `oom_badness()` layout from BTF.
pub fn oom_scan_layout(btf: &Btf) -> Result<OomScanLayout, String> {
    let off = |ty: &str, m: &str| btf.member_offset(ty, m).map_err(|e| e.to_string());
    let params = btf
        .func_param_count("oom_badness")
        .ok_or("BTF has no oom_badness function")?;
    if params != 2 {
        return Err(format!(
            "oom_badness takes {params} parameters here; oomwatch knows the (task, totalpages) form of 5.3+"
        ));
    }
    Ok(OomScanLayout {
        oc_memcg: off("oom_control", "memcg")?,
        oc_gfp_mask: off("oom_control", "gfp_mask")?,
        oc_order: off("oom_control", "order")?,
        oc_totalpages: off("oom_control", "totalpages")?,
        oc_chosen: off("oom_control", "chosen")?,
        oc_chosen_points: off("oom_control", "chosen_points")?,
        oc_constraint: off("oom_control", "constraint")?,
        task_pid: off("task_struct", "pid")?,
        task_tgid: off("task_struct", "tgid")?,
        valid: 1,
    })
}

use tokio::io::unix::AsyncFd;

use crate::{
    host::btf::{Btf, BtfError, VMLINUX_BTF},
    host::cgroup::{self, Hierarchy, Memcg},
    host::privilege::Privileges,
    host::tracefs::{self, TracefsError},
    kpath::KernelEvent,
};

/// The object built from `oomwatch-ebpf` by `build.rs` (empty when bpf-linker
/// was missing at build time).
static EBPF_OBJECT: &[u8] = aya::include_bytes_aligned!(concat!(env!("OUT_DIR"), "/oomwatch"));

/// Whether this binary carries its eBPF programs.
pub fn object_embedded() -> bool {
    !EBPF_OBJECT.is_empty()
}

#[derive(Debug, thiserror::Error)]
pub enum LoadError {
    #[error(
        "this oomwatch binary was built without its eBPF programs (bpf-linker was not on PATH at \
         build time): run `cargo xtask setup`, then rebuild"
    )]
    NoObject,
    #[error("{0}")]
    Privilege(String),
    #[error(transparent)]
    Tracefs(#[from] TracefsError),
    #[error("load the eBPF object: {0}")]
    Object(#[source] aya::EbpfError),
    #[error("{what}: {source}")]
    Program {
        what: String,
        #[source]
        source: aya::programs::ProgramError,
    },
    #[error("eBPF map {name}: {source}")]
    Map {
        name: &'static str,
        #[source]
        source: aya::maps::MapError,
    },
    #[error("eBPF map {0} is missing from the object")]
    MissingMap(&'static str),
    #[error("eBPF program {0} is missing from the object")]
    MissingProgram(&'static str),
    #[error("register the ring buffer with tokio: {0}")]
    Io(#[from] io::Error),
}

/// Why an optional part of the probe set is not running.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Degraded {
    pub part: &'static str,
    pub reason: String,
}

/// The loaded and attached programs. Dropping this detaches them.
pub struct Probes {
    ebpf: Ebpf,
    /// Optional parts that are off on this kernel, each with its reason.
    pub degraded: Vec<Degraded>,
    task_program: bool,
    /// Reclaim stall kinds (direct, memcg) whose programs are attached.
    reclaim_kinds: u32,
    /// Whether the `kmem:mm_page_alloc` program is attached.
    page_alloc: bool,
    /// How each of the kernel's OOM functions is hooked.
    pub kernel_hooks: Vec<KernelHook>,
    /// Whether anything counts into `FAULTS` / `RETRY_DECISIONS`.
    faults: bool,
    retries: bool,
    /// Keeps BPF_ENABLE_STATS(run time) on while oomwatch runs.
    stats: Option<std::os::fd::OwnedFd>,
    /// The programs on the hot events (one run per page allocation or user
    /// fault), which can be detached and attached again.
    hot: Vec<Switchable>,
    /// The benchmark's empty programs on the same events.
    floor: Vec<Switchable>,
}

/// A program on a hot event that can be detached and attached again.
struct Switchable {
    program: &'static str,
    /// None: a BTF tracepoint; Some((category, event)): a classic one.
    tracepoint: Option<(&'static str, &'static str)>,
    link: Option<SwitchableLink>,
}

enum SwitchableLink {
    Btf(aya::programs::tp_btf::BtfTracePointLinkId),
    Tracepoint(aya::programs::trace_point::TracePointLinkId),
}

impl Switchable {
    fn set_all(all: &mut [Switchable], ebpf: &mut Ebpf, on: bool) -> anyhow::Result<()> {
        for s in all {
            s.set(ebpf, on)?;
        }
        Ok(())
    }

    fn set(&mut self, ebpf: &mut Ebpf, on: bool) -> anyhow::Result<()> {
        let prog = ebpf
            .program_mut(self.program)
            .ok_or_else(|| anyhow::anyhow!("program {} missing from the object", self.program))?;
        match (on, self.link.take(), self.tracepoint) {
            (true, None, None) => {
                let p: &mut BtfTracePoint = prog.try_into()?;
                self.link = Some(SwitchableLink::Btf(p.attach()?));
            }
            (true, None, Some((category, event))) => {
                let p: &mut TracePoint = prog.try_into()?;
                self.link = Some(SwitchableLink::Tracepoint(p.attach(category, event)?));
            }
            (false, Some(SwitchableLink::Btf(id)), _) => {
                let p: &mut BtfTracePoint = prog.try_into()?;
                p.detach(id)?;
            }
            (false, Some(SwitchableLink::Tracepoint(id)), _) => {
                let p: &mut TracePoint = prog.try_into()?;
                p.detach(id)?;
            }
            (_, link, _) => self.link = link,
        }
        Ok(())
    }
}

/// One attached program's kernel-side statistics.
#[derive(Debug, Clone, serde::Serialize)]
pub struct ProgramStats {
    pub name: String,
    pub run_count: u64,
    pub run_time: Duration,
    /// Instructions the verifier processed (its complexity measure).
    pub verified_instructions: Option<u32>,
}

/// Resolves the offsets `oom_mark_victim_task` follows, from the kernel's BTF.
pub fn task_layout(btf: &Btf) -> Result<TaskLayout, BtfError> {
    let memory_id = btf.enum_value("cgroup_subsys_id", "memory_cgrp_id")?;
    let ptr = std::mem::size_of::<usize>() as u32;
    Ok(TaskLayout {
        task_pid: btf.member_offset("task_struct", "pid")?,
        task_tgid: btf.member_offset("task_struct", "tgid")?,
        task_cgroups: btf.member_offset("task_struct", "cgroups")?,
        css_set_memory_subsys: btf.member_offset("css_set", "subsys")? + memory_id as u32 * ptr,
        css_cgroup: btf.member_offset("cgroup_subsys_state", "cgroup")?,
        cgroup_kn: btf.member_offset("cgroup", "kn")?,
        kernfs_node_id: btf.member_offset("kernfs_node", "id")?,
        valid: 1,
    })
}

/// Resolves the offsets the task iterator follows, from the kernel's BTF.
pub fn task_iter_layout(btf: &Btf) -> Result<TaskIterLayout, BtfError> {
    let off = |ty: &str, m: &str| btf.member_offset(ty, m);
    let opt = |ty: &str, m: &str| btf.member_offset(ty, m).unwrap_or(FIELD_ABSENT);
    // mm->rss_stat: `struct percpu_counter rss_stat[NR_MM_COUNTERS]` (6.2+;
    // get_mm_counter() reads the global `count`) or `struct mm_rss_stat
    // { atomic_long_t count[NR_MM_COUNTERS]; }` before.
    let rss = btf.member_layout("mm_struct", "rss_stat")?;
    let (mm_rss_stat, rss_stride, rss_count) = if rss.type_name == "percpu_counter" {
        (
            rss.offset,
            rss.elem_size,
            btf.member_offset("percpu_counter", "count")?,
        )
    } else {
        let inner = btf.member_layout(&rss.type_name, "count")?;
        (rss.offset + inner.offset, inner.elem_size, 0)
    };
    let index = |name: &str| {
        btf.enum_constant(name)
            .map_or(FIELD_ABSENT, |v| u32::try_from(v).unwrap_or(FIELD_ABSENT))
    };
    let cgroup = task_layout(btf)?;
    let counter_index = [
        index("MM_FILEPAGES"),
        index("MM_ANONPAGES"),
        index("MM_SWAPENTS"),
        index("MM_SHMEMPAGES"),
    ];
    let signal_oom_flag_origin = opt("signal_struct", "oom_flag_origin");
    let signal_oom_score_adj = off("signal_struct", "oom_score_adj")?;
    let signal_oom_mm = off("signal_struct", "oom_mm")?;
    Ok(TaskIterLayout {
        cgroup,
        task_flags: off("task_struct", "flags")?,
        task_comm: off("task_struct", "comm")?,
        task_mm: off("task_struct", "mm")?,
        task_signal: off("task_struct", "signal")?,
        task_real_parent: off("task_struct", "real_parent")?,
        task_vfork_done: off("task_struct", "vfork_done")?,
        task_start_time: off("task_struct", "start_time")?,
        signal_oom_score_adj,
        signal_oom_mm,
        signal_oom_flag_origin,
        mm_flags: off("mm_struct", "flags")?,
        mm_rss_stat,
        rss_stride,
        rss_count,
        rss_direct: u32::from(rss.type_name == "percpu_counter"),
        counter_index,
        mm_pgtables_bytes: opt("mm_struct", "pgtables_bytes"),
        valid: 1,
    })
}

/// Program `name` of the object as its own type, or which one is missing.
fn typed_program<'a, T>(ebpf: &'a mut Ebpf, name: &'static str) -> Result<&'a mut T, LoadError>
where
    &'a mut T: TryFrom<&'a mut aya::programs::Program, Error = aya::programs::ProgramError>,
{
    ebpf.program_mut(name)
        .ok_or(LoadError::MissingProgram(name))?
        .try_into()
        .map_err(|source| LoadError::Program {
            what: format!("program {name}"),
            source,
        })
}

/// The task iterator, loaded (not attached): `oomwatch_tasks` from the
/// object, with `layout` written in. Every `attach()` of it is one pass over
/// every task. The object's other programs stay unloaded; its ring buffer
/// is shrunk to a page, as nothing writes to it here.
pub fn load_task_iterator(layout: &TaskIterLayout) -> Result<Ebpf, LoadError> {
    if !object_embedded() {
        return Err(LoadError::NoObject);
    }
    // One parse of the kernel's BTF (about 25 MiB while it lives) serves the
    // loader and the program's attach point.
    let btf = aya::Btf::from_sys_fs().map_err(|e| LoadError::Program {
        what: "the kernel's BTF for the task iterator".into(),
        source: aya::programs::ProgramError::Btf(e),
    })?;
    let mut ebpf = EbpfLoader::new()
        .btf(Some(&btf))
        .map_max_entries("EVENTS", 4096)
        .override_global("TASK_ITER_LAYOUT", layout, true)
        .load(EBPF_OBJECT)
        .map_err(LoadError::Object)?;
    let prog: &mut aya::programs::Iter = typed_program(&mut ebpf, "oomwatch_tasks")?;
    prog.load("task", &btf)
        .map_err(|source| LoadError::Program {
            what: "load the task iterator (iter/task)".into(),
            source,
        })?;
    Ok(ebpf)
}

/// The task program's layout from the BTF at `btf_path`, or one sentence on
/// why that program cannot run on this kernel.
#[cfg(test)]
fn task_program_plan(btf_path: &std::path::Path) -> Result<TaskLayout, String> {
    task_program_plan_in(&read_btf(btf_path)?)
}

/// The kernel's BTF at `btf_path`, or why it cannot be read.
fn read_btf(btf_path: &std::path::Path) -> Result<Btf, String> {
    Btf::from_file(btf_path).map_err(|e| {
        format!("the kernel has no readable BTF ({e}; it needs CONFIG_DEBUG_INFO_BTF=y)")
    })
}

/// [`task_program_plan`] on parsed BTF.
fn task_program_plan_in(btf: &Btf) -> Result<TaskLayout, String> {
    match btf.tracepoint_arg_is_pointer("mark_victim", 0) {
        Some(true) => {}
        Some(false) => {
            return Err(
                "this kernel's mark_victim tracepoint passes a pid, not the task \
                        (TP_PROTO(int pid), before the 6.9-era field extension)"
                    .into(),
            );
        }
        None => return Err("BTF has no btf_trace_mark_victim prototype".into()),
    }
    task_layout(btf).map_err(|e| e.to_string())
}

impl Probes {
    /// Checks privileges, reads the layouts, loads the object and attaches:
    /// `tracepoint/oom/mark_victim` (required) and `tp_btf/mark_victim`
    /// (optional, for the victim's memory cgroup).
    pub fn load() -> Result<Self, LoadError> {
        Self::load_with(&LoadOptions::default())
    }

    /// [`Probes::load`] with options (tests shrink the ring buffer).
    pub fn load_with(opts: &LoadOptions) -> Result<Self, LoadError> {
        if !object_embedded() {
            return Err(LoadError::NoObject);
        }
        if let Some(msg) = Privileges::current().missing_for_tracing() {
            return Err(LoadError::Privilege(msg));
        }
        let tracefs = tracefs::find_or_mount()?;
        let layout: MarkVictimLayout = tracefs::read_mark_victim_layout(&tracefs)?;
        let mut degraded = Vec::new();
        let reclaim_layout = tracefs::read_reclaim_retry_layout(&tracefs);
        let alloc_layout = tracefs::read_page_alloc_layout(&tracefs);
        // Offsets from the kernel's BTF, parsed once and dropped before aya
        // parses it again to load (the parse is most of the agent's peak
        // memory).
        let (task, scan_layout) = match read_btf(std::path::Path::new(VMLINUX_BTF)) {
            Ok(btf) => (task_program_plan_in(&btf), oom_scan_layout(&btf)),
            Err(e) => (Err(e.clone()), Err(e)),
        };
        let field = |c: &str, e: &str, n: &str, size: u32| {
            tracefs::read_field_offset(&tracefs, c, e, n, size).unwrap_or(FIELD_ABSENT)
        };
        let compact_ret = field("oom", "compact_retry", "ret", 1);
        let fault_code = field("exceptions", "page_fault_user", "error_code", 8);
        let reaper_pid = field("oom", "wake_reaper", "pid", 4);
        let task_layout = match &task {
            Ok(l) => *l,
            Err(reason) => {
                degraded.push(Degraded {
                    part: "victim memory cgroup (tp_btf/mark_victim)",
                    reason: reason.clone(),
                });
                TaskLayout::INVALID
            }
        };
        // aya-log's levels use the same numbers as log::LevelFilter (off = 0 ..
        // trace = 5): statements below the agent's filter cost nothing.
        let log_level = log::max_level() as u8;
        let alloc_global = alloc_layout.unwrap_or(PageAllocLayout::ABSENT);
        let reclaim_global = reclaim_layout.unwrap_or(ReclaimRetryLayout::ABSENT);
        let scan_global = scan_layout.as_ref().map_or(OomScanLayout::INVALID, |l| *l);
        // The loader (and the BTF it parses) is dropped once loaded.
        let mut loader = EbpfLoader::new();
        if let Some(bytes) = opts.ring_bytes {
            loader.map_max_entries("EVENTS", bytes);
        }
        let ebpf = loader
            .override_global("MARK_VICTIM_LAYOUT", &layout, true)
            .override_global("TASK_LAYOUT", &task_layout, true)
            .override_global("PAGE_ALLOC_LAYOUT", &alloc_global, true)
            .override_global("RECLAIM_RETRY_LAYOUT", &reclaim_global, true)
            .override_global("OOM_SCAN_LAYOUT", &scan_global, true)
            .override_global("COMPACT_RETRY_RET", &compact_ret, true)
            .override_global("FAULT_ERROR_CODE", &fault_code, true)
            .override_global("REAPER_PID", &reaper_pid, true)
            .override_global("AYA_LOG_LEVEL", &log_level, false)
            .load(EBPF_OBJECT)
            .map_err(LoadError::Object)?;
        drop(loader);
        // Run counts and run time per program (kernel.bpf_stats_enabled,
        // scoped to this fd): costs a clock read per program run.
        let stats = if opts.no_run_stats {
            None
        } else {
            match aya::sys::enable_stats(aya::sys::Stats::RunTime) {
                Ok(fd) => Some(fd),
                Err(e) => {
                    degraded.push(Degraded {
                        part: "program run statistics (BPF_ENABLE_STATS)",
                        reason: e.to_string(),
                    });
                    None
                }
            }
        };
        let mut probes = Probes {
            ebpf,
            degraded,
            task_program: false,
            reclaim_kinds: 0,
            page_alloc: false,
            kernel_hooks: Vec::new(),
            faults: false,
            retries: false,
            stats,
            hot: Vec::new(),
            floor: Vec::new(),
        };
        // Parsed once here: the BTF tracepoints and the kernel hooks.
        let btf = aya::Btf::from_sys_fs().map_err(|e| e.to_string());
        if task.is_ok() {
            let attached = match &btf {
                Ok(btf) => probes
                    .attach_btf_tracepoint("oom_mark_victim_task", "mark_victim", btf)
                    .map(drop),
                Err(e) => Err(anyhow::anyhow!("no kernel BTF ({e})")),
            };
            match attached {
                Ok(()) => probes.task_program = true,
                Err(e) => probes.degraded.push(Degraded {
                    part: "victim memory cgroup (tp_btf/mark_victim)",
                    reason: format!("{e:#}"),
                }),
            }
        }
        let tp: &mut TracePoint = typed_program(&mut probes.ebpf, "oom_mark_victim")?;
        tp.load().map_err(|source| LoadError::Program {
            what: "load tracepoint/oom/mark_victim".into(),
            source,
        })?;
        tp.attach("oom", "mark_victim")
            .map_err(|source| LoadError::Program {
                what: "attach tracepoint/oom/mark_victim".into(),
                source,
            })?;
        let reclaim = match reclaim_layout {
            None => Err("this kernel has no oom:reclaim_retry_zone tracepoint".to_owned()),
            Some(l) if l.no_progress_loops == oomwatch_common::FIELD_ABSENT => {
                Err("oom:reclaim_retry_zone has no no_progress_loops field of 4 bytes".to_owned())
            }
            Some(_) => probes
                .attach_tracepoint("oom_reclaim_retry", "oom", "reclaim_retry_zone")
                .map(drop)
                .map_err(|e| format!("{e:#}")),
        };
        if let Err(reason) = reclaim {
            probes.degraded.push(Degraded {
                part: "global OOM start (tracepoint oom:reclaim_retry_zone)",
                reason,
            });
        }
        let alloc = match alloc_layout {
            None => {
                Err("kmem:mm_page_alloc is missing or has no order/gfp_flags fields".to_owned())
            }
            Some(_) => probes
                .attach_fast_or_tracepoint(
                    btf.as_ref().ok(),
                    "page_alloc_btf",
                    ("page_alloc", "kmem", "mm_page_alloc"),
                )
                .map_err(|e| format!("{e:#}")),
        };
        match alloc {
            Ok(()) => probes.page_alloc = true,
            Err(reason) => probes.degraded.push(Degraded {
                part: "page allocations and failures (tracepoint kmem:mm_page_alloc)",
                reason,
            }),
        }
        for (part, progs) in RECLAIM_PROGRAMS {
            let mut ok = true;
            for (prog, event) in *progs {
                if let Err(e) = probes.attach_tracepoint(prog, "vmscan", event) {
                    probes.degraded.push(Degraded {
                        part,
                        reason: format!("vmscan:{event}: {e:#}"),
                    });
                    ok = false;
                    break;
                }
            }
            probes.reclaim_kinds += u32::from(ok);
        }
        for (part, progs) in COUNTING_TRACEPOINTS {
            for (prog, category, event) in *progs {
                if let Err(e) = probes.attach_tracepoint(prog, category, event) {
                    probes.degraded.push(Degraded {
                        part,
                        reason: format!("{category}:{event}: {e:#}"),
                    });
                    break;
                }
            }
        }
        probes.retries = probes.program_attached("oom_reclaim_retry")
            || probes.program_attached("oom_compact_retry");
        let user_faults = probes.attach_fast_or_tracepoint(
            btf.as_ref().ok(),
            "user_fault_btf",
            ("user_fault", "exceptions", "page_fault_user"),
        );
        probes.faults = user_faults.is_ok();
        match user_faults {
            Ok(()) => {}
            Err(e) => probes.degraded.push(Degraded {
                part: "user page faults by access (exceptions:page_fault_user)",
                reason: format!("{e:#}"),
            }),
        }
        let layout = scan_layout.as_ref().map(|_| ()).map_err(Clone::clone);
        for spec in HOOKS {
            let hook = probes.attach_hook(spec, btf.as_ref(), &layout);
            probes.faults |= hook.path.is_some() && spec.function == "pagefault_out_of_memory";
            probes.kernel_hooks.push(hook);
        }
        if !(probes.program_attached("user_fault_btf")
            || probes.program_attached("user_fault") && fault_code != FIELD_ABSENT)
        {
            let hook = probes.attach_hook(&FAULT_HOOK, btf.as_ref(), &Ok(()));
            probes.faults |= hook.path.is_some();
            probes.kernel_hooks.push(hook);
        }
        Ok(probes)
    }

    /// Whether the program `name` is loaded (attached programs are).
    fn program_attached(&self, name: &str) -> bool {
        self.ebpf.program(name).is_some_and(|p| p.fd().is_ok())
    }

    /// Hooks one kernel function: fentry/fexit where the kernel takes it,
    /// else kprobe(s), else nothing, with the reasons.
    fn attach_hook(
        &mut self,
        spec: &HookSpec,
        btf: Result<&aya::Btf, &String>,
        layout: &Result<(), String>,
    ) -> KernelHook {
        let hook = |path, reason| KernelHook {
            what: spec.what,
            function: spec.function,
            path,
            reason,
        };
        if let (true, Err(e)) = (spec.needs_layout, layout) {
            return hook(None, Some(e.clone()));
        }
        let mut reasons = Vec::new();
        match btf {
            Ok(btf) => match self.attach_tracing(spec, btf) {
                Ok(()) => return hook(Some(spec.tracing_kind), None),
                Err(e) => reasons.push(format!("{}: {e}", spec.tracing_kind)),
            },
            Err(e) => reasons.push(format!("{}: no kernel BTF ({e})", spec.tracing_kind)),
        }
        let mut kprobe = Ok(());
        for prog in spec.kprobe_programs {
            kprobe = self.attach_kprobe(prog, spec.function);
            if kprobe.is_err() {
                break;
            }
        }
        match kprobe {
            Ok(()) => hook(Some(spec.kprobe_kind), Some(reasons.join("; "))),
            Err(e) => {
                reasons.push(format!("{}: {e}", spec.kprobe_kind));
                hook(None, Some(reasons.join("; ")))
            }
        }
    }

    fn attach_tracing(&mut self, spec: &HookSpec, btf: &aya::Btf) -> Result<(), String> {
        let prog = self
            .ebpf
            .program_mut(spec.tracing_program)
            .ok_or("program missing from the object")?;
        if spec.tracing_kind == "fentry" {
            let p: &mut FEntry = prog.try_into().map_err(|e| format!("{e}"))?;
            p.load(spec.function, btf)
                .map_err(|e| describe_load_error(&e))?;
            p.attach()
                .map_err(|e| format!("attach: {:#}", anyhow::Error::from(e)))?;
        } else {
            let p: &mut FExit = prog.try_into().map_err(|e| format!("{e}"))?;
            p.load(spec.function, btf)
                .map_err(|e| describe_load_error(&e))?;
            p.attach()
                .map_err(|e| format!("attach: {:#}", anyhow::Error::from(e)))?;
        }
        Ok(())
    }

    fn attach_kprobe(&mut self, prog: &str, function: &str) -> Result<(), String> {
        let p: &mut KProbe = self
            .ebpf
            .program_mut(prog)
            .ok_or("program missing from the object")?
            .try_into()
            .map_err(|e| format!("{e}"))?;
        if !std::path::Path::new("/sys/bus/event_source/devices/kprobe").exists() {
            return Err(
                "no kprobe PMU (/sys/bus/event_source/devices/kprobe; CONFIG_KPROBES off)".into(),
            );
        }
        if p.fd().is_err() {
            p.load().map_err(|e| describe_load_error(&e))?;
        }
        p.attach(function, 0)
            .map_err(|e| format!("attach to {function}: {:#}", anyhow::Error::from(e)))?;
        Ok(())
    }

    /// `FAULTS` summed over CPUs (slots of `oomwatch_common::fault`); None
    /// when nothing counts into it.
    pub fn fault_counts(&self) -> Option<Vec<u64>> {
        self.faults
            .then(|| self.sum_per_cpu("FAULTS", fault::SLOTS))
            .flatten()
    }

    /// `RETRY_DECISIONS` summed over CPUs (slots of `oomwatch_common::retry`).
    pub fn retry_decisions(&self) -> Option<Vec<u64>> {
        self.retries
            .then(|| self.sum_per_cpu("RETRY_DECISIONS", retry::SLOTS))
            .flatten()
    }

    fn sum_per_cpu(&self, name: &str, n: u32) -> Option<Vec<u64>> {
        let map = PerCpuArray::<_, u64>::try_from(self.ebpf.map(name)?).ok()?;
        (0..n)
            .map(|i| map.get(&i, 0).ok().map(|v| v.iter().sum()))
            .collect()
    }

    /// A hot event: its BTF tracepoint (`tp_btf`: the arguments of the call,
    /// no record built per event) where the kernel has BTF for it, else the
    /// classic tracepoint program. Either can be switched off and on again
    /// ([`Probes::set_hot_attached`]).
    fn attach_fast_or_tracepoint(
        &mut self,
        btf: Option<&aya::Btf>,
        fast: &'static str,
        (prog, category, event): TracepointProgram,
    ) -> anyhow::Result<()> {
        if let Some(btf) = btf {
            match self.attach_btf_tracepoint(fast, event, btf) {
                Ok(link) => {
                    self.hot.push(Switchable {
                        program: fast,
                        tracepoint: None,
                        link: Some(SwitchableLink::Btf(link)),
                    });
                    return Ok(());
                }
                Err(e) => tracing::debug!("{fast} (tp_btf/{event}): {e:#}; the tracepoint instead"),
            }
        }
        let link = self.attach_tracepoint(prog, category, event)?;
        self.hot.push(Switchable {
            program: prog,
            tracepoint: Some((category, event)),
            link: Some(SwitchableLink::Tracepoint(link)),
        });
        Ok(())
    }

    fn attach_btf_tracepoint(
        &mut self,
        prog: &str,
        event: &str,
        btf: &aya::Btf,
    ) -> anyhow::Result<aya::programs::tp_btf::BtfTracePointLinkId> {
        Ok(self.load_btf_tracepoint(prog, event, btf)?.attach()?)
    }

    fn load_btf_tracepoint(
        &mut self,
        prog: &str,
        event: &str,
        btf: &aya::Btf,
    ) -> anyhow::Result<&mut BtfTracePoint> {
        let p: &mut BtfTracePoint = self
            .ebpf
            .program_mut(prog)
            .ok_or_else(|| anyhow::anyhow!("program {prog} missing from the object"))?
            .try_into()?;
        p.load(event, btf)?;
        Ok(p)
    }

    fn attach_tracepoint(
        &mut self,
        prog: &str,
        category: &str,
        event: &str,
    ) -> anyhow::Result<aya::programs::trace_point::TracePointLinkId> {
        let tp: &mut TracePoint = self
            .ebpf
            .program_mut(prog)
            .ok_or_else(|| anyhow::anyhow!("program {prog} missing from the object"))?
            .try_into()?;
        tp.load()?;
        Ok(tp.attach(category, event)?)
    }

    /// Detaches (`false`) or attaches again (`true`) the programs on the hot
    /// events, `kmem:mm_page_alloc` and `exceptions:page_fault_user`; they
    /// stay loaded, and their counts keep what they counted. Benchmarks
    /// compare the two states within one run.
    pub fn set_hot_attached(&mut self, on: bool) -> anyhow::Result<()> {
        Switchable::set_all(&mut self.hot, &mut self.ebpf, on)
    }

    /// The programs on the hot events (attached or not).
    pub fn hot_programs(&self) -> Vec<&'static str> {
        self.hot.iter().map(|s| s.program).collect()
    }

    /// Loads the empty programs `floor_alloc` and `floor_fault` for the two
    /// hot events, detached, for benchmarks ([`Probes::set_floor_attached`]):
    /// beside the real programs, their run time per event under the
    /// run-time statistics is what the dispatch and the statistics cost by
    /// themselves; alone, what the kernel's dispatch of any program on those
    /// events costs. Returns the programs loaded (an event without BTF is
    /// skipped).
    pub fn load_floor(&mut self) -> Vec<&'static str> {
        let Ok(btf) = aya::Btf::from_sys_fs() else {
            return Vec::new();
        };
        for (prog, event) in [
            ("floor_alloc", "mm_page_alloc"),
            ("floor_fault", "page_fault_user"),
        ] {
            match self.load_btf_tracepoint(prog, event, &btf) {
                Ok(_) => self.floor.push(Switchable {
                    program: prog,
                    tracepoint: None,
                    link: None,
                }),
                Err(e) => tracing::debug!("{prog} (tp_btf/{event}): {e:#}"),
            }
        }
        self.floor.iter().map(|s| s.program).collect()
    }

    /// Attaches or detaches the programs [`Probes::load_floor`] loaded.
    pub fn set_floor_attached(&mut self, on: bool) -> anyhow::Result<()> {
        Switchable::set_all(&mut self.floor, &mut self.ebpf, on)
    }

    /// Turns the kernel's run-time statistics (BPF_ENABLE_STATS) on or off
    /// while loaded; `--program-stats` keeps them on.
    pub fn set_run_stats(&mut self, on: bool) -> Result<(), String> {
        match (on, self.stats.is_some()) {
            (true, false) => {
                self.stats = Some(
                    aya::sys::enable_stats(aya::sys::Stats::RunTime).map_err(|e| e.to_string())?,
                )
            }
            (false, true) => self.stats = None,
            _ => {}
        }
        Ok(())
    }

    /// Page allocation counts (slots of `oomwatch_common::page_alloc`) and
    /// failures by order, summed over CPUs; None when not attached.
    pub fn page_alloc_counts(&self) -> Option<(Vec<u64>, Vec<u64>)> {
        if !self.page_alloc {
            return None;
        }
        Some((
            self.sum_per_cpu("PAGE_ALLOCS", page_alloc::SLOTS)?,
            self.sum_per_cpu("PAGE_ALLOC_FAILS", page_alloc::ORDERS)?,
        ))
    }

    /// The kernel-side reclaim stall histogram summed over CPUs, per kind
    /// (`reclaim::DIRECT`, `reclaim::MEMCG`): bucket counts, then the sum of
    /// nanoseconds. None when no reclaim program is attached.
    pub fn reclaim_histogram(&self) -> Option<Vec<Vec<u64>>> {
        if self.reclaim_kinds == 0 {
            return None;
        }
        let map = PerCpuArray::<_, u64>::try_from(self.ebpf.map("RECLAIM_HIST")?).ok()?;
        let per_kind = (reclaim::BUCKETS + 1) as usize;
        let mut out = vec![vec![0u64; per_kind]; reclaim::KINDS as usize];
        for (k, row) in out.iter_mut().enumerate() {
            for (i, slot) in row.iter_mut().enumerate() {
                let idx = k as u32 * reclaim::STRIDE + i as u32;
                *slot = map.get(&idx, 0).ok()?.iter().sum();
            }
        }
        Some(out)
    }

    /// Run count, run time and verifier size of every loaded program.
    pub fn program_stats(&self) -> Vec<ProgramStats> {
        self.ebpf
            .programs()
            .filter_map(|(name, p)| {
                let info = p.info().ok()?;
                Some(ProgramStats {
                    name: name.to_owned(),
                    run_count: info.run_count(),
                    run_time: info.run_time(),
                    verified_instructions: info.verified_instruction_count(),
                })
            })
            .collect()
    }

    /// Starts forwarding aya-log records from the programs to `log` (and so to
    /// the agent's `tracing` output). Returns the task doing it.
    pub fn spawn_logger(&mut self) -> Option<tokio::task::JoinHandle<()>> {
        let logger = match aya_log::EbpfLogger::init(&mut self.ebpf) {
            Ok(l) => l,
            Err(e) => {
                tracing::warn!(error = %e, "eBPF logging unavailable");
                return None;
            }
        };
        // SAFETY: the logger owns its ring buffer fd for as long as the AsyncFd
        // owns the logger, and always returns that same fd.
        let mut fd =
            match unsafe { AsyncFd::register_with_interest(logger, tokio::io::Interest::READABLE) }
            {
                Ok(fd) => fd,
                Err(e) => {
                    tracing::warn!(error = %e, "eBPF logging unavailable");
                    return None;
                }
            };
        Some(tokio::spawn(async move {
            loop {
                let Ok(mut guard) = fd.readable_mut().await else {
                    return;
                };
                guard.get_inner_mut().flush();
                guard.clear_ready();
            }
        }))
    }

    /// The stream of victims. Call once.
    pub fn victims(&mut self) -> Result<VictimStream, LoadError> {
        let ring = self
            .ebpf
            .take_map("EVENTS")
            .ok_or(LoadError::MissingMap("EVENTS"))?;
        let ring = RingBuf::try_from(ring).map_err(|source| LoadError::Map {
            name: "EVENTS",
            source,
        })?;
        let tasks = if self.task_program {
            let map = self
                .ebpf
                .take_map("VICTIM_TASKS")
                .ok_or(LoadError::MissingMap("VICTIM_TASKS"))?;
            Some(
                BpfHashMap::<_, u32, VictimTask>::try_from(map).map_err(|source| {
                    LoadError::Map {
                        name: "VICTIM_TASKS",
                        source,
                    }
                })?,
            )
        } else {
            None
        };
        let dropped = self
            .ebpf
            .take_map("DROPPED")
            .and_then(|m| PerCpuArray::<_, u64>::try_from(m).ok());
        // SAFETY: the RingBuf owns its map fd for as long as the AsyncFd owns
        // the RingBuf, and always returns that same fd.
        let ring = unsafe { AsyncFd::register_with_interest(ring, tokio::io::Interest::READABLE) }
            .map_err(io::Error::from)?;
        Ok(VictimStream {
            ring,
            tasks,
            dropped,
            hierarchy: cgroup::memory_hierarchy(),
        })
    }
}

/// A victim as oomwatch reports it.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Victim {
    pub pid: u32,
    /// The thread group (process) id, when the task program ran.
    pub tgid: Option<u32>,
    pub comm: Option<String>,
    pub uid: Option<u32>,
    pub oom_score_adj: Option<i16>,
    pub total_vm_kb: Option<u64>,
    pub anon_rss_kb: Option<u64>,
    pub file_rss_kb: Option<u64>,
    pub shmem_rss_kb: Option<u64>,
    pub pgtables_kb: Option<u64>,
    /// The memory cgroup's id, when the task program ran.
    pub memcg_id: Option<u64>,
    /// That cgroup's path, when it still existed at lookup time.
    pub memcg: Option<Memcg>,
    /// CLOCK_BOOTTIME at the tracepoint, in nanoseconds.
    pub boot_ns: u64,
}

impl Victim {
    fn from_event(ev: &VictimEvent) -> Self {
        let has = |bit: u32| ev.present & bit != 0;
        let opt = |bit: u32, v: u64| has(bit).then_some(v);
        let comm = has(present::COMM).then(|| comm_string(&ev.comm));
        Victim {
            pid: ev.pid,
            tgid: has(present::TASK).then_some(ev.tgid),
            comm,
            uid: has(present::UID).then_some(ev.uid),
            oom_score_adj: has(present::OOM_SCORE_ADJ).then_some(ev.oom_score_adj),
            total_vm_kb: opt(present::TOTAL_VM, ev.total_vm_kb),
            anon_rss_kb: opt(present::ANON_RSS, ev.anon_rss_kb),
            file_rss_kb: opt(present::FILE_RSS, ev.file_rss_kb),
            shmem_rss_kb: opt(present::SHMEM_RSS, ev.shmem_rss_kb),
            pgtables_kb: opt(present::PGTABLES, ev.pgtables_kb),
            memcg_id: has(present::TASK).then_some(ev.memcg_id),
            memcg: None,
            boot_ns: ev.boot_ns,
        }
    }
}

impl std::fmt::Display for Victim {
    /// One line, in the spirit of the kernel's "Killed process" line.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        fn kb(v: Option<u64>) -> String {
            v.map_or_else(|| "?".into(), |v| format!("{v}kB"))
        }
        write!(f, "pid={}", self.pid)?;
        if let Some(t) = self.tgid {
            write!(f, " tgid={t}")?;
        }
        write!(f, " comm={}", self.comm.as_deref().unwrap_or("?"))?;
        if let Some(uid) = self.uid {
            write!(f, " uid={uid}")?;
        }
        match (&self.memcg, self.memcg_id) {
            (Some(m), _) => write!(f, " memcg={m}")?,
            (None, Some(id)) => write!(f, " memcg=id:{id}")?,
            (None, None) => write!(f, " memcg=?")?,
        }
        write!(
            f,
            " anon-rss={} file-rss={} shmem-rss={} pgtables={} total-vm={}",
            kb(self.anon_rss_kb),
            kb(self.file_rss_kb),
            kb(self.shmem_rss_kb),
            kb(self.pgtables_kb),
            kb(self.total_vm_kb)
        )?;
        match self.oom_score_adj {
            Some(a) => write!(f, " oom_score_adj={a}"),
            None => write!(f, " oom_score_adj=?"),
        }
    }
}

/// A record off the ring buffer, by its leading kind.
enum Record {
    Victim(VictimEvent),
    Exhausted(ReclaimExhaustedEvent),
    AllocFail(AllocFailEvent),
    Kernel(KernelEvent),
}

fn read_record(item: &[u8]) -> Option<Record> {
    /// Ring buffer records are only 8-byte aligned: read unaligned.
    fn pod<T: aya::Pod>(item: &[u8]) -> Option<T> {
        // SAFETY: T is Pod and the item is long enough.
        (item.len() >= std::mem::size_of::<T>())
            .then(|| unsafe { std::ptr::read_unaligned(item.as_ptr().cast::<T>()) })
    }
    let kind: u32 = pod(item)?;
    match kind {
        k if k == EventKind::MarkVictim as u32 => pod(item).map(Record::Victim),
        k if k == EventKind::ReclaimExhausted as u32 => pod(item).map(Record::Exhausted),
        k if k == EventKind::AllocFail as u32 => pod(item).map(Record::AllocFail),
        k if k == EventKind::OomEnter as u32 => {
            pod(item).map(|e| Record::Kernel(KernelEvent::enter(&e)))
        }
        k if k == EventKind::Badness as u32 => {
            pod(item).map(|e| Record::Kernel(KernelEvent::badness(&e)))
        }
        k if k == EventKind::OomChosen as u32 => {
            pod(item).map(|e| Record::Kernel(KernelEvent::chosen(&e)))
        }
        k if k == EventKind::OomExit as u32 => {
            pod(item).map(|e| Record::Kernel(KernelEvent::exit(&e)))
        }
        k if k == EventKind::Reaper as u32 => {
            pod(item).map(|e| Record::Kernel(KernelEvent::reaper(&e)))
        }
        _ => None,
    }
}

/// The page allocator gave up reclaiming for an allocation
/// (`oom:reclaim_retry_zone` with `MAX_RECLAIM_RETRIES` loops without
/// progress and a failed watermark): a global OOM is about to start.
#[derive(Debug, Clone, serde::Serialize)]
pub struct ReclaimExhausted {
    pub tgid: u32,
    pub pid: u32,
    pub comm: String,
    /// Allocation order; None when the record had no order field.
    pub order: Option<i32>,
    pub boot_ns: u64,
}

impl From<&ReclaimExhaustedEvent> for ReclaimExhausted {
    fn from(ev: &ReclaimExhaustedEvent) -> Self {
        ReclaimExhausted {
            tgid: ev.tgid,
            pid: ev.pid,
            comm: comm_string(&ev.comm),
            order: (ev.order >= 0).then_some(ev.order),
            boot_ns: ev.boot_ns,
        }
    }
}

/// What one read of the ring buffer brought.
#[derive(Debug, Default)]
pub struct Batch {
    pub victims: Vec<Victim>,
    pub reclaim_exhausted: Vec<ReclaimExhausted>,
    pub alloc_failures: Vec<AllocFailure>,
    /// The kernel OOM-path and reaper events, in ring order.
    pub kernel: Vec<KernelEvent>,
}

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

/// A kernel `comm` buffer as text (up to its NUL).
pub(crate) fn comm_string(comm: &[u8]) -> String {
    let end = comm.iter().position(|&b| b == 0).unwrap_or(comm.len());
    String::from_utf8_lossy(&comm[..end]).into_owned()
}

/// Events read from the `EVENTS` ring buffer with tokio.
pub struct VictimStream {
    ring: AsyncFd<RingBuf<MapData>>,
    tasks: Option<BpfHashMap<MapData, u32, VictimTask>>,
    dropped: Option<PerCpuArray<MapData, u64>>,
    hierarchy: Option<Hierarchy>,
}

impl VictimStream {
    /// Waits for the next batch of events (never empty).
    pub async fn next_batch(&mut self) -> io::Result<Batch> {
        loop {
            let mut events = Vec::new();
            let mut stalls = Vec::new();
            let mut fails = Vec::new();
            let mut kernel = Vec::new();
            {
                let mut guard = self.ring.readable_mut().await?;
                let ring = guard.get_inner_mut();
                while let Some(item) = ring.next() {
                    match read_record(&item) {
                        Some(Record::Victim(ev)) => events.push(ev),
                        Some(Record::Exhausted(ev)) => stalls.push(ReclaimExhausted::from(&ev)),
                        Some(Record::AllocFail(ev)) => fails.push(AllocFailure::from(&ev)),
                        Some(Record::Kernel(ev)) => kernel.push(ev),
                        None => {
                            tracing::warn!(len = item.len(), "unknown event on the ring buffer")
                        }
                    }
                }
                guard.clear_ready();
            }
            if events.is_empty() && stalls.is_empty() && fails.is_empty() && kernel.is_empty() {
                continue;
            }
            let mut out = Vec::with_capacity(events.len());
            for ev in &events {
                let mut v = Victim::from_event(ev);
                if v.memcg_id.is_none() {
                    self.join_task(&mut v).await;
                }
                if let (Some(id), Some(h)) = (v.memcg_id, &self.hierarchy) {
                    v.memcg = cgroup::resolve(h, id);
                }
                out.push(v);
            }
            return Ok(Batch {
                victims: out,
                reclaim_exhausted: stalls,
                alloc_failures: fails,
                kernel,
            });
        }
    }

    /// When the tracepoint program ran before the task program, the task's
    /// record is still in `VICTIM_TASKS`: join it here. The two run in the same
    /// `trace_mark_victim()` call, so the record is there or about to be.
    async fn join_task(&mut self, v: &mut Victim) {
        let Some(tasks) = self.tasks.as_mut() else {
            return;
        };
        for _ in 0..20 {
            if let Ok(t) = tasks.get(&v.pid, 0) {
                v.tgid = Some(t.tgid);
                v.memcg_id = Some(t.memcg_id);
                let _ = tasks.remove(&v.pid);
                tracing::debug!(pid = v.pid, "task record joined in user space");
                return;
            }
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
    }

    /// Events the kernel side could not queue because the ring buffer was full.
    pub fn dropped(&self) -> u64 {
        self.dropped
            .as_ref()
            .and_then(|m| m.get(&0, 0).ok())
            .map(|per_cpu| per_cpu.iter().sum())
            .unwrap_or(0)
    }
}

/// Loads the object and then its empty fentry and fexit programs, without
/// attaching them; each result says whether the kernel took that program.
pub fn try_load_fentry_fexit() -> anyhow::Result<(Result<(), String>, Result<(), String>)> {
    use aya::programs::{FEntry, FExit};
    let btf = aya::Btf::from_sys_fs()?;
    let mut ebpf = EbpfLoader::new().load(EBPF_OBJECT)?;
    let fentry = match ebpf.program_mut("probe_fentry") {
        Some(p) => {
            let p: &mut FEntry = p.try_into()?;
            p.load("out_of_memory", &btf)
                .map_err(|e| describe_load_error(&e))
        }
        None => Err("probe_fentry missing from the object".into()),
    };
    let fexit = match ebpf.program_mut("probe_fexit") {
        Some(p) => {
            let p: &mut FExit = p.try_into()?;
            p.load("out_of_memory", &btf)
                .map_err(|e| describe_load_error(&e))
        }
        None => Err("probe_fexit missing from the object".into()),
    };
    Ok((fentry, fexit))
}

/// The errno of a program load, with the verifier's last words when it
/// rejected the program.
fn describe_load_error(e: &aya::programs::ProgramError) -> String {
    match e {
        aya::programs::ProgramError::LoadError {
            io_error,
            verifier_log,
        } => {
            let log = verifier_log.to_string();
            // The reason is the last line before the statistics.
            let tail: Vec<&str> = log
                .lines()
                .rev()
                .filter(|l| {
                    !l.trim().is_empty()
                        && !["verification time", "stack depth", "processed "]
                            .iter()
                            .any(|p| l.starts_with(p))
                })
                .take(2)
                .collect();
            if tail.is_empty() {
                format!("BPF_PROG_LOAD: {io_error}")
            } else {
                let tail: Vec<&str> = tail.into_iter().rev().collect();
                format!("BPF_PROG_LOAD: {io_error}; verifier: {}", tail.join(" / "))
            }
        }
        other => other.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn missing_btf_is_named() {
        let err = task_program_plan(std::path::Path::new("/nonexistent/vmlinux")).unwrap_err();
        assert!(
            err.starts_with("the kernel has no readable BTF (read /nonexistent/vmlinux: "),
            "{err}"
        );
        assert!(err.contains("CONFIG_DEBUG_INFO_BTF=y"), "{err}");
    }

    #[test]
    fn running_kernel_oom_scan_layout() {
        if !std::path::Path::new(VMLINUX_BTF).exists() {
            eprintln!("skipped: no {VMLINUX_BTF}");
            return;
        }
        let btf = Btf::from_sys_fs().unwrap();
        assert_eq!(btf.func_param_count("oom_badness"), Some(2));
        assert_eq!(btf.func_param_count("out_of_memory"), Some(1));
        assert_eq!(btf.func_param_count("no_such_function_here"), None);
        let l = oom_scan_layout(&btf).unwrap();
        assert_eq!(l.valid, 1);
        assert_eq!(l.task_tgid, l.task_pid + 4);
        // struct oom_control opens with zonelist, nodemask, memcg.
        assert_eq!(l.oc_memcg, 16);
        assert!(l.oc_chosen_points > l.oc_chosen, "{l:?}");
    }

    #[test]
    fn running_kernel_task_plan() {
        if !std::path::Path::new(VMLINUX_BTF).exists() {
            eprintln!("skipped: no {VMLINUX_BTF}");
            return;
        }
        let l = task_program_plan(std::path::Path::new(VMLINUX_BTF)).unwrap();
        assert_eq!(l.valid, 1);
        assert_eq!(l.task_tgid, l.task_pid + 4, "pid_t pid; pid_t tgid;");
        let btf = Btf::from_sys_fs().unwrap();
        let subsys = btf.member_offset("css_set", "subsys").unwrap();
        let memory = btf
            .enum_value("cgroup_subsys_id", "memory_cgrp_id")
            .unwrap() as u32;
        assert_eq!(l.css_set_memory_subsys, subsys + 8 * memory);
    }
}
