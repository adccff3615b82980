//! `cargo xtask dist`: what an SRE installs. For each architecture, a static
//! `oomwatch` (eBPF object embedded, no dynamic libc: it starts on any
//! distribution's userland), a tarball and a `.deb` (cargo-deb), and their
//! SHA256SUMS, in `target/dist/`.
//!
//! Reproducible: the packages are built from the commit alone (`git archive`
//! into [`SOURCE_DIR`], a fixed path, since the eBPF object's debug info
//! names its sources), with every file time the commit's time
//! (`SOURCE_DATE_EPOCH`) and the user-space paths remapped. `--check`
//! builds oomwatch, its eBPF object and every package a second time and
//! compares the bytes; it also installs the `.deb` under systemd in guests
//! (`install.rs`) and runs the DaemonSet's container spec under podman
//! (`container.rs`).

use std::{
    path::{Path, PathBuf},
    process::Command,
    time::Instant,
};

use anyhow::{Context as _, bail};

use crate::{
    apt_install, cargo, dpkg_installed, is_root, output_ok, status,
    vm::{self, Arch},
    workspace_root,
};

/// Where the commit is unpacked and built. Fixed, so the same commit gives
/// the same bytes on every machine: the eBPF object keeps its DWARF (BTF is
/// made from it), and DWARF names the source files.
pub const SOURCE_DIR: &str = "/usr/src/oomwatch";

/// The cargo-deb release the packages are made with.
const CARGO_DEB_VERSION: &str = "3.8.0";

pub struct Options {
    /// Architectures by name; empty means both.
    pub arches: Vec<String>,
    /// Checks to run after the build: `reproducible`, `install`, `kube`, or
    /// `all`.
    pub check: Vec<String>,
    /// `reproducible` rebuilds only this host's architecture (the test
    /// suite's choice, for time); otherwise every architecture built.
    pub reproduce_host_only: bool,
    /// Skip `cargo xtask setup` (a machine that is not Debian 12, such as
    /// the arm64 workflow's runner, brings its own eBPF toolchain).
    pub no_setup: bool,
}

/// What one build of one commit is called.
#[derive(Debug, Clone)]
pub struct Version {
    /// The commit, 12 hex digits.
    pub commit: String,
    /// The commit's time, seconds since the epoch.
    pub epoch: u64,
    /// `0.1.0+git20261203101542.6250009abcde`: orders by commit time, as
    /// dpkg compares it.
    pub full: String,
}

/// One architecture's artifacts.
#[derive(Debug, Clone)]
pub struct Artifacts {
    pub arch: Arch,
    pub binary: PathBuf,
    pub tarball: PathBuf,
    pub deb: PathBuf,
    pub image: crate::container::Image,
}

