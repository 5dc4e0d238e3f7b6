//! The API server in-process, on both storage backends, driven over HTTP as clients drive it.

use std::time::Duration;

use apiserver::{Config, Running, StorageConfig};
use futures::StreamExt;
use reqwest::{Client, Method, StatusCode};
use serde_json::{json, Value};
use storage::testing::EtcdServer;

/// A server plus what keeps its storage alive.
struct Server {
    running: Option<Running>,
    base: String,
    http: Client,
    _etcd: Option<EtcdServer>,
    _dir: tempfile::TempDir,
}

impl Server {
    async fn embedded() -> Server {
        let dir = tempfile::tempdir().unwrap();
        let storage = StorageConfig::Embedded {
            data_dir: dir.path().join("data"),
        };
        Self::start(storage, None, dir).await
    }

    async fn etcd() -> Server {
        let etcd = tokio::task::spawn_blocking(EtcdServer::start)
            .await
            .unwrap();
        let storage = StorageConfig::Etcd {
            endpoints: vec![etcd.endpoint()],
        };
        Self::start(storage, Some(etcd), tempfile::tempdir().unwrap()).await
    }

    async fn start(
        storage: StorageConfig,
        etcd: Option<EtcdServer>,
        dir: tempfile::TempDir,
    ) -> Server {
        Self::start_with_ttl(storage, etcd, dir, Duration::from_secs(3600)).await
    }

    async fn start_with_ttl(
        storage: StorageConfig,
        etcd: Option<EtcdServer>,
        dir: tempfile::TempDir,
        event_ttl: Duration,
    ) -> Server {
        let running = apiserver::start(Config {
            storage,
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
            _etcd: etcd,
            _dir: dir,
        }
    }

    async fn req(&self, method: Method, path: &str, body: Option<Value>) -> (StatusCode, Value) {
        self.req_ct(
            method,
            path,
            body.map(|b| (b.to_string(), "application/json")),
        )
        .await
    }

    async fn req_ct(
        &self,
        method: Method,
        path: &str,
        body: Option<(String, &str)>,
    ) -> (StatusCode, Value) {
        let mut r = self.http.request(method, format!("{}{path}", self.base));
        if let Some((b, ct)) = body {
            r = r.header("content-type", ct).body(b);
        }
        let resp = r.send().await.expect("request");
        let code = resp.status();
        let text = resp.text().await.unwrap();
        let v = serde_json::from_str(&text).unwrap_or(Value::String(text));
        (code, v)
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        if let Some(r) = self.running.take() {
            r.shutdown_token().cancel();
        }
    }
}

macro_rules! both_backends {
    ($($name:ident),* $(,)?) => {
        mod embedded {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $name() {
                    super::$name(super::Server::embedded().await).await
                }
            )*
        }
        mod etcd {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $name() {
                    super::$name(super::Server::etcd().await).await
                }
            )*
        }
    };
}

both_backends!(
    crud_round_trip,
    optimistic_concurrency,
    status_is_split_from_spec,
    namespaces_gate_writes,
    list_selectors_and_paging,
    watch_sees_changes_in_order,
    finalizers_hold_deletion,
    errors_are_status_objects,
    services_get_unique_cluster_ips,
    service_updates_keep_and_allocate_addresses,
    binding_assigns_once,
    dry_run_and_field_validation,
    eviction_honours_disruption_budgets,
    metrics_and_table_watches,
);

fn cm(name: &str) -> Value {
    json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": name, "labels": {"app": "web"}}, "data": {"k": "v"}})
}

async fn crud_round_trip(s: Server) {
    let (code, created) = s
        .req(
            Method::POST,
            "/api/v1/namespaces/default/configmaps",
            Some(cm("a")),
        )
        .await;
    assert_eq!(code, StatusCode::CREATED, "{created}");
    let meta = &created["metadata"];
    assert!(meta["uid"].as_str().is_some_and(|u| u.len() == 36));
    assert!(meta["creationTimestamp"].as_str().is_some());
    assert_eq!(meta["namespace"], "default");
    let rv = meta["resourceVersion"].as_str().unwrap().to_string();

    let (code, got) = s
        .req(Method::GET, "/api/v1/namespaces/default/configmaps/a", None)
        .await;
    assert_eq!(code, StatusCode::OK);
    assert_eq!(got, created);

    let mut updated = got.clone();
    updated["data"] = json!({"k": "v2"});
    let (code, put) = s
        .req(
            Method::PUT,
            "/api/v1/namespaces/default/configmaps/a",
            Some(updated),
        )
        .await;
    assert_eq!(code, StatusCode::OK, "{put}");
    assert_ne!(put["metadata"]["resourceVersion"].as_str().unwrap(), rv);
    assert_eq!(put["metadata"]["uid"], meta["uid"], "uid is server-owned");

    let (code, generated) = s
        .req(
            Method::POST,
            "/api/v1/namespaces/default/configmaps",
            Some(json!({"metadata": {"generateName": "gen-"}, "data": {}})),
        )
        .await;
    assert_eq!(code, StatusCode::CREATED);
    let gname = generated["metadata"]["name"].as_str().unwrap();
    assert!(gname.starts_with("gen-") && gname.len() == 9, "{gname}");

    let (code, deleted) = s
        .req(
            Method::DELETE,
            "/api/v1/namespaces/default/configmaps/a",
            None,
        )
        .await;
    assert_eq!(code, StatusCode::OK);
    assert_eq!(deleted["metadata"]["name"], "a");
    let (code, gone) = s
        .req(Method::GET, "/api/v1/namespaces/default/configmaps/a", None)
        .await;
    assert_eq!(code, StatusCode::NOT_FOUND);
    assert_eq!(gone["message"], "configmaps \"a\" not found");
    assert_eq!(gone["reason"], "NotFound");
}

