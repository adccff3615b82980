//! The container image and the Kubernetes DaemonSet's container spec
//! (`cargo xtask dist`, `--check`). The image is built from scratch with
//! buildah (no base image: the static binary and the deploy files); its
//! config digest is reproducible (`--timestamp`). The check runs the
//! DaemonSet's pod template, unchanged, under `podman kube play` on this
//! host, through a real memory cgroup OOM.

use std::{
    io::{Read as _, Write as _},
    net::TcpStream,
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    time::{Duration, Instant},
};

use anyhow::{Context as _, bail};

use crate::{apt_install, dist::SOURCE_DIR, dist::Version, dpkg_installed, status, vm::Arch};

/// The DaemonSet's image name, which the check tags the built image as.
const MANIFEST_IMAGE: &str = "localhost/oomwatch:latest";
/// The pod the check makes from the DaemonSet's template.
const POD: &str = "oomwatch-kube-check";
/// The manifest's port (host network).
const PORT: u16 = 7707;

#[derive(Debug, Clone)]
pub struct Image {
    /// `oomwatch-<version>-<arch>.oci.tar`, for `podman load`.
    pub archive: PathBuf,
    /// The image id (its config's digest).
    pub id: String,
    pub name: String,
}

/// podman and buildah, set up for this host: runc (crun refuses the hybrid
/// cgroup layout of the lab machines), cgroupfs where systemd is not PID 1,
/// and limits a root without CAP_SYS_RESOURCE can set.
fn engine_config(out: &Path) -> anyhow::Result<PathBuf> {
    // catatonit: the pause process of a pod (`podman kube play`).
    let missing: Vec<&str> = ["podman", "buildah", "runc", "catatonit"]
        .into_iter()
        .filter(|p| !dpkg_installed(p))
        .collect();
    if !missing.is_empty() {
        apt_install(&missing)?;
    }
    let systemd = std::fs::read_to_string("/proc/1/comm").is_ok_and(|c| c.trim() == "systemd");
    let conf = out.join("containers.conf");
    std::fs::create_dir_all(out)?;
    std::fs::write(
        &conf,
        format!(
            "[engine]\nruntime = \"runc\"\ncgroup_manager = \"{}\"\nevents_logger = \"file\"\n\
             [containers]\nlog_driver = \"k8s-file\"\n\
             default_ulimits = [\"nofile=4096:4096\", \"nproc=4096:4096\"]\n",
            if systemd { "systemd" } else { "cgroupfs" }
        ),
    )?;
    Ok(conf)
}

fn tool(conf: &Path, program: &str) -> Command {
    let mut c = Command::new(program);
    c.env("CONTAINERS_CONF", conf);
    c
}

