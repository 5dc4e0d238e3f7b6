//! The agent's Prometheus metrics and the `/healthz` + `/metrics` listener.

use std::net::SocketAddr;
use std::sync::Arc;

use prometheus::{
    Encoder, Histogram, HistogramOpts, HistogramVec, IntCounterVec, IntGauge, Opts, Registry,
    TextEncoder,
};

use crate::Error;

/// The agent's metrics, in their own registry (not the global one) so several agents in one
/// test process do not collide.
pub struct Metrics {
    pub registry: Registry,
    /// API writes by `kind` (`node`, `node_status`, `lease`, `pod_status`, `pod_delete`) and
    /// `result` (`ok`, `error`): the load this agent puts on the API server.
    pub api_writes: IntCounterVec,
    /// Nodes this process heartbeats (1 for a real node, N when simulating).
    pub nodes: IntGauge,
    /// Simulated pods currently in phase Running.
    pub pods_running: IntGauge,
    /// Pods a real node currently runs (one worker each).
    pub pods: IntGauge,
    /// From the pod's `creationTimestamp` to the status write that made it Running: scheduling,
    /// binding and this agent's work (for a real node: sandbox, image, container start).
    pub pod_start_seconds: Histogram,
    /// CRI call durations by operation (RunPodSandbox, CreateAndStartContainer, ...).
    pub cri_seconds: HistogramVec,
}

impl Metrics {
    pub fn new() -> Result<Metrics, Error> {
        let registry = Registry::new();
        let api_writes = IntCounterVec::new(
            Opts::new(
                "cox_node_agent_api_writes_total",
                "API writes made by the node agent, by kind and result.",
            ),
            &["kind", "result"],
        )?;
        let nodes = IntGauge::new(
            "cox_node_agent_nodes",
            "Nodes registered and heartbeated by this process.",
        )?;
        let pods_running = IntGauge::new(
            "cox_node_agent_simulated_pods_running",
            "Simulated pods currently in phase Running.",
        )?;
        let pods = IntGauge::new(
            "cox_node_agent_pods",
            "Pods this (real) node agent currently runs.",
        )?;
        let pod_start_seconds = Histogram::with_opts(
            HistogramOpts::new(
                "cox_node_agent_pod_start_duration_seconds",
                "Seconds from a pod's creationTimestamp to its Running status write.",
            )
            .buckets(prometheus::exponential_buckets(0.01, 2.0, 16)?),
        )?;
        let cri_seconds = HistogramVec::new(
            HistogramOpts::new(
                "cox_node_agent_cri_operation_duration_seconds",
                "CRI operation durations, by operation.",
            )
            .buckets(prometheus::exponential_buckets(0.001, 2.0, 16)?),
            &["operation"],
        )?;
        registry.register(Box::new(cri_seconds.clone()))?;
        registry.register(Box::new(api_writes.clone()))?;
        registry.register(Box::new(nodes.clone()))?;
        registry.register(Box::new(pods_running.clone()))?;
        registry.register(Box::new(pods.clone()))?;
        registry.register(Box::new(pod_start_seconds.clone()))?;
        Ok(Metrics {
            registry,
            api_writes,
            nodes,
            pods_running,
            pods,
            pod_start_seconds,
            cri_seconds,
        })
    }

    /// Counts one API write.
    pub fn write(&self, kind: &str, ok: bool) {
        self.api_writes
            .with_label_values(&[kind, if ok { "ok" } else { "error" }])
            .inc();
    }

    /// Records one CRI operation's duration.
    pub fn cri_duration(&self, op: &str, d: std::time::Duration) {
        self.cri_seconds
            .with_label_values(&[op])
            .observe(d.as_secs_f64());
    }

    /// Total API writes so far (all kinds and results), for benchmarks and tests.
    pub fn writes_total(&self) -> u64 {
        self.registry
            .gather()
            .iter()
            .filter(|f| f.name() == "cox_node_agent_api_writes_total")
            .flat_map(|f| f.get_metric().iter())
            .map(|m| m.get_counter().value() as u64)
            .sum()
    }

    /// The text exposition format.
    pub fn render(&self) -> Result<String, Error> {
        let mut buf = Vec::new();
        TextEncoder::new().encode(&self.registry.gather(), &mut buf)?;
        Ok(String::from_utf8_lossy(&buf).into_owned())
    }
}

/// Serves `/healthz` and `/metrics` on `addr` until the task is dropped; returns the bound
/// address (port 0 picks a free one, which tests use).
pub async fn serve(
    addr: SocketAddr,
    metrics: Arc<Metrics>,
) -> Result<(SocketAddr, tokio::task::JoinHandle<()>), Error> {
    use axum::http::{header, StatusCode};
    use axum::response::IntoResponse;
    use axum::routing::get;

    let listener = tokio::net::TcpListener::bind(addr).await?;
    let bound = listener.local_addr()?;
    let app = axum::Router::new()
        .route("/healthz", get(|| async { "ok" }))
        .route(
            "/metrics",
            get(move || {
                let metrics = metrics.clone();
                async move {
                    match metrics.render() {
                        Ok(text) => (
                            StatusCode::OK,
                            [(header::CONTENT_TYPE, "text/plain; version=0.0.4")],
                            text,
                        )
                            .into_response(),
                        Err(e) => {
                            (StatusCode::INTERNAL_SERVER_ERROR, e.to_string()).into_response()
                        }
                    }
                }
            }),
        );
    let task = tokio::spawn(async move {
        if let Err(e) = axum::serve(listener, app).await {
            tracing::error!(error = %e, "metrics listener stopped");
        }
    });
    Ok((bound, task))
}
