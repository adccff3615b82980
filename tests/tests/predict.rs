//! `oomwatch predict` against the kernel, in memcg scenarios where the victim
//! is not simply the task with the largest RSS.
//!
//! Each scenario freezes a memcg OOM at its moment (cgroup v1
//! `oom_kill_disable`: the task that hits the limit waits in the kernel), runs
//! `oomwatch predict --json` on that frozen state, then re-enables the OOM
//! killer and takes the kernel's first victim from oomwatch's eBPF stream.

use std::{process::Command, time::Duration};

use oomwatch::host::cgroup::CgroupVersion;
use oomwatch_tests::{Hog, MemcgGuard, VictimWatch, require_root};

const HOG: &str = env!("CARGO_BIN_EXE_oomwatch-hog");
const LIMIT: u64 = 64 << 20;

fn predict(cgroup: &str) -> serde_json::Value {
    let out = Command::new(env!("CARGO_BIN_EXE_oomwatch"))
        .args(["predict", "--cgroup", cgroup, "--json"])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "predict: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).expect("predict --json is JSON");
    // Every prediction names the rules it applied and where its version came from.
    assert!(v["rules"]["version"].is_string(), "{}", v["rules"]);
    assert!(v["rules"]["version_from"].is_string(), "{}", v["rules"]);
    assert!(
        v["rules"]["changes"]
            .as_array()
            .is_some_and(|c| !c.is_empty())
    );
    v
}

fn hog(memcg: &MemcgGuard, mib: usize, mode: &[&str], adj: i16) -> Hog {
    let mut h = Hog::start_mode(HOG, memcg, mib, mode).unwrap();
    if adj != 0 {
        // Raising oom_score_adj needs no privilege (lowering would).
        std::fs::write(format!("/proc/{}/oom_score_adj", h.pid()), adj.to_string()).unwrap();
    }
    assert!(h.wait_ready(), "{mib} MiB {mode:?} hog did not get ready");
    h
}

