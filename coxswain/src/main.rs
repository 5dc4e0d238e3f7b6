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
    /// A node agent joining a running server: with --kubeconfig (a node certificate), or with
    /// a bootstrap token (--token, --server, --ca-cert), requesting its certificate first.
    Agent {
        /// A kubeconfig with this node's credentials (a certificate with
        /// CN=system:node:<name>, O=system:nodes from the cluster CA).
        #[arg(long, required_unless_present = "token", conflicts_with = "token")]
        kubeconfig: Option<PathBuf>,
        /// A bootstrap token (`<id>.<secret>`, from `coxswain token create`).
        #[arg(long, requires_all = ["server", "ca_cert"])]
        token: Option<String>,
        /// The API server, https://HOST:PORT (with --token).
        #[arg(long)]
        server: Option<String>,
        /// The cluster CA certificate (PEM) the API server is verified with (with --token).
        #[arg(long)]
        ca_cert: Option<PathBuf>,
        /// Where the node's client certificate, key and kubeconfig are kept (with --token;
        /// default <data-dir>/pki-agent).
        #[arg(long)]
        cert_dir: Option<PathBuf>,
        /// The agent's state directory.
        #[arg(long, default_value = "/var/lib/coxswain")]
        data_dir: PathBuf,
        /// How long to wait for the certificate to be approved and signed (seconds).
        #[arg(long, default_value_t = 300)]
        bootstrap_timeout_seconds: u64,
        /// Renew the client certificate before it expires (with --token; kubelet's flag).
        #[arg(long, default_value_t = true, action = clap::ArgAction::Set)]
        rotate_certificates: bool,
        #[command(flatten)]
        node: NodeArgs,
    },
    /// Bootstrap tokens, as `kubeadm token`.
    Token {
        #[command(subcommand)]
        command: TokenCommand,
    },
    /// Writes a kubeconfig for a component from the cluster PKI (as `kubeadm kubeconfig
    /// user`): admin, scheduler, controller-manager or node:<name>.
    Kubeconfig {
        /// The PKI directory (`cox-apiserver --cert-dir`, `<data-dir>/pki` by default).
        #[arg(long, default_value = "/var/lib/coxswain/pki")]
        cert_dir: PathBuf,
        /// The API server URL the kubeconfig points at.
        #[arg(long, default_value = "https://127.0.0.1:6443")]
        server: String,
        /// Whose credentials: admin, scheduler, controller-manager or node:<name>.
        #[arg(long = "for", value_name = "WHO")]
        who: String,
        /// Write here (mode 0600) instead of standard output.
        #[arg(long, short)]
        output: Option<PathBuf>,
    },
}

#[derive(Subcommand, Debug)]
enum TokenCommand {
    /// Creates a bootstrap token and prints it (`<id>.<secret>`).
    Create {
        /// An administrator's kubeconfig.
        #[arg(long, default_value = "/var/lib/coxswain/kubeconfig")]
        kubeconfig: PathBuf,
        /// How long the token is valid (`24h`, `30m`; `0` never expires).
        #[arg(long, default_value = "24h", value_parser = coxswain::bootstrap::parse_ttl)]
        ttl: std::time::Duration,
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
    /// How long the node client certificates csrsigning issues are valid (Go duration, as
    /// kube-controller-manager's flag); nodes renew them at 70–90 % of their lifetime.
    #[arg(long, default_value = "8760h", value_parser = node_agent::duration::parse_duration)]
    cluster_signing_duration: std::time::Duration,
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
            let cluster = coxswain::up_with_signing_duration(
                up_config(&server, Some(node.options()))?,
                server.cluster_signing_duration,
                progress,
            )
            .await?;
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
            let cluster = coxswain::up_with_signing_duration(
                up_config(&server, None)?,
                server.cluster_signing_duration,
                progress,
            )
            .await?;
            println!("==> control plane ready");
            println!("    export KUBECONFIG={}", cluster.kubeconfig.display());
            until_signal().await?;
            cluster.stop().await;
        }
        Command::Agent {
            kubeconfig,
            token,
            server,
            ca_cert,
            cert_dir,
            data_dir,
            bootstrap_timeout_seconds,
            rotate_certificates,
            node,
        } => {
            let opts = node.options();
            let mut plain;
            // With the task renewing the node's certificate, which lives as long as this.
            let mut bootstrapped;
            let agent: &mut node_agent::agent::Agent = match (kubeconfig, token, server, ca_cert) {
                (Some(kubeconfig), _, _, _) => {
                    plain = coxswain::agent(&kubeconfig, opts, progress).await?;
                    &mut plain
                }
                (None, Some(token), Some(server), Some(ca_cert)) => {
                    let ca_pem = std::fs::read_to_string(&ca_cert)
                        .with_context(|| format!("reading --ca-cert {}", ca_cert.display()))?;
                    let config = coxswain::BootstrapConfig {
                        server,
                        token,
                        ca_pem,
                        cert_dir: cert_dir.unwrap_or_else(|| data_dir.join("pki-agent")),
                        node_name: opts.node_name.clone(),
                        timeout: std::time::Duration::from_secs(bootstrap_timeout_seconds),
                        rotate_certificates,
                    };
                    bootstrapped = coxswain::agent_bootstrap(config, opts, progress).await?;
                    &mut bootstrapped.agent
                }
                _ => anyhow::bail!("give --kubeconfig, or --token with --server and --ca-cert"),
            };
            println!("==> node agent running");
            tokio::select! {
                _ = agent.wait() => anyhow::bail!("the node agent stopped"),
                r = until_signal() => r?,
            }
        }
        Command::Kubeconfig {
            cert_dir,
            server,
            who,
            output,
        } => {
            // Never mint a new CA here: a kubeconfig from the wrong one would be useless.
            if !cert_dir.join("ca.crt").exists() || !cert_dir.join("ca.key").exists() {
                anyhow::bail!(
                    "no cluster CA in {} (start cox-apiserver or coxswain once to create it)",
                    cert_dir.display()
                );
            }
            let pki = pki::ensure(&cert_dir, &pki::PkiOptions::default())
                .with_context(|| format!("the PKI in {}", cert_dir.display()))?;
            let node_cert;
            let (cert, user) = match who.as_str() {
                "admin" => (&pki.admin, "admin".to_string()),
                "scheduler" => (&pki.scheduler, "system:kube-scheduler".to_string()),
                "controller-manager" => (
                    &pki.controller_manager,
                    "system:kube-controller-manager".to_string(),
                ),
                other => match other.strip_prefix("node:") {
                    Some(node) if !node.is_empty() => {
                        node_cert = pki.node_client(node)?;
                        (&node_cert, format!("system:node:{node}"))
                    }
                    _ => anyhow::bail!(
                        "--for: want admin, scheduler, controller-manager or node:<name>, got {other:?}"
                    ),
                },
            };
            match output {
                Some(path) => pki.write_kubeconfig(&path, &server, cert, &user)?,
                None => print!(
                    "{}",
                    pki::kubeconfig(
                        &server,
                        pki.ca.cert_pem(),
                        &user,
                        pki::Credentials::ClientCert(cert)
                    )
                ),
            }
        }
        Command::Token {
            command: TokenCommand::Create { kubeconfig, ttl },
        } => {
            let yaml = std::fs::read_to_string(&kubeconfig)
                .with_context(|| format!("reading {}", kubeconfig.display()))?;
            let client = coxswain::client_from_kubeconfig(&yaml).await?;
            println!(
                "{}",
                coxswain::create_bootstrap_token(client, Some(ttl)).await?
            );
        }
    }
    Ok(())
}
