//! The default RBAC policy the API server reconciles at startup: upstream's bootstrap policy
//! (`plugin/pkg/auth/authorizer/rbac/bootstrappolicy`, v1.32) for the roles a Coxswain
//! cluster uses, so that clients written against Kubernetes find the roles and bindings they
//! expect (`kubectl create rolebinding --clusterrole=edit`, `kubectl auth can-i`).
//!
//! Rule lists are sorted the way upstream's rule builder sorts them, so a `kubectl get
//! clusterrole -o yaml` reads like upstream's.

use std::collections::BTreeMap;

use k8s_openapi::api::rbac::v1::{
    AggregationRule, ClusterRole, ClusterRoleBinding, PolicyRule, Role, RoleBinding, RoleRef,
    Subject,
};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{LabelSelector, ObjectMeta};

use crate::names;

/// The label upstream puts on every default object (and `kubectl get clusterroles -l` finds).
pub const BOOTSTRAP_LABEL: (&str, &str) = ("kubernetes.io/bootstrapping", "rbac-defaults");
/// Reconciliation may add missing rules/subjects to objects carrying `"true"` here.
pub const AUTOUPDATE_ANNOTATION: &str = "rbac.authorization.kubernetes.io/autoupdate";
pub const AGGREGATE_TO_ADMIN: &str = "rbac.authorization.k8s.io/aggregate-to-admin";
pub const AGGREGATE_TO_EDIT: &str = "rbac.authorization.k8s.io/aggregate-to-edit";
pub const AGGREGATE_TO_VIEW: &str = "rbac.authorization.k8s.io/aggregate-to-view";

const READ: &[&str] = &["get", "list", "watch"];
const WRITE: &[&str] = &["create", "update", "patch", "delete", "deletecollection"];
const READ_WRITE: &[&str] = &[
    "get",
    "list",
    "watch",
    "create",
    "update",
    "patch",
    "delete",
    "deletecollection",
];

const LEGACY: &str = "";
const APPS: &str = "apps";
const AUTHENTICATION: &str = "authentication.k8s.io";
const AUTHORIZATION: &str = "authorization.k8s.io";
const AUTOSCALING: &str = "autoscaling";
const BATCH: &str = "batch";
const CERTIFICATES: &str = "certificates.k8s.io";
const COORDINATION: &str = "coordination.k8s.io";
const DISCOVERY: &str = "discovery.k8s.io";
const EVENTS: &str = "events.k8s.io";
const EXTENSIONS: &str = "extensions";
const NETWORKING: &str = "networking.k8s.io";
const NODE: &str = "node.k8s.io";
const POLICY: &str = "policy";
const RBAC: &str = "rbac.authorization.k8s.io";
const STORAGE: &str = "storage.k8s.io";

fn strings(items: &[&str]) -> Vec<String> {
    items.iter().map(|s| s.to_string()).collect()
}

fn sorted(items: &[&str]) -> Vec<String> {
    let mut v = strings(items);
    v.sort();
    v.dedup();
    v
}

/// A resource rule (upstream `NewRule(verbs).Groups(groups).Resources(resources)`).
fn rule(verbs: &[&str], groups: &[&str], resources: &[&str]) -> PolicyRule {
    PolicyRule {
        api_groups: Some(strings(groups)),
        resources: Some(sorted(resources)),
        verbs: sorted(verbs),
        ..PolicyRule::default()
    }
}

/// A resource rule restricted to some object names.
fn named(verbs: &[&str], groups: &[&str], resources: &[&str], names: &[&str]) -> PolicyRule {
    PolicyRule {
        resource_names: Some(sorted(names)),
        ..rule(verbs, groups, resources)
    }
}

/// A non-resource rule.
fn urls(verbs: &[&str], urls: &[&str]) -> PolicyRule {
    PolicyRule {
        non_resource_urls: Some(sorted(urls)),
        verbs: sorted(verbs),
        ..PolicyRule::default()
    }
}

/// Upstream's `eventsRule()`: recording events through either events API.
fn events_rule() -> PolicyRule {
    rule(
        &["create", "update", "patch"],
        &[LEGACY, EVENTS],
        &["events"],
    )
}

