//! Project tasks. `cargo xtask setup` installs the eBPF toolchain on a fresh
//! Debian 12 machine (idempotent, a quick no-op once done); `cargo xtask test`
//! runs the whole test suite; `cargo xtask run` builds and starts the daemon.
//! The toolchain recipe is the one tested in `../shared/toolchain.md`.

use std::{
    os::unix::process::CommandExt as _,
    path::PathBuf,
    process::Command,
    time::{Duration, Instant},
};

use anyhow::{Context as _, bail};
use clap::{Parser, Subcommand};

mod container;
mod dist;
mod install;
mod stress;
mod vm;

#[derive(Parser)]
#[command(
    name = "xtask",
    bin_name = "cargo xtask",
    about = "oomwatch project tasks"
)]
struct Cli {
    #[command(subcommand)]
    command: Task,
}

#[derive(Subcommand)]
enum Task {
    /// Install what building oomwatch needs, when absent: Debian's rustc-web
    /// with its prebuilt BPF `core`, bpf-linker (built against LLVM 22), and
    /// the rustup toolchain link "debian". Needs root only when installing.
    Setup,
    /// The whole test suite: rustfmt check, clippy -D warnings (user space and
    /// the eBPF crate), unit tests, the privileged integration tests (root:
    /// they load eBPF and trigger real OOM kills inside memory cgroups), the
    /// soak and the fuzzers (short), the guest-kernel scenarios (`vm-test`),
    /// then the packages (`dist --check`).
    Test,
    /// oomwatch in guest kernels (QEMU, TCG; Debian's cloud kernels 5.10,
    /// 6.1, 6.12 and the newest 7.x, x86_64 and aarch64): negative oom_score_adj, cgroup v2 and host-wide OOM scenarios, each
    /// predicted, killed by the kernel, seen by oomwatch's eBPF and compared.
    /// Installs QEMU and downloads the kernels with apt (root).
    VmTest {
        /// Only this kernel line (5.10, 6.1, 6.12 or 7.x); repeatable. Default: all.
        #[arg(long = "kernel", value_name = "LINE")]
        kernels: Vec<String>,
        /// Only this architecture (x86_64 or aarch64); repeatable. Default: all.
        #[arg(long = "arch", value_name = "ARCH")]
        arches: Vec<String>,
    },
    /// Fuzz every parser of untrusted input with cargo-fuzz (libFuzzer),
    /// one target after the other, each for a bounded time: kernel OOM
    /// reports (`replay`), BTF (`btf`), /proc task files and meminfo
    /// (`proc`), cgroupfs and PSI files (`cgroupfs`), /proc/zoneinfo
    /// (`zoneinfo`) and tracefs event formats (`tracefs`). Seeded with the
    /// committed fixtures and this machine's own files. Prints each
    /// target's executions; fails naming every target that crashed and
    /// its input, saved under oomwatch/fuzz/artifacts/<target>/. Installs
    /// cargo-fuzz when absent.
    Fuzz {
        /// How long to fuzz each target.
        #[arg(long, value_name = "SECS", default_value_t = 60)]
        seconds: u64,
        /// Only this target; repeatable. Default: all.
        #[arg(long = "target", value_name = "NAME")]
        targets: Vec<String>,
    },
    /// Benchmarks, each printed as a ratio against a baseline measured in the
    /// same run, and written to docs/benchmarks.md with the machine
    /// described (root): P1 each hot eBPF program's run time per event and
    /// P2 a page-fault storm with and without the probes; P3 a full scan and
    /// ranking of every task with 1 000 and 10 000 live processes against
    /// reading every /proc/PID/oom_score; P4 mark_victim to /metrics latency
    /// over repeated memcg OOMs; P5 the daemon's RSS and CPU with 1 000 tasks.
    Bench {
        /// Timed rounds per size.
        #[arg(long, value_name = "N", default_value_t = 9)]
        rounds: u32,
        /// Live process counts the scan is measured at; repeatable.
        /// Default: 1000 and 10000.
        #[arg(long = "tasks", value_name = "N")]
        tasks: Vec<u32>,
        /// Rounds of the forecast backtest's workloads (each round runs
        /// three of them to a real memcg OOM kill, and the cache churn).
        #[arg(long, value_name = "N", default_value_t = 3)]
        runs: u32,
        /// Only these sections (comma-separated: scan, probes, latency,
        /// daemon, forecast); they replace their own sections and targets
        /// in docs/benchmarks.md, and the rest of it stays.
        #[arg(long, value_name = "LIST")]
        only: Option<String>,
    },
    /// N real memcg OOMs in a row with `oomwatch run` (release) watching
    /// and a daemon restart half way (root): the kernel's kill counters
    /// against `/metrics` and the episodes, the replays, the ring buffer's
    /// and kernel log's losses, the daemon's RSS and fds over the run.
    /// Fails (exit 1) when the daemon missed a kill, lost something
    /// unaccounted, or grew. Hold the lab lock around it.
    Soak {
        /// How many OOMs (one at most every 600 ms: 1 000 take about 11
        /// minutes).
        #[arg(long, value_name = "N", default_value_t = 1000)]
        ooms: u32,
        /// The report as JSON on stdout.
        #[arg(long)]
        json: bool,
    },
    /// The privileged tests again and again, with CPU hogs beside them and
    /// CI=true, to find the ones that fail now and then (root). Stops at
    /// the first failing run, names its failing tests and keeps its output
    /// in target/stress/run-N.log. Hold the lab lock around it.
    Stress {
        /// How many runs in a row must pass.
        #[arg(long, value_name = "N", default_value_t = 20)]
        runs: u32,
        /// Threads that keep a CPU busy each, for the whole stress.
        #[arg(long, value_name = "N", default_value_t = 2)]
        cpu_hogs: u32,
    },
    /// Build the packages an SRE installs, in target/dist: for x86_64 and
    /// aarch64 a static oomwatch (eBPF object embedded; starts on any
    /// distribution), a tarball and a .deb, with SHA256SUMS. Built from the
    /// commit alone (git archive into /usr/src/oomwatch), reproducibly: the
    /// same commit gives the same bytes (root).
    Dist {
        /// Only this architecture (x86_64 or aarch64); repeat for more.
        #[arg(long = "arch", value_name = "ARCH")]
        arches: Vec<String>,
        /// Then check the packages: `reproducible` (oomwatch, its eBPF object
        /// and every package built a second time must be the same bytes),
        /// `install` (the .deb under real systemd in guests, x86_64 and
        /// aarch64, oldest and newest kernel), `kube` (the DaemonSet's
        /// container spec under podman through a real memcg OOM; needs port
        /// 7707 free). `--check` alone runs all three.
        #[arg(long, value_name = "WHAT", num_args = 0.., value_delimiter = ',',
              default_missing_value = "all",
              value_parser = ["all", "reproducible", "install", "kube"])]
        check: Vec<String>,
        /// Do not run `cargo xtask setup` first (a machine with its own eBPF
        /// toolchain, e.g. the arm64 workflow's runner).
        #[arg(long)]
        no_setup: bool,
    },
    /// Build oomwatch (release) and start `oomwatch run` with ARGS (root).
    Run {
        /// Arguments for `oomwatch run`, e.g. `--listen 127.0.0.1:7707`.
        #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
        args: Vec<String>,
    },
}

