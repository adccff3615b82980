//! What the selftest watches while its scenarios run: the `oom:mark_victim`
//! ring buffer (and, where they attach, the kernel's own OOM functions),
//! loaded as the daemon loads them, and the kernel's log on `/dev/kmsg`,
//! cut into reports and parsed by `replay`. Each degrades to a reason.

use std::{
    sync::mpsc,
    time::{Duration, Instant},
};

use anyhow::Context as _;

use super::cgroup;
use crate::{
    daemon::kernel_scan::ScanAssembler,
    ebpf::{Batch, Degraded, Probes, Victim},
    replay::{
        KernelReport,
        kmsg::{Assembled, ReportAssembler, follow_kmsg_lines},
        parse::{Killed, killed_line},
    },
};

/// One thing seen.
enum Seen {
    Batch(Batch),
    /// A `Killed process` line (never rate-limited by the kernel).
    Kill(Killed),
    /// A whole report, replayed once.
    Report(Box<KernelReport>),
}

/// The selftest's observers and everything they have seen so far.
pub struct Observers {
    /// Runs the ring buffer's reader and the signal handler.
    _rt: tokio::runtime::Runtime,
    rx: mpsc::Receiver<Seen>,
    _probes: Option<Probes>,
    /// Why eBPF's victims are unavailable (None: they are seen).
    pub ebpf_unavailable: Option<String>,
    /// Optional probes that are off, with their reasons.
    pub degraded: Vec<Degraded>,
    /// Why the kernel's log is unavailable.
    pub kmsg_unavailable: Option<String>,
    /// Why the kernel's own points are unavailable (no hook on
    /// `oom_badness` / `oom_kill_process`).
    pub hooks_unavailable: Option<String>,
    pub victims: Vec<Victim>,
    pub kills: Vec<Killed>,
    pub reports: Vec<KernelReport>,
    pub scans: ScanAssembler,
}

impl Observers {
    /// Loads the probes (as `oomwatch run` does, without run-time
    /// statistics and with the hot programs detached), follows `/dev/kmsg`
    /// from its end, and removes the selftest's cgroups on SIGINT/SIGTERM.
    pub fn start() -> anyhow::Result<Self> {
        let rt = tokio::runtime::Runtime::new().context("start the tokio runtime")?;
        let (tx, rx) = mpsc::channel();
        rt.spawn(async {
            let Ok(mut term) =
                tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
            else {
                return;
            };
            tokio::select! {
                _ = tokio::signal::ctrl_c() => {}
                _ = term.recv() => {}
            }
            let _held = cgroup::remove_all_live();
            eprintln!("oomwatch selftest: interrupted; its memory cgroups are removed");
            std::process::exit(130);
        });
        let (probes, ebpf_unavailable, degraded, hooks_unavailable) = {
            let _enter = rt.enter();
            match load_probes(tx.clone(), &rt) {
                Ok(p) => {
                    let hooks = hooks_unavailable(&p);
                    let degraded = p.degraded.clone();
                    (Some(p), None, degraded, hooks)
                }
                Err(e) => {
                    let why = format!("{e:#}");
                    (None, Some(why.clone()), Vec::new(), Some(why))
                }
            }
        };
        let kmsg_unavailable = follow_kmsg(tx).err().map(|e| format!("{e:#}"));
        Ok(Observers {
            _rt: rt,
            rx,
            _probes: probes,
            ebpf_unavailable,
            degraded,
            kmsg_unavailable,
            hooks_unavailable,
            victims: Vec::new(),
            kills: Vec::new(),
            reports: Vec::new(),
            scans: ScanAssembler::default(),
        })
    }

    /// Takes in what arrives until `until`.
    pub fn pump(&mut self, until: Instant) {
        loop {
            let left = until.saturating_duration_since(Instant::now());
            match self.rx.recv_timeout(left) {
                Ok(Seen::Batch(b)) => {
                    for ev in &b.kernel {
                        self.scans.push(ev);
                    }
                    self.victims.extend(b.victims);
                }
                Ok(Seen::Kill(k)) => self.kills.push(k),
                Ok(Seen::Report(r)) => self.reports.push(*r),
                Err(_) => return,
            }
            if Instant::now() >= until {
                return;
            }
        }
    }

    /// As [`Observers::pump`], for `d`.
    pub fn pump_for(&mut self, d: Duration) {
        self.pump(Instant::now() + d)
    }
}

/// Loads and attaches the probes and forwards the ring buffer's batches.
fn load_probes(tx: mpsc::Sender<Seen>, rt: &tokio::runtime::Runtime) -> anyhow::Result<Probes> {
    let mut probes = Probes::load_with(&crate::ebpf::LoadOptions {
        no_run_stats: true,
        ..Default::default()
    })?;
    // Page allocations and user faults are not judged here.
    probes
        .set_hot_attached(false)
        .context("detach the hot programs")?;
    let mut stream = probes.victims().context("open the ring buffer")?;
    rt.spawn(async move {
        while let Ok(batch) = stream.next_batch().await {
            if tx.send(Seen::Batch(batch)).is_err() {
                return;
            }
        }
    });
    Ok(probes)
}

/// Why the kernel's own points cannot be read: the hooks on `oom_badness`
/// and `oom_kill_process` that did not attach, with the kernel's reasons.
fn hooks_unavailable(p: &Probes) -> Option<String> {
    let missing: Vec<String> = p
        .kernel_hooks
        .iter()
        .filter(|h| matches!(h.function, "oom_badness" | "oom_kill_process") && h.path.is_none())
        .map(|h| {
            format!(
                "{}: {}",
                h.function,
                h.reason.as_deref().unwrap_or("not hooked")
            )
        })
        .collect();
    let hooked = p
        .kernel_hooks
        .iter()
        .any(|h| h.function == "oom_kill_process" && h.path.is_some());
    match (hooked, missing.is_empty()) {
        (true, true) => None,
        (false, true) => Some("this oomwatch does not hook oom_kill_process".into()),
        _ => Some(format!(
            "the kernel's OOM functions cannot be hooked here (fentry/fexit and kprobes): {}",
            missing.join("; ")
        )),
    }
}

/// Follows `/dev/kmsg` from its end on a thread of its own: every `Killed
/// process` line, and every whole report replayed once (`replay`'s
/// assembler, parser and analysis).
fn follow_kmsg(tx: mpsc::Sender<Seen>) -> anyhow::Result<()> {
    let mut asm = ReportAssembler::default();
    follow_kmsg_lines("selftest-kmsg", move |line| {
        let mut seen = Vec::new();
        if let Some(k) = killed_line(line) {
            seen.push(Seen::Kill(k));
        }
        if let Some(Assembled::Report(r)) = asm.push(line) {
            seen.push(Seen::Report(Box::new(KernelReport::new(
                &r,
                Instant::now(),
            ))));
        }
        seen.into_iter().all(|s| tx.send(s).is_ok())
    })
    // A selftest reads its own few reports; losses are not its subject.
    .map(|_lost| ())
}
