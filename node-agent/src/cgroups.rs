//! Pod cgroups, as kubelet's pod container manager (cgroupfs driver) keeps them: the agent
//! creates `<cgroup_root>/pod<uid>` in every hierarchy and writes the pod-level limits
//! ([`pod_resources`], upstream's `ResourceConfigForPod`) before RunPodSandbox, so the pod as a
//! whole is limited, not only each container. runc creates and removes the `<parent>/<container>`
//! leaves, but never the pod-level parent it was handed: the agent removes it after teardown,
//! or every pod leaves an empty directory in each hierarchy.

use std::io;
use std::path::{Path, PathBuf};

use k8s_openapi::api::core::v1::{Container, Pod, PodSpec};

use crate::pods::spec::{milli, qos_class};

const CGROUP_ROOT: &str = "/sys/fs/cgroup";

/// Every hierarchy a cgroupfs path exists in: each v1 controller mount plus the v2 tree
/// (`unified` in hybrid mode, the root itself on a v2-only host).
fn hierarchies() -> Vec<PathBuf> {
    let root = Path::new(CGROUP_ROOT);
    if root.join("cgroup.controllers").exists() {
        return vec![root.to_path_buf()];
    }
    let Ok(dir) = std::fs::read_dir(root) else {
        return Vec::new();
    };
    dir.filter_map(Result::ok)
        .filter(|e| e.file_type().map(|t| t.is_dir()).unwrap_or(false))
        .map(|e| e.path())
        .collect()
}

/// CFS period of pod quotas (kubelet's default `--cpu-cfs-quota-period`, 100 ms in µs).
pub const CPU_PERIOD_US: i64 = 100_000;
/// cpu.shares bounds (kubelet's `MinShares`, and the kernel's maximum kubelet caps at).
const MIN_SHARES: u64 = 2;
const MAX_SHARES: u64 = 262_144;
/// The smallest quota kubelet writes (1 ms).
const MIN_QUOTA_US: i64 = 1_000;

/// The pod-level cgroup settings kubelet derives from a pod (`ResourceConfigForPod` with CFS
/// quota enforced, no pids limit: kubelet's `--pod-max-pids` defaults to unlimited).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct PodResources {
    /// cpu.shares (v1), from the pod's CPU request; 2 for a BestEffort pod.
    pub cpu_shares: u64,
    /// cfs_quota_us over [`CPU_PERIOD_US`]; `None` = unlimited.
    pub cpu_quota_us: Option<i64>,
    /// Bytes; `None` = unlimited.
    pub memory_limit_bytes: Option<i64>,
}

/// A container's request for `res` in milli units: the request, else the limit (the API
/// server's defaulting copies a limit into a missing request).
fn request(c: &Container, res: &str) -> Option<i128> {
    let r = c.resources.as_ref()?;
    r.requests
        .as_ref()
        .and_then(|m| m.get(res))
        .or_else(|| r.limits.as_ref().and_then(|m| m.get(res)))
        .and_then(milli)
}

fn limit(c: &Container, res: &str) -> Option<i128> {
    milli(c.resources.as_ref()?.limits.as_ref()?.get(res)?)
}

fn add(total: &mut Option<i128>, v: Option<i128>) {
    if let Some(v) = v {
        *total = Some(total.unwrap_or(0) + v);
    }
}

fn max(a: Option<i128>, b: Option<i128>) -> Option<i128> {
    match (a, b) {
        (Some(a), Some(b)) => Some(a.max(b)),
        (a, b) => a.or(b),
    }
}

/// A sidecar: an init container with `restartPolicy: Always`, running beside the app
/// containers.
fn restartable(c: &Container) -> bool {
    c.restart_policy.as_deref() == Some("Always")
}

/// The pod's total of one resource (milli units), as upstream's `PodRequests`/`PodLimits`
/// aggregate containers: app containers and sidecars summed, but at least what the pod needs
/// while any one init container runs (that container plus the sidecars started before it).
/// `None` when no container sets it. Overhead is the caller's.
fn aggregate(spec: &PodSpec, value: impl Fn(&Container) -> Option<i128>) -> Option<i128> {
    let mut total = None;
    for c in &spec.containers {
        add(&mut total, value(c));
    }
    let mut sidecars = None;
    let mut init_peak = None;
    for c in spec.init_containers.iter().flatten() {
        let v = value(c);
        let running = if restartable(c) {
            add(&mut total, v);
            add(&mut sidecars, v);
            sidecars
        } else {
            let mut with_sidecars = v;
            add(&mut with_sidecars, sidecars);
            with_sidecars
        };
        init_peak = max(init_peak, running);
    }
    max(total, init_peak)
}

