//! The daemon as a user runs it: `oomwatch run`, scraped over HTTP while a
//! real memcg OOM happens, then stopped with a signal.

use std::{
    io::{BufRead as _, BufReader, Write as _},
    net::TcpListener,
    process::{Child, Command, ExitStatus, Stdio},
    sync::{Arc, Mutex},
    thread::JoinHandle,
    time::{Duration, Instant},
};

use nix::sys::signal::Signal;
use oomwatch::telemetry::metrics::prediction_why;
use oomwatch_tests::{
    Hog, LoopFs, MemcgGuard, THREE_HOGS_MIB, http_get, killed_by_sigkill, require_root,
    run_hogs_until_one_dies, sample,
};

/// `oomwatch run` on a free loopback port, its stderr collected. Killed and
/// reaped if the test fails before stopping it.
struct Daemon {
    child: Child,
    addr: String,
    log: Arc<Mutex<String>>,
    reader: Option<JoinHandle<()>>,
}

impl Daemon {
    /// Starts the daemon and waits for `/metrics` (the listener opens only
    /// after the probes are attached); returns it with the first scrape.
    fn start() -> (Self, String) {
        Self::start_under(&[])
    }

    /// As [`Daemon::start`], with more `run` arguments.
    fn start_with(extra: &[&str]) -> (Self, String) {
        Self::start_full(&[], extra)
    }

    fn start_under(wrapper: &[String]) -> (Self, String) {
        Self::start_full(wrapper, &[])
    }

