//! Scheduling throughput, shaped like upstream's scheduler_perf `SchedulingBasic`.
//!
//! Starts an API server (embedded store) in this process, creates NODES nodes like
//! scheduler_perf's `node-default` (4 CPU, 32Gi, 110 pods, Ready; status set through
//! `nodes/status`) and EXISTING pods already bound to them, then starts `cox-scheduler` as a
//! separate process (default configuration, no leader election; its RSS is its own) and
//! creates PODS pending pods like `pod-default` (100m CPU, 500Mi) from many concurrent
//! creators. Reports
//! 1. pods bound per second from the first to the last binding, observed through a watch
//!    (`spec.nodeName` set),
//! 2. the p50/p99 of the scheduler's `scheduler_scheduling_attempt_duration_seconds`
//!    (interpolated within the histogram's buckets, as Prometheus' `histogram_quantile`),
//! 3. the API create rate for the same pods in the same run: once while the scheduler binds
//!    (the creates above) and once with the scheduler stopped (PODS more pods, never
//!    scheduled), so the ratio bound/s ÷ create/s shows whether the API server is the limit,
//! 4. the scheduler's peak RSS (`VmHWM`).
//!
//! `cargo bench -p scheduler --bench throughput -- [NODES] [EXISTING] [PODS]`
//! (defaults 5000, 1000, 10000).

use std::collections::HashMap;
use std::io::{Read, Write};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use e2e::{Backend, Cluster};
use futures::{StreamExt, TryStreamExt};
use k8s_openapi::api::core::v1::{Namespace, Node, Pod};
use kube::api::{Api, Patch, PatchParams, PostParams};
use kube::runtime::watcher::{self, Event};
use kube::Client;

/// The API server in this process allocates as the `cox-apiserver` binary does: with glibc's
/// malloc, allocation was a quarter of its CPU and the measured rate was the allocator's.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// Concurrent creators (nodes, existing pods, pending pods).
const CREATORS: usize = 64;

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("free port")
}

fn http_get(port: u16, path: &str) -> Option<String> {
    let mut s = std::net::TcpStream::connect(("127.0.0.1", port)).ok()?;
    let req = format!("GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n");
    s.write_all(req.as_bytes()).ok()?;
    let mut body = String::new();
    s.read_to_string(&mut body).ok()?;
    Some(body)
}

/// The `q` quantile of `scheduler_scheduling_attempt_duration_seconds{result="scheduled"}`,
/// interpolated linearly inside the bucket as `histogram_quantile` does; and the count.
fn attempt_quantile(metrics: &str, q: f64) -> (f64, u64) {
    let mut buckets: Vec<(f64, f64)> = metrics
        .lines()
        .filter(|l| l.starts_with("scheduler_scheduling_attempt_duration_seconds_bucket{"))
        .filter(|l| l.contains("result=\"scheduled\""))
        .filter_map(|l| {
            // The last `le="`: `profile="` ends in the same letters.
            let le = l.rsplit("le=\"").next()?.split('"').next()?;
            let le = if le == "+Inf" {
                f64::INFINITY
            } else {
                le.parse().ok()?
            };
            let n = l.rsplit(' ').next()?.parse::<f64>().ok()?;
            Some((le, n))
        })
        .collect();
    buckets.sort_by(|a, b| a.0.total_cmp(&b.0));
    let total = buckets.last().map(|b| b.1).unwrap_or(0.0);
    if total == 0.0 {
        return (0.0, 0);
    }
    let rank = q * total;
    let (mut lo, mut below) = (0.0, 0.0);
    for (le, n) in &buckets {
        if *n >= rank {
            if le.is_infinite() {
                return (lo, total as u64);
            }
            let inside = n - below;
            let frac = if inside > 0.0 {
                (rank - below) / inside
            } else {
                1.0
            };
            return (lo + (le - lo) * frac, total as u64);
        }
        lo = *le;
        below = *n;
    }
    (lo, total as u64)
}

fn status_kib(pid: u32, field: &str) -> f64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix(field))
                .and_then(|v| v.split_whitespace().next()?.parse::<f64>().ok())
        })
        .unwrap_or(0.0)
}

/// Total CPU seconds (user + system) a process has used so far.
fn cpu_seconds(pid: u32) -> f64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    // Fields after the parenthesised command name; utime and stime are the 14th and 15th.
    let rest = stat.rsplit(')').next().unwrap_or("");
    let f: Vec<&str> = rest.split_whitespace().collect();
    let ticks = |i: usize| f.get(i).and_then(|v| v.parse::<f64>().ok()).unwrap_or(0.0);
    // `rest` starts at field 3 (state), so field 14 is index 11.
    (ticks(11) + ticks(12)) / 100.0
}

struct SchedulerProcess(Child);

