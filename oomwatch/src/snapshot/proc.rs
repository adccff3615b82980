//! Processes from procfs, as the OOM killer sees them: mm counters from
//! `status`, flags and start time from `stat`, `oom_score_adj`, and the
//! kernel's own `oom_score` to check the model against.
//!
//! A process that exits while it is being read is a normal outcome and is
//! left out; kernel threads and zombies are kept and marked, as the kernel
//! scans them too (and skips them).

use std::path::{Path, PathBuf};

use procfs::{FromRead as _, ProcError};
use serde::Serialize;

use crate::model::{KernelVersion, MmCounters, Process, Thread, totalpages::GlobalMemory};

/// PF_KTHREAD in `/proc/PID/stat` field 9 (include/linux/sched.h).
const PF_KTHREAD: u32 = 0x0020_0000;
/// CAP_SYS_ADMIN bit in CapEff.
const CAP_SYS_ADMIN: u64 = 1 << 21;

#[derive(Debug, thiserror::Error)]
pub enum SnapshotError {
    #[error("read {path}: {source}")]
    Read {
        path: PathBuf,
        #[source]
        source: ProcError,
    },
    #[error("{path}: {message}")]
    Parse { path: PathBuf, message: String },
}

/// One process and what the kernel itself said about it at read time.
#[derive(Debug, Clone, Serialize)]
pub struct ProcEntry {
    pub process: Process,
    /// `/proc/PID/oom_score` as read (None if unreadable).
    pub kernel_oom_score: Option<u64>,
    /// Start time in clock ticks since boot (`stat` field 22): the order
    /// `for_each_process` walks, up to tick granularity.
    pub start_ticks: u64,
}

/// Processes plus the global facts the model needs.
#[derive(Debug, Clone, Serialize)]
pub struct ProcSnapshot {
    pub kernel: String,
    pub version: KernelVersion,
    pub page_size: u64,
    pub memory: GlobalMemory,
    /// Number of possible CPUs (bounds the per-CPU counter error).
    pub nr_cpus: u64,
    /// In `for_each_process` order as far as `/proc` can tell: start time,
    /// then pid.
    pub processes: Vec<ProcEntry>,
}

fn read_err(path: &Path) -> impl FnOnce(ProcError) -> SnapshotError + '_ {
    move |source| SnapshotError::Read {
        path: path.to_path_buf(),
        source,
    }
}

/// Reads every process under `proc_root` (normally `/proc`).
pub fn read(proc_root: &Path) -> Result<ProcSnapshot, SnapshotError> {
    let release_path = proc_root.join("sys/kernel/osrelease");
    let kernel = std::fs::read_to_string(&release_path)
        .map_err(|e| SnapshotError::Read {
            path: release_path.clone(),
            source: ProcError::Io(e, Some(release_path.clone())),
        })?
        .trim()
        .to_owned();
    let version: KernelVersion = kernel.parse().map_err(|e| SnapshotError::Parse {
        path: release_path.clone(),
        message: format!("{e}"),
    })?;
    let meminfo_path = proc_root.join("meminfo");
    let meminfo = procfs::Meminfo::from_file(&meminfo_path).map_err(read_err(&meminfo_path))?;
    let page_size = procfs::page_size();
    let memory = GlobalMemory {
        totalram_pages: meminfo.mem_total / page_size,
        total_swap_pages: meminfo.swap_total / page_size,
    };
    let nr_cpus = std::thread::available_parallelism().map_or(1, |n| n.get() as u64);

    let mut processes = Vec::new();
    let all = procfs::process::all_processes_with_root(proc_root).map_err(read_err(proc_root))?;
    for p in all {
        let Ok(p) = p else { continue };
        match read_one(&p) {
            Ok(entry) => processes.push(entry),
            // Gone mid-read, or not ours to read: leave it out.
            Err(ProcError::NotFound(_) | ProcError::PermissionDenied(_)) => {}
            Err(ProcError::Incomplete(_)) => {}
            Err(e) => {
                return Err(SnapshotError::Read {
                    path: proc_root.join(p.pid.to_string()),
                    source: e,
                });
            }
        }
    }
    processes.sort_by_key(|e| (e.start_ticks, e.process.tgid));
    Ok(ProcSnapshot {
        kernel,
        version,
        page_size,
        memory,
        nr_cpus,
        processes,
    })
}

