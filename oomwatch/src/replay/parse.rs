//! The kernel's own OOM report (dmesg, `/dev/kmsg`, journal or syslog
//! copies, mail pastes): found in any text, parsed into data, and its
//! selection replayed with the model ([`crate::replay`] explains it).
//!
//! Formats from 2.6.32 to 6.18 (kernel-oom.md §9): the `invoked oom-killer`
//! header in all its forms, the kernel line (`CPU: … Comm: … <release> #…`,
//! or 2.6.32's `Pid: N, comm: …`), the memcg lines (`Task in … killed as a
//! result of limit of …`, `memory: usage`, `memory+swap:` / `swap:`), the
//! global page counts (`pages RAM`, `pages reserved`, `Total swap`), the task
//! table in every column layout (`cpu oom_adj`, `nr_ptes`, `nr_pmds`,
//! `pgtables_bytes`, the 6.12 rss split), `Kill process … score … or
//! sacrifice child`, the `oom-kill:` summary, every `Killed process` form,
//! `memory.oom.group` follow-up kills and the lines that end an OOM without a
//! kill. Line prefixes are skipped: syslog and journal (`… kernel: `), printk
//! levels (`<4>`), `/dev/kmsg` records, timestamps (`[  12.345678]`, `dmesg
//! -T`), printk caller ids (`[ T1778]`), mail indentation and `>` quoting,
//! and any other run of `[…]` blocks the report's own anchor lines (`CPU: `,
//! `Call Trace:`, the table's header, the `invoked oom-killer` header) show
//! before the kernel's text (vendor kernels' tags). A line whose prefix
//! names a facility other than the kernel's (a `/dev/kmsg` record or a
//! `dmesg -r` `<N>` that user space wrote) is skipped. Kill lines are told by
//! their structure (they start with `Killed process` or the kernel's own
//! message), and a task-table row is a row whatever its task's name holds.
//! Lines a mail client wrapped are joined again when the input's lines carry
//! a prefix and the continuation does not.

use serde::Serialize;

use crate::model::KernelVersion;

/// One row of the task table. Columns a kernel does not print are `None`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct TaskRow {
    pub pid: i32,
    pub uid: u32,
    pub tgid: i32,
    pub total_vm_pages: u64,
    pub rss_pages: u64,
    /// 6.12+ tables split rss.
    pub rss_anon_pages: Option<u64>,
    pub rss_file_pages: Option<u64>,
    pub rss_shmem_pages: Option<u64>,
    /// 4.15+.
    pub pgtables_bytes: Option<u64>,
    /// 3.10 – 4.14.
    pub nr_ptes: Option<u64>,
    /// 4.0 – 4.14.
    pub nr_pmds: Option<u64>,
    /// 3.x+ (2.6.32 does not print it).
    pub swapents: Option<u64>,
    /// Absent in vanilla 2.6.32 tables (which print `oom_adj`).
    pub oom_score_adj: Option<i16>,
    /// 2.6.32 tables.
    pub oom_adj: Option<i16>,
    /// The input line it came from (1-based).
    pub line: usize,
    pub name: String,
}

impl TaskRow {
    /// The oom_score_adj in effect: the column, or 2.6.32's oom_adj scaled
    /// the way the kernel maps it (`oom_adj * 1000 / 17`, 15 → 1000).
    pub fn adj(&self) -> i16 {
        self.oom_score_adj.unwrap_or_else(|| match self.oom_adj {
            Some(15) => 1000,
            Some(-17) => -1000,
            Some(a) => (i32::from(a) * 1000 / 17) as i16,
            None => 0,
        })
    }
}

/// A `Killed process` line.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Killed {
    /// What precedes it (`Out of memory`, `Memory cgroup out of memory`, …).
    pub message: String,
    pub pid: i32,
    pub comm: String,
    pub anon_rss_kb: Option<u64>,
    pub file_rss_kb: Option<u64>,
    pub shmem_rss_kb: Option<u64>,
    pub line: usize,
}

impl Killed {
    /// anon + file + shmem as the line gives them (the mm's rss, in kB).
    pub fn rss_kb(&self) -> Option<u64> {
        Some(
            self.anon_rss_kb?
                .saturating_add(self.file_rss_kb.unwrap_or(0))
                .saturating_add(self.shmem_rss_kb.unwrap_or(0)),
        )
    }
}

/// The `… Kill process P (comm) score S or sacrifice child` line (≤ 5.0):
/// the task the scan selected, before a child may be killed instead.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Selected {
    pub pid: i32,
    pub comm: String,
    /// `chosen_points * 1000 / totalpages` (2.6.36 – 3.7: the points).
    pub score: Option<u64>,
    pub line: usize,
}

/// One OOM report.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct Report {
    /// First and last input line (1-based) that belong to it.
    pub first_line: usize,
    pub last_line: usize,
    /// The `invoked oom-killer` header was seen (false: only kill lines,
    /// the rest rate-limited or cut away).
    pub has_header: bool,
    /// The allocating task (header).
    pub comm: Option<String>,
    /// Its pid, from the kernel line.
    pub pid: Option<i32>,
    pub gfp_mask: Option<u64>,
    /// The flag names the header prints after the mask (4.9+).
    pub gfp_flags: Option<String>,
    pub order: Option<i32>,
    pub oom_score_adj: Option<i16>,
    /// 2.6.32 headers print `oom_adj=`.
    pub oom_adj: Option<i16>,
    /// The release from the kernel line (`6.18.44-fc-v782`).
    pub kernel: Option<String>,
    /// What follows `#` on the kernel line (`1 SMP Debian 6.1.192-2`).
    pub kernel_build: Option<String>,
    /// `x86_64`, `aarch64`, `arm`, … as the report's own lines show it.
    pub arch: Option<String>,
    /// memcg OOM ≤ 4.19: `Task in A killed as a result of limit of B`.
    pub task_in: Option<(String, String)>,
    /// memcg OOM: `memory: usage …, limit …`.
    pub memcg_limit_kb: Option<u64>,
    /// v1 `memory+swap:` limit.
    pub memsw_limit_kb: Option<u64>,
    /// v2 `swap:` limit.
    pub swap_limit_kb: Option<u64>,
    /// Global OOM: `N pages RAM`, `N pages reserved`, `Total swap = NkB`.
    pub pages_ram: Option<u64>,
    pub pages_reserved: Option<u64>,
    pub total_swap_kb: Option<u64>,
    /// The `oom-kill:` line's fields (constraint, oom_memcg, task_memcg, task, pid, …).
    pub oom_kill: Vec<(String, String)>,
    /// The table's column names after `[ pid ]`.
    pub columns: Vec<String>,
    /// The `Tasks state (memory values in pages):` line (4.19+).
    pub tasks_state_line: bool,
    pub tasks: Vec<TaskRow>,
    /// The `Kill process … or sacrifice child` line (≤ 5.0).
    pub selected: Option<Selected>,
    /// Every `Killed process` line, in order (several with memory.oom.group).
    pub killed: Vec<Killed>,
    /// `Tasks in <path> are going to be killed due to memory.oom.group set`.
    pub oom_group: Option<String>,
    /// `OOM victim N (comm) is already exiting. Skip killing the task` (5.9+).
    pub already_exiting: Option<(i32, String)>,
    /// `Out of memory and no killable processes...`.
    pub no_killable: bool,
    /// The call trace runs through the page-fault handler
    /// (`handle_mm_fault`): the OOM was invoked inside a page fault.
    pub in_page_fault: bool,
    /// Lines inside the task table that are not rows (other programs'
    /// output interleaved), by line number.
    pub foreign_lines: Vec<usize>,
    /// `...` lines: parts the author cut (line numbers).
    pub elided_lines: Vec<usize>,
    /// Rows after a `...` inside the table: the table is incomplete.
    pub table_elided: bool,
    /// The `oom-kill:` summary came after the table (before 6.12).
    #[serde(skip)]
    table_closed: bool,
}

