//! The disruption controller (upstream's `disruption`): keeps each policy/v1
//! PodDisruptionBudget's status — `expectedPods`, `currentHealthy`, `desiredHealthy`,
//! `disruptionsAllowed`, `observedGeneration`, the `DisruptionAllowed` condition and the
//! `disruptedPods` the eviction API recorded — as kube-controller-manager 1.32 computes it.
//!
//! The eviction handler in the API server spends `disruptionsAllowed` by a compare-and-swap on
//! this same status and records the pod in `disruptedPods`; this controller writes with the
//! revision it read (a full `/status` PUT), so a status computed before an eviction can never
//! overwrite it: the write conflicts and the next pass counts the evicted pod as disrupted.
//! An entry whose pod was not marked for deletion within [`DELETION_TIMEOUT`] is dropped, and
//! the budget is requeued for the moment the earliest live entry expires.
//!
//! Triggers: budgets, and every pod change or deletion re-checks the budgets of its namespace
//! (a pod's old labels are not known, so this is how a pod that stops matching is noticed).
//!
//! The eviction API marks a pod `DisruptionTarget=True` before deleting it; a pod still not
//! terminating [`STALE_POD_DISRUPTION_TIMEOUT`] later (the delete failed) has the condition
//! reset to False, as upstream's stale-pod-disruption cleanup does.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use k8s_openapi::api::apps::v1::{Deployment, ReplicaSet, StatefulSet};
use k8s_openapi::api::core::v1::{Pod, PodCondition};
use k8s_openapi::api::policy::v1::{PodDisruptionBudget, PodDisruptionBudgetStatus};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, OwnerReference, Time};
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use kube::api::{Patch, PatchParams, PostParams};
use kube::runtime::controller::{Action, Controller};
use kube::runtime::reflector::{ObjectRef, Store};
use kube::{Api, Client, ResourceExt};

use crate::informers::Informers;
use crate::metrics::Metrics;
use crate::util::{self, Backoff, Recorder};
use crate::Error;

/// The controller's name in `--controllers` and metrics.
pub const NAME: &str = "disruption";

/// How long an eviction recorded in `disruptedPods` keeps its pod out of `currentHealthy`
/// while the pod is not yet marked for deletion (upstream's `DeletionTimeout`). After that the
/// pod is assumed to have survived and counts again.
pub const DELETION_TIMEOUT: Duration = Duration::from_secs(120);

/// How long a non-terminating pod may carry `DisruptionTarget=True` before the condition is
/// reset (upstream's `stalePodDisruptionTimeout`).
pub const STALE_POD_DISRUPTION_TIMEOUT: Duration = Duration::from_secs(120);

/// The name the stale-condition cleanup reports metrics and spans under.
const STALE_NAME: &str = "disruption-stale-pod";

/// The condition type, and its reasons, upstream sets on every budget.
const DISRUPTION_ALLOWED: &str = "DisruptionAllowed";
const SUFFICIENT_PODS: &str = "SufficientPods";
const INSUFFICIENT_PODS: &str = "InsufficientPods";
const SYNC_FAILED: &str = "SyncFailed";

