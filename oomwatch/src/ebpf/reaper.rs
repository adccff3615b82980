//! The OOM reaper's tracepoints (`oom:wake_reaper`, `start_task_reaping`,
//! `finish_task_reaping`, `skip_task_reaping`), as [`KernelEvent::Reaper`].

use oomwatch_common::{ReaperEvent, reaper};

use super::KernelEvent;

impl KernelEvent {
    pub fn reaper(ev: &ReaperEvent) -> Self {
        let stage = match ev.stage {
            reaper::WAKE => "wake_reaper",
            reaper::START => "start_task_reaping",
            reaper::FINISH => "finish_task_reaping",
            reaper::SKIP => "skip_task_reaping",
            _ => "unknown",
        };
        KernelEvent::Reaper {
            pid: ev.pid,
            stage,
            boot_ns: ev.boot_ns,
        }
    }
}
