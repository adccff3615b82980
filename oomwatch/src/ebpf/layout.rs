//! The kernel offsets the programs follow, resolved from BTF before load
//! (Rust eBPF has no CO-RE field relocations) and passed in as globals.

use oomwatch_common::{FIELD_ABSENT, OomScanLayout, TaskIterLayout, TaskLayout, rss_rule};

#[cfg(test)]
use crate::host::btf::VMLINUX_BTF;
use crate::{
    host::{
        btf::{Btf, BtfError, MemberLayout},
        cpus::PossibleCpus,
    },
    model::{
        behavior::RssCounters,
        version::{KernelVersion, v},
    },
};

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

/// How the running kernel's `oom_badness()` reads a task's rss counters,
/// and so how the task iterator reads them to score as it does.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum RssRule {
    /// Up to 6.1: `get_mm_counter()` of the `atomic_long_t
    /// mm->rss_stat.count[i]`, clamped at 0.
    Atomic,
    /// 6.2 – 6.19: `get_mm_counter()` = `percpu_counter_read_positive()`:
    /// the global `count` of `mm->rss_stat[i]`, clamped at 0.
    Approximate,
    /// 7.0+: `get_mm_rss_sum()` / `get_mm_counter_sum()` =
    /// `percpu_counter_sum_positive()`: `count` plus every CPU's `s32`
    /// part, clamped at 0 (5898aa8f9a0b, "mm: fix OOM killer inaccuracy on
    /// large many-core systems").
    Exact,
}

/// The rule for this kernel, and the evidence it was chosen on.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct RssRuleChoice {
    pub rule: RssRule,
    pub why: String,
}

impl std::fmt::Display for RssRuleChoice {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let name = match self.rule {
            RssRule::Atomic => "atomic",
            RssRule::Approximate => "approximate",
            RssRule::Exact => "exact",
        };
        write!(f, "rss counters {name}: {}", self.why)
    }
}

/// The first release whose `oom_badness()` sums the per-CPU rss counters.
pub const EXACT_RSS_FROM: KernelVersion = v(7, 0, 0);

/// Picks the rule: the type of `mm_struct.rss_stat` in BTF tells the
/// atomics (before 6.2) from the percpu counters (`percpu`); between the
/// two percpu readings, what the kernel's own tasks were measured to score
/// with (`measured`: the counters and the tasks' verdict) decides where
/// they tell, and the release where they do not: summing has no BTF trace
/// of its own (`get_mm_rss_sum()` is an inline; 7.0.0 of 5898aa8f9a0b),
/// and a stable or vendor kernel may carry it under an older version. A
/// release that does not parse, with no measurement, is an error: guessing
/// either way would score some tasks off by up to a per-CPU batch.
pub fn choose_rss_rule(
    percpu: bool,
    release: &str,
    measured: Option<(RssCounters, &str)>,
) -> Result<RssRuleChoice, String> {
    if !percpu {
        return Ok(RssRuleChoice {
            rule: RssRule::Atomic,
            why: "mm_struct.rss_stat holds atomic counters (before 6.2): read as they are".into(),
        });
    }
    let ver = release.parse::<KernelVersion>();
    let says_release = match &ver {
        Ok(ver) if *ver >= EXACT_RSS_FROM => format!("release {ver} >= 7.0"),
        Ok(ver) => format!("release {ver} < 7.0"),
        Err(_) => format!("release `{release}` is not a kernel version"),
    };
    let rule = match (measured, &ver) {
        (Some((RssCounters::PreciseSums, verdict)), _) => {
            return Ok(RssRuleChoice {
                rule: RssRule::Exact,
                why: format!(
                    "mm_struct.rss_stat is percpu_counter[] and this kernel's tasks were measured: \
                     {verdict} ({says_release}): read count and every CPU's part"
                ),
            });
        }
        (Some((RssCounters::Approximate, verdict)), _) => {
            return Ok(RssRuleChoice {
                rule: RssRule::Approximate,
                why: format!(
                    "mm_struct.rss_stat is percpu_counter[] and this kernel's tasks were measured: \
                     {verdict} ({says_release}): read the global count"
                ),
            });
        }
        (_, Ok(ver)) if *ver >= EXACT_RSS_FROM => RssRule::Exact,
        (_, Ok(_)) => RssRule::Approximate,
        (_, Err(_)) => {
            return Err(format!(
                "{says_release} and its tasks did not tell: cannot tell whether oom_badness \
                 sums the per-CPU rss counters (7.0+) or reads their global count"
            ));
        }
    };
    Ok(RssRuleChoice {
        rule,
        why: match rule {
            RssRule::Exact => format!(
                "{says_release} and mm_struct.rss_stat is percpu_counter[]: oom_badness \
                 sums count and every CPU's part (get_mm_rss_sum, 5898aa8f9a0b)"
            ),
            _ => format!(
                "{says_release} and mm_struct.rss_stat is percpu_counter[]: oom_badness \
                 reads the global count (percpu_counter_read_positive)"
            ),
        },
    })
}

