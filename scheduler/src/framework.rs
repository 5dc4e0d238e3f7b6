//! The scheduling framework: one trait per extension point, as upstream's
//! `pkg/scheduler/framework/interface.go`, so a plugin implements exactly the points it cares
//! about and a profile can enable it by name.

use std::any::Any;
use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::Arc;
use std::time::Duration;

use futures::future::BoxFuture;
use k8s_openapi::api::core::v1::{Node, Pod};
use rayon::prelude::*;

pub use crate::permit::WaitingPods;
use crate::quantity::{parse_milli, parse_value};

/// The outcome class of a plugin call (upstream's `framework.Code`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Code {
    Success,
    Error,
    /// The pod does not fit now but might after preemption or a cluster change.
    Unschedulable,
    /// The pod does not fit and preemption on this node cannot help.
    UnschedulableAndUnresolvable,
    /// The plugin has nothing to do for this pod; later points of the same plugin are skipped.
    Skip,
    /// Permit only: hold the pod (assumed on its node) until allowed, rejected or timed out.
    Wait,
}

/// What a plugin answered: a code, the human reasons (which end up in `FailedScheduling`
/// events, so they are upstream's words), and the plugin that failed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Status {
    pub code: Code,
    pub reasons: Vec<String>,
    pub plugin: String,
}

impl Status {
    pub fn success() -> Status {
        Status::new(Code::Success, Vec::new())
    }
    pub fn skip() -> Status {
        Status::new(Code::Skip, Vec::new())
    }
    pub fn wait() -> Status {
        Status::new(Code::Wait, Vec::new())
    }
    pub fn new(code: Code, reasons: Vec<String>) -> Status {
        Status {
            code,
            reasons,
            plugin: String::new(),
        }
    }
    pub fn unschedulable(reason: impl Into<String>) -> Status {
        Status::new(Code::Unschedulable, vec![reason.into()])
    }
    pub fn unresolvable(reason: impl Into<String>) -> Status {
        Status::new(Code::UnschedulableAndUnresolvable, vec![reason.into()])
    }
    pub fn error(reason: impl Into<String>) -> Status {
        Status::new(Code::Error, vec![reason.into()])
    }
    pub fn is_success(&self) -> bool {
        self.code == Code::Success
    }
    /// Either unschedulable code: the pod goes to the unschedulable queue, not backoff.
    pub fn is_rejected(&self) -> bool {
        matches!(
            self.code,
            Code::Unschedulable | Code::UnschedulableAndUnresolvable
        )
    }
    pub fn with_plugin(mut self, plugin: &str) -> Status {
        self.plugin = plugin.to_string();
        self
    }
    pub fn message(&self) -> String {
        self.reasons.join(", ")
    }
}

/// Per-cycle scratch space shared by a pod's plugins (PreFilter computes, Filter reads).
/// Keys are plugin names by convention.
#[derive(Default)]
pub struct CycleState {
    data: HashMap<String, Box<dyn Any + Send + Sync>>,
    /// Plugins whose PreFilter/PreScore returned Skip: their Filter/Score are not run.
    pub skip_filter: HashSet<String>,
    pub skip_score: HashSet<String>,
}

impl CycleState {
    pub fn write<T: Any + Send + Sync>(&mut self, key: &str, value: T) {
        self.data.insert(key.to_string(), Box::new(value));
    }
    pub fn read<T: Any + Send + Sync>(&self, key: &str) -> Option<&T> {
        self.data.get(key).and_then(|v| v.downcast_ref())
    }
}

/// Resource amounts in comparable units: millicores for CPU, bytes for memory and ephemeral
/// storage, counts for pods and extended resources.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Resources {
    pub milli_cpu: i64,
    pub memory: i64,
    pub ephemeral_storage: i64,
    pub pods: i64,
    pub scalar: BTreeMap<String, i64>,
}