/// Debian packages that building oomwatch needs (toolchain.md, path (a)).
const PACKAGES: &[&str] = &["rustc-web", "libstd-rust-web-dev-bpf", "cargo-web"];
/// Needed only to build bpf-linker.
const LINKER_BUILD_PACKAGES: &[&str] = &["llvm-22-dev"];
/// Needed only by the test suite: a real Prometheus server and promtool.
const TEST_PACKAGES: &[&str] = &["prometheus"];
const BPF_LINKER_VERSION: &str = "0.13.0";
const CARGO_FUZZ_VERSION: &str = "0.13.2";
const LLVM_PREFIX: &str = "/usr/lib/llvm-22";

fn main() -> anyhow::Result<()> {
    match Cli::parse().command {
        Task::Setup => setup(),
        Task::Test => test(),
        Task::VmTest { kernels, arches } => vm::vm_test(vm::Options { kernels, arches }),
        Task::Run { args } => run(&args),
        Task::Fuzz { seconds, targets } => fuzz(seconds, &targets),
        Task::Bench {
            rounds,
            tasks,
            runs,
            only,
        } => bench(rounds, &tasks, runs, only.as_deref()),
        Task::Soak { ooms, json } => soak(ooms, json),
        Task::Stress { runs, cpu_hogs } => stress::stress(runs, cpu_hogs),
        Task::Dist {
            arches,
            check,
            no_setup,
        } => dist::dist(dist::Options {
            arches,
            check,
            reproduce_host_only: false,
            no_setup,
        })
        .map(drop),
    }
}

