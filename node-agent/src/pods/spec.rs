//! Pod spec → CRI configuration: the pure half of pod sync, kept free of I/O so it can be
//! unit-tested against upstream's rules (QoS, CPU shares and quota, namespaces, labels).

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};

use k8s_openapi::api::core::v1::{Container, Pod, ResourceRequirements};
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;

use crate::cgroups;
use crate::cri::api;

/// Labels kubelet puts on sandboxes and containers; containerd and crictl know them, and the
/// agent finds its pods again after a restart through them.
pub const LABEL_POD_NAME: &str = "io.kubernetes.pod.name";
pub const LABEL_POD_NAMESPACE: &str = "io.kubernetes.pod.namespace";
pub const LABEL_POD_UID: &str = "io.kubernetes.pod.uid";
pub const LABEL_CONTAINER_NAME: &str = "io.kubernetes.container.name";
/// Marks runtime objects this agent (for this node name) manages, so that two agents sharing
/// one containerd — or a kubelet — never touch each other's pods.
pub const LABEL_MANAGED_BY: &str = "coxswain.io/node";
/// Annotations carrying what the agent must know about a container after a restart.
pub const ANNOTATION_RESTART_COUNT: &str = "io.kubernetes.container.restartCount";
pub const ANNOTATION_INIT: &str = "coxswain.io/init-container";
pub const ANNOTATION_TERMINATION_GRACE: &str = "io.kubernetes.pod.terminationGracePeriod";

/// Where one agent keeps things on disk and in the cgroup tree.
#[derive(Clone, Debug)]
pub struct Layout {
    pub node_name: String,
    /// Volumes live under `<root>/pods/<uid>/volumes/...`.
    pub root_dir: PathBuf,
    /// Container logs: `<log_dir>/<namespace>_<pod>_<uid>/<container>/<restart>.log`.
    pub log_dir: PathBuf,
    /// cgroupfs parent of every pod cgroup (`/kubepods` like kubelet's cgroupfs driver).
    pub cgroup_root: String,
}

impl Layout {
    pub fn pod_dir(&self, uid: &str) -> PathBuf {
        self.root_dir.join("pods").join(uid)
    }
    pub fn pod_log_dir(&self, pod: &Pod) -> PathBuf {
        self.log_dir
            .join(format!("{}_{}_{}", namespace(pod), name(pod), uid(pod)))
    }
    /// The container's log file relative to the pod log directory (CRI wants it relative).
    pub fn container_log(container: &str, restart_count: i32) -> PathBuf {
        Path::new(container).join(format!("{restart_count}.log"))
    }
    pub fn pod_cgroup(&self, uid: &str) -> String {
        format!("{}/pod{uid}", self.cgroup_root.trim_end_matches('/'))
    }
}

pub fn name(pod: &Pod) -> &str {
    pod.metadata.name.as_deref().unwrap_or("")
}
pub fn namespace(pod: &Pod) -> &str {
    pod.metadata.namespace.as_deref().unwrap_or("default")
}
pub fn uid(pod: &Pod) -> &str {
    pod.metadata.uid.as_deref().unwrap_or("")
}

/// Upstream's QoS class: Guaranteed when every container has equal cpu and memory requests and
/// limits, BestEffort when none has any, Burstable otherwise.
pub fn qos_class(pod: &Pod) -> &'static str {
    let Some(spec) = &pod.spec else {
        return "BestEffort";
    };
    let all = spec
        .containers
        .iter()
        .chain(spec.init_containers.iter().flatten());
    let mut any = false;
    let mut guaranteed = true;
    for c in all {
        let r = c.resources.as_ref();
        let req = r.and_then(|r| r.requests.as_ref());
        let lim = r.and_then(|r| r.limits.as_ref());
        for res in ["cpu", "memory"] {
            let rq = req
                .and_then(|m| m.get(res))
                .or(lim.and_then(|m| m.get(res)));
            let lm = lim.and_then(|m| m.get(res));
            if rq.is_some_and(|q| !is_zero(q)) || lm.is_some_and(|q| !is_zero(q)) {
                any = true;
            }
            match (rq, lm) {
                (Some(a), Some(b)) if milli(a) == milli(b) && !is_zero(b) => {}
                _ => guaranteed = false,
            }
        }
    }
    match (any, guaranteed) {
        (false, _) => "BestEffort",
        (true, true) => "Guaranteed",
        (true, false) => "Burstable",
    }
}

