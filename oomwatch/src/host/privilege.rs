//! The capabilities oomwatch needs: read from the process's effective set
//! before loading ([`Privileges`]), and, once everything is loaded and
//! attached, dropped to the few the daemon still uses ([`AfterAttach`],
//! [`drop_after_attach`]).

use std::sync::atomic::{AtomicI64, AtomicU32, AtomicU64, AtomicUsize, Ordering};

use caps::{CapSet, Capability};
use serde::Serialize;

use crate::model::version::{KernelVersion, v};

/// Capability numbers from `include/uapi/linux/capability.h`.
pub const CAP_SYS_ADMIN: u32 = 21;
pub const CAP_SYS_RESOURCE: u32 = 24;
pub const CAP_PERFMON: u32 = 38;
pub const CAP_BPF: u32 = 39;

/// The effective capabilities that matter to oomwatch.
#[derive(Debug, Clone, Copy, Serialize, PartialEq, Eq)]
pub struct Privileges {
    pub euid: u32,
    pub cap_bpf: bool,
    pub cap_perfmon: bool,
    pub cap_sys_admin: bool,
    pub cap_sys_resource: bool,
}

impl Privileges {
    /// From a `CapEff` mask as in `/proc/PID/status`.
    pub fn from_capeff(euid: u32, capeff: u64) -> Self {
        let has = |cap: u32| capeff & (1u64 << cap) != 0;
        Self {
            euid,
            cap_bpf: has(CAP_BPF),
            cap_perfmon: has(CAP_PERFMON),
            cap_sys_admin: has(CAP_SYS_ADMIN),
            cap_sys_resource: has(CAP_SYS_RESOURCE),
        }
    }

    /// This process's privileges (all false when /proc cannot be read).
    pub fn current() -> Self {
        let euid = nix::unistd::geteuid().as_raw();
        let capeff = procfs::process::Process::myself()
            .and_then(|p| p.status())
            .map(|s| s.capeff)
            .unwrap_or(0);
        Self::from_capeff(euid, capeff)
    }

    /// One sentence naming what is missing to load and attach the programs,
    /// or `None` when nothing is. Since 5.8 CAP_BPF loads programs and
    /// CAP_PERFMON attaches tracing ones; CAP_SYS_ADMIN covers both.
    pub fn missing_for_tracing(&self) -> Option<String> {
        self.missing_for_tracing_under(perf_event_paranoid())
    }

    /// What is missing to load and run a BPF iterator, which needs no
    /// perf_event_open (so `kernel.perf_event_paranoid` does not matter).
    pub fn missing_for_iterators(&self) -> Option<String> {
        self.missing_for_tracing_under(2)
    }

    /// [`Self::missing_for_tracing`] under a given
    /// `kernel.perf_event_paranoid`.
    pub fn missing_for_tracing_under(&self, perf_paranoid: i32) -> Option<String> {
        if self.cap_sys_admin {
            return None;
        }
        if perf_needs_sys_admin(perf_paranoid) {
            return Some(format!(
                "oomwatch needs CAP_SYS_ADMIN to attach its tracepoints here: \
                 kernel.perf_event_paranoid is {perf_paranoid} (a Debian or Ubuntu kernel), which \
                 allows perf_event_open only with it, CAP_PERFMON or not; this process (euid {}) \
                 lacks it: run it as root, or add CAP_SYS_ADMIN to its capabilities (the daemon \
                 drops it once attached)",
                self.euid
            ));
        }
        if self.cap_bpf && self.cap_perfmon {
            return None;
        }
        let mut missing = Vec::new();
        if !self.cap_bpf {
            missing.push("CAP_BPF");
        }
        if !self.cap_perfmon {
            missing.push("CAP_PERFMON");
        }
        Some(format!(
            "oomwatch needs {} (or CAP_SYS_ADMIN) to load and attach its eBPF programs, and this \
             process (euid {}) lacks it: run it as root, e.g. `sudo oomwatch run`",
            missing.join(" and "),
            self.euid
        ))
    }
}

