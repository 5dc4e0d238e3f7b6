//! Issue 5's benchmark: the controller manager creating and deleting pods for Deployments,
//! compared with the API server's raw pod create rate measured in the same run.
//!
//! Starts a real etcd and the API server (plain HTTP) in this process, NODES simulated nodes
//! (`node_agent::simulate`, pods Running and Ready as soon as they are bound) and the scheduler
//! (`scheduler::start`), also in this process, then `cox-controller-manager` (release build) as
//! a child process (`--leader-elect=false`, default flags otherwise) so its CPU time and RSS
//! are its own. Then:
//! 1. raw: CREATORS concurrent clients create PODS bare pods (the Deployments' pod template,
//!    unscheduled: `schedulerName` names no scheduler, so nothing else writes them), then
//!    delete them the same way;
//! 2. one Deployment of PODS replicas: pods created per second (watch: first-seen times), time
//!    to `status.availableReplicas == PODS`; then the Deployment deleted (background
//!    propagation): pods removed per second until none is left (watch: deletion events);
//! 3. DEPLOYMENTS Deployments of PODS / DEPLOYMENTS replicas each: the same figures;
//! 4. raw again, to see whether the API server slowed down over the run.
//!
//! `cargo bench -p controller-manager --bench workloads -- [NODES] [PODS] [DEPLOYMENTS]`
//! (defaults 500, 5000, 100).

use std::collections::HashSet;
use std::io::{Read, Write};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use e2e::{Backend, Cluster};
use futures::{StreamExt, TryStreamExt};
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::{Namespace, Node, Pod, ServiceAccount};
use kube::api::{Api, DeleteParams, ListParams, PostParams, PropagationPolicy};
use kube::runtime::watcher::{self, Event};
use kube::Client;
use parking_lot::Mutex;

/// The API server, scheduler and simulated nodes in this process allocate as the binaries do
/// (`cox-apiserver` and `cox-scheduler` use mimalloc).
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// Concurrent clients for the raw creates and deletes.
const CREATORS: usize = 64;
/// The namespace the Deployments live in (the raw pods have their own).
const NS: &str = "bench";

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
    let rest = stat.rsplit(')').next().unwrap_or("");
    let f: Vec<&str> = rest.split_whitespace().collect();
    let ticks = |i: usize| f.get(i).and_then(|v| v.parse::<f64>().ok()).unwrap_or(0.0);
    // `rest` starts at field 3 (state): utime and stime (fields 14, 15) are indexes 11, 12.
    (ticks(11) + ticks(12)) / 100.0
}

fn loadavg() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .map(|s| s.split_whitespace().take(3).collect::<Vec<_>>().join(" "))
        .unwrap_or_default()
}

struct ChildProcess(Child);