fn is_zero(q: &Quantity) -> bool {
    milli(q) == Some(0)
}

/// A quantity in thousandths (millicores for cpu, milli-bytes for memory); `None` when it
/// does not parse.
pub fn milli(q: &Quantity) -> Option<i128> {
    let s = q.0.trim();
    let split = s
        .find(|c: char| !(c.is_ascii_digit() || c == '.' || c == '-' || c == '+'))
        .unwrap_or(s.len());
    let (num, suffix) = s.split_at(split);
    let (mantissa, exp10): (&str, i32) = match suffix {
        "" => (num, 0),
        "m" => (num, -3),
        "k" => (num, 3),
        "M" => (num, 6),
        "G" => (num, 9),
        "T" => (num, 12),
        "P" => (num, 15),
        "E" => (num, 18),
        "Ki" | "Mi" | "Gi" | "Ti" | "Pi" | "Ei" => {
            let pow = match suffix {
                "Ki" => 1,
                "Mi" => 2,
                "Gi" => 3,
                "Ti" => 4,
                "Pi" => 5,
                _ => 6,
            };
            let base = 1024i128.pow(pow);
            return decimal_milli(num, 0).map(|v| v * base);
        }
        s if s.starts_with(['e', 'E']) => (num, s[1..].parse().ok()?),
        _ => return None,
    };
    decimal_milli(mantissa, exp10)
}

/// `num × 10^exp10 × 1000`, rounded up as upstream rounds quantities to milli precision.
fn decimal_milli(num: &str, exp10: i32) -> Option<i128> {
    let (neg, num) = match num.strip_prefix('-') {
        Some(n) => (true, n),
        None => (false, num.strip_prefix('+').unwrap_or(num)),
    };
    let (int, frac) = num.split_once('.').unwrap_or((num, ""));
    if int.is_empty() && frac.is_empty() {
        return None;
    }
    let digits: String = format!("{int}{frac}");
    let mut value: i128 = if digits.is_empty() {
        0
    } else {
        digits.parse().ok()?
    };
    let mut scale = exp10 + 3 - frac.len() as i32;
    while scale > 0 {
        value = value.checked_mul(10)?;
        scale -= 1;
    }
    let mut rounded_up = false;
    while scale < 0 {
        if value % 10 != 0 {
            rounded_up = true;
        }
        value /= 10;
        scale += 1;
    }
    if rounded_up {
        value += 1;
    }
    Some(if neg { -value } else { value })
}

fn quantity(resources: Option<&ResourceRequirements>, which: &str, res: &str) -> Option<i128> {
    let r = resources?;
    let map = if which == "limits" {
        r.limits.as_ref()
    } else {
        r.requests.as_ref().or(r.limits.as_ref())
    }?;
    milli(map.get(res)?)
}

/// The container's cgroup settings as kubelet computes them: shares from the CPU request,
/// a CFS quota from the CPU limit, the memory limit in bytes, and oom_score_adj by QoS.
pub fn linux_resources(pod: &Pod, c: &Container) -> api::LinuxContainerResources {
    let r = c.resources.as_ref();
    let cpu_request = r
        .and_then(|r| r.requests.as_ref().and_then(|m| m.get("cpu")))
        .or_else(|| r.and_then(|r| r.limits.as_ref().and_then(|m| m.get("cpu"))))
        .and_then(milli);
    let shares = cgroups::milli_cpu_to_shares(cpu_request.unwrap_or(0)) as i64;
    let (cpu_quota, cpu_period) =
        match quantity(r, "limits", "cpu").and_then(cgroups::milli_cpu_to_quota) {
            Some(quota) => (quota, cgroups::CPU_PERIOD_US),
            None => (0, 0),
        };
    let memory = quantity(r, "limits", "memory")
        .map(|m| (m / 1000) as i64)
        .unwrap_or(0);
    // Upstream gives Guaranteed −997 and BestEffort 1000; Burstable scales with the request.
    // containerd clamps negative values to its own score here (restrict_oom_score_adj).
    let oom_score_adj = match qos_class(pod) {
        "Guaranteed" => -997,
        "BestEffort" => 1000,
        _ => {
            let req = quantity(r, "requests", "memory").unwrap_or(0) / 1000;
            let capacity: i128 = 64 << 30;
            let adj = 1000 - (1000 * req) / capacity;
            adj.clamp(3, 999) as i64
        }
    };
    api::LinuxContainerResources {
        cpu_period,
        cpu_quota,
        cpu_shares: shares,
        memory_limit_in_bytes: memory,
        oom_score_adj,
        ..Default::default()
    }
}