/// `kernel.perf_event_paranoid`, or 2 (mainline's default) when unreadable.
pub fn perf_event_paranoid() -> i32 {
    std::fs::read_to_string("/proc/sys/kernel/perf_event_paranoid")
        .ok()
        .and_then(|s| s.trim().parse().ok())
        .unwrap_or(2)
}

/// Above 2 (Debian's and Ubuntu's own levels 3 and 4, which mainline does
/// not have) `perf_event_open`, and so every classic tracepoint, kprobe and
/// the perf-based attach of a BPF program, is refused with EACCES without
/// CAP_SYS_ADMIN, whatever CAP_PERFMON says.
pub fn perf_needs_sys_admin(paranoid: i32) -> bool {
    paranoid > 2
}

/// Why a `perf_event_open` failed, when this process is the reason: the
/// sentence to add to the attach error, or `None`.
pub fn perf_open_hint() -> Option<String> {
    let paranoid = perf_event_paranoid();
    (perf_needs_sys_admin(paranoid) && !Privileges::current().cap_sys_admin).then(|| {
        format!(
            "kernel.perf_event_paranoid is {paranoid} here (a Debian or Ubuntu kernel), which \
             allows perf_event_open, and so a classic tracepoint, only with CAP_SYS_ADMIN: give \
             the daemon CAP_SYS_ADMIN (the packaged unit and the DaemonSet do; it is dropped \
             once the programs are attached)"
        )
    })
}

/// What decides which capabilities the daemon still uses once its programs
/// are loaded and attached, its task iterator loaded, `/dev/kmsg` open and
/// its socket bound.
///
/// Measured on 6.18 with the `capability:cap_capable` tracepoint, from the
/// first scrape on, through prediction passes (a task-iterator link each),
/// a memcg OOM kill, the hot probes attached (`tp_btf`) and detached again
/// and a new memory cgroup's OOM eventfd: the daemon's only checks were
/// CAP_SYS_ADMIN in `security_vm_enough_memory_mm` (mmap's overcommit
/// reserve, which it does not need). So the set is empty there; what
/// follows is what other kernels and configurations check.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AfterAttach {
    pub kernel: KernelVersion,
    /// The highest capability this kernel knows (`kernel/cap_last_cap`).
    pub cap_last_cap: u8,
    /// The programs on the hot events may be attached later as classic
    /// tracepoints (`--hot-probes pressure` where the kernel has no BTF
    /// tracepoint for them): `perf_event_open` and tracefs each time.
    pub late_tracepoint_attach: bool,
    pub euid: u32,
    /// `kernel.perf_event_paranoid`: above 2, perf_event_open wants
    /// CAP_SYS_ADMIN.
    pub perf_paranoid: i32,
}

/// A capability kept after attaching, and the reason, in a few words.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Kept {
    pub cap: Capability,
    pub why: &'static str,
}

impl AfterAttach {
    /// This process on this kernel.
    pub fn current(late_tracepoint_attach: bool) -> Self {
        let kernel = super::kernel_release().parse().unwrap_or(v(0, 0, 0));
        let cap_last_cap = caps::runtime::thread_all_supported()
            .iter()
            .map(Capability::index)
            .max()
            .unwrap_or(0);
        Self {
            kernel,
            cap_last_cap,
            late_tracepoint_attach,
            euid: nix::unistd::geteuid().as_raw(),
            perf_paranoid: perf_event_paranoid(),
        }
    }

