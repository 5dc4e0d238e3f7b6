//! The StatefulSet controller: pods with stable identities `<set>-<ordinal>`, created, deleted
//! and updated in ordinal order (upstream's `StatefulSetControl`).
//!
//! Each pod gets its hostname and the set's `serviceName` as subdomain (its DNS identity),
//! the `statefulset.kubernetes.io/pod-name` and `apps.kubernetes.io/pod-index` labels, and
//! one PersistentVolumeClaim per `volumeClaimTemplates` entry named
//! `<claim>-<set>-<ordinal>`, created before the pod and never deleted (the Retain policy;
//! nothing provisions volumes here). Under `OrderedReady` a pass makes at most one change and
//! only when every lower ordinal is Running and Ready: pods appear 0, 1, 2… and go away
//! highest first. `Parallel` creates and deletes all at once. A rolling update replaces pods
//! from the highest ordinal down to `partition`, one at a time, each only once the ones
//! before it are healthy; `OnDelete` leaves replacement to the user.
//!
//! Pod names are deterministic, so unlike the ReplicaSet controller no expectations are
//! needed: a create that a lagging store makes again fails with AlreadyExists, and a pass
//! that sees a stale pod only waits. Which revision a pod runs is its
//! `controller-revision-hash` label, the name of a ControllerRevision ([`super::history`]).

use std::collections::{BTreeMap, HashSet};
use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use k8s_openapi::api::apps::v1::{StatefulSet, StatefulSetStatus};
use k8s_openapi::api::core::v1::{
    PersistentVolumeClaim, PersistentVolumeClaimVolumeSource, Pod, PodTemplateSpec, Volume,
};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, OwnerReference};
use kube::api::{DeleteParams, Patch, PatchParams, PostParams};
use kube::runtime::controller::{Action, Config as ControllerConfig, Controller};
use kube::runtime::reflector::Store;
use kube::{Api, Client, ResourceExt};
use serde_json::json;

use crate::controllers::history::{self, CONTROLLER_REVISION_HASH};
use crate::controllers::ownership;
use crate::controllers::replicaset::controller_ref;
use crate::informers::{to_value, Informers};
use crate::metrics::Metrics;
use crate::util::{self, Backoff, Recorder};
use crate::Error;

/// The controller's name in `--controllers` and metrics.
pub const NAME: &str = "statefulset";

/// Upstream's `--concurrent-statefulset-syncs` default.
const CONCURRENCY: u16 = 5;

/// The label naming the pod (upstream's `StatefulSetPodNameLabel`), for per-pod Services.
pub const POD_NAME_LABEL: &str = "statefulset.kubernetes.io/pod-name";
/// The label carrying the ordinal (upstream's `PodIndexLabel`).
pub const POD_INDEX_LABEL: &str = "apps.kubernetes.io/pod-index";

/// What the StatefulSet controller's reconciles share.
pub struct Context {
    client: Client,
    pods: Store<Pod>,
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
    let sts_trigger = informers.statefulsets.subscribe()?;
    let pod_trigger = informers.pods.subscribe()?;
    let orphan_trigger = informers.pods.subscribe()?;
    let sts_store = informers.statefulsets.store();
    let ctx = Arc::new(Context {
        recorder: Recorder::new(&client, "statefulset-controller"),
        client,
        pods: informers.pods.store(),
        statefulsets: sts_store.clone(),
        backoff: Backoff::default(),
        metrics,
    });
    let orphan_store = sts_store.clone();
    Some(
        Controller::for_shared_stream(sts_trigger, sts_store)
            .with_config(ControllerConfig::default().concurrency(CONCURRENCY))
            .owns_shared_stream(pod_trigger)
            .owns_shared_stream(informers.pods.deletions())
            // A pod nobody controls may be adopted by any StatefulSet whose selector matches.
            .watches_shared_stream(
                orphan_trigger,
                ownership::orphan_owners(orphan_store, |s: &StatefulSet| {
                    s.spec.as_ref().map(|s| &s.selector)
                }),
            )
            .run(reconcile, error_policy, ctx)
            .for_each(|_| futures::future::ready(()))
            .boxed(),
    )
}

