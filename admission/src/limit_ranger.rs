//! LimitRanger: default container resources from the namespace's LimitRanges, then enforce
//! their min / max / maxLimitRequestRatio.
//!
//! Messages are upstream's (`plugin/pkg/admission/limitranger`) word for word, including the
//! double space before "No limit is specified", because users match on them. Upstream walks
//! each LimitRange item's resource maps in Go map order (random); here they are walked in
//! resource-name order, so when several constraints fail the list order is stable.

use std::collections::BTreeMap;

use api_types::quantity::Quantity;
use k8s_openapi::api::core::v1::{LimitRange, LimitRangeItem};
use serde_json::Value;

use crate::resources::{container_list, pod_total, resource_list, Bucket, ResourceList};

/// The pod annotation recording which defaults LimitRanger applied.
pub const LIMIT_RANGER_ANNOTATION: &str = "kubernetes.io/limit-ranger";

type K8sQuantities =
    Option<BTreeMap<String, k8s_openapi::apimachinery::pkg::api::resource::Quantity>>;

/// Parse a LimitRange item's quantity map; a malformed LimitRange is an error, since silently
/// skipping a constraint would admit what the administrator meant to forbid.
fn item_list(m: &K8sQuantities, what: &str) -> Result<ResourceList, String> {
    let mut out = ResourceList::new();
    for (k, v) in m.iter().flatten() {
        let q = Quantity::parse(&v.0).map_err(|e| format!("LimitRange {what}[{k}]: {e}"))?;
        out.insert(k.clone(), q);
    }
    Ok(out)
}

fn items(range: &LimitRange) -> &[LimitRangeItem] {
    range
        .spec
        .as_ref()
        .map(|s| s.limits.as_slice())
        .unwrap_or(&[])
}

/// Upstream's aggregate error text: one message alone, several as `[a, b]`, duplicates once.
fn aggregate(errs: Vec<String>) -> Result<(), String> {
    let mut seen: Vec<String> = Vec::new();
    for e in errs {
        if !seen.contains(&e) {
            seen.push(e);
        }
    }
    match seen.len() {
        0 => Ok(()),
        1 => Err(seen.remove(0)),
        _ => Err(format!("[{}]", seen.join(", "))),
    }
}

/// Apply LimitRange defaults to a Pod being created and validate it against every range.
///
/// Defaults (`defaultRequest` → requests, `default` → limits, from `Container`-type items)
/// fill only resources a container does not already name, containers first and then init
/// containers; the quantity strings are copied as the LimitRange spells them. The
/// `kubernetes.io/limit-ranger` annotation lists what was set, e.g.
/// `LimitRanger plugin set: cpu, memory request for container c; cpu limit for container c`.
/// Validation then checks `Container` items against every container and init container and
/// `Pod` items against the pod's totals; `Err` carries upstream's Forbidden message body.
pub fn apply_to_pod(pod: &mut Value, ranges: &[LimitRange]) -> Result<(), String> {
    for range in ranges {
        default_pod(pod, range)?;
    }
    let spec = pod.get("spec").unwrap_or(&Value::Null);
    let mut errs = Vec::new();
    for range in ranges {
        validate_pod(spec, range, &mut errs)?;
    }
    aggregate(errs)
}

