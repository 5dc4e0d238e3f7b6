//! ResourceQuota arithmetic: what an object costs, whether a quota applies to it, and whether
//! the cost fits. The API server owns the atomic status update; the quota controller uses
//! [`sum`]/[`recompute_used`] to rebuild `status.used` from scratch.
//!
//! Resource names, masking rules and messages follow upstream's evaluators
//! (`pkg/quota/v1/evaluator/core`) and the admission controller
//! (`apiserver/pkg/admission/plugin/resourcequota`), because clients read the Forbidden text.

use std::collections::{BTreeMap, BTreeSet};

use api_types::quantity::Quantity;
use k8s_openapi::api::core::v1::ResourceQuota;
use serde_json::Value;

use crate::resources::{container_list, pod_total, resource_list, Bucket, ResourceList};

/// The resource names a per-container quota check requires each container to declare: quota
/// on cpu or memory historically obliged every container to state it.
const VALIDATION_SET: [&str; 6] = [
    "cpu",
    "memory",
    "requests.cpu",
    "requests.memory",
    "limits.cpu",
    "limits.memory",
];

const STORAGE_CLASS_SUFFIX: &str = ".storageclass.storage.k8s.io/";

fn one() -> Quantity {
    Quantity::from_value(1)
}

/// `count/<resource>` for the core group, `count/<resource>.<group>` otherwise.
pub fn object_count_name(group: &str, resource: &str) -> String {
    if group.is_empty() {
        format!("count/{resource}")
    } else {
        format!("count/{resource}.{group}")
    }
}

/// An extended resource (vendor-qualified, outside `kubernetes.io`), quota-able only as
/// `requests.<name>`.
fn is_extended(name: &str) -> bool {
    name.contains('/') && !name.contains("kubernetes.io/") && !name.starts_with("requests.")
}

/// The quota-relevant compute usage of a set of requests and limits (upstream's
/// `podComputeUsageHelper`): only resources explicitly present produce entries.
fn compute_usage(requests: &ResourceList, limits: &ResourceList) -> ResourceList {
    let mut out = ResourceList::new();
    out.insert("pods".into(), one());
    for r in ["cpu", "memory", "ephemeral-storage"] {
        if let Some(q) = requests.get(r) {
            out.insert(r.to_string(), *q);
            out.insert(format!("requests.{r}"), *q);
        }
        if let Some(q) = limits.get(r) {
            out.insert(format!("limits.{r}"), *q);
        }
    }
    for (r, q) in requests {
        if r.starts_with("hugepages-") {
            out.insert(r.clone(), *q);
            out.insert(format!("requests.{r}"), *q);
        }
        if is_extended(r) {
            out.insert(format!("requests.{r}"), *q);
        }
    }
    out
}

fn is_terminal(pod: &Value) -> bool {
    matches!(
        pod.get("status")
            .and_then(|s| s.get("phase"))
            .and_then(Value::as_str),
        Some("Succeeded" | "Failed")
    )
}

/// Why an object's usage could not be computed.
pub type UsageError = crate::resources::ResourceError;

