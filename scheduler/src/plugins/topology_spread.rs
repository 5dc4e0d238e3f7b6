//! PodTopologySpread: `whenUnsatisfiable: DoNotSchedule` constraints filter (skew against
//! the least loaded domain must stay within maxSkew), `ScheduleAnyway` constraints score.
//! Eligible domains come from nodes that carry the topology key and match the pod's node
//! selector/affinity (nodeAffinityPolicy Honor, nodeTaintsPolicy Ignore: the defaults).
//!
//! A pod without constraints of its own gets the profile's default constraints (upstream's
//! `defaultingType`): `System` (the default) spreads by zone (maxSkew 5) and hostname
//! (maxSkew 3), both ScheduleAnyway; `List` uses the args' `defaultConstraints`. Default
//! constraints select the pods of the same Services, ReplicaSet or StatefulSet (upstream's
//! `DefaultSelector`); a pod that belongs to none gets no default spreading.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::Arc;

use k8s_openapi::api::core::v1::{Pod, TopologySpreadConstraint};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{
    LabelSelector, LabelSelectorRequirement, ObjectMeta,
};

use super::node_affinity::pod_matches_node;
use super::selector;
use crate::framework::{
    CycleState, FilterPlugin, NodeInfo, Plugin, PreFilterPlugin, PreScorePlugin, ScorePlugin,
    Status, MAX_NODE_SCORE,
};
use crate::listers::Listers;

pub const ERR_CONSTRAINTS: &str = "node(s) didn't match pod topology spread constraints";
pub const ERR_MISSING_LABEL: &str =
    "node(s) didn't match pod topology spread constraints (missing required label)";

const ZONE: &str = "topology.kubernetes.io/zone";
const HOSTNAME: &str = "kubernetes.io/hostname";

/// The plugin's args (`PodTopologySpreadArgs`).
#[derive(Debug, Clone, PartialEq)]
pub struct Args {
    pub default_constraints: Vec<TopologySpreadConstraint>,
    /// `defaultingType: System`: the built-in defaults, and nodes missing one of their keys
    /// are still scored (upstream lets hostname spreading work on nodes without zones).
    pub system_defaulted: bool,
}

/// Upstream's `systemDefaultConstraints`.
pub fn system_default_constraints() -> Vec<TopologySpreadConstraint> {
    [(ZONE, 5), (HOSTNAME, 3)]
        .into_iter()
        .map(|(key, skew)| TopologySpreadConstraint {
            topology_key: key.into(),
            max_skew: skew,
            when_unsatisfiable: "ScheduleAnyway".into(),
            ..Default::default()
        })
        .collect()
}

impl Args {
    /// Reads `pluginConfig` args, with upstream's validation: `System` takes no list, list
    /// entries carry no selector, and `defaultingType` is `System` (the default) or `List`.
    pub fn parse(v: &serde_json::Value) -> Result<Args, String> {
        let defaulting = v
            .get("defaultingType")
            .and_then(|t| t.as_str())
            .unwrap_or("System");
        let list: Vec<TopologySpreadConstraint> = match v.get("defaultConstraints") {
            None | Some(serde_json::Value::Null) => Vec::new(),
            Some(l) => serde_json::from_value(l.clone())
                .map_err(|e| format!("PodTopologySpread defaultConstraints: {e}"))?,
        };
        if list.iter().any(|c| c.label_selector.is_some()) {
            return Err(
                "PodTopologySpread defaultConstraints: labelSelector is not allowed".into(),
            );
        }
        match defaulting {
            "System" if list.is_empty() => Ok(Args {
                default_constraints: system_default_constraints(),
                system_defaulted: true,
            }),
            "System" => Err(
                "PodTopologySpread: defaultConstraints must be empty with defaultingType System"
                    .into(),
            ),
            "List" => Ok(Args {
                default_constraints: list,
                system_defaulted: false,
            }),
            other => Err(format!(
                "PodTopologySpread: defaultingType {other:?} is neither System nor List"
            )),
        }
    }
}

pub struct PodTopologySpread {
    pub args: Args,
    /// Services, ReplicaSets and StatefulSets, for the default selector.
    pub listers: Arc<Listers>,
}

