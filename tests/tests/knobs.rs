//! The OOM sysctls in every prediction: `predict`, `explain`, `top` and
//! `check` run against a captured /proc tree (`--proc-root`) whose
//! `sys/vm` holds the knobs under test, so no host sysctl is ever changed;
//! and once against the real host, whose values they must report as read.

use std::{path::Path, process::Command};

use oomwatch_tests::{MemcgGuard, require_root};

const BIN: &str = env!("CARGO_BIN_EXE_oomwatch");

/// The lab's 6.18.44 zones (kernel-oom.md §10.2), with the min and
/// protection the kernel set for min_free_kbytes 67584, watermark_scale_factor
/// 10 and lowmem_reserve_ratio 256 256 32 0 0.
const ZONEINFO: &str = "Node 0, zone      DMA
  pages free     3840
        boost    0
        min      30
        low      37
        high     44
        promo    51
        spanned  4095
        present  3998
        managed  3840
        protection: (0, 3018, 8266, 8266, 8266)
Node 0, zone    DMA32
  pages free     772808
        boost    0
        min      6158
        low      7697
        high     9236
        promo    10775
        spanned  1044480
        present  782336
        managed  772808
        protection: (0, 0, 5248, 5248, 5248)
Node 0, zone   Normal
  pages free     628419
        boost    0
        min      10706
        low      13382
        high     16058
        promo    18734
        spanned  5505024
        present  5505024
        managed  1343488
        protection: (0, 0, 0, 0, 0)
Node 0, zone  Movable
  pages free     0
        boost    0
        min      32
        low      32
        high     32
        promo    32
        spanned  0
        present  0
        managed  0
        protection: (0, 0, 0, 0, 0)
Node 0, zone   Device
  pages free     0
        boost    0
        min      0
        low      0
        high     0
        promo    0
        spanned  0
        present  0
        managed  0
        protection: (0, 0, 0, 0, 0)
";

/// A captured /proc: two processes (`small` 100 MiB, `big` 400 MiB), the
/// lab's zones, meminfo with its commit counters, and `sysctls` over the
/// kernel's defaults.
fn proc_tree(sysctls: &[(&str, &str)], committed_as_kb: u64) -> tempfile::TempDir {
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path();
    let write = |rel: &str, text: &str| {
        let p = root.join(rel);
        std::fs::create_dir_all(p.parent().unwrap()).unwrap();
        std::fs::write(p, text).unwrap();
    };
    write("sys/kernel/osrelease", "6.18.44-knobs-test\n");
    write(
        "meminfo",
        &format!(
            "MemTotal:       24683584 kB\nMemFree:        20000000 kB\nMemAvailable:   22000000 kB\n\
             SwapTotal:             0 kB\nSwapFree:              0 kB\n\
             CommitLimit:    12341792 kB\nCommitted_AS:   {committed_as_kb} kB\n"
        ),
    );
    write("zoneinfo", ZONEINFO);
    for (name, value) in [
        ("panic_on_oom", "0"),
        ("oom_kill_allocating_task", "0"),
        ("overcommit_memory", "0"),
        ("overcommit_ratio", "50"),
        ("overcommit_kbytes", "0"),
        ("oom_dump_tasks", "1"),
        ("swappiness", "60"),
        ("min_free_kbytes", "67584"),
        ("watermark_scale_factor", "10"),
        ("lowmem_reserve_ratio", "256\t256\t32\t0\t0"),
    ] {
        let value = sysctls
            .iter()
            .find(|(n, _)| *n == name)
            .map_or(value, |(_, v)| *v);
        write(&format!("sys/vm/{name}"), &format!("{value}\n"));
    }
    for (pid, comm, rss_kb, start) in [(300, "small", 102_400, 100), (400, "big", 409_600, 200)] {
        let stat = format!(
            "{pid} ({comm}) S 1 {pid} {pid} 0 -1 4194304 0 0 0 0 0 0 0 0 20 0 1 0 {start} 3133440 382 18446744073709551615 0 0 0 0 0 0 0 0 0 0 0 0 17 0 0 0 0 0 0 0 0 0 0 0 0 0 0\n"
        );
        write(&format!("{pid}/stat"), &stat);
        write(&format!("{pid}/task/{pid}/stat"), &stat);
        write(
            &format!("{pid}/status"),
            &format!(
                "Name:\t{comm}\nUmask:\t0022\nState:\tS (sleeping)\nTgid:\t{pid}\nNgid:\t0\nPid:\t{pid}\nPPid:\t1\nTracerPid:\t0\nUid:\t1000\t1000\t1000\t1000\nGid:\t1000\t1000\t1000\t1000\nFDSize:\t64\nGroups:\t\nNStgid:\t{pid}\nNSpid:\t{pid}\nNSpgid:\t{pid}\nNSsid:\t{pid}\nVmRSS:\t{rss_kb} kB\nRssAnon:\t{rss_kb} kB\nRssFile:\t0 kB\nRssShmem:\t0 kB\nVmPTE:\t100 kB\nVmSwap:\t0 kB\nThreads:\t1\nSigQ:\t0/1\nSigPnd:\t0\nShdPnd:\t0\nSigBlk:\t0\nSigIgn:\t0\nSigCgt:\t0\nCapInh:\t0\nCapPrm:\t0\nCapEff:\t0\nCapBnd:\t0\nCapAmb:\t0\n"
            ),
        );
        write(&format!("{pid}/oom_score_adj"), "0\n");
        write(&format!("{pid}/cgroup"), "0::/\n");
    }
    tmp
}