impl Drop for SchedulerProcess {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn node_object(i: usize) -> Node {
    let name = format!("node-{i}");
    serde_json::from_value(serde_json::json!({
        "metadata": {"name": name, "labels": {"kubernetes.io/hostname": name}},
        "spec": {},
    }))
    .expect("node")
}

/// scheduler_perf's `pod-default`; `node` binds it already, `scheduler` picks who serves it.
fn pod_object(name: &str, node: Option<String>, scheduler: &str) -> Pod {
    let requests = serde_json::json!({"cpu": "100m", "memory": "500Mi"});
    let mut spec = serde_json::json!({
        "schedulerName": scheduler,
        "containers": [{
            "name": "pause",
            "image": "registry.k8s.io/pause:3.10",
            "ports": [{"containerPort": 80}],
            "resources": {"requests": requests, "limits": requests},
        }],
    });
    if let Some(n) = node {
        spec["nodeName"] = n.into();
    }
    serde_json::from_value(serde_json::json!({
        "metadata": {"name": name, "labels": {"bench": "throughput"}},
        "spec": spec,
    }))
    .expect("pod")
}

/// Creates `n` pods named `{prefix}-{i}` in `ns` with [`CREATORS`] concurrent creators;
/// returns the elapsed time.
async fn create_pods(
    client: &Client,
    ns: &str,
    prefix: &str,
    n: usize,
    node: impl Fn(usize) -> Option<String>,
    scheduler: &str,
) -> Duration {
    let api: Api<Pod> = Api::namespaced(client.clone(), ns);
    let pods: Vec<Pod> = (0..n)
        .map(|i| pod_object(&format!("{prefix}-{i}"), node(i), scheduler))
        .collect();
    let t = Instant::now();
    futures::stream::iter(pods)
        .map(|p| {
            let api = api.clone();
            async move { api.create(&PostParams::default(), &p).await }
        })
        .buffer_unordered(CREATORS)
        .try_for_each(|_| async { Ok(()) })
        .await
        .expect("pod create");
    t.elapsed()
}

#[tokio::main]
async fn main() {
    let args: Vec<String> = std::env::args()
        .skip(1)
        .filter(|a| !a.starts_with("--"))
        .collect();
    let arg = |i: usize, default: usize| -> usize {
        args.get(i).and_then(|a| a.parse().ok()).unwrap_or(default)
    };
    let (n_nodes, n_existing, n_pods) = (arg(0, 5000), arg(1, 1000), arg(2, 10_000));

    let c = Cluster::start(Backend::Embedded).await;
    let client =
        Client::try_from(kube::Config::new(c.url().parse().expect("url"))).expect("client");
    for ns in ["bench", "baseline"] {
        let obj: Namespace =
            serde_json::from_value(serde_json::json!({"metadata": {"name": ns}})).expect("ns");
        Api::<Namespace>::all(client.clone())
            .create(&PostParams::default(), &obj)
            .await
            .expect("namespace");
    }

    // Nodes, with node-default's status through nodes/status.
    let t = Instant::now();
    let node_api: Api<Node> = Api::all(client.clone());
    let status = serde_json::json!({"status": {
        "capacity": {"pods": "110", "cpu": "4", "memory": "32Gi"},
        "allocatable": {"pods": "110", "cpu": "4", "memory": "32Gi"},
        "conditions": [{"type": "Ready", "status": "True", "reason": "KubeletReady"}],
        "phase": "Running",
    }});
    futures::stream::iter(0..n_nodes)
        .map(|i| {
            let (api, status) = (node_api.clone(), status.clone());
            async move {
                let n = node_object(i);
                api.create(&PostParams::default(), &n).await?;
                api.patch_status(
                    &format!("node-{i}"),
                    &PatchParams::default(),
                    &Patch::Merge(&status),
                )
                .await
            }
        })
        .buffer_unordered(CREATORS)
        .try_for_each(|_| async { Ok(()) })
        .await
        .expect("node create");
    let nodes_elapsed = t.elapsed();

    // Existing pods, already bound round-robin.
    let existing_elapsed = create_pods(
        &client,
        "bench",
        "existing",
        n_existing,
        |i| Some(format!("node-{}", i % n_nodes.max(1))),
        "default-scheduler",
    )
    .await;

    // Observe bindings: the first time each pending pod shows a nodeName.
    let (bound_tx, mut bound_rx) = tokio::sync::mpsc::unbounded_channel::<Instant>();
    let pod_api: Api<Pod> = Api::namespaced(client.clone(), "bench");
    let watch_cfg = watcher::Config::default().labels("bench=throughput");
    let mut stream = watcher::watcher(pod_api.clone(), watch_cfg).boxed();
    let observer = tokio::spawn(async move {
        let mut seen: HashMap<String, ()> = HashMap::new();
        while let Some(ev) = stream.next().await {
            let pod = match ev {
                Ok(Event::Apply(p)) | Ok(Event::InitApply(p)) => p,
                Ok(_) => continue,
                Err(e) => {
                    eprintln!("bench watch error: {e}");
                    continue;
                }
            };
            let name = pod.metadata.name.clone().unwrap_or_default();
            let bound = pod
                .spec
                .as_ref()
                .and_then(|s| s.node_name.as_deref())
                .is_some_and(|n| !n.is_empty());
            if bound && name.starts_with("pending-") && seen.insert(name, ()).is_none() {
                let _ = bound_tx.send(Instant::now());
            }
        }
    });

    // The scheduler, as its own process.
    let port = free_port();
    let sched = SchedulerProcess(
        Command::new(env!("CARGO_BIN_EXE_cox-scheduler"))
            .args(["--master", &c.url(), "--leader-elect=false"])
            .args(["--port", &port.to_string()])
            .env("RUST_LOG", "warn")
            .stdout(Stdio::null())
            .spawn()
            .expect("start cox-scheduler"),
    );
    let pid = sched.0.id();
    // Ready once its two watches (and ours) are open.
    let deadline = Instant::now() + Duration::from_secs(120);
    while http_get(port, "/healthz").is_none() {
        assert!(Instant::now() < deadline, "scheduler did not start");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    tokio::task::block_in_place(|| {
        c.wait_for_watchers("Node", 1);
        c.wait_for_watchers("Pod", 2);
    });
    let rss_idle = status_kib(pid, "VmRSS:");
    let cpu0 = cpu_seconds(pid);
    let me = std::process::id();
    let api_cpu0 = cpu_seconds(me);
    let cpu_clock = Instant::now();

    // Pending pods, as fast as the API server takes them.
    let create_elapsed = create_pods(
        &client,
        "bench",
        "pending",
        n_pods,
        |_| None,
        "default-scheduler",
    )
    .await;

    let mut first = None;
    let mut last = None;
    let mut bound = 0;
    let deadline = Instant::now() + Duration::from_secs(1800);
    while bound < n_pods {
        let left = deadline.saturating_duration_since(Instant::now());
        match tokio::time::timeout(left, bound_rx.recv()).await {
            Ok(Some(at)) => {
                first.get_or_insert(at);
                last = Some(at);
                bound += 1;
            }
            _ => panic!("only {bound} of {n_pods} pods bound"),
        }
    }
    observer.abort();
    let (first, last) = (first.expect("a binding"), last.expect("a binding"));
    let binding_span = last.duration_since(first).as_secs_f64();
    let cpu = cpu_seconds(pid) - cpu0;
    // This process: the API server plus the bench's creators and watch (from the first
    // create, so a little wider than first→last binding).
    let api_cpu = cpu_seconds(me) - api_cpu0;
    let api_wall = cpu_clock.elapsed().as_secs_f64();
    let metrics = http_get(port, "/metrics").unwrap_or_default();
    if let Ok(path) = std::env::var("THROUGHPUT_METRICS_DUMP") {
        let _ = std::fs::write(path, &metrics);
    }
    let (p50, count) = attempt_quantile(&metrics, 0.50);
    let (p99, _) = attempt_quantile(&metrics, 0.99);
    let hwm = status_kib(pid, "VmHWM:");
    drop(sched);

    // The same creates with no scheduler running (never scheduled: no such scheduler).
    let baseline_elapsed =
        create_pods(&client, "baseline", "raw", n_pods, |_| None, "no-scheduler").await;

    let rate = |n: usize, d: Duration| n as f64 / d.as_secs_f64();
    let bound_rate = if binding_span > 0.0 {
        (n_pods.saturating_sub(1)) as f64 / binding_span
    } else {
        0.0
    };
    let created_rate = rate(n_pods, create_elapsed);
    let raw_rate = rate(n_pods, baseline_elapsed);
    println!(
        "nodes:                         {n_nodes} in {:.1} s (create + status)",
        nodes_elapsed.as_secs_f64()
    );
    println!(
        "existing pods (bound):         {n_existing} in {:.1} s ({:.0}/s)",
        existing_elapsed.as_secs_f64(),
        rate(n_existing, existing_elapsed)
    );
    println!(
        "pending pods created:          {n_pods} in {:.1} s ({created_rate:.0}/s, scheduler binding meanwhile)",
        create_elapsed.as_secs_f64()
    );
    println!(
        "pods bound:                    {n_pods}, first→last {binding_span:.1} s: {bound_rate:.0} pods/s"
    );
    println!(
        "raw pod creates, no scheduler: {n_pods} in {:.1} s ({raw_rate:.0}/s)",
        baseline_elapsed.as_secs_f64()
    );
    println!(
        "bound/s ÷ create/s:            {:.2} (same run) / {:.2} (no scheduler)",
        bound_rate / created_rate,
        bound_rate / raw_rate
    );
    println!(
        "attempt duration (scheduled):  p50 {:.1} ms, p99 {:.1} ms over {count} attempts",
        p50 * 1000.0,
        p99 * 1000.0
    );
    println!(
        "scheduler CPU:                 {cpu:.1} s ({:.0}% of one core over {api_wall:.1} s)",
        100.0 * cpu / api_wall.max(1e-9)
    );
    println!(
        "API server + bench CPU:        {api_cpu:.1} s ({:.0}% of one core over {api_wall:.1} s)",
        100.0 * api_cpu / api_wall.max(1e-9)
    );
    println!(
        "scheduler RSS:                 idle {:.0} MiB, peak (VmHWM) {:.0} MiB",
        rss_idle / 1024.0,
        hwm / 1024.0
    );
}