impl Resources {
    /// Reads a `ResourceList` (node allocatable or a container's requests).
    pub fn from_list(
        list: &BTreeMap<String, k8s_openapi::apimachinery::pkg::api::resource::Quantity>,
    ) -> Resources {
        let mut r = Resources::default();
        for (k, q) in list {
            match k.as_str() {
                "cpu" => r.milli_cpu = parse_milli(&q.0),
                "memory" => r.memory = parse_value(&q.0),
                "ephemeral-storage" => r.ephemeral_storage = parse_value(&q.0),
                "pods" => r.pods = parse_value(&q.0),
                other if is_extended(other) => {
                    r.scalar.insert(other.to_string(), parse_value(&q.0));
                }
                _ => {}
            }
        }
        r
    }
    pub fn add(&mut self, o: &Resources) {
        self.milli_cpu += o.milli_cpu;
        self.memory += o.memory;
        self.ephemeral_storage += o.ephemeral_storage;
        self.pods += o.pods;
        for (k, v) in &o.scalar {
            *self.scalar.entry(k.clone()).or_default() += v;
        }
    }
    /// The inverse of [`Resources::add`] (a pod leaving a node).
    pub fn sub(&mut self, o: &Resources) {
        self.milli_cpu -= o.milli_cpu;
        self.memory -= o.memory;
        self.ephemeral_storage -= o.ephemeral_storage;
        self.pods -= o.pods;
        for (k, v) in &o.scalar {
            *self.scalar.entry(k.clone()).or_default() -= v;
        }
    }
    /// Component-wise maximum (init containers run one at a time).
    pub fn max_with(&mut self, o: &Resources) {
        self.milli_cpu = self.milli_cpu.max(o.milli_cpu);
        self.memory = self.memory.max(o.memory);
        self.ephemeral_storage = self.ephemeral_storage.max(o.ephemeral_storage);
        for (k, v) in &o.scalar {
            let e = self.scalar.entry(k.clone()).or_default();
            *e = (*e).max(*v);
        }
    }
}

/// Extended resources as upstream's `IsScalarResourceName`: hugepages, attachable volumes and
/// domain-prefixed names outside `kubernetes.io/`.
fn is_extended(name: &str) -> bool {
    name.starts_with("hugepages-")
        || name.starts_with("attachable-volumes-")
        || (name.contains('/') && !name.contains("kubernetes.io/"))
        || name.starts_with("requests.")
}

/// A pod's effective request as upstream computes it: `max(sum(containers), max(init
/// containers))` plus the pod overhead. Restartable (sidecar) init containers are counted
/// like regular containers.
pub fn pod_requests(pod: &Pod) -> Resources {
    let Some(spec) = &pod.spec else {
        return Resources::default();
    };
    let req = |c: &k8s_openapi::api::core::v1::Container| {
        c.resources
            .as_ref()
            .and_then(|r| r.requests.as_ref())
            .map(Resources::from_list)
            .unwrap_or_default()
    };
    let mut sum = Resources::default();
    for c in &spec.containers {
        sum.add(&req(c));
    }
    let mut sidecars = Resources::default();
    let mut init_max = Resources::default();
    for c in spec.init_containers.iter().flatten() {
        let r = req(c);
        if c.restart_policy.as_deref() == Some("Always") {
            sidecars.add(&r);
            sum.add(&r);
        } else {
            let mut with_sidecars = r;
            with_sidecars.add(&sidecars);
            init_max.max_with(&with_sidecars);
        }
    }
    sum.max_with(&init_max);
    if let Some(overhead) = &spec.overhead {
        sum.add(&Resources::from_list(overhead));
    }
    sum
}

/// A host port as NodePorts compares them.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct HostPort {
    pub protocol: String,
    pub ip: String,
    pub port: i32,
}

/// The host ports a pod asks for.
pub fn pod_host_ports(pod: &Pod) -> Vec<HostPort> {
    let mut out = Vec::new();
    for c in pod.spec.iter().flat_map(|s| &s.containers) {
        for p in c.ports.iter().flatten() {
            if let Some(hp) = p.host_port.filter(|p| *p > 0) {
                out.push(HostPort {
                    protocol: p.protocol.clone().unwrap_or_else(|| "TCP".into()),
                    ip: p.host_ip.clone().unwrap_or_else(|| "0.0.0.0".into()),
                    port: hp,
                });
            }
        }
    }
    out
}

