//! The DaemonSet and StatefulSet controllers against a real in-process API server, with
//! simulated nodes (bind, run, report Ready; see `common::start_kubelets`) and the real
//! kubectl 1.32 for rollouts. Orderings are checked on the pod watch stream, which is
//! ordered by resourceVersion: no sleeps, and waits are bounded only to detect hangs.

mod common;

use std::collections::BTreeMap;

use common::{apply, client, create_node, eventually, kubectl, start_kubelets, start_manager};
use e2e::{Backend, Cluster};
use futures::StreamExt;
use k8s_openapi::api::apps::v1::{ControllerRevision, DaemonSet, StatefulSet};
use k8s_openapi::api::core::v1::{Node, PersistentVolumeClaim, Pod};
use kube::api::{Api, DeleteParams, ListParams, Patch, PatchParams};
use kube::runtime::watcher;
use kube::{Client, ResourceExt};
use serde_json::json;
use tokio::sync::mpsc;

const AGENT: &str = r#"
apiVersion: apps/v1
kind: DaemonSet
metadata:
  name: agent
spec:
  selector:
    matchLabels:
      app: agent
  template:
    metadata:
      labels:
        app: agent
    spec:
      containers:
      - name: agent
        image: busybox:1.36
"#;

fn image(pod: &Pod) -> String {
    pod.spec
        .as_ref()
        .and_then(|s| s.containers.first())
        .and_then(|c| c.image.clone())
        .unwrap_or_default()
}

/// Live (not deleting) pods labelled `app=<app>`.
async fn live_pods(client: &Client, app: &str) -> Vec<Pod> {
    let api: Api<Pod> = Api::namespaced(client.clone(), "default");
    api.list(&ListParams::default().labels(&format!("app={app}")))
        .await
        .map(|l| l.items)
        .unwrap_or_default()
        .into_iter()
        .filter(|p| p.metadata.deletion_timestamp.is_none())
        .collect()
}

/// The live daemon pods by the node they run on (bound by the simulator).
async fn agent_pods(client: &Client) -> BTreeMap<String, Vec<Pod>> {
    let mut by_node: BTreeMap<String, Vec<Pod>> = BTreeMap::new();
    for p in live_pods(client, "agent").await {
        let node = p
            .spec
            .as_ref()
            .and_then(|s| s.node_name.clone())
            .unwrap_or_default();
        by_node.entry(node).or_default().push(p);
    }
    by_node
}

