//! The kernel's OOM path as its own functions report it: fentry/fexit or
//! kprobes on `out_of_memory`, `oom_badness` and `oom_kill_process`, decoded
//! into [`KernelEvent`]s (the daemon assembles them into one scan per OOM).

use oomwatch_common::{BadnessEvent, OomChosenEvent, OomEnterEvent, OomExitEvent};
use serde::Serialize;

/// `enum oom_constraint`, in its kernel order.
pub fn constraint_name(c: u32) -> &'static str {
    match c {
        0 => "CONSTRAINT_NONE",
        1 => "CONSTRAINT_CPUSET",
        2 => "CONSTRAINT_MEMORY_POLICY",
        3 => "CONSTRAINT_MEMCG",
        _ => "unknown",
    }
}

/// One record of the kernel OOM-path programs.
#[derive(Debug, Clone, Serialize)]
#[serde(tag = "event", rename_all = "snake_case")]
pub enum KernelEvent {
    Enter {
        pid: u32,
        tgid: u32,
        comm: String,
        order: i32,
        gfp_mask: u32,
        memcg: bool,
        boot_ns: u64,
    },
    Badness {
        pid: u32,
        tgid: u32,
        scanner: u32,
        /// None: the kernel returned LONG_MIN (unkillable, or skipped).
        points: Option<i64>,
        totalpages: u64,
    },
    Chosen {
        pid: u32,
        tgid: u32,
        scanner: u32,
        constraint: &'static str,
        chosen_points: i64,
        totalpages: u64,
        boot_ns: u64,
    },
    Exit {
        pid: u32,
        handled: bool,
        boot_ns: u64,
    },
    Reaper {
        pid: u32,
        stage: &'static str,
        boot_ns: u64,
    },
}

impl KernelEvent {
    pub fn enter(ev: &OomEnterEvent) -> Self {
        KernelEvent::Enter {
            pid: ev.pid,
            tgid: ev.tgid,
            comm: super::victim::comm_string(&ev.comm),
            order: ev.order,
            gfp_mask: ev.gfp_mask,
            memcg: ev.memcg != 0,
            boot_ns: ev.boot_ns,
        }
    }

    pub fn badness(ev: &BadnessEvent) -> Self {
        KernelEvent::Badness {
            pid: ev.pid,
            tgid: ev.tgid,
            scanner: ev.scanner,
            points: (ev.points != i64::MIN).then_some(ev.points),
            totalpages: ev.totalpages,
        }
    }

    pub fn chosen(ev: &OomChosenEvent) -> Self {
        KernelEvent::Chosen {
            pid: ev.pid,
            tgid: ev.tgid,
            scanner: ev.scanner,
            constraint: constraint_name(ev.constraint),
            chosen_points: ev.chosen_points,
            totalpages: ev.totalpages,
            boot_ns: ev.boot_ns,
        }
    }

    pub fn exit(ev: &OomExitEvent) -> Self {
        KernelEvent::Exit {
            pid: ev.pid,
            handled: ev.ret != 0,
            boot_ns: ev.boot_ns,
        }
    }
}
