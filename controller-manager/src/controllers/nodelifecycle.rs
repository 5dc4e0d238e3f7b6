//! The node lifecycle controller (upstream `node-lifecycle-controller`, alias
//! `nodelifecycle`): notices nodes that stopped heartbeating and taints nodes by condition.
//!
//! Health, as upstream's `monitorNodeHealth`: a node is alive while its
//! `kube-node-lease/<node>` Lease keeps being renewed or its `Ready` condition's
//! `lastHeartbeatTime` keeps changing. Both are compared with what this controller saw last,
//! and the *local* time of the last change is what counts, so a node agent's clock skew never
//! matters. A node silent for `--node-monitor-grace-period` (or `--node-startup-grace-period`
//! when it never posted a `Ready` condition) gets `Ready`, `MemoryPressure`, `DiskPressure`
//! and `PIDPressure` set to `Unknown` through `nodes/status`.
//!
//! Taints, as upstream's `TaintNodesByCondition` and NoExecute tainting: `not-ready`
//! (`Ready=False`) and `unreachable` (`Ready=Unknown`) as both NoSchedule and NoExecute, the
//! pressure and `network-unavailable` conditions and `spec.unschedulable` as NoSchedule.
//! Taints this controller owns are removed as soon as their condition clears; every other
//! taint is left alone. Evicting pods from NoExecute taints is the
//! [`super::tainteviction`] controller's job.
//!
//! Pods, as upstream's `MarkPodsNotReady`: when this controller turns a node's `Ready` from
//! `True` to `Unknown`, the pods bound to it that still say `Ready=True` are set
//! `Ready=False`, so Services stop sending them traffic long before they are evicted (300 s
//! by default), and the Node gets a `NodeNotReady` event.
//!
//! Not here: upstream's per-zone eviction rate limiting and "full disruption" mode (every
//! node is tainted as it goes silent, even if the whole zone does).

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::Duration;

use futures::future::BoxFuture;
use futures::{FutureExt, StreamExt};
use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::api::core::v1::{Node, NodeCondition, Pod, Taint};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{MicroTime, Time};
use kube::api::{Patch, PatchParams};
use kube::runtime::reflector::{ObjectRef, Store};
use kube::{Api, Client, ResourceExt};
use serde_json::json;
use tokio::time::Instant;
use tracing::Instrument;

use crate::informers::{to_value, Informers};
use crate::metrics::Metrics;
use crate::util::Recorder;
use crate::{util, Error, NodeSettings};

/// The controller's name in `--controllers` and metrics.
pub const NAME: &str = "nodelifecycle";

/// The namespace of node heartbeat Leases.
pub const LEASE_NAMESPACE: &str = "kube-node-lease";

/// The taint of a node whose `Ready` condition is `False`.
pub const NOT_READY: &str = "node.kubernetes.io/not-ready";
/// The taint of a node whose `Ready` condition is `Unknown`.
pub const UNREACHABLE: &str = "node.kubernetes.io/unreachable";

/// The conditions set to `Unknown` when a node goes silent (upstream's list).
const SILENT_CONDITIONS: [&str; 4] = ["Ready", "MemoryPressure", "DiskPressure", "PIDPressure"];

/// NoSchedule taints by condition (upstream `nodeConditionToTaintKeyStatusMap`).
const NO_SCHEDULE: [(&str, &str, &str); 6] = [
    ("Ready", "False", NOT_READY),
    ("Ready", "Unknown", UNREACHABLE),
    (
        "MemoryPressure",
        "True",
        "node.kubernetes.io/memory-pressure",
    ),
    ("DiskPressure", "True", "node.kubernetes.io/disk-pressure"),
    ("PIDPressure", "True", "node.kubernetes.io/pid-pressure"),
    (
        "NetworkUnavailable",
        "True",
        "node.kubernetes.io/network-unavailable",
    ),
];
/// The taint of a cordoned node.
const UNSCHEDULABLE: &str = "node.kubernetes.io/unschedulable";

/// Node changes are gathered for this long before a pass (a heartbeat burst costs one).
const DEBOUNCE: Duration = Duration::from_millis(200);

