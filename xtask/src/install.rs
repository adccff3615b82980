//! The `.deb` installed under real systemd (`cargo xtask dist --check`):
//! a Debian 12 root file system made with debootstrap from Debian's archive
//! (cached in `target/vmlab/rootfs/`), booted as the guest's initramfs with
//! systemd as PID 1, on the oldest and the newest kernel line of the guest
//! lab, x86_64 and aarch64, under TCG. Inside, `guest/install-test.sh`
//! installs the package, starts the unit, triggers a memory cgroup OOM and
//! checks the kill on /metrics and in the journal, the unit's sandboxing and
//! capabilities, stop and purge.

use std::{
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    time::Instant,
};

use anyhow::{Context as _, bail};

use crate::{
    apt_install,
    dist::Artifacts,
    dpkg_installed, status,
    vm::{self, Arch},
};

const SCRIPT: &str = include_str!("guest/install-test.sh");

/// The unit that runs the script once the guest is up.
const UNIT: &str = "[Unit]
Description=install test of the oomwatch package
After=basic.target sys-kernel-tracing.mount

[Service]
Type=oneshot
ExecStart=/lab/install-test.sh
StandardOutput=tty
StandardError=tty
TTYPath=/dev/console

[Install]
WantedBy=multi-user.target
";

/// The kernel lines booted: the oldest and the newest of the guest lab.
pub const LINES: [&str; 2] = ["5.10", "7.x"];

/// The Debian release of the guest's user space.
const SUITE: &str = "bookworm";

/// One guest's result.
pub struct Outcome {
    pub arch: Arch,
    pub line: &'static str,
    pub kernel: String,
    pub passed: u32,
    pub failed: Vec<String>,
    /// From `dpkg -i` to the first answer of /metrics.
    pub first_scrape: Option<f64>,
    pub seconds: f64,
}

