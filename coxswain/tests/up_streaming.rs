//! `coxswain up`'s node agent serves its streaming port over TLS: pod logs reach the client
//! through the API server (which dials the agent with its kubelet client certificate), while
//! a caller without credentials is refused by the agent itself.

use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use k8s_openapi::api::core::v1::{Node, Pod};
use kube::api::{Api, DeleteParams, LogParams, PostParams};
use node_agent::testing::Containerd;
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};

const HANG: Duration = Duration::from_secs(90);
const NODE: &str = "tls-up-node";

fn config(data: &Path, cd: &Containerd) -> coxswain::UpConfig {
    coxswain::UpConfig {
        data_dir: data.to_path_buf(),
        etcd_servers: Vec::new(),
        port: 0,
        service_cluster_ip_range: ("10.0.0.0".parse().expect("ip"), 24),
        allocate_node_cidrs: false,
        agent: Some(coxswain::AgentOptions {
            node_name: NODE.into(),
            container_runtime_endpoint: cd.socket().to_path_buf(),
            import_images: Vec::new(),
            agent_config: Some(cd.agent_config(NODE)),
        }),
    }
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

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn up_serves_the_node_agent_over_tls() {
    let cd = Containerd::start().await.expect("containerd");
    let data = tempfile::tempdir().expect("data dir");
    let cluster = coxswain::up(config(data.path(), &cd), Arc::new(|_: &str| {}))
        .await
        .expect("up");
    assert_eq!(cluster.node.as_deref(), Some(NODE));
    let yaml = std::fs::read_to_string(&cluster.kubeconfig).expect("read the kubeconfig");
    let c = coxswain::client_from_kubeconfig(&yaml)
        .await
        .expect("client");

    let pods: Api<Pod> = Api::namespaced(c.clone(), "default");
    let pod: Pod = serde_json::from_value(serde_json::json!({
        "metadata": {"name": "talker"},
        "spec": {"terminationGracePeriodSeconds": 1, "containers": [{
            "name": "c", "image": node_agent::images::BUSYBOX_IMAGE,
            "command": ["sh", "-c", "echo said-over-tls; exec sleep 3600"]
        }]}
    }))
    .expect("pod");
    // Retried until the controller manager has created the default ServiceAccount.
    eventually("the pod created", || async {
        pods.create(&PostParams::default(), &pod).await.ok()
    })
    .await;
    // Through the API server: it dials the agent over TLS.
    let logs = eventually("the pod's logs", || async {
        let logs = pods.logs("talker", &LogParams::default()).await.ok()?;
        logs.contains("said-over-tls").then_some(logs)
    })
    .await;
    assert!(logs.contains("said-over-tls"), "{logs}");

    // Straight to the agent, without credentials: 401 from the agent itself.
    let nodes: Api<Node> = Api::all(c.clone());
    let port = nodes
        .get(NODE)
        .await
        .expect("node")
        .status
        .and_then(|s| Some(s.daemon_endpoints?.kubelet_endpoint?.port))
        .expect("kubelet endpoint port");
    let port = u16::try_from(port).expect("port");
    let tls = pki::client_config(cluster.pki.ca.cert_pem(), None).expect("TLS config");
    let tcp = tokio::net::TcpStream::connect(("127.0.0.1", port))
        .await
        .expect("connect");
    let name = rustls::pki_types::ServerName::try_from("127.0.0.1").expect("name");
    let mut conn = tokio_rustls::TlsConnector::from(tls)
        .connect(name, tcp)
        .await
        .expect("the agent's certificate is valid for 127.0.0.1 under the cluster CA");
    conn.write_all(
        b"GET /containerLogs/default/talker/c HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n",
    )
    .await
    .expect("send");
    let mut raw = Vec::new();
    let _ = conn.read_to_end(&mut raw).await;
    let raw = String::from_utf8_lossy(&raw);
    assert!(raw.starts_with("HTTP/1.1 401"), "{raw}");

    pods.delete("talker", &DeleteParams::default().grace_period(0))
        .await
        .expect("delete");
    // The agent tears the pod down before anything stops.
    let cri = cd.cri();
    eventually("the pod and its sandbox gone", || {
        let mut runtime = cri.runtime.clone();
        let pods = pods.clone();
        async move {
            let gone = pods.get_opt("talker").await.ok()?.is_none();
            let sandboxes = runtime
                .list_pod_sandbox(node_agent::cri::api::ListPodSandboxRequest { filter: None })
                .await
                .ok()?
                .into_inner()
                .items;
            (gone && sandboxes.is_empty()).then_some(())
        }
    })
    .await;
    cluster.stop().await;
    let left = cd.shutdown().await;
    assert!(left.is_empty(), "left behind: {left:#?}");
}
