//! The scheduling queue (upstream's `PriorityQueue`): an active heap ordered by priority
//! then creation time, a backoff map (1 s doubling to 10 s per failed attempt), and an
//! unschedulable map whose pods go back when the cluster changes, or after 5 minutes at the
//! latest. Every method that depends on time takes `now`, so the tests need no clock.

use std::cmp::Reverse;
use std::collections::{BTreeMap, HashMap};
use std::time::{Duration, Instant};

use k8s_openapi::api::core::v1::Pod;
use parking_lot::Mutex;
use tokio::sync::Notify;

use crate::framework::{pod_key, pod_priority};

pub const INITIAL_BACKOFF: Duration = Duration::from_secs(1);
pub const MAX_BACKOFF: Duration = Duration::from_secs(10);
pub const MAX_UNSCHEDULABLE: Duration = Duration::from_secs(300);

/// A pod with its queue bookkeeping.
#[derive(Debug, Clone)]
pub struct QueuedPod {
    pub pod: Pod,
    pub key: String,
    /// Failed scheduling attempts so far (drives the backoff).
    pub attempts: u32,
    /// When the pod last entered a queue.
    pub timestamp: Instant,
    /// The scheduling cycle in which it was popped.
    pub cycle: u64,
}

impl QueuedPod {
    pub fn new(pod: Pod, now: Instant) -> QueuedPod {
        QueuedPod {
            key: pod_key(&pod),
            pod,
            attempts: 0,
            timestamp: now,
            cycle: 0,
        }
    }
    /// `1 s · 2^(attempts-1)`, at most 10 s.
    pub fn backoff(&self) -> Duration {
        let exp = self.attempts.saturating_sub(1).min(10);
        (INITIAL_BACKOFF * 2u32.pow(exp)).min(MAX_BACKOFF)
    }
}

type ActiveKey = (Reverse<i32>, String, u64);

#[derive(Default)]
struct Inner {
    active: BTreeMap<ActiveKey, QueuedPod>,
    active_keys: HashMap<String, ActiveKey>,
    backoff: HashMap<String, QueuedPod>,
    unschedulable: HashMap<String, QueuedPod>,
    /// Popped pods being scheduled; `true` once the pod was updated meanwhile.
    in_flight: HashMap<String, bool>,
    seq: u64,
    cycle: u64,
    /// The cycle at the last cluster change: a pod that failed in an earlier or equal cycle
    /// may have missed the change, so it goes to backoff rather than unschedulable.
    move_request_cycle: u64,
}

impl Inner {
    fn push_active(&mut self, qp: QueuedPod) {
        self.remove(&qp.key);
        self.seq += 1;
        let created = qp
            .pod
            .metadata
            .creation_timestamp
            .as_ref()
            .and_then(|t| serde_json::to_value(t).ok())
            .and_then(|v| v.as_str().map(str::to_string))
            .unwrap_or_default();
        let k = (Reverse(pod_priority(&qp.pod)), created, self.seq);
        self.active_keys.insert(qp.key.clone(), k.clone());
        self.active.insert(k, qp);
    }
    fn remove(&mut self, key: &str) -> Option<QueuedPod> {
        if let Some(k) = self.active_keys.remove(key) {
            return self.active.remove(&k);
        }
        self.backoff
            .remove(key)
            .or_else(|| self.unschedulable.remove(key))
    }
    /// Backoff pods whose time has not come stay in backoff; others become active.
    fn requeue(&mut self, mut qp: QueuedPod, now: Instant) {
        if qp.attempts > 0 && qp.timestamp + qp.backoff() > now {
            self.remove(&qp.key);
            self.backoff.insert(qp.key.clone(), qp);
        } else {
            qp.timestamp = now;
            self.push_active(qp);
        }
    }
}

/// Sizes of the three queues, for `scheduler_pending_pods{queue}`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Pending {
    pub active: usize,
    pub backoff: usize,
    pub unschedulable: usize,
}

#[derive(Default)]
pub struct SchedulingQueue {
    inner: Mutex<Inner>,
    notify: Notify,
}

impl SchedulingQueue {
    pub fn new() -> SchedulingQueue {
        SchedulingQueue::default()
    }

