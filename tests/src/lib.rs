//! Helpers for oomwatch's privileged integration tests: memory cgroups that
//! clean up after themselves, and allocation workloads to put in them.
//!
//! These tests load eBPF and trigger real OOM kills, always inside a memory
//! cgroup whose limit was set and read back first: never host-wide.

use std::{
    io::{BufRead as _, BufReader, Write as _},
    os::unix::process::ExitStatusExt as _,
    path::{Path, PathBuf},
    process::{Child, ChildStdout, Command, ExitStatus, Stdio},
    sync::atomic::{AtomicU32, Ordering},
    time::{Duration, Instant},
};

use anyhow::{Context as _, bail};
use oomwatch::{
    ebpf::{Probes, Victim},
    host::cgroup::{self, CgroupVersion, Hierarchy},
};

/// Panics unless the test runs as root (it loads eBPF and creates cgroups).
pub fn require_root() {
    assert!(
        nix::unistd::geteuid().is_root(),
        "the oomwatch-tests integration tests load eBPF and create memory cgroups: run them as \
         root (`cargo xtask test` does)"
    );
}

mod skip;
pub use skip::skip;

/// A memory cgroup created for one test, with `oomwatch` in its name and a
/// verified limit. Dropping it kills whatever is still inside and removes it,
/// whether the test passed or panicked.
pub struct MemcgGuard {
    pub hierarchy: Hierarchy,
    pub dir: PathBuf,
    /// Path inside the hierarchy, e.g. `/oomwatch-test-123-1`.
    pub path: String,
}

static SEQ: AtomicU32 = AtomicU32::new(0);

fn write(path: &Path, value: &str) -> anyhow::Result<()> {
    std::fs::write(path, value).with_context(|| format!("write {value:?} to {}", path.display()))
}

fn read(path: &Path) -> anyhow::Result<String> {
    std::fs::read_to_string(path).with_context(|| format!("read {}", path.display()))
}

impl MemcgGuard {
    /// Creates `oomwatch-test-<pid>-<n>` under the memory controller's root with
    /// `limit_bytes` as its hard limit (swap included), and reads the limit
    /// back. Refuses (Err) when the limit cannot be set: a workload must never
    /// run without it.
    pub fn create(limit_bytes: u64) -> anyhow::Result<Self> {
        Self::create_with(Some(limit_bytes))
    }

    /// As [`MemcgGuard::create`]; `None` leaves the cgroup without a limit
    /// (for a limited child below it).
    pub fn create_with(limit_bytes: Option<u64>) -> anyhow::Result<Self> {
        let hierarchy = cgroup::memory_hierarchy()
            .context("no mounted cgroup hierarchy has the memory controller")?;
        let name = format!(
            "oomwatch-test-{}-{}",
            std::process::id(),
            SEQ.fetch_add(1, Ordering::Relaxed)
        );
        let dir = hierarchy.mount_point.join(&name);
        std::fs::create_dir(&dir).with_context(|| format!("create {}", dir.display()))?;
        let guard = MemcgGuard {
            hierarchy,
            dir,
            path: format!("/{name}"),
        };
        if let Some(limit) = limit_bytes {
            guard.set_limit(limit)?;
        }
        Ok(guard)
    }

    fn set_limit(&self, limit: u64) -> anyhow::Result<()> {
        let (file, swap_file, swap_value) = match self.hierarchy.version {
            CgroupVersion::V1 => (
                "memory.limit_in_bytes",
                "memory.memsw.limit_in_bytes",
                limit.to_string(),
            ),
            CgroupVersion::V2 => ("memory.max", "memory.swap.max", "0".to_owned()),
        };
        write(&self.dir.join(file), &limit.to_string())?;
        let swap = self.dir.join(swap_file);
        if swap.exists() {
            write(&swap, &swap_value)?;
        }
        let back: u64 = read(&self.dir.join(file))?
            .trim()
            .parse()
            .context("parse the limit read back")?;
        if back != limit {
            bail!(
                "{} reads {back} after writing {limit}: refusing to run a workload without its limit",
                self.dir.join(file).display()
            );
        }
        Ok(())
    }

