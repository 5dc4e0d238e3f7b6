//! PodDisruptionBudgets end to end against a real in-process API server: the disruption
//! controller's status, the eviction API spending it (one eviction per allowed disruption,
//! also under concurrency), `kubectl drain` honouring it; and the Deployment controller's
//! proportional scaling of a paused rollout. Pods are run by simulated kubelets
//! (`common::start_kubelets`); waits poll with a hang deadline, never a fixed sleep.

mod common;

use std::collections::BTreeMap;

use common::{apply, client, create_node, eventually, kubectl, start_kubelets, start_manager};
use e2e::{Backend, Cluster};
use futures::StreamExt;
use k8s_openapi::api::apps::v1::{Deployment, ReplicaSet};
use k8s_openapi::api::core::v1::Pod;
use k8s_openapi::api::policy::v1::{PodDisruptionBudget, PodDisruptionBudgetStatus};
use kube::api::{Api, DeleteParams, EvictParams, ListParams, Patch, PatchParams, PostParams};
use kube::runtime::{watcher, WatchStreamExt};
use kube::{Client, ResourceExt};
use serde_json::json;

const REFUSED: &str = "Cannot evict pod as it would violate the pod's disruption budget.";

fn bare_pod(name: &str) -> Pod {
    serde_json::from_value(json!({
        "apiVersion": "v1", "kind": "Pod",
        "metadata": {"name": name, "labels": {"app": "web"}},
        "spec": {"containers": [{"name": "c", "image": "busybox:1.36"}]},
    }))
    .expect("pod")
}

fn pdb(name: &str, spec: serde_json::Value) -> PodDisruptionBudget {
    serde_json::from_value(json!({
        "apiVersion": "policy/v1", "kind": "PodDisruptionBudget",
        "metadata": {"name": name}, "spec": spec,
    }))
    .expect("pdb")
}

fn ready(p: &Pod) -> bool {
    p.status
        .as_ref()
        .and_then(|s| s.conditions.as_ref())
        .is_some_and(|cs| cs.iter().any(|c| c.type_ == "Ready" && c.status == "True"))
}

/// Waits until `n` pods labelled `app=web` are Ready and not terminating; returns their names.
async fn ready_pods(client: &Client, n: usize) -> Vec<String> {
    let pods: Api<Pod> = Api::namespaced(client.clone(), "default");
    eventually(&format!("{n} ready web pods"), || async {
        let list = pods
            .list(&ListParams::default().labels("app=web"))
            .await
            .ok()?;
        let names: Vec<String> = list
            .items
            .iter()
            .filter(|p| p.metadata.deletion_timestamp.is_none() && ready(p))
            .map(|p| p.name_any())
            .collect();
        (names.len() == n).then_some(names)
    })
    .await
}

/// Waits until the budget's status, at its current generation, satisfies `want`.
async fn status_where(
    client: &Client,
    name: &str,
    what: &str,
    want: impl Fn(&PodDisruptionBudgetStatus) -> bool,
) -> PodDisruptionBudgetStatus {
    let api: Api<PodDisruptionBudget> = Api::namespaced(client.clone(), "default");
    eventually(what, || async {
        let pdb = api.get(name).await.ok()?;
        let status = pdb.status?;
        (status.observed_generation == pdb.metadata.generation && want(&status)).then_some(status)
    })
    .await
}

/// `(expectedPods, currentHealthy, desiredHealthy, disruptionsAllowed)`.
fn counts(s: &PodDisruptionBudgetStatus) -> (i32, i32, i32, i32) {
    (
        s.expected_pods,
        s.current_healthy,
        s.desired_healthy,
        s.disruptions_allowed,
    )
}

fn condition(s: &PodDisruptionBudgetStatus) -> (String, String) {
    s.conditions
        .iter()
        .flatten()
        .find(|c| c.type_ == "DisruptionAllowed")
        .map(|c| (c.status.clone(), c.reason.clone()))
        .unwrap_or_default()
}

/// Evicts `name`; the refusal's Status if refused.
async fn evict(client: &Client, name: &str) -> Result<(), Box<kube::core::Status>> {
    let pods: Api<Pod> = Api::namespaced(client.clone(), "default");
    match pods.evict(name, &EvictParams::default()).await {
        Ok(_) => Ok(()),
        Err(kube::Error::Api(s)) => Err(s),
        Err(e) => panic!("evicting {name}: {e}"),
    }
}

