//! The victim of an OOM kill, as `oom:mark_victim` (and `tp_btf/mark_victim`
//! for its memory cgroup) report it.

use oomwatch_common::{VictimEvent, present};

use crate::host::cgroup::Memcg;

/// A victim as oomwatch reports it.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Victim {
    pub pid: u32,
    /// The thread group (process) id, when the task program ran.
    pub tgid: Option<u32>,
    pub comm: Option<String>,
    pub uid: Option<u32>,
    pub oom_score_adj: Option<i16>,
    pub total_vm_kb: Option<u64>,
    pub anon_rss_kb: Option<u64>,
    pub file_rss_kb: Option<u64>,
    pub shmem_rss_kb: Option<u64>,
    pub pgtables_kb: Option<u64>,
    /// The memory cgroup's id, when the task program ran.
    pub memcg_id: Option<u64>,
    /// That cgroup's path, when it still existed at lookup time.
    pub memcg: Option<Memcg>,
    /// CLOCK_BOOTTIME at the tracepoint, in nanoseconds.
    pub boot_ns: u64,
    /// The process in the OOM killer that marked this victim (`current`
    /// at the tracepoint).
    pub marked_by: Option<u32>,
}

impl Victim {
    pub fn from_event(ev: &VictimEvent) -> Self {
        let has = |bit: u32| ev.present & bit != 0;
        let opt = |bit: u32, v: u64| has(bit).then_some(v);
        let comm = has(present::COMM).then(|| comm_string(&ev.comm));
        Victim {
            pid: ev.pid,
            tgid: has(present::TASK).then_some(ev.tgid),
            comm,
            uid: has(present::UID).then_some(ev.uid),
            oom_score_adj: has(present::OOM_SCORE_ADJ).then_some(ev.oom_score_adj),
            total_vm_kb: opt(present::TOTAL_VM, ev.total_vm_kb),
            anon_rss_kb: opt(present::ANON_RSS, ev.anon_rss_kb),
            file_rss_kb: opt(present::FILE_RSS, ev.file_rss_kb),
            shmem_rss_kb: opt(present::SHMEM_RSS, ev.shmem_rss_kb),
            pgtables_kb: opt(present::PGTABLES, ev.pgtables_kb),
            memcg_id: has(present::TASK).then_some(ev.memcg_id),
            memcg: None,
            boot_ns: ev.boot_ns,
            marked_by: has(present::MARKER).then_some(ev.marker_tgid),
        }
    }
}

impl Victim {
    /// A kill known only from the BTF tracepoint program's record: the
    /// classic `oom:mark_victim` program, which carries the kernel's
    /// numbers, did not run for it (see [`super::ring`]).
    pub fn from_task_record(pid: u32, t: &oomwatch_common::VictimTask) -> Self {
        let comm = std::fs::read_to_string(format!("/proc/{pid}/comm"))
            .ok()
            .map(|c| c.trim().to_owned());
        Victim {
            pid,
            tgid: Some(t.tgid),
            comm,
            uid: None,
            oom_score_adj: None,
            total_vm_kb: None,
            anon_rss_kb: None,
            file_rss_kb: None,
            shmem_rss_kb: None,
            pgtables_kb: None,
            memcg_id: Some(t.memcg_id),
            memcg: None,
            boot_ns: t.boot_ns,
            marked_by: (t.marker_tgid != 0).then_some(t.marker_tgid),
        }
    }

    /// The victim marked itself: it was the task in the OOM killer.
    pub fn marked_itself(&self) -> bool {
        self.marked_by
            .is_some_and(|m| m == self.tgid.unwrap_or(self.pid))
    }
}

impl std::fmt::Display for Victim {
    /// One line, in the spirit of the kernel's "Killed process" line.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        fn kb(v: Option<u64>) -> String {
            v.map_or_else(|| "?".into(), |v| format!("{v}kB"))
        }
        write!(f, "pid={}", self.pid)?;
        if let Some(t) = self.tgid {
            write!(f, " tgid={t}")?;
        }
        write!(f, " comm={}", self.comm.as_deref().unwrap_or("?"))?;
        if let Some(uid) = self.uid {
            write!(f, " uid={uid}")?;
        }
        match (&self.memcg, self.memcg_id) {
            (Some(m), _) => write!(f, " memcg={m}")?,
            (None, Some(id)) => write!(f, " memcg=id:{id}")?,
            (None, None) => write!(f, " memcg=?")?,
        }
        write!(
            f,
            " anon-rss={} file-rss={} shmem-rss={} pgtables={} total-vm={}",
            kb(self.anon_rss_kb),
            kb(self.file_rss_kb),
            kb(self.shmem_rss_kb),
            kb(self.pgtables_kb),
            kb(self.total_vm_kb)
        )?;
        match self.oom_score_adj {
            Some(a) => write!(f, " oom_score_adj={a}"),
            None => write!(f, " oom_score_adj=?"),
        }
    }
}

/// A kernel `comm` buffer as text (up to its NUL).
pub(crate) fn comm_string(comm: &[u8]) -> String {
    let end = comm.iter().position(|&b| b == 0).unwrap_or(comm.len());
    String::from_utf8_lossy(&comm[..end]).into_owned()
}
