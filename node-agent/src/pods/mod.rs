//! Pod sync: the agent's pods (`spec.nodeName=<node>`) converge to their spec through CRI.
//!
//! One watch feeds one worker task per pod (keyed by uid). A worker is level-based: each sync
//! reads the runtime's state for its pod and takes the next step (sandbox, init containers in
//! order, containers, restarts with back-off), then writes the pod status if it changed. It
//! syncs on every pod update and at least every `sync_period` (container exits are noticed by
//! that relist, as kubelet's PLEG does). Runtime objects carry kubelet's labels plus
//! [`spec::LABEL_MANAGED_BY`], so a restarted agent re-adopts running pods instead of
//! restarting them, and tears down sandboxes whose pod is gone.

mod http;
pub mod inputs;
mod lifecycle;
pub mod probe;
pub mod spec;
pub mod status;
pub mod token;
mod worker;

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use k8s_openapi::api::core::v1::Pod;
use kube::runtime::watcher;
use kube::Api;
use parking_lot::RwLock;
use tokio::sync::watch;

use crate::cri::{api, cri_err, Cri};
use crate::lookup::{ContainerRef, PodLookup};
use crate::node::Writer;
use crate::Error;
pub use spec::Layout;

/// How the pod workers behave; [`PodsConfig::new`] has kubelet's defaults.
#[derive(Clone, Debug)]
pub struct PodsConfig {
    pub layout: Layout,
    /// The node's InternalIP (`status.hostIP`).
    pub node_ip: String,
    /// How often one node-wide relist (ListPodSandbox + ListContainers) looks for runtime
    /// changes (a container exited, a sandbox died) and wakes the pods concerned — kubelet's
    /// PLEG: two CRI calls per period for the whole node instead of several per pod.
    pub sync_period: Duration,
    /// Every pod is also synced this often even when nothing seems to change (configMap
    /// volume refresh, missed events).
    pub resync_period: Duration,
    /// First restart back-off after the immediate restart (doubles to `max_backoff`).
    pub initial_backoff: Duration,
    pub max_backoff: Duration,
    pub allow_privileged: bool,
    /// cpu/memory/ephemeral-storage in milli-units, for `resourceFieldRef` without limits.
    pub node_allocatable: BTreeMap<String, i128>,
}

impl PodsConfig {
    pub fn new(layout: Layout, node_ip: String) -> PodsConfig {
        PodsConfig {
            layout,
            node_ip,
            sync_period: Duration::from_secs(1),
            resync_period: Duration::from_secs(10),
            initial_backoff: Duration::from_secs(10),
            max_backoff: Duration::from_secs(300),
            allow_privileged: false,
            node_allocatable: BTreeMap::new(),
        }
    }
}

/// Runtime state the workers publish for the streaming server ([`PodLookup`]).
#[derive(Default)]
pub struct RuntimeState {
    pods: RwLock<HashMap<(String, String), PodEntry>>,
}

#[derive(Clone, Debug, Default)]
struct PodEntry {
    uid: String,
    sandbox_id: Option<String>,
    containers: HashMap<String, ContainerIds>,
}

/// One container's current instance id and log, and the previous instance's log.
#[derive(Clone, Debug, Default)]
struct ContainerIds {
    id: Option<String>,
    log: Option<String>,
    previous_log: Option<String>,
}

impl RuntimeState {
    fn publish(&self, namespace: &str, name: &str, entry: PodEntry) {
        self.pods
            .write()
            .insert((namespace.to_string(), name.to_string()), entry);
    }
    fn forget(&self, namespace: &str, name: &str, uid: &str) {
        let mut pods = self.pods.write();
        let key = (namespace.to_string(), name.to_string());
        if pods.get(&key).is_some_and(|e| e.uid == uid) {
            pods.remove(&key);
        }
    }
    /// Pods this agent currently runs (for `/metrics`).
    pub fn running_pods(&self) -> usize {
        self.pods.read().len()
    }
}