/// Boots every (architecture, kernel line) pair with its architecture's
/// package, two guests at a time, and fails when any check fails.
pub fn install_test(built: &[Artifacts]) -> anyhow::Result<Vec<Outcome>> {
    let mut need = vec!["debootstrap", "cpio", "gzip"];
    for a in built {
        need.extend_from_slice(a.arch.packages());
        if a.arch != Arch::host() {
            need.extend_from_slice(&["qemu-user-static", "binfmt-support"]);
        }
    }
    need.sort_unstable();
    need.dedup();
    let missing: Vec<&str> = need.into_iter().filter(|p| !dpkg_installed(p)).collect();
    if !missing.is_empty() {
        apt_install(&missing)?;
    }
    let lab = vm::lab_dir();
    let out = lab.join("out");
    std::fs::create_dir_all(&out)?;
    if let Some(a) = built.iter().find(|a| a.arch == Arch::host()) {
        in_chroot(&rootfs(a.arch)?, &a.deb)?;
    }
    let mut outcomes = Vec::new();
    for a in built {
        let base = rootfs(a.arch)?;
        let initrd = out.join(format!("install-{}.cpio.gz", a.arch.name()));
        with_package(&base, &a.deb, &initrd)?;
        let mut running: Vec<(&'static str, String, PathBuf, Child, Instant)> = Vec::new();
        for line in LINES {
            let (kernel, version) = vm::kernel_for(a.arch, line)?;
            let log = out.join(format!("install-{}-{line}.log", a.arch.name()));
            let child = boot(a.arch, &kernel, &initrd, &log)?;
            println!(
                "install-test: {} kernel {line} ({version}): booting Debian {SUITE} with systemd",
                a.arch.name()
            );
            running.push((line, version, log, child, Instant::now()));
        }
        for (line, version, log, mut child, started) in running {
            let st = child.wait().context("wait for qemu")?;
            let text = std::fs::read(&log)
                .map(|b| String::from_utf8_lossy(&b).into_owned())
                .unwrap_or_default();
            let mut o = judge(&text);
            o.arch = a.arch;
            o.line = line;
            o.kernel = version;
            o.seconds = started.elapsed().as_secs_f64();
            if !text.contains("@@ end") {
                o.failed.push(format!(
                    "the guest did not finish (qemu {st}); serial log {}",
                    log.display()
                ));
            }
            println!(
                "install-test: {} {line}: {} passed, {} failed, first scrape {} after dpkg -i, {:.0} s",
                a.arch.name(),
                o.passed,
                o.failed.len(),
                o.first_scrape
                    .map_or("never".to_owned(), |s| format!("{s:.1} s")),
                o.seconds
            );
            for f in &o.failed {
                println!("   FAIL {f}");
            }
            outcomes.push(o);
        }
    }
    let failed: usize = outcomes.iter().map(|o| o.failed.len()).sum();
    if failed > 0 {
        bail!(
            "{failed} install check(s) failed; serial logs in {}",
            out.display()
        );
    }
    Ok(outcomes)
}

/// `dpkg -i` in a chroot (no systemd running there, as in a container
/// build or an image): the unit is enabled, nothing is started, and purge
/// removes it all again.
fn in_chroot(base: &Path, deb: &Path) -> anyhow::Result<()> {
    let root = vm::lab_dir().join("rootfs/chroot");
    let _ = std::fs::remove_dir_all(&root);
    std::fs::create_dir_all(&root)?;
    let mut x = Command::new("sh");
    x.arg("-c")
        .arg("cd \"$1\" && gzip -dc \"$2\" | cpio -i -d --quiet --no-absolute-filenames")
        .args(["sh", &root.to_string_lossy(), &base.to_string_lossy()]);
    status(x).context("unpack the root file system")?;
    std::fs::copy(deb, root.join("oomwatch.deb"))?;
    let run = |args: &[&str]| -> anyhow::Result<String> {
        let o = Command::new("chroot")
            .arg(&root)
            .args(args)
            .output()
            .context("chroot")?;
        anyhow::ensure!(
            o.status.success(),
            "in a chroot, {} failed: {}",
            args.join(" "),
            String::from_utf8_lossy(&o.stderr).trim()
        );
        Ok(String::from_utf8_lossy(&o.stdout).into_owned())
    };
    run(&["dpkg", "-i", "/oomwatch.deb"])?;
    let wants = root.join("etc/systemd/system/multi-user.target.wants/oomwatch.service");
    anyhow::ensure!(
        wants.is_symlink(),
        "in a chroot, dpkg -i did not enable the unit ({} is missing)",
        wants.display()
    );
    let started = daemons_in(&root);
    anyhow::ensure!(
        started.is_empty(),
        "in a chroot, dpkg -i started oomwatch (pids {started:?}); it must only enable it"
    );
    run(&["dpkg", "--purge", "oomwatch"])?;
    let left = run(&[
        "sh",
        "-c",
        "find / -xdev -name '*oomwatch*' ! -path /oomwatch.deb -print",
    ])?;
    anyhow::ensure!(left.trim().is_empty(), "in a chroot, purge left: {left}");
    std::fs::remove_dir_all(&root)?;
    println!(
        "install-test: in a chroot, dpkg -i enabled the unit without starting it; purge left nothing"
    );
    Ok(())
}

/// The pids of processes named `oomwatch` whose root is `root`.
fn daemons_in(root: &Path) -> Vec<u32> {
    std::fs::read_dir("/proc")
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|e| e.file_name().to_str()?.parse().ok())
        .filter(|pid: &u32| {
            std::fs::read_to_string(format!("/proc/{pid}/comm"))
                .is_ok_and(|c| c.trim() == "oomwatch")
                && std::fs::read_link(format!("/proc/{pid}/root")).is_ok_and(|r| r == root)
        })
        .collect()
}

/// Reads the script's `@@` lines.
fn judge(text: &str) -> Outcome {
    let mut o = Outcome {
        arch: Arch::X86_64,
        line: "",
        kernel: String::new(),
        passed: 0,
        failed: Vec::new(),
        first_scrape: None,
        seconds: 0.0,
    };
    for l in text.lines() {
        let Some(rest) = l.split_once("@@ ").map(|(_, r)| r.trim_end()) else {
            continue;
        };
        if rest.starts_with("PASS ") {
            o.passed += 1;
        } else if let Some(f) = rest.strip_prefix("FAIL ") {
            o.failed.push(f.to_owned());
        } else if let Some(s) = rest.strip_prefix("first-scrape-seconds ") {
            o.first_scrape = s.trim().parse().ok();
        }
    }
    o
}