/// Upstream's `MilliCPUToShares` (containers and pods alike).
pub fn milli_cpu_to_shares(milli_cpu: i128) -> u64 {
    if milli_cpu <= 0 {
        return MIN_SHARES;
    }
    ((milli_cpu * 1024 / 1000).clamp(MIN_SHARES as i128, MAX_SHARES as i128)) as u64
}

/// Upstream's `MilliCPUToQuota` over [`CPU_PERIOD_US`]; `None` for no CPU.
pub fn milli_cpu_to_quota(milli_cpu: i128) -> Option<i64> {
    if milli_cpu <= 0 {
        return None;
    }
    let quota = milli_cpu * CPU_PERIOD_US as i128 / 1000;
    Some(quota.clamp(MIN_QUOTA_US as i128, i64::MAX as i128) as i64)
}

/// The pod cgroup's settings as kubelet's `ResourceConfigForPod` computes them: shares from
/// the summed CPU requests; a CFS quota from the summed CPU limits and a memory limit from the
/// summed memory limits, each only when every container (init containers included) has that
/// limit (a Guaranteed pod always has both); `spec.overhead` added to the requests and to the
/// limits that are set. Pod-level `spec.resources` (alpha PodLevelResources in 1.32, off by
/// default) is not read.
pub fn pod_resources(pod: &Pod) -> PodResources {
    let Some(spec) = pod.spec.as_ref() else {
        return PodResources {
            cpu_shares: MIN_SHARES,
            ..Default::default()
        };
    };
    let overhead = |res: &str| {
        spec.overhead
            .as_ref()
            .and_then(|o| o.get(res))
            .and_then(milli)
    };
    let with_overhead = |total: Option<i128>, res: &str| match total {
        Some(t) if t != 0 => Some(t + overhead(res).unwrap_or(0)),
        t => t,
    };
    let mut cpu_request = aggregate(spec, |c| request(c, "cpu"));
    add(&mut cpu_request, overhead("cpu"));
    let cpu_limit = with_overhead(aggregate(spec, |c| limit(c, "cpu")), "cpu");
    let memory_limit = with_overhead(aggregate(spec, |c| limit(c, "memory")), "memory");
    let every = |res: &str| {
        spec.containers
            .iter()
            .chain(spec.init_containers.iter().flatten())
            .all(|c| limit(c, res).is_some_and(|v| v != 0))
    };
    let shares = milli_cpu_to_shares(cpu_request.unwrap_or(0));
    let quota = milli_cpu_to_quota(cpu_limit.unwrap_or(0));
    // Quantity.Value() rounds milli-bytes up.
    let bytes = memory_limit
        .filter(|m| *m > 0)
        .map(|m| ((m + 999) / 1000).min(i64::MAX as i128) as i64);
    match qos_class(pod) {
        "BestEffort" => PodResources {
            cpu_shares: MIN_SHARES,
            ..Default::default()
        },
        "Guaranteed" => PodResources {
            cpu_shares: shares,
            cpu_quota_us: quota,
            memory_limit_bytes: bytes,
        },
        _ => PodResources {
            cpu_shares: shares,
            cpu_quota_us: quota.filter(|_| every("cpu")),
            memory_limit_bytes: bytes.filter(|_| every("memory")),
        },
    }
}

/// runc's conversion of cgroup v1 shares to a cgroup v2 cpu.weight.
pub fn shares_to_weight(shares: u64) -> u64 {
    if shares == 0 {
        return 0;
    }
    1 + (shares.saturating_sub(2) * 9999) / 262_142
}

/// The cgroup v2 root when the host is v2-only (`None` on v1 and hybrid hosts, where the
/// resource controllers live in the v1 hierarchies).
fn v2_root() -> Option<PathBuf> {
    let root = Path::new(CGROUP_ROOT);
    root.join("cgroup.controllers")
        .exists()
        .then(|| root.to_path_buf())
}

