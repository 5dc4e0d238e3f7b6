//! The scheduler's view of the cluster: nodes and bound pods as the watches report them,
//! plus *assumed* pods — placed by this scheduler, counted on their node from Reserve on so
//! the next cycle does not overcommit while the bind is in flight, and dropped once the
//! watch shows the pod bound, the bind fails, or the assumption expires.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::Arc;
use std::time::{Duration, Instant};

use k8s_openapi::api::core::v1::{Node, Pod};
use parking_lot::RwLock;

use crate::framework::{pod_key, NodeInfo};

/// How long an assumed pod survives after its bind succeeded without the watch confirming
/// it (a lost watch event must not hold resources forever).
pub const ASSUMED_TTL: Duration = Duration::from_secs(30);

struct Assumed {
    pod: Arc<Pod>,
    expires: Option<Instant>,
}

/// A node's entry: its `NodeInfo` and the generation of its last change.
struct NodeEntry {
    info: NodeInfo,
    generation: u64,
}

impl NodeEntry {
    fn new(info: NodeInfo) -> NodeEntry {
        NodeEntry {
            info,
            generation: 0,
        }
    }
}

/// The scheduler's copy of every node, ordered by name, which [`Cache::update_snapshot`]
/// refreshes in place by copying only the nodes changed since the last update (upstream's
/// `UpdateSnapshot`): with thousands of nodes a cycle copies one or two.
#[derive(Debug, Default, Clone)]
pub struct Snapshot {
    pub nodes: Vec<NodeInfo>,
    generation: u64,
    layout: u64,
}

#[derive(Default)]
struct Inner {
    /// Every node with the pods counted on it, kept up to date incrementally (upstream's
    /// cache of `NodeInfo`s): a snapshot copies pointers instead of re-deriving every node's
    /// usage from every pod.
    nodes: BTreeMap<String, NodeEntry>,
    /// Bumped by every change to a node entry.
    generation: u64,
    /// Bumped whenever nodes are added or removed (a snapshot must be rebuilt).
    layout: u64,
    /// Pods the API reports on a node, not yet finished.
    bound: HashMap<String, Arc<Pod>>,
    assumed: HashMap<String, Assumed>,
    /// Pending pods that preemption nominated to a node (`status.nominatedNodeName`).
    nominated: HashMap<String, Pod>,
    /// The node each bound or assumed pod is counted on (bound wins over assumed), whether
    /// or not that node is known yet.
    placed: HashMap<String, String>,
}

impl Inner {
    /// Brings `key`'s placement in `nodes` in line with `bound` and `assumed`.
    fn place(&mut self, key: &str) {
        if let Some(old) = self.placed.remove(key) {
            self.generation += 1;
            if let Some(e) = self.nodes.get_mut(&old) {
                e.info.remove_pod(key);
                e.generation = self.generation;
            }
        }
        let pod = self
            .bound
            .get(key)
            .or_else(|| self.assumed.get(key).map(|a| &a.pod))
            .cloned();
        if let Some(pod) = pod {
            if let Some(node) = node_name(&pod).map(str::to_string) {
                self.generation += 1;
                if let Some(e) = self.nodes.get_mut(&node) {
                    e.info.add_pod_arc(pod);
                    e.generation = self.generation;
                }
                self.placed.insert(key.to_string(), node);
            }
        }
    }

    /// Recounts every node from scratch (after a relist).
    fn rebuild(&mut self) {
        for e in self.nodes.values_mut() {
            e.info = NodeInfo::from_arc(e.info.node.clone());
        }
        self.layout += 1;
        self.placed.clear();
        let keys: HashSet<String> = self
            .bound
            .keys()
            .chain(self.assumed.keys())
            .cloned()
            .collect();
        for k in keys {
            self.place(&k);
        }
    }
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

fn is_nominated(pod: &Pod) -> bool {
    let nominated = pod
        .status
        .as_ref()
        .and_then(|s| s.nominated_node_name.as_deref())
        .is_some_and(|n| !n.is_empty());
    nominated && node_name(pod).is_none() && !is_terminal(pod)
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
        let mut guard = self.inner.write();
        let c = &mut *guard;
        c.generation += 1;
        if let Some(e) = c.nodes.get_mut(&name) {
            let changed = relevant(&e.info.node) != relevant(&node);
            e.info.set_node(Arc::new(node));
            e.generation = c.generation;
            return changed;
        }
        let mut info = NodeInfo::new(node);
        for (key, on) in &c.placed {
            if *on != name {
                continue;
            }
            let pod = c
                .bound
                .get(key)
                .or_else(|| c.assumed.get(key).map(|a| &a.pod));
            if let Some(p) = pod {
                info.add_pod_arc(p.clone());
            }
        }
        c.nodes.insert(name, NodeEntry::new(info));
        c.layout += 1;
        true
    }