fn meta(name: &str, namespace: Option<&str>, extra_labels: &[(&str, &str)]) -> ObjectMeta {
    let mut labels =
        BTreeMap::from([(BOOTSTRAP_LABEL.0.to_string(), BOOTSTRAP_LABEL.1.to_string())]);
    for (k, v) in extra_labels {
        labels.insert(k.to_string(), v.to_string());
    }
    ObjectMeta {
        name: Some(name.to_string()),
        namespace: namespace.map(str::to_string),
        labels: Some(labels),
        annotations: Some(BTreeMap::from([(
            AUTOUPDATE_ANNOTATION.to_string(),
            "true".to_string(),
        )])),
        ..ObjectMeta::default()
    }
}

fn cluster_role(name: &str, labels: &[(&str, &str)], rules: Vec<PolicyRule>) -> ClusterRole {
    ClusterRole {
        metadata: meta(name, None, labels),
        rules: Some(rules),
        aggregation_rule: None,
    }
}

/// A role whose rules the aggregation controller fills from roles labelled `selector_label`.
fn aggregated_role(name: &str, labels: &[(&str, &str)], selector_label: &str) -> ClusterRole {
    ClusterRole {
        metadata: meta(name, None, labels),
        rules: None,
        aggregation_rule: Some(AggregationRule {
            cluster_role_selectors: Some(vec![LabelSelector {
                match_labels: Some(BTreeMap::from([(
                    selector_label.to_string(),
                    "true".to_string(),
                )])),
                match_expressions: None,
            }]),
        }),
    }
}

/// What a node may do at all (upstream `NodeRules()`, v1.32 with default feature gates). The
/// Node authorizer narrows the object-specific parts (secrets, configmaps, volumes, tokens,
/// leases) to what the node's own pods use; NodeRestriction narrows writes to its own objects.
pub fn node_rules() -> Vec<PolicyRule> {
    vec![
        // Delegated authentication/authorization checks for the kubelet API (non-mutating).
        rule(&["create"], &[AUTHENTICATION], &["tokenreviews"]),
        rule(
            &["create"],
            &[AUTHORIZATION],
            &["subjectaccessreviews", "localsubjectaccessreviews"],
        ),
        // Service environment variables.
        rule(READ, &[LEGACY], &["services"]),
        // Registering and reporting on its Node object.
        rule(&["create", "get", "list", "watch"], &[LEGACY], &["nodes"]),
        rule(&["update", "patch"], &[LEGACY], &["nodes/status"]),
        rule(&["update", "patch"], &[LEGACY], &["nodes"]),
        rule(&["create", "update", "patch"], &[LEGACY], &["events"]),
        // Pods: watching its own, mirror pods, status, evictions.
        rule(READ, &[LEGACY], &["pods"]),
        rule(&["create", "delete"], &[LEGACY], &["pods"]),
        rule(&["update", "patch"], &[LEGACY], &["pods/status"]),
        rule(&["create"], &[LEGACY], &["pods/eviction"]),
        // Volume and environment sources.
        rule(READ, &[LEGACY], &["secrets", "configmaps"]),
        rule(
            &["get"],
            &[LEGACY],
            &["persistentvolumeclaims", "persistentvolumes"],
        ),
        rule(&["get"], &[LEGACY], &["endpoints"]),
        // Client certificate rotation.
        rule(
            &["create", "get", "list", "watch"],
            &[CERTIFICATES],
            &["certificatesigningrequests"],
        ),
        // Node heartbeats.
        rule(
            &["get", "create", "update", "patch", "delete"],
            &[COORDINATION],
            &["leases"],
        ),
        rule(&["get"], &[STORAGE], &["volumeattachments"]),
        // Service account tokens for its pods.
        rule(&["create"], &[LEGACY], &["serviceaccounts/token"]),
        rule(
            &["get", "update", "patch"],
            &[LEGACY],
            &["persistentvolumeclaims/status"],
        ),
        rule(READ, &[STORAGE], &["csidrivers"]),
        rule(
            &["get", "create", "update", "patch", "delete"],
            &[STORAGE],
            &["csinodes"],
        ),
        rule(READ, &[NODE], &["runtimeclasses"]),
    ]
}

