//! The taint eviction controller (upstream `taint-eviction-controller`, the NoExecute taint
//! manager): deletes the pods of a node with a NoExecute taint they do not tolerate at once,
//! and those that tolerate it with `tolerationSeconds` once that long has passed since the
//! taint's `timeAdded` (the shortest of the tolerations used wins, as upstream). Each
//! eviction is a pod DELETE through the API with the pod's own grace period and a
//! `TaintManagerEviction` event, so the pod's controller replaces it.
//!
//! **Default tolerations.** Upstream's `DefaultTolerationSeconds` admission plugin gives
//! every pod without one a `node.kubernetes.io/not-ready:NoExecute` and a
//! `node.kubernetes.io/unreachable:NoExecute` toleration with `tolerationSeconds: 300`, so an
//! ordinary pod survives five minutes of node trouble. Coxswain's API server does not admit
//! pods that way (and this controller may not change it), so the controller applies the same
//! rule at eviction time instead: a pod with no toleration matching one of those two taints
//! is treated as if it had the default one (`--default-not-ready-toleration-seconds`,
//! `--default-unreachable-toleration-seconds`, upstream's API server flag names, 300 s each).
//! The visible difference is that `kubectl get pod -o yaml` does not show the tolerations.
//!
//! Pods of a node that is deleted are the pod GC's ([`super::podgc`]), as upstream.

use std::collections::HashSet;
use std::sync::Arc;
use std::time::Duration;

use futures::future::BoxFuture;
use futures::{FutureExt, StreamExt};
use k8s_openapi::api::core::v1::{Node, Pod, Taint, Toleration};
use k8s_openapi::jiff::{SignedDuration, Timestamp};
use kube::api::DeleteParams;
use kube::runtime::reflector::{ObjectRef, Store};
use kube::{Api, Client, ResourceExt};
use tracing::Instrument;

use crate::controllers::nodelifecycle::{NOT_READY, UNREACHABLE};
use crate::informers::Informers;
use crate::metrics::Metrics;
use crate::util::{self, Recorder};
use crate::{Error, NodeSettings};

/// The controller's name in `--controllers` and metrics.
pub const NAME: &str = "taint-eviction-controller";

/// The longest a pass waits without a pod or node change (a safety net for missed timers).
const PERIOD: Duration = Duration::from_secs(10);
/// Changes are gathered for this long before a pass.
const DEBOUNCE: Duration = Duration::from_millis(200);

/// The controller as a future that runs until dropped.
pub fn controller(
    client: Client,
    informers: &Informers,
    metrics: Arc<Metrics>,
    settings: NodeSettings,
) -> Option<BoxFuture<'static, ()>> {
    let pod_changes = informers.pods.subscribe()?.map(|_| ());
    let node_changes = informers.nodes.subscribe()?.map(|_| ());
    let mut changes = futures::stream::select(pod_changes, node_changes);
    let mut te = TaintEviction {
        recorder: Recorder::new(&client, "taint-eviction-controller"),
        client,
        pods: informers.pods.store(),
        nodes: informers.nodes.store(),
        settings,
        evicted: HashSet::new(),
    };
    Some(
        async move {
            let mut wait = PERIOD;
            loop {
                tokio::select! {
                    next = changes.next() => if next.is_none() { return },
                    () = tokio::time::sleep(wait) => {}
                }
                tokio::time::sleep(DEBOUNCE).await;
                while changes.next().now_or_never().flatten().is_some() {}
                let timer = metrics.start(NAME);
                let result = te.pass().await;
                timer.finish(result.is_ok());
                wait = match result {
                    Ok(next) => next.map_or(PERIOD, |d| d.min(PERIOD)),
                    Err(error) => {
                        metrics.retry(NAME);
                        tracing::warn!(controller = NAME, %error, "taint eviction pass failed");
                        Duration::from_secs(1)
                    }
                };
            }
        }
        .boxed(),
    )
}

struct TaintEviction {
    client: Client,
    recorder: Recorder,
    pods: Store<Pod>,
    nodes: Store<Node>,
    settings: NodeSettings,
    /// Pods already deleted by this controller (by uid), so a store that lags behind the
    /// deletion does not cause a second DELETE and event.
    evicted: HashSet<String>,
}

impl TaintEviction {
    /// One pass over every bound pod; returns how long until the next toleration runs out.
    async fn pass(&mut self) -> Result<Option<Duration>, Error> {
        let pods = self.pods.state();
        self.evicted
            .retain(|uid| pods.iter().any(|p| p.uid().as_deref() == Some(uid)));
        let now = Timestamp::now();
        let mut next: Option<Duration> = None;
        for pod in pods {
            let Some(node_name) = pod.spec.as_ref().and_then(|s| s.node_name.as_deref()) else {
                continue;
            };
            let uid = pod.uid().unwrap_or_default();
            if pod.metadata.deletion_timestamp.is_some() || self.evicted.contains(&uid) {
                continue;
            }
            let Some(node) = self.nodes.get(&ObjectRef::new(node_name)) else {
                continue;
            };
            let taints: Vec<Taint> = node
                .spec
                .as_ref()
                .and_then(|s| s.taints.as_ref())
                .into_iter()
                .flatten()
                .filter(|t| t.effect == "NoExecute")
                .cloned()
                .collect();
            if taints.is_empty() {
                continue;
            }
            let tolerations = self.tolerations(&pod);
            let Some(due) = eviction_time(&taints, &tolerations, now) else {
                continue;
            };
            if due > now {
                let left = Duration::try_from(due.duration_since(now)).unwrap_or_default();
                next = Some(next.map_or(left, |n| n.min(left)));
                continue;
            }
            let key = util::key_of(pod.as_ref());
            let span = tracing::info_span!("evict", controller = NAME, key = %key);
            self.evict(&pod, node_name).instrument(span).await?;
            self.evicted.insert(uid);
        }
        Ok(next)
    }

