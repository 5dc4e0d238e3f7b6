//! The DaemonSet controller: one pod per eligible node, rolled to new templates node by node.
//!
//! Eligibility is upstream's `NodeShouldRunDaemonPod`: the template's `nodeName`, node
//! selector and required node affinity must match, and every NoSchedule/NoExecute taint must
//! be tolerated by the pod as it will be created, i.e. with the tolerations upstream adds to
//! every DaemonSet pod (not-ready, unreachable, pressure and unschedulable), so a DaemonSet
//! keeps running on cordoned, NotReady or pressured nodes. A pod already running on a node
//! that gained a NoSchedule taint stays (only untolerated NoExecute taints evict).
//!
//! Pods are created with a required node affinity on `metadata.name` (upstream's
//! `ReplaceDaemonSetPodNodeNameNodeAffinity`) rather than a `nodeName`, so the default
//! scheduler binds them and preemption and resource accounting apply. They carry the
//! `controller-revision-hash` of the template's ControllerRevision ([`super::history`]),
//! which is how a rolling update tells old pods from new ones.
//!
//! Like the ReplicaSet controller, pods get generated names, so the shared
//! [`Expectations`] hold a pass back until the previous pass's creates and deletes are in
//! the pod store; otherwise a lagging store would make it create a second pod on a node.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures::StreamExt;
use k8s_openapi::api::apps::v1::{DaemonSet, DaemonSetStatus};
use k8s_openapi::api::core::v1::{
    Affinity, Node, NodeAffinity, NodeSelector, NodeSelectorRequirement, NodeSelectorTerm, Pod,
    PodTemplateSpec, Taint, Toleration,
};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use kube::api::{DeleteParams, Patch, PatchParams, PostParams};
use kube::runtime::controller::{Action, Config as ControllerConfig, Controller};
use kube::runtime::reflector::{ObjectRef, Store};
use kube::{Api, Client, ResourceExt};
use parking_lot::Mutex;
use serde_json::json;

use crate::controllers::history::{self, CONTROLLER_REVISION_HASH};
use crate::controllers::ownership;
use crate::controllers::replicaset::{controller_ref, Expectations};
use crate::informers::{to_value, Informers};
use crate::metrics::Metrics;
use crate::util::{self, Backoff, Recorder};
use crate::Error;

/// The controller's name in `--controllers` and metrics.
pub const NAME: &str = "daemonset";

/// Upstream's `--concurrent-daemonset-syncs` default.
const CONCURRENCY: u16 = 2;

/// The deprecated label upstream still sets on DaemonSet pods.
const POD_TEMPLATE_GENERATION: &str = "pod-template-generation";

/// What the DaemonSet controller's reconciles share.
pub struct Context {
    client: Client,
    pods: Store<Pod>,
    nodes: Store<Node>,
    daemonsets: Store<DaemonSet>,
    expectations: Expectations,
    failed: FailedBackoff,
    backoff: Backoff,
    metrics: Arc<Metrics>,
    recorder: Recorder,
}

/// The controller as a future that runs until dropped.
pub fn controller(
    client: Client,
    informers: &Informers,
    metrics: Arc<Metrics>,
) -> Option<futures::future::BoxFuture<'static, ()>> {
    use futures::FutureExt;
    let ds_trigger = informers.daemonsets.subscribe()?;
    let pod_trigger = informers.pods.subscribe()?;
    let orphan_trigger = informers.pods.subscribe()?;
    let node_trigger = informers.nodes.subscribe()?;
    let ds_store = informers.daemonsets.store();
    let ctx = Arc::new(Context {
        recorder: Recorder::new(&client, "daemonset-controller"),
        client,
        pods: informers.pods.store(),
        nodes: informers.nodes.store(),
        daemonsets: ds_store.clone(),
        expectations: Expectations::default(),
        failed: FailedBackoff::default(),
        backoff: Backoff::default(),
        metrics,
    });
    // A node joining or leaving, or changing labels or taints, may change where every
    // DaemonSet should run; its status heartbeats never do. Remembering what each node looked
    // like keeps thousands of heartbeating nodes from resyncing every DaemonSet each minute.
    let seen: Arc<Mutex<HashMap<String, String>>> = Arc::default();
    let every_ds = |store: &Store<DaemonSet>| {
        store
            .state()
            .iter()
            .map(|ds| ObjectRef::from_obj(ds.as_ref()))
            .collect::<Vec<_>>()
    };
    let on_node = {
        let store = ds_store.clone();
        let seen = seen.clone();
        move |node: Arc<Node>| {
            let print = placement_fingerprint(&node);
            if seen.lock().insert(node.name_any(), print.clone()) == Some(print) {
                return Vec::new();
            }
            every_ds(&store)
        }
    };
    let on_node_gone = {
        let store = ds_store.clone();
        move |node: Arc<Node>| {
            seen.lock().remove(&node.name_any());
            every_ds(&store)
        }
    };
    let orphan_store = ds_store.clone();
    Some(
        Controller::for_shared_stream(ds_trigger, ds_store)
            .with_config(ControllerConfig::default().concurrency(CONCURRENCY))
            .owns_shared_stream(pod_trigger)
            .owns_shared_stream(informers.pods.deletions())
            // A pod nobody controls may be adopted by any DaemonSet whose selector matches.
            .watches_shared_stream(
                orphan_trigger,
                ownership::orphan_owners(orphan_store, |ds: &DaemonSet| {
                    ds.spec.as_ref().map(|s| &s.selector)
                }),
            )
            .watches_shared_stream(node_trigger, on_node)
            .watches_shared_stream(informers.nodes.deletions(), on_node_gone)
            .run(reconcile, error_policy, ctx)
            .for_each(|_| futures::future::ready(()))
            .boxed(),
    )
}

