//! Noticing a memcg OOM as it starts, before the kernel has chosen a victim.
//!
//! Two signals the kernel gives every memory cgroup, without any probe:
//! - cgroup v1: an eventfd registered on `memory.oom_control` through
//!   `cgroup.event_control`. `mem_cgroup_oom_notify` signals it when the memcg
//!   enters OOM handling (also with `oom_kill_disable` set), before
//!   `mem_cgroup_out_of_memory` runs. The kernel also signals it when the
//!   cgroup is removed; a signal for a directory that is gone is dropped.
//! - cgroup v2: the `oom` count of `memory.events.local` (non-hierarchical;
//!   `memory.events` before 5.2), bumped by `memcg_memory_event(MEMCG_OOM)` in
//!   `mem_cgroup_oom` before `out_of_memory`; a change raises an inotify
//!   `IN_MODIFY` on the file.
//!
//! A host-wide OOM has no such signal; seeing it start needs a probe on
//! `out_of_memory` (fentry or kprobe), which the daemon does not have here.
//!
//! The watcher is one thread blocked in `poll(2)` over every registration;
//! the daemon hands it the set of limited memcgs after each prediction pass
//! and receives an [`OomStart`] per signal.

use std::{
    collections::HashMap,
    fs::File,
    io::Write as _,
    os::fd::{AsFd as _, AsRawFd as _},
    path::{Path, PathBuf},
    sync::{Arc, mpsc},
};

use anyhow::Context as _;
use nix::{
    poll::{PollFd, PollFlags, PollTimeout, poll},
    sys::{
        eventfd::{EfdFlags, EventFd},
        inotify::{AddWatchFlags, InitFlags, Inotify, WatchDescriptor},
    },
};

use crate::host::cgroup::{CgroupVersion, Hierarchy};

/// A memcg entered OOM handling.
#[derive(Debug, Clone)]
pub struct OomStart {
    /// The memcg's path inside its hierarchy; None for the host (a global
    /// OOM announced by the page allocator giving up reclaim).
    pub cgroup: Option<String>,
    /// When the signal was raised or seen, on CLOCK_BOOTTIME (ns), the eBPF
    /// events' clock.
    pub signal_ns: u64,
    /// The task whose allocation failed (pid, comm), when the signal names
    /// it (the host's: `out_of_memory` entered, reclaim exhausted): the
    /// victim under `vm.oom_kill_allocating_task`.
    pub allocating: Option<(i32, String)>,
}

/// Where OOM starts go: the predictor's channel, and the start tracker at
/// once (a kill can be judged before the predictor takes the signal, and
/// must know a newer start of its domain came).
#[derive(Clone)]
pub struct StartSender {
    pub tx: tokio::sync::mpsc::UnboundedSender<OomStart>,
    pub tracker: std::sync::Arc<std::sync::Mutex<StartTracker>>,
}

impl StartSender {
    pub fn send(&self, s: OomStart) {
        self.tracker
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .on_signal(s.cgroup.clone(), s.signal_ns);
        let _ = self.tx.send(s);
    }
}

/// Handle to the watcher thread.
pub struct OomStartWatch {
    domains: mpsc::Sender<Vec<String>>,
    wake: Arc<EventFd>,
}

impl OomStartWatch {
    /// Starts the watcher for the memory controller's hierarchy `h`; OOM
    /// starts are sent to `tx`.
    pub fn spawn(h: Hierarchy, tx: StartSender) -> anyhow::Result<Self> {
        let wake = Arc::new(
            EventFd::from_flags(EfdFlags::EFD_CLOEXEC | EfdFlags::EFD_NONBLOCK)
                .context("create the OOM-start watcher's eventfd")?,
        );
        let inotify = Inotify::init(InitFlags::IN_CLOEXEC | InitFlags::IN_NONBLOCK)
            .context("create the OOM-start watcher's inotify instance")?;
        let (dtx, drx) = mpsc::channel();
        let mut w = Watcher {
            h,
            v1: HashMap::new(),
            v2: HashMap::new(),
            inotify,
            wake: Arc::clone(&wake),
            domains: drx,
            out: tx,
        };
        std::thread::Builder::new()
            .name("oom-start".into())
            .spawn(move || w.run())
            .context("start the OOM-start watcher thread")?;
        Ok(Self { domains: dtx, wake })
    }

    /// Watches exactly these memcgs from now on (paths inside the hierarchy).
    pub fn set_domains(&self, paths: Vec<String>) {
        if self.domains.send(paths).is_ok() {
            let _ = self.wake.write(1);
        }
    }
}

struct V1Reg {
    efd: EventFd,
    /// Kept open: the registration lives as long as this file.
    _control: File,
}

struct V2Reg {
    wd: WatchDescriptor,
    file: PathBuf,
    ooms: u64,
}

struct Watcher {
    h: Hierarchy,
    v1: HashMap<String, V1Reg>,
    v2: HashMap<String, V2Reg>,
    inotify: Inotify,
    wake: Arc<EventFd>,
    domains: mpsc::Receiver<Vec<String>>,
    out: StartSender,
}

