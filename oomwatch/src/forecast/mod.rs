//! Forecasts from successive prediction passes: when each OOM domain runs
//! out of the memory reclaim cannot take back, and whom the kernel would
//! kill at that moment, from how fast each task grows. Pure: the daemon
//! hands in each pass's numbers with their time, and reads forecasts back;
//! no I/O, no clock of its own.
//!
//! The headroom a domain forecasts on is what its limit leaves above the
//! memory reclaim cannot free: for a memory cgroup, the limit minus its
//! usage less its file LRU pages (anon, shmem and kernel memory stay); for
//! the host, `MemAvailable`. Its trend is a robust line ([`trend`]) over the
//! last [`WINDOW_NS`] of passes; the OOM comes when the line reaches 0. The
//! error comes from the slope's standard error (two of them either way);
//! a headroom that does not fall by more than that, or whose samples do not
//! fall in order beyond chance ([`falls_beyond_chance`]), is not growing
//! towards an OOM, and has no forecast.
//!
//! May use: `model` (nothing yet). Never `snapshot`, `daemon`, `cli`,
//! `telemetry`: it is fed, it reads nothing.

use std::collections::{BTreeMap, HashMap};

/// How far back the trend looks.
pub const WINDOW_NS: u64 = 60_000_000_000;
/// The fewest passes a trend is drawn through.
pub const MIN_SAMPLES: usize = 3;
/// The shortest time they must span.
pub const MIN_SPAN_NS: u64 = 2_000_000_000;

/// A line through `(t, y)` samples, robust to outliers: its slope is the
/// median of the slopes between every two samples (Theil–Sen), its value
/// now the median of each sample carried along that slope. A memcg's
/// headroom is read from two files that are not read at one instant
/// (`memory.usage_in_bytes`, then `memory.stat`), and under reclaim one
/// read in ten or so lands 1 – 2 MiB high; a least-squares line through a
/// flat series with one such spike early in its window falls, and
/// forecast an OOM 157 s away for a page-cache churn that never OOMs (the
/// backtest, before this). The median pays no heed to a few spikes.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Trend {
    /// y's change per second.
    pub slope: f64,
    /// The slope's standard error, from the samples' spread about the line
    /// (0 through exactly collinear samples): spikes widen it.
    pub slope_stderr: f64,
    /// The line's value at the newest sample's time.
    pub now: f64,
}

fn median(v: &mut [f64]) -> Option<f64> {
    if v.is_empty() {
        return None;
    }
    v.sort_unstable_by(f64::total_cmp);
    let n = v.len();
    Some(if n % 2 == 1 {
        v[n / 2]
    } else {
        (v[n / 2 - 1] + v[n / 2]) / 2.0
    })
}

/// The trend of `samples` (time in ns, value), oldest first; None below
/// [`MIN_SAMPLES`] or [`MIN_SPAN_NS`].
pub fn trend(samples: &[(u64, f64)]) -> Option<Trend> {
    let n = samples.len();
    let (first, last) = (samples.first()?.0, samples.last()?.0);
    if n < MIN_SAMPLES || last.saturating_sub(first) < MIN_SPAN_NS {
        return None;
    }
    // Seconds before the newest sample, so `now` is the intercept.
    let xs: Vec<f64> = samples
        .iter()
        .map(|(t, _)| -((last - t) as f64) / 1e9)
        .collect();
    let mut slopes = Vec::with_capacity(n * (n - 1) / 2);
    for i in 0..n {
        for j in i + 1..n {
            let dx = xs[j] - xs[i];
            if dx > 0.0 {
                slopes.push((samples[j].1 - samples[i].1) / dx);
            }
        }
    }
    let slope = median(&mut slopes)?;
    let mut at_now: Vec<f64> = xs
        .iter()
        .zip(samples)
        .map(|(x, s)| s.1 - slope * x)
        .collect();
    let now = median(&mut at_now)?;
    let nf = n as f64;
    let mx = xs.iter().sum::<f64>() / nf;
    let sxx: f64 = xs.iter().map(|x| (x - mx).powi(2)).sum();
    if sxx <= 0.0 {
        return None;
    }
    let residual: f64 = xs
        .iter()
        .zip(samples)
        .map(|(x, s)| (s.1 - (now + slope * x)).powi(2))
        .sum();
    let slope_stderr = if n > 2 {
        (residual / (nf - 2.0) / sxx).sqrt()
    } else {
        0.0
    };
    Some(Trend {
        slope,
        slope_stderr,
        now,
    })
}

