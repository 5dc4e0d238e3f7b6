//! The Node authorizer (upstream `plugin/pkg/auth/authorizer/node`), with its graph reduced
//! to what Coxswain needs: which secrets, configmaps, claims and service accounts the pods
//! bound to each node use. A kubelet's credentials then open only its own pods' objects, so
//! one compromised node cannot read every secret in the cluster.

use std::collections::{BTreeSet, HashMap};
use std::sync::OnceLock;

use k8s_openapi::api::rbac::v1::PolicyRule;

use serde_json::Value;

use crate::bootstrap::node_rules;
use crate::rbac::rules_allow;
use crate::{Attributes, Decision};

/// Where node heartbeat Leases live.
const NODE_LEASE_NAMESPACE: &str = "kube-node-lease";

/// The kinds of object a node reaches through its pods.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ReachKind {
    Secret,
    ConfigMap,
    PersistentVolumeClaim,
    ServiceAccount,
}

/// What one pod refers to.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct PodRefs {
    pub(crate) node: String,
    pub(crate) secrets: BTreeSet<String>,
    pub(crate) config_maps: BTreeSet<String>,
    pub(crate) claims: BTreeSet<String>,
    pub(crate) service_account: String,
}

impl PodRefs {
    fn refers_to(&self, kind: ReachKind, name: &str) -> bool {
        match kind {
            ReachKind::Secret => self.secrets.contains(name),
            ReachKind::ConfigMap => self.config_maps.contains(name),
            ReachKind::PersistentVolumeClaim => self.claims.contains(name),
            ReachKind::ServiceAccount => self.service_account == name,
        }
    }
}

/// Pods bound to nodes, and what each uses; fed from the API server's pod watch.
#[derive(Debug, Clone, Default)]
pub struct NodeGraph {
    /// (namespace, name) → references.
    pods: HashMap<(String, String), PodRefs>,
    /// node → its pods, so a check looks at one node's pods rather than the cluster's.
    by_node: HashMap<String, BTreeSet<(String, String)>>,
}

fn str_at<'a>(v: &'a Value, path: &[&str]) -> Option<&'a str> {
    let mut cur = v;
    for p in path {
        cur = cur.get(p)?;
    }
    cur.as_str().filter(|s| !s.is_empty())
}

fn array<'a>(v: &'a Value, key: &str) -> impl Iterator<Item = &'a Value> + 'a {
    v.get(key)
        .and_then(Value::as_array)
        .map(|a| a.iter())
        .into_iter()
        .flatten()
}

/// Collects the names a pod spec refers to (upstream's `VisitPodSecretNames`,
/// `VisitPodConfigmapNames` and the graph populator's claim and service account edges).
pub(crate) fn pod_refs(spec: &Value, pod_name: &str, node: &str) -> PodRefs {
    let mut refs = PodRefs {
        node: node.to_string(),
        service_account: str_at(spec, &["serviceAccountName"])
            .or_else(|| str_at(spec, &["serviceAccount"]))
            .unwrap_or("default")
            .to_string(),
        ..PodRefs::default()
    };
    let add = |set: &mut BTreeSet<String>, name: Option<&str>| {
        if let Some(n) = name {
            set.insert(n.to_string());
        }
    };
    for s in array(spec, "imagePullSecrets") {
        add(&mut refs.secrets, str_at(s, &["name"]));
    }
    let containers = ["containers", "initContainers", "ephemeralContainers"]
        .into_iter()
        .flat_map(|k| array(spec, k));
    for c in containers {
        for e in array(c, "envFrom") {
            add(&mut refs.secrets, str_at(e, &["secretRef", "name"]));
            add(&mut refs.config_maps, str_at(e, &["configMapRef", "name"]));
        }
        for e in array(c, "env") {
            add(
                &mut refs.secrets,
                str_at(e, &["valueFrom", "secretKeyRef", "name"]),
            );
            add(
                &mut refs.config_maps,
                str_at(e, &["valueFrom", "configMapKeyRef", "name"]),
            );
        }
    }
    for v in array(spec, "volumes") {
        add(&mut refs.secrets, str_at(v, &["secret", "secretName"]));
        add(&mut refs.config_maps, str_at(v, &["configMap", "name"]));
        add(
            &mut refs.claims,
            str_at(v, &["persistentVolumeClaim", "claimName"]),
        );
        // Volume plugins that take credentials from a secret.
        add(
            &mut refs.secrets,
            str_at(v, &["csi", "nodePublishSecretRef", "name"]),
        );
        add(&mut refs.secrets, str_at(v, &["azureFile", "secretName"]));
        for plugin in [
            "cephfs",
            "cinder",
            "flexVolume",
            "iscsi",
            "rbd",
            "scaleIO",
            "storageos",
        ] {
            add(&mut refs.secrets, str_at(v, &[plugin, "secretRef", "name"]));
        }
        if let Some(projected) = v.get("projected") {
            for src in array(projected, "sources") {
                add(&mut refs.secrets, str_at(src, &["secret", "name"]));
                add(&mut refs.config_maps, str_at(src, &["configMap", "name"]));
            }
        }
        // A generic ephemeral volume's claim is named after the pod and the volume.
        if v.get("ephemeral").is_some() {
            if let Some(vol) = str_at(v, &["name"]) {
                refs.claims.insert(format!("{pod_name}-{vol}"));
            }
        }
    }
    refs
}

