//! Simulated-mode benchmark: the load many simulated nodes put on the API server, and what
//! the agent costs.
//!
//! Starts an API server (embedded store) in this process and `cox-node-agent --simulate N`
//! as a separate process (so its RSS is its own), then reports
//! 1. registration time for N nodes,
//! 2. API writes/s from heartbeats alone over a steady window (expected ≈ N/10 Lease
//!    renewals + N/60 status writes per second),
//! 3. pods/s from creation (P pods bound directly to the nodes) until all are Running,
//! 4. the agent's RSS after that.
//!
//! `cargo bench -p node-agent --bench simulate -- [NODES] [PODS] [WINDOW_SECONDS]`
//! (defaults 1000, 10000, 30).

use std::io::{Read, Write};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use e2e::{Backend, Cluster};
use futures::StreamExt;
use k8s_openapi::api::core::v1::{Node, Pod};
use kube::api::{Api, ListParams, PostParams};
use kube::Client;

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("free port")
}

fn metrics_text(port: u16) -> Option<String> {
    let mut s = std::net::TcpStream::connect(("127.0.0.1", port)).ok()?;
    s.write_all(b"GET /metrics HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        .ok()?;
    let mut body = String::new();
    s.read_to_string(&mut body).ok()?;
    Some(body)
}

fn writes_total(port: u16) -> u64 {
    metrics_text(port)
        .unwrap_or_default()
        .lines()
        .filter(|l| l.starts_with("cox_node_agent_api_writes_total{"))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum::<f64>() as u64
}

/// Lease writes so far (creations and renewals).
fn lease_writes(port: u16) -> u64 {
    metrics_text(port)
        .unwrap_or_default()
        .lines()
        .filter(|l| {
            l.starts_with("cox_node_agent_api_writes_total{") && l.contains("kind=\"lease\"")
        })
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum::<f64>() as u64
}

fn rss_mib(pid: u32) -> f64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("VmRSS:"))
                .and_then(|v| v.split_whitespace().next()?.parse::<f64>().ok())
        })
        .unwrap_or(0.0)
        / 1024.0
}

struct Agent(Child);

impl Drop for Agent {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

async fn count<K>(api: &Api<K>, lp: &ListParams) -> usize
where
    K: kube::Resource + Clone + serde::de::DeserializeOwned + std::fmt::Debug,
{
    api.list(lp).await.map(|l| l.items.len()).unwrap_or(0)
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
    let (nodes, pods, window) = (arg(0, 1000), arg(1, 10_000), arg(2, 30) as u64);

    let c = Cluster::start(Backend::Embedded).await;
    let client =
        Client::try_from(kube::Config::new(c.url().parse().expect("url"))).expect("client");
    let port = free_port();
    let started = Instant::now();
    let agent = Agent(
        Command::new(env!("CARGO_BIN_EXE_cox-node-agent"))
            .args(["--master", &c.url(), "--simulate", &nodes.to_string()])
            .args(["--healthz-port", &port.to_string()])
            .env("RUST_LOG", "warn")
            .stdout(Stdio::null())
            .spawn()
            .expect("start cox-node-agent"),
    );
    let node_api: Api<Node> = Api::all(client.clone());
    let deadline = Instant::now() + Duration::from_secs(600);
    // Nodes are all registered once the agent's pod watch has started; a node count is the
    // observable proxy.
    while count(&node_api, &ListParams::default()).await < nodes {
        assert!(Instant::now() < deadline, "nodes did not register");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let registration = started.elapsed();

    // Heartbeats only, once renewals are in their steady rhythm: every node's Lease has been
    // created and renewed at least once.
    while lease_writes(port) < 2 * nodes as u64 {
        assert!(Instant::now() < deadline, "leases were not renewed");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let w0 = writes_total(port);
    let t0 = Instant::now();
    tokio::time::sleep(Duration::from_secs(window)).await;
    let heartbeat_rate = (writes_total(port) - w0) as f64 / t0.elapsed().as_secs_f64();

    // Pods bound directly to the simulated nodes.
    let pod_api: Api<Pod> = Api::namespaced(client.clone(), "default");
    let t1 = Instant::now();
    let created: Vec<_> = futures::stream::iter(0..pods)
        .map(|i| {
            let pod_api = pod_api.clone();
            async move {
                let pod: Pod = serde_json::from_value(serde_json::json!({
                    "metadata": {"name": format!("bench-{i}")},
                    "spec": {"nodeName": format!("sim-{}", i % nodes),
                             "containers": [{"name": "c", "image": "busybox"}]}
                }))
                .expect("pod");
                pod_api.create(&PostParams::default(), &pod).await
            }
        })
        .buffer_unordered(64)
        .collect()
        .await;
    let failed = created.iter().filter(|r| r.is_err()).count();
    assert_eq!(failed, 0, "pod creation failed");
    let running = ListParams::default().fields("status.phase=Running");
    while count(&pod_api, &running).await < pods {
        assert!(
            Instant::now() < deadline + Duration::from_secs(600),
            "pods did not run"
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    let pods_elapsed = t1.elapsed();
    let rss = rss_mib(agent.0.id());

    println!("simulated nodes:            {nodes}");
    println!(
        "registration:               {:.1} s ({:.0} nodes/s)",
        registration.as_secs_f64(),
        nodes as f64 / registration.as_secs_f64()
    );
    println!(
        "heartbeat API writes/s:     {heartbeat_rate:.0} (expected ≈ {:.0})",
        nodes as f64 / 10.0 + nodes as f64 / 60.0
    );
    println!(
        "pods created → Running:     {pods} in {:.1} s ({:.0} pods/s)",
        pods_elapsed.as_secs_f64(),
        pods as f64 / pods_elapsed.as_secs_f64()
    );
    println!("agent RSS:                  {rss:.0} MiB");
}
