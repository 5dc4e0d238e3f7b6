//! The garbage collector: the ownerReference graph across every kind in the resource table.
//!
//! - **Background**: a dependent whose owners are all gone is deleted.
//! - **Foreground**: an owner being deleted with the `foregroundDeletion` finalizer has its
//!   dependents deleted (themselves in foreground, so the cascade is depth-first); once no
//!   dependent with `blockOwnerDeletion` remains, the finalizer is removed.
//! - **Orphan**: an owner being deleted with the `orphan` finalizer has its ownerReference
//!   removed from every dependent, then the finalizer removed.
//!
//! One dynamic watcher + store per listable kind feeds one graph. Instead of upstream's
//! incrementally maintained graph and two queues, every change wakes a single level-based
//! pass over the stores (debounced): the graph is rebuilt from the stores each pass, which is
//! simpler and obviously consistent, at O(objects) per pass. Because stores of different kinds
//! lag each other (a pod may be seen before the ReplicaSet that created it), an owner missing
//! from the stores is confirmed absent with a live GET before anything is deleted, as
//! upstream's `attemptToDeleteItem` does.

use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use api_types::resources::{self, ResourceInfo, Verb};
use futures::future::BoxFuture;
use futures::{FutureExt, StreamExt};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::OwnerReference;
use kube::api::{
    ApiResource, DeleteParams, DynamicObject, Patch, PatchParams, Preconditions, PropagationPolicy,
};
use kube::runtime::reflector::{store::Writer, Store};
use kube::runtime::{watcher, WatchStreamExt};
use kube::{Api, Client, ResourceExt};
use serde_json::json;
use tokio::sync::Notify;
use tracing::Instrument;

use crate::metrics::Metrics;
use crate::Error;

/// The controller's name in `--controllers` and metrics.
pub const NAME: &str = "garbagecollector";

/// The finalizer that makes a deletion wait for dependents.
pub const FOREGROUND: &str = "foregroundDeletion";
/// The finalizer that makes a deletion orphan dependents.
pub const ORPHAN: &str = "orphan";

/// How long to gather changes before a pass: a rollout changes many objects at once.
const DEBOUNCE: Duration = Duration::from_millis(100);
/// Passes wait this many times the last pass's graph-building time (at least [`DEBOUNCE`]).
const GRAPH_SHARE: u32 = 4;
/// A pass also runs this often without changes, so a failed write is retried.
const RESYNC: Duration = Duration::from_secs(10);
/// Owner checks in flight at once (upstream's `--concurrent-gc-syncs` default).
const GC_WORKERS: usize = 20;
/// Dependent deletions in flight at once. More than [`GC_WORKERS`]: upstream's workers each
/// delete one dependent after re-reading its owners, while a pass here has confirmed the
/// owners once already, so each deletion is one request. The ReplicaSet controller creates
/// in batches of up to hundreds of requests at once; with 20 deletions in flight a 5,000-pod
/// ReplicaSet was removed at a fifth of the rate it was created, with 64 at a third.
const DELETE_WORKERS: usize = 256;

/// The `ApiResource` of a resource table entry.
pub fn api_resource(info: &ResourceInfo) -> ApiResource {
    ApiResource {
        group: info.group.into(),
        version: info.version.into(),
        api_version: info.api_version(),
        kind: info.kind.into(),
        plural: info.plural.into(),
    }
}

/// A dynamic API handle for one object of `info` in `namespace`.
pub fn dynamic_api(
    client: &Client,
    info: &ResourceInfo,
    namespace: Option<&str>,
) -> Api<DynamicObject> {
    let ar = api_resource(info);
    match (info.namespaced, namespace) {
        (true, Some(ns)) => Api::namespaced_with(client.clone(), ns, &ar),
        _ => Api::all_with(client.clone(), &ar),
    }
}

struct Kind {
    info: &'static ResourceInfo,
    store: Store<DynamicObject>,
}

