//! `oomwatch check`: what the running kernel and this process offer oomwatch.

use std::path::Path;

use serde::Serialize;

use crate::{
    ebpf,
    host::btf::{Btf, VMLINUX_BTF},
    host::cgroup::{self, Hierarchy},
    host::privilege::Privileges,
    host::tracefs,
    model::{KernelBehavior, behavior::Rules},
    snapshot::proc::read_header,
};

/// One capability of the system, with what was found.
#[derive(Debug, Clone, Serialize)]
pub struct Item {
    pub available: bool,
    pub detail: String,
}

impl Item {
    fn yes(detail: impl Into<String>) -> Self {
        Self {
            available: true,
            detail: detail.into(),
        }
    }
    fn no(detail: impl Into<String>) -> Self {
        Self {
            available: false,
            detail: detail.into(),
        }
    }
}

#[derive(Debug, Clone, Serialize)]
pub struct Tracepoint {
    pub name: String,
    pub required: bool,
    pub purpose: &'static str,
    pub available: bool,
    pub detail: String,
}

/// Everything `oomwatch check` reports; `--json` prints it as is.
#[derive(Debug, Clone, Serialize)]
pub struct Report {
    pub kernel: String,
    pub arch: &'static str,
    /// The rules the model applies to this kernel, and why (None when the
    /// release could not be read).
    pub rules: Option<Rules>,
    pub ebpf_object: Item,
    pub btf: Item,
    pub tracefs: Item,
    pub tracepoints: Vec<Tracepoint>,
    /// `tp_btf/mark_victim` with the victim's `task_struct` (memcg of the victim).
    pub tp_btf_mark_victim: Item,
    pub fentry: Item,
    pub fexit: Item,
    pub kprobes: Item,
    /// The BPF task iterator (`--source bpf`): loaded and run once.
    pub task_iterator: Item,
    /// What `--source auto` reads processes from here: "bpf" or "proc".
    pub snapshot_source: &'static str,
    /// With the task iterator: how it reads the rss counters (as this
    /// kernel's `oom_badness()` does: atomic, approximate or exact) and why.
    pub rss_rule: Option<ebpf::RssRuleChoice>,
    /// `/proc/pressure/memory`, one of the signs `--hot-probes pressure`
    /// follows (the other: reclaim and compaction tracepoints).
    pub memory_pressure: Item,
    /// How `oomwatch run` hooks each kernel OOM function here (found by
    /// loading and attaching the real probe set); empty when not tested.
    pub kernel_hooks: Vec<ebpf::KernelHook>,
    /// Optional parts of the probe set that are off here, with the reason.
    pub degraded: Vec<ebpf::Degraded>,
    pub cgroup_hierarchies: Vec<Hierarchy>,
    pub memory_controller: Item,
    pub privileges: Privileges,
    /// The OOM sysctls and what they mean for a host-wide OOM (null when
    /// they could not be read: `knobs_error` says why).
    pub knobs: Option<crate::model::knobs::Knobs>,
    pub knobs_error: Option<String>,
    /// Whether `oomwatch run` can start here.
    pub can_run: bool,
    pub problems: Vec<String>,
    /// What predictions here must be read with (a panic instead of a kill,
    /// the allocating task killed, no task table in the kernel's reports,
    /// strict overcommit); they do not stop `oomwatch run`.
    pub warnings: Vec<String>,
}

