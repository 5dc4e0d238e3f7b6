//! Per-kind behaviour: defaults, validation and what may change on update. The registry runs
//! the same steps for every kind; a kind contributes only what differs, by implementing
//! [`Strategy`] (every method has the generic behaviour as default).

use serde_json::{json, Map, Value};

use crate::object::{default_field, ensure_object, name};
use api_types::resources::ResourceInfo;

/// One invalid field: (field path, message, reason type), as `details.causes` reports them.
pub type Cause = (String, String, String);

fn required(field: &str) -> Cause {
    (
        field.into(),
        "Required value".into(),
        "FieldValueRequired".into(),
    )
}

fn invalid(field: &str, value: &Value, why: &str) -> Cause {
    let shown = match value {
        Value::String(s) => format!("\"{s}\""),
        other => other.to_string(),
    };
    (
        field.into(),
        format!("Invalid value: {shown}: {why}"),
        "FieldValueInvalid".into(),
    )
}

fn forbidden(field: &str, why: &str) -> Cause {
    (
        field.into(),
        format!("Forbidden: {why}"),
        "FieldValueForbidden".into(),
    )
}

/// The per-kind hooks of the generic registry.
pub trait Strategy: Sync {
    /// Fills in defaults on create and update (upstream's `SetDefaults_*`).
    fn defaults(&self, _obj: &mut Value) {}
    /// The status an object gets on create (upstream's `PrepareForCreate`).
    fn initial_status(&self, _obj: &Value) -> Option<Value> {
        Some(json!({}))
    }
    /// Kind-specific validation of a whole object.
    fn validate(&self, _obj: &Value, _errs: &mut Vec<Cause>) {}
    /// Kind-specific checks of an update: immutable fields.
    fn validate_update(&self, _new: &Value, _old: &Value, _errs: &mut Vec<Cause>) {}
    /// Whether names must be DNS labels (63 chars, no dots) rather than DNS subdomains.
    fn dns_label_names(&self) -> bool {
        false
    }
    /// Whether any name that is a valid URL path segment is allowed (RBAC objects: upstream
    /// names them `system:kube-scheduler` and the like).
    fn path_segment_names(&self) -> bool {
        false
    }
}

struct Generic;

/// Roles and bindings: names are path segments, not DNS names.
struct Rbac;

impl Strategy for Rbac {
    fn path_segment_names(&self) -> bool {
        true
    }
}

/// Upstream's `IsValidPathSegmentName` messages.
fn path_segment_problem(name: &str) -> Option<&'static str> {
    match name {
        "." => Some("may not be '.'"),
        ".." => Some("may not be '..'"),
        n if n.contains('/') => Some("may not contain '/'"),
        n if n.contains('%') => Some("may not contain '%'"),
        _ => None,
    }
}
impl Strategy for Generic {}

/// The strategy of a kind.
pub fn for_kind(info: &ResourceInfo) -> &'static dyn Strategy {
    match (info.group, info.kind) {
        ("", "Pod") => &Pod,
        ("", "Service") => &Service,
        ("", "Namespace") => &Namespace,
        ("", "Secret") => &Secret,
        ("", "ConfigMap") => &ConfigMap,
        ("apps", "Deployment") => &Deployment,
        ("apps", "ReplicaSet") => &ReplicaSet,
        ("apps", "StatefulSet") => &StatefulSet,
        ("apps", "DaemonSet") => &DaemonSet,
        ("batch", "Job") => &Job,
        ("batch", "CronJob") => &CronJob,
        ("rbac.authorization.k8s.io", _) => &Rbac,
        ("certificates.k8s.io", "CertificateSigningRequest") => &CertificateSigningRequest,
        _ => &Generic,
    }
}

/// Validation every object gets: a well-formed name, labels and annotations.
pub fn validate_meta(strategy: &dyn Strategy, obj: &Value, errs: &mut Vec<Cause>) {
    match name(obj) {
        None => errs.push(required("metadata.name")),
        Some(n) if strategy.path_segment_names() => {
            if let Some(why) = path_segment_problem(n) {
                errs.push(invalid("metadata.name", &json!(n), why));
            }
        }
        Some(n) => {
            let ok = if strategy.dns_label_names() {
                is_dns_label(n)
            } else {
                is_dns_subdomain(n)
            };
            if !ok {
                let why = if strategy.dns_label_names() {
                    "a lowercase RFC 1123 label must consist of lower case alphanumeric characters or '-', and must start and end with an alphanumeric character (e.g. 'my-name',  or '123-abc', regex used for validation is '[a-z0-9]([-a-z0-9]*[a-z0-9])?')"
                } else {
                    "a lowercase RFC 1123 subdomain must consist of lower case alphanumeric characters, '-' or '.', and must start and end with an alphanumeric character (e.g. 'example.com', regex used for validation is '[a-z0-9]([-a-z0-9]*[a-z0-9])?(\\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*')"
                };
                errs.push(invalid("metadata.name", &json!(n), why));
            }
        }
    }
    if let Some(labels) = obj.pointer("/metadata/labels").and_then(Value::as_object) {
        for (k, v) in labels {
            if !is_qualified_name(k) {
                errs.push(invalid(
                    "metadata.labels",
                    &json!(k),
                    "name part must consist of alphanumeric characters, '-', '_' or '.', and must start and end with an alphanumeric character",
                ));
            }
            match v.as_str() {
                Some(v) if is_label_value(v) => {}
                _ => errs.push(invalid(
                    "metadata.labels",
                    v,
                    "a valid label must be an empty string or consist of alphanumeric characters, '-', '_' or '.', and must start and end with an alphanumeric character",
                )),
            }
        }
    }
    if let Some(ann) = obj
        .pointer("/metadata/annotations")
        .and_then(Value::as_object)
    {
        let total: usize = ann
            .iter()
            .map(|(k, v)| k.len() + v.as_str().map_or(0, str::len))
            .sum();
        if total > 256 * 1024 {
            errs.push((
                "metadata.annotations".into(),
                "Too long: must have at most 262144 bytes".into(),
                "FieldValueTooLong".into(),
            ));
        }
        for k in ann.keys() {
            if !is_qualified_name(k) {
                errs.push(invalid(
                    "metadata.annotations",
                    &json!(k),
                    "name part must consist of alphanumeric characters, '-', '_' or '.', and must start and end with an alphanumeric character",
                ));
            }
        }
    }
}

