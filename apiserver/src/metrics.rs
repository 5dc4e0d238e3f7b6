//! Prometheus metrics: request counts and latencies by verb and resource, and stored object
//! counts read from storage at scrape time.

use std::sync::Arc;

use axum::extract::State as AxumState;
use axum::http::{header, Method, StatusCode};
use axum::response::{IntoResponse, Response};
use prometheus::{
    Encoder, HistogramOpts, HistogramVec, IntCounterVec, IntGaugeVec, Opts, Registry,
};

use crate::resource::{self, Target};
use crate::State;

pub struct Metrics {
    registry: Registry,
    requests: IntCounterVec,
    durations: HistogramVec,
    objects: IntGaugeVec,
    watchers: IntGaugeVec,
}

/// Counts one open watch for as long as it lives.
pub struct WatcherGuard(prometheus::IntGauge);

impl Drop for WatcherGuard {
    fn drop(&mut self) {
        self.0.dec();
    }
}

impl Metrics {
    pub fn new() -> Self {
        let registry = Registry::new();
        let requests = IntCounterVec::new(
            Opts::new(
                "apiserver_request_total",
                "Requests by verb, group, resource and code.",
            ),
            &["verb", "group", "resource", "code"],
        )
        .expect("static metric definition");
        let durations = HistogramVec::new(
            HistogramOpts::new(
                "apiserver_request_duration_seconds",
                "Request latency by verb, group and resource (watches: their whole duration).",
            )
            .buckets(vec![
                0.005, 0.01, 0.025, 0.05, 0.1, 0.2, 0.4, 0.6, 0.8, 1.0, 2.0, 5.0, 10.0, 30.0, 60.0,
            ]),
            &["verb", "group", "resource"],
        )
        .expect("static metric definition");
        let objects = IntGaugeVec::new(
            Opts::new("apiserver_storage_objects", "Objects stored, by resource."),
            &["resource"],
        )
        .expect("static metric definition");
        let watchers = IntGaugeVec::new(
            Opts::new(
                "apiserver_registered_watchers",
                "Open watches, by group and kind.",
            ),
            &["group", "kind"],
        )
        .expect("static metric definition");
        for c in [
            Box::new(requests.clone()) as Box<dyn prometheus::core::Collector>,
            Box::new(durations.clone()),
            Box::new(objects.clone()),
            Box::new(watchers.clone()),
        ] {
            registry.register(c).expect("metrics registered once");
        }
        Metrics {
            registry,
            requests,
            durations,
            objects,
            watchers,
        }
    }

    /// Registers an open watch; it is counted until the guard is dropped.
    pub fn watcher(&self, group: &str, kind: &str) -> WatcherGuard {
        let gauge = self.watchers.with_label_values(&[group, kind]);
        gauge.inc();
        WatcherGuard(gauge)
    }

    pub fn observe(&self, verb: &str, group: &str, resource: &str, code: u16, secs: f64) {
        self.requests
            .with_label_values(&[verb, group, resource, &code.to_string()])
            .inc();
        self.durations
            .with_label_values(&[verb, group, resource])
            .observe(secs);
    }
}

/// The verb label as upstream spells it (LIST, WATCH, GET, POST, ...).
pub fn classify(method: &Method, path: &str, watch: bool) -> (String, String, String) {
    match resource::parse(path) {
        Some(Target::Object {
            resource,
            name,
            subresource,
        }) => {
            let verb = match (method.as_str(), name.is_some(), watch) {
                ("GET", _, true) => "WATCH",
                ("GET", false, _) => "LIST",
                (m, _, _) => m,
            };
            let res = match subresource {
                Some(s) => format!("{}/{s}", resource.info.plural),
                None => resource.info.plural.to_string(),
            };
            (verb.to_string(), resource.info.group.to_string(), res)
        }
        _ => (method.as_str().to_string(), String::new(), String::new()),
    }
}

pub async fn serve(AxumState(state): AxumState<Arc<State>>) -> Response {
    for info in api_types::RESOURCES {
        // events.k8s.io Events are the core ones (`events::storage_resource`): same count.
        let prefix = if crate::events::is_events_v1(info) {
            "/registry/core/events/".to_string()
        } else {
            info.storage_prefix()
        };
        if let Ok(n) = state.registry.storage.count(&prefix).await {
            let label = if info.group.is_empty() {
                info.plural.to_string()
            } else {
                format!("{}.{}", info.plural, info.group)
            };
            state
                .metrics
                .objects
                .with_label_values(&[&label])
                .set(n as i64);
        }
    }
    let mut out = Vec::new();
    let encoder = prometheus::TextEncoder::new();
    if encoder
        .encode(&state.metrics.registry.gather(), &mut out)
        .is_err()
    {
        return StatusCode::INTERNAL_SERVER_ERROR.into_response();
    }
    (
        StatusCode::OK,
        [(header::CONTENT_TYPE, encoder.format_type().to_string())],
        out,
    )
        .into_response()
}
