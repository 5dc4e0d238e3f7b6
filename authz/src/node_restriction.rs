//! NodeRestriction admission (upstream `plugin/pkg/admission/noderestriction`). RBAC and the
//! Node authorizer decide which *kinds* of write a node may make; this decides which
//! *objects*: its own Node and Lease, status of pods bound to it, mirror pods for itself.
//! Without it a node could relabel another node, or steer workloads to itself.

use std::collections::BTreeSet;

use serde_json::Value;

use crate::UserInfo;

/// The admission operation (connect is never restricted for nodes, so it is not modelled).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Operation {
    Create,
    Update,
    Delete,
}

impl Operation {
    /// Upstream's spelling in messages.
    fn as_str(self) -> &'static str {
        match self {
            Operation::Create => "CREATE",
            Operation::Update => "UPDATE",
            Operation::Delete => "DELETE",
        }
    }
}

/// One write request, as admission sees it.
///
/// `old_object` is the stored object the request is about: the current object for an update
/// or a delete (for a pod delete or a `pods/eviction` create, the pod; for a
/// `serviceaccounts/token` create, the pod named by the TokenRequest's
/// `spec.boundObjectRef.name` — see [`token_request_bound_pod`]). When that pod does not
/// exist the caller answers NotFound itself, as upstream does, rather than calling [`admit`].
#[derive(Debug, Clone, Copy)]
pub struct NodeRequest<'a> {
    pub user: &'a UserInfo,
    pub operation: Operation,
    pub resource: &'a str,
    pub subresource: &'a str,
    pub namespace: &'a str,
    /// The object's name; for a create it may be empty (taken from `object` then).
    pub name: &'a str,
    pub object: Option<&'a Value>,
    pub old_object: Option<&'a Value>,
}

const MIRROR_POD_ANNOTATION: &str = "kubernetes.io/config.mirror";
const NODE_LEASE_NAMESPACE: &str = "kube-node-lease";
/// Labels under this prefix are for administrators to steer workloads to trusted nodes; a
/// node setting them on itself would defeat that.
const NODE_RESTRICTION_LABEL_NAMESPACE: &str = "node-restriction.kubernetes.io";

fn str_at<'a>(v: Option<&'a Value>, path: &[&str]) -> Option<&'a str> {
    let mut cur = v?;
    for p in path {
        cur = cur.get(p)?;
    }
    cur.as_str()
}

fn labels_of(v: Option<&Value>) -> Vec<(String, String)> {
    v.and_then(|v| v.get("metadata"))
        .and_then(|m| m.get("labels"))
        .and_then(Value::as_object)
        .map(|m| {
            m.iter()
                .map(|(k, v)| (k.clone(), v.as_str().unwrap_or_default().to_string()))
                .collect()
        })
        .unwrap_or_default()
}

/// For a `serviceaccounts/token` create by a node: the pod the caller must look up and pass
/// as [`NodeRequest::old_object`].
pub fn token_request_bound_pod(token_request: &Value) -> Option<&str> {
    str_at(Some(token_request), &["spec", "boundObjectRef", "name"]).filter(|n| !n.is_empty())
}

/// NodeRestriction: `Err` carries upstream's reason (the caller wraps it in the usual
/// `<resource> "<name>" is forbidden: ...` 403). Requests from anyone but a node pass.
pub fn admit(req: &NodeRequest<'_>) -> Result<(), String> {
    let Some(node) = req.user.node_name() else {
        return Ok(());
    };
    if node.is_empty() {
        return Err(format!(
            "could not determine node from user {:?}",
            req.user.username
        ));
    }
    match req.resource {
        "nodes" => admit_node(node, req),
        "pods" => match req.subresource {
            "" => admit_pod(node, req),
            "status" => admit_pod_status(node, req),
            "eviction" => admit_pod_eviction(node, req),
            other => Err(format!(
                "unexpected pod subresource {other:?}, only 'status' and 'eviction' are allowed"
            )),
        },
        "persistentvolumeclaims" => match req.subresource {
            "status" => admit_pvc_status(node, req),
            _ => Err("may only update PVC status".into()),
        },
        "leases" => admit_lease(node, req),
        "csinodes" => admit_own_named(node, req, "CSINode"),
        "serviceaccounts" if req.subresource == "token" && req.operation == Operation::Create => {
            admit_token_request(node, req)
        }
        _ => Ok(()),
    }
}

