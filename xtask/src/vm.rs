//! `cargo xtask vm-test`: oomwatch in throwaway guest kernels (QEMU, TCG),
//! where the lab host cannot go: negative `oom_score_adj` (root here lacks
//! CAP_SYS_RESOURCE), cgroup v2's memory controller, host-wide OOMs, and
//! arm64.
//!
//! The recipe is the tested one in `../shared/vm-lab.md`: Debian's cloud
//! kernels taken from apt (arm64 ones through a private apt state, so the
//! host's dpkg gains no foreign architecture), an initramfs with busybox and
//! static binaries, the serial console as the only output, always
//! `-accel tcg` (the lab's `/dev/kvm` is a software layer that makes stock
//! kernels crawl). The aarch64 binaries are built by Debian's `rustc-web`
//! against its arm64 standard library, unpacked as a private sysroot, and
//! linked by Debian's cross gcc: no rustup download.
//!
//! In each guest, `/init` (guest/init.sh) starts `oomwatch run`, builds each
//! scenario's tasks, runs `oomwatch predict` just before the task that
//! triggers the OOM, and prints the kernel's victim (its own report) and the
//! one oomwatch's eBPF saw. This side compares them.

use std::{
    collections::HashMap,
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    time::Instant,
};

use anyhow::{Context as _, bail};

use crate::{apt_install, cargo, dpkg_installed, is_root, output_ok, status, workspace_root};

const INIT: &str = include_str!("guest/init.sh");
/// The OOM sysctl scenarios, run instead of the others by the knob guest.
const KNOBS: &str = include_str!("guest/knobs.sh");

/// Debian's main archive and its security archive.
pub(crate) const MAIN: &str = "http://deb.debian.org/debian";
const SECURITY: &str = "http://deb.debian.org/debian-security";

/// One kernel line of the matrix: the Debian suites that serve it. The
/// kernel is the newest `linux-image-cloud-<arch>` among them (so the 7.x
/// line follows whichever of trixie-backports and sid is newer when the
/// test runs), through its ABI package, and for 7.x through
/// `linux-binary-<ver>` too.
struct Line {
    name: &'static str,
    suites: &'static [(&'static str, &'static str)],
}

const LINES: &[Line] = &[
    Line {
        name: "5.10",
        suites: &[(MAIN, "bullseye"), (SECURITY, "bullseye-security")],
    },
    Line {
        name: "6.1",
        suites: &[(MAIN, "bookworm"), (SECURITY, "bookworm-security")],
    },
    Line {
        name: "6.12",
        suites: &[(MAIN, "trixie"), (SECURITY, "trixie-security")],
    },
    Line {
        name: "7.x",
        suites: &[(MAIN, "trixie-backports"), (MAIN, "sid")],
    },
];

/// Where the arm64 Rust standard library and busybox come from: the host's
/// own release (its `rustc-web` accepts only its exact version).
const HOST_LINE: &str = "6.1";

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Arch {
    X86_64,
    Aarch64,
}

impl Arch {
    pub(crate) const ALL: [Arch; 2] = [Arch::X86_64, Arch::Aarch64];

    /// The architectures named by `--arch` flags; every one when none is.
    pub(crate) fn chosen(names: &[String]) -> anyhow::Result<Vec<Arch>> {
        if let Some(a) = names
            .iter()
            .find(|a| !Arch::ALL.iter().any(|x| x.name() == a.as_str()))
        {
            bail!("--arch {a}: unknown architecture; choose from x86_64, aarch64");
        }
        Ok(Arch::ALL
            .into_iter()
            .filter(|a| names.is_empty() || names.iter().any(|x| x == a.name()))
            .collect())
    }

    /// The architecture this program runs on.
    pub(crate) fn host() -> Arch {
        if cfg!(target_arch = "aarch64") {
            Arch::Aarch64
        } else {
            Arch::X86_64
        }
    }

    pub(crate) fn name(self) -> &'static str {
        match self {
            Arch::X86_64 => "x86_64",
            Arch::Aarch64 => "aarch64",
        }
    }

    pub(crate) fn triple(self) -> &'static str {
        match self {
            Arch::X86_64 => "x86_64-unknown-linux-gnu",
            Arch::Aarch64 => "aarch64-unknown-linux-gnu",
        }
    }

    /// Host packages (vm-lab.md §2). busybox-static serves the x86_64 guest
    /// and the cpio packing for both.
    pub(crate) fn packages(self) -> &'static [&'static str] {
        match self {
            Arch::X86_64 => &["qemu-system-x86", "busybox-static", "cpio"],
            Arch::Aarch64 => &[
                "qemu-system-arm",
                "gcc-aarch64-linux-gnu",
                "libc6-dev-arm64-cross",
                "busybox-static",
                "cpio",
            ],
        }
    }

    pub(crate) fn deb_arch(self) -> &'static str {
        match self {
            Arch::X86_64 => "amd64",
            Arch::Aarch64 => "arm64",
        }
    }

    /// The QEMU command for this architecture, up to the kernel arguments.
    /// QEMU for this architecture, under `timeout` seconds.
    pub(crate) fn qemu(self, timeout: u32) -> (Command, &'static str) {
        let mut c = Command::new("timeout");
        c.arg(timeout.to_string());
        match self {
            Arch::X86_64 => {
                c.args(["qemu-system-x86_64", "-M", "q35", "-cpu", "max"]);
                (c, "ttyS0")
            }
            Arch::Aarch64 => {
                // `max` with QARMA pointer authentication is 2.7x slower
                // under TCG (vm-lab.md pitfall 7).
                c.args([
                    "qemu-system-aarch64",
                    "-M",
                    "virt",
                    "-cpu",
                    "max,pauth-impdef=on",
                ]);
                (c, "ttyAMA0")
            }
        }
    }

    /// How long a vm-test guest may take. 900 s on aarch64: the five
    /// aarch64 guests share the host's CPUs under TCG and ended at 542 -
    /// 580 s of guest time in a full run (2 host CPUs), one still in its
    /// last scenario at 600 s; x86_64's ended by 490 s.
    fn vm_test_timeout(self) -> u32 {
        match self {
            Arch::X86_64 => 600,
            Arch::Aarch64 => 900,
        }
    }
}

pub struct Options {
    /// Kernel lines to boot ("6.1", "6.12"); all when empty.
    pub kernels: Vec<String>,
    /// Architectures ("x86_64", "aarch64"); all when empty.
    pub arches: Vec<String>,
}

pub(crate) fn lab_dir() -> PathBuf {
    workspace_root().join("target/vmlab")
}

/// One guest to boot.
struct Guest {
    arch: Arch,
    line: &'static str,
    kernel: PathBuf,
    /// The knob guest: the OOM sysctl scenarios (guest/knobs.sh), ending in
    /// a panic on purpose.
    knobs: bool,
}

impl Guest {
    fn name(&self) -> String {
        format!(
            "{}-{}{}",
            self.arch.name(),
            self.line,
            if self.knobs { "-knobs" } else { "" }
        )
    }
}

