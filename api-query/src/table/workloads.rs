//! Printers for the workload controllers: Deployments, ReplicaSets, StatefulSets, DaemonSets,
//! Jobs, CronJobs, ReplicationControllers and ControllerRevisions.

use serde_json::{json, Value};

use super::descriptions as d;
use super::util::{arr, container_cells, i, opt_b, opt_i, opt_s, present, s, ts, Ctx};
use super::{col, ColumnDefinition, Printer, Row, AGE, NAME};
use crate::duration::human_duration;
use crate::labels::{format_label_selector, format_labels};

const CONTAINERS: ColumnDefinition = col(
    "Containers",
    "string",
    "Names of each container in the template.",
    1,
);
const IMAGES: ColumnDefinition = col(
    "Images",
    "string",
    "Images referenced by each container in the template.",
    1,
);

/// `spec.replicas`, which v1 defaulting sets to 1 when the client leaves it out.
fn desired_replicas(obj: &Value) -> i64 {
    opt_i(obj, "/spec/replicas").unwrap_or(1)
}

fn name(obj: &Value) -> Value {
    json!(s(obj, "/metadata/name"))
}

const DEPLOYMENT_COLUMNS: &[ColumnDefinition] = &[
    NAME,
    col("Ready", "string", "Number of the pod with ready state", 0),
    col("Up-to-date", "string", d::DEPLOYMENT_STATUS_UPDATED, 0),
    col("Available", "string", d::DEPLOYMENT_STATUS_AVAILABLE, 0),
    AGE,
    CONTAINERS,
    IMAGES,
    col("Selector", "string", d::DEPLOYMENT_SPEC_SELECTOR, 1),
];

fn deployment_row(obj: &Value, ctx: &Ctx) -> Row {
    let (names, images) = container_cells(arr(obj, "/spec/template/spec/containers"));
    // Upstream prints the parsed selector's String(), which is empty for an empty selector
    // and `<invalid>` for a bad one, rather than FormatLabelSelector's `<none>`.
    let selector = match crate::labels::LabelSelector::from_label_selector(
        obj.pointer("/spec/selector").unwrap_or(&Value::Null),
    ) {
        Ok(sel) => sel.to_string(),
        Err(_) => "<invalid>".to_string(),
    };
    vec![
        name(obj),
        json!(format!(
            "{}/{}",
            i(obj, "/status/readyReplicas"),
            desired_replicas(obj)
        )),
        json!(i(obj, "/status/updatedReplicas")),
        json!(i(obj, "/status/availableReplicas")),
        json!(ctx.age(obj)),
        json!(names),
        json!(images),
        json!(selector),
    ]
    .into()
}

const REPLICA_SET_COLUMNS: &[ColumnDefinition] = &[
    NAME,
    col("Desired", "integer", d::RS_SPEC_REPLICAS, 0),
    col("Current", "integer", d::RS_STATUS_REPLICAS, 0),
    col("Ready", "integer", d::RS_STATUS_READY_REPLICAS, 0),
    AGE,
    CONTAINERS,
    IMAGES,
    col("Selector", "string", d::RS_SPEC_SELECTOR, 1),
];

fn replica_set_row(obj: &Value, ctx: &Ctx) -> Row {
    let (names, images) = container_cells(arr(obj, "/spec/template/spec/containers"));
    vec![
        name(obj),
        json!(desired_replicas(obj)),
        json!(i(obj, "/status/replicas")),
        json!(i(obj, "/status/readyReplicas")),
        json!(ctx.age(obj)),
        json!(names),
        json!(images),
        json!(format_label_selector(obj.pointer("/spec/selector"))),
    ]
    .into()
}

const REPLICATION_CONTROLLER_COLUMNS: &[ColumnDefinition] = &[
    NAME,
    col("Desired", "integer", d::RC_SPEC_REPLICAS, 0),
    col("Current", "integer", d::RC_STATUS_REPLICAS, 0),
    col("Ready", "integer", d::RC_STATUS_READY_REPLICAS, 0),
    AGE,
    CONTAINERS,
    IMAGES,
    col("Selector", "string", d::RC_SPEC_SELECTOR, 1),
];

fn replication_controller_row(obj: &Value, ctx: &Ctx) -> Row {
    let (names, images) = container_cells(arr(obj, "/spec/template/spec/containers"));
    vec![
        name(obj),
        json!(desired_replicas(obj)),
        json!(i(obj, "/status/replicas")),
        json!(i(obj, "/status/readyReplicas")),
        json!(ctx.age(obj)),
        json!(names),
        json!(images),
        json!(format_labels(obj.pointer("/spec/selector"))),
    ]
    .into()
}

