//! A real memcg OOM kill, caught through oomwatch's eBPF stream.

use std::time::Duration;

use oomwatch::ebpf::{Probes, Victim};
use oomwatch_tests::{
    MemcgGuard, THREE_HOGS_MIB, killed_by_sigkill, require_root, run_hogs_until_one_dies,
};

/// Three hogs ([`THREE_HOGS_MIB`]) in a 64 MiB cgroup: each fits alone, all
/// three do not. The kernel kills one; the victim oomwatch reports must be the
/// child that died of SIGKILL, in this cgroup, and the cgroup's own OOM kill
/// counter must have risen by exactly one.
#[test]
fn memcg_oom_victim_reported_through_ebpf() {
    require_root();
    let rt = tokio::runtime::Runtime::new().unwrap();
    let _enter = rt.enter();
    let mut probes = Probes::load().expect("load and attach the eBPF programs");
    assert!(
        probes.degraded.is_empty(),
        "this kernel has BTF and tp_btf: nothing should be degraded: {:?}",
        probes.degraded
    );
    let mut victims = probes.victims().unwrap();
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel::<Victim>();
    rt.spawn(async move {
        while let Ok(batch) = victims.next_batch().await {
            for v in batch {
                let _ = tx.send(v);
            }
        }
    });

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

    // Take the victims oomwatch saw among our children (other tests' or the
    // host's kills are not ours to judge).
    let mut ours = Vec::new();
    rt.block_on(async {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
        while let Ok(Some(v)) = tokio::time::timeout_at(deadline, rx.recv()).await {
            if children.contains(&v.pid) {
                ours.push(v);
                // Give a second kill, which must not happen, a moment to show.
                let grace = tokio::time::Instant::now() + Duration::from_millis(500);
                while let Ok(Some(v)) = tokio::time::timeout_at(grace, rx.recv()).await {
                    if children.contains(&v.pid) {
                        ours.push(v);
                    }
                }
                break;
            }
        }
    });
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
