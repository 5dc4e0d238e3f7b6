//! The Deployment controller: owns ReplicaSets named `<deployment>-<pod-template-hash>`, rolls
//! from old to new by RollingUpdate (maxSurge / maxUnavailable) or Recreate, numbers
//! revisions, prunes history and reports the status `kubectl rollout status` reads.
//!
//! Like upstream's `DeploymentController.syncDeployment`, each pass is level-based: find the
//! ReplicaSet whose template equals the Deployment's (ignoring `pod-template-hash`), create it
//! if missing, move replica counts one step towards the goal, and recompute status from the
//! ReplicaSets' status. ReplicaSet status changes re-trigger the Deployment.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use k8s_openapi::api::apps::v1::{
    Deployment, DeploymentCondition, DeploymentStatus, ReplicaSet, ReplicaSetSpec,
};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use kube::api::{DeleteParams, Patch, PatchParams, PostParams};
use kube::runtime::controller::{Action, Config as ControllerConfig, Controller};
use kube::runtime::reflector::Store;
use kube::{Api, Client, ResourceExt};
use serde_json::{json, Value};

use crate::controllers::replicaset::controller_ref;
use crate::informers::{to_value, Informers};
use crate::metrics::Metrics;
use crate::util::{self, Backoff};
use crate::Error;

/// The controller's name in `--controllers` and metrics.
pub const NAME: &str = "deployment";

/// The label that ties a ReplicaSet and its pods to one template.
pub const POD_TEMPLATE_HASH: &str = "pod-template-hash";
/// The revision annotation on Deployments and their ReplicaSets (kubectl rollout reads it).
pub const REVISION: &str = "deployment.kubernetes.io/revision";
/// The Deployment's `spec.replicas` when a ReplicaSet was last scaled: a different value on
/// an active ReplicaSet means the Deployment has been scaled since (upstream's
/// `isScalingEvent`).
pub const DESIRED_REPLICAS: &str = "deployment.kubernetes.io/desired-replicas";
/// `spec.replicas + maxSurge` when a ReplicaSet was last scaled: the denominator of its share
/// in a proportional scale.
pub const MAX_REPLICAS: &str = "deployment.kubernetes.io/max-replicas";

/// What the Deployment controller's reconciles share.
pub struct Context {
    client: Client,
    replicasets: Store<ReplicaSet>,
    backoff: Backoff,
    metrics: Arc<Metrics>,
    recorder: util::Recorder,
}

/// The controller as a future that runs until dropped.
pub fn controller(
    client: Client,
    informers: &Informers,
    metrics: Arc<Metrics>,
    concurrency: u16,
) -> Option<futures::future::BoxFuture<'static, ()>> {
    use futures::FutureExt;
    let trigger = informers.deployments.subscribe()?;
    let rs_trigger = informers.replicasets.subscribe()?;
    let ctx = Arc::new(Context {
        recorder: util::Recorder::new(&client, "deployment-controller"),
        client,
        replicasets: informers.replicasets.store(),
        backoff: Backoff::default(),
        metrics,
    });
    Some(
        Controller::for_shared_stream(trigger, informers.deployments.store())
            .with_config(ControllerConfig::default().concurrency(concurrency))
            .owns_shared_stream(rs_trigger)
            .owns_shared_stream(informers.replicasets.deletions())
            .run(reconcile, error_policy, ctx)
            .for_each(|_| futures::future::ready(()))
            .boxed(),
    )
}

fn error_policy(d: Arc<Deployment>, error: &Error, ctx: Arc<Context>) -> Action {
    util::retry_after_error(NAME, d.as_ref(), error, &ctx.metrics, &ctx.backoff)
}

async fn reconcile(d: Arc<Deployment>, ctx: Arc<Context>) -> Result<Action, Error> {
    let key = util::key_of(d.as_ref());
    util::reconciled(NAME, &key, &ctx.metrics, &ctx.backoff, sync(&d, &ctx)).await
}

/// Upstream's `ComputeHash`: FNV-32a over the template, then the collision count (4 bytes,
/// little endian), the sum printed in decimal and encoded with `rand.SafeEncodeString`.
///
/// Upstream hashes the Go struct as printed by `DeepHashObject` (spew); we hash the
/// template's canonical JSON instead, so the value differs from kube-controller-manager's
/// for the same template but has the same shape, stability and collision handling.
pub fn compute_hash(template: &Value, collision_count: Option<i32>) -> String {
    let mut h = Fnv32a::new();
    h.write(template.to_string().as_bytes());
    if let Some(c) = collision_count {
        h.write(&c.to_le_bytes());
    }
    safe_encode(&h.0.to_string())
}

/// FNV-1a, 32 bits (Go's `hash/fnv.New32a`).
pub struct Fnv32a(pub u32);

impl Fnv32a {
    /// The offset basis.
    pub fn new() -> Self {
        Fnv32a(0x811c_9dc5)
    }

