//! The Job controller's deadline, Indexed mode, pod failure policy and suspension, and the
//! TTL-after-finished controller, against a real in-process API server with the real kubectl.
//! Pods are run by a simulated kubelet that decides each pod's outcome from its labels.

mod common;

use std::collections::{BTreeSet, HashMap, HashSet};

use common::{apply, client, eventually, kubectl, start_manager, Task};
use e2e::{Backend, Cluster};
use futures::StreamExt;
use k8s_openapi::api::batch::v1::Job;
use k8s_openapi::api::core::v1::Pod;
use kube::api::{Api, DeleteParams, ListParams, Patch, PatchParams, PostParams};
use kube::runtime::{watcher, WatchStreamExt};
use kube::{Client, ResourceExt};
use serde_json::json;

const INDEX: &str = "batch.kubernetes.io/job-completion-index";

/// A kubelet (and scheduler) for Job pods on one node, `sim-node`. A pod labelled
/// `sim-exit: "<code>"` runs to completion with that exit code in every container (Succeeded
/// for 0, else Failed); one labelled `sim-disrupt-first: "true"` is, for the first pod of its
/// Job, failed with a `DisruptionTarget` condition (as an eviction would leave it) and
/// otherwise succeeds; any other pod runs and is ready until deleted. Graceful deletions are
/// finished at once.
fn start_kubelet(c: &Cluster) -> Task {
    let client = client(c);
    Task::from(tokio::spawn(async move {
        let nodes: Api<k8s_openapi::api::core::v1::Node> = Api::all(client.clone());
        let node = json!({"apiVersion": "v1", "kind": "Node", "metadata": {"name": "sim-node"}});
        if let Ok(node) = serde_json::from_value(node) {
            let _ = nodes.create(&PostParams::default(), &node).await;
        }
        let all: Api<Pod> = Api::all(client.clone());
        let mut events = watcher(all, watcher::Config::default())
            .default_backoff()
            .applied_objects()
            .boxed();
        let mut disrupted: HashSet<String> = HashSet::new();
        // Each pod's outcome, decided once: a pod may be seen in several events before its
        // new phase shows, and must not be given another one.
        let mut outcomes: HashMap<String, (Option<i32>, bool)> = HashMap::new();
        while let Some(ev) = events.next().await {
            let Ok(pod) = ev else { continue };
            let ns = pod.namespace().unwrap_or_default();
            let name = pod.name_any();
            let api: Api<Pod> = Api::namespaced(client.clone(), &ns);
            if pod.metadata.deletion_timestamp.is_some() {
                let _ = api
                    .delete(&name, &DeleteParams::default().grace_period(0))
                    .await;
                continue;
            }
            if pod
                .spec
                .as_ref()
                .and_then(|s| s.node_name.as_ref())
                .is_none_or(|n| n.is_empty())
            {
                let binding = json!({
                    "apiVersion": "v1", "kind": "Binding",
                    "metadata": {"name": name, "namespace": ns},
                    "target": {"apiVersion": "v1", "kind": "Node", "name": "sim-node"},
                });
                if let Err(e) = api
                    .create_subresource::<_, serde_json::Value>(
                        "binding",
                        &name,
                        &PostParams::default(),
                        &binding,
                    )
                    .await
                {
                    eprintln!("sim: binding {ns}/{name}: {e}");
                }
                continue;
            }
            let phase = pod.status.as_ref().and_then(|s| s.phase.clone());
            if matches!(phase.as_deref(), Some("Succeeded" | "Failed" | "Running")) {
                continue;
            }
            let labels = pod.labels();
            let job = labels.get("job-name").cloned().unwrap_or_default();
            let now = k8s_openapi::jiff::Timestamp::now().to_string();
            let uid = pod.uid().unwrap_or_default();
            let (exit, disrupt) = *outcomes.entry(uid).or_insert_with(|| {
                if labels.get("sim-disrupt-first").map(String::as_str) == Some("true") {
                    if disrupted.insert(format!("{ns}/{job}")) {
                        (Some(137), true)
                    } else {
                        (Some(0), false)
                    }
                } else {
                    (
                        labels.get("sim-exit").and_then(|c| c.parse::<i32>().ok()),
                        false,
                    )
                }
            });
            let conditions: Vec<serde_json::Value> = disrupt
                .then(|| {
                    json!({"type": "DisruptionTarget", "status": "True",
                    "reason": "EvictionByEvictionAPI", "lastTransitionTime": now})
                })
                .into_iter()
                .collect();
            let containers: Vec<String> = pod
                .spec
                .as_ref()
                .map(|s| s.containers.iter().map(|c| c.name.clone()).collect())
                .unwrap_or_default();
            let status = match exit {
                Some(code) => json!({"status": {
                    "phase": if code == 0 { "Succeeded" } else { "Failed" },
                    "startTime": now,
                    "conditions": conditions,
                    "containerStatuses": containers.iter().map(|c| json!({
                        "name": c, "image": "busybox:1.36", "imageID": "", "ready": false,
                        "restartCount": 0,
                        "state": {"terminated": {"exitCode": code, "finishedAt": now}},
                    })).collect::<Vec<_>>(),
                }}),
                None => {
                    let cond =
                        |t: &str| json!({"type": t, "status": "True", "lastTransitionTime": now});
                    json!({"status": {
                        "phase": "Running",
                        "podIP": "10.244.0.9",
                        "hostIP": "10.0.0.1",
                        "startTime": now,
                        "conditions": [cond("PodScheduled"), cond("Initialized"),
                                       cond("ContainersReady"), cond("Ready")],
                    }})
                }
            };
            if let Err(e) = api
                .patch_status(&name, &PatchParams::default(), &Patch::Merge(status))
                .await
            {
                eprintln!("sim: status of {ns}/{name}: {e}");
            }
        }
    }))
}

