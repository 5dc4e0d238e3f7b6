//! Server-side apply and managedFields, driven over HTTP as `kubectl apply --server-side`
//! drives them.

use apiserver::{Config, Running, StorageConfig};
use reqwest::{Client, Method, StatusCode};
use serde_json::{json, Value};

struct Server {
    running: Option<Running>,
    base: String,
    http: Client,
    _dir: tempfile::TempDir,
}

impl Server {
    async fn start() -> Server {
        let dir = tempfile::tempdir().unwrap();
        let running = apiserver::start(Config {
            storage: StorageConfig::Embedded {
                data_dir: dir.path().join("data"),
            },
            bind_address: "127.0.0.1".parse().unwrap(),
            port: 0,
            service_cluster_ip_range: ("10.0.0.0".parse().unwrap(), 24),
            write_kubeconfig: None,
            event_ttl: std::time::Duration::from_secs(3600),
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

    async fn send(
        &self,
        method: Method,
        path: &str,
        body: Option<(String, &str)>,
        user_agent: &str,
    ) -> (StatusCode, Value) {
        let mut r = self
            .http
            .request(method, format!("{}{path}", self.base))
            .header("user-agent", user_agent);
        if let Some((b, ct)) = body {
            r = r.header("content-type", ct).body(b);
        }
        let resp = r.send().await.expect("request");
        let code = resp.status();
        let text = resp.text().await.unwrap();
        (
            code,
            serde_json::from_str(&text).unwrap_or(Value::String(text)),
        )
    }

    /// An apply as kubectl sends it (JSON in an apply-patch+yaml body).
    async fn apply(&self, manager: &str, force: bool, obj: &Value) -> (StatusCode, Value) {
        let path = format!(
            "{DEPLOYMENTS}/{}?fieldManager={manager}{}",
            obj["metadata"]["name"].as_str().unwrap(),
            if force { "&force=true" } else { "" }
        );
        self.send(
            Method::PATCH,
            &path,
            Some((obj.to_string(), "application/apply-patch+yaml")),
            "kubectl/v1.32.0 (linux/amd64) kubernetes/abcdef",
        )
        .await
    }

    async fn get(&self, name: &str) -> Value {
        let (code, obj) = self
            .send(Method::GET, &format!("{DEPLOYMENTS}/{name}"), None, "test")
            .await;
        assert_eq!(code, StatusCode::OK, "{obj}");
        obj
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        if let Some(r) = self.running.take() {
            r.shutdown_token().cancel();
        }
    }
}

const DEPLOYMENTS: &str = "/apis/apps/v1/namespaces/default/deployments";

fn deployment(replicas: Option<i64>, containers: Value) -> Value {
    let mut d = json!({
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": "web", "labels": {"app": "web"}},
        "spec": {
            "selector": {"matchLabels": {"app": "web"}},
            "template": {
                "metadata": {"labels": {"app": "web"}},
                "spec": {"containers": containers}
            }
        }
    });
    if let Some(r) = replicas {
        d["spec"]["replicas"] = json!(r);
    }
    d
}

fn nginx() -> Value {
    json!([{"name": "nginx", "image": "nginx:1.27"}])
}

/// The managedFields entry of one manager.
fn entry<'a>(obj: &'a Value, manager: &str) -> Option<&'a Value> {
    obj["metadata"]["managedFields"]
        .as_array()?
        .iter()
        .find(|e| e["manager"] == manager)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn apply_creates_and_records_the_manager() {
    let s = Server::start().await;
    let (code, obj) = s
        .apply("kubectl", false, &deployment(Some(2), nginx()))
        .await;
    assert_eq!(code, StatusCode::CREATED, "{obj}");
    assert_eq!(obj["spec"]["replicas"], 2);
    // Defaults were applied as on any create.
    assert_eq!(obj["spec"]["strategy"]["type"], "RollingUpdate");
    let e = entry(&obj, "kubectl").expect("an Apply entry");
    assert_eq!(e["operation"], "Apply");
    assert_eq!(e["apiVersion"], "apps/v1");
    assert_eq!(e["fieldsType"], "FieldsV1");
    let f = &e["fieldsV1"];
    assert_eq!(f["f:spec"]["f:replicas"], json!({}));
    assert_eq!(
        f["f:spec"]["f:selector"],
        json!({}),
        "LabelSelector is atomic"
    );
    let c = &f["f:spec"]["f:template"]["f:spec"]["f:containers"]["k:{\"name\":\"nginx\"}"];
    assert_eq!(c, &json!({".": {}, "f:image": {}, "f:name": {}}));
    assert!(
        f["f:spec"].get("f:strategy").is_none(),
        "defaults are nobody's: {f}"
    );

    // Applying the same configuration again changes nothing.
    let (code, again) = s
        .apply("kubectl", false, &deployment(Some(2), nginx()))
        .await;
    assert_eq!(code, StatusCode::OK, "{again}");
    assert_eq!(
        again["metadata"]["resourceVersion"],
        obj["metadata"]["resourceVersion"]
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn apply_requires_a_field_manager_and_a_complete_object() {
    let s = Server::start().await;
    let (code, status) = s
        .send(
            Method::PATCH,
            &format!("{DEPLOYMENTS}/web"),
            Some((
                deployment(Some(1), nginx()).to_string(),
                "application/apply-patch+yaml",
            )),
            "curl/8",
        )
        .await;
    assert_eq!(code, StatusCode::BAD_REQUEST);
    assert_eq!(status["message"], "PATCH /apply requires fieldManager");

    let mut no_kind = deployment(Some(1), nginx());
    no_kind.as_object_mut().unwrap().remove("kind");
    let (code, status) = s.apply("kubectl", false, &no_kind).await;
    assert_eq!(code, StatusCode::BAD_REQUEST, "{status}");
    assert_eq!(status["kind"], "Status");

    let mut elsewhere = deployment(Some(1), nginx());
    elsewhere["metadata"]["namespace"] = json!("other");
    let (code, status) = s.apply("kubectl", false, &elsewhere).await;
    assert_eq!(code, StatusCode::BAD_REQUEST, "{status}");
    assert_eq!(
        status["message"],
        "the namespace of the provided object does not match the namespace sent on the request"
    );

    // YAML bodies are accepted too.
    let yaml = "apiVersion: apps/v1\nkind: Deployment\nmetadata:\n  name: web\nspec:\n  selector:\n    matchLabels: {app: web}\n  template:\n    metadata:\n      labels: {app: web}\n    spec:\n      containers:\n      - name: c\n        image: busybox\n";
    let (code, obj) = s
        .send(
            Method::PATCH,
            &format!("{DEPLOYMENTS}/web?fieldManager=curl"),
            Some((yaml.to_string(), "application/apply-patch+yaml")),
            "curl/8",
        )
        .await;
    assert_eq!(code, StatusCode::CREATED, "{obj}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reapply_without_a_field_removes_it() {
    let s = Server::start().await;
    let mut d = deployment(Some(3), nginx());
    d["metadata"]["labels"]["tier"] = json!("front");
    let (code, obj) = s.apply("kubectl", false, &d).await;
    assert_eq!(code, StatusCode::CREATED, "{obj}");
    assert_eq!(obj["metadata"]["labels"]["tier"], "front");

    // The label and replicas left out are removed (replicas then defaults back to 1).
    let (code, obj) = s.apply("kubectl", false, &deployment(None, nginx())).await;
    assert_eq!(code, StatusCode::OK, "{obj}");
    assert!(
        obj["metadata"]["labels"].get("tier").is_none(),
        "{}",
        obj["metadata"]
    );
    assert_eq!(obj["metadata"]["labels"]["app"], "web");
    assert_eq!(obj["spec"]["replicas"], 1);
    let f = &entry(&obj, "kubectl").unwrap()["fieldsV1"];
    assert!(f["f:spec"].get("f:replicas").is_none(), "{f}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_managers_own_different_fields() {
    let s = Server::start().await;
    let (code, _) = s.apply("alice", false, &deployment(Some(2), nginx())).await;
    assert_eq!(code, StatusCode::CREATED);
    // Bob applies only a label; alice's fields stay, and removing bob's label later leaves
    // alice's alone.
    let bob = json!({
        "apiVersion": "apps/v1", "kind": "Deployment",
        "metadata": {"name": "web", "labels": {"team": "b"}}
    });
    let (code, obj) = s.apply("bob", false, &bob).await;
    assert_eq!(code, StatusCode::OK, "{obj}");
    assert_eq!(
        obj["metadata"]["labels"],
        json!({"app": "web", "team": "b"})
    );
    assert_eq!(obj["spec"]["replicas"], 2);
    let b = &entry(&obj, "bob").unwrap()["fieldsV1"];
    assert_eq!(b, &json!({"f:metadata": {"f:labels": {"f:team": {}}}}));
    let a = &entry(&obj, "alice").unwrap()["fieldsV1"];
    assert!(a["f:metadata"]["f:labels"].get("f:team").is_none());

    let bob_empty =
        json!({"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "web"}});
    let (code, obj) = s.apply("bob", false, &bob_empty).await;
    assert_eq!(code, StatusCode::OK, "{obj}");
    assert_eq!(obj["metadata"]["labels"], json!({"app": "web"}));
    assert_eq!(obj["spec"]["replicas"], 2);
    assert!(entry(&obj, "bob").is_none(), "an empty set is no entry");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn conflicting_apply_is_409_and_force_takes_over() {
    let s = Server::start().await;
    let (code, _) = s
        .apply("kubectl", false, &deployment(Some(2), nginx()))
        .await;
    assert_eq!(code, StatusCode::CREATED);
    // `kubectl scale` is an Update by kubectl-scale: it takes replicas over.
    let (code, obj) = s
        .send(
            Method::PATCH,
            &format!("{DEPLOYMENTS}/web/scale?fieldManager=kubectl-scale"),
            Some((
                json!({"spec": {"replicas": 5}}).to_string(),
                "application/merge-patch+json",
            )),
            "kubectl/v1.32.0",
        )
        .await;
    assert_eq!(code, StatusCode::OK, "{obj}");
    let obj = s.get("web").await;
    let scale = entry(&obj, "kubectl-scale").expect("kubectl-scale entry");
    assert_eq!(scale["operation"], "Update");
    assert_eq!(scale["fieldsV1"], json!({"f:spec": {"f:replicas": {}}}));
    let mine = &entry(&obj, "kubectl").unwrap()["fieldsV1"];
    assert!(
        mine["f:spec"].get("f:replicas").is_none(),
        "taken over: {mine}"
    );

    // Applying another value conflicts, worded as upstream.
    let (code, status) = s
        .apply("kubectl", false, &deployment(Some(3), nginx()))
        .await;
    assert_eq!(code, StatusCode::CONFLICT, "{status}");
    assert_eq!(status["reason"], "Conflict");
    assert_eq!(
        status["message"],
        "Apply failed with 1 conflict: conflict with \"kubectl-scale\" using apps/v1: .spec.replicas"
    );
    assert_eq!(
        status["details"]["causes"],
        json!([{
            "reason": "FieldManagerConflict",
            "message": "conflict with \"kubectl-scale\" using apps/v1",
            "field": ".spec.replicas"
        }])
    );
    assert_eq!(s.get("web").await["spec"]["replicas"], 5);

    // Several fields: plural, each a cause.
    let mut two = deployment(Some(3), json!([{"name": "nginx", "image": "nginx:2"}]));
    two["metadata"]["name"] = json!("web");
    let (code, status) = s.apply("other", false, &two).await;
    assert_eq!(code, StatusCode::CONFLICT, "{status}");
    let msg = status["message"].as_str().unwrap();
    assert!(msg.starts_with("Apply failed with 2 conflicts: "), "{msg}");
    assert_eq!(status["details"]["causes"].as_array().unwrap().len(), 2);

    // The same value is no conflict: both own it.
    let (code, obj) = s
        .apply("kubectl", false, &deployment(Some(5), nginx()))
        .await;
    assert_eq!(code, StatusCode::OK, "{obj}");
    assert!(entry(&obj, "kubectl-scale").is_some());

    // Forced, the applier takes the field over.
    let (code, obj) = s
        .apply("kubectl", true, &deployment(Some(3), nginx()))
        .await;
    assert_eq!(code, StatusCode::OK, "{obj}");
    assert_eq!(obj["spec"]["replicas"], 3);
    assert!(entry(&obj, "kubectl-scale").is_none(), "{obj}");
    let mine = &entry(&obj, "kubectl").unwrap()["fieldsV1"];
    assert_eq!(mine["f:spec"]["f:replicas"], json!({}));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn containers_merge_by_name() {
    let s = Server::start().await;
    let (code, _) = s.apply("alice", false, &deployment(Some(1), nginx())).await;
    assert_eq!(code, StatusCode::CREATED);
    let sidecar = json!({
        "apiVersion": "apps/v1", "kind": "Deployment",
        "metadata": {"name": "web"},
        "spec": {"template": {"spec": {"containers": [{"name": "sidecar", "image": "busybox"}]}}}
    });
    let (code, obj) = s.apply("bob", false, &sidecar).await;
    assert_eq!(code, StatusCode::OK, "{obj}");
    let names = |o: &Value| -> Vec<String> {
        o["spec"]["template"]["spec"]["containers"]
            .as_array()
            .unwrap()
            .iter()
            .map(|c| c["name"].as_str().unwrap().to_string())
            .collect()
    };
    assert_eq!(names(&obj), ["nginx", "sidecar"]);
    // Bob drops his container: alice's stays.
    let none = json!({"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "web"}});
    let (code, obj) = s.apply("bob", false, &none).await;
    assert_eq!(code, StatusCode::OK, "{obj}");
    assert_eq!(names(&obj), ["nginx"]);
    assert_eq!(
        obj["spec"]["template"]["spec"]["containers"][0]["image"],
        "nginx:1.27"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn updates_are_recorded_and_managed_fields_can_be_reset() {
    let s = Server::start().await;
    let (code, obj) = s
        .send(
            Method::POST,
            &format!("{DEPLOYMENTS}?fieldManager=kubectl-create"),
            Some((deployment(Some(1), nginx()).to_string(), "application/json")),
            "kubectl/v1.32.0",
        )
        .await;
    assert_eq!(code, StatusCode::CREATED, "{obj}");
    let e = entry(&obj, "kubectl-create").expect("create is recorded");
    assert_eq!(e["operation"], "Update");
    // Without fieldManager, the user agent's program name.
    let (code, obj) = s
        .send(
            Method::PATCH,
            &format!("{DEPLOYMENTS}/web"),
            Some((
                json!({"metadata": {"labels": {"x": "y"}}}).to_string(),
                "application/strategic-merge-patch+json",
            )),
            "kubectl-label/v1.32.0 (linux/amd64) kubernetes/abc",
        )
        .await;
    assert_eq!(code, StatusCode::OK, "{obj}");
    let e = entry(&obj, "kubectl-label").expect("label patch is recorded");
    assert_eq!(
        e["fieldsV1"],
        json!({"f:metadata": {"f:labels": {"f:x": {}}}})
    );
    // `[{}]` clears managedFields.
    let (code, obj) = s
        .send(
            Method::PATCH,
            &format!("{DEPLOYMENTS}/web"),
            Some((
                json!({"metadata": {"managedFields": [{}]}}).to_string(),
                "application/merge-patch+json",
            )),
            "kubectl/v1.32.0",
        )
        .await;
    assert_eq!(code, StatusCode::OK, "{obj}");
    assert!(
        obj["metadata"].get("managedFields").is_none(),
        "{}",
        obj["metadata"]
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn service_ports_merge_by_port_and_protocol() {
    let s = Server::start().await;
    let svc = |ports: Value| {
        json!({
            "apiVersion": "v1", "kind": "Service",
            "metadata": {"name": "web"},
            "spec": {"selector": {"app": "web"}, "ports": ports}
        })
    };
    let apply = |manager: &'static str, body: Value| {
        let s = &s;
        async move {
            s.send(
                Method::PATCH,
                &format!("/api/v1/namespaces/default/services/web?fieldManager={manager}"),
                Some((body.to_string(), "application/apply-patch+yaml")),
                "kubectl/v1.32.0",
            )
            .await
        }
    };
    let (code, created) = apply("alice", svc(json!([{"name": "http", "port": 80}]))).await;
    assert_eq!(code, StatusCode::CREATED, "{created}");
    let ip = created["spec"]["clusterIP"].clone();
    assert!(ip.is_string(), "{created}");
    let f = &entry(&created, "alice").unwrap()["fieldsV1"];
    assert!(
        f["f:spec"]["f:ports"]
            .get(r#"k:{"port":80,"protocol":"TCP"}"#)
            .is_some(),
        "{f}"
    );

    let bob = json!({
        "apiVersion": "v1", "kind": "Service", "metadata": {"name": "web"},
        "spec": {"ports": [{"name": "https", "port": 443}]}
    });
    let (code, obj) = apply("bob", bob).await;
    assert_eq!(code, StatusCode::OK, "{obj}");
    let ports: Vec<i64> = obj["spec"]["ports"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["port"].as_i64().unwrap())
        .collect();
    assert_eq!(ports, [80, 443]);
    assert_eq!(obj["spec"]["clusterIP"], ip, "the allocated IP stays");
}