pub fn is_dns_label(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 63
        && s.bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        && !s.starts_with('-')
        && !s.ends_with('-')
}

pub fn is_dns_subdomain(s: &str) -> bool {
    !s.is_empty() && s.len() <= 253 && s.split('.').all(is_dns_label)
}

fn is_name_part(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 63
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'))
        && s.as_bytes()[0].is_ascii_alphanumeric()
        && s.as_bytes()[s.len() - 1].is_ascii_alphanumeric()
}

/// `[prefix/]name`, as label and annotation keys are.
pub fn is_qualified_name(s: &str) -> bool {
    match s.split_once('/') {
        Some((prefix, name)) => is_dns_subdomain(prefix) && is_name_part(name),
        None => is_name_part(s),
    }
}

pub fn is_label_value(s: &str) -> bool {
    s.is_empty() || is_name_part(s)
}

/// Pod spec defaults, shared by pods and every pod template.
fn default_pod_spec(spec: &mut Map<String, Value>) {
    default_field(spec, "restartPolicy", json!("Always"));
    default_field(spec, "terminationGracePeriodSeconds", json!(30));
    default_field(spec, "dnsPolicy", json!("ClusterFirst"));
    default_field(spec, "securityContext", json!({}));
    default_field(spec, "schedulerName", json!("default-scheduler"));
    default_field(spec, "enableServiceLinks", json!(true));
    for list in ["containers", "initContainers"] {
        if let Some(Value::Array(containers)) = spec.get_mut(list) {
            for c in containers.iter_mut().filter_map(Value::as_object_mut) {
                default_container(c);
            }
        }
    }
}

fn default_container(c: &mut Map<String, Value>) {
    default_field(c, "terminationMessagePath", json!("/dev/termination-log"));
    default_field(c, "terminationMessagePolicy", json!("File"));
    default_field(c, "resources", json!({}));
    let image = c.get("image").and_then(Value::as_str).unwrap_or("");
    // Upstream: `:latest` or no tag means the image may change under the same name.
    let last = image.rsplit('/').next().unwrap_or(image);
    let pull = if image.contains('@') || (last.contains(':') && !last.ends_with(":latest")) {
        "IfNotPresent"
    } else {
        "Always"
    };
    default_field(c, "imagePullPolicy", json!(pull));
    if let Some(Value::Array(ports)) = c.get_mut("ports") {
        for p in ports.iter_mut().filter_map(Value::as_object_mut) {
            default_field(p, "protocol", json!("TCP"));
        }
    }
}

fn default_template(obj: &mut Value) {
    if let Some(spec) = obj
        .pointer_mut("/spec/template/spec")
        .and_then(Value::as_object_mut)
    {
        default_pod_spec(spec);
    }
}

fn validate_containers(spec: &Value, at: &str, errs: &mut Vec<Cause>) {
    match spec.get("containers").and_then(Value::as_array) {
        None => errs.push(required(&format!("{at}.containers"))),
        Some(cs) if cs.is_empty() => errs.push(required(&format!("{at}.containers"))),
        Some(cs) => {
            for (i, c) in cs.iter().enumerate() {
                let here = format!("{at}.containers[{i}]");
                match c.get("name").and_then(Value::as_str) {
                    None | Some("") => errs.push(required(&format!("{here}.name"))),
                    Some(n) if !is_dns_label(n) => errs.push(invalid(
                        &format!("{here}.name"),
                        &json!(n),
                        "a lowercase RFC 1123 label must consist of lower case alphanumeric characters or '-', and must start and end with an alphanumeric character",
                    )),
                    _ => {}
                }
                if c.get("image")
                    .and_then(Value::as_str)
                    .is_none_or(str::is_empty)
                {
                    errs.push(required(&format!("{here}.image")));
                }
                for (j, p) in c
                    .get("ports")
                    .and_then(Value::as_array)
                    .into_iter()
                    .flatten()
                    .enumerate()
                {
                    let port = p.get("containerPort").and_then(Value::as_i64).unwrap_or(0);
                    if !(1..=65535).contains(&port) {
                        errs.push(invalid(
                            &format!("{here}.ports[{j}].containerPort"),
                            &json!(port),
                            "must be between 1 and 65535, inclusive",
                        ));
                    }
                }
            }
        }
    }
}