/// A node with what is placed on it: bound pods plus pods assumed by this scheduler.
///
/// The node and the pod list are shared (`Arc`) with the cache, which keeps one `NodeInfo`
/// per node up to date as pods come and go: a snapshot of every node copies pointers, not
/// objects, and a change to one node copies only that node's list (copy on write).
#[derive(Debug, Clone)]
pub struct NodeInfo {
    pub node: Arc<Node>,
    pub pods: Arc<Vec<Arc<Pod>>>,
    pub requested: Resources,
    pub allocatable: Resources,
    pub used_ports: Vec<HostPort>,
    /// How many of `pods` have required pod anti-affinity (upstream's
    /// `PodsWithRequiredAntiAffinity`), so InterPodAffinity skips the other nodes.
    pub required_anti_affinity_pods: usize,
}

/// Whether a pod has required pod anti-affinity terms.
pub fn has_required_anti_affinity(pod: &Pod) -> bool {
    pod.spec
        .as_ref()
        .and_then(|s| s.affinity.as_ref())
        .and_then(|a| a.pod_anti_affinity.as_ref())
        .and_then(|p| {
            p.required_during_scheduling_ignored_during_execution
                .as_ref()
        })
        .is_some_and(|t| !t.is_empty())
}

impl NodeInfo {
    pub fn new(node: Node) -> NodeInfo {
        NodeInfo::from_arc(Arc::new(node))
    }
    pub fn from_arc(node: Arc<Node>) -> NodeInfo {
        let allocatable = node
            .status
            .as_ref()
            .and_then(|s| s.allocatable.as_ref().or(s.capacity.as_ref()))
            .map(Resources::from_list)
            .unwrap_or_default();
        NodeInfo {
            node,
            pods: Arc::new(Vec::new()),
            requested: Resources::default(),
            allocatable,
            used_ports: Vec::new(),
            required_anti_affinity_pods: 0,
        }
    }
    pub fn name(&self) -> &str {
        self.node.metadata.name.as_deref().unwrap_or("")
    }
    /// Replaces the node object (a watch update), keeping its pods.
    pub fn set_node(&mut self, node: Arc<Node>) {
        let fresh = NodeInfo::from_arc(node);
        self.allocatable = fresh.allocatable;
        self.node = fresh.node;
    }
    pub fn add_pod(&mut self, pod: Pod) {
        self.add_pod_arc(Arc::new(pod));
    }
    pub fn add_pod_arc(&mut self, pod: Arc<Pod>) {
        let mut r = pod_requests(&pod);
        r.pods = 1;
        self.requested.add(&r);
        self.used_ports.extend(pod_host_ports(&pod));
        if has_required_anti_affinity(&pod) {
            self.required_anti_affinity_pods += 1;
        }
        Arc::make_mut(&mut self.pods).push(pod);
    }
    /// Takes the pod with this namespace/name off the node; returns whether it was there.
    pub fn remove_pod(&mut self, key: &str) -> bool {
        let (ns, name) = key.split_once('/').unwrap_or(("default", key));
        let is = |p: &Pod| {
            p.metadata.name.as_deref().unwrap_or("") == name
                && p.metadata.namespace.as_deref().unwrap_or("default") == ns
        };
        let Some(i) = self.pods.iter().position(|p| is(p)) else {
            return false;
        };
        let pod = Arc::make_mut(&mut self.pods).remove(i);
        let mut r = pod_requests(&pod);
        r.pods = 1;
        self.requested.sub(&r);
        if has_required_anti_affinity(&pod) {
            self.required_anti_affinity_pods -= 1;
        }
        for hp in pod_host_ports(&pod) {
            if let Some(j) = self.used_ports.iter().position(|u| *u == hp) {
                self.used_ports.remove(j);
            }
        }
        true
    }
    /// A copy without `victims` (by namespace/name), for preemption's what-if.
    pub fn without(&self, victims: &[String]) -> NodeInfo {
        let mut n = NodeInfo::from_arc(self.node.clone());
        for p in self.pods.iter() {
            if !victims.contains(&pod_key(p)) {
                n.add_pod_arc(p.clone());
            }
        }
        n
    }
}