/// The controller as a future that runs until dropped.
pub fn controller(
    client: Client,
    informers: &Informers,
    metrics: Arc<Metrics>,
    settings: NodeSettings,
) -> Option<BoxFuture<'static, ()>> {
    let mut changes = informers.nodes.subscribe()?;
    let mut lc = Lifecycle {
        recorder: Recorder::new(&client, "node-controller"),
        pods: informers.pods.store(),
        retry_pods: HashSet::new(),
        client,
        nodes: informers.nodes.store(),
        leases: informers.leases.store(),
        settings,
        health: HashMap::new(),
    };
    Some(
        async move {
            loop {
                tokio::select! {
                    next = changes.next() => if next.is_none() { return },
                    () = tokio::time::sleep(lc.settings.monitor_period) => {}
                }
                tokio::time::sleep(DEBOUNCE).await;
                while changes.next().now_or_never().flatten().is_some() {}
                let timer = metrics.start(NAME);
                let result = lc.pass().await;
                timer.finish(result.is_ok());
                if let Err(error) = result {
                    metrics.retry(NAME);
                    tracing::warn!(controller = NAME, %error, "node health pass failed");
                }
            }
        }
        .boxed(),
    )
}

/// What was last seen of one node's heartbeats, and when (locally) it last changed.
struct Health {
    renew: Option<MicroTime>,
    heartbeat: Option<Time>,
    probe: Instant,
}

struct Lifecycle {
    client: Client,
    recorder: Recorder,
    pods: Store<Pod>,
    /// Nodes whose pods still have to be marked not ready (the transition happened, but a
    /// write failed).
    retry_pods: HashSet<String>,
    nodes: Store<Node>,
    leases: Store<Lease>,
    settings: NodeSettings,
    health: HashMap<String, Health>,
}

impl Lifecycle {
    async fn pass(&mut self) -> Result<(), Error> {
        let nodes = self.nodes.state();
        self.health
            .retain(|name, _| nodes.iter().any(|n| &n.name_any() == name));
        self.retry_pods
            .retain(|name| nodes.iter().any(|n| &n.name_any() == name));
        let mut first_error = None;
        for node in nodes {
            let name = node.name_any();
            let span = tracing::info_span!("node", controller = NAME, key = %name);
            if let Err(e) = self.sync(&node).instrument(span).await {
                tracing::warn!(controller = NAME, node = %name, error = %e, "node sync failed");
                first_error.get_or_insert(e);
            }
        }
        first_error.map_or(Ok(()), Err)
    }

    async fn sync(&mut self, node: &Node) -> Result<(), Error> {
        let name = node.name_any();
        let lease = self
            .leases
            .get(&ObjectRef::new(&name).within(LEASE_NAMESPACE));
        let renew = lease.and_then(|l| l.spec.as_ref().and_then(|s| s.renew_time.clone()));
        let conditions = node
            .status
            .as_ref()
            .and_then(|s| s.conditions.clone())
            .unwrap_or_default();
        let ready = conditions.iter().find(|c| c.type_ == "Ready");
        let heartbeat = ready.and_then(|c| c.last_heartbeat_time.clone());
        let now = Instant::now();
        let health = self.health.entry(name.clone()).or_insert(Health {
            renew: renew.clone(),
            heartbeat: heartbeat.clone(),
            probe: now,
        });
        if health.renew != renew || health.heartbeat != heartbeat {
            health.renew = renew;
            health.heartbeat = heartbeat;
            health.probe = now;
        }
        let posted = ready.is_some();
        let was_ready = ready.is_some_and(|c| c.status == "True");
        let grace = if posted {
            self.settings.monitor_grace_period
        } else {
            self.settings.startup_grace_period
        };
        let mut conditions = conditions;
        if now.duration_since(health.probe) > grace && mark_unknown(&mut conditions, posted) {
            tracing::info!(
                controller = NAME,
                node = %name,
                "node stopped posting status; conditions set to Unknown"
            );
            let api: Api<Node> = Api::all(self.client.clone());
            api.patch_status(
                &name,
                &PatchParams::default(),
                &Patch::Merge(json!({
                    "metadata": {"resourceVersion": node.resource_version()},
                    "status": {"conditions": to_value(&conditions)},
                })),
            )
            .await?;
            if was_ready {
                self.recorder.normal(
                    node,
                    "NodeNotReady",
                    format!("Node {name} status is now: NodeNotReady"),
                );
                self.retry_pods.insert(name.clone());
            }
            if self.retry_pods.contains(&name) && self.mark_pods_not_ready(&name).await? {
                self.retry_pods.remove(&name);
            }
            // The taint update below must not race our own status write with a stale
            // resourceVersion: the next pass (triggered by this write) does it.
            return Ok(());
        }
        let current = node
            .spec
            .as_ref()
            .and_then(|s| s.taints.clone())
            .unwrap_or_default();
        let unschedulable = node
            .spec
            .as_ref()
            .and_then(|s| s.unschedulable)
            .unwrap_or(false);
        let wanted = desired_taints(&current, &conditions, unschedulable, &util::now());
        if !same_taints(&current, &wanted) {
            tracing::info!(
                controller = NAME,
                node = %name,
                taints = ?wanted.iter().map(|t| format!("{}:{}", t.key, t.effect)).collect::<Vec<_>>(),
                "updating node taints"
            );
            let api: Api<Node> = Api::all(self.client.clone());
            api.patch(
                &name,
                &PatchParams::default(),
                &Patch::Merge(json!({
                    "metadata": {"resourceVersion": node.resource_version()},
                    "spec": {"taints": to_value(&wanted)},
                })),
            )
            .await?;
        }
        if self.retry_pods.contains(&name) {
            // Ready again: the node agent owns its pods' readiness from here.
            if was_ready || self.mark_pods_not_ready(&name).await? {
                self.retry_pods.remove(&name);
            }
        }
        Ok(())
    }

