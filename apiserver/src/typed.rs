//! The one place that knows which k8s-openapi type each resource is.
//!
//! Writes are decoded into the kind's typed struct and encoded back, as kube-apiserver decodes
//! into Go structs: that rejects wrong field types with a clear message, drops (or, with
//! `fieldValidation=Strict`, rejects) unknown fields, and gives every stored object one
//! canonical shape. Reads never pay for it: stored JSON is already canonical.

use api_types::k8s_openapi;
use api_types::resources::ResourceInfo;
use serde_json::Value;

macro_rules! typed_kinds {
    ($($ty:path),* $(,)?) => {
        /// Decodes `value` as the typed object of `info` and encodes it again; `Err` carries the
        /// decoder's message. Kinds without a type here come back unchanged. Decoding borrows
        /// `value` (the caller still compares it with the result), so it is never copied whole.
        pub fn canonicalize(info: &ResourceInfo, value: &Value) -> Result<Value, String> {
            use k8s_openapi::Resource as _;
            use serde::Deserialize as _;
            $(
                if <$ty>::GROUP == info.group && <$ty>::VERSION == info.version && <$ty>::KIND == info.kind {
                    let typed = <$ty>::deserialize(value).map_err(|e| e.to_string())?;
                    return serde_json::to_value(typed).map_err(|e| e.to_string());
                }
            )*
            Ok(value.clone())
        }
    };
}

typed_kinds![
    k8s_openapi::api::core::v1::Namespace,
    k8s_openapi::api::core::v1::Pod,
    k8s_openapi::api::core::v1::Service,
    k8s_openapi::api::core::v1::Endpoints,
    k8s_openapi::api::core::v1::ConfigMap,
    k8s_openapi::api::core::v1::Secret,
    k8s_openapi::api::core::v1::ServiceAccount,
    k8s_openapi::api::core::v1::Node,
    k8s_openapi::api::core::v1::Event,
    k8s_openapi::api::core::v1::LimitRange,
    k8s_openapi::api::core::v1::ResourceQuota,
    k8s_openapi::api::core::v1::PersistentVolumeClaim,
    k8s_openapi::api::core::v1::PersistentVolume,
    k8s_openapi::api::apps::v1::Deployment,
    k8s_openapi::api::apps::v1::ReplicaSet,
    k8s_openapi::api::apps::v1::StatefulSet,
    k8s_openapi::api::apps::v1::DaemonSet,
    k8s_openapi::api::apps::v1::ControllerRevision,
    k8s_openapi::api::batch::v1::Job,
    k8s_openapi::api::batch::v1::CronJob,
    k8s_openapi::api::coordination::v1::Lease,
    k8s_openapi::api::discovery::v1::EndpointSlice,
    k8s_openapi::api::events::v1::Event,
    k8s_openapi::api::policy::v1::PodDisruptionBudget,
    k8s_openapi::api::rbac::v1::Role,
    k8s_openapi::api::rbac::v1::RoleBinding,
    k8s_openapi::api::rbac::v1::ClusterRole,
    k8s_openapi::api::rbac::v1::ClusterRoleBinding,
    k8s_openapi::api::certificates::v1::CertificateSigningRequest,
    k8s_openapi::api::networking::v1::Ingress,
    k8s_openapi::api::networking::v1::NetworkPolicy,
    k8s_openapi::api::scheduling::v1::PriorityClass,
    k8s_openapi::api::storage::v1::StorageClass,
];

/// Paths (`spec.foo`, `spec.containers[0].bar`) present in `input` but dropped by
/// [`canonicalize`]: the fields the type does not know.
pub fn unknown_fields(input: &Value, canonical: &Value) -> Vec<String> {
    let mut out = Vec::new();
    walk(input, canonical, &mut String::new(), &mut out);
    out
}

/// `path` is the dotted path of `input`, extended in place (a string per field only for the
/// fields reported).
fn walk(input: &Value, canonical: &Value, path: &mut String, out: &mut Vec<String>) {
    let len = path.len();
    match (input, canonical) {
        (Value::Object(a), Value::Object(b)) => {
            for (k, v) in a {
                if len > 0 {
                    path.push('.');
                }
                path.push_str(k);
                match b.get(k) {
                    Some(w) => walk(v, w, path, out),
                    // Nulls and empty values are dropped by the encoder, not unknown.
                    None if is_empty(v) => {}
                    None => out.push(path.clone()),
                }
                path.truncate(len);
            }
        }
        (Value::Array(a), Value::Array(b)) => {
            for (i, (v, w)) in a.iter().zip(b).enumerate() {
                use std::fmt::Write as _;
                let _ = write!(path, "[{i}]");
                walk(v, w, path, out);
                path.truncate(len);
            }
        }
        _ => {}
    }
}

fn is_empty(v: &Value) -> bool {
    match v {
        Value::Null => true,
        Value::Object(m) => m.values().all(is_empty),
        Value::Array(a) => a.is_empty(),
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn canonicalizes_and_finds_unknown_fields() {
        let info = api_types::resources::find("apps", "v1", "deployments").unwrap();
        let input = json!({
            "apiVersion": "apps/v1", "kind": "Deployment",
            "metadata": {"name": "web", "bogus": 1},
            "spec": {"replicas": 2, "selector": {"matchLabels": {"a": "b"}},
                     "template": {"spec": {"containers": [{"name": "c", "image": "i", "colour": "red"}]}}}
        });
        let canonical = canonicalize(info, &input).unwrap();
        assert_eq!(canonical["spec"]["replicas"], 2);
        let mut unknown = unknown_fields(&input, &canonical);
        unknown.sort();
        assert_eq!(
            unknown,
            ["metadata.bogus", "spec.template.spec.containers[0].colour"]
        );
        let bad = json!({"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "x"},
                         "spec": {"replicas": "two", "selector": {}, "template": {}}});
        assert!(canonicalize(info, &bad)
            .unwrap_err()
            .contains("invalid type"));
    }
}
