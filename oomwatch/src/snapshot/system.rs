//! One snapshot of everything a prediction reads.

use std::path::Path;

use super::{
    Snapshotter,
    domain::{self, OomDomain},
    proc::{self, ProcSnapshot},
    zoneinfo::{self, ZoneInfo},
};
use crate::{
    host::cgroup::{self, CgroupVersion},
    model::{
        knobs::{KnobInputs, WatermarkInputs, ZoneState},
        oom::OomSysctls,
    },
};

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
    /// Each domain's memory events and pressure (the daemon's gauges).
    pub events: bool,
}

impl Want {
    /// The domains only.
    pub fn domains(domains: Domains) -> Self {
        Want {
            domains,
            zones: false,
            kernel_scores: 0,
            events: false,
        }
    }
}

/// The `vm` sysctls the model reads (the kernel's defaults where one cannot
/// be read: a kernel without it, or a captured tree that left it out).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Sysctls {
    /// `vm.swappiness` (60).
    pub swappiness: u32,
    /// `vm.panic_on_oom` (0).
    pub panic_on_oom: u8,
    /// `vm.oom_kill_allocating_task` (0).
    pub oom_kill_allocating_task: bool,
    /// `vm.overcommit_memory` (0).
    pub overcommit_memory: u8,
    /// `vm.overcommit_ratio` (50).
    pub overcommit_ratio: u64,
    /// `vm.overcommit_kbytes` (0).
    pub overcommit_kbytes: u64,
    /// `vm.oom_dump_tasks` (1).
    pub oom_dump_tasks: bool,
    /// `vm.min_free_kbytes`, `vm.watermark_scale_factor` (4.6+) and
    /// `vm.lowmem_reserve_ratio`: None when one is missing.
    pub watermarks: Option<crate::snapshot::zoneinfo::WatermarkSysctls>,
    /// The sysctls that could not be read, whose default stands in.
    pub defaulted: Vec<&'static str>,
}

/// A sysctl file that holds something the kernel would not.
#[derive(Debug, thiserror::Error)]
#[error("{path}: {message}")]
pub struct SysctlError {
    pub path: std::path::PathBuf,
    pub message: String,
}

impl Sysctls {
    /// Reads them under `proc_root`. A missing file takes the kernel's
    /// default (and is listed in `defaulted`); a file holding something
    /// that is not a value the kernel accepts is an error naming it.
    pub fn read(proc_root: &Path) -> Result<Self, SysctlError> {
        let mut defaulted = Vec::new();
        let mut sysctl = |name: &'static str, max: u64| -> Result<Option<u64>, SysctlError> {
            let path = proc_root.join("sys/vm").join(name);
            let Ok(text) = std::fs::read_to_string(&path) else {
                defaulted.push(name);
                return Ok(None);
            };
            let v: u64 = text.trim().parse().map_err(|_| SysctlError {
                path: path.clone(),
                message: format!("not a number: {:?}", text.trim()),
            })?;
            if v > max {
                return Err(SysctlError {
                    path,
                    message: format!("{v} is out of the kernel's range 0 – {max}"),
                });
            }
            Ok(Some(v))
        };
        let swappiness = sysctl("swappiness", 200)?.map_or(60, |v| v as u32);
        let panic_on_oom = sysctl("panic_on_oom", 2)?.map_or(0, |v| v as u8);
        let oom_kill_allocating_task =
            sysctl("oom_kill_allocating_task", u64::MAX)?.unwrap_or(0) != 0;
        let overcommit_memory = sysctl("overcommit_memory", 2)?.map_or(0, |v| v as u8);
        let overcommit_ratio = sysctl("overcommit_ratio", u64::MAX)?.unwrap_or(50);
        let overcommit_kbytes = sysctl("overcommit_kbytes", u64::MAX)?.unwrap_or(0);
        let oom_dump_tasks = sysctl("oom_dump_tasks", u64::MAX)?.unwrap_or(1) != 0;
        let min_free_kbytes = sysctl("min_free_kbytes", u64::MAX)?;
        let watermark_scale_factor = sysctl("watermark_scale_factor", u64::MAX)?;
        let ratio_path = proc_root.join("sys/vm/lowmem_reserve_ratio");
        let ratios = match std::fs::read_to_string(&ratio_path) {
            Ok(text) => Some(
                text.split_whitespace()
                    .map(|v| {
                        v.parse::<u64>().map_err(|_| SysctlError {
                            path: ratio_path.clone(),
                            message: format!("not a list of numbers: {:?}", text.trim()),
                        })
                    })
                    .collect::<Result<Vec<u64>, _>>()?,
            ),
            Err(_) => {
                defaulted.push("lowmem_reserve_ratio");
                None
            }
        };
        let watermarks = match (min_free_kbytes, watermark_scale_factor, ratios) {
            (Some(min_free_kbytes), wsf, Some(lowmem_reserve_ratio)) => {
                Some(crate::snapshot::zoneinfo::WatermarkSysctls {
                    min_free_kbytes,
                    // Before 4.6 there is no such sysctl; the model does not
                    // read it there.
                    watermark_scale_factor: wsf.unwrap_or(10),
                    lowmem_reserve_ratio,
                })
            }
            _ => None,
        };
        Ok(Sysctls {
            swappiness,
            panic_on_oom,
            oom_kill_allocating_task,
            overcommit_memory,
            overcommit_ratio,
            overcommit_kbytes,
            oom_dump_tasks,
            watermarks,
            defaulted,
        })
    }

    /// The two that `out_of_memory()` reads.
    pub fn oom(&self) -> OomSysctls {
        OomSysctls {
            panic_on_oom: self.panic_on_oom,
            oom_kill_allocating_task: self.oom_kill_allocating_task,
        }
    }
}