/// Debian's user space for `arch` as a gzip'd cpio (systemd included),
/// built once with debootstrap and kept in `target/vmlab/rootfs/`.
fn rootfs(arch: Arch) -> anyhow::Result<PathBuf> {
    let dir = vm::lab_dir().join("rootfs");
    std::fs::create_dir_all(&dir)?;
    let out = dir.join(format!("debian-{SUITE}-{}.cpio.gz", arch.name()));
    if out.exists() {
        return Ok(out);
    }
    let tree = dir.join(format!("tree-{}", arch.name()));
    let _ = std::fs::remove_dir_all(&tree);
    let start = Instant::now();
    println!(
        "install-test: debootstrap Debian {SUITE} for {} (once; a few minutes)",
        arch.name()
    );
    let foreign = arch != Arch::host();
    if foreign {
        enable_binfmt(arch)?;
    }
    let mut d = Command::new("debootstrap");
    // dbus: systemd-run --wait (the OOM) talks to systemd over it.
    d.args(["--variant=minbase", "--include=systemd-sysv,dbus"])
        .arg(format!("--arch={}", arch.deb_arch()));
    if foreign {
        d.arg("--foreign");
    }
    d.arg(SUITE).arg(&tree).arg(vm::MAIN);
    status(d).context("debootstrap")?;
    if foreign {
        // The second stage runs the guest's own binaries, through qemu-user.
        let mut c = Command::new("chroot");
        c.arg(&tree)
            .args(["/debootstrap/debootstrap", "--second-stage"]);
        status(c).context("debootstrap --second-stage (through qemu-user)")?;
    }
    trim(&tree)?;
    let tmp = out.with_extension("tmp");
    pack(&tree, &tmp)?;
    std::fs::rename(&tmp, &out)?;
    std::fs::remove_dir_all(&tree)?;
    println!(
        "install-test: {} ({} MB) in {:.0} s",
        out.display(),
        std::fs::metadata(&out)?.len() >> 20,
        start.elapsed().as_secs_f64()
    );
    Ok(out)
}

/// binfmt_misc mounted and qemu-user registered for `arch`, so debootstrap's
/// second stage can run the foreign binaries. (A change to the host: it can
/// then run that architecture's programs through QEMU.)
fn enable_binfmt(arch: Arch) -> anyhow::Result<()> {
    let misc = Path::new("/proc/sys/fs/binfmt_misc");
    if !misc.join("status").exists() {
        let mut m = Command::new("mount");
        m.args(["-t", "binfmt_misc", "binfmt_misc"]).arg(misc);
        status(m).context("mount binfmt_misc")?;
    }
    let name = format!("qemu-{}", arch.name());
    if !misc.join(&name).exists() {
        let mut u = Command::new("update-binfmts");
        u.args(["--enable", &name]);
        status(u).with_context(|| format!("update-binfmts --enable {name}"))?;
    }
    anyhow::ensure!(
        misc.join(&name).exists(),
        "{name} is not registered in binfmt_misc"
    );
    Ok(())
}

/// A guest that boots straight into the test: no gettys, no timers, a fixed
/// machine id (no first-boot questions), no documentation.
fn trim(tree: &Path) -> anyhow::Result<()> {
    std::fs::write(
        tree.join("etc/machine-id"),
        "6f6f6d7761746368206c616220677565\n",
    )?;
    std::fs::write(tree.join("etc/hostname"), "lab\n")?;
    std::fs::write(tree.join("etc/fstab"), "")?;
    let sys = tree.join("etc/systemd/system");
    std::fs::create_dir_all(&sys)?;
    for unit in [
        "getty@.service",
        "serial-getty@.service",
        "systemd-firstboot.service",
        "apt-daily.timer",
        "apt-daily-upgrade.timer",
        "e2scrub_all.timer",
        "fstrim.timer",
        "systemd-timesyncd.service",
    ] {
        let link = sys.join(unit);
        let _ = std::fs::remove_file(&link);
        std::os::unix::fs::symlink("/dev/null", &link)?;
    }
    for d in [
        "usr/share/doc",
        "usr/share/man",
        "usr/share/locale",
        "usr/share/info",
        "var/lib/apt/lists",
        "var/cache/apt",
        "var/cache/debconf",
    ] {
        let p = tree.join(d);
        if p.exists() {
            std::fs::remove_dir_all(&p)?;
            std::fs::create_dir_all(&p)?;
        }
    }
    Ok(())
}

