//! Simulated mode: N fake nodes in one process, each registered and heartbeating like a real
//! one, moving the pods bound to them through their lifecycle without containers (like kwok).
//!
//! Built to hold 5,000 nodes and 100,000 pods in one process:
//! - ONE pod watch for the whole cluster (`spec.nodeName!=`), dispatched by node name; a watch
//!   per node would be 5,000 watches on the API server.
//! - Pods are kept as a compact [`SimPod`] summary, not whole objects.
//! - A work queue keyed by pod (deduplicated: a pod is queued at most once and processed by at
//!   most one worker at a time) decides level-triggered from the latest state, so a burst of
//!   events for one pod costs at most one write.
//! - Every API write goes through one [`Writer`] bound (default 48 in flight), heartbeats
//!   included; Lease renewals are spread evenly over the renew period.
//! - Status is written through `pods/{name}/status` and only when the stage changes.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::net::Ipv4Addr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures::{StreamExt, TryStreamExt};
use k8s_openapi::api::core::v1::{NodeSystemInfo, Pod};
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
use kube::api::{Api, DeleteParams, Patch, PatchParams, Preconditions};
use kube::runtime::{watcher, WatchStreamExt};
use parking_lot::Mutex;
use serde_json::{json, Value};
use tokio::sync::{mpsc, watch, Semaphore};
use tokio::task::JoinSet;
use tracing::Instrument;

use crate::duration::parse_duration;
use crate::node::{
    now_rfc3339, NodeConfig, NodeHeartbeat, NodeShared, Readiness, Timing, Writer, KUBELET_VERSION,
};
use crate::{Error, Metrics};

/// Annotation asking a simulated pod (restartPolicy Never/OnFailure) to exit 0 after this
/// long running, e.g. `30s`.
pub const EXIT_AFTER_ANNOTATION: &str = "sim.coxswain.dev/exit-after";
/// Label every simulated node carries, so tests and users can tell them apart.
pub const SIMULATED_LABEL: &str = "node.coxswain.dev/simulated";

/// How to simulate.
#[derive(Clone, Debug)]
pub struct SimConfig {
    pub nodes: usize,
    /// Nodes are named `<prefix><index>`, index from 0.
    pub node_prefix: String,
    /// From first seeing a bound pod to writing it Running.
    pub running_delay: Duration,
    /// From Running to Ready (0: one write makes it Running and Ready).
    pub ready_delay: Duration,
    /// API writes in flight at once, heartbeats and pods together.
    pub max_in_flight: usize,
    pub timing: Timing,
    /// Each node's capacity.
    pub cpu: String,
    pub memory: String,
    pub ephemeral_storage: String,
    pub max_pods: u32,
}

impl Default for SimConfig {
    fn default() -> Self {
        SimConfig {
            nodes: 1,
            node_prefix: "sim-".to_string(),
            running_delay: Duration::ZERO,
            ready_delay: Duration::ZERO,
            max_in_flight: 48,
            timing: Timing::default(),
            cpu: "32".to_string(),
            memory: "256Gi".to_string(),
            ephemeral_storage: "1Ti".to_string(),
            max_pods: 110,
        }
    }
}

impl SimConfig {
    /// The name of simulated node `index`.
    pub fn node_name(&self, index: usize) -> String {
        format!("{}{}", self.node_prefix, index)
    }

    fn node_config(&self, index: usize) -> NodeConfig {
        let name = self.node_name(index);
        let mut capacity = BTreeMap::new();
        capacity.insert("cpu".to_string(), Quantity(self.cpu.clone()));
        capacity.insert("memory".to_string(), Quantity(self.memory.clone()));
        capacity.insert(
            "ephemeral-storage".to_string(),
            Quantity(self.ephemeral_storage.clone()),
        );
        capacity.insert("pods".to_string(), Quantity(self.max_pods.to_string()));
        let mut labels = NodeConfig::default_labels(&name, "linux", "amd64");
        labels.insert(SIMULATED_LABEL.to_string(), "true".to_string());
        NodeConfig {
            internal_ip: sim_node_ip(index).to_string(),
            hostname: name.clone(),
            name,
            labels,
            allocatable: capacity.clone(),
            capacity,
            node_info: NodeSystemInfo {
                architecture: "amd64".to_string(),
                boot_id: String::new(),
                container_runtime_version: "sim://coxswain".to_string(),
                kernel_version: "simulated".to_string(),
                kube_proxy_version: String::new(),
                kubelet_version: KUBELET_VERSION.to_string(),
                machine_id: String::new(),
                operating_system: "linux".to_string(),
                os_image: "Coxswain simulated node".to_string(),
                system_uuid: String::new(),
            },
            pod_cidr: None,
            kubelet_port: None,
            images: Vec::new(),
        }
    }
}

