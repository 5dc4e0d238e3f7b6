//! `cox-controller-manager`: a thin binary; the logic lives in the `controller_manager` library.

use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::time::Duration;

use anyhow::Context as _;
use clap::Parser;
use controller_manager::{Concurrency, Config, NodeSettings};

#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// The controller manager of Coxswain (kube-controller-manager's flag names).
#[derive(Parser, Debug)]
#[command(name = "cox-controller-manager", version, about)]
struct Args {
    /// Path to a kubeconfig; without it, the in-cluster config or ~/.kube/config.
    #[arg(long)]
    kubeconfig: Option<PathBuf>,
    /// The API server's address; overrides the kubeconfig's.
    #[arg(long)]
    master: Option<String>,
    /// Controllers to run: `*` is every default one, `name` enables, `-name` disables.
    #[arg(long, value_delimiter = ',', default_value = "*")]
    controllers: Vec<String>,
    /// Leader election on the `kube-system/kube-controller-manager` Lease: a standby waits and
    /// takes over when the leader stops renewing.
    #[arg(long, default_value_t = true, action = clap::ArgAction::Set, num_args = 0..=1, default_missing_value = "true")]
    leader_elect: bool,
    /// ReplicaSets reconciled at once.
    #[arg(long, default_value_t = 5)]
    concurrent_replicaset_syncs: u16,
    /// Deployments reconciled at once.
    #[arg(long, default_value_t = 5)]
    concurrent_deployment_syncs: u16,
    /// Namespaces reconciled at once.
    #[arg(long, default_value_t = 10)]
    concurrent_namespace_syncs: u16,
    /// Namespaces checked for a default ServiceAccount at once.
    #[arg(long, default_value_t = 5)]
    concurrent_serviceaccount_syncs: u16,
    /// Jobs reconciled at once.
    #[arg(long, default_value_t = 5)]
    concurrent_job_syncs: u16,
    /// CronJobs reconciled at once.
    #[arg(long, default_value_t = 5)]
    concurrent_cron_job_syncs: u16,
    /// Finished pods kept before the oldest are deleted (0 keeps all).
    #[arg(long, default_value_t = 12500)]
    terminated_pod_gc_threshold: usize,
    /// How often node health is checked (a Go duration: `5s`, `1m`).
    #[arg(long, default_value = "5s", value_parser = duration)]
    node_monitor_period: Duration,
    /// How long a node may go without heartbeats before it is marked Unknown.
    #[arg(long, default_value = "40s", value_parser = duration)]
    node_monitor_grace_period: Duration,
    /// The same for a node that never posted a Ready condition.
    #[arg(long, default_value = "60s", value_parser = duration)]
    node_startup_grace_period: Duration,
    /// Seconds a pod without a not-ready toleration stays on a not-ready node (upstream sets
    /// this on the API server's DefaultTolerationSeconds admission; applied here instead).
    #[arg(long, default_value_t = 300)]
    default_not_ready_toleration_seconds: i64,
    /// Seconds a pod without an unreachable toleration stays on an unreachable node.
    #[arg(long, default_value_t = 300)]
    default_unreachable_toleration_seconds: i64,
    /// Give each node a pod CIDR out of --cluster-cidr.
    #[arg(long, default_value_t = true, action = clap::ArgAction::Set, num_args = 0..=1, default_missing_value = "true")]
    allocate_node_cidrs: bool,
    /// The pod network nodes' CIDRs are cut from (one IPv4 CIDR).
    #[arg(long, default_value = "10.244.0.0/16")]
    cluster_cidr: String,
    /// The prefix length of each node's pod CIDR.
    #[arg(long, default_value_t = 24)]
    node_cidr_mask_size: u8,
    /// The cluster CA bundle (PEM) the root-ca-cert-publisher puts in every namespace's
    /// `kube-root-ca.crt` ConfigMap; without it that controller is idle.
    #[arg(long)]
    root_ca_file: Option<PathBuf>,
    /// The CA certificate (PEM) csrsigning issues client certificates with; with
    /// --cluster-signing-key-file. Without them csrsigning is idle.
    #[arg(long, requires = "cluster_signing_key_file")]
    cluster_signing_cert_file: Option<PathBuf>,
    /// The CA private key (PEM) for --cluster-signing-cert-file.
    #[arg(long, requires = "cluster_signing_cert_file")]
    cluster_signing_key_file: Option<PathBuf>,
    /// The longest validity of a signed certificate.
    #[arg(long, value_parser = duration, default_value = "8760h")]
    cluster_signing_duration: Duration,
    /// Address for /healthz and /metrics.
    #[arg(long, default_value = "127.0.0.1")]
    bind_address: IpAddr,
    /// Port for /healthz and /metrics (upstream's secure port is 10257; this is plain HTTP).
    #[arg(long, default_value_t = 10257)]
    port: u16,
}

