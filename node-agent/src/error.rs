//! The library's one error type.

/// Everything the node agent's library can fail with. The binary wraps it in `anyhow`.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A request to the API server failed (transport, or a non-2xx `Status`).
    #[error("API request failed: {0}")]
    Kube(#[from] kube::Error),
    /// Registering or rendering a metric failed.
    #[error("metrics: {0}")]
    Metrics(#[from] prometheus::Error),
    /// Binding the health/metrics listener or reading host facts failed.
    #[error("I/O: {0}")]
    Io(#[from] std::io::Error),
    /// A duration flag or annotation that is not a Go-style duration (`500ms`, `1m30s`).
    #[error("invalid duration {0:?}: {1}")]
    Duration(String, &'static str),
    /// A configuration value that cannot work (e.g. zero simulated nodes).
    #[error("invalid configuration: {0}")]
    Config(String),
    /// The container runtime's socket could not be reached.
    #[error("cannot connect to the container runtime at {path}: {source}")]
    RuntimeConnect {
        path: String,
        #[source]
        source: tonic::transport::Error,
    },
    /// A CRI call failed; `op` names the call so the message says what the agent was doing.
    #[error("CRI {op}: {}", .status.message())]
    Cri {
        op: &'static str,
        #[source]
        status: tonic::Status,
    },
    /// `ctr images import` of a local image tarball failed; `message` carries ctr's stderr.
    #[error("importing image tarball {path}: {message}")]
    ImageImport { path: String, message: String },
    /// `deploy/images/build.sh` failed; `message` carries its stderr.
    #[error("building local images with {script}: {message}")]
    ImageBuild { script: String, message: String },
    /// The private containerd of a test (`testing::Containerd`) could not be set up.
    #[error("test containerd: {0}")]
    Fixture(String),
}
