//! `cox-scheduler`: a thin binary; the logic lives in the `scheduler` library.

use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;

use anyhow::Context;
use clap::Parser;

#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// The Coxswain scheduler: places pending pods on nodes through the API server.
#[derive(Parser, Debug)]
#[command(name = "cox-scheduler", version, about)]
struct Args {
    /// Path to a kubeconfig file (default: $KUBECONFIG, ~/.kube/config, in-cluster).
    #[arg(long)]
    kubeconfig: Option<PathBuf>,
    /// The API server URL; overrides the kubeconfig's server.
    #[arg(long)]
    master: Option<String>,
    /// The schedulerName this scheduler serves when the config names none.
    #[arg(long, default_value = "default-scheduler")]
    scheduler_name: String,
    /// A KubeSchedulerConfiguration YAML file (profiles, plugins, weights,
    /// percentageOfNodesToScore).
    #[arg(long)]
    config: Option<PathBuf>,
    /// Hold the kube-system/kube-scheduler Lease before scheduling.
    #[arg(long, default_value_t = true, action = clap::ArgAction::Set)]
    leader_elect: bool,
    /// The lease name (kube-system namespace).
    #[arg(long, default_value = "kube-scheduler")]
    leader_elect_resource_name: String,
    /// Address for /healthz and /metrics.
    #[arg(long, default_value = "127.0.0.1")]
    bind_address: IpAddr,
    /// Port for /healthz and /metrics; 0 disables them.
    #[arg(long, default_value_t = 10259)]
    port: u16,
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
    let configuration = match &args.config {
        Some(path) => {
            let text = std::fs::read_to_string(path)
                .with_context(|| format!("reading {}", path.display()))?;
            scheduler::SchedulerConfiguration::parse(&text)?
        }
        None => scheduler::SchedulerConfiguration::default(),
    };
    let client = scheduler::client_from(args.kubeconfig.as_deref(), args.master.as_deref()).await?;
    let host = hostname();
    let identity = format!("{host}_{}", std::process::id());
    let config = scheduler::Config {
        client,
        scheduler_name: args.scheduler_name,
        configuration,
        leader_election: args.leader_elect.then(|| {
            scheduler::LeaderElectionConfig::new(&args.leader_elect_resource_name, &identity)
        }),
        health_addr: (args.port != 0).then(|| SocketAddr::new(args.bind_address, args.port)),
        identity,
        out_of_tree: Vec::new(),
    };
    let mut running = scheduler::start(config).await?;
    let interrupted = tokio::select! {
        r = running.wait() => {
            r.context("scheduler stopped")?;
            false
        }
        r = tokio::signal::ctrl_c() => {
            r.context("waiting for ctrl-c")?;
            true
        }
    };
    if interrupted {
        // Release the lease so a standby replica takes over at once.
        running.stop().await;
    }
    Ok(())
}

fn hostname() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|h| h.trim().to_string())
        .unwrap_or_else(|_| "cox-scheduler".into())
}
