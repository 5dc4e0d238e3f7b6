//! NodeResourcesFit (filter + LeastAllocated/MostAllocated scoring) and
//! NodeResourcesBalancedAllocation.

use k8s_openapi::api::core::v1::Pod;

use crate::framework::{
    pod_requests, CycleState, FilterPlugin, NodeInfo, Plugin, PreFilterPlugin, Resources,
    ScorePlugin, Status, MAX_NODE_SCORE,
};

const STATE_KEY: &str = "PreFilterNodeResourcesFit";
/// Upstream's `DefaultMilliCPURequest` and `DefaultMemoryRequest`: what a container without
/// requests counts as when *scoring*, so best-effort pods still spread.
const DEFAULT_MILLI_CPU: i64 = 100;
const DEFAULT_MEMORY: i64 = 200 * 1024 * 1024;

/// How NodeResourcesFit scores (`scoringStrategy.type` in its args).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Strategy {
    LeastAllocated,
    MostAllocated,
}

pub struct Fit {
    pub strategy: Strategy,
}

impl Fit {
    /// Reads `NodeResourcesFitArgs`; anything but `MostAllocated` means the default.
    pub fn from_args(args: &serde_json::Value) -> Fit {
        let strategy = match args
            .pointer("/scoringStrategy/type")
            .and_then(|t| t.as_str())
        {
            Some("MostAllocated") => Strategy::MostAllocated,
            _ => Strategy::LeastAllocated,
        };
        Fit { strategy }
    }
}

impl Plugin for Fit {
    fn name(&self) -> &'static str {
        "NodeResourcesFit"
    }
}

impl PreFilterPlugin for Fit {
    fn pre_filter(&self, state: &mut CycleState, pod: &Pod, _: &[NodeInfo]) -> Status {
        state.write(STATE_KEY, pod_requests(pod));
        state.write(NON_ZERO_KEY, NonZero(non_zero_requests(pod)));
        Status::success()
    }
}

/// The names of the resources the node lacks for `req`, in upstream's order and wording.
pub fn insufficient(req: &Resources, node: &NodeInfo) -> Vec<String> {
    let mut out = Vec::new();
    let (alloc, used) = (&node.allocatable, &node.requested);
    if used.pods + 1 > alloc.pods {
        out.push("Too many pods".to_string());
    }
    let checks = [
        ("cpu", req.milli_cpu, alloc.milli_cpu, used.milli_cpu),
        ("memory", req.memory, alloc.memory, used.memory),
        (
            "ephemeral-storage",
            req.ephemeral_storage,
            alloc.ephemeral_storage,
            used.ephemeral_storage,
        ),
    ];
    for (name, r, a, u) in checks {
        if r > 0 && r > a - u {
            out.push(format!("Insufficient {name}"));
        }
    }
    for (name, r) in &req.scalar {
        let a = alloc.scalar.get(name).copied().unwrap_or(0);
        let u = used.scalar.get(name).copied().unwrap_or(0);
        if *r > 0 && *r > a - u {
            out.push(format!("Insufficient {name}"));
        }
    }
    out
}

impl FilterPlugin for Fit {
    fn filter(&self, state: &CycleState, pod: &Pod, node: &NodeInfo) -> Status {
        let computed;
        let req = match state.read::<Resources>(STATE_KEY) {
            Some(r) => r,
            None => {
                computed = pod_requests(pod);
                &computed
            }
        };
        let missing = insufficient(req, node);
        if missing.is_empty() {
            Status::success()
        } else {
            Status::new(crate::framework::Code::Unschedulable, missing)
        }
    }
}

/// The pod's cpu and memory for scoring, with defaults for containers that request nothing.
fn non_zero_requests(pod: &Pod) -> (i64, i64) {
    let mut cpu = 0;
    let mut mem = 0;
    for c in pod.spec.iter().flat_map(|s| &s.containers) {
        let r = c
            .resources
            .as_ref()
            .and_then(|r| r.requests.as_ref())
            .map(Resources::from_list)
            .unwrap_or_default();
        cpu += if r.milli_cpu == 0 {
            DEFAULT_MILLI_CPU
        } else {
            r.milli_cpu
        };
        mem += if r.memory == 0 {
            DEFAULT_MEMORY
        } else {
            r.memory
        };
    }
    (cpu, mem)
}

/// (requested including the pod, allocatable) for cpu and memory.
/// The pod's non-zero requests, computed once per cycle for every node's score.
struct NonZero((i64, i64));

const NON_ZERO_KEY: &str = "NodeResourcesNonZeroRequests";

fn usage(state: &CycleState, pod: &Pod, node: &NodeInfo) -> [(i64, i64); 2] {
    let (cpu, mem) = match state.read::<NonZero>(NON_ZERO_KEY) {
        Some(NonZero(r)) => *r,
        None => non_zero_requests(pod),
    };
    [
        (node.requested.milli_cpu + cpu, node.allocatable.milli_cpu),
        (node.requested.memory + mem, node.allocatable.memory),
    ]
}

/// Upstream's `leastRequestedScore`: the free fraction after placing the pod, scaled.
pub fn least_allocated(requested: i64, capacity: i64) -> i64 {
    if capacity == 0 || requested > capacity {
        return 0;
    }
    (capacity - requested) * MAX_NODE_SCORE / capacity
}

/// Upstream's `mostRequestedScore`.
pub fn most_allocated(requested: i64, capacity: i64) -> i64 {
    if capacity == 0 {
        return 0;
    }
    requested.min(capacity) * MAX_NODE_SCORE / capacity
}

impl ScorePlugin for Fit {
    fn score(&self, state: &CycleState, pod: &Pod, node: &NodeInfo) -> Result<i64, Status> {
        let f = match self.strategy {
            Strategy::LeastAllocated => least_allocated,
            Strategy::MostAllocated => most_allocated,
        };
        let u = usage(state, pod, node);
        Ok(u.iter().map(|(r, c)| f(*r, *c)).sum::<i64>() / u.len() as i64)
    }
}

/// Prefers nodes whose cpu and memory utilisation stay close to each other after placement.
pub struct BalancedAllocation;

impl Plugin for BalancedAllocation {
    fn name(&self) -> &'static str {
        "NodeResourcesBalancedAllocation"
    }
}

impl ScorePlugin for BalancedAllocation {
    /// `(1 - stddev(fractions)) * 100`, as upstream's `balancedResourceScorer`.
    fn score(&self, state: &CycleState, pod: &Pod, node: &NodeInfo) -> Result<i64, Status> {
        let fractions: Vec<f64> = usage(state, pod, node)
            .iter()
            .filter(|(_, c)| *c > 0)
            .map(|(r, c)| (*r as f64 / *c as f64).min(1.0))
            .collect();
        if fractions.is_empty() {
            return Ok(0);
        }
        let mean = fractions.iter().sum::<f64>() / fractions.len() as f64;
        let var = fractions
            .iter()
            .map(|f| (f - mean) * (f - mean))
            .sum::<f64>()
            / fractions.len() as f64;
        Ok(((1.0 - var.sqrt()) * MAX_NODE_SCORE as f64) as i64)
    }
}
