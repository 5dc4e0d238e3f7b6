//! Helpers every controller shares: label-selector matching, pod readiness and the
//! per-key exponential backoff that stands in for client-go's rate-limited workqueue.

use std::collections::{BTreeMap, HashMap};
use std::time::Duration;

use k8s_openapi::api::core::v1::Pod;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{LabelSelector, OwnerReference, Time};
use kube::runtime::controller::Action;
use kube::ResourceExt;
use parking_lot::Mutex;

/// Whether `labels` satisfy `selector`. An empty selector matches everything, as upstream's
/// `metav1.LabelSelectorAsSelector` does; callers that must not adopt everything (workload
/// controllers) refuse empty selectors themselves.
pub fn selector_matches(selector: &LabelSelector, labels: &BTreeMap<String, String>) -> bool {
    if let Some(ml) = &selector.match_labels {
        if ml.iter().any(|(k, v)| labels.get(k) != Some(v)) {
            return false;
        }
    }
    for e in selector.match_expressions.iter().flatten() {
        let value = labels.get(&e.key);
        let values = e.values.as_deref().unwrap_or_default();
        let ok = match e.operator.as_str() {
            "In" => value.is_some_and(|v| values.contains(v)),
            "NotIn" => value.is_none_or(|v| !values.contains(v)),
            "Exists" => value.is_some(),
            "DoesNotExist" => value.is_none(),
            _ => false,
        };
        if !ok {
            return false;
        }
    }
    true
}

/// Whether a selector selects nothing in particular (no labels, no expressions).
pub fn selector_is_empty(selector: &LabelSelector) -> bool {
    selector.match_labels.as_ref().is_none_or(|m| m.is_empty())
        && selector
            .match_expressions
            .as_ref()
            .is_none_or(|m| m.is_empty())
}

/// The ownerReference with `controller: true`, if any.
pub fn controller_of<K: kube::Resource>(obj: &K) -> Option<&OwnerReference> {
    obj.meta()
        .owner_references
        .iter()
        .flatten()
        .find(|r| r.controller == Some(true))
}

/// A pod that still counts towards its controller's replicas: not being deleted and not
/// finished (upstream `controller.IsPodActive`).
pub fn pod_is_active(pod: &Pod) -> bool {
    let phase = pod.status.as_ref().and_then(|s| s.phase.as_deref());
    pod.metadata.deletion_timestamp.is_none() && !matches!(phase, Some("Succeeded" | "Failed"))
}

/// The time the pod's `Ready` condition became true, if it is ready.
pub fn pod_ready_since(pod: &Pod) -> Option<Option<&Time>> {
    pod.status
        .as_ref()?
        .conditions
        .as_ref()?
        .iter()
        .find(|c| c.type_ == "Ready" && c.status == "True")
        .map(|c| c.last_transition_time.as_ref())
}

/// Whether the pod is ready.
pub fn pod_is_ready(pod: &Pod) -> bool {
    pod_ready_since(pod).is_some()
}

/// Whether the pod has been ready for at least `min_ready_seconds` at `now`; when it is ready
/// but not yet available, also returns how long until it will be, so the caller can requeue
/// (nothing else would wake it: no watch event marks the moment a pod becomes available).
pub fn pod_available(pod: &Pod, min_ready_seconds: i32, now: &Time) -> (bool, Option<Duration>) {
    match pod_ready_since(pod) {
        None => (false, None),
        Some(_) if min_ready_seconds <= 0 => (true, None),
        Some(None) => (false, Some(Duration::from_secs(1))),
        Some(Some(since)) => {
            let ready_for = now.0.as_second() - since.0.as_second();
            let needed = i64::from(min_ready_seconds);
            if ready_for >= needed {
                (true, None)
            } else {
                let wait = u64::try_from(needed - ready_for).unwrap_or(1);
                (false, Some(Duration::from_secs(wait)))
            }
        }
    }
}

/// `namespace/name` of an object, the key spans and logs carry.
pub fn key_of<K: kube::Resource>(obj: &K) -> String {
    match obj.meta().namespace.as_deref() {
        Some(ns) => format!("{ns}/{}", obj.name_any()),
        None => obj.name_any(),
    }
}

/// Per-key exponential failure backoff: 5 ms doubling to 1000 s, reset by a success. This is
/// client-go's `ItemExponentialFailureRateLimiter`; kube-runtime's scheduler already gives
/// the dedup and one-reconcile-per-key guarantees, but leaves the retry delay to the caller.
#[derive(Default)]
pub struct Backoff {
    failures: Mutex<HashMap<String, u32>>,
}

impl Backoff {
    /// The delay before retrying `key` after one more failure.
    pub fn failed(&self, key: &str) -> Action {
        let mut map = self.failures.lock();
        let n = map.entry(key.to_string()).or_insert(0);
        let exp = (*n).min(20);
        *n = n.saturating_add(1);
        let delay = Duration::from_millis(5u64 << exp).min(Duration::from_secs(1000));
        Action::requeue(delay)
    }

