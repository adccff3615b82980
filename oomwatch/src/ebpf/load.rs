//! Loading the object and attaching its programs, each with its fallbacks
//! (BTF tracepoint or classic one, fentry/fexit or kprobes), and switching the
//! hot ones. What is off on this kernel is kept, with the reason, in
//! [`Probes::degraded`] and [`Probes::kernel_hooks`].

use aya::{
    Ebpf, EbpfLoader,
    programs::{BtfTracePoint, FEntry, FExit, KProbe, TracePoint},
};
use oomwatch_common::{
    FIELD_ABSENT, MarkVictimLayout, OomScanLayout, PageAllocLayout, ReclaimRetryLayout, TaskLayout,
};
use tokio::io::unix::AsyncFd;

use super::{
    EBPF_OBJECT, LoadError,
    layout::{oom_scan_layout, read_btf, task_program_plan_in},
    object_embedded, typed_program,
};
use crate::host::{btf::VMLINUX_BTF, privilege::Privileges, tracefs};

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
    /// An fexit twin reading the return value from the context slot after
    /// the parameters, for kernels without `bpf_get_func_ret` (< 5.17).
    ctx_ret_program: Option<&'static str>,
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
        ctx_ret_program: None,
        kprobe_programs: &["oom_enter_kprobe"],
        kprobe_kind: "kprobe",
        needs_layout: true,
    },
    HookSpec {
        what: "OOM return (out_of_memory)",
        function: "out_of_memory",
        tracing_kind: "fexit",
        tracing_program: "oom_exit_fexit",
        ctx_ret_program: None,
        kprobe_programs: &["oom_exit_kretprobe"],
        kprobe_kind: "kretprobe",
        needs_layout: true,
    },
    HookSpec {
        what: "the kernel's points for every scanned task (oom_badness)",
        function: "oom_badness",
        tracing_kind: "fexit",
        tracing_program: "badness_fexit",
        ctx_ret_program: Some("badness_fexit_ctx"),
        kprobe_programs: &["badness_kprobe", "badness_kretprobe"],
        kprobe_kind: "kprobe+kretprobe",
        needs_layout: true,
    },
    HookSpec {
        what: "the chosen task, chosen_points, totalpages (oom_kill_process)",
        function: "oom_kill_process",
        tracing_kind: "fentry",
        tracing_program: "chosen_fentry",
        ctx_ret_program: None,
        kprobe_programs: &["chosen_kprobe"],
        kprobe_kind: "kprobe",
        needs_layout: true,
    },
    HookSpec {
        what: "page-fault OOMs (pagefault_out_of_memory)",
        function: "pagefault_out_of_memory",
        tracing_kind: "fentry",
        tracing_program: "pagefault_oom_fentry",
        ctx_ret_program: None,
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
    ctx_ret_program: None,
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
    /// Why the preferred way (or every way) was not taken, or how the
    /// way taken reads what it reads where that depends on the kernel.
    pub reason: Option<String>,
}

/// What decides how `oom_badness()` is hooked beyond whether fentry/fexit
/// load: read from BTF and kallsyms before load.
#[derive(Debug, Clone, Default)]
struct BadnessPlan {
    /// BTF `enum bpf_func_id` has `BPF_FUNC_get_func_ret` (5.17+); else
    /// the fexit reads the return value from the context (`badness_fexit_ctx`).
    get_func_ret: bool,
    /// `oom_badness.part.N` in kallsyms: gcc split the function, and the
    /// OOM scan (`oom_evaluate_task()`, same file) calls the part directly
    /// (seen on Debian 5.10.0-46: every call of `oom_badness` itself came
    /// from `proc_oom_score`). The part has no BTF, so only kprobes reach it.
    part_clone: Option<String>,
}

impl BadnessPlan {
    fn read(btf: Option<&crate::host::btf::Btf>) -> Self {
        let get_func_ret =
            btf.is_some_and(|b| b.enum_value("bpf_func_id", "BPF_FUNC_get_func_ret").is_ok());
        let part_clone = crate::host::kallsyms::read().ok().and_then(|t| {
            crate::host::kallsyms::part_clones(&t, "oom_badness")
                .into_iter()
                .next()
        });
        BadnessPlan {
            get_func_ret,
            part_clone,
        }
    }
}

