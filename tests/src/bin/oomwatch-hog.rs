//! Test workload. `oomwatch-hog MIB [MODE [N]]` waits for a line on stdin (so
//! the test can move it into a memory cgroup first), then builds MIB MiB of
//! memory of one kind, prints `ready`, and sleeps until killed.
//!
//! Modes:
//! - `anon` (default): anonymous memory, every page touched;
//! - `sparse`: one page touched in each of MIB × 256 separate 2 MiB regions,
//!   so the page tables cost about as much as the data (a page-table-heavy
//!   sparse mapping);
//! - `shmem`: a shared memfd mapping (counted as RssShmem);
//! - `file PATH`: the existing file PATH (at least MIB MiB, written by the
//!   test outside the cgroup so its page cache is charged there), mapped and
//!   read (counted as RssFile);
//! - `threads N`: N threads, each touching MIB / N MiB of anonymous memory;
//! - `leaderexit`: a thread named `hog-worker` touches the memory, then the
//!   main thread (the thread-group leader) exits on its own (the raw
//!   `exit(2)`): the process lives on in its worker, and the kernel finds
//!   its mm there (`find_lock_task_mm`), not in the leader;
//! - `stuckwrite PATH`: anonymous memory, then a thread that appends a byte
//!   to PATH every 50 ms. When the test freezes PATH's filesystem
//!   (`fsfreeze`), that thread sleeps uninterruptibly in `write()`: killed,
//!   the process cannot finish exiting, and its memory stays until the OOM
//!   reaper frees it;
//! - `storm N`: a page-fault storm: N times, map MIB MiB of anonymous
//!   memory (small pages: `MADV_NOHUGEPAGE`), touch every page, unmap it;
//!   `ready` once done (benchmarks time it from `go`);
//! - `chunks`: a page-fault storm one step at a time: for each line read
//!   after `go`, map MIB MiB of anonymous memory in small pages, touch every
//!   page, unmap it, and print the nanoseconds this thread spent on CPU for
//!   it (`CLOCK_THREAD_CPUTIME_ID`); exits at the end of input. Benchmarks
//!   change what is attached between steps;
//! - `pages`: MIB MiB of anonymous address space in small pages, touched
//!   on demand: prints `ready`, then for each line `K` read touches the
//!   next K pages and prints `ok` (a test steps its rss page by page);
//!   sleeps until killed at the end of input;
//! - `leak N [MS]`: prints `ready` at once, then touches MIB MiB of
//!   anonymous memory at N KiB a second, one step every MS milliseconds
//!   (100 by default: a steady leak; a few seconds: a staircase), and
//!   sleeps once done;
//! - `churn PATH`: MIB MiB of anonymous memory, prints `ready`, then reads
//!   the file PATH from start to end with `read(2)`, again and again until
//!   killed: a page-cache churn. A file larger than the cgroup's limit
//!   (written outside it, its cache dropped) fills the limit with clean
//!   file pages that reclaim takes back: pressure, and never an OOM;
//! - `spawn N`: MIB MiB of anonymous memory, then N child processes that
//!   sleep until killed (a host with many live tasks, for benchmarks). The
//!   hog is in its memory cgroup before it forks, so every child is too.
use std::io::{BufRead as _, Write as _};

const PAGE: usize = 4096;