impl NodeGraph {
    /// Records (or replaces) a pod. A pod not yet bound to a node gives no node access, so
    /// it is only forgotten; an object without a name is ignored.
    pub fn upsert_pod(&mut self, pod: &Value) {
        let Some(name) = str_at(pod, &["metadata", "name"]) else {
            return;
        };
        let namespace = str_at(pod, &["metadata", "namespace"]).unwrap_or("default");
        self.remove_pod(namespace, name);
        let null = Value::Null;
        let spec = pod.get("spec").unwrap_or(&null);
        let Some(node) = str_at(spec, &["nodeName"]) else {
            return;
        };
        let key = (namespace.to_string(), name.to_string());
        self.by_node
            .entry(node.to_string())
            .or_default()
            .insert(key.clone());
        self.pods.insert(key, pod_refs(spec, name, node));
    }

    pub fn remove_pod(&mut self, namespace: &str, name: &str) {
        let key = (namespace.to_string(), name.to_string());
        if let Some(old) = self.pods.remove(&key) {
            if let Some(set) = self.by_node.get_mut(&old.node) {
                set.remove(&key);
                if set.is_empty() {
                    self.by_node.remove(&old.node);
                }
            }
        }
    }

    /// Whether a pod bound to `node` in `namespace` refers to the object.
    pub fn node_can_reach(&self, node: &str, kind: ReachKind, namespace: &str, name: &str) -> bool {
        let Some(pods) = self.by_node.get(node) else {
            return false;
        };
        pods.iter()
            .filter(|(ns, _)| ns == namespace)
            .filter_map(|key| self.pods.get(key))
            .any(|refs| refs.refers_to(kind, name))
    }
}

fn deny_no_relationship(node: &str) -> Decision {
    Decision::Deny(format!(
        "no relationship found between node '{node}' and this object"
    ))
}

/// Reads of one named, namespaced object reached through the node's pods (upstream
/// `authorizeReadNamespacedObject`): get, or a list/watch narrowed to that one name.
fn authorize_read(node: &str, kind: ReachKind, attrs: &Attributes, graph: &NodeGraph) -> Decision {
    if !matches!(attrs.verb.as_str(), "get" | "list" | "watch") {
        return Decision::Deny("can only read resources of this type".into());
    }
    if !attrs.subresource.is_empty() {
        return Decision::Deny("cannot read subresource".into());
    }
    if attrs.namespace.is_empty() {
        return Decision::Deny("can only read namespaced object of this type".into());
    }
    authorize_reachable(node, kind, attrs, graph)
}