impl PodLookup for RuntimeState {
    fn container(&self, namespace: &str, pod: &str, container: &str) -> Option<ContainerRef> {
        let pods = self.pods.read();
        let entry = pods.get(&(namespace.to_string(), pod.to_string()))?;
        let ids = entry.containers.get(container)?;
        Some(ContainerRef {
            pod_uid: entry.uid.clone(),
            sandbox_id: entry.sandbox_id.clone(),
            container_id: ids.id.clone(),
            log_path: ids.log.clone().map(Into::into),
            previous_log_path: ids.previous_log.clone().map(Into::into),
        })
    }
    fn sandbox(&self, namespace: &str, pod: &str) -> Option<String> {
        let pods = self.pods.read();
        pods.get(&(namespace.to_string(), pod.to_string()))?
            .sandbox_id
            .clone()
    }
}

/// What every worker shares.
pub(crate) struct Ctx {
    pub cri: Cri,
    pub writer: Writer,
    pub config: PodsConfig,
    pub state: Arc<RuntimeState>,
}

/// Watches this node's pods and runs one worker per pod until the watch stream ends (never,
/// in practice: the watcher re-lists and re-watches on errors).
pub async fn run(
    cri: Cri,
    writer: Writer,
    config: PodsConfig,
    state: Arc<RuntimeState>,
) -> Result<(), Error> {
    let node = config.layout.node_name.clone();
    let ctx = Arc::new(Ctx {
        cri,
        writer,
        config,
        state,
    });
    let pods: Api<Pod> = Api::all(ctx.writer.client.clone());
    let wc = watcher::Config::default().fields(&format!("spec.nodeName={node}"));
    let mut stream = watcher::watcher(pods, wc).boxed();
    let mut workers: HashMap<String, watch::Sender<Option<Pod>>> = HashMap::new();
    let nudges: Nudges = Arc::new(parking_lot::Mutex::new(HashMap::new()));
    let relister = tokio::spawn(relist(ctx.clone(), nudges.clone()));
    // The relister lives as long as this loop.
    let _relister = AbortOnDrop(relister);
    let mut listing: Option<Vec<String>> = None;
    let mut orphans_checked = false;
    while let Some(event) = stream.next().await {
        let event = match event {
            Ok(e) => e,
            Err(e) => {
                tracing::warn!(error = %e, "pod watch failed; the watcher retries");
                tokio::time::sleep(Duration::from_millis(500)).await;
                continue;
            }
        };
        workers.retain(|_, tx| !tx.is_closed());
        nudges.lock().retain(|uid, _| workers.contains_key(uid));
        ctx.writer.metrics.pods.set(workers.len() as i64);
        match event {
            watcher::Event::Init => listing = Some(Vec::new()),
            watcher::Event::InitApply(pod) | watcher::Event::Apply(pod) => {
                let Some(uid) = pod.metadata.uid.clone() else {
                    continue;
                };
                if let Some(seen) = listing.as_mut() {
                    seen.push(uid.clone());
                }
                match workers.get(&uid) {
                    Some(tx) => {
                        tx.send_replace(Some(pod));
                    }
                    None => {
                        let (tx, rx) = watch::channel(Some(pod));
                        let nudge = Arc::new(tokio::sync::Notify::new());
                        nudges.lock().insert(uid.clone(), nudge.clone());
                        tokio::spawn(worker::run(ctx.clone(), uid.clone(), rx, nudge));
                        workers.insert(uid, tx);
                    }
                }
            }
            watcher::Event::Delete(pod) => {
                if let Some(tx) = pod.metadata.uid.as_ref().and_then(|u| workers.get(u)) {
                    tx.send_replace(None);
                }
            }
            watcher::Event::InitDone => {
                if let Some(seen) = listing.take() {
                    for (uid, tx) in &workers {
                        if !seen.contains(uid) {
                            tx.send_replace(None);
                        }
                    }
                    if !orphans_checked {
                        orphans_checked = true;
                        let ctx = ctx.clone();
                        tokio::spawn(async move {
                            if let Err(e) = remove_orphans(&ctx, &seen).await {
                                tracing::warn!(error = %e, "removing orphaned sandboxes failed");
                            }
                        });
                    }
                }
            }
        }
    }
    Ok(())
}

