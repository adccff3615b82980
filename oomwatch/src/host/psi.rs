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

/// The `some` and `full` totals (µs) of a pressure file's text; `full`
/// is None where the file has no such line (the host's CPU file before 5.13).
pub fn parse_totals(text: &str) -> Option<(u64, Option<u64>)> {
    let total = |kind: &str| {
        text.lines()
            .find(|l| l.starts_with(kind))?
            .split_whitespace()
            .find_map(|f| f.strip_prefix("total="))?
            .parse()
            .ok()
    };
    Some((total("some ")?, total("full ")))
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
        assert_eq!(parse_totals(text), Some((19_663_903, Some(13_780_400))));
        assert_eq!(parse_totals("some total=7\n"), Some((7, None)));
        assert_eq!(parse_totals("full total=5\n"), None);
    }
}