/// The rules of upstream's per-controller roles (`controller_policy.go`,
/// `system:controller:*`) for the controllers Coxswain's controller-manager runs:
/// ReplicaSet, Deployment, DaemonSet, StatefulSet, Job, CronJob, TTL-after-finished, garbage
/// collector, Namespace, ServiceAccount, root CA publisher, Endpoints, EndpointSlice, PodGC,
/// node lifecycle, taint eviction and node IPAM. Upstream's controller-manager runs each
/// controller under its own service account; ours runs them all under one identity, so
/// `system:kube-controller-manager` carries their union.
fn controller_rules() -> Vec<PolicyRule> {
    vec![
        // generic-garbage-collector: read and update or delete anything with owners.
        rule(
            &["get", "list", "watch", "patch", "update", "delete"],
            &["*"],
            &["*"],
        ),
        // namespace-controller: empty a terminating namespace of everything.
        rule(
            &["get", "list", "delete", "deletecollection"],
            &["*"],
            &["*"],
        ),
        rule(
            &["get", "list", "watch", "delete"],
            &[LEGACY],
            &["namespaces"],
        ),
        rule(
            &["update"],
            &[LEGACY],
            &["namespaces/finalize", "namespaces/status"],
        ),
        // replicaset / deployment / daemonset / statefulset controllers.
        rule(
            &["get", "list", "watch", "update"],
            &[APPS, EXTENSIONS],
            &["replicasets", "deployments", "daemonsets"],
        ),
        rule(
            &["update"],
            &[APPS, EXTENSIONS],
            &[
                "replicasets/status",
                "replicasets/finalizers",
                "deployments/status",
                "deployments/finalizers",
                "daemonsets/status",
                "daemonsets/finalizers",
            ],
        ),
        rule(
            &[
                "create", "delete", "get", "list", "patch", "update", "watch",
            ],
            &[APPS, EXTENSIONS],
            &["replicasets"],
        ),
        rule(&["get", "list", "watch"], &[APPS], &["statefulsets"]),
        rule(
            &["update"],
            &[APPS],
            &["statefulsets/status", "statefulsets/finalizers"],
        ),
        rule(
            &[
                "create", "delete", "get", "list", "patch", "update", "watch",
            ],
            &[APPS],
            &["controllerrevisions"],
        ),
        rule(
            &[
                "get", "list", "watch", "create", "update", "patch", "delete",
            ],
            &[LEGACY],
            &["pods"],
        ),
        rule(&["create"], &[LEGACY], &["pods/binding"]),
        rule(
            &[
                "get", "list", "watch", "create", "update", "patch", "delete",
            ],
            &[LEGACY],
            &["persistentvolumeclaims"],
        ),
        rule(&["update"], &[LEGACY], &["pods/finalizers"]),
        // job / cronjob / ttl-after-finished controllers.
        rule(
            &[
                "get", "list", "watch", "create", "update", "patch", "delete",
            ],
            &[BATCH],
            &["jobs"],
        ),
        rule(&["update"], &[BATCH], &["jobs/status", "jobs/finalizers"]),
        rule(&["get", "list", "watch", "update"], &[BATCH], &["cronjobs"]),
        rule(
            &["update"],
            &[BATCH],
            &["cronjobs/status", "cronjobs/finalizers"],
        ),
        // serviceaccount / root-ca-cert-publisher controllers.
        rule(&["create"], &[LEGACY], &["serviceaccounts"]),
        rule(&["create", "update"], &[LEGACY], &["configmaps"]),
        // endpoint / endpointslice controllers.
        rule(READ, &[LEGACY], &["services", "pods", "nodes"]),
        rule(
            &["get", "list", "watch", "create", "update", "delete"],
            &[LEGACY],
            &["endpoints"],
        ),
        rule(&["create"], &[LEGACY], &["endpoints/restricted"]),
        rule(
            &["get", "list", "watch", "create", "update", "delete"],
            &[DISCOVERY],
            &["endpointslices"],
        ),
        rule(&["update"], &[LEGACY], &["services/finalizers"]),
        // node lifecycle / node IPAM / pod GC / taint eviction controllers.
        rule(
            &["get", "list", "watch", "update", "patch", "delete"],
            &[LEGACY],
            &["nodes"],
        ),
        rule(
            &["patch", "update"],
            &[LEGACY],
            &["nodes/status", "pods/status"],
        ),
        events_rule(),
    ]
}