    pub fn remove_node(&self, name: &str) {
        let mut c = self.inner.write();
        if c.nodes.remove(name).is_some() {
            c.layout += 1;
        }
    }

    /// Replaces every node (a watch relist).
    pub fn replace_nodes(&self, nodes: Vec<Node>) {
        let map = nodes
            .into_iter()
            .map(|n| {
                let name = n.metadata.name.clone().unwrap_or_default();
                (name, NodeEntry::new(NodeInfo::new(n)))
            })
            .collect();
        let mut c = self.inner.write();
        c.nodes = map;
        c.rebuild();
    }

    /// A pod as the watch reports it. Bound, running pods count; a bound pod confirms (and
    /// replaces) its assumption.
    pub fn update_pod(&self, pod: Pod) {
        let key = pod_key(&pod);
        let mut c = self.inner.write();
        if is_nominated(&pod) {
            c.nominated.insert(key.clone(), pod.clone());
        } else {
            c.nominated.remove(&key);
        }
        if node_name(&pod).is_some() {
            c.assumed.remove(&key);
            if is_terminal(&pod) {
                c.bound.remove(&key);
            } else {
                c.bound.insert(key.clone(), Arc::new(pod));
            }
        } else if c.bound.remove(&key).is_none() && !c.placed.contains_key(&key) {
            return; // a pending pod: nothing counted changes
        }
        c.place(&key);
    }

    pub fn remove_pod(&self, key: &str) {
        let mut c = self.inner.write();
        c.bound.remove(key);
        c.assumed.remove(key);
        c.nominated.remove(key);
        c.place(key);
    }

    /// Replaces every bound pod (a watch relist); assumptions stay.
    pub fn replace_pods(&self, pods: Vec<Pod>) {
        let mut c = self.inner.write();
        c.bound.clear();
        c.nominated.clear();
        for pod in pods {
            if is_nominated(&pod) {
                c.nominated.insert(pod_key(&pod), pod.clone());
            }
            if node_name(&pod).is_some() && !is_terminal(&pod) {
                let key = pod_key(&pod);
                c.assumed.remove(&key);
                c.bound.insert(key, Arc::new(pod));
            }
        }
        c.rebuild();
    }

    /// Counts `pod` on `node` until confirmed or forgotten.
    pub fn assume(&self, pod: &Pod, node: &str) {
        let mut pod = pod.clone();
        if let Some(spec) = pod.spec.as_mut() {
            spec.node_name = Some(node.to_string());
        }
        let key = pod_key(&pod);
        let mut c = self.inner.write();
        let pod = Arc::new(pod);
        c.assumed
            .insert(key.clone(), Assumed { pod, expires: None });
        c.place(&key);
    }

    /// The bind succeeded: start the expiry clock.
    pub fn finish_binding(&self, key: &str, now: Instant) {
        if let Some(a) = self.inner.write().assumed.get_mut(key) {
            a.expires = Some(now + ASSUMED_TTL);
        }
    }

    /// The bind failed: release the resources.
    pub fn forget(&self, key: &str) {
        let mut c = self.inner.write();
        if c.assumed.remove(key).is_some() {
            c.place(key);
        }
    }

    pub fn is_assumed(&self, key: &str) -> bool {
        self.inner.read().assumed.contains_key(key)
    }

    pub fn cleanup_expired(&self, now: Instant) {
        let mut c = self.inner.write();
        let expired: Vec<String> = c
            .assumed
            .iter()
            .filter(|(_, a)| a.expires.is_some_and(|e| e <= now))
            .map(|(k, _)| k.clone())
            .collect();
        for k in expired {
            c.assumed.remove(&k);
            c.place(&k);
        }
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
        let mut snap = Snapshot::default();
        self.update_snapshot(&mut snap);
        match for_pod.and_then(|p| self.with_nominated(p, &snap.nodes)) {
            Some(nodes) => nodes,
            None => snap.nodes,
        }
    }