    /// The capabilities the daemon keeps, each with its reason.
    pub fn keep(&self) -> Vec<Kept> {
        // Before 6.5 `__sys_bpf` refused every command (map reads, link
        // creation, the task iterator's pass) without CAP_BPF while
        // kernel.unprivileged_bpf_disabled is set, as distributions set it.
        let bpf_per_call = self.kernel < v(6, 5, 0);
        let mut kept = Vec::new();
        if u32::from(self.cap_last_cap) < CAP_BPF {
            if bpf_per_call || self.late_tracepoint_attach {
                kept.push(Kept {
                    cap: Capability::CAP_SYS_ADMIN,
                    why: "bpf() and perf_event_open on a kernel without CAP_BPF and CAP_PERFMON (before 5.8)",
                });
            }
        } else {
            if bpf_per_call {
                kept.push(Kept {
                    cap: Capability::CAP_BPF,
                    why: "every bpf() command checks it before 6.5 while kernel.unprivileged_bpf_disabled is set",
                });
            }
            if self.late_tracepoint_attach && perf_needs_sys_admin(self.perf_paranoid) {
                kept.push(Kept {
                    cap: Capability::CAP_SYS_ADMIN,
                    why: "perf_event_open under kernel.perf_event_paranoid above 2 (Debian, Ubuntu): the hot probes attach as classic tracepoints under memory pressure",
                });
            } else if self.late_tracepoint_attach {
                kept.push(Kept {
                    cap: Capability::CAP_PERFMON,
                    why: "perf_event_open: the hot probes attach as classic tracepoints under memory pressure",
                });
            }
        }
        if self.late_tracepoint_attach && self.euid != 0 {
            kept.push(Kept {
                cap: Capability::CAP_DAC_READ_SEARCH,
                why: "the hot tracepoints' ids in tracefs, readable by root only",
            });
        }
        kept
    }
}

/// What [`drop_after_attach`] did, for the one log line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Dropped {
    /// Left in the permitted and effective sets (and the bounding set).
    pub kept: Vec<Capability>,
    /// Were permitted, are no longer.
    pub dropped: Vec<Capability>,
    /// Still in the bounding set though not kept: dropping needs
    /// CAP_SETPCAP, which this process lacked (e.g. under the systemd unit,
    /// whose own bounding set already limits them).
    pub bounding_left: Vec<Capability>,
    /// The securebits set (SECBIT_NOROOT and friends, locked), or why not.
    pub securebits: Result<(), String>,
    /// Threads changed (each thread has its own credentials).
    pub threads: usize,
}

/// Why the capabilities could not be dropped.
#[derive(Debug, thiserror::Error)]
pub enum PrivilegeError {
    #[error("read this process's {set} capabilities: {source}")]
    Read {
        set: &'static str,
        #[source]
        source: caps::errors::CapsError,
    },
    #[error("drop capabilities ({step}): {source}")]
    Apply {
        step: &'static str,
        #[source]
        source: std::io::Error,
    },
    #[error("{0}")]
    Threads(String),
}

/// SECBIT_NOROOT: an `execve` by uid 0 no longer grants the bounding set
/// (with the inheritable and ambient sets empty, a child starts with no
/// capability); SECBIT_NO_CAP_AMBIENT_RAISE: none can be made ambient
/// again; KEEP_CAPS_LOCKED: a later setuid away from 0 still clears them.
/// Each locked (`include/uapi/linux/securebits.h`). SECBIT_NO_SETUID_FIXUP
/// is left off: it would keep capabilities across such a setuid.
const SECUREBITS: u32 = (1 << 0) | (1 << 1) | (1 << 5) | (1 << 6) | (1 << 7);
const CAP_SETPCAP: u32 = 8;

/// One thread's change, as plain numbers (read by the signal handler).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Plan {
    /// The permitted and effective sets after.
    permitted: u64,
    /// Capabilities to drop from the bounding set.
    bounding_drop: u64,
    /// Securebits to add, or 0.
    securebits: u32,
}

/// The steps of [`apply`], named in errors.
const STEPS: [&str; 5] = [
    "PR_CAP_AMBIENT_CLEAR_ALL",
    "PR_CAPBSET_DROP",
    "PR_SET_SECUREBITS",
    "PR_SET_NO_NEW_PRIVS",
    "capset",
];

