//! ImageLocality: prefers nodes that already have the pod's images, weighted by image size
//! and by how few nodes have them (so one node does not attract every pod), as upstream.

use std::collections::HashMap;

use k8s_openapi::api::core::v1::Pod;

use crate::framework::{
    CycleState, NodeInfo, Plugin, PreScorePlugin, ScorePlugin, Status, MAX_NODE_SCORE,
};

const MB: i64 = 1024 * 1024;
const MIN_THRESHOLD: i64 = 23 * MB;
const MAX_CONTAINER_THRESHOLD: i64 = 1000 * MB;

pub struct ImageLocality;

impl Plugin for ImageLocality {
    fn name(&self) -> &'static str {
        "ImageLocality"
    }
}

/// `busybox` and `busybox:latest` are the same image; a digest or tag is kept.
pub fn normalize(image: &str) -> String {
    let last = image.rsplit('/').next().unwrap_or(image);
    let mut name = if last.contains(':') || last.contains('@') {
        image.to_string()
    } else {
        format!("{image}:latest")
    };
    for prefix in ["docker.io/library/", "docker.io/"] {
        if let Some(rest) = name.strip_prefix(prefix) {
            name = rest.to_string();
            break;
        }
    }
    name
}

fn node_images(n: &NodeInfo) -> HashMap<String, i64> {
    let mut out = HashMap::new();
    for img in n.node.status.iter().flat_map(|s| s.images.iter().flatten()) {
        for name in img.names.iter().flatten() {
            out.insert(normalize(name), img.size_bytes.unwrap_or(0));
        }
    }
    out
}

/// Image → how many of the scored nodes have it, how many nodes there are, and the pod's
/// images (normalised once per cycle rather than once per node).
struct Spread(HashMap<String, usize>, usize, Vec<String>);

fn images(pod: &Pod) -> Vec<String> {
    pod.spec
        .iter()
        .flat_map(|s| {
            s.containers
                .iter()
                .chain(s.init_containers.iter().flatten())
        })
        .filter_map(|c| c.image.as_deref().map(normalize))
        .collect()
}

impl PreScorePlugin for ImageLocality {
    fn pre_score(
        &self,
        state: &mut CycleState,
        pod: &Pod,
        nodes: &[&NodeInfo],
        _: &[NodeInfo],
    ) -> Status {
        let wanted = images(pod);
        let mut spread: HashMap<String, usize> = HashMap::new();
        for n in nodes {
            let have = node_images(n);
            for w in &wanted {
                if have.contains_key(w) {
                    *spread.entry(w.clone()).or_default() += 1;
                }
            }
        }
        state.write("ImageLocality", Spread(spread, nodes.len(), wanted));
        Status::success()
    }
}

impl ScorePlugin for ImageLocality {
    fn score(&self, state: &CycleState, _: &Pod, node: &NodeInfo) -> Result<i64, Status> {
        let Some(Spread(spread, total, wanted)) = state.read::<Spread>("ImageLocality") else {
            return Ok(0);
        };
        let have = node_images(node);
        let mut sum = 0i64;
        for w in wanted {
            if let Some(size) = have.get(w) {
                let n = spread.get(w).copied().unwrap_or(0) as i64;
                sum += size * n / (*total).max(1) as i64;
            }
        }
        let max = MAX_CONTAINER_THRESHOLD * (wanted.len() as i64).max(1);
        let clamped = sum.clamp(MIN_THRESHOLD, max);
        Ok(MAX_NODE_SCORE * (clamped - MIN_THRESHOLD) / (max - MIN_THRESHOLD))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn image_names_normalise() {
        for (raw, want) in [
            ("busybox", "busybox:latest"),
            ("docker.io/library/busybox:1.36", "busybox:1.36"),
            ("registry:5000/app", "registry:5000/app:latest"),
            ("ghcr.io/x/y@sha256:abc", "ghcr.io/x/y@sha256:abc"),
        ] {
            assert_eq!(normalize(raw), want);
        }
    }

    #[test]
    fn nodes_with_big_images_score_higher() {
        let node = |name: &str, size: i64| {
            NodeInfo::new(
                serde_json::from_value(serde_json::json!({"metadata": {"name": name},
                    "status": {"images": [{"names": ["docker.io/library/app:1"], "sizeBytes": size}]}}))
                .expect("node"),
            )
        };
        let pod: Pod = serde_json::from_value(serde_json::json!({"metadata": {"name": "p"},
            "spec": {"containers": [{"name": "c", "image": "app:1"}]}}))
        .expect("pod");
        let (big, small, none) = (
            node("big", 800 * MB),
            node("small", 10 * MB),
            node("none", 0),
        );
        let none = NodeInfo::new(k8s_openapi::api::core::v1::Node {
            metadata: none.node.metadata.clone(),
            ..Default::default()
        });
        let nodes = [&big, &small, &none];
        let mut state = CycleState::default();
        ImageLocality.pre_score(&mut state, &pod, &nodes, &[]);
        let scores: Vec<i64> = nodes
            .iter()
            .map(|n| ImageLocality.score(&state, &pod, n).expect("score"))
            .collect();
        // 800 MB · 2/3 nodes ≈ 533 MB → (533-23)/(1000-23) · 100 = 52.
        assert_eq!(scores, [52, 0, 0]);
    }
}