fn workspace_root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("xtask lives in the workspace")
        .to_path_buf()
}

fn cargo() -> Command {
    let mut c = Command::new(std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into()));
    c.current_dir(workspace_root());
    c
}

/// Runs `cmd`, failing with its command line when it fails.
fn status(mut cmd: Command) -> anyhow::Result<()> {
    let line = format!("{cmd:?}");
    let st = cmd.status().with_context(|| format!("start {line}"))?;
    if !st.success() {
        bail!("{line} failed: {st}");
    }
    Ok(())
}

fn output_ok(program: &str, args: &[&str]) -> Option<String> {
    let out = Command::new(program).args(args).output().ok()?;
    out.status
        .success()
        .then(|| String::from_utf8_lossy(&out.stdout).into_owned())
}

fn dpkg_installed(pkg: &str) -> bool {
    output_ok("dpkg-query", &["-W", "-f=${Status}", pkg])
        .is_some_and(|s| s.trim() == "install ok installed")
}

fn is_root() -> bool {
    // SAFETY: geteuid has no preconditions and cannot fail.
    unsafe { libc::geteuid() == 0 }
}

fn apt_install(packages: &[&str]) -> anyhow::Result<()> {
    if !is_root() {
        bail!(
            "setup must install {}: run it as root (`sudo cargo xtask setup`)",
            packages.join(" ")
        );
    }
    println!("setup: apt-get install {}", packages.join(" "));
    let mut update = Command::new("apt-get");
    update.args(["update", "-q"]);
    status(update)?;
    let mut install = Command::new("apt-get");
    install
        .args(["install", "-y", "-q", "--no-install-recommends"])
        .args(packages)
        .env("DEBIAN_FRONTEND", "noninteractive");
    status(install)
}

fn setup() -> anyhow::Result<()> {
    let start = Instant::now();
    let mut did = Vec::new();

    let linker_ok =
        output_ok("bpf-linker", &["--version"]).is_some_and(|v| v.contains(BPF_LINKER_VERSION));
    let mut wanted: Vec<&str> = PACKAGES.to_vec();
    if !linker_ok {
        wanted.extend_from_slice(LINKER_BUILD_PACKAGES);
    }
    let missing: Vec<&str> = wanted.into_iter().filter(|p| !dpkg_installed(p)).collect();
    if !missing.is_empty() {
        apt_install(&missing)?;
        did.push(format!("apt: {}", missing.join(" ")));
    }

    if !linker_ok {
        println!("setup: cargo install bpf-linker {BPF_LINKER_VERSION} (LLVM 22; takes minutes)");
        let mut c = cargo();
        c.args([
            "install",
            &format!("bpf-linker@{BPF_LINKER_VERSION}"),
            "--locked",
            "--no-default-features",
            "--features",
            "llvm-22",
        ])
        // bpf-linker's build script reads LLVM_PREFIX; without it, it takes the
        // first llvm-config on PATH, which on Debian 12 is LLVM 14.
        .env("LLVM_PREFIX", LLVM_PREFIX);
        status(c)?;
        did.push(format!("bpf-linker {BPF_LINKER_VERSION}"));
    }

    match output_ok("rustup", &["toolchain", "list"]) {
        Some(list) if list.lines().any(|l| l.starts_with("debian")) => {}
        Some(_) => {
            let mut c = Command::new("rustup");
            c.args(["toolchain", "link", "debian", "/usr"]);
            status(c)?;
            did.push("rustup toolchain link debian /usr".into());
        }
        // Without rustup, aya-build uses the cargo on PATH.
        None => {}
    }

    for (component, probe) in [("rustfmt", "fmt"), ("clippy", "clippy")] {
        let ok = cargo()
            .args([probe, "--version"])
            .output()
            .is_ok_and(|o| o.status.success());
        if !ok {
            let mut c = Command::new("rustup");
            c.args(["component", "add", component]);
            status(c)?;
            did.push(format!("rustup component {component}"));
        }
    }

    let took = start.elapsed();
    if did.is_empty() {
        println!("setup: everything present ({:.1} s)", took.as_secs_f64());
    } else {
        println!(
            "setup: installed {} in {:.1} s",
            did.join(", "),
            took.as_secs_f64()
        );
    }
    Ok(())
}

