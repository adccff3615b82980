//! OOM domains built from a snapshot: the host (global OOM) and memory
//! cgroups with a limit, each with its totalpages and its processes in the
//! order the kernel scans them.

use std::collections::BTreeMap;

use serde::Serialize;

use crate::{
    host::cgroup::{self, Hierarchy},
    model::{
        Process, select::Domain, slowpath::MemcgState, task::memcg_within, totalpages::MemcgLimits,
    },
    snapshot::{
        memcg::{self, MemcgError},
        proc::ProcSnapshot,
    },
};

/// One OOM domain, ready for the model.
#[derive(Debug, Clone, Serialize)]
pub struct OomDomain {
    pub kind: Domain,
    /// The memcg whose limit defines the domain (None for the host).
    pub cgroup: Option<String>,
    /// The path asked for, when the limit sits on an ancestor of it.
    pub requested: Option<String>,
    pub totalpages: u64,
    pub limits: Option<MemcgLimits>,
    /// Scan order: `for_each_process` for the host (start time); the memcg
    /// and its descendants in pre-order (siblings by cgroup id, i.e.
    /// creation order) for a memcg, each memcg's processes by start time:
    /// indices into the snapshot's processes (see [`OomDomain::processes`]).
    pub members: Vec<usize>,
    /// memcgs in the domain with `memory.oom.group = 1` (v2).
    pub oom_groups: Vec<String>,
    /// What a charge against the memcg meets (usage, reclaimable pages,
    /// `oom_kill_disable`), or why it could not be read; None for the host.
    #[serde(skip)]
    pub charge: Option<Result<MemcgState, String>>,
    /// The kernel's memory event counters and memory pressure for the
    /// domain, or why they could not be read; None where not asked for.
    #[serde(skip)]
    pub events: Option<Result<memcg::DomainEvents, String>>,
}

impl OomDomain {
    /// The domain's processes in scan order, from the snapshot it was built
    /// from.
    pub fn processes<'s>(&self, snap: &'s ProcSnapshot) -> Vec<&'s Process> {
        self.members
            .iter()
            .map(|&i| &snap.processes[i].process)
            .collect()
    }

    /// Reads the domain's memory events and pressure: the memcg's, or the
    /// host's from `proc_root`.
    pub fn read_events(&mut self, h: Option<&Hierarchy>, proc_root: &std::path::Path) {
        self.events = match (&self.cgroup, h) {
            (None, _) => Some(Ok(memcg::host_events(proc_root))),
            (Some(path), Some(h)) => Some(memcg::read_events(h, path).map_err(|e| e.to_string())),
            (Some(_), None) => Some(Err("no memory cgroup hierarchy is mounted".into())),
        };
    }

    /// Reads the memcg's charge state (nothing for the host).
    pub fn read_charge(&mut self, h: &Hierarchy, page_size: u64) {
        if let (Some(path), Some(l)) = (&self.cgroup, &self.limits) {
            self.charge = Some(
                memcg::read_charge_state(h, path, page_size, l.max_pages)
                    .map_err(|e| e.to_string()),
            );
        }
    }

    /// Pages left before the domain's OOM: limit − usage (None
    /// for the host, or when the usage could not be read).
    pub fn headroom_pages(&self) -> Option<u64> {
        let l = self.limits.as_ref()?;
        let s = self.charge.as_ref()?.as_ref().ok()?;
        Some(l.max_pages.saturating_sub(s.usage_pages))
    }
}

#[derive(Debug, thiserror::Error)]
pub enum DomainError {
    #[error(
        "--cgroup takes a path inside the cgroup hierarchy starting with `/`, e.g. /batch/job1; got {0:?}"
    )]
    BadPath(String),
    #[error(
        "no mounted cgroup hierarchy has the memory controller, so there are no memcg OOM domains"
    )]
    NoMemoryController,
    #[error(
        "neither {0} nor any cgroup above it has a memory limit: its tasks can only be killed by a \
         global OOM (run without --cgroup)"
    )]
    Unlimited(String),
    #[error(transparent)]
    Memcg(#[from] MemcgError),
}

/// The host's domain: every process, global totalpages.
pub fn global(snap: &ProcSnapshot) -> OomDomain {
    OomDomain {
        kind: Domain::Global,
        cgroup: None,
        requested: None,
        totalpages: snap.memory.totalpages(),
        limits: None,
        members: (0..snap.processes.len()).collect(),
        oom_groups: Vec::new(),
        charge: None,
        events: None,
    }
}

fn parent(path: &str) -> Option<&str> {
    if path == "/" {
        return None;
    }
    Some(match path.rfind('/') {
        Some(0) | None => "/",
        Some(i) => &path[..i],
    })
}

