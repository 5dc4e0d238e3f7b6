//! InterPodAffinity: required pod affinity and anti-affinity of the incoming pod, and the
//! required anti-affinity of pods already placed, evaluated per topology domain; preferred
//! terms score.

use std::collections::{BTreeMap, HashSet};

use k8s_openapi::api::core::v1::{Pod, PodAffinityTerm};

use super::selector;
use crate::framework::{
    CycleState, FilterPlugin, NodeInfo, Plugin, PreFilterPlugin, PreScorePlugin, ScorePlugin,
    Status, MAX_NODE_SCORE,
};

pub const ERR_AFFINITY: &str = "node(s) didn't match pod affinity rules";
pub const ERR_ANTI_AFFINITY: &str = "node(s) didn't match pod anti-affinity rules";
pub const ERR_EXISTING_ANTI_AFFINITY: &str =
    "node(s) didn't satisfy existing pods anti-affinity rules";

pub struct InterPodAffinity;

impl Plugin for InterPodAffinity {
    fn name(&self) -> &'static str {
        "InterPodAffinity"
    }
}

/// Whether `term` (declared by a pod in `owner_ns`) selects `target`.
fn term_selects(term: &PodAffinityTerm, owner_ns: &str, target: &Pod) -> bool {
    let ns = target.metadata.namespace.as_deref().unwrap_or("default");
    let in_ns = match (&term.namespaces, &term.namespace_selector) {
        (Some(list), _) if !list.is_empty() => list.iter().any(|n| n == ns),
        // A namespace selector would need Namespace objects; `{}` means all namespaces.
        (_, Some(sel)) => {
            sel.match_labels.as_ref().is_none_or(|m| m.is_empty())
                && sel.match_expressions.as_ref().is_none_or(|e| e.is_empty())
                || ns == owner_ns
        }
        _ => ns == owner_ns,
    };
    in_ns
        && target.metadata.deletion_timestamp.is_none()
        && selector::matches(
            term.label_selector.as_ref(),
            &target.metadata.labels.clone().unwrap_or_default(),
        )
}

type Domain = (String, String);

/// What Filter needs, per term: the domains holding a matching pod.
#[derive(Default)]
struct Pre {
    affinity: Vec<(PodAffinityTerm, HashSet<Domain>)>,
    /// The pod matches all its own affinity terms and no pod matches any: first of a group.
    affinity_self_ok: bool,
    anti: Vec<(PodAffinityTerm, HashSet<Domain>)>,
    /// Domains forbidden by existing pods' anti-affinity.
    existing_anti: HashSet<Domain>,
}

fn required(pod: &Pod) -> (Vec<PodAffinityTerm>, Vec<PodAffinityTerm>) {
    let aff = pod.spec.as_ref().and_then(|s| s.affinity.as_ref());
    let a = aff
        .and_then(|a| a.pod_affinity.as_ref())
        .and_then(|p| {
            p.required_during_scheduling_ignored_during_execution
                .clone()
        })
        .unwrap_or_default();
    let anti = aff
        .and_then(|a| a.pod_anti_affinity.as_ref())
        .and_then(|p| {
            p.required_during_scheduling_ignored_during_execution
                .clone()
        })
        .unwrap_or_default();
    (a, anti)
}

fn labels(n: &NodeInfo) -> BTreeMap<String, String> {
    n.node.metadata.labels.clone().unwrap_or_default()
}

fn ns(p: &Pod) -> &str {
    p.metadata.namespace.as_deref().unwrap_or("default")
}

impl PreFilterPlugin for InterPodAffinity {
    fn pre_filter(&self, state: &mut CycleState, pod: &Pod, nodes: &[NodeInfo]) -> Status {
        let (aff, anti) = required(pod);
        let mut pre = Pre::default();
        let domains_of = |term: &PodAffinityTerm| {
            let mut set = HashSet::new();
            for n in nodes {
                let Some(v) = labels(n).get(&term.topology_key).cloned() else {
                    continue;
                };
                if n.pods.iter().any(|p| term_selects(term, ns(pod), p)) {
                    set.insert((term.topology_key.clone(), v));
                }
            }
            set
        };
        for t in aff {
            let d = domains_of(&t);
            pre.affinity.push((t, d));
        }
        for t in anti {
            let d = domains_of(&t);
            pre.anti.push((t, d));
        }
        pre.affinity_self_ok = pre.affinity.iter().all(|(_, d)| d.is_empty())
            && pre
                .affinity
                .iter()
                .all(|(t, _)| term_selects(t, ns(pod), pod));
        for n in nodes {
            // Most pods have no required anti-affinity: read the node's labels only for
            // those that do.
            if n.required_anti_affinity_pods == 0 {
                continue;
            }
            let mut nl = None;
            for existing in n.pods.iter() {
                for t in required(existing).1 {
                    if term_selects(&t, ns(existing), pod) {
                        let nl = nl.get_or_insert_with(|| labels(n));
                        if let Some(v) = nl.get(&t.topology_key) {
                            pre.existing_anti
                                .insert((t.topology_key.clone(), v.clone()));
                        }
                    }
                }
            }
        }
        if pre.affinity.is_empty() && pre.anti.is_empty() && pre.existing_anti.is_empty() {
            return Status::skip();
        }
        state.write("InterPodAffinity", pre);
        Status::success()
    }
}