async fn optimistic_concurrency(s: Server) {
    let (_, created) = s
        .req(
            Method::POST,
            "/api/v1/namespaces/default/configmaps",
            Some(cm("c")),
        )
        .await;
    let mut first = created.clone();
    first["data"] = json!({"k": "first"});
    let (code, _) = s
        .req(
            Method::PUT,
            "/api/v1/namespaces/default/configmaps/c",
            Some(first),
        )
        .await;
    assert_eq!(code, StatusCode::OK);
    // Same stale resourceVersion again: 409 Conflict worded like upstream.
    let mut stale = created.clone();
    stale["data"] = json!({"k": "stale"});
    let (code, status) = s
        .req(
            Method::PUT,
            "/api/v1/namespaces/default/configmaps/c",
            Some(stale),
        )
        .await;
    assert_eq!(code, StatusCode::CONFLICT);
    assert_eq!(status["reason"], "Conflict");
    assert_eq!(
        status["message"],
        "Operation cannot be fulfilled on configmaps \"c\": the object has been modified; please apply your changes to the latest version and try again"
    );
    // Without a resourceVersion the update is unconditional.
    let mut free = created;
    free["metadata"]
        .as_object_mut()
        .unwrap()
        .remove("resourceVersion");
    free["data"] = json!({"k": "last"});
    let (code, out) = s
        .req(
            Method::PUT,
            "/api/v1/namespaces/default/configmaps/c",
            Some(free),
        )
        .await;
    assert_eq!(code, StatusCode::OK);
    assert_eq!(out["data"]["k"], "last");
}

fn deployment(name: &str, replicas: i64) -> Value {
    json!({
        "apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": name},
        "spec": {"replicas": replicas, "selector": {"matchLabels": {"app": name}},
                 "template": {"metadata": {"labels": {"app": name}},
                              "spec": {"containers": [{"name": "c", "image": "busybox:1.36"}]}}}
    })
}

async fn status_is_split_from_spec(s: Server) {
    let path = "/apis/apps/v1/namespaces/default/deployments";
    let mut d = deployment("web", 2);
    d["status"] = json!({"replicas": 99});
    let (code, created) = s.req(Method::POST, path, Some(d)).await;
    assert_eq!(code, StatusCode::CREATED, "{created}");
    assert_eq!(created["metadata"]["generation"], 1);
    assert!(
        created["status"].get("replicas").is_none(),
        "status is not set on create"
    );
    assert_eq!(
        created["spec"]["strategy"]["type"], "RollingUpdate",
        "defaults applied"
    );
    assert_eq!(
        created["spec"]["template"]["spec"]["containers"][0]["imagePullPolicy"],
        "IfNotPresent"
    );

    let mut status = created.clone();
    status["status"] = json!({"replicas": 2, "observedGeneration": 1});
    status["spec"]["replicas"] = json!(7);
    let (code, after) = s
        .req(Method::PUT, &format!("{path}/web/status"), Some(status))
        .await;
    assert_eq!(code, StatusCode::OK, "{after}");
    assert_eq!(after["status"]["replicas"], 2);
    assert_eq!(after["spec"]["replicas"], 2, "/status ignores spec");
    assert_eq!(after["metadata"]["generation"], 1);

    let mut main = after.clone();
    main["spec"]["replicas"] = json!(3);
    main["status"] = json!({"replicas": 0});
    let (code, after) = s.req(Method::PUT, &format!("{path}/web"), Some(main)).await;
    assert_eq!(code, StatusCode::OK);
    assert_eq!(after["spec"]["replicas"], 3);
    assert_eq!(
        after["status"]["replicas"], 2,
        "the main resource ignores status"
    );
    assert_eq!(
        after["metadata"]["generation"], 2,
        "a spec change is a new generation"
    );

    let (code, scale) = s.req(Method::GET, &format!("{path}/web/scale"), None).await;
    assert_eq!(code, StatusCode::OK);
    assert_eq!(scale["kind"], "Scale");
    assert_eq!(scale["spec"]["replicas"], 3);
    assert_eq!(scale["status"]["selector"], "app=web");
    let (code, _) = s
        .req_ct(
            Method::PATCH,
            &format!("{path}/web/scale"),
            Some((
                json!({"spec": {"replicas": 5}}).to_string(),
                "application/merge-patch+json",
            )),
        )
        .await;
    assert_eq!(code, StatusCode::OK);
    let (_, got) = s.req(Method::GET, &format!("{path}/web"), None).await;
    assert_eq!(got["spec"]["replicas"], 5);

    // The selector is immutable.
    let mut changed = got.clone();
    changed["spec"]["selector"] = json!({"matchLabels": {"app": "other"}});
    changed["spec"]["template"]["metadata"]["labels"] = json!({"app": "other"});
    let (code, invalid) = s
        .req(Method::PUT, &format!("{path}/web"), Some(changed))
        .await;
    assert_eq!(code, StatusCode::UNPROCESSABLE_ENTITY);
    assert_eq!(invalid["reason"], "Invalid");
    assert_eq!(invalid["details"]["causes"][0]["field"], "spec.selector");
}