/// `namespace/name`, the key used in logs, spans, the cache and the queue.
pub fn pod_key(pod: &Pod) -> String {
    format!(
        "{}/{}",
        pod.metadata.namespace.as_deref().unwrap_or("default"),
        pod.metadata.name.as_deref().unwrap_or("")
    )
}

/// The pod's priority (from `spec.priority`, which admission fills from the PriorityClass).
pub fn pod_priority(pod: &Pod) -> i32 {
    pod.spec.as_ref().and_then(|s| s.priority).unwrap_or(0)
}

/// Scores are in `0..=MAX_NODE_SCORE` after normalisation, as upstream.
pub const MAX_NODE_SCORE: i64 = 100;

/// Every plugin has a name, the key profiles use to enable it.
pub trait Plugin: Send + Sync {
    fn name(&self) -> &'static str;
}

/// Runs once per cycle with the whole snapshot (upstream reaches it through the framework
/// handle), to precompute what Filter needs.
pub trait PreFilterPlugin: Plugin {
    fn pre_filter(&self, state: &mut CycleState, pod: &Pod, nodes: &[NodeInfo]) -> Status;
}

/// Runs once per candidate node, possibly on several threads, so it only reads the state.
pub trait FilterPlugin: Plugin {
    fn filter(&self, state: &CycleState, pod: &Pod, node: &NodeInfo) -> Status;
}

/// Runs when no node passed Filter (preemption). Returns the nominated node, if any.
pub trait PostFilterPlugin: Plugin {
    fn post_filter(
        &self,
        ctx: &PostFilterContext<'_>,
        pod: &Pod,
        statuses: &HashMap<String, Status>,
    ) -> (Option<PostFilterResult>, Status);
}

/// What PostFilter may look at and call back into.
pub struct PostFilterContext<'a> {
    pub nodes: &'a [NodeInfo],
    pub framework: &'a Framework,
    pub state: &'a CycleState,
}

/// A node made feasible by evicting `victims`; an empty `nominated_node` (no victims) says
/// preemption found no node, so any earlier nomination of the pod is cleared.
#[derive(Debug, Clone, PartialEq)]
pub struct PostFilterResult {
    pub nominated_node: String,
    pub victims: Vec<Pod>,
}

/// Runs once per cycle before Score with the feasible `nodes` and the whole snapshot `all`
/// (upstream's plugins reach the latter through the shared lister: PodTopologySpread counts
/// pods on every node, feasible or not).
pub trait PreScorePlugin: Plugin {
    fn pre_score(
        &self,
        state: &mut CycleState,
        pod: &Pod,
        nodes: &[&NodeInfo],
        all: &[NodeInfo],
    ) -> Status;
}

pub trait ScorePlugin: Plugin {
    fn score(&self, state: &CycleState, pod: &Pod, node: &NodeInfo) -> Result<i64, Status>;
    /// Upstream's `ScoreExtensions().NormalizeScore`: rescales raw scores into
    /// `0..=MAX_NODE_SCORE`. Plugins whose raw scores are already in range keep the default.
    fn normalize_score(&self, _state: &CycleState, _pod: &Pod, _scores: &mut [(String, i64)]) {}
}

pub trait ReservePlugin: Plugin {
    fn reserve(&self, state: &mut CycleState, pod: &Pod, node: &str) -> Status;
    fn unreserve(&self, state: &mut CycleState, pod: &Pod, node: &str);
}

/// Approves, denies or delays the placement before binding. With [`Code::Wait`] the
/// returned duration is how long this plugin lets the pod wait (at most 15 minutes) for an
/// [`WaitingPods::allow`] before it is rejected; the duration is ignored otherwise.
pub trait PermitPlugin: Plugin {
    fn permit(&self, state: &CycleState, pod: &Pod, node: &str) -> (Status, Duration);
}

/// Runs in the binding task, before Bind (volume attachment and similar, once they exist).
pub trait PreBindPlugin: Plugin {
    fn pre_bind<'a>(&'a self, pod: &'a Pod, node: &'a str) -> BoxFuture<'a, Status>;
}

/// Writes the placement. The first Bind plugin that does not Skip decides.
pub trait BindPlugin: Plugin {
    fn bind<'a>(&'a self, pod: &'a Pod, node: &'a str) -> BoxFuture<'a, Status>;
}

