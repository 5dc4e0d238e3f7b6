//! `cox-node-agent`: a thin binary; the logic lives in the `node_agent` library.

use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use clap::Parser;
use node_agent::agent::AgentConfig;
use node_agent::duration::parse_duration;
use node_agent::node::Timing;
use node_agent::simulate::{SimConfig, Simulator};
use node_agent::Metrics;

/// The node agent of Coxswain: registers this machine as a Node and runs its pods on
/// containerd through CRI, or simulates N nodes (`--simulate N`) for scale tests.
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
    /// This node's InternalIP (default: --bind-address when that is loopback, otherwise the
    /// source address of the default route).
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
    /// Address for /healthz, /metrics and the streaming server.
    #[arg(long, default_value = "127.0.0.1")]
    bind_address: IpAddr,
    /// Port for /healthz and /metrics (kubelet's healthz port by default).
    #[arg(long, default_value_t = 10248)]
    healthz_port: u16,
    /// Port of the streaming server (container logs, exec, attach, port-forward) that the API
    /// server proxies to; 0 picks a free port.
    #[arg(long, default_value_t = 10250)]
    port: u16,
    /// containerd's CRI socket.
    #[arg(long, default_value = "/run/coxswain/containerd/containerd.sock")]
    container_runtime_endpoint: PathBuf,
    /// Where pod volumes live (`<root-dir>/pods/<uid>/volumes`).
    #[arg(long, default_value = "/var/lib/coxswain/agent")]
    root_dir: PathBuf,
    /// Container log files, in kubelet's layout.
    #[arg(long, default_value = "/var/log/pods")]
    pod_log_dir: PathBuf,
    /// cgroupfs parent of the pod cgroups.
    #[arg(long, default_value = "/kubepods")]
    cgroup_root: String,
    /// containerd's CNI conf_dir, where the agent writes its conflist.
    #[arg(long, default_value = "/etc/coxswain/cni/net.d")]
    cni_conf_dir: PathBuf,
    /// The bridge pods attach to.
    #[arg(long, default_value = "cox0")]
    cni_bridge: String,
    /// The pod CIDR used when the Node has no spec.podCIDR (no IPAM controller).
    #[arg(long, default_value = "10.244.0.0/24")]
    pod_cidr: String,
    /// Allow privileged containers.
    #[arg(long)]
    allow_privileged: bool,
    /// The streaming server's certificate (kubelet's flag): with it and --tls-private-key-file
    /// the port serves HTTPS and authenticates and authorizes every caller.
    #[arg(long, requires_all = ["tls_private_key_file", "client_ca_file"])]
    tls_cert_file: Option<PathBuf>,
    #[arg(long, requires = "tls_cert_file")]
    tls_private_key_file: Option<PathBuf>,
    /// The CA that signs callers' client certificates (the cluster CA).
    #[arg(long, requires = "tls_cert_file")]
    client_ca_file: Option<PathBuf>,
    /// Image garbage collection starts when the image filesystem's usage reaches this percent;
    /// 100 disables it.
    #[arg(long, default_value_t = 85, value_parser = clap::value_parser!(u8).range(0..=100))]
    image_gc_high_threshold: u8,
    /// Image garbage collection frees unused images down to this percent of usage.
    #[arg(long, default_value_t = 80, value_parser = clap::value_parser!(u8).range(0..=100))]
    image_gc_low_threshold: u8,
    /// An image this agent has known for less than this is never garbage collected.
    #[arg(long, default_value = "2m", value_parser = parse_duration)]
    minimum_image_ttl_duration: Duration,
    /// Images to import into containerd before starting (OCI tarballs), e.g. the ones
    /// `deploy/images/build.sh` builds.
    #[arg(long = "import-image", value_name = "TARBALL")]
    import_images: Vec<PathBuf>,
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
    config.headers.push((
        http::header::USER_AGENT,
        http::HeaderValue::from_str(&api_types::user_agent("kubelet"))?,
    ));
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
    let read = |p: &PathBuf| {
        std::fs::read_to_string(p).with_context(|| format!("reading {}", p.display()))
    };
    let tls = match (
        &args.tls_cert_file,
        &args.tls_private_key_file,
        &args.client_ca_file,
    ) {
        (Some(cert), Some(key), Some(ca)) => Some(node_agent::agent::AgentTls {
            serving: pki::CertKey {
                cert_pem: read(cert)?,
                key_pem: read(key)?,
            },
            client_ca_pem: read(ca)?,
        }),
        _ => None,
    };
    if tls.is_none() && args.simulate.is_none() && !args.bind_address.is_loopback() {
        anyhow::bail!(
            "refusing to serve logs and exec without authentication on {}: pass \
             --tls-cert-file, --tls-private-key-file and --client-ca-file, or bind loopback",
            args.bind_address
        );
    }
    let client = client(&args).await?;
    let metrics = Arc::new(Metrics::new()?);
    let (addr, _server) = node_agent::metrics::serve(
        SocketAddr::new(args.bind_address, args.healthz_port),
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
    for tarball in &args.import_images {
        let names = node_agent::images::import(&args.container_runtime_endpoint, tarball)
            .await
            .with_context(|| format!("importing {}", tarball.display()))?;
        tracing::info!(image = ?names, "imported");
    }
    // The API server reaches the streaming server at the node's InternalIP. Without TLS it
    // listens on loopback only, and a node without an explicit --node-ip then advertises that
    // loopback address (a one-machine cluster); with --node-ip elsewhere, logs/exec need
    // --bind-address to match.
    let node_ip = match (&args.node_ip, args.bind_address.is_loopback()) {
        (None, true) => Some(args.bind_address.to_string()),
        (Some(ip), true) if ip.parse::<IpAddr>().is_ok_and(|ip| !ip.is_loopback()) => {
            tracing::warn!(
                node_ip = %ip,
                bind_address = %args.bind_address,
                "the streaming server listens on loopback but the node advertises {ip}: the \
                 API server cannot reach it for logs, exec, attach and port-forward"
            );
            Some(ip.clone())
        }
        (ip, _) => ip.clone(),
    };
    let node = node_agent::host::host_node_config(&name, node_ip);
    let mut config = AgentConfig::new(node, args.container_runtime_endpoint.clone());
    config.layout.root_dir = args.root_dir.clone();
    config.layout.log_dir = args.pod_log_dir.clone();
    config.layout.cgroup_root = args.cgroup_root.clone();
    config.cni.conf_dir = args.cni_conf_dir.clone();
    config.cni.bridge = args.cni_bridge.clone();
    config.cni.ipam_dir = args.root_dir.join("cni");
    config.default_pod_cidr = args.pod_cidr.clone();
    config.timing = timing;
    config.max_in_flight = args.max_in_flight;
    config.allow_privileged = args.allow_privileged;
    config.server_addr = Some(SocketAddr::new(args.bind_address, args.port));
    config.tls = tls;
    config.image_gc.high_threshold_percent = args.image_gc_high_threshold;
    config.image_gc.low_threshold_percent = args.image_gc_low_threshold;
    config.image_gc.min_age = args.minimum_image_ttl_duration;
    config.image_gc.validate()?;
    let mut agent = node_agent::agent::start(client, config, metrics)
        .await
        .context("starting the node agent")?;
    tracing::info!(node = %name, streaming = ?agent.server_addr, "node agent running");
    tokio::select! {
        _ = agent.wait() => anyhow::bail!("the node agent stopped"),
        r = tokio::signal::ctrl_c() => r?,
    }
    // Containers keep running: a restarted agent re-adopts them.
    Ok(())
}
