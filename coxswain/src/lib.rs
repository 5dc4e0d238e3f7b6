//! `coxswain`: every component in one process, as k3s does — the API server (embedded store or
//! etcd), the scheduler, the controller manager and, when containerd answers, a node agent.
//! The per-component binaries stay; all of them run the same library `start`/`run`
//! functions, so this crate is only wiring.

use std::net::{IpAddr, Ipv4Addr};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use tokio::task::JoinHandle;

pub mod bootstrap;
pub mod rotation;
pub use bootstrap::{agent_bootstrap, create_bootstrap_token, BootstrapConfig, BootstrappedAgent};

/// Why a component could not start.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("API server: {0}")]
    ApiServer(#[from] apiserver::StartError),
    #[error("scheduler: {0}")]
    Scheduler(#[from] scheduler::Error),
    #[error("node agent: {0}")]
    NodeAgent(#[from] node_agent::Error),
    #[error("API client: {0}")]
    Client(String),
    #[error("certificates: {0}")]
    Pki(#[from] pki::Error),
    #[error("TLS bootstrap: {0}")]
    Bootstrap(String),
    #[error("client certificate rotation: {0}")]
    Rotation(String),
}

/// What `coxswain up` / `coxswain server` run.
#[derive(Clone, Debug)]
pub struct UpConfig {
    /// Embedded store and kubeconfig live here.
    pub data_dir: PathBuf,
    /// etcd endpoints; empty uses the embedded store.
    pub etcd_servers: Vec<String>,
    /// The API server's port on 127.0.0.1 (0 picks one).
    pub port: u16,
    pub service_cluster_ip_range: (Ipv4Addr, u8),
    /// Whether the controller manager hands each Node a podCIDR (node IPAM). Tests that give
    /// each private containerd its own CIDR turn it off, or every test node would get the
    /// same first block and their bridges would share a subnet on the host.
    pub allocate_node_cidrs: bool,
    /// `None` runs the control plane only (`coxswain server`).
    pub agent: Option<AgentOptions>,
}

/// The node agent part of `up` and `coxswain agent`.
#[derive(Clone, Debug)]
pub struct AgentOptions {
    pub node_name: String,
    pub container_runtime_endpoint: PathBuf,
    /// OCI tarballs imported into containerd first (the local busybox and pause images).
    pub import_images: Vec<PathBuf>,
    /// The full agent configuration, when the defaults (production paths, loopback streaming
    /// port 10250) do not fit: tests point it at a private containerd.
    pub agent_config: Option<node_agent::agent::AgentConfig>,
}

/// A running cluster; dropping it stops every component (pods keep running).
pub struct Up {
    /// `https://127.0.0.1:<port>`.
    pub url: String,
    /// The admin kubeconfig (client certificate in `system:masters`).
    pub kubeconfig: PathBuf,
    /// The cluster's certificates (under `<data-dir>/pki`).
    pub pki: pki::ClusterPki,
    /// Whether a node agent runs (containerd answered).
    pub node: Option<String>,
    apiserver: Option<apiserver::Running>,
    scheduler: Option<scheduler::Running>,
    controller_manager: JoinHandle<()>,
    /// Ends the controller manager's `run` (its shutdown future).
    cm_shutdown: Option<tokio::sync::oneshot::Sender<()>>,
    _agent: Option<node_agent::agent::Agent>,
}

impl Up {
    /// Stops every component; the API server last, after in-flight requests.
    pub async fn stop(mut self) {
        if let Some(tx) = self.cm_shutdown.take() {
            let _ = tx.send(());
        }
        let cm = &mut self.controller_manager;
        if tokio::time::timeout(Duration::from_secs(10), cm)
            .await
            .is_err()
        {
            self.controller_manager.abort();
        }
        self._agent.take();
        // Clients first, so none is left retrying against a closed API server.
        if let Some(s) = self.scheduler.take() {
            s.stop().await;
        }
        if let Some(a) = self.apiserver.take() {
            a.stop().await;
        }
    }
}

impl Drop for Up {
    fn drop(&mut self) {
        self.controller_manager.abort();
        if let Some(a) = &self.apiserver {
            a.shutdown_token().cancel();
        }
    }
}

/// A progress line for the user (`coxswain up` prints them; tests ignore them).
pub type Progress = Arc<dyn Fn(&str) + Send + Sync>;

/// A client from a kubeconfig held in memory.
pub async fn client_from_kubeconfig(yaml: &str) -> Result<kube::Client, Error> {
    component_client(yaml, None).await
}

/// A client from a kubeconfig held in memory that introduces itself as `component`
/// (`kube-scheduler`, `kubelet`, …: see [`api_types::user_agent`]).
pub(crate) async fn component_client(
    yaml: &str,
    component: Option<&str>,
) -> Result<kube::Client, Error> {
    let kc = kube::config::Kubeconfig::from_yaml(yaml).map_err(|e| Error::Client(e.to_string()))?;
    let mut config = kube::Config::from_custom_kubeconfig(kc, &Default::default())
        .await
        .map_err(|e| Error::Client(e.to_string()))?;
    if let Some(component) = component {
        let agent = http::HeaderValue::from_str(&api_types::user_agent(component))
            .map_err(|e| Error::Client(e.to_string()))?;
        config.headers.push((http::header::USER_AGENT, agent));
    }
    kube::Client::try_from(config).map_err(|e| Error::Client(e.to_string()))
}

/// A client for `url` authenticating as `who` (a certificate from the cluster CA).
async fn client_as(
    pki: &pki::ClusterPki,
    url: &str,
    who: &pki::CertKey,
    user: &str,
) -> Result<kube::Client, Error> {
    let yaml = pki::kubeconfig(
        url,
        pki.ca.cert_pem(),
        user,
        pki::Credentials::ClientCert(who),
    );
    let component = match user {
        "system:kube-scheduler" => "kube-scheduler",
        "system:kube-controller-manager" => "kube-controller-manager",
        u if u.starts_with("system:node:") => "kubelet",
        _ => "coxswain",
    };
    component_client(&yaml, Some(component)).await
}

/// Starts the API server, the scheduler, the controller manager and (if configured and
/// containerd answers) a node agent, reporting each step through `progress`.
pub async fn up(config: UpConfig, progress: Progress) -> Result<Up, Error> {
    up_with_signing_duration(
        config,
        controller_manager::controllers::certificates::DEFAULT_SIGNING_DURATION,
        progress,
    )
    .await
}

/// [`up`] with csrsigning issuing certificates for `cluster_signing_duration`
/// (kube-controller-manager's `--cluster-signing-duration`): tests of certificate rotation
/// want short-lived node certificates.
pub async fn up_with_signing_duration(
    config: UpConfig,
    cluster_signing_duration: Duration,
    progress: Progress,
) -> Result<Up, Error> {
    let storage = if config.etcd_servers.is_empty() {
        apiserver::StorageConfig::Embedded {
            data_dir: config.data_dir.clone(),
        }
    } else {
        apiserver::StorageConfig::Etcd {
            endpoints: config.etcd_servers.clone(),
        }
    };
    let kubeconfig = config.data_dir.join("kubeconfig");
    let (net, _) = config.service_cluster_ip_range;
    let pki = pki::ensure(
        &config.data_dir.join("pki"),
        &pki::PkiOptions {
            serving_dns: Vec::new(),
            // The `kubernetes` Service's address, which pods use to reach the API server.
            serving_ips: vec![IpAddr::V4(Ipv4Addr::from(u32::from(net) + 1))],
        },
    )?;
    progress("starting the API server");
    let running = apiserver::start(apiserver::Config {
        storage,
        bind_address: IpAddr::V4(Ipv4Addr::LOCALHOST),
        port: config.port,
        service_cluster_ip_range: config.service_cluster_ip_range,
        write_kubeconfig: None,
        event_ttl: Duration::from_secs(3600),
        security: Some(apiserver::security::SecurityConfig::from_pki(&pki)),
        audit: None,
        encryption_provider_config: None,
    })
    .await?;
    let url = format!("https://{}", running.addr);
    pki.write_kubeconfig(&kubeconfig, &url, &pki.admin, "admin")?;
    progress(&format!("API server ready at {url}"));
    let client = client_as(&pki, &url, &pki.scheduler, "system:kube-scheduler").await?;

    progress("starting the scheduler");
    let sched = scheduler::start(scheduler::Config {
        client: client.clone(),
        scheduler_name: "default-scheduler".into(),
        configuration: scheduler::SchedulerConfiguration::default(),
        // One process holds every component: nothing to elect between.
        leader_election: None,
        health_addr: None,
        identity: "coxswain".into(),
        out_of_tree: Vec::new(),
    })
    .await?;
    progress("starting the controller manager");
    let cm_client = client_as(
        &pki,
        &url,
        &pki.controller_manager,
        "system:kube-controller-manager",
    )
    .await?;
    let (cm_shutdown, cm_stop) = tokio::sync::oneshot::channel::<()>();
    let allocate_node_cidrs = config.allocate_node_cidrs;
    let root_ca_pem = pki.ca.cert_pem().to_string();
    // csrsigning issues node client certificates (TLS bootstrap) with the cluster CA.
    let signing = controller_manager::controllers::certificates::ClusterSigning {
        cert_pem: pki.ca.cert_pem().to_string(),
        key_pem: pki.ca.key_pem().to_string(),
        duration: cluster_signing_duration,
    };
    let controller_manager = tokio::spawn(async move {
        let mut config = controller_manager::Config::new(cm_client);
        config.nodes.allocate_node_cidrs = allocate_node_cidrs;
        config.root_ca_pem = Some(root_ca_pem);
        config.cluster_signing = Some(signing);
        let stop = async {
            let _ = cm_stop.await;
        };
        if let Err(e) = controller_manager::run(config, stop, |_| {}).await {
            tracing::error!(error = %e, "the controller manager stopped");
        }
    });

    let mut agent = None;
    let mut node = None;
    if let Some(opts) = config.agent {
        let node_cert = pki.node_client(&opts.node_name)?;
        let node_user = format!("system:node:{}", opts.node_name);
        let client = client_as(&pki, &url, &node_cert, &node_user).await?;
        match start_agent(client, &opts, &progress, Some(&pki)).await {
            Ok(a) => {
                node = Some(opts.node_name.clone());
                agent = Some(a);
            }
            Err(AgentStart::Unreachable(e)) => progress(&format!(
                "containerd is not reachable at {} ({e}): running the control plane without a \
                 node. Start containerd with deploy/containerd/config.toml \
                 (`containerd --config deploy/containerd/config.toml`) and run `coxswain up` again, \
                 or join a node with `coxswain agent`.",
                opts.container_runtime_endpoint.display()
            )),
            Err(AgentStart::Failed(e)) => return Err(e.into()),
        }
    }
    Ok(Up {
        url,
        kubeconfig,
        pki,
        node,
        apiserver: Some(running),
        scheduler: Some(sched),
        controller_manager,
        cm_shutdown: Some(cm_shutdown),
        _agent: agent,
    })
}

enum AgentStart {
    /// The runtime socket does not answer: `up` goes on without a node.
    Unreachable(String),
    Failed(node_agent::Error),
}

/// Starts the node agent. With `pki` (in `up`, which holds the cluster's keys) its streaming
/// port serves HTTPS with a node serving certificate for the node's address and loopback,
/// and accepts the cluster CA's client certificates (the API server's kubelet client
/// certificate among them), unless the given agent configuration already has TLS.
async fn start_agent(
    client: kube::Client,
    opts: &AgentOptions,
    progress: &Progress,
    pki: Option<&pki::ClusterPki>,
) -> Result<node_agent::agent::Agent, AgentStart> {
    let socket = &opts.container_runtime_endpoint;
    let cri = node_agent::cri::Cri::connect(socket)
        .await
        .map_err(|e| AgentStart::Unreachable(e.to_string()))?;
    cri.version()
        .await
        .map_err(|e| AgentStart::Unreachable(e.to_string()))?;
    for tarball in &opts.import_images {
        progress(&format!("importing {}", tarball.display()));
        node_agent::images::import(socket, tarball)
            .await
            .map_err(AgentStart::Failed)?;
    }
    progress(&format!(
        "starting the node agent for node {}",
        opts.node_name
    ));
    let mut config = opts.agent_config.clone().unwrap_or_else(|| {
        let node = node_agent::host::host_node_config(&opts.node_name, Some("127.0.0.1".into()));
        node_agent::agent::AgentConfig::new(node, socket.clone())
    });
    if let (Some(pki), None) = (pki, &config.tls) {
        let mut ips = vec![IpAddr::V4(Ipv4Addr::LOCALHOST)];
        if let Ok(ip) = config.node.internal_ip.parse::<IpAddr>() {
            if !ips.contains(&ip) {
                ips.push(ip);
            }
        }
        let serving = pki.node_serving(&config.node.name, &ips).map_err(|e| {
            AgentStart::Failed(node_agent::Error::Config(format!(
                "the node serving certificate: {e}"
            )))
        })?;
        config.tls = Some(node_agent::agent::AgentTls {
            serving,
            client_ca_pem: pki.ca.cert_pem().to_string(),
        });
    }
    let metrics = Arc::new(node_agent::Metrics::new().map_err(AgentStart::Failed)?);
    node_agent::agent::start(client, config, metrics)
        .await
        .map_err(AgentStart::Failed)
}

/// `coxswain agent`: a node agent joining the API server with the credentials of `kubeconfig`
/// (a node certificate from the cluster CA).
pub async fn agent(
    kubeconfig: &std::path::Path,
    opts: AgentOptions,
    progress: Progress,
) -> Result<node_agent::agent::Agent, Error> {
    let yaml = std::fs::read_to_string(kubeconfig)
        .map_err(|e| Error::Client(format!("{}: {e}", kubeconfig.display())))?;
    let client = component_client(&yaml, Some("kubelet")).await?;
    agent_with_client(client, opts, progress).await
}

/// A node agent joining with `client` (its credentials are the node's).
pub(crate) async fn agent_with_client(
    client: kube::Client,
    opts: AgentOptions,
    progress: Progress,
) -> Result<node_agent::agent::Agent, Error> {
    match start_agent(client, &opts, &progress, None).await {
        Ok(a) => Ok(a),
        Err(AgentStart::Unreachable(e)) => {
            Err(Error::NodeAgent(node_agent::Error::Config(format!(
                "containerd is not reachable at {}: {e}",
                opts.container_runtime_endpoint.display()
            ))))
        }
        Err(AgentStart::Failed(e)) => Err(e.into()),
    }
}