impl Watcher {
    fn run(&mut self) {
        loop {
            let v1_keys: Vec<String> = self.v1.keys().cloned().collect();
            let ready = {
                let mut fds = vec![
                    PollFd::new(self.wake.as_fd(), PollFlags::POLLIN),
                    PollFd::new(self.inotify.as_fd(), PollFlags::POLLIN),
                ];
                fds.extend(
                    v1_keys
                        .iter()
                        .map(|k| PollFd::new(self.v1[k].efd.as_fd(), PollFlags::POLLIN)),
                );
                if let Err(e) = poll(&mut fds, PollTimeout::NONE) {
                    if e == nix::errno::Errno::EINTR {
                        continue;
                    }
                    tracing::warn!(error = %e, "OOM-start watcher stopped: poll failed");
                    return;
                }
                fds.iter()
                    .map(|f| f.revents().is_some_and(|r| !r.is_empty()))
                    .collect::<Vec<_>>()
            };
            if ready[0] {
                let _ = self.wake.read();
                let mut latest = None;
                loop {
                    match self.domains.try_recv() {
                        Ok(d) => latest = Some(d),
                        Err(mpsc::TryRecvError::Empty) => break,
                        // The daemon is gone.
                        Err(mpsc::TryRecvError::Disconnected) => return,
                    }
                }
                if let Some(d) = latest {
                    self.reconcile(d);
                }
            }
            if ready[1] {
                self.read_inotify();
            }
            for (i, k) in v1_keys.iter().enumerate() {
                if ready[2 + i] {
                    self.read_v1(k);
                }
            }
            if self.out.tx.is_closed() {
                return;
            }
        }
    }

    fn reconcile(&mut self, paths: Vec<String>) {
        self.v1.retain(|p, _| paths.contains(p));
        self.v2.retain(|p, r| {
            let keep = paths.contains(p);
            if !keep {
                let _ = self.inotify.rm_watch(r.wd);
            }
            keep
        });
        for p in paths {
            let r = match self.h.version {
                CgroupVersion::V1 if !self.v1.contains_key(&p) => {
                    register_v1(&self.h.mount_point, &p).map(|r| {
                        self.v1.insert(p.clone(), r);
                    })
                }
                CgroupVersion::V2 if !self.v2.contains_key(&p) => {
                    register_v2(&self.inotify, &self.h.mount_point, &p).map(|r| {
                        self.v2.insert(p.clone(), r);
                    })
                }
                _ => Ok(()),
            };
            if let Err(e) = r {
                // A cgroup removed since the pass is normal; anything else
                // means this domain's OOMs are only seen at the kill.
                tracing::debug!(cgroup = %p, error = %format!("{e:#}"), "cannot watch for OOM starts");
            }
        }
    }

    fn read_v1(&mut self, path: &str) {
        let Some(r) = self.v1.get(path) else { return };
        if r.efd.read().is_err() {
            return;
        }
        if !dir(&self.h.mount_point, path).is_dir() {
            // Removal also signals the eventfd.
            self.v1.remove(path);
            return;
        }
        self.send(path);
    }

    fn read_inotify(&mut self) {
        let Ok(events) = self.inotify.read_events() else {
            return;
        };
        for ev in events {
            let Some((path, reg)) = self.v2.iter_mut().find(|(_, r)| r.wd == ev.wd) else {
                continue;
            };
            if ev.mask.contains(AddWatchFlags::IN_IGNORED) {
                let path = path.clone();
                self.v2.remove(&path);
                continue;
            }
            let Some(now) = read_oom_count(&reg.file) else {
                continue;
            };
            if now > reg.ooms {
                reg.ooms = now;
                let path = path.clone();
                self.send(&path);
            }
        }
    }

    fn send(&self, path: &str) {
        self.out.send(OomStart {
            cgroup: Some(path.to_owned()),
            signal_ns: boot_ns(),
            allocating: None,
        });
    }
}

fn dir(mount_point: &Path, path: &str) -> PathBuf {
    mount_point.join(path.trim_start_matches('/'))
}

fn register_v1(mount_point: &Path, path: &str) -> anyhow::Result<V1Reg> {
    let d = dir(mount_point, path);
    let control = File::open(d.join("memory.oom_control"))
        .with_context(|| format!("open {}/memory.oom_control", d.display()))?;
    let efd = EventFd::from_flags(EfdFlags::EFD_CLOEXEC | EfdFlags::EFD_NONBLOCK)
        .context("create an eventfd")?;
    let mut ec = std::fs::OpenOptions::new()
        .write(true)
        .open(d.join("cgroup.event_control"))
        .with_context(|| format!("open {}/cgroup.event_control", d.display()))?;
    // One write: "<eventfd> <fd of memory.oom_control>".
    ec.write_all(format!("{} {}", efd.as_raw_fd(), control.as_raw_fd()).as_bytes())
        .with_context(|| format!("register an OOM eventfd on {}", d.display()))?;
    Ok(V1Reg {
        efd,
        _control: control,
    })
}

fn register_v2(inotify: &Inotify, mount_point: &Path, path: &str) -> anyhow::Result<V2Reg> {
    let d = dir(mount_point, path);
    let file = ["memory.events.local", "memory.events"]
        .iter()
        .map(|f| d.join(f))
        .find(|f| f.exists())
        .with_context(|| format!("{} has no memory.events", d.display()))?;
    let ooms = read_oom_count(&file).unwrap_or(0);
    let wd = inotify
        .add_watch(&file, AddWatchFlags::IN_MODIFY)
        .with_context(|| format!("watch {}", file.display()))?;
    Ok(V2Reg { wd, file, ooms })
}

/// The `oom` line of a v2 `memory.events` file.
fn read_oom_count(file: &Path) -> Option<u64> {
    parse_oom_count(&std::fs::read_to_string(file).ok()?)
}

