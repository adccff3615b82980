//! `cargo xtask stress`: the privileged test suite run again and again on a
//! busy machine, to find the tests that fail now and then. Each run is the
//! same step `cargo xtask test` runs (`cargo test -p oomwatch-tests --
//! --test-threads=1`, with `CI=true`: a test that cannot run its subject
//! fails), while `cpu_hogs` threads spin beside it. It stops at the first
//! failing run, keeps that run's output and names its failing tests.

use std::{
    io::{BufRead as _, BufReader},
    process::Stdio,
    sync::{
        Arc,
        atomic::{AtomicBool, Ordering},
    },
    time::{Duration, Instant},
};

use anyhow::{Context as _, bail};

/// Threads that keep `n` CPUs busy until dropped.
struct CpuHogs {
    stop: Arc<AtomicBool>,
    threads: Vec<std::thread::JoinHandle<()>>,
}

impl CpuHogs {
    fn start(n: u32) -> Self {
        let stop = Arc::new(AtomicBool::new(false));
        let threads = (0..n)
            .map(|_| {
                let stop = Arc::clone(&stop);
                std::thread::spawn(move || {
                    let mut x: u64 = 1;
                    while !stop.load(Ordering::Relaxed) {
                        for _ in 0..100_000 {
                            x = std::hint::black_box(
                                x.wrapping_mul(6364136223846793005).wrapping_add(1),
                            );
                        }
                    }
                })
            })
            .collect();
        CpuHogs { stop, threads }
    }
}

impl Drop for CpuHogs {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        for t in self.threads.drain(..) {
            let _ = t.join();
        }
    }
}

/// The names of the tests a `cargo test` output says failed.
pub fn failed_tests(output: &str) -> Vec<String> {
    output
        .lines()
        .filter_map(|l| l.strip_prefix("test ")?.strip_suffix(" ... FAILED"))
        .map(str::to_owned)
        .collect()
}

pub fn stress(runs: u32, cpu_hogs: u32) -> anyhow::Result<()> {
    if !super::is_root() {
        bail!(
            "the privileged tests load eBPF and create memory cgroups: run `cargo xtask stress` as \
             root"
        );
    }
    if runs == 0 {
        bail!("--runs 0: give at least 1 run");
    }
    super::setup()?;
    // Built once, before the clock starts and before the hogs.
    let mut c = super::cargo();
    c.args(["test", "--package", "oomwatch-tests", "--no-run"]);
    super::status(c)?;
    let out_dir = super::target_dir().join("stress");
    std::fs::create_dir_all(&out_dir).with_context(|| format!("create {}", out_dir.display()))?;
    let hogs = CpuHogs::start(cpu_hogs);
    println!("stress: {runs} runs of the privileged tests, {cpu_hogs} CPU hog(s) beside them");
    let mut times = Vec::new();
    for run in 1..=runs {
        let log_path = out_dir.join(format!("run-{run}.log"));
        let start = Instant::now();
        let mut c = super::cargo();
        c.env("CI", "true")
            .args([
                "test",
                "--package",
                "oomwatch-tests",
                "--",
                "--test-threads=1",
            ])
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        let mut child = c.spawn().context("start cargo test")?;
        // Both streams into one log; stderr on its own thread.
        let stderr = child.stderr.take().context("cargo's stderr")?;
        let err_thread = std::thread::spawn(move || {
            let mut s = String::new();
            for l in BufReader::new(stderr).lines().map_while(Result::ok) {
                s.push_str(&l);
                s.push('\n');
            }
            s
        });
        let mut output = String::new();
        for l in BufReader::new(child.stdout.take().context("cargo's stdout")?)
            .lines()
            .map_while(Result::ok)
        {
            output.push_str(&l);
            output.push('\n');
        }
        let st = child.wait().context("wait for cargo test")?;
        output.push_str(&err_thread.join().unwrap_or_default());
        let took = start.elapsed();
        std::fs::write(&log_path, &output)
            .with_context(|| format!("write {}", log_path.display()))?;
        let passed: usize = output
            .lines()
            .filter_map(|l| l.strip_prefix("test result: ok. "))
            .filter_map(|r| r.split(' ').next()?.parse::<usize>().ok())
            .sum();
        if !st.success() {
            drop(hogs);
            bail!(
                "run {run} of {runs} failed after {:.0} s ({st}): {}; its output is in {}",
                took.as_secs_f64(),
                match failed_tests(&output) {
                    f if f.is_empty() => "no test named (a build or harness failure)".to_owned(),
                    f => format!("failed: {}", f.join(", ")),
                },
                log_path.display()
            );
        }
        times.push(took);
        println!(
            "stress: run {run}/{runs} passed ({passed} tests) in {:.0} s",
            took.as_secs_f64()
        );
        let _ = std::fs::remove_file(&log_path);
    }
    drop(hogs);
    let total: Duration = times.iter().sum();
    let (min, max) = (
        times.iter().min().copied().unwrap_or_default(),
        times.iter().max().copied().unwrap_or_default(),
    );
    println!(
        "stress: all {runs} runs passed with {cpu_hogs} CPU hog(s) beside them; {:.0} s in all, \
         {:.0} – {:.0} s a run",
        total.as_secs_f64(),
        min.as_secs_f64(),
        max.as_secs_f64()
    );
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::failed_tests;

    #[test]
    fn failing_tests_are_named() {
        let out = "running 3 tests\ntest a ... ok\ntest b::c ... FAILED\ntest d ... ignored\n\
                   test e ... FAILED\n";
        assert_eq!(failed_tests(out), ["b::c", "e"]);
        assert!(failed_tests("test result: ok. 3 passed\n").is_empty());
    }
}
