//! The Kubernetes types every Coxswain crate shares, and the one resource table from which
//! discovery, request routing and storage keys are all derived.
//!
//! Keeping the table here, rather than in the API server, means the storage layer, the
//! controllers and the API server cannot disagree about what a resource is called, whether it
//! is namespaced, or where it lives in the key space. The crate is pure data: no I/O, no async
//! runtime, so anything may depend on it.

#![deny(missing_docs)]

/// Re-exported so every crate builds against the same k8s-openapi version and feature.
pub use k8s_openapi;
/// Re-exported so every crate builds against the same kube-core version.
pub use kube_core;

pub mod quantity;
pub mod resources;
pub mod status;

pub use resources::{ResourceInfo, Subresource, Verb, RESOURCES};

/// The `User-Agent` a Coxswain component sends, shaped like upstream's
/// (`kube-scheduler/v1.32.0 (linux/amd64) …`): the API server derives a write's field manager
/// from the part before the first `/` (managedFields, `kubectl get --show-managed-fields`)
/// and audit events record it, so components appear under upstream's names.
pub fn user_agent(component: &str) -> String {
    format!(
        "{component}/v1.32.0 ({}/{}) coxswain/{}",
        std::env::consts::OS,
        match std::env::consts::ARCH {
            "x86_64" => "amd64",
            "aarch64" => "arm64",
            other => other,
        },
        env!("CARGO_PKG_VERSION")
    )
}
