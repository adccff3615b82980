//! Real OOM reports from public sources (`../shared/oom-reports`, read at
//! test time, never copied into the repository) and the reports our own
//! kernels printed (committed fixtures): each is found, parsed and replayed,
//! and the agreement is printed per file. Every disagreement must be one of
//! the explained ones.

use std::path::{Path, PathBuf};

use common::{corpus, log_files};
use oomwatch::replay::{Disagreement, ReplayReport, replay_all};

mod common;

/// Reports whose victim the model is known not to reproduce, and why.
const EXPLAINED: &[(&str, &str)] = &[(
    "003-",
    "linux-next 20200710 carried the unmerged 'make the calculation of oom badness more accurate' \
     patch under review (the thread reports it killed dbus-daemon instead of the largest task)",
)];

fn read(f: &Path) -> String {
    String::from_utf8_lossy(&std::fs::read(f).unwrap()).into_owned()
}

/// The INDEX's own account of each file: task rows and the killed pid and
/// comm, written by whoever collected the reports, independently of us.
fn index(dir: &Path) -> std::collections::HashMap<String, (usize, i32, String)> {
    let text = std::fs::read_to_string(dir.join("INDEX.md")).unwrap_or_default();
    text.lines()
        .filter(|l| l.starts_with("| 0"))
        .filter_map(|l| {
            let cols: Vec<&str> = l.split('|').map(str::trim).collect();
            let rows = cols.get(6)?.parse().ok()?;
            let (pid, comm) = cols.get(7)?.split_once(" (")?;
            Some((
                cols[1].to_owned(),
                (
                    rows,
                    pid.parse().ok()?,
                    comm.trim_end_matches(')').to_owned(),
                ),
            ))
        })
        .collect()
}

fn verdict(r: &ReplayReport) -> String {
    match (r.agrees, r.disagreement) {
        (Some(true), _) => "agree".into(),
        (Some(false), d) => format!("DISAGREE ({d:?})"),
        (None, _) => "not judged".into(),
    }
}

#[test]
fn replay_the_public_corpus() {
    let Some(dir) = corpus("replay_the_public_corpus") else {
        return;
    };
    let files = log_files(&dir);
    assert!(!files.is_empty(), "no reports in {}", dir.display());
    let index = index(&dir);
    assert!(index.len() >= 10, "INDEX.md lists {} reports", index.len());
    let (mut judged, mut agree) = (0, 0);
    let mut unexplained = Vec::new();
    for f in &files {
        let name = f.file_name().unwrap().to_string_lossy().into_owned();
        let reports = replay_all(&read(f));
        // Each file holds one report (017's oom.group kills belong to it).
        assert_eq!(reports.len(), 1, "{name}: {} reports found", reports.len());
        let r = &reports[0];
        eprintln!(
            "{name}: Linux {} rules {} ({}), {:?}, totalpages {:?}{}, model {:?}, kernel {:?}: {}",
            r.kernel.as_deref().unwrap_or("?"),
            r.rules.as_deref().unwrap_or("-"),
            r.rules_from.as_deref().unwrap_or("-"),
            r.domain,
            r.totalpages,
            if r.totalpages_exact { "" } else { " (approx.)" },
            r.predicted_victim.as_ref().map(|p| p.pid),
            r.kernel_victim.as_ref().map(|k| k.pid),
            verdict(r)
        );
        if let Some((rows, pid, comm)) = index.get(&name) {
            assert_eq!(r.tasks.len(), *rows, "{name}: task rows");
            let k = r.kernel_victim.as_ref().expect("a kill line");
            assert_eq!((k.pid, &k.comm), (*pid, comm), "{name}: killed task");
        }
        match r.agrees {
            Some(true) => {
                judged += 1;
                agree += 1;
            }
            Some(false) => {
                judged += 1;
                match EXPLAINED.iter().find(|(p, _)| name.starts_with(p)) {
                    Some((_, why)) => eprintln!("  explained: {why}"),
                    None => unexplained.push(name.clone()),
                }
            }
            None => eprintln!("  not judged: {}", r.reason),
        }
    }
    eprintln!(
        "{} files, {judged} judged, {agree} agree with the kernel",
        files.len()
    );
    // The agreement ratchet: never fewer than this.
    assert!(agree >= 14, "only {agree} reports agree");
    assert!(
        unexplained.is_empty(),
        "unexplained disagreements: {unexplained:?}"
    );
}

