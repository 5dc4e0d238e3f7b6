//! Pod Security Admission: the Pod Security Standards checks of kube-apiserver 1.32.
//!
//! kubectl prints the API server's messages verbatim, and users grep for them, so every check
//! name, detail sentence and their order follow upstream's `pod-security-admission/policy`
//! package: baseline checks sorted by check ID, then restricted checks sorted by check ID, with
//! the baseline checks a restricted check overrides left out at the restricted level.
//!
//! Policy versions are honoured the way upstream does: `latest` and anything newer than 1.32
//! evaluate as 1.32, and older versions drop or swap the checks that changed since.

use std::collections::{BTreeMap, BTreeSet};

use serde_json::Value;

/// Label keys on a Namespace that select its policy.
pub const ENFORCE_LABEL: &str = "pod-security.kubernetes.io/enforce";
/// Version for [`ENFORCE_LABEL`].
pub const ENFORCE_VERSION_LABEL: &str = "pod-security.kubernetes.io/enforce-version";
/// Level for audit annotations.
pub const AUDIT_LABEL: &str = "pod-security.kubernetes.io/audit";
/// Version for [`AUDIT_LABEL`].
pub const AUDIT_VERSION_LABEL: &str = "pod-security.kubernetes.io/audit-version";
/// Level for client warnings.
pub const WARN_LABEL: &str = "pod-security.kubernetes.io/warn";
/// Version for [`WARN_LABEL`].
pub const WARN_VERSION_LABEL: &str = "pod-security.kubernetes.io/warn-version";

/// Audit annotation naming the enforce policy a pod was checked against.
pub const ENFORCE_POLICY_ANNOTATION: &str = "pod-security.kubernetes.io/enforce-policy";
/// Audit annotation carrying the audit-level violations.
pub const AUDIT_VIOLATIONS_ANNOTATION: &str = "pod-security.kubernetes.io/audit-violations";
/// Audit annotation carrying namespace label parse errors.
pub const ERROR_ANNOTATION: &str = "pod-security.kubernetes.io/error";

/// The newest policy version this module implements; newer versions evaluate as this one.
const MAX_MINOR: u32 = 32;

/// A Pod Security Standards level, least to most strict.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Level {
    /// No restrictions.
    Privileged,
    /// Blocks known privilege escalations.
    Baseline,
    /// Hardening best practice.
    Restricted,
}

impl Level {
    /// The label value spelling.
    pub fn as_str(self) -> &'static str {
        match self {
            Level::Privileged => "privileged",
            Level::Baseline => "baseline",
            Level::Restricted => "restricted",
        }
    }

    fn parse(s: &str) -> Option<Level> {
        match s {
            "privileged" => Some(Level::Privileged),
            "baseline" => Some(Level::Baseline),
            "restricted" => Some(Level::Restricted),
            _ => None,
        }
    }
}

/// The effective policy of a namespace: (level, version) per mode.
///
/// Versions are kept as the label spelled them (`latest`, `v1.25`) because upstream's messages
/// quote them (`"restricted:v1.25"`); an invalid version becomes `latest`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NamespacePolicy {
    /// Pods violating this are rejected.
    pub enforce: (Level, String),
    /// Violations of this are returned as warnings.
    pub warn: (Level, String),
    /// Violations of this are recorded in the audit log.
    pub audit: (Level, String),
    /// Label parse errors, in upstream's field-error wording; they go to the audit log.
    pub errors: Vec<String>,
}

impl Default for NamespacePolicy {
    fn default() -> Self {
        let p = (Level::Privileged, "latest".to_string());
        NamespacePolicy {
            enforce: p.clone(),
            warn: p.clone(),
            audit: p,
            errors: Vec::new(),
        }
    }
}

fn parse_version(s: &str) -> Option<u32> {
    if s == "latest" {
        return Some(u32::MAX);
    }
    let minor = s.strip_prefix("v1.")?;
    if minor.is_empty()
        || !minor.bytes().all(|b| b.is_ascii_digit())
        || (minor.len() > 1 && minor.starts_with('0'))
    {
        return None;
    }
    minor.parse().ok()
}

fn invalid_label(key: &str, value: &str, why: &str) -> String {
    format!("metadata.labels[{key}]: Invalid value: {value:?}: {why}")
}

/// Resolve a namespace's labels to its policy, as upstream's `PolicyToEvaluate` does with the
/// default (privileged:latest) configuration: an invalid enforce level means `restricted` (fail
/// closed), an invalid audit or warn level means `privileged` (fail open), an invalid version
/// means `latest`; each invalid label is also reported in `errors`.
pub fn namespace_policy(labels: &BTreeMap<String, String>) -> NamespacePolicy {
    const LEVELS: &str = "must be one of privileged, baseline, restricted";
    const VERSIONS: &str = "must be \"latest\" or \"v1.x\"";
    let mut policy = NamespacePolicy::default();
    let mut errors = Vec::new();
    let modes: [(&str, &str, Level); 3] = [
        (ENFORCE_LABEL, ENFORCE_VERSION_LABEL, Level::Restricted),
        (AUDIT_LABEL, AUDIT_VERSION_LABEL, Level::Privileged),
        (WARN_LABEL, WARN_VERSION_LABEL, Level::Privileged),
    ];
    for (level_key, version_key, fallback) in modes {
        let slot = match level_key {
            ENFORCE_LABEL => &mut policy.enforce,
            AUDIT_LABEL => &mut policy.audit,
            _ => &mut policy.warn,
        };
        if let Some(v) = labels.get(level_key) {
            slot.0 = Level::parse(v).unwrap_or_else(|| {
                errors.push(invalid_label(level_key, v, LEVELS));
                fallback
            });
        }
        if let Some(v) = labels.get(version_key) {
            if parse_version(v).is_some() {
                slot.1 = v.clone();
            } else {
                errors.push(invalid_label(version_key, v, VERSIONS));
                slot.1 = "latest".to_string();
            }
        }
    }
    policy.errors = errors;
    policy
}

/// What Pod Security decided for one object.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Outcome {
    /// The Forbidden message body when the enforce level rejects the pod.
    pub denied: Option<String>,
    /// Warnings for the client (`Warning:` lines in kubectl).
    pub warnings: Vec<String>,
    /// Audit annotations, keys fully qualified (`pod-security.kubernetes.io/...`).
    pub audit_annotations: BTreeMap<String, String>,
}

/// One failed check: upstream's short reason and optional detail.
struct Violation {
    reason: String,
    detail: String,
}

