//! `coxswain`: thin binary over the `coxswain` library.

use std::path::PathBuf;
use std::sync::Arc;

use anyhow::Context;
use clap::{Parser, Subcommand};

/// Coxswain: a Kubernetes-compatible cluster in one binary.
#[derive(Parser, Debug)]
#[command(name = "coxswain", version, about)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// The whole cluster in this process: API server (embedded store), scheduler, controller
    /// manager, and a node agent when containerd answers.
    Up {
        #[command(flatten)]
        server: ServerArgs,
        #[command(flatten)]
        node: NodeArgs,
    },
    /// The control plane only (API server, scheduler, controller manager).
    Server {
        #[command(flatten)]
        server: ServerArgs,
    },
    /// A node agent joining a running server.
    Agent {
        /// A kubeconfig with this node's credentials (a certificate with
        /// CN=system:node:<name>, O=system:nodes from the cluster CA).
        #[arg(long)]
        kubeconfig: PathBuf,
        #[command(flatten)]
        node: NodeArgs,
    },
}

#[derive(clap::Args, Debug)]
struct ServerArgs {
    /// Where the embedded store and the admin kubeconfig live.
    #[arg(long, default_value = "/var/lib/coxswain")]
    data_dir: PathBuf,
    /// etcd endpoints (comma-separated); without them, the embedded store.
    #[arg(long, value_delimiter = ',')]
    etcd_servers: Vec<String>,
    /// The API server's port on 127.0.0.1.
    #[arg(long, default_value_t = 6443)]
    port: u16,
    /// The range Service cluster IPs are allocated from.
    #[arg(long, default_value = "10.0.0.0/24")]
    service_cluster_ip_range: String,
}

#[derive(clap::Args, Debug)]
struct NodeArgs {
    /// This node's name (default: the hostname).
    #[arg(long)]
    node_name: Option<String>,
    /// containerd's CRI socket.
    #[arg(long, default_value = "/run/coxswain/containerd/containerd.sock")]
    container_runtime_endpoint: PathBuf,
    /// OCI image tarballs to import into containerd first (e.g. the busybox and pause images
    /// deploy/images/build.sh makes).
    #[arg(long = "import-image", value_name = "TARBALL")]
    import_images: Vec<PathBuf>,
}

impl NodeArgs {
    fn options(&self) -> coxswain::AgentOptions {
        coxswain::AgentOptions {
            node_name: self
                .node_name
                .clone()
                .unwrap_or_else(node_agent::host::hostname),
            container_runtime_endpoint: self.container_runtime_endpoint.clone(),
            import_images: self.import_images.clone(),
            agent_config: None,
        }
    }
}

fn parse_cidr(s: &str) -> anyhow::Result<(std::net::Ipv4Addr, u8)> {
    let (ip, len) = s
        .split_once('/')
        .context("expected a CIDR like 10.0.0.0/24")?;
    Ok((ip.parse()?, len.parse()?))
}

fn up_config(
    server: &ServerArgs,
    agent: Option<coxswain::AgentOptions>,
) -> anyhow::Result<coxswain::UpConfig> {
    Ok(coxswain::UpConfig {
        data_dir: server.data_dir.clone(),
        etcd_servers: server.etcd_servers.clone(),
        port: server.port,
        service_cluster_ip_range: parse_cidr(&server.service_cluster_ip_range)
            .context("--service-cluster-ip-range")?,
        allocate_node_cidrs: true,
        agent,
    })
}

async fn until_signal() -> anyhow::Result<()> {
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
    tokio::select! {
        r = tokio::signal::ctrl_c() => r?,
        _ = term.recv() => {}
    }
    Ok(())
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn")),
        )
        .init();
    let progress: coxswain::Progress = Arc::new(|line: &str| println!("==> {line}"));
    match Cli::parse().command {
        Command::Up { server, node } => {
            std::fs::create_dir_all(&server.data_dir)
                .with_context(|| format!("creating {}", server.data_dir.display()))?;
            let cluster = coxswain::up(up_config(&server, Some(node.options()))?, progress).await?;
            println!(
                "==> cluster ready{}",
                cluster
                    .node
                    .as_deref()
                    .map(|n| format!(" (node {n})"))
                    .unwrap_or_default()
            );
            println!("    export KUBECONFIG={}", cluster.kubeconfig.display());
            until_signal().await?;
            println!(
                "==> stopping (running pods keep running and are re-adopted on the next start)"
            );
            cluster.stop().await;
        }
        Command::Server { server } => {
            std::fs::create_dir_all(&server.data_dir)
                .with_context(|| format!("creating {}", server.data_dir.display()))?;
            let cluster = coxswain::up(up_config(&server, None)?, progress).await?;
            println!("==> control plane ready");
            println!("    export KUBECONFIG={}", cluster.kubeconfig.display());
            until_signal().await?;
            cluster.stop().await;
        }
        Command::Agent { kubeconfig, node } => {
            let mut agent = coxswain::agent(&kubeconfig, node.options(), progress).await?;
            println!("==> node agent running");
            tokio::select! {
                _ = agent.wait() => anyhow::bail!("the node agent stopped"),
                r = until_signal() => r?,
            }
        }
    }
    Ok(())
}