/// The usage one object contributes, as upstream's evaluators compute it.
///
/// * pods: `count/pods` always (object counts track everything in storage); unless the pod is
///   terminal (Succeeded/Failed), also `pods` and the compute resources it declares: `cpu`,
///   `requests.cpu`, `limits.cpu`, the same for memory and ephemeral-storage, hugepages and
///   `requests.<extended>`. Totals take init containers as upstream does (max of init vs sum of
///   containers, sidecars added) and include `spec.overhead`.
/// * services: `services`, `count/services`, `services.loadbalancers`, `services.nodeports`
///   (every port of a NodePort/LoadBalancer service, or for a LoadBalancer with
///   `allocateLoadBalancerNodePorts: false` only ports naming a nodePort).
/// * persistentvolumeclaims: the claim count, `requests.storage` (the larger of requested and
///   allocated, in whole bytes; nothing without a request), and both again per storage class
///   (`<class>.storageclass.storage.k8s.io/persistentvolumeclaims|requests.storage`).
/// * configmaps, secrets, replicationcontrollers, resourcequotas: the legacy name and the
///   `count/` name.
/// * anything else: `count/<resource>[.<group>]` only.
pub fn usage(group: &str, resource: &str, obj: &Value) -> Result<ResourceList, UsageError> {
    let mut out = ResourceList::new();
    out.insert(object_count_name(group, resource), one());
    if !group.is_empty() {
        return Ok(out);
    }
    let spec = obj.get("spec").unwrap_or(&Value::Null);
    match resource {
        // Terminal pods fall through to the catch-all: by convention they stop consuming
        // compute quota, and "pods" counts only pods that can still run.
        "pods" if !is_terminal(obj) => {
            let requests = pod_total(spec, Bucket::Requests, true)?;
            let limits = pod_total(spec, Bucket::Limits, true)?;
            out.extend(compute_usage(&requests, &limits));
        }
        "services" => {
            out.insert("services".into(), one());
            let ports = spec.get("ports").and_then(Value::as_array);
            let n_ports = ports.map(Vec::len).unwrap_or(0);
            let count = |n: usize| Quantity::from_value(i64::try_from(n).unwrap_or(i64::MAX));
            let (node_ports, lbs) = match spec.get("type").and_then(Value::as_str) {
                Some("NodePort") => (n_ports, 0),
                Some("LoadBalancer") => {
                    if spec
                        .get("allocateLoadBalancerNodePorts")
                        .and_then(Value::as_bool)
                        == Some(false)
                    {
                        let explicit = ports
                            .into_iter()
                            .flatten()
                            .filter(|p| p.get("nodePort").and_then(Value::as_i64).unwrap_or(0) != 0)
                            .count();
                        (explicit, 1)
                    } else {
                        (n_ports, 1)
                    }
                }
                _ => (0, 0),
            };
            out.insert("services.nodeports".into(), count(node_ports));
            out.insert("services.loadbalancers".into(), count(lbs));
        }
        "persistentvolumeclaims" => {
            out.insert("persistentvolumeclaims".into(), one());
            let class = obj
                .get("metadata")
                .and_then(|m| m.get("annotations"))
                .and_then(|a| a.get("volume.beta.kubernetes.io/storage-class"))
                .and_then(Value::as_str)
                .or_else(|| spec.get("storageClassName").and_then(Value::as_str))
                .unwrap_or_default();
            if !class.is_empty() {
                out.insert(
                    format!("{class}{STORAGE_CLASS_SUFFIX}persistentvolumeclaims"),
                    one(),
                );
            }
            let requested = resource_list(
                spec.get("resources").and_then(|r| r.get("requests")),
                "spec.resources.requests",
            )?
            .get("storage")
            .copied();
            let allocated = resource_list(
                obj.get("status").and_then(|s| s.get("allocatedResources")),
                "status.allocatedResources",
            )?
            .get("storage")
            .copied();
            // Storage counts in whole bytes (upstream rounds up, issue 94313); a larger
            // allocation (a failed expansion being recovered) counts instead of the request,
            // but only when a request exists at all.
            let whole =
                |q: Quantity| Quantity::from_milli(q.value() * 1000).with_format(q.format());
            let storage = requested.map(|r| match allocated {
                Some(a) if a > r => whole(a),
                _ => whole(r),
            });
            if let Some(s) = storage {
                out.insert("requests.storage".into(), s);
                if !class.is_empty() {
                    out.insert(format!("{class}{STORAGE_CLASS_SUFFIX}requests.storage"), s);
                }
            }
        }
        "configmaps" | "secrets" | "replicationcontrollers" | "resourcequotas" => {
            out.insert(resource.to_string(), one());
        }
        _ => {}
    }
    Ok(out)
}

