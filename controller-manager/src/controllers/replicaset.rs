//! The ReplicaSet controller: keeps exactly `spec.replicas` active pods matching the selector,
//! adopts and orphans pods by selector, and reports status through `/status`.
//!
//! Reconciles are level-based: every pass recomputes the difference between the pods in the
//! shared pod store and the desired count. Because the store lags the writes this controller
//! makes, [`Expectations`] (upstream's `ControllerExpectations`) holds back a new pass until
//! the creates and deletes of the previous one have been observed; after a restart the
//! expectations are empty and the first pass waits for the pod store's initial list, so no
//! pod is created twice.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures::StreamExt;
use k8s_openapi::api::apps::v1::{ReplicaSet, ReplicaSetStatus};
use k8s_openapi::api::core::v1::Pod;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, OwnerReference};
use kube::api::{DeleteParams, Patch, PatchParams, PostParams};
use kube::runtime::controller::{Action, Config as ControllerConfig, Controller};
use kube::runtime::reflector::{ObjectRef, Store};
use kube::{Api, Client, Resource, ResourceExt};
use parking_lot::Mutex;
use serde_json::json;

use crate::informers::{to_value, Informers};
use crate::metrics::Metrics;
use crate::util::{self, Backoff};
use crate::Error;

/// The controller's name in `--controllers` and metrics.
pub const NAME: &str = "replicaset";

/// How long an expectation may stay unobserved before it is dropped (upstream's
/// `ExpectationsTimeout`): a lost watch event must not block the ReplicaSet forever.
const EXPECTATIONS_TIMEOUT: Duration = Duration::from_secs(300);

/// Creates and deletes issued but not yet seen in the pod store, per ReplicaSet key.
#[derive(Default)]
pub struct Expectations {
    pending: Mutex<HashMap<String, Pending>>,
}

struct Pending {
    /// Names of pods created and not yet in the store.
    adds: HashSet<String>,
    /// UIDs of pods deleted and still in the store without a deletionTimestamp.
    dels: HashSet<String>,
    since: Instant,
}

impl Expectations {
    /// Whether every write of the last pass for `key` is visible in `pods`.
    pub fn satisfied(&self, key: &str, pods: &Store<Pod>, namespace: &str) -> bool {
        let mut map = self.pending.lock();
        let Some(p) = map.get_mut(key) else {
            return true;
        };
        p.adds
            .retain(|name| pods.get(&ObjectRef::new(name).within(namespace)).is_none());
        p.dels.retain(|uid| {
            pods.state().iter().any(|pod| {
                pod.metadata.uid.as_deref() == Some(uid.as_str())
                    && pod.metadata.deletion_timestamp.is_none()
            })
        });
        if (p.adds.is_empty() && p.dels.is_empty()) || p.since.elapsed() > EXPECTATIONS_TIMEOUT {
            map.remove(key);
            return true;
        }
        false
    }

    /// Records the pods just created (by name) and deleted (by uid) for `key`.
    pub fn expect(&self, key: &str, adds: Vec<String>, dels: Vec<String>) {
        if adds.is_empty() && dels.is_empty() {
            return;
        }
        self.pending.lock().insert(
            key.to_string(),
            Pending {
                adds: adds.into_iter().collect(),
                dels: dels.into_iter().collect(),
                since: Instant::now(),
            },
        );
    }
}

/// What the ReplicaSet controller's reconciles share.
pub struct Context {
    client: Client,
    pods: Store<Pod>,
    replicasets: Store<ReplicaSet>,
    expectations: Expectations,
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
    let rs_trigger = informers.replicasets.subscribe()?;
    let pod_owner_trigger = informers.pods.subscribe()?;
    let pod_orphan_trigger = informers.pods.subscribe()?;
    let rs_store = informers.replicasets.store();
    let ctx = Arc::new(Context {
        recorder: util::Recorder::new(&client, "replicaset-controller"),
        client,
        pods: informers.pods.store(),
        replicasets: rs_store.clone(),
        expectations: Expectations::default(),
        backoff: Backoff::default(),
        metrics,
    });
    let orphan_store = rs_store.clone();
    Some(
        Controller::for_shared_stream(rs_trigger, rs_store)
            .with_config(ControllerConfig::default().concurrency(concurrency))
            .owns_shared_stream(pod_owner_trigger)
            .owns_shared_stream(informers.pods.deletions())
            // A pod nobody controls may be adopted by any ReplicaSet whose selector matches it.
            .watches_shared_stream(pod_orphan_trigger, move |pod: Arc<Pod>| {
                if util::controller_of(pod.as_ref()).is_some() {
                    return Vec::new();
                }
                let labels = pod.labels().clone();
                let ns = pod.namespace().unwrap_or_default();
                orphan_store
                    .state()
                    .iter()
                    .filter(|rs| rs.namespace().as_deref() == Some(ns.as_str()))
                    .filter(|rs| {
                        rs.spec.as_ref().is_some_and(|s| {
                            !util::selector_is_empty(&s.selector)
                                && util::selector_matches(&s.selector, &labels)
                        })
                    })
                    .map(|rs| ObjectRef::from_obj(rs.as_ref()))
                    .collect()
            })
            .run(reconcile, error_policy, ctx)
            .for_each(|_| futures::future::ready(()))
            .boxed(),
    )
}

