//! GFP masks both ways: a numeric `gfp_mask` ↔ the names the kernel prints
//! (`GFP_KERNEL|__GFP_NOWARN`), per kernel version, and the bits the
//! allocator's OOM gates test (kernel-oom.md §7.8).
//!
//! The exact table of a running kernel comes from its own tracepoint format
//! ([`GfpTable::from_trace_format`], `kmem/mm_page_alloc`), which the kernel
//! builds from `include/trace/events/mmflags.h`: composites first, then single
//! flags, in the order it prints them. [`GfpTable::builtin`] is the table for
//! a version without a live kernel (replaying a report): complete for the 5.2+
//! bit layout, only the OOM-gating flags before.

use serde::Serialize;

use super::{behavior::KernelBehavior, version::v};

/// Names and masks in the kernel's print order.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct GfpTable {
    pub entries: Vec<(String, u64)>,
    /// The table lacks flags of this version (pre-5.2 layouts).
    pub partial: bool,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum GfpError {
    #[error("unknown GFP flag `{flag}`{hint}")]
    UnknownFlag { flag: String, hint: String },
    #[error("empty GFP mask: give names like GFP_KERNEL|__GFP_NOWARN or a number like 0xcc0")]
    Empty,
}

/// The single-flag bits of the 5.2+ layout, in bit order: (name, bit).
const MODERN_BITS: &[(&str, u32)] = &[
    ("__GFP_DMA", 0),
    ("__GFP_HIGHMEM", 1),
    ("__GFP_DMA32", 2),
    ("__GFP_MOVABLE", 3),
    ("__GFP_RECLAIMABLE", 4),
    ("__GFP_HIGH", 5),
    ("__GFP_IO", 6),
    ("__GFP_FS", 7),
    ("__GFP_ZERO", 8),
    ("__GFP_ATOMIC", 9),
    ("__GFP_DIRECT_RECLAIM", 10),
    ("__GFP_KSWAPD_RECLAIM", 11),
    ("__GFP_WRITE", 12),
    ("__GFP_NOWARN", 13),
    ("__GFP_RETRY_MAYFAIL", 14),
    ("__GFP_NOFAIL", 15),
    ("__GFP_NORETRY", 16),
    ("__GFP_MEMALLOC", 17),
    ("__GFP_COMP", 18),
    ("__GFP_NOMEMALLOC", 19),
    ("__GFP_HARDWALL", 20),
    ("__GFP_THISNODE", 21),
    ("__GFP_ACCOUNT", 22),
];