fn test() -> anyhow::Result<()> {
    setup()?;
    let missing: Vec<&str> = TEST_PACKAGES
        .iter()
        .copied()
        .filter(|p| !dpkg_installed(p))
        .collect();
    if !missing.is_empty() {
        apt_install(&missing)?;
    }
    let steps: Vec<(&str, Vec<&str>)> = vec![
        ("rustfmt check", vec!["fmt", "--all", "--", "--check"]),
        (
            "clippy, user space",
            vec![
                "clippy",
                "--workspace",
                "--exclude",
                "oomwatch-ebpf",
                "--all-targets",
                "--",
                "-D",
                "warnings",
            ],
        ),
        (
            // On the host target, with panic=abort as on BPF: the crate's own
            // panic handler must not meet std's (aya-template does the same).
            "clippy, eBPF crate",
            vec![
                "clippy",
                "--package",
                "oomwatch-ebpf",
                "--",
                "-D",
                "warnings",
                "-C",
                "panic=abort",
            ],
        ),
        (
            "unit tests",
            vec![
                "test",
                "--workspace",
                "--exclude",
                "oomwatch-ebpf",
                "--exclude",
                "oomwatch-tests",
            ],
        ),
        (
            // One thread: the tests share the kernel's OOM state.
            "privileged integration tests (real eBPF, real memcg OOM kills)",
            vec![
                "test",
                "--package",
                "oomwatch-tests",
                "--",
                "--test-threads=1",
            ],
        ),
    ];
    if !is_root() {
        bail!(
            "the privileged integration tests load eBPF and create memory cgroups: run \
             `cargo xtask test` as root"
        );
    }
    let total = steps.len();
    let mut times: Vec<(&str, Duration)> = Vec::new();
    // A test that cannot run its subject here appends a line to this file
    // (`oomwatch_tests::skip`, the corpus tests' `corpus`); listed at the end.
    // Under CI=true such a test fails instead.
    let skipped = workspace_root().join("target/skipped-tests.txt");
    match std::fs::remove_file(&skipped) {
        Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
            return Err(e).with_context(|| format!("remove {}", skipped.display()));
        }
        _ => {}
    }
    for (i, (name, args)) in steps.into_iter().enumerate() {
        println!("\n==> [{}/{total}] {name}", i + 1);
        let start = Instant::now();
        let mut c = cargo();
        c.env("OOMWATCH_SKIPPED", &skipped);
        c.args(&args);
        status(c).with_context(|| format!("step `{name}`"))?;
        times.push((name, start.elapsed()));
    }
    println!("\n==> [soak] cargo xtask soak --ooms {SOAK_OOMS_IN_TEST}");
    let start = Instant::now();
    soak(SOAK_OOMS_IN_TEST, false).context("step `soak`")?;
    times.push(("soak: memcg OOMs and a daemon restart", start.elapsed()));
    println!("\n==> [fuzz] cargo xtask fuzz --seconds {FUZZ_SECONDS_IN_TEST}");
    let start = Instant::now();
    fuzz(FUZZ_SECONDS_IN_TEST, &[]).context("step `fuzz`")?;
    times.push(("fuzz the parsers", start.elapsed()));
    println!("\n==> [guest kernels] cargo xtask vm-test");
    let start = Instant::now();
    vm::vm_test(vm::Options {
        kernels: vec![],
        arches: vec![],
    })
    .context("step `guest kernels`")?;
    times.push(("guest kernels (cargo xtask vm-test)", start.elapsed()));
    println!("\n==> [packages] cargo xtask dist --check");
    let start = Instant::now();
    dist::dist(dist::Options {
        arches: vec![],
        check: vec!["all".to_owned()],
        // The second build of the other architecture would add minutes and
        // checks the same recipe; `cargo xtask dist --check` does both.
        reproduce_host_only: true,
        no_setup: true,
    })
    .context("step `packages`")?;
    times.push((
        "packages: reproducible, installed under systemd, the DaemonSet under podman",
        start.elapsed(),
    ));
    println!("\nall {} steps passed:", times.len());
    for (name, t) in times {
        println!("  {:>7.1} s  {name}", t.as_secs_f64());
    }
    let skips = std::fs::read_to_string(&skipped).unwrap_or_default();
    let skips: Vec<&str> = skips.lines().collect();
    println!(
        "{} test(s) skipped: they could not run their subject here",
        skips.len()
    );
    for s in skips {
        println!("  {s}");
    }
    Ok(())
}

