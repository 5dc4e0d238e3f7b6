//! Server-side Table printing: table shape, and exact cells for representative objects.

use api_query::{
    column_definitions, to_table, IncludeObject, TableOptions, TableVersion, Timestamp,
};
use api_types::resources::{find, ResourceInfo};
use serde_json::{json, Value};

const NOW: i64 = 1_700_000_000;

fn now() -> Timestamp {
    Timestamp::from_second(NOW).unwrap()
}

/// An RFC 3339 timestamp `secs` seconds before [`NOW`].
fn ago(secs: i64) -> String {
    Timestamp::from_second(NOW - secs).unwrap().to_string()
}

fn info(group: &str, plural: &str) -> &'static ResourceInfo {
    find(group, "v1", plural).unwrap_or_else(|| panic!("no {plural}.{group}"))
}

fn table(group: &str, plural: &str, items: &[Value]) -> Value {
    to_table(info(group, plural), items, &TableOptions::at(now()))
}

/// The cells of the one row `obj` renders to.
fn cells(group: &str, plural: &str, obj: Value) -> Vec<Value> {
    let t = table(group, plural, &[obj]);
    t["rows"][0]["cells"].as_array().unwrap().clone()
}

fn header(group: &str, plural: &str) -> Vec<(String, i64)> {
    let t = table(group, plural, &[]);
    t["columnDefinitions"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| {
            (
                c["name"].as_str().unwrap().to_string(),
                c["priority"].as_i64().unwrap(),
            )
        })
        .collect()
}

fn names(h: &[(String, i64)]) -> Vec<&str> {
    h.iter().map(|(n, _)| n.as_str()).collect()
}

#[test]
fn table_shape_and_metadata_objects() {
    let pod = json!({
        "metadata": {"name": "web-1", "namespace": "default", "labels": {"app": "web"},
                     "creationTimestamp": ago(300), "resourceVersion": "42"},
        "spec": {"containers": [{"name": "web", "image": "nginx"}]},
        "status": {"phase": "Pending"}
    });
    let mut opts = TableOptions::at(now());
    opts.resource_version = Some("100".into());
    opts.continue_token = Some("tok".into());
    opts.remaining_item_count = Some(7);
    let t = to_table(info("", "pods"), std::slice::from_ref(&pod), &opts);
    assert_eq!(t["kind"], "Table");
    assert_eq!(t["apiVersion"], "meta.k8s.io/v1");
    assert_eq!(
        t["metadata"],
        json!({"resourceVersion": "100", "continue": "tok", "remainingItemCount": 7})
    );
    let cols = t["columnDefinitions"].as_array().unwrap();
    assert_eq!(
        cols[0],
        json!({
            "name": "Name", "type": "string", "format": "name", "priority": 0,
            "description": "Name must be unique within a namespace. Is required when creating resources, although some resources may allow a client to request the generation of an appropriate name automatically. Name is primarily intended for creation idempotence and configuration definition. Cannot be updated. More info: https://kubernetes.io/docs/concepts/overview/working-with-objects/names#names"
        })
    );
    assert_eq!(cols[1]["format"], "");
    assert_eq!(
        t["rows"][0]["object"],
        json!({"kind": "PartialObjectMetadata", "apiVersion": "meta.k8s.io/v1", "metadata": pod["metadata"]})
    );
    assert!(t["rows"][0].get("conditions").is_none());

    // No headers, no object, v1beta1.
    let mut opts = TableOptions::at(now());
    opts.no_headers = true;
    opts.include_object = IncludeObject::None;
    opts.version = TableVersion::V1Beta1;
    let t = to_table(info("", "pods"), std::slice::from_ref(&pod), &opts);
    assert_eq!(t["apiVersion"], "meta.k8s.io/v1beta1");
    assert!(t.get("columnDefinitions").is_none());
    assert_eq!(t["metadata"], json!({}));
    assert_eq!(t["rows"][0].as_object().unwrap().len(), 1);

    // Full objects get kind/apiVersion filled in.
    let mut opts = TableOptions::at(now());
    opts.include_object = IncludeObject::Object;
    let t = to_table(
        info("apps", "deployments"),
        &[json!({"metadata": {"name": "d"}})],
        &opts,
    );
    assert_eq!(
        t["rows"][0]["object"],
        json!({"kind": "Deployment", "apiVersion": "apps/v1", "metadata": {"name": "d"}})
    );

    // An empty list still has headers and an empty rows array.
    let t = table("", "pods", &[]);
    assert_eq!(t["rows"], json!([]));

    assert_eq!(IncludeObject::parse(""), Some(IncludeObject::Metadata));
    assert_eq!(IncludeObject::parse("Object"), Some(IncludeObject::Object));
    assert_eq!(IncludeObject::parse("None"), Some(IncludeObject::None));
    assert_eq!(IncludeObject::parse("All"), None);
}

