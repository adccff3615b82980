//! The daemon as a user runs it: `oomwatch run`, scraped over HTTP while a
//! real memcg OOM happens, then stopped with SIGTERM.

use std::{
    io::{BufRead as _, BufReader, Read as _, Write as _},
    net::{TcpListener, TcpStream},
    process::{Command, Stdio},
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};

use oomwatch_tests::{MemcgGuard, killed_by_sigkill, require_root, run_hogs_until_one_dies};

/// GET `path` from `addr`; the body, or None when nothing listens yet.
fn http_get(addr: &str, path: &str) -> Option<String> {
    let mut s = TcpStream::connect(addr).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(5))).ok()?;
    write!(
        s,
        "GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n"
    )
    .ok()?;
    let mut resp = String::new();
    s.read_to_string(&mut resp).ok()?;
    let (head, body) = resp.split_once("\r\n\r\n")?;
    head.starts_with("HTTP/1.1 200").then(|| body.to_owned())
}

/// The value of an unlabelled sample in Prometheus text, e.g. `name 3`.
fn sample(text: &str, name: &str) -> Option<f64> {
    text.lines()
        .filter(|l| !l.starts_with('#'))
        .find_map(|l| l.strip_prefix(name)?.strip_prefix(' ')?.trim().parse().ok())
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// Kills and reaps the daemon if the test fails before stopping it.
struct Daemon(std::process::Child);
impl Drop for Daemon {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[test]
fn run_exports_a_memcg_oom_kill_and_stops_on_sigterm() {
    require_root();
    let addr = format!("127.0.0.1:{}", free_port());
    let mut daemon = Daemon(
        Command::new(env!("CARGO_BIN_EXE_oomwatch"))
            .args(["run", "--listen", &addr])
            // debug shows aya-log lines from the eBPF side too
            .env("RUST_LOG", "info,oomwatch=debug")
            .stderr(Stdio::piped())
            .spawn()
            .expect("start oomwatch run"),
    );
    let log = Arc::new(Mutex::new(String::new()));
    let stderr = daemon.0.stderr.take().unwrap();
    let log_writer = Arc::clone(&log);
    let reader = std::thread::spawn(move || {
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            let mut l = log_writer.lock().unwrap();
            l.push_str(&line);
            l.push('\n');
        }
    });

    // The listener opens only after the probes are attached.
    let deadline = Instant::now() + Duration::from_secs(30);
    let first = loop {
        if let Some(body) = http_get(&addr, "/metrics") {
            break body;
        }
        if let Ok(Some(status)) = daemon.0.try_wait() {
            panic!(
                "oomwatch run exited early with {status}:\n{}",
                log.lock().unwrap()
            );
        }
        assert!(
            Instant::now() < deadline,
            "no /metrics after 30 s:\n{}",
            log.lock().unwrap()
        );
        std::thread::sleep(Duration::from_millis(100));
    };
    assert_eq!(
        sample(&first, "oomwatch_oom_kills_total"),
        Some(0.0),
        "{first}"
    );
    assert!(first.contains("oomwatch_build_info{"), "{first}");

    let memcg = MemcgGuard::create(64 << 20).expect("create a 64 MiB memory cgroup");
    let (hogs, dead, status) =
        run_hogs_until_one_dies(env!("CARGO_BIN_EXE_oomwatch-hog"), &memcg, &[20, 26, 32]).unwrap();
    assert!(killed_by_sigkill(&status), "{status:?}");
    let victim = hogs[dead].pid();
    let expected_memcg = format!("memcg={}:{}", memcg.hierarchy.version, memcg.path);

    let deadline = Instant::now() + Duration::from_secs(10);
    let after = loop {
        let body = http_get(&addr, "/metrics").expect("scrape");
        if sample(&body, "oomwatch_oom_kills_total") == Some(1.0) || Instant::now() > deadline {
            break body;
        }
        std::thread::sleep(Duration::from_millis(100));
    };
    assert_eq!(
        sample(&after, "oomwatch_oom_kills_total"),
        Some(1.0),
        "{after}"
    );
    drop(hogs);
    drop(memcg);

    // SIGTERM: detach and exit 0.
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(daemon.0.id() as i32),
        nix::sys::signal::Signal::SIGTERM,
    )
    .unwrap();
    let deadline = Instant::now() + Duration::from_secs(10);
    let status = loop {
        if let Some(s) = daemon.0.try_wait().unwrap() {
            break s;
        }
        assert!(
            Instant::now() < deadline,
            "oomwatch did not stop within 10 s of SIGTERM"
        );
        std::thread::sleep(Duration::from_millis(50));
    };
    reader.join().unwrap();
    let log = log.lock().unwrap().clone();
    assert!(
        status.success(),
        "exit status {status} after SIGTERM:\n{log}"
    );

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
    // aya-log: the eBPF program's own line reached the agent's tracing output.
    assert!(
        log.contains(&format!("mark_victim pid={victim} ")),
        "no aya-log line:\n{log}"
    );
    assert!(log.contains("SIGTERM: detaching"), "{log}");
}