/// Parses a Go-style duration as kube-controller-manager's flags take them: a whole number
/// with `ms`, `s`, `m` or `h` (`40s`, `5m`), or bare seconds.
fn duration(s: &str) -> Result<Duration, String> {
    let s = s.trim();
    let split = s.find(|c: char| !c.is_ascii_digit()).unwrap_or(s.len());
    let (n, unit) = s.split_at(split);
    let n: u64 = n.parse().map_err(|_| format!("bad duration {s:?}"))?;
    match unit {
        "ms" => Ok(Duration::from_millis(n)),
        "" | "s" => Ok(Duration::from_secs(n)),
        "m" => Ok(Duration::from_secs(n * 60)),
        "h" => Ok(Duration::from_secs(n * 3600)),
        _ => Err(format!("bad duration {s:?} (use ms, s, m or h)")),
    }
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
    let mut kube_config = match &args.kubeconfig {
        Some(path) => {
            let kc = kube::config::Kubeconfig::read_from(path)
                .with_context(|| format!("reading {}", path.display()))?;
            kube::Config::from_custom_kubeconfig(kc, &kube::config::KubeConfigOptions::default())
                .await?
        }
        None => match &args.master {
            Some(m) => kube::Config::new(m.parse().context("--master")?),
            None => kube::Config::infer().await?,
        },
    };
    if let Some(m) = &args.master {
        kube_config.cluster_url = m.parse().context("--master")?;
    }
    let root_ca_pem = match &args.root_ca_file {
        Some(path) => Some(
            std::fs::read_to_string(path)
                .with_context(|| format!("reading --root-ca-file {}", path.display()))?,
        ),
        None => None,
    };
    let cluster_signing = match (
        &args.cluster_signing_cert_file,
        &args.cluster_signing_key_file,
    ) {
        (Some(cert), Some(key)) => {
            let read = |path: &PathBuf, flag: &str| {
                std::fs::read_to_string(path)
                    .with_context(|| format!("reading {flag} {}", path.display()))
            };
            Some(
                controller_manager::controllers::certificates::ClusterSigning {
                    cert_pem: read(cert, "--cluster-signing-cert-file")?,
                    key_pem: read(key, "--cluster-signing-key-file")?,
                    duration: args.cluster_signing_duration,
                },
            )
        }
        _ => None,
    };
    kube_config.headers.push((
        http::header::USER_AGENT,
        http::HeaderValue::from_str(&api_types::user_agent("kube-controller-manager"))?,
    ));
    let client = kube::Client::try_from(kube_config)?;
    let leader_client = client.clone();
    let config = Config {
        client,
        controllers: args.controllers,
        concurrency: Concurrency {
            replicaset: args.concurrent_replicaset_syncs,
            deployment: args.concurrent_deployment_syncs,
            namespace: args.concurrent_namespace_syncs,
            serviceaccount: args.concurrent_serviceaccount_syncs,
            job: args.concurrent_job_syncs,
            cronjob: args.concurrent_cron_job_syncs,
        },
        serve: Some(SocketAddr::new(args.bind_address, args.port)),
        terminated_pod_gc_threshold: args.terminated_pod_gc_threshold,
        nodes: NodeSettings {
            monitor_period: args.node_monitor_period,
            monitor_grace_period: args.node_monitor_grace_period,
            startup_grace_period: args.node_startup_grace_period,
            default_not_ready_toleration_seconds: args.default_not_ready_toleration_seconds,
            default_unreachable_toleration_seconds: args.default_unreachable_toleration_seconds,
            allocate_node_cidrs: args.allocate_node_cidrs,
            cluster_cidr: args.cluster_cidr,
            node_cidr_mask_size: args.node_cidr_mask_size,
        },
        clock: std::sync::Arc::new(controller_manager::controllers::cronjob::SystemClock),
        root_ca_pem,
        cluster_signing,
    };
    let shutdown = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    let work = controller_manager::run(config, shutdown, |_| {});
    if !args.leader_elect {
        work.await?;
        return Ok(());
    }
    let host = std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|h| h.trim().to_string())
        .unwrap_or_else(|_| "cox-controller-manager".into());
    let identity = format!("{host}_{}", std::process::id());
    let elector = leader_election::LeaderElector::new(
        leader_client,
        leader_election::LeaderElectionConfig::new("kube-controller-manager", &identity),
    );
    let mut outcome = None;
    elector
        .run(async {
            outcome = Some(work.await);
        })
        .await;
    match outcome {
        Some(result) => Ok(result?),
        // As kube-controller-manager: a leader that lost its lease exits, and is restarted as
        // a standby.
        None => anyhow::bail!("leader election lost"),
    }
}