fn default_pod(pod: &mut Value, range: &LimitRange) -> Result<(), String> {
    let mut default_requests = BTreeMap::new();
    let mut default_limits = BTreeMap::new();
    for item in items(range).iter().filter(|i| i.type_ == "Container") {
        for (k, v) in item.default_request.iter().flatten() {
            default_requests.insert(k.clone(), v.0.clone());
        }
        for (k, v) in item.default.iter().flatten() {
            default_limits.insert(k.clone(), v.0.clone());
        }
    }
    if default_requests.is_empty() && default_limits.is_empty() {
        return Ok(());
    }
    let mut notes = Vec::new();
    for (key, kind) in [
        ("containers", "container"),
        ("initContainers", "init container"),
    ] {
        let Some(list) = pod
            .get_mut("spec")
            .and_then(|s| s.get_mut(key))
            .and_then(Value::as_array_mut)
        else {
            continue;
        };
        for c in list.iter_mut() {
            let Some(c) = c.as_object_mut() else {
                continue;
            };
            let name = c
                .get("name")
                .and_then(Value::as_str)
                .unwrap_or_default()
                .to_string();
            let resources = c
                .entry("resources")
                .or_insert_with(|| Value::Object(Default::default()));
            if !resources.is_object() {
                *resources = Value::Object(Default::default());
            }
            let set_limits = merge(resources, "limits", &default_limits);
            let set_requests = merge(resources, "requests", &default_requests);
            if !set_requests.is_empty() {
                notes.push(format!(
                    "{} request for {kind} {name}",
                    set_requests.join(", ")
                ));
            }
            if !set_limits.is_empty() {
                notes.push(format!("{} limit for {kind} {name}", set_limits.join(", ")));
            }
        }
    }
    if !notes.is_empty() {
        if let Some(meta) = pod.as_object_mut().map(|p| {
            p.entry("metadata")
                .or_insert_with(|| Value::Object(Default::default()))
        }) {
            if let Some(meta) = meta.as_object_mut() {
                let ann = meta
                    .entry("annotations")
                    .or_insert_with(|| Value::Object(Default::default()));
                if !ann.is_object() {
                    *ann = Value::Object(Default::default());
                }
                if let Some(ann) = ann.as_object_mut() {
                    ann.insert(
                        LIMIT_RANGER_ANNOTATION.to_string(),
                        Value::String(format!("LimitRanger plugin set: {}", notes.join("; "))),
                    );
                }
            }
        }
    }
    Ok(())
}

/// Fill the missing entries of `resources[bucket]`; returns the names set, sorted.
fn merge(resources: &mut Value, bucket: &str, defaults: &BTreeMap<String, String>) -> Vec<String> {
    let mut set = Vec::new();
    if defaults.is_empty() {
        return set;
    }
    let Some(resources) = resources.as_object_mut() else {
        return set;
    };
    let list = resources
        .entry(bucket)
        .or_insert_with(|| Value::Object(Default::default()));
    if !list.is_object() {
        *list = Value::Object(Default::default());
    }
    if let Some(list) = list.as_object_mut() {
        for (k, v) in defaults {
            if !list.contains_key(k) {
                list.insert(k.clone(), Value::String(v.clone()));
                set.push(k.clone());
            }
        }
    }
    set
}

fn validate_pod(spec: &Value, range: &LimitRange, errs: &mut Vec<String>) -> Result<(), String> {
    for item in items(range) {
        let min = item_list(&item.min, "min")?;
        let max = item_list(&item.max, "max")?;
        let ratio = item_list(&item.max_limit_request_ratio, "maxLimitRequestRatio")?;
        let mut check = |requests: &ResourceList, limits: &ResourceList| {
            for (k, v) in &min {
                errs.extend(min_constraint(&item.type_, k, v, requests, limits));
            }
            for (k, v) in &max {
                errs.extend(max_constraint(&item.type_, k, v, requests, limits));
            }
            for (k, v) in &ratio {
                errs.extend(ratio_constraint(&item.type_, k, v, requests, limits));
            }
        };
        match item.type_.as_str() {
            "Container" => {
                for key in ["containers", "initContainers"] {
                    for (i, c) in spec
                        .get(key)
                        .and_then(Value::as_array)
                        .into_iter()
                        .flatten()
                        .enumerate()
                    {
                        let path = format!("spec.{key}[{i}]");
                        let requests = container_list(c, Bucket::Requests, &path)
                            .map_err(|e| e.to_string())?;
                        let limits =
                            container_list(c, Bucket::Limits, &path).map_err(|e| e.to_string())?;
                        check(&requests, &limits);
                    }
                }
            }
            "Pod" => {
                let requests =
                    pod_total(spec, Bucket::Requests, false).map_err(|e| e.to_string())?;
                let limits = pod_total(spec, Bucket::Limits, false).map_err(|e| e.to_string())?;
                check(&requests, &limits);
            }
            _ => {}
        }
    }
    Ok(())
}

