//! The pod garbage collector: deletes the oldest finished pods beyond
//! `--terminated-pod-gc-threshold`, force-deletes pods bound to nodes that no longer exist
//! (missing from the node store, then after a quarantine confirmed by a live GET, as
//! upstream), and force-deletes terminating pods that were never scheduled (no node agent
//! will ever finish their deletion).

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures::future::BoxFuture;
use futures::{FutureExt, StreamExt};
use k8s_openapi::api::core::v1::{Node, Pod};
use kube::api::DeleteParams;
use kube::runtime::reflector::{ObjectRef, Store};
use kube::{Api, Client, ResourceExt};

use crate::informers::Informers;
use crate::metrics::Metrics;
use crate::{util, Error};

/// The controller's name in `--controllers` and metrics.
pub const NAME: &str = "podgc";

/// How often a pass runs without pod changes (upstream's `gcCheckPeriod`).
const PERIOD: Duration = Duration::from_secs(20);
/// How long a node must be missing before its pods are deleted (upstream's quarantine): a
/// node object re-registering after a blip must not lose its pods.
const QUARANTINE: Duration = Duration::from_secs(40);
/// Pod changes are gathered for this long before a pass.
const DEBOUNCE: Duration = Duration::from_millis(500);

/// The pod GC as a future that runs until dropped; `threshold` 0 disables the
/// finished-pod limit, as upstream.
pub fn controller(
    client: Client,
    informers: &Informers,
    metrics: Arc<Metrics>,
    threshold: usize,
) -> Option<BoxFuture<'static, ()>> {
    let mut changes = informers.pods.subscribe()?;
    let pods = informers.pods.store();
    let node_store = informers.nodes.store();
    Some(
        async move {
            let mut gc = PodGc {
                client,
                pods,
                nodes: node_store,
                threshold,
                missing_since: HashMap::new(),
            };
            loop {
                tokio::select! {
                    next = changes.next() => if next.is_none() { return },
                    () = tokio::time::sleep(PERIOD) => {}
                }
                tokio::time::sleep(DEBOUNCE).await;
                // Drain what arrived meanwhile, so a burst costs one pass.
                while changes.next().now_or_never().flatten().is_some() {}
                let timer = metrics.start(NAME);
                let result = gc.pass().await;
                timer.finish(result.is_ok());
                if let Err(error) = result {
                    metrics.retry(NAME);
                    tracing::warn!(controller = NAME, %error, "pod GC pass failed");
                }
            }
        }
        .boxed(),
    )
}

struct PodGc {
    client: Client,
    pods: Store<Pod>,
    nodes: Store<Node>,
    threshold: usize,
    /// When each node name was first seen missing.
    missing_since: HashMap<String, Instant>,
}

impl PodGc {
    async fn pass(&mut self) -> Result<(), Error> {
        self.pods.wait_until_ready().await?;
        let pods = self.pods.state();
        let phase = |p: &Pod| p.status.as_ref().and_then(|s| s.phase.clone());
        // Finished pods beyond the threshold, oldest first.
        if self.threshold > 0 {
            let mut finished: Vec<&Arc<Pod>> = pods
                .iter()
                .filter(|p| matches!(phase(p).as_deref(), Some("Succeeded" | "Failed")))
                .filter(|p| p.metadata.deletion_timestamp.is_none())
                .collect();
            if finished.len() > self.threshold {
                finished.sort_by_key(|p| p.metadata.creation_timestamp.as_ref().map(|t| t.0));
                let extra = finished.len() - self.threshold;
                for p in finished.into_iter().take(extra) {
                    self.delete(p, false, "terminated pod beyond the threshold")
                        .await?;
                }
            }
        }
        // Terminating pods that were never scheduled.
        for p in &pods {
            let node = p
                .spec
                .as_ref()
                .and_then(|s| s.node_name.as_deref())
                .unwrap_or("");
            if p.metadata.deletion_timestamp.is_some() && node.is_empty() {
                self.delete(p, true, "unscheduled terminating pod").await?;
            }
        }
        // Pods bound to nodes that do not exist.
        let nodes: Api<Node> = Api::all(self.client.clone());
        let mut bound: HashMap<String, Vec<&Arc<Pod>>> = HashMap::new();
        for p in &pods {
            if let Some(node) = p.spec.as_ref().and_then(|s| s.node_name.clone()) {
                if !node.is_empty() {
                    bound.entry(node).or_default().push(p);
                }
            }
        }
        self.missing_since.retain(|n, _| bound.contains_key(n));
        for (node, pods) in bound {
            // Only a node missing from the store is looked up live: one GET per bound node
            // each pass would hold the pass (and this subscriber, and so the shared pod
            // informer) for as many round trips as there are nodes.
            if self.nodes.get(&ObjectRef::new(&node)).is_some()
                || nodes.get_opt(&node).await?.is_some()
            {
                self.missing_since.remove(&node);
                continue;
            }
            let since = *self
                .missing_since
                .entry(node.clone())
                .or_insert_with(Instant::now);
            if since.elapsed() < QUARANTINE {
                continue;
            }
            for p in pods {
                self.delete(p, true, "pod bound to a node that no longer exists")
                    .await?;
            }
        }
        Ok(())
    }

    async fn delete(&self, pod: &Pod, force: bool, why: &str) -> Result<(), Error> {
        let ns = pod.namespace().unwrap_or_default();
        tracing::info!(controller = NAME, pod = %util::key_of(pod), why, "deleting pod");
        let api: Api<Pod> = Api::namespaced(self.client.clone(), &ns);
        let dp = if force {
            DeleteParams::default().grace_period(0)
        } else {
            DeleteParams::default()
        };
        match api.delete(&pod.name_any(), &dp).await {
            Ok(_) => Ok(()),
            Err(kube::Error::Api(s)) if s.code == 404 || s.code == 409 => Ok(()),
            Err(e) => Err(e.into()),
        }
    }
}