fn object_name<'a>(req: &NodeRequest<'a>) -> &'a str {
    if req.name.is_empty() {
        str_at(req.object, &["metadata", "name"]).unwrap_or_default()
    } else {
        req.name
    }
}

fn admit_node(node: &str, req: &NodeRequest<'_>) -> Result<(), String> {
    let requested = object_name(req);
    if requested != node {
        return Err(format!(
            "node {node:?} is not allowed to modify node {requested:?}"
        ));
    }
    match req.operation {
        Operation::Create => {
            if spec_config_source(req.object).is_some() {
                return Err(format!(
                    "node {node:?} is not allowed to create pods with a non-nil configSource"
                ));
            }
            let forbidden = forbidden_labels(labels_of(req.object).into_iter().map(|(k, _)| k));
            if !forbidden.is_empty() {
                return Err(format!(
                    "node {node:?} is not allowed to set the following labels: {}",
                    forbidden.into_iter().collect::<Vec<_>>().join(", ")
                ));
            }
        }
        Operation::Update => {
            let source = spec_config_source(req.object);
            if source.is_some() && source != spec_config_source(req.old_object) {
                return Err(format!(
                    "node {node:?} is not allowed to update configSource to a new non-nil configSource"
                ));
            }
            let new = labels_of(req.object);
            let old = labels_of(req.old_object);
            let modified = new
                .iter()
                .filter(|kv| !old.contains(kv))
                .chain(old.iter().filter(|kv| !new.contains(kv)))
                .map(|(k, _)| k.clone());
            let forbidden = forbidden_labels(modified);
            if !forbidden.is_empty() {
                return Err(format!(
                    "is not allowed to modify labels: {}",
                    forbidden.into_iter().collect::<Vec<_>>().join(", ")
                ));
            }
        }
        Operation::Delete => {}
    }
    Ok(())
}

/// The label's prefix (before the `/`), empty for an unprefixed key.
fn label_namespace(key: &str) -> &str {
    key.split_once('/').map(|(ns, _)| ns).unwrap_or_default()
}

fn in_label_namespace(ns: &str, domain: &str) -> bool {
    ns == domain
        || ns
            .strip_suffix(domain)
            .is_some_and(|rest| rest.ends_with('.'))
}

/// The labels a kubelet sets on its Node itself (upstream `kubeletapis.IsKubeletLabel`).
fn is_kubelet_label(key: &str) -> bool {
    const KUBELET_LABELS: &[&str] = &[
        "kubernetes.io/hostname",
        "topology.kubernetes.io/zone",
        "topology.kubernetes.io/region",
        "failure-domain.beta.kubernetes.io/zone",
        "failure-domain.beta.kubernetes.io/region",
        "beta.kubernetes.io/instance-type",
        "node.kubernetes.io/instance-type",
        "kubernetes.io/os",
        "kubernetes.io/arch",
        "beta.kubernetes.io/os",
        "beta.kubernetes.io/arch",
    ];
    let ns = label_namespace(key);
    KUBELET_LABELS.contains(&key)
        || in_label_namespace(ns, "kubelet.kubernetes.io")
        || in_label_namespace(ns, "node.kubernetes.io")
}

/// Labels a node may not set on itself (upstream `getForbiddenLabels`): the
/// node-restriction prefix, and any other kubernetes.io / k8s.io label a kubelet does not
/// own (e.g. `node-role.kubernetes.io/*`, which administrators assign).
fn forbidden_labels(keys: impl Iterator<Item = String>) -> BTreeSet<String> {
    keys.filter(|key| {
        let ns = label_namespace(key);
        let restricted = in_label_namespace(ns, NODE_RESTRICTION_LABEL_NAMESPACE);
        let kubernetes =
            in_label_namespace(ns, "kubernetes.io") || in_label_namespace(ns, "k8s.io");
        restricted || (kubernetes && !is_kubelet_label(key))
    })
    .collect()
}

fn spec_config_source(node: Option<&Value>) -> Option<&Value> {
    node.and_then(|n| n.get("spec"))
        .and_then(|s| s.get("configSource"))
        .filter(|c| !c.is_null())
}

