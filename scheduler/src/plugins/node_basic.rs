//! The small node filters: NodeUnschedulable, NodeName, NodePorts.

use k8s_openapi::api::core::v1::{Pod, Taint};

use crate::framework::{
    pod_host_ports, CycleState, FilterPlugin, HostPort, NodeInfo, Plugin, PreFilterPlugin, Status,
};
use crate::plugins::taint_toleration::tolerates;

pub const ERR_UNSCHEDULABLE: &str = "node(s) were unschedulable";
pub const ERR_NODE_NAME: &str = "node(s) didn't match the requested node name";
pub const ERR_NODE_PORTS: &str = "node(s) didn't have free ports for the requested pod ports";

/// Rejects cordoned nodes (`spec.unschedulable`) unless the pod tolerates the
/// `node.kubernetes.io/unschedulable:NoSchedule` taint, as DaemonSet pods do.
pub struct NodeUnschedulable;

impl Plugin for NodeUnschedulable {
    fn name(&self) -> &'static str {
        "NodeUnschedulable"
    }
}

impl FilterPlugin for NodeUnschedulable {
    fn filter(&self, _: &CycleState, pod: &Pod, node: &NodeInfo) -> Status {
        let cordoned = node
            .node
            .spec
            .as_ref()
            .and_then(|s| s.unschedulable)
            .unwrap_or(false);
        if !cordoned {
            return Status::success();
        }
        let taint = Taint {
            key: "node.kubernetes.io/unschedulable".into(),
            effect: "NoSchedule".into(),
            ..Default::default()
        };
        let tolerations = pod.spec.as_ref().and_then(|s| s.tolerations.as_deref());
        if tolerations
            .unwrap_or_default()
            .iter()
            .any(|t| tolerates(t, &taint))
        {
            Status::success()
        } else {
            Status::unresolvable(ERR_UNSCHEDULABLE)
        }
    }
}

/// Honours a `spec.nodeName` chosen by the user (only matters for preemption what-ifs and
/// pods that name a node yet are still queued).
pub struct NodeName;

impl Plugin for NodeName {
    fn name(&self) -> &'static str {
        "NodeName"
    }
}

impl FilterPlugin for NodeName {
    fn filter(&self, _: &CycleState, pod: &Pod, node: &NodeInfo) -> Status {
        match pod.spec.as_ref().and_then(|s| s.node_name.as_deref()) {
            Some(n) if !n.is_empty() && n != node.name() => Status::unresolvable(ERR_NODE_NAME),
            _ => Status::success(),
        }
    }
}

/// Rejects nodes where a requested host port (protocol, IP, port) is taken; `0.0.0.0`
/// conflicts with every IP.
pub struct NodePorts;

impl Plugin for NodePorts {
    fn name(&self) -> &'static str {
        "NodePorts"
    }
}

impl PreFilterPlugin for NodePorts {
    fn pre_filter(&self, state: &mut CycleState, pod: &Pod, _: &[NodeInfo]) -> Status {
        let ports = pod_host_ports(pod);
        if ports.is_empty() {
            return Status::skip();
        }
        state.write("NodePorts", ports);
        Status::success()
    }
}

/// Whether two host ports collide.
pub fn ports_conflict(a: &HostPort, b: &HostPort) -> bool {
    a.port == b.port
        && a.protocol == b.protocol
        && (a.ip == b.ip || a.ip == "0.0.0.0" || b.ip == "0.0.0.0")
}

impl FilterPlugin for NodePorts {
    fn filter(&self, state: &CycleState, pod: &Pod, node: &NodeInfo) -> Status {
        let computed;
        let wanted = match state.read::<Vec<HostPort>>("NodePorts") {
            Some(w) => w,
            None => {
                computed = pod_host_ports(pod);
                &computed
            }
        };
        if wanted
            .iter()
            .any(|w| node.used_ports.iter().any(|u| ports_conflict(w, u)))
        {
            Status::unschedulable(ERR_NODE_PORTS)
        } else {
            Status::success()
        }
    }
}
