//! `/proc/PID/oom_score`, and the legacy `oom_adj` ↔ `oom_score_adj`
//! conversions (fs/proc/base.c; kernel-oom.md §3).

use serde::Serialize;

use super::{
    Process,
    badness::{Badness, oom_badness},
    behavior::{KernelBehavior, ProcScoreFormula, RssCounters},
};

/// `/proc/PID/oom_score` for a task whose `oom_badness(task, T)` is `b`, with
/// `T` the global `totalram_pages + total_swap_pages`.
pub fn proc_oom_score(b: &Badness, totalpages: u64, kb: &KernelBehavior) -> u64 {
    let t = totalpages.max(1);
    match (kb.proc_score, b.points) {
        (_, None) => 0,
        // unsigned long: B * 1000 / T (B ≥ 1 here).
        (ProcScoreFormula::Scaled, Some(points)) => (points.max(0) as u64) * 1000 / t,
        // signed long: (1000 + B*1000/T) * 2 / 3, each division truncating
        // toward zero (Rust's `/` on i64 does the same).
        (ProcScoreFormula::Shifted, Some(points)) => {
            let inner = points.saturating_mul(1000) / t as i64;
            ((1000 + inner) * 2 / 3).max(0) as u64
        }
    }
}

/// The largest error, in pages, between an mm's precise rss+swap and the
/// approximate value the kernel scores with (6.2+): four per-CPU counters
/// (anon, file, shmem, swap), each off by up to `batch` pages on every CPU,
/// with `percpu_counter_batch = max(32, 2 * nr_cpus)` (lib/percpu_counter.c).
pub fn approximate_counter_slack(nr_cpus: u64) -> i64 {
    let batch = 32.max(2 * nr_cpus);
    (4 * batch * nr_cpus) as i64
}

/// Why the model's `/proc/PID/oom_score` for a task can differ from the
/// kernel's, or `None` when it cannot and a difference is a model bug.
///
/// On kernels whose `/proc/PID/status` shows precise rss while OOM scoring
/// reads the approximate per-CPU counters (6.16 – 6.19 and 6.12.39+,
/// kernel-oom.md §2.3; not 7.0+, which scores with the precise sums), a
/// kernel score that some badness within `slack` pages of the model's would
/// give is explained by that approximation.
pub fn explain_score_difference(
    b: &Badness,
    totalpages: u64,
    kernel_score: u64,
    slack: i64,
    kb: &KernelBehavior,
) -> Option<String> {
    let points = b.points?;
    // Only where this kernel has the rule: 7.0+ scores with the precise
    // sums /proc/PID/status shows, so a difference there is not this.
    if !(kb.approximate_rss && kb.proc_rss_precise) {
        return None;
    }
    let at = |p: i64| {
        proc_oom_score(
            &Badness {
                points: Some(p),
                ..b.clone()
            },
            totalpages,
            kb,
        )
    };
    let (lo, hi) = (
        at(points.saturating_sub(slack)),
        at(points.saturating_add(slack)),
    );
    (lo..=hi).contains(&kernel_score).then(|| {
        format!(
            "the kernel scores with approximate per-CPU rss counters while /proc/PID/status shows the precise sum (Linux {}); within ±{slack} pages the score ranges {lo}..={hi}",
            kb.version
        )
    })
}

/// Which rss the kernel scores with, measured: tasks whose precise sums
/// (`/proc/PID/status`) and approximate counters (`/proc/PID/stat` rss)
/// give different scores tell which one `/proc/PID/oom_score` used. Where
/// the release cannot tell (a stable or vendor backport of 7.0's precise
/// sums, or of 6.16's precise `/proc`), the running kernel does.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct CountersMeasured {
    /// Tasks whose kernel score is the precise sums' and not the approximate one.
    pub precise: u64,
    /// Tasks whose kernel score is the approximate counters' and not the precise one.
    pub approximate: u64,
    /// Tasks where both give the same score (their per-CPU deltas folded,
    /// or a kernel whose `/proc` shows one kind only), or neither.
    pub undecided: u64,
    /// What the tasks say, in words.
    pub verdict: String,
}