async fn namespaces_gate_writes(s: Server) {
    let (code, status) = s
        .req(
            Method::POST,
            "/api/v1/namespaces/nope/configmaps",
            Some(cm("x")),
        )
        .await;
    assert_eq!(code, StatusCode::NOT_FOUND);
    assert_eq!(status["message"], "namespaces \"nope\" not found");
    let (code, _) = s
        .req(
            Method::POST,
            "/api/v1/namespaces",
            Some(json!({"metadata": {"name": "team"}})),
        )
        .await;
    assert_eq!(code, StatusCode::CREATED);
    let (code, _) = s
        .req(
            Method::POST,
            "/api/v1/namespaces/team/configmaps",
            Some(cm("x")),
        )
        .await;
    assert_eq!(code, StatusCode::CREATED);
    let (code, ns) = s.req(Method::DELETE, "/api/v1/namespaces/team", None).await;
    assert!(code.is_success());
    assert_eq!(ns["status"]["phase"], "Terminating");
    let (code, status) = s
        .req(
            Method::POST,
            "/api/v1/namespaces/team/configmaps",
            Some(cm("y")),
        )
        .await;
    assert_eq!(code, StatusCode::FORBIDDEN, "{status}");
    assert!(status["message"]
        .as_str()
        .unwrap()
        .contains("because it is being terminated"));
    // Finalizing removes it.
    let mut fin = ns.clone();
    fin["spec"]["finalizers"] = json!([]);
    let (code, _) = s
        .req(Method::PUT, "/api/v1/namespaces/team/finalize", Some(fin))
        .await;
    assert_eq!(code, StatusCode::OK);
    let (code, _) = s.req(Method::GET, "/api/v1/namespaces/team", None).await;
    assert_eq!(code, StatusCode::NOT_FOUND);
    // Built-in namespaces exist from the start.
    for ns in ["default", "kube-system", "kube-public", "kube-node-lease"] {
        let (code, _) = s
            .req(Method::GET, &format!("/api/v1/namespaces/{ns}"), None)
            .await;
        assert_eq!(code, StatusCode::OK, "{ns}");
    }
}

async fn list_selectors_and_paging(s: Server) {
    s.req(
        Method::POST,
        "/api/v1/namespaces",
        Some(json!({"metadata": {"name": "other"}})),
    )
    .await;
    for i in 0..25 {
        let mut c = cm(&format!("c{i:02}"));
        c["metadata"]["labels"] = json!({"parity": if i % 2 == 0 { "even" } else { "odd" }});
        let (code, _) = s
            .req(
                Method::POST,
                "/api/v1/namespaces/default/configmaps",
                Some(c),
            )
            .await;
        assert_eq!(code, StatusCode::CREATED);
    }
    s.req(
        Method::POST,
        "/api/v1/namespaces/other/configmaps",
        Some(cm("elsewhere")),
    )
    .await;
    let (_, all) = s.req(Method::GET, "/api/v1/configmaps", None).await;
    assert_eq!(all["kind"], "ConfigMapList");
    assert_eq!(
        all["items"].as_array().unwrap().len(),
        26,
        "cluster-wide list"
    );

    let mut names = Vec::new();
    let mut path =
        "/api/v1/namespaces/default/configmaps?labelSelector=parity%3Deven&limit=4".to_string();
    let mut pages = 0;
    loop {
        let (code, page) = s.req(Method::GET, &path, None).await;
        assert_eq!(code, StatusCode::OK, "{page}");
        pages += 1;
        let items = page["items"].as_array().unwrap();
        assert!(items.len() <= 4);
        names.extend(
            items
                .iter()
                .map(|i| i["metadata"]["name"].as_str().unwrap().to_string()),
        );
        match page["metadata"]["continue"].as_str() {
            Some(t) => {
                path = format!(
                    "/api/v1/namespaces/default/configmaps?labelSelector=parity%3Deven&limit=4&continue={t}"
                )
            }
            None => break,
        }
    }
    let expected: Vec<String> = (0..25).step_by(2).map(|i| format!("c{i:02}")).collect();
    assert_eq!(names, expected);
    assert_eq!(pages, 4);

    let (_, one) = s
        .req(
            Method::GET,
            "/api/v1/namespaces/default/configmaps?fieldSelector=metadata.name%3Dc03",
            None,
        )
        .await;
    assert_eq!(one["items"].as_array().unwrap().len(), 1);
}

async fn watch_sees_changes_in_order(s: Server) {
    let (_, list) = s
        .req(Method::GET, "/api/v1/namespaces/default/configmaps", None)
        .await;
    let rv = list["metadata"]["resourceVersion"]
        .as_str()
        .unwrap()
        .to_string();
    let resp = s
        .http
        .get(format!(
            "{}/api/v1/namespaces/default/configmaps?watch=True&resourceVersion={rv}&labelSelector=app%3Dweb",
            s.base
        ))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::OK);
    let (_, created) = s
        .req(
            Method::POST,
            "/api/v1/namespaces/default/configmaps",
            Some(cm("w")),
        )
        .await;
    let mut moved = created.clone();
    moved["metadata"]["labels"] = json!({"app": "other"});
    s.req(
        Method::PUT,
        "/api/v1/namespaces/default/configmaps/w",
        Some(moved),
    )
    .await;
    s.req(
        Method::DELETE,
        "/api/v1/namespaces/default/configmaps/w",
        None,
    )
    .await;
    let mut body = resp.bytes_stream();
    let mut buf = Vec::new();
    let mut events = Vec::new();
    while events.len() < 2 {
        let chunk = tokio::time::timeout(Duration::from_secs(30), body.next())
            .await
            .expect("watch event within 30 s")
            .expect("stream open")
            .unwrap();
        buf.extend_from_slice(&chunk);
        while let Some(pos) = buf.iter().position(|b| *b == b'\n') {
            let line: Vec<u8> = buf.drain(..=pos).collect();
            let v: Value = serde_json::from_slice(&line).unwrap();
            events.push((
                v["type"].as_str().unwrap().to_string(),
                v["object"]["metadata"]["name"].clone(),
            ));
        }
    }
    // The label change moves the object out of the selection: DELETED; the real delete is then
    // invisible to this watch.
    assert_eq!(
        events,
        vec![
            ("ADDED".to_string(), json!("w")),
            ("DELETED".to_string(), json!("w"))
        ]
    );
}

