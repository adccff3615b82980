//! `oomwatch explain` against the kernel: its prediction of the victim, and
//! the oom_score_adj it says would flip the outcome, are checked with a real
//! memcg OOM kill.

use std::process::Command;

use std::time::Duration;

use oomwatch_tests::{Hog, MemcgGuard, VictimWatch, killed_by_sigkill, require_root};

fn explain(pid: u32, cgroup: Option<&str>) -> serde_json::Value {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_oomwatch"));
    cmd.args(["explain", &pid.to_string(), "--json"]);
    if let Some(c) = cgroup {
        cmd.args(["--cgroup", c]);
    }
    let out = cmd.output().unwrap();
    assert!(
        out.status.success(),
        "explain failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).expect("explain --json is JSON")
}

/// Two hogs of 20 and 26 MiB in a 64 MiB cgroup: the model names the larger
/// one as the victim and the oom_score_adj that would make the smaller one
/// the victim instead. With that adj (plus a little room for rss drift) a
/// third hog pushes the cgroup over its limit, and the kernel kills the
/// smaller hog: the one the model said it would.
///
/// The kernel's victim is the first one oomwatch's eBPF stream reports. While
/// that victim's memory is being released the pusher keeps charging, and on
/// 6.18.44 the kernel now and then kills a second task a few ms later (seen
/// in dmesg: 2 of 10 runs); that second kill is a new OOM with a different
/// task set, so it is reported here but not judged.
#[test]
fn explain_predicts_the_memcg_victim_and_what_flips_it() {
    require_root();
    let mut watch = VictimWatch::start();
    let bin = env!("CARGO_BIN_EXE_oomwatch-hog");
    let memcg = MemcgGuard::create(64 << 20).expect("create a 64 MiB memory cgroup");
    let mut small = Hog::start(bin, &memcg, 20).unwrap();
    assert!(small.wait_ready());
    let mut large = Hog::start(bin, &memcg, 26).unwrap();
    assert!(large.wait_ready());

    let ex = explain(small.pid(), Some(&memcg.path));
    assert_eq!(ex["domain"]["kind"], "memcg", "{ex}");
    assert_eq!(ex["domain"]["cgroup"], memcg.path.as_str(), "{ex}");
    assert_eq!(
        ex["domain"]["totalpages"], 16_384,
        "64 MiB in 4 KiB pages: {ex}"
    );
    assert_eq!(ex["victim"]["tgid"], large.pid(), "{ex}");
    assert_eq!(ex["explanation"]["chosen"], false, "{ex}");
    let adj = ex["explanation"]["adj_to_be_chosen"]
        .as_i64()
        .expect("an adj that flips it");
    assert!(adj > 0 && adj < 1000, "{ex}");
    let ex_large = explain(large.pid(), Some(&memcg.path));
    assert_eq!(ex_large["explanation"]["chosen"], true, "{ex_large}");
    assert!(ex_large["explanation"]["margin"].as_i64().unwrap() > 0);

    // Follow the advice, with 20 adj steps (20 × 16 pages) of room.
    let adj = adj + 20;
    std::fs::write(
        format!("/proc/{}/oom_score_adj", small.pid()),
        adj.to_string(),
    )
    .unwrap();
    let ex = explain(small.pid(), Some(&memcg.path));
    assert_eq!(
        ex["victim"]["tgid"],
        small.pid(),
        "model after the adj change: {ex}"
    );

    // The kernel agrees: push the cgroup over its limit.
    let mut pusher = Hog::start(bin, &memcg, 24).unwrap();
    pusher.wait_ready();
    let pids = [small.pid(), large.pid(), pusher.pid()];
    let victims = watch.victims_among(&pids, Duration::from_secs(30), Duration::from_millis(500));
    assert!(!victims.is_empty(), "no OOM kill within 30 s");
    assert_eq!(
        victims[0].pid,
        small.pid(),
        "the kernel's victim: {} (the model said {} with adj {adj})",
        victims[0],
        small.pid()
    );
    if victims.len() > 1 {
        eprintln!(
            "a second kill followed while the first victim exited: {}",
            victims[1]
        );
    }
    let status = small.child.wait().unwrap();
    assert!(killed_by_sigkill(&status), "{status:?}");
    drop((small, large, pusher));
    drop(memcg);
}

/// The host domain: this test process is listed and scored.
#[test]
fn explain_self_in_the_host_domain() {
    let me = std::process::id();
    let ex = explain(me, None);
    assert_eq!(ex["domain"]["kind"], "global", "{ex}");
    assert_eq!(ex["explanation"]["candidate"]["tgid"], me, "{ex}");
    assert_eq!(ex["explanation"]["candidate"]["verdict"], "scored", "{ex}");
    assert!(ex["explanation"]["rank"].as_u64().unwrap() >= 1);
}