fn pod_labels(pod: &Pod, node: &str) -> HashMap<String, String> {
    let mut labels: HashMap<String, String> = pod
        .metadata
        .labels
        .clone()
        .unwrap_or_default()
        .into_iter()
        .collect();
    labels.insert(LABEL_POD_NAME.into(), name(pod).into());
    labels.insert(LABEL_POD_NAMESPACE.into(), namespace(pod).into());
    labels.insert(LABEL_POD_UID.into(), uid(pod).into());
    labels.insert(LABEL_MANAGED_BY.into(), node.into());
    labels
}

fn ns_mode(host: bool, shared: bool) -> i32 {
    if host {
        api::NamespaceMode::Node as i32
    } else if shared {
        api::NamespaceMode::Pod as i32
    } else {
        api::NamespaceMode::Container as i32
    }
}

fn namespace_options(pod: &Pod) -> api::NamespaceOption {
    let spec = pod.spec.as_ref();
    let host_network = spec.and_then(|s| s.host_network).unwrap_or(false);
    let host_pid = spec.and_then(|s| s.host_pid).unwrap_or(false);
    let host_ipc = spec.and_then(|s| s.host_ipc).unwrap_or(false);
    let share_pid = spec
        .and_then(|s| s.share_process_namespace)
        .unwrap_or(false);
    api::NamespaceOption {
        network: ns_mode(host_network, true),
        pid: ns_mode(host_pid, share_pid),
        ipc: ns_mode(host_ipc, true),
        ..Default::default()
    }
}

/// The sandbox for one attempt at running the pod.
pub fn sandbox_config(pod: &Pod, layout: &Layout, attempt: u32) -> api::PodSandboxConfig {
    let spec = pod.spec.as_ref();
    // As kubelet: a hostNetwork pod shares the node's UTS namespace and keeps its hostname
    // (runc refuses to set one without a private UTS namespace).
    let hostname = if spec.and_then(|s| s.host_network).unwrap_or(false) {
        String::new()
    } else {
        spec.and_then(|s| s.hostname.clone())
            .unwrap_or_else(|| name(pod).chars().take(63).collect())
    };
    let port_mappings = spec
        .map(|s| {
            s.containers
                .iter()
                .flat_map(|c| c.ports.iter().flatten())
                .filter(|p| p.host_port.is_some_and(|h| h > 0))
                .map(|p| api::PortMapping {
                    protocol: match p.protocol.as_deref() {
                        Some("UDP") => api::Protocol::Udp as i32,
                        Some("SCTP") => api::Protocol::Sctp as i32,
                        _ => api::Protocol::Tcp as i32,
                    },
                    container_port: p.container_port,
                    host_port: p.host_port.unwrap_or(0),
                    host_ip: p.host_ip.clone().unwrap_or_default(),
                })
                .collect()
        })
        .unwrap_or_default();
    let annotations = pod
        .metadata
        .annotations
        .clone()
        .unwrap_or_default()
        .into_iter()
        .collect();
    let sc = spec.and_then(|s| s.security_context.as_ref());
    api::PodSandboxConfig {
        metadata: Some(api::PodSandboxMetadata {
            name: name(pod).into(),
            uid: uid(pod).into(),
            namespace: namespace(pod).into(),
            attempt,
        }),
        hostname,
        log_directory: layout.pod_log_dir(pod).display().to_string(),
        dns_config: None,
        port_mappings,
        labels: pod_labels(pod, &layout.node_name),
        annotations,
        linux: Some(api::LinuxPodSandboxConfig {
            cgroup_parent: layout.pod_cgroup(uid(pod)),
            security_context: Some(api::LinuxSandboxSecurityContext {
                namespace_options: Some(namespace_options(pod)),
                run_as_user: sc
                    .and_then(|s| s.run_as_user)
                    .map(|value| api::Int64Value { value }),
                run_as_group: sc
                    .and_then(|s| s.run_as_group)
                    .map(|value| api::Int64Value { value }),
                supplemental_groups: sc
                    .and_then(|s| s.supplemental_groups.clone())
                    .unwrap_or_default(),
                ..Default::default()
            }),
            sysctls: sc
                .and_then(|s| s.sysctls.as_ref())
                .map(|v| {
                    v.iter()
                        .map(|s| (s.name.clone(), s.value.clone()))
                        .collect()
                })
                .unwrap_or_default(),
            ..Default::default()
        }),
        windows: None,
    }
}

