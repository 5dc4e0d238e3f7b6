//! `coxswain up` in this process: the whole cluster with a node on a private containerd; a
//! second start on the same data directory keeps the objects and re-adopts the running pod.
//! Waits are bounded only to detect hangs; nothing asserts on timing.

use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use k8s_openapi::api::core::v1::{Node, Pod};
use kube::api::{Api, DeleteParams, PostParams};
use node_agent::testing::Containerd;

/// Progress lines collected for assertions.
#[derive(Clone, Default)]
struct Lines(Arc<parking_lot::Mutex<Vec<String>>>);

const HANG: Duration = Duration::from_secs(90);

fn config(data: &Path, cd: Option<&Containerd>, socket: &Path) -> coxswain::UpConfig {
    coxswain::UpConfig {
        data_dir: data.to_path_buf(),
        etcd_servers: Vec::new(),
        port: 0,
        service_cluster_ip_range: ("10.0.0.0".parse().expect("ip"), 24),
        // The fixture hands out a podCIDR no other test uses.
        allocate_node_cidrs: false,
        agent: Some(coxswain::AgentOptions {
            node_name: "up-node".into(),
            container_runtime_endpoint: socket.to_path_buf(),
            import_images: Vec::new(),
            agent_config: cd.map(|cd| cd.agent_config("up-node")),
        }),
    }
}

fn progress(lines: &Lines) -> coxswain::Progress {
    let lines = lines.clone();
    Arc::new(move |l: &str| {
        lines.0.lock().push(l.to_string());
    })
}

/// The admin's client, from the kubeconfig `up` wrote (TLS, client certificate).
async fn client(cluster: &coxswain::Up) -> kube::Client {
    let yaml = std::fs::read_to_string(&cluster.kubeconfig).expect("read the kubeconfig");
    assert!(yaml.contains("https://127.0.0.1:"), "{yaml}");
    assert!(yaml.contains("client-certificate-data:"), "{yaml}");
    coxswain::client_from_kubeconfig(&yaml)
        .await
        .expect("client")
}

async fn eventually<T, F, Fut>(what: &str, mut check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    let deadline = Instant::now() + HANG;
    loop {
        if let Some(v) = check().await {
            return v;
        }
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

async fn running_container(pods: &Api<Pod>) -> (String, i32) {
    eventually("the pod Running", || async {
        let p = pods.get("hello").await.ok()?;
        let st = p.status?;
        let cs = st.container_statuses?.into_iter().next()?;
        let running = st.phase.as_deref() == Some("Running") && cs.state?.running.is_some();
        running.then(|| (cs.container_id.unwrap_or_default(), cs.restart_count))
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn up_runs_pods_and_a_restart_keeps_objects_and_containers() {
    let cd = Containerd::start().await.expect("containerd");
    let data = tempfile::tempdir().expect("data dir");
    let lines = Lines::default();
    let cluster = coxswain::up(
        config(data.path(), Some(&cd), cd.socket()),
        progress(&lines),
    )
    .await
    .expect("up");
    assert_eq!(cluster.node.as_deref(), Some("up-node"));
    assert!(
        cluster.kubeconfig.exists(),
        "the admin kubeconfig is written"
    );
    let c = client(&cluster).await;
    let nodes: Api<Node> = Api::all(c.clone());
    eventually("the node Ready", || async {
        let n = nodes.get("up-node").await.ok()?;
        n.status?
            .conditions?
            .iter()
            .any(|c| c.type_ == "Ready" && c.status == "True")
            .then_some(())
    })
    .await;
    // Scheduled by the in-process scheduler, run by the in-process agent.
    let pods: Api<Pod> = Api::namespaced(c.clone(), "default");
    let pod: Pod = serde_json::from_value(serde_json::json!({
        "metadata": {"name": "hello"},
        "spec": {"terminationGracePeriodSeconds": 1, "containers": [{
            "name": "c", "image": node_agent::images::BUSYBOX_IMAGE, "command": ["sleep", "3600"]
        }]}
    }))
    .expect("pod");
    pods.create(&PostParams::default(), &pod)
        .await
        .expect("create");
    let (before, _) = running_container(&pods).await;
    // Each component writes under its upstream name (its User-Agent): the node agent's status
    // writes show as kubelet's in managedFields, as `kubectl get --show-managed-fields` prints.
    let managers: Vec<String> = pods
        .get("hello")
        .await
        .expect("pod")
        .metadata
        .managed_fields
        .unwrap_or_default()
        .into_iter()
        .filter_map(|m| m.manager)
        .collect();
    assert!(managers.iter().any(|m| m == "kubelet"), "{managers:?}");
    cluster.stop().await;

    // Second start on the same data: the pod object survives and its container is adopted.
    let cluster = coxswain::up(
        config(data.path(), Some(&cd), cd.socket()),
        progress(&lines),
    )
    .await
    .expect("second up");
    let c = client(&cluster).await;
    let pods: Api<Pod> = Api::namespaced(c.clone(), "default");
    let (after, restarts) = running_container(&pods).await;
    assert_eq!(after, before, "the same container runs after the restart");
    assert_eq!(restarts, 0);
    pods.delete("hello", &DeleteParams::default().grace_period(0))
        .await
        .expect("delete");
    eventually("the pod gone", || async {
        pods.get_opt("hello").await.ok()?.is_none().then_some(())
    })
    .await;
    // The API object goes first (as with kubelet); the agent then removes the sandbox and its
    // network. Stopping it in the middle of that would leave the teardown to the fixture.
    let runtime = cd.cri().runtime;
    eventually("the pod's sandbox removed by the agent", || {
        let mut runtime = runtime.clone();
        async move {
            let list = runtime
                .list_pod_sandbox(node_agent::cri::api::ListPodSandboxRequest { filter: None })
                .await
                .ok()?;
            list.into_inner().items.is_empty().then_some(())
        }
    })
    .await;
    cluster.stop().await;
    let left = cd.shutdown().await;
    assert!(left.is_empty(), "left behind: {left:#?}");
    let said = lines.0.lock().join("\n");
    assert!(
        said.contains("starting the node agent for node up-node"),
        "{said}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn up_without_containerd_runs_the_control_plane_and_says_why() {
    let data = tempfile::tempdir().expect("data dir");
    let lines = Lines::default();
    let missing = data.path().join("no-containerd.sock");
    let cluster = coxswain::up(config(data.path(), None, &missing), progress(&lines))
        .await
        .expect("up");
    assert_eq!(cluster.node, None);
    let said = lines.0.lock().join("\n");
    assert!(said.contains("containerd is not reachable"), "{said}");
    assert!(said.contains("deploy/containerd/config.toml"), "{said}");
    // The control plane serves.
    let c = client(&cluster).await;
    let ns: Api<k8s_openapi::api::core::v1::Namespace> = Api::all(c);
    assert!(ns.get("default").await.is_ok());
    cluster.stop().await;
}
