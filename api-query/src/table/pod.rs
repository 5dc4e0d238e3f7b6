//! The Pod printer: READY, STATUS and RESTARTS as kubectl users know them.
//!
//! The STATUS logic is the one from upstream `printPod` (init container progress `Init:1/3`,
//! container waiting/terminated reasons such as `CrashLoopBackOff`, `Completed`, sidecar
//! handling, `Terminating` for pods being deleted), transcribed step for step because scripts
//! and people read this column.

use api_types::k8s_openapi::jiff::Timestamp;
use serde_json::{json, Value};

use super::descriptions as d;
use super::util::{arr, b, i, opt_b, present, s, ts, Ctx};
use super::{col, ColumnDefinition, Printer, Row, AGE, NAME};

const COLUMNS: &[ColumnDefinition] = &[
    NAME,
    col(
        "Ready",
        "string",
        "The aggregate readiness state of this pod for accepting traffic.",
        0,
    ),
    col(
        "Status",
        "string",
        "The aggregate status of the containers in this pod.",
        0,
    ),
    col(
        "Restarts",
        "string",
        "The number of times the containers in this pod have been restarted and when the last container in this pod has restarted.",
        0,
    ),
    AGE,
    col("IP", "string", d::POD_STATUS_POD_IP, 1),
    col("Node", "string", d::POD_SPEC_NODE_NAME, 1),
    col(
        "Nominated Node",
        "string",
        d::POD_STATUS_NOMINATED_NODE_NAME,
        1,
    ),
    col("Readiness Gates", "string", d::POD_SPEC_READINESS_GATES, 1),
];

static PRINTER: Printer = Printer {
    columns: COLUMNS,
    row: pod_row,
};

pub(super) fn printer(group: &str, kind: &str) -> Option<&'static Printer> {
    (group.is_empty() && kind == "Pod").then_some(&PRINTER)
}

/// Upstream `podutil.IsRestartableInitContainer`: a sidecar, i.e. an init container with
/// `restartPolicy: Always`.
fn is_restartable(init_specs: &[Value], name: &str) -> bool {
    init_specs
        .iter()
        .find(|c| s(c, "/name") == name)
        .is_some_and(|c| s(c, "/restartPolicy") == "Always")
}

fn has_condition(pod: &Value, type_: &str) -> bool {
    arr(pod, "/status/conditions")
        .iter()
        .any(|c| s(c, "/type") == type_ && s(c, "/status") == "True")
}

/// Keeps the later of two restart times (upstream compares against the zero time).
fn later(current: Option<Timestamp>, candidate: Option<Timestamp>) -> Option<Timestamp> {
    match (current, candidate) {
        (Some(a), Some(b)) => Some(a.max(b)),
        (a, b) => a.or(b),
    }
}

/// The reason a terminated container shows when it gave none.
fn exit_reason(prefix: &str, container: &Value) -> String {
    let signal = i(container, "/state/terminated/signal");
    if signal != 0 {
        format!("{prefix}Signal:{signal}")
    } else {
        format!(
            "{prefix}ExitCode:{}",
            i(container, "/state/terminated/exitCode")
        )
    }
}