/// The resources a quota limits: `status.hard` (what the controller has reconciled), or
/// `spec.hard` for a quota the controller has not processed yet.
fn hard_names(quota: &ResourceQuota) -> BTreeSet<String> {
    let status = quota.status.as_ref().and_then(|s| s.hard.as_ref());
    let spec = quota.spec.as_ref().and_then(|s| s.hard.as_ref());
    status
        .filter(|h| !h.is_empty())
        .or(spec)
        .map(|h| h.keys().cloned().collect())
        .unwrap_or_default()
}

/// Whether a resource name is one this object's evaluator can account for.
fn evaluator_tracks(group: &str, resource: &str, name: &str) -> bool {
    if name == object_count_name(group, resource) {
        return true;
    }
    if !group.is_empty() {
        return false;
    }
    match resource {
        "pods" => {
            matches!(
                name,
                "pods"
                    | "cpu"
                    | "memory"
                    | "ephemeral-storage"
                    | "requests.cpu"
                    | "requests.memory"
                    | "requests.ephemeral-storage"
                    | "limits.cpu"
                    | "limits.memory"
                    | "limits.ephemeral-storage"
            ) || name.starts_with("hugepages-")
                || name.starts_with("requests.hugepages-")
                || name.strip_prefix("requests.").is_some_and(is_extended)
        }
        "services" => matches!(
            name,
            "services" | "services.nodeports" | "services.loadbalancers"
        ),
        "persistentvolumeclaims" => {
            matches!(name, "persistentvolumeclaims" | "requests.storage")
                || name.ends_with(&format!("{STORAGE_CLASS_SUFFIX}persistentvolumeclaims"))
                || name.ends_with(&format!("{STORAGE_CLASS_SUFFIX}requests.storage"))
        }
        "configmaps" | "secrets" | "replicationcontrollers" | "resourcequotas" => name == resource,
        _ => false,
    }
}

/// One scope requirement: `spec.scopes` entries are `Exists` requirements.
struct ScopeRequirement<'a> {
    scope: &'a str,
    operator: &'a str,
    values: &'a [String],
}

fn scope_requirements(quota: &ResourceQuota) -> Vec<ScopeRequirement<'_>> {
    let Some(spec) = quota.spec.as_ref() else {
        return Vec::new();
    };
    let mut out: Vec<ScopeRequirement<'_>> = spec
        .scopes
        .iter()
        .flatten()
        .map(|s| ScopeRequirement {
            scope: s,
            operator: "Exists",
            values: &[],
        })
        .collect();
    for e in spec
        .scope_selector
        .iter()
        .flat_map(|s| s.match_expressions.iter().flatten())
    {
        out.push(ScopeRequirement {
            scope: &e.scope_name,
            operator: &e.operator,
            values: e.values.as_deref().unwrap_or(&[]),
        });
    }
    out
}

fn is_terminating(pod: &Value) -> bool {
    pod.get("spec")
        .and_then(|s| s.get("activeDeadlineSeconds"))
        .and_then(Value::as_i64)
        .is_some_and(|d| d >= 0)
}

/// BestEffort QoS: no container or init container states a non-zero cpu or memory request or
/// limit.
fn is_best_effort(pod: &Value) -> bool {
    let spec = pod.get("spec").unwrap_or(&Value::Null);
    !["containers", "initContainers"].iter().any(|key| {
        spec.get(*key)
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
            .any(|c| {
                [Bucket::Requests, Bucket::Limits].iter().any(|b| {
                    container_list(c, *b, "").is_ok_and(|l| {
                        ["cpu", "memory"]
                            .iter()
                            .any(|r| l.get(*r).is_some_and(|q| q.milli() > 0))
                    })
                })
            })
    })
}

