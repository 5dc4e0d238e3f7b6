//! Printers for core/v1 kinds other than Pods (and for events.k8s.io Events, which upstream
//! prints through the same internal Event type).

use serde_json::{json, Map, Value};

use super::descriptions as d;
use super::util::{arr, i, map_len, opt_s, or_none, present, quantity, s, ts, Ctx};
use super::{col, ColumnDefinition, Printer, Row, AGE, NAME};
use crate::labels::format_labels;

fn name(obj: &Value) -> Value {
    json!(s(obj, "/metadata/name"))
}

const SERVICE_COLUMNS: &[ColumnDefinition] = &[
    NAME,
    col("Type", "string", d::SERVICE_SPEC_TYPE, 0),
    col("Cluster-IP", "string", d::SERVICE_SPEC_CLUSTER_IP, 0),
    col("External-IP", "string", d::SERVICE_SPEC_EXTERNAL_IPS, 0),
    col("Port(s)", "string", d::SERVICE_SPEC_PORTS, 0),
    AGE,
    col("Selector", "string", d::SERVICE_SPEC_SELECTOR, 1),
];

/// Upstream `getServiceExternalIP` (wide form): external IPs, load balancer ingress,
/// `<pending>` for a load balancer without one, the external name, or `<none>`.
fn service_external_ip(svc: &Value, svc_type: &str) -> String {
    let external: Vec<&str> = arr(svc, "/spec/externalIPs")
        .iter()
        .filter_map(Value::as_str)
        .collect();
    match svc_type {
        "ClusterIP" | "NodePort" => {
            if external.is_empty() {
                "<none>".to_string()
            } else {
                external.join(",")
            }
        }
        "LoadBalancer" => {
            let lb = super::util::load_balancer_ingress(arr(svc, "/status/loadBalancer/ingress"));
            if !external.is_empty() {
                let mut results: Vec<&str> = Vec::new();
                if !lb.is_empty() {
                    results.extend(lb.split(','));
                }
                results.extend(external);
                return results.join(",");
            }
            if lb.is_empty() {
                "<pending>".to_string()
            } else {
                lb
            }
        }
        "ExternalName" => s(svc, "/spec/externalName").to_string(),
        _ => "<unknown>".to_string(),
    }
}

/// Upstream `makePortString`: `80/TCP`, or `80:30080/TCP` with a node port.
fn service_ports(svc: &Value) -> String {
    let pieces: Vec<String> = arr(svc, "/spec/ports")
        .iter()
        .map(|p| {
            let port = i(p, "/port");
            let protocol = opt_s(p, "/protocol").unwrap_or("TCP");
            let node_port = i(p, "/nodePort");
            if node_port > 0 {
                format!("{port}:{node_port}/{protocol}")
            } else {
                format!("{port}/{protocol}")
            }
        })
        .collect();
    or_none(&pieces.join(","))
}

fn service_row(svc: &Value, ctx: &Ctx) -> Row {
    // v1 defaulting makes every stored Service have a type; ClusterIP is that default.
    let svc_type = opt_s(svc, "/spec/type").unwrap_or("ClusterIP");
    let mut cluster_ip = s(svc, "/spec/clusterIPs/0");
    if cluster_ip.is_empty() {
        cluster_ip = s(svc, "/spec/clusterIP");
    }
    vec![
        name(svc),
        json!(svc_type),
        json!(or_none(cluster_ip)),
        json!(service_external_ip(svc, svc_type)),
        json!(service_ports(svc)),
        json!(ctx.age(svc)),
        json!(format_labels(svc.pointer("/spec/selector"))),
    ]
    .into()
}

const ENDPOINTS_COLUMNS: &[ColumnDefinition] = &[
    NAME,
    col("Endpoints", "string", d::ENDPOINTS_SUBSETS, 0),
    AGE,
];

/// Upstream `formatEndpoints` for all ports: up to three `ip:port` pairs, then `+ N more...`.
fn format_endpoints(ep: &Value) -> String {
    let subsets = arr(ep, "/subsets");
    if subsets.is_empty() {
        return "<none>".to_string();
    }
    const MAX: usize = 3;
    let mut list: Vec<String> = Vec::new();
    let mut more = false;
    let mut count = 0usize;
    for ss in subsets {
        let addresses = arr(ss, "/addresses");
        let ports = arr(ss, "/ports");
        if ports.is_empty() {
            // Headless services may have no ports.
            count += addresses.len();
            for a in addresses {
                if list.len() == MAX {
                    more = true;
                    break;
                }
                list.push(s(a, "/ip").to_string());
            }
            continue;
        }
        for port in ports {
            count += addresses.len();
            for a in addresses {
                if list.len() == MAX {
                    more = true;
                    break;
                }
                let ip = s(a, "/ip");
                let p = i(port, "/port");
                // net.JoinHostPort brackets IPv6 addresses.
                if ip.contains(':') {
                    list.push(format!("[{ip}]:{p}"));
                } else {
                    list.push(format!("{ip}:{p}"));
                }
            }
        }
    }
    let ret = list.join(",");
    if more {
        format!("{ret} + {} more...", count.saturating_sub(MAX))
    } else {
        ret
    }
}