fn error_policy(rs: Arc<ReplicaSet>, error: &Error, ctx: Arc<Context>) -> Action {
    util::retry_after_error(NAME, rs.as_ref(), error, &ctx.metrics, &ctx.backoff)
}

async fn reconcile(rs: Arc<ReplicaSet>, ctx: Arc<Context>) -> Result<Action, Error> {
    let key = util::key_of(rs.as_ref());
    util::reconciled(
        NAME,
        &key,
        &ctx.metrics,
        &ctx.backoff,
        sync(&rs, &ctx, &key),
    )
    .await
}

/// The `OwnerReference` a controller of `owner` puts on what it creates.
pub fn controller_ref<K: Resource<DynamicType = ()>>(owner: &K) -> OwnerReference {
    OwnerReference {
        api_version: K::api_version(&()).into_owned(),
        kind: K::kind(&()).into_owned(),
        name: owner.meta().name.clone().unwrap_or_default(),
        uid: owner.meta().uid.clone().unwrap_or_default(),
        controller: Some(true),
        block_owner_deletion: Some(true),
    }
}

/// Upstream's deletion preference (`controller.ActivePods` ordering): unassigned before
/// assigned, pending before running, not ready before ready, newer before older.
fn deletion_rank(pod: &Pod) -> (u8, u8, u8, std::cmp::Reverse<i64>) {
    let assigned = pod
        .spec
        .as_ref()
        .and_then(|s| s.node_name.as_ref())
        .is_some_and(|n| !n.is_empty());
    let phase = match pod.status.as_ref().and_then(|s| s.phase.as_deref()) {
        Some("Pending") => 0,
        Some("Unknown") => 1,
        Some("Running") => 2,
        _ => 0,
    };
    let created = pod
        .metadata
        .creation_timestamp
        .as_ref()
        .map(|t| t.0.as_second())
        .unwrap_or(0);
    (
        u8::from(assigned),
        phase,
        u8::from(util::pod_is_ready(pod)),
        std::cmp::Reverse(created),
    )
}

/// Pods are created in batches that double (upstream's slow start), so a template that
/// cannot be created fails after one request instead of hundreds.
const SLOW_START_INITIAL_BATCH: usize = 1;

