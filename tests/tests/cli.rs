//! `oomwatch check` and the refusal to run without privileges.

use std::{os::unix::process::CommandExt as _, process::Command};

use oomwatch_tests::require_root;

const NOBODY: u32 = 65534;

/// As root on the lab kernel: the JSON report names what this kernel offers,
/// and says the daemon can run.
#[test]
fn check_json_describes_this_kernel() {
    require_root();
    let out = Command::new(env!("CARGO_BIN_EXE_oomwatch"))
        .args(["check", "--json"])
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{text}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let v: serde_json::Value = serde_json::from_str(&text).expect("check --json is JSON");
    assert_eq!(v["can_run"], true, "{text}");
    assert_eq!(v["btf"]["available"], true);
    assert_eq!(v["tracefs"]["available"], true);
    let tps = v["tracepoints"].as_array().unwrap();
    let mv = tps
        .iter()
        .find(|t| t["name"] == "oom:mark_victim")
        .expect("mark_victim listed");
    assert_eq!(mv["available"], true);
    assert!(
        mv["detail"].as_str().unwrap().contains("oom_score_adj"),
        "{mv}"
    );
    assert_eq!(v["memory_controller"]["available"], true);
    assert_eq!(v["privileges"]["euid"], 0);
    // The rules the model applies, keyed on this kernel's version, each
    // with its reason; the lab's 6.18 scores with approximate counters.
    let release = std::fs::read_to_string("/proc/sys/kernel/osrelease").unwrap();
    let rules = &v["rules"];
    let version = rules["version"].as_str().expect("rules.version");
    assert!(
        release.starts_with(version.rsplit_once('.').unwrap().0),
        "{version} vs {release}"
    );
    let expect = match version
        .split('.')
        .map(|n| n.parse::<u32>().unwrap())
        .collect::<Vec<_>>()[..]
    {
        [m, n, _] if m < 6 || (m == 6 && n < 2) => "atomic",
        [m, _, _] if m < 7 => "approximate",
        _ => "precise_sums",
    };
    assert_eq!(rules["rss_counters"], expect, "{rules}");
    // Why: the release, and what the tasks measured said of it (they
    // decide only where they contradict it, which this stock kernel's never do).
    let from = rules["rss_counters_from"]
        .as_str()
        .expect("rss_counters_from");
    assert!(
        from.starts_with(&format!("the release: Linux {version}")) && from.contains("; measured"),
        "{from}"
    );
    let changes = rules["changes"].as_array().unwrap();
    assert!(changes.len() >= 50, "{}", changes.len());
    let precise = changes
        .iter()
        .find(|c| c["id"] == "precise_oom_rss")
        .expect("precise_oom_rss listed");
    assert_eq!(precise["applies"], expect == "precise_sums", "{precise}");
    assert!(
        precise["why"].as_str().unwrap().contains("7.0.0"),
        "{precise}"
    );
    // What this kernel's own tasks say of its counters: measured, counted.
    let measured = &rules["measured"];
    let counted: u64 = ["precise", "approximate", "undecided"]
        .iter()
        .map(|k| measured[k].as_u64().expect("a count"))
        .sum();
    assert!(counted >= 1, "{measured}");
    assert!(
        measured["verdict"].as_str().is_some_and(|v| !v.is_empty()),
        "{measured}"
    );
    // fentry/fexit were really tried: either they load, or the kernel's refusal
    // is reported (this lab's 6.18 refuses them with EPERM).
    for key in ["fentry", "fexit"] {
        let detail = v[key]["detail"].as_str().unwrap();
        assert!(
            detail.starts_with("loads") || detail.starts_with("refused: BPF_PROG_LOAD"),
            "{key}: {detail}"
        );
    }
    // The real probe set was attached once: every hook says how it went in,
    // or why it could not, naming each way it tried.
    let hooks = v["kernel_hooks"].as_array().unwrap();
    let functions: Vec<&str> = hooks
        .iter()
        .map(|h| h["function"].as_str().unwrap())
        .collect();
    for f in [
        "out_of_memory",
        "oom_badness",
        "oom_kill_process",
        "pagefault_out_of_memory",
    ] {
        assert!(functions.contains(&f), "{f} in {functions:?}");
    }
    let fentry_loads = v["fentry"]["available"] == true;
    let kprobes = v["kprobes"]["available"] == true;
    for h in hooks {
        match h["path"].as_str() {
            Some(path) => assert!(fentry_loads || kprobes, "{h} attached by {path}?"),
            None => {
                let why = h["reason"].as_str().unwrap();
                assert!(why.contains("fentry: ") || why.contains("fexit: "), "{h}");
                assert!(why.contains("kprobe"), "{h}");
            }
        }
    }
    // Every tracepoint this kernel has is attached: nothing is degraded
    // except the hooks above (reported there).
    let degraded = v["degraded"].as_array().unwrap();
    assert!(degraded.is_empty(), "{degraded:?}");
}

fn as_nobody(args: &[&str]) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_oomwatch"))
        .args(args)
        .uid(NOBODY)
        .gid(NOBODY)
        .output()
        .expect("run oomwatch as nobody")
}

/// Without root, `run` exits non-zero with one sentence naming the missing
/// capabilities, and no panic.
#[test]
fn run_without_privileges_names_what_is_missing() {
    require_root();
    let out = as_nobody(&["run", "--listen", "127.0.0.1:0"]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "{stderr}");
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    let lines: Vec<&str> = stderr.lines().collect();
    assert_eq!(lines.len(), 1, "one line expected:\n{stderr}");
    assert!(
        lines[0].starts_with("error: oomwatch needs CAP_BPF and CAP_PERFMON (or CAP_SYS_ADMIN)"),
        "{stderr}"
    );
    assert!(lines[0].contains("euid 65534"), "{stderr}");
}

/// `check` works unprivileged too, and says why `run` would not.
#[test]
fn check_without_privileges_reports_and_exits_1() {
    require_root();
    let out = as_nobody(&["check"]);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(
        out.status.code(),
        Some(1),
        "{stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        stdout.contains("oomwatch run cannot start here:"),
        "{stdout}"
    );
    assert!(stdout.contains("CAP_BPF"), "{stdout}");
}

/// `oomwatch top --once` lists a memory cgroup with a limit, its headroom and
/// its next victim (the larger of two hogs).
#[test]
fn top_once_lists_memcg_domains() {
    require_root();
    let memcg = oomwatch_tests::MemcgGuard::create(64 << 20).unwrap();
    let bin = env!("CARGO_BIN_EXE_oomwatch-hog");
    let mut a = oomwatch_tests::Hog::start(bin, &memcg, 8).unwrap();
    assert!(a.wait_ready());
    let mut b = oomwatch_tests::Hog::start(bin, &memcg, 16).unwrap();
    assert!(b.wait_ready());
    let out = Command::new(env!("CARGO_BIN_EXE_oomwatch"))
        .args(["top", "--once"])
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{text}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let line = text
        .lines()
        .find(|l| l.starts_with(&format!("memcg {} ", memcg.path)))
        .unwrap_or_else(|| panic!("no line for {}:\n{text}", memcg.path));
    assert!(
        line.contains(&format!("oomwatch-hog ({})", b.pid())),
        "{line}"
    );
    assert!(line.contains("MiB"), "headroom in {line}");
    assert!(text.starts_with("oomwatch top: "), "{text}");
    assert!(!text.contains("model ≠ kernel"), "{text}");
    drop((a, b));
}