pub fn dist(opts: Options) -> anyhow::Result<Vec<Artifacts>> {
    let start = Instant::now();
    if !is_root() {
        bail!(
            "dist unpacks the commit into {SOURCE_DIR} and installs its packagers with apt: \
             run it as root"
        );
    }
    let arches = Arch::chosen(&opts.arches)?;
    if !opts.no_setup {
        crate::setup()?;
    }
    let host = Arch::host();
    let cross: Vec<&str> = if arches.iter().any(|a| *a != host) {
        vec!["gcc-aarch64-linux-gnu", "libc6-dev-arm64-cross"]
    } else {
        vec![]
    };
    let missing: Vec<&str> = cross
        .into_iter()
        .chain(["git", "tar", "gzip"])
        .filter(|p| !dpkg_installed(p))
        .collect();
    if !missing.is_empty() {
        apt_install(&missing)?;
    }
    ensure_cargo_deb()?;

    let version = version()?;
    println!(
        "dist: oomwatch {} from commit {} (uncommitted changes are not built)",
        version.full, version.commit
    );
    unpack_commit(&version)?;
    let out = workspace_root().join("target/dist");
    // Only this build's packages in the folder (the build cache stays).
    if let Ok(entries) = std::fs::read_dir(&out) {
        for e in entries.flatten() {
            let n = e.file_name().to_string_lossy().into_owned();
            let ours = n.ends_with(".deb")
                || n.ends_with(".tar.gz")
                || n.ends_with(".oci.tar")
                || n == "SHA256SUMS";
            if ours && e.path().is_file() {
                std::fs::remove_file(e.path())?;
            }
        }
    }
    let built = build_all(&arches, host, &version, &out, &static_target_dir())?;
    write_sums(&built, &out)?;
    for a in &built {
        for f in [&a.binary, &a.tarball, &a.deb, &a.image.archive] {
            println!("  {:>10} bytes  {}", size(f)?, f.display());
        }
        println!("  image {} {}", a.image.name, a.image.id);
    }
    let wants = |what: &str| opts.check.iter().any(|c| c == what || c == "all");
    if wants("reproducible") {
        println!(
            "dist --check: building again (oomwatch, its eBPF object and every package from \
             scratch; the dependencies' libraries kept)"
        );
        let first_dir = out.join("check");
        let _ = std::fs::remove_dir_all(&first_dir);
        std::fs::create_dir_all(&first_dir)?;
        // One folder per architecture: both binaries are called oomwatch.
        let keep = |arch: Arch, p: &Path| -> anyhow::Result<PathBuf> {
            let dir = first_dir.join(arch.name());
            std::fs::create_dir_all(&dir)?;
            let to = dir.join(p.file_name().context("file name")?);
            std::fs::copy(p, &to).with_context(|| format!("keep {}", p.display()))?;
            Ok(to)
        };
        let again: Vec<Arch> = arches
            .iter()
            .copied()
            .filter(|a| !opts.reproduce_host_only || *a == host)
            .collect();
        let first: Vec<Artifacts> = built
            .iter()
            .filter(|a| again.contains(&a.arch))
            .map(|a| {
                Ok(Artifacts {
                    arch: a.arch,
                    binary: keep(a.arch, &a.binary)?,
                    tarball: keep(a.arch, &a.tarball)?,
                    deb: keep(a.arch, &a.deb)?,
                    image: crate::container::Image {
                        archive: keep(a.arch, &a.image.archive)?,
                        ..a.image.clone()
                    },
                })
            })
            .collect::<anyhow::Result<_>>()?;
        for a in &again {
            clean_own_crates(
                &static_target_dir(),
                Path::new(SOURCE_DIR),
                Some(a.triple()),
            )?;
        }
        let second = build_all(&again, host, &version, &out, &static_target_dir())?;
        let mut same = 0;
        for (a, b) in first.iter().zip(&second) {
            if a.image.id != b.image.id {
                bail!(
                    "not reproducible: the {} image is {} in one build, {} in the other",
                    a.arch.name(),
                    a.image.id,
                    b.image.id
                );
            }
            for (x, y) in [
                (&a.binary, &b.binary),
                (&a.tarball, &b.tarball),
                (&a.deb, &b.deb),
                (&a.image.archive, &b.image.archive),
            ] {
                let (bx, by) = (std::fs::read(x)?, std::fs::read(y)?);
                if bx != by {
                    bail!(
                        "not reproducible: {} and {} differ (same commit, two builds)",
                        x.display(),
                        y.display()
                    );
                }
                same += 1;
            }
        }
        println!(
            "dist --check: reproducible, {same} files and {} image ids identical across two builds",
            first.len()
        );
        std::fs::remove_dir_all(&first_dir)?;
    }
    let installs = if wants("install") {
        println!("dist --check: the .deb under systemd in guests (oldest and newest kernel)");
        crate::install::install_test(&built)?
    } else {
        Vec::new()
    };
    let kube = if wants("kube") {
        let host_image = &built
            .iter()
            .find(|a| a.arch == host)
            .context("no build for this host's architecture: the kube check needs it")?
            .image;
        println!("dist --check: the DaemonSet's container spec under podman, a memcg OOM");
        Some(crate::container::kube_check(host_image, &out)?)
    } else {
        None
    };
    if !opts.check.is_empty() {
        println!("\ndist --check passed:");
    }
    for o in &installs {
        println!(
            "  install {:<7} {:<4} {:<28} {} checks, first scrape {} after dpkg -i, {:.0} s",
            o.arch.name(),
            o.line,
            o.kernel,
            o.passed,
            o.first_scrape
                .map_or("?".to_owned(), |s| format!("{s:.1} s")),
            o.seconds
        );
    }
    if let Some(k) = kube {
        println!(
            "  podman kube play: first scrape {:.1} s after play, CapBnd {} CapEff {}, /dev/kmsg {}",
            k.first_scrape,
            k.cap_bnd,
            k.cap_eff,
            if k.kmsg {
                "read"
            } else {
                "not readable (episodes without the report)"
            }
        );
    }
    write_sums(&built, &out)?;
    println!("dist: done in {:.0} s", start.elapsed().as_secs_f64());
    Ok(built)
}