/// What the reconciles share: the listers of the pods and of every kind whose scale a budget
/// may count.
pub struct Context {
    client: Client,
    pods: Store<Pod>,
    replicasets: Store<ReplicaSet>,
    deployments: Store<Deployment>,
    statefulsets: Store<StatefulSet>,
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
    let trigger = informers.pdbs.subscribe()?;
    let pod_trigger = informers.pods.subscribe()?;
    let pdbs = informers.pdbs.store();
    let ctx = Arc::new(Context {
        recorder: Recorder::new(&client, "controllermanager"),
        client,
        pods: informers.pods.store(),
        replicasets: informers.replicasets.store(),
        deployments: informers.deployments.store(),
        statefulsets: informers.statefulsets.store(),
        backoff: Backoff::default(),
        metrics,
    });
    // Only pods carrying a DisruptionTarget=True condition concern the stale-condition
    // cleanup; every other pod event is dropped before it reaches that controller.
    let stale_trigger = informers
        .pods
        .subscribe()?
        .filter(|p| futures::future::ready(disruption_target(p).is_some()));
    let stale = Controller::for_shared_stream(stale_trigger, informers.pods.store())
        .run(reconcile_stale, stale_error_policy, ctx.clone())
        .for_each(|_| futures::future::ready(()));
    let store = pdbs.clone();
    let budgets_of = move |pod: Arc<Pod>| {
        let ns = pod.namespace();
        store
            .state()
            .into_iter()
            .filter(|b| b.namespace() == ns)
            .map(|b| ObjectRef::from_obj(b.as_ref()))
            .collect::<Vec<_>>()
    };
    let budgets = Controller::for_shared_stream(trigger, pdbs)
        .watches_shared_stream(pod_trigger, budgets_of.clone())
        .watches_shared_stream(informers.pods.deletions(), budgets_of)
        .run(reconcile, error_policy, ctx)
        .for_each(|_| futures::future::ready(()));
    Some(
        async move {
            futures::join!(budgets, stale);
        }
        .boxed(),
    )
}

/// The pod's `DisruptionTarget` condition if it is True.
fn disruption_target(pod: &Pod) -> Option<&PodCondition> {
    pod.status
        .as_ref()?
        .conditions
        .as_ref()?
        .iter()
        .find(|c| c.type_ == "DisruptionTarget" && c.status == "True")
}

fn stale_error_policy(pod: Arc<Pod>, error: &Error, ctx: Arc<Context>) -> Action {
    util::retry_after_error(STALE_NAME, pod.as_ref(), error, &ctx.metrics, &ctx.backoff)
}

async fn reconcile_stale(pod: Arc<Pod>, ctx: Arc<Context>) -> Result<Action, Error> {
    let key = util::key_of(pod.as_ref());
    util::reconciled(
        STALE_NAME,
        &key,
        &ctx.metrics,
        &ctx.backoff,
        reset_stale_condition(&pod, &ctx),
    )
    .await
}

/// Upstream's `syncStalePodDisruption`: a pod that got `DisruptionTarget=True` (an eviction
/// whose delete never happened) but is neither terminating nor finished
/// [`STALE_POD_DISRUPTION_TIMEOUT`] later has the condition set back to False. The kubelet's
/// own `TerminationByKubelet` conditions are left alone.
async fn reset_stale_condition(pod: &Pod, ctx: &Context) -> Result<Action, Error> {
    let Some(cond) = disruption_target(pod) else {
        return Ok(Action::await_change());
    };
    let phase = pod.status.as_ref().and_then(|s| s.phase.as_deref());
    if pod.metadata.deletion_timestamp.is_some()
        || cond.reason.as_deref() == Some("TerminationByKubelet")
        || matches!(phase, Some("Succeeded" | "Failed"))
    {
        return Ok(Action::await_change());
    }
    let since = cond.last_transition_time.as_ref().map_or(0, millis);
    let timeout = i64::try_from(STALE_POD_DISRUPTION_TIMEOUT.as_millis()).unwrap_or(i64::MAX);
    let left = since.saturating_add(timeout) - millis(&util::now());
    if left > 0 {
        return Ok(Action::requeue(Duration::from_millis(
            u64::try_from(left).unwrap_or(1),
        )));
    }
    let api: Api<Pod> = Api::namespaced(ctx.client.clone(), &pod.namespace().unwrap_or_default());
    // Strategic merge: the conditions list merges by type, so only this one changes; the
    // resourceVersion makes it a compare-and-swap against the pod as judged.
    let patch = serde_json::json!({
        "metadata": {"resourceVersion": pod.resource_version()},
        "status": {"conditions": [{"type": "DisruptionTarget", "status": "False",
                                   "lastTransitionTime": util::now()}]},
    });
    api.patch_status(
        &pod.name_any(),
        &PatchParams::default(),
        &Patch::Strategic(patch),
    )
    .await?;
    tracing::info!("reset stale DisruptionTarget condition to False");
    Ok(Action::await_change())
}