impl GfpTable {
    /// The table for kernel `kb` without asking a running kernel.
    pub fn builtin(kb: &KernelBehavior) -> Self {
        let ver = kb.version;
        if ver < v(5, 2, 0) {
            // Only the flags kernel-oom.md §7.8 pins per version.
            let (fs, direct, nofail, noretry, repeat, thisnode, repeat_name) = if ver < v(4, 4, 0) {
                (0x80, 0x10, 0x800, 0x1000, 0x400, 0x40000, "__GFP_REPEAT")
            } else if ver < v(4, 19, 0) {
                let name = if ver < v(4, 13, 0) {
                    "__GFP_REPEAT"
                } else {
                    "__GFP_RETRY_MAYFAIL"
                };
                (0x80, 0x400000, 0x800, 0x1000, 0x400, 0x40000, name)
            } else {
                (
                    0x80,
                    0x200000,
                    0x800,
                    0x1000,
                    0x400,
                    0x40000,
                    "__GFP_RETRY_MAYFAIL",
                )
            };
            let direct_name = if ver < v(4, 4, 0) {
                "__GFP_WAIT"
            } else {
                "__GFP_DIRECT_RECLAIM"
            };
            return GfpTable {
                entries: vec![
                    ("__GFP_FS".into(), fs),
                    (direct_name.into(), direct),
                    ("__GFP_NOFAIL".into(), nofail),
                    ("__GFP_NORETRY".into(), noretry),
                    (repeat_name.into(), repeat),
                    ("__GFP_THISNODE".into(), thisnode),
                ],
                partial: true,
            };
        }
        // __GFP_ATOMIC (bit 9) was dropped in 6.3 ("mm: discard __GFP_ATOMIC").
        let atomic_bit = ver < v(6, 3, 0);
        let bit = |name: &str| -> u64 {
            MODERN_BITS
                .iter()
                .find(|(n, _)| *n == name)
                .map(|(_, b)| 1u64 << b)
                .unwrap_or(0)
        };
        let reclaim = bit("__GFP_DIRECT_RECLAIM") | bit("__GFP_KSWAPD_RECLAIM");
        let kernel = reclaim | bit("__GFP_IO") | bit("__GFP_FS");
        let user = kernel | bit("__GFP_HARDWALL");
        let highuser = user | bit("__GFP_HIGHMEM");
        let movable = highuser | bit("__GFP_MOVABLE");
        let light = (movable | bit("__GFP_COMP") | bit("__GFP_NOMEMALLOC") | bit("__GFP_NOWARN"))
            & !reclaim;
        let atomic = bit("__GFP_HIGH")
            | bit("__GFP_KSWAPD_RECLAIM")
            | if atomic_bit { bit("__GFP_ATOMIC") } else { 0 };
        let mut entries: Vec<(String, u64)> = vec![
            ("GFP_TRANSHUGE".into(), light | bit("__GFP_DIRECT_RECLAIM")),
            ("GFP_TRANSHUGE_LIGHT".into(), light),
            ("GFP_HIGHUSER_MOVABLE".into(), movable),
            ("GFP_HIGHUSER".into(), highuser),
            ("GFP_USER".into(), user),
            ("GFP_KERNEL_ACCOUNT".into(), kernel | bit("__GFP_ACCOUNT")),
            ("GFP_KERNEL".into(), kernel),
            ("GFP_NOFS".into(), reclaim | bit("__GFP_IO")),
            ("GFP_ATOMIC".into(), atomic),
            ("GFP_NOIO".into(), reclaim),
            // GFP_NOWAIT also carries __GFP_NOWARN on 6.18.44 (seen in its
            // mm_page_alloc format); the version that added it is unverified.
            (
                "GFP_NOWAIT".into(),
                bit("__GFP_KSWAPD_RECLAIM")
                    | if ver >= v(6, 18, 0) {
                        bit("__GFP_NOWARN")
                    } else {
                        0
                    },
            ),
            ("GFP_DMA".into(), bit("__GFP_DMA")),
            ("GFP_DMA32".into(), bit("__GFP_DMA32")),
            ("__GFP_RECLAIM".into(), reclaim),
        ];
        if ver >= v(6, 10, 0) {
            // Bit order (seen on 6.18.44's mm_page_alloc format; the release
            // that switched to it is unverified, 6.7.4 still printed the
            // legacy order below).
            for (name, b) in MODERN_BITS {
                if *name == "__GFP_ATOMIC" && !atomic_bit {
                    continue;
                }
                entries.push(((*name).into(), 1 << b));
            }
        } else {
            // The legacy order of include/trace/events/mmflags.h.
            entries.retain(|(n, _)| n != "__GFP_RECLAIM");
            entries.insert(
                entries
                    .iter()
                    .position(|(n, _)| n == "GFP_DMA32")
                    .unwrap_or(entries.len()),
                ("__GFP_HIGHMEM".into(), bit("__GFP_HIGHMEM")),
            );
            for name in [
                "__GFP_HIGH",
                "__GFP_ATOMIC",
                "__GFP_IO",
                "__GFP_FS",
                "__GFP_NOWARN",
                "__GFP_RETRY_MAYFAIL",
                "__GFP_NOFAIL",
                "__GFP_NORETRY",
                "__GFP_COMP",
                "__GFP_ZERO",
                "__GFP_NOMEMALLOC",
                "__GFP_MEMALLOC",
                "__GFP_HARDWALL",
                "__GFP_THISNODE",
                "__GFP_RECLAIMABLE",
                "__GFP_MOVABLE",
                "__GFP_ACCOUNT",
                "__GFP_WRITE",
                "__GFP_RECLAIM",
                "__GFP_DIRECT_RECLAIM",
                "__GFP_KSWAPD_RECLAIM",
            ] {
                if name == "__GFP_ATOMIC" && !atomic_bit {
                    continue;
                }
                let m = if name == "__GFP_RECLAIM" {
                    reclaim
                } else {
                    bit(name)
                };
                entries.push((name.into(), m));
            }
        }
        GfpTable {
            entries,
            partial: false,
        }
    }