/// A cluster with the kubelet simulator and a manager running the Job, TTL and garbage
/// collector controllers.
async fn setup() -> (Cluster, Client, Task, Task) {
    let c = Cluster::start(Backend::Embedded).await;
    let client = client(&c);
    let kubelet = start_kubelet(&c);
    let manager = start_manager(&c, &["job", "ttl-after-finished", "garbagecollector"]);
    (c, client, kubelet, manager)
}

/// The pods the Job `job` controls (by owner name), oldest first (to the second).
async fn pods_of(client: &Client, job: &str) -> Vec<Pod> {
    let pods: Api<Pod> = Api::namespaced(client.clone(), "default");
    let mut list: Vec<Pod> = pods
        .list(&ListParams::default())
        .await
        .expect("list pods")
        .items
        .into_iter()
        .filter(|p| {
            p.owner_references()
                .iter()
                .any(|r| r.kind == "Job" && r.name == job)
        })
        .collect();
    list.sort_by_key(|p| p.creation_timestamp());
    list
}

fn phase(p: &Pod) -> Option<&str> {
    p.status.as_ref()?.phase.as_deref()
}

/// The Job's condition of `type_` as (status, reason, message).
fn condition(job: &Job, type_: &str) -> Option<(String, String, String)> {
    job.status
        .as_ref()?
        .conditions
        .as_ref()?
        .iter()
        .find(|c| c.type_ == type_)
        .map(|c| {
            (
                c.status.clone(),
                c.reason.clone().unwrap_or_default(),
                c.message.clone().unwrap_or_default(),
            )
        })
}