    /// A new or updated pending pod. An update makes an unschedulable pod active again
    /// (its spec may now fit), as upstream does for updates that could help.
    pub fn add(&self, pod: Pod, now: Instant) {
        let key = pod_key(&pod);
        let mut q = self.inner.lock();
        if let Some(updated) = q.in_flight.get_mut(&key) {
            // Being scheduled: remember the update so a failure retries soon.
            *updated = true;
            return;
        }
        if let Some(k) = q.active_keys.get(&key).cloned() {
            if let Some(qp) = q.active.get_mut(&k) {
                qp.pod = pod;
            }
        } else if let Some(qp) = q.backoff.get_mut(&key) {
            qp.pod = pod;
        } else if let Some(mut qp) = q.unschedulable.remove(&key) {
            // Only changes that may help (spec, labels, annotations) retry the pod; the
            // scheduler's own status writes must not.
            let helps = qp.pod.spec != pod.spec
                || qp.pod.metadata.labels != pod.metadata.labels
                || qp.pod.metadata.annotations != pod.metadata.annotations;
            qp.pod = pod;
            if helps {
                q.requeue(qp, now);
            } else {
                q.unschedulable.insert(key, qp);
            }
        } else {
            q.push_active(QueuedPod::new(pod, now));
        }
        drop(q);
        self.notify.notify_one();
    }

    /// The pod was deleted or bound by someone else.
    pub fn delete(&self, key: &str) {
        let mut q = self.inner.lock();
        q.remove(key);
        q.in_flight.remove(key);
    }

    /// The pod's scheduling attempt ended with a bind (or the pod vanished).
    pub fn done(&self, key: &str) {
        self.inner.lock().in_flight.remove(key);
    }

    pub fn contains(&self, key: &str) -> bool {
        let q = self.inner.lock();
        q.active_keys.contains_key(key)
            || q.backoff.contains_key(key)
            || q.unschedulable.contains_key(key)
    }

    /// The next pod to schedule, if any is active now.
    pub fn try_pop(&self) -> Option<QueuedPod> {
        let mut q = self.inner.lock();
        let (_, mut qp) = q.active.pop_first()?;
        q.active_keys.remove(&qp.key);
        q.cycle += 1;
        qp.cycle = q.cycle;
        q.in_flight.insert(qp.key.clone(), false);
        Some(qp)
    }

    /// Waits for the next active pod.
    pub async fn pop(&self) -> QueuedPod {
        loop {
            let notified = self.notify.notified();
            if let Some(qp) = self.try_pop() {
                return qp;
            }
            notified.await;
        }
    }

    /// A pod that failed: to unschedulable when a plugin rejected it and nothing changed in
    /// the cluster since it was popped, else to backoff.
    pub fn add_failed(&self, mut qp: QueuedPod, rejected: bool, now: Instant) {
        qp.attempts += 1;
        qp.timestamp = now;
        let mut q = self.inner.lock();
        let Some(updated) = q.in_flight.remove(&qp.key) else {
            return; // deleted or bound meanwhile
        };
        if rejected && !updated && q.move_request_cycle < qp.cycle {
            q.unschedulable.insert(qp.key.clone(), qp);
        } else {
            q.backoff.insert(qp.key.clone(), qp);
        }
    }

    /// A cluster change (node added/updated, pod deleted) may make unschedulable pods fit:
    /// move them all to active, or backoff if their backoff has not expired.
    pub fn move_all_to_active_or_backoff(&self, now: Instant) {
        let mut q = self.inner.lock();
        let pods: Vec<QueuedPod> = q.unschedulable.drain().map(|(_, p)| p).collect();
        for qp in pods {
            q.requeue(qp, now);
        }
        q.move_request_cycle = q.cycle;
        drop(q);
        self.notify.notify_one();
    }

    /// Periodic housekeeping: expired backoffs become active; pods unschedulable for
    /// 5 minutes are retried anyway.
    pub fn flush(&self, now: Instant) {
        let mut q = self.inner.lock();
        let ready: Vec<String> = q
            .backoff
            .iter()
            .filter(|(_, p)| p.timestamp + p.backoff() <= now)
            .map(|(k, _)| k.clone())
            .collect();
        let stale: Vec<String> = q
            .unschedulable
            .iter()
            .filter(|(_, p)| p.timestamp + MAX_UNSCHEDULABLE <= now)
            .map(|(k, _)| k.clone())
            .collect();
        let moved = !ready.is_empty() || !stale.is_empty();
        for k in ready.iter().chain(&stale) {
            if let Some(mut qp) = q.remove(k) {
                qp.timestamp = now;
                q.push_active(qp);
            }
        }
        drop(q);
        if moved {
            self.notify.notify_one();
        }
    }

