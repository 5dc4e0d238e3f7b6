//! DefaultPreemption: when no node fits, find a node where evicting lower-priority pods
//! makes room, choosing victims that minimise (highest victim priority, victim count).

use std::collections::HashMap;

use k8s_openapi::api::core::v1::Pod;

use crate::framework::{
    pod_key, pod_priority, Code, NodeInfo, Plugin, PostFilterContext, PostFilterPlugin,
    PostFilterResult, Status,
};

pub const NOT_HELPFUL: &str = "Preemption is not helpful for scheduling";
pub const NO_VICTIMS: &str = "No preemption victims found for incoming pod";

pub struct DefaultPreemption;

impl Plugin for DefaultPreemption {
    fn name(&self) -> &'static str {
        "DefaultPreemption"
    }
}

/// The smallest set of victims on `node` (reprieving the most important pods first), or
/// `None` when even evicting every lower-priority pod is not enough.
pub fn select_victims(ctx: &PostFilterContext<'_>, pod: &Pod, node: &NodeInfo) -> Option<Vec<Pod>> {
    let prio = pod_priority(pod);
    let mut candidates: Vec<&Pod> = node
        .pods
        .iter()
        .map(|p| &**p)
        .filter(|p| pod_priority(p) < prio)
        .collect();
    if candidates.is_empty() {
        return None;
    }
    let all: Vec<String> = candidates.iter().map(|p| pod_key(p)).collect();
    if !ctx
        .framework
        .run_filters(ctx.state, pod, &node.without(&all))
        .is_success()
    {
        return None;
    }
    // Reprieve from the highest priority down: keep a pod if the preemptor still fits.
    candidates.sort_by_key(|p| std::cmp::Reverse(pod_priority(p)));
    let mut evicted = all;
    let mut victims = Vec::new();
    for p in candidates {
        let key = pod_key(p);
        let trial: Vec<String> = evicted.iter().filter(|k| **k != key).cloned().collect();
        if ctx
            .framework
            .run_filters(ctx.state, pod, &node.without(&trial))
            .is_success()
        {
            evicted = trial;
        } else {
            victims.push(p.clone());
        }
    }
    Some(victims)
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
        // still terminating, preempting again would only evict more pods.
        let nominated = pod
            .status
            .as_ref()
            .and_then(|s| s.nominated_node_name.as_deref())
            .filter(|n| !n.is_empty());
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
        let mut reasons: HashMap<String, Status> = HashMap::new();
        let mut best: Option<(i32, usize, PostFilterResult)> = None;
        for node in ctx.nodes {
            let resolvable = statuses
                .get(node.name())
                .is_some_and(|s| s.code == Code::Unschedulable);
            if !resolvable {
                reasons.insert(node.name().into(), Status::unresolvable(NOT_HELPFUL));
                continue;
            }
            match select_victims(ctx, pod, node) {
                None => {
                    reasons.insert(node.name().into(), Status::unschedulable(NO_VICTIMS));
                }
                Some(victims) => {
                    let top = victims.iter().map(pod_priority).max().unwrap_or(i32::MIN);
                    let better = best
                        .as_ref()
                        .is_none_or(|(p, n, _)| (top, victims.len()) < (*p, *n));
                    if better {
                        best = Some((
                            top,
                            victims.len(),
                            PostFilterResult {
                                nominated_node: node.name().into(),
                                victims,
                            },
                        ));
                    }
                }
            }
        }
        match best {
            Some((_, _, r)) => (Some(r), Status::success()),
            None => {
                let msg =
                    crate::framework::fit_error_message(ctx.nodes.len(), None, &reasons, None);
                (None, Status::unschedulable(format!("preemption: {msg}")))
            }
        }
    }
}
