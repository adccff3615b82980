//! The layout's rules, checked on the source (in the manner of
//! rust-analyzer's `tidy`): each part of `oomwatch/src` is a folder, each
//! folder says what it is and what it may use, and no file uses a part its
//! folder may not. ARCHITECTURE.md explains the rules; this test keeps them.

use std::{
    collections::{BTreeMap, BTreeSet},
    path::{Path, PathBuf},
};

/// Each part and the parts it may use (through `crate::…`). Everything not
/// listed is a forbidden arrow. The graph is acyclic (checked below).
const ALLOWED: &[(&str, &[&str])] = &[
    ("model", &[]),
    ("host", &["model"]),
    ("ebpf", &["host", "model"]),
    ("snapshot", &["ebpf", "host", "model"]),
    ("replay", &["host", "model"]),
    ("telemetry", &["ebpf", "model"]),
    ("forecast", &["model"]),
    (
        "daemon",
        &[
            "ebpf",
            "forecast",
            "host",
            "model",
            "replay",
            "snapshot",
            "telemetry",
        ],
    ),
    (
        "cli",
        &[
            "daemon",
            "ebpf",
            "forecast",
            "host",
            "model",
            "replay",
            "snapshot",
            "telemetry",
        ],
    ),
];

/// Words that must not appear in the model's code (outside its tests): it
/// is pure, reads nothing, prints nothing, knows no aya and no tokio.
const MODEL_FORBIDDEN: &[&str] = &[
    "std::fs",
    "std::io",
    "std::net",
    "std::process",
    "std::time::Instant",
    "SystemTime",
    "aya",
    "tokio",
    "println!",
    "eprintln!",
    "print!(",
    "tracing::",
    "procfs",
    "libc::",
];

fn src() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("src")
}

fn rust_files(dir: &Path, out: &mut Vec<PathBuf>) {
    for e in std::fs::read_dir(dir).unwrap().flatten() {
        let p = e.path();
        if p.is_dir() {
            rust_files(&p, out);
        } else if p.extension().is_some_and(|x| x == "rs") {
            out.push(p);
        }
    }
}

/// The code of a file without its comments and without the items under
/// `#[cfg(test)]` (a test module to its closing brace, or one line: tests
/// may reach further).
fn code(text: &str) -> String {
    let lines: Vec<&str> = text
        .lines()
        .map(|l| match l.find("//") {
            Some(i) if !l[..i].contains('"') => &l[..i],
            _ => l,
        })
        .collect();
    let mut out = Vec::new();
    let mut i = 0;
    while i < lines.len() {
        if lines[i].trim() != "#[cfg(test)]" {
            out.push(lines[i]);
            i += 1;
            continue;
        }
        // Skip the item that follows: to its matching brace when it opens one.
        i += 1;
        let mut depth = 0i32;
        while i < lines.len() {
            depth += lines[i].matches('{').count() as i32;
            depth -= lines[i].matches('}').count() as i32;
            i += 1;
            if depth <= 0 {
                break;
            }
        }
    }
    out.join("\n")
}

/// The parts a piece of code names through `crate::` (as `crate::part::…`,
/// `crate::part` or inside `use crate::{part::…, …}`).
fn crate_deps(code: &str) -> BTreeSet<String> {
    let mut out = BTreeSet::new();
    let mut rest = code;
    while let Some(i) = rest.find("crate::") {
        let after = &rest[i + "crate::".len()..];
        let before_ok = rest[..i]
            .chars()
            .last()
            .is_none_or(|c| !(c.is_alphanumeric() || c == '_' || c == ':'));
        if before_ok {
            if let Some(group) = after.strip_prefix('{') {
                // Top-level names of the group, nested groups skipped.
                let mut depth = 1;
                let mut name = String::new();
                let mut at_start = true;
                for c in group.chars() {
                    match c {
                        '{' => depth += 1,
                        '}' => {
                            depth -= 1;
                            if depth == 0 {
                                break;
                            }
                        }
                        ',' if depth == 1 => {
                            at_start = true;
                            continue;
                        }
                        _ => {}
                    }
                    if depth == 1 && at_start {
                        if c.is_alphanumeric() || c == '_' {
                            name.push(c);
                        } else if !name.is_empty() {
                            out.insert(std::mem::take(&mut name));
                            at_start = false;
                        }
                    }
                }
                if !name.is_empty() {
                    out.insert(name);
                }
            } else {
                let name: String = after
                    .chars()
                    .take_while(|c| c.is_alphanumeric() || *c == '_')
                    .collect();
                if !name.is_empty() {
                    out.insert(name);
                }
            }
        }
        rest = after;
    }
    out
}

/// The forbidden arrows of a tree: (file, part it uses) for every use of a
/// part its own part may not use.
fn forbidden_arrows(files: &[(String, String)]) -> Vec<String> {
    let allowed: BTreeMap<&str, &[&str]> = ALLOWED.iter().copied().collect();
    let mut out = Vec::new();
    for (rel, text) in files {
        let part = rel.split('/').next().unwrap_or_default();
        let Some(may) = allowed.get(part) else {
            continue;
        };
        for dep in crate_deps(&code(text)) {
            if dep != part && allowed.contains_key(dep.as_str()) && !may.contains(&dep.as_str()) {
                out.push(format!("{rel}: {part} -> {dep}"));
            }
        }
    }
    out
}

