//! Real OOM reports from public sources (`../shared/oom-reports`, read at
//! test time, never copied into the repository): each is parsed, and where it
//! carries what a replay needs, the model's victim is compared with the one
//! the kernel killed. Every disagreement must be one of the explained ones.

use std::path::PathBuf;

use oomwatch::report::{ReplayError, parse, replay};

fn corpus() -> Option<PathBuf> {
    let dir = std::env::var_os("OOMWATCH_REPORTS")
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../shared/oom-reports")
        });
    dir.is_dir().then_some(dir)
}

/// Reports whose victim the model is known not to reproduce, and why.
const EXPLAINED: &[(&str, &str)] = &[(
    "003-",
    "linux-next 20200710 carried the unmerged 'make the calculation of oom badness more accurate' \
     patch under review (the thread reports it killed dbus-daemon instead of the largest task)",
)];

/// The `*.log` files of `dir`, sorted.
fn log_files(dir: &std::path::Path) -> Vec<PathBuf> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(dir)
        .unwrap()
        .flatten()
        .map(|e| e.path())
        .filter(|p| p.extension().is_some_and(|x| x == "log"))
        .collect();
    files.sort();
    files
}

#[test]
fn replay_the_public_corpus() {
    let Some(dir) = corpus() else {
        eprintln!("skipped: no ../shared/oom-reports (set OOMWATCH_REPORTS to a copy)");
        return;
    };
    let files = log_files(&dir);
    assert!(!files.is_empty(), "no reports in {}", dir.display());
    let (mut parsed, mut replayed, mut agree) = (0, 0, 0);
    let mut unexplained = Vec::new();
    for f in &files {
        let name = f.file_name().unwrap().to_string_lossy().into_owned();
        let text = String::from_utf8_lossy(&std::fs::read(f).unwrap()).into_owned();
        let Some(r) = parse(&text) else {
            eprintln!("{name}: no report header found");
            continue;
        };
        parsed += 1;
        match replay(&r) {
            Ok(rp) => {
                replayed += 1;
                let why = EXPLAINED
                    .iter()
                    .find(|(p, _)| name.starts_with(p))
                    .map(|(_, w)| *w);
                eprintln!(
                    "{name}: {} {:?} totalpages {}{} model {:?} kernel {:?}{}",
                    rp.kernel,
                    rp.domain,
                    rp.totalpages,
                    if rp.totalpages_exact {
                        ""
                    } else {
                        " (approx.)"
                    },
                    rp.model_pid,
                    rp.kernel_pid,
                    if rp.agree { "" } else { " DISAGREE" }
                );
                if rp.agree {
                    agree += 1;
                } else if let Some(w) = why {
                    eprintln!("  explained: {w}");
                } else {
                    unexplained.push(name);
                }
            }
            Err(
                e @ (ReplayError::NoVersion | ReplayError::NoTable | ReplayError::NoTotalpages),
            ) => {
                eprintln!("{name}: not replayable: {e}");
            }
        }
    }
    eprintln!("{parsed} parsed, {replayed} replayed, {agree} agree with the kernel");
    assert!(parsed >= 10, "only {parsed} reports parsed");
    assert!(replayed >= 8, "only {replayed} reports replayed");
    assert!(
        unexplained.is_empty(),
        "unexplained disagreements: {unexplained:?}"
    );
}

/// Reports our own guest kernels printed (`cargo xtask vm-test` keeps them in
/// `target/vmlab/out/reports`; a set is committed here): Debian 6.1 and
/// 6.12, x86_64 and aarch64, memcg v2 and host-wide OOMs, negative and
/// positive `oom_score_adj`. Each must parse, name its kernel and
/// architecture, and replay to the victim the kernel chose.
#[test]
fn replay_the_guest_kernel_fixtures() {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/guest-reports");
    let files = log_files(&dir);
    assert!(
        files.len() >= 20,
        "{} fixtures in {}",
        files.len(),
        dir.display()
    );
    let mut kernels = std::collections::BTreeSet::new();
    for f in &files {
        let name = f.file_name().unwrap().to_string_lossy().into_owned();
        let text = std::fs::read_to_string(f).unwrap();
        let r = parse(&text).unwrap_or_else(|| panic!("{name}: no report"));
        let release = r
            .kernel
            .clone()
            .unwrap_or_else(|| panic!("{name}: no kernel"));
        // File names are <arch>-<release>-<scenario>.log.
        assert!(name.contains(&release), "{name}: report says {release}");
        let rp = replay(&r).unwrap_or_else(|e| panic!("{name}: {e}"));
        eprintln!(
            "{name}: {:?} totalpages {} model {:?} kernel {:?}",
            rp.domain, rp.totalpages, rp.model_pid, rp.kernel_pid
        );
        assert!(
            rp.agree,
            "{name}: model {:?}, kernel {:?}",
            rp.model_pid, rp.kernel_pid
        );
        kernels.insert(name.split('-').take(2).collect::<Vec<_>>().join("-"));
    }
    assert_eq!(
        kernels.len(),
        4,
        "two kernels on two architectures: {kernels:?}"
    );
}