/// Workloads whose selector must select their template's labels.
fn validate_selector_matches_template(obj: &Value, errs: &mut Vec<Cause>) {
    let Some(selector) = obj.pointer("/spec/selector") else {
        errs.push(required("spec.selector"));
        return;
    };
    let labels = obj
        .pointer("/spec/template/metadata/labels")
        .and_then(Value::as_object);
    let matches = selector
        .get("matchLabels")
        .and_then(Value::as_object)
        .is_none_or(|want| {
            want.iter()
                .all(|(k, v)| labels.and_then(|l| l.get(k)) == Some(v))
        });
    let empty = selector.as_object().is_none_or(|m| {
        m.values().all(|v| {
            v.is_null()
                || v.as_object().is_some_and(Map::is_empty)
                || v.as_array().is_some_and(Vec::is_empty)
        })
    });
    if empty {
        errs.push(invalid(
            "spec.selector",
            selector,
            "empty selector is invalid for deployment",
        ));
    } else if !matches {
        errs.push(invalid(
            "spec.template.metadata.labels",
            &obj.pointer("/spec/template/metadata/labels")
                .cloned()
                .unwrap_or(json!({})),
            "`selector` does not match template `labels`",
        ));
    }
}

fn immutable(new: &Value, old: &Value, pointer: &str, field: &str, errs: &mut Vec<Cause>) {
    if new.pointer(pointer) != old.pointer(pointer) {
        errs.push(invalid(
            field,
            new.pointer(pointer).unwrap_or(&Value::Null),
            "field is immutable",
        ));
    }
}

/// Workloads select their pods once: a new selector would orphan every existing pod.
fn selector_is_immutable(new: &Value, old: &Value, errs: &mut Vec<Cause>) {
    immutable(new, old, "/spec/selector", "spec.selector", errs);
}

struct Pod;
impl Strategy for Pod {
    fn defaults(&self, obj: &mut Value) {
        if let Some(spec) = obj.get_mut("spec").and_then(Value::as_object_mut) {
            default_pod_spec(spec);
        }
    }
    fn initial_status(&self, obj: &Value) -> Option<Value> {
        Some(json!({"phase": "Pending", "qosClass": qos_class(obj)}))
    }
    fn validate(&self, obj: &Value, errs: &mut Vec<Cause>) {
        validate_containers(obj.get("spec").unwrap_or(&Value::Null), "spec", errs);
    }
    fn validate_update(&self, new: &Value, old: &Value, errs: &mut Vec<Cause>) {
        // Only images, activeDeadlineSeconds, added tolerations and scheduling gates removal
        // may change in a pod's spec.
        let strip = |spec: &Value| {
            let mut s = spec.clone();
            for list in ["containers", "initContainers"] {
                if let Some(Value::Array(cs)) = s.get_mut(list) {
                    for c in cs.iter_mut().filter_map(Value::as_object_mut) {
                        c.remove("image");
                    }
                }
            }
            if let Some(m) = s.as_object_mut() {
                m.remove("activeDeadlineSeconds");
                m.remove("tolerations");
                m.remove("schedulingGates");
                // Binding sets nodeName once; the registry checks that path itself.
                m.remove("nodeName");
            }
            s
        };
        let (n, o) = (
            new.get("spec").unwrap_or(&Value::Null),
            old.get("spec").unwrap_or(&Value::Null),
        );
        if strip(n) != strip(o) {
            errs.push(forbidden(
                "spec",
                "pod updates may not change fields other than `spec.containers[*].image`,`spec.initContainers[*].image`,`spec.activeDeadlineSeconds`,`spec.tolerations` (only additions to existing tolerations),`spec.terminationGracePeriodSeconds` (allow it to be set to 1 if it was previously negative)",
            ));
        }
        let (nn, on) = (n.get("nodeName"), o.get("nodeName"));
        if on.and_then(Value::as_str).is_some_and(|s| !s.is_empty()) && nn != on {
            errs.push(forbidden("spec.nodeName", "field is immutable once set"));
        }
    }
}

/// Upstream's QoS class: Guaranteed when every container limits cpu and memory with requests
/// equal to limits, BestEffort when nothing is requested or limited, Burstable otherwise.
fn qos_class(obj: &Value) -> &'static str {
    let containers: Vec<&Value> = ["containers", "initContainers"]
        .iter()
        .filter_map(|l| obj.pointer(&format!("/spec/{l}")).and_then(Value::as_array))
        .flatten()
        .collect();
    let mut any = false;
    let mut guaranteed = !containers.is_empty();
    for c in &containers {
        let limits = c.pointer("/resources/limits").and_then(Value::as_object);
        let requests = c.pointer("/resources/requests").and_then(Value::as_object);
        if limits.is_some_and(|m| !m.is_empty()) || requests.is_some_and(|m| !m.is_empty()) {
            any = true;
        }
        for r in ["cpu", "memory"] {
            let l = limits.and_then(|m| m.get(r));
            let q = requests.and_then(|m| m.get(r)).or(l);
            if l.is_none() || q != l {
                guaranteed = false;
            }
        }
    }
    match (any, guaranteed) {
        (false, _) => "BestEffort",
        (true, true) => "Guaranteed",
        (true, false) => "Burstable",
    }
}