fn error_policy(pdb: Arc<PodDisruptionBudget>, error: &Error, ctx: Arc<Context>) -> Action {
    util::retry_after_error(NAME, pdb.as_ref(), error, &ctx.metrics, &ctx.backoff)
}

async fn reconcile(pdb: Arc<PodDisruptionBudget>, ctx: Arc<Context>) -> Result<Action, Error> {
    let key = util::key_of(pdb.as_ref());
    util::reconciled(NAME, &key, &ctx.metrics, &ctx.backoff, sync(&pdb, &ctx)).await
}

/// One pass (upstream's `sync`): compute and write the status; a computation that fails
/// (a pod whose controller cannot be found, a bad percentage) leaves the budget allowing no
/// disruption (`failSafe`), so the eviction API errs on the side of availability. A conflict
/// is an ordinary retry: the eviction API changed the status since this pass read it.
async fn sync(pdb: &PodDisruptionBudget, ctx: &Context) -> Result<Action, Error> {
    ctx.pods.wait_until_ready().await?;
    match try_sync(pdb, ctx).await {
        Ok(action) => Ok(action),
        Err(Error::Kube(kube::Error::Api(s))) if s.code == 409 => {
            Err(Error::Kube(kube::Error::Api(s)))
        }
        Err(error) => {
            tracing::warn!(%error, "failed to sync PodDisruptionBudget; allowing no disruptions");
            fail_safe(pdb, ctx, &error.to_string()).await?;
            // Upstream waits for the next pod or budget event; a late look also recovers a
            // budget whose pods' controller was merely not in the cache yet.
            Ok(Action::requeue(Duration::from_secs(10)))
        }
    }
}

async fn try_sync(pdb: &PodDisruptionBudget, ctx: &Context) -> Result<Action, Error> {
    let pods = pods_for(pdb, &ctx.pods);
    if pods.is_empty() {
        ctx.recorder
            .normal(pdb, "NoPods", "No matching pods found".into());
    }
    let (expected, desired, unmanaged) = expected_count(pdb, &pods, ctx)?;
    if !unmanaged.is_empty() {
        tracing::info!(
            pods = ?unmanaged,
            "pods selected by this PodDisruptionBudget are unmanaged; its status cannot be \
             computed correctly (set .spec.minAvailable to an integer to account for them)"
        );
    }
    let now = util::now();
    let (disrupted, recheck) = disrupted_pods(&pods, pdb, &now);
    let healthy = count_healthy(&pods, &disrupted, &now);
    update_status(pdb, ctx, healthy, desired, expected, disrupted).await?;
    Ok(recheck.map_or_else(Action::await_change, Action::requeue))
}

/// The pods in the budget's namespace its selector selects (a missing selector selects none,
/// an empty one every pod, as `metav1.LabelSelectorAsSelector`).
fn pods_for(pdb: &PodDisruptionBudget, pods: &Store<Pod>) -> Vec<Arc<Pod>> {
    let ns = pdb.namespace();
    let Some(selector) = pdb.spec.as_ref().and_then(|s| s.selector.as_ref()) else {
        return Vec::new();
    };
    pods.state()
        .into_iter()
        .filter(|p| p.namespace() == ns && util::selector_matches(selector, p.labels()))
        .collect()
}

/// Upstream's `GetScaledValueFromIntOrPercent` rounding up: an int as is, `"N%"` of `total`.
fn scaled(v: &IntOrString, total: i32) -> Result<i32, Error> {
    match v {
        IntOrString::Int(i) => Ok(*i),
        IntOrString::String(s) => {
            let pct: i64 = s
                .strip_suffix('%')
                .and_then(|p| p.parse().ok())
                .ok_or_else(|| {
                    Error::Invalid(format!(
                        "invalid value for IntOrString: invalid value {s:?}"
                    ))
                })?;
            let r = (pct * i64::from(total) + 99).div_euclid(100);
            Ok(i32::try_from(r).unwrap_or(i32::MAX))
        }
    }
}