impl FilterPlugin for InterPodAffinity {
    fn filter(&self, state: &CycleState, _: &Pod, node: &NodeInfo) -> Status {
        let Some(pre) = state.read::<Pre>("InterPodAffinity") else {
            return Status::success();
        };
        let nl = labels(node);
        let domain = |key: &str| nl.get(key).map(|v| (key.to_string(), v.clone()));
        if pre.existing_anti.iter().any(|(k, v)| nl.get(k) == Some(v)) {
            return Status::unschedulable(ERR_EXISTING_ANTI_AFFINITY);
        }
        for (t, d) in &pre.anti {
            if domain(&t.topology_key).is_some_and(|x| d.contains(&x)) {
                return Status::unschedulable(ERR_ANTI_AFFINITY);
            }
        }
        for (t, d) in &pre.affinity {
            let ok = match domain(&t.topology_key) {
                None => false,
                Some(x) => d.contains(&x) || pre.affinity_self_ok,
            };
            if !ok {
                return Status::unresolvable(ERR_AFFINITY);
            }
        }
        Status::success()
    }
}

/// Preferred terms as (term, weight, +1 affinity / -1 anti-affinity).
struct Preferred(Vec<(PodAffinityTerm, i64)>);

impl PreScorePlugin for InterPodAffinity {
    fn pre_score(
        &self,
        state: &mut CycleState,
        pod: &Pod,
        _: &[&NodeInfo],
        _: &[NodeInfo],
    ) -> Status {
        let aff = pod.spec.as_ref().and_then(|s| s.affinity.as_ref());
        let mut terms = Vec::new();
        for w in aff
            .and_then(|a| a.pod_affinity.as_ref())
            .and_then(|p| {
                p.preferred_during_scheduling_ignored_during_execution
                    .clone()
            })
            .unwrap_or_default()
        {
            terms.push((w.pod_affinity_term, i64::from(w.weight)));
        }
        for w in aff
            .and_then(|a| a.pod_anti_affinity.as_ref())
            .and_then(|p| {
                p.preferred_during_scheduling_ignored_during_execution
                    .clone()
            })
            .unwrap_or_default()
        {
            terms.push((w.pod_affinity_term, -i64::from(w.weight)));
        }
        if terms.is_empty() {
            return Status::skip();
        }
        state.write("InterPodAffinityScore", Preferred(terms));
        Status::success()
    }
}

impl ScorePlugin for InterPodAffinity {
    /// Weighted count of matching pods on this node (same-node approximation of the
    /// topology domain: the score sees only the node, not its whole domain).
    fn score(&self, state: &CycleState, pod: &Pod, node: &NodeInfo) -> Result<i64, Status> {
        let Some(Preferred(terms)) = state.read::<Preferred>("InterPodAffinityScore") else {
            return Ok(0);
        };
        Ok(terms
            .iter()
            .map(|(t, w)| {
                w * node
                    .pods
                    .iter()
                    .filter(|p| term_selects(t, ns(pod), p))
                    .count() as i64
            })
            .sum())
    }

    fn normalize_score(&self, _: &CycleState, _: &Pod, scores: &mut [(String, i64)]) {
        let max = scores.iter().map(|(_, s)| *s).max().unwrap_or(0);
        let min = scores.iter().map(|(_, s)| *s).min().unwrap_or(0);
        for (_, s) in scores.iter_mut() {
            *s = if max == min {
                0
            } else {
                MAX_NODE_SCORE * (*s - min) / (max - min)
            };
        }
    }
}