/// Waits until exactly one ready daemon pod runs on each of `nodes` (and nowhere else) and
/// the status says so.
async fn agent_on(client: &Client, nodes: &[&str]) -> BTreeMap<String, Vec<Pod>> {
    let dss: Api<DaemonSet> = Api::namespaced(client.clone(), "default");
    let n = i32::try_from(nodes.len()).unwrap_or(0);
    eventually(
        &format!("one ready daemon pod on each of {nodes:?}"),
        || {
            let client = client.clone();
            let dss = dss.clone();
            async move {
                // Status first: once it is settled nothing changes, so the pods read after
                // it show the state it describes.
                let ds = dss.get("agent").await.ok()?;
                let pods = agent_pods(&client).await;
                let names: Vec<&str> = pods.keys().map(String::as_str).collect();
                let one_each = names == nodes && pods.values().all(|p| p.len() == 1);
                let st = ds.status.clone()?;
                let settled = st.desired_number_scheduled == n
                    && st.current_number_scheduled == n
                    && st.number_ready == n
                    && st.number_available.unwrap_or(0) == n
                    && st.updated_number_scheduled.unwrap_or(0) == n
                    && st.number_misscheduled == 0
                    && st.observed_generation == ds.metadata.generation;
                (one_each && settled).then_some(pods)
            }
        },
    )
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn daemonset_follows_nodes_respects_taints_and_rolls_out() {
    let c = Cluster::start(Backend::Embedded).await;
    let client = client(&c);
    let _kubelets = start_kubelets(&c, "n1");
    let _cm = start_manager(&c, &["daemonset", "garbagecollector"]);
    create_node(&client, "n1", json!({}), json!([])).await;
    // Cordoned: daemons tolerate `unschedulable`, as upstream.
    let cordon = json!([{"key": "node.kubernetes.io/unschedulable", "effect": "NoSchedule"}]);
    create_node(&client, "n2", json!({}), cordon).await;
    // A dedicated node the DaemonSet does not tolerate.
    let gpu = json!([{"key": "dedicated", "value": "gpu", "effect": "NoSchedule"}]);
    create_node(&client, "n3", json!({}), gpu).await;
    apply(&c, AGENT);
    let pods = agent_on(&client, &["n1", "n2"]).await;

    let ds: Api<DaemonSet> = Api::namespaced(client.clone(), "default");
    let agent = ds.get("agent").await.expect("ds");
    let pod = &pods["n1"][0];
    let refs = pod.owner_references();
    assert_eq!(refs.len(), 1);
    assert_eq!(refs[0].kind, "DaemonSet");
    assert_eq!(refs[0].uid, agent.uid().unwrap_or_default());
    assert_eq!(refs[0].controller, Some(true));
    let spec = pod.spec.clone().unwrap_or_default();
    let terms = spec
        .affinity
        .and_then(|a| a.node_affinity)
        .and_then(|a| a.required_during_scheduling_ignored_during_execution)
        .map(|s| s.node_selector_terms)
        .unwrap_or_default();
    let field = terms
        .first()
        .and_then(|t| t.match_fields.clone())
        .and_then(|f| f.into_iter().next())
        .expect("a matchFields term");
    assert_eq!(field.key, "metadata.name");
    assert_eq!(field.values, Some(vec!["n1".to_string()]));
    let tolerated: Vec<String> = spec
        .tolerations
        .unwrap_or_default()
        .into_iter()
        .filter_map(|t| t.key)
        .collect();
    for key in [
        "not-ready",
        "unreachable",
        "disk-pressure",
        "memory-pressure",
        "pid-pressure",
        "unschedulable",
    ] {
        assert!(
            tolerated.contains(&format!("node.kubernetes.io/{key}")),
            "{tolerated:?}"
        );
    }
    let revs: Api<ControllerRevision> = Api::namespaced(client.clone(), "default");
    let revs = revs
        .list(&ListParams::default().labels("app=agent"))
        .await
        .expect("revisions");
    assert_eq!(revs.items.len(), 1);
    let hash = pod
        .labels()
        .get("controller-revision-hash")
        .cloned()
        .expect("hash label");
    assert_eq!(revs.items[0].name_any(), format!("agent-{hash}"));

    // A new image rolls out node by node; kubectl's rollout status follows it to the end.
    kubectl(
        &c,
        &["set", "image", "daemonset/agent", "agent=busybox:1.37"],
    );
    let out = kubectl(
        &c,
        &["rollout", "status", "daemonset/agent", "--timeout=90s"],
    );
    assert!(out.contains("successfully rolled out"), "{out}");
    let pods = agent_on(&client, &["n1", "n2"]).await;
    assert!(
        pods.values().flatten().all(|p| image(p) == "busybox:1.37"),
        "{pods:?}"
    );
    let history = kubectl(&c, &["rollout", "history", "daemonset/agent"]);
    assert!(history.lines().any(|l| l.starts_with('2')), "{history}");

    // Rolling back reuses the first revision (renumbered 3) rather than adding one.
    kubectl(&c, &["rollout", "undo", "daemonset/agent"]);
    let out = kubectl(
        &c,
        &["rollout", "status", "daemonset/agent", "--timeout=90s"],
    );
    assert!(out.contains("successfully rolled out"), "{out}");
    let pods = agent_on(&client, &["n1", "n2"]).await;
    assert!(
        pods.values().flatten().all(|p| image(p) == "busybox:1.36"),
        "{pods:?}"
    );
    let revisions: Api<ControllerRevision> = Api::namespaced(client.clone(), "default");
    let revs = revisions
        .list(&ListParams::default().labels("app=agent"))
        .await
        .expect("revisions");
    let mut numbers: Vec<i64> = revs.items.iter().map(|r| r.revision).collect();
    numbers.sort();
    assert_eq!(numbers, [2, 3]);

    // Orphaned and re-created, the DaemonSet adopts its pods and history instead of
    // replacing them.
    let names = |pods: &BTreeMap<String, Vec<Pod>>| -> Vec<String> {
        pods.values().flatten().map(|p| p.name_any()).collect()
    };
    let before = names(&pods);
    kubectl(&c, &["delete", "daemonset", "agent", "--cascade=orphan"]);
    eventually("the DaemonSet gone and its pods orphaned", || {
        let client = client.clone();
        let ds = ds.clone();
        async move {
            let gone = matches!(ds.get("agent").await, Err(kube::Error::Api(s)) if s.code == 404);
            let pods = live_pods(&client, "agent").await;
            (gone && pods.len() == 2 && pods.iter().all(|p| p.owner_references().is_empty()))
                .then_some(())
        }
    })
    .await;
    apply(&c, AGENT);
    let pods = agent_on(&client, &["n1", "n2"]).await;
    assert_eq!(names(&pods), before);
    let agent = ds.get("agent").await.expect("ds");
    for p in pods.values().flatten() {
        let owner = controller_uid(p);
        assert_eq!(owner, agent.uid(), "{:?}", p.metadata);
    }

    // Nodes join and leave.
    create_node(&client, "n4", json!({}), json!([])).await;
    agent_on(&client, &["n1", "n2", "n4"]).await;
    let nodes: Api<Node> = Api::all(client.clone());
    nodes
        .delete("n2", &DeleteParams::default())
        .await
        .expect("delete n2");
    agent_on(&client, &["n1", "n4"]).await;
    // An untolerated NoExecute taint evicts the daemon.
    let taint = json!({"spec": {"taints": [{"key": "maintenance", "effect": "NoExecute"}]}});
    nodes
        .patch("n1", &PatchParams::default(), &Patch::Merge(taint))
        .await
        .expect("taint n1");
    agent_on(&client, &["n4"]).await;

    let table = kubectl(&c, &["get", "daemonset", "agent"]);
    let row = table
        .lines()
        .nth(1)
        .unwrap_or_default()
        .split_whitespace()
        .collect::<Vec<_>>();
    assert_eq!(
        row.get(..6),
        Some(&["agent", "1", "1", "1", "1", "1"][..]),
        "{table}"
    );
    let described = kubectl(&c, &["describe", "daemonset", "agent"]);
    assert!(described.contains("SuccessfulCreate"), "{described}");
    assert!(described.contains("SuccessfulDelete"), "{described}");
}

fn controller_uid(pod: &Pod) -> Option<String> {
    pod.owner_references()
        .iter()
        .find(|r| r.controller == Some(true))
        .map(|r| r.uid.clone())
}

/// What the pod watch showed about one pod, in watch order.
#[derive(Debug, Clone, PartialEq)]
enum Seen {
    /// The pod exists; whether it is Ready.
    Exists(bool),
    /// It has a deletionTimestamp.
    Deleting,
    /// It is gone.
    Gone,
}

/// Records every change of pods labelled `app=<app>` as (pod name, what was seen); returns
/// once the watch has listed, so nothing after the call can be missed.
async fn record_pods(
    client: &Client,
    app: &str,
) -> (common::Task, mpsc::UnboundedReceiver<(String, Seen)>) {
    let (tx, mut rx) = mpsc::unbounded_channel();
    let api: Api<Pod> = Api::namespaced(client.clone(), "default");
    let config = watcher::Config::default().labels(&format!("app={app}"));
    let task = tokio::spawn(async move {
        let mut events = watcher(api, config).boxed();
        while let Some(ev) = events.next().await {
            let (pod, gone) = match ev {
                Ok(watcher::Event::Apply(p) | watcher::Event::InitApply(p)) => (p, false),
                Ok(watcher::Event::Delete(p)) => (p, true),
                Ok(watcher::Event::InitDone) => {
                    let _ = tx.send((String::new(), Seen::Gone));
                    continue;
                }
                _ => continue,
            };
            let seen = if gone {
                Seen::Gone
            } else if pod.metadata.deletion_timestamp.is_some() {
                Seen::Deleting
            } else {
                let ready = pod
                    .status
                    .as_ref()
                    .and_then(|s| s.conditions.as_ref())
                    .is_some_and(|c| c.iter().any(|c| c.type_ == "Ready" && c.status == "True"));
                Seen::Exists(ready)
            };
            if tx.send((pod.name_any(), seen)).is_err() {
                return;
            }
        }
    });
    let task = common::Task::from(task);
    // Everything up to the end of the initial list, inclusive of the marker.
    while let Some((name, _)) = rx.recv().await {
        if name.is_empty() {
            break;
        }
    }
    (task, rx)
}

fn drain(rx: &mut mpsc::UnboundedReceiver<(String, Seen)>) -> Vec<(String, Seen)> {
    let mut out = Vec::new();
    while let Ok(e) = rx.try_recv() {
        out.push(e);
    }
    out
}

/// Index of the first event about `pod` matching `pred`.
fn first(events: &[(String, Seen)], pod: &str, pred: impl Fn(&Seen) -> bool) -> Option<usize> {
    events.iter().position(|(n, s)| n == pod && pred(s))
}

/// With `maxSurge`, each node's new pod starts next to the old one, and the old one goes
/// only once the new one is Ready: no node is ever without a ready daemon.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn daemonset_surge_update_replaces_pods_only_once_the_new_ones_are_ready() {
    let c = Cluster::start(Backend::Embedded).await;
    let client = client(&c);
    let _kubelets = start_kubelets(&c, "n1");
    let _cm = start_manager(&c, &["daemonset"]);
    create_node(&client, "n1", json!({}), json!([])).await;
    create_node(&client, "n2", json!({}), json!([])).await;
    let surge = AGENT.replace(
        "spec:\n  selector:",
        "spec:\n  updateStrategy:\n    type: RollingUpdate\n    rollingUpdate:\n      maxSurge: 1\n      maxUnavailable: 0\n  selector:",
    );
    apply(&c, &surge);
    let before = agent_on(&client, &["n1", "n2"]).await;
    let (_watch, mut rx) = record_pods(&client, "agent").await;
    kubectl(
        &c,
        &["set", "image", "daemonset/agent", "agent=busybox:1.37"],
    );
    let out = kubectl(
        &c,
        &["rollout", "status", "daemonset/agent", "--timeout=90s"],
    );
    assert!(out.contains("successfully rolled out"), "{out}");
    let after = agent_on(&client, &["n1", "n2"]).await;
    assert!(
        after.values().flatten().all(|p| image(p) == "busybox:1.37"),
        "{after:?}"
    );
    let events = drain(&mut rx);
    for (node, old) in &before {
        let old = old[0].name_any();
        let new = after[node][0].name_any();
        let ready = first(&events, &new, |s| *s == Seen::Exists(true));
        let deleting = first(&events, &old, |s| matches!(s, Seen::Deleting | Seen::Gone));
        assert!(
            ready.is_some() && ready < deleting,
            "{old} went before {new} was ready: {events:?}"
        );
    }
}