impl PodTopologySpread {
    /// From `pluginConfig` args; invalid args (refused by `config` before this is built)
    /// fall back to the system defaults.
    pub fn new(args: &serde_json::Value, listers: Arc<Listers>) -> PodTopologySpread {
        let args = Args::parse(args).unwrap_or(Args {
            default_constraints: system_default_constraints(),
            system_defaulted: true,
        });
        PodTopologySpread { args, listers }
    }

    /// The pod's own constraints for `mode`, or the defaults with the pod's default
    /// selector when it has none (upstream's `buildDefaultConstraints`).
    pub fn constraints(&self, pod: &Pod, mode: &str) -> Vec<TopologySpreadConstraint> {
        let own = pod
            .spec
            .as_ref()
            .and_then(|s| s.topology_spread_constraints.as_ref())
            .filter(|c| !c.is_empty());
        if let Some(own) = own {
            return own
                .iter()
                .filter(|c| c.when_unsatisfiable == mode)
                .map(|c| with_match_label_keys(c, pod))
                .collect();
        }
        let mut defaults: Vec<TopologySpreadConstraint> = self
            .args
            .default_constraints
            .iter()
            .filter(|c| c.when_unsatisfiable == mode)
            .cloned()
            .collect();
        if defaults.is_empty() {
            return defaults;
        }
        let Some(sel) = default_selector(pod, &self.listers) else {
            return Vec::new();
        };
        for c in &mut defaults {
            c.label_selector = Some(sel.clone());
        }
        defaults
    }

    fn require_all_topologies(&self, pod: &Pod) -> bool {
        let own = pod
            .spec
            .as_ref()
            .and_then(|s| s.topology_spread_constraints.as_ref())
            .is_some_and(|c| !c.is_empty());
        own || !self.args.system_defaulted
    }
}

impl Plugin for PodTopologySpread {
    fn name(&self) -> &'static str {
        "PodTopologySpread"
    }
}

/// `matchLabelKeys`: the pod's values for those keys are added to the selector.
fn with_match_label_keys(c: &TopologySpreadConstraint, pod: &Pod) -> TopologySpreadConstraint {
    let mut c = c.clone();
    let keys = c.match_label_keys.take().unwrap_or_default();
    let labels = labels_of(&pod.metadata);
    let extra: Vec<LabelSelectorRequirement> = keys
        .iter()
        .filter_map(|k| {
            labels.get(k).map(|v| LabelSelectorRequirement {
                key: k.clone(),
                operator: "In".into(),
                values: Some(vec![v.clone()]),
            })
        })
        .collect();
    if !extra.is_empty() {
        if let Some(sel) = c.label_selector.as_mut() {
            sel.match_expressions
                .get_or_insert_with(Vec::new)
                .extend(extra);
        }
    }
    c
}

/// Upstream's `DefaultSelector`: the union of the selectors of the Services that select the
/// pod and of its controlling ReplicaSet or StatefulSet, or `None` when that is empty.
pub fn default_selector(pod: &Pod, listers: &Listers) -> Option<LabelSelector> {
    let ns = pod.metadata.namespace.as_deref().unwrap_or("default");
    let labels = labels_of(&pod.metadata);
    let mut match_labels: BTreeMap<String, String> = BTreeMap::new();
    for svc in listers.services.list_namespace(ns) {
        // A Service without a selector selects nothing, not everything.
        let Some(sel) = svc.spec.as_ref().and_then(|s| s.selector.as_ref()) else {
            continue;
        };
        if sel.iter().all(|(k, v)| labels.get(k) == Some(v)) {
            match_labels.extend(sel.clone());
        }
    }
    let mut expressions: Vec<LabelSelectorRequirement> = Vec::new();
    let owner = pod
        .metadata
        .owner_references
        .iter()
        .flatten()
        .find(|o| o.controller == Some(true));
    if let Some(o) = owner.filter(|o| o.api_version == "apps/v1") {
        let sel = match o.kind.as_str() {
            "ReplicaSet" => listers
                .replica_sets
                .get(ns, &o.name)
                .and_then(|rs| rs.spec.as_ref().map(|s| s.selector.clone())),
            "StatefulSet" => listers
                .stateful_sets
                .get(ns, &o.name)
                .and_then(|ss| ss.spec.as_ref().map(|s| s.selector.clone())),
            _ => None,
        };
        if let Some(sel) = sel {
            // Added as requirements, so a key both selectors name must satisfy both.
            for (k, v) in sel.match_labels.iter().flatten() {
                expressions.push(LabelSelectorRequirement {
                    key: k.clone(),
                    operator: "In".into(),
                    values: Some(vec![v.clone()]),
                });
            }
            expressions.extend(sel.match_expressions.iter().flatten().cloned());
        }
    }
    if match_labels.is_empty() && expressions.is_empty() {
        return None;
    }
    Some(LabelSelector {
        match_labels: Some(match_labels).filter(|m| !m.is_empty()),
        match_expressions: Some(expressions).filter(|e| !e.is_empty()),
    })
}