/// `reason (detail), reason, ...`, upstream's `ForbiddenDetail()`.
fn render(violations: &[Violation]) -> String {
    violations
        .iter()
        .map(|v| {
            if v.detail.is_empty() {
                v.reason.clone()
            } else {
                format!("{} ({})", v.reason, v.detail)
            }
        })
        .collect::<Vec<_>>()
        .join(", ")
}

fn label(level: Level, version: &str) -> String {
    format!("{}:{}", level.as_str(), version)
}

/// Evaluate a Pod create or update (the caller decides whether an update is significant, as
/// upstream skips updates that change nothing but metadata).
pub fn check_pod(policy: &NamespacePolicy, pod: &Value) -> Outcome {
    let meta = pod.get("metadata").unwrap_or(&Value::Null);
    let spec = pod.get("spec").unwrap_or(&Value::Null);
    evaluate(policy, meta, spec, true)
}

/// Whether a Pod update must be evaluated at all. Upstream re-checks only updates that can
/// change what the policy sees through the few mutable pod fields: a changed container or init
/// container count or image, a new or changed ephemeral container, or a changed per-container
/// seccomp annotation. Anything else (labels, status) is admitted unchecked, so pods admitted
/// before a namespace tightened its policy can still be relabelled.
pub fn is_significant_pod_update(new: &Value, old: &Value) -> bool {
    let list = |pod: &Value, key: &str| -> Vec<Value> {
        pod.get("spec")
            .and_then(|s| s.get(key))
            .and_then(Value::as_array)
            .cloned()
            .unwrap_or_default()
    };
    let seccomp = |pod: &Value, c: &Value| -> Option<String> {
        let key = format!("container.seccomp.security.alpha.kubernetes.io/{}", name(c));
        pod.get("metadata")
            .and_then(|m| m.get("annotations"))
            .and_then(|a| a.get(&key))
            .and_then(Value::as_str)
            .map(str::to_string)
    };
    let changed = |n: &Value, o: &Value| {
        n.get("image") != o.get("image") || seccomp(new, n) != seccomp(old, o)
    };
    for key in ["containers", "initContainers"] {
        let (n, o) = (list(new, key), list(old, key));
        if n.len() != o.len() || n.iter().zip(&o).any(|(n, o)| changed(n, o)) {
            return true;
        }
    }
    let old_ephemeral = list(old, "ephemeralContainers");
    list(new, "ephemeralContainers").iter().any(|n| {
        match old_ephemeral.iter().find(|o| name(o) == name(n)) {
            None => true,
            Some(o) => changed(n, o),
        }
    })
}

/// Evaluate an object carrying a pod template: warnings and audit annotations only, because the
/// pods themselves are checked (and rejected) when the controller creates them.
/// `kind` is one of Deployment, ReplicaSet, StatefulSet, DaemonSet, Job, CronJob,
/// ReplicationController, PodTemplate; any other kind, or an object without a template, yields
/// an empty outcome.
pub fn check_template(policy: &NamespacePolicy, kind: &str, object: &Value) -> Outcome {
    let template = match kind {
        "Deployment"
        | "ReplicaSet"
        | "StatefulSet"
        | "DaemonSet"
        | "Job"
        | "ReplicationController" => object.get("spec").and_then(|s| s.get("template")),
        "CronJob" => object
            .get("spec")
            .and_then(|s| s.get("jobTemplate"))
            .and_then(|j| j.get("spec"))
            .and_then(|s| s.get("template")),
        "PodTemplate" => object.get("template"),
        _ => None,
    };
    let Some(template) = template.filter(|t| !t.is_null()) else {
        return Outcome::default();
    };
    if policy.errors.is_empty()
        && policy.warn.0 == Level::Privileged
        && policy.audit.0 == Level::Privileged
    {
        return Outcome::default();
    }
    let meta = template.get("metadata").unwrap_or(&Value::Null);
    let spec = template.get("spec").unwrap_or(&Value::Null);
    evaluate(policy, meta, spec, false)
}

fn evaluate(policy: &NamespacePolicy, meta: &Value, spec: &Value, enforce: bool) -> Outcome {
    let mut out = Outcome::default();
    let all_privileged = policy.enforce.0 == Level::Privileged
        && policy.warn.0 == Level::Privileged
        && policy.audit.0 == Level::Privileged;
    if enforce && policy.errors.is_empty() && all_privileged {
        out.audit_annotations.insert(
            ENFORCE_POLICY_ANNOTATION.to_string(),
            label(Level::Privileged, "latest"),
        );
        return out;
    }
    if !policy.errors.is_empty() {
        let errs = if policy.errors.len() == 1 {
            policy.errors[0].clone()
        } else {
            format!("[{}]", policy.errors.join(", "))
        };
        out.audit_annotations.insert(
            ERROR_ANNOTATION.to_string(),
            format!("Failed to parse policy: {errs}"),
        );
    }
    if enforce {
        let (level, version) = &policy.enforce;
        out.audit_annotations.insert(
            ENFORCE_POLICY_ANNOTATION.to_string(),
            label(*level, version),
        );
        let v = run_checks(*level, version, meta, spec);
        if !v.is_empty() {
            out.denied = Some(format!(
                "violates PodSecurity {:?}: {}",
                label(*level, version),
                render(&v)
            ));
        }
    }
    let (level, version) = &policy.audit;
    let v = run_checks(*level, version, meta, spec);
    if !v.is_empty() {
        out.audit_annotations.insert(
            AUDIT_VIOLATIONS_ANNOTATION.to_string(),
            format!(
                "would violate PodSecurity {:?}: {}",
                label(*level, version),
                render(&v)
            ),
        );
    }
    // Upstream adds no warnings to a request it is already rejecting.
    if out.denied.is_none() {
        let (level, version) = &policy.warn;
        let v = run_checks(*level, version, meta, spec);
        if !v.is_empty() {
            out.warnings.push(format!(
                "would violate PodSecurity {:?}: {}",
                label(*level, version),
                render(&v)
            ));
        }
    }
    out
}