/// How many OOMs `cargo xtask test`'s soak runs (about 30 s).
const SOAK_OOMS_IN_TEST: u32 = 40;

/// How long `cargo xtask test` fuzzes each target: 10 s × 6 targets, the
/// minute the single report-parser target had.
const FUZZ_SECONDS_IN_TEST: u64 = 10;

/// One cargo-fuzz target (`oomwatch/fuzz/fuzz_targets/<name>.rs`) and
/// where its seeds come from, besides the committed ones in
/// `oomwatch/fuzz/seeds/<name>/`.
struct FuzzTarget {
    name: &'static str,
    /// libFuzzer's `-max_len`: above the largest real file, so seeds are
    /// whole.
    max_len: u64,
    /// A dictionary in oomwatch/fuzz.
    dict: Option<&'static str>,
    /// This machine's files, read at fuzz time (a `*` component matches
    /// every entry of its directory; what cannot be read is left out).
    live: &'static [&'static str],
    /// Seed from the report fixtures (`*.log` under oomwatch/tests/fixtures
    /// and ../shared/oom-reports).
    reports: bool,
}

const FUZZ_TARGETS: &[FuzzTarget] = &[
    FuzzTarget {
        name: "replay",
        max_len: 16384,
        dict: Some("replay.dict"),
        live: &[],
        reports: true,
    },
    FuzzTarget {
        name: "btf",
        // vmlinux's 5 MB would make every run slow; a module's split BTF
        // (refused: it refers to vmlinux's types) and the committed
        // self-contained blobs fit.
        max_len: 65536,
        dict: None,
        live: &["/sys/kernel/btf/*"],
        reports: false,
    },
    FuzzTarget {
        name: "proc",
        max_len: 8192,
        dict: None,
        live: &[
            "/proc/self/stat",
            "/proc/self/status",
            "/proc/self/cgroup",
            "/proc/1/stat",
            "/proc/1/status",
            "/proc/1/cgroup",
            // kthreadd: a kernel thread, no Vm* lines.
            "/proc/2/stat",
            "/proc/2/status",
            "/proc/meminfo",
        ],
        reports: false,
    },
    FuzzTarget {
        name: "cgroupfs",
        max_len: 8192,
        dict: None,
        // The hierarchies' roots only: other cgroups are not ours to read.
        live: &[
            "/sys/fs/cgroup/memory/memory.stat",
            "/sys/fs/cgroup/memory/memory.oom_control",
            "/sys/fs/cgroup/memory/memory.limit_in_bytes",
            "/sys/fs/cgroup/memory/memory.usage_in_bytes",
            "/sys/fs/cgroup/memory/memory.failcnt",
            "/sys/fs/cgroup/memory.stat",
            "/sys/fs/cgroup/memory.pressure",
            "/sys/fs/cgroup/unified/memory.stat",
            "/sys/fs/cgroup/unified/memory.pressure",
            "/proc/pressure/memory",
            "/proc/vmstat",
        ],
        reports: false,
    },
    FuzzTarget {
        name: "zoneinfo",
        max_len: 65536,
        dict: None,
        live: &["/proc/zoneinfo", "/proc/buddyinfo"],
        reports: false,
    },
    FuzzTarget {
        name: "tracefs",
        max_len: 8192,
        dict: None,
        live: &[
            "/sys/kernel/tracing/events/oom/*/format",
            "/sys/kernel/tracing/events/kmem/*/format",
            "/sys/kernel/tracing/events/vmscan/*/format",
        ],
        reports: false,
    },
];

/// `pattern`'s paths: each `*` component stands for every entry of the
/// directory before it.
fn expand(pattern: &str) -> Vec<PathBuf> {
    let mut paths = vec![PathBuf::from("/")];
    for part in pattern.split('/').filter(|p| !p.is_empty()) {
        paths = paths
            .into_iter()
            .flat_map(|dir| match part {
                "*" => std::fs::read_dir(&dir)
                    .map(|rd| rd.flatten().map(|e| e.path()).collect())
                    .unwrap_or_default(),
                _ => vec![dir.join(part)],
            })
            .collect();
    }
    paths.sort();
    paths
}