/// Everything resolved from the API and the disk that a container config needs.
pub struct ContainerInputs {
    pub envs: Vec<(String, String)>,
    pub mounts: Vec<api::Mount>,
    pub image: String,
    pub restart_count: i32,
    pub init: bool,
}

/// The CRI config of one container instance, or why it cannot be created (the message
/// becomes the container's `CreateContainerConfigError`).
pub fn container_config(
    pod: &Pod,
    c: &Container,
    inputs: ContainerInputs,
    allow_privileged: bool,
) -> Result<api::ContainerConfig, String> {
    let pod_sc = pod.spec.as_ref().and_then(|s| s.security_context.as_ref());
    let sc = c.security_context.as_ref();
    let privileged = sc.and_then(|s| s.privileged).unwrap_or(false);
    if privileged && !allow_privileged {
        return Err(format!(
            "container {} requests privileged mode, which this node does not allow (--allow-privileged)",
            c.name
        ));
    }
    let run_as_user = sc
        .and_then(|s| s.run_as_user)
        .or(pod_sc.and_then(|s| s.run_as_user));
    let run_as_group = sc
        .and_then(|s| s.run_as_group)
        .or(pod_sc.and_then(|s| s.run_as_group));
    if sc
        .and_then(|s| s.run_as_non_root)
        .or(pod_sc.and_then(|s| s.run_as_non_root))
        == Some(true)
        && run_as_user.unwrap_or(0) == 0
    {
        return Err(
            "container has runAsNonRoot and image will run as root (pod: \"".to_string()
                + name(pod)
                + "\", container: "
                + &c.name
                + ")",
        );
    }
    let env_map: BTreeMap<String, String> = inputs.envs.iter().cloned().collect();
    let expand_all = |v: &Option<Vec<String>>| -> Vec<String> {
        v.iter()
            .flatten()
            .map(|s| expand(s, &|k| env_map.get(k).cloned()))
            .collect()
    };
    let mut annotations = HashMap::from([
        (
            ANNOTATION_RESTART_COUNT.to_string(),
            inputs.restart_count.to_string(),
        ),
        (
            ANNOTATION_TERMINATION_GRACE.to_string(),
            pod.spec
                .as_ref()
                .and_then(|s| s.termination_grace_period_seconds)
                .unwrap_or(30)
                .to_string(),
        ),
    ]);
    if inputs.init {
        annotations.insert(ANNOTATION_INIT.into(), "true".into());
    }
    let mut labels = HashMap::from([
        (LABEL_POD_NAME.to_string(), name(pod).to_string()),
        (LABEL_POD_NAMESPACE.to_string(), namespace(pod).to_string()),
        (LABEL_POD_UID.to_string(), uid(pod).to_string()),
        (LABEL_CONTAINER_NAME.to_string(), c.name.clone()),
    ]);
    if let Some(node) = pod.spec.as_ref().and_then(|s| s.node_name.clone()) {
        labels.insert(LABEL_MANAGED_BY.into(), node);
    }
    let caps = sc.and_then(|s| s.capabilities.as_ref());
    Ok(api::ContainerConfig {
        metadata: Some(api::ContainerMetadata {
            name: c.name.clone(),
            attempt: inputs.restart_count.max(0) as u32,
        }),
        image: Some(api::ImageSpec {
            image: inputs.image.clone(),
            user_specified_image: c.image.clone().unwrap_or_default(),
            ..Default::default()
        }),
        command: expand_all(&c.command),
        args: expand_all(&c.args),
        working_dir: c.working_dir.clone().unwrap_or_default(),
        envs: inputs
            .envs
            .iter()
            .map(|(key, value)| api::KeyValue {
                key: key.clone(),
                value: value.clone(),
            })
            .collect(),
        mounts: inputs.mounts,
        labels,
        annotations,
        log_path: Layout::container_log(&c.name, inputs.restart_count)
            .display()
            .to_string(),
        stdin: c.stdin.unwrap_or(false),
        stdin_once: c.stdin_once.unwrap_or(false),
        tty: c.tty.unwrap_or(false),
        linux: Some(api::LinuxContainerConfig {
            resources: Some(linux_resources(pod, c)),
            security_context: Some(api::LinuxContainerSecurityContext {
                capabilities: caps.map(|caps| api::Capability {
                    add_capabilities: caps.add.clone().unwrap_or_default(),
                    drop_capabilities: caps.drop.clone().unwrap_or_default(),
                    ..Default::default()
                }),
                privileged,
                namespace_options: Some(namespace_options(pod)),
                run_as_user: run_as_user.map(|value| api::Int64Value { value }),
                run_as_group: run_as_group.map(|value| api::Int64Value { value }),
                readonly_rootfs: sc
                    .and_then(|s| s.read_only_root_filesystem)
                    .unwrap_or(false),
                supplemental_groups: pod_sc
                    .and_then(|s| s.supplemental_groups.clone())
                    .unwrap_or_default(),
                no_new_privs: sc.and_then(|s| s.allow_privilege_escalation) == Some(false),
                ..Default::default()
            }),
        }),
        ..Default::default()
    })
}