fn tool_output(conf: &Path, program: &str, args: &[&str]) -> anyhow::Result<String> {
    let out = tool(conf, program)
        .args(args)
        .output()
        .with_context(|| format!("run {program}"))?;
    if !out.status.success() {
        bail!(
            "{program} {} failed: {}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(String::from_utf8_lossy(&out.stdout).trim().to_owned())
}

/// `localhost/oomwatch:<version>-<arch>` from scratch, saved as an OCI
/// archive in `out`.
pub fn build_image(arch: Arch, v: &Version, bin: &Path, out: &Path) -> anyhow::Result<Image> {
    let conf = engine_config(out)?;
    let ctx = out.join(format!("image-{}", arch.name()));
    let _ = std::fs::remove_dir_all(&ctx);
    std::fs::create_dir_all(&ctx)?;
    let src = Path::new(SOURCE_DIR);
    std::fs::copy(bin, ctx.join("oomwatch"))?;
    for f in ["deploy/config.toml", "LICENSE-MIT", "LICENSE-APACHE"] {
        let from = src.join(f);
        std::fs::copy(&from, ctx.join(from.file_name().context("name")?))
            .with_context(|| format!("copy {f}"))?;
    }
    let name = format!(
        "localhost/oomwatch:{}-{}",
        v.full.replace('+', "-"),
        arch.name()
    );
    let iid = out.join(format!("image-{}.id", arch.name()));
    let mut b = tool(&conf, "buildah");
    b.args(["build", "--quiet", "--timestamp", &v.epoch.to_string()])
        .args(["--platform", &format!("linux/{}", arch.deb_arch())])
        .arg("--file")
        .arg(src.join("deploy/container/Containerfile"))
        .args(["--tag", &name])
        .arg("--iidfile")
        .arg(&iid)
        .arg(&ctx)
        .stdout(Stdio::null());
    status(b).context("buildah build")?;
    let id = std::fs::read_to_string(&iid)?.trim().to_owned();
    let archive = out.join(format!("oomwatch-{}-{}.oci.tar", v.full, arch.name()));
    let _ = std::fs::remove_file(&archive);
    // An OCI layout (its files are named and filled by the image's
    // digests), packed like the tarball: buildah's own oci-archive stamps
    // its tar headers with the time of the push.
    let layout = out.join(format!("image-{}.oci", arch.name()));
    let _ = std::fs::remove_dir_all(&layout);
    let mut p = tool(&conf, "buildah");
    p.args(["push", "--quiet", &name])
        .arg(format!("oci:{}:{name}", layout.display()))
        .stdout(Stdio::null());
    status(p).context("buildah push to an OCI layout")?;
    let mut t = Command::new("tar");
    t.args(["--sort=name", "--owner=0", "--group=0", "--numeric-owner"])
        .arg(format!("--mtime=@{}", v.epoch))
        .args(["--format=gnu", "-cf"])
        .arg(&archive)
        .arg("-C")
        .arg(&layout)
        .arg(".");
    status(t).context("pack the OCI layout")?;
    std::fs::remove_dir_all(&layout)?;
    std::fs::remove_dir_all(&ctx)?;
    std::fs::remove_file(&iid)?;
    Ok(Image { archive, id, name })
}

/// The DaemonSet's pod template as a Pod, for `podman kube play`: the same
/// container spec, volumes, host namespaces and security context, line for
/// line.
pub fn pod_from_daemonset(manifest: &str) -> anyhow::Result<String> {
    let lines: Vec<&str> = manifest.lines().collect();
    let start = lines
        .iter()
        .position(|l| *l == "  template:")
        .context("the manifest has no `  template:` under the DaemonSet's spec")?;
    let mut pod = vec!["apiVersion: v1".to_owned(), "kind: Pod".to_owned()];
    for l in &lines[start + 1..] {
        if !l.trim().is_empty() && !l.starts_with("    ") {
            break;
        }
        let l = l.strip_prefix("    ").unwrap_or("");
        pod.push(l.to_owned());
        if l == "metadata:" {
            pod.push(format!("  name: {POD}"));
        }
    }
    anyhow::ensure!(
        pod.iter().any(|l| l == "spec:") && pod.iter().any(|l| l.starts_with("  containers:")),
        "the DaemonSet's template has no spec with containers"
    );
    Ok(pod.join("\n") + "\n")
}

/// What the kube check saw.
pub struct KubeOutcome {
    /// From `podman kube play` to the first answer of /metrics.
    pub first_scrape: f64,
    pub cap_bnd: String,
    pub cap_eff: String,
    /// Whether the daemon could read /dev/kmsg inside the container.
    pub kmsg: bool,
}

/// Runs the DaemonSet's container spec with `image` through a real memory
/// cgroup OOM; fails unless the kill reaches /metrics and the container
/// runs with the manifest's capabilities and a read-only root.
pub fn kube_check(image: &Image, out: &Path) -> anyhow::Result<KubeOutcome> {
    let conf = engine_config(out)?;
    if std::net::TcpListener::bind(("0.0.0.0", PORT)).is_err() {
        bail!(
            "port {PORT} is taken on this host: the DaemonSet listens there on the host \
             network; stop what holds it (another oomwatch?) and run again"
        );
    }
    let manifest =
        std::fs::read_to_string(Path::new(SOURCE_DIR).join("deploy/kubernetes/oomwatch.yaml"))?;
    let pod_yaml = out.join("kube-pod.yaml");
    std::fs::write(&pod_yaml, pod_from_daemonset(&manifest)?)?;
    // The archive a user would `podman load`, and the image it holds.
    let loaded = tool_output(
        &conf,
        "podman",
        &[
            "load",
            "--quiet",
            "--input",
            &image.archive.to_string_lossy(),
        ],
    )?;
    let id = tool_output(
        &conf,
        "podman",
        &["image", "inspect", "--format", "{{.Id}}", &image.name],
    )?;
    anyhow::ensure!(
        image.id.ends_with(&id) || id.ends_with(image.id.trim_start_matches("sha256:")),
        "podman load of {} gave {loaded}, image {id}, not the built {}",
        image.archive.display(),
        image.id
    );
    status({
        let mut c = tool(&conf, "podman");
        c.args(["tag", &image.name, MANIFEST_IMAGE]);
        c
    })?;
    let _pod = PodGuard {
        conf: conf.clone(),
        yaml: pod_yaml.clone(),
    };
    let start = Instant::now();
    let mut play = tool(&conf, "podman");
    play.args(["kube", "play", "--replace"]).arg(&pod_yaml);
    status(play).context("podman kube play (the DaemonSet's pod template)")?;
    let ctr = format!("{POD}-oomwatch");
    let deadline = Instant::now() + Duration::from_secs(120);
    let first = loop {
        if let Ok(m) = scrape() {
            if m.contains("oomwatch_build_info") {
                break start.elapsed().as_secs_f64();
            }
        }
        if Instant::now() > deadline {
            let logs = container_log(&conf, &ctr).unwrap_or_default();
            bail!("the container's /metrics never answered on port {PORT}; its log:\n{logs}");
        }
        std::thread::sleep(Duration::from_millis(200));
    };
    let pid = tool_output(
        &conf,
        "podman",
        &["inspect", "--format", "{{.State.Pid}}", &ctr],
    )?;
    let status_text = std::fs::read_to_string(format!("/proc/{pid}/status"))
        .with_context(|| format!("read /proc/{pid}/status of the container's daemon"))?;
    let field = |k: &str| {
        status_text
            .lines()
            .find_map(|l| l.strip_prefix(k))
            .map(|v| v.trim().to_owned())
            .unwrap_or_default()
    };
    let (bnd, eff) = (field("CapBnd:"), field("CapEff:"));
    // The manifest's six: CAP_DAC_READ_SEARCH, CAP_SETPCAP, CAP_SYS_ADMIN,
    // CAP_SYSLOG, CAP_PERFMON, CAP_BPF. Once attached the daemon keeps only
    // what it still uses, its bounding set included (CAP_SETPCAP).
    const SIX: u64 = (1 << 2) | (1 << 8) | (1 << 21) | (1 << 34) | (1 << 38) | (1 << 39);
    const DROPPED: u64 = (1 << 8) | (1 << 21);
    let parse = |s: &str| u64::from_str_radix(s, 16).unwrap_or(u64::MAX);
    anyhow::ensure!(
        parse(&bnd) & !SIX == 0 && parse(&bnd) & DROPPED == 0,
        "the container's bounding set is {bnd}: not within the manifest's capabilities less \
         CAP_SYS_ADMIN and CAP_SETPCAP, which the daemon drops once attached"
    );
    anyhow::ensure!(
        parse(&eff) & !parse(&bnd) == 0,
        "the container's effective set {eff} is not within its bounding set {bnd}"
    );
    let ro = tool_output(
        &conf,
        "podman",
        &[
            "inspect",
            "--format",
            "{{.HostConfig.ReadonlyRootfs}}",
            &ctr,
        ],
    )?;
    anyhow::ensure!(ro == "true", "the container's root is not read-only ({ro})");

    let before = metric(&scrape()?, "oomwatch_oom_kills_total");
    let mut memcg = Memcg::create(64 << 20)?;
    let mut hog = memcg.spawn_hog()?;
    let st = hog.wait()?;
    memcg.hog = None;
    anyhow::ensure!(
        !st.success(),
        "the hog in the 64 MiB memory cgroup ended by itself ({st}): no OOM"
    );
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let now = metric(&scrape()?, "oomwatch_oom_kills_total");
        if now > before {
            break;
        }
        if Instant::now() > deadline {
            bail!(
                "the kill never reached the container's /metrics (oomwatch_oom_kills_total {now})"
            );
        }
        std::thread::sleep(Duration::from_millis(200));
    }
    let logs = container_log(&conf, &ctr)?;
    anyhow::ensure!(
        logs.contains("oom kill:"),
        "no `oom kill:` line in the container's log:\n{logs}"
    );
    Ok(KubeOutcome {
        first_scrape: first,
        cap_bnd: bnd,
        cap_eff: eff,
        kmsg: !logs.contains("will lack the kernel's report"),
    })
}

/// The container's output, both streams (the daemon logs on stderr, which
/// `podman logs` replays on its own stderr).
fn container_log(conf: &Path, ctr: &str) -> anyhow::Result<String> {
    let out = tool(conf, "podman")
        .args(["logs", ctr])
        .output()
        .context("run podman logs")?;
    anyhow::ensure!(out.status.success(), "podman logs {ctr} failed");
    Ok(String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr))
}

