//! The simulator against a real API server in this process: nodes appear Ready with their
//! Leases renewed, bound pods run, complete and are deleted, and it scales.
//! Waits are bounded only to detect hangs; nothing asserts on timing.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use e2e::{Backend, Cluster};
use futures::StreamExt;
use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::api::core::v1::{Node, Pod};
use kube::api::{Api, DeleteParams, ListParams, PostParams};
use kube::Client;
use node_agent::node::Timing;
use node_agent::simulate::{SimConfig, Simulator, EXIT_AFTER_ANNOTATION};
use node_agent::Metrics;

fn client(c: &Cluster) -> Client {
    Client::try_from(kube::Config::new(c.url().parse().expect("url"))).expect("client")
}

fn fast_timing() -> Timing {
    Timing {
        lease_duration_seconds: 40,
        renew_interval: Duration::from_millis(500),
        status_interval: Duration::from_secs(5),
    }
}

async fn start_sim(c: &Cluster, nodes: usize, prefix: &str) -> (Simulator, Arc<Metrics>) {
    let metrics = Arc::new(Metrics::new().expect("metrics"));
    let config = SimConfig {
        nodes,
        node_prefix: prefix.to_string(),
        timing: fast_timing(),
        ..SimConfig::default()
    };
    let sim = Simulator::start(client(c), config, metrics.clone())
        .await
        .expect("simulator starts");
    (sim, metrics)
}

