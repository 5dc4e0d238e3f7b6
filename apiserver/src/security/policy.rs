//! Keeps the authorizers' in-memory indexes current from the watch cache, writes the default
//! RBAC policy at start (upstream's bootstrap-roles post-start hook) and aggregates ClusterRoles
//! (upstream runs that in the controller-manager; here it lives next to the index it feeds, so
//! a cluster without a controller-manager still has working `admin`/`edit`/`view`).

use std::sync::Arc;

use authz::rbac::RbacKind;
use serde_json::Value;

use crate::cache::{self, Start};
use crate::registry::WriteOptions;
use crate::resource::Resource;
use crate::State;

const RBAC: &str = "rbac.authorization.k8s.io";

fn res(group: &str, plural: &str, namespace: Option<&str>) -> Result<Resource, String> {
    Resource::builtin(group, plural, namespace).map_err(|e| format!("{:?}", e.0.message))
}

pub async fn start(state: &Arc<State>) -> Result<(), String> {
    reconcile_defaults(state).await?;
    for (plural, kind) in [
        ("roles", RbacKind::Role),
        ("clusterroles", RbacKind::ClusterRole),
        ("rolebindings", RbacKind::RoleBinding),
        ("clusterrolebindings", RbacKind::ClusterRoleBinding),
    ] {
        let security = state.security.clone().ok_or("no security")?;
        let rbac = security.rbac.clone();
        let ready = follow(state, RBAC, plural, move |event| {
            let mut index = rbac.write();
            match event {
                Change::Upsert(obj) => index.upsert(kind, obj),
                Change::Remove(ns, name) => index.remove(kind, ns, name),
            }
        });
        ready.await;
    }
    let security = state.security.clone().ok_or("no security")?;
    let nodes = security.nodes.clone();
    follow(state, "", "pods", move |event| {
        let mut graph = nodes.write();
        match event {
            Change::Upsert(obj) => graph.upsert_pod(obj),
            Change::Remove(ns, name) => graph.remove_pod(ns.unwrap_or(""), name),
        }
    })
    .await;
    spawn_aggregation(state);
    Ok(())
}

enum Change<'a> {
    Upsert(&'a Value),
    Remove(Option<&'a str>, &'a str),
}

