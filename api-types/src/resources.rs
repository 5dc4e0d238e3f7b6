//! The table of served resources.
//!
//! Discovery documents, URL routing and etcd keys are all computed from [`RESOURCES`], so adding
//! a kind here is the whole of making it exist; nothing else keeps its own list.

use std::fmt;

/// An API verb, as discovery spells it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Verb {
    /// `POST` to a collection.
    Create,
    /// `DELETE` on one object.
    Delete,
    /// `DELETE` on a collection.
    DeleteCollection,
    /// `GET` on one object.
    Get,
    /// `GET` on a collection.
    List,
    /// `PATCH` on one object.
    Patch,
    /// `PUT` on one object.
    Update,
    /// `GET` with `watch=true`.
    Watch,
}

impl Verb {
    /// Every verb, in the order discovery lists them.
    pub const ALL: &'static [Verb] = &[
        Verb::Create,
        Verb::Delete,
        Verb::DeleteCollection,
        Verb::Get,
        Verb::List,
        Verb::Patch,
        Verb::Update,
        Verb::Watch,
    ];

    /// The spelling used by discovery and by RBAC rules.
    pub fn as_str(self) -> &'static str {
        match self {
            Verb::Create => "create",
            Verb::Delete => "delete",
            Verb::DeleteCollection => "deletecollection",
            Verb::Get => "get",
            Verb::List => "list",
            Verb::Patch => "patch",
            Verb::Update => "update",
            Verb::Watch => "watch",
        }
    }
}

impl fmt::Display for Verb {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A subresource served under its parent, e.g. `pods/status`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Subresource {
    /// The path segment after the object name: `status`, `scale`, `log`, ...
    pub name: &'static str,
    /// The kind the subresource accepts and returns; discovery reports it, clients decode by it.
    pub kind: &'static str,
    /// The group of `kind` when it differs from the parent's (`policy` for `pods/eviction`);
    /// `None` means the parent's, which is how upstream discovery omits it.
    pub group: Option<&'static str>,
    /// The version of `kind` when it differs from the parent's; `None` means the parent's.
    pub version: Option<&'static str>,
    /// The verbs the subresource accepts.
    pub verbs: &'static [Verb],
}

/// One served resource: everything discovery, routing and storage need to know about it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ResourceInfo {
    /// API group; `""` for the core group served under `/api/v1`.
    pub group: &'static str,
    /// API version within the group, e.g. `v1`.
    pub version: &'static str,
    /// The object kind, e.g. `Pod`.
    pub kind: &'static str,
    /// The URL path segment and the RBAC resource name, e.g. `pods`.
    pub plural: &'static str,
    /// The lower-case singular kubectl accepts, e.g. `pod`.
    pub singular: &'static str,
    /// Whether objects live inside a namespace.
    pub namespaced: bool,
    /// The verbs the resource itself (not its subresources) accepts.
    pub verbs: &'static [Verb],
    /// Abbreviations kubectl accepts, e.g. `po`.
    pub short_names: &'static [&'static str],
    /// Groupings such as `all` that `kubectl get all` expands.
    pub categories: &'static [&'static str],
    /// Subresources served under each object.
    pub subresources: &'static [Subresource],
}

impl ResourceInfo {
    /// The `apiVersion` objects carry: `v1` for core, `group/version` otherwise.
    pub fn api_version(&self) -> String {
        if self.group.is_empty() {
            self.version.to_string()
        } else {
            format!("{}/{}", self.group, self.version)
        }
    }

    /// The discovery group-version string; identical to [`Self::api_version`].
    pub fn group_version(&self) -> String {
        self.api_version()
    }

    /// The kind of a list response, e.g. `PodList`.
    pub fn list_kind(&self) -> String {
        format!("{}List", self.kind)
    }

    /// The key prefix under which every object of this resource is stored, e.g.
    /// `/registry/core/pods/`. The core group is spelled `core` so that no group name can
    /// collide with a plural.
    pub fn storage_prefix(&self) -> String {
        let group = if self.group.is_empty() {
            "core"
        } else {
            self.group
        };
        format!("/registry/{group}/{}/", self.plural)
    }