    /// The pod's tolerations plus the defaults the `DefaultTolerationSeconds` admission
    /// plugin would have added (see the module docs).
    fn tolerations(&self, pod: &Pod) -> Vec<Toleration> {
        let mut out = pod
            .spec
            .as_ref()
            .and_then(|s| s.tolerations.clone())
            .unwrap_or_default();
        for (key, seconds) in [
            (
                NOT_READY,
                self.settings.default_not_ready_toleration_seconds,
            ),
            (
                UNREACHABLE,
                self.settings.default_unreachable_toleration_seconds,
            ),
        ] {
            let taint = Taint {
                key: key.into(),
                effect: "NoExecute".into(),
                ..Default::default()
            };
            if !out.iter().any(|t| tolerates(t, &taint)) {
                out.push(Toleration {
                    key: Some(key.into()),
                    operator: Some("Exists".into()),
                    effect: Some("NoExecute".into()),
                    toleration_seconds: Some(seconds),
                    value: None,
                });
            }
        }
        out
    }

    async fn evict(&self, pod: &Pod, node: &str) -> Result<(), Error> {
        let ns = pod.namespace().unwrap_or_default();
        let name = pod.name_any();
        tracing::info!(controller = NAME, pod = %util::key_of(pod), node, "evicting pod for a NoExecute taint");
        self.recorder.normal(
            pod,
            "TaintManagerEviction",
            format!("Marking for deletion Pod {ns}/{name}"),
        );
        let api: Api<Pod> = Api::namespaced(self.client.clone(), &ns);
        match api.delete(&name, &DeleteParams::default()).await {
            Ok(_) => Ok(()),
            Err(kube::Error::Api(s)) if s.code == 404 => Ok(()),
            Err(e) => Err(e.into()),
        }
    }
}

/// Whether `toleration` tolerates `taint` (upstream `Toleration.ToleratesTaint`).
pub fn tolerates(toleration: &Toleration, taint: &Taint) -> bool {
    if let Some(effect) = toleration.effect.as_deref() {
        if !effect.is_empty() && effect != taint.effect {
            return false;
        }
    }
    let key = toleration.key.as_deref().unwrap_or("");
    if !key.is_empty() && key != taint.key {
        return false;
    }
    match toleration.operator.as_deref().unwrap_or("Equal") {
        "Exists" => true,
        "Equal" | "" => {
            // An empty key with Equal is invalid upstream; it matches nothing.
            !key.is_empty()
                && toleration.value.as_deref().unwrap_or("") == taint.value.as_deref().unwrap_or("")
        }
        _ => false,
    }
}

/// When a pod with `tolerations` must leave a node with the NoExecute `taints`: `now` if one
/// taint is not tolerated, `None` if every taint is tolerated forever, otherwise the
/// earliest `timeAdded` plus the shortest `tolerationSeconds` among the tolerations used
/// (upstream `getMinTolerationTime`; negative seconds count as zero).
pub fn eviction_time(
    taints: &[Taint],
    tolerations: &[Toleration],
    now: Timestamp,
) -> Option<Timestamp> {
    let mut shortest: Option<i64> = None;
    let mut since: Option<Timestamp> = None;
    for taint in taints {
        let used: Vec<&Toleration> = tolerations.iter().filter(|t| tolerates(t, taint)).collect();
        if used.is_empty() {
            return Some(now);
        }
        for t in used {
            if let Some(s) = t.toleration_seconds {
                let s = s.max(0);
                shortest = Some(shortest.map_or(s, |m| m.min(s)));
            }
        }
        let added = taint.time_added.as_ref().map_or(now, |t| t.0);
        since = Some(since.map_or(added, |s| s.min(added)));
    }
    let seconds = shortest?;
    let since = since.unwrap_or(now);
    Some(
        since
            .checked_add(SignedDuration::from_secs(seconds))
            .unwrap_or(Timestamp::MAX),
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;

    fn taint(key: &str, added: Timestamp) -> Taint {
        Taint {
            key: key.into(),
            effect: "NoExecute".into(),
            value: None,
            time_added: Some(Time(added)),
        }
    }

    fn toleration(key: &str, seconds: Option<i64>) -> Toleration {
        Toleration {
            key: Some(key.into()),
            operator: Some("Exists".into()),
            effect: Some("NoExecute".into()),
            toleration_seconds: seconds,
            value: None,
        }
    }

    #[test]
    fn eviction_times() {
        let now = Timestamp::now();
        let added = now - SignedDuration::from_secs(10);
        let t = [taint(UNREACHABLE, added)];
        assert_eq!(eviction_time(&t, &[], now), Some(now), "untolerated: now");
        assert_eq!(
            eviction_time(&t, &[toleration(UNREACHABLE, None)], now),
            None,
            "tolerated forever"
        );
        assert_eq!(
            eviction_time(&t, &[toleration(UNREACHABLE, Some(30))], now),
            Some(added + SignedDuration::from_secs(30))
        );
        let everything = Toleration {
            operator: Some("Exists".into()),
            ..Default::default()
        };
        assert!(tolerates(&everything, &t[0]));
        let other = toleration("dedicated", Some(1));
        assert!(!tolerates(&other, &t[0]));
    }
}
