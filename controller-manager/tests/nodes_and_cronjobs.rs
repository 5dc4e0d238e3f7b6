//! The node lifecycle, taint eviction, node IPAM and CronJob controllers against a real
//! in-process API server. Nodes are simulated by the test: it registers them, renews their
//! Leases while they are "alive", binds pods to the node it chooses and reports them running.

use std::collections::HashSet;
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use controller_manager::controllers::cronjob::ManualClock;
use e2e::{Backend, Cluster};
use futures::StreamExt;
use k8s_openapi::api::batch::v1::{CronJob, Job};
use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::api::core::v1::{Event, Node, Pod};
use k8s_openapi::jiff::{SignedDuration, Timestamp};
use kube::api::{Api, DeleteParams, ListParams, Patch, PatchParams, PostParams};
use kube::runtime::{watcher, WatchStreamExt};
use kube::{Client, ResourceExt};
use parking_lot::Mutex;
use serde_json::json;
use tokio::task::JoinHandle;

/// How long any wait may take before the test is declared hung (a hang detector, not a
/// timing assertion).
const HANG: Duration = Duration::from_secs(90);

fn client(c: &Cluster) -> Client {
    let config = kube::Config::new(c.url().parse().expect("url"));
    Client::try_from(config).expect("client")
}

/// Aborts a background task when dropped, so a failing test leaves nothing running.
struct Task(JoinHandle<()>);

impl Drop for Task {
    fn drop(&mut self) {
        self.0.abort();
    }
}

fn start_manager(config: controller_manager::Config) -> Task {
    Task(tokio::spawn(async move {
        if let Err(e) = controller_manager::run(config, std::future::pending(), |_| {}).await {
            panic!("controller manager failed: {e}");
        }
    }))
}