type Nudges = Arc<parking_lot::Mutex<HashMap<String, Arc<tokio::sync::Notify>>>>;

struct AbortOnDrop(tokio::task::JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// The node-wide relist: every `sync_period`, one ListPodSandbox and one ListContainers of
/// this node's runtime objects; a pod whose sandboxes' or containers' ids or states changed
/// since the previous relist has its worker woken.
async fn relist(ctx: Arc<Ctx>, nudges: Nudges) {
    let selector = HashMap::from([(
        spec::LABEL_MANAGED_BY.to_string(),
        ctx.config.layout.node_name.clone(),
    )]);
    let mut last: HashMap<String, Vec<(String, i32)>> = HashMap::new();
    let mut tick = tokio::time::interval(ctx.config.sync_period.max(Duration::from_millis(10)));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        let sandboxes = ctx
            .cri
            .runtime
            .clone()
            .list_pod_sandbox(api::ListPodSandboxRequest {
                filter: Some(api::PodSandboxFilter {
                    label_selector: selector.clone(),
                    ..Default::default()
                }),
            })
            .await;
        let containers = ctx
            .cri
            .runtime
            .clone()
            .list_containers(api::ListContainersRequest {
                filter: Some(api::ContainerFilter {
                    label_selector: selector.clone(),
                    ..Default::default()
                }),
            })
            .await;
        let (Ok(sandboxes), Ok(containers)) = (sandboxes, containers) else {
            tracing::debug!("relist failed; retrying at the next period");
            continue;
        };
        let mut now: HashMap<String, Vec<(String, i32)>> = HashMap::new();
        for sb in sandboxes.into_inner().items {
            if let Some(uid) = sb.labels.get(spec::LABEL_POD_UID) {
                now.entry(uid.clone())
                    .or_default()
                    .push((sb.id, 100 + sb.state));
            }
        }
        for c in containers.into_inner().containers {
            if let Some(uid) = c.labels.get(spec::LABEL_POD_UID) {
                now.entry(uid.clone()).or_default().push((c.id, c.state));
            }
        }
        for sig in now.values_mut() {
            sig.sort();
        }
        let changed: Vec<&String> = now
            .iter()
            .filter(|(uid, sig)| last.get(*uid) != Some(sig))
            .map(|(uid, _)| uid)
            .chain(last.keys().filter(|uid| !now.contains_key(*uid)))
            .collect();
        if !changed.is_empty() {
            let nudges = nudges.lock();
            for uid in changed {
                if let Some(n) = nudges.get(uid) {
                    n.notify_one();
                }
            }
        }
        last = now;
    }
}

/// Tears down sandboxes this node's agent created for pods that no longer exist (deleted
/// while the agent was down).
async fn remove_orphans(ctx: &Ctx, live: &[String]) -> Result<(), Error> {
    let sandboxes = ctx
        .cri
        .runtime
        .clone()
        .list_pod_sandbox(api::ListPodSandboxRequest {
            filter: Some(api::PodSandboxFilter {
                label_selector: HashMap::from([(
                    spec::LABEL_MANAGED_BY.to_string(),
                    ctx.config.layout.node_name.clone(),
                )]),
                ..Default::default()
            }),
        })
        .await
        .map_err(cri_err("ListPodSandbox"))?
        .into_inner()
        .items;
    for sb in sandboxes {
        let uid = sb
            .labels
            .get(spec::LABEL_POD_UID)
            .cloned()
            .unwrap_or_default();
        if uid.is_empty() || live.contains(&uid) {
            continue;
        }
        tracing::info!(pod_uid = %uid, sandbox = %sb.id, "removing the sandbox of a pod that no longer exists");
        worker::teardown_uid(ctx, &uid, 0).await;
    }
    Ok(())
}
