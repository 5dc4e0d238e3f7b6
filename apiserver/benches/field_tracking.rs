//! The cost of `metadata.managedFields` tracking (`apply::track_update`), which runs on every
//! write: a pod create, and a pod update (image changed, a label removed) with a create entry
//! and a kubelet status entry stored.
//!
//! `cargo bench -p apiserver --bench field_tracking [-- ROUNDS]` (default 200) prints the
//! wall time per call. For repeatable figures count instructions instead: run the built bench
//! binary under `valgrind --tool=callgrind --toggle-collect='*track_update*'` once with
//! ROUNDS 0 and once with 200, and divide the difference by 200 (that leaves out the setup's
//! tracked writes and the first call's schema loading).

use std::time::Instant;

use apiserver::apply::track_update;
use apiserver::resource::Resource;
use serde_json::{json, Value};

fn pod() -> Value {
    json!({
        "apiVersion": "v1", "kind": "Pod",
        "metadata": {
            "name": "web-0", "generateName": "web-", "namespace": "default", "uid": "6b1c2a5e",
            "resourceVersion": "41", "creationTimestamp": "2020-01-01T00:00:00Z",
            "labels": {"app": "web", "tier": "frontend"},
            "annotations": {"note": "first"},
            "ownerReferences": [{"apiVersion": "apps/v1", "kind": "ReplicaSet", "name": "web-5d4f",
                                 "uid": "0f3e", "controller": true, "blockOwnerDeletion": true}]
        },
        "spec": {
            "containers": [{
                "name": "app", "image": "nginx:1.27",
                "ports": [{"containerPort": 80, "name": "http"}],
                "env": [{"name": "MODE", "value": "prod"}],
                "volumeMounts": [{"name": "data", "mountPath": "/data"}],
                "resources": {"limits": {"cpu": "500m", "memory": "128Mi"}},
                "imagePullPolicy": "IfNotPresent",
                "terminationMessagePath": "/dev/termination-log",
                "terminationMessagePolicy": "File"
            }],
            "volumes": [{"name": "data", "emptyDir": {}}],
            "restartPolicy": "Always", "dnsPolicy": "ClusterFirst",
            "terminationGracePeriodSeconds": 30, "schedulerName": "default-scheduler",
            "securityContext": {}, "priority": 0, "enableServiceLinks": true
        },
        "status": {"phase": "Pending", "qosClass": "Burstable"}
    })
}

fn tracked(
    res: &Resource,
    sub: Option<&str>,
    manager: &str,
    old: Option<&Value>,
    new: &Value,
) -> Value {
    let mut out = new.clone();
    track_update(res, sub, manager, old, &mut out);
    out
}

fn per_call(rounds: usize, mut call: impl FnMut()) -> f64 {
    let start = Instant::now();
    for _ in 0..rounds {
        call();
    }
    start.elapsed().as_secs_f64() * 1e6 / rounds.max(1) as f64
}

fn main() {
    let rounds: usize = std::env::args()
        .skip(1)
        .find_map(|a| a.parse().ok())
        .unwrap_or(200);
    let pods = Resource {
        info: api_types::resources::find("", "v1", "pods").expect("pods are served"),
        namespace: Some("default".into()),
    };
    let pod = pod();
    // Setup, also loading the schemas.
    let created = tracked(&pods, None, "kubectl-create", None, &pod);
    let mut running = created.clone();
    running["status"]["phase"] = json!("Running");
    running["status"]["podIP"] = json!("10.244.1.7");
    let old = tracked(&pods, Some("status"), "kubelet", Some(&created), &running);
    let mut edited = old.clone();
    if let Some(labels) = edited
        .pointer_mut("/metadata/labels")
        .and_then(Value::as_object_mut)
    {
        labels.remove("tier");
    }
    edited["spec"]["containers"][0]["image"] = json!("nginx:1.28");

    let create = per_call(rounds, || {
        let out = tracked(&pods, None, "kubectl-create", None, &pod);
        assert!(out.pointer("/metadata/managedFields").is_some());
    });
    let update = per_call(rounds, || {
        let out = tracked(&pods, None, "kubectl-edit", Some(&old), &edited);
        assert!(out.pointer("/metadata/managedFields").is_some());
    });
    println!("track_update, {rounds} rounds: pod create {create:.1} µs/call, pod update {update:.1} µs/call");
}
