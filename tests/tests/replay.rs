//! `oomwatch replay` against the kernel: real memcg OOM kills on this host,
//! the kernel's own report of each read from `/dev/kmsg`, replayed by the
//! binary, which must name the task the kernel killed. Each report is also
//! written to `target/host-reports/` in the fixture form
//! (`<arch>-<release>-<scenario>.log`), ready to be committed under
//! `oomwatch/tests/fixtures/host-reports`.

use std::{path::PathBuf, process::Command, time::Duration};

use oomwatch_tests::{
    Hog, KmsgTail, MemcgGuard, killed_by_sigkill, require_root, wait_for_a_fresh_report_window,
};

fn replay_json(path: &str) -> (Option<i32>, serde_json::Value) {
    let out = Command::new(env!("CARGO_BIN_EXE_oomwatch"))
        .args(["replay", "--json", path])
        .output()
        .unwrap();
    let v = serde_json::from_slice(&out.stdout).unwrap_or_else(|e| {
        panic!(
            "replay {path}: {e}: {}",
            String::from_utf8_lossy(&out.stderr)
        )
    });
    (out.status.code(), v)
}

fn release() -> String {
    nix::sys::utsname::uname()
        .unwrap()
        .release()
        .to_string_lossy()
        .into_owned()
}

/// One scenario: `setup` starts the hogs (the last one pushes the cgroup
/// over its 64 MiB limit) and returns them with the index of the one the
/// kernel must kill and the pid its kill line will name (the hog's own, or
/// one of its threads). The kernel's report is replayed from a file and
/// from the live log.
fn scenario(name: &str, setup: impl FnOnce(&str, &MemcgGuard) -> (Vec<Hog>, usize, u32)) {
    require_root();
    // Else the report may be only its kill line (seen in the full suite).
    wait_for_a_fresh_report_window();
    let bin = env!("CARGO_BIN_EXE_oomwatch-hog");
    let memcg = MemcgGuard::create(64 << 20).expect("create a 64 MiB memory cgroup");
    let mut kmsg = KmsgTail::from_now();
    let (mut hogs, expect, victim) = setup(bin, &memcg);
    let tgid = hogs[expect].pid();
    let status = hogs[expect]
        .wait_exit(Duration::from_secs(30))
        .unwrap_or_else(|| panic!("{name}: the expected victim {tgid} lived 30 s"));
    assert!(killed_by_sigkill(&status), "{name}: {status:?}");
    let text = kmsg.messages_until_kill(victim);
    drop(hogs);

    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("kmsg.log");
    std::fs::write(&file, &text).unwrap();
    let (code, v) = replay_json(file.to_str().unwrap());
    let reports = v.as_array().unwrap();
    let r = reports
        .iter()
        .find(|r| r["kernel_victim"]["pid"] == victim)
        .unwrap_or_else(|| panic!("{name}: no report of the kill of {victim}: {v:#}"));
    eprintln!(
        "{name}: kernel {} rules {} arch {}: predicted {}, killed {}: {}",
        r["kernel"], r["rules"], r["arch"], r["predicted_victim"], r["kernel_victim"], r["reason"]
    );
    assert_eq!(r["agrees"], true, "{name}: {r:#}");
    assert_eq!(r["predicted_victim"]["pid"], victim, "{name}: {r:#}");
    assert_eq!(r["predicted_victim"]["tgid"], tgid, "{name}: {r:#}");
    if victim != tgid {
        let why = r["reason"].as_str().unwrap();
        assert!(
            why.contains(&format!("thread {victim} of process {tgid}")),
            "{name}: {why}"
        );
    }
    assert_eq!(r["kernel"], release().as_str(), "{name}");
    assert_eq!(r["arch"], std::env::consts::ARCH, "{name}");
    assert_eq!(r["constraint"], "CONSTRAINT_MEMCG", "{name}");
    assert_eq!(r["oom_memcg"], memcg.path.as_str(), "{name}");
    assert_eq!(r["totalpages"], 16_384, "{name}");
    assert_eq!(r["totalpages_exact"], true, "{name}");
    if reports.iter().all(|r| r["agrees"] != false) {
        assert_eq!(code, Some(0), "{name}");
    }

    // The live kernel log holds the same report.
    let (_, live) = replay_json("/dev/kmsg");
    let l = live
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["kernel_victim"]["pid"] == victim)
        .unwrap_or_else(|| panic!("{name}: /dev/kmsg has no report of {victim}"));
    assert_eq!(l["agrees"], true, "{name}: {l:#}");
    assert_eq!(l["predicted_victim"], r["predicted_victim"], "{name}");

    // Keep the report as a fixture candidate.
    let lines: Vec<&str> = text.lines().collect();
    let (a, b) = (
        r["lines"][0].as_u64().unwrap() as usize,
        r["lines"][1].as_u64().unwrap() as usize,
    );
    let out = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../target/host-reports");
    std::fs::create_dir_all(&out).unwrap();
    let arch = std::env::consts::ARCH;
    let rel = release();
    let body = lines[a - 1..b].join("\n");
    std::fs::write(
        out.join(format!("{arch}-{rel}-{name}.log")),
        format!(
            "# Kernel OOM report captured by the privileged test `replay::{name}` (tests/tests/replay.rs):\n\
             # {arch} host, Linux {rel}, a 64 MiB cgroup v1 memcg; the kernel killed the scenario's victim.\n{body}\n"
        ),
    )
    .unwrap();
}