    /// Moves `pid` into this cgroup.
    pub fn add(&self, pid: u32) -> anyhow::Result<()> {
        write(&self.dir.join("cgroup.procs"), &pid.to_string())
    }

    /// The cgroup's OOM kill counter (`oom_kill` in v1 `memory.oom_control`
    /// or v2 `memory.events`).
    pub fn oom_kills(&self) -> anyhow::Result<u64> {
        let file = match self.hierarchy.version {
            CgroupVersion::V1 => "memory.oom_control",
            CgroupVersion::V2 => "memory.events",
        };
        let text = read(&self.dir.join(file))?;
        text.lines()
            .find_map(|l| l.strip_prefix("oom_kill "))
            .context("no oom_kill line")?
            .trim()
            .parse()
            .context("parse oom_kill")
    }

    /// cgroup v1 only: disable (or re-enable) this cgroup's OOM killer. With it
    /// disabled, a task that hits the limit waits in the kernel (`under_oom`)
    /// instead of anyone being killed: the OOM is frozen at its moment.
    pub fn set_oom_kill_disable(&self, disable: bool) -> anyhow::Result<()> {
        if self.hierarchy.version != CgroupVersion::V1 {
            bail!("oom_kill_disable exists only in cgroup v1's memory.oom_control");
        }
        write(
            &self.dir.join("memory.oom_control"),
            if disable { "1" } else { "0" },
        )
    }

    /// cgroup v1: whether a task is waiting in a frozen OOM (`under_oom 1`).
    pub fn under_oom(&self) -> bool {
        read(&self.dir.join("memory.oom_control"))
            .map(|t| t.lines().any(|l| l.trim() == "under_oom 1"))
            .unwrap_or(false)
    }

    /// Creates `name` below this cgroup, with a limit or without one.
    pub fn child(&self, name: &str, limit_bytes: Option<u64>) -> anyhow::Result<Self> {
        assert!(
            name.contains("oomwatch"),
            "test cgroups carry oomwatch in their name"
        );
        let dir = self.dir.join(name);
        std::fs::create_dir(&dir).with_context(|| format!("create {}", dir.display()))?;
        let guard = MemcgGuard {
            hierarchy: self.hierarchy.clone(),
            dir,
            path: format!("{}/{name}", self.path),
        };
        if let Some(limit) = limit_bytes {
            guard.set_limit(limit)?;
        }
        Ok(guard)
    }

    /// The cgroup id oomwatch's eBPF side reports for this cgroup.
    pub fn id(&self) -> u64 {
        cgroup::cgroup_id(&self.dir).expect("stat the test cgroup")
    }

    fn pids(&self) -> Vec<i32> {
        read(&self.dir.join("cgroup.procs"))
            .unwrap_or_default()
            .lines()
            .filter_map(|l| l.trim().parse().ok())
            .collect()
    }
}

impl Drop for MemcgGuard {
    fn drop(&mut self) {
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let pids = self.pids();
            if pids.is_empty() {
                break;
            }
            for pid in pids {
                let _ = nix::sys::signal::kill(
                    nix::unistd::Pid::from_raw(pid),
                    nix::sys::signal::Signal::SIGKILL,
                );
            }
            if Instant::now() > deadline {
                break;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        loop {
            match std::fs::remove_dir(&self.dir) {
                Ok(()) => return,
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => return,
                Err(e) if Instant::now() > deadline => {
                    eprintln!("could not remove test cgroup {}: {e}", self.dir.display());
                    return;
                }
                Err(_) => std::thread::sleep(Duration::from_millis(50)),
            }
        }
    }
}

/// A running `oomwatch-hog`, killed when dropped.
pub struct Hog {
    pub child: Child,
    pub mib: usize,
    stdout: BufReader<ChildStdout>,
}

impl Hog {
    /// Starts a hog of `mib` MiB inside `memcg` and lets it allocate. `bin` is
    /// the `oomwatch-hog` executable (`env!("CARGO_BIN_EXE_oomwatch-hog")` in
    /// a test; cargo defines it only there).
    pub fn start(bin: &str, memcg: &MemcgGuard, mib: usize) -> anyhow::Result<Self> {
        Self::start_mode(bin, memcg, mib, &[])
    }