/// The checks of one level at one policy version, in upstream's order.
fn run_checks(level: Level, version: &str, meta: &Value, spec: &Value) -> Vec<Violation> {
    if level == Level::Privileged {
        return Vec::new();
    }
    let minor = parse_version(version).unwrap_or(u32::MAX).min(MAX_MINOR);
    let p = Pod { meta, spec, minor };
    let restricted = level == Level::Restricted;
    type Check = fn(&Pod<'_>) -> Option<Violation>;
    // (applies, check), baseline IDs sorted then restricted IDs sorted.
    let checks: [(bool, Check); 17] = [
        (true, app_armor_profile),
        // capabilities_baseline: overridden by capabilities_restricted from 1.22.
        (!(restricted && minor >= 22), capabilities_baseline),
        (true, host_namespaces),
        // hostPathVolumes: overridden by restrictedVolumes.
        (!restricted, host_path_volumes),
        (true, host_ports),
        (true, privileged),
        (true, proc_mount),
        (true, se_linux_options),
        // seccompProfile_baseline: overridden by seccompProfile_restricted from 1.19.
        (!(restricted && minor >= 19), seccomp_profile_baseline),
        (true, sysctls),
        (true, windows_host_process),
        (restricted && minor >= 8, allow_privilege_escalation),
        (restricted && minor >= 22, capabilities_restricted),
        (restricted, restricted_volumes),
        (restricted, run_as_non_root),
        (restricted && minor >= 23, run_as_user),
        (restricted && minor >= 19, seccomp_profile_restricted),
    ];
    checks
        .iter()
        .filter(|(applies, _)| *applies)
        .filter_map(|(_, check)| check(&p))
        .collect()
}

/// The pod (or template) being checked.
struct Pod<'a> {
    meta: &'a Value,
    spec: &'a Value,
    minor: u32,
}

impl<'a> Pod<'a> {
    /// Init containers, containers, ephemeral containers: upstream's visiting order.
    fn containers(&self) -> impl Iterator<Item = &'a Value> {
        let spec = self.spec;
        ["initContainers", "containers", "ephemeralContainers"]
            .into_iter()
            .flat_map(move |k| spec.get(k).and_then(Value::as_array).into_iter().flatten())
    }

    fn pod_sc(&self, field: &str) -> Option<&'a Value> {
        self.spec
            .get("securityContext")
            .and_then(|sc| sc.get(field))
            .filter(|v| !v.is_null())
    }

    fn annotations(&self) -> impl Iterator<Item = (&'a String, &'a str)> {
        self.meta
            .get("annotations")
            .and_then(Value::as_object)
            .into_iter()
            .flatten()
            .filter_map(|(k, v)| v.as_str().map(|v| (k, v)))
    }

    fn annotation(&self, key: &str) -> Option<&'a str> {
        self.meta
            .get("annotations")
            .and_then(|a| a.get(key))
            .and_then(Value::as_str)
    }

    /// Pod API validation rejects Linux-only fields on Windows pods, so restricted checks of
    /// those fields exempt them from policy 1.25 on.
    fn windows_exempt(&self) -> bool {
        self.minor >= 25
            && self
                .spec
                .get("os")
                .and_then(|o| o.get("name"))
                .and_then(Value::as_str)
                == Some("windows")
    }
}

fn name(c: &Value) -> String {
    c.get("name")
        .and_then(Value::as_str)
        .unwrap_or_default()
        .to_string()
}

fn sc<'a>(c: &'a Value, field: &str) -> Option<&'a Value> {
    c.get("securityContext")
        .and_then(|sc| sc.get(field))
        .filter(|v| !v.is_null())
}

fn join_quote<S: AsRef<str>>(items: &[S]) -> String {
    items
        .iter()
        .map(|s| format!("\"{}\"", s.as_ref()))
        .collect::<Vec<_>>()
        .join(", ")
}

fn plural<'s>(singular: &'s str, plural: &'s str, n: usize) -> &'s str {
    if n == 1 {
        singular
    } else {
        plural
    }
}

/// `container "a"` / `containers "a", "b"`.
fn containers_phrase(names: &[String]) -> String {
    format!(
        "{} {}",
        plural("container", "containers", names.len()),
        join_quote(names)
    )
}

fn violation(reason: impl Into<String>, detail: impl Into<String>) -> Option<Violation> {
    Some(Violation {
        reason: reason.into(),
        detail: detail.into(),
    })
}

fn set_list(s: BTreeSet<String>) -> Vec<String> {
    s.into_iter().collect()
}

// ---- baseline ----------------------------------------------------------------------------

fn app_armor_profile(p: &Pod<'_>) -> Option<Violation> {
    let allowed_type = |v: &Value| {
        matches!(
            v.get("type").and_then(Value::as_str),
            Some("RuntimeDefault" | "Localhost")
        )
    };
    let type_of = |v: &Value| {
        v.get("type")
            .and_then(Value::as_str)
            .unwrap_or_default()
            .to_string()
    };
    let mut setters = Vec::new();
    let mut bad_values = BTreeSet::new();
    if let Some(prof) = p.pod_sc("appArmorProfile") {
        if !allowed_type(prof) {
            setters.push("pod".to_string());
            bad_values.insert(type_of(prof));
        }
    }
    let mut bad = Vec::new();
    for c in p.containers() {
        if let Some(prof) = sc(c, "appArmorProfile") {
            if !allowed_type(prof) {
                bad.push(name(c));
                bad_values.insert(type_of(prof));
            }
        }
    }
    if !bad.is_empty() {
        setters.push(containers_phrase(&bad));
    }
    let mut values = set_list(bad_values);
    let mut annotations: Vec<String> = p
        .annotations()
        .filter(|(k, v)| {
            k.starts_with("container.apparmor.security.beta.kubernetes.io/")
                && !(v.is_empty() || *v == "runtime/default" || v.starts_with("localhost/"))
        })
        .map(|(k, v)| format!("{k}={v:?}"))
        .collect();
    if !annotations.is_empty() {
        annotations.sort();
        setters.push(plural("annotation", "annotations", annotations.len()).to_string());
        values.extend(annotations);
    }
    if setters.is_empty() {
        return None;
    }
    violation(
        plural(
            "forbidden AppArmor profile",
            "forbidden AppArmor profiles",
            values.len(),
        ),
        format!(
            "{} must not set AppArmor profile type to {}",
            setters.join(" and "),
            join_quote(&values)
        ),
    )
}

const BASELINE_CAPABILITIES: [&str; 13] = [
    "AUDIT_WRITE",
    "CHOWN",
    "DAC_OVERRIDE",
    "FOWNER",
    "FSETID",
    "KILL",
    "MKNOD",
    "NET_BIND_SERVICE",
    "SETFCAP",
    "SETGID",
    "SETPCAP",
    "SETUID",
    "SYS_CHROOT",
];

fn added_capabilities(c: &Value) -> impl Iterator<Item = &str> {
    sc(c, "capabilities")
        .and_then(|caps| caps.get("add"))
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .filter_map(Value::as_str)
}