fn node_name_of(pod: Option<&Value>) -> &str {
    str_at(pod, &["spec", "nodeName"]).unwrap_or_default()
}

fn admit_pod(node: &str, req: &NodeRequest<'_>) -> Result<(), String> {
    match req.operation {
        Operation::Create => admit_mirror_pod(node, req.object),
        Operation::Delete => {
            let Some(existing) = req.old_object else {
                return Err(format!(
                    "node {node:?} can only delete pods with spec.nodeName set to itself"
                ));
            };
            if node_name_of(Some(existing)) != node {
                return Err(format!(
                    "node {node:?} can only delete pods with spec.nodeName set to itself"
                ));
            }
            Ok(())
        }
        Operation::Update => Err(format!(
            "unexpected operation {:?}, node {node:?} can only create and delete mirror pods",
            req.operation.as_str()
        )),
    }
}

/// The only pods a node creates are mirror pods of its static pods; they must be bound to
/// it, owned by its Node, and refer to nothing the Node authorizer would then open to it.
fn admit_mirror_pod(node: &str, pod: Option<&Value>) -> Result<(), String> {
    let has_mirror_annotation = pod
        .and_then(|p| p.get("metadata"))
        .and_then(|m| m.get("annotations"))
        .and_then(|a| a.get(MIRROR_POD_ANNOTATION))
        .is_some();
    if !has_mirror_annotation {
        return Err(format!(
            "pod does not have {MIRROR_POD_ANNOTATION:?} annotation, node {node:?} can only create mirror pods"
        ));
    }
    if node_name_of(pod) != node {
        return Err(format!(
            "node {node:?} can only create pods with spec.nodeName set to itself"
        ));
    }
    let owners: &[Value] = pod
        .and_then(|p| p.get("metadata"))
        .and_then(|m| m.get("ownerReferences"))
        .and_then(Value::as_array)
        .map(Vec::as_slice)
        .unwrap_or_default();
    match owners {
        [] => {
            return Err(format!(
                "node {node:?} can only create pods with an owner reference set to itself"
            ))
        }
        [owner] => {
            let field = |k: &str| owner.get(k).and_then(Value::as_str).unwrap_or_default();
            if field("apiVersion") != "v1" || field("kind") != "Node" || field("name") != node {
                return Err(format!(
                    "node {node:?} can only create pods with an owner reference set to itself"
                ));
            }
            if owner.get("controller").and_then(Value::as_bool) != Some(true) {
                return Err(format!(
                    "node {node:?} can only create pods with a controller owner reference set to itself"
                ));
            }
            if owner.get("blockOwnerDeletion").and_then(Value::as_bool) == Some(true) {
                return Err(format!(
                    "node {node:?} must not set blockOwnerDeletion on an owner reference"
                ));
            }
        }
        _ => {
            return Err(format!(
                "node {node:?} can only create pods with a single owner reference set to itself"
            ))
        }
    }
    if str_at(pod, &["spec", "serviceAccountName"]).is_some_and(|s| !s.is_empty()) {
        return Err(format!(
            "node {node:?} can not create pods that reference a service account"
        ));
    }
    // What the Node authorizer would open to the node through this pod.
    let null = Value::Null;
    let spec = pod.and_then(|p| p.get("spec")).unwrap_or(&null);
    let refs = crate::node::pod_refs(spec, "", node);
    if !refs.secrets.is_empty() {
        return Err(format!(
            "node {node:?} can not create pods that reference secrets"
        ));
    }
    if !refs.config_maps.is_empty() {
        return Err(format!(
            "node {node:?} can not create pods that reference configmaps"
        ));
    }
    let volumes = spec
        .get("volumes")
        .and_then(Value::as_array)
        .map(Vec::as_slice)
        .unwrap_or_default();
    let trust_bundles = volumes.iter().any(|v| {
        v.get("projected")
            .and_then(|p| p.get("sources"))
            .and_then(Value::as_array)
            .is_some_and(|srcs| srcs.iter().any(|s| s.get("clusterTrustBundle").is_some()))
    });
    if trust_bundles {
        return Err(format!(
            "node {node:?} can not create pods that reference clustertrustbundles"
        ));
    }
    if volumes
        .iter()
        .any(|v| v.get("persistentVolumeClaim").is_some())
    {
        return Err(format!(
            "node {node:?} can not create pods that reference persistentvolumeclaims"
        ));
    }
    Ok(())
}

