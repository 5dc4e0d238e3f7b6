//! The node agent's streaming port in a secure cluster, as kubelet's: HTTPS with a node
//! serving certificate, callers authenticated by client certificate or bearer token
//! (TokenReview) and authorized by a SubjectAccessReview on `nodes/proxy`. `kubectl logs`,
//! `exec` (with stdin) and `port-forward` still work through the API server (which presents
//! its kubelet client certificate); direct callers get 401 without (valid) credentials, 403
//! without RBAC rights, and what RBAC grants otherwise.

use std::sync::Arc;
use std::time::{Duration, Instant};

use e2e::{Backend, Cluster};
use node_agent::cri::api;
use node_agent::images::BUSYBOX_IMAGE;
use node_agent::testing::Containerd;
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};

const NODE: &str = "tls-node";
const HANG: Duration = Duration::from_secs(120);
/// Static tokens: carol will be granted `nodes/proxy`, erin not.
const TOKENS: &str = "carol-token,carol,2001\nerin-token,erin,2002\n";

async fn eventually<F, Fut>(what: &str, mut check: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = Instant::now() + HANG;
    while !check().await {
        assert!(Instant::now() < deadline, "timed out waiting for: {what}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// Runs kubectl off the runtime's worker threads.
async fn kubectl(c: &Arc<Cluster>, args: &[&str]) -> e2e::Run {
    let c = c.clone();
    let args: Vec<String> = args.iter().map(|s| s.to_string()).collect();
    tokio::task::spawn_blocking(move || {
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        c.kubectl(&args)
    })
    .await
    .expect("kubectl task")
}

async fn must(c: &Arc<Cluster>, args: &[&str]) -> String {
    let run = kubectl(c, args).await;
    assert!(run.ok, "kubectl {} failed: {run:?}", args.join(" "));
    run.stdout
}

async fn apply(c: &Arc<Cluster>, yaml: String) {
    let c = c.clone();
    tokio::task::spawn_blocking(move || c.apply(&yaml, &[]))
        .await
        .expect("apply task");
}

/// A client with the node's own credentials (what `coxswain up` gives its agent).
async fn node_client(c: &Cluster) -> kube::Client {
    let pki = c.pki.as_ref().expect("secure cluster");
    let cert = pki.node_client(NODE).expect("node client certificate");
    let yaml = pki::kubeconfig(
        &c.url(),
        pki.ca.cert_pem(),
        &format!("system:node:{NODE}"),
        pki::Credentials::ClientCert(&cert),
    );
    let kc = kube::config::Kubeconfig::from_yaml(&yaml).expect("kubeconfig");
    let config = kube::Config::from_custom_kubeconfig(kc, &Default::default())
        .await
        .expect("client config");
    kube::Client::try_from(config).expect("client")
}

/// One `method path` straight to the agent over TLS (trusting the cluster CA), presenting `cert`
/// and/or a bearer `token`; returns the status code and the raw rest of the response.
async fn agent_get(
    port: u16,
    ca_pem: &str,
    path: &str,
    cert: Option<&pki::CertKey>,
    token: Option<&str>,
) -> (u16, String) {
    agent_request("GET", port, ca_pem, path, cert, token).await
}

async fn agent_post(
    port: u16,
    ca_pem: &str,
    path: &str,
    cert: Option<&pki::CertKey>,
    token: Option<&str>,
) -> (u16, String) {
    agent_request("POST", port, ca_pem, path, cert, token).await
}

async fn agent_request(
    method: &str,
    port: u16,
    ca_pem: &str,
    path: &str,
    cert: Option<&pki::CertKey>,
    token: Option<&str>,
) -> (u16, String) {
    let config = pki::client_config(ca_pem, cert).expect("TLS client config");
    let tcp = tokio::net::TcpStream::connect(("127.0.0.1", port))
        .await
        .expect("connect to the agent");
    let name = rustls::pki_types::ServerName::try_from("127.0.0.1").expect("server name");
    let mut tls = tokio_rustls::TlsConnector::from(config)
        .connect(name, tcp)
        .await
        .expect("TLS handshake with the agent (its certificate must be valid for 127.0.0.1)");
    let auth = token
        .map(|t| format!("Authorization: Bearer {t}\r\n"))
        .unwrap_or_default();
    let request = format!(
        "{method} {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\n{auth}Content-Length: 0\r\nConnection: close\r\n\r\n"
    );
    tls.write_all(request.as_bytes()).await.expect("send");
    let mut raw = Vec::new();
    // A peer closing without close_notify is an error to rustls, but the bytes are in.
    let _ = tls.read_to_end(&mut raw).await;
    let raw = String::from_utf8_lossy(&raw).into_owned();
    let code = raw
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or_else(|| panic!("no HTTP status in {raw:?}"));
    (code, raw)
}

fn pod() -> String {
    format!(
        r#"apiVersion: v1
kind: ServiceAccount
metadata:
  name: default
---
apiVersion: v1
kind: Pod
metadata:
  name: p
spec:
  nodeName: {NODE}
  automountServiceAccountToken: false
  terminationGracePeriodSeconds: 1
  containers:
  - name: main
    image: {BUSYBOX_IMAGE}
    command: ["sh", "-c", "mkdir -p /www && echo forwarded-over-tls > /www/index.html && httpd -p 8080 -h /www && echo hello-over-tls && exec sleep 3600"]
"#
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_streaming_port_is_https_and_authorizes_callers() {
    let cluster = Arc::new(Cluster::start_secure(Backend::Embedded, TOKENS).await);
    let cd = Containerd::start().await.expect("containerd");
    let pki = cluster.pki.as_ref().expect("secure cluster");
    let ca = pki.ca.cert_pem().to_string();

    let mut cfg = cd.agent_config(NODE);
    cfg.tls = Some(node_agent::agent::AgentTls {
        serving: pki
            .node_serving(NODE, &["127.0.0.1".parse().expect("ip")])
            .expect("node serving certificate"),
        client_ca_pem: ca.clone(),
    });
    let metrics = Arc::new(node_agent::Metrics::new().expect("metrics"));
    let agent = node_agent::agent::start(node_client(&cluster).await, cfg, metrics)
        .await
        .expect("agent");
    let port = agent.server_addr.expect("streaming server").port();

    apply(&cluster, pod()).await;
    must(
        &cluster,
        &["wait", "--for=condition=Ready", "pod/p", "--timeout=120s"],
    )
    .await;

    // (a) Through the API server, which dials the agent over TLS with its kubelet client
    // certificate.
    eventually("kubectl logs shows the container's output", || async {
        kubectl(&cluster, &["logs", "p"])
            .await
            .stdout
            .contains("hello-over-tls")
    })
    .await;
    let out = must(&cluster, &["exec", "p", "--", "echo", "exec-over-tls"]).await;
    assert_eq!(out.trim(), "exec-over-tls");
    // stdin, and its end, cross the TLS hop (cat exits only when stdin closes).
    let run = {
        let c = cluster.clone();
        tokio::task::spawn_blocking(move || {
            c.kubectl_stdin(&["exec", "-i", "p", "--", "cat"], Some("stdin-over-tls\n"))
        })
        .await
        .expect("kubectl task")
    };
    assert!(run.ok, "{run:?}");
    assert_eq!(run.stdout, "stdin-over-tls\n");
    // port-forward, then a GET through it. kubectl 1.32's port-forward exits when a forwarded
    // connection fails (e.g. reset while the machine is loaded), so a failed attempt starts a
    // new port-forward rather than retrying through a dead one.
    let deadline = std::time::Instant::now() + HANG;
    let body = loop {
        let (mut pf, lines) = cluster.kubectl_lines(&["port-forward", "pod/p", ":8080"]);
        let line = tokio::task::spawn_blocking(move || lines.recv_timeout(HANG).ok())
            .await
            .expect("port-forward line");
        let local: Option<u16> = line.as_deref().and_then(|l| {
            l.strip_prefix("Forwarding from 127.0.0.1:")
                .and_then(|rest| rest.split_whitespace().next())
                .and_then(|p| p.parse().ok())
        });
        let got = match local {
            Some(port) => match reqwest::get(format!("http://127.0.0.1:{port}/index.html")).await {
                Ok(resp) => resp.text().await.ok(),
                Err(_) => None,
            },
            None => None,
        };
        let _ = pf.kill();
        let _ = pf.wait();
        if let Some(body) = got {
            break body;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "no GET through a port-forward succeeded (last output {line:?})"
        );
        tokio::time::sleep(std::time::Duration::from_millis(500)).await;
    };
    assert_eq!(body.trim(), "forwarded-over-tls");

    // (b) Straight to the agent.
    let logs = "/containerLogs/default/p/main";
    let (code, body) = agent_get(port, &ca, logs, None, None).await;
    assert_eq!(code, 401, "{body}");
    assert!(body.ends_with("Unauthorized"), "{body}");

    // A certificate from another CA authenticates nobody.
    let other = pki::Ca::generate("someone-else").expect("foreign CA");
    let foreign = other
        .issue_client(
            "kubernetes-admin",
            &["system:masters".into()],
            pki::LEAF_VALIDITY,
        )
        .expect("foreign certificate");
    let (code, body) = agent_get(port, &ca, logs, Some(&foreign), None).await;
    assert_eq!(code, 401, "{body}");

    // A valid user without RBAC rights on nodes/proxy.
    let dave = pki
        .ca
        .issue_client("dave", &["devs".into()], pki::LEAF_VALIDITY)
        .expect("dave's certificate");
    let (code, body) = agent_get(port, &ca, logs, Some(&dave), None).await;
    assert_eq!(code, 403, "{body}");
    assert!(
        body.contains("Forbidden (user=dave, verb=get, resource=nodes, subresource(s)=[proxy])"),
        "{body}"
    );
    let (code, body) = agent_get(port, &ca, logs, None, Some("erin-token")).await;
    assert_eq!(code, 403, "{body}");
    assert!(body.contains("Forbidden (user=erin, "), "{body}");
    let (code, body) = agent_get(port, &ca, logs, None, Some("not-a-token")).await;
    assert_eq!(code, 401, "{body}");

    // The admin (system:masters) may.
    let (code, body) = agent_get(port, &ca, logs, Some(&pki.admin), None).await;
    assert_eq!(code, 200, "{body}");
    assert!(body.contains("hello-over-tls"), "{body}");

    // RBAC decides for everyone else: carol (a bearer token, reviewed by the API server) is
    // granted nodes/proxy.
    must(
        &cluster,
        &[
            "create",
            "clusterrole",
            "node-proxy",
            "--verb=get",
            "--resource=nodes/proxy",
        ],
    )
    .await;
    must(
        &cluster,
        &[
            "create",
            "clusterrolebinding",
            "carol-node-proxy",
            "--clusterrole=node-proxy",
            "--user=carol",
        ],
    )
    .await;
    // Wait for the authorizer to see the grant before the agent asks (it caches a denial).
    eventually("carol may get nodes/proxy", || async {
        kubectl(
            &cluster,
            // (`nodes/proxy` alone would mean the node named "proxy".)
            &[
                "auth",
                "can-i",
                "get",
                "nodes",
                "--subresource=proxy",
                "--as=carol",
            ],
        )
        .await
        .stdout
        .trim()
            == "yes"
    })
    .await;
    let (code, body) = agent_get(port, &ca, logs, None, Some("carol-token")).await;
    assert_eq!(code, 200, "{body}");
    assert!(body.contains("hello-over-tls"), "{body}");
    // Still only what the role says: exec by POST is verb create, which carol lacks.
    let exec = "/exec/default/p/main?command=true&output=1";
    let (code, body) = agent_post(port, &ca, exec, None, Some("carol-token")).await;
    assert_eq!(code, 403, "{body}");
    assert!(
        body.contains(
            "Forbidden (user=carol, verb=create, resource=nodes, subresource(s)=[proxy])"
        ),
        "{body}"
    );

    // Teardown: the pod goes, then the agent and containerd; nothing may be left.
    must(&cluster, &["delete", "pod", "p", "--wait=false"]).await;
    let cri = cd.cri();
    let deadline = Instant::now() + HANG;
    loop {
        let left = cri
            .runtime
            .clone()
            .list_pod_sandbox(api::ListPodSandboxRequest { filter: None })
            .await
            .expect("list sandboxes")
            .into_inner()
            .items
            .len();
        let pods = must(&cluster, &["get", "pods", "-o", "name"]).await;
        if left == 0 && pods.trim().is_empty() {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "{left} sandboxes and pods {pods:?} left"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    drop(agent);
    let left = cd.shutdown().await;
    assert!(left.is_empty(), "left behind: {left:#?}");
}
