//! `oomwatch replay`: every OOM report of a log judged against the model of
//! its own kernel version.

use crate::replay::{
    EXIT_DISAGREE, Given,
    input::{no_report_error, read_input},
    render, replay_all_given,
};

/// `oomwatch replay`.
pub fn replay(
    file: Option<&std::path::Path>,
    json: bool,
    top: usize,
    given: Given,
) -> anyhow::Result<std::process::ExitCode> {
    let (name, bytes) = read_input(file)?;
    let text = String::from_utf8_lossy(&bytes);
    let reports = replay_all_given(&text, given);
    if reports.is_empty() {
        return Err(no_report_error(&name, &bytes, &text));
    }
    if json {
        println!("{}", serde_json::to_string_pretty(&reports)?);
    } else {
        print!("{}", render(&reports, top));
    }
    let disagree = reports.iter().any(|r| r.agrees == Some(false));
    Ok(if disagree {
        std::process::ExitCode::from(EXIT_DISAGREE)
    } else {
        std::process::ExitCode::SUCCESS
    })
}
