//! The node IPAM controller (upstream `node-ipam-controller`, alias `nodeipam`, with the
//! `RangeAllocator`): gives every Node without one a free `/--node-cidr-mask-size` block of
//! `--cluster-cidr` as `spec.podCIDR` / `spec.podCIDRs`, which the node agent's CNI config
//! (host-local IPAM) then hands out pod IPs from.
//!
//! Level-based: every pass rebuilds the set of blocks in use from the Nodes in the store
//! (plus the allocations this process made that the store has not shown yet), so a restart
//! loses nothing and a deleted Node's block is free again as soon as the Node is gone.
//! Passes run one at a time, so two nodes can never be handed the same block. When the
//! range is exhausted the Node gets a `CIDRNotAvailable` event and is retried on the next
//! change. Only one IPv4 cluster CIDR for now (no dual-stack, no IPv6).

use std::collections::{BTreeSet, HashMap};
use std::net::Ipv4Addr;
use std::sync::Arc;
use std::time::Duration;

use futures::future::BoxFuture;
use futures::{FutureExt, StreamExt};
use k8s_openapi::api::core::v1::Node;
use kube::api::{Patch, PatchParams};
use kube::runtime::reflector::Store;
use kube::{Api, Client, ResourceExt};
use serde_json::json;
use tracing::Instrument;

use crate::informers::Informers;
use crate::metrics::Metrics;
use crate::util::Recorder;
use crate::{Error, NodeSettings};

/// The controller's name in `--controllers` and metrics.
pub const NAME: &str = "nodeipam";

/// The longest a pass waits without a node change (retries exhausted ranges and errors).
const PERIOD: Duration = Duration::from_secs(30);
/// Node changes are gathered for this long before a pass.
const DEBOUNCE: Duration = Duration::from_millis(100);

/// A cluster CIDR cut into equal node blocks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CidrSet {
    base: u32,
    prefix: u8,
    mask: u8,
}

impl CidrSet {
    /// Parses `--cluster-cidr` (IPv4 `a.b.c.d/n`) with `--node-cidr-mask-size`. Like
    /// upstream, the node mask may be at most 16 bits longer than the cluster's.
    pub fn new(cluster_cidr: &str, mask: u8) -> Result<Self, Error> {
        let invalid = |why: &str| Error::Invalid(format!("--cluster-cidr {cluster_cidr:?}: {why}"));
        let (addr, prefix) = cluster_cidr
            .trim()
            .split_once('/')
            .ok_or_else(|| invalid("not a CIDR"))?;
        let addr: Ipv4Addr = addr
            .parse()
            .map_err(|_| invalid("only one IPv4 CIDR is supported"))?;
        let prefix: u8 = prefix.parse().map_err(|_| invalid("bad prefix length"))?;
        if prefix > 32 {
            return Err(invalid("bad prefix length"));
        }
        if mask < prefix || mask > 32 || mask - prefix > 16 {
            return Err(Error::Invalid(format!(
                "--node-cidr-mask-size {mask} must be between the cluster CIDR's prefix \
                 ({prefix}) and 16 more, and at most 32"
            )));
        }
        let net = if prefix == 0 {
            0
        } else {
            u32::MAX << (32 - prefix)
        };
        Ok(CidrSet {
            base: u32::from(addr) & net,
            prefix,
            mask,
        })
    }

    /// How many node blocks there are.
    pub fn size(&self) -> u32 {
        1u32 << (self.mask - self.prefix)
    }

    /// The block with index `i`, as `a.b.c.d/mask`.
    pub fn block(&self, i: u32) -> String {
        let step = if self.mask == 32 {
            1
        } else {
            1u32 << (32 - self.mask)
        };
        let addr = Ipv4Addr::from(self.base.wrapping_add(i.wrapping_mul(step)));
        format!("{addr}/{}", self.mask)
    }

    /// The index of `cidr` if it is exactly one of this set's blocks.
    pub fn index_of(&self, cidr: &str) -> Option<u32> {
        let (addr, len) = cidr.split_once('/')?;
        let addr: Ipv4Addr = addr.parse().ok()?;
        if len.parse::<u8>().ok()? != self.mask {
            return None;
        }
        let offset = u32::from(addr).checked_sub(self.base)?;
        let step_bits = 32 - u32::from(self.mask);
        let i = if step_bits == 32 {
            0
        } else {
            offset >> step_bits
        };
        (i < self.size() && self.block(i) == cidr).then_some(i)
    }
}

