//! The selftest's memory cgroups: `oomwatch-selftest-<pid>-<scenario>`, made
//! with a limit read back before any workload runs, and removed afterwards
//! (their processes killed first) when dropped, on failure, on a panic, and
//! on SIGINT/SIGTERM through [`remove_all_live`].

use std::{
    path::{Path, PathBuf},
    sync::Mutex,
    time::{Duration, Instant},
};

use anyhow::{Context as _, bail};

use crate::host::cgroup::{CgroupVersion, Hierarchy};

/// Every selftest cgroup that exists now, parents before children: what a
/// signal must remove. Held while a cgroup is created, so the signal's
/// cleanup never misses one that is being made.
static LIVE: Mutex<Vec<PathBuf>> = Mutex::new(Vec::new());

/// One selftest memory cgroup. Dropping it kills what is inside and removes
/// it (its children are separate guards, dropped first).
pub struct Memcg {
    pub version: CgroupVersion,
    pub dir: PathBuf,
    /// The path inside the hierarchy, e.g. `/oomwatch-selftest-42-largest`.
    pub path: String,
}

fn write(path: &Path, value: &str) -> anyhow::Result<()> {
    std::fs::write(path, value).with_context(|| format!("write {value:?} to {}", path.display()))
}

impl Memcg {
    /// Creates `name` below the hierarchy's root (`parent` None) or below
    /// `parent`; `limit` sets its hard limit (swap included), read back.
    pub fn create(
        h: &Hierarchy,
        parent: Option<&Memcg>,
        name: &str,
        limit: Option<u64>,
    ) -> anyhow::Result<Self> {
        debug_assert!(name.contains("oomwatch"));
        let (dir, path) = match parent {
            None => (h.mount_point.join(name), format!("/{name}")),
            Some(p) => (p.dir.join(name), format!("{}/{name}", p.path)),
        };
        {
            let mut live = LIVE.lock().unwrap_or_else(|e| e.into_inner());
            std::fs::create_dir(&dir).with_context(|| format!("create {}", dir.display()))?;
            live.push(dir.clone());
        }
        let cg = Memcg {
            version: h.version,
            dir,
            path,
        };
        if let Some(limit) = limit {
            cg.set_limit(h, limit)?;
        }
        Ok(cg)
    }

    /// The limit, swap included, read back: an error names the file and
    /// the fix, and no workload runs without it.
    fn set_limit(&self, h: &Hierarchy, limit: u64) -> anyhow::Result<()> {
        let (file, swap_file, swap_value) = match self.version {
            CgroupVersion::V1 => (
                "memory.limit_in_bytes",
                "memory.memsw.limit_in_bytes",
                limit.to_string(),
            ),
            CgroupVersion::V2 => ("memory.max", "memory.swap.max", "0".to_owned()),
        };
        let limit_file = self.dir.join(file);
        if !limit_file.exists() {
            let fix = match (self.version, self.path.matches('/').count()) {
                (CgroupVersion::V2, 1) => format!(
                    "enable the memory controller for the root's children: echo +memory > {}",
                    h.mount_point.join("cgroup.subtree_control").display()
                ),
                (CgroupVersion::V2, _) => format!(
                    "enable the memory controller in {}",
                    self.dir
                        .parent()
                        .unwrap_or(&self.dir)
                        .join("cgroup.subtree_control")
                        .display()
                ),
                (CgroupVersion::V1, _) => {
                    "mount the cgroup v1 memory controller with its files".into()
                }
            };
            bail!(
                "cannot set a memory limit: {} does not exist ({fix}); refusing to run a \
                 workload without its limit",
                limit_file.display()
            );
        }
        write(&limit_file, &limit.to_string()).with_context(|| {
            format!(
                "cannot set a memory limit in {}: refusing to run a workload without its limit \
                 (the selftest needs root and a writable cgroupfs)",
                limit_file.display()
            )
        })?;
        let swap = self.dir.join(swap_file);
        if swap.exists() {
            write(&swap, &swap_value)
                .context("refusing to run a workload whose swap is unlimited")?;
        } else if host_has_swap() {
            match self.version {
                // memcg reclaim then never swaps anonymous memory.
                CgroupVersion::V1 => write(&self.dir.join("memory.swappiness"), "0")?,
                CgroupVersion::V2 => bail!(
                    "{} does not exist (swap accounting is off) and this host has swap: the \
                     workloads could swap instead of meeting their limit; boot with \
                     swapaccount=1 or run without swap (swapoff -a)",
                    swap.display()
                ),
            }
        }
        let back: u64 = std::fs::read_to_string(&limit_file)
            .with_context(|| format!("read {}", limit_file.display()))?
            .trim()
            .parse()
            .with_context(|| format!("parse {}", limit_file.display()))?;
        if back != limit {
            bail!(
                "{} reads {back} after writing {limit}: refusing to run a workload without its \
                 limit",
                limit_file.display()
            );
        }
        Ok(())
    }

