//! The scheduler's view of the cluster: nodes and bound pods as the watches report them,
//! plus *assumed* pods — placed by this scheduler, counted on their node from Reserve on so
//! the next cycle does not overcommit while the bind is in flight, and dropped once the
//! watch shows the pod bound, the bind fails, or the assumption expires.

use std::collections::{BTreeMap, HashMap};
use std::time::{Duration, Instant};

use k8s_openapi::api::core::v1::{Node, Pod};
use parking_lot::RwLock;

use crate::framework::{pod_key, NodeInfo};

/// How long an assumed pod survives after its bind succeeded without the watch confirming
/// it (a lost watch event must not hold resources forever).
pub const ASSUMED_TTL: Duration = Duration::from_secs(30);

struct Assumed {
    pod: Pod,
    expires: Option<Instant>,
}

#[derive(Default)]
struct Inner {
    nodes: BTreeMap<String, Node>,
    /// Pods the API reports on a node, not yet finished.
    bound: HashMap<String, Pod>,
    assumed: HashMap<String, Assumed>,
    /// Pending pods that preemption nominated to a node (`status.nominatedNodeName`).
    nominated: HashMap<String, Pod>,
}

#[derive(Default)]
pub struct Cache {
    inner: RwLock<Inner>,
}

/// Whether a pod has finished and no longer holds resources.
pub fn is_terminal(pod: &Pod) -> bool {
    matches!(
        pod.status.as_ref().and_then(|s| s.phase.as_deref()),
        Some("Succeeded") | Some("Failed")
    )
}

pub fn node_name(pod: &Pod) -> Option<&str> {
    pod.spec
        .as_ref()
        .and_then(|s| s.node_name.as_deref())
        .filter(|n| !n.is_empty())
}

impl Cache {
    pub fn new() -> Cache {
        Cache::default()
    }

    /// Stores a node; returns whether anything scheduling looks at changed (labels, spec,
    /// allocatable, images), so heartbeat-only updates do not flush the unschedulable queue.
    pub fn set_node(&self, node: Node) -> bool {
        let name = node.metadata.name.clone().unwrap_or_default();
        let relevant = |n: &Node| {
            let st = n.status.as_ref();
            (
                n.metadata.labels.clone(),
                n.spec.clone(),
                st.and_then(|s| s.allocatable.clone()),
                st.and_then(|s| s.capacity.clone()),
                st.and_then(|s| s.images.clone()),
            )
        };
        let mut c = self.inner.write();
        let changed = c
            .nodes
            .get(&name)
            .is_none_or(|old| relevant(old) != relevant(&node));
        c.nodes.insert(name, node);
        changed
    }

    pub fn remove_node(&self, name: &str) {
        self.inner.write().nodes.remove(name);
    }

    /// Replaces every node (a watch relist).
    pub fn replace_nodes(&self, nodes: Vec<Node>) {
        let map = nodes
            .into_iter()
            .map(|n| (n.metadata.name.clone().unwrap_or_default(), n))
            .collect();
        self.inner.write().nodes = map;
    }

    /// A pod as the watch reports it. Bound, running pods count; a bound pod confirms (and
    /// replaces) its assumption.
    pub fn update_pod(&self, pod: Pod) {
        let key = pod_key(&pod);
        let mut c = self.inner.write();
        let nominated = pod
            .status
            .as_ref()
            .and_then(|s| s.nominated_node_name.as_deref())
            .is_some_and(|n| !n.is_empty());
        if nominated && node_name(&pod).is_none() && !is_terminal(&pod) {
            c.nominated.insert(key.clone(), pod.clone());
        } else {
            c.nominated.remove(&key);
        }
        if node_name(&pod).is_some() {
            c.assumed.remove(&key);
            if is_terminal(&pod) {
                c.bound.remove(&key);
            } else {
                c.bound.insert(key, pod);
            }
        } else {
            c.bound.remove(&key);
        }
    }

    pub fn remove_pod(&self, key: &str) {
        let mut c = self.inner.write();
        c.bound.remove(key);
        c.assumed.remove(key);
        c.nominated.remove(key);
    }

    /// Replaces every bound pod (a watch relist); assumptions stay.
    pub fn replace_pods(&self, pods: Vec<Pod>) {
        let mut c = self.inner.write();
        c.bound.clear();
        c.nominated.clear();
        for pod in pods {
            let nominated = pod
                .status
                .as_ref()
                .and_then(|s| s.nominated_node_name.as_deref())
                .is_some_and(|n| !n.is_empty());
            if nominated && node_name(&pod).is_none() && !is_terminal(&pod) {
                c.nominated.insert(pod_key(&pod), pod.clone());
            }
            if node_name(&pod).is_some() && !is_terminal(&pod) {
                let key = pod_key(&pod);
                c.assumed.remove(&key);
                c.bound.insert(key, pod);
            }
        }
    }

    /// Counts `pod` on `node` until confirmed or forgotten.
    pub fn assume(&self, pod: &Pod, node: &str) {
        let mut pod = pod.clone();
        if let Some(spec) = pod.spec.as_mut() {
            spec.node_name = Some(node.to_string());
        }
        self.inner
            .write()
            .assumed
            .insert(pod_key(&pod), Assumed { pod, expires: None });
    }

    /// The bind succeeded: start the expiry clock.
    pub fn finish_binding(&self, key: &str, now: Instant) {
        if let Some(a) = self.inner.write().assumed.get_mut(key) {
            a.expires = Some(now + ASSUMED_TTL);
        }
    }

    /// The bind failed: release the resources.
    pub fn forget(&self, key: &str) {
        self.inner.write().assumed.remove(key);
    }