fn capabilities_baseline(p: &Pod<'_>) -> Option<Violation> {
    let mut bad = Vec::new();
    let mut caps = BTreeSet::new();
    for c in p.containers() {
        let mut valid = true;
        for cap in added_capabilities(c) {
            if !BASELINE_CAPABILITIES.contains(&cap) {
                valid = false;
                caps.insert(cap.to_string());
            }
        }
        if !valid {
            bad.push(name(c));
        }
    }
    if bad.is_empty() {
        return None;
    }
    violation(
        "non-default capabilities",
        format!(
            "{} must not include {} in securityContext.capabilities.add",
            containers_phrase(&bad),
            join_quote(&set_list(caps))
        ),
    )
}

fn host_namespaces(p: &Pod<'_>) -> Option<Violation> {
    let mut set = BTreeSet::new();
    for field in ["hostNetwork", "hostPID", "hostIPC"] {
        if p.spec.get(field).and_then(Value::as_bool) == Some(true) {
            set.insert(format!("{field}=true"));
        }
    }
    if set.is_empty() {
        return None;
    }
    violation("host namespaces", set_list(set).join(", "))
}

fn volumes<'a>(p: &Pod<'a>) -> impl Iterator<Item = &'a Value> {
    p.spec
        .get("volumes")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
}

fn has(v: &Value, field: &str) -> bool {
    v.get(field).is_some_and(|f| !f.is_null())
}

fn host_path_volumes(p: &Pod<'_>) -> Option<Violation> {
    let bad: Vec<String> = volumes(p)
        .filter(|v| has(v, "hostPath"))
        .map(name)
        .collect();
    if bad.is_empty() {
        return None;
    }
    violation(
        "hostPath volumes",
        format!(
            "{} {}",
            plural("volume", "volumes", bad.len()),
            join_quote(&bad)
        ),
    )
}

fn host_ports(p: &Pod<'_>) -> Option<Violation> {
    let mut bad = Vec::new();
    let mut ports = BTreeSet::new();
    for c in p.containers() {
        let mut valid = true;
        for port in c
            .get("ports")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
        {
            let hp = port.get("hostPort").and_then(Value::as_i64).unwrap_or(0);
            if hp != 0 {
                valid = false;
                ports.insert(hp.to_string());
            }
        }
        if !valid {
            bad.push(name(c));
        }
    }
    if bad.is_empty() {
        return None;
    }
    violation(
        "hostPort",
        format!(
            "{} {} {} {}",
            containers_phrase(&bad),
            plural("uses", "use", bad.len()),
            plural("hostPort", "hostPorts", ports.len()),
            // Upstream sorts the port strings as strings.
            set_list(ports).join(", ")
        ),
    )
}

fn privileged(p: &Pod<'_>) -> Option<Violation> {
    let bad: Vec<String> = p
        .containers()
        .filter(|c| sc(c, "privileged").and_then(Value::as_bool) == Some(true))
        .map(name)
        .collect();
    if bad.is_empty() {
        return None;
    }
    violation(
        "privileged",
        format!(
            "{} must not set securityContext.privileged=true",
            containers_phrase(&bad)
        ),
    )
}

fn proc_mount(p: &Pod<'_>) -> Option<Violation> {
    let mut bad = Vec::new();
    let mut types = BTreeSet::new();
    for c in p.containers() {
        if let Some(pm) = sc(c, "procMount").and_then(Value::as_str) {
            if pm != "Default" {
                bad.push(name(c));
                types.insert(pm.to_string());
            }
        }
    }
    if bad.is_empty() {
        return None;
    }
    violation(
        "procMount",
        format!(
            "{} must not set securityContext.procMount to {}",
            containers_phrase(&bad),
            join_quote(&set_list(types))
        ),
    )
}

fn se_linux_options(p: &Pod<'_>) -> Option<Violation> {
    let allowed: &[&str] = if p.minor >= 31 {
        &[
            "",
            "container_t",
            "container_init_t",
            "container_kvm_t",
            "container_engine_t",
        ]
    } else {
        &["", "container_t", "container_init_t", "container_kvm_t"]
    };
    let mut bad_types = BTreeSet::new();
    let (mut set_user, mut set_role) = (false, false);
    let mut valid = |opts: &Value| {
        let s = |k: &str| opts.get(k).and_then(Value::as_str).unwrap_or_default();
        let mut ok = true;
        if !allowed.contains(&s("type")) {
            ok = false;
            bad_types.insert(s("type").to_string());
        }
        if !s("user").is_empty() {
            ok = false;
            set_user = true;
        }
        if !s("role").is_empty() {
            ok = false;
            set_role = true;
        }
        ok
    };
    let mut setters = Vec::new();
    if let Some(opts) = p.pod_sc("seLinuxOptions") {
        if !valid(opts) {
            setters.push("pod".to_string());
        }
    }
    let mut bad = Vec::new();
    for c in p.containers() {
        if let Some(opts) = sc(c, "seLinuxOptions") {
            if !valid(opts) {
                bad.push(name(c));
            }
        }
    }
    if !bad.is_empty() {
        setters.push(containers_phrase(&bad));
    }
    if setters.is_empty() {
        return None;
    }
    let mut data = Vec::new();
    if !bad_types.is_empty() {
        let n = bad_types.len();
        data.push(format!(
            "{} {}",
            plural("type", "types", n),
            join_quote(&set_list(bad_types))
        ));
    }
    if set_user {
        data.push("user may not be set".to_string());
    }
    if set_role {
        data.push("role may not be set".to_string());
    }
    violation(
        "seLinuxOptions",
        format!(
            "{} set forbidden securityContext.seLinuxOptions: {}",
            setters.join(" and "),
            data.join("; ")
        ),
    )
}

fn valid_seccomp(profile: &Value) -> bool {
    matches!(
        profile.get("type").and_then(Value::as_str),
        Some("RuntimeDefault" | "Localhost")
    )
}

fn seccomp_type(profile: &Value) -> String {
    profile
        .get("type")
        .and_then(Value::as_str)
        .unwrap_or_default()
        .to_string()
}