    /// Hashes `bytes` into the state.
    pub fn write(&mut self, bytes: &[u8]) {
        for b in bytes {
            self.0 ^= u32::from(*b);
            self.0 = self.0.wrapping_mul(0x0100_0193);
        }
    }
}

impl Default for Fnv32a {
    fn default() -> Self {
        Self::new()
    }
}

/// `k8s.io/apimachinery/pkg/util/rand.SafeEncodeString`: maps each byte onto an alphabet
/// without vowels (no accidental words) and without look-alikes such as 0/o, 1/l.
pub fn safe_encode(s: &str) -> String {
    const ALPHANUMS: &[u8] = b"bcdfghjklmnpqrstvwxz2456789";
    s.bytes()
        .map(|b| char::from(ALPHANUMS[usize::from(b) % ALPHANUMS.len()]))
        .collect()
}

/// The template as JSON without the `pod-template-hash` label, for comparisons.
fn template_without_hash(t: Option<&k8s_openapi::api::core::v1::PodTemplateSpec>) -> Value {
    let mut v = t.map(to_value).unwrap_or(Value::Null);
    if let Some(labels) = v
        .pointer_mut("/metadata/labels")
        .and_then(Value::as_object_mut)
    {
        labels.remove(POD_TEMPLATE_HASH);
        if labels.is_empty() {
            if let Some(m) = v.pointer_mut("/metadata").and_then(Value::as_object_mut) {
                m.remove("labels");
            }
        }
    }
    v
}

fn revision(rs: &ReplicaSet) -> i64 {
    rs.annotations()
        .get(REVISION)
        .and_then(|r| r.parse().ok())
        .unwrap_or(0)
}

fn spec_replicas(rs: &ReplicaSet) -> i32 {
    rs.spec.as_ref().and_then(|s| s.replicas).unwrap_or(0)
}

fn status_of(rs: &ReplicaSet) -> (i32, i32, i32) {
    rs.status.as_ref().map_or((0, 0, 0), |s| {
        (
            s.replicas,
            s.ready_replicas.unwrap_or(0),
            s.available_replicas.unwrap_or(0),
        )
    })
}

/// Resolves an int-or-percent against `total`, rounding up (surge) or down (unavailable).
fn resolve(v: Option<&IntOrString>, total: i32, round_up: bool) -> i32 {
    match v {
        None => {
            // Both default to 25%.
            resolve(Some(&IntOrString::String("25%".into())), total, round_up)
        }
        Some(IntOrString::Int(i)) => *i,
        Some(IntOrString::String(s)) => {
            let pct: i64 = s.trim_end_matches('%').parse().unwrap_or(0);
            let scaled = i64::from(total) * pct;
            let r = if round_up {
                (scaled + 99) / 100
            } else {
                scaled / 100
            };
            i32::try_from(r).unwrap_or(i32::MAX)
        }
    }
}

/// `(maxSurge, maxUnavailable)` as counts; both zero would deadlock, so unavailable becomes 1.
fn surge_and_unavailable(d: &Deployment, replicas: i32) -> (i32, i32) {
    let ru = d
        .spec
        .as_ref()
        .and_then(|s| s.strategy.as_ref())
        .and_then(|s| s.rolling_update.as_ref());
    let surge = resolve(ru.and_then(|r| r.max_surge.as_ref()), replicas, true);
    let mut unavailable = resolve(ru.and_then(|r| r.max_unavailable.as_ref()), replicas, false);
    if surge == 0 && unavailable == 0 {
        unavailable = 1;
    }
    (surge, unavailable.min(replicas))
}