fn endpoints_row(ep: &Value, ctx: &Ctx) -> Row {
    vec![name(ep), json!(format_endpoints(ep)), json!(ctx.age(ep))].into()
}

const NODE_COLUMNS: &[ColumnDefinition] = &[
    NAME,
    col("Status", "string", "The status of the node", 0),
    col("Roles", "string", "The roles of the node", 0),
    AGE,
    col("Version", "string", d::NODE_INFO_KUBELET_VERSION, 0),
    col("Internal-IP", "string", d::NODE_STATUS_ADDRESSES, 1),
    col("External-IP", "string", d::NODE_STATUS_ADDRESSES, 1),
    col("OS-Image", "string", d::NODE_INFO_OS_IMAGE, 1),
    col("Kernel-Version", "string", d::NODE_INFO_KERNEL_VERSION, 1),
    col(
        "Container-Runtime",
        "string",
        d::NODE_INFO_CONTAINER_RUNTIME_VERSION,
        1,
    ),
];

/// Upstream `findNodeRoles`: `node-role.kubernetes.io/<role>` label keys and the value of
/// `kubernetes.io/role`, sorted and de-duplicated.
fn node_roles(node: &Value) -> Vec<String> {
    let mut roles: Vec<String> = Vec::new();
    if let Some(labels) = node.pointer("/metadata/labels").and_then(Value::as_object) {
        for (k, v) in labels {
            if let Some(role) = k.strip_prefix("node-role.kubernetes.io/") {
                if !role.is_empty() {
                    roles.push(role.to_string());
                }
            } else if k == "kubernetes.io/role" {
                if let Some(v) = v.as_str().filter(|v| !v.is_empty()) {
                    roles.push(v.to_string());
                }
            }
        }
    }
    roles.sort();
    roles.dedup();
    roles
}

fn node_address(node: &Value, type_: &str) -> String {
    arr(node, "/status/addresses")
        .iter()
        .find(|a| s(a, "/type") == type_)
        .map_or_else(|| "<none>".to_string(), |a| s(a, "/address").to_string())
}

fn node_row(node: &Value, ctx: &Ctx) -> Row {
    // Only the Ready condition is reported; the last one of that type wins, as upstream
    // builds a map keyed by type.
    let ready = arr(node, "/status/conditions")
        .iter()
        .rev()
        .find(|c| s(c, "/type") == "Ready");
    let mut status: Vec<&str> = match ready {
        Some(c) if s(c, "/status") == "True" => vec!["Ready"],
        Some(_) => vec!["NotReady"],
        None => vec!["Unknown"],
    };
    if node
        .pointer("/spec/unschedulable")
        .and_then(Value::as_bool)
        .unwrap_or(false)
    {
        status.push("SchedulingDisabled");
    }
    let roles = node_roles(node).join(",");
    let unknown = |v: &str| {
        if v.is_empty() {
            "<unknown>".to_string()
        } else {
            v.to_string()
        }
    };
    vec![
        name(node),
        json!(status.join(",")),
        json!(or_none(&roles)),
        json!(ctx.age(node)),
        json!(s(node, "/status/nodeInfo/kubeletVersion")),
        json!(node_address(node, "InternalIP")),
        json!(node_address(node, "ExternalIP")),
        json!(unknown(s(node, "/status/nodeInfo/osImage"))),
        json!(unknown(s(node, "/status/nodeInfo/kernelVersion"))),
        json!(unknown(s(node, "/status/nodeInfo/containerRuntimeVersion"))),
    ]
    .into()
}

const NAMESPACE_COLUMNS: &[ColumnDefinition] = &[
    NAME,
    col("Status", "string", "The status of the namespace", 0),
    AGE,
];

fn namespace_row(ns: &Value, ctx: &Ctx) -> Row {
    vec![name(ns), json!(s(ns, "/status/phase")), json!(ctx.age(ns))].into()
}