fn parse_oom_count(text: &str) -> Option<u64> {
    text.lines().find_map(|l| {
        let mut it = l.split_whitespace();
        (it.next() == Some("oom"))
            .then(|| it.next()?.parse().ok())
            .flatten()
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn oom_count_is_the_oom_line_not_oom_kill() {
        let t = "low 0\nhigh 3\nmax 17\noom 2\noom_kill 1\noom_group_kill 0\n";
        assert_eq!(parse_oom_count(t), Some(2));
        assert_eq!(parse_oom_count("oom_kill 4\n"), None);
        assert_eq!(parse_oom_count(""), None);
    }

    #[test]
    fn v2_watch_sees_the_oom_count_rise_and_ignores_other_changes() {
        // A captured v2 directory: the watcher only reads the file, so a
        // plain file stands in for cgroupfs here.
        let tmp = tempfile::tempdir().unwrap();
        let cg = tmp.path().join("job");
        std::fs::create_dir(&cg).unwrap();
        let ev = cg.join("memory.events.local");
        std::fs::write(&ev, "low 0\nhigh 0\nmax 0\noom 0\noom_kill 0\n").unwrap();
        let h = Hierarchy {
            version: CgroupVersion::V2,
            mount_point: tmp.path().to_path_buf(),
            memory: true,
        };
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        rt.block_on(async {
            let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
            let tracker = std::sync::Arc::default();
            let w = OomStartWatch::spawn(
                h,
                StartSender {
                    tx,
                    tracker: std::sync::Arc::clone(&tracker),
                },
            )
            .unwrap();
            w.set_domains(vec!["/job".into()]);
            // Let the thread register before the file changes.
            tokio::time::sleep(std::time::Duration::from_millis(100)).await;
            std::fs::write(&ev, "low 0\nhigh 0\nmax 9\noom 0\noom_kill 0\n").unwrap();
            let quiet =
                tokio::time::timeout(std::time::Duration::from_millis(200), rx.recv()).await;
            assert!(quiet.is_err(), "a change without a new OOM was reported");
            std::fs::write(&ev, "low 0\nhigh 0\nmax 9\noom 1\noom_kill 1\n").unwrap();
            let got = tokio::time::timeout(std::time::Duration::from_secs(5), rx.recv())
                .await
                .expect("no OOM start within 5 s")
                .unwrap();
            assert_eq!(got.cgroup.as_deref(), Some("/job"));
            // The tracker knew of it as it was sent.
            let t = tracker.lock().unwrap();
            assert_eq!(t.signals, vec![(Some("/job".to_owned()), got.signal_ns)]);
        });
    }
}

/// CLOCK_BOOTTIME now, in nanoseconds: the clock the eBPF side stamps kills
/// with, so signals, snapshots and kills can be put in order.
pub fn boot_ns() -> u64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: clock_gettime writes only to `ts`.
    unsafe { libc::clock_gettime(libc::CLOCK_BOOTTIME, &mut ts) };
    ts.tv_sec as u64 * 1_000_000_000 + ts.tv_nsec as u64
}

/// What the model said when a domain's OOM started.
#[derive(Debug, Clone)]
pub struct StartPrediction {
    /// The domain's memcg path; None for the host.
    pub domain: Option<String>,
    /// When the OOM start was signalled and when the pass that read `/proc`
    /// finished (CLOCK_BOOTTIME ns).
    pub signal_ns: u64,
    pub snapshot_ns: u64,
    /// Predicted victim (tgid, comm), None when nothing was eligible.
    pub victim: Option<(i32, String)>,
    /// The domain's OOM killer was disabled (v1 `oom_kill_disable`): the
    /// OOM waits, and later signals wake the same OOM.
    pub held: bool,
}

/// A kill as the eBPF side saw it.
#[derive(Debug, Clone)]
pub struct SeenKill {
    /// The victim's memcg path (None when unknown: no BTF, or removed).
    pub memcg: Option<String>,
    pub tgid: i32,
    pub at_ns: u64,
}

/// Pairs each kill with the prediction made at its OOM's start, whichever of
/// the two arrives first. A prediction counts only if its pass finished
/// before the kill; one that was still reading the processes is reported as too
/// late, not compared.
#[derive(Debug, Default)]
pub struct StartTracker {
    pending: Vec<StartPrediction>,
    /// Recent kills, and whether each was paired already.
    kills: Vec<(SeenKill, bool)>,
    /// Every recent start signal given a pass (domain, signal ns), its
    /// prediction made or not yet.
    signals: Vec<(Option<String>, u64)>,
}

/// Older than this, a pending prediction or an unpaired kill is dropped.
const KEEP_NS: u64 = 60_000_000_000;
/// The same for a prediction made for the host.
const HOST_KEEP_NS: u64 = 10_000_000_000;

/// A signal is stamped when the watcher wakes to it, which can be after
/// the kill it announced (this lab's kernel kills 0.2 – 0.6 ms after a v1
/// memcg's OOM signal): a signal stamped up to this long after a kill may
/// be that kill's OOM's.
const SIGNAL_LAG_NS: u64 = 10_000_000;

impl StartTracker {
    /// A start signal that a pass will answer: a newer OOM start of its
    /// domain, which settles the predictions made before it.
    pub fn on_signal(&mut self, domain: Option<String>, signal_ns: u64) {
        self.expire(signal_ns);
        self.signals.push((domain, signal_ns));
    }

    /// A kill arrived: the verdict for its line (empty when no prediction
    /// waits for it).
    pub fn on_kill(&mut self, k: SeenKill) -> String {
        self.expire(k.at_ns);
        let by = k.at_ns + SIGNAL_LAG_NS;
        // A prediction followed by a newer start of its domain before this
        // kill: its OOM ended without one (the kernel's scan stopped at a
        // victim still exiting, or nothing was eligible), and the newer
        // start is this kill's; that one's prediction, if still being made,
        // pairs when it comes. Not where the OOM was held (its killer
        // disabled): there a newer signal wakes the same OOM.
        let signals = &self.signals;
        self.pending.retain(|p| {
            p.held
                || !signals
                    .iter()
                    .any(|(d, s)| *d == p.domain && *s > p.signal_ns && *s <= by)
        });
        // The deepest domain holding the victim; within it, of the start
        // predictions made since (an OOM can signal several times before
        // its kill), the last one finished before the kill, else the last.
        let deepest = self
            .pending
            .iter()
            .filter(|p| p.signal_ns <= by && within(&k, &p.domain))
            .map(|p| p.domain.clone())
            .max_by_key(|d| d.as_ref().map_or(0, |d| d.len() + 1));
        let v = match deepest {
            Some(domain) => {
                let candidates = || {
                    self.pending
                        .iter()
                        .filter(|p| p.domain == domain && p.signal_ns <= by)
                };
                let chosen = candidates()
                    .filter(|p| p.snapshot_ns <= k.at_ns)
                    .max_by_key(|p| p.snapshot_ns)
                    .or_else(|| candidates().max_by_key(|p| p.snapshot_ns))
                    .cloned();
                // The OOM ended in this kill: its start predictions are spent.
                self.pending
                    .retain(|p| !(p.domain == domain && p.signal_ns <= by));
                chosen.map_or_else(String::new, |p| verdict(&p, &k))
            }
            None => String::new(),
        };
        self.kills.push((k, !v.is_empty()));
        v
    }

    /// A start prediction is ready: a line pairing it with a kill that came
    /// first (or saying it came too late), or None when it is kept to wait
    /// for its kill. A prediction whose OOM already ended in a kill that was
    /// paired (a repeated signal for one OOM) is dropped.
    pub fn on_prediction(&mut self, p: StartPrediction) -> Option<String> {
        self.expire(p.snapshot_ns);
        let ours = |k: &SeenKill| k.at_ns + SIGNAL_LAG_NS >= p.signal_ns && within(k, &p.domain);
        // An unpaired kill first; a paired one only settles the OOM.
        self.kills.sort_by_key(|(_, paired)| *paired);
        let kill = self.kills.iter_mut().find(|(k, _)| ours(k));
        match kill {
            Some((_, true)) => None,
            Some((k, paired)) => {
                *paired = true;
                Some(format!(
                    "oom start paired with the kill of pid={}{}",
                    k.tgid,
                    verdict(&p, k)
                ))
            }
            None => {
                // Kept beside the domain's earlier ones: which one counts is
                // decided at the kill. At most a few per domain.
                if self.pending.iter().filter(|q| q.domain == p.domain).count() >= 8 {
                    if let Some(i) = self.pending.iter().position(|q| q.domain == p.domain) {
                        self.pending.remove(i);
                    }
                }
                self.pending.push(p);
                None
            }
        }
    }

    fn expire(&mut self, now_ns: u64) {
        let keep = |t: u64| now_ns.saturating_sub(t) < KEEP_NS;
        // The host's OOM follows the allocator giving up within moments; an
        // older host prediction would pair with an unrelated kill.
        self.pending.retain(|p| match p.domain {
            Some(_) => keep(p.signal_ns),
            None => now_ns.saturating_sub(p.signal_ns) < HOST_KEEP_NS,
        });
        self.kills.retain(|(k, _)| keep(k.at_ns));
        self.signals.retain(|(_, s)| keep(*s));
    }
}

/// Whether kill `k` can belong to an OOM of `domain`: any kill for the host,
/// a kill inside the memcg otherwise.
fn within(k: &SeenKill, domain: &Option<String>) -> bool {
    match domain {
        None => true,
        Some(d) => k
            .memcg
            .as_deref()
            .is_some_and(|m| crate::model::task::memcg_within(m, d)),
    }
}

/// How a domain is named in the log.
pub fn domain_name(domain: &Option<String>) -> String {
    match domain {
        None => "the host".into(),
        Some(d) => format!("memcg {d}"),
    }
}

fn verdict(p: &StartPrediction, k: &SeenKill) -> String {
    let domain = domain_name(&p.domain);
    if p.snapshot_ns > k.at_ns {
        return format!(
            "; OOM start seen in {}, but the prediction pass was still reading the processes {:.1} ms after the kill: not compared",
            domain,
            (p.snapshot_ns - k.at_ns) as f64 / 1e6
        );
    }
    match &p.victim {
        Some((tgid, comm)) => format!(
            "; predicted at OOM start in {}: pid={tgid} comm={comm} ({})",
            domain,
            if *tgid == k.tgid { "agree" } else { "DISAGREE" }
        ),
        None => format!(
            "; predicted at OOM start in {}: nothing eligible (DISAGREE)",
            domain
        ),
    }
}

#[cfg(test)]
mod tracker_tests {
    use super::*;

    fn pred(domain: &str, signal: u64, snap: u64, tgid: i32) -> StartPrediction {
        StartPrediction {
            domain: Some(domain.into()),
            signal_ns: signal,
            snapshot_ns: snap,
            victim: Some((tgid, "hog".into())),
            held: false,
        }
    }

    fn kill(memcg: &str, tgid: i32, at: u64) -> SeenKill {
        SeenKill {
            memcg: Some(memcg.into()),
            tgid,
            at_ns: at,
        }
    }

    #[test]
    fn prediction_then_kill_is_compared() {
        let mut t = StartTracker::default();
        assert_eq!(t.on_prediction(pred("/job", 100, 110, 7)), None);
        let v = t.on_kill(kill("/job/child", 7, 200));
        assert!(v.ends_with("pid=7 comm=hog (agree)"), "{v}");
        // Consumed: a second kill has no prediction.
        assert_eq!(t.on_kill(kill("/job", 8, 300)), "");
        let mut t = StartTracker::default();
        t.on_prediction(pred("/job", 100, 110, 7));
        assert!(t.on_kill(kill("/job", 9, 200)).contains("DISAGREE"));
    }

    /// One OOM signalled twice before its kill (cgroup v1 wakes its waiters
    /// again when the OOM killer is re-enabled): the second pass ran while
    /// the kernel was already marking the victim, so the first, finished
    /// before the kill, is the one compared. Seen in CI once the task
    /// iterator showed the victim's oom_mm during that second pass.
    #[test]
    fn the_last_pass_finished_before_the_kill_counts() {
        let mut t = StartTracker::default();
        t.on_signal(Some("/job".into()), 100);
        let mut held = pred("/job", 100, 110, 7);
        held.held = true;
        assert_eq!(t.on_prediction(held), None);
        t.on_signal(Some("/job".into()), 190);
        let mut late = pred("/job", 190, 205, 7);
        late.victim = None;
        assert_eq!(t.on_prediction(late), None);
        let v = t.on_kill(kill("/job", 7, 200));
        assert!(v.ends_with("pid=7 comm=hog (agree)"), "{v}");
        // Both are spent with the kill.
        assert_eq!(t.on_kill(kill("/job", 8, 300_000_000)), "");
        // Only a late one: said, not compared.
        t.on_prediction(pred("/job", 400_000_000, 2_000_500_000, 9));
        assert!(
            t.on_kill(kill("/job", 9, 500_000_000))
                .contains("not compared")
        );
    }

    /// Seen in a churn of memcg OOMs: a start signalled while the last
    /// OOM's victim was exiting (the kernel killed nothing: its scan stopped
    /// there) was predicted by a pass that found nothing eligible, or, once
    /// the victim was gone, named another task; the next OOM's own start
    /// pass finished after its kill. The kill is not compared with the
    /// stale prediction; it pairs with its own, which says it came too late.
    #[test]
    fn a_prediction_of_no_kill_is_settled_by_a_newer_start() {
        let mut t = StartTracker::default();
        let mut nothing = pred("/job", 100, 110, 0);
        nothing.victim = None;
        t.on_signal(Some("/job".into()), 100);
        assert_eq!(t.on_prediction(nothing.clone()), None);
        t.on_signal(Some("/job".into()), 500);
        assert_eq!(t.on_kill(kill("/job", 7, 502)), "");
        let l = t.on_prediction(pred("/job", 500, 509, 7)).unwrap();
        assert!(l.contains("after the kill: not compared"), "{l}");
        // The same with a victim named: a newer start settles it.
        let mut t = StartTracker::default();
        t.on_signal(Some("/job".into()), 100);
        t.on_prediction(pred("/job", 100, 110, 5));
        t.on_signal(Some("/job".into()), 500);
        assert_eq!(t.on_kill(kill("/job", 7, 502)), "");
        assert!(
            t.on_prediction(pred("/job", 500, 509, 7))
                .unwrap()
                .contains("not compared")
        );
        // Without a newer start, nothing eligible against a kill is a
        // disagreement, as before.
        let mut t = StartTracker::default();
        t.on_signal(Some("/job".into()), 100);
        t.on_prediction(nothing);
        assert!(
            t.on_kill(kill("/job", 7, 502))
                .contains("nothing eligible (DISAGREE)")
        );
    }

    /// The watcher stamped the signal 0.2 ms after the kill it announced
    /// (the kernel is that fast): its late prediction is that kill's, not
    /// left waiting to be set against the next OOM's.
    #[test]
    fn a_signal_stamped_just_after_its_kill_is_that_kills() {
        let mut t = StartTracker::default();
        t.on_signal(Some("/job".into()), 1_000_200);
        assert_eq!(t.on_kill(kill("/job", 7, 1_000_000)), "");
        let mut p = pred("/job", 1_000_200, 1_900_000, 0);
        p.victim = None;
        assert!(t.on_prediction(p).unwrap().contains("not compared"));
        // Nothing waits for the next kill.
        t.on_signal(Some("/job".into()), 900_000_000);
        assert_eq!(t.on_kill(kill("/job", 8, 900_000_100)), "");
        assert!(t.pending.is_empty());
    }

    #[test]
    fn kill_before_the_pass_ends_is_paired_when_it_does() {
        let mut t = StartTracker::default();
        assert_eq!(t.on_kill(kill("/job", 7, 150)), "");
        // Snapshot read before the kill: a fair prediction.
        let l = t.on_prediction(pred("/job", 100, 120, 7)).unwrap();
        assert!(l.contains("pid=7 comm=hog (agree)"), "{l}");
        // Snapshot read after the kill: said, not compared.
        t.on_kill(kill("/job", 7, 150));
        let l = t.on_prediction(pred("/job", 140, 2_150_000, 8)).unwrap();
        assert!(l.contains("after the kill: not compared"), "{l}");
    }

    #[test]
    fn a_host_prediction_pairs_with_any_kill_but_not_for_long() {
        let mut t = StartTracker::default();
        let host = |signal, snap, tgid| StartPrediction {
            domain: None,
            ..pred("/", signal, snap, tgid)
        };
        t.on_prediction(host(100, 110, 7));
        let v = t.on_kill(kill("/system.slice/x", 7, 200));
        assert!(v.contains("in the host: pid=7 comm=hog (agree)"), "{v}");
        // A memcg prediction is deeper than the host's and wins.
        t.on_prediction(host(300, 310, 7));
        t.on_prediction(pred("/job", 300, 310, 9));
        assert!(t.on_kill(kill("/job", 9, 400)).contains("in memcg /job"));
        // Ten seconds on, the host prediction is gone.
        t.on_prediction(host(1_000, 1_010, 7));
        assert_eq!(t.on_kill(kill("/a", 7, 11_000_000_000)), "");
    }

    #[test]
    fn a_repeated_signal_for_a_settled_oom_is_dropped() {
        let mut t = StartTracker::default();
        t.on_prediction(pred("/job", 100, 110, 7));
        assert!(t.on_kill(kill("/job", 7, 200)).contains("agree"));
        // The signal came again before that kill; its pass read /proc after.
        assert_eq!(t.on_prediction(pred("/job", 190, 260, 8)), None);
        // So a later kill is not compared with it.
        assert_eq!(t.on_kill(kill("/job", 9, 5_000)), "");
    }

    #[test]
    fn other_domains_and_old_kills_do_not_pair() {
        let mut t = StartTracker::default();
        t.on_kill(kill("/other", 7, 150_000_000));
        // A kill well before the signal (more than the signal's lag)
        // belongs to an earlier OOM.
        t.on_kill(kill("/job", 7, 50_000_000));
        assert_eq!(
            t.on_prediction(pred("/job", 100_000_000, 120_000_000, 7)),
            None
        );
        // The deepest domain wins for a nested victim.
        t.on_prediction(pred("/job/inner", 100_000_000, 120_000_000, 9));
        let v = t.on_kill(kill("/job/inner/x", 9, 200_000_000));
        assert!(v.contains("in memcg /job/inner:"), "{v}");
        // Kills with no memcg path are not paired.
        assert_eq!(
            t.on_kill(SeenKill {
                memcg: None,
                tgid: 7,
                at_ns: 300_000_000
            }),
            ""
        );
    }
}

/// What one finished prediction pass said for a domain.
#[derive(Debug, Clone, PartialEq)]
pub struct PassPrediction {
    /// When the pass finished (CLOCK_BOOTTIME ns).
    pub snapshot_ns: u64,
    /// Predicted victim (tgid, comm); None when nothing was eligible.
    pub victim: Option<(i32, String)>,
    /// Every process the pass scanned there, by tgid: its points, None
    /// where it was not eligible. Sorted by tgid.
    pub scanned: Vec<(i32, Option<i64>)>,
    /// The pass's forecast: seconds to the domain's OOM, and the victim
    /// then (tgid); None without a finite forecast.
    pub forecast: Option<(f64, Option<i32>)>,
}

/// One domain of a pass: the domain (None: the host), its predicted victim
/// (tgid, comm), and every process scanned there (tgid, points).
#[derive(Debug, Clone, PartialEq)]
pub struct DomainVictim {
    pub domain: Option<String>,
    pub victim: Option<(i32, String)>,
    pub scanned: Vec<(i32, Option<i64>)>,
    /// Seconds to the domain's OOM and the victim then, where forecast.
    pub forecast: Option<(f64, Option<i32>)>,
}

use crate::telemetry::metrics::prediction_why as miss;

/// The recent passes' predictions per domain (None: the host), newest last.
#[derive(Debug, Default)]
pub struct RecentPredictions {
    by_domain: std::collections::HashMap<Option<String>, Vec<PassPrediction>>,
}

/// Passes kept per domain: enough that one finishing between a kill and its
/// event still leaves the one before it.
const KEEP_PASSES: usize = 4;

impl RecentPredictions {
    /// Records one pass over `domains`; domains the pass no longer has are
    /// forgotten once their last prediction is a minute old.
    pub fn record(&mut self, domains: &[DomainVictim], at_ns: u64) {
        for d in domains {
            let v = self.by_domain.entry(d.domain.clone()).or_default();
            if v.len() == KEEP_PASSES {
                v.remove(0);
            }
            let mut scanned = d.scanned.clone();
            scanned.sort_unstable();
            v.push(PassPrediction {
                snapshot_ns: at_ns,
                victim: d.victim.clone(),
                scanned,
                forecast: d.forecast,
            });
        }
        self.by_domain.retain(|d, v| {
            domains.iter().any(|x| &x.domain == d)
                || v.last()
                    .is_some_and(|p| at_ns.saturating_sub(p.snapshot_ns) < KEEP_NS)
        });
    }

    /// The kill compared with the newest prediction made before it for the
    /// kill's domain: the deepest memcg domain holding the victim, else the
    /// host. `limited` is the memcg with a limit that holds the victim, read
    /// at the kill: when no pass knew it yet, there is no prediction for it
    /// (the host's is not the one to compare with). `alive` says whether a
    /// tgid is still there at the kill (a missed prediction's reason).
    pub fn judge(
        &self,
        k: &SeenKill,
        limited: Option<&str>,
        alive: impl Fn(i32) -> bool,
    ) -> PredictionOutcome {
        let domain = self
            .by_domain
            .keys()
            .filter(|d| d.is_some() && within(k, d))
            .max_by_key(|d| d.as_ref().map_or(0, String::len))
            .cloned()
            .unwrap_or(None);
        if let (None, Some(l)) = (&domain, limited) {
            return PredictionOutcome {
                outcome: "no_prediction",
                miss: miss::NEW_DOMAIN,
                forecast: "none",
                forecast_victim_pid: None,
                forecast_seconds_to_oom: None,
                domain: Some(l.to_owned()),
                predicted_pid: None,
                predicted_comm: None,
                age_ms: None,
                reason: format!(
                    "memcg {l} has a limit, but no prediction pass had seen it yet (a new cgroup)"
                ),
            };
        }
        let name = domain_name(&domain);
        let before = self
            .by_domain
            .get(&domain)
            .and_then(|v| v.iter().rev().find(|p| p.snapshot_ns <= k.at_ns));
        let Some(p) = before else {
            return PredictionOutcome {
                outcome: "no_prediction",
                miss: miss::NO_PASS,
                forecast: "none",
                forecast_victim_pid: None,
                forecast_seconds_to_oom: None,
                domain,
                predicted_pid: None,
                predicted_comm: None,
                age_ms: None,
                reason: format!("no prediction pass for {name} finished before the kill"),
            };
        };
        let age_ms = (k.at_ns - p.snapshot_ns) as f64 / 1e6;
        let last = format!("the last pass for {name} ({age_ms:.0} ms before the kill)");
        let (outcome, why, reason) = match &p.victim {
            Some((tgid, _)) if *tgid == k.tgid => {
                ("match", miss::NAMED, format!("{last} named this task"))
            }
            Some((tgid, comm)) => {
                let named = format!("{last} named pid={tgid} comm={comm}");
                let points_of = |t: i32| {
                    p.scanned
                        .binary_search_by_key(&t, |e| e.0)
                        .ok()
                        .map(|i| p.scanned[i].1)
                };
                let (why, detail) = if !alive(*tgid) {
                    (
                        miss::PREDICTED_LEFT,
                        "which was gone at the kill (it exited, or an earlier kill took it)".into(),
                    )
                } else {
                    match points_of(k.tgid) {
                        None => (
                            miss::VICTIM_NEW,
                            "; the task killed was not in the domain then (it started or moved in after)"
                                .into(),
                        ),
                        Some(had) => (
                            miss::OVERTAKEN,
                            format!(
                                "; the task killed had {} then, against {}: it grew past after the pass",
                                had.map_or("no points (not eligible)".into(), |p| format!("{p} points")),
                                points_of(*tgid)
                                    .flatten()
                                    .map_or("?".into(), |p| format!("{p}"))
                            ),
                        ),
                    }
                };
                let sep = if why == miss::PREDICTED_LEFT {
                    ", "
                } else {
                    ""
                };
                ("mismatch", why, format!("{named}{sep}{detail}"))
            }
            // Nothing was there to predict yet (the tasks came after the
            // pass): no prediction rather than a wrong one.
            None => (
                "no_prediction",
                miss::NOTHING_ELIGIBLE,
                format!("{last} found no eligible task"),
            ),
        };
        let forecast_victim = p.forecast.and_then(|f| f.1);
        PredictionOutcome {
            outcome,
            miss: why,
            forecast: match forecast_victim {
                Some(t) if t == k.tgid => "match",
                Some(_) => "mismatch",
                None => "none",
            },
            forecast_victim_pid: forecast_victim,
            forecast_seconds_to_oom: p.forecast.map(|f| f.0),
            domain,
            predicted_pid: p.victim.as_ref().map(|v| v.0),
            predicted_comm: p.victim.as_ref().map(|v| v.1.clone()),
            age_ms: Some(age_ms),
            reason,
        }
    }
}

/// A kill against the prediction made just before it.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct PredictionOutcome {
    /// `match`, `mismatch`, or `no_prediction` (no pass had finished, or
    /// the last one found no eligible task in the domain).
    pub outcome: &'static str,
    /// Why, one of [`miss`]'s: for a mismatch, what changed between the
    /// pass and the kill (the live prediction was late, not the model
    /// wrong: that is judged on the kernel's own report).
    #[serde(rename = "why")]
    pub miss: &'static str,
    /// The same pass's growth-aware victim (the one its forecast said the
    /// kernel would kill when the domain's OOM comes) against the kill:
    /// `match`, `mismatch`, or `none` (no finite forecast then).
    pub forecast: &'static str,
    pub forecast_victim_pid: Option<i32>,
    /// Seconds to the OOM that pass forecast.
    pub forecast_seconds_to_oom: Option<f64>,
    /// The domain judged (None: the host).
    pub domain: Option<String>,
    pub predicted_pid: Option<i32>,
    pub predicted_comm: Option<String>,
    /// How long before the kill the prediction's pass finished.
    pub age_ms: Option<f64>,
    pub reason: String,
}