async fn sync(d: &Deployment, ctx: &Context) -> Result<Action, Error> {
    ctx.replicasets.wait_until_ready().await?;
    let ns = d.namespace().unwrap_or_default();
    let uid = d.uid().unwrap_or_default();
    let Some(spec) = d.spec.as_ref() else {
        return Ok(Action::await_change());
    };
    if util::selector_is_empty(&spec.selector) {
        return Err(Error::Invalid(format!(
            "Deployment {} has an empty selector",
            util::key_of(d)
        )));
    }
    if d.metadata.deletion_timestamp.is_some() {
        return Ok(Action::await_change());
    }
    let rs_api: Api<ReplicaSet> = Api::namespaced(ctx.client.clone(), &ns);
    let mut all: Vec<ReplicaSet> = Vec::new();
    for rs in ctx.replicasets.state() {
        if rs.namespace().as_deref() != Some(ns.as_str()) {
            continue;
        }
        match util::controller_of(rs.as_ref()) {
            Some(r) if r.uid == uid => all.push(rs.as_ref().clone()),
            Some(_) => {}
            None => {
                // Adopt a ReplicaSet nobody controls whose labels match.
                if rs.metadata.deletion_timestamp.is_none()
                    && util::selector_matches(&spec.selector, rs.labels())
                {
                    let mut refs = rs.owner_references().to_vec();
                    refs.push(controller_ref(d));
                    let patch = json!({"metadata": {
                        "ownerReferences": to_value(&refs),
                        "resourceVersion": rs.resource_version(),
                    }});
                    let adopted = rs_api
                        .patch(
                            &rs.name_any(),
                            &PatchParams::default(),
                            &Patch::Merge(patch),
                        )
                        .await?;
                    all.push(adopted);
                }
            }
        }
    }
    let wanted = template_without_hash(Some(&spec.template));
    let new_idx = all.iter().position(|rs| {
        template_without_hash(rs.spec.as_ref().and_then(|s| s.template.as_ref())) == wanted
    });
    let replicas = spec.replicas.unwrap_or(1);
    let paused = spec.paused.unwrap_or(false);
    let recreate = spec.strategy.as_ref().and_then(|s| s.type_.as_deref()) == Some("Recreate");
    let max_old_revision = all
        .iter()
        .enumerate()
        .filter(|(i, _)| Some(*i) != new_idx)
        .map(|(_, rs)| revision(rs))
        .max()
        .unwrap_or(0);

    // A paused Deployment does not roll out but still follows `kubectl scale`; a Deployment
    // scaled since its ReplicaSets were last sized is resized before rolling on, the
    // difference spread over the active ReplicaSets in proportion to their sizes (upstream's
    // `sync` + `scale`).
    let scaling_event = all.iter().filter(|rs| spec_replicas(rs) > 0).any(|rs| {
        rs.annotations()
            .get(DESIRED_REPLICAS)
            .and_then(|v| v.parse::<i32>().ok())
            .is_some_and(|desired| desired != replicas)
    });
    let targets = if paused || scaling_event {
        scale(d, &all, new_idx)
    } else {
        Vec::new()
    };
    // A scaling event that leaves nothing to resize (Recreate mid-rollout) rolls on.
    if paused || !targets.is_empty() {
        for (i, target) in targets {
            all[i] = scale_replica_set(d, ctx, &rs_api, &all[i], target).await?;
        }
        if paused {
            let olds: Vec<&ReplicaSet> = all
                .iter()
                .enumerate()
                .filter(|(i, _)| Some(*i) != new_idx)
                .map(|(_, rs)| rs)
                .collect();
            cleanup_history(d, &rs_api, &olds).await?;
        }
        let new = new_idx.map(|i| all[i].clone());
        update_status(d, ctx, &all, new.as_ref(), false).await?;
        // The resized ReplicaSets' watch events bring the next pass, which rolls on.
        return Ok(Action::await_change());
    }

    let mut created = false;
    // Make sure the new ReplicaSet exists, with the newest revision.
    let new_rs = match new_idx {
        Some(i) => {
            let rs = all[i].clone();
            if revision(&rs) <= max_old_revision {
                let patch = json!({"metadata": {"annotations": {REVISION: (max_old_revision + 1).to_string()}}});
                let updated = rs_api
                    .patch(
                        &rs.name_any(),
                        &PatchParams::default(),
                        &Patch::Merge(patch),
                    )
                    .await?;
                all[i] = updated.clone();
                updated
            } else {
                rs
            }
        }
        None => {
            let initial = if recreate {
                0
            } else {
                let (surge, _) = surge_and_unavailable(d, replicas);
                let current: i32 = all.iter().map(spec_replicas).sum();
                (replicas + surge - current).clamp(0, replicas)
            };
            let Some(rs) = create_new_rs(d, ctx, &rs_api, max_old_revision + 1, initial).await?
            else {
                // A hash collision: status.collisionCount was bumped; the next pass retries.
                return Ok(Action::requeue(Duration::from_millis(100)));
            };
            created = true;
            all.push(rs.clone());
            rs
        }
    };
    let new_name = new_rs.name_any();
    // The Deployment carries its current revision, like upstream.
    let new_revision = revision(&new_rs).to_string();
    if d.annotations().get(REVISION) != Some(&new_revision) {
        let api: Api<Deployment> = Api::namespaced(ctx.client.clone(), &ns);
        let patch = json!({"metadata": {"annotations": {REVISION: new_revision}}});
        api.patch(&d.name_any(), &PatchParams::default(), &Patch::Merge(patch))
            .await?;
    }

    let mut targets: BTreeMap<String, i32> = all
        .iter()
        .map(|rs| (rs.name_any(), spec_replicas(rs)))
        .collect();
    let olds: Vec<&ReplicaSet> = {
        let mut v: Vec<&ReplicaSet> = all.iter().filter(|rs| rs.name_any() != new_name).collect();
        v.sort_by_key(|rs| {
            rs.metadata
                .creation_timestamp
                .as_ref()
                .map(|t| t.0.as_second())
        });
        v
    };
    if recreate {
        let old_running: i32 = olds.iter().map(|rs| status_of(rs).0).sum();
        for rs in &olds {
            targets.insert(rs.name_any(), 0);
        }
        if old_running == 0 && olds.iter().all(|rs| spec_replicas(rs) == 0) {
            targets.insert(new_name.clone(), replicas);
        }
    } else {
        let (surge, unavailable) = surge_and_unavailable(d, replicas);
        // Scale the new ReplicaSet up within the surge budget.
        let new_spec = targets.get(&new_name).copied().unwrap_or(0);
        let new_target = if new_spec >= replicas {
            replicas
        } else {
            let current: i32 = targets.values().sum();
            let max_total = replicas + surge;
            if current >= max_total {
                new_spec
            } else {
                new_spec + (max_total - current).min(replicas - new_spec)
            }
        };
        targets.insert(new_name.clone(), new_target);
        // Scale old ReplicaSets down within the availability budget.
        let all_pods: i32 = targets.values().sum();
        let min_available = replicas - unavailable;
        let new_unavailable = new_target - status_of(&new_rs).2;
        let mut budget = all_pods - min_available - new_unavailable.max(0);
        // First the unhealthy replicas of old ReplicaSets: they cost no availability.
        for rs in &olds {
            if budget <= 0 {
                break;
            }
            let t = targets.get(&rs.name_any()).copied().unwrap_or(0);
            let unhealthy = (t - status_of(rs).2).max(0).min(t);
            let cut = unhealthy.min(budget);
            if cut > 0 {
                targets.insert(rs.name_any(), t - cut);
                budget -= cut;
            }
        }
        // Then available ones, oldest first, while availability stays above the minimum.
        let available: i32 = all.iter().map(|rs| status_of(rs).2).sum();
        let mut excess = (available - min_available).min(budget);
        for rs in &olds {
            if excess <= 0 {
                break;
            }
            let t = targets.get(&rs.name_any()).copied().unwrap_or(0);
            let cut = t.min(excess);
            if cut > 0 {
                targets.insert(rs.name_any(), t - cut);
                excess -= cut;
            }
        }
    }
    for rs in &all {
        let target = targets.get(&rs.name_any()).copied().unwrap_or(0);
        if target != spec_replicas(rs) {
            scale_replica_set(d, ctx, &rs_api, rs, target).await?;
        }
    }
    cleanup_history(d, &rs_api, &olds).await?;
    let recheck = update_status(d, ctx, &all, Some(&new_rs), created).await?;
    Ok(recheck.map_or_else(Action::await_change, Action::requeue))
}