const WEB: &str = r#"
apiVersion: v1
kind: Service
metadata:
  name: nginx
spec:
  clusterIP: None
  selector:
    app: web
  ports:
  - port: 80
---
apiVersion: apps/v1
kind: StatefulSet
metadata:
  name: web
spec:
  serviceName: nginx
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
      - name: nginx
        image: nginx:1.27
        volumeMounts:
        - name: www
          mountPath: /usr/share/nginx/html
  volumeClaimTemplates:
  - metadata:
      name: www
    spec:
      accessModes: ["ReadWriteOnce"]
      resources:
        requests:
          storage: 1Gi
"#;

/// Waits until the StatefulSet reports `n` ready replicas for its current generation.
async fn sts_settles(client: &Client, name: &str, n: i32) -> StatefulSet {
    let api: Api<StatefulSet> = Api::namespaced(client.clone(), "default");
    eventually(
        &format!("StatefulSet {name} to have {n} ready replicas"),
        || {
            let api = api.clone();
            async move {
                let s = api.get(name).await.ok()?;
                let st = s.status.clone()?;
                let settled = st.replicas == n
                    && st.ready_replicas.unwrap_or(0) == n
                    && st.available_replicas.unwrap_or(0) == n
                    && st.observed_generation == s.metadata.generation;
                settled.then_some(s)
            }
        },
    )
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn statefulset_scales_up_and_down_in_order_with_claims() {
    let c = Cluster::start(Backend::Embedded).await;
    let client = client(&c);
    let _kubelets = start_kubelets(&c, "n1");
    let _cm = start_manager(&c, &["statefulset"]);
    create_node(&client, "n1", json!({}), json!([])).await;
    let (_watch, mut rx) = record_pods(&client, "web").await;
    apply(&c, WEB);
    let out = kubectl(
        &c,
        &["rollout", "status", "statefulset/web", "--timeout=90s"],
    );
    assert!(out.contains("roll out complete"), "{out}");
    sts_settles(&client, "web", 3).await;
    let events = drain(&mut rx);
    // Under OrderedReady, pod N+1 appears only once pod N is Ready.
    for (prev, next) in [("web-0", "web-1"), ("web-1", "web-2")] {
        let ready = first(&events, prev, |s| *s == Seen::Exists(true));
        let created = first(&events, next, |_| true);
        assert!(
            ready.is_some() && ready < created,
            "{next} before {prev} was ready: {events:?}"
        );
    }
    let pods = live_pods(&client, "web").await;
    assert_eq!(pods.len(), 3);
    for p in &pods {
        let name = p.name_any();
        let labels = p.labels();
        assert_eq!(
            labels.get("statefulset.kubernetes.io/pod-name"),
            Some(&name)
        );
        let index = name.trim_start_matches("web-");
        assert_eq!(
            labels
                .get("apps.kubernetes.io/pod-index")
                .map(String::as_str),
            Some(index)
        );
        let spec = p.spec.clone().unwrap_or_default();
        assert_eq!(spec.hostname.as_ref(), Some(&name));
        assert_eq!(spec.subdomain.as_deref(), Some("nginx"));
        let claim = spec
            .volumes
            .unwrap_or_default()
            .into_iter()
            .find(|v| v.name == "www")
            .and_then(|v| v.persistent_volume_claim)
            .map(|c| c.claim_name);
        assert_eq!(claim, Some(format!("www-{name}")));
    }
    let pvcs: Api<PersistentVolumeClaim> = Api::namespaced(client.clone(), "default");
    let claims = |pvcs: Api<PersistentVolumeClaim>| async move {
        let mut names: Vec<String> = pvcs
            .list(&ListParams::default().labels("app=web"))
            .await
            .map(|l| l.items.iter().map(|c| c.name_any()).collect())
            .unwrap_or_default();
        names.sort();
        names
    };
    assert_eq!(
        claims(pvcs.clone()).await,
        ["www-web-0", "www-web-1", "www-web-2"]
    );

    kubectl(&c, &["scale", "statefulset", "web", "--replicas=5"]);
    sts_settles(&client, "web", 5).await;
    drain(&mut rx);
    kubectl(&c, &["scale", "statefulset", "web", "--replicas=2"]);
    sts_settles(&client, "web", 2).await;
    eventually("web-2..4 to be gone", || {
        let client = client.clone();
        async move { (live_pods(&client, "web").await.len() == 2).then_some(()) }
    })
    .await;
    let events = drain(&mut rx);
    // Highest ordinal first, each only once the one above it is gone.
    for (higher, lower) in [("web-4", "web-3"), ("web-3", "web-2")] {
        let gone = first(&events, higher, |s| *s == Seen::Gone);
        let deleting = first(&events, lower, |s| matches!(s, Seen::Deleting | Seen::Gone));
        assert!(
            gone.is_some() && gone < deleting,
            "{lower} deleted before {higher} was gone: {events:?}"
        );
    }
    let names: Vec<String> = live_pods(&client, "web")
        .await
        .iter()
        .map(|p| p.name_any())
        .collect();
    assert!(
        names.contains(&"web-0".to_string()) && names.contains(&"web-1".to_string()),
        "{names:?}"
    );
    // Claims are retained (persistentVolumeClaimRetentionPolicy defaults to Retain).
    assert_eq!(claims(pvcs).await.len(), 5);
    let described = kubectl(&c, &["describe", "statefulset", "web"]);
    assert!(
        described.contains("create Pod web-0 in StatefulSet web successful"),
        "{described}"
    );
    assert!(
        described.contains("delete Pod web-4 in StatefulSet web successful"),
        "{described}"
    );
    assert!(
        described.contains("create Claim www-web-0 Pod web-0 in StatefulSet web success"),
        "{described}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn statefulset_rolling_update_honours_the_partition_and_parallel_creates_at_once() {
    let c = Cluster::start(Backend::Embedded).await;
    let client = client(&c);
    let _kubelets = start_kubelets(&c, "n1");
    let _cm = start_manager(&c, &["statefulset", "garbagecollector"]);
    create_node(&client, "n1", json!({}), json!([])).await;
    apply(&c, WEB);
    sts_settles(&client, "web", 3).await;
    let (_watch, mut rx) = record_pods(&client, "web").await;

    let partition = json!({"spec": {"updateStrategy": {"type": "RollingUpdate", "rollingUpdate": {"partition": 1}}}});
    let sts: Api<StatefulSet> = Api::namespaced(client.clone(), "default");
    sts.patch("web", &PatchParams::default(), &Patch::Merge(partition))
        .await
        .expect("set partition");
    kubectl(&c, &["set", "image", "statefulset/web", "nginx=nginx:1.28"]);
    let out = kubectl(
        &c,
        &["rollout", "status", "statefulset/web", "--timeout=90s"],
    );
    assert!(
        out.contains("partitioned roll out complete: 2 new pods"),
        "{out}"
    );
    let web = sts_settles(&client, "web", 3).await;
    let st = web.status.clone().unwrap_or_default();
    assert_ne!(st.current_revision, st.update_revision);
    assert_eq!(st.updated_replicas, Some(2));
    let images: BTreeMap<String, (String, String)> = live_pods(&client, "web")
        .await
        .iter()
        .map(|p| {
            let rev = p
                .labels()
                .get("controller-revision-hash")
                .cloned()
                .unwrap_or_default();
            (p.name_any(), (image(p), rev))
        })
        .collect();
    let update = st.update_revision.clone().unwrap_or_default();
    let current = st.current_revision.clone().unwrap_or_default();
    assert_eq!(
        images["web-0"],
        ("nginx:1.27".to_string(), current),
        "{images:?}"
    );
    assert_eq!(
        images["web-1"],
        ("nginx:1.28".to_string(), update.clone()),
        "{images:?}"
    );
    assert_eq!(
        images["web-2"],
        ("nginx:1.28".to_string(), update.clone()),
        "{images:?}"
    );
    let events = drain(&mut rx);
    let two = first(&events, "web-2", |s| *s == Seen::Deleting);
    let one = first(&events, "web-1", |s| *s == Seen::Deleting);
    assert!(
        two.is_some() && two < one,
        "highest ordinal first: {events:?}"
    );
    assert_eq!(
        first(&events, "web-0", |s| *s == Seen::Deleting),
        None,
        "{events:?}"
    );

    // Lifting the partition finishes the update; the update revision becomes current.
    let all = json!({"spec": {"updateStrategy": {"rollingUpdate": {"partition": 0}}}});
    sts.patch("web", &PatchParams::default(), &Patch::Merge(all))
        .await
        .expect("lift partition");
    let out = kubectl(
        &c,
        &["rollout", "status", "statefulset/web", "--timeout=90s"],
    );
    assert!(
        out.contains("partitioned roll out complete: 3 new pods"),
        "{out}"
    );
    eventually("the update revision to become current", || {
        let sts = sts.clone();
        let update = update.clone();
        async move {
            let st = sts.get("web").await.ok()?.status?;
            (st.current_revision.as_deref() == Some(update.as_str())
                && st.current_replicas == Some(3))
            .then_some(())
        }
    })
    .await;
    assert!(live_pods(&client, "web")
        .await
        .iter()
        .all(|p| image(p) == "nginx:1.28"));

    // Parallel: every pod is created at once, without waiting for readiness (the simulator
    // keeps these unready), from ordinal `ordinals.start`; with the Delete retention policy
    // claims go with scaled-away pods and with the set.
    let db = r#"
apiVersion: apps/v1
kind: StatefulSet
metadata:
  name: db
spec:
  serviceName: db
  replicas: 3
  podManagementPolicy: Parallel
  ordinals:
    start: 1
  persistentVolumeClaimRetentionPolicy:
    whenDeleted: Delete
    whenScaled: Delete
  volumeClaimTemplates:
  - metadata:
      name: data
    spec:
      accessModes: ["ReadWriteOnce"]
      resources:
        requests:
          storage: 1Gi
  selector:
    matchLabels:
      app: db
  template:
    metadata:
      labels:
        app: db
        sim-ready: "false"
    spec:
      containers:
      - name: db
        image: postgres:17
"#;
    apply(&c, db);
    eventually("three unready db pods", || {
        let client = client.clone();
        async move {
            let pods = live_pods(&client, "db").await;
            let running = pods
                .iter()
                .filter(|p| p.status.as_ref().and_then(|s| s.phase.as_deref()) == Some("Running"))
                .count();
            (pods.len() == 3 && running == 3).then_some(())
        }
    })
    .await;
    let dbs: Api<StatefulSet> = Api::namespaced(client.clone(), "default");
    let st = dbs.get("db").await.expect("db").status.unwrap_or_default();
    assert_eq!(st.ready_replicas.unwrap_or(0), 0);
    let mut names: Vec<String> = live_pods(&client, "db")
        .await
        .iter()
        .map(|p| p.name_any())
        .collect();
    names.sort();
    assert_eq!(names, ["db-1", "db-2", "db-3"]);
    let pvcs: Api<PersistentVolumeClaim> = Api::namespaced(client.clone(), "default");
    let db_claims = || {
        let pvcs = pvcs.clone();
        async move {
            let mut names: Vec<String> = pvcs
                .list(&ListParams::default().labels("app=db"))
                .await
                .map(|l| l.items.iter().map(|c| c.name_any()).collect())
                .unwrap_or_default();
            names.sort();
            names
        }
    };
    assert_eq!(db_claims().await, ["data-db-1", "data-db-2", "data-db-3"]);
    kubectl(&c, &["scale", "statefulset", "db", "--replicas=1"]);
    eventually("claims of scaled-away db pods to be deleted", || async {
        (db_claims().await == ["data-db-1"]).then_some(())
    })
    .await;
    kubectl(&c, &["delete", "statefulset", "db"]);
    eventually("the remaining claim to go with the set", || async {
        db_claims().await.is_empty().then_some(())
    })
    .await;
}

/// OnDelete: a template change replaces nothing by itself; a pod the user deletes comes back
/// at the update revision, the others stay at the current one.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn statefulset_on_delete_updates_only_deleted_pods() {
    let c = Cluster::start(Backend::Embedded).await;
    let client = client(&c);
    let _kubelets = start_kubelets(&c, "n1");
    let _cm = start_manager(&c, &["statefulset"]);
    create_node(&client, "n1", json!({}), json!([])).await;
    let on_delete = WEB.replace(
        "  replicas: 3\n",
        "  replicas: 3\n  updateStrategy:\n    type: OnDelete\n",
    );
    apply(&c, &on_delete);
    sts_settles(&client, "web", 3).await;
    kubectl(&c, &["set", "image", "statefulset/web", "nginx=nginx:1.28"]);
    let pods: Api<Pod> = Api::namespaced(client.clone(), "default");
    let old = pods.get("web-1").await.expect("web-1");
    pods.delete("web-1", &DeleteParams::default())
        .await
        .expect("delete web-1");
    eventually("web-1 to come back at the new image", || {
        let pods = pods.clone();
        let uid = old.uid();
        async move {
            let p = pods.get("web-1").await.ok()?;
            (p.uid() != uid && image(&p) == "nginx:1.28").then_some(())
        }
    })
    .await;
    let web = sts_settles(&client, "web", 3).await;
    let st = web.status.unwrap_or_default();
    assert_eq!(st.updated_replicas, Some(1), "{st:?}");
    assert_eq!(st.current_replicas, Some(2), "{st:?}");
    let images: BTreeMap<String, String> = live_pods(&client, "web")
        .await
        .iter()
        .map(|p| (p.name_any(), image(p)))
        .collect();
    assert_eq!(images["web-0"], "nginx:1.27", "{images:?}");
    assert_eq!(images["web-2"], "nginx:1.27", "{images:?}");
}
