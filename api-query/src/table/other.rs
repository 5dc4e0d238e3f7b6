//! Printers for the remaining groups: coordination, discovery, networking, policy, rbac,
//! scheduling and storage. Roles and ClusterRoles have no printer upstream and get the default
//! Name / Created At table.

use serde_json::{json, Value};

use super::descriptions as d;
use super::util::{
    arr, b, i, int_or_string, list_with_more, load_balancer_ingress, opt_b, opt_i, opt_s, present,
    s, Ctx,
};
use super::{col, ColumnDefinition, Printer, Row, AGE, NAME};
use crate::labels::format_label_selector;

fn name(obj: &Value) -> Value {
    json!(s(obj, "/metadata/name"))
}

const LEASE_COLUMNS: &[ColumnDefinition] = &[
    NAME,
    col("Holder", "string", d::LEASE_SPEC_HOLDER_IDENTITY, 0),
    AGE,
];

fn lease_row(obj: &Value, ctx: &Ctx) -> Row {
    vec![
        name(obj),
        json!(s(obj, "/spec/holderIdentity")),
        json!(ctx.age(obj)),
    ]
    .into()
}

const ENDPOINT_SLICE_COLUMNS: &[ColumnDefinition] = &[
    NAME,
    col("AddressType", "string", d::ENDPOINT_SLICE_ADDRESS_TYPE, 0),
    col("Ports", "string", d::ENDPOINT_SLICE_PORTS, 0),
    col("Endpoints", "string", d::ENDPOINT_SLICE_ENDPOINTS, 0),
    AGE,
];

const LIST_MAX: usize = 3;

/// Upstream `formatDiscoveryPorts`: the port number, else its name, else `*`.
fn discovery_ports(ports: &[Value]) -> String {
    let mut list = Vec::new();
    let mut more = false;
    for p in ports {
        if list.len() < LIST_MAX {
            let label = match (opt_i(p, "/port"), opt_s(p, "/name")) {
                (Some(port), _) => port.to_string(),
                (None, Some(name)) => name.to_string(),
                (None, None) => "*".to_string(),
            };
            list.push(label);
        } else if list.len() == LIST_MAX {
            more = true;
        }
    }
    list_with_more(&list, more, ports.len(), LIST_MAX)
}

/// Upstream `formatDiscoveryEndpoints`: every address of every endpoint, up to three.
fn discovery_endpoints(endpoints: &[Value]) -> String {
    let mut list = Vec::new();
    let mut more = false;
    let mut count = 0;
    for e in endpoints {
        for a in arr(e, "/addresses") {
            if list.len() < LIST_MAX {
                list.push(a.as_str().unwrap_or("").to_string());
            } else if list.len() == LIST_MAX {
                more = true;
            }
            count += 1;
        }
    }
    list_with_more(&list, more, count, LIST_MAX)
}

fn endpoint_slice_row(obj: &Value, ctx: &Ctx) -> Row {
    vec![
        name(obj),
        json!(s(obj, "/addressType")),
        json!(discovery_ports(arr(obj, "/ports"))),
        json!(discovery_endpoints(arr(obj, "/endpoints"))),
        json!(ctx.age(obj)),
    ]
    .into()
}

const INGRESS_COLUMNS: &[ColumnDefinition] = &[
    NAME,
    col(
        "Class",
        "string",
        "The name of the IngressClass resource that should be used for additional configuration",
        0,
    ),
    col(
        "Hosts",
        "string",
        "Hosts that incoming requests are matched against before the ingress rule",
        0,
    ),
    col(
        "Address",
        "string",
        "Address is a list containing ingress points for the load-balancer",
        0,
    ),
    col(
        "Ports",
        "string",
        "Ports of TLS configurations that open",
        0,
    ),
    AGE,
];