/// `(expectedPods, desiredHealthy, unmanaged pod names)` (upstream's `getExpectedPodCount`):
/// `maxUnavailable` and a percentage `minAvailable` count against the scale of the pods'
/// controllers; an integer `minAvailable` against the pods selected.
fn expected_count(
    pdb: &PodDisruptionBudget,
    pods: &[Arc<Pod>],
    ctx: &Context,
) -> Result<(i32, i32, Vec<String>), Error> {
    let spec = pdb.spec.as_ref();
    if let Some(max_unavailable) = spec.and_then(|s| s.max_unavailable.as_ref()) {
        let (expected, unmanaged) = expected_scale(pods, ctx)?;
        let desired = (expected - scaled(max_unavailable, expected)?).max(0);
        return Ok((expected, desired, unmanaged));
    }
    match spec.and_then(|s| s.min_available.as_ref()) {
        Some(IntOrString::Int(n)) => Ok((
            i32::try_from(pods.len()).unwrap_or(i32::MAX),
            *n,
            Vec::new(),
        )),
        Some(pct @ IntOrString::String(_)) => {
            let (expected, unmanaged) = expected_scale(pods, ctx)?;
            Ok((expected, scaled(pct, expected)?, unmanaged))
        }
        None => Ok((0, 0, Vec::new())),
    }
}

/// The sum of the scales of the selected pods' controllers, each counted once (upstream's
/// `getExpectedScale`); pods without a controller are returned by name and not counted.
fn expected_scale(pods: &[Arc<Pod>], ctx: &Context) -> Result<(i32, Vec<String>), Error> {
    let mut scales: BTreeMap<String, i32> = BTreeMap::new();
    let mut seen_refs: Vec<String> = Vec::new();
    let mut unmanaged = Vec::new();
    for pod in pods {
        let Some(owner) = util::controller_of(pod.as_ref()) else {
            unmanaged.push(pod.name_any());
            continue;
        };
        if seen_refs.contains(&owner.uid) {
            continue;
        }
        let ns = pod.namespace().unwrap_or_default();
        let Some((uid, scale)) = controller_scale(owner, &ns, ctx)? else {
            return Err(Error::Invalid(format!(
                "found no controllers for pod {:?}",
                pod.name_any()
            )));
        };
        seen_refs.push(owner.uid.clone());
        scales.insert(uid, scale);
    }
    Ok((scales.values().sum(), unmanaged))
}

fn group_of(api_version: &str) -> &str {
    api_version.rsplit_once('/').map_or("", |(g, _)| g)
}

/// The uid and desired replicas of the workload that `owner` (a pod's controller reference)
/// scales with: a ReplicaSet's Deployment if it has one, else the ReplicaSet or a
/// StatefulSet (upstream's finders). `None` when the owner is not
/// in the caches (or is another object of that name); an error for a kind without a scale.
fn controller_scale(
    owner: &OwnerReference,
    ns: &str,
    ctx: &Context,
) -> Result<Option<(String, i32)>, Error> {
    let group = group_of(&owner.api_version);
    let apps = matches!(group, "apps" | "extensions");
    let key = |name: &str| (name.to_string(), ns.to_string());
    match owner.kind.as_str() {
        "ReplicaSet" if apps => {
            let (name, ns) = key(&owner.name);
            let Some(rs) = ctx.replicasets.get(&ObjectRef::new(&name).within(&ns)) else {
                return Ok(None);
            };
            if rs.uid().as_deref() != Some(owner.uid.as_str()) {
                return Ok(None);
            }
            match util::controller_of(rs.as_ref()) {
                Some(d) if d.kind == "Deployment" => {
                    if !matches!(group_of(&d.api_version), "apps" | "extensions") {
                        return Ok(None);
                    }
                    let Some(dep) = ctx.deployments.get(&ObjectRef::new(&d.name).within(&ns))
                    else {
                        return Ok(None);
                    };
                    if dep.uid().as_deref() != Some(d.uid.as_str()) {
                        return Ok(None);
                    }
                    let replicas = dep.spec.as_ref().and_then(|s| s.replicas).unwrap_or(1);
                    Ok(Some((d.uid.clone(), replicas)))
                }
                _ => {
                    let replicas = rs.spec.as_ref().and_then(|s| s.replicas).unwrap_or(1);
                    Ok(Some((owner.uid.clone(), replicas)))
                }
            }
        }
        // The API server serves no ReplicationControllers, so none can be found (upstream
        // would read its scale).
        "ReplicationController" if group.is_empty() => Ok(None),
        "StatefulSet" if apps => {
            let (name, ns) = key(&owner.name);
            let found = ctx
                .statefulsets
                .get(&ObjectRef::new(&name).within(&ns))
                .filter(|s| s.uid().as_deref() == Some(owner.uid.as_str()));
            Ok(found.map(|s| {
                let replicas = s.spec.as_ref().and_then(|s| s.replicas).unwrap_or(1);
                (owner.uid.clone(), replicas)
            }))
        }
        kind => {
            // Upstream asks the scale subresource of any other kind; no built-in kind besides
            // the four above has one, so this is upstream's answer for e.g. a DaemonSet.
            let version = owner.api_version.rsplit('/').next().unwrap_or_default();
            let info = api_types::resources::RESOURCES
                .iter()
                .find(|r| r.group == group && r.version == version && r.kind == kind);
            match info {
                Some(r) if r.subresource("scale").is_none() => {
                    let gr = if r.group.is_empty() {
                        r.plural.to_string()
                    } else {
                        format!("{}.{}", r.plural, r.group)
                    };
                    Err(Error::Invalid(format!(
                        "{gr} does not implement the scale subresource"
                    )))
                }
                _ => Ok(None),
            }
        }
    }
}