    /// As [`Daemon::start`], run through `wrapper` (a command and its
    /// arguments that exec the rest, e.g. `setpriv …`), with `extra`
    /// arguments for `run`.
    fn start_full(wrapper: &[String], extra: &[&str]) -> (Self, String) {
        let port = TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let addr = format!("127.0.0.1:{port}");
        let bin = env!("CARGO_BIN_EXE_oomwatch");
        let mut cmd = match wrapper.split_first() {
            None => Command::new(bin),
            Some((first, rest)) => {
                let mut c = Command::new(first);
                c.args(rest).arg(bin);
                c
            }
        };
        let mut child = cmd
            .args(["run", "--listen", &addr])
            .args(extra)
            // debug shows aya-log lines from the eBPF side too
            .env("RUST_LOG", "info,oomwatch=debug")
            .stderr(Stdio::piped())
            .spawn()
            .expect("start oomwatch run");
        let stderr = child.stderr.take().unwrap();
        let log = Arc::new(Mutex::new(String::new()));
        let writer = Arc::clone(&log);
        let reader = std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                let mut l = writer.lock().unwrap();
                l.push_str(&line);
                l.push('\n');
            }
        });
        let mut d = Daemon {
            child,
            addr,
            log,
            reader: Some(reader),
        };
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if let Some(body) = http_get(&d.addr, "/metrics") {
                return (d, body);
            }
            if let Ok(Some(status)) = d.child.try_wait() {
                panic!("oomwatch run exited early with {status}:\n{}", d.log());
            }
            assert!(
                Instant::now() < deadline,
                "no /metrics after 30 s:\n{}",
                d.log()
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    fn log(&self) -> String {
        self.log.lock().unwrap().clone()
    }

    /// Scrapes `/metrics` every 100 ms until `done` holds for the body or
    /// `secs` seconds pass; returns the last body either way (the caller
    /// asserts on it).
    fn scrape_until(&self, secs: u64, done: impl Fn(&str) -> bool) -> String {
        let deadline = Instant::now() + Duration::from_secs(secs);
        loop {
            let body = http_get(&self.addr, "/metrics").expect("scrape");
            if done(&body) || Instant::now() > deadline {
                return body;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// Sends `sig` and waits (10 s at most) for the exit; returns the status
    /// and the whole log.
    fn stop(&mut self, sig: Signal) -> (ExitStatus, String) {
        nix::sys::signal::kill(nix::unistd::Pid::from_raw(self.child.id() as i32), sig).unwrap();
        let deadline = Instant::now() + Duration::from_secs(10);
        let status = loop {
            if let Some(s) = self.child.try_wait().unwrap() {
                break s;
            }
            assert!(
                Instant::now() < deadline,
                "oomwatch did not stop within 10 s of {sig}:\n{}",
                self.log()
            );
            std::thread::sleep(Duration::from_millis(50));
        };
        if let Some(r) = self.reader.take() {
            r.join().unwrap();
        }
        (status, self.log())
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[test]
fn run_exports_a_memcg_oom_kill_and_stops_on_sigterm() {
    require_root();
    // Every allocation counted (the counters are checked below), and the
    // programs timed.
    let (mut daemon, first) = Daemon::start_with(&["--program-stats", "--hot-probes", "always"]);
    assert_eq!(
        sample(&first, "oomwatch_oom_kills_total"),
        Some(0.0),
        "{first}"
    );
    assert!(first.contains("oomwatch_build_info{"), "{first}");
    // The reclaim histogram exists before any stall is seen.
    assert!(
        labelled(
            &first,
            "oomwatch_reclaim_stall_seconds_count",
            "kind=\"memcg\""
        )
        .is_some(),
        "{first}"
    );

    let memcg = MemcgGuard::create(64 << 20).expect("create a 64 MiB memory cgroup");
    let (hogs, dead, status) =
        run_hogs_until_one_dies(env!("CARGO_BIN_EXE_oomwatch-hog"), &memcg, &THREE_HOGS_MIB)
            .unwrap();
    assert!(killed_by_sigkill(&status), "{status:?}");
    let victim = hogs[dead].pid();
    let expected_memcg = format!("memcg={}:{}", memcg.hierarchy.version, memcg.path);
    let memcg_path = memcg.path.clone();

    let after = daemon.scrape_until(10, |b| sample(b, "oomwatch_oom_kills_total") == Some(1.0));
    assert_eq!(
        sample(&after, "oomwatch_oom_kills_total"),
        Some(1.0),
        "{after}"
    );
    // Every (outcome, why) pair is exported; the kill is counted in one.
    let counts: Vec<(&str, &str, f64)> = prediction_why::ALL
        .iter()
        .map(|&(o, why)| {
            let n = labelled(
                &after,
                "oomwatch_predictions_total",
                &format!("outcome=\"{o}\",why=\"{why}\""),
            )
            .unwrap_or_else(|| panic!("no series for ({o}, {why}):\n{after}"));
            (o, why, n)
        })
        .collect();
    let judged: f64 = counts.iter().map(|c| c.2).sum();
    assert_eq!(judged, 1.0, "one kill, one prediction outcome:\n{after}");
    // A kill judged against a pass has that pass's lead in the histogram.
    let (judged_as, _, _) = *counts.iter().find(|c| c.2 == 1.0).unwrap();
    let leads: f64 = ["match", "mismatch"]
        .iter()
        .filter_map(|o| {
            labelled(
                &after,
                "oomwatch_prediction_lead_seconds_count",
                &format!("outcome=\"{o}\""),
            )
        })
        .sum();
    assert_eq!(
        leads,
        if judged_as == "no_prediction" {
            0.0
        } else {
            1.0
        },
        "{after}"
    );
    // The kernel's own count of the kill, mirrored per domain: the
    // cgroup's (memory.events or memory.oom_control), and the host's
    // /proc/vmstat, which counts every kill on the machine.
    let events = |b: &str, cg: &str, domain: &str, event: &str| {
        labelled(
            b,
            "oomwatch_domain_memory_events_total",
            &format!("cgroup=\"{cg}\",domain=\"{domain}\",event=\"{event}\""),
        )
    };
    let counted = daemon.scrape_until(10, |b| {
        events(b, &memcg_path, "memcg", "oom_kill").is_some_and(|n| n >= 1.0)
    });
    assert_eq!(
        events(&counted, &memcg_path, "memcg", "oom_kill"),
        Some(1.0),
        "{counted}"
    );
    assert!(
        events(&counted, "", "global", "oom_kill").is_some_and(|n| n >= 1.0),
        "{counted}"
    );
    // v2 counts each charge that hit memory.max (v1's failcnt counts only
    // the memory counter's, and the test's limit may be the memsw one's).
    if memcg.hierarchy.version == oomwatch::host::cgroup::CgroupVersion::V2 {
        assert!(
            events(&counted, &memcg_path, "memcg", "max").is_some_and(|n| n >= 1.0),
            "{counted}"
        );
    }
    // At normal load nothing is lost.
    assert_eq!(
        sample(&after, "oomwatch_events_dropped_total"),
        Some(0.0),
        "{after}"
    );
    drop(hogs);
    drop(memcg);

    // bpf_stats: the kill ran both mark_victim programs at least once; the
    // verifier's instruction count is exported for each program.
    let stats = daemon.scrape_until(10, |b| {
        labelled(
            b,
            "oomwatch_program_runs_total",
            "program=\"oom_mark_victim\"",
        )
        .is_some_and(|r| r >= 1.0)
    });
    // The reclaim-retry program is attached too (it runs only under memory
    // pressure outside any memcg, which a test here must never cause).
    // The kill and the kernel's own report of it make one episode: the
    // report's constraint is counted, and its replay agrees with the kernel.
    let episodes = daemon.scrape_until(10, |b| {
        labelled(b, "oomwatch_report_replays_total", "outcome=\"agree\"").is_some_and(|n| n >= 1.0)
    });
    assert_eq!(
        labelled(
            &episodes,
            "oomwatch_report_replays_total",
            "outcome=\"agree\""
        ),
        Some(1.0),
        "{episodes}\n{}",
        daemon.log()
    );
    assert_eq!(
        labelled(
            &episodes,
            "oomwatch_oom_kills_by_constraint_total",
            "constraint=\"CONSTRAINT_MEMCG\""
        ),
        Some(1.0),
        "{episodes}"
    );

    // The hogs faulted in about 64 MiB of user memory: the kernel-side
    // allocation counters (GFP class user, any order) saw at least 48 MiB.
    let user_pages = |body: &str| -> f64 {
        body.lines()
            .filter_map(|l| l.strip_prefix("oomwatch_page_allocs_total{gfp_class=\"user\","))
            .filter_map(|rest| {
                let order: i32 = rest
                    .split("order=\"")
                    .nth(1)?
                    .split('"')
                    .next()?
                    .parse()
                    .ok()?;
                let n: f64 = rest.rsplit(' ').next()?.parse().ok()?;
                Some(n * f64::from(1 << order))
            })
            .sum()
    };
    let body = daemon.scrape_until(10, |b| user_pages(b) >= 12_288.0);
    assert!(
        labelled(&body, "oomwatch_page_alloc_failures_total", "order=\"0\"").is_some(),
        "{body}"
    );
    let user_pages = user_pages(&body);
    eprintln!("user pages allocated while the daemon ran: {user_pages}");
    assert!(user_pages >= 12_288.0, "{user_pages} user pages");

    // Charging 48 MiB against a 64 MiB limit made the hog reclaim inside
    // its memcg before the kill: the kernel-side histogram counted stalls.
    let stalls = daemon.scrape_until(10, |b| {
        labelled(b, "oomwatch_reclaim_stall_seconds_count", "kind=\"memcg\"")
            .is_some_and(|n| n >= 1.0)
    });
    let count = labelled(
        &stalls,
        "oomwatch_reclaim_stall_seconds_count",
        "kind=\"memcg\"",
    );
    let sum = labelled(
        &stalls,
        "oomwatch_reclaim_stall_seconds_sum",
        "kind=\"memcg\"",
    );
    // The hogs touched their memory page by page: the kernel counted the
    // write faults (x86's exceptions:page_fault_user), and the OOM happened
    // inside one (the report's call trace runs through handle_mm_fault).
    let writes = labelled(
        &stalls,
        "oomwatch_user_page_faults_total",
        "access=\"write\"",
    );
    let in_fault = labelled(
        &stalls,
        "oomwatch_page_fault_ooms_total",
        "source=\"report\"",
    );
    eprintln!("user write faults {writes:?}; OOM kills inside a page fault {in_fault:?}");
    if std::env::consts::ARCH == "x86_64" {
        assert!(writes.is_some_and(|n| n >= 12_288.0), "{stalls}");
    }
    assert_eq!(in_fault, Some(1.0), "{stalls}");
    // This host refuses fentry and has no kprobes: each kernel hook is
    // exported as off, and the episode carries no kernel scan.
    for f in ["out_of_memory", "oom_badness", "oom_kill_process"] {
        assert!(
            stalls.contains(&format!(
                "oomwatch_kernel_hook_info{{function=\"{f}\",path="
            )),
            "{f}: {stalls}"
        );
    }
    eprintln!("memcg reclaim stalls: count {count:?}, sum {sum:?} s");
    assert!(count.is_some_and(|n| n >= 1.0), "{stalls}");
    assert!(sum.is_some_and(|s| s > 0.0 && s < 60.0), "{stalls}");
    for prog in [
        "oom_mark_victim",
        "oom_mark_victim_task",
        "oom_reclaim_retry",
    ] {
        let l = format!("program=\"{prog}\"");
        assert!(
            prog == "oom_reclaim_retry"
                || labelled(&stats, "oomwatch_program_runs_total", &l).is_some_and(|r| r >= 1.0),
            "{prog} runs:\n{stats}"
        );
        assert!(
            labelled(&stats, "oomwatch_program_verified_instructions", &l).is_some_and(|n| n > 0.0),
            "{prog} instructions:\n{stats}"
        );
    }

    let (status, log) = daemon.stop(Signal::SIGTERM);
    assert!(
        status.success(),
        "exit status {status} after SIGTERM:\n{log}"
    );
    assert!(log.contains("SIGTERM: detaching"), "{log}");

    // One line per kill, naming the victim and its cgroup.
    let kill_lines: Vec<&str> = log.lines().filter(|l| l.contains("oom kill: ")).collect();
    assert_eq!(kill_lines.len(), 1, "{log}");
    assert!(
        kill_lines[0].contains(&format!("oom kill: pid={victim} ")),
        "{log}"
    );
    assert!(kill_lines[0].contains("comm=oomwatch-hog"), "{log}");
    assert!(
        kill_lines[0].contains(&expected_memcg),
        "{expected_memcg} in {log}"
    );
    // One episode line: the kill, its trigger and its replayed report.
    let episode: serde_json::Value = log
        .lines()
        .find_map(|l| l.split_once("oom episode: ").map(|(_, j)| j))
        .and_then(|j| serde_json::from_str(j).ok())
        .unwrap_or_else(|| panic!("no oom episode line:\n{log}"));
    assert_eq!(episode["victim"]["pid"], victim, "{episode}");
    assert_eq!(episode["tasks_listed"], 3, "{episode}");
    assert_eq!(episode["replay"]["agree"], true, "{episode}");
    assert_eq!(episode["replay"]["totalpages"], 16_384, "{episode}");
    assert_eq!(episode["trigger"]["order"], 0, "{episode}");
    assert!(
        episode["trigger"]["gfp_mask"]
            .as_str()
            .is_some_and(|g| g.contains("GFP_")),
        "{episode}"
    );
    assert_eq!(episode["trigger"]["in_page_fault"], true, "{episode}");
    // The kill against the prediction made just before it, with its reason.
    let outcome = episode["prediction"]["outcome"].as_str().unwrap_or("");
    let why = episode["prediction"]["why"].as_str().unwrap_or("");
    assert!(prediction_why::ALL.contains(&(outcome, why)), "{episode}");
    assert!(
        episode["prediction"]["reason"]
            .as_str()
            .is_some_and(|r| r.contains(&memcg_path)),
        "{episode}"
    );
    // Where the kernel lets oomwatch hook oom_badness, every task it scored
    // has the model's points; here (no fentry, no kprobes) there is no scan.
    if episode["kernel_scan"].is_null() {
        assert!(episode["points_check"].is_null(), "{episode}");
    } else {
        assert!(
            episode["points_check"]["compared"].as_u64() >= Some(3),
            "{episode}"
        );
        assert_eq!(
            episode["points_check"]["differ"],
            serde_json::json!([]),
            "{episode}"
        );
    }
    eprintln!("episode: {episode}");
    // aya-log: the eBPF program's own line reached the agent's tracing output.
    assert!(
        log.contains(&format!("mark_victim pid={victim} ")),
        "no aya-log line:\n{log}"
    );
}

/// Ctrl-C in a terminal: detach and exit 0, like SIGTERM.
#[test]
fn run_stops_cleanly_on_sigint() {
    require_root();
    let (mut daemon, _) = Daemon::start();
    let (status, log) = daemon.stop(Signal::SIGINT);
    assert!(
        status.success(),
        "exit status {status} after SIGINT:\n{log}"
    );
    assert!(log.contains("SIGINT: detaching"), "{log}");
}

/// The value of the sample `name{labels}` (labels as the exposition prints
/// them, sorted by name).
fn labelled(text: &str, name: &str, labels: &str) -> Option<f64> {
    let prefix = format!("{name}{{{labels}}} ");
    text.lines()
        .find_map(|l| l.strip_prefix(&prefix)?.trim().parse().ok())
}

/// A steady leak in a memory cgroup is forecast to its OOM: halfway from
/// the leak's start to the kernel's kill, `oomwatch_domain_seconds_to_oom`
/// puts the kill within 20 % of the time that was then left, with its error
/// beside it; before the leak there is no finite forecast.
#[test]
fn run_forecasts_a_steady_leak_to_its_oom() {
    require_root();
    let (daemon, _) = Daemon::start();
    let memcg = MemcgGuard::create(64 << 20).expect("create a 64 MiB memory cgroup");
    let path = memcg.path.clone();
    let series =
        |b: &str, name: &str| labelled(b, name, &format!("cgroup=\"{path}\",domain=\"memcg\""));
    // The domain's first passes, before anything grows: no finite forecast.
    let idle = daemon.scrape_until(10, |b| {
        series(b, "oomwatch_domain_seconds_to_oom").is_some()
    });
    assert_eq!(
        series(&idle, "oomwatch_domain_seconds_to_oom"),
        Some(f64::INFINITY),
        "{idle}"
    );
    // 2 MiB a second into 64 MiB: the kill comes about half a minute on.
    let mut hog = oomwatch_tests::Hog::start_mode(
        env!("CARGO_BIN_EXE_oomwatch-hog"),
        &memcg,
        256,
        &["leak", "2048"],
    )
    .expect("start the leak");
    let start = Instant::now();
    let mut seen: Vec<(f64, f64, Option<f64>)> = Vec::new();
    let killed_after = loop {
        if hog.child.try_wait().unwrap().is_some() {
            break start.elapsed().as_secs_f64();
        }
        assert!(start.elapsed() < Duration::from_secs(90), "no OOM in 90 s");
        let b = http_get(&daemon.addr, "/metrics").expect("scrape");
        if let Some(s) = series(&b, "oomwatch_domain_seconds_to_oom") {
            seen.push((
                start.elapsed().as_secs_f64(),
                s,
                series(&b, "oomwatch_domain_seconds_to_oom_error"),
            ));
        }
        std::thread::sleep(Duration::from_millis(250));
    };
    let (at, left, error) = *seen
        .iter()
        .rfind(|s| s.0 <= killed_after / 2.0 && s.1.is_finite())
        .unwrap_or_else(|| panic!("no finite forecast by halfway ({killed_after:.1} s): {seen:?}"));
    let off = (at + left - killed_after) / (killed_after - at);
    eprintln!(
        "killed {killed_after:.1} s after the leak began; at {at:.1} s the forecast said {left:.1} s \
         (± {:.1}), off by {:.0} % of the {:.1} s then left",
        error.unwrap_or(f64::NAN),
        off * 100.0,
        killed_after - at
    );
    assert!(off.abs() <= 0.20, "{seen:?}");
    assert!(error.is_some_and(f64::is_finite), "{seen:?}");
    assert!(killed_by_sigkill(&hog.child.wait().unwrap()));
    // The kill against the growth-aware victim forecast before it: the
    // leak itself, the only task there.
    let judged = daemon.scrape_until(10, |b| {
        labelled(b, "oomwatch_forecast_victims_total", "outcome=\"match\"") == Some(1.0)
    });
    assert_eq!(
        labelled(
            &judged,
            "oomwatch_forecast_victims_total",
            "outcome=\"match\""
        ),
        Some(1.0),
        "{judged}"
    );
}

/// `run --on-forecast CMD` runs CMD before a real kill, with the domain
/// and the victim to be in its environment, and its cooldown holds over a
/// second OOM of the same domain.
#[test]
fn on_forecast_runs_a_command_before_the_kill() {
    use std::os::unix::fs::PermissionsExt as _;
    require_root();
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("runs");
    let script = dir.path().join("hook.sh");
    std::fs::write(
        &script,
        format!(
            "#!/bin/sh\necho \"$OOMWATCH_DOMAIN $OOMWATCH_CGROUP $OOMWATCH_VICTIM_PID $OOMWATCH_SECONDS_TO_OOM $(date +%s%N)\" >> {}\n",
            out.display()
        ),
    )
    .unwrap();
    std::fs::set_permissions(&script, std::fs::Permissions::from_mode(0o755)).unwrap();
    let (daemon, _) = Daemon::start_with(&[
        "--on-forecast",
        script.to_str().unwrap(),
        "--on-forecast-within",
        "600",
        "--on-forecast-cooldown",
        "600",
    ]);
    let memcg = MemcgGuard::create(64 << 20).expect("create a 64 MiB memory cgroup");
    let runs = || std::fs::read_to_string(&out).unwrap_or_default();
    let mut pids = Vec::new();
    let mut killed_at_ns = Vec::new();
    // Two leaks of 8 MiB a second, one after the other, into the same cgroup.
    for _ in 0..2 {
        let mut hog = oomwatch_tests::Hog::start_mode(
            env!("CARGO_BIN_EXE_oomwatch-hog"),
            &memcg,
            256,
            &["leak", "8192"],
        )
        .expect("start the leak");
        pids.push(hog.pid());
        let status = hog.child.wait().unwrap();
        killed_at_ns.push(
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .unwrap()
                .as_nanos(),
        );
        assert!(killed_by_sigkill(&status), "{status:?}");
    }
    let metrics = daemon.scrape_until(10, |b| {
        labelled(b, "oomwatch_on_forecast_runs_total", "result=\"ok\"") == Some(1.0)
    });
    let lines: Vec<String> = runs().lines().map(str::to_owned).collect();
    eprintln!("on-forecast runs: {lines:?}; kills at {killed_at_ns:?}");
    assert_eq!(lines.len(), 1, "one run, then the cooldown: {lines:?}");
    let f: Vec<&str> = lines[0].split(' ').collect();
    assert_eq!(
        f[..3],
        ["memcg", memcg.path.as_str(), &pids[0].to_string()],
        "{lines:?}"
    );
    let seconds: f64 = f[3].parse().unwrap();
    assert!(seconds > 0.0 && seconds <= 600.0, "{lines:?}");
    let ran_at: u128 = f[4].parse().unwrap();
    assert!(
        ran_at < killed_at_ns[0],
        "the command ran after the kill: {lines:?}"
    );
    assert_eq!(
        labelled(&metrics, "oomwatch_on_forecast_runs_total", "result=\"ok\""),
        Some(1.0),
        "{metrics}"
    );
}

/// The prediction loop: a memory cgroup with a limit gets its own series
/// (victim points, margin, headroom) matching its hogs, the self-check finds
/// no unexplained difference, and the series go when the cgroup goes.
#[test]
fn run_exports_predictions_per_domain() {
    require_root();
    let (mut daemon, _) = Daemon::start();
    let memcg = MemcgGuard::create(64 << 20).expect("create a 64 MiB memory cgroup");
    let bin = env!("CARGO_BIN_EXE_oomwatch-hog");
    let mut small = oomwatch_tests::Hog::start(bin, &memcg, 10).unwrap();
    assert!(small.wait_ready());
    let mut large = oomwatch_tests::Hog::start(bin, &memcg, 20).unwrap();
    assert!(large.wait_ready());
    let labels = format!("cgroup=\"{}\",domain=\"memcg\"", memcg.path);

    // 20 MiB = 5 120 pages (+ page tables and the binary's file pages).
    let ready = |b: &str| {
        labelled(b, "oomwatch_domain_victim_points", &labels).is_some_and(|p| p >= 5_120.0)
            && labelled(b, "oomwatch_domain_victim_margin_points", &labels).is_some()
    };
    let body = daemon.scrape_until(15, ready);
    assert!(ready(&body), "no memcg series after 15 s:\n{body}");
    let points = labelled(&body, "oomwatch_domain_victim_points", &labels).unwrap();
    let margin = labelled(&body, "oomwatch_domain_victim_margin_points", &labels).unwrap();
    let headroom = labelled(&body, "oomwatch_domain_headroom_bytes", &labels).unwrap();
    assert!(points < 5_120.0 + 1_500.0, "victim points {points}");
    // 10 MiB apart = 2 560 pages, give or take page tables and file pages.
    assert!((2_000.0..=3_200.0).contains(&margin), "margin {margin}");
    assert!(
        headroom > 0.0 && headroom < (64 - 30) as f64 * 1048576.0,
        "headroom {headroom}"
    );
    assert!(sample(&body, "oomwatch_badness_checks_total").unwrap() > 0.0);
    assert_eq!(
        sample(&body, "oomwatch_badness_mismatches_total"),
        Some(0.0),
        "{body}"
    );
    // `--source auto` takes the task iterator on this kernel.
    assert_eq!(
        labelled(&body, "oomwatch_snapshot_source_info", "source=\"bpf\""),
        Some(1.0),
        "{body}"
    );
    assert!(
        labelled(
            &body,
            "oomwatch_domain_victim_points",
            "cgroup=\"\",domain=\"global\""
        )
        .is_some()
    );

    drop((small, large));
    drop(memcg);
    let body = daemon.scrape_until(10, |b| !b.contains(&labels));
    assert!(
        !body.contains(&labels),
        "series of the removed cgroup stayed:\n{body}"
    );
    let (status, log) = daemon.stop(Signal::SIGTERM);
    assert!(status.success(), "{log}");
    assert!(!log.contains("differs from the kernel"), "{log}");
}

/// The daemon sees a memcg OOM as it starts (cgroup v1's `memory.oom_control`
/// eventfd), predicts at once, and puts that prediction beside the kill. The
/// OOM is held at its start with `oom_kill_disable` so the prediction reads
/// the state the kernel will choose from; re-enabling lets the kernel kill.
#[test]
fn run_predicts_when_a_memcg_oom_starts() {
    require_root();
    let (mut daemon, _) = Daemon::start();
    let memcg = MemcgGuard::create(64 << 20).expect("create a 64 MiB memory cgroup");
    if memcg.hierarchy.version != oomwatch::host::cgroup::CgroupVersion::V1 {
        oomwatch_tests::skip(
            "run_predicts_when_a_memcg_oom_starts",
            "holds the OOM with cgroup v1's oom_kill_disable",
        );
        return;
    }
    // The daemon registers on the domain after its next pass (1 s period).
    std::thread::sleep(Duration::from_millis(2_500));
    memcg.set_oom_kill_disable(true).unwrap();
    let bin = env!("CARGO_BIN_EXE_oomwatch-hog");
    let mut a = oomwatch_tests::Hog::start(bin, &memcg, 20).unwrap();
    assert!(a.wait_ready());
    let mut b = oomwatch_tests::Hog::start(bin, &memcg, 26).unwrap();
    assert!(b.wait_ready());
    let c = oomwatch_tests::Hog::start(bin, &memcg, 40).unwrap();
    let start_line = format!("oom start: memcg {}: predicted victim pid=", memcg.path);
    let deadline = Instant::now() + Duration::from_secs(20);
    let predicted: u32 = loop {
        let log = daemon.log();
        if let Some(rest) = log.split(&start_line).nth(1) {
            break rest
                .split(' ')
                .next()
                .and_then(|p| p.parse().ok())
                .expect("a pid after predicted victim pid=");
        }
        assert!(
            Instant::now() < deadline,
            "no OOM-start line within 20 s (under_oom={}):\n{log}",
            memcg.under_oom()
        );
        std::thread::sleep(Duration::from_millis(50));
    };
    assert_eq!(
        predicted,
        b.pid(),
        "26 MiB beats 20 MiB and the partial 40 MiB hog"
    );

    memcg.set_oom_kill_disable(false).unwrap();
    let deadline = Instant::now() + Duration::from_secs(20);
    let kill_line = loop {
        let log = daemon.log();
        if let Some(l) = log.lines().find(|l| l.contains("oom kill: ")) {
            break l.to_owned();
        }
        assert!(Instant::now() < deadline, "no kill within 20 s:\n{log}");
        std::thread::sleep(Duration::from_millis(50));
    };
    let body = http_get(&daemon.addr, "/metrics").expect("scrape");
    for l in daemon.log().lines().filter(|l| l.contains("oom start: ")) {
        eprintln!("{l}");
    }
    eprintln!("{kill_line}");
    drop((a, b, c));
    drop(memcg);
    let (status, log) = daemon.stop(Signal::SIGTERM);
    assert!(status.success(), "{log}");
    assert!(
        kill_line.contains(&format!("oom kill: pid={predicted} ")),
        "the kernel killed another task than predicted at the start:\n{log}"
    );
    assert!(
        kill_line.contains("predicted at OOM start in ")
            && kill_line.contains(&format!(": pid={predicted} comm=oomwatch-hog (agree)")),
        "{kill_line}"
    );
    assert!(
        sample(&body, "oomwatch_oom_starts_total").is_some_and(|n| n >= 1.0),
        "{body}"
    );
}

/// Thaws a frozen [`LoopFs`] when dropped: declared after the hogs, it runs
/// before they are killed and reaped, so a failing test cannot hang on a
/// thread stuck in the frozen filesystem.
struct ThawOnDrop<'a>(&'a LoopFs);

impl Drop for ThawOnDrop<'_> {
    fn drop(&mut self) {
        self.0.thaw();
    }
}

/// The OOM reaper runs only for a victim that has not exited about 2 s after
/// the kill (OOM_REAPER_DELAY). Here the victim has a thread asleep in
/// `write()` on a frozen filesystem: uninterruptible, so the process cannot
/// finish exiting and its memory stays; the reaper wakes and frees it.
/// oomwatch must see each stage, timed from the kill.
#[test]
fn run_reports_the_oom_reaper_for_a_victim_that_cannot_exit() {
    require_root();
    let fs = match LoopFs::create() {
        Ok(fs) => fs,
        Err(why) => {
            oomwatch_tests::skip(
                "run_reports_the_oom_reaper_for_a_victim_that_cannot_exit",
                &format!("cannot loop-mount a filesystem to freeze: {why}"),
            );
            return;
        }
    };
    let memcg = MemcgGuard::create(64 << 20).unwrap();
    let (mut daemon, _) = Daemon::start();
    let bin = env!("CARGO_BIN_EXE_oomwatch-hog");
    let file = fs.mount.join("victim.log");
    let mut victim =
        Hog::start_mode(bin, &memcg, 40, &["stuckwrite", &file.to_string_lossy()]).unwrap();
    assert!(victim.wait_ready(), "the 40 MiB hog did not get ready");
    let thaw = ThawOnDrop(&fs);
    fs.freeze().unwrap();
    let _trigger = Hog::start(bin, &memcg, 40).unwrap();
    let pid = victim.pid();
    let finish = format!("oom reaper: pid={pid} finish_task_reaping");
    let deadline = Instant::now() + Duration::from_secs(20);
    while !daemon.log().contains(&finish) {
        assert!(
            Instant::now() < deadline,
            "no finish_task_reaping for pid {pid} within 20 s:\n{}",
            daemon.log()
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    drop(thaw);
    let log = daemon.log();
    let stage_ms = |stage: &str| -> f64 {
        let line = log
            .lines()
            .find(|l| l.contains(&format!("oom reaper: pid={pid} {stage} ")))
            .unwrap_or_else(|| panic!("no {stage} line for pid {pid}:\n{log}"));
        line.split(' ')
            .rev()
            .nth(4)
            .and_then(|v| v.parse().ok())
            .unwrap_or_else(|| panic!("no delay in {line:?}"))
    };
    let (wake, start, done) = (
        stage_ms("wake_reaper"),
        stage_ms("start_task_reaping"),
        stage_ms("finish_task_reaping"),
    );
    eprintln!("reaper after the kill: woken {wake} ms, started {start} ms, finished {done} ms");
    // OOM_REAPER_DELAY is 2 s (mm/oom_kill.c, since 5.18).
    assert!(
        (1500.0..10_000.0).contains(&wake),
        "woken {wake} ms after the kill"
    );
    assert!(wake <= start && start <= done, "{wake} {start} {done}");
    let counted = |b: &str| {
        ["wake_reaper", "start_task_reaping", "finish_task_reaping"]
            .iter()
            .all(|stage| {
                labelled(
                    b,
                    "oomwatch_oom_reaper_events_total",
                    &format!("stage=\"{stage}\""),
                ) >= Some(1.0)
            })
    };
    let body = daemon.scrape_until(10, counted);
    assert!(counted(&body), "reaper stages not counted:\n{body}");
    let (status, _) = daemon.stop(Signal::SIGTERM);
    assert!(status.success(), "{status}");
}

/// Compaction runs are timed in the kernel: `vm.compact_memory` makes the
/// kernel compact every zone now (no memory pressure, no OOM), and each
/// `compact_zone()` run lands in the `compaction` histogram.
#[test]
fn run_times_compaction_runs() {
    require_root();
    let (mut daemon, first) = Daemon::start();
    let count = |body: &str| {
        labelled(
            body,
            "oomwatch_reclaim_stall_seconds_count",
            "kind=\"compaction\"",
        )
    };
    let before = count(&first).expect("the compaction series exists from the start");
    std::fs::write("/proc/sys/vm/compact_memory", "1").expect("write vm.compact_memory");
    let body = daemon.scrape_until(15, |b| count(b).is_some_and(|n| n > before));
    let after = count(&body).unwrap();
    let sum = labelled(
        &body,
        "oomwatch_reclaim_stall_seconds_sum",
        "kind=\"compaction\"",
    );
    eprintln!("compaction runs: {before} -> {after}, {sum:?} s in all");
    assert!(after > before, "{body}");
    assert!(sum.is_some_and(|s| s > 0.0 && s < 60.0), "{body}");
    let (status, _) = daemon.stop(Signal::SIGTERM);
    assert!(status.success(), "{status}");
}

/// The rules shipped in `deploy/prometheus`: valid, and their promtool unit
/// tests pass.
#[test]
fn alert_rules_pass_promtool() {
    let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/../deploy/prometheus");
    for args in [
        ["check", "rules", "oomwatch.rules.yml"],
        ["test", "rules", "oomwatch.rules.test.yml"],
    ] {
        let out = Command::new("promtool")
            .args(args)
            .current_dir(dir)
            .output()
            .expect("run promtool (Debian package prometheus; `cargo xtask test` installs it)");
        assert!(
            out.status.success(),
            "promtool {}:\n{}{}",
            args.join(" "),
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }
}

/// A Prometheus server on loopback, with its own data directory under /tmp
/// (`oomwatch` in its name); killed and removed when dropped.
struct Prometheus {
    child: Child,
    addr: String,
    dir: std::path::PathBuf,
}

impl Prometheus {
    /// Scrapes `target` every second and evaluates oomwatch's rules.
    fn start(target: &str) -> Self {
        let port = TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let dir =
            std::path::PathBuf::from(format!("/tmp/oomwatch-prometheus-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let rules = concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/../deploy/prometheus/oomwatch.rules.yml"
        );
        let config = format!(
            "global:\n  scrape_interval: 1s\n  evaluation_interval: 1s\nrule_files:\n  - {rules}\n\
             scrape_configs:\n  - job_name: oomwatch\n    static_configs:\n      - targets: ['{target}']\n"
        );
        std::fs::write(dir.join("prometheus.yml"), config).unwrap();
        let addr = format!("127.0.0.1:{port}");
        let child = Command::new("prometheus")
            .arg(format!(
                "--config.file={}",
                dir.join("prometheus.yml").display()
            ))
            .arg(format!(
                "--storage.tsdb.path={}",
                dir.join("data").display()
            ))
            .arg(format!("--web.listen-address={addr}"))
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(dir.join("prometheus.log")).unwrap())
            .spawn()
            .expect("start prometheus (Debian package prometheus; `cargo xtask test` installs it)");
        let p = Prometheus { child, addr, dir };
        let deadline = Instant::now() + Duration::from_secs(30);
        while http_get(&p.addr, "/-/ready").is_none() {
            assert!(
                Instant::now() < deadline,
                "prometheus not ready in 30 s:\n{}",
                p.log()
            );
            std::thread::sleep(Duration::from_millis(200));
        }
        p
    }

    fn log(&self) -> String {
        std::fs::read_to_string(self.dir.join("prometheus.log")).unwrap_or_default()
    }

    /// The instant query's whole answer (`status`, `data` or `error`).
    fn answer(&self, q: &str) -> serde_json::Value {
        let mut enc = String::new();
        for b in q.bytes() {
            if b.is_ascii_alphanumeric() || b"_-.".contains(&b) {
                enc.push(b as char);
            } else {
                enc.push_str(&format!("%{b:02X}"));
            }
        }
        let body = http_get(&self.addr, &format!("/api/v1/query?query={enc}")).unwrap_or_default();
        serde_json::from_str(&body).unwrap_or_default()
    }

    /// The instant query's result vector.
    fn query(&self, q: &str) -> Vec<serde_json::Value> {
        self.answer(q)["data"]["result"]
            .as_array()
            .cloned()
            .unwrap_or_default()
    }

    /// Waits (30 s at most) until `q` returns a sample whose value passes
    /// `ok`; returns that sample.
    fn wait_for(&self, q: &str, ok: impl Fn(f64) -> bool) -> serde_json::Value {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let hit = self.query(q).into_iter().find(|s| {
                s["value"][1]
                    .as_str()
                    .and_then(|v| v.parse().ok())
                    .is_some_and(&ok)
            });
            if let Some(s) = hit {
                return s;
            }
            assert!(
                Instant::now() < deadline,
                "no sample for {q} in 30 s:\n{}",
                self.log()
            );
            std::thread::sleep(Duration::from_millis(250));
        }
    }
}

impl Drop for Prometheus {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// A real Prometheus scrapes the daemon through a real memcg OOM: the kill
/// counter rises, the prediction outcome and replay series are there, and
/// the shipped OomKill alert fires. `promtool check metrics` finds nothing
/// to say about the exposition.
#[test]
fn prometheus_scrapes_a_memcg_oom() {
    require_root();
    let (mut daemon, first) = Daemon::start();
    let mut lint = Command::new("promtool")
        .args(["check", "metrics"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("run promtool");
    lint.stdin
        .take()
        .unwrap()
        .write_all(first.as_bytes())
        .unwrap();
    let out = lint.wait_with_output().unwrap();
    let said = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        out.status.success() && said.trim().is_empty(),
        "promtool check metrics:\n{said}"
    );

    let prom = Prometheus::start(&daemon.addr);
    prom.wait_for("up{job=\"oomwatch\"}", |v| v == 1.0);
    // The daemon counts every kill on the host: another test's OOM may
    // already be in the count (when tests run in parallel).
    let before: f64 = prom.wait_for("oomwatch_oom_kills_total", |_| true)["value"][1]
        .as_str()
        .and_then(|v| v.parse().ok())
        .expect("a number");

    let memcg = MemcgGuard::create(64 << 20).expect("create a 64 MiB memory cgroup");
    let (hogs, _, status) =
        run_hogs_until_one_dies(env!("CARGO_BIN_EXE_oomwatch-hog"), &memcg, &THREE_HOGS_MIB)
            .unwrap();
    assert!(killed_by_sigkill(&status), "{status:?}");
    drop(hogs);
    drop(memcg);

    let kills = prom.wait_for("oomwatch_oom_kills_total", |v| v > before);
    let outcome = prom.wait_for("sum(oomwatch_predictions_total)", |v| v >= 1.0);
    let agree = prom.wait_for("oomwatch_report_replays_total{outcome=\"agree\"}", |v| {
        v >= 1.0
    });
    let alert = prom.wait_for("ALERTS{alertname=\"OomKill\",alertstate=\"firing\"}", |v| {
        v == 1.0
    });
    eprintln!("prometheus: kills {kills}\noutcomes {outcome}\nreplays {agree}\nalert {alert}");
    assert_eq!(alert["metric"]["severity"], "warning", "{alert}");
    // Every query of the shipped Grafana dashboard runs on this Prometheus,
    // and those about kills see this one.
    let dash: serde_json::Value =
        serde_json::from_str(include_str!("../../deploy/grafana/oomwatch.json")).unwrap();
    let mut queries = 0;
    for panel in dash["panels"].as_array().unwrap() {
        for t in panel["targets"].as_array().unwrap() {
            let expr = t["expr"]
                .as_str()
                .unwrap()
                .replace("$instance", ".*")
                .replace("$__range", "1h");
            let a = prom.answer(&expr);
            assert_eq!(a["status"], "success", "{}: {expr}: {a}", panel["title"]);
            if expr.starts_with("sum(increase(oomwatch_oom_kills_total") {
                let v = &a["data"]["result"][0]["value"][1];
                assert!(
                    v.as_str().and_then(|v| v.parse::<f64>().ok()) >= Some(1.0),
                    "{expr}: {a}"
                );
            }
            queries += 1;
        }
    }
    eprintln!("{queries} dashboard queries answered");
    let (status, _) = daemon.stop(Signal::SIGTERM);
    assert!(status.success(), "{status}");
}

/// The systemd unit's capability set is enough, and on a mainline kernel
/// less is: the daemon, run as uid 0 but with only the capabilities of
/// `deploy/systemd/oomwatch.service` in its bounding set, less CAP_SYS_ADMIN
/// (the unit grants it for Debian's and Ubuntu's perf_event_paranoid levels
/// above 2; this host's is 2) and CAP_SETPCAP, attaches its programs, sees a
/// memcg OOM start and its kill, and reads the kernel's report from
/// /dev/kmsg.
#[test]
fn the_systemd_units_capabilities_suffice() {
    require_root();
    let unit = include_str!("../../deploy/systemd/oomwatch.service");
    // Where perf_event_paranoid is above 2 (a Debian or Ubuntu kernel, such
    // as the arm64 workflow's) the unit's CAP_SYS_ADMIN is needed and kept.
    let paranoid = oomwatch::host::privilege::perf_needs_sys_admin(
        oomwatch::host::privilege::perf_event_paranoid(),
    );
    let caps: Vec<String> = unit
        .lines()
        .find_map(|l| l.strip_prefix("CapabilityBoundingSet="))
        .expect("the unit sets CapabilityBoundingSet")
        .split_whitespace()
        .filter(|c| *c != "CAP_SETPCAP" && (*c != "CAP_SYS_ADMIN" || paranoid))
        .map(|c| format!("+{}", c.trim_start_matches("CAP_").to_lowercase()))
        .collect();
    assert_eq!(caps.len(), if paranoid { 5 } else { 4 }, "{caps:?}");
    let wrapper = vec![
        "setpriv".to_owned(),
        format!("--bounding-set=-all,{}", caps.join(",")),
        "--".to_owned(),
    ];
    let (mut daemon, first) = Daemon::start_under(&wrapper);
    assert_eq!(
        sample(&first, "oomwatch_oom_kills_total"),
        Some(0.0),
        "{first}"
    );
    let memcg = MemcgGuard::create(64 << 20).expect("create a 64 MiB memory cgroup");
    let (hogs, dead, status) =
        run_hogs_until_one_dies(env!("CARGO_BIN_EXE_oomwatch-hog"), &memcg, &THREE_HOGS_MIB)
            .unwrap();
    assert!(killed_by_sigkill(&status), "{status:?}");
    let victim = hogs[dead].pid();
    drop(hogs);
    drop(memcg);
    let deadline = Instant::now() + Duration::from_secs(10);
    while !daemon.log().contains("oom episode: ") {
        assert!(
            Instant::now() < deadline,
            "no episode in 10 s:\n{}",
            daemon.log()
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    let (status, log) = daemon.stop(Signal::SIGTERM);
    assert!(status.success(), "{status}\n{log}");
    assert!(log.contains(&format!("oom kill: pid={victim} ")), "{log}");
    let episode = log.lines().find(|l| l.contains("oom episode: ")).unwrap();
    assert!(
        episode.contains("\"agree\":true"),
        "the report was read and replayed:\n{episode}"
    );
    // Only BPF_ENABLE_STATS wants CAP_SYS_ADMIN, and says so.
    let warnings: Vec<&str> = log.lines().filter(|l| l.contains(" WARN ")).collect();
    assert!(
        warnings.iter().all(|w| w.contains("BPF_ENABLE_STATS")),
        "{warnings:#?}"
    );
}

/// The event log and `oomwatch watch`: one memcg OOM becomes one JSON line in
/// the `--events` file, the same line on `watch --json`, and a readable
/// entry with the prediction beside the kill on plain `watch`.
#[test]
fn episodes_reach_the_event_log_and_watchers() {
    require_root();
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("events.jsonl");
    let (mut daemon, _) = Daemon::start_with(&["--events", &file.to_string_lossy()]);
    let watcher = |json: bool| {
        let mut c = Command::new(env!("CARGO_BIN_EXE_oomwatch"));
        c.args(["watch", "--from", &daemon.addr]);
        if json {
            c.arg("--json");
        }
        c.stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .unwrap()
    };
    let mut raw = watcher(true);
    let mut human = watcher(false);
    // Let both connect before the OOM.
    std::thread::sleep(Duration::from_millis(500));
    let memcg = MemcgGuard::create(64 << 20).expect("create a 64 MiB memory cgroup");
    let (hogs, dead, status) =
        run_hogs_until_one_dies(env!("CARGO_BIN_EXE_oomwatch-hog"), &memcg, &THREE_HOGS_MIB)
            .unwrap();
    assert!(killed_by_sigkill(&status), "{status:?}");
    let victim = hogs[dead].pid();
    drop(hogs);
    drop(memcg);
    let first_line = |child: &mut Child| {
        let out = child.stdout.take().unwrap();
        let mut line = String::new();
        let mut r = BufReader::new(out);
        // The whole human entry is a few lines; its first names the kill.
        r.read_line(&mut line).unwrap();
        let mut rest = String::new();
        if line.contains("OOM kill") {
            r.read_line(&mut rest).unwrap();
        }
        format!("{line}{rest}")
    };
    let json_line = first_line(&mut raw);
    let human_text = first_line(&mut human);
    let (status, log) = daemon.stop(Signal::SIGTERM);
    assert!(status.success(), "{status}");
    // Both watchers end when the daemon stops.
    for mut w in [raw, human] {
        let st = w.wait().unwrap();
        assert!(
            !st.success(),
            "watch exits non-zero when the daemon goes: {st}"
        );
    }
    let logged = std::fs::read_to_string(&file).unwrap();
    let lines: Vec<&str> = logged.lines().collect();
    assert_eq!(lines.len(), 1, "{logged}\n{log}");
    let ep: serde_json::Value = serde_json::from_str(lines[0]).unwrap();
    assert_eq!(ep["victim"]["pid"], victim, "{ep}");
    // The kill on the wall clock: RFC 3339, and within the test's minute.
    let time = ep["time"].as_str().expect("an RFC 3339 time");
    let at = humantime::parse_rfc3339(time).unwrap_or_else(|e| panic!("{time}: {e}"));
    let age = std::time::SystemTime::now()
        .duration_since(at)
        .unwrap_or_default();
    assert!(age < Duration::from_secs(60), "{time} is {age:?} old");
    // Created by a root daemon: not world-readable, not group-writable.
    use std::os::unix::fs::PermissionsExt as _;
    let mode = std::fs::metadata(&file).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o640, "{mode:o}");
    assert_eq!(
        json_line.trim(),
        lines[0],
        "watch --json gives the logged line"
    );
    assert!(
        human_text.contains(&format!("OOM kill pid={victim} comm=oomwatch-hog")),
        "{human_text}"
    );
    assert!(human_text.contains("\n  predicted: "), "{human_text}");
}

/// A watcher with no daemon to follow says so and exits 1.
#[test]
fn watch_without_a_daemon_says_so() {
    let port = TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let out = Command::new(env!("CARGO_BIN_EXE_oomwatch"))
        .args(["watch", "--from", &format!("127.0.0.1:{port}")])
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(
        err.starts_with(&format!(
            "error: no oomwatch daemon at 127.0.0.1:{port}: start one"
        )),
        "{err}"
    );
}

/// A bad --events path is refused at start, naming the path and the fix.
#[test]
fn run_refuses_an_unwritable_event_log() {
    require_root();
    let out = Command::new(env!("CARGO_BIN_EXE_oomwatch"))
        .args([
            "run",
            "--listen",
            "127.0.0.1:0",
            "--events",
            "/nonexistent-dir/events.jsonl",
        ])
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(
        err.contains("open the event log /nonexistent-dir/events.jsonl for appending (--events)"),
        "{err}"
    );
    // A link, e.g. planted in a shared directory, is never followed.
    let dir = tempfile::tempdir().unwrap();
    let target = dir.path().join("precious");
    std::fs::write(&target, "keep me\n").unwrap();
    let link = dir.path().join("events.jsonl");
    std::os::unix::fs::symlink(&target, &link).unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_oomwatch"))
        .args(["run", "--listen", "127.0.0.1:0", "--events"])
        .arg(&link)
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(err.contains("is a symbolic link"), "{err}");
    assert_eq!(std::fs::read_to_string(&target).unwrap(), "keep me\n");
}

/// `run --config FILE`: the daemon listens where the file says; a bad file
/// is refused before anything starts, naming the file, the key and the fix.
#[test]
fn run_takes_its_settings_from_a_config_file() {
    require_root();
    let dir = tempfile::tempdir().unwrap();
    let port = TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let addr = format!("127.0.0.1:{port}");
    let events = dir.path().join("events.jsonl");
    let config = dir.path().join("oomwatch.toml");
    std::fs::write(
        &config,
        format!(
            "listen = \"{addr}\"\ninterval = 0.5\nevents = \"{}\"\n",
            events.display()
        ),
    )
    .unwrap();
    let child = Command::new(env!("CARGO_BIN_EXE_oomwatch"))
        .args(["run", "--config", &config.to_string_lossy()])
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(30);
    let body = loop {
        if let Some(b) = http_get(&addr, "/metrics") {
            break b;
        }
        assert!(
            Instant::now() < deadline,
            "nothing listens on {addr} from the config file"
        );
        std::thread::sleep(Duration::from_millis(100));
    };
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(child.id() as i32),
        Signal::SIGTERM,
    )
    .unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "{}: {}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(body.contains("oomwatch_oom_kills_total 0"), "{body}");
    assert!(
        events.exists(),
        "the event log named in the file was opened"
    );

    std::fs::write(&config, "listen = \"127.0.0.1:7707\"\nintervall = 2\n").unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_oomwatch"))
        .args(["run", "--config", &config.to_string_lossy()])
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(
        err.starts_with(&format!("error: config file {}: ", config.display())),
        "{err}"
    );
    assert!(err.contains("unknown field `intervall`"), "{err}");
    assert!(
        err.contains("known keys: listen, interval, events"),
        "{err}"
    );
}

/// `--hot-probes pressure` (the default): on a calm host the programs on
/// the hot events are detached and count nothing; a memcg driven into
/// reclaim and an OOM kill attaches them, they count while attached, and
/// they detach again once the hold time passes without pressure.
#[test]
fn hot_probes_follow_memory_pressure() {
    require_root();
    const HOLD: u64 = 4;
    let hold = HOLD.to_string();
    let (mut daemon, _) = Daemon::start_with(&["--hot-probes-hold", &hold]);
    let gauge = |b: &str| sample(b, "oomwatch_hot_probes_attached");
    let user_pages = |b: &str| -> f64 {
        b.lines()
            .filter(|l| l.starts_with("oomwatch_page_allocs_total{gfp_class=\"user\""))
            .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
            .sum()
    };
    // The pressure the daemon sees host-wide: its always-attached programs'
    // reclaim and compaction runs and retry decisions, and PSI (µs).
    let pressure = |b: &str| -> (f64, u64) {
        let events: f64 = b
            .lines()
            .filter(|l| {
                l.starts_with("oomwatch_reclaim_stall_seconds_count")
                    || l.starts_with("oomwatch_slowpath_retry_decisions_total")
            })
            .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
            .sum();
        (
            events,
            oomwatch::host::psi::memory_some_total().unwrap_or(0),
        )
    };
    let hog = env!("CARGO_BIN_EXE_oomwatch-hog");
    let roomy = MemcgGuard::create(256 << 20).expect("create a 256 MiB memory cgroup");
    let touch = |mib| {
        let mut h = Hog::start(hog, &roomy, mib).unwrap();
        assert!(
            h.wait_ready(),
            "a {mib} MiB hog could not fill a 256 MiB cgroup"
        );
    };
    // 16 MiB in a 256 MiB cgroup: no pressure, nothing counted. The gate
    // watches the whole host: a window in which another process reclaimed
    // or compacted (a build, kcompactd) attaches the probes, rightly, and
    // proves nothing here; such a window is measured as such and tried
    // again, a few times at most. A window with no pressure must stay
    // detached.
    let mut windows = 0;
    let calm = loop {
        // An earlier test's OOM may still count as pressure: wait out the hold.
        let calm = daemon.scrape_until(HOLD + 20, |b| gauge(b) == Some(0.0));
        assert_eq!(
            gauge(&calm),
            Some(0.0),
            "the hot probes stayed attached on a host without memory pressure:\n{}",
            daemon.log()
        );
        let (events0, psi0) = pressure(&calm);
        let before = user_pages(&calm);
        touch(16);
        std::thread::sleep(Duration::from_millis(2500));
        let quiet = http_get(&daemon.addr, "/metrics").expect("scrape");
        let (events1, psi1) = pressure(&quiet);
        if gauge(&quiet) == Some(0.0) {
            assert!(
                user_pages(&quiet) - before < 1024.0,
                "detached, yet {} user pages counted",
                user_pages(&quiet) - before
            );
            break calm;
        }
        assert!(
            events1 > events0 || psi1 >= psi0 + 1_000,
            "attached in a window without memory pressure (no reclaim, compaction or retry \
             counted, PSI {psi0} -> {psi1} µs):\n{}",
            daemon.log()
        );
        windows += 1;
        eprintln!(
            "window {windows}: the host had memory pressure of its own ({} kernel events, PSI \
             +{} µs): the probes attached, rightly; again",
            events1 - events0,
            psi1.saturating_sub(psi0)
        );
        assert!(
            windows < 5,
            "the host was never calm for 2.5 s in 5 windows:\n{}",
            daemon.log()
        );
    };
    drop(calm);

    // Reclaim and an OOM kill in a 32 MiB cgroup attach them.
    let tight = MemcgGuard::create(32 << 20).expect("create a 32 MiB memory cgroup");
    let mut big = Hog::start(hog, &tight, 48).unwrap();
    assert!(
        big.wait_exit(Duration::from_secs(20)).is_some(),
        "a 48 MiB hog survived a 32 MiB limit"
    );
    let armed = daemon.scrape_until(10, |b| gauge(b) == Some(1.0));
    assert_eq!(gauge(&armed), Some(1.0), "{}", daemon.log());
    // While attached, 16 MiB of faults are counted (4096 pages).
    let before = user_pages(&armed);
    touch(16);
    let counted = daemon.scrape_until(5, |b| user_pages(b) - before >= 4096.0);
    assert!(
        user_pages(&counted) - before >= 4096.0,
        "attached, yet only {} user pages counted:\n{counted}",
        user_pages(&counted) - before
    );
    // Then calm again: detached after the hold.
    let detached = daemon.scrape_until(HOLD + 15, |b| gauge(b) == Some(0.0));
    assert_eq!(gauge(&detached), Some(0.0), "{}", daemon.log());
    let seconds = sample(&detached, "oomwatch_hot_probes_attached_seconds_total").unwrap();
    assert!(
        seconds >= HOLD as f64 - 1.0,
        "attached for {seconds} s, less than the {HOLD} s hold"
    );
    // Each switch is logged before the gauge moves, but the log reaches this
    // test through a pipe and a reader thread: read it whole, after the exit.
    let (_, log) = daemon.stop(Signal::SIGTERM);
    let attached = log.find("hot probes attached: memory pressure");
    let detached = log.rfind("hot probes detached: no memory pressure for 4 s");
    assert!(
        matches!((attached, detached), (Some(a), Some(d)) if a < d),
        "the switches are not logged, attached then detached:\n{log}"
    );
}

/// The capability masks of `/proc/PID[/task/TID]/status` (`CapEff`,
/// `CapPrm`, `CapBnd`, `CapInh`, `CapAmb`) and `NoNewPrivs`, by name.
fn cap_masks(status: &str) -> std::collections::BTreeMap<String, u64> {
    status
        .lines()
        .filter_map(|l| {
            let (k, v) = l.split_once(':')?;
            let v = v.trim();
            match k {
                "CapEff" | "CapPrm" | "CapBnd" | "CapInh" | "CapAmb" => {
                    Some((k.to_owned(), u64::from_str_radix(v, 16).ok()?))
                }
                "NoNewPrivs" => Some((k.to_owned(), v.parse().ok()?)),
                _ => None,
            }
        })
        .collect()
}

/// Least privilege: once its programs are attached and `/metrics` answers,
/// the daemon started as root with every capability holds only what it
/// still uses, in every thread and every set, the bounding set included,
/// with no_new_privs; a command it runs (`--on-forecast`) starts with no
/// more. On 6.5 and later with BTF tracepoints for the hot events that is
/// nothing at all (before 6.5 every bpf() command wants CAP_BPF; without
/// BTF tracepoints the hot probes' later attaching wants CAP_PERFMON). And
/// it still works: a memcg OOM kill is counted and the hot probes attach
/// under the pressure it brings.
#[test]
fn run_keeps_only_the_capabilities_it_still_uses_after_attaching() {
    use std::os::unix::fs::PermissionsExt as _;
    require_root();
    let status = std::fs::read_to_string("/proc/self/status").unwrap();
    assert_eq!(
        cap_masks(&status)["CapEff"] & (1 << 21),
        1 << 21,
        "this test starts the daemon with CAP_SYS_ADMIN: run it as root with all capabilities"
    );
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("child-caps");
    let script = dir.path().join("hook.sh");
    std::fs::write(
        &script,
        format!(
            "#!/bin/sh\ngrep -E '^(Cap|NoNewPrivs)' /proc/self/status > {0}.tmp && mv {0}.tmp {0}\n",
            out.display()
        ),
    )
    .unwrap();
    std::fs::set_permissions(&script, std::fs::Permissions::from_mode(0o755)).unwrap();
    let (mut daemon, _) = Daemon::start_with(&[
        "--on-forecast",
        script.to_str().unwrap(),
        "--on-forecast-within",
        "600",
    ]);
    let pid = daemon.child.id();

    // What must be left, worked out here from the kernel and the programs.
    let release = std::fs::read_to_string("/proc/sys/kernel/osrelease").unwrap();
    let mut nums = release
        .trim()
        .split(['.', '-'])
        .map(|n| n.parse::<u32>().unwrap_or(0));
    let (major, minor) = (nums.next().unwrap(), nums.next().unwrap());
    let cap_last_cap: u32 = std::fs::read_to_string("/proc/sys/kernel/cap_last_cap")
        .unwrap()
        .trim()
        .parse()
        .unwrap();
    let log = daemon.log();
    let hot_line = log
        .lines()
        .find(|l| l.contains("hot probes (") && l.contains("attached while"))
        .unwrap_or_else(|| panic!("no hot-probes line:\n{log}"));
    let late_tracepoints = hot_line
        .split(['(', ')'])
        .nth(1)
        .unwrap()
        .split(", ")
        .any(|p| !p.ends_with("_btf"));
    let mut kept = 0u64;
    if cap_last_cap < 39 {
        kept |= 1 << 21; // CAP_SYS_ADMIN stands in for CAP_BPF and CAP_PERFMON
    } else {
        if (major, minor) < (6, 5) {
            kept |= 1 << 39; // CAP_BPF
        }
        if late_tracepoints {
            kept |= 1 << 38; // CAP_PERFMON
        }
    }
    assert!(
        log.contains("capabilities after attaching: kept only what the daemon still uses"),
        "{log}"
    );
    let check_threads = |when: &str| {
        let mut n = 0;
        for task in std::fs::read_dir(format!("/proc/{pid}/task")).unwrap() {
            let path = task.unwrap().path();
            let Ok(status) = std::fs::read_to_string(path.join("status")) else {
                continue; // a thread that just ended
            };
            let m = cap_masks(&status);
            let got = [
                m["CapEff"],
                m["CapPrm"],
                m["CapBnd"],
                m["CapInh"],
                m["CapAmb"],
                m["NoNewPrivs"],
            ];
            assert_eq!(
                got,
                [kept, kept, kept, 0, 0, 1],
                "{when}: thread {} ([eff, prm, bnd, inh, amb, no_new_privs]; kept {kept:#x})",
                path.display()
            );
            n += 1;
        }
        assert!(n >= 2, "{when}: only {n} threads");
    };
    check_threads("at the first scrape");

    // A leak of 8 MiB a second into 64 MiB: forecast (the hook runs), then
    // killed, under pressure that attaches the hot probes.
    let memcg = MemcgGuard::create(64 << 20).expect("create a 64 MiB memory cgroup");
    let mut hog = Hog::start_mode(
        env!("CARGO_BIN_EXE_oomwatch-hog"),
        &memcg,
        256,
        &["leak", "8192"],
    )
    .expect("start the leak");
    let status = hog.child.wait().unwrap();
    assert!(killed_by_sigkill(&status), "{status:?}");
    let after = daemon.scrape_until(10, |b| sample(b, "oomwatch_oom_kills_total") == Some(1.0));
    assert_eq!(
        sample(&after, "oomwatch_oom_kills_total"),
        Some(1.0),
        "the kill was not counted after the drop:\n{after}\n{}",
        daemon.log()
    );
    let deadline = Instant::now() + Duration::from_secs(10);
    while !daemon.log().contains("hot probes attached: ") {
        assert!(
            Instant::now() < deadline,
            "the hot probes did not attach after the drop:\n{}",
            daemon.log()
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    check_threads("after the kill");

    // The command the daemon ran: no capability beyond the kept ones.
    let deadline = Instant::now() + Duration::from_secs(10);
    let child = loop {
        if let Ok(s) = std::fs::read_to_string(&out) {
            break s;
        }
        assert!(
            Instant::now() < deadline,
            "the --on-forecast command did not run:\n{}",
            daemon.log()
        );
        std::thread::sleep(Duration::from_millis(100));
    };
    let m = cap_masks(&child);
    for set in ["CapEff", "CapPrm", "CapBnd", "CapInh", "CapAmb"] {
        assert_eq!(
            m[set] & !kept,
            0,
            "the --on-forecast command has {set} {:#x} beyond the kept {kept:#x}:\n{child}",
            m[set]
        );
    }
    assert_eq!(m["NoNewPrivs"], 1, "{child}");

    let (status, log) = daemon.stop(Signal::SIGTERM);
    assert!(status.success(), "{status}\n{log}");
    let warnings: Vec<&str> = log.lines().filter(|l| l.contains(" WARN ")).collect();
    assert!(warnings.is_empty(), "{warnings:#?}");
}

/// The daemon's resident memory in KiB (`VmRSS` of /proc/PID/status).
fn vm_rss_kib(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap_or_else(|| panic!("no VmRSS in /proc/{pid}/status:\n{status}"))
}

/// The daemon's open file descriptors: all of them, and its sockets (the
/// rest come and go with its passes over /proc).
fn open_fds(pid: u32) -> (usize, usize) {
    let fds: Vec<_> = std::fs::read_dir(format!("/proc/{pid}/fd"))
        .unwrap()
        .filter_map(Result::ok)
        .collect();
    let sockets = fds
        .iter()
        .filter(|f| {
            std::fs::read_link(f.path()).is_ok_and(|t| t.to_string_lossy().starts_with("socket:"))
        })
        .count();
    (fds.len(), sockets)
}

/// Reads `s` until the peer closes it (EOF or reset), or `by` passes:
/// whether the peer closed it in time.
fn closed_by_peer(s: &mut std::net::TcpStream, by: Instant) -> bool {
    use std::io::Read as _;
    let mut buf = [0u8; 64 << 10];
    loop {
        let left = by.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return false;
        }
        s.set_read_timeout(Some(left)).unwrap();
        match s.read(&mut buf) {
            Ok(0) => return true,
            Ok(_) => {}
            Err(e)
                if matches!(
                    e.kind(),
                    std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                ) =>
            {
                return false;
            }
            Err(_) => return true,
        }
    }
}

/// Reads a response head from `s` (up to the blank line), within 5 s.
fn response_head(s: &mut std::net::TcpStream) -> String {
    use std::io::Read as _;
    s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    let mut head = Vec::new();
    let mut byte = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") {
        match s.read(&mut byte) {
            Ok(1) => head.push(byte[0]),
            _ => break,
        }
    }
    String::from_utf8_lossy(&head).into_owned()
}

/// The HTTP server holds no more than its limits whatever local clients
/// do (issue 22): a flood of idle connections past the cap, slowloris
/// clients sending a byte a second, oversized request heads, a request
/// body, more `/events` readers than allowed that then never read, and a
/// client that pipelines scrapes and never reads the answers. Throughout,
/// `/metrics` answers every scrape; afterwards the daemon's RSS is where it
/// was and its descriptors come back to their count before.
#[test]
fn http_stays_bounded_under_hostile_clients() {
    use std::{io::Write as _, net::TcpStream};

    use oomwatch::telemetry::http::{
        HEADER_READ_TIMEOUT, MAX_CONNECTIONS, MAX_EVENT_READERS, WRITE_TIMEOUT,
    };
    const FLOOD: usize = 4 * MAX_CONNECTIONS;
    const SLOWLORIS: usize = 20;
    const READERS: usize = MAX_EVENT_READERS + 4;
    const TOO_LARGE: usize = 10;
    require_root();
    let (daemon, _) = Daemon::start();
    let pid = daemon.child.id();
    let addr = daemon.addr.clone();
    let connect = || TcpStream::connect(&addr).expect("connect to the daemon");
    let refusals = |reason: &str| {
        let body = http_get(&addr, "/metrics").expect("scrape");
        labelled(
            &body,
            "oomwatch_http_refusals_total",
            &format!("reason=\"{reason}\""),
        )
        .unwrap_or_else(|| panic!("no refusals counted for {reason}:\n{body}"))
    };
    // Warm-up: the allocator's arenas and hyper's buffers at their working
    // size before the baseline.
    for _ in 0..20 {
        http_get(&addr, "/metrics").expect("scrape");
    }
    drop(connect());
    let rss_before = vm_rss_kib(pid);
    let fds_before = open_fds(pid);
    let reasons = [
        "connection_cap",
        "evicted",
        "header_timeout",
        "idle_timeout",
        "too_large",
        "body",
        "events_cap",
        "write_timeout",
        "deadline",
    ];
    let counted_before: Vec<f64> = reasons.iter().map(|r| refusals(r)).collect();

    // A scraper throughout, as Prometheus would be.
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let scraper = {
        let (stop, addr) = (Arc::clone(&stop), addr.clone());
        std::thread::spawn(move || {
            let (mut took, mut failed) = (Vec::new(), 0);
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                let t = Instant::now();
                match http_get(&addr, "/metrics") {
                    Some(_) => took.push(t.elapsed()),
                    None => failed += 1,
                }
                std::thread::sleep(Duration::from_millis(50));
            }
            (took, failed)
        })
    };

    // More /events readers than allowed; none reads past the head.
    let mut readers: Vec<(TcpStream, String)> = (0..READERS)
        .map(|_| {
            let mut s = connect();
            write!(s, "GET /events HTTP/1.1\r\nHost: oomwatch\r\n\r\n").unwrap();
            let head = response_head(&mut s);
            (s, head)
        })
        .collect();
    let streaming = readers
        .iter()
        .filter(|(_, h)| h.starts_with("HTTP/1.1 200"))
        .count();
    let refused = readers
        .iter()
        .filter(|(_, h)| h.starts_with("HTTP/1.1 503"))
        .count();
    // `oomwatch watch` at the cap: the daemon's reason, not a guess.
    let out = Command::new(env!("CARGO_BIN_EXE_oomwatch"))
        .args(["watch", "--from", &addr])
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(
        err.contains("refused GET /events (HTTP/1.0 503 Service Unavailable)")
            && err.contains("clients already read /events"),
        "{err}"
    );

    // The flood: connections that send nothing, four times the cap.
    let flood_start = Instant::now();
    let mut flood: Vec<TcpStream> = (0..FLOOD).map(|_| connect()).collect();
    // Slowloris, after the flood (so newer than it, not evicted for it): a
    // request head one byte a second, on its own thread.
    let slowloris = {
        let addr = addr.clone();
        std::thread::spawn(move || {
            let start = Instant::now();
            let mut socks: Vec<Option<TcpStream>> = (0..SLOWLORIS)
                .map(|_| Some(TcpStream::connect(&addr).unwrap()))
                .collect();
            let head = b"GET /metrics HTTP/1.1\r\nHost: oomwatch\r\nX-Slow: aaaaaaaaaaaaaaaaaaaaaaaaaaaa\r\n\r\n";
            let mut closed_after = Vec::new();
            for &b in head.iter().cycle() {
                for s in socks.iter_mut() {
                    let gone = s.as_mut().is_some_and(|s| {
                        use std::io::Read as _;
                        // Closed: the byte cannot be sent, or the read side
                        // has seen the end.
                        s.set_nonblocking(true).unwrap();
                        let ended = match s.read(&mut [0u8; 512]) {
                            Ok(_) => true,
                            Err(e) => e.kind() != std::io::ErrorKind::WouldBlock,
                        };
                        s.set_nonblocking(false).unwrap();
                        ended || s.write_all(&[b]).is_err()
                    });
                    if gone {
                        closed_after.push(start.elapsed());
                        *s = None;
                    }
                }
                if socks.iter().all(Option::is_none) || start.elapsed() > Duration::from_secs(15) {
                    break;
                }
                std::thread::sleep(Duration::from_secs(1));
            }
            closed_after
        })
    };

    // Request heads over the limit: 12 KiB, and 1 MiB.
    let mut too_large_heads = Vec::new();
    for i in 0..TOO_LARGE {
        let mut s = connect();
        let pad = if i % 2 == 0 { 12 << 10 } else { 1 << 20 };
        let req = format!(
            "GET /metrics HTTP/1.1\r\nHost: oomwatch\r\nX-Pad: {}\r\n\r\n",
            "a".repeat(pad)
        );
        // The server answers 431 and closes before reading it all.
        let _ = s.write_all(req.as_bytes());
        too_large_heads.push(response_head(&mut s));
    }
    // A request with a body.
    let mut with_body = connect();
    write!(
        with_body,
        "GET /metrics HTTP/1.1\r\nHost: oomwatch\r\nContent-Length: 5\r\n\r\nhello"
    )
    .unwrap();
    let body_head = response_head(&mut with_body);
    // A client that pipelines scrapes and never reads: the answers fill
    // both socket buffers, then the server's writes stall.
    let mut stuck = connect();
    let pipelined = "GET /metrics HTTP/1.1\r\nHost: oomwatch\r\n\r\n".repeat(1000);
    stuck.write_all(pipelined.as_bytes()).unwrap();
    let stuck_since = Instant::now();
    let fds_during = open_fds(pid);

    // Every flood connection is closed by the server within the header
    // timeout (sooner if evicted), with some slack.
    let by = flood_start + HEADER_READ_TIMEOUT + Duration::from_secs(3);
    let flood_closed = flood
        .iter_mut()
        .map(|s| closed_by_peer(s, by))
        .filter(|c| *c)
        .count();
    let flood_took = flood_start.elapsed();
    drop(flood);
    let slow_closed = slowloris.join().unwrap();
    // The stuck client's connection is cut once its writes stall for the
    // write timeout (or its request passes its deadline): counted, then
    // closed (reading it earlier would let the writes go on).
    let cut_count =
        |r: &str| refusals(r) - counted_before[reasons.iter().position(|x| *x == r).unwrap()];
    let cut_by = stuck_since + WRITE_TIMEOUT + Duration::from_secs(15);
    while cut_count("write_timeout") + cut_count("deadline") < 1.0 && Instant::now() < cut_by {
        std::thread::sleep(Duration::from_millis(100));
    }
    let stuck_took = stuck_since.elapsed();
    let stuck_cut = closed_by_peer(&mut stuck, Instant::now() + Duration::from_secs(5));
    drop(stuck);

    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let (mut took, scrape_failures) = scraper.join().unwrap();
    took.sort();
    let p50 = took.get(took.len() / 2).copied().unwrap_or_default();
    let max = took.last().copied().unwrap_or_default();
    let counted: Vec<f64> = reasons
        .iter()
        .zip(&counted_before)
        .map(|(r, before)| refusals(r) - before)
        .collect();

    // The readers leave; every descriptor comes back.
    readers.clear();
    drop(with_body);
    let deadline = Instant::now() + Duration::from_secs(10);
    let fds_after = loop {
        let n = open_fds(pid);
        if n.1 <= fds_before.1 || Instant::now() > deadline {
            break n;
        }
        std::thread::sleep(Duration::from_millis(100));
    };
    let rss_after = vm_rss_kib(pid);

    eprintln!(
        "http flood: {} connections attempted ({FLOOD} idle, {SLOWLORIS} slowloris, {READERS} /events, \
         {TOO_LARGE} oversized, 1 with a body, 1 never reading)",
        FLOOD + SLOWLORIS + READERS + TOO_LARGE + 2
    );
    for (r, n) in reasons.iter().zip(&counted) {
        eprintln!("  refused {r}: {n}");
    }
    eprintln!(
        "  /events: {streaming} streaming, {refused} refused; idle flood closed: {flood_closed}/{FLOOD} in {flood_took:?}; \
         slowloris closed after {slow_closed:?}; never-reading client cut: {stuck_cut} after {stuck_took:?}"
    );
    eprintln!(
        "  /metrics during the flood: {} scrapes, {scrape_failures} failed, p50 {p50:?}, max {max:?}",
        took.len()
    );
    eprintln!(
        "  VmRSS {rss_before} KiB before, {rss_after} KiB after; fds (all, sockets) {fds_before:?} before, {fds_during:?} during, {fds_after:?} after"
    );

    assert_eq!(
        (streaming, refused),
        (MAX_EVENT_READERS, READERS - MAX_EVENT_READERS),
        "/events readers streaming and refused"
    );
    assert_eq!(
        flood_closed, FLOOD,
        "idle connections left open past the header timeout"
    );
    assert_eq!(
        slow_closed.len(),
        SLOWLORIS,
        "slowloris connections still open after 15 s: {slow_closed:?}"
    );
    assert!(
        slow_closed
            .iter()
            .all(|t| *t <= HEADER_READ_TIMEOUT + Duration::from_secs(3)),
        "{slow_closed:?}"
    );
    for head in &too_large_heads {
        assert!(
            head.is_empty() || head.starts_with("HTTP/1.1 431"),
            "an oversized head answered {head:?}"
        );
    }
    assert!(body_head.starts_with("HTTP/1.1 413"), "{body_head:?}");
    assert!(
        stuck_cut,
        "a client that never reads held its connection {stuck_took:?}"
    );
    assert_eq!(scrape_failures, 0, "scrapes failed during the flood");
    assert!(took.len() >= 20, "{} scrapes", took.len());
    assert!(max < Duration::from_secs(2), "a scrape took {max:?}");
    let count = |r: &str| counted[reasons.iter().position(|x| *x == r).unwrap()];
    assert_eq!(count("too_large"), TOO_LARGE as f64);
    assert_eq!(count("body"), 1.0);
    // The readers past the cap, and the `watch` above.
    assert_eq!(
        count("events_cap"),
        (READERS - MAX_EVENT_READERS + 1) as f64
    );
    assert_eq!(count("write_timeout") + count("deadline"), 1.0);
    assert!(
        count("evicted") + count("header_timeout") >= (FLOOD + SLOWLORIS) as f64,
        "{counted:?}"
    );
    assert!(
        fds_during.1 <= fds_before.1 + MAX_CONNECTIONS + 8,
        "{fds_during:?} descriptors (all, sockets) open during the flood, {fds_before:?} before"
    );
    assert!(
        fds_after.1 <= fds_before.1,
        "{fds_after:?} descriptors (all, sockets) open once every client left, {fds_before:?} before"
    );
    assert!(
        rss_after < rss_before + 8 * 1024,
        "VmRSS grew from {rss_before} KiB to {rss_after} KiB"
    );
}