/// The model's view of the knobs: the sysctls, meminfo's commit counters
/// and the zones (with their free pages), as plain values.
pub fn knob_inputs(procs: &ProcSnapshot, sysctls: &Sysctls, zones: &[ZoneInfo]) -> KnobInputs {
    KnobInputs {
        oom: sysctls.oom(),
        overcommit_memory: sysctls.overcommit_memory,
        overcommit_ratio: sysctls.overcommit_ratio,
        overcommit_kbytes: sysctls.overcommit_kbytes,
        oom_dump_tasks: sysctls.oom_dump_tasks,
        commit_limit_bytes: procs.commit_limit,
        committed_as_bytes: procs.committed_as,
        watermarks: sysctls
            .watermarks
            .as_ref()
            .filter(|_| !zones.is_empty())
            .map(|w| WatermarkInputs {
                min_free_kbytes: w.min_free_kbytes,
                watermark_scale_factor: w.watermark_scale_factor,
                lowmem_reserve_ratio: w.lowmem_reserve_ratio.clone(),
                zones: zones
                    .iter()
                    .map(|z| ZoneState {
                        node: z.node,
                        size: z.size(),
                        free_pages: z.free_pages,
                        kernel_min: z.min,
                        kernel_protection: z.protection.clone(),
                    })
                    .collect(),
            }),
        page_size: procs.page_size,
    }
}

/// What `check` reads for the knobs, without the processes: the header
/// (release, page size, meminfo), the sysctls and the zones, under
/// `proc_root`. Then [`knob_inputs`] gives the model's input.
pub fn read_knobs(proc_root: &Path) -> anyhow::Result<(ProcSnapshot, Sysctls, Vec<ZoneInfo>)> {
    let procs = proc::read_header(proc_root)?;
    let sysctls = Sysctls::read(proc_root)?;
    let zones = zoneinfo::read_zones(proc_root);
    Ok((procs, sysctls, zones))
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
    /// The zones (empty when `/proc/zoneinfo` could not be read and the
    /// zones were not asked for).
    pub zones: Vec<ZoneInfo>,
    /// Whether the memory controller is on cgroup v2.
    pub cgroup_v2: bool,
}

impl SystemSnapshot {
    /// The model's view of this snapshot's knobs.
    pub fn knob_inputs(&self) -> KnobInputs {
        knob_inputs(&self.procs, &self.sysctls, &self.zones)
    }

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
        let sysctls = Sysctls::read(proc_root)?;
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
        if want.events {
            for d in &mut domains {
                d.read_events(hierarchy.as_ref(), proc_root);
            }
        }
        // Every prediction shows the host's headroom to the min watermarks:
        // the zones are read on every pass, and only the simulation, which
        // cannot go on without them, fails when they cannot be.
        let zones = if want.zones {
            zoneinfo::read(proc_root).context("read /proc/zoneinfo")?.0
        } else {
            zoneinfo::read_zones(proc_root)
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

#[cfg(test)]
mod tests {
    use super::*;

    fn tree(files: &[(&str, &str)]) -> tempfile::TempDir {
        let tmp = tempfile::tempdir().unwrap();
        for (rel, text) in files {
            let p = tmp.path().join(rel);
            std::fs::create_dir_all(p.parent().unwrap()).unwrap();
            std::fs::write(p, text).unwrap();
        }
        tmp
    }

    /// Every OOM sysctl as written; the ones left out take the kernel's
    /// defaults and are named.
    #[test]
    fn sysctls_read_with_defaults() {
        let t = tree(&[
            ("sys/vm/panic_on_oom", "1\n"),
            ("sys/vm/oom_kill_allocating_task", "1\n"),
            ("sys/vm/overcommit_memory", "2\n"),
            ("sys/vm/overcommit_kbytes", "1048576\n"),
            ("sys/vm/oom_dump_tasks", "0\n"),
            ("sys/vm/min_free_kbytes", "67584\n"),
            ("sys/vm/lowmem_reserve_ratio", "256\t256\t32\t0\t0\n"),
        ]);
        let s = Sysctls::read(t.path()).unwrap();
        assert_eq!(
            (
                s.panic_on_oom,
                s.oom_kill_allocating_task,
                s.overcommit_memory,
                s.overcommit_ratio,
                s.overcommit_kbytes,
                s.oom_dump_tasks,
                s.swappiness
            ),
            (1, true, 2, 50, 1_048_576, false, 60)
        );
        let w = s.watermarks.unwrap();
        assert_eq!((w.min_free_kbytes, w.watermark_scale_factor), (67_584, 10));
        assert_eq!(w.lowmem_reserve_ratio, vec![256, 256, 32, 0, 0]);
        assert_eq!(
            s.defaulted,
            vec!["swappiness", "overcommit_ratio", "watermark_scale_factor"]
        );
    }

    /// A value the kernel would not hold is an error naming the file.
    #[test]
    fn bad_sysctls_are_named() {
        for (name, text, want) in [
            ("panic_on_oom", "3\n", "out of the kernel's range 0 – 2"),
            ("overcommit_memory", "-1\n", "not a number"),
            ("oom_dump_tasks", "yes\n", "not a number"),
            ("lowmem_reserve_ratio", "256 x\n", "not a list of numbers"),
        ] {
            let t = tree(&[(&format!("sys/vm/{name}"), text)]);
            let e = Sysctls::read(t.path()).unwrap_err().to_string();
            assert!(e.contains(name) && e.contains(want), "{e}");
        }
    }
}