async fn sync(rs: &ReplicaSet, ctx: &Context, key: &str) -> Result<Action, Error> {
    ctx.pods.wait_until_ready().await?;
    ctx.replicasets.wait_until_ready().await?;
    let ns = rs.namespace().unwrap_or_default();
    let name = rs.name_any();
    let uid = rs.uid().unwrap_or_default();
    let Some(spec) = rs.spec.as_ref() else {
        return Ok(Action::await_change());
    };
    if util::selector_is_empty(&spec.selector) {
        return Err(Error::Invalid(format!(
            "ReplicaSet {key} has an empty selector"
        )));
    }
    if !ctx.expectations.satisfied(key, &ctx.pods, &ns) {
        return Ok(Action::requeue(Duration::from_secs(1)));
    }
    let pods_api: Api<Pod> = Api::namespaced(ctx.client.clone(), &ns);
    let deleting = rs.metadata.deletion_timestamp.is_some();
    let mut owned: Vec<Arc<Pod>> = Vec::new();
    for pod in ctx.pods.state() {
        if pod.namespace().as_deref() != Some(ns.as_str()) {
            continue;
        }
        let matches = util::selector_matches(&spec.selector, pod.labels());
        match util::controller_of(pod.as_ref()) {
            Some(r) if r.uid == uid => {
                if matches {
                    owned.push(pod.clone());
                } else if !deleting {
                    // Orphan: the pod's labels no longer match.
                    let refs: Vec<_> = pod
                        .owner_references()
                        .iter()
                        .filter(|r| r.uid != uid)
                        .cloned()
                        .collect();
                    patch_owner_refs(&pods_api, &pod, refs).await?;
                }
            }
            Some(_) => {}
            None => {
                if matches
                    && !deleting
                    && util::pod_is_active(&pod)
                    && pod.metadata.deletion_timestamp.is_none()
                {
                    let mut refs = pod.owner_references().to_vec();
                    refs.push(controller_ref(rs));
                    let adopted = patch_owner_refs(&pods_api, &pod, refs).await?;
                    owned.push(Arc::new(adopted));
                }
            }
        }
    }
    let active: Vec<&Pod> = owned
        .iter()
        .map(|p| p.as_ref())
        .filter(|p| util::pod_is_active(p))
        .collect();
    let desired = usize::try_from(spec.replicas.unwrap_or(1).max(0)).unwrap_or(0);
    if !deleting {
        if active.len() < desired {
            let want = desired - active.len();
            let created = create_pods(rs, &pods_api, want).await;
            for pod in &created.0 {
                ctx.recorder
                    .normal(rs, "SuccessfulCreate", format!("Created pod: {pod}"));
            }
            ctx.expectations.expect(key, created.0, Vec::new());
            created.1?;
        } else if active.len() > desired {
            let mut victims = active.clone();
            victims.sort_by_key(|p| deletion_rank(p));
            victims.truncate(active.len() - desired);
            let mut dels = Vec::new();
            let mut first_err = None;
            for pod in victims {
                match pods_api
                    .delete(&pod.name_any(), &DeleteParams::default())
                    .await
                {
                    Ok(_) => {
                        tracing::info!(pod = %pod.name_any(), "deleted pod");
                        ctx.recorder.normal(
                            rs,
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
            ctx.expectations.expect(key, Vec::new(), dels);
            if let Some(e) = first_err {
                return Err(e.into());
            }
        }
    }
    let (status, requeue) = compute_status(rs, &active);
    if !same_status(rs.status.as_ref(), &status) {
        let rs_api: Api<ReplicaSet> = Api::namespaced(ctx.client.clone(), &ns);
        rs_api
            .patch_status(
                &name,
                &PatchParams::default(),
                &Patch::Merge(json!({ "status": to_value(&status) })),
            )
            .await?;
    }
    Ok(requeue.map_or_else(Action::await_change, Action::requeue))
}

/// Creates `want` pods in slow-start batches; returns the names created and the first error.
async fn create_pods(
    rs: &ReplicaSet,
    api: &Api<Pod>,
    want: usize,
) -> (Vec<String>, Result<(), Error>) {
    let template = rs
        .spec
        .as_ref()
        .and_then(|s| s.template.clone())
        .unwrap_or_default();
    let tmeta = template.metadata.unwrap_or_default();
    let pod = Pod {
        metadata: ObjectMeta {
            generate_name: Some(format!("{}-", rs.name_any())),
            namespace: rs.namespace(),
            labels: tmeta.labels,
            annotations: tmeta.annotations,
            finalizers: tmeta.finalizers,
            owner_references: Some(vec![controller_ref(rs)]),
            ..Default::default()
        },
        spec: template.spec,
        status: None,
    };
    let pp = PostParams::default();
    let mut created = Vec::new();
    let mut batch = SLOW_START_INITIAL_BATCH;
    let mut remaining = want;
    while remaining > 0 {
        let n = batch.min(remaining);
        let results = futures::future::join_all((0..n).map(|_| api.create(&pp, &pod))).await;
        let mut failed = None;
        for r in results {
            match r {
                Ok(p) => {
                    tracing::info!(pod = %p.name_any(), "created pod");
                    created.push(p.name_any());
                }
                Err(e) => {
                    failed.get_or_insert(e);
                }
            }
        }
        if let Some(e) = failed {
            return (created, Err(e.into()));
        }
        remaining -= n;
        batch *= 2;
    }
    (created, Ok(()))
}

async fn patch_owner_refs(
    api: &Api<Pod>,
    pod: &Pod,
    refs: Vec<OwnerReference>,
) -> Result<Pod, Error> {
    let patch = json!({
        "metadata": {
            "ownerReferences": to_value(&refs),
            "resourceVersion": pod.resource_version(),
        }
    });
    Ok(api
        .patch(
            &pod.name_any(),
            &PatchParams::default(),
            &Patch::Merge(patch),
        )
        .await?)
}

/// The status the pods imply, and when to look again if a ready pod will become available.
fn compute_status(rs: &ReplicaSet, active: &[&Pod]) -> (ReplicaSetStatus, Option<Duration>) {
    let spec = rs.spec.as_ref();
    let min_ready = spec.and_then(|s| s.min_ready_seconds).unwrap_or(0);
    let template_labels = spec
        .and_then(|s| s.template.as_ref())
        .and_then(|t| t.metadata.as_ref())
        .and_then(|m| m.labels.clone())
        .unwrap_or_default();
    let now = util::now();
    let mut fully_labeled = 0;
    let mut ready = 0;
    let mut available = 0;
    let mut requeue: Option<Duration> = None;
    for pod in active {
        let labels = pod.labels();
        if template_labels
            .iter()
            .all(|(k, v)| labels.get(k) == Some(v))
        {
            fully_labeled += 1;
        }
        if util::pod_is_ready(pod) {
            ready += 1;
        }
        let (avail, wait) = util::pod_available(pod, min_ready, &now);
        if avail {
            available += 1;
        }
        if let Some(w) = wait {
            requeue = Some(requeue.map_or(w, |r| r.min(w)));
        }
    }
    let count = |n: usize| i32::try_from(n).unwrap_or(i32::MAX);
    let status = ReplicaSetStatus {
        replicas: count(active.len()),
        fully_labeled_replicas: Some(count(fully_labeled)),
        ready_replicas: Some(count(ready)),
        available_replicas: Some(count(available)),
        observed_generation: rs.metadata.generation,
        conditions: rs.status.as_ref().and_then(|s| s.conditions.clone()),
    };
    (status, requeue)
}

/// Whether the stored status already says what `new` says. Absent counts equal zero, since
/// the server may omit zero counts; comparing the raw structs would patch forever.
fn same_status(old: Option<&ReplicaSetStatus>, new: &ReplicaSetStatus) -> bool {
    let Some(old) = old else {
        return false;
    };
    let z = |v: Option<i32>| v.unwrap_or(0);
    old.replicas == new.replicas
        && z(old.fully_labeled_replicas) == z(new.fully_labeled_replicas)
        && z(old.ready_replicas) == z(new.ready_replicas)
        && z(old.available_replicas) == z(new.available_replicas)
        && old.observed_generation == new.observed_generation
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn pod(name: &str, node: Option<&str>, phase: &str, ready: bool, created: &str) -> Pod {
        serde_json::from_value(json!({
            "metadata": {"name": name, "creationTimestamp": created, "labels": {"app": "x"}},
            "spec": {"containers": [], "nodeName": node},
            "status": {
                "phase": phase,
                "conditions": [{"type": "Ready", "status": if ready { "True" } else { "False" },
                                "lastTransitionTime": "2020-01-01T00:00:00Z"}],
            },
        }))
        .expect("pod")
    }

    #[test]
    fn deletion_prefers_unscheduled_then_pending_then_not_ready_then_newest() {
        let mut pods = [
            pod(
                "old-ready",
                Some("n"),
                "Running",
                true,
                "2020-01-01T00:00:00Z",
            ),
            pod(
                "new-ready",
                Some("n"),
                "Running",
                true,
                "2021-01-01T00:00:00Z",
            ),
            pod(
                "not-ready",
                Some("n"),
                "Running",
                false,
                "2019-01-01T00:00:00Z",
            ),
            pod(
                "pending",
                Some("n"),
                "Pending",
                false,
                "2019-01-01T00:00:00Z",
            ),
            pod(
                "unscheduled",
                None,
                "Pending",
                false,
                "2019-01-01T00:00:00Z",
            ),
        ];
        pods.sort_by_key(deletion_rank);
        let order: Vec<_> = pods.iter().map(|p| p.name_any()).collect();
        assert_eq!(
            order,
            [
                "unscheduled",
                "pending",
                "not-ready",
                "new-ready",
                "old-ready"
            ]
        );
    }

    #[test]
    fn status_counts_availability_after_min_ready_seconds() {
        let rs: ReplicaSet = serde_json::from_value(json!({
            "metadata": {"name": "x", "generation": 4},
            "spec": {"selector": {"matchLabels": {"app": "x"}}, "minReadySeconds": 5,
                     "template": {"metadata": {"labels": {"app": "x", "tier": "web"}}}},
        }))
        .expect("rs");
        let long_ready = pod("a", Some("n"), "Running", true, "2020-01-01T00:00:00Z");
        let mut just_ready = pod("b", Some("n"), "Running", true, "2020-01-01T00:00:00Z");
        if let Some(c) = just_ready
            .status
            .as_mut()
            .and_then(|s| s.conditions.as_mut())
            .and_then(|c| c.first_mut())
        {
            c.last_transition_time = Some(util::now());
        }
        let (status, requeue) = compute_status(&rs, &[&long_ready, &just_ready]);
        assert_eq!(status.replicas, 2);
        assert_eq!(status.ready_replicas, Some(2));
        assert_eq!(status.available_replicas, Some(1));
        // The template adds a label the pods lack.
        assert_eq!(status.fully_labeled_replicas, Some(0));
        assert_eq!(status.observed_generation, Some(4));
        assert!(requeue.is_some_and(|d| d <= Duration::from_secs(5)));
        assert!(same_status(Some(&status), &status));
        assert!(!same_status(None, &status));
    }
}