/// Applies `plan` to the calling thread with raw system calls only (no
/// allocation, no lock: it also runs in a signal handler). Clears the
/// ambient set, drops from the bounding set, sets the securebits, sets
/// no_new_privs (so that no `execve` can gain what this thread lacks: a
/// setuid or file-capability binary runs without them), then sets the
/// permitted and effective sets and empties the inheritable one. Returns
/// the failed step and its errno.
fn apply(plan: &Plan) -> Result<(), (usize, i32)> {
    let errno = || std::io::Error::last_os_error().raw_os_error().unwrap_or(0);
    // SAFETY: prctl with integer arguments only.
    let r = unsafe {
        libc::prctl(
            libc::PR_CAP_AMBIENT,
            libc::PR_CAP_AMBIENT_CLEAR_ALL,
            0,
            0,
            0,
        )
    };
    // EINVAL: no ambient set (before 4.3), nothing to clear.
    if r != 0 && errno() != libc::EINVAL {
        return Err((0, errno()));
    }
    for cap in 0..64 {
        if plan.bounding_drop & (1 << cap) != 0 {
            // SAFETY: as above.
            if unsafe { libc::prctl(libc::PR_CAPBSET_DROP, cap as libc::c_ulong, 0, 0, 0) } != 0 {
                return Err((1, errno()));
            }
        }
    }
    if plan.securebits != 0 {
        // SAFETY: as above.
        let old = unsafe { libc::prctl(libc::PR_GET_SECUREBITS, 0, 0, 0, 0) };
        let new = (old.max(0) as u32) | plan.securebits;
        // SAFETY: as above.
        if unsafe { libc::prctl(libc::PR_SET_SECUREBITS, new as libc::c_ulong, 0, 0, 0) } != 0 {
            return Err((2, errno()));
        }
    }
    // SAFETY: as above.
    if unsafe { libc::prctl(libc::PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) } != 0 {
        return Err((3, errno()));
    }
    #[repr(C)]
    struct Header {
        version: u32,
        pid: i32,
    }
    #[repr(C)]
    struct Data {
        effective: u32,
        permitted: u32,
        inheritable: u32,
    }
    let header = Header {
        version: 0x2008_0522, // _LINUX_CAPABILITY_VERSION_3: two words
        pid: 0,
    };
    let words = [plan.permitted as u32, (plan.permitted >> 32) as u32];
    let data = words.map(|w| Data {
        effective: w,
        permitted: w,
        inheritable: 0,
    });
    // SAFETY: capset reads one header and two data words, both live here.
    if unsafe { libc::syscall(libc::SYS_capset, &header, data.as_ptr()) } != 0 {
        return Err((4, errno()));
    }
    Ok(())
}

// The plan every thread applies, and the handlers' answers.
static PLAN_PERMITTED: AtomicU64 = AtomicU64::new(0);
static PLAN_BOUNDING_DROP: AtomicU64 = AtomicU64::new(0);
static PLAN_SECUREBITS: AtomicU32 = AtomicU32::new(0);
static HANDLED: AtomicUsize = AtomicUsize::new(0);
/// The first failure in a handler: step << 32 | errno, or -1.
static FAILED: AtomicI64 = AtomicI64::new(-1);

extern "C" fn on_drop_signal(_: libc::c_int) {
    // SAFETY: this thread's errno, saved and restored around the calls.
    let saved = unsafe { *libc::__errno_location() };
    let plan = Plan {
        permitted: PLAN_PERMITTED.load(Ordering::Acquire),
        bounding_drop: PLAN_BOUNDING_DROP.load(Ordering::Acquire),
        securebits: PLAN_SECUREBITS.load(Ordering::Acquire),
    };
    if let Err((step, errno)) = apply(&plan) {
        let _ = FAILED.compare_exchange(
            -1,
            ((step as i64) << 32) | i64::from(errno),
            Ordering::AcqRel,
            Ordering::Acquire,
        );
    }
    HANDLED.fetch_add(1, Ordering::AcqRel);
    // SAFETY: as above.
    unsafe { *libc::__errno_location() = saved };
}

/// The capabilities in `mask`, in number order.
fn names(mask: u64) -> Vec<Capability> {
    let mut all: Vec<Capability> = caps::all()
        .into_iter()
        .filter(|c| mask & c.bitmask() != 0)
        .collect();
    all.sort_by_key(Capability::index);
    all
}

fn mask_of(set: CapSet, name: &'static str) -> Result<u64, PrivilegeError> {
    caps::read(None, set)
        .map(|s| s.iter().fold(0, |m, c| m | c.bitmask()))
        .map_err(|source| PrivilegeError::Read { set: name, source })
}