fn millis(t: &Time) -> i64 {
    t.0.as_millisecond()
}

fn timeout_millis() -> i64 {
    i64::try_from(DELETION_TIMEOUT.as_millis()).unwrap_or(i64::MAX)
}

/// The `disruptedPods` entries still pending (upstream's `buildDisruptedPodMap`): those of
/// selected pods not yet marked for deletion whose timeout has not passed; and when the
/// earliest of them expires, to requeue then.
fn disrupted_pods(
    pods: &[Arc<Pod>],
    pdb: &PodDisruptionBudget,
    now: &Time,
) -> (BTreeMap<String, Time>, Option<Duration>) {
    let mut out = BTreeMap::new();
    let mut recheck: Option<i64> = None;
    let Some(recorded) = pdb.status.as_ref().and_then(|s| s.disrupted_pods.as_ref()) else {
        return (out, None);
    };
    for pod in pods {
        if pod.metadata.deletion_timestamp.is_some() {
            continue;
        }
        let name = pod.name_any();
        let Some(at) = recorded.get(&name) else {
            continue;
        };
        let expected_deletion = millis(at).saturating_add(timeout_millis());
        if expected_deletion < millis(now) {
            tracing::info!(pod = %name, "pod was expected to be deleted but it wasn't; forgetting its disruption");
        } else {
            recheck = Some(recheck.map_or(expected_deletion, |r| r.min(expected_deletion)));
            out.insert(name, at.clone());
        }
    }
    let wait = recheck.map(|at| {
        // One millisecond past the expiry, so the next pass sees the entry expired.
        Duration::from_millis(u64::try_from(at - millis(now) + 1).unwrap_or(1))
    });
    (out, wait)
}

/// Selected pods that are Ready, not terminating and not about to be evicted (upstream's
/// `countHealthyPods`).
fn count_healthy(pods: &[Arc<Pod>], disrupted: &BTreeMap<String, Time>, now: &Time) -> i32 {
    let healthy = pods
        .iter()
        .filter(|p| p.metadata.deletion_timestamp.is_none())
        .filter(|p| {
            disrupted
                .get(&p.name_any())
                .is_none_or(|at| millis(at).saturating_add(timeout_millis()) <= millis(now))
        })
        .filter(|p| util::pod_is_ready(p))
        .count();
    i32::try_from(healthy).unwrap_or(i32::MAX)
}