impl Drop for ChildProcess {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// The pod template every pod of the benchmark uses (scheduler_perf's `pod-default`).
fn pod_spec(scheduler: &str) -> serde_json::Value {
    let requests = serde_json::json!({"cpu": "100m", "memory": "500Mi"});
    serde_json::json!({
        "schedulerName": scheduler,
        "containers": [{
            "name": "pause",
            "image": "registry.k8s.io/pause:3.10",
            "ports": [{"containerPort": 80}],
            "resources": {"requests": requests, "limits": requests},
        }],
    })
}

fn deployment(name: &str, replicas: usize) -> Deployment {
    serde_json::from_value(serde_json::json!({
        "metadata": {"name": name},
        "spec": {
            "replicas": replicas,
            "selector": {"matchLabels": {"app": name}},
            "template": {
                "metadata": {"labels": {"app": name, "bench": "workloads"}},
                "spec": pod_spec("default-scheduler"),
            },
        },
    }))
    .expect("deployment")
}

/// What the pod watch on [`NS`] has seen.
#[derive(Default)]
struct Observed {
    live: HashSet<String>,
    /// When each pod was first seen, in order.
    created: Vec<Instant>,
    /// When each pod's deletion was seen, in order.
    deleted: Vec<Instant>,
}

fn observe(client: Client) -> (Arc<Mutex<Observed>>, tokio::task::JoinHandle<()>) {
    let obs = Arc::new(Mutex::new(Observed::default()));
    let o = obs.clone();
    let api: Api<Pod> = Api::namespaced(client, NS);
    let task = tokio::spawn(async move {
        let mut stream = watcher::watcher(api, watcher::Config::default()).boxed();
        while let Some(ev) = stream.next().await {
            let now = Instant::now();
            match ev {
                Ok(Event::Apply(p)) | Ok(Event::InitApply(p)) => {
                    let name = p.metadata.name.unwrap_or_default();
                    let mut o = o.lock();
                    if o.live.insert(name) {
                        o.created.push(now);
                    }
                }
                Ok(Event::Delete(p)) => {
                    let name = p.metadata.name.unwrap_or_default();
                    let mut o = o.lock();
                    if o.live.remove(&name) {
                        o.deleted.push(now);
                    }
                }
                Ok(_) => {}
                Err(e) => eprintln!("bench watch error: {e}"),
            }
        }
    });
    (obs, task)
}

/// Polls `done` every 20 ms until it holds; panics after `limit`.
async fn wait_until(what: &str, limit: Duration, mut done: impl FnMut() -> bool) -> Instant {
    let start = Instant::now();
    loop {
        if done() {
            return Instant::now();
        }
        assert!(start.elapsed() < limit, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Creates `n` bare pods in `ns` with [`CREATORS`] concurrent clients, then deletes them the
/// same way; returns (create/s, delete/s).
async fn raw(client: &Client, ns: &str, n: usize) -> (f64, f64) {
    let api: Api<Pod> = Api::namespaced(client.clone(), ns);
    let pods: Vec<Pod> = (0..n)
        .map(|i| {
            serde_json::from_value(serde_json::json!({
                "metadata": {"name": format!("raw-{i}"), "labels": {"app": "raw", "bench": "workloads"}},
                "spec": pod_spec("no-scheduler"),
            }))
            .expect("pod")
        })
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
        .expect("raw pod create");
    let create = n as f64 / t.elapsed().as_secs_f64();
    let t = Instant::now();
    futures::stream::iter(0..n)
        .map(|i| {
            let api = api.clone();
            async move {
                api.delete(&format!("raw-{i}"), &DeleteParams::default())
                    .await
            }
        })
        .buffer_unordered(CREATORS)
        .try_for_each(|_| async { Ok(()) })
        .await
        .expect("raw pod delete");
    let delete = n as f64 / t.elapsed().as_secs_f64();
    (create, delete)
}

/// One workload's figures.
struct Figures {
    label: String,
    pods: usize,
    /// From the first Deployment create call to the last pod seen.
    create_span: f64,
    /// First pod seen → last pod seen.
    create_first_last: f64,
    /// From the first Deployment create call to all Available.
    available: f64,
    /// From the first Deployment delete call to the last pod deletion seen.
    delete_span: f64,
    /// First pod deletion seen → last.
    delete_first_last: f64,
    cm_cpu: f64,
}

impl Figures {
    fn created_per_s(&self) -> f64 {
        self.pods as f64 / self.create_span
    }
    fn deleted_per_s(&self) -> f64 {
        self.pods as f64 / self.delete_span
    }
}

/// Creates `count` Deployments of `replicas` each, waits for all pods and all Available,
/// deletes them (background) and waits until no pod is left.
async fn workload(
    client: &Client,
    obs: &Arc<Mutex<Observed>>,
    cm_pid: u32,
    label: &str,
    prefix: &str,
    count: usize,
    replicas: usize,
) -> Figures {
    let pods = count * replicas;
    let api: Api<Deployment> = Api::namespaced(client.clone(), NS);
    {
        let mut o = obs.lock();
        assert!(o.live.is_empty(), "pods left over from the previous phase");
        o.created.clear();
        o.deleted.clear();
    }
    let cpu0 = cpu_seconds(cm_pid);
    let names: Vec<String> = (0..count).map(|i| format!("{prefix}-{i}")).collect();
    let t0 = Instant::now();
    futures::stream::iter(names.clone())
        .map(|n| {
            let api = api.clone();
            async move {
                api.create(&PostParams::default(), &deployment(&n, replicas))
                    .await
            }
        })
        .buffer_unordered(16)
        .try_for_each(|_| async { Ok(()) })
        .await
        .expect("create deployments");
    let limit = Duration::from_secs(1800);
    wait_until("every pod created", limit, || {
        obs.lock().created.len() >= pods
    })
    .await;
    // Available: every Deployment's status says so (polled; a list is one request).
    let target = i32::try_from(replicas).expect("replicas");
    let available_at = loop {
        let list = api
            .list(&ListParams::default())
            .await
            .expect("list deployments");
        let ready = list
            .items
            .iter()
            .filter(|d| names.contains(d.metadata.name.as_ref().expect("name")))
            .filter(|d| {
                d.status.as_ref().and_then(|s| s.available_replicas) == Some(target)
                    && d.status.as_ref().and_then(|s| s.replicas) == Some(target)
            })
            .count();
        if ready == count {
            break Instant::now();
        }
        assert!(t0.elapsed() < limit, "Deployments not Available");
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    let (create_first, create_last, n_created) = {
        let o = obs.lock();
        (
            o.created[0],
            o.created[o.created.len() - 1],
            o.created.len(),
        )
    };
    assert_eq!(n_created, pods, "more pods than replicas were created");

    let t1 = Instant::now();
    let dp = DeleteParams {
        propagation_policy: Some(PropagationPolicy::Background),
        ..Default::default()
    };
    futures::stream::iter(names.clone())
        .map(|n| {
            let (api, dp) = (api.clone(), dp.clone());
            async move { api.delete(&n, &dp).await }
        })
        .buffer_unordered(16)
        .try_for_each(|_| async { Ok(()) })
        .await
        .expect("delete deployments");
    wait_until("every pod deleted", limit, || {
        let o = obs.lock();
        o.live.is_empty() && o.deleted.len() >= pods
    })
    .await;
    let (delete_first, delete_last) = {
        let o = obs.lock();
        (o.deleted[0], o.deleted[o.deleted.len() - 1])
    };
    Figures {
        label: label.to_string(),
        pods,
        create_span: create_last.duration_since(t0).as_secs_f64(),
        create_first_last: create_last.duration_since(create_first).as_secs_f64(),
        available: available_at.duration_since(t0).as_secs_f64(),
        delete_span: delete_last.duration_since(t1).as_secs_f64(),
        delete_first_last: delete_last.duration_since(delete_first).as_secs_f64(),
        cm_cpu: cpu_seconds(cm_pid) - cpu0,
    }
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
    let (n_nodes, n_pods, n_deployments) = (arg(0, 500), arg(1, 5000), arg(2, 100));
    let load_start = loadavg();

    let c = Cluster::start(Backend::Etcd).await;
    let client =
        Client::try_from(kube::Config::new(c.url().parse().expect("url"))).expect("client");

    // Simulated nodes.
    let t = Instant::now();
    let sim = node_agent::simulate::Simulator::start(
        client.clone(),
        node_agent::simulate::SimConfig {
            nodes: n_nodes,
            node_prefix: "sim-".into(),
            // As many writes in flight as nodes: each real kubelet confirms its own pods'
            // deletions, so 500 nodes confirm 500 at once, not the simulator's default 48.
            max_in_flight: n_nodes.max(48),
            ..Default::default()
        },
        Arc::new(node_agent::metrics::Metrics::new().expect("metrics")),
    )
    .await
    .expect("simulator");
    let nodes: Api<Node> = Api::all(client.clone());
    loop {
        let ready = nodes
            .list(&ListParams::default())
            .await
            .expect("list nodes")
            .items
            .iter()
            .filter(|n| {
                n.status
                    .as_ref()
                    .and_then(|s| s.conditions.as_ref())
                    .is_some_and(|c| c.iter().any(|c| c.type_ == "Ready" && c.status == "True"))
            })
            .count();
        if ready >= n_nodes {
            break;
        }
        assert!(t.elapsed() < Duration::from_secs(300), "nodes not Ready");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let nodes_ready = t.elapsed();

    // The scheduler, in this process.
    let _sched = scheduler::start(scheduler::Config {
        client: client.clone(),
        scheduler_name: "default-scheduler".into(),
        configuration: scheduler::SchedulerConfiguration::default(),
        leader_election: None,
        health_addr: None,
        identity: "bench".into(),
        out_of_tree: Vec::new(),
    })
    .await
    .expect("scheduler");

    // The controller manager, as its own process; its log goes to the file named by
    // COX_BENCH_CM_LOG, if set (to look into a run afterwards).
    let port = free_port();
    let log = match std::env::var_os("COX_BENCH_CM_LOG") {
        Some(path) => Stdio::from(std::fs::File::create(path).expect("controller manager log")),
        None => Stdio::null(),
    };
    let cm = ChildProcess(
        Command::new(env!("CARGO_BIN_EXE_cox-controller-manager"))
            .args(["--master", &c.url(), "--leader-elect=false"])
            .args(["--port", &port.to_string()])
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("start cox-controller-manager"),
    );
    let cm_pid = cm.0.id();
    let deadline = Instant::now() + Duration::from_secs(120);
    while http_get(port, "/healthz").is_none() {
        assert!(
            Instant::now() < deadline,
            "controller manager did not start"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    for ns in [NS, "raw"] {
        let obj: Namespace =
            serde_json::from_value(serde_json::json!({"metadata": {"name": ns}})).expect("ns");
        Api::<Namespace>::all(client.clone())
            .create(&PostParams::default(), &obj)
            .await
            .expect("namespace");
        // Some admission wants the `default` ServiceAccount the controller manager makes.
        let sas: Api<ServiceAccount> = Api::namespaced(client.clone(), ns);
        let t = Instant::now();
        while sas.get_opt("default").await.ok().flatten().is_none() {
            assert!(t.elapsed() < Duration::from_secs(60), "no default SA");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
    let (obs, observer) = observe(client.clone());
    tokio::task::block_in_place(|| c.wait_for_watchers("Pod", 3));
    // Idle once its CPU time stops growing (two readings 500 ms apart, at most 30 s).
    let idle_deadline = Instant::now() + Duration::from_secs(30);
    let mut cpu = cpu_seconds(cm_pid);
    loop {
        tokio::time::sleep(Duration::from_millis(500)).await;
        let now = cpu_seconds(cm_pid);
        if now - cpu < 0.01 || Instant::now() > idle_deadline {
            break;
        }
        cpu = now;
    }
    let cm_idle_rss = status_kib(cm_pid, "VmRSS:");
    let cm_cpu_start = cpu_seconds(cm_pid);

    let (raw_create, raw_delete) = raw(&client, "raw", n_pods).await;
    eprintln!("raw: {raw_create:.0} creates/s, {raw_delete:.0} deletes/s");
    let one = workload(&client, &obs, cm_pid, "1 × 5,000", "one", 1, n_pods).await;
    eprintln!(
        "one: {:.0} created/s, {:.0} deleted/s",
        one.created_per_s(),
        one.deleted_per_s()
    );
    let many = workload(
        &client,
        &obs,
        cm_pid,
        "100 × 50",
        "many",
        n_deployments,
        n_pods / n_deployments,
    )
    .await;
    eprintln!(
        "many: {:.0} created/s, {:.0} deleted/s",
        many.created_per_s(),
        many.deleted_per_s()
    );
    let (raw_create2, raw_delete2) = raw(&client, "raw", n_pods).await;
    let cm_cpu = cpu_seconds(cm_pid) - cm_cpu_start;
    let cm_hwm = status_kib(cm_pid, "VmHWM:");
    let cm_rss = status_kib(cm_pid, "VmRSS:");
    observer.abort();
    drop(cm);
    sim.shutdown().await;
    let load_end = loadavg();

    let raw_mean = (raw_create + raw_create2) / 2.0;
    println!(
        "nodes: {n_nodes} simulated, Ready in {:.1} s",
        nodes_ready.as_secs_f64()
    );
    println!(
        "raw pod creates ({CREATORS} clients, {n_pods} unscheduled bare pods): {raw_create:.0}/s before, {raw_create2:.0}/s after (mean {raw_mean:.0}/s); deletes {raw_delete:.0}/s, {raw_delete2:.0}/s"
    );
    println!(
        "| workload | pods | created/s (create call → last pod) | first → last pod | Available | created ÷ raw create | removed/s (delete call → last removal) | first → last removal | removed ÷ created | CM CPU |"
    );
    println!("|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|");
    for f in [&one, &many] {
        println!(
            "| {} | {} | {:.0} ({:.1} s) | {:.1} s | {:.1} s | {:.2} | {:.0} ({:.1} s) | {:.1} s | {:.2} | {:.1} s |",
            f.label,
            f.pods,
            f.created_per_s(),
            f.create_span,
            f.create_first_last,
            f.available,
            f.created_per_s() / raw_mean,
            f.deleted_per_s(),
            f.delete_span,
            f.delete_first_last,
            f.deleted_per_s() / f.created_per_s(),
            f.cm_cpu,
        );
    }
    println!(
        "controller manager: CPU {cm_cpu:.1} s over the run; RSS idle {:.0} MiB, end {:.0} MiB, peak (VmHWM) {:.0} MiB",
        cm_idle_rss / 1024.0,
        cm_rss / 1024.0,
        cm_hwm / 1024.0
    );
    println!("load average (1/5/15 min): {load_start} at start, {load_end} at end");
}