/// Upstream `formatHosts`: up to three rule hosts, `*` when no rule names one.
fn ingress_hosts(rules: &[Value]) -> String {
    let mut list: Vec<&str> = Vec::new();
    let mut more = false;
    for rule in rules {
        if list.len() == LIST_MAX {
            more = true;
        }
        let host = s(rule, "/host");
        if !more && !host.is_empty() {
            list.push(host);
        }
    }
    if list.is_empty() {
        return "*".to_string();
    }
    let ret = list.join(",");
    if more {
        format!("{ret} + {} more...", rules.len().saturating_sub(LIST_MAX))
    } else {
        ret
    }
}

fn ingress_row(obj: &Value, ctx: &Ctx) -> Row {
    let ports = if arr(obj, "/spec/tls").is_empty() {
        "80"
    } else {
        "80, 443"
    };
    vec![
        name(obj),
        json!(opt_s(obj, "/spec/ingressClassName").unwrap_or("<none>")),
        json!(ingress_hosts(arr(obj, "/spec/rules"))),
        json!(load_balancer_ingress(arr(
            obj,
            "/status/loadBalancer/ingress"
        ))),
        json!(ports),
        json!(ctx.age(obj)),
    ]
    .into()
}

const INGRESS_CLASS_COLUMNS: &[ColumnDefinition] = &[
    NAME,
    col(
        "Controller",
        "string",
        "Controller that is responsible for handling this class",
        0,
    ),
    col(
        "Parameters",
        "string",
        "A reference to a resource with additional parameters",
        0,
    ),
    AGE,
];

fn ingress_class_row(obj: &Value, ctx: &Ctx) -> Row {
    let parameters = if present(obj, "/spec/parameters") {
        let mut p = s(obj, "/spec/parameters/kind").to_string();
        if let Some(group) = opt_s(obj, "/spec/parameters/apiGroup") {
            p = format!("{p}.{group}");
        }
        format!("{p}/{}", s(obj, "/spec/parameters/name"))
    } else {
        "<none>".to_string()
    };
    vec![
        name(obj),
        json!(s(obj, "/spec/controller")),
        json!(parameters),
        json!(ctx.age(obj)),
    ]
    .into()
}

const NETWORK_POLICY_COLUMNS: &[ColumnDefinition] = &[
    NAME,
    col(
        "Pod-Selector",
        "string",
        d::NETWORK_POLICY_SPEC_POD_SELECTOR,
        0,
    ),
    AGE,
];

fn network_policy_row(obj: &Value, ctx: &Ctx) -> Row {
    vec![
        name(obj),
        json!(format_label_selector(obj.pointer("/spec/podSelector"))),
        json!(ctx.age(obj)),
    ]
    .into()
}

const PRIORITY_CLASS_COLUMNS: &[ColumnDefinition] = &[
    NAME,
    col("Value", "integer", d::PRIORITY_CLASS_VALUE, 0),
    col(
        "Global-Default",
        "boolean",
        d::PRIORITY_CLASS_GLOBAL_DEFAULT,
        0,
    ),
    AGE,
    col(
        "PreemptionPolicy",
        "string",
        d::PRIORITY_CLASS_PREEMPTION_POLICY,
        0,
    ),
];

fn priority_class_row(obj: &Value, ctx: &Ctx) -> Row {
    vec![
        name(obj),
        json!(i(obj, "/value")),
        json!(b(obj, "/globalDefault")),
        json!(ctx.age(obj)),
        json!(s(obj, "/preemptionPolicy")),
    ]
    .into()
}

const STORAGE_CLASS_COLUMNS: &[ColumnDefinition] = &[
    NAME,
    col("Provisioner", "string", d::STORAGE_CLASS_PROVISIONER, 0),
    col(
        "ReclaimPolicy",
        "string",
        d::STORAGE_CLASS_RECLAIM_POLICY,
        0,
    ),
    col(
        "VolumeBindingMode",
        "string",
        d::STORAGE_CLASS_VOLUME_BINDING_MODE,
        0,
    ),
    col(
        "AllowVolumeExpansion",
        "string",
        d::STORAGE_CLASS_ALLOW_VOLUME_EXPANSION,
        0,
    ),
    AGE,
];