pub fn vm_test(opts: Options) -> anyhow::Result<()> {
    let start = Instant::now();
    if !is_root() {
        bail!("vm-test installs QEMU and downloads kernels with apt: run it as root");
    }
    if let Some(k) = opts
        .kernels
        .iter()
        .find(|k| !LINES.iter().any(|l| l.name == k.as_str()))
    {
        bail!(
            "--kernel {k}: unknown kernel line; choose from {}",
            LINES.iter().map(|l| l.name).collect::<Vec<_>>().join(", ")
        );
    }
    let arches = Arch::chosen(&opts.arches)?;
    let lines: Vec<&'static Line> = LINES
        .iter()
        .filter(|l| opts.kernels.is_empty() || opts.kernels.iter().any(|k| k == l.name))
        .collect();
    let mut missing: Vec<&str> = arches
        .iter()
        .flat_map(|a| a.packages().iter().copied())
        .filter(|p| !dpkg_installed(p))
        .collect();
    missing.sort_unstable();
    missing.dedup();
    if !missing.is_empty() {
        apt_install(&missing)?;
    }
    let lab = lab_dir();
    std::fs::create_dir_all(lab.join("out"))?;

    let mut passed = 0;
    let mut failed = 0;
    for arch in arches {
        let mut guests = Vec::new();
        for line in &lines {
            let apt = AptState::new(&lab, arch, line)?;
            let (kernel, version) = fetch_kernel(&apt)
                .with_context(|| format!("{} kernel {}", arch.name(), line.name))?;
            println!(
                "vm-test: {} kernel {}: {version}, {}",
                arch.name(),
                line.name,
                kernel.display()
            );
            guests.push(Guest {
                arch,
                line: line.name,
                kernel,
                knobs: false,
            });
        }
        // One knob guest per architecture, on the newest kernel asked for.
        if let Some(last) = guests.last() {
            let knobs = Guest {
                arch,
                line: last.line,
                kernel: last.kernel.clone(),
                knobs: true,
            };
            guests.push(knobs);
        }
        let (sysroot, busybox) = match arch {
            Arch::X86_64 => (None, host_busybox()?),
            Arch::Aarch64 => {
                let host = LINES
                    .iter()
                    .find(|l| l.name == HOST_LINE)
                    .expect("host line");
                let (s, b) = arm64_parts(&AptState::new(&lab, arch, host)?)?;
                (Some(s), b)
            }
        };
        println!(
            "vm-test: building static oomwatch and oomwatch-hog for {}",
            arch.triple()
        );
        let bins = build_static(arch, sysroot.as_deref())?;
        let initrd = lab.join(format!("out/initrd-{}.gz", arch.name()));
        make_initrd(&bins, &busybox, &initrd)?;

        // This architecture's guests at once: one vCPU each, the host has
        // two cores.
        let boots: Vec<(&Guest, PathBuf, Child)> = guests
            .iter()
            .map(|g| {
                let log = lab.join(format!("out/{}.log", g.name()));
                boot(g, &initrd, &log).map(|c| (g, log, c))
            })
            .collect::<anyhow::Result<_>>()?;
        println!(
            "vm-test: booted {} {} guest(s) under TCG; each runs 7 scenarios, the knob guest 7 others (a few minutes)",
            boots.len(),
            arch.name()
        );
        for (g, log, mut child) in boots {
            let st = child.wait().context("wait for qemu")?;
            let text = std::fs::read(&log)
                .map(|b| String::from_utf8_lossy(&b).into_owned())
                .unwrap_or_default();
            let results = parse(&text);
            println!(
                "\n== {}, kernel {} ({}){}",
                g.arch.name(),
                g.line,
                results.uname,
                if g.knobs { ", OOM sysctls" } else { "" }
            );
            if !st.success() || !results.ended {
                println!(
                    "   FAIL the guest did not finish (qemu {st}); serial log: {}",
                    log.display()
                );
                failed += 1;
            }
            let (p, f) = if g.knobs {
                judge_knobs(&results, &text)
            } else {
                judge(&results, &log)
            };
            passed += p;
            failed += f;
            if !g.knobs {
                save_reports(&results, g.arch, &lab.join("out/reports"))?;
            }
        }
    }
    println!(
        "\n{passed} passed, {failed} failed ({:.0} s)",
        start.elapsed().as_secs_f64()
    );
    if failed > 0 {
        bail!(
            "{failed} guest check(s) failed; serial logs in {}/out",
            lab.display()
        );
    }
    Ok(())
}

/// Prints one PASS/FAIL line per check of one guest's results; returns
/// (passed, failed).
fn judge(results: &Results, log: &Path) -> (u32, u32) {
    let mut t = Tally::default();
    print_rules(results);
    check_self_check(results, log, &mut t);
    check_direct_reclaim(results, &mut t);
    check_page_alloc_failures(results, &mut t);
    check_episodes(results, &mut t);
    check_kernel_points(results, &mut t);
    check_page_fault_ooms(results, &mut t);
    check_slowpath_retries(results, &mut t);
    print_oom_starts(results);
    check_hot_probes(results, &mut t);
    check_task_iterator(results, &mut t);
    check_scenarios(results, &mut t);
    check_selftest(results, &mut t);
    (t.passed, t.failed)
}

/// `oomwatch selftest` in the guest: as root on cgroup v2 nothing needs to
/// be skipped, so every scenario must pass (predicted, kernel, eBPF and
/// replay agree), and where the daemon hooked `oom_badness` the kernel's
/// own points must be there too.
fn check_selftest(results: &Results, t: &mut Tally) {
    let Some((exit, json)) = &results.selftest else {
        return t.fail("selftest: did not run");
    };
    let Some(j) = json else {
        return t.fail(format!("selftest: exit {exit}, no JSON report"));
    };
    let hooked = hooked(&results.kernel_hooks(), "oom_badness");
    let scenarios = j["scenarios"].as_array().cloned().unwrap_or_default();
    let mut bad = Vec::new();
    for s in &scenarios {
        let name = s["name"].as_str().unwrap_or("?");
        if s["status"] != "passed" {
            bad.push(format!("{name} {}: {}", s["status"], s["reason"]));
        } else if hooked && !s["kernel_points"]["unavailable"].is_null() {
            bad.push(format!(
                "{name}: kernel points unavailable: {}",
                s["kernel_points"]["unavailable"]
            ));
        }
    }
    if *exit == 0 && !scenarios.is_empty() && bad.is_empty() {
        t.pass(format!(
            "selftest: {} scenarios passed ({}){}",
            scenarios.len(),
            scenarios
                .iter()
                .filter_map(|s| s["name"].as_str())
                .collect::<Vec<_>>()
                .join(" "),
            if hooked {
                ", each with the kernel's own points"
            } else {
                ""
            }
        ));
    } else {
        t.fail(format!(
            "selftest: exit {exit}, {} scenarios; {}",
            scenarios.len(),
            bad.join("; ")
        ));
    }
}

/// The rules `oomwatch check` found for the guest's kernel, and what its
/// tasks said of the rss counters.
fn print_rules(results: &Results) {
    let Some(r) = results.check.as_ref().map(|c| &c["rules"]) else {
        return println!("   info: no `oomwatch check --json` report");
    };
    println!(
        "   info: rules Linux {} ({}); oom_badness reads rss as {}, from {}",
        r["version"].as_str().unwrap_or("?"),
        r["version_from"].as_str().unwrap_or("?"),
        r["rss_counters"].as_str().unwrap_or("?"),
        r["rss_counters_from"].as_str().unwrap_or("?")
    );
}

/// Checks passed and failed so far, each printed as its `PASS`/`FAIL` line.
#[derive(Debug, Default)]
struct Tally {
    passed: u32,
    failed: u32,
}

impl Tally {
    fn pass(&mut self, msg: impl std::fmt::Display) {
        println!("   PASS {msg}");
        self.passed += 1;
    }

    fn fail(&mut self, msg: impl std::fmt::Display) {
        println!("   FAIL {msg}");
        self.failed += 1;
    }
}

impl Results {
    /// A scraped metric sample, 0 when the daemon did not export it.
    fn metric(&self, key: &str) -> f64 {
        self.metrics.get(key).copied().unwrap_or(0.0)
    }

    /// The kernel hooks the daemon reported, each as `{function,path}`.
    fn kernel_hooks(&self) -> Vec<String> {
        self.metrics
            .keys()
            .filter_map(|k| k.strip_prefix("oomwatch_kernel_hook_info"))
            .map(|l| {
                l.replace("function=", "")
                    .replace("path=", "")
                    .replace('"', "")
            })
            .collect()
    }
}

/// Whether kernel function `f` is among `hooks`, attached (not `off`).
fn hooked(hooks: &[String], f: &str) -> bool {
    hooks
        .iter()
        .any(|h| h.starts_with(&format!("{{{f},")) && !h.ends_with(",off}"))
}

/// The daemon's self-check: every oom_score it recomputed matched the kernel's.
fn check_self_check(results: &Results, log: &Path, t: &mut Tally) {
    match results.selfcheck {
        Some((0, explained)) => t.pass(format!(
            "self-check: every oom_score the daemon recomputed matched the \
             kernel's ({explained} differences explained)"
        )),
        Some((m, _)) => t.fail(format!(
            "self-check: {m} unexplained oom_score difference(s); see DAEMONLOG in {}",
            log.display()
        )),
        None => {}
    }
}

/// The eBPF histogram counted the host-wide OOM's direct reclaim stalls.
fn check_direct_reclaim(results: &Results, t: &mut Tally) {
    // The host-wide OOM went through the page allocator's direct reclaim
    // first: oomwatch's kernel-side histogram must have counted it.
    let direct = |m: &str| {
        results
            .metrics
            .get(&format!(
                "oomwatch_reclaim_stall_seconds_{m}{{kind=\"direct\"}}"
            ))
            .copied()
    };
    match (direct("count"), direct("sum")) {
        (Some(n), Some(s)) if n >= 1.0 => t.pass(format!(
            "direct reclaim stalls counted by eBPF: {n} ({s:.3} s in all)"
        )),
        (n, _) => t.fail(format!("direct reclaim stalls counted by eBPF: {n:?}")),
    }
}

/// Failed page allocations, order 9 among them, counted and sampled by eBPF.
fn check_page_alloc_failures(results: &Results, t: &mut Tally) {
    let fails: f64 = results
        .metrics
        .iter()
        .filter(|(k, _)| k.starts_with("oomwatch_page_alloc_failures_total"))
        .map(|(_, v)| v)
        .sum();
    // With THP on and no defrag, the host-wide OOM's order-9 faults
    // fail and fall back: counted in the kernel, sampled on the ring.
    let order9 = results
        .metrics
        .get("oomwatch_page_alloc_failures_total{order=\"9\"}")
        .copied()
        .unwrap_or(0.0);
    let sample = results
        .alloc_fail
        .as_deref()
        .and_then(|a| a.split(';').find(|s| s.contains("order=9")))
        .map(str::trim);
    match sample {
        Some(sample) if order9 >= 1.0 => t.pass(format!(
            "failed page allocations counted by eBPF: {fails} ({order9} of order 9); one: {}",
            sample.split_once(' ').map_or(sample, |(_, s)| s)
        )),
        _ => t.fail(format!(
            "failed page allocations: {fails} counted ({order9} of order 9), samples: {}",
            results.alloc_fail.as_deref().unwrap_or("none")
        )),
    }
}

