//! The controller manager of Coxswain: the workload, lifecycle and garbage-collection
//! controllers of kube-controller-manager, as an ordinary API client (kube-rs).
//!
//! Start at [`run`]. It builds one shared informer per typed resource ([`informers`]), hands
//! subscriptions to every enabled controller (registered by name in [`REGISTRY`]), then runs
//! each watcher, each controller and the `/healthz` + `/metrics` server as a task of its own
//! (so the manager uses every core). The tasks belong to `run`'s future: dropping it aborts
//! them all, nothing is spawned detached, so a test can stop and restart the manager by
//! aborting its task.
//!
//! Each typed controller ([`controllers`]: `replicaset`, `deployment`, `namespace`,
//! `serviceaccount`, `endpoint`/`endpointslice`, `job`, `cronjob`) is a kube-runtime
//! [`kube::runtime::Controller`] fed from the shared streams: it deduplicates keys and never
//! reconciles one key concurrently (client-go's workqueue guarantees); [`util::Backoff`] adds
//! the per-key exponential retry delay. The `garbagecollector` (every kind in the resource
//! table, through dynamic watchers), `podgc` and the node controllers (`nodelifecycle`,
//! `taint-eviction-controller`, `nodeipam`: whole-cluster passes, as upstream's are) are
//! level-based loops of their own. `root-ca-cert-publisher` is a typed controller over
//! namespaces and their `kube-root-ca.crt` ConfigMaps.
//!
//! Not here yet: leader election (`--leader-elect` is parsed and ignored; run one instance).

pub mod controllers;
pub mod informers;
pub mod metrics;
pub mod util;

use std::collections::HashMap;
use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;

use futures::future::BoxFuture;
use futures::FutureExt;
use tokio::task::JoinSet;

