//! `oomwatch selftest`, run for real on this host: every scenario that runs
//! names the same victim on every side, skipped ones say why, nothing is
//! left behind, and bad input is refused.

use std::{
    os::unix::process::{CommandExt as _, ExitStatusExt as _},
    path::PathBuf,
    process::{Command, Stdio},
    time::{Duration, Instant},
};

use oomwatch::host::cgroup::{CgroupVersion, memory_hierarchy};

const OOMWATCH: &str = env!("CARGO_BIN_EXE_oomwatch");
const NOBODY: u32 = 65534;
const ALL: &str =
    "largest,adj+500,adj+1000,adj-1000,adj-999,threads,shmem,pagetables,nested,oom-group,ties";

/// Whether `test` can run its subject here (root, a memory controller).
/// Under `CI=true` a test that cannot must fail; elsewhere it says it is
/// skipped.
fn can_run(test: &str) -> bool {
    let why = if !nix::unistd::geteuid().is_root() {
        Some("needs root (it creates memory cgroups and loads eBPF)")
    } else if memory_hierarchy().is_none() {
        Some("no mounted cgroup hierarchy has the memory controller")
    } else {
        None
    };
    match why {
        None => true,
        Some(why) => {
            oomwatch_tests::skip(test, why);
            false
        }
    }
}

/// The selftest cgroups that exist now (any run's).
fn selftest_cgroups() -> Vec<PathBuf> {
    let Some(h) = memory_hierarchy() else {
        return Vec::new();
    };
    std::fs::read_dir(&h.mount_point)
        .map(|d| {
            d.flatten()
                .map(|e| e.path())
                .filter(|p| {
                    p.file_name()
                        .and_then(|n| n.to_str())
                        .is_some_and(|n| n.starts_with("oomwatch-selftest-"))
                })
                .collect()
        })
        .unwrap_or_default()
}

/// Every scenario: each one that ran passed with predicted == kernel ==
/// eBPF; each skipped one carries its reason (and only the ones this host
/// cannot run are skipped); exit 0; no cgroup left.
#[test]
fn every_scenario_names_one_victim_on_every_side() {
    if !can_run("every_scenario_names_one_victim_on_every_side") {
        return;
    }
    let child = Command::new(OOMWATCH)
        .args(["selftest", "--json", "--scenarios", ALL])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    // Other tests' selftests may run meanwhile: this run's cgroups only.
    let mine = format!("oomwatch-selftest-{}-", child.id());
    let out = child.wait_with_output().unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    let doc: serde_json::Value = serde_json::from_str(&text)
        .unwrap_or_else(|e| panic!("selftest --json is not JSON ({e}): {text}\n{stderr}"));
    let scenarios = doc["scenarios"].as_array().expect("scenarios");
    assert_eq!(scenarios.len(), ALL.split(',').count(), "{text}");
    let v2 = memory_hierarchy().unwrap().version == CgroupVersion::V2;
    for s in scenarios {
        let name = s["name"].as_str().unwrap();
        match s["status"].as_str().unwrap() {
            "passed" => {
                let predicted = &s["predicted"]["pid"];
                assert!(predicted.is_i64(), "{name}: no prediction: {s}");
                assert_eq!(&s["kernel"]["pid"], predicted, "{name}: kernel: {s}");
                assert_eq!(&s["ebpf"]["pid"], predicted, "{name}: eBPF: {s}");
                assert_ne!(s["replay"]["agrees"], false, "{name}: replay: {s}");
                // Where hooks do not attach, the reason is given.
                let kp = &s["kernel_points"];
                assert!(
                    kp["pid"] == *predicted || kp["unavailable"].is_string(),
                    "{name}: kernel points: {s}"
                );
            }
            "skipped" => {
                let reason = s["reason"].as_str().unwrap_or_default();
                assert!(!reason.is_empty(), "{name}: skipped without a reason");
                match name {
                    "adj-1000" | "adj-999" => {
                        assert!(reason.contains("CAP_SYS_RESOURCE"), "{name}: {reason}")
                    }
                    "oom-group" => assert!(!v2 && reason.contains("cgroup v2"), "{reason}"),
                    other => panic!("{other} skipped: {reason}"),
                }
            }
            other => panic!("{name} {other}: {}\n{s}", s["reason"]),
        }
    }
    assert_eq!(doc["exit_code"], 0, "{text}\n{stderr}");
    assert_eq!(out.status.code(), Some(0), "{stderr}");
    assert!(
        doc["passed"].as_u64().unwrap() >= 7,
        "at least the seven scenarios every host can run: {text}"
    );
    let left: Vec<PathBuf> = selftest_cgroups()
        .into_iter()
        .filter(|p| p.to_string_lossy().contains(&mine))
        .collect();
    assert!(left.is_empty(), "left behind: {left:?}");
}

/// An unknown scenario name: exit 2 and a message that names it and the
/// valid ones; nothing is created.
#[test]
fn an_unknown_scenario_is_refused_with_the_valid_names() {
    let out = Command::new(OOMWATCH)
        .args(["selftest", "--scenarios", "largest,no-such-thing"])
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert!(
        stderr.contains("unknown scenario no-such-thing")
            && stderr.contains("valid scenarios: largest, adj+500"),
        "{stderr}"
    );
    assert!(out.stdout.is_empty());
}

/// Without root: one precise message, exit 2.
#[test]
fn without_root_one_precise_message() {
    if !can_run("without_root_one_precise_message") {
        return;
    }
    let out = Command::new(OOMWATCH)
        .args(["selftest", "--scenarios", "largest"])
        .uid(NOBODY)
        .gid(NOBODY)
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert_eq!(stderr.trim().lines().count(), 1, "one message: {stderr}");
    assert!(stderr.contains("oomwatch selftest needs root"), "{stderr}");
}

/// Ctrl-C in the middle of a run: the selftest removes its cgroups (and
/// the workloads in them) before it exits.
#[test]
fn an_interrupted_run_leaves_no_cgroup() {
    if !can_run("an_interrupted_run_leaves_no_cgroup") {
        return;
    }
    let child = Command::new(OOMWATCH)
        .args([
            "selftest",
            "--scenarios",
            "largest,shmem,pagetables,nested,ties",
        ])
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mine = format!("oomwatch-selftest-{}-", child.id());
    let deadline = Instant::now() + Duration::from_secs(30);
    while !selftest_cgroups().iter().any(|p| {
        p.file_name()
            .and_then(|n| n.to_str())
            .is_some_and(|n| n.starts_with(&mine))
    }) {
        assert!(Instant::now() < deadline, "no {mine}* cgroup within 30 s");
        std::thread::sleep(Duration::from_millis(5));
    }
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(child.id() as i32),
        nix::sys::signal::Signal::SIGINT,
    )
    .unwrap();
    let out = child.wait_with_output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(
        (out.status.code(), out.status.signal()),
        (Some(130), None),
        "{stderr}"
    );
    assert!(stderr.contains("interrupted"), "{stderr}");
    let left: Vec<PathBuf> = selftest_cgroups()
        .into_iter()
        .filter(|p| p.to_string_lossy().contains(&mine))
        .collect();
    assert!(left.is_empty(), "left behind: {left:?}");
}