struct Service;
impl Strategy for Service {
    fn defaults(&self, obj: &mut Value) {
        let Some(spec) = ensure_object(obj, &["spec"]) else {
            return;
        };
        default_field(spec, "type", json!("ClusterIP"));
        default_field(spec, "sessionAffinity", json!("None"));
        let external = !matches!(
            spec.get("type").and_then(Value::as_str),
            Some("ClusterIP") | Some("ExternalName")
        );
        if external {
            default_field(spec, "externalTrafficPolicy", json!("Cluster"));
        }
        if spec.get("type").and_then(Value::as_str) != Some("ExternalName") {
            default_field(spec, "internalTrafficPolicy", json!("Cluster"));
        }
        if let Some(Value::Array(ports)) = spec.get_mut("ports") {
            for p in ports.iter_mut().filter_map(Value::as_object_mut) {
                default_field(p, "protocol", json!("TCP"));
                if let Some(port) = p.get("port").cloned() {
                    default_field(p, "targetPort", port);
                }
            }
        }
    }
    fn initial_status(&self, _obj: &Value) -> Option<Value> {
        Some(json!({"loadBalancer": {}}))
    }
    fn dns_label_names(&self) -> bool {
        true
    }
    fn validate(&self, obj: &Value, errs: &mut Vec<Cause>) {
        let ty = obj
            .pointer("/spec/type")
            .and_then(Value::as_str)
            .unwrap_or("");
        if !matches!(
            ty,
            "ClusterIP" | "NodePort" | "LoadBalancer" | "ExternalName"
        ) {
            errs.push((
                "spec.type".into(),
                format!("Unsupported value: \"{ty}\": supported values: \"ClusterIP\", \"ExternalName\", \"LoadBalancer\", \"NodePort\""),
                "FieldValueNotSupported".into(),
            ));
        }
        let ports = obj.pointer("/spec/ports").and_then(Value::as_array);
        if ty != "ExternalName" && ports.is_none_or(Vec::is_empty) {
            let headless = obj.pointer("/spec/clusterIP").and_then(Value::as_str) == Some("None");
            if !headless {
                errs.push(required("spec.ports"));
            }
        }
        for (i, p) in ports.into_iter().flatten().enumerate() {
            let port = p.get("port").and_then(Value::as_i64).unwrap_or(0);
            if !(1..=65535).contains(&port) {
                errs.push(invalid(
                    &format!("spec.ports[{i}].port"),
                    &json!(port),
                    "must be between 1 and 65535, inclusive",
                ));
            }
            if ports.is_some_and(|ps| ps.len() > 1)
                && p.get("name")
                    .and_then(Value::as_str)
                    .is_none_or(str::is_empty)
            {
                errs.push(required(&format!("spec.ports[{i}].name")));
            }
        }
    }
    fn validate_update(&self, new: &Value, old: &Value, errs: &mut Vec<Cause>) {
        let old_ip = old.pointer("/spec/clusterIP").and_then(Value::as_str);
        let new_ip = new.pointer("/spec/clusterIP").and_then(Value::as_str);
        if old_ip.is_some_and(|ip| !ip.is_empty()) && new_ip.is_some() && new_ip != old_ip {
            immutable(new, old, "/spec/clusterIP", "spec.clusterIPs[0]", errs);
        }
    }
}

struct Namespace;
impl Strategy for Namespace {
    fn defaults(&self, obj: &mut Value) {
        let name = name(obj).unwrap_or_default().to_string();
        if let Some(labels) = ensure_object(obj, &["metadata", "labels"]) {
            labels.insert("kubernetes.io/metadata.name".into(), json!(name));
        }
        if let Some(spec) = ensure_object(obj, &["spec"]) {
            default_field(spec, "finalizers", json!(["kubernetes"]));
        }
    }
    fn initial_status(&self, _obj: &Value) -> Option<Value> {
        Some(json!({"phase": "Active"}))
    }
    fn dns_label_names(&self) -> bool {
        true
    }
}

/// ConfigMaps and Secrets marked `immutable` keep their data forever.
fn validate_immutable_data(new: &Value, old: &Value, errs: &mut Vec<Cause>) {
    if old.get("immutable") == Some(&json!(true)) {
        for field in ["data", "binaryData"] {
            if new.get(field) != old.get(field) {
                errs.push(forbidden(
                    field,
                    "field is immutable when `immutable` is set",
                ));
            }
        }
        if new.get("immutable") != Some(&json!(true)) {
            errs.push(forbidden(
                "immutable",
                "field is immutable when `immutable` is set",
            ));
        }
    }
}

fn validate_data_keys(obj: &Value, fields: &[&str], errs: &mut Vec<Cause>) {
    for field in fields {
        for key in obj
            .get(*field)
            .and_then(Value::as_object)
            .into_iter()
            .flat_map(|m| m.keys())
        {
            let ok = !key.is_empty()
                && key.len() <= 253
                && key
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'));
            if !ok {
                errs.push(invalid(
                    &format!("{field}[{key}]"),
                    &json!(key),
                    "a valid config key must consist of alphanumeric characters, '-', '_' or '.' (e.g. 'key.name',  or 'KEY_NAME',  or 'key-name', regex used for validation is '[-._a-zA-Z0-9]+')",
                ));
            }
        }
    }
}

struct ConfigMap;
impl Strategy for ConfigMap {
    fn initial_status(&self, _obj: &Value) -> Option<Value> {
        None
    }
    fn validate(&self, obj: &Value, errs: &mut Vec<Cause>) {
        validate_data_keys(obj, &["data", "binaryData"], errs);
    }
    fn validate_update(&self, new: &Value, old: &Value, errs: &mut Vec<Cause>) {
        validate_immutable_data(new, old, errs);
    }
}

struct Secret;
impl Strategy for Secret {
    fn defaults(&self, obj: &mut Value) {
        // `stringData` is write-only sugar: merged into `data` (base64) and never stored.
        if let Some(Value::Object(string_data)) =
            obj.as_object_mut().and_then(|m| m.remove("stringData"))
        {
            use base64::Engine as _;
            if let Some(data) = ensure_object(obj, &["data"]) {
                for (k, v) in string_data {
                    let raw = v.as_str().unwrap_or_default().as_bytes().to_vec();
                    data.insert(
                        k,
                        json!(base64::engine::general_purpose::STANDARD.encode(raw)),
                    );
                }
            }
        }
        if let Some(m) = obj.as_object_mut() {
            default_field(m, "type", json!("Opaque"));
        }
    }
    fn initial_status(&self, _obj: &Value) -> Option<Value> {
        None
    }
    fn validate(&self, obj: &Value, errs: &mut Vec<Cause>) {
        validate_data_keys(obj, &["data"], errs);
    }
    fn validate_update(&self, new: &Value, old: &Value, errs: &mut Vec<Cause>) {
        validate_immutable_data(new, old, errs);
        immutable(new, old, "/type", "type", errs);
    }
}