/// Every kill became an episode whose report replay agrees, under both constraints.
fn check_episodes(results: &Results, t: &mut Tally) {
    // Every kill became an episode with the kernel's report, and the
    // model, replaying each report's own table, picked the same task.
    let metric = |k: &str| results.metric(k);
    let replays = |o: &str| metric(&format!("oomwatch_report_replays_total{{outcome=\"{o}\"}}"));
    let kills = metric("oomwatch_oom_kills_total");
    let global = metric("oomwatch_oom_kills_by_constraint_total{constraint=\"CONSTRAINT_NONE\"}");
    let memcg = metric("oomwatch_oom_kills_by_constraint_total{constraint=\"CONSTRAINT_MEMCG\"}");
    let group = replays("oom_group");
    // A victim already dying when it entered the OOM killer is marked
    // without a report, by design (task_will_free_mem(current)).
    let exiting = replays("exiting");
    if kills > 0.0 && replays("agree") + group + exiting == kills && global >= 1.0 && memcg >= 1.0 {
        t.pass(format!(
            "episodes: {kills} kills, each with its report or its oom.group victim's ({memcg} CONSTRAINT_MEMCG, {global} CONSTRAINT_NONE, {group} oom_group, {exiting} marked itself while exiting); replays agree {}/{}",
            replays("agree"),
            kills - group - exiting
        ));
    } else {
        t.fail(format!(
            "episodes: {kills} kills; replays agree {} disagree {} unreplayable {} no report {} oom_group {group} exiting {exiting}; constraints memcg {memcg} none {global}",
            replays("agree"),
            replays("disagree"),
            replays("unreplayable"),
            replays("no_report")
        ));
    }
}

/// The kernel's own oom_badness scores, hooked, all equal the model's.
fn check_kernel_points(results: &Results, t: &mut Tally) {
    // The kernel's own scan (fexit oom_badness, or its kprobe twin): every
    // task it scored, compared with the model over the report's row.
    let hooks = results.kernel_hooks();
    let equal = results.metric("oomwatch_kernel_points_checks_total{outcome=\"equal\"}");
    let differ = results.metric("oomwatch_kernel_points_checks_total{outcome=\"differ\"}");
    // Another task than the scanner, running between the scan and the table.
    let changed = results.metric("oomwatch_kernel_points_checks_total{outcome=\"changed\"}");
    if hooked(&hooks, "out_of_memory")
        && hooked(&hooks, "oom_badness")
        && equal >= 1.0
        && differ == 0.0
    {
        t.pass(format!(
            "kernel points: {equal} tasks scored by the kernel's oom_badness, each equal to the model's{} ({})",
            if changed > 0.0 {
                format!(" ({changed} more changed between the scan and the report)")
            } else {
                String::new()
            },
            hooks.join(" ")
        ));
    } else {
        t.fail(format!(
            "kernel points: equal {equal}, differ {differ}; hooks {}",
            hooks.join(" ")
        ));
    }
}

/// OOM kills from inside page faults, seen in reports and the fault hooks.
fn check_page_fault_ooms(results: &Results, t: &mut Tally) {
    // Page-fault OOMs: the hogs' OOMs all come from their page faults (the
    // reports' call traces say so); the pagefault scenario's fault returns
    // VM_FAULT_OOM (hooked where exceptions:page_fault_user is missing) and
    // reaches pagefault_out_of_memory().
    let hooks = results.kernel_hooks();
    let hooked = |f: &str| hooked(&hooks, f);
    let pf = |s: &str| results.metric(&format!("oomwatch_page_fault_ooms_total{{source=\"{s}\"}}"));
    let (report, vm_fault, pf_oom) = (
        pf("report"),
        pf("vm_fault_oom"),
        pf("pagefault_out_of_memory"),
    );
    let hooks_ok = (!hooked("pagefault_out_of_memory") || pf_oom >= 1.0)
        && (!hooked("handle_mm_fault") || vm_fault >= 1.0);
    if report >= 1.0 && hooks_ok && hooked("pagefault_out_of_memory") {
        t.pass(format!(
            "page-fault OOMs: {report} kills from inside a fault (report call traces), {pf_oom} pagefault_out_of_memory calls, {vm_fault} VM_FAULT_OOM returns{}",
            if hooked("handle_mm_fault") {
                " (handle_mm_fault hooked)"
            } else {
                " (handle_mm_fault not hooked: exceptions:page_fault_user counts faults)"
            }
        ));
    } else {
        t.fail(format!(
            "page-fault OOMs: report {report}, pagefault_out_of_memory {pf_oom}, vm_fault_oom {vm_fault}; hooks {}",
            hooks.join(" ")
        ));
    }
}

/// The allocator slowpath's reclaim-zone retry decisions reached the metrics.
fn check_slowpath_retries(results: &Results, t: &mut Tally) {
    // The allocator slowpath's retry decisions reached the metrics: the
    // host-wide OOM went through should_reclaim_retry's zone checks.
    let retry = |c: &str, d: &str| {
        results.metric(&format!(
            "oomwatch_slowpath_retry_decisions_total{{check=\"{c}\",decision=\"{d}\"}}"
        ))
    };
    let zone_checks = retry("reclaim_zone", "retry") + retry("reclaim_zone", "give_up");
    let compaction_runs =
        results.metric("oomwatch_reclaim_stall_seconds_count{kind=\"compaction\"}");
    if zone_checks >= 1.0 {
        t.pass(format!(
            "slowpath retry decisions: reclaim zone checks retry {} give up {}; compaction retry {} give up {}; compaction runs {compaction_runs}",
            retry("reclaim_zone", "retry"),
            retry("reclaim_zone", "give_up"),
            retry("compaction", "retry"),
            retry("compaction", "give_up")
        ));
    } else {
        t.fail("slowpath retry decisions: no oom:reclaim_retry_zone decision counted");
    }
}

/// Not a check: the OOM starts the daemon saw, as an `info:` line.
fn print_oom_starts(results: &Results) {
    if let Some(st) = &results.starts {
        println!("   info: OOM starts the daemon saw: {st}");
    }
}

/// `--hot-probes pressure`: memory pressure attached the hot programs, kept to the end.
fn check_hot_probes(results: &Results, t: &mut Tally) {
    // `--hot-probes pressure` on this kernel: the scenarios' reclaim attached
    // the hot programs (by PSI or the reclaim tracepoints, whichever this
    // kernel has), and the hour's hold kept them to the end.
    let hot = results.hot_probes.as_deref().unwrap_or("");
    let attached_now = results.metrics.get("oomwatch_hot_probes_attached") == Some(&1.0);
    if hot.starts_with("attached=1 detached=0 first: memory pressure") && attached_now {
        t.pass(format!(
            "hot probes attached by memory pressure: {}",
            hot.split_once("first: ").map_or(hot, |(_, w)| w)
        ));
    } else {
        t.fail(format!(
            "hot probes attached by memory pressure: {hot:?}, attached at the end: {attached_now}"
        ));
    }
}

/// The daemon's snapshots came through the BPF task iterator.
fn check_task_iterator(results: &Results, t: &mut Tally) {
    // The task iterator on this guest kernel: the daemon takes it at start
    // (`--source auto`, memory to spare), so the self-check above compared
    // the kernel's oom_score with the model fed by the iterator; predictions
    // take it unless memory is short (below 128 MiB available).
    let daemon_bpf = results
        .metrics
        .contains_key("oomwatch_snapshot_source_info{source=\"bpf\"}");
    let via = results
        .scenarios
        .iter()
        .filter(|s| s.source.as_deref() == Some("bpf"))
        .count();
    if daemon_bpf {
        t.pass(format!(
            "task iterator: the daemon's snapshots came through it; {via} of {} predictions too",
            results.scenarios.len()
        ));
    } else {
        t.fail(format!(
            "task iterator: the daemon read /proc (its log says why); {via} of {} predictions used it",
            results.scenarios.len()
        ));
    }
}

/// Each scenario: prediction, kernel victim, eBPF victim and replay agree.
fn check_scenarios(results: &Results, t: &mut Tally) {
    for r in &results.scenarios {
        if r.passed() {
            t.pass(r);
        } else {
            t.fail(r);
        }
    }
}