    /// As [`Hog::start`], with a mode (`sparse`, `shmem`, `file`,
    /// `threads N`; see the hog's own documentation).
    pub fn start_mode(
        bin: &str,
        memcg: &MemcgGuard,
        mib: usize,
        mode: &[&str],
    ) -> anyhow::Result<Self> {
        let mut child = Command::new(bin)
            .arg(mib.to_string())
            .args(mode)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .context("spawn oomwatch-hog")?;
        let stdout = BufReader::new(child.stdout.take().context("hog stdout")?);
        let mut hog = Hog { child, mib, stdout };
        // Into the cgroup first, then allocate: every page is charged there.
        memcg.add(hog.pid())?;
        hog.child
            .stdin
            .as_mut()
            .context("hog stdin")?
            .write_all(b"go\n")
            .context("start the hog")?;
        Ok(hog)
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Waits until the hog has touched all its memory (true), or died or got
    /// stuck for 30 s, e.g. in a frozen OOM (false).
    pub fn wait_ready(&mut self) -> bool {
        self.next_line().as_deref() == Some("ready")
    }

    /// Sends one line to the hog (`chunks` mode: one step) and returns the
    /// line it answers, trimmed; None if it has died or said nothing in 30 s.
    pub fn ask(&mut self, line: &str) -> Option<String> {
        let stdin = self.child.stdin.as_mut()?;
        stdin.write_all(line.as_bytes()).ok()?;
        stdin.write_all(b"\n").ok()?;
        stdin.flush().ok()?;
        self.next_line()
    }

    /// The hog's next line on stdout, trimmed; None at its end or after 30 s
    /// of silence.
    fn next_line(&mut self) -> Option<String> {
        use std::os::fd::AsFd as _;
        if self.stdout.buffer().is_empty() {
            let mut fds = [nix::poll::PollFd::new(
                self.stdout.get_ref().as_fd(),
                nix::poll::PollFlags::POLLIN,
            )];
            match nix::poll::poll(&mut fds, nix::poll::PollTimeout::from(30_000u16)) {
                Ok(n) if n > 0 => {}
                _ => return None,
            }
        }
        let mut line = String::new();
        match self.stdout.read_line(&mut line) {
            Ok(n) if n > 0 => Some(line.trim().to_owned()),
            _ => None,
        }
    }

    /// The exit status, if the hog has exited.
    pub fn try_wait(&mut self) -> Option<ExitStatus> {
        self.child.try_wait().ok().flatten()
    }

    /// Waits up to `within` for the hog to exit (an OOM kill, normally);
    /// None if it is still alive then.
    pub fn wait_exit(&mut self, within: Duration) -> Option<ExitStatus> {
        let deadline = Instant::now() + within;
        loop {
            if let Some(s) = self.try_wait() {
                return Some(s);
            }
            if Instant::now() >= deadline {
                return None;
            }
            std::thread::sleep(Duration::from_millis(5));
        }
    }
}

impl Drop for Hog {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Keeps the calling thread, and every process it starts while this lives,
/// on one CPU (the first it may run on); the old set comes back on drop.
///
/// Why a memcg test wants this: a charge takes 64 pages at a time
/// (`MEMCG_CHARGE_BATCH`) and keeps what it does not use in a per-CPU stock,
/// counted in the memcg's usage. When a charge fails, the kernel drains the
/// stock of its own CPU at once but only schedules the other CPUs' drains
/// (`drain_all_stock`), and goes on to the OOM without waiting for them. On a
/// busy machine they run after it: a memcg frozen in its OOM (v1
/// `oom_kill_disable`) then reads up to 64 pages per other CPU below its
/// limit, and a new charge of a page would fit: the state the test meant to
/// freeze is not the one it reads. With every task of the memcg on one CPU
/// there is no other CPU's stock to drain later.
pub struct OneCpu {
    old: libc::cpu_set_t,
    pub cpu: usize,
}

impl OneCpu {
    pub fn pin() -> anyhow::Result<Self> {
        // SAFETY: cpu_set_t is plain data; the calls get its size and fill it.
        unsafe {
            let mut old: libc::cpu_set_t = std::mem::zeroed();
            if libc::sched_getaffinity(0, std::mem::size_of_val(&old), &mut old) != 0 {
                anyhow::bail!("sched_getaffinity: {}", std::io::Error::last_os_error());
            }
            let cpu = (0..libc::CPU_SETSIZE as usize)
                .find(|&c| libc::CPU_ISSET(c, &old))
                .context("this thread may run on no CPU")?;
            let mut one: libc::cpu_set_t = std::mem::zeroed();
            libc::CPU_SET(cpu, &mut one);
            if libc::sched_setaffinity(0, std::mem::size_of_val(&one), &one) != 0 {
                anyhow::bail!(
                    "sched_setaffinity to CPU {cpu}: {}",
                    std::io::Error::last_os_error()
                );
            }
            Ok(OneCpu { old, cpu })
        }
    }
}

impl Drop for OneCpu {
    fn drop(&mut self) {
        // SAFETY: restores the set read in `pin`.
        unsafe {
            libc::sched_setaffinity(0, std::mem::size_of_val(&self.old), &self.old);
        }
    }
}

/// Starts hogs of `sizes` MiB one after the other in `memcg` and waits until
/// exactly one of them has exited; returns its index and exit status. Each
/// hog is waited for until ready (or dead) before the next starts, so the
/// cgroup fills in a known order.
pub fn run_hogs_until_one_dies(
    bin: &str,
    memcg: &MemcgGuard,
    sizes: &[usize],
) -> anyhow::Result<(Vec<Hog>, usize, ExitStatus)> {
    let mut hogs = Vec::new();
    for &mib in sizes {
        let mut hog = Hog::start(bin, memcg, mib)?;
        hog.wait_ready();
        hogs.push(hog);
    }
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let dead: Vec<(usize, ExitStatus)> = hogs
            .iter_mut()
            .enumerate()
            .filter_map(|(i, h)| h.try_wait().map(|s| (i, s)))
            .collect();
        match dead.as_slice() {
            [] if Instant::now() < deadline => std::thread::sleep(Duration::from_millis(20)),
            [] => bail!("no hog died within 30 s: did the cgroup limit apply?"),
            [(i, status)] => return Ok((hogs, *i, *status)),
            many => bail!("{} hogs died, expected one: {many:?}", many.len()),
        }
    }
}

/// Hog sizes (MiB) for a 64 MiB cgroup: each fits alone, the three together
/// do not. The last one runs into the limit at roughly 30 MiB, larger than
/// either of the others, so the kernel kills the task that is allocating.
///
/// Not `[20, 26, 32]`: there the middle hog is the victim while the last keeps
/// charging, and on 6.18.44 the kernel now and then killed a second hog 4 ms
/// later, while the first victim's memory was still being released (seen in
/// dmesg: two "Killed process" lines for one cgroup), so "exactly one kill"
/// did not hold.
pub const THREE_HOGS_MIB: [usize; 3] = [12, 16, 48];

/// Whether `status` is death by SIGKILL (what the OOM killer sends).
pub fn killed_by_sigkill(status: &ExitStatus) -> bool {
    status.signal() == Some(libc::SIGKILL)
}

/// oomwatch's eBPF victim stream, collected in the background for a test.
pub struct VictimWatch {
    rt: tokio::runtime::Runtime,
    rx: tokio::sync::mpsc::UnboundedReceiver<Victim>,
    _probes: Probes,
}

impl VictimWatch {
    /// Loads and attaches the probes; panics if this kernel cannot take them.
    pub fn start() -> Self {
        let rt = tokio::runtime::Runtime::new().expect("tokio runtime");
        let (probes, rx) = {
            let _enter = rt.enter();
            let mut probes = Probes::load().expect("load and attach the eBPF programs");
            let mut victims = probes.victims().expect("open the ring buffer");
            let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
            rt.spawn(async move {
                while let Ok(batch) = victims.next_batch().await {
                    for v in batch.victims {
                        let _ = tx.send(v);
                    }
                }
            });
            (probes, rx)
        };
        VictimWatch {
            rt,
            rx,
            _probes: probes,
        }
    }