    /// Brings `snap` up to date, copying only the nodes that changed since its last update
    /// (all of them when nodes were added or removed).
    pub fn update_snapshot(&self, snap: &mut Snapshot) {
        let c = self.inner.read();
        if snap.layout != c.layout || snap.nodes.len() != c.nodes.len() {
            snap.nodes = c.nodes.values().map(|e| e.info.clone()).collect();
        } else if snap.generation != c.generation {
            for (slot, e) in snap.nodes.iter_mut().zip(c.nodes.values()) {
                if e.generation > snap.generation {
                    *slot = e.info.clone();
                }
            }
        }
        snap.generation = c.generation;
        snap.layout = c.layout;
    }

    /// A copy of `nodes` (a snapshot, ordered by name) with the pods nominated by preemption
    /// that `for_pod` must respect (see [`Cache::snapshot_for`]); `None` when there are none.
    pub fn with_nominated(&self, for_pod: &Pod, nodes: &[NodeInfo]) -> Option<Vec<NodeInfo>> {
        let c = self.inner.read();
        if c.nominated.is_empty() {
            return None;
        }
        let key = pod_key(for_pod);
        let prio = crate::framework::pod_priority(for_pod);
        let mut out: Option<Vec<NodeInfo>> = None;
        for (k, p) in &c.nominated {
            if *k == key || crate::framework::pod_priority(p) < prio {
                continue;
            }
            let Some(node) = p
                .status
                .as_ref()
                .and_then(|s| s.nominated_node_name.as_deref())
            else {
                continue;
            };
            if let Ok(i) = nodes.binary_search_by(|n| n.name().cmp(node)) {
                let mut placed = p.clone();
                if let Some(spec) = placed.spec.as_mut() {
                    spec.node_name = Some(node.to_string());
                }
                out.get_or_insert_with(|| nodes.to_vec())[i].add_pod(placed);
            }
        }
        out
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

    fn requesting(name: &str, node: Option<&str>, cpu: &str) -> Pod {
        let mut p = pod(name, node);
        p.spec = Some(
            serde_json::from_value(serde_json::json!({
                "nodeName": node,
                "containers": [{"name": "c", "resources": {"requests": {"cpu": cpu}},
                                "ports": [{"containerPort": 80, "hostPort": 8080}]}],
            }))
            .expect("spec"),
        );
        p
    }

    /// (name, pods, requested millicores, host ports) per node.
    fn usage(infos: &[NodeInfo]) -> Vec<(String, usize, i64, usize)> {
        infos
            .iter()
            .map(|n| {
                let mut keys: Vec<String> = n.pods.iter().map(|p| pod_key(p)).collect();
                keys.sort();
                (
                    format!("{}:{}", n.name(), keys.join(",")),
                    n.pods.len(),
                    n.requested.milli_cpu,
                    n.used_ports.len(),
                )
            })
            .collect()
    }

    #[test]
    fn incremental_node_infos_match_a_full_recount() {
        let c = Cache::new();
        c.set_node(node("n1"));
        // A pod bound to a node the cache does not know yet counts once the node appears.
        c.update_pod(requesting("early", Some("n2"), "100m"));
        c.set_node(node("n2"));
        c.update_pod(requesting("a", Some("n1"), "200m"));
        c.assume(&requesting("b", None, "300m"), "n1");
        c.assume(&requesting("moved", None, "50m"), "n1");
        // The watch reports `moved` bound elsewhere: counted there, once.
        c.update_pod(requesting("moved", Some("n2"), "50m"));
        c.forget("ns/b");
        c.update_pod(requesting("pending", None, "1"));
        // A node update keeps its pods.
        let mut n1 = node("n1");
        n1.metadata.labels = Some([("k".to_string(), "v".to_string())].into());
        assert!(c.set_node(n1));
        let incremental = usage(&c.snapshot());
        assert_eq!(
            incremental,
            [
                ("n1:ns/a".to_string(), 1, 200, 1),
                ("n2:ns/early,ns/moved".to_string(), 2, 150, 2),
            ]
        );
        // A relist recounts from scratch and agrees.
        c.replace_nodes(vec![node("n1"), node("n2")]);
        assert_eq!(usage(&c.snapshot()), incremental);
        c.remove_pod("ns/early");
        c.remove_node("n1");
        assert_eq!(
            usage(&c.snapshot()),
            [("n2:ns/moved".to_string(), 1, 50, 1)]
        );
    }
}
