//! What the report tests share: where the public corpus is, and its files.

use std::path::{Path, PathBuf};

#[path = "../../../tests/src/skip.rs"]
mod skip;

/// `../shared/oom-reports` (or `$OOMWATCH_REPORTS`), when present. When it
/// is not, `test` cannot run its subject: under `CI=true` that fails it;
/// elsewhere it is said on stderr and counted as skipped (one line in the
/// file `$OOMWATCH_SKIPPED`, which `cargo xtask test` sets and lists).
pub fn corpus(test: &str) -> Option<PathBuf> {
    let dir = std::env::var_os("OOMWATCH_REPORTS")
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../shared/oom-reports")
        });
    if dir.is_dir() {
        return Some(dir);
    }
    let why = format!(
        "no report corpus at {} (set OOMWATCH_REPORTS to a copy of ../shared/oom-reports)",
        dir.display()
    );
    skip::skip(test, &why);
    None
}

/// The `*.log` files of `dir`, sorted.
pub fn log_files(dir: &Path) -> Vec<PathBuf> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(dir)
        .unwrap()
        .flatten()
        .map(|e| e.path())
        .filter(|p| p.extension().is_some_and(|x| x == "log"))
        .collect();
    files.sort();
    files
}
