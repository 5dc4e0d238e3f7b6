//! Malformed and mutated requests get 4xx `Status` answers: never a 5xx, never a dropped
//! connection, and the server keeps serving. The mutations are pseudo-random from a fixed
//! seed, so a failure reproduces.

use apiserver::{Config, StorageConfig};
use reqwest::{Client, Method};
use serde_json::{json, Value};

/// xorshift64*: deterministic, dependency-free randomness for the mutations.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }
    fn below(&mut self, n: usize) -> usize {
        (self.next() % n.max(1) as u64) as usize
    }
    fn pick<'a, T>(&mut self, items: &'a [T]) -> &'a T {
        &items[self.below(items.len())]
    }
}

fn seeds() -> Vec<(&'static str, Value)> {
    vec![
        (
            "/api/v1/namespaces/default/pods",
            json!({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "p", "labels": {"a": "b"}}, "spec": {"containers": [{"name": "c", "image": "busybox", "ports": [{"containerPort": 80}], "resources": {"limits": {"cpu": "1"}}}]}}),
        ),
        (
            "/apis/apps/v1/namespaces/default/deployments",
            json!({"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "d"}, "spec": {"replicas": 1, "selector": {"matchLabels": {"a": "b"}}, "template": {"metadata": {"labels": {"a": "b"}}, "spec": {"containers": [{"name": "c", "image": "i"}]}}}}),
        ),
        (
            "/apis/batch/v1/namespaces/default/jobs",
            json!({"apiVersion": "batch/v1", "kind": "Job", "metadata": {"name": "j"}, "spec": {"template": {"spec": {"restartPolicy": "Never", "containers": [{"name": "c", "image": "i"}]}}}}),
        ),
        (
            "/api/v1/namespaces/default/services",
            json!({"apiVersion": "v1", "kind": "Service", "metadata": {"name": "s"}, "spec": {"type": "NodePort", "ports": [{"port": 80}]}}),
        ),
        (
            "/api/v1/namespaces/default/secrets",
            json!({"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "x"}, "stringData": {"a": "b"}}),
        ),
        (
            "/api/v1/namespaces",
            json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "n"}}),
        ),
        (
            "/api/v1/namespaces/default/configmaps",
            json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "c"}, "data": {"a": "b"}}),
        ),
    ]
}

fn random_value(rng: &mut Rng, depth: usize) -> Value {
    match rng.below(if depth > 3 { 6 } else { 8 }) {
        0 => Value::Null,
        1 => json!(rng.below(2) == 0),
        2 => json!(rng.next() as i64),
        3 => json!(-1),
        4 => json!("x".repeat(rng.below(300))),
        5 => json!("\u{0}\u{202e}é☃"),
        6 => Value::Array(
            (0..rng.below(4))
                .map(|_| random_value(rng, depth + 1))
                .collect(),
        ),
        _ => {
            let mut m = serde_json::Map::new();
            for _ in 0..rng.below(4) {
                m.insert(
                    (*rng.pick(&[
                        "metadata",
                        "spec",
                        "status",
                        "name",
                        "$patch",
                        "containers",
                        "x",
                    ]))
                    .to_string(),
                    random_value(rng, depth + 1),
                );
            }
            Value::Object(m)
        }
    }
}

/// Replaces one random node of `v` with a random value.
fn mutate(rng: &mut Rng, v: &mut Value) {
    let descend = rng.below(3) != 0;
    match v {
        Value::Object(m) if !m.is_empty() && descend => {
            let keys: Vec<String> = m.keys().cloned().collect();
            let k = rng.pick(&keys).clone();
            if let Some(child) = m.get_mut(&k) {
                mutate(rng, child);
            }
        }
        Value::Array(a) if !a.is_empty() && descend => {
            let i = rng.below(a.len());
            mutate(rng, &mut a[i]);
        }
        _ => *v = random_value(rng, 0),
    }
}

fn corrupt_bytes(rng: &mut Rng, mut b: Vec<u8>) -> Vec<u8> {
    match rng.below(4) {
        0 => b.truncate(rng.below(b.len())),
        1 => {
            for _ in 0..1 + rng.below(4) {
                let i = rng.below(b.len());
                b[i] = rng.next() as u8;
            }
        }
        2 => {
            let i = rng.below(b.len());
            b.splice(i..i, std::iter::repeat_n(b'[', 2000));
        }
        _ => b.extend_from_slice(b"}}}garbage"),
    }
    b
}