/// Why an optional part of the probe set is not running.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Degraded {
    pub part: &'static str,
    pub reason: String,
}

/// The loaded and attached programs. Dropping this detaches them.
pub struct Probes {
    pub(super) ebpf: Ebpf,
    /// Optional parts that are off on this kernel, each with its reason.
    pub degraded: Vec<Degraded>,
    pub(super) task_program: bool,
    /// Reclaim stall kinds (direct, memcg) whose programs are attached.
    pub(super) reclaim_kinds: u32,
    /// Whether the `kmem:mm_page_alloc` program is attached.
    pub(super) page_alloc: bool,
    /// How each of the kernel's OOM functions is hooked.
    pub kernel_hooks: Vec<KernelHook>,
    /// Whether anything counts into `FAULTS` / `RETRY_DECISIONS`.
    pub(super) faults: bool,
    pub(super) retries: bool,
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

/// What is read from tracefs and the kernel's BTF before loading.
struct Layouts {
    mark_victim: MarkVictimLayout,
    reclaim_retry: Option<ReclaimRetryLayout>,
    page_alloc: Option<PageAllocLayout>,
    task: Result<TaskLayout, String>,
    oom_scan: Result<OomScanLayout, String>,
    compact_ret: u32,
    fault_code: u32,
    reaper_pid: u32,
    /// `task`, or [`TaskLayout::INVALID`] when it could not be read.
    task_global: TaskLayout,
    badness: BadnessPlan,
}

impl Layouts {
    /// Reads the tracefs formats and the BTF offsets, recording in `degraded` what is off.
    fn read(degraded: &mut Vec<Degraded>) -> Result<Self, LoadError> {
        let tracefs = tracefs::find_or_mount()?;
        let layout: MarkVictimLayout = tracefs::read_mark_victim_layout(&tracefs)?;
        let reclaim_layout = tracefs::read_reclaim_retry_layout(&tracefs);
        let alloc_layout = tracefs::read_page_alloc_layout(&tracefs);
        // Offsets from the kernel's BTF, parsed once and dropped before aya
        // parses it again to load (the parse is most of the agent's peak
        // memory).
        let (task, scan_layout, badness) = match read_btf(std::path::Path::new(VMLINUX_BTF)) {
            Ok(btf) => (
                task_program_plan_in(&btf),
                oom_scan_layout(&btf),
                BadnessPlan::read(Some(&btf)),
            ),
            Err(e) => (Err(e.clone()), Err(e), BadnessPlan::read(None)),
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
        Ok(Layouts {
            mark_victim: layout,
            reclaim_retry: reclaim_layout,
            page_alloc: alloc_layout,
            task,
            oom_scan: scan_layout,
            compact_ret,
            fault_code,
            reaper_pid,
            task_global: task_layout,
            badness,
        })
    }
}

/// Fails unless the eBPF object is embedded and the process may trace.
fn check_object_and_privileges() -> Result<(), LoadError> {
    if !object_embedded() {
        return Err(LoadError::NoObject);
    }
    if let Some(msg) = Privileges::current().missing_for_tracing() {
        return Err(LoadError::Privilege(msg));
    }
    Ok(())
}

/// Loads the eBPF object with its globals overridden by `layouts` and the log level.
fn load_object(opts: &LoadOptions, layouts: &Layouts) -> Result<Ebpf, LoadError> {
    // aya-log's levels use the same numbers as log::LevelFilter (off = 0 ..
    // trace = 5): statements below the agent's filter cost nothing.
    let log_level = log::max_level() as u8;
    let alloc_global = layouts.page_alloc.unwrap_or(PageAllocLayout::ABSENT);
    let reclaim_global = layouts.reclaim_retry.unwrap_or(ReclaimRetryLayout::ABSENT);
    let scan_global = layouts
        .oom_scan
        .as_ref()
        .map_or(OomScanLayout::INVALID, |l| *l);
    // The loader (and the BTF it parses) is dropped once loaded.
    let mut loader = EbpfLoader::new();
    if let Some(bytes) = opts.ring_bytes {
        loader.map_max_entries("EVENTS", bytes);
    }
    let ebpf = loader
        .override_global("MARK_VICTIM_LAYOUT", &layouts.mark_victim, true)
        .override_global("TASK_LAYOUT", &layouts.task_global, true)
        .override_global("PAGE_ALLOC_LAYOUT", &alloc_global, true)
        .override_global("RECLAIM_RETRY_LAYOUT", &reclaim_global, true)
        .override_global("OOM_SCAN_LAYOUT", &scan_global, true)
        .override_global("COMPACT_RETRY_RET", &layouts.compact_ret, true)
        .override_global("FAULT_ERROR_CODE", &layouts.fault_code, true)
        .override_global("REAPER_PID", &layouts.reaper_pid, true)
        .override_global("AYA_LOG_LEVEL", &log_level, false)
        .load(EBPF_OBJECT)
        .map_err(LoadError::Object)?;
    drop(loader);
    Ok(ebpf)
}

/// Turns the run statistics on unless `opts` says not to, recording in `degraded` a failure.
fn enable_run_stats(
    opts: &LoadOptions,
    degraded: &mut Vec<Degraded>,
) -> Option<std::os::fd::OwnedFd> {
    // Run counts and run time per program (kernel.bpf_stats_enabled,
    // scoped to this fd): costs a clock read per program run.
    if opts.no_run_stats {
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
    }
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
        check_object_and_privileges()?;
        let mut degraded = Vec::new();
        let layouts = Layouts::read(&mut degraded)?;
        let ebpf = load_object(opts, &layouts)?;
        let stats = enable_run_stats(opts, &mut degraded);
        let mut probes = Probes::new(ebpf, degraded, stats);
        // Parsed once here: the BTF tracepoints and the kernel hooks.
        let btf = aya::Btf::from_sys_fs().map_err(|e| e.to_string());
        probes.attach_victim(&layouts.task, &btf)?;
        probes.attach_reclaim_retry(layouts.reclaim_retry);
        probes.attach_page_alloc(layouts.page_alloc, &btf);
        probes.attach_reclaim_and_counting();
        probes.attach_user_faults(&btf);
        probes.attach_kernel_hooks(&layouts, &btf);
        Ok(probes)
    }