/// Validate a PersistentVolumeClaim's `spec.resources.requests` against the
/// `PersistentVolumeClaim`-type min/max of every range (claims are never defaulted: storage is
/// a required field). `Err` carries upstream's message body.
pub fn check_pvc(pvc: &Value, ranges: &[LimitRange]) -> Result<(), String> {
    let requests = resource_list(
        pvc.get("spec")
            .and_then(|s| s.get("resources"))
            .and_then(|r| r.get("requests")),
        "spec.resources.requests",
    )
    .map_err(|e| e.to_string())?;
    let mut errs = Vec::new();
    for range in ranges {
        for item in items(range)
            .iter()
            .filter(|i| i.type_ == "PersistentVolumeClaim")
        {
            for (k, v) in &item_list(&item.min, "min")? {
                errs.extend(min_constraint(
                    &item.type_,
                    k,
                    v,
                    &requests,
                    &ResourceList::new(),
                ));
            }
            for (k, v) in &item_list(&item.max, "max")? {
                let req = requests.get(k);
                errs.extend(match req {
                    None => Some(format!(
                        "maximum {k} usage per {} is {v}.  No request is specified",
                        item.type_
                    )),
                    Some(r) if r > v => Some(format!(
                        "maximum {k} usage per {} is {v}, but request is {r}",
                        item.type_
                    )),
                    Some(_) => None,
                });
            }
        }
    }
    aggregate(errs)
}

fn min_constraint(
    limit_type: &str,
    resource: &str,
    enforced: &Quantity,
    requests: &ResourceList,
    limits: &ResourceList,
) -> Option<String> {
    let Some(req) = requests.get(resource) else {
        return Some(format!(
            "minimum {resource} usage per {limit_type} is {enforced}.  No request is specified"
        ));
    };
    if req < enforced {
        return Some(format!(
            "minimum {resource} usage per {limit_type} is {enforced}, but request is {req}"
        ));
    }
    match limits.get(resource) {
        Some(lim) if lim < enforced => Some(format!(
            "minimum {resource} usage per {limit_type} is {enforced}, but limit is {lim}"
        )),
        _ => None,
    }
}

fn max_constraint(
    limit_type: &str,
    resource: &str,
    enforced: &Quantity,
    requests: &ResourceList,
    limits: &ResourceList,
) -> Option<String> {
    let Some(lim) = limits.get(resource) else {
        return Some(format!(
            "maximum {resource} usage per {limit_type} is {enforced}.  No limit is specified"
        ));
    };
    if lim > enforced {
        return Some(format!(
            "maximum {resource} usage per {limit_type} is {enforced}, but limit is {lim}"
        ));
    }
    match requests.get(resource) {
        Some(req) if req > enforced => Some(format!(
            "maximum {resource} usage per {limit_type} is {enforced}, but request is {req}"
        )),
        _ => None,
    }
}