/// Whether one thread's credentials are those `plan` leaves, from its
/// `/proc/self/task/TID/status`.
fn thread_done(status: &procfs::process::Status, plan: &Plan, bounding: u64) -> bool {
    status.capprm == plan.permitted
        && status.capeff == plan.permitted
        && status.capinh == 0
        && status.capamb.unwrap_or(0) == 0
        && status.capbnd.unwrap_or(bounding) == bounding
        && status.nonewprivs.unwrap_or(1) == 1
}

/// Drops every capability but `keep` from every thread of this process:
/// the effective, permitted, inheritable and ambient sets, and, with
/// CAP_SETPCAP, the bounding set (then also the securebits
/// [`SECUREBITS`]); no_new_privs in any case. Capabilities are per thread
/// and `capset` changes only the caller's, so the other threads (the async
/// runtime's, the readers') are each sent a signal whose handler does the
/// same (libcap's psx does this for C); threads started later inherit it.
/// Done when `/proc` shows every thread changed.
pub fn drop_after_attach(keep: &[Capability]) -> Result<Dropped, PrivilegeError> {
    let permitted = mask_of(CapSet::Permitted, "permitted")?;
    let effective = mask_of(CapSet::Effective, "effective")?;
    let bounding = mask_of(CapSet::Bounding, "bounding")?;
    let want = keep.iter().fold(0, |m, c| m | c.bitmask());
    let setpcap = effective & (1 << CAP_SETPCAP) != 0;
    let mut plan = Plan {
        permitted: permitted & want,
        bounding_drop: if setpcap { bounding & !want } else { 0 },
        securebits: if setpcap { SECUREBITS } else { 0 },
    };
    // This thread first; a securebits refusal (a bit locked the other way
    // by whoever started us) is said, not fatal.
    let securebits = match apply(&plan) {
        Err((2, errno)) => {
            let why = format!(
                "PR_SET_SECUREBITS: {}",
                std::io::Error::from_raw_os_error(errno)
            );
            plan.securebits = 0;
            apply(&plan).map_err(apply_error)?;
            Err(why)
        }
        r => {
            r.map_err(apply_error)?;
            if setpcap {
                Ok(())
            } else {
                Err("no CAP_SETPCAP".into())
            }
        }
    };
    let bounding_after = bounding & !plan.bounding_drop;
    let threads = each_thread(&plan, bounding_after)?;
    Ok(Dropped {
        kept: names(plan.permitted),
        dropped: names(permitted & !plan.permitted),
        bounding_left: names(bounding_after & !want),
        securebits,
        threads,
    })
}

fn apply_error((step, errno): (usize, i32)) -> PrivilegeError {
    PrivilegeError::Apply {
        step: STEPS[step],
        source: std::io::Error::from_raw_os_error(errno),
    }
}