fn touch(ptr: *mut u8, len: usize, stride: usize) {
    let mut off = 0;
    while off < len {
        // SAFETY: ptr..ptr+len is a live writable mapping.
        unsafe { ptr.add(off).write_volatile(1) };
        off += stride;
    }
}

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
        eprintln!("mmap {len} bytes: {}", std::io::Error::last_os_error());
        std::process::exit(4);
    }
    p.cast()
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let Some(mib) = args.get(1).and_then(|a| a.parse::<usize>().ok()) else {
        eprintln!(
            "usage: oomwatch-hog MIB [anon|sparse|shmem|file PATH|threads N|leaderexit|stuckwrite PATH|storm N|chunks|pages|leak N [MS]|churn PATH|spawn N]"
        );
        std::process::exit(2);
    };
    let mode = args.get(2).map_or("anon", String::as_str);
    let n: usize = args.get(3).and_then(|a| a.parse().ok()).unwrap_or(4);
    let len = mib << 20;
    let file = (mode == "file").then(|| {
        let path = args.get(3).expect("file mode needs a PATH");
        std::fs::File::options()
            .read(true)
            .write(true)
            .open(path)
            .expect("open the hog's file")
    });
    let mut line = String::new();
    if std::io::stdin().lock().read_line(&mut line).is_err() {
        std::process::exit(3);
    }
    let private = libc::MAP_PRIVATE | libc::MAP_ANONYMOUS;
    match mode {
        "anon" => touch(map(len, private, -1), len, PAGE),
        "sparse" => {
            let regions = mib * 256;
            let span = regions * (2 << 20);
            let p = map(span, private | libc::MAP_NORESERVE, -1);
            touch(p, span, 2 << 20);
        }
        "shmem" => {
            // SAFETY: plain syscalls; results checked.
            let fd = unsafe { libc::memfd_create(c"oomwatch-hog".as_ptr(), 0) };
            if fd < 0 || unsafe { libc::ftruncate(fd, len as i64) } != 0 {
                eprintln!("memfd: {}", std::io::Error::last_os_error());
                std::process::exit(4);
            }
            touch(map(len, libc::MAP_SHARED, fd), len, PAGE);
        }
        "file" => {
            use std::os::fd::AsRawFd as _;
            let fd = file.as_ref().expect("prepared above").as_raw_fd();
            let p = map(len, libc::MAP_SHARED, fd);
            let mut sum = 0u64;
            let mut off = 0;
            while off < len {
                // SAFETY: inside the mapping.
                sum += u64::from(unsafe { p.add(off).read_volatile() });
                off += PAGE;
            }
            std::hint::black_box(sum);
        }
        "threads" => {
            let per = len / n.max(1);
            let (done, all_done) = std::sync::mpsc::channel();
            for _ in 0..n.max(1) {
                let done = done.clone();
                std::thread::spawn(move || {
                    touch(map(per, private, -1), per, PAGE);
                    let _ = done.send(());
                    loop {
                        std::thread::sleep(std::time::Duration::from_secs(3600));
                    }
                });
            }
            // Ready once every thread has touched its share.
            for _ in 0..n.max(1) {
                let _ = all_done.recv();
            }
        }
        "leaderexit" => {
            let (done, touched) = std::sync::mpsc::channel();
            std::thread::Builder::new()
                .name("hog-worker".into())
                .spawn(move || {
                    touch(map(len, private, -1), len, PAGE);
                    let _ = done.send(());
                    loop {
                        std::thread::sleep(std::time::Duration::from_secs(3600));
                    }
                })
                .expect("spawn the worker");
            let _ = touched.recv();
            println!("ready");
            let _ = std::io::stdout().flush();
            // The raw exit(2) ends only this thread, with no unwinding
            // (pthread_exit would force-unwind through Rust frames, which
            // aborts). The process goes on in its worker.
            // SAFETY: nothing on this thread's stack is used by the worker,
            // which owns all it touches.
            unsafe {
                libc::syscall(libc::SYS_exit, 0);
            }
            unreachable!("exit(2) returned")
        }
        "stuckwrite" => {
            touch(map(len, private, -1), len, PAGE);
            let path = args.get(3).expect("stuckwrite mode needs a PATH").clone();
            let mut f = std::fs::File::options()
                .append(true)
                .create(true)
                .open(&path)
                .expect("open the hog's file");
            std::thread::spawn(move || {
                loop {
                    let _ = f.write_all(b".");
                    std::thread::sleep(std::time::Duration::from_millis(50));
                }
            });
        }
        "storm" => {
            for _ in 0..n {
                let p = map(len, private, -1);
                // SAFETY: advice on the mapping just made.
                unsafe { libc::madvise(p.cast(), len, libc::MADV_NOHUGEPAGE) };
                touch(p, len, PAGE);
                // SAFETY: unmapping what map() returned, not used after.
                unsafe { libc::munmap(p.cast(), len) };
            }
        }
        "chunks" => {
            let cpu_ns = || {
                let mut t = libc::timespec {
                    tv_sec: 0,
                    tv_nsec: 0,
                };
                // SAFETY: clock_gettime writes the timespec it is given.
                unsafe { libc::clock_gettime(libc::CLOCK_THREAD_CPUTIME_ID, &mut t) };
                t.tv_sec as u64 * 1_000_000_000 + t.tv_nsec as u64
            };
            println!("ready");
            let _ = std::io::stdout().flush();
            let mut stdin = std::io::stdin().lock();
            let mut line = String::new();
            while stdin.read_line(&mut line).is_ok_and(|n| n > 0) {
                line.clear();
                let start = cpu_ns();
                let p = map(len, private, -1);
                // SAFETY: advice on the mapping just made.
                unsafe { libc::madvise(p.cast(), len, libc::MADV_NOHUGEPAGE) };
                touch(p, len, PAGE);
                // SAFETY: unmapping what map() returned, not used after.
                unsafe { libc::munmap(p.cast(), len) };
                println!("{}", cpu_ns() - start);
                let _ = std::io::stdout().flush();
            }
            std::process::exit(0);
        }
        "leak" => {
            let p = map(len, private | libc::MAP_NORESERVE, -1);
            println!("ready");
            let _ = std::io::stdout().flush();
            let every_ms: u64 = args.get(4).and_then(|a| a.parse().ok()).unwrap_or(100);
            let per_step = (n * 1024 * every_ms as usize / 1000).max(PAGE);
            let start = std::time::Instant::now();
            let mut touched = 0;
            let mut step = 0u32;
            while touched < len {
                let k = per_step.min(len - touched);
                // SAFETY: touched..touched+k lie inside the mapping.
                touch(unsafe { p.add(touched) }, k, PAGE);
                touched += k;
                step += 1;
                // Steps on a fixed schedule, so the rate does not drift.
                let due = start + std::time::Duration::from_millis(every_ms) * step;
                std::thread::sleep(due.saturating_duration_since(std::time::Instant::now()));
            }
            loop {
                std::thread::sleep(std::time::Duration::from_secs(3600));
            }
        }
        "churn" => {
            use std::io::Read as _;
            touch(map(len, private, -1), len, PAGE);
            let path = args.get(3).expect("churn mode needs a PATH");
            println!("ready");
            let _ = std::io::stdout().flush();
            let mut buf = vec![0u8; 1 << 20];
            loop {
                let mut f = std::fs::File::open(path).expect("open the churn file");
                while f.read(&mut buf).expect("read the churn file") > 0 {}
            }
        }
        "pages" => {
            let p = map(len, private | libc::MAP_NORESERVE, -1);
            // SAFETY: advice on the mapping just made.
            unsafe { libc::madvise(p.cast(), len, libc::MADV_NOHUGEPAGE) };
            println!("ready");
            let _ = std::io::stdout().flush();
            let mut stdin = std::io::stdin().lock();
            let mut line = String::new();
            let mut touched = 0;
            while stdin.read_line(&mut line).is_ok_and(|n| n > 0) {
                let k: usize = line.trim().parse().unwrap_or(0);
                line.clear();
                let k = k.min(len / PAGE - touched);
                // SAFETY: pages touched..touched+k lie inside the mapping.
                touch(unsafe { p.add(touched * PAGE) }, k * PAGE, PAGE);
                touched += k;
                println!("ok");
                let _ = std::io::stdout().flush();
            }
            loop {
                std::thread::sleep(std::time::Duration::from_secs(3600));
            }
        }
        "spawn" => {
            touch(map(len.max(PAGE), private, -1), len, PAGE);
            for i in 0..n {
                // SAFETY: this process has one thread; the child only
                // calls pause(2) and never returns into Rust code.
                match unsafe { libc::fork() } {
                    0 => loop {
                        // SAFETY: async-signal-safe.
                        unsafe { libc::pause() };
                    },
                    -1 => {
                        eprintln!("fork child {i} of {n}: {}", std::io::Error::last_os_error());
                        std::process::exit(5);
                    }
                    _ => {}
                }
            }
        }
        other => {
            eprintln!("unknown mode {other}");
            std::process::exit(2);
        }
    }
    println!("ready");
    let _ = std::io::stdout().flush();
    loop {
        std::thread::sleep(std::time::Duration::from_secs(3600));
    }
}
