//! When the programs on the hot events run.
//!
//! `kmem:mm_page_alloc` fires on every page allocation and
//! `exceptions:page_fault_user` on every user page fault. What oomwatch's
//! programs do there is cheap (a counter bump, about 12 – 22 ns); what the
//! kernel spends calling *any* BPF program on those events is not, on
//! machines with retpolines and return-thunk mitigations: about 90 ns per
//! event each on the benchmark machine, 8 – 11 % of a page-fault storm
//! (docs/benchmarks.md). Nothing else oomwatch attaches runs outside OOMs,
//! reclaim and compaction.
//!
//! So by default (`--hot-probes pressure`) the hot programs are attached
//! only while the host shows memory pressure: the kernel's pressure stall
//! information (`/proc/pressure/memory`, its `some` total) grew by at least
//! [`PSI_STALL_US`], or the kernel reclaimed, compacted or ran the
//! allocator's retry logic (counted by oomwatch's own programs on those
//! cold events, which stay attached), since the last look. They stay
//! attached for the hold time after the last such sign. A host without
//! either signal gets them all the time. `always` and `off` do what they
//! say.

use std::time::{Duration, Instant};

/// `oomwatch run --hot-probes`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum HotProbes {
    /// Attached while the host shows memory pressure, and for the hold time
    /// after.
    Pressure,
    /// Attached all the time.
    Always,
    /// Never attached.
    Off,
}

impl std::fmt::Display for HotProbes {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            HotProbes::Pressure => "pressure",
            HotProbes::Always => "always",
            HotProbes::Off => "off",
        })
    }
}

/// How long the hot programs stay after the last sign of pressure, by
/// default.
pub const DEFAULT_HOLD: Duration = Duration::from_secs(60);

/// Growth of PSI's memory `some` total (µs, summed over CPUs' stall time)
/// between two looks that counts as pressure: 1 ms. Smaller stalls (a
/// page-cache refault here and there) happen on calm hosts too.
pub const PSI_STALL_US: u64 = 1_000;

/// The cumulative signals, read at one moment.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Signals {
    /// `/proc/pressure/memory`'s `some ... total=` (µs); None without PSI.
    pub psi_some_us: Option<u64>,
    /// Reclaim stalls, compaction runs and slowpath retry decisions counted
    /// by oomwatch's programs; None when none of them is attached.
    pub kernel_events: Option<u64>,
}

impl Signals {
    /// Reads PSI now; `kernel_events` is the caller's.
    pub fn read(kernel_events: Option<u64>) -> Self {
        Signals {
            psi_some_us: crate::host::psi::memory_some_total(),
            kernel_events,
        }
    }
}

/// A decision to attach (true) or detach (false) the hot programs, and why.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Switch {
    pub attach: bool,
    pub why: String,
}

/// Decides, look by look, whether the hot programs should be attached.
#[derive(Debug)]
pub struct Gate {
    mode: HotProbes,
    hold: Duration,
    attached: bool,
    last: Option<Signals>,
    last_pressure: Option<Instant>,
}

impl Gate {
    /// The hot programs start attached under `always` only; under
    /// `pressure` the first look with pressure (or without any signal)
    /// attaches them.
    pub fn new(mode: HotProbes, hold: Duration) -> Self {
        Gate {
            mode,
            hold,
            attached: mode == HotProbes::Always,
            last: None,
            last_pressure: None,
        }
    }

    pub fn attached(&self) -> bool {
        self.attached
    }

    pub fn mode(&self) -> HotProbes {
        self.mode
    }

