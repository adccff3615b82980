//! Pressure stall information for memory (`/proc/pressure/memory`).

/// Where the kernel publishes memory pressure.
pub const MEMORY: &str = "/proc/pressure/memory";

/// The `some ... total=` value (µs of stall summed over CPUs) of a
/// `/proc/pressure/*` file's text.
pub fn parse_some_total(text: &str) -> Option<u64> {
    text.lines()
        .find(|l| l.starts_with("some "))?
        .split_whitespace()
        .find_map(|f| f.strip_prefix("total="))?
        .parse()
        .ok()
}

/// Memory's `some` total now (None without PSI).
pub fn memory_some_total() -> Option<u64> {
    std::fs::read_to_string(MEMORY)
        .ok()
        .as_deref()
        .and_then(parse_some_total)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_the_kernels_psi_file() {
        let text = "some avg10=0.00 avg60=0.00 avg300=0.00 total=19663903\n\
                    full avg10=0.00 avg60=0.00 avg300=0.00 total=13780400\n";
        assert_eq!(parse_some_total(text), Some(19_663_903));
        assert_eq!(parse_some_total("full total=5\n"), None);
        assert_eq!(parse_some_total(""), None);
    }
}