fn cause(s: &kube::core::Status) -> String {
    s.details
        .as_ref()
        .and_then(|d| d.causes.first())
        .map(|c| format!("{}: {}", c.reason, c.message))
        .unwrap_or_default()
}

/// minAvailable 2 over 3 ready pods allows one disruption: one eviction goes through, the
/// next is refused with upstream's 429 until the evicted pod is replaced; a budget the
/// controller has not processed yet refuses with "still being processed"; two budgets over
/// one pod are a 500; a pod that is not running yet is evicted regardless.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn budget_status_and_evictions() {
    let c = Cluster::start(Backend::Embedded).await;
    let client = client(&c);
    let _kubelets = start_kubelets(&c, "n1");
    create_node(&client, "n1", json!({}), json!([])).await;
    let pods: Api<Pod> = Api::namespaced(client.clone(), "default");
    let pdbs: Api<PodDisruptionBudget> = Api::namespaced(client.clone(), "default");
    for name in ["a", "b", "c"] {
        pods.create(&PostParams::default(), &bare_pod(name))
            .await
            .expect("create pod");
    }
    ready_pods(&client, 3).await;
    let spec = json!({"minAvailable": 2, "selector": {"matchLabels": {"app": "web"}}});
    pdbs.create(&PostParams::default(), &pdb("web", spec))
        .await
        .expect("create pdb");

    // No controller yet: the budget's status is behind its generation.
    let refused = evict(&client, "a")
        .await
        .expect_err("an unprocessed budget refuses");
    assert_eq!(refused.code, 429);
    assert_eq!(refused.message, REFUSED);
    assert_eq!(
        cause(&refused),
        "DisruptionBudget: The disruption budget web is still being processed by the server."
    );
    assert_eq!(
        refused.details.as_ref().map(|d| d.retry_after_seconds),
        Some(10)
    );

    let _cm = start_manager(&c, &["disruption"]);
    let s = status_where(&client, "web", "one disruption allowed", |s| {
        s.disruptions_allowed == 1
    })
    .await;
    assert_eq!(counts(&s), (3, 3, 2, 1));
    assert_eq!(condition(&s), ("True".into(), "SufficientPods".into()));

    // A second budget over the same pods: the eviction API does not support that.
    let spec = json!({"maxUnavailable": 1, "selector": {"matchLabels": {"app": "web"}}});
    pdbs.create(&PostParams::default(), &pdb("other", spec))
        .await
        .expect("create second pdb");
    let refused = evict(&client, "a").await.expect_err("two budgets");
    assert_eq!(refused.code, 500);
    assert_eq!(
        refused.message,
        "This pod has more than one PodDisruptionBudget, which the eviction subresource does not support."
    );
    pdbs.delete("other", &DeleteParams::default())
        .await
        .expect("delete second pdb");

    // A finalizer keeps the evicted pod readable after its deletion.
    let keep = json!({"metadata": {"finalizers": ["example.com/keep"]}});
    pods.patch("a", &PatchParams::default(), &Patch::Merge(keep))
        .await
        .expect("add a finalizer");
    evict(&client, "a").await.expect("the allowed disruption");
    let evicted = pods.get("a").await.expect("a is kept by its finalizer");
    assert!(evicted.metadata.deletion_timestamp.is_some());
    let target = evicted
        .status
        .and_then(|s| s.conditions)
        .unwrap_or_default()
        .into_iter()
        .find(|c| c.type_ == "DisruptionTarget")
        .map(|c| (c.status, c.reason, c.message));
    assert_eq!(
        target,
        Some((
            "True".into(),
            Some("EvictionByEvictionAPI".into()),
            Some("Eviction API: evicting".into())
        ))
    );
    let release = json!({"metadata": {"finalizers": null}});
    pods.patch("a", &PatchParams::default(), &Patch::Merge(release))
        .await
        .expect("remove the finalizer");
    let after = pdbs
        .get("web")
        .await
        .expect("pdb")
        .status
        .unwrap_or_default();
    assert_eq!(
        after.disruptions_allowed, 0,
        "the eviction spent the allowance"
    );
    let refused = evict(&client, "b").await.expect_err("no disruption left");
    assert_eq!(refused.code, 429);
    assert_eq!(refused.message, REFUSED);
    assert!(
        cause(&refused).starts_with(
            "DisruptionBudget: The disruption budget web needs 2 healthy pods and has "
        ),
        "{}",
        cause(&refused)
    );
    assert!(pods
        .get("b")
        .await
        .expect("b is still there")
        .metadata
        .deletion_timestamp
        .is_none());

    // The evicted pod is gone: two healthy, none to spare, its disruptedPods entry dropped.
    let s = status_where(&client, "web", "a gone and forgotten", |s| {
        s.expected_pods == 2 && s.disrupted_pods.as_ref().is_none_or(|m| m.is_empty())
    })
    .await;
    assert_eq!(counts(&s), (2, 2, 2, 0));
    assert_eq!(condition(&s), ("False".into(), "InsufficientPods".into()));

    // Replaced: the budget recovers.
    pods.create(&PostParams::default(), &bare_pod("d"))
        .await
        .expect("create replacement");
    let s = status_where(&client, "web", "the replacement counted", |s| {
        s.disruptions_allowed == 1
    })
    .await;
    assert_eq!(counts(&s), (3, 3, 2, 1));
    assert_eq!(condition(&s), ("True".into(), "SufficientPods".into()));
}

