//! The model against the live kernel: for every task on this machine, the
//! model's `/proc/PID/oom_score` (its `oom_badness` put through this
//! version's formula) must equal what the kernel prints, or the difference
//! must be explained.

use std::{
    io::{BufRead as _, BufReader, Write as _},
    path::Path,
    process::{Command, Stdio},
};

use oomwatch::{daemon::pass, model::behavior::RssCounters, snapshot::proc};

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

/// A `pages` hog: anonymous address space it touches `K` pages at a time
/// on request.
struct Stepper {
    child: std::process::Child,
    out: BufReader<std::process::ChildStdout>,
}

impl Stepper {
    fn start(mib: usize) -> Self {
        let mut child = Command::new(env!("CARGO_BIN_EXE_oomwatch-hog"))
            .args([&mib.to_string(), "pages"])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .unwrap();
        let mut out = BufReader::new(child.stdout.take().unwrap());
        child.stdin.as_mut().unwrap().write_all(b"go\n").unwrap();
        let mut line = String::new();
        out.read_line(&mut line).unwrap();
        assert_eq!(line.trim(), "ready");
        Stepper { child, out }
    }

    fn touch(&mut self, pages: u64) {
        writeln!(self.child.stdin.as_mut().unwrap(), "{pages}").unwrap();
        let mut line = String::new();
        self.out.read_line(&mut line).unwrap();
        assert_eq!(line.trim(), "ok");
    }
}

impl Drop for Stepper {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The running kernel says which rss counters its `oom_badness` reads: a
/// task whose precise rss (`/proc/PID/status`) and approximate rss
/// (`/proc/PID/stat`) give two different scores shows, in its `oom_score`,
/// which one the kernel took. Two hogs are stepped page by page until each
/// is such a task; a full read must then measure the kernel's choice, and
/// the model's rules (`rules()`, `behavior()`) must follow what the kernel
/// showed. On kernels whose /proc cannot tell the two apart (atomic
/// counters ≤ 6.1, or status without the precise sums) no task can: the
/// test says so and checks that nothing was decided.
#[test]
fn the_kernels_own_tasks_say_which_rss_counters_it_scores_with() {
    use oomwatch::model::{
        KernelBehavior,
        badness::oom_badness,
        score::{CounterSample, measure_counters, proc_oom_score},
    };
    let root = Path::new("/proc");
    let header = proc::read_header(root).expect("read /proc");
    let release = KernelBehavior::for_version(header.version);
    let (t, page) = (header.memory.totalpages(), header.page_size);
    let tells = |pid: u32| {
        let e = proc::read_pid(root, pid as i32).expect("hog readable");
        let m = measure_counters(
            [CounterSample {
                process: &e.process,
                approx_rss_pages: e.stat_rss_pages.expect("stat rss"),
                kernel_score: e.kernel_oom_score.expect("oom_score"),
            }],
            t,
            page,
            &release,
        );
        (e, m)
    };
    // Pages to add to `e`'s anonymous rss before its score moves.
    let to_next_score = |e: &proc::ProcEntry| {
        let score = |extra: u64| {
            let mut p = e.process.clone();
            p.mm.as_mut().unwrap().anon_pages += extra;
            proc_oom_score(&oom_badness(&p, t, page, &release), t, &release)
        };
        let now = score(0);
        let (mut lo, mut hi) = (0, 1);
        while score(hi) == now {
            (lo, hi) = (hi, hi * 2);
        }
        while hi - lo > 1 {
            let mid = (lo + hi) / 2;
            if score(mid) == now {
                lo = mid
            } else {
                hi = mid
            }
        }
        hi
    };
    let mut hogs: Vec<Stepper> = Vec::new();
    let mut said = Vec::new();
    for _ in 0..2 {
        let mut h = Stepper::start(512);
        let pid = h.child.id();
        // Up to 20 score steps: where the per-CPU delta happens to be 0 at
        // a step, both counters cross it together; the next step is tried.
        for _ in 0..20 {
            let (e, m) = tells(pid);
            if m.precise + m.approximate > 0 {
                said.push((
                    m.precise > 0,
                    e.stat_rss_pages,
                    e.process.mm.unwrap().rss_pages(),
                ));
                break;
            }
            h.touch(to_next_score(&e));
        }
        hogs.push(h);
    }
    eprintln!(
        "Linux {} (the release says {}): hogs that told, (precise?, approximate rss, precise rss): {said:?}",
        header.kernel,
        release.rss_counters()
    );
    let snap = proc::read(root).expect("read /proc");
    let rules = snap.rules();
    let measured = rules.measured.clone().expect("a full read measures");
    eprintln!("{}: {}", rules.rss_counters, rules.rss_counters_from);
    if said.is_empty() {
        // /proc shows one kind of counter here: nothing can be decided.
        assert!(
            matches!(release.rss_counters(), RssCounters::Atomic) || !release.proc_rss_precise,
            "no hog told on a kernel whose /proc shows both counters: {said:?}"
        );
        assert_eq!(measured.says(), None, "{measured:?}");
        oomwatch_tests::skip(
            "the_kernels_own_tasks_say_which_rss_counters_it_scores_with",
            &format!(
                "/proc on Linux {} shows one kind of rss counter",
                header.kernel
            ),
        );
        return;
    }
    assert_eq!(said.len(), 2, "only one hog told: {said:?}");
    assert!(
        said.iter().all(|s| s.0 == said[0].0),
        "the hogs disagree: {said:?}"
    );
    let shown = if said[0].0 {
        RssCounters::PreciseSums
    } else {
        RssCounters::Approximate
    };
    assert_eq!(measured.says(), Some(shown), "{measured:?}");
    assert_eq!(rules.rss_counters, shown, "{}", rules.rss_counters_from);
    assert_eq!(snap.behavior().rss_counters(), shown);
    drop(hogs);
}
