//! Reading resource lists out of Pod JSON and totalling them per pod.
//!
//! LimitRanger (`Pod`-type limits) and ResourceQuota both need "what does this pod ask for in
//! total", and upstream answers it once (`resourcehelper.PodRequests`/`PodLimits`): regular
//! containers add up, init containers run one at a time so only the largest counts, and
//! restartable ("sidecar") init containers keep running so they add up with everything after.

use std::collections::BTreeMap;

use api_types::quantity::Quantity;
use serde_json::Value;

/// Resource name → quantity.
pub type ResourceList = BTreeMap<String, Quantity>;

/// Why a resource list could not be read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{path}[{resource}]: {source}")]
pub struct ResourceError {
    /// Where the list sits, e.g. `spec.containers[0].resources.limits`.
    pub path: String,
    /// The resource name whose quantity is bad.
    pub resource: String,
    /// The parse failure.
    pub source: api_types::quantity::QuantityError,
}

/// Parse a `{name: quantity}` JSON object (quantities as strings or numbers); absent or null
/// means empty.
pub fn resource_list(v: Option<&Value>, path: &str) -> Result<ResourceList, ResourceError> {
    let mut out = ResourceList::new();
    let Some(obj) = v.and_then(Value::as_object) else {
        return Ok(out);
    };
    for (k, q) in obj {
        let s = match q {
            Value::String(s) => s.clone(),
            Value::Number(n) => n.to_string(),
            _ => String::new(),
        };
        let q = Quantity::parse(&s).map_err(|source| ResourceError {
            path: path.to_string(),
            resource: k.clone(),
            source,
        })?;
        out.insert(k.clone(), q);
    }
    Ok(out)
}

/// `into[k] += from[k]` for every resource.
pub fn add_into(into: &mut ResourceList, from: &ResourceList) {
    for (k, v) in from {
        into.entry(k.clone())
            .and_modify(|e| *e = *e + *v)
            .or_insert(*v);
    }
}

/// `into[k] = max(into[k], from[k])` for every resource.
pub fn max_into(into: &mut ResourceList, from: &ResourceList) {
    for (k, v) in from {
        into.entry(k.clone())
            .and_modify(|e| {
                if *v > *e {
                    *e = *v
                }
            })
            .or_insert(*v);
    }
}

/// Which list of a container to total.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Bucket {
    /// `resources.requests`.
    Requests,
    /// `resources.limits`.
    Limits,
}

impl Bucket {
    fn key(self) -> &'static str {
        match self {
            Bucket::Requests => "requests",
            Bucket::Limits => "limits",
        }
    }
}

fn containers<'a>(spec: &'a Value, key: &str) -> impl Iterator<Item = (usize, &'a Value)> {
    spec.get(key)
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .enumerate()
}

/// One container's requests or limits.
pub fn container_list(
    c: &Value,
    bucket: Bucket,
    path: &str,
) -> Result<ResourceList, ResourceError> {
    resource_list(
        c.get("resources").and_then(|r| r.get(bucket.key())),
        &format!("{path}.resources.{}", bucket.key()),
    )
}

/// The pod's effective total for one bucket, as upstream computes it. With `overhead`, the
/// pod's `spec.overhead` is added (to every request; to limits only where a limit exists), as
/// ResourceQuota does and LimitRanger does not.
pub fn pod_total(
    spec: &Value,
    bucket: Bucket,
    overhead: bool,
) -> Result<ResourceList, ResourceError> {
    let mut total = ResourceList::new();
    for (i, c) in containers(spec, "containers") {
        add_into(
            &mut total,
            &container_list(c, bucket, &format!("spec.containers[{i}]"))?,
        );
    }
    let mut sidecars = ResourceList::new();
    let mut init_max = ResourceList::new();
    for (i, c) in containers(spec, "initContainers") {
        let own = container_list(c, bucket, &format!("spec.initContainers[{i}]"))?;
        let restartable = c.get("restartPolicy").and_then(Value::as_str) == Some("Always");
        let effective = if restartable {
            add_into(&mut total, &own);
            add_into(&mut sidecars, &own);
            sidecars.clone()
        } else {
            let mut tmp = own;
            add_into(&mut tmp, &sidecars);
            tmp
        };
        max_into(&mut init_max, &effective);
    }
    max_into(&mut total, &init_max);
    if overhead {
        let oh = resource_list(spec.get("overhead"), "spec.overhead")?;
        match bucket {
            Bucket::Requests => add_into(&mut total, &oh),
            Bucket::Limits => {
                for (k, v) in oh {
                    if let Some(e) = total.get_mut(&k) {
                        *e = *e + v;
                    }
                }
            }
        }
    }
    Ok(total)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn q(s: &str) -> Quantity {
        Quantity::parse(s).expect("quantity")
    }

    #[test]
    fn pod_totals() {
        // (spec, bucket, overhead, expected)
        type Case = (Value, Bucket, bool, Vec<(&'static str, &'static str)>);
        let cases: Vec<Case> = vec![
            (
                json!({"containers": [
                    {"resources": {"requests": {"cpu": "100m", "memory": "1Gi"}}},
                    {"resources": {"requests": {"cpu": "200m"}}}
                ]}),
                Bucket::Requests,
                false,
                vec![("cpu", "300m"), ("memory", "1Gi")],
            ),
            (
                // Init containers: max(init) against sum(containers).
                json!({
                    "initContainers": [{"resources": {"requests": {"cpu": "1", "memory": "64Mi"}}}],
                    "containers": [{"resources": {"requests": {"cpu": "300m", "memory": "128Mi"}}},
                                   {"resources": {"requests": {"cpu": "300m"}}}]
                }),
                Bucket::Requests,
                false,
                vec![("cpu", "1"), ("memory", "128Mi")],
            ),
            (
                // A sidecar adds to the containers and to every later init container.
                json!({
                    "initContainers": [
                        {"restartPolicy": "Always", "resources": {"requests": {"cpu": "200m"}}},
                        {"resources": {"requests": {"cpu": "1"}}}
                    ],
                    "containers": [{"resources": {"requests": {"cpu": "500m"}}}]
                }),
                Bucket::Requests,
                false,
                vec![("cpu", "1200m")],
            ),
            (
                json!({"overhead": {"cpu": "10m", "memory": "1Mi"},
                       "containers": [{"resources": {"limits": {"cpu": "1"}}}]}),
                Bucket::Limits,
                true,
                vec![("cpu", "1010m")],
            ),
        ];
        for (spec, bucket, overhead, want) in cases {
            let got = pod_total(&spec, bucket, overhead).expect("total");
            let want: ResourceList = want
                .into_iter()
                .map(|(k, v)| (k.to_string(), q(v)))
                .collect();
            assert_eq!(got, want, "{spec}");
        }
    }

    #[test]
    fn bad_quantity_names_its_place() {
        let spec = json!({"containers": [{"resources": {"limits": {"cpu": "lots"}}}]});
        let err = pod_total(&spec, Bucket::Limits, false).expect_err("bad");
        assert!(
            err.to_string()
                .starts_with("spec.containers[0].resources.limits[cpu]: quantities must match"),
            "{err}"
        );
    }
}