/// An object's labels without copying them (no labels reads as none).
fn labels_of(meta: &ObjectMeta) -> &BTreeMap<String, String> {
    static NONE: BTreeMap<String, String> = BTreeMap::new();
    meta.labels.as_ref().unwrap_or(&NONE)
}

/// Pods on `node` that `c` counts: same namespace, not terminating, selected.
fn count_matching(pod: &Pod, c: &TopologySpreadConstraint, node: &NodeInfo) -> i64 {
    let ns = pod.metadata.namespace.as_deref();
    node.pods
        .iter()
        .filter(|p| {
            p.metadata.namespace.as_deref() == ns
                && p.metadata.deletion_timestamp.is_none()
                && selector::matches(c.label_selector.as_ref(), labels_of(&p.metadata))
        })
        .count() as i64
}

/// Per constraint: matching pods per domain value.
struct Counts(Vec<(TopologySpreadConstraint, HashMap<String, i64>)>);

fn count(pod: &Pod, cs: Vec<TopologySpreadConstraint>, nodes: &[&NodeInfo]) -> Counts {
    let mut out = Vec::new();
    for c in cs {
        let mut counts: HashMap<String, i64> = HashMap::new();
        for n in nodes {
            let labels = labels_of(&n.node.metadata);
            let Some(domain) = labels.get(&c.topology_key) else {
                continue;
            };
            if !pod_matches_node(pod, &n.node) {
                continue;
            }
            *counts.entry(domain.clone()).or_default() += count_matching(pod, &c, n);
        }
        out.push((c, counts));
    }
    Counts(out)
}

fn self_match(pod: &Pod, c: &TopologySpreadConstraint) -> i64 {
    i64::from(selector::matches(
        c.label_selector.as_ref(),
        labels_of(&pod.metadata),
    ))
}

impl PreFilterPlugin for PodTopologySpread {
    fn pre_filter(&self, state: &mut CycleState, pod: &Pod, nodes: &[NodeInfo]) -> Status {
        let cs = self.constraints(pod, "DoNotSchedule");
        if cs.is_empty() {
            return Status::skip();
        }
        let all: Vec<&NodeInfo> = nodes.iter().collect();
        state.write("PodTopologySpread", count(pod, cs, &all));
        Status::success()
    }
}

impl FilterPlugin for PodTopologySpread {
    fn filter(&self, state: &CycleState, pod: &Pod, node: &NodeInfo) -> Status {
        let Some(Counts(counts)) = state.read::<Counts>("PodTopologySpread") else {
            return Status::success();
        };
        let labels = labels_of(&node.node.metadata);
        for (c, per_domain) in counts {
            let Some(domain) = labels.get(&c.topology_key) else {
                return Status::unresolvable(ERR_MISSING_LABEL);
            };
            let mut min = per_domain.values().copied().min().unwrap_or(0);
            // Fewer eligible domains than minDomains: the global minimum counts as 0.
            if c.min_domains
                .is_some_and(|m| (per_domain.len() as i64) < i64::from(m))
            {
                min = 0;
            }
            let here = per_domain.get(domain).copied().unwrap_or(0);
            if here + self_match(pod, c) - min > i64::from(c.max_skew) {
                return Status::unschedulable(ERR_CONSTRAINTS);
            }
        }
        Status::success()
    }
}

/// What Score reads: the soft constraints, matching pods per domain value of each
/// (hostname domains are counted per node at Score), each constraint's weight, and the
/// nodes not scored for lacking a topology key.
struct ScoreState {
    constraints: Vec<TopologySpreadConstraint>,
    counts: Vec<HashMap<String, i64>>,
    weights: Vec<f64>,
    ignored: HashSet<String>,
}

const SCORE_KEY: &str = "PodTopologySpreadScore";