    /// The table of the running kernel, from the `print fmt` line of
    /// `events/kmem/mm_page_alloc/format` (its `__print_flags` list).
    pub fn from_trace_format(text: &str) -> Option<Self> {
        let start = text.find("__print_flags(")?;
        let mut entries = Vec::new();
        let mut rest = &text[start..];
        while let Some(open) = rest.find('{') {
            let body = &rest[open + 1..];
            // The list ends with a `{ 0, ((void *)0) }` sentinel.
            let Some(close) = body.find("\"}") else { break };
            let entry = &body[..close];
            let quote = entry.rfind(", \"")?;
            let name = entry[quote + 3..].to_owned();
            let value = eval_c_expr(&entry[..quote])?;
            entries.push((name, value));
            rest = &body[close + 2..];
        }
        (!entries.is_empty()).then_some(GfpTable {
            entries,
            partial: false,
        })
    }

    /// The kernel's rendering (`trace_print_flags_seq` / `%pGg`): names that
    /// fit entirely, in table order, each removing its bits; what is left in hex.
    pub fn format(&self, mut mask: u64) -> String {
        let mut parts: Vec<String> = Vec::new();
        for (name, m) in &self.entries {
            if *m != 0 && mask & m == *m {
                parts.push(name.clone());
                mask &= !m;
            }
        }
        if mask != 0 {
            parts.push(format!("{mask:#x}"));
        }
        parts.join("|")
    }

    /// `GFP_KERNEL|__GFP_NOWARN`, `0xcc0`, or a mix, to a mask.
    pub fn parse(&self, text: &str) -> Result<u64, GfpError> {
        let mut mask = 0u64;
        let mut any = false;
        for tok in text.split('|').map(str::trim).filter(|t| !t.is_empty()) {
            any = true;
            if let Some(hex) = tok.strip_prefix("0x").or_else(|| tok.strip_prefix("0X")) {
                mask |= u64::from_str_radix(hex, 16).map_err(|_| unknown(tok, self))?;
            } else if tok.chars().all(|c| c.is_ascii_digit()) {
                mask |= tok.parse::<u64>().map_err(|_| unknown(tok, self))?;
            } else {
                let m = self
                    .entries
                    .iter()
                    .find(|(n, _)| n.eq_ignore_ascii_case(tok))
                    .map(|(_, m)| *m)
                    .ok_or_else(|| unknown(tok, self))?;
                mask |= m;
            }
        }
        if any { Ok(mask) } else { Err(GfpError::Empty) }
    }

    /// The mask of flag `name` in this table (0 if absent).
    pub fn flag(&self, name: &str) -> u64 {
        self.entries
            .iter()
            .find(|(n, _)| n == name)
            .map_or(0, |(_, m)| *m)
    }
}

fn unknown(tok: &str, table: &GfpTable) -> GfpError {
    let upper = tok.to_ascii_uppercase();
    let close: Vec<&str> = table
        .entries
        .iter()
        .map(|(n, _)| n.as_str())
        .filter(|n| {
            let core = upper.trim_start_matches('_').trim_start_matches("GFP_");
            !core.is_empty() && n.contains(core)
        })
        .take(4)
        .collect();
    GfpError::UnknownFlag {
        flag: tok.to_owned(),
        hint: if close.is_empty() {
            "; known flags start with GFP_ or __GFP_ (e.g. GFP_KERNEL, __GFP_NOWARN)".into()
        } else {
            format!("; did you mean {}?", close.join(", "))
        },
    }
}

