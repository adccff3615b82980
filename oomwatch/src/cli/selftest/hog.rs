//! The selftest's workload: `oomwatch selftest-hog` (hidden from `--help`),
//! which `oomwatch selftest` starts as `/proc/self/exe` so a user's kernel
//! needs nothing but the one binary.
//!
//! Protocol on stdin/stdout, one line each:
//! 1. the hog sets its own `oom_score_adj` and says `adj ok`, or `adj
//!    refused: <error>` and exits 3 (lowering it needs CAP_SYS_RESOURCE);
//! 2. it waits for a line on stdin (`go`): the runner moves it into its
//!    memory cgroup first, so every page is charged there;
//! 3. it builds its memory and says `ready` (with `--share-mm`, `ready
//!    <pid>` naming the process that shares its memory), then waits until
//!    killed.

use std::io::{BufRead as _, Write as _};

/// The kind of memory a hog builds.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Kind {
    /// Private anonymous memory, every page touched.
    Anon,
    /// A shared memfd mapping, every page touched (RssShmem).
    Shmem,
    /// A page-table-heavy sparse mapping: one page touched per span that
    /// one page-table page maps (2 MiB with 4 KiB pages), so the page
    /// tables cost as much as the data.
    Sparse,
    /// `--threads` threads, each touching its share of anonymous memory.
    Threads,
}

/// `oomwatch selftest-hog`.
#[derive(Debug, Clone, clap::Args)]
pub struct Flags {
    /// MiB of memory to build.
    #[arg(long)]
    pub mib: usize,
    #[arg(long, value_enum, default_value_t = Kind::Anon)]
    pub kind: Kind,
    /// Threads for `--kind threads`.
    #[arg(long, default_value_t = 4, value_parser = clap::value_parser!(u16).range(1..=64))]
    pub threads: u16,
    /// The oom_score_adj to set on itself.
    #[arg(long, default_value_t = 0, allow_hyphen_values = true,
          value_parser = clap::value_parser!(i16).range(-1000..=1000))]
    pub adj: i16,
    /// Once built, start a second process sharing this memory (CLONE_VM
    /// without CLONE_THREAD): both have the very same points.
    #[arg(long)]
    pub share_mm: bool,
}

fn say(line: &str) {
    let mut out = std::io::stdout().lock();
    let _ = writeln!(out, "{line}");
    let _ = out.flush();
}

fn fail(code: i32, what: &str) -> ! {
    say(&format!(
        "error: {what}: {}",
        std::io::Error::last_os_error()
    ));
    std::process::exit(code)
}

fn page_size() -> usize {
    // SAFETY: sysconf has no memory-safety preconditions.
    let ps = unsafe { libc::sysconf(libc::_SC_PAGESIZE) };
    if ps > 0 { ps as usize } else { 4096 }
}

/// A fresh mapping of `len` bytes (exits on failure), without transparent
/// huge pages so every touch charges one small page.
fn map(len: usize, flags: i32, fd: i32) -> *mut u8 {
    // SAFETY: a fresh mapping; failure is checked.
    let p = unsafe {
        libc::mmap(
            std::ptr::null_mut(),
            len,
            libc::PROT_READ | libc::PROT_WRITE,
            flags,
            fd,
            0,
        )
    };
    if p == libc::MAP_FAILED {
        fail(4, &format!("mmap {len} bytes"));
    }
    // SAFETY: advice on the mapping just made; failure is harmless.
    unsafe { libc::madvise(p, len, libc::MADV_NOHUGEPAGE) };
    p.cast()
}

fn touch(ptr: *mut u8, len: usize, stride: usize) {
    let mut off = 0;
    while off < len {
        // SAFETY: ptr..ptr+len is a live writable mapping.
        unsafe { ptr.add(off).write_volatile(1) };
        off += stride;
    }
}

/// Builds `mib` MiB of memory of `kind`.
fn build(f: &Flags) {
    let len = f.mib << 20;
    let ps = page_size();
    let private = libc::MAP_PRIVATE | libc::MAP_ANONYMOUS;
    match f.kind {
        Kind::Anon => touch(map(len, private, -1), len, ps),
        Kind::Shmem => {
            // SAFETY: plain syscalls; results checked.
            let fd = unsafe { libc::memfd_create(c"oomwatch-selftest".as_ptr(), 0) };
            if fd < 0 || unsafe { libc::ftruncate(fd, len as libc::off_t) } != 0 {
                fail(4, "memfd");
            }
            touch(map(len, libc::MAP_SHARED, fd), len, ps);
        }
        Kind::Sparse => {
            // One page-table page maps ps / 8 pages: touch one page per such
            // span, so each data page costs one page-table page.
            let span = ps / 8 * ps;
            let regions = len / ps;
            let total = regions * span;
            touch(map(total, private | libc::MAP_NORESERVE, -1), total, span);
        }
        Kind::Threads => {
            let n = usize::from(f.threads);
            let per = len / n;
            let (done, all_done) = std::sync::mpsc::channel();
            for _ in 0..n {
                let done = done.clone();
                std::thread::spawn(move || {
                    touch(map(per, private, -1), per, ps);
                    let _ = done.send(());
                    loop {
                        std::thread::sleep(std::time::Duration::from_secs(3600));
                    }
                });
            }
            for _ in 0..n {
                let _ = all_done.recv();
            }
        }
    }
}

/// The process that shares the hog's memory: it only waits to be killed.
extern "C" fn share_mm_child(_: *mut libc::c_void) -> libc::c_int {
    // SAFETY: async-signal-safe calls only; nothing of Rust's runtime is
    // touched on this stack.
    unsafe {
        libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL);
        loop {
            libc::pause();
        }
    }
}

/// Starts a process that shares this one's mm (CLONE_VM, not a thread, not
/// vfork): the kernel scores both with the same counters.
fn clone_sharing_mm() -> i32 {
    const STACK: usize = 64 << 10;
    let stack = map(STACK, libc::MAP_PRIVATE | libc::MAP_ANONYMOUS, -1);
    // SAFETY: the child runs only `share_mm_child` on its own stack, which
    // stays mapped for as long as the shared mm lives.
    let pid = unsafe {
        libc::clone(
            share_mm_child,
            stack.add(STACK).cast(),
            libc::CLONE_VM | libc::SIGCHLD,
            std::ptr::null_mut(),
        )
    };
    if pid < 0 {
        fail(5, "clone(CLONE_VM)");
    }
    pid
}

/// `oomwatch selftest-hog`: never returns.
pub fn main(f: &Flags) -> ! {
    // Dies with the selftest, whatever kills it.
    // SAFETY: prctl with plain integer arguments.
    unsafe { libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL) };
    match std::fs::write("/proc/self/oom_score_adj", f.adj.to_string()) {
        Ok(()) => say("adj ok"),
        Err(e) => {
            say(&format!("adj refused: {e}"));
            std::process::exit(3);
        }
    }
    let mut line = String::new();
    if std::io::stdin().lock().read_line(&mut line).unwrap_or(0) == 0 {
        std::process::exit(0);
    }
    build(f);
    if f.share_mm {
        say(&format!("ready {}", clone_sharing_mm()));
    } else {
        say("ready");
    }
    loop {
        std::thread::sleep(std::time::Duration::from_secs(3600));
    }
}