fn admit_pod_status(node: &str, req: &NodeRequest<'_>) -> Result<(), String> {
    if req.operation != Operation::Update {
        return Err(format!("unexpected operation {:?}", req.operation.as_str()));
    }
    if node_name_of(req.old_object) != node {
        return Err(format!(
            "node {node:?} can only update pod status for pods with spec.nodeName set to itself"
        ));
    }
    let mut new = labels_of(req.object);
    let mut old = labels_of(req.old_object);
    new.sort();
    old.sort();
    if new != old {
        return Err(format!(
            "node {node:?} cannot update labels through pod status"
        ));
    }
    Ok(())
}

fn admit_pod_eviction(node: &str, req: &NodeRequest<'_>) -> Result<(), String> {
    if req.operation != Operation::Create {
        return Err(format!("unexpected operation {}", req.operation.as_str()));
    }
    if object_name(req).is_empty() {
        return Err("could not determine pod from request data".into());
    }
    if node_name_of(req.old_object) != node {
        return Err(format!(
            "node {node} can only evict pods with spec.nodeName set to itself"
        ));
    }
    Ok(())
}

fn admit_lease(node: &str, req: &NodeRequest<'_>) -> Result<(), String> {
    if req.namespace != NODE_LEASE_NAMESPACE {
        return Err(format!(
            "can only access leases in the {NODE_LEASE_NAMESPACE:?} system namespace"
        ));
    }
    admit_own_named(node, req, "node lease")
}

/// Objects named after the node (its Lease, its CSINode): only its own.
fn admit_own_named(node: &str, req: &NodeRequest<'_>, what: &str) -> Result<(), String> {
    if object_name(req) != node {
        return Err(format!(
            "can only access {what} with the same name as the requesting node"
        ));
    }
    Ok(())
}

/// A node reports volume expansion on claims its pods use; it may change nothing else
/// (upstream `admitPVCStatus`: capacity, conditions and the expansion-recovery fields).
fn admit_pvc_status(node: &str, req: &NodeRequest<'_>) -> Result<(), String> {
    if req.operation != Operation::Update {
        return Err(format!("unexpected operation {:?}", req.operation.as_str()));
    }
    let strip = |v: Option<&Value>| {
        let mut v = v.cloned().unwrap_or(Value::Null);
        if let Some(meta) = v.get_mut("metadata").and_then(Value::as_object_mut) {
            meta.remove("resourceVersion");
            meta.remove("managedFields");
        }
        if let Some(status) = v.get_mut("status").and_then(Value::as_object_mut) {
            for k in [
                "capacity",
                "conditions",
                "allocatedResources",
                "allocatedResourceStatuses",
            ] {
                status.remove(k);
            }
        }
        v
    };
    if strip(req.object) != strip(req.old_object) {
        return Err(format!(
            "node {node:?} is not allowed to update fields other than status.capacity and status.conditions"
        ));
    }
    Ok(())
}