impl Report {
    /// Inside the task table: its header seen, no kill or selection yet,
    /// and no `oom-kill:` summary after it.
    fn in_table(&self) -> bool {
        !self.columns.is_empty()
            && self.killed.is_empty()
            && self.selected.is_none()
            && !self.table_closed
    }

    /// An `oom-kill:` field.
    pub fn oom_kill_field(&self, key: &str) -> Option<&str> {
        self.oom_kill
            .iter()
            .find(|(k, _)| k == key)
            .map(|(_, v)| v.as_str())
    }

    /// A memcg OOM, by whatever the report shows of it.
    pub fn is_memcg(&self) -> bool {
        self.oom_kill_field("oom_memcg").is_some()
            || self.memcg_limit_kb.is_some()
            || self.task_in.is_some()
            || self
                .killed
                .first()
                .is_some_and(|k| k.message.contains("Memory cgroup"))
            || self.oom_kill_field("constraint") == Some("CONSTRAINT_MEMCG")
    }
}

/// The syslog facility of a `/dev/kmsg` record prefix `prio,seq,usec,flags`
/// (`prio` is `facility << 3 | level`), or `None` when `head` is no such
/// prefix.
fn kmsg_head_facility(head: &str) -> Option<u32> {
    let parts: Vec<&str> = head.split(',').collect();
    let ok = parts.len() >= 3
        && parts[..3]
            .iter()
            .all(|p| !p.is_empty() && p.bytes().all(|b| b.is_ascii_digit()));
    ok.then(|| parts[0].parse::<u32>().map_or(u32::MAX, |p| p >> 3))
}

/// Whether `head` is a `/dev/kmsg` record prefix: `prio,seq,usec,flags`.
fn is_kmsg_head(head: &str) -> bool {
    kmsg_head_facility(head).is_some()
}

/// The kernel's syslog facility (`LOG_KERN`). User space writing to
/// `/dev/kmsg` cannot log under it: the kernel sets `LOG_USER` (1) when
/// the writer names facility 0 or none (`devkmsg_write`).
pub const KERNEL_FACILITY: u32 = 0;

/// A bracket's inside that is a line prefix: a timestamp (`  246.610518`,
/// `Fri Sep 25 15:29:47 2020`) or a printk caller id (`T1778`, `C3`). A
/// task-table pid (`  31407`) is not.
fn is_bracket_prefix(inner: &str) -> bool {
    let inner = inner.trim();
    let ts = inner.contains('.') && inner.bytes().all(|b| b.is_ascii_digit() || b == b'.');
    let date = inner.contains(':') && inner.split_whitespace().count() >= 4;
    let caller = (inner.starts_with('T') || inner.starts_with('C'))
        && inner.len() > 1
        && inner[1..].bytes().all(|b| b.is_ascii_digit());
    ts || date || caller
}

/// What kind of bracket block `[…]` opens a line, for matching the prefix a
/// report's lines share: a task-table pid is never mistaken for a vendor's
/// block, nor the table's header or an arm32 frame address.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Block {
    /// Digits only: `[  31407]` (a task-table pid).
    Number,
    /// `[  pid  ]`, the task table's header.
    PidHeader,
    /// `[<c0411500>]`, a call-trace address.
    Address,
    /// Anything else: a timestamp, a caller id, a CPU, a vendor's tag.
    Other,
}

fn block_kind(inner: &str) -> Block {
    let t = inner.trim();
    if !t.is_empty() && t.bytes().all(|b| b.is_ascii_digit()) {
        Block::Number
    } else if t == "pid" {
        Block::PidHeader
    } else if t.starts_with('<') {
        Block::Address
    } else {
        Block::Other
    }
}

/// The bracket block that opens `s` (after blanks): its kind and the rest.
fn leading_block(s: &str) -> Option<(Block, &str)> {
    let s = s.trim_start().strip_prefix('[')?;
    let end = s.find(']')?;
    Some((block_kind(&s[..end]), &s[end + 1..]))
}

/// A report's own line prefix, learnt from its lines: the kinds of the
/// bracket blocks that precede the kernel's text, after the heads every
/// input may carry (syslog, `/dev/kmsg`, printk level).
type Shape = Vec<Block>;

/// Texts the kernel starts a report's lines with, wherever they come from.
const ANCHORS: [&str; 13] = [
    "CPU: ",
    "Hardware name: ",
    "Call Trace:",
    "Mem-Info:",
    "Tasks state (memory values in pages)",
    "oom-kill:",
    "memory: usage ",
    "Memory cgroup out of memory: ",
    "Out of memory: ",
    "Killed process ",
    "[  pid  ]",
    "[ pid ]",
    "Node 0 ",
];

/// At most this many bracket blocks make a prefix.
const MAX_PREFIX_BLOCKS: usize = 8;

/// The prefix shape of one line, if it is an anchor: the blocks before a
/// text the kernel starts lines with, or before the `invoked oom-killer`
/// header's task name.
fn anchor_shape(line: &str) -> Option<Shape> {
    let (_, _, mut s) = strip_heads(line);
    if !s.trim_start().starts_with('[') {
        return None;
    }
    let header = s.contains(" invoked oom-killer:");
    let mut shape = Shape::new();
    loop {
        let t = s.trim_start();
        if !shape.is_empty() && ANCHORS.iter().any(|a| t.starts_with(a)) {
            return Some(shape);
        }
        match leading_block(t) {
            Some((kind, rest)) if shape.len() < MAX_PREFIX_BLOCKS => {
                shape.push(kind);
                s = rest;
            }
            // The header's task name follows the prefix.
            _ => return (header && !shape.is_empty()).then_some(shape),
        }
    }
}

/// The prefix shapes a text's reports show on their anchor lines, the
/// longest first.
fn learn_shapes(raw: &[&str]) -> Vec<Shape> {
    let mut shapes: Vec<Shape> = Vec::new();
    for line in raw {
        if shapes.len() >= 16 {
            break;
        }
        if let Some(shape) = anchor_shape(line)
            && !shapes.contains(&shape)
        {
            shapes.push(shape);
        }
    }
    shapes.sort_by_key(|s| std::cmp::Reverse(s.len()));
    shapes
}

/// `s` without a prefix of this shape, if it opens with one.
fn strip_shape<'a>(mut s: &'a str, shape: &[Block]) -> Option<&'a str> {
    for want in shape {
        let (kind, rest) = leading_block(s)?;
        if kind != *want {
            return None;
        }
        s = rest;
    }
    Some(s)
}

/// Whether `s` starts with a syslog time (`Dec  1 19:50:01`) or an ISO
/// 8601 one (`2026-12-01T19:50:01`).
fn starts_with_log_time(s: &str) -> bool {
    const MONTHS: [&str; 12] = [
        "Jan ", "Feb ", "Mar ", "Apr ", "May ", "Jun ", "Jul ", "Aug ", "Sep ", "Oct ", "Nov ",
        "Dec ",
    ];
    let b = s.as_bytes();
    let clock = |t: &[u8]| {
        t.len() >= 8
            && t[2] == b':'
            && t[5] == b':'
            && [0, 1, 3, 4, 6, 7].iter().all(|&i| t[i].is_ascii_digit())
    };
    if MONTHS.iter().any(|m| s.starts_with(m)) {
        let rest = s[4..].trim_start();
        let day = rest.bytes().take_while(u8::is_ascii_digit).count();
        return (1..=2).contains(&day) && clock(rest[day..].trim_start().as_bytes());
    }
    b.len() >= 19
        && b[4] == b'-'
        && b[7] == b'-'
        && (b[10] == b'T' || b[10] == b' ')
        && b[..4].iter().all(u8::is_ascii_digit)
        && clock(&b[11..])
}