/// Upstream's `system:kube-controller-manager` role, then [`controller_rules`].
fn kube_controller_manager_rules() -> Vec<PolicyRule> {
    let mut rules = vec![
        events_rule(),
        rule(&["create"], &[COORDINATION], &["leases"]),
        named(
            &["get", "update"],
            &[COORDINATION],
            &["leases"],
            &["kube-controller-manager"],
        ),
        rule(&["create"], &[LEGACY], &["secrets", "serviceaccounts"]),
        rule(&["delete"], &[LEGACY], &["secrets"]),
        rule(
            &["get"],
            &[LEGACY],
            &["namespaces", "secrets", "serviceaccounts", "configmaps"],
        ),
        rule(&["update"], &[LEGACY], &["secrets", "serviceaccounts"]),
        rule(&["create"], &[AUTHENTICATION], &["tokenreviews"]),
        rule(&["create"], &[AUTHORIZATION], &["subjectaccessreviews"]),
        // Shared informers for every resource the controllers watch.
        rule(&["list", "watch"], &["*"], &["*"]),
        rule(&["create"], &[LEGACY], &["serviceaccounts/token"]),
        // csrapproving and csrsigning (upstream's certificate-controller).
        rule(
            &["get", "list", "watch", "delete"],
            &[CERTIFICATES],
            &["certificatesigningrequests"],
        ),
        rule(
            &["update"],
            &[CERTIFICATES],
            &[
                "certificatesigningrequests/approval",
                "certificatesigningrequests/status",
            ],
        ),
        named(
            &["approve"],
            &[CERTIFICATES],
            &["signers"],
            &["kubernetes.io/kube-apiserver-client-kubelet"],
        ),
        named(
            &["sign"],
            &[CERTIFICATES],
            &["signers"],
            &[
                "kubernetes.io/kube-apiserver-client",
                "kubernetes.io/kube-apiserver-client-kubelet",
            ],
        ),
    ];
    for r in controller_rules() {
        if !rules.contains(&r) {
            rules.push(r);
        }
    }
    rules
}

