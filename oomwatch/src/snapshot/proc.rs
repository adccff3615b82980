//! Processes from procfs, as the OOM killer sees them: mm counters from
//! `status`, flags and start time from `stat`, `oom_score_adj`, and the
//! kernel's own `oom_score` to check the model against.
//!
//! A process that exits while it is being read is a normal outcome and is
//! left out; kernel threads and zombies are kept and marked, as the kernel
//! scans them too (and skips them). A process that cannot be read for any
//! other reason (denied, an I/O error, a file that does not parse) is left
//! out of that snapshot too, not the snapshot: it is named in
//! [`ProcSnapshot::skipped`] with the reason.

use std::path::{Path, PathBuf};

use procfs::ProcError;
use serde::Serialize;

use crate::model::{
    KernelBehavior, KernelVersion, MmCounters, Process, Thread,
    behavior::Rules,
    score::{CounterSample, CountersMeasured, measure_counters},
    totalpages::GlobalMemory,
    version::{RunningVersion, running_version},
};

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

/// Why a process was left out of a snapshot other than by exiting: a
/// bounded set, the values of `oomwatch_snapshot_tasks_skipped_total`'s
/// `reason`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum SkipReason {
    /// EACCES or EPERM (e.g. `hidepid`, an LSM).
    Permission,
    /// Another I/O error (EIO, ...).
    Io,
    /// A file that is not what procfs should hold: a missing field, a
    /// value that does not parse.
    Malformed,
}

impl SkipReason {
    pub const ALL: [SkipReason; 3] = [
        SkipReason::Permission,
        SkipReason::Io,
        SkipReason::Malformed,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            SkipReason::Permission => "permission",
            SkipReason::Io => "io",
            SkipReason::Malformed => "malformed",
        }
    }

    /// Why `e` left a process out; None when the process is gone (ENOENT,
    /// ESRCH: it exited while being read), which is no skip.
    pub fn of(e: &ProcError) -> Option<Self> {
        match e {
            ProcError::NotFound(_) => None,
            ProcError::PermissionDenied(_) => Some(SkipReason::Permission),
            ProcError::Io(io, _) => match io.raw_os_error() {
                Some(libc::ENOENT | libc::ESRCH) => None,
                Some(libc::EACCES | libc::EPERM) => Some(SkipReason::Permission),
                _ => Some(SkipReason::Io),
            },
            ProcError::Incomplete(_) | ProcError::Other(_) | ProcError::InternalError(_) => {
                Some(SkipReason::Malformed)
            }
        }
    }
}

/// A process left out of a snapshot, and why.
#[derive(Debug, Clone, Serialize)]
pub struct Skipped {
    pub tgid: i32,
    pub reason: SkipReason,
    /// The process's directory and the error.
    pub error: String,
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
    /// `stat` field 24, rss in pages: `get_mm_rss()`, the approximate
    /// per-CPU counters from 6.2 on, where `status` shows the precise sums
    /// (6.16+, 6.12.39+). None without an mm, or from the task iterator.
    pub stat_rss_pages: Option<u64>,
}

/// Processes plus the global facts the model needs.
#[derive(Debug, Clone, Serialize)]
pub struct ProcSnapshot {
    pub kernel: String,
    /// The version the model's rules key on.
    pub version: KernelVersion,
    /// Where `version` came from (the release, or a distribution's
    /// package version naming the stable sublevel).
    pub version_from: String,
    pub page_size: u64,
    pub memory: GlobalMemory,
    /// Number of possible CPUs (bounds the per-CPU counter error).
    pub nr_cpus: u64,
    /// `MemAvailable` in bytes, read with the rest (None on kernels before
    /// 3.14, which do not have it).
    pub mem_available: Option<u64>,
    /// `CommitLimit` and `Committed_AS` in bytes: what `vm.overcommit_memory=2`
    /// allows and what is committed (None when meminfo lacks them).
    pub commit_limit: Option<u64>,
    pub committed_as: Option<u64>,
    /// In `for_each_process` order as far as `/proc` can tell: start time,
    /// then pid.
    pub processes: Vec<ProcEntry>,
    /// What this kernel's own tasks said of the rss counters it scores
    /// with, over every full read of this proc root so far (each task's
    /// precise and approximate rss against its `oom_score`); None before
    /// the first.
    pub rss_measured: Option<CountersMeasured>,
    /// Processes left out for a reason other than exiting (see the module
    /// documentation), in the order met.
    #[serde(skip)]
    pub skipped: Vec<Skipped>,
}