async fn finalizers_hold_deletion(s: Server) {
    let mut c = cm("held");
    c["metadata"]["finalizers"] = json!(["example.com/hold"]);
    s.req(
        Method::POST,
        "/api/v1/namespaces/default/configmaps",
        Some(c),
    )
    .await;
    let (code, marked) = s
        .req(
            Method::DELETE,
            "/api/v1/namespaces/default/configmaps/held",
            None,
        )
        .await;
    assert_eq!(code, StatusCode::ACCEPTED);
    assert!(marked["metadata"]["deletionTimestamp"].is_string());
    let (code, still) = s
        .req(
            Method::GET,
            "/api/v1/namespaces/default/configmaps/held",
            None,
        )
        .await;
    assert_eq!(code, StatusCode::OK);
    let mut released = still.clone();
    released["metadata"]["finalizers"] = json!([]);
    let (code, _) = s
        .req(
            Method::PUT,
            "/api/v1/namespaces/default/configmaps/held",
            Some(released),
        )
        .await;
    assert_eq!(code, StatusCode::OK);
    let (code, _) = s
        .req(
            Method::GET,
            "/api/v1/namespaces/default/configmaps/held",
            None,
        )
        .await;
    assert_eq!(code, StatusCode::NOT_FOUND, "gone with its last finalizer");

    // Foreground propagation adds its finalizer and keeps the object.
    s.req(
        Method::POST,
        "/api/v1/namespaces/default/configmaps",
        Some(cm("fg")),
    )
    .await;
    let (code, fg) = s
        .req(
            Method::DELETE,
            "/api/v1/namespaces/default/configmaps/fg",
            Some(json!({"kind": "DeleteOptions", "apiVersion": "v1", "propagationPolicy": "Foreground"})),
        )
        .await;
    assert_eq!(code, StatusCode::ACCEPTED);
    assert_eq!(fg["metadata"]["finalizers"], json!(["foregroundDeletion"]));
}

async fn errors_are_status_objects(s: Server) {
    type Case<'a> = (Method, &'a str, Option<(String, &'a str)>, u16, &'a str);
    let cases: Vec<Case<'_>> = vec![
        (Method::GET, "/api/v1/widgets", None, 404, "NotFound"),
        (Method::GET, "/nothing/here", None, 404, "NotFound"),
        (
            Method::POST,
            "/api/v1/namespaces/default/configmaps",
            Some(("{not json".into(), "application/json")),
            400,
            "BadRequest",
        ),
        (
            Method::POST,
            "/api/v1/namespaces/default/configmaps",
            Some(("x".into(), "text/csv")),
            415,
            "UnsupportedMediaType",
        ),
        (
            Method::POST,
            "/api/v1/namespaces/default/configmaps",
            Some(("a".repeat(4 * 1024 * 1024), "application/json")),
            413,
            "RequestEntityTooLarge",
        ),
        (
            Method::DELETE,
            "/api/v1/namespaces",
            None,
            405,
            "MethodNotAllowed",
        ),
        (Method::PUT, "/api/v1", None, 405, "MethodNotAllowed"),
        (
            Method::POST,
            "/api/v1/namespaces/default/pods",
            Some((
                json!({"metadata": {"name": "p"}, "spec": {"containers": []}}).to_string(),
                "application/json",
            )),
            422,
            "Invalid",
        ),
    ];
    for (method, path, body, code, reason) in cases {
        let (got, status) = s.req_ct(method.clone(), path, body).await;
        assert_eq!(got.as_u16(), code, "{method} {path}: {status}");
        assert_eq!(status["kind"], "Status", "{method} {path}");
        assert_eq!(status["reason"], reason, "{method} {path}: {status}");
        assert_eq!(status["code"], code);
    }
    let (_, invalid) = s
        .req(
            Method::POST,
            "/api/v1/namespaces/default/pods",
            Some(
                json!({"metadata": {"name": "Bad_Name"}, "spec": {"containers": [{"name": "c"}]}}),
            ),
        )
        .await;
    let msg = invalid["message"].as_str().unwrap();
    assert!(msg.starts_with("Pod \"Bad_Name\" is invalid: ["), "{msg}");
    assert!(
        msg.contains("spec.containers[0].image: Required value"),
        "{msg}"
    );
}