/// `meta.SetStatusCondition`: replaces the condition of the same type, moving its transition
/// time only when the status changes.
fn set_condition(conditions: &mut Vec<Condition>, mut wanted: Condition) {
    match conditions.iter_mut().find(|c| c.type_ == wanted.type_) {
        Some(c) => {
            if c.status != wanted.status {
                c.status = wanted.status;
                c.last_transition_time = wanted.last_transition_time;
            }
            c.reason = wanted.reason;
            c.message = wanted.message;
            c.observed_generation = wanted.observed_generation;
        }
        None => {
            if wanted.last_transition_time.0 == k8s_openapi::jiff::Timestamp::UNIX_EPOCH {
                wanted.last_transition_time = util::now();
            }
            conditions.push(wanted)
        }
    }
}

/// `UpdateDisruptionAllowedCondition`: True/SufficientPods while a disruption is allowed,
/// False/InsufficientPods otherwise.
fn update_disruption_allowed(status: &mut PodDisruptionBudgetStatus) {
    let (value, reason) = if status.disruptions_allowed > 0 {
        ("True", SUFFICIENT_PODS)
    } else {
        ("False", INSUFFICIENT_PODS)
    };
    let conditions = status.conditions.get_or_insert_with(Vec::new);
    set_condition(
        conditions,
        Condition {
            type_: DISRUPTION_ALLOWED.into(),
            status: value.into(),
            reason: reason.into(),
            message: String::new(),
            observed_generation: status.observed_generation,
            last_transition_time: util::now(),
        },
    );
}

/// `ConditionsAreUpToDate`: the condition agrees with `disruptionsAllowed` and the status is
/// of the current generation.
fn conditions_up_to_date(pdb: &PodDisruptionBudget) -> bool {
    let Some(status) = pdb.status.as_ref() else {
        return false;
    };
    let Some(cond) = status
        .conditions
        .iter()
        .flatten()
        .find(|c| c.type_ == DISRUPTION_ALLOWED)
    else {
        return false;
    };
    if status.observed_generation != pdb.metadata.generation {
        return false;
    }
    if status.disruptions_allowed > 0 {
        cond.status == "True" && cond.reason == SUFFICIENT_PODS
    } else {
        cond.status == "False" && cond.reason == INSUFFICIENT_PODS
    }
}

/// Writes the computed status unless the stored one already says it (upstream's
/// `updatePdbStatus`). At least one pod must be expected before any disruption is allowed,
/// so a budget whose pods appear before this controller counts them stays safe.
async fn update_status(
    pdb: &PodDisruptionBudget,
    ctx: &Context,
    current_healthy: i32,
    desired_healthy: i32,
    expected: i32,
    disrupted: BTreeMap<String, Time>,
) -> Result<(), Error> {
    let mut allowed = current_healthy - desired_healthy;
    if expected <= 0 || allowed <= 0 {
        allowed = 0;
    }
    let old = pdb.status.clone().unwrap_or_default();
    let old_disrupted = old.disrupted_pods.clone().unwrap_or_default();
    if old.current_healthy == current_healthy
        && old.desired_healthy == desired_healthy
        && old.expected_pods == expected
        && old.disruptions_allowed == allowed
        && old_disrupted == disrupted
        && old.observed_generation == pdb.metadata.generation
        && conditions_up_to_date(pdb)
    {
        return Ok(());
    }
    let mut status = PodDisruptionBudgetStatus {
        current_healthy,
        desired_healthy,
        expected_pods: expected,
        disruptions_allowed: allowed,
        disrupted_pods: (!disrupted.is_empty()).then_some(disrupted),
        observed_generation: pdb.metadata.generation,
        conditions: old.conditions,
    };
    update_disruption_allowed(&mut status);
    write_status(pdb, ctx, status).await
}

/// Upstream's `failSafe`: no disruption allowed, the `SyncFailed` reason with the error.
async fn fail_safe(pdb: &PodDisruptionBudget, ctx: &Context, why: &str) -> Result<(), Error> {
    let mut status = pdb.status.clone().unwrap_or_default();
    status.disruptions_allowed = 0;
    let observed = status.observed_generation;
    set_condition(
        status.conditions.get_or_insert_with(Vec::new),
        Condition {
            type_: DISRUPTION_ALLOWED.into(),
            status: "False".into(),
            reason: SYNC_FAILED.into(),
            message: why.into(),
            observed_generation: observed,
            last_transition_time: util::now(),
        },
    );
    if pdb.status.as_ref() == Some(&status) {
        return Ok(());
    }
    write_status(pdb, ctx, status).await
}