/// The memcg OOM domain that `path`'s tasks are charged against: `path` or
/// its nearest ancestor with a memory limit.
pub fn memcg(
    snap: &ProcSnapshot,
    path: &str,
    global_swappiness: u32,
) -> Result<OomDomain, DomainError> {
    if !path.starts_with('/') {
        return Err(DomainError::BadPath(path.to_owned()));
    }
    let path = if path.len() > 1 {
        path.trim_end_matches('/')
    } else {
        path
    };
    let h = cgroup::memory_hierarchy().ok_or(DomainError::NoMemoryController)?;
    memcg::dir(&h, path)?;
    let mut at = Some(path);
    let (domain, limits) = loop {
        let Some(p) = at else {
            return Err(DomainError::Unlimited(path.to_owned()));
        };
        let l = memcg::read_limits(&h, p, snap.page_size, global_swappiness)?;
        if l.max_pages != u64::MAX {
            break (p.to_owned(), l);
        }
        at = parent(p);
    };
    let kb = snap.behavior();
    let totalpages =
        crate::model::totalpages::memcg_totalpages(&limits, snap.memory.total_swap_pages, &kb);
    let members = scan_order(&h, &domain, snap);
    let mut groups: Vec<String> = members
        .iter()
        .filter_map(|&i| snap.processes[i].process.memcg.clone())
        .collect();
    groups.sort();
    groups.dedup();
    let mut oom_groups = Vec::new();
    for g in groups {
        let mut p = Some(g.as_str());
        while let Some(x) = p {
            if !memcg_within(x, &domain) {
                break;
            }
            if memcg::oom_group(&h, x) && !oom_groups.iter().any(|o| o == x) {
                oom_groups.push(x.to_owned());
            }
            p = parent(x);
        }
    }
    Ok(OomDomain {
        kind: Domain::Memcg,
        requested: (domain != path).then(|| path.to_owned()),
        cgroup: Some(domain),
        totalpages,
        limits: Some(limits),
        members,
        oom_groups,
        charge: None,
        events: None,
    })
}

/// The memory cgroup that `path` is charged against when it has a limit:
/// `path` or its nearest limited ancestor, read now; None when none of them
/// has one (or the cgroup is gone).
pub fn limited_memcg(path: &str) -> Option<String> {
    let h = cgroup::memory_hierarchy()?;
    let mut at = Some(path.trim_end_matches('/')).filter(|p| !p.is_empty());
    while let Some(p) = at {
        let l = memcg::read_limits(&h, p, 4096, 60).ok()?;
        if l.max_pages != u64::MAX {
            return Some(p.to_owned());
        }
        at = parent(p);
    }
    None
}

/// Every OOM domain: the host, then each memory cgroup with a limit of its
/// own (pre-order). Cgroups that vanish while being read are left out.
pub fn all(snap: &ProcSnapshot, global_swappiness: u32) -> Vec<OomDomain> {
    let mut out = vec![global(snap)];
    let Some(h) = cgroup::memory_hierarchy() else {
        return out;
    };
    let mut stack = vec![h.mount_point.clone()];
    let mut limited = Vec::new();
    while let Some(dir) = stack.pop() {
        let Ok(rel) = dir.strip_prefix(&h.mount_point) else {
            continue;
        };
        let path = format!("/{}", rel.display());
        if path != "/" {
            if let Ok(l) = memcg::read_limits(&h, &path, snap.page_size, global_swappiness) {
                if l.max_pages != u64::MAX {
                    limited.push(path);
                }
            }
        }
        if let Ok(entries) = std::fs::read_dir(&dir) {
            let mut dirs: Vec<_> = entries
                .flatten()
                .filter(|e| e.file_type().is_ok_and(|t| t.is_dir()))
                .map(|e| e.path())
                .collect();
            dirs.sort();
            stack.extend(dirs.into_iter().rev());
        }
    }
    for path in limited {
        if let Ok(d) = memcg(snap, &path, global_swappiness) {
            if d.cgroup.as_deref() == Some(path.as_str()) {
                out.push(d);
            }
        }
    }
    out
}

/// `mem_cgroup_scan_tasks()` order, as far as cgroupfs tells it.
fn scan_order(h: &Hierarchy, domain: &str, snap: &ProcSnapshot) -> Vec<usize> {
    let mut by_memcg: BTreeMap<&str, Vec<usize>> = BTreeMap::new();
    for (i, e) in snap.processes.iter().enumerate() {
        if let Some(m) = e.process.memcg.as_deref() {
            if memcg_within(m, domain) {
                by_memcg.entry(m).or_default().push(i);
            }
        }
    }
    // Sort key: the path's components, each replaced by its cgroup id (the
    // directory's inode number grows with creation), so a parent comes before
    // its children and siblings come in creation order.
    let key = |m: &str| -> Vec<u64> {
        let mut k = Vec::new();
        let mut acc = String::new();
        for part in m
            .trim_start_matches('/')
            .split('/')
            .filter(|s| !s.is_empty())
        {
            acc.push('/');
            acc.push_str(part);
            k.push(
                cgroup::cgroup_id(&h.mount_point.join(acc.trim_start_matches('/')))
                    .unwrap_or(u64::MAX),
            );
        }
        k
    };
    let mut memcgs: Vec<(Vec<u64>, &str)> = by_memcg.keys().map(|m| (key(m), *m)).collect();
    memcgs.sort();
    memcgs
        .into_iter()
        .flat_map(|(_, m)| by_memcg[m].iter().copied())
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths() {
        assert_eq!(parent("/a/b"), Some("/a"));
        assert_eq!(parent("/a"), Some("/"));
        assert_eq!(parent("/"), None);
        assert!(memcg_within("/a/b", "/a"));
        assert!(!memcg_within("/ab", "/a"));
        assert!(memcg_within("/x", "/"));
    }
}