    /// The key prefix of one namespace's objects, e.g. `/registry/core/pods/default/`. The
    /// trailing slash keeps a range read of `default` from also returning `default2`.
    pub fn namespace_prefix(&self, namespace: &str) -> String {
        format!("{}{namespace}/", self.storage_prefix())
    }

    /// The key of one object, e.g. `/registry/core/pods/default/web-1` or
    /// `/registry/core/nodes/n1`. A namespace passed for a cluster-scoped resource is ignored,
    /// because the URL a cluster-scoped object is reached by never carries one.
    ///
    /// # Panics
    ///
    /// If the resource is namespaced and `namespace` is `None`: such a key would sit where a
    /// namespace prefix belongs and corrupt range reads.
    pub fn storage_key(&self, namespace: Option<&str>, name: &str) -> String {
        if self.namespaced {
            let namespace = namespace.unwrap_or_else(|| {
                panic!(
                    "{} is namespaced: storage_key needs a namespace",
                    self.plural
                )
            });
            format!("{}{name}", self.namespace_prefix(namespace))
        } else {
            format!("{}{name}", self.storage_prefix())
        }
    }

    /// Whether the resource itself accepts `verb`; routing answers 405 when it does not.
    pub fn has_verb(&self, verb: Verb) -> bool {
        self.verbs.contains(&verb)
    }

    /// The subresource called `name`, if this resource serves it.
    pub fn subresource(&self, name: &str) -> Option<&'static Subresource> {
        self.subresources.iter().find(|s| s.name == name)
    }
}

const ALL_VERBS: &[Verb] = Verb::ALL;

/// Namespaces cannot be deleted as a collection upstream: namespace deletion is a finalizer
/// dance per object.
const NAMESPACE_VERBS: &[Verb] = &[
    Verb::Create,
    Verb::Delete,
    Verb::Get,
    Verb::List,
    Verb::Patch,
    Verb::Update,
    Verb::Watch,
];

const GET_PATCH_UPDATE: &[Verb] = &[Verb::Get, Verb::Patch, Verb::Update];
const CREATE: &[Verb] = &[Verb::Create];
const CREATE_GET: &[Verb] = &[Verb::Create, Verb::Get];
const PROXY_VERBS: &[Verb] = &[
    Verb::Create,
    Verb::Delete,
    Verb::Get,
    Verb::Patch,
    Verb::Update,
];

const ALL_CATEGORY: &[&str] = &["all"];

const fn sub(name: &'static str, kind: &'static str, verbs: &'static [Verb]) -> Subresource {
    Subresource {
        name,
        kind,
        group: None,
        version: None,
        verbs,
    }
}

const fn sub_in(
    name: &'static str,
    group: &'static str,
    version: &'static str,
    kind: &'static str,
    verbs: &'static [Verb],
) -> Subresource {
    Subresource {
        name,
        kind,
        group: Some(group),
        version: Some(version),
        verbs,
    }
}

const fn status(kind: &'static str) -> Subresource {
    sub("status", kind, GET_PATCH_UPDATE)
}

/// `scale` always speaks `autoscaling/v1` `Scale`, whatever the parent's group.
const SCALE: Subresource = sub_in("scale", "autoscaling", "v1", "Scale", GET_PATCH_UPDATE);

const NO_STRS: &[&str] = &[];
const NO_SUBRESOURCES: &[Subresource] = &[];

/// Builds a table entry with every verb and no short names, categories or subresources; the
/// table then overrides only what differs, which keeps the upstream differences visible.
const fn res(
    group: &'static str,
    version: &'static str,
    kind: &'static str,
    plural: &'static str,
    singular: &'static str,
    namespaced: bool,
) -> ResourceInfo {
    ResourceInfo {
        group,
        version,
        kind,
        plural,
        singular,
        namespaced,
        verbs: ALL_VERBS,
        short_names: NO_STRS,
        categories: NO_STRS,
        subresources: NO_SUBRESOURCES,
    }
}