/// Simulated node `index`'s InternalIP: 172.16.0.0/12 counted up from .1.
fn sim_node_ip(index: usize) -> Ipv4Addr {
    Ipv4Addr::from(u32::from(Ipv4Addr::new(172, 16, 0, 1)).wrapping_add(index as u32))
}

/// The pod range used when a node has no `spec.podCIDR`: 10.128.0.0/9 split into /24s, one
/// per node index (32,768 of them; 10.244.0.0/16 alone would hold only 256 nodes).
fn fallback_pod_cidr(index: usize) -> (u32, u32) {
    let base = u32::from(Ipv4Addr::new(10, 128, 0, 0)) + (((index as u32) % 32_768) << 8);
    (base, 24)
}

fn parse_cidr_v4(cidr: &str) -> Option<(u32, u32)> {
    let (ip, len) = cidr.split_once('/')?;
    let ip: Ipv4Addr = ip.parse().ok()?;
    let len: u32 = len.parse().ok()?;
    if len > 30 {
        return None;
    }
    let mask = if len == 0 { 0 } else { u32::MAX << (32 - len) };
    Some((u32::from(ip) & mask, len))
}

/// Hands out pod IPs from one node's range; offsets are host numbers inside the range.
#[derive(Default)]
struct IpPool {
    used: HashSet<u32>,
    cursor: u32,
}

impl IpPool {
    fn allocate(&mut self, (base, len): (u32, u32)) -> Option<Ipv4Addr> {
        let hosts = (1u64 << (32 - len)).saturating_sub(2).min(65_534) as u32;
        for _ in 0..hosts {
            self.cursor = self.cursor % hosts + 1;
            if self.used.insert(self.cursor) {
                return Some(Ipv4Addr::from(base + self.cursor));
            }
        }
        None
    }

    fn release(&mut self, ip: &str, (base, len): (u32, u32)) {
        if let Ok(ip) = ip.parse::<Ipv4Addr>() {
            let ip = u32::from(ip);
            let hosts = 1u32 << (32 - len);
            if ip >= base && ip - base < hosts {
                self.used.remove(&(ip - base));
            }
        }
    }
}

/// Where a pod is in its simulated lifecycle, as its status says.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Stage {
    Pending,
    Running { ready: bool },
    Done,
}

/// The part of a pod the simulator needs: a few hundred bytes instead of the whole object.
struct SimPod {
    namespace: String,
    name: String,
    uid: String,
    resource_version: u64,
    node: usize,
    created: Option<k8s_openapi::jiff::Timestamp>,
    containers: Vec<(String, String)>,
    init_containers: Vec<(String, String)>,
    host_network: bool,
    /// `Some` for run-to-completion pods: how long they run before exiting 0.
    exit_after: Option<Duration>,
    deleting: bool,
    delete_sent: bool,
    observed: Stage,
    pod_ip: Option<String>,
    scheduled_since: Option<String>,
    first_seen: Instant,
    /// When the containers started: the monotonic instant and the wall time written.
    start: Option<(Instant, String)>,
    /// A wake-up is scheduled for this instant (so events do not pile up timers).
    wake_at: Option<Instant>,
}

fn pod_key(namespace: &str, name: &str) -> String {
    format!("{namespace}/{name}")
}

fn observed_stage(pod: &Pod) -> Stage {
    let Some(status) = &pod.status else {
        return Stage::Pending;
    };
    match status.phase.as_deref() {
        Some("Succeeded") | Some("Failed") => Stage::Done,
        Some("Running") => Stage::Running {
            ready: status
                .conditions
                .iter()
                .flatten()
                .any(|c| c.type_ == "Ready" && c.status == "True"),
        },
        _ => Stage::Pending,
    }
}

