//! A real node: this machine's Node, heartbeats, and its pods on containerd through CRI.
//!
//! Start order matters for what users see: the Node registers at once (NotReady with the
//! reason), the CNI conflist is written as soon as the podCIDR is known, and the Node turns
//! Ready only when CRI reports RuntimeReady and NetworkReady, so the scheduler never binds to
//! a node that cannot start sandboxes.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::watch;
use tokio::task::JoinHandle;

use crate::cni::{self, CniConfig};
use crate::cri::Cri;
use crate::image_gc::{CriFsUsage, ImageGc, ImageGcPolicy};
use crate::node::{NodeConfig, NodeHeartbeat, Readiness, Timing, Writer};
use crate::pods::{self, Layout, PodsConfig, RuntimeState};
use crate::{Error, Metrics};

/// Everything a real node agent needs; [`AgentConfig::new`] has the defaults of a
/// production node (paths under /var/lib/coxswain and /var/log/pods).
#[derive(Clone, Debug)]
pub struct AgentConfig {
    pub node: NodeConfig,
    /// containerd's CRI socket.
    pub runtime_endpoint: PathBuf,
    pub layout: Layout,
    pub cni: CniConfig,
    /// Used when the Node has no `spec.podCIDR` (no IPAM controller running).
    pub default_pod_cidr: String,
    pub timing: Timing,
    pub max_in_flight: usize,
    pub allow_privileged: bool,
    /// Pod relist period.
    pub sync_period: Duration,
    pub initial_backoff: Duration,
    /// The streaming server (logs/exec/attach/port-forward); port 0 picks one.
    pub server_addr: Option<SocketAddr>,
    /// With it, the streaming server is HTTPS and authenticates and authorizes every caller
    /// (kubelet's port 10250 in a secure cluster); without it, plain HTTP for anyone who can
    /// connect, which is only acceptable on loopback.
    pub tls: Option<AgentTls>,
    /// Image garbage collection (kubelet's `--image-gc-*` flags).
    pub image_gc: ImageGcPolicy,
}

/// The streaming server's TLS: its serving certificate (SANs: the node name and the address
/// the API server dials) and the CA whose client certificates it accepts (kubelet's
/// `tlsCertFile`/`tlsPrivateKeyFile` and `authentication.x509.clientCAFile`).
#[derive(Clone, Debug)]
pub struct AgentTls {
    pub serving: pki::CertKey,
    pub client_ca_pem: String,
}

impl AgentConfig {
    pub fn new(node: NodeConfig, runtime_endpoint: PathBuf) -> AgentConfig {
        let layout = Layout {
            node_name: node.name.clone(),
            root_dir: PathBuf::from("/var/lib/coxswain/agent"),
            log_dir: PathBuf::from("/var/log/pods"),
            cgroup_root: "/kubepods".into(),
        };
        AgentConfig {
            node,
            runtime_endpoint,
            cni: CniConfig {
                conf_dir: PathBuf::from("/etc/coxswain/cni/net.d"),
                bridge: "cox0".into(),
                ipam_dir: PathBuf::from("/var/lib/coxswain/cni"),
            },
            layout,
            default_pod_cidr: "10.244.0.0/24".into(),
            timing: Timing::default(),
            max_in_flight: 16,
            allow_privileged: false,
            sync_period: Duration::from_secs(1),
            initial_backoff: Duration::from_secs(10),
            server_addr: Some(SocketAddr::from(([127, 0, 0, 1], 10250))),
            tls: None,
            image_gc: ImageGcPolicy::default(),
        }
    }
}

/// A running agent; dropping it stops every task (containers keep running: fail-static).
pub struct Agent {
    pub state: Arc<RuntimeState>,
    pub server_addr: Option<SocketAddr>,
    tasks: Vec<JoinHandle<()>>,
}

impl Drop for Agent {
    fn drop(&mut self) {
        for t in &self.tasks {
            t.abort();
        }
    }
}

impl Agent {
    /// Waits until any of the agent's tasks ends (none should).
    pub async fn wait(&mut self) {
        if self.tasks.is_empty() {
            return std::future::pending().await;
        }
        let (_, i, _) = futures::future::select_all(self.tasks.iter_mut()).await;
        tracing::error!(task = i, "a node agent task stopped");
    }
}