fn error_policy(ds: Arc<DaemonSet>, error: &Error, ctx: Arc<Context>) -> Action {
    util::retry_after_error(NAME, ds.as_ref(), error, &ctx.metrics, &ctx.backoff)
}

async fn reconcile(ds: Arc<DaemonSet>, ctx: Arc<Context>) -> Result<Action, Error> {
    let key = util::key_of(ds.as_ref());
    util::reconciled(
        NAME,
        &key,
        &ctx.metrics,
        &ctx.backoff,
        sync(&ds, &ctx, &key),
    )
    .await
}

/// What of a node decides whether daemons run on it: labels, taints and `unschedulable`.
fn placement_fingerprint(node: &Node) -> String {
    let spec = node.spec.as_ref();
    json!([
        node.labels(),
        spec.and_then(|s| s.taints.as_ref()),
        spec.and_then(|s| s.unschedulable),
    ])
    .to_string()
}

/// The tolerations upstream adds to every DaemonSet pod (`AddOrUpdateDaemonPodTolerations`),
/// so node conditions that taint a node never evict or block its daemons.
fn daemon_tolerations(host_network: bool) -> Vec<Toleration> {
    let tol = |key: &str, effect: &str| Toleration {
        key: Some(key.into()),
        operator: Some("Exists".into()),
        effect: Some(effect.into()),
        ..Default::default()
    };
    let mut t = vec![
        tol("node.kubernetes.io/not-ready", "NoExecute"),
        tol("node.kubernetes.io/unreachable", "NoExecute"),
        tol("node.kubernetes.io/disk-pressure", "NoSchedule"),
        tol("node.kubernetes.io/memory-pressure", "NoSchedule"),
        tol("node.kubernetes.io/pid-pressure", "NoSchedule"),
        tol("node.kubernetes.io/unschedulable", "NoSchedule"),
    ];
    if host_network {
        t.push(tol("node.kubernetes.io/network-unavailable", "NoSchedule"));
    }
    t
}

/// The template's tolerations plus the daemon ones it does not already have.
fn tolerations_of(template: &PodTemplateSpec) -> Vec<Toleration> {
    let spec = template.spec.as_ref();
    let mut tols = spec.and_then(|s| s.tolerations.clone()).unwrap_or_default();
    for t in daemon_tolerations(spec.and_then(|s| s.host_network).unwrap_or(false)) {
        if !tols.contains(&t) {
            tols.push(t);
        }
    }
    tols
}

/// Whether `tol` tolerates `taint` (upstream's `Toleration.ToleratesTaint`).
pub fn tolerates(tol: &Toleration, taint: &Taint) -> bool {
    if tol.effect.as_deref().is_some_and(|e| !e.is_empty())
        && tol.effect.as_deref() != Some(&taint.effect)
    {
        return false;
    }
    let key = tol.key.as_deref().unwrap_or("");
    if !key.is_empty() && key != taint.key {
        return false;
    }
    match tol.operator.as_deref().unwrap_or("Equal") {
        "Exists" => true,
        "Equal" | "" => {
            !key.is_empty()
                && tol.value.as_deref().unwrap_or("") == taint.value.as_deref().unwrap_or("")
        }
        _ => false,
    }
}