fn tree() -> Vec<(String, String)> {
    let root = src();
    let mut files = Vec::new();
    rust_files(&root, &mut files);
    files.sort();
    files
        .into_iter()
        .map(|p| {
            let rel = p.strip_prefix(&root).unwrap().display().to_string();
            (rel, std::fs::read_to_string(&p).unwrap())
        })
        .collect()
}

#[test]
fn no_forbidden_arrows() {
    let bad = forbidden_arrows(&tree());
    assert!(
        bad.is_empty(),
        "imports across parts that ARCHITECTURE.md forbids:\n{}",
        bad.join("\n")
    );
}

#[test]
fn every_part_is_a_folder_that_says_what_it_may_use() {
    let root = src();
    let mut parts = BTreeSet::new();
    for e in std::fs::read_dir(&root).unwrap().flatten() {
        let name = e.file_name().to_string_lossy().into_owned();
        if e.path().is_dir() {
            parts.insert(name);
        } else {
            assert!(
                name == "lib.rs" || name == "main.rs",
                "{name}: a flat file in oomwatch/src; put it in the folder of its part \
                 (ARCHITECTURE.md)"
            );
        }
    }
    let known: BTreeSet<String> = ALLOWED.iter().map(|(p, _)| (*p).to_owned()).collect();
    assert_eq!(
        parts, known,
        "the parts on disk and the parts the rules know"
    );
    let lib = std::fs::read_to_string(root.join("lib.rs")).unwrap();
    let architecture =
        std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("../ARCHITECTURE.md"))
            .expect("ARCHITECTURE.md at the workspace root");
    for part in &parts {
        assert!(
            lib.contains(&format!("pub mod {part};")),
            "lib.rs does not declare {part}"
        );
        let m = std::fs::read_to_string(root.join(part).join("mod.rs")).unwrap();
        let doc: String = m
            .lines()
            .take_while(|l| l.starts_with("//!") || l.starts_with("#!"))
            .collect::<Vec<_>>()
            .join("\n");
        assert!(
            doc.contains("May use"),
            "{part}/mod.rs: its //! doc must say what the part is and what it may use"
        );
        assert!(
            architecture.contains(&format!("`{part}/`")),
            "ARCHITECTURE.md does not describe {part}/"
        );
    }
}

#[test]
fn the_rules_have_no_circle() {
    let allowed: BTreeMap<&str, &[&str]> = ALLOWED.iter().copied().collect();
    // Depth-first search from every part; a part met again on the path is a circle.
    fn visit<'a>(
        p: &'a str,
        allowed: &BTreeMap<&'a str, &'a [&'a str]>,
        path: &mut Vec<&'a str>,
    ) -> Option<String> {
        if let Some(i) = path.iter().position(|q| *q == p) {
            return Some(format!("{} -> {p}", path[i..].join(" -> ")));
        }
        path.push(p);
        for d in allowed.get(p).copied().unwrap_or_default() {
            if let Some(c) = visit(d, allowed, path) {
                return Some(c);
            }
        }
        path.pop();
        None
    }
    for p in allowed.keys() {
        assert_eq!(visit(p, &allowed, &mut Vec::new()), None);
    }
}

#[test]
fn the_model_is_pure() {
    for (rel, text) in tree() {
        if !rel.starts_with("model/") {
            continue;
        }
        let code = code(&text);
        for w in MODEL_FORBIDDEN {
            assert!(
                !code.contains(w),
                "{rel}: the model is pure, but its code uses `{w}`"
            );
        }
        let deps = crate_deps(&code);
        assert!(
            deps.iter().all(|d| d == "model"),
            "{rel}: the model imports {deps:?}"
        );
    }
}

#[test]
fn the_report_parser_does_not_call_the_analysis() {
    let text = std::fs::read_to_string(src().join("replay/parse.rs")).unwrap();
    let code = code(&text);
    for w in ["analysis", "std::fs", "super::kmsg", "super::input"] {
        assert!(
            !code.contains(w),
            "replay/parse.rs is the pure parser; it uses `{w}`"
        );
    }
}

/// The checker itself finds what it must find.
#[test]
fn the_checker_sees_grouped_and_inline_paths() {
    let deps = crate_deps(&code(
        "use crate::{\n    daemon::{self, x},\n    model::Process,\n};\nfn f() { crate::host::kernel_release(); }\n// crate::cli::main\n",
    ));
    assert_eq!(
        deps,
        ["daemon", "host", "model"]
            .into_iter()
            .map(String::from)
            .collect()
    );
    let bad = forbidden_arrows(&[
        (
            "telemetry/metrics.rs".into(),
            "use crate::daemon::episode::Episode;\n".into(),
        ),
        (
            "model/oom.rs".into(),
            "fn f() { crate::snapshot::x(); }\n".into(),
        ),
        (
            "daemon/mod.rs".into(),
            "use crate::{model, telemetry::metrics};\n#[cfg(test)]\nuse crate::cli;\n".into(),
        ),
    ]);
    assert_eq!(
        bad,
        [
            "telemetry/metrics.rs: telemetry -> daemon",
            "model/oom.rs: model -> snapshot"
        ]
    );
}
