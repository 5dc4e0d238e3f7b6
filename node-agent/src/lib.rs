//! The node agent of Coxswain.
//!
//! What exists in this increment of issue 6 is the part that does not need a container
//! runtime: node registration and cheap heartbeats ([`node`]), the host facts a real node
//! reports ([`host`]), simulated nodes for scale tests ([`simulate`]), and `/healthz` +
//! `/metrics` ([`metrics`]). Running real containers (CRI to containerd) lands later and will
//! reuse [`node::NodeHeartbeat`] and [`node::Writer`].

pub mod agent;
pub mod cgroups;
pub mod cni;
pub mod cri;
pub mod duration;
mod error;
pub mod host;
pub mod image_gc;
pub mod images;
pub mod lookup;
pub mod metrics;
pub mod node;
pub mod pods;
pub mod server;
pub mod simulate;
pub mod testing;

pub use error::Error;
pub use metrics::Metrics;