/// linux-next 20200710 killed a task with oom_score_adj -900 over one with
/// 27 million points: the replay must say that plainly.
#[test]
fn a_contradiction_is_named() {
    let Some(dir) = corpus("a_contradiction_is_named") else {
        return;
    };
    let f = dir.join("003-next-badness-patch-kills-dbus.log");
    let r = &replay_all(&read(&f))[0];
    assert_eq!(r.agrees, Some(false));
    assert_eq!(r.disagreement, Some(Disagreement::Contradiction));
    assert!(
        r.reason.contains("contradicts its own 5.8.0 heuristic"),
        "{}",
        r.reason
    );
    assert!(r.reason.contains("dbus-daemon (1155)"), "{}", r.reason);
}

/// All the corpus in one input, as one `dmesg` would hold it: every report
/// is found, in order, each the same as on its own.
#[test]
fn one_input_many_reports() {
    let Some(dir) = corpus("one_input_many_reports") else {
        return;
    };
    let files = log_files(&dir);
    let mut all = String::new();
    let mut alone = Vec::new();
    for f in &files {
        let text = read(f);
        alone.extend(replay_all(&text));
        all.push_str(&text);
        if !all.ends_with('\n') {
            all.push('\n');
        }
        all.push_str("[99999.000000] some other kernel message between reports\n");
    }
    let together = replay_all(&all);
    assert_eq!(together.len(), alone.len());
    for (a, b) in alone.iter().zip(&together) {
        assert_eq!(a.kernel_victim, b.kernel_victim);
        assert_eq!(a.predicted_victim, b.predicted_victim);
        assert_eq!(a.agrees, b.agrees);
        assert_eq!(a.tasks.len(), b.tasks.len());
    }
}

/// The same report under every prefix a log tool adds gives the same
/// replay: syslog/kern.log, journalctl, `/dev/kmsg` records, printk levels,
/// mail quoting and indentation, `dmesg -T`.
#[test]
fn every_log_format_gives_the_same_replay() {
    let Some(dir) = corpus("every_log_format_gives_the_same_replay") else {
        return;
    };
    // A plain dmesg report with a foreign line in its table.
    let text = read(&dir.join("004-memcg-v1-lxc-syzkaller-61tasks.log"));
    let bodies: Vec<&str> = text
        .lines()
        .map(|l| l.split_once("] ").map_or(l, |(_, b)| b))
        .collect();
    let forms: Vec<(&str, String)> = vec![
        (
            "syslog",
            bodies
                .iter()
                .map(|b| format!("Dec  1 19:50:01 node-7 kernel: {b}\n"))
                .collect(),
        ),
        (
            "journalctl",
            bodies
                .iter()
                .map(|b| format!("Dec 01 19:50:01 node-7 kernel: [59622.1] {b}\n"))
                .collect(),
        ),
        (
            "kmsg",
            bodies
                .iter()
                .enumerate()
                .map(|(i, b)| {
                    format!(
                        "4,{},{},-;{b}\n SUBSYSTEM=memory\n",
                        900 + i,
                        59622176098u64 + i as u64
                    )
                })
                .collect(),
        ),
        (
            "printk level",
            bodies
                .iter()
                .map(|b| format!("<4>[59622.1] {b}\n"))
                .collect(),
        ),
        (
            "mail quote",
            bodies
                .iter()
                .map(|b| format!("> > [59622.1] {b}\n"))
                .collect(),
        ),
        (
            "dmesg -T",
            bodies
                .iter()
                .map(|b| format!("[Tue Dec  1 19:50:01 2026] {b}\n"))
                .collect(),
        ),
        (
            "caller id",
            bodies
                .iter()
                .map(|b| format!("[59622.1][ T1778] {b}\n"))
                .collect(),
        ),
    ];
    let want = &replay_all(&text)[0];
    for (name, form) in forms {
        let got = replay_all(&form);
        assert_eq!(got.len(), 1, "{name}");
        let got = &got[0];
        assert_eq!(got.tasks.len(), want.tasks.len(), "{name}");
        assert_eq!(got.kernel_victim, want.kernel_victim, "{name}");
        assert_eq!(got.predicted_victim, want.predicted_victim, "{name}");
        assert_eq!(got.totalpages, want.totalpages, "{name}");
        assert_eq!(got.agrees, Some(true), "{name}: {}", got.reason);
    }
}