/// Copies `t`'s seeds into `corpus`; returns how many.
fn fuzz_seeds(
    t: &FuzzTarget,
    root: &std::path::Path,
    corpus: &std::path::Path,
) -> anyhow::Result<usize> {
    let mut files: Vec<PathBuf> = Vec::new();
    let mut dirs = vec![root.join("oomwatch/fuzz/seeds").join(t.name)];
    if t.reports {
        dirs.push(root.join("../shared/oom-reports"));
        if let Ok(rd) = std::fs::read_dir(root.join("oomwatch/tests/fixtures")) {
            dirs.extend(rd.flatten().map(|e| e.path()));
        }
    }
    for dir in dirs {
        let Ok(rd) = std::fs::read_dir(&dir) else {
            continue;
        };
        files.extend(
            rd.flatten()
                .map(|e| e.path())
                .filter(|f| !t.reports || f.extension().is_some_and(|x| x == "log")),
        );
    }
    files.extend(t.live.iter().flat_map(|p| expand(p)));
    let mut seeds = 0;
    for f in files {
        // Live files are read, not copied: procfs and sysfs report sizes
        // they do not hold.
        let Ok(bytes) = std::fs::read(&f) else {
            continue;
        };
        if bytes.is_empty() || bytes.len() as u64 > t.max_len {
            continue;
        }
        let name = f
            .to_string_lossy()
            .trim_start_matches('/')
            .replace('/', "_");
        let to = corpus.join(format!("seed-{name}"));
        std::fs::write(&to, bytes).with_context(|| format!("write {}", to.display()))?;
        seeds += 1;
    }
    Ok(seeds)
}

/// What one target's run printed that matters (`-print_final_stats=1`).
#[derive(Default)]
struct FuzzRun {
    /// `stat::number_of_executed_units` (libFuzzer's runs).
    runs: Option<u64>,
    /// `stat::average_exec_per_sec`.
    per_sec: Option<u64>,
    /// `stat::new_units_added`: inputs that reached new code.
    new_units: Option<u64>,
    /// The crashing input (`Test unit written to PATH`).
    artifact: Option<String>,
}

impl FuzzRun {
    /// Takes what `line` of the fuzzer's output says; false for a line
    /// not worth echoing (progress and the recommended dictionary).
    fn read(&mut self, line: &str) -> bool {
        let stat = |name: &str| {
            line.strip_prefix(name)
                .and_then(|v| v.trim().parse::<u64>().ok())
        };
        if let Some(n) = stat("stat::number_of_executed_units:") {
            self.runs = Some(n);
        } else if let Some(n) = stat("stat::average_exec_per_sec:") {
            self.per_sec = Some(n);
        } else if let Some(n) = stat("stat::new_units_added:") {
            self.new_units = Some(n);
        } else if let Some((_, path)) = line.split_once("Test unit written to ") {
            self.artifact = Some(path.trim().to_owned());
        }
        let noise = (line.starts_with('#') && !line.contains("DONE"))
            || line.contains("# Uses:")
            || line.starts_with("\tNEW_FUNC")
            || line.starts_with("###### Recommended dictionary");
        !noise
    }
}