/// One plugin's implementations of each extension point, as the registry builds them.
#[derive(Default, Clone)]
pub struct PluginSet {
    pub pre_filter: Option<Arc<dyn PreFilterPlugin>>,
    pub filter: Option<Arc<dyn FilterPlugin>>,
    pub post_filter: Option<Arc<dyn PostFilterPlugin>>,
    pub pre_score: Option<Arc<dyn PreScorePlugin>>,
    pub score: Option<Arc<dyn ScorePlugin>>,
    pub reserve: Option<Arc<dyn ReservePlugin>>,
    pub permit: Option<Arc<dyn PermitPlugin>>,
    pub pre_bind: Option<Arc<dyn PreBindPlugin>>,
    pub bind: Option<Arc<dyn BindPlugin>>,
}

/// Filter rounds look at no fewer nodes than this.
const MIN_ROUND: usize = 64;
/// Filtering runs on several threads (rayon's pool, started at first use) only when each gets
/// at least this many nodes (~50 µs of filtering here): below that, waking the pool costs more
/// than it saves, and its idle workers spin on cores the API server needs. The default
/// `percentageOfNodesToScore` asks for 500–750 nodes per cycle, so large clusters with a
/// high percentage are what runs in parallel.
const MIN_CHUNK: usize = 1024;

/// The plugins of one profile, in order, with score weights.
#[derive(Default, Clone)]
pub struct Framework {
    pub profile_name: String,
    pub pre_filter: Vec<Arc<dyn PreFilterPlugin>>,
    pub filter: Vec<Arc<dyn FilterPlugin>>,
    pub post_filter: Vec<Arc<dyn PostFilterPlugin>>,
    pub pre_score: Vec<Arc<dyn PreScorePlugin>>,
    pub score: Vec<(Arc<dyn ScorePlugin>, i64)>,
    pub reserve: Vec<Arc<dyn ReservePlugin>>,
    pub permit: Vec<Arc<dyn PermitPlugin>>,
    pub pre_bind: Vec<Arc<dyn PreBindPlugin>>,
    pub bind: Vec<Arc<dyn BindPlugin>>,
    /// 0 means adaptive, as upstream.
    pub percentage_of_nodes_to_score: u32,
    /// Pods this profile holds at Permit (shared with its plugins through `PluginArgs`).
    pub waiting_pods: Arc<WaitingPods>,
}

impl Framework {
    /// Adds a plugin's points; `weight` applies to its Score.
    pub fn add(&mut self, set: PluginSet, weight: i64) {
        self.pre_filter.extend(set.pre_filter);
        self.filter.extend(set.filter);
        self.post_filter.extend(set.post_filter);
        self.pre_score.extend(set.pre_score);
        self.score.extend(set.score.map(|s| (s, weight)));
        self.reserve.extend(set.reserve);
        self.permit.extend(set.permit);
        self.pre_bind.extend(set.pre_bind);
        self.bind.extend(set.bind);
    }

    pub fn run_pre_filter(&self, state: &mut CycleState, pod: &Pod, nodes: &[NodeInfo]) -> Status {
        for p in &self.pre_filter {
            let s = p.pre_filter(state, pod, nodes);
            match s.code {
                Code::Success => {}
                Code::Skip => {
                    state.skip_filter.insert(p.name().to_string());
                }
                _ => return s.with_plugin(p.name()),
            }
        }
        Status::success()
    }

    /// All filters on one node; the first failure decides (as upstream without
    /// `runAllFilters`).
    pub fn run_filters(&self, state: &CycleState, pod: &Pod, node: &NodeInfo) -> Status {
        run_filters(&self.active_filters(state), state, pod, node)
    }

    /// The Filter plugins whose PreFilter did not Skip, looked up once per cycle rather than
    /// once per node.
    fn active_filters(&self, state: &CycleState) -> Vec<&Arc<dyn FilterPlugin>> {
        self.filter
            .iter()
            .filter(|p| !state.skip_filter.contains(p.name()))
            .collect()
    }

