//! `cox-apiserver`: parses kube-apiserver's flags and runs the library's server.

use std::net::{IpAddr, Ipv4Addr};
use std::path::PathBuf;

use anyhow::{bail, Context};
use apiserver::{Config, StorageConfig};
use clap::Parser;

/// The API server allocates many small JSON trees per request; glibc's allocator spent a fifth
/// of its CPU time in malloc/free in the create benchmark.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// The Coxswain API server: the Kubernetes REST API on etcd or an embedded store.
#[derive(Parser, Debug)]
#[command(name = "cox-apiserver", version, about)]
struct Args {
    /// etcd endpoints (comma-separated); without it, the embedded store under --data-dir.
    #[arg(long, value_delimiter = ',')]
    etcd_servers: Vec<String>,
    /// Where the embedded store keeps its file.
    #[arg(long, default_value = "/var/lib/coxswain")]
    data_dir: PathBuf,
    /// The address to serve on. Only loopback until authentication exists (issue 7).
    #[arg(long, default_value = "127.0.0.1")]
    bind_address: IpAddr,
    /// The port to serve plain HTTP on.
    #[arg(long, default_value_t = 6443)]
    port: u16,
    /// The TLS port. TLS lands with the security issue; setting this is refused until then.
    #[arg(long)]
    secure_port: Option<u16>,
    /// The range Service cluster IPs are allocated from.
    #[arg(long, default_value = "10.0.0.0/24")]
    service_cluster_ip_range: String,
    /// Write an admin kubeconfig here once serving.
    #[arg(long)]
    write_kubeconfig: Option<PathBuf>,
    /// How long Events are kept after their last write, in seconds.
    #[arg(long, default_value_t = 3600)]
    event_ttl_seconds: u64,
}

fn parse_cidr(s: &str) -> anyhow::Result<(Ipv4Addr, u8)> {
    let (ip, len) = s
        .split_once('/')
        .context("expected a CIDR like 10.0.0.0/24")?;
    let ip: Ipv4Addr = ip.parse().context("invalid IPv4 address")?;
    let len: u8 = len.parse().context("invalid prefix length")?;
    if !(8..=30).contains(&len) {
        bail!("the service range prefix must be between /8 and /30");
    }
    Ok((ip, len))
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".into()),
        )
        .init();
    let args = Args::parse();
    if args.secure_port.is_some() {
        bail!("--secure-port: TLS is not implemented yet (issue 7); serve plain HTTP on loopback with --port");
    }
    let storage = if args.etcd_servers.is_empty() {
        StorageConfig::Embedded {
            data_dir: args.data_dir,
        }
    } else {
        StorageConfig::Etcd {
            endpoints: args.etcd_servers,
        }
    };
    let config = Config {
        storage,
        bind_address: args.bind_address,
        port: args.port,
        service_cluster_ip_range: parse_cidr(&args.service_cluster_ip_range)
            .context("--service-cluster-ip-range")?,
        write_kubeconfig: args.write_kubeconfig,
        event_ttl: std::time::Duration::from_secs(args.event_ttl_seconds),
    };
    let running = apiserver::start(config).await?;
    let token = running.shutdown_token();
    tokio::spawn(async move {
        let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
            .expect("install SIGTERM handler");
        tokio::select! {
            _ = tokio::signal::ctrl_c() => {}
            _ = term.recv() => {}
        }
        tracing::info!("shutting down");
        token.cancel();
    });
    running.wait().await;
    Ok(())
}
