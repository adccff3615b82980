//! OOM reports read live from `/dev/kmsg`: the records cut into one report
//! each (from the `invoked oom-killer` header to the first `Killed process`
//! line) or a `memory.oom.group` member, each report parsed and replayed
//! once, on a thread of its own.

use std::{io::Read as _, os::fd::AsFd as _, time::Instant};

use anyhow::Context as _;

use super::{
    analysis::{ReplayReport, analyze},
    parse::{Report, kernel_killed_line, kmsg_messages, parse_kernel_messages, split_killed},
};

/// One OOM report read from `/dev/kmsg`, replayed once: the analysis (which
/// carries the report's trigger and task table) and the few fields of the
/// report the analysis does not keep. The report itself is not kept.
#[derive(Debug, Clone)]
pub struct KernelReport {
    /// The model's replay of the report's own table.
    pub analysis: ReplayReport,
    /// The header's `gfp_mask`, as a number.
    pub gfp_mask: Option<u64>,
    /// The `oom-kill:` line's fields.
    pub oom_kill: Vec<(String, String)>,
    pub seen: Instant,
}

impl KernelReport {
    /// Replays `r` with the model (the one replay of this report).
    pub fn new(r: &Report, seen: Instant) -> Self {
        KernelReport {
            analysis: analyze(r),
            gfp_mask: r.gfp_mask,
            oom_kill: r.oom_kill.clone(),
            seen,
        }
    }

    /// The victim of the report's first `Killed process` line.
    pub fn victim_pid(&self) -> Option<i32> {
        self.analysis.kernel_victim.as_ref().map(|k| k.pid)
    }
}

/// What `/dev/kmsg` told about OOMs.
#[derive(Debug, Clone)]
pub enum KmsgEvent {
    Report(Box<KernelReport>),
    /// Records the kernel overwrote before they were read (a gap in the
    /// records' sequence numbers): any report among them is lost.
    Lost(u64),
    /// The kernel's `Killed process` line for `pid`, with no report.
    Killed {
        pid: i32,
    },
    /// A task killed because its memcg has `memory.oom.group` set, after the
    /// report of the OOM whose victim is `victim`.
    GroupMember {
        pid: i32,
        victim: i32,
    },
}

/// What one message completed.
#[derive(Debug)]
pub enum Assembled {
    Report(Box<Report>),
    GroupMember {
        pid: i32,
        victim: i32,
    },
    /// A `Killed process` line outside any report: the kernel killed `pid`
    /// and printed no report (rate-limited, or its header was lost).
    Killed {
        pid: i32,
    },
}

/// Collects `/dev/kmsg` messages into OOM reports: from the `invoked
/// oom-killer` header to the first `Killed process` line. After a report,
/// `Tasks in … are going to be killed due to memory.oom.group set` opens the
/// group: each `Killed process` line that follows is a member.
#[derive(Debug, Default)]
pub struct ReportAssembler {
    lines: Vec<String>,
    /// The victim of the last report, while its `memory.oom.group` kills
    /// may follow.
    group_of: Option<i32>,
    last_victim: Option<i32>,
}

/// A report longer than this many lines is cut (a runaway table) rather
/// than held without end.
const MAX_REPORT_LINES: usize = 20_000;

impl ReportAssembler {
    /// Feeds one kernel message (no kmsg prefix: [`kmsg_messages`] keeps the
    /// kernel's records only); returns what it completes.
    pub fn push(&mut self, message: &str) -> Option<Assembled> {
        if message.contains("invoked oom-killer:") {
            self.lines.clear();
            self.lines.push(message.to_owned());
            self.group_of = None;
            return None;
        }
        if self.lines.is_empty() {
            if message.starts_with("Tasks in ") && message.ends_with("due to memory.oom.group set")
            {
                self.group_of = self.last_victim;
            } else if let Some(k) = kernel_killed_line(message) {
                return Some(match self.group_of {
                    Some(victim) => Assembled::GroupMember { pid: k.pid, victim },
                    None => Assembled::Killed { pid: k.pid },
                });
            }
            return None;
        }
        if self.lines.len() < MAX_REPORT_LINES {
            self.lines.push(message.to_owned());
        }
        // The kill line by its structure: a task-table row whose task is
        // named `Killed process ` does not end the report.
        if split_killed(message).is_some() {
            let lines = std::mem::take(&mut self.lines);
            let r = parse_kernel_messages(&lines)?;
            self.last_victim = r.killed.first().map(|k| k.pid);
            return Some(Assembled::Report(Box::new(r)));
        }
        None
    }
}