/// A node may only mint tokens bound to a pod that runs on it, so a token it obtains dies
/// with that pod.
fn admit_token_request(node: &str, req: &NodeRequest<'_>) -> Result<(), String> {
    let field = |k: &str| str_at(req.object, &["spec", "boundObjectRef", k]).unwrap_or_default();
    if field("apiVersion") != "v1" || field("kind") != "Pod" || field("name").is_empty() {
        return Err("node requested token not bound to a pod".into());
    }
    let uid = field("uid");
    if uid.is_empty() {
        return Err("node requested token with a pod binding without a uid".into());
    }
    let Some(pod) = req.old_object else {
        return Err(format!("pods {:?} not found", field("name")));
    };
    if str_at(Some(pod), &["metadata", "uid"]).unwrap_or_default() != uid {
        return Err(format!(
            "the UID in the bound object reference ({uid}) does not match the UID in record. The object might have been deleted and then recreated"
        ));
    }
    if node_name_of(Some(pod)) != node {
        return Err("node requested token bound to a pod scheduled on a different node".into());
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn node_user(n: &str) -> UserInfo {
        UserInfo {
            username: format!("system:node:{n}"),
            groups: vec!["system:nodes".into(), "system:authenticated".into()],
            ..UserInfo::default()
        }
    }

    fn node_obj(name: &str, labels: Value) -> Value {
        json!({"metadata": {"name": name, "labels": labels}})
    }

    fn pod_on(node: &str) -> Value {
        json!({"metadata": {"name": "p", "namespace": "ns", "uid": "u1", "labels": {"app": "x"}},
               "spec": {"nodeName": node}})
    }

    fn mirror(node: &str, extra_spec: Value) -> Value {
        let mut spec = json!({"nodeName": node, "containers": [{"name": "c"}]});
        if let (Some(s), Some(extra)) = (spec.as_object_mut(), extra_spec.as_object()) {
            s.extend(extra.clone());
        }
        json!({"metadata": {"name": format!("static-{node}"), "namespace": "kube-system",
                "annotations": {"kubernetes.io/config.mirror": "hash"},
                "ownerReferences": [{"apiVersion": "v1", "kind": "Node", "name": node, "uid": "n", "controller": true}]},
               "spec": spec})
    }

    struct Case {
        name: &'static str,
        op: Operation,
        resource: &'static str,
        sub: &'static str,
        ns: &'static str,
        obj_name: &'static str,
        object: Option<Value>,
        old: Option<Value>,
        want: Result<(), &'static str>,
    }

    fn case(name: &'static str, op: Operation, resource: &'static str, sub: &'static str) -> Case {
        Case {
            name,
            op,
            resource,
            sub,
            ns: "",
            obj_name: "",
            object: None,
            old: None,
            want: Ok(()),
        }
    }

    impl Case {
        fn ns(mut self, ns: &'static str) -> Self {
            self.ns = ns;
            self
        }
        fn named(mut self, n: &'static str) -> Self {
            self.obj_name = n;
            self
        }
        fn object(mut self, o: Value) -> Self {
            self.object = Some(o);
            self
        }
        fn old(mut self, o: Value) -> Self {
            self.old = Some(o);
            self
        }
        fn err(mut self, e: &'static str) -> Self {
            self.want = Err(e);
            self
        }
    }

    #[test]
    fn node_restriction() {
        use Operation::*;
        let token = |name: &str, uid: &str| json!({"spec": {"boundObjectRef": {"apiVersion": "v1", "kind": "Pod", "name": name, "uid": uid}}});
        let cases = vec![
            // Nodes.
            case("create own node", Create, "nodes", "").object(node_obj("a", json!({"kubernetes.io/hostname": "a", "kubernetes.io/os": "linux", "node.kubernetes.io/exclude-from-external-load-balancers": "", "example.com/x": "y"}))),
            case("create other node", Create, "nodes", "").object(node_obj("b", json!({}))).err(r#"node "a" is not allowed to modify node "b""#),
            case("update other node", Update, "nodes", "").named("b").err(r#"node "a" is not allowed to modify node "b""#),
            case("update other node status", Update, "nodes", "status").named("b").err(r#"node "a" is not allowed to modify node "b""#),
            case("delete other node", Delete, "nodes", "").named("b").err(r#"node "a" is not allowed to modify node "b""#),
            case("delete own node", Delete, "nodes", "").named("a"),
            case("create with restricted label", Create, "nodes", "").object(node_obj("a", json!({"node-restriction.kubernetes.io/trusted": "true", "node-role.kubernetes.io/control-plane": ""})))
                .err(r#"node "a" is not allowed to set the following labels: node-restriction.kubernetes.io/trusted, node-role.kubernetes.io/control-plane"#),
            case("add restricted label", Update, "nodes", "").named("a")
                .object(node_obj("a", json!({"x": "1", "sub.node-restriction.kubernetes.io/t": "1"}))).old(node_obj("a", json!({"x": "1"})))
                .err("is not allowed to modify labels: sub.node-restriction.kubernetes.io/t"),
            case("remove restricted label", Update, "nodes", "").named("a")
                .object(node_obj("a", json!({}))).old(node_obj("a", json!({"node-restriction.kubernetes.io/t": "1"})))
                .err("is not allowed to modify labels: node-restriction.kubernetes.io/t"),
            case("keep restricted label", Update, "nodes", "").named("a")
                .object(node_obj("a", json!({"node-restriction.kubernetes.io/t": "1", "y": "2"}))).old(node_obj("a", json!({"node-restriction.kubernetes.io/t": "1"}))),
            case("create with configSource", Create, "nodes", "").object(json!({"metadata": {"name": "a"}, "spec": {"configSource": {"configMap": {}}}}))
                .err(r#"node "a" is not allowed to create pods with a non-nil configSource"#),
            case("set configSource", Update, "nodes", "").named("a").object(json!({"spec": {"configSource": {"configMap": {}}}})).old(json!({"spec": {}}))
                .err(r#"node "a" is not allowed to update configSource to a new non-nil configSource"#),
            // Claims.
            case("claim status", Update, "persistentvolumeclaims", "status").ns("ns").named("c")
                .object(json!({"metadata": {"name": "c", "resourceVersion": "2"}, "spec": {"x": 1}, "status": {"capacity": {"storage": "2Gi"}, "phase": "Bound"}}))
                .old(json!({"metadata": {"name": "c", "resourceVersion": "1"}, "spec": {"x": 1}, "status": {"capacity": {"storage": "1Gi"}, "phase": "Bound"}})),
            case("claim status phase", Update, "persistentvolumeclaims", "status").ns("ns").named("c")
                .object(json!({"metadata": {"name": "c"}, "status": {"phase": "Lost"}}))
                .old(json!({"metadata": {"name": "c"}, "status": {"phase": "Bound"}}))
                .err(r#"node "a" is not allowed to update fields other than status.capacity and status.conditions"#),
            case("claim spec", Update, "persistentvolumeclaims", "").ns("ns").named("c").err("may only update PVC status"),
            case("own csinode", Update, "csinodes", "").named("a"),
            case("create other csinode", Create, "csinodes", "").object(json!({"metadata": {"name": "b"}}))
                .err("can only access CSINode with the same name as the requesting node"),
            // Leases.
            case("own lease", Update, "leases", "").ns("kube-node-lease").named("a"),
            case("create own lease", Create, "leases", "").ns("kube-node-lease").object(json!({"metadata": {"name": "a"}})),
            case("other lease", Update, "leases", "").ns("kube-node-lease").named("b").err("can only access node lease with the same name as the requesting node"),
            case("lease elsewhere", Update, "leases", "").ns("default").named("a").err(r#"can only access leases in the "kube-node-lease" system namespace"#),
            // Pods.
            case("mirror pod", Create, "pods", "").ns("kube-system").object(mirror("a", json!({}))),
            case("plain pod", Create, "pods", "").ns("ns").object(json!({"metadata": {"name": "p"}, "spec": {"nodeName": "a"}}))
                .err(r#"pod does not have "kubernetes.io/config.mirror" annotation, node "a" can only create mirror pods"#),
            case("mirror pod for other node", Create, "pods", "").object(mirror("b", json!({})))
                .err(r#"node "a" can only create pods with spec.nodeName set to itself"#),
            case("mirror pod with SA", Create, "pods", "").object(mirror("a", json!({"serviceAccountName": "x"})))
                .err(r#"node "a" can not create pods that reference a service account"#),
            case("mirror pod with secret", Create, "pods", "").object(mirror("a", json!({"volumes": [{"name": "v", "secret": {"secretName": "s"}}]})))
                .err(r#"node "a" can not create pods that reference secrets"#),
            case("mirror pod with configmap", Create, "pods", "").object(mirror("a", json!({"volumes": [{"name": "v", "configMap": {"name": "c"}}]})))
                .err(r#"node "a" can not create pods that reference configmaps"#),
            case("mirror pod with claim", Create, "pods", "").object(mirror("a", json!({"volumes": [{"name": "v", "persistentVolumeClaim": {"claimName": "c"}}]})))
                .err(r#"node "a" can not create pods that reference persistentvolumeclaims"#),
            case("mirror pod with trust bundle", Create, "pods", "").object(mirror("a", json!({"volumes": [{"name": "v", "projected": {"sources": [{"clusterTrustBundle": {"name": "b", "path": "p"}}]}}]})))
                .err(r#"node "a" can not create pods that reference clustertrustbundles"#),
            case("update pod", Update, "pods", "").ns("ns").named("p").object(pod_on("a")).old(pod_on("a"))
                .err(r#"unexpected operation "UPDATE", node "a" can only create and delete mirror pods"#),
            case("delete own pod", Delete, "pods", "").ns("ns").named("p").old(pod_on("a")),
            case("delete other pod", Delete, "pods", "").ns("ns").named("p").old(pod_on("b"))
                .err(r#"node "a" can only delete pods with spec.nodeName set to itself"#),
            case("own pod status", Update, "pods", "status").ns("ns").named("p").object(pod_on("a")).old(pod_on("a")),
            case("other pod status", Update, "pods", "status").ns("ns").named("p").object(pod_on("b")).old(pod_on("b"))
                .err(r#"node "a" can only update pod status for pods with spec.nodeName set to itself"#),
            case("labels via status", Update, "pods", "status").ns("ns").named("p")
                .object(json!({"metadata": {"labels": {"app": "y"}}, "spec": {"nodeName": "a"}})).old(pod_on("a"))
                .err(r#"node "a" cannot update labels through pod status"#),
            case("evict own pod", Create, "pods", "eviction").ns("ns").named("p").object(json!({"metadata": {"name": "p"}})).old(pod_on("a")),
            case("evict other pod", Create, "pods", "eviction").ns("ns").named("p").object(json!({"metadata": {"name": "p"}})).old(pod_on("b"))
                .err("node a can only evict pods with spec.nodeName set to itself"),
            case("pod binding", Create, "pods", "binding").ns("ns").named("p")
                .err(r#"unexpected pod subresource "binding", only 'status' and 'eviction' are allowed"#),
            // Tokens.
            case("token for own pod", Create, "serviceaccounts", "token").ns("ns").named("sa").object(token("p", "u1")).old(pod_on("a")),
            case("token for other pod", Create, "serviceaccounts", "token").ns("ns").named("sa").object(token("p", "u1")).old(pod_on("b"))
                .err("node requested token bound to a pod scheduled on a different node"),
            case("unbound token", Create, "serviceaccounts", "token").ns("ns").named("sa").object(json!({"spec": {}}))
                .err("node requested token not bound to a pod"),
            case("token without uid", Create, "serviceaccounts", "token").ns("ns").named("sa").object(token("p", ""))
                .err("node requested token with a pod binding without a uid"),
            case("token for recreated pod", Create, "serviceaccounts", "token").ns("ns").named("sa").object(token("p", "old")).old(pod_on("a"))
                .err("the UID in the bound object reference (old) does not match the UID in record. The object might have been deleted and then recreated"),
            // Others are left to the authorizers.
            case("events", Create, "events", "").ns("ns").object(json!({})),
            case("configmaps", Update, "configmaps", "").ns("ns").named("x"),
        ];
        let a = node_user("a");
        for c in &cases {
            let req = NodeRequest {
                user: &a,
                operation: c.op,
                resource: c.resource,
                subresource: c.sub,
                namespace: c.ns,
                name: c.obj_name,
                object: c.object.as_ref(),
                old_object: c.old.as_ref(),
            };
            assert_eq!(admit(&req), c.want.map_err(str::to_string), "{}", c.name);
        }

        // Anyone but a node passes.
        let admin = UserInfo {
            username: "admin".into(),
            ..UserInfo::default()
        };
        for c in &cases {
            let req = NodeRequest {
                user: &admin,
                operation: c.op,
                resource: c.resource,
                subresource: c.sub,
                namespace: c.ns,
                name: c.obj_name,
                object: c.object.as_ref(),
                old_object: c.old.as_ref(),
            };
            assert_eq!(admit(&req), Ok(()), "{} as admin", c.name);
        }
    }

    #[test]
    fn unnamed_node_is_refused() {
        let u = node_user("");
        let req = NodeRequest {
            user: &u,
            operation: Operation::Create,
            resource: "events",
            subresource: "",
            namespace: "ns",
            name: "",
            object: None,
            old_object: None,
        };
        assert_eq!(
            admit(&req),
            Err(r#"could not determine node from user "system:node:""#.to_string())
        );
    }

    #[test]
    fn bound_pod_lookup() {
        let tr = json!({"spec": {"boundObjectRef": {"kind": "Pod", "name": "p"}}});
        assert_eq!(token_request_bound_pod(&tr), Some("p"));
        assert_eq!(token_request_bound_pod(&json!({})), None);
    }
}