/// The knob guest: each OOM sysctl scenario, what oomwatch predicted (its
/// `knobs` object) against what the kernel did. Returns (passed, failed).
fn judge_knobs(results: &Results, log_text: &str) -> (u32, u32) {
    let mut t = Tally::default();
    let scn = |name: &str| results.scenarios.iter().find(|s| s.name == name);
    let action = |s: &Scenario| {
        s.preds
            .last()
            .and_then(|p| p["knobs"]["action"]["kind"].as_str())
            .unwrap_or("none")
            .to_owned()
    };
    // predicted (or, for the allocating task, nobody to predict), kernel and
    // eBPF name the scenario's task.
    let same = |s: &Scenario, predicted: bool| {
        s.kernel.is_some()
            && s.kernel == s.expected_pid()
            && s.ebpf == s.kernel
            && (!predicted || s.predicted == s.kernel)
    };
    let mut check = |name: &str, f: &dyn Fn(&Scenario) -> Result<String, String>| match scn(name) {
        None => t.fail(format!("{name}: the scenario did not run")),
        Some(s) => match f(s) {
            Ok(m) => t.pass(format!("{name}: {m}")),
            Err(m) => t.fail(format!("{name}: {m}; {s}; knob lines {:?}", s.knob)),
        },
    };
    check("allocating-memcg", &|s| {
        (same(s, true) && action(s) == "kill_victim")
            .then(|| "oom_kill_allocating_task=1 left the memcg OOM to the scan, as predicted (kill_victim)".into())
            .ok_or_else(|| format!("action {}", action(s)))
    });
    check("dump-tasks-0", &|s| {
        let table = s.report.iter().any(|l| l.contains("[  pid  ]"));
        let knob = s.preds.last().map(|p| &p["knobs"]);
        let said = knob.is_some_and(|k| {
            k["oom_dump_tasks"]["value"] == 0
                && k["warnings"].to_string().contains("oom_dump_tasks")
        });
        let judged = s
            .replay
            .as_ref()
            .is_some_and(|r| r.2 == "AGREE" || r.2 == "DISAGREE");
        (same(s, true) && !table && said && !judged)
            .then(|| {
                "no task table in the report, predicted and said so; replay did not judge".into()
            })
            .ok_or_else(|| format!("table {table}, warned {said}, replay judged {judged}"))
    });
    check("overcommit-2", &|s| {
        let kills = s.knob.iter().find_map(|l| pid_field(l, "kills="));
        let enforced = s
            .preds
            .last()
            .is_some_and(|p| p["knobs"]["commit"]["enforced"] == true);
        (kills == Some(0) && enforced)
            .then(|| "a 300 MiB hog refused (ENOMEM), no kill; the prediction said the commit limit is enforced".into())
            .ok_or_else(|| format!("kills {kills:?}, enforced {enforced}"))
    });
    check("watermarks", &|s| {
        let seen: Vec<(Option<u64>, bool)> = s
            .preds
            .iter()
            .map(|p| {
                let w = &p["knobs"]["watermarks"];
                let zones = w["zones"].as_array().cloned().unwrap_or_default();
                (
                    w["min_free_kbytes"].as_u64(),
                    !zones.is_empty() && zones.iter().all(|z| z["kernel_agrees"] == true),
                )
            })
            .collect();
        (seen == [(Some(8192), true), (Some(3000), true)])
            .then(|| "every zone's min watermark and lowmem reserve derived as /proc/zoneinfo shows them, at min_free_kbytes 8192 and 3000".into())
            .ok_or_else(|| format!("(min_free_kbytes, zones agree) {seen:?}"))
    });
    check("allocating-global", &|s| {
        // Whichever task's allocation failed (a hog, or a process of the
        // guest) is killed without a scan; one the kernel may not kill (the
        // daemon, at -1000) falls back to the scan. Each report's kill
        // line must follow that rule.
        let (kills, broken) = allocating_kills(&s.report);
        // The scenario's victim is the report's first kill.
        let first = s.report.iter().find_map(|l| {
            let rest = l.split_once("Killed process ")?.1;
            rest.split_once(' ')?.0.parse::<i64>().ok()
        });
        let ok = action(s) == "kill_allocating_task"
            && kills > 0
            && broken.is_empty()
            && s.kernel.is_some()
            && s.kernel == first
            && s.ebpf == s.kernel;
        ok.then(|| {
            format!(
                "{kills} kill(s), each of the allocating task or, where it was unkillable, the scan's; predicted kill_allocating_task; eBPF saw the first"
            )
        })
        .ok_or_else(|| format!("action {}, kills {kills}, against the rule: {broken:?}", action(s)))
    });
    check("panic-memcg", &|s| {
        (same(s, true) && action(s) == "kill_victim")
            .then(|| "panic_on_oom=1 let the memcg OOM kill, as predicted".into())
            .ok_or_else(|| format!("action {}", action(s)))
    });
    const PANIC: &str =
        "Kernel panic - not syncing: Out of memory: system-wide panic_on_oom is enabled";
    check("panic-global", &|s| {
        let panicked = log_text.contains(PANIC) && !results.no_panic;
        (action(s) == "panic" && panicked)
            .then(|| "predicted a panic, and the kernel panicked".into())
            .ok_or_else(|| format!("action {}, console panic line {panicked}", action(s)))
    });
    (t.passed, t.failed)
}

/// Under `oom_kill_allocating_task`: each report's kill, against its
/// header. `(oom_kill_allocating_task)` kills must be of the invoking task
/// (same comm); other kills only where the kernel may not kill the invoking
/// task and so scans: at -1000, or the global init (PID 1, named on the
/// report's `CPU:` line). Returns (kills, the lines that break the rule).
fn allocating_kills(report: &[String]) -> (usize, Vec<String>) {
    // (comm, oom_score_adj, pid).
    let mut invoked: Option<(String, i64, Option<i64>)> = None;
    let (mut kills, mut broken) = (0, Vec::new());
    for l in report {
        let body = l.split_once("] ").map_or(l.as_str(), |(_, b)| b);
        if let Some((comm, rest)) = body.split_once(" invoked oom-killer") {
            let adj = pid_field(&rest.replace(',', " "), "oom_score_adj=").unwrap_or(0);
            invoked = Some((comm.to_owned(), adj, None));
        } else if let (Some(inv), true) = (invoked.as_mut(), body.starts_with("CPU: ")) {
            inv.2 = body
                .split_once(" PID: ")
                .and_then(|(_, r)| r.split_whitespace().next()?.parse().ok());
        } else if let Some((head, rest)) = body.split_once("Killed process ") {
            kills += 1;
            let comm = rest
                .split_once(" (")
                .and_then(|(_, r)| r.split_once(')'))
                .map(|(c, _)| c);
            let fine = match &invoked {
                Some((by, ..)) if head.contains("(oom_kill_allocating_task)") => {
                    comm == Some(by.as_str())
                }
                Some((_, adj, pid)) => *adj == -1000 || *pid == Some(1),
                None => false,
            };
            if !fine {
                broken.push(format!("{invoked:?} -> {body}"));
            }
        }
    }
    (kills, broken)
}

/// Keeps each scenario's kernel OOM report as a file, named by
/// architecture, kernel release and scenario, with a `#` header saying what
/// it is: replay fixtures (`oomwatch/tests/fixtures/guest-reports`).
fn save_reports(results: &Results, arch: Arch, dir: &Path) -> anyhow::Result<()> {
    std::fs::create_dir_all(dir)?;
    let release = results.uname.split_whitespace().next().unwrap_or("unknown");
    for s in results.scenarios.iter().filter(|s| !s.report.is_empty()) {
        let path = dir.join(format!("{}-{release}-{}.log", arch.name(), s.name));
        let text = format!(
            "# Kernel OOM report captured by `cargo xtask vm-test`: {} guest, Linux {release},\n\
             # scenario {} (its first kill; the kernel killed {}, the scenario expects {}).\n{}\n",
            arch.name(),
            s.name,
            s.name_of(s.kernel),
            s.expect,
            s.report.join("\n")
        );
        std::fs::write(&path, text).with_context(|| format!("write {}", path.display()))?;
    }
    Ok(())
}

/// A private apt state for one architecture and kernel line: its own
/// sources (that line's suites only), lists, status and cache, so the host's
/// apt and dpkg gain neither a foreign architecture nor another release.
/// Downloads of one architecture share a directory.
struct AptState {
    arch: Arch,
    debs: PathBuf,
    lab: PathBuf,
    config: PathBuf,
}

