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
    /// The address to serve on (any address with TLS; loopback only with --port).
    #[arg(long, default_value = "127.0.0.1")]
    bind_address: IpAddr,
    /// Serve plain HTTP on this port instead of HTTPS, every caller an administrator (the old
    /// insecure port): loopback only, for tests and benchmarks.
    #[arg(long, conflicts_with = "secure_port")]
    port: Option<u16>,
    /// The HTTPS port.
    #[arg(long, default_value_t = 6443)]
    secure_port: u16,
    /// Where generated certificates and keys live (default: <data-dir>/pki). Ignored for the
    /// serving certificate when --tls-cert-file and --tls-private-key-file are given.
    #[arg(long)]
    cert_dir: Option<PathBuf>,
    /// Extra subject alternative names (DNS names or IPs) for a generated serving certificate.
    #[arg(long, value_delimiter = ',')]
    tls_sans: Vec<String>,
    #[arg(long, requires = "tls_private_key_file")]
    tls_cert_file: Option<PathBuf>,
    #[arg(long, requires = "tls_cert_file")]
    tls_private_key_file: Option<PathBuf>,
    /// CA bundle that signs client certificates (default: the generated cluster CA).
    #[arg(long)]
    client_ca_file: Option<PathBuf>,
    /// The client certificate presented to node agents (logs, exec, attach, port-forward);
    /// default: the generated apiserver-kubelet-client certificate.
    #[arg(long, requires = "kubelet_client_key")]
    kubelet_client_certificate: Option<PathBuf>,
    #[arg(long, requires = "kubelet_client_certificate")]
    kubelet_client_key: Option<PathBuf>,
    /// CA bundle that verifies node agents' serving certificates (default: the generated
    /// cluster CA).
    #[arg(long)]
    kubelet_certificate_authority: Option<PathBuf>,
    /// Static bearer tokens: CSV lines `token,user,uid,"group1,group2"`.
    #[arg(long)]
    token_auth_file: Option<PathBuf>,
    /// Public (or private) keys that verify ServiceAccount tokens; repeatable.
    #[arg(long)]
    service_account_key_file: Vec<PathBuf>,
    /// The private key that signs ServiceAccount tokens.
    #[arg(long)]
    service_account_signing_key_file: Option<PathBuf>,
    #[arg(long, default_value = apiserver::security::DEFAULT_ISSUER)]
    service_account_issuer: String,
    /// Audiences API tokens must carry (default: the issuer).
    #[arg(long, value_delimiter = ',')]
    api_audiences: Vec<String>,
    #[arg(long, value_delimiter = ',', default_value = "Node,RBAC")]
    authorization_mode: Vec<apiserver::security::AuthorizationMode>,
    /// Let unauthenticated requests reach /healthz, /livez, /readyz and /version.
    #[arg(long, default_value_t = true, action = clap::ArgAction::Set)]
    anonymous_auth: bool,
    /// The range Service cluster IPs are allocated from.
    #[arg(long, default_value = "10.0.0.0/24")]
    service_cluster_ip_range: String,
    /// Write an admin kubeconfig here once serving (with a client certificate from the
    /// generated CA when serving HTTPS).
    #[arg(long)]
    write_kubeconfig: Option<PathBuf>,
    /// Write audit events (JSON lines, audit.k8s.io/v1) to this file.
    #[arg(long)]
    audit_log_path: Option<PathBuf>,
    /// The audit policy (audit.k8s.io/v1 Policy); default: Metadata for every request.
    #[arg(long, requires = "audit_log_path")]
    audit_policy_file: Option<PathBuf>,
    /// EncryptionConfiguration (apiserver.config.k8s.io/v1) for data at rest.
    #[arg(long)]
    encryption_provider_config: Option<PathBuf>,
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

fn read(path: &std::path::Path) -> anyhow::Result<String> {
    std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))
}

