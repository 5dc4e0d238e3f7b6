//! Client certificate rotation (kubelet's `--rotate-certificates`): a node that joined by TLS
//! bootstrap, against a controller manager signing short-lived certificates, renews its
//! certificate before it expires — a second CertificateSigningRequest, sent by the node itself
//! and auto-approved as `selfnodeclient` — writes the new one into its cert directory, and
//! keeps heartbeating and Ready past the first certificate's expiry on the same running
//! agent. A restart with a certificate past 90 % of its lifetime renews it before running.
//! Waits are bounded only to detect hangs.

use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use k8s_openapi::api::certificates::v1::CertificateSigningRequest;
use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::api::core::v1::Node;
use kube::api::{Api, ListParams};
use node_agent::testing::Containerd;

/// csrsigning's `--cluster-signing-duration`. Like upstream, short certificates are backdated
/// 5 minutes without shortening them, so a 150 s certificate lives 450 s and is renewed 15 to
/// 105 s after it was issued (70–90 % of its life) — before it expires.
const SIGNING: Duration = Duration::from_secs(150);

async fn eventually<T, F, Fut>(what: &str, deadline: Instant, mut check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    loop {
        if let Some(v) = check().await {
            return v;
        }
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

/// The certificate in the node's credential file: (serial, notAfter).
fn current(dir: &std::path::Path) -> (String, SystemTime) {
    let pem = std::fs::read_to_string(dir.join(coxswain::bootstrap::CURRENT_FILE))
        .expect("the current credential file");
    let serial = coxswain::rotation::serial(&pem).expect("serial");
    let (_, not_after) = coxswain::rotation::validity(&pem).expect("validity");
    (serial, not_after)
}

fn approved_self(csr: &CertificateSigningRequest, user: &str) -> bool {
    csr.spec.username.as_deref() == Some(user)
        && csr.status.as_ref().is_some_and(|s| {
            s.certificate.as_ref().is_some_and(|c| !c.0.is_empty())
                && s.conditions.iter().flatten().any(|c| {
                    c.type_ == "Approved"
                        && c.status == "True"
                        && c.message.as_deref().is_some_and(|m| m.contains("self"))
                })
        })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn agent_renews_its_client_certificate_before_expiry() {
    let data = tempfile::tempdir().expect("data dir");
    let lines = Arc::new(parking_lot::Mutex::new(Vec::<String>::new()));
    let progress: coxswain::Progress = {
        let lines = lines.clone();
        Arc::new(move |l: &str| lines.lock().push(l.to_string()))
    };
    let cluster = coxswain::up_with_signing_duration(
        coxswain::UpConfig {
            data_dir: data.path().to_path_buf(),
            etcd_servers: Vec::new(),
            port: 0,
            service_cluster_ip_range: ("10.0.0.0".parse().expect("ip"), 24),
            allocate_node_cidrs: false,
            agent: None,
        },
        SIGNING,
        progress.clone(),
    )
    .await
    .expect("up");
    let yaml = std::fs::read_to_string(&cluster.kubeconfig).expect("kubeconfig");
    let admin = coxswain::client_from_kubeconfig(&yaml)
        .await
        .expect("admin client");
    let token = coxswain::create_bootstrap_token(admin.clone(), Some(Duration::from_secs(3600)))
        .await
        .expect("token");

    let cd = Containerd::start().await.expect("containerd");
    let node = "rot-node";
    let user = format!("system:node:{node}");
    let cert_dir = data.path().join("pki-agent");
    let bootstrap = coxswain::BootstrapConfig {
        server: cluster.url.clone(),
        token,
        ca_pem: cluster.pki.ca.cert_pem().to_string(),
        cert_dir: cert_dir.clone(),
        node_name: node.into(),
        timeout: Duration::from_secs(90),
        rotate_certificates: true,
    };
    let options = coxswain::AgentOptions {
        node_name: node.into(),
        container_runtime_endpoint: cd.socket().to_path_buf(),
        import_images: Vec::new(),
        agent_config: Some(cd.agent_config(node)),
    };
    let agent = coxswain::agent_bootstrap(bootstrap.clone(), options.clone(), progress.clone())
        .await
        .expect("the agent bootstraps and starts");
    let (first_serial, first_not_after) = current(&cert_dir);
    // Every wait below ends well after the first certificate's expiry, or the test hangs.
    let deadline = Instant::now()
        + first_not_after
            .duration_since(SystemTime::now())
            .unwrap_or_default()
        + Duration::from_secs(120);

    // The node asks for its next certificate itself, and gets it approved as selfnodeclient.
    let csrs: Api<CertificateSigningRequest> = Api::all(admin.clone());
    let renewal = eventually("a renewal request by the node", deadline, || async {
        csrs.list(&ListParams::default())
            .await
            .ok()?
            .items
            .into_iter()
            .find(|c| approved_self(c, &user))
    })
    .await;
    assert!(renewal
        .metadata
        .name
        .as_deref()
        .is_some_and(|n| n.starts_with("csr-")));

    // The credential file now holds another certificate, valid for longer.
    let (serial, not_after) = eventually("the renewed certificate on disk", deadline, || async {
        let (serial, not_after) = current(&cert_dir);
        (serial != first_serial).then_some((serial, not_after))
    })
    .await;
    assert!(
        not_after > first_not_after,
        "the new certificate outlives the first"
    );
    assert!(
        lines.lock().iter().any(|l| l.contains(&serial)),
        "the renewal is reported: {:?}",
        lines.lock()
    );

    // The same running agent keeps renewing its Lease after the first certificate expired,
    // and the Node is still Ready then.
    let leases: Api<Lease> = Api::namespaced(admin.clone(), "kube-node-lease");
    let nodes: Api<Node> = Api::all(admin.clone());
    eventually(
        "a Lease renewal after the first certificate expired",
        deadline,
        || async {
            let lease = leases.get(node).await.ok()?;
            let renewed = lease.spec?.renew_time?.0;
            let renewed = SystemTime::UNIX_EPOCH
                + Duration::from_secs(u64::try_from(renewed.as_second()).ok()?);
            (renewed > first_not_after).then_some(())
        },
    )
    .await;
    let ready = nodes
        .get(node)
        .await
        .expect("the Node")
        .status
        .and_then(|s| s.conditions)
        .unwrap_or_default()
        .into_iter()
        .find(|c| c.type_ == "Ready")
        .map(|c| c.status);
    assert_eq!(ready.as_deref(), Some("True"), "the Node is still Ready");
    drop(agent);

    // At start, a certificate past 90 % of its life is renewed before the agent runs: with
    // a 150 s certificate that is the case once it is 105 s old.
    let (serial_before, _) = current(&cert_dir);
    let pem =
        std::fs::read_to_string(cert_dir.join(coxswain::bootstrap::CURRENT_FILE)).expect("current");
    let (not_before, not_after) = coxswain::rotation::validity(&pem).expect("validity");
    let aged = Instant::now() + SIGNING;
    eventually("the certificate to pass 90 % of its life", aged, || async {
        coxswain::rotation::due_at_start(not_before, not_after, SystemTime::now()).then_some(())
    })
    .await;
    let before = csrs
        .list(&ListParams::default())
        .await
        .expect("list")
        .items
        .len();
    let mut no_rotation = bootstrap.clone();
    no_rotation.rotate_certificates = false;
    coxswain::bootstrap::bootstrap_credentials(&no_rotation, &progress)
        .await
        .expect("renewed at start");
    let (serial_after, _) = current(&cert_dir);
    assert_ne!(serial_after, serial_before, "renewed at start");
    let after = csrs.list(&ListParams::default()).await.expect("list");
    assert_eq!(after.items.len(), before + 1, "one more request");
    assert!(
        after
            .items
            .iter()
            .filter(|c| approved_self(c, &user))
            .count()
            >= 2,
        "renewed with the node's own certificate"
    );

    cluster.stop().await;
    let leftovers = cd.shutdown().await;
    assert!(leftovers.is_empty(), "{leftovers:?}");
}
