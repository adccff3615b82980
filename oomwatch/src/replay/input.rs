//! The inputs of `oomwatch replay`: a file, standard input, or the records
//! `/dev/kmsg` still holds; and why an input holds no report.

/// Exit status: at least one report disagrees.
pub const EXIT_DISAGREE: u8 = 1;
/// Exit status: no OOM report in the input, or the input cannot be read.
pub const EXIT_NO_REPORT: u8 = 2;

/// Reads the input of `oomwatch replay`: FILE, `-` (stdin), or with neither
/// the terminal's stdin replaced by the kernel's own log.
pub fn read_input(file: Option<&std::path::Path>) -> anyhow::Result<(String, Vec<u8>)> {
    use std::io::{IsTerminal as _, Read as _};

    use anyhow::Context as _;
    match file {
        // A plain read of /dev/kmsg would wait for the next record forever.
        Some(p) if p == std::path::Path::new("/dev/kmsg") => {
            Ok(("the kernel log (/dev/kmsg)".into(), read_kmsg()?))
        }
        Some(p) if p.as_os_str() != "-" => {
            let bytes = std::fs::read(p).with_context(|| {
                format!(
                    "read {}: give a readable log file, or `-` for standard input",
                    p.display()
                )
            })?;
            Ok((p.display().to_string(), bytes))
        }
        Some(_) => {
            let mut bytes = Vec::new();
            std::io::stdin()
                .read_to_end(&mut bytes)
                .context("read standard input")?;
            Ok(("standard input".into(), bytes))
        }
        None if !std::io::stdin().is_terminal() => read_input(Some(std::path::Path::new("-"))),
        None => Ok(("the kernel log (/dev/kmsg)".into(), read_kmsg()?)),
    }
}

/// Every record `/dev/kmsg` still holds, without waiting for new ones.
fn read_kmsg() -> anyhow::Result<Vec<u8>> {
    use std::{io::Read as _, os::unix::fs::OpenOptionsExt as _};

    use anyhow::Context as _;
    let mut f = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NONBLOCK)
        .open("/dev/kmsg")
        .context(
            "open /dev/kmsg (reading the kernel log needs CAP_SYSLOG, or kernel.dmesg_restrict=0): \
             run as root, or pass a saved log: `dmesg > oom.log; oomwatch replay oom.log`",
        )?;
    let mut out = Vec::new();
    let mut buf = vec![0u8; 16 * 1024];
    loop {
        match f.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => out.extend_from_slice(&buf[..n]),
            // A record overwritten while we read: go on with the next.
            Err(e) if e.raw_os_error() == Some(libc::EPIPE) => continue,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => break,
            Err(e) => return Err(e).context("read /dev/kmsg"),
        }
    }
    Ok(out)
}

/// Why an input holds no report, for the error.
pub fn no_report_error(name: &str, bytes: &[u8], text: &str) -> anyhow::Error {
    let nul = bytes.iter().filter(|&&b| b == 0).count();
    let bad = text
        .chars()
        .filter(|&c| c == char::REPLACEMENT_CHARACTER)
        .count();
    let kind = if bytes.is_empty() {
        "it is empty".to_owned()
    } else if nul * 100 > bytes.len() || bad * 20 > text.chars().count().max(1) {
        format!(
            "it looks binary ({nul} NUL bytes, {bad} invalid UTF-8 sequences in {} bytes)",
            bytes.len()
        )
    } else {
        format!(
            "{} lines, none of them an OOM report's",
            text.lines().count()
        )
    };
    anyhow::anyhow!(
        "{name}: no kernel OOM report found ({kind}). oomwatch looks for the kernel's \
         `… invoked oom-killer: gfp_mask=…` and `Killed process N (comm)` lines: pass a text \
         log such as `dmesg`, `journalctl -k`, /var/log/kern.log or /var/log/messages"
    )
}