    /// How many feasible nodes are enough (upstream's `numFeasibleNodesToFind`): all nodes
    /// below 100; otherwise an adaptive percentage (50% minus 1% per 125 nodes, at least 5%),
    /// and never fewer than 100.
    pub fn num_feasible_nodes_to_find(&self, num_all: usize) -> usize {
        const MIN_FEASIBLE: usize = 100;
        let pct = self.percentage_of_nodes_to_score;
        if num_all < MIN_FEASIBLE || pct >= 100 {
            return num_all;
        }
        let pct = if pct == 0 {
            (50 - (num_all as i64) / 125).max(5) as usize
        } else {
            pct as usize
        };
        (num_all * pct / 100).max(MIN_FEASIBLE)
    }

    /// Filters nodes in parallel chunks, starting at `start` (rotating so every node gets
    /// looked at over time), stopping once enough feasible nodes are found. Returns the
    /// feasible node indices and the failure status of each rejected node, by name.
    pub fn find_feasible(
        &self,
        state: &CycleState,
        pod: &Pod,
        nodes: &[NodeInfo],
        start: usize,
    ) -> (Vec<usize>, HashMap<String, Status>) {
        let n = nodes.len();
        let want = self.num_feasible_nodes_to_find(n);
        let mut feasible = Vec::new();
        let mut failed = HashMap::new();
        if n == 0 {
            return (feasible, failed);
        }
        let threads = rayon::current_num_threads().max(1);
        let filters = &self.active_filters(state)[..];
        let mut offset = 0;
        while offset < n && feasible.len() < want {
            // Each round looks at about as many nodes as are still wanted (upstream checks
            // nodes until it has found enough): with 5,000 nodes that all fit, 500 nodes
            // rather than all of them.
            let round = (want - feasible.len()).max(MIN_ROUND).min(n - offset);
            let end = offset + round;
            let order: Vec<usize> = (offset..end).map(|i| (start + i) % n).collect();
            let chunk = order.len().div_ceil(threads).max(MIN_CHUNK);
            let filter = |&i: &usize| (i, run_filters(filters, state, pod, &nodes[i]));
            // Results come back in `order` either way, so the feasible set does not depend on
            // which thread finished first.
            let results: Vec<(usize, Status)> = if order.len() <= chunk {
                order.iter().map(filter).collect()
            } else {
                order
                    .par_chunks(chunk)
                    .flat_map_iter(|part| part.iter().map(filter))
                    .collect()
            };
            for (i, s) in results {
                if s.is_success() {
                    if feasible.len() < want {
                        feasible.push(i);
                    }
                } else {
                    failed.insert(nodes[i].name().to_string(), s);
                }
            }
            offset = end;
        }
        (feasible, failed)
    }

    pub fn run_pre_score(
        &self,
        state: &mut CycleState,
        pod: &Pod,
        nodes: &[&NodeInfo],
        all: &[NodeInfo],
    ) -> Status {
        for p in &self.pre_score {
            let s = p.pre_score(state, pod, nodes, all);
            match s.code {
                Code::Success => {}
                Code::Skip => {
                    state.skip_score.insert(p.name().to_string());
                }
                _ => return s.with_plugin(p.name()),
            }
        }
        Status::success()
    }

    /// Weighted sum of every normalised score per node, in `nodes` order.
    pub fn run_score(
        &self,
        state: &CycleState,
        pod: &Pod,
        nodes: &[&NodeInfo],
    ) -> Result<Vec<i64>, Status> {
        let mut total = vec![0i64; nodes.len()];
        // One (name, score) list reused by every plugin: the names are copied once per cycle.
        let mut scores: Vec<(String, i64)> =
            nodes.iter().map(|n| (n.name().to_string(), 0)).collect();
        for (p, weight) in &self.score {
            if state.skip_score.contains(p.name()) {
                continue;
            }
            for (slot, n) in scores.iter_mut().zip(nodes) {
                slot.1 = p
                    .score(state, pod, n)
                    .map_err(|s| s.with_plugin(p.name()))?;
            }
            p.normalize_score(state, pod, &mut scores);
            for (t, (_, s)) in total.iter_mut().zip(&scores) {
                *t += s * weight;
            }
        }
        Ok(total)
    }

