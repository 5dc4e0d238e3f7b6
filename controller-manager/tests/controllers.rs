//! The controller manager against a real in-process API server, with a simulated node that
//! binds pods and reports them running and ready (no scheduler or node agent exists yet), and
//! the real kubectl 1.32 driving the workloads.

use std::future::Future;
use std::time::Duration;

use e2e::{Backend, Cluster};
use futures::StreamExt;
use k8s_openapi::api::apps::v1::{Deployment, ReplicaSet};
use k8s_openapi::api::core::v1::Pod;
use kube::api::{Api, DeleteParams, ListParams, Patch, PatchParams, PostParams};
use kube::runtime::{watcher, WatchStreamExt};
use kube::{Client, ResourceExt};
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

fn start_manager(c: &Cluster) -> Task {
    let config = controller_manager::Config::new(client(c));
    Task(tokio::spawn(async move {
        if let Err(e) = controller_manager::run(config, std::future::pending(), |_| {}).await {
            panic!("controller manager failed: {e}");
        }
    }))
}

/// A controller manager serving `/metrics` on a free port, with `controllers` enabled; the
/// reconcile counters tell a test when a controller has acted on what it did.
async fn start_serving_manager(c: &Cluster, controllers: &[&str]) -> (Task, std::net::SocketAddr) {
    let mut config = controller_manager::Config::new(client(c));
    config.serve = Some("127.0.0.1:0".parse().expect("addr"));
    config.controllers = controllers.iter().map(|s| s.to_string()).collect();
    let (tx, rx) = tokio::sync::oneshot::channel();
    let task = Task(tokio::spawn(async move {
        let on_serving = move |a| {
            let _ = tx.send(a);
        };
        if let Err(e) = controller_manager::run(config, std::future::pending(), on_serving).await {
            panic!("controller manager failed: {e}");
        }
    }));
    let addr = tokio::time::timeout(HANG, rx)
        .await
        .expect("serving")
        .expect("address");
    (task, addr)
}

/// Reconciles `controller` has finished so far (`controller_reconcile_total`, all results).
async fn reconciles(addr: std::net::SocketAddr, controller: &str) -> u64 {
    let label = format!("controller=\"{controller}\"");
    http_get(addr, "/metrics")
        .await
        .lines()
        .filter(|l| l.starts_with("controller_reconcile_total{") && l.contains(&label))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum::<f64>() as u64
}

/// Waits until `controller` has finished more than `above` reconciles.
async fn reconciled_beyond(addr: std::net::SocketAddr, controller: &str, above: u64) {
    eventually(&format!("a {controller} reconcile"), || async move {
        (reconciles(addr, controller).await > above).then_some(())
    })
    .await;
}