    /// The loaded object with nothing attached yet.
    fn new(ebpf: Ebpf, degraded: Vec<Degraded>, stats: Option<std::os::fd::OwnedFd>) -> Self {
        Probes {
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
        }
    }

    /// Attaches `tp_btf/mark_victim` (optional) and `tracepoint/oom/mark_victim` (required).
    fn attach_victim(
        &mut self,
        task: &Result<TaskLayout, String>,
        btf: &Result<aya::Btf, String>,
    ) -> Result<(), LoadError> {
        if task.is_ok() {
            let attached = match btf {
                Ok(btf) => self
                    .attach_btf_tracepoint("oom_mark_victim_task", "mark_victim", btf)
                    .map(drop),
                Err(e) => Err(anyhow::anyhow!("no kernel BTF ({e})")),
            };
            match attached {
                Ok(()) => self.task_program = true,
                Err(e) => self.degraded.push(Degraded {
                    part: "victim memory cgroup (tp_btf/mark_victim)",
                    reason: format!("{e:#}"),
                }),
            }
        }
        let tp: &mut TracePoint = typed_program(&mut self.ebpf, "oom_mark_victim")?;
        tp.load().map_err(|source| LoadError::Program {
            what: "load tracepoint/oom/mark_victim".into(),
            source,
        })?;
        tp.attach("oom", "mark_victim")
            .map_err(|source| LoadError::Program {
                what: match crate::host::privilege::perf_open_hint() {
                    Some(hint) => format!("attach tracepoint/oom/mark_victim ({hint})"),
                    None => "attach tracepoint/oom/mark_victim".into(),
                },
                source,
            })?;
        Ok(())
    }