/// The default ClusterRoles.
pub fn cluster_roles() -> Vec<ClusterRole> {
    vec![
        // Can do anything anywhere; bound to system:masters.
        cluster_role(
            "cluster-admin",
            &[],
            vec![rule(&["*"], &["*"], &["*"]), urls(&["*"], &["*"])],
        ),
        // Just enough to discover the API and check health.
        cluster_role(
            "system:discovery",
            &[],
            vec![urls(
                &["get"],
                &[
                    "/livez",
                    "/readyz",
                    "/healthz",
                    "/version",
                    "/version/",
                    "/openapi",
                    "/openapi/*",
                    "/api",
                    "/api/*",
                    "/apis",
                    "/apis/*",
                ],
            )],
        ),
        cluster_role(
            "system:monitoring",
            &[],
            vec![urls(
                &["get"],
                &[
                    "/metrics",
                    "/metrics/slis",
                    "/livez",
                    "/readyz",
                    "/healthz",
                    "/livez/*",
                    "/readyz/*",
                    "/healthz/*",
                ],
            )],
        ),
        // What any user may learn about themselves.
        cluster_role(
            "system:basic-user",
            &[],
            vec![
                rule(
                    &["create"],
                    &[AUTHORIZATION],
                    &["selfsubjectaccessreviews", "selfsubjectrulesreviews"],
                ),
                rule(&["create"], &[AUTHENTICATION], &["selfsubjectreviews"]),
            ],
        ),
        // Readable even without credentials.
        cluster_role(
            "system:public-info-viewer",
            &[],
            vec![urls(
                &["get"],
                &["/livez", "/readyz", "/healthz", "/version", "/version/"],
            )],
        ),
        // Namespace admin: edit plus granting access within the namespace.
        aggregated_role("admin", &[], AGGREGATE_TO_ADMIN),
        // Namespace editor: every user-level action, nothing that controls the namespace.
        aggregated_role("edit", &[(AGGREGATE_TO_ADMIN, "true")], AGGREGATE_TO_EDIT),
        // Namespace viewer: reads, except of secrets and other escalating resources.
        aggregated_role("view", &[(AGGREGATE_TO_EDIT, "true")], AGGREGATE_TO_VIEW),
        cluster_role(
            "system:aggregate-to-admin",
            &[(AGGREGATE_TO_ADMIN, "true")],
            vec![
                rule(
                    &["create"],
                    &[AUTHORIZATION],
                    &["localsubjectaccessreviews"],
                ),
                rule(READ_WRITE, &[RBAC], &["roles", "rolebindings"]),
            ],
        ),
        cluster_role(
            "system:aggregate-to-edit",
            &[(AGGREGATE_TO_EDIT, "true")],
            aggregate_to_edit_rules(),
        ),
        cluster_role(
            "system:aggregate-to-view",
            &[(AGGREGATE_TO_VIEW, "true")],
            aggregate_to_view_rules(),
        ),
        cluster_role(
            "system:kube-scheduler",
            &[],
            vec![
                events_rule(),
                rule(&["create"], &[COORDINATION], &["leases"]),
                named(
                    &["get", "update"],
                    &[COORDINATION],
                    &["leases"],
                    &["kube-scheduler"],
                ),
                rule(READ, &[LEGACY], &["nodes"]),
                rule(&["get", "list", "watch", "delete"], &[LEGACY], &["pods"]),
                rule(&["create"], &[LEGACY], &["pods/binding", "bindings"]),
                rule(&["patch", "update"], &[LEGACY], &["pods/status"]),
                rule(READ, &[LEGACY], &["replicationcontrollers", "services"]),
                rule(READ, &[APPS, EXTENSIONS], &["replicasets"]),
                rule(READ, &[APPS], &["statefulsets"]),
                rule(READ, &[POLICY], &["poddisruptionbudgets"]),
                rule(
                    READ,
                    &[LEGACY],
                    &["persistentvolumeclaims", "persistentvolumes"],
                ),
                rule(&["create"], &[AUTHENTICATION], &["tokenreviews"]),
                rule(&["create"], &[AUTHORIZATION], &["subjectaccessreviews"]),
                rule(READ, &[STORAGE], &["csinodes"]),
                rule(READ, &[LEGACY], &["namespaces"]),
                rule(READ, &[STORAGE], &["csidrivers"]),
                rule(READ, &[STORAGE], &["csistoragecapacities"]),
            ],
        ),
        cluster_role(
            "system:volume-scheduler",
            &[],
            vec![
                rule(
                    &["get", "list", "watch", "update", "patch"],
                    &[LEGACY],
                    &["persistentvolumes"],
                ),
                rule(READ, &[STORAGE], &["storageclasses"]),
                rule(
                    &["get", "list", "watch", "update", "patch"],
                    &[LEGACY],
                    &["persistentvolumeclaims"],
                ),
            ],
        ),
        cluster_role(
            "system:kube-controller-manager",
            &[],
            kube_controller_manager_rules(),
        ),
        cluster_role("system:node", &[], node_rules()),
        cluster_role(
            "system:node-proxier",
            &[],
            vec![
                rule(&["list", "watch"], &[LEGACY], &["services", "endpoints"]),
                rule(READ, &[LEGACY], &["nodes"]),
                events_rule(),
                rule(&["list", "watch"], &[DISCOVERY], &["endpointslices"]),
            ],
        ),
        cluster_role(
            "system:node-bootstrapper",
            &[],
            vec![rule(
                &["create", "get", "list", "watch"],
                &[CERTIFICATES],
                &["certificatesigningrequests"],
            )],
        ),
        // Auto-approval of node client certificates (csrapproving asks a SubjectAccessReview
        // for these subresources).
        cluster_role(
            "system:certificates.k8s.io:certificatesigningrequests:nodeclient",
            &[],
            vec![rule(
                &["create"],
                &[CERTIFICATES],
                &["certificatesigningrequests/nodeclient"],
            )],
        ),
        cluster_role(
            "system:certificates.k8s.io:certificatesigningrequests:selfnodeclient",
            &[],
            vec![rule(
                &["create"],
                &[CERTIFICATES],
                &["certificatesigningrequests/selfnodeclient"],
            )],
        ),
        cluster_role(
            "system:certificates.k8s.io:kube-apiserver-client-approver",
            &[],
            vec![named(
                &["approve"],
                &[CERTIFICATES],
                &["signers"],
                &["kubernetes.io/kube-apiserver-client"],
            )],
        ),
        cluster_role(
            "system:certificates.k8s.io:kube-apiserver-client-kubelet-approver",
            &[],
            vec![named(
                &["approve"],
                &[CERTIFICATES],
                &["signers"],
                &["kubernetes.io/kube-apiserver-client-kubelet"],
            )],
        ),
        cluster_role(
            "system:auth-delegator",
            &[],
            vec![
                rule(&["create"], &[AUTHENTICATION], &["tokenreviews"]),
                rule(&["create"], &[AUTHORIZATION], &["subjectaccessreviews"]),
            ],
        ),
        cluster_role(
            "system:service-account-issuer-discovery",
            &[],
            vec![urls(
                &["get"],
                &["/.well-known/openid-configuration", "/openid/v1/jwks"],
            )],
        ),
    ]
}

