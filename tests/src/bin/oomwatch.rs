//! The `oomwatch` command, built inside this package so that the tests always
//! run the current code (`CARGO_BIN_EXE_oomwatch`).
fn main() -> std::process::ExitCode {
    oomwatch::cli::main()
}