const STATEFUL_SET_COLUMNS: &[ColumnDefinition] = &[
    NAME,
    col("Ready", "string", "Number of the pod with ready state", 0),
    AGE,
    CONTAINERS,
    IMAGES,
];

fn stateful_set_row(obj: &Value, ctx: &Ctx) -> Row {
    let (names, images) = container_cells(arr(obj, "/spec/template/spec/containers"));
    vec![
        name(obj),
        json!(format!(
            "{}/{}",
            i(obj, "/status/readyReplicas"),
            desired_replicas(obj)
        )),
        json!(ctx.age(obj)),
        json!(names),
        json!(images),
    ]
    .into()
}

const DAEMON_SET_COLUMNS: &[ColumnDefinition] = &[
    NAME,
    col("Desired", "integer", d::DS_STATUS_DESIRED, 0),
    col("Current", "integer", d::DS_STATUS_CURRENT, 0),
    col("Ready", "integer", d::DS_STATUS_READY, 0),
    col("Up-to-date", "integer", d::DS_STATUS_UPDATED, 0),
    col("Available", "integer", d::DS_STATUS_AVAILABLE, 0),
    col("Node Selector", "string", d::POD_SPEC_NODE_SELECTOR, 0),
    AGE,
    CONTAINERS,
    IMAGES,
    col("Selector", "string", d::DS_SPEC_SELECTOR, 1),
];

fn daemon_set_row(obj: &Value, ctx: &Ctx) -> Row {
    let (names, images) = container_cells(arr(obj, "/spec/template/spec/containers"));
    vec![
        name(obj),
        json!(i(obj, "/status/desiredNumberScheduled")),
        json!(i(obj, "/status/currentNumberScheduled")),
        json!(i(obj, "/status/numberReady")),
        json!(i(obj, "/status/updatedNumberScheduled")),
        json!(i(obj, "/status/numberAvailable")),
        json!(format_labels(
            obj.pointer("/spec/template/spec/nodeSelector")
        )),
        json!(ctx.age(obj)),
        json!(names),
        json!(images),
        json!(format_label_selector(obj.pointer("/spec/selector"))),
    ]
    .into()
}

const JOB_COLUMNS: &[ColumnDefinition] = &[
    NAME,
    col("Status", "string", "Status of the job.", 0),
    col("Completions", "string", d::JOB_STATUS_SUCCEEDED, 0),
    col(
        "Duration",
        "string",
        "Time required to complete the job.",
        0,
    ),
    AGE,
    CONTAINERS,
    IMAGES,
    col("Selector", "string", d::JOB_SPEC_SELECTOR, 1),
];

/// Upstream `hasJobCondition`: the first condition of the type decides.
fn has_job_condition(job: &Value, type_: &str) -> bool {
    arr(job, "/status/conditions")
        .iter()
        .find(|c| s(c, "/type") == type_)
        .is_some_and(|c| s(c, "/status") == "True")
}

fn job_row(obj: &Value, ctx: &Ctx) -> Row {
    let succeeded = i(obj, "/status/succeeded");
    let completions = match opt_i(obj, "/spec/completions") {
        Some(c) => format!("{succeeded}/{c}"),
        None => {
            let parallelism = i(obj, "/spec/parallelism");
            if parallelism > 1 {
                format!("{succeeded}/1 of {parallelism}")
            } else {
                format!("{succeeded}/1")
            }
        }
    };
    let duration = match (
        ts(obj, "/status/startTime"),
        ts(obj, "/status/completionTime"),
    ) {
        (None, _) => String::new(),
        (Some(start), None) => ctx.since(Some(start)),
        (Some(start), Some(end)) => human_duration(end.as_nanosecond() - start.as_nanosecond()),
    };
    let status = if has_job_condition(obj, "Complete") {
        "Complete"
    } else if has_job_condition(obj, "Failed") {
        "Failed"
    } else if present(obj, "/metadata/deletionTimestamp") {
        "Terminating"
    } else if has_job_condition(obj, "Suspended") {
        "Suspended"
    } else if has_job_condition(obj, "FailureTarget") {
        "FailureTarget"
    } else {
        "Running"
    };
    let (names, images) = container_cells(arr(obj, "/spec/template/spec/containers"));
    vec![
        name(obj),
        json!(status),
        json!(completions),
        json!(duration),
        json!(ctx.age(obj)),
        json!(names),
        json!(images),
        json!(format_label_selector(obj.pointer("/spec/selector"))),
    ]
    .into()
}