/// Whether a node selector requirement holds for `value` (a label or field, if present).
fn requirement_holds(r: &NodeSelectorRequirement, value: Option<&str>) -> bool {
    let values = r.values.as_deref().unwrap_or_default();
    let int = |s: &str| s.parse::<i64>().ok();
    match r.operator.as_str() {
        "In" => value.is_some_and(|v| values.iter().any(|x| x == v)),
        "NotIn" => value.is_none_or(|v| !values.iter().any(|x| x == v)),
        "Exists" => value.is_some(),
        "DoesNotExist" => value.is_none(),
        "Gt" | "Lt" => {
            let (Some(v), Some(bound)) = (value.and_then(int), values.first().and_then(|b| int(b)))
            else {
                return false;
            };
            if r.operator == "Gt" {
                v > bound
            } else {
                v < bound
            }
        }
        _ => false,
    }
}

/// Whether `node` satisfies the required node affinity terms (ORed; an empty term matches
/// nothing, as upstream).
fn affinity_matches(selector: &NodeSelector, node: &Node) -> bool {
    let labels = node.labels();
    let name = node.name_any();
    selector.node_selector_terms.iter().any(|term| {
        let exprs = term.match_expressions.as_deref().unwrap_or_default();
        let fields = term.match_fields.as_deref().unwrap_or_default();
        (!exprs.is_empty() || !fields.is_empty())
            && exprs
                .iter()
                .all(|r| requirement_holds(r, labels.get(&r.key).map(String::as_str)))
            && fields.iter().all(|r| {
                let v = (r.key == "metadata.name").then_some(name.as_str());
                requirement_holds(r, v)
            })
    })
}

/// Upstream's `NodeShouldRunDaemonPod`: `(should run, should continue running)`.
pub fn should_run(template: &PodTemplateSpec, node: &Node) -> (bool, bool) {
    let spec = template.spec.as_ref();
    if let Some(n) = spec
        .and_then(|s| s.node_name.as_deref())
        .filter(|n| !n.is_empty())
    {
        if n != node.name_any() {
            return (false, false);
        }
    }
    let labels = node.labels();
    let selector_ok = spec
        .and_then(|s| s.node_selector.as_ref())
        .is_none_or(|sel| sel.iter().all(|(k, v)| labels.get(k) == Some(v)));
    let affinity_ok = spec
        .and_then(|s| s.affinity.as_ref())
        .and_then(|a| a.node_affinity.as_ref())
        .and_then(|a| {
            a.required_during_scheduling_ignored_during_execution
                .as_ref()
        })
        .is_none_or(|sel| affinity_matches(sel, node));
    if !selector_ok || !affinity_ok {
        return (false, false);
    }
    let tols = tolerations_of(template);
    let taints = node
        .spec
        .as_ref()
        .and_then(|s| s.taints.as_deref())
        .unwrap_or_default();
    let untolerated = |effect: &str| {
        taints
            .iter()
            .filter(|t| t.effect == effect)
            .any(|t| !tols.iter().any(|tol| tolerates(tol, t)))
    };
    let no_execute = untolerated("NoExecute");
    if no_execute || untolerated("NoSchedule") {
        return (false, !no_execute);
    }
    (true, true)
}

/// The node a daemon pod is for: its `nodeName` once bound, else the node its
/// `metadata.name` affinity targets (upstream's `GetTargetNodeName`).
fn target_node(pod: &Pod) -> Option<String> {
    let spec = pod.spec.as_ref()?;
    if let Some(n) = spec.node_name.as_ref().filter(|n| !n.is_empty()) {
        return Some(n.clone());
    }
    let terms = &spec
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
        .find(|r| r.key == "metadata.name" && r.operator == "In")
        .and_then(|r| r.values.as_ref()?.first().cloned())
}

/// The pod upstream's `NewPod` + `ReplaceDaemonSetPodNodeNameNodeAffinity` make for `node`.
fn new_pod(ds: &DaemonSet, template: &PodTemplateSpec, node: &str, hash: &str) -> Pod {
    let meta = template.metadata.clone().unwrap_or_default();
    let mut labels = meta.labels.unwrap_or_default();
    labels.insert(CONTROLLER_REVISION_HASH.into(), hash.into());
    if let Some(g) = ds.metadata.generation {
        labels.insert(POD_TEMPLATE_GENERATION.into(), g.to_string());
    }
    let mut spec = template.spec.clone().unwrap_or_default();
    spec.tolerations = Some(tolerations_of(template));
    let term = NodeSelectorTerm {
        match_fields: Some(vec![NodeSelectorRequirement {
            key: "metadata.name".into(),
            operator: "In".into(),
            values: Some(vec![node.into()]),
        }]),
        match_expressions: None,
    };
    let affinity = spec.affinity.get_or_insert_with(Affinity::default);
    let na = affinity
        .node_affinity
        .get_or_insert_with(NodeAffinity::default);
    // The node was already chosen against the template's own terms, so they are replaced.
    na.required_during_scheduling_ignored_during_execution = Some(NodeSelector {
        node_selector_terms: vec![term],
    });
    Pod {
        metadata: ObjectMeta {
            generate_name: Some(format!("{}-", ds.name_any())),
            namespace: ds.namespace(),
            labels: Some(labels),
            annotations: meta.annotations,
            finalizers: meta.finalizers,
            owner_references: Some(vec![controller_ref(ds)]),
            ..Default::default()
        },
        spec: Some(spec),
        status: None,
    }
}

