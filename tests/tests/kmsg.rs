//! The kernel's own OOM report, read live from `/dev/kmsg` after a real memcg
//! OOM kill: parsed, and its selection replayed with the model.

use std::{
    io::Read as _,
    time::{Duration, Instant},
};

use oomwatch::report;
use oomwatch_tests::{
    MemcgGuard, THREE_HOGS_MIB, killed_by_sigkill, require_root, run_hogs_until_one_dies,
};

#[test]
fn live_report_parses_and_replays() {
    require_root();
    let mut kmsg = std::fs::File::open("/dev/kmsg").expect("open /dev/kmsg");
    // Only what is logged from now on; non-blocking reads end at the tail.
    nix::unistd::lseek(&kmsg, 0, nix::unistd::Whence::SeekEnd).unwrap();
    let flags = nix::fcntl::fcntl(&kmsg, nix::fcntl::FcntlArg::F_GETFL).unwrap();
    nix::fcntl::fcntl(
        &kmsg,
        nix::fcntl::FcntlArg::F_SETFL(
            nix::fcntl::OFlag::from_bits_truncate(flags) | nix::fcntl::OFlag::O_NONBLOCK,
        ),
    )
    .unwrap();

    let memcg = MemcgGuard::create(64 << 20).expect("create a 64 MiB memory cgroup");
    let (hogs, dead, status) =
        run_hogs_until_one_dies(env!("CARGO_BIN_EXE_oomwatch-hog"), &memcg, &THREE_HOGS_MIB)
            .unwrap();
    assert!(killed_by_sigkill(&status));
    let victim = hogs[dead].pid() as i32;

    // /dev/kmsg returns one record per read.
    let mut records = String::new();
    let deadline = Instant::now() + Duration::from_secs(10);
    let mut buf = vec![0u8; 8192];
    while Instant::now() < deadline {
        match kmsg.read(&mut buf) {
            Ok(n) if n > 0 => records.push_str(&String::from_utf8_lossy(&buf[..n])),
            Err(e) if e.raw_os_error() == Some(libc::EPIPE) => continue, // overwritten records
            _ => {
                if records.contains(&format!("Killed process {victim} ")) {
                    break;
                }
                std::thread::sleep(Duration::from_millis(50));
            }
        }
    }
    let text = report::kmsg_messages(&records);
    let r = report::parse(&text).expect("an OOM report in /dev/kmsg");
    assert_eq!(r.killed.first().map(|k| k.pid), Some(victim), "{text}");
    assert_eq!(r.memcg_limit_kb, Some(64 * 1024));
    let kv: std::collections::HashMap<_, _> = r.oom_kill.iter().cloned().collect();
    assert_eq!(
        kv.get("oom_memcg").map(String::as_str),
        Some(memcg.path.as_str())
    );
    let ours: Vec<i32> = hogs.iter().map(|h| h.pid() as i32).collect();
    let rows: Vec<i32> = r.tasks.iter().map(|t| t.pid).collect();
    assert_eq!(rows, ours, "the task table lists our hogs in scan order");
    let rp = report::replay(&r).expect("replayable");
    assert!(
        rp.agree,
        "model {:?} vs kernel {:?}",
        rp.model_pid, rp.kernel_pid
    );
    assert_eq!(rp.totalpages, 16_384);
    drop(hogs);
}
