//! Pods waiting at Permit (upstream's `waitingPodsMap`): a Permit plugin may answer Wait
//! with a timeout; the pod stays assumed on its node while its binding task waits here,
//! and binding proceeds once every waiting plugin allowed it. A rejection, the first
//! plugin's timeout, or the pod's deletion fails the binding cycle instead.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use k8s_openapi::api::core::v1::Pod;
use parking_lot::Mutex;
use tokio::sync::oneshot;
use tokio::time::Instant;

use crate::framework::{pod_key, Code, Status};

/// Upstream's `maxTimeout`: no plugin makes a pod wait longer.
pub const MAX_PERMIT_TIMEOUT: Duration = Duration::from_secs(15 * 60);

struct Entry {
    /// Tells one wait from a later wait of the same pod (so a stale timeout is ignored).
    id: u64,
    pod: Arc<Pod>,
    /// Plugins that have not allowed the pod yet: (deadline, the timeout they asked for).
    pending: HashMap<String, (Instant, Duration)>,
    /// `None` once the outcome was sent.
    tx: Option<oneshot::Sender<Status>>,
    /// Taken by the binding task that waits.
    rx: Option<oneshot::Receiver<Status>>,
}

/// A pod waiting at Permit, as [`WaitingPods::list`] reports it.
#[derive(Debug, Clone)]
pub struct WaitingPod {
    pub pod: Arc<Pod>,
    /// The plugins that still have to allow it.
    pub pending_plugins: Vec<String>,
}

/// The waiting pods of one profile, keyed by pod UID (namespace/name without one). Plugins
/// get it through `PluginArgs` to allow or reject pods other than the one at hand.
#[derive(Default)]
pub struct WaitingPods {
    pods: Mutex<HashMap<String, Entry>>,
    next_id: AtomicU64,
}

fn key_of(pod: &Pod) -> String {
    pod.metadata
        .uid
        .clone()
        .filter(|u| !u.is_empty())
        .unwrap_or_else(|| pod_key(pod))
}

/// Go's `time.Duration` text for the durations Permit uses (`1.5s`, `500ms`, `2m0s`), so
/// messages read as upstream's.
pub fn go_duration(d: Duration) -> String {
    let trim = |v: f64| {
        let s = format!("{v:.9}");
        s.trim_end_matches('0').trim_end_matches('.').to_string()
    };
    let secs = d.as_secs_f64();
    if d.is_zero() {
        "0s".into()
    } else if d < Duration::from_millis(1) {
        format!("{}µs", trim(secs * 1e6))
    } else if d < Duration::from_secs(1) {
        format!("{}ms", trim(secs * 1e3))
    } else {
        let whole = d.as_secs();
        let (h, m) = (whole / 3600, (whole % 3600) / 60);
        let s = trim(secs - (h * 3600 + m * 60) as f64);
        match (h, m) {
            (0, 0) => format!("{s}s"),
            (0, m) => format!("{m}m{s}s"),
            (h, m) => format!("{h}h{m}m{s}s"),
        }
    }
}

impl WaitingPods {
    /// Registers `pod` as waiting on `plugins` (name → timeout, capped at
    /// [`MAX_PERMIT_TIMEOUT`]); [`WaitingPods::wait`] then waits for the outcome.
    pub fn add(&self, pod: &Pod, plugins: HashMap<String, Duration>) {
        let now = Instant::now();
        let (tx, rx) = oneshot::channel();
        let entry = Entry {
            id: self.next_id.fetch_add(1, Ordering::Relaxed),
            pod: Arc::new(pod.clone()),
            pending: plugins
                .into_iter()
                .map(|(p, t)| {
                    let t = t.min(MAX_PERMIT_TIMEOUT);
                    (p, (now + t, t))
                })
                .collect(),
            tx: Some(tx),
            rx: Some(rx),
        };
        self.pods.lock().insert(key_of(pod), entry);
    }

    /// The pods still waiting for a decision.
    pub fn list(&self) -> Vec<WaitingPod> {
        self.pods
            .lock()
            .values()
            .filter(|e| e.tx.is_some())
            .map(|e| WaitingPod {
                pod: e.pod.clone(),
                pending_plugins: e.pending.keys().cloned().collect(),
            })
            .collect()
    }

    /// Whether `pod` is waiting for a decision.
    pub fn is_waiting(&self, pod: &Pod) -> bool {
        self.pods
            .lock()
            .get(&key_of(pod))
            .is_some_and(|e| e.tx.is_some())
    }

    /// `plugin` lets `pod` through; binding proceeds once no plugin is pending. Returns
    /// whether the pod was waiting.
    pub fn allow(&self, pod: &Pod, plugin: &str) -> bool {
        let mut pods = self.pods.lock();
        let Some(e) = pods.get_mut(&key_of(pod)).filter(|e| e.tx.is_some()) else {
            return false;
        };
        e.pending.remove(plugin);
        if e.pending.is_empty() {
            if let Some(tx) = e.tx.take() {
                // The receiver is gone only if the binding task was dropped: nothing to tell.
                let _ = tx.send(Status::success());
            }
        }
        true
    }

    /// `plugin` turns `pod` down with `message`: its binding cycle fails as unschedulable.
    /// Returns whether the pod was waiting.
    pub fn reject(&self, pod: &Pod, plugin: &str, message: &str) -> bool {
        self.reject_key(&key_of(pod), None, plugin, message)
    }