fn aggregate_to_edit_rules() -> Vec<PolicyRule> {
    vec![
        // Reads of escalating resources (view leaves these out).
        rule(
            READ,
            &[LEGACY],
            &[
                "pods/attach",
                "pods/proxy",
                "pods/exec",
                "pods/portforward",
                "secrets",
                "services/proxy",
            ],
        ),
        rule(&["impersonate"], &[LEGACY], &["serviceaccounts"]),
        rule(
            WRITE,
            &[LEGACY],
            &[
                "pods",
                "pods/attach",
                "pods/proxy",
                "pods/exec",
                "pods/portforward",
            ],
        ),
        rule(&["create"], &[LEGACY], &["pods/eviction"]),
        rule(
            WRITE,
            &[LEGACY],
            &[
                "replicationcontrollers",
                "replicationcontrollers/scale",
                "serviceaccounts",
                "services",
                "services/proxy",
                "persistentvolumeclaims",
                "configmaps",
                "secrets",
                "events",
            ],
        ),
        rule(&["create"], &[LEGACY], &["serviceaccounts/token"]),
        rule(
            WRITE,
            &[APPS],
            &[
                "statefulsets",
                "statefulsets/scale",
                "daemonsets",
                "deployments",
                "deployments/scale",
                "deployments/rollback",
                "replicasets",
                "replicasets/scale",
            ],
        ),
        rule(WRITE, &[AUTOSCALING], &["horizontalpodautoscalers"]),
        rule(WRITE, &[BATCH], &["jobs", "cronjobs"]),
        rule(
            WRITE,
            &[EXTENSIONS],
            &[
                "daemonsets",
                "deployments",
                "deployments/scale",
                "deployments/rollback",
                "ingresses",
                "replicasets",
                "replicasets/scale",
                "replicationcontrollers/scale",
                "networkpolicies",
            ],
        ),
        rule(WRITE, &[POLICY], &["poddisruptionbudgets"]),
        rule(WRITE, &[NETWORKING], &["networkpolicies", "ingresses"]),
        rule(READ_WRITE, &[COORDINATION], &["leases"]),
    ]
}