/// One task's evidence for [`measure_counters`]: its process (precise
/// counters), its approximate rss in pages, and its kernel `oom_score`.
pub struct CounterSample<'a> {
    pub process: &'a Process,
    pub approx_rss_pages: u64,
    pub kernel_score: u64,
}

/// Scores every sample twice, with the precise and the approximate rss
/// (the rest of the counters as read), and counts which one each kernel
/// score matches when they differ.
pub fn measure_counters<'a>(
    samples: impl IntoIterator<Item = CounterSample<'a>>,
    totalpages: u64,
    page_size: u64,
    kb: &KernelBehavior,
) -> CountersMeasured {
    let mut m = CountersMeasured::default();
    for s in samples {
        let Some(mm) = s.process.mm else {
            continue;
        };
        let score = |mm: crate::model::MmCounters| {
            let p = Process {
                mm: Some(mm),
                ..s.process.clone()
            };
            proc_oom_score(&oom_badness(&p, totalpages, page_size, kb), totalpages, kb)
        };
        // oom_badness adds the three rss counters: only their sum matters.
        let approx = crate::model::MmCounters {
            anon_pages: s.approx_rss_pages,
            file_pages: 0,
            shmem_pages: 0,
            ..mm
        };
        let (p, a) = (score(mm), score(approx));
        if p != a && s.kernel_score == p {
            m.precise += 1;
        } else if p != a && s.kernel_score == a {
            m.approximate += 1;
        } else {
            m.undecided += 1;
        }
    }
    m.verdict = verdict(&m);
    m
}

impl CountersMeasured {
    /// The counters the measured tasks point to, or None while too few say
    /// it or too many say the other: at least [`VERDICT_MIN_TASKS`], and ten
    /// times as many as say the other (a task that grew between the reads
    /// of its counters and its score can match either by chance).
    pub fn says(&self) -> Option<RssCounters> {
        let decides = |a: u64, b: u64| a >= VERDICT_MIN_TASKS && a >= b.saturating_mul(10);
        if decides(self.precise, self.approximate) {
            Some(RssCounters::PreciseSums)
        } else if decides(self.approximate, self.precise) {
            Some(RssCounters::Approximate)
        } else {
            None
        }
    }

    /// This measurement and `other` together (two reads of the same
    /// kernel), with the verdict said again for the sum.
    pub fn add(&self, other: &CountersMeasured) -> CountersMeasured {
        let mut m = CountersMeasured {
            precise: self.precise + other.precise,
            approximate: self.approximate + other.approximate,
            undecided: self.undecided + other.undecided,
            verdict: String::new(),
        };
        m.verdict = verdict(&m);
        m
    }
}

/// Tasks that must point one way before a measurement decides.
pub const VERDICT_MIN_TASKS: u64 = 2;

fn verdict(m: &CountersMeasured) -> String {
    match (m.precise, m.approximate) {
        (0, 0) => format!(
            "no task tells ({} where precise and approximate rss give the same score)",
            m.undecided
        ),
        (p, 0) => format!(
            "the kernel scores with the precise per-CPU sums ({p} {} so)",
            tasks_say(p)
        ),
        (0, a) => {
            format!(
                "the kernel scores with the approximate per-CPU counters ({a} {} so)",
                tasks_say(a)
            )
        }
        (p, a) if m.says().is_some() => format!(
            "the kernel scores with the {} ({p} tasks say precise sums, {a} approximate \
             counters: those changed while they were read)",
            if p > a {
                "precise per-CPU sums"
            } else {
                "approximate per-CPU counters"
            }
        ),
        (p, a) => format!(
            "{p} tasks say precise sums, {a} approximate counters: tasks changed while they were read"
        ),
    }
}

fn tasks_say(n: u64) -> &'static str {
    if n == 1 { "task says" } else { "tasks say" }
}