/// The tracepoints oomwatch attaches to: (category, name, required, purpose).
pub const TRACEPOINTS: &[(&str, &str, bool, &str)] = &[
    (
        "oom",
        "mark_victim",
        true,
        "each OOM victim, with the kernel's own numbers",
    ),
    (
        "oom",
        "reclaim_retry_zone",
        false,
        "reclaim retries exhausted: a host-wide OOM is starting (without it: seen at the kill)",
    ),
    (
        "kmem",
        "mm_page_alloc",
        false,
        "page allocations and failures, counted in the kernel",
    ),
    (
        "vmscan",
        "mm_vmscan_direct_reclaim_begin",
        false,
        "direct reclaim stalls (with _end)",
    ),
    (
        "vmscan",
        "mm_vmscan_direct_reclaim_end",
        false,
        "direct reclaim stalls (with _begin)",
    ),
    (
        "vmscan",
        "mm_vmscan_memcg_reclaim_begin",
        false,
        "memcg reclaim stalls (with _end)",
    ),
    (
        "vmscan",
        "mm_vmscan_memcg_reclaim_end",
        false,
        "memcg reclaim stalls (with _begin)",
    ),
    (
        "compaction",
        "mm_compaction_begin",
        false,
        "compaction run times (with _end)",
    ),
    (
        "compaction",
        "mm_compaction_end",
        false,
        "compaction run times (with _begin)",
    ),
    (
        "oom",
        "compact_retry",
        false,
        "the slowpath's compaction retry decisions",
    ),
    (
        "exceptions",
        "page_fault_user",
        false,
        "user page faults by access (x86; elsewhere handle_mm_fault is hooked for VM_FAULT_OOM)",
    ),
    (
        "oom",
        "wake_reaper",
        false,
        "the OOM reaper woken for a victim that did not exit",
    ),
    (
        "oom",
        "start_task_reaping",
        false,
        "the OOM reaper starts on a victim",
    ),
    (
        "oom",
        "finish_task_reaping",
        false,
        "the OOM reaper freed a victim's memory",
    ),
    (
        "oom",
        "skip_task_reaping",
        false,
        "the OOM reaper could not take the victim's mm",
    ),
];

/// The knobs of a host-wide OOM, read under `proc_root`.
pub fn host_knobs(proc_root: &Path) -> anyhow::Result<crate::model::knobs::Knobs> {
    let (procs, sysctls, zones) = crate::snapshot::read_knobs(proc_root)?;
    let kb = procs.behavior();
    Ok(crate::model::knobs::assess(
        &crate::snapshot::knob_inputs(&procs, &sysctls, &zones),
        crate::model::oom::Constraint::ConstraintNone,
        &kb,
    ))
}