impl AptState {
    fn new(lab: &Path, arch: Arch, line: &Line) -> anyhow::Result<Self> {
        let debs = lab.join(format!("debs-{}", arch.name()));
        std::fs::create_dir_all(&debs)?;
        let dir = lab.join(format!("apt/{}-{}", arch.name(), line.name));
        for d in ["lists/partial", "cache/archives/partial", "sources.list.d"] {
            std::fs::create_dir_all(dir.join(d))?;
        }
        let status_file = dir.join("status");
        if !status_file.exists() {
            std::fs::write(&status_file, "")?;
        }
        let sources: String = line
            .suites
            .iter()
            .map(|(uri, suite)| format!("deb {uri} {suite} main\n"))
            .collect();
        let sources_file = dir.join("sources.list");
        let old = std::fs::read_to_string(&sources_file).unwrap_or_default();
        if old != sources {
            // Another line's lists must not linger.
            let _ = std::fs::remove_dir_all(dir.join("lists"));
            std::fs::create_dir_all(dir.join("lists/partial"))?;
            std::fs::write(&sources_file, &sources)?;
        }
        let config = dir.join("apt.conf");
        let d = dir.display();
        let a = arch.deb_arch();
        std::fs::write(
            &config,
            format!(
                "Dir::State::Lists \"{d}/lists\";\nDir::State::status \"{d}/status\";\n\
                 Dir::Cache \"{d}/cache\";\nDir::Etc::SourceList \"{d}/sources.list\";\n\
                 Dir::Etc::SourceParts \"{d}/sources.list.d\";\n\
                 APT::Architecture \"{a}\";\nAPT::Architectures {{ \"{a}\"; }};\n\
                 APT::Sandbox::User \"root\";\nAcquire::Languages \"none\";\nAcquire::Check-Valid-Until \"false\";\n"
            ),
        )?;
        let state = Self {
            arch,
            debs,
            lab: lab.to_path_buf(),
            config,
        };
        let has_lists = std::fs::read_dir(dir.join("lists"))?
            .flatten()
            .any(|e| e.path().is_file());
        if !has_lists {
            state.update()?;
        }
        Ok(state)
    }

    fn update(&self) -> anyhow::Result<()> {
        let mut u = self.command("apt-get");
        u.args(["update", "-q"]).stdout(Stdio::null());
        status(u)
    }

    fn command(&self, program: &str) -> Command {
        let mut c = Command::new(program);
        c.env("APT_CONFIG", &self.config);
        c
    }

    /// Every version of `pkg` in this state's suites, newest first, each
    /// with the suite that serves it (`apt-cache madison`).
    fn versions(&self, pkg: &str) -> anyhow::Result<Vec<(String, String)>> {
        let out = self
            .command("apt-cache")
            .args(["madison", pkg])
            .output()
            .context("apt-cache madison")?;
        let mut all: Vec<(String, String)> = Vec::new();
        for l in String::from_utf8_lossy(&out.stdout).lines() {
            let f: Vec<&str> = l.split('|').map(str::trim).collect();
            let (Some(ver), Some(src)) = (f.get(1), f.get(2)) else {
                continue;
            };
            let suite = src
                .split_whitespace()
                .nth(1)
                .and_then(|s| s.split('/').next())
                .unwrap_or("?");
            if !all.iter().any(|(v, _)| v == ver) {
                all.push((ver.to_string(), suite.to_string()));
            }
        }
        let newer = |a: &str, b: &str| {
            Command::new("dpkg")
                .args(["--compare-versions", a, "gt", b])
                .status()
                .is_ok_and(|s| s.success())
        };
        all.sort_by(|(a, _), (b, _)| {
            if newer(a, b) {
                std::cmp::Ordering::Less
            } else if newer(b, a) {
                std::cmp::Ordering::Greater
            } else {
                std::cmp::Ordering::Equal
            }
        });
        anyhow::ensure!(!all.is_empty(), "apt knows no {pkg} in this line's suites");
        Ok(all)
    }

    /// The first package that `pkg` (`name` or `name=version`) depends on
    /// whose name starts with `prefix`.
    fn depends(&self, pkg: &str, prefix: &str) -> Option<String> {
        let out = self
            .command("apt-cache")
            .args(["show", "--no-all-versions", pkg])
            .output()
            .ok()?;
        let text = String::from_utf8_lossy(&out.stdout);
        let deps = text.lines().find_map(|l| l.strip_prefix("Depends: "))?;
        deps.split(',')
            .flat_map(|d| d.split('|'))
            .map(|d| d.split_whitespace().next().unwrap_or(""))
            .find(|d| d.starts_with(prefix))
            .map(str::to_owned)
    }

    /// Downloads `pkg` (`name` or `name=version`) once; returns its .deb.
    fn download(&self, pkg: &str) -> anyhow::Result<PathBuf> {
        let name = pkg.split('=').next().unwrap_or(pkg);
        let find = || {
            find_file(&self.debs, |n| {
                n.starts_with(&format!("{name}_")) && n.ends_with(".deb")
            })
        };
        if let Some(d) = find() {
            return Ok(d);
        }
        println!("vm-test: apt-get download {pkg}");
        let get = || {
            let mut dl = self.command("apt-get");
            dl.args(["download", "-q", pkg])
                .current_dir(&self.debs)
                .stdout(Stdio::null());
            status(dl)
        };
        if get().is_err() {
            // Lists older than the archive name files it no longer has.
            self.update()?;
            get()?;
        }
        find().with_context(|| format!("no .deb for {pkg} after apt-get download"))
    }

    /// Unpacks `deb` (once) into the lab; returns the directory.
    fn unpack(&self, deb: &Path) -> anyhow::Result<PathBuf> {
        let stem = deb
            .file_stem()
            .and_then(|s| s.to_str())
            .context("deb file name")?;
        let dir = self.lab.join("unpacked").join(stem);
        if !dir.exists() {
            std::fs::create_dir_all(&dir)?;
            let mut x = Command::new("dpkg-deb");
            x.arg("-x").arg(deb).arg(&dir);
            status(x)?;
        }
        Ok(dir)
    }
}

/// Downloads (once) the newest cloud kernel of the line `apt` serves;
/// returns its vmlinuz and a line naming its version and suite. The meta
/// package depends on `linux-image-<abi>`, which holds `boot/vmlinuz-*` up
/// to 7.1 and is itself a metapackage from 6.19 on, pointing at
/// `linux-binary-<abi>` (`usr/lib/modules/<abi>/vmlinuz` from 7.2).
fn fetch_kernel(apt: &AptState) -> anyhow::Result<(PathBuf, String)> {
    let meta = format!("linux-image-cloud-{}", apt.arch.deb_arch());
    let mut failures = Vec::new();
    // The newest first; a mirror may not carry every file its lists name
    // yet (seen: bullseye-security's arm64 image), then the one before.
    for (version, suite) in apt.versions(&meta)?.into_iter().take(3) {
        match fetch_kernel_version(apt, &meta, &version) {
            Ok((k, pkg)) => {
                if !failures.is_empty() {
                    println!("vm-test: took {pkg}: {}", failures.join("; "));
                }
                return Ok((k, format!("{pkg} ({suite})")));
            }
            Err(e) => failures.push(format!("{meta} {version} ({suite}) failed: {e:#}")),
        }
    }
    anyhow::bail!("{}", failures.join("; "))
}

fn fetch_kernel_version(
    apt: &AptState,
    meta: &str,
    version: &str,
) -> anyhow::Result<(PathBuf, String)> {
    let image = apt
        .depends(&format!("{meta}={version}"), "linux-image-")
        .with_context(|| format!("{meta} {version} depends on no linux-image-*"))?;
    let dir = apt.unpack(&apt.download(&image)?)?;
    if let Some(k) = find_vmlinuz(&dir) {
        return Ok((k, image));
    }
    let binary = apt
        .depends(&image, "linux-binary-")
        .with_context(|| format!("{image} has no vmlinuz and depends on no linux-binary-*"))?;
    let dir = apt.unpack(&apt.download(&binary)?)?;
    let k = find_vmlinuz(&dir).with_context(|| {
        format!("neither boot/vmlinuz-* nor usr/lib/modules/*/vmlinuz in {binary}")
    })?;
    Ok((k, binary))
}

/// The kernel image in an unpacked package, in either layout.
fn find_vmlinuz(dir: &Path) -> Option<PathBuf> {
    find_file(&dir.join("boot"), |n| n.starts_with("vmlinuz-")).or_else(|| {
        std::fs::read_dir(dir.join("usr/lib/modules"))
            .ok()?
            .flatten()
            .map(|e| e.path().join("vmlinuz"))
            .find(|p| p.is_file())
    })
}

/// The first entry of `dir` whose file name satisfies `want`.
fn find_file(dir: &Path, want: impl Fn(&str) -> bool) -> Option<PathBuf> {
    std::fs::read_dir(dir)
        .ok()?
        .flatten()
        .map(|e| e.path())
        .find(|p| p.file_name().and_then(|n| n.to_str()).is_some_and(&want))
}

fn host_busybox() -> anyhow::Result<PathBuf> {
    ["/bin/busybox", "/usr/bin/busybox"]
        .iter()
        .map(PathBuf::from)
        .find(|p| p.exists())
        .context("no busybox: apt-get install busybox-static")
}

/// For aarch64: a Rust sysroot holding Debian's arm64 standard library (the
/// exact version of the host's `rustc-web`, which rejects any other) next to
/// the host's own, and arm64 busybox.
fn arm64_parts(apt: &AptState) -> anyhow::Result<(PathBuf, PathBuf)> {
    let sysroot = arm64_sysroot_in(apt)?;
    let busybox = apt
        .unpack(&apt.download("busybox-static")?)?
        .join("bin/busybox");
    anyhow::ensure!(busybox.exists(), "no bin/busybox in arm64 busybox-static");
    Ok((sysroot, busybox))
}

