//! PodTopologySpread: `whenUnsatisfiable: DoNotSchedule` constraints filter (skew against
//! the least loaded domain must stay within maxSkew), `ScheduleAnyway` constraints score.
//! Eligible domains come from nodes that carry the topology key and match the pod's node
//! selector/affinity (nodeAffinityPolicy Honor, nodeTaintsPolicy Ignore: the defaults).

use std::collections::HashMap;

use k8s_openapi::api::core::v1::{Pod, TopologySpreadConstraint};

use super::node_affinity::pod_matches_node;
use super::selector;
use crate::framework::{
    CycleState, FilterPlugin, NodeInfo, Plugin, PreFilterPlugin, PreScorePlugin, ScorePlugin,
    Status, MAX_NODE_SCORE,
};

pub const ERR_CONSTRAINTS: &str = "node(s) didn't match pod topology spread constraints";
pub const ERR_MISSING_LABEL: &str =
    "node(s) didn't match pod topology spread constraints (missing required label)";

pub struct PodTopologySpread;

impl Plugin for PodTopologySpread {
    fn name(&self) -> &'static str {
        "PodTopologySpread"
    }
}

/// Per constraint: matching pods per domain value.
struct Counts(Vec<(TopologySpreadConstraint, HashMap<String, i64>)>);

fn constraints(pod: &Pod, mode: &str) -> Vec<TopologySpreadConstraint> {
    pod.spec
        .iter()
        .flat_map(|s| s.topology_spread_constraints.iter().flatten())
        .filter(|c| c.when_unsatisfiable == mode)
        .cloned()
        .collect()
}

fn count(pod: &Pod, cs: Vec<TopologySpreadConstraint>, nodes: &[&NodeInfo]) -> Counts {
    let ns = pod.metadata.namespace.as_deref();
    let mut out = Vec::new();
    for c in cs {
        let mut counts: HashMap<String, i64> = HashMap::new();
        for n in nodes {
            let labels = n.node.metadata.labels.clone().unwrap_or_default();
            let Some(domain) = labels.get(&c.topology_key) else {
                continue;
            };
            if !pod_matches_node(pod, &n.node) {
                continue;
            }
            let matching = n
                .pods
                .iter()
                .filter(|p| {
                    p.metadata.namespace.as_deref() == ns
                        && p.metadata.deletion_timestamp.is_none()
                        && selector::matches(
                            c.label_selector.as_ref(),
                            &p.metadata.labels.clone().unwrap_or_default(),
                        )
                })
                .count() as i64;
            *counts.entry(domain.clone()).or_default() += matching;
        }
        out.push((c, counts));
    }
    Counts(out)
}

fn self_match(pod: &Pod, c: &TopologySpreadConstraint) -> i64 {
    i64::from(selector::matches(
        c.label_selector.as_ref(),
        &pod.metadata.labels.clone().unwrap_or_default(),
    ))
}

impl PreFilterPlugin for PodTopologySpread {
    fn pre_filter(&self, state: &mut CycleState, pod: &Pod, nodes: &[NodeInfo]) -> Status {
        let cs = constraints(pod, "DoNotSchedule");
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
        let labels = node.node.metadata.labels.clone().unwrap_or_default();
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

impl PreScorePlugin for PodTopologySpread {
    fn pre_score(&self, state: &mut CycleState, pod: &Pod, nodes: &[&NodeInfo]) -> Status {
        let cs = constraints(pod, "ScheduleAnyway");
        if cs.is_empty() {
            return Status::skip();
        }
        state.write("PodTopologySpreadScore", count(pod, cs, nodes));
        Status::success()
    }
}

impl ScorePlugin for PodTopologySpread {
    /// Matching pods in the node's domains (fewer is better), summed over constraints.
    fn score(&self, state: &CycleState, _: &Pod, node: &NodeInfo) -> Result<i64, Status> {
        let Some(Counts(counts)) = state.read::<Counts>("PodTopologySpreadScore") else {
            return Ok(0);
        };
        let labels = node.node.metadata.labels.clone().unwrap_or_default();
        Ok(counts
            .iter()
            .map(|(c, d)| {
                labels
                    .get(&c.topology_key)
                    .and_then(|v| d.get(v))
                    .copied()
                    .unwrap_or(0)
            })
            .sum())
    }

    /// Least crowded node gets 100, most crowded 0.
    fn normalize_score(&self, _: &CycleState, _: &Pod, scores: &mut [(String, i64)]) {
        let max = scores.iter().map(|(_, s)| *s).max().unwrap_or(0);
        let min = scores.iter().map(|(_, s)| *s).min().unwrap_or(0);
        for (_, s) in scores.iter_mut() {
            *s = if max == min {
                MAX_NODE_SCORE
            } else {
                MAX_NODE_SCORE * (max - *s) / (max - min)
            };
        }
    }
}