/// Upstream's `$(VAR)` expansion for env values, command and args: `$(NAME)` is replaced when
/// NAME is known, kept verbatim otherwise; `$$` escapes a `$`.
pub fn expand(input: &str, lookup: &dyn Fn(&str) -> Option<String>) -> String {
    let mut out = String::with_capacity(input.len());
    let mut rest = input;
    while let Some(pos) = rest.find('$') {
        out.push_str(&rest[..pos]);
        let after = &rest[pos + 1..];
        if let Some(stripped) = after.strip_prefix('$') {
            out.push('$');
            rest = stripped;
        } else if let Some(inner) = after.strip_prefix('(') {
            match inner.find(')') {
                Some(end) => {
                    let key = &inner[..end];
                    match lookup(key) {
                        Some(v) => out.push_str(&v),
                        None => {
                            out.push_str("$(");
                            out.push_str(key);
                            out.push(')');
                        }
                    }
                    rest = &inner[end + 1..];
                }
                None => {
                    out.push_str("$(");
                    rest = inner;
                }
            }
        } else {
            out.push('$');
            rest = after;
        }
    }
    out.push_str(rest);
    out
}

/// The image reference as the runtime names it: `busybox` → `docker.io/library/busybox:latest`.
pub fn normalize_image(image: &str) -> String {
    let (name, digest) = match image.split_once('@') {
        Some((n, d)) => (n, Some(d)),
        None => (image, None),
    };
    let first = name.split('/').next().unwrap_or("");
    let has_domain =
        name.contains('/') && (first.contains('.') || first.contains(':') || first == "localhost");
    let mut full = if has_domain {
        name.to_string()
    } else if name.contains('/') {
        format!("docker.io/{name}")
    } else {
        format!("docker.io/library/{name}")
    };
    let last = full.rsplit('/').next().unwrap_or("");
    if digest.is_none() && !last.contains(':') {
        full.push_str(":latest");
    }
    match digest {
        Some(d) => format!("{full}@{d}"),
        None => full,
    }
}

