//! Memory cgroup limits, read from cgroupfs (v1 or v2), in the model's terms.

use std::path::{Path, PathBuf};

use crate::{
    host::cgroup::{CgroupVersion, Hierarchy},
    model::totalpages::MemcgLimits,
};

/// v1 prints `PAGE_COUNTER_MAX * PAGE_SIZE` for "no limit"; anything this big
/// is unlimited.
const UNLIMITED_BYTES: u64 = 1 << 60;

#[derive(Debug, thiserror::Error)]
pub enum MemcgError {
    #[error(
        "memory cgroup {path} does not exist ({dir}): give its path inside the hierarchy, e.g. /batch/job1"
    )]
    NoSuchCgroup { path: String, dir: PathBuf },
    #[error("read {path}: {source}")]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{path}: cannot parse {value:?}")]
    Parse { path: PathBuf, value: String },
}

fn read_value(path: &Path) -> Result<String, MemcgError> {
    std::fs::read_to_string(path)
        .map(|s| s.trim().to_owned())
        .map_err(|source| MemcgError::Read {
            path: path.to_path_buf(),
            source,
        })
}

/// Bytes (or `max`) → pages; `u64::MAX` when unlimited.
fn read_pages(path: &Path, page_size: u64) -> Result<u64, MemcgError> {
    let v = read_value(path)?;
    parse_pages(&v, page_size).ok_or_else(|| MemcgError::Parse {
        path: path.to_path_buf(),
        value: v.clone(),
    })
}

/// A limit or usage file's trimmed text, bytes or `max`, in pages of
/// `page_size` bytes; `u64::MAX` when unlimited, None when not a number.
pub fn parse_pages(value: &str, page_size: u64) -> Option<u64> {
    if value == "max" {
        return Some(u64::MAX);
    }
    let bytes: u64 = value.parse().ok()?;
    Some(if bytes >= UNLIMITED_BYTES {
        u64::MAX
    } else {
        bytes / page_size.max(1)
    })
}

/// The file pages `memory.stat` says reclaim could free, in bytes: the
/// inactive and active file LRUs (v1's hierarchical `total_` ones).
pub fn reclaimable_file_bytes(stat: &str, version: CgroupVersion) -> u64 {
    let file_keys: &[&str] = match version {
        CgroupVersion::V1 => &["total_inactive_file", "total_active_file"],
        CgroupVersion::V2 => &["inactive_file", "active_file"],
    };
    stat.lines()
        .filter_map(|l| l.split_once(' '))
        .filter(|(k, _)| file_keys.contains(k))
        .filter_map(|(_, v)| v.trim().parse::<u64>().ok())
        .fold(0, u64::saturating_add)
}

/// Whether v1 `memory.oom_control` says the OOM killer is disabled.
pub fn oom_kill_disabled(oom_control: &str) -> bool {
    oom_control
        .lines()
        .any(|l| l.trim() == "oom_kill_disable 1")
}

/// The directory of memcg `path` under `h`, checked to exist.
pub fn dir(h: &Hierarchy, path: &str) -> Result<PathBuf, MemcgError> {
    let dir = h.mount_point.join(path.trim_start_matches('/'));
    if dir.is_dir() {
        Ok(dir)
    } else {
        Err(MemcgError::NoSuchCgroup {
            path: path.to_owned(),
            dir,
        })
    }
}

