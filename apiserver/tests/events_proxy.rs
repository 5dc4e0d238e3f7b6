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