/// Every served resource, grouped by group-version in discovery order (core first). Values are
/// those Kubernetes 1.32 discovery serves.
pub static RESOURCES: &[ResourceInfo] = &[
    // core/v1
    ResourceInfo {
        verbs: NAMESPACE_VERBS,
        short_names: &["ns"],
        subresources: &[
            status("Namespace"),
            sub("finalize", "Namespace", &[Verb::Update]),
        ],
        ..res("", "v1", "Namespace", "namespaces", "namespace", false)
    },
    ResourceInfo {
        short_names: &["po"],
        categories: ALL_CATEGORY,
        subresources: &[
            status("Pod"),
            sub("binding", "Binding", CREATE),
            sub_in("eviction", "policy", "v1", "Eviction", CREATE),
            sub("log", "Pod", &[Verb::Get]),
            sub("exec", "PodExecOptions", CREATE_GET),
            sub("attach", "PodAttachOptions", CREATE_GET),
            sub("portforward", "PodPortForwardOptions", CREATE_GET),
            sub("proxy", "PodProxyOptions", PROXY_VERBS),
        ],
        ..res("", "v1", "Pod", "pods", "pod", true)
    },
    ResourceInfo {
        short_names: &["svc"],
        categories: ALL_CATEGORY,
        subresources: &[
            status("Service"),
            sub("proxy", "ServiceProxyOptions", PROXY_VERBS),
        ],
        ..res("", "v1", "Service", "services", "service", true)
    },
    ResourceInfo {
        short_names: &["ep"],
        ..res("", "v1", "Endpoints", "endpoints", "endpoints", true)
    },
    ResourceInfo {
        short_names: &["cm"],
        ..res("", "v1", "ConfigMap", "configmaps", "configmap", true)
    },
    res("", "v1", "Secret", "secrets", "secret", true),
    ResourceInfo {
        short_names: &["sa"],
        subresources: &[sub_in(
            "token",
            "authentication.k8s.io",
            "v1",
            "TokenRequest",
            CREATE,
        )],
        ..res(
            "",
            "v1",
            "ServiceAccount",
            "serviceaccounts",
            "serviceaccount",
            true,
        )
    },
    ResourceInfo {
        short_names: &["no"],
        subresources: &[
            status("Node"),
            sub("proxy", "NodeProxyOptions", PROXY_VERBS),
        ],
        ..res("", "v1", "Node", "nodes", "node", false)
    },
    ResourceInfo {
        short_names: &["ev"],
        ..res("", "v1", "Event", "events", "event", true)
    },
    ResourceInfo {
        short_names: &["limits"],
        ..res("", "v1", "LimitRange", "limitranges", "limitrange", true)
    },
    ResourceInfo {
        short_names: &["quota"],
        subresources: &[status("ResourceQuota")],
        ..res(
            "",
            "v1",
            "ResourceQuota",
            "resourcequotas",
            "resourcequota",
            true,
        )
    },
    ResourceInfo {
        short_names: &["pvc"],
        subresources: &[status("PersistentVolumeClaim")],
        ..res(
            "",
            "v1",
            "PersistentVolumeClaim",
            "persistentvolumeclaims",
            "persistentvolumeclaim",
            true,
        )
    },
    ResourceInfo {
        short_names: &["pv"],
        subresources: &[status("PersistentVolume")],
        ..res(
            "",
            "v1",
            "PersistentVolume",
            "persistentvolumes",
            "persistentvolume",
            false,
        )
    },
    // apps/v1
    ResourceInfo {
        short_names: &["deploy"],
        categories: ALL_CATEGORY,
        subresources: &[status("Deployment"), SCALE],
        ..res(
            "apps",
            "v1",
            "Deployment",
            "deployments",
            "deployment",
            true,
        )
    },
    ResourceInfo {
        short_names: &["rs"],
        categories: ALL_CATEGORY,
        subresources: &[status("ReplicaSet"), SCALE],
        ..res(
            "apps",
            "v1",
            "ReplicaSet",
            "replicasets",
            "replicaset",
            true,
        )
    },
    ResourceInfo {
        short_names: &["sts"],
        categories: ALL_CATEGORY,
        subresources: &[status("StatefulSet"), SCALE],
        ..res(
            "apps",
            "v1",
            "StatefulSet",
            "statefulsets",
            "statefulset",
            true,
        )
    },
    ResourceInfo {
        short_names: &["ds"],
        categories: ALL_CATEGORY,
        subresources: &[status("DaemonSet")],
        ..res("apps", "v1", "DaemonSet", "daemonsets", "daemonset", true)
    },
    res(
        "apps",
        "v1",
        "ControllerRevision",
        "controllerrevisions",
        "controllerrevision",
        true,
    ),
    // batch/v1
    ResourceInfo {
        categories: ALL_CATEGORY,
        subresources: &[status("Job")],
        ..res("batch", "v1", "Job", "jobs", "job", true)
    },
    ResourceInfo {
        short_names: &["cj"],
        categories: ALL_CATEGORY,
        subresources: &[status("CronJob")],
        ..res("batch", "v1", "CronJob", "cronjobs", "cronjob", true)
    },
    // coordination.k8s.io/v1
    res(
        "coordination.k8s.io",
        "v1",
        "Lease",
        "leases",
        "lease",
        true,
    ),
    // discovery.k8s.io/v1
    res(
        "discovery.k8s.io",
        "v1",
        "EndpointSlice",
        "endpointslices",
        "endpointslice",
        true,
    ),
    // events.k8s.io/v1
    ResourceInfo {
        short_names: &["ev"],
        ..res("events.k8s.io", "v1", "Event", "events", "event", true)
    },
    // policy/v1
    ResourceInfo {
        short_names: &["pdb"],
        subresources: &[status("PodDisruptionBudget")],
        ..res(
            "policy",
            "v1",
            "PodDisruptionBudget",
            "poddisruptionbudgets",
            "poddisruptionbudget",
            true,
        )
    },
    // rbac.authorization.k8s.io/v1
    res(
        "rbac.authorization.k8s.io",
        "v1",
        "Role",
        "roles",
        "role",
        true,
    ),
    res(
        "rbac.authorization.k8s.io",
        "v1",
        "RoleBinding",
        "rolebindings",
        "rolebinding",
        true,
    ),
    res(
        "rbac.authorization.k8s.io",
        "v1",
        "ClusterRole",
        "clusterroles",
        "clusterrole",
        false,
    ),
    res(
        "rbac.authorization.k8s.io",
        "v1",
        "ClusterRoleBinding",
        "clusterrolebindings",
        "clusterrolebinding",
        false,
    ),
    // authentication.k8s.io/v1 and authorization.k8s.io/v1: create-only reviews, answered by
    // the API server from the request itself and never stored.
    ResourceInfo {
        verbs: CREATE,
        ..res(
            "authentication.k8s.io",
            "v1",
            "TokenReview",
            "tokenreviews",
            "tokenreview",
            false,
        )
    },
    ResourceInfo {
        verbs: CREATE,
        ..res(
            "authentication.k8s.io",
            "v1",
            "SelfSubjectReview",
            "selfsubjectreviews",
            "selfsubjectreview",
            false,
        )
    },
    ResourceInfo {
        verbs: CREATE,
        ..res(
            "authorization.k8s.io",
            "v1",
            "LocalSubjectAccessReview",
            "localsubjectaccessreviews",
            "localsubjectaccessreview",
            true,
        )
    },
    ResourceInfo {
        verbs: CREATE,
        ..res(
            "authorization.k8s.io",
            "v1",
            "SelfSubjectAccessReview",
            "selfsubjectaccessreviews",
            "selfsubjectaccessreview",
            false,
        )
    },
    ResourceInfo {
        verbs: CREATE,
        ..res(
            "authorization.k8s.io",
            "v1",
            "SelfSubjectRulesReview",
            "selfsubjectrulesreviews",
            "selfsubjectrulesreview",
            false,
        )
    },
    ResourceInfo {
        verbs: CREATE,
        ..res(
            "authorization.k8s.io",
            "v1",
            "SubjectAccessReview",
            "subjectaccessreviews",
            "subjectaccessreview",
            false,
        )
    },
    // certificates.k8s.io/v1
    ResourceInfo {
        short_names: &["csr"],
        subresources: &[
            sub("approval", "CertificateSigningRequest", GET_PATCH_UPDATE),
            status("CertificateSigningRequest"),
        ],
        ..res(
            "certificates.k8s.io",
            "v1",
            "CertificateSigningRequest",
            "certificatesigningrequests",
            "certificatesigningrequest",
            false,
        )
    },
    // networking.k8s.io/v1
    ResourceInfo {
        short_names: &["ing"],
        subresources: &[status("Ingress")],
        ..res(
            "networking.k8s.io",
            "v1",
            "Ingress",
            "ingresses",
            "ingress",
            true,
        )
    },
    ResourceInfo {
        short_names: &["netpol"],
        ..res(
            "networking.k8s.io",
            "v1",
            "NetworkPolicy",
            "networkpolicies",
            "networkpolicy",
            true,
        )
    },
    // scheduling.k8s.io/v1
    ResourceInfo {
        short_names: &["pc"],
        ..res(
            "scheduling.k8s.io",
            "v1",
            "PriorityClass",
            "priorityclasses",
            "priorityclass",
            false,
        )
    },
    // storage.k8s.io/v1
    ResourceInfo {
        short_names: &["sc"],
        ..res(
            "storage.k8s.io",
            "v1",
            "StorageClass",
            "storageclasses",
            "storageclass",
            false,
        )
    },
];