/// Annotations a ReplicaSet inherits from its Deployment (upstream's
/// `copyDeploymentAnnotationsToReplicaSet`: e.g. `kubernetes.io/change-cause`, which
/// `kubectl rollout history` prints), plus its revision.
fn rs_annotations(d: &Deployment, revision: i64) -> BTreeMap<String, String> {
    const SKIP: &[&str] = &[
        "kubectl.kubernetes.io/last-applied-configuration",
        REVISION,
        "deployment.kubernetes.io/revision-history",
        "deployment.kubernetes.io/desired-replicas",
        "deployment.kubernetes.io/max-replicas",
    ];
    let mut out: BTreeMap<String, String> = d
        .annotations()
        .iter()
        .filter(|(k, _)| !SKIP.contains(&k.as_str()))
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect();
    out.insert(REVISION.into(), revision.to_string());
    let (desired, max) = replicas_annotations(d);
    out.insert(DESIRED_REPLICAS.into(), desired);
    out.insert(MAX_REPLICAS.into(), max);
    out
}

/// The values of [`DESIRED_REPLICAS`] and [`MAX_REPLICAS`] for `d` now (upstream's
/// `SetReplicasAnnotations` arguments).
fn replicas_annotations(d: &Deployment) -> (String, String) {
    let replicas = d.spec.as_ref().and_then(|s| s.replicas).unwrap_or(1);
    (replicas.to_string(), (replicas + max_surge(d)).to_string())
}

/// `maxSurge` as a count, zero unless the strategy is RollingUpdate (upstream's `MaxSurge`).
fn max_surge(d: &Deployment) -> i32 {
    let recreate = d
        .spec
        .as_ref()
        .and_then(|s| s.strategy.as_ref())
        .and_then(|s| s.type_.as_deref())
        == Some("Recreate");
    if recreate {
        return 0;
    }
    let replicas = d.spec.as_ref().and_then(|s| s.replicas).unwrap_or(1);
    surge_and_unavailable(d, replicas).0
}

/// Sets a ReplicaSet's size and stamps it with the Deployment's current
/// [`DESIRED_REPLICAS`] / [`MAX_REPLICAS`] (upstream's `scaleReplicaSet`); writes nothing when
/// both are already so. Returns the ReplicaSet as written.
async fn scale_replica_set(
    d: &Deployment,
    ctx: &Context,
    rs_api: &Api<ReplicaSet>,
    rs: &ReplicaSet,
    target: i32,
) -> Result<ReplicaSet, Error> {
    let (desired, max) = replicas_annotations(d);
    let from = spec_replicas(rs);
    let annotated = rs.annotations().get(DESIRED_REPLICAS) == Some(&desired)
        && rs.annotations().get(MAX_REPLICAS) == Some(&max);
    if from == target && annotated {
        return Ok(rs.clone());
    }
    let name = rs.name_any();
    let patch = json!({
        "metadata": {"annotations": {DESIRED_REPLICAS: desired, MAX_REPLICAS: max}},
        "spec": {"replicas": target},
    });
    let written = rs_api
        .patch(&name, &PatchParams::default(), &Patch::Merge(patch))
        .await?;
    if from != target {
        tracing::info!(replicaset = %name, from, to = target, "scaling ReplicaSet");
        let verb = if target > from { "up" } else { "down" };
        ctx.recorder.normal(
            d,
            "ScalingReplicaSet",
            format!("Scaled {verb} replica set {name} from {from} to {target}"),
        );
    }
    Ok(written)
}