/// The limits of memcg `path`. `global_swappiness` is `vm.swappiness` (used
/// by v2 and by the v1 root).
pub fn read_limits(
    h: &Hierarchy,
    path: &str,
    page_size: u64,
    global_swappiness: u32,
) -> Result<MemcgLimits, MemcgError> {
    let d = dir(h, path)?;
    Ok(match h.version {
        CgroupVersion::V1 => {
            let memsw = d.join("memory.memsw.limit_in_bytes");
            let memsw_accounting = memsw.exists();
            let swappiness = read_value(&d.join("memory.swappiness"))
                .ok()
                .and_then(|s| s.parse().ok())
                .unwrap_or(global_swappiness);
            MemcgLimits {
                max_pages: read_pages(&d.join("memory.limit_in_bytes"), page_size)?,
                swap_max_pages: u64::MAX,
                memsw_max_pages: if memsw_accounting {
                    read_pages(&memsw, page_size)?
                } else {
                    u64::MAX
                },
                swappiness,
                memsw_accounting,
                v2: false,
            }
        }
        CgroupVersion::V2 => {
            let max = d.join("memory.max");
            MemcgLimits {
                // The v2 root has no memory.max: unlimited.
                max_pages: if max.exists() {
                    read_pages(&max, page_size)?
                } else {
                    u64::MAX
                },
                swap_max_pages: match d.join("memory.swap.max") {
                    p if p.exists() => read_pages(&p, page_size)?,
                    _ => u64::MAX,
                },
                memsw_max_pages: u64::MAX,
                swappiness: global_swappiness,
                memsw_accounting: false,
                v2: true,
            }
        }
    })
}

/// What a charge against memcg `path` meets: its usage, what reclaim could
/// free there, and whether its OOM killer is disabled (v1).
pub fn read_charge_state(
    h: &Hierarchy,
    path: &str,
    page_size: u64,
    limit_pages: u64,
) -> Result<crate::model::slowpath::MemcgState, MemcgError> {
    let d = dir(h, path)?;
    let usage_file = match h.version {
        CgroupVersion::V1 => "memory.usage_in_bytes",
        CgroupVersion::V2 => "memory.current",
    };
    let usage_pages = read_pages(&d.join(usage_file), page_size)?;
    let stat = read_value(&d.join("memory.stat"))?;
    let reclaimable_bytes = reclaimable_file_bytes(&stat, h.version);
    let oom_kill_disable = h.version == CgroupVersion::V1
        && read_value(&d.join("memory.oom_control"))
            .ok()
            .is_some_and(|t| oom_kill_disabled(&t));
    Ok(crate::model::slowpath::MemcgState {
        usage_pages,
        limit_pages,
        reclaimable_pages: reclaimable_bytes / page_size,
        oom_kill_disable,
    })
}

/// The event counters each v2 memory cgroup keeps in `memory.events`
/// (`oom_group_kill` from 5.18: 0 before).
pub const V2_EVENTS: [&str; 6] = ["low", "high", "max", "oom", "oom_kill", "oom_group_kill"];
/// The v1 ones: `memory.failcnt` (charges that hit the limit) and
/// `memory.oom_control`'s `oom_kill` (4.13+).
pub const V1_EVENTS: [&str; 2] = ["failcnt", "oom_kill"];

/// What the kernel counts for one OOM domain: its memory events and its
/// memory pressure.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct DomainEvents {
    /// (event, count) for every name of the domain's set ([`V2_EVENTS`],
    /// [`V1_EVENTS`], or the host's `oom_kill` from `/proc/vmstat`), 0
    /// where the kernel does not print one.
    pub counters: Vec<(&'static str, u64)>,
    /// v1 `memory.oom_control` `under_oom` (None elsewhere).
    pub under_oom: Option<bool>,
    /// Memory pressure stall totals in µs, `some` and `full` (None without
    /// PSI: a kernel without it, or a v1 cgroup).
    pub pressure_us: Option<(u64, Option<u64>)>,
}

