//! The Prometheus metrics oomwatch exports. Every metric is registered here and
//! nowhere else, so the catalogue below is complete; label sets are bounded (no
//! pid, comm or cgroup path labels on long-lived series).

use prometheus::{Encoder as _, IntCounter, IntGaugeVec, Opts, Registry, TextEncoder};

/// Metric names, the single list the daemon, the docs and the tests share.
pub mod names {
    pub const OOM_KILLS: &str = "oomwatch_oom_kills_total";
    pub const EVENTS_DROPPED: &str = "oomwatch_events_dropped_total";
    pub const BUILD_INFO: &str = "oomwatch_build_info";
    /// Every name above.
    pub const ALL: &[&str] = &[OOM_KILLS, EVENTS_DROPPED, BUILD_INFO];
}

pub struct Metrics {
    registry: Registry,
    /// Victims the kernel marked (`oom:mark_victim`), one per killed task.
    pub oom_kills: IntCounter,
    /// Events the eBPF side could not queue (ring buffer full).
    pub events_dropped: IntCounter,
}

impl Metrics {
    pub fn new(kernel: &str) -> prometheus::Result<Self> {
        let registry = Registry::new();
        let oom_kills = IntCounter::with_opts(Opts::new(
            names::OOM_KILLS,
            "OOM kills seen by oomwatch (the oom:mark_victim tracepoint), host and memory cgroups together.",
        ))?;
        let events_dropped = IntCounter::with_opts(Opts::new(
            names::EVENTS_DROPPED,
            "Events lost in the kernel because oomwatch's ring buffer was full.",
        ))?;
        let build_info = IntGaugeVec::new(
            Opts::new(
                names::BUILD_INFO,
                "Always 1; labels give oomwatch's version and the running kernel.",
            ),
            &["version", "kernel"],
        )?;
        build_info
            .with_label_values(&[env!("CARGO_PKG_VERSION"), kernel])
            .set(1);
        registry.register(Box::new(oom_kills.clone()))?;
        registry.register(Box::new(events_dropped.clone()))?;
        registry.register(Box::new(build_info))?;
        Ok(Self {
            registry,
            oom_kills,
            events_dropped,
        })
    }

    /// The Prometheus text exposition of every metric.
    pub fn render(&self) -> String {
        let mut buf = Vec::new();
        // Encoding into a Vec only fails on metric families that violate the
        // format, which the registry already refused at registration.
        if let Err(e) = TextEncoder::new().encode(&self.registry.gather(), &mut buf) {
            tracing::error!(error = %e, "encode metrics");
        }
        String::from_utf8(buf).unwrap_or_default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The README's metric table lists every metric, and only those.
    #[test]
    fn readme_documents_every_metric() {
        let readme = include_str!("../../README.md");
        let documented: Vec<&str> = readme
            .lines()
            .filter_map(|l| l.strip_prefix("| `oomwatch_"))
            .filter_map(|rest| rest.split(['`', '{']).next())
            .collect();
        let mut want: Vec<String> = names::ALL
            .iter()
            .map(|n| n.trim_start_matches("oomwatch_").to_owned())
            .collect();
        want.sort();
        let mut got: Vec<String> = documented.iter().map(|s| s.to_string()).collect();
        got.sort();
        assert_eq!(got, want, "README.md's metric table vs metrics::names::ALL");
    }

    #[test]
    fn exposition_has_the_catalogue() {
        let m = Metrics::new("6.18.44").unwrap();
        m.oom_kills.inc();
        let text = m.render();
        assert!(text.contains("oomwatch_oom_kills_total 1\n"), "{text}");
        for name in names::ALL {
            assert!(
                text.contains(&format!("# TYPE {name} ")),
                "{name} in {text}"
            );
        }
        assert!(text.contains("oomwatch_events_dropped_total 0\n"), "{text}");
        assert!(
            text.contains(&format!(
                "oomwatch_build_info{{kernel=\"6.18.44\",version=\"{}\"}} 1",
                env!("CARGO_PKG_VERSION")
            )),
            "{text}"
        );
    }
}
