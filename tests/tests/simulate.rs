//! `oomwatch simulate` against the kernel.

use std::{process::Command, time::Duration};

use oomwatch::host::cgroup::CgroupVersion;
use oomwatch_tests::{Hog, MemcgGuard, OneCpu, VictimWatch, require_root};

fn simulate(args: &[&str]) -> (bool, serde_json::Value, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_oomwatch"))
        .arg("simulate")
        .args(args)
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    let json = serde_json::from_slice(&out.stdout).unwrap_or(serde_json::Value::Null);
    (out.status.success(), json, stderr)
}

/// This lab machine has gigabytes free: an order-0 GFP_KERNEL allocation is
/// served by the fast path above the low watermark.
#[test]
fn host_allocation_takes_the_fast_path() {
    let (ok, j, err) = simulate(&["--gfp", "GFP_KERNEL", "--order", "0", "--json"]);
    assert!(ok, "{err}");
    assert_eq!(j["gfp"]["mask"], "0xcc0", "{j}");
    assert_eq!(j["ending"]["ending"], "allocated", "{j}");
    assert_eq!(j["ending"]["stage"], "fast path", "{j}");
    assert!(j["oom"].is_null());
}

#[test]
fn bad_input_is_named() {
    let (ok, _, err) = simulate(&["--gfp", "GFP_KERNAL"]);
    assert!(!ok);
    assert!(
        err.contains("--gfp \"GFP_KERNAL\": unknown GFP flag `GFP_KERNAL`"),
        "{err}"
    );
    let (ok, _, err) = simulate(&["--order", "11"]);
    assert!(!ok);
    assert!(err.contains("--order 11"), "{err}");
    let (ok, _, err) = simulate(&["--cgroup", "relative/path"]);
    assert!(!ok);
    assert!(err.contains("starting with `/`"), "{err}");
}

/// A memcg OOM frozen at its moment (cgroup v1 `oom_kill_disable`): two
/// hogs of 20 and 26 MiB, and a third stuck at the 64 MiB limit. The model,
/// reading that frozen state, says the charge ends in a memcg OOM and names
/// the victim; re-enabling the OOM killer lets the kernel decide, and the
/// first victim oomwatch's eBPF stream sees must be that one.
#[test]
fn frozen_memcg_oom_victim_matches_the_kernel() {
    require_root();
    let mut watch = VictimWatch::start();
    let memcg = MemcgGuard::create(64 << 20).expect("create a 64 MiB memory cgroup");
    if memcg.hierarchy.version != CgroupVersion::V1 {
        oomwatch_tests::skip(
            "frozen_memcg_oom_victim_matches_the_kernel",
            "needs cgroup v1's oom_kill_disable (this host's memory controller is v2)",
        );
        return;
    }
    memcg.set_oom_kill_disable(true).unwrap();
    // All three hogs on one CPU: no other CPU's charge stock is drained after
    // the OOM froze, so the state read is the one the kernel decided on (see
    // `OneCpu`: without it, 1 run in 8 under two CPU hogs read 38 pages free).
    let _one_cpu = OneCpu::pin().expect("pin the hogs to one CPU");
    let bin = env!("CARGO_BIN_EXE_oomwatch-hog");
    let mut a = Hog::start(bin, &memcg, 20).unwrap();
    assert!(a.wait_ready());
    let mut b = Hog::start(bin, &memcg, 26).unwrap();
    assert!(b.wait_ready());
    let c = Hog::start(bin, &memcg, 40).unwrap();
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    while !memcg.under_oom() {
        assert!(
            std::time::Instant::now() < deadline,
            "the cgroup never reached its limit"
        );
        std::thread::sleep(Duration::from_millis(20));
    }

    let (ok, j, err) = simulate(&["--cgroup", &memcg.path, "--json"]);
    assert!(ok, "{err}");
    assert_eq!(j["ending"]["ending"], "memcg_oom_waits", "{j}");
    let predicted = j["victim"]["tgid"].as_u64().expect("a predicted victim") as u32;
    assert!(
        [a.pid(), b.pid(), c.pid()].contains(&predicted),
        "victim {predicted} is not one of ours: {j}"
    );
    assert_eq!(
        predicted,
        b.pid(),
        "26 MiB beats 20 MiB and the partial 40 MiB hog: {j}"
    );

    memcg.set_oom_kill_disable(false).unwrap();
    let victims = watch.victims_among(
        &[a.pid(), b.pid(), c.pid()],
        Duration::from_secs(20),
        Duration::from_millis(300),
    );
    assert!(
        !victims.is_empty(),
        "no kill after re-enabling the OOM killer"
    );
    assert_eq!(
        victims[0].pid, predicted,
        "kernel killed {}; model said {predicted}",
        victims[0]
    );
    drop((a, b, c));
    drop(memcg);
}