fn created_at(rs: &ReplicaSet) -> (Option<i64>, String) {
    (
        rs.metadata
            .creation_timestamp
            .as_ref()
            .map(|t| t.0.as_millisecond()),
        rs.name_any(),
    )
}

/// The size each ReplicaSet should have after the Deployment was scaled (upstream's
/// `DeploymentController.scale`), as `(index into all, size)` for every ReplicaSet to write:
/// - one active ReplicaSet (or none: the newest) takes `spec.replicas`;
/// - a saturated new ReplicaSet leaves the old ones at zero;
/// - otherwise, for RollingUpdate, `spec.replicas + maxSurge` minus what the active
///   ReplicaSets hold is spread over them in proportion to their sizes
///   ([`proportion`]), largest first, and what rounding leaves over goes to the first.
fn scale(d: &Deployment, all: &[ReplicaSet], new_idx: Option<usize>) -> Vec<(usize, i32)> {
    let replicas = d.spec.as_ref().and_then(|s| s.replicas).unwrap_or(1);
    let active: Vec<usize> = (0..all.len())
        .filter(|i| spec_replicas(&all[*i]) > 0)
        .collect();
    match active[..] {
        [] => {
            // The newest: the new ReplicaSet, else the most recently created old one.
            let newest = new_idx.or_else(|| (0..all.len()).max_by_key(|i| created_at(&all[*i])));
            return newest.map(|i| vec![(i, replicas)]).unwrap_or_default();
        }
        [only] => return vec![(only, replicas)],
        _ => {}
    }
    if let Some(n) = new_idx {
        let new = &all[n];
        let saturated = spec_replicas(new) == replicas
            && new.annotations().get(DESIRED_REPLICAS) == Some(&replicas.to_string())
            && status_of(new).2 == replicas;
        if saturated {
            return active
                .into_iter()
                .filter(|i| *i != n)
                .map(|i| (i, 0))
                .collect();
        }
    }
    let recreate = d
        .spec
        .as_ref()
        .and_then(|s| s.strategy.as_ref())
        .and_then(|s| s.type_.as_deref())
        == Some("Recreate");
    if recreate {
        return Vec::new();
    }
    let held: i32 = active.iter().map(|i| spec_replicas(&all[*i])).sum();
    let allowed_size = if replicas > 0 {
        replicas + max_surge(d)
    } else {
        0
    };
    let to_add = allowed_size - held;
    let mut order = active;
    // Largest first; among equals the newer first when growing, the older when shrinking.
    order.sort_by(|a, b| {
        let (ra, rb) = (&all[*a], &all[*b]);
        spec_replicas(rb).cmp(&spec_replicas(ra)).then_with(|| {
            if to_add > 0 {
                created_at(rb).cmp(&created_at(ra))
            } else {
                created_at(ra).cmp(&created_at(rb))
            }
        })
    });
    let mut added = 0;
    let mut sizes: Vec<(usize, i32)> = Vec::new();
    for i in &order {
        let rs = &all[*i];
        let share = if to_add != 0 {
            proportion(rs, d, to_add, added)
        } else {
            0
        };
        added += share;
        sizes.push((*i, spec_replicas(rs) + share));
    }
    if let Some(first) = sizes.first_mut() {
        first.1 = (first.1 + to_add - added).max(0);
    }
    sizes
}

/// How many replicas `rs` gains (or loses) of the `to_add` being spread, `added` of which are
/// already given out (upstream's `GetProportion`): its size scaled from the
/// [`MAX_REPLICAS`] it was sized for to the Deployment's new maximum, never more than what is
/// left to give.
fn proportion(rs: &ReplicaSet, d: &Deployment, to_add: i32, added: i32) -> i32 {
    let size = spec_replicas(rs);
    if size == 0 || to_add == 0 || to_add == added {
        return 0;
    }
    let replicas = d.spec.as_ref().and_then(|s| s.replicas).unwrap_or(1);
    let fraction = if replicas == 0 {
        -size
    } else {
        let max_now = replicas + max_surge(d);
        let before = rs
            .annotations()
            .get(MAX_REPLICAS)
            .and_then(|v| v.parse::<i32>().ok())
            .filter(|m| *m != 0)
            // Without the annotation (edited away), the Deployment's current size; the
            // min/max below still keep the total within bounds.
            .unwrap_or_else(|| d.status.as_ref().and_then(|s| s.replicas).unwrap_or(0));
        if before == 0 {
            return 0;
        }
        let scaled = (f64::from(size) * f64::from(max_now) / f64::from(before)).round();
        // The product of two i32 over a positive i32 fits comfortably in f64 and, rounded,
        // in i64; clamp into i32 rather than wrap.
        let scaled = i32::try_from(scaled as i64).unwrap_or(i32::MAX);
        scaled - size
    };
    let allowed = to_add - added;
    if to_add > 0 {
        fraction.min(allowed)
    } else {
        fraction.max(allowed)
    }
}