/// What one worker does for one pod.
enum Action {
    None,
    Delete {
        namespace: String,
        name: String,
        uid: String,
    },
    Status {
        namespace: String,
        name: String,
        patch: Value,
        from: Stage,
        to: Stage,
        created: Option<k8s_openapi::jiff::Timestamp>,
    },
}

struct SimNode {
    internal_ip: String,
    shared: Arc<NodeShared>,
}

#[derive(Default)]
struct PodState {
    pods: HashMap<String, SimPod>,
    queued: HashSet<String>,
    in_flight: HashSet<String>,
    dirty: HashSet<String>,
    ips: Vec<IpPool>,
    /// Keys listed since the last watch restart, to drop pods deleted while disconnected.
    relisting: Option<HashSet<String>>,
}

struct Sim {
    writer: Writer,
    config: SimConfig,
    nodes: Vec<SimNode>,
    node_index: HashMap<String, usize>,
    state: Mutex<PodState>,
    queue: mpsc::UnboundedSender<String>,
    /// Set once the first list is complete: workers wait for it (as controllers wait for
    /// cache sync) so that addresses of pods adopted after a restart are known before new
    /// pods get theirs.
    synced: watch::Sender<bool>,
}

/// A running simulation. Dropping it (or [`Simulator::shutdown`]) stops every task.
pub struct Simulator {
    names: Vec<String>,
    tasks: JoinSet<()>,
    _readiness: watch::Sender<Readiness>,
}

impl Simulator {
    /// Registers `config.nodes` nodes (bounded concurrency), then starts their heartbeats
    /// (spread over the renew period) and the shared pod watcher.
    pub async fn start(
        client: kube::Client,
        config: SimConfig,
        metrics: Arc<Metrics>,
    ) -> Result<Simulator, Error> {
        if config.nodes == 0 {
            return Err(Error::Config("--simulate needs at least one node".into()));
        }
        let writer = Writer::new(client, config.max_in_flight, metrics.clone());
        let (readiness_tx, readiness_rx) = watch::channel(Readiness::Ready);
        let heartbeats: Vec<NodeHeartbeat> = (0..config.nodes)
            .map(|i| {
                NodeHeartbeat::new(
                    config.node_config(i),
                    writer.clone(),
                    config.timing,
                    readiness_rx.clone(),
                )
            })
            .collect();
        let started = Instant::now();
        let registered: Vec<Result<NodeHeartbeat, Error>> = futures::stream::iter(heartbeats)
            .map(|mut hb| async move {
                let mut last = None;
                for attempt in 0..5u64 {
                    match hb.register().await {
                        Ok(()) => return Ok(hb),
                        Err(e) => {
                            tracing::warn!(node = %hb.name(), error = %e, "registration failed; retrying");
                            last = Some(e);
                            tokio::time::sleep(Duration::from_millis(200 * (attempt + 1))).await;
                        }
                    }
                }
                Err(last.unwrap_or_else(|| Error::Config("registration failed".into())))
            })
            .buffer_unordered(config.max_in_flight.max(1))
            .collect()
            .await;
        let mut heartbeats = Vec::with_capacity(registered.len());
        for r in registered {
            heartbeats.push(r?);
        }
        heartbeats.sort_by_key(|hb| {
            hb.name()
                .strip_prefix(&config.node_prefix)
                .and_then(|i| i.parse::<usize>().ok())
                .unwrap_or(0)
        });
        metrics.nodes.add(heartbeats.len() as i64);
        tracing::info!(
            nodes = heartbeats.len(),
            seconds = started.elapsed().as_secs_f64(),
            "simulated nodes registered"
        );

        let names: Vec<String> = heartbeats.iter().map(|h| h.name().to_string()).collect();
        let nodes: Vec<SimNode> = heartbeats
            .iter()
            .enumerate()
            .map(|(i, hb)| SimNode {
                internal_ip: sim_node_ip(i).to_string(),
                shared: hb.shared.clone(),
            })
            .collect();
        let node_index = names
            .iter()
            .enumerate()
            .map(|(i, n)| (n.clone(), i))
            .collect();
        let mut tasks = JoinSet::new();
        let n = heartbeats.len() as f64;
        for (i, hb) in heartbeats.into_iter().enumerate() {
            // Registration wrote every Lease just now: the first renewal is one period later,
            // at this node's slot, so renewals are spread evenly instead of a burst.
            tasks.spawn(hb.run(config.timing.renew_interval, i as f64 / n));
        }

        let (queue, rx) = mpsc::unbounded_channel();
        let state = PodState {
            ips: (0..nodes.len()).map(|_| IpPool::default()).collect(),
            ..Default::default()
        };
        let sim = Arc::new(Sim {
            writer,
            config,
            nodes,
            node_index,
            state: Mutex::new(state),
            queue,
            synced: watch::Sender::new(false),
        });
        tasks.spawn(sim.clone().watch_pods());
        tasks.spawn(sim.run_queue(rx));
        Ok(Simulator {
            names,
            tasks,
            _readiness: readiness_tx,
        })
    }