fn storage_class_row(obj: &Value, ctx: &Ctx) -> Row {
    let annotations = obj.pointer("/metadata/annotations");
    let is_default = [
        "storageclass.kubernetes.io/is-default-class",
        "storageclass.beta.kubernetes.io/is-default-class",
    ]
    .iter()
    .any(|k| annotations.and_then(|a| a.get(*k)).and_then(Value::as_str) == Some("true"));
    let mut display_name = s(obj, "/metadata/name").to_string();
    if is_default {
        display_name.push_str(" (default)");
    }
    vec![
        json!(display_name),
        json!(s(obj, "/provisioner")),
        json!(opt_s(obj, "/reclaimPolicy").unwrap_or("Delete")),
        json!(opt_s(obj, "/volumeBindingMode").unwrap_or("Immediate")),
        json!(opt_b(obj, "/allowVolumeExpansion").unwrap_or(false)),
        json!(ctx.age(obj)),
    ]
    .into()
}

const PDB_COLUMNS: &[ColumnDefinition] = &[
    NAME,
    col(
        "Min Available",
        "string",
        "The minimum number of pods that must be available.",
        0,
    ),
    col(
        "Max Unavailable",
        "string",
        "The maximum number of pods that may be unavailable.",
        0,
    ),
    col(
        "Allowed Disruptions",
        "integer",
        "Calculated number of pods that may be disrupted at this time.",
        0,
    ),
    AGE,
];

fn pdb_row(obj: &Value, ctx: &Ctx) -> Row {
    let int_or_na = |p: &str| match obj.pointer(p) {
        Some(v) if !v.is_null() => int_or_string(v),
        _ => "N/A".to_string(),
    };
    vec![
        name(obj),
        json!(int_or_na("/spec/minAvailable")),
        json!(int_or_na("/spec/maxUnavailable")),
        json!(i(obj, "/status/disruptionsAllowed")),
        json!(ctx.age(obj)),
    ]
    .into()
}

const ROLE_BINDING_COLUMNS: &[ColumnDefinition] = &[
    NAME,
    col("Role", "string", d::ROLE_BINDING_ROLE_REF, 0),
    AGE,
    col("Users", "string", "Users in the roleBinding", 1),
    col("Groups", "string", "Groups in the roleBinding", 1),
    col(
        "ServiceAccounts",
        "string",
        "ServiceAccounts in the roleBinding",
        1,
    ),
];

const CLUSTER_ROLE_BINDING_COLUMNS: &[ColumnDefinition] = &[
    NAME,
    col("Role", "string", d::CLUSTER_ROLE_BINDING_ROLE_REF, 0),
    AGE,
    col("Users", "string", "Users in the clusterRoleBinding", 1),
    col("Groups", "string", "Groups in the clusterRoleBinding", 1),
    col(
        "ServiceAccounts",
        "string",
        "ServiceAccounts in the clusterRoleBinding",
        1,
    ),
];

/// Upstream `rbac.SubjectsStrings` joined as the printer joins them.
fn binding_row(obj: &Value, ctx: &Ctx) -> Row {
    let mut users = Vec::new();
    let mut groups = Vec::new();
    let mut sas = Vec::new();
    for subject in arr(obj, "/subjects") {
        match s(subject, "/kind") {
            "ServiceAccount" => sas.push(format!(
                "{}/{}",
                s(subject, "/namespace"),
                s(subject, "/name")
            )),
            "User" => users.push(s(subject, "/name").to_string()),
            "Group" => groups.push(s(subject, "/name").to_string()),
            _ => {}
        }
    }
    vec![
        name(obj),
        json!(format!(
            "{}/{}",
            s(obj, "/roleRef/kind"),
            s(obj, "/roleRef/name")
        )),
        json!(ctx.age(obj)),
        json!(users.join(", ")),
        json!(groups.join(", ")),
        json!(sas.join(", ")),
    ]
    .into()
}