fn authorize_reachable(
    node: &str,
    kind: ReachKind,
    attrs: &Attributes,
    graph: &NodeGraph,
) -> Decision {
    if attrs.name.is_empty() {
        return Decision::Deny("No Object name found".into());
    }
    if graph.node_can_reach(node, kind, &attrs.namespace, &attrs.name) {
        Decision::Allow(String::new())
    } else {
        deny_no_relationship(node)
    }
}

/// A single get through the graph (upstream `authorizeGet`).
fn authorize_get(node: &str, kind: ReachKind, attrs: &Attributes, graph: &NodeGraph) -> Decision {
    if attrs.verb != "get" {
        return Decision::Deny("can only get individual resources of this type".into());
    }
    if !attrs.subresource.is_empty() {
        return Decision::Deny("cannot get subresource".into());
    }
    authorize_reachable(node, kind, attrs, graph)
}

/// Status writes through the graph (upstream `authorizeStatusUpdate`).
fn authorize_status_update(
    node: &str,
    kind: ReachKind,
    attrs: &Attributes,
    graph: &NodeGraph,
) -> Decision {
    if !matches!(attrs.verb.as_str(), "update" | "patch") {
        return Decision::Deny("can only get/update/patch this type".into());
    }
    if attrs.subresource != "status" {
        return Decision::Deny("can only update status subresource".into());
    }
    authorize_reachable(node, kind, attrs, graph)
}

/// Tokens for the service accounts the node's pods run as (upstream `authorizeCreateToken`);
/// a node has no other business with service accounts.
fn authorize_create_token(node: &str, attrs: &Attributes, graph: &NodeGraph) -> Decision {
    if attrs.verb != "create" || attrs.name.is_empty() {
        return Decision::Deny("can only create tokens for individual service accounts".into());
    }
    if attrs.subresource != "token" {
        return Decision::Deny("can only create token subresource of serviceaccount".into());
    }
    authorize_reachable(node, ReachKind::ServiceAccount, attrs, graph)
}

/// The Node authorizer. Only node identities get an opinion. Requests for the objects a node
/// reaches through its pods are decided by the graph (and denied outright when unreachable,
/// so that no RBAC binding can widen a node's reach); everything else is allowed iff
/// [`node_rules`] allows it, and otherwise left to the next authorizer.
pub fn authorize_node(attrs: &Attributes, graph: &NodeGraph) -> Decision {
    let Some(node) = attrs.user.node_name() else {
        return Decision::NoOpinion(String::new());
    };
    if node.is_empty() {
        return Decision::NoOpinion(format!("unknown node for user {:?}", attrs.user.username));
    }
    if attrs.resource_request {
        match (attrs.api_group.as_str(), attrs.resource.as_str()) {
            ("", "secrets") => return authorize_read(node, ReachKind::Secret, attrs, graph),
            ("", "configmaps") => return authorize_read(node, ReachKind::ConfigMap, attrs, graph),
            ("", "persistentvolumeclaims") => {
                return if attrs.subresource == "status" {
                    authorize_status_update(node, ReachKind::PersistentVolumeClaim, attrs, graph)
                } else {
                    authorize_get(node, ReachKind::PersistentVolumeClaim, attrs, graph)
                };
            }
            ("", "serviceaccounts") => return authorize_create_token(node, attrs, graph),
            ("coordination.k8s.io", "leases") => {
                return authorize_own_named(node, attrs, "a node lease", "node lease", true)
            }
            ("storage.k8s.io", "csinodes") => {
                return authorize_own_named(node, attrs, "a CSINode", "CSINode", false)
            }
            _ => {}
        }
    }
    // Built once: nodes ask on every heartbeat and status update.
    static NODE_RULES: OnceLock<Vec<PolicyRule>> = OnceLock::new();
    if rules_allow(attrs, NODE_RULES.get_or_init(node_rules)) {
        Decision::Allow(String::new())
    } else {
        Decision::NoOpinion(String::new())
    }
}

