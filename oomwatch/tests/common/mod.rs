//! What the report tests share: where the public corpus is, and its files.

use std::path::{Path, PathBuf};

/// `../shared/oom-reports` (or `$OOMWATCH_REPORTS`), when present.
pub fn corpus() -> Option<PathBuf> {
    let dir = std::env::var_os("OOMWATCH_REPORTS")
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../shared/oom-reports")
        });
    dir.is_dir().then_some(dir)
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