impl ProcSnapshot {
    /// The model's rules for this kernel: its version's, with the rss
    /// counters its tasks were measured to score with where they decide
    /// (a backport the version does not show).
    pub fn behavior(&self) -> KernelBehavior {
        let kb = KernelBehavior::for_version(self.version);
        match self.rss_measured.as_ref().and_then(CountersMeasured::says) {
            Some(seen) => kb.with_rss_counters(seen),
            None => kb,
        }
    }

    /// The rules [`Self::behavior`] applies, each with its reason.
    pub fn rules(&self) -> Rules {
        let mut rules = KernelBehavior::for_version(self.version).rules(&self.version_from);
        if let Some(m) = &self.rss_measured {
            rules.follow_measurement(m.clone(), m.says());
        }
        rules
    }

    /// Measures this snapshot's tasks (see [`measure_counters`]).
    fn measure(&self) -> CountersMeasured {
        let kb = KernelBehavior::for_version(self.version);
        let samples = self.processes.iter().filter_map(|e| {
            Some(CounterSample {
                process: &e.process,
                approx_rss_pages: e.stat_rss_pages?,
                kernel_score: e.kernel_oom_score?,
            })
        });
        measure_counters(samples, self.memory.totalpages(), self.page_size, &kb)
    }
}

/// Every proc root's measurements so far: a kernel's counters do not change
/// while it runs, so each full read adds to what earlier ones said.
static MEASURED: std::sync::Mutex<Vec<(PathBuf, CountersMeasured)>> =
    std::sync::Mutex::new(Vec::new());

/// Adds `m` (None: only looks) to `proc_root`'s measurements; returns them.
fn measured(proc_root: &Path, m: Option<CountersMeasured>) -> Option<CountersMeasured> {
    let mut all = MEASURED.lock().unwrap_or_else(|e| e.into_inner());
    let i = match all.iter().position(|(root, _)| root == proc_root) {
        Some(i) => i,
        None => {
            let m = m?;
            all.push((proc_root.to_path_buf(), m.clone()));
            return Some(m);
        }
    };
    if let Some(m) = m {
        all[i].1 = all[i].1.add(&m);
    }
    Some(all[i].1.clone())
}

fn read_err(path: &Path) -> impl FnOnce(ProcError) -> SnapshotError + '_ {
    move |source| SnapshotError::Read {
        path: path.to_path_buf(),
        source,
    }
}

/// Reads every process under `proc_root` (normally `/proc`).
pub fn read(proc_root: &Path) -> Result<ProcSnapshot, SnapshotError> {
    let mut snap = read_header(proc_root)?;
    let mut processes = Vec::new();
    let all = procfs::process::all_processes_with_root(proc_root).map_err(read_err(proc_root))?;
    let mut skipped = Vec::new();
    for p in all {
        let Ok(p) = p else { continue };
        match read_one(&p) {
            Ok(entry) => processes.push(entry),
            // One process never costs the others: gone mid-read is no
            // news, anything else is said.
            Err(e) => {
                if let Some(reason) = SkipReason::of(&e) {
                    skipped.push(Skipped {
                        tgid: p.pid,
                        reason,
                        error: format!("{}: {e}", proc_root.join(p.pid.to_string()).display()),
                    });
                }
            }
        }
    }
    processes.sort_by_key(|e| (e.start_ticks, e.process.tgid));
    snap.processes = processes;
    snap.skipped = skipped;
    snap.rss_measured = measured(proc_root, Some(snap.measure()));
    Ok(snap)
}

