//! The possible CPUs (`/sys/devices/system/cpu/possible`): every CPU that
//! has a per-CPU area, and so a part of each per-CPU counter.

/// CPUs [`PossibleCpus::mask`] can hold (the task iterator's loop bound).
pub const MAX_CPUS: u32 = 256;

/// The possible CPUs as a bit mask (bit `cpu % 64` of word `cpu / 64`),
/// and one past the highest (`nr_cpu_ids`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PossibleCpus {
    pub mask: [u64; 4],
    pub nr_cpu_ids: u32,
}

/// Parses a kernel CPU list (`0-3,8,10-11`).
pub fn parse_cpu_list(text: &str) -> Result<PossibleCpus, String> {
    let text = text.trim();
    if text.is_empty() {
        return Err("the possible-CPU list is empty".into());
    }
    let mut mask = [0u64; 4];
    let mut nr_cpu_ids = 0;
    for part in text.split(',') {
        let (lo, hi) = part.split_once('-').unwrap_or((part, part));
        let num = |s: &str| {
            s.trim()
                .parse::<u32>()
                .map_err(|_| format!("`{part}` in the CPU list `{text}` is not a CPU range"))
        };
        let (lo, hi) = (num(lo)?, num(hi)?);
        if lo > hi {
            return Err(format!("`{part}` in the CPU list `{text}` runs backwards"));
        }
        if hi >= MAX_CPUS {
            return Err(format!(
                "CPU {hi} is possible here; the task iterator sums at most {MAX_CPUS} CPUs"
            ));
        }
        for cpu in lo..=hi {
            mask[(cpu / 64) as usize] |= 1 << (cpu % 64);
        }
        nr_cpu_ids = nr_cpu_ids.max(hi + 1);
    }
    Ok(PossibleCpus { mask, nr_cpu_ids })
}

/// Reads and parses `/sys/devices/system/cpu/possible`.
pub fn possible() -> Result<PossibleCpus, String> {
    let path = "/sys/devices/system/cpu/possible";
    let text = std::fs::read_to_string(path).map_err(|e| format!("read {path}: {e}"))?;
    parse_cpu_list(&text)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lists() {
        assert_eq!(
            parse_cpu_list("0\n"),
            Ok(PossibleCpus {
                mask: [1, 0, 0, 0],
                nr_cpu_ids: 1
            })
        );
        let p = parse_cpu_list("0-1,64,70-71").unwrap();
        assert_eq!(p.mask, [0b11, (1 << 0) | (1 << 6) | (1 << 7), 0, 0]);
        assert_eq!(p.nr_cpu_ids, 72);
        assert_eq!(parse_cpu_list("0-255").unwrap().mask, [u64::MAX; 4]);
    }

    #[test]
    fn bad_lists_are_errors() {
        assert!(parse_cpu_list("").is_err());
        assert!(parse_cpu_list("3-1").is_err());
        assert!(parse_cpu_list("a").is_err());
        let err = parse_cpu_list("0-511").unwrap_err();
        assert!(err.contains("at most 256"), "{err}");
    }
}
