//! How a test that cannot run its subject says so. One file, used by two
//! crates: this one (`oomwatch_tests::skip`) and `oomwatch`'s own
//! integration tests (`oomwatch/tests/common`, through `#[path]`), which
//! cannot depend on this crate (it depends on `oomwatch`).

/// A test that cannot run its subject here (the host lacks what it needs):
/// under `CI=true` that is a failure, since CI must run every test; elsewhere
/// the test says so on stderr and is counted: with `OOMWATCH_SKIPPED` set to a
/// file (`cargo xtask test` sets it), one line is appended there, and the
/// suite lists them at its end. Call it, then return.
pub fn skip(test: &str, why: &str) {
    if std::env::var("CI").as_deref() == Ok("true") {
        panic!("{test}: cannot run its subject under CI=true: {why}");
    }
    eprintln!("{test}: skipped: {why}");
    if let Some(path) = std::env::var_os("OOMWATCH_SKIPPED") {
        use std::io::Write as _;
        let appended = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&path)
            .and_then(|mut f| writeln!(f, "{test}: {why}"));
        if let Err(e) = appended {
            panic!("{test}: skipped, and cannot count it in {path:?}: {e}");
        }
    }
}