#[cfg(test)]
mod outcome_tests {
    use super::*;

    fn kill(memcg: Option<&str>, tgid: i32, at: u64) -> SeenKill {
        SeenKill {
            memcg: memcg.map(Into::into),
            tgid,
            at_ns: at,
        }
    }

    /// A pass over `domain` that named `victim` and scanned `scanned`.
    fn pass(domain: Option<&str>, victim: i32, scanned: &[(i32, i64)]) -> DomainVictim {
        DomainVictim {
            domain: domain.map(Into::into),
            victim: Some((victim, "hog".to_owned())),
            scanned: scanned.iter().map(|&(t, p)| (t, Some(p))).collect(),
            forecast: None,
        }
    }

    fn all_alive(_: i32) -> bool {
        true
    }

    #[test]
    fn a_kill_is_judged_against_the_last_pass_before_it_in_its_domain() {
        let mut r = RecentPredictions::default();
        let job = Some("/job");
        r.record(
            &[pass(None, 1, &[(1, 9)]), pass(job, 7, &[(7, 9), (8, 5)])],
            100,
        );
        r.record(
            &[pass(None, 1, &[(1, 9)]), pass(job, 8, &[(7, 5), (8, 9)])],
            200,
        );
        // A pass that finished after the kill does not count.
        r.record(&[pass(None, 1, &[(1, 9)]), pass(job, 9, &[(9, 9)])], 300);
        let o = r.judge(&kill(Some("/job/task"), 8, 250), job, all_alive);
        assert_eq!(
            (o.outcome, o.miss, o.predicted_pid),
            ("match", miss::NAMED, Some(8))
        );
        assert_eq!(o.domain.as_deref(), Some("/job"));
        assert_eq!(o.age_ms, Some(50.0 / 1e6));
        let o = r.judge(&kill(Some("/job"), 7, 250), job, all_alive);
        assert_eq!((o.outcome, o.miss), ("mismatch", miss::OVERTAKEN));
        assert!(
            o.reason.contains("pid=8") && o.reason.contains("had 5 points then, against 9"),
            "{}",
            o.reason
        );
        // Outside every memcg domain: the host's prediction.
        let o = r.judge(&kill(Some("/other"), 1, 250), None, all_alive);
        assert_eq!((o.outcome, o.domain), ("match", None));
        // A limited memcg no pass knew: not judged against the host.
        let o = r.judge(&kill(Some("/new"), 1, 250), Some("/new"), all_alive);
        assert_eq!(
            (o.outcome, o.miss, o.domain.as_deref()),
            ("no_prediction", miss::NEW_DOMAIN, Some("/new"))
        );
        let o = r.judge(&kill(Some("/job"), 8, 50), job, all_alive);
        assert_eq!((o.outcome, o.miss), ("no_prediction", miss::NO_PASS));
    }