/// The garbage collector as a future that runs until dropped.
pub fn controller(client: Client, metrics: Arc<Metrics>) -> BoxFuture<'static, ()> {
    let notify = Arc::new(Notify::new());
    let mut watchers = Vec::new();
    let mut kinds = Vec::new();
    for info in resources::RESOURCES {
        if !(info.has_verb(Verb::List) && info.has_verb(Verb::Watch) && info.has_verb(Verb::Delete))
        {
            continue;
        }
        let ar = api_resource(info);
        let writer: Writer<DynamicObject> = Writer::new(ar.clone());
        kinds.push(Kind {
            info,
            store: writer.as_reader(),
        });
        let api: Api<DynamicObject> = Api::all_with(client.clone(), &ar);
        let notify = notify.clone();
        watchers.push(
            watcher(api, watcher::Config::default())
                .modify(|o| o.metadata.managed_fields = None)
                .default_backoff()
                .reflect(writer)
                .for_each(move |ev| {
                    match ev {
                        Ok(_) => notify.notify_one(),
                        Err(error) => {
                            tracing::debug!(%error, kind = info.kind, "GC watch failed; retrying")
                        }
                    }
                    futures::future::ready(())
                })
                .boxed(),
        );
    }
    let gc = Collector {
        client,
        kinds,
        graph_time: AtomicU64::new(0),
    };
    let pass_loop = async move {
        loop {
            let _ = tokio::time::timeout(RESYNC, notify.notified()).await;
            // Each pass rebuilds the graph from every store, so with many objects and a steady
            // stream of changes (heartbeats, pods starting) passes would take a core; waiting
            // GRAPH_SHARE times the last graph's cost keeps it to a fraction of one.
            let graph = Duration::from_micros(gc.graph_time.load(Ordering::Relaxed));
            tokio::time::sleep(DEBOUNCE.max(graph * GRAPH_SHARE)).await;
            let timer = metrics.start(NAME);
            let result = gc.pass().instrument(tracing::info_span!("gc_pass")).await;
            timer.finish(result.is_ok());
            if let Err(error) = result {
                metrics.retry(NAME);
                tracing::warn!(%error, "garbage collection pass failed; retrying");
                notify.notify_one();
                tokio::time::sleep(Duration::from_millis(500)).await;
            }
        }
    };
    watchers.push(pass_loop.boxed());
    futures::future::join_all(watchers).map(|_| ()).boxed()
}

struct Collector {
    client: Client,
    kinds: Vec<Kind>,
    /// How long the last pass took to build its graph (µs), its CPU-bound part.
    graph_time: AtomicU64,
}

/// One object in the graph.
struct Node<'a> {
    info: &'static ResourceInfo,
    obj: &'a DynamicObject,
}

impl Node<'_> {
    fn key(&self) -> String {
        match self.obj.namespace() {
            Some(ns) => format!("{}/{ns}/{}", self.info.plural, self.obj.name_any()),
            None => format!("{}/{}", self.info.plural, self.obj.name_any()),
        }
    }
}

