//! Pods get identities, as kubelet gives them: on a secure cluster the node agent (with its
//! node client certificate, so the Node authorizer and NodeRestriction apply) fills the
//! `kube-api-access-*` projected volume with a ServiceAccount token bound to the pod, the
//! cluster CA (from the `kube-root-ca.crt` ConfigMap the controller manager's
//! root-ca-cert-publisher puts in every namespace) and the namespace. The token authenticates
//! as the pod's ServiceAccount and is worth exactly what RBAC grants that account. A token
//! that cannot be fetched keeps the pod's containers from starting, with kubelet's message,
//! until a retry succeeds.
//!
//! Most pods spell the volume out as the ServiceAccount admission writes it; one gets it from
//! the admission itself. Waits are bounded only to detect hangs.

use std::os::unix::fs::PermissionsExt;
use std::sync::Arc;
use std::time::{Duration, Instant};

use e2e::{Backend, Cluster};
use k8s_openapi::api::authentication::v1::{TokenReview, TokenReviewSpec};
use k8s_openapi::api::core::v1::{ConfigMap, Namespace, Pod, ServiceAccount};
use kube::api::{DeleteParams, PostParams};
use kube::{Api, Client};
use node_agent::cri::api;
use node_agent::images::BUSYBOX_IMAGE;
use node_agent::testing::Containerd;
use serde_json::json;

