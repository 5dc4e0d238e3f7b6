//! Prometheus metrics with upstream's names, and the `/healthz` + `/metrics` listener.

use std::net::SocketAddr;
use std::sync::Arc;

use prometheus::{CounterVec, Encoder, GaugeVec, HistogramOpts, HistogramVec, Opts, Registry};

use crate::queue::Pending;
use crate::Error;

/// The scheduler's metrics, each registered in its own registry (not the global one) so
/// several schedulers in one test process do not collide.
pub struct Metrics {
    pub registry: Registry,
    /// `result` is `scheduled`, `unschedulable` or `error`, as upstream.
    pub schedule_attempts: CounterVec,
    pub attempt_duration: HistogramVec,
    pub pending_pods: GaugeVec,
    /// How long pods waited at Permit, by the outcome's code (`Success`, `Unschedulable`,
    /// `Error`), as upstream.
    pub permit_wait: HistogramVec,
}

impl Metrics {
    pub fn new() -> Result<Metrics, Error> {
        let registry = Registry::new();
        let schedule_attempts = CounterVec::new(
            Opts::new(
                "scheduler_schedule_attempts_total",
                "Number of attempts to schedule pods, by the result.",
            ),
            &["result", "profile"],
        )?;
        let attempt_duration = HistogramVec::new(
            HistogramOpts::new(
                "scheduler_scheduling_attempt_duration_seconds",
                "Scheduling attempt latency in seconds (scheduling algorithm + binding)",
            )
            .buckets(prometheus::exponential_buckets(0.001, 2.0, 15)?),
            &["result", "profile"],
        )?;
        let pending_pods = GaugeVec::new(
            Opts::new(
                "scheduler_pending_pods",
                "Number of pending pods, by the queue type.",
            ),
            &["queue"],
        )?;
        let permit_wait = HistogramVec::new(
            HistogramOpts::new(
                "scheduler_permit_wait_duration_seconds",
                "Duration of waiting on permit.",
            )
            .buckets(prometheus::exponential_buckets(0.001, 2.0, 15)?),
            &["result"],
        )?;
        registry.register(Box::new(schedule_attempts.clone()))?;
        registry.register(Box::new(permit_wait.clone()))?;
        registry.register(Box::new(attempt_duration.clone()))?;
        registry.register(Box::new(pending_pods.clone()))?;
        Ok(Metrics {
            registry,
            schedule_attempts,
            attempt_duration,
            pending_pods,
            permit_wait,
        })
    }

    pub fn observe_attempt(&self, result: &str, profile: &str, seconds: f64) {
        self.schedule_attempts
            .with_label_values(&[result, profile])
            .inc();
        self.attempt_duration
            .with_label_values(&[result, profile])
            .observe(seconds);
    }

    pub fn set_pending(&self, p: Pending) {
        for (queue, n) in [
            ("active", p.active),
            ("backoff", p.backoff),
            ("unschedulable", p.unschedulable),
            ("gated", 0),
        ] {
            self.pending_pods.with_label_values(&[queue]).set(n as f64);
        }
    }

    /// The text exposition format.
    pub fn render(&self) -> String {
        let mut buf = Vec::new();
        let encoder = prometheus::TextEncoder::new();
        if let Err(e) = encoder.encode(&self.registry.gather(), &mut buf) {
            tracing::warn!(error = %e, "encoding metrics failed");
        }
        String::from_utf8_lossy(&buf).into_owned()
    }
}

/// Binds `addr` and serves `/healthz` (always `ok` while the process runs, as upstream
/// without leader-election health checks) and `/metrics`. Returns the bound address.
pub async fn serve(
    addr: SocketAddr,
    metrics: Arc<Metrics>,
) -> Result<(SocketAddr, tokio::task::JoinHandle<()>), Error> {
    use axum::routing::get;
    let app = axum::Router::new()
        .route("/healthz", get(|| async { "ok" }))
        .route("/livez", get(|| async { "ok" }))
        .route("/readyz", get(|| async { "ok" }))
        .route(
            "/metrics",
            get(move || {
                let m = metrics.clone();
                async move { ([("content-type", "text/plain; version=0.0.4")], m.render()) }
            }),
        );
    let listener = tokio::net::TcpListener::bind(addr).await?;
    let bound = listener.local_addr()?;
    let task = tokio::spawn(async move {
        if let Err(e) = axum::serve(listener, app).await {
            tracing::error!(error = %e, "health/metrics server stopped");
        }
    });
    Ok((bound, task))
}