fn error_policy(set: Arc<StatefulSet>, error: &Error, ctx: Arc<Context>) -> Action {
    util::retry_after_error(NAME, set.as_ref(), error, &ctx.metrics, &ctx.backoff)
}

async fn reconcile(set: Arc<StatefulSet>, ctx: Arc<Context>) -> Result<Action, Error> {
    let key = util::key_of(set.as_ref());
    util::reconciled(
        NAME,
        &key,
        &ctx.metrics,
        &ctx.backoff,
        sync(&set, &ctx, &key),
    )
    .await
}

/// The ordinal of `pod` if it is named `<set>-<ordinal>`.
pub fn ordinal_of(set_name: &str, pod_name: &str) -> Option<i32> {
    let ord = pod_name.strip_prefix(set_name)?.strip_prefix('-')?;
    if ord.starts_with('+') || (ord.len() > 1 && ord.starts_with('0')) {
        return None;
    }
    ord.parse().ok().filter(|o: &i32| *o >= 0)
}

fn revision_of(pod: &Pod) -> &str {
    pod.labels()
        .get(CONTROLLER_REVISION_HASH)
        .map_or("", String::as_str)
}

fn terminating(pod: &Pod) -> bool {
    pod.metadata.deletion_timestamp.is_some()
}

fn finished(pod: &Pod) -> bool {
    matches!(
        pod.status.as_ref().and_then(|s| s.phase.as_deref()),
        Some("Succeeded" | "Failed")
    )
}

/// Running and Ready and not going away (upstream's `isHealthy`).
fn healthy(pod: &Pod) -> bool {
    let running = pod.status.as_ref().and_then(|s| s.phase.as_deref()) == Some("Running");
    running && util::pod_is_ready(pod) && !terminating(pod)
}

/// The claim name for template `claim` of `set`'s pod `ordinal`.
pub fn claim_name(claim: &str, set: &str, ordinal: i32) -> String {
    format!("{claim}-{set}-{ordinal}")
}

/// Upstream's `newVersionedStatefulSetPod`: `template` with the pod's identity and storage.
fn new_pod(set: &StatefulSet, template: &PodTemplateSpec, ordinal: i32, revision: &str) -> Pod {
    let name = format!("{}-{ordinal}", set.name_any());
    let meta = template.metadata.clone().unwrap_or_default();
    let mut labels = meta.labels.unwrap_or_default();
    labels.insert(POD_NAME_LABEL.into(), name.clone());
    labels.insert(POD_INDEX_LABEL.into(), ordinal.to_string());
    labels.insert(CONTROLLER_REVISION_HASH.into(), revision.into());
    let mut spec = template.spec.clone().unwrap_or_default();
    spec.hostname = Some(name.clone());
    spec.subdomain = set
        .spec
        .as_ref()
        .and_then(|s| s.service_name.clone())
        .filter(|s| !s.is_empty());
    let claims = set
        .spec
        .as_ref()
        .and_then(|s| s.volume_claim_templates.as_deref())
        .unwrap_or_default();
    let volumes = spec.volumes.get_or_insert_with(Vec::new);
    for claim in claims {
        let cname = claim.name_any();
        volumes.retain(|v| v.name != cname);
        volumes.push(Volume {
            name: cname.clone(),
            persistent_volume_claim: Some(PersistentVolumeClaimVolumeSource {
                claim_name: claim_name(&cname, &set.name_any(), ordinal),
                read_only: None,
            }),
            ..Default::default()
        });
    }
    if volumes.is_empty() {
        spec.volumes = None;
    }
    Pod {
        metadata: ObjectMeta {
            name: Some(name),
            namespace: set.namespace(),
            labels: Some(labels),
            annotations: meta.annotations,
            finalizers: meta.finalizers,
            owner_references: Some(vec![controller_ref(set)]),
            ..Default::default()
        },
        spec: Some(spec),
        status: None,
    }
}