const CONFIG_MAP_COLUMNS: &[ColumnDefinition] =
    &[NAME, col("Data", "string", d::CONFIG_MAP_DATA, 0), AGE];

fn config_map_row(cm: &Value, ctx: &Ctx) -> Row {
    vec![
        name(cm),
        json!(map_len(cm, "/data") + map_len(cm, "/binaryData")),
        json!(ctx.age(cm)),
    ]
    .into()
}

const SECRET_COLUMNS: &[ColumnDefinition] = &[
    NAME,
    col("Type", "string", d::SECRET_TYPE, 0),
    col("Data", "string", d::SECRET_DATA, 0),
    AGE,
];

fn secret_row(secret: &Value, ctx: &Ctx) -> Row {
    // Upstream counts the internal Secret's data, into which `stringData` is merged.
    let empty = Map::new();
    let data = secret
        .get("data")
        .and_then(Value::as_object)
        .unwrap_or(&empty);
    let extra = secret
        .get("stringData")
        .and_then(Value::as_object)
        .map_or(0, |sd| sd.keys().filter(|k| !data.contains_key(*k)).count());
    vec![
        name(secret),
        json!(s(secret, "/type")),
        json!(data.len() + extra),
        json!(ctx.age(secret)),
    ]
    .into()
}

const SERVICE_ACCOUNT_COLUMNS: &[ColumnDefinition] = &[
    NAME,
    col("Secrets", "string", d::SERVICE_ACCOUNT_SECRETS, 0),
    AGE,
];

fn service_account_row(sa: &Value, ctx: &Ctx) -> Row {
    vec![
        name(sa),
        json!(arr(sa, "/secrets").len()),
        json!(ctx.age(sa)),
    ]
    .into()
}

const EVENT_COLUMNS: &[ColumnDefinition] = &[
    col("Last Seen", "string", d::EVENT_LAST_TIMESTAMP, 0),
    col("Type", "string", d::EVENT_TYPE, 0),
    col("Reason", "string", d::EVENT_REASON, 0),
    col("Object", "string", d::EVENT_INVOLVED_OBJECT, 0),
    col("Subobject", "string", d::OBJECT_REFERENCE_FIELD_PATH, 1),
    col("Source", "string", d::EVENT_SOURCE, 1),
    col("Message", "string", d::EVENT_MESSAGE, 0),
    col("First Seen", "string", d::EVENT_FIRST_TIMESTAMP, 1),
    col("Count", "string", d::EVENT_COUNT, 1),
    ColumnDefinition {
        priority: 1,
        ..NAME
    },
];

/// Reshapes an events.k8s.io/v1 Event into core/v1 field names, as upstream's conversion to the
/// internal type does before printing.
fn events_v1_as_core(e: &Value) -> Value {
    let field = |k: &str| e.get(k).cloned().unwrap_or(Value::Null);
    json!({
        "metadata": field("metadata"),
        "involvedObject": field("regarding"),
        "reason": field("reason"),
        "message": field("note"),
        "source": field("deprecatedSource"),
        "firstTimestamp": field("deprecatedFirstTimestamp"),
        "lastTimestamp": field("deprecatedLastTimestamp"),
        "count": field("deprecatedCount"),
        "type": field("type"),
        "eventTime": field("eventTime"),
        "series": field("series"),
        "reportingComponent": field("reportingController"),
        "reportingInstance": field("reportingInstance"),
    })
}

fn event_row(e: &Value, ctx: &Ctx) -> Row {
    let first_seen = match ts(e, "/firstTimestamp") {
        Some(t) => ctx.since(Some(t)),
        None => ctx.since(ts(e, "/eventTime")),
    };
    let mut last_seen = match ts(e, "/lastTimestamp") {
        Some(t) => ctx.since(Some(t)),
        None => first_seen.clone(),
    };
    let mut count = i(e, "/count");
    if present(e, "/series") {
        last_seen = ctx.since(ts(e, "/series/lastObservedTime"));
        count = i(e, "/series/count");
    } else if count == 0 {
        // Singleton events don't have a count set in the new API.
        count = 1;
    }
    let kind = s(e, "/involvedObject/kind").to_lowercase();
    let involved = s(e, "/involvedObject/name");
    let target = if involved.is_empty() {
        kind
    } else {
        format!("{kind}/{involved}")
    };
    let component = match s(e, "/source/component") {
        "" => s(e, "/reportingComponent"),
        c => c,
    };
    let instance = match s(e, "/source/host") {
        "" => s(e, "/reportingInstance"),
        h => h,
    };
    let source = if instance.is_empty() {
        component.to_string()
    } else {
        format!("{component}, {instance}")
    };
    vec![
        json!(last_seen),
        json!(s(e, "/type")),
        json!(s(e, "/reason")),
        json!(target),
        json!(s(e, "/involvedObject/fieldPath")),
        json!(source),
        json!(s(e, "/message").trim()),
        json!(first_seen),
        json!(count),
        name(e),
    ]
    .into()
}

