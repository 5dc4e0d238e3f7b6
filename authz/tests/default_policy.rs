//! The bootstrap policy through the public API, as the API server will use it: load the
//! defaults into an index, aggregate, and ask.

use authz::bootstrap;
use authz::rbac::{aggregate, covers, RbacIndex, RbacKind};
use authz::{Attributes, UserInfo};
use k8s_openapi::api::rbac::v1::{ClusterRole, PolicyRule};

/// The default ClusterRoles with aggregation applied, as the controller would leave them.
fn aggregated_roles() -> Vec<ClusterRole> {
    let mut roles = bootstrap::cluster_roles();
    for (name, rules) in aggregate(&roles) {
        if let Some(r) = roles
            .iter_mut()
            .find(|r| r.metadata.name.as_deref() == Some(&name))
        {
            r.rules = Some(rules);
        }
    }
    roles
}

fn rules_of(roles: &[ClusterRole], name: &str) -> Vec<PolicyRule> {
    roles
        .iter()
        .find(|r| r.metadata.name.as_deref() == Some(name))
        .and_then(|r| r.rules.clone())
        .unwrap_or_default()
}

fn default_index() -> RbacIndex {
    let mut idx = RbacIndex::new();
    for r in aggregated_roles() {
        idx.upsert(RbacKind::ClusterRole, &serde_json::to_value(r).unwrap());
    }
    for b in bootstrap::cluster_role_bindings() {
        idx.upsert(
            RbacKind::ClusterRoleBinding,
            &serde_json::to_value(b).unwrap(),
        );
    }
    for r in bootstrap::roles() {
        idx.upsert(RbacKind::Role, &serde_json::to_value(r).unwrap());
    }
    for b in bootstrap::role_bindings() {
        idx.upsert(RbacKind::RoleBinding, &serde_json::to_value(b).unwrap());
    }
    idx
}

fn who(name: &str, groups: &[&str]) -> UserInfo {
    UserInfo {
        username: name.into(),
        groups: groups.iter().map(|s| s.to_string()).collect(),
        ..UserInfo::default()
    }
}