/// The heads any input may put before the kernel's text: mail quoting, a
/// syslog or journal head up to `kernel: `, a `/dev/kmsg` record prefix,
/// printk levels (`<4>`; `dmesg -r` adds the facility: `<14>` is user
/// space's). Returns whether there was one, the facility the line states
/// (`None`: it states none) and the rest.
fn strip_heads(line: &str) -> (bool, Option<u32>, &str) {
    let mut s = line.trim_start();
    let mut facility = None;
    // Mail quoting.
    while let Some(r) = s.strip_prefix('>') {
        s = r.trim_start();
    }
    // A syslog or journal line, from the kernel or not: "Dec  1 19:50:01
    // host …" or "2026-12-01T19:50:01.123+00:00 host …".
    let log_time = starts_with_log_time(s);
    let mut prefixed = log_time;
    if let Some((head, msg)) = s.split_once(';')
        && let Some(f) = kmsg_head_facility(head)
    {
        s = msg;
        prefixed = true;
        facility = Some(f);
    }
    // "host kernel: ": only in a head (a time, or one bracket block, and a
    // host name), never a task's name further on.
    if let Some(i) = s.find("kernel: ")
        && (log_time || s.starts_with('['))
        && s[..i].split_whitespace().count() <= 6
    {
        s = &s[i + 8..];
        prefixed = true;
    }
    let mut first = true;
    loop {
        s = s.trim_start();
        // printk level: "<4>"; "<14>": facility 1, level 6.
        if let Some(rest) = s.strip_prefix('<')
            && let Some(end) = rest.find('>')
            && (1..=3).contains(&end)
            && rest[..end].bytes().all(|b| b.is_ascii_digit())
        {
            if first && facility.is_none() {
                facility = rest[..end].parse::<u32>().ok().map(|p| p >> 3);
            }
            s = &rest[end + 1..];
            first = false;
            continue;
        }
        break;
    }
    (prefixed, facility, s)
}

/// The line without its prefixes, and whether it had one of the prefixes
/// a log tool adds (syslog/journal, kmsg, timestamp).
fn strip_prefix(line: &str) -> (bool, &str) {
    let (p, _, s) = strip_prefix_learnt(line, &[]);
    (p, s)
}

/// The line without its prefixes: the heads, then a prefix of one of the
/// `shapes` the report's own lines taught, else the known bracket forms.
/// Returns whether it had a prefix, the facility it states and the rest.
fn strip_prefix_learnt<'a>(line: &'a str, shapes: &[Shape]) -> (bool, Option<u32>, &'a str) {
    let (mut prefixed, facility, mut s) = strip_heads(line);
    if let Some(rest) = shapes.iter().find_map(|sh| strip_shape(s, sh)) {
        return (true, facility, rest.trim_start());
    }
    loop {
        s = s.trim_start();
        // printk level: "<4>".
        if let Some(rest) = s.strip_prefix('<')
            && let Some(end) = rest.find('>')
            && (1..=2).contains(&end)
            && rest[..end].bytes().all(|b| b.is_ascii_digit())
        {
            s = &rest[end + 1..];
            continue;
        }
        if !s.starts_with('[') {
            break;
        }
        let Some(end) = s.find(']') else { break };
        if !is_bracket_prefix(&s[1..end]) {
            break;
        }
        s = &s[end + 1..];
        prefixed = true;
    }
    if !prefixed && !s.starts_with('[') {
        // Console output of another program before the kernel's timestamp:
        // "Creating journal (131072 blocks): [   31.251333] mkfs.ext4 …".
        // Only near the start: console text before a timestamp is short,
        // and a long line of brackets must not cost a scan per bracket.
        // Never inside a line that opens with a bracket (a task-table
        // row, whose name may hold one).
        let mut from = 0;
        while from < 256
            && let Some(i) = s[from..].find('[')
        {
            let at = from + i;
            if let Some(end) = s[at..].find(']')
                && s[at + 1..at + end].contains('.')
                && is_bracket_prefix(&s[at + 1..at + end])
            {
                return (true, facility, s[at + end + 1..].trim_start());
            }
            from = at + 1;
        }
    }
    (prefixed, facility, s.trim_start())
}

/// The line without its syslog/journal/timestamp prefix.
fn body(line: &str) -> &str {
    strip_prefix(line).1
}

/// The input as (line number, message) pairs: prefixes stripped (the known
/// forms, and the shape the input's own anchor lines show), `/dev/kmsg`
/// continuation lines (` KEY=value`) dropped, lines whose prefix names a
/// facility other than the kernel's dropped, and lines a mail client
/// wrapped joined again.
pub fn messages(text: &str) -> Vec<(usize, String)> {
    let raw: Vec<&str> = text.lines().collect();
    let nonempty = raw.iter().filter(|l| !l.trim().is_empty()).count().max(1);
    let shapes = learn_shapes(&raw);
    let stripped: Vec<(bool, Option<u32>, &str)> = raw
        .iter()
        .map(|l| strip_prefix_learnt(l, &shapes))
        .collect();
    let prefixed = stripped.iter().filter(|(p, _, _)| *p).count();
    let records = raw
        .iter()
        .filter(|l| l.split_once(';').is_some_and(|(h, _)| is_kmsg_head(h)))
        .count();
    let kmsg = records * 2 > raw.iter().filter(|l| !l.starts_with(' ')).count();
    // Most lines carry a prefix: one that does not continues the line
    // before it, if that one had a prefix (a mail client wraps a long line
    // into two or three).
    let unwrap = prefixed * 10 >= nonempty * 3;
    let mut out: Vec<(usize, String)> = Vec::with_capacity(raw.len());
    let (mut last_prefixed, mut chain) = (false, 0);
    for (i, (&line, &(has_prefix, facility, body))) in raw.iter().zip(&stripped).enumerate() {
        if kmsg && line.starts_with(' ') {
            continue;
        }
        // A line whose prefix names another facility is user space's
        // (`echo '<2>…' > /dev/kmsg` logs as LOG_USER), never the kernel's.
        if facility.is_some_and(|f| f != KERNEL_FACILITY) {
            last_prefixed = false;
            continue;
        }
        if body.is_empty() {
            continue;
        }
        let continues = unwrap
            && !has_prefix
            && last_prefixed
            && chain < 3
            && !body.starts_with("-- ")
            && !body.starts_with('#')
            && !body.contains(" invoked oom-killer:");
        match out.last_mut() {
            Some((_, prev)) if continues => {
                prev.push(' ');
                prev.push_str(body);
                chain += 1;
            }
            _ => {
                out.push((i + 1, body.to_owned()));
                last_prefixed = has_prefix;
                chain = 0;
            }
        }
    }
    out
}

fn num<T: std::str::FromStr>(s: &str) -> Option<T> {
    s.trim().trim_end_matches("kB").trim().parse().ok()
}

/// `key:NkB` / `key=N` field inside a line.
fn field<'a>(line: &'a str, key: &str) -> Option<&'a str> {
    let i = line.find(key)? + key.len();
    let rest = &line[i..];
    let end = rest.find([',', ' ', '(', ')']).unwrap_or(rest.len());
    Some(&rest[..end])
}

/// The message of each kernel record of `/dev/kmsg`
/// (`prio,seq,usec,flags;message`), one per line; continuation lines
/// (` KEY=value`) and records user space wrote (any facility but the
/// kernel's) dropped.
pub fn kmsg_messages(records: &str) -> String {
    records
        .lines()
        .filter(|l| !l.starts_with(' '))
        .filter_map(|l| l.split_once(';'))
        .filter(|(head, _)| kmsg_head_facility(head) == Some(KERNEL_FACILITY))
        .map(|(_, m)| m)
        .collect::<Vec<_>>()
        .join("\n")
}

/// The header: `<comm> invoked oom-killer: gfp_mask=…, …`.
fn parse_header(r: &mut Report, line: &str, i: usize) {
    r.has_header = true;
    r.comm = Some(line[..i].trim().to_owned());
    let rest = &line[i..];
    r.gfp_mask = field(rest, "gfp_mask=0x").and_then(|h| u64::from_str_radix(h, 16).ok());
    if let Some(j) = rest.find("gfp_mask=0x") {
        let after = &rest[j..];
        if let (Some(open), Some(close)) = (after.find('('), after.find(')'))
            && open < close
            && !after[..open].contains(',')
        {
            r.gfp_flags = Some(after[open + 1..close].to_owned());
        }
    }
    r.order = field(rest, "order=").and_then(num);
    r.oom_score_adj = field(rest, "oom_score_adj=").and_then(num);
    r.oom_adj = field(rest, " oom_adj=").and_then(num);
}

