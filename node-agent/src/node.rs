//! Node registration and heartbeats, shared by real and simulated nodes.
//!
//! Heartbeats are cheap, as upstream since the NodeLease feature: the Lease
//! `kube-node-lease/<node>` is renewed every `renew_interval` (10 s), and the Node's status
//! is written only when it changes or every `status_interval` (1 min). The API server resets
//! status on create for kinds with a status subresource, so registration creates the Node
//! and then writes its status through `nodes/{name}/status`.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use k8s_openapi::api::coordination::v1::{Lease, LeaseSpec};
use k8s_openapi::api::core::v1::{Node, NodeSpec, NodeSystemInfo};
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{MicroTime, ObjectMeta, OwnerReference};
use kube::api::{Api, Patch, PatchParams, PostParams};
use kube::Client;
use parking_lot::RwLock;
use serde_json::{json, Value};
use tokio::sync::{watch, Semaphore};
use tracing::Instrument;

use crate::{Error, Metrics};

/// The namespace upstream keeps node Leases in.
pub const LEASE_NAMESPACE: &str = "kube-node-lease";
/// The kubelet version nodes report: the API level this control plane serves.
pub const KUBELET_VERSION: &str = "v1.32.0";

/// Every API write of one agent process goes through this: one client, one bound on writes in
/// flight shared by heartbeats and pod updates (so 5,000 simulated nodes cannot open 5,000
/// concurrent requests), and the write counters.
#[derive(Clone)]
pub struct Writer {
    pub client: Client,
    permits: Arc<Semaphore>,
    pub metrics: Arc<Metrics>,
}

impl Writer {
    pub fn new(client: Client, max_in_flight: usize, metrics: Arc<Metrics>) -> Writer {
        Writer {
            client,
            permits: Arc::new(Semaphore::new(max_in_flight.max(1))),
            metrics,
        }
    }

    /// Runs one API write under the in-flight bound and counts it as `kind`.
    pub async fn write<T, F>(&self, kind: &str, request: F) -> Result<T, kube::Error>
    where
        F: std::future::Future<Output = Result<T, kube::Error>>,
    {
        // The semaphore is never closed, so acquire only fails if it were; write anyway then.
        let _permit = self.permits.acquire().await.ok();
        let result = request.await;
        self.metrics.write(kind, result.is_ok());
        result
    }
}

/// Whether the node can run pods, as its `Ready` condition says.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Readiness {
    /// `Ready=True`, reason `KubeletReady`.
    Ready,
    /// `Ready=False`, reason `KubeletNotReady`, with the message saying why.
    NotReady(String),
}

/// What a node says about itself. Built by [`crate::host`] for a real node and by
/// [`crate::simulate`] for simulated ones.
#[derive(Clone, Debug)]
pub struct NodeConfig {
    pub name: String,
    pub internal_ip: String,
    pub hostname: String,
    pub labels: BTreeMap<String, String>,
    /// `cpu`, `memory`, `ephemeral-storage`, `pods`.
    pub capacity: BTreeMap<String, Quantity>,
    pub allocatable: BTreeMap<String, Quantity>,
    pub node_info: NodeSystemInfo,
    /// Set on create when the Node does not exist yet; an existing Node's `spec.podCIDR`
    /// (e.g. from the controller manager's IPAM) always wins.
    pub pod_cidr: Option<String>,
    /// The streaming server's port (`status.daemonEndpoints.kubeletEndpoint.Port`): where the
    /// API server proxies logs, exec, attach and port-forward to.
    pub kubelet_port: Option<u16>,
    /// Images present on the node (`status.images`), for the scheduler's ImageLocality.
    pub images: Vec<(Vec<String>, i64)>,
}

impl NodeConfig {
    /// Upstream's well-known node labels for this node.
    pub fn default_labels(name: &str, os: &str, arch: &str) -> BTreeMap<String, String> {
        BTreeMap::from([
            ("kubernetes.io/hostname".to_string(), name.to_string()),
            ("kubernetes.io/os".to_string(), os.to_string()),
            ("kubernetes.io/arch".to_string(), arch.to_string()),
            ("beta.kubernetes.io/os".to_string(), os.to_string()),
            ("beta.kubernetes.io/arch".to_string(), arch.to_string()),
        ])
    }
}