/// A pod marked `DisruptionTarget=True` by an eviction whose delete never happened (written
/// here directly, as of three minutes ago) is not terminating two minutes later: the
/// controller resets the condition to False and leaves the rest of the status alone; one
/// whose timeout has not passed keeps it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stale_disruption_condition_is_reset() {
    let c = Cluster::start(Backend::Embedded).await;
    let client = client(&c);
    let _kubelets = start_kubelets(&c, "n1");
    create_node(&client, "n1", json!({}), json!([])).await;
    let pods: Api<Pod> = Api::namespaced(client.clone(), "default");
    for name in ["stale", "fresh"] {
        pods.create(&PostParams::default(), &bare_pod(name))
            .await
            .expect("create pod");
    }
    ready_pods(&client, 2).await;
    let now = k8s_openapi::jiff::Timestamp::now();
    let ago = |secs: i64| {
        k8s_openapi::jiff::Timestamp::from_second(now.as_second() - secs)
            .expect("time")
            .to_string()
    };
    for (name, at) in [("stale", ago(180)), ("fresh", ago(-3600))] {
        let patch = json!({"status": {"conditions": [{"type": "DisruptionTarget",
            "status": "True", "reason": "EvictionByEvictionAPI",
            "message": "Eviction API: evicting", "lastTransitionTime": at}]}});
        pods.patch_status(name, &PatchParams::default(), &Patch::Strategic(patch))
            .await
            .expect("mark the pod");
    }
    let _cm = start_manager(&c, &["disruption"]);
    let condition_of = |p: &Pod, t: &str| {
        p.status
            .as_ref()
            .and_then(|s| s.conditions.as_ref())
            .and_then(|cs| cs.iter().find(|c| c.type_ == t))
            .map(|c| c.status.clone())
    };
    let reset = eventually("the stale condition reset", || async {
        let p = pods.get("stale").await.ok()?;
        (condition_of(&p, "DisruptionTarget").as_deref() == Some("False")).then_some(p)
    })
    .await;
    assert_eq!(condition_of(&reset, "Ready").as_deref(), Some("True"));
    // The other one's clock has not run out (its transition is an hour ahead): still True,
    // though both were queued at the start.
    let fresh = pods.get("fresh").await.expect("fresh");
    assert_eq!(
        condition_of(&fresh, "DisruptionTarget").as_deref(),
        Some("True")
    );
}

