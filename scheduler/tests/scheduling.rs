//! The scheduler against a real API server (in-process, embedded store): Node objects are
//! created through the API with their status, pods are created, and the scheduler's
//! bindings, events and conditions are read back. Waits are bounded hang detectors only.

use std::collections::BTreeMap;
use std::future::Future;
use std::time::Duration;

use e2e::{Backend, Cluster};
use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::api::core::v1::{Event, Node, Pod};
use kube::api::{Api, ListParams, PostParams};
use kube::Client;
use scheduler::{Config, LeaderElectionConfig, Running, SchedulerConfiguration};

const WAIT: Duration = Duration::from_secs(60);

fn client(c: &Cluster) -> Client {
    let config = kube::Config::new(c.url().parse().expect("url"));
    Client::try_from(config).expect("client")
}

/// Polls `f` until it yields `Some`, failing the test after [`WAIT`].
async fn wait_for<T, F, Fut>(what: &str, mut f: F) -> T
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Option<T>>,
{
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        if let Some(v) = f().await {
            return v;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "timed out waiting for {what}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

async fn start(c: &Cluster, identity: &str, le: Option<LeaderElectionConfig>) -> Running {
    scheduler::start(Config {
        client: client(c),
        scheduler_name: "default-scheduler".into(),
        configuration: SchedulerConfiguration::default(),
        leader_election: le,
        health_addr: Some("127.0.0.1:0".parse().expect("addr")),
        identity: identity.into(),
        out_of_tree: Vec::new(),
    })
    .await
    .expect("scheduler starts")
}

/// A scheduler with `configuration` (KubeSchedulerConfiguration YAML) and extra plugins, no
/// leader election.
async fn start_configured(
    c: &Cluster,
    identity: &str,
    configuration: &str,
    out_of_tree: Vec<(&'static str, scheduler::plugins::Factory)>,
) -> Running {
    scheduler::start(Config {
        client: client(c),
        scheduler_name: "default-scheduler".into(),
        configuration: SchedulerConfiguration::parse(configuration).expect("config"),
        leader_election: None,
        health_addr: None,
        identity: identity.into(),
        out_of_tree,
    })
    .await
    .expect("starts")
}

/// Creates a node, then sets its capacity through `nodes/{name}/status` (the main resource
/// ignores status on create).
async fn node(client: &Client, name: &str, cpu: &str, extra: serde_json::Value) {
    let api: Api<Node> = Api::all(client.clone());
    let mut obj = serde_json::json!({
        "apiVersion": "v1", "kind": "Node",
        "metadata": {"name": name, "labels": {"kubernetes.io/hostname": name}},
    });
    merge(&mut obj, extra);
    let n: Node = serde_json::from_value(obj).expect("node");
    let mut created = api
        .create(&PostParams::default(), &n)
        .await
        .expect("create node");
    let resources = BTreeMap::from([
        (
            "cpu".to_string(),
            k8s_openapi::apimachinery::pkg::api::resource::Quantity(cpu.into()),
        ),
        (
            "memory".to_string(),
            k8s_openapi::apimachinery::pkg::api::resource::Quantity("8Gi".into()),
        ),
        (
            "pods".to_string(),
            k8s_openapi::apimachinery::pkg::api::resource::Quantity("110".into()),
        ),
    ]);
    created.status = Some(k8s_openapi::api::core::v1::NodeStatus {
        allocatable: Some(resources.clone()),
        capacity: Some(resources),
        ..Default::default()
    });
    api.replace_status(name, &PostParams::default(), &created)
        .await
        .expect("node status");
}

fn merge(into: &mut serde_json::Value, from: serde_json::Value) {
    match (into, from) {
        (serde_json::Value::Object(a), serde_json::Value::Object(b)) => {
            for (k, v) in b {
                merge(a.entry(k).or_insert(serde_json::Value::Null), v);
            }
        }
        (slot, v) => *slot = v,
    }
}

async fn pod(client: &Client, name: &str, cpu: &str, extra: serde_json::Value) {
    let api: Api<Pod> = Api::namespaced(client.clone(), "default");
    let mut obj = serde_json::json!({
        "apiVersion": "v1", "kind": "Pod",
        "metadata": {"name": name},
        "spec": {"containers": [{"name": "c", "image": "busybox",
                 "resources": {"requests": {"cpu": cpu}}}]},
    });
    merge(&mut obj, extra);
    let p: Pod = serde_json::from_value(obj).expect("pod");
    api.create(&PostParams::default(), &p)
        .await
        .expect("create pod");
}

async fn bound_node(client: &Client, name: &str) -> String {
    let api: Api<Pod> = Api::namespaced(client.clone(), "default");
    wait_for(&format!("pod {name} to be bound"), || {
        let api = api.clone();
        async move {
            let p = api.get(name).await.ok()?;
            p.spec?.node_name.filter(|n| !n.is_empty())
        }
    })
    .await
}

/// Waits until preemption has nominated a node for the pod `name`; returns it.
async fn nominated_node(api: &Api<Pod>, name: &str) -> String {
    wait_for(&format!("{name} to be nominated"), || {
        let api = api.clone();
        async move { api.get(name).await.ok()?.status?.nominated_node_name }
    })
    .await
}

async fn events(client: &Client, pod: &str, reason: &str) -> Vec<Event> {
    let api: Api<Event> = Api::namespaced(client.clone(), "default");
    let list = api.list(&ListParams::default()).await.expect("list events");
    list.items
        .into_iter()
        .filter(|e| {
            e.involved_object.name.as_deref() == Some(pod) && e.reason.as_deref() == Some(reason)
        })
        .collect()
}

async fn wait_event(client: &Client, pod: &str, reason: &str) -> Event {
    wait_for(&format!("{reason} event for {pod}"), || async {
        events(client, pod, reason).await.into_iter().next()
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn node_selector_is_honoured_and_binding_records_scheduled_event() {
    let c = Cluster::start(Backend::Embedded).await;
    let kc = client(&c);
    node(
        &kc,
        "hdd",
        "4",
        serde_json::json!({"metadata": {"labels": {"disk": "hdd"}}}),
    )
    .await;
    node(
        &kc,
        "ssd",
        "4",
        serde_json::json!({"metadata": {"labels": {"disk": "ssd"}}}),
    )
    .await;
    let _s = start(&c, "only", None).await;
    pod(
        &kc,
        "web",
        "100m",
        serde_json::json!({"spec": {"nodeSelector": {"disk": "ssd"}}}),
    )
    .await;
    assert_eq!(bound_node(&kc, "web").await, "ssd");
    let ev = wait_event(&kc, "web", "Scheduled").await;
    assert_eq!(
        ev.message.as_deref(),
        Some("Successfully assigned default/web to ssd")
    );
    assert_eq!(ev.type_.as_deref(), Some("Normal"));
    assert_eq!(
        ev.source.and_then(|s| s.component).as_deref(),
        Some("default-scheduler")
    );
    // Required node affinity with NotIn steers the next pod away from ssd.
    pod(
        &kc,
        "batch",
        "100m",
        serde_json::json!({"spec": {"affinity": {"nodeAffinity": {
        "requiredDuringSchedulingIgnoredDuringExecution": {"nodeSelectorTerms": [
            {"matchExpressions": [{"key": "disk", "operator": "NotIn", "values": ["ssd"]}]}
        ]}}}}}),
    )
    .await;
    assert_eq!(bound_node(&kc, "batch").await, "hdd");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn taints_are_respected() {
    let c = Cluster::start(Backend::Embedded).await;
    let kc = client(&c);
    let taint = serde_json::json!({"spec": {"taints": [
        {"key": "dedicated", "value": "gpu", "effect": "NoSchedule"}]}});
    node(&kc, "gpu", "4", taint).await;
    let _s = start(&c, "only", None).await;
    // Only a tainted node: the pod stays pending with upstream's wording.
    pod(&kc, "plain", "100m", serde_json::json!({})).await;
    let ev = wait_event(&kc, "plain", "FailedScheduling").await;
    assert_eq!(
        ev.message.as_deref(),
        Some(
            "0/1 nodes are available: 1 node(s) had untolerated taint {dedicated: gpu}. \
             preemption: 0/1 nodes are available: 1 Preemption is not helpful for scheduling."
        )
    );
    // A tolerating pod lands on it.
    pod(
        &kc,
        "trainer",
        "100m",
        serde_json::json!({"spec": {"tolerations": [
            {"key": "dedicated", "operator": "Equal", "value": "gpu", "effect": "NoSchedule"}]}}),
    )
    .await;
    assert_eq!(bound_node(&kc, "trainer").await, "gpu");
    // An untainted node appears: the pending pod goes there, never to the tainted one.
    node(&kc, "cpu", "4", serde_json::json!({})).await;
    assert_eq!(bound_node(&kc, "plain").await, "cpu");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn too_big_pod_is_unschedulable_until_a_fitting_node_appears() {
    let c = Cluster::start(Backend::Embedded).await;
    let kc = client(&c);
    node(&kc, "small-1", "1", serde_json::json!({})).await;
    node(&kc, "small-2", "1", serde_json::json!({})).await;
    let s = start(&c, "only", None).await;
    pod(&kc, "big", "4", serde_json::json!({})).await;
    let ev = wait_event(&kc, "big", "FailedScheduling").await;
    assert_eq!(
        ev.message.as_deref(),
        Some(
            "0/2 nodes are available: 2 Insufficient cpu. preemption: 0/2 nodes are \
             available: 2 No preemption victims found for incoming pod."
        )
    );
    assert_eq!(ev.type_.as_deref(), Some("Warning"));
    let api: Api<Pod> = Api::namespaced(kc.clone(), "default");
    let cond = wait_for("PodScheduled=False", || {
        let api = api.clone();
        async move {
            let p = api.get("big").await.ok()?;
            p.status?
                .conditions?
                .into_iter()
                .find(|c| c.type_ == "PodScheduled" && c.status == "False")
        }
    })
    .await;
    assert_eq!(cond.reason.as_deref(), Some("Unschedulable"));
    assert_eq!(cond.message, ev.message);
    // A node change retries the pod; the same failure bumps the event's count instead of
    // creating another Event.
    let nodes: Api<Node> = Api::all(kc.clone());
    nodes
        .patch(
            "small-1",
            &kube::api::PatchParams::default(),
            &kube::api::Patch::Merge(serde_json::json!({"metadata": {"labels": {"touched": "1"}}})),
        )
        .await
        .expect("label node");
    wait_for("the FailedScheduling count to reach 2", || async {
        let evs = events(&kc, "big", "FailedScheduling").await;
        assert_eq!(
            evs.len(),
            1,
            "repeated failure created a second Event: {evs:?}"
        );
        (evs[0].count == Some(2)).then_some(())
    })
    .await;
    // Two 600m pods: the second must not land on the node the first (assumed or bound) took.
    pod(&kc, "half-a", "600m", serde_json::json!({})).await;
    pod(&kc, "half-b", "600m", serde_json::json!({})).await;
    let a = bound_node(&kc, "half-a").await;
    let b = bound_node(&kc, "half-b").await;
    assert_ne!(a, b, "both 600m pods on one 1-cpu node");
    // A big node appears: the pending pod is retried and placed there.
    node(&kc, "large", "8", serde_json::json!({})).await;
    assert_eq!(bound_node(&kc, "big").await, "large");
    let text = s.metrics.render();
    assert!(
        text.contains("scheduler_schedule_attempts_total{profile=\"default-scheduler\",result=\"unschedulable\"}"),
        "{text}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn healthz_and_metrics_are_served() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let c = Cluster::start(Backend::Embedded).await;
    let s = start(&c, "only", None).await;
    let addr = s.health_addr.expect("health address");
    let get = |path: &'static str| async move {
        let mut conn = tokio::net::TcpStream::connect(addr).await.expect("connect");
        let req = format!("GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n");
        conn.write_all(req.as_bytes()).await.expect("write");
        let mut out = String::new();
        conn.read_to_string(&mut out).await.expect("read");
        out
    };
    let health = get("/healthz").await;
    assert!(
        health.starts_with("HTTP/1.1 200") && health.ends_with("ok"),
        "{health}"
    );
    let kc = client(&c);
    node(&kc, "n", "2", serde_json::json!({})).await;
    pod(&kc, "p", "100m", serde_json::json!({})).await;
    bound_node(&kc, "p").await;
    let metrics = wait_for("pending gauge", || async {
        let m = get("/metrics").await;
        m.contains("scheduler_pending_pods{queue=\"active\"}")
            .then_some(m)
    })
    .await;
    for name in [
        "scheduler_schedule_attempts_total{profile=\"default-scheduler\",result=\"scheduled\"} 1",
        "scheduler_scheduling_attempt_duration_seconds_bucket",
    ] {
        assert!(metrics.contains(name), "{name} missing:\n{metrics}");
    }
}

/// Short lease timings keep the test quick; the production defaults (15/10/2 s) only
/// scale the same protocol.
fn fast_lease(identity: &str) -> LeaderElectionConfig {
    LeaderElectionConfig {
        lease_duration: Duration::from_secs(4),
        renew_deadline: Duration::from_secs(3),
        retry_period: Duration::from_millis(500),
        ..LeaderElectionConfig::new("kube-scheduler", identity)
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn only_the_leader_binds_and_the_standby_takes_over() {
    let c = Cluster::start(Backend::Embedded).await;
    let kc = client(&c);
    node(&kc, "n", "8", serde_json::json!({})).await;
    let first = start(&c, "first", Some(fast_lease("first"))).await;
    let leases: Api<Lease> = Api::namespaced(kc.clone(), "kube-system");
    let holder = || async {
        leases
            .get("kube-scheduler")
            .await
            .ok()
            .and_then(|l| l.spec?.holder_identity)
    };
    wait_for("first to lead", || async {
        (holder().await.as_deref() == Some("first")).then_some(())
    })
    .await;
    let second = start(&c, "second", Some(fast_lease("second"))).await;
    for i in 0..3 {
        pod(&kc, &format!("a{i}"), "100m", serde_json::json!({})).await;
        bound_node(&kc, &format!("a{i}")).await;
    }
    for i in 0..3 {
        let ev = wait_event(&kc, &format!("a{i}"), "Scheduled").await;
        assert_eq!(ev.reporting_instance.as_deref(), Some("first"));
        assert_eq!(events(&kc, &format!("a{i}"), "Scheduled").await.len(), 1);
    }
    assert!(
        !second.metrics.render().contains("result=\"scheduled\""),
        "the standby scheduled something"
    );
    assert_eq!(holder().await.as_deref(), Some("first"));
    // The leader dies without releasing the lease; the standby takes over after it expires.
    drop(first);
    pod(&kc, "b", "100m", serde_json::json!({})).await;
    assert_eq!(bound_node(&kc, "b").await, "n");
    let ev = wait_event(&kc, "b", "Scheduled").await;
    assert_eq!(ev.reporting_instance.as_deref(), Some("second"));
    assert_eq!(holder().await.as_deref(), Some("second"));
}

/// Node `n` (2 CPU) with pod `low` (priority class `low`, 1500m, plus `low_extra`) bound to
/// it, then pod `high` (class `high`, 1500m), which fits only if `low` goes. Priorities come
/// from PriorityClasses (the API server's Priority admission).
async fn low_bound_then_high(kc: &Client, low_extra: serde_json::Value) {
    node(kc, "n", "2", serde_json::json!({})).await;
    priority_classes(kc, &[("low", 1), ("high", 1000)]).await;
    let mut low = serde_json::json!({"spec": {"priorityClassName": "low"}});
    merge(&mut low, low_extra);
    pod(kc, "low", "1500m", low).await;
    assert_eq!(bound_node(kc, "low").await, "n");
    pod(
        kc,
        "high",
        "1500m",
        serde_json::json!({"spec": {"priorityClassName": "high"}}),
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn higher_priority_pod_preempts_a_lower_priority_one() {
    let c = Cluster::start(Backend::Embedded).await;
    let kc = client(&c);
    let _s = start(&c, "only", None).await;
    low_bound_then_high(&kc, serde_json::json!({})).await;
    let api: Api<Pod> = Api::namespaced(kc.clone(), "default");
    let nominated = nominated_node(&api, "high").await;
    assert_eq!(nominated, "n");
    let ev = wait_event(&kc, "low", "Preempted").await;
    assert!(
        ev.message
            .as_deref()
            .is_some_and(|m| m.ends_with("on node n")),
        "{ev:?}"
    );
    // With no node agent a bound victim may stay terminating: finish it as a kubelet would.
    let gone = wait_for("low to be deleted or terminating", || {
        let api = api.clone();
        async move {
            match api.get_opt("low").await {
                Ok(None) => Some(true),
                Ok(Some(p)) if p.metadata.deletion_timestamp.is_some() => Some(false),
                _ => None,
            }
        }
    })
    .await;
    if !gone {
        api.delete("low", &kube::api::DeleteParams::default().grace_period(0))
            .await
            .expect("force delete");
    }
    assert_eq!(bound_node(&kc, "high").await, "n");
}

/// A nomination lasts only while it can still come true: once the nominated node is
/// cordoned (and no other node can be freed) the pod's `nominatedNodeName` is cleared, as
/// upstream's preemption does by nominating "", instead of keeping a claim on room that
/// preemption can no longer deliver.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_nomination_that_can_no_longer_hold_is_cleared() {
    let c = Cluster::start(Backend::Embedded).await;
    let kc = client(&c);
    let _s = start(&c, "only", None).await;
    // A finalizer keeps the victim terminating (there is no node agent to finish it).
    low_bound_then_high(
        &kc,
        serde_json::json!({"metadata": {"finalizers": ["example.com/hold"]}}),
    )
    .await;
    let api: Api<Pod> = Api::namespaced(kc.clone(), "default");
    let nominated = nominated_node(&api, "high").await;
    assert_eq!(nominated, "n");
    wait_event(&kc, "low", "Preempted").await;
    let nodes: Api<Node> = Api::all(kc.clone());
    nodes
        .patch(
            "n",
            &kube::api::PatchParams::default(),
            &kube::api::Patch::Merge(serde_json::json!({"spec": {"unschedulable": true}})),
        )
        .await
        .expect("cordon");
    wait_for("high's nomination to be cleared", || {
        let api = api.clone();
        async move {
            let p = api.get("high").await.ok()?;
            let nominated = p.status.and_then(|s| s.nominated_node_name);
            nominated.is_none().then_some(())
        }
    })
    .await;
    let high = api.get("high").await.expect("high");
    assert!(
        high.spec.and_then(|s| s.node_name).is_none(),
        "high stays pending"
    );
    // The victim is still there, terminating, and nothing else was preempted for it.
    let low = api.get("low").await.expect("low");
    assert!(low.metadata.deletion_timestamp.is_some());
    api.patch(
        "low",
        &kube::api::PatchParams::default(),
        &kube::api::Patch::Merge(serde_json::json!({"metadata": {"finalizers": null}})),
    )
    .await
    .expect("release the victim");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn profiles_from_the_config_file_serve_their_scheduler_names() {
    let c = Cluster::start(Backend::Embedded).await;
    let kc = client(&c);
    node(&kc, "small", "2", serde_json::json!({})).await;
    node(&kc, "big", "16", serde_json::json!({})).await;
    let _s = start_configured(
        &c,
        "packer",
        r#"
apiVersion: kubescheduler.config.k8s.io/v1
kind: KubeSchedulerConfiguration
profiles:
- schedulerName: bin-packer
  plugins:
    score:
      disabled: [{name: NodeResourcesBalancedAllocation}]
  pluginConfig:
  - name: NodeResourcesFit
    args: {scoringStrategy: {type: MostAllocated}}
"#,
        Vec::new(),
    )
    .await;
    // MostAllocated packs onto the fuller node: the small one.
    pod(
        &kc,
        "packed",
        "1",
        serde_json::json!({"spec": {"schedulerName": "bin-packer"}}),
    )
    .await;
    assert_eq!(bound_node(&kc, "packed").await, "small");
    // No profile serves default-scheduler here: such a pod is left alone.
    pod(&kc, "ignored", "1", serde_json::json!({})).await;
    pod(
        &kc,
        "packed-2",
        "100m",
        serde_json::json!({"spec": {"schedulerName": "bin-packer"}}),
    )
    .await;
    bound_node(&kc, "packed-2").await;
    let api: Api<Pod> = Api::namespaced(kc.clone(), "default");
    let ignored = api.get("ignored").await.expect("get");
    assert_eq!(ignored.spec.and_then(|s| s.node_name), None);
    assert!(events(&kc, "ignored", "FailedScheduling").await.is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_burst_of_pods_fills_nodes_exactly_without_overcommit() {
    burst(Backend::Embedded).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_burst_of_pods_fills_nodes_exactly_without_overcommit_on_etcd() {
    burst(Backend::Etcd).await;
}

async fn burst(backend: Backend) {
    let c = Cluster::start(backend).await;
    let kc = client(&c);
    for n in ["n1", "n2", "n3"] {
        node(&kc, n, "1", serde_json::json!({})).await;
    }
    let _s = start(&c, "only", None).await;
    // 12 × 250m fill three 1-cpu nodes exactly; binds run while later pods are scheduled,
    // so only the assumed-pod accounting keeps a node from getting a fifth.
    for i in 0..12 {
        pod(&kc, &format!("p{i:02}"), "250m", serde_json::json!({})).await;
    }
    let mut per_node: BTreeMap<String, usize> = BTreeMap::new();
    for i in 0..12 {
        *per_node
            .entry(bound_node(&kc, &format!("p{i:02}")).await)
            .or_default() += 1;
    }
    assert_eq!(
        per_node,
        BTreeMap::from([("n1".into(), 4), ("n2".into(), 4), ("n3".into(), 4)])
    );
    pod(&kc, "extra", "250m", serde_json::json!({})).await;
    let ev = wait_event(&kc, "extra", "FailedScheduling").await;
    assert_eq!(
        ev.message.as_deref(),
        Some(
            "0/3 nodes are available: 3 Insufficient cpu. preemption: 0/3 nodes are available: \
             3 No preemption victims found for incoming pod."
        )
    );
}

/// Fails its first bind, then binds like DefaultBinder.
struct FlakyBinder {
    inner: scheduler::plugins::binder::DefaultBinder,
}

static FLAKY_FAILED: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);

impl scheduler::framework::Plugin for FlakyBinder {
    fn name(&self) -> &'static str {
        "FlakyBinder"
    }
}

impl scheduler::framework::BindPlugin for FlakyBinder {
    fn bind<'a>(
        &'a self,
        pod: &'a Pod,
        node: &'a str,
    ) -> futures::future::BoxFuture<'a, scheduler::framework::Status> {
        if !FLAKY_FAILED.swap(true, std::sync::atomic::Ordering::SeqCst) {
            return Box::pin(async { scheduler::framework::Status::error("injected failure") });
        }
        self.inner.bind(pod, node)
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failed_bind_releases_the_node_and_the_pod_is_retried() {
    let c = Cluster::start(Backend::Embedded).await;
    let kc = client(&c);
    // One slot only: if the failed bind's assumption leaked, the retry would not fit.
    node(&kc, "n", "1", serde_json::json!({})).await;
    let _s = start_configured(
        &c,
        "flaky",
        "profiles: [{plugins: {bind: {disabled: [{name: DefaultBinder}], \
         enabled: [{name: FlakyBinder}]}}}]",
        vec![("FlakyBinder", |args| scheduler::framework::PluginSet {
            bind: Some(std::sync::Arc::new(FlakyBinder {
                inner: scheduler::plugins::binder::DefaultBinder {
                    client: args.client.clone(),
                },
            })),
            ..Default::default()
        })],
    )
    .await;
    pod(&kc, "p", "1", serde_json::json!({})).await;
    let ev = wait_event(&kc, "p", "FailedScheduling").await;
    assert_eq!(
        ev.message.as_deref(),
        Some("Binding rejected: injected failure")
    );
    assert_eq!(bound_node(&kc, "p").await, "n");
}

/// Panics on pods named "boom", passes every other.
struct Explosive;

impl scheduler::framework::Plugin for Explosive {
    fn name(&self) -> &'static str {
        "Explosive"
    }
}

impl scheduler::framework::FilterPlugin for Explosive {
    fn filter(
        &self,
        _state: &scheduler::framework::CycleState,
        pod: &Pod,
        _node: &scheduler::framework::NodeInfo,
    ) -> scheduler::framework::Status {
        if pod.metadata.name.as_deref() == Some("boom") {
            panic!("a plugin bug");
        }
        scheduler::framework::Status::success()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_panicking_plugin_fails_the_attempt_not_the_scheduler() {
    let c = Cluster::start(Backend::Embedded).await;
    let kc = client(&c);
    node(&kc, "n", "4", serde_json::json!({})).await;
    let _s = start_configured(
        &c,
        "explosive",
        "profiles: [{plugins: {filter: {enabled: [{name: Explosive}]}}}]",
        vec![("Explosive", |_| scheduler::framework::PluginSet {
            filter: Some(std::sync::Arc::new(Explosive)),
            ..Default::default()
        })],
    )
    .await;
    pod(&kc, "boom", "100m", serde_json::json!({})).await;
    let ev = wait_event(&kc, "boom", "FailedScheduling").await;
    assert_eq!(
        ev.message.as_deref(),
        Some("the scheduling cycle panicked: a plugin bug")
    );
    // The loop goes on: the next pod is scheduled.
    pod(&kc, "fine", "100m", serde_json::json!({})).await;
    assert_eq!(bound_node(&kc, "fine").await, "n");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn gated_pods_wait_until_their_gates_are_removed() {
    let c = Cluster::start(Backend::Embedded).await;
    let kc = client(&c);
    node(&kc, "n", "4", serde_json::json!({})).await;
    let _s = start(&c, "only", None).await;
    pod(
        &kc,
        "gated",
        "100m",
        serde_json::json!({"spec": {"schedulingGates": [{"name": "example.com/wait"}]}}),
    )
    .await;
    // A later ungated pod is bound: by then the gated one has been seen and skipped.
    pod(&kc, "plain", "100m", serde_json::json!({})).await;
    bound_node(&kc, "plain").await;
    let api: Api<Pod> = Api::namespaced(kc.clone(), "default");
    let p = api.get("gated").await.expect("get");
    assert_eq!(p.spec.and_then(|s| s.node_name), None);
    assert!(events(&kc, "gated", "FailedScheduling").await.is_empty());
    api.patch(
        "gated",
        &kube::api::PatchParams::default(),
        &kube::api::Patch::Merge(serde_json::json!({"spec": {"schedulingGates": null}})),
    )
    .await
    .expect("remove gates");
    assert_eq!(bound_node(&kc, "gated").await, "n");
}

async fn priority_classes(client: &Client, classes: &[(&str, i32)]) {
    let api: Api<k8s_openapi::api::scheduling::v1::PriorityClass> = Api::all(client.clone());
    for (name, value) in classes {
        let class = serde_json::from_value(serde_json::json!({
            "metadata": {"name": name}, "value": value,
        }))
        .expect("priority class");
        api.create(&Default::default(), &class)
            .await
            .expect("create priority class");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn preemption_spares_pods_protected_by_a_disruption_budget() {
    let c = Cluster::start(Backend::Embedded).await;
    let kc = client(&c);
    node(&kc, "n1", "2", serde_json::json!({})).await;
    node(&kc, "n2", "2", serde_json::json!({})).await;
    priority_classes(&kc, &[("low", 1), ("mid", 2), ("high", 1000)]).await;
    // Without the budget n1 would be chosen: its victim has the lower priority.
    pod(
        &kc,
        "guarded",
        "2",
        serde_json::json!({"metadata": {"labels": {"app": "db"}},
            "spec": {"priorityClassName": "low", "nodeName": "n1"}}),
    )
    .await;
    pod(
        &kc,
        "unguarded",
        "2",
        serde_json::json!({"spec": {"priorityClassName": "mid", "nodeName": "n2"}}),
    )
    .await;
    let pdbs: Api<k8s_openapi::api::policy::v1::PodDisruptionBudget> =
        Api::namespaced(kc.clone(), "default");
    let budget = serde_json::from_value(serde_json::json!({
        "metadata": {"name": "db"},
        "spec": {"minAvailable": 1, "selector": {"matchLabels": {"app": "db"}}},
    }))
    .expect("pdb");
    pdbs.create(&PostParams::default(), &budget)
        .await
        .expect("create pdb");
    // What the disruption controller would report: no disruption allowed.
    pdbs.patch_status(
        "db",
        &kube::api::PatchParams::default(),
        &kube::api::Patch::Merge(serde_json::json!({"status": {"disruptionsAllowed": 0,
            "currentHealthy": 1, "desiredHealthy": 1, "expectedPods": 1}})),
    )
    .await
    .expect("pdb status");
    let _s = start(&c, "only", None).await;
    pod(
        &kc,
        "urgent",
        "2",
        serde_json::json!({"spec": {"priorityClassName": "high"}}),
    )
    .await;
    let api: Api<Pod> = Api::namespaced(kc.clone(), "default");
    let nominated = nominated_node(&api, "urgent").await;
    assert_eq!(nominated, "n2");
    wait_event(&kc, "unguarded", "Preempted").await;
    let guarded = api.get("guarded").await.expect("guarded still exists");
    assert!(guarded.metadata.deletion_timestamp.is_none());
    assert!(events(&kc, "guarded", "Preempted").await.is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replicas_without_constraints_spread_evenly_by_default() {
    let c = Cluster::start(Backend::Embedded).await;
    let kc = client(&c);
    for n in ["n1", "n2", "n3"] {
        node(&kc, n, "4", serde_json::json!({})).await;
    }
    // No controller manager runs here: the ReplicaSet only identifies its pods, which the
    // test creates itself. They request nothing, so every other score is equal on all nodes.
    let rss: Api<k8s_openapi::api::apps::v1::ReplicaSet> = Api::namespaced(kc.clone(), "default");
    let rs = serde_json::from_value(serde_json::json!({
        "metadata": {"name": "web"},
        "spec": {"replicas": 6, "selector": {"matchLabels": {"app": "web"}},
                 "template": {"metadata": {"labels": {"app": "web"}},
                              "spec": {"containers": [{"name": "c", "image": "busybox"}]}}},
    }))
    .expect("replicaset");
    let rs = rss
        .create(&PostParams::default(), &rs)
        .await
        .expect("create replicaset");
    let uid = rs.metadata.uid.expect("uid");
    let _s = start(&c, "only", None).await;
    let api: Api<Pod> = Api::namespaced(kc.clone(), "default");
    for i in 0..6 {
        let p: Pod = serde_json::from_value(serde_json::json!({
            "metadata": {"name": format!("web-{i}"), "labels": {"app": "web"},
                "ownerReferences": [{"apiVersion": "apps/v1", "kind": "ReplicaSet",
                    "name": "web", "uid": uid, "controller": true}]},
            "spec": {"containers": [{"name": "c", "image": "busybox"}]},
        }))
        .expect("pod");
        api.create(&PostParams::default(), &p)
            .await
            .expect("create pod");
    }
    let mut per_node: BTreeMap<String, usize> = BTreeMap::new();
    for i in 0..6 {
        *per_node
            .entry(bound_node(&kc, &format!("web-{i}")).await)
            .or_default() += 1;
    }
    assert_eq!(
        per_node,
        BTreeMap::from([("n1".into(), 2), ("n2".into(), 2), ("n3".into(), 2)])
    );
}

/// A test-only gang plugin, shaped like scheduler-plugins' Coscheduling: a pod labelled
/// `pod-group` waits at Permit until `minMember` pods of its group (itself included) have
/// reached Permit, then the whole group is allowed; it gives up after `timeoutMillis`.
struct Gang {
    waiting: std::sync::Arc<scheduler::framework::WaitingPods>,
    min_member: usize,
    timeout: Duration,
}

impl scheduler::framework::Plugin for Gang {
    fn name(&self) -> &'static str {
        "Gang"
    }
}

impl scheduler::framework::PermitPlugin for Gang {
    fn permit(
        &self,
        _: &scheduler::framework::CycleState,
        pod: &Pod,
        _: &str,
    ) -> (scheduler::framework::Status, Duration) {
        let group = |p: &Pod| {
            p.metadata
                .labels
                .as_ref()
                .and_then(|l| l.get("pod-group").cloned())
        };
        let Some(g) = group(pod) else {
            return (scheduler::framework::Status::success(), Duration::ZERO);
        };
        let members: Vec<_> = self
            .waiting
            .list()
            .into_iter()
            .filter(|w| group(&w.pod).as_ref() == Some(&g))
            .collect();
        if members.len() + 1 < self.min_member {
            return (scheduler::framework::Status::wait(), self.timeout);
        }
        for m in members {
            self.waiting.allow(&m.pod, "Gang");
        }
        (scheduler::framework::Status::success(), Duration::ZERO)
    }
}

async fn start_with_gang(c: &Cluster, min_member: usize, timeout_ms: u64) -> Running {
    let configuration = format!(
        "profiles: [{{plugins: {{permit: {{enabled: [{{name: Gang}}]}}}}, \
         pluginConfig: [{{name: Gang, args: {{minMember: {min_member}, \
         timeoutMillis: {timeout_ms}}}}}]}}]"
    );
    start_configured(
        c,
        "gang",
        &configuration,
        vec![("Gang", |args| {
            let n = |k: &str| args.args.get(k).and_then(|v| v.as_u64()).unwrap_or(0);
            scheduler::framework::PluginSet {
                permit: Some(std::sync::Arc::new(Gang {
                    waiting: args.waiting_pods.clone(),
                    min_member: n("minMember") as usize,
                    timeout: Duration::from_millis(n("timeoutMillis")),
                })),
                ..Default::default()
            }
        })],
    )
    .await
}

/// Polls until `name` waits at Permit in the default profile; returns it.
async fn waiting_at_permit(s: &Running, name: &str) -> scheduler::permit::WaitingPod {
    let waiting = s.waiting_pods("default-scheduler").expect("profile");
    wait_for(&format!("{name} to wait at Permit"), || {
        let found = waiting
            .list()
            .into_iter()
            .find(|w| w.pod.metadata.name.as_deref() == Some(name));
        async move { found }
    })
    .await
}

async fn is_bound(client: &Client, name: &str) -> bool {
    let api: Api<Pod> = Api::namespaced(client.clone(), "default");
    let p = api.get(name).await.expect("get pod");
    p.spec.and_then(|s| s.node_name).is_some()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_pod_waiting_at_permit_binds_only_once_allowed() {
    let c = Cluster::start(Backend::Embedded).await;
    let kc = client(&c);
    node(&kc, "n", "4", serde_json::json!({})).await;
    let s = start_with_gang(&c, 2, 60_000).await;
    let member = serde_json::json!({"metadata": {"labels": {"pod-group": "g"}}});
    pod(&kc, "g-a", "100m", member.clone()).await;
    waiting_at_permit(&s, "g-a").await;
    // A later pod outside the group is scheduled and bound while g-a waits.
    pod(&kc, "plain", "100m", serde_json::json!({})).await;
    bound_node(&kc, "plain").await;
    assert!(!is_bound(&kc, "g-a").await, "g-a bound before its group");
    assert!(events(&kc, "g-a", "FailedScheduling").await.is_empty());
    // The second member completes the group: both bind.
    pod(&kc, "g-b", "100m", member).await;
    assert_eq!(bound_node(&kc, "g-a").await, "n");
    assert_eq!(bound_node(&kc, "g-b").await, "n");
    wait_event(&kc, "g-a", "Scheduled").await;
    // Code outside the plugins can decide too, through the scheduler's handle.
    let waiting = s.waiting_pods("default-scheduler").expect("profile");
    for name in ["let-in", "turn-away"] {
        let labels = serde_json::json!({"metadata": {"labels": {"pod-group": name}}});
        pod(&kc, name, "100m", labels).await;
    }
    let w = waiting_at_permit(&s, "let-in").await;
    assert_eq!(w.pending_plugins, ["Gang"]);
    assert!(waiting.allow(&w.pod, "Gang"));
    assert_eq!(bound_node(&kc, "let-in").await, "n");
    let w = waiting_at_permit(&s, "turn-away").await;
    assert!(waiting.reject(&w.pod, "Gang", "turned away by the test"));
    let ev = wait_event(&kc, "turn-away", "FailedScheduling").await;
    assert_eq!(
        ev.message.as_deref(),
        Some("0/1 nodes are available: 1 turned away by the test.")
    );
    assert!(!is_bound(&kc, "turn-away").await);
    let text = s.metrics.render();
    for want in [
        // g-a and let-in waited; g-b completed the group, so it never waited.
        "scheduler_permit_wait_duration_seconds_count{result=\"Success\"} 2",
        "scheduler_permit_wait_duration_seconds_count{result=\"Unschedulable\"} 1",
    ] {
        assert!(text.contains(want), "{want} missing:\n{text}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_pod_timing_out_at_permit_releases_its_node_and_is_requeued() {
    let c = Cluster::start(Backend::Embedded).await;
    let kc = client(&c);
    // One cpu: whoever holds it keeps everyone else out.
    node(&kc, "n", "1", serde_json::json!({})).await;
    let s = start_with_gang(&c, 2, 3_000).await;
    pod(
        &kc,
        "lonely",
        "1",
        serde_json::json!({"metadata": {"labels": {"pod-group": "solo"}}}),
    )
    .await;
    waiting_at_permit(&s, "lonely").await;
    // While lonely waits it holds the cpu: the next pod does not fit.
    pod(&kc, "plain", "1", serde_json::json!({})).await;
    let ev = wait_event(&kc, "plain", "FailedScheduling").await;
    assert!(
        ev.message
            .as_deref()
            .is_some_and(|m| m.starts_with("0/1 nodes are available: 1 Insufficient cpu.")),
        "{ev:?}"
    );
    // The group never completes: lonely is rejected with upstream's wording...
    let ev = wait_event(&kc, "lonely", "FailedScheduling").await;
    assert_eq!(
        ev.message.as_deref(),
        Some(
            "0/1 nodes are available: 1 rejected due to timeout after waiting 3s at plugin \
             Gang."
        )
    );
    // ...its cpu goes to the other pod...
    assert_eq!(bound_node(&kc, "plain").await, "n");
    // ...and it is back in the queue: retried, it now finds the node full.
    wait_for("lonely to be retried", || async {
        events(&kc, "lonely", "FailedScheduling")
            .await
            .into_iter()
            .any(|e| {
                e.message
                    .is_some_and(|m| m.starts_with("0/1 nodes are available: 1 Insufficient cpu."))
            })
            .then_some(())
    })
    .await;
    assert!(!is_bound(&kc, "lonely").await);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn preempting_a_pod_waiting_at_permit_rejects_it_instead_of_deleting_it() {
    let c = Cluster::start(Backend::Embedded).await;
    let kc = client(&c);
    node(&kc, "n", "1", serde_json::json!({})).await;
    priority_classes(&kc, &[("low", 1), ("high", 1000)]).await;
    let s = start_with_gang(&c, 2, 60_000).await;
    pod(
        &kc,
        "lonely",
        "1",
        serde_json::json!({"metadata": {"labels": {"pod-group": "solo"}},
            "spec": {"priorityClassName": "low"}}),
    )
    .await;
    waiting_at_permit(&s, "lonely").await;
    // Only the waiting (assumed, unbound) pod can make room for the urgent one.
    pod(
        &kc,
        "urgent",
        "1",
        serde_json::json!({"spec": {"priorityClassName": "high"}}),
    )
    .await;
    assert_eq!(bound_node(&kc, "urgent").await, "n");
    wait_event(&kc, "lonely", "Preempted").await;
    let ev = wait_event(&kc, "lonely", "FailedScheduling").await;
    assert_eq!(
        ev.message.as_deref(),
        Some("0/1 nodes are available: 1 preempted.")
    );
    let api: Api<Pod> = Api::namespaced(kc.clone(), "default");
    let lonely = api.get("lonely").await.expect("lonely was not deleted");
    assert!(lonely.metadata.deletion_timestamp.is_none());
    assert!(!is_bound(&kc, "lonely").await);
}