    /// Whether the optional probes are all running.
    pub fn degraded(&self) -> Vec<oomwatch::ebpf::Degraded> {
        self._probes.degraded.clone()
    }

    /// The victims among `pids`, in the kernel's order: waits up to
    /// `timeout` for the first, then `grace` for any more.
    pub fn victims_among(
        &mut self,
        pids: &[u32],
        timeout: Duration,
        grace: Duration,
    ) -> Vec<Victim> {
        let rx = &mut self.rx;
        self.rt.block_on(async {
            let mut ours = Vec::new();
            let deadline = tokio::time::Instant::now() + timeout;
            while let Ok(Some(v)) = tokio::time::timeout_at(deadline, rx.recv()).await {
                if pids.contains(&v.pid) {
                    ours.push(v);
                    break;
                }
            }
            if !ours.is_empty() {
                let end = tokio::time::Instant::now() + grace;
                while let Ok(Some(v)) = tokio::time::timeout_at(end, rx.recv()).await {
                    if pids.contains(&v.pid) {
                        ours.push(v);
                    }
                }
            }
            ours
        })
    }
}

/// A small ext4 filesystem on a loop device, mounted under `/tmp` for one
/// test (`oomwatch` in its image and mount names). It can be frozen
/// (`fsfreeze`): writers then sleep uninterruptibly. Dropping it thaws,
/// unmounts and deletes it.
pub struct LoopFs {
    pub image: PathBuf,
    pub mount: PathBuf,
}

fn run(cmd: &str, args: &[&str]) -> anyhow::Result<()> {
    let out = Command::new(cmd)
        .args(args)
        .output()
        .with_context(|| format!("run {cmd}"))?;
    if !out.status.success() {
        bail!(
            "{cmd} {}: {}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(())
}

impl LoopFs {
    /// None when this machine cannot loop-mount (no loop devices, no
    /// mkfs.ext4 or fsfreeze), with the reason.
    pub fn create() -> Result<Self, String> {
        let n = SEQ.fetch_add(1, Ordering::Relaxed);
        let image = PathBuf::from(format!("/tmp/oomwatch-fs-{}-{n}.img", std::process::id()));
        let mount = PathBuf::from(format!("/tmp/oomwatch-mnt-{}-{n}", std::process::id()));
        let fs = LoopFs { image, mount };
        let setup = || -> anyhow::Result<()> {
            std::fs::File::create(&fs.image)?.set_len(16 << 20)?;
            run("mkfs.ext4", &["-q", "-F", &fs.image.to_string_lossy()])?;
            std::fs::create_dir_all(&fs.mount)?;
            run(
                "mount",
                &[
                    "-o",
                    "loop",
                    &fs.image.to_string_lossy(),
                    &fs.mount.to_string_lossy(),
                ],
            )?;
            Ok(())
        };
        setup().map_err(|e| format!("{e:#}"))?;
        Ok(fs)
    }

    pub fn freeze(&self) -> anyhow::Result<()> {
        run("fsfreeze", &["-f", &self.mount.to_string_lossy()])
    }

    pub fn thaw(&self) {
        let _ = run("fsfreeze", &["-u", &self.mount.to_string_lossy()]);
    }
}

impl Drop for LoopFs {
    fn drop(&mut self) {
        self.thaw();
        let _ = run("umount", &[&self.mount.to_string_lossy()]);
        let _ = std::fs::remove_dir(&self.mount);
        let _ = std::fs::remove_file(&self.image);
    }
}

/// The kernel's log from now on: `/dev/kmsg` opened at its end,
/// non-blocking, so a read returns what was logged since.
pub struct KmsgTail {
    file: std::fs::File,
}

impl KmsgTail {
    pub fn from_now() -> Self {
        let file = std::fs::File::open("/dev/kmsg").expect("open /dev/kmsg");
        nix::unistd::lseek(&file, 0, nix::unistd::Whence::SeekEnd).unwrap();
        let flags = nix::fcntl::fcntl(&file, nix::fcntl::FcntlArg::F_GETFL).unwrap();
        nix::fcntl::fcntl(
            &file,
            nix::fcntl::FcntlArg::F_SETFL(
                nix::fcntl::OFlag::from_bits_truncate(flags) | nix::fcntl::OFlag::O_NONBLOCK,
            ),
        )
        .unwrap();
        KmsgTail { file }
    }

    /// The messages (one per line, record prefixes removed) logged since
    /// `from_now`, once the kill of `victim` is among them (10 s at most).
    pub fn messages_until_kill(&mut self, victim: u32) -> String {
        use std::io::Read as _;
        let mut records = String::new();
        let deadline = Instant::now() + Duration::from_secs(10);
        // /dev/kmsg returns one record per read.
        let mut buf = vec![0u8; 8192];
        while Instant::now() < deadline {
            match self.file.read(&mut buf) {
                Ok(n) if n > 0 => records.push_str(&String::from_utf8_lossy(&buf[..n])),
                // Records overwritten before we read them.
                Err(e) if e.raw_os_error() == Some(libc::EPIPE) => continue,
                _ => {
                    if records.contains(&format!("Killed process {victim} ")) {
                        break;
                    }
                    std::thread::sleep(Duration::from_millis(50));
                }
            }
        }
        oomwatch::replay::parse::kmsg_messages(&records)
    }
}

/// Waits until the kernel will print a full OOM report again: it prints at
/// most 10 per 5 s (`oom_kill.c`'s ratelimit; the kill line itself is never
/// limited), and earlier tests may have used them up. Tests that read the
/// report call this before they trigger their OOM.
pub fn wait_for_a_fresh_report_window() {
    std::thread::sleep(Duration::from_millis(5_500));
}

/// GET `path` from `addr` (HTTP/1.1, one request): the body of a 200
/// answer, or None (nothing listens yet, another status, a timeout).
pub fn http_get(addr: &str, path: &str) -> Option<String> {
    use std::io::{Read as _, Write as _};
    let mut s = std::net::TcpStream::connect(addr).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(5))).ok()?;
    write!(
        s,
        "GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n"
    )
    .ok()?;
    let mut resp = String::new();
    s.read_to_string(&mut resp).ok()?;
    let (head, body) = resp.split_once("\r\n\r\n")?;
    head.starts_with("HTTP/1.1 200").then(|| body.to_owned())
}

/// The value of an unlabelled sample in Prometheus text, e.g. `name 3`.
pub fn sample(text: &str, name: &str) -> Option<f64> {
    text.lines()
        .filter(|l| !l.starts_with('#'))
        .find_map(|l| l.strip_prefix(name)?.strip_prefix(' ')?.trim().parse().ok())
}