    /// Forgets the failures of `key`.
    pub fn succeeded(&self, key: &str) {
        self.failures.lock().remove(key);
    }

    /// How many times `key` has failed in a row (the retries metric).
    pub fn retries(&self, key: &str) -> u32 {
        self.failures.lock().get(key).copied().unwrap_or(0)
    }
}

/// Writes events as `component` (upstream's names, e.g. `replicaset-controller`).
///
/// Events are core/v1 Events, as client-go's `record.EventRecorder` writes for
/// kube-controller-manager, because that is what `kubectl describe` and `kubectl get events`
/// read. Each call writes one Event; there is no aggregation into counts or series yet.
///
/// Recording never waits for the API: events go to a queue of [`EVENT_QUEUE`] that a
/// background task writes, [`EVENT_WRITERS`] at a time, and an event finding the queue full is
/// dropped (client-go's broadcaster: a 1,000-event queue, `DropIfChannelFull`). Written inside
/// the reconcile, a ReplicaSet's 25 `SuccessfulCreate` events cost 25 round trips before its
/// next sync; with 100 new Deployments that made creation several times slower.
///
/// Like client-go's `EventSourceObjectSpamFilter`, each involved object (per event type) may
/// have a burst of [`SPAM_BURST`] events, refilled at one per [`SPAM_REFILL`]; further events
/// are dropped. Without it a ReplicaSet of 5,000 replicas writes 5,000 `SuccessfulCreate`
/// events, one API write per pod, inside its reconcile.
#[derive(Clone)]
pub struct Recorder {
    component: &'static str,
    spam: std::sync::Arc<Mutex<HashMap<String, SpamBucket>>>,
    queue: tokio::sync::mpsc::Sender<k8s_openapi::api::core::v1::Event>,
}

/// Events waiting to be written before new ones are dropped (client-go's
/// `maxQueuedEvents`).
pub const EVENT_QUEUE: usize = 1000;
/// Event writes in flight at once per recorder.
pub const EVENT_WRITERS: usize = 4;

/// Events an object may have in a burst (client-go's `defaultSpamBurst`).
pub const SPAM_BURST: f64 = 25.0;
/// How long one more event takes to be allowed (client-go's `defaultSpamQPS`: 1/300).
pub const SPAM_REFILL: Duration = Duration::from_secs(300);
/// Objects remembered by the spam filter before full buckets are forgotten (client-go's
/// `maxLruCacheEntries`).
const SPAM_OBJECTS: usize = 4096;

struct SpamBucket {
    tokens: f64,
    at: std::time::Instant,
}

impl SpamBucket {
    fn refill(&mut self, now: std::time::Instant) {
        let earned = now.duration_since(self.at).as_secs_f64() / SPAM_REFILL.as_secs_f64();
        self.tokens = (self.tokens + earned).min(SPAM_BURST);
        self.at = now;
    }
}

impl Recorder {
    /// A recorder writing with `client` as `component`. Spawns its writer task (on the
    /// current Tokio runtime), which ends once every clone of the recorder is dropped.
    pub fn new(client: &kube::Client, component: &'static str) -> Self {
        let (queue, events) = tokio::sync::mpsc::channel(EVENT_QUEUE);
        tokio::spawn(write_events(client.clone(), events));
        Recorder {
            component,
            spam: Default::default(),
            queue,
        }
    }

    /// Whether one more event about the object `key` is allowed now (and takes it).
    fn allow(&self, key: &str) -> bool {
        let now = std::time::Instant::now();
        let mut spam = self.spam.lock();
        if spam.len() >= SPAM_OBJECTS && !spam.contains_key(key) {
            spam.retain(|_, b| {
                b.refill(now);
                b.tokens < SPAM_BURST
            });
        }
        let bucket = spam.entry(key.to_string()).or_insert(SpamBucket {
            tokens: SPAM_BURST,
            at: now,
        });
        bucket.refill(now);
        if bucket.tokens >= 1.0 {
            bucket.tokens -= 1.0;
            true
        } else {
            false
        }
    }