#[test]
fn column_sets() {
    /// (group, plural, columns with their priorities)
    type Case<'a> = (&'a str, &'a str, &'a [(&'a str, i64)]);
    let cases: &[Case<'_>] = &[
        (
            "",
            "pods",
            &[
                ("Name", 0),
                ("Ready", 0),
                ("Status", 0),
                ("Restarts", 0),
                ("Age", 0),
                ("IP", 1),
                ("Node", 1),
                ("Nominated Node", 1),
                ("Readiness Gates", 1),
            ],
        ),
        (
            "apps",
            "deployments",
            &[
                ("Name", 0),
                ("Ready", 0),
                ("Up-to-date", 0),
                ("Available", 0),
                ("Age", 0),
                ("Containers", 1),
                ("Images", 1),
                ("Selector", 1),
            ],
        ),
        (
            "",
            "services",
            &[
                ("Name", 0),
                ("Type", 0),
                ("Cluster-IP", 0),
                ("External-IP", 0),
                ("Port(s)", 0),
                ("Age", 0),
                ("Selector", 1),
            ],
        ),
        (
            "",
            "nodes",
            &[
                ("Name", 0),
                ("Status", 0),
                ("Roles", 0),
                ("Age", 0),
                ("Version", 0),
                ("Internal-IP", 1),
                ("External-IP", 1),
                ("OS-Image", 1),
                ("Kernel-Version", 1),
                ("Container-Runtime", 1),
            ],
        ),
        (
            "",
            "events",
            &[
                ("Last Seen", 0),
                ("Type", 0),
                ("Reason", 0),
                ("Object", 0),
                ("Subobject", 1),
                ("Source", 1),
                ("Message", 0),
                ("First Seen", 1),
                ("Count", 1),
                ("Name", 1),
            ],
        ),
        (
            "batch",
            "jobs",
            &[
                ("Name", 0),
                ("Status", 0),
                ("Completions", 0),
                ("Duration", 0),
                ("Age", 0),
                ("Containers", 1),
                ("Images", 1),
                ("Selector", 1),
            ],
        ),
        ("", "namespaces", &[("Name", 0), ("Status", 0), ("Age", 0)]),
        ("", "configmaps", &[("Name", 0), ("Data", 0), ("Age", 0)]),
        (
            "",
            "secrets",
            &[("Name", 0), ("Type", 0), ("Data", 0), ("Age", 0)],
        ),
        (
            "rbac.authorization.k8s.io",
            "roles",
            &[("Name", 0), ("Created At", 0)],
        ),
        ("", "limitranges", &[("Name", 0), ("Created At", 0)]),
        (
            "coordination.k8s.io",
            "leases",
            &[("Name", 0), ("Holder", 0), ("Age", 0)],
        ),
    ];
    for (group, plural, want) in cases {
        let got = header(group, plural);
        let want: Vec<(String, i64)> = want.iter().map(|(n, p)| (n.to_string(), *p)).collect();
        assert_eq!(got, want, "{plural}.{group}");
    }
    // Every served resource has columns starting with its name (events put it last).
    for r in api_types::RESOURCES {
        let cols = column_definitions(r);
        assert!(
            cols.iter().any(|c| c.name == "Name" && c.format == "name"),
            "{}",
            r.plural
        );
    }
    let h = header("", "persistentvolumes");
    assert_eq!(
        names(&h),
        [
            "Name",
            "Capacity",
            "Access Modes",
            "Reclaim Policy",
            "Status",
            "Claim",
            "StorageClass",
            "VolumeAttributesClass",
            "Reason",
            "Age",
            "VolumeMode"
        ]
    );
}

fn running_container(name: &str, restarts: i64) -> Value {
    json!({
        "name": name, "ready": true, "started": true, "restartCount": restarts,
        "state": {"running": {"startedAt": ago(100)}}
    })
}

fn pod(name: &str, age: i64, spec: Value, status: Value) -> Value {
    json!({
        "metadata": {"name": name, "namespace": "default", "creationTimestamp": ago(age)},
        "spec": spec,
        "status": status,
    })
}

#[test]
fn pod_rows() {
    let one = json!({"containers": [{"name": "web", "image": "nginx"}], "nodeName": "node-1"});
    let cases: Vec<(&str, Value, Vec<Value>)> = vec![
        (
            "running",
            pod(
                "web-1",
                300,
                one.clone(),
                json!({"phase": "Running", "podIP": "10.0.0.5", "podIPs": [{"ip": "10.0.0.5"}],
                       "containerStatuses": [running_container("web", 0)]}),
            ),
            vec![
                json!("web-1"),
                json!("1/1"),
                json!("Running"),
                json!("0"),
                json!("5m"),
                json!("10.0.0.5"),
                json!("node-1"),
                json!("<none>"),
                json!("<none>"),
            ],
        ),
        (
            "crashlooping",
            pod(
                "crash",
                600,
                one.clone(),
                json!({"phase": "Running", "podIPs": [{"ip": "10.0.0.6"}],
                "containerStatuses": [{
                    "name": "web", "ready": false, "started": false, "restartCount": 3,
                    "state": {"waiting": {"reason": "CrashLoopBackOff", "message": "back-off"}},
                    "lastState": {"terminated": {"exitCode": 1, "reason": "Error",
                                                 "finishedAt": ago(120)}}
                }]}),
            ),
            vec![
                json!("crash"),
                json!("0/1"),
                json!("CrashLoopBackOff"),
                json!("3 (2m ago)"),
                json!("10m"),
                json!("10.0.0.6"),
                json!("node-1"),
                json!("<none>"),
                json!("<none>"),
            ],
        ),
        (
            "terminating",
            json!({
                "metadata": {"name": "old", "creationTimestamp": ago(3 * 86400 + 4 * 3600),
                             "deletionTimestamp": ago(5)},
                "spec": one.clone(),
                "status": {"phase": "Running", "containerStatuses": [running_container("web", 0)]}
            }),
            vec![
                json!("old"),
                json!("1/1"),
                json!("Terminating"),
                json!("0"),
                json!("3d4h"),
                json!("<none>"),
                json!("node-1"),
                json!("<none>"),
                json!("<none>"),
            ],
        ),
        (
            "init containers in progress",
            pod(
                "init",
                45,
                json!({"initContainers": [{"name": "a"}, {"name": "b"}],
                       "containers": [{"name": "web"}], "nodeName": "node-1"}),
                json!({"phase": "Pending",
                       "conditions": [{"type": "Initialized", "status": "False"}],
                       "initContainerStatuses": [
                           {"name": "a", "ready": true, "restartCount": 0,
                            "state": {"terminated": {"exitCode": 0, "reason": "Completed"}}},
                           {"name": "b", "ready": false, "restartCount": 2,
                            "state": {"running": {}},
                            "lastState": {"terminated": {"exitCode": 1, "finishedAt": ago(30)}}}
                       ],
                       "containerStatuses": [{"name": "web", "ready": false, "restartCount": 0,
                                              "state": {"waiting": {"reason": "PodInitializing"}}}]}),
            ),
            vec![
                json!("init"),
                json!("0/1"),
                json!("Init:1/2"),
                json!("2 (30s ago)"),
                json!("45s"),
                json!("<none>"),
                json!("node-1"),
                json!("<none>"),
                json!("<none>"),
            ],
        ),
        (
            "init container crashlooping",
            pod(
                "init-crash",
                580,
                json!({"initContainers": [{"name": "a"}], "containers": [{"name": "web"}]}),
                json!({"phase": "Pending",
                "initContainerStatuses": [
                    {"name": "a", "ready": false, "restartCount": 5,
                     "state": {"waiting": {"reason": "CrashLoopBackOff"}},
                     "lastState": {"terminated": {"exitCode": 2, "finishedAt": ago(61)}}}
                ]}),
            ),
            vec![
                json!("init-crash"),
                json!("0/1"),
                json!("Init:CrashLoopBackOff"),
                json!("5 (61s ago)"),
                json!("9m40s"),
                json!("<none>"),
                json!("<none>"),
                json!("<none>"),
                json!("<none>"),
            ],
        ),
        (
            "init container failed without reason",
            pod(
                "init-fail",
                10,
                json!({"initContainers": [{"name": "a"}], "containers": [{"name": "web"}]}),
                json!({"phase": "Pending",
                "initContainerStatuses": [
                    {"name": "a", "restartCount": 0,
                     "state": {"terminated": {"exitCode": 3}}}
                ]}),
            ),
            vec![
                json!("init-fail"),
                json!("0/1"),
                json!("Init:ExitCode:3"),
                json!("0"),
                json!("10s"),
                json!("<none>"),
                json!("<none>"),
                json!("<none>"),
                json!("<none>"),
            ],
        ),
        (
            "completed",
            pod(
                "job-abc",
                7200,
                one.clone(),
                json!({"phase": "Succeeded", "podIPs": [{"ip": "10.0.0.9"}],
                       "containerStatuses": [{"name": "web", "ready": false, "restartCount": 0,
                           "state": {"terminated": {"exitCode": 0, "reason": "Completed"}}}]}),
            ),
            vec![
                json!("job-abc"),
                json!("0/1"),
                json!("Completed"),
                json!("0"),
                json!("120m"),
                json!("10.0.0.9"),
                json!("node-1"),
                json!("<none>"),
                json!("<none>"),
            ],
        ),
        (
            "failed",
            pod(
                "bad",
                9 * 3600,
                one.clone(),
                json!({"phase": "Failed",
                       "containerStatuses": [{"name": "web", "restartCount": 0,
                           "state": {"terminated": {"exitCode": 1, "reason": "Error"}}}]}),
            ),
            vec![
                json!("bad"),
                json!("0/1"),
                json!("Error"),
                json!("0"),
                json!("9h"),
                json!("<none>"),
                json!("node-1"),
                json!("<none>"),
                json!("<none>"),
            ],
        ),
        (
            "killed by signal",
            pod(
                "sig",
                60,
                one.clone(),
                json!({"phase": "Running",
                       "containerStatuses": [{"name": "web", "restartCount": 1,
                           "state": {"terminated": {"exitCode": 137, "signal": 9}}}]}),
            ),
            vec![
                json!("sig"),
                json!("0/1"),
                json!("Signal:9"),
                json!("1"),
                json!("60s"),
                json!("<none>"),
                json!("node-1"),
                json!("<none>"),
                json!("<none>"),
            ],
        ),
        (
            "container creating",
            pod(
                "new",
                4,
                one.clone(),
                json!({"phase": "Pending",
                       "containerStatuses": [{"name": "web", "ready": false, "restartCount": 0,
                           "state": {"waiting": {"reason": "ContainerCreating"}}}]}),
            ),
            vec![
                json!("new"),
                json!("0/1"),
                json!("ContainerCreating"),
                json!("0"),
                json!("4s"),
                json!("<none>"),
                json!("node-1"),
                json!("<none>"),
                json!("<none>"),
            ],
        ),
        (
            "unscheduled",
            pod(
                "pending",
                30,
                json!({"containers": [{"name": "a"}, {"name": "b"}]}),
                json!({"phase": "Pending", "nominatedNodeName": "node-9"}),
            ),
            vec![
                json!("pending"),
                json!("0/2"),
                json!("Pending"),
                json!("0"),
                json!("30s"),
                json!("<none>"),
                json!("<none>"),
                json!("node-9"),
                json!("<none>"),
            ],
        ),
        (
            "scheduling gated",
            pod(
                "gated",
                30,
                json!({"containers": [{"name": "a"}], "schedulingGates": [{"name": "g"}]}),
                json!({"phase": "Pending",
                       "conditions": [{"type": "PodScheduled", "status": "False", "reason": "SchedulingGated"}]}),
            ),
            vec![
                json!("gated"),
                json!("0/1"),
                json!("SchedulingGated"),
                json!("0"),
                json!("30s"),
                json!("<none>"),
                json!("<none>"),
                json!("<none>"),
                json!("<none>"),
            ],
        ),
        (
            "sidecar and readiness gates",
            pod(
                "side",
                200,
                json!({"initContainers": [{"name": "proxy", "restartPolicy": "Always"}],
                       "containers": [{"name": "web"}], "nodeName": "node-2",
                       "readinessGates": [{"conditionType": "example.com/lb"},
                                          {"conditionType": "example.com/dns"}]}),
                json!({"phase": "Running", "podIPs": [{"ip": "fd00::7"}],
                       "conditions": [{"type": "Initialized", "status": "True"},
                                      {"type": "Ready", "status": "True"},
                                      {"type": "example.com/lb", "status": "True"}],
                       "initContainerStatuses": [{"name": "proxy", "ready": true, "started": true,
                           "restartCount": 1, "state": {"running": {}},
                           "lastState": {"terminated": {"exitCode": 1, "finishedAt": ago(150)}}}],
                       "containerStatuses": [running_container("web", 0)]}),
            ),
            vec![
                json!("side"),
                json!("2/2"),
                json!("Running"),
                json!("1 (2m30s ago)"),
                json!("3m20s"),
                json!("fd00::7"),
                json!("node-2"),
                json!("<none>"),
                json!("1/2"),
            ],
        ),
        (
            "partly completed, not ready",
            pod(
                "partial",
                100,
                json!({"containers": [{"name": "a"}, {"name": "b"}]}),
                json!({"phase": "Running",
                "conditions": [{"type": "Ready", "status": "False"}],
                "containerStatuses": [
                    {"name": "a", "restartCount": 0,
                     "state": {"terminated": {"exitCode": 0, "reason": "Completed"}}},
                    running_container("b", 0)
                ]}),
            ),
            vec![
                json!("partial"),
                json!("1/2"),
                json!("NotReady"),
                json!("0"),
                json!("100s"),
                json!("<none>"),
                json!("<none>"),
                json!("<none>"),
                json!("<none>"),
            ],
        ),
        (
            "node lost",
            json!({
                "metadata": {"name": "lost", "creationTimestamp": ago(100), "deletionTimestamp": ago(1)},
                "spec": one.clone(),
                "status": {"phase": "Running", "reason": "NodeLost"}
            }),
            vec![
                json!("lost"),
                json!("0/1"),
                json!("Unknown"),
                json!("0"),
                json!("100s"),
                json!("<none>"),
                json!("node-1"),
                json!("<none>"),
                json!("<none>"),
            ],
        ),
    ];
    for (what, obj, want) in cases {
        assert_eq!(cells("", "pods", obj), want, "{what}");
    }
}

#[test]
fn finished_pods_carry_row_conditions() {
    let done = pod(
        "done",
        10,
        json!({"containers": [{"name": "a"}]}),
        json!({"phase": "Succeeded"}),
    );
    let failed = pod(
        "failed",
        10,
        json!({"containers": [{"name": "a"}]}),
        json!({"phase": "Failed"}),
    );
    let t = table("", "pods", &[done, failed]);
    assert_eq!(
        t["rows"][0]["conditions"],
        json!([{"type": "Completed", "status": "True", "reason": "Succeeded",
                "message": "The pod has completed successfully."}])
    );
    assert_eq!(
        t["rows"][1]["conditions"],
        json!([{"type": "Completed", "status": "True", "reason": "Failed",
                "message": "The pod failed."}])
    );
}

#[test]
fn deployment_rows() {
    let d = json!({
        "metadata": {"name": "web", "namespace": "default", "creationTimestamp": ago(51 * 3600)},
        "spec": {
            "replicas": 3,
            "selector": {"matchLabels": {"app": "web"}},
            "template": {"spec": {"containers": [
                {"name": "nginx", "image": "nginx:1.25"},
                {"name": "log", "image": "busybox"}
            ]}}
        },
        "status": {"replicas": 3, "readyReplicas": 2, "updatedReplicas": 3, "availableReplicas": 2}
    });
    assert_eq!(
        cells("apps", "deployments", d),
        [
            json!("web"),
            json!("2/3"),
            json!(3),
            json!(2),
            json!("2d3h"),
            json!("nginx,log"),
            json!("nginx:1.25,busybox"),
            json!("app=web")
        ]
    );
    let fresh = json!({
        "metadata": {"name": "new", "creationTimestamp": ago(0)},
        "spec": {"selector": {"matchExpressions": [{"key": "tier", "operator": "In", "values": ["b", "a"]}]},
                 "template": {"spec": {"containers": [{"name": "c", "image": "i"}]}}}
    });
    assert_eq!(
        cells("apps", "deployments", fresh),
        [
            json!("new"),
            json!("0/1"),
            json!(0),
            json!(0),
            json!("0s"),
            json!("c"),
            json!("i"),
            json!("tier in (a,b)")
        ]
    );
}

#[test]
fn workload_rows() {
    let rs = json!({
        "metadata": {"name": "web-5d4f", "creationTimestamp": ago(3600)},
        "spec": {"replicas": 2, "selector": {"matchLabels": {"app": "web", "pod-template-hash": "5d4f"}},
                 "template": {"spec": {"containers": [{"name": "nginx", "image": "nginx"}]}}},
        "status": {"replicas": 2, "readyReplicas": 1}
    });
    assert_eq!(
        cells("apps", "replicasets", rs),
        [
            json!("web-5d4f"),
            json!(2),
            json!(2),
            json!(1),
            json!("60m"),
            json!("nginx"),
            json!("nginx"),
            json!("app=web,pod-template-hash=5d4f")
        ]
    );
    let sts = json!({
        "metadata": {"name": "db", "creationTimestamp": ago(90)},
        "spec": {"replicas": 3, "template": {"spec": {"containers": [{"name": "pg", "image": "postgres:16"}]}}},
        "status": {"readyReplicas": 2}
    });
    assert_eq!(
        cells("apps", "statefulsets", sts),
        [
            json!("db"),
            json!("2/3"),
            json!("90s"),
            json!("pg"),
            json!("postgres:16")
        ]
    );
    let ds = json!({
        "metadata": {"name": "fluentd", "creationTimestamp": ago(600)},
        "spec": {"selector": {"matchLabels": {"app": "fluentd"}},
                 "template": {"spec": {"nodeSelector": {"kubernetes.io/os": "linux"},
                                       "containers": [{"name": "f", "image": "fluentd"}]}}},
        "status": {"desiredNumberScheduled": 3, "currentNumberScheduled": 3, "numberReady": 2,
                   "updatedNumberScheduled": 3, "numberAvailable": 2}
    });
    assert_eq!(
        cells("apps", "daemonsets", ds),
        [
            json!("fluentd"),
            json!(3),
            json!(3),
            json!(2),
            json!(3),
            json!(2),
            json!("kubernetes.io/os=linux"),
            json!("10m"),
            json!("f"),
            json!("fluentd"),
            json!("app=fluentd")
        ]
    );
    let job = json!({
        "metadata": {"name": "pi", "creationTimestamp": ago(300)},
        "spec": {"completions": 1, "parallelism": 1,
                 "selector": {"matchLabels": {"batch.kubernetes.io/controller-uid": "u1"}},
                 "template": {"spec": {"containers": [{"name": "pi", "image": "perl"}]}}},
        "status": {"succeeded": 1, "startTime": ago(290), "completionTime": ago(260),
                   "conditions": [{"type": "SuccessCriteriaMet", "status": "True"},
                                  {"type": "Complete", "status": "True"}]}
    });
    assert_eq!(
        cells("batch", "jobs", job),
        [
            json!("pi"),
            json!("Complete"),
            json!("1/1"),
            json!("30s"),
            json!("5m"),
            json!("pi"),
            json!("perl"),
            json!("batch.kubernetes.io/controller-uid=u1")
        ]
    );
    let running_job = json!({
        "metadata": {"name": "work", "creationTimestamp": ago(700)},
        "spec": {"parallelism": 3, "template": {"spec": {"containers": []}}},
        "status": {"startTime": ago(580), "succeeded": 0}
    });
    assert_eq!(
        cells("batch", "jobs", running_job),
        [
            json!("work"),
            json!("Running"),
            json!("0/1 of 3"),
            json!("9m40s"),
            json!("11m"),
            json!(""),
            json!(""),
            json!("<none>")
        ]
    );
    let cj = json!({
        "metadata": {"name": "nightly", "creationTimestamp": ago(86400 * 10)},
        "spec": {"schedule": "0 3 * * *", "suspend": false,
                 "jobTemplate": {"spec": {"template": {"spec": {"containers": [{"name": "b", "image": "backup"}]}}}}},
        "status": {"active": [{"name": "nightly-1"}], "lastScheduleTime": ago(3600 * 5)}
    });
    assert_eq!(
        cells("batch", "cronjobs", cj),
        [
            json!("nightly"),
            json!("0 3 * * *"),
            json!("<none>"),
            json!("False"),
            json!(1),
            json!("5h"),
            json!("10d"),
            json!("b"),
            json!("backup"),
            json!("<none>")
        ]
    );
    let cr = json!({
        "metadata": {"name": "fluentd-6b9", "creationTimestamp": ago(600),
                     "ownerReferences": [{"apiVersion": "apps/v1", "kind": "DaemonSet", "name": "fluentd", "controller": true, "uid": "x"}]},
        "revision": 2
    });
    assert_eq!(
        cells("apps", "controllerrevisions", cr),
        [
            json!("fluentd-6b9"),
            json!("daemonset.apps/fluentd"),
            json!(2),
            json!("10m")
        ]
    );
}

fn service(name: &str, spec: Value, status: Value) -> Value {
    json!({
        "metadata": {"name": name, "namespace": "default", "creationTimestamp": ago(400 * 86400)},
        "spec": spec,
        "status": status
    })
}

#[test]
fn service_rows() {
    let cases: Vec<(Value, Vec<Value>)> = vec![
        (
            service(
                "kube-dns",
                json!({"type": "ClusterIP", "clusterIP": "10.96.0.10", "clusterIPs": ["10.96.0.10"],
                       "ports": [{"name": "dns", "port": 53, "protocol": "UDP"},
                                 {"name": "dns-tcp", "port": 53, "protocol": "TCP"}],
                       "selector": {"k8s-app": "kube-dns"}}),
                json!({}),
            ),
            vec![
                json!("kube-dns"),
                json!("ClusterIP"),
                json!("10.96.0.10"),
                json!("<none>"),
                json!("53/UDP,53/TCP"),
                json!("400d"),
                json!("k8s-app=kube-dns"),
            ],
        ),
        (
            service(
                "web",
                json!({"type": "NodePort", "clusterIPs": ["10.96.3.4"],
                       "ports": [{"port": 80, "nodePort": 30080, "protocol": "TCP"}],
                       "selector": {"app": "web", "tier": "fe"}}),
                json!({}),
            ),
            vec![
                json!("web"),
                json!("NodePort"),
                json!("10.96.3.4"),
                json!("<none>"),
                json!("80:30080/TCP"),
                json!("400d"),
                json!("app=web,tier=fe"),
            ],
        ),
        (
            service(
                "lb-pending",
                json!({"type": "LoadBalancer", "clusterIPs": ["10.96.5.5"],
                       "ports": [{"port": 443, "nodePort": 31443, "protocol": "TCP"}]}),
                json!({"loadBalancer": {}}),
            ),
            vec![
                json!("lb-pending"),
                json!("LoadBalancer"),
                json!("10.96.5.5"),
                json!("<pending>"),
                json!("443:31443/TCP"),
                json!("400d"),
                json!("<none>"),
            ],
        ),
        (
            service(
                "lb",
                json!({"type": "LoadBalancer", "clusterIPs": ["10.96.5.6"],
                       "externalIPs": ["198.51.100.1"],
                       "ports": [{"port": 80, "nodePort": 30001, "protocol": "TCP"}]}),
                json!({"loadBalancer": {"ingress": [{"hostname": "lb.example.com"},
                                                     {"ip": "203.0.113.10"}]}}),
            ),
            vec![
                json!("lb"),
                json!("LoadBalancer"),
                json!("10.96.5.6"),
                json!("203.0.113.10,lb.example.com,198.51.100.1"),
                json!("80:30001/TCP"),
                json!("400d"),
                json!("<none>"),
            ],
        ),
        (
            service(
                "headless",
                json!({"type": "ClusterIP", "clusterIP": "None", "clusterIPs": ["None"],
                       "externalIPs": ["192.0.2.1", "192.0.2.2"]}),
                json!({}),
            ),
            vec![
                json!("headless"),
                json!("ClusterIP"),
                json!("None"),
                json!("192.0.2.1,192.0.2.2"),
                json!("<none>"),
                json!("400d"),
                json!("<none>"),
            ],
        ),
        (
            service(
                "ext",
                json!({"type": "ExternalName", "externalName": "db.example.com",
                       "ports": [{"port": 5432}]}),
                json!({}),
            ),
            vec![
                json!("ext"),
                json!("ExternalName"),
                json!("<none>"),
                json!("db.example.com"),
                json!("5432/TCP"),
                json!("400d"),
                json!("<none>"),
            ],
        ),
    ];
    for (obj, want) in cases {
        let name = obj["metadata"]["name"].clone();
        assert_eq!(cells("", "services", obj), want, "{name}");
    }
}

fn node(name: &str, labels: Value, spec: Value, conditions: Value) -> Value {
    json!({
        "metadata": {"name": name, "labels": labels, "creationTimestamp": ago(30 * 86400)},
        "spec": spec,
        "status": {
            "conditions": conditions,
            "addresses": [{"type": "Hostname", "address": name}, {"type": "InternalIP", "address": "192.168.1.10"}],
            "nodeInfo": {"kubeletVersion": "v1.32.4", "osImage": "Ubuntu 24.04 LTS",
                         "kernelVersion": "6.8.0", "containerRuntimeVersion": "containerd://1.7.24"}
        }
    })
}

#[test]
fn node_rows() {
    let ready =
        json!([{"type": "MemoryPressure", "status": "False"}, {"type": "Ready", "status": "True"}]);
    let not_ready = json!([{"type": "Ready", "status": "False"}]);
    let cases: Vec<(Value, Vec<Value>)> = vec![
        (
            node(
                "cp-1",
                json!({"node-role.kubernetes.io/control-plane": "", "node-role.kubernetes.io/etcd": "",
                       "kubernetes.io/hostname": "cp-1"}),
                json!({}),
                ready.clone(),
            ),
            vec![
                json!("cp-1"),
                json!("Ready"),
                json!("control-plane,etcd"),
                json!("30d"),
                json!("v1.32.4"),
                json!("192.168.1.10"),
                json!("<none>"),
                json!("Ubuntu 24.04 LTS"),
                json!("6.8.0"),
                json!("containerd://1.7.24"),
            ],
        ),
        (
            node("worker-1", json!({}), json!({}), not_ready),
            vec![
                json!("worker-1"),
                json!("NotReady"),
                json!("<none>"),
                json!("30d"),
                json!("v1.32.4"),
                json!("192.168.1.10"),
                json!("<none>"),
                json!("Ubuntu 24.04 LTS"),
                json!("6.8.0"),
                json!("containerd://1.7.24"),
            ],
        ),
        (
            node(
                "worker-2",
                json!({"kubernetes.io/role": "worker", "node-role.kubernetes.io/worker": ""}),
                json!({"unschedulable": true}),
                ready.clone(),
            ),
            vec![
                json!("worker-2"),
                json!("Ready,SchedulingDisabled"),
                json!("worker"),
                json!("30d"),
                json!("v1.32.4"),
                json!("192.168.1.10"),
                json!("<none>"),
                json!("Ubuntu 24.04 LTS"),
                json!("6.8.0"),
                json!("containerd://1.7.24"),
            ],
        ),
        (
            json!({"metadata": {"name": "bare"}, "status": {"addresses": [{"type": "ExternalIP", "address": "203.0.113.9"}]}}),
            vec![
                json!("bare"),
                json!("Unknown"),
                json!("<none>"),
                json!("<unknown>"),
                json!(""),
                json!("<none>"),
                json!("203.0.113.9"),
                json!("<unknown>"),
                json!("<unknown>"),
                json!("<unknown>"),
            ],
        ),
    ];
    for (obj, want) in cases {
        let name = obj["metadata"]["name"].clone();
        assert_eq!(cells("", "nodes", obj), want, "{name}");
    }
}

#[test]
fn event_rows() {
    let core = json!({
        "metadata": {"name": "web-1.17a", "namespace": "default"},
        "involvedObject": {"kind": "Pod", "name": "web-1", "namespace": "default", "fieldPath": "spec.containers{web}"},
        "reason": "BackOff",
        "message": "Back-off restarting failed container\n",
        "source": {"component": "kubelet", "host": "node-1"},
        "firstTimestamp": ago(600),
        "lastTimestamp": ago(60),
        "count": 3,
        "type": "Warning"
    });
    assert_eq!(
        cells("", "events", core),
        [
            json!("60s"),
            json!("Warning"),
            json!("BackOff"),
            json!("pod/web-1"),
            json!("spec.containers{web}"),
            json!("kubelet, node-1"),
            json!("Back-off restarting failed container"),
            json!("10m"),
            json!(3),
            json!("web-1.17a")
        ]
    );
    let singleton = json!({
        "metadata": {"name": "n.1", "namespace": "default"},
        "involvedObject": {"kind": "Node", "name": "n"},
        "reason": "Starting",
        "message": "Starting kubelet.",
        "eventTime": "2023-11-14T22:12:20.000000Z",
        "reportingComponent": "kubelet",
        "reportingInstance": "n",
        "type": "Normal"
    });
    assert_eq!(
        cells("", "events", singleton),
        [
            json!("60s"),
            json!("Normal"),
            json!("Starting"),
            json!("node/n"),
            json!(""),
            json!("kubelet, n"),
            json!("Starting kubelet."),
            json!("60s"),
            json!(1),
            json!("n.1")
        ]
    );
    let v1 = json!({
        "metadata": {"name": "web-1.17b", "namespace": "default"},
        "regarding": {"kind": "Pod", "name": "web-1", "namespace": "default"},
        "reason": "Scheduled",
        "note": "Successfully assigned default/web-1 to node-1",
        "eventTime": ago(300),
        "series": {"count": 4, "lastObservedTime": ago(20)},
        "reportingController": "default-scheduler",
        "reportingInstance": "default-scheduler-cp-1",
        "action": "Binding",
        "type": "Normal"
    });
    assert_eq!(
        cells("events.k8s.io", "events", v1),
        [
            json!("20s"),
            json!("Normal"),
            json!("Scheduled"),
            json!("pod/web-1"),
            json!(""),
            json!("default-scheduler, default-scheduler-cp-1"),
            json!("Successfully assigned default/web-1 to node-1"),
            json!("5m"),
            json!(4),
            json!("web-1.17b")
        ]
    );
}

#[test]
fn simple_core_rows() {
    let ns = json!({"metadata": {"name": "default", "creationTimestamp": ago(86400 * 3)}, "status": {"phase": "Active"}});
    assert_eq!(
        cells("", "namespaces", ns),
        [json!("default"), json!("Active"), json!("3d")]
    );
    let cm = json!({"metadata": {"name": "kube-root-ca.crt", "creationTimestamp": ago(7)},
                    "data": {"ca.crt": "x", "b": "y"}, "binaryData": {"c": "AA=="}});
    assert_eq!(
        cells("", "configmaps", cm),
        [json!("kube-root-ca.crt"), json!(3), json!("7s")]
    );
    let secret = json!({"metadata": {"name": "tls", "creationTimestamp": ago(125)},
                        "type": "kubernetes.io/tls", "data": {"tls.crt": "", "tls.key": ""},
                        "stringData": {"tls.key": "k", "extra": "e"}});
    assert_eq!(
        cells("", "secrets", secret),
        [
            json!("tls"),
            json!("kubernetes.io/tls"),
            json!(3),
            json!("2m5s")
        ]
    );
    let sa = json!({"metadata": {"name": "default"}, "secrets": [{"name": "a"}]});
    assert_eq!(
        cells("", "serviceaccounts", sa),
        [json!("default"), json!(1), json!("<unknown>")]
    );
    let ep = json!({"metadata": {"name": "web", "creationTimestamp": ago(5)},
                    "subsets": [{"addresses": [{"ip": "10.0.0.1"}, {"ip": "10.0.0.2"}, {"ip": "10.0.0.3"}],
                                 "ports": [{"port": 80}, {"port": 443}]}]});
    assert_eq!(
        cells("", "endpoints", ep),
        [
            json!("web"),
            json!("10.0.0.1:80,10.0.0.2:80,10.0.0.3:80 + 3 more..."),
            json!("5s")
        ]
    );
    let empty_ep = json!({"metadata": {"name": "none", "creationTimestamp": ago(5)}});
    assert_eq!(
        cells("", "endpoints", empty_ep),
        [json!("none"), json!("<none>"), json!("5s")]
    );
    let pv = json!({
        "metadata": {"name": "pv-1", "creationTimestamp": ago(60)},
        "spec": {"capacity": {"storage": "10Gi"}, "accessModes": ["ReadWriteMany", "ReadWriteOnce"],
                 "persistentVolumeReclaimPolicy": "Retain", "storageClassName": "standard",
                 "claimRef": {"namespace": "default", "name": "data"}},
        "status": {"phase": "Bound"}
    });
    assert_eq!(
        cells("", "persistentvolumes", pv),
        [
            json!("pv-1"),
            json!("10Gi"),
            json!("RWO,RWX"),
            json!("Retain"),
            json!("Bound"),
            json!("default/data"),
            json!("standard"),
            json!("<unset>"),
            json!(""),
            json!("60s"),
            json!("<unset>")
        ]
    );
    let pvc = json!({
        "metadata": {"name": "data", "creationTimestamp": ago(60)},
        "spec": {"volumeName": "pv-1", "storageClassName": "standard", "volumeMode": "Filesystem"},
        "status": {"phase": "Bound", "capacity": {"storage": "10Gi"}, "accessModes": ["ReadWriteOnce"]}
    });
    assert_eq!(
        cells("", "persistentvolumeclaims", pvc),
        [
            json!("data"),
            json!("Bound"),
            json!("pv-1"),
            json!("10Gi"),
            json!("RWO"),
            json!("standard"),
            json!("<unset>"),
            json!("60s"),
            json!("Filesystem")
        ]
    );
    let quota = json!({
        "metadata": {"name": "q", "creationTimestamp": ago(60)},
        "status": {"hard": {"pods": "10", "requests.cpu": "4", "limits.memory": "8Gi"},
                   "used": {"pods": "3", "limits.memory": "1Gi"}}
    });
    assert_eq!(
        cells("", "resourcequotas", quota),
        [
            json!("q"),
            json!("pods: 3/10, requests.cpu: 0/4"),
            json!("limits.memory: 1Gi/8Gi"),
            json!("60s")
        ]
    );
}

#[test]
fn other_group_rows() {
    let lease = json!({"metadata": {"name": "kube-scheduler", "creationTimestamp": ago(3700)},
                       "spec": {"holderIdentity": "cp-1_abc"}});
    assert_eq!(
        cells("coordination.k8s.io", "leases", lease),
        [json!("kube-scheduler"), json!("cp-1_abc"), json!("61m")]
    );
    let slice = json!({"metadata": {"name": "web-x7", "creationTimestamp": ago(60)},
                       "addressType": "IPv4",
                       "ports": [{"name": "http", "port": 80}, {"name": "named"}],
                       "endpoints": [{"addresses": ["10.0.0.1"]}, {"addresses": ["10.0.0.2"]}]});
    assert_eq!(
        cells("discovery.k8s.io", "endpointslices", slice),
        [
            json!("web-x7"),
            json!("IPv4"),
            json!("80,named"),
            json!("10.0.0.1,10.0.0.2"),
            json!("60s")
        ]
    );
    let empty_slice = json!({"metadata": {"name": "e"}, "addressType": "IPv6"});
    assert_eq!(
        cells("discovery.k8s.io", "endpointslices", empty_slice),
        [
            json!("e"),
            json!("IPv6"),
            json!("<unset>"),
            json!("<unset>"),
            json!("<unknown>")
        ]
    );
    let ing = json!({"metadata": {"name": "web", "creationTimestamp": ago(60)},
                     "spec": {"ingressClassName": "nginx",
                              "rules": [{"host": "a.example.com"}, {"host": "b.example.com"}],
                              "tls": [{"hosts": ["a.example.com"]}]},
                     "status": {"loadBalancer": {"ingress": [{"ip": "203.0.113.1"}]}}});
    assert_eq!(
        cells("networking.k8s.io", "ingresses", ing),
        [
            json!("web"),
            json!("nginx"),
            json!("a.example.com,b.example.com"),
            json!("203.0.113.1"),
            json!("80, 443"),
            json!("60s")
        ]
    );
    let np = json!({"metadata": {"name": "deny", "creationTimestamp": ago(60)}, "spec": {"podSelector": {}}});
    assert_eq!(
        cells("networking.k8s.io", "networkpolicies", np),
        [json!("deny"), json!("<none>"), json!("60s")]
    );
    let pc = json!({"metadata": {"name": "system-cluster-critical", "creationTimestamp": ago(60)},
                    "value": 2000000000, "globalDefault": false, "preemptionPolicy": "PreemptLowerPriority"});
    assert_eq!(
        cells("scheduling.k8s.io", "priorityclasses", pc),
        [
            json!("system-cluster-critical"),
            json!(2_000_000_000),
            json!(false),
            json!("60s"),
            json!("PreemptLowerPriority")
        ]
    );
    let sc = json!({"metadata": {"name": "standard", "creationTimestamp": ago(60),
                                 "annotations": {"storageclass.kubernetes.io/is-default-class": "true"}},
                    "provisioner": "rancher.io/local-path", "volumeBindingMode": "WaitForFirstConsumer"});
    assert_eq!(
        cells("storage.k8s.io", "storageclasses", sc),
        [
            json!("standard (default)"),
            json!("rancher.io/local-path"),
            json!("Delete"),
            json!("WaitForFirstConsumer"),
            json!(false),
            json!("60s")
        ]
    );
    let pdb = json!({"metadata": {"name": "web", "creationTimestamp": ago(60)},
                     "spec": {"minAvailable": 2}, "status": {"disruptionsAllowed": 1}});
    assert_eq!(
        cells("policy", "poddisruptionbudgets", pdb),
        [
            json!("web"),
            json!("2"),
            json!("N/A"),
            json!(1),
            json!("60s")
        ]
    );
    let rb = json!({"metadata": {"name": "admins", "creationTimestamp": ago(60)},
                    "roleRef": {"kind": "ClusterRole", "name": "admin", "apiGroup": "rbac.authorization.k8s.io"},
                    "subjects": [{"kind": "User", "name": "alice"}, {"kind": "Group", "name": "ops"},
                                 {"kind": "ServiceAccount", "name": "ci", "namespace": "build"},
                                 {"kind": "User", "name": "bob"}]});
    assert_eq!(
        cells("rbac.authorization.k8s.io", "rolebindings", rb.clone()),
        [
            json!("admins"),
            json!("ClusterRole/admin"),
            json!("60s"),
            json!("alice, bob"),
            json!("ops"),
            json!("build/ci")
        ]
    );
    assert_eq!(
        cells("rbac.authorization.k8s.io", "clusterrolebindings", rb).len(),
        6
    );
}

#[test]
fn default_table() {
    let role = json!({"metadata": {"name": "admin", "creationTimestamp": ago(300)}});
    assert_eq!(
        cells("rbac.authorization.k8s.io", "roles", role),
        [json!("admin"), json!("2023-11-14T22:08:20Z")]
    );
    let t = table("", "limitranges", &[json!({"metadata": {"name": "lr"}})]);
    assert_eq!(t["columnDefinitions"][1]["type"], "date");
    assert_eq!(t["rows"][0]["cells"], json!(["lr", "0001-01-01T00:00:00Z"]));
}
