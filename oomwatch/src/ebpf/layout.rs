//! The kernel offsets the programs follow, resolved from BTF before load
//! (Rust eBPF has no CO-RE field relocations) and passed in as globals.

use oomwatch_common::{FIELD_ABSENT, OomScanLayout, TaskIterLayout, TaskLayout};

#[cfg(test)]
use crate::host::btf::VMLINUX_BTF;
use crate::host::btf::{Btf, BtfError};

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