fn uses_cross_namespace_affinity(pod: &Value) -> bool {
    let affinity = pod.get("spec").and_then(|s| s.get("affinity"));
    ["podAffinity", "podAntiAffinity"].iter().any(|kind| {
        let Some(a) = affinity.and_then(|a| a.get(*kind)) else {
            return false;
        };
        let required = a
            .get("requiredDuringSchedulingIgnoredDuringExecution")
            .and_then(Value::as_array)
            .into_iter()
            .flatten();
        let preferred = a
            .get("preferredDuringSchedulingIgnoredDuringExecution")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
            .filter_map(|w| w.get("podAffinityTerm"));
        required.chain(preferred).any(|term| {
            term.get("namespaceSelector").is_some_and(|s| !s.is_null())
                || term
                    .get("namespaces")
                    .and_then(Value::as_array)
                    .is_some_and(|n| !n.is_empty())
        })
    })
}

fn pod_matches_scope(req: &ScopeRequirement<'_>, pod: &Value) -> bool {
    match req.scope {
        "Terminating" => is_terminating(pod),
        "NotTerminating" => !is_terminating(pod),
        "BestEffort" => is_best_effort(pod),
        "NotBestEffort" => !is_best_effort(pod),
        "PriorityClass" => {
            let class = pod
                .get("spec")
                .and_then(|s| s.get("priorityClassName"))
                .and_then(Value::as_str)
                .unwrap_or_default();
            match req.operator {
                "Exists" => !class.is_empty(),
                "In" => req.values.iter().any(|v| v == class),
                "NotIn" => !req.values.iter().any(|v| v == class),
                // Upstream evaluates against a label set that always carries the key.
                _ => false,
            }
        }
        "CrossNamespacePodAffinity" => uses_cross_namespace_affinity(pod),
        _ => false,
    }
}

/// Does `quota` constrain this object at all? It must limit at least one resource the object's
/// evaluator accounts for, and every scope requirement must match. Only pods can match scopes
/// (Terminating, NotTerminating, BestEffort, NotBestEffort, PriorityClass with
/// In/NotIn/Exists, CrossNamespacePodAffinity); a scoped quota never matches other kinds, as
/// upstream's other evaluators match no scope.
pub fn matches_scopes(quota: &ResourceQuota, obj: &Value, group: &str, resource: &str) -> bool {
    if !hard_names(quota)
        .iter()
        .any(|n| evaluator_tracks(group, resource, n))
    {
        return false;
    }
    let is_pod = group.is_empty() && resource == "pods";
    scope_requirements(quota)
        .iter()
        .all(|r| is_pod && pod_matches_scope(r, obj))
}

/// `k=v,k=v` in key order, upstream's `prettyPrint`.
fn pretty(list: &ResourceList) -> String {
    list.iter()
        .map(|(k, v)| format!("{k}={v}"))
        .collect::<Vec<_>>()
        .join(",")
}

fn mask(list: &ResourceList, keys: &BTreeSet<String>) -> ResourceList {
    list.iter()
        .filter(|(k, _)| keys.contains(*k))
        .map(|(k, v)| (k.clone(), *v))
        .collect()
}

/// Check that `used + delta` stays within `hard` for the resources the quota names.
///
/// Only resources both in `delta` and `hard` are considered (upstream masks the request to the
/// quota's resources). The error is upstream's Forbidden body, e.g.
/// `exceeded quota: q, requested: pods=1, used: pods=2, limited: pods=2`, each list in
/// resource-name order and limited to the exceeded resources.
pub fn check(
    quota_name: &str,
    hard: &ResourceList,
    used: &ResourceList,
    delta: &ResourceList,
) -> Result<(), String> {
    let hard_keys: BTreeSet<String> = hard.keys().cloned().collect();
    let requested = mask(delta, &hard_keys);
    let exceeded: BTreeSet<String> = requested
        .iter()
        .filter(|(k, d)| {
            let new = used.get(*k).copied().unwrap_or(Quantity::ZERO) + **d;
            hard.get(*k).is_some_and(|h| new > *h)
        })
        .map(|(k, _)| k.clone())
        .collect();
    if exceeded.is_empty() {
        return Ok(());
    }
    Err(format!(
        "exceeded quota: {quota_name}, requested: {}, used: {}, limited: {}",
        pretty(&mask(&requested, &exceeded)),
        pretty(&mask(used, &exceeded)),
        pretty(&mask(hard, &exceeded))
    ))
}