    pub fn is_assumed(&self, key: &str) -> bool {
        self.inner.read().assumed.contains_key(key)
    }

    pub fn cleanup_expired(&self, now: Instant) {
        self.inner
            .write()
            .assumed
            .retain(|_, a| a.expires.is_none_or(|e| e > now));
    }

    pub fn node_count(&self) -> usize {
        self.inner.read().nodes.len()
    }

    /// Every node with its bound and assumed pods, ordered by name.
    pub fn snapshot(&self) -> Vec<NodeInfo> {
        self.snapshot_for(None)
    }

    /// Like [`Cache::snapshot`], but when scheduling `for_pod` also counts pods nominated to
    /// a node by preemption whose priority is at least `for_pod`'s, so a lower-priority pod
    /// cannot take the room preemption freed (upstream's `addNominatedPods`).
    pub fn snapshot_for(&self, for_pod: Option<&Pod>) -> Vec<NodeInfo> {
        let c = self.inner.read();
        let mut infos: BTreeMap<&str, NodeInfo> = c
            .nodes
            .iter()
            .map(|(n, node)| (n.as_str(), NodeInfo::new(node.clone())))
            .collect();
        let pods = c.bound.values().chain(c.assumed.values().map(|a| &a.pod));
        for pod in pods {
            if let Some(info) = node_name(pod).and_then(|n| infos.get_mut(n)) {
                info.add_pod(pod.clone());
            }
        }
        if let Some(me) = for_pod {
            let key = pod_key(me);
            let prio = crate::framework::pod_priority(me);
            for (k, p) in &c.nominated {
                if *k == key || crate::framework::pod_priority(p) < prio {
                    continue;
                }
                let node = p
                    .status
                    .as_ref()
                    .and_then(|s| s.nominated_node_name.as_deref());
                if let Some(info) = node.and_then(|n| infos.get_mut(n)) {
                    let mut placed = p.clone();
                    if let Some(spec) = placed.spec.as_mut() {
                        spec.node_name = node.map(str::to_string);
                    }
                    info.add_pod(placed);
                }
            }
        }
        infos.into_values().collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::api::core::v1::PodSpec;
    use kube::api::ObjectMeta;

    fn node(name: &str) -> Node {
        Node {
            metadata: ObjectMeta {
                name: Some(name.into()),
                ..Default::default()
            },
            ..Default::default()
        }
    }

    fn pod(name: &str, node: Option<&str>) -> Pod {
        Pod {
            metadata: ObjectMeta {
                name: Some(name.into()),
                namespace: Some("ns".into()),
                ..Default::default()
            },
            spec: Some(PodSpec {
                node_name: node.map(str::to_string),
                ..Default::default()
            }),
            ..Default::default()
        }
    }

    fn counts(c: &Cache) -> Vec<(String, usize)> {
        c.snapshot()
            .iter()
            .map(|n| (n.name().to_string(), n.pods.len()))
            .collect()
    }

    #[test]
    fn assumed_pods_count_until_confirmed_forgotten_or_expired() {
        let c = Cache::new();
        assert!(c.set_node(node("n1")));
        assert!(c.set_node(node("n2")));
        assert!(
            !c.set_node(node("n2")),
            "an identical update changes nothing"
        );
        c.assume(&pod("a", None), "n1");
        c.assume(&pod("b", None), "n2");
        assert_eq!(counts(&c), [("n1".into(), 1), ("n2".into(), 1)]);
        // The watch confirms a: counted once, as bound.
        c.update_pod(pod("a", Some("n1")));
        assert!(!c.is_assumed("ns/a"));
        assert_eq!(counts(&c), [("n1".into(), 1), ("n2".into(), 1)]);
        // b's bind failed.
        c.forget("ns/b");
        assert_eq!(counts(&c), [("n1".into(), 1), ("n2".into(), 0)]);
        // c bound but never confirmed: expires after the TTL.
        let t0 = Instant::now();
        c.assume(&pod("c", None), "n2");
        c.cleanup_expired(t0 + ASSUMED_TTL * 10);
        assert!(c.is_assumed("ns/c"), "no expiry before the bind finished");
        c.finish_binding("ns/c", t0);
        c.cleanup_expired(t0 + ASSUMED_TTL);
        assert!(!c.is_assumed("ns/c"));
        c.remove_pod("ns/a");
        assert_eq!(counts(&c), [("n1".into(), 0), ("n2".into(), 0)]);
    }

    #[test]
    fn nominated_pods_count_for_equal_or_lower_priority_pods_only() {
        let c = Cache::new();
        c.set_node(node("n1"));
        let mut nominee = pod("nominee", None);
        if let Some(s) = nominee.spec.as_mut() {
            s.priority = Some(10);
        }
        nominee.status = Some(k8s_openapi::api::core::v1::PodStatus {
            nominated_node_name: Some("n1".into()),
            ..Default::default()
        });
        c.update_pod(nominee.clone());
        let with_prio = |p: i32| {
            let mut x = pod("other", None);
            if let Some(s) = x.spec.as_mut() {
                s.priority = Some(p);
            }
            x
        };
        let n = |p: &Pod| c.snapshot_for(Some(p))[0].pods.len();
        assert_eq!(n(&with_prio(5)), 1, "lower priority sees the nominee");
        assert_eq!(n(&with_prio(10)), 1, "equal priority sees the nominee");
        assert_eq!(n(&with_prio(11)), 0, "higher priority ignores it");
        assert_eq!(n(&nominee), 0, "the nominee does not block itself");
        assert_eq!(c.snapshot()[0].pods.len(), 0);
        c.update_pod(pod("nominee", Some("n1")));
        assert_eq!(n(&with_prio(5)), 1, "bound now, counted once");
    }
}
