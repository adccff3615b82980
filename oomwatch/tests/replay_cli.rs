//! `oomwatch replay` as a user runs it: the real binary on real reports
//! (`../shared/oom-reports`, read at test time), its exit status, its JSON
//! contract, and what it says about input that holds no report.

use std::{
    io::Write as _,
    process::{Command, Output, Stdio},
};

use common::{corpus, log_files};

mod common;

fn oomwatch(args: &[&str], stdin: Option<&[u8]>) -> Output {
    let mut child = Command::new(env!("CARGO_BIN_EXE_oomwatch"))
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("run oomwatch");
    let mut input = child.stdin.take().unwrap();
    if let Some(bytes) = stdin {
        input.write_all(bytes).unwrap();
    }
    drop(input);
    child.wait_with_output().unwrap()
}

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

#[test]
fn agreement_and_contradiction_set_the_exit_status() {
    let Some(dir) = corpus("agreement_and_contradiction_set_the_exit_status") else {
        return;
    };
    let ok = dir.join("004-memcg-v1-lxc-syzkaller-61tasks.log");
    let out = oomwatch(&["replay", ok.to_str().unwrap()], None);
    let stdout = text(&out.stdout);
    assert_eq!(out.status.code(), Some(0), "{stdout}{}", text(&out.stderr));
    assert!(stdout.contains("verdict:     AGREE"), "{stdout}");
    assert!(
        stdout.contains("rules:       Linux 5.15.0, stated"),
        "{stdout}"
    );
    assert!(stdout.contains("… 51 more"), "{stdout}");
    assert!(
        stdout.contains("1 report(s): 1 agree, 0 disagree, 0 not judged"),
        "{stdout}"
    );
    let bad = dir.join("003-next-badness-patch-kills-dbus.log");
    let out = oomwatch(&["replay", bad.to_str().unwrap()], None);
    let stdout = text(&out.stdout);
    assert_eq!(out.status.code(), Some(1), "{stdout}");
    assert!(
        stdout.contains("the kernel contradicts its own rules"),
        "{stdout}"
    );
}

/// The JSON contract: one object per report, these fields with these types.
#[test]
fn json_contract_over_the_whole_corpus() {
    let Some(dir) = corpus("json_contract_over_the_whole_corpus") else {
        return;
    };
    let mut all = Vec::new();
    let files = log_files(&dir);
    for f in &files {
        all.extend(std::fs::read(f).unwrap());
        all.push(b'\n');
    }
    let out = oomwatch(&["replay", "--json", "-"], Some(&all));
    assert_eq!(
        out.status.code(),
        Some(1),
        "003 disagrees: {}",
        text(&out.stderr)
    );
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).expect("JSON");
    let reports = v.as_array().expect("an array");
    assert_eq!(reports.len(), files.len());
    let opt_str = |x: &serde_json::Value| x.is_null() || x.is_string();
    for r in reports {
        let o = r.as_object().unwrap();
        for key in [
            "kernel",
            "arch",
            "constraint",
            "totalpages",
            "kernel_victim",
            "predicted_victim",
            "agrees",
            "reason",
            "candidates",
        ] {
            assert!(o.contains_key(key), "{key} missing: {r}");
        }
        assert!(opt_str(&r["kernel"]) && opt_str(&r["arch"]) && opt_str(&r["constraint"]));
        assert!(r["totalpages"].is_null() || r["totalpages"].is_u64());
        assert!(r["kernel_victim"]["pid"].is_i64());
        assert!(r["kernel_victim"]["comm"].is_string());
        let p = &r["predicted_victim"];
        assert!(
            p.is_null() || (p["pid"].is_i64() && p["comm"].is_string() && p["points"].is_i64())
        );
        assert!(r["agrees"].is_null() || r["agrees"].is_boolean());
        assert!(!r["reason"].as_str().unwrap().is_empty());
        assert!(r["candidates"].is_array());
    }
    let agree = reports.iter().filter(|r| r["agrees"] == true).count();
    assert!(agree >= 14, "{agree} agree");
}

/// Garbage, binary, empty and missing input: a clear error, exit 2, never a
/// panic.
#[test]
fn input_without_a_report() {
    let mut noise = Vec::new();
    let mut x: u32 = 0x1234_5678;
    for _ in 0..200_000 {
        x ^= x << 13;
        x ^= x >> 17;
        x ^= x << 5;
        noise.push((x >> 24) as u8);
    }
    for (what, input, expect) in [
        ("binary", noise.as_slice(), "looks binary"),
        ("empty", b"".as_slice(), "it is empty"),
        (
            "text",
            b"hello\nworld\n".as_slice(),
            "2 lines, none of them",
        ),
        (
            "half a header",
            b"Out of memory: Kill process".as_slice(),
            "no kernel OOM report",
        ),
    ] {
        let out = oomwatch(&["replay", "-"], Some(input));
        let err = text(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{what}: {err}");
        assert!(
            err.contains("standard input: no kernel OOM report found"),
            "{what}: {err}"
        );
        assert!(err.contains(expect), "{what}: {err}");
        assert!(!err.contains("panicked"), "{what}: {err}");
    }
    let out = oomwatch(&["replay", "/nonexistent/oom.log"], None);
    let err = text(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{err}");
    assert!(err.contains("read /nonexistent/oom.log"), "{err}");
}

#[test]
fn help_documents_the_exit_status() {
    let out = oomwatch(&["replay", "--help"], None);
    let help = text(&out.stdout);
    assert!(out.status.success());
    for want in [
        "Exit status",
        "0 when every report",
        "1 when at least one",
        "2 when the input",
        "--json",
        "--top",
    ] {
        assert!(help.contains(want), "{want}: {help}");
    }
}

/// What the user knows and the report does not say: `--kernel` for a paste
/// without its kernel line, `--totalpages` for the swap the report does not
/// print. The printed score then checks the given totalpages.
#[test]
fn kernel_and_totalpages_from_the_user() {
    let Some(dir) = corpus("kernel_and_totalpages_from_the_user") else {
        return;
    };
    let f = dir.join("012-memcg-v1-apiscp-site-adj600.log");
    let f = f.to_str().unwrap();
    let json = |args: &[&str]| -> serde_json::Value {
        let out = oomwatch(args, None);
        assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
        serde_json::from_slice::<serde_json::Value>(&out.stdout).unwrap()[0].clone()
    };
    let r = json(&["replay", "--json", f]);
    assert_eq!(r["kernel"], serde_json::Value::Null);
    assert!(
        r["rules_from"].as_str().unwrap().starts_with("inferred"),
        "{r}"
    );
    let r = json(&["replay", "--json", "--kernel", "3.10.0-1160.el7.x86_64", f]);
    assert_eq!(r["rules"], "3.10.0");
    assert_eq!(r["rules_from"], "given with --kernel");
    assert_eq!(r["agrees"], true);
    // Without swap, grep's 209 391 points over 131 072 pages print 1597, not
    // the 710 the kernel printed: the kernel had swap, and the replay says so.
    let r = json(&["replay", "--json", "--totalpages", "131072", f]);
    assert_eq!(r["totalpages"], 131_072);
    assert_eq!(r["totalpages_exact"], true);
    let notes = r["notes"].to_string();
    assert!(
        notes.contains("the score line says 710; the model's points for grep (25892) give 1597"),
        "{notes}"
    );
    let out = oomwatch(&["replay", "--kernel", "linux", f], None);
    assert_eq!(out.status.code(), Some(2));
    assert!(text(&out.stderr).contains("`linux` is not a kernel release"));
}