/// The usage change of an update: `new - old` per resource, never below zero, so shrinking an
/// object frees nothing at admission time (the controller's recount does), as upstream.
pub fn delta(new: &ResourceList, old: &ResourceList) -> ResourceList {
    new.iter()
        .map(|(k, v)| {
            let d = *v - old.get(k).copied().unwrap_or(Quantity::ZERO);
            (k.clone(), if d.milli() < 0 { Quantity::ZERO } else { d })
        })
        .collect()
}

/// For a pod create against a quota limiting cpu or memory: every container and init
/// container must declare each such resource the quota names. Returns upstream's
/// `failed quota: <name>: must specify limits.cpu for: a,b; requests.memory for: a`.
pub fn missing_compute(quota: &ResourceQuota, pod: &Value) -> Option<String> {
    let required: BTreeSet<String> = hard_names(quota)
        .into_iter()
        .filter(|n| VALIDATION_SET.contains(&n.as_str()))
        .collect();
    if required.is_empty() {
        return None;
    }
    let spec = pod.get("spec").unwrap_or(&Value::Null);
    let mut missing: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    for key in ["containers", "initContainers"] {
        for c in spec
            .get(key)
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
        {
            // An unreadable list declares nothing.
            let requests = container_list(c, Bucket::Requests, "").unwrap_or_default();
            let limits = container_list(c, Bucket::Limits, "").unwrap_or_default();
            let declared = compute_usage(&requests, &limits);
            let name = c
                .get("name")
                .and_then(Value::as_str)
                .unwrap_or_default()
                .to_string();
            for r in &required {
                if !declared.contains_key(r) {
                    missing.entry(r.clone()).or_default().insert(name.clone());
                }
            }
        }
    }
    if missing.is_empty() {
        return None;
    }
    let name = quota.metadata.name.as_deref().unwrap_or_default();
    let parts: Vec<String> = missing
        .iter()
        .map(|(r, names)| {
            format!(
                "{r} for: {}",
                names.iter().cloned().collect::<Vec<_>>().join(",")
            )
        })
        .collect();
    Some(format!(
        "failed quota: {name}: must specify {}",
        parts.join("; ")
    ))
}

/// The summed usage of many objects of one resource (the controller's recount).
pub fn sum<'a>(
    group: &str,
    resource: &str,
    objects: impl IntoIterator<Item = &'a Value>,
) -> Result<ResourceList, UsageError> {
    let mut total = ResourceList::new();
    for obj in objects {
        crate::resources::add_into(&mut total, &usage(group, resource, obj)?);
    }
    Ok(total)
}