/// Evaluates the constant C expressions of a tracepoint's `__print_flags`
/// list: integer literals with U/L suffixes, casts, `<<`, `&`, `|`, `~`.
fn eval_c_expr(expr: &str) -> Option<u64> {
    #[derive(Debug, Clone, PartialEq)]
    enum T {
        Num(u64),
        Open,
        Close,
        Or,
        And,
        Not,
        Shl,
    }
    let bytes = expr.as_bytes();
    let mut toks = Vec::new();
    let mut i = 0;
    while i < bytes.len() {
        let c = bytes[i] as char;
        match c {
            ' ' | '\t' => i += 1,
            '(' => {
                // A cast: "(" type-name ")" — skip it whole.
                let close = expr[i + 1..].find(')').map(|j| i + 1 + j);
                if let Some(j) = close {
                    let inner = expr[i + 1..j].trim();
                    if !inner.is_empty()
                        && inner
                            .chars()
                            .all(|c| c.is_ascii_alphabetic() || c == '_' || c == ' ')
                    {
                        i = j + 1;
                        continue;
                    }
                }
                toks.push(T::Open);
                i += 1;
            }
            ')' => {
                toks.push(T::Close);
                i += 1;
            }
            '|' => {
                toks.push(T::Or);
                i += 1;
            }
            '&' => {
                toks.push(T::And);
                i += 1;
            }
            '~' => {
                toks.push(T::Not);
                i += 1;
            }
            '<' if bytes.get(i + 1) == Some(&b'<') => {
                toks.push(T::Shl);
                i += 2;
            }
            '0'..='9' => {
                let start = i;
                while i < bytes.len() && (bytes[i] as char).is_ascii_alphanumeric() {
                    i += 1;
                }
                let lit = expr[start..i].trim_end_matches(['u', 'U', 'l', 'L']);
                let n = if let Some(h) = lit.strip_prefix("0x").or_else(|| lit.strip_prefix("0X")) {
                    u64::from_str_radix(h, 16).ok()?
                } else {
                    lit.parse().ok()?
                };
                toks.push(T::Num(n));
            }
            _ => return None,
        }
    }
    // Precedence climbing: | < & < << < unary.
    fn or(t: &[T], p: &mut usize) -> Option<u64> {
        let mut v = and(t, p)?;
        while t.get(*p) == Some(&T::Or) {
            *p += 1;
            v |= and(t, p)?;
        }
        Some(v)
    }
    fn and(t: &[T], p: &mut usize) -> Option<u64> {
        let mut v = shl(t, p)?;
        while t.get(*p) == Some(&T::And) {
            *p += 1;
            v &= shl(t, p)?;
        }
        Some(v)
    }
    fn shl(t: &[T], p: &mut usize) -> Option<u64> {
        let mut v = unary(t, p)?;
        while t.get(*p) == Some(&T::Shl) {
            *p += 1;
            v = v.checked_shl(unary(t, p)? as u32)?;
        }
        Some(v)
    }
    fn unary(t: &[T], p: &mut usize) -> Option<u64> {
        match t.get(*p)? {
            T::Not => {
                *p += 1;
                Some(!unary(t, p)?)
            }
            T::Num(n) => {
                *p += 1;
                Some(*n)
            }
            T::Open => {
                *p += 1;
                let v = or(t, p)?;
                if t.get(*p) != Some(&T::Close) {
                    return None;
                }
                *p += 1;
                Some(v)
            }
            _ => None,
        }
    }
    let mut p = 0;
    let v = or(&toks, &mut p)?;
    (p == toks.len()).then_some(v)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn table(ver: super::super::version::KernelVersion) -> GfpTable {
        GfpTable::builtin(&KernelBehavior::for_version(ver))
    }

    /// Masks printed by real kernels (../shared/oom-reports headers: 6.7.4,
    /// 6.8.11, 6.10.0-rc1, 5.x).
    #[test]
    fn real_report_masks() {
        let t = table(v(6, 7, 4));
        for (mask, text) in [
            (0xcc0, "GFP_KERNEL"),
            (0x100cca, "GFP_HIGHUSER_MOVABLE"),
            (0x100dca, "GFP_HIGHUSER_MOVABLE|__GFP_ZERO"),
            (0x101cc0, "GFP_USER|__GFP_WRITE"),
            (0x40cc0, "GFP_KERNEL|__GFP_COMP"),
            (0x408d40, "GFP_NOFS|__GFP_NOFAIL|__GFP_ZERO|__GFP_ACCOUNT"),
        ] {
            assert_eq!(t.format(mask), text, "{mask:#x}");
            assert_eq!(t.parse(text).unwrap(), mask, "{text}");
        }
        // In bit order (6.10+) ZERO comes before NOFAIL.
        assert_eq!(
            table(v(6, 18, 44)).format(0x408d40),
            "GFP_NOFS|__GFP_ZERO|__GFP_NOFAIL|__GFP_ACCOUNT"
        );
        // Bit 24 on 5.15 (a config-dependent KASAN flag) prints as hex here.
        assert_eq!(
            table(v(5, 15, 0)).format(0x1100cca),
            "GFP_HIGHUSER_MOVABLE|0x1000000"
        );
    }

    #[test]
    fn atomic_bit_until_6_3() {
        assert_eq!(table(v(6, 1, 0)).parse("GFP_ATOMIC").unwrap(), 0xa20);
        assert_eq!(table(v(6, 6, 0)).parse("GFP_ATOMIC").unwrap(), 0x820);
    }

    #[test]
    fn parse_errors_name_the_input() {
        let t = table(v(6, 18, 0));
        let e = t.parse("GFP_KERNEL|__GFP_NOWARM").unwrap_err().to_string();
        assert!(e.starts_with("unknown GFP flag `__GFP_NOWARM`"), "{e}");
        let e = t.parse("KERNEL").unwrap_err().to_string();
        assert!(
            e.contains("did you mean") && e.contains("GFP_KERNEL"),
            "{e}"
        );
        assert_eq!(t.parse(""), Err(GfpError::Empty));
        assert_eq!(t.parse("0xcc0|__gfp_nowarn").unwrap(), 0x2cc0);
    }

    #[test]
    fn old_layouts_carry_the_gating_flags() {
        let t = table(v(4, 14, 177));
        assert!(t.partial);
        assert_eq!(t.flag("__GFP_DIRECT_RECLAIM"), 0x400000);
        assert_eq!(table(v(4, 19, 78)).flag("__GFP_DIRECT_RECLAIM"), 0x200000);
        assert_eq!(table(v(3, 10, 108)).flag("__GFP_WAIT"), 0x10);
    }

    #[test]
    fn c_expressions() {
        assert_eq!(
            eval_c_expr("( unsigned long)(( gfp_t)((((1UL))) << (7)))"),
            Some(0x80)
        );
        assert_eq!(
            eval_c_expr("((( gfp_t)0x400u|0x800u) & ~(( gfp_t)0x400u))"),
            Some(0x800)
        );
        assert_eq!(eval_c_expr("1 + 2"), None);
    }

    /// An excerpt of the lab kernel's own mm_page_alloc print fmt.
    #[test]
    fn from_the_kernels_format() {
        let fmt = r#"print fmt: "gfp_flags=%s", (REC->gfp_flags) ? __print_flags(REC->gfp_flags, "|", {( unsigned long)((( gfp_t)(((((1UL))) << (10))|((((1UL))) << (11)))) | (( gfp_t)((((1UL))) << (6))) | (( gfp_t)((((1UL))) << (7)))), "GFP_KERNEL"}, {( unsigned long)(( gfp_t)((((1UL))) << (13))), "__GFP_NOWARN"}, { 0, ((void *)0) } ) : "none""#;
        let t = GfpTable::from_trace_format(fmt).unwrap();
        assert_eq!(
            t.entries,
            vec![
                ("GFP_KERNEL".into(), 0xcc0),
                ("__GFP_NOWARN".into(), 0x2000)
            ]
        );
        assert_eq!(t.format(0x2cc0), "GFP_KERNEL|__GFP_NOWARN");
    }
}