pub fn run(proc_root: &Path) -> Report {
    let privileges = Privileges::current();
    let mut problems = Vec::new();

    let ebpf_object = if ebpf::object_embedded() {
        Item::yes("embedded")
    } else {
        problems.push(ebpf::LoadError::NoObject.to_string());
        Item::no("built without eBPF programs (bpf-linker missing at build time)")
    };

    let btf_parsed = Btf::from_sys_fs();
    let btf = match &btf_parsed {
        Ok(_) => Item::yes(VMLINUX_BTF),
        Err(e) => Item::no(format!("{e} (needs CONFIG_DEBUG_INFO_BTF=y)")),
    };

    let tracefs_root = if privileges.euid == 0 {
        tracefs::find_or_mount().ok()
    } else {
        tracefs::find()
    };
    let tracefs_item = match &tracefs_root {
        Some(p) => Item::yes(p.display().to_string()),
        None => {
            problems.push(
                "tracefs is not mounted: `mount -t tracefs tracefs /sys/kernel/tracing` (oomwatch \
                 run does this itself as root)"
                    .into(),
            );
            Item::no("not mounted at /sys/kernel/tracing or /sys/kernel/debug/tracing")
        }
    };

    let mut tracepoints = Vec::new();
    for &(category, name, required, purpose) in TRACEPOINTS {
        let (available, detail) = match &tracefs_root {
            None => (false, "tracefs not mounted".to_owned()),
            Some(root) => match tracefs::event_dir(root, category, name) {
                Ok(dir) => (true, describe_event(&dir, category, name)),
                Err(e) => (false, e.to_string()),
            },
        };
        if required && !available {
            problems.push(format!(
                "required tracepoint {category}:{name} is missing: {detail}"
            ));
        }
        tracepoints.push(Tracepoint {
            name: format!("{category}:{name}"),
            required,
            purpose,
            available,
            detail,
        });
    }

    let tp_btf_mark_victim = match &btf_parsed {
        Err(_) => Item::no("no BTF"),
        Ok(b) => match (
            b.tracepoint_arg_is_pointer("mark_victim", 0),
            ebpf::task_layout(b),
        ) {
            (Some(true), Ok(_)) => Item::yes("task_struct argument; memcg offsets resolved"),
            (Some(true), Err(e)) => Item::no(format!("offsets: {e}")),
            (Some(false), _) => Item::no(
                "mark_victim passes a pid, not the task (kernel before the 6.9-era change)",
            ),
            (None, _) => Item::no("no btf_trace_mark_victim in BTF"),
        },
    };

    let (fentry, fexit) = probe_fentry_fexit(&privileges, btf_parsed.as_ref().ok());

    let kprobes = if Path::new("/sys/bus/event_source/devices/kprobe").exists() {
        Item::yes("kprobe PMU present")
    } else {
        Item::no("no kprobe PMU (/sys/bus/event_source/devices/kprobe; CONFIG_KPROBES off)")
    };

    // The iterator, loaded and run once: what `--source auto` will use.
    let (task_iterator, snapshot_source, rss_rule) = match crate::snapshot::bpf::TaskIter::load() {
        Ok(mut it) => match it.records() {
            Ok(r) => (
                Item::yes(format!(
                    "loads and runs: {} tasks in one read, counters as oom_badness reads them \
                     ({})",
                    r.len(),
                    it.rss_rule
                )),
                "bpf",
                Some(it.rss_rule.clone()),
            ),
            Err(e) => (
                Item::no(format!("loads but does not run: {e}")),
                "proc",
                None,
            ),
        },
        Err(e) => (Item::no(e.0), "proc", None),
    };

    let memory_pressure = match std::fs::read_to_string("/proc/pressure/memory") {
        Ok(t) => match crate::host::psi::parse_some_total(&t) {
            Some(us) => Item::yes(format!(
                "/proc/pressure/memory: tasks stalled {:.1} s on memory since boot; \
                 --hot-probes pressure attaches the hot programs when it grows",
                us as f64 / 1e6
            )),
            None => Item::no("/proc/pressure/memory has no `some ... total=` line"),
        },
        Err(e) => Item::no(format!(
            "/proc/pressure/memory: {e} (CONFIG_PSI off, or psi=0 on the kernel command \
             line); --hot-probes pressure follows the reclaim and compaction tracepoints only"
        )),
    };
    let cgroup_hierarchies = cgroup::hierarchies();
    let memory_controller = match cgroup::memory_hierarchy() {
        Some(h) => Item::yes(format!(
            "cgroup {} at {}",
            h.version,
            h.mount_point.display()
        )),
        None => Item::no("no mounted hierarchy has the memory controller"),
    };

    if let Some(msg) = privileges.missing_for_tracing() {
        problems.push(msg);
    }
    // The real probe set, attached and dropped again: the sure way to learn
    // which way in each kernel function takes.
    let (kernel_hooks, degraded) =
        if problems.is_empty() && privileges.missing_for_tracing().is_none() {
            match ebpf::Probes::load() {
                Ok(p) => (p.kernel_hooks.clone(), p.degraded.clone()),
                Err(e) => {
                    problems.push(format!("the probe set does not load: {e}"));
                    (Vec::new(), Vec::new())
                }
            }
        } else {
            (Vec::new(), Vec::new())
        };
    // The rules follow the version the snapshot reads (a distribution's
    // stable sublevel where its build line names one), and what the
    // kernel's own tasks say of its rss counters.
    let (rules, rules_warning) = match crate::snapshot::proc::read(proc_root) {
        Ok(snap) => {
            let rules = snap.rules();
            let warning = rules_warning(&snap, &rules);
            (Some(rules), warning)
        }
        Err(_) => (read_header(proc_root).ok().map(|h| h.rules()), None),
    };
    let (knobs, knobs_error) = match host_knobs(proc_root) {
        Ok(k) => (Some(k), None),
        Err(e) => (None, Some(format!("{e:#}"))),
    };
    let mut warnings = knobs.as_ref().map_or_else(Vec::new, |k| k.warnings.clone());
    warnings.extend(rules_warning);
    Report {
        kernel: crate::host::kernel_release(),
        arch: std::env::consts::ARCH,
        rules,
        ebpf_object,
        btf,
        tracefs: tracefs_item,
        tracepoints,
        tp_btf_mark_victim,
        memory_pressure,
        fentry,
        fexit,
        kprobes,
        task_iterator,
        snapshot_source,
        rss_rule,
        kernel_hooks,
        degraded,
        cgroup_hierarchies,
        memory_controller,
        privileges,
        knobs,
        knobs_error,
        can_run: problems.is_empty(),
        problems,
        warnings,
    }
}

