//! `cox-apiserver`: the Kubernetes REST API that the real kubectl and client libraries use.
//!
//! Start at [`start`]: it opens storage, seeds the built-in namespaces and serves HTTP. A
//! request goes through [`handlers::dispatch`], which parses the path against the resource
//! table ([`resource`]) and calls the one generic [`registry::Registry`]; per-kind behaviour
//! comes from [`strategy`], canonical typed encoding from [`typed`], watches from [`watch`] and
//! discovery documents from [`discovery`].
//!
//! **Invariants:** every error answer is a `metav1.Status` ([`error::ApiError`]); every kind is
//! served by the same code path; only the registry talks to storage.

mod allocator;
pub mod apply;
mod cache;
pub mod discovery;
pub mod error;
mod events;
mod filter;
pub mod handlers;
mod metrics;
mod object;
mod openapi;
mod proxy;
pub mod query;
mod quota;
pub mod registry;
pub mod resource;
mod resource_proxy;
pub mod security;
pub mod strategy;
pub mod typed;
mod watch;

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Instant;

use axum::extract::Request;
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Router;
use serde_json::json;
use storage::embedded::{EmbeddedConfig, EmbeddedStore};
use storage::etcd::EtcdStore;
use storage::Storage;
use tokio_util::sync::CancellationToken;

use crate::error::ApiError;
use crate::registry::{Allocators, Registry, WriteOptions};
use crate::resource::Resource;

/// Where objects are kept.
#[derive(Debug, Clone)]
pub enum StorageConfig {
    /// The embedded store in this directory (the default).
    Embedded { data_dir: PathBuf },
    /// An etcd cluster.
    Etcd { endpoints: Vec<String> },
}

/// Everything `start` needs; built by the binary from flags, by tests directly.
#[derive(Debug, Clone)]
pub struct Config {
    pub storage: StorageConfig,
    pub bind_address: IpAddr,
    /// 0 picks a free port (tests).
    pub port: u16,
    /// The Service cluster IP range, `10.0.0.0/24` style.
    pub service_cluster_ip_range: (Ipv4Addr, u8),
    /// Where to write an admin kubeconfig once serving.
    pub write_kubeconfig: Option<PathBuf>,
    /// How long Events live after their last write (upstream's `--event-ttl`, 1 h).
    pub event_ttl: std::time::Duration,
    /// TLS, authentication and authorization. `None`: plain HTTP with every caller an
    /// administrator, allowed on loopback only (tests, `--port`).
    pub security: Option<security::SecurityConfig>,
    /// `--audit-log-path` / `--audit-policy-file`.
    pub audit: Option<security::audit::AuditOptions>,
    /// `--encryption-provider-config`: which resources are encrypted at rest, and how.
    pub encryption_provider_config: Option<PathBuf>,
}

