//! `cargo xtask vm-test`: oomwatch in throwaway guest kernels (QEMU, TCG),
//! where the lab host cannot go: negative `oom_score_adj` (root here lacks
//! CAP_SYS_RESOURCE), cgroup v2's memory controller, host-wide OOMs.
//!
//! The recipe is the tested one in `../shared/vm-lab.md`: Debian's cloud
//! kernels taken from apt, an initramfs with busybox and static binaries, the
//! serial console as the only output, always `-accel tcg` (the lab's
//! `/dev/kvm` is a software layer that makes stock kernels crawl).
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

/// Host packages the lab needs (vm-lab.md §2).
const PACKAGES: &[&str] = &["qemu-system-x86", "busybox-static", "cpio"];

/// Kernels, by the meta package that names the current ABI (vm-lab.md
/// pitfall 5: ABI names change with every security update).
const KERNELS: &[(&str, &str)] = &[
    ("6.1", "linux-image-cloud-amd64"),
    ("6.12", "linux-image-6.12-cloud-amd64"),
];

const INIT: &str = include_str!("guest/init.sh");
const TARGET: &str = "x86_64-unknown-linux-gnu";

pub struct Options {
    /// Kernel lines to boot ("6.1", "6.12"); all when empty.
    pub kernels: Vec<String>,
}

fn lab_dir() -> PathBuf {
    workspace_root().join("target/vmlab")
}

pub fn vm_test(opts: Options) -> anyhow::Result<()> {
    let start = Instant::now();
    if !is_root() {
        bail!("vm-test installs QEMU and downloads kernels with apt: run it as root");
    }
    if let Some(k) = opts
        .kernels
        .iter()
        .find(|k| !KERNELS.iter().any(|(v, _)| v == k))
    {
        bail!(
            "--kernel {k}: unknown kernel line; choose from {}",
            KERNELS
                .iter()
                .map(|(v, _)| *v)
                .collect::<Vec<_>>()
                .join(", ")
        );
    }
    let missing: Vec<&str> = PACKAGES
        .iter()
        .copied()
        .filter(|p| !dpkg_installed(p))
        .collect();
    if !missing.is_empty() {
        apt_install(&missing)?;
    }
    let lab = lab_dir();
    std::fs::create_dir_all(lab.join("debs"))?;
    std::fs::create_dir_all(lab.join("out"))?;

    let wanted: Vec<(&str, &str)> = KERNELS
        .iter()
        .copied()
        .filter(|(v, _)| opts.kernels.is_empty() || opts.kernels.iter().any(|k| k == v))
        .collect();
    let mut kernels = Vec::new();
    for (line, meta) in &wanted {
        let k = fetch_kernel(&lab, meta).with_context(|| format!("kernel {line} ({meta})"))?;
        println!("vm-test: kernel {line}: {}", k.display());
        kernels.push((*line, k));
    }

    println!("vm-test: building static oomwatch and oomwatch-hog for {TARGET}");
    let bins = build_static()?;
    let initrd = lab.join("out/initrd-x86_64.gz");
    make_initrd(&bins, &initrd)?;

    // Both kernels at once: one vCPU each, the host has two cores.
    let boots: Vec<(&str, PathBuf, Child)> = kernels
        .iter()
        .map(|(line, k)| {
            let log = lab.join(format!("out/x86_64-{line}.log"));
            boot(k, &initrd, &log).map(|c| (*line, log, c))
        })
        .collect::<anyhow::Result<_>>()?;
    println!(
        "vm-test: booted {} guest(s) under TCG; each runs 6 scenarios (about a minute)",
        boots.len()
    );
    let mut passed = 0;
    let mut failed = 0;
    for (line, log, mut child) in boots {
        let st = child.wait().context("wait for qemu")?;
        let text = std::fs::read(&log)
            .map(|b| String::from_utf8_lossy(&b).into_owned())
            .unwrap_or_default();
        let results = parse(&text);
        println!("\n== x86_64, kernel {line} ({})", results.uname);
        if !st.success() || !results.ended {
            println!(
                "   the guest did not finish (qemu {st}); serial log: {}",
                log.display()
            );
            failed += 1;
        }
        match results.selfcheck {
            Some((0, explained)) => {
                println!(
                    "   PASS self-check: every oom_score the daemon recomputed matched the \
                     kernel's ({explained} differences explained)"
                );
                passed += 1;
            }
            Some((m, _)) => {
                println!(
                    "   FAIL self-check: {m} unexplained oom_score difference(s); see DAEMONLOG in {}",
                    log.display()
                );
                failed += 1;
            }
            None => {}
        }
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
            (Some(n), Some(s)) if n >= 1.0 => {
                println!("   PASS direct reclaim stalls counted by eBPF: {n} ({s:.3} s in all)");
                passed += 1;
            }
            (n, _) => {
                println!("   FAIL direct reclaim stalls counted by eBPF: {n:?}");
                failed += 1;
            }
        }
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
            Some(sample) if order9 >= 1.0 => {
                println!(
                    "   PASS failed page allocations counted by eBPF: {fails} ({order9} of order 9); one: {}",
                    sample.split_once(' ').map_or(sample, |(_, s)| s)
                );
                passed += 1;
            }
            _ => {
                println!(
                    "   FAIL failed page allocations: {fails} counted ({order9} of order 9), samples: {}",
                    results.alloc_fail.as_deref().unwrap_or("none")
                );
                failed += 1;
            }
        }
        // Every kill became an episode with the kernel's report, and the
        // model, replaying each report's own table, picked the same task.
        let metric = |k: &str| results.metrics.get(k).copied().unwrap_or(0.0);
        let replays =
            |o: &str| metric(&format!("oomwatch_report_replays_total{{outcome=\"{o}\"}}"));
        let kills = metric("oomwatch_oom_kills_total");
        let global =
            metric("oomwatch_oom_kills_by_constraint_total{constraint=\"CONSTRAINT_NONE\"}");
        let memcg =
            metric("oomwatch_oom_kills_by_constraint_total{constraint=\"CONSTRAINT_MEMCG\"}");
        if kills > 0.0 && replays("agree") == kills && global >= 1.0 && memcg >= 1.0 {
            println!(
                "   PASS episodes: {kills} kills, each with its report ({memcg} CONSTRAINT_MEMCG, {global} CONSTRAINT_NONE); replays agree {}/{kills}",
                replays("agree")
            );
            passed += 1;
        } else {
            println!(
                "   FAIL episodes: {kills} kills; replays agree {} disagree {} unreplayable {} no report {}; constraints memcg {memcg} none {global}",
                replays("agree"),
                replays("disagree"),
                replays("unreplayable"),
                replays("no_report")
            );
            failed += 1;
        }
        if let Some(st) = &results.starts {
            println!("   info: OOM starts the daemon saw: {st}");
        }
        for r in &results.scenarios {
            let ok = r.passed();
            println!("   {} {r}", if ok { "PASS" } else { "FAIL" });
            if ok {
                passed += 1;
            } else {
                failed += 1;
            }
        }
    }
    println!(
        "\n{passed} passed, {failed} failed ({:.0} s)",
        start.elapsed().as_secs_f64()
    );
    if failed > 0 {
        bail!(
            "{failed} guest scenario(s) failed; serial logs in {}/out",
            lab.display()
        );
    }
    Ok(())
}