/// 12, 16 and 48 MiB hogs: the last one runs into the limit at about 30 MiB
/// and is the largest: the kernel kills the task that is allocating.
#[test]
fn replay_three_hogs() {
    scenario("three-hogs", |bin, memcg| {
        let mut hogs = Vec::new();
        for mib in [12, 16, 48] {
            let mut h = Hog::start(bin, memcg, mib).unwrap();
            h.wait_ready();
            hogs.push(h);
        }
        let pid = hogs[2].pid();
        (hogs, 2, pid)
    });
}

/// oom_score_adj 1000 adds 16 000 points (1000 × 16384 / 1000): an 8 MiB
/// hog with it outweighs 20 MiB and the ~30 MiB pusher.
#[test]
fn replay_adj_1000() {
    scenario("adj+1000", |bin, memcg| {
        let mut small = Hog::start(bin, memcg, 8).unwrap();
        assert!(small.wait_ready());
        std::fs::write(format!("/proc/{}/oom_score_adj", small.pid()), "1000").unwrap();
        let mut large = Hog::start(bin, memcg, 20).unwrap();
        assert!(large.wait_ready());
        let mut pusher = Hog::start(bin, memcg, 48).unwrap();
        pusher.wait_ready();
        let pid = small.pid();
        (vec![small, large, pusher], 0, pid)
    });
}

/// A 36 MiB hog of 4 threads beside a pusher that reaches about 26 MiB:
/// the table lists the process once, under its leader, and the kernel
/// kills it.
#[test]
fn replay_threaded_process() {
    scenario("threads", |bin, memcg| {
        let mut threaded = Hog::start_mode(bin, memcg, 36, &["threads", "4"]).unwrap();
        assert!(threaded.wait_ready());
        let mut pusher = Hog::start(bin, memcg, 48).unwrap();
        pusher.wait_ready();
        let pid = threaded.pid();
        (vec![threaded, pusher], 0, pid)
    });
}

/// A process whose leader thread has exited (`exit(2)`) while its
/// worker lives on with all the memory: the kernel finds the mm in the
/// worker, lists the process under the worker's pid and names the worker in
/// its kill line; the replay must see the same process.
#[test]
fn replay_exited_leader() {
    scenario("leader-exited", |bin, memcg| {
        let mut orphan = Hog::start_mode(bin, memcg, 36, &["leaderexit"]).unwrap();
        assert!(orphan.wait_ready());
        let leader = orphan.pid();
        // The worker is the one thread left besides the zombie leader.
        let worker = (0..100)
            .find_map(|_| {
                let tids: Vec<u32> = std::fs::read_dir(format!("/proc/{leader}/task"))
                    .ok()?
                    .flatten()
                    .filter_map(|e| e.file_name().to_str()?.parse().ok())
                    .filter(|&t| t != leader)
                    .collect();
                let state = std::fs::read_to_string(format!("/proc/{leader}/stat")).ok()?;
                if tids.len() == 1 && state.contains(") Z ") {
                    return Some(tids[0]);
                }
                std::thread::sleep(Duration::from_millis(20));
                None
            })
            .expect("the leader exits and one worker remains");
        // The live model sees the process as the kernel does: its mm is
        // read from the worker, so it is the predicted victim.
        let out = Command::new(env!("CARGO_BIN_EXE_oomwatch"))
            .args(["predict", "--json", "--cgroup", &memcg.path])
            .output()
            .unwrap();
        let p: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
        assert_eq!(p["victim"]["tgid"], leader, "predict: {p:#}");
        let mut pusher = Hog::start(bin, memcg, 48).unwrap();
        pusher.wait_ready();
        (vec![orphan, pusher], 0, worker)
    });
}

/// A report whose task table names a task with terminal escapes: `oomwatch
/// replay` prints it escaped (no ESC or BEL byte reaches the terminal) and
/// `--json` keeps the name exact.
#[test]
fn replay_escapes_task_names_for_the_terminal() {
    let fixture = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../oomwatch/tests/fixtures/host-reports/x86_64-6.18.44-fc-v669-three-hogs.log"
    );
    let name = "\u{1b}[2J\u{1b}]0;pwned\u{7}";
    let text = std::fs::read_to_string(fixture)
        .expect("the three-hogs fixture")
        .replace(" oomwatch-hog\n", &format!(" {name}\n"));
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("escape.log");
    std::fs::write(&file, &text).unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_oomwatch"))
        .arg("replay")
        .arg(&file)
        .output()
        .unwrap();
    let stdout = String::from_utf8(out.stdout).unwrap();
    assert_eq!(out.status.code(), Some(0), "{stdout}");
    assert!(
        !stdout.bytes().any(|b| b == 0x1b || b == 0x07),
        "raw control bytes: {stdout:?}"
    );
    assert!(stdout.contains(r"\x1b[2J\x1b]0;pwned\x07"), "{stdout}");
    let (code, v) = replay_json(file.to_str().unwrap());
    assert_eq!(code, Some(0));
    assert_eq!(v[0]["candidates"][0]["comm"], name, "{v:#}");
}