/// When a domain's headroom reaches 0 on its trend.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum TimeToOom {
    /// Too few passes yet (fewer than [`MIN_SAMPLES`] over [`MIN_SPAN_NS`]).
    Unknown,
    /// The headroom does not fall by more than its noise: no OOM ahead.
    NotGrowing,
    /// The OOM comes in `seconds` from the newest pass, give or take
    /// `error_seconds` (the slope's two standard errors).
    In { seconds: f64, error_seconds: f64 },
}

/// The forecast for headroom samples (time ns, bytes) of one domain, the
/// newest last; the headroom now is the newest sample's (not the line's:
/// a step down shows at once).
pub fn time_to_oom(headroom: &[(u64, f64)]) -> TimeToOom {
    let Some(t) = trend(headroom) else {
        return TimeToOom::Unknown;
    };
    let now = headroom.last().map_or(0.0, |s| s.1).max(0.0);
    let fall = -t.slope;
    let noise = 2.0 * t.slope_stderr;
    if fall <= noise || fall <= 0.0 || !falls_beyond_chance(headroom) {
        return TimeToOom::NotGrowing;
    }
    let seconds = now / fall;
    let fastest = now / (fall + noise);
    let error_seconds = if fall - noise > 0.0 {
        ((now / (fall - noise)) - fastest) / 2.0
    } else {
        f64::INFINITY
    };
    TimeToOom::In {
        seconds,
        error_seconds,
    }
}

/// The Mann–Kendall test: whether the samples fall, later ones below
/// earlier ones, more often than chance would have it (z ≤ −1.96: under
/// 2.5 % by chance). It asks for order, not size, so a few reads that land
/// high cannot make a fall of a flat series; a steady fall passes from five
/// samples on (z = −2.2), never with fewer.
pub fn falls_beyond_chance(samples: &[(u64, f64)]) -> bool {
    let n = samples.len();
    let mut s = 0i64;
    for i in 0..n {
        for j in i + 1..n {
            s += match samples[j].1.total_cmp(&samples[i].1) {
                std::cmp::Ordering::Less => -1,
                std::cmp::Ordering::Greater => 1,
                std::cmp::Ordering::Equal => 0,
            };
        }
    }
    let nf = n as f64;
    let variance = nf * (nf - 1.0) * (2.0 * nf + 5.0) / 18.0;
    if s >= 0 || variance <= 0.0 {
        return false;
    }
    (s as f64 + 1.0) / variance.sqrt() <= -1.96
}

/// One pass over one domain, as the forecaster takes it.
#[derive(Debug, Clone)]
pub struct DomainPass<'a> {
    /// When the pass finished (CLOCK_BOOTTIME ns).
    pub at_ns: u64,
    /// Bytes the domain has left above what reclaim cannot free.
    pub headroom_bytes: Option<u64>,
    /// Every process scanned there (tgid, points; None where not eligible).
    pub scanned: &'a [(i32, Option<i64>)],
}

/// The forecast for one domain.
#[derive(Debug, Clone, PartialEq)]
pub struct DomainForecast {
    pub time_to_oom: TimeToOom,
    /// The task the scan would choose when the OOM comes, each task's
    /// points carried forward on its own trend (tgid, projected points);
    /// None without a forecast OOM or an eligible task.
    pub victim_at_oom: Option<(i32, i64)>,
}

/// Each domain's recent passes, and each of its tasks' points over them.
#[derive(Debug, Default)]
pub struct Forecaster {
    domains: HashMap<Option<String>, History>,
}

