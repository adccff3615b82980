//! oomwatch's kernel-side programs, one module per program family (named like
//! the agent's decoders). The agent finds every program, map and global by
//! its name, whichever module holds it.
//!
//! * `victim`: `oom:mark_victim` and `tp_btf/mark_victim`, the victim of each
//!   OOM kill with its tgid and memory cgroup (`VICTIM_TASKS`).
//! * `tasks`: the `iter/task` program `oomwatch_tasks`, one `TaskRecord` per
//!   task for the agent's `--source bpf` snapshot.
//! * `oompath`: the kernel's OOM functions themselves (`out_of_memory()`,
//!   `oom_badness()`, `oom_kill_process()`, page-fault OOMs), through
//!   fentry/fexit or kprobes, and the fentry/fexit probes of `oomwatch check`.
//! * `alloc`: the hot events, `kmem:mm_page_alloc` and
//!   `exceptions:page_fault_user` (classic and BTF tracepoints): allocations
//!   and faults counted, failed allocations reported, and the benchmark's
//!   empty floor programs.
//! * `reclaim`: reclaim-retry and compaction-retry decisions, and the time
//!   spent in direct and memcg reclaim and in compaction.
//! * `reaper`: the OOM reaper's tracepoints.
//! * `common`: the `EVENTS` ring buffer and its `DROPPED` count, `emit`, the
//!   per-CPU counter and rate-limit helpers, and the record and
//!   kernel-memory readers every family uses.
#![no_std]
#![no_main]

mod alloc;
mod common;
mod oompath;
mod reaper;
mod reclaim;
mod tasks;
mod victim;

#[cfg(not(test))]
#[panic_handler]
fn panic(_info: &core::panic::PanicInfo) -> ! {
    loop {}
}

#[unsafe(link_section = "license")]
#[unsafe(no_mangle)]
static LICENSE: [u8; 13] = *b"Dual MIT/GPL\0";