/// `SHA256SUMS` of every package in `out`.
fn write_sums(built: &[Artifacts], out: &Path) -> anyhow::Result<()> {
    let mut sums = String::new();
    for a in built {
        for f in [&a.tarball, &a.deb, &a.image.archive] {
            let line = output_ok("sha256sum", &[&f.to_string_lossy()]).context("sha256sum")?;
            let hash = line.split_whitespace().next().unwrap_or_default();
            let name = f.file_name().unwrap_or_default().to_string_lossy();
            sums.push_str(&format!("{hash}  {name}\n"));
        }
    }
    std::fs::write(out.join("SHA256SUMS"), sums)?;
    Ok(())
}

fn size(p: &Path) -> anyhow::Result<u64> {
    Ok(std::fs::metadata(p)
        .with_context(|| format!("stat {}", p.display()))?
        .len())
}

fn ensure_cargo_deb() -> anyhow::Result<()> {
    let have =
        output_ok("cargo-deb", &["--version"]).is_some_and(|v| v.contains(CARGO_DEB_VERSION));
    if !have {
        println!("dist: cargo install cargo-deb {CARGO_DEB_VERSION} (about 2 minutes)");
        let mut c = cargo();
        c.args([
            "install",
            &format!("cargo-deb@{CARGO_DEB_VERSION}"),
            "--locked",
        ]);
        status(c)?;
    }
    Ok(())
}