/// Runs oomwatch with `args`; (success, stdout, stderr).
fn run(args: &[&str]) -> (bool, String, String) {
    let out = Command::new(BIN).args(args).output().unwrap();
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

fn predict_json(root: &Path, extra: &[&str]) -> serde_json::Value {
    let mut args = vec!["predict", "--json", "--proc-root", root.to_str().unwrap()];
    args.extend(extra);
    let (ok, out, err) = run(&args);
    assert!(ok, "predict: {err}");
    serde_json::from_str(&out).unwrap_or_else(|e| panic!("{e}: {out}"))
}

fn predict_text(root: &Path) -> String {
    let (ok, out, err) = run(&["predict", "--proc-root", root.to_str().unwrap()]);
    assert!(ok, "predict: {err}");
    out
}

/// The defaults: the scan's victim dies, nothing is warned about, and every
/// knob is reported with its value, the commit headroom, and each zone's
/// headroom to min + lowmem_reserve[Movable] as the sysctls give them.
#[test]
fn defaults_kill_the_victim_and_show_the_headroom() {
    let t = proc_tree(&[], 51_892);
    let p = predict_json(t.path(), &[]);
    assert_eq!(p["action"]["kind"], "kill_victim", "{p}");
    assert_eq!(p["victim"]["comm"], "big", "{p}");
    let k = &p["knobs"];
    for (name, value) in [
        ("panic_on_oom", 0),
        ("oom_kill_allocating_task", 0),
        ("overcommit_memory", 0),
        ("overcommit_ratio", 50),
        ("overcommit_kbytes", 0),
        ("oom_dump_tasks", 1),
    ] {
        assert_eq!(k[name]["value"], value, "{name}: {k}");
        assert!(
            k[name]["effect"].as_str().is_some_and(|e| !e.is_empty()),
            "{name}"
        );
    }
    assert_eq!(k["warnings"], serde_json::json!([]), "{k}");
    assert_eq!(k["commit"]["commit_limit_bytes"], 12_341_792u64 << 10);
    assert_eq!(
        k["commit"]["headroom_bytes"],
        (12_341_792u64 - 51_892) << 10
    );
    assert_eq!(k["commit"]["enforced"], false);
    let w = &k["watermarks"];
    assert_eq!(w["min_free_kbytes"], 67_584);
    let zones: Vec<(String, u64, u64, i64, bool)> = w["zones"]
        .as_array()
        .unwrap()
        .iter()
        .map(|z| {
            (
                z["zone"].as_str().unwrap().to_owned(),
                z["min_pages"].as_u64().unwrap(),
                z["lowmem_reserve_pages"].as_u64().unwrap(),
                z["headroom_pages"].as_i64().unwrap(),
                z["kernel_agrees"].as_bool().unwrap(),
            )
        })
        .collect();
    assert_eq!(
        zones,
        vec![
            ("DMA".into(), 30, 8_266, 3_840 - 8_296, true),
            ("DMA32".into(), 6_158, 5_248, 772_808 - 11_406, true),
            ("Normal".into(), 10_706, 0, 628_419 - 10_706, true),
        ]
    );
    assert_eq!(
        w["headroom_bytes"],
        (772_808u64 - 11_406 + 628_419 - 10_706) * 4096
    );
    let text = predict_text(t.path());
    assert!(
        text.contains("action: the OOM killer kills the victim below"),
        "{text}"
    );
    assert!(text.contains("\nvictim: big (400)"), "{text}");
    assert!(text.contains("vm.panic_on_oom=0"), "{text}");
    assert!(!text.contains("warning:"), "{text}");
}

/// panic_on_oom=1: a host-wide OOM panics; the scan's choice is still shown,
/// as what would die were there no panic.
#[test]
fn panic_on_oom_panics_the_host() {
    let t = proc_tree(
        &[("panic_on_oom", "1"), ("oom_kill_allocating_task", "1")],
        51_892,
    );
    let p = predict_json(t.path(), &[]);
    assert_eq!(p["action"]["kind"], "panic", "{p}");
    assert_eq!(
        p["action"]["message"],
        "Out of memory: system-wide panic_on_oom is enabled"
    );
    assert_eq!(p["victim"]["comm"], "big", "{p}");
    assert!(
        p["knobs"]["oom_kill_allocating_task"]["effect"]
            .as_str()
            .unwrap()
            .starts_with("not reached"),
        "{p}"
    );
    let text = predict_text(t.path());
    assert!(
        text.contains("action: PANIC: this OOM panics the machine (vm.panic_on_oom=1"),
        "{text}"
    );
    assert!(
        text.contains("victim (were there no panic): big (400)"),
        "{text}"
    );
    assert!(text.contains("warning: vm.panic_on_oom=1"), "{text}");
    // explain and top say the same.
    let (ok, out, err) = run(&[
        "explain",
        "300",
        "--json",
        "--proc-root",
        t.path().to_str().unwrap(),
    ]);
    assert!(ok, "{err}");
    let e: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(e["action"]["kind"], "panic", "{e}");
    assert_eq!(e["knobs"]["panic_on_oom"]["value"], 1, "{e}");
    let (ok, out, err) = run(&["top", "--once", "--proc-root", t.path().to_str().unwrap()]);
    assert!(ok, "{err}");
    let host = out.lines().find(|l| l.starts_with("host ")).unwrap();
    assert!(host.contains("PANIC"), "{out}");
    assert!(
        out.contains(
            "vm.panic_on_oom=1: this OOM panics the machine; the scan would pick big (400)"
        ),
        "{out}"
    );
}

/// oom_kill_allocating_task=1: the host's OOM kills the allocating task,
/// unknown until the OOM starts; the scan's victim is the fallback.
#[test]
fn oom_kill_allocating_task_names_the_allocating_task() {
    let t = proc_tree(&[("oom_kill_allocating_task", "1")], 51_892);
    let p = predict_json(t.path(), &[]);
    assert_eq!(p["action"]["kind"], "kill_allocating_task", "{p}");
    assert_eq!(p["knobs"]["oom_kill_allocating_task"]["value"], 1);
    let text = predict_text(t.path());
    assert!(
        text.contains("action: the allocating task is killed without a scan"),
        "{text}"
    );
    assert!(
        text.contains("victim (if the allocating task is not killable): big (400)"),
        "{text}"
    );
    let (ok, out, err) = run(&["top", "--once", "--proc-root", t.path().to_str().unwrap()]);
    assert!(ok, "{err}");
    assert!(out.contains("the allocating task"), "{out}");
}

/// Strict overcommit past its limit, and no task table: both warned about,
/// the headroom negative and enforced.
#[test]
fn strict_overcommit_and_no_task_table_are_warned() {
    let t = proc_tree(
        &[("overcommit_memory", "2"), ("oom_dump_tasks", "0")],
        13_000_000,
    );
    let p = predict_json(t.path(), &[]);
    let k = &p["knobs"];
    assert_eq!(k["commit"]["enforced"], true, "{k}");
    assert_eq!(
        k["commit"]["headroom_bytes"],
        -((13_000_000i64 - 12_341_792) << 10)
    );
    let warnings: Vec<&str> = k["warnings"]
        .as_array()
        .unwrap()
        .iter()
        .map(|w| w.as_str().unwrap())
        .collect();
    assert!(
        warnings
            .iter()
            .any(|w| w.starts_with("vm.overcommit_memory=2") && w.contains("ENOMEM")),
        "{warnings:?}"
    );
    assert!(
        warnings
            .iter()
            .any(|w| w.starts_with("vm.oom_dump_tasks=0") && w.contains("task table")),
        "{warnings:?}"
    );
    // The action is still a kill: strict overcommit fails allocations, it
    // does not change what an OOM does.
    assert_eq!(p["action"]["kind"], "kill_victim");
    let text = predict_text(t.path());
    assert!(text.contains("enforced: vm.overcommit_memory=2"), "{text}");
    assert!(text.contains("warning: vm.oom_dump_tasks=0"), "{text}");
}

/// A sysctl the kernel would not hold: one clear error naming the file,
/// no panic.
#[test]
fn a_bad_sysctl_is_named() {
    let t = proc_tree(&[("panic_on_oom", "7")], 51_892);
    let (ok, out, err) = run(&["predict", "--proc-root", t.path().to_str().unwrap()]);
    assert!(!ok, "{out}");
    assert!(err.starts_with("error: "), "{err}");
    assert!(
        err.contains("sys/vm/panic_on_oom: 7 is out of the kernel's range 0 – 2"),
        "{err}"
    );
    assert!(!err.contains("panicked"), "{err}");
}

/// A memory cgroup's OOM: panic_on_oom=1 spares it (CONSTRAINT_MEMCG), 2
/// panics it too; oom_kill_allocating_task does not apply (4.9+).
#[test]
fn memcg_domains_follow_the_constraint() {
    require_root();
    let m = MemcgGuard::create(64 << 20).unwrap();
    let cgroup = m.path.as_str();
    for (panic_on_oom, want) in [("1", "kill_victim"), ("2", "panic")] {
        let t = proc_tree(
            &[
                ("panic_on_oom", panic_on_oom),
                ("oom_kill_allocating_task", "1"),
            ],
            51_892,
        );
        let p = predict_json(t.path(), &["--cgroup", cgroup]);
        assert_eq!(p["domain"]["kind"], "memcg", "{p}");
        assert_eq!(
            p["action"]["kind"], want,
            "panic_on_oom={panic_on_oom}: {p}"
        );
        assert!(
            p["knobs"]["watermarks"].is_null(),
            "a memcg's headroom is its limit: {p}"
        );
        if want == "panic" {
            assert_eq!(
                p["action"]["message"],
                "Out of memory: compulsory panic_on_oom is enabled"
            );
        } else {
            assert!(
                p["knobs"]["oom_kill_allocating_task"]["effect"]
                    .as_str()
                    .unwrap()
                    .starts_with("ignored for memcg OOMs"),
                "{p}"
            );
        }
    }
}

/// `check` reports the knobs of a host-wide OOM and their warnings; they
/// do not stop `oomwatch run`.
#[test]
fn check_reports_the_knobs() {
    require_root();
    let t = proc_tree(&[("panic_on_oom", "2")], 51_892);
    let (_, out, err) = run(&["check", "--json", "--proc-root", t.path().to_str().unwrap()]);
    let c: serde_json::Value =
        serde_json::from_str(&out).unwrap_or_else(|e| panic!("{e}: {out}{err}"));
    assert_eq!(c["knobs"]["action"]["kind"], "panic", "{c}");
    assert_eq!(c["knobs"]["panic_on_oom"]["value"], 2);
    assert!(
        c["warnings"]
            .as_array()
            .unwrap()
            .iter()
            .any(|w| w.as_str().unwrap().starts_with("vm.panic_on_oom=2")),
        "{c}"
    );
    assert!(
        !c["problems"]
            .as_array()
            .unwrap()
            .iter()
            .any(|p| p.as_str().unwrap().contains("panic_on_oom")),
        "{c}"
    );
    let (_, text, _) = run(&["check", "--proc-root", t.path().to_str().unwrap()]);
    assert!(text.contains("host-wide OOM"), "{text}");
    assert!(text.contains("PANIC"), "{text}");
}

/// The real host: the knobs are the values /proc/sys/vm holds, and with
/// panic_on_oom and oom_kill_allocating_task at 0 (the lab's defaults) the
/// scan's victim is the one killed.
#[test]
fn the_host_reports_its_own_sysctls() {
    let p = {
        let (ok, out, err) = run(&["predict", "--json", "--source", "proc", "--top", "1"]);
        assert!(ok, "{err}");
        serde_json::from_str::<serde_json::Value>(&out).unwrap()
    };
    let read = |name: &str| -> u64 {
        std::fs::read_to_string(format!("/proc/sys/vm/{name}"))
            .unwrap()
            .trim()
            .parse()
            .unwrap()
    };
    for name in [
        "panic_on_oom",
        "oom_kill_allocating_task",
        "overcommit_memory",
        "overcommit_ratio",
        "overcommit_kbytes",
        "oom_dump_tasks",
    ] {
        assert_eq!(p["knobs"][name]["value"], read(name), "{name}");
    }
    assert_eq!(
        p["knobs"]["watermarks"]["min_free_kbytes"],
        read("min_free_kbytes")
    );
    if read("panic_on_oom") == 0 && read("oom_kill_allocating_task") == 0 {
        assert_eq!(p["action"]["kind"], "kill_victim", "{p}");
    }
    // This kernel's zoneinfo is what the sysctls give.
    for z in p["knobs"]["watermarks"]["zones"].as_array().unwrap() {
        assert_eq!(z["kernel_agrees"], true, "{z}");
    }
}