    /// Writes a control file of this cgroup.
    pub fn set(&self, file: &str, value: &str) -> anyhow::Result<()> {
        write(&self.dir.join(file), value)
    }

    /// Moves `pid` (its whole thread group) into this cgroup.
    pub fn add(&self, pid: u32) -> anyhow::Result<()> {
        write(&self.dir.join("cgroup.procs"), &pid.to_string())
    }

    /// Bytes charged now (`memory.usage_in_bytes` or `memory.current`).
    pub fn usage(&self) -> anyhow::Result<u64> {
        let file = match self.version {
            CgroupVersion::V1 => "memory.usage_in_bytes",
            CgroupVersion::V2 => "memory.current",
        };
        let f = self.dir.join(file);
        std::fs::read_to_string(&f)
            .with_context(|| format!("read {}", f.display()))?
            .trim()
            .parse()
            .with_context(|| format!("parse {}", f.display()))
    }
}

fn host_has_swap() -> bool {
    std::fs::read_to_string("/proc/meminfo")
        .ok()
        .and_then(|t| {
            t.lines()
                .find_map(|l| l.strip_prefix("SwapTotal:"))
                .and_then(|v| v.split_whitespace().next()?.parse::<u64>().ok())
        })
        .is_some_and(|kb| kb > 0)
}

fn pids(dir: &Path) -> Vec<i32> {
    std::fs::read_to_string(dir.join("cgroup.procs"))
        .unwrap_or_default()
        .lines()
        .filter_map(|l| l.trim().parse().ok())
        .collect()
}

/// Kills every process in `dir` and removes it (10 s at most); an error
/// says why it is still there.
fn remove(dir: &Path) -> Result<(), String> {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let left = pids(dir);
        if left.is_empty() {
            break;
        }
        for pid in left {
            let _ = nix::sys::signal::kill(
                nix::unistd::Pid::from_raw(pid),
                nix::sys::signal::Signal::SIGKILL,
            );
        }
        if Instant::now() > deadline {
            break;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    loop {
        match std::fs::remove_dir(dir) {
            Ok(()) => return Ok(()),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
            Err(e) if Instant::now() > deadline => {
                return Err(format!("could not remove {}: {e}", dir.display()));
            }
            Err(_) => std::thread::sleep(Duration::from_millis(20)),
        }
    }
}

impl Drop for Memcg {
    fn drop(&mut self) {
        if let Err(e) = remove(&self.dir) {
            eprintln!("oomwatch selftest: {e}");
        }
        LIVE.lock()
            .unwrap_or_else(|e| e.into_inner())
            .retain(|d| d != &self.dir);
    }
}

/// Removes every selftest cgroup that still exists, children first, and
/// keeps the lock: called on SIGINT/SIGTERM right before the process exits,
/// so nothing new is created in between.
pub fn remove_all_live() -> std::sync::MutexGuard<'static, Vec<PathBuf>> {
    let live = LIVE.lock().unwrap_or_else(|e| e.into_inner());
    for dir in live.iter().rev() {
        if let Err(e) = remove(dir) {
            eprintln!("oomwatch selftest: {e}");
        }
    }
    live
}