fn aggregate_to_view_rules() -> Vec<PolicyRule> {
    vec![
        rule(
            READ,
            &[LEGACY],
            &[
                "pods",
                "replicationcontrollers",
                "replicationcontrollers/scale",
                "serviceaccounts",
                "services",
                "services/status",
                "endpoints",
                "persistentvolumeclaims",
                "persistentvolumeclaims/status",
                "configmaps",
            ],
        ),
        rule(
            READ,
            &[LEGACY],
            &[
                "limitranges",
                "resourcequotas",
                "bindings",
                "events",
                "pods/status",
                "resourcequotas/status",
                "namespaces/status",
                "replicationcontrollers/status",
                "pods/log",
            ],
        ),
        // Reading namespaces at namespace scope shows which namespaces one has access to.
        rule(READ, &[LEGACY], &["namespaces"]),
        rule(READ, &[DISCOVERY], &["endpointslices"]),
        rule(
            READ,
            &[APPS],
            &[
                "controllerrevisions",
                "statefulsets",
                "statefulsets/status",
                "statefulsets/scale",
                "daemonsets",
                "daemonsets/status",
                "deployments",
                "deployments/status",
                "deployments/scale",
                "replicasets",
                "replicasets/status",
                "replicasets/scale",
            ],
        ),
        rule(
            READ,
            &[AUTOSCALING],
            &[
                "horizontalpodautoscalers",
                "horizontalpodautoscalers/status",
            ],
        ),
        rule(
            READ,
            &[BATCH],
            &["jobs", "cronjobs", "cronjobs/status", "jobs/status"],
        ),
        rule(
            READ,
            &[EXTENSIONS],
            &[
                "daemonsets",
                "daemonsets/status",
                "deployments",
                "deployments/scale",
                "deployments/status",
                "ingresses",
                "ingresses/status",
                "replicasets",
                "replicasets/scale",
                "replicasets/status",
                "replicationcontrollers/scale",
                "networkpolicies",
            ],
        ),
        rule(
            READ,
            &[POLICY],
            &["poddisruptionbudgets", "poddisruptionbudgets/status"],
        ),
        rule(
            READ,
            &[NETWORKING],
            &["ingresses", "ingresses/status", "networkpolicies"],
        ),
    ]
}

fn user(name: &str) -> Subject {
    Subject {
        api_group: Some(RBAC.to_string()),
        kind: "User".to_string(),
        name: name.to_string(),
        namespace: None,
    }
}

fn group(name: &str) -> Subject {
    Subject {
        api_group: Some(RBAC.to_string()),
        kind: "Group".to_string(),
        name: name.to_string(),
        namespace: None,
    }
}

fn service_account(namespace: &str, name: &str) -> Subject {
    Subject {
        api_group: None,
        kind: "ServiceAccount".to_string(),
        name: name.to_string(),
        namespace: Some(namespace.to_string()),
    }
}

fn role_ref(kind: &str, name: &str) -> RoleRef {
    RoleRef {
        api_group: RBAC.to_string(),
        kind: kind.to_string(),
        name: name.to_string(),
    }
}

/// A ClusterRoleBinding named like the role it binds, as upstream names its defaults.
fn cluster_binding(role: &str, subjects: Vec<Subject>) -> ClusterRoleBinding {
    ClusterRoleBinding {
        metadata: meta(role, None, &[]),
        role_ref: role_ref("ClusterRole", role),
        // Upstream stores no subjects as an absent list (system:node).
        subjects: (!subjects.is_empty()).then_some(subjects),
    }
}

