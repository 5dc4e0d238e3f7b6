//! Kubelet TLS bootstrap on a secure cluster with kubectl: a bootstrap-token user asks for a
//! node client certificate through a CertificateSigningRequest, the controller manager's
//! csrapproving and csrsigning (in-process, as system:kube-controller-manager) approve and
//! sign it, and the certificate authenticates as the node. Requests of another shape wait for
//! a human: `kubectl certificate approve|deny`, which a bootstrap user may not do.

use std::path::Path;
use std::time::{Duration, Instant};

use e2e::{Backend, Cluster, Run};
use k8s_openapi::ByteString;

const TOKEN: &str = "abcdef.0123456789abcdef";
const KUBELET_SIGNER: &str = "kubernetes.io/kube-apiserver-client-kubelet";

async fn client_for(kubeconfig: &Path) -> kube::Client {
    let kc = kube::config::Kubeconfig::read_from(kubeconfig).expect("kubeconfig");
    let config = kube::Config::from_custom_kubeconfig(kc, &Default::default())
        .await
        .expect("client config");
    kube::Client::try_from(config).expect("client")
}

/// Writes a CertificateSigningRequest manifest for `csr_pem`; returns its path.
fn csr_manifest(cluster: &Cluster, name: &str, csr_pem: &str, signer: &str) -> String {
    let request = serde_json::to_value(ByteString(csr_pem.as_bytes().to_vec())).expect("base64");
    let request = request.as_str().expect("a string");
    let path = cluster.dir().join(format!("{name}.yaml"));
    std::fs::write(
        &path,
        format!(
            "apiVersion: certificates.k8s.io/v1\nkind: CertificateSigningRequest\nmetadata:\n  name: {name}\nspec:\n  request: {request}\n  signerName: {signer}\n  usages:\n  - digital signature\n  - client auth\n"
        ),
    )
    .expect("write");
    path.to_str().expect("utf-8").to_string()
}

/// Polls `f` until it returns `Some`, failing after `within`.
fn eventually<T>(what: &str, within: Duration, mut f: impl FnMut() -> Option<T>) -> T {
    let deadline = Instant::now() + within;
    loop {
        if let Some(v) = f() {
            return v;
        }
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(100));
    }
}

fn get_csr(cluster: &Cluster, name: &str) -> serde_json::Value {
    let out = cluster.must(&["get", "csr", name, "-o", "json"]);
    serde_json::from_str(&out).expect("json")
}

/// The signed certificate of `name`, once there.
fn certificate(cluster: &Cluster, name: &str) -> String {
    eventually(
        &format!("{name} to be signed"),
        Duration::from_secs(30),
        || {
            let csr = get_csr(cluster, name);
            let b64 = csr.pointer("/status/certificate")?.clone();
            let pem: ByteString = serde_json::from_value(b64).expect("base64");
            Some(String::from_utf8(pem.0).expect("PEM"))
        },
    )
}

fn conditions(csr: &serde_json::Value) -> Vec<String> {
    csr.pointer("/status/conditions")
        .and_then(|c| c.as_array())
        .map(|c| {
            c.iter()
                .map(|c| c["type"].as_str().unwrap_or_default().to_string())
                .collect()
        })
        .unwrap_or_default()
}