    /// The simulated nodes' names, in index order.
    pub fn node_names(&self) -> &[String] {
        &self.names
    }

    /// Stops heartbeats, the pod watcher and the workers.
    pub async fn shutdown(mut self) {
        self.tasks.shutdown().await;
    }

    /// Waits until a task ends (they run forever unless they panic): for the binary.
    pub async fn wait(&mut self) {
        while let Some(r) = self.tasks.join_next().await {
            if let Err(e) = r {
                tracing::error!(error = %e, "simulator task ended");
            }
        }
    }
}

impl Sim {
    /// The one pod watch: every bound pod in the cluster, dispatched by node name.
    async fn watch_pods(self: Arc<Self>) {
        let pods: Api<Pod> = Api::all(self.writer.client.clone());
        let config = watcher::Config::default().fields("spec.nodeName!=");
        let mut stream = watcher(pods, config).default_backoff().boxed();
        loop {
            match stream.try_next().await {
                Ok(Some(event)) => self.on_event(event),
                Ok(None) => return,
                Err(e) => tracing::warn!(error = %e, "pod watch failed; retrying"),
            }
        }
    }

    fn on_event(&self, event: watcher::Event<Pod>) {
        let mut st = self.state.lock();
        match event {
            watcher::Event::Init => st.relisting = Some(HashSet::new()),
            watcher::Event::InitApply(pod) => {
                if let Some(key) = self.upsert(&mut st, pod) {
                    if let Some(seen) = st.relisting.as_mut() {
                        seen.insert(key);
                    }
                }
            }
            watcher::Event::InitDone => {
                self.synced.send_replace(true);
                if let Some(seen) = st.relisting.take() {
                    let gone: Vec<String> = st
                        .pods
                        .keys()
                        .filter(|k| !seen.contains(*k))
                        .cloned()
                        .collect();
                    for key in gone {
                        self.remove(&mut st, &key);
                    }
                }
            }
            watcher::Event::Apply(pod) => {
                self.upsert(&mut st, pod);
            }
            watcher::Event::Delete(pod) => {
                let key = pod_key(
                    pod.metadata.namespace.as_deref().unwrap_or_default(),
                    pod.metadata.name.as_deref().unwrap_or_default(),
                );
                let same = st
                    .pods
                    .get(&key)
                    .is_some_and(|p| Some(&p.uid) == pod.metadata.uid.as_ref());
                if same {
                    self.remove(&mut st, &key);
                }
            }
        }
    }

    fn pod_range(&self, node: usize) -> (u32, u32) {
        self.nodes[node]
            .shared
            .pod_cidr
            .read()
            .as_deref()
            .and_then(parse_cidr_v4)
            .unwrap_or_else(|| fallback_pod_cidr(node))
    }

    fn remove(&self, st: &mut PodState, key: &str) {
        if let Some(p) = st.pods.remove(key) {
            if matches!(p.observed, Stage::Running { .. }) {
                self.writer.metrics.pods_running.dec();
            }
            if let (Some(ip), false) = (&p.pod_ip, p.host_network) {
                let range = self.pod_range(p.node);
                st.ips[p.node].release(ip, range);
            }
        }
    }