/// A `/status` PUT carrying the revision the budget was read at: refused (409) if anyone —
/// the eviction API above all — changed it since.
async fn write_status(
    pdb: &PodDisruptionBudget,
    ctx: &Context,
    status: PodDisruptionBudgetStatus,
) -> Result<(), Error> {
    let api: Api<PodDisruptionBudget> =
        Api::namespaced(ctx.client.clone(), &pdb.namespace().unwrap_or_default());
    let mut next = pdb.clone();
    next.status = Some(status);
    api.replace_status(&pdb.name_any(), &PostParams::default(), &next)
        .await?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percentages_round_up_like_upstream() {
        let p = |s: &str| IntOrString::String(s.into());
        assert_eq!(scaled(&p("50%"), 3).ok(), Some(2));
        assert_eq!(scaled(&p("10%"), 10).ok(), Some(1));
        assert_eq!(scaled(&p("1%"), 10).ok(), Some(1));
        assert_eq!(scaled(&p("0%"), 10).ok(), Some(0));
        assert_eq!(scaled(&IntOrString::Int(2), 10).ok(), Some(2));
        assert!(scaled(&p("abc"), 10).is_err());
    }

    fn pod(name: &str, ready: bool, deleting: bool) -> Arc<Pod> {
        let mut p: Pod = serde_json::from_value(serde_json::json!({
            "metadata": {"name": name, "namespace": "default"},
            "status": {"conditions": [{"type": "Ready", "status": if ready {"True"} else {"False"}}]},
        }))
        .expect("pod");
        if deleting {
            p.metadata.deletion_timestamp = Some(util::now());
        }
        Arc::new(p)
    }

    /// Evicted pods stop counting as healthy until their entry expires; entries of pods
    /// already terminating or gone are dropped, expired ones forgotten.
    #[test]
    fn disrupted_pods_expire_after_the_deletion_timeout() {
        let now = util::now();
        let ago = |secs: i64| {
            Time(k8s_openapi::jiff::Timestamp::from_second(now.0.as_second() - secs).expect("t"))
        };
        let pdb = PodDisruptionBudget {
            status: Some(PodDisruptionBudgetStatus {
                disrupted_pods: Some(BTreeMap::from([
                    ("fresh".to_string(), ago(10)),
                    ("stale".to_string(), ago(121)),
                    ("going".to_string(), ago(10)),
                    ("gone".to_string(), ago(10)),
                ])),
                ..Default::default()
            }),
            ..Default::default()
        };
        let pods = vec![
            pod("fresh", true, false),
            pod("stale", true, false),
            pod("going", true, true),
            pod("other", true, false),
        ];
        let (kept, recheck) = disrupted_pods(&pods, &pdb, &now);
        assert_eq!(kept.keys().collect::<Vec<_>>(), ["fresh"]);
        let recheck = recheck.expect("requeued for the expiry");
        assert!(recheck > Duration::from_secs(100) && recheck <= Duration::from_secs(111));
        // fresh is about to go, going is terminating: stale and other count.
        assert_eq!(count_healthy(&pods, &kept, &now), 2);
    }

    #[test]
    fn the_condition_follows_disruptions_allowed() {
        let mut status = PodDisruptionBudgetStatus {
            disruptions_allowed: 1,
            observed_generation: Some(3),
            ..Default::default()
        };
        update_disruption_allowed(&mut status);
        let c = &status.conditions.as_ref().expect("conditions")[0];
        assert_eq!(
            (c.status.as_str(), c.reason.as_str(), c.observed_generation),
            ("True", SUFFICIENT_PODS, Some(3))
        );
        status.disruptions_allowed = 0;
        update_disruption_allowed(&mut status);
        let cs = status.conditions.as_ref().expect("conditions");
        assert_eq!(cs.len(), 1);
        assert_eq!(
            (cs[0].status.as_str(), cs[0].reason.as_str()),
            ("False", INSUFFICIENT_PODS)
        );
    }
}