/// `key value` lines (`memory.events`, `memory.oom_control`,
/// `/proc/vmstat`) → the values of `names` (0 where missing).
pub fn keyed(text: &str, names: &[&'static str]) -> Vec<(&'static str, u64)> {
    names
        .iter()
        .map(|&n| {
            let v = text
                .lines()
                .filter_map(|l| l.split_once(' '))
                .find(|(k, _)| *k == n)
                .and_then(|(_, v)| v.trim().parse().ok())
                .unwrap_or(0);
            (n, v)
        })
        .collect()
}

/// The memory events and pressure of memcg `path`.
pub fn read_events(h: &Hierarchy, path: &str) -> Result<DomainEvents, MemcgError> {
    let d = dir(h, path)?;
    let pressure_us = std::fs::read_to_string(d.join("memory.pressure"))
        .ok()
        .and_then(|t| crate::host::psi::parse_totals(&t));
    Ok(match h.version {
        CgroupVersion::V2 => DomainEvents {
            counters: keyed(&read_value(&d.join("memory.events"))?, &V2_EVENTS),
            under_oom: None,
            pressure_us,
        },
        CgroupVersion::V1 => {
            let control = read_value(&d.join("memory.oom_control"))?;
            let failcnt = read_value(&d.join("memory.failcnt"))?;
            let mut counters = keyed(&control, &V1_EVENTS);
            counters[0].1 = failcnt.parse().map_err(|_| MemcgError::Parse {
                path: d.join("memory.failcnt"),
                value: failcnt.clone(),
            })?;
            DomainEvents {
                counters,
                under_oom: Some(keyed(&control, &["under_oom"])[0].1 == 1),
                pressure_us,
            }
        }
    })
}

/// The host's: `/proc/vmstat`'s `oom_kill` (4.13+) and
/// `/proc/pressure/memory`.
pub fn host_events(proc_root: &Path) -> DomainEvents {
    let vmstat = std::fs::read_to_string(proc_root.join("vmstat")).unwrap_or_default();
    DomainEvents {
        counters: keyed(&vmstat, &["oom_kill"]),
        under_oom: None,
        pressure_us: std::fs::read_to_string(proc_root.join("pressure/memory"))
            .ok()
            .and_then(|t| crate::host::psi::parse_totals(&t)),
    }
}

/// `memory.oom.group` of memcg `path` (v2; false on v1).
pub fn oom_group(h: &Hierarchy, path: &str) -> bool {
    h.version == CgroupVersion::V2
        && dir(h, path)
            .ok()
            .and_then(|d| read_value(&d.join("memory.oom.group")).ok())
            .is_some_and(|v| v == "1")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tree(version: CgroupVersion, files: &[(&str, &str)]) -> (tempfile::TempDir, Hierarchy) {
        let tmp = tempfile::tempdir().unwrap();
        for (path, value) in files {
            let p = tmp.path().join(path);
            std::fs::create_dir_all(p.parent().unwrap()).unwrap();
            std::fs::write(p, value).unwrap();
        }
        let h = Hierarchy {
            version,
            mount_point: tmp.path().to_path_buf(),
            memory: true,
        };
        (tmp, h)
    }

    /// The pure parsers behind the readers: limits, `memory.stat`'s file
    /// LRUs (summed saturating: two counters no kernel could hold are no
    /// overflow panic), `memory.oom_control`, `key value` files.
    #[test]
    fn parsers_of_cgroup_files() {
        assert_eq!(parse_pages("max", 4096), Some(u64::MAX));
        assert_eq!(parse_pages("8192", 4096), Some(2));
        assert_eq!(parse_pages("9223372036854771712", 4096), Some(u64::MAX));
        assert_eq!(parse_pages("-1", 4096), None);
        assert_eq!(parse_pages("", 4096), None);
        let stat = format!(
            "cache 1\ntotal_inactive_file {0}\ntotal_active_file {0}\ninactive_file 4096\n",
            u64::MAX
        );
        assert_eq!(reclaimable_file_bytes(&stat, CgroupVersion::V1), u64::MAX);
        assert_eq!(reclaimable_file_bytes(&stat, CgroupVersion::V2), 4096);
        assert!(oom_kill_disabled("oom_kill_disable 1\nunder_oom 0\n"));
        assert!(!oom_kill_disabled("oom_kill_disable 0\nunder_oom 1\n"));
        assert_eq!(
            keyed("oom 3\noom_kill 2\nmax x\n", &["oom_kill", "max", "low"]),
            vec![("oom_kill", 2), ("max", 0), ("low", 0)]
        );
    }

    #[test]
    fn v1_with_memsw() {
        let (_t, h) = tree(
            CgroupVersion::V1,
            &[
                ("job/memory.limit_in_bytes", "67108864\n"),
                ("job/memory.memsw.limit_in_bytes", "83886080\n"),
                ("job/memory.swappiness", "30\n"),
            ],
        );
        let l = read_limits(&h, "/job", 4096, 60).unwrap();
        assert_eq!(
            (l.max_pages, l.memsw_max_pages, l.swappiness),
            (16_384, 20_480, 30)
        );
        assert!(l.memsw_accounting && !l.v2);
    }

    #[test]
    fn v1_unlimited_and_v2_max() {
        let (_t, h) = tree(
            CgroupVersion::V1,
            &[("a/memory.limit_in_bytes", "9223372036854771712\n")],
        );
        let l = read_limits(&h, "/a", 4096, 60).unwrap();
        assert_eq!(l.max_pages, u64::MAX);
        assert!(!l.memsw_accounting);
        let (_t, h) = tree(
            CgroupVersion::V2,
            &[
                ("b/memory.max", "max\n"),
                ("b/memory.swap.max", "0\n"),
                ("b/memory.oom.group", "1\n"),
            ],
        );
        let l = read_limits(&h, "/b", 4096, 60).unwrap();
        assert_eq!(
            (l.max_pages, l.swap_max_pages, l.swappiness),
            (u64::MAX, 0, 60)
        );
        assert!(oom_group(&h, "/b"));
    }

    #[test]
    fn missing_cgroup_and_garbage() {
        let (_t, h) = tree(CgroupVersion::V2, &[("c/memory.max", "lots\n")]);
        let e = read_limits(&h, "/nope", 4096, 60).unwrap_err().to_string();
        assert!(e.contains("memory cgroup /nope does not exist"), "{e}");
        let e = read_limits(&h, "/c", 4096, 60).unwrap_err().to_string();
        assert!(e.contains("cannot parse \"lots\""), "{e}");
    }

    /// Each version's event set, in full, 0 where the kernel prints none;
    /// pressure where the cgroup has it.
    #[test]
    fn events_per_version() {
        let (_t, h) = tree(
            CgroupVersion::V2,
            &[
                (
                    "job/memory.events",
                    "low 0\nhigh 3\nmax 17\noom 2\noom_kill 2\n",
                ),
                (
                    "job/memory.pressure",
                    "some avg10=0.00 avg60=0.00 avg300=0.00 total=1500\nfull avg10=0.00 avg60=0.00 avg300=0.00 total=900\n",
                ),
            ],
        );
        let e = read_events(&h, "/job").unwrap();
        assert_eq!(
            e.counters,
            vec![
                ("low", 0),
                ("high", 3),
                ("max", 17),
                ("oom", 2),
                ("oom_kill", 2),
                ("oom_group_kill", 0)
            ]
        );
        assert_eq!(
            (e.under_oom, e.pressure_us),
            (None, Some((1500, Some(900))))
        );
        let (_t, h) = tree(
            CgroupVersion::V1,
            &[
                ("job/memory.failcnt", "41\n"),
                (
                    "job/memory.oom_control",
                    "oom_kill_disable 0\nunder_oom 1\noom_kill 4\n",
                ),
            ],
        );
        let e = read_events(&h, "/job").unwrap();
        assert_eq!(e.counters, vec![("failcnt", 41), ("oom_kill", 4)]);
        assert_eq!((e.under_oom, e.pressure_us), (Some(true), None));
        assert!(read_events(&h, "/gone").is_err());
    }
}
