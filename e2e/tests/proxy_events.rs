//! With the real kubectl: one Event resource behind core/v1 and events.k8s.io/v1 (`kubectl get
//! events`, `kubectl events`, `kubectl describe pod` show an Event created through
//! events.k8s.io), and the proxy subresources (`kubectl get --raw …/services/web:80/proxy/`,
//! `kubectl proxy` to a pod, 403 without the `proxy` subresource permission). The backend is a
//! listener of the test on 127.0.0.1, standing for the pod IP.

use std::sync::Arc;
use std::time::{Duration, Instant};

use e2e::{Backend, Cluster};

/// An HTTP/1.1 backend answering every request with `echo <method> <target> <body>`.
async fn echo_backend() -> u16 {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let port = listener.local_addr().expect("addr").port();
    tokio::spawn(async move {
        while let Ok((mut conn, _)) = listener.accept().await {
            tokio::spawn(async move {
                let mut buf = Vec::new();
                let mut chunk = [0u8; 4096];
                let end = loop {
                    if let Some(p) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
                        break p + 4;
                    }
                    match conn.read(&mut chunk).await {
                        Ok(0) | Err(_) => return,
                        Ok(n) => buf.extend_from_slice(&chunk[..n]),
                    }
                };
                let head = String::from_utf8_lossy(&buf[..end]).to_string();
                let len: usize = head
                    .lines()
                    .find_map(|l| {
                        let (k, v) = l.split_once(':')?;
                        k.eq_ignore_ascii_case("content-length")
                            .then(|| v.trim().parse().ok())?
                    })
                    .unwrap_or(0);
                while buf.len() < end + len {
                    match conn.read(&mut chunk).await {
                        Ok(0) | Err(_) => break,
                        Ok(n) => buf.extend_from_slice(&chunk[..n]),
                    }
                }
                let first = head.lines().next().unwrap_or("").to_string();
                let mut words = first.split(' ');
                let reply = format!(
                    "echo {} {} {}",
                    words.next().unwrap_or(""),
                    words.next().unwrap_or(""),
                    String::from_utf8_lossy(&buf[end..])
                );
                let resp = format!(
                    "HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{reply}",
                    reply.len()
                );
                let _ = conn.write_all(resp.as_bytes()).await;
                let _ = conn.shutdown().await;
            });
        }
    });
    port
}

/// A pod `p` declaring `port` and a Service `web` (port 80) whose Endpoints name it, the pod's
/// IP 127.0.0.1 written through its status subresource (as its node agent would).
fn pod_and_service(c: &Cluster, port: u16) {
    c.apply(
        &format!(
            "apiVersion: v1
kind: Pod
metadata: {{name: p, labels: {{app: web}}}}
spec:
  containers: [{{name: c, image: busybox, ports: [{{containerPort: {port}}}]}}]
---
apiVersion: v1
kind: Service
metadata: {{name: web}}
spec:
  selector: {{app: web}}
  ports: [{{name: http, port: 80, targetPort: {port}}}]
---
apiVersion: v1
kind: Endpoints
metadata: {{name: web}}
subsets:
- addresses: [{{ip: 127.0.0.1, targetRef: {{kind: Pod, name: p, namespace: default}}}}]
  ports: [{{name: http, port: {port}}}]
"
        ),
        &[],
    );
    c.must(&[
        "patch",
        "pod",
        "p",
        "--subresource=status",
        "--type=merge",
        "-p",
        r#"{"status":{"phase":"Running","podIP":"127.0.0.1","podIPs":[{"ip":"127.0.0.1"}]}}"#,
    ]);
}

#[tokio::test(flavor = "multi_thread")]
async fn events_k8s_io_events_show_in_kubectl_get_events_and_describe() {
    let c = Arc::new(Cluster::start(Backend::Embedded).await);
    let port = echo_backend().await;
    let cc = c.clone();
    tokio::task::spawn_blocking(move || {
        let c = cc;
        pod_and_service(&c, port);
        let uid = c.must(&["get", "pod", "p", "-o", "jsonpath={.metadata.uid}"]);
        c.apply(
            &format!(
                "apiVersion: events.k8s.io/v1
kind: Event
metadata: {{name: p.new-api, namespace: default}}
eventTime: \"2026-01-01T10:00:00.000000Z\"
reportingController: example.com/ctl
reportingInstance: ctl-1
action: Probing
reason: ProbeSaidHello
type: Normal
note: hello from events.k8s.io
regarding: {{kind: Pod, name: p, namespace: default, uid: {uid}, apiVersion: v1}}
"
            ),
            &[],
        );
        let got = c.must(&["get", "events"]);
        assert!(
            got.contains("ProbeSaidHello")
                && got.contains("hello from events.k8s.io")
                && got.contains("pod/p"),
            "{got}"
        );
        let msg = c.must(&[
            "get",
            "events.v1.",
            "p.new-api",
            "-o",
            "jsonpath={.message}",
        ]);
        assert_eq!(msg, "hello from events.k8s.io");
        let got = c.must(&["events"]);
        assert!(got.contains("hello from events.k8s.io"), "{got}");
        let got = c.must(&["describe", "pod", "p"]);
        let events = got.split("Events:").nth(1).unwrap_or("");
        assert!(
            events.contains("ProbeSaidHello") && events.contains("hello from events.k8s.io"),
            "{got}"
        );
        // And back: the events.k8s.io view of it.
        let note = c.must(&[
            "get",
            "events.events.k8s.io",
            "p.new-api",
            "-o",
            "jsonpath={.note}",
        ]);
        assert_eq!(note, "hello from events.k8s.io");
    })
    .await
    .expect("kubectl steps");
}

