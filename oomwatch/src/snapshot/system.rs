//! One snapshot of everything a prediction reads.

use std::path::Path;

use super::{
    Snapshotter,
    domain::{self, OomDomain},
    proc::{self, ProcSnapshot},
    zoneinfo::{self, ZoneInfo},
};
use crate::host::cgroup::{self, CgroupVersion};

/// The OOM domains a snapshot builds.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Domains {
    /// The host only (global OOM).
    Host,
    /// The memory cgroup whose limit `path`'s tasks are charged against.
    Memcg(String),
    /// The host, then every memory cgroup with a limit of its own.
    All,
}

/// What one snapshot reads besides the processes.
#[derive(Debug, Clone)]
pub struct Want {
    pub domains: Domains,
    /// `/proc/zoneinfo` and `buddyinfo` (the page allocator's simulation).
    pub zones: bool,
    /// With the task iterator, read `/proc/PID/oom_score` for this many
    /// processes (the next ones each pass) for the self-check; `/proc`
    /// snapshots read every process's.
    pub kernel_scores: usize,
}

impl Want {
    /// The domains only.
    pub fn domains(domains: Domains) -> Self {
        Want {
            domains,
            zones: false,
            kernel_scores: 0,
        }
    }
}

/// The `vm` sysctls the model reads (the kernel's defaults where one cannot
/// be read).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Sysctls {
    /// `vm.swappiness` (60).
    pub swappiness: u32,
    /// `vm.panic_on_oom` (0).
    pub panic_on_oom: u8,
    /// `vm.oom_kill_allocating_task` (0).
    pub oom_kill_allocating_task: bool,
}

impl Sysctls {
    /// Reads them under `proc_root`.
    pub fn read(proc_root: &Path) -> Self {
        let sysctl = |name: &str| -> Option<u64> {
            std::fs::read_to_string(proc_root.join("sys/vm").join(name))
                .ok()
                .and_then(|s| s.trim().parse().ok())
        };
        Sysctls {
            swappiness: sysctl("swappiness").map_or(60, |v| v as u32),
            panic_on_oom: sysctl("panic_on_oom").map_or(0, |v| v as u8),
            oom_kill_allocating_task: sysctl("oom_kill_allocating_task").unwrap_or(0) != 0,
        }
    }
}

/// Everything one prediction pass reads, taken together: the model runs on
/// it with no further I/O.
#[derive(Debug, Clone)]
pub struct SystemSnapshot {
    /// The processes, with the release, page size, meminfo and CPUs.
    pub procs: ProcSnapshot,
    pub sysctls: Sysctls,
    /// The domains asked for, each with its limits, totalpages, members in
    /// scan order and (memcgs) its charge state.
    pub domains: Vec<OomDomain>,
    /// The zones, when asked for.
    pub zones: Vec<ZoneInfo>,
    /// Whether the memory controller is on cgroup v2.
    pub cgroup_v2: bool,
}

impl SystemSnapshot {
    /// Bytes of `pages` pages of this snapshot's kernel: the one place pages
    /// become bytes.
    pub fn bytes(&self, pages: u64) -> u64 {
        pages.saturating_mul(self.procs.page_size)
    }
}

impl Snapshotter {
    /// One [`SystemSnapshot`]: the processes from this snapshotter's
    /// source, then the sysctls, the domains `want` names (limits, scan
    /// order, charge state), and the zones when asked.
    pub fn read_system(&mut self, proc_root: &Path, want: &Want) -> anyhow::Result<SystemSnapshot> {
        use anyhow::Context as _;
        let mut procs = self
            .read(proc_root)
            .with_context(|| format!("read the processes ({})", self.in_use()))?;
        if self.in_use().source == "bpf" && want.kernel_scores > 0 {
            proc::sample_kernel_scores(&mut procs, proc_root, want.kernel_scores);
        }
        let sysctls = Sysctls::read(proc_root);
        let mut domains = match &want.domains {
            Domains::Host => vec![domain::global(&procs)],
            Domains::Memcg(path) => vec![domain::memcg(&procs, path, sysctls.swappiness)?],
            Domains::All => domain::all(&procs, sysctls.swappiness),
        };
        let hierarchy = cgroup::memory_hierarchy();
        if let Some(h) = &hierarchy {
            for d in &mut domains {
                d.read_charge(h, procs.page_size);
            }
        }
        let zones = if want.zones {
            zoneinfo::read(proc_root).context("read /proc/zoneinfo")?.0
        } else {
            Vec::new()
        };
        Ok(SystemSnapshot {
            procs,
            sysctls,
            domains,
            zones,
            cgroup_v2: hierarchy.is_some_and(|h| h.version == CgroupVersion::V2),
        })
    }
}
