//! The model against the live kernel: for every task on this machine, the
//! model's `/proc/PID/oom_score` (its `oom_badness` put through this
//! version's formula) must equal what the kernel prints, or the difference
//! must be explained.

use std::{
    io::{BufRead as _, BufReader, Write as _},
    path::Path,
    process::{Command, Stdio},
};

use oomwatch::{daemon::pass, snapshot::proc};

/// Starts an `oomwatch-hog` of `mib` MiB with `oom_score_adj` `adj`, outside
/// any memory cgroup: small against this machine's RAM, never an OOM.
fn hog(mib: usize, adj: i16) -> std::process::Child {
    let mut child = Command::new(env!("CARGO_BIN_EXE_oomwatch-hog"))
        .arg(mib.to_string())
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    // Raising oom_score_adj needs no privilege.
    std::fs::write(
        format!("/proc/{}/oom_score_adj", child.id()),
        adj.to_string(),
    )
    .unwrap();
    child.stdin.as_mut().unwrap().write_all(b"go\n").unwrap();
    let mut line = String::new();
    BufReader::new(child.stdout.as_mut().unwrap())
        .read_line(&mut line)
        .unwrap();
    assert_eq!(line.trim(), "ready");
    child
}

#[test]
fn model_oom_score_equals_the_kernels_for_every_task() {
    // Tasks whose badness is not tiny, so the B*1000/T term and the adj
    // term both show: 200 MiB with adj 0, 300 MiB with adj 250, 64 MiB with 1000.
    let mut hogs = [hog(200, 0), hog(300, 250), hog(64, 1000)];
    let snap = proc::read(Path::new("/proc")).expect("read /proc");
    // The daemon's own self-check, on this snapshot.
    let check = pass::self_check(&snap, |pid| proc::read_pid(Path::new("/proc"), pid));
    // The hogs were compared and score what §3 predicts, far from 666.
    for h in &hogs {
        let e = snap
            .processes
            .iter()
            .find(|e| e.process.tgid == h.id() as i32)
            .expect("hog listed");
        assert!(
            e.kernel_oom_score.unwrap() > 666,
            "hog {:?}",
            e.kernel_oom_score
        );
    }
    for h in &mut hogs {
        let _ = h.kill();
        let _ = h.wait();
    }
    eprintln!(
        "Linux {}: {} tasks compared, {} exact, {} explained{}",
        snap.kernel,
        check.compared,
        check.exact,
        check.explained.len(),
        check
            .explained
            .iter()
            .map(|s| format!("\n  {s}"))
            .collect::<String>()
    );
    assert!(
        check.compared >= 10,
        "only {} tasks compared",
        check.compared
    );
    assert!(
        check.mismatches.is_empty(),
        "model ≠ kernel:\n{}",
        check.mismatches.join("\n")
    );
}