struct Deployment;
impl Strategy for Deployment {
    fn defaults(&self, obj: &mut Value) {
        if let Some(spec) = ensure_object(obj, &["spec"]) {
            default_field(spec, "replicas", json!(1));
            default_field(spec, "revisionHistoryLimit", json!(10));
            default_field(spec, "progressDeadlineSeconds", json!(600));
            default_field(
                spec,
                "strategy",
                json!({"type": "RollingUpdate", "rollingUpdate": {"maxUnavailable": "25%", "maxSurge": "25%"}}),
            );
        }
        default_template(obj);
    }
    fn validate(&self, obj: &Value, errs: &mut Vec<Cause>) {
        validate_selector_matches_template(obj, errs);
        validate_containers(
            obj.pointer("/spec/template/spec").unwrap_or(&Value::Null),
            "spec.template.spec",
            errs,
        );
    }
    fn validate_update(&self, new: &Value, old: &Value, errs: &mut Vec<Cause>) {
        selector_is_immutable(new, old, errs);
    }
}

struct ReplicaSet;
impl Strategy for ReplicaSet {
    fn defaults(&self, obj: &mut Value) {
        if let Some(spec) = ensure_object(obj, &["spec"]) {
            default_field(spec, "replicas", json!(1));
        }
        default_template(obj);
    }
    fn validate(&self, obj: &Value, errs: &mut Vec<Cause>) {
        validate_selector_matches_template(obj, errs);
    }
    fn validate_update(&self, new: &Value, old: &Value, errs: &mut Vec<Cause>) {
        selector_is_immutable(new, old, errs);
    }
}

struct StatefulSet;
impl Strategy for StatefulSet {
    fn defaults(&self, obj: &mut Value) {
        if let Some(spec) = ensure_object(obj, &["spec"]) {
            default_field(spec, "replicas", json!(1));
            default_field(spec, "podManagementPolicy", json!("OrderedReady"));
            default_field(spec, "revisionHistoryLimit", json!(10));
            default_field(
                spec,
                "updateStrategy",
                json!({"type": "RollingUpdate", "rollingUpdate": {"partition": 0}}),
            );
            default_field(
                spec,
                "persistentVolumeClaimRetentionPolicy",
                json!({"whenDeleted": "Retain", "whenScaled": "Retain"}),
            );
        }
        default_template(obj);
    }
    fn validate(&self, obj: &Value, errs: &mut Vec<Cause>) {
        validate_selector_matches_template(obj, errs);
    }
    fn validate_update(&self, new: &Value, old: &Value, errs: &mut Vec<Cause>) {
        selector_is_immutable(new, old, errs);
    }
}

struct DaemonSet;
impl Strategy for DaemonSet {
    fn defaults(&self, obj: &mut Value) {
        if let Some(spec) = ensure_object(obj, &["spec"]) {
            default_field(spec, "revisionHistoryLimit", json!(10));
            default_field(
                spec,
                "updateStrategy",
                json!({"type": "RollingUpdate", "rollingUpdate": {"maxUnavailable": 1, "maxSurge": 0}}),
            );
        }
        default_template(obj);
    }
    fn validate(&self, obj: &Value, errs: &mut Vec<Cause>) {
        validate_selector_matches_template(obj, errs);
    }
    fn validate_update(&self, new: &Value, old: &Value, errs: &mut Vec<Cause>) {
        selector_is_immutable(new, old, errs);
    }
}