/// The kernel line: `CPU: 1 UID: 0 PID: 31409 Comm: … Not tainted 6.18.44 #1 …`
/// or 2.6.32's `Pid: 2425, comm: mysqld Not tainted 2.6.32-431.el6.x86_64 #1`.
fn parse_kernel_line(r: &mut Report, line: &str) -> bool {
    let modern = line.starts_with("CPU: ") && line.contains(" Comm: ");
    let old = line.starts_with("Pid: ") && line.contains(" comm: ");
    if !(modern || old) || r.kernel.is_some() {
        return false;
    }
    r.pid = if modern {
        field(line, " PID: ").and_then(num)
    } else {
        field(line, "Pid: ").and_then(num)
    };
    // The release is the word before " #<build>", after the taint flags.
    let tainted = line
        .find("Not tainted ")
        .map(|i| i + 12)
        .or_else(|| line.find("Tainted: ").map(|i| i + 9))
        .unwrap_or(0);
    let tail = &line[tainted..];
    if let Some(h) = tail.find(" #") {
        r.kernel = tail[..h].split_whitespace().last().map(str::to_owned);
        r.kernel_build = Some(tail[h + 2..].trim().to_owned());
    } else if let Some(word) = tail.split_whitespace().last()
        && word.contains('.')
        && word.starts_with(|c: char| c.is_ascii_digit())
    {
        r.kernel = Some(word.to_owned());
    }
    true
}

/// The architecture the report's own lines show: register dumps and call
/// trace frames are per architecture; the release string often says it too.
fn sniff_arch(arch: &mut Option<String>, line: &str) {
    if arch.is_some() {
        return;
    }
    const MARKS: &[(&str, &str)] = &[
        ("RIP: 00", "x86_64"),
        ("entry_SYSCALL_64", "x86_64"),
        ("do_syscall_64", "x86_64"),
        ("asm_exc_page_fault", "x86_64"),
        ("x64_sys_call", "x86_64"),
        ("-amd64", "x86_64"),
        (".x86_64", "x86_64"),
        ("el0t_64_sync", "aarch64"),
        ("el0_svc", "aarch64"),
        ("el0_da", "aarch64"),
        ("do_el0_svc", "aarch64"),
        ("-arm64", "aarch64"),
        (".aarch64", "aarch64"),
        ("pstate: ", "aarch64"),
        ("(unwind_backtrace) from", "arm"),
        ("__dabt_usr", "arm"),
        ("ret_fast_syscall", "arm"),
        ("do_int80_syscall_32", "i386"),
        ("entry_INT80_32", "i386"),
        ("riscv_", "riscv64"),
        ("handle_exception+", "riscv64"),
        ("ppc64", "ppc64"),
        ("system_call_exception", "ppc64"),
        ("s390x", "s390x"),
    ];
    if let Some((_, a)) = MARKS.iter().find(|(m, _)| line.contains(m)) {
        *arch = Some((*a).to_owned());
    }
}

/// `… [Kk]ill process P (comm) score S or sacrifice child` / `or a child`,
/// and 3.10's `Kill process P (comm) sharing same memory`.
fn parse_kill_process(line: &str) -> Option<(i32, String, Option<u64>, bool)> {
    let after_message = KILL_MESSAGES
        .iter()
        .find_map(|m| line.strip_prefix(m)?.strip_prefix(": "));
    let rest = after_message.unwrap_or(line);
    let rest = rest
        .strip_prefix("Kill process ")
        .or_else(|| rest.strip_prefix("kill process "))?;
    let sp = rest.find(" (")?;
    let pid = rest[..sp].trim().parse().ok()?;
    let after = &rest[sp + 2..];
    let (close, sharing) = match after.rfind(") score ") {
        Some(c) => (c, false),
        None => (after.rfind(") sharing same memory")?, true),
    };
    let score = field(&after[close..], "score ").and_then(num);
    Some((pid, after[..close].to_owned(), score, sharing))
}

/// Finds every OOM report in `text`: each from its `invoked oom-killer`
/// header to its last line, and each `Killed process` line outside a
/// report as a report of its own (its header rate-limited or cut away).
pub fn parse_all(text: &str) -> Vec<Report> {
    parse_messages(messages(text))
}

/// The first OOM report among kernel messages as the kernel logged them,
/// one per line and with no prefix (the live `/dev/kmsg` reader's): no
/// prefix is looked for, so no task name can pass for one.
pub fn parse_kernel_messages<S: AsRef<str>>(lines: &[S]) -> Option<Report> {
    let msgs = lines
        .iter()
        .enumerate()
        .map(|(i, l)| (i + 1, l.as_ref().to_owned()));
    parse_messages(msgs).into_iter().find(|r| r.has_header)
}

/// Every OOM report among (line number, message) pairs.
fn parse_messages(msgs: impl IntoIterator<Item = (usize, String)>) -> Vec<Report> {
    let mut reports = Vec::new();
    let mut cur: Option<Report> = None;
    for (no, line) in msgs {
        // A task-table row is a row whatever its name holds.
        if let Some(r) = cur.as_mut()
            && r.in_table()
            && line.starts_with('[')
            && let Some(t) = parse_row(&line, &r.columns, no)
        {
            r.tasks.push(t);
            r.last_line = no;
            continue;
        }
        if let Some(i) = line.find(" invoked oom-killer:") {
            reports.extend(cur.take());
            let mut r = Report {
                first_line: no,
                last_line: no,
                ..Report::default()
            };
            parse_header(&mut r, &line, i);
            cur = Some(r);
            continue;
        }
        let kill = split_killed(&line).is_some();
        let select = parse_kill_process(&line);
        // A kill line after this report's kill opens a report of its own,
        // unless memory.oom.group announced more kills.
        let starts_new = match &cur {
            None => kill || select.as_ref().is_some_and(|s| !s.3),
            Some(r) => {
                (kill && !r.killed.is_empty() && r.oom_group.is_none())
                    || (select.as_ref().is_some_and(|s| !s.3)
                        && (r.selected.is_some() || !r.killed.is_empty()))
            }
        };
        if starts_new {
            reports.extend(cur.take());
            cur = Some(Report {
                first_line: no,
                last_line: no,
                ..Report::default()
            });
        }
        let Some(r) = cur.as_mut() else { continue };
        if feed(r, no, &line, select) {
            r.last_line = no;
        }
    }
    reports.extend(cur);
    reports
}

/// Parses the first OOM report in `text` (from its header to its last
/// `Killed process` line). Returns `None` without a header.
pub fn parse(text: &str) -> Option<Report> {
    parse_all(text).into_iter().find(|r| r.has_header)
}

