//! Processes from a BPF task iterator: every task's OOM-relevant state in one
//! read, taken from the kernel's own structures the way that kernel's
//! `oom_badness()` takes it (the atomics up to 6.1, the percpu counters'
//! global part 6.2 – 6.19, their precise per-CPU sums from 7.0:
//! [`ebpf::RssRule`]), rather than from `/proc`, which 6.16 – 6.19 shows
//! precise per-CPU sums the OOM killer does not use.
//!
//! The program (`oomwatch_tasks`, `iter/task` in `oomwatch-ebpf`) writes one
//! [`TaskRecord`] per thread; this module groups them into the same
//! [`ProcSnapshot`] the `/proc` reader produces, so the model cannot tell the
//! two apart.

use std::{
    collections::HashMap,
    io::Read as _,
    path::{Path, PathBuf},
};

use aya::{Ebpf, programs::Iter};
use oomwatch_common::{MMF_OOM_SKIP, TaskIterLayout, TaskRecord, task_state};

use super::proc::{ProcEntry, ProcSnapshot, read_header};
use crate::{
    ebpf::{self, RssRuleChoice},
    host::btf::{Btf, VMLINUX_BTF},
    host::cgroup::{self, Hierarchy},
    host::privilege::Privileges,
    host::{cpus, kallsyms, kernel_release},
    model::{MmCounters, Process, Thread},
};

/// PF_EXITING (include/linux/sched.h).
const PF_EXITING: u32 = 0x0000_0004;
/// PF_KTHREAD.
const PF_KTHREAD: u32 = 0x0020_0000;
/// USER_HZ: `/proc/PID/stat` start times are in these ticks.
const NS_PER_TICK: u64 = 10_000_000;

/// Why the iterator cannot run here, in one sentence.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct Unavailable(pub String);

/// The loaded task iterator and what it needs to turn records into
/// processes. Keep one and call [`TaskIter::read`] for every snapshot.
pub struct TaskIter {
    /// How the records' rss counters are read (as this kernel's
    /// `oom_badness()` reads them), and why.
    pub rss_rule: RssRuleChoice,
    ebpf: Ebpf,
    hierarchy: Option<Hierarchy>,
    /// Memory cgroup id → path in `hierarchy`, refreshed on a miss.
    memcg_paths: HashMap<u64, String>,
    /// Processes of the last snapshot that `/proc` lists but the iterator
    /// did not show (started after it ran, or hidden from it by the
    /// kernel), read from `/proc` instead: (tgid, comm).
    pub filled_from_proc: Vec<(i32, String)>,
    /// Tgids the last listing of /proc had and the iterator did not.
    hidden: Vec<i32>,
    /// Snapshots taken.
    reads: u64,
    /// Iterator passes run (the kernel side's cache generation).
    passes: u64,
    /// The last pass's bytes, kept for the next pass to read into.
    buf: Vec<u8>,
}

/// How often (in snapshots) /proc is listed to find processes the iterator
/// does not show.
const LIST_EVERY: u64 = 16;

/// Every numeric entry of `proc_root`.
fn list_tgids(proc_root: &Path) -> Vec<i32> {
    std::fs::read_dir(proc_root)
        .map(|d| {
            d.flatten()
                .filter_map(|e| e.file_name().to_str()?.parse().ok())
                .collect()
        })
        .unwrap_or_default()
}