/// Follows `/dev/kmsg` from its end on a thread of its own and sends each
/// completed OOM report. Fails when `/dev/kmsg` cannot be opened (no
/// CAP_SYSLOG, or `dmesg_restrict` for a non-root user).
pub fn follow_kmsg(tx: tokio::sync::mpsc::UnboundedSender<KmsgEvent>) -> anyhow::Result<()> {
    let mut asm = ReportAssembler::default();
    let lost_tx = tx.clone();
    follow_kmsg_lines("kmsg", move |line| {
        let ev = match asm.push(line) {
            None => return true,
            Some(Assembled::GroupMember { pid, victim }) => KmsgEvent::GroupMember { pid, victim },
            Some(Assembled::Killed { pid }) => KmsgEvent::Killed { pid },
            Some(Assembled::Report(r)) => {
                KmsgEvent::Report(Box::new(KernelReport::new(&r, Instant::now())))
            }
        };
        tx.send(ev).is_ok()
    })
    .map(|lost| {
        std::thread::spawn(move || {
            for n in lost {
                if lost_tx.send(KmsgEvent::Lost(n)).is_err() {
                    return;
                }
            }
        });
    })
}

/// The sequence number of a `/dev/kmsg` record (`prio,seq,usec,flags;…`).
fn record_seq(record: &str) -> Option<u64> {
    record.split_once(';')?.0.split(',').nth(1)?.parse().ok()
}

/// Records missing between the last one read (`next` is its successor) and
/// `seq`; advances `next`.
fn records_lost(next: &mut Option<u64>, seq: u64) -> u64 {
    let lost = next.map_or(0, |n| seq.saturating_sub(n));
    *next = Some(seq + 1);
    lost
}

/// Follows `/dev/kmsg` from its end on a thread named `name`, handing each
/// message line to `on_line` until it returns false or the log ends. The
/// receiver gets the count of each run of records the kernel overwrote
/// before they were read (a gap in their sequence numbers).
pub fn follow_kmsg_lines(
    name: &str,
    mut on_line: impl FnMut(&str) -> bool + Send + 'static,
) -> anyhow::Result<std::sync::mpsc::Receiver<u64>> {
    let (lost_tx, lost_rx) = std::sync::mpsc::channel();
    let mut kmsg = std::fs::File::open("/dev/kmsg")
        .context("open /dev/kmsg (the kernel's log needs CAP_SYSLOG)")?;
    // Only what the kernel logs from now on.
    nix::unistd::lseek(kmsg.as_fd(), 0, nix::unistd::Whence::SeekEnd)
        .context("seek /dev/kmsg to its end")?;
    std::thread::Builder::new()
        .name(name.into())
        .spawn(move || {
            // One record per read; records are at most 8 KiB (the kernel's
            // LOG_LINE_MAX plus the prefix).
            let mut buf = vec![0u8; 16 * 1024];
            let mut next = None;
            loop {
                let n = match kmsg.read(&mut buf) {
                    Ok(0) => return,
                    Ok(n) => n,
                    // Records overwritten before we read them: go on.
                    Err(e) if e.raw_os_error() == Some(libc::EPIPE) => continue,
                    Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
                    Err(e) => {
                        tracing::warn!(error = %e, "stopped reading /dev/kmsg");
                        return;
                    }
                };
                let record = String::from_utf8_lossy(&buf[..n]);
                if let Some(seq) = record_seq(&record) {
                    let lost = records_lost(&mut next, seq);
                    if lost > 0 {
                        let _ = lost_tx.send(lost);
                    }
                }
                for line in kmsg_messages(&record).lines() {
                    if !on_line(line) {
                        return;
                    }
                }
            }
        })
        .context("start the /dev/kmsg reader")?;
    Ok(lost_rx)
}