const NODE: &str = "sa-node";
const NS: &str = "tokens";
const MOUNT: &str = "/var/run/secrets/kubernetes.io/serviceaccount";
const VOLUME: &str = "kube-api-access-abcde";
const HANG: Duration = Duration::from_secs(120);

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
        assert!(Instant::now() < deadline, "timed out waiting for: {what}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// A client for the cluster as `user`, authenticating with `cert`.
async fn client_as(c: &Cluster, user: &str, cert: &pki::CertKey) -> Client {
    let pki = c.pki.as_ref().expect("secure cluster");
    let yaml = pki::kubeconfig(
        &c.url(),
        pki.ca.cert_pem(),
        user,
        pki::Credentials::ClientCert(cert),
    );
    let kc = kube::config::Kubeconfig::from_yaml(&yaml).expect("kubeconfig");
    let config = kube::Config::from_custom_kubeconfig(kc, &Default::default())
        .await
        .expect("client config");
    Client::try_from(config).expect("client")
}

/// kubectl off the runtime's worker threads, with the admin's or another kubeconfig.
async fn kubectl(
    c: &Arc<Cluster>,
    kubeconfig: Option<&std::path::Path>,
    args: &[&str],
) -> e2e::Run {
    let c = c.clone();
    let kubeconfig = kubeconfig.map(std::path::Path::to_path_buf);
    let args: Vec<String> = args.iter().map(|s| s.to_string()).collect();
    tokio::task::spawn_blocking(move || {
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        match &kubeconfig {
            Some(k) => c.kubectl_as(k, &args),
            None => c.kubectl(&args),
        }
    })
    .await
    .expect("kubectl task")
}

/// A pod on [`NODE`] running as `sa`, with the volume the ServiceAccount admission adds.
fn pod(name: &str, sa: &str) -> Pod {
    serde_json::from_value(json!({
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": name, "namespace": NS},
        "spec": {
            "nodeName": NODE,
            "serviceAccountName": sa,
            "terminationGracePeriodSeconds": 1,
            "containers": [{
                "name": "main",
                "image": BUSYBOX_IMAGE,
                "command": ["sh", "-c", "echo started; exec sleep 3600"],
                "volumeMounts": [{"name": VOLUME, "readOnly": true, "mountPath": MOUNT}],
            }],
            "volumes": [{
                "name": VOLUME,
                "projected": {
                    "defaultMode": 420,
                    "sources": [
                        {"serviceAccountToken": {"expirationSeconds": 3607, "path": "token"}},
                        {"configMap": {"name": "kube-root-ca.crt",
                            "items": [{"key": "ca.crt", "path": "ca.crt"}]}},
                        {"downwardAPI": {"items": [{"path": "namespace",
                            "fieldRef": {"apiVersion": "v1", "fieldPath": "metadata.namespace"}}]}},
                    ],
                },
            }],
        },
    }))
    .expect("pod")
}

fn service_account(name: &str) -> ServiceAccount {
    serde_json::from_value(json!({"metadata": {"name": name, "namespace": NS}})).expect("sa")
}

/// The running container's id, once the pod reports it.
async fn container_id(pods: &Api<Pod>, name: &str) -> String {
    eventually(&format!("pod {name} running"), || async {
        let p = pods.get(name).await.ok()?;
        let st = p.status?;
        let cs = st.container_statuses?.into_iter().next()?;
        cs.state?.running?;
        cs.container_id?
            .strip_prefix("containerd://")
            .map(str::to_string)
    })
    .await
}

/// Runs `cmd` inside the container (CRI ExecSync: independent of the API server's streaming
/// proxy) and returns its stdout.
async fn exec(cd: &Containerd, id: &str, cmd: &[&str]) -> String {
    let out = cd
        .cri()
        .runtime
        .clone()
        .exec_sync(api::ExecSyncRequest {
            container_id: id.to_string(),
            cmd: cmd.iter().map(|s| s.to_string()).collect(),
            timeout: 10,
        })
        .await
        .expect("ExecSync")
        .into_inner();
    assert_eq!(
        out.exit_code,
        0,
        "{cmd:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).expect("utf-8 output")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn pods_get_a_bound_service_account_token_the_ca_and_their_namespace() {
    let cluster = Arc::new(Cluster::start_secure(Backend::Embedded, "").await);
    let cd = Containerd::start().await.expect("containerd");
    let pki = cluster.pki.as_ref().expect("secure cluster");
    let ca = pki.ca.cert_pem().to_string();
    let admin = client_as(&cluster, "admin", &pki.admin).await;

    // The controller manager, with its own identity: default ServiceAccounts and the CA
    // ConfigMap in every namespace.
    let cm_client = client_as(
        &cluster,
        "system:kube-controller-manager",
        &pki.controller_manager,
    )
    .await;
    let mut cm_config = controller_manager::Config::new(cm_client);
    cm_config.controllers = vec!["serviceaccount".into(), "root-ca-cert-publisher".into()];
    cm_config.root_ca_pem = Some(ca.clone());
    let manager = tokio::spawn(async move {
        if let Err(e) = controller_manager::run(cm_config, std::future::pending(), |_| {}).await {
            panic!("controller manager failed: {e}");
        }
    });

    let namespaces: Api<Namespace> = Api::all(admin.clone());
    let ns: Namespace = serde_json::from_value(json!({"metadata": {"name": NS}})).expect("ns");
    namespaces
        .create(&PostParams::default(), &ns)
        .await
        .expect("create namespace");
    let configmaps: Api<ConfigMap> = Api::namespaced(admin.clone(), NS);
    eventually(
        "kube-root-ca.crt published in the new namespace",
        || async {
            let cm = configmaps.get_opt("kube-root-ca.crt").await.ok()??;
            (cm.data?.get("ca.crt")? == &ca).then_some(())
        },
    )
    .await;
    let sas: Api<ServiceAccount> = Api::namespaced(admin.clone(), NS);
    let pods: Api<Pod> = Api::namespaced(admin.clone(), NS);
    for sa in ["app", "temp"] {
        sas.create(&PostParams::default(), &service_account(sa))
            .await
            .expect("create service account");
    }
    // `late` is admitted while `temp` exists, which is then deleted before the node agent
    // starts: its token cannot be fetched.
    pods.create(&PostParams::default(), &pod("late", "temp"))
        .await
        .expect("create pod late");
    sas.delete("temp", &DeleteParams::default())
        .await
        .expect("delete service account temp");

    // The node agent, as the node (system:node:<name>, group system:nodes).
    let node_cert = pki.node_client(NODE).expect("node client certificate");
    let node_client = client_as(&cluster, &format!("system:node:{NODE}"), &node_cert).await;
    let agent_config = cd.agent_config(NODE);
    let root_dir = agent_config.layout.root_dir.clone();
    let metrics = Arc::new(node_agent::Metrics::new().expect("metrics"));
    let agent = node_agent::agent::start(node_client, agent_config, metrics)
        .await
        .expect("agent");

    pods.create(&PostParams::default(), &pod("web", "app"))
        .await
        .expect("create pod web");

    // A token that cannot be fetched: the container waits, with kubelet's message.
    let message = eventually("pod late reports the failed mount", || async {
        let st = pods.get("late").await.ok()?.status?;
        let waiting = st.container_statuses?.into_iter().next()?.state?.waiting?;
        let message = st.message?;
        (waiting.reason.as_deref() == Some("ContainerCreating")
            && message.contains("failed to fetch token"))
        .then_some(message)
    })
    .await;
    assert_eq!(
        message,
        format!(
            r#"MountVolume.SetUp failed for volume "{VOLUME}" : failed to fetch token: serviceaccounts "temp" not found"#
        )
    );

    // ... and kubelet's Warning event on the pod, once (not once per retry).
    let events: Api<k8s_openapi::api::core::v1::Event> = Api::namespaced(admin.clone(), NS);
    let failed = eventually("a FailedMount event for pod late", || async {
        let found: Vec<_> = events
            .list(&Default::default())
            .await
            .ok()?
            .items
            .into_iter()
            .filter(|e| {
                e.involved_object.name.as_deref() == Some("late")
                    && e.reason.as_deref() == Some("FailedMount")
            })
            .collect();
        (!found.is_empty()).then_some(found)
    })
    .await;
    assert_eq!(failed.len(), 1, "{failed:?}");
    assert_eq!(failed[0].type_.as_deref(), Some("Warning"));
    assert_eq!(failed[0].message.as_deref(), Some(message.as_str()));
    assert_eq!(
        failed[0].source.as_ref().and_then(|s| s.host.as_deref()),
        Some(NODE)
    );

    // Inside the container: the three files.
    let id = container_id(&pods, "web").await;
    let ls = exec(&cd, &id, &["ls", MOUNT]).await;
    for f in ["ca.crt", "namespace", "token"] {
        assert!(ls.lines().any(|l| l == f), "{f} missing from {MOUNT}: {ls}");
    }
    assert_eq!(
        exec(&cd, &id, &["cat", &format!("{MOUNT}/namespace")]).await,
        NS
    );
    assert_eq!(
        exec(&cd, &id, &["cat", &format!("{MOUNT}/ca.crt")]).await,
        ca
    );
    let token = exec(&cd, &id, &["cat", &format!("{MOUNT}/token")]).await;
    assert_eq!(token.split('.').count(), 3, "a JWT: {token}");
    // The volume is read-only in the container, and its files have the defaultMode (0644).
    let write = cd
        .cri()
        .runtime
        .clone()
        .exec_sync(api::ExecSyncRequest {
            container_id: id.clone(),
            cmd: vec!["sh".into(), "-c".into(), format!("echo x > {MOUNT}/token")],
            timeout: 10,
        })
        .await
        .expect("ExecSync")
        .into_inner();
    assert_ne!(write.exit_code, 0, "the token volume is writable");
    let web = pods.get("web").await.expect("pod web");
    let uid = web.metadata.uid.clone().expect("uid");
    let on_host = root_dir
        .join("pods")
        .join(&uid)
        .join("volumes/kubernetes.io~projected")
        .join(VOLUME)
        .join("token");
    let mode = std::fs::metadata(&on_host)
        .unwrap_or_else(|e| panic!("{}: {e}", on_host.display()))
        .permissions()
        .mode();
    assert_eq!(mode & 0o777, 0o644, "{}", on_host.display());

    // The token is the pod's ServiceAccount, bound to the pod.
    let reviews: Api<TokenReview> = Api::all(admin.clone());
    let review = reviews
        .create(
            &PostParams::default(),
            &TokenReview {
                spec: TokenReviewSpec {
                    token: Some(token.clone()),
                    audiences: None,
                },
                ..Default::default()
            },
        )
        .await
        .expect("TokenReview");
    let status = review.status.expect("review status");
    assert_eq!(status.authenticated, Some(true), "{status:?}");
    let user = status.user.expect("user");
    assert_eq!(
        user.username.as_deref(),
        Some("system:serviceaccount:tokens:app")
    );
    let groups = user.groups.unwrap_or_default();
    assert!(
        groups.iter().any(|g| g == "system:serviceaccounts:tokens"),
        "{groups:?}"
    );

    // With the token, kubectl is the ServiceAccount, and may do what RBAC grants it.
    let as_app = cluster.user_kubeconfig("app", pki::Credentials::Token(&token));
    let whoami = kubectl(&cluster, Some(&as_app), &["auth", "whoami"]).await;
    assert!(
        whoami.ok && whoami.stdout.contains("system:serviceaccount:tokens:app"),
        "{whoami:?}"
    );
    let denied = kubectl(&cluster, Some(&as_app), &["get", "pods", "-n", NS]).await;
    assert!(
        !denied.ok
            && denied.stderr.contains(
                r#"User "system:serviceaccount:tokens:app" cannot list resource "pods" in API group "" in the namespace "tokens""#
            ),
        "{denied:?}"
    );
    let granted = kubectl(
        &cluster,
        None,
        &[
            "create",
            "rolebinding",
            "app-view",
            "--clusterrole=view",
            "--serviceaccount=tokens:app",
            "-n",
            NS,
        ],
    )
    .await;
    assert!(granted.ok, "{granted:?}");
    let listed = eventually("the ServiceAccount may list pods", || async {
        let run = kubectl(
            &cluster,
            Some(&as_app),
            &["get", "pods", "-n", NS, "-o", "name"],
        )
        .await;
        run.ok.then_some(run.stdout)
    })
    .await;
    assert!(listed.contains("pod/web"), "{listed}");
    let elsewhere = kubectl(&cluster, Some(&as_app), &["get", "pods", "-n", "default"]).await;
    assert!(
        !elsewhere.ok,
        "view was granted in {NS} only: {elsewhere:?}"
    );

    // The failing pod retries: once its ServiceAccount exists again it starts.
    sas.create(&PostParams::default(), &service_account("temp"))
        .await
        .expect("recreate service account temp");
    let late = container_id(&pods, "late").await;
    let token = exec(&cd, &late, &["cat", &format!("{MOUNT}/token")]).await;
    assert_eq!(token.split('.').count(), 3, "a JWT: {token}");

    // Without a volume of its own, a pod gets the ServiceAccount admission's (this secure
    // test cluster turns it on) and the agent fills it just the same.
    eventually("the default ServiceAccount", || async {
        sas.get_opt("default").await.ok()?.map(|_| ())
    })
    .await;
    let bare: Pod = serde_json::from_value(json!({
        "metadata": {"name": "auto", "namespace": NS},
        "spec": {
            "nodeName": NODE,
            "terminationGracePeriodSeconds": 1,
            "containers": [{"name": "main", "image": BUSYBOX_IMAGE,
                "command": ["sh", "-c", "exec sleep 3600"]}],
        },
    }))
    .expect("pod");
    let admitted = pods
        .create(&PostParams::default(), &bare)
        .await
        .expect("create pod auto");
    let volumes = admitted
        .spec
        .as_ref()
        .and_then(|s| s.volumes.clone())
        .unwrap_or_default();
    assert!(
        volumes
            .iter()
            .any(|v| v.name.starts_with("kube-api-access-") && v.projected.is_some()),
        "{volumes:?}"
    );
    let auto = container_id(&pods, "auto").await;
    assert_eq!(
        exec(&cd, &auto, &["cat", &format!("{MOUNT}/namespace")]).await,
        NS
    );
    assert_eq!(
        exec(&cd, &auto, &["cat", &format!("{MOUNT}/ca.crt")]).await,
        ca
    );
    let token = exec(&cd, &auto, &["cat", &format!("{MOUNT}/token")]).await;
    let whoami = kubectl(
        &cluster,
        Some(&cluster.user_kubeconfig("auto", pki::Credentials::Token(&token))),
        &["auth", "whoami"],
    )
    .await;
    assert!(
        whoami.ok
            && whoami
                .stdout
                .contains("system:serviceaccount:tokens:default"),
        "{whoami:?}"
    );

    // Teardown: the pods go, then the agent and containerd; nothing may be left.
    for p in ["web", "late", "auto"] {
        pods.delete(p, &DeleteParams::default())
            .await
            .expect("delete pod");
    }
    let cri = cd.cri();
    eventually("the pods and their sandboxes are gone", || async {
        let left = cri
            .runtime
            .clone()
            .list_pod_sandbox(api::ListPodSandboxRequest { filter: None })
            .await
            .ok()?
            .into_inner()
            .items
            .len();
        let listed = pods.list(&Default::default()).await.ok()?.items.len();
        (left == 0 && listed == 0).then_some(())
    })
    .await;
    drop(agent);
    manager.abort();
    let left = cd.shutdown().await;
    assert!(left.is_empty(), "left behind: {left:#?}");
}