/// Resolves maxSurge/maxUnavailable against the desired count, rounding up as upstream.
fn scaled(v: Option<&IntOrString>, total: i32, default: i32) -> i32 {
    match v {
        None => default,
        Some(IntOrString::Int(i)) => *i,
        Some(IntOrString::String(s)) => {
            let pct: i64 = s.trim_end_matches('%').parse().unwrap_or(0);
            i32::try_from((i64::from(total) * pct + 99) / 100).unwrap_or(i32::MAX)
        }
    }
}

fn phase(pod: &Pod) -> Option<&str> {
    pod.status.as_ref().and_then(|s| s.phase.as_deref())
}

fn created(pod: &Pod) -> i64 {
    pod.metadata
        .creation_timestamp
        .as_ref()
        .map_or(0, |t| t.0.as_millisecond())
}

fn has_hash(pod: &Pod, hash: &str) -> bool {
    pod.labels()
        .get(CONTROLLER_REVISION_HASH)
        .map(String::as_str)
        == Some(hash)
}

/// What one pass decided to do.
#[derive(Default)]
struct Plan {
    /// Nodes to create a daemon pod on.
    create: Vec<String>,
    /// Pods to delete, and whether without grace (their node is gone: no kubelet will
    /// ever confirm a graceful deletion).
    delete: Vec<(Arc<Pod>, bool)>,
    /// When to look again for a failed pod held back by its back-off.
    requeue: Option<Duration>,
}

/// The back-off before killing a node's failed daemon pod again (upstream's
/// `failedPodsBackoff`: 1 s doubling to 15 min per DaemonSet and node, forgotten after
/// twice the maximum without failures).
#[derive(Default)]
struct FailedBackoff {
    entries: Mutex<HashMap<String, (Instant, Duration)>>,
}

impl FailedBackoff {
    const INITIAL: Duration = Duration::from_secs(1);
    const MAX: Duration = Duration::from_secs(15 * 60);

    /// `Ok` if the failed pod may be killed now (and the back-off grows), else how long
    /// until it may.
    fn attempt(&self, key: &str, now: Instant) -> Result<(), Duration> {
        let mut entries = self.entries.lock();
        let next = match entries.get(key) {
            Some((last, delay)) if now < *last + *delay => return Err(*last + *delay - now),
            Some((last, delay)) if now.duration_since(*last) < 2 * Self::MAX => {
                (*delay * 2).min(Self::MAX)
            }
            _ => Self::INITIAL,
        };
        entries.insert(key.to_string(), (now, next));
        Ok(())
    }
}

/// A node that should run the daemon, with the pods kept on it after this pass.
struct Eligible {
    name: String,
    kept: Vec<Arc<Pod>>,
}