    fn reject_key(&self, key: &str, id: Option<u64>, plugin: &str, message: &str) -> bool {
        let mut pods = self.pods.lock();
        let Some(e) = pods
            .get_mut(key)
            .filter(|e| e.tx.is_some() && id.is_none_or(|i| i == e.id))
        else {
            return false;
        };
        e.pending.clear();
        if let Some(tx) = e.tx.take() {
            let status = Status::new(Code::Unschedulable, vec![message.to_string()]);
            let _ = tx.send(status.with_plugin(plugin));
        }
        true
    }

    /// Waits until `pod` is allowed (Success) or rejected or timed out (Unschedulable, with
    /// upstream's timeout message); Success at once if it is not waiting (upstream's
    /// `WaitOnPermit`).
    pub async fn wait(&self, pod: &Pod) -> Status {
        let key = key_of(pod);
        let Some((id, mut rx)) = self
            .pods
            .lock()
            .get_mut(&key)
            .and_then(|e| Some((e.id, e.rx.take()?)))
        else {
            return Status::success();
        };
        let status = loop {
            // The pending plugin whose timeout comes first.
            let next = self
                .pods
                .lock()
                .get(&key)
                .filter(|e| e.id == id)
                .and_then(|e| {
                    e.pending
                        .iter()
                        .min_by_key(|(_, (at, _))| *at)
                        .map(|(p, (at, t))| (p.clone(), *at, *t))
                });
            let outcome = match &next {
                Some((_, at, _)) => tokio::time::timeout_at(*at, &mut rx).await,
                None => Ok((&mut rx).await),
            };
            match (outcome, next) {
                (Ok(Ok(status)), _) => break status,
                (Ok(Err(_)), _) => break Status::error("the waiting pod was dropped"),
                (Err(_), Some((plugin, _, timeout))) => {
                    let msg = format!(
                        "rejected due to timeout after waiting {} at plugin {plugin}",
                        go_duration(timeout)
                    );
                    // Loses to an allow or reject that got in first; the loop then
                    // receives whichever outcome was sent.
                    self.reject_key(&key, Some(id), &plugin, &msg);
                }
                (Err(_), None) => {}
            }
        };
        let mut pods = self.pods.lock();
        if pods.get(&key).is_some_and(|e| e.id == id) {
            pods.remove(&key);
        }
        status
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pod(name: &str) -> Pod {
        serde_json::from_value(serde_json::json!({
            "metadata": {"name": name, "namespace": "ns", "uid": format!("uid-{name}")}
        }))
        .expect("pod")
    }

    fn plugins(list: &[(&str, u64)]) -> HashMap<String, Duration> {
        list.iter()
            .map(|(p, ms)| (p.to_string(), Duration::from_millis(*ms)))
            .collect()
    }

    #[tokio::test]
    async fn binding_waits_for_every_plugin_to_allow() {
        let w = Arc::new(WaitingPods::default());
        let p = pod("a");
        w.add(&p, plugins(&[("A", 60_000), ("B", 60_000)]));
        let waiter = {
            let (w, p) = (w.clone(), p.clone());
            tokio::spawn(async move { w.wait(&p).await })
        };
        assert!(w.allow(&p, "A"));
        assert!(w.is_waiting(&p), "B has not allowed yet");
        assert_eq!(w.list()[0].pending_plugins, ["B"]);
        assert!(w.allow(&p, "B"));
        assert!(waiter.await.expect("waiter").is_success());
        assert!(w.list().is_empty());
        assert!(!w.allow(&p, "A"), "no longer waiting");
        // Not waiting at all: nothing to wait for.
        assert!(w.wait(&pod("other")).await.is_success());
    }

    #[tokio::test]
    async fn rejection_and_timeout_fail_the_wait() {
        let w = WaitingPods::default();
        let p = pod("a");
        w.add(&p, plugins(&[("Gang", 60_000)]));
        assert!(w.reject(&p, "Gang", "group broke up"));
        let s = w.wait(&p).await;
        assert_eq!(
            (s.code, s.reasons, s.plugin.as_str()),
            (
                Code::Unschedulable,
                vec!["group broke up".to_string()],
                "Gang"
            )
        );
        // The shorter of two timeouts decides; an allow from the other plugin is not enough.
        w.add(&p, plugins(&[("Slow", 60_000), ("Quick", 20)]));
        w.allow(&p, "Slow");
        let s = w.wait(&p).await;
        assert_eq!(s.code, Code::Unschedulable);
        assert_eq!(
            s.message(),
            "rejected due to timeout after waiting 20ms at plugin Quick"
        );
        assert!(!w.is_waiting(&p));
    }

    #[test]
    fn durations_read_like_go() {
        for (d, want) in [
            (Duration::ZERO, "0s"),
            (Duration::from_millis(500), "500ms"),
            (Duration::from_secs(1), "1s"),
            (Duration::from_millis(1500), "1.5s"),
            (Duration::from_secs(90), "1m30s"),
            (Duration::from_secs(120), "2m0s"),
            (MAX_PERMIT_TIMEOUT, "15m0s"),
            (Duration::from_secs(3600), "1h0m0s"),
        ] {
            assert_eq!(go_duration(d), want);
        }
    }
}