    /// Records a pod from the watch (or a write's response) and queues it; returns its key
    /// when it is on one of our nodes. Older versions than the one held are ignored.
    fn upsert(&self, st: &mut PodState, pod: Pod) -> Option<String> {
        let node_name = pod.spec.as_ref()?.node_name.as_deref()?;
        let &node = self.node_index.get(node_name)?;
        let namespace = pod.metadata.namespace.clone()?;
        let name = pod.metadata.name.clone()?;
        let uid = pod.metadata.uid.clone()?;
        let key = pod_key(&namespace, &name);
        let resource_version = pod
            .metadata
            .resource_version
            .as_deref()
            .and_then(|rv| rv.parse().ok())
            .unwrap_or(0);
        let replaced = match st.pods.get(&key) {
            Some(p)
                if p.uid == uid
                    && p.resource_version >= resource_version
                    && resource_version != 0 =>
            {
                return Some(key);
            }
            Some(p) => p.uid != uid,
            None => false,
        };
        if replaced {
            self.remove(st, &key);
        }
        let stage = observed_stage(&pod);
        let status = pod.status.as_ref();
        let deleting = pod.metadata.deletion_timestamp.is_some();
        if let Some(p) = st.pods.get_mut(&key) {
            let was_running = matches!(p.observed, Stage::Running { .. });
            let is_running = matches!(stage, Stage::Running { .. });
            if was_running != is_running {
                if is_running {
                    self.writer.metrics.pods_running.inc();
                } else {
                    self.writer.metrics.pods_running.dec();
                }
            }
            p.resource_version = resource_version;
            p.observed = stage;
            p.deleting = deleting;
            if let Some(ip) = status.and_then(|s| s.pod_ip.clone()) {
                p.pod_ip = Some(ip);
            }
        } else {
            let spec = pod.spec.as_ref()?;
            let containers = |cs: &[k8s_openapi::api::core::v1::Container]| {
                cs.iter()
                    .map(|c| (c.name.clone(), c.image.clone().unwrap_or_default()))
                    .collect::<Vec<_>>()
            };
            let restart = spec.restart_policy.as_deref().unwrap_or("Always");
            let job_owned = pod
                .metadata
                .owner_references
                .iter()
                .flatten()
                .any(|o| o.kind == "Job");
            let annotated = pod
                .metadata
                .annotations
                .as_ref()
                .and_then(|a| a.get(EXIT_AFTER_ANNOTATION))
                .and_then(|v| match parse_duration(v) {
                    Ok(d) => Some(d),
                    Err(e) => {
                        tracing::warn!(pod = %key, error = %e, "ignoring {EXIT_AFTER_ANNOTATION}");
                        None
                    }
                });
            let exit_after = match (restart, annotated, job_owned) {
                ("Always", _, _) => None,
                (_, Some(d), _) => Some(d),
                (_, None, true) => Some(Duration::ZERO),
                _ => None,
            };
            // A pod already running (the agent restarted): its start is its startTime.
            let start = match stage {
                Stage::Running { .. } | Stage::Done => {
                    status.and_then(|s| s.start_time.as_ref()).map(|t| {
                        let ago = k8s_openapi::jiff::Timestamp::now()
                            .duration_since(t.0)
                            .unsigned_abs();
                        let at = Instant::now().checked_sub(ago).unwrap_or_else(Instant::now);
                        (at, t.0.strftime("%Y-%m-%dT%H:%M:%SZ").to_string())
                    })
                }
                Stage::Pending => None,
            };
            if matches!(stage, Stage::Running { .. }) {
                self.writer.metrics.pods_running.inc();
            }
            let pod_ip = status.and_then(|s| s.pod_ip.clone());
            if let (Some(ip), false) = (&pod_ip, spec.host_network.unwrap_or(false)) {
                // Re-adopted pods keep their address: mark it used.
                let (base, len) = self.pod_range(node);
                if let Ok(addr) = ip.parse::<Ipv4Addr>() {
                    let a = u32::from(addr);
                    if a >= base && a - base < (1u32 << (32 - len)) {
                        st.ips[node].used.insert(a - base);
                    }
                }
            }
            st.pods.insert(
                key.clone(),
                SimPod {
                    namespace,
                    name,
                    uid,
                    resource_version,
                    node,
                    created: pod.metadata.creation_timestamp.as_ref().map(|t| t.0),
                    containers: containers(&spec.containers),
                    init_containers: containers(spec.init_containers.as_deref().unwrap_or(&[])),
                    host_network: spec.host_network.unwrap_or(false),
                    exit_after,
                    deleting,
                    delete_sent: false,
                    observed: stage,
                    pod_ip,
                    scheduled_since: status
                        .and_then(|s| s.conditions.as_ref())
                        .and_then(|cs| cs.iter().find(|c| c.type_ == "PodScheduled"))
                        .and_then(|c| c.last_transition_time.as_ref())
                        .map(|t| t.0.strftime("%Y-%m-%dT%H:%M:%SZ").to_string()),
                    first_seen: Instant::now(),
                    start,
                    wake_at: None,
                },
            );
        }
        self.enqueue(st, &key);
        Some(key)
    }

