//! Helpers for controller tests against a real in-process API server: the manager as a
//! background task, a multi-node kubelet simulator, bounded condition waits and kubectl.

#![allow(dead_code)]

use std::future::Future;
use std::time::Duration;

use e2e::Cluster;
use futures::StreamExt;
use k8s_openapi::api::core::v1::{Node, Pod};
use kube::api::{Api, DeleteParams, Patch, PatchParams, PostParams};
use kube::runtime::{watcher, WatchStreamExt};
use kube::{Client, ResourceExt};
use serde_json::json;
use tokio::task::JoinHandle;

/// How long any wait may take before the test is declared hung (a hang detector, not a
/// timing assertion).
pub const HANG: Duration = Duration::from_secs(90);

/// A client for the cluster's API server.
pub fn client(c: &Cluster) -> Client {
    let config = kube::Config::new(c.url().parse().expect("url"));
    Client::try_from(config).expect("client")
}

/// Aborts a background task when dropped, so a failing test leaves nothing running.
pub struct Task(JoinHandle<()>);

impl From<JoinHandle<()>> for Task {
    fn from(handle: JoinHandle<()>) -> Self {
        Task(handle)
    }
}

impl Drop for Task {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// Runs the controller manager with only `controllers` enabled (so node lifecycle and the
/// like cannot interfere with simulated nodes that send no heartbeats).
pub fn start_manager(c: &Cluster, controllers: &[&str]) -> Task {
    let mut config = controller_manager::Config::new(client(c));
    config.controllers = controllers.iter().map(|s| s.to_string()).collect();
    Task(tokio::spawn(async move {
        if let Err(e) = controller_manager::run(config, std::future::pending(), |_| {}).await {
            panic!("controller manager failed: {e}");
        }
    }))
}

/// Registers a Node named `name` with `labels` and `taints` (JSON arrays/objects).
pub async fn create_node(
    client: &Client,
    name: &str,
    labels: serde_json::Value,
    taints: serde_json::Value,
) {
    let nodes: Api<Node> = Api::all(client.clone());
    let node = json!({"apiVersion": "v1", "kind": "Node",
        "metadata": {"name": name, "labels": labels}, "spec": {"taints": taints}});
    let node: Node = serde_json::from_value(node).expect("node");
    nodes
        .create(&PostParams::default(), &node)
        .await
        .expect("create node");
}

/// The node a pod is pinned to by a required `metadata.name` node affinity (how the
/// DaemonSet controller targets nodes), if any.
fn affinity_target(pod: &Pod) -> Option<String> {
    let terms = &pod
        .spec
        .as_ref()?
        .affinity
        .as_ref()?
        .node_affinity
        .as_ref()?
        .required_during_scheduling_ignored_during_execution
        .as_ref()?
        .node_selector_terms;
    terms
        .iter()
        .flat_map(|t| t.match_fields.iter().flatten())
        .find(|r| r.key == "metadata.name")
        .and_then(|r| r.values.as_ref()?.first().cloned())
}

/// A kubelet (and scheduler) simulator for many nodes: binds each unbound pod to the node
/// its `metadata.name` affinity names, or to `default_node`; marks bound pods Running and
/// Ready; finishes graceful deletions. Pods labelled `sim-ready: "false"` run but stay
/// unready until the test flips the label.
pub fn start_kubelets(c: &Cluster, default_node: &str) -> Task {
    let client = client(c);
    let default_node = default_node.to_string();
    Task(tokio::spawn(async move {
        let all: Api<Pod> = Api::all(client.clone());
        let mut events = watcher(all, watcher::Config::default())
            .default_backoff()
            .applied_objects()
            .boxed();
        let mut ip = 0u32;
        while let Some(ev) = events.next().await {
            let Ok(pod) = ev else { continue };
            let ns = pod.namespace().unwrap_or_default();
            let name = pod.name_any();
            let api: Api<Pod> = Api::namespaced(client.clone(), &ns);
            if pod.metadata.deletion_timestamp.is_some() {
                let _ = api
                    .delete(&name, &DeleteParams::default().grace_period(0))
                    .await;
                continue;
            }
            let node = pod.spec.as_ref().and_then(|s| s.node_name.clone());
            if node.is_none_or(|n| n.is_empty()) {
                let target = affinity_target(&pod).unwrap_or_else(|| default_node.clone());
                let binding = json!({
                    "apiVersion": "v1", "kind": "Binding",
                    "metadata": {"name": name, "namespace": ns},
                    "target": {"apiVersion": "v1", "kind": "Node", "name": target},
                });
                if let Err(e) = api
                    .create_subresource::<_, serde_json::Value>(
                        "binding",
                        &name,
                        &PostParams::default(),
                        &binding,
                    )
                    .await
                {
                    eprintln!("sim: binding {ns}/{name}: {e}");
                }
                continue;
            }
            let phase = pod.status.as_ref().and_then(|s| s.phase.clone());
            let ready_wanted = pod.labels().get("sim-ready").map(String::as_str) != Some("false");
            let ready_now = pod
                .status
                .as_ref()
                .and_then(|s| s.conditions.as_ref())
                .is_some_and(|c| c.iter().any(|c| c.type_ == "Ready" && c.status == "True"));
            if phase.as_deref() == Some("Running") && ready_now == ready_wanted {
                continue;
            }
            if phase.as_deref() != Some("Running") {
                ip += 1;
            }
            let now = k8s_openapi::jiff::Timestamp::now().to_string();
            let ready = if ready_wanted { "True" } else { "False" };
            let cond =
                |t: &str, s: &str| json!({"type": t, "status": s, "lastTransitionTime": now});
            let status = json!({"status": {
                "phase": "Running",
                "podIP": format!("10.244.{}.{}", ip / 250, ip % 250 + 1),
                "hostIP": "10.0.0.1",
                "startTime": now,
                "conditions": [cond("PodScheduled", "True"), cond("Initialized", "True"),
                               cond("ContainersReady", ready), cond("Ready", ready)],
            }});
            if let Err(e) = api
                .patch_status(&name, &PatchParams::default(), &Patch::Merge(status))
                .await
            {
                eprintln!("sim: status of {ns}/{name}: {e}");
            }
        }
    }))
}

/// Polls `check` until it returns `Some`, failing the test after [`HANG`].
pub async fn eventually<T, F, Fut>(what: &str, mut check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Option<T>>,
{
    let deadline = tokio::time::Instant::now() + HANG;
    loop {
        if let Some(v) = check().await {
            return v;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "timed out waiting for {what}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// Runs kubectl, failing the test if it fails.
pub fn kubectl(c: &Cluster, args: &[&str]) -> String {
    tokio::task::block_in_place(|| c.must(args))
}

/// `kubectl apply -f -` of `yaml`.
pub fn apply(c: &Cluster, yaml: &str) {
    tokio::task::block_in_place(|| c.apply(yaml, &[]));
}