/// One frozen OOM: `limited` carries the limit (its OOM killer is disabled
/// while the scenario is set up), `push_in` gets the task that runs into the
/// limit, `ask` is the `--cgroup` given to predict. Returns (predicted tgid,
/// the kernel's victim tgid, the prediction).
fn frozen(
    watch: &mut VictimWatch,
    limited: &MemcgGuard,
    push_in: &MemcgGuard,
    ask: &str,
    tasks: &[&Hog],
) -> (u32, u32, serde_json::Value) {
    let pusher = Hog::start(HOG, push_in, 64).unwrap();
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    while !limited.under_oom() {
        assert!(
            std::time::Instant::now() < deadline,
            "{} never reached its limit",
            limited.path
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    let p = predict(ask);
    let predicted = p["victim"]["tgid"].as_u64().expect("a predicted victim") as u32;
    limited.set_oom_kill_disable(false).unwrap();
    let mut pids: Vec<u32> = tasks.iter().map(|h| h.pid()).collect();
    pids.push(pusher.pid());
    let victims = watch.victims_among(&pids, Duration::from_secs(20), Duration::from_millis(200));
    assert!(!victims.is_empty(), "no kill in {}", limited.path);
    let actual = victims[0].tgid.unwrap_or(victims[0].pid);
    drop(pusher);
    (predicted, actual, p)
}

#[test]
fn predict_matches_the_kernel_in_memcg_scenarios() {
    require_root();
    let mut watch = VictimWatch::start();
    let probe = MemcgGuard::create(LIMIT).unwrap();
    if probe.hierarchy.version != CgroupVersion::V1 {
        oomwatch_tests::skip(
            "predict_matches_the_kernel_in_memcg_scenarios",
            "freezing an OOM needs cgroup v1's oom_kill_disable",
        );
        return;
    }
    drop(probe);
    let mut results: Vec<(&str, u32, u32, u32)> = Vec::new();
    let mut record = |name: &'static str,
                      expected: u32,
                      (predicted, actual, p): (u32, u32, serde_json::Value)| {
        eprintln!(
            "{name}: expected {expected}, predicted {predicted}, kernel {actual}; top: {}",
            p["candidates"][0]
        );
        results.push((name, expected, predicted, actual));
    };

    // A tiny task with oom_score_adj +1000 beats 20 and 26 MiB.
    {
        let m = MemcgGuard::create(LIMIT).unwrap();
        m.set_oom_kill_disable(true).unwrap();
        let a = hog(&m, 20, &[], 0);
        let b = hog(&m, 26, &[], 0);
        let tiny = hog(&m, 2, &[], 1000);
        let r = frozen(&mut watch, &m, &m, &m.path, &[&a, &b, &tiny]);
        record("adj +1000 on a tiny task", tiny.pid(), r);
    }
    // +500 on 20 MiB (5 120 + 500 × 16 pages) beats 30 MiB.
    {
        let m = MemcgGuard::create(LIMIT).unwrap();
        m.set_oom_kill_disable(true).unwrap();
        let a = hog(&m, 20, &[], 500);
        let b = hog(&m, 30, &[], 0);
        let r = frozen(&mut watch, &m, &m, &m.path, &[&a, &b]);
        record("adj +500 on the smaller task", a.pid(), r);
    }
    // Page tables count: 12 MiB touched sparsely (≈ 12 MiB of page tables too)
    // beats 20 MiB of dense anon.
    {
        let m = MemcgGuard::create(LIMIT).unwrap();
        m.set_oom_kill_disable(true).unwrap();
        let s = hog(&m, 12, &["sparse"], 0);
        let a = hog(&m, 20, &[], 0);
        let r = frozen(&mut watch, &m, &m, &m.path, &[&s, &a]);
        record("page-table-heavy sparse mapping", s.pid(), r);
    }
    // Shared memory counts (RssShmem): a 24 MiB memfd beats 20 MiB anon.
    {
        let m = MemcgGuard::create(LIMIT).unwrap();
        m.set_oom_kill_disable(true).unwrap();
        let a = hog(&m, 20, &[], 0);
        let sh = hog(&m, 24, &["shmem"], 0);
        let r = frozen(&mut watch, &m, &m, &m.path, &[&a, &sh]);
        record("shared memory (memfd)", sh.pid(), r);
    }
    // A process of 4 threads is scored once, with all of its memory.
    {
        let m = MemcgGuard::create(LIMIT).unwrap();
        m.set_oom_kill_disable(true).unwrap();
        let a = hog(&m, 20, &[], 0);
        let t = hog(&m, 28, &["threads", "4"], 0);
        let r = frozen(&mut watch, &m, &m, &m.path, &[&a, &t]);
        record("multi-threaded process", t.pid(), r);
    }
    // File pages mapped into the task count in its points even though they
    // were charged elsewhere (written before the task joined the cgroup).
    {
        let m = MemcgGuard::create(LIMIT).unwrap();
        m.set_oom_kill_disable(true).unwrap();
        // Written and synced by this (unconfined) test process, removed at the end.
        let path = std::env::temp_dir().join(format!("oomwatch-predict-{}", std::process::id()));
        std::fs::write(&path, vec![7u8; 30 << 20]).unwrap();
        std::fs::File::open(&path).unwrap().sync_all().unwrap();
        let a = hog(&m, 20, &[], 0);
        let b = hog(&m, 26, &[], 0);
        let f = hog(&m, 30, &["file", path.to_str().unwrap()], 0);
        let _ = std::fs::remove_file(&path);
        let r = frozen(&mut watch, &m, &m, &m.path, &[&a, &b, &f]);
        record("file-backed mapped pages", f.pid(), r);
    }
    // Limit on the parent: the domain is the parent, its whole subtree is
    // scanned, asked through a child without a limit.
    {
        let p = MemcgGuard::create(LIMIT).unwrap();
        p.set_oom_kill_disable(true).unwrap();
        let ca = p.child("oomwatch-a", None).unwrap();
        let cb = p.child("oomwatch-b", None).unwrap();
        let a = hog(&ca, 20, &[], 0);
        let b = hog(&cb, 26, &[], 0);
        let r = frozen(&mut watch, &p, &ca, &ca.path, &[&a, &b]);
        record("nested, limit on the parent", b.pid(), r);
        drop((a, b));
        drop((ca, cb));
    }
    // Limit on a child under an unlimited parent.
    {
        let q = MemcgGuard::create_with(None).unwrap();
        let c = q.child("oomwatch-c", Some(LIMIT)).unwrap();
        c.set_oom_kill_disable(true).unwrap();
        let a = hog(&c, 20, &[], 0);
        let b = hog(&c, 26, &[], 0);
        let r = frozen(&mut watch, &c, &c, &c.path, &[&a, &b]);
        record("nested, limit on the child", b.pid(), r);
        drop((a, b));
        drop(c);
    }

    let agree = results.iter().filter(|(_, _, p, a)| p == a).count();
    eprintln!(
        "agreement: {agree}/{} scenarios (model's victim = kernel's first victim)",
        results.len()
    );
    for (name, expected, predicted, actual) in &results {
        assert_eq!(
            predicted, actual,
            "{name}: model {predicted}, kernel {actual}"
        );
        assert_eq!(
            actual, expected,
            "{name}: the scenario did not produce its intended victim"
        );
    }
}

/// The memory charged to `memcg` now (v1 `memory.usage_in_bytes`, v2
/// `memory.current`).
fn usage_bytes(memcg: &MemcgGuard) -> u64 {
    let file = match memcg.hierarchy.version {
        CgroupVersion::V1 => "memory.usage_in_bytes",
        CgroupVersion::V2 => "memory.current",
    };
    std::fs::read_to_string(memcg.dir.join(file))
        .unwrap()
        .trim()
        .parse()
        .unwrap()
}

/// `predict --forecast` on a steady leak, 2 MiB a second into a 64 MiB
/// cgroup: after 6 s of passes the domain's OOM is ahead (`in`), as far
/// ahead as the leak's rate and the room left say, the leak is the victim
/// then, and the kernel kills it about when forecast.
#[test]
fn predict_forecast_times_a_steady_leak() {
    require_root();
    const RATE: f64 = (2 << 20) as f64;
    let memcg = MemcgGuard::create(LIMIT).unwrap();
    let mut leak = Hog::start_mode(HOG, &memcg, 256, &["leak", "2048"]).unwrap();
    assert!(leak.wait_ready(), "the leak did not start");
    let began = std::time::Instant::now();
    let out = Command::new(env!("CARGO_BIN_EXE_oomwatch"))
        .args([
            "predict",
            "--cgroup",
            &memcg.path,
            "--forecast",
            "--over",
            "6",
        ])
        .arg("--json")
        .output()
        .unwrap();
    let answered = std::time::Instant::now();
    // What the rate says is left once predict answers.
    let by_rate = LIMIT.saturating_sub(usage_bytes(&memcg)) as f64 / RATE;
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "predict --forecast: {stderr}");
    assert!(
        stderr.contains("sampling 0/6 s…") && stderr.contains("sampling 6/6 s…"),
        "progress goes to stderr: {stderr}"
    );
    let v: serde_json::Value =
        serde_json::from_slice(&out.stdout).expect("predict --forecast --json is JSON alone");
    assert_eq!(v["domain"]["cgroup"], memcg.path.as_str(), "{v}");
    let f = &v["forecast"];
    assert_eq!(f["state"], "in", "{f}");
    let seconds = f["seconds_to_oom"]
        .as_f64()
        .expect("a finite seconds_to_oom");
    let error = f["error_seconds"].as_f64().expect("a finite error_seconds");
    assert_eq!(f["victim_at_oom"]["tgid"], leak.pid(), "{f}");
    assert_eq!(f["victim_at_oom"]["comm"], "oomwatch-hog", "{f}");
    assert_eq!(f["victim_now_tgid"], v["victim"]["tgid"], "{v}");
    assert_eq!(f["overtaken"], false, "{f}");
    let status = leak
        .wait_exit(Duration::from_secs(90))
        .expect("the leak was not killed within 90 s");
    let killed = answered.elapsed().as_secs_f64();
    eprintln!(
        "predict answered {:.1} s into the leak: OOM in {seconds:.1} s ± {error:.1} s; the rate \
         says {by_rate:.1} s; killed {killed:.1} s after the answer",
        (answered - began).as_secs_f64()
    );
    assert!(oomwatch_tests::killed_by_sigkill(&status), "{status:?}");
    assert!((5.0..=40.0).contains(&seconds), "{f}");
    assert!(
        (seconds - by_rate).abs() <= 0.2 * by_rate + 1.0,
        "forecast {seconds:.1} s, the rate says {by_rate:.1} s"
    );
    assert!(
        (seconds - killed).abs() <= 0.2 * killed + 1.0,
        "forecast {seconds:.1} s, killed after {killed:.1} s"
    );
}