/// `status.used` contributions of one resource type for `quota`: the objects the quota
/// matches, summed, restricted to the quota's hard resources this resource accounts for, with
/// zeros for those nothing uses (upstream reports `0`, not absence).
pub fn recompute_used<'a>(
    quota: &ResourceQuota,
    group: &str,
    resource: &str,
    objects: impl IntoIterator<Item = &'a Value>,
) -> Result<ResourceList, UsageError> {
    let tracked: BTreeSet<String> = hard_names(quota)
        .into_iter()
        .filter(|n| evaluator_tracks(group, resource, n))
        .collect();
    let matching = objects
        .into_iter()
        .filter(|o| matches_scopes(quota, o, group, resource));
    let total = sum(group, resource, matching)?;
    Ok(tracked
        .into_iter()
        .map(|k| {
            let v = total.get(&k).copied().unwrap_or(Quantity::ZERO);
            (k, v)
        })
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::api::core::v1::{
        ResourceQuotaSpec, ScopeSelector, ScopedResourceSelectorRequirement,
    };
    use k8s_openapi::apimachinery::pkg::api::resource::Quantity as K8sQuantity;
    use serde_json::json;

    fn list(pairs: &[(&str, &str)]) -> ResourceList {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), Quantity::parse(v).expect("quantity")))
            .collect()
    }

    fn quota(hard: &[&str], scopes: &[&str], priority_in: Option<&[&str]>) -> ResourceQuota {
        ResourceQuota {
            metadata: k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta {
                name: Some("q".into()),
                ..Default::default()
            },
            spec: Some(ResourceQuotaSpec {
                hard: Some(
                    hard.iter()
                        .map(|k| (k.to_string(), K8sQuantity("10".into())))
                        .collect(),
                ),
                scopes: (!scopes.is_empty())
                    .then(|| scopes.iter().map(|s| s.to_string()).collect()),
                scope_selector: priority_in.map(|vals| ScopeSelector {
                    match_expressions: Some(vec![ScopedResourceSelectorRequirement {
                        scope_name: "PriorityClass".into(),
                        operator: "In".into(),
                        values: Some(vals.iter().map(|s| s.to_string()).collect()),
                    }]),
                }),
            }),
            status: None,
        }
    }

    #[test]
    fn usage_per_resource() {
        type Case = (
            &'static str,
            &'static str,
            Value,
            Vec<(&'static str, &'static str)>,
        );
        let cases: Vec<Case> = vec![
            (
                "",
                "pods",
                json!({"spec": {
                "initContainers": [{"name": "i", "resources": {"requests": {"cpu": "2", "memory": "64Mi"}, "limits": {"cpu": "2"}}}],
                "containers": [
                    {"name": "a", "resources": {"requests": {"cpu": "500m", "memory": "128Mi"}, "limits": {"cpu": "1", "memory": "256Mi"}}},
                    {"name": "b", "resources": {"requests": {"cpu": "250m", "example.com/gpu": "1", "hugepages-2Mi": "4Mi"}}}
                ]}}),
                vec![
                    ("count/pods", "1"),
                    ("pods", "1"),
                    ("cpu", "2"),
                    ("requests.cpu", "2"),
                    ("limits.cpu", "2"),
                    ("memory", "128Mi"),
                    ("requests.memory", "128Mi"),
                    ("limits.memory", "256Mi"),
                    ("hugepages-2Mi", "4Mi"),
                    ("requests.hugepages-2Mi", "4Mi"),
                    ("requests.example.com/gpu", "1"),
                ],
            ),
            (
                "",
                "pods",
                json!({"spec": {"containers": [{"name": "a", "resources": {"requests": {"cpu": "1"}}}]},
                       "status": {"phase": "Succeeded"}}),
                vec![("count/pods", "1")],
            ),
            (
                "",
                "pods",
                json!({"spec": {"containers": [{"name": "a", "resources": {"requests": {"cpu": "1"}}}]},
                       "status": {"phase": "Failed"}}),
                vec![("count/pods", "1")],
            ),
            (
                "",
                "services",
                json!({"spec": {"type": "NodePort", "ports": [{"port": 80}, {"port": 443}]}}),
                vec![
                    ("count/services", "1"),
                    ("services", "1"),
                    ("services.nodeports", "2"),
                    ("services.loadbalancers", "0"),
                ],
            ),
            (
                "",
                "services",
                json!({"spec": {"type": "LoadBalancer", "allocateLoadBalancerNodePorts": false,
                                "ports": [{"port": 80, "nodePort": 30080}, {"port": 443}]}}),
                vec![
                    ("count/services", "1"),
                    ("services", "1"),
                    ("services.nodeports", "1"),
                    ("services.loadbalancers", "1"),
                ],
            ),
            (
                "",
                "persistentvolumeclaims",
                json!({"spec": {"storageClassName": "fast", "resources": {"requests": {"storage": "1Gi"}}},
                       "status": {"allocatedResources": {"storage": "2Gi"}}}),
                vec![
                    ("count/persistentvolumeclaims", "1"),
                    ("persistentvolumeclaims", "1"),
                    (
                        "fast.storageclass.storage.k8s.io/persistentvolumeclaims",
                        "1",
                    ),
                    ("requests.storage", "2Gi"),
                    ("fast.storageclass.storage.k8s.io/requests.storage", "2Gi"),
                ],
            ),
            (
                "",
                "persistentvolumeclaims",
                json!({"spec": {"resources": {"requests": {"storage": "1500m"}}}}),
                vec![
                    ("count/persistentvolumeclaims", "1"),
                    ("persistentvolumeclaims", "1"),
                    ("requests.storage", "2"),
                ],
            ),
            (
                "",
                "persistentvolumeclaims",
                json!({"spec": {}, "status": {"allocatedResources": {"storage": "2Gi"}}}),
                vec![
                    ("count/persistentvolumeclaims", "1"),
                    ("persistentvolumeclaims", "1"),
                ],
            ),
            (
                "",
                "configmaps",
                json!({}),
                vec![("count/configmaps", "1"), ("configmaps", "1")],
            ),
            (
                "",
                "secrets",
                json!({}),
                vec![("count/secrets", "1"), ("secrets", "1")],
            ),
            (
                "apps",
                "deployments",
                json!({"spec": {}}),
                vec![("count/deployments.apps", "1")],
            ),
            ("", "endpoints", json!({}), vec![("count/endpoints", "1")]),
        ];
        for (group, resource, obj, want) in cases {
            assert_eq!(
                usage(group, resource, &obj).expect("usage"),
                list(&want),
                "{group}/{resource} {obj}"
            );
        }
    }

    #[test]
    fn check_messages() {
        let cases: Vec<(ResourceList, ResourceList, ResourceList, Result<(), String>)> = vec![
            (
                list(&[("pods", "2")]),
                list(&[("pods", "2")]),
                list(&[("pods", "1"), ("count/pods", "1")]),
                Err("exceeded quota: q, requested: pods=1, used: pods=2, limited: pods=2".into()),
            ),
            (
                list(&[("requests.memory", "512Mi"), ("limits.memory", "1Gi"), ("pods", "10")]),
                list(&[("requests.memory", "0"), ("limits.memory", "0"), ("pods", "0")]),
                list(&[("requests.memory", "700Mi"), ("limits.memory", "2Gi"), ("pods", "1"), ("memory", "700Mi")]),
                Err("exceeded quota: q, requested: limits.memory=2Gi,requests.memory=700Mi, used: limits.memory=0,requests.memory=0, limited: limits.memory=1Gi,requests.memory=512Mi".into()),
            ),
            (
                list(&[("pods", "3")]),
                list(&[("pods", "2")]),
                list(&[("pods", "1")]),
                Ok(()),
            ),
            (
                list(&[("count/deployments.apps", "1")]),
                list(&[]),
                list(&[("count/deployments.apps", "1")]),
                Ok(()),
            ),
        ];
        for (hard, used, delta, want) in cases {
            assert_eq!(check("q", &hard, &used, &delta), want, "{delta:?}");
        }
    }

    #[test]
    fn scopes() {
        let terminating =
            json!({"spec": {"activeDeadlineSeconds": 30, "containers": [{"name": "c"}]}});
        let best_effort = json!({"spec": {"containers": [{"name": "c"}]}});
        let burstable = json!({"spec": {"priorityClassName": "high", "containers": [{"name": "c", "resources": {"requests": {"cpu": "1"}}}]}});
        let objs = [terminating, best_effort, burstable, json!({})];
        let (t, b, u, cfg) = (0, 1, 2, 3);
        type Case = (ResourceQuota, usize, &'static str, bool);
        let cases: Vec<Case> = vec![
            (quota(&["pods"], &[], None), b, "pods", true),
            (quota(&["pods"], &["Terminating"], None), t, "pods", true),
            (quota(&["pods"], &["Terminating"], None), b, "pods", false),
            (quota(&["pods"], &["NotTerminating"], None), b, "pods", true),
            (quota(&["pods"], &["BestEffort"], None), b, "pods", true),
            (quota(&["pods"], &["BestEffort"], None), u, "pods", false),
            (quota(&["pods"], &["NotBestEffort"], None), u, "pods", true),
            (quota(&["pods"], &[], Some(&["high"])), u, "pods", true),
            (quota(&["pods"], &[], Some(&["low"])), u, "pods", false),
            (quota(&["pods"], &[], Some(&["high"])), b, "pods", false),
            // A quota that limits nothing pods use does not apply.
            (quota(&["configmaps"], &[], None), b, "pods", false),
            (quota(&["configmaps"], &[], None), cfg, "configmaps", true),
            // Scoped quotas never match non-pod objects.
            (
                quota(&["configmaps"], &["BestEffort"], None),
                cfg,
                "configmaps",
                false,
            ),
        ];
        for (i, (q, obj, resource, want)) in cases.into_iter().enumerate() {
            assert_eq!(
                matches_scopes(&q, &objs[obj], "", resource),
                want,
                "case {i}"
            );
        }
    }

    #[test]
    fn missing_compute_resources() {
        let q = quota(&["limits.cpu", "requests.memory", "pods"], &[], None);
        let cases: Vec<(Value, Option<&str>)> = vec![
            (
                json!({"spec": {"containers": [{"name": "c"}]}}),
                Some("failed quota: q: must specify limits.cpu for: c; requests.memory for: c"),
            ),
            (
                json!({"spec": {
                    "initContainers": [{"name": "i", "resources": {"limits": {"cpu": "1"}, "requests": {"memory": "1Mi"}}}],
                    "containers": [{"name": "b", "resources": {"limits": {"cpu": "1"}}},
                                   {"name": "a", "resources": {"requests": {"memory": "1Mi"}}}]}}),
                Some("failed quota: q: must specify limits.cpu for: a; requests.memory for: b"),
            ),
            (
                json!({"spec": {"containers": [{"name": "c", "resources": {"limits": {"cpu": "1"}, "requests": {"memory": "1Mi"}}}]}}),
                None,
            ),
        ];
        for (pod, want) in cases {
            assert_eq!(missing_compute(&q, &pod).as_deref(), want, "{pod}");
        }
        assert_eq!(
            missing_compute(
                &quota(&["pods"], &[], None),
                &json!({"spec": {"containers": [{"name": "c"}]}})
            ),
            None
        );
    }

    #[test]
    fn recount_and_delta() {
        let pods = [
            json!({"spec": {"containers": [{"name": "a", "resources": {"requests": {"cpu": "100m"}}}]}}),
            json!({"spec": {"containers": [{"name": "a", "resources": {"requests": {"cpu": "200m"}}}]}}),
            json!({"spec": {"containers": [{"name": "a", "resources": {"requests": {"cpu": "1"}}}]}, "status": {"phase": "Succeeded"}}),
        ];
        assert_eq!(
            sum("", "pods", &pods).expect("sum"),
            list(&[
                ("count/pods", "3"),
                ("pods", "2"),
                ("cpu", "300m"),
                ("requests.cpu", "300m")
            ])
        );
        let q = quota(
            &["pods", "requests.cpu", "limits.memory", "configmaps"],
            &[],
            None,
        );
        assert_eq!(
            recompute_used(&q, "", "pods", &pods).expect("used"),
            list(&[
                ("pods", "2"),
                ("requests.cpu", "300m"),
                ("limits.memory", "0")
            ])
        );
        assert_eq!(
            delta(
                &list(&[("cpu", "1"), ("pods", "1")]),
                &list(&[("cpu", "2"), ("pods", "1")])
            ),
            list(&[("cpu", "0"), ("pods", "0")])
        );
    }
}