static LEASE: Printer = Printer {
    columns: LEASE_COLUMNS,
    row: lease_row,
};
static ENDPOINT_SLICE: Printer = Printer {
    columns: ENDPOINT_SLICE_COLUMNS,
    row: endpoint_slice_row,
};
static INGRESS: Printer = Printer {
    columns: INGRESS_COLUMNS,
    row: ingress_row,
};
static INGRESS_CLASS: Printer = Printer {
    columns: INGRESS_CLASS_COLUMNS,
    row: ingress_class_row,
};
static NETWORK_POLICY: Printer = Printer {
    columns: NETWORK_POLICY_COLUMNS,
    row: network_policy_row,
};
static PRIORITY_CLASS: Printer = Printer {
    columns: PRIORITY_CLASS_COLUMNS,
    row: priority_class_row,
};
static STORAGE_CLASS: Printer = Printer {
    columns: STORAGE_CLASS_COLUMNS,
    row: storage_class_row,
};
static PDB: Printer = Printer {
    columns: PDB_COLUMNS,
    row: pdb_row,
};
static ROLE_BINDING: Printer = Printer {
    columns: ROLE_BINDING_COLUMNS,
    row: binding_row,
};
static CLUSTER_ROLE_BINDING: Printer = Printer {
    columns: CLUSTER_ROLE_BINDING_COLUMNS,
    row: binding_row,
};

const CSR_COLUMNS: &[ColumnDefinition] = &[
    NAME,
    AGE,
    col(
        "SignerName",
        "string",
        "signerName indicates the requested signer, and is a qualified name.",
        0,
    ),
    col(
        "Requestor",
        "string",
        "username contains the name of the user that created the CertificateSigningRequest.",
        0,
    ),
    col(
        "RequestedDuration",
        "string",
        "expirationSeconds is the requested duration of validity of the issued certificate.",
        0,
    ),
    col(
        "Condition",
        "string",
        "conditions applied to the request. Known conditions are \"Approved\", \"Denied\", and \"Failed\".",
        0,
    ),
];

/// Upstream's `extractCSRStatus`: Denied wins over Approved, else Pending; then `,Failed`
/// and `,Issued`.
fn csr_condition(obj: &Value) -> String {
    let has = |t: &str| {
        arr(obj, "/status/conditions")
            .iter()
            .any(|c| s(c, "/type") == t)
    };
    let mut out = if has("Denied") {
        "Denied".to_string()
    } else if has("Approved") {
        "Approved".to_string()
    } else {
        "Pending".to_string()
    };
    if has("Failed") {
        out.push_str(",Failed");
    }
    if !s(obj, "/status/certificate").is_empty() {
        out.push_str(",Issued");
    }
    out
}

fn csr_row(obj: &Value, ctx: &Ctx) -> Row {
    let duration = match opt_i(obj, "/spec/expirationSeconds") {
        Some(secs) => crate::duration::human_duration(i128::from(secs) * 1_000_000_000),
        None => "<none>".to_string(),
    };
    vec![
        name(obj),
        json!(ctx.age(obj)),
        json!(s(obj, "/spec/signerName")),
        json!(s(obj, "/spec/username")),
        json!(duration),
        json!(csr_condition(obj)),
    ]
    .into()
}

static CSR: Printer = Printer {
    columns: CSR_COLUMNS,
    row: csr_row,
};

pub(super) fn printer(group: &str, kind: &str) -> Option<&'static Printer> {
    Some(match (group, kind) {
        ("certificates.k8s.io", "CertificateSigningRequest") => &CSR,
        ("coordination.k8s.io", "Lease") => &LEASE,
        ("discovery.k8s.io", "EndpointSlice") => &ENDPOINT_SLICE,
        ("networking.k8s.io", "Ingress") => &INGRESS,
        ("networking.k8s.io", "IngressClass") => &INGRESS_CLASS,
        ("networking.k8s.io", "NetworkPolicy") => &NETWORK_POLICY,
        ("scheduling.k8s.io", "PriorityClass") => &PRIORITY_CLASS,
        ("storage.k8s.io", "StorageClass") => &STORAGE_CLASS,
        ("policy", "PodDisruptionBudget") => &PDB,
        ("rbac.authorization.k8s.io", "RoleBinding") => &ROLE_BINDING,
        ("rbac.authorization.k8s.io", "ClusterRoleBinding") => &CLUSTER_ROLE_BINDING,
        _ => return None,
    })
}
