//! DefaultPreemption: when no node fits, find a node where evicting lower-priority pods
//! makes room. As upstream, victims whose eviction would violate a PodDisruptionBudget are
//! reprieved first, and the node is chosen by (fewest PDB violations, lowest
//! highest-priority victim, smallest sum of priorities, fewest victims, latest start time).

use std::cmp::Ordering;
use std::collections::HashMap;
use std::sync::Arc;

use k8s_openapi::api::core::v1::Pod;
use k8s_openapi::api::policy::v1::PodDisruptionBudget;
use k8s_openapi::jiff::Timestamp;

use super::selector;
use crate::framework::{
    pod_key, pod_priority, Code, NodeInfo, Plugin, PostFilterContext, PostFilterPlugin,
    PostFilterResult, Status,
};
use crate::listers::Listers;

pub const NOT_HELPFUL: &str = "Preemption is not helpful for scheduling";
pub const NO_VICTIMS: &str = "No preemption victims found for incoming pod";

#[derive(Default)]
pub struct DefaultPreemption {
    /// Where the PodDisruptionBudgets come from (the scheduler's PDB watch).
    pub listers: Arc<Listers>,
}

impl Plugin for DefaultPreemption {
    fn name(&self) -> &'static str {
        "DefaultPreemption"
    }
}

/// When the pod started; a pod not started yet counts as starting now (upstream's
/// `GetPodStartTime`), so it is the least important among equals.
fn start_time(pod: &Pod, now: Timestamp) -> Timestamp {
    pod.status
        .as_ref()
        .and_then(|s| s.start_time.as_ref())
        .map_or(now, |t| t.0)
}

/// Upstream's `MoreImportantPod` as an ordering: higher priority first, then earlier start.
fn more_important_first(a: &Pod, b: &Pod, now: Timestamp) -> Ordering {
    pod_priority(b)
        .cmp(&pod_priority(a))
        .then_with(|| start_time(a, now).cmp(&start_time(b, now)))
}

/// Splits `pods` (most important first) into those whose eviction would violate a PDB and
/// the others (upstream's `filterPodsWithPDBViolation`). Each matching PDB's
/// `status.disruptionsAllowed` is spent as pods are visited; a pod already listed in the
/// PDB's `disruptedPods` is being evicted and spends nothing. A PDB with an empty selector
/// protects nothing, as upstream's scheduler reads it.
pub fn split_by_pdb<'a>(
    pods: &[&'a Pod],
    pdbs: &[Arc<PodDisruptionBudget>],
) -> (Vec<&'a Pod>, Vec<&'a Pod>) {
    let mut allowed: Vec<i32> = pdbs
        .iter()
        .map(|p| p.status.as_ref().map_or(0, |s| s.disruptions_allowed))
        .collect();
    let (mut violating, mut ok) = (Vec::new(), Vec::new());
    for &pod in pods {
        let mut violated = false;
        let labels = pod.metadata.labels.clone().unwrap_or_default();
        if !labels.is_empty() {
            for (i, pdb) in pdbs.iter().enumerate() {
                if pdb.metadata.namespace != pod.metadata.namespace {
                    continue;
                }
                let sel = pdb.spec.as_ref().and_then(|s| s.selector.as_ref());
                let empty = sel.is_none_or(|s| {
                    s.match_labels.as_ref().is_none_or(|m| m.is_empty())
                        && s.match_expressions.as_ref().is_none_or(|e| e.is_empty())
                });
                if empty || !selector::matches(sel, &labels) {
                    continue;
                }
                let name = pod.metadata.name.as_deref().unwrap_or("");
                let disrupted = pdb
                    .status
                    .as_ref()
                    .and_then(|s| s.disrupted_pods.as_ref())
                    .is_some_and(|d| d.contains_key(name));
                if disrupted {
                    continue;
                }
                allowed[i] -= 1;
                if allowed[i] < 0 {
                    violated = true;
                }
            }
        }
        if violated {
            violating.push(pod);
        } else {
            ok.push(pod);
        }
    }
    (violating, ok)
}

/// The victims on `node` (most important first) and how many of them violate a PDB, or
/// `None` when even evicting every lower-priority pod is not enough (upstream's
/// `SelectVictimsOnNode`): every lower-priority pod is removed, then pods are reprieved,
/// PDB-violating ones first, each from the most important down, while the preemptor fits.
pub fn select_victims(
    ctx: &PostFilterContext<'_>,
    pod: &Pod,
    node: &NodeInfo,
    pdbs: &[Arc<PodDisruptionBudget>],
) -> Option<(Vec<Pod>, usize)> {
    let prio = pod_priority(pod);
    let now = Timestamp::now();
    let mut candidates: Vec<&Pod> = node
        .pods
        .iter()
        .map(|p| &**p)
        .filter(|p| pod_priority(p) < prio)
        .collect();
    if candidates.is_empty() {
        return None;
    }
    let mut evicted: Vec<String> = candidates.iter().map(|p| pod_key(p)).collect();
    if !ctx
        .framework
        .run_filters(ctx.state, pod, &node.without(&evicted))
        .is_success()
    {
        return None;
    }
    candidates.sort_by(|a, b| more_important_first(a, b, now));
    let (violating, non_violating) = split_by_pdb(&candidates, pdbs);
    let mut victims = Vec::new();
    let mut num_violating = 0;
    // Keeps `p` on the node if the preemptor still fits; returns whether it did.
    let reprieve = |p: &Pod, evicted: &mut Vec<String>, victims: &mut Vec<Pod>| {
        let key = pod_key(p);
        let trial: Vec<String> = evicted.iter().filter(|k| **k != key).cloned().collect();
        if ctx
            .framework
            .run_filters(ctx.state, pod, &node.without(&trial))
            .is_success()
        {
            *evicted = trial;
            true
        } else {
            victims.push(p.clone());
            false
        }
    };
    for p in violating {
        if !reprieve(p, &mut evicted, &mut victims) {
            num_violating += 1;
        }
    }
    for p in non_violating {
        reprieve(p, &mut evicted, &mut victims);
    }
    victims.sort_by(|a, b| more_important_first(a, b, now));
    Some((victims, num_violating))
}

