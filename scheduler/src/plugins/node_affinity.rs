//! NodeAffinity: `spec.nodeSelector` and required node affinity filter, preferred node
//! affinity scores.

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::{Node, NodeSelectorRequirement, NodeSelectorTerm, Pod};

use crate::framework::{CycleState, FilterPlugin, NodeInfo, Plugin, ScorePlugin, Status};

pub const ERR_REASON_POD: &str = "node(s) didn't match Pod's node affinity/selector";

pub struct NodeAffinity;

impl Plugin for NodeAffinity {
    fn name(&self) -> &'static str {
        "NodeAffinity"
    }
}

/// One `matchExpressions` requirement against a map (labels or fields), with upstream's
/// operator semantics: Gt/Lt compare integers and fail on non-integers.
pub fn requirement_matches(r: &NodeSelectorRequirement, values: &BTreeMap<String, String>) -> bool {
    let got = values.get(&r.key);
    let want = r.values.as_deref().unwrap_or_default();
    match r.operator.as_str() {
        "In" => got.is_some_and(|v| want.contains(v)),
        "NotIn" => !got.is_some_and(|v| want.contains(v)),
        "Exists" => got.is_some(),
        "DoesNotExist" => got.is_none(),
        "Gt" | "Lt" => {
            let (Some(v), [w]) = (got, want) else {
                return false;
            };
            match (v.parse::<i64>(), w.parse::<i64>()) {
                (Ok(v), Ok(w)) if r.operator == "Gt" => v > w,
                (Ok(v), Ok(w)) => v < w,
                _ => false,
            }
        }
        _ => false,
    }
}

/// The node's labels, borrowed: this runs for every node in every cycle.
fn node_labels(node: &Node) -> &BTreeMap<String, String> {
    static NONE: BTreeMap<String, String> = BTreeMap::new();
    node.metadata.labels.as_ref().unwrap_or(&NONE)
}

/// A term matches when all its expressions and fields match; an empty term matches nothing.
pub fn term_matches(term: &NodeSelectorTerm, node: &Node) -> bool {
    let exprs = term.match_expressions.as_deref().unwrap_or_default();
    let fields = term.match_fields.as_deref().unwrap_or_default();
    if exprs.is_empty() && fields.is_empty() {
        return false;
    }
    let labels = node_labels(node);
    let field_map = BTreeMap::from([(
        "metadata.name".to_string(),
        node.metadata.name.clone().unwrap_or_default(),
    )]);
    exprs.iter().all(|r| requirement_matches(r, labels))
        && fields.iter().all(|r| requirement_matches(r, &field_map))
}

/// `nodeSelector` (every pair) and required affinity (any term).
pub fn pod_matches_node(pod: &Pod, node: &Node) -> bool {
    let Some(spec) = &pod.spec else { return true };
    let labels = node_labels(node);
    if let Some(sel) = &spec.node_selector {
        if sel.iter().any(|(k, v)| labels.get(k) != Some(v)) {
            return false;
        }
    }
    let required = spec
        .affinity
        .as_ref()
        .and_then(|a| a.node_affinity.as_ref())
        .and_then(|n| {
            n.required_during_scheduling_ignored_during_execution
                .as_ref()
        });
    match required {
        Some(req) => req
            .node_selector_terms
            .iter()
            .any(|t| term_matches(t, node)),
        None => true,
    }
}

impl FilterPlugin for NodeAffinity {
    fn filter(&self, _: &CycleState, pod: &Pod, node: &NodeInfo) -> Status {
        if pod_matches_node(pod, &node.node) {
            Status::success()
        } else {
            Status::unresolvable(ERR_REASON_POD)
        }
    }
}

impl ScorePlugin for NodeAffinity {
    /// Sum of the weights of the preferred terms the node matches.
    fn score(&self, _: &CycleState, pod: &Pod, node: &NodeInfo) -> Result<i64, Status> {
        let preferred = pod
            .spec
            .as_ref()
            .and_then(|s| s.affinity.as_ref())
            .and_then(|a| a.node_affinity.as_ref())
            .and_then(|n| {
                n.preferred_during_scheduling_ignored_during_execution
                    .as_deref()
            })
            .unwrap_or_default();
        Ok(preferred
            .iter()
            .filter(|p| p.weight != 0 && term_matches(&p.preference, &node.node))
            .map(|p| i64::from(p.weight))
            .sum())
    }

    fn normalize_score(&self, _: &CycleState, _: &Pod, scores: &mut [(String, i64)]) {
        super::default_normalize(crate::framework::MAX_NODE_SCORE, false, scores);
    }
}