/// Connects to the runtime, registers the Node and starts heartbeats, pod sync and the
/// streaming server.
pub async fn start(
    client: kube::Client,
    mut config: AgentConfig,
    metrics: Arc<Metrics>,
) -> Result<Agent, Error> {
    let cri = Cri::connect(&config.runtime_endpoint).await?;
    config.node.node_info.container_runtime_version = cri.version().await?;
    // `status.images` feeds the scheduler's ImageLocality; read once at start.
    match cri
        .images
        .clone()
        .list_images(crate::cri::api::ListImagesRequest { filter: None })
        .await
    {
        Ok(r) => {
            config.node.images = r
                .into_inner()
                .images
                .into_iter()
                .map(|i| {
                    let names = i.repo_tags.into_iter().chain(i.repo_digests).collect();
                    (names, i.size as i64)
                })
                .collect();
        }
        Err(e) => {
            tracing::warn!(error = %e.message(), "ListImages failed; node status lists no images")
        }
    }
    let state = Arc::new(RuntimeState::default());
    let mut tasks = Vec::new();
    let gc = ImageGc::new(
        cri.clone(),
        config.image_gc.clone(),
        Arc::new(CriFsUsage::new(cri.clone())),
    )?;
    tasks.push(tokio::spawn(async move {
        gc.run().await;
        // Disabled: nothing to do, but `wait` treats an ended task as a failure.
        std::future::pending::<()>().await
    }));

    let server_addr = match config.server_addr {
        Some(addr) => {
            let (bound, task) = match &config.tls {
                Some(tls) => {
                    crate::server::serve_secure(
                        addr,
                        state.clone(),
                        Some(cri.clone()),
                        tls,
                        client.clone(),
                        &config.node.name,
                    )
                    .await?
                }
                None => crate::server::serve(addr, state.clone(), Some(cri.clone())).await?,
            };
            tasks.push(task);
            config.node.kubelet_port = Some(bound.port());
            Some(bound)
        }
        None => None,
    };

    let (readiness_tx, readiness) = watch::channel(Readiness::NotReady(
        "container runtime network not ready: waiting for the CNI configuration".into(),
    ));
    let writer = Writer::new(client.clone(), config.max_in_flight, metrics.clone());
    let mut heartbeat = NodeHeartbeat::new(
        config.node.clone(),
        writer.clone(),
        config.timing,
        readiness,
    );
    heartbeat.register().await?;
    metrics.nodes.set(1);
    let shared = heartbeat.shared.clone();
    let renew = config.timing.renew_interval;
    tasks.push(tokio::spawn(heartbeat.run(renew, 0.0)));

    // CNI config from the podCIDR, then readiness from CRI Status, re-checked every few
    // seconds so a runtime that goes away turns the node NotReady.
    let cni_cfg = config.cni.clone();
    let default_cidr = config.default_pod_cidr.clone();
    let ready_cri = cri.clone();
    tasks.push(tokio::spawn(async move {
        let mut last: Option<Readiness> = None;
        loop {
            let cidr = shared
                .pod_cidr
                .read()
                .clone()
                .unwrap_or_else(|| default_cidr.clone());
            let now = match cni::write_conflist(&cni_cfg, &cidr) {
                Err(e) => Readiness::NotReady(format!("CNI configuration: {e}")),
                Ok(_) => match ready_cri.ready().await {
                    Ok(Ok(())) => Readiness::Ready,
                    Ok(Err(why)) => Readiness::NotReady(why),
                    Err(e) => Readiness::NotReady(e.to_string()),
                },
            };
            if last.as_ref() != Some(&now) {
                tracing::info!(readiness = ?now, "node readiness");
                readiness_tx.send_replace(now.clone());
                last = Some(now.clone());
            }
            let wait = if now == Readiness::Ready { 5_000 } else { 200 };
            tokio::time::sleep(Duration::from_millis(wait)).await;
        }
    }));

    let mut pods_config = PodsConfig::new(config.layout.clone(), config.node.internal_ip.clone());
    pods_config.sync_period = config.sync_period;
    pods_config.initial_backoff = config.initial_backoff;
    pods_config.allow_privileged = config.allow_privileged;
    pods_config.node_allocatable = config
        .node
        .allocatable
        .iter()
        .filter_map(|(k, v)| pods::spec::milli(v).map(|m| (k.clone(), m)))
        .collect();
    let pods_state = state.clone();
    tasks.push(tokio::spawn(async move {
        if let Err(e) = pods::run(cri, writer, pods_config, pods_state).await {
            tracing::error!(error = %e, "pod sync stopped");
        }
    }));
    Ok(Agent {
        state,
        server_addr,
        tasks,
    })
}