/// The pull policy upstream defaults to: `Always` for `:latest` or untagged images,
/// `IfNotPresent` otherwise.
pub fn pull_policy(c: &Container) -> &str {
    if let Some(p) = c.image_pull_policy.as_deref() {
        return p;
    }
    let image = c.image.as_deref().unwrap_or("");
    let last = image.rsplit('/').next().unwrap_or("");
    if image.contains('@') {
        "IfNotPresent"
    } else if !last.contains(':') || last.ends_with(":latest") {
        "Always"
    } else {
        "IfNotPresent"
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::api::core::v1::PodSpec;

    fn q(s: &str) -> Quantity {
        Quantity(s.into())
    }

    #[test]
    fn quantities_parse_to_milli_units() {
        assert_eq!(milli(&q("250m")), Some(250));
        assert_eq!(milli(&q("1")), Some(1000));
        assert_eq!(milli(&q("0.5")), Some(500));
        assert_eq!(milli(&q("64Mi")), Some(64 * 1024 * 1024 * 1000));
        assert_eq!(milli(&q("1G")), Some(1_000_000_000_000));
        assert_eq!(milli(&q("1e3")), Some(1_000_000));
        assert_eq!(milli(&q("0.0001")), Some(1), "rounds up like upstream");
        assert_eq!(milli(&q("abc")), None);
    }

    fn pod_with(resources: Option<ResourceRequirements>) -> Pod {
        Pod {
            spec: Some(PodSpec {
                containers: vec![Container {
                    name: "c".into(),
                    resources,
                    ..Default::default()
                }],
                ..Default::default()
            }),
            ..Default::default()
        }
    }

    fn rr(req: &[(&str, &str)], lim: &[(&str, &str)]) -> Option<ResourceRequirements> {
        let m = |v: &[(&str, &str)]| {
            (!v.is_empty()).then(|| v.iter().map(|(k, x)| (k.to_string(), q(x))).collect())
        };
        Some(ResourceRequirements {
            requests: m(req),
            limits: m(lim),
            ..Default::default()
        })
    }

    #[test]
    fn qos_classes_follow_upstream() {
        assert_eq!(qos_class(&pod_with(None)), "BestEffort");
        assert_eq!(
            qos_class(&pod_with(rr(&[], &[("cpu", "1"), ("memory", "1Gi")]))),
            "Guaranteed",
            "limits alone default the requests"
        );
        assert_eq!(
            qos_class(&pod_with(rr(&[("cpu", "500m")], &[("cpu", "1")]))),
            "Burstable"
        );
    }

    #[test]
    fn cpu_and_memory_map_to_cgroup_values() {
        let pod = pod_with(rr(
            &[("cpu", "250m")],
            &[("cpu", "500m"), ("memory", "64Mi")],
        ));
        let c = &pod.spec.as_ref().unwrap().containers[0];
        let r = linux_resources(&pod, c);
        assert_eq!(r.cpu_shares, 256);
        assert_eq!(r.cpu_quota, 50_000);
        assert_eq!(r.cpu_period, 100_000);
        assert_eq!(r.memory_limit_in_bytes, 64 << 20);
        let none = pod_with(None);
        let r = linux_resources(&none, &none.spec.as_ref().unwrap().containers[0]);
        assert_eq!((r.cpu_shares, r.cpu_quota, r.oom_score_adj), (2, 0, 1000));
    }

    #[test]
    fn dependent_variables_expand_like_upstream() {
        let look = |k: &str| (k == "A").then(|| "x".to_string());
        assert_eq!(expand("$(A)-$(B)", &look), "x-$(B)");
        assert_eq!(expand("$$(A) $", &look), "$(A) $");
        assert_eq!(expand("$(A", &look), "$(A");
    }

    #[test]
    fn images_normalize_and_default_pull_policy() {
        assert_eq!(
            normalize_image("busybox"),
            "docker.io/library/busybox:latest"
        );
        assert_eq!(normalize_image("me/app:1"), "docker.io/me/app:1");
        assert_eq!(
            normalize_image("registry.k8s.io/pause:3.10"),
            "registry.k8s.io/pause:3.10"
        );
        assert_eq!(
            normalize_image("localhost:5000/x"),
            "localhost:5000/x:latest"
        );
        let c = |image: &str| Container {
            image: Some(image.into()),
            ..Default::default()
        };
        assert_eq!(pull_policy(&c("busybox")), "Always");
        assert_eq!(pull_policy(&c("busybox:latest")), "Always");
        assert_eq!(pull_policy(&c("busybox:1.35")), "IfNotPresent");
    }
}