async fn sync(set: &StatefulSet, ctx: &Context, key: &str) -> Result<Action, Error> {
    ctx.pods.wait_until_ready().await?;
    ctx.statefulsets.wait_until_ready().await?;
    let Some(spec) = set.spec.as_ref() else {
        return Ok(Action::await_change());
    };
    if util::selector_is_empty(&spec.selector) {
        return Err(Error::Invalid(format!(
            "StatefulSet {key} has an empty selector"
        )));
    }
    let ns = set.namespace().unwrap_or_default();
    let name = set.name_any();
    let old_status = set.status.clone().unwrap_or_default();
    let collision = old_status.collision_count.unwrap_or(0);
    let Some(revisions) =
        history::sync(&ctx.client, set, &spec.selector, &spec.template, collision).await?
    else {
        patch_status(ctx, set, json!({ "collisionCount": collision + 1 })).await?;
        return Ok(Action::requeue(Duration::from_millis(10)));
    };
    let update_rev = revisions.current.name_any();
    let current = old_status
        .current_revision
        .as_deref()
        .and_then(|r| revisions.named(r))
        .unwrap_or(&revisions.current)
        .clone();
    let current_rev = current.name_any();
    let current_template = history::template_of(&current).unwrap_or_else(|| spec.template.clone());

    let mut pods: BTreeMap<i32, Arc<Pod>> = BTreeMap::new();
    let member = |p: &Pod| ordinal_of(&name, &p.name_any()).is_some();
    let all = ctx.pods.state();
    for pod in ownership::claim_pods(&ctx.client, set, &spec.selector, all, member).await? {
        if let Some(ord) = ordinal_of(&name, &pod.name_any()) {
            pods.insert(ord, pod);
        }
    }
    let replicas = spec.replicas.unwrap_or(1).max(0);
    let strategy = spec
        .update_strategy
        .as_ref()
        .and_then(|s| s.type_.as_deref())
        .unwrap_or("RollingUpdate");
    let partition = spec
        .update_strategy
        .as_ref()
        .and_then(|s| s.rolling_update.as_ref())
        .map(|r| r.partition.unwrap_or(0));
    // `spec.ordinals.start`: the set's ordinals are `start..start + replicas`.
    let start = spec
        .ordinals
        .as_ref()
        .and_then(|o| o.start)
        .unwrap_or(0)
        .max(0);

    // Status from the pods as this pass found them; every change below triggers another.
    let min_ready = spec.min_ready_seconds.unwrap_or(0);
    let now = util::now();
    let mut st = StatefulSetStatus {
        observed_generation: set.metadata.generation,
        collision_count: old_status.collision_count,
        conditions: old_status.conditions.clone(),
        current_revision: Some(current_rev.clone()),
        update_revision: Some(update_rev.clone()),
        // `Some(0)`, not absent: the status is written as a merge patch, where an absent
        // count would leave the previous one in place (e.g. a stale "all updated").
        ready_replicas: Some(0),
        available_replicas: Some(0),
        current_replicas: Some(0),
        updated_replicas: Some(0),
        ..Default::default()
    };
    let mut requeue: Option<Duration> = None;
    for pod in pods.values() {
        st.replicas += 1;
        if healthy(pod) {
            *st.ready_replicas.get_or_insert(0) += 1;
        }
        let (avail, wait) = util::pod_available(pod, min_ready, &now);
        if avail && !terminating(pod) {
            *st.available_replicas.get_or_insert(0) += 1;
        }
        if let Some(w) = wait {
            requeue = Some(requeue.map_or(w, |r| r.min(w)));
        }
        if !terminating(pod) {
            if revision_of(pod) == current_rev {
                *st.current_replicas.get_or_insert(0) += 1;
            }
            if revision_of(pod) == update_rev {
                *st.updated_replicas.get_or_insert(0) += 1;
            }
        }
    }
    // Upstream's `completeRollingUpdate`: once every pod runs the update revision and is
    // ready, it becomes the current one.
    if strategy == "RollingUpdate"
        && st.replicas == replicas
        && st.updated_replicas.unwrap_or(0) == st.replicas
        && st.ready_replicas.unwrap_or(0) == st.replicas
    {
        st.current_revision = Some(update_rev.clone());
        st.current_replicas = st.updated_replicas;
    }

    if set.metadata.deletion_timestamp.is_none() {
        let target = Target {
            set,
            ctx,
            ns: &ns,
            current_rev: &current_rev,
            current_template: &current_template,
            update_rev: &update_rev,
        };
        target
            .update(
                &pods,
                start,
                replicas,
                strategy,
                partition,
                current_rev != update_rev,
            )
            .await?;
    }

    if !same_status(set.status.as_ref(), &st) {
        patch_status(ctx, set, to_value(&st)).await?;
    }
    let mut live: HashSet<String> = pods.values().map(|p| revision_of(p).to_string()).collect();
    live.insert(current_rev);
    live.insert(update_rev);
    history::truncate(
        &ctx.client,
        &revisions,
        &live,
        spec.revision_history_limit.unwrap_or(10),
    )
    .await?;
    Ok(requeue.map_or_else(Action::await_change, Action::requeue))
}

