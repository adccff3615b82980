//! The kernel's own OOM report, read live from `/dev/kmsg` after a real memcg
//! OOM kill: parsed, and its selection replayed with the model.

use oomwatch::replay;
use oomwatch_tests::{
    KmsgTail, MemcgGuard, THREE_HOGS_MIB, killed_by_sigkill, require_root, run_hogs_until_one_dies,
    wait_for_a_fresh_report_window,
};

#[test]
fn live_report_parses_and_replays() {
    require_root();
    wait_for_a_fresh_report_window();
    let mut kmsg = KmsgTail::from_now();

    let memcg = MemcgGuard::create(64 << 20).expect("create a 64 MiB memory cgroup");
    let (hogs, dead, status) =
        run_hogs_until_one_dies(env!("CARGO_BIN_EXE_oomwatch-hog"), &memcg, &THREE_HOGS_MIB)
            .unwrap();
    assert!(killed_by_sigkill(&status));
    let victim = hogs[dead].pid() as i32;

    let text = kmsg.messages_until_kill(victim as u32);
    let r = replay::parse::parse(&text).expect("an OOM report in /dev/kmsg");
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
    let rp = replay::replay(&r).expect("replayable");
    assert!(
        rp.agree,
        "model {:?} vs kernel {:?}",
        rp.model_pid, rp.kernel_pid
    );
    assert_eq!(rp.totalpages, 16_384);
    drop(hogs);
}
