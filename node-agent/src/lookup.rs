//! What the streaming server (logs, exec, attach, port-forward) needs to know about the pods
//! this node runs. The pod workers own that state; the server only asks through this trait,
//! so it can be tested against a fixed table.

use std::path::PathBuf;

/// One container of a pod on this node, as the runtime currently knows it.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ContainerRef {
    pub pod_uid: String,
    /// The CRI sandbox id, when the sandbox exists.
    pub sandbox_id: Option<String>,
    /// The CRI id of the current instance of the container, when it has been created.
    pub container_id: Option<String>,
    /// The CRI log file of the current instance (kubelet's layout:
    /// `<log root>/<namespace>_<pod>_<uid>/<container>/<restart count>.log`).
    pub log_path: Option<PathBuf>,
    /// The log file of the previous instance (`kubectl logs --previous`), if one ran.
    pub previous_log_path: Option<PathBuf>,
}

/// Answers "which runtime objects back this pod/container?" for the streaming server.
pub trait PodLookup: Send + Sync + 'static {
    /// `None` when no pod of that name runs here or it has no such container.
    fn container(&self, namespace: &str, pod: &str, container: &str) -> Option<ContainerRef>;
    /// The CRI sandbox id of a pod (port-forward targets the sandbox).
    fn sandbox(&self, namespace: &str, pod: &str) -> Option<String>;
}
