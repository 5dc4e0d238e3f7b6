//! Pod status from observed runtime state, with upstream's phase and condition rules.

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::{Container, Pod};
use serde_json::{json, Value};

use super::spec;

/// What the worker saw of one container (its newest instance and the one before).
#[derive(Clone, Debug, Default)]
pub struct Observed {
    pub current: Option<Instance>,
    pub previous: Option<Instance>,
    pub restart_count: i32,
    /// Why the container is not running when the worker knows better than the runtime:
    /// `(reason, message)`, e.g. `("ErrImagePull", "…")` or `("CrashLoopBackOff", "…")`.
    pub waiting: Option<(String, String)>,
    /// Readiness probe result (true when the container has no readiness probe).
    pub ready: bool,
    /// Startup probe passed (or none).
    pub started: bool,
}

/// One CRI container instance.
#[derive(Clone, Debug, Default)]
pub struct Instance {
    pub id: String,
    pub running: bool,
    pub exited: bool,
    pub exit_code: i32,
    pub reason: String,
    pub message: String,
    /// Nanoseconds since the epoch, 0 when unknown.
    pub started_at: i64,
    pub finished_at: i64,
    pub image_ref: String,
    pub log_path: String,
}

fn rfc3339_ns(ns: i64) -> Value {
    if ns <= 0 {
        return Value::Null;
    }
    match k8s_openapi::jiff::Timestamp::from_nanosecond(ns as i128) {
        Ok(t) => json!(t.strftime("%Y-%m-%dT%H:%M:%SZ").to_string()),
        Err(_) => Value::Null,
    }
}

fn terminated(i: &Instance) -> Value {
    let mut t = json!({
        "exitCode": i.exit_code,
        "reason": if i.reason.is_empty() {
            if i.exit_code == 0 { "Completed" } else { "Error" }
        } else { i.reason.as_str() },
        "startedAt": rfc3339_ns(i.started_at),
        "finishedAt": rfc3339_ns(i.finished_at),
        "containerID": format!("containerd://{}", i.id),
    });
    if !i.message.is_empty() {
        t["message"] = json!(i.message);
    }
    json!({ "terminated": t })
}

/// `containerStatuses[i]` as kubelet writes it.
pub fn container_status(c: &Container, o: &Observed, image: &str) -> Value {
    let state = match (&o.waiting, &o.current) {
        (Some((reason, message)), _) => {
            let mut w = json!({"reason": reason});
            if !message.is_empty() {
                w["message"] = json!(message);
            }
            json!({ "waiting": w })
        }
        (None, Some(i)) if i.running => json!({"running": {"startedAt": rfc3339_ns(i.started_at)}}),
        (None, Some(i)) if i.exited => terminated(i),
        _ => json!({"waiting": {"reason": "ContainerCreating"}}),
    };
    // While waiting to restart, the last run is the current instance; otherwise the previous.
    let last = match (&o.waiting, &o.current) {
        (Some(_), Some(i)) if i.exited => Some(terminated(i)),
        _ => o.previous.as_ref().filter(|p| p.exited).map(terminated),
    };
    let running = o.waiting.is_none() && o.current.as_ref().is_some_and(|i| i.running);
    let mut s = json!({
        "name": c.name,
        "image": c.image.clone().unwrap_or_default(),
        "imageID": o.current.as_ref().map(|i| i.image_ref.clone()).unwrap_or_default(),
        "ready": running && o.ready,
        "started": running && o.started,
        "restartCount": o.restart_count,
        "state": state,
        "lastState": last.unwrap_or_else(|| json!({})),
    });
    if let Some(i) = &o.current {
        s["containerID"] = json!(format!("containerd://{}", i.id));
    }
    let _ = image;
    s
}

/// The pod phase by upstream's rules (kubelet `getPhase`).
pub fn phase(pod: &Pod, init_done: bool, init_failed: bool, observed: &[Observed]) -> &'static str {
    let policy = pod
        .spec
        .as_ref()
        .and_then(|s| s.restart_policy.as_deref())
        .unwrap_or("Always");
    if init_failed {
        return "Failed";
    }
    if !init_done {
        return "Pending";
    }
    let mut waiting_never_ran = 0;
    let mut running = 0;
    let mut succeeded = 0;
    let mut failed = 0;
    for o in observed {
        let cur = o.current.as_ref();
        match cur {
            Some(i) if i.running && o.waiting.is_none() => running += 1,
            Some(i) if i.exited => {
                if i.exit_code == 0 {
                    succeeded += 1
                } else {
                    failed += 1
                }
            }
            _ if o.previous.is_some() || o.restart_count > 0 => running += 1,
            _ => waiting_never_ran += 1,
        }
    }
    if waiting_never_ran > 0 {
        return "Pending";
    }
    if running > 0 {
        return "Running";
    }
    match policy {
        "Always" => "Running",
        "OnFailure" if failed > 0 => "Running",
        "Never" if failed > 0 => "Failed",
        _ if succeeded + failed == observed.len() => "Succeeded",
        _ => "Running",
    }
}

/// Conditions kubelet owns; others (PodScheduled, DisruptionTarget, readiness gates set by
/// controllers) are kept as found.
const OWNED: [&str; 4] = [
    "PodReadyToStartContainers",
    "Initialized",
    "ContainersReady",
    "Ready",
];

/// The conditions to write, keeping `lastTransitionTime` when a status did not change.
pub fn conditions(
    pod: &Pod,
    want: &[(&'static str, bool, Option<String>)],
    now: &str,
) -> Vec<Value> {
    let existing: BTreeMap<String, Value> = pod
        .status
        .as_ref()
        .and_then(|s| s.conditions.as_ref())
        .map(|cs| {
            cs.iter()
                .filter_map(|c| serde_json::to_value(c).ok().map(|v| (c.type_.clone(), v)))
                .collect()
        })
        .unwrap_or_default();
    let mut out: Vec<Value> = existing
        .iter()
        .filter(|(t, _)| !OWNED.contains(&t.as_str()))
        .map(|(_, v)| v.clone())
        .collect();
    for (ty, ok, reason) in want {
        let status = if *ok { "True" } else { "False" };
        let since = existing
            .get(*ty)
            .filter(|v| v["status"] == status)
            .and_then(|v| v["lastTransitionTime"].as_str().map(str::to_string))
            .unwrap_or_else(|| now.to_string());
        let mut c = json!({
            "type": ty,
            "status": status,
            "lastProbeTime": null,
            "lastTransitionTime": since,
        });
        if let (false, Some(r)) = (ok, reason) {
            c["reason"] = json!(r);
        }
        out.push(c);
    }
    out
}

/// The reason `ContainersReady`/`Ready` are false, as upstream words it.
pub fn not_ready_reason(pod: &Pod, observed: &[Observed], statuses: &[Value]) -> Option<String> {
    let _ = pod;
    let unready: Vec<&str> = statuses
        .iter()
        .filter(|s| s["ready"] != true)
        .filter_map(|s| s["name"].as_str())
        .collect();
    (!unready.is_empty() || observed.is_empty()).then(|| "ContainersNotReady".to_string())
}

/// Everything but conditions, for the status patch.
pub fn qos(pod: &Pod) -> &'static str {
    spec::qos_class(pod)
}
