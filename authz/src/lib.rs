//! Who may do what. The shapes here are kube-apiserver's: an authenticated [`UserInfo`], the
//! request's [`Attributes`], and authorizers that answer with a [`Decision`]. The API server
//! authenticates and builds the attributes; everything in this crate is pure and synchronous
//! so that it can be tested table-driven and called on every request.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

/// An authenticated caller (upstream's `user.Info`; the shape of `authentication.k8s.io/v1`
/// `UserInfo`).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct UserInfo {
    pub username: String,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub uid: String,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub groups: Vec<String>,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub extra: BTreeMap<String, Vec<String>>,
}

/// Well-known users and groups.
pub mod names {
    pub const SYSTEM_MASTERS: &str = "system:masters";
    pub const AUTHENTICATED: &str = "system:authenticated";
    pub const UNAUTHENTICATED: &str = "system:unauthenticated";
    pub const ANONYMOUS: &str = "system:anonymous";
    pub const NODES_GROUP: &str = "system:nodes";
    pub const NODE_USER_PREFIX: &str = "system:node:";
    pub const SERVICE_ACCOUNT_PREFIX: &str = "system:serviceaccount:";
    pub const SERVICE_ACCOUNTS_GROUP: &str = "system:serviceaccounts";
    pub const BOOTSTRAPPERS_GROUP: &str = "system:bootstrappers";
}

impl UserInfo {
    pub fn in_group(&self, group: &str) -> bool {
        self.groups.iter().any(|g| g == group)
    }

    /// `Some(node)` for a node's identity (`system:node:<name>` in `system:nodes`).
    pub fn node_name(&self) -> Option<&str> {
        if !self.in_group(names::NODES_GROUP) {
            return None;
        }
        self.username.strip_prefix(names::NODE_USER_PREFIX)
    }
}

/// What a request wants to do (upstream's `authorizer.Attributes`).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Attributes {
    pub user: UserInfo,
    /// For resource requests: get, list, watch, create, update, patch, delete,
    /// deletecollection (and impersonate, bind, escalate, use... for checks). For
    /// non-resource requests: the lower-cased HTTP method.
    pub verb: String,
    pub resource_request: bool,
    pub api_group: String,
    pub api_version: String,
    pub resource: String,
    pub subresource: String,
    pub namespace: String,
    pub name: String,
    /// The URL path (what non-resource rules match).
    pub path: String,
}

/// An authorizer's answer. Authorizers are chained: the first Allow or Deny wins; NoOpinion
/// passes to the next; the chain's end is a deny.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Decision {
    Allow(String),
    Deny(String),
    NoOpinion(String),
}

impl Decision {
    pub fn allowed(&self) -> bool {
        matches!(self, Decision::Allow(_))
    }
}

/// The default roles and bindings (upstream's bootstrap policy).
pub mod bootstrap;
/// The Node authorizer: a node reaches only what its own pods use.
pub mod node;
/// NodeRestriction admission: a node writes only its own objects.
pub mod node_restriction;
/// RBAC: the index, the authorizer, escalation checks, 403 wording, aggregation.
pub mod rbac;