/// A node simulator: binds every unbound pod to `sim-node`, marks bound pods Running and
/// Ready with a pod IP, and finishes graceful deletions (what a kubelet would do).
fn start_node(c: &Cluster) -> Task {
    let client = client(c);
    Task(tokio::spawn(async move {
        let nodes: Api<k8s_openapi::api::core::v1::Node> = Api::all(client.clone());
        let node = json!({"apiVersion": "v1", "kind": "Node", "metadata": {"name": "sim-node"}});
        if let Ok(node) = serde_json::from_value(node) {
            // Already registered by an earlier simulator of this cluster is fine.
            let _ = nodes.create(&PostParams::default(), &node).await;
        }
        let all: Api<Pod> = Api::all(client.clone());
        let mut events = watcher(all, watcher::Config::default())
            .default_backoff()
            .applied_objects()
            .boxed();
        let mut ip = 0u32;
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
            let node = pod.spec.as_ref().and_then(|s| s.node_name.clone());
            if node.is_none_or(|n| n.is_empty()) {
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
                    eprintln!("sim-node: binding {ns}/{name}: {e}");
                }
                continue;
            }
            let phase = pod.status.as_ref().and_then(|s| s.phase.clone());
            // A pod labelled `sim-exit` runs to completion: Succeeded for "0", else Failed.
            if let Some(code) = pod.labels().get("sim-exit") {
                if phase.as_deref() == Some("Succeeded") || phase.as_deref() == Some("Failed") {
                    continue;
                }
                let phase = if code == "0" { "Succeeded" } else { "Failed" };
                let status = json!({"status": {"phase": phase, "podIP": "10.244.9.9"}});
                if let Err(e) = api
                    .patch_status(&name, &PatchParams::default(), &Patch::Merge(status))
                    .await
                {
                    eprintln!("sim-node: status of {ns}/{name}: {e}");
                }
                continue;
            }
            if phase.as_deref() != Some("Running") {
                ip += 1;
                let now = k8s_openapi::jiff::Timestamp::now().to_string();
                let cond =
                    |t: &str| json!({"type": t, "status": "True", "lastTransitionTime": now});
                let status = json!({"status": {
                    "phase": "Running",
                    "podIP": format!("10.244.{}.{}", ip / 250, ip % 250 + 1),
                    "hostIP": "10.0.0.1",
                    "startTime": now,
                    "conditions": [cond("PodScheduled"), cond("Initialized"), cond("ContainersReady"), cond("Ready")],
                }});
                if let Err(e) = api
                    .patch_status(&name, &PatchParams::default(), &Patch::Merge(status))
                    .await
                {
                    eprintln!("sim-node: status of {ns}/{name}: {e}");
                }
            }
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

fn kubectl(c: &Cluster, args: &[&str]) -> String {
    tokio::task::block_in_place(|| c.must(args))
}

fn apply(c: &Cluster, yaml: &str) {
    tokio::task::block_in_place(|| c.apply(yaml, &[]));
}

/// Pods in `ns` with label `app=<app>` that are not being deleted.
async fn live_pods(client: &Client, ns: &str, app: &str) -> Vec<Pod> {
    let api: Api<Pod> = Api::namespaced(client.clone(), ns);
    let list = api
        .list(&ListParams::default().labels(&format!("app={app}")))
        .await
        .expect("list pods");
    list.items
        .into_iter()
        .filter(|p| p.metadata.deletion_timestamp.is_none())
        .collect()
}

const RS: &str = r#"
apiVersion: apps/v1
kind: ReplicaSet
metadata:
  name: frontend
spec:
  replicas: 3
  selector:
    matchLabels:
      app: frontend
  template:
    metadata:
      labels:
        app: frontend
    spec:
      containers:
      - name: web
        image: nginx:1.27
"#;

async fn rs_settles(client: &Client, name: &str, n: i32) -> ReplicaSet {
    let api: Api<ReplicaSet> = Api::namespaced(client.clone(), "default");
    eventually(
        &format!("ReplicaSet {name} to have {n} ready replicas"),
        || {
            let api = api.clone();
            async move {
                let rs = api.get(name).await.ok()?;
                let st = rs.status.clone()?;
                let settled = st.replicas == n
                    && st.ready_replicas.unwrap_or(0) == n
                    && st.available_replicas.unwrap_or(0) == n
                    && st.observed_generation == rs.metadata.generation;
                settled.then_some(rs)
            }
        },
    )
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replicaset_creates_exact_pods_scales_and_reports_ready() {
    let c = Cluster::start(Backend::Embedded).await;
    let client = client(&c);
    let _node = start_node(&c);
    let _cm = start_manager(&c);
    apply(&c, RS);
    let rs = rs_settles(&client, "frontend", 3).await;
    let pods = live_pods(&client, "default", "frontend").await;
    assert_eq!(pods.len(), 3, "exactly 3 pods");
    for p in &pods {
        let name = p.name_any();
        let suffix = name
            .strip_prefix("frontend-")
            .expect("named after the ReplicaSet");
        assert_eq!(suffix.len(), 5, "5 random characters: {name}");
        let refs = p.owner_references();
        assert_eq!(refs.len(), 1);
        assert_eq!(refs[0].kind, "ReplicaSet");
        assert_eq!(refs[0].uid, rs.uid().unwrap_or_default());
        assert_eq!(refs[0].controller, Some(true));
        assert_eq!(refs[0].block_owner_deletion, Some(true));
    }
    let fully = rs.status.as_ref().and_then(|s| s.fully_labeled_replicas);
    assert_eq!(fully, Some(3));
    let events: Api<k8s_openapi::api::core::v1::Event> = Api::namespaced(client.clone(), "default");
    eventually("SuccessfulCreate events", || {
        let events = events.clone();
        async move {
            let list = events.list(&ListParams::default()).await.ok()?;
            list.items
                .iter()
                .any(|e| e.reason.as_deref() == Some("SuccessfulCreate"))
                .then_some(())
        }
    })
    .await;

    let described = kubectl(&c, &["describe", "rs", "frontend"]);
    assert!(described.contains("SuccessfulCreate"), "{described}");
    kubectl(&c, &["scale", "rs", "frontend", "--replicas=5"]);
    rs_settles(&client, "frontend", 5).await;
    assert_eq!(live_pods(&client, "default", "frontend").await.len(), 5);

    kubectl(&c, &["scale", "rs", "frontend", "--replicas=1"]);
    rs_settles(&client, "frontend", 1).await;
    eventually("one pod left", || {
        let client = client.clone();
        async move { (live_pods(&client, "default", "frontend").await.len() == 1).then_some(()) }
    })
    .await;
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
        image: nginx:1.27
"#;

/// ReplicaSets of `app=web` in `default`, as (name, spec replicas, image).
async fn web_replicasets(client: &Client) -> Vec<(String, i32, String)> {
    let api: Api<ReplicaSet> = Api::namespaced(client.clone(), "default");
    let list = api
        .list(&ListParams::default().labels("app=web"))
        .await
        .expect("list ReplicaSets");
    list.items
        .into_iter()
        .map(|rs| {
            let spec = rs.spec.clone().unwrap_or_default();
            let image = spec
                .template
                .and_then(|t| t.spec)
                .and_then(|s| s.containers.first().and_then(|c| c.image.clone()))
                .unwrap_or_default();
            (rs.name_any(), spec.replicas.unwrap_or(0), image)
        })
        .collect()
}

fn rollout_status(c: &Cluster) -> String {
    kubectl(c, &["rollout", "status", "deployment/web", "--timeout=90s"])
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deployment_rollout_set_image_and_undo() {
    let c = Cluster::start(Backend::Embedded).await;
    let client = client(&c);
    let _node = start_node(&c);
    let _cm = start_manager(&c);
    apply(&c, WEB);
    let out = rollout_status(&c);
    assert!(out.contains("successfully rolled out"), "{out}");
    let rss = web_replicasets(&client).await;
    assert_eq!(rss.len(), 1, "{rss:?}");
    let api: Api<ReplicaSet> = Api::namespaced(client.clone(), "default");
    let first = api.get(&rss[0].0).await.expect("ReplicaSet");
    let hash = first
        .labels()
        .get("pod-template-hash")
        .cloned()
        .expect("hash label");
    assert_eq!(first.name_any(), format!("web-{hash}"));
    assert_eq!(
        first
            .annotations()
            .get("deployment.kubernetes.io/revision")
            .map(String::as_str),
        Some("1")
    );
    assert_eq!(live_pods(&client, "default", "web").await.len(), 3);

    kubectl(&c, &["set", "image", "deployment/web", "web=nginx:1.28"]);
    let out = rollout_status(&c);
    assert!(out.contains("successfully rolled out"), "{out}");
    let rss = web_replicasets(&client).await;
    assert_eq!(rss.len(), 2, "{rss:?}");
    assert!(
        rss.iter().any(|r| r.1 == 3 && r.2 == "nginx:1.28"),
        "{rss:?}"
    );
    assert!(
        rss.iter().any(|r| r.1 == 0 && r.2 == "nginx:1.27"),
        "{rss:?}"
    );
    eventually("old pods gone", || {
        let client = client.clone();
        async move {
            let pods = live_pods(&client, "default", "web").await;
            let images: Vec<_> = pods
                .iter()
                .filter_map(|p| p.spec.as_ref()?.containers.first()?.image.clone())
                .collect();
            (images.len() == 3 && images.iter().all(|i| i == "nginx:1.28")).then_some(())
        }
    })
    .await;

    kubectl(&c, &["rollout", "undo", "deployment/web"]);
    let out = rollout_status(&c);
    assert!(out.contains("successfully rolled out"), "{out}");
    let rss = web_replicasets(&client).await;
    assert_eq!(rss.len(), 2, "undo reuses the old ReplicaSet: {rss:?}");
    assert!(
        rss.iter().any(|r| r.1 == 3 && r.2 == "nginx:1.27"),
        "{rss:?}"
    );
    let restored = api.get(&first.name_any()).await.expect("old ReplicaSet");
    assert_eq!(
        restored
            .annotations()
            .get("deployment.kubernetes.io/revision")
            .map(String::as_str),
        Some("3")
    );
    let d: Api<Deployment> = Api::namespaced(client.clone(), "default");
    let d = d.get("web").await.expect("deployment");
    let image = d
        .spec
        .and_then(|s| s.template.spec)
        .and_then(|s| s.containers.first().and_then(|c| c.image.clone()));
    assert_eq!(image.as_deref(), Some("nginx:1.27"));

    kubectl(
        &c,
        &[
            "annotate",
            "deployment/web",
            "kubernetes.io/change-cause=restart for test",
        ],
    );
    kubectl(&c, &["rollout", "restart", "deployment/web"]);
    let out = rollout_status(&c);
    assert!(out.contains("successfully rolled out"), "{out}");
    assert_eq!(web_replicasets(&client).await.len(), 3);
    let history = kubectl(&c, &["rollout", "history", "deployment/web"]);
    assert!(
        history
            .lines()
            .any(|l| l.starts_with('4') && l.contains("restart for test")),
        "{history}"
    );
}

async fn no_web_objects_left(client: &Client) {
    eventually("ReplicaSets and pods of web to be deleted", || {
        let client = client.clone();
        async move {
            let rss = web_replicasets(&client).await;
            let api: Api<Pod> = Api::namespaced(client.clone(), "default");
            let pods = api
                .list(&ListParams::default().labels("app=web"))
                .await
                .ok()?;
            (rss.is_empty() && pods.items.is_empty()).then_some(())
        }
    })
    .await;
}

async fn deployment_gone(client: &Client) {
    let api: Api<Deployment> = Api::namespaced(client.clone(), "default");
    eventually("Deployment web to be gone", || {
        let api = api.clone();
        async move {
            matches!(api.get("web").await, Err(kube::Error::Api(s)) if s.code == 404).then_some(())
        }
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deleting_a_deployment_cascades_background_foreground_and_orphan() {
    let c = Cluster::start(Backend::Embedded).await;
    let client = client(&c);
    let _node = start_node(&c);
    let (_cm, metrics) = start_serving_manager(&c, &["*"]).await;

    // Background (kubectl's default).
    apply(&c, WEB);
    rollout_status(&c);
    kubectl(&c, &["delete", "deployment", "web"]);
    deployment_gone(&client).await;
    no_web_objects_left(&client).await;

    // Foreground: the Deployment stays until its dependents are gone.
    apply(&c, WEB);
    rollout_status(&c);
    kubectl(&c, &["delete", "deployment", "web", "--cascade=foreground"]);
    deployment_gone(&client).await;
    no_web_objects_left(&client).await;

    // Orphan: ReplicaSets and pods stay, without the Deployment's reference.
    apply(&c, WEB);
    rollout_status(&c);
    let gc_before = reconciles(metrics, "garbagecollector").await;
    kubectl(&c, &["delete", "deployment", "web", "--cascade=orphan"]);
    deployment_gone(&client).await;
    let api: Api<ReplicaSet> = Api::namespaced(client.clone(), "default");
    let rss = api
        .list(&ListParams::default().labels("app=web"))
        .await
        .expect("list");
    assert_eq!(rss.items.len(), 1);
    assert!(
        rss.items[0].owner_references().is_empty(),
        "{:?}",
        rss.items[0].metadata
    );
    // Once the collector has processed the deletion, the pods must still be there.
    reconciled_beyond(metrics, "garbagecollector", gc_before).await;
    assert_eq!(live_pods(&client, "default", "web").await.len(), 3);
    assert_eq!(web_replicasets(&client).await.len(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn namespaces_get_a_default_service_account_and_deletion_empties_them() {
    let c = Cluster::start(Backend::Embedded).await;
    let client = client(&c);
    let _node = start_node(&c);
    let _cm = start_manager(&c);
    kubectl(&c, &["create", "namespace", "team"]);
    let sas: Api<k8s_openapi::api::core::v1::ServiceAccount> =
        Api::namespaced(client.clone(), "team");
    eventually("a default ServiceAccount in team", || {
        let sas = sas.clone();
        async move { sas.get("default").await.ok() }
    })
    .await;
    // Deleted, it comes back.
    sas.delete("default", &DeleteParams::default())
        .await
        .expect("delete sa");
    eventually("the default ServiceAccount to be recreated", || {
        let sas = sas.clone();
        async move {
            sas.get("default")
                .await
                .ok()
                .filter(|sa| sa.metadata.deletion_timestamp.is_none())
        }
    })
    .await;

    kubectl(
        &c,
        &[
            "-n",
            "team",
            "create",
            "deployment",
            "app",
            "--image=nginx:1.27",
            "--replicas=2",
        ],
    );
    kubectl(
        &c,
        &[
            "-n",
            "team",
            "create",
            "configmap",
            "settings",
            "--from-literal=a=b",
        ],
    );
    kubectl(
        &c,
        &[
            "-n",
            "team",
            "rollout",
            "status",
            "deployment/app",
            "--timeout=90s",
        ],
    );
    kubectl(&c, &["delete", "namespace", "team", "--wait=false"]);
    let namespaces: Api<k8s_openapi::api::core::v1::Namespace> = Api::all(client.clone());
    eventually("namespace team to be deleted", || {
        let namespaces = namespaces.clone();
        async move {
            matches!(namespaces.get("team").await, Err(kube::Error::Api(s)) if s.code == 404)
                .then_some(())
        }
    })
    .await;
    let pods: Api<Pod> = Api::namespaced(client.clone(), "team");
    assert!(pods
        .list(&ListParams::default())
        .await
        .expect("list")
        .items
        .is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn restarting_the_manager_mid_rollout_converges_without_extra_pods() {
    let c = Cluster::start(Backend::Embedded).await;
    let client = client(&c);
    let node = start_node(&c);
    let cm = start_manager(&c);
    apply(&c, WEB);
    rollout_status(&c);
    // Without a node the new pods never become ready, so the rollout stops after the surge.
    drop(node);
    kubectl(&c, &["set", "image", "deployment/web", "web=nginx:1.28"]);
    eventually("the surge pod of the new ReplicaSet", || {
        let client = client.clone();
        async move {
            let rss = web_replicasets(&client).await;
            let pods = live_pods(&client, "default", "web").await;
            (rss.len() == 2 && pods.len() == 4).then_some(())
        }
    })
    .await;
    drop(cm);
    let (_cm, metrics) = start_serving_manager(&c, &["*"]).await;
    // Once the new manager has reconciled the Deployment and both ReplicaSets from its fresh
    // caches, it must not have added pods.
    reconciled_beyond(metrics, "deployment", 0).await;
    reconciled_beyond(metrics, "replicaset", 1).await;
    assert_eq!(live_pods(&client, "default", "web").await.len(), 4);
    let _node = start_node(&c);
    let out = rollout_status(&c);
    assert!(out.contains("successfully rolled out"), "{out}");
    eventually("exactly the 3 new pods", || {
        let client = client.clone();
        async move {
            let pods = live_pods(&client, "default", "web").await;
            let images: Vec<_> = pods
                .iter()
                .filter_map(|p| p.spec.as_ref()?.containers.first()?.image.clone())
                .collect();
            (images.len() == 3 && images.iter().all(|i| i == "nginx:1.28")).then_some(())
        }
    })
    .await;
    assert_eq!(web_replicasets(&client).await.len(), 2);
}

/// `GET path` over plain HTTP/1.0; returns the whole response.
async fn http_get(addr: std::net::SocketAddr, path: &str) -> String {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut s = tokio::net::TcpStream::connect(addr).await.expect("connect");
    s.write_all(format!("GET {path} HTTP/1.0\r\nHost: x\r\n\r\n").as_bytes())
        .await
        .expect("write");
    let mut out = String::new();
    s.read_to_string(&mut out).await.expect("read");
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replaced_pods_healthz_metrics_and_disabled_controllers() {
    let c = Cluster::start(Backend::Embedded).await;
    let client = client(&c);
    let _node = start_node(&c);
    let (_cm, addr) = start_serving_manager(&c, &["*", "-serviceaccount"]).await;

    apply(&c, &RS.replace("replicas: 3", "replicas: 2"));
    rs_settles(&client, "frontend", 2).await;
    // A pod deleted without grace is replaced.
    let victim = live_pods(&client, "default", "frontend").await[0].name_any();
    let pods: Api<Pod> = Api::namespaced(client.clone(), "default");
    pods.delete(&victim, &DeleteParams::default().grace_period(0))
        .await
        .expect("delete pod");
    eventually("a replacement pod", || {
        let client = client.clone();
        let victim = victim.clone();
        async move {
            let pods = live_pods(&client, "default", "frontend").await;
            (pods.len() == 2 && pods.iter().all(|p| p.name_any() != victim)).then_some(())
        }
    })
    .await;

    let health = http_get(addr, "/healthz").await;
    assert!(
        health.starts_with("HTTP/1.0 200") || health.starts_with("HTTP/1.1 200"),
        "{health}"
    );
    let metrics = http_get(addr, "/metrics").await;
    assert!(
        metrics
            .contains("controller_reconcile_total{controller=\"replicaset\",result=\"success\"}"),
        "{metrics}"
    );
    assert!(
        metrics.contains("controller_reconcile_duration_seconds_bucket"),
        "{metrics}"
    );

    // The disabled serviceaccount controller leaves a new namespace alone.
    let seen = reconciles(addr, "namespace").await;
    kubectl(&c, &["create", "namespace", "quiet"]);
    // The namespace informer (the one the serviceaccount controller would share) has
    // delivered "quiet" once the namespace controller reconciled it.
    reconciled_beyond(addr, "namespace", seen).await;
    let sas: Api<k8s_openapi::api::core::v1::ServiceAccount> =
        Api::namespaced(client.clone(), "quiet");
    assert!(sas
        .list(&ListParams::default())
        .await
        .expect("list")
        .items
        .is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn recreate_strategy_and_paused_deployments() {
    let c = Cluster::start(Backend::Embedded).await;
    let client = client(&c);
    let _node = start_node(&c);
    let _cm = start_manager(&c);
    let recreate = WEB.replace(
        "  replicas: 3\n",
        "  replicas: 3\n  strategy:\n    type: Recreate\n",
    );
    apply(&c, &recreate);
    rollout_status(&c);

    kubectl(&c, &["rollout", "pause", "deployment/web"]);
    kubectl(&c, &["set", "image", "deployment/web", "web=nginx:1.28"]);
    // Paused: the template change makes no new ReplicaSet.
    let d: Api<Deployment> = Api::namespaced(client.clone(), "default");
    eventually("the paused Deployment's status to be observed", || {
        let d = d.clone();
        async move {
            let d = d.get("web").await.ok()?;
            let st = d.status.clone()?;
            let paused = st
                .conditions
                .iter()
                .flatten()
                .any(|c| c.reason.as_deref() == Some("DeploymentPaused"));
            (st.observed_generation == d.metadata.generation && paused).then_some(())
        }
    })
    .await;
    assert_eq!(web_replicasets(&client).await.len(), 1);
    // Scaling still works while paused.
    kubectl(&c, &["scale", "deployment/web", "--replicas=2"]);
    eventually("the paused Deployment to scale to 2", || {
        let client = client.clone();
        async move {
            let rss = web_replicasets(&client).await;
            let pods = live_pods(&client, "default", "web").await;
            (rss.len() == 1 && rss[0].1 == 2 && pods.len() == 2).then_some(())
        }
    })
    .await;

    kubectl(&c, &["rollout", "resume", "deployment/web"]);
    let out = rollout_status(&c);
    assert!(out.contains("successfully rolled out"), "{out}");
    let rss = web_replicasets(&client).await;
    assert!(
        rss.iter().any(|r| r.1 == 2 && r.2 == "nginx:1.28"),
        "{rss:?}"
    );
    assert!(
        rss.iter().any(|r| r.1 == 0 && r.2 == "nginx:1.27"),
        "{rss:?}"
    );
    let described = kubectl(&c, &["describe", "deployment", "web"]);
    assert!(described.contains("ScalingReplicaSet"), "{described}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn services_get_endpoints_and_endpointslices_of_ready_pods() {
    let c = Cluster::start(Backend::Embedded).await;
    let client = client(&c);
    let _node = start_node(&c);
    let _cm = start_manager(&c);
    apply(
        &c,
        r#"
apiVersion: v1
kind: Service
metadata:
  name: frontend
spec:
  selector:
    app: frontend
  ports:
  - name: http
    port: 80
    targetPort: 8080
"#,
    );
    apply(&c, &RS.replace("replicas: 3", "replicas: 2"));
    rs_settles(&client, "frontend", 2).await;
    let eps: Api<k8s_openapi::api::core::v1::Endpoints> =
        Api::namespaced(client.clone(), "default");
    let slices: Api<k8s_openapi::api::discovery::v1::EndpointSlice> =
        Api::namespaced(client.clone(), "default");
    let ready_ips = |n: usize| {
        let eps = eps.clone();
        let slices = slices.clone();
        async move {
            let ep = eps.get("frontend").await.ok()?;
            let subsets = ep.subsets.unwrap_or_default();
            let addrs: usize = subsets
                .iter()
                .map(|s| s.addresses.as_ref().map_or(0, Vec::len))
                .sum();
            let port_ok = subsets
                .iter()
                .all(|s| s.ports.iter().flatten().all(|p| p.port == 8080));
            let sl = slices
                .list(&ListParams::default().labels("kubernetes.io/service-name=frontend"))
                .await
                .ok()?;
            let slice_ready: usize = sl
                .items
                .iter()
                .flat_map(|s| s.endpoints.iter())
                .filter(|e| e.conditions.as_ref().and_then(|c| c.ready) == Some(true))
                .count();
            (addrs == n && slice_ready == n && port_ok).then_some(())
        }
    };
    eventually("2 ready endpoints", || ready_ips(2)).await;
    kubectl(&c, &["scale", "rs", "frontend", "--replicas=1"]);
    eventually("1 ready endpoint", || ready_ips(1)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn jobs_run_to_completion_or_fail_after_the_backoff_limit() {
    let c = Cluster::start(Backend::Embedded).await;
    let client = client(&c);
    let _node = start_node(&c);
    let _cm = start_manager(&c);
    let job = |name: &str, exit: &str, completions: u32| {
        format!(
            r#"
apiVersion: batch/v1
kind: Job
metadata:
  name: {name}
spec:
  completions: {completions}
  parallelism: 2
  backoffLimit: 1
  template:
    metadata:
      labels:
        sim-exit: "{exit}"
    spec:
      restartPolicy: Never
      containers:
      - name: work
        image: busybox:1.36
"#
        )
    };
    apply(&c, &job("ok", "0", 3));
    apply(&c, &job("bad", "1", 3));
    kubectl(
        &c,
        &[
            "wait",
            "--for=condition=complete",
            "job/ok",
            "--timeout=90s",
        ],
    );
    kubectl(
        &c,
        &["wait", "--for=condition=failed", "job/bad", "--timeout=90s"],
    );
    let jobs: Api<k8s_openapi::api::batch::v1::Job> = Api::namespaced(client.clone(), "default");
    let ok = jobs.get("ok").await.expect("job");
    let st = ok.status.expect("status");
    assert_eq!(st.succeeded, Some(3));
    assert!(st.completion_time.is_some());
    let pods: Api<Pod> = Api::namespaced(client.clone(), "default");
    let owned = pods
        .list(&ListParams::default())
        .await
        .expect("list")
        .items
        .into_iter()
        .filter(|p| p.owner_references().iter().any(|r| r.name == "ok"))
        .count();
    assert_eq!(owned, 3, "exactly 3 pods for 3 completions");
    let bad = jobs.get("bad").await.expect("job").status.expect("status");
    // Two pods run at once, so a replacement may already be running when the limit is hit.
    assert!(
        bad.failed.unwrap_or(0) >= 2,
        "backoffLimit 1 fails on the second failure: {bad:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pod_gc_keeps_only_the_newest_finished_pods() {
    let c = Cluster::start(Backend::Embedded).await;
    let client = client(&c);
    let _node = start_node(&c);
    let mut config = controller_manager::Config::new(client.clone());
    config.terminated_pod_gc_threshold = 2;
    let _cm = Task(tokio::spawn(async move {
        if let Err(e) = controller_manager::run(config, std::future::pending(), |_| {}).await {
            panic!("controller manager failed: {e}");
        }
    }));
    for i in 0..4 {
        apply(
            &c,
            &format!(
                "apiVersion: v1\nkind: Pod\nmetadata:\n  name: done-{i}\n  labels:\n    app: done\n    sim-exit: \"0\"\nspec:\n  restartPolicy: Never\n  containers:\n  - name: c\n    image: busybox:1.36\n"
            ),
        );
    }
    let pods: Api<Pod> = Api::namespaced(client.clone(), "default");
    eventually("only 2 finished pods left", || {
        let pods = pods.clone();
        async move {
            let list = pods
                .list(&ListParams::default().labels("app=done"))
                .await
                .ok()?;
            let finished = list
                .items
                .iter()
                .filter(|p| p.status.as_ref().and_then(|s| s.phase.as_deref()) == Some("Succeeded"))
                .count();
            (list.items.len() == 2 && finished == 2).then_some(())
        }
    })
    .await;
}

/// Kills the child process when dropped.
struct Child(std::process::Child);

impl Drop for Child {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_binary_runs_the_selected_controllers() {
    let c = Cluster::start(Backend::Embedded).await;
    let client = client(&c);
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("free port")
        .port();
    let _cm = Child(
        std::process::Command::new(env!("CARGO_BIN_EXE_cox-controller-manager"))
            .args([
                "--kubeconfig",
                &c.kubeconfig().display().to_string(),
                "--controllers=serviceaccount",
                "--leader-elect=false",
                "--port",
                &port.to_string(),
            ])
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .expect("start cox-controller-manager"),
    );
    kubectl(&c, &["create", "namespace", "bin"]);
    let sas: Api<k8s_openapi::api::core::v1::ServiceAccount> =
        Api::namespaced(client.clone(), "bin");
    eventually("a default ServiceAccount made by the binary", || {
        let sas = sas.clone();
        async move { sas.get("default").await.ok() }
    })
    .await;
    let addr = std::net::SocketAddr::from(([127, 0, 0, 1], port));
    let health = eventually("/healthz", || async move {
        tokio::net::TcpStream::connect(addr).await.ok()?;
        Some(http_get(addr, "/healthz").await)
    })
    .await;
    assert!(health.contains("200 OK"), "{health}");
}

/// With leader election (the default), two binaries share one Lease: the first holds it and
/// works, the standby takes over once the leader is gone.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_binary_elects_a_leader_and_a_standby_takes_over() {
    let c = Cluster::start(Backend::Embedded).await;
    let client = client(&c);
    let start = || {
        std::process::Command::new(env!("CARGO_BIN_EXE_cox-controller-manager"))
            .args([
                "--kubeconfig",
                &c.kubeconfig().display().to_string(),
                "--controllers=serviceaccount",
                "--port",
                "0",
            ])
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .expect("start cox-controller-manager")
    };
    let leases: Api<k8s_openapi::api::coordination::v1::Lease> =
        Api::namespaced(client.clone(), "kube-system");
    let mut first = Child(start());
    let first_pid = first.0.id();
    let holder = eventually("the first instance leads", || {
        let leases = leases.clone();
        async move {
            let lease = leases.get("kube-controller-manager").await.ok()?;
            lease.spec?.holder_identity
        }
    })
    .await;
    assert!(holder.ends_with(&format!("_{first_pid}")), "{holder}");
    let second = Child(start());
    let second_pid = second.0.id();
    kubectl(&c, &["create", "namespace", "led"]);
    let sas: Api<k8s_openapi::api::core::v1::ServiceAccount> =
        Api::namespaced(client.clone(), "led");
    eventually("the leader works", || {
        let sas = sas.clone();
        async move { sas.get("default").await.ok() }
    })
    .await;
    // Kill the leader without releasing the lease: the standby takes over after it expires.
    let _ = first.0.kill();
    let _ = first.0.wait();
    let holder = eventually("the standby takes over", || {
        let leases = leases.clone();
        async move {
            let lease = leases.get("kube-controller-manager").await.ok()?;
            let holder = lease.spec?.holder_identity?;
            holder
                .ends_with(&format!("_{second_pid}"))
                .then_some(holder)
        }
    })
    .await;
    assert!(holder.ends_with(&format!("_{second_pid}")));
    kubectl(&c, &["create", "namespace", "after"]);
    let sas: Api<k8s_openapi::api::core::v1::ServiceAccount> = Api::namespaced(client, "after");
    eventually("the new leader works", || {
        let sas = sas.clone();
        async move { sas.get("default").await.ok() }
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stuck_rollout_exceeds_its_progress_deadline() {
    let c = Cluster::start(Backend::Embedded).await;
    // No node: the pods never start.
    let _cm = start_manager(&c);
    apply(
        &c,
        &WEB.replace(
            "  replicas: 3\n",
            "  replicas: 3\n  progressDeadlineSeconds: 2\n",
        ),
    );
    let run = tokio::task::block_in_place(|| {
        c.kubectl(&["rollout", "status", "deployment/web", "--timeout=90s"])
    });
    assert!(!run.ok, "{run:?}");
    assert!(
        run.stderr.contains("exceeded its progress deadline"),
        "{run:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn any_kind_is_collected_when_its_owner_goes_and_rollouts_work_on_etcd() {
    let c = Cluster::start(Backend::Etcd).await;
    let client = client(&c);
    let _node = start_node(&c);
    let _cm = start_manager(&c);
    // ConfigMap owned by a Secret: the collector is generic over the resource table.
    kubectl(
        &c,
        &["create", "secret", "generic", "owner", "--from-literal=k=v"],
    );
    let secrets: Api<k8s_openapi::api::core::v1::Secret> =
        Api::namespaced(client.clone(), "default");
    let owner = secrets.get("owner").await.expect("secret");
    let child = json!({
        "apiVersion": "v1", "kind": "ConfigMap",
        "metadata": {"name": "child", "ownerReferences": [{
            "apiVersion": "v1", "kind": "Secret", "name": "owner",
            "uid": owner.uid().unwrap_or_default(),
        }]},
        "data": {"a": "b"},
    });
    let cms: Api<k8s_openapi::api::core::v1::ConfigMap> =
        Api::namespaced(client.clone(), "default");
    let child = serde_json::from_value(child).expect("configmap");
    cms.create(&PostParams::default(), &child)
        .await
        .expect("create child");
    kubectl(&c, &["delete", "secret", "owner"]);
    eventually("the owned ConfigMap to be collected", || {
        let cms = cms.clone();
        async move {
            matches!(cms.get("child").await, Err(kube::Error::Api(s)) if s.code == 404)
                .then_some(())
        }
    })
    .await;

    apply(&c, WEB);
    let out = rollout_status(&c);
    assert!(out.contains("successfully rolled out"), "{out}");
    assert_eq!(live_pods(&client, "default", "web").await.len(), 3);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn controllers_resume_after_an_api_server_restart() {
    let mut c = Cluster::start(Backend::Embedded).await;
    let client = client(&c);
    let _node = start_node(&c);
    let _cm = start_manager(&c);
    apply(&c, &RS.replace("replicas: 3", "replicas: 2"));
    rs_settles(&client, "frontend", 2).await;
    c.restart().await;
    kubectl(&c, &["scale", "rs", "frontend", "--replicas=3"]);
    rs_settles(&client, "frontend", 3).await;
    assert_eq!(live_pods(&client, "default", "frontend").await.len(), 3);
}
