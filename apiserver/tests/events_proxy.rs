//! One Event resource behind core/v1 and events.k8s.io/v1, and the proxy subresources: the API
//! server in-process on the embedded store, driven over HTTP.

use std::time::Duration;

use apiserver::{Config, Running, StorageConfig};
use futures::StreamExt;
use reqwest::{Client, Method, StatusCode};
use serde_json::{json, Value};

struct Server {
    running: Option<Running>,
    base: String,
    http: Client,
    _dir: tempfile::TempDir,
}

impl Server {
    async fn start(event_ttl: Duration) -> Server {
        let dir = tempfile::tempdir().unwrap();
        let running = apiserver::start(Config {
            storage: StorageConfig::Embedded {
                data_dir: dir.path().join("data"),
            },
            bind_address: "127.0.0.1".parse().unwrap(),
            port: 0,
            service_cluster_ip_range: ("10.0.0.0".parse().unwrap(), 24),
            write_kubeconfig: None,
            event_ttl,
            security: None,
            audit: None,
            encryption_provider_config: None,
        })
        .await
        .expect("server starts");
        Server {
            base: format!("http://{}", running.addr),
            running: Some(running),
            http: Client::new(),
            _dir: dir,
        }
    }

    async fn req(&self, method: Method, path: &str, body: Option<Value>) -> (StatusCode, Value) {
        let mut r = self.http.request(method, format!("{}{path}", self.base));
        if let Some(b) = body {
            r = r
                .header("content-type", "application/json")
                .body(b.to_string());
        }
        let resp = r.send().await.expect("request");
        let code = resp.status();
        let text = resp.text().await.unwrap();
        (
            code,
            serde_json::from_str(&text).unwrap_or(Value::String(text)),
        )
    }

    /// Opens a watch and returns its first `n` events as JSON.
    async fn watch(&self, path: &str) -> reqwest::Response {
        let resp = self
            .http
            .get(format!("{}{path}", self.base))
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), StatusCode::OK);
        resp
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        if let Some(r) = self.running.take() {
            r.shutdown_token().cancel();
        }
    }
}

async fn next_events(resp: reqwest::Response, n: usize) -> Vec<Value> {
    let mut body = resp.bytes_stream();
    let mut buf = Vec::new();
    let mut out = Vec::new();
    while out.len() < n {
        let chunk = tokio::time::timeout(Duration::from_secs(30), body.next())
            .await
            .expect("watch event within 30 s")
            .expect("stream open")
            .unwrap();
        buf.extend_from_slice(&chunk);
        while let Some(pos) = buf.iter().position(|b| *b == b'\n') {
            let line: Vec<u8> = buf.drain(..=pos).collect();
            out.push(serde_json::from_slice(&line).unwrap());
        }
    }
    out
}

const V1: &str = "/apis/events.k8s.io/v1/namespaces/default/events";
const CORE: &str = "/api/v1/namespaces/default/events";

fn events_v1(name: &str, pod: &str) -> Value {
    json!({"apiVersion": "events.k8s.io/v1", "kind": "Event",
           "metadata": {"name": name, "namespace": "default"},
           "eventTime": "2026-01-01T10:00:00.000000Z",
           "reportingController": "example.com/ctl", "reportingInstance": "ctl-1",
           "action": "Pulling", "reason": "Started", "type": "Normal",
           "note": format!("note about {pod}"),
           "regarding": {"kind": "Pod", "name": pod, "namespace": "default", "apiVersion": "v1"},
           "series": {"count": 2, "lastObservedTime": "2026-01-01T10:00:05.000000Z"}})
}

fn core_event(name: &str, pod: &str) -> Value {
    json!({"apiVersion": "v1", "kind": "Event", "metadata": {"name": name},
           "involvedObject": {"kind": "Pod", "name": pod, "namespace": "default"},
           "reason": "Killing", "message": format!("message about {pod}"), "type": "Warning",
           "source": {"component": "kubelet", "host": "n1"}, "count": 3,
           "firstTimestamp": "2026-01-01T10:00:00Z", "lastTimestamp": "2026-01-01T10:01:00Z"})
}