/// Polls `check` until it returns `Some`, failing after `secs` (a hang detector).
async fn eventually<T, F, Fut>(what: &str, secs: u64, mut check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    let deadline = tokio::time::Instant::now() + Duration::from_secs(secs);
    loop {
        if let Some(v) = check().await {
            return v;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "timed out waiting for {what}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

fn pod(name: &str, node: &str) -> Pod {
    serde_json::from_value(serde_json::json!({
        "metadata": {"name": name},
        "spec": {"nodeName": node, "containers": [{"name": "c", "image": "busybox"}]}
    }))
    .expect("pod")
}

async fn kubectl(c: &Cluster, args: &[&str]) -> String {
    let args: Vec<String> = args.iter().map(|s| s.to_string()).collect();
    let kubeconfig = c.kubeconfig().to_path_buf();
    let dir = c.dir().to_path_buf();
    // kubectl blocks; run it off the runtime's worker threads.
    tokio::task::spawn_blocking(move || {
        let out = std::process::Command::new(e2e::kubectl_path())
            .arg("--kubeconfig")
            .arg(&kubeconfig)
            .args(&args)
            .env_remove("KUBECONFIG")
            .env("HOME", &dir)
            .output()
            .expect("run kubectl");
        assert!(
            out.status.success(),
            "kubectl {args:?} failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    })
    .await
    .expect("kubectl task")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn simulated_nodes_are_ready_with_capacity_and_renewed_leases() {
    let c = Cluster::start(Backend::Embedded).await;
    let (sim, metrics) = start_sim(&c, 3, "sim-").await;
    assert_eq!(sim.node_names(), ["sim-0", "sim-1", "sim-2"]);

    let table = kubectl(&c, &["get", "nodes", "--no-headers"]).await;
    let rows: Vec<&str> = table.lines().collect();
    assert_eq!(rows.len(), 3, "{table}");
    for row in rows {
        let cols: Vec<&str> = row.split_whitespace().collect();
        assert_eq!(cols.get(1), Some(&"Ready"), "STATUS column: {row}");
        assert_eq!(cols.last(), Some(&"v1.32.0"), "VERSION column: {row}");
    }

    let nodes: Api<Node> = Api::all(client(&c));
    let node = nodes.get("sim-1").await.expect("node");
    let status = node.status.expect("status");
    let cap = status.capacity.expect("capacity");
    assert_eq!(cap["pods"].0, "110");
    for k in ["cpu", "memory", "ephemeral-storage"] {
        assert!(cap.contains_key(k), "capacity has {k}");
    }
    assert!(status.allocatable.expect("allocatable").contains_key("cpu"));
    let conds: BTreeMap<String, (String, Option<String>)> = status
        .conditions
        .expect("conditions")
        .into_iter()
        .map(|c| (c.type_, (c.status, c.reason)))
        .collect();
    assert_eq!(conds["Ready"], ("True".into(), Some("KubeletReady".into())));
    assert_eq!(
        conds["MemoryPressure"],
        ("False".into(), Some("KubeletHasSufficientMemory".into()))
    );
    assert_eq!(
        conds["DiskPressure"],
        ("False".into(), Some("KubeletHasNoDiskPressure".into()))
    );
    assert_eq!(
        conds["PIDPressure"],
        ("False".into(), Some("KubeletHasSufficientPID".into()))
    );
    let addrs: Vec<(String, String)> = status
        .addresses
        .expect("addresses")
        .into_iter()
        .map(|a| (a.type_, a.address))
        .collect();
    assert!(addrs.iter().any(|(t, _)| t == "InternalIP"));
    assert!(addrs.contains(&("Hostname".into(), "sim-1".into())));
    let info = status.node_info.expect("nodeInfo");
    assert_eq!(info.kubelet_version, "v1.32.0");
    assert_eq!(info.operating_system, "linux");

    let leases: Api<Lease> = Api::namespaced(client(&c), "kube-node-lease");
    let first = leases.get("sim-2").await.expect("lease");
    let spec = first.spec.expect("lease spec");
    assert_eq!(spec.holder_identity.as_deref(), Some("sim-2"));
    assert_eq!(spec.lease_duration_seconds, Some(40));
    let renewed_at = spec.renew_time.expect("renewTime").0;
    let owner = first.metadata.owner_references.expect("owned by the Node");
    assert_eq!(owner[0].kind, "Node");
    eventually("the lease to be renewed", 60, || {
        let leases = leases.clone();
        async move {
            let l = leases.get("sim-2").await.ok()?;
            let t = l.spec?.renew_time?.0;
            (t > renewed_at).then_some(())
        }
    })
    .await;
    assert!(metrics.writes_total() > 0);
    sim.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn simulated_pods_run_complete_and_are_deleted() {
    let c = Cluster::start(Backend::Embedded).await;
    let (sim, metrics) = start_sim(&c, 2, "sim-").await;
    let pods: Api<Pod> = Api::namespaced(client(&c), "default");

    // A long-running pod becomes Running and Ready with an address.
    pods.create(&PostParams::default(), &pod("web", "sim-0"))
        .await
        .expect("create");
    let running = eventually("web to be Running and Ready", 60, || {
        let pods = pods.clone();
        async move {
            let p = pods.get("web").await.ok()?;
            let s = p.status.clone()?;
            let ready = s
                .conditions
                .iter()
                .flatten()
                .any(|c| c.type_ == "Ready" && c.status == "True");
            (s.phase.as_deref() == Some("Running") && ready).then_some(p)
        }
    })
    .await;
    let status = running.status.expect("status");
    let pod_ip = status.pod_ip.expect("podIP");
    assert!(pod_ip.parse::<std::net::Ipv4Addr>().is_ok(), "{pod_ip}");
    assert!(status.host_ip.is_some());
    assert!(status.start_time.is_some());
    assert_eq!(
        status.qos_class.as_deref(),
        Some("BestEffort"),
        "qosClass kept"
    );
    let cs = &status.container_statuses.expect("containerStatuses")[0];
    assert!(cs.ready);
    assert_eq!(cs.restart_count, 0);
    assert!(cs
        .container_id
        .as_deref()
        .is_some_and(|id| id.starts_with("sim://")));
    assert!(cs.state.as_ref().and_then(|s| s.running.as_ref()).is_some());
    for ty in [
        "PodScheduled",
        "Initialized",
        "ContainersReady",
        "Ready",
        "PodReadyToStartContainers",
    ] {
        assert!(
            status
                .conditions
                .iter()
                .flatten()
                .any(|c| c.type_ == ty && c.status == "True"),
            "{ty} True"
        );
    }
    let row = kubectl(&c, &["get", "pod", "web", "--no-headers"]).await;
    let cols: Vec<&str> = row.split_whitespace().collect();
    assert_eq!(cols.get(1..3), Some(&["1/1", "Running"][..]), "{row}");

    // A host-network pod has the node's address.
    let mut host = pod("host", "sim-0");
    if let Some(spec) = host.spec.as_mut() {
        spec.host_network = Some(true);
    }
    pods.create(&PostParams::default(), &host)
        .await
        .expect("create");
    let (pod_ip, host_ip) = eventually("host to be Running", 60, || {
        let pods = pods.clone();
        async move {
            let s = pods.get("host").await.ok()?.status?;
            (s.phase.as_deref() == Some("Running")).then_some((s.pod_ip?, s.host_ip?))
        }
    })
    .await;
    assert_eq!(pod_ip, host_ip);
    pods.delete("host", &DeleteParams::default())
        .await
        .expect("delete");

    // Run-to-completion: by annotation, and as a Job's pod.
    let mut annotated = pod("once", "sim-1");
    annotated.metadata.annotations = Some(BTreeMap::from([(
        EXIT_AFTER_ANNOTATION.to_string(),
        "200ms".to_string(),
    )]));
    if let Some(spec) = annotated.spec.as_mut() {
        spec.restart_policy = Some("Never".into());
    }
    pods.create(&PostParams::default(), &annotated)
        .await
        .expect("create");
    let job_pod: Pod = serde_json::from_value(serde_json::json!({
        "metadata": {"name": "job-x", "ownerReferences": [{
            "apiVersion": "batch/v1", "kind": "Job", "name": "job",
            "uid": "00000000-0000-0000-0000-000000000001", "controller": true}]},
        "spec": {"nodeName": "sim-1", "restartPolicy": "OnFailure",
                 "containers": [{"name": "c", "image": "busybox"}]}
    }))
    .expect("job pod");
    pods.create(&PostParams::default(), &job_pod)
        .await
        .expect("create");
    for name in ["once", "job-x"] {
        let done = eventually(&format!("{name} to succeed"), 60, || {
            let pods = pods.clone();
            async move {
                let p = pods.get(name).await.ok()?;
                (p.status.as_ref()?.phase.as_deref() == Some("Succeeded")).then_some(p)
            }
        })
        .await;
        let cs = &done.status.expect("status").container_statuses.expect("cs")[0];
        let term = cs
            .state
            .as_ref()
            .and_then(|s| s.terminated.as_ref())
            .expect("terminated");
        assert_eq!(term.exit_code, 0);
        assert_eq!(term.reason.as_deref(), Some("Completed"));
    }

    // A graceful delete only marks the pod; the simulator confirms it.
    pods.delete("web", &DeleteParams::default())
        .await
        .expect("delete");
    eventually("web to be gone", 60, || {
        let pods = pods.clone();
        async move {
            matches!(pods.get("web").await, Err(kube::Error::Api(s)) if s.code == 404).then_some(())
        }
    })
    .await;
    eventually("the running gauge to drop", 60, || {
        let n = metrics.pods_running.get();
        async move { (n == 0).then_some(()) }
    })
    .await;
    // `web` (and `once`, unless it finished before its first write) went through Running.
    let text = metrics.render().expect("render");
    let started: u64 = text
        .lines()
        .find_map(|l| l.strip_prefix("cox_node_agent_pod_start_duration_seconds_count "))
        .and_then(|n| n.trim().parse().ok())
        .expect("start latency count");
    assert!(started >= 1, "{text}");
    assert!(
        !text.contains("result=\"error\""),
        "no failed writes: {text}"
    );
    sim.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_hundred_nodes_run_two_thousand_pods() {
    const NODES: usize = 200;
    const PODS: usize = 2_000;
    let c = Cluster::start(Backend::Embedded).await;
    let (sim, metrics) = start_sim(&c, NODES, "scale-").await;
    let pods: Api<Pod> = Api::namespaced(client(&c), "default");
    let results: Vec<_> = futures::stream::iter(0..PODS)
        .map(|i| {
            let pods = pods.clone();
            async move {
                pods.create(
                    &PostParams::default(),
                    &pod(&format!("p-{i}"), &format!("scale-{}", i % NODES)),
                )
                .await
            }
        })
        .buffer_unordered(32)
        .collect()
        .await;
    for r in results {
        r.expect("create pod");
    }
    eventually("all pods Running", 600, || {
        let pods = pods.clone();
        async move {
            let list = pods
                .list(&ListParams::default().fields("status.phase=Running"))
                .await
                .ok()?;
            (list.items.len() == PODS).then_some(())
        }
    })
    .await;
    // Every pod got its own address on its node.
    let list = pods.list(&ListParams::default()).await.expect("list");
    let ips: std::collections::HashSet<String> = list
        .items
        .iter()
        .filter_map(|p| p.status.as_ref()?.pod_ip.clone())
        .collect();
    assert_eq!(ips.len(), PODS, "pod IPs are unique");
    assert_eq!(metrics.pods_running.get(), PODS as i64);
    sim.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_existing_node_is_adopted_and_its_pod_cidr_honoured() {
    let c = Cluster::start(Backend::Embedded).await;
    let nodes: Api<Node> = Api::all(client(&c));
    let node: Node = serde_json::from_value(serde_json::json!({
        "metadata": {"name": "cidr-0"},
        "spec": {"podCIDR": "10.99.7.0/24", "podCIDRs": ["10.99.7.0/24"]}
    }))
    .expect("node");
    nodes
        .create(&PostParams::default(), &node)
        .await
        .expect("create node");
    let (sim, _metrics) = start_sim(&c, 1, "cidr-").await;
    let pods: Api<Pod> = Api::namespaced(client(&c), "default");
    pods.create(&PostParams::default(), &pod("in-range", "cidr-0"))
        .await
        .expect("create");
    let ip = eventually("a pod IP", 60, || {
        let pods = pods.clone();
        async move { pods.get("in-range").await.ok()?.status?.pod_ip }
    })
    .await;
    assert!(ip.starts_with("10.99.7."), "{ip} is in the node's podCIDR");
    let ready = nodes
        .get("cidr-0")
        .await
        .expect("node")
        .status
        .and_then(|s| s.conditions)
        .into_iter()
        .flatten()
        .any(|c| c.type_ == "Ready" && c.status == "True");
    assert!(ready, "the adopted node reports Ready");
    sim.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn healthz_and_metrics_are_served() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let metrics = Arc::new(Metrics::new().expect("metrics"));
    metrics.write("lease", true);
    let (addr, server) = node_agent::metrics::serve("127.0.0.1:0".parse().expect("addr"), metrics)
        .await
        .expect("serve");
    for (path, want) in [
        ("/healthz", "ok"),
        (
            "/metrics",
            "cox_node_agent_api_writes_total{kind=\"lease\",result=\"ok\"} 1",
        ),
    ] {
        let mut s = tokio::net::TcpStream::connect(addr).await.expect("connect");
        s.write_all(
            format!("GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n").as_bytes(),
        )
        .await
        .expect("write");
        let mut body = String::new();
        s.read_to_string(&mut body).await.expect("read");
        assert!(body.starts_with("HTTP/1.1 200"), "{body}");
        assert!(body.contains(want), "{path}: {body}");
    }
    server.abort();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_real_node_registers_not_ready_until_cri_lands() {
    use node_agent::node::{NodeHeartbeat, Readiness, Writer};
    let c = Cluster::start(Backend::Embedded).await;
    let metrics = Arc::new(Metrics::new().expect("metrics"));
    let writer = Writer::new(client(&c), 4, metrics);
    let config = node_agent::host::host_node_config("host-node", Some("127.0.0.1".into()));
    let (tx, rx) = tokio::sync::watch::channel(Readiness::NotReady("no runtime".into()));
    // No lease renewal or periodic status write falls inside this test: only the readiness
    // change below can make the node Ready.
    let timing = Timing {
        renew_interval: Duration::from_secs(3600),
        status_interval: Duration::from_secs(3600),
        ..fast_timing()
    };
    let mut hb = NodeHeartbeat::new(config, writer, timing, rx);
    hb.register().await.expect("register");
    let nodes: Api<Node> = Api::all(client(&c));
    let node = nodes.get("host-node").await.expect("node");
    let status = node.status.expect("status");
    assert!(status.capacity.expect("capacity").contains_key("memory"));
    let ready = status
        .conditions
        .expect("conditions")
        .into_iter()
        .find(|c| c.type_ == "Ready")
        .expect("Ready");
    assert_eq!(ready.status, "False");
    assert_eq!(ready.reason.as_deref(), Some("KubeletNotReady"));
    let leases: Api<Lease> = Api::namespaced(client(&c), "kube-node-lease");
    assert!(leases.get("host-node").await.is_ok());

    // The runtime turns ready right after registration, before the first renewal is due: the
    // node says Ready at once (it used to wait a whole renew period).
    let heartbeat = tokio::spawn(hb.run(Duration::from_secs(3600), 0.0));
    tx.send_replace(Readiness::Ready);
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    loop {
        let node = nodes.get("host-node").await.expect("node");
        let ready = node
            .status
            .and_then(|s| s.conditions)
            .is_some_and(|c| c.iter().any(|c| c.type_ == "Ready" && c.status == "True"));
        if ready {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "the node never turned Ready after its runtime did"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    heartbeat.abort();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ready_delay_shows_running_before_ready() {
    use kube::runtime::{watcher, WatchStreamExt};
    let c = Cluster::start(Backend::Embedded).await;
    let metrics = Arc::new(Metrics::new().expect("metrics"));
    let config = SimConfig {
        nodes: 1,
        node_prefix: "slow-".into(),
        running_delay: Duration::from_millis(200),
        ready_delay: Duration::from_millis(500),
        timing: fast_timing(),
        ..SimConfig::default()
    };
    let sim = Simulator::start(client(&c), config, metrics)
        .await
        .expect("simulator");
    let pods: Api<Pod> = Api::namespaced(client(&c), "default");
    // A watch sees every version, so the intermediate state is observed however fast it passes.
    let mut stream = watcher(
        pods.clone(),
        watcher::Config::default().fields("metadata.name=slow"),
    )
    .applied_objects()
    .boxed();
    pods.create(&PostParams::default(), &pod("slow", "slow-0"))
        .await
        .expect("create");
    let mut seen_running_unready = false;
    let watched = tokio::time::timeout(Duration::from_secs(60), async {
        while let Some(Ok(p)) = stream.next().await {
            let Some(s) = p.status else { continue };
            let ready = s
                .conditions
                .iter()
                .flatten()
                .any(|c| c.type_ == "Ready" && c.status == "True");
            if s.phase.as_deref() == Some("Running") {
                if ready {
                    return true;
                }
                seen_running_unready = true;
            }
        }
        false
    })
    .await;
    assert_eq!(watched, Ok(true), "the pod became Ready");
    assert!(seen_running_unready, "Running came before Ready");
    sim.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_binary_simulates_nodes() {
    let c = Cluster::start(Backend::Embedded).await;
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("free port")
        .port();
    let mut child = tokio::process::Command::new(env!("CARGO_BIN_EXE_cox-node-agent"))
        .arg("--kubeconfig")
        .arg(c.kubeconfig())
        .args(["--simulate", "2", "--node-prefix", "bin-"])
        .args(["--healthz-port", &port.to_string()])
        .kill_on_drop(true)
        .spawn()
        .expect("start cox-node-agent");
    let nodes: Api<Node> = Api::all(client(&c));
    eventually("both binary-simulated nodes Ready", 60, || {
        let nodes = nodes.clone();
        async move {
            let list = nodes.list(&ListParams::default()).await.ok()?;
            let ready = list
                .items
                .iter()
                .filter(|n| {
                    n.status
                        .as_ref()
                        .and_then(|s| s.conditions.as_ref())
                        .is_some_and(|cs| {
                            cs.iter().any(|c| c.type_ == "Ready" && c.status == "True")
                        })
                })
                .count();
            (ready == 2).then_some(())
        }
    })
    .await;
    child.kill().await.expect("stop the agent");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restarted_simulator_adopts_its_nodes_and_running_pods() {
    let c = Cluster::start(Backend::Embedded).await;
    let pods: Api<Pod> = Api::namespaced(client(&c), "default");
    let running = |name: &'static str| {
        let pods = pods.clone();
        async move {
            eventually(&format!("{name} Running"), 60, || {
                let pods = pods.clone();
                async move {
                    let p = pods.get(name).await.ok()?;
                    let s = p.status.as_ref()?;
                    (s.phase.as_deref() == Some("Running")).then(|| {
                        (
                            p.metadata.resource_version.clone().unwrap_or_default(),
                            s.pod_ip.clone().unwrap_or_default(),
                        )
                    })
                }
            })
            .await
        }
    };
    let (first, _) = start_sim(&c, 1, "re-").await;
    pods.create(&PostParams::default(), &pod("old", "re-0"))
        .await
        .expect("create");
    let (old_rv, old_ip) = running("old").await;
    first.shutdown().await;

    let (second, metrics) = start_sim(&c, 1, "re-").await;
    pods.create(&PostParams::default(), &pod("new", "re-0"))
        .await
        .expect("create");
    let (_, new_ip) = running("new").await;
    assert_ne!(new_ip, old_ip, "the adopted pod's address stays taken");
    let (rv, _) = running("old").await;
    assert_eq!(rv, old_rv, "an already running pod is not written again");
    eventually("both pods counted running", 60, || {
        let n = metrics.pods_running.get();
        async move { (n == 2).then_some(()) }
    })
    .await;
    second.shutdown().await;
}
