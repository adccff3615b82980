//! The model's input: processes and their mm counters, as the kernel's OOM
//! code sees them. Plain data, filled by the snapshot readers (or by a replay
//! of a kernel report, or by a test).

use serde::{Deserialize, Serialize};

/// `OOM_SCORE_ADJ_MIN`: never killed.
pub const OOM_SCORE_ADJ_MIN: i16 = -1000;
/// `OOM_SCORE_ADJ_MAX`.
pub const OOM_SCORE_ADJ_MAX: i16 = 1000;

/// The counters of one `mm_struct`, in pages unless the name says bytes.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct MmCounters {
    /// MM_ANONPAGES.
    pub anon_pages: u64,
    /// MM_FILEPAGES (on kernels before 4.5 this includes shmem).
    pub file_pages: u64,
    /// MM_SHMEMPAGES (4.5+; 0 before).
    pub shmem_pages: u64,
    /// MM_SWAPENTS.
    pub swap_pages: u64,
    /// `mm_pgtables_bytes(mm)` (4.15+): every page-table level, in bytes.
    pub pgtables_bytes: u64,
    /// `mm->nr_ptes` (before 4.15); derived from `pgtables_bytes` when absent.
    pub nr_ptes: Option<u64>,
    /// `mm_nr_pmds(mm)` (4.0 – 4.14); 0 when absent.
    pub nr_pmds: Option<u64>,
}

/// Test shorthand: an mm with `pages` anonymous pages and nothing else.
#[cfg(test)]
pub(crate) fn anon(pages: u64) -> MmCounters {
    MmCounters {
        anon_pages: pages,
        ..MmCounters::default()
    }
}

impl MmCounters {
    /// `get_mm_rss()`: anon + file + shmem.
    pub fn rss_pages(&self) -> u64 {
        self.anon_pages + self.file_pages + self.shmem_pages
    }
}

/// One thread, as far as victim selection cares.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Thread {
    pub pid: i32,
    /// `task->mm != NULL` (false once the thread has passed `exit_mm`).
    pub has_mm: bool,
    /// PF_EXITING: the thread is exiting (≤ 4.4 scans abort on it).
    #[serde(default)]
    pub exiting: bool,
    /// TIF_MEMDIE: this thread is an OOM victim (≤ 4.4 per-thread state).
    #[serde(default)]
    pub memdie: bool,
}

/// One process (thread group) with everything the OOM killer reads from it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Process {
    pub tgid: i32,
    pub comm: String,
    /// Threads in `for_each_thread` order: the leader first.
    pub threads: Vec<Thread>,
    /// The process's mm counters; `None` when no thread has an mm any more.
    pub mm: Option<MmCounters>,
    /// Identity of the mm, equal for processes that share one (CLONE_VM
    /// without CLONE_THREAD, vfork).
    pub mm_id: Option<u64>,
    /// `signal->oom_score_adj`.
    pub oom_score_adj: i16,
    /// PF_KTHREAD.
    pub kernel_thread: bool,
    /// tgid 1 of the initial pid namespace (a container's pid 1 is killable).
    pub global_init: bool,
    /// Already an OOM victim (`signal->oom_mm` set, 4.9+; `oom_victims`, 4.8).
    pub oom_victim: bool,
    /// Its mm carries MMF_OOM_SKIP (reaped, or past `exit_mmap`).
    pub mm_oom_skip: bool,
    /// `oom_task_origin()`: swapoff, KSM unmerge, ring-buffer resize.
    pub oom_origin: bool,
    /// A vfork child still sharing its parent's mm.
    pub in_vfork: bool,
    /// Holds CAP_SYS_ADMIN (for the ≤ 4.16 bonus).
    pub cap_sys_admin: bool,
    /// Its cpuset/mempolicy intersects the OOM's (always true on non-NUMA).
    pub cpuset_eligible: bool,
    /// Memory cgroup path inside its hierarchy (`/` for the root).
    pub memcg: Option<String>,
    /// The parent's tgid (for "sacrifice child", ≤ 5.0).
    pub parent_tgid: Option<i32>,
}