fn read_one(p: &procfs::process::Process) -> Result<ProcEntry, ProcError> {
    let stat = p.stat()?;
    let status = p.status()?;
    let oom_score_adj = p.oom_score_adj()?;
    let kernel_oom_score = p.oom_score().ok().map(u64::from);
    let kernel_thread = stat.flags & PF_KTHREAD != 0;
    // Kernel threads and zombies have no Vm* lines: no mm.
    let mm = status.vmrss.is_some().then(|| {
        let kb = |v: Option<u64>| v.unwrap_or(0) * 1024 / procfs::page_size();
        MmCounters {
            anon_pages: kb(status.rssanon),
            file_pages: kb(status.rssfile),
            shmem_pages: kb(status.rssshmem),
            swap_pages: kb(status.vmswap),
            pgtables_bytes: status.vmpte.unwrap_or(0) * 1024,
            nr_ptes: None,
            nr_pmds: None,
        }
    });
    let threads = match p.tasks() {
        Ok(tasks) => tasks
            .flatten()
            .map(|t| Thread {
                pid: t.tid,
                has_mm: mm.is_some(),
                ..Thread::default()
            })
            .collect(),
        Err(_) => vec![Thread {
            pid: p.pid,
            has_mm: mm.is_some(),
            ..Thread::default()
        }],
    };
    let mut threads: Vec<Thread> = threads;
    // Leader first, as for_each_thread walks.
    threads.sort_by_key(|t| (t.pid != p.pid, t.pid));
    Ok(ProcEntry {
        process: Process {
            tgid: p.pid,
            comm: stat.comm.clone(),
            threads,
            mm,
            mm_id: Some(p.pid as u64),
            oom_score_adj,
            kernel_thread,
            // pid 1 of the namespace this /proc belongs to; for the host's
            // /proc that is the global init.
            global_init: p.pid == 1,
            oom_victim: false,
            mm_oom_skip: false,
            oom_origin: false,
            in_vfork: false,
            cap_sys_admin: status.capeff & CAP_SYS_ADMIN != 0,
            cpuset_eligible: true,
            memcg: read_memcg_path(p),
            parent_tgid: Some(stat.ppid),
        },
        kernel_oom_score,
        start_ticks: stat.starttime,
    })
}

/// The process's memory cgroup path from `/proc/PID/cgroup`: the v1 line
/// whose controllers include `memory`, else the v2 (`0::`) line.
fn read_memcg_path(p: &procfs::process::Process) -> Option<String> {
    memcg_path(&p.cgroups().ok()?.0)
}

/// See [`read_memcg_path`].
pub fn memcg_path(lines: &[procfs::ProcessCGroup]) -> Option<String> {
    lines
        .iter()
        .find(|l| l.controllers.iter().any(|c| c == "memory"))
        .or_else(|| {
            lines
                .iter()
                .find(|l| l.hierarchy == 0 && l.controllers.is_empty())
        })
        .map(|l| l.pathname.clone())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The running system, unprivileged: this test process must be there,
    /// with an mm and a plausible score.
    #[test]
    fn reads_self_from_the_live_proc() {
        let snap = read(Path::new("/proc")).unwrap();
        let me = std::process::id() as i32;
        let e = snap
            .processes
            .iter()
            .find(|e| e.process.tgid == me)
            .expect("this process is listed");
        let mm = e.process.mm.expect("a user process has an mm");
        assert!(mm.anon_pages > 0);
        assert!(!e.process.kernel_thread);
        assert!(snap.memory.totalram_pages > 0);
        assert!(!e.process.threads.is_empty());
        assert_eq!(e.process.threads[0].pid, me, "leader first");
        let kthreadd = snap.processes.iter().find(|e| e.process.tgid == 2);
        if let Some(k) = kthreadd {
            assert!(k.process.kernel_thread);
            assert!(k.process.mm.is_none());
        }
    }

    #[test]
    fn memcg_path_v1_v2_hybrid() {
        use procfs::{FromBufRead as _, ProcessCGroups};
        let parse = |t: &str| memcg_path(&ProcessCGroups::from_buf_read(t.as_bytes()).unwrap().0);
        let hybrid = "12:pids:/a\n4:memory:/batch/job1\n1:name=systemd:/x\n0::/unified/path\n";
        assert_eq!(parse(hybrid).as_deref(), Some("/batch/job1"));
        assert_eq!(
            parse("0::/kubepods/pod1\n").as_deref(),
            Some("/kubepods/pod1")
        );
        assert_eq!(parse("3:cpu,cpuacct:/\n"), None);
    }

    #[test]
    fn missing_root_names_the_path() {
        let err = read(Path::new("/nonexistent/proc")).unwrap_err();
        assert!(err.to_string().contains("/nonexistent/proc"), "{err}");
    }
}