/// Writes `choice` into `layout`; for [`RssRule::Exact`], with what the
/// sum needs: `__per_cpu_offset`'s address and the possible CPUs (`per_cpu`,
/// read only then). An error says why this kernel's sum cannot be
/// reproduced here.
pub fn apply_rss_rule(
    layout: &mut TaskIterLayout,
    choice: &RssRuleChoice,
    per_cpu: impl FnOnce() -> Result<(u64, PossibleCpus), String>,
) -> Result<(), String> {
    layout.rss_rule = match choice.rule {
        RssRule::Atomic => rss_rule::ATOMIC,
        RssRule::Approximate => rss_rule::APPROXIMATE,
        RssRule::Exact => rss_rule::EXACT,
    };
    if choice.rule != RssRule::Exact {
        return Ok(());
    }
    if layout.rss_counters == FIELD_ABSENT || layout.rss_direct == 0 {
        return Err("struct percpu_counter has no `counters` member in BTF".into());
    }
    let (offsets, cpus) = per_cpu()?;
    layout.per_cpu_offset = offsets;
    layout.nr_cpu_ids = cpus.nr_cpu_ids;
    layout.possible_cpus = cpus.mask;
    Ok(())
}

/// `mm_struct.flags` as the task iterator reads it: one 8-byte word whose
/// bit 21 is MMF_OOM_SKIP, an `unsigned long` up to 6.17 and an
/// `mm_flags_t { unsigned long __mm_flags[1]; }` from 6.18 (same storage).
/// Anything else is refused with what BTF says it is.
pub fn check_mm_flags(flags: &MemberLayout) -> Result<(), String> {
    let word = flags.elem_size == 8 && flags.count == 1;
    // type_name is empty for a plain integer (BTF INT kinds are not named
    // by member_layout), else the typedef's or struct's name.
    if word && (flags.type_name.is_empty() || flags.type_name == "mm_flags_t") {
        Ok(())
    } else {
        Err(format!(
            "mm_struct.flags is `{}` of {} byte(s) x {}: neither the unsigned long of \
             Linux <= 6.17 nor the mm_flags_t of 6.18+",
            if flags.type_name.is_empty() {
                "an integer"
            } else {
                &flags.type_name
            },
            flags.elem_size,
            flags.count
        ))
    }
}

/// Resolves the offsets the task iterator follows, from the kernel's BTF,
/// with the rss rule its structures alone show (atomic or the percpu
/// counters' global count; [`apply_rss_rule`] then sets the rule the
/// release adds).
pub fn task_iter_layout(btf: &Btf) -> Result<TaskIterLayout, String> {
    task_iter_offsets(btf).map_err(|e| e.to_string())
}