/// The v1 hierarchy carrying `controller` (`cpu`, or a co-mount such as `cpu,cpuacct`).
fn v1_hierarchy(controller: &str) -> Option<PathBuf> {
    hierarchies().into_iter().find(|h| {
        h.file_name()
            .and_then(|n| n.to_str())
            .is_some_and(|n| n.split(',').any(|c| c == controller))
    })
}

/// Creates the pod cgroup `parent` (e.g. `/kubepods/pod<uid>`) and its ancestors in every
/// hierarchy, as runc's cgroupfs driver will look for it: a new v1 cpuset cgroup inherits its
/// parent's cpus and mems (an empty one admits no task), and on a v2 host each ancestor
/// delegates its controllers (`cgroup.subtree_control`) so the pod's limit files exist. An
/// error names the directory that could not be created; the pod must not start without it.
pub fn create_pod(parent: &str) -> io::Result<()> {
    let rel = Path::new(parent.trim_start_matches('/'));
    if rel.as_os_str().is_empty() {
        return Ok(());
    }
    for h in hierarchies() {
        let v2 = h.join("cgroup.controllers").exists();
        let cpuset = !v2
            && h.file_name()
                .and_then(|n| n.to_str())
                .is_some_and(|n| n.split(',').any(|c| c == "cpuset"));
        let mut dir = h.clone();
        for part in rel.components() {
            if v2 {
                delegate_controllers(&dir);
            }
            let above = dir.clone();
            dir.push(part);
            match std::fs::create_dir(&dir) {
                Ok(()) => {}
                Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {}
                Err(e) => {
                    return Err(io::Error::new(
                        e.kind(),
                        format!("creating cgroup {}: {e}", dir.display()),
                    ))
                }
            }
            if cpuset {
                for file in ["cpuset.cpus", "cpuset.mems"] {
                    inherit(&above, &dir, file);
                }
            }
        }
    }
    Ok(())
}

/// Enables in `dir`'s children every controller `dir` has (best effort: a failure shows up as
/// a missing limit file when the limits are written).
fn delegate_controllers(dir: &Path) {
    let Ok(available) = std::fs::read_to_string(dir.join("cgroup.controllers")) else {
        return;
    };
    let enabled = std::fs::read_to_string(dir.join("cgroup.subtree_control")).unwrap_or_default();
    for c in available.split_whitespace() {
        if enabled.split_whitespace().any(|e| e == c) {
            continue;
        }
        if let Err(e) = std::fs::write(dir.join("cgroup.subtree_control"), format!("+{c}")) {
            tracing::debug!(path = %dir.display(), controller = c, error = %e, "controller not delegated");
        }
    }
}

/// Copies v1 cpuset `file` from `parent` into `child` when the child's is empty.
fn inherit(parent: &Path, child: &Path, file: &str) {
    let current = std::fs::read_to_string(child.join(file)).unwrap_or_default();
    if !current.trim().is_empty() {
        return;
    }
    if let Ok(v) = std::fs::read_to_string(parent.join(file)) {
        if let Err(e) = std::fs::write(child.join(file), v.trim()) {
            tracing::debug!(path = %child.display(), file, error = %e, "cpuset not inherited");
        }
    }
}