/// Has every other thread apply `plan` (see [`drop_after_attach`]);
/// returns how many threads the process has, all changed.
fn each_thread(plan: &Plan, bounding: u64) -> Result<usize, PrivilegeError> {
    use std::time::{Duration, Instant};
    PLAN_PERMITTED.store(plan.permitted, Ordering::Release);
    PLAN_BOUNDING_DROP.store(plan.bounding_drop, Ordering::Release);
    PLAN_SECUREBITS.store(plan.securebits, Ordering::Release);
    // The last real-time signal: nothing in oomwatch, tokio or aya uses it;
    // left installed (a stray one applies the same plan again).
    let sig = libc::SIGRTMAX();
    // SAFETY: the handler makes only async-signal-safe calls (prctl,
    // capset, atomics) and restores errno.
    let installed = unsafe {
        let mut act: libc::sigaction = std::mem::zeroed();
        act.sa_sigaction = on_drop_signal as *const () as libc::sighandler_t;
        act.sa_flags = libc::SA_RESTART;
        libc::sigemptyset(&mut act.sa_mask);
        libc::sigaction(sig, &act, std::ptr::null_mut())
    };
    if installed != 0 {
        return Err(PrivilegeError::Apply {
            step: "sigaction",
            source: std::io::Error::last_os_error(),
        });
    }
    let me = procfs::process::Process::myself()
        .map_err(|e| PrivilegeError::Threads(format!("read /proc/self/task: {e}")))?;
    let pid = me.pid;
    // A thread being started while we look may come from one not yet
    // changed: look again until a whole look finds nothing to change.
    for _ in 0..20 {
        let mut pending = Vec::new();
        let mut total = 0;
        for task in me
            .tasks()
            .map_err(|e| PrivilegeError::Threads(format!("list /proc/self/task: {e}")))?
            .flatten()
        {
            // A thread that exits meanwhile is no concern.
            let Ok(status) = task.status() else { continue };
            total += 1;
            if !thread_done(&status, plan, bounding) {
                pending.push((task.tid, status.name));
            }
        }
        if pending.is_empty() {
            return Ok(total);
        }
        let before = HANDLED.load(Ordering::Acquire);
        let mut sent = 0;
        for (tid, _) in &pending {
            // SAFETY: tgkill with integer arguments; ESRCH (gone) is fine.
            if unsafe { libc::syscall(libc::SYS_tgkill, pid, *tid, sig) } == 0 {
                sent += 1;
            }
        }
        let deadline = Instant::now() + Duration::from_secs(2);
        while HANDLED.load(Ordering::Acquire) - before < sent {
            if Instant::now() > deadline {
                let names: Vec<String> =
                    pending.iter().map(|(t, n)| format!("{n} ({t})")).collect();
                return Err(PrivilegeError::Threads(format!(
                    "threads {} did not take the capability drop within 2 s (signal {sig} blocked?)",
                    names.join(", ")
                )));
            }
            std::thread::yield_now();
        }
        let failed = FAILED.load(Ordering::Acquire);
        if failed >= 0 {
            return Err(apply_error(((failed >> 32) as usize, failed as i32)));
        }
    }
    Err(PrivilegeError::Threads(
        "threads kept appearing with their capabilities for 20 looks".into(),
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn after(kernel: &str, cap_last_cap: u8, late: bool, euid: u32) -> Vec<Capability> {
        after_paranoid(kernel, cap_last_cap, late, euid, 2)
    }

    fn after_paranoid(
        kernel: &str,
        cap_last_cap: u8,
        late: bool,
        euid: u32,
        perf_paranoid: i32,
    ) -> Vec<Capability> {
        AfterAttach {
            kernel: kernel.parse().unwrap(),
            cap_last_cap,
            late_tracepoint_attach: late,
            euid,
            perf_paranoid,
        }
        .keep()
        .into_iter()
        .map(|k| k.cap)
        .collect()
    }

    #[test]
    fn nothing_is_kept_after_attaching_on_6_5_and_later_with_btf_tracepoints() {
        assert_eq!(after("6.18.0", 40, false, 0), vec![]);
    }

    #[test]
    fn cap_bpf_is_kept_before_6_5() {
        assert_eq!(after("6.1.100", 40, false, 0), vec![Capability::CAP_BPF]);
        assert_eq!(
            after("5.15.0", 40, true, 0),
            vec![Capability::CAP_BPF, Capability::CAP_PERFMON]
        );
    }

    #[test]
    fn sys_admin_is_kept_without_cap_bpf() {
        assert_eq!(
            after("5.4.0", 37, false, 0),
            vec![Capability::CAP_SYS_ADMIN]
        );
    }

    #[test]
    fn late_tracepoints_keep_perfmon_and_tracefs_for_a_non_root_uid() {
        assert_eq!(after("6.18.0", 40, true, 0), vec![Capability::CAP_PERFMON]);
        assert_eq!(
            after("6.18.0", 40, true, 998),
            vec![Capability::CAP_PERFMON, Capability::CAP_DAC_READ_SEARCH]
        );
    }

    /// Debian's and Ubuntu's kernels refuse perf_event_open without
    /// CAP_SYS_ADMIN at their paranoid levels 3 and 4: late classic
    /// tracepoints need it kept there; with BTF tracepoints nothing changes.
    #[test]
    fn late_tracepoints_keep_sys_admin_where_perf_is_paranoid() {
        assert_eq!(
            after_paranoid("6.12.0", 40, true, 0, 3),
            vec![Capability::CAP_SYS_ADMIN]
        );
        assert_eq!(
            after_paranoid("5.10.0", 40, true, 0, 4),
            vec![Capability::CAP_BPF, Capability::CAP_SYS_ADMIN]
        );
        assert_eq!(after_paranoid("6.12.0", 40, false, 0, 3), vec![]);
        assert!(perf_needs_sys_admin(3) && !perf_needs_sys_admin(2));
    }

    #[test]
    fn bpf_and_perfmon_do_not_suffice_where_perf_is_paranoid() {
        let caps = (1 << CAP_BPF) | (1 << CAP_PERFMON);
        let p = Privileges::from_capeff(0, caps);
        assert_eq!(p.missing_for_tracing_under(2), None);
        let msg = p.missing_for_tracing_under(3).unwrap();
        assert!(
            msg.contains("CAP_SYS_ADMIN") && msg.contains("is 3"),
            "{msg}"
        );
        let admin = Privileges::from_capeff(0, caps | (1 << CAP_SYS_ADMIN));
        assert_eq!(admin.missing_for_tracing_under(4), None);
    }

    #[test]
    fn a_thread_is_done_only_with_every_set_as_planned() {
        let plan = Plan {
            permitted: 1 << CAP_BPF,
            bounding_drop: 0,
            securebits: 0,
        };
        let status = |prm: u64, bnd: u64, amb: u64| {
            let text = format!(
                "Name:\tx\nUmask:\t0022\nState:\tS (sleeping)\nTgid:\t1\nNgid:\t0\nPid:\t1\nPPid:\t0\nTracerPid:\t0\nUid:\t0\t0\t0\t0\nGid:\t0\t0\t0\t0\nFDSize:\t64\nGroups:\t\nThreads:\t1\nSigQ:\t0/1\nSigPnd:\t0\nShdPnd:\t0\nSigBlk:\t0\nSigIgn:\t0\nSigCgt:\t0\nCapInh:\t0000000000000000\nCapPrm:\t{prm:016x}\nCapEff:\t{prm:016x}\nCapBnd:\t{bnd:016x}\nCapAmb:\t{amb:016x}\nNoNewPrivs:\t1\nvoluntary_ctxt_switches:\t1\nnonvoluntary_ctxt_switches:\t1\n"
            );
            <procfs::process::Status as procfs::FromRead>::from_read(text.as_bytes()).unwrap()
        };
        let bpf = 1 << CAP_BPF;
        assert!(thread_done(&status(bpf, bpf, 0), &plan, bpf));
        assert!(!thread_done(&status(bpf | 1, bpf, 0), &plan, bpf));
        assert!(!thread_done(&status(bpf, u64::MAX >> 24, 0), &plan, bpf));
        assert!(!thread_done(&status(bpf, bpf, bpf), &plan, bpf));
    }

    #[test]
    fn root_with_full_caps_needs_nothing() {
        assert_eq!(
            Privileges::from_capeff(0, 0x1ff_ffff_ffff).missing_for_tracing_under(2),
            None
        );
    }

    #[test]
    fn bpf_and_perfmon_suffice_without_sys_admin() {
        let caps = (1 << CAP_BPF) | (1 << CAP_PERFMON);
        assert_eq!(
            Privileges::from_capeff(1000, caps).missing_for_tracing_under(2),
            None
        );
    }

    #[test]
    fn unprivileged_names_both_capabilities() {
        let msg = Privileges::from_capeff(1000, 0)
            .missing_for_tracing_under(2)
            .unwrap();
        assert!(msg.contains("CAP_BPF and CAP_PERFMON"), "{msg}");
        assert!(msg.contains("euid 1000"), "{msg}");
        let msg = Privileges::from_capeff(1000, 1 << CAP_BPF)
            .missing_for_tracing_under(2)
            .unwrap();
        assert!(msg.contains("needs CAP_PERFMON (or"), "{msg}");
    }
}