/// A snapshot without processes: the release, page size, memory and CPUs,
/// from `proc_root`. Every snapshot source starts from this.
pub fn read_header(proc_root: &Path) -> Result<ProcSnapshot, SnapshotError> {
    let release_path = proc_root.join("sys/kernel/osrelease");
    // The release does not change while the system runs: read once per
    // proc root (the daemon takes a header every pass).
    static RELEASE: std::sync::Mutex<Option<(PathBuf, String, RunningVersion)>> =
        std::sync::Mutex::new(None);
    let cached = RELEASE
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .as_ref()
        .filter(|(root, ..)| root == proc_root)
        .map(|(_, k, rv)| (k.clone(), rv.clone()));
    let (kernel, running) = match cached {
        Some(c) => c,
        None => {
            let k = std::fs::read_to_string(&release_path)
                .map_err(|e| SnapshotError::Read {
                    path: release_path.clone(),
                    source: ProcError::Io(e, Some(release_path.clone())),
                })?
                .trim()
                .to_owned();
            // The build line and Ubuntu's signature name the stable
            // sublevel a distribution release hides.
            let build = std::fs::read_to_string(proc_root.join("version")).ok();
            let signature = std::fs::read_to_string(proc_root.join("version_signature")).ok();
            let rv = running_version(&k, build.as_deref(), signature.as_deref()).map_err(|e| {
                SnapshotError::Parse {
                    path: release_path.clone(),
                    message: format!("{e}"),
                }
            })?;
            *RELEASE.lock().unwrap_or_else(|e| e.into_inner()) =
                Some((proc_root.to_path_buf(), k.clone(), rv.clone()));
            (k, rv)
        }
    };
    let version = running.version;
    let meminfo_path = proc_root.join("meminfo");
    let meminfo = std::fs::read_to_string(&meminfo_path)
        .map_err(|e| ProcError::Io(e, Some(meminfo_path.clone())))
        .map_err(read_err(&meminfo_path))?;
    let kb = |key: &str| meminfo_bytes(&meminfo, key);
    let mem_total = kb("MemTotal:").ok_or_else(|| SnapshotError::Parse {
        path: meminfo_path.clone(),
        message: "no MemTotal line".into(),
    })?;
    let page_size = procfs::page_size();
    let memory = GlobalMemory {
        totalram_pages: mem_total / page_size,
        total_swap_pages: kb("SwapTotal:").unwrap_or(0) / page_size,
    };
    // The kernel's online CPUs (its per-CPU counter batch follows them),
    // not the CPUs this process may use (affinity, a cgroup quota).
    // SAFETY: sysconf with a constant name.
    let online = unsafe { libc::sysconf(libc::_SC_NPROCESSORS_ONLN) };
    let nr_cpus = u64::try_from(online).ok().filter(|&n| n > 0).unwrap_or(1);
    Ok(ProcSnapshot {
        kernel,
        version,
        version_from: running.from,
        page_size,
        memory,
        nr_cpus,
        mem_available: kb("MemAvailable:"),
        commit_limit: kb("CommitLimit:"),
        committed_as: kb("Committed_AS:"),
        processes: Vec::new(),
        rss_measured: measured(proc_root, None),
        skipped: Vec::new(),
    })
}

/// A `/proc/meminfo` value (`Key:   N kB`) in bytes (pure: the fuzz
/// target's entry); None when absent, not a number, or past `u64::MAX`
/// bytes.
pub fn meminfo_bytes(text: &str, key: &str) -> Option<u64> {
    let rest = text.lines().find_map(|l| l.strip_prefix(key))?;
    let mut f = rest.split_whitespace();
    let n: u64 = f.next()?.parse().ok()?;
    match f.next() {
        Some("kB") => n.checked_mul(1024),
        _ => Some(n),
    }
}