fn events_v1_row(e: &Value, ctx: &Ctx) -> Row {
    event_row(&events_v1_as_core(e), ctx)
}

/// Upstream `GetAccessModesAsString`: RWO, ROX, RWX, RWOP in that order.
fn access_modes(modes: &[Value]) -> String {
    let has = |m: &str| modes.iter().any(|v| v.as_str() == Some(m));
    let mut out = Vec::new();
    for (mode, short) in [
        ("ReadWriteOnce", "RWO"),
        ("ReadOnlyMany", "ROX"),
        ("ReadWriteMany", "RWX"),
        ("ReadWriteOncePod", "RWOP"),
    ] {
        if has(mode) {
            out.push(short);
        }
    }
    out.join(",")
}

/// The storage class of a PV or PVC: the beta annotation wins over `spec.storageClassName`.
fn storage_class(obj: &Value) -> &str {
    match obj
        .pointer("/metadata/annotations")
        .and_then(|a| a.get("volume.beta.kubernetes.io/storage-class"))
        .and_then(Value::as_str)
    {
        Some(class) => class,
        None => s(obj, "/spec/storageClassName"),
    }
}

const PV_COLUMNS: &[ColumnDefinition] = &[
    NAME,
    col("Capacity", "string", d::PV_SPEC_CAPACITY, 0),
    col("Access Modes", "string", d::PV_SPEC_ACCESS_MODES, 0),
    col("Reclaim Policy", "string", d::PV_SPEC_RECLAIM_POLICY, 0),
    col("Status", "string", d::PV_STATUS_PHASE, 0),
    col("Claim", "string", d::PV_SPEC_CLAIM_REF, 0),
    col("StorageClass", "string", "StorageClass of the pv", 0),
    col(
        "VolumeAttributesClass",
        "string",
        "VolumeAttributesClass of the pv",
        0,
    ),
    col("Reason", "string", d::PV_STATUS_REASON, 0),
    AGE,
    col("VolumeMode", "string", d::PV_SPEC_VOLUME_MODE, 1),
];

fn pv_row(pv: &Value, ctx: &Ctx) -> Row {
    let claim = if present(pv, "/spec/claimRef") {
        format!(
            "{}/{}",
            s(pv, "/spec/claimRef/namespace"),
            s(pv, "/spec/claimRef/name")
        )
    } else {
        String::new()
    };
    let phase = if present(pv, "/metadata/deletionTimestamp") {
        "Terminating"
    } else {
        s(pv, "/status/phase")
    };
    vec![
        name(pv),
        json!(quantity(pv.pointer("/spec/capacity/storage"))),
        json!(access_modes(arr(pv, "/spec/accessModes"))),
        json!(s(pv, "/spec/persistentVolumeReclaimPolicy")),
        json!(phase),
        json!(claim),
        json!(storage_class(pv)),
        json!(opt_s(pv, "/spec/volumeAttributesClassName").unwrap_or("<unset>")),
        json!(s(pv, "/status/reason")),
        json!(ctx.age(pv)),
        json!(opt_s(pv, "/spec/volumeMode").unwrap_or("<unset>")),
    ]
    .into()
}

const PVC_COLUMNS: &[ColumnDefinition] = &[
    NAME,
    col("Status", "string", d::PVC_STATUS_PHASE, 0),
    col("Volume", "string", d::PVC_SPEC_VOLUME_NAME, 0),
    col("Capacity", "string", d::PVC_STATUS_CAPACITY, 0),
    col("Access Modes", "string", d::PVC_STATUS_ACCESS_MODES, 0),
    col("StorageClass", "string", "StorageClass of the pvc", 0),
    col(
        "VolumeAttributesClass",
        "string",
        "VolumeAttributesClass of the pvc",
        0,
    ),
    AGE,
    col("VolumeMode", "string", d::PVC_SPEC_VOLUME_MODE, 1),
];