fn git(args: &[&str]) -> anyhow::Result<String> {
    let out = Command::new("git")
        .args(args)
        .current_dir(workspace_root())
        .output()
        .context("run git")?;
    if !out.status.success() {
        bail!(
            "git {} failed: {}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(String::from_utf8_lossy(&out.stdout).trim().to_owned())
}

/// The crate's version (the workspace's `version`) and the commit's.
pub fn version() -> anyhow::Result<Version> {
    let manifest = std::fs::read_to_string(workspace_root().join("Cargo.toml"))?;
    let crate_version = manifest
        .lines()
        .skip_while(|l| l.trim() != "[workspace.package]")
        .find_map(|l| l.strip_prefix("version = "))
        .map(|v| v.trim().trim_matches('"').to_owned())
        .context("no version in [workspace.package] of Cargo.toml")?;
    let commit = git(&["rev-parse", "--short=12", "HEAD"])
        .context("dist names its packages after the commit: run it in a git checkout")?;
    let epoch: u64 = git(&["log", "-1", "--format=%ct", "HEAD"])?
        .parse()
        .context("commit time")?;
    let stamp = utc_stamp(epoch);
    Ok(Version {
        full: format!("{crate_version}+git{stamp}.{commit}"),
        commit,
        epoch,
    })
}

/// `YYYYMMDDHHMMSS` in UTC (civil-from-days, proleptic Gregorian).
fn utc_stamp(epoch: u64) -> String {
    let days = (epoch / 86_400) as i64;
    let secs = epoch % 86_400;
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    format!(
        "{y:04}{m:02}{d:02}{:02}{:02}{:02}",
        secs / 3600,
        secs / 60 % 60,
        secs % 60
    )
}

/// The commit's tree, and nothing else, at [`SOURCE_DIR`].
fn unpack_commit(v: &Version) -> anyhow::Result<()> {
    let dir = Path::new(SOURCE_DIR);
    if dir.exists() {
        std::fs::remove_dir_all(dir).with_context(|| format!("remove {SOURCE_DIR}"))?;
    }
    std::fs::create_dir_all(dir)?;
    let mut c = Command::new("sh");
    c.arg("-c")
        .arg("git archive --format=tar \"$1\" | tar -x -C \"$2\"")
        .args(["sh", &v.commit, SOURCE_DIR])
        .current_dir(workspace_root());
    status(c).context("unpack the commit with git archive")
}

fn build_all(
    arches: &[Arch],
    host: Arch,
    v: &Version,
    out: &Path,
    target_dir: &Path,
) -> anyhow::Result<Vec<Artifacts>> {
    std::fs::create_dir_all(out)?;
    // The host's binary first: it writes the man pages and completions for
    // every architecture.
    let mut order: Vec<Arch> = arches.to_vec();
    order.sort_by_key(|a| *a != host);
    let mut host_bin: Option<PathBuf> = None;
    let mut built = Vec::new();
    for arch in order {
        let bin = build_binary(arch, host, v, target_dir)?;
        check_static(&bin)?;
        let runner = match (&host_bin, arch == host) {
            (_, true) => bin.clone(),
            (Some(h), false) => h.clone(),
            (None, false) => {
                // The host's own is needed for the generated files.
                let h = build_binary(host, host, v, target_dir)?;
                host_bin = Some(h.clone());
                h
            }
        };
        if arch == host {
            host_bin = Some(bin.clone());
        }
        let release = bin.parent().context("binary dir")?.to_path_buf();
        let generated = release.join("dist");
        generate_docs(&runner, &generated)?;
        let tarball = tarball(arch, v, &bin, &generated, out)?;
        let deb = deb(arch, v, target_dir, out)?;
        let image = crate::container::build_image(arch, v, &bin, out)?;
        built.push(Artifacts {
            arch,
            binary: bin,
            tarball,
            deb,
            image,
        });
    }
    built.sort_by_key(|a| a.arch.name());
    Ok(built)
}

fn build_binary(arch: Arch, host: Arch, v: &Version, target_dir: &Path) -> anyhow::Result<PathBuf> {
    println!("dist: building static oomwatch for {}", arch.triple());
    let sysroot = if arch == host {
        None
    } else {
        anyhow::ensure!(
            host == Arch::X86_64,
            "cross builds go from x86_64 to aarch64 only; build {} on its own machine",
            arch.name()
        );
        Some(vm::arm64_sysroot()?)
    };
    let flags = release_flags()?;
    claim_target_dir(target_dir, Path::new(SOURCE_DIR))?;
    let mut c = vm::static_build(arch, sysroot.as_deref(), target_dir, &flags);
    c.current_dir(SOURCE_DIR)
        .args(["--package", "oomwatch", "--bin", "oomwatch", "--locked"])
        .env("OOMWATCH_COMMIT", &v.commit)
        .env("OOMWATCH_REQUIRE_EBPF", "1")
        .env("SOURCE_DATE_EPOCH", v.epoch.to_string());
    status(c)?;
    Ok(target_dir
        .join(arch.triple())
        .join("release")
        .join("oomwatch"))
}

/// The target directory of every static build, the packages' and the guest
/// lab's (`cargo xtask vm-test`) alike: with the same [`release_flags`],
/// the dependencies compiled for one are reused by the other, which saves
/// a cold build per architecture in `cargo xtask test`.
pub(crate) fn static_target_dir() -> PathBuf {
    workspace_root().join("target/dist/build")
}

/// Makes `target_dir` safe to build `source` into. Cargo hashes a workspace
/// crate by its path relative to the workspace, so the working tree (vm-test)
/// and the commit unpacked at [`SOURCE_DIR`] (dist) land on the same
/// artifacts, and one tree's build can look fresh to the other: the packages
/// would embed the working tree's crates or eBPF object, vm-test the
/// commit's. So the directory remembers the tree that built into it last,
/// and a switch removes the workspace's own crates (the eBPF object, in the
/// build script's output, with them); the dependencies stay.
pub(crate) fn claim_target_dir(target_dir: &Path, source: &Path) -> anyhow::Result<()> {
    let marker = target_dir.join("oomwatch-source-tree");
    let last = std::fs::read_to_string(&marker).unwrap_or_default();
    let this = source.display().to_string();
    if last == this {
        return Ok(());
    }
    // No marker in a used directory: the tree is unknown, so clean too.
    if target_dir.exists() {
        let last = if last.is_empty() {
            "an unknown tree"
        } else {
            &last
        };
        println!(
            "{}: built from {last} last; removing the workspace's crates built from it",
            target_dir.display()
        );
        // The host's layout too: build scripts and build dependencies.
        let triples = Arch::ALL.map(|a| Some(a.triple()));
        for triple in [None].into_iter().chain(triples) {
            clean_own_crates(target_dir, source, triple)?;
        }
    }
    std::fs::create_dir_all(target_dir)?;
    std::fs::write(&marker, this).with_context(|| format!("write {}", marker.display()))
}

/// `cargo clean` of the workspace's own crates (and so of the eBPF object in
/// oomwatch's build-script output) in `target_dir`, for `triple` or the
/// host's layout; the dependencies stay.
fn clean_own_crates(target_dir: &Path, source: &Path, triple: Option<&str>) -> anyhow::Result<()> {
    let mut c = cargo();
    c.current_dir(source).args(["clean", "--release"]);
    if let Some(t) = triple {
        c.args(["--target", t]);
    }
    c.args(["--package", "oomwatch", "--package", "oomwatch-common"])
        .args(["--package", "oomwatch-ebpf", "--package", "oomwatch-tests"])
        .env("CARGO_TARGET_DIR", target_dir);
    status(c)
}

/// The rustflags of a static release build, added to `+crt-static`: the
/// source and cargo-home paths remapped (so the bytes do not depend on
/// where the machine keeps them) and the symbols stripped.
pub(crate) fn release_flags() -> anyhow::Result<Vec<String>> {
    let cargo_home = std::env::var_os("CARGO_HOME")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".cargo")))
        .context("neither CARGO_HOME nor HOME is set")?;
    Ok(vec![
        format!("--remap-path-prefix={SOURCE_DIR}=/oomwatch"),
        format!("--remap-path-prefix={}=/cargo", cargo_home.display()),
        "-C".to_owned(),
        "strip=symbols".to_owned(),
    ])
}