    /// Records a Normal event about `obj`. Best effort and never waits: an Event that cannot
    /// be queued or written is logged and never fails the reconcile that caused it.
    pub fn normal<K>(&self, obj: &K, reason: &str, message: String)
    where
        K: kube::Resource<DynamicType = ()>,
    {
        use k8s_openapi::api::core::v1::{Event, EventSource};
        use k8s_openapi::apimachinery::pkg::apis::meta::v1::{MicroTime, ObjectMeta};
        let ns = obj
            .meta()
            .namespace
            .clone()
            .unwrap_or_else(|| "default".into());
        let spam_key = format!(
            "{}/{ns}/{}/{}/Normal",
            K::kind(&()),
            obj.meta().name.as_deref().unwrap_or_default(),
            obj.meta().uid.as_deref().unwrap_or_default(),
        );
        if !self.allow(&spam_key) {
            tracing::debug!(reason, "event dropped by the spam filter");
            return;
        }
        let now = now();
        let suffix: u64 = rand::random();
        let ev = Event {
            metadata: ObjectMeta {
                name: Some(format!(
                    "{}.{suffix:016x}",
                    obj.meta().name.clone().unwrap_or_default()
                )),
                namespace: Some(ns.clone()),
                ..Default::default()
            },
            involved_object: obj.object_ref(&()),
            reason: Some(reason.into()),
            message: Some(message),
            type_: Some("Normal".into()),
            source: Some(EventSource {
                component: Some(self.component.into()),
                host: None,
            }),
            first_timestamp: Some(now.clone()),
            last_timestamp: Some(now.clone()),
            event_time: Some(MicroTime(now.0)),
            count: Some(1),
            reporting_component: Some(self.component.into()),
            reporting_instance: Some(self.component.into()),
            action: None,
            related: None,
            series: None,
        };
        if self.queue.try_send(ev).is_err() {
            tracing::debug!(reason, "event dropped: the event queue is full");
        }
    }
}

/// The recorder's writer: creates each queued Event, a few at a time, until the recorder is
/// gone and the queue drained.
async fn write_events(
    client: kube::Client,
    events: tokio::sync::mpsc::Receiver<k8s_openapi::api::core::v1::Event>,
) {
    use futures::StreamExt;
    futures::stream::unfold(
        events,
        |mut rx| async move { rx.recv().await.map(|e| (e, rx)) },
    )
    .for_each_concurrent(EVENT_WRITERS, |ev| {
        let client = client.clone();
        async move {
            let ns = ev.metadata.namespace.clone().unwrap_or_default();
            let api: kube::Api<k8s_openapi::api::core::v1::Event> =
                kube::Api::namespaced(client, &ns);
            if let Err(error) = api.create(&kube::api::PostParams::default(), &ev).await {
                tracing::debug!(%error, reason = ?ev.reason, "could not record event");
            }
        }
    })
    .await;
}

/// The current time, as API objects spell it.
pub fn now() -> Time {
    Time(k8s_openapi::jiff::Timestamp::now())
}

/// Every controller's `error_policy`: log with the key, count the retry, and requeue after
/// the key's exponential back-off.
pub fn retry_after_error<K: kube::Resource>(
    controller: &'static str,
    obj: &K,
    error: &crate::Error,
    metrics: &crate::metrics::Metrics,
    backoff: &Backoff,
) -> kube::runtime::controller::Action {
    let key = key_of(obj);
    tracing::warn!(controller, %key, %error, "reconcile failed; retrying");
    metrics.retry(controller);
    backoff.failed(&key)
}

/// Every controller's `reconcile` around its `sync`: a span carrying the key, the duration
/// metric, and the key's back-off reset on success.
pub async fn reconciled<F>(
    controller: &'static str,
    key: &str,
    metrics: &crate::metrics::Metrics,
    backoff: &Backoff,
    sync: F,
) -> Result<kube::runtime::controller::Action, crate::Error>
where
    F: std::future::Future<Output = Result<kube::runtime::controller::Action, crate::Error>>,
{
    use tracing::Instrument;
    let span = tracing::info_span!("reconcile", controller, key = %key);
    let timer = metrics.start(controller);
    let result = sync.instrument(span).await;
    timer.finish(result.is_ok());
    if result.is_ok() {
        backoff.succeeded(key);
    }
    result
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelectorRequirement;

    #[test]
    fn selectors() {
        let labels = BTreeMap::from([("app".to_string(), "web".to_string())]);
        let mut sel = LabelSelector {
            match_labels: Some(BTreeMap::from([("app".into(), "web".into())])),
            ..Default::default()
        };
        assert!(selector_matches(&sel, &labels));
        sel.match_expressions = Some(vec![LabelSelectorRequirement {
            key: "tier".into(),
            operator: "Exists".into(),
            values: None,
        }]);
        assert!(!selector_matches(&sel, &labels));
        assert!(selector_is_empty(&LabelSelector::default()));
    }

    #[tokio::test]
    async fn spam_filter_allows_a_burst_per_object() {
        let client = kube::Client::try_from(kube::Config::new(
            "http://127.0.0.1:1".parse().expect("url"),
        ))
        .expect("client");
        let r = Recorder::new(&client, "test");
        let allowed = (0..100).filter(|_| r.allow("a")).count();
        assert_eq!(allowed, SPAM_BURST as usize);
        assert!(r.allow("b"), "another object has its own burst");
    }

    #[test]
    fn backoff_doubles_and_resets() {
        let b = Backoff::default();
        assert_eq!(b.failed("a"), Action::requeue(Duration::from_millis(5)));
        assert_eq!(b.failed("a"), Action::requeue(Duration::from_millis(10)));
        b.succeeded("a");
        assert_eq!(b.failed("a"), Action::requeue(Duration::from_millis(5)));
    }
}