/// The resource served at `/apis/{group}/{version}/.../{plural}` (or `/api/v1/...` with an
/// empty group).
pub fn find(group: &str, version: &str, plural: &str) -> Option<&'static ResourceInfo> {
    RESOURCES
        .iter()
        .find(|r| r.group == group && r.version == version && r.plural == plural)
}

/// The resource whose objects carry this group, version and kind; used to route a decoded
/// object (e.g. from `kubectl apply`) to its storage.
pub fn find_by_kind(group: &str, version: &str, kind: &str) -> Option<&'static ResourceInfo> {
    RESOURCES
        .iter()
        .find(|r| r.group == group && r.version == version && r.kind == kind)
}

/// Every served group with its versions, in table order (core, spelled `""`, first), which is
/// the order discovery lists them and clients prefer them.
pub fn groups() -> Vec<(&'static str, Vec<&'static str>)> {
    let mut out: Vec<(&'static str, Vec<&'static str>)> = Vec::new();
    for r in RESOURCES {
        match out.iter_mut().find(|(g, _)| *g == r.group) {
            Some((_, versions)) => {
                if !versions.contains(&r.version) {
                    versions.push(r.version);
                }
            }
            None => out.push((r.group, vec![r.version])),
        }
    }
    out
}

/// Resolves a name the way kubectl does: plural, singular, short name or kind, matched without
/// regard to case, optionally qualified as `name.group` or `name.version.group`. Several
/// resources may match (`events` is served by core and `events.k8s.io`); they come back in
/// table order, so the first is the one kubectl would pick.
pub fn resolve(name: &str) -> Vec<&'static ResourceInfo> {
    RESOURCES
        .iter()
        .filter(|r| {
            names_match(r, name)
                || qualified_match(r, name, r.group)
                || qualified_match(r, name, &format!("{}.{}", r.version, r.group))
        })
        .collect()
}

