//! Issue 8's benchmark: `coxswain server` (the whole control plane in one process: API server
//! on the embedded store, scheduler, controller manager; TLS and RBAC on) as a child process,
//! measured from outside:
//! 1. cold start → the API server answers `/readyz` through the admin kubeconfig;
//! 2. → a (simulated) node is Ready, → the first pod is Running;
//! 3. the child's RSS at idle, and with 1,000 pods Running on 10 simulated nodes.
//!
//! Simulated nodes run in this (the bench) process, so their memory is not counted.
//! 4. `coxswain up` (in this process, as `coxswain/tests/up.rs` runs it) with a node agent on a
//!    real, private containerd (images already imported, as `up` does before it reports
//!    ready): cold start → `/readyz`, → the node Ready, → the first busybox pod Running. Three
//!    rounds, each on a fresh data directory (new PKI) and a fresh containerd.
//! `cargo bench -p coxswain --bench footprint` (as root: containerd needs it)

use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::{Node, Pod};
use kube::api::{Api, ListParams, PostParams};

struct Server(Child);

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// `VmRSS` and `VmHWM` of a process, in MiB.
fn rss_mib(pid: u32) -> (f64, f64) {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    let field = |name: &str| {
        status
            .lines()
            .find_map(|l| l.strip_prefix(name))
            .and_then(|v| v.split_whitespace().next())
            .and_then(|kb| kb.parse::<f64>().ok())
            .map(|kb| kb / 1024.0)
            .unwrap_or(0.0)
    };
    (field("VmRSS:"), field("VmHWM:"))
}

/// Waits until the process's RSS stops moving (two readings 1 s apart within 1 %, at most
/// 30 s) and returns it: the figure after start-up or a burst of work has settled.
async fn settled_rss(pid: u32) -> (f64, f64) {
    let deadline = Instant::now() + Duration::from_secs(30);
    let mut last = rss_mib(pid);
    loop {
        tokio::time::sleep(Duration::from_secs(1)).await;
        let now = rss_mib(pid);
        if (now.0 - last.0).abs() <= last.0 * 0.01 || Instant::now() > deadline {
            return now;
        }
        last = now;
    }
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free port")
}

async fn wait_for<F, Fut>(what: &str, limit: Duration, mut check: F) -> Duration
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let started = Instant::now();
    while !check().await {
        assert!(started.elapsed() < limit, "timed out: {what}");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    started.elapsed()
}

async fn client(kubeconfig: &Path) -> Option<kube::Client> {
    let yaml = std::fs::read_to_string(kubeconfig).ok()?;
    coxswain::client_from_kubeconfig(&yaml).await.ok()
}