    /// Attaches `oom:reclaim_retry_zone` where its layout was read, else records why not.
    fn attach_reclaim_retry(&mut self, reclaim_layout: Option<ReclaimRetryLayout>) {
        let reclaim = match reclaim_layout {
            None => Err("this kernel has no oom:reclaim_retry_zone tracepoint".to_owned()),
            Some(l) if l.no_progress_loops == oomwatch_common::FIELD_ABSENT => {
                Err("oom:reclaim_retry_zone has no no_progress_loops field of 4 bytes".to_owned())
            }
            Some(_) => self
                .attach_tracepoint("oom_reclaim_retry", "oom", "reclaim_retry_zone")
                .map(drop)
                .map_err(|e| format!("{e:#}")),
        };
        if let Err(reason) = reclaim {
            self.degraded.push(Degraded {
                part: "global OOM start (tracepoint oom:reclaim_retry_zone)",
                reason,
            });
        }
    }

    /// Attaches `kmem:mm_page_alloc` where its layout was read, else records why not.
    fn attach_page_alloc(
        &mut self,
        alloc_layout: Option<PageAllocLayout>,
        btf: &Result<aya::Btf, String>,
    ) {
        let alloc = match alloc_layout {
            None => {
                Err("kmem:mm_page_alloc is missing or has no order/gfp_flags fields".to_owned())
            }
            Some(_) => self
                .attach_fast_or_tracepoint(
                    btf.as_ref().ok(),
                    "page_alloc_btf",
                    ("page_alloc", "kmem", "mm_page_alloc"),
                )
                .map_err(|e| format!("{e:#}")),
        };
        match alloc {
            Ok(()) => self.page_alloc = true,
            Err(reason) => self.degraded.push(Degraded {
                part: "page allocations and failures (tracepoint kmem:mm_page_alloc)",
                reason,
            }),
        }
    }

    /// Attaches the reclaim stall and counting tracepoints, then notes whether retries are counted.
    fn attach_reclaim_and_counting(&mut self) {
        for (part, progs) in RECLAIM_PROGRAMS {
            let mut ok = true;
            for (prog, event) in *progs {
                if let Err(e) = self.attach_tracepoint(prog, "vmscan", event) {
                    self.degraded.push(Degraded {
                        part,
                        reason: format!("vmscan:{event}: {e:#}"),
                    });
                    ok = false;
                    break;
                }
            }
            self.reclaim_kinds += u32::from(ok);
        }
        for (part, progs) in COUNTING_TRACEPOINTS {
            for (prog, category, event) in *progs {
                if let Err(e) = self.attach_tracepoint(prog, category, event) {
                    self.degraded.push(Degraded {
                        part,
                        reason: format!("{category}:{event}: {e:#}"),
                    });
                    break;
                }
            }
        }
        self.retries = self.program_attached("oom_reclaim_retry")
            || self.program_attached("oom_compact_retry");
    }

    /// Attaches `exceptions:page_fault_user` (BTF or classic), else records why not.
    fn attach_user_faults(&mut self, btf: &Result<aya::Btf, String>) {
        let user_faults = self.attach_fast_or_tracepoint(
            btf.as_ref().ok(),
            "user_fault_btf",
            ("user_fault", "exceptions", "page_fault_user"),
        );
        self.faults = user_faults.is_ok();
        match user_faults {
            Ok(()) => {}
            Err(e) => self.degraded.push(Degraded {
                part: "user page faults by access (exceptions:page_fault_user)",
                reason: format!("{e:#}"),
            }),
        }
    }