#[tokio::test(flavor = "multi_thread")]
async fn kubectl_reaches_pods_and_services_through_proxy() {
    let c = Arc::new(Cluster::start(Backend::Embedded).await);
    let port = echo_backend().await;
    let cc = c.clone();
    tokio::task::spawn_blocking(move || {
        let c = cc;
        pod_and_service(&c, port);
        let got = c.must(&[
            "get",
            "--raw",
            "/api/v1/namespaces/default/services/web:80/proxy/",
        ]);
        assert_eq!(got.trim_end(), "echo GET /", "{got}");
        let got = c.must(&[
            "get",
            "--raw",
            "/api/v1/namespaces/default/services/web:http/proxy/a/b?x=1&y=2",
        ]);
        assert_eq!(got.trim_end(), "echo GET /a/b?x=1&y=2", "{got}");
        let bad = c.kubectl(&[
            "get",
            "--raw",
            "/api/v1/namespaces/default/services/web:81/proxy/",
        ]);
        assert!(
            !bad.ok
                && bad
                    .stderr
                    .contains("no service port 81 found for service \"web\""),
            "{bad:?}"
        );
    })
    .await
    .expect("kubectl steps");

    // `kubectl proxy`, then a plain HTTP client through it.
    let (mut child, lines) = c.kubectl_lines(&["proxy", "--port=0"]);
    let first = tokio::task::spawn_blocking(move || lines.recv_timeout(Duration::from_secs(60)))
        .await
        .expect("proxy output task")
        .expect("kubectl proxy prints its address");
    let addr = first
        .rsplit(' ')
        .next()
        .expect("Starting to serve on 127.0.0.1:<port>")
        .to_string();
    assert!(addr.starts_with("127.0.0.1:"), "{first}");
    let http = reqwest::Client::new();
    let url = format!("http://{addr}/api/v1/namespaces/default/pods/p:{port}/proxy/some/where?q=1");
    let deadline = Instant::now() + Duration::from_secs(30);
    let text = loop {
        match http.get(&url).send().await {
            Ok(r) => {
                assert!(r.status().is_success(), "{:?}", r.status());
                break r.text().await.expect("body");
            }
            Err(e) => {
                assert!(
                    Instant::now() < deadline,
                    "kubectl proxy never answered: {e}"
                );
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
        }
    };
    assert_eq!(text, "echo GET /some/where?q=1 ");
    let posted = http
        .post(format!(
            "http://{addr}/api/v1/namespaces/default/pods/p:{port}/proxy/submit"
        ))
        .body("payload")
        .send()
        .await
        .expect("POST through kubectl proxy")
        .text()
        .await
        .expect("body");
    assert_eq!(posted, "echo POST /submit payload");
    let _ = child.kill();
    let _ = child.wait();
}

#[tokio::test(flavor = "multi_thread")]
async fn the_proxy_subresource_needs_its_own_permission() {
    let c = Cluster::start_secure(Backend::Embedded, "erin-token,erin,2002\n").await;
    tokio::task::spawn_blocking(move || {
        // (No controller manager here: the ServiceAccount admission needs `default` to exist.)
        c.apply(
            "apiVersion: v1
kind: ServiceAccount
metadata: {name: default}
---
apiVersion: v1
kind: Pod
metadata: {name: p}
spec:
  containers: [{name: c, image: busybox}]
---
apiVersion: rbac.authorization.k8s.io/v1
kind: Role
metadata: {name: pod-reader}
rules:
- {apiGroups: [\"\"], resources: [pods], verbs: [get, list]}
---
apiVersion: rbac.authorization.k8s.io/v1
kind: RoleBinding
metadata: {name: erin-reads-pods}
roleRef: {apiGroup: rbac.authorization.k8s.io, kind: Role, name: pod-reader}
subjects: [{kind: User, name: erin}]
",
            &[],
        );
        let erin = c.user_kubeconfig("erin", pki::Credentials::Token("erin-token"));
        // Reading pods is not proxying to them.
        let deadline = Instant::now() + Duration::from_secs(30);
        while !c.kubectl_as(&erin, &["get", "pod", "p"]).ok {
            assert!(Instant::now() < deadline, "erin never got to read pods");
            std::thread::park_timeout(Duration::from_millis(100));
        }
        let denied = c.kubectl_as(&erin, &["get", "--raw", "/api/v1/namespaces/default/pods/p:80/proxy/"]);
        assert!(!denied.ok);
        assert!(
            denied.stderr.contains(r#"Error from server (Forbidden): pods "p:80" is forbidden: User "erin" cannot get resource "pods/proxy" in API group "" in the namespace "default""#),
            "{denied:?}"
        );
        let denied = c.kubectl_as(&erin, &["get", "--raw", "/api/v1/nodes/n1/proxy/healthz"]);
        assert!(
            denied.stderr.contains(r#"nodes "n1" is forbidden: User "erin" cannot get resource "nodes/proxy" in API group "" at the cluster scope"#),
            "{denied:?}"
        );
        // Granted: the request reaches the proxy, which (on a secure server, as upstream)
        // refuses a pod without a proxyable IP.
        c.apply(
            "apiVersion: rbac.authorization.k8s.io/v1
kind: Role
metadata: {name: pod-reader}
rules:
- {apiGroups: [\"\"], resources: [pods, pods/proxy], verbs: [get, list]}
",
            &[],
        );
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let run = c.kubectl_as(&erin, &["get", "--raw", "/api/v1/namespaces/default/pods/p:80/proxy/"]);
            if run.stderr.contains("address not allowed") {
                break;
            }
            assert!(Instant::now() < deadline, "the grant never took effect: {run:?}");
            std::thread::park_timeout(Duration::from_millis(100));
        }
    })
    .await
    .expect("kubectl steps");
}