    fn enqueue(&self, st: &mut PodState, key: &str) {
        if st.queued.insert(key.to_string()) {
            // The receiver lives as long as the simulator; a send error means shutdown.
            let _ = self.queue.send(key.to_string());
        }
    }

    /// Runs queued pods, at most `max_in_flight` at once and never one pod twice at once.
    async fn run_queue(self: Arc<Self>, mut rx: mpsc::UnboundedReceiver<String>) {
        let workers = Arc::new(Semaphore::new(self.config.max_in_flight.max(1)));
        let mut synced = self.synced.subscribe();
        if synced.wait_for(|s| *s).await.is_err() {
            return;
        }
        while let Some(key) = rx.recv().await {
            {
                let mut st = self.state.lock();
                st.queued.remove(&key);
                if st.in_flight.contains(&key) {
                    st.dirty.insert(key);
                    continue;
                }
                st.in_flight.insert(key.clone());
            }
            let Ok(permit) = workers.clone().acquire_owned().await else {
                return;
            };
            let sim = self.clone();
            tokio::spawn(async move {
                let span = tracing::debug_span!("pod", pod = %key);
                sim.process(&key).instrument(span).await;
                drop(permit);
                let mut st = sim.state.lock();
                st.in_flight.remove(&key);
                if st.dirty.remove(&key) {
                    sim.enqueue(&mut st, &key);
                }
            });
        }
    }

    fn wake(self: &Arc<Self>, st: &mut PodState, key: &str, at: Instant) {
        let Some(p) = st.pods.get_mut(key) else {
            return;
        };
        if p.wake_at.is_some_and(|w| w <= at && w > Instant::now()) {
            return;
        }
        p.wake_at = Some(at);
        let sim = self.clone();
        let key = key.to_string();
        tokio::spawn(async move {
            tokio::time::sleep_until(at.into()).await;
            let mut st = sim.state.lock();
            if let Some(p) = st.pods.get_mut(&key) {
                if p.wake_at == Some(at) {
                    p.wake_at = None;
                }
                sim.enqueue(&mut st, &key);
            }
        });
    }

