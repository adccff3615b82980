//! `oomwatch run`: load the probes, log every OOM kill in one line, serve
//! `/metrics`, and detach cleanly on SIGINT/SIGTERM.

use std::{net::SocketAddr, sync::Arc, time::Duration};

use anyhow::Context as _;
use axum::{Router, routing::get};
use tokio::signal::unix::{SignalKind, signal};

use crate::{ebpf::Probes, kernel_release, metrics::Metrics};

/// Default address of `/metrics`. Prometheus' default-port allocation list
/// fills 9100-9999, so oomwatch sits outside it, on a port no well-known
/// exporter claims.
pub const DEFAULT_LISTEN: &str = "127.0.0.1:7707";

pub struct RunOptions {
    pub listen: SocketAddr,
    /// Prediction pass period.
    pub interval: Duration,
}

/// Runs prediction passes every `interval`, and at once when poked (after a
/// kill), updating the per-domain metrics and the self-check counters.
fn spawn_predictor(
    metrics: Arc<Metrics>,
    interval: Duration,
    poke: Arc<tokio::sync::Notify>,
) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(interval);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = tick.tick() => {}
                _ = poke.notified() => {}
            }
            let pass = tokio::task::spawn_blocking(|| {
                crate::predictor::refresh(std::path::Path::new("/proc"), 3)
            })
            .await;
            match pass {
                Ok(Ok((domains, check))) => {
                    metrics.update_domains(&domains);
                    metrics.badness_checks.inc_by(check.compared);
                    metrics
                        .badness_mismatches
                        .inc_by(check.mismatches.len() as u64);
                    for m in &check.mismatches {
                        tracing::warn!("model oom_score differs from the kernel's: {m}");
                    }
                    for e in &check.explained {
                        tracing::debug!("oom_score difference explained: {e}");
                    }
                }
                Ok(Err(e)) => {
                    metrics.prediction_errors.inc();
                    tracing::warn!(error = %format!("{e:#}"), "prediction pass failed");
                }
                Err(e) => {
                    metrics.prediction_errors.inc();
                    tracing::warn!(error = %e, "prediction pass panicked");
                }
            }
        }
    })
}

pub async fn run(opts: RunOptions) -> anyhow::Result<()> {
    let mut probes = Probes::load()?;
    for d in &probes.degraded {
        tracing::warn!(part = d.part, reason = %d.reason, "running without an optional probe");
    }
    let kernel = kernel_release();
    let metrics = Arc::new(Metrics::new(&kernel).context("register metrics")?);

    let listener = tokio::net::TcpListener::bind(opts.listen)
        .await
        .with_context(|| {
            format!(
                "listen on {} for /metrics; pick a free address with --listen",
                opts.listen
            )
        })?;
    let served = listener.local_addr().unwrap_or(opts.listen);
    let app = {
        let metrics = Arc::clone(&metrics);
        Router::new()
            .route(
                "/metrics",
                get(move || {
                    let metrics = Arc::clone(&metrics);
                    async move {
                        (
                            [("content-type", "text/plain; version=0.0.4")],
                            metrics.render(),
                        )
                    }
                }),
            )
            .route("/", get(|| async { "oomwatch: metrics at /metrics\n" }))
    };
    let server = tokio::spawn(async move { axum::serve(listener, app).await });

    let poke = Arc::new(tokio::sync::Notify::new());
    let predictor = spawn_predictor(Arc::clone(&metrics), opts.interval, Arc::clone(&poke));
    let logger = probes.spawn_logger();
    let mut victims = probes.victims()?;
    let mut sigterm = signal(SignalKind::terminate()).context("install SIGTERM handler")?;
    let mut sigint = signal(SignalKind::interrupt()).context("install SIGINT handler")?;
    let mut tick = tokio::time::interval(Duration::from_secs(5));
    let mut dropped_seen = 0;
    tracing::info!(listen = %served, kernel = %kernel, "oomwatch running: watching oom:mark_victim, metrics at http://{served}/metrics");

    metrics.update_programs(&probes.program_stats());
    loop {
        tokio::select! {
            batch = victims.next_batch() => {
                for v in batch.context("read the eBPF ring buffer")? {
                    tracing::info!("oom kill: {v}");
                    metrics.oom_kills.inc();
                }
                poke.notify_one();
            }
            _ = tick.tick() => {}
            _ = sigterm.recv() => { tracing::info!("SIGTERM: detaching"); break; }
            _ = sigint.recv() => { tracing::info!("SIGINT: detaching"); break; }
        }
        metrics.update_programs(&probes.program_stats());
        let dropped = victims.dropped();
        if dropped > dropped_seen {
            tracing::warn!(
                lost = dropped - dropped_seen,
                "OOM events lost: ring buffer full"
            );
            metrics.events_dropped.inc_by(dropped - dropped_seen);
            dropped_seen = dropped;
        }
    }
    server.abort();
    predictor.abort();
    if let Some(l) = logger {
        l.abort();
    }
    drop(victims);
    drop(probes);
    Ok(())
}