fn ratio_constraint(
    limit_type: &str,
    resource: &str,
    enforced: &Quantity,
    requests: &ResourceList,
    limits: &ResourceList,
) -> Option<String> {
    let req = requests.get(resource).map(Quantity::milli).unwrap_or(0);
    if req == 0 {
        return Some(format!("{resource} max limit to request ratio per {limit_type} is {enforced}, but no request is specified or request is 0"));
    }
    let lim = limits.get(resource).map(Quantity::milli).unwrap_or(0);
    if lim == 0 {
        return Some(format!("{resource} max limit to request ratio per {limit_type} is {enforced}, but no limit is specified or limit is 0"));
    }
    // Exact comparison lim/req > enforced/1000 without floating point; the display value is
    // upstream's `%f` of the float ratio.
    if lim.saturating_mul(1000) > enforced.milli().saturating_mul(req) {
        #[allow(clippy::cast_precision_loss)]
        let shown = lim as f64 / req as f64;
        return Some(format!("{resource} max limit to request ratio per {limit_type} is {enforced}, but provided ratio is {shown:.6}"));
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::api::core::v1::LimitRangeSpec;
    use k8s_openapi::apimachinery::pkg::api::resource::Quantity as K8sQuantity;
    use serde_json::json;

    fn list(pairs: &[(&str, &str)]) -> K8sQuantities {
        if pairs.is_empty() {
            return None;
        }
        Some(
            pairs
                .iter()
                .map(|(k, v)| (k.to_string(), K8sQuantity(v.to_string())))
                .collect(),
        )
    }

    #[derive(Default)]
    struct Item<'a> {
        kind: &'a str,
        default: &'a [(&'a str, &'a str)],
        default_request: &'a [(&'a str, &'a str)],
        min: &'a [(&'a str, &'a str)],
        max: &'a [(&'a str, &'a str)],
        ratio: &'a [(&'a str, &'a str)],
    }

    fn range(items: &[Item<'_>]) -> LimitRange {
        LimitRange {
            spec: Some(LimitRangeSpec {
                limits: items
                    .iter()
                    .map(|i| LimitRangeItem {
                        type_: i.kind.to_string(),
                        default: list(i.default),
                        default_request: list(i.default_request),
                        min: list(i.min),
                        max: list(i.max),
                        max_limit_request_ratio: list(i.ratio),
                    })
                    .collect(),
            }),
            ..Default::default()
        }
    }

    #[test]
    fn defaults_and_annotation() {
        let lr = range(&[Item {
            kind: "Container",
            default: &[("cpu", "500m"), ("memory", "512Mi")],
            default_request: &[("cpu", "100m"), ("memory", "256Mi")],
            ..Default::default()
        }]);
        // (pod, expected containers' resources, expected annotation)
        let cases: Vec<(Value, Value, Option<&str>)> = vec![
            (
                json!({"metadata": {"name": "p"}, "spec": {"containers": [{"name": "c"}]}}),
                json!([{"name": "c", "resources": {
                    "requests": {"cpu": "100m", "memory": "256Mi"},
                    "limits": {"cpu": "500m", "memory": "512Mi"}}}]),
                Some("LimitRanger plugin set: cpu, memory request for container c; cpu, memory limit for container c"),
            ),
            (
                json!({"metadata": {"name": "p"}, "spec": {
                    "initContainers": [{"name": "init", "resources": {"limits": {"cpu": "200m"}, "requests": {"cpu": "200m"}}}],
                    "containers": [{"name": "c", "resources": {"requests": {"cpu": "1", "memory": "1Gi"}, "limits": {"cpu": "1", "memory": "1Gi"}}}]}}),
                json!([{"name": "c", "resources": {"requests": {"cpu": "1", "memory": "1Gi"}, "limits": {"cpu": "1", "memory": "1Gi"}}}]),
                Some("LimitRanger plugin set: memory request for init container init; memory limit for init container init"),
            ),
        ];
        for (mut pod, containers, annotation) in cases {
            apply_to_pod(&mut pod, std::slice::from_ref(&lr)).expect("admitted");
            assert_eq!(pod["spec"]["containers"], containers);
            assert_eq!(
                pod["metadata"]["annotations"][LIMIT_RANGER_ANNOTATION].as_str(),
                annotation
            );
        }
    }

    #[test]
    fn validation_messages() {
        let container_max = range(&[Item {
            kind: "Container",
            max: &[("cpu", "1")],
            ..Default::default()
        }]);
        type Case = (&'static str, Vec<LimitRange>, Value, Result<(), String>);
        let cases: Vec<Case> = vec![
            (
                "max cpu exceeded",
                vec![container_max.clone()],
                json!({"containers": [{"name": "c", "resources": {"limits": {"cpu": "2"}}}]}),
                Err("maximum cpu usage per Container is 1, but limit is 2".into()),
            ),
            (
                "max without a limit",
                vec![container_max.clone()],
                json!({"containers": [{"name": "c"}]}),
                Err("maximum cpu usage per Container is 1.  No limit is specified".into()),
            ),
            (
                "max request above",
                vec![container_max.clone()],
                json!({"containers": [{"name": "c", "resources": {"limits": {"cpu": "1"}, "requests": {"cpu": "1500m"}}}]}),
                Err("maximum cpu usage per Container is 1, but request is 1500m".into()),
            ),
            (
                "within max",
                vec![container_max.clone()],
                json!({"containers": [{"name": "c", "resources": {"limits": {"cpu": "1000m"}}}]}),
                Ok(()),
            ),
            (
                "min request and min limit, two errors aggregated",
                vec![range(&[Item { kind: "Container", min: &[("cpu", "100m"), ("memory", "64Mi")], ..Default::default() }])],
                json!({"containers": [{"name": "c", "resources": {"requests": {"cpu": "50m"}}}]}),
                Err("[minimum cpu usage per Container is 100m, but request is 50m, minimum memory usage per Container is 64Mi.  No request is specified]".into()),
            ),
            (
                "ratio",
                vec![range(&[Item { kind: "Container", ratio: &[("cpu", "2")], ..Default::default() }])],
                json!({"containers": [{"name": "c", "resources": {"requests": {"cpu": "100m"}, "limits": {"cpu": "500m"}}}]}),
                Err("cpu max limit to request ratio per Container is 2, but provided ratio is 5.000000".into()),
            ),
            (
                "pod max over init/regular totals",
                vec![range(&[Item { kind: "Pod", max: &[("memory", "1Gi")], ..Default::default() }])],
                json!({
                    "initContainers": [{"name": "i", "resources": {"limits": {"memory": "2Gi"}}}],
                    "containers": [{"name": "a", "resources": {"limits": {"memory": "512Mi"}}},
                                   {"name": "b", "resources": {"limits": {"memory": "256Mi"}}}]
                }),
                Err("maximum memory usage per Pod is 1Gi, but limit is 2Gi".into()),
            ),
            (
                "defaults satisfy the max of the same range",
                vec![range(&[Item { kind: "Container", default: &[("cpu", "1")], max: &[("cpu", "1")], ..Default::default() }])],
                json!({"containers": [{"name": "c"}]}),
                Ok(()),
            ),
        ];
        for (what, ranges, spec, want) in cases {
            let mut pod = json!({"metadata": {"name": "p"}, "spec": spec});
            assert_eq!(apply_to_pod(&mut pod, &ranges), want, "{what}");
        }
    }

    #[test]
    fn pvc_storage() {
        let lr = range(&[Item {
            kind: "PersistentVolumeClaim",
            min: &[("storage", "1Gi")],
            max: &[("storage", "10Gi")],
            ..Default::default()
        }]);
        let cases: Vec<(&str, Result<(), String>)> = vec![
            ("5Gi", Ok(())),
            (
                "20Gi",
                Err(
                    "maximum storage usage per PersistentVolumeClaim is 10Gi, but request is 20Gi"
                        .into(),
                ),
            ),
            (
                "500Mi",
                Err(
                    "minimum storage usage per PersistentVolumeClaim is 1Gi, but request is 500Mi"
                        .into(),
                ),
            ),
        ];
        for (storage, want) in cases {
            let pvc = json!({"spec": {"resources": {"requests": {"storage": storage}}}});
            assert_eq!(
                check_pvc(&pvc, std::slice::from_ref(&lr)),
                want,
                "{storage}"
            );
        }
        assert_eq!(
            check_pvc(&json!({"spec": {}}), &[lr]),
            Err("[minimum storage usage per PersistentVolumeClaim is 1Gi.  No request is specified, maximum storage usage per PersistentVolumeClaim is 10Gi.  No request is specified]".into())
        );
    }
}
