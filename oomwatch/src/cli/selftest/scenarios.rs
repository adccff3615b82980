//! The selftest's scenarios: each a memory cgroup of [`LIMIT_MIB`] MiB (or a
//! limited parent with children), hogs built one after the other, and a
//! trigger that then allocates past the limit. Sizes leave every expected
//! victim well ahead of the others, including the trigger at the moment of
//! the OOM (it holds about what was free), and leave the trigger room to
//! finish once the victim's memory is gone. The kernel may still kill the
//! trigger too, when it charges again before the victim's memory is
//! uncharged (seen now and then here): the result lists such kills in
//! `also_killed`; only the first kill is judged.

use super::hog::Kind;

/// Each scenario's memory limit (its parent's, for `nested`).
pub const LIMIT_MIB: u64 = 64;

/// The trigger asks for this much more than was free when it starts: it
/// meets the limit holding about what was free, and once the victim (at
/// least this plus 4 MiB) is gone, it fits.
pub const TRIGGER_EXTRA_MIB: u64 = 4;

/// One workload of a scenario.
#[derive(Debug, Clone, Copy)]
pub struct HogSpec {
    pub name: &'static str,
    pub mib: usize,
    pub kind: Kind,
    pub adj: i16,
    /// Start a second process sharing this hog's memory (the `ties` pair).
    pub share_mm: bool,
    /// The child cgroup it runs in (index into [`Scenario::children`]);
    /// None: the scenario's cgroup itself.
    pub child: Option<usize>,
}

const fn hog(name: &'static str, mib: usize, adj: i16) -> HogSpec {
    HogSpec {
        name,
        mib,
        kind: Kind::Anon,
        adj,
        share_mm: false,
        child: None,
    }
}

const fn kind(mut h: HogSpec, kind: Kind) -> HogSpec {
    h.kind = kind;
    h
}

const fn in_child(mut h: HogSpec, child: usize) -> HogSpec {
    h.child = Some(child);
    h
}

const fn sharing(mut h: HogSpec) -> HogSpec {
    h.share_mm = true;
    h
}

/// One scenario.
#[derive(Debug, Clone, Copy)]
pub struct Scenario {
    pub name: &'static str,
    pub about: &'static str,
    /// Built in this order, each until ready.
    pub hogs: &'static [HogSpec],
    /// Child cgroups without a limit of their own (the OOM domain stays the
    /// scenario's cgroup).
    pub children: &'static [&'static str],
    /// The trigger's child cgroup (None: the scenario's cgroup).
    pub trigger_child: Option<usize>,
    /// Sets `memory.oom.group` (cgroup v2 only).
    pub oom_group: bool,
    /// The hog the kernel should kill; `<name>'` is the process sharing
    /// `name`'s memory.
    pub expect: &'static str,
}

