//! The HTTP endpoints: `/metrics` (Prometheus text exposition), `/events`
//! (every episode from now on, one JSON line each) and `/`.

use std::sync::Arc;

use axum::{Router, routing::get};

use super::{events::event_stream, metrics::Metrics};

/// The daemon's endpoints over `metrics` and the episodes sent on `events`.
pub fn router(metrics: Arc<Metrics>, events_tx: tokio::sync::broadcast::Sender<String>) -> Router {
    Router::new()
        .route(
            "/events",
            get(move || {
                let rx = events_tx.subscribe();
                async move { ([("content-type", "application/x-ndjson")], event_stream(rx)) }
            }),
        )
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
}