/// The aarch64 Rust sysroot (see [`arm64_parts`]), for builds outside the
/// guest lab (`cargo xtask dist`).
pub(crate) fn arm64_sysroot() -> anyhow::Result<PathBuf> {
    let host = LINES
        .iter()
        .find(|l| l.name == HOST_LINE)
        .expect("host line");
    arm64_sysroot_in(&AptState::new(&lab_dir(), Arch::Aarch64, host)?)
}

fn arm64_sysroot_in(apt: &AptState) -> anyhow::Result<PathBuf> {
    let version = output_ok("dpkg-query", &["-W", "-f=${Version}", "rustc-web"])
        .filter(|v| !v.trim().is_empty())
        .context("Debian's rustc-web is not installed: run `cargo xtask setup`")?;
    let std = apt.unpack(&apt.download(&format!("libstd-rust-web-dev={}", version.trim()))?)?;
    let sysroot = apt.lab.join("sysroot-rust");
    let rustlib = sysroot.join("lib/rustlib");
    std::fs::create_dir_all(&rustlib)?;
    for (triple, from) in [
        (
            "aarch64-unknown-linux-gnu",
            std.join("usr/lib/rustlib/aarch64-unknown-linux-gnu"),
        ),
        (
            "x86_64-unknown-linux-gnu",
            PathBuf::from("/usr/lib/rustlib/x86_64-unknown-linux-gnu"),
        ),
    ] {
        let link = rustlib.join(triple);
        let _ = std::fs::remove_file(&link);
        std::os::unix::fs::symlink(&from, &link)
            .with_context(|| format!("link {} -> {}", link.display(), from.display()))?;
    }
    Ok(sysroot)
}

/// The newest kernel of `line` for `arch` (downloaded once), and its
/// version.
pub(crate) fn kernel_for(arch: Arch, line: &str) -> anyhow::Result<(PathBuf, String)> {
    let l = LINES
        .iter()
        .find(|l| l.name == line)
        .with_context(|| format!("no kernel line {line}"))?;
    let apt = AptState::new(&lab_dir(), arch, l)?;
    fetch_kernel(&apt).with_context(|| format!("{} kernel {line}", arch.name()))
}

/// Static (crt-static) oomwatch and oomwatch-hog: the guest has no libc.
/// Built like the packages (`dist::static_target_dir`, the same flags), so
/// neither build invalidates the host's and `cargo xtask dist` after
/// `vm-test` recompiles only the workspace's own crates.
fn build_static(arch: Arch, sysroot: Option<&Path>) -> anyhow::Result<Vec<PathBuf>> {
    let target_dir = crate::dist::static_target_dir();
    let flags = crate::dist::release_flags()?;
    crate::dist::claim_target_dir(&target_dir, &workspace_root())?;
    let mut c = static_build(arch, sysroot, &target_dir, &flags);
    c.args(["--package", "oomwatch-tests", "--bins"]);
    status(c)?;
    let dir = target_dir.join(arch.triple()).join("release");
    Ok(vec![dir.join("oomwatch"), dir.join("oomwatch-hog")])
}

/// `cargo build --release --target <arch>` of static (crt-static)
/// binaries into `target_dir`, with `flags` added to the target's rustflags;
/// the caller names the packages. aarch64 needs the sysroot of
/// [`arm64_sysroot`] and Debian's cross gcc.
pub(crate) fn static_build(
    arch: Arch,
    sysroot: Option<&Path>,
    target_dir: &Path,
    flags: &[String],
) -> Command {
    let triple = arch.triple();
    let env_triple = triple.to_uppercase().replace('-', "_");
    let mut c = cargo();
    c.args(["build", "--release", "--target", triple])
        .env("CARGO_TARGET_DIR", target_dir);
    // Only for the target: build scripts and proc macros cannot be static,
    // and the eBPF object is built for bpfel, untouched.
    let mut all = vec!["-C".to_owned(), "target-feature=+crt-static".to_owned()];
    if let Some(s) = sysroot {
        all.extend(["--sysroot".to_owned(), s.display().to_string()]);
        // Debian's rustc (1.96, matching the arm64 std); rustup's proxy
        // would shadow it on PATH.
        c.env("RUSTC", "/usr/bin/rustc").env(
            format!("CARGO_TARGET_{env_triple}_LINKER"),
            "aarch64-linux-gnu-gcc",
        );
    }
    all.extend(flags.iter().cloned());
    c.env(
        format!("CARGO_TARGET_{env_triple}_RUSTFLAGS"),
        all.join(" "),
    );
    c
}

fn make_initrd(bins: &[PathBuf], busybox: &Path, out: &Path) -> anyhow::Result<()> {
    let root = lab_dir().join("rootfs");
    let _ = std::fs::remove_dir_all(&root);
    for d in ["bin", "proc", "sys", "dev", "tmp"] {
        std::fs::create_dir_all(root.join(d))?;
    }
    std::fs::copy(busybox, root.join("bin/busybox")).context("copy busybox")?;
    for b in bins {
        let name = b.file_name().context("binary name")?;
        std::fs::copy(b, root.join("bin").join(name))
            .with_context(|| format!("copy {}", b.display()))?;
    }
    let init = root.join("init");
    std::fs::write(&init, INIT)?;
    std::fs::write(root.join("knobs.sh"), KNOBS)?;
    std::fs::set_permissions(
        &init,
        <std::fs::Permissions as std::os::unix::fs::PermissionsExt>::from_mode(0o755),
    )?;
    let mut pack = Command::new("sh");
    pack.arg("-c")
        .arg("cd \"$1\" && find . | cpio -o -H newc --quiet | gzip -1 > \"$2\"")
        .args(["sh", &root.to_string_lossy(), &out.to_string_lossy()]);
    status(pack)?;
    let _ = std::fs::remove_dir_all(&root);
    Ok(())
}

/// Starts one guest; its serial console goes to `log`.
fn boot(g: &Guest, initrd: &Path, log: &Path) -> anyhow::Result<Child> {
    let _ = std::fs::remove_file(log);
    let (mut c, console) = g.arch.qemu(g.arch.vm_test_timeout());
    // Never KVM here: vm-lab.md §1.
    c.args(["-accel", "tcg", "-m", "256", "-smp", "1", "-nodefaults"])
        .args(["-display", "none", "-no-reboot"])
        .arg("-serial")
        .arg(format!("file:{}", log.display()))
        .arg("-kernel")
        .arg(&g.kernel)
        .arg("-initrd")
        .arg(initrd)
        .arg("-append")
        .arg(format!(
            "console={console} panic=-1 oops=panic quiet loglevel=4{}",
            if g.knobs { " oomwatch.knobs" } else { "" }
        ))
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .context("start qemu")
}

#[derive(Debug, Default)]
struct Scenario {
    name: String,
    expect: String,
    /// Hog name → pid.
    hogs: Vec<(String, i64)>,
    predicted: Option<i64>,
    /// Where `oomwatch predict` read the processes ("bpf" or "proc").
    source: Option<String>,
    predict_error: Option<String>,
    kernel: Option<i64>,
    ebpf: Option<i64>,
    /// The kernel's OOM report of the first kill (dmesg lines).
    report: Vec<String>,
    /// For a `memory.oom.group` scenario: kills oomwatch saw in it.
    group_killed: Option<i64>,
    /// `oomwatch replay` run in the guest on the scenario's kernel log: its
    /// exit status, the first report's killed pid and verdict, its summary.
    replay: Option<(i64, Option<i64>, String, String)>,
    /// Every `oomwatch predict --json` of the scenario, in order.
    preds: Vec<serde_json::Value>,
    /// The knob guest's `KNOB` lines: sysctls set, and what was seen.
    knob: Vec<String>,
}

impl Scenario {
    fn name_of(&self, pid: Option<i64>) -> String {
        match pid {
            None => "none".into(),
            Some(p) => self
                .hogs
                .iter()
                .find(|(_, q)| *q == p)
                .map(|(n, _)| n.clone())
                .unwrap_or_else(|| format!("pid {p}")),
        }
    }

    fn expected_pid(&self) -> Option<i64> {
        self.hogs
            .iter()
            .find(|(n, _)| *n == self.expect)
            .map(|(_, p)| *p)
    }

    fn passed(&self) -> bool {
        self.kernel.is_some()
            && self.predicted == self.kernel
            && self.ebpf == self.kernel
            && self.kernel == self.expected_pid()
            // memory.oom.group: every task of the group died with the victim.
            && self
                .group_killed
                .is_none_or(|n| n == self.hogs.len() as i64)
            // `oomwatch replay` in the guest: no report disagrees, and the
            // first one names the kernel's victim and agrees.
            && self.replay.as_ref().is_some_and(|(exit, killed, verdict, _)| {
                *exit == 0 && *killed == self.kernel && verdict == "AGREE"
            })
    }
}

