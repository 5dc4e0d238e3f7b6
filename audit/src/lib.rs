//! Auditing as kube-apiserver does it: an `audit.k8s.io/v1` [`Policy`] decides how much of each
//! request is recorded ([`Level`]) and at which [`Stage`]s, each record is an `audit.k8s.io/v1`
//! [`Event`], and a [`FileSink`] appends the events as JSON lines (`--audit-log-path`).
//!
//! The wire shapes are upstream's so that existing audit tooling (log shippers, SIEM parsers,
//! `jq` one-liners from the Kubernetes docs) reads Coxswain's log unchanged.

#![deny(missing_docs)]

mod event;
mod policy;
mod sink;
mod time;

pub use event::{
    new_audit_id, Event, ObjectReference, ResponseStatus, TypeMeta, ANNOTATION_DECISION,
    ANNOTATION_REASON,
};
pub use policy::{AuditConfig, GroupResources, Level, Policy, PolicyRule, RequestInfo, Stage};
pub use sink::FileSink;
pub use time::{format_micro_time, parse_micro_time};

use std::path::PathBuf;

/// Errors of loading a policy or writing events.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A file could not be read, created or written.
    #[error("{path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// What went wrong.
        #[source]
        source: std::io::Error,
    },
    /// The policy is not YAML or JSON of the Policy shape.
    #[error("parsing audit policy: {0}")]
    Parse(#[from] serde_yaml::Error),
    /// The policy parsed but breaks one of upstream's validation rules.
    #[error("invalid audit policy: {0}")]
    InvalidPolicy(String),
    /// An event could not be encoded (an object that is not representable as JSON).
    #[error("encoding audit event: {0}")]
    Encode(#[from] serde_json::Error),
}