/// Creates `<deployment>-<hash>`; `None` after a hash collision with a foreign ReplicaSet.
async fn create_new_rs(
    d: &Deployment,
    ctx: &Context,
    rs_api: &Api<ReplicaSet>,
    revision: i64,
    replicas: i32,
) -> Result<Option<ReplicaSet>, Error> {
    let Some(spec) = d.spec.as_ref() else {
        return Ok(None);
    };
    let collision_count = d.status.as_ref().and_then(|s| s.collision_count);
    let hash = compute_hash(&to_value(&spec.template), collision_count);
    let name = format!("{}-{hash}", d.name_any());
    let mut template = spec.template.clone();
    let tmeta = template.metadata.get_or_insert_with(Default::default);
    let mut labels = tmeta.labels.clone().unwrap_or_default();
    labels.insert(POD_TEMPLATE_HASH.into(), hash.clone());
    tmeta.labels = Some(labels.clone());
    let mut selector = spec.selector.clone();
    selector
        .match_labels
        .get_or_insert_with(Default::default)
        .insert(POD_TEMPLATE_HASH.into(), hash.clone());
    let rs = ReplicaSet {
        metadata: ObjectMeta {
            name: Some(name.clone()),
            namespace: d.namespace(),
            labels: Some(labels),
            annotations: Some(rs_annotations(d, revision)),
            owner_references: Some(vec![controller_ref(d)]),
            ..Default::default()
        },
        spec: Some(ReplicaSetSpec {
            replicas: Some(replicas),
            min_ready_seconds: spec.min_ready_seconds,
            selector,
            template: Some(template),
        }),
        status: None,
    };
    match rs_api.create(&PostParams::default(), &rs).await {
        Ok(rs) => {
            tracing::info!(replicaset = %name, replicas, "created new ReplicaSet");
            ctx.recorder.normal(
                d,
                "ScalingReplicaSet",
                format!("Scaled up replica set {name} from 0 to {replicas}"),
            );
            Ok(Some(rs))
        }
        Err(kube::Error::Api(s)) if s.code == 409 => {
            let existing = rs_api.get(&name).await?;
            let ours =
                util::controller_of(&existing).is_some_and(|r| Some(&r.uid) == d.uid().as_ref());
            let same =
                template_without_hash(existing.spec.as_ref().and_then(|s| s.template.as_ref()))
                    == template_without_hash(Some(&spec.template));
            if ours && same {
                return Ok(Some(existing));
            }
            let api: Api<Deployment> =
                Api::namespaced(ctx.client.clone(), &d.namespace().unwrap_or_default());
            let patch = json!({"status": {"collisionCount": collision_count.unwrap_or(0) + 1}});
            api.patch_status(&d.name_any(), &PatchParams::default(), &Patch::Merge(patch))
                .await?;
            Ok(None)
        }
        Err(e) => Err(e.into()),
    }
}

/// Deletes the oldest fully scaled-down ReplicaSets beyond `revisionHistoryLimit`.
async fn cleanup_history(
    d: &Deployment,
    rs_api: &Api<ReplicaSet>,
    olds: &[&ReplicaSet],
) -> Result<(), Error> {
    let limit = d
        .spec
        .as_ref()
        .and_then(|s| s.revision_history_limit)
        .unwrap_or(10);
    let mut idle: Vec<&&ReplicaSet> = olds
        .iter()
        .filter(|rs| {
            spec_replicas(rs) == 0
                && status_of(rs).0 == 0
                && rs.metadata.deletion_timestamp.is_none()
        })
        .collect();
    let excess = idle
        .len()
        .saturating_sub(usize::try_from(limit.max(0)).unwrap_or(0));
    idle.sort_by_key(|rs| revision(rs));
    for rs in idle.into_iter().take(excess) {
        tracing::info!(replicaset = %rs.name_any(), "deleting old ReplicaSet beyond revisionHistoryLimit");
        match rs_api
            .delete(&rs.name_any(), &DeleteParams::background())
            .await
        {
            Ok(_) => {}
            Err(kube::Error::Api(s)) if s.code == 404 => {}
            Err(e) => return Err(e.into()),
        }
    }
    Ok(())
}