impl std::fmt::Display for Scenario {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{:<15} predicted {:<6} kernel killed {:<6} eBPF saw {:<6} (scenario expects {})",
            self.name,
            format!(
                "{}{}",
                self.name_of(self.predicted),
                self.source
                    .as_deref()
                    .map_or(String::new(), |s| format!(" ({s})"))
            ),
            self.name_of(self.kernel),
            self.name_of(self.ebpf),
            self.expect
        )?;
        if let Some(n) = self.group_killed {
            write!(f, "; oom.group kills seen {n} of {}", self.hogs.len())?;
        }
        match &self.replay {
            Some((exit, _, verdict, summary)) => {
                write!(f, "; replay {verdict} (exit {exit}: {summary})")?
            }
            None => write!(f, "; replay did not run")?,
        }
        if let Some(e) = &self.predict_error {
            write!(f, "; predict: {e}")?;
        }
        Ok(())
    }
}

#[derive(Debug, Default)]
struct Results {
    uname: String,
    /// The daemon's self-check over the run: (unexplained, explained)
    /// differences between the model's and the kernel's oom_score.
    selfcheck: Option<(u64, u64)>,
    /// The daemon's `STARTS` line: OOM starts it saw, by kind.
    starts: Option<String>,
    /// The daemon's logged allocation-failure samples: count, then the first few.
    alloc_fail: Option<String>,
    /// The daemon's hot-probe switches: `attached=N detached=N first: WHY`.
    hot_probes: Option<String>,
    /// Samples scraped from the daemon's /metrics at the end, `name{labels}` → value.
    metrics: HashMap<String, f64>,
    scenarios: Vec<Scenario>,
    ended: bool,
    /// The knob guest's host-wide OOM with panic_on_oom=1 did not panic.
    no_panic: bool,
    /// `oomwatch selftest --json` in the guest: its exit status and report.
    selftest: Option<(i64, Option<serde_json::Value>)>,
    /// `oomwatch check --json` at the start.
    check: Option<serde_json::Value>,
}

fn pid_field(s: &str, key: &str) -> Option<i64> {
    s.split_whitespace()
        .find_map(|w| w.strip_prefix(key))
        .and_then(|v| v.parse().ok())
}