/// Applies the current objects of one resource, then follows its changes for as long as the
/// server runs (resubscribing if the cache restarts or this follower falls behind). Resolves
/// once the current objects are applied.
fn follow<F>(
    state: &Arc<State>,
    group: &str,
    plural: &str,
    apply: F,
) -> impl std::future::Future<Output = ()>
where
    F: Fn(Change<'_>) + Send + Sync + 'static,
{
    let prefix = api_types::resources::find(group, "v1", plural)
        .map(|info| info.storage_prefix())
        .unwrap_or_default();
    let weak = Arc::downgrade(state);
    let shutdown = state.shutdown.clone();
    let (ready_tx, ready_rx) = tokio::sync::oneshot::channel::<()>();
    tokio::spawn(async move {
        let mut ready_tx = Some(ready_tx);
        loop {
            let Some(state) = weak.upgrade() else { return };
            let cache = state.cache.clone();
            drop(state);
            let (items, revision) = cache.list(&prefix);
            for item in &items {
                if let Ok(obj) = serde_json::from_slice::<Value>(&item.json) {
                    apply(Change::Upsert(&obj));
                }
            }
            if let Some(tx) = ready_tx.take() {
                let _ = tx.send(());
            }
            let Ok(mut sub) = cache.subscribe(&prefix, &prefix, Start::After(revision)) else {
                continue;
            };
            drop(cache);
            for event in sub.replay.drain(..) {
                apply_event(&apply, &event);
            }
            loop {
                tokio::select! {
                    _ = shutdown.cancelled() => return,
                    _ = sub.epoch.changed() => break,
                    received = sub.live.recv() => match received {
                        Ok(event) if event.revision <= sub.skip_through => {}
                        Ok(event) => apply_event(&apply, &event),
                        Err(tokio::sync::broadcast::error::RecvError::Lagged(_)) => break,
                        Err(tokio::sync::broadcast::error::RecvError::Closed) => return,
                    },
                }
            }
        }
    });
    async move {
        let _ = ready_rx.await;
    }
}

fn apply_event<F: Fn(Change<'_>)>(apply: &F, event: &cache::CachedEvent) {
    let Ok(obj) = serde_json::from_slice::<Value>(&event.object.json) else {
        return;
    };
    match event.kind {
        cache::EventType::Deleted => {
            let ns = obj.pointer("/metadata/namespace").and_then(Value::as_str);
            let name = obj
                .pointer("/metadata/name")
                .and_then(Value::as_str)
                .unwrap_or("");
            apply(Change::Remove(ns, name));
        }
        _ => apply(Change::Upsert(&obj)),
    }
}

/// Creates missing default roles and bindings and brings back the rules/subjects of those
/// still marked `rbac.authorization.kubernetes.io/autoupdate: "true"` (an administrator who
/// sets it to "false" keeps their edits), as upstream's reconciliation does.
async fn reconcile_defaults(state: &Arc<State>) -> Result<(), String> {
    let mut objects: Vec<(Resource, Value)> = Vec::new();
    let to_value = |v: serde_json::Result<Value>| v.map_err(|e| e.to_string());
    for role in authz::bootstrap::cluster_roles() {
        objects.push((
            res(RBAC, "clusterroles", None)?,
            to_value(serde_json::to_value(role))?,
        ));
    }
    for binding in authz::bootstrap::cluster_role_bindings() {
        objects.push((
            res(RBAC, "clusterrolebindings", None)?,
            to_value(serde_json::to_value(binding))?,
        ));
    }
    for role in authz::bootstrap::roles() {
        let ns = role.metadata.namespace.clone();
        objects.push((
            res(RBAC, "roles", ns.as_deref())?,
            to_value(serde_json::to_value(role))?,
        ));
    }
    for binding in authz::bootstrap::role_bindings() {
        let ns = binding.metadata.namespace.clone();
        objects.push((
            res(RBAC, "rolebindings", ns.as_deref())?,
            to_value(serde_json::to_value(binding))?,
        ));
    }
    for (resource, mut desired) in objects {
        let kind = resource.info.kind;
        desired["apiVersion"] = Value::from(format!("{RBAC}/v1"));
        desired["kind"] = Value::from(kind);
        let name = desired
            .pointer("/metadata/name")
            .and_then(Value::as_str)
            .unwrap_or("")
            .to_string();
        match state.registry.get(&resource, &name).await {
            Err(e) if e.code() == 404 => {
                match state
                    .registry
                    .create(&resource, desired, &WriteOptions::default())
                    .await
                {
                    Ok(_) => {}
                    Err(e) if e.code() == 409 => {}
                    Err(e) => return Err(format!("{kind} {name}: {:?}", e.0.message)),
                }
            }
            Err(e) => return Err(format!("{kind} {name}: {:?}", e.0.message)),
            Ok(current) => {
                let auto = current
                    .pointer("/metadata/annotations/rbac.authorization.kubernetes.io~1autoupdate")
                    .and_then(Value::as_str)
                    != Some("false");
                let fields: &[&str] = if kind.ends_with("Binding") {
                    &["roleRef", "subjects"]
                } else {
                    &["rules", "aggregationRule"]
                };
                // Aggregated roles get their rules from the aggregation, not from here.
                let fields: Vec<&str> = fields
                    .iter()
                    .copied()
                    .filter(|f| !(*f == "rules" && desired.get("aggregationRule").is_some()))
                    .collect();
                let differs = fields.iter().any(|f| current.get(*f) != desired.get(*f));
                if auto && differs {
                    let result = state
                        .registry
                        .update_with(&resource, &name, None, &WriteOptions::default(), |cur| {
                            let mut next = crate::registry::unversioned(cur);
                            for f in &fields {
                                match desired.get(*f) {
                                    Some(v) => next[*f] = v.clone(),
                                    None => {
                                        if let Some(map) = next.as_object_mut() {
                                            map.remove(*f);
                                        }
                                    }
                                }
                            }
                            Ok(next)
                        })
                        .await;
                    if let Err(e) = result {
                        tracing::warn!(%kind, %name, error = ?e.0.message, "reconciling default policy");
                    }
                }
            }
        }
    }
    Ok(())
}

/// Recomputes aggregated ClusterRoles whenever a ClusterRole changes.
fn spawn_aggregation(state: &Arc<State>) {
    let weak = Arc::downgrade(state);
    let shutdown = state.shutdown.clone();
    tokio::spawn(async move {
        let Ok(resource) = res(RBAC, "clusterroles", None) else {
            return;
        };
        let prefix = resource.info.storage_prefix();
        loop {
            let Some(state) = weak.upgrade() else { return };
            let (items, revision) = state.cache.list(&prefix);
            let roles: Vec<_> = items
                .iter()
                .filter_map(|i| serde_json::from_slice(&i.json).ok())
                .collect();
            for (name, rules) in authz::rbac::aggregate(&roles) {
                let rules = match serde_json::to_value(&rules) {
                    Ok(r) => r,
                    Err(_) => continue,
                };
                let result = state
                    .registry
                    .update_with(&resource, &name, None, &WriteOptions::default(), |cur| {
                        let mut next = crate::registry::unversioned(cur);
                        next["rules"] = rules.clone();
                        Ok(next)
                    })
                    .await;
                if let Err(e) = result {
                    tracing::warn!(%name, error = ?e.0.message, "aggregating ClusterRole");
                }
            }
            let sub = state
                .cache
                .subscribe(&prefix, &prefix, Start::After(revision));
            drop(state);
            let Ok(mut sub) = sub else { continue };
            // Wait for the next change (a replayed one counts), then recompute from scratch.
            if sub.replay.is_empty() {
                tokio::select! {
                    _ = shutdown.cancelled() => return,
                    _ = sub.epoch.changed() => {}
                    _ = sub.live.recv() => {}
                }
            }
        }
    });
}