/// `cargo xtask fuzz`: libFuzzer on each parser of untrusted input, one
/// target after the other (2 CPUs are shared), `seconds` each. Stable Rust
/// is enough: RUSTC_BOOTSTRAP=1 admits cargo-fuzz's `-Z` sanitizer flags
/// and rustup's stable ships the sanitizer runtimes.
fn fuzz(seconds: u64, only: &[String]) -> anyhow::Result<()> {
    use std::io::BufRead as _;

    let targets: Vec<&FuzzTarget> = if only.is_empty() {
        FUZZ_TARGETS.iter().collect()
    } else {
        let names: Vec<&str> = FUZZ_TARGETS.iter().map(|t| t.name).collect();
        only.iter()
            .map(|n| {
                FUZZ_TARGETS.iter().find(|t| t.name == n).with_context(|| {
                    format!("no fuzz target `{n}`: pick one of {}", names.join(", "))
                })
            })
            .collect::<anyhow::Result<_>>()?
    };
    let have = cargo()
        .args(["fuzz", "--version"])
        .output()
        .is_ok_and(|o| o.status.success());
    if !have {
        println!("fuzz: cargo install cargo-fuzz {CARGO_FUZZ_VERSION}");
        let mut c = cargo();
        c.args([
            "install",
            &format!("cargo-fuzz@{CARGO_FUZZ_VERSION}"),
            "--locked",
        ]);
        status(c)?;
    }
    let root = workspace_root();
    let fuzz_dir = root.join("oomwatch/fuzz");
    let target_dir = std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| root.join("target"))
        .join("fuzz");
    let fuzz_cargo = |args: &[&str]| {
        let mut c = cargo();
        c.current_dir(&fuzz_dir)
            .args(args)
            .arg("--target-dir")
            .arg(target_dir.join("build"))
            // No eBPF object: the parsers do not need it, and aya-build
            // must not see the sanitizer flags.
            .env("AYA_BUILD_SKIP", "1")
            .env("RUSTC_BOOTSTRAP", "1");
        c
    };
    // One build for every target; each run below finds it done.
    let mut build = fuzz_cargo(&["fuzz", "build"]);
    if let [t] = targets.as_slice() {
        build.arg(t.name);
    }
    status(build).context("build the fuzz targets")?;

    let mut results = Vec::new();
    for t in &targets {
        // The corpus grows across local runs; seeds are added every time.
        let corpus = target_dir.join("corpus").join(t.name);
        std::fs::create_dir_all(&corpus).with_context(|| format!("create {}", corpus.display()))?;
        let seeds = fuzz_seeds(t, &root, &corpus)?;
        println!("\n==> fuzz {}: {seeds} seed files, {seconds} s", t.name);
        let mut c = fuzz_cargo(&["fuzz", "run"]);
        c.arg(t.name).arg(&corpus).args([
            "--".to_owned(),
            format!("-max_total_time={seconds}"),
            format!("-max_len={}", t.max_len),
            "-timeout=10".to_owned(),
            "-print_final_stats=1".to_owned(),
        ]);
        if let Some(d) = t.dict {
            c.arg(format!("-dict={d}"));
        }
        c.stderr(std::process::Stdio::piped());
        let line = format!("{c:?}");
        let mut child = c.spawn().with_context(|| format!("start {line}"))?;
        let mut run = FuzzRun::default();
        let stderr = child.stderr.take().context("fuzzer's stderr")?;
        for l in std::io::BufReader::new(stderr).lines() {
            let l = l.with_context(|| format!("read {line}'s output"))?;
            if run.read(&l) {
                eprintln!("{l}");
            }
        }
        let st = child.wait().with_context(|| format!("wait for {line}"))?;
        results.push((t.name, st, run));
    }

    println!("\nfuzz: executions per target ({seconds} s each):");
    let mut crashed = Vec::new();
    let or_unknown = |n: Option<u64>| n.map_or("?".to_owned(), |n| n.to_string());
    for (name, st, run) in &results {
        println!(
            "  {name:>9} {:>10} runs {:>7} exec/s {:>6} new inputs{}",
            or_unknown(run.runs),
            or_unknown(run.per_sec),
            or_unknown(run.new_units),
            if st.success() { "" } else { "  CRASHED" },
        );
        if !st.success() {
            let input = run.artifact.as_deref().map_or_else(
                || format!("no input saved ({st}): see its output above"),
                |a| format!("input {a}"),
            );
            crashed.push(format!("{name} ({input})"));
        }
    }
    if !crashed.is_empty() {
        bail!(
            "the fuzzer crashed {}: reproduce with `cargo fuzz run <target> <input>` in oomwatch/fuzz",
            crashed.join("; ")
        );
    }
    Ok(())
}

fn bench(rounds: u32, tasks: &[u32], runs: u32, only: Option<&str>) -> anyhow::Result<()> {
    if !is_root() {
        bail!(
            "the benchmarks load eBPF and create memory cgroups: run `cargo xtask bench` as root"
        );
    }
    setup()?;
    build_release_with_hog("oomwatch-bench")?;
    let root = workspace_root();
    // A partial run (--only) replaces only its own sections and targets.
    let out = root.join("docs/benchmarks.md");
    let mut b = Command::new(root.join("target/release/oomwatch-bench"));
    b.args([
        "--rounds",
        &rounds.to_string(),
        "--runs",
        &runs.to_string(),
        "--markdown",
    ])
    .arg(&out);
    for t in tasks {
        b.args(["--tasks", &t.to_string()]);
    }
    if let Some(o) = only {
        b.args(["--only", o]);
    }
    status(b).context("the benchmarks")?;
    println!("==> wrote {}", out.display());
    Ok(())
}