const CRON_JOB_COLUMNS: &[ColumnDefinition] = &[
    NAME,
    col("Schedule", "string", d::CRONJOB_SPEC_SCHEDULE, 0),
    col("Timezone", "string", d::CRONJOB_SPEC_TIME_ZONE, 0),
    col("Suspend", "boolean", d::CRONJOB_SPEC_SUSPEND, 0),
    col("Active", "integer", d::CRONJOB_STATUS_ACTIVE, 0),
    col(
        "Last Schedule",
        "string",
        d::CRONJOB_STATUS_LAST_SCHEDULE_TIME,
        0,
    ),
    AGE,
    CONTAINERS,
    IMAGES,
    col("Selector", "string", d::JOB_SPEC_SELECTOR, 1),
];

/// Upstream `printBoolPtr`: `True`, `False` or `<unset>`.
fn bool_ptr(v: Option<bool>) -> &'static str {
    match v {
        Some(true) => "True",
        Some(false) => "False",
        None => "<unset>",
    }
}

fn cron_job_row(obj: &Value, ctx: &Ctx) -> Row {
    let last_schedule = if present(obj, "/status/lastScheduleTime") {
        ctx.since(ts(obj, "/status/lastScheduleTime"))
    } else {
        "<none>".to_string()
    };
    let (names, images) =
        container_cells(arr(obj, "/spec/jobTemplate/spec/template/spec/containers"));
    vec![
        name(obj),
        json!(s(obj, "/spec/schedule")),
        json!(opt_s(obj, "/spec/timeZone").unwrap_or("<none>")),
        json!(bool_ptr(opt_b(obj, "/spec/suspend"))),
        json!(arr(obj, "/status/active").len()),
        json!(last_schedule),
        json!(ctx.age(obj)),
        json!(names),
        json!(images),
        json!(format_label_selector(
            obj.pointer("/spec/jobTemplate/spec/selector")
        )),
    ]
    .into()
}

const CONTROLLER_REVISION_COLUMNS: &[ColumnDefinition] = &[
    NAME,
    col("Controller", "string", "Controller of the object", 0),
    col("Revision", "string", d::CONTROLLER_REVISION_REVISION, 0),
    AGE,
];

fn controller_revision_row(obj: &Value, ctx: &Ctx) -> Row {
    let controller = arr(obj, "/metadata/ownerReferences")
        .iter()
        .find(|r| r.get("controller").and_then(Value::as_bool) == Some(true))
        .map_or_else(
            || "<none>".to_string(),
            |r| {
                let kind = s(r, "/kind");
                let name = s(r, "/name");
                let api_version = s(r, "/apiVersion");
                // The group is everything before the last `/` (core has none).
                let group = api_version.rsplit_once('/').map_or("", |(g, _)| g);
                if kind.is_empty() && group.is_empty() {
                    name.to_string()
                } else if group.is_empty() {
                    format!("{}/{name}", kind.to_lowercase())
                } else {
                    format!("{}.{}/{name}", kind.to_lowercase(), group.to_lowercase())
                }
            },
        );
    vec![
        name(obj),
        json!(controller),
        json!(i(obj, "/revision")),
        json!(ctx.age(obj)),
    ]
    .into()
}

static DEPLOYMENT: Printer = Printer {
    columns: DEPLOYMENT_COLUMNS,
    row: deployment_row,
};
static REPLICA_SET: Printer = Printer {
    columns: REPLICA_SET_COLUMNS,
    row: replica_set_row,
};
static REPLICATION_CONTROLLER: Printer = Printer {
    columns: REPLICATION_CONTROLLER_COLUMNS,
    row: replication_controller_row,
};
static STATEFUL_SET: Printer = Printer {
    columns: STATEFUL_SET_COLUMNS,
    row: stateful_set_row,
};
static DAEMON_SET: Printer = Printer {
    columns: DAEMON_SET_COLUMNS,
    row: daemon_set_row,
};
static JOB: Printer = Printer {
    columns: JOB_COLUMNS,
    row: job_row,
};
static CRON_JOB: Printer = Printer {
    columns: CRON_JOB_COLUMNS,
    row: cron_job_row,
};
static CONTROLLER_REVISION: Printer = Printer {
    columns: CONTROLLER_REVISION_COLUMNS,
    row: controller_revision_row,
};

pub(super) fn printer(group: &str, kind: &str) -> Option<&'static Printer> {
    Some(match (group, kind) {
        ("apps", "Deployment") => &DEPLOYMENT,
        ("apps", "ReplicaSet") => &REPLICA_SET,
        ("apps", "StatefulSet") => &STATEFUL_SET,
        ("apps", "DaemonSet") => &DAEMON_SET,
        ("apps", "ControllerRevision") => &CONTROLLER_REVISION,
        ("batch", "Job") => &JOB,
        ("batch", "CronJob") => &CRON_JOB,
        ("", "ReplicationController") => &REPLICATION_CONTROLLER,
        _ => return None,
    })
}