    /// Decides what the pod needs now, from its latest state.
    fn decide(self: &Arc<Self>, st: &mut PodState, key: &str, now: Instant) -> Action {
        let cfg = &self.config;
        let Some(p) = st.pods.get(key) else {
            return Action::None;
        };
        if p.deleting {
            if p.delete_sent {
                return Action::None;
            }
            let (namespace, name, uid) = (p.namespace.clone(), p.name.clone(), p.uid.clone());
            if let Some(p) = st.pods.get_mut(key) {
                p.delete_sent = true;
            }
            return Action::Delete {
                namespace,
                name,
                uid,
            };
        }
        if p.observed == Stage::Done {
            return Action::None;
        }
        // Delays too long for an `Instant` (an annotation may say `1000000000h`) mean never.
        let Some(start_at) = p
            .start
            .as_ref()
            .map(|s| s.0)
            .or_else(|| p.first_seen.checked_add(cfg.running_delay))
        else {
            return Action::None;
        };
        if now < start_at {
            self.wake(st, key, start_at);
            return Action::None;
        }
        let elapsed = now - start_at;
        let desired = match p.exit_after {
            Some(exit) if elapsed >= exit => Stage::Done,
            _ => Stage::Running {
                ready: elapsed >= cfg.ready_delay,
            },
        };
        // The next change, if any.
        let mut next = None;
        if desired == (Stage::Running { ready: false }) {
            next = start_at.checked_add(cfg.ready_delay);
        }
        if let (Some(exit), Stage::Running { .. }) = (p.exit_after, desired) {
            if let Some(at) = start_at.checked_add(exit) {
                next = Some(next.map_or(at, |n: Instant| n.min(at)));
            }
        }
        let observed = p.observed;
        let node = p.node;
        let needs_ip = p.pod_ip.is_none() && !p.host_network && desired != Stage::Done;
        let start_wall = p
            .start
            .as_ref()
            .map(|s| s.1.clone())
            .unwrap_or_else(now_rfc3339);
        if let Some(at) = next {
            self.wake(st, key, at);
        }
        if desired == observed {
            return Action::None;
        }
        // Allocate what the status needs, then build it.
        let range = self.pod_range(node);
        let ip = if needs_ip {
            st.ips[node].allocate(range).map(|a| a.to_string())
        } else {
            None
        };
        let Some(p) = st.pods.get_mut(key) else {
            return Action::None;
        };
        if p.start.is_none() {
            p.start = Some((start_at, start_wall.clone()));
        }
        if ip.is_some() {
            p.pod_ip = ip;
        }
        let host_ip = self.nodes[node].internal_ip.clone();
        let pod_ip = if p.host_network {
            Some(host_ip.clone())
        } else {
            p.pod_ip.clone()
        };
        let patch = status_patch(p, desired, &start_wall, &host_ip, pod_ip.as_deref());
        if desired == Stage::Done {
            if let (Some(ip), false) = (p.pod_ip.clone(), p.host_network) {
                // The sandbox is gone: its address may be reused (the status keeps it).
                st.ips[node].release(&ip, range);
            }
        }
        let Some(p) = st.pods.get(key) else {
            return Action::None;
        };
        Action::Status {
            namespace: p.namespace.clone(),
            name: p.name.clone(),
            patch,
            from: p.observed,
            to: desired,
            created: p.created,
        }
    }

    async fn process(self: &Arc<Self>, key: &str) {
        let action = {
            let mut st = self.state.lock();
            self.decide(&mut st, key, Instant::now())
        };
        match action {
            Action::None => {}
            Action::Delete {
                namespace,
                name,
                uid,
            } => {
                let api: Api<Pod> = Api::namespaced(self.writer.client.clone(), &namespace);
                let params = DeleteParams {
                    grace_period_seconds: Some(0),
                    preconditions: Some(Preconditions {
                        uid: Some(uid),
                        resource_version: None,
                    }),
                    ..Default::default()
                };
                match self
                    .writer
                    .write("pod_delete", api.delete(&name, &params))
                    .await
                {
                    Ok(_) => tracing::debug!("pod deletion confirmed"),
                    // Gone already, or a new pod of the same name (the UID precondition).
                    Err(kube::Error::Api(s)) if s.code == 404 || s.code == 409 => {}
                    Err(e) => {
                        tracing::warn!(error = %e, "confirming pod deletion failed; retrying");
                        let mut st = self.state.lock();
                        if let Some(p) = st.pods.get_mut(key) {
                            p.delete_sent = false;
                        }
                        self.wake(&mut st, key, Instant::now() + Duration::from_secs(1));
                    }
                }
            }
            Action::Status {
                namespace,
                name,
                patch,
                from,
                to,
                created,
            } => {
                let api: Api<Pod> = Api::namespaced(self.writer.client.clone(), &namespace);
                let result = self
                    .writer
                    .write(
                        "pod_status",
                        api.patch_status(&name, &PatchParams::default(), &Patch::Merge(&patch)),
                    )
                    .await;
                match result {
                    Ok(pod) => {
                        if from == Stage::Pending && matches!(to, Stage::Running { .. }) {
                            if let Some(created) = created {
                                let secs = k8s_openapi::jiff::Timestamp::now()
                                    .duration_since(created)
                                    .as_secs_f64();
                                self.writer.metrics.pod_start_seconds.observe(secs.max(0.0));
                            }
                        }
                        tracing::debug!(stage = ?to, "pod status written");
                        let mut st = self.state.lock();
                        self.upsert(&mut st, pod);
                    }
                    Err(kube::Error::Api(s)) if s.code == 404 => {}
                    Err(e) => {
                        tracing::warn!(error = %e, "pod status write failed; retrying");
                        let mut st = self.state.lock();
                        self.wake(&mut st, key, Instant::now() + Duration::from_secs(1));
                    }
                }
            }
        }
    }
}