fn describe_event(dir: &Path, category: &str, name: &str) -> String {
    if (category, name) != ("oom", "mark_victim") {
        return "present".into();
    }
    let path = dir.join("format");
    match std::fs::read_to_string(&path) {
        Ok(text) => {
            let fields: Vec<String> = tracefs::parse_format(&text)
                .into_iter()
                .filter(|f| !f.name.starts_with("common_"))
                .map(|f| f.name)
                .collect();
            format!("fields: {}", fields.join(", "))
        }
        Err(e) => format!("present; format unreadable: {e}"),
    }
}

/// Loads (without attaching) the empty fentry and fexit programs on
/// `out_of_memory`: the only sure way to know whether this kernel takes them.
fn probe_fentry_fexit(privileges: &Privileges, btf: Option<&Btf>) -> (Item, Item) {
    let skip = |why: &str| (Item::no(why), Item::no(why));
    if !ebpf::object_embedded() {
        return skip("not tested: no eBPF object");
    }
    if privileges.missing_for_tracing().is_some() {
        return skip("not tested: needs CAP_BPF and CAP_PERFMON (run as root)");
    }
    match btf {
        None => return skip("needs BTF"),
        Some(b) if !b.has_func("out_of_memory") => return skip("out_of_memory not in BTF"),
        Some(_) => {}
    }
    match ebpf::try_load_fentry_fexit() {
        Ok((fentry, fexit)) => (to_item(fentry), to_item(fexit)),
        Err(e) => skip(&format!("not tested: {e:#}")),
    }
}

fn to_item(r: Result<(), String>) -> Item {
    match r {
        Ok(()) => Item::yes("loads (tested on out_of_memory)"),
        Err(e) => Item::no(format!("refused: {e}")),
    }
}