/// Everything that can go wrong in the controller manager.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// An API request failed.
    #[error("API request failed: {0}")]
    Kube(#[from] kube::Error),
    /// A shared store was dropped before it became ready (the manager is shutting down).
    #[error("informer store never became ready: {0}")]
    StoreNotReady(#[from] kube::runtime::reflector::store::WriterDropped),
    /// A metric could not be registered.
    #[error("metrics registry: {0}")]
    Metrics(#[from] prometheus::Error),
    /// The `/healthz` + `/metrics` address could not be bound.
    #[error("cannot listen on {addr}: {source}")]
    Bind {
        /// The address asked for.
        addr: SocketAddr,
        /// Why it failed.
        #[source]
        source: std::io::Error,
    },
    /// `--controllers` named a controller that does not exist.
    #[error("unknown controller {0:?} in --controllers (known: {known})", known = controller_names().join(", "))]
    UnknownController(String),
    /// An object is invalid in a way the controller cannot act on (e.g. an empty selector).
    #[error("{0}")]
    Invalid(String),
    /// A controller, informer or server task panicked (or the runtime cancelled it); the
    /// manager stops rather than run on without it.
    #[error("task {task} {reason}")]
    Task {
        /// Which task (a controller name, `<Kind> informer`, `metrics server`).
        task: String,
        /// `panicked: <message>` or `cancelled`.
        reason: String,
    },
}

/// What a controller's constructor is given.
pub struct Shared<'a> {
    /// The API client.
    pub client: &'a kube::Client,
    /// The shared informers; subscribing marks a kind as watched.
    pub informers: &'a informers::Informers,
    /// The metrics every controller reports into.
    pub metrics: &'a Arc<metrics::Metrics>,
    /// The manager's configuration (concurrency, thresholds).
    pub config: &'a Config,
}

/// A controller registered by name: `start` returns the controller as a future, or `None`
/// if the informers were already started (a programming error, logged).
pub struct Registration {
    /// The name `--controllers` uses (upstream's names).
    pub name: &'static str,
    start: fn(&Shared<'_>) -> Option<BoxFuture<'static, ()>>,
}

/// Every controller, in start order. `--controllers` names come from here, so the flag, the
/// validation and what actually runs cannot drift apart.
pub static REGISTRY: &[Registration] = &[
    Registration {
        name: controllers::replicaset::NAME,
        start: |s| {
            controllers::replicaset::controller(
                s.client.clone(),
                s.informers,
                s.metrics.clone(),
                s.config.concurrency.replicaset,
            )
        },
    },
    Registration {
        name: controllers::deployment::NAME,
        start: |s| {
            controllers::deployment::controller(
                s.client.clone(),
                s.informers,
                s.metrics.clone(),
                s.config.concurrency.deployment,
            )
        },
    },
    Registration {
        name: controllers::garbagecollector::NAME,
        start: |s| {
            Some(controllers::garbagecollector::controller(
                s.client.clone(),
                s.metrics.clone(),
            ))
        },
    },
    Registration {
        name: controllers::namespace::NAME,
        start: |s| {
            controllers::namespace::controller(
                s.client.clone(),
                s.informers,
                s.metrics.clone(),
                s.config.concurrency.namespace,
            )
        },
    },
    Registration {
        name: controllers::serviceaccount::NAME,
        start: |s| {
            controllers::serviceaccount::controller(
                s.client.clone(),
                s.informers,
                s.metrics.clone(),
                s.config.concurrency.serviceaccount,
            )
        },
    },
    Registration {
        name: controllers::endpoints::NAME,
        start: |s| {
            controllers::endpoints::controller(
                s.client.clone(),
                s.informers,
                s.metrics.clone(),
                true,
                false,
            )
        },
    },
    Registration {
        name: controllers::endpoints::SLICE_NAME,
        start: |s| {
            controllers::endpoints::controller(
                s.client.clone(),
                s.informers,
                s.metrics.clone(),
                false,
                true,
            )
        },
    },
    Registration {
        name: controllers::job::NAME,
        start: |s| {
            controllers::job::controller(
                s.client.clone(),
                s.informers,
                s.metrics.clone(),
                s.config.concurrency.job,
            )
        },
    },
    Registration {
        name: controllers::daemonset::NAME,
        start: |s| {
            controllers::daemonset::controller(s.client.clone(), s.informers, s.metrics.clone())
        },
    },
    Registration {
        name: controllers::statefulset::NAME,
        start: |s| {
            controllers::statefulset::controller(s.client.clone(), s.informers, s.metrics.clone())
        },
    },
    Registration {
        name: controllers::podgc::NAME,
        start: |s| {
            controllers::podgc::controller(
                s.client.clone(),
                s.informers,
                s.metrics.clone(),
                s.config.terminated_pod_gc_threshold,
            )
        },
    },
    Registration {
        name: controllers::nodelifecycle::NAME,
        start: |s| {
            controllers::nodelifecycle::controller(
                s.client.clone(),
                s.informers,
                s.metrics.clone(),
                s.config.nodes.clone(),
            )
        },
    },
    Registration {
        name: controllers::tainteviction::NAME,
        start: |s| {
            controllers::tainteviction::controller(
                s.client.clone(),
                s.informers,
                s.metrics.clone(),
                s.config.nodes.clone(),
            )
        },
    },
    Registration {
        name: controllers::nodeipam::NAME,
        // `run` has already refused an invalid --cluster-cidr.
        start: |s| match controllers::nodeipam::cidr_set(&s.config.nodes) {
            Ok(Some(cidrs)) => controllers::nodeipam::controller(
                s.client.clone(),
                s.informers,
                s.metrics.clone(),
                cidrs,
            ),
            _ => Some(futures::future::ready(()).boxed()),
        },
    },
    Registration {
        name: controllers::rootcacertpublisher::NAME,
        start: |s| {
            controllers::rootcacertpublisher::controller(
                s.client.clone(),
                s.informers,
                s.metrics.clone(),
                s.config.root_ca_pem.clone(),
            )
        },
    },
    Registration {
        name: controllers::certificates::APPROVING_NAME,
        start: |s| {
            controllers::certificates::approving(s.client.clone(), s.informers, s.metrics.clone())
        },
    },
    Registration {
        name: controllers::certificates::SIGNING_NAME,
        start: |s| {
            controllers::certificates::signing(
                s.client.clone(),
                s.informers,
                s.metrics.clone(),
                s.config.cluster_signing.clone(),
            )
        },
    },
    Registration {
        name: controllers::disruption::NAME,
        start: |s| {
            controllers::disruption::controller(s.client.clone(), s.informers, s.metrics.clone())
        },
    },
    Registration {
        name: controllers::cronjob::NAME,
        start: |s| {
            controllers::cronjob::controller(
                s.client.clone(),
                s.informers,
                s.metrics.clone(),
                s.config.clock.clone(),
                s.config.concurrency.cronjob,
            )
        },
    },
    Registration {
        name: controllers::ttlafterfinished::NAME,
        start: |s| {
            controllers::ttlafterfinished::controller(
                s.client.clone(),
                s.informers,
                s.metrics.clone(),
            )
        },
    },
];

/// The names of every registered controller.
pub fn controller_names() -> Vec<&'static str> {
    REGISTRY.iter().map(|r| r.name).collect()
}

/// How many keys each controller reconciles at once (`--concurrent-*-syncs`).
#[derive(Debug, Clone)]
pub struct Concurrency {
    /// `--concurrent-replicaset-syncs` (upstream default 5).
    pub replicaset: u16,
    /// `--concurrent-deployment-syncs` (upstream default 5).
    pub deployment: u16,
    /// `--concurrent-namespace-syncs` (upstream default 10).
    pub namespace: u16,
    /// `--concurrent-serviceaccount-syncs` (upstream default 5).
    pub serviceaccount: u16,
    /// `--concurrent-job-syncs` (upstream default 5).
    pub job: u16,
    /// `--concurrent-cron-job-syncs` (upstream default 5).
    pub cronjob: u16,
}

impl Default for Concurrency {
    fn default() -> Self {
        Concurrency {
            replicaset: 5,
            deployment: 5,
            namespace: 10,
            serviceaccount: 5,
            job: 5,
            cronjob: 5,
        }
    }
}

/// Node health, taint eviction and pod CIDR settings (kube-controller-manager's flags).
#[derive(Debug, Clone)]
pub struct NodeSettings {
    /// `--node-monitor-period`: how often node health is checked (upstream 5 s).
    pub monitor_period: std::time::Duration,
    /// `--node-monitor-grace-period`: how long a node may go without renewing its Lease or
    /// posting status before it is marked Unknown (upstream 40 s).
    pub monitor_grace_period: std::time::Duration,
    /// `--node-startup-grace-period`: the same for a node that never posted `Ready`
    /// (upstream 60 s).
    pub startup_grace_period: std::time::Duration,
    /// `--default-not-ready-toleration-seconds` (upstream's API server flag, 300): see
    /// [`controllers::tainteviction`] for why the controller applies it.
    pub default_not_ready_toleration_seconds: i64,
    /// `--default-unreachable-toleration-seconds` (300), likewise.
    pub default_unreachable_toleration_seconds: i64,
    /// `--allocate-node-cidrs`: give nodes a `spec.podCIDR` (upstream default false; on here,
    /// as in k3s, because the node agent's CNI needs one).
    pub allocate_node_cidrs: bool,
    /// `--cluster-cidr`: the pod network (one IPv4 CIDR).
    pub cluster_cidr: String,
    /// `--node-cidr-mask-size`: the prefix length of each node's block.
    pub node_cidr_mask_size: u8,
}

impl Default for NodeSettings {
    fn default() -> Self {
        NodeSettings {
            monitor_period: std::time::Duration::from_secs(5),
            monitor_grace_period: std::time::Duration::from_secs(40),
            startup_grace_period: std::time::Duration::from_secs(60),
            default_not_ready_toleration_seconds: 300,
            default_unreachable_toleration_seconds: 300,
            allocate_node_cidrs: true,
            cluster_cidr: "10.244.0.0/16".into(),
            node_cidr_mask_size: 24,
        }
    }
}

/// How to run the controller manager.
#[derive(Clone)]
pub struct Config {
    /// The API client every controller uses.
    pub client: kube::Client,
    /// `--controllers`: `*` enables the defaults, `name` enables one, `-name` disables one.
    pub controllers: Vec<String>,
    /// Reconcile concurrency per controller.
    pub concurrency: Concurrency,
    /// Where to serve `/healthz` and `/metrics`; `None` serves nothing. Port 0 picks one.
    pub serve: Option<SocketAddr>,
    /// `--terminated-pod-gc-threshold`: finished pods kept before the oldest are deleted
    /// (0 keeps all).
    pub terminated_pod_gc_threshold: usize,
    /// Node lifecycle, taint eviction and node IPAM settings.
    pub nodes: NodeSettings,
    /// The time the CronJob controller schedules by (a [`controllers::cronjob::ManualClock`]
    /// in tests).
    pub clock: Arc<dyn controllers::cronjob::Clock>,
    /// `--root-ca-file`'s content: the cluster CA (PEM) the root-ca-cert-publisher puts in
    /// every namespace's `kube-root-ca.crt`; `None` leaves that controller idle.
    pub root_ca_pem: Option<String>,
    /// `--cluster-signing-cert-file`/`--cluster-signing-key-file` (and
    /// `--cluster-signing-duration`): the CA csrsigning issues client certificates with;
    /// `None` leaves that controller idle.
    pub cluster_signing: Option<controllers::certificates::ClusterSigning>,
}

impl Config {
    /// Every controller enabled, default concurrency, no HTTP server.
    pub fn new(client: kube::Client) -> Self {
        Config {
            client,
            controllers: vec!["*".into()],
            concurrency: Concurrency::default(),
            serve: None,
            terminated_pod_gc_threshold: 12500,
            nodes: NodeSettings::default(),
            clock: Arc::new(controllers::cronjob::SystemClock),
            root_ca_pem: None,
            cluster_signing: None,
        }
    }
}

/// Whether `name` is enabled by a `--controllers` list (upstream's `IsControllerEnabled`):
/// an explicit `-name` wins, then an explicit `name`, then `*`.
pub fn controller_enabled(spec: &[String], name: &str) -> bool {
    let mut star = false;
    for s in spec {
        if s == name {
            return true;
        }
        if s.strip_prefix('-') == Some(name) {
            return false;
        }
        star |= s == "*";
    }
    star
}

/// Checks every name in a `--controllers` list.
pub fn validate_controllers(spec: &[String]) -> Result<(), Error> {
    for s in spec {
        let name = s.strip_prefix('-').unwrap_or(s);
        if name != "*" && !controller_names().contains(&name) {
            return Err(Error::UnknownController(s.clone()));
        }
    }
    Ok(())
}

/// Runs the controller manager until `shutdown` resolves (or the returned future is dropped).
/// `on_serving` learns the bound `/metrics` address (useful with port 0).
///
/// Every informer watcher, every controller and the HTTP server is a tokio task of its own,
/// so the manager uses every core (one future polling them all kept it to one, and the pod
/// informer fell tens of seconds behind its subscribers under load). The tasks belong to
/// [`JoinSet`]s held by this future: dropping it (a test aborting the manager, leader election
/// losing the lease) aborts them all, and a task that panics ends `run` with
/// [`Error::Task`] rather than leaving the manager running without it. Controllers are only
/// spawned once every informer has listed (see [`informers::Informers::synced`]).
pub async fn run(
    config: Config,
    shutdown: impl Future<Output = ()> + Send,
    on_serving: impl FnOnce(SocketAddr) + Send,
) -> Result<(), Error> {
    validate_controllers(&config.controllers)?;
    if controller_enabled(&config.controllers, controllers::nodeipam::NAME) {
        controllers::nodeipam::cidr_set(&config.nodes)?;
    }
    let metrics = Arc::new(metrics::Metrics::new()?);
    let informers = informers::Informers::new(&config.client);
    let on = |name: &str| controller_enabled(&config.controllers, name);
    let shared = Shared {
        client: &config.client,
        informers: &informers,
        metrics: &metrics,
        config: &config,
    };
    // Built (and so subscribed) before any watcher starts, so each sees the initial lists.
    let mut controllers: Vec<(&'static str, BoxFuture<'static, ()>)> = Vec::new();
    for r in REGISTRY.iter().filter(|r| on(r.name)) {
        match (r.start)(&shared) {
            Some(task) => controllers.push((r.name, task)),
            None => tracing::error!(
                controller = r.name,
                "informers already started; not running"
            ),
        }
    }
    // The watchers and the HTTP server run from the start; the controllers only once every
    // informer has listed (see `informers::Informers::synced` for why this matters).
    let mut background = Tasks::default();
    for (kind, task) in informers.tasks() {
        background.spawn(format!("{kind} informer"), task);
    }
    if let Some(addr) = config.serve {
        let (bound, server) = metrics::serve(addr, metrics.clone()).await?;
        tracing::info!(%bound, "serving /healthz and /metrics");
        on_serving(bound);
        background.spawn("metrics server".into(), server.boxed());
    }
    let running: Vec<&str> = controller_names().into_iter().filter(|c| on(c)).collect();
    tracing::info!(controllers = ?running, "controller manager started");
    let mut spawned = Tasks::default();
    let controllers = async {
        informers.synced().await?;
        tracing::info!("caches synced; starting controllers");
        for (name, task) in controllers {
            spawned.spawn(name.into(), task);
        }
        spawned.all().await
    };
    tokio::select! {
        result = background.all() => result,
        result = controllers => result,
        () = shutdown => Ok(()),
    }
}

/// Tasks owned by [`run`], by name. Dropping the set aborts every task still in it, so none
/// outlives the manager.
#[derive(Default)]
struct Tasks {
    set: JoinSet<()>,
    names: HashMap<tokio::task::Id, String>,
}

impl Tasks {
    fn spawn(&mut self, name: String, task: BoxFuture<'static, ()>) {
        let handle = self.set.spawn(task);
        self.names.insert(handle.id(), name);
    }

    /// Waits until every task has ended (none does in normal operation) or one failed: a
    /// panic (or a cancellation by the runtime) is returned as [`Error::Task`] at once.
    async fn all(&mut self) -> Result<(), Error> {
        while let Some(joined) = self.set.join_next_with_id().await {
            match joined {
                Ok((id, ())) => {
                    let task = self.names.remove(&id).unwrap_or_default();
                    tracing::info!(task, "task ended");
                }
                Err(e) => {
                    let task = self.names.remove(&e.id()).unwrap_or_default();
                    let reason = if e.is_panic() {
                        let payload = e.into_panic();
                        let message = payload
                            .downcast_ref::<&str>()
                            .map(|s| s.to_string())
                            .or_else(|| payload.downcast_ref::<String>().cloned())
                            .unwrap_or_else(|| "unknown panic".into());
                        format!("panicked: {message}")
                    } else {
                        "cancelled".into()
                    };
                    tracing::error!(task, reason, "task failed; stopping the controller manager");
                    return Err(Error::Task { task, reason });
                }
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn controllers_flag() {
        let spec = |s: &str| s.split(',').map(String::from).collect::<Vec<_>>();
        assert!(controller_enabled(&spec("*"), "replicaset"));
        assert!(!controller_enabled(&spec("*,-replicaset"), "replicaset"));
        assert!(controller_enabled(&spec("replicaset"), "replicaset"));
        assert!(!controller_enabled(&spec("deployment"), "replicaset"));
        assert!(validate_controllers(&spec("nope")).is_err());
        let every = "*,-replicaset,deployment,garbagecollector,namespace,serviceaccount";
        assert!(validate_controllers(&spec(every)).is_ok());
    }
}