/// One message into the report; whether it belonged to it.
fn feed(
    r: &mut Report,
    no: usize,
    line: &str,
    select: Option<(i32, String, Option<u64>, bool)>,
) -> bool {
    let done = !r.killed.is_empty() || r.selected.is_some();
    let in_table = r.in_table();
    if in_table
        && line.starts_with('[')
        && let Some(t) = parse_row(line, &r.columns, no)
    {
        r.tasks.push(t);
        return true;
    }
    sniff_arch(&mut r.arch, line);
    if line.contains("handle_mm_fault+") || line.contains("(handle_mm_fault)") {
        r.in_page_fault = true;
    }
    if parse_kernel_line(r, line) {
        return true;
    }
    // Its architecture hints were read above, with every line's.
    if line.starts_with("Hardware name: ") {
        return true;
    }
    let trimmed = line.trim();
    if trimmed == "..." || trimmed == "[...]" || trimmed == "<snip>" || trimmed == "…" {
        r.elided_lines.push(no);
        if in_table && !r.tasks.is_empty() {
            r.table_elided = true;
        }
        return true;
    }
    if let Some((pid, comm, score, sharing)) = select {
        // 3.10's `… sharing same memory` kills belong to the report; only
        // the selection line is kept.
        if !sharing && r.selected.is_none() {
            r.selected = Some(Selected {
                pid,
                comm,
                score,
                line: no,
            });
        }
        return true;
    }
    if let Some((message, rest)) = split_killed(line) {
        if let Some(k) = parse_killed(message, rest, no) {
            // memory.oom.group kills the victim again with its group.
            if !r.killed.iter().any(|o| o.pid == k.pid) {
                r.killed.push(k);
            }
            return true;
        }
        return false;
    }
    if let Some(rest) = line.strip_prefix("oom-kill:") {
        r.oom_kill = parse_oom_kill(rest);
        // Before 6.12 the summary follows the table; from 6.12 it precedes it.
        r.table_closed = !r.columns.is_empty();
        return true;
    }
    if let Some(i) = line.find(" are going to be killed due to memory.oom.group set") {
        r.oom_group = line[..i]
            .strip_prefix("Tasks in ")
            .map(|p| p.trim().to_owned());
        return true;
    }
    if let Some(i) = line.find("OOM victim ")
        && line.contains("is already exiting")
    {
        let rest = &line[i + 11..];
        if let Some(sp) = rest.find(" (")
            && let Ok(pid) = rest[..sp].trim().parse()
        {
            let comm = rest[sp + 2..]
                .rsplit_once(") is already")
                .map_or("", |(c, _)| c);
            r.already_exiting = Some((pid, comm.to_owned()));
        }
        return true;
    }
    if line.contains("Out of memory and no killable processes") {
        r.no_killable = true;
        return true;
    }
    if done {
        return false;
    }
    if let Some(rest) = line.strip_prefix("Task in ")
        && let Some((a, b)) = rest.split_once(" killed as a result of limit of ")
    {
        r.task_in = Some((a.trim().to_owned(), b.trim().to_owned()));
        return true;
    }
    if let Some(rest) = line.strip_prefix("memory: usage ") {
        r.memcg_limit_kb = field(rest, "limit ").and_then(num);
        return true;
    }
    if let Some(rest) = line.strip_prefix("memory+swap: usage ") {
        r.memsw_limit_kb = field(rest, "limit ").and_then(num);
        return true;
    }
    if let Some(rest) = line.strip_prefix("swap: usage ") {
        r.swap_limit_kb = field(rest, "limit ").and_then(num);
        return true;
    }
    if let Some(n) = line.strip_suffix(" pages RAM") {
        r.pages_ram = num(n);
        return true;
    }
    if let Some(n) = line.strip_suffix(" pages reserved") {
        r.pages_reserved = num(n);
        return true;
    }
    if let Some(v) = line.strip_prefix("Total swap = ") {
        r.total_swap_kb = num(v);
        return true;
    }
    if line.starts_with("Tasks state (memory values in pages)") {
        r.tasks_state_line = true;
        return true;
    }
    if line.starts_with("[  pid  ]") || line.starts_with("[ pid ]") {
        r.columns = line[line.find(']').map_or(0, |i| i + 1)..]
            .split_whitespace()
            .map(str::to_owned)
            .collect();
        return true;
    }
    if in_table {
        r.foreign_lines.push(no);
    }
    false
}

fn parse_row(line: &str, cols: &[String], no: usize) -> Option<TaskRow> {
    let close = line.find(']')?;
    let pid: i32 = line[1..close].trim().parse().ok()?;
    let rest = &line[close + 1..];
    // Every column but the last ("name") is a number; the name is the rest.
    let numeric = cols.len().checked_sub(1)?;
    let mut it = rest.split_whitespace();
    let mut values = Vec::with_capacity(numeric);
    for _ in 0..numeric {
        let v = it.next()?.parse::<i64>().ok()?;
        // No machine has 2^50 pages: such a "row" is something else.
        if v.unsigned_abs() > 1 << 50 {
            return None;
        }
        values.push(v);
    }
    let name = it.collect::<Vec<_>>().join(" ");
    // The last column is the name, whatever the header calls it.
    let get = |col: &str| {
        cols.iter()
            .position(|c| c == col)
            .and_then(|i| values.get(i).copied())
    };
    let pages = |col: &str| get(col).and_then(|v| u64::try_from(v).ok());
    let adj = |col: &str| get(col).and_then(|v| i16::try_from(v).ok());
    Some(TaskRow {
        pid,
        uid: get("uid").and_then(|v| u32::try_from(v).ok())?,
        tgid: get("tgid").and_then(|v| i32::try_from(v).ok())?,
        total_vm_pages: pages("total_vm")?,
        rss_pages: pages("rss")?,
        rss_anon_pages: pages("rss_anon"),
        rss_file_pages: pages("rss_file"),
        rss_shmem_pages: pages("rss_shmem"),
        pgtables_bytes: pages("pgtables_bytes"),
        nr_ptes: pages("nr_ptes"),
        nr_pmds: pages("nr_pmds"),
        swapents: pages("swapents"),
        oom_score_adj: adj("oom_score_adj"),
        oom_adj: adj("oom_adj"),
        line: no,
        name,
    })
}

/// The `oom-kill:` fields. `mems_allowed` and cpuset names can hold commas,
/// so the known keys are looked up in order rather than split on commas.
fn parse_oom_kill(rest: &str) -> Vec<(String, String)> {
    const KEYS: [&str; 9] = [
        "constraint=",
        ",nodemask=",
        ",cpuset=",
        ",mems_allowed=",
        ",oom_memcg=",
        ",task_memcg=",
        ",task=",
        ",pid=",
        ",uid=",
    ];
    let mut out = Vec::new();
    let mut positions: Vec<(usize, &str)> = KEYS
        .iter()
        .filter_map(|k| rest.find(k).map(|i| (i, *k)))
        .collect();
    positions.sort();
    for (n, (i, k)) in positions.iter().enumerate() {
        let start = i + k.len();
        let end = positions.get(n + 1).map_or(rest.len(), |(j, _)| *j);
        let key = k.trim_start_matches(',').trim_end_matches('=');
        let value = rest[start..end.max(start)].trim();
        // ",global_oom" sits where oom_memcg would.
        let value = value.strip_suffix(",global_oom").unwrap_or(value);
        out.push((key.to_owned(), value.to_owned()));
    }
    if rest.contains(",global_oom") {
        out.push(("global_oom".into(), "true".into()));
    }
    out
}

/// A lone `…: Killed process N (comm) …` line (no prefix), e.g. a
/// `memory.oom.group` member killed after the report.
pub fn killed_line(line: &str) -> Option<Killed> {
    kernel_killed_line(body(line))
}

/// A kernel message (no prefix) that is a `Killed process` line.
pub fn kernel_killed_line(message: &str) -> Option<Killed> {
    let (m, rest) = split_killed(message)?;
    parse_killed(m, rest, 0)
}

/// The messages the kernel puts before `: Killed process ` and `: Kill
/// process ` (`oom_kill_process` callers, 2.6.32 – 6.18).
const KILL_MESSAGES: [&str; 3] = [
    "Out of memory",
    "Memory cgroup out of memory",
    "Out of memory (oom_kill_allocating_task)",
];

/// A kill line, told by its structure: a message that starts with
/// `Killed process ` or with one of the kernel's [`KILL_MESSAGES`] and
/// `: Killed process `; a task-table row whose task is named `Killed
/// process ` is none. Returns the message before and the text after.
pub fn split_killed(message: &str) -> Option<(&str, &str)> {
    if let Some(rest) = message.strip_prefix("Killed process ") {
        return Some(("", rest));
    }
    let (m, rest) = message.split_once(": Killed process ")?;
    KILL_MESSAGES.contains(&m).then_some((m, rest))
}