fn task_iter_offsets(btf: &Btf) -> Result<TaskIterLayout, BtfError> {
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
    let percpu = rss.type_name == "percpu_counter";
    let flags = btf.member_layout("mm_struct", "flags")?;
    if let Err(why) = check_mm_flags(&flags) {
        return Err(BtfError::NoSuchMember {
            ty: "mm_struct".into(),
            member: format!("flags of a known type ({why})"),
        });
    }
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
        mm_flags: flags.offset,
        mm_rss_stat,
        rss_stride,
        rss_count,
        rss_direct: u32::from(percpu),
        counter_index,
        mm_pgtables_bytes: opt("mm_struct", "pgtables_bytes"),
        valid: 1,
        rss_rule: if percpu {
            rss_rule::APPROXIMATE
        } else {
            rss_rule::ATOMIC
        },
        rss_counters: if percpu {
            opt("percpu_counter", "counters")
        } else {
            FIELD_ABSENT
        },
        nr_cpu_ids: 0,
        per_cpu_offset: 0,
        possible_cpus: [0; 4],
    })
}

/// The task program's layout from the BTF at `btf_path`, or one sentence on
/// why that program cannot run on this kernel.
#[cfg(test)]
fn task_program_plan(btf_path: &std::path::Path) -> Result<TaskLayout, String> {
    task_program_plan_in(&read_btf(btf_path)?)
}

/// The kernel's BTF at `btf_path`, or why it cannot be read.
pub(super) fn read_btf(btf_path: &std::path::Path) -> Result<Btf, String> {
    Btf::from_file(btf_path).map_err(|e| {
        format!("the kernel has no readable BTF ({e}; it needs CONFIG_DEBUG_INFO_BTF=y)")
    })
}

