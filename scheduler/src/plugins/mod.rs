//! The in-tree plugins and the registry that names them (upstream's
//! `pkg/scheduler/framework/plugins/registry.go`).

pub mod binder;
pub mod image_locality;
pub mod inter_pod_affinity;
pub mod node_affinity;
pub mod node_basic;
pub mod node_resources;
pub mod preemption;
pub mod selector;
pub mod taint_toleration;
pub mod topology_spread;

use std::sync::Arc;

use crate::framework::{PluginSet, WaitingPods};
use crate::listers::Listers;

/// What a plugin factory gets: the API client (only the binder needs it; `None` in unit
/// tests), the plugin's `pluginConfig` args, and the stores of other objects plugins read
/// (upstream reaches the last two through its framework handle).
#[derive(Clone, Default)]
pub struct PluginArgs {
    pub client: Option<kube::Client>,
    pub args: serde_json::Value,
    pub listers: Arc<Listers>,
    /// The profile's pods waiting at Permit, to allow or reject (e.g. a whole gang at once).
    pub waiting_pods: Arc<WaitingPods>,
}

/// Builds one plugin's extension points.
pub type Factory = fn(&PluginArgs) -> PluginSet;

/// Every plugin this scheduler knows, by upstream's names.
pub fn registry() -> Vec<(&'static str, Factory)> {
    vec![
        ("NodeUnschedulable", |_| {
            let p = Arc::new(node_basic::NodeUnschedulable);
            PluginSet {
                filter: Some(p),
                ..Default::default()
            }
        }),
        ("NodeName", |_| PluginSet {
            filter: Some(Arc::new(node_basic::NodeName)),
            ..Default::default()
        }),
        ("NodePorts", |_| {
            let p = Arc::new(node_basic::NodePorts);
            PluginSet {
                pre_filter: Some(p.clone()),
                filter: Some(p),
                ..Default::default()
            }
        }),
        ("TaintToleration", |_| {
            let p = Arc::new(taint_toleration::TaintToleration);
            PluginSet {
                filter: Some(p.clone()),
                score: Some(p),
                ..Default::default()
            }
        }),
        ("NodeAffinity", |_| {
            let p = Arc::new(node_affinity::NodeAffinity);
            PluginSet {
                filter: Some(p.clone()),
                score: Some(p),
                ..Default::default()
            }
        }),
        ("NodeResourcesFit", |a| {
            let p = Arc::new(node_resources::Fit::from_args(&a.args));
            PluginSet {
                pre_filter: Some(p.clone()),
                filter: Some(p.clone()),
                score: Some(p),
                ..Default::default()
            }
        }),
        ("NodeResourcesBalancedAllocation", |_| PluginSet {
            score: Some(Arc::new(node_resources::BalancedAllocation)),
            ..Default::default()
        }),
        ("PodTopologySpread", |a| {
            let p = Arc::new(topology_spread::PodTopologySpread::new(
                &a.args,
                a.listers.clone(),
            ));
            PluginSet {
                pre_filter: Some(p.clone()),
                filter: Some(p.clone()),
                pre_score: Some(p.clone()),
                score: Some(p),
                ..Default::default()
            }
        }),
        ("InterPodAffinity", |_| {
            let p = Arc::new(inter_pod_affinity::InterPodAffinity);
            PluginSet {
                pre_filter: Some(p.clone()),
                filter: Some(p.clone()),
                pre_score: Some(p.clone()),
                score: Some(p),
                ..Default::default()
            }
        }),
        ("ImageLocality", |_| {
            let p = Arc::new(image_locality::ImageLocality);
            PluginSet {
                pre_score: Some(p.clone()),
                score: Some(p),
                ..Default::default()
            }
        }),
        ("DefaultPreemption", |a| PluginSet {
            post_filter: Some(Arc::new(preemption::DefaultPreemption {
                listers: a.listers.clone(),
            })),
            ..Default::default()
        }),
        ("DefaultBinder", |a| PluginSet {
            bind: Some(Arc::new(binder::DefaultBinder {
                client: a.client.clone(),
            })),
            ..Default::default()
        }),
    ]
}

/// The default profile's plugins and score weights (upstream's `getDefaultPlugins`, minus
/// plugins not implemented here).
pub const DEFAULT_PLUGINS: &[(&str, i64)] = &[
    ("NodeUnschedulable", 0),
    ("NodeName", 0),
    ("TaintToleration", 3),
    ("NodeAffinity", 2),
    ("NodePorts", 0),
    ("NodeResourcesFit", 1),
    ("PodTopologySpread", 2),
    ("InterPodAffinity", 2),
    ("NodeResourcesBalancedAllocation", 1),
    ("ImageLocality", 1),
    ("DefaultPreemption", 0),
    ("DefaultBinder", 0),
];

/// Upstream's `DefaultNormalizeScore`: scales scores so the best is `MAX_NODE_SCORE`, and
/// with `reverse` makes lower raw scores better.
pub fn default_normalize(max_priority: i64, reverse: bool, scores: &mut [(String, i64)]) {
    let max = scores.iter().map(|(_, s)| *s).max().unwrap_or(0);
    if max == 0 {
        if reverse {
            for (_, s) in scores.iter_mut() {
                *s = max_priority;
            }
        }
        return;
    }
    for (_, s) in scores.iter_mut() {
        let mut v = max_priority * *s / max;
        if reverse {
            v = max_priority - v;
        }
        *s = v;
    }
}

#[cfg(test)]
mod tests;