#[cfg(test)]
mod tests {
    #[test]
    fn gaps_in_the_sequence_are_lost_records() {
        assert_eq!(record_seq("6,1042,5551,-;hello"), Some(1042));
        assert_eq!(record_seq(" SUBSYSTEM=mem"), None);
        let mut next = None;
        assert_eq!(records_lost(&mut next, 100), 0, "the first record read");
        assert_eq!(records_lost(&mut next, 101), 0);
        assert_eq!(
            records_lost(&mut next, 105),
            3,
            "102, 103 and 104 overwritten"
        );
        assert_eq!(records_lost(&mut next, 106), 0);
    }

    use super::*;

    #[test]
    fn assembler_cuts_one_report_from_header_to_killed_line() {
        let mut a = ReportAssembler::default();
        assert!(a.push("some unrelated line").is_none());
        let lines = [
            "python3 invoked oom-killer: gfp_mask=0xcc0(GFP_KERNEL), order=0, oom_score_adj=0",
            "CPU: 1 PID: 8175 Comm: python3 Not tainted 6.18.44 #1",
            "memory: usage 65536kB, limit 65536kB, failcnt 10",
            "Tasks state (memory values in pages):",
            "[  pid  ]   uid  tgid total_vm      rss pgtables_bytes swapents oom_score_adj name",
            "[   8175]     0  8175    29742    16288   184320        0             0 python3",
            "oom-kill:constraint=CONSTRAINT_MEMCG,nodemask=(null),cpuset=/,mems_allowed=0,oom_memcg=/job,task_memcg=/job,task=python3,pid=8175,uid=0",
        ];
        for l in lines {
            assert!(a.push(l).is_none(), "{l}");
        }
        let Some(Assembled::Report(r)) = a
            .push("Memory cgroup out of memory: Killed process 8175 (python3) total-vm:118968kB, anon-rss:65152kB, file-rss:0kB, shmem-rss:0kB, UID:0 pgtables:180kB oom_score_adj:0")
        else {
            panic!("a report")
        };
        assert_eq!(r.killed[0].pid, 8175);
        assert_eq!(r.order, Some(0));
        assert_eq!(r.tasks.len(), 1);
        // Lines after the report are not part of the next one.
        assert!(a.push("oom_reaper: reaped process 8175").is_none());
        // A kill line with no report before it (the report rate-limited).
        let Some(Assembled::Killed { pid }) = a.push(
            "Memory cgroup out of memory: Killed process 8180 (python3) total-vm:118968kB, anon-rss:65152kB, file-rss:0kB, shmem-rss:0kB, UID:0 pgtables:180kB oom_score_adj:0",
        ) else {
            panic!("a lone kill line")
        };
        assert_eq!(pid, 8180);
        assert!(a.lines.is_empty());
        // Without the oom.group line, a later Killed line is no member.
        assert!(matches!(
            a.push("Memory cgroup out of memory: Killed process 9 (x) total-vm:1kB"),
            Some(Assembled::Killed { pid: 9 })
        ));
        // memory.oom.group: the members killed after the victim.
        assert!(
            a.push("Tasks in /job are going to be killed due to memory.oom.group set")
                .is_none()
        );
        match a.push("Memory cgroup out of memory: Killed process 8176 (python3) total-vm:1kB, anon-rss:4kB, file-rss:0kB, shmem-rss:0kB, UID:0 pgtables:4kB oom_score_adj:0") {
            Some(Assembled::GroupMember { pid: 8176, victim: 8175 }) => {}
            other => panic!("{other:?}"),
        }
        // A new report closes the group.
        assert!(
            a.push("x invoked oom-killer: gfp_mask=0xcc0(GFP_KERNEL), order=0, oom_score_adj=0")
                .is_none()
        );
        assert!(a.group_of.is_none());
    }
}