fn seccomp_profile_baseline(p: &Pod<'_>) -> Option<Violation> {
    if p.minor < 19 {
        // Before the field existed the profile lived in alpha annotations.
        const POD_KEY: &str = "seccomp.security.alpha.kubernetes.io/pod";
        const CONTAINER_PREFIX: &str = "container.seccomp.security.alpha.kubernetes.io/";
        let ok = |v: &str| {
            v == "runtime/default" || v == "docker/default" || v.starts_with("localhost/")
        };
        let mut forbidden = BTreeSet::new();
        if let Some(v) = p.annotation(POD_KEY) {
            if !ok(v) {
                forbidden.insert(format!("{POD_KEY}={v:?}"));
            }
        }
        for c in p.containers() {
            let key = format!("{CONTAINER_PREFIX}{}", name(c));
            if let Some(v) = p.annotation(&key) {
                if !ok(v) {
                    forbidden.insert(format!("{key}={v:?}"));
                }
            }
        }
        if forbidden.is_empty() {
            return None;
        }
        let n = forbidden.len();
        return violation(
            "seccompProfile",
            format!(
                "forbidden {} {}",
                plural("annotation", "annotations", n),
                set_list(forbidden).join(", ")
            ),
        );
    }
    let mut setters = Vec::new();
    let mut values = BTreeSet::new();
    if let Some(prof) = p.pod_sc("seccompProfile") {
        if !valid_seccomp(prof) {
            setters.push("pod".to_string());
            values.insert(seccomp_type(prof));
        }
    }
    let mut bad = Vec::new();
    for c in p.containers() {
        if let Some(prof) = sc(c, "seccompProfile") {
            if !valid_seccomp(prof) {
                bad.push(name(c));
                values.insert(seccomp_type(prof));
            }
        }
    }
    if !bad.is_empty() {
        setters.push(containers_phrase(&bad));
    }
    if setters.is_empty() {
        return None;
    }
    violation(
        "seccompProfile",
        format!(
            "{} must not set securityContext.seccompProfile.type to {}",
            setters.join(" and "),
            join_quote(&set_list(values))
        ),
    )
}

fn sysctls(p: &Pod<'_>) -> Option<Violation> {
    let mut allowed = vec![
        "kernel.shm_rmid_forced",
        "net.ipv4.ip_local_port_range",
        "net.ipv4.tcp_syncookies",
        "net.ipv4.ping_group_range",
        "net.ipv4.ip_unprivileged_port_start",
    ];
    if p.minor >= 27 {
        allowed.push("net.ipv4.ip_local_reserved_ports");
    }
    if p.minor >= 29 {
        allowed.extend([
            "net.ipv4.tcp_keepalive_time",
            "net.ipv4.tcp_fin_timeout",
            "net.ipv4.tcp_keepalive_intvl",
            "net.ipv4.tcp_keepalive_probes",
        ]);
    }
    if p.minor >= 32 {
        allowed.extend(["net.ipv4.tcp_rmem", "net.ipv4.tcp_wmem"]);
    }
    let bad: Vec<&str> = p
        .pod_sc("sysctls")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .filter_map(|s| s.get("name").and_then(Value::as_str))
        .filter(|n| !allowed.contains(n))
        .collect();
    if bad.is_empty() {
        return None;
    }
    violation("forbidden sysctls", bad.join(", "))
}

fn windows_host_process(p: &Pod<'_>) -> Option<Violation> {
    let host_process = |wo: Option<&Value>| {
        wo.and_then(|w| w.get("hostProcess"))
            .and_then(Value::as_bool)
            == Some(true)
    };
    let bad: Vec<String> = p
        .containers()
        .filter(|c| host_process(sc(c, "windowsOptions")))
        .map(name)
        .collect();
    let mut setters = Vec::new();
    if host_process(p.pod_sc("windowsOptions")) {
        setters.push("pod".to_string());
    }
    if !bad.is_empty() {
        setters.push(containers_phrase(&bad));
    }
    if setters.is_empty() {
        return None;
    }
    violation(
        "hostProcess",
        format!(
            "{} must not set securityContext.windowsOptions.hostProcess=true",
            setters.join(" and ")
        ),
    )
}

// ---- restricted --------------------------------------------------------------------------

fn allow_privilege_escalation(p: &Pod<'_>) -> Option<Violation> {
    if p.windows_exempt() {
        return None;
    }
    let bad: Vec<String> = p
        .containers()
        .filter(|c| sc(c, "allowPrivilegeEscalation").and_then(Value::as_bool) != Some(false))
        .map(name)
        .collect();
    if bad.is_empty() {
        return None;
    }
    violation(
        "allowPrivilegeEscalation != false",
        format!(
            "{} must set securityContext.allowPrivilegeEscalation=false",
            containers_phrase(&bad)
        ),
    )
}

fn capabilities_restricted(p: &Pod<'_>) -> Option<Violation> {
    if p.windows_exempt() {
        return None;
    }
    let mut missing_drop = Vec::new();
    let mut adding = Vec::new();
    let mut forbidden = BTreeSet::new();
    for c in p.containers() {
        let Some(caps) = sc(c, "capabilities") else {
            missing_drop.push(name(c));
            continue;
        };
        let dropped_all = caps
            .get("drop")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
            .any(|d| d.as_str() == Some("ALL"));
        if !dropped_all {
            missing_drop.push(name(c));
        }
        let mut adds_forbidden = false;
        for cap in added_capabilities(c) {
            if cap != "NET_BIND_SERVICE" {
                adds_forbidden = true;
                forbidden.insert(cap.to_string());
            }
        }
        if adds_forbidden {
            adding.push(name(c));
        }
    }
    let mut details = Vec::new();
    if !missing_drop.is_empty() {
        details.push(format!(
            "{} must set securityContext.capabilities.drop=[\"ALL\"]",
            containers_phrase(&missing_drop)
        ));
    }
    if !adding.is_empty() {
        details.push(format!(
            "{} must not include {} in securityContext.capabilities.add",
            containers_phrase(&adding),
            join_quote(&set_list(forbidden))
        ));
    }
    if details.is_empty() {
        return None;
    }
    violation("unrestricted capabilities", details.join("; "))
}

/// Volume sources the restricted level allows.
const ALLOWED_VOLUMES: [&str; 8] = [
    "configMap",
    "csi",
    "downwardAPI",
    "emptyDir",
    "ephemeral",
    "persistentVolumeClaim",
    "projected",
    "secret",
];

/// Volume sources the restricted level names when it forbids them.
const RESTRICTED_VOLUMES: [&str; 21] = [
    "hostPath",
    "gcePersistentDisk",
    "awsElasticBlockStore",
    "gitRepo",
    "nfs",
    "iscsi",
    "glusterfs",
    "rbd",
    "flexVolume",
    "cinder",
    "cephfs",
    "flocker",
    "fc",
    "azureFile",
    "vsphereVolume",
    "quobyte",
    "azureDisk",
    "photonPersistentDisk",
    "portworxVolume",
    "scaleIO",
    "storageos",
];

fn restricted_volumes(p: &Pod<'_>) -> Option<Violation> {
    let mut bad = Vec::new();
    let mut types = BTreeSet::new();
    for v in volumes(p) {
        if ALLOWED_VOLUMES.iter().any(|k| has(v, k)) {
            continue;
        }
        bad.push(name(v));
        let t = RESTRICTED_VOLUMES
            .iter()
            .find(|k| has(v, k))
            .copied()
            .unwrap_or("unknown");
        types.insert(t.to_string());
    }
    if bad.is_empty() {
        return None;
    }
    let n = types.len();
    violation(
        "restricted volume types",
        format!(
            "{} {} {} {} {}",
            plural("volume", "volumes", bad.len()),
            join_quote(&bad),
            plural("uses", "use", bad.len()),
            plural("restricted volume type", "restricted volume types", n),
            join_quote(&set_list(types))
        ),
    )
}