/// Fails unless `bin` is an ELF file without a program interpreter (no
/// dynamic loader, so no libc of the machine it lands on).
fn check_static(bin: &Path) -> anyhow::Result<()> {
    let b = std::fs::read(bin).with_context(|| format!("read {}", bin.display()))?;
    let ok = b.len() > 64 && b[..4] == *b"\x7fELF" && b[4] == 2 && b[5] == 1;
    anyhow::ensure!(
        ok,
        "{} is not a 64-bit little-endian ELF file",
        bin.display()
    );
    let u16_at = |o: usize| u16::from_le_bytes([b[o], b[o + 1]]) as usize;
    let phoff = u64::from_le_bytes(b[32..40].try_into()?) as usize;
    let (phentsize, phnum) = (u16_at(54), u16_at(56));
    for i in 0..phnum {
        let o = phoff + i * phentsize;
        anyhow::ensure!(o + 4 <= b.len(), "{}: program headers cut", bin.display());
        let p_type = u32::from_le_bytes(b[o..o + 4].try_into()?);
        // PT_INTERP
        if p_type == 3 {
            bail!(
                "{} asks for a dynamic loader: it is not static and would not start on \
                 every userland",
                bin.display()
            );
        }
    }
    Ok(())
}

/// Man pages and completions, written by a binary that runs here.
fn generate_docs(runner: &Path, dir: &Path) -> anyhow::Result<()> {
    let _ = std::fs::remove_dir_all(dir);
    let mut c = Command::new(runner);
    c.arg("manpages")
        .arg(dir.join("man"))
        .stdout(std::process::Stdio::null());
    status(c)?;
    // Debian's form of a man page: gzip'd, with no name or time inside.
    let mut gz = Command::new("sh");
    gz.arg("-c")
        .arg("set -e; mkdir -p \"$1/man-gz\"; for f in \"$1\"/man/*.1; do gzip -9n < \"$f\" > \"$1/man-gz/${f##*/}.gz\"; done")
        .args(["sh", &dir.to_string_lossy()]);
    status(gz).context("gzip the man pages")?;
    std::fs::create_dir_all(dir.join("completions"))?;
    for (shell, name) in [
        ("bash", "oomwatch.bash"),
        ("zsh", "_oomwatch"),
        ("fish", "oomwatch.fish"),
    ] {
        let out = Command::new(runner)
            .args(["completions", shell])
            .output()
            .with_context(|| format!("run {} completions {shell}", runner.display()))?;
        anyhow::ensure!(
            out.status.success() && !out.stdout.is_empty(),
            "oomwatch completions {shell} failed"
        );
        std::fs::write(dir.join("completions").join(name), out.stdout)?;
    }
    Ok(())
}