struct Job;
impl Strategy for Job {
    fn defaults(&self, obj: &mut Value) {
        let manual = obj.pointer("/spec/manualSelector") == Some(&json!(true));
        let uid = obj
            .pointer("/metadata/uid")
            .and_then(Value::as_str)
            .unwrap_or_default()
            .to_string();
        let job_name = name(obj).unwrap_or_default().to_string();
        if let Some(spec) = ensure_object(obj, &["spec"]) {
            // Upstream: neither set means one pod to completion; parallelism alone means a
            // work queue, whose completions stay unset.
            let unset = |v: Option<&Value>| v.is_none_or(Value::is_null);
            if unset(spec.get("completions")) && unset(spec.get("parallelism")) {
                spec.insert("completions".into(), json!(1));
            }
            default_field(spec, "parallelism", json!(1));
            default_field(spec, "backoffLimit", json!(6));
            default_field(spec, "completionMode", json!("NonIndexed"));
            default_field(spec, "suspend", json!(false));
            default_field(spec, "podReplacementPolicy", json!("TerminatingOrFailed"));
            // A pod-failure rule's condition pattern matches `status: "True"` unless it says.
            if let Some(Value::Array(rules)) = spec
                .get_mut("podFailurePolicy")
                .and_then(|p| p.get_mut("rules"))
            {
                for pattern in rules
                    .iter_mut()
                    .filter_map(|r| r.get_mut("onPodConditions"))
                    .filter_map(Value::as_array_mut)
                    .flatten()
                    .filter_map(Value::as_object_mut)
                {
                    default_field(pattern, "status", json!("True"));
                }
            }
            if !manual {
                spec.remove("manualSelector");
            }
        }
        // The generated selector ties a Job to its own pods by uid, as upstream does.
        if !manual && !uid.is_empty() {
            let labels = json!({
                "batch.kubernetes.io/controller-uid": uid,
                "batch.kubernetes.io/job-name": job_name,
                "controller-uid": uid,
                "job-name": job_name,
            });
            if obj.pointer("/spec/selector").is_none() {
                obj["spec"]["selector"] =
                    json!({"matchLabels": {"batch.kubernetes.io/controller-uid": uid}});
            }
            if let Some(tl) = ensure_object(obj, &["spec", "template", "metadata", "labels"]) {
                for (k, v) in labels.as_object().into_iter().flatten() {
                    tl.entry(k.clone()).or_insert(v.clone());
                }
            }
        }
        default_template(obj);
    }
    fn validate(&self, obj: &Value, errs: &mut Vec<Cause>) {
        let restart = obj
            .pointer("/spec/template/spec/restartPolicy")
            .and_then(Value::as_str)
            .unwrap_or("");
        if !matches!(restart, "Never" | "OnFailure") {
            errs.push((
                "spec.template.spec.restartPolicy".into(),
                format!(
                    "Unsupported value: \"{restart}\": supported values: \"OnFailure\", \"Never\""
                ),
                "FieldValueNotSupported".into(),
            ));
        }
        validate_containers(
            obj.pointer("/spec/template/spec").unwrap_or(&Value::Null),
            "spec.template.spec",
            errs,
        );
    }
    fn validate_update(&self, new: &Value, old: &Value, errs: &mut Vec<Cause>) {
        selector_is_immutable(new, old, errs);
        immutable(new, old, "/spec/completions", "spec.completions", errs);
    }
}

struct CronJob;
impl Strategy for CronJob {
    fn defaults(&self, obj: &mut Value) {
        if let Some(spec) = ensure_object(obj, &["spec"]) {
            default_field(spec, "concurrencyPolicy", json!("Allow"));
            default_field(spec, "suspend", json!(false));
            default_field(spec, "successfulJobsHistoryLimit", json!(3));
            default_field(spec, "failedJobsHistoryLimit", json!(1));
        }
        if let Some(spec) = obj
            .pointer_mut("/spec/jobTemplate/spec/template/spec")
            .and_then(Value::as_object_mut)
        {
            default_pod_spec(spec);
        }
    }
    fn validate(&self, obj: &Value, errs: &mut Vec<Cause>) {
        if obj
            .pointer("/spec/schedule")
            .and_then(Value::as_str)
            .is_none_or(str::is_empty)
        {
            errs.push(required("spec.schedule"));
        }
    }
}

/// certificates.k8s.io/v1 CertificateSigningRequest (upstream's `pkg/registry/certificates`
/// strategy and `pkg/apis/certificates/validation`). The requestor fields of the spec are
/// set by admission from the caller.
struct CertificateSigningRequest;

/// Every `spec.usages` value upstream accepts.
const KEY_USAGES: &[&str] = &[
    "signing",
    "digital signature",
    "content commitment",
    "key encipherment",
    "key agreement",
    "data encipherment",
    "cert sign",
    "crl sign",
    "encipher only",
    "decipher only",
    "any",
    "server auth",
    "client auth",
    "code signing",
    "email protection",
    "s/mime",
    "ipsec end system",
    "ipsec tunnel",
    "ipsec user",
    "timestamping",
    "ocsp signing",
    "microsoft sgc",
    "netscape sgc",
];

/// Decodes a `[]byte` field (base64 in JSON).
fn bytes_at(obj: &Value, pointer: &str) -> Option<Result<Vec<u8>, ()>> {
    use base64::Engine as _;
    let s = obj.pointer(pointer)?.as_str()?;
    Some(
        base64::engine::general_purpose::STANDARD
            .decode(s)
            .map_err(|_| ()),
    )
}

fn conditions(obj: &Value) -> &[Value] {
    obj.pointer("/status/conditions")
        .and_then(Value::as_array)
        .map(Vec::as_slice)
        .unwrap_or_default()
}

fn condition_type(c: &Value) -> &str {
    c.get("type").and_then(Value::as_str).unwrap_or("")
}

impl Strategy for CertificateSigningRequest {
    fn path_segment_names(&self) -> bool {
        true
    }