    /// Takes the signals read at `now`; returns the switch to make, if any.
    pub fn observe(&mut self, now: Instant, s: Signals) -> Option<Switch> {
        if self.mode != HotProbes::Pressure {
            return None;
        }
        let last = self.last.replace(s);
        if s.psi_some_us.is_none() && s.kernel_events.is_none() {
            return (!self.attached).then(|| {
                self.attached = true;
                Switch {
                    attach: true,
                    why: "no sign of memory pressure can be read here (no \
                          /proc/pressure/memory, no reclaim or compaction tracepoints): \
                          attached all the time"
                        .into(),
                }
            });
        }
        let grew = |a: Option<u64>, b: Option<u64>| match (a, b) {
            (Some(a), Some(b)) => b.saturating_sub(a),
            _ => 0,
        };
        let (stall, events) = match last {
            Some(l) => (
                grew(l.psi_some_us, s.psi_some_us),
                grew(l.kernel_events, s.kernel_events),
            ),
            None => (0, 0),
        };
        if stall >= PSI_STALL_US || events > 0 {
            self.last_pressure = Some(now);
            if !self.attached {
                self.attached = true;
                let mut signs = Vec::new();
                if stall >= PSI_STALL_US {
                    signs.push(format!(
                        "tasks stalled {:.1} ms on memory (PSI)",
                        stall as f64 / 1e3
                    ));
                }
                if events > 0 {
                    signs.push(format!(
                        "{events} reclaim, compaction or allocator retry event(s)"
                    ));
                }
                return Some(Switch {
                    attach: true,
                    why: format!("memory pressure: {}", signs.join(", ")),
                });
            }
            return None;
        }
        let calm_since = self.last_pressure.unwrap_or(now);
        if self.attached && now.duration_since(calm_since) >= self.hold {
            self.attached = false;
            return Some(Switch {
                attach: false,
                why: format!("no memory pressure for {} s", self.hold.as_secs()),
            });
        }
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sig(psi: u64, events: u64) -> Signals {
        Signals {
            psi_some_us: Some(psi),
            kernel_events: Some(events),
        }
    }

    #[test]
    fn pressure_attaches_and_calm_detaches_after_the_hold() {
        let t0 = Instant::now();
        let at = |s: u64| t0 + Duration::from_secs(s);
        let mut g = Gate::new(HotProbes::Pressure, Duration::from_secs(10));
        assert!(!g.attached());
        // The first look only sets the reference, however large the totals.
        assert_eq!(g.observe(at(0), sig(5_000_000, 40)), None);
        // A small stall is not pressure.
        assert_eq!(g.observe(at(1), sig(5_000_500, 40)), None);
        let on = g.observe(at(2), sig(5_002_000, 40)).expect("attach");
        assert!(on.attach, "{on:?}");
        assert!(on.why.contains("1.5 ms"), "{}", on.why);
        assert!(g.attached());
        // One reclaim event keeps it, and restarts the hold.
        assert_eq!(g.observe(at(8), sig(5_002_000, 41)), None);
        assert_eq!(g.observe(at(17), sig(5_002_000, 41)), None);
        let off = g.observe(at(18), sig(5_002_000, 41)).expect("detach");
        assert!(!off.attach);
        assert!(!g.attached());
        // Reclaim alone attaches again.
        let on = g.observe(at(19), sig(5_002_000, 42)).expect("attach");
        assert!(on.why.contains("1 reclaim"), "{}", on.why);
    }

    #[test]
    fn one_signal_is_enough_and_none_means_always() {
        let t0 = Instant::now();
        let mut g = Gate::new(HotProbes::Pressure, DEFAULT_HOLD);
        let psi_only = |p| Signals {
            psi_some_us: Some(p),
            kernel_events: None,
        };
        assert_eq!(g.observe(t0, psi_only(0)), None);
        assert!(g.observe(t0, psi_only(2_000)).is_some_and(|s| s.attach));

        let mut g = Gate::new(HotProbes::Pressure, DEFAULT_HOLD);
        let on = g.observe(t0, Signals::default()).expect("attach");
        assert!(on.attach && on.why.contains("all the time"), "{on:?}");
        assert_eq!(g.observe(t0 + DEFAULT_HOLD * 2, Signals::default()), None);
        assert!(g.attached());
    }

    #[test]
    fn always_and_off_never_switch() {
        let t0 = Instant::now();
        for (mode, attached) in [(HotProbes::Always, true), (HotProbes::Off, false)] {
            let mut g = Gate::new(mode, Duration::from_secs(1));
            for (i, s) in [sig(0, 0), sig(10_000_000, 99), sig(10_000_000, 99)]
                .into_iter()
                .enumerate()
            {
                assert_eq!(g.observe(t0 + Duration::from_secs(i as u64 * 5), s), None);
            }
            assert_eq!(g.attached(), attached);
        }
    }
}