/// The default ClusterRoleBindings.
///
/// `system:node` is bound to nobody, as upstream since 1.8: nodes get their rights from the
/// Node authorizer, which limits them to their own pods' objects. `system:node-bootstrapper`
/// bound to `system:bootstrappers` is Coxswain's addition (upstream leaves it to kubeadm): it
/// lets `coxswain agent --token` request its client certificate.
pub fn cluster_role_bindings() -> Vec<ClusterRoleBinding> {
    vec![
        cluster_binding("cluster-admin", vec![group(names::SYSTEM_MASTERS)]),
        cluster_binding("system:monitoring", vec![group("system:monitoring")]),
        cluster_binding("system:discovery", vec![group(names::AUTHENTICATED)]),
        cluster_binding("system:basic-user", vec![group(names::AUTHENTICATED)]),
        cluster_binding(
            "system:public-info-viewer",
            vec![group(names::AUTHENTICATED), group(names::UNAUTHENTICATED)],
        ),
        cluster_binding("system:node-proxier", vec![user("system:kube-proxy")]),
        cluster_binding(
            "system:kube-controller-manager",
            vec![user("system:kube-controller-manager")],
        ),
        cluster_binding("system:kube-scheduler", vec![user("system:kube-scheduler")]),
        cluster_binding(
            "system:volume-scheduler",
            vec![user("system:kube-scheduler")],
        ),
        cluster_binding("system:node", vec![]),
        cluster_binding(
            "system:node-bootstrapper",
            vec![group(names::BOOTSTRAPPERS_GROUP)],
        ),
        cluster_binding(
            "system:service-account-issuer-discovery",
            vec![group(names::SERVICE_ACCOUNTS_GROUP)],
        ),
        // Coxswain's additions, as kubeadm's `kubeadm:node-autoapprove-*` bindings: a
        // bootstrap token's node gets its first client certificate approved, a node its
        // renewed one.
        cluster_binding(
            "system:certificates.k8s.io:certificatesigningrequests:nodeclient",
            vec![group(names::BOOTSTRAPPERS_GROUP)],
        ),
        cluster_binding(
            "system:certificates.k8s.io:certificatesigningrequests:selfnodeclient",
            vec![group("system:nodes")],
        ),
    ]
}

const KUBE_SYSTEM: &str = "kube-system";

/// Leader election for a kube-system component: its named Lease (and, as upstream, its
/// legacy ConfigMap lock), plus creating the Lease, which our components do on first start.
fn leader_locking_rules(component: &str) -> Vec<PolicyRule> {
    vec![
        rule(&["watch"], &[LEGACY], &["configmaps"]),
        named(&["get", "update"], &[LEGACY], &["configmaps"], &[component]),
        rule(&["create"], &[COORDINATION], &["leases"]),
        named(
            &["get", "update", "patch"],
            &[COORDINATION],
            &["leases"],
            &[component],
        ),
    ]
}

fn namespaced_role(name: &str, rules: Vec<PolicyRule>) -> Role {
    Role {
        metadata: meta(name, Some(KUBE_SYSTEM), &[]),
        rules: Some(rules),
    }
}

/// The default Roles (all in kube-system).
pub fn roles() -> Vec<Role> {
    vec![
        namespaced_role(
            "extension-apiserver-authentication-reader",
            vec![named(
                READ,
                &[LEGACY],
                &["configmaps"],
                &["extension-apiserver-authentication"],
            )],
        ),
        namespaced_role(
            "system::leader-locking-kube-controller-manager",
            leader_locking_rules("kube-controller-manager"),
        ),
        namespaced_role(
            "system::leader-locking-kube-scheduler",
            leader_locking_rules("kube-scheduler"),
        ),
    ]
}

fn namespaced_binding(name: &str, role: &str, subjects: Vec<Subject>) -> RoleBinding {
    RoleBinding {
        metadata: meta(name, Some(KUBE_SYSTEM), &[]),
        role_ref: role_ref("Role", role),
        subjects: Some(subjects),
    }
}

/// The default RoleBindings (all in kube-system).
pub fn role_bindings() -> Vec<RoleBinding> {
    vec![
        namespaced_binding(
            "system::extension-apiserver-authentication-reader",
            "extension-apiserver-authentication-reader",
            vec![
                user("system:kube-controller-manager"),
                user("system:kube-scheduler"),
            ],
        ),
        namespaced_binding(
            "system::leader-locking-kube-controller-manager",
            "system::leader-locking-kube-controller-manager",
            vec![
                user("system:kube-controller-manager"),
                service_account(KUBE_SYSTEM, "kube-controller-manager"),
            ],
        ),
        namespaced_binding(
            "system::leader-locking-kube-scheduler",
            "system::leader-locking-kube-scheduler",
            vec![
                user("system:kube-scheduler"),
                service_account(KUBE_SYSTEM, "kube-scheduler"),
            ],
        ),
    ]
}