#[derive(Debug, Default)]
struct History {
    headroom: Vec<(u64, f64)>,
    /// tgid → (time, points) while eligible.
    points: BTreeMap<i32, Vec<(u64, f64)>>,
}

impl Forecaster {
    /// Takes one pass over `domain` (None: the host) and returns its
    /// forecast; samples older than [`WINDOW_NS`] are dropped.
    pub fn observe(&mut self, domain: &Option<String>, pass: &DomainPass<'_>) -> DomainForecast {
        let h = self.domains.entry(domain.clone()).or_default();
        let keep_from = pass.at_ns.saturating_sub(WINDOW_NS);
        h.headroom.retain(|s| s.0 >= keep_from);
        if let Some(b) = pass.headroom_bytes {
            h.headroom.push((pass.at_ns, b as f64));
        }
        for (tgid, points) in pass.scanned {
            if let Some(p) = points {
                h.points
                    .entry(*tgid)
                    .or_default()
                    .push((pass.at_ns, *p as f64));
            }
        }
        h.points.retain(|tgid, v| {
            v.retain(|s| s.0 >= keep_from);
            // Gone, or no longer eligible: not a candidate at the OOM.
            !v.is_empty() && pass.scanned.iter().any(|(t, p)| t == tgid && p.is_some())
        });
        let time_to_oom = time_to_oom(&h.headroom);
        let victim_at_oom = match time_to_oom {
            TimeToOom::In { seconds, .. } => h
                .points
                .iter()
                .filter_map(|(tgid, v)| {
                    let now = v.last()?.1;
                    let grows = trend(v).map_or(0.0, |t| t.slope);
                    Some((*tgid, (now + grows * seconds).round() as i64))
                })
                // Highest projected points; on a tie the lower tgid, as
                // stable as the passes' order allows.
                .max_by_key(|&(tgid, p)| (p, std::cmp::Reverse(tgid))),
            _ => None,
        };
        DomainForecast {
            time_to_oom,
            victim_at_oom,
        }
    }

