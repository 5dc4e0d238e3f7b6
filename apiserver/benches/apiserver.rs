//! API server benchmark, all figures from one run on one machine:
//!
//! 1. Pod creates/s through `cox-apiserver` (a separate process, release build) ÷ raw etcd
//!    puts/s of the same 2.5 KB at the same concurrency, on one etcd; and the same on the
//!    embedded store; and the ceiling for any API server on that etcd (create transactions
//!    with a watch draining the events, in process).
//! 2. Watch delivery latency (create issued → event received) with 100 and 1,000 HTTP watchers
//!    while 100 pods/s are created.
//! 3. LIST of all pods after storing N pods (default 100,000): latency, response size, and the
//!    server's peak RSS growth during the LIST ÷ response size; RSS at idle and with N pods.
//!
//! `cargo bench -p apiserver --bench apiserver [-- --pods N --seconds S --only writes|watch|list]`

use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures::StreamExt;
use serde_json::json;
use storage::testing::{free_port, EtcdServer};

const CONCURRENCY: [usize; 2] = [16, 64];

struct Server {
    child: Child,
    base: String,
    _dir: tempfile::TempDir,
}

impl Server {
    fn start(etcd: Option<&str>) -> Server {
        let dir = tempfile::tempdir().expect("temp dir");
        let port = free_port();
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_cox-apiserver"));
        cmd.args(["--port", &port.to_string()])
            .arg("--data-dir")
            .arg(dir.path())
            .env("RUST_LOG", "warn")
            .stdout(Stdio::null())
            .stderr(Stdio::null());
        if let Some(e) = etcd {
            cmd.args(["--etcd-servers", e]);
        }
        let child = cmd.spawn().expect("start cox-apiserver");
        let base = format!("http://127.0.0.1:{port}");
        let deadline = Instant::now() + Duration::from_secs(30);
        while Instant::now() < deadline {
            if std::net::TcpStream::connect(("127.0.0.1", port)).is_ok() {
                break;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        Server {
            child,
            base,
            _dir: dir,
        }
    }

    /// (current RSS, peak RSS) in bytes, from /proc.
    fn rss(&self) -> (u64, u64) {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.child.id()))
            .unwrap_or_default();
        let field = |name: &str| {
            status
                .lines()
                .find(|l| l.starts_with(name))
                .and_then(|l| l.split_whitespace().nth(1))
                .and_then(|v| v.parse::<u64>().ok())
                .unwrap_or(0)
                * 1024
        };
        (field("VmRSS:"), field("VmHWM:"))
    }