fn has_all_keys(node: &NodeInfo, cs: &[TopologySpreadConstraint]) -> bool {
    let labels = node.node.metadata.labels.as_ref();
    cs.iter()
        .all(|c| labels.is_some_and(|l| l.contains_key(&c.topology_key)))
}

impl PreScorePlugin for PodTopologySpread {
    /// Upstream's `initPreScoreState` over the feasible nodes (which domains exist, which
    /// nodes are ignored), then matching pods counted on every node.
    fn pre_score(
        &self,
        state: &mut CycleState,
        pod: &Pod,
        nodes: &[&NodeInfo],
        all: &[NodeInfo],
    ) -> Status {
        let cs = self.constraints(pod, "ScheduleAnyway");
        if cs.is_empty() || nodes.is_empty() {
            return Status::skip();
        }
        let require_all = self.require_all_topologies(pod);
        let mut ignored = HashSet::new();
        let mut counts: Vec<HashMap<String, i64>> = vec![HashMap::new(); cs.len()];
        for n in nodes {
            if require_all && !has_all_keys(n, &cs) {
                ignored.insert(n.name().to_string());
                continue;
            }
            let labels = labels_of(&n.node.metadata);
            for (i, c) in cs.iter().enumerate() {
                if c.topology_key == HOSTNAME {
                    continue;
                }
                let value = labels.get(&c.topology_key).map_or("", String::as_str);
                if !counts[i].contains_key(value) {
                    counts[i].insert(value.to_string(), 0);
                }
            }
        }
        // Smaller topologies weigh more, so their counts are not watered down by big ones.
        let weights = cs
            .iter()
            .zip(&counts)
            .map(|(c, domains)| {
                let size = if c.topology_key == HOSTNAME {
                    nodes.len() - ignored.len()
                } else {
                    domains.len()
                };
                ((size + 2) as f64).ln()
            })
            .collect();
        for n in all {
            if !pod_matches_node(pod, &n.node) || (require_all && !has_all_keys(n, &cs)) {
                continue;
            }
            let labels = labels_of(&n.node.metadata);
            for (i, c) in cs.iter().enumerate() {
                let value = labels.get(&c.topology_key).map_or("", String::as_str);
                if let Some(slot) = counts[i].get_mut(value) {
                    *slot += count_matching(pod, c, n);
                }
            }
        }
        state.write(
            SCORE_KEY,
            ScoreState {
                constraints: cs,
                counts,
                weights,
                ignored,
            },
        );
        Status::success()
    }
}

impl ScorePlugin for PodTopologySpread {
    /// Per constraint whose key the node has: matching pods in its domain times the
    /// constraint's weight, plus `maxSkew - 1` (which waters down small skews).
    fn score(&self, state: &CycleState, pod: &Pod, node: &NodeInfo) -> Result<i64, Status> {
        let Some(s) = state.read::<ScoreState>(SCORE_KEY) else {
            return Ok(0);
        };
        if s.ignored.contains(node.name()) {
            return Ok(0);
        }
        let labels = labels_of(&node.node.metadata);
        let mut score = 0.0;
        for (i, c) in s.constraints.iter().enumerate() {
            let Some(value) = labels.get(&c.topology_key) else {
                continue;
            };
            let cnt = if c.topology_key == HOSTNAME {
                count_matching(pod, c, node)
            } else {
                s.counts[i].get(value).copied().unwrap_or(0)
            };
            score += cnt as f64 * s.weights[i] + f64::from(c.max_skew - 1);
        }
        Ok(score.round() as i64)
    }

    /// Fewest matching pods gets 100: `100 · (max + min - score) / max`; ignored nodes 0.
    fn normalize_score(&self, state: &CycleState, _: &Pod, scores: &mut [(String, i64)]) {
        let Some(s) = state.read::<ScoreState>(SCORE_KEY) else {
            return;
        };
        let counted = || scores.iter().filter(|(n, _)| !s.ignored.contains(n));
        let min = counted().map(|(_, v)| *v).min().unwrap_or(0);
        let max = counted().map(|(_, v)| *v).max().unwrap_or(0);
        for (name, v) in scores.iter_mut() {
            *v = if s.ignored.contains(name) {
                0
            } else if max == 0 {
                MAX_NODE_SCORE
            } else {
                MAX_NODE_SCORE * (max + min - *v) / max
            };
        }
    }
}