/// One node's preemption outcome, as `pick_one_node` compares them.
pub struct Candidate {
    pub node: String,
    /// Most important first.
    pub victims: Vec<Pod>,
    pub num_pdb_violations: usize,
}

/// Upstream's `GetEarliestPodStartTime`: the earliest start among the highest-priority
/// victims.
fn earliest_top_start(victims: &[Pod], now: Timestamp) -> Timestamp {
    let top = victims.iter().map(pod_priority).max().unwrap_or(i32::MIN);
    victims
        .iter()
        .filter(|p| pod_priority(p) == top)
        .map(|p| start_time(p, now))
        .min()
        .unwrap_or(now)
}

/// Upstream's `pickOneNodeForPreemption`: each criterion narrows the candidates to the best
/// ones; the first remaining candidate (node order) wins.
pub fn pick_one_node(candidates: Vec<Candidate>) -> Option<Candidate> {
    let now = Timestamp::now();
    let mut left = candidates;
    // A node that needs no victims at all wins outright.
    if let Some(i) = left.iter().position(|c| c.victims.is_empty()) {
        return Some(left.swap_remove(i));
    }
    fn keep_min<K: Ord>(left: &mut Vec<Candidate>, key: impl Fn(&Candidate) -> K) {
        if let Some(best) = left.iter().map(&key).min() {
            left.retain(|c| key(c) == best);
        }
    }
    keep_min(&mut left, |c| c.num_pdb_violations);
    keep_min(&mut left, |c| {
        c.victims.iter().map(pod_priority).max().unwrap_or(i32::MIN)
    });
    // Priorities shifted to be non-negative before summing, as upstream does.
    keep_min(&mut left, |c| {
        c.victims
            .iter()
            .map(|p| i64::from(pod_priority(p)) + i64::from(i32::MAX) + 1)
            .sum::<i64>()
    });
    keep_min(&mut left, |c| c.victims.len());
    keep_min(&mut left, |c| {
        std::cmp::Reverse(earliest_top_start(&c.victims, now))
    });
    left.into_iter().next()
}

impl PostFilterPlugin for DefaultPreemption {
    fn post_filter(
        &self,
        ctx: &PostFilterContext<'_>,
        pod: &Pod,
        statuses: &HashMap<String, Status>,
    ) -> (Option<PostFilterResult>, Status) {
        let policy = pod
            .spec
            .as_ref()
            .and_then(|s| s.preemption_policy.as_deref());
        if policy == Some("Never") {
            return (
                None,
                Status::unschedulable("preemption: not eligible due to preemptionPolicy=Never."),
            );
        }
        // Upstream's PodEligibleToPreemptOthers: while victims on the nominated node are
        // still terminating, preempting again would only evict more pods, unless that node
        // can no longer take the pod whatever is evicted (cordoned, tainted, gone).
        let nominated = pod
            .status
            .as_ref()
            .and_then(|s| s.nominated_node_name.as_deref())
            .filter(|n| !n.is_empty())
            .filter(|n| {
                statuses
                    .get(*n)
                    .is_none_or(|s| s.code != Code::UnschedulableAndUnresolvable)
            });
        if let Some(n) = nominated.and_then(|n| ctx.nodes.iter().find(|i| i.name() == n)) {
            let prio = pod_priority(pod);
            if n.pods
                .iter()
                .any(|p| p.metadata.deletion_timestamp.is_some() && pod_priority(p) < prio)
            {
                return (
                    None,
                    Status::unschedulable(
                        "preemption: not eligible due to a terminating pod on the nominated node.",
                    ),
                );
            }
        }
        let pdbs = self.listers.pdbs.list();
        let mut reasons: HashMap<String, Status> = HashMap::new();
        let mut candidates = Vec::new();
        for node in ctx.nodes {
            let resolvable = statuses
                .get(node.name())
                .is_some_and(|s| s.code == Code::Unschedulable);
            if !resolvable {
                reasons.insert(node.name().into(), Status::unresolvable(NOT_HELPFUL));
                continue;
            }
            match select_victims(ctx, pod, node, &pdbs) {
                None => {
                    reasons.insert(node.name().into(), Status::unschedulable(NO_VICTIMS));
                }
                Some((victims, num_pdb_violations)) => candidates.push(Candidate {
                    node: node.name().into(),
                    victims,
                    num_pdb_violations,
                }),
            }
        }
        match pick_one_node(candidates) {
            Some(c) => (
                Some(PostFilterResult {
                    nominated_node: c.node,
                    victims: c.victims,
                }),
                Status::success(),
            ),
            // No node can be freed: an earlier nomination no longer holds, so it is cleared
            // (upstream returns a result nominating "" for exactly this).
            None => {
                let msg =
                    crate::framework::fit_error_message(ctx.nodes.len(), None, &reasons, None);
                (
                    Some(PostFilterResult {
                        nominated_node: String::new(),
                        victims: Vec::new(),
                    }),
                    Status::unschedulable(format!("preemption: {msg}")),
                )
            }
        }
    }
}