fn run_as_non_root(p: &Pod<'_>) -> Option<Violation> {
    let mut setters = Vec::new();
    let mut pod_non_root = false;
    match p.pod_sc("runAsNonRoot").and_then(Value::as_bool) {
        Some(false) => setters.push("pod".to_string()),
        Some(true) => pod_non_root = true,
        None => {}
    }
    let mut explicit = Vec::new();
    let mut implicit = Vec::new();
    for c in p.containers() {
        match sc(c, "runAsNonRoot").and_then(Value::as_bool) {
            Some(false) => explicit.push(name(c)),
            Some(true) => {}
            None if !pod_non_root => implicit.push(name(c)),
            None => {}
        }
    }
    if !explicit.is_empty() {
        setters.push(containers_phrase(&explicit));
    }
    if !setters.is_empty() {
        return violation(
            "runAsNonRoot != true",
            format!(
                "{} must not set securityContext.runAsNonRoot=false",
                setters.join(" and ")
            ),
        );
    }
    if implicit.is_empty() {
        return None;
    }
    violation(
        "runAsNonRoot != true",
        format!(
            "pod or {} must set securityContext.runAsNonRoot=true",
            containers_phrase(&implicit)
        ),
    )
}

fn run_as_user(p: &Pod<'_>) -> Option<Violation> {
    let mut setters = Vec::new();
    if p.pod_sc("runAsUser").and_then(Value::as_i64) == Some(0) {
        setters.push("pod".to_string());
    }
    let bad: Vec<String> = p
        .containers()
        .filter(|c| sc(c, "runAsUser").and_then(Value::as_i64) == Some(0))
        .map(name)
        .collect();
    if !bad.is_empty() {
        setters.push(containers_phrase(&bad));
    }
    if setters.is_empty() {
        return None;
    }
    violation(
        "runAsUser=0",
        format!("{} must not set runAsUser=0", setters.join(" and ")),
    )
}