/// Every scenario, in the order they run.
pub const SCENARIOS: &[Scenario] = &[
    Scenario {
        name: "largest",
        about: "the task with the most memory is killed: 28 MiB against 12 and 8 MiB",
        hogs: &[hog("a", 8, 0), hog("b", 12, 0), hog("c", 28, 0)],
        children: &[],
        trigger_child: None,
        oom_group: false,
        expect: "c",
    },
    Scenario {
        name: "adj+500",
        about: "oom_score_adj +500 adds half the limit: 12 MiB at +500 beats 36 MiB at 0",
        hogs: &[hog("a", 36, 0), hog("b", 12, 500)],
        children: &[],
        trigger_child: None,
        oom_group: false,
        expect: "b",
    },
    Scenario {
        name: "adj+1000",
        about: "oom_score_adj +1000 adds the whole limit: 8 MiB at +1000 beats 36 MiB at 0",
        hogs: &[hog("a", 36, 0), hog("b", 8, 1000)],
        children: &[],
        trigger_child: None,
        oom_group: false,
        expect: "b",
    },
    Scenario {
        name: "adj-1000",
        about: "oom_score_adj -1000 is never killed: the largest (36 MiB) is passed over for \
                14 MiB",
        hogs: &[hog("a", 36, -1000), hog("b", 14, 0), hog("c", 8, 0)],
        children: &[],
        trigger_child: None,
        oom_group: false,
        expect: "b",
    },
    Scenario {
        name: "adj-999",
        about: "oom_score_adj -999 is killable but scores below every adj 0 task: 36 MiB loses \
                to 14 MiB",
        hogs: &[hog("a", 36, -999), hog("b", 14, 0), hog("c", 8, 0)],
        children: &[],
        trigger_child: None,
        oom_group: false,
        expect: "b",
    },
    Scenario {
        name: "threads",
        about: "a process is scored as a whole: 4 threads of 7 MiB each (28 MiB) beat one 16 MiB \
                task",
        hogs: &[kind(hog("a", 28, 0), Kind::Threads), hog("b", 16, 0)],
        children: &[],
        trigger_child: None,
        oom_group: false,
        expect: "a",
    },
    Scenario {
        name: "shmem",
        about: "shared memory counts (RssShmem): a 28 MiB memfd mapping beats 16 MiB of anonymous \
                memory",
        hogs: &[kind(hog("a", 28, 0), Kind::Shmem), hog("b", 16, 0)],
        children: &[],
        trigger_child: None,
        oom_group: false,
        expect: "a",
    },
    Scenario {
        name: "pagetables",
        about: "page tables count: 14 MiB touched one page per page-table span (+14 MiB of page \
                tables) beats 16 MiB of anonymous memory",
        hogs: &[kind(hog("a", 14, 0), Kind::Sparse), hog("b", 16, 0)],
        children: &[],
        trigger_child: None,
        oom_group: false,
        expect: "a",
    },
    Scenario {
        name: "nested",
        about: "children without limits under a limited parent: the OOM domain is the parent; the \
                trigger in one child, the victim (28 MiB) in the other",
        hogs: &[
            in_child(hog("a", 28, 0), 0),
            in_child(hog("b", 12, 0), 1),
            in_child(hog("c", 8, 0), 1),
        ],
        children: &["oomwatch-child-a", "oomwatch-child-b"],
        trigger_child: Some(1),
        oom_group: false,
        expect: "a",
    },
    Scenario {
        name: "oom-group",
        about: "memory.oom.group=1: the victim (28 MiB) is chosen as usual, then every task of the \
                group is killed with it",
        hogs: &[hog("a", 28, 0), hog("b", 12, 0), hog("c", 8, 0)],
        children: &[],
        trigger_child: None,
        oom_group: true,
        expect: "a",
    },
    Scenario {
        name: "ties",
        about: "equal points: two processes sharing one 30 MiB mm score the same; the kernel keeps \
                the last one it scans (a')",
        hogs: &[sharing(hog("a", 30, 0)), hog("b", 12, 0)],
        children: &[],
        trigger_child: None,
        oom_group: false,
        expect: "a'",
    },
];

/// The scenarios named in `list` (comma-separated names), in the order
/// given; an error lists the valid names.
pub fn select(names: &[String]) -> Result<Vec<&'static Scenario>, String> {
    let mut out = Vec::new();
    let mut unknown = Vec::new();
    for n in names.iter().map(|n| n.trim()).filter(|n| !n.is_empty()) {
        match SCENARIOS.iter().find(|s| s.name == n) {
            Some(s) if !out.iter().any(|o: &&Scenario| o.name == s.name) => out.push(s),
            Some(_) => {}
            None => unknown.push(n.to_owned()),
        }
    }
    let valid = || {
        SCENARIOS
            .iter()
            .map(|s| s.name)
            .collect::<Vec<_>>()
            .join(", ")
    };
    if !unknown.is_empty() {
        return Err(format!(
            "unknown scenario{} {}; valid scenarios: {}",
            if unknown.len() > 1 { "s" } else { "" },
            unknown.join(", "),
            valid()
        ));
    }
    if out.is_empty() {
        return Err(format!(
            "--scenarios names no scenario; valid scenarios: {}",
            valid()
        ));
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_unique_and_expectations_name_a_hog() {
        for (i, s) in SCENARIOS.iter().enumerate() {
            assert!(
                SCENARIOS[i + 1..].iter().all(|o| o.name != s.name),
                "{}",
                s.name
            );
            let expect = s.expect.trim_end_matches('\'');
            let h = s.hogs.iter().find(|h| h.name == expect);
            assert!(h.is_some(), "{}: expects {}", s.name, s.expect);
            assert_eq!(s.expect.ends_with('\''), h.unwrap().share_mm, "{}", s.name);
            let mib: usize = s.hogs.iter().map(|h| h.mib).sum();
            assert!(mib as u64 <= LIMIT_MIB - 4, "{}: {mib} MiB", s.name);
            assert!(
                h.unwrap().mib as u64 >= TRIGGER_EXTRA_MIB + 4,
                "{}: the trigger would not fit after the kill",
                s.name
            );
            for h in s.hogs {
                assert!(h.child.is_none_or(|c| c < s.children.len()));
            }
        }
    }

    #[test]
    fn unknown_names_are_listed_with_the_valid_ones() {
        let e = select(&["largest".into(), "nope".into()]).unwrap_err();
        assert!(e.contains("unknown scenario nope"), "{e}");
        assert!(e.contains("largest, adj+500"), "{e}");
        let ok = select(&["ties".into(), "largest".into(), "ties".into()]).unwrap();
        let names: Vec<_> = ok.iter().map(|s| s.name).collect();
        assert_eq!(names, ["ties", "largest"]);
        assert!(select(&[]).is_err());
    }
}