/// Polls `check` until it returns `Some`, failing the test after [`HANG`].
async fn eventually<T, F, Fut>(what: &str, mut check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Option<T>>,
{
    let deadline = tokio::time::Instant::now() + HANG;
    loop {
        if let Some(v) = check().await {
            return v;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "timed out waiting for {what}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

fn apply(c: &Cluster, yaml: &str) {
    tokio::task::block_in_place(|| c.apply(yaml, &[]));
}

async fn create_node(client: &Client, name: &str) {
    let nodes: Api<Node> = Api::all(client.clone());
    let node = serde_json::from_value(json!({
        "apiVersion": "v1", "kind": "Node", "metadata": {"name": name},
    }))
    .expect("node");
    nodes
        .create(&PostParams::default(), &node)
        .await
        .expect("create node");
}

/// Posts `Ready=True` with a fresh heartbeat, as a node agent does.
async fn post_ready(client: &Client, name: &str) {
    let nodes: Api<Node> = Api::all(client.clone());
    let now = Timestamp::now().to_string();
    let status = json!({"status": {"conditions": [{
        "type": "Ready", "status": "True", "reason": "KubeletReady",
        "message": "kubelet is posting ready status",
        "lastHeartbeatTime": now, "lastTransitionTime": now,
    }]}});
    nodes
        .patch_status(name, &PatchParams::default(), &Patch::Merge(status))
        .await
        .expect("node status");
}

async fn events(client: &Client, reason: &str, object: &str) -> Vec<Event> {
    let api: Api<Event> = Api::all(client.clone());
    let list = api.list(&ListParams::default()).await.expect("events");
    list.items
        .into_iter()
        .filter(|e| e.reason.as_deref() == Some(reason))
        .filter(|e| e.involved_object.name.as_deref() == Some(object))
        .collect()
}

/// Renews the `kube-node-lease` Lease of every node in `alive` twice a second.
fn heartbeats(client: &Client, alive: Arc<Mutex<HashSet<String>>>) -> Task {
    let leases: Api<Lease> = Api::namespaced(client.clone(), "kube-node-lease");
    Task(tokio::spawn(async move {
        loop {
            let names: Vec<String> = alive.lock().iter().cloned().collect();
            for name in names {
                let now = Timestamp::now().to_string();
                let lease = json!({
                    "apiVersion": "coordination.k8s.io/v1", "kind": "Lease",
                    "metadata": {"name": name, "namespace": "kube-node-lease"},
                    "spec": {"holderIdentity": name, "leaseDurationSeconds": 40, "renewTime": now},
                });
                let patched = leases
                    .patch(&name, &PatchParams::default(), &Patch::Merge(&lease))
                    .await;
                if patched.is_err() {
                    if let Ok(l) = serde_json::from_value::<Lease>(lease) {
                        let _ = leases.create(&PostParams::default(), &l).await;
                    }
                }
            }
            tokio::time::sleep(Duration::from_millis(500)).await;
        }
    }))
}

/// Binds unbound pods to the node named in `target`, reports bound pods of live nodes
/// Running and Ready, and finishes graceful deletions on live nodes only (a dead node's
/// kubelet is not there to do it).
fn pod_simulator(
    client: &Client,
    target: Arc<Mutex<String>>,
    alive: Arc<Mutex<HashSet<String>>>,
) -> Task {
    let client = client.clone();
    Task(tokio::spawn(async move {
        let all: Api<Pod> = Api::all(client.clone());
        let mut events = watcher(all, watcher::Config::default())
            .default_backoff()
            .applied_objects()
            .boxed();
        while let Some(ev) = events.next().await {
            let Ok(pod) = ev else { continue };
            let ns = pod.namespace().unwrap_or_default();
            let name = pod.name_any();
            let api: Api<Pod> = Api::namespaced(client.clone(), &ns);
            let node = pod
                .spec
                .as_ref()
                .and_then(|s| s.node_name.clone())
                .unwrap_or_default();
            if node.is_empty() {
                let to = target.lock().clone();
                let binding = json!({
                    "apiVersion": "v1", "kind": "Binding",
                    "metadata": {"name": name, "namespace": ns},
                    "target": {"apiVersion": "v1", "kind": "Node", "name": to},
                });
                let _ = api
                    .create_subresource::<_, serde_json::Value>(
                        "binding",
                        &name,
                        &PostParams::default(),
                        &binding,
                    )
                    .await;
                continue;
            }
            if !alive.lock().contains(&node) {
                continue;
            }
            if pod.metadata.deletion_timestamp.is_some() {
                let _ = api
                    .delete(&name, &DeleteParams::default().grace_period(0))
                    .await;
                continue;
            }
            let phase = pod.status.as_ref().and_then(|s| s.phase.clone());
            if let Some(code) = pod.labels().get("sim-exit") {
                if matches!(phase.as_deref(), Some("Succeeded" | "Failed")) {
                    continue;
                }
                let phase = if code == "0" { "Succeeded" } else { "Failed" };
                let _ = api
                    .patch_status(
                        &name,
                        &PatchParams::default(),
                        &Patch::Merge(json!({"status": {"phase": phase}})),
                    )
                    .await;
                continue;
            }
            if phase.as_deref() != Some("Running") {
                let now = Timestamp::now().to_string();
                let cond =
                    |t: &str| json!({"type": t, "status": "True", "lastTransitionTime": now});
                let status = json!({"status": {
                    "phase": "Running", "podIP": "10.244.0.9", "startTime": now,
                    "conditions": [cond("PodScheduled"), cond("Ready")],
                }});
                let _ = api
                    .patch_status(&name, &PatchParams::default(), &Patch::Merge(status))
                    .await;
            }
        }
    }))
}

fn node_of(p: &Pod) -> String {
    p.spec
        .as_ref()
        .and_then(|s| s.node_name.clone())
        .unwrap_or_default()
}

fn running(p: &Pod) -> bool {
    p.status.as_ref().and_then(|s| s.phase.as_deref()) == Some("Running")
}

const RS: &str = r#"
apiVersion: apps/v1
kind: ReplicaSet
metadata:
  name: web
spec:
  replicas: 2
  selector:
    matchLabels:
      app: web
  template:
    metadata:
      labels:
        app: web
    spec:
      containers:
      - name: web
        image: nginx:1.27
"#;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_silent_node_goes_unknown_is_tainted_and_its_pods_move() {
    let c = Cluster::start(Backend::Embedded).await;
    let client = client(&c);
    let alive = Arc::new(Mutex::new(HashSet::from([
        "node-a".to_string(),
        "node-b".to_string(),
    ])));
    let target = Arc::new(Mutex::new("node-a".to_string()));
    for n in ["node-a", "node-b"] {
        create_node(&client, n).await;
        post_ready(&client, n).await;
    }
    let _beats = heartbeats(&client, alive.clone());
    let _sim = pod_simulator(&client, target.clone(), alive.clone());
    let mut config = controller_manager::Config::new(client.clone());
    config.nodes.monitor_period = Duration::from_millis(500);
    config.nodes.monitor_grace_period = Duration::from_secs(3);
    // Pods without an unreachable toleration leave at once (upstream's admission default
    // would keep them 300 s).
    config.nodes.default_unreachable_toleration_seconds = 0;
    let _cm = start_manager(config);
    apply(&c, RS);
    // Two bare pods: one tolerates the unreachable taint for good, one for 2 s.
    for (name, seconds) in [("tolerant", ""), ("patient", "\n    tolerationSeconds: 2")] {
        apply(
            &c,
            &format!(
                "apiVersion: v1\nkind: Pod\nmetadata:\n  name: {name}\nspec:\n  tolerations:\n  \
                 - key: node.kubernetes.io/unreachable\n    operator: Exists\n    effect: \
                 NoExecute{seconds}\n  containers:\n  - name: c\n    image: busybox:1.36\n"
            ),
        );
    }
    let pods: Api<Pod> = Api::namespaced(client.clone(), "default");
    for name in ["tolerant", "patient"] {
        eventually(&format!("{name} running on node-a"), || {
            let pods = pods.clone();
            async move {
                let p = pods.get(name).await.ok()?;
                (node_of(&p) == "node-a" && running(&p)).then_some(())
            }
        })
        .await;
    }
    let old: Vec<String> = eventually("2 pods running on node-a", || {
        let pods = pods.clone();
        async move {
            let list = pods
                .list(&ListParams::default().labels("app=web"))
                .await
                .ok()?;
            let on_a: Vec<String> = list
                .items
                .iter()
                .filter(|p| node_of(p) == "node-a" && running(p))
                .map(|p| p.name_any())
                .collect();
            (on_a.len() == 2).then_some(on_a)
        }
    })
    .await;
    // node-b stays healthy meanwhile: it must never be tainted.
    *target.lock() = "node-b".into();
    alive.lock().remove("node-a");

    let nodes: Api<Node> = Api::all(client.clone());
    let node = eventually("node-a Ready=Unknown with the unreachable taints", || {
        let nodes = nodes.clone();
        async move {
            let node = nodes.get("node-a").await.ok()?;
            let taints = node.spec.as_ref()?.taints.clone()?;
            let has = |effect: &str| {
                taints
                    .iter()
                    .any(|t| t.key == "node.kubernetes.io/unreachable" && t.effect == effect)
            };
            (has("NoExecute") && has("NoSchedule")).then_some(node)
        }
    })
    .await;
    let conditions = node
        .status
        .as_ref()
        .and_then(|s| s.conditions.clone())
        .unwrap_or_default();
    for t in ["Ready", "MemoryPressure", "DiskPressure", "PIDPressure"] {
        let cond = conditions
            .iter()
            .find(|c| c.type_ == t)
            .unwrap_or_else(|| panic!("{t} condition: {conditions:?}"));
        assert_eq!(cond.status, "Unknown", "{t}");
        assert_eq!(cond.reason.as_deref(), Some("NodeStatusUnknown"), "{t}");
        assert_eq!(
            cond.message.as_deref(),
            Some("Kubelet stopped posting node status."),
            "{t}"
        );
    }

    eventually("the pods of node-a evicted and replaced on node-b", || {
        let pods = pods.clone();
        let old = old.clone();
        async move {
            let list = pods
                .list(&ListParams::default().labels("app=web"))
                .await
                .ok()?;
            let evicted = list
                .items
                .iter()
                .filter(|p| old.contains(&p.name_any()))
                .all(|p| p.metadata.deletion_timestamp.is_some());
            let on_b = list
                .items
                .iter()
                .filter(|p| p.metadata.deletion_timestamp.is_none())
                .filter(|p| node_of(p) == "node-b" && running(p))
                .count();
            (evicted && on_b == 2).then_some(())
        }
    })
    .await;
    for name in &old {
        let ev = eventually("TaintManagerEviction events", || {
            let client = client.clone();
            async move {
                let evs = events(&client, "TaintManagerEviction", name).await;
                (!evs.is_empty()).then_some(evs)
            }
        })
        .await;
        assert_eq!(
            ev[0].message.as_deref(),
            Some(format!("Marking for deletion Pod default/{name}").as_str())
        );
    }
    // The evicted pods stay Terminating (no kubelet finishes them) and are marked not
    // ready, so Services stop routing to them.
    eventually("the pods of node-a marked Ready=False", || {
        let pods = pods.clone();
        let old = old.clone();
        async move {
            let list = pods
                .list(&ListParams::default().labels("app=web"))
                .await
                .ok()?;
            let not_ready = list
                .items
                .iter()
                .filter(|p| old.contains(&p.name_any()))
                .filter(|p| {
                    p.status
                        .as_ref()
                        .and_then(|s| s.conditions.as_ref())
                        .is_some_and(|cs| {
                            cs.iter().any(|c| c.type_ == "Ready" && c.status == "False")
                        })
                })
                .count();
            (not_ready == old.len()).then_some(())
        }
    })
    .await;
    assert!(
        !events(&client, "NodeNotReady", "node-a").await.is_empty(),
        "NodeNotReady event"
    );
    eventually("patient evicted once its tolerationSeconds ran out", || {
        let pods = pods.clone();
        async move {
            let p = pods.get("patient").await.ok()?;
            p.metadata.deletion_timestamp.is_some().then_some(())
        }
    })
    .await;
    let tolerant = pods.get("tolerant").await.expect("tolerant");
    assert!(
        tolerant.metadata.deletion_timestamp.is_none(),
        "a pod that tolerates the taint without tolerationSeconds stays"
    );
    let b = nodes.get("node-b").await.expect("node-b");
    assert!(
        b.spec.and_then(|s| s.taints).unwrap_or_default().is_empty(),
        "a healthy node is never tainted"
    );

    // node-a comes back: its taints go.
    alive.lock().insert("node-a".into());
    post_ready(&client, "node-a").await;
    eventually("node-a untainted once Ready again", || {
        let nodes = nodes.clone();
        async move {
            let node = nodes.get("node-a").await.ok()?;
            let taints = node.spec.and_then(|s| s.taints).unwrap_or_default();
            taints.is_empty().then_some(())
        }
    })
    .await;

    // A node that reports Ready=False itself (heartbeats still coming) gets the not-ready
    // taints, and loses them when it is Ready again.
    let not_ready = json!({"status": {"conditions": [{
        "type": "Ready", "status": "False", "reason": "KubeletNotReady",
        "message": "container runtime network not ready",
        "lastHeartbeatTime": Timestamp::now().to_string(),
        "lastTransitionTime": Timestamp::now().to_string(),
    }]}});
    nodes
        .patch_status("node-b", &PatchParams::default(), &Patch::Merge(not_ready))
        .await
        .expect("node-b not ready");
    eventually("node-b tainted not-ready", || {
        let nodes = nodes.clone();
        async move {
            let node = nodes.get("node-b").await.ok()?;
            let taints = node.spec.and_then(|s| s.taints).unwrap_or_default();
            let has = |effect: &str| {
                taints
                    .iter()
                    .any(|t| t.key == "node.kubernetes.io/not-ready" && t.effect == effect)
            };
            (has("NoSchedule") && has("NoExecute") && taints.len() == 2).then_some(())
        }
    })
    .await;
    post_ready(&client, "node-b").await;
    eventually("node-b untainted once Ready", || {
        let nodes = nodes.clone();
        async move {
            let node = nodes.get("node-b").await.ok()?;
            let taints = node.spec.and_then(|s| s.taints).unwrap_or_default();
            taints.is_empty().then_some(())
        }
    })
    .await;
}

async fn pod_cidr(nodes: &Api<Node>, name: &str) -> Option<String> {
    let node = nodes.get(name).await.ok()?;
    let spec = node.spec?;
    let cidr = spec.pod_cidr?;
    assert_eq!(
        spec.pod_cidrs,
        Some(vec![cidr.clone()]),
        "podCIDRs = [podCIDR]"
    );
    Some(cidr)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nodes_get_distinct_pod_cidrs_released_on_delete_and_kept_across_restarts() {
    let c = Cluster::start(Backend::Embedded).await;
    let client = client(&c);
    let mut config = controller_manager::Config::new(client.clone());
    // Room for exactly two nodes.
    config.nodes.cluster_cidr = "10.100.0.0/23".into();
    config.nodes.node_cidr_mask_size = 24;
    config.controllers = vec!["nodeipam".into()];
    let cm = start_manager(config.clone());
    let nodes: Api<Node> = Api::all(client.clone());
    create_node(&client, "x").await;
    create_node(&client, "y").await;
    let x = eventually("x gets a pod CIDR", || pod_cidr(&nodes, "x")).await;
    let y = eventually("y gets a pod CIDR", || pod_cidr(&nodes, "y")).await;
    assert_ne!(x, y);
    for cidr in [&x, &y] {
        assert!(
            cidr == "10.100.0.0/24" || cidr == "10.100.1.0/24",
            "inside the cluster CIDR: {cidr}"
        );
    }
    create_node(&client, "z").await;
    eventually("CIDRNotAvailable for z", || {
        let client = client.clone();
        async move { (!events(&client, "CIDRNotAvailable", "z").await.is_empty()).then_some(()) }
    })
    .await;
    assert_eq!(pod_cidr(&nodes, "z").await, None, "nothing left for z");

    nodes
        .delete("x", &DeleteParams::default())
        .await
        .expect("delete x");
    let z = eventually("z gets x's released CIDR", || pod_cidr(&nodes, "z")).await;
    assert_eq!(z, x);

    // A restarted manager rebuilds the used set from the Nodes: nothing is handed out twice.
    drop(cm);
    let _cm = start_manager(config);
    create_node(&client, "w").await;
    eventually("CIDRNotAvailable for w after the restart", || {
        let client = client.clone();
        async move { (!events(&client, "CIDRNotAvailable", "w").await.is_empty()).then_some(()) }
    })
    .await;
    assert_eq!(pod_cidr(&nodes, "w").await, None);
    assert_eq!(pod_cidr(&nodes, "y").await, Some(y));
    assert_eq!(pod_cidr(&nodes, "z").await, Some(z));
}

/// A `* * * * *` CronJob whose pods run forever, or exit with `exit`; `extra` is more
/// CronJob spec (indented two spaces).
fn cronjob(name: &str, policy: &str, exit: Option<&str>, extra: &str) -> String {
    let label = exit.map_or(String::new(), |e| {
        format!("            sim-exit: \"{e}\"\n")
    });
    format!(
        r#"
apiVersion: batch/v1
kind: CronJob
metadata:
  name: {name}
spec:
  schedule: "* * * * *"
  timeZone: "Etc/UTC"
  concurrencyPolicy: {policy}
  successfulJobsHistoryLimit: 2
{extra}  jobTemplate:
    metadata:
      labels:
        cron: {name}
    spec:
      backoffLimit: 0
      template:
        metadata:
          labels:
            cron: {name}
{label}        spec:
          restartPolicy: Never
          containers:
          - name: work
            image: busybox:1.36
"#
    )
}

async fn jobs_of(jobs: &Api<Job>, cron: &str) -> Vec<Job> {
    let list = jobs
        .list(&ListParams::default().labels(&format!("cron={cron}")))
        .await
        .expect("jobs");
    list.items
        .into_iter()
        .filter(|j| j.metadata.deletion_timestamp.is_none())
        .collect()
}

fn has_condition(j: &Job, type_: &str) -> bool {
    j.status
        .as_ref()
        .and_then(|s| s.conditions.as_ref())
        .is_some_and(|cs| cs.iter().any(|c| c.type_ == type_ && c.status == "True"))
}

fn complete(j: &Job) -> bool {
    has_condition(j, "Complete")
}

/// A manual clock one second past a minute boundary well after the test's CronJobs are
/// created: they all fire for that minute at once, and each later 60 s step crosses exactly
/// one more boundary.
fn test_clock() -> Arc<ManualClock> {
    let boundary = (Timestamp::now().as_second() / 60 + 2) * 60;
    let start = Timestamp::from_second(boundary + 1).expect("timestamp");
    Arc::new(ManualClock::new(start))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cronjobs_fire_on_schedule_forbid_overlap_and_prune_history() {
    let c = Cluster::start(Backend::Embedded).await;
    let client = client(&c);
    let alive = Arc::new(Mutex::new(HashSet::from(["node-a".to_string()])));
    let target = Arc::new(Mutex::new("node-a".to_string()));
    create_node(&client, "node-a").await;
    let _sim = pod_simulator(&client, target, alive);
    let clock = test_clock();
    let mut config = controller_manager::Config::new(client.clone());
    config.clock = clock.clone();
    let _cm = start_manager(config);
    apply(&c, &cronjob("forbid", "Forbid", None, ""));
    apply(&c, &cronjob("done", "Allow", Some("0"), ""));
    let jobs: Api<Job> = Api::namespaced(client.clone(), "default");
    let cronjobs: Api<CronJob> = Api::namespaced(client.clone(), "default");

    let mut finished_names = Vec::new();
    for minute in 0..4 {
        if minute > 0 {
            clock.advance(SignedDuration::from_secs(60));
        }
        let scheduled = clock.now_minute();
        let want = format!("done-{scheduled}");
        eventually(&format!("job {want} complete"), || {
            let jobs = jobs.clone();
            let want = want.clone();
            async move {
                let j = jobs.get(&want).await.ok()?;
                complete(&j).then_some(())
            }
        })
        .await;
        finished_names.push(want);
        if minute == 0 {
            let forbid = eventually("the forbid CronJob's first job, active", || {
                let cronjobs = cronjobs.clone();
                async move {
                    let cj = cronjobs.get("forbid").await.ok()?;
                    let st = cj.status?;
                    let active = st.active.unwrap_or_default();
                    (active.len() == 1 && st.last_schedule_time.is_some()).then_some(active)
                }
            })
            .await;
            assert_eq!(
                forbid[0].name.as_deref(),
                Some(format!("forbid-{scheduled}").as_str()),
                "named after the scheduled minute"
            );
            let job = jobs.get(&format!("forbid-{scheduled}")).await.expect("job");
            let owner = job.owner_references();
            assert_eq!(owner.len(), 1);
            assert_eq!(owner[0].kind, "CronJob");
            assert_eq!(owner[0].controller, Some(true));
            assert!(job
                .annotations()
                .contains_key("batch.kubernetes.io/cronjob-scheduled-timestamp"));
        }
        if minute == 1 {
            eventually("JobAlreadyActive for the forbid CronJob", || {
                let client = client.clone();
                async move {
                    (!events(&client, "JobAlreadyActive", "forbid")
                        .await
                        .is_empty())
                    .then_some(())
                }
            })
            .await;
        }
    }
    assert_eq!(
        jobs_of(&jobs, "forbid").await.len(),
        1,
        "Forbid never starts a second job while the first runs"
    );
    let kept = eventually("history pruned to the 2 newest successful jobs", || {
        let jobs = jobs.clone();
        async move {
            let mut names: Vec<String> = jobs_of(&jobs, "done")
                .await
                .iter()
                .map(|j| j.name_any())
                .collect();
            names.sort();
            (names.len() == 2).then_some(names)
        }
    })
    .await;
    assert_eq!(kept, finished_names[2..]);
    eventually("lastSuccessfulTime and no active jobs", || {
        let cronjobs = cronjobs.clone();
        async move {
            let st = cronjobs.get("done").await.ok()?.status?;
            (st.last_successful_time.is_some() && st.active.unwrap_or_default().is_empty())
                .then_some(())
        }
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cronjobs_replace_active_runs_stay_suspended_and_keep_one_failed_job() {
    let c = Cluster::start(Backend::Embedded).await;
    let client = client(&c);
    let alive = Arc::new(Mutex::new(HashSet::from(["node-a".to_string()])));
    let target = Arc::new(Mutex::new("node-a".to_string()));
    create_node(&client, "node-a").await;
    let _sim = pod_simulator(&client, target, alive);
    let clock = test_clock();
    let mut config = controller_manager::Config::new(client.clone());
    config.clock = clock.clone();
    let _cm = start_manager(config);
    apply(&c, &cronjob("replace", "Replace", None, ""));
    apply(&c, &cronjob("fail", "Allow", Some("1"), ""));
    apply(
        &c,
        &cronjob("paused", "Allow", Some("0"), "  suspend: true\n"),
    );
    let jobs: Api<Job> = Api::namespaced(client.clone(), "default");
    let cronjobs: Api<CronJob> = Api::namespaced(client.clone(), "default");
    let mut failed_names = Vec::new();
    for minute in 0..2 {
        if minute > 0 {
            clock.advance(SignedDuration::from_secs(60));
        }
        let m = clock.now_minute();
        let (replace, fail) = (format!("replace-{m}"), format!("fail-{m}"));
        eventually(&format!("{replace} is the only replace job"), || {
            let jobs = jobs.clone();
            let replace = replace.clone();
            async move {
                let names: Vec<String> = jobs_of(&jobs, "replace")
                    .await
                    .iter()
                    .map(|j| j.name_any())
                    .collect();
                (names == [replace]).then_some(())
            }
        })
        .await;
        eventually(&format!("{fail} failed"), || {
            let jobs = jobs.clone();
            let fail = fail.clone();
            async move { has_condition(&jobs.get(&fail).await.ok()?, "Failed").then_some(()) }
        })
        .await;
        failed_names.push(fail);
    }
    assert!(
        !events(&client, "SuccessfulDelete", "replace")
            .await
            .is_empty(),
        "Replace deletes the running job"
    );
    let kept = eventually("only the newest failed job kept", || {
        let jobs = jobs.clone();
        async move {
            let names: Vec<String> = jobs_of(&jobs, "fail")
                .await
                .iter()
                .map(|j| j.name_any())
                .collect();
            (names.len() == 1).then_some(names)
        }
    })
    .await;
    assert_eq!(kept, failed_names[1..]);
    assert!(jobs_of(&jobs, "paused").await.is_empty(), "suspended");
    let paused = cronjobs.get("paused").await.expect("paused");
    assert!(paused.status.and_then(|s| s.last_schedule_time).is_none());
}

/// The test's view of [`ManualClock`]: the current minute since the epoch, which is the
/// scheduled time of a `* * * * *` run and the suffix of its Job's name.
trait NowMinute {
    fn now_minute(&self) -> i64;
}

impl NowMinute for ManualClock {
    fn now_minute(&self) -> i64 {
        use controller_manager::controllers::cronjob::Clock;
        self.now().as_second().div_euclid(60)
    }
}