fn seccomp_profile_restricted(p: &Pod<'_>) -> Option<Violation> {
    if p.windows_exempt() {
        return None;
    }
    let mut setters = Vec::new();
    let mut values = BTreeSet::new();
    let mut pod_set = false;
    if let Some(prof) = p.pod_sc("seccompProfile") {
        if valid_seccomp(prof) {
            pod_set = true;
        } else {
            setters.push("pod".to_string());
            values.insert(seccomp_type(prof));
        }
    }
    let mut explicit = Vec::new();
    let mut implicit = Vec::new();
    for c in p.containers() {
        match sc(c, "seccompProfile") {
            Some(prof) if !valid_seccomp(prof) => {
                explicit.push(name(c));
                values.insert(seccomp_type(prof));
            }
            Some(_) => {}
            None if !pod_set => implicit.push(name(c)),
            None => {}
        }
    }
    if !explicit.is_empty() {
        setters.push(containers_phrase(&explicit));
    }
    if !setters.is_empty() {
        return violation(
            "seccompProfile",
            format!(
                "{} must not set securityContext.seccompProfile.type to {}",
                setters.join(" and "),
                join_quote(&set_list(values))
            ),
        );
    }
    if implicit.is_empty() {
        return None;
    }
    violation(
        "seccompProfile",
        format!(
            "pod or {} must set securityContext.seccompProfile.type to \"RuntimeDefault\" or \"Localhost\"",
            containers_phrase(&implicit)
        ),
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn ns(labels: &[(&str, &str)]) -> NamespacePolicy {
        namespace_policy(
            &labels
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
        )
    }

    fn pod(spec: Value) -> Value {
        json!({"metadata": {"name": "p"}, "spec": spec})
    }

    const RESTRICTED_4: &str = "allowPrivilegeEscalation != false (container \"c\" must set securityContext.allowPrivilegeEscalation=false), unrestricted capabilities (container \"c\" must set securityContext.capabilities.drop=[\"ALL\"]), runAsNonRoot != true (pod or container \"c\" must set securityContext.runAsNonRoot=true), seccompProfile (pod or container \"c\" must set securityContext.seccompProfile.type to \"RuntimeDefault\" or \"Localhost\")";

    fn compliant() -> Value {
        json!({
            "securityContext": {"runAsNonRoot": true, "seccompProfile": {"type": "RuntimeDefault"}},
            "containers": [{"name": "c", "image": "i", "securityContext": {
                "allowPrivilegeEscalation": false, "capabilities": {"drop": ["ALL"]}}}]
        })
    }

    #[test]
    fn namespace_policy_from_labels() {
        let cases: Vec<(Vec<(&str, &str)>, NamespacePolicy)> = vec![
            (vec![], NamespacePolicy::default()),
            (
                vec![(ENFORCE_LABEL, "restricted"), (ENFORCE_VERSION_LABEL, "v1.25")],
                NamespacePolicy {
                    enforce: (Level::Restricted, "v1.25".into()),
                    ..NamespacePolicy::default()
                },
            ),
            (
                vec![(ENFORCE_LABEL, "bogus"), (WARN_LABEL, "bogus"), (AUDIT_VERSION_LABEL, "1.2")],
                NamespacePolicy {
                    enforce: (Level::Restricted, "latest".into()),
                    errors: vec![
                        "metadata.labels[pod-security.kubernetes.io/enforce]: Invalid value: \"bogus\": must be one of privileged, baseline, restricted".into(),
                        "metadata.labels[pod-security.kubernetes.io/audit-version]: Invalid value: \"1.2\": must be \"latest\" or \"v1.x\"".into(),
                        "metadata.labels[pod-security.kubernetes.io/warn]: Invalid value: \"bogus\": must be one of privileged, baseline, restricted".into(),
                    ],
                    ..NamespacePolicy::default()
                },
            ),
            (
                vec![(WARN_LABEL, "baseline"), (AUDIT_LABEL, "restricted")],
                NamespacePolicy {
                    warn: (Level::Baseline, "latest".into()),
                    audit: (Level::Restricted, "latest".into()),
                    ..NamespacePolicy::default()
                },
            ),
        ];
        for (labels, want) in cases {
            assert_eq!(ns(&labels), want, "{labels:?}");
        }
    }

    #[test]
    fn pod_denials() {
        let restricted = ns(&[(ENFORCE_LABEL, "restricted")]);
        let baseline = ns(&[(ENFORCE_LABEL, "baseline")]);
        let cases: Vec<(&str, NamespacePolicy, Value, Option<String>)> = vec![
            (
                "privileged pod in restricted namespace",
                restricted.clone(),
                json!({"containers": [{"name": "c", "image": "i", "securityContext": {"privileged": true}}]}),
                Some(format!(
                    "violates PodSecurity \"restricted:latest\": privileged (container \"c\" must not set securityContext.privileged=true), {RESTRICTED_4}"
                )),
            ),
            (
                "baseline-compliant pod fails restricted on four checks",
                restricted.clone(),
                json!({"containers": [{"name": "c", "image": "i"}]}),
                Some(format!("violates PodSecurity \"restricted:latest\": {RESTRICTED_4}")),
            ),
            ("same pod passes baseline", baseline.clone(), json!({"containers": [{"name": "c", "image": "i"}]}), None),
            ("compliant pod passes restricted", restricted.clone(), compliant(), None),
            (
                "hostPath in baseline",
                baseline.clone(),
                json!({"containers": [{"name": "c"}], "volumes": [{"name": "host", "hostPath": {"path": "/"}}]}),
                Some("violates PodSecurity \"baseline:latest\": hostPath volumes (volume \"host\")".into()),
            ),
            (
                "hostPath in restricted is a restricted volume type",
                restricted.clone(),
                {
                    let mut s = compliant();
                    s["volumes"] = json!([{"name": "host", "hostPath": {"path": "/"}}, {"name": "n", "nfs": {}}, {"name": "ok", "emptyDir": {}}]);
                    s
                },
                Some("violates PodSecurity \"restricted:latest\": restricted volume types (volumes \"host\", \"n\" use restricted volume types \"hostPath\", \"nfs\")".into()),
            ),
            (
                "every baseline check",
                baseline.clone(),
                json!({
                    "hostNetwork": true, "hostPID": true,
                    "securityContext": {
                        "sysctls": [{"name": "net.core.somaxconn", "value": "1"}, {"name": "kernel.msgmax", "value": "1"}, {"name": "net.ipv4.tcp_rmem", "value": "1"}],
                        "seLinuxOptions": {"user": "u", "role": "r"},
                        "appArmorProfile": {"type": "Unconfined"},
                        "windowsOptions": {"hostProcess": true}
                    },
                    "initContainers": [{"name": "i", "securityContext": {"capabilities": {"add": ["NET_RAW", "CHOWN"]}, "procMount": "Unmasked"}}],
                    "containers": [
                        {"name": "a", "ports": [{"containerPort": 80, "hostPort": 8080}, {"containerPort": 90, "hostPort": 9090}],
                         "securityContext": {"seccompProfile": {"type": "Unconfined"}, "seLinuxOptions": {"type": "spc_t"}}},
                        {"name": "b", "securityContext": {"capabilities": {"add": ["SYS_ADMIN"]}, "windowsOptions": {"hostProcess": true}}}
                    ],
                    "volumes": [{"name": "h", "hostPath": {"path": "/"}}]
                }),
                Some(concat!(
                    "violates PodSecurity \"baseline:latest\": ",
                    "forbidden AppArmor profile (pod must not set AppArmor profile type to \"Unconfined\"), ",
                    "non-default capabilities (containers \"i\", \"b\" must not include \"NET_RAW\", \"SYS_ADMIN\" in securityContext.capabilities.add), ",
                    "host namespaces (hostNetwork=true, hostPID=true), ",
                    "hostPath volumes (volume \"h\"), ",
                    "hostPort (container \"a\" uses hostPorts 8080, 9090), ",
                    "procMount (container \"i\" must not set securityContext.procMount to \"Unmasked\"), ",
                    "seLinuxOptions (pod and container \"a\" set forbidden securityContext.seLinuxOptions: type \"spc_t\"; user may not be set; role may not be set), ",
                    "seccompProfile (container \"a\" must not set securityContext.seccompProfile.type to \"Unconfined\"), ",
                    "forbidden sysctls (net.core.somaxconn, kernel.msgmax), ",
                    "hostProcess (pod and container \"b\" must not set securityContext.windowsOptions.hostProcess=true)"
                ).into()),
            ),
            (
                "restricted explicit bad values",
                restricted.clone(),
                json!({
                    "securityContext": {"runAsNonRoot": false, "runAsUser": 0, "seccompProfile": {"type": "Unconfined"}},
                    "containers": [{"name": "c", "securityContext": {
                        "allowPrivilegeEscalation": true, "runAsUser": 0,
                        "capabilities": {"drop": ["ALL"], "add": ["NET_BIND_SERVICE", "CHOWN"]}}}]
                }),
                Some(concat!(
                    "violates PodSecurity \"restricted:latest\": ",
                    "allowPrivilegeEscalation != false (container \"c\" must set securityContext.allowPrivilegeEscalation=false), ",
                    "unrestricted capabilities (container \"c\" must not include \"CHOWN\" in securityContext.capabilities.add), ",
                    "runAsNonRoot != true (pod must not set securityContext.runAsNonRoot=false), ",
                    "runAsUser=0 (pod and container \"c\" must not set runAsUser=0), ",
                    "seccompProfile (pod must not set securityContext.seccompProfile.type to \"Unconfined\")"
                ).into()),
            ),
            (
                // The shape of a real kube-apiserver warning for a node-debug style pod.
                "host namespaces, privileged, hostPath and root in restricted",
                restricted.clone(),
                json!({
                    "hostNetwork": true, "hostPID": true,
                    "containers": [{"name": "container-00", "securityContext": {"privileged": true, "runAsUser": 0}}],
                    "volumes": [{"name": "host", "hostPath": {"path": "/"}}]
                }),
                Some(concat!(
                    "violates PodSecurity \"restricted:latest\": host namespaces (hostNetwork=true, hostPID=true), ",
                    "privileged (container \"container-00\" must not set securityContext.privileged=true), ",
                    "allowPrivilegeEscalation != false (container \"container-00\" must set securityContext.allowPrivilegeEscalation=false), ",
                    "unrestricted capabilities (container \"container-00\" must set securityContext.capabilities.drop=[\"ALL\"]), ",
                    "restricted volume types (volume \"host\" uses restricted volume type \"hostPath\"), ",
                    "runAsNonRoot != true (pod or container \"container-00\" must set securityContext.runAsNonRoot=true), ",
                    "runAsUser=0 (container \"container-00\" must not set runAsUser=0), ",
                    "seccompProfile (pod or container \"container-00\" must set securityContext.seccompProfile.type to \"RuntimeDefault\" or \"Localhost\")"
                ).into()),
            ),
            (
                "windows pods skip the Linux-only restricted checks",
                restricted.clone(),
                json!({"os": {"name": "windows"}, "securityContext": {"runAsNonRoot": true}, "containers": [{"name": "c"}]}),
                None,
            ),
            (
                "policy version pins the check set: v1.21 has no capabilities_restricted or runAsUser",
                ns(&[(ENFORCE_LABEL, "restricted"), (ENFORCE_VERSION_LABEL, "v1.21")]),
                json!({"securityContext": {"runAsNonRoot": true, "runAsUser": 0, "seccompProfile": {"type": "RuntimeDefault"}},
                       "containers": [{"name": "c", "securityContext": {"allowPrivilegeEscalation": false}}]}),
                None,
            ),
            (
                "sysctl allowed from 1.32 only",
                ns(&[(ENFORCE_LABEL, "baseline"), (ENFORCE_VERSION_LABEL, "v1.31")]),
                json!({"securityContext": {"sysctls": [{"name": "net.ipv4.tcp_wmem", "value": "1"}]}, "containers": [{"name": "c"}]}),
                Some("violates PodSecurity \"baseline:v1.31\": forbidden sysctls (net.ipv4.tcp_wmem)".into()),
            ),
        ];
        for (what, policy, spec, want) in cases {
            let out = check_pod(&policy, &pod(spec));
            assert_eq!(out.denied, want, "{what}");
            if out.denied.is_some() {
                assert!(out.warnings.is_empty(), "{what}: no warnings on a denial");
            }
        }
    }

    #[test]
    fn warnings_and_audit() {
        let policy = ns(&[
            (ENFORCE_LABEL, "baseline"),
            (WARN_LABEL, "restricted"),
            (AUDIT_LABEL, "restricted"),
            (AUDIT_VERSION_LABEL, "v1.32"),
        ]);
        let out = check_pod(&policy, &pod(json!({"containers": [{"name": "c"}]})));
        assert_eq!(out.denied, None);
        assert_eq!(
            out.warnings,
            vec![format!(
                "would violate PodSecurity \"restricted:latest\": {RESTRICTED_4}"
            )]
        );
        assert_eq!(
            out.audit_annotations,
            BTreeMap::from([
                (
                    ENFORCE_POLICY_ANNOTATION.to_string(),
                    "baseline:latest".to_string()
                ),
                (
                    AUDIT_VIOLATIONS_ANNOTATION.to_string(),
                    format!("would violate PodSecurity \"restricted:v1.32\": {RESTRICTED_4}")
                ),
            ])
        );

        let privileged = check_pod(&NamespacePolicy::default(), &pod(json!({"hostPID": true})));
        assert_eq!(privileged.denied, None);
        assert!(privileged.warnings.is_empty());
        assert_eq!(
            privileged
                .audit_annotations
                .get(ENFORCE_POLICY_ANNOTATION)
                .map(String::as_str),
            Some("privileged:latest")
        );

        let broken = check_pod(
            &ns(&[(ENFORCE_LABEL, "nope")]),
            &pod(json!({"containers": [{"name": "c"}]})),
        );
        assert!(
            broken.denied.is_some(),
            "invalid enforce level fails closed"
        );
        assert_eq!(
            broken.audit_annotations.get(ERROR_ANNOTATION).map(String::as_str),
            Some("Failed to parse policy: metadata.labels[pod-security.kubernetes.io/enforce]: Invalid value: \"nope\": must be one of privileged, baseline, restricted")
        );
    }

    #[test]
    fn significant_updates() {
        let base = json!({"metadata": {"labels": {"a": "1"}}, "spec": {"containers": [{"name": "c", "image": "i:1"}]}});
        let with = |f: &dyn Fn(&mut Value)| {
            let mut p = base.clone();
            f(&mut p);
            p
        };
        let cases: Vec<(&str, Value, bool)> = vec![
            (
                "label change",
                with(&|p| p["metadata"]["labels"]["a"] = json!("2")),
                false,
            ),
            (
                "image change",
                with(&|p| p["spec"]["containers"][0]["image"] = json!("i:2")),
                true,
            ),
            (
                "container added",
                with(&|p| {
                    p["spec"]["containers"] = json!([{"name": "c", "image": "i:1"}, {"name": "d"}])
                }),
                true,
            ),
            (
                "ephemeral added",
                with(&|p| {
                    p["spec"]["ephemeralContainers"] =
                        json!([{"name": "debug", "image": "busybox"}])
                }),
                true,
            ),
            (
                "seccomp annotation",
                with(&|p| {
                    p["metadata"]["annotations"] =
                        json!({"container.seccomp.security.alpha.kubernetes.io/c": "unconfined"})
                }),
                true,
            ),
        ];
        for (what, new, want) in cases {
            assert_eq!(is_significant_pod_update(&new, &base), want, "{what}");
        }
    }

    #[test]
    fn templates_warn_only() {
        let policy = ns(&[(ENFORCE_LABEL, "restricted"), (WARN_LABEL, "restricted")]);
        let template =
            json!({"metadata": {"labels": {"app": "x"}}, "spec": {"containers": [{"name": "c"}]}});
        let warning = format!("would violate PodSecurity \"restricted:latest\": {RESTRICTED_4}");
        let cases: Vec<(&str, Value, Vec<String>)> = vec![
            (
                "Deployment",
                json!({"spec": {"template": template}}),
                vec![warning.clone()],
            ),
            (
                "StatefulSet",
                json!({"spec": {"template": template}}),
                vec![warning.clone()],
            ),
            (
                "CronJob",
                json!({"spec": {"jobTemplate": {"spec": {"template": template}}}}),
                vec![warning.clone()],
            ),
            (
                "PodTemplate",
                json!({"template": template}),
                vec![warning.clone()],
            ),
            ("ReplicationController", json!({"spec": {}}), vec![]),
            ("ConfigMap", json!({"data": {}}), vec![]),
        ];
        for (kind, obj, want) in cases {
            let out = check_template(&policy, kind, &obj);
            assert_eq!(out.denied, None, "{kind}: templates are never denied");
            assert_eq!(out.warnings, want, "{kind}");
            assert!(
                !out.audit_annotations
                    .contains_key(ENFORCE_POLICY_ANNOTATION),
                "{kind}"
            );
        }
        // Enforce alone produces nothing for a template.
        let enforce_only = ns(&[(ENFORCE_LABEL, "restricted")]);
        let out = check_template(
            &enforce_only,
            "Deployment",
            &json!({"spec": {"template": template}}),
        );
        assert_eq!(out, Outcome::default());
    }
}