/// One pass's view of a set: what to create pods from and how to record it.
struct Target<'a> {
    set: &'a StatefulSet,
    ctx: &'a Context,
    ns: &'a str,
    current_rev: &'a str,
    current_template: &'a PodTemplateSpec,
    update_rev: &'a str,
}

impl Target<'_> {
    /// Upstream's `updateStatefulSet` after status: fill the replicas in order, remove the
    /// condemned highest first, then roll pods to the update revision. Returns when a
    /// monotonic (`OrderedReady`) set must wait for its last change to settle.
    async fn update(
        &self,
        pods: &BTreeMap<i32, Arc<Pod>>,
        start: i32,
        replicas: i32,
        strategy: &str,
        partition: Option<i32>,
        rolling: bool,
    ) -> Result<(), Error> {
        let spec = self.set.spec.as_ref();
        let monotonic = spec.and_then(|s| s.pod_management_policy.as_deref()) != Some("Parallel");
        let min_ready = spec.and_then(|s| s.min_ready_seconds).unwrap_or(0);
        let now = util::now();
        let update_template = spec.map(|s| s.template.clone()).unwrap_or_default();
        let current_replicas = self
            .set
            .status
            .as_ref()
            .and_then(|s| s.current_replicas)
            .unwrap_or(0);
        let mut first_unhealthy: Option<i32> = None;
        let end = start.saturating_add(replicas);
        for ord in start..end {
            match pods.get(&ord) {
                None => {
                    // Mid-update, ordinals below the partition (or, without rollingUpdate
                    // parameters, below the current count) are recreated at the current
                    // revision, as upstream's `newVersionedStatefulSetPod`; OnDelete sets
                    // create new pods at the update revision.
                    let old = rolling
                        && match partition {
                            Some(p) => ord < start.saturating_add(p),
                            None => {
                                strategy == "RollingUpdate"
                                    && ord < start.saturating_add(current_replicas)
                            }
                        };
                    let (template, rev) = if old {
                        (self.current_template, self.current_rev)
                    } else {
                        (&update_template, self.update_rev)
                    };
                    self.create(ord, template, rev).await?;
                    if monotonic {
                        return Ok(());
                    }
                    first_unhealthy.get_or_insert(ord);
                }
                Some(pod) if finished(pod) && !terminating(pod) => {
                    // A failed or finished pod is replaced under the same identity.
                    self.delete(pod).await?;
                    if monotonic {
                        return Ok(());
                    }
                    first_unhealthy.get_or_insert(ord);
                }
                Some(pod) if !healthy(pod) => {
                    if monotonic {
                        tracing::debug!(pod = %pod.name_any(), "waiting for pod to be Running and Ready");
                        return Ok(());
                    }
                    first_unhealthy.get_or_insert(ord);
                }
                // Upstream's `isRunningAndAvailable`: a successor waits out `minReadySeconds`
                // too (the status pass requeues for the moment the pod becomes available).
                Some(pod) if monotonic && !util::pod_available(pod, min_ready, &now).0 => {
                    return Ok(());
                }
                Some(_) => {}
            }
        }
        // Condemned: every ordinal outside the window, highest first. Upstream's first
        // unhealthy pod spans the replicas, then the condemned in this order.
        let condemned = pods.iter().filter(|(o, _)| **o < start || **o >= end);
        if first_unhealthy.is_none() {
            first_unhealthy = condemned
                .clone()
                .rev()
                .find(|(_, p)| !healthy(p))
                .map(|(o, _)| *o);
        }
        for (ord, pod) in condemned.rev() {
            if terminating(pod) {
                if monotonic {
                    return Ok(());
                }
                continue;
            }
            if monotonic && first_unhealthy.is_some_and(|u| u != *ord) {
                return Ok(());
            }
            self.condemn_claims(pod, *ord).await?;
            self.delete(pod).await?;
            if monotonic {
                return Ok(());
            }
        }
        if strategy != "RollingUpdate" {
            return Ok(());
        }
        let update_min = start.saturating_add(partition.unwrap_or(0).max(0));
        for ord in (update_min..end).rev() {
            let Some(pod) = pods.get(&ord) else {
                return Ok(());
            };
            if revision_of(pod) != self.update_rev && !terminating(pod) {
                self.delete(pod).await?;
                return Ok(());
            }
            if !healthy(pod) {
                return Ok(());
            }
        }
        Ok(())
    }

    /// Creates the pod's claims (if missing), then the pod; AlreadyExists means a lagging
    /// store, not an error.
    async fn create(
        &self,
        ordinal: i32,
        template: &PodTemplateSpec,
        rev: &str,
    ) -> Result<(), Error> {
        let set = self.set;
        let pod = new_pod(set, template, ordinal, rev);
        let pod_name = pod.name_any();
        let claims_api: Api<PersistentVolumeClaim> =
            Api::namespaced(self.ctx.client.clone(), self.ns);
        let templates = set
            .spec
            .as_ref()
            .and_then(|s| s.volume_claim_templates.clone())
            .unwrap_or_default();
        for claim in templates {
            let cname = claim_name(&claim.name_any(), &set.name_any(), ordinal);
            if let Some(existing) = claims_api.get_opt(&cname).await? {
                self.reclaim(&claims_api, &existing).await?;
                continue;
            }
            let mut labels = claim.metadata.labels.clone().unwrap_or_default();
            let selector = set
                .spec
                .as_ref()
                .and_then(|s| s.selector.match_labels.clone());
            labels.extend(selector.unwrap_or_default());
            // `whenDeleted: Delete`: the set owns its claims, so the garbage collector
            // removes them with it.
            let owners = (self.retention().0 == "Delete").then(|| {
                vec![OwnerReference {
                    controller: None,
                    block_owner_deletion: None,
                    ..controller_ref(set)
                }]
            });
            let pvc = PersistentVolumeClaim {
                metadata: ObjectMeta {
                    name: Some(cname.clone()),
                    namespace: Some(self.ns.to_string()),
                    labels: Some(labels),
                    annotations: claim.metadata.annotations.clone(),
                    owner_references: owners,
                    ..Default::default()
                },
                spec: claim.spec.clone(),
                status: None,
            };
            match claims_api.create(&PostParams::default(), &pvc).await {
                Ok(_) => {
                    tracing::info!(claim = %cname, "created claim");
                    let msg = format!(
                        "create Claim {cname} Pod {pod_name} in StatefulSet {} success",
                        set.name_any()
                    );
                    self.ctx.recorder.normal(set, "SuccessfulCreate", msg);
                }
                Err(kube::Error::Api(s)) if s.code == 409 => {}
                Err(e) => return Err(e.into()),
            }
        }
        let api: Api<Pod> = Api::namespaced(self.ctx.client.clone(), self.ns);
        match api.create(&PostParams::default(), &pod).await {
            Ok(_) => {
                tracing::info!(pod = %pod_name, revision = rev, "created pod");
                let msg = format!(
                    "create Pod {pod_name} in StatefulSet {} successful",
                    set.name_any()
                );
                self.ctx.recorder.normal(set, "SuccessfulCreate", msg);
                Ok(())
            }
            Err(kube::Error::Api(s)) if s.code == 409 => Ok(()),
            Err(e) => Err(e.into()),
        }
    }

    /// `persistentVolumeClaimRetentionPolicy` as `(whenDeleted, whenScaled)`; both default to
    /// Retain.
    fn retention(&self) -> (&str, &str) {
        let policy = self
            .set
            .spec
            .as_ref()
            .and_then(|s| s.persistent_volume_claim_retention_policy.as_ref());
        (
            policy
                .and_then(|p| p.when_deleted.as_deref())
                .unwrap_or("Retain"),
            policy
                .and_then(|p| p.when_scaled.as_deref())
                .unwrap_or("Retain"),
        )
    }

    /// A claim reused by a new pod of its ordinal (scaled down, then up again) must not keep
    /// the reference to the pod it was condemned with, or the garbage collector would delete
    /// it under the new pod; with `whenDeleted: Delete` it goes back to the set.
    async fn reclaim(
        &self,
        api: &Api<PersistentVolumeClaim>,
        claim: &PersistentVolumeClaim,
    ) -> Result<(), Error> {
        let set_uid = self.set.uid().unwrap_or_default();
        let old = claim.owner_references();
        let mut refs: Vec<OwnerReference> =
            old.iter().filter(|r| r.kind != "Pod").cloned().collect();
        if self.retention().0 == "Delete" && !refs.iter().any(|r| r.uid == set_uid) {
            refs.push(OwnerReference {
                controller: None,
                block_owner_deletion: None,
                ..controller_ref(self.set)
            });
        }
        if refs.as_slice() == old {
            return Ok(());
        }
        let patch = json!({"metadata": {
            "ownerReferences": to_value(&refs),
            "resourceVersion": claim.resource_version(),
        }});
        api.patch(
            &claim.name_any(),
            &PatchParams::default(),
            &Patch::Merge(patch),
        )
        .await?;
        Ok(())
    }

    /// `whenScaled: Delete`: before a condemned pod goes, its claims are handed from the set
    /// to the pod, so the garbage collector deletes them once the pod is gone (upstream's
    /// `updateClaimOwnerRefForSetAndPod`; a claim still owned by the live set would only lose
    /// the dangling pod reference).
    async fn condemn_claims(&self, pod: &Pod, ordinal: i32) -> Result<(), Error> {
        if self.retention().1 != "Delete" {
            return Ok(());
        }
        let api: Api<PersistentVolumeClaim> = Api::namespaced(self.ctx.client.clone(), self.ns);
        let uid = pod.uid().unwrap_or_default();
        let templates = self
            .set
            .spec
            .as_ref()
            .and_then(|s| s.volume_claim_templates.clone())
            .unwrap_or_default();
        for claim in templates {
            let cname = claim_name(&claim.name_any(), &self.set.name_any(), ordinal);
            let Some(existing) = api.get_opt(&cname).await? else {
                continue;
            };
            if existing.owner_references().iter().any(|r| r.uid == uid) {
                continue;
            }
            let set_uid = self.set.uid().unwrap_or_default();
            let mut refs: Vec<OwnerReference> = existing
                .owner_references()
                .iter()
                .filter(|r| r.uid != set_uid)
                .cloned()
                .collect();
            refs.push(OwnerReference {
                controller: None,
                block_owner_deletion: None,
                ..controller_ref(pod)
            });
            let patch = json!({"metadata": {
                "ownerReferences": to_value(&refs),
                "resourceVersion": existing.resource_version(),
            }});
            api.patch(&cname, &PatchParams::default(), &Patch::Merge(patch))
                .await?;
        }
        Ok(())
    }

    async fn delete(&self, pod: &Pod) -> Result<(), Error> {
        let api: Api<Pod> = Api::namespaced(self.ctx.client.clone(), self.ns);
        // Preconditioned on the uid: never delete a newer pod of the same name.
        let dp = DeleteParams {
            preconditions: Some(kube::api::Preconditions {
                uid: pod.uid(),
                resource_version: None,
            }),
            ..Default::default()
        };
        match api.delete(&pod.name_any(), &dp).await {
            Ok(_) => {
                tracing::info!(pod = %pod.name_any(), "deleted pod");
                let msg = format!(
                    "delete Pod {} in StatefulSet {} successful",
                    pod.name_any(),
                    self.set.name_any()
                );
                self.ctx.recorder.normal(self.set, "SuccessfulDelete", msg);
                Ok(())
            }
            Err(kube::Error::Api(s)) if s.code == 404 || s.code == 409 => Ok(()),
            Err(e) => Err(e.into()),
        }
    }
}