/// A report cut anywhere never panics; cut before its table it is found but
/// not judged, and says why.
#[test]
fn truncated_reports() {
    let Some(dir) = corpus("truncated_reports") else {
        return;
    };
    for file in [
        "004-memcg-v1-lxc-syzkaller-61tasks.log",
        "017-k8s-aks-kubepods-slice-oomgroup.log",
    ] {
        let text = read(&dir.join(file));
        let lines: Vec<&str> = text.lines().collect();
        let table = lines.iter().position(|l| l.contains("[  pid  ]")).unwrap();
        for cut in 0..lines.len() {
            let part = lines[..cut].join("\n");
            let reports = replay_all(&part);
            assert!(reports.len() <= 1, "{file} cut at {cut}");
            if cut > 0 && cut <= table {
                let r = &reports[0];
                assert_eq!(r.agrees, None, "{file} cut at {cut}");
                assert!(
                    r.reason.contains("task table"),
                    "{file} cut at {cut}: {}",
                    r.reason
                );
            }
        }
        // Cut in the middle of a byte sequence too.
        let bytes = text.as_bytes();
        for cut in (0..bytes.len()).step_by(97) {
            let _ = replay_all(&String::from_utf8_lossy(&bytes[..cut]));
        }
    }
}

/// Reports our own kernels printed, committed with their kernel and
/// architecture: the guest kernels of `cargo xtask vm-test` (Debian 5.10,
/// 6.1, 6.12 and 7.3, x86_64 and aarch64, memcg v2 and host-wide OOMs, negative and
/// positive `oom_score_adj`) and the lab host's 6.18 memcg OOMs. Each must
/// name its kernel and architecture and replay to the victim the kernel
/// chose.
#[test]
fn replay_our_own_kernels_reports() {
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures");
    let mut files = log_files(&root.join("guest-reports"));
    assert!(files.len() >= 20, "{} guest fixtures", files.len());
    files.extend(log_files(&root.join("host-reports")));
    let mut kernels = std::collections::BTreeSet::new();
    let mut agree = 0;
    for f in &files {
        let name = f.file_name().unwrap().to_string_lossy().into_owned();
        let reports = replay_all(&read(f));
        let r = reports
            .iter()
            .find(|r| r.domain.is_some())
            .unwrap_or_else(|| panic!("{name}: no report"));
        let release = r
            .kernel
            .clone()
            .unwrap_or_else(|| panic!("{name}: no kernel"));
        // File names are <arch>-<release>-<scenario>.log.
        assert!(name.contains(&release), "{name}: report says {release}");
        let arch = name.split('-').next().unwrap();
        assert_eq!(r.arch.as_deref(), Some(arch), "{name}: architecture");
        eprintln!(
            "{name}: rules {} ({}), {:?} totalpages {:?}, model {:?} kernel {:?}: {}",
            r.rules.as_deref().unwrap_or("-"),
            r.rules_from.as_deref().unwrap_or("-"),
            r.domain,
            r.totalpages,
            r.predicted_victim.as_ref().map(|p| p.pid),
            r.kernel_victim.as_ref().map(|k| k.pid),
            verdict(r)
        );
        assert_eq!(r.agrees, Some(true), "{name}: {}", r.reason);
        agree += 1;
        kernels.insert(name.split('-').take(2).collect::<Vec<_>>().join("-"));
    }
    eprintln!("{} fixtures, {agree} agree", files.len());
    assert!(
        kernels.len() >= 6,
        "the guest kernels on two architectures at least: {kernels:?}"
    );
    for line in ["5.10.", "6.1.", "6.12.", "7."] {
        assert!(
            kernels.iter().any(|k| k.contains(&format!("-{line}"))),
            "no guest report of Linux {line}x: {kernels:?}"
        );
    }
}