async fn sync(ds: &DaemonSet, ctx: &Context, key: &str) -> Result<Action, Error> {
    ctx.pods.wait_until_ready().await?;
    ctx.nodes.wait_until_ready().await?;
    ctx.daemonsets.wait_until_ready().await?;
    let Some(spec) = ds.spec.as_ref() else {
        return Ok(Action::await_change());
    };
    if ds.metadata.deletion_timestamp.is_some() {
        // The garbage collector removes the pods; nothing to create or roll.
        return Ok(Action::await_change());
    }
    if util::selector_is_empty(&spec.selector) {
        return Err(Error::Invalid(format!(
            "DaemonSet {key} has an empty selector"
        )));
    }
    let ns = ds.namespace().unwrap_or_default();
    if !ctx.expectations.satisfied(key, &ctx.pods, &ns) {
        return Ok(Action::requeue(Duration::from_secs(1)));
    }
    let status = ds.status.clone().unwrap_or_default();
    let collision = status.collision_count.unwrap_or(0);
    let Some(revisions) =
        history::sync(&ctx.client, ds, &spec.selector, &spec.template, collision).await?
    else {
        patch_status(ctx, ds, json!({ "collisionCount": collision + 1 })).await?;
        return Ok(Action::requeue(Duration::from_millis(10)));
    };
    let hash = history::hash_of(&revisions.current);
    let min_ready = spec.min_ready_seconds.unwrap_or(0);
    let now = util::now();
    let available = |p: &Pod| util::pod_available(p, min_ready, &now);

    // Pods by the node they are for; pods that are being deleted and already finished are
    // gone for every purpose (upstream's `includeDeletedTerminal=false`).
    let mut by_node: BTreeMap<String, Vec<Arc<Pod>>> = BTreeMap::new();
    let mut plan = Plan::default();
    let pods = ctx.pods.state();
    for pod in ownership::claim_pods(&ctx.client, ds, &spec.selector, pods, |_| true).await? {
        let finished = matches!(phase(&pod), Some("Succeeded" | "Failed"));
        if pod.metadata.deletion_timestamp.is_some() && finished {
            continue;
        }
        match target_node(&pod) {
            Some(node) => by_node.entry(node).or_default().push(pod),
            None if pod.metadata.deletion_timestamp.is_none() => plan.delete.push((pod, true)),
            None => {}
        }
    }
    let rolling = spec
        .update_strategy
        .as_ref()
        .is_some_and(|s| s.type_.as_deref() == Some("RollingUpdate"));
    let ru = spec
        .update_strategy
        .as_ref()
        .and_then(|s| s.rolling_update.as_ref());

    let uid = ds.uid().unwrap_or_default();
    let nodes = ctx.nodes.state();
    let mut eligible: Vec<Eligible> = Vec::new();
    let mut status_pods: Vec<(bool, Vec<Arc<Pod>>)> = Vec::new();
    for node in &nodes {
        let name = node.name_any();
        let (run, keep) = should_run(&spec.template, node);
        let pods = by_node.remove(&name).unwrap_or_default();
        status_pods.push((run, pods.clone()));
        if !keep {
            plan.delete.extend(
                pods.into_iter()
                    .filter(|p| p.metadata.deletion_timestamp.is_none())
                    .map(|p| (p, false)),
            );
            continue;
        }
        // Upstream creates only on a node with no daemon pod at all: a replacement waits
        // until the pod it replaces (terminating, or failed and being deleted) is gone, so
        // the two never compete for host ports or host paths.
        let exists = !pods.is_empty();
        let mut running = Vec::new();
        for pod in pods {
            if pod.metadata.deletion_timestamp.is_some() {
                continue;
            }
            match phase(&pod) {
                Some("Failed") => {
                    // Killed so it is recreated, but with a back-off per node: a kubelet that
                    // keeps rejecting the pod must not be hot-looped.
                    let key = format!("{uid}/{name}");
                    match ctx.failed.attempt(&key, Instant::now()) {
                        Ok(()) => plan.delete.push((pod, false)),
                        Err(wait) => {
                            plan.requeue = Some(plan.requeue.map_or(wait, |r| r.min(wait)))
                        }
                    }
                }
                Some("Succeeded") => plan.delete.push((pod, false)),
                _ => running.push(pod),
            }
        }
        if !run {
            // Tolerated NoExecute but untolerated NoSchedule: keep what runs, add nothing.
            continue;
        }
        if running.is_empty() {
            if !exists {
                plan.create.push(name.clone());
            }
            eligible.push(Eligible {
                name,
                kept: Vec::new(),
            });
            continue;
        }
        running.sort_by_key(|p| created(p));
        let (new, old): (Vec<_>, Vec<_>) = running.into_iter().partition(|p| has_hash(p, &hash));
        let kept = if rolling
            && ru
                .and_then(|r| r.max_surge.as_ref())
                .is_some_and(|s| scaled(Some(s), 1, 0) > 0)
        {
            // At most one old and one new pod; the old goes once the new is available.
            let mut kept = Vec::new();
            let mut extra = Vec::new();
            let mut new = new.into_iter();
            let mut old = old.into_iter();
            let first_new = new.next();
            extra.extend(new);
            if let Some(n) = first_new {
                if available(&n).0 {
                    extra.extend(old.by_ref());
                } else if let Some(o) = old.next() {
                    kept.push(o);
                }
                kept.push(n);
            } else if let Some(o) = old.next() {
                kept.push(o);
            }
            extra.extend(old);
            plan.delete.extend(extra.into_iter().map(|p| (p, false)));
            kept
        } else {
            // One pod per node: keep the oldest.
            let mut all: Vec<_> = old.into_iter().chain(new).collect();
            all.sort_by_key(|p| created(p));
            let mut all = all.into_iter();
            let kept: Vec<_> = all.next().into_iter().collect();
            plan.delete.extend(all.map(|p| (p, false)));
            kept
        };
        eligible.push(Eligible { name, kept });
    }
    // Pods for nodes that no longer exist.
    for pod in by_node.into_values().flatten() {
        if pod.metadata.deletion_timestamp.is_none() {
            plan.delete.push((pod, true));
        }
    }

    let desired = i32::try_from(eligible.len()).unwrap_or(i32::MAX);
    if rolling {
        rolling_update(&mut plan, &eligible, &hash, desired, ru, &available);
    }
    execute(ctx, ds, key, &ns, &plan, &spec.template, &hash).await?;

    // Status, from what the store showed at the start of this pass: every write above
    // changes the store, which triggers the next pass and the next status.
    // Optional counts start at `Some(0)`: the status is written as a merge patch, where an
    // absent field would leave the previous count in place (e.g. a stale "all updated").
    let mut st = DaemonSetStatus {
        observed_generation: ds.metadata.generation,
        collision_count: status.collision_count,
        conditions: status.conditions.clone(),
        number_available: Some(0),
        updated_number_scheduled: Some(0),
        ..Default::default()
    };
    let mut requeue: Option<Duration> = plan.requeue;
    for (run, pods) in &status_pods {
        // The oldest pod speaks for the node (upstream), but one that is going away never
        // counts as ready, available or updated: right after a rollback its hash may match
        // the template again, and `rollout status` would finish before the new pod runs.
        let mut pods: Vec<&Arc<Pod>> = pods.iter().collect();
        pods.sort_by_key(|p| (p.metadata.deletion_timestamp.is_some(), created(p)));
        match (run, pods.first()) {
            (true, first) => {
                st.desired_number_scheduled += 1;
                if let Some(p) = first {
                    st.current_number_scheduled += 1;
                    if p.metadata.deletion_timestamp.is_some() {
                        continue;
                    }
                    if util::pod_is_ready(p) {
                        st.number_ready += 1;
                    }
                    let (avail, wait) = available(p);
                    if avail {
                        *st.number_available.get_or_insert(0) += 1;
                    }
                    if let Some(w) = wait {
                        requeue = Some(requeue.map_or(w, |r| r.min(w)));
                    }
                    if has_hash(p, &hash) {
                        *st.updated_number_scheduled.get_or_insert(0) += 1;
                    }
                }
            }
            (false, Some(_)) => st.number_misscheduled += 1,
            (false, None) => {}
        }
    }
    let unavailable = st.desired_number_scheduled - st.number_available.unwrap_or(0);
    st.number_unavailable = Some(unavailable.max(0));
    if !same_status(ds.status.as_ref(), &st) {
        patch_status(ctx, ds, to_value(&st)).await?;
    }

    // History: keep the revisions pods still use, and `revisionHistoryLimit` others.
    let mut live: HashSet<String> = status_pods
        .iter()
        .flat_map(|(_, pods)| pods.iter())
        .filter_map(|p| p.labels().get(CONTROLLER_REVISION_HASH))
        .map(|h| format!("{}-{h}", ds.name_any()))
        .collect();
    live.insert(revisions.current.name_any());
    history::truncate(
        &ctx.client,
        &revisions,
        &live,
        spec.revision_history_limit.unwrap_or(10),
    )
    .await?;
    Ok(requeue.map_or_else(Action::await_change, Action::requeue))
}