/// The guest's `@@` lines (the final block, printed when no OOM can
/// interleave kernel messages with it).
fn parse(log: &str) -> Results {
    let mut r = Results::default();
    let mut by_name: HashMap<String, usize> = HashMap::new();
    for line in log.lines() {
        let Some(at) = line.find("@@ ") else { continue };
        let rest = &line[at + 3..];
        let (tag, rest) = rest.split_once(' ').unwrap_or((rest, ""));
        match tag {
            "UNAME" => r.uname = rest.to_owned(),
            "END" => r.ended = true,
            "STARTS" => r.starts = Some(rest.to_owned()),
            "ALLOCFAIL" => r.alloc_fail = Some(rest.to_owned()),
            "HOTPROBES" => r.hot_probes = Some(rest.to_owned()),
            // `name{labels}=value` pairs (spaces made `=` by the guest).
            "METRICS" => {
                for w in rest.split_whitespace() {
                    if let Some((k, v)) = w.rsplit_once('=') {
                        if let Ok(v) = v.parse() {
                            r.metrics.insert(k.to_owned(), v);
                        }
                    }
                }
            }
            "SELFCHECK" => {
                r.selfcheck = pid_field(rest, "mismatches=")
                    .zip(pid_field(rest, "explained="))
                    .map(|(m, e)| (m as u64, e as u64));
            }
            "SCN" => {
                let (name, rest) = rest.split_once(' ').unwrap_or((rest, ""));
                let expect = rest
                    .strip_prefix("expect=")
                    .and_then(|e| e.split_whitespace().next())
                    .unwrap_or("")
                    .to_owned();
                by_name.insert(name.to_owned(), r.scenarios.len());
                r.scenarios.push(Scenario {
                    name: name.to_owned(),
                    expect,
                    ..Default::default()
                });
            }
            "NOPANIC" => r.no_panic = true,
            "CHECK" => r.check = serde_json::from_str(rest).ok(),
            "SELFTEST" => {
                let (exit, json) = rest.split_once(' ').unwrap_or((rest, ""));
                r.selftest = Some((
                    pid_field(exit, "exit=").unwrap_or(-1),
                    serde_json::from_str(json).ok(),
                ));
            }
            "HOG" | "PRED" | "KILL" | "REPORT" | "GROUP" | "REPLAY" | "KNOB" => {
                let (scn, rest) = rest.split_once(' ').unwrap_or((rest, ""));
                let Some(s) = by_name.get(scn).map(|&i| &mut r.scenarios[i]) else {
                    continue;
                };
                match tag {
                    "HOG" => {
                        let mut w = rest.split_whitespace();
                        if let (Some(n), Some(p)) =
                            (w.next(), w.next().and_then(|p| p.parse().ok()))
                        {
                            s.hogs.push((n.to_owned(), p));
                        }
                    }
                    "REPORT" => s.report.push(rest.to_owned()),
                    "KNOB" => s.knob.push(rest.to_owned()),
                    "GROUP" => s.group_killed = pid_field(rest, "killed="),
                    "REPLAY" => {
                        let word = |k: &str| {
                            rest.split_whitespace()
                                .find_map(|w| w.strip_prefix(k))
                                .unwrap_or("")
                                .to_owned()
                        };
                        let summary = rest
                            .split_once(" report(s): ")
                            .map(|(n, s)| {
                                format!("{} report(s): {s}", n.rsplit(' ').next().unwrap_or(n))
                            })
                            .unwrap_or_default();
                        s.replay = Some((
                            pid_field(rest, "exit=").unwrap_or(-1),
                            pid_field(rest, "killed="),
                            word("verdict="),
                            summary,
                        ));
                    }
                    "PRED" => match serde_json::from_str::<serde_json::Value>(rest) {
                        Ok(j) => {
                            s.predicted = j["victim"]["tgid"].as_i64();
                            s.source = j["source"].as_str().map(str::to_owned);
                            s.preds.push(j);
                        }
                        Err(_) => s.predict_error = Some(rest.chars().take(200).collect()),
                    },
                    _ => {
                        s.kernel = pid_field(rest, "kernel=");
                        s.ebpf = pid_field(rest, "ebpf=");
                    }
                }
            }
            _ => {}
        }
    }
    r
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A guest's final `@@` block in which every check passes: one
    /// scenario, all hooks, counters and samples present.
    const PASSING_GUEST: &str = "\
@@ UNAME 6.12.117+deb12-cloud-amd64 x86_64 MemTotal: 220000 kB\n\
@@ SCN s1 expect=B adj -1000 on the largest\n\
@@ HOG s1 A 101 adj=-1000 mib=36\n\
@@ HOG s1 B 102 adj=0 mib=14\n\
@@ PRED s1 {\"source\": \"bpf\", \"victim\": {\"pid\": 102, \"tgid\": 102, \"comm\": \"oomwatch-hog\", \"points\": 3700}}\n\
@@ KILL s1 kernel=102 ebpf=102\n\
@@ REPLAY s1 exit=0 killed=102 verdict=AGREE 1 report(s): 1 agree, 0 disagree, 0 not judged\n\
@@ METRICS oomwatch_reclaim_stall_seconds_count{kind=\"direct\"}=4 oomwatch_reclaim_stall_seconds_sum{kind=\"direct\"}=0.25 \
oomwatch_page_alloc_failures_total{order=\"0\"}=1 oomwatch_page_alloc_failures_total{order=\"9\"}=2 \
oomwatch_oom_kills_total=3 oomwatch_report_replays_total{outcome=\"agree\"}=2 oomwatch_report_replays_total{outcome=\"oom_group\"}=1 \
oomwatch_oom_kills_by_constraint_total{constraint=\"CONSTRAINT_NONE\"}=1 oomwatch_oom_kills_by_constraint_total{constraint=\"CONSTRAINT_MEMCG\"}=2 \
oomwatch_kernel_hook_info{function=\"out_of_memory\",path=\"fexit\"}=1 oomwatch_kernel_hook_info{function=\"oom_badness\",path=\"fexit\"}=1 \
oomwatch_kernel_hook_info{function=\"pagefault_out_of_memory\",path=\"kprobe\"}=1 \
oomwatch_kernel_points_checks_total{outcome=\"equal\"}=40 oomwatch_kernel_points_checks_total{outcome=\"differ\"}=0 \
oomwatch_page_fault_ooms_total{source=\"report\"}=3 oomwatch_page_fault_ooms_total{source=\"pagefault_out_of_memory\"}=1 \
oomwatch_slowpath_retry_decisions_total{check=\"reclaim_zone\",decision=\"retry\"}=5 \
oomwatch_hot_probes_attached=1 oomwatch_snapshot_source_info{source=\"bpf\"}=1\n\
@@ HOTPROBES attached=1 detached=0 first: memory pressure: 3 reclaim, compaction or allocator retry event(s)\n\
@@ ALLOCFAIL 2 pid=101 tgid=101 comm=oomwatch-hog order=9 gfp=GFP_TRANSHUGE migratetype=1;\n\
@@ STARTS host=1 reclaim_exhausted=0 memcg=2\n\
@@ SELFCHECK mismatches=0 explained=3\n\
@@ SELFTEST exit=0 {\"scenarios\": [{\"name\": \"largest\", \"status\": \"passed\", \"kernel_points\": {\"unavailable\": null}}]}\n\
@@ END\n";

    #[test]
    fn judges_the_knob_guest() {
        let pred = |kind: &str, extra: &str| {
            format!(
                "{{\"victim\": {{\"tgid\": 12}}, \"knobs\": {{\"action\": {{\"kind\": \"{kind}\"}}{extra}}}}}"
            )
        };
        let zones = |min: u32| {
            format!(
                ", \"watermarks\": {{\"min_free_kbytes\": {min}, \"zones\": [{{\"kernel_agrees\": true}}]}}"
            )
        };
        let memcg = |name: &str, extra: &str| {
            format!(
                "@@ SCN {name} expect=B x\n@@ HOG {name} A 11 adj=0 mib=8\n@@ HOG {name} B 12 adj=0 mib=36\n\
                 @@ PRED {name} {}\n@@ KILL {name} kernel=12 ebpf=12\n\
                 @@ REPLAY {name} exit=0 killed=12 verdict={} 1 report(s): x\n",
                pred("kill_victim", extra),
                if name == "dump-tasks-0" {
                    "none"
                } else {
                    "AGREE"
                }
            )
        };
        let log = [
            "@@ UNAME 7.3.4+deb13-cloud-amd64 x86_64\n".to_owned(),
            memcg("allocating-memcg", ""),
            memcg(
                "dump-tasks-0",
                ", \"oom_dump_tasks\": {\"value\": 0}, \"warnings\": [\"vm.oom_dump_tasks=0: no task table\"]",
            ),
            format!(
                "@@ SCN overcommit-2 expect=none\n@@ PRED overcommit-2 {}\n@@ KNOB overcommit-2 kills=0 hog=x\n",
                pred("kill_victim", ", \"commit\": {\"enforced\": true}")
            ),
            format!(
                "@@ SCN watermarks expect=none\n@@ PRED watermarks {}\n@@ PRED watermarks {}\n",
                pred("kill_victim", &zones(8192)),
                pred("kill_victim", &zones(3000))
            ),
            format!(
                "@@ SCN allocating-global expect=allocating\n@@ HOG allocating-global T 13 adj=0 mib=200\n\
                 @@ PRED allocating-global {}\n@@ KILL allocating-global kernel=13 ebpf=13\n\
                 @@ REPORT allocating-global [  1.0] oomwatch-hog invoked oom-killer: gfp_mask=0x140cca(GFP_HIGHUSER_MOVABLE), order=0, oom_score_adj=0\n\
                 @@ REPORT allocating-global [  1.1] Out of memory (oom_kill_allocating_task): Killed process 13 (oomwatch-hog) total-vm:2268kB\n",
                pred("kill_allocating_task", "")
            ),
            memcg("panic-memcg", ""),
            format!("@@ SCN panic-global expect=panic\n@@ PRED panic-global {}\n@@ END\n", pred("panic", "")),
        ]
        .concat();
        // The daemon (-1000) allocating: the scan chooses; then a hog
        // allocating is itself killed. A scan kill after a killable
        // allocating task breaks the rule.
        let lines = |adj: i32, kill: &str| {
            vec![
                format!(
                    "[1.0] tokio-rt-worker invoked oom-killer: gfp_mask=0xcc0(GFP_KERNEL), order=0, oom_score_adj={adj}"
                ),
                format!("[1.1] Out of memory: Killed process 12 (oomwatch-hog) total-vm:1kB"),
                format!(
                    "[2.0] oomwatch-hog invoked oom-killer: gfp_mask=0xcc0(GFP_KERNEL), order=0, oom_score_adj=0"
                ),
                format!(
                    "[2.1] Out of memory (oom_kill_allocating_task): Killed process 13 ({kill}) total-vm:1kB"
                ),
            ]
        };
        assert_eq!(allocating_kills(&lines(-1000, "oomwatch-hog")), (2, vec![]));
        assert_eq!(allocating_kills(&lines(0, "oomwatch-hog")).1.len(), 1);
        assert_eq!(allocating_kills(&lines(-1000, "init")).1.len(), 1);
        // The global init allocating: unkillable, so the scan chooses.
        let mut init = lines(0, "oomwatch-hog");
        init.insert(
            1,
            "[1.05] CPU: 0 UID: 0 PID: 1 Comm: init Not tainted 7.3.4 #1".into(),
        );
        assert_eq!(allocating_kills(&init), (2, vec![]));
        let panic = "[  9.1] Kernel panic - not syncing: Out of memory: system-wide panic_on_oom is enabled\n";
        let full = format!("{log}{panic}");
        assert_eq!(judge_knobs(&parse(&full), &full), (7, 0));
        // No panic on the console, and the allocating task was not the victim.
        let failing = log.replace("kernel=13 ebpf=13", "kernel=12 ebpf=12");
        assert_eq!(judge_knobs(&parse(&failing), &failing), (5, 2));
    }

    #[test]
    fn judges_a_passing_and_a_failing_guest() {
        let log = Path::new("guest.log");
        // Nine guest-wide checks, one scenario and the selftest, all passing.
        assert_eq!(judge(&parse(PASSING_GUEST), log), (11, 0));
        // The self-check found a difference, the direct-reclaim and
        // kernel-points counters are gone, and the scenario's eBPF victim
        // differs from the kernel's.
        let failing = PASSING_GUEST
            .replace("mismatches=0", "mismatches=2")
            .replace(
                "oomwatch_reclaim_stall_seconds_count{kind=\"direct\"}=4 ",
                "",
            )
            .replace("{outcome=\"differ\"}=0", "{outcome=\"differ\"}=1")
            .replace("kernel=102 ebpf=102", "kernel=102 ebpf=101");
        assert_eq!(judge(&parse(&failing), log), (7, 4));
        // A selftest scenario that failed, or one without the kernel's
        // points where oom_badness is hooked.
        for broken in [
            PASSING_GUEST.replace("\"status\": \"passed\"", "\"status\": \"failed\""),
            PASSING_GUEST.replace("{\"unavailable\": null}", "{\"unavailable\": \"no hooks\"}"),
        ] {
            assert_eq!(judge(&parse(&broken), log), (10, 1));
        }
        // Nothing but the start and the end: no self-check line, every
        // metric check fails, no scenario.
        let empty = "@@ UNAME 6.1.0-31-cloud-arm64 aarch64\n@@ END\n";
        assert_eq!(judge(&parse(empty), log), (0, 9));
    }

    #[test]
    fn parses_a_guest_log_with_kernel_noise() {
        let log = "\
[    7.6] Out of memory: Killed process 117 (hogB)\n\
@@ UNAME 6.12.117+deb12-cloud-amd64 x86_64 MemTotal: 220000 kB\n\
@@ SCN s1 expect=B adj -1000 on the largest\n\
@@ HOG s1 A 101 adj=-1000 mib=36\n\
@@ HOG s1 B 102 adj=0 mib=14\n\
@@ PRED s1 {\"source\": \"bpf\", \"victim\": {\"pid\": 102, \"tgid\": 102, \"comm\": \"oomwatch-hog\", \"points\": 3700}}\n\
@@ KILL s1 kernel=102 ebpf=102\n\
@@ REPLAY s1 exit=0 killed=102 verdict=AGREE 2 report(s): 1 agree, 0 disagree, 1 not judged\n\
@@ SCN s2 expect=B x\n\
@@ HOG s2 B 202 adj=0 mib=14\n\
@@ PRED s2 error: something\n\
@@ KILL s2 kernel=202 ebpf=none\n\
@@ HOTPROBES attached=1 detached=0 first: memory pressure: 3 reclaim, compaction or allocator retry event(s)\n\
@@ END\n";
        let r = parse(log);
        assert!(r.ended);
        assert_eq!(
            r.hot_probes.as_deref(),
            Some(
                "attached=1 detached=0 first: memory pressure: 3 reclaim, compaction or allocator retry event(s)"
            )
        );
        assert!(r.uname.starts_with("6.12.117"));
        assert_eq!(r.scenarios.len(), 2);
        assert!(r.scenarios[0].passed(), "{}", r.scenarios[0]);
        let s2 = &r.scenarios[1];
        assert!(!s2.passed());
        assert_eq!(s2.ebpf, None);
        assert!(s2.predict_error.is_some());
        assert!(s2.to_string().contains("predicted none"), "{s2}");
        assert_eq!(r.scenarios[0].source.as_deref(), Some("bpf"));
        assert!(
            r.scenarios[0].to_string().contains("predicted B (bpf)"),
            "{}",
            r.scenarios[0]
        );
        assert!(s2.to_string().contains("replay did not run"), "{s2}");
        assert_eq!(
            r.scenarios[0].replay,
            Some((
                0,
                Some(102),
                "AGREE".into(),
                "2 report(s): 1 agree, 0 disagree, 1 not judged".into()
            ))
        );
    }
}