    fn validate(&self, obj: &Value, errs: &mut Vec<Cause>) {
        match bytes_at(obj, "/spec/request") {
            None => errs.push(required("spec.request")),
            Some(Err(())) => errs.push(invalid(
                "spec.request",
                &Value::from("[]byte{...}"),
                "not base64",
            )),
            Some(Ok(bytes)) => {
                let parsed = std::str::from_utf8(&bytes)
                    .map_err(|_| "PEM block type must be CERTIFICATE REQUEST".to_string())
                    .and_then(|pem| {
                        if !pem.contains("-----BEGIN CERTIFICATE REQUEST-----") {
                            return Err("PEM block type must be CERTIFICATE REQUEST".to_string());
                        }
                        pki::parse_csr(pem).map_err(|e| e.to_string())
                    });
                if let Err(why) = parsed {
                    errs.push(invalid("spec.request", &Value::from("[]byte{...}"), &why));
                }
            }
        }
        match obj.pointer("/spec/signerName").and_then(Value::as_str) {
            None | Some("") => errs.push(required("spec.signerName")),
            Some(signer) => {
                let (domain, path) = signer.split_once('/').unwrap_or((signer, ""));
                if path.is_empty() || !is_dns_subdomain(domain) || path.len() > 571 {
                    errs.push(invalid(
                        "spec.signerName",
                        &Value::from(signer),
                        "must be a fully qualified domain and path of the form 'example.com/signer-name'",
                    ));
                }
            }
        }
        let usages = obj
            .pointer("/spec/usages")
            .and_then(Value::as_array)
            .map(Vec::as_slice)
            .unwrap_or_default();
        if usages.is_empty() {
            errs.push((
                "spec.usages".into(),
                "Required value: usages must be provided".into(),
                "FieldValueRequired".into(),
            ));
        }
        let mut seen = std::collections::HashSet::new();
        for (i, u) in usages.iter().enumerate() {
            let s = u.as_str().unwrap_or("");
            if !KEY_USAGES.contains(&s) {
                errs.push((
                    format!("spec.usages[{i}]"),
                    format!("Unsupported value: {u}"),
                    "FieldValueNotSupported".into(),
                ));
            } else if !seen.insert(s) {
                errs.push((
                    format!("spec.usages[{i}]"),
                    format!("Duplicate value: {u}"),
                    "FieldValueDuplicate".into(),
                ));
            }
        }
        if let Some(secs) = obj.pointer("/spec/expirationSeconds") {
            if secs.as_i64().is_some_and(|s| s < 600) {
                errs.push(invalid(
                    "spec.expirationSeconds",
                    secs,
                    "may not specify a duration less than 600 seconds (10 minutes)",
                ));
            }
        }
        let mut types = std::collections::HashSet::new();
        for (i, c) in conditions(obj).iter().enumerate() {
            let t = condition_type(c);
            let at = format!("status.conditions[{i}]");
            if t.is_empty() {
                errs.push(required(&format!("{at}.type")));
                continue;
            }
            if matches!(t, "Approved" | "Denied" | "Failed") && !types.insert(t.to_string()) {
                errs.push((
                    format!("{at}.type"),
                    format!("Duplicate value: \"{t}\""),
                    "FieldValueDuplicate".into(),
                ));
            }
            let status = c.get("status").and_then(Value::as_str).unwrap_or("");
            if matches!(t, "Approved" | "Denied") && status != "True" {
                errs.push((
                    format!("{at}.status"),
                    format!("Unsupported value: \"{status}\": supported values: \"True\""),
                    "FieldValueNotSupported".into(),
                ));
            }
        }
        if types.contains("Approved") && types.contains("Denied") {
            errs.push(invalid(
                "status.conditions",
                &Value::from("[]certificates.CertificateSigningRequestCondition{...}"),
                "Approved and Denied conditions are mutually exclusive",
            ));
        }
        if let Some(cert) = bytes_at(obj, "/status/certificate") {
            let ok = cert.ok().is_some_and(|b| {
                b.is_empty()
                    || std::str::from_utf8(&b)
                        .is_ok_and(|s| s.contains("-----BEGIN CERTIFICATE-----"))
            });
            if !ok {
                errs.push(invalid(
                    "status.certificate",
                    &Value::from("<certificate data>"),
                    "must contain at least one CERTIFICATE PEM block",
                ));
            }
        }
    }

    fn validate_update(&self, new: &Value, old: &Value, errs: &mut Vec<Cause>) {
        immutable(new, old, "/spec", "spec", errs);
        for t in ["Approved", "Denied"] {
            let had = conditions(old).iter().any(|c| condition_type(c) == t);
            let has = conditions(new).iter().any(|c| condition_type(c) == t);
            if had && !has {
                errs.push(forbidden(
                    "status.conditions",
                    &format!("updates may not remove a condition of type \"{t}\""),
                ));
            }
        }
        let old_cert = old.pointer("/status/certificate").and_then(Value::as_str);
        let new_cert = new.pointer("/status/certificate").and_then(Value::as_str);
        if old_cert.is_some_and(|c| !c.is_empty()) && new_cert != old_cert {
            errs.push(forbidden(
                "status.certificate",
                "updates may not modify existing certificate content",
            ));
        }
    }
}