/// Upstream's `rollingUpdate`: without surge, delete old pods while at most `maxUnavailable`
/// nodes lack an available pod (old unavailable pods go at once); with surge, start new pods
/// next to old available ones on up to `maxSurge` nodes (the old pod goes once the new one
/// is available, see the per-node pass).
fn rolling_update(
    plan: &mut Plan,
    eligible: &[Eligible],
    hash: &str,
    desired: i32,
    ru: Option<&k8s_openapi::api::apps::v1::RollingUpdateDaemonSet>,
    available: &dyn Fn(&Pod) -> (bool, Option<Duration>),
) {
    let max_surge = scaled(ru.and_then(|r| r.max_surge.as_ref()), desired, 0);
    let mut max_unavailable = scaled(ru.and_then(|r| r.max_unavailable.as_ref()), desired, 1);
    if max_surge == 0 && max_unavailable == 0 {
        max_unavailable = 1;
    }
    let deleting: HashSet<String> = plan.delete.iter().map(|(p, _)| p.name_any()).collect();
    if max_surge == 0 {
        let mut unavailable = eligible
            .iter()
            .filter(|e| !e.kept.iter().any(|p| available(p).0))
            .count();
        let budget = usize::try_from(max_unavailable).unwrap_or(0);
        let mut candidates = Vec::new();
        for e in eligible {
            for p in &e.kept {
                if has_hash(p, hash) || deleting.contains(&p.name_any()) {
                    continue;
                }
                if available(p).0 {
                    candidates.push(p.clone());
                } else {
                    plan.delete.push((p.clone(), false));
                }
            }
        }
        for p in candidates {
            if unavailable >= budget {
                break;
            }
            unavailable += 1;
            plan.delete.push((p, false));
        }
    } else {
        let mut surging = eligible.iter().filter(|e| e.kept.len() > 1).count();
        let budget = usize::try_from(max_surge).unwrap_or(0);
        for e in eligible {
            let [old] = e.kept.as_slice() else { continue };
            if has_hash(old, hash) {
                continue;
            }
            if !available(old).0 {
                plan.create.push(e.name.clone());
            } else if surging < budget {
                surging += 1;
                plan.create.push(e.name.clone());
            }
        }
    }
}