/// Downloads the kernel package `meta` depends on (once) and returns its
/// vmlinuz.
fn fetch_kernel(lab: &Path, meta: &str) -> anyhow::Result<PathBuf> {
    let depends = |meta: &str| {
        output_ok("apt-cache", &["depends", meta]).and_then(|o| {
            o.lines()
                .find_map(|l| l.trim().strip_prefix("Depends: linux-image-"))
                .map(|p| format!("linux-image-{p}"))
        })
    };
    let pkg = match depends(meta) {
        Some(p) => p,
        None => {
            let mut u = Command::new("apt-get");
            u.args(["update", "-q"]);
            status(u)?;
            depends(meta).with_context(|| {
                format!("apt knows no {meta}: is bookworm(-security) in the apt sources?")
            })?
        }
    };
    let dir = lab.join("k").join(&pkg);
    if let Some(k) = find_vmlinuz(&dir) {
        return Ok(k);
    }
    println!("vm-test: apt-get download {pkg}");
    let mut dl = Command::new("apt-get");
    dl.args(["download", "-q", &pkg])
        .current_dir(lab.join("debs"))
        .stdout(Stdio::null());
    status(dl)?;
    let deb = std::fs::read_dir(lab.join("debs"))?
        .flatten()
        .map(|e| e.path())
        .find(|p| {
            p.file_name()
                .and_then(|n| n.to_str())
                .is_some_and(|n| n.starts_with(&format!("{pkg}_")) && n.ends_with(".deb"))
        })
        .with_context(|| format!("no .deb for {pkg} after apt-get download"))?;
    std::fs::create_dir_all(&dir)?;
    let mut x = Command::new("sh");
    x.arg("-c")
        .arg("dpkg-deb --fsys-tarfile \"$1\" | tar -x -C \"$2\" --wildcards './boot/vmlinuz-*'")
        .args(["sh", &deb.to_string_lossy(), &dir.to_string_lossy()]);
    status(x)?;
    find_vmlinuz(&dir).with_context(|| format!("no boot/vmlinuz-* in {}", deb.display()))
}

fn find_vmlinuz(dir: &Path) -> Option<PathBuf> {
    std::fs::read_dir(dir.join("boot"))
        .ok()?
        .flatten()
        .map(|e| e.path())
        .find(|p| {
            p.file_name()
                .and_then(|n| n.to_str())
                .is_some_and(|n| n.starts_with("vmlinuz-"))
        })
}