async fn services_get_unique_cluster_ips(s: Server) {
    let svc = |name: &str, ty: &str| json!({"metadata": {"name": name}, "spec": {"type": ty, "selector": {"app": "web"}, "ports": [{"port": 80}]}});
    let mut ips = std::collections::BTreeSet::new();
    for i in 0..5 {
        let (code, created) = s
            .req(
                Method::POST,
                "/api/v1/namespaces/default/services",
                Some(svc(&format!("s{i}"), "ClusterIP")),
            )
            .await;
        assert_eq!(code, StatusCode::CREATED, "{created}");
        let ip = created["spec"]["clusterIP"].as_str().unwrap().to_string();
        assert!(ip.starts_with("10.0.0."), "{ip}");
        assert_eq!(created["spec"]["ports"][0]["targetPort"], 80);
        assert!(ips.insert(ip));
    }
    let (_, np) = s
        .req(
            Method::POST,
            "/api/v1/namespaces/default/services",
            Some(svc("np", "NodePort")),
        )
        .await;
    let port = np["spec"]["ports"][0]["nodePort"].as_u64().unwrap();
    assert!((30000..=32767).contains(&port));
    // Released on delete, so the address can be asked for again.
    let (_, s0) = s
        .req(Method::GET, "/api/v1/namespaces/default/services/s0", None)
        .await;
    let ip0 = s0["spec"]["clusterIP"].as_str().unwrap().to_string();
    s.req(
        Method::DELETE,
        "/api/v1/namespaces/default/services/s0",
        None,
    )
    .await;
    let mut again = svc("again", "ClusterIP");
    again["spec"]["clusterIP"] = json!(ip0);
    let (code, re) = s
        .req(
            Method::POST,
            "/api/v1/namespaces/default/services",
            Some(again),
        )
        .await;
    assert_eq!(code, StatusCode::CREATED, "{re}");
    let mut clash = svc("clash", "ClusterIP");
    clash["spec"]["clusterIP"] = json!(ip0);
    let (code, _) = s
        .req(
            Method::POST,
            "/api/v1/namespaces/default/services",
            Some(clash),
        )
        .await;
    assert_eq!(code, StatusCode::UNPROCESSABLE_ENTITY);
}

/// Updates of a Service: a replace that leaves out `clusterIP` and `nodePort` keeps them (as
/// upstream fills them from the stored object), turning a ClusterIP Service into a NodePort
/// one allocates a node port, and a node port given up is free for another Service.
async fn service_updates_keep_and_allocate_addresses(s: Server) {
    let path = "/api/v1/namespaces/default/services";
    let manifest = |ty: &str| json!({"apiVersion": "v1", "kind": "Service", "metadata": {"name": "web"}, "spec": {"type": ty, "selector": {"app": "web"}, "ports": [{"port": 80}]}});
    let (code, created) = s.req(Method::POST, path, Some(manifest("ClusterIP"))).await;
    assert_eq!(code, StatusCode::CREATED, "{created}");
    let ip = created["spec"]["clusterIP"].clone();
    assert!(
        ip.as_str().is_some_and(|ip| ip.starts_with("10.0.0.")),
        "{created}"
    );

    // Replaced as NodePort by a manifest without clusterIP or nodePort.
    let (code, replaced) = s
        .req(
            Method::PUT,
            &format!("{path}/web"),
            Some(manifest("NodePort")),
        )
        .await;
    assert_eq!(code, StatusCode::OK, "{replaced}");
    assert_eq!(replaced["spec"]["clusterIP"], ip, "{replaced}");
    let port = replaced["spec"]["ports"][0]["nodePort"].as_u64();
    assert!(
        port.is_some_and(|p| (30000..=32767).contains(&p)),
        "{replaced}"
    );
    let port = port.unwrap_or_default();

    // Replaced again the same way: the same node port.
    let (code, again) = s
        .req(
            Method::PUT,
            &format!("{path}/web"),
            Some(manifest("NodePort")),
        )
        .await;
    assert_eq!(code, StatusCode::OK, "{again}");
    assert_eq!(again["spec"]["ports"][0]["nodePort"].as_u64(), Some(port));

    // Held: another Service cannot have it; moved away: it can.
    let mut rival = manifest("NodePort");
    rival["metadata"]["name"] = json!("rival");
    rival["spec"]["ports"][0]["nodePort"] = json!(port);
    let (code, refused) = s.req(Method::POST, path, Some(rival.clone())).await;
    assert_eq!(code, StatusCode::UNPROCESSABLE_ENTITY, "{refused}");
    let mut moved = manifest("NodePort");
    moved["spec"]["ports"][0]["nodePort"] = json!(32000);
    let (code, moved) = s
        .req(Method::PUT, &format!("{path}/web"), Some(moved))
        .await;
    assert_eq!(code, StatusCode::OK, "{moved}");
    assert_eq!(moved["spec"]["ports"][0]["nodePort"], 32000);
    let (code, taken) = s.req(Method::POST, path, Some(rival)).await;
    assert_eq!(code, StatusCode::CREATED, "{taken}");
}