async fn execute(
    ctx: &Context,
    ds: &DaemonSet,
    key: &str,
    ns: &str,
    plan: &Plan,
    template: &PodTemplateSpec,
    hash: &str,
) -> Result<(), Error> {
    let api: Api<Pod> = Api::namespaced(ctx.client.clone(), ns);
    let mut first_err: Option<kube::Error> = None;
    let mut dels = Vec::new();
    for (pod, force) in &plan.delete {
        let dp = if *force {
            DeleteParams::default().grace_period(0)
        } else {
            DeleteParams::default()
        };
        match api.delete(&pod.name_any(), &dp).await {
            Ok(_) => {
                tracing::info!(pod = %pod.name_any(), "deleted daemon pod");
                ctx.recorder.normal(
                    ds,
                    "SuccessfulDelete",
                    format!("Deleted pod: {}", pod.name_any()),
                );
                dels.push(pod.uid().unwrap_or_default());
            }
            Err(kube::Error::Api(s)) if s.code == 404 => {}
            Err(e) => {
                first_err.get_or_insert(e);
            }
        }
    }
    let pp = PostParams::default();
    let new_pods: Vec<Pod> = plan
        .create
        .iter()
        .map(|node| new_pod(ds, template, node, hash))
        .collect();
    let results = futures::future::join_all(new_pods.iter().map(|pod| api.create(&pp, pod))).await;
    let mut adds = Vec::new();
    for r in results {
        match r {
            Ok(p) => {
                tracing::info!(pod = %p.name_any(), "created daemon pod");
                ctx.recorder.normal(
                    ds,
                    "SuccessfulCreate",
                    format!("Created pod: {}", p.name_any()),
                );
                adds.push(p.name_any());
            }
            Err(e) => {
                first_err.get_or_insert(e);
            }
        }
    }
    ctx.expectations.expect(key, adds, dels);
    match first_err {
        Some(e) => Err(e.into()),
        None => Ok(()),
    }
}

async fn patch_status(
    ctx: &Context,
    ds: &DaemonSet,
    status: serde_json::Value,
) -> Result<(), Error> {
    let api: Api<DaemonSet> =
        Api::namespaced(ctx.client.clone(), &ds.namespace().unwrap_or_default());
    api.patch_status(
        &ds.name_any(),
        &PatchParams::default(),
        &Patch::Merge(json!({ "status": status })),
    )
    .await?;
    Ok(())
}

/// Whether the stored status already says what `new` says (absent counts equal zero).
fn same_status(old: Option<&DaemonSetStatus>, new: &DaemonSetStatus) -> bool {
    let Some(old) = old else {
        return false;
    };
    let z = |v: Option<i32>| v.unwrap_or(0);
    old.desired_number_scheduled == new.desired_number_scheduled
        && old.current_number_scheduled == new.current_number_scheduled
        && old.number_ready == new.number_ready
        && old.number_misscheduled == new.number_misscheduled
        && z(old.number_available) == z(new.number_available)
        && z(old.number_unavailable) == z(new.number_unavailable)
        && z(old.updated_number_scheduled) == z(new.updated_number_scheduled)
        && old.observed_generation == new.observed_generation
}

#[cfg(test)]
mod tests {
    use super::*;

    fn node(v: serde_json::Value) -> Node {
        serde_json::from_value(v).expect("node")
    }

    fn template(v: serde_json::Value) -> PodTemplateSpec {
        serde_json::from_value(v).expect("template")
    }