    /// Sets `Ready=False` on the pods of a node this controller just found silent (upstream
    /// `MarkPodsNotReady`, which also runs only on that transition: a node agent that posts
    /// `Ready=False` itself still owns its pods' readiness). Returns whether every pod was
    /// updated; the caller retries on a later pass if not (a conflict).
    async fn mark_pods_not_ready(&self, node: &str) -> Result<bool, Error> {
        let mut all = true;
        let now = util::now();
        for pod in self.pods.state() {
            if pod.spec.as_ref().and_then(|s| s.node_name.as_deref()) != Some(node) {
                continue;
            }
            let mut conditions = pod
                .status
                .as_ref()
                .and_then(|s| s.conditions.clone())
                .unwrap_or_default();
            let Some(ready) = conditions
                .iter_mut()
                .find(|c| c.type_ == "Ready" && c.status == "True")
            else {
                continue;
            };
            ready.status = "False".into();
            ready.last_transition_time = Some(now.clone());
            tracing::info!(controller = NAME, pod = %util::key_of(pod.as_ref()), node, "marking pod not ready");
            let api: Api<Pod> =
                Api::namespaced(self.client.clone(), &pod.namespace().unwrap_or_default());
            match api
                .patch_status(
                    &pod.name_any(),
                    &PatchParams::default(),
                    &Patch::Merge(json!({
                        "metadata": {"resourceVersion": pod.resource_version()},
                        "status": {"conditions": to_value(&conditions)},
                    })),
                )
                .await
            {
                Ok(_) => {}
                Err(kube::Error::Api(s)) if s.code == 404 => {}
                Err(kube::Error::Api(s)) if s.code == 409 => all = false,
                Err(e) => return Err(e.into()),
            }
        }
        Ok(all)
    }
}

/// Sets the silent-node conditions to `Unknown` (adding missing ones, as upstream does);
/// returns whether anything changed. `posted` is whether the node ever posted `Ready`.
fn mark_unknown(conditions: &mut Vec<NodeCondition>, posted: bool) -> bool {
    let now = util::now();
    let mut changed = false;
    for type_ in SILENT_CONDITIONS {
        match conditions.iter_mut().find(|c| c.type_ == type_) {
            Some(c) if c.status == "Unknown" => {}
            Some(c) => {
                c.status = "Unknown".into();
                c.reason = Some("NodeStatusUnknown".into());
                c.message = Some("Kubelet stopped posting node status.".into());
                c.last_transition_time = Some(now.clone());
                changed = true;
            }
            None => {
                let (reason, message) = if posted {
                    ("NodeStatusUnknown", "Kubelet stopped posting node status.")
                } else {
                    (
                        "NodeStatusNeverUpdated",
                        "Kubelet never posted node status.",
                    )
                };
                conditions.push(NodeCondition {
                    type_: type_.into(),
                    status: "Unknown".into(),
                    reason: Some(reason.into()),
                    message: Some(message.into()),
                    last_transition_time: Some(now.clone()),
                    last_heartbeat_time: None,
                });
                changed = true;
            }
        }
    }
    changed
}