async fn binding_assigns_once(s: Server) {
    let pod = json!({"metadata": {"name": "p"}, "spec": {"containers": [{"name": "c", "image": "busybox"}]}});
    let (code, created) = s
        .req(Method::POST, "/api/v1/namespaces/default/pods", Some(pod))
        .await;
    assert_eq!(code, StatusCode::CREATED, "{created}");
    assert_eq!(created["status"]["phase"], "Pending");
    assert_eq!(created["status"]["qosClass"], "BestEffort");
    assert_eq!(created["spec"]["restartPolicy"], "Always");
    let binding = |node: &str| json!({"apiVersion": "v1", "kind": "Binding", "metadata": {"name": "p"}, "target": {"kind": "Node", "name": node}});
    let mut wrong = binding("n1");
    wrong["metadata"]["uid"] = json!("not-the-uid");
    let (code, status) = s
        .req(
            Method::POST,
            "/api/v1/namespaces/default/pods/p/binding",
            Some(wrong),
        )
        .await;
    assert_eq!(
        code,
        StatusCode::CONFLICT,
        "a binding for another incarnation: {status}"
    );
    // Watchers see the binding as one change: node, condition and annotations together.
    let rv = created["metadata"]["resourceVersion"].as_str().unwrap();
    let watch = s
        .http
        .get(format!(
            "{}/api/v1/namespaces/default/pods?watch=1&resourceVersion={rv}&timeoutSeconds=2",
            s.base
        ))
        .send()
        .await
        .unwrap();
    let mut good = binding("n1");
    good["metadata"]["annotations"] = json!({"bound-by": "test"});
    let (code, _) = s
        .req(
            Method::POST,
            "/api/v1/namespaces/default/pods/p/binding",
            Some(good),
        )
        .await;
    assert_eq!(code, StatusCode::CREATED);
    let (_, bound) = s
        .req(Method::GET, "/api/v1/namespaces/default/pods/p", None)
        .await;
    assert_eq!(bound["spec"]["nodeName"], "n1");
    assert_eq!(bound["status"]["conditions"][0]["type"], "PodScheduled");
    assert_eq!(bound["status"]["conditions"][0]["status"], "True");
    assert_eq!(bound["metadata"]["annotations"]["bound-by"], "test");
    let events: Vec<Value> = watch
        .text()
        .await
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(events.len(), 1, "{events:?}");
    assert_eq!(events[0]["type"], "MODIFIED");
    assert_eq!(events[0]["object"], bound);
    let (code, status) = s
        .req(
            Method::POST,
            "/api/v1/namespaces/default/pods/p/binding",
            Some(binding("n2")),
        )
        .await;
    assert_eq!(code, StatusCode::CONFLICT);
    assert!(status["message"]
        .as_str()
        .unwrap()
        .contains("already assigned"));
    // A pod still gated is not bound.
    let gated = json!({"metadata": {"name": "gated"}, "spec": {"schedulingGates": [{"name": "wait"}], "containers": [{"name": "c", "image": "busybox"}]}});
    let (code, created) = s
        .req(Method::POST, "/api/v1/namespaces/default/pods", Some(gated))
        .await;
    assert_eq!(code, StatusCode::CREATED, "{created}");
    let mut gated_binding = binding("n1");
    gated_binding["metadata"]["name"] = json!("gated");
    let (code, status) = s
        .req(
            Method::POST,
            "/api/v1/namespaces/default/pods/gated/binding",
            Some(gated_binding),
        )
        .await;
    assert_eq!(code, StatusCode::CONFLICT, "{status}");
    assert!(status["message"]
        .as_str()
        .unwrap()
        .contains("non-empty .spec.schedulingGates"));
    // A bound pod is deleted gracefully: marked, not removed.
    let (code, marked) = s
        .req(Method::DELETE, "/api/v1/namespaces/default/pods/p", None)
        .await;
    assert_eq!(code, StatusCode::ACCEPTED);
    assert_eq!(marked["metadata"]["deletionGracePeriodSeconds"], 30);
    let (code, _) = s
        .req(
            Method::DELETE,
            "/api/v1/namespaces/default/pods/p?gracePeriodSeconds=0",
            None,
        )
        .await;
    assert_eq!(code, StatusCode::OK);
    let (code, _) = s
        .req(Method::GET, "/api/v1/namespaces/default/pods/p", None)
        .await;
    assert_eq!(code, StatusCode::NOT_FOUND);
    let (code, status) = s
        .req(
            Method::GET,
            "/api/v1/namespaces/default/pods/none/log",
            None,
        )
        .await;
    assert_eq!(code, StatusCode::NOT_FOUND, "{status}");
}

async fn dry_run_and_field_validation(s: Server) {
    let (code, _) = s
        .req(
            Method::POST,
            "/api/v1/namespaces/default/configmaps?dryRun=All",
            Some(cm("dry")),
        )
        .await;
    assert_eq!(code, StatusCode::CREATED);
    let (code, _) = s
        .req(
            Method::GET,
            "/api/v1/namespaces/default/configmaps/dry",
            None,
        )
        .await;
    assert_eq!(code, StatusCode::NOT_FOUND, "dry run stores nothing");
    let mut bad = cm("strict");
    bad["spec"] = json!({"x": 1});
    let (code, status) = s
        .req(
            Method::POST,
            "/api/v1/namespaces/default/configmaps?fieldValidation=Strict",
            Some(bad.clone()),
        )
        .await;
    assert_eq!(code, StatusCode::BAD_REQUEST);
    assert_eq!(
        status["message"],
        "strict decoding error: unknown field \"spec\""
    );
    let resp = s
        .http
        .post(format!(
            "{}/api/v1/namespaces/default/configmaps?fieldValidation=Warn",
            s.base
        ))
        .header("content-type", "application/json")
        .body(bad.to_string())
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::CREATED);
    let warning = resp
        .headers()
        .get("warning")
        .unwrap()
        .to_str()
        .unwrap()
        .to_string();
    assert_eq!(warning, "299 - \"unknown field \\\"spec\\\"\"");
    let yaml = "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: fromyaml\ndata:\n  a: b\n";
    let (code, created) = s
        .req_ct(
            Method::POST,
            "/api/v1/namespaces/default/configmaps",
            Some((yaml.into(), "application/yaml")),
        )
        .await;
    assert_eq!(code, StatusCode::CREATED);
    assert_eq!(created["data"]["a"], "b");
}