fn pvc_row(pvc: &Value, ctx: &Ctx) -> Row {
    let phase = if present(pvc, "/metadata/deletionTimestamp") {
        "Terminating"
    } else {
        s(pvc, "/status/phase")
    };
    let volume = s(pvc, "/spec/volumeName");
    let (capacity, modes) = if volume.is_empty() {
        (String::new(), String::new())
    } else {
        (
            quantity(pvc.pointer("/status/capacity/storage")),
            access_modes(arr(pvc, "/status/accessModes")),
        )
    };
    vec![
        name(pvc),
        json!(phase),
        json!(volume),
        json!(capacity),
        json!(modes),
        json!(storage_class(pvc)),
        json!(opt_s(pvc, "/spec/volumeAttributesClassName").unwrap_or("<unset>")),
        json!(ctx.age(pvc)),
        json!(opt_s(pvc, "/spec/volumeMode").unwrap_or("<unset>")),
    ]
    .into()
}

const RESOURCE_QUOTA_COLUMNS: &[ColumnDefinition] = &[
    NAME,
    col(
        "Request",
        "string",
        "Request represents a minimum amount of cpu/memory that a container may consume.",
        0,
    ),
    col(
        "Limit",
        "string",
        "Limits control the maximum amount of cpu/memory that a container may use independent of contention on the node.",
        0,
    ),
    AGE,
];

fn resource_quota_row(rq: &Value, ctx: &Ctx) -> Row {
    let hard = rq.pointer("/status/hard").and_then(Value::as_object);
    let used = rq.pointer("/status/used");
    let mut resources: Vec<&String> = hard.map(|h| h.keys().collect()).unwrap_or_default();
    resources.sort();
    let mut requests = Vec::new();
    let mut limits = Vec::new();
    for r in resources {
        let used_q = quantity(used.and_then(|u| u.get(r.as_str())));
        let hard_q = quantity(hard.and_then(|h| h.get(r.as_str())));
        let entry = format!("{r}: {used_q}/{hard_q}");
        let mut pieces = r.split('.');
        let first = pieces.next();
        if first == Some("limits") && pieces.next().is_some() {
            limits.push(entry);
        } else {
            requests.push(entry);
        }
    }
    vec![
        name(rq),
        json!(requests.join(", ")),
        json!(limits.join(", ")),
        json!(ctx.age(rq)),
    ]
    .into()
}

static SERVICE: Printer = Printer {
    columns: SERVICE_COLUMNS,
    row: service_row,
};
static ENDPOINTS: Printer = Printer {
    columns: ENDPOINTS_COLUMNS,
    row: endpoints_row,
};
static NODE: Printer = Printer {
    columns: NODE_COLUMNS,
    row: node_row,
};
static NAMESPACE: Printer = Printer {
    columns: NAMESPACE_COLUMNS,
    row: namespace_row,
};
static CONFIG_MAP: Printer = Printer {
    columns: CONFIG_MAP_COLUMNS,
    row: config_map_row,
};
static SECRET: Printer = Printer {
    columns: SECRET_COLUMNS,
    row: secret_row,
};
static SERVICE_ACCOUNT: Printer = Printer {
    columns: SERVICE_ACCOUNT_COLUMNS,
    row: service_account_row,
};
static EVENT: Printer = Printer {
    columns: EVENT_COLUMNS,
    row: event_row,
};
static EVENT_V1: Printer = Printer {
    columns: EVENT_COLUMNS,
    row: events_v1_row,
};
static PV: Printer = Printer {
    columns: PV_COLUMNS,
    row: pv_row,
};
static PVC: Printer = Printer {
    columns: PVC_COLUMNS,
    row: pvc_row,
};
static RESOURCE_QUOTA: Printer = Printer {
    columns: RESOURCE_QUOTA_COLUMNS,
    row: resource_quota_row,
};

pub(super) fn printer(group: &str, kind: &str) -> Option<&'static Printer> {
    Some(match (group, kind) {
        ("", "Service") => &SERVICE,
        ("", "Endpoints") => &ENDPOINTS,
        ("", "Node") => &NODE,
        ("", "Namespace") => &NAMESPACE,
        ("", "ConfigMap") => &CONFIG_MAP,
        ("", "Secret") => &SECRET,
        ("", "ServiceAccount") => &SERVICE_ACCOUNT,
        ("", "Event") => &EVENT,
        ("events.k8s.io", "Event") => &EVENT_V1,
        ("", "PersistentVolume") => &PV,
        ("", "PersistentVolumeClaim") => &PVC,
        ("", "ResourceQuota") => &RESOURCE_QUOTA,
        _ => return None,
    })
}