    /// Forgets domains no pass has had for a window.
    pub fn forget_older_than(&mut self, at_ns: u64) {
        let keep_from = at_ns.saturating_sub(WINDOW_NS);
        self.domains
            .retain(|_, h| h.headroom.last().is_some_and(|s| s.0 >= keep_from));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const S: u64 = 1_000_000_000;

    #[test]
    fn a_steady_leak_is_forecast_to_the_second() {
        // 64 MiB of headroom falling 1 MiB/s, sampled every second.
        let mib = 1048576.0;
        let samples: Vec<(u64, f64)> = (0..10).map(|i| (i * S, (64.0 - i as f64) * mib)).collect();
        match time_to_oom(&samples) {
            TimeToOom::In {
                seconds,
                error_seconds,
            } => {
                assert!((seconds - 55.0).abs() < 1e-6, "{seconds}");
                assert!(error_seconds < 1e-6, "{error_seconds}");
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn too_few_passes_flat_or_noisy_headroom_has_no_forecast() {
        assert_eq!(time_to_oom(&[(0, 10.0), (S, 9.0)]), TimeToOom::Unknown);
        assert_eq!(
            time_to_oom(&[(0, 10.0), (S / 2, 9.0), (S, 8.0)]),
            TimeToOom::Unknown,
            "1 s is below the shortest span"
        );
        let flat: Vec<_> = (0..5).map(|i| (i * S, 100.0)).collect();
        assert_eq!(time_to_oom(&flat), TimeToOom::NotGrowing);
        // Up and down by 50 around 100: the fall is within the noise.
        let noisy: Vec<_> = (0..6)
            .map(|i| (i * S, if i % 2 == 0 { 150.0 } else { 50.0 }))
            .collect();
        assert_eq!(time_to_oom(&noisy), TimeToOom::NotGrowing);
        let rising: Vec<_> = (0..5).map(|i| (i * S, 100.0 + i as f64)).collect();
        assert_eq!(time_to_oom(&rising), TimeToOom::NotGrowing);
        // A steady fall: not beyond chance in four samples, in five it is.
        let falling: Vec<_> = (0..5).map(|i| (i * S, 100.0 - i as f64)).collect();
        assert_eq!(time_to_oom(&falling[..4]), TimeToOom::NotGrowing);
        assert!(matches!(time_to_oom(&falling), TimeToOom::In { .. }));
    }

    /// A page-cache churn's headroom as this lab's kernel showed it, read
    /// twice a second: flat at 54.48 MiB, with reads that land high while
    /// reclaim runs. No OOM is coming.
    #[test]
    fn spikes_in_a_flat_headroom_are_not_a_fall() {
        let mib = 1048576.0;
        let seen = [
            55.10, 54.50, 54.43, 56.48, 54.48, 54.48, 54.48, 54.48, 54.48, 54.48, 54.48, 54.48,
            54.48, 56.48, 55.72, 54.48, 54.33, 54.75, 54.48, 54.48, 54.48, 54.48,
        ];
        let samples: Vec<(u64, f64)> = seen
            .iter()
            .enumerate()
            .map(|(i, v)| (i as u64 * S / 2, v * mib))
            .collect();
        // Every window of it, as the passes come: a least-squares line
        // said 56 s through the five samples from the first spike on, and
        // 373 s through the fourteen from the sample before it.
        for start in 0..samples.len() {
            for end in start + MIN_SAMPLES..=samples.len() {
                let window = &samples[start..end];
                if let TimeToOom::In { seconds, .. } = time_to_oom(window) {
                    assert!(seconds >= 600.0, "{seconds} s over {start}..{end}");
                }
            }
        }
    }

    #[test]
    fn noise_widens_the_error() {
        let samples = [
            (0, 100.0),
            (S, 92.0),
            (2 * S, 79.0),
            (3 * S, 71.0),
            (4 * S, 58.0),
        ];
        match time_to_oom(&samples) {
            TimeToOom::In {
                seconds,
                error_seconds,
            } => {
                assert!(seconds > 4.0 && seconds < 7.0, "{seconds}");
                assert!(
                    error_seconds > 0.1 && error_seconds.is_finite(),
                    "{error_seconds}"
                );
            }
            other => panic!("{other:?}"),
        }
    }

    /// The task growing fastest is the victim when the OOM comes, though
    /// another has more points now.
    #[test]
    fn the_fast_grower_is_the_victim_at_the_oom() {
        let mut f = Forecaster::default();
        let d = Some("/job".to_owned());
        let mut last = None;
        for i in 0..6u64 {
            // 1 000 pages of headroom left falling 100 a second; the big
            // task stays at 800 points, the small one grows 100 a second.
            let scanned = [
                (10, Some(800)),
                (11, Some(300 + 100 * i as i64)),
                (12, None),
            ];
            last = Some(f.observe(
                &d,
                &DomainPass {
                    at_ns: i * S,
                    headroom_bytes: Some(1_000 - 100 * i),
                    scanned: &scanned,
                },
            ));
        }
        let fc = last.unwrap();
        match fc.time_to_oom {
            TimeToOom::In { seconds, .. } => assert!((seconds - 5.0).abs() < 1e-6, "{seconds}"),
            other => panic!("{other:?}"),
        }
        // Now: 800 against 800 (tie, lower tgid); at the OOM 800 against 1 300.
        assert_eq!(fc.victim_at_oom, Some((11, 1_300)));
        // The host domain has its own history.
        let host = f.observe(
            &None,
            &DomainPass {
                at_ns: 6 * S,
                headroom_bytes: Some(5),
                scanned: &[],
            },
        );
        assert_eq!(host.time_to_oom, TimeToOom::Unknown);
        f.forget_older_than(6 * S + WINDOW_NS);
        assert!(f.domains.contains_key(&None) && !f.domains.contains_key(&d));
    }
}