/// What `/status` and `/approval` of a CertificateSigningRequest may change, on top of the
/// generic subresource merge: `/status` keeps the stored Approved/Denied conditions (only
/// `/approval` decides), and both fill in missing condition timestamps as upstream does.
pub fn certificate_request_merge(subresource: Option<&str>, current: &Value, out: &mut Value) {
    if !matches!(subresource, Some("status" | "approval")) {
        return;
    }
    let old = conditions(current).to_vec();
    let mut new: Vec<Value> = conditions(out).to_vec();
    if subresource == Some("status") {
        new.retain(|c| !matches!(condition_type(c), "Approved" | "Denied"));
        new.extend(
            old.iter()
                .filter(|c| matches!(condition_type(c), "Approved" | "Denied"))
                .cloned(),
        );
    }
    let now = crate::object::now_rfc3339();
    for c in &mut new {
        let Some(m) = c.as_object_mut() else {
            continue;
        };
        let same_type = old.iter().find(|o| o.get("type") == m.get("type")).cloned();
        let empty = |v: Option<&Value>| v.is_none_or(|v| v.is_null() || v == "");
        if empty(m.get("lastUpdateTime")) {
            let kept = same_type
                .as_ref()
                .filter(|o| {
                    o.get("status") == m.get("status")
                        && o.get("reason") == m.get("reason")
                        && o.get("message") == m.get("message")
                })
                .and_then(|o| o.get("lastUpdateTime").cloned());
            m.insert("lastUpdateTime".into(), kept.unwrap_or_else(|| json!(now)));
        }
        if empty(m.get("lastTransitionTime")) {
            let kept = same_type
                .as_ref()
                .filter(|o| o.get("status") == m.get("status"))
                .and_then(|o| o.get("lastTransitionTime").cloned());
            m.insert(
                "lastTransitionTime".into(),
                kept.unwrap_or_else(|| json!(now)),
            );
        }
    }
    if new.is_empty() {
        if let Some(status) = out.get_mut("status").and_then(Value::as_object_mut) {
            status.remove("conditions");
        }
    } else if let Some(status) = out.as_object_mut().map(|m| {
        m.entry("status")
            .or_insert_with(|| Value::Object(Map::new()))
    }) {
        if let Some(s) = status.as_object_mut() {
            s.insert("conditions".into(), Value::Array(new));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn csr(request: &str) -> Value {
        use base64::Engine as _;
        json!({
            "metadata": {"name": "c"},
            "spec": {
                "request": base64::engine::general_purpose::STANDARD.encode(request),
                "signerName": "kubernetes.io/kube-apiserver-client-kubelet",
                "usages": ["digital signature", "client auth"],
            },
        })
    }

    fn csr_causes(obj: &Value, old: Option<&Value>) -> Vec<String> {
        let mut errs = Vec::new();
        CertificateSigningRequest.validate(obj, &mut errs);
        if let Some(old) = old {
            CertificateSigningRequest.validate_update(obj, old, &mut errs);
        }
        errs.into_iter()
            .map(|(f, m, _)| format!("{f}: {m}"))
            .collect()
    }

    #[test]
    fn certificate_signing_requests() {
        let (pem, _) = pki::generate_csr("system:node:n1", Some("system:nodes")).unwrap();
        let good = csr(&pem);
        assert!(
            csr_causes(&good, None).is_empty(),
            "{:?}",
            csr_causes(&good, None)
        );
        let bad = csr("not a csr");
        assert!(csr_causes(&bad, None)[0].contains("PEM block type must be CERTIFICATE REQUEST"));
        let mut no_signer = good.clone();
        no_signer["spec"]["signerName"] = json!("");
        no_signer["spec"]["usages"] = json!(["client auth", "client auth", "bogus"]);
        let causes = csr_causes(&no_signer, None);
        assert!(
            causes.contains(&"spec.signerName: Required value".to_string()),
            "{causes:?}"
        );
        assert!(causes
            .iter()
            .any(|c| c.starts_with("spec.usages[1]: Duplicate")));
        assert!(causes
            .iter()
            .any(|c| c.starts_with("spec.usages[2]: Unsupported")));

        // Approval: conditions only, with timestamps; /status cannot touch the decision.
        let mut approved = good.clone();
        approved["status"] =
            json!({"conditions": [{"type": "Approved", "status": "True", "reason": "R"}]});
        let mut out = good.clone();
        out["status"] = approved["status"].clone();
        certificate_request_merge(Some("approval"), &good, &mut out);
        assert!(out["status"]["conditions"][0]["lastUpdateTime"].is_string());
        assert!(csr_causes(&out, Some(&good)).is_empty());
        let mut both = out.clone();
        both["status"]["conditions"]
            .as_array_mut()
            .unwrap()
            .push(json!({"type": "Denied", "status": "True"}));
        assert!(csr_causes(&both, Some(&out))
            .iter()
            .any(|c| c.contains("mutually exclusive")));
        let mut status_write = out.clone();
        status_write["status"]["conditions"] = json!([]);
        status_write["status"]["certificate"] = json!("LS0tLS1CRUdJTiBDRVJUSUZJQ0FURS0tLS0tCg==");
        certificate_request_merge(Some("status"), &out, &mut status_write);
        assert_eq!(status_write["status"]["conditions"][0]["type"], "Approved");
        let mut removed = out.clone();
        removed["status"]["conditions"] = json!([]);
        assert!(csr_causes(&removed, Some(&out))
            .iter()
            .any(|c| c.contains("may not remove a condition of type \"Approved\"")));
        let mut changed_spec = out.clone();
        changed_spec["spec"]["signerName"] = json!("example.com/x");
        assert!(csr_causes(&changed_spec, Some(&out))
            .iter()
            .any(|c| c.starts_with("spec: Invalid value")));
    }

    #[test]
    fn names_and_labels() {
        assert!(is_dns_label("web-1"));
        assert!(!is_dns_label("Web"));
        assert!(!is_dns_label("a.b"));
        assert!(is_dns_subdomain("a.b-c"));
        assert!(is_qualified_name("app.kubernetes.io/name"));
        assert!(!is_qualified_name("-bad"));
        assert!(is_label_value(""));
        assert!(!is_label_value("bad value"));
    }

    #[test]
    fn qos() {
        let pod = |res: Value| json!({"spec": {"containers": [{"name": "c", "image": "i", "resources": res}]}});
        assert_eq!(qos_class(&pod(json!({}))), "BestEffort");
        assert_eq!(
            qos_class(&pod(json!({"limits": {"cpu": "1", "memory": "1Gi"}}))),
            "Guaranteed"
        );
        assert_eq!(
            qos_class(&pod(json!({"requests": {"cpu": "1"}}))),
            "Burstable"
        );
    }

    #[test]
    fn image_pull_policy_defaults() {
        let mut c = Map::new();
        c.insert("image".into(), json!("busybox"));
        default_container(&mut c);
        assert_eq!(c["imagePullPolicy"], "Always");
        let mut c = Map::new();
        c.insert("image".into(), json!("registry:5000/busybox:1.36"));
        default_container(&mut c);
        assert_eq!(c["imagePullPolicy"], "IfNotPresent");
    }
}