const PATHS: &[&str] = &[
    "/api/v1/namespaces/default/pods/p",
    "/api/v1/namespaces/default/pods/p/status",
    "/api/v1/namespaces/default/pods/p/binding",
    "/apis/apps/v1/namespaces/default/deployments/d/scale",
    "/api/v1/namespaces/%ZZ/pods",
    "/api/v1/namespaces/default/pods?limit=abc",
    "/api/v1/namespaces/default/pods?limit=-5&continue=%%%",
    "/api/v1/namespaces/default/pods?continue=eyJ2IjoibWV0YS5rOHMuaW8vdjEiLCJydiI6LTEsInN0YXJ0IjoiLi4vLi4vIn0=",
    "/api/v1/pods?resourceVersion=notanumber&resourceVersionMatch=Exact",
    "/api/v1/pods?fieldSelector=%3D%3D%3D",
    "/api/v1/pods?labelSelector=a+in+(",
    "/api/v1/pods?watch=1&resourceVersion=xyz",
    "/api/v1/pods?watch=1&timeoutSeconds=abc",
    "/apis/apps/v1/namespaces/default/deployments/d?dryRun=Sometimes",
    "/apis/apps/v1/namespaces/default/deployments/d?fieldValidation=Loud",
    "/api/v1/namespaces/default/pods/p?gracePeriodSeconds=x",
    "/api/v1/namespaces/default/pods/p?propagationPolicy=Sideways",
    "/apis/../../etc/passwd",
    "/api/v1/namespaces/default/widgets/x",
    "/apis/apps/v1/namespaces/default/deployments/d/nonsense",
    "/api/v1/namespaces/default/pods/p/status/extra/parts",
    "/openapi/v3/apis/nope/v1?hash=1",
];

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mutated_requests_never_fail_the_server() {
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
    .unwrap();
    let base = format!("http://{}", running.addr);
    let http = Client::builder()
        .timeout(std::time::Duration::from_secs(10))
        .build()
        .unwrap();
    let mut rng = Rng(0x00C0_FFEE_1234_5678);
    let seeds = seeds();
    let content_types = [
        "application/json",
        "application/yaml",
        "application/merge-patch+json",
        "application/json-patch+json",
        "application/strategic-merge-patch+json",
    ];
    let mut fives = Vec::new();
    for i in 0..3000 {
        let (path, body, method, ct) = if i % 4 == 3 {
            let p = *rng.pick(PATHS);
            let m = rng
                .pick(&[
                    Method::GET,
                    Method::POST,
                    Method::PUT,
                    Method::PATCH,
                    Method::DELETE,
                ])
                .clone();
            (
                p.to_string(),
                random_value(&mut rng, 0).to_string().into_bytes(),
                m,
                *rng.pick(&content_types),
            )
        } else {
            let (path, seed) = rng.pick(&seeds).clone();
            let mut obj = seed.clone();
            for _ in 0..1 + rng.below(3) {
                mutate(&mut rng, &mut obj);
            }
            let mut bytes = serde_json::to_vec(&obj).unwrap();
            if rng.below(5) == 0 {
                bytes = corrupt_bytes(&mut rng, bytes);
            }
            let name = obj
                .pointer("/metadata/name")
                .and_then(Value::as_str)
                .unwrap_or("x");
            let (method, path) = match rng.below(4) {
                0 => (Method::POST, path.to_string()),
                1 => (Method::PUT, format!("{path}/{name}")),
                2 => (Method::PATCH, format!("{path}/{name}")),
                _ => (Method::POST, path.to_string()),
            };
            (path, bytes, method, *rng.pick(&content_types))
        };
        let resp = http
            .request(method.clone(), format!("{base}{path}"))
            .header("content-type", ct)
            .body(body.clone())
            .send()
            .await
            .unwrap_or_else(|e| panic!("request {i} ({method} {path}) dropped: {e}"));
        let code = resp.status().as_u16();
        let is_watch = path.contains("watch=1");
        let text = if is_watch {
            String::new()
        } else {
            resp.text().await.unwrap_or_default()
        };
        if code >= 500 {
            fives.push(format!(
                "{i}: {method} {path} [{ct}] -> {code} {text} body={}",
                String::from_utf8_lossy(&body)
            ));
            continue;
        }
        if code >= 400 && !is_watch {
            let status: Value = serde_json::from_str(&text).unwrap_or_else(|_| {
                panic!("{i}: {method} {path} -> {code} with a non-Status body: {text}")
            });
            assert_eq!(status["kind"], "Status", "{i}: {text}");
            assert_eq!(status["code"], code, "{i}: {text}");
        }
    }
    assert!(
        fives.is_empty(),
        "{} requests got 5xx:\n{}",
        fives.len(),
        fives.join("\n")
    );
    // Not malformed: a read at a revision the store has not reached yet is upstream's 504
    // Timeout with a ResourceVersionTooLarge cause, which clients retry.
    let future = http
        .get(format!(
            "{base}/api/v1/pods?resourceVersion=99999999&resourceVersionMatch=Exact"
        ))
        .send()
        .await
        .unwrap();
    assert_eq!(future.status().as_u16(), 504);
    let status: Value = future.json().await.unwrap();
    assert_eq!(
        status["details"]["causes"][0]["reason"],
        "ResourceVersionTooLarge"
    );
    let health = http.get(format!("{base}/healthz")).send().await.unwrap();
    assert_eq!(health.status().as_u16(), 200, "still serving");
    running.stop().await;
}