async fn patch_status(
    ctx: &Context,
    set: &StatefulSet,
    status: serde_json::Value,
) -> Result<(), Error> {
    let api: Api<StatefulSet> =
        Api::namespaced(ctx.client.clone(), &set.namespace().unwrap_or_default());
    api.patch_status(
        &set.name_any(),
        &PatchParams::default(),
        &Patch::Merge(json!({ "status": status })),
    )
    .await?;
    Ok(())
}

/// Whether the stored status already says what `new` says (absent counts equal zero).
fn same_status(old: Option<&StatefulSetStatus>, new: &StatefulSetStatus) -> bool {
    let Some(old) = old else {
        return false;
    };
    let z = |v: Option<i32>| v.unwrap_or(0);
    old.replicas == new.replicas
        && z(old.ready_replicas) == z(new.ready_replicas)
        && z(old.available_replicas) == z(new.available_replicas)
        && z(old.current_replicas) == z(new.current_replicas)
        && z(old.updated_replicas) == z(new.updated_replicas)
        && old.current_revision == new.current_revision
        && old.update_revision == new.update_revision
        && old.observed_generation == new.observed_generation
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ordinals_parse_only_canonical_names() {
        assert_eq!(ordinal_of("web", "web-0"), Some(0));
        assert_eq!(ordinal_of("web", "web-12"), Some(12));
        assert_eq!(ordinal_of("web", "web-01"), None);
        assert_eq!(ordinal_of("web", "web-x"), None);
        assert_eq!(ordinal_of("web", "webby-1"), None);
        assert_eq!(ordinal_of("web", "web-a-1"), None);
    }

    #[test]
    fn pods_carry_identity_and_claims() {
        let set: StatefulSet = serde_json::from_value(json!({
            "metadata": {"name": "web", "namespace": "default", "uid": "u"},
            "spec": {"serviceName": "nginx", "selector": {"matchLabels": {"app": "web"}},
                "template": {"metadata": {"labels": {"app": "web"}},
                    "spec": {"containers": [{"name": "c"}]}},
                "volumeClaimTemplates": [{"metadata": {"name": "www"},
                    "spec": {"accessModes": ["ReadWriteOnce"]}}]},
        }))
        .expect("set");
        let t = set
            .spec
            .as_ref()
            .map(|s| s.template.clone())
            .unwrap_or_default();
        let pod = new_pod(&set, &t, 2, "web-abc");
        assert_eq!(pod.name_any(), "web-2");
        let labels = pod.labels();
        assert_eq!(
            labels.get(POD_NAME_LABEL).map(String::as_str),
            Some("web-2")
        );
        assert_eq!(labels.get(POD_INDEX_LABEL).map(String::as_str), Some("2"));
        assert_eq!(
            labels.get(CONTROLLER_REVISION_HASH).map(String::as_str),
            Some("web-abc")
        );
        let spec = pod.spec.clone().unwrap_or_default();
        assert_eq!(spec.hostname.as_deref(), Some("web-2"));
        assert_eq!(spec.subdomain.as_deref(), Some("nginx"));
        let claim = spec
            .volumes
            .unwrap_or_default()
            .into_iter()
            .find_map(|v| v.persistent_volume_claim)
            .map(|c| c.claim_name);
        assert_eq!(claim.as_deref(), Some("www-web-2"));
    }
}