/// Builds, in release, the test crate's binary `bin` with the two it
/// drives: the hog and `oomwatch`.
fn build_release_with_hog(bin: &str) -> anyhow::Result<()> {
    let mut c = cargo();
    c.args(["build", "--release", "--package", "oomwatch-tests"]);
    for b in [bin, "oomwatch-hog", "oomwatch"] {
        c.args(["--bin", b]);
    }
    status(c)
}

/// Where cargo puts what it builds: `CARGO_TARGET_DIR` when set (relative
/// to the workspace, where cargo runs), else `target/`.
fn target_dir() -> PathBuf {
    let root = workspace_root();
    std::env::var_os("CARGO_TARGET_DIR").map_or_else(|| root.join("target"), |d| root.join(d))
}

/// `cargo xtask soak`: builds the release binaries and runs `oomwatch-soak`.
fn soak(ooms: u32, json: bool) -> anyhow::Result<()> {
    if !is_root() {
        bail!("the soak loads eBPF and creates memory cgroups: run `cargo xtask soak` as root");
    }
    build_release_with_hog("oomwatch-soak")?;
    let mut s = Command::new(target_dir().join("release/oomwatch-soak"));
    s.args(["--ooms", &ooms.to_string()]);
    if json {
        s.arg("--json");
    }
    status(s).context("the soak")
}

fn run(args: &[String]) -> anyhow::Result<()> {
    setup()?;
    let mut c = cargo();
    c.args(["build", "--release", "--package", "oomwatch"]);
    status(c)?;
    let bin = workspace_root().join("target/release/oomwatch");
    println!("==> {} run {}", bin.display(), args.join(" "));
    // exec: the daemon takes this process's place, so SIGINT/SIGTERM reach it.
    let err = Command::new(&bin).arg("run").args(args).exec();
    Err(err).with_context(|| format!("exec {}", bin.display()))
}

#[cfg(test)]
mod tests {
    use super::workspace_root;

    /// The package names of the workspace, read from each member's manifest.
    fn packages() -> Vec<String> {
        let root = workspace_root();
        [
            "oomwatch",
            "oomwatch-common",
            "oomwatch-ebpf",
            "xtask",
            "tests",
        ]
        .iter()
        .filter_map(|m| std::fs::read_to_string(root.join(m).join("Cargo.toml")).ok())
        .filter_map(|t| {
            t.lines().find_map(|l| {
                l.strip_prefix("name = ")
                    .map(|n| n.trim_matches('"').to_owned())
            })
        })
        .collect()
    }

    /// The arm64 workflow cannot run on these machines; what it names must
    /// still exist here, or it breaks silently the day it first runs.
    #[test]
    fn the_arm64_workflow_names_only_what_exists() {
        let root = workspace_root();
        let wf = std::fs::read_to_string(root.join(".github/workflows/arm64.yml"))
            .expect("the arm64 workflow");
        assert!(
            wf.contains("runs-on: ubuntu-24.04-arm"),
            "not an arm64 runner"
        );
        assert!(
            wf.contains("oomwatch selftest"),
            "the arm64 runner does not run the selftest"
        );
        let packages = packages();
        assert!(
            packages.iter().any(|p| p == "oomwatch-tests"),
            "{packages:?}"
        );
        let words: Vec<&str> = wf.split_whitespace().collect();
        let mut tests = 0;
        for pair in words.windows(2) {
            let value = pair[1].trim_end_matches('\\');
            match pair[0] {
                "--package" | "--exclude" => assert!(
                    packages.iter().any(|p| p == value),
                    "the workflow names package {value}, which the workspace does not have"
                ),
                "--test" => {
                    tests += 1;
                    assert!(
                        root.join("tests/tests")
                            .join(format!("{value}.rs"))
                            .is_file(),
                        "the workflow runs --test {value}, which tests/tests/ does not have"
                    );
                }
                _ => {}
            }
        }
        assert!(
            tests >= 5,
            "the workflow runs only {tests} privileged test file(s)"
        );
        // The binary the workflow asks for `check` must be the one cargo builds.
        assert!(wf.contains("./target/debug/oomwatch check"));
        // It builds the arm64 packages natively, and keeps them.
        assert!(wf.contains("cargo xtask dist --arch aarch64 --no-setup"));
        assert!(wf.contains("target/dist/*.deb"));
    }
}