impl TaskIter {
    /// Resolves the layout from BTF and loads the iterator, or says in one
    /// sentence why this kernel or this process cannot.
    pub fn load() -> Result<Self, Unavailable> {
        if let Some(msg) = Privileges::current().missing_for_iterators() {
            return Err(Unavailable(msg));
        }
        let btf = Btf::from_file(Path::new(VMLINUX_BTF)).map_err(|e| {
            Unavailable(format!(
                "the kernel has no readable BTF ({e}); the task iterator needs \
                 CONFIG_DEBUG_INFO_BTF=y"
            ))
        })?;
        if !btf.has_func("bpf_iter_task") {
            return Err(Unavailable(
                "the kernel has no BPF task iterator (bpf_iter_task, Linux 5.8+)".into(),
            ));
        }
        let mut layout = ebpf::task_iter_layout(&btf).map_err(|e| {
            Unavailable(format!(
                "the kernel's structures are not laid out as the task iterator expects ({e})"
            ))
        })?;
        // Its memory is reused by the loader's own parse.
        drop(btf);
        let rss_rule = rss_rule_for(&mut layout, &kernel_release())?;
        let it = Self::load_with(&layout, rss_rule);
        // The parses are gone; give their memory back to the system rather
        // than keep it in the heap for the life of the process.
        // SAFETY: glibc's malloc_trim only releases free memory.
        #[cfg(target_env = "gnu")]
        unsafe {
            libc::malloc_trim(0);
        }
        it
    }

    fn load_with(layout: &TaskIterLayout, rss_rule: RssRuleChoice) -> Result<Self, Unavailable> {
        let ebpf = ebpf::load_task_iterator(layout).map_err(|e| Unavailable(format!("{e:#}")))?;
        let hierarchy = cgroup::memory_hierarchy();
        Ok(TaskIter {
            rss_rule,
            ebpf,
            hierarchy,
            memcg_paths: HashMap::new(),
            filled_from_proc: Vec::new(),
            hidden: Vec::new(),
            buf: Vec::new(),
            reads: 0,
            passes: 0,
        })
    }

    /// One pass of the iterator: every task's record, in pid order.
    pub fn records(&mut self) -> std::io::Result<Vec<TaskRecord>> {
        // A new pass number: memcg ids cached in the kernel by an earlier
        // pass are followed again (their css may be gone and reused).
        self.passes += 1;
        let mut pass: aya::maps::Array<_, u64> = self
            .ebpf
            .map_mut("ITER_PASS")
            .and_then(|m| aya::maps::Array::try_from(m).ok())
            .ok_or_else(|| std::io::Error::other("map ITER_PASS is missing"))?;
        pass.set(0, self.passes, 0).map_err(std::io::Error::other)?;
        let prog: &mut Iter = self
            .ebpf
            .program_mut("oomwatch_tasks")
            .and_then(|p| p.try_into().ok())
            .ok_or_else(|| std::io::Error::other("the task iterator is not loaded"))?;
        let link = prog.attach().map_err(std::io::Error::other)?;
        let link = prog.take_link(link).map_err(std::io::Error::other)?;
        let mut file = link.into_file().map_err(std::io::Error::other)?;
        self.buf.clear();
        file.read_to_end(&mut self.buf)?;
        Ok(decode(&self.buf))
    }

    /// A snapshot of every process, the header (release, memory, page size)
    /// read from `proc_root`.
    pub fn read(&mut self, proc_root: &Path) -> Result<ProcSnapshot, super::proc::SnapshotError> {
        let mut snap = read_header(proc_root)?;
        let records = self
            .records()
            .map_err(|e| super::proc::SnapshotError::Parse {
                path: PathBuf::from("bpf task iterator"),
                message: e.to_string(),
            })?;
        let ids: Vec<u64> = records
            .iter()
            .filter(|r| r.state & task_state::HAS_MEMCG != 0)
            .map(|r| r.memcg_id)
            .collect();
        if ids.iter().any(|id| !self.memcg_paths.contains_key(id)) {
            self.memcg_paths = self.hierarchy.as_ref().map(memcg_paths).unwrap_or_default();
        }
        snap.processes = group(&records, &self.memcg_paths);
        // A process the iterator did not show is still a candidate. Which
        // ones the kernel hides is learnt from a listing of /proc, on the
        // first snapshot and every LIST_EVERY-th after it (a listing of
        // 10 000 processes costs about a quarter of the iterator pass); in
        // between, only those are read. (A process started after the pass
        // is in the next snapshot, as with /proc.)
        let seen: std::collections::HashSet<i32> = records.iter().map(|r| r.tgid).collect();
        if self.reads.is_multiple_of(LIST_EVERY) {
            self.hidden = list_tgids(proc_root)
                .into_iter()
                .filter(|t| !seen.contains(t))
                .collect();
        }
        self.reads += 1;
        self.filled_from_proc.clear();
        for &tgid in &self.hidden {
            if seen.contains(&tgid) {
                continue;
            }
            if let Some(entry) = super::proc::read_pid(proc_root, tgid) {
                self.filled_from_proc
                    .push((tgid, entry.process.comm.clone()));
                snap.processes.push(entry);
            }
        }
        if !self.filled_from_proc.is_empty() {
            // Back into for_each_process order, by start time in ticks.
            snap.processes
                .sort_by_key(|e| (e.start_ticks, e.process.tgid));
        }
        Ok(snap)
    }
}

