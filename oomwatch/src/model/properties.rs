//! Property tests over every kernel family the model knows: what must hold
//! whatever the tasks are (kernel-oom.md §2 and §4).

use proptest::prelude::*;

use super::{
    behavior::{KernelBehavior, TieBreak},
    select::{Domain, Scan, Verdict, select_bad_process},
    task::{MmCounters, Process},
    version::{KernelVersion, v},
};

const VERSIONS: [KernelVersion; 12] = [
    v(3, 10, 108),
    v(4, 4, 155),
    v(4, 8, 15),
    v(4, 9, 154),
    v(4, 14, 177),
    v(4, 19, 78),
    v(5, 2, 1),
    v(5, 4, 59),
    v(5, 4, 195),
    v(5, 10, 89),
    v(6, 1, 20),
    v(6, 18, 44),
];

fn arb_process(tgid: i32) -> impl Strategy<Value = Process> {
    (
        0u64..20_000,
        0u64..5_000,
        0u64..2_000,
        0u64..3_000,
        0u64..64,
        prop_oneof![Just(-1000i16), -999i16..=1000, Just(0i16)],
        any::<bool>(),
    )
        .prop_map(move |(anon, file, shmem, swap, pt, adj, admin)| {
            let mut p = Process::simple(
                tgid,
                "task",
                MmCounters {
                    anon_pages: anon,
                    file_pages: file,
                    shmem_pages: shmem,
                    swap_pages: swap,
                    pgtables_bytes: pt * 4096,
                    nr_ptes: Some(pt),
                    nr_pmds: Some(0),
                },
                adj,
            );
            p.cap_sys_admin = admin;
            p
        })
}

fn arb_processes() -> impl Strategy<Value = Vec<Process>> {
    (1usize..8).prop_flat_map(|n| {
        (0..n)
            .map(|i| arb_process(100 + i as i32))
            .collect::<Vec<_>>()
    })
}

fn run(procs: &[Process], ver: KernelVersion, domain: Domain, t: u64) -> super::Selection {
    let procs: Vec<&Process> = procs.iter().collect();
    select_bad_process(
        &Scan {
            domain,
            processes: &procs,
            totalpages: t,
            page_size: 4096,
            sysrq: false,
        },
        &KernelBehavior::for_version(ver),
    )
}

proptest! {
    /// OOM_SCORE_ADJ_MIN is never chosen (no origin tasks here).
    #[test]
    fn adj_min_is_never_chosen(
        procs in arb_processes(),
        vi in 0..VERSIONS.len(),
        memcg in any::<bool>(),
        t in 1u64..10_000_000,
    ) {
        let domain = if memcg { Domain::Memcg } else { Domain::Global };
        let s = run(&procs, VERSIONS[vi], domain, t);
        if let Some(c) = s.chosen() {
            prop_assert_ne!(c.oom_score_adj, -1000);
        }
        let all_min = procs.iter().all(|p| p.oom_score_adj == -1000);
        prop_assert_eq!(s.chosen().is_none(), all_min);
    }

    /// The victim always has the highest points; permuting the scan order
    /// changes it only among tasks tied at that maximum, and then as the
    /// version breaks ties.
    #[test]
    fn order_matters_only_for_ties(
        procs in arb_processes(),
        vi in 0..VERSIONS.len(),
        t in 1u64..10_000_000,
        seed in any::<u64>(),
    ) {
        let ver = VERSIONS[vi];
        let mut shuffled = procs.clone();
        // A deterministic shuffle from the seed.
        let mut x = seed | 1;
        for i in (1..shuffled.len()).rev() {
            x ^= x << 13; x ^= x >> 7; x ^= x << 17;
            shuffled.swap(i, (x % (i as u64 + 1)) as usize);
        }
        for order in [&procs, &shuffled] {
            let s = run(order, ver, Domain::Global, t);
            let Some(c) = s.chosen() else { continue };
            let best = s.candidates.iter()
                .filter(|c| c.verdict == Verdict::Scored)
                .filter_map(|c| c.badness.points)
                .max();
            prop_assert_eq!(c.badness.points, best);
            let tied: Vec<usize> = s.candidates.iter()
                .filter(|x| x.verdict == Verdict::Scored && x.badness.points == best)
                .map(|x| x.position)
                .collect();
            // Single-threaded processes are all leaders: KeepLeader and First
            // keep the first, Last takes the last.
            let want = match s.tie_break {
                TieBreak::Last => *tied.last().unwrap(),
                TieBreak::First | TieBreak::KeepLeader => tied[0],
            };
            prop_assert_eq!(c.position, want);
        }
        let a = run(&procs, ver, Domain::Global, t);
        let b = run(&shuffled, ver, Domain::Global, t);
        let tied_at_max = a.candidates.iter()
            .filter(|x| x.verdict == Verdict::Scored && x.badness.points == a.chosen().and_then(|c| c.badness.points))
            .count();
        if tied_at_max == 1 {
            prop_assert_eq!(a.chosen().map(|c| c.tgid), b.chosen().map(|c| c.tgid));
        }
    }

    /// More resident memory never lowers a task's points.
    #[test]
    fn points_never_fall_when_rss_grows(
        p in arb_process(100),
        extra in 1u64..100_000,
        vi in 0..VERSIONS.len(),
        t in 1u64..10_000_000,
    ) {
        let kb = KernelBehavior::for_version(VERSIONS[vi]);
        let before = super::oom_badness(&p, t, 4096, &kb);
        let mut bigger = p.clone();
        bigger.mm.as_mut().unwrap().anon_pages += extra;
        let after = super::oom_badness(&bigger, t, 4096, &kb);
        prop_assert_eq!(before.points.is_some(), after.points.is_some());
        if let (Some(x), Some(y)) = (before.points, after.points) {
            prop_assert!(y >= x, "{} → {}", x, y);
        }
    }
}