fn pod_row(pod: &Value, ctx: &Ctx) -> Row {
    let init_specs = arr(pod, "/spec/initContainers");
    let mut restarts: i64 = 0;
    let mut restartable_restarts: i64 = 0;
    let mut total = arr(pod, "/spec/containers").len();
    let mut ready = 0usize;
    let mut last_restart: Option<Timestamp> = None;
    let mut last_restartable_restart: Option<Timestamp> = None;

    let phase = s(pod, "/status/phase");
    let mut reason = phase.to_string();
    let status_reason = s(pod, "/status/reason");
    if !status_reason.is_empty() {
        reason = status_reason.to_string();
    }
    for c in arr(pod, "/status/conditions") {
        if s(c, "/type") == "PodScheduled" && s(c, "/reason") == "SchedulingGated" {
            reason = "SchedulingGated".to_string();
        }
    }

    let conditions = match phase {
        "Succeeded" => Some(json!([{
            "type": "Completed",
            "status": "True",
            "reason": "Succeeded",
            "message": "The pod has completed successfully.",
        }])),
        "Failed" => Some(json!([{
            "type": "Completed",
            "status": "True",
            "reason": "Failed",
            "message": "The pod failed.",
        }])),
        _ => None,
    };

    total += init_specs
        .iter()
        .filter(|c| s(c, "/restartPolicy") == "Always")
        .count();

    let mut initializing = false;
    for (idx, container) in arr(pod, "/status/initContainerStatuses").iter().enumerate() {
        let count = i(container, "/restartCount");
        restarts += count;
        let finished = if present(container, "/lastState/terminated") {
            ts(container, "/lastState/terminated/finishedAt")
        } else {
            None
        };
        last_restart = later(last_restart, finished);
        let restartable = is_restartable(init_specs, s(container, "/name"));
        if restartable {
            restartable_restarts += count;
            last_restartable_restart = later(last_restartable_restart, finished);
        }
        let terminated = present(container, "/state/terminated");
        if terminated && i(container, "/state/terminated/exitCode") == 0 {
            continue;
        }
        if restartable && opt_b(container, "/started") == Some(true) {
            if b(container, "/ready") {
                ready += 1;
            }
            continue;
        }
        if terminated {
            let r = s(container, "/state/terminated/reason");
            reason = if r.is_empty() {
                exit_reason("Init:", container)
            } else {
                format!("Init:{r}")
            };
        } else {
            let waiting = s(container, "/state/waiting/reason");
            if present(container, "/state/waiting")
                && !waiting.is_empty()
                && waiting != "PodInitializing"
            {
                reason = format!("Init:{waiting}");
            } else {
                reason = format!("Init:{idx}/{}", init_specs.len());
            }
        }
        initializing = true;
        break;
    }

    if !initializing || has_condition(pod, "Initialized") {
        restarts = restartable_restarts;
        last_restart = last_restartable_restart;
        let mut has_running = false;
        for container in arr(pod, "/status/containerStatuses").iter().rev() {
            restarts += i(container, "/restartCount");
            if present(container, "/lastState/terminated") {
                last_restart = later(
                    last_restart,
                    ts(container, "/lastState/terminated/finishedAt"),
                );
            }
            let waiting = s(container, "/state/waiting/reason");
            let terminated = present(container, "/state/terminated");
            let terminated_reason = s(container, "/state/terminated/reason");
            if present(container, "/state/waiting") && !waiting.is_empty() {
                reason = waiting.to_string();
            } else if terminated && !terminated_reason.is_empty() {
                reason = terminated_reason.to_string();
            } else if terminated {
                reason = exit_reason("", container);
            } else if b(container, "/ready") && present(container, "/state/running") {
                has_running = true;
                ready += 1;
            }
        }
        // A pod whose main containers partly completed while others still run is not done.
        if reason == "Completed" && has_running {
            reason = if has_condition(pod, "Ready") {
                "Running".to_string()
            } else {
                "NotReady".to_string()
            };
        }
    }

    if present(pod, "/metadata/deletionTimestamp") {
        if status_reason == "NodeLost" {
            reason = "Unknown".to_string();
        } else if phase != "Succeeded" && phase != "Failed" {
            reason = "Terminating".to_string();
        }
    }

    let restarts_cell = match last_restart {
        Some(t) if restarts != 0 => format!("{restarts} ({} ago)", ctx.since(Some(t))),
        _ => restarts.to_string(),
    };

    let mut pod_ip = s(pod, "/status/podIPs/0/ip");
    if pod_ip.is_empty() {
        pod_ip = s(pod, "/status/podIP");
    }
    let none = |v: &str| {
        if v.is_empty() {
            "<none>".to_string()
        } else {
            v.to_string()
        }
    };

    let gates = arr(pod, "/spec/readinessGates");
    let readiness_gates = if gates.is_empty() {
        "<none>".to_string()
    } else {
        let conditions = arr(pod, "/status/conditions");
        let true_count = gates
            .iter()
            .filter(|gate| {
                let t = s(gate, "/conditionType");
                conditions
                    .iter()
                    .find(|c| s(c, "/type") == t)
                    .is_some_and(|c| s(c, "/status") == "True")
            })
            .count();
        format!("{true_count}/{}", gates.len())
    };

    Row {
        cells: vec![
            json!(s(pod, "/metadata/name")),
            json!(format!("{ready}/{total}")),
            json!(reason),
            json!(restarts_cell),
            json!(ctx.age(pod)),
            json!(none(pod_ip)),
            json!(none(s(pod, "/spec/nodeName"))),
            json!(none(s(pod, "/status/nominatedNodeName"))),
            json!(readiness_gates),
        ],
        conditions,
    }
}