fn condition(
    old: Option<&DeploymentStatus>,
    type_: &str,
    status: &str,
    reason: &str,
    message: String,
) -> DeploymentCondition {
    let now = util::now();
    let prev = old
        .and_then(|s| s.conditions.as_ref())
        .and_then(|cs| cs.iter().find(|c| c.type_ == type_));
    let (transition, update) = match prev {
        Some(p) if p.status == status && p.reason.as_deref() == Some(reason) => {
            (p.last_transition_time.clone(), p.last_update_time.clone())
        }
        Some(p) if p.status == status => (p.last_transition_time.clone(), Some(now.clone())),
        _ => (Some(now.clone()), Some(now)),
    };
    DeploymentCondition {
        type_: type_.into(),
        status: status.into(),
        reason: Some(reason.into()),
        message: Some(message),
        last_transition_time: transition,
        last_update_time: update,
    }
}

async fn update_status(
    d: &Deployment,
    ctx: &Context,
    all: &[ReplicaSet],
    new_rs: Option<&ReplicaSet>,
    created: bool,
) -> Result<Option<Duration>, Error> {
    let spec = d.spec.as_ref();
    let replicas = spec.and_then(|s| s.replicas).unwrap_or(1);
    let (_, unavailable_budget) = surge_and_unavailable(d, replicas);
    let actual: i32 = all.iter().map(|rs| status_of(rs).0).sum();
    let ready: i32 = all.iter().map(|rs| status_of(rs).1).sum();
    let available: i32 = all.iter().map(|rs| status_of(rs).2).sum();
    let total_spec: i32 = all.iter().map(spec_replicas).sum();
    let updated = new_rs.map_or(0, |rs| status_of(rs).0);
    let old = d.status.as_ref();
    let available_cond = if available >= replicas - unavailable_budget {
        condition(
            old,
            "Available",
            "True",
            "MinimumReplicasAvailable",
            "Deployment has minimum availability.".into(),
        )
    } else {
        condition(
            old,
            "Available",
            "False",
            "MinimumReplicasUnavailable",
            "Deployment does not have minimum availability.".into(),
        )
    };
    let new_name = new_rs.map(|rs| rs.name_any()).unwrap_or_default();
    let complete = updated == replicas && available == replicas && actual == replicas;
    let deadline = spec
        .and_then(|s| s.progress_deadline_seconds)
        .unwrap_or(600);
    let mut recheck = None;
    let progressing = if spec.and_then(|s| s.paused).unwrap_or(false) {
        condition(
            old,
            "Progressing",
            "Unknown",
            "DeploymentPaused",
            "Deployment is paused".into(),
        )
    } else if complete && new_rs.is_some() {
        condition(
            old,
            "Progressing",
            "True",
            "NewReplicaSetAvailable",
            format!("ReplicaSet \"{new_name}\" has successfully progressed."),
        )
    } else if created {
        recheck = Some(Duration::from_secs(
            u64::try_from(deadline.max(1)).unwrap_or(1),
        ));
        condition(
            old,
            "Progressing",
            "True",
            "NewReplicaSetCreated",
            format!("Created new replica set \"{new_name}\""),
        )
    } else {
        // Progress is any change in the counts; without any for progressDeadlineSeconds the
        // rollout is reported stuck, which makes `kubectl rollout status` fail.
        // The clock starts when a rollout starts: no earlier in-progress condition means
        // this pass is the first of this rollout.
        let z = |v: Option<i32>| v.unwrap_or(0);
        let prev = old
            .and_then(|s| s.conditions.as_ref())
            .and_then(|cs| cs.iter().find(|c| c.type_ == "Progressing"))
            .filter(|c| {
                matches!(
                    c.reason.as_deref(),
                    Some("ReplicaSetUpdated" | "NewReplicaSetCreated" | "ProgressDeadlineExceeded")
                )
            });
        let since = prev
            .and_then(|c| c.last_update_time.as_ref())
            .map(|t| t.0.as_second());
        let progressed = since.is_none()
            || old.is_none_or(|o| {
                z(o.updated_replicas) != updated
                    || z(o.available_replicas) != available
                    || z(o.replicas) != actual
            });
        let since = since.unwrap_or(0);
        let waited = util::now().0.as_second() - since;
        if !progressed && waited >= i64::from(deadline) {
            condition(
                old,
                "Progressing",
                "False",
                "ProgressDeadlineExceeded",
                format!("ReplicaSet \"{new_name}\" has timed out progressing."),
            )
        } else {
            let mut c = condition(
                old,
                "Progressing",
                "True",
                "ReplicaSetUpdated",
                format!("ReplicaSet \"{new_name}\" is progressing."),
            );
            let left = if progressed {
                c.last_update_time = Some(util::now());
                i64::from(deadline)
            } else {
                i64::from(deadline) - waited
            };
            recheck = Some(Duration::from_secs(u64::try_from(left.max(1)).unwrap_or(1)));
            c
        }
    };
    let status = DeploymentStatus {
        observed_generation: d.metadata.generation,
        replicas: Some(actual),
        updated_replicas: Some(updated),
        ready_replicas: Some(ready),
        available_replicas: Some(available),
        unavailable_replicas: Some((total_spec - available).max(0)),
        conditions: Some(vec![available_cond, progressing]),
        collision_count: old.and_then(|s| s.collision_count),
    };
    if same_status(old, &status) {
        return Ok(recheck);
    }
    let api: Api<Deployment> =
        Api::namespaced(ctx.client.clone(), &d.namespace().unwrap_or_default());
    api.patch_status(
        &d.name_any(),
        &PatchParams::default(),
        &Patch::Merge(json!({"status": to_value(&status)})),
    )
    .await?;
    Ok(recheck)
}