/// Objects named after the node itself: its heartbeat Lease (only in kube-node-lease) and
/// its CSINode (upstream `authorizeLease`, `authorizeCSINode`). Create is allowed by name
/// blindly, because the name is in the body; NodeRestriction checks it there.
fn authorize_own_named(
    node: &str,
    attrs: &Attributes,
    what: &str,
    short: &str,
    lease: bool,
) -> Decision {
    if !matches!(
        attrs.verb.as_str(),
        "get" | "create" | "update" | "patch" | "delete"
    ) {
        return Decision::Deny(format!(
            "can only get, create, update, patch, or delete {what}"
        ));
    }
    if lease && attrs.namespace != NODE_LEASE_NAMESPACE {
        return Decision::Deny(format!(
            "can only access leases in the {NODE_LEASE_NAMESPACE:?} system namespace"
        ));
    }
    if !lease && !attrs.subresource.is_empty() {
        return Decision::Deny("cannot authorize CSINode subresources".into());
    }
    if attrs.verb != "create" && attrs.name != node {
        return Decision::Deny(format!(
            "can only access {short} with the same name as the requesting node"
        ));
    }
    Decision::Allow(String::new())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::UserInfo;
    use serde_json::json;

    fn pod(ns: &str, name: &str, node: &str) -> Value {
        json!({
            "metadata": {"name": name, "namespace": ns},
            "spec": {
                "nodeName": node,
                "serviceAccountName": format!("{name}-sa"),
                "imagePullSecrets": [{"name": format!("{name}-pull")}],
                "initContainers": [{"name": "i", "envFrom": [{"secretRef": {"name": format!("{name}-init-env")}}]}],
                "containers": [{
                    "name": "c",
                    "env": [
                        {"name": "A", "valueFrom": {"secretKeyRef": {"name": format!("{name}-env-secret"), "key": "k"}}},
                        {"name": "B", "valueFrom": {"configMapKeyRef": {"name": format!("{name}-env-cm"), "key": "k"}}},
                        {"name": "C", "value": "plain"}
                    ],
                    "envFrom": [{"configMapRef": {"name": format!("{name}-envfrom-cm")}}]
                }],
                "ephemeralContainers": [{"name": "e", "env": [{"name": "D", "valueFrom": {"secretKeyRef": {"name": format!("{name}-debug"), "key": "k"}}}]}],
                "volumes": [
                    {"name": "s", "secret": {"secretName": format!("{name}-vol-secret")}},
                    {"name": "c", "configMap": {"name": format!("{name}-vol-cm")}},
                    {"name": "p", "persistentVolumeClaim": {"claimName": format!("{name}-claim")}},
                    {"name": "eph", "ephemeral": {"volumeClaimTemplate": {"spec": {}}}},
                    {"name": "proj", "projected": {"sources": [
                        {"secret": {"name": format!("{name}-proj-secret")}},
                        {"configMap": {"name": format!("{name}-proj-cm")}},
                        {"serviceAccountToken": {"path": "t"}}
                    ]}}
                ]
            }
        })
    }

    #[test]
    fn graph_collects_every_reference() {
        let mut g = NodeGraph::default();
        g.upsert_pod(&pod("ns", "p", "a"));
        let cases = [
            (ReachKind::Secret, "p-pull"),
            (ReachKind::Secret, "p-init-env"),
            (ReachKind::Secret, "p-env-secret"),
            (ReachKind::Secret, "p-debug"),
            (ReachKind::Secret, "p-vol-secret"),
            (ReachKind::Secret, "p-proj-secret"),
            (ReachKind::ConfigMap, "p-env-cm"),
            (ReachKind::ConfigMap, "p-envfrom-cm"),
            (ReachKind::ConfigMap, "p-vol-cm"),
            (ReachKind::ConfigMap, "p-proj-cm"),
            (ReachKind::PersistentVolumeClaim, "p-claim"),
            (ReachKind::PersistentVolumeClaim, "p-eph"),
            (ReachKind::ServiceAccount, "p-sa"),
        ];
        for (kind, name) in cases {
            assert!(g.node_can_reach("a", kind, "ns", name), "{kind:?} {name}");
            assert!(
                !g.node_can_reach("b", kind, "ns", name),
                "{kind:?} {name} from b"
            );
            assert!(
                !g.node_can_reach("a", kind, "other", name),
                "{kind:?} {name} in other ns"
            );
        }
        assert!(
            !g.node_can_reach("a", ReachKind::ConfigMap, "ns", "p-vol-secret"),
            "kinds are distinct"
        );
    }

    #[test]
    fn graph_follows_pod_lifecycle() {
        let mut g = NodeGraph::default();
        let mut p = pod("ns", "p", "");
        g.upsert_pod(&p);
        assert!(
            !g.node_can_reach("a", ReachKind::Secret, "ns", "p-pull"),
            "unbound"
        );
        p["spec"]["nodeName"] = json!("a");
        g.upsert_pod(&p);
        assert!(g.node_can_reach("a", ReachKind::Secret, "ns", "p-pull"));
        // A pod without a serviceAccountName runs as "default".
        g.upsert_pod(
            &json!({"metadata": {"name": "q", "namespace": "ns"}, "spec": {"nodeName": "a"}}),
        );
        assert!(g.node_can_reach("a", ReachKind::ServiceAccount, "ns", "default"));
        g.remove_pod("ns", "p");
        assert!(!g.node_can_reach("a", ReachKind::Secret, "ns", "p-pull"));
        g.remove_pod("ns", "q");
        assert!(g.by_node.is_empty() && g.pods.is_empty());
        // Garbage is ignored.
        g.upsert_pod(&json!("nope"));
        g.upsert_pod(&json!({"spec": {"nodeName": "a"}}));
        assert!(g.pods.is_empty());
    }

    fn node_user(n: &str) -> UserInfo {
        UserInfo {
            username: format!("system:node:{n}"),
            groups: vec!["system:nodes".into(), "system:authenticated".into()],
            ..UserInfo::default()
        }
    }

    fn attrs(
        u: &UserInfo,
        verb: &str,
        group: &str,
        resource: &str,
        ns: &str,
        name: &str,
    ) -> Attributes {
        let (resource, sub) = resource.split_once('/').unwrap_or((resource, ""));
        Attributes {
            user: u.clone(),
            verb: verb.into(),
            resource_request: true,
            api_group: group.into(),
            resource: resource.into(),
            subresource: sub.into(),
            namespace: ns.into(),
            name: name.into(),
            ..Attributes::default()
        }
    }

    #[derive(Debug)]
    enum Want {
        Allow,
        Deny(&'static str),
        NoOpinion,
    }

    #[test]
    fn authorizer() {
        let mut g = NodeGraph::default();
        g.upsert_pod(&pod("ns", "pa", "a"));
        g.upsert_pod(&pod("ns", "pb", "b"));
        let a = node_user("a");
        let no_rel = "no relationship found between node 'a' and this object";
        let cases = [
            (
                "own pod's secret",
                attrs(&a, "get", "", "secrets", "ns", "pa-vol-secret"),
                Want::Allow,
            ),
            (
                "single-object watch",
                attrs(&a, "watch", "", "secrets", "ns", "pa-vol-secret"),
                Want::Allow,
            ),
            (
                "other node's secret",
                attrs(&a, "get", "", "secrets", "ns", "pb-vol-secret"),
                Want::Deny(no_rel),
            ),
            (
                "list all secrets",
                attrs(&a, "list", "", "secrets", "ns", ""),
                Want::Deny("No Object name found"),
            ),
            (
                "write secret",
                attrs(&a, "update", "", "secrets", "ns", "pa-vol-secret"),
                Want::Deny("can only read resources of this type"),
            ),
            (
                "own configmap",
                attrs(&a, "get", "", "configmaps", "ns", "pa-env-cm"),
                Want::Allow,
            ),
            (
                "other configmap",
                attrs(&a, "get", "", "configmaps", "ns", "pb-env-cm"),
                Want::Deny(no_rel),
            ),
            (
                "own claim",
                attrs(&a, "get", "", "persistentvolumeclaims", "ns", "pa-claim"),
                Want::Allow,
            ),
            (
                "own claim status",
                attrs(
                    &a,
                    "patch",
                    "",
                    "persistentvolumeclaims/status",
                    "ns",
                    "pa-claim",
                ),
                Want::Allow,
            ),
            (
                "list claims",
                attrs(&a, "list", "", "persistentvolumeclaims", "ns", ""),
                Want::Deny("can only get individual resources of this type"),
            ),
            (
                "other claim",
                attrs(&a, "get", "", "persistentvolumeclaims", "ns", "pb-claim"),
                Want::Deny(no_rel),
            ),
            (
                "own token",
                attrs(&a, "create", "", "serviceaccounts/token", "ns", "pa-sa"),
                Want::Allow,
            ),
            (
                "other token",
                attrs(&a, "create", "", "serviceaccounts/token", "ns", "pb-sa"),
                Want::Deny(no_rel),
            ),
            (
                "get SA",
                attrs(&a, "get", "", "serviceaccounts", "ns", "pa-sa"),
                Want::Deny("can only create tokens for individual service accounts"),
            ),
            (
                "own lease",
                attrs(
                    &a,
                    "update",
                    "coordination.k8s.io",
                    "leases",
                    "kube-node-lease",
                    "a",
                ),
                Want::Allow,
            ),
            (
                "create lease",
                attrs(
                    &a,
                    "create",
                    "coordination.k8s.io",
                    "leases",
                    "kube-node-lease",
                    "",
                ),
                Want::Allow,
            ),
            (
                "other lease",
                attrs(
                    &a,
                    "update",
                    "coordination.k8s.io",
                    "leases",
                    "kube-node-lease",
                    "b",
                ),
                Want::Deny("can only access node lease with the same name as the requesting node"),
            ),
            (
                "lease elsewhere",
                attrs(
                    &a,
                    "get",
                    "coordination.k8s.io",
                    "leases",
                    "kube-system",
                    "a",
                ),
                Want::Deny("can only access leases in the \"kube-node-lease\" system namespace"),
            ),
            (
                "node rules: pods",
                attrs(&a, "watch", "", "pods", "", ""),
                Want::Allow,
            ),
            (
                "node rules: node status",
                attrs(&a, "patch", "", "nodes/status", "", "a"),
                Want::Allow,
            ),
            (
                "node rules: events",
                attrs(&a, "create", "", "events", "ns", ""),
                Want::Allow,
            ),
            (
                "node rules: services",
                attrs(&a, "list", "", "services", "", ""),
                Want::Allow,
            ),
            (
                "not in node rules",
                attrs(&a, "create", "apps", "deployments", "ns", ""),
                Want::NoOpinion,
            ),
            (
                "delete nodes",
                attrs(&a, "delete", "", "nodes", "", "a"),
                Want::NoOpinion,
            ),
        ];
        for (name, at, want) in cases {
            let ok = match (authorize_node(&at, &g), &want) {
                (Decision::Allow(_), Want::Allow) | (Decision::NoOpinion(_), Want::NoOpinion) => {
                    true
                }
                (Decision::Deny(got), Want::Deny(w)) => got == *w,
                _ => false,
            };
            assert!(
                ok,
                "{name}: want {want:?}, got {:?}",
                authorize_node(&at, &g)
            );
        }

        // Not a node: no opinion, even with a node-like name.
        let mut impostor = node_user("a");
        impostor.groups.clear();
        let at = attrs(&impostor, "get", "", "secrets", "ns", "pa-vol-secret");
        assert_eq!(authorize_node(&at, &g), Decision::NoOpinion(String::new()));
        // A node identity without a name.
        let at = attrs(&node_user(""), "get", "", "pods", "ns", "");
        assert!(
            matches!(authorize_node(&at, &g), Decision::NoOpinion(r) if r.contains("unknown node"))
        );
        // After the pod goes, so does access.
        g.remove_pod("ns", "pa");
        let at = attrs(&a, "get", "", "secrets", "ns", "pa-vol-secret");
        assert!(!authorize_node(&at, &g).allowed());
    }
}