/// A task's mm counters from its parsed `status` (kB) in pages of
/// `page_size` bytes; None for kernel threads and zombies, which have no
/// `Vm*` lines: no mm. Values past `u64::MAX` bytes saturate (a file no
/// kernel writes).
pub fn mm_counters(status: &procfs::process::Status, page_size: u64) -> Option<MmCounters> {
    status.vmrss.is_some().then(|| {
        let bytes = |v: Option<u64>| v.unwrap_or(0).saturating_mul(1024);
        let pages = |v: Option<u64>| bytes(v) / page_size.max(1);
        MmCounters {
            anon_pages: pages(status.rssanon),
            file_pages: pages(status.rssfile),
            shmem_pages: pages(status.rssshmem),
            swap_pages: pages(status.vmswap),
            pgtables_bytes: bytes(status.vmpte),
            nr_ptes: None,
            nr_pmds: None,
        }
    })
}

/// Reads one process again (None when it is gone or unreadable): the
/// self-check's second look at a task whose score differed.
pub fn read_pid(proc_root: &Path, pid: i32) -> Option<ProcEntry> {
    let p = procfs::process::Process::new_with_root(proc_root.join(pid.to_string())).ok()?;
    read_one(&p).ok()
}

/// `/proc/PID/stat`, parsed (pure: the fuzz target's entry). procfs's
/// parser slices the line where the kernel puts ` (`, the last `)` and the
/// space after it, and panics on a line without them (a captured or
/// foreign proc tree, not a kernel's file: the kernel always writes
/// `pid (comm) state ...`, whatever `comm` holds). That shape is checked
/// first; a line without it is malformed.
pub fn parse_stat(bytes: &[u8]) -> Result<procfs::process::Stat, ProcError> {
    use procfs::FromRead as _;
    let text = String::from_utf8_lossy(bytes);
    let line = text.trim().as_bytes();
    let open = line.iter().position(|&b| b == b'(');
    let close = line.iter().rposition(|&b| b == b')');
    let shaped = match (open, close) {
        (Some(open), Some(close)) => {
            open >= 1
                && line[open - 1] == b' '
                && close > open
                && line.get(close + 1) == Some(&b' ')
        }
        _ => false,
    };
    if !shaped {
        return Err(ProcError::Other(
            "stat is not `pid (comm) state ...`: not a file the kernel wrote".into(),
        ));
    }
    procfs::process::Stat::from_read(bytes)
}

fn read_stat(p: &procfs::process::Process) -> Result<procfs::process::Stat, ProcError> {
    use std::io::Read as _;
    let mut bytes = Vec::with_capacity(512);
    p.open_relative("stat")?.read_to_end(&mut bytes)?;
    parse_stat(&bytes)
}