/// The secure port's configuration from flags, generating the cluster PKI under --cert-dir for
/// whatever the flags do not name. Returns the PKI when it was generated here (its CA signs
/// the admin kubeconfig's certificate).
fn security(
    args: &Args,
) -> anyhow::Result<(apiserver::security::SecurityConfig, Option<pki::ClusterPki>)> {
    let mut dns = Vec::new();
    let mut ips = Vec::new();
    if !args.bind_address.is_unspecified() {
        ips.push(args.bind_address);
    }
    for san in &args.tls_sans {
        match san.parse::<IpAddr>() {
            Ok(ip) => ips.push(ip),
            Err(_) => dns.push(san.clone()),
        }
    }
    if let Ok((net, _)) = parse_cidr(&args.service_cluster_ip_range) {
        // The `kubernetes` Service's address: pods reach the API server through it.
        let first = u32::from(net) + 1;
        ips.push(IpAddr::V4(Ipv4Addr::from(first)));
    }
    let dir = args
        .cert_dir
        .clone()
        .unwrap_or_else(|| args.data_dir.join("pki"));
    let pki = pki::ensure(
        &dir,
        &pki::PkiOptions {
            serving_dns: dns,
            serving_ips: ips,
        },
    )
    .with_context(|| format!("preparing certificates in {}", dir.display()))?;
    let (serving_cert_pem, serving_key_pem) =
        match (&args.tls_cert_file, &args.tls_private_key_file) {
            (Some(cert), Some(key)) => (read(cert)?, read(key)?),
            _ => (
                pki.apiserver.cert_pem.clone(),
                pki.apiserver.key_pem.clone(),
            ),
        };
    let client_ca_pem = match &args.client_ca_file {
        Some(path) => read(path)?,
        None => pki.ca.cert_pem().to_string(),
    };
    let service_account_public_pems = if args.service_account_key_file.is_empty() {
        vec![pki.service_account_public_pem.clone()]
    } else {
        args.service_account_key_file
            .iter()
            .map(|p| read(p))
            .collect::<anyhow::Result<_>>()?
    };
    let service_account_signing_key_pem = match &args.service_account_signing_key_file {
        Some(path) => read(path)?,
        None => pki.service_account_key_pem.clone(),
    };
    let kubelet_client = match (&args.kubelet_client_certificate, &args.kubelet_client_key) {
        (Some(cert), Some(key)) => pki::CertKey {
            cert_pem: read(cert)?,
            key_pem: read(key)?,
        },
        _ => pki.kubelet_client.clone(),
    };
    let kubelet_ca_pem = match &args.kubelet_certificate_authority {
        Some(path) => read(path)?,
        None => pki.ca.cert_pem().to_string(),
    };
    let config = apiserver::security::SecurityConfig {
        serving_cert_pem,
        serving_key_pem,
        client_ca_pem,
        token_auth_file: args.token_auth_file.clone(),
        service_account_signing_key_pem: Some(service_account_signing_key_pem),
        service_account_public_pems,
        service_account_issuer: args.service_account_issuer.clone(),
        api_audiences: args.api_audiences.clone(),
        authorization_modes: args.authorization_mode.clone(),
        anonymous_auth: args.anonymous_auth,
        mount_service_account_tokens: true,
        kubelet_client: Some(kubelet_client),
        kubelet_ca_pem: Some(kubelet_ca_pem),
    };
    Ok((config, Some(pki)))
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".into()),
        )
        .init();
    let args = Args::parse();
    let (port, security, admin) = match args.port {
        Some(port) => (port, None, None),
        None => {
            let (security, admin) = security(&args)?;
            (args.secure_port, Some(security), admin)
        }
    };
    let storage = if args.etcd_servers.is_empty() {
        StorageConfig::Embedded {
            data_dir: args.data_dir.clone(),
        }
    } else {
        StorageConfig::Etcd {
            endpoints: args.etcd_servers,
        }
    };
    let config = Config {
        storage,
        bind_address: args.bind_address,
        port,
        service_cluster_ip_range: parse_cidr(&args.service_cluster_ip_range)
            .context("--service-cluster-ip-range")?,
        write_kubeconfig: args.write_kubeconfig.clone(),
        event_ttl: std::time::Duration::from_secs(args.event_ttl_seconds),
        security,
        audit: args.audit_log_path.clone().map(|log_path| {
            apiserver::security::audit::AuditOptions {
                log_path,
                policy_file: args.audit_policy_file.clone(),
            }
        }),
        encryption_provider_config: args.encryption_provider_config.clone(),
    };
    let running = apiserver::start(config).await?;
    if let (Some(path), Some(pki)) = (&args.write_kubeconfig, &admin) {
        let host = match args.bind_address {
            a if a.is_unspecified() => "127.0.0.1".to_string(),
            IpAddr::V6(a) => format!("[{a}]"),
            a => a.to_string(),
        };
        let url = format!("https://{host}:{}", running.addr.port());
        pki.write_kubeconfig(path, &url, &pki.admin, "admin")
            .with_context(|| format!("writing {}", path.display()))?;
        tracing::info!(path = %path.display(), "wrote the admin kubeconfig");
    }
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