/// With one disruption allowed, three evictions at once: exactly one succeeds, the budget is
/// spent, and exactly one pod goes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_evictions_spend_an_allowance_once() {
    let c = Cluster::start(Backend::Embedded).await;
    let client = client(&c);
    let _kubelets = start_kubelets(&c, "n1");
    create_node(&client, "n1", json!({}), json!([])).await;
    let _cm = start_manager(&c, &["disruption"]);
    let pods: Api<Pod> = Api::namespaced(client.clone(), "default");
    let pdbs: Api<PodDisruptionBudget> = Api::namespaced(client.clone(), "default");
    for name in ["a", "b", "c"] {
        pods.create(&PostParams::default(), &bare_pod(name))
            .await
            .expect("create pod");
    }
    ready_pods(&client, 3).await;
    let spec = json!({"minAvailable": 2, "selector": {"matchLabels": {"app": "web"}}});
    pdbs.create(&PostParams::default(), &pdb("web", spec))
        .await
        .expect("create pdb");
    status_where(&client, "web", "one disruption allowed", |s| {
        s.disruptions_allowed == 1
    })
    .await;

    let results = futures::future::join_all(["a", "b", "c"].map(|name| {
        let client = client.clone();
        tokio::spawn(async move { evict(&client, name).await.map_err(|s| s.code) })
    }))
    .await;
    let results: Vec<Result<(), u16>> = results.into_iter().map(|r| r.expect("joined")).collect();
    let ok = results.iter().filter(|r| r.is_ok()).count();
    let refused = results.iter().filter(|r| *r == &Err(429)).count();
    assert_eq!((ok, refused), (1, 2), "{results:?}");
    let status = pdbs
        .get("web")
        .await
        .expect("pdb")
        .status
        .unwrap_or_default();
    assert_eq!(status.disruptions_allowed, 0);
    let left = pods
        .list(&ListParams::default().labels("app=web"))
        .await
        .expect("list")
        .items
        .into_iter()
        .filter(|p| p.metadata.deletion_timestamp.is_none())
        .count();
    assert_eq!(left, 2, "exactly one pod was evicted");
}

const WEB: &str = r#"
apiVersion: apps/v1
kind: Deployment
metadata:
  name: web
spec:
  replicas: 3
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
        image: busybox:1.36
"#;

/// Watches the `app=web` pods and reports the fewest that were Ready and not terminating at
/// any point once `start` of them had been: what a budget promises to keep.
fn track_min_ready(client: &Client, start: usize) -> tokio::sync::watch::Receiver<usize> {
    let (tx, rx) = tokio::sync::watch::channel(usize::MAX);
    let api: Api<Pod> = Api::namespaced(client.clone(), "default");
    tokio::spawn(async move {
        let mut events = watcher(api, watcher::Config::default().labels("app=web"))
            .default_backoff()
            .boxed();
        let mut state: BTreeMap<String, bool> = BTreeMap::new();
        let mut armed = false;
        while let Some(ev) = events.next().await {
            match ev {
                Ok(watcher::Event::Apply(p) | watcher::Event::InitApply(p)) => {
                    let up = p.metadata.deletion_timestamp.is_none() && ready(&p);
                    state.insert(p.name_any(), up);
                }
                Ok(watcher::Event::Delete(p)) => {
                    state.remove(&p.name_any());
                }
                _ => continue,
            }
            let up = state.values().filter(|u| **u).count();
            armed |= up >= start;
            if armed {
                tx.send_modify(|min| *min = (*min).min(up));
            }
            if tx.is_closed() {
                break;
            }
        }
    });
    rx
}

/// `kubectl drain` evicts through the API: a budget that allows nothing holds the drain (it
/// times out, every pod still there); once the budget allows one disruption the drain goes
/// through one pod at a time, replacements first, never below minAvailable ready pods. The
/// budget's expected count comes from the Deployment's scale when maxUnavailable is used.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kubectl_drain_respects_the_budget() {
    let c = Cluster::start(Backend::Embedded).await;
    let client = client(&c);
    // The simulated kubelets bind every pod to n1, replacements too (they ignore the
    // cordon): the drain only waits for the pods it evicted.
    let _kubelets = start_kubelets(&c, "n1");
    create_node(&client, "n1", json!({}), json!([])).await;
    let _cm = start_manager(&c, &["deployment", "replicaset", "disruption"]);
    apply(&c, WEB);
    let pods: Api<Pod> = Api::namespaced(client.clone(), "default");
    let originals = ready_pods(&client, 3).await;
    let pdbs: Api<PodDisruptionBudget> = Api::namespaced(client.clone(), "default");
    let spec = json!({"maxUnavailable": 0, "selector": {"matchLabels": {"app": "web"}}});
    pdbs.create(&PostParams::default(), &pdb("web", spec))
        .await
        .expect("create pdb");
    let s = status_where(&client, "web", "no disruption allowed", |s| {
        s.expected_pods == 3
    })
    .await;
    assert_eq!(counts(&s), (3, 3, 3, 0));

    let held = tokio::task::block_in_place(|| {
        c.kubectl(&["drain", "n1", "--ignore-daemonsets", "--timeout=8s"])
    });
    assert!(!held.ok, "the drain cannot finish: {}", held.stdout);
    assert!(held.stderr.contains(REFUSED), "{}", held.stderr);
    for name in &originals {
        let p = pods.get(name).await.expect("still there");
        assert!(
            p.metadata.deletion_timestamp.is_none(),
            "{name} was evicted"
        );
    }

    // Allow one disruption (a spec change: the status follows the new generation).
    let min_ready = track_min_ready(&client, 3);
    let patch = json!({"spec": {"maxUnavailable": 1}});
    pdbs.patch("web", &PatchParams::default(), &Patch::Merge(patch))
        .await
        .expect("patch pdb");
    status_where(&client, "web", "one disruption allowed", |s| {
        s.disruptions_allowed == 1
    })
    .await;
    kubectl(&c, &["drain", "n1", "--ignore-daemonsets", "--timeout=80s"]);
    for name in &originals {
        let gone = pods.get_opt(name).await.expect("get");
        assert!(
            gone.is_none_or(|p| p.metadata.deletion_timestamp.is_some()),
            "{name} was not evicted"
        );
    }
    assert!(
        *min_ready.borrow() >= 2,
        "fewer than 2 pods were ready during the drain: {}",
        *min_ready.borrow()
    );
    assert_ne!(*min_ready.borrow(), usize::MAX, "the tracker saw the pods");
}