/// Writes the pod-level limits `r` into the pod cgroup `parent` (created by [`create_pod`]):
/// cgroup v1 `cpu.shares`, `cpu.cfs_period_us` + `cpu.cfs_quota_us`, `memory.limit_in_bytes`;
/// on a v2-only host `cpu.weight`, `cpu.max`, `memory.max`. What is unset stays the new
/// cgroup's default (unlimited). Returns one message per value that could not be written: the
/// pod runs anyway, limited per container only.
pub fn set_pod_resources(parent: &str, r: &PodResources) -> Vec<String> {
    let rel = parent.trim_start_matches('/');
    let mut failures = Vec::new();
    let mut write = |dir: Option<PathBuf>, file: &str, value: String| {
        let Some(dir) = dir else {
            failures.push(format!("{file}: no cgroup hierarchy has its controller"));
            return;
        };
        let path = dir.join(rel).join(file);
        if let Err(e) = std::fs::write(&path, &value) {
            failures.push(format!("writing {value} to {}: {e}", path.display()));
        }
    };
    if let Some(root) = v2_root() {
        write(
            Some(root.clone()),
            "cpu.weight",
            shares_to_weight(r.cpu_shares).to_string(),
        );
        if let Some(q) = r.cpu_quota_us {
            write(
                Some(root.clone()),
                "cpu.max",
                format!("{q} {CPU_PERIOD_US}"),
            );
        }
        if let Some(m) = r.memory_limit_bytes {
            write(Some(root), "memory.max", m.to_string());
        }
    } else {
        let cpu = v1_hierarchy("cpu");
        write(cpu.clone(), "cpu.shares", r.cpu_shares.to_string());
        if let Some(q) = r.cpu_quota_us {
            write(cpu.clone(), "cpu.cfs_period_us", CPU_PERIOD_US.to_string());
            write(cpu, "cpu.cfs_quota_us", q.to_string());
        }
        if let Some(m) = r.memory_limit_bytes {
            write(
                v1_hierarchy("memory"),
                "memory.limit_in_bytes",
                m.to_string(),
            );
        }
    }
    failures
}

/// Removes the pod cgroup `parent` (e.g. `/kubepods/pod<uid>`) from every hierarchy. Leaves
/// that runc has not removed yet (a container still exiting) are removed first: rmdir of an
/// empty cgroup is how cgroupfs deletes, and it fails harmlessly while tasks remain.
pub fn remove_pod(parent: &str) {
    let rel = parent.trim_start_matches('/');
    if rel.is_empty() {
        return;
    }
    for h in hierarchies() {
        let dir = h.join(rel);
        if let Ok(children) = std::fs::read_dir(&dir) {
            for c in children.filter_map(Result::ok) {
                if c.file_type().map(|t| t.is_dir()).unwrap_or(false) {
                    let _ = std::fs::remove_dir(c.path());
                }
            }
        }
        match std::fs::remove_dir(&dir) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => tracing::debug!(path = %dir.display(), error = %e, "pod cgroup not removed"),
        }
    }
}

/// Removes the agent's cgroup root (`/kubepods`) when it is empty: for tests and uninstall.
pub fn remove_root(root: &str) {
    remove_pod(root);
}