    /// Resets the peak-RSS counter so the next reading is the peak of what follows.
    fn reset_peak(&self) {
        let _ = std::fs::write(format!("/proc/{}/clear_refs", self.child.id()), "5");
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn pod(name: &str) -> serde_json::Value {
    // About 2.5 KB of JSON once defaulted, like a typical small Pod.
    json!({
        "apiVersion": "v1", "kind": "Pod",
        "metadata": {"name": name, "labels": {"app": "bench", "tier": "backend", "pod-template-hash": "5d8f7c9b6"},
                     "annotations": {"note": "x".repeat(900)}},
        "spec": {"containers": [{"name": "app", "image": "registry.example/app:1.2.3",
            "command": ["/bin/app", "--serve", "--port=8080"],
            "env": [{"name": "MODE", "value": "production"}, {"name": "LOG", "value": "info"}],
            "ports": [{"containerPort": 8080, "name": "http"}],
            "resources": {"requests": {"cpu": "100m", "memory": "128Mi"}, "limits": {"cpu": "500m", "memory": "256Mi"}},
            "readinessProbe": {"httpGet": {"path": "/ready", "port": 8080}, "periodSeconds": 5}}]}
    })
}

/// Runs `op(writer, n)` in `writers` concurrent loops for `secs`; returns operations/s.
async fn rate<F, Fut>(writers: usize, secs: f64, op: F) -> f64
where
    F: Fn(usize, u64) -> Fut + Clone + Send + 'static,
    Fut: std::future::Future<Output = ()> + Send,
{
    let deadline = Instant::now() + Duration::from_secs_f64(secs);
    let start = Instant::now();
    let tasks = (0..writers).map(|w| {
        let op = op.clone();
        tokio::spawn(async move {
            let mut n = 0u64;
            while Instant::now() < deadline {
                op(w, n).await;
                n += 1;
            }
            n
        })
    });
    let total: u64 = futures::future::join_all(tasks)
        .await
        .into_iter()
        .map(|r| r.expect("task"))
        .sum();
    total as f64 / start.elapsed().as_secs_f64()
}

async fn create_rate(
    http: &reqwest::Client,
    base: &str,
    writers: usize,
    secs: f64,
    tag: &str,
) -> f64 {
    let http = http.clone();
    let url = Arc::new(format!("{base}/api/v1/namespaces/default/pods"));
    let tag = Arc::new(tag.to_string());
    rate(writers, secs, move |w, n| {
        let (http, url, tag) = (http.clone(), url.clone(), tag.clone());
        async move {
            let body = pod(&format!("{tag}-{w}-{n}")).to_string();
            let resp = http
                .post(url.as_str())
                .header("content-type", "application/json")
                .body(body)
                .send()
                .await
                .expect("create");
            assert_eq!(
                resp.status().as_u16(),
                201,
                "{}",
                resp.text().await.unwrap_or_default()
            );
        }
    })
    .await
}

async fn raw_put_rate(client: etcd_client::Client, writers: usize, secs: f64, size: usize) -> f64 {
    rate(writers, secs, move |w, n| {
        let mut kv = client.kv_client();
        async move {
            kv.put(format!("/bench/raw/{w}/{n}"), vec![b'x'; size], None)
                .await
                .expect("put");
        }
    })
    .await
}

/// The ceiling any API server on this etcd can reach: creates as compare-and-put transactions
/// (a create must not overwrite) while one prefix watch with previous values (what a watch
/// cache needs) drains every event, no HTTP, no encoding. Returns creates/s.
async fn raw_watched_txn_rate(
    client: etcd_client::Client,
    writers: usize,
    secs: f64,
    size: usize,
    tag: &str,
    prev_kv: bool,
) -> f64 {
    use etcd_client::{Compare, CompareOp, Txn, TxnOp, WatchOptions};
    let prefix = Arc::new(format!("/bench/ceiling/{tag}/"));
    let mut options = WatchOptions::new().with_prefix();
    if prev_kv {
        options = options.with_prev_key();
    }
    let mut stream = client
        .watch_client()
        .watch(prefix.as_str(), Some(options))
        .await
        .expect("watch");
    let drain = tokio::spawn(async move {
        let mut seen = 0usize;
        while let Ok(Some(resp)) = stream.message().await {
            seen += resp.events().len();
        }
        seen
    });
    let creates = rate(writers, secs, move |w, n| {
        let mut kv = client.kv_client();
        let key = format!("{prefix}{w}/{n}");
        async move {
            let txn = Txn::new()
                .when([Compare::create_revision(key.as_str(), CompareOp::Equal, 0)])
                .and_then([TxnOp::put(key.as_str(), vec![b'x'; size], None)]);
            let resp = kv.txn(txn).await.expect("txn");
            assert!(resp.succeeded(), "create of a new key refused");
        }
    })
    .await;
    drain.abort();
    creates
}

/// The first `"name":"…"` of a watch line: the object's metadata.name (metadata comes first).
fn name_in(line: &[u8]) -> Option<&str> {
    const NEEDLE: &[u8] = b"\"name\":\"";
    let start = line.windows(NEEDLE.len()).position(|w| w == NEEDLE)? + NEEDLE.len();
    let len = line[start..].iter().position(|b| *b == b'"')?;
    std::str::from_utf8(&line[start..start + len]).ok()
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    if sorted.is_empty() {
        return Duration::ZERO;
    }
    sorted[((sorted.len() as f64 - 1.0) * p).round() as usize]
}

async fn watch_latency(base: &str, watchers: usize, secs: f64) -> (Duration, Duration, usize) {
    let http = reqwest::Client::builder()
        .pool_max_idle_per_host(0)
        .build()
        .expect("client");
    let issued: Arc<parking_lot::Mutex<std::collections::HashMap<String, Instant>>> =
        Arc::default();
    let writes = (secs * 100.0) as usize;
    let prefix = format!("w{watchers}-");
    let mut readers = Vec::new();
    let rv = {
        let list: serde_json::Value = http
            .get(format!("{base}/api/v1/namespaces/default/pods?limit=1"))
            .send()
            .await
            .expect("list")
            .json()
            .await
            .expect("json");
        list["metadata"]["resourceVersion"]
            .as_str()
            .unwrap_or("0")
            .to_string()
    };
    for _ in 0..watchers {
        let resp = http
            .get(format!("{base}/api/v1/namespaces/default/pods?watch=1&resourceVersion={rv}&labelSelector=app%3Dwatch"))
            .send()
            .await
            .expect("watch");
        let issued = issued.clone();
        readers.push(tokio::spawn(async move {
            let mut stream = resp.bytes_stream();
            let mut buf = Vec::new();
            let mut lat = Vec::with_capacity(writes);
            while lat.len() < writes {
                let Ok(Some(Ok(chunk))) =
                    tokio::time::timeout(Duration::from_secs(60), stream.next()).await
                else {
                    break;
                };
                let now = Instant::now();
                buf.extend_from_slice(&chunk);
                while let Some(pos) = buf.iter().position(|b| *b == b'\n') {
                    let line: Vec<u8> = buf.drain(..=pos).collect();
                    // A scan for the name, not a parse: with 1,000 watchers the client's parsing
                    // would otherwise be what is measured.
                    if let Some(name) = name_in(&line) {
                        if let Some(t) = issued.lock().get(name) {
                            lat.push(now.duration_since(*t));
                        }
                    }
                }
            }
            lat
        }));
    }
    let mut tick = tokio::time::interval(Duration::from_millis(10));
    for i in 0..writes {
        tick.tick().await;
        let name = format!("{prefix}{i}");
        let mut p = pod(&name);
        p["metadata"]["labels"]["app"] = json!("watch");
        issued.lock().insert(name, Instant::now());
        let http = http.clone();
        let url = format!("{base}/api/v1/namespaces/default/pods");
        tokio::spawn(async move {
            let _ = http
                .post(url)
                .header("content-type", "application/json")
                .body(p.to_string())
                .send()
                .await;
        });
    }
    let mut all = Vec::new();
    let mut complete = 0;
    for r in readers {
        let lat = r.await.expect("reader");
        if lat.len() == writes {
            complete += 1;
        }
        all.extend(lat);
    }
    all.sort_unstable();
    (percentile(&all, 0.5), percentile(&all, 0.99), complete)
}

fn mb(bytes: u64) -> String {
    format!("{:.1} MB", bytes as f64 / 1e6)
}

#[tokio::main(flavor = "multi_thread")]
async fn main() {
    let mut pods = 100_000usize;
    let mut secs = 3.0;
    let mut only: Option<String> = None;
    let mut args = std::env::args().skip(1);
    while let Some(a) = args.next() {
        match a.as_str() {
            "--pods" => pods = args.next().and_then(|v| v.parse().ok()).expect("--pods N"),
            "--seconds" => {
                secs = args
                    .next()
                    .and_then(|v| v.parse().ok())
                    .expect("--seconds S")
            }
            "--only" => only = args.next(),
            _ => {}
        }
    }
    let pod_size = pod("x").to_string().len();
    let http = reqwest::Client::new();
    let etcd = tokio::task::spawn_blocking(EtcdServer::start)
        .await
        .expect("etcd");
    let raw = etcd_client::Client::connect([etcd.endpoint()], None)
        .await
        .expect("etcd client");

    let run = |phase: &str| only.as_deref().is_none_or(|o| o == phase);
    if run("writes") {
        println!(
            "## Writes: pod creates through the API server vs raw etcd puts ({secs} s each)\n"
        );
        println!("| writers | raw etcd put/s | ceiling: raw create txn + watch with prev values ÷ raw | same, watch without prev values ÷ raw | API server on etcd create/s | ÷ raw | API server embedded create/s | ÷ raw |");
        println!("|---:|---:|---:|---:|---:|---:|---:|---:|");
        let on_etcd = Server::start(Some(&etcd.endpoint()));
        let embedded = Server::start(None);
        tokio::time::sleep(Duration::from_millis(500)).await;
        for writers in CONCURRENCY {
            let raw_rate = raw_put_rate(raw.clone(), writers, secs, 2_600).await;
            let ceiling = raw_watched_txn_rate(
                raw.clone(),
                writers,
                secs,
                2_600,
                &format!("p{writers}"),
                true,
            )
            .await;
            let ceiling_no_prev = raw_watched_txn_rate(
                raw.clone(),
                writers,
                secs,
                2_600,
                &format!("n{writers}"),
                false,
            )
            .await;
            let etcd_rate =
                create_rate(&http, &on_etcd.base, writers, secs, &format!("e{writers}")).await;
            let emb_rate =
                create_rate(&http, &embedded.base, writers, secs, &format!("m{writers}")).await;
            println!(
                "| {writers} | {raw_rate:.0} | {:.2} | {:.2} | {etcd_rate:.0} | {:.2} | {emb_rate:.0} | {:.2} |",
                ceiling / raw_rate,
                ceiling_no_prev / raw_rate,
                etcd_rate / raw_rate,
                emb_rate / raw_rate
            );
        }
        drop(on_etcd);
        drop(embedded);
    }
    if run("watch") {
        println!("\n## Watch delivery (embedded store, 100 creates/s for {secs} s)\n");
        println!("| watchers | p50 | p99 | watchers that saw every event |");
        println!("|---:|---:|---:|---:|");
        for watchers in [100, 1_000] {
            let server = Server::start(None);
            tokio::time::sleep(Duration::from_millis(300)).await;
            let (p50, p99, complete) = watch_latency(&server.base, watchers, secs).await;
            println!(
                "| {watchers} | {:.2} ms | {:.2} ms | {complete}/{watchers} |",
                p50.as_secs_f64() * 1e3,
                p99.as_secs_f64() * 1e3
            );
        }
    }
    if !run("list") {
        return;
    }
    println!("\n## LIST of {pods} pods (embedded store), pod JSON ≈ {pod_size} B as sent\n");
    let server = Server::start(None);
    tokio::time::sleep(Duration::from_millis(300)).await;
    let (idle, _) = server.rss();
    let per_writer = pods.div_ceil(64);
    let tasks = (0..64).map(|w| {
        let http = http.clone();
        let url = format!("{}/api/v1/namespaces/default/pods", server.base);
        tokio::spawn(async move {
            for n in 0..per_writer {
                let resp = http
                    .post(&url)
                    .header("content-type", "application/json")
                    .body(pod(&format!("p-{w}-{n}")).to_string())
                    .send()
                    .await
                    .expect("create");
                assert_eq!(resp.status().as_u16(), 201);
            }
        })
    });
    let load_start = Instant::now();
    futures::future::join_all(tasks).await;
    let load_secs = load_start.elapsed().as_secs_f64();
    let stored = per_writer * 64;
    let (loaded, _) = server.rss();
    server.reset_peak();
    let t = Instant::now();
    let body = http
        .get(format!("{}/api/v1/pods", server.base))
        .send()
        .await
        .expect("list")
        .bytes()
        .await
        .expect("body");
    let list_latency = t.elapsed();
    let (_, peak) = server.rss();
    let growth = peak.saturating_sub(loaded);
    println!("| pods stored | load time | LIST latency | response | RSS idle | RSS with pods | peak RSS growth during LIST | growth ÷ response |");
    println!("|---:|---:|---:|---:|---:|---:|---:|---:|");
    println!(
        "| {stored} | {load_secs:.1} s | {:.0} ms | {} | {} | {} | {} | {:.2} |",
        list_latency.as_secs_f64() * 1e3,
        mb(body.len() as u64),
        mb(idle),
        mb(loaded),
        mb(growth),
        growth as f64 / body.len() as f64
    );
}
