//! A real memcg OOM kill, caught through oomwatch's eBPF stream.

use std::time::Duration;

use oomwatch_tests::{
    MemcgGuard, THREE_HOGS_MIB, VictimWatch, killed_by_sigkill, require_root,
    run_hogs_until_one_dies,
};

/// Three hogs ([`THREE_HOGS_MIB`]) in a 64 MiB cgroup: each fits alone, all
/// three do not. The kernel kills one; the victim oomwatch reports must be the
/// child that died of SIGKILL, in this cgroup, and the cgroup's own OOM kill
/// counter must have risen by exactly one.
#[test]
fn memcg_oom_victim_reported_through_ebpf() {
    require_root();
    let mut watch = VictimWatch::start();
    assert!(
        watch.degraded().is_empty(),
        "this kernel has BTF and tp_btf: nothing should be degraded: {:?}",
        watch.degraded()
    );

    let memcg = MemcgGuard::create(64 << 20).expect("create a 64 MiB memory cgroup");
    let before = memcg.oom_kills().unwrap();
    let (hogs, dead, status) =
        run_hogs_until_one_dies(env!("CARGO_BIN_EXE_oomwatch-hog"), &memcg, &THREE_HOGS_MIB)
            .unwrap();
    assert!(
        killed_by_sigkill(&status),
        "hog {} ({} MiB) exited with {status:?}, not SIGKILL",
        hogs[dead].pid(),
        hogs[dead].mib
    );
    let killed_pid = hogs[dead].pid();
    let children: Vec<u32> = hogs.iter().map(|h| h.pid()).collect();

    // The victims oomwatch saw among our children (other tests' or the
    // host's kills are not ours to judge); a second kill, which must not
    // happen, gets half a second to show.
    let ours = watch.victims_among(
        &children,
        Duration::from_secs(10),
        Duration::from_millis(500),
    );
    assert_eq!(
        ours.len(),
        1,
        "expected exactly one victim among our hogs, got {ours:?}"
    );
    let v = &ours[0];
    assert_eq!(
        v.pid, killed_pid,
        "oomwatch reported {v} but pid {killed_pid} died of SIGKILL"
    );
    assert_eq!(v.tgid, Some(killed_pid));
    assert_eq!(v.comm.as_deref(), Some("oomwatch-hog"));
    assert_eq!(v.memcg_id, Some(memcg.id()), "victim's memcg id: {v}");
    let m = v.memcg.as_ref().expect("memcg path resolved");
    assert_eq!(m.path, memcg.path);
    // The victim had touched most of its memory; the kernel's numbers say so.
    let anon = v.anon_rss_kb.expect("anon_rss on this kernel");
    assert!(
        anon >= 16 * 1024 && anon <= (hogs[dead].mib as u64 + 2) * 1024,
        "anon_rss {anon} kB for a {} MiB hog",
        hogs[dead].mib
    );
    assert_eq!(v.oom_score_adj, Some(0));
    assert_eq!(
        memcg.oom_kills().unwrap(),
        before + 1,
        "the cgroup's oom_kill counter"
    );
    // The survivors are still running.
    for (i, h) in hogs.iter().enumerate() {
        if i != dead {
            assert!(
                std::path::Path::new(&format!("/proc/{}", h.pid())).exists(),
                "hog {} should have survived",
                h.pid()
            );
        }
    }
    drop(hogs);
    drop(memcg);
}