/// Whether the stored status already says what `new` says (absent counts equal zero, and
/// condition timestamps are carried over by [`condition`]).
fn same_status(old: Option<&DeploymentStatus>, new: &DeploymentStatus) -> bool {
    let Some(old) = old else {
        return false;
    };
    let z = |v: Option<i32>| v.unwrap_or(0);
    let conds = |s: &DeploymentStatus| {
        s.conditions
            .iter()
            .flatten()
            .map(|c| {
                (
                    c.type_.clone(),
                    c.status.clone(),
                    c.reason.clone(),
                    c.message.clone(),
                )
            })
            .collect::<Vec<_>>()
    };
    old.observed_generation == new.observed_generation
        && z(old.replicas) == z(new.replicas)
        && z(old.updated_replicas) == z(new.updated_replicas)
        && z(old.ready_replicas) == z(new.ready_replicas)
        && z(old.available_replicas) == z(new.available_replicas)
        && z(old.unavailable_replicas) == z(new.unavailable_replicas)
        && conds(old) == conds(new)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn safe_encode_matches_upstream_alphabet() {
        // rand.SafeEncodeString("12345") in Go.
        assert_eq!(safe_encode("1234567890"), "56789bcdf4");
        assert!(safe_encode("4294967295")
            .chars()
            .all(|c| "bcdfghjklmnpqrstvwxz2456789".contains(c)));
    }

    #[test]
    fn fnv32a_matches_go() {
        let mut h = Fnv32a::new();
        h.write(b"Hello world");
        assert_eq!(h.0, 1_498_229_191);
    }

    fn rs(name: &str, created: i64, replicas: i32, max: Option<i32>) -> ReplicaSet {
        let mut annotations = serde_json::Map::new();
        if let Some(m) = max {
            annotations.insert(MAX_REPLICAS.into(), json!(m.to_string()));
        }
        serde_json::from_value(json!({
            "metadata": {"name": name, "annotations": annotations,
                         "creationTimestamp": k8s_openapi::jiff::Timestamp::from_second(created).expect("t").to_string()},
            "spec": {"replicas": replicas, "selector": {}},
        }))
        .expect("rs")
    }

    fn deployment(replicas: i32, surge: i32) -> Deployment {
        serde_json::from_value(json!({
            "spec": {"replicas": replicas, "selector": {}, "template": {},
                     "strategy": {"type": "RollingUpdate",
                                  "rollingUpdate": {"maxSurge": surge, "maxUnavailable": 1}}},
        }))
        .expect("deployment")
    }

    fn sizes(d: &Deployment, all: &[ReplicaSet], new_idx: Option<usize>) -> Vec<i32> {
        let mut out: Vec<i32> = all.iter().map(spec_replicas).collect();
        for (i, n) in scale(d, all, new_idx) {
            out[i] = n;
        }
        out
    }

    /// Upstream's examples: 6 + 4 of 10 scaled to 20 is 12 + 8 and back to 5 is 3 + 2; what
    /// rounding leaves over goes to the largest; one active ReplicaSet takes everything.
    #[test]
    fn scaling_mid_rollout_is_proportional() {
        let all = [rs("old", 1, 6, Some(10)), rs("new", 2, 4, Some(10))];
        assert_eq!(sizes(&deployment(20, 0), &all, Some(1)), [12, 8]);
        let all = [rs("old", 1, 12, Some(20)), rs("new", 2, 8, Some(20))];
        assert_eq!(sizes(&deployment(5, 0), &all, Some(1)), [3, 2]);
        // 10 -> 11 with maxSurge 1 (max 11 -> 12, two to add): 6*12/11 = 6.5 -> +1,
        // 4*12/11 = 4.4 -> +0; rounding's leftover goes to the largest.
        let all = [rs("old", 1, 6, Some(11)), rs("new", 2, 4, Some(11))];
        assert_eq!(sizes(&deployment(11, 1), &all, Some(1)), [8, 4]);
        let all = [rs("old", 1, 0, Some(10)), rs("new", 2, 10, Some(10))];
        assert_eq!(sizes(&deployment(3, 0), &all, Some(1)), [0, 3]);
    }

    #[test]
    fn percentages_round_like_upstream() {
        let p = IntOrString::String("25%".into());
        assert_eq!(resolve(Some(&p), 3, true), 1);
        assert_eq!(resolve(Some(&p), 3, false), 0);
        assert_eq!(resolve(Some(&IntOrString::Int(2)), 3, false), 2);
    }
}
