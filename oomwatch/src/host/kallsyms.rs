//! Symbols of the running kernel from `/proc/kallsyms`: what BTF does not
//! say. The address of `__per_cpu_offset[]`, which summing a per-CPU counter
//! by hand needs (Linux 7.0's `oom_badness()` sums them, 5898aa8f9a0b), and
//! the compiler's clones of a function (`oom_badness.part.0`), which callers
//! in the same file may call instead of the function itself.

/// Reads `/proc/kallsyms`.
pub fn read() -> Result<String, String> {
    std::fs::read_to_string("/proc/kallsyms").map_err(|e| format!("read /proc/kallsyms: {e}"))
}

/// The address of the kernel symbol `name` (not a module's) in kallsyms
/// `text`; None when it is absent or shown as 0 (`kernel.kptr_restrict`
/// hides addresses from this process).
pub fn address(text: &str, name: &str) -> Option<u64> {
    text.lines()
        .find_map(|line| {
            let mut f = line.split_whitespace();
            let addr = f.next()?;
            let _kind = f.next()?;
            if f.next()? != name || f.next().is_some() {
                return None;
            }
            u64::from_str_radix(addr, 16).ok()
        })
        .filter(|&a| a != 0)
}

/// The address of `__per_cpu_offset` (each CPU's per-CPU area offset), or
/// why it cannot be had, in one sentence.
pub fn per_cpu_offset(text: &str) -> Result<u64, String> {
    match address(text, "__per_cpu_offset") {
        Some(a) => Ok(a),
        None if text.lines().any(|l| l.ends_with(" __per_cpu_offset")) => Err(
            "/proc/kallsyms shows __per_cpu_offset at 0 (kernel.kptr_restrict hides kernel \
             addresses from this process)"
                .into(),
        ),
        None => Err("/proc/kallsyms has no __per_cpu_offset".into()),
    }
}

/// The partial-inlining clones of kernel function `name` (`name.part.N`,
/// gcc's `-fpartial-inlining`): `name` itself is then a small wrapper that
/// does the first checks and jumps into the clone, and callers in the same
/// file may inline the wrapper and call the clone directly, so a probe on
/// `name` misses them. The clone keeps the parameters that reach it (a
/// clone whose parameters changed is `.isra`/`.constprop`, not listed).
pub fn part_clones(text: &str, name: &str) -> Vec<String> {
    let prefix = format!("{name}.part.");
    let mut out: Vec<String> = text
        .lines()
        .filter_map(|line| {
            let mut f = line.split_whitespace();
            let (_addr, kind, sym) = (f.next()?, f.next()?, f.next()?);
            let n = sym.strip_prefix(&prefix)?;
            (f.next().is_none()
                && matches!(kind, "t" | "T")
                && !n.is_empty()
                && n.bytes().all(|b| b.is_ascii_digit()))
            .then(|| sym.to_owned())
        })
        .collect();
    out.sort();
    out.dedup();
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Lines of a Debian 5.10.0-46 amd64 guest's /proc/kallsyms.
    const KALLSYMS_5_10: &str = "\
ffffffffaa818560 t oom_badness.part.0
ffffffffaa8186a0 t oom_evaluate_task
ffffffffaa818d70 T oom_badness
ffffffffab41c8a0 D __per_cpu_offset
ffffffffc0a01000 t helper.part.0\t[some_module]
ffffffffaa818e00 t oom_badness.isra.0
";

    #[test]
    fn addresses() {
        assert_eq!(
            address(KALLSYMS_5_10, "oom_badness"),
            Some(0xffff_ffff_aa81_8d70)
        );
        assert_eq!(per_cpu_offset(KALLSYMS_5_10), Ok(0xffff_ffff_ab41_c8a0));
        assert_eq!(address(KALLSYMS_5_10, "oom_badnes"), None);
        assert_eq!(address(KALLSYMS_5_10, "helper.part.0"), None, "a module's");
    }

    #[test]
    fn hidden_addresses_are_named() {
        let hidden = "0000000000000000 D __per_cpu_offset\n";
        let err = per_cpu_offset(hidden).unwrap_err();
        assert!(err.contains("kptr_restrict"), "{err}");
        let err = per_cpu_offset("ffffffffaa818d70 T oom_badness\n").unwrap_err();
        assert!(err.contains("no __per_cpu_offset"), "{err}");
    }

    #[test]
    fn part_clones_only() {
        assert_eq!(
            part_clones(KALLSYMS_5_10, "oom_badness"),
            vec!["oom_badness.part.0".to_owned()]
        );
        assert!(part_clones(KALLSYMS_5_10, "oom_evaluate_task").is_empty());
        assert!(part_clones("", "oom_badness").is_empty());
    }
}