/// Chooses how the iterator reads the rss counters on the kernel
/// `release` (or as its tasks were measured to score) and writes it into
/// `layout`, or says why this kernel's way
/// cannot be reproduced (then `/proc` is read instead: on 7.0+, where the
/// kernel sums the per-CPU counters, `/proc/PID/status` shows those same
/// precise sums).
fn rss_rule_for(layout: &mut TaskIterLayout, release: &str) -> Result<RssRuleChoice, Unavailable> {
    let percpu = layout.rss_direct != 0;
    // Between the two percpu readings the kernel's own tasks decide where
    // they tell (a backport the release does not show): one read of /proc
    // measures them.
    let measured = percpu
        .then(|| super::proc::read(Path::new("/proc")).ok()?.rss_measured)
        .flatten();
    let says = measured
        .as_ref()
        .and_then(|m| Some((m.says()?, m.verdict.as_str())));
    let choice = ebpf::choose_rss_rule(percpu, release, says).map_err(Unavailable)?;
    ebpf::apply_rss_rule(layout, &choice, || {
        let offsets = kallsyms::read().and_then(|t| kallsyms::per_cpu_offset(&t))?;
        Ok((offsets, cpus::possible()?))
    })
    .map_err(|e| {
        Unavailable(format!(
            "{choice}; the task iterator cannot sum them here: {e}"
        ))
    })?;
    Ok(choice)
}

/// The records in an iterator's output (a partial record at the end, which
/// the kernel never writes, is dropped).
pub fn decode(buf: &[u8]) -> Vec<TaskRecord> {
    const N: usize = std::mem::size_of::<TaskRecord>();
    buf.chunks_exact(N)
        // SAFETY: TaskRecord is repr(C) plain integers (aya::Pod); the chunk
        // is exactly its size; read_unaligned has no alignment needs.
        .map(|c| unsafe { std::ptr::read_unaligned(c.as_ptr().cast::<TaskRecord>()) })
        .collect()
}

/// Every cgroup directory of `h` by id (inode number) → its path.
fn memcg_paths(h: &Hierarchy) -> HashMap<u64, String> {
    let mut out = HashMap::new();
    let root = &h.mount_point;
    let mut stack = vec![root.clone()];
    while let Some(dir) = stack.pop() {
        if let (Ok(id), Ok(rel)) = (cgroup::cgroup_id(&dir), dir.strip_prefix(root)) {
            out.insert(id, format!("/{}", rel.display()));
        }
        let Ok(entries) = std::fs::read_dir(&dir) else {
            continue;
        };
        for e in entries.flatten() {
            if e.file_type().is_ok_and(|t| t.is_dir()) {
                stack.push(e.path());
            }
        }
    }
    out
}

fn comm(raw: &[u8; 16]) -> String {
    crate::ebpf::comm_string(raw)
}