    /// Hooks the kernel functions in [`HOOKS`], and [`FAULT_HOOK`] where user faults are not seen.
    fn attach_kernel_hooks(&mut self, layouts: &Layouts, btf: &Result<aya::Btf, String>) {
        let fault_code = layouts.fault_code;
        let layout = layouts.oom_scan.as_ref().map(|_| ()).map_err(Clone::clone);
        for spec in HOOKS {
            let hook = if spec.function == "oom_badness" {
                self.attach_badness(spec, btf.as_ref(), &layout, &layouts.badness)
            } else {
                self.attach_hook(spec, btf.as_ref(), &layout)
            };
            self.faults |= hook.path.is_some() && spec.function == "pagefault_out_of_memory";
            self.kernel_hooks.push(hook);
        }
        if !(self.program_attached("user_fault_btf")
            || self.program_attached("user_fault") && fault_code != FIELD_ABSENT)
        {
            let hook = self.attach_hook(&FAULT_HOOK, btf.as_ref(), &Ok(()));
            self.faults |= hook.path.is_some();
            self.kernel_hooks.push(hook);
        }
    }

    /// Whether the program `name` is loaded (attached programs are).
    fn program_attached(&self, name: &str) -> bool {
        self.ebpf.program(name).is_some_and(|p| p.fd().is_ok())
    }

    /// Hooks `oom_badness()`: kprobe+kretprobe on its `.part` clone where
    /// gcc split it (the scan calls the clone; fexit cannot reach it), else
    /// fexit with `bpf_get_func_ret` or, before 5.17, its context-slot twin,
    /// else kprobe+kretprobe; each way taken says why.
    fn attach_badness(
        &mut self,
        spec: &HookSpec,
        btf: Result<&aya::Btf, &String>,
        layout: &Result<(), String>,
        plan: &BadnessPlan,
    ) -> KernelHook {
        let hook = |path, reason: String| KernelHook {
            what: spec.what,
            function: spec.function,
            path,
            reason: Some(reason),
        };
        if let Err(e) = layout {
            return hook(None, e.clone());
        }
        if let Some(part) = &plan.part_clone {
            let why = format!(
                "on {part}: gcc split oom_badness and the OOM scan calls {part} directly \
                 (kallsyms); fexit cannot attach there (no BTF for the part)"
            );
            return match self.attach_kprobes(spec, part) {
                Ok(()) => hook(Some(spec.kprobe_kind), why),
                Err(e) => hook(None, format!("{why}; {}: {e}", spec.kprobe_kind)),
            };
        }
        let (program, how) = match (plan.get_func_ret, spec.ctx_ret_program) {
            (false, Some(ctx_program)) => (
                ctx_program,
                "return value from the context slot after the 2 parameters: BTF enum \
                 bpf_func_id has no BPF_FUNC_get_func_ret (Linux 5.17)",
            ),
            _ => (
                spec.tracing_program,
                "return value from bpf_get_func_ret (BTF enum bpf_func_id has it)",
            ),
        };
        let fexit = match btf {
            Ok(btf) => self
                .attach_tracing_program(spec, program, btf)
                .map_err(|e| format!("{}: {e}", spec.tracing_kind)),
            Err(e) => Err(format!("{}: no kernel BTF ({e})", spec.tracing_kind)),
        };
        let fexit_err = match fexit {
            Ok(()) => return hook(Some(spec.tracing_kind), how.to_owned()),
            Err(e) => e,
        };
        match self.attach_kprobes(spec, spec.function) {
            Ok(()) => hook(Some(spec.kprobe_kind), fexit_err),
            Err(e) => hook(None, format!("{fexit_err}; {}: {e}", spec.kprobe_kind)),
        }
    }

    /// Attaches every kprobe program of `spec` to `target`.
    fn attach_kprobes(&mut self, spec: &HookSpec, target: &str) -> Result<(), String> {
        for prog in spec.kprobe_programs {
            self.attach_kprobe(prog, target)?;
        }
        Ok(())
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
        self.attach_tracing_program(spec, spec.tracing_program, btf)
    }

    fn attach_tracing_program(
        &mut self,
        spec: &HookSpec,
        program: &str,
        btf: &aya::Btf,
    ) -> Result<(), String> {
        let prog = self
            .ebpf
            .program_mut(program)
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

    /// Whether attaching the hot programs again goes through classic
    /// tracepoints (`perf_event_open`, tracefs), not BTF ones.
    pub fn hot_use_tracepoints(&self) -> bool {
        self.hot.iter().any(|s| s.tracepoint.is_some())
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