fn res(u: &UserInfo, verb: &str, group: &str, resource: &str, ns: &str, name: &str) -> Attributes {
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

fn path(u: &UserInfo, verb: &str, p: &str) -> Attributes {
    Attributes {
        user: u.clone(),
        verb: verb.into(),
        path: p.into(),
        ..Attributes::default()
    }
}

#[test]
fn metadata_is_upstreams() {
    let metas = bootstrap::cluster_roles()
        .into_iter()
        .map(|r| r.metadata)
        .chain(
            bootstrap::cluster_role_bindings()
                .into_iter()
                .map(|b| b.metadata),
        )
        .chain(bootstrap::roles().into_iter().map(|r| r.metadata))
        .chain(bootstrap::role_bindings().into_iter().map(|r| r.metadata));
    for m in metas {
        let labels = m.labels.unwrap();
        assert_eq!(labels["kubernetes.io/bootstrapping"], "rbac-defaults");
        assert_eq!(
            m.annotations.unwrap()["rbac.authorization.kubernetes.io/autoupdate"],
            "true"
        );
    }
    // Every binding refers to a role that exists.
    let roles = bootstrap::cluster_roles();
    for b in bootstrap::cluster_role_bindings() {
        assert!(
            roles
                .iter()
                .any(|r| r.metadata.name == Some(b.role_ref.name.clone())),
            "{}",
            b.role_ref.name
        );
    }
    let system_node = bootstrap::cluster_role_bindings()
        .into_iter()
        .find(|b| b.role_ref.name == "system:node")
        .unwrap();
    assert!(system_node.subjects.unwrap_or_default().is_empty());
    assert_eq!(rules_of(&roles, "system:node"), bootstrap::node_rules());
}

#[test]
fn aggregation_nests_view_in_edit_in_admin() {
    let roles = aggregated_roles();
    let (view, edit, admin) = (
        rules_of(&roles, "view"),
        rules_of(&roles, "edit"),
        rules_of(&roles, "admin"),
    );
    assert!(!view.is_empty());
    for r in &view {
        assert!(edit.contains(r), "edit lacks view's {r:?}");
    }
    for r in &edit {
        assert!(admin.contains(r), "admin lacks edit's {r:?}");
    }
    assert!(admin.len() > edit.len() && edit.len() > view.len());
    assert_eq!(covers(&admin, &edit), Ok(()));
    // Aggregating again changes nothing.
    assert!(aggregate(&roles).is_empty());
}

#[test]
fn namespace_roles_via_role_bindings() {
    let mut idx = default_index();
    for (name, role) in [("e", "edit"), ("v", "view"), ("a", "admin")] {
        idx.upsert(
            RbacKind::RoleBinding,
            &serde_json::json!({"metadata":{"name":name,"namespace":"team"},
                "roleRef":{"apiGroup":"rbac.authorization.k8s.io","kind":"ClusterRole","name":role},
                "subjects":[{"kind":"User","name":format!("{role}-user")}]}),
        );
    }
    let (editor, viewer, admin) = (
        who("edit-user", &[]),
        who("view-user", &[]),
        who("admin-user", &[]),
    );
    let cases = [
        (
            res(&editor, "create", "apps", "deployments", "team", ""),
            true,
        ),
        (
            res(&editor, "patch", "apps", "deployments/scale", "team", "d"),
            true,
        ),
        (res(&editor, "get", "", "secrets", "team", "s"), true),
        (
            res(
                &editor,
                "create",
                "rbac.authorization.k8s.io",
                "rolebindings",
                "team",
                "",
            ),
            false,
        ),
        (
            res(&editor, "create", "apps", "deployments", "other", ""),
            false,
        ),
        (res(&viewer, "list", "", "pods", "team", ""), true),
        (res(&viewer, "get", "", "pods/log", "team", "p"), true),
        (res(&viewer, "get", "", "secrets", "team", "s"), false),
        (
            res(&viewer, "create", "apps", "deployments", "team", ""),
            false,
        ),
        (
            res(
                &admin,
                "create",
                "rbac.authorization.k8s.io",
                "rolebindings",
                "team",
                "",
            ),
            true,
        ),
        (res(&admin, "delete", "", "pods", "team", "p"), true),
    ];
    for (attrs, want) in cases {
        assert_eq!(idx.authorize(&attrs).allowed(), want, "{attrs:?}");
    }
    // An editor cannot grant cluster-admin's rules.
    let edit_rules = idx.rules_for(&editor, "team").all_rules();
    let cluster_admin = rules_of(&aggregated_roles(), "cluster-admin");
    let missing = covers(&edit_rules, &cluster_admin).unwrap_err();
    assert_eq!(missing.len(), 2, "{missing:?}");
}

#[test]
fn default_bindings() {
    let idx = default_index();
    let master = who("root", &["system:masters", "system:authenticated"]);
    let sched = who("system:kube-scheduler", &["system:authenticated"]);
    let kcm = who("system:kube-controller-manager", &["system:authenticated"]);
    let anyone = who("alice", &["system:authenticated"]);
    let anon = who("system:anonymous", &["system:unauthenticated"]);
    let bootstrapper = who(
        "system:bootstrap:abc123",
        &["system:bootstrappers", "system:authenticated"],
    );
    let proxy = who("system:kube-proxy", &["system:authenticated"]);
    let node = who("system:node:n1", &["system:nodes", "system:authenticated"]);
    let cases = [
        (
            "masters: anything",
            res(&master, "delete", "apps", "deployments", "x", "d"),
            true,
        ),
        (
            "masters: any path",
            path(&master, "post", "/whatever"),
            true,
        ),
        (
            "scheduler binds",
            res(&sched, "create", "", "pods/binding", "x", "p"),
            true,
        ),
        (
            "scheduler events",
            res(&sched, "create", "", "events", "x", ""),
            true,
        ),
        (
            "scheduler events.k8s.io",
            res(&sched, "create", "events.k8s.io", "events", "x", ""),
            true,
        ),
        (
            "scheduler pod status",
            res(&sched, "update", "", "pods/status", "x", "p"),
            true,
        ),
        (
            "scheduler watches nodes",
            res(&sched, "watch", "", "nodes", "", ""),
            true,
        ),
        (
            "scheduler own lease",
            res(
                &sched,
                "update",
                "coordination.k8s.io",
                "leases",
                "kube-system",
                "kube-scheduler",
            ),
            true,
        ),
        (
            "scheduler other lease",
            res(
                &sched,
                "update",
                "coordination.k8s.io",
                "leases",
                "kube-system",
                "kube-controller-manager",
            ),
            false,
        ),
        (
            "scheduler cannot create pods",
            res(&sched, "create", "", "pods", "x", ""),
            false,
        ),
        (
            "scheduler cannot read secrets",
            res(&sched, "get", "", "secrets", "x", "s"),
            false,
        ),
        (
            "kcm creates replicasets",
            res(&kcm, "create", "apps", "replicasets", "x", ""),
            true,
        ),
        (
            "kcm creates pods",
            res(&kcm, "create", "", "pods", "x", ""),
            true,
        ),
        (
            "kcm updates deployment status",
            res(&kcm, "update", "apps", "deployments/status", "x", "d"),
            true,
        ),
        (
            "kcm endpointslices",
            res(
                &kcm,
                "create",
                "discovery.k8s.io",
                "endpointslices",
                "x",
                "",
            ),
            true,
        ),
        (
            "kcm deletes nodes",
            res(&kcm, "delete", "", "nodes", "", "n"),
            true,
        ),
        (
            "kcm finalizes namespaces",
            res(&kcm, "update", "", "namespaces/finalize", "", "x"),
            true,
        ),
        (
            "kcm GC patches anything",
            res(&kcm, "patch", "example.com", "widgets", "x", "w"),
            true,
        ),
        (
            "kcm own lease",
            res(
                &kcm,
                "get",
                "coordination.k8s.io",
                "leases",
                "kube-system",
                "kube-controller-manager",
            ),
            true,
        ),
        (
            "kcm cannot escalate",
            res(
                &kcm,
                "create",
                "rbac.authorization.k8s.io",
                "clusterrolebindings",
                "",
                "",
            ),
            false,
        ),
        (
            "authenticated: /version",
            path(&anyone, "get", "/version"),
            true,
        ),
        ("authenticated: /api", path(&anyone, "get", "/api"), true),
        (
            "authenticated: /apis/apps/v1",
            path(&anyone, "get", "/apis/apps/v1"),
            true,
        ),
        (
            "authenticated: SSAR",
            res(
                &anyone,
                "create",
                "authorization.k8s.io",
                "selfsubjectaccessreviews",
                "",
                "",
            ),
            true,
        ),
        (
            "authenticated: SSRR",
            res(
                &anyone,
                "create",
                "authorization.k8s.io",
                "selfsubjectrulesreviews",
                "",
                "",
            ),
            true,
        ),
        (
            "authenticated: no pods",
            res(&anyone, "list", "", "pods", "default", ""),
            false,
        ),
        (
            "authenticated: no /metrics",
            path(&anyone, "get", "/metrics"),
            false,
        ),
        ("anonymous: /healthz", path(&anon, "get", "/healthz"), true),
        ("anonymous: /version", path(&anon, "get", "/version"), true),
        ("anonymous: no /api", path(&anon, "get", "/api"), false),
        (
            "bootstrapper: CSR",
            res(
                &bootstrapper,
                "create",
                "certificates.k8s.io",
                "certificatesigningrequests",
                "",
                "",
            ),
            true,
        ),
        (
            "bootstrapper: nodeclient (auto-approval)",
            res(
                &bootstrapper,
                "create",
                "certificates.k8s.io",
                "certificatesigningrequests/nodeclient",
                "",
                "",
            ),
            true,
        ),
        (
            "bootstrapper: not selfnodeclient",
            res(
                &bootstrapper,
                "create",
                "certificates.k8s.io",
                "certificatesigningrequests/selfnodeclient",
                "",
                "",
            ),
            false,
        ),
        (
            "bootstrapper: cannot approve",
            res(
                &bootstrapper,
                "update",
                "certificates.k8s.io",
                "certificatesigningrequests/approval",
                "",
                "node-csr-x",
            ),
            false,
        ),
        (
            "bootstrapper: cannot approve for a signer",
            res(
                &bootstrapper,
                "approve",
                "certificates.k8s.io",
                "signers",
                "",
                "kubernetes.io/kube-apiserver-client-kubelet",
            ),
            false,
        ),
        (
            "bootstrapper: no secrets",
            res(&bootstrapper, "get", "", "secrets", "kube-system", "x"),
            false,
        ),
        (
            "node: selfnodeclient (rotation)",
            res(
                &node,
                "create",
                "certificates.k8s.io",
                "certificatesigningrequests/selfnodeclient",
                "",
                "",
            ),
            true,
        ),
        (
            "controller manager: approves kubelet client CSRs",
            res(
                &kcm,
                "update",
                "certificates.k8s.io",
                "certificatesigningrequests/approval",
                "",
                "node-csr-x",
            ),
            true,
        ),
        (
            "controller manager: signs kubelet client CSRs",
            res(
                &kcm,
                "sign",
                "certificates.k8s.io",
                "signers",
                "",
                "kubernetes.io/kube-apiserver-client-kubelet",
            ),
            true,
        ),
        (
            "controller manager: no other signer",
            res(
                &kcm,
                "sign",
                "certificates.k8s.io",
                "signers",
                "",
                "example.com/other",
            ),
            false,
        ),
        (
            "bootstrapper: no nodes",
            res(&bootstrapper, "get", "", "nodes", "", "n"),
            false,
        ),
        (
            "kube-proxy: endpointslices",
            res(
                &proxy,
                "watch",
                "discovery.k8s.io",
                "endpointslices",
                "",
                "",
            ),
            true,
        ),
        (
            "node: nothing via RBAC",
            res(&node, "get", "", "pods", "x", "p"),
            false,
        ),
    ];
    for (name, attrs, want) in cases {
        assert_eq!(idx.authorize(&attrs).allowed(), want, "{name}");
    }
}