/// Threads into processes: the leader first, then by pid, as `/proc` gives
/// them; the counters, flags and memcg of the first thread with an mm, as
/// `find_lock_task_mm()` picks it. In `for_each_process` order (start time,
/// then tgid).
pub fn group(records: &[TaskRecord], memcg_paths: &HashMap<u64, String>) -> Vec<ProcEntry> {
    // By process, the leader first, then by pid: one sort, no map.
    let mut order: Vec<&TaskRecord> = records.iter().collect();
    order.sort_unstable_by_key(|t| (t.tgid, t.pid != t.tgid, t.pid));
    let mut out: Vec<(u64, ProcEntry)> = Vec::with_capacity(order.len());
    for threads in order.chunk_by(|a, b| a.tgid == b.tgid) {
        let tgid = threads[0].tgid;
        let leader = threads[0];
        let with_mm = threads.iter().find(|t| t.state & task_state::HAS_MM != 0);
        let kernel_thread = leader.flags & PF_KTHREAD != 0;
        let mm = with_mm.filter(|_| !kernel_thread).map(|t| {
            // get_mm_counter() never returns a negative count.
            let c = |i: usize| t.counters[i].max(0) as u64;
            MmCounters {
                file_pages: c(0),
                anon_pages: c(1),
                swap_pages: c(2),
                shmem_pages: c(3),
                pgtables_bytes: t.pgtables_bytes.max(0) as u64,
                nr_ptes: None,
                nr_pmds: None,
            }
        });
        let at: &TaskRecord = with_mm.copied().unwrap_or(leader);
        let memcg = [at, leader]
            .iter()
            .filter(|t| t.state & task_state::HAS_MEMCG != 0)
            .find_map(|t| memcg_paths.get(&t.memcg_id).cloned());
        let process = Process {
            tgid,
            comm: comm(&leader.comm),
            threads: threads
                .iter()
                .map(|t| Thread {
                    pid: t.pid,
                    has_mm: t.state & task_state::HAS_MM != 0,
                    exiting: t.flags & PF_EXITING != 0,
                    memdie: false,
                })
                .collect(),
            mm,
            mm_id: with_mm.map(|t| t.mm),
            oom_score_adj: leader.oom_score_adj,
            kernel_thread,
            global_init: tgid == 1,
            oom_victim: threads
                .iter()
                .any(|t| t.state & task_state::OOM_VICTIM != 0),
            mm_oom_skip: with_mm.is_some_and(|t| t.mm_flags & (1 << MMF_OOM_SKIP) != 0),
            oom_origin: threads
                .iter()
                .any(|t| t.state & task_state::OOM_ORIGIN != 0),
            in_vfork: with_mm.is_some_and(|t| t.state & task_state::IN_VFORK != 0),
            // Only kernels before 4.17 give CAP_SYS_ADMIN a bonus, and task
            // iterators exist from 5.8: not read.
            cap_sys_admin: false,
            cpuset_eligible: true,
            memcg,
            // Only up to 5.0 ("sacrifice child"); not read (see TaskRecord).
            parent_tgid: None,
        };
        out.push((
            leader.start_time,
            ProcEntry {
                process,
                kernel_oom_score: None,
                stat_rss_pages: None,
                start_ticks: leader.start_time / NS_PER_TICK,
            },
        ));
    }
    out.sort_by_key(|(ns, e)| (*ns, e.process.tgid));
    out.into_iter().map(|(_, e)| e).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rec(pid: i32, tgid: i32) -> TaskRecord {
        TaskRecord {
            pid,
            tgid,
            flags: 0,
            state: task_state::HAS_MM,
            comm: *b"app\0\0\0\0\0\0\0\0\0\0\0\0\0",
            start_time: 1_000_000_000 + tgid as u64,
            mm: 0xffff_8880_0000_0000 + tgid as u64 * 0x1000,
            parent_tgid: 1,
            oom_score_adj: 0,
            _pad: 0,
            counters: [10, 200, 5, 1],
            pgtables_bytes: 8192,
            mm_flags: 0,
            memcg_id: 0,
        }
    }

    #[test]
    fn decodes_whole_records_and_drops_a_partial_one() {
        let a = rec(7, 7);
        let mut buf = Vec::new();
        for r in [a, rec(8, 7)] {
            // SAFETY: plain-data struct viewed as bytes.
            let bytes = unsafe {
                std::slice::from_raw_parts(
                    (&r as *const TaskRecord).cast::<u8>(),
                    std::mem::size_of::<TaskRecord>(),
                )
            };
            buf.extend_from_slice(bytes);
        }
        buf.extend_from_slice(&[1, 2, 3]);
        let out = decode(&buf);
        assert_eq!(out.len(), 2);
        assert_eq!(out[0], a);
        assert_eq!(out[1].pid, 8);
    }

    /// An exited leader (no mm) with a live thread: the process is scored
    /// through the thread, in the thread's memcg, as find_lock_task_mm does.
    #[test]
    fn groups_threads_the_way_the_oom_killer_walks_them() {
        let mut leader = rec(300, 300);
        leader.state = task_state::HAS_MEMCG;
        leader.memcg_id = 1;
        leader.counters = [0; 4];
        let mut t1 = rec(302, 300);
        t1.state |= task_state::HAS_MEMCG | task_state::IN_VFORK;
        t1.memcg_id = 42;
        t1.mm_flags = 1 << MMF_OOM_SKIP;
        let mut t2 = rec(301, 300);
        t2.flags = PF_EXITING;
        let mut kthread = rec(2, 2);
        kthread.flags = PF_KTHREAD;
        kthread.state = 0;
        kthread.start_time = 1;
        let mut negative = rec(400, 400);
        negative.counters = [-3, 50, 0, 0];
        negative.state |= task_state::OOM_VICTIM;
        let paths: HashMap<u64, String> =
            [(1, "/".to_owned()), (42, "/batch/job".to_owned())].into();
        let out = group(&[t1, kthread, leader, negative, t2], &paths);
        let tgids: Vec<i32> = out.iter().map(|e| e.process.tgid).collect();
        assert_eq!(tgids, vec![2, 300, 400], "start-time order");
        let k = &out[0].process;
        assert!(k.kernel_thread && k.mm.is_none());
        let p = &out[1].process;
        let tids: Vec<i32> = p.threads.iter().map(|t| t.pid).collect();
        assert_eq!(tids, vec![300, 301, 302], "leader first, then by pid");
        assert!(!p.threads[0].has_mm && p.threads[1].has_mm);
        assert!(p.threads[1].exiting);
        // The first thread with an mm is 301 (counters from rec()).
        let mm = p.mm.expect("scored through a live thread");
        assert_eq!(
            (mm.file_pages, mm.anon_pages, mm.swap_pages, mm.shmem_pages),
            (10, 200, 5, 1)
        );
        assert_eq!(mm.pgtables_bytes, 8192);
        assert_eq!(p.mm_id, Some(t2.mm));
        assert!(!p.mm_oom_skip && !p.in_vfork, "301's own state, not 302's");
        assert_eq!(
            p.memcg.as_deref(),
            Some("/"),
            "301 has no memcg: the leader's"
        );
        let n = &out[2].process;
        assert_eq!(
            n.mm.unwrap().file_pages,
            0,
            "clamped at 0 as get_mm_counter does"
        );
        assert!(n.oom_victim);
        assert_eq!(out[2].kernel_oom_score, None);
    }

    #[test]
    fn the_mm_thread_decides_skip_vfork_and_memcg() {
        let mut leader = rec(500, 500);
        leader.state = 0;
        let mut t = rec(501, 500);
        t.state |= task_state::HAS_MEMCG | task_state::IN_VFORK;
        t.memcg_id = 42;
        t.mm_flags = 1 << MMF_OOM_SKIP;
        let paths: HashMap<u64, String> = [(42, "/batch/job".to_owned())].into();
        let p = &group(&[leader, t], &paths)[0].process;
        assert!(p.mm_oom_skip && p.in_vfork);
        assert_eq!(p.memcg.as_deref(), Some("/batch/job"));
    }
}