impl Collector {
    async fn pass(&self) -> Result<(), Error> {
        let snapshot: Vec<(&'static ResourceInfo, Vec<Arc<DynamicObject>>)> = self
            .kinds
            .iter()
            .map(|k| (k.info, k.store.state()))
            .collect();
        // Every uid present, and the owners being deleted in foreground or orphaning their
        // dependents; dependents are gathered for those owners only (the graph is rebuilt
        // every pass, so it is kept to what the pass uses).
        let started = Instant::now();
        let total: usize = snapshot.iter().map(|(_, objs)| objs.len()).sum();
        let mut by_uid: HashSet<&str> = HashSet::with_capacity(total);
        let mut finalizing: Vec<Node<'_>> = Vec::new();
        for (info, objs) in &snapshot {
            for obj in objs {
                if let Some(uid) = obj.metadata.uid.as_deref() {
                    by_uid.insert(uid);
                }
                if obj.metadata.deletion_timestamp.is_some()
                    && obj
                        .finalizers()
                        .iter()
                        .any(|f| f == ORPHAN || f == FOREGROUND)
                {
                    finalizing.push(Node { info, obj });
                }
            }
        }
        let mut dependents: HashMap<&str, Vec<(Node<'_>, &OwnerReference)>> = finalizing
            .iter()
            .filter_map(|n| n.obj.metadata.uid.as_deref())
            .map(|uid| (uid, Vec::new()))
            .collect();
        if !dependents.is_empty() {
            for (info, objs) in &snapshot {
                for obj in objs {
                    for r in obj.owner_references() {
                        if let Some(deps) = dependents.get_mut(r.uid.as_str()) {
                            deps.push((Node { info, obj }, r));
                        }
                    }
                }
            }
        }
        let mut first_err: Option<Error> = None;
        // Owners being deleted in foreground or orphaning their dependents.
        for node in &finalizing {
            let finalizers = node.obj.finalizers();
            let uid = node.obj.metadata.uid.as_deref().unwrap_or_default();
            let deps = dependents.get(uid).map(Vec::as_slice).unwrap_or_default();
            let result = if finalizers.iter().any(|f| f == ORPHAN) {
                self.orphan(node, deps).await
            } else if finalizers.iter().any(|f| f == FOREGROUND) {
                self.foreground(node, deps).await
            } else {
                Ok(())
            };
            if let Err(e) = result {
                first_err.get_or_insert(e);
            }
        }
        // Dependents whose owners are missing from the stores (owned, as the concurrent
        // requests below need).
        // (index of the kind in `self.kinds`, the object, its missing owners)
        type Dangling = (usize, Arc<DynamicObject>, Vec<OwnerReference>);
        let mut dangling: Vec<Dangling> = Vec::new();
        for (kind, (_, objs)) in snapshot.iter().enumerate() {
            for obj in objs {
                let refs = obj.owner_references();
                if refs.is_empty() || obj.metadata.deletion_timestamp.is_some() {
                    continue;
                }
                let missing: Vec<OwnerReference> = refs
                    .iter()
                    .filter(|r| !by_uid.contains(r.uid.as_str()))
                    .cloned()
                    .collect();
                if !missing.is_empty() {
                    dangling.push((kind, obj.clone(), missing));
                }
            }
        }
        self.graph_time.store(
            u64::try_from(started.elapsed().as_micros()).unwrap_or(u64::MAX),
            Ordering::Relaxed,
        );
        // Each missing owner is confirmed gone with one live GET per pass, however many
        // dependents it had (upstream's absent-owner cache), not one GET per dependent.
        let mut owners: HashMap<(Option<String>, String), OwnerReference> = HashMap::new();
        for (_, obj, missing) in &dangling {
            for r in missing {
                owners.insert((obj.namespace(), r.uid.clone()), r.clone());
            }
        }
        let checks: Vec<_> = futures::stream::iter(owners)
            .map(|(key, r)| async move {
                let absent = self.owner_absent(&r, key.0.as_deref()).await;
                (key, absent)
            })
            .buffer_unordered(GC_WORKERS)
            .collect()
            .await;
        let mut absent: HashSet<(Option<String>, String)> = HashSet::new();
        for (key, result) in checks {
            match result {
                Ok(true) => {
                    absent.insert(key);
                }
                Ok(false) => {}
                Err(e) => {
                    first_err.get_or_insert(e);
                }
            }
        }
        // Then the dependents, DELETE_WORKERS at a time.
        type Work = (usize, Arc<DynamicObject>, Vec<String>);
        let work: Vec<Work> = dangling
            .into_iter()
            .map(|(kind, obj, missing)| {
                let ns = obj.namespace();
                let gone = missing
                    .into_iter()
                    .filter(|r| absent.contains(&(ns.clone(), r.uid.clone())))
                    .map(|r| r.uid)
                    .collect();
                (kind, obj, gone)
            })
            .collect();
        let results: Vec<Result<(), Error>> = futures::stream::iter(work)
            .map(|(kind, obj, gone): Work| async move {
                let info = self.kinds[kind].info;
                self.dangling(&Node { info, obj: &obj }, &gone).await
            })
            .buffer_unordered(DELETE_WORKERS)
            .collect()
            .await;
        for r in results {
            if let Err(e) = r {
                first_err.get_or_insert(e);
            }
        }
        first_err.map_or(Ok(()), Err)
    }

    /// Whether the owner `r` of a dependent in `namespace` is really gone (live GET).
    async fn owner_absent(
        &self,
        r: &OwnerReference,
        namespace: Option<&str>,
    ) -> Result<bool, Error> {
        let (group, version) = r
            .api_version
            .split_once('/')
            .unwrap_or(("", &r.api_version));
        let Some(info) = resources::find_by_kind(group, version, &r.kind) else {
            // An owner kind we cannot resolve is never treated as absent.
            return Ok(false);
        };
        let api = dynamic_api(&self.client, info, namespace);
        match api.get(&r.name).await {
            Ok(o) => Ok(o.metadata.uid.as_deref() != Some(r.uid.as_str())),
            Err(kube::Error::Api(s)) if s.code == 404 => Ok(true),
            Err(e) => Err(e.into()),
        }
    }

    /// Handles a dependent with owners confirmed gone (`gone`: their uids): deletes it if all
    /// its owners are gone, or drops the references to the gone ones otherwise.
    async fn dangling(&self, node: &Node<'_>, gone: &[String]) -> Result<(), Error> {
        let ns = node.obj.namespace();
        if gone.is_empty() {
            return Ok(());
        }
        let api = dynamic_api(&self.client, node.info, ns.as_deref());
        let refs = node.obj.owner_references();
        let remaining: Vec<&OwnerReference> =
            refs.iter().filter(|r| !gone.contains(&r.uid)).collect();
        if remaining.is_empty() {
            tracing::info!(object = %node.key(), "deleting dependent of deleted owner");
            let dp = DeleteParams {
                propagation_policy: Some(PropagationPolicy::Background),
                preconditions: Some(Preconditions {
                    uid: node.obj.metadata.uid.clone(),
                    resource_version: None,
                }),
                ..Default::default()
            };
            return ignore_gone(api.delete(&node.obj.name_any(), &dp).await.map(|_| ()));
        }
        tracing::info!(object = %node.key(), "removing references to deleted owners");
        let patch = json!({"metadata": {
            "ownerReferences": remaining,
            "resourceVersion": node.obj.resource_version(),
        }});
        ignore_gone(
            api.patch(
                &node.obj.name_any(),
                &PatchParams::default(),
                &Patch::Merge(patch),
            )
            .await
            .map(|_| ()),
        )
    }

    /// Deletes the dependents of an owner in foreground deletion; removes the finalizer once
    /// no blocking dependent is left.
    async fn foreground(
        &self,
        owner: &Node<'_>,
        deps: &[(Node<'_>, &OwnerReference)],
    ) -> Result<(), Error> {
        let mut blocking = 0;
        for (dep, r) in deps {
            if r.block_owner_deletion == Some(true) {
                blocking += 1;
            }
            if dep.obj.metadata.deletion_timestamp.is_some() {
                continue;
            }
            tracing::info!(owner = %owner.key(), object = %dep.key(), "deleting dependent (foreground)");
            let api = dynamic_api(&self.client, dep.info, dep.obj.namespace().as_deref());
            let dp = DeleteParams {
                propagation_policy: Some(PropagationPolicy::Foreground),
                preconditions: Some(Preconditions {
                    uid: dep.obj.metadata.uid.clone(),
                    resource_version: None,
                }),
                ..Default::default()
            };
            ignore_gone(api.delete(&dep.obj.name_any(), &dp).await.map(|_| ()))?;
        }
        if blocking == 0 {
            self.remove_finalizer(owner, FOREGROUND).await?;
        }
        Ok(())
    }

    /// Removes the owner's reference from every dependent, then the `orphan` finalizer.
    async fn orphan(
        &self,
        owner: &Node<'_>,
        deps: &[(Node<'_>, &OwnerReference)],
    ) -> Result<(), Error> {
        let uid = owner.obj.metadata.uid.clone().unwrap_or_default();
        for (dep, _) in deps {
            tracing::info!(owner = %owner.key(), object = %dep.key(), "orphaning dependent");
            let remaining: Vec<&OwnerReference> = dep
                .obj
                .owner_references()
                .iter()
                .filter(|r| r.uid != uid)
                .collect();
            let api = dynamic_api(&self.client, dep.info, dep.obj.namespace().as_deref());
            let patch = json!({"metadata": {
                "ownerReferences": if remaining.is_empty() { serde_json::Value::Null } else { json!(remaining) },
                "resourceVersion": dep.obj.resource_version(),
            }});
            ignore_gone(
                api.patch(
                    &dep.obj.name_any(),
                    &PatchParams::default(),
                    &Patch::Merge(patch),
                )
                .await
                .map(|_| ()),
            )?;
        }
        if deps.is_empty() {
            self.remove_finalizer(owner, ORPHAN).await?;
        }
        Ok(())
    }

    async fn remove_finalizer(&self, node: &Node<'_>, finalizer: &str) -> Result<(), Error> {
        tracing::info!(object = %node.key(), finalizer, "removing finalizer");
        let rest: Vec<&String> = node
            .obj
            .finalizers()
            .iter()
            .filter(|f| *f != finalizer)
            .collect();
        let api = dynamic_api(&self.client, node.info, node.obj.namespace().as_deref());
        let patch = json!({"metadata": {
            "finalizers": if rest.is_empty() { serde_json::Value::Null } else { json!(rest) },
            "resourceVersion": node.obj.resource_version(),
        }});
        ignore_gone(
            api.patch(
                &node.obj.name_any(),
                &PatchParams::default(),
                &Patch::Merge(patch),
            )
            .await
            .map(|_| ()),
        )
    }
}

/// A write to an object that is already gone (404), or changed under us (409: the next pass
/// sees the new version), is not a failure.
fn ignore_gone(r: Result<(), kube::Error>) -> Result<(), Error> {
    match r {
        Err(kube::Error::Api(s)) if s.code == 404 || s.code == 409 => Ok(()),
        other => Ok(other?),
    }
}
