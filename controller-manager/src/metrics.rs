//! `/healthz` and `/metrics`: reconcile counts, failures (retries) and durations per
//! controller, in the Prometheus text format.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Instant;

use axum::routing::get;
use axum::Router;
use prometheus::{
    Encoder, HistogramOpts, HistogramVec, IntCounterVec, IntGaugeVec, Opts, Registry, TextEncoder,
};

use crate::Error;

/// The controller manager's metrics.
pub struct Metrics {
    registry: Registry,
    reconciles: IntCounterVec,
    retries: IntCounterVec,
    duration: HistogramVec,
    in_flight: IntGaugeVec,
}

impl Metrics {
    /// Registers every metric in a fresh registry.
    pub fn new() -> Result<Self, Error> {
        let registry = Registry::new();
        let reconciles = IntCounterVec::new(
            Opts::new(
                "controller_reconcile_total",
                "Reconciles run, by controller and result.",
            ),
            &["controller", "result"],
        )?;
        let retries = IntCounterVec::new(
            Opts::new(
                "workqueue_retries_total",
                "Keys requeued with backoff after a failed reconcile, by controller.",
            ),
            &["name"],
        )?;
        let duration = HistogramVec::new(
            HistogramOpts::new(
                "controller_reconcile_duration_seconds",
                "How long reconciles take, by controller.",
            ),
            &["controller"],
        )?;
        let in_flight = IntGaugeVec::new(
            Opts::new(
                "workqueue_depth",
                "Reconciles running right now, by controller (kube-runtime keeps the pending \
                 queue private, so this is the part of the queue that is being worked on).",
            ),
            &["name"],
        )?;
        registry.register(Box::new(reconciles.clone()))?;
        registry.register(Box::new(retries.clone()))?;
        registry.register(Box::new(duration.clone()))?;
        registry.register(Box::new(in_flight.clone()))?;
        Ok(Metrics {
            registry,
            reconciles,
            retries,
            duration,
            in_flight,
        })
    }

    /// Starts timing one reconcile of `controller`.
    pub fn start(&self, controller: &'static str) -> ReconcileTimer<'_> {
        self.in_flight.with_label_values(&[controller]).inc();
        ReconcileTimer {
            metrics: self,
            controller,
            started: Instant::now(),
        }
    }

    /// Records a retry of a failed key.
    pub fn retry(&self, controller: &str) {
        self.retries.with_label_values(&[controller]).inc();
    }

    /// The text exposition of every metric.
    pub fn render(&self) -> String {
        let mut buf = Vec::new();
        // Encoding into a Vec only fails on invalid metric names, which are constants here.
        let _ = TextEncoder::new().encode(&self.registry.gather(), &mut buf);
        String::from_utf8_lossy(&buf).into_owned()
    }
}

/// Times one reconcile; records it when finished.
pub struct ReconcileTimer<'a> {
    metrics: &'a Metrics,
    controller: &'static str,
    started: Instant,
}

impl ReconcileTimer<'_> {
    /// Records the outcome.
    pub fn finish(self, ok: bool) {
        let m = self.metrics;
        m.in_flight.with_label_values(&[self.controller]).dec();
        m.duration
            .with_label_values(&[self.controller])
            .observe(self.started.elapsed().as_secs_f64());
        let result = if ok { "success" } else { "error" };
        m.reconciles
            .with_label_values(&[self.controller, result])
            .inc();
    }
}

/// Binds `addr` and returns the bound address and the server future.
pub async fn serve(
    addr: SocketAddr,
    metrics: Arc<Metrics>,
) -> Result<(SocketAddr, impl std::future::Future<Output = ()>), Error> {
    let listener = tokio::net::TcpListener::bind(addr)
        .await
        .map_err(|source| Error::Bind { addr, source })?;
    let bound = listener
        .local_addr()
        .map_err(|source| Error::Bind { addr, source })?;
    let app = Router::new()
        .route("/healthz", get(|| async { "ok" }))
        .route(
            "/metrics",
            get(move || {
                let m = metrics.clone();
                async move { m.render() }
            }),
        );
    Ok((bound, async move {
        if let Err(error) = axum::serve(listener, app).await {
            tracing::error!(%error, "metrics server stopped");
        }
    }))
}