/// Whether this controller owns `taint` (by key and effect).
fn owned(taint: &Taint) -> bool {
    match taint.effect.as_str() {
        "NoSchedule" => {
            taint.key == UNSCHEDULABLE || NO_SCHEDULE.iter().any(|(_, _, k)| *k == taint.key)
        }
        "NoExecute" => taint.key == NOT_READY || taint.key == UNREACHABLE,
        _ => false,
    }
}

/// The node's taints as they should be: every taint this controller does not own as is,
/// then the owned ones the conditions call for (keeping an existing one's `timeAdded`, which
/// the taint eviction controller counts toleration seconds from).
pub fn desired_taints(
    current: &[Taint],
    conditions: &[NodeCondition],
    unschedulable: bool,
    now: &Time,
) -> Vec<Taint> {
    let status = |t: &str| {
        conditions
            .iter()
            .find(|c| c.type_ == t)
            .map(|c| c.status.as_str())
    };
    let mut wanted: Vec<(&str, &str)> = NO_SCHEDULE
        .iter()
        .filter(|(cond, st, _)| status(cond) == Some(*st))
        .map(|(_, _, key)| (*key, "NoSchedule"))
        .collect();
    if unschedulable {
        wanted.push((UNSCHEDULABLE, "NoSchedule"));
    }
    match status("Ready") {
        Some("False") => wanted.push((NOT_READY, "NoExecute")),
        Some("Unknown") => wanted.push((UNREACHABLE, "NoExecute")),
        _ => {}
    }
    let mut out: Vec<Taint> = current.iter().filter(|t| !owned(t)).cloned().collect();
    for (key, effect) in wanted {
        let existing = current
            .iter()
            .find(|t| t.key == key && t.effect == effect)
            .cloned();
        out.push(existing.unwrap_or_else(|| Taint {
            key: key.into(),
            effect: effect.into(),
            value: None,
            time_added: (effect == "NoExecute").then(|| now.clone()),
        }));
    }
    out
}

/// Whether two taint lists hold the same taints (by key and effect), order aside.
fn same_taints(a: &[Taint], b: &[Taint]) -> bool {
    a.len() == b.len()
        && a.iter()
            .all(|t| b.iter().any(|u| u.key == t.key && u.effect == t.effect))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cond(t: &str, s: &str) -> NodeCondition {
        NodeCondition {
            type_: t.into(),
            status: s.into(),
            ..Default::default()
        }
    }

    #[test]
    fn taints_follow_conditions_and_leave_others_alone() {
        let now = util::now();
        let custom = Taint {
            key: "dedicated".into(),
            effect: "NoSchedule".into(),
            value: Some("gpu".into()),
            time_added: None,
        };
        let t = desired_taints(
            std::slice::from_ref(&custom),
            &[cond("Ready", "Unknown")],
            false,
            &now,
        );
        let keys: Vec<_> = t
            .iter()
            .map(|t| (t.key.as_str(), t.effect.as_str()))
            .collect();
        assert_eq!(
            keys,
            [
                ("dedicated", "NoSchedule"),
                (UNREACHABLE, "NoSchedule"),
                (UNREACHABLE, "NoExecute")
            ]
        );
        assert!(t[2].time_added.is_some());
        let healthy = desired_taints(&t, &[cond("Ready", "True")], true, &now);
        let keys: Vec<_> = healthy.iter().map(|t| t.key.as_str()).collect();
        assert_eq!(keys, ["dedicated", UNSCHEDULABLE]);
    }

    #[test]
    fn silent_nodes_get_unknown_conditions_once() {
        let mut cs = vec![cond("Ready", "True"), cond("MemoryPressure", "False")];
        assert!(mark_unknown(&mut cs, true));
        assert_eq!(cs.len(), 4);
        assert!(cs.iter().all(|c| c.status == "Unknown"));
        assert_eq!(cs[0].reason.as_deref(), Some("NodeStatusUnknown"));
        assert!(!mark_unknown(&mut cs, true));
    }
}