/// The pod status for `stage`, as a merge patch (lists are replaced whole; `qosClass` and
/// anything else not named is kept).
fn status_patch(
    p: &SimPod,
    stage: Stage,
    start: &str,
    host_ip: &str,
    pod_ip: Option<&str>,
) -> Value {
    let now = now_rfc3339();
    let scheduled = p
        .scheduled_since
        .clone()
        .unwrap_or_else(|| start.to_string());
    let container_id = |name: &str| format!("sim://{}/{}", p.uid, name);
    let done = stage == Stage::Done;
    let ready = stage == Stage::Running { ready: true };
    let cond = |ty: &str, ok: bool, since: &str, reason: Option<&str>| {
        let mut c = json!({
            "type": ty,
            "status": if ok { "True" } else { "False" },
            "lastProbeTime": null,
            "lastTransitionTime": since,
        });
        if let Some(r) = reason {
            c["reason"] = json!(r);
        }
        c
    };
    let containers_reason = if done {
        Some("PodCompleted")
    } else if ready {
        None
    } else {
        Some("ContainersNotReady")
    };
    let ready_since = if ready || done { now.as_str() } else { start };
    let conditions = vec![
        cond(
            "PodReadyToStartContainers",
            !done,
            if done { &now } else { start },
            None,
        ),
        cond("Initialized", true, start, done.then_some("PodCompleted")),
        cond("Ready", ready, ready_since, containers_reason),
        cond("ContainersReady", ready, ready_since, containers_reason),
        cond("PodScheduled", true, &scheduled, None),
    ];
    let terminated = |name: &str, started: &str, finished: &str| {
        json!({"terminated": {
            "exitCode": 0,
            "reason": "Completed",
            "startedAt": started,
            "finishedAt": finished,
            "containerID": container_id(name),
        }})
    };
    let container_statuses: Vec<Value> = p
        .containers
        .iter()
        .map(|(name, image)| {
            json!({
                "name": name,
                "image": image,
                "imageID": format!("sim://{image}"),
                "containerID": container_id(name),
                "ready": ready,
                "started": !done,
                "restartCount": 0,
                "state": if done {
                    terminated(name, start, &now)
                } else {
                    json!({"running": {"startedAt": start}})
                },
            })
        })
        .collect();
    let mut status = json!({
        "phase": if done { "Succeeded" } else { "Running" },
        "conditions": conditions,
        "hostIP": host_ip,
        "hostIPs": [{"ip": host_ip}],
        "startTime": start,
        "containerStatuses": container_statuses,
    });
    if let Some(ip) = pod_ip {
        status["podIP"] = json!(ip);
        status["podIPs"] = json!([{"ip": ip}]);
    }
    if !p.init_containers.is_empty() {
        status["initContainerStatuses"] = json!(p
            .init_containers
            .iter()
            .map(|(name, image)| json!({
                "name": name,
                "image": image,
                "imageID": format!("sim://{image}"),
                "containerID": container_id(name),
                "ready": true,
                "started": false,
                "restartCount": 0,
                "state": terminated(name, start, start),
            }))
            .collect::<Vec<_>>());
    }
    json!({ "status": status })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ip_pool_allocates_within_the_range_and_reuses() {
        let range = parse_cidr_v4("10.244.3.0/24").unwrap();
        let mut pool = IpPool::default();
        let a = pool.allocate(range).unwrap();
        assert_eq!(a, Ipv4Addr::new(10, 244, 3, 1));
        let b = pool.allocate(range).unwrap();
        assert_eq!(b, Ipv4Addr::new(10, 244, 3, 2));
        pool.release("10.244.3.1", range);
        for _ in 0..253 {
            assert!(pool.allocate(range).is_some());
        }
        assert!(pool.allocate(range).is_none(), "a /24 holds 254 hosts");
        assert_eq!(
            fallback_pod_cidr(1),
            (u32::from(Ipv4Addr::new(10, 128, 1, 0)), 24)
        );
        assert_eq!(sim_node_ip(0), Ipv4Addr::new(172, 16, 0, 1));
    }
}