    /// A miss says what changed after the pass: the named task left, the
    /// task killed came after it, or it grew past the named one.
    #[test]
    fn a_miss_has_its_reason() {
        let mut r = RecentPredictions::default();
        let job = Some("/job");
        r.record(&[pass(job, 7, &[(7, 9), (8, 5)])], 100);
        let o = r.judge(&kill(job, 8, 150), job, |t| t != 7);
        assert_eq!((o.outcome, o.miss), ("mismatch", miss::PREDICTED_LEFT));
        assert!(o.reason.contains("gone at the kill"), "{}", o.reason);
        let o = r.judge(&kill(job, 12, 150), job, all_alive);
        assert_eq!((o.outcome, o.miss), ("mismatch", miss::VICTIM_NEW));
        let o = r.judge(&kill(job, 8, 150), job, all_alive);
        assert_eq!((o.outcome, o.miss), ("mismatch", miss::OVERTAKEN));
        assert_eq!((o.forecast, o.forecast_victim_pid), ("none", None));
        // The growth-aware victim of the same pass, judged beside it: it
        // named the task that overtook.
        r.record(
            &[DomainVictim {
                forecast: Some((4.5, Some(8))),
                ..pass(job, 7, &[(7, 9), (8, 5)])
            }],
            160,
        );
        let o = r.judge(&kill(job, 8, 170), job, all_alive);
        assert_eq!(
            (o.outcome, o.forecast, o.forecast_seconds_to_oom),
            ("mismatch", "match", Some(4.5))
        );
        let o = r.judge(&kill(job, 7, 170), job, all_alive);
        assert_eq!((o.outcome, o.forecast), ("match", "mismatch"));
        // An ineligible task at the pass that became the victim.
        r.record(
            &[DomainVictim {
                domain: job.map(Into::into),
                victim: Some((7, "a".into())),
                scanned: vec![(7, Some(9)), (8, None)],
                forecast: None,
            }],
            200,
        );
        let o = r.judge(&kill(job, 8, 250), job, all_alive);
        assert_eq!(o.miss, miss::OVERTAKEN);
        assert!(o.reason.contains("not eligible"), "{}", o.reason);
        // A pass that found nobody eligible.
        r.record(
            &[DomainVictim {
                domain: job.map(Into::into),
                victim: None,
                scanned: vec![],
                forecast: None,
            }],
            300,
        );
        let o = r.judge(&kill(job, 8, 350), job, all_alive);
        assert_eq!(
            (o.outcome, o.miss),
            ("no_prediction", miss::NOTHING_ELIGIBLE)
        );
        // Every reason is one of the counter's pairs.
        for (outcome, why) in [("match", miss::NAMED), ("mismatch", miss::OVERTAKEN)] {
            assert!(miss::ALL.contains(&(outcome, why)));
        }
    }

    #[test]
    fn vanished_domains_are_forgotten_after_a_minute() {
        let mut r = RecentPredictions::default();
        r.record(
            &[DomainVictim {
                domain: Some("/gone".into()),
                victim: None,
                scanned: vec![],
                forecast: None,
            }],
            0,
        );
        r.record(&[], 1_000);
        assert!(r.by_domain.contains_key(&Some("/gone".to_owned())));
        r.record(&[], KEEP_NS + 1);
        assert!(r.by_domain.is_empty());
    }
}