/// Why the server could not start.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error("storage: {0}")]
    Storage(#[from] storage::Error),
    #[error("cannot listen on {addr}: {source}")]
    Bind {
        addr: SocketAddr,
        #[source]
        source: std::io::Error,
    },
    #[error("refusing to serve plain HTTP without authentication on {0}: only loopback addresses are allowed without TLS")]
    InsecureBind(IpAddr),
    #[error("security configuration: {0}")]
    Security(#[from] security::SetupError),
    #[error("audit: {0}")]
    Audit(#[from] audit::Error),
    #[error("--encryption-provider-config: {0}")]
    Encryption(#[from] storage::encryption::ConfigError),
    #[error("seeding built-in objects: {0}")]
    Seed(String),
    #[error("writing the kubeconfig to {path}: {source}")]
    Kubeconfig {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
}

/// Shared by every request.
pub struct State {
    pub registry: Registry,
    /// Serves watches and unpaged lists from memory.
    cache: Arc<cache::WatchCache>,
    /// Cancelled at shutdown: ends open watches so a graceful stop does not wait on them.
    pub shutdown: CancellationToken,
    /// `host:port` clients reach this server at.
    pub address: String,
    pub(crate) metrics: metrics::Metrics,
    openapi: api_schema::OpenApi,
    /// `None` on an insecure (plain HTTP, loopback) server.
    pub security: Option<Arc<security::Security>>,
    pub(crate) auditor: Option<security::audit::Auditor>,
}

/// A started server.
pub struct Running {
    /// The address it listens on.
    pub addr: SocketAddr,
    shutdown: CancellationToken,
    task: tokio::task::JoinHandle<()>,
    /// Gone once every request has finished with the server's state.
    state: std::sync::Weak<State>,
    /// The watch cache's storage follower: ends once the cache is dropped.
    follower: tokio::task::JoinHandle<()>,
}

impl Running {
    /// Stops accepting, ends open watches, waits for the server task and for the storage to
    /// be released (the embedded store's file can be opened again when this returns).
    pub async fn stop(self) {
        self.shutdown.cancel();
        let _ = self.task.await;
        // Handlers still finishing hold the state (and through it the storage); the shutdown
        // token has ended the long-running ones, so this is short.
        let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(30);
        while self.state.strong_count() > 0 && tokio::time::Instant::now() < deadline {
            tokio::time::sleep(std::time::Duration::from_millis(5)).await;
        }
        let _ = self.follower.await;
    }

    /// Resolves when the server has stopped.
    pub async fn wait(self) {
        let _ = self.task.await;
    }

    pub fn shutdown_token(&self) -> CancellationToken {
        self.shutdown.clone()
    }
}

async fn open_storage(cfg: &StorageConfig) -> Result<Arc<dyn Storage>, StartError> {
    Ok(match cfg {
        StorageConfig::Embedded { data_dir } => {
            let path = data_dir.join("state.redb");
            let store =
                tokio::task::spawn_blocking(move || EmbeddedStore::open(EmbeddedConfig::new(path)))
                    .await
                    .map_err(|e| storage::Error::Internal(e.to_string()))??;
            Arc::new(store)
        }
        StorageConfig::Etcd { endpoints } => Arc::new(EtcdStore::connect(endpoints).await?),
    })
}

/// Opens storage, seeds namespaces, binds and serves until the returned handle is stopped.
pub async fn start(config: Config) -> Result<Running, StartError> {
    if config.security.is_none() && !config.bind_address.is_loopback() {
        return Err(StartError::InsecureBind(config.bind_address));
    }
    let security = config
        .security
        .as_ref()
        .map(security::Security::new)
        .transpose()?
        .map(Arc::new);
    let auditor = config
        .audit
        .as_ref()
        .map(security::audit::Auditor::open)
        .transpose()?;
    let mut storage = open_storage(&config.storage).await?;
    if let Some(path) = &config.encryption_provider_config {
        let encryption = storage::encryption::EncryptionConfig::from_file(path)?;
        storage = Arc::new(storage::encryption::EncryptedStorage::new(
            storage, encryption,
        ));
    }
    let (net, prefix) = config.service_cluster_ip_range;
    let (cache, follower) = cache::WatchCache::start(storage.clone()).await?;
    events::spawn_sweeper(&cache, config.event_ttl);
    let registry = Registry::new(storage, Allocators::new(net, prefix), cache.clone());
    registry
        .load_allocations()
        .await
        .map_err(|e| StartError::Seed(format!("{:?}", e.0.message)))?;
    let addr = SocketAddr::new(config.bind_address, config.port);
    let listener = tokio::net::TcpListener::bind(addr)
        .await
        .map_err(|source| StartError::Bind { addr, source })?;
    let addr = listener
        .local_addr()
        .map_err(|source| StartError::Bind { addr, source })?;
    let shutdown = CancellationToken::new();
    let state = Arc::new(State {
        registry,
        cache,
        shutdown: shutdown.clone(),
        address: addr.to_string(),
        metrics: metrics::Metrics::new(),
        openapi: tokio::task::spawn_blocking(openapi::build)
            .await
            .map_err(|e| StartError::Seed(format!("building OpenAPI documents: {e}")))?,
        security: security.clone(),
        auditor,
    });
    seed(&state).await?;
    security::start(&state).await.map_err(StartError::Seed)?;
    if let Some(path) = &config.write_kubeconfig {
        // With security the caller writes a kubeconfig with credentials (it holds the keys).
        if config.security.is_none() {
            write_kubeconfig(path, addr).map_err(|source| StartError::Kubeconfig {
                path: path.clone(),
                source,
            })?;
        }
    }
    let weak_state = Arc::downgrade(&state);
    spawn_allocation_repair(weak_state.clone(), shutdown.clone());
    let app = router(state);
    let token = shutdown.clone();
    let tls = security.as_ref().map(|s| s.tls.clone());
    let task = tokio::spawn(async move {
        match tls {
            Some(tls) => security::tls::serve(listener, tls, app, token).await,
            None => {
                let serve =
                    axum::serve(listener, app).with_graceful_shutdown(token.cancelled_owned());
                if let Err(e) = serve.await {
                    tracing::error!(error = %e, "server stopped with an error");
                }
            }
        }
    });
    tracing::info!(%addr, "cox-apiserver serving");
    Ok(Running {
        addr,
        shutdown,
        task,
        state: weak_state,
        follower,
    })
}

/// Every few minutes, reconciles the Service allocation claims with the stored Services (see
/// `allocator`): another API server may have died between a claim and its Service.
fn spawn_allocation_repair(state: std::sync::Weak<State>, shutdown: CancellationToken) {
    tokio::spawn(async move {
        loop {
            tokio::select! {
                _ = shutdown.cancelled() => return,
                _ = tokio::time::sleep(allocator::REPAIR_INTERVAL) => {}
            }
            let Some(state) = state.upgrade() else {
                return;
            };
            if let Err(e) = state.registry.load_allocations().await {
                tracing::warn!(error = ?e.0.message, "Service allocation repair failed; retrying later");
            }
        }
    });
}

/// The routes: operational endpoints by name, every API path through one dispatcher.
pub fn router(state: Arc<State>) -> Router {
    Router::new()
        .route("/version", get(handlers::version))
        .route("/version/", get(handlers::version))
        .route("/healthz", get(handlers::healthz))
        .route("/livez", get(handlers::healthz))
        .route("/readyz", get(handlers::healthz))
        .route("/metrics", get(metrics::serve))
        .route("/openapi/v2", get(openapi::v2))
        .route("/openapi/v3", get(openapi::v3_index))
        .route("/openapi/v3/", get(openapi::v3_index))
        .route("/openapi/v3/{*key}", get(openapi::v3_document))
        .route("/api", axum::routing::any(handlers::dispatch))
        .route("/api/", axum::routing::any(handlers::dispatch))
        .route("/api/{*rest}", axum::routing::any(handlers::dispatch))
        .route("/apis", axum::routing::any(handlers::dispatch))
        .route("/apis/", axum::routing::any(handlers::dispatch))
        .route("/apis/{*rest}", axum::routing::any(handlers::dispatch))
        .fallback(handlers::not_found)
        .method_not_allowed_fallback(handlers::method_not_allowed)
        .layer(middleware::from_fn_with_state(
            state.clone(),
            security::guard,
        ))
        .layer(middleware::from_fn_with_state(state.clone(), observe))
        .layer(tower_http::catch_panic::CatchPanicLayer::custom(
            panic_status,
        ))
        .with_state(state)
}

fn panic_status(_: Box<dyn std::any::Any + Send + 'static>) -> Response {
    ApiError::internal("the server panicked while handling the request").into_response()
}

/// One log line and the request metrics for every request.
async fn observe(
    axum::extract::State(state): axum::extract::State<Arc<State>>,
    req: Request,
    next: Next,
) -> Response {
    let started = Instant::now();
    let method = req.method().clone();
    let path = req.uri().path().to_string();
    let watch = req
        .uri()
        .query()
        .map(|q| query::Query::parse(Some(q)).flag("watch"))
        .unwrap_or(false);
    let resp = next.run(req).await;
    let code = resp.status().as_u16();
    let (verb, group, resource) = metrics::classify(&method, &path, watch);
    let elapsed = started.elapsed();
    state
        .metrics
        .observe(&verb, &group, &resource, code, elapsed.as_secs_f64());
    tracing::info!(
        verb = %verb, path = %path, code, latency_ms = elapsed.as_secs_f64() * 1e3,
        "request"
    );
    resp
}

/// Creates the namespaces every cluster has, if missing.
async fn seed(state: &State) -> Result<(), StartError> {
    let info = api_types::resources::find("", "v1", "namespaces")
        .ok_or_else(|| StartError::Seed("namespaces missing from the table".into()))?;
    let res = Resource {
        info,
        namespace: None,
    };
    for ns in ["default", "kube-system", "kube-public", "kube-node-lease"] {
        let obj = json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": ns}});
        match state
            .registry
            .create(&res, obj, &WriteOptions::default())
            .await
        {
            Ok(_) => {}
            Err(e) if e.code() == 409 => {}
            Err(e) => {
                return Err(StartError::Seed(format!(
                    "namespace {ns}: {:?}",
                    e.0.message
                )))
            }
        }
    }
    // The two system PriorityClasses every cluster has (upstream's scheduling post-start hook).
    let classes = Resource {
        info: api_types::resources::find("scheduling.k8s.io", "v1", "priorityclasses")
            .ok_or_else(|| StartError::Seed("priorityclasses missing from the table".into()))?,
        namespace: None,
    };
    for (class, value, description) in [
        ("system-node-critical", 2_000_001_000, "Used for system critical pods that must not be moved from their current node."),
        ("system-cluster-critical", 2_000_000_000, "Used for system critical pods that must run in the cluster, but can be moved to another node if necessary."),
    ] {
        let obj = json!({"apiVersion": "scheduling.k8s.io/v1", "kind": "PriorityClass",
                         "metadata": {"name": class}, "value": value, "description": description,
                         "preemptionPolicy": "PreemptLowerPriority"});
        match state
            .registry
            .create(&classes, obj, &WriteOptions::default())
            .await
        {
            Ok(_) => {}
            Err(e) if e.code() == 409 => {}
            Err(e) => {
                return Err(StartError::Seed(format!(
                    "priorityclass {class}: {:?}",
                    e.0.message
                )))
            }
        }
    }
    // The `kubernetes` Service, with the first address of the range, as every cluster has.
    let services = Resource {
        info: api_types::resources::find("", "v1", "services")
            .ok_or_else(|| StartError::Seed("services missing from the table".into()))?,
        namespace: Some("default".into()),
    };
    let svc = json!({
        "apiVersion": "v1", "kind": "Service",
        "metadata": {"name": "kubernetes", "namespace": "default",
                     "labels": {"component": "apiserver", "provider": "kubernetes"}},
        "spec": {"type": "ClusterIP", "sessionAffinity": "None",
                 "ports": [{"name": "https", "port": 443, "protocol": "TCP", "targetPort": 6443}]},
    });
    match state
        .registry
        .create(&services, svc, &WriteOptions::default())
        .await
    {
        Ok(_) => {}
        Err(e) if e.code() == 409 => {}
        Err(e) => {
            return Err(StartError::Seed(format!(
                "service kubernetes: {:?}",
                e.0.message
            )))
        }
    }
    Ok(())
}

/// An admin kubeconfig for this server (plain HTTP on loopback until issue 7 adds TLS).
pub fn kubeconfig(addr: SocketAddr) -> String {
    format!(
        "apiVersion: v1\nkind: Config\nclusters:\n- name: coxswain\n  cluster:\n    server: http://{addr}\ncontexts:\n- name: coxswain\n  context:\n    cluster: coxswain\n    user: admin\n    namespace: default\ncurrent-context: coxswain\nusers:\n- name: admin\n  user: {{}}\n"
    )
}

fn write_kubeconfig(path: &std::path::Path, addr: SocketAddr) -> std::io::Result<()> {
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir)?;
    }
    std::fs::write(path, kubeconfig(addr))
}