/// The controller as a future that runs until dropped; `None` if informers already started.
/// An invalid `--cluster-cidr` is refused earlier, by [`crate::run`].
pub fn controller(
    client: Client,
    informers: &Informers,
    metrics: Arc<Metrics>,
    cidrs: CidrSet,
) -> Option<BoxFuture<'static, ()>> {
    // Deletions too: a deleted Node's block should go to a waiting node right away.
    let mut changes = futures::stream::select(
        informers.nodes.subscribe()?,
        informers.nodes.deletions().boxed(),
    );
    let mut ipam = Ipam {
        recorder: Recorder::new(&client, "node-controller"),
        client,
        nodes: informers.nodes.store(),
        cidrs,
        assigned: HashMap::new(),
    };
    Some(
        async move {
            loop {
                tokio::select! {
                    next = changes.next() => if next.is_none() { return },
                    () = tokio::time::sleep(PERIOD) => {}
                }
                tokio::time::sleep(DEBOUNCE).await;
                while changes.next().now_or_never().flatten().is_some() {}
                let timer = metrics.start(NAME);
                let result = ipam.pass().await;
                timer.finish(result.is_ok());
                if let Err(error) = result {
                    metrics.retry(NAME);
                    tracing::warn!(controller = NAME, %error, "node CIDR pass failed");
                }
            }
        }
        .boxed(),
    )
}

/// Whether `--allocate-node-cidrs` is on; checks the CIDR settings once at startup.
pub fn cidr_set(settings: &NodeSettings) -> Result<Option<CidrSet>, Error> {
    if !settings.allocate_node_cidrs {
        return Ok(None);
    }
    CidrSet::new(&settings.cluster_cidr, settings.node_cidr_mask_size).map(Some)
}

struct Ipam {
    client: Client,
    recorder: Recorder,
    nodes: Store<Node>,
    cidrs: CidrSet,
    /// Blocks this process gave out, by node name and uid, until the store shows them.
    assigned: HashMap<(String, String), u32>,
}

impl Ipam {
    async fn pass(&mut self) -> Result<(), Error> {
        let nodes = self.nodes.state();
        let mut used = BTreeSet::new();
        let mut pending = Vec::new();
        for node in &nodes {
            let id = (node.name_any(), node.uid().unwrap_or_default());
            match node.spec.as_ref().and_then(|s| s.pod_cidr.as_deref()) {
                Some(cidr) if !cidr.is_empty() => {
                    self.assigned.remove(&id);
                    if let Some(i) = self.cidrs.index_of(cidr) {
                        used.insert(i);
                    }
                }
                _ => pending.push((id, node.clone())),
            }
        }
        // Forget allocations for nodes that are gone: their blocks are free again.
        self.assigned
            .retain(|id, _| pending.iter().any(|(p, _)| p == id));
        used.extend(self.assigned.values().copied());
        let mut first_error = None;
        for (id, node) in pending {
            let span = tracing::info_span!("allocate", controller = NAME, key = %id.0);
            let block = match self.assigned.get(&id) {
                Some(&i) => i,
                None => match (0..self.cidrs.size()).find(|i| !used.contains(i)) {
                    Some(i) => i,
                    None => {
                        tracing::warn!(controller = NAME, node = %id.0, "cluster CIDR exhausted");
                        self.recorder.normal(
                            node.as_ref(),
                            "CIDRNotAvailable",
                            format!("Node {} status is now: CIDRNotAvailable", id.0),
                        );
                        continue;
                    }
                },
            };
            used.insert(block);
            self.assigned.insert(id.clone(), block);
            let cidr = self.cidrs.block(block);
            if let Err(e) = self.patch(&id.0, &cidr).instrument(span).await {
                self.assigned.remove(&id);
                first_error.get_or_insert(e);
            }
        }
        first_error.map_or(Ok(()), Err)
    }

    async fn patch(&self, node: &str, cidr: &str) -> Result<(), Error> {
        tracing::info!(controller = NAME, node, cidr, "allocating pod CIDR");
        let api: Api<Node> = Api::all(self.client.clone());
        match api
            .patch(
                node,
                &PatchParams::default(),
                &Patch::Merge(json!({"spec": {"podCIDR": cidr, "podCIDRs": [cidr]}})),
            )
            .await
        {
            Ok(_) => Ok(()),
            // Deleted meanwhile: nothing to allocate.
            Err(kube::Error::Api(s)) if s.code == 404 => Ok(()),
            Err(e) => Err(e.into()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn blocks_of_a_cluster_cidr() {
        let s = CidrSet::new("10.244.0.0/16", 24).expect("valid");
        assert_eq!(s.size(), 256);
        assert_eq!(s.block(0), "10.244.0.0/24");
        assert_eq!(s.block(255), "10.244.255.0/24");
        assert_eq!(s.index_of("10.244.7.0/24"), Some(7));
        assert_eq!(s.index_of("10.244.7.1/24"), None);
        assert_eq!(s.index_of("10.245.0.0/24"), None);
        assert_eq!(s.index_of("10.244.7.0/25"), None);
        assert!(CidrSet::new("10.0.0.0/8", 30).is_err(), "more than 16 bits");
        assert!(CidrSet::new("fd00::/48", 64).is_err(), "IPv6 refused");
        let tiny = CidrSet::new("10.1.2.0/30", 31).expect("valid");
        assert_eq!(tiny.size(), 2);
        assert_eq!(tiny.block(1), "10.1.2.2/31");
    }
}