impl Report {
    /// The human-readable form.
    pub fn render(&self) -> String {
        use std::fmt::Write as _;
        let mut s = String::new();
        let mark = |ok: bool| if ok { "yes" } else { "NO " };
        // One column for the names, as wide as the longest tracepoint's.
        let w = self
            .tracepoints
            .iter()
            .map(|t| t.name.len() + 1)
            .max()
            .unwrap_or(0)
            .max(20);
        let _ = writeln!(s, "{:<w$}{} ({})", "kernel", self.kernel, self.arch);
        if let Some(r) = &self.rules {
            let _ = writeln!(
                s,
                "{:<w$}Linux {} ({}); oom_badness reads rss as {}; {} of {} known changes apply (--json lists each with its reason)",
                "model rules",
                r.version,
                r.version_from,
                r.rss_counters,
                r.changes.iter().filter(|c| c.applies).count(),
                r.changes.len()
            );
            if let Some(note) = &r.note {
                let _ = writeln!(s, "{:<w$}{note}", "");
            }
            let _ = writeln!(s, "{:<w$}rss counters from {}", "", r.rss_counters_from);
        }
        let line = |s: &mut String, label: &str, i: &Item| {
            let _ = writeln!(s, "{label:<w$}{} {}", mark(i.available), i.detail);
        };
        line(&mut s, "eBPF object", &self.ebpf_object);
        line(&mut s, "BTF", &self.btf);
        line(&mut s, "tracefs", &self.tracefs);
        for tp in &self.tracepoints {
            let _ = writeln!(
                s,
                "{:<w$}{} {} [{}; {}]",
                tp.name,
                mark(tp.available),
                tp.detail,
                if tp.required { "required" } else { "optional" },
                tp.purpose
            );
        }
        line(&mut s, "tp_btf mark_victim", &self.tp_btf_mark_victim);
        line(&mut s, "fentry", &self.fentry);
        line(&mut s, "fexit", &self.fexit);
        line(&mut s, "kprobes", &self.kprobes);
        line(&mut s, "task iterator", &self.task_iterator);
        let _ = writeln!(
            s,
            "{:<w$}{}",
            "snapshot source",
            match self.snapshot_source {
                "bpf" => "bpf (the task iterator; --source auto picks it)",
                _ => "proc (/proc files; --source auto falls back to them)",
            }
        );
        line(&mut s, "memory pressure", &self.memory_pressure);
        for h in &self.kernel_hooks {
            let _ = writeln!(
                s,
                "{:<w$}{} {}{} [{}]",
                format!("hook {}", h.function),
                mark(h.path.is_some()),
                h.path.unwrap_or("off"),
                h.reason
                    .as_deref()
                    .map_or_else(String::new, |r| format!(": {r}")),
                h.what
            );
        }
        for d in &self.degraded {
            let _ = writeln!(s, "{:<w$}NO  {}: {}", "off", d.part, d.reason);
        }
        line(&mut s, "memory cgroup", &self.memory_controller);
        for h in &self.cgroup_hierarchies {
            let _ = writeln!(
                s,
                "  cgroup {} {}{}",
                h.version,
                h.mount_point.display(),
                if h.memory { " (memory)" } else { "" }
            );
        }
        let p = &self.privileges;
        let _ = writeln!(
            s,
            "privileges          euid={} CAP_BPF={} CAP_PERFMON={} CAP_SYS_ADMIN={} CAP_SYS_RESOURCE={}",
            p.euid,
            mark(p.cap_bpf).trim(),
            mark(p.cap_perfmon).trim(),
            mark(p.cap_sys_admin).trim(),
            mark(p.cap_sys_resource).trim()
        );
        match (&self.knobs, &self.knobs_error) {
            (Some(k), _) => {
                let _ = writeln!(
                    s,
                    "{:<w$}{}",
                    "host-wide OOM",
                    crate::cli::predict::action_line(k)
                );
                // The knob lines without their warnings: those come last.
                for l in crate::cli::predict::knob_lines(k)
                    .lines()
                    .skip(1)
                    .filter(|l| !l.starts_with("warning: "))
                {
                    let _ = writeln!(s, "{l}");
                }
            }
            (None, Some(e)) => {
                let _ = writeln!(s, "{:<w$}NO  {e}", "OOM sysctls");
            }
            (None, None) => {}
        }
        if !self.warnings.is_empty() {
            let _ = writeln!(
                s,
                "\nwarnings (oomwatch run can start; predictions say this):"
            );
            for w in &self.warnings {
                let _ = writeln!(s, "  - {w}");
            }
        }
        if self.can_run {
            let _ = writeln!(s, "\noomwatch run can start here.");
        } else {
            let _ = writeln!(s, "\noomwatch run cannot start here:");
            for p in &self.problems {
                let _ = writeln!(s, "  - {p}");
            }
        }
        s
    }
}

/// A warning when this kernel's tasks say other rss counters than its
/// release: the model follows the tasks, and its reader should know why.
fn rules_warning(snap: &crate::snapshot::proc::ProcSnapshot, rules: &Rules) -> Option<String> {
    let release = KernelBehavior::for_version(snap.version).rss_counters();
    (rules.rss_counters != release).then(|| {
        format!(
            "Linux {} says oom_badness reads rss as {release}, but this kernel's tasks say {}: \
             the model follows the tasks ({})",
            rules.version, rules.rss_counters, rules.rss_counters_from
        )
    })
}

/// `oomwatch check [--json]`: the report, and success when oomwatch can run.
pub fn command(json: bool, proc_root: &Path) -> std::process::ExitCode {
    use std::process::ExitCode;
    let report = run(proc_root);
    if json {
        match serde_json::to_string_pretty(&report) {
            Ok(s) => println!("{s}"),
            Err(e) => {
                eprintln!("error: encode the report: {e}");
                return ExitCode::FAILURE;
            }
        }
    } else {
        print!("{}", report.render());
    }
    if report.can_run {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    }
}
