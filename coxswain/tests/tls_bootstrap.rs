//! `coxswain agent --token`: against `coxswain server` (the control plane of `up`), a node
//! holding only a bootstrap token and the CA obtains its client certificate through a
//! CertificateSigningRequest that the in-process controller manager approves and signs, then
//! registers its Node with it on a private containerd. A second bootstrap reuses the
//! certificate. Waits are bounded only to detect hangs.

use std::sync::Arc;
use std::time::{Duration, Instant};

use k8s_openapi::api::certificates::v1::CertificateSigningRequest;
use k8s_openapi::api::core::v1::{Node, Secret};
use kube::api::{Api, ListParams};
use node_agent::testing::Containerd;

const HANG: Duration = Duration::from_secs(90);

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
async fn agent_joins_with_a_bootstrap_token() {
    let data = tempfile::tempdir().expect("data dir");
    let lines = Arc::new(parking_lot::Mutex::new(Vec::<String>::new()));
    let progress: coxswain::Progress = {
        let lines = lines.clone();
        Arc::new(move |l: &str| lines.lock().push(l.to_string()))
    };
    let cluster = coxswain::up(
        coxswain::UpConfig {
            data_dir: data.path().to_path_buf(),
            etcd_servers: Vec::new(),
            port: 0,
            service_cluster_ip_range: ("10.0.0.0".parse().expect("ip"), 24),
            allocate_node_cidrs: false,
            agent: None,
        },
        progress.clone(),
    )
    .await
    .expect("up");
    let yaml = std::fs::read_to_string(&cluster.kubeconfig).expect("kubeconfig");
    let admin = coxswain::client_from_kubeconfig(&yaml)
        .await
        .expect("admin client");

    // `coxswain token create`.
    let token = coxswain::create_bootstrap_token(admin.clone(), Some(Duration::from_secs(3600)))
        .await
        .expect("token");
    let (id, _) = token.split_once('.').expect("<id>.<secret>");
    let secret = Api::<Secret>::namespaced(admin.clone(), "kube-system")
        .get(&format!("bootstrap-token-{id}"))
        .await
        .expect("the token Secret");
    assert_eq!(
        secret.type_.as_deref(),
        Some("bootstrap.kubernetes.io/token")
    );
    assert!(secret.data.expect("data").contains_key("expiration"));

    let cd = Containerd::start().await.expect("containerd");
    let cert_dir = data.path().join("pki-agent");
    let bootstrap = coxswain::BootstrapConfig {
        server: cluster.url.clone(),
        token: token.clone(),
        ca_pem: cluster.pki.ca.cert_pem().to_string(),
        cert_dir: cert_dir.clone(),
        node_name: "boot-node".into(),
        timeout: HANG,
        rotate_certificates: true,
    };
    let agent = coxswain::agent_bootstrap(
        bootstrap.clone(),
        coxswain::AgentOptions {
            node_name: "boot-node".into(),
            container_runtime_endpoint: cd.socket().to_path_buf(),
            import_images: Vec::new(),
            agent_config: Some(cd.agent_config("boot-node")),
        },
        progress.clone(),
    )
    .await
    .expect("the agent bootstraps and starts");

    // The Node was registered by the agent with its signed certificate.
    let nodes: Api<Node> = Api::all(admin.clone());
    eventually("the node registered", || async {
        nodes.get("boot-node").await.ok().map(|_| ())
    })
    .await;
    let csrs: Api<CertificateSigningRequest> = Api::all(admin.clone());
    let list = csrs.list(&ListParams::default()).await.expect("list");
    assert_eq!(list.items.len(), 1, "one request");
    let csr = &list.items[0];
    assert!(csr
        .metadata
        .name
        .as_deref()
        .is_some_and(|n| n.starts_with("node-csr-")));
    assert_eq!(
        csr.spec.username.as_deref(),
        Some(format!("system:bootstrap:{id}").as_str())
    );
    assert!(csr
        .status
        .as_ref()
        .and_then(|s| s.conditions.as_ref())
        .is_some_and(|c| c.iter().any(|c| c.type_ == "Approved")));
    use std::os::unix::fs::PermissionsExt as _;
    for f in [
        coxswain::bootstrap::CURRENT_FILE,
        coxswain::bootstrap::CERT_FILE,
        coxswain::bootstrap::KEY_FILE,
        coxswain::bootstrap::KUBECONFIG_FILE,
    ] {
        let mode = std::fs::metadata(cert_dir.join(f))
            .expect("written")
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600, "{f}");
    }
    // The kubeconfig authenticates as the node.
    let node_yaml = std::fs::read_to_string(cert_dir.join(coxswain::bootstrap::KUBECONFIG_FILE))
        .expect("node kubeconfig");
    let node_client = coxswain::client_from_kubeconfig(&node_yaml)
        .await
        .expect("node client");
    Api::<Node>::all(node_client)
        .get("boot-node")
        .await
        .expect("the node reads its own Node");
    drop(agent);

    // Joining again: the certificate on disk is reused, no new request.
    let again = coxswain::bootstrap::bootstrap_credentials(&bootstrap, &progress)
        .await
        .expect("second bootstrap");
    assert_eq!(again, cert_dir.join(coxswain::bootstrap::KUBECONFIG_FILE));
    assert!(lines
        .lock()
        .iter()
        .any(|l| l.starts_with("using the client certificate in")));
    let list = csrs.list(&ListParams::default()).await.expect("list");
    assert_eq!(list.items.len(), 1, "no second request");

    // A wrong token cannot request a certificate.
    let mut wrong = bootstrap.clone();
    wrong.token = format!("{id}.0000000000000000");
    wrong.cert_dir = data.path().join("pki-wrong");
    wrong.timeout = Duration::from_secs(5);
    let err = coxswain::bootstrap::bootstrap_credentials(&wrong, &progress)
        .await
        .expect_err("a wrong token is refused");
    assert!(
        err.to_string()
            .contains("creating CertificateSigningRequest"),
        "{err}"
    );

    cluster.stop().await;
    let leftovers = cd.shutdown().await;
    assert!(leftovers.is_empty(), "{leftovers:?}");
}