fn read_one(p: &procfs::process::Process) -> Result<ProcEntry, ProcError> {
    let stat = read_stat(p)?;
    let status = p.status()?;
    let oom_score_adj = p.oom_score_adj()?;
    let kernel_oom_score = p.oom_score().ok().map(u64::from);
    let kernel_thread = stat.flags & PF_KTHREAD != 0;
    let counters = |status: &procfs::process::Status| mm_counters(status, procfs::page_size());
    let mut mm = counters(&status);
    let leader_has_mm = mm.is_some();
    // Where an exited leader's process lives: its live threads' memcg (the
    // leader itself has left for the root css_set).
    let mut thread_memcg = None;
    let threads = match p.tasks() {
        Ok(tasks) => tasks
            .flatten()
            .map(|t| {
                // A leader that has exited on its own (a zombie with live
                // threads) has no mm, but its threads share one, and the
                // OOM killer scores the process through the first of them
                // (find_lock_task_mm): read the counters there.
                let has_mm = if leader_has_mm {
                    // Every thread shares the leader's mm.
                    true
                } else if t.tid == p.pid || kernel_thread {
                    false
                } else {
                    let own = t.status().ok().as_ref().and_then(counters);
                    if mm.is_none() && own.is_some() {
                        mm = own;
                        thread_memcg = t
                            .read::<procfs::ProcessCGroups>("cgroup")
                            .ok()
                            .and_then(|c| memcg_path(&c.0));
                    }
                    own.is_some()
                };
                Thread {
                    pid: t.tid,
                    has_mm,
                    ..Thread::default()
                }
            })
            .collect(),
        Err(_) => vec![Thread {
            pid: p.pid,
            has_mm: leader_has_mm,
            ..Thread::default()
        }],
    };
    let mut threads: Vec<Thread> = threads;
    // Leader first, as for_each_thread walks.
    threads.sort_by_key(|t| (t.pid != p.pid, t.pid));
    let stat_rss_pages = mm.is_some().then_some(stat.rss);
    Ok(ProcEntry {
        stat_rss_pages,
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
            memcg: thread_memcg.or_else(|| read_memcg_path(p)),
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

/// Reads `/proc/PID/oom_score` for `n` of the snapshot's processes, the
/// next `n` after those of the previous call.
pub fn sample_kernel_scores(snap: &mut ProcSnapshot, proc_root: &Path, n: usize) {
    use std::sync::atomic::{AtomicUsize, Ordering};
    static NEXT: AtomicUsize = AtomicUsize::new(0);
    let len = snap.processes.len();
    if len == 0 {
        return;
    }
    let start = NEXT.fetch_add(n, Ordering::Relaxed) % len;
    for i in 0..n.min(len) {
        let e = &mut snap.processes[(start + i) % len];
        e.kernel_oom_score =
            std::fs::read_to_string(proc_root.join(e.process.tgid.to_string()).join("oom_score"))
                .ok()
                .and_then(|s| s.trim().parse().ok());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn meminfo_values_in_bytes() {
        let text = "MemTotal:       24641756 kB\nMemFree:        20000000 kB\n\
                    MemAvailable:   22000000 kB\nSwapTotal:             0 kB\n\
                    HugePages_Total:       0\n";
        assert_eq!(meminfo_bytes(text, "MemTotal:"), Some(24_641_756 * 1024));
        assert_eq!(
            meminfo_bytes(text, "MemAvailable:"),
            Some(22_000_000 * 1024)
        );
        assert_eq!(meminfo_bytes(text, "SwapTotal:"), Some(0));
        assert_eq!(meminfo_bytes(text, "HugePages_Total:"), Some(0));
        // A prefix of another key is not that key.
        assert_eq!(meminfo_bytes(text, "Mem:"), None);
        assert_eq!(meminfo_bytes("MemTotal: lots kB\n", "MemTotal:"), None);
    }

    /// kB values past `u64::MAX` bytes (a file no kernel writes) are no
    /// value, not an overflow panic.
    #[test]
    fn meminfo_past_u64_bytes_is_none() {
        let huge = format!("MemTotal: {} kB\n", u64::MAX / 1024 + 1);
        assert_eq!(meminfo_bytes(&huge, "MemTotal:"), None);
        let max = format!("MemTotal: {} kB\n", u64::MAX / 1024);
        assert_eq!(
            meminfo_bytes(&max, "MemTotal:"),
            Some(u64::MAX / 1024 * 1024)
        );
        assert_eq!(
            meminfo_bytes(&format!("X: {}\n", u64::MAX), "X:"),
            Some(u64::MAX)
        );
    }

    /// A `stat` line without the kernel's `pid (comm) state` shape is
    /// malformed, not a panic inside procfs (found by the `proc` fuzz
    /// target: a byte other than a space after the last `)`).
    #[test]
    fn stat_without_the_kernels_shape_is_malformed() {
        let crash = b"2 (kthreadd)\x8bS 0 0 0 0 -1 2125161\0\0\0\n0 0 0";
        for bad in [
            &crash[..],
            b"(kthreadd) S 0",
            b"2 kthreadd) (S 0",
            b"2 (kthreadd)",
            b"2 (kthreadd)S 0",
            b"2\xff(kthreadd) S 0",
            b"",
        ] {
            let e = parse_stat(bad).unwrap_err();
            assert_eq!(SkipReason::of(&e), Some(SkipReason::Malformed), "{bad:?}");
        }
        // A comm with spaces and parentheses, as a process may name itself.
        let stat = parse_stat(
            b"7 (a) (b c) S 1 7 7 0 -1 4194560 1 0 0 0 0 0 0 0 20 0 1 0 99 1 2 \
              18446744073709551615 1 1 0 0 0 0 0 0 0 0 0 0 17 0 0 0 0 0 0 0 0 0 0 0 0 0 0\n",
        )
        .unwrap();
        assert_eq!((stat.pid, stat.comm.as_str(), stat.ppid), (7, "a) (b c", 1));
    }

    /// A `status` whose kB counters overflow bytes saturates instead of
    /// panicking; no `VmRSS` line is no mm.
    #[test]
    fn mm_counters_saturate_and_need_vmrss() {
        use procfs::FromRead as _;
        let status = |text: &str| procfs::process::Status::from_read(text.as_bytes()).unwrap();
        let base = "Name:\tx\nUmask:\t0022\nState:\tS (sleeping)\nTgid:\t7\nNgid:\t0\n\
                    Pid:\t7\nPPid:\t1\nTracerPid:\t0\nUid:\t0\t0\t0\t0\nGid:\t0\t0\t0\t0\n\
                    FDSize:\t64\nGroups:\t\nNStgid:\t7\nNSpid:\t7\nNSpgid:\t7\nNSsid:\t7\n\
                    Threads:\t1\nSigQ:\t0/1\nSigPnd:\t0\nShdPnd:\t0\nSigBlk:\t0\nSigIgn:\t0\n\
                    SigCgt:\t0\nCapInh:\t0\nCapPrm:\t0\nCapEff:\t0\nCapBnd:\t0\nCapAmb:\t0\n\
                    voluntary_ctxt_switches:\t0\nnonvoluntary_ctxt_switches:\t0\n";
        assert_eq!(mm_counters(&status(base), 4096), None);
        let huge = format!(
            "{base}VmRSS:\t1 kB\nRssAnon:\t{} kB\nRssFile:\t8 kB\nVmPTE:\t{} kB\n",
            u64::MAX,
            u64::MAX
        );
        let mm = mm_counters(&status(&huge), 4096).expect("an mm");
        assert_eq!(mm.anon_pages, u64::MAX / 4096);
        assert_eq!(mm.file_pages, 2);
        assert_eq!(mm.pgtables_bytes, u64::MAX);
    }

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

    /// A captured /proc tree: a hostile comm, a kernel thread, a
    /// multi-threaded process in a memcg, and a process that vanished between
    /// the directory listing and the read.
    /// Writes the tree of [`reads_a_captured_tree`] under `root`.
    fn write_captured_tree(root: &Path) {
        let write = |rel: &str, text: &str| {
            let p = root.join(rel);
            std::fs::create_dir_all(p.parent().unwrap()).unwrap();
            std::fs::write(p, text).unwrap();
        };
        write("sys/kernel/osrelease", "6.1.130-test\n");
        write(
            "meminfo",
            "MemTotal:       8000000 kB\nMemFree:        4000000 kB\nMemAvailable:   5000000 kB\n\
             Buffers:            100 kB\nCached:          100000 kB\nSwapCached:          0 kB\n\
             Active:          200000 kB\nInactive:        100000 kB\nSwapTotal:       400000 kB\n\
             SwapFree:        400000 kB\nDirty:               0 kB\nWriteback:           0 kB\n\
             Mapped:           50000 kB\nSlab:             20000 kB\nCommitted_AS:   300000 kB\n\
             VmallocTotal:   34359738367 kB\nVmallocUsed:      10000 kB\nVmallocChunk:        0 kB\n",
        );
        let stat = |pid: i32, comm: &str, flags: u32, start: u64| {
            format!(
                "{pid} ({comm}) S 1 {pid} {pid} 0 -1 {flags} 0 0 0 0 0 0 0 0 20 0 1 0 {start} 3133440 382 18446744073709551615 0 0 0 0 0 0 0 0 0 0 0 0 17 0 0 0 0 0 0 0 0 0 0 0 0 0 0\n"
            )
        };
        let status = |pid: i32, vm: bool| {
            let mut s = format!(
                "Name:\tx\nUmask:\t0022\nState:\tS (sleeping)\nTgid:\t{pid}\nNgid:\t0\nPid:\t{pid}\nPPid:\t1\nTracerPid:\t0\nUid:\t0\t0\t0\t0\nGid:\t0\t0\t0\t0\nFDSize:\t64\nGroups:\t\nNStgid:\t{pid}\nNSpid:\t{pid}\nNSpgid:\t{pid}\nNSsid:\t{pid}\n"
            );
            if vm {
                s.push_str("VmRSS:\t   41000 kB\nRssAnon:\t   40000 kB\nRssFile:\t     800 kB\nRssShmem:\t     200 kB\nVmPTE:\t      96 kB\nVmSwap:\t    4000 kB\n");
            }
            s.push_str("Threads:\t1\nSigQ:\t0/1\nSigPnd:\t0\nShdPnd:\t0\nSigBlk:\t0\nSigIgn:\t0\nSigCgt:\t0\nCapInh:\t0\nCapPrm:\t1fffeffffff\nCapEff:\t1fffeffffff\nCapBnd:\t1fffeffffff\nCapAmb:\t0\n");
            s
        };
        // pid 2: kthreadd (PF_KTHREAD, no mm).
        write("2/stat", &stat(2, "kthreadd", 0x0020_0040, 2));
        write("2/status", &status(2, false));
        write("2/oom_score_adj", "0\n");
        write("2/oom_score", "0\n");
        write("2/cgroup", "0::/\n");
        // pid 300: comm with a space and a parenthesis, two threads, in a memcg.
        write("300/stat", &stat(300, "my (app) x", 0x0040_0000, 500));
        write("300/status", &status(300, true));
        write("300/oom_score_adj", "250\n");
        write("300/oom_score", "700\n");
        write("300/cgroup", "5:memory:/batch/job1\n0::/\n");
        for tid in [300, 301] {
            write(
                &format!("300/task/{tid}/stat"),
                &stat(tid, "my (app) x", 0, 500),
            );
        }
        // pid 200 started earlier; pid 400 vanished (only an empty directory).
        write("200/stat", &stat(200, "early", 0x0040_0000, 100));
        write("200/status", &status(200, true));
        write("200/oom_score_adj", "0\n");
        write("200/cgroup", "0::/\n");
        std::fs::create_dir_all(root.join("400")).unwrap();
    }

    #[test]
    fn reads_a_captured_tree() {
        let tmp = tempfile::tempdir().unwrap();
        let root = tmp.path();
        write_captured_tree(root);
        let snap = read(root).unwrap();
        assert_eq!(snap.kernel, "6.1.130-test");
        assert_eq!(snap.version.to_string(), "6.1.130");
        let page_kb = procfs::page_size() / 1024;
        assert_eq!(snap.memory.totalram_pages, 8_000_000 / page_kb);
        assert_eq!(snap.memory.total_swap_pages, 400_000 / page_kb);
        let tgids: Vec<i32> = snap.processes.iter().map(|e| e.process.tgid).collect();
        assert_eq!(
            tgids,
            vec![2, 200, 300],
            "start-time order, the vanished pid left out"
        );
        let k = &snap.processes[0].process;
        assert!(k.kernel_thread && k.mm.is_none());
        let app = &snap.processes[2];
        assert_eq!(app.process.comm, "my (app) x");
        assert_eq!(app.process.oom_score_adj, 250);
        assert_eq!(app.kernel_oom_score, Some(700));
        assert_eq!(app.process.memcg.as_deref(), Some("/batch/job1"));
        let mm = app.process.mm.unwrap();
        assert_eq!(mm.anon_pages, 40_000 / page_kb);
        assert_eq!(mm.swap_pages, 4_000 / page_kb);
        assert_eq!(mm.pgtables_bytes, 96 * 1024);
        let tids: Vec<i32> = app.process.threads.iter().map(|t| t.pid).collect();
        assert_eq!(tids, vec![300, 301]);
        assert!(app.process.cap_sys_admin);
        assert_eq!(
            snap.processes[1].kernel_oom_score, None,
            "no oom_score file"
        );
    }

    /// One task whose `stat` is cut short, one whose `status` has a field
    /// that does not parse, one unreadable (a directory where `stat`
    /// should be: EISDIR), among the good ones: the snapshot keeps the
    /// good ones and names each bad one with its reason; the vanished one
    /// is no skip.
    #[test]
    fn a_task_that_fails_to_read_is_skipped_and_named() {
        let tmp = tempfile::tempdir().unwrap();
        let root = tmp.path();
        write_captured_tree(root);
        let write = |rel: &str, text: &str| {
            let p = root.join(rel);
            std::fs::create_dir_all(p.parent().unwrap()).unwrap();
            std::fs::write(p, text).unwrap();
        };
        write("500/stat", "500 (cut) S 1 500\n");
        write("500/status", "Name:\tcut\n");
        write("500/oom_score_adj", "0\n");
        let status = std::fs::read_to_string(root.join("200/status")).unwrap();
        write(
            "600/stat",
            &std::fs::read_to_string(root.join("200/stat"))
                .unwrap()
                .replace("200", "600"),
        );
        write("600/status", &status.replace("Tgid:\t200", "Tgid:\tlots"));
        write("600/oom_score_adj", "0\n");
        std::fs::create_dir_all(root.join("700/stat")).unwrap();

        let snap = read(root).unwrap();
        let tgids: Vec<i32> = snap.processes.iter().map(|e| e.process.tgid).collect();
        assert_eq!(tgids, vec![2, 200, 300], "the good ones, in order");
        let skipped: Vec<(i32, SkipReason)> =
            snap.skipped.iter().map(|s| (s.tgid, s.reason)).collect();
        let mut sorted = skipped.clone();
        sorted.sort_by_key(|s| s.0);
        assert_eq!(
            sorted,
            vec![
                (500, SkipReason::Malformed),
                (600, SkipReason::Malformed),
                (700, SkipReason::Io)
            ],
            "{:#?}",
            snap.skipped
        );
        assert!(
            snap.skipped.iter().all(|s| s.error.starts_with(&format!(
                "{}/{}: ",
                root.display(),
                s.tgid
            ))),
            "each error names its process: {:#?}",
            snap.skipped
        );
    }

    #[test]
    fn skip_reasons_from_errors() {
        use std::io::Error;
        let io = |errno| ProcError::Io(Error::from_raw_os_error(errno), None);
        assert_eq!(SkipReason::of(&ProcError::NotFound(None)), None);
        assert_eq!(SkipReason::of(&io(libc::ESRCH)), None);
        assert_eq!(SkipReason::of(&io(libc::EIO)), Some(SkipReason::Io));
        assert_eq!(
            SkipReason::of(&ProcError::PermissionDenied(None)),
            Some(SkipReason::Permission)
        );
        assert_eq!(
            SkipReason::of(&ProcError::Incomplete(None)),
            Some(SkipReason::Malformed)
        );
    }

    #[test]
    fn missing_root_names_the_path() {
        let err = read(Path::new("/nonexistent/proc")).unwrap_err();
        assert!(err.to_string().contains("/nonexistent/proc"), "{err}");
    }
}