    pub fn run_reserve(&self, state: &mut CycleState, pod: &Pod, node: &str) -> Status {
        for (i, p) in self.reserve.iter().enumerate() {
            let s = p.reserve(state, pod, node);
            if !s.is_success() {
                for q in self.reserve[..=i].iter().rev() {
                    q.unreserve(state, pod, node);
                }
                return s.with_plugin(p.name());
            }
        }
        Status::success()
    }

    pub fn run_unreserve(&self, state: &mut CycleState, pod: &Pod, node: &str) {
        for p in self.reserve.iter().rev() {
            p.unreserve(state, pod, node);
        }
    }

    /// Every Permit plugin: the first rejection or error decides; otherwise, when some
    /// answered Wait, the pod is registered in `waiting_pods` and Wait is returned, and the
    /// binding cycle must [`Framework::wait_on_permit`] before binding.
    pub fn run_permit(&self, state: &CycleState, pod: &Pod, node: &str) -> Status {
        let mut waits = HashMap::new();
        for p in &self.permit {
            let (s, timeout) = p.permit(state, pod, node);
            match s.code {
                Code::Success | Code::Skip => {}
                Code::Wait => {
                    waits.insert(p.name().to_string(), timeout);
                }
                Code::Unschedulable | Code::UnschedulableAndUnresolvable => {
                    return s.with_plugin(p.name());
                }
                Code::Error => {
                    let msg = format!("running Permit plugin {:?}: {}", p.name(), s.message());
                    return Status::error(msg).with_plugin(p.name());
                }
            }
        }
        if waits.is_empty() {
            return Status::success();
        }
        self.waiting_pods.add(pod, waits);
        Status::wait()
    }

    /// Waits until every plugin that answered Wait allowed the pod (Success), or one
    /// rejected it or timed out (Unschedulable). Success at once for a pod not waiting.
    pub async fn wait_on_permit(&self, pod: &Pod) -> Status {
        self.waiting_pods.wait(pod).await
    }

    pub async fn run_pre_bind(&self, pod: &Pod, node: &str) -> Status {
        for p in &self.pre_bind {
            let s = p.pre_bind(pod, node).await;
            if !s.is_success() {
                return s.with_plugin(p.name());
            }
        }
        Status::success()
    }

    pub async fn run_bind(&self, pod: &Pod, node: &str) -> Status {
        for p in &self.bind {
            let s = p.bind(pod, node).await;
            if s.code != Code::Skip {
                return s.with_plugin(p.name());
            }
        }
        Status::error("no bind plugin bound the pod")
    }
}

/// `filters` on one node; the first failure decides.
fn run_filters(
    filters: &[&Arc<dyn FilterPlugin>],
    state: &CycleState,
    pod: &Pod,
    node: &NodeInfo,
) -> Status {
    for p in filters {
        let s = p.filter(state, pod, node);
        if !s.is_success() {
            return s.with_plugin(p.name());
        }
    }
    Status::success()
}

/// Upstream's `FitError` message: `0/N nodes are available: <count reason, ...>.` with the
/// reasons counted over nodes and sorted as strings, then the PostFilter message.
pub fn fit_error_message(
    num_all: usize,
    pre_filter_msg: Option<&str>,
    statuses: &HashMap<String, Status>,
    post_filter_msg: Option<&str>,
) -> String {
    let mut msg = format!("0/{num_all} nodes are available:");
    match pre_filter_msg {
        Some(m) if !m.is_empty() => msg.push_str(&format!(" {m}.")),
        _ => {
            let mut hist: BTreeMap<&str, usize> = BTreeMap::new();
            for s in statuses.values() {
                for r in &s.reasons {
                    *hist.entry(r.as_str()).or_default() += 1;
                }
            }
            let mut parts: Vec<String> = hist.iter().map(|(r, c)| format!("{c} {r}")).collect();
            parts.sort();
            msg.push_str(&format!(" {}.", parts.join(", ")));
        }
    }
    if let Some(p) = post_filter_msg.filter(|p| !p.is_empty()) {
        msg.push(' ');
        msg.push_str(p);
    }
    msg
}