async fn eviction_honours_disruption_budgets(s: Server) {
    let pod = json!({"metadata": {"name": "p", "labels": {"app": "db"}}, "spec": {"containers": [{"name": "c", "image": "busybox"}]}});
    let (_, mut pod) = s
        .req(Method::POST, "/api/v1/namespaces/default/pods", Some(pod))
        .await;
    // A Pending pod is evicted without consulting budgets (upstream's `canIgnorePDB`): only a
    // running one is protected.
    pod["status"] =
        json!({"phase": "Running", "conditions": [{"type": "Ready", "status": "True"}]});
    let (code, _) = s
        .req(
            Method::PUT,
            "/api/v1/namespaces/default/pods/p/status",
            Some(pod),
        )
        .await;
    assert_eq!(code, StatusCode::OK);
    let pdb = json!({"apiVersion": "policy/v1", "kind": "PodDisruptionBudget", "metadata": {"name": "db"},
                     "spec": {"minAvailable": 1, "selector": {"matchLabels": {"app": "db"}}}});
    let (code, created) = s
        .req(
            Method::POST,
            "/apis/policy/v1/namespaces/default/poddisruptionbudgets",
            Some(pdb),
        )
        .await;
    assert_eq!(code, StatusCode::CREATED, "{created}");
    let mut with_status = created.clone();
    with_status["status"] = json!({"disruptionsAllowed": 0, "currentHealthy": 1, "desiredHealthy": 1, "expectedPods": 1, "observedGeneration": 1});
    let (code, _) = s
        .req(
            Method::PUT,
            "/apis/policy/v1/namespaces/default/poddisruptionbudgets/db/status",
            Some(with_status),
        )
        .await;
    assert_eq!(code, StatusCode::OK);
    let eviction = json!({"apiVersion": "policy/v1", "kind": "Eviction", "metadata": {"name": "p", "namespace": "default"}});
    let (code, status) = s
        .req(
            Method::POST,
            "/api/v1/namespaces/default/pods/p/eviction",
            Some(eviction.clone()),
        )
        .await;
    assert_eq!(code, StatusCode::TOO_MANY_REQUESTS, "{status}");
    assert_eq!(
        status["message"],
        "Cannot evict pod as it would violate the pod's disruption budget."
    );
    assert_eq!(status["details"]["causes"][0]["reason"], "DisruptionBudget");
    let (_, current) = s
        .req(
            Method::GET,
            "/apis/policy/v1/namespaces/default/poddisruptionbudgets/db",
            None,
        )
        .await;
    let mut allow = current.clone();
    allow["status"]["disruptionsAllowed"] = json!(1);
    s.req(
        Method::PUT,
        "/apis/policy/v1/namespaces/default/poddisruptionbudgets/db/status",
        Some(allow),
    )
    .await;
    let (code, _) = s
        .req(
            Method::POST,
            "/api/v1/namespaces/default/pods/p/eviction",
            Some(eviction),
        )
        .await;
    assert_eq!(code, StatusCode::CREATED);
    let (code, _) = s
        .req(Method::GET, "/api/v1/namespaces/default/pods/p", None)
        .await;
    assert_eq!(
        code,
        StatusCode::NOT_FOUND,
        "an unscheduled pod is deleted at once"
    );
    // The built-in `kubernetes` Service holds the first address of the range.
    let (_, svc) = s
        .req(
            Method::GET,
            "/api/v1/namespaces/default/services/kubernetes",
            None,
        )
        .await;
    assert_eq!(svc["spec"]["clusterIP"], "10.0.0.1");
}

