//! Memory cgroups: where the memory controller is mounted (v1, v2 or both in
//! a hybrid layout) and turning a memcg id from eBPF into a path.
//!
//! The id the eBPF side reports is the cgroup's kernfs node id, which since
//! Linux 5.5 is also the inode number of the cgroup's directory in its
//! hierarchy, for v1 and v2 alike.

use std::{
    os::unix::fs::MetadataExt as _,
    path::{Path, PathBuf},
};

use serde::Serialize;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum CgroupVersion {
    V1,
    V2,
}

impl std::fmt::Display for CgroupVersion {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            CgroupVersion::V1 => "v1",
            CgroupVersion::V2 => "v2",
        })
    }
}

/// A mounted cgroup hierarchy and whether the memory controller is on it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Hierarchy {
    pub version: CgroupVersion,
    pub mount_point: PathBuf,
    pub memory: bool,
}

/// All cgroup hierarchies mounted in this mount namespace.
pub fn hierarchies() -> Vec<Hierarchy> {
    let Ok(infos) = procfs::process::Process::myself().and_then(|p| p.mountinfo()) else {
        return Vec::new();
    };
    let mut out: Vec<Hierarchy> = Vec::new();
    for m in infos {
        let h = match m.fs_type.as_str() {
            "cgroup" => Hierarchy {
                version: CgroupVersion::V1,
                memory: m.super_options.contains_key("memory"),
                mount_point: m.mount_point,
            },
            "cgroup2" => Hierarchy {
                version: CgroupVersion::V2,
                memory: v2_has_memory(&m.mount_point),
                mount_point: m.mount_point,
            },
            _ => continue,
        };
        if !out.iter().any(|o| o.mount_point == h.mount_point) {
            out.push(h);
        }
    }
    out
}

fn v2_has_memory(mount_point: &Path) -> bool {
    std::fs::read_to_string(mount_point.join("cgroup.controllers"))
        .map(|s| s.split_whitespace().any(|c| c == "memory"))
        .unwrap_or(false)
}

/// The hierarchy the memory controller is on (v1 wins in a hybrid layout,
/// since the kernel binds a controller to one hierarchy only). Read from
/// this process's mountinfo at most every [`HIERARCHY_TTL`]: the daemon asks
/// on every pass, and mounts of cgroupfs hardly ever change.
pub fn memory_hierarchy() -> Option<Hierarchy> {
    static CACHE: std::sync::Mutex<Option<(std::time::Instant, Option<Hierarchy>)>> =
        std::sync::Mutex::new(None);
    let mut cache = CACHE.lock().unwrap_or_else(|e| e.into_inner());
    if let Some((at, h)) = cache.as_ref()
        && at.elapsed() < HIERARCHY_TTL
    {
        return h.clone();
    }
    let h = read_memory_hierarchy();
    *cache = Some((std::time::Instant::now(), h.clone()));
    h
}

/// How long [`memory_hierarchy`] trusts what it read.
pub const HIERARCHY_TTL: std::time::Duration = std::time::Duration::from_secs(10);

fn read_memory_hierarchy() -> Option<Hierarchy> {
    let all = hierarchies();
    all.iter()
        .find(|h| h.memory && h.version == CgroupVersion::V1)
        .or_else(|| all.iter().find(|h| h.memory))
        .cloned()
}

/// A memory cgroup identified by its hierarchy and its path inside it
/// (`/` for the root, `/batch/job1` below it).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Memcg {
    pub version: CgroupVersion,
    pub path: String,
}

impl std::fmt::Display for Memcg {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}:{}", self.version, self.path)
    }
}

/// The cgroup id of a cgroup directory (its inode number).
pub fn cgroup_id(dir: &Path) -> std::io::Result<u64> {
    Ok(std::fs::metadata(dir)?.ino())
}

/// Finds the cgroup whose id is `id` under `hierarchy`, by walking it. `None`
/// if it is gone (a cgroup removed between the kill and this lookup).
pub fn resolve(hierarchy: &Hierarchy, id: u64) -> Option<Memcg> {
    let root = &hierarchy.mount_point;
    let mut stack = vec![root.clone()];
    while let Some(dir) = stack.pop() {
        if cgroup_id(&dir).ok() == Some(id) {
            let rel = dir.strip_prefix(root).ok()?;
            return Some(Memcg {
                version: hierarchy.version,
                path: format!("/{}", rel.display()),
            });
        }
        let Ok(entries) = std::fs::read_dir(&dir) else {
            continue;
        };
        for e in entries.flatten() {
            if e.file_type().map(|t| t.is_dir()).unwrap_or(false) {
                stack.push(e.path());
            }
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn resolves_nested_directories_by_inode() {
        let tmp = tempfile::tempdir().unwrap();
        let deep = tmp.path().join("a/b/c");
        std::fs::create_dir_all(&deep).unwrap();
        let h = Hierarchy {
            version: CgroupVersion::V2,
            mount_point: tmp.path().to_path_buf(),
            memory: true,
        };
        let id = cgroup_id(&deep).unwrap();
        let m = resolve(&h, id).unwrap();
        assert_eq!(m.to_string(), "v2:/a/b/c");
        let root = resolve(&h, cgroup_id(tmp.path()).unwrap()).unwrap();
        assert_eq!(root.path, "/");
        assert_eq!(resolve(&h, u64::MAX), None);
    }
}