fn names_match(r: &ResourceInfo, name: &str) -> bool {
    [r.plural, r.singular, r.kind]
        .iter()
        .chain(r.short_names)
        .any(|n| n.eq_ignore_ascii_case(name))
}

/// Matches `name.suffix`; the core group has no qualified spelling, as in kubectl.
fn qualified_match(r: &ResourceInfo, name: &str, suffix: &str) -> bool {
    let Some(split) = name.len().checked_sub(suffix.len() + 1) else {
        return false;
    };
    if r.group.is_empty() || !name.is_char_boundary(split) {
        return false;
    }
    let (head, tail) = name.split_at(split);
    tail.strip_prefix('.')
        .is_some_and(|g| g.eq_ignore_ascii_case(suffix))
        && names_match(r, head)
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::{ClusterResourceScope, NamespaceResourceScope, Resource};
    use std::collections::HashSet;

    /// Maps k8s-openapi's scope marker types to the table's `namespaced` flag.
    trait Scope {
        const NAMESPACED: bool;
    }
    impl Scope for NamespaceResourceScope {
        const NAMESPACED: bool = true;
    }
    impl Scope for ClusterResourceScope {
        const NAMESPACED: bool = false;
    }

    #[derive(Debug)]
    struct Upstream {
        group: &'static str,
        version: &'static str,
        kind: &'static str,
        plural: &'static str,
        namespaced: bool,
        api_version: &'static str,
    }

    fn upstream<T>() -> Upstream
    where
        T: Resource,
        T::Scope: Scope,
    {
        Upstream {
            group: T::GROUP,
            version: T::VERSION,
            kind: T::KIND,
            plural: T::URL_PATH_SEGMENT,
            namespaced: <T::Scope as Scope>::NAMESPACED,
            api_version: T::API_VERSION,
        }
    }

    macro_rules! upstream_types {
        ($($ty:path),* $(,)?) => {
            vec![$(upstream::<$ty>()),*]
        };
    }

    /// One k8s-openapi type per table entry, in table order: the generated constants come from
    /// the upstream OpenAPI document, so any typo in the table shows up as a mismatch here.
    fn upstream_table() -> Vec<Upstream> {
        use k8s_openapi::api::*;
        upstream_types![
            core::v1::Namespace,
            core::v1::Pod,
            core::v1::Service,
            core::v1::Endpoints,
            core::v1::ConfigMap,
            core::v1::Secret,
            core::v1::ServiceAccount,
            core::v1::Node,
            core::v1::Event,
            core::v1::LimitRange,
            core::v1::ResourceQuota,
            core::v1::PersistentVolumeClaim,
            core::v1::PersistentVolume,
            apps::v1::Deployment,
            apps::v1::ReplicaSet,
            apps::v1::StatefulSet,
            apps::v1::DaemonSet,
            apps::v1::ControllerRevision,
            batch::v1::Job,
            batch::v1::CronJob,
            coordination::v1::Lease,
            discovery::v1::EndpointSlice,
            events::v1::Event,
            policy::v1::PodDisruptionBudget,
            rbac::v1::Role,
            rbac::v1::RoleBinding,
            rbac::v1::ClusterRole,
            rbac::v1::ClusterRoleBinding,
            authentication::v1::TokenReview,
            authentication::v1::SelfSubjectReview,
            authorization::v1::LocalSubjectAccessReview,
            authorization::v1::SelfSubjectAccessReview,
            authorization::v1::SelfSubjectRulesReview,
            authorization::v1::SubjectAccessReview,
            certificates::v1::CertificateSigningRequest,
            networking::v1::Ingress,
            networking::v1::NetworkPolicy,
            scheduling::v1::PriorityClass,
            storage::v1::StorageClass,
        ]
    }

    #[test]
    fn table_agrees_with_k8s_openapi() {
        let expected = upstream_table();
        assert_eq!(
            expected.len(),
            RESOURCES.len(),
            "one upstream type per entry"
        );
        for (want, got) in expected.iter().zip(RESOURCES) {
            assert_eq!(want.group, got.group, "{want:?}");
            assert_eq!(want.version, got.version, "{want:?}");
            assert_eq!(want.kind, got.kind, "{want:?}");
            assert_eq!(want.plural, got.plural, "{want:?}");
            assert_eq!(want.namespaced, got.namespaced, "{want:?}");
            assert_eq!(want.api_version, got.api_version(), "{want:?}");
        }
    }

    #[test]
    fn subresource_kinds_exist_upstream() {
        use k8s_openapi::api::{authentication, autoscaling, core, policy};
        let named = [
            ("Scale", autoscaling::v1::Scale::API_VERSION),
            ("Binding", core::v1::Binding::API_VERSION),
            ("Eviction", policy::v1::Eviction::API_VERSION),
            (
                "TokenRequest",
                authentication::v1::TokenRequest::API_VERSION,
            ),
        ];
        for r in RESOURCES {
            for s in r.subresources {
                if s.name == "status" {
                    assert_eq!(s.kind, r.kind, "{}/status serves its parent", r.plural);
                }
                if let Some((_, api_version)) = named.iter().find(|(k, _)| *k == s.kind) {
                    let group_version = match (s.group, s.version) {
                        (Some(""), Some(v)) | (None, Some(v)) => v.to_string(),
                        (Some(g), Some(v)) => format!("{g}/{v}"),
                        _ => r.api_version(),
                    };
                    assert_eq!(&group_version, api_version, "{}/{}", r.plural, s.name);
                }
            }
        }
    }

    #[test]
    fn plurals_and_kinds_unique_within_group_version() {
        let mut plurals = HashSet::new();
        let mut kinds = HashSet::new();
        for r in RESOURCES {
            assert!(
                plurals.insert((r.group, r.version, r.plural)),
                "duplicate {}",
                r.plural
            );
            assert!(
                kinds.insert((r.group, r.version, r.kind)),
                "duplicate {}",
                r.kind
            );
            let subs: HashSet<_> = r.subresources.iter().map(|s| s.name).collect();
            assert_eq!(subs.len(), r.subresources.len(), "{}", r.plural);
        }
    }

    #[test]
    fn verbs_match_upstream() {
        for r in RESOURCES {
            if r.plural == "namespaces" {
                assert!(!r.has_verb(Verb::DeleteCollection));
                assert_eq!(r.verbs.len(), 7);
            } else if r.group.starts_with("authentication.")
                || r.group.starts_with("authorization.")
            {
                assert_eq!(
                    r.verbs,
                    [Verb::Create],
                    "{}: reviews are create-only",
                    r.plural
                );
            } else {
                assert_eq!(r.verbs, Verb::ALL, "{}", r.plural);
            }
        }
        let spelled: Vec<_> = Verb::ALL.iter().map(|v| v.as_str()).collect();
        assert_eq!(
            spelled,
            [
                "create",
                "delete",
                "deletecollection",
                "get",
                "list",
                "patch",
                "update",
                "watch"
            ]
        );
    }

    #[test]
    fn storage_keys() {
        let pods = find("", "v1", "pods").unwrap();
        assert_eq!(pods.storage_prefix(), "/registry/core/pods/");
        assert_eq!(
            pods.namespace_prefix("default"),
            "/registry/core/pods/default/"
        );
        assert_eq!(
            pods.storage_key(Some("default"), "web-1"),
            "/registry/core/pods/default/web-1"
        );
        assert!(!pods
            .storage_key(Some("default2"), "x")
            .starts_with(&pods.namespace_prefix("default")));

        let nodes = find("", "v1", "nodes").unwrap();
        assert_eq!(nodes.storage_key(None, "n1"), "/registry/core/nodes/n1");
        assert_eq!(
            nodes.storage_key(Some("ignored"), "n1"),
            "/registry/core/nodes/n1"
        );

        let deployments = find("apps", "v1", "deployments").unwrap();
        assert_eq!(deployments.storage_prefix(), "/registry/apps/deployments/");
        assert_eq!(
            deployments.storage_key(Some("kube-system"), "coredns"),
            "/registry/apps/deployments/kube-system/coredns"
        );
    }

    #[test]
    #[should_panic(expected = "namespaced")]
    fn namespaced_key_without_namespace_panics() {
        find("", "v1", "pods").unwrap().storage_key(None, "web-1");
    }

    #[test]
    fn storage_prefixes_do_not_nest() {
        let prefixes: Vec<_> = RESOURCES.iter().map(|r| r.storage_prefix()).collect();
        for (i, a) in prefixes.iter().enumerate() {
            for (j, b) in prefixes.iter().enumerate() {
                assert!(i == j || !a.starts_with(b.as_str()), "{a} inside {b}");
            }
        }
    }

    #[test]
    fn versions_and_kinds() {
        let pods = find("", "v1", "pods").unwrap();
        assert_eq!(pods.api_version(), "v1");
        assert_eq!(pods.group_version(), "v1");
        assert_eq!(pods.list_kind(), "PodList");
        let deploy = find_by_kind("apps", "v1", "Deployment").unwrap();
        assert_eq!(deploy.api_version(), "apps/v1");
        assert_eq!(deploy.plural, "deployments");
        assert_eq!(deploy.subresource("scale").unwrap().kind, "Scale");
        assert!(deploy.subresource("log").is_none());
        assert!(find("apps", "v1", "pods").is_none());
        assert!(find_by_kind("", "v1", "Deployment").is_none());
    }

    #[test]
    fn groups_in_table_order() {
        let g = groups();
        assert_eq!(g[0], ("", vec!["v1"]));
        assert_eq!(g[1], ("apps", vec!["v1"]));
        let names: Vec<_> = g.iter().map(|(n, _)| *n).collect();
        assert_eq!(
            names,
            [
                "",
                "apps",
                "batch",
                "coordination.k8s.io",
                "discovery.k8s.io",
                "events.k8s.io",
                "policy",
                "rbac.authorization.k8s.io",
                "authentication.k8s.io",
                "authorization.k8s.io",
                "certificates.k8s.io",
                "networking.k8s.io",
                "scheduling.k8s.io",
                "storage.k8s.io",
            ]
        );
    }

    fn resolved(name: &str) -> Vec<String> {
        resolve(name)
            .iter()
            .map(|r| format!("{}.{}", r.plural, r.group))
            .collect()
    }

    #[test]
    fn resolve_like_kubectl() {
        assert_eq!(resolved("po"), ["pods."]);
        assert_eq!(resolved("pod"), ["pods."]);
        assert_eq!(resolved("Pods"), ["pods."]);
        assert_eq!(resolved("Pod"), ["pods."]);
        assert_eq!(resolved("deploy"), ["deployments.apps"]);
        assert_eq!(resolved("deployments.apps"), ["deployments.apps"]);
        assert_eq!(resolved("deployment.apps"), ["deployments.apps"]);
        assert_eq!(resolved("deployments.v1.apps"), ["deployments.apps"]);
        assert_eq!(resolved("events"), ["events.", "events.events.k8s.io"]);
        assert_eq!(resolved("ev"), ["events.", "events.events.k8s.io"]);
        assert_eq!(resolved("events.events.k8s.io"), ["events.events.k8s.io"]);
        assert_eq!(
            resolved("clusterroles.rbac.authorization.k8s.io"),
            ["clusterroles.rbac.authorization.k8s.io"]
        );
        assert_eq!(resolved("endpoints"), ["endpoints."]);
        assert_eq!(
            resolved("csr"),
            ["certificatesigningrequests.certificates.k8s.io"]
        );
        assert!(resolve("deployments.batch").is_empty());
        assert!(resolve("nope").is_empty());
        assert!(resolve("").is_empty());
        assert!(resolve(".apps").is_empty());
        assert!(resolve("é.apps").is_empty());
        assert!(resolve("ééééé").is_empty());
    }
}