/// Heartbeat periods. Upstream's defaults are [`Timing::default`]; tests shorten them.
#[derive(Clone, Copy, Debug)]
pub struct Timing {
    pub lease_duration_seconds: i32,
    pub renew_interval: Duration,
    pub status_interval: Duration,
}

impl Default for Timing {
    fn default() -> Self {
        Timing {
            lease_duration_seconds: 40,
            renew_interval: Duration::from_secs(10),
            status_interval: Duration::from_secs(60),
        }
    }
}

/// What other parts of the agent read about a registered node while it heartbeats.
#[derive(Debug, Default)]
pub struct NodeShared {
    /// The Node's `spec.podCIDR` as last seen (refreshed by every status write).
    pub pod_cidr: RwLock<Option<String>>,
    pub uid: RwLock<Option<String>>,
}

/// One node's registration and heartbeat state.
pub struct NodeHeartbeat {
    config: NodeConfig,
    writer: Writer,
    timing: Timing,
    readiness: watch::Receiver<Readiness>,
    pub shared: Arc<NodeShared>,
    /// The last status written, without heartbeat times, to write only on change.
    last_status: Option<Value>,
    last_status_write: Option<Instant>,
    /// `lastTransitionTime` per condition type: kept until that condition's status changes.
    transitions: BTreeMap<&'static str, (bool, String)>,
}

impl NodeHeartbeat {
    /// `readiness` lets the owner flip the Ready condition (written at once, not at the next
    /// minute); simulated nodes pass a receiver that stays `Ready`.
    pub fn new(
        config: NodeConfig,
        writer: Writer,
        timing: Timing,
        readiness: watch::Receiver<Readiness>,
    ) -> NodeHeartbeat {
        NodeHeartbeat {
            config,
            writer,
            timing,
            readiness,
            shared: Arc::new(NodeShared::default()),
            last_status: None,
            last_status_write: None,
            transitions: BTreeMap::new(),
        }
    }

    pub fn name(&self) -> &str {
        &self.config.name
    }

    /// Creates the Node (or adopts an existing one), writes its status and its Lease.
    pub async fn register(&mut self) -> Result<(), Error> {
        let span = tracing::info_span!("register", node = %self.config.name);
        async {
            let nodes: Api<Node> = Api::all(self.writer.client.clone());
            let node = Node {
                metadata: ObjectMeta {
                    name: Some(self.config.name.clone()),
                    labels: Some(self.config.labels.clone()),
                    ..Default::default()
                },
                spec: Some(NodeSpec {
                    pod_cidr: self.config.pod_cidr.clone(),
                    pod_cidrs: self.config.pod_cidr.clone().map(|c| vec![c]),
                    ..Default::default()
                }),
                status: None,
            };
            let created = self
                .writer
                .write("node", nodes.create(&PostParams::default(), &node))
                .await;
            let node = match created {
                Ok(n) => n,
                Err(kube::Error::Api(s)) if s.code == 409 => {
                    tracing::info!("node exists; adopting it");
                    nodes.get(&self.config.name).await?
                }
                Err(e) => return Err(e.into()),
            };
            self.observe(&node);
            self.write_status().await?;
            self.create_lease().await?;
            tracing::info!("node registered");
            Ok(())
        }
        .instrument(span)
        .await
    }

    fn observe(&self, node: &Node) {
        *self.shared.uid.write() = node.metadata.uid.clone();
        let cidr = node.spec.as_ref().and_then(|s| s.pod_cidr.clone());
        if cidr.is_some() {
            *self.shared.pod_cidr.write() = cidr;
        }
    }

