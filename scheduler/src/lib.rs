//! cox-scheduler: an ordinary API client that places pods on nodes, shaped like
//! kube-scheduler (see `framework` for the plugin model).
//!
//! Flow: two watches (nodes, pods) feed the [`cache::Cache`] and the
//! [`queue::SchedulingQueue`], more feed the [`listers::Listers`] plugins read (PDBs,
//! Services, controllers); [`scheduler::Scheduler::run_loop`] pops one pod at a time,
//! runs the profile's [`framework::Framework`] on a cache snapshot, assumes the pod on the
//! chosen node and binds it through `pods/binding` in a separate task. With leader election
//! all of that runs only while this replica holds the `kube-system/kube-scheduler` Lease.

pub mod cache;
pub mod config;
mod error;
pub mod framework;
pub mod listers;
/// Leader election, shared with the controller manager.
pub use leader_election as leader;
pub mod metrics;
pub mod permit;
pub mod plugins;
pub mod quantity;
pub mod queue;
pub mod scheduler;

use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;

pub use config::SchedulerConfiguration;
pub use error::Error;
pub use leader::{LeaderElectionConfig, LeaderElector};

/// Everything [`start`] needs; the binary fills it from flags.
pub struct Config {
    pub client: kube::Client,
    /// The schedulerName of a profile that does not name one (`--scheduler-name`).
    pub scheduler_name: String,
    pub configuration: SchedulerConfiguration,
    /// `None` disables leader election (`--leader-elect=false`).
    pub leader_election: Option<LeaderElectionConfig>,
    /// Where `/healthz` and `/metrics` are served; `None` serves nothing.
    pub health_addr: Option<SocketAddr>,
    /// This replica's name in events and the Lease.
    pub identity: String,
    /// Extra plugins, enabled by name from the configuration.
    pub out_of_tree: Vec<(&'static str, plugins::Factory)>,
}

/// A started scheduler. Dropping it stops it (without releasing the lease, like a crash).
pub struct Running {
    /// Where `/healthz` and `/metrics` listen, if enabled.
    pub health_addr: Option<SocketAddr>,
    pub metrics: Arc<metrics::Metrics>,
    /// Each profile's pods waiting at Permit, by schedulerName.
    waiting_pods: HashMap<String, Arc<framework::WaitingPods>>,
    main: tokio::task::JoinHandle<Result<(), Error>>,
    health: Option<tokio::task::JoinHandle<()>>,
    lease: Option<(kube::Client, LeaderElectionConfig)>,
}

impl Running {
    /// The pods that profile `scheduler_name` holds at Permit, for code outside the plugins
    /// to `allow` or `reject` (upstream's framework handle).
    pub fn waiting_pods(&self, scheduler_name: &str) -> Option<Arc<framework::WaitingPods>> {
        self.waiting_pods.get(scheduler_name).cloned()
    }

    /// Waits until the scheduler stops: a watch ended for good or leadership was lost.
    /// Call once: the scheduler's result is only delivered once.
    pub async fn wait(&mut self) -> Result<(), Error> {
        match (&mut self.main).await {
            Ok(r) => r,
            Err(e) => Err(Error::TaskFailed(e.to_string())),
        }
    }

    /// Stops every task (in-flight binds finish on their own) and releases the lease, so a
    /// standby takes over at once. Dropping a `Running` stops without releasing.
    pub async fn stop(self) {
        self.main.abort();
        if let Some((client, cfg)) = &self.lease {
            if let Err(e) = LeaderElector::release(client.clone(), cfg).await {
                tracing::warn!(error = %e, "releasing the lease failed");
            }
        }
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        self.main.abort();
        if let Some(h) = &self.health {
            h.abort();
        }
    }
}

/// Builds a client from `--kubeconfig` (or the usual environment/in-cluster lookup) with
/// `--master` overriding the server URL.
pub async fn client_from(
    kubeconfig: Option<&Path>,
    master: Option<&str>,
) -> Result<kube::Client, Error> {
    use kube::config::{KubeConfigOptions, Kubeconfig};
    let mut config = match kubeconfig {
        Some(path) => {
            let kc = Kubeconfig::read_from(path).map_err(|e| Error::Kubeconfig(e.to_string()))?;
            kube::Config::from_custom_kubeconfig(kc, &KubeConfigOptions::default())
                .await
                .map_err(|e| Error::Kubeconfig(e.to_string()))?
        }
        None => match master {
            Some(m) => kube::Config::new(
                m.parse()
                    .map_err(|e| Error::Kubeconfig(format!("--master: {e}")))?,
            ),
            None => kube::Config::infer()
                .await
                .map_err(|e| Error::Kubeconfig(e.to_string()))?,
        },
    };
    if let Some(m) = master {
        config.cluster_url = m
            .parse()
            .map_err(|e| Error::Kubeconfig(format!("--master: {e}")))?;
    }
    let agent = http::HeaderValue::from_str(&api_types::user_agent("kube-scheduler"))
        .map_err(|e| Error::Kubeconfig(e.to_string()))?;
    config.headers.push((http::header::USER_AGENT, agent));
    kube::Client::try_from(config).map_err(|e| Error::Kubeconfig(e.to_string()))
}

/// Starts the scheduler in the background.
pub async fn start(config: Config) -> Result<Running, Error> {
    let metrics = Arc::new(metrics::Metrics::new()?);
    let listers = Arc::new(listers::Listers::default());
    let mut profiles = HashMap::new();
    for p in config.configuration.profiles(&config.scheduler_name) {
        let fw = p.build_with(
            Some(config.client.clone()),
            &config.out_of_tree,
            listers.clone(),
        )?;
        profiles.insert(fw.profile_name.clone(), Arc::new(fw));
    }
    let waiting_pods = profiles
        .iter()
        .map(|(name, fw)| (name.clone(), fw.waiting_pods.clone()))
        .collect();
    let (health_addr, health) = match config.health_addr {
        Some(addr) => {
            let (a, h) = metrics::serve(addr, metrics.clone()).await?;
            (Some(a), Some(h))
        }
        None => (None, None),
    };
    let sched = Arc::new(scheduler::Scheduler::new(
        config.client.clone(),
        profiles,
        metrics.clone(),
        config.identity.clone(),
        listers,
    ));
    let work = async move {
        tokio::select! {
            r = sched.clone().watch_nodes() => r,
            r = sched.clone().watch_pods() => r,
            r = sched.clone().watch_listers() => r,
            () = sched.clone().housekeeping() => Ok(()),
            () = sched.clone().run_loop() => Ok(()),
        }
    };
    let client = config.client.clone();
    let lease = config
        .leader_election
        .clone()
        .map(|le| (config.client.clone(), le));
    let main = tokio::spawn(async move {
        match config.leader_election {
            None => work.await,
            Some(le) => {
                let elector = LeaderElector::new(client, le);
                let mut result = Err(Error::LeadershipLost);
                elector
                    .run(async {
                        result = work.await;
                    })
                    .await;
                result
            }
        }
    });
    Ok(Running {
        health_addr,
        metrics,
        waiting_pods,
        main,
        health,
        lease,
    })
}

/// Runs until a fatal error or leadership loss (then the process should exit, as
/// kube-scheduler does, and be restarted by its supervisor).
pub async fn run(config: Config) -> Result<(), Error> {
    start(config).await?.wait().await
}
