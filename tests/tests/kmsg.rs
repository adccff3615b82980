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

/// User space can write to `/dev/kmsg` (`echo '<2>…' > /dev/kmsg`): the
/// kernel logs it under LOG_USER, never the kernel's facility. A forged OOM
/// report written there must count neither in `oomwatch replay /dev/kmsg`
/// nor in the live reader the daemon uses, which must hand over the real
/// report of the next kill first.
#[test]
fn forged_user_space_report_is_ignored() {
    use std::io::Write as _;
    require_root();
    wait_for_a_fresh_report_window();
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
    replay::follow_kmsg(tx).expect("follow /dev/kmsg");

    // A pid no task has (pid_max is at most 2^22).
    let forged = 2_000_000_000 + (std::process::id() % 1000) as i32;
    let mut w = std::fs::OpenOptions::new()
        .write(true)
        .open("/dev/kmsg")
        .expect("open /dev/kmsg for writing");
    for line in [
        "forged invoked oom-killer: gfp_mask=0xcc0(GFP_KERNEL), order=0, oom_score_adj=0".to_owned(),
        "CPU: 0 UID: 0 PID: 1 Comm: forged Not tainted 6.18.44 #1".to_owned(),
        "memory: usage 65536kB, limit 65536kB, failcnt 0".to_owned(),
        "[  pid  ]   uid  tgid total_vm      rss rss_anon rss_file rss_shmem pgtables_bytes swapents oom_score_adj name".to_owned(),
        format!("[{forged:>7}]     0 {forged}    13062     9645     9152      493         0   118784        0             0 forged"),
        format!("oom-kill:constraint=CONSTRAINT_MEMCG,nodemask=(null),cpuset=/,mems_allowed=0,oom_memcg=/forged,task_memcg=/forged,task=forged,pid={forged},uid=0"),
        format!("Memory cgroup out of memory: Killed process {forged} (forged) total-vm:52248kB, anon-rss:36608kB, file-rss:1972kB, shmem-rss:0kB, UID:0 pgtables:116kB oom_score_adj:0"),
    ] {
        // One write is one record; <2> names a level, not a facility. The
        // newline ends the record (else it stays open for a continuation,
        // unseen by readers until the next one).
        w.write_all(format!("<2>{line}\n").as_bytes())
            .expect("write to /dev/kmsg");
    }

    // `oomwatch replay` of the live log: the forged report is no report.
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_oomwatch"))
        .args(["replay", "--json", "/dev/kmsg"])
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    if out.status.code() == Some(oomwatch::replay::EXIT_NO_REPORT.into()) {
        assert!(stderr.contains("no kernel OOM report"), "{stderr}");
    } else {
        let v: serde_json::Value = serde_json::from_slice(&out.stdout)
            .unwrap_or_else(|e| panic!("replay --json /dev/kmsg: {e}: {stderr}"));
        let counted = v
            .as_array()
            .unwrap()
            .iter()
            .filter(|r| r["kernel_victim"]["pid"] == forged)
            .count();
        assert_eq!(counted, 0, "the forged report was replayed: {v:#}");
    }

    // The live reader: the first report it hands over is the real kill's.
    let memcg = MemcgGuard::create(64 << 20).expect("create a 64 MiB memory cgroup");
    let (hogs, dead, status) =
        run_hogs_until_one_dies(env!("CARGO_BIN_EXE_oomwatch-hog"), &memcg, &THREE_HOGS_MIB)
            .unwrap();
    assert!(killed_by_sigkill(&status));
    let victim = hogs[dead].pid() as i32;
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .build()
        .unwrap();
    let first = rt.block_on(async {
        loop {
            match tokio::time::timeout(std::time::Duration::from_secs(10), rx.recv()).await {
                Ok(Some(replay::KmsgEvent::Report(r))) => return r.victim_pid(),
                Ok(Some(_)) => continue,
                Ok(None) => panic!("the /dev/kmsg reader stopped"),
                Err(_) => panic!("no report from the /dev/kmsg reader within 10 s"),
            }
        }
    });
    assert_eq!(first, Some(victim), "forged pid is {forged}");
    drop(hogs);
}