struct PodGuard {
    conf: PathBuf,
    yaml: PathBuf,
}

impl Drop for PodGuard {
    fn drop(&mut self) {
        let _ = tool(&self.conf, "podman")
            .args(["kube", "down"])
            .arg(&self.yaml)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status();
    }
}

fn scrape() -> anyhow::Result<String> {
    let mut s = TcpStream::connect(("127.0.0.1", PORT))?;
    s.set_read_timeout(Some(Duration::from_secs(10)))?;
    s.write_all(b"GET /metrics HTTP/1.0\r\nHost: localhost\r\n\r\n")?;
    let mut body = String::new();
    s.read_to_string(&mut body)?;
    Ok(body)
}

/// The sum of a metric's series in a scrape.
fn metric(text: &str, name: &str) -> f64 {
    text.lines()
        .filter(|l| {
            l.strip_prefix(name)
                .is_some_and(|r| r.starts_with(' ') || r.starts_with('{'))
        })
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

/// A memory cgroup with a limit, named for oomwatch, removed on drop (its
/// hog killed first). v1 where the memory controller is mounted alone, else
/// v2.
struct Memcg {
    dir: PathBuf,
    hog: Option<u32>,
}

impl Memcg {
    fn create(limit: u64) -> anyhow::Result<Self> {
        let name = format!("oomwatch-kube-check-{}", std::process::id());
        let v1 = Path::new("/sys/fs/cgroup/memory");
        let (dir, limit_file) = if v1.join("memory.limit_in_bytes").exists() {
            (v1.join(&name), "memory.limit_in_bytes")
        } else {
            (Path::new("/sys/fs/cgroup").join(&name), "memory.max")
        };
        std::fs::create_dir(&dir).with_context(|| format!("create {}", dir.display()))?;
        let g = Self { dir, hog: None };
        // Refuse to run the hog without the limit: never a host-wide OOM.
        std::fs::write(g.dir.join(limit_file), limit.to_string())
            .with_context(|| format!("set {limit_file} of {}", g.dir.display()))?;
        let _ = std::fs::write(g.dir.join("memory.swap.max"), "0");
        Ok(g)
    }

    /// `tail /dev/zero` in the cgroup: one endless line held in memory.
    fn spawn_hog(&mut self) -> anyhow::Result<Child> {
        let procs = self.dir.join("cgroup.procs");
        let child = Command::new("sh")
            .arg("-c")
            .arg("echo $$ > \"$1\" && exec tail /dev/zero")
            .args(["sh", &procs.to_string_lossy()])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .context("start the hog")?;
        self.hog = Some(child.id());
        Ok(child)
    }
}

impl Drop for Memcg {
    fn drop(&mut self) {
        if let Some(pid) = self.hog {
            // SAFETY: kill(2) on a pid we started; failure is harmless.
            unsafe {
                libc::kill(pid as i32, libc::SIGKILL);
            }
        }
        for _ in 0..50 {
            if std::fs::remove_dir(&self.dir).is_ok() {
                return;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        eprintln!("warning: could not remove {}", self.dir.display());
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn the_daemonset_template_becomes_a_pod_line_for_line() {
        let manifest = std::fs::read_to_string(
            crate::workspace_root().join("deploy/kubernetes/oomwatch.yaml"),
        )
        .unwrap();
        let pod = super::pod_from_daemonset(&manifest).unwrap();
        assert!(
            pod.starts_with("apiVersion: v1\nkind: Pod\nmetadata:\n  name: oomwatch-kube-check\n")
        );
        for want in [
            "  hostPID: true",
            "  hostNetwork: true",
            "          add: [\"BPF\", \"PERFMON\", \"SYS_ADMIN\", \"SYSLOG\", \"DAC_READ_SEARCH\", \"SETPCAP\"]",
            "        readOnlyRootFilesystem: true",
            "        path: /dev/kmsg",
            "    prometheus.io/scrape: \"true\"",
        ] {
            assert!(pod.lines().any(|l| l == want), "no {want:?} in\n{pod}");
        }
        assert!(!pod.contains("template") && !pod.contains("DaemonSet"));
    }

    #[test]
    fn metric_sums_its_series_only() {
        let t = "# HELP x\noomwatch_oom_kills_total 2\noomwatch_oom_kills_total_x 9\n\
                 oomwatch_oom_kills_total{a=\"b\"} 3\n";
        assert_eq!(super::metric(t, "oomwatch_oom_kills_total"), 5.0);
    }
}