    #[test]
    fn eligibility_follows_selectors_affinity_and_taints() {
        let plain = template(json!({"spec": {"containers": []}}));
        let n = node(json!({"metadata": {"name": "a", "labels": {"disk": "ssd"}}}));
        assert_eq!(should_run(&plain, &n), (true, true));
        let sel = template(json!({"spec": {"containers": [], "nodeSelector": {"disk": "hdd"}}}));
        assert_eq!(should_run(&sel, &n), (false, false));
        let aff = template(
            json!({"spec": {"containers": [], "affinity": {"nodeAffinity": {
            "requiredDuringSchedulingIgnoredDuringExecution": {"nodeSelectorTerms": [
                {"matchExpressions": [{"key": "disk", "operator": "In", "values": ["ssd"]}]}]}}}}}),
        );
        assert_eq!(should_run(&aff, &n), (true, true));
        // Cordoned / not ready nodes still run daemons: upstream tolerates those taints.
        let cordoned = node(json!({"metadata": {"name": "b"}, "spec": {"taints": [
            {"key": "node.kubernetes.io/unschedulable", "effect": "NoSchedule"},
            {"key": "node.kubernetes.io/not-ready", "effect": "NoExecute"}]}}));
        assert_eq!(should_run(&plain, &cordoned), (true, true));
        // An untolerated NoSchedule taint keeps existing pods; NoExecute evicts them.
        let tainted = node(json!({"metadata": {"name": "c"}, "spec": {"taints": [
            {"key": "dedicated", "value": "gpu", "effect": "NoSchedule"}]}}));
        assert_eq!(should_run(&plain, &tainted), (false, true));
        let tolerating = template(json!({"spec": {"containers": [], "tolerations": [
            {"key": "dedicated", "operator": "Equal", "value": "gpu", "effect": "NoSchedule"}]}}));
        assert_eq!(should_run(&tolerating, &tainted), (true, true));
        let evicting = node(json!({"metadata": {"name": "d"}, "spec": {"taints": [
            {"key": "dedicated", "effect": "NoExecute"}]}}));
        assert_eq!(should_run(&plain, &evicting), (false, false));
    }

    #[test]
    fn pods_target_their_node_through_affinity() {
        let ds: DaemonSet = serde_json::from_value(json!({
            "metadata": {"name": "agent", "namespace": "kube-system", "uid": "u", "generation": 2},
            "spec": {"selector": {"matchLabels": {"app": "agent"}}, "template": {
                "metadata": {"labels": {"app": "agent"}},
                "spec": {"containers": [{"name": "c"}]}}},
        }))
        .expect("ds");
        let t = ds
            .spec
            .as_ref()
            .map(|s| s.template.clone())
            .unwrap_or_default();
        let pod = new_pod(&ds, &t, "node-1", "abc");
        assert_eq!(target_node(&pod).as_deref(), Some("node-1"));
        assert_eq!(
            pod.labels()
                .get(CONTROLLER_REVISION_HASH)
                .map(String::as_str),
            Some("abc")
        );
        assert_eq!(
            pod.labels()
                .get(POD_TEMPLATE_GENERATION)
                .map(String::as_str),
            Some("2")
        );
        let tols = pod
            .spec
            .as_ref()
            .and_then(|s| s.tolerations.clone())
            .unwrap_or_default();
        assert_eq!(tols.len(), 6);
        assert_eq!(pod.metadata.generate_name.as_deref(), Some("agent-"));
        assert_eq!(
            util::controller_of(&pod).map(|r| r.kind.as_str()),
            Some("DaemonSet")
        );
    }

    #[test]
    fn failed_pods_back_off_per_node() {
        let b = FailedBackoff::default();
        let t0 = Instant::now();
        assert_eq!(b.attempt("ds/n1", t0), Ok(()));
        assert_eq!(b.attempt("ds/n1", t0), Err(Duration::from_secs(1)));
        assert_eq!(b.attempt("ds/n2", t0), Ok(()), "per node");
        let t1 = t0 + Duration::from_secs(1);
        assert_eq!(b.attempt("ds/n1", t1), Ok(()));
        assert_eq!(
            b.attempt("ds/n1", t1),
            Err(Duration::from_secs(2)),
            "doubles"
        );
        let later = t1 + 2 * FailedBackoff::MAX + Duration::from_secs(1);
        assert_eq!(b.attempt("ds/n1", later), Ok(()));
        assert_eq!(
            b.attempt("ds/n1", later),
            Err(FailedBackoff::INITIAL),
            "forgotten"
        );
    }

    #[test]
    fn percentages_round_up() {
        assert_eq!(scaled(Some(&IntOrString::String("10%".into())), 5, 0), 1);
        assert_eq!(scaled(Some(&IntOrString::Int(2)), 5, 0), 2);
        assert_eq!(scaled(None, 5, 1), 1);
    }
}