    pub fn pending(&self) -> Pending {
        let q = self.inner.lock();
        Pending {
            active: q.active.len(),
            backoff: q.backoff.len(),
            unschedulable: q.unschedulable.len(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::api::core::v1::PodSpec;
    use kube::api::ObjectMeta;

    fn pod(name: &str, prio: i32, created: &str) -> Pod {
        Pod {
            metadata: ObjectMeta {
                name: Some(name.into()),
                namespace: Some("default".into()),
                creation_timestamp: serde_json::from_value(serde_json::json!(created)).ok(),
                ..Default::default()
            },
            spec: Some(PodSpec {
                priority: Some(prio),
                ..Default::default()
            }),
            ..Default::default()
        }
    }

    #[test]
    fn active_order_is_priority_then_creation() {
        let q = SchedulingQueue::new();
        let now = Instant::now();
        for (name, prio, created) in [
            ("late-low", 0, "2024-01-01T00:00:03Z"),
            ("early-low", 0, "2024-01-01T00:00:01Z"),
            ("high", 10, "2024-01-01T00:00:09Z"),
            ("negative", -5, "2024-01-01T00:00:00Z"),
        ] {
            q.add(pod(name, prio, created), now);
        }
        let order: Vec<String> = std::iter::from_fn(|| q.try_pop().map(|p| p.key)).collect();
        assert_eq!(
            order,
            [
                "default/high",
                "default/early-low",
                "default/late-low",
                "default/negative"
            ]
        );
    }

    #[test]
    fn backoff_doubles_to_ten_seconds() {
        let mut qp = QueuedPod::new(pod("a", 0, "2024-01-01T00:00:00Z"), Instant::now());
        let table = [(1, 1), (2, 2), (3, 4), (4, 8), (5, 10), (12, 10), (40, 10)];
        for (attempts, secs) in table {
            qp.attempts = attempts;
            assert_eq!(
                qp.backoff(),
                Duration::from_secs(secs),
                "attempt {attempts}"
            );
        }
    }

    #[test]
    fn failed_pods_move_between_queues() {
        let q = SchedulingQueue::new();
        let t0 = Instant::now();
        q.add(pod("a", 0, "2024-01-01T00:00:00Z"), t0);
        q.add(pod("b", 0, "2024-01-01T00:00:01Z"), t0);
        let a = q.try_pop().expect("a");
        let b = q.try_pop().expect("b");
        // Rejected by a plugin with no cluster change since: unschedulable. An error: backoff.
        q.add_failed(a, true, t0);
        q.add_failed(b, false, t0);
        assert_eq!(
            q.pending(),
            Pending {
                active: 0,
                backoff: 1,
                unschedulable: 1
            }
        );
        // Backoff expires after 1 s.
        q.flush(t0 + Duration::from_millis(500));
        assert!(q.try_pop().is_none());
        q.flush(t0 + Duration::from_secs(1));
        assert_eq!(q.try_pop().expect("b back").key, "default/b");
        // A node event moves the unschedulable pod; its backoff (1 s) has passed by then.
        q.move_all_to_active_or_backoff(t0 + Duration::from_secs(2));
        let a = q.try_pop().expect("a back");
        assert_eq!((a.key.as_str(), a.attempts), ("default/a", 1));
        // A failure in a cycle that overlapped a move goes to backoff, not unschedulable.
        q.move_all_to_active_or_backoff(t0 + Duration::from_secs(2));
        q.add_failed(a, true, t0 + Duration::from_secs(2));
        assert_eq!(q.pending().backoff, 1);
    }

    #[test]
    fn unschedulable_pods_retry_after_five_minutes() {
        let q = SchedulingQueue::new();
        let t0 = Instant::now();
        q.add(pod("a", 0, "2024-01-01T00:00:00Z"), t0);
        q.move_all_to_active_or_backoff(t0); // cycle 0 change, before the pop
        let a = q.try_pop().expect("a");
        q.add_failed(a, true, t0);
        assert_eq!(q.pending().unschedulable, 1);
        q.flush(t0 + Duration::from_secs(299));
        assert_eq!(q.pending().unschedulable, 1);
        q.flush(t0 + MAX_UNSCHEDULABLE);
        assert_eq!(q.pending().active, 1);
        // Deleting removes it from every queue.
        q.delete("default/a");
        assert_eq!(q.pending(), Pending::default());
    }
}