/// `oomwatch-<version>-<arch>.tar.gz`: the binary, the unit (for
/// /usr/local/bin), the default config, the alert rules and their tests,
/// the dashboard, man pages, completions, README and licences.
fn tarball(
    arch: Arch,
    v: &Version,
    bin: &Path,
    generated: &Path,
    out: &Path,
) -> anyhow::Result<PathBuf> {
    let name = format!("oomwatch-{}-{}", v.full, arch.name());
    let stage_root = out.join("stage");
    let stage = stage_root.join(&name);
    let _ = std::fs::remove_dir_all(&stage_root);
    std::fs::create_dir_all(&stage)?;
    let src = Path::new(SOURCE_DIR);
    let copy = |from: &Path, to: &str| -> anyhow::Result<()> {
        let to = stage.join(to);
        if let Some(p) = to.parent() {
            std::fs::create_dir_all(p)?;
        }
        std::fs::copy(from, &to)
            .with_context(|| format!("copy {} to {}", from.display(), to.display()))?;
        Ok(())
    };
    copy(bin, "oomwatch")?;
    let unit = std::fs::read_to_string(src.join("deploy/systemd/oomwatch.service"))?;
    anyhow::ensure!(
        unit.contains("ExecStart=/usr/bin/oomwatch "),
        "deploy/systemd/oomwatch.service no longer starts /usr/bin/oomwatch"
    );
    std::fs::write(
        stage.join("oomwatch.service"),
        unit.replace(
            "ExecStart=/usr/bin/oomwatch ",
            "ExecStart=/usr/local/bin/oomwatch ",
        ),
    )?;
    for (from, to) in [
        ("deploy/config.toml", "config.toml"),
        (
            "deploy/prometheus/oomwatch.rules.yml",
            "prometheus/oomwatch.rules.yml",
        ),
        (
            "deploy/prometheus/oomwatch.rules.test.yml",
            "prometheus/oomwatch.rules.test.yml",
        ),
        ("deploy/grafana/oomwatch.json", "grafana/oomwatch.json"),
        (
            "deploy/kubernetes/oomwatch.yaml",
            "kubernetes/oomwatch.yaml",
        ),
        ("README.md", "README.md"),
        ("LICENSE-MIT", "LICENSE-MIT"),
        ("LICENSE-APACHE", "LICENSE-APACHE"),
    ] {
        copy(&src.join(from), to)?;
    }
    for sub in ["man", "completions"] {
        for e in std::fs::read_dir(generated.join(sub))? {
            let p = e?.path();
            let n = p
                .file_name()
                .context("file name")?
                .to_string_lossy()
                .into_owned();
            copy(&p, &format!("{sub}/{n}"))?;
        }
    }
    let tarball = out.join(format!("{name}.tar.gz"));
    // GNU tar's reproducible form: names sorted, owners and times fixed, no
    // pax atime/ctime; gzip without name or time.
    let mut c = Command::new("sh");
    c.arg("-c")
        .arg(
            "set -e; cd \"$1\"; find \"$2\" -exec chmod u+w,go-w,a+rX {} +; \
             tar --sort=name --owner=0 --group=0 --numeric-owner --mtime=\"@$3\" \
             --format=gnu -cf - \"$2\" | gzip -9n > \"$4\"",
        )
        .args([
            "sh",
            &stage_root.to_string_lossy(),
            &name,
            &v.epoch.to_string(),
            &tarball.to_string_lossy(),
        ]);
    status(c).context("pack the tarball")?;
    std::fs::remove_dir_all(&stage_root)?;
    Ok(tarball)
}

/// The `.deb`, from the metadata in oomwatch/Cargo.toml.
fn deb(arch: Arch, v: &Version, target_dir: &Path, out: &Path) -> anyhow::Result<PathBuf> {
    let deb = out.join(format!("oomwatch_{}-1_{}.deb", v.full, arch.deb_arch()));
    let mut c = cargo();
    c.current_dir(SOURCE_DIR)
        .args(["deb", "--package", "oomwatch", "--no-build", "--no-strip"])
        .args(["--target", arch.triple()])
        .args(["--deb-version", &format!("{}-1", v.full)])
        .arg("--output")
        .arg(&deb)
        .env("CARGO_TARGET_DIR", target_dir)
        .env("SOURCE_DATE_EPOCH", v.epoch.to_string());
    status(c).context("cargo deb")?;
    Ok(deb)
}

#[cfg(test)]
mod tests {
    #[test]
    fn commit_times_become_sortable_utc_stamps() {
        assert_eq!(super::utc_stamp(0), "19700101000000");
        assert_eq!(super::utc_stamp(951_782_400), "20000229000000");
        // 2026-12-03 10:15:42 UTC
        assert_eq!(super::utc_stamp(1_796_292_942), "20261203101542");
    }
}