/// After `Killed process `: `N (comm) total-vm:…` (3.x+), `N (comm), UID N,
/// total-vm:…` (RHEL 7), `N, UID N, (comm) total-vm:…` (RHEL 6),
/// `N (comm) vsz:…` (2.6.32).
fn parse_killed(message: &str, rest: &str, no: usize) -> Option<Killed> {
    let digits = rest.bytes().take_while(u8::is_ascii_digit).count();
    let pid = rest[..digits].parse().ok()?;
    let after_pid = &rest[digits..];
    let open = after_pid.find('(')?;
    let after = &after_pid[open + 1..];
    let close = [") total-vm:", ") vsz:", "), UID", ") UID"]
        .iter()
        .filter_map(|m| after.find(m))
        .min()
        .or_else(|| after.rfind(')'))?;
    let tail = &after[close..];
    Some(Killed {
        message: message.trim().trim_end_matches(':').trim().to_owned(),
        pid,
        comm: after[..close].to_owned(),
        anon_rss_kb: field(tail, "anon-rss:").and_then(num),
        file_rss_kb: field(tail, "file-rss:").and_then(num),
        shmem_rss_kb: field(tail, "shmem-rss:").and_then(num),
        line: no,
    })
}

/// The kernel version whose rules apply: the release on the kernel line,
/// or Debian's upstream version after `#` (`6.1.0-56-cloud-amd64 #1 SMP
/// Debian 6.1.192-2`: the package is 6.1.192).
pub fn stated_version(r: &Report) -> Option<KernelVersion> {
    crate::model::version::running_version(r.kernel.as_deref()?, r.kernel_build.as_deref(), None)
        .ok()
        .map(|rv| rv.version)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::replay::analysis::{ReplayError, replay};

    #[test]
    fn prefixes_are_skipped() {
        assert_eq!(
            body("May 26 06:17:40 mr-fox kernel: memory: usage 1kB"),
            "memory: usage 1kB"
        );
        assert_eq!(
            body("[  246.610518][ T1778] random invoked"),
            "random invoked"
        );
        assert_eq!(
            body("[Fri Sep 25 15:29:47 2020] madvise09 invoked"),
            "madvise09 invoked"
        );
        assert_eq!(
            body("     [41369.848195] [ 128825]  1000"),
            "[ 128825]  1000"
        );
        assert_eq!(
            body("[ 5503.494263] [  31407]     0 31407"),
            "[  31407]     0 31407"
        );
        assert_eq!(body("<4>[  12.5] x invoked"), "x invoked");
        assert_eq!(body("> > [  12.5] x"), "x");
        assert_eq!(body("6,1234,5503494000,-;x invoked"), "x invoked");
        assert_eq!(
            body("Creating journal (131072 blocks): [   31.251333] mkfs.ext4 invoked"),
            "mkfs.ext4 invoked"
        );
        // A task-table pid, an arm32 frame and a 2.6.32 row keep their brackets.
        assert_eq!(body("[ 1234]  0 1234"), "[ 1234]  0 1234");
        assert_eq!(
            body("[<c0411500>] (show_stack)"),
            "[<c0411500>] (show_stack)"
        );
    }

    /// A report from the lab's own 6.18.44 (dmesg, 6.12+ table layout).
    const LAB: &str = "[ 5503.494000] oomwatch-hog invoked oom-killer: gfp_mask=0xcc0(GFP_KERNEL), order=0, oom_score_adj=0
[ 5503.494010] CPU: 1 UID: 0 PID: 31409 Comm: oomwatch-hog Not tainted 6.18.44-fc-v782 #1 PREEMPT(voluntary)
[ 5503.494100] memory: usage 65536kB, limit 65536kB, failcnt 0
[ 5503.494101] memory+swap: usage 65536kB, limit 65536kB, failcnt 0
[ 5503.494259] Tasks state (memory values in pages):
[ 5503.494260] [  pid  ]   uid  tgid total_vm      rss rss_anon rss_file rss_shmem pgtables_bytes swapents oom_score_adj name
[ 5503.494263] [  31407]     0 31407     5892     5578     5120      458         0    94208        0             0 oomwatch-hog
[ 5503.494268] [  31408]     0 31408     7428     7140     6688      452         0   106496        0             0 oomwatch-hog
[ 5503.494270] [  31409]     0 31409     4100     3500     3100      400         0    80000        0             0 CPU 11/KVM
[ 5503.494275] oom-kill:constraint=CONSTRAINT_MEMCG,nodemask=(null),cpuset=/,mems_allowed=0,2,oom_memcg=/oomwatch-test-1,task_memcg=/oomwatch-test-1,task=oomwatch-hog,pid=31408,uid=0
[ 5503.494300] Memory cgroup out of memory: Killed process 31408 (oomwatch-hog) total-vm:29712kB, anon-rss:26752kB, file-rss:1808kB, shmem-rss:0kB, UID:0 pgtables:104kB oom_score_adj:0
";

    #[test]
    fn parses_the_lab_format() {
        let r = parse(LAB).unwrap();
        assert_eq!(r.comm.as_deref(), Some("oomwatch-hog"));
        assert_eq!(
            (r.gfp_mask, r.order, r.oom_score_adj),
            (Some(0xcc0), Some(0), Some(0))
        );
        assert_eq!(r.gfp_flags.as_deref(), Some("GFP_KERNEL"));
        assert_eq!(r.kernel.as_deref(), Some("6.18.44-fc-v782"));
        assert_eq!(r.pid, Some(31409));
        assert_eq!(r.memcg_limit_kb, Some(65_536));
        assert_eq!(r.tasks.len(), 3);
        assert_eq!(r.tasks[1].rss_anon_pages, Some(6_688));
        assert_eq!(r.tasks[2].name, "CPU 11/KVM");
        assert_eq!(r.oom_kill_field("mems_allowed"), Some("0,2"));
        assert_eq!(r.oom_kill_field("oom_memcg"), Some("/oomwatch-test-1"));
        assert_eq!(r.oom_kill_field("pid"), Some("31408"));
        assert_eq!(r.killed[0].pid, 31_408);
        assert_eq!(r.killed[0].anon_rss_kb, Some(26_752));
        assert_eq!(r.killed[0].message, "Memory cgroup out of memory");
        assert_eq!((r.first_line, r.last_line), (1, 11));
        let rp = replay(&r).unwrap();
        assert!(rp.totalpages_exact);
        assert_eq!(rp.totalpages, 16_384);
        assert!(rp.agree, "{rp:?}");
    }

    #[test]
    fn kmsg_records() {
        let raw = "6,1234,5503494000,-;oomwatch-hog invoked oom-killer: gfp_mask=0xcc0(GFP_KERNEL), order=0, oom_score_adj=0\n SUBSYSTEM=x\n4,1235,5503494300,-;Memory cgroup out of memory: Killed process 31408 (oomwatch-hog) total-vm:29712kB, anon-rss:26752kB, file-rss:1808kB, shmem-rss:0kB, UID:0 pgtables:104kB oom_score_adj:0\n";
        let r = parse(&kmsg_messages(raw)).unwrap();
        assert_eq!(r.killed[0].pid, 31_408);
        // The raw records parse the same.
        let all = parse_all(raw);
        assert_eq!(all.len(), 1);
        assert_eq!(all[0].killed[0].pid, 31_408);
    }

    #[test]
    fn no_header_no_report() {
        assert_eq!(parse("nothing here\n"), None);
        assert!(parse_all("nothing here\n\0\u{1}binary").is_empty());
        let r =
            parse("x invoked oom-killer: gfp_mask=0xcc0(GFP_KERNEL), order=0, oom_score_adj=0\n")
                .unwrap();
        assert_eq!(replay(&r).unwrap_err(), ReplayError::NoVersion);
    }

    #[test]
    fn every_report_and_lone_kills() {
        let mut text = LAB.to_owned();
        text.push_str("[ 5510.1] Memory cgroup out of memory: Killed process 4242 (worker) total-vm:1kB, anon-rss:1kB, file-rss:0kB, shmem-rss:0kB\n");
        text.push_str(&LAB.replace("31408", "31508"));
        let all = parse_all(&text);
        assert_eq!(all.len(), 3);
        assert!(all[0].has_header && !all[1].has_header && all[2].has_header);
        assert_eq!(all[1].killed[0].pid, 4242);
        assert_eq!(all[2].killed[0].pid, 31_508);
        assert_eq!(all[2].first_line, 13);
    }

    #[test]
    fn old_forms() {
        // 3.10 (RHEL 7): no flag names, nr_ptes, the score line, "), UID".
        let text = "grep invoked oom-killer: gfp_mask=0xd0, order=0, oom_score_adj=600
[ pid ]   uid  tgid total_vm      rss nr_ptes swapents oom_score_adj name
[22040]     0 22040    51698     1729      57       10             0 su
[25892]  9730 25892   224814   130523     268        0           600 grep
Memory cgroup out of memory: Kill process 25892 (grep) score 710 or sacrifice child
Killed process 25892 (grep), UID 9730, total-vm:899256kB, anon-rss:521228kB, file-rss:864kB, shmem-rss:0kB
";
        let r = parse(text).unwrap();
        assert_eq!(r.gfp_flags, None);
        assert_eq!(r.tasks[1].nr_ptes, Some(268));
        assert_eq!(r.tasks[1].pgtables_bytes, None);
        let s = r.selected.as_ref().unwrap();
        assert_eq!(
            (s.pid, s.comm.as_str(), s.score),
            (25_892, "grep", Some(710))
        );
        assert_eq!(r.killed[0].comm, "grep");
        assert_eq!(r.killed[0].rss_kb(), Some(522_092));
        // 2.6.32 (RHEL 6): oom_adj in the header and table, "N, UID N, (comm)".
        let text = "Pid: 2425, comm: mysqld Not tainted 2.6.32-431.el6.x86_64 #1
mysqld invoked oom-killer: gfp_mask=0x201da, order=0, oom_adj=0, oom_score_adj=0
Pid: 2425, comm: mysqld Not tainted 2.6.32-431.el6.x86_64 #1
[ pid ]   uid  tgid total_vm      rss cpu oom_adj oom_score_adj name
[ 2425]    27  2425   600105   259654   1       0             0 mysqld
[ 2500]     0  2500    10000      100   0     -17         -1000 sshd
Out of memory: Kill process 2425 (mysqld) score 201 or sacrifice child
Killed process 2425, UID 27, (mysqld) total-vm:2400420kB, anon-rss:1038616kB, file-rss:64kB
";
        let r = parse(text).unwrap();
        assert_eq!((r.oom_adj, r.oom_score_adj), (Some(0), Some(0)));
        assert_eq!(r.kernel.as_deref(), Some("2.6.32-431.el6.x86_64"));
        assert_eq!(r.pid, Some(2425));
        assert_eq!(r.tasks[1].oom_adj, Some(-17));
        assert_eq!(r.tasks[1].adj(), -1000);
        assert_eq!(r.killed[0].pid, 2425);
        assert_eq!(r.killed[0].comm, "mysqld");
        assert_eq!(r.arch.as_deref(), Some("x86_64"));
    }

    /// Other programs' syslog lines are lines of their own, never the
    /// continuation of a kernel line.
    #[test]
    fn foreign_syslog_lines_are_not_continuations() {
        assert!(starts_with_log_time("Dec  1 19:50:01 host systemd[1]: x"));
        assert!(starts_with_log_time(
            "2026-02-08T00:40:07.136582+00:00 web2 systemd[1]: x"
        ));
        assert!(!starts_with_log_time("Decided 1 thing"));
        assert!(!starts_with_log_time("[  12.5] x"));
        let text = "Dec  1 19:50:01 h kernel: x invoked oom-killer: gfp_mask=0xcc0(GFP_KERNEL), order=0, oom_score_adj=0
Dec  1 19:50:01 h kernel: [  pid  ]   uid  tgid total_vm      rss pgtables_bytes swapents oom_score_adj name
Dec  1 19:50:01 h kernel: [     10]     0    10      100       50    4096        0             0 a
Dec  1 19:50:01 h systemd[1]: Started something.
Dec  1 19:50:01 h kernel: [     11]     0    11      100       60    4096        0             0 b
Dec  1 19:50:01 h kernel: Out of memory: Killed process 11 (b) total-vm:400kB, anon-rss:240kB, file-rss:0kB, shmem-rss:0kB
";
        let r = parse(text).unwrap();
        assert_eq!(r.tasks[0].name, "a");
        assert_eq!(r.tasks.len(), 2);
        assert_eq!(r.foreign_lines, vec![4]);
    }

    #[test]
    fn wrapped_lines_are_joined() {
        let text = "Creating journal (131072 blocks): [   31.251333] mkfs.ext4 invoked
oom-killer: gfp_mask=0x101cc0(GFP_USER|__GFP_WRITE), order=0,
oom_score_adj=0
[   31.261172] CPU: 0 PID: 397 Comm: mkfs.ext4 Not tainted
5.7.0-rc6-next-20200518 #1
[   31.648691] [  pid  ]   uid  tgid total_vm      rss pgtables_bytes
swapents oom_score_adj name
[   31.657367] [    183]     0   183     7370     1082    36864
0             0 systemd-journal
[   31.910012] Out of memory: Killed process 183 (systemd-journal)
total-vm:72804kB, anon-rss:2948kB, file-rss:7568kB, shmem-rss:0kB,
";
        let r = parse(text).unwrap();
        assert_eq!(r.comm.as_deref(), Some("mkfs.ext4"));
        assert_eq!(r.oom_score_adj, Some(0));
        assert_eq!(r.kernel.as_deref(), Some("5.7.0-rc6-next-20200518"));
        assert_eq!(r.tasks.len(), 1);
        assert_eq!(r.tasks[0].name, "systemd-journal");
        assert_eq!(r.killed[0].anon_rss_kb, Some(2948));
    }

    /// Found by `cargo xtask fuzz`: a header whose last column is a known
    /// one (here `uid`) indexed past the row's numbers.
    #[test]
    fn a_header_ending_in_a_numeric_column() {
        let text = "x invoked oom-killer: gfp_mask=0xcc0(GFP_KERNEL), order=0, oom_score_adj=0
[  pid  ]   tgid total_vm rss uid
[     10]     10     100   50 a
";
        let r = parse(text).unwrap();
        assert!(r.tasks.is_empty());
    }

    #[test]
    fn debian_package_version() {
        let r = parse("x invoked oom-killer: gfp_mask=0xcc0(GFP_KERNEL), order=0, oom_score_adj=0\nCPU: 0 PID: 620 Comm: exe Not tainted 6.1.0-56-cloud-amd64 #1  Debian 6.1.192-2\n").unwrap();
        assert_eq!(r.kernel.as_deref(), Some("6.1.0-56-cloud-amd64"));
        assert_eq!(stated_version(&r).unwrap().to_string(), "6.1.192");
    }

    #[test]
    fn foreign_and_elided_lines() {
        let text = "[1.0] x invoked oom-killer: gfp_mask=0xcc0(GFP_KERNEL), order=0, oom_score_adj=0
[1.1] ...
[1.2] [  pid  ]   uid  tgid total_vm      rss pgtables_bytes swapents oom_score_adj name
[1.3] [    10]     0    10      100       50    4096        0             0 a
[1.4] systemd-journald[648]: Compressed data object 720 -> 393 using ZSTD
[1.5] [    11]     0    11      100       60    4096        0             0 b
[1.6] oom-kill:constraint=CONSTRAINT_MEMCG,nodemask=(null),cpuset=/,mems_allowed=0,oom_memcg=/a,task_memcg=/a,task=b,pid=11,uid=0
[1.7] Memory cgroup out of memory: Killed process 11 (b) total-vm:400kB, anon-rss:240kB, file-rss:0kB, shmem-rss:0kB
";
        let r = parse(text).unwrap();
        assert_eq!(r.tasks.len(), 2);
        assert_eq!(r.foreign_lines, vec![5]);
        assert_eq!(r.elided_lines, vec![2]);
        assert!(!r.table_elided);
    }

    /// A real report: this lab's 6.18 kernel, three hogs in a 64 MiB memcg.
    const THREE_HOGS: &str = include_str!(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/tests/fixtures/host-reports/x86_64-6.18.44-fc-v669-three-hogs.log"
    ));

    /// `text` with the first two task-table rows' names replaced by `name`
    /// (the victim keeps its own).
    fn rename_rows(text: &str, name: &str) -> String {
        let mut n = 0;
        text.lines()
            .map(|l| {
                if n < 2 && l.trim_end().ends_with("0 oomwatch-hog") && l.contains("]     0 ") {
                    n += 1;
                    format!("{}{name}", l.strip_suffix("oomwatch-hog").unwrap())
                } else {
                    l.to_owned()
                }
            })
            .map(|l| l + "\n")
            .collect()
    }

    /// Task names that look like the kernel's own lines or a terminal's
    /// commands, each within the 15 bytes of a comm.
    const HOSTILE_NAMES: [&str; 9] = [
        "Killed process ",
        "Out of memory: ",
        "\u{1b}[2J\u{1b}[H",
        "kernel: x",
        "[1.5] x",
        "handle_mm_fault+",
        "el0_svc",
        "CPU: 1 Comm: x",
        "Kill process 1 ",
    ];

    /// The parse of `r` with every task named as in `plain`.
    fn with_names_of(mut r: Report, plain: &Report) -> Report {
        for (t, p) in r.tasks.iter_mut().zip(&plain.tasks) {
            t.name.clone_from(&p.name);
        }
        r
    }

    /// A task-table row is a row whatever its task's name holds: the
    /// report parses as it does with plain names, from a file and from the
    /// live reader's messages.
    #[test]
    fn hostile_task_names_do_not_change_the_parse() {
        let plain = parse(THREE_HOGS).unwrap();
        assert_eq!(plain.tasks.len(), 3);
        let live_lines = |text: &str| -> Vec<String> {
            text.lines()
                .filter(|l| !l.starts_with('#'))
                .map(str::to_owned)
                .collect()
        };
        let live_plain = parse_kernel_messages(&live_lines(THREE_HOGS)).unwrap();
        for name in HOSTILE_NAMES {
            let text = rename_rows(THREE_HOGS, name);
            let r = parse(&text).unwrap_or_else(|| panic!("{name:?}: no report"));
            assert_eq!(r.tasks[0].name, name.trim(), "{name:?}");
            assert_eq!(with_names_of(r, &plain), plain, "{name:?}");
            let live = parse_kernel_messages(&live_lines(&text)).unwrap();
            assert_eq!(with_names_of(live, &live_plain), live_plain, "{name:?}");
            // Behind a dmesg timestamp too.
            let stamped: String = text
                .lines()
                .filter(|l| !l.starts_with('#'))
                .map(|l| format!("[ 5503.494263] {l}\n"))
                .collect();
            let r = parse(&stamped).unwrap();
            assert_eq!(r.tasks.len(), 3, "{name:?}");
            assert_eq!(r.killed[0].pid, 27_156, "{name:?}");
            assert_eq!(r.arch.as_deref(), Some("x86_64"), "{name:?}");
        }
    }

    /// The live reader cuts a report at its kill line, not at a row whose
    /// task is named like one.
    #[test]
    fn the_live_report_is_cut_at_the_kill_line_not_a_row() {
        let text = rename_rows(THREE_HOGS, "Killed process ");
        let mut a = crate::replay::kmsg::ReportAssembler::default();
        let mut done = Vec::new();
        for l in text.lines().filter(|l| !l.starts_with('#')) {
            done.extend(a.push(l));
        }
        let [crate::replay::kmsg::Assembled::Report(r)] = &done[..] else {
            panic!("one report: {done:?}")
        };
        assert_eq!(r.tasks.len(), 3);
        assert_eq!(r.killed[0].pid, 27_156);
        assert_eq!(r.oom_kill_field("pid"), Some("27156"));
    }

    #[test]
    fn kill_lines_by_structure() {
        assert!(split_killed("Killed process 5 (x) total-vm:1kB").is_some());
        assert_eq!(
            split_killed("Memory cgroup out of memory: Killed process 5 (x)"),
            Some(("Memory cgroup out of memory", "5 (x)"))
        );
        assert!(
            split_killed("Out of memory (oom_kill_allocating_task): Killed process 5 (x)")
                .is_some()
        );
        assert!(
            split_killed("[  27154]     0 27154  3846  3616  69632  0  0 Killed process ")
                .is_none()
        );
        assert!(split_killed("worker: Killed process 5 (x)").is_none());
        assert!(
            parse_kill_process("Out of memory: Kill process 5 (x) score 9 or sacrifice child")
                .is_some()
        );
        assert!(parse_kill_process("[ 5] 0 5 1 1 0 0 Kill process 1 (x) score 9").is_none());
    }

    /// Vendor kernels put their own blocks before every line: the parser
    /// learns them from the report's anchor lines (`CPU: `, `Call Trace:`,
    /// the table's header, the header's task name) and the report parses as
    /// it does bare.
    #[test]
    fn vendor_prefixes_are_learnt_from_the_report() {
        let bare = parse(THREE_HOGS).unwrap();
        let body: Vec<&str> = THREE_HOGS.lines().collect();
        for prefix in [
            "[Tue Jan  2 03:04:05 2024] [cpu3] [pid 77] ",
            "<6>[ 12.345][  C1] [  foo] ",
            "Jan  2 03:04:05 node-7 kernel: [ 9.876543][node:a1][ssd-0x3] ",
            "[ 123.456789][ T1234] [ 17] ",
        ] {
            let text: String = body
                .iter()
                .map(|l| {
                    if l.starts_with('#') {
                        format!("{l}\n")
                    } else {
                        format!("{prefix}{l}\n")
                    }
                })
                .collect();
            let r = parse(&text).unwrap_or_else(|| panic!("{prefix:?}: no report"));
            assert_eq!(r, bare, "{prefix:?}");
            // Hostile names behind a vendor prefix.
            let hostile = rename_rows(&text, "[cpu3] x");
            let r = parse(&hostile).unwrap();
            assert_eq!(r.tasks[0].name, "[cpu3] x", "{prefix:?}");
            assert_eq!(with_names_of(r, &bare), bare, "{prefix:?}");
        }
    }

    /// `/dev/kmsg` records user space wrote (`echo '<2>…' > /dev/kmsg`
    /// logs as facility 1, LOG_USER) are no kernel lines, live or saved;
    /// neither are `dmesg -r` lines whose `<N>` names another facility.
    #[test]
    fn user_space_records_are_not_the_kernels() {
        let forged = "Memory cgroup out of memory: Killed process 4242 (forged) total-vm:1kB, anon-rss:1kB, file-rss:0kB, shmem-rss:0kB";
        let raw = format!(
            "6,1234,5503494000,-;oomwatch-hog invoked oom-killer: gfp_mask=0xcc0(GFP_KERNEL), order=0, oom_score_adj=0\n\
             10,1235,5503494100,-;{forged}\n\
             4,1236,5503494300,-;Memory cgroup out of memory: Killed process 31408 (oomwatch-hog) total-vm:29712kB, anon-rss:26752kB, file-rss:1808kB, shmem-rss:0kB, UID:0 pgtables:104kB oom_score_adj:0\n"
        );
        let live = kmsg_messages(&raw);
        assert!(!live.contains("forged"), "{live}");
        assert_eq!(live.lines().count(), 2);
        let all = parse_all(&raw);
        assert_eq!(all.len(), 1);
        assert_eq!(all[0].killed.len(), 1);
        assert_eq!(all[0].killed[0].pid, 31_408);
        // A forged report alone is no report.
        assert!(parse_all(&format!("12,1,1,-;{forged}\n")).is_empty());
        // dmesg -r: <14> is user.info, <6> and <3> the kernel's.
        assert!(parse_all(&format!("<14>[  1.0] {forged}\n")).is_empty());
        assert_eq!(parse_all(&format!("<3>[  1.0] {forged}\n")).len(), 1);
        // Without a facility (plain dmesg, a journal) a line is taken as
        // the kernel's.
        assert_eq!(parse_all(&format!("[  1.0] {forged}\n")).len(), 1);
    }
}