const TABLE: &str = "application/json;as=Table;v=v1;g=meta.k8s.io,application/json";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_event_created_through_events_k8s_io_is_a_core_event() {
    let s = Server::start(Duration::from_secs(3600)).await;
    let (code, created) = s.req(Method::POST, V1, Some(events_v1("e1", "p1"))).await;
    assert_eq!(code, StatusCode::CREATED, "{created}");
    assert_eq!(created["apiVersion"], "events.k8s.io/v1");
    assert_eq!(created["note"], "note about p1");

    let (code, core) = s.req(Method::GET, &format!("{CORE}/e1"), None).await;
    assert_eq!(code, StatusCode::OK, "{core}");
    assert_eq!(core["apiVersion"], "v1");
    assert_eq!(core["message"], "note about p1");
    assert_eq!(core["involvedObject"]["name"], "p1");
    assert_eq!(core["reportingComponent"], "example.com/ctl");
    assert_eq!(core["reportingInstance"], "ctl-1");
    assert_eq!(core["action"], "Pulling");
    assert_eq!(core["series"]["count"], 2);
    assert!(core.get("note").is_none(), "{core}");
    // One object: the same uid and resourceVersion through both.
    assert_eq!(core["metadata"]["uid"], created["metadata"]["uid"]);
    assert_eq!(
        core["metadata"]["resourceVersion"],
        created["metadata"]["resourceVersion"]
    );

    // `kubectl describe pod p1` and `kubectl events --for pod/p1` select by involvedObject.
    let (_, list) = s
        .req(
            Method::GET,
            &format!("{CORE}?fieldSelector=involvedObject.name%3Dp1,involvedObject.kind%3DPod"),
            None,
        )
        .await;
    let names: Vec<_> = list["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|i| i["metadata"]["name"].clone())
        .collect();
    assert_eq!(names, vec![json!("e1")], "{list}");
    assert_eq!(list["items"][0]["message"], "note about p1");

    // `kubectl get events` (a Table of core Events) shows it.
    let resp = s
        .http
        .get(format!("{}{CORE}", s.base))
        .header("accept", TABLE)
        .send()
        .await
        .unwrap();
    let table: Value = resp.json().await.unwrap();
    assert_eq!(table["kind"], "Table", "{table}");
    let row = table["rows"]
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["object"]["metadata"]["name"] == "e1");
    let cells = row.expect("row for e1")["cells"].to_string();
    assert!(
        cells.contains("note about p1") && cells.contains("pod/p1"),
        "{cells}"
    );

    // One stored object: deleting through core removes it from events.k8s.io.
    let (code, _) = s.req(Method::DELETE, &format!("{CORE}/e1"), None).await;
    assert_eq!(code, StatusCode::OK);
    let (code, gone) = s.req(Method::GET, &format!("{V1}/e1"), None).await;
    assert_eq!(code, StatusCode::NOT_FOUND);
    assert_eq!(gone["message"], "events.events.k8s.io \"e1\" not found");
    assert_eq!(gone["details"]["group"], "events.k8s.io");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_core_event_is_served_through_events_k8s_io() {
    let s = Server::start(Duration::from_secs(3600)).await;
    let (code, created) = s
        .req(Method::POST, CORE, Some(core_event("c1", "p2")))
        .await;
    assert_eq!(code, StatusCode::CREATED, "{created}");
    s.req(Method::POST, CORE, Some(core_event("c2", "other")))
        .await;

    let (code, ev) = s.req(Method::GET, &format!("{V1}/c1"), None).await;
    assert_eq!(code, StatusCode::OK, "{ev}");
    assert_eq!(ev["apiVersion"], "events.k8s.io/v1");
    assert_eq!(ev["kind"], "Event");
    assert_eq!(ev["note"], "message about p2");
    assert_eq!(ev["regarding"]["name"], "p2");
    assert_eq!(ev["deprecatedSource"]["component"], "kubelet");
    assert_eq!(ev["deprecatedCount"], 3);
    assert_eq!(ev["deprecatedFirstTimestamp"], "2026-01-01T10:00:00Z");
    assert_eq!(ev["deprecatedLastTimestamp"], "2026-01-01T10:01:00Z");
    assert!(
        ev.get("message").is_none() && ev.get("involvedObject").is_none(),
        "{ev}"
    );

    // events.k8s.io field selectors, from the watch cache and from storage (paged).
    for q in ["", "&limit=1"] {
        let (code, list) = s
            .req(
                Method::GET,
                &format!("{V1}?fieldSelector=regarding.name%3Dp2{q}"),
                None,
            )
            .await;
        assert_eq!(code, StatusCode::OK, "{list}");
        assert_eq!(list["kind"], "EventList");
        assert_eq!(list["apiVersion"], "events.k8s.io/v1");
        let items = list["items"].as_array().unwrap();
        assert_eq!(items.len(), 1, "{list}");
        assert_eq!(items[0]["note"], "message about p2");
    }
    // A core field name is not an events.k8s.io one (upstream's wording).
    let (code, bad) = s
        .req(
            Method::GET,
            &format!("{V1}?fieldSelector=involvedObject.name%3Dp2"),
            None,
        )
        .await;
    assert_eq!(code, StatusCode::BAD_REQUEST, "{bad}");

    // An events.k8s.io patch changes the one object (series is mutable there).
    let (code, patched) = s
        .http
        .patch(format!("{}{V1}/c1", s.base))
        .header("content-type", "application/merge-patch+json")
        .body(r#"{"series":{"count":4,"lastObservedTime":"2026-01-01T10:02:00.000000Z"}}"#)
        .send()
        .await
        .map(|r| (r.status(), r))
        .unwrap();
    let patched: Value = patched.json().await.unwrap();
    assert_eq!(code, StatusCode::OK, "{patched}");
    let (_, core) = s.req(Method::GET, &format!("{CORE}/c1"), None).await;
    assert_eq!(core["series"]["count"], 4);
    // ... but not the note (immutable through events.k8s.io).
    let (code, refused) = s
        .http
        .patch(format!("{}{V1}/c1", s.base))
        .header("content-type", "application/merge-patch+json")
        .body(r#"{"note":"changed"}"#)
        .send()
        .await
        .map(|r| (r.status(), r))
        .unwrap();
    let refused: Value = refused.json().await.unwrap();
    assert_eq!(code, StatusCode::UNPROCESSABLE_ENTITY, "{refused}");
    assert!(
        refused["message"]
            .as_str()
            .unwrap()
            .contains("field is immutable"),
        "{refused}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn events_k8s_io_creates_are_validated_as_upstream() {
    let s = Server::start(Duration::from_secs(3600)).await;
    let mut ev = events_v1("bad", "p");
    for f in [
        "eventTime",
        "reportingController",
        "reportingInstance",
        "action",
    ] {
        ev.as_object_mut().unwrap().remove(f);
    }
    let (code, err) = s.req(Method::POST, V1, Some(ev)).await;
    assert_eq!(code, StatusCode::UNPROCESSABLE_ENTITY, "{err}");
    assert_eq!(err["reason"], "Invalid");
    let causes: Vec<String> = err["details"]["causes"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["field"].as_str().unwrap().to_string())
        .collect();
    for f in [
        "eventTime",
        "reportingController",
        "reportingInstance",
        "action",
    ] {
        assert!(causes.contains(&f.to_string()), "{f} missing: {err}");
    }
    // The deprecated fields must be unset on an events.k8s.io create.
    let mut ev = events_v1("bad2", "p");
    ev["deprecatedCount"] = json!(2);
    let (code, err) = s.req(Method::POST, V1, Some(ev)).await;
    assert_eq!(code, StatusCode::UNPROCESSABLE_ENTITY, "{err}");
    assert!(
        err["message"]
            .as_str()
            .unwrap()
            .contains("count: Invalid value: \"\": needs to be unset"),
        "{err}"
    );
    // The same object through core/v1 has none of these rules.
    let (code, created) = s
        .req(Method::POST, CORE, Some(core_event("fine", "p")))
        .await;
    assert_eq!(code, StatusCode::CREATED, "{created}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_watch_through_one_api_sees_writes_through_the_other() {
    let s = Server::start(Duration::from_secs(3600)).await;
    let (_, list) = s.req(Method::GET, V1, None).await;
    let rv = list["metadata"]["resourceVersion"]
        .as_str()
        .unwrap()
        .to_string();
    let v1_watch = s
        .watch(&format!(
            "{V1}?watch=true&resourceVersion={rv}&fieldSelector=regarding.name%3Dw1"
        ))
        .await;
    let core_watch = s
        .watch(&format!(
            "{CORE}?watch=true&resourceVersion={rv}&fieldSelector=involvedObject.name%3Dw2"
        ))
        .await;
    let (code, _) = s
        .req(Method::POST, CORE, Some(core_event("through-core", "w1")))
        .await;
    assert_eq!(code, StatusCode::CREATED);
    let (code, _) = s
        .req(Method::POST, V1, Some(events_v1("through-v1", "w2")))
        .await;
    assert_eq!(code, StatusCode::CREATED);

    let seen = next_events(v1_watch, 1).await;
    assert_eq!(seen[0]["type"], "ADDED");
    assert_eq!(seen[0]["object"]["apiVersion"], "events.k8s.io/v1");
    assert_eq!(seen[0]["object"]["metadata"]["name"], "through-core");
    assert_eq!(seen[0]["object"]["note"], "message about w1");

    let seen = next_events(core_watch, 1).await;
    assert_eq!(seen[0]["type"], "ADDED");
    assert_eq!(seen[0]["object"]["apiVersion"], "v1");
    assert_eq!(seen[0]["object"]["metadata"]["name"], "through-v1");
    assert_eq!(seen[0]["object"]["message"], "note about w2");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn events_k8s_io_events_expire_like_core_ones() {
    let s = Server::start(Duration::from_secs(1)).await;
    let (code, created) = s.req(Method::POST, V1, Some(events_v1("old", "p"))).await;
    assert_eq!(code, StatusCode::CREATED, "{created}");
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    loop {
        let (a, _) = s.req(Method::GET, &format!("{V1}/old"), None).await;
        let (b, _) = s.req(Method::GET, &format!("{CORE}/old"), None).await;
        if a == StatusCode::NOT_FOUND && b == StatusCode::NOT_FOUND {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "the event never expired"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

// ---------------------------------------------------------------------------------------------
// Proxy subresources. The backend is a listener of the test on 127.0.0.1 (the "pod IP"), which
// answers every request with what it received as JSON.
// ---------------------------------------------------------------------------------------------

/// A tiny HTTP/1.1 backend: one request per connection, echoed back as
/// `{"method","target","body","host"}`. Returns its port.
async fn echo_backend() -> u16 {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    tokio::spawn(async move {
        loop {
            let Ok((mut conn, _)) = listener.accept().await else {
                return;
            };
            tokio::spawn(async move {
                let mut buf = Vec::new();
                let mut chunk = [0u8; 4096];
                let head_end = loop {
                    if let Some(p) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
                        break p + 4;
                    }
                    match conn.read(&mut chunk).await {
                        Ok(0) | Err(_) => return,
                        Ok(n) => buf.extend_from_slice(&chunk[..n]),
                    }
                };
                let head = String::from_utf8_lossy(&buf[..head_end]).to_string();
                let mut lines = head.split("\r\n");
                let first: Vec<String> = lines
                    .next()
                    .unwrap_or("")
                    .split(' ')
                    .map(str::to_string)
                    .collect();
                let mut len = 0usize;
                let mut host = String::new();
                let mut authorization = false;
                for l in lines {
                    if let Some((k, v)) = l.split_once(':') {
                        match k.trim().to_ascii_lowercase().as_str() {
                            "content-length" => len = v.trim().parse().unwrap_or(0),
                            "host" => host = v.trim().to_string(),
                            "authorization" => authorization = true,
                            _ => {}
                        }
                    }
                }
                while buf.len() < head_end + len {
                    match conn.read(&mut chunk).await {
                        Ok(0) | Err(_) => break,
                        Ok(n) => buf.extend_from_slice(&chunk[..n]),
                    }
                }
                let body = String::from_utf8_lossy(&buf[head_end..]).to_string();
                let reply = json!({"method": first.first(), "target": first.get(1),
                                   "body": body, "host": host,
                                   "authorization": authorization})
                .to_string();
                let resp = format!(
                    "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nX-Backend: echo\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{reply}",
                    reply.len()
                );
                let _ = conn.write_all(resp.as_bytes()).await;
                let _ = conn.shutdown().await;
            });
        }
    });
    port
}

/// A loopback port nothing listens on.
async fn closed_port() -> u16 {
    let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    l.local_addr().unwrap().port()
}

/// A pod `name` declaring `port`, whose status (written as the administrator, as a node
/// agent would) gives it the pod IP 127.0.0.1.
async fn pod_at_loopback(s: &Server, name: &str, port: u16) {
    let pod = json!({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": name},
        "spec": {"containers": [{"name": "c", "image": "busybox",
                                 "ports": [{"containerPort": port}]}]}});
    let (code, created) = s
        .req(Method::POST, "/api/v1/namespaces/default/pods", Some(pod))
        .await;
    assert_eq!(code, StatusCode::CREATED, "{created}");
    let mut with_ip = created.clone();
    with_ip["status"] = json!({"phase": "Running", "podIP": "127.0.0.1",
                               "podIPs": [{"ip": "127.0.0.1"}]});
    let (code, updated) = s
        .req(
            Method::PUT,
            &format!("/api/v1/namespaces/default/pods/{name}/status"),
            Some(with_ip),
        )
        .await;
    assert_eq!(code, StatusCode::OK, "{updated}");
}

async fn send(
    s: &Server,
    method: Method,
    path: &str,
    body: Option<&str>,
) -> (StatusCode, reqwest::header::HeaderMap, Value) {
    let client = Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap();
    let mut r = client.request(method, format!("{}{path}", s.base));
    if let Some(b) = body {
        r = r.header("content-type", "text/plain").body(b.to_string());
    }
    let resp = r
        .header("authorization", "Bearer not-for-the-backend")
        .send()
        .await
        .unwrap();
    let code = resp.status();
    let headers = resp.headers().clone();
    let text = resp.text().await.unwrap();
    (
        code,
        headers,
        serde_json::from_str(&text).unwrap_or(Value::String(text)),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pods_proxy_forwards_method_path_query_and_body() {
    let s = Server::start(Duration::from_secs(3600)).await;
    let port = echo_backend().await;
    pod_at_loopback(&s, "p", port).await;

    let base = format!("/api/v1/namespaces/default/pods/p:{port}/proxy");
    let (code, headers, got) = send(
        &s,
        Method::GET,
        &format!("{base}/some/path%20x?a=1&b=two"),
        None,
    )
    .await;
    assert_eq!(code, StatusCode::OK, "{got}");
    assert_eq!(got["method"], "GET");
    assert_eq!(got["target"], "/some/path%20x?a=1&b=two");
    assert_eq!(got["host"], format!("127.0.0.1:{port}"));
    assert_eq!(
        got["authorization"], false,
        "the client's credentials stay here"
    );
    assert_eq!(headers["x-backend"], "echo");

    for method in [Method::POST, Method::PUT, Method::PATCH, Method::DELETE] {
        let (code, _, got) = send(
            &s,
            method.clone(),
            &format!("{base}/submit?x=y"),
            Some("payload"),
        )
        .await;
        assert_eq!(code, StatusCode::OK, "{method}: {got}");
        assert_eq!(got["method"], method.as_str());
        assert_eq!(got["target"], "/submit?x=y");
        assert_eq!(got["body"], "payload");
    }
    let (code, _, _) = send(&s, Method::HEAD, &format!("{base}/"), None).await;
    assert_eq!(code, StatusCode::OK);

    // No port: the first declared container port.
    let (code, _, got) = send(
        &s,
        Method::GET,
        "/api/v1/namespaces/default/pods/p/proxy/",
        None,
    )
    .await;
    assert_eq!(code, StatusCode::OK, "{got}");
    assert_eq!(got["target"], "/");
    // No path at all: upstream's redirect to the trailing slash.
    let (code, headers, _) = send(&s, Method::GET, &format!("{base}?q=1"), None).await;
    assert_eq!(code, StatusCode::MOVED_PERMANENTLY);
    assert_eq!(headers["location"], format!("{base}/?q=1"));

    // Nothing listening on that port: 503 as upstream's proxy error.
    let closed = closed_port().await;
    let (code, _, err) = send(
        &s,
        Method::GET,
        &format!("/api/v1/namespaces/default/pods/p:{closed}/proxy/"),
        None,
    )
    .await;
    assert_eq!(code, StatusCode::SERVICE_UNAVAILABLE, "{err}");
    assert_eq!(err["kind"], "Status");
    assert_eq!(err["reason"], "ServiceUnavailable");
    assert!(
        err["message"]
            .as_str()
            .unwrap()
            .starts_with("error trying to reach service: dial tcp 127.0.0.1:"),
        "{err}"
    );

    // A pod without an IP, an unknown pod, a malformed id.
    let (code, _) = s
        .req(
            Method::POST,
            "/api/v1/namespaces/default/pods",
            Some(json!({"metadata": {"name": "noip"},
            "spec": {"containers": [{"name": "c", "image": "busybox"}]}})),
        )
        .await;
    assert_eq!(code, StatusCode::CREATED);
    let (code, _, err) = send(
        &s,
        Method::GET,
        "/api/v1/namespaces/default/pods/noip/proxy/",
        None,
    )
    .await;
    assert_eq!(
        (code, err["message"].clone()),
        (StatusCode::BAD_REQUEST, json!("address not allowed"))
    );
    let (code, _, err) = send(
        &s,
        Method::GET,
        "/api/v1/namespaces/default/pods/nope:80/proxy/",
        None,
    )
    .await;
    assert_eq!(
        (code, err["message"].clone()),
        (StatusCode::NOT_FOUND, json!("pods \"nope\" not found"))
    );
    let (code, _, err) = send(
        &s,
        Method::GET,
        "/api/v1/namespaces/default/pods/ftp:p:80/proxy/",
        None,
    )
    .await;
    assert_eq!(
        (code, err["message"].clone()),
        (
            StatusCode::BAD_REQUEST,
            json!("invalid pod request \"ftp:p:80\"")
        )
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn services_proxy_reaches_a_ready_endpoint() {
    let s = Server::start(Duration::from_secs(3600)).await;
    let port = echo_backend().await;
    pod_at_loopback(&s, "web-1", port).await;
    let svc = json!({"apiVersion": "v1", "kind": "Service", "metadata": {"name": "web"},
        "spec": {"selector": {"app": "web"},
                 "ports": [{"name": "http", "port": 80, "targetPort": port}]}});
    let (code, created) = s
        .req(
            Method::POST,
            "/api/v1/namespaces/default/services",
            Some(svc),
        )
        .await;
    assert_eq!(code, StatusCode::CREATED, "{created}");

    // No Endpoints yet (and no EndpointSlices): nothing to reach.
    let (code, _, err) = send(
        &s,
        Method::GET,
        "/api/v1/namespaces/default/services/web:80/proxy/",
        None,
    )
    .await;
    assert_eq!(code, StatusCode::SERVICE_UNAVAILABLE, "{err}");
    assert_eq!(err["message"], "no endpoints available for service \"web\"");

    // What the endpoints controller would write.
    let eps = json!({"apiVersion": "v1", "kind": "Endpoints", "metadata": {"name": "web"},
        "subsets": [{"addresses": [{"ip": "127.0.0.1",
                                    "targetRef": {"kind": "Pod", "name": "web-1", "namespace": "default"}}],
                     "ports": [{"name": "http", "port": port}]}]});
    let (code, created) = s
        .req(
            Method::POST,
            "/api/v1/namespaces/default/endpoints",
            Some(eps),
        )
        .await;
    assert_eq!(code, StatusCode::CREATED, "{created}");

    for id in ["web:80", "web:http", "http:web:80"] {
        let (code, _, got) = send(
            &s,
            Method::GET,
            &format!("/api/v1/namespaces/default/services/{id}/proxy/hello/world?x=1"),
            None,
        )
        .await;
        assert_eq!(code, StatusCode::OK, "{id}: {got}");
        assert_eq!(got["target"], "/hello/world?x=1");
    }
    let (code, _, got) = send(
        &s,
        Method::POST,
        "/api/v1/namespaces/default/services/web:80/proxy/form",
        Some("a=b"),
    )
    .await;
    assert_eq!(code, StatusCode::OK, "{got}");
    assert_eq!(
        (got["method"].clone(), got["body"].clone()),
        (json!("POST"), json!("a=b"))
    );

    let (code, _, err) = send(
        &s,
        Method::GET,
        "/api/v1/namespaces/default/services/web:81/proxy/",
        None,
    )
    .await;
    assert_eq!(code, StatusCode::SERVICE_UNAVAILABLE, "{err}");
    assert_eq!(
        err["message"],
        "no service port 81 found for service \"web\""
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nodes_proxy_reaches_the_node_agent_port() {
    let s = Server::start(Duration::from_secs(3600)).await;
    let port = echo_backend().await;
    let other = echo_backend().await;
    let (code, node) = s
        .req(
            Method::POST,
            "/api/v1/nodes",
            Some(json!({"apiVersion": "v1", "kind": "Node", "metadata": {"name": "n1"}})),
        )
        .await;
    assert_eq!(code, StatusCode::CREATED, "{node}");
    let mut with_status = node.clone();
    with_status["status"] = json!({"addresses": [{"type": "InternalIP", "address": "127.0.0.1"}],
                                   "daemonEndpoints": {"kubeletEndpoint": {"Port": port}}});
    let (code, updated) = s
        .req(Method::PUT, "/api/v1/nodes/n1/status", Some(with_status))
        .await;
    assert_eq!(code, StatusCode::OK, "{updated}");

    let (code, _, got) = send(
        &s,
        Method::GET,
        "/api/v1/nodes/n1/proxy/healthz?verbose=1",
        None,
    )
    .await;
    assert_eq!(code, StatusCode::OK, "{got}");
    assert_eq!(got["target"], "/healthz?verbose=1");
    let (code, _, got) = send(
        &s,
        Method::POST,
        &format!("/api/v1/nodes/n1:{port}/proxy/run"),
        Some("x"),
    )
    .await;
    assert_eq!(code, StatusCode::OK, "{got}");
    assert_eq!(
        (got["method"].clone(), got["body"].clone()),
        (json!("POST"), json!("x"))
    );
    // Another port of the node.
    let (code, _, got) = send(
        &s,
        Method::GET,
        &format!("/api/v1/nodes/n1:{other}/proxy/metrics"),
        None,
    )
    .await;
    assert_eq!(code, StatusCode::OK, "{got}");
    assert_eq!(got["host"], format!("127.0.0.1:{other}"));
    let (code, _, err) = send(&s, Method::GET, "/api/v1/nodes/n2/proxy/", None).await;
    assert_eq!(
        (code, err["message"].clone()),
        (StatusCode::NOT_FOUND, json!("nodes \"n2\" not found"))
    );
}
