//! `cox-node-agent`: a thin binary; the logic lives in the `node_agent` library.

use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use clap::Parser;
use node_agent::duration::parse_duration;
use node_agent::node::{NodeHeartbeat, Readiness, Timing, Writer};
use node_agent::simulate::{SimConfig, Simulator};
use node_agent::Metrics;

/// The node agent of Coxswain: registers this machine as a Node and heartbeats it, or
/// simulates N nodes (`--simulate N`) for scale tests.
#[derive(Parser, Debug)]
#[command(name = "cox-node-agent", version, about)]
struct Args {
    /// kubeconfig to reach the API server (default: $KUBECONFIG, ~/.kube/config, in-cluster).
    #[arg(long)]
    kubeconfig: Option<PathBuf>,
    /// API server URL; overrides the kubeconfig's server.
    #[arg(long)]
    master: Option<String>,
    /// This node's name (default: the hostname).
    #[arg(long)]
    node_name: Option<String>,
    /// This node's InternalIP (default: the source address of the default route).
    #[arg(long)]
    node_ip: Option<String>,
    /// Simulate N nodes in this process instead of running this machine's node.
    #[arg(long, value_name = "N")]
    simulate: Option<usize>,
    /// Simulated nodes are named <prefix><index>.
    #[arg(long, default_value = "sim-")]
    node_prefix: String,
    /// Simulated: from seeing a bound pod to Running (Go duration: 500ms, 2s, 1m).
    #[arg(long, default_value = "0s", value_parser = parse_duration)]
    running_delay: Duration,
    /// Simulated: from Running to Ready.
    #[arg(long, default_value = "0s", value_parser = parse_duration)]
    ready_delay: Duration,
    /// Simulated: each node's CPU capacity.
    #[arg(long, default_value = "32")]
    sim_cpu: String,
    /// Simulated: each node's memory capacity.
    #[arg(long, default_value = "256Gi")]
    sim_memory: String,
    /// Simulated: each node's pod capacity.
    #[arg(long, default_value_t = 110)]
    sim_max_pods: u32,
    /// API writes in flight at once (heartbeats and pod updates together).
    #[arg(long, default_value_t = 48)]
    max_in_flight: usize,
    /// Lease renewal period.
    #[arg(long, default_value = "10s", value_parser = parse_duration)]
    node_lease_renew_interval: Duration,
    /// Node status is written on change and at least this often.
    #[arg(long, default_value = "1m", value_parser = parse_duration)]
    node_status_report_frequency: Duration,
    /// Address for /healthz and /metrics.
    #[arg(long, default_value = "127.0.0.1")]
    bind_address: IpAddr,
    /// Port for /healthz and /metrics (kubelet's healthz port by default).
    #[arg(long, default_value_t = 10248)]
    port: u16,
}

async fn client(args: &Args) -> anyhow::Result<kube::Client> {
    let mut config = match (&args.kubeconfig, &args.master) {
        (Some(path), _) => {
            let kc = kube::config::Kubeconfig::read_from(path)
                .with_context(|| format!("reading {}", path.display()))?;
            kube::Config::from_custom_kubeconfig(kc, &kube::config::KubeConfigOptions::default())
                .await?
        }
        (None, Some(master)) => kube::Config::new(master.parse()?),
        (None, None) => kube::Config::infer().await?,
    };
    if let Some(master) = &args.master {
        config.cluster_url = master.parse()?;
    }
    Ok(kube::Client::try_from(config)?)
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .init();
    let args = Args::parse();
    let client = client(&args).await?;
    let metrics = Arc::new(Metrics::new()?);
    let (addr, _server) = node_agent::metrics::serve(
        SocketAddr::new(args.bind_address, args.port),
        metrics.clone(),
    )
    .await
    .context("starting the /healthz and /metrics listener")?;
    tracing::info!(%addr, "serving /healthz and /metrics");
    let timing = Timing {
        renew_interval: args.node_lease_renew_interval,
        status_interval: args.node_status_report_frequency,
        ..Timing::default()
    };

    if let Some(n) = args.simulate {
        let config = SimConfig {
            nodes: n,
            node_prefix: args.node_prefix.clone(),
            running_delay: args.running_delay,
            ready_delay: args.ready_delay,
            max_in_flight: args.max_in_flight,
            timing,
            cpu: args.sim_cpu.clone(),
            memory: args.sim_memory.clone(),
            max_pods: args.sim_max_pods,
            ..SimConfig::default()
        };
        let mut sim = Simulator::start(client, config, metrics).await?;
        tracing::info!(nodes = n, "simulating");
        tokio::select! {
            _ = sim.wait() => anyhow::bail!("the simulator stopped"),
            r = tokio::signal::ctrl_c() => r?,
        }
        sim.shutdown().await;
        return Ok(());
    }

    let name = args
        .node_name
        .clone()
        .unwrap_or_else(node_agent::host::hostname);
    let config = node_agent::host::host_node_config(&name, args.node_ip.clone());
    tracing::warn!(
        node = %name,
        "running real containers lands with the CRI part of issue 6: this node registers and \
         heartbeats but reports Ready=False and runs no pods"
    );
    let (_readiness_tx, readiness) = tokio::sync::watch::channel(Readiness::NotReady(
        "container runtime is not connected: the CRI client is not implemented yet".into(),
    ));
    let writer = Writer::new(client, args.max_in_flight, metrics.clone());
    let mut heartbeat = NodeHeartbeat::new(config, writer, timing, readiness);
    heartbeat.register().await?;
    metrics.nodes.set(1);
    tokio::select! {
        _ = heartbeat.run(timing.renew_interval, 0.0) => anyhow::bail!("heartbeats stopped"),
        r = tokio::signal::ctrl_c() => r?,
    }
    Ok(())
}