/// Static (crt-static) oomwatch and oomwatch-hog: the guest has no libc.
/// Their own target directory, so the host build is not invalidated.
fn build_static() -> anyhow::Result<Vec<PathBuf>> {
    let target_dir = workspace_root().join("target/vm");
    let mut c = cargo();
    c.args([
        "build",
        "--release",
        "--target",
        TARGET,
        "--package",
        "oomwatch-tests",
        "--bins",
    ])
    .env("CARGO_TARGET_DIR", &target_dir)
    // Only for the target: build scripts and proc macros cannot be static,
    // and the eBPF object is built for bpfel, untouched.
    .env(
        "CARGO_TARGET_X86_64_UNKNOWN_LINUX_GNU_RUSTFLAGS",
        "-C target-feature=+crt-static",
    );
    status(c)?;
    let dir = target_dir.join(TARGET).join("release");
    Ok(vec![dir.join("oomwatch"), dir.join("oomwatch-hog")])
}

fn make_initrd(bins: &[PathBuf], out: &Path) -> anyhow::Result<()> {
    let root = lab_dir().join("rootfs");
    let _ = std::fs::remove_dir_all(&root);
    for d in ["bin", "proc", "sys", "dev", "tmp"] {
        std::fs::create_dir_all(root.join(d))?;
    }
    let busybox = ["/bin/busybox", "/usr/bin/busybox"]
        .iter()
        .map(Path::new)
        .find(|p| p.exists())
        .context("no busybox: apt-get install busybox-static")?;
    std::fs::copy(busybox, root.join("bin/busybox")).context("copy busybox")?;
    for b in bins {
        let name = b.file_name().context("binary name")?;
        std::fs::copy(b, root.join("bin").join(name))
            .with_context(|| format!("copy {}", b.display()))?;
    }
    let init = root.join("init");
    std::fs::write(&init, INIT)?;
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
fn boot(kernel: &Path, initrd: &Path, log: &Path) -> anyhow::Result<Child> {
    let _ = std::fs::remove_file(log);
    Command::new("timeout")
        .args(["600", "qemu-system-x86_64", "-M", "q35", "-cpu", "max"])
        // Never KVM here: vm-lab.md §1.
        .args(["-accel", "tcg", "-m", "256", "-smp", "1", "-nodefaults"])
        .args(["-display", "none", "-no-reboot"])
        .arg("-serial")
        .arg(format!("file:{}", log.display()))
        .arg("-kernel")
        .arg(kernel)
        .arg("-initrd")
        .arg(initrd)
        .args([
            "-append",
            "console=ttyS0 panic=-1 oops=panic quiet loglevel=4",
        ])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .context("start qemu-system-x86_64")
}

#[derive(Debug, Default)]
struct Scenario {
    name: String,
    expect: String,
    /// Hog name → pid.
    hogs: Vec<(String, i64)>,
    predicted: Option<i64>,
    predict_error: Option<String>,
    kernel: Option<i64>,
    ebpf: Option<i64>,
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
    }
}

impl std::fmt::Display for Scenario {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{:<15} predicted {:<6} kernel killed {:<6} eBPF saw {:<6} (scenario expects {})",
            self.name,
            self.name_of(self.predicted),
            self.name_of(self.kernel),
            self.name_of(self.ebpf),
            self.expect
        )?;
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
    /// Samples scraped from the daemon's /metrics at the end, `name{labels}` → value.
    metrics: HashMap<String, f64>,
    scenarios: Vec<Scenario>,
    ended: bool,
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
            "HOG" | "PRED" | "KILL" => {
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
                    "PRED" => match serde_json::from_str::<serde_json::Value>(rest) {
                        Ok(j) => s.predicted = j["victim"]["tgid"].as_i64(),
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

    #[test]
    fn parses_a_guest_log_with_kernel_noise() {
        let log = "\
[    7.6] Out of memory: Killed process 117 (hogB)\n\
@@ UNAME 6.12.117+deb12-cloud-amd64 x86_64 MemTotal: 220000 kB\n\
@@ SCN s1 expect=B adj -1000 on the largest\n\
@@ HOG s1 A 101 adj=-1000 mib=36\n\
@@ HOG s1 B 102 adj=0 mib=14\n\
@@ PRED s1 {\"victim\": {\"pid\": 102, \"tgid\": 102, \"comm\": \"oomwatch-hog\", \"points\": 3700}}\n\
@@ KILL s1 kernel=102 ebpf=102\n\
@@ SCN s2 expect=B x\n\
@@ HOG s2 B 202 adj=0 mib=14\n\
@@ PRED s2 error: something\n\
@@ KILL s2 kernel=202 ebpf=none\n\
@@ END\n";
        let r = parse(log);
        assert!(r.ended);
        assert!(r.uname.starts_with("6.12.117"));
        assert_eq!(r.scenarios.len(), 2);
        assert!(r.scenarios[0].passed(), "{}", r.scenarios[0]);
        let s2 = &r.scenarios[1];
        assert!(!s2.passed());
        assert_eq!(s2.ebpf, None);
        assert!(s2.predict_error.is_some());
        assert!(s2.to_string().contains("predicted none"), "{s2}");
    }
}