/// [`task_program_plan`] on parsed BTF.
pub(super) fn task_program_plan_in(btf: &Btf) -> Result<TaskLayout, String> {
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
    fn rss_rule_by_structure_and_release() {
        // Debian's lines: 5.10/6.1 atomics, 6.12/6.16/6.19 approximate,
        // 7.0 on exact (doc kernels-5.10-to-7.3 §2.1).
        let rule = |percpu, r| choose_rss_rule(percpu, r, None).unwrap().rule;
        assert_eq!(rule(false, "5.10.0-46-cloud-amd64"), RssRule::Atomic);
        assert_eq!(rule(false, "6.1.0-57-cloud-amd64"), RssRule::Atomic);
        assert_eq!(
            rule(true, "6.12.118+deb13-cloud-amd64"),
            RssRule::Approximate
        );
        assert_eq!(
            rule(true, "6.19.14+deb13-cloud-amd64"),
            RssRule::Approximate
        );
        assert_eq!(rule(true, "7.0.13+deb13-cloud-amd64"), RssRule::Exact);
        assert_eq!(rule(true, "7.3.4+deb13-cloud-amd64"), RssRule::Exact);
        // No release needed for the atomics; an unreadable one is named.
        assert_eq!(rule(false, "garbage"), RssRule::Atomic);
        let err = choose_rss_rule(true, "garbage", None).unwrap_err();
        assert!(err.contains("`garbage`"), "{err}");
        let why = choose_rss_rule(true, "7.3.4", None).unwrap().to_string();
        assert!(
            why.starts_with("rss counters exact: release 7.3.4 >= 7.0"),
            "{why}"
        );
        // The kernel's tasks decide where they tell: a 6.12 with 7.0's sums
        // backported, a 7.x without them, and a release that does not parse.
        let measured = |c, r| choose_rss_rule(true, r, Some((c, "5 tasks say so")));
        let backport = measured(RssCounters::PreciseSums, "6.12.118+deb13-cloud-amd64").unwrap();
        assert_eq!(backport.rule, RssRule::Exact);
        assert!(
            backport
                .why
                .contains("measured: 5 tasks say so (release 6.12.118 < 7.0)"),
            "{}",
            backport.why
        );
        assert_eq!(
            measured(RssCounters::Approximate, "7.3.4").unwrap().rule,
            RssRule::Approximate
        );
        assert_eq!(
            measured(RssCounters::PreciseSums, "garbage").unwrap().rule,
            RssRule::Exact
        );
        // Atomics stay atomics whatever is measured.
        assert_eq!(
            choose_rss_rule(false, "7.3.4", Some((RssCounters::PreciseSums, "x")))
                .unwrap()
                .rule,
            RssRule::Atomic
        );
    }

    fn percpu_layout() -> TaskIterLayout {
        TaskIterLayout {
            rss_direct: 1,
            rss_counters: 32,
            rss_rule: rss_rule::APPROXIMATE,
            ..TaskIterLayout::INVALID
        }
    }

    #[test]
    fn exact_rule_carries_the_per_cpu_inputs() {
        let exact = choose_rss_rule(true, "7.3.4", None).unwrap();
        let mut l = percpu_layout();
        let cpus = crate::host::cpus::parse_cpu_list("0-1").unwrap();
        apply_rss_rule(&mut l, &exact, || Ok((0xffff_ffff_ab41_c8a0, cpus))).unwrap();
        assert_eq!(l.rss_rule, rss_rule::EXACT);
        assert_eq!(l.per_cpu_offset, 0xffff_ffff_ab41_c8a0);
        assert_eq!((l.nr_cpu_ids, l.possible_cpus), (2, [0b11, 0, 0, 0]));
        // Without __per_cpu_offset: the reason, nothing half-set.
        let mut l = percpu_layout();
        let err = apply_rss_rule(&mut l, &exact, || Err("hidden".into())).unwrap_err();
        assert_eq!(err, "hidden");
        // Approximate and atomic never ask for the per-CPU inputs.
        let approx = choose_rss_rule(true, "6.12.118", None).unwrap();
        let mut l = percpu_layout();
        apply_rss_rule(&mut l, &approx, || panic!("not read")).unwrap();
        assert_eq!((l.rss_rule, l.nr_cpu_ids), (rss_rule::APPROXIMATE, 0));
        // A percpu_counter without `counters` (CONFIG_SMP=n) cannot be summed.
        let mut l = TaskIterLayout {
            rss_counters: FIELD_ABSENT,
            ..percpu_layout()
        };
        assert!(apply_rss_rule(&mut l, &exact, || panic!("not read")).is_err());
    }

    #[test]
    fn mm_flags_both_types() {
        let m = |type_name: &str, elem_size, count| MemberLayout {
            offset: 880,
            type_name: type_name.into(),
            elem_size,
            count,
        };
        // 5.10 - 6.17: unsigned long; 6.18+: mm_flags_t (BTF, doc §4.2).
        assert!(check_mm_flags(&m("", 8, 1)).is_ok());
        assert!(check_mm_flags(&m("mm_flags_t", 8, 1)).is_ok());
        let err = check_mm_flags(&m("mm_flags_t", 16, 1)).unwrap_err();
        assert!(err.contains("mm_flags_t` of 16"), "{err}");
        assert!(check_mm_flags(&m("", 4, 1)).is_err());
        assert!(check_mm_flags(&m("something_else", 8, 1)).is_err());
    }

    #[test]
    fn running_kernel_mm_flags() {
        if !std::path::Path::new(VMLINUX_BTF).exists() {
            eprintln!("skipped: no {VMLINUX_BTF}");
            return;
        }
        let btf = Btf::from_sys_fs().unwrap();
        let flags = btf.member_layout("mm_struct", "flags").unwrap();
        check_mm_flags(&flags).unwrap();
        let l = task_iter_layout(&btf).unwrap();
        assert_eq!(l.mm_flags, flags.offset);
        if l.rss_direct != 0 {
            assert_eq!(l.rss_counters, 32, "percpu_counter.counters (doc §5)");
        }
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