fn forbidden(run: &Run) -> bool {
    !run.ok && run.stderr.contains("Forbidden")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bootstrap_token_to_node_certificate() {
    let cluster = Cluster::start_secure(Backend::Embedded, "mallory-token,mallory,1001\n").await;
    let pki = cluster.pki.as_ref().expect("secure");

    // The controller manager, with its own identity and the CSR controllers only.
    let cm_kubeconfig = cluster.user_kubeconfig(
        "system:kube-controller-manager",
        pki::Credentials::ClientCert(&pki.controller_manager),
    );
    let mut config = controller_manager::Config::new(client_for(&cm_kubeconfig).await);
    config.controllers = vec!["csrapproving".into(), "csrsigning".into()];
    config.cluster_signing = Some(
        controller_manager::controllers::certificates::ClusterSigning {
            cert_pem: pki.ca.cert_pem().to_string(),
            key_pem: pki.ca.key_pem().to_string(),
            duration: Duration::from_secs(3600),
        },
    );
    let cm = tokio::spawn(async move {
        let _ = controller_manager::run(config, std::future::pending(), |_| {}).await;
    });

    // A bootstrap token, as `coxswain token create` writes it.
    let token_yaml = "apiVersion: v1\nkind: Secret\nmetadata:\n  name: bootstrap-token-abcdef\n  namespace: kube-system\ntype: bootstrap.kubernetes.io/token\nstringData:\n  token-id: abcdef\n  token-secret: 0123456789abcdef\n  usage-bootstrap-authentication: \"true\"\n";
    cluster.apply(token_yaml, &[]);
    let boot = cluster.user_kubeconfig("bootstrap", pki::Credentials::Token(TOKEN));

    let cluster = tokio::task::spawn_blocking(move || {
        // A node client certificate request from the bootstrap user: approved and signed.
        let (csr_pem, key_pem) =
            pki::generate_csr("system:node:worker-1", Some("system:nodes")).expect("csr");
        let manifest = csr_manifest(&cluster, "node-csr-worker-1", &csr_pem, KUBELET_SIGNER);
        let created = cluster.kubectl_as(&boot, &["create", "-f", &manifest]);
        assert!(created.ok, "{created:?}");
        let cert_pem = certificate(&cluster, "node-csr-worker-1");
        let csr = get_csr(&cluster, "node-csr-worker-1");
        assert_eq!(csr["spec"]["username"], "system:bootstrap:abcdef", "{csr}");
        assert!(
            csr["spec"]["groups"]
                .as_array()
                .is_some_and(|g| g.iter().any(|g| g == "system:bootstrappers")),
            "{csr}"
        );
        let approved = &csr["status"]["conditions"][0];
        assert_eq!(approved["type"], "Approved", "{csr}");
        assert_eq!(approved["reason"], "AutoApproved", "{csr}");
        assert!(approved["lastUpdateTime"].is_string(), "{csr}");

        // The certificate is the node's: whoami, and it may create its own Node.
        let node_cert = pki::CertKey { cert_pem, key_pem };
        let node = cluster.user_kubeconfig(
            "system:node:worker-1",
            pki::Credentials::ClientCert(&node_cert),
        );
        let whoami = cluster.kubectl_as(&node, &["auth", "whoami"]);
        assert!(whoami.ok, "{whoami:?}");
        assert!(whoami.stdout.contains("system:node:worker-1"), "{whoami:?}");
        assert!(whoami.stdout.contains("system:nodes"), "{whoami:?}");
        let node_yaml = cluster.dir().join("node.yaml");
        std::fs::write(
            &node_yaml,
            "apiVersion: v1\nkind: Node\nmetadata:\n  name: worker-1\n",
        )
        .expect("write");
        let made = cluster.kubectl_as(&node, &["create", "-f", node_yaml.to_str().expect("utf-8")]);
        assert!(made.ok, "{made:?}");
        let other_yaml = cluster.dir().join("other-node.yaml");
        std::fs::write(
            &other_yaml,
            "apiVersion: v1\nkind: Node\nmetadata:\n  name: worker-2\n",
        )
        .expect("write");
        let other = cluster.kubectl_as(
            &node,
            &["create", "-f", other_yaml.to_str().expect("utf-8")],
        );
        assert!(forbidden(&other), "a node creates only itself: {other:?}");

        // A request of another shape (CN not system:node:<name>) is left for a human; a
        // node request created after it is approved, it still is not.
        let (odd_pem, _) = pki::generate_csr("alice", Some("system:nodes")).expect("csr");
        let odd = csr_manifest(&cluster, "odd", &odd_pem, KUBELET_SIGNER);
        let created = cluster.kubectl_as(&boot, &["create", "-f", &odd]);
        assert!(created.ok, "{created:?}");
        let (next_pem, _) =
            pki::generate_csr("system:node:worker-3", Some("system:nodes")).expect("csr");
        let next = csr_manifest(&cluster, "node-csr-worker-3", &next_pem, KUBELET_SIGNER);
        let created = cluster.kubectl_as(&boot, &["create", "-f", &next]);
        assert!(created.ok, "{created:?}");
        certificate(&cluster, "node-csr-worker-3");
        let odd_now = get_csr(&cluster, "odd");
        assert!(conditions(&odd_now).is_empty(), "{odd_now}");

        // The bootstrap user may neither approve nor read Secrets.
        let approve = cluster.kubectl_as(&boot, &["certificate", "approve", "odd"]);
        assert!(forbidden(&approve), "{approve:?}");
        let secrets = cluster.kubectl_as(&boot, &["get", "secrets", "-n", "kube-system"]);
        assert!(forbidden(&secrets), "{secrets:?}");
        let nodes = cluster.kubectl_as(&boot, &["get", "nodes"]);
        assert!(forbidden(&nodes), "{nodes:?}");

        // An administrator denies it; `kubectl get csr` and `describe` show the decisions.
        let denied = cluster.must(&["certificate", "deny", "odd"]);
        assert!(denied.contains("denied"), "{denied}");
        assert_eq!(conditions(&get_csr(&cluster, "odd")), ["Denied"]);
        let again = cluster.kubectl(&["certificate", "approve", "odd"]);
        assert!(!again.ok, "approving a denied request: {again:?}");

        // Approved by hand, a kubelet request that is no node client certificate is not
        // signed: the signer marks it Failed.
        let (bob_pem, _) = pki::generate_csr("bob", Some("system:nodes")).expect("csr");
        let bob = csr_manifest(&cluster, "bob", &bob_pem, KUBELET_SIGNER);
        cluster.must(&["create", "-f", &bob]);
        cluster.must(&["certificate", "approve", "bob"]);
        let failed = eventually("bob to fail", Duration::from_secs(30), || {
            let csr = get_csr(&cluster, "bob");
            conditions(&csr)
                .contains(&"Failed".to_string())
                .then_some(csr)
        });
        assert_eq!(
            failed["status"]["conditions"]
                .as_array()
                .and_then(|c| c.iter().find(|c| c["type"] == "Failed"))
                .map(|c| c["reason"].clone())
                .unwrap_or_default(),
            "SignerValidationFailure",
            "{failed}"
        );
        assert!(failed.pointer("/status/certificate").is_none(), "{failed}");
        let shown = cluster.must(&["get", "csr", "bob"]);
        assert!(shown.contains("Approved,Failed"), "{shown}");

        // Writing a certificate into a request takes `sign` on its signer, not only RBAC on
        // the status subresource.
        cluster.apply(
            "apiVersion: rbac.authorization.k8s.io/v1\nkind: ClusterRole\nmetadata:\n  name: csr-status-writer\nrules:\n- apiGroups: [certificates.k8s.io]\n  resources: [certificatesigningrequests, certificatesigningrequests/status]\n  verbs: [get, update, patch]\n---\napiVersion: rbac.authorization.k8s.io/v1\nkind: ClusterRoleBinding\nmetadata:\n  name: mallory-csr-status\nroleRef:\n  apiGroup: rbac.authorization.k8s.io\n  kind: ClusterRole\n  name: csr-status-writer\nsubjects:\n- apiGroup: rbac.authorization.k8s.io\n  kind: User\n  name: mallory\n",
            &[],
        );
        let mallory = cluster.user_kubeconfig("mallory", pki::Credentials::Token("mallory-token"));
        let forged = cluster.kubectl_as(
            &mallory,
            &[
                "patch",
                "csr",
                "odd",
                "--subresource=status",
                "--type=merge",
                "-p",
                r#"{"status":{"certificate":"LS0tLS1CRUdJTiBDRVJUSUZJQ0FURS0tLS0tCg=="}}"#,
            ],
        );
        assert!(forbidden(&forged), "{forged:?}");
        assert!(
            forged
                .stderr
                .contains("user not permitted to sign requests with signerName"),
            "{forged:?}"
        );

        // A client certificate for a person, approved by hand with kubectl.
        let (alice_pem, alice_key) = pki::generate_csr("alice", Some("devs")).expect("csr");
        let alice = csr_manifest(
            &cluster,
            "alice",
            &alice_pem,
            "kubernetes.io/kube-apiserver-client",
        );
        cluster.must(&["create", "-f", &alice]);
        let pending = cluster.must(&["get", "csr", "alice"]);
        assert!(pending.contains("Pending"), "{pending}");
        let approved = cluster.must(&["certificate", "approve", "alice"]);
        assert!(approved.contains("approved"), "{approved}");
        let alice_cert = pki::CertKey {
            cert_pem: certificate(&cluster, "alice"),
            key_pem: alice_key,
        };
        let listed = cluster.must(&["get", "csr"]);
        for want in [
            "node-csr-worker-1",
            "Approved,Issued",
            "Denied",
            "kubernetes.io/kube-apiserver-client-kubelet",
            "system:bootstrap:abcdef",
        ] {
            assert!(listed.contains(want), "{want} in\n{listed}");
        }
        let described = cluster.must(&["describe", "csr", "alice"]);
        assert!(described.contains("alice"), "{described}");
        assert!(described.contains("Approved"), "{described}");
        let alice_kc = cluster.user_kubeconfig("alice", pki::Credentials::ClientCert(&alice_cert));
        let whoami = cluster.kubectl_as(&alice_kc, &["auth", "whoami"]);
        assert!(whoami.ok && whoami.stdout.contains("alice"), "{whoami:?}");
        assert!(whoami.stdout.contains("devs"), "{whoami:?}");
        cluster
    })
    .await
    .expect("kubectl steps");
    cm.abort();
    drop(cluster);
}