impl Process {
    /// A plain user process with one thread: the common case, for tests and
    /// for callers that fill in only what they know.
    pub fn simple(tgid: i32, comm: &str, mm: MmCounters, oom_score_adj: i16) -> Self {
        Process {
            tgid,
            comm: comm.to_owned(),
            threads: vec![Thread {
                pid: tgid,
                has_mm: true,
                ..Thread::default()
            }],
            mm: Some(mm),
            mm_id: Some(tgid as u64),
            oom_score_adj,
            kernel_thread: false,
            global_init: false,
            oom_victim: false,
            mm_oom_skip: false,
            oom_origin: false,
            in_vfork: false,
            cap_sys_admin: false,
            cpuset_eligible: true,
            memcg: None,
            parent_tgid: None,
        }
    }

    /// `find_lock_task_mm()`: the first thread (leader first) with an mm.
    pub fn thread_with_mm(&self) -> Option<&Thread> {
        self.mm?;
        self.threads.iter().find(|t| t.has_mm)
    }
}

/// Whether memcg `path` is `ancestor` or below it (paths inside one cgroup
/// hierarchy, `/` the root).
pub fn memcg_within(path: &str, ancestor: &str) -> bool {
    ancestor == "/"
        || path == ancestor
        || path
            .strip_prefix(ancestor)
            .is_some_and(|rest| rest.starts_with('/'))
}

/// `text` fit for a terminal or a log line: a task's name (`comm`) is any
/// 15 bytes but NUL, and may hold terminal escapes (`\x1b[2J`), newlines
/// or bidi overrides. Every control character becomes `\xNN` (the form
/// `/dev/kmsg` and `/proc/PID/status` use: ESC is the four characters
/// `\x1b`), and an invisible formatting character (zero-width, bidi) becomes
/// `\u{NNNN}`; printable text, UTF-8 included, is kept. Borrowed when
/// nothing needs escaping. JSON output needs none of this: serde escapes.
pub fn printable(text: &str) -> std::borrow::Cow<'_, str> {
    use std::fmt::Write as _;
    fn invisible(c: char) -> bool {
        c.is_control()
            || matches!(c, '\u{200b}'..='\u{200f}' | '\u{202a}'..='\u{202e}' | '\u{2066}'..='\u{2069}' | '\u{feff}')
    }
    if !text.chars().any(invisible) {
        return std::borrow::Cow::Borrowed(text);
    }
    let mut out = String::with_capacity(text.len() + 8);
    for c in text.chars() {
        match c {
            c if invisible(c) && (c as u32) < 0x100 => {
                let _ = write!(out, "\\x{:02x}", c as u32);
            }
            c if invisible(c) => {
                let _ = write!(out, "\\u{{{:04x}}}", c as u32);
            }
            c => out.push(c),
        }
    }
    std::borrow::Cow::Owned(out)
}

#[cfg(test)]
mod printable_tests {
    use super::printable;

    #[test]
    fn control_characters_are_escaped_and_printable_text_kept() {
        assert_eq!(printable("\u{1b}[2J\u{1b}[H"), "\\x1b[2J\\x1b[H");
        assert_eq!(printable("a\nb\rc\td\u{7f}"), "a\\x0ab\\x0dc\\x09d\\x7f");
        assert_eq!(printable("\u{9b}31m"), "\\x9b31m");
        assert_eq!(printable("evil\u{202e}gpj.exe"), "evil\\u{202e}gpj.exe");
        assert_eq!(printable("kworker/0:1H-kb"), "kworker/0:1H-kb");
        assert_eq!(printable("naïve ünïcødé 日本"), "naïve ünïcødé 日本");
        assert!(matches!(
            printable("oomwatch-hog"),
            std::borrow::Cow::Borrowed(_)
        ));
        // The kernel's own escapes, already text, stay as they are.
        assert_eq!(printable("\\x1b[2J"), "\\x1b[2J");
    }
}