fn pack(tree: &Path, out: &Path) -> anyhow::Result<()> {
    let mut c = Command::new("sh");
    c.arg("-c")
        .arg("cd \"$1\" && find . | cpio -o -H newc --quiet | gzip -1 > \"$2\"")
        .args(["sh", &tree.to_string_lossy(), &out.to_string_lossy()]);
    status(c).context("pack the root file system")
}

/// The base file system with the package, the script and its unit appended
/// (the kernel unpacks concatenated cpio archives in order).
fn with_package(base: &Path, deb: &Path, out: &Path) -> anyhow::Result<()> {
    let extra = out.with_extension("extra");
    let _ = std::fs::remove_dir_all(&extra);
    let lab = extra.join("lab");
    std::fs::create_dir_all(&lab)?;
    std::fs::copy(deb, lab.join("oomwatch.deb"))
        .with_context(|| format!("copy {}", deb.display()))?;
    let script = lab.join("install-test.sh");
    std::fs::write(&script, SCRIPT)?;
    std::fs::set_permissions(
        &script,
        <std::fs::Permissions as std::os::unix::fs::PermissionsExt>::from_mode(0o755),
    )?;
    let sys = extra.join("etc/systemd/system");
    std::fs::create_dir_all(sys.join("multi-user.target.wants"))?;
    std::fs::write(sys.join("lab-install-test.service"), UNIT)?;
    std::os::unix::fs::symlink(
        "../lab-install-test.service",
        sys.join("multi-user.target.wants/lab-install-test.service"),
    )?;
    let packed = out.with_extension("extra.gz");
    pack(&extra, &packed)?;
    let mut all = std::fs::read(base).with_context(|| format!("read {}", base.display()))?;
    all.extend(std::fs::read(&packed)?);
    std::fs::write(out, all)?;
    std::fs::remove_file(&packed)?;
    std::fs::remove_dir_all(&extra)?;
    Ok(())
}

/// One guest: systemd from the initramfs as PID 1, its console to `log`.
fn boot(arch: Arch, kernel: &Path, initrd: &Path, log: &Path) -> anyhow::Result<Child> {
    let _ = std::fs::remove_file(log);
    // systemd, dpkg and the daemon under TCG: minutes, more on aarch64.
    let (mut c, console) = arch.qemu(1200);
    c.args(["-accel", "tcg", "-m", "1024", "-smp", "1", "-nodefaults"])
        .args(["-display", "none", "-no-reboot"])
        .arg("-serial")
        .arg(format!("file:{}", log.display()))
        .arg("-kernel")
        .arg(kernel)
        .arg("-initrd")
        .arg(initrd)
        .arg("-append")
        .arg(format!(
            "console={console} rdinit=/lib/systemd/systemd panic=-1 loglevel=4 \
             systemd.show_status=error"
        ))
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null());
    c.spawn().context("start qemu")
}

#[cfg(test)]
mod tests {
    #[test]
    fn the_guest_script_s_lines_are_judged() {
        let o = super::judge(
            "[  1.0] noise\n@@ PASS dpkg -i\r\n@@ first-scrape-seconds 12.50\n\
             x@@ FAIL kill on /metrics: stayed 0\n@@ PASS stopped\n@@ end\n",
        );
        assert_eq!(o.passed, 2);
        assert_eq!(o.failed, vec!["kill on /metrics: stayed 0".to_owned()]);
        assert_eq!(o.first_scrape, Some(12.5));
    }
}