fn wait_for(c: &Cluster, cond: &str, job: &str) {
    kubectl(
        c,
        &[
            "wait",
            &format!("--for=condition={cond}"),
            &format!("job/{job}"),
            "--timeout=90s",
        ],
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_indexed_job_runs_each_index_once_and_reports_completed_indexes() {
    let (c, client, _kubelet, _cm) = setup().await;
    apply(
        &c,
        r#"
apiVersion: batch/v1
kind: Job
metadata:
  name: idx
spec:
  completions: 3
  parallelism: 2
  completionMode: Indexed
  template:
    metadata:
      labels:
        sim-exit: "0"
    spec:
      restartPolicy: Never
      initContainers:
      - name: prepare
        image: busybox:1.36
      containers:
      - name: work
        image: busybox:1.36
"#,
    );
    wait_for(&c, "complete", "idx");
    let jobs: Api<Job> = Api::namespaced(client.clone(), "default");
    let st = jobs.get("idx").await.expect("job").status.expect("status");
    assert_eq!(st.completed_indexes.as_deref(), Some("0-2"));
    assert_eq!(st.succeeded, Some(3));
    let pods = pods_of(&client, "idx").await;
    assert_eq!(pods.len(), 3, "one pod per index: {pods:?}");
    let mut indexes = BTreeSet::new();
    for p in &pods {
        let index = p
            .annotations()
            .get(INDEX)
            .expect("index annotation")
            .clone();
        assert_eq!(p.labels().get(INDEX), Some(&index), "index label");
        assert!(
            p.name_any().starts_with(&format!("idx-{index}-")),
            "{}",
            p.name_any()
        );
        let spec = p.spec.as_ref().expect("spec");
        assert_eq!(
            spec.hostname.as_deref(),
            Some(format!("idx-{index}").as_str())
        );
        assert_eq!(spec.subdomain, None, "the template sets no subdomain");
        let containers = spec
            .containers
            .iter()
            .chain(spec.init_containers.iter().flatten());
        for container in containers {
            let env = container.env.as_ref().expect("env");
            let var = env
                .iter()
                .find(|e| e.name == "JOB_COMPLETION_INDEX")
                .expect("JOB_COMPLETION_INDEX");
            let path = var
                .value_from
                .as_ref()
                .and_then(|v| v.field_ref.as_ref())
                .map(|f| f.field_path.as_str());
            assert_eq!(path, Some(format!("metadata.labels['{INDEX}']").as_str()));
        }
        indexes.insert(index);
    }
    let want: BTreeSet<String> = ["0", "1", "2"].iter().map(|s| s.to_string()).collect();
    assert_eq!(indexes, want);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_job_past_its_active_deadline_fails_and_keeps_no_pods_running() {
    let (c, client, _kubelet, _cm) = setup().await;
    // Pods without `sim-exit` run forever: only the deadline can end this Job, and once its
    // pods are running nothing changes, so the controller must wake itself at the deadline.
    apply(
        &c,
        r#"
apiVersion: batch/v1
kind: Job
metadata:
  name: slow
spec:
  completions: 4
  parallelism: 2
  activeDeadlineSeconds: 2
  template:
    spec:
      restartPolicy: Never
      containers:
      - name: work
        image: busybox:1.36
"#,
    );
    wait_for(&c, "failed", "slow");
    let jobs: Api<Job> = Api::namespaced(client.clone(), "default");
    let job = jobs.get("slow").await.expect("job");
    let (status, reason, message) = condition(&job, "Failed").expect("Failed");
    assert_eq!(status, "True");
    assert_eq!(reason, "DeadlineExceeded");
    assert_eq!(message, "Job was active longer than specified deadline");
    assert_eq!(job.status.as_ref().and_then(|s| s.active), Some(0));
    let running: Vec<String> = pods_of(&client, "slow")
        .await
        .iter()
        .filter(|p| p.metadata.deletion_timestamp.is_none())
        .filter(|p| !matches!(phase(p), Some("Succeeded" | "Failed")))
        .map(|p| p.name_any())
        .collect();
    assert!(
        running.is_empty(),
        "pods still running after the deadline: {running:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_fail_job_rule_fails_the_job_at_the_first_matching_exit_code() {
    let (c, client, _kubelet, _cm) = setup().await;
    // Without the rule, backoffLimit 6 would retry this pod six more times.
    apply(
        &c,
        r#"
apiVersion: batch/v1
kind: Job
metadata:
  name: exit42
spec:
  completions: 3
  parallelism: 1
  backoffLimit: 6
  podFailurePolicy:
    rules:
    - action: FailJob
      onExitCodes:
        containerName: work
        operator: In
        values: [42]
  template:
    metadata:
      labels:
        sim-exit: "42"
    spec:
      restartPolicy: Never
      containers:
      - name: work
        image: busybox:1.36
"#,
    );
    wait_for(&c, "failed", "exit42");
    let jobs: Api<Job> = Api::namespaced(client.clone(), "default");
    let job = jobs.get("exit42").await.expect("job");
    let pods = pods_of(&client, "exit42").await;
    assert_eq!(pods.len(), 1, "no pod after the first failure: {pods:?}");
    let (status, reason, message) = condition(&job, "Failed").expect("Failed");
    assert_eq!(
        (status.as_str(), reason.as_str()),
        ("True", "PodFailurePolicy")
    );
    assert_eq!(
        message,
        format!(
            "Container work for pod default/{} failed with exit code 42 matching FailJob rule at index 0",
            pods[0].name_any()
        )
    );
    assert_eq!(job.status.as_ref().and_then(|s| s.failed), Some(1));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_ignored_disruption_is_not_counted_against_the_backoff_limit() {
    let (c, client, _kubelet, _cm) = setup().await;
    // backoffLimit 0: one counted failure would fail the Job. The first pod is disrupted
    // (DisruptionTarget), which the policy ignores, so its replacement runs and succeeds.
    apply(
        &c,
        r#"
apiVersion: batch/v1
kind: Job
metadata:
  name: flaky
spec:
  completions: 1
  backoffLimit: 0
  podFailurePolicy:
    rules:
    - action: Ignore
      onPodConditions:
      - type: DisruptionTarget
        status: "True"
  template:
    metadata:
      labels:
        sim-disrupt-first: "true"
    spec:
      restartPolicy: Never
      containers:
      - name: work
        image: busybox:1.36
"#,
    );
    wait_for(&c, "complete", "flaky");
    let jobs: Api<Job> = Api::namespaced(client.clone(), "default");
    let st = jobs
        .get("flaky")
        .await
        .expect("job")
        .status
        .expect("status");
    assert_eq!(st.failed, Some(0), "an ignored failure is not counted");
    assert_eq!(st.succeeded, Some(1));
    // Creation times have second precision, so compare the phases as a set.
    let mut phases: Vec<Option<String>> = pods_of(&client, "flaky")
        .await
        .iter()
        .map(|p| phase(p).map(String::from))
        .collect();
    phases.sort();
    assert_eq!(
        phases,
        vec![Some("Failed".to_string()), Some("Succeeded".to_string())],
        "the disrupted pod and its replacement"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_suspended_job_runs_no_pods_and_resuming_restarts_its_clock() {
    let (c, client, _kubelet, _cm) = setup().await;
    apply(
        &c,
        r#"
apiVersion: batch/v1
kind: Job
metadata:
  name: paused
spec:
  suspend: true
  completions: 2
  parallelism: 2
  template:
    spec:
      restartPolicy: Never
      containers:
      - name: work
        image: busybox:1.36
"#,
    );
    wait_for(&c, "suspended", "paused");
    let jobs: Api<Job> = Api::namespaced(client.clone(), "default");
    let job = jobs.get("paused").await.expect("job");
    let (_, reason, message) = condition(&job, "Suspended").expect("Suspended");
    assert_eq!(
        (reason.as_str(), message.as_str()),
        ("JobSuspended", "Job suspended")
    );
    let st = job.status.clone().expect("status");
    assert_eq!(
        st.start_time, None,
        "a Job created suspended has not started"
    );
    assert!(pods_of(&client, "paused").await.is_empty());

    let set_suspend = |on: bool| {
        let jobs = jobs.clone();
        async move {
            jobs.patch(
                "paused",
                &PatchParams::default(),
                &Patch::Merge(json!({"spec": {"suspend": on}})),
            )
            .await
            .expect("patch suspend");
        }
    };
    // Resumed: two pods run, Suspended turns False and the Job has a start time.
    set_suspend(false).await;
    let live = |client: Client| async move {
        pods_of(&client, "paused")
            .await
            .into_iter()
            .filter(|p| p.metadata.deletion_timestamp.is_none())
            .filter(|p| phase(p) == Some("Running"))
            .count()
    };
    eventually("two running pods", || {
        let (client, jobs) = (client.clone(), jobs.clone());
        async move {
            let job = jobs.get("paused").await.ok()?;
            let resumed = condition(&job, "Suspended")
                .is_some_and(|(s, r, _)| s == "False" && r == "JobResumed");
            let active = job.status.as_ref().and_then(|s| s.active) == Some(2);
            (resumed && active && live(client).await == 2).then_some(())
        }
    })
    .await;

    // Suspended again: its pods are deleted.
    set_suspend(true).await;
    eventually("no pods and Suspended=True", || {
        let (client, jobs) = (client.clone(), jobs.clone());
        async move {
            let job = jobs.get("paused").await.ok()?;
            let suspended = condition(&job, "Suspended").is_some_and(|(s, _, _)| s == "True");
            let st = job.status.as_ref()?;
            let idle = st.active == Some(0) && st.terminating.unwrap_or(0) == 0;
            (suspended && idle && pods_of(&client, "paused").await.is_empty()).then_some(())
        }
    })
    .await;

    // An old start time (as if it had been running for years) is replaced on resume, so an
    // activeDeadlineSeconds counts only the time since.
    jobs.patch_status(
        "paused",
        &PatchParams::default(),
        &Patch::Merge(json!({"status": {"startTime": "2020-01-01T00:00:00Z"}})),
    )
    .await
    .expect("patch startTime");
    set_suspend(false).await;
    let start = eventually("a new start time", || {
        let jobs = jobs.clone();
        async move {
            let job = jobs.get("paused").await.ok()?;
            let resumed = condition(&job, "Suspended").is_some_and(|(s, _, _)| s == "False");
            let start = job.status?.start_time?;
            resumed.then_some(start)
        }
    })
    .await;
    assert!(
        start.0.to_string().as_str() > "2021",
        "resuming sets startTime afresh: {start:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_finished_job_is_deleted_once_its_ttl_has_passed() {
    let (c, client, _kubelet, _cm) = setup().await;
    let job = |name: &str, ttl: &str| {
        format!(
            r#"
apiVersion: batch/v1
kind: Job
metadata:
  name: {name}
spec:
  {ttl}
  template:
    metadata:
      labels:
        sim-exit: "0"
    spec:
      restartPolicy: Never
      containers:
      - name: work
        image: busybox:1.36
"#
        )
    };
    apply(&c, &job("keep", ""));
    apply(&c, &job("short", "ttlSecondsAfterFinished: 1"));
    let jobs: Api<Job> = Api::namespaced(client.clone(), "default");
    // Finished Jobs change no more: only the TTL controller's own requeue can delete it.
    eventually("the Job with a TTL deleted", || {
        let jobs = jobs.clone();
        async move { jobs.get_opt("short").await.ok()?.is_none().then_some(()) }
    })
    .await;
    eventually("its pods deleted with it", || {
        let client = client.clone();
        async move { pods_of(&client, "short").await.is_empty().then_some(()) }
    })
    .await;
    wait_for(&c, "complete", "keep");
    assert!(
        jobs.get_opt("keep").await.expect("get").is_some(),
        "a Job without a TTL stays"
    );
}
