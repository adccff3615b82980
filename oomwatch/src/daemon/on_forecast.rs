//! `run --on-forecast CMD`: a command run before the kill, when a domain is
//! forecast to OOM within a threshold (to take a heap profile or a core of
//! the task the kernel will kill). Never through a shell; with a timeout,
//! a cooldown per domain and a cap on runs at once; every run's end is
//! logged and counted (`oomwatch_on_forecast_runs_total`).

use std::{
    collections::HashMap,
    sync::{
        Arc,
        atomic::{AtomicUsize, Ordering},
    },
    time::{Duration, Instant},
};

use crate::{daemon::pass::DomainSummary, forecast::TimeToOom, telemetry::metrics::Metrics};

/// What to run and when.
#[derive(Debug, Clone, PartialEq)]
pub struct OnForecast {
    /// The program and its arguments.
    pub argv: Vec<String>,
    /// Run when a domain's forecast OOM is at most this far.
    pub within: Duration,
    /// Kill the command after this long.
    pub timeout: Duration,
    /// Not again for the same domain before this.
    pub cooldown: Duration,
    /// Runs at once, over every domain.
    pub max_running: usize,
}

impl OnForecast {
    pub const DEFAULT_WITHIN: f64 = 60.0;
    pub const DEFAULT_TIMEOUT: f64 = 30.0;
    pub const DEFAULT_COOLDOWN: f64 = 300.0;
    pub const DEFAULT_MAX_RUNNING: usize = 2;
}

/// The hook's state in the daemon's prediction loop.
pub struct Hook {
    cfg: OnForecast,
    last_run: HashMap<Option<String>, Instant>,
    running: Arc<AtomicUsize>,
    metrics: Arc<Metrics>,
}

/// The variables a run gets, beside the daemon's environment.
pub fn environment(d: &DomainSummary, seconds: f64, error: f64) -> Vec<(&'static str, String)> {
    let victim_then = d
        .forecast
        .as_ref()
        .and_then(|f| f.victim_at_oom)
        .map(|(tgid, _)| tgid.to_string())
        .unwrap_or_default();
    vec![
        (
            "OOMWATCH_DOMAIN",
            if d.cgroup.is_some() { "memcg" } else { "host" }.to_owned(),
        ),
        ("OOMWATCH_CGROUP", d.cgroup.clone().unwrap_or_default()),
        ("OOMWATCH_SECONDS_TO_OOM", format!("{seconds:.1}")),
        ("OOMWATCH_SECONDS_TO_OOM_ERROR", format!("{error:.1}")),
        ("OOMWATCH_VICTIM_PID", victim_then),
        (
            "OOMWATCH_VICTIM_NOW_PID",
            d.victim
                .as_ref()
                .map(|v| v.tgid.to_string())
                .unwrap_or_default(),
        ),
    ]
}

impl Hook {
    pub fn new(cfg: OnForecast, metrics: Arc<Metrics>) -> Self {
        Hook {
            cfg,
            last_run: HashMap::new(),
            running: Arc::new(AtomicUsize::new(0)),
            metrics,
        }
    }

    /// After a pass: starts the command for each domain forecast to OOM
    /// within the threshold, out of its cooldown, while under the cap.
    /// Must be called inside the tokio runtime.
    pub fn consider(&mut self, domains: &[DomainSummary]) {
        let now = Instant::now();
        for d in domains {
            let Some(TimeToOom::In {
                seconds,
                error_seconds,
            }) = d.forecast.as_ref().map(|f| f.time_to_oom)
            else {
                continue;
            };
            if seconds > self.cfg.within.as_secs_f64() {
                continue;
            }
            if self
                .last_run
                .get(&d.cgroup)
                .is_some_and(|t| now.duration_since(*t) < self.cfg.cooldown)
            {
                continue;
            }
            let name = crate::daemon::oomstart::domain_name(&d.cgroup);
            // Counted and held off as a run would be, so a busy cap does
            // not retry every pass.
            self.last_run.insert(d.cgroup.clone(), now);
            if self.running.load(Ordering::SeqCst) >= self.cfg.max_running {
                self.count("busy");
                tracing::warn!(
                    "on-forecast: {name} is forecast to OOM in {seconds:.1} s, but {} run(s) are still going (the cap): not run",
                    self.cfg.max_running
                );
                continue;
            }
            let mut cmd = tokio::process::Command::new(&self.cfg.argv[0]);
            cmd.args(&self.cfg.argv[1..])
                .envs(environment(d, seconds, error_seconds))
                .stdin(std::process::Stdio::null())
                .kill_on_drop(true);
            let child = match cmd.spawn() {
                Ok(c) => c,
                Err(e) => {
                    self.count("spawn_error");
                    tracing::warn!("on-forecast: cannot start {}: {e}", self.cfg.argv[0]);
                    continue;
                }
            };
            tracing::info!(
                "on-forecast: {name} is forecast to OOM in {seconds:.1} s (± {error_seconds:.1}): started {} (pid {})",
                self.cfg.argv.join(" "),
                child.id().unwrap_or(0)
            );
            self.running.fetch_add(1, Ordering::SeqCst);
            let running = Arc::clone(&self.running);
            let metrics = Arc::clone(&self.metrics);
            let timeout = self.cfg.timeout;
            let program = self.cfg.argv[0].clone();
            tokio::spawn(async move {
                let mut child = child;
                let result = match tokio::time::timeout(timeout, child.wait()).await {
                    Ok(Ok(status)) if status.success() => {
                        tracing::info!("on-forecast: {program} for {name} exited 0");
                        "ok"
                    }
                    Ok(Ok(status)) => {
                        tracing::warn!("on-forecast: {program} for {name} failed: {status}");
                        "failed"
                    }
                    Ok(Err(e)) => {
                        tracing::warn!("on-forecast: wait for {program} for {name}: {e}");
                        "failed"
                    }
                    Err(_) => {
                        let _ = child.kill().await;
                        tracing::warn!(
                            "on-forecast: {program} for {name} ran past {} s: killed",
                            timeout.as_secs_f64()
                        );
                        "timeout"
                    }
                };
                metrics.on_forecast_runs.with_label_values(&[result]).inc();
                running.fetch_sub(1, Ordering::SeqCst);
            });
        }
    }

    fn count(&self, result: &str) {
        self.metrics
            .on_forecast_runs
            .with_label_values(&[result])
            .inc();
    }
}