async fn metrics_and_table_watches(s: Server) {
    s.req(
        Method::POST,
        "/api/v1/namespaces/default/configmaps",
        Some(cm("m")),
    )
    .await;
    let resp = s
        .http
        .get(format!(
            "{}/api/v1/namespaces/default/configmaps?watch=1",
            s.base
        ))
        .header(
            "accept",
            "application/json;as=Table;v=v1;g=meta.k8s.io,application/json",
        )
        .send()
        .await
        .unwrap();
    let mut body = resp.bytes_stream();
    let mut buf = Vec::new();
    while !buf.contains(&b'\n') {
        let chunk = tokio::time::timeout(Duration::from_secs(30), body.next())
            .await
            .expect("initial event")
            .expect("open")
            .unwrap();
        buf.extend_from_slice(&chunk);
    }
    let first: Value =
        serde_json::from_slice(&buf[..buf.iter().position(|b| *b == b'\n').unwrap()]).unwrap();
    assert_eq!(first["type"], "ADDED");
    assert_eq!(first["object"]["kind"], "Table");
    assert_eq!(first["object"]["rows"][0]["cells"][0], "m");
    assert_eq!(first["object"]["columnDefinitions"][0]["name"], "Name");

    let text = s
        .http
        .get(format!("{}/metrics", s.base))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(
        text.contains(
            r#"apiserver_request_total{code="201",group="",resource="configmaps",verb="POST"} 1"#
        ),
        "{text}"
    );
    assert!(
        text.contains(r#"apiserver_registered_watchers{group="",kind="ConfigMap"} 1"#),
        "{text}"
    );
    assert!(text.contains("apiserver_request_duration_seconds_bucket"));
    assert!(
        text.contains(r#"apiserver_storage_objects{resource="namespaces"} 4"#),
        "{text}"
    );
    drop(body);
}

/// Events expire after `event_ttl` (upstream: an etcd lease); other objects stay.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn events_expire_after_their_ttl() {
    let dir = tempfile::tempdir().unwrap();
    let storage = StorageConfig::Embedded {
        data_dir: dir.path().join("data"),
    };
    let s = Server::start_with_ttl(storage, None, dir, Duration::from_secs(1)).await;
    let event = json!({"apiVersion": "v1", "kind": "Event", "metadata": {"name": "e1"},
                       "involvedObject": {"kind": "Pod", "name": "p", "namespace": "default"},
                       "reason": "Test", "message": "hello", "type": "Normal"});
    let (code, created) = s
        .req(
            Method::POST,
            "/api/v1/namespaces/default/events",
            Some(event),
        )
        .await;
    assert_eq!(code, StatusCode::CREATED, "{created}");
    s.req(
        Method::POST,
        "/api/v1/namespaces/default/configmaps",
        Some(cm("stays")),
    )
    .await;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    loop {
        let (code, _) = s
            .req(Method::GET, "/api/v1/namespaces/default/events/e1", None)
            .await;
        if code == StatusCode::NOT_FOUND {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "the event never expired"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let (code, _) = s
        .req(
            Method::GET,
            "/api/v1/namespaces/default/configmaps/stays",
            None,
        )
        .await;
    assert_eq!(code, StatusCode::OK);
}

/// Two API servers on one etcd (the multi-node layout) allocate ClusterIPs and node ports
/// through the same claims: concurrent creates on both never get the same one, a node port
/// held through one server is refused by the other, and a deleted Service's port is free on
/// both again.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn two_servers_on_one_etcd_never_share_allocations() {
    let etcd = tokio::task::spawn_blocking(EtcdServer::start)
        .await
        .unwrap();
    let endpoints = vec![etcd.endpoint()];
    let a = Server::start(
        StorageConfig::Etcd {
            endpoints: endpoints.clone(),
        },
        None,
        tempfile::tempdir().unwrap(),
    )
    .await;
    let b = Server::start(
        StorageConfig::Etcd { endpoints },
        Some(etcd),
        tempfile::tempdir().unwrap(),
    )
    .await;
    let svc = |name: String| json!({"metadata": {"name": name}, "spec": {"type": "NodePort", "selector": {"app": "web"}, "ports": [{"port": 80}]}});
    let creates = (0..20).flat_map(|i| {
        [(&a, format!("a{i}")), (&b, format!("b{i}"))].map(|(server, name)| async move {
            let (code, created) = server
                .req(
                    Method::POST,
                    "/api/v1/namespaces/default/services",
                    Some(svc(name)),
                )
                .await;
            assert_eq!(code, StatusCode::CREATED, "{created}");
            (
                created["spec"]["clusterIP"].as_str().unwrap().to_string(),
                created["spec"]["ports"][0]["nodePort"].as_u64().unwrap(),
            )
        })
    });
    let created = futures::future::join_all(creates).await;
    let ips: std::collections::BTreeSet<_> = created.iter().map(|(ip, _)| ip).collect();
    let ports: std::collections::BTreeSet<_> = created.iter().map(|(_, p)| p).collect();
    assert_eq!(
        ips.len(),
        40,
        "every Service has its own ClusterIP: {created:?}"
    );
    assert_eq!(
        ports.len(),
        40,
        "every Service has its own node port: {created:?}"
    );

    let fixed = |name: &str| json!({"metadata": {"name": name}, "spec": {"type": "NodePort", "selector": {"app": "web"}, "ports": [{"port": 80, "nodePort": 31111}]}});
    let (code, held) = a
        .req(
            Method::POST,
            "/api/v1/namespaces/default/services",
            Some(fixed("holder")),
        )
        .await;
    assert_eq!(code, StatusCode::CREATED, "{held}");
    let (code, refused) = b
        .req(
            Method::POST,
            "/api/v1/namespaces/default/services",
            Some(fixed("rival")),
        )
        .await;
    assert_eq!(code, StatusCode::UNPROCESSABLE_ENTITY, "{refused}");
    let msg = refused["message"].as_str().unwrap_or_default();
    assert!(
        msg.contains(
            "spec.ports[0].nodePort: Invalid value: 31111: provided port is already allocated"
        ),
        "{msg}"
    );
    let (code, _) = a
        .req(
            Method::DELETE,
            "/api/v1/namespaces/default/services/holder",
            None,
        )
        .await;
    assert_eq!(code, StatusCode::OK);
    let (code, taken) = b
        .req(
            Method::POST,
            "/api/v1/namespaces/default/services",
            Some(fixed("rival")),
        )
        .await;
    assert_eq!(code, StatusCode::CREATED, "{taken}");
}

/// A Job's pod-failure rule may leave out a condition pattern's `status`; it means "True", as
/// upstream defaults it (the field is required in the stored type).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn job_pod_failure_condition_status_defaults_to_true() {
    let s = Server::embedded().await;
    let job = json!({"apiVersion": "batch/v1", "kind": "Job", "metadata": {"name": "j"}, "spec": {
        "podFailurePolicy": {"rules": [{"action": "Ignore", "onPodConditions": [{"type": "DisruptionTarget"}]}]},
        "template": {"spec": {"restartPolicy": "Never", "containers": [{"name": "c", "image": "busybox"}]}}}});
    let (code, created) = s
        .req(
            Method::POST,
            "/apis/batch/v1/namespaces/default/jobs",
            Some(job),
        )
        .await;
    assert_eq!(code, StatusCode::CREATED, "{created}");
    assert_eq!(
        created["spec"]["podFailurePolicy"]["rules"][0]["onPodConditions"][0]["status"],
        "True"
    );
}
