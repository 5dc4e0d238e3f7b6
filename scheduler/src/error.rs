//! The library's one error type.

/// Everything that can stop the scheduler or one of its API calls.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The API server refused or failed a request.
    #[error("API request failed: {0}")]
    Kube(#[from] kube::Error),
    /// The kubeconfig could not be read or did not name a usable cluster.
    #[error("invalid kubeconfig: {0}")]
    Kubeconfig(String),
    /// `--config` could not be read or parsed.
    #[error("invalid scheduler configuration: {0}")]
    Config(String),
    /// The health/metrics listener could not be bound.
    #[error("cannot serve /healthz and /metrics: {0}")]
    Io(#[from] std::io::Error),
    /// Prometheus refused a metric (a programming error, reported instead of panicking).
    #[error("metrics: {0}")]
    Metrics(#[from] prometheus::Error),
    /// Another replica holds the lease now; this one must stop scheduling.
    #[error("leader election lost")]
    LeadershipLost,
    /// The scheduler's task panicked or was cancelled.
    #[error("scheduler task failed: {0}")]
    TaskFailed(String),
    /// A watch ended for good.
    #[error("watch of {0} ended")]
    WatchEnded(&'static str),
}