/// Pod cgroups still present under `root` in any hierarchy (tests assert none are left).
pub fn leftovers(root: &str) -> Vec<PathBuf> {
    let rel = root.trim_start_matches('/');
    let mut out = Vec::new();
    for h in hierarchies() {
        if let Ok(d) = std::fs::read_dir(h.join(rel)) {
            out.extend(
                d.filter_map(Result::ok)
                    .filter(|e| e.file_type().map(|t| t.is_dir()).unwrap_or(false))
                    .map(|e| e.path()),
            );
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn pod(spec: serde_json::Value) -> Pod {
        serde_json::from_value(json!({"metadata": {"name": "p", "uid": "u"}, "spec": spec}))
            .expect("pod")
    }

    fn container(name: &str, resources: serde_json::Value) -> serde_json::Value {
        json!({"name": name, "image": "busybox", "resources": resources})
    }

    const MI: i64 = 1 << 20;

    #[test]
    fn pod_resources_follow_kubelet() {
        let cases: Vec<(&str, serde_json::Value, PodResources)> = vec![
            (
                "guaranteed: sums of two containers",
                json!({"containers": [
                    container("a", json!({"limits": {"cpu": "100m", "memory": "64Mi"}})),
                    container("b", json!({"limits": {"cpu": "200m", "memory": "32Mi"}})),
                ]}),
                PodResources {
                    cpu_shares: 307,
                    cpu_quota_us: Some(30_000),
                    memory_limit_bytes: Some(100_663_296),
                },
            ),
            (
                "burstable: one container without a memory limit",
                json!({"containers": [
                    container("a", json!({"requests": {"cpu": "250m", "memory": "16Mi"},
                                          "limits": {"cpu": "500m", "memory": "64Mi"}})),
                    container("b", json!({"requests": {"cpu": "250m"}, "limits": {"cpu": "1"}})),
                ]}),
                PodResources {
                    cpu_shares: 512,
                    cpu_quota_us: Some(150_000),
                    memory_limit_bytes: None,
                },
            ),
            (
                "burstable: one container without a cpu limit, none without memory",
                json!({"containers": [
                    container("a", json!({"requests": {"cpu": "1"}, "limits": {"memory": "64Mi"}})),
                    container("b", json!({"limits": {"cpu": "1", "memory": "64Mi"}})),
                ]}),
                PodResources {
                    cpu_shares: 2048,
                    cpu_quota_us: None,
                    memory_limit_bytes: Some(128 * MI),
                },
            ),
            (
                "besteffort",
                json!({"containers": [container("a", json!({})), container("b", json!(null))]}),
                PodResources {
                    cpu_shares: 2,
                    cpu_quota_us: None,
                    memory_limit_bytes: None,
                },
            ),
            (
                "tiny request: shares at least 2, quota at least 1 ms",
                json!({"containers": [container("a", json!({"limits": {"cpu": "1m", "memory": "1Mi"}}))]}),
                PodResources {
                    cpu_shares: 2,
                    cpu_quota_us: Some(1_000),
                    memory_limit_bytes: Some(MI),
                },
            ),
            (
                "an init container larger than the sum of the app containers",
                json!({
                    "initContainers": [
                        container("small", json!({"limits": {"cpu": "100m", "memory": "16Mi"}})),
                        container("big", json!({"limits": {"cpu": "2", "memory": "1Gi"}})),
                    ],
                    "containers": [
                        container("a", json!({"limits": {"cpu": "100m", "memory": "64Mi"}})),
                        container("b", json!({"limits": {"cpu": "200m", "memory": "32Mi"}})),
                    ]
                }),
                PodResources {
                    cpu_shares: 2048,
                    cpu_quota_us: Some(200_000),
                    memory_limit_bytes: Some(1024 * MI),
                },
            ),
            (
                "init containers smaller than the sum: the sum",
                json!({
                    "initContainers": [container("i", json!({"limits": {"cpu": "250m", "memory": "80Mi"}}))],
                    "containers": [
                        container("a", json!({"limits": {"cpu": "100m", "memory": "64Mi"}})),
                        container("b", json!({"limits": {"cpu": "200m", "memory": "32Mi"}})),
                    ]
                }),
                PodResources {
                    cpu_shares: 307,
                    cpu_quota_us: Some(30_000),
                    memory_limit_bytes: Some(96 * MI),
                },
            ),
            (
                "a sidecar counts with the app containers and with later init containers",
                json!({
                    "initContainers": [
                        {"name": "side", "image": "busybox", "restartPolicy": "Always",
                         "resources": {"limits": {"cpu": "100m", "memory": "16Mi"}}},
                        container("init", json!({"limits": {"cpu": "300m", "memory": "96Mi"}})),
                    ],
                    "containers": [container("a", json!({"limits": {"cpu": "100m", "memory": "64Mi"}}))]
                }),
                PodResources {
                    cpu_shares: 409,
                    cpu_quota_us: Some(40_000),
                    memory_limit_bytes: Some(112 * MI),
                },
            ),
            (
                "overhead added to requests and limits",
                json!({
                    "overhead": {"cpu": "250m", "memory": "120Mi"},
                    "containers": [
                        container("a", json!({"limits": {"cpu": "100m", "memory": "64Mi"}})),
                        container("b", json!({"limits": {"cpu": "200m", "memory": "32Mi"}})),
                    ]
                }),
                PodResources {
                    cpu_shares: 563,
                    cpu_quota_us: Some(55_000),
                    memory_limit_bytes: Some(216 * MI),
                },
            ),
            (
                "overhead on a burstable pod: requests only where no limit applies",
                json!({
                    "overhead": {"cpu": "100m", "memory": "10Mi"},
                    "containers": [container("a", json!({"requests": {"cpu": "100m"}}))]
                }),
                PodResources {
                    cpu_shares: 204,
                    cpu_quota_us: None,
                    memory_limit_bytes: None,
                },
            ),
        ];
        for (name, spec, want) in cases {
            assert_eq!(pod_resources(&pod(spec)), want, "{name}");
        }
    }

    #[test]
    fn shares_convert_to_weight_as_runc_does() {
        assert_eq!(shares_to_weight(2), 1);
        assert_eq!(shares_to_weight(1024), 39);
        assert_eq!(shares_to_weight(262_144), 10_000);
    }
}