/// Deployment proportional scaling: a paused rollout with ReplicaSets of 6 and 4, scaled from
/// 10 to 20, ends with 12 and 8 (upstream's `getProportion`), and the ReplicaSets carry the
/// new `desired-replicas` annotation.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn paused_rollout_scales_proportionally() {
    let c = Cluster::start(Backend::Embedded).await;
    let client = client(&c);
    let _kubelets = start_kubelets(&c, "n1");
    create_node(&client, "n1", json!({}), json!([])).await;
    let _cm = start_manager(&c, &["deployment", "replicaset"]);
    let deployments: Api<Deployment> = Api::namespaced(client.clone(), "default");
    let rss: Api<ReplicaSet> = Api::namespaced(client.clone(), "default");
    // maxSurge 0 / maxUnavailable 4: the new ReplicaSet gets 4 only after the old one drops
    // to 6, and new pods that never become ready stop the rollout right there.
    let web = WEB.replace("replicas: 3", "replicas: 10").replace(
        "  template:",
        "  strategy:\n    rollingUpdate:\n      maxSurge: 0\n      maxUnavailable: 4\n  template:",
    );
    apply(&c, &web);
    ready_pods(&client, 10).await;
    let patch = json!({"spec": {"template": {"metadata": {"labels": {"app": "web", "sim-ready": "false"}}}}});
    deployments
        .patch("web", &PatchParams::default(), &Patch::Merge(patch))
        .await
        .expect("start a rollout");
    let sizes = || async {
        let mut v: Vec<(i64, i32)> = rss
            .list(&ListParams::default().labels("app=web"))
            .await
            .ok()?
            .items
            .iter()
            .map(|rs| {
                let rev = rs
                    .annotations()
                    .get("deployment.kubernetes.io/revision")
                    .and_then(|r| r.parse().ok())
                    .unwrap_or(0);
                (rev, rs.spec.as_ref().and_then(|s| s.replicas).unwrap_or(0))
            })
            .collect();
        v.sort();
        Some(v)
    };
    eventually("the rollout stuck at 6 old + 4 new", || async {
        (sizes().await? == [(1, 6), (2, 4)]).then_some(())
    })
    .await;
    let patch = json!({"spec": {"paused": true}});
    deployments
        .patch("web", &PatchParams::default(), &Patch::Merge(patch))
        .await
        .expect("pause");
    kubectl(&c, &["scale", "deployment/web", "--replicas=20"]);
    eventually("12 old + 8 new", || async {
        (sizes().await? == [(1, 12), (2, 8)]).then_some(())
    })
    .await;
    for rs in rss
        .list(&ListParams::default().labels("app=web"))
        .await
        .expect("list")
        .items
    {
        assert_eq!(
            rs.annotations()
                .get("deployment.kubernetes.io/desired-replicas")
                .map(String::as_str),
            Some("20"),
            "{}",
            rs.name_any()
        );
    }
    // Scaled back down, the difference is spread the same way.
    kubectl(&c, &["scale", "deployment/web", "--replicas=5"]);
    eventually("3 old + 2 new", || async {
        (sizes().await? == [(1, 3), (2, 2)]).then_some(())
    })
    .await;
}