    /// The status as it would be written now, without heartbeat times.
    fn desired_status(&mut self) -> Value {
        let ready = self.readiness.borrow().clone();
        let now = now_rfc3339();
        let (ready_status, ready_reason, ready_message) = match &ready {
            Readiness::Ready => ("True", "KubeletReady", "kubelet is posting ready status"),
            Readiness::NotReady(m) => ("False", "KubeletNotReady", m.as_str()),
        };
        let specs: [(&'static str, &str, &str, &str); 4] = [
            (
                "MemoryPressure",
                "False",
                "KubeletHasSufficientMemory",
                "kubelet has sufficient memory available",
            ),
            (
                "DiskPressure",
                "False",
                "KubeletHasNoDiskPressure",
                "kubelet has no disk pressure",
            ),
            (
                "PIDPressure",
                "False",
                "KubeletHasSufficientPID",
                "kubelet has sufficient PID available",
            ),
            ("Ready", ready_status, ready_reason, ready_message),
        ];
        let mut conditions = Vec::new();
        for (ty, status, reason, message) in specs {
            let is_true = status == "True";
            let since = match self.transitions.get(ty) {
                Some((was, since)) if *was == is_true => since.clone(),
                _ => {
                    self.transitions.insert(ty, (is_true, now.clone()));
                    now.clone()
                }
            };
            conditions.push(json!({
                "type": ty,
                "status": status,
                "reason": reason,
                "message": message,
                "lastTransitionTime": since,
            }));
        }
        let mut status = json!({
            "addresses": [
                {"type": "InternalIP", "address": self.config.internal_ip},
                {"type": "Hostname", "address": self.config.hostname},
            ],
            "capacity": self.config.capacity,
            "allocatable": self.config.allocatable,
            "conditions": conditions,
            "nodeInfo": self.config.node_info,
        });
        if let Some(port) = self.config.kubelet_port {
            status["daemonEndpoints"] = json!({"kubeletEndpoint": {"Port": port}});
        }
        if !self.config.images.is_empty() {
            status["images"] = self
                .config
                .images
                .iter()
                .map(|(names, size)| json!({"names": names, "sizeBytes": size}))
                .collect();
        }
        status
    }

    /// Writes the node status if it changed or `status_interval` passed since the last write.
    pub async fn write_status_if_due(&mut self) -> Result<bool, Error> {
        let desired = self.desired_status();
        let due = self
            .last_status_write
            .is_none_or(|t| t.elapsed() >= self.timing.status_interval);
        if !due && self.last_status.as_ref() == Some(&desired) {
            return Ok(false);
        }
        self.write_status().await?;
        Ok(true)
    }

    /// Writes the node status now (merge patch on `nodes/{name}/status`).
    pub async fn write_status(&mut self) -> Result<(), Error> {
        let desired = self.desired_status();
        let mut status = desired.clone();
        let now = now_rfc3339();
        if let Some(conds) = status["conditions"].as_array_mut() {
            for c in conds {
                c["lastHeartbeatTime"] = json!(now);
            }
        }
        let nodes: Api<Node> = Api::all(self.writer.client.clone());
        let patch = json!({"status": status});
        let node = self
            .writer
            .write(
                "node_status",
                nodes.patch_status(
                    &self.config.name,
                    &PatchParams::default(),
                    &Patch::Merge(&patch),
                ),
            )
            .await?;
        self.observe(&node);
        self.last_status = Some(desired);
        self.last_status_write = Some(Instant::now());
        tracing::debug!(node = %self.config.name, "node status written");
        Ok(())
    }

    fn lease_api(&self) -> Api<Lease> {
        Api::namespaced(self.writer.client.clone(), LEASE_NAMESPACE)
    }

    /// Renews `kube-node-lease/<node>` (a merge patch of the spec: no read first, no
    /// conflicts), creating it when it is missing.
    pub async fn renew_lease(&self) -> Result<(), Error> {
        let now = MicroTime(k8s_openapi::jiff::Timestamp::now());
        let patch = json!({"spec": {
            "holderIdentity": self.config.name,
            "leaseDurationSeconds": self.timing.lease_duration_seconds,
            "renewTime": now,
        }});
        let renewed = self
            .writer
            .write(
                "lease",
                self.lease_api().patch(
                    &self.config.name,
                    &PatchParams::default(),
                    &Patch::Merge(&patch),
                ),
            )
            .await;
        match renewed {
            Ok(_) => Ok(()),
            Err(kube::Error::Api(s)) if s.code == 404 => self.create_lease().await,
            Err(e) => Err(e.into()),
        }
    }

    /// Creates the Lease, owned by the Node so that it goes with it; renews it instead when
    /// it exists (the agent restarted).
    async fn create_lease(&self) -> Result<(), Error> {
        let uid = self.shared.uid.read().clone();
        let lease = Lease {
            metadata: ObjectMeta {
                name: Some(self.config.name.clone()),
                namespace: Some(LEASE_NAMESPACE.to_string()),
                owner_references: uid.map(|uid| {
                    vec![OwnerReference {
                        api_version: "v1".into(),
                        kind: "Node".into(),
                        name: self.config.name.clone(),
                        uid,
                        ..Default::default()
                    }]
                }),
                ..Default::default()
            },
            spec: Some(LeaseSpec {
                holder_identity: Some(self.config.name.clone()),
                lease_duration_seconds: Some(self.timing.lease_duration_seconds),
                renew_time: Some(MicroTime(k8s_openapi::jiff::Timestamp::now())),
                ..Default::default()
            }),
        };
        let created = self
            .writer
            .write(
                "lease",
                self.lease_api().create(&PostParams::default(), &lease),
            )
            .await;
        match created {
            Ok(_) => Ok(()),
            Err(kube::Error::Api(s)) if s.code == 409 => Box::pin(self.renew_lease()).await,
            Err(e) => Err(e.into()),
        }
    }

    /// Heartbeats forever: after `offset`, renews the Lease every `renew_interval` and writes
    /// status when due or when readiness changes. Errors are logged and retried at the next
    /// tick, as kubelet does.
    ///
    /// `slot` in `0.0..1.0` spreads many nodes of one process: renewals start at that fraction
    /// of the renew period and status writes fall due at that fraction of the status period,
    /// so 5,000 nodes registered in a burst do not heartbeat in a burst.
    pub async fn run(mut self, offset: Duration, slot: f64) {
        let span = tracing::info_span!("heartbeat", node = %self.config.name);
        async move {
            let slot = slot.clamp(0.0, 1.0);
            if let Some(written) = self.last_status_write {
                let back = self.timing.status_interval.mul_f64(slot);
                self.last_status_write = Some(written.checked_sub(back).unwrap_or(written));
            }
            // `interval` panics on zero; a zero flag means "as often as reasonable".
            let period = self.timing.renew_interval.max(Duration::from_millis(10));
            // The first renewal waits for `offset`, but readiness is followed from the start:
            // a runtime that turns ready right after registration (the usual case) makes the
            // node Ready now, not one renew period later.
            let first =
                tokio::time::Instant::now() + offset + self.timing.renew_interval.mul_f64(slot);
            let mut tick = tokio::time::interval_at(first, period);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            let mut readiness_open = true;
            let mut renew_failed = false;
            loop {
                tokio::select! {
                    _ = tick.tick() => {
                        match self.renew_lease().await {
                            Err(e) => {
                                renew_failed = true;
                                tracing::warn!(error = %e, "lease renewal failed");
                            }
                            // Cut off long enough, the node lifecycle controller has marked
                            // the node Unknown: say Ready again now, not at the next minute.
                            Ok(()) if renew_failed => {
                                renew_failed = false;
                                if let Err(e) = self.write_status().await {
                                    tracing::warn!(error = %e, "node status write failed");
                                }
                            }
                            Ok(()) => {}
                        }
                    }
                    changed = self.readiness.changed(), if readiness_open => {
                        readiness_open = changed.is_ok();
                    }
                }
                if let Err(e) = self.write_status_if_due().await {
                    tracing::warn!(error = %e, "node status write failed");
                }
            }
        }
        .instrument(span)
        .await
    }
}

/// Now as RFC 3339 with second precision, the way `metav1.Time` serialises.
pub(crate) fn now_rfc3339() -> String {
    let now = k8s_openapi::jiff::Timestamp::now();
    now.strftime("%Y-%m-%dT%H:%M:%SZ").to_string()
}