/// Writing `oom_adj` (−17 … 15) sets this `oom_score_adj`; `None` for values
/// the kernel rejects with EINVAL.
pub fn oom_adj_to_score_adj(oom_adj: i32) -> Option<i16> {
    match oom_adj {
        15 => Some(1000),
        -17 => Some(-1000),
        -16..=14 => Some((oom_adj * 1000 / 17) as i16),
        _ => None,
    }
}

/// Reading `oom_adj` for a task with this `oom_score_adj`.
pub fn score_adj_to_oom_adj(score_adj: i16, kb: &KernelBehavior) -> i32 {
    if score_adj == 1000 {
        return 15;
    }
    let v = i32::from(score_adj) * 17 / 1000;
    if kb.oom_adj_read_clamp { v.min(15) } else { v }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::version::v;

    fn points(p: i64) -> Badness {
        Badness {
            points: Some(p),
            ineligible: None,
            rss_pages: p,
            swap_pages: 0,
            pgtables_pages: 0,
            admin_bonus_pages: 0,
            adj_term: 0,
            floored: false,
        }
    }

    /// kernel-oom.md §10.1: the lab's 6.18.44 (T = 6 170 914), model = kernel.
    #[test]
    fn lab_table_6_18() {
        let kb = KernelBehavior::for_version(v(6, 18, 44));
        let t = 6_170_914;
        for (b, want) in [
            (3_450, 666),
            (9_621, 667),
            (3_088_451, 1000),
            (6_173_451, 1333),
            (29_114, 669),
            (47_627, 671),
            (1_571_617, 836),
            (183_007, 686),
            (201_520, 688),
            (1_725_510, 852),
            (516_458, 722),
            (534_971, 724),
            (2_058_961, 888),
        ] {
            assert_eq!(proc_oom_score(&points(b), t, &kb), want, "badness {b}");
        }
    }

    #[test]
    fn approximate_counters_explain_only_near_a_boundary() {
        let kb = KernelBehavior::for_version(v(6, 18, 44));
        let t = 6_170_914;
        let slack = approximate_counter_slack(2);
        assert_eq!(slack, 256);
        // 6 171 pages is the first badness that scores 667: 6 100 could be
        // 6 356 in the kernel's counters.
        assert!(explain_score_difference(&points(6_100), t, 667, slack, &kb).is_some());
        // Far from the boundary nothing explains a difference.
        assert!(explain_score_difference(&points(3_450), t, 667, slack, &kb).is_none());
        // Before 6.16 /proc and the kernel read the same counters.
        let k612 = KernelBehavior::for_version(v(6, 12, 0));
        assert!(explain_score_difference(&points(6_100), t, 667, slack, &k612).is_none());
        // 7.0+ scores with the precise sums /proc shows: the rule is gone.
        for ver in [v(7, 0, 0), v(7, 3, 4)] {
            let k7 = KernelBehavior::for_version(ver);
            assert!(
                explain_score_difference(&points(6_100), t, 667, slack, &k7).is_none(),
                "{ver}"
            );
        }
    }

    /// A task whose precise and approximate rss straddle a score boundary
    /// tells which one the kernel used; one far from it tells nothing.
    #[test]
    fn measured_counters() {
        let kb = KernelBehavior::for_version(v(6, 18, 44));
        let t = 6_170_914;
        // 6 171 precise pages score 667, 6 100 approximate ones 666.
        let near = Process::simple(
            1,
            "a",
            crate::model::MmCounters {
                anon_pages: 6_171,
                ..Default::default()
            },
            0,
        );
        let far = Process::simple(
            2,
            "b",
            crate::model::MmCounters {
                anon_pages: 3_000,
                ..Default::default()
            },
            0,
        );
        let sample = |p, approx, kernel| CounterSample {
            process: p,
            approx_rss_pages: approx,
            kernel_score: kernel,
        };
        let m = measure_counters(
            [sample(&near, 6_100, 666), sample(&far, 2_990, 666)],
            t,
            4096,
            &kb,
        );
        assert_eq!((m.precise, m.approximate, m.undecided), (0, 1, 1));
        assert!(m.verdict.contains("approximate"), "{}", m.verdict);
        let m = measure_counters([sample(&near, 6_100, 667)], t, 4096, &kb);
        assert_eq!((m.precise, m.approximate), (1, 0));
        assert!(m.verdict.contains("precise"), "{}", m.verdict);
        let m = measure_counters([sample(&far, 2_990, 666)], t, 4096, &kb);
        assert!(m.verdict.starts_with("no task tells"), "{}", m.verdict);
    }

    /// One task decides nothing; two do, against no more than a tenth as
    /// many saying the other; reads add up.
    #[test]
    fn measurements_decide_and_add() {
        let m = |precise, approximate| CountersMeasured {
            precise,
            approximate,
            ..Default::default()
        };
        assert_eq!(m(1, 0).says(), None);
        assert_eq!(m(2, 0).says(), Some(RssCounters::PreciseSums));
        assert_eq!(m(0, 3).says(), Some(RssCounters::Approximate));
        assert_eq!(m(20, 2).says(), Some(RssCounters::PreciseSums));
        assert_eq!(m(19, 2).says(), None);
        let sum = m(1, 0).add(&m(1, 0));
        assert_eq!(sum.says(), Some(RssCounters::PreciseSums));
        assert!(sum.verdict.contains("2 tasks say so"), "{}", sum.verdict);
        let sum = m(20, 0).add(&m(0, 1));
        assert!(
            sum.verdict
                .starts_with("the kernel scores with the precise per-CPU sums (20"),
            "{}",
            sum.verdict
        );
    }

    #[test]
    fn negative_points_truncate_toward_zero() {
        let kb = KernelBehavior::for_version(v(6, 1, 0));
        // B*1000/T = -1 500 000 / 1 000 000 = -1 (toward zero) → 999*2/3 = 666.
        assert_eq!(proc_oom_score(&points(-1500), 1_000_000, &kb), 666);
        // Lowest: B = -T → (1000 - 1000)*2/3 = 0.
        assert_eq!(proc_oom_score(&points(-1_000_000), 1_000_000, &kb), 0);
    }

    #[test]
    fn old_formula_is_scaled_badness() {
        let kb = KernelBehavior::for_version(v(4, 19, 78));
        assert_eq!(proc_oom_score(&points(3_450), 6_170_914, &kb), 0);
        assert_eq!(proc_oom_score(&points(617_092), 6_170_914, &kb), 100);
        let inel = Badness {
            points: None,
            ..points(0)
        };
        assert_eq!(proc_oom_score(&inel, 6_170_914, &kb), 0);
    }

    /// §3: write 15 → 1000, −17 → −1000, −16 → −941, 14 → 823; reads clamp
    /// to 15 from 5.10, before which 942…999 read back as 16.
    #[test]
    fn oom_adj_conversions() {
        assert_eq!(oom_adj_to_score_adj(15), Some(1000));
        assert_eq!(oom_adj_to_score_adj(-17), Some(-1000));
        assert_eq!(oom_adj_to_score_adj(-16), Some(-941));
        assert_eq!(oom_adj_to_score_adj(14), Some(823));
        assert_eq!(oom_adj_to_score_adj(16), None);
        assert_eq!(oom_adj_to_score_adj(-18), None);
        let old = KernelBehavior::for_version(v(5, 9, 1));
        let new = KernelBehavior::for_version(v(5, 10, 89));
        assert_eq!(score_adj_to_oom_adj(999, &old), 16);
        assert_eq!(score_adj_to_oom_adj(999, &new), 15);
        assert_eq!(score_adj_to_oom_adj(1000, &old), 15);
        assert_eq!(score_adj_to_oom_adj(-1000, &new), -17);
        assert_eq!(score_adj_to_oom_adj(-941, &new), -15);
    }
}