#[tokio::main]
async fn main() {
    let dir = tempfile::tempdir().expect("temp dir");
    let data = dir.path().join("data");
    let kubeconfig = data.join("kubeconfig");
    let port = free_port();
    let started = Instant::now();
    let child = Command::new(env!("CARGO_BIN_EXE_coxswain"))
        .args(["server", "--port", &port.to_string(), "--data-dir"])
        .arg(&data)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("start coxswain server");
    let server = Server(child);
    let pid = server.0.id();

    // 1. Ready: the kubeconfig exists and /readyz answers over TLS with the admin certificate.
    let mut admin = None;
    while admin.is_none() {
        if let Some(c) = client(&kubeconfig).await {
            let ok = c
                .request_text(
                    http::Request::get("/readyz")
                        .body(Vec::new())
                        .expect("request"),
                )
                .await
                .is_ok();
            if ok {
                admin = Some(c);
            }
        }
        assert!(
            started.elapsed() < Duration::from_secs(60),
            "not ready in 60 s"
        );
        if admin.is_none() {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    }
    let ready = started.elapsed();
    let admin = admin.expect("client");

    // 2. A simulated node Ready, then the first pod Running on it.
    let metrics = Arc::new(node_agent::Metrics::new().expect("metrics"));
    let sim = node_agent::simulate::Simulator::start(
        admin.clone(),
        node_agent::simulate::SimConfig {
            nodes: 10,
            node_prefix: "bench-".into(),
            ..Default::default()
        },
        metrics,
    )
    .await
    .expect("simulator");
    let nodes: Api<Node> = Api::all(admin.clone());
    wait_for("a node Ready", Duration::from_secs(60), || async {
        nodes
            .get_opt("bench-0")
            .await
            .ok()
            .flatten()
            .is_some_and(|n| {
                n.status
                    .and_then(|s| s.conditions)
                    .is_some_and(|c| c.iter().any(|c| c.type_ == "Ready" && c.status == "True"))
            })
    })
    .await;
    let node_ready = started.elapsed();
    let pods: Api<Pod> = Api::namespaced(admin.clone(), "default");
    // The ServiceAccount admission needs `default`, which the controller manager makes.
    let sas: Api<k8s_openapi::api::core::v1::ServiceAccount> =
        Api::namespaced(admin.clone(), "default");
    wait_for(
        "the default ServiceAccount",
        Duration::from_secs(60),
        || async { sas.get_opt("default").await.ok().flatten().is_some() },
    )
    .await;
    let pod: Pod = serde_json::from_value(serde_json::json!({
        "metadata": {"name": "first"},
        "spec": {"containers": [{"name": "c", "image": "busybox"}]},
    }))
    .expect("pod");
    pods.create(&PostParams::default(), &pod)
        .await
        .expect("create pod");
    wait_for("the first pod Running", Duration::from_secs(60), || async {
        pods.get_opt("first")
            .await
            .ok()
            .flatten()
            .is_some_and(|p| p.status.and_then(|s| s.phase).as_deref() == Some("Running"))
    })
    .await;
    let first_pod = started.elapsed();

    // 3. Idle RSS (once it has settled), then with 1,000 pods.
    let (idle_rss, idle_hwm) = settled_rss(pid).await;
    let deployments: Api<Deployment> = Api::namespaced(admin.clone(), "default");
    let deployment: Deployment = serde_json::from_value(serde_json::json!({
        "metadata": {"name": "many"},
        "spec": {
            "replicas": 1000,
            "selector": {"matchLabels": {"app": "many"}},
            "template": {"metadata": {"labels": {"app": "many"}},
                         "spec": {"containers": [{"name": "c", "image": "busybox"}]}},
        },
    }))
    .expect("deployment");
    let scaled = Instant::now();
    deployments
        .create(&PostParams::default(), &deployment)
        .await
        .expect("create deployment");
    wait_for("1,000 pods Running", Duration::from_secs(600), || async {
        pods.list(&ListParams::default().labels("app=many"))
            .await
            .map(|l| {
                l.items
                    .iter()
                    .filter(|p| {
                        p.status.as_ref().and_then(|s| s.phase.as_deref()) == Some("Running")
                    })
                    .count()
                    >= 1000
            })
            .unwrap_or(false)
    })
    .await;
    let thousand = scaled.elapsed();
    let (loaded_rss, loaded_hwm) = settled_rss(pid).await;
    drop(sim);
    drop(server);

    println!(
        "coxswain server (API server + scheduler + controller manager, TLS + RBAC, embedded store)"
    );
    println!(
        "  cold start → /readyz over TLS        {:>8.0} ms",
        ready.as_secs_f64() * 1e3
    );
    println!(
        "  cold start → simulated node Ready     {:>8.0} ms",
        node_ready.as_secs_f64() * 1e3
    );
    println!(
        "  cold start → first pod Running        {:>8.0} ms",
        first_pod.as_secs_f64() * 1e3
    );
    println!(
        "  RSS idle                              {idle_rss:>8.1} MiB (peak so far {idle_hwm:.1})"
    );
    println!(
        "  1,000-replica Deployment all Running  {:>8.1} s",
        thousand.as_secs_f64()
    );
    println!(
        "  RSS with 1,000 pods on 10 nodes       {loaded_rss:>8.1} MiB (peak {loaded_hwm:.1})"
    );

    println!("coxswain up with a node agent on a real containerd (cold start each round)");
    for round in 1..=3 {
        let (ready, node, pod) = up_with_containerd(round).await;
        println!(
            "  round {round}: → /readyz {:>6.0} ms   → node Ready {:>6.0} ms   → first pod Running {:>6.0} ms",
            ready.as_secs_f64() * 1e3,
            node.as_secs_f64() * 1e3,
            pod.as_secs_f64() * 1e3
        );
    }
}

/// One cold start of `coxswain up` with a real node: returns the times from the call to
/// `/readyz` answering, to the node Ready and to the first pod Running.
async fn up_with_containerd(round: u32) -> (Duration, Duration, Duration) {
    let cd = node_agent::testing::Containerd::start()
        .await
        .expect("containerd (run as root)");
    let data = tempfile::tempdir().expect("data dir");
    let node = format!("bench-up-{round}");
    let config = coxswain::UpConfig {
        data_dir: data.path().to_path_buf(),
        etcd_servers: Vec::new(),
        port: 0,
        service_cluster_ip_range: ("10.0.0.0".parse().expect("ip"), 24),
        // The fixture hands out the node's podCIDR.
        allocate_node_cidrs: false,
        agent: Some(coxswain::AgentOptions {
            node_name: node.clone(),
            container_runtime_endpoint: cd.socket().to_path_buf(),
            import_images: Vec::new(),
            agent_config: Some(cd.agent_config(&node)),
        }),
    };
    let started = Instant::now();
    let cluster = coxswain::up(config, Arc::new(|_: &str| {}))
        .await
        .expect("coxswain up");
    let admin = client(&cluster.kubeconfig).await.expect("admin client");
    wait_for("/readyz", Duration::from_secs(60), || async {
        admin
            .request_text(
                http::Request::get("/readyz")
                    .body(Vec::new())
                    .expect("request"),
            )
            .await
            .is_ok()
    })
    .await;
    let ready = started.elapsed();
    let nodes: Api<Node> = Api::all(admin.clone());
    wait_for("the node Ready", Duration::from_secs(60), || async {
        nodes.get_opt(&node).await.ok().flatten().is_some_and(|n| {
            n.status
                .and_then(|s| s.conditions)
                .is_some_and(|c| c.iter().any(|c| c.type_ == "Ready" && c.status == "True"))
        })
    })
    .await;
    let node_ready = started.elapsed();
    let sas: Api<k8s_openapi::api::core::v1::ServiceAccount> =
        Api::namespaced(admin.clone(), "default");
    wait_for(
        "the default ServiceAccount",
        Duration::from_secs(60),
        || async { sas.get_opt("default").await.ok().flatten().is_some() },
    )
    .await;
    let pods: Api<Pod> = Api::namespaced(admin.clone(), "default");
    let pod: Pod = serde_json::from_value(serde_json::json!({
        "metadata": {"name": "first"},
        "spec": {"terminationGracePeriodSeconds": 0, "containers": [{
            "name": "c", "image": node_agent::images::BUSYBOX_IMAGE, "command": ["sleep", "3600"]
        }]},
    }))
    .expect("pod");
    pods.create(&PostParams::default(), &pod)
        .await
        .expect("create pod");
    wait_for(
        "the first pod Running",
        Duration::from_secs(120),
        || async {
            pods.get_opt("first")
                .await
                .ok()
                .flatten()
                .is_some_and(|p| p.status.and_then(|s| s.phase).as_deref() == Some("Running"))
        },
    )
    .await;
    let first_pod = started.elapsed();
    // Remove the pod's sandbox before containerd goes, so nothing outlives the round.
    let _ = pods
        .delete("first", &kube::api::DeleteParams::default().grace_period(0))
        .await;
    wait_for("the pod gone", Duration::from_secs(60), || async {
        pods.get_opt("first").await.ok().flatten().is_none()
    })
    .await;
    cluster.stop().await;
    drop(cd);
    (ready, node_ready, first_pod)
}
