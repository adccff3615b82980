//! `/proc/PID/oom_score`, and the legacy `oom_adj` ↔ `oom_score_adj`
//! conversions (fs/proc/base.c; kernel-oom.md §3).

use super::{
    badness::Badness,
    behavior::{KernelBehavior, ProcScoreFormula},
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
